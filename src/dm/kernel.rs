//! The kernel backend: device-mapper ioctls through the `devicemapper` crate.
//!
//! # Hosts without udev
//! Nothing here needs udev. The `devicemapper` crate only starts a udev transaction (a SysV
//! semaphore cookie in the ioctl's `event_nr`, waited on after the ioctl) for remove, rename
//! and resume, and only when `/run/udev/control` exists; otherwise it passes no cookie and
//! the kernel expects nobody. Device nodes therefore may not appear under `/dev/mapper`;
//! [`KernelDm::device_path`] then makes its own node under [`NODE_DIR`], named after the
//! device (`/dev/dm-N` would name another device after a reboot).
//!
//! Where udev runs, calls carry [`DmOptions::private`]'s udev flags: udev still creates
//! `/dev/mapper/NAME` (the dm rules), but the disk and "other" rules (blkid, by-id links, LVM
//! and md auto-activation) skip our devices, so a volume group or array an initiator keeps on
//! a LUN is never activated on the target host. Such a host needs device-mapper's
//! `95-dm-notify.rules` (package `dmsetup`), or the transaction would wait forever; its
//! absence is logged at start.

use super::identity::{DiskIdentity, SysBlock};
use super::table::{format_table, TableLine, Target};
use super::{DevInfo, Devno, DmBackend, DmName, Sectors, StatusLine, NAME_PREFIX, UUID_PREFIX};
use crate::error::{Error, Result};
use devicemapper::{DevId, DeviceInfo, DmError, DmFlags, DmOptions, DmUuid, DM};
use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Where device nodes are made on hosts where neither udev nor devtmpfs made one.
pub const NODE_DIR: &str = "/run/lio-replica/dev";

/// How long [`KernelDm::device_path`] waits for udev to make `/dev/mapper/NAME`.
const DEVNODE_WAIT: Duration = Duration::from_secs(2);

const ENXIO: i32 = nix::libc::ENXIO;

/// Talks to /dev/mapper/control.
pub struct KernelDm {
    dm: DM,
    node_dir: PathBuf,
    /// Devices whose suspend timed out and is still running in its helper thread.
    late_suspends: Arc<Mutex<HashSet<String>>>,
}

impl std::fmt::Debug for KernelDm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelDm")
            .field("node_dir", &self.node_dir)
            .finish_non_exhaustive()
    }
}

fn options() -> DmOptions {
    DmOptions::private()
}

fn open_control() -> Result<DM> {
    DM::new().map_err(|e| Error::kernel("open", "/dev/mapper/control", e))
}

/// The errno of a failed ioctl.
fn errno(e: &DmError) -> Option<i32> {
    match e {
        DmError::Core(devicemapper::errors::Error::Ioctl(_, _, _, err)) => Some(**err as i32),
        _ => None,
    }
}

/// The errno text of a failed ioctl (`EBUSY: Device or resource busy`), else the error.
fn error_text(e: &DmError) -> String {
    match e {
        DmError::Core(devicemapper::errors::Error::Ioctl(_, _, _, err)) => err.to_string(),
        other => other.to_string(),
    }
}

/// `Error::Kernel` naming the operation and the device, with the errno text as detail.
fn kernel_error(op: &str, name: &DmName, e: &DmError) -> Error {
    Error::kernel(op, name.as_str(), error_text(e))
}

fn dm_name(name: &DmName) -> Result<&devicemapper::DmName> {
    devicemapper::DmName::new(name.as_str())
        .map_err(|e| Error::Invalid(format!("device-mapper name {name}: {e}")))
}

fn targets(table: &[TableLine]) -> Vec<(u64, u64, String, String)> {
    table
        .iter()
        .map(|l| {
            (
                l.start.0,
                l.length.0,
                l.target_type().to_string(),
                l.params(),
            )
        })
        .collect()
}

fn dev_info(name: &DmName, i: &DeviceInfo) -> DevInfo {
    let dev = i.device();
    DevInfo {
        name: name.clone(),
        uuid: i.uuid().map(|u| u.to_string()).unwrap_or_default(),
        major: dev.major,
        minor: dev.minor,
        open_count: i.open_count(),
        suspended: i.flags().contains(DmFlags::DM_SUSPEND),
        event_nr: i.event_nr(),
        inactive_table: i.flags().contains(DmFlags::DM_INACTIVE_PRESENT),
    }
}

/// The kernel prints raid1's `max_write_behind` in KiB although it takes sectors; give the
/// engine what it would load.
fn from_kernel_table(mut line: TableLine) -> TableLine {
    if let Target::Raid(r) = &mut line.target {
        r.max_write_behind = r.max_write_behind.map(|kib| kib.saturating_mul(2));
    }
    line
}

impl KernelDm {
    /// Opens `/dev/mapper/control`; nodes for udev-less hosts go to [`NODE_DIR`].
    pub fn new() -> Result<KernelDm> {
        Self::with_node_dir(NODE_DIR)
    }

    /// As [`KernelDm::new`], with the directory for self-made device nodes.
    pub fn with_node_dir(dir: impl Into<PathBuf>) -> Result<KernelDm> {
        let dm = open_control()?;
        if Path::new("/run/udev/control").exists() && !dm_notify_rules_present() {
            warn!(
                "udev is running but device-mapper's 95-dm-notify.rules is missing: \
                 resume and remove would wait for udev forever; install dmsetup"
            );
        }
        Ok(KernelDm {
            dm,
            node_dir: dir.into(),
            late_suspends: Arc::new(Mutex::new(HashSet::new())),
        })
    }

    fn resume_with(dm: &DM, name: &DmName) -> Result<DeviceInfo> {
        let n = dm_name(name)?;
        dm.device_suspend(&DevId::Name(n), options())
            .map_err(|e| kernel_error("resume", name, &e))
    }

    /// Body of [`DmBackend::create`], without the log line.
    fn create_device(&self, name: &DmName, table: &[TableLine]) -> Result<DevInfo> {
        let n = dm_name(name)?;
        let uuid_s = name.uuid();
        let uuid = DmUuid::new(&uuid_s)
            .map_err(|e| Error::Invalid(format!("device-mapper uuid {uuid_s}: {e}")))?;
        self.dm
            .device_create(n, Some(uuid), options())
            .map_err(|e| kernel_error("create", name, &e))?;
        let id = DevId::Name(n);
        let built = self
            .dm
            .table_load(&id, &targets(table), DmOptions::default())
            .map_err(|e| kernel_error("load", name, &e))
            .and_then(|_| Self::resume_with(&self.dm, name))
            .and_then(|_| {
                self.info(name)?
                    .ok_or_else(|| Error::kernel("create", name.as_str(), "device vanished"))
            });
        match built {
            Ok(info) => Ok(info),
            Err(cause) => match self.dm.device_remove(&id, options()) {
                Ok(_) => {
                    info!(device = %name, "removed the half-made device");
                    Err(cause)
                }
                Err(e) => Err(Error::RollbackFailed {
                    cause: Box::new(cause),
                    left: format!(
                        "device-mapper device {name} ({})",
                        kernel_error("remove", name, &e)
                    ),
                }),
            },
        }
    }

    /// Whether `path` is a block node for `devno`.
    fn node_matches(path: &Path, devno: Devno) -> bool {
        match fs::metadata(path) {
            Ok(m) => m.file_type().is_block_device() && Devno::from_dev_t(m.rdev()) == devno,
            Err(_) => false,
        }
    }

    fn make_node(&self, name: &DmName, devno: Devno) -> Result<PathBuf> {
        let dir = &self.node_dir;
        fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io("chmod", dir, e))?;
        let path = dir.join(name.as_str());
        if Self::node_matches(&path, devno) {
            return Ok(path);
        }
        // make it under a temporary name and rename it over any stale node
        let tmp = dir.join(format!(".{}.{}", name.as_str(), std::process::id()));
        let _ = fs::remove_file(&tmp);
        nix::sys::stat::mknod(
            &tmp,
            nix::sys::stat::SFlag::S_IFBLK,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            devno.dev_t(),
        )
        .map_err(|e| Error::io("mknod", &tmp, std::io::Error::from(e)))?;
        fs::rename(&tmp, &path).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            Error::io("rename", &path, e)
        })?;
        info!(device = %name, path = %path.display(), "made a device node");
        Ok(path)
    }
}

fn dm_notify_rules_present() -> bool {
    [
        "/etc/udev/rules.d",
        "/run/udev/rules.d",
        "/lib/udev/rules.d",
        "/usr/lib/udev/rules.d",
    ]
    .iter()
    .any(|d| Path::new(d).join("95-dm-notify.rules").exists())
}

/// State shared between a suspend and its helper thread.
struct SuspendCall {
    result: Option<Result<(), DmError>>,
    abandoned: bool,
}

impl DmBackend for KernelDm {
    /// Create, load, resume; on failure the half-made device is removed again.
    fn create(&self, name: &DmName, table: &[TableLine]) -> Result<DevInfo> {
        info!(device = %name, table = %format_table(table), "dm create");
        self.create_device(name, table)
    }

    fn load(&self, name: &DmName, table: &[TableLine]) -> Result<()> {
        info!(device = %name, table = %format_table(table), "dm load");
        let n = dm_name(name)?;
        self.dm
            .table_load(&DevId::Name(n), &targets(table), DmOptions::default())
            .map(|_| ())
            .map_err(|e| kernel_error("load", name, &e))
    }

    fn clear(&self, name: &DmName) -> Result<()> {
        info!(device = %name, "dm clear inactive table");
        let n = dm_name(name)?;
        self.dm
            .table_clear(&DevId::Name(n))
            .map(|_| ())
            .map_err(|e| kernel_error("clear", name, &e))
    }

    /// The ioctl blocks until in-flight I/O is done (or, with `noflush`, requeued); it runs in
    /// a helper thread and this call returns [`Error::Timeout`] if it takes longer than
    /// `timeout`. The abandoned suspend is not cancelled; when it finally completes, the
    /// thread drops any inactive table and resumes the device, so the LUN runs on with its
    /// previous live table. Until then, further suspends of the device fail with
    /// [`Error::Timeout`] at once; a `resume` issued meanwhile waits in the kernel for the
    /// suspend to finish.
    fn suspend(&self, name: &DmName, noflush: bool, timeout: Duration) -> Result<()> {
        if self.late_suspends.lock().unwrap().contains(name.as_str()) {
            return Err(Error::Timeout(format!(
                "an earlier suspend of {name} has not finished yet"
            )));
        }
        info!(device = %name, noflush, timeout_ms = timeout.as_millis() as u64, "dm suspend");
        let mut flags = DmFlags::DM_SUSPEND | DmFlags::DM_SKIP_LOCKFS;
        if noflush {
            flags |= DmFlags::DM_NOFLUSH;
        }
        let shared = Arc::new((
            Mutex::new(SuspendCall {
                result: None,
                abandoned: false,
            }),
            Condvar::new(),
        ));
        let thread_shared = Arc::clone(&shared);
        let late = Arc::clone(&self.late_suspends);
        let owned = name.clone();
        // a control handle of its own, so this handle stays usable meanwhile
        let dm = open_control()?;
        std::thread::Builder::new()
            .name(format!("dm-suspend-{}", name.suffix()))
            .spawn(move || {
                let result = match devicemapper::DmName::new(owned.as_str()) {
                    Ok(n) => dm
                        .device_suspend(&DevId::Name(n), options().set_flags(flags))
                        .map(|_| ()),
                    Err(e) => Err(e),
                };
                let (lock, cv) = &*thread_shared;
                let mut call = lock.lock().unwrap();
                if !call.abandoned {
                    call.result = Some(result);
                    cv.notify_all();
                    return;
                }
                drop(call);
                match (result, devicemapper::DmName::new(owned.as_str())) {
                    (Ok(()), Ok(n)) => {
                        let id = DevId::Name(n);
                        let cleared = dm.table_clear(&id).map(|_| ());
                        let resumed = dm.device_suspend(&id, options()).map(|_| ());
                        match resumed {
                            Ok(()) => warn!(
                                device = %owned,
                                cleared_inactive = cleared.is_ok(),
                                "a timed-out suspend completed late; resumed the device with its previous table"
                            ),
                            Err(e) => warn!(
                                device = %owned,
                                error = %kernel_error("resume", &owned, &e),
                                "a timed-out suspend completed late and the device could not be resumed"
                            ),
                        }
                    }
                    (Err(e), _) | (_, Err(e)) => warn!(
                        device = %owned,
                        error = %kernel_error("suspend", &owned, &e),
                        "a timed-out suspend failed late; the device was not suspended"
                    ),
                }
                late.lock().unwrap().remove(owned.as_str());
            })
            .map_err(|e| Error::Other(format!("cannot start the suspend of {name}: {e}")))?;

        let (lock, cv) = &*shared;
        let call = lock.lock().unwrap();
        let (mut call, _) = cv
            .wait_timeout_while(call, timeout, |c| c.result.is_none())
            .unwrap();
        match call.result.take() {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(kernel_error("suspend", name, &e)),
            None => {
                call.abandoned = true;
                self.late_suspends
                    .lock()
                    .unwrap()
                    .insert(name.as_str().to_string());
                warn!(device = %name, timeout_ms = timeout.as_millis() as u64, "dm suspend timed out");
                Err(Error::Timeout(format!(
                    "suspend of {name} did not finish within {} ms; it will be undone when it completes",
                    timeout.as_millis()
                )))
            }
        }
    }

    fn resume(&self, name: &DmName) -> Result<()> {
        info!(device = %name, "dm resume");
        Self::resume_with(&self.dm, name).map(|_| ())
    }

    fn remove(&self, name: &DmName) -> Result<()> {
        info!(device = %name, "dm remove");
        let n = dm_name(name)?;
        self.dm
            .device_remove(&DevId::Name(n), options())
            .map(|_| ())
            .map_err(|e| kernel_error("remove", name, &e))
    }

    fn info(&self, name: &DmName) -> Result<Option<DevInfo>> {
        let n = dm_name(name)?;
        match self.dm.device_info(&DevId::Name(n)) {
            Ok(i) => Ok(Some(dev_info(name, &i))),
            Err(e) if errno(&e) == Some(ENXIO) => Ok(None),
            Err(e) => Err(kernel_error("info", name, &e)),
        }
    }

    fn list(&self) -> Result<Vec<DevInfo>> {
        let all = self
            .dm
            .list_devices()
            .map_err(|e| Error::kernel("list", "devices", error_text(&e)))?;
        let mut out = Vec::new();
        for (n, _, _) in all {
            let s = n.to_string();
            if !s.starts_with(NAME_PREFIX) {
                continue;
            }
            let Ok(name) = DmName::parse(&s) else {
                continue;
            };
            // it may be removed between the list and the query
            if let Some(i) = self.info(&name)? {
                if i.uuid.starts_with(UUID_PREFIX) {
                    out.push(i);
                }
            }
        }
        Ok(out)
    }

    fn table(&self, name: &DmName) -> Result<Vec<TableLine>> {
        let n = dm_name(name)?;
        let (_, lines) = self
            .dm
            .table_status(
                &DevId::Name(n),
                DmOptions::default().set_flags(DmFlags::DM_STATUS_TABLE),
            )
            .map_err(|e| kernel_error("table", name, &e))?;
        lines
            .into_iter()
            .map(|(s, l, t, p)| {
                TableLine::from_parts(Sectors(s), Sectors(l), &t, &p).map(from_kernel_table)
            })
            .collect()
    }

    fn status(&self, name: &DmName) -> Result<Vec<StatusLine>> {
        let n = dm_name(name)?;
        let (_, lines) = self
            .dm
            .table_status(&DevId::Name(n), DmOptions::default())
            .map_err(|e| kernel_error("status", name, &e))?;
        Ok(lines
            .into_iter()
            .map(|(start, length, target_type, params)| StatusLine {
                start,
                length,
                target_type,
                params: params.trim().to_string(),
            })
            .collect())
    }

    fn message(&self, name: &DmName, sector: u64, msg: &str) -> Result<String> {
        info!(device = %name, sector, message = msg, "dm message");
        let n = dm_name(name)?;
        self.dm
            .target_msg(&DevId::Name(n), Some(sector), msg)
            .map(|(_, out)| out.unwrap_or_default())
            .map_err(|e| kernel_error("message", name, &e))
    }

    /// Polls `/dev/mapper/control` (armed with `DM_DEV_ARM_POLL`) rather than `DM_DEV_WAIT`:
    /// the wait ioctl cannot be given an event number through the `devicemapper` crate and
    /// cannot time out.
    fn wait_event(&self, name: &DmName, event_nr: u32, timeout: Duration) -> Result<u32> {
        let deadline = Instant::now() + timeout;
        // a handle of its own: the poll state belongs to the open file
        let dm = open_control()?;
        loop {
            dm.arm_poll()
                .map_err(|e| kernel_error("arm poll", name, &e))?;
            let Some(info) = self.info(name)? else {
                return Err(Error::kernel(
                    "wait",
                    name.as_str(),
                    "ENXIO: No such device or address",
                ));
            };
            let now = Instant::now();
            if info.event_nr > event_nr || now >= deadline {
                return Ok(info.event_nr);
            }
            let ms = (deadline - now).as_millis().clamp(1, i32::MAX as u128) as i32;
            let mut fds = [nix::libc::pollfd {
                fd: dm.file().as_raw_fd(),
                events: nix::libc::POLLIN,
                revents: 0,
            }];
            // SAFETY: one valid pollfd for an fd that `dm` keeps open during the call.
            let r = unsafe { nix::libc::poll(fds.as_mut_ptr(), 1, ms) };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(Error::kernel("wait", name.as_str(), e));
                }
            }
        }
    }

    /// `/dev/mapper/NAME` where udev makes it (waiting up to 2 s for it), else a node of our
    /// own, [`NODE_DIR`]`/NAME`. Never `/dev/dm-N`: LIO keeps this path as the backstore's
    /// `udev_path`, and a saved LIO configuration restored after a reboot must find this
    /// device under it, not whichever device got minor N this time.
    fn device_path(&self, name: &DmName) -> Result<PathBuf> {
        let info = self
            .info(name)?
            .ok_or_else(|| Error::NotFound(format!("device-mapper device {name}")))?;
        let mapper = Path::new("/dev/mapper").join(name.as_str());
        let until = Instant::now() + DEVNODE_WAIT;
        loop {
            if Self::node_matches(&mapper, info.devno()) {
                return Ok(mapper);
            }
            if !Path::new("/run/udev/control").exists() || Instant::now() >= until {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.make_node(name, info.devno())
    }

    fn sectors_written(&self, name: &DmName) -> Result<u64> {
        let info = self
            .info(name)?
            .ok_or_else(|| Error::NotFound(format!("device {name}")))?;
        let path = PathBuf::from(format!("/sys/dev/block/{}/stat", info.devno()));
        let text = fs::read_to_string(&path).map_err(|e| Error::io("read", &path, e))?;
        // the seventh field: sectors written (Documentation/block/stat.rst)
        text.split_whitespace()
            .nth(6)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| {
                Error::Other(format!(
                    "{}: no sectors-written field in {text:?}",
                    path.display()
                ))
            })
    }

    fn devno_of(&self, path: &Path) -> Result<Devno> {
        devno_of_path(path)
    }

    fn size_sectors(&self, path: &Path) -> Result<Sectors> {
        size_sectors_of_path(path)
    }

    fn disk_identities(&self, devnos: &[Devno]) -> Result<Vec<DiskIdentity>> {
        SysBlock::default().identities(devnos)
    }

    fn find_disks(&self, id: &DiskIdentity) -> Result<Vec<Devno>> {
        SysBlock::default().find(id)
    }

    fn read_probe(&self, dev: Devno, timeout: Duration) -> Result<()> {
        super::probe::read_first_block(dev, timeout)
    }

    fn attach_file(&self, file: &Path) -> Result<super::FileDevice> {
        let d = super::loopdev::attach(file)?;
        if d.hold.is_some() {
            info!(device = %d.devno, file = %file.display(), "bound a loop device");
        }
        Ok(d)
    }
}

nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);

/// The device number of a block device path.
pub(crate) fn devno_of_path(path: &Path) -> Result<Devno> {
    let m = fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound(format!("device {}", path.display())),
        _ => Error::io("stat", path, e),
    })?;
    if !m.file_type().is_block_device() {
        return Err(Error::Invalid(format!(
            "{} is not a block device",
            path.display()
        )));
    }
    Ok(Devno::from_dev_t(m.rdev()))
}

/// Size of a block device (`BLKGETSIZE64`) or a regular file.
pub(crate) fn size_sectors_of_path(path: &Path) -> Result<Sectors> {
    let f = fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound(format!("device {}", path.display())),
        _ => Error::io("open", path, e),
    })?;
    let m = f.metadata().map_err(|e| Error::io("stat", path, e))?;
    let bytes = if m.file_type().is_block_device() {
        let mut size: u64 = 0;
        // SAFETY: BLKGETSIZE64 writes one u64 to the pointer; the fd is open.
        unsafe { blkgetsize64(f.as_raw_fd(), &mut size) }
            .map_err(|e| Error::io("BLKGETSIZE64", path, std::io::Error::from(e)))?;
        size
    } else if m.is_file() {
        m.len()
    } else {
        return Err(Error::Invalid(format!(
            "{} is neither a block device nor a regular file",
            path.display()
        )));
    };
    Ok(Sectors::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raid_write_behind_is_read_back_in_sectors() {
        let l = TableLine::parse(
            "0 1024 raid raid1 5 0 write_mostly 1 max_write_behind 4096 2 253:5 253:1 253:6 253:2",
        )
        .unwrap();
        let Target::Raid(r) = from_kernel_table(l).target else {
            panic!()
        };
        assert_eq!(r.max_write_behind, Some(8192));
    }

    #[test]
    fn sizes_and_devnos_of_paths() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("disk.img");
        fs::write(&f, vec![0u8; 4096]).unwrap();
        assert_eq!(size_sectors_of_path(&f).unwrap(), Sectors(8));
        assert!(matches!(devno_of_path(&f), Err(Error::Invalid(_))));
        assert!(matches!(
            devno_of_path(&dir.path().join("missing")),
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            size_sectors_of_path(&dir.path().join("missing")),
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            size_sectors_of_path(dir.path()),
            Err(Error::Invalid(_))
        ));
        // a block device, where the machine has one we may read
        for dev in ["/dev/loop0", "/dev/vda", "/dev/sda", "/dev/nvme0n1"] {
            if let Ok(m) = fs::metadata(dev) {
                if m.file_type().is_block_device() {
                    let d = devno_of_path(Path::new(dev)).unwrap();
                    assert!(d.to_string().contains(':'), "{d}");
                    break;
                }
            }
        }
    }

    #[test]
    fn errors_name_op_and_device() {
        let e = DmError::Dm(devicemapper::ErrorEnum::Invalid, "bad".into());
        assert_eq!(errno(&e), None);
        let name = DmName::new("t").unwrap();
        match kernel_error("load", &name, &e) {
            Error::Kernel { op, object, detail } => {
                assert_eq!(op, "load");
                assert_eq!(object, name.as_str());
                assert!(detail.contains("bad"), "{detail}");
            }
            other => panic!("{other}"),
        }
    }
}
