//! Device-mapper layer: typed table lines and status lines, a backend trait with the kernel
//! implementation (ioctls through the `devicemapper` crate) and a simulated one.
//!
//! Only devices whose name starts with [`NAME_PREFIX`] and whose UUID starts with
//! [`UUID_PREFIX`] are ever touched; [`DmName`] enforces the prefix and the kernel's limits.

pub mod identity;
pub mod kernel;
pub mod loopdev;
mod probe;
pub mod sim;
pub mod status;
pub mod table;
pub mod units;

use crate::error::{Error, Result};
use std::path::PathBuf;
use std::time::Duration;

pub use status::{MirrorStatus, RaidStatus, SnapshotStatus};
pub use table::{
    LinearParams, MirrorParams, RaidParams, SnapshotOriginParams, SnapshotParams, TableLine, Target,
};

pub use identity::DiskIdentity;
pub use kernel::KernelDm;
pub use loopdev::FileDevice;
pub use sim::{SimCall, SimDm, SimOp, SyncStep};
pub use table::{format_table, parse_table, table_length, RaidDevice};
pub use units::{Devno, Sectors, SECTOR_SIZE};

/// Versioned prefix of every device-mapper name this daemon creates.
pub const NAME_PREFIX: &str = "lio-replica-v1-";
/// Versioned prefix of every device-mapper UUID this daemon creates.
pub const UUID_PREFIX: &str = "LIOREPLICA-V1-";
/// The kernel's DM_NAME_LEN / DM_UUID_LEN, including the terminating NUL.
pub const DM_NAME_LEN: usize = 128;

/// A device-mapper name that carries our prefix and fits the kernel's limit.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct DmName(String);

impl DmName {
    /// `suffix` is appended to [`NAME_PREFIX`]; allowed characters `[A-Za-z0-9_.:+-]`.
    pub fn new(suffix: &str) -> Result<DmName> {
        Self::parse(&format!("{NAME_PREFIX}{suffix}"))
    }

    /// Accepts a full name (as listed by the kernel); it must carry our prefix.
    pub fn parse(full: &str) -> Result<DmName> {
        let suffix = full.strip_prefix(NAME_PREFIX).ok_or_else(|| {
            Error::Invalid(format!(
                "device-mapper name {full:?} lacks the prefix {NAME_PREFIX}"
            ))
        })?;
        if suffix.is_empty() || full.len() >= DM_NAME_LEN {
            return Err(Error::Invalid(format!(
                "device-mapper name {full:?} must have a suffix and be shorter than {DM_NAME_LEN} bytes"
            )));
        }
        if let Some(c) = suffix
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '+' | '-')))
        {
            return Err(Error::Invalid(format!(
                "device-mapper name {full:?} contains {c:?}"
            )));
        }
        Ok(DmName(full.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part after [`NAME_PREFIX`].
    pub fn suffix(&self) -> &str {
        &self.0[NAME_PREFIX.len()..]
    }

    /// The UUID we give this device: [`UUID_PREFIX`] + the suffix.
    pub fn uuid(&self) -> String {
        format!("{UUID_PREFIX}{}", self.suffix())
    }
}

impl std::fmt::Display for DmName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the kernel says about one device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DevInfo {
    pub name: DmName,
    pub uuid: String,
    pub major: u32,
    pub minor: u32,
    pub open_count: i32,
    pub suspended: bool,
    pub event_nr: u32,
    /// True when a table is loaded and waiting for resume.
    pub inactive_table: bool,
}

impl DevInfo {
    /// The device number, as table lines refer to the device.
    pub fn devno(&self) -> Devno {
        Devno::new(self.major, self.minor)
    }
}

/// One line of `status` output, untyped; parse `params` with [`status`] by `target_type`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StatusLine {
    pub start: u64,
    pub length: u64,
    pub target_type: String,
    pub params: String,
}

/// The device-mapper operations the engine needs. Implemented by [`kernel::KernelDm`]
/// (ioctls) and [`sim::SimDm`] (in memory, for tests and demos).
///
/// Every method refuses names without our prefix (the [`DmName`] type guarantees it).
pub trait DmBackend: Send + Sync {
    /// Create the device, load `table` and resume it. If any step fails the half-made
    /// device is removed before the error is returned.
    fn create(&self, name: &DmName, table: &[TableLine]) -> Result<DevInfo>;
    /// Load `table` as the inactive table (takes effect at the next resume).
    fn load(&self, name: &DmName, table: &[TableLine]) -> Result<()>;
    /// Drop a loaded inactive table (used to undo `load` before resume).
    fn clear(&self, name: &DmName) -> Result<()>;
    /// Suspend with flush (`noflush` = false) and wait, at most `timeout`.
    ///
    /// On [`Error::Timeout`] the device may still be suspending; the backend undoes it by
    /// itself: once the late suspend completes, any inactive table is dropped and the device
    /// is resumed on its previous live table. Further suspends of that device fail with
    /// `Timeout` until then.
    fn suspend(&self, name: &DmName, noflush: bool, timeout: Duration) -> Result<()>;
    /// Resume; swaps in the inactive table if one is loaded.
    fn resume(&self, name: &DmName) -> Result<()>;
    /// Remove the device (fails with the kernel's EBUSY while it is open).
    fn remove(&self, name: &DmName) -> Result<()>;
    /// `None` when there is no such device.
    fn info(&self, name: &DmName) -> Result<Option<DevInfo>>;
    /// All devices carrying our name prefix and UUID prefix; nothing else.
    fn list(&self) -> Result<Vec<DevInfo>>;
    /// The live table.
    fn table(&self, name: &DmName) -> Result<Vec<TableLine>>;
    /// The live status lines.
    fn status(&self, name: &DmName) -> Result<Vec<StatusLine>>;
    /// Send a target message (e.g. raid `resync`), returns the answer if any.
    fn message(&self, name: &DmName, sector: u64, msg: &str) -> Result<String>;
    /// Wait until the device's event number is greater than `event_nr` or `timeout` passes.
    /// Returns the current event number. Used to follow progress without busy polling.
    fn wait_event(&self, name: &DmName, event_nr: u32, timeout: Duration) -> Result<u32>;
    /// A path to the device node named after the device, so that it names the same device
    /// after a reboot (`/dev/mapper/NAME`, or a node of our own on hosts without udev), for
    /// LIO's `udev_path`.
    fn device_path(&self, name: &DmName) -> Result<PathBuf>;
    /// Sectors written to one of our devices since it was created (the kernel's I/O
    /// statistics); tells whether a fractured target was written behind the bitmap's back.
    fn sectors_written(&self, name: &DmName) -> Result<u64>;
    /// The device number of any block device path (raw disks too).
    fn devno_of(&self, path: &std::path::Path) -> Result<Devno>;
    /// Size of a block device path (or of a regular file in the simulator).
    fn size_sectors(&self, path: &std::path::Path) -> Result<Sectors>;
    /// What identifies each block device across reboots ([`identity`]), in the order given
    /// (one look at the by-id links for all of them).
    fn disk_identities(&self, devnos: &[Devno]) -> Result<Vec<DiskIdentity>>;
    /// Every block device now present that matches `id`.
    fn find_disks(&self, id: &DiskIdentity) -> Result<Vec<Devno>>;
    /// Whether a disk still answers: its first 4 KiB read past the page cache, waiting at
    /// most `timeout`. Tells a failed snapshot origin or COW store, which no status reports.
    fn read_probe(&self, dev: Devno, timeout: Duration) -> Result<()>;
    /// A loop device bound to `file`, one of the daemon's own (the one already bound to it,
    /// if any). Unbound by the kernel once nothing holds it open.
    fn attach_file(&self, file: &std::path::Path) -> Result<FileDevice>;
}
