//! Loop devices over files the daemon keeps in its state directory: a raid1's source-leg
//! metadata lives in one (see `engine::async_copy`), so that no disk but the source's own
//! carries what the source leg needs.
//!
//! Bound with `LOOP_CONFIGURE` and `LO_FLAGS_AUTOCLEAR`: the kernel unbinds the device when
//! its last opener closes it, so once the dm device stacked on it is removed the loop device
//! goes too, and a daemon that dies between binding and stacking leaves nothing bound.

use super::Devno;
use crate::error::{Error, Result};
use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A loop device bound to a file. While `hold` is open the device stays bound even with no
/// other opener; drop it once something (a dm table) holds the device.
#[derive(Debug)]
pub struct FileDevice {
    pub devno: Devno,
    pub hold: Option<fs::File>,
}

const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_NAME_SIZE: usize = 64;
const LO_KEY_SIZE: usize = 32;

/// `struct loop_info64` (include/uapi/linux/loop.h).
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; LO_KEY_SIZE],
    lo_init: [u64; 2],
}

/// `struct loop_config`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

nix::ioctl_none_bad!(loop_ctl_get_free, 0x4C82);
nix::ioctl_write_ptr_bad!(loop_configure, 0x4C0A, LoopConfig);

/// The loop device already bound to `file` (canonical path), if any.
pub fn bound_to(sys_block: &Path, file: &Path) -> Option<Devno> {
    let want = file.as_os_str().as_encoded_bytes();
    for e in fs::read_dir(sys_block).ok()?.flatten() {
        let dir = e.path();
        let Ok(b) = fs::read(dir.join("loop/backing_file")) else {
            continue;
        };
        if b.strip_suffix(b"\n").unwrap_or(&b) == want {
            let dev = fs::read_to_string(dir.join("dev")).ok()?;
            return dev.trim().parse().ok();
        }
    }
    None
}

/// Bind a free loop device to `file` (or find the one already bound to it).
pub fn attach(file: &Path) -> Result<FileDevice> {
    let file: PathBuf = fs::canonicalize(file).map_err(|e| Error::io("resolve", file, e))?;
    if let Some(devno) = bound_to(Path::new("/sys/block"), &file) {
        return Ok(FileDevice { devno, hold: None });
    }
    let backing = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&file)
        .map_err(|e| Error::io("open", &file, e))?;
    let ctl_path = Path::new("/dev/loop-control");
    let ctl = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(ctl_path)
        .map_err(|e| Error::io("open", ctl_path, e))?;
    let mut name = [0u8; LO_NAME_SIZE];
    let bytes = file.as_os_str().as_encoded_bytes();
    let n = bytes.len().min(LO_NAME_SIZE - 1);
    name[..n].copy_from_slice(&bytes[..n]);
    // another process may take the free device between asking and binding: ask again
    let mut last = None;
    for _ in 0..8 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument; the fd is open.
        let k = unsafe { loop_ctl_get_free(ctl.as_raw_fd()) }
            .map_err(|e| Error::io("LOOP_CTL_GET_FREE", ctl_path, std::io::Error::from(e)))?;
        let node = PathBuf::from(format!("/dev/loop{k}"));
        let dev = match fs::OpenOptions::new().read(true).write(true).open(&node) {
            Ok(d) => d,
            Err(e) => return Err(Error::io("open", &node, e)),
        };
        let cfg = LoopConfig {
            fd: backing.as_raw_fd() as u32,
            block_size: 0,
            info: LoopInfo64 {
                lo_device: 0,
                lo_inode: 0,
                lo_rdevice: 0,
                lo_offset: 0,
                lo_sizelimit: 0,
                lo_number: 0,
                lo_encrypt_type: 0,
                lo_encrypt_key_size: 0,
                lo_flags: LO_FLAGS_AUTOCLEAR,
                lo_file_name: name,
                lo_crypt_name: [0; LO_NAME_SIZE],
                lo_encrypt_key: [0; LO_KEY_SIZE],
                lo_init: [0; 2],
            },
            reserved: [0; 8],
        };
        // SAFETY: LOOP_CONFIGURE reads one struct loop_config; both fds are open.
        match unsafe { loop_configure(dev.as_raw_fd(), &cfg) } {
            Ok(_) => {
                let m = dev.metadata().map_err(|e| Error::io("stat", &node, e))?;
                return Ok(FileDevice {
                    devno: Devno::from_dev_t(m.rdev()),
                    hold: Some(dev),
                });
            }
            Err(nix::errno::Errno::EBUSY) => last = Some(node),
            Err(e) => {
                return Err(Error::io_value(
                    "LOOP_CONFIGURE",
                    &node,
                    &file.display().to_string(),
                    std::io::Error::from(e),
                ))
            }
        }
    }
    Err(Error::Other(format!(
        "no free loop device for {} (the last tried, {}, was taken each time)",
        file.display(),
        last.map(|p| p.display().to_string()).unwrap_or_default()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_structs_have_the_kernels_sizes() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }

    #[test]
    fn a_bound_file_is_found_by_its_backing_file() {
        let d = tempfile::tempdir().unwrap();
        let sys = d.path();
        for (k, f) in [(0, "/var/lib/x/a.img\n"), (1, "/var/lib/x/b.img\n")] {
            let dir = sys.join(format!("loop{k}"));
            fs::create_dir_all(dir.join("loop")).unwrap();
            fs::write(dir.join("loop/backing_file"), f).unwrap();
            fs::write(dir.join("dev"), format!("7:{k}\n")).unwrap();
        }
        fs::create_dir_all(sys.join("loop2")).unwrap();
        assert_eq!(
            bound_to(sys, Path::new("/var/lib/x/b.img")),
            Some(Devno::new(7, 1))
        );
        assert_eq!(bound_to(sys, Path::new("/var/lib/x/c.img")), None);
    }
}
