//! The daemon side: a Unix stream socket (mode 0600), a thread per connection (bounded),
//! requests answered in order within a connection, peers checked with SO_PEERCRED.
//!
//! In tests: `Server::bind(path, service)?.spawn()` gives a [`RunningServer`] whose
//! [`RunningServer::stop`] shuts it down and removes the socket.

use super::protocol::{self, code, ErrorObject};
use crate::service::Service;
use nix::sys::socket::{self as sock, sockopt, AddressFamily, Backlog, SockFlag, SockType};
use nix::sys::stat::Mode;
use serde_json::Value;
use std::collections::HashMap;
use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Tunables of the server; the defaults suit the daemon.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Connections served at once; more are answered with [`code::SERVER_BUSY`] and closed.
    pub max_connections: usize,
    /// Longest request line accepted, in bytes (without the newline).
    pub max_line_bytes: usize,
    /// On shutdown, how long to wait for requests in progress to be answered.
    pub shutdown_grace: Duration,
    /// A write of a response that blocks longer than this drops the connection.
    pub write_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_connections: 256,
            max_line_bytes: 1 << 20,
            shutdown_grace: Duration::from_secs(10),
            write_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "another lio-replica daemon is already serving on {0} (stop it first, or use --socket)"
    )]
    AlreadyRunning(PathBuf),
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ServerError {
    let path = path.to_path_buf();
    move |source| ServerError::Io { op, path, source }
}

fn nix_err(op: &'static str, path: &Path) -> impl FnOnce(nix::Error) -> ServerError {
    let path = path.to_path_buf();
    move |e| ServerError::Io {
        op,
        path,
        source: io::Error::from(e),
    }
}

/// Shared between the accept loop, the connection threads and the shutdown handles.
struct Shared {
    stopping: AtomicBool,
    listener: UnixListener,
    /// Clones of the open connections, so shutdown can end their reads.
    conns: Mutex<HashMap<u64, UnixStream>>,
    active: AtomicUsize,
}

/// Stops a running server from another thread (or a signal-waiting thread).
#[derive(Clone)]
pub struct ShutdownHandle {
    shared: Arc<Shared>,
}

impl ShutdownHandle {
    /// Stops accepting, ends idle connections; requests in progress are still answered.
    /// [`Server::run`] then returns. Idempotent.
    pub fn shutdown(&self) {
        if self.shared.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        // On Linux, shutdown(2) on a listening socket wakes a blocked accept(2) (EINVAL).
        let _ = sock::shutdown(self.shared.listener.as_raw_fd(), sock::Shutdown::Both);
        for c in self
            .shared
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            let _ = c.shutdown(Shutdown::Read);
        }
    }
}

/// The socket file made by [`bind_socket`]. Dropping it removes the file, unless it has been
/// replaced meanwhile (its device and inode are remembered).
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        match fs::symlink_metadata(&self.path) {
            Ok(m) if m.dev() == self.dev && m.ino() == self.ino => {
                if let Err(e) = fs::remove_file(&self.path) {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot remove socket");
                } else {
                    tracing::debug!(path = %self.path.display(), "socket removed");
                }
            }
            _ => tracing::debug!(path = %self.path.display(), "socket already gone or replaced"),
        }
    }
}

/// Creates the listening socket at `path`:
/// - creates the parent directory (mode 0700) if it does not exist;
/// - if `path` exists: refuses if it is not a socket, or if a daemon answers on it;
///   otherwise removes the stale socket;
/// - binds with the socket already at mode 0600, so there is no moment where anyone else
///   could connect, then checks the mode.
pub fn bind_socket(path: &Path) -> Result<(UnixListener, SocketFile), ServerError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err("create directory", dir))?;
        }
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(ServerError::NotASocket(path.to_path_buf()))
        }
        Ok(_) => match UnixStream::connect(path) {
            Ok(_) => return Err(ServerError::AlreadyRunning(path.to_path_buf())),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                tracing::info!(path = %path.display(), "removing stale socket");
                fs::remove_file(path).map_err(io_err("remove stale socket", path))?;
            }
            Err(e) => return Err(io_err("probe existing socket", path)(e)),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("stat", path)(e)),
    }

    let listener = bind_private(path)?;
    let meta = fs::symlink_metadata(path).map_err(io_err("stat", path))?;
    let file = SocketFile {
        path: path.to_path_buf(),
        dev: meta.dev(),
        ino: meta.ino(),
    };
    if meta.mode() & 0o777 != 0o600 {
        // Belt and braces: should not happen with the fchmod before bind.
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))
            .map_err(io_err("chmod 0600", path))?;
    }
    tracing::info!(path = %path.display(), "listening");
    Ok((listener, file))
}

pub struct Server {
    shared: Arc<Shared>,
    service: Arc<dyn Service>,
    opts: ServerOptions,
    /// Removed when the server stops.
    socket_file: Option<SocketFile>,
}

impl Server {
    /// [`bind_socket`] then [`Server::new`].
    pub fn bind(path: &Path, service: Arc<dyn Service>) -> Result<Server, ServerError> {
        let (listener, file) = bind_socket(path)?;
        Ok(Server::new(listener, Some(file), service))
    }

    /// Serves on `listener`; `socket_file`, if given, is removed when the server stops.
    pub fn new(
        listener: UnixListener,
        socket_file: Option<SocketFile>,
        service: Arc<dyn Service>,
    ) -> Server {
        Server {
            shared: Arc::new(Shared {
                stopping: AtomicBool::new(false),
                listener,
                conns: Mutex::new(HashMap::new()),
                active: AtomicUsize::new(0),
            }),
            service,
            opts: ServerOptions::default(),
            socket_file,
        }
    }

    /// Serves on a listener set up by the caller; its socket file (if any) is left alone.
    pub fn from_listener(listener: UnixListener, service: Arc<dyn Service>) -> Server {
        Server::new(listener, None, service)
    }

    pub fn with_options(mut self, opts: ServerOptions) -> Server {
        self.opts = opts;
        self
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            shared: self.shared.clone(),
        }
    }

    /// The socket path this server removes on shutdown, if it bound one.
    pub fn path(&self) -> Option<&Path> {
        self.socket_file.as_ref().map(SocketFile::path)
    }

    /// Accepts and serves until [`ShutdownHandle::shutdown`] is called; then removes the
    /// socket file and waits (up to the grace period) for requests in progress.
    pub fn run(mut self) -> io::Result<()> {
        let next_id = AtomicU64::new(1);
        let own_uid = nix::unistd::geteuid().as_raw();
        loop {
            let accepted = self.shared.listener.accept();
            if self.shared.stopping.load(Ordering::SeqCst) {
                break;
            }
            let stream = match accepted {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::error!(error = %e, "accept failed");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            let id = next_id.fetch_add(1, Ordering::Relaxed);
            self.start_connection(id, stream, own_uid);
        }
        drop(self.socket_file.take());
        let deadline = Instant::now() + self.opts.shutdown_grace;
        while self.shared.active.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let left = self.shared.active.load(Ordering::SeqCst);
        if left > 0 {
            tracing::warn!(
                connections = left,
                "stopped with requests still in progress"
            );
        }
        tracing::info!("server stopped");
        Ok(())
    }

    /// Runs the server on a thread of its own.
    pub fn spawn(self) -> RunningServer {
        let handle = self.shutdown_handle();
        let path = self.path().map(Path::to_path_buf);
        let thread = std::thread::Builder::new()
            .name("rpc-accept".into())
            .spawn(move || self.run())
            .expect("spawn the accept thread");
        RunningServer {
            handle,
            path,
            thread: Some(thread),
        }
    }

    fn start_connection(&self, id: u64, stream: UnixStream, own_uid: u32) {
        let shared = &self.shared;
        let span = tracing::debug_span!("conn", id);
        let _g = span.enter();
        // Peer credentials first: a refused peer learns nothing else.
        let peer = match sock::getsockopt(&stream, sockopt::PeerCredentials) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read peer credentials; closing");
                return;
            }
        };
        let (uid, pid) = (peer.uid(), peer.pid());
        if uid != 0 && uid != own_uid {
            tracing::warn!(uid, pid, "refused peer");
            refuse(
                &stream,
                ErrorObject::new(
                    code::PERMISSION_DENIED,
                    format!("permission denied: uid {uid} may not use this API (root only)"),
                ),
            );
            return;
        }
        if shared.active.fetch_add(1, Ordering::SeqCst) >= self.opts.max_connections {
            shared.active.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!(uid, pid, "too many connections; refused");
            refuse(
                &stream,
                ErrorObject::new(
                    code::SERVER_BUSY,
                    format!(
                        "server busy: {} connections already open; retry later",
                        self.opts.max_connections
                    ),
                ),
            );
            return;
        }
        let guard = ActiveGuard {
            shared: shared.clone(),
            id,
        };
        match stream.try_clone() {
            Ok(c) => {
                shared
                    .conns
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id, c);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot clone connection; closing");
                return;
            }
        }
        // A shutdown that raced with this accept would have missed the clone above.
        if shared.stopping.load(Ordering::SeqCst) {
            let _ = stream.shutdown(Shutdown::Read);
        }
        let _ = stream.set_write_timeout(Some(self.opts.write_timeout));
        tracing::debug!(uid, pid, "connection accepted");
        let service = self.service.clone();
        let max_line = self.opts.max_line_bytes;
        let conn_span = span.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("rpc-conn-{id}"))
            .spawn(move || {
                let _g = conn_span.enter();
                let _guard = guard;
                if let Err(e) = serve_connection(stream, &*service, max_line) {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                tracing::debug!("connection closed");
            });
        if let Err(e) = spawned {
            // The guard moved into the closure was dropped with it.
            tracing::error!(error = %e, "cannot start a connection thread");
        }
    }
}

/// Decrements the active count and forgets the connection when its thread ends.
struct ActiveGuard {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.shared
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
        self.shared.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A server running on its own thread.
pub struct RunningServer {
    handle: ShutdownHandle,
    path: Option<PathBuf>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl RunningServer {
    pub fn handle(&self) -> ShutdownHandle {
        self.handle.clone()
    }
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
    /// Shuts the server down and waits for its accept loop to finish.
    pub fn stop(mut self) -> io::Result<()> {
        self.stop_inner()
    }
    fn stop_inner(&mut self) -> io::Result<()> {
        self.handle.shutdown();
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("server thread panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}

/// socket(2), fchmod 0600, bind(2), listen(2). Linux gives the socket file the mode of the
/// socket inode (less the umask), so the file never exists with a wider mode, and the
/// process-wide umask (shared with every other thread) is left alone.
fn bind_private(path: &Path) -> Result<UnixListener, ServerError> {
    let fd: OwnedFd = sock::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(nix_err("socket for", path))?;
    nix::sys::stat::fchmod(fd.as_raw_fd(), Mode::from_bits_truncate(0o600))
        .map_err(nix_err("fchmod socket for", path))?;
    let addr = sock::UnixAddr::new(path).map_err(nix_err("socket address", path))?;
    sock::bind(fd.as_raw_fd(), &addr).map_err(nix_err("bind", path))?;
    let backlog = Backlog::new(128).unwrap_or(Backlog::MAXCONN);
    if let Err(e) = sock::listen(&fd, backlog) {
        let _ = fs::remove_file(path);
        return Err(nix_err("listen", path)(e));
    }
    Ok(UnixListener::from(fd))
}

fn refuse(mut stream: &UnixStream, err: ErrorObject) {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let mut line = protocol::error_response(Value::Null, err).to_string();
    line.push('\n');
    let _ = stream.write_all(line.as_bytes());
}

enum Line {
    Eof,
    Data,
    TooLong,
}

/// Reads one line into `buf` (without the newline), never holding more than `max` bytes:
/// the rest of a longer line is read and dropped.
fn read_line_limited<R: BufRead>(r: &mut R, buf: &mut Vec<u8>, max: usize) -> io::Result<Line> {
    buf.clear();
    let mut too_long = false;
    let mut saw_any = false;
    loop {
        let avail = match r.fill_buf() {
            Ok(a) => a,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            return Ok(match (saw_any, too_long) {
                (false, _) => Line::Eof,
                (true, true) => Line::TooLong,
                (true, false) => Line::Data,
            });
        }
        saw_any = true;
        let (chunk, done) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => (&avail[..i], Some(i + 1)),
            None => (avail, None),
        };
        if !too_long {
            if buf.len() + chunk.len() > max {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        let used = done.unwrap_or(avail.len());
        r.consume(used);
        if done.is_some() {
            return Ok(if too_long { Line::TooLong } else { Line::Data });
        }
    }
}

fn serve_connection(stream: UnixStream, service: &dyn Service, max_line: usize) -> io::Result<()> {
    let mut reader = BufReader::with_capacity(64 * 1024, stream.try_clone()?);
    let mut writer = &stream;
    let mut buf = Vec::new();
    loop {
        let response = match read_line_limited(&mut reader, &mut buf, max_line)? {
            Line::Eof => return Ok(()),
            Line::TooLong => {
                tracing::warn!(max_line, "request line too long; refused");
                Some(protocol::error_response(
                    Value::Null,
                    ErrorObject::new(
                        code::INVALID_REQUEST,
                        format!(
                            "request too large: a request line may be at most {max_line} bytes"
                        ),
                    ),
                ))
            }
            Line::Data => protocol::handle_line(service, &buf),
        };
        if let Some(resp) = response {
            // to_vec, not Display: a listing of 10,000 objects is megabytes
            let mut out = serde_json::to_vec(&resp)?;
            out.push(b'\n');
            writer.write_all(&out)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn lines_are_limited() {
        let mut r = BufReader::with_capacity(4, Cursor::new(b"abc\n0123456789\nxy".to_vec()));
        let mut buf = Vec::new();
        assert!(matches!(
            read_line_limited(&mut r, &mut buf, 5).unwrap(),
            Line::Data
        ));
        assert_eq!(buf, b"abc");
        assert!(matches!(
            read_line_limited(&mut r, &mut buf, 5).unwrap(),
            Line::TooLong
        ));
        assert!(matches!(
            read_line_limited(&mut r, &mut buf, 5).unwrap(),
            Line::Data
        ));
        assert_eq!(buf, b"xy");
        assert!(matches!(
            read_line_limited(&mut r, &mut buf, 5).unwrap(),
            Line::Eof
        ));
    }
}
