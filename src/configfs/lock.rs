//! rtslib's backstore lock: `flock(LOCK_EX)` on `/var/run/rtslib_backstore.lock`, so that
//! targetcli and this daemon never pick the same HBA index at once.

use super::BackstoreLock;
use crate::error::{Error, Result};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

pub(super) fn lock(path: &Path) -> Result<BackstoreLock> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            return Err(Error::io(
                "open lock file",
                path,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("directory {} does not exist", parent.display()),
                ),
            ));
        }
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits() | nix::fcntl::OFlag::O_CLOEXEC.bits())
        .open(path)
        .map_err(|e| Error::io("open lock file", path, e))?;
    loop {
        match Flock::lock(file, FlockArg::LockExclusive) {
            Ok(locked) => {
                tracing::debug!(path = %path.display(), "backstore lock taken");
                return Ok(BackstoreLock { _file: locked });
            }
            Err((f, Errno::EINTR)) => file = f,
            Err((_, errno)) => {
                return Err(Error::io(
                    "flock",
                    path,
                    std::io::Error::from_raw_os_error(errno as i32),
                ))
            }
        }
    }
}
