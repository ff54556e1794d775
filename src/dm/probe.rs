//! Whether a disk still answers reads. The kernel reports a failed mirror or raid1 leg in the
//! target's status, but nothing reports a failed snapshot origin or COW store until a write
//! needs a chunk copied; a read of the disk's first block, past the page cache, tells at once.

use super::Devno;
use crate::error::{Error, Result};
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Duration;

/// Disks with a read still outstanding: a disk that never answers holds one reader thread,
/// not one per look.
static OUTSTANDING: Mutex<BTreeSet<Devno>> = Mutex::new(BTreeSet::new());

/// The size of the block read, and the alignment `O_DIRECT` needs.
const BLOCK: usize = 4096;

#[repr(C, align(4096))]
struct Block([u8; BLOCK]);

/// Read the first 4 KiB of `dev` with `O_DIRECT`, giving up after `timeout` (the read goes on
/// in its thread until the kernel ends it).
pub(crate) fn read_first_block(dev: Devno, timeout: Duration) -> Result<()> {
    if !OUTSTANDING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(dev)
    {
        return Err(Error::Timeout(format!(
            "block device {dev}: an earlier read has not returned"
        )));
    }
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name(format!("read {dev}"))
        .spawn(move || {
            let r = read_block(dev);
            OUTSTANDING
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&dev);
            // (nobody listens any more after a timeout)
            let _ = tx.send(r);
        });
    if let Err(e) = spawned {
        OUTSTANDING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&dev);
        return Err(Error::Other(format!(
            "cannot start a reader for {dev}: {e}"
        )));
    }
    rx.recv_timeout(timeout).unwrap_or_else(|_| {
        Err(Error::Timeout(format!(
            "block device {dev}: a read of its first block did not return within {} s",
            timeout.as_secs_f32()
        )))
    })
}

fn read_block(dev: Devno) -> Result<()> {
    let path = node_of(dev)?;
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECT | nix::libc::O_CLOEXEC | nix::libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| Error::io("open", &path, e))?;
    let m = f.metadata().map_err(|e| Error::io("stat", &path, e))?;
    if Devno::from_dev_t(m.rdev()) != dev {
        return Err(Error::Other(format!(
            "{} is not block device {dev} any more",
            path.display()
        )));
    }
    let mut b = Box::new(Block([0; BLOCK]));
    f.read_exact_at(&mut b.0, 0)
        .map_err(|e| Error::io("read", &path, e))
}

/// `/dev/NAME` of a block device, from the kernel's `uevent` (devtmpfs makes that node).
fn node_of(dev: Devno) -> Result<PathBuf> {
    let uevent = PathBuf::from(format!("/sys/dev/block/{dev}/uevent"));
    let text = fs::read_to_string(&uevent).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            Error::NotFound(format!("block device {dev}: the kernel has no such device"))
        }
        _ => Error::io("read", &uevent, e),
    })?;
    let name = text
        .lines()
        .find_map(|l| l.strip_prefix("DEVNAME="))
        .filter(|n| !n.is_empty() && !n.starts_with('/') && !n.split('/').any(|c| c == ".."))
        .ok_or_else(|| Error::Other(format!("{} names no device node", uevent.display())))?;
    Ok(PathBuf::from("/dev").join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_the_kernel_does_not_have_fails_at_once() {
        let dev = Devno::new(4095, 1_048_575);
        let e = read_first_block(dev, Duration::from_secs(2)).unwrap_err();
        assert!(e.to_string().contains("no such device"), "{e}");
        // and nothing is left outstanding
        assert!(!OUTSTANDING.lock().unwrap().contains(&dev));
    }
}
