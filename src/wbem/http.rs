//! CIM operations over HTTP (DSP0200): HTTP/1.1 with keep-alive, over TCP or TLS, POST only,
//! HTTP Basic authentication on every request.
//!
//! Bounded throughout, since it listens on a network: a connection beyond
//! [`Limits::connections`] is refused at once; a request head must arrive within
//! [`Limits::head_time`] and its body within [`Limits::body_time`], each capped in size; a
//! connection idle for [`Limits::idle`] is closed. A failed login is answered 401 only after
//! [`Limits::login_delay`], and the connection is then closed.

use super::provider::Provider;
use super::users::Users;
use super::xml;
use base64::Engine as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// What one connection and one request may cost.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections served at once, over all listeners.
    pub connections: usize,
    /// The request line and headers.
    pub head_bytes: usize,
    pub body_bytes: usize,
    pub head_time: Duration,
    pub body_time: Duration,
    /// How long a kept-alive connection may wait for its next request.
    pub idle: Duration,
    pub login_delay: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            connections: 32,
            head_bytes: 16 * 1024,
            body_bytes: 4 * 1024 * 1024,
            head_time: Duration::from_secs(10),
            body_time: Duration::from_secs(30),
            idle: Duration::from_secs(60),
            login_delay: Duration::from_secs(2),
        }
    }
}

/// One listening socket: plain HTTP or TLS.
pub struct Listener {
    pub socket: TcpListener,
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// The running server; dropping it does not stop it, [`Server::stop`] does.
pub struct Server {
    addrs: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

struct Shared {
    provider: Provider,
    users: Users,
    limits: Limits,
    active: AtomicUsize,
    stop: Arc<AtomicBool>,
}

/// Loads a certificate chain and its private key (PEM files) into a TLS server setup.
pub fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use anyhow::Context;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading the certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading the certificate {}", cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("no certificate in {}", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the private key {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the certificate and the key do not make a TLS identity")?;
    Ok(Arc::new(cfg))
}

impl Server {
    /// Serves `provider` on every listener, each on its own accepting thread.
    pub fn start(
        listeners: Vec<Listener>,
        provider: Provider,
        users: Users,
        limits: Limits,
    ) -> io::Result<Server> {
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            provider,
            users,
            limits,
            active: AtomicUsize::new(0),
            stop: stop.clone(),
        });
        let mut addrs = Vec::new();
        let mut threads = Vec::new();
        for l in listeners {
            let addr = l.socket.local_addr()?;
            addrs.push(addr);
            info!(%addr, tls = l.tls.is_some(), "CIM-XML server listening");
            let shared = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("cim-{}", addr.port()))
                    .spawn(move || accept_loop(l, shared))?,
            );
        }
        Ok(Server {
            addrs,
            stop,
            threads,
        })
    }

    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Stops accepting; connections being served finish their current request.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for a in &self.addrs {
            // wake the accepting thread
            let _ = TcpStream::connect_timeout(a, Duration::from_secs(1));
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Decrements the active count when a connection ends, however it ends.
struct Slot(Arc<Shared>);
impl Drop for Slot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

fn accept_loop(l: Listener, shared: Arc<Shared>) {
    for conn in l.socket.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(mut stream) = conn else { continue };
        let peer = stream.peer_addr().ok();
        if shared.active.fetch_add(1, Ordering::SeqCst) >= shared.limits.connections {
            shared.active.fetch_sub(1, Ordering::SeqCst);
            warn!(
                ?peer,
                limit = shared.limits.connections,
                "CIM connection refused: too many"
            );
            if l.tls.is_none() {
                let _ = stream.write_all(
                    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
            continue;
        }
        let slot = Slot(shared.clone());
        let tls = l.tls.clone();
        let spawned = std::thread::Builder::new()
            .name("cim-conn".into())
            .spawn(move || {
                let shared = slot.0.clone();
                if let Err(e) = serve_connection(stream, tls, &shared) {
                    debug!(?peer, error = %e, "CIM connection ended");
                }
                drop(slot);
            });
        if let Err(e) = spawned {
            warn!(error = %e, "cannot start a thread for a CIM connection");
        }
    }
}

/// A plain or TLS stream.
enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => &s.sock,
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// A response to write: status, extra headers, body.
struct Reply {
    status: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    close: bool,
}

impl Reply {
    fn error(status: &'static str, cim_error: Option<&'static str>, text: &str) -> Reply {
        let mut headers = vec![("Content-Type", "text/plain; charset=utf-8".to_string())];
        if let Some(e) = cim_error {
            headers.push(("CIMError", e.to_string()));
        }
        Reply {
            status,
            headers,
            body: format!("{text}\n").into_bytes(),
            close: false,
        }
    }
}

/// Reads until `buf` holds a complete request head or a limit is reached. `Ok(None)`: the
/// peer closed the connection between requests.
fn read_head(conn: &mut Conn, buf: &mut Vec<u8>, limits: &Limits) -> io::Result<Option<usize>> {
    let mut deadline: Option<Instant> = None;
    loop {
        if let Some(end) = find_head_end(buf) {
            return Ok(Some(end));
        }
        if buf.len() > limits.head_bytes {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head too large",
            ));
        }
        // waiting for a request: the idle limit; inside one: what is left of the head's time
        let wait = match deadline {
            None => limits.idle,
            Some(d) => d
                .checked_duration_since(Instant::now())
                .filter(|w| !w.is_zero())
                .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "request head too slow"))?,
        };
        conn.tcp().set_read_timeout(Some(wait))?;
        let mut chunk = [0u8; 4096];
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed inside a request",
                ))
            };
        }
        deadline.get_or_insert_with(|| Instant::now() + limits.head_time);
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

fn header<'a>(req: &'a httparse::Request<'_, '_>, name: &str) -> Option<&'a str> {
    req.headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .map(str::trim)
}

/// The credentials of a Basic `Authorization` header.
fn basic_credentials(value: &str) -> Option<(String, String)> {
    let (scheme, b64) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

fn write_reply(conn: &mut Conn, r: &Reply, keep_alive: bool) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {}\r\nContent-Length: {}\r\n",
        r.status,
        r.body.len()
    );
    for (k, v) in &r.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(if keep_alive && !r.close {
        "Connection: keep-alive\r\n\r\n"
    } else {
        "Connection: close\r\n\r\n"
    });
    let mut out = head.into_bytes();
    out.extend_from_slice(&r.body);
    conn.write_all(&out)?;
    conn.flush()
}

fn serve_connection(
    stream: TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
    shared: &Shared,
) -> io::Result<()> {
    let peer = stream.peer_addr().ok();
    stream.set_write_timeout(Some(shared.limits.body_time))?;
    let _ = stream.set_nodelay(true);
    let mut conn = match tls {
        Some(cfg) => {
            let sc = rustls::ServerConnection::new(cfg).map_err(io::Error::other)?;
            Conn::Tls(Box::new(rustls::StreamOwned::new(sc, stream)))
        }
        None => Conn::Plain(stream),
    };
    let limits = &shared.limits;
    let mut buf: Vec<u8> = Vec::new();
    // the Authorization header last accepted on this connection: the same header again is
    // not hashed again (the hash is deliberately slow), unless the accounts changed
    let mut authorized: Option<(String, super::users::Version)> = None;
    loop {
        let head_end = match read_head(&mut conn, &mut buf, limits) {
            Ok(Some(n)) => n,
            Ok(None) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                let r = Reply::error("431 Request Header Fields Too Large", None, &e.to_string());
                return write_reply(&mut conn, &r, false);
            }
            Err(e) => return Err(e),
        };
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        let parsed = req.parse(&buf[..head_end]);
        if !matches!(parsed, Ok(httparse::Status::Complete(_))) {
            let r = Reply::error("400 Bad Request", None, "malformed HTTP request");
            return write_reply(&mut conn, &r, false);
        }
        let keep_alive = match (req.version, header(&req, "Connection")) {
            (_, Some(c)) if c.eq_ignore_ascii_case("close") => false,
            (Some(0), Some(c)) => c.eq_ignore_ascii_case("keep-alive"),
            (Some(0), None) => false,
            _ => true,
        };
        if req.method != Some("POST") {
            let mut r = Reply::error("405 Method Not Allowed", None, "CIM operations use POST");
            r.headers.push(("Allow", "POST".into()));
            r.close = true;
            return write_reply(&mut conn, &r, false);
        }
        if header(&req, "Transfer-Encoding").is_some() {
            let mut r = Reply::error(
                "411 Length Required",
                None,
                "send the body with Content-Length",
            );
            r.close = true;
            return write_reply(&mut conn, &r, false);
        }
        let Some(length) = header(&req, "Content-Length").and_then(|v| v.parse::<usize>().ok())
        else {
            let mut r = Reply::error("411 Length Required", None, "Content-Length is required");
            r.close = true;
            return write_reply(&mut conn, &r, false);
        };
        if length > limits.body_bytes {
            let mut r = Reply::error(
                "413 Content Too Large",
                None,
                &format!(
                    "a request body may hold at most {} bytes",
                    limits.body_bytes
                ),
            );
            r.close = true;
            return write_reply(&mut conn, &r, false);
        }

        // authentication before the body is read
        let auth = header(&req, "Authorization").map(str::to_string);
        let version = shared.users.version();
        let cached = match (&authorized, &auth, &version) {
            (Some((a, v)), Some(h), Ok(now)) => a == h && v == now,
            _ => false,
        };
        if !cached {
            let creds = auth.as_deref().and_then(basic_credentials);
            let ok = match (&creds, &version) {
                (Some((u, p)), Ok(_)) => match shared.users.verify(u, p) {
                    Ok(ok) => ok,
                    Err(e) => {
                        warn!(error = %e, "CIM login refused: the accounts cannot be used");
                        false
                    }
                },
                (_, Err(e)) => {
                    warn!(error = %e, "CIM login refused: the accounts cannot be used");
                    false
                }
                (None, Ok(_)) => false,
            };
            if !ok {
                if let Some((u, _)) = &creds {
                    warn!(?peer, user = %u, "CIM login failed");
                    std::thread::sleep(limits.login_delay);
                }
                let mut r = Reply::error("401 Unauthorized", None, "authentication required");
                r.headers
                    .push(("WWW-Authenticate", "Basic realm=\"lio-replica\"".into()));
                r.close = true;
                return write_reply(&mut conn, &r, false);
            }
            if let (Some(h), Ok(v)) = (&auth, &version) {
                authorized = Some((h.clone(), *v));
            }
        }
        if header(&req, "Expect").is_some_and(|e| e.eq_ignore_ascii_case("100-continue")) {
            conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
            conn.flush()?;
        }
        let cim_method = header(&req, "CIMMethod").map(str::to_string);
        let cim_operation = header(&req, "CIMOperation").map(str::to_string);

        // the body, within its time
        let mut body = buf[head_end..].to_vec();
        buf.clear();
        let deadline = Instant::now() + limits.body_time;
        while body.len() < length {
            let left = deadline
                .checked_duration_since(Instant::now())
                .filter(|w| !w.is_zero())
                .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "request body too slow"))?;
            conn.tcp().set_read_timeout(Some(left))?;
            let mut chunk = vec![0u8; (length - body.len()).min(64 * 1024)];
            let n = conn.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed inside a body",
                ));
            }
            body.extend_from_slice(&chunk[..n]);
        }
        // pipelined bytes past this body belong to the next request
        if body.len() > length {
            buf = body.split_off(length);
        }

        let reply = handle_body(
            shared,
            cim_operation.as_deref(),
            cim_method.as_deref(),
            &body,
        );
        write_reply(&mut conn, &reply, keep_alive)?;
        if !keep_alive || reply.close {
            return Ok(());
        }
    }
}

/// One authenticated request body to its reply.
fn handle_body(
    shared: &Shared,
    operation: Option<&str>,
    method: Option<&str>,
    body: &[u8],
) -> Reply {
    if !operation.is_some_and(|o| o.eq_ignore_ascii_case("MethodCall")) {
        return Reply::error(
            "400 Bad Request",
            Some("unsupported-operation"),
            "CIMOperation: MethodCall is required",
        );
    }
    let Ok(text) = std::str::from_utf8(body) else {
        return Reply::error(
            "400 Bad Request",
            Some("request-not-well-formed"),
            "the body is not UTF-8",
        );
    };
    let req = match xml::parse_request(text) {
        Ok(r) => r,
        Err(e) => {
            debug!(error = %e, "CIM request refused");
            let status = match e {
                xml::XmlError::MultipleRequests => "501 Not Implemented",
                _ => "400 Bad Request",
            };
            return Reply::error(status, Some(e.header_value()), &e.to_string());
        }
    };
    if method.is_some_and(|m| !m.eq_ignore_ascii_case(req.call.name())) {
        return Reply::error(
            "400 Bad Request",
            Some("header-mismatch"),
            "the CIMMethod header does not name the method in the body",
        );
    }
    let response = match catch_unwind(AssertUnwindSafe(|| shared.provider.handle(&req))) {
        Ok(r) => r,
        Err(_) => {
            warn!(operation = %req.call.name(), "CIM operation panicked");
            let e = xml::CimError::new(xml::status::FAILED, "internal error");
            match &req.call {
                xml::Call::Intrinsic { name, .. } => xml::Response::Intrinsic {
                    name: name.clone(),
                    result: Err(e),
                },
                xml::Call::Extrinsic { name, .. } => xml::Response::Extrinsic {
                    name: name.clone(),
                    result: Err(e),
                },
            }
        }
    };
    Reply {
        status: "200 OK",
        headers: vec![
            ("Content-Type", "application/xml; charset=\"utf-8\"".into()),
            ("CIMOperation", "MethodResponse".into()),
        ],
        body: xml::write_response(&req.message_id, &response).into_bytes(),
        close: false,
    }
}
