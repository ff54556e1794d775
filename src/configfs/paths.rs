//! Path helpers: names of the configfs directory kinds, lexical path arithmetic (symlinks are
//! resolved by reading them, never by following them), and careful reads of attributes.

use super::dir;
use super::ConfigFs;
use crate::error::{Error, Result};
use crate::names::{validate_configfs_component, Plugin};
use nix::libc;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// Names under a fabric directory that are not targets (as rtslib excludes them).
pub(crate) const FABRIC_NON_TARGETS: &[&str] = &[
    "discovery_auth",
    "lio_version",
    "version",
    "cpus_allowed_list",
];

/// `iblock_3` -> ("iblock", 3) when the prefix is a known plugin directory.
pub(crate) fn split_hba(name: &str) -> Option<(&'static str, u32)> {
    let (prefix, index) = name.rsplit_once('_')?;
    let index = u32::try_from(parse_digits(index)?).ok()?;
    Plugin::from_hba_prefix(prefix).map(|p| (p.hba_prefix(), index))
}

/// The plugin of an HBA directory (`iblock_0` -> block).
pub(crate) fn plugin_of_hba(name: &str) -> Option<Plugin> {
    let (prefix, _) = split_hba(name)?;
    Plugin::from_hba_prefix(prefix)
}

fn parse_digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `lun_12` with prefix `lun_` -> 12. Digits only.
pub(crate) fn parse_index(name: &str, prefix: &str) -> Option<u64> {
    parse_digits(name.strip_prefix(prefix)?)
}

/// Lexical normalisation: drops `.`, applies `..` to what precedes it. No filesystem access.
pub(crate) fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() && !p.is_absolute() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Where a symlink points, as a normalised path (relative targets are taken from the link's
/// directory, the way the kernel's configfs readlink answers them). The link is not followed.
pub(crate) fn link_target(link: &Path) -> Option<PathBuf> {
    resolve_link(link, std::fs::read_link(link).ok()?)
}

/// `target`, as read from the symlink `link`, taken from the link's directory if relative and
/// normalised.
pub(crate) fn resolve_link(link: &Path, target: PathBuf) -> Option<PathBuf> {
    let full = if target.is_absolute() {
        target
    } else {
        link.parent()?.join(target)
    };
    Some(normalize(&full))
}

/// Names of `rel`'s components, all plain (`Normal`) and valid configfs names.
pub(crate) fn plain_components(rel: &Path) -> Option<Vec<String>> {
    rel.components()
        .map(|c| match c {
            Component::Normal(s) => s
                .to_str()
                .filter(|s| validate_configfs_component(s).is_ok())
                .map(str::to_string),
            _ => None,
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryKind {
    Dir,
    File,
    Symlink,
    Other,
}

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub name: String,
    pub kind: EntryKind,
}

/// A directory opened without following a symlink, and its entries sorted by name.
pub(crate) struct Listing {
    pub fd: OwnedFd,
    pub entries: Vec<Entry>,
}

/// List `rel` (relative to the open directory `at`, else a path; `path` names it in messages),
/// not following a symlink: see [`listing`].
pub(crate) fn open_listing(
    at: Option<BorrowedFd<'_>>,
    rel: &Path,
    path: &Path,
) -> std::io::Result<Option<Listing>> {
    listing(at, rel, path, false)
}

/// List `rel` (relative to the open directory `at`, else a path; `path` names it in messages).
/// Kinds come from the directory itself (`d_type`), so an entry costs no `stat`. Unless
/// `follow`, a symlink where the directory should be is not listed (`None`, with a warning):
/// configfs has none at these places, and what it leads to is not part of the tree (a changed
/// entry behind it would be a change outside the root).
fn listing(
    at: Option<BorrowedFd<'_>>,
    rel: &Path,
    path: &Path,
    follow: bool,
) -> std::io::Result<Option<Listing>> {
    let fd = match dir::open_dir(at, rel, follow) {
        Ok(fd) => fd,
        // O_NOFOLLOW refuses a symlink with ELOOP, or ENOTDIR with O_DIRECTORY
        Err(e)
            if !follow
                && matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR))
                && dir::is_symlink_at(at, rel) =>
        {
            tracing::warn!(path = %path.display(), "ignoring a symlink where configfs has a directory");
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let mut entries = dir::read_entries(fd.as_fd(), path)?;
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Some(Listing { fd, entries }))
}

/// The entries of a directory, sorted by name, without following symlinks. Names that are
/// not UTF-8 are skipped with a warning. A symlink where the directory should be has no
/// entries (with a warning), see [`listing`].
pub(crate) fn entries(dir: &Path) -> std::io::Result<Vec<Entry>> {
    Ok(listing(None, dir, dir, false)?
        .map(|l| l.entries)
        .unwrap_or_default())
}

/// Like [`entries`], but `dir` itself may be a symlink: for the configfs root as given.
pub(crate) fn root_entries(dir: &Path) -> std::io::Result<Vec<Entry>> {
    Ok(listing(None, dir, dir, true)?
        .map(|l| l.entries)
        .unwrap_or_default())
}

/// The listing of `rel` (relative to `at`, else a path; `path` names it), or none if it does
/// not exist (it vanished, or this kernel has no such group) or is a symlink; other errors are
/// reported with the path.
pub(crate) fn listing_if_there(
    at: Option<BorrowedFd<'_>>,
    rel: &Path,
    path: &Path,
) -> Result<Option<Listing>> {
    match listing(at, rel, path, false) {
        Ok(v) => Ok(v),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read directory", path, e)),
    }
}

/// The entries of `dir`, or none if it does not exist (it vanished, or this kernel has no such
/// group); other errors are reported with the path.
pub(crate) fn entries_or_empty(dir: &Path) -> Result<Vec<Entry>> {
    Ok(listing_if_there(None, dir, dir)?
        .map(|l| l.entries)
        .unwrap_or_default())
}

/// The names of the sub-directories among the `entries` of `dir` that are valid configfs
/// names. Symlinks where a directory is expected and hostile names are skipped with a warning.
pub(crate) fn dir_names(dir: &Path, entries: Vec<Entry>) -> Vec<String> {
    let mut out = Vec::new();
    for e in entries {
        match e.kind {
            EntryKind::Dir => {}
            EntryKind::Symlink => {
                tracing::warn!(path = %dir.join(&e.name).display(), "ignoring a symlink where configfs has a directory");
                continue;
            }
            _ => continue,
        }
        if let Err(err) = validate_configfs_component(&e.name) {
            tracing::warn!(dir = %dir.display(), "ignoring entry: {err}");
            continue;
        }
        out.push(e.name);
    }
    out
}

/// The names of the symlinks among the `entries` of `dir` (a LUN or mapped-LUN directory),
/// validated.
pub(crate) fn link_names(dir: &Path, entries: Vec<Entry>) -> Vec<String> {
    let mut out = Vec::new();
    for e in entries {
        if e.kind != EntryKind::Symlink {
            continue;
        }
        if let Err(err) = validate_configfs_component(&e.name) {
            tracing::warn!(dir = %dir.display(), "ignoring link: {err}");
            continue;
        }
        out.push(e.name);
    }
    out
}

/// The sub-directories of `dir` whose names are valid configfs names. Symlinks where a
/// directory is expected and hostile names are skipped with a warning.
pub(crate) fn child_dirs(dir: &Path) -> Result<Vec<String>> {
    Ok(dir_names(dir, entries_or_empty(dir)?))
}

/// The symlinks inside `dir` (a LUN or mapped-LUN directory), names validated.
pub(crate) fn child_links(dir: &Path) -> Result<Vec<String>> {
    Ok(link_names(dir, entries_or_empty(dir)?))
}

/// A directory that is really there (not a symlink to one).
pub(crate) fn is_real_dir(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir())
}

/// Anything at `p`, without following a symlink.
pub(crate) fn exists_nofollow(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

/// The permission bits of `p` (not following a symlink).
pub(crate) fn mode_nofollow(p: &Path) -> Option<u32> {
    std::fs::symlink_metadata(p)
        .ok()
        .map(|m| m.permissions().mode())
}

/// Read an attribute without following a symlink; trailing whitespace removed. `None` if it
/// is absent, unreadable (write-only attributes) or not text.
pub(crate) fn read_attr(p: &Path) -> Option<String> {
    // Nor through a symlinked group (`wwn`, `attrib`): that file is not in the tree.
    if p.parent()
        .and_then(|d| std::fs::symlink_metadata(d).ok())
        .is_some_and(|m| m.file_type().is_symlink())
    {
        return None;
    }
    dir::read_text_at(None, p)
}

/// A `0`/`1` attribute. `None` if absent or not a number.
pub(crate) fn read_flag(p: &Path) -> Option<bool> {
    read_attr(p)?.trim().parse::<u64>().ok().map(|v| v != 0)
}

/// The value after `key:` in the kernel's `info` text (`key` may be several words, matched
/// as whole whitespace-separated tokens, as in `UDEV PATH`).
pub(crate) fn info_value(info: &str, key: &str) -> Option<String> {
    let toks: Vec<&str> = info.split_whitespace().collect();
    let mut want: Vec<String> = key.split_whitespace().map(str::to_string).collect();
    if let Some(last) = want.last_mut() {
        last.push(':');
    }
    let n = want.len();
    (0..toks.len().saturating_sub(n)).find_map(|i| {
        if toks[i..i + n].iter().zip(&want).all(|(a, b)| *a == b) {
            Some(toks[i + n].to_string())
        } else {
            None
        }
    })
}

impl ConfigFs {
    /// The root, normalised lexically.
    pub(crate) fn norm_root(&self) -> PathBuf {
        normalize(&self.root)
    }

    /// `path` relative to the root, if it lies under it (lexically).
    pub(crate) fn rel_to_root(&self, path: &Path) -> Option<PathBuf> {
        normalize(path)
            .strip_prefix(self.norm_root())
            .ok()
            .map(Path::to_path_buf)
    }

    /// Refuses a change at `p` unless it lies under the root, names it with plain components
    /// only, and passes through no symlink on the way (the last component, the one changed,
    /// is the operation's business: `unlink` removes a link, the others refuse one). Paths are
    /// built from names read from the tree; this makes sure none of them leads the change
    /// anywhere else, whatever was planted in the tree.
    pub(crate) fn check_change_path(&self, p: &Path) -> Result<()> {
        let refuse = |why: String| {
            Err(Error::Invalid(format!(
                "refusing to change {}: {why}",
                p.display()
            )))
        };
        let Ok(rel) = p.strip_prefix(&self.root) else {
            return refuse(format!(
                "not under the configfs root {}",
                self.root.display()
            ));
        };
        let comps: Vec<_> = rel.components().collect();
        if comps.is_empty() || !comps.iter().all(|c| matches!(c, Component::Normal(_))) {
            return refuse("not a plain path below the configfs root".into());
        }
        let mut cur = self.root.clone();
        for c in &comps[..comps.len() - 1] {
            cur.push(c);
            if std::fs::symlink_metadata(&cur).is_ok_and(|m| m.file_type().is_symlink()) {
                return refuse(format!(
                    "{} is a symbolic link where configfs has a directory",
                    cur.display()
                ));
            }
        }
        Ok(())
    }

    /// Where a link inside the tree points, as components below the root. `None` (with a
    /// warning) if it leads outside the root or through a name we would not use.
    pub(crate) fn link_components(&self, link: &Path) -> Option<Vec<String>> {
        self.components_of_link(link, std::fs::read_link(link))
    }

    /// [`ConfigFs::link_components`] of `link`, whose target `read` was read by the caller.
    pub(crate) fn components_of_link(
        &self,
        link: &Path,
        read: std::io::Result<PathBuf>,
    ) -> Option<Vec<String>> {
        let Some(target) = read.ok().and_then(|t| resolve_link(link, t)) else {
            tracing::warn!(link = %link.display(), "cannot read symlink");
            return None;
        };
        let Some(rel) = self.rel_to_root(&target) else {
            tracing::warn!(link = %link.display(), target = %target.display(), "ignoring a symlink that leads outside the configfs root");
            return None;
        };
        let comps = plain_components(&rel);
        if comps.is_none() {
            tracing::warn!(link = %link.display(), target = %target.display(), "ignoring a symlink to an unexpected name");
        }
        comps
    }

    /// Check a caller's TPG path: `ROOT/FABRIC/WWN/tpgt_N` with valid names. Returns the path
    /// rebuilt from the checked components, and the components.
    pub(crate) fn check_tpg_path(&self, tpg: &Path) -> Result<(PathBuf, [String; 3], u16)> {
        let c = self.checked_rel(tpg, "TPG")?;
        match c.as_slice() {
            [fabric, wwn, t] if fabric != "core" => {
                let tag = parse_index(t, "tpgt_")
                    .and_then(|v| u16::try_from(v).ok())
                    .ok_or_else(|| {
                        Error::Invalid(format!("{} is not a TPG directory", tpg.display()))
                    })?;
                Ok((
                    self.root.join(fabric).join(wwn).join(t),
                    [fabric.clone(), wwn.clone(), t.clone()],
                    tag,
                ))
            }
            _ => Err(Error::Invalid(format!(
                "{} is not of the form {}/FABRIC/WWN/tpgt_N",
                tpg.display(),
                self.root.display()
            ))),
        }
    }

    /// Check a caller's node ACL path: `TPG/acls/INITIATOR`. Returns (tpg path, acl path).
    pub(crate) fn check_acl_path(&self, acl: &Path) -> Result<(PathBuf, PathBuf)> {
        let c = self.checked_rel(acl, "node ACL")?;
        match c.as_slice() {
            [fabric, wwn, t, acls, init] if acls == "acls" => {
                let tpg = self.root.join(fabric).join(wwn).join(t);
                self.check_tpg_path(&tpg)?;
                let acl = tpg.join("acls").join(init);
                Ok((tpg, acl))
            }
            _ => Err(Error::Invalid(format!(
                "{} is not of the form {}/FABRIC/WWN/tpgt_N/acls/INITIATOR",
                acl.display(),
                self.root.display()
            ))),
        }
    }

    /// Components of a caller-given path below the root; every one plain and valid.
    fn checked_rel(&self, p: &Path, what: &str) -> Result<Vec<String>> {
        let rel = p.strip_prefix(&self.root).map_err(|_| {
            Error::Invalid(format!(
                "{what} path {} is not under the configfs root {}",
                p.display(),
                self.root.display()
            ))
        })?;
        plain_components(rel).ok_or_else(|| {
            Error::Invalid(format!(
                "{what} path {} has a component that is not a plain configfs name",
                p.display()
            ))
        })
    }

    /// The directory of a storage object, from its checked hba and name.
    pub(crate) fn so_dir(&self, hba: &str, name: &str) -> Result<PathBuf> {
        validate_configfs_component(hba)?;
        validate_configfs_component(name)?;
        if split_hba(hba).is_none() {
            return Err(Error::Invalid(format!(
                "{hba:?} is not a backstore HBA directory (PLUGIN_N)"
            )));
        }
        Ok(self.root.join("core").join(hba).join(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hba_names() {
        assert_eq!(split_hba("iblock_0"), Some(("iblock", 0)));
        assert_eq!(split_hba("rd_mcp_12"), Some(("rd_mcp", 12)));
        assert_eq!(plugin_of_hba("rd_mcp_1"), Some(Plugin::Ramdisk));
        assert_eq!(plugin_of_hba("user_3"), Some(Plugin::User(None)));
        assert_eq!(split_hba("alua"), None);
        assert_eq!(split_hba("iblock_"), None);
        assert_eq!(split_hba("iblock_+1"), None);
        assert_eq!(split_hba("nope_1"), None);
    }

    #[test]
    fn lexical_paths() {
        assert_eq!(
            normalize(Path::new(
                "/sys/kernel/config/target/iscsi/iqn.x:t/tpgt_1/lun/lun_0/../../../../../../target/core/iblock_0/disk0"
            )),
            PathBuf::from("/sys/kernel/config/target/core/iblock_0/disk0")
        );
        assert_eq!(normalize(Path::new("/a/../../b")), PathBuf::from("/b"));
        assert_eq!(parse_index("lun_7", "lun_"), Some(7));
        assert_eq!(parse_index("lun_-7", "lun_"), None);
        assert_eq!(parse_index("lun_", "lun_"), None);
    }

    #[test]
    fn info_parsing() {
        // As the 6.1 kernel prints it (sample serial log), newlines and all.
        let info = "Status: DEACTIVATED  Max Queue Depth: 0  SectorSize: 512  HwMaxSectors: 4294967288\n        iBlock device: vda  UDEV PATH: /dev/vda  readonly: 0\n        Major: 253 Minor: 0  CLAIMED: IBLOCK\n";
        assert_eq!(info_value(info, "UDEV PATH").as_deref(), Some("/dev/vda"));
        assert_eq!(info_value(info, "readonly").as_deref(), Some("0"));
        assert_eq!(info_value(info, "Status").as_deref(), Some("DEACTIVATED"));
        assert_eq!(info_value(info, "device").as_deref(), Some("vda"));
        assert_eq!(info_value(info, "Size"), None);
        let fio = "Status: ACTIVATED  Max Queue Depth: 128  SectorSize: 512  HwMaxSectors: 1024\n        TCM FILEIO ID: 0        File: /var/f1  Size: 1048576  Mode: O_DSYNC Async: 0\n";
        assert_eq!(info_value(fio, "Size").as_deref(), Some("1048576"));
        assert_eq!(info_value(fio, "File").as_deref(), Some("/var/f1"));
    }
}
