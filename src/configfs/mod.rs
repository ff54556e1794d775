//! The LIO configfs model. The root is injectable (default `/sys/kernel/config/target`) so that
//! everything above runs on a plain directory in tests; [`FsOps`] carries the few operations a
//! plain directory cannot mimic (configfs `mkdir` makes attribute files, `rmdir` removes them,
//! writes have side effects). One type per configfs directory kind; each knows its path.
//!
//! This file holds the types and [`ConfigFs`]'s constructors and accessors; the methods that
//! read the tree are in `read.rs`, those that change it in `write.rs` (the engine relies on
//! their signatures).

mod dir;
pub mod fake;
mod lock;
mod paths;
mod read;
#[cfg(test)]
mod tests;
mod write;

use crate::error::Result;
use crate::names::{Element, Plugin};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const DEFAULT_ROOT: &str = "/sys/kernel/config/target";
pub const DEFAULT_LOCK: &str = "/var/run/rtslib_backstore.lock";

/// The filesystem operations with configfs side effects.
pub trait FsOps: Send + Sync {
    fn mkdir(&self, path: &Path) -> std::io::Result<()>;
    fn rmdir(&self, path: &Path) -> std::io::Result<()>;
    /// Write an attribute (never creates a file).
    fn write(&self, path: &Path, value: &str) -> std::io::Result<()>;
    fn symlink(&self, target: &Path, link: &Path) -> std::io::Result<()>;
    fn unlink(&self, link: &Path) -> std::io::Result<()>;
}

/// The real kernel: plain syscalls.
pub struct RealFs;

/// A storage object read whole: what a listing shows ([`StorageObjectSummary`], reached
/// through `Deref`) and its attributes, which re-creating it needs. Serialized flat, as one
/// object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct StorageObject {
    #[serde(flatten)]
    pub summary: StorageObjectSummary,
    /// `attrib/*` that are writable and readable
    pub attributes: BTreeMap<String, String>,
}

impl std::ops::Deref for StorageObject {
    type Target = StorageObjectSummary;
    fn deref(&self) -> &StorageObjectSummary {
        &self.summary
    }
}

/// A storage object as a listing shows it: [`StorageObject`] without its attributes. Reading
/// those costs a file per attribute (more than 30 per object); they are needed only to
/// re-create an object, which reads it whole ([`ConfigFs::find_storage_object`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct StorageObjectSummary {
    /// The plugin, by its targetcli name in JSON (block, fileio, ramdisk, pscsi, user)
    pub plugin: Plugin,
    /// HBA directory, e.g. `iblock_0`
    pub hba: String,
    pub name: String,
    /// `udev_path` (empty -> None)
    pub udev_path: Option<String>,
    pub size_bytes: Option<u64>,
    /// The unit serial (value of `wwn/vpd_unit_serial` without its label)
    pub wwn: Option<String>,
    pub enabled: bool,
    pub readonly: bool,
    pub path: PathBuf,
}

impl StorageObjectSummary {
    pub fn element(&self) -> Element {
        Element::existing(self.plugin.clone(), &self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Target {
    pub fabric: String,
    pub wwn: String,
    pub tpgs: Vec<Tpg>,
    pub path: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Tpg {
    pub tag: u16,
    pub enabled: bool,
    pub luns: Vec<Lun>,
    pub acls: Vec<NodeAcl>,
    /// `IP:PORT` directory names under `np/`
    pub portals: Vec<String>,
    pub path: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Lun {
    pub index: u64,
    /// Name of the symlink inside the lun directory
    pub link_name: String,
    /// `(hba, name)` of the storage object it links to
    pub storage_object: Option<(String, String)>,
    pub path: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct NodeAcl {
    pub initiator: String,
    pub mapped_luns: Vec<MappedLun>,
    pub path: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct MappedLun {
    pub index: u64,
    /// index of the TPG LUN it points to
    pub tpg_lun: u64,
    pub write_protect: bool,
    pub link_name: String,
    pub path: PathBuf,
}

/// One LUN that exports a storage object, with the ACL mappings of that LUN: all that
/// adoption must re-create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct LunExport {
    pub fabric: String,
    pub wwn: String,
    pub tpg: PathBuf,
    pub tpg_tag: u16,
    pub tpg_enabled: bool,
    pub lun: u64,
    pub link_name: String,
    pub mapped: Vec<MappedLun>,
    /// acl directory of each entry of `mapped` (same order)
    pub mapped_acls: Vec<PathBuf>,
}

/// A LUN and the storage object its link leads to: what listing every object's exports needs,
/// read without the TPGs' ACLs, portals and flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct LunLink {
    pub fabric: String,
    pub wwn: String,
    pub tpg_tag: u16,
    pub lun: u64,
    /// `(hba, name)` of the storage object
    pub storage_object: (String, String),
}

/// What to create: an iblock storage object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IblockSpec {
    pub name: String,
    /// Reuse this hba directory (e.g. to keep `iblock_3`); None = lowest free index
    pub hba: Option<String>,
    pub dev: PathBuf,
    pub wwn: Option<String>,
    pub readonly: bool,
    /// Written after enable, in key order; unknown or read-only ones are skipped with a warning
    pub attributes: BTreeMap<String, String>,
}

/// The configfs tree under one root.
#[derive(Clone)]
pub struct ConfigFs {
    root: PathBuf,
    ops: Arc<dyn FsOps>,
    lock_path: PathBuf,
}

/// Held while backstores are created or deleted (`flock` on rtslib's lock file).
/// Dropping it releases the lock.
pub struct BackstoreLock {
    _file: nix::fcntl::Flock<std::fs::File>,
}

impl ConfigFs {
    /// The real kernel tree at `root`.
    pub fn new(root: impl Into<PathBuf>) -> ConfigFs {
        Self::with_ops(root, Arc::new(RealFs), PathBuf::from(DEFAULT_LOCK))
    }

    pub fn with_ops(root: impl Into<PathBuf>, ops: Arc<dyn FsOps>, lock_path: PathBuf) -> ConfigFs {
        ConfigFs {
            root: root.into(),
            ops,
            lock_path,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn ops(&self) -> &Arc<dyn FsOps> {
        &self.ops
    }

    pub fn lock_path(&self) -> &Path {
        &self.lock_path
    }

    /// Take rtslib's backstore lock.
    pub fn lock(&self) -> Result<BackstoreLock> {
        lock::lock(&self.lock_path)
    }
}

impl FsOps for RealFs {
    fn mkdir(&self, path: &Path) -> std::io::Result<()> {
        std::fs::create_dir(path)
    }
    fn rmdir(&self, path: &Path) -> std::io::Result<()> {
        std::fs::remove_dir(path)
    }
    fn write(&self, path: &Path, value: &str) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        // Never create, never truncate, never follow a symlink: configfs attributes are
        // plain files the kernel made, and one write(2) is one `store` call.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .open(path)?;
        f.write_all(value.as_bytes())
    }
    fn symlink(&self, target: &Path, link: &Path) -> std::io::Result<()> {
        std::os::unix::fs::symlink(target, link)
    }
    fn unlink(&self, link: &Path) -> std::io::Result<()> {
        std::fs::remove_file(link)
    }
}
