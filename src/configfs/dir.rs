//! Reading directories through their descriptors: the entries of a directory with their kind
//! from `d_type` (no `stat` per entry), files opened relative to a directory already open (a
//! short path walk) and read with one `read`. Nothing here follows a symlink in the last
//! component of a path.
//!
//! Enumerating thousands of objects is a matter of system calls (each costs a microsecond or
//! more, most of it the path walk); these are the few a listing cannot do without.

use super::paths::{Entry, EntryKind};
use nix::fcntl::{AtFlags, OFlag};
use nix::libc;
use nix::sys::stat::{Mode, SFlag};
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A configfs attribute shows at most a page.
const PAGE: usize = 4096;
/// Reading stops here: a file this long is not a configfs attribute.
const READ_MAX: u64 = 64 * 1024;

fn at(dir: Option<BorrowedFd<'_>>) -> Option<i32> {
    dir.map(|d| d.as_raw_fd())
}

fn owned(fd: i32) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful open and is owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Open the directory `path` (relative to `dir` if given). With `follow` false a symlink is
/// refused: the error is `ELOOP` or `ENOTDIR`, see [`is_symlink_at`] to tell.
pub(crate) fn open_dir(
    dir: Option<BorrowedFd<'_>>,
    path: &Path,
    follow: bool,
) -> io::Result<OwnedFd> {
    let mut flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    if !follow {
        flags |= OFlag::O_NOFOLLOW;
    }
    let fd = nix::fcntl::openat(at(dir), path, flags, Mode::empty()).map_err(io::Error::from)?;
    Ok(owned(fd))
}

/// Whether `path` (relative to `dir` if given) is a symlink itself.
pub(crate) fn is_symlink_at(dir: Option<BorrowedFd<'_>>, path: &Path) -> bool {
    nix::sys::stat::fstatat(at(dir), path, AtFlags::AT_SYMLINK_NOFOLLOW)
        .is_ok_and(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK)
}

/// The entries of the open directory `dir` (`path` names it in warnings), without `.` and
/// `..`, in the order the kernel gives them. Names that are not UTF-8 are skipped with a
/// warning. Where the file system does not give the kind, it is asked with one `lstat`.
pub(crate) fn read_entries(dir: BorrowedFd<'_>, path: &Path) -> io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    loop {
        buf.clear();
        // SAFETY: getdents64 writes at most `capacity` bytes into the buffer; `dir` is an
        // open descriptor.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                dir.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.capacity(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            break;
        }
        let n = usize::try_from(n).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
        if n > buf.capacity() {
            return Err(io::Error::from(io::ErrorKind::InvalidData));
        }
        // SAFETY: the kernel wrote the first `n` bytes.
        unsafe { buf.set_len(n) };
        let mut rec = &buf[..];
        while !rec.is_empty() {
            // struct linux_dirent64 { u64 d_ino; i64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
            let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed directory entry");
            let len = rec
                .get(16..18)
                .map(|b| usize::from(u16::from_ne_bytes([b[0], b[1]])))
                .ok_or_else(bad)?;
            if len < 20 || len > rec.len() {
                return Err(bad());
            }
            let d_type = rec[18];
            let raw = &rec[19..len];
            let name = &raw[..raw.iter().position(|b| *b == 0).ok_or_else(bad)?];
            rec = &rec[len..];
            if name == b"." || name == b".." {
                continue;
            }
            let Ok(name) = std::str::from_utf8(name) else {
                tracing::warn!(dir = %path.display(), name = ?OsStr::from_bytes(name), "skipping a name that is not UTF-8");
                continue;
            };
            let kind = match d_type {
                libc::DT_DIR => EntryKind::Dir,
                libc::DT_REG => EntryKind::File,
                libc::DT_LNK => EntryKind::Symlink,
                libc::DT_UNKNOWN => {
                    match nix::sys::stat::fstatat(
                        Some(dir.as_raw_fd()),
                        name,
                        AtFlags::AT_SYMLINK_NOFOLLOW,
                    ) {
                        Ok(st) => match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
                            SFlag::S_IFDIR => EntryKind::Dir,
                            SFlag::S_IFREG => EntryKind::File,
                            SFlag::S_IFLNK => EntryKind::Symlink,
                            _ => EntryKind::Other,
                        },
                        // removed while we looked
                        Err(nix::errno::Errno::ENOENT) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
                _ => EntryKind::Other,
            };
            out.push(Entry {
                name: name.to_string(),
                kind,
            });
        }
    }
    Ok(out)
}

/// Read the text file `path` (relative to `dir` if given) without following a symlink in its
/// last component; trailing whitespace removed. `None` if it is absent, unreadable
/// (write-only attributes), a directory, or not text.
///
/// One `read` answers: configfs fills its page on the first read, and a regular file reads
/// short only at its end; a full page is read on, to the 64 KiB bound. Opened non-blocking so
/// that a FIFO planted in a plain directory cannot hang the read (configfs holds none).
pub(crate) fn read_text_at(dir: Option<BorrowedFd<'_>>, path: &Path) -> Option<String> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let fd = nix::fcntl::openat(at(dir), path, flags, Mode::empty()).ok()?;
    let mut f = File::from(owned(fd));
    let mut page = [0u8; PAGE];
    let n = loop {
        match f.read(&mut page) {
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
    };
    let mut bytes = page[..n].to_vec();
    if n == PAGE {
        f.take(READ_MAX - PAGE as u64)
            .read_to_end(&mut bytes)
            .ok()?;
    }
    let mut s = String::from_utf8(bytes).ok()?;
    s.truncate(s.trim_end().len());
    Some(s)
}

/// Where the symlink `name` inside the open directory `dir` points, as written (not followed).
pub(crate) fn read_link_at(dir: BorrowedFd<'_>, name: &str) -> io::Result<PathBuf> {
    let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut buf = [0u8; libc::PATH_MAX as usize];
    // SAFETY: readlinkat writes at most `buf.len()` bytes into `buf`; `c` is NUL-terminated.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            c.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    if n >= buf.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "symlink target too long",
        ));
    }
    Ok(PathBuf::from(OsStr::from_bytes(&buf[..n])))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn entries_kinds_and_reads() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::create_dir(p.join("sub")).unwrap();
        std::fs::write(p.join("f"), "value \n").unwrap();
        std::fs::write(p.join("sub/g"), "x".repeat(PAGE + 10)).unwrap();
        std::fs::write(p.join("big"), "y".repeat(READ_MAX as usize + 1)).unwrap();
        std::fs::write(p.join("bin"), [0xff, 0xfe]).unwrap();
        std::os::unix::fs::symlink("f", p.join("l")).unwrap();
        std::os::unix::fs::symlink("sub", p.join("ls")).unwrap();
        nix::unistd::mkfifo(&p.join("fifo"), Mode::S_IRWXU).unwrap();
        let many = p.join("many");
        std::fs::create_dir(&many).unwrap();
        for i in 0..2000 {
            std::fs::write(many.join(format!("a-rather-long-file-name-{i:04}")), "").unwrap();
        }

        let fd = open_dir(None, p, false).unwrap();
        let mut e = read_entries(fd.as_fd(), p).unwrap();
        e.sort_by(|a, b| a.name.cmp(&b.name));
        let got: Vec<(&str, EntryKind)> = e.iter().map(|e| (e.name.as_str(), e.kind)).collect();
        assert_eq!(
            got,
            vec![
                ("big", EntryKind::File),
                ("bin", EntryKind::File),
                ("f", EntryKind::File),
                ("fifo", EntryKind::Other),
                ("l", EntryKind::Symlink),
                ("ls", EntryKind::Symlink),
                ("many", EntryKind::Dir),
                ("sub", EntryKind::Dir),
            ]
        );
        // more entries than one getdents64 call returns
        let mfd = open_dir(Some(fd.as_fd()), Path::new("many"), false).unwrap();
        assert_eq!(read_entries(mfd.as_fd(), &many).unwrap().len(), 2000);

        let at = Some(fd.as_fd());
        assert_eq!(read_text_at(at, Path::new("f")).as_deref(), Some("value"));
        assert_eq!(read_text_at(None, &p.join("f")).as_deref(), Some("value"));
        assert_eq!(
            read_text_at(at, Path::new("sub/g")).unwrap().len(),
            PAGE + 10
        );
        assert_eq!(
            read_text_at(at, Path::new("big")).unwrap().len(),
            READ_MAX as usize
        );
        assert_eq!(read_text_at(at, Path::new("bin")), None);
        assert_eq!(
            read_text_at(at, Path::new("l")),
            None,
            "a symlink is not followed"
        );
        assert_eq!(read_text_at(at, Path::new("sub")), None, "a directory");
        assert_eq!(read_text_at(at, Path::new("nope")), None);
        assert_eq!(
            read_text_at(at, Path::new("fifo")).as_deref(),
            Some(""),
            "does not block"
        );

        assert!(open_dir(at, Path::new("ls"), false).is_err());
        assert!(open_dir(at, Path::new("ls"), true).is_ok());
        assert!(open_dir(at, Path::new("f"), false).is_err());
        assert!(is_symlink_at(at, Path::new("ls")));
        assert!(!is_symlink_at(at, Path::new("sub")));
        assert!(!is_symlink_at(at, Path::new("nope")));
        assert_eq!(
            read_link_at(fd.as_fd(), "ls").unwrap(),
            PathBuf::from("sub")
        );
        assert!(read_link_at(fd.as_fd(), "sub").is_err());
    }
}
