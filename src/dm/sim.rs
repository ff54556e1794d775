//! A simulated device-mapper for tests and demos.
//!
//! It keeps devices and tables in memory and behaves like the kernel where the engine can
//! tell the difference:
//! - **raw disks** are registered with [`SimDm::add_disk`] (major 8, minors 0, 16, 32, ...);
//!   any other path falls back to the real file system: a regular file is a disk of the
//!   whole sectors of its length with a made-up device number (major 240, minor from the
//!   inode), so tests can use temporary files as disks;
//! - **devices** get major 253 and minors from 0; their path is `DIR/dm-N`, a symlink to the
//!   regular file under the first data device of the live table, or else a sparse stand-in
//!   file of the device's size, so writes through the path (a COW header being zeroed, a fake
//!   configfs `udev_path`) land somewhere real;
//! - **tables** are checked like the kernel checks them: contiguous from 0, every referenced
//!   device exists (`ENOENT` for a path, `ENXIO` for a number) and is large enough (`EINVAL`),
//!   is not held exclusively by someone else (`EBUSY`, see [`SimDm::set_held_by_other`]), and
//!   mirror/raid/snapshot arguments are sane; `table` reports devices as `major:minor`;
//! - **state**: load fills the inactive slot, resume swaps it in, clear drops it, a device
//!   referenced by another table (or held) cannot be removed (`EBUSY`); status works while
//!   suspended;
//! - **progress**: mirrors and raid1 start out of sync (unless `nosync`) and every `status` or
//!   `wait_event` call advances them by the [`SyncStep`] (not while suspended); completing a
//!   sync raises the device's event number, as the kernel does;
//! - **failures** can be injected per operation ([`SimDm::fail_next`]), at the n-th
//!   mutating call ([`SimDm::fail_at_call`]), as a hanging suspend
//!   ([`SimDm::set_suspend_hangs`]), a failed leg ([`SimDm::set_leg_failed`]) or a full or
//!   broken snapshot ([`SimDm::set_snapshot_usage`], [`SimDm::set_snapshot_status`]);
//! - every mutating call is logged ([`SimDm::calls`]).
//!
//! Kernel refusals are [`Error::Kernel`] with the errno text as detail, like the kernel
//! backend's.

use super::kernel::{devno_of_path, size_sectors_of_path};
use super::status::{MirrorStatus, RaidStatus, SnapshotStatus};
use super::table::{format_table, table_length, TableLine, Target};
use super::{DevInfo, Devno, DiskIdentity, DmBackend, DmName, Sectors, StatusLine};
use crate::error::{Error, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// Major number of simulated device-mapper devices.
pub const SIM_DM_MAJOR: u32 = 253;
/// Major number of disks registered with [`SimDm::add_disk`].
pub const SIM_DISK_MAJOR: u32 = 8;
/// Major number of files bound as loop devices ([`DmBackend::attach_file`]).
pub const SIM_LOOP_MAJOR: u32 = 7;
/// Major number given to regular files used as disks.
pub const SIM_FILE_MAJOR: u32 = 240;

const ENOENT: &str = "ENOENT: No such file or directory";
const ENXIO: &str = "ENXIO: No such device or address";
const EINVAL: &str = "EINVAL: Invalid argument";
const EBUSY: &str = "EBUSY: Device or resource busy";

/// Most calls the log keeps (tests read a handful; a sim daemon would otherwise grow).
const CALL_LOG_MAX: usize = 100_000;

/// The operations failures can be injected into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SimOp {
    Create,
    Load,
    Clear,
    Suspend,
    Resume,
    Remove,
    Message,
    Status,
    Wait,
}

impl SimOp {
    fn op(self) -> &'static str {
        match self {
            SimOp::Create => "create",
            SimOp::Load => "load",
            SimOp::Clear => "clear",
            SimOp::Suspend => "suspend",
            SimOp::Resume => "resume",
            SimOp::Remove => "remove",
            SimOp::Message => "message",
            SimOp::Status => "status",
            SimOp::Wait => "wait",
        }
    }
}

/// One mutating call, as the simulator saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimCall {
    pub op: SimOp,
    /// The device name.
    pub name: String,
    /// The table as given (lines joined by `\n`) for create and load; the message for
    /// message; `flush` or `noflush` for suspend; empty otherwise.
    pub detail: String,
    /// False when the call failed (injected or refused).
    pub ok: bool,
}

/// How far each `status`/`wait_event` call moves a sync along.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncStep {
    /// A fixed amount: regions for a mirror, sectors for raid1.
    Units(u64),
    /// A percentage of the total, at least one unit (0 = never advances).
    Percent(u32),
}

impl Default for SyncStep {
    fn default() -> Self {
        SyncStep::Percent(25)
    }
}

fn parse_devno(s: &str) -> Option<Devno> {
    s.parse().ok()
}

fn kerr(op: &str, name: &str, detail: impl Into<String>) -> Error {
    Error::kernel(op, name, detail.into())
}

#[derive(Debug, Clone)]
struct Disk {
    devno: Devno,
    sectors: Sectors,
}

#[derive(Debug)]
struct SyncProg {
    raid: bool,
    in_sync: u64,
    total: u64,
    /// raid sync action (`resync`, `recover`, `check`, `repair`, `frozen`, `idle`); for a
    /// mirror `resync` until in sync, then `idle`.
    action: String,
    /// The action a `frozen` raid returns to.
    frozen_from: Option<String>,
    failed: Vec<bool>,
    /// raid devices being rebuilt (`recover`).
    recovering: Vec<bool>,
    /// raid data device slots given as `-`.
    missing: Vec<bool>,
}

impl SyncProg {
    fn running(&self) -> bool {
        matches!(
            self.action.as_str(),
            "resync" | "recover" | "check" | "repair"
        )
    }
}

#[derive(Debug)]
struct SnapProg {
    data: u64,
    chunk: u64,
    cow_total: u64,
    forced: Option<SnapshotStatus>,
    /// `snapshot-merge`: the data sectors there were to merge back when it started.
    merge_from: Option<u64>,
}

impl SnapProg {
    /// (allocated, metadata) sectors as the persistent store counts them: a header chunk,
    /// one metadata chunk per `chunk * 32` exceptions, and the area being filled.
    fn usage(&self) -> (u64, u64) {
        let c = self.chunk.max(1);
        let data_chunks = self.data.div_ceil(c);
        let per_area = Sectors(c).bytes() / 16;
        let meta_chunks = 1 + data_chunks / per_area.max(1) + 1;
        (data_chunks * c + meta_chunks * c, meta_chunks * c)
    }

    fn status(&self) -> SnapshotStatus {
        if let Some(s) = &self.forced {
            return s.clone();
        }
        let (used, metadata) = self.usage();
        SnapshotStatus::Active {
            used,
            total: self.cow_total,
            metadata,
        }
    }
}

#[derive(Debug)]
enum Prog {
    None,
    Sync(SyncProg),
    Snap(SnapProg),
}

#[derive(Debug)]
struct Live {
    /// The line with devices as `major:minor`, as the kernel reports it.
    shown: TableLine,
    prog: Prog,
}

#[derive(Debug)]
struct Table {
    lines: Vec<TableLine>,
    deps: Vec<Devno>,
    /// Sizes of the referenced devices when loaded, by reference.
    sizes: BTreeMap<String, u64>,
    shown: Vec<TableLine>,
}

#[derive(Debug)]
struct Device {
    name: DmName,
    minor: u32,
    live: Vec<Live>,
    live_deps: Vec<Devno>,
    inactive: Option<Table>,
    suspended: bool,
    event_nr: u32,
}

impl Device {
    fn bump(&mut self) {
        self.event_nr = self.event_nr.wrapping_add(1);
    }
}

struct Injected {
    op: SimOp,
    name_contains: Option<String>,
    error: Error,
}

#[derive(Default)]
struct State {
    disks: BTreeMap<PathBuf, Disk>,
    next_disk: u32,
    /// Regular files used as disks: (st_dev, st_ino) -> (minor, path).
    files: BTreeMap<(u64, u64), (u32, PathBuf)>,
    devices: BTreeMap<String, Device>,
    next_minor: u32,
    step: SyncStep,
    injected: Vec<Injected>,
    fail_at: Option<u64>,
    mutating: u64,
    suspend_hangs: bool,
    held: BTreeSet<Devno>,
    calls: Vec<SimCall>,
    /// What each persistent COW store (`major:minor`) holds once no device shows it.
    cow_data: BTreeMap<String, u64>,
    /// Sectors written to a device, as a test says ([`SimDm::add_sectors_written`]).
    written: BTreeMap<String, u64>,
    /// Disks whose reads fail ([`SimDm::set_disk_failed`]).
    failed_disks: BTreeSet<Devno>,
    /// Files bound with `attach_file`: they identify as loop devices do.
    loop_files: BTreeSet<PathBuf>,
}

/// What a device reference resolves to.
struct Resolved {
    devno: Devno,
    sectors: Sectors,
}

/// In-memory devices and tables.
pub struct SimDm {
    dir: PathBuf,
    own_dir: bool,
    state: Mutex<State>,
}

impl std::fmt::Debug for SimDm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimDm")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Default for SimDm {
    fn default() -> Self {
        SimDm::new()
    }
}

impl Drop for SimDm {
    fn drop(&mut self) {
        if self.own_dir {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

static SIM_DIRS: AtomicU64 = AtomicU64::new(0);

impl SimDm {
    /// A simulator whose device paths live in a fresh temporary directory, removed on drop.
    pub fn new() -> SimDm {
        let dir = std::env::temp_dir().join(format!(
            "lio-replica-sim-{}-{}",
            std::process::id(),
            SIM_DIRS.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::create_dir_all(&dir);
        SimDm {
            dir,
            own_dir: true,
            state: Mutex::new(State::default()),
        }
    }

    /// A simulator whose device paths are `dir/dm-N` (the directory is created, and kept).
    pub fn with_dir(dir: impl Into<PathBuf>) -> SimDm {
        let dir = dir.into();
        let _ = fs::create_dir_all(&dir);
        SimDm {
            dir,
            own_dir: false,
            state: Mutex::new(State::default()),
        }
    }

    /// The directory holding the device paths.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    // --- test hooks ----------------------------------------------------------------------

    /// Register a raw disk at `path` (which need not exist) of `sectors` sectors; returns its
    /// device number (8:0, 8:16, ...). Registering a path again changes its size.
    pub fn add_disk(&self, path: impl AsRef<Path>, sectors: Sectors) -> Devno {
        let mut s = self.lock();
        let path = path.as_ref().to_path_buf();
        if let Some(d) = s.disks.get_mut(&path) {
            d.sectors = sectors;
            return d.devno;
        }
        let devno = Devno::new(SIM_DISK_MAJOR, 16 * s.next_disk);
        s.next_disk += 1;
        s.disks.insert(path, Disk { devno, sectors });
        devno
    }

    /// How far each `status`/`wait_event` call moves a sync along.
    pub fn set_sync_step(&self, step: SyncStep) {
        self.lock().step = step;
    }

    /// Complete every running sync of `name` at once (raising its event).
    pub fn finish_sync(&self, name: &DmName) -> Result<()> {
        let mut s = self.lock();
        let dev = s.sim_device(name)?;
        advance(dev, SyncStep::Percent(100), true);
        Ok(())
    }

    /// The next `op` on a device whose name contains `name_contains` (any device if `None`)
    /// fails with `error`. Injections are used once, first registered first. `create` is
    /// one operation ([`SimOp::Create`]): it fails as a whole and leaves nothing behind.
    pub fn fail_next(&self, op: SimOp, name_contains: Option<&str>, error: Error) {
        self.lock().injected.push(Injected {
            op,
            name_contains: name_contains.map(str::to_string),
            error,
        });
    }

    /// The `n`-th mutating call from now (counting from 1) fails with an `EIO` kernel
    /// error; mutating calls are create, load, clear, suspend, resume, remove and message.
    /// `0` cancels.
    pub fn fail_at_call(&self, n: u64) {
        let mut s = self.lock();
        s.fail_at = (n > 0).then(|| s.mutating + n);
    }

    /// Every device with its suspended flag and live table, one line each, sorted: for
    /// comparing the simulated kernel's state before and after an operation.
    pub fn listing(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for d in self.list()? {
            let t = self.table(&d.name)?;
            out.push(format!("{} {} {:?}", d.name, d.suspended, t));
        }
        out.sort();
        Ok(out)
    }

    /// How many mutating calls were made so far (failed ones included).
    pub fn mutating_call_count(&self) -> u64 {
        self.lock().mutating
    }

    /// While set, `suspend` does not finish in time: it returns [`Error::Timeout`] and, like
    /// the kernel backend once the late suspend completes, leaves the device running on its
    /// live table with the inactive table dropped.
    pub fn set_suspend_hangs(&self, hangs: bool) {
        self.lock().suspend_hangs = hangs;
    }

    /// Make reads of a disk (any block device number) fail, or answer again.
    pub fn set_disk_failed(&self, dev: Devno, failed: bool) {
        let mut s = self.lock();
        if failed {
            s.failed_disks.insert(dev);
        } else {
            s.failed_disks.remove(&dev);
        }
    }

    /// Mark leg `leg` of the first mirror/raid1 line of `name` dead (`D`) and raise an event.
    pub fn set_leg_failed(&self, name: &DmName, leg: usize) -> Result<()> {
        let mut s = self.lock();
        let dev = s.sim_device(name)?;
        let p = dev
            .live
            .iter_mut()
            .find_map(|l| match &mut l.prog {
                Prog::Sync(p) => Some(p),
                _ => None,
            })
            .ok_or_else(|| Error::Invalid(format!("sim device {name} has no mirror or raid")))?;
        let f = p
            .failed
            .get_mut(leg)
            .ok_or_else(|| Error::Invalid(format!("sim device {name} has no leg {leg}")))?;
        *f = true;
        dev.bump();
        Ok(())
    }

    /// Set how many data sectors the first snapshot line of `name` holds in its COW store.
    /// Metadata is added as the persistent store does; when data and metadata no longer fit
    /// the store, the snapshot becomes `Invalid` (an event is raised), as on the kernel.
    pub fn set_snapshot_usage(&self, name: &DmName, data_sectors: u64) -> Result<()> {
        let mut s = self.lock();
        let dev = s.sim_device(name)?;
        let p = first_snap(dev)
            .ok_or_else(|| Error::Invalid(format!("sim device {name} has no snapshot")))?;
        p.data = data_sectors;
        let overflow = p.forced.is_none() && p.usage().0 > p.cow_total;
        if overflow {
            p.forced = Some(SnapshotStatus::Invalid);
            dev.bump();
        }
        Ok(())
    }

    /// Force what the first snapshot line of `name` reports (raises an event unless
    /// `Active`).
    pub fn set_snapshot_status(&self, name: &DmName, status: SnapshotStatus) -> Result<()> {
        let mut s = self.lock();
        let dev = s.sim_device(name)?;
        let p = first_snap(dev)
            .ok_or_else(|| Error::Invalid(format!("sim device {name} has no snapshot")))?;
        let bump = !status.is_valid();
        p.forced = Some(status);
        if bump {
            dev.bump();
        }
        Ok(())
    }

    /// Mark the device at `path` (a disk, a file or a sim device path) as opened exclusively
    /// by someone else, as LIO holds its backing devices: tables referring to it fail with
    /// `EBUSY`, and a held sim device counts as open.
    pub fn set_held_by_other(&self, path: &Path, held: bool) -> Result<()> {
        let mut s = self.lock();
        let r = s
            .resolve(&path.to_string_lossy(), &self.dir)
            .map_err(|_| Error::NotFound(format!("device {}", path.display())))?;
        if held {
            s.held.insert(r.devno);
        } else {
            s.held.remove(&r.devno);
        }
        Ok(())
    }

    /// Count `sectors` more written to the device `name` (the simulator does no I/O).
    pub fn add_sectors_written(&self, name: &DmName, sectors: u64) {
        *self.lock().written.entry(name.to_string()).or_default() += sectors;
    }

    /// Every mutating call so far, in order.
    pub fn calls(&self) -> Vec<SimCall> {
        self.lock().calls.clone()
    }

    /// Forget the call log.
    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    // --- internals -------------------------------------------------------------------------

    /// Counts a mutating call, applies injected failures and logs the call with the outcome
    /// of `body`.
    fn mutate<T>(
        &self,
        op: SimOp,
        name: &DmName,
        detail: String,
        body: impl FnOnce(&mut State) -> Result<T>,
    ) -> Result<T> {
        let mut s = self.lock();
        s.mutating += 1;
        let n = s.mutating;
        let result = if s.fail_at == Some(n) {
            s.fail_at = None;
            Err(kerr(
                op.op(),
                name.as_str(),
                format!("EIO: Input/output error (injected at call {n})"),
            ))
        } else if let Some(e) = s.take_injected(op, name.as_str()) {
            Err(e)
        } else {
            body(&mut s)
        };
        if s.calls.len() >= CALL_LOG_MAX {
            // a long-running `serve --dm sim` keeps only the newest calls
            s.calls.drain(..CALL_LOG_MAX / 2);
        }
        s.calls.push(SimCall {
            op,
            name: name.as_str().to_string(),
            detail,
            ok: result.is_ok(),
        });
        result
    }

    fn node_path(&self, minor: u32) -> PathBuf {
        self.dir.join(format!("dm-{minor}"))
    }

    /// Make `DIR/dm-N` point at the regular file under the device, or a stand-in file.
    fn refresh_node(&self, s: &State, name: &str) {
        let Some(dev) = s.devices.get(name) else {
            return;
        };
        let path = self.node_path(dev.minor);
        let backing = s.backing_file(Devno::new(SIM_DM_MAJOR, dev.minor), 0);
        let current = fs::symlink_metadata(&path).ok();
        match backing {
            Some(file) => {
                if fs::read_link(&path).ok().as_deref() == Some(file.as_path()) {
                    return;
                }
                let _ = fs::remove_file(&path);
                let _ = std::os::unix::fs::symlink(&file, &path);
            }
            None => {
                if current.as_ref().is_some_and(|m| m.file_type().is_symlink()) {
                    let _ = fs::remove_file(&path);
                }
                let bytes =
                    table_length(&dev.live.iter().map(|l| l.shown.clone()).collect::<Vec<_>>())
                        .bytes();
                if let Ok(f) = fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
                {
                    let _ = f.set_len(bytes);
                }
            }
        }
    }

    fn info_of(s: &State, dev: &Device) -> DevInfo {
        DevInfo {
            name: dev.name.clone(),
            uuid: dev.name.uuid(),
            major: SIM_DM_MAJOR,
            minor: dev.minor,
            open_count: s.open_count(dev.minor),
            suspended: dev.suspended,
            event_nr: dev.event_nr,
            inactive_table: dev.inactive.is_some(),
        }
    }
}

/// The data sectors the persistent COW stores of these lines hold, by store (`major:minor`):
/// what a store keeps when its snapshot or merge device goes away.
fn cow_usage(lives: &[Live]) -> Vec<(String, u64)> {
    lives
        .iter()
        .filter_map(|l| match (&l.shown.target, &l.prog) {
            (Target::Snapshot(p) | Target::SnapshotMerge(p), Prog::Snap(sp))
                if p.persistent && sp.forced.is_none() =>
            {
                Some((p.cow.clone(), sp.data))
            }
            _ => None,
        })
        .collect()
}

fn first_snap(dev: &mut Device) -> Option<&mut SnapProg> {
    dev.live.iter_mut().find_map(|l| match &mut l.prog {
        Prog::Snap(p) => Some(p),
        _ => None,
    })
}

fn step_units(step: SyncStep, total: u64) -> u64 {
    match step {
        SyncStep::Units(n) => n,
        SyncStep::Percent(0) => 0,
        SyncStep::Percent(p) => (u128::from(total) * u128::from(p))
            .div_ceil(100)
            .max(1)
            .min(u128::from(u64::MAX)) as u64,
    }
}

/// Move every running sync of `dev` by one step; raise an event when one completes.
fn advance(dev: &mut Device, step: SyncStep, even_if_suspended: bool) {
    if dev.suspended && !even_if_suspended {
        return;
    }
    let mut completed = false;
    for l in &mut dev.live {
        if let Prog::Snap(p) = &mut l.prog {
            // a merge copies its chunks back onto the origin until only metadata is left
            if let Some(from) = p.merge_from.filter(|_| p.data > 0 && p.forced.is_none()) {
                p.data = p.data.saturating_sub(step_units(step, from));
                completed |= p.data == 0;
            }
            continue;
        }
        let Prog::Sync(p) = &mut l.prog else {
            continue;
        };
        if !p.running() {
            continue;
        }
        p.in_sync = p
            .in_sync
            .saturating_add(step_units(step, p.total))
            .min(p.total);
        if p.in_sync >= p.total {
            p.action = "idle".into();
            p.recovering.iter_mut().for_each(|r| *r = false);
            completed = true;
        }
    }
    if completed {
        dev.bump();
    }
}

fn init_prog(line: &TableLine, sizes: &BTreeMap<String, u64>) -> Prog {
    match &line.target {
        Target::Mirror(m) => {
            let total = line.length.0.div_ceil(m.region_size.max(1));
            let n = m.legs.len();
            Prog::Sync(SyncProg {
                raid: false,
                in_sync: if m.nosync { total } else { 0 },
                total,
                action: if m.nosync { "idle" } else { "resync" }.into(),
                frozen_from: None,
                failed: vec![false; n],
                recovering: vec![false; n],
                missing: vec![false; n],
            })
        }
        Target::Raid(r) => {
            let n = r.devices.len();
            let total = line.length.0;
            let missing: Vec<bool> = r.devices.iter().map(|d| d.data == "-").collect();
            let (action, in_sync, recovering) = if r.nosync {
                ("idle", total, vec![false; n])
            } else if !r.rebuild.is_empty() {
                let rec = (0..n).map(|i| r.rebuild.contains(&i)).collect();
                ("recover", 0, rec)
            } else {
                ("resync", 0, vec![true; n])
            };
            Prog::Sync(SyncProg {
                raid: true,
                in_sync,
                total,
                action: action.into(),
                frozen_from: None,
                failed: vec![false; n],
                recovering,
                missing,
            })
        }
        Target::Snapshot(p) => Prog::Snap(SnapProg {
            data: 0,
            chunk: p.chunk_size,
            cow_total: sizes.get(&p.cow).copied().unwrap_or(0),
            forced: None,
            merge_from: None,
        }),
        // the data to merge is filled in by `activate` (handed over, or read from the store)
        Target::SnapshotMerge(p) => Prog::Snap(SnapProg {
            data: 0,
            chunk: p.chunk_size,
            cow_total: sizes.get(&p.cow).copied().unwrap_or(0),
            forced: None,
            merge_from: Some(0),
        }),
        _ => Prog::None,
    }
}

/// A suspended raid1 reports its resync frozen and its sync ratio as 0, as the kernel's does
/// (md stops its sync thread at suspend).
fn status_params(l: &Live, suspended: bool) -> String {
    match (&l.shown.target, &l.prog) {
        (Target::Mirror(m), Prog::Sync(p)) => MirrorStatus {
            devices: m.legs.iter().map(|l| l.device.clone()).collect(),
            in_sync: p.in_sync,
            total: p.total,
            health: p
                .failed
                .iter()
                .map(|f| if *f { 'D' } else { 'A' })
                .collect(),
            log: vec!["core".into()],
        }
        .to_string(),
        (Target::Raid(_), Prog::Sync(p)) => {
            let health = (0..p.failed.len())
                .map(|i| {
                    if p.missing[i] {
                        '-'
                    } else if p.failed[i] {
                        'D'
                    } else if (p.action == "resync"
                        || (p.action == "frozen" && p.frozen_from.as_deref() == Some("resync")))
                        || p.recovering[i]
                    {
                        'a'
                    } else {
                        'A'
                    }
                })
                .collect();
            RaidStatus {
                raid_type: "raid1".into(),
                health,
                in_sync: if suspended { 0 } else { p.in_sync },
                total: p.total,
                sync_action: if suspended {
                    "frozen".into()
                } else {
                    p.action.clone()
                },
                mismatch: 0,
            }
            .to_string()
        }
        (Target::Snapshot(_) | Target::SnapshotMerge(_), Prog::Snap(p)) => p.status().to_string(),
        _ => String::new(),
    }
}

impl State {
    fn take_injected(&mut self, op: SimOp, name: &str) -> Option<Error> {
        let i = self.injected.iter().position(|j| {
            j.op == op
                && j.name_contains
                    .as_deref()
                    .is_none_or(|frag| name.contains(frag))
        })?;
        Some(self.injected.remove(i).error)
    }

    fn device_by_minor(&self, minor: u32) -> Option<&Device> {
        self.devices.values().find(|d| d.minor == minor)
    }

    fn open_count(&self, minor: u32) -> i32 {
        let me = Devno::new(SIM_DM_MAJOR, minor);
        let refs: usize = self
            .devices
            .values()
            .map(|d| {
                usize::from(d.live_deps.contains(&me))
                    + usize::from(d.inactive.as_ref().is_some_and(|t| t.deps.contains(&me)))
            })
            .sum();
        (refs + usize::from(self.held.contains(&me))) as i32
    }

    /// The sim device a path names: `DIR/dm-N`, `/dev/dm-N` or `/dev/mapper/NAME`.
    fn device_by_path(&self, path: &Path, dir: &Path) -> Option<&Device> {
        let file = path.file_name()?.to_str()?;
        let parent = path.parent()?;
        if parent == Path::new("/dev/mapper") {
            return self.devices.get(file);
        }
        if parent == dir || parent == Path::new("/dev") {
            let minor: u32 = file.strip_prefix("dm-")?.parse().ok()?;
            return self.device_by_minor(minor);
        }
        None
    }

    fn size_of_device(dev: &Device) -> Sectors {
        dev.live
            .iter()
            .map(|l| l.shown.start + l.shown.length)
            .max()
            .unwrap_or_default()
    }

    /// A regular file used as a disk gets a stable made-up number.
    fn file_devno(&mut self, path: &Path, m: &fs::Metadata) -> Devno {
        let key = (m.dev(), m.ino());
        if let Some((minor, _)) = self.files.get(&key) {
            return Devno::new(SIM_FILE_MAJOR, *minor);
        }
        let mut minor = (m.ino() & 0xf_ffff) as u32;
        while self.files.values().any(|(mi, _)| *mi == minor) {
            minor = (minor + 1) & 0xf_ffff;
        }
        self.files.insert(key, (minor, path.to_path_buf()));
        Devno::new(SIM_FILE_MAJOR, minor)
    }

    /// Resolve a table's device reference (a path or `major:minor`); the error is the
    /// kernel's errno text.
    fn resolve(&mut self, dev: &str, dir: &Path) -> std::result::Result<Resolved, String> {
        if let Some(devno) = parse_devno(dev) {
            return match devno.major {
                SIM_DM_MAJOR => self
                    .device_by_minor(devno.minor)
                    .map(|d| Resolved {
                        devno,
                        sectors: Self::size_of_device(d),
                    })
                    .ok_or_else(|| format!("{ENXIO} (no device {dev})")),
                SIM_FILE_MAJOR => {
                    let path = self
                        .files
                        .values()
                        .find(|(mi, _)| *mi == devno.minor)
                        .map(|(_, p)| p.clone())
                        .ok_or_else(|| format!("{ENXIO} (no device {dev})"))?;
                    let len = fs::metadata(&path)
                        .map_err(|e| format!("{ENXIO} ({}: {e})", path.display()))?
                        .len();
                    Ok(Resolved {
                        devno,
                        sectors: Sectors::from_bytes(len),
                    })
                }
                _ => self
                    .disks
                    .values()
                    .find(|d| d.devno == devno)
                    .map(|d| Resolved {
                        devno,
                        sectors: d.sectors,
                    })
                    .ok_or_else(|| format!("{ENXIO} (no device {dev})")),
            };
        }
        let path = Path::new(dev);
        if let Some(d) = self.disks.get(path) {
            return Ok(Resolved {
                devno: d.devno,
                sectors: d.sectors,
            });
        }
        if let Some(d) = self.device_by_path(path, dir) {
            return Ok(Resolved {
                devno: Devno::new(SIM_DM_MAJOR, d.minor),
                sectors: Self::size_of_device(d),
            });
        }
        let m = fs::metadata(path).map_err(|e| format!("{ENOENT} ({dev}: {e})"))?;
        if m.is_file() {
            let devno = self.file_devno(path, &m);
            return Ok(Resolved {
                devno,
                sectors: Sectors::from_bytes(m.len()),
            });
        }
        if m.file_type().is_block_device() {
            let devno = devno_of_path(path).map_err(|_| format!("{ENXIO} ({dev})"))?;
            let sectors = size_sectors_of_path(path).map_err(|e| format!("{ENXIO} ({e})"))?;
            return Ok(Resolved { devno, sectors });
        }
        Err(format!("ENOTBLK: Block device required ({dev})"))
    }

    /// The regular file under a device (following sim devices through their first data
    /// device), if any.
    fn backing_file(&self, devno: Devno, depth: u32) -> Option<PathBuf> {
        if depth > 16 {
            return None;
        }
        match devno.major {
            SIM_DM_MAJOR => {
                let dev = self.device_by_minor(devno.minor)?;
                let first = dev.live.first()?;
                let data = match &first.shown.target {
                    Target::Linear(p) => p.device.as_str(),
                    Target::Mirror(p) => p.legs.first()?.device.as_str(),
                    Target::Raid(p) => p.devices.iter().find(|d| d.data != "-")?.data.as_str(),
                    Target::SnapshotOrigin(p) => p.device.as_str(),
                    Target::Snapshot(p) | Target::SnapshotMerge(p) => p.origin.as_str(),
                    _ => return None,
                };
                self.backing_file(parse_devno(data)?, depth + 1)
            }
            SIM_FILE_MAJOR => self
                .files
                .values()
                .find(|(mi, _)| *mi == devno.minor)
                .map(|(_, p)| p.clone()),
            _ => self
                .disks
                .iter()
                .find(|(_, d)| d.devno == devno)
                .map(|(p, _)| p.clone())
                .filter(|p| p.is_file()),
        }
    }

    /// Check a table as the kernel would and resolve its devices.
    fn check_table(
        &mut self,
        lines: &[TableLine],
        own_minor: Option<u32>,
        dir: &Path,
    ) -> std::result::Result<Table, String> {
        if lines.is_empty() {
            return Err(format!("{EINVAL} (no targets)"));
        }
        let mut deps = Vec::new();
        let mut sizes = BTreeMap::new();
        let mut next = Sectors(0);
        for l in lines {
            if l.start != next {
                return Err(format!("{EINVAL} (gap in table at sector {next})"));
            }
            if l.length == Sectors(0) {
                return Err(format!("{EINVAL} (zero-length target)"));
            }
            next = l.start + l.length;
            let len = l.length;
            let mut need =
                |s: &mut State, dev: &str, sectors: Sectors| -> std::result::Result<(), String> {
                    let r = s.resolve(dev, dir)?;
                    if own_minor.is_some_and(|m| r.devno == Devno::new(SIM_DM_MAJOR, m)) {
                        return Err(format!("{EINVAL} ({dev} is the device itself)"));
                    }
                    if s.held.contains(&r.devno) {
                        return Err(format!("{EBUSY} ({dev} is opened exclusively elsewhere)"));
                    }
                    if r.sectors < sectors {
                        return Err(format!(
                            "{EINVAL} (device {} too small for target: {} < {sectors} sectors)",
                            r.devno, r.sectors
                        ));
                    }
                    deps.push(r.devno);
                    sizes.insert(dev.to_string(), r.sectors.0);
                    Ok(())
                };
            match &l.target {
                Target::Linear(p) => need(self, &p.device, Sectors(p.offset) + len)?,
                Target::Mirror(p) => {
                    if p.legs.len() < 2 {
                        return Err(format!("{EINVAL} (invalid number of mirrors)"));
                    }
                    let r = p.region_size;
                    if r < 2 || !r.is_power_of_two() || r > len.0 {
                        return Err(format!("{EINVAL} (invalid region size {r})"));
                    }
                    for leg in &p.legs {
                        need(self, &leg.device, Sectors(leg.offset) + len)?;
                    }
                }
                Target::Raid(p) => {
                    let n = p.devices.len();
                    if n < 2 {
                        return Err(format!("{EINVAL} (raid1 needs at least 2 devices)"));
                    }
                    if p.write_mostly.len() >= n {
                        return Err(format!(
                            "{EINVAL} (can't set all raid1 devices to write_mostly)"
                        ));
                    }
                    if let Some(i) = p.write_mostly.iter().chain(&p.rebuild).find(|i| **i >= n) {
                        return Err(format!("{EINVAL} (invalid device index {i})"));
                    }
                    if p.nosync && !p.rebuild.is_empty() {
                        return Err(format!(
                            "{EINVAL} (sync/nosync and rebuild are mutually exclusive)"
                        ));
                    }
                    if let Some(r) = p.region_size {
                        if !r.is_power_of_two() {
                            return Err(format!("{EINVAL} (region size {r} not a power of 2)"));
                        }
                    }
                    for d in &p.devices {
                        if let Some(m) = &d.meta {
                            need(self, m, Sectors(8))?;
                        }
                        if d.data != "-" {
                            need(self, &d.data, len)?;
                        }
                    }
                }
                Target::SnapshotOrigin(p) => need(self, &p.device, len)?,
                Target::Snapshot(p) | Target::SnapshotMerge(p) => {
                    let c = p.chunk_size;
                    if c == 0 || !c.is_power_of_two() {
                        return Err(format!("{EINVAL} (chunk size {c} not a power of 2)"));
                    }
                    need(self, &p.origin, len)?;
                    need(self, &p.cow, Sectors(2 * c))?;
                }
                Target::Zero | Target::Error => {}
                Target::Other { target_type, .. } => {
                    return Err(format!(
                        "{EINVAL} (target type {target_type:?} is not simulated)"
                    ))
                }
            }
        }
        let shown = lines
            .iter()
            .map(|l| {
                let mut target = l.target.map_devices(|d| {
                    self.resolve(d, dir)
                        .map(|r| r.devno.to_string())
                        .unwrap_or_else(|_| d.to_string())
                });
                // the kernel keeps max_write_behind in KiB: odd sector counts lose one
                if let Target::Raid(r) = &mut target {
                    r.max_write_behind = r.max_write_behind.map(|n| n / 2 * 2);
                }
                TableLine {
                    start: l.start,
                    length: l.length,
                    target,
                }
            })
            .collect();
        Ok(Table {
            lines: lines.to_vec(),
            deps,
            sizes,
            shown,
        })
    }

    fn activate(&mut self, name: &str, table: Table) {
        let mut lives: Vec<Live> = table
            .lines
            .iter()
            .zip(table.shown)
            .map(|(orig, shown)| Live {
                prog: init_prog(orig, &table.sizes),
                shown,
            })
            .collect();
        if let Some(old) = self.devices.get_mut(name).map(|d| &mut d.live) {
            let kept = cow_usage(old);
            // a raid reloaded over the same metadata devices, with no rebuild and no nosync,
            // carries on from what its superblocks record (here: the live table's progress)
            for (new, old) in lives.iter_mut().zip(old.iter_mut()) {
                if let (Target::Raid(n), Target::Raid(o)) = (&new.shown.target, &old.shown.target) {
                    let metas = |r: &super::table::RaidParams| {
                        r.devices.iter().map(|d| d.meta.clone()).collect::<Vec<_>>()
                    };
                    if !n.nosync
                        && n.rebuild.is_empty()
                        && metas(n) == metas(o)
                        && n.devices.iter().all(|d| d.meta.is_some())
                    {
                        new.prog = std::mem::replace(&mut old.prog, Prog::None);
                        // at resume dm-raid tries a faulty leg again; one that answers is
                        // recovered (from the bitmap, in the kernel)
                        if let Prog::Sync(p) = &mut new.prog {
                            if p.failed.iter().any(|f| *f) {
                                for k in 0..p.failed.len() {
                                    if p.failed[k] {
                                        p.failed[k] = false;
                                        p.recovering[k] = true;
                                    }
                                }
                                p.action = "recover".into();
                                p.in_sync = 0;
                            }
                        }
                    }
                }
            }
            self.cow_data.extend(kept);
        }
        for l in &mut lives {
            let (Target::SnapshotMerge(m), Prog::Snap(p)) = (&l.shown.target, &mut l.prog) else {
                continue;
            };
            // the handover: a live snapshot on the same store gives its chunks to the merge
            // and is invalid from then on; without one the merge reads the store
            let from_snapshot = self.devices.values_mut().find_map(|d| {
                d.live
                    .iter_mut()
                    .find_map(|o| match (&o.shown.target, &mut o.prog) {
                        (Target::Snapshot(sp), Prog::Snap(sp_prog)) if sp.cow == m.cow => {
                            sp_prog.forced = Some(SnapshotStatus::Invalid);
                            Some(sp_prog.data)
                        }
                        _ => None,
                    })
            });
            p.data = from_snapshot
                .or_else(|| self.cow_data.get(&m.cow).copied())
                .unwrap_or(0);
            p.merge_from = Some(p.data);
        }
        if let Some(dev) = self.devices.get_mut(name) {
            dev.live = lives;
            dev.live_deps = table.deps;
        }
    }

    /// A device for the simulator's own controls (not a kernel call: no errno).
    fn sim_device(&mut self, name: &DmName) -> Result<&mut Device> {
        self.devices
            .get_mut(name.as_str())
            .ok_or_else(|| Error::NotFound(format!("sim device {name}")))
    }

    fn device_mut(&mut self, op: &str, name: &DmName) -> Result<&mut Device> {
        self.devices
            .get_mut(name.as_str())
            .ok_or_else(|| kerr(op, name.as_str(), ENXIO))
    }
}

impl DmBackend for SimDm {
    fn create(&self, name: &DmName, table: &[TableLine]) -> Result<DevInfo> {
        let info = self.mutate(SimOp::Create, name, format_table(table), |s| {
            if s.devices.contains_key(name.as_str()) {
                return Err(kerr("create", name.as_str(), EBUSY));
            }
            let minor = s.next_minor;
            let t = s
                .check_table(table, Some(minor), &self.dir)
                .map_err(|d| kerr("load", name.as_str(), d))?;
            s.next_minor += 1;
            s.devices.insert(
                name.as_str().to_string(),
                Device {
                    name: name.clone(),
                    minor,
                    live: Vec::new(),
                    live_deps: Vec::new(),
                    inactive: None,
                    suspended: false,
                    event_nr: 0,
                },
            );
            s.activate(name.as_str(), t);
            let dev = &s.devices[name.as_str()];
            Ok(Self::info_of(s, dev))
        })?;
        let s = self.lock();
        self.refresh_node(&s, name.as_str());
        Ok(info)
    }

    fn load(&self, name: &DmName, table: &[TableLine]) -> Result<()> {
        self.mutate(SimOp::Load, name, format_table(table), |s| {
            let minor = s.device_mut("load", name)?.minor;
            let t = s
                .check_table(table, Some(minor), &self.dir)
                .map_err(|d| kerr("load", name.as_str(), d))?;
            s.device_mut("load", name)?.inactive = Some(t);
            Ok(())
        })
    }

    fn clear(&self, name: &DmName) -> Result<()> {
        self.mutate(SimOp::Clear, name, String::new(), |s| {
            s.device_mut("clear", name)?.inactive = None;
            Ok(())
        })
    }

    fn suspend(&self, name: &DmName, noflush: bool, timeout: Duration) -> Result<()> {
        let detail = if noflush { "noflush" } else { "flush" }.to_string();
        self.mutate(SimOp::Suspend, name, detail, |s| {
            let hangs = s.suspend_hangs;
            let dev = s.device_mut("suspend", name)?;
            if hangs {
                dev.inactive = None;
                return Err(Error::Timeout(format!(
                    "suspend of {name} did not finish within {} ms",
                    timeout.as_millis()
                )));
            }
            dev.suspended = true;
            Ok(())
        })
    }

    fn resume(&self, name: &DmName) -> Result<()> {
        self.mutate(SimOp::Resume, name, String::new(), |s| {
            let dev = s.device_mut("resume", name)?;
            let new = dev.inactive.take();
            dev.suspended = false;
            if let Some(t) = new {
                s.activate(name.as_str(), t);
            }
            Ok(())
        })?;
        let s = self.lock();
        self.refresh_node(&s, name.as_str());
        Ok(())
    }

    fn remove(&self, name: &DmName) -> Result<()> {
        let minor = self.mutate(SimOp::Remove, name, String::new(), |s| {
            let minor = s.device_mut("remove", name)?.minor;
            if s.open_count(minor) > 0 {
                return Err(kerr("remove", name.as_str(), EBUSY));
            }
            if let Some(d) = s.devices.remove(name.as_str()) {
                let kept = cow_usage(&d.live);
                s.cow_data.extend(kept);
            }
            Ok(minor)
        })?;
        let _ = fs::remove_file(self.node_path(minor));
        Ok(())
    }

    fn info(&self, name: &DmName) -> Result<Option<DevInfo>> {
        let s = self.lock();
        Ok(s.devices.get(name.as_str()).map(|d| Self::info_of(&s, d)))
    }

    fn list(&self) -> Result<Vec<DevInfo>> {
        let s = self.lock();
        Ok(s.devices.values().map(|d| Self::info_of(&s, d)).collect())
    }

    fn table(&self, name: &DmName) -> Result<Vec<TableLine>> {
        let s = self.lock();
        let dev = s
            .devices
            .get(name.as_str())
            .ok_or_else(|| kerr("table", name.as_str(), ENXIO))?;
        Ok(dev.live.iter().map(|l| l.shown.clone()).collect())
    }

    fn status(&self, name: &DmName) -> Result<Vec<StatusLine>> {
        let mut s = self.lock();
        if let Some(e) = s.take_injected(SimOp::Status, name.as_str()) {
            return Err(e);
        }
        let step = s.step;
        let dev = s.device_mut("status", name)?;
        advance(dev, step, false);
        let suspended = dev.suspended;
        Ok(dev
            .live
            .iter()
            .map(|l| StatusLine {
                start: l.shown.start.0,
                length: l.shown.length.0,
                target_type: l.shown.target_type().to_string(),
                params: status_params(l, suspended),
            })
            .collect())
    }

    fn message(&self, name: &DmName, sector: u64, msg: &str) -> Result<String> {
        self.mutate(SimOp::Message, name, msg.to_string(), |s| {
            let dev = s.device_mut("message", name)?;
            let suspended = dev.suspended;
            let line = dev
                .live
                .iter_mut()
                .find(|l| {
                    let (start, end) = (l.shown.start, l.shown.start + l.shown.length);
                    start.0 <= sector && sector < end.0
                })
                .ok_or_else(|| {
                    kerr(
                        "message",
                        name.as_str(),
                        format!("{EINVAL} (no target at sector {sector})"),
                    )
                })?;
            let refuse = |why: &str| kerr("message", name.as_str(), why.to_string());
            let p = match &mut line.prog {
                Prog::Sync(p) if p.raid => p,
                _ => {
                    return Err(refuse(&format!(
                        "{EINVAL} (target {} does not support messages)",
                        line.shown.target_type()
                    )))
                }
            };
            if suspended {
                return Err(refuse(EBUSY));
            }
            let word = msg
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_lowercase();
            match word.as_str() {
                "frozen" => {
                    if p.action != "frozen" {
                        p.frozen_from = Some(std::mem::replace(&mut p.action, "frozen".into()));
                    }
                }
                "idle" => match p.action.as_str() {
                    "frozen" => p.action = p.frozen_from.take().unwrap_or_else(|| "idle".into()),
                    "check" | "repair" => {
                        p.action = "idle".into();
                        p.in_sync = p.total;
                    }
                    _ => {}
                },
                "resync" | "recover" => {
                    if p.action == "frozen" {
                        p.action = p.frozen_from.take().unwrap_or_else(|| "idle".into());
                    } else if p.action != "idle" {
                        return Err(refuse(EBUSY));
                    }
                }
                "check" | "repair" => {
                    if p.action != "idle" {
                        return Err(refuse(EBUSY));
                    }
                    p.action = word.clone();
                    p.in_sync = 0;
                }
                _ => return Err(refuse(&format!("{EINVAL} (unknown raid message {msg:?})"))),
            }
            Ok(String::new())
        })
    }

    /// Returns at once: if the device's event number is already past `event_nr`, else after
    /// moving its syncs one step along (which may raise the event). Never sleeps.
    fn sectors_written(&self, name: &DmName) -> Result<u64> {
        let s = self.lock();
        if !s.devices.contains_key(name.as_str()) {
            return Err(kerr("stat", name.as_str(), ENXIO));
        }
        Ok(s.written.get(name.as_str()).copied().unwrap_or(0))
    }

    fn wait_event(&self, name: &DmName, event_nr: u32, _timeout: Duration) -> Result<u32> {
        let mut s = self.lock();
        if let Some(e) = s.take_injected(SimOp::Wait, name.as_str()) {
            return Err(e);
        }
        let step = s.step;
        let dev = s.device_mut("wait", name)?;
        if dev.event_nr <= event_nr {
            advance(dev, step, false);
        }
        Ok(dev.event_nr)
    }

    fn device_path(&self, name: &DmName) -> Result<PathBuf> {
        let s = self.lock();
        let dev = s
            .devices
            .get(name.as_str())
            .ok_or_else(|| Error::NotFound(format!("device-mapper device {name}")))?;
        let path = self.node_path(dev.minor);
        if fs::symlink_metadata(&path).is_err() {
            self.refresh_node(&s, name.as_str());
        }
        Ok(path)
    }

    fn devno_of(&self, path: &Path) -> Result<Devno> {
        let mut s = self.lock();
        if let Some(d) = s.disks.get(path) {
            return Ok(d.devno);
        }
        if let Some(d) = s.device_by_path(path, &self.dir) {
            return Ok(Devno::new(SIM_DM_MAJOR, d.minor));
        }
        let m = fs::metadata(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound(format!("device {}", path.display())),
            _ => Error::io("stat", path, e),
        })?;
        if m.is_file() {
            return Ok(s.file_devno(path, &m));
        }
        devno_of_path(path)
    }

    fn size_sectors(&self, path: &Path) -> Result<Sectors> {
        let s = self.lock();
        if let Some(d) = s.disks.get(path) {
            return Ok(d.sectors);
        }
        if let Some(d) = s.device_by_path(path, &self.dir) {
            return Ok(State::size_of_device(d));
        }
        drop(s);
        size_sectors_of_path(path)
    }

    fn disk_identities(&self, devnos: &[Devno]) -> Result<Vec<DiskIdentity>> {
        devnos.iter().map(|d| self.identity_of(*d)).collect()
    }

    fn read_probe(&self, dev: Devno, _timeout: Duration) -> Result<()> {
        if self.lock().failed_disks.contains(&dev) {
            return Err(Error::io(
                "read",
                Path::new(&format!("/dev/block/{dev}")),
                std::io::Error::from_raw_os_error(nix::libc::EIO),
            ));
        }
        Ok(())
    }

    /// The file as a disk of major 7, numbered in binding order (it is never unbound).
    fn attach_file(&self, file: &Path) -> Result<super::FileDevice> {
        let file = fs::canonicalize(file).map_err(|e| Error::io("resolve", file, e))?;
        let m = fs::metadata(&file).map_err(|e| Error::io("stat", &file, e))?;
        let mut s = self.lock();
        if let Some(d) = s.disks.get(&file) {
            return Ok(super::FileDevice {
                devno: d.devno,
                hold: None,
            });
        }
        let devno = Devno::new(SIM_LOOP_MAJOR, s.loop_files.len() as u32);
        let sectors = Sectors::from_bytes(m.len());
        s.disks.insert(file.clone(), Disk { devno, sectors });
        s.loop_files.insert(file);
        Ok(super::FileDevice { devno, hold: None })
    }

    fn find_disks(&self, id: &DiskIdentity) -> Result<Vec<Devno>> {
        let devnos: Vec<Devno> = {
            let s = self.lock();
            s.disks
                .values()
                .map(|d| d.devno)
                .chain(
                    s.files
                        .values()
                        .map(|(mi, _)| Devno::new(SIM_FILE_MAJOR, *mi)),
                )
                .chain(
                    s.devices
                        .values()
                        .map(|d| Devno::new(SIM_DM_MAJOR, d.minor)),
                )
                .collect()
        };
        let mut out: Vec<Devno> = devnos
            .into_iter()
            .filter(|d| self.identity_of(*d).is_ok_and(|have| id.matches(&have)))
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }
}

impl SimDm {
    /// Simulated identities: a registered disk or a file is known by its path
    /// (`sim-path:PATH`), a simulated device-mapper device by its UUID, as in the kernel.
    fn identity_of(&self, devno: Devno) -> Result<DiskIdentity> {
        let s = self.lock();
        let d = devno;
        if d.major == SIM_DM_MAJOR {
            let dev = s
                .device_by_minor(d.minor)
                .ok_or_else(|| Error::NotFound(format!("block device {devno}")))?;
            return Ok(DiskIdentity {
                ids: vec![format!("dm-uuid:{}", dev.name.uuid())],
                sectors: State::size_of_device(dev),
                kernel_name: format!("dm-{}", dev.minor),
            });
        }
        let (path, sectors) = if let Some((p, disk)) = s.disks.iter().find(|(_, x)| x.devno == d) {
            if s.loop_files.contains(p) {
                return Ok(DiskIdentity {
                    ids: vec![format!("{}{}", super::identity::LOOP_FILE, p.display())],
                    sectors: disk.sectors,
                    kernel_name: format!("loop{}", d.minor),
                });
            }
            (p.clone(), disk.sectors)
        } else if let Some((_, p)) = s
            .files
            .values()
            .find(|(mi, _)| d == Devno::new(SIM_FILE_MAJOR, *mi))
        {
            let p = p.clone();
            drop(s);
            let sectors = size_sectors_of_path(&p)?;
            (p, sectors)
        } else {
            return Err(Error::NotFound(format!("block device {devno}")));
        };
        Ok(DiskIdentity {
            ids: vec![format!("sim-path:{}", path.display())],
            sectors,
            kernel_name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dm::table::{LinearParams, MirrorParams, RaidDevice, RaidParams, SnapshotParams};
    use crate::dm::SnapshotOriginParams;

    const S: u64 = 524288;

    fn n(s: &str) -> DmName {
        DmName::new(s).unwrap()
    }

    fn linear(dev: &str, len: u64) -> Vec<TableLine> {
        vec![TableLine::new(
            Sectors(0),
            Sectors(len),
            Target::Linear(LinearParams {
                device: dev.into(),
                offset: 0,
            }),
        )]
    }

    fn mirror(a: &str, b: &str, len: u64) -> Vec<TableLine> {
        vec![TableLine::new(
            Sectors(0),
            Sectors(len),
            Target::Mirror(MirrorParams {
                region_size: 1024,
                nosync: false,
                legs: vec![
                    LinearParams {
                        device: a.into(),
                        offset: 0,
                    },
                    LinearParams {
                        device: b.into(),
                        offset: 0,
                    },
                ],
                handle_errors: true,
            }),
        )]
    }

    fn raid(a: &str, b: &str, len: u64, nosync: bool, rebuild: Vec<usize>) -> Vec<TableLine> {
        vec![TableLine::new(
            Sectors(0),
            Sectors(len),
            Target::Raid(RaidParams {
                region_size: Some(1024),
                nosync,
                rebuild,
                write_mostly: vec![1],
                max_write_behind: Some(513),
                max_recovery_rate: None,
                devices: vec![
                    RaidDevice {
                        meta: None,
                        data: a.into(),
                    },
                    RaidDevice {
                        meta: None,
                        data: b.into(),
                    },
                ],
            }),
        )]
    }

    fn kernel_detail(e: Error) -> String {
        match e {
            Error::Kernel { detail, .. } => detail,
            other => panic!("not a kernel error: {other}"),
        }
    }

    fn sim() -> (SimDm, String, String, String) {
        let dm = SimDm::new();
        let a = dm.add_disk("/dev/vdb", Sectors(S)).to_string();
        let b = dm.add_disk("/dev/vdc", Sectors(S)).to_string();
        let c = dm.add_disk("/dev/vdd", Sectors(S / 2)).to_string();
        (dm, a, b, c)
    }

    #[test]
    fn create_info_list_table_remove() {
        let (dm, a, b, _) = sim();
        assert_eq!((a.as_str(), b.as_str()), ("8:0", "8:16"));
        let x = n("x");
        let info = dm.create(&x, &linear("/dev/vdb", S)).unwrap();
        assert_eq!((info.major, info.minor), (253, 0));
        assert_eq!(info.uuid, x.uuid());
        assert!(!info.suspended && !info.inactive_table);
        // the kernel reports devices by number
        assert_eq!(dm.table(&x).unwrap(), linear("8:0", S));
        assert_eq!(dm.list().unwrap().len(), 1);
        let p = dm.device_path(&x).unwrap();
        assert!(p.exists(), "{}", p.display());
        assert_eq!(dm.devno_of(&p).unwrap().to_string(), "253:0");
        assert_eq!(dm.size_sectors(&p).unwrap(), Sectors(S));
        assert_eq!(
            dm.size_sectors(Path::new("/dev/vdd")).unwrap(),
            Sectors(S / 2)
        );
        // existing name
        let e = dm.create(&x, &linear("/dev/vdb", S)).unwrap_err();
        assert!(kernel_detail(e).starts_with("EBUSY"));
        dm.remove(&x).unwrap();
        assert!(dm.info(&x).unwrap().is_none());
        assert!(!p.exists());
        let e = dm.remove(&x).unwrap_err();
        assert!(kernel_detail(e).starts_with("ENXIO"));
    }

    #[test]
    fn tables_are_checked_like_the_kernel() {
        let (dm, _, _, _) = sim();
        let x = n("x");
        // too small: nothing is left behind
        let e = dm.create(&x, &linear("/dev/vdd", S)).unwrap_err();
        match &e {
            Error::Kernel { op, detail, .. } => {
                assert_eq!(op, "load");
                assert!(detail.starts_with("EINVAL"), "{detail}");
            }
            other => panic!("{other}"),
        }
        assert!(dm.info(&x).unwrap().is_none());
        assert!(kernel_detail(
            dm.create(&x, &linear("/dev/nonexistent-disk", 8))
                .unwrap_err()
        )
        .starts_with("ENOENT"));
        assert!(kernel_detail(dm.create(&x, &linear("8:99", 8)).unwrap_err()).starts_with("ENXIO"));
        assert!(kernel_detail(dm.create(&x, &[]).unwrap_err()).starts_with("EINVAL"));
        let gap = vec![TableLine::new(Sectors(8), Sectors(8), Target::Zero)];
        assert!(kernel_detail(dm.create(&x, &gap).unwrap_err()).starts_with("EINVAL"));
        let mut one_leg = mirror("/dev/vdb", "/dev/vdc", S);
        if let Target::Mirror(m) = &mut one_leg[0].target {
            m.legs.pop();
        }
        assert!(dm.create(&x, &one_leg).is_err());
        let mut bad_region = mirror("/dev/vdb", "/dev/vdc", S);
        if let Target::Mirror(m) = &mut bad_region[0].target {
            m.region_size = 1000;
        }
        assert!(dm.create(&x, &bad_region).is_err());
        let mut all_wm = raid("/dev/vdb", "/dev/vdc", S, false, vec![]);
        if let Target::Raid(r) = &mut all_wm[0].target {
            r.write_mostly = vec![0, 1];
        }
        assert!(dm.create(&x, &all_wm).is_err());
        assert!(dm
            .create(&x, &raid("/dev/vdb", "/dev/vdc", S, true, vec![1]))
            .is_err());
        let other = vec![TableLine::new(
            Sectors(0),
            Sectors(8),
            Target::Other {
                target_type: "striped".into(),
                params: "x".into(),
            },
        )];
        assert!(dm.create(&x, &other).is_err());
        assert!(dm.list().unwrap().is_empty());
        // load on a missing device
        assert!(
            kernel_detail(dm.load(&x, &linear("/dev/vdb", S)).unwrap_err()).starts_with("ENXIO")
        );
    }

    #[test]
    fn referenced_or_held_devices_cannot_be_removed() {
        let (dm, _, _, _) = sim();
        let (lo, hi) = (n("lower"), n("upper"));
        dm.create(&lo, &linear("/dev/vdb", S)).unwrap();
        let lo_path = dm.device_path(&lo).unwrap();
        dm.create(&hi, &linear(&lo_path.to_string_lossy(), S))
            .unwrap();
        assert_eq!(dm.table(&hi).unwrap(), linear("253:0", S));
        assert_eq!(dm.info(&lo).unwrap().unwrap().open_count, 1);
        assert!(kernel_detail(dm.remove(&lo).unwrap_err()).starts_with("EBUSY"));
        dm.remove(&hi).unwrap();
        // held by LIO
        dm.set_held_by_other(&lo_path, true).unwrap();
        assert!(kernel_detail(dm.remove(&lo).unwrap_err()).starts_with("EBUSY"));
        let e = dm.create(&hi, &linear("253:0", S)).unwrap_err();
        assert!(kernel_detail(e).starts_with("EBUSY"));
        dm.set_held_by_other(&lo_path, false).unwrap();
        dm.set_held_by_other(Path::new("/dev/vdc"), true).unwrap();
        assert!(dm.create(&hi, &linear("/dev/vdc", S)).is_err());
        dm.remove(&lo).unwrap();
    }

    #[test]
    fn suspend_load_resume_state_machine() {
        let (dm, _, _, _) = sim();
        let x = n("x");
        dm.create(&x, &linear("/dev/vdb", S)).unwrap();
        dm.load(&x, &mirror("/dev/vdb", "/dev/vdc", S)).unwrap();
        let i = dm.info(&x).unwrap().unwrap();
        assert!(i.inactive_table && !i.suspended);
        // the live table is unchanged until resume
        assert_eq!(dm.table(&x).unwrap(), linear("8:0", S));
        dm.clear(&x).unwrap();
        assert!(!dm.info(&x).unwrap().unwrap().inactive_table);
        dm.suspend(&x, false, Duration::from_secs(1)).unwrap();
        dm.suspend(&x, true, Duration::from_secs(1)).unwrap(); // already suspended: fine
        dm.load(&x, &mirror("/dev/vdb", "/dev/vdc", S)).unwrap();
        let i = dm.info(&x).unwrap().unwrap();
        assert!(i.suspended && i.inactive_table);
        // status works while suspended, and nothing moves
        dm.status(&x).unwrap();
        dm.resume(&x).unwrap();
        let i = dm.info(&x).unwrap().unwrap();
        assert!(!i.suspended && !i.inactive_table);
        assert_eq!(dm.table(&x).unwrap(), mirror("8:0", "8:16", S));
        // the mirror's legs are held by its table: the disk under a mirror leg is busy? no,
        // dm shares disks between tables; only sim devices count opens
        assert_eq!(dm.info(&x).unwrap().unwrap().open_count, 0);
    }

    #[test]
    fn mirror_sync_advances_and_raises_an_event() {
        let (dm, _, _, _) = sim();
        let x = n("x");
        dm.create(&x, &mirror("/dev/vdb", "/dev/vdc", S)).unwrap();
        dm.suspend(&x, false, Duration::from_secs(1)).unwrap();
        // suspended: no progress
        let st = dm.status(&x).unwrap();
        assert_eq!(st[0].target_type, "mirror");
        assert_eq!(st[0].params, "2 8:0 8:16 0/512 1 AA 1 core");
        dm.resume(&x).unwrap();
        let ev0 = dm.info(&x).unwrap().unwrap().event_nr;
        dm.set_sync_step(SyncStep::Percent(25));
        let mut seen = Vec::new();
        loop {
            let s = MirrorStatus::parse(&dm.status(&x).unwrap()[0].params).unwrap();
            seen.push(s.percent());
            if s.is_synced() {
                break;
            }
        }
        assert_eq!(seen, vec![25, 50, 75, 100]);
        let ev1 = dm.info(&x).unwrap().unwrap().event_nr;
        assert_eq!(ev1, ev0 + 1);
        // already past: returns at once without change
        assert_eq!(dm.wait_event(&x, ev0, Duration::from_secs(5)).unwrap(), ev1);
        assert_eq!(dm.wait_event(&x, ev1, Duration::from_secs(5)).unwrap(), ev1);
        // a failed leg shows D and raises an event
        dm.set_leg_failed(&x, 1).unwrap();
        let s = MirrorStatus::parse(&dm.status(&x).unwrap()[0].params).unwrap();
        assert_eq!(s.failed_legs(), vec![1]);
        assert_eq!(dm.info(&x).unwrap().unwrap().event_nr, ev1 + 1);
    }

    #[test]
    fn wait_event_moves_sync_along() {
        let (dm, _, _, _) = sim();
        let x = n("x");
        dm.set_sync_step(SyncStep::Units(256));
        dm.create(&x, &mirror("/dev/vdb", "/dev/vdc", S)).unwrap();
        assert_eq!(dm.wait_event(&x, 0, Duration::from_secs(60)).unwrap(), 0);
        assert_eq!(dm.wait_event(&x, 0, Duration::from_secs(60)).unwrap(), 1);
        let s = MirrorStatus::parse(&dm.status(&x).unwrap()[0].params).unwrap();
        assert!(s.is_synced());
    }

    #[test]
    fn raid_resync_recover_and_nosync() {
        let (dm, _, _, _) = sim();
        dm.set_sync_step(SyncStep::Percent(50));
        let (r1, r2, r3) = (n("r1"), n("r2"), n("r3"));
        dm.create(&r1, &raid("/dev/vdb", "/dev/vdc", S / 2, false, vec![]))
            .unwrap();
        let s = RaidStatus::parse(&dm.status(&r1).unwrap()[0].params).unwrap();
        assert_eq!(
            (s.health.clone(), s.sync_action.as_str()),
            (vec!['a', 'a'], "resync")
        );
        assert_eq!(s.percent(), 50);
        let s = RaidStatus::parse(&dm.status(&r1).unwrap()[0].params).unwrap();
        assert_eq!(s.to_string(), "raid1 2 AA 262144/262144 idle 0 0 -");
        assert!(s.is_synced());
        // odd max_write_behind comes back even, as the kernel keeps KiB
        let Target::Raid(t) = &dm.table(&r1).unwrap()[0].target else {
            panic!()
        };
        assert_eq!(t.max_write_behind, Some(512));

        dm.create(&r2, &raid("/dev/vdb", "/dev/vdc", S / 2, false, vec![1]))
            .unwrap();
        dm.suspend(&r2, false, Duration::from_secs(1)).unwrap();
        let s = RaidStatus::parse(&dm.status(&r2).unwrap()[0].params).unwrap();
        // suspended: md's sync thread stopped, the ratio reads 0
        assert_eq!(s.health, vec!['A', 'a']);
        assert_eq!(s.sync_action, "frozen");
        assert_eq!(s.in_sync, 0);
        // messages are refused while suspended
        assert!(dm.message(&r2, 0, "check").is_err());
        dm.resume(&r2).unwrap();
        dm.finish_sync(&r2).unwrap();
        let s = RaidStatus::parse(&dm.status(&r2).unwrap()[0].params).unwrap();
        assert!(s.is_synced());
        // a scrub
        dm.message(&r2, 0, "check").unwrap();
        assert!(dm.message(&r2, 0, "repair").is_err());
        dm.message(&r2, 0, "idle").unwrap();
        assert!(dm.message(&r2, 0, "bogus").is_err());

        dm.create(&r3, &raid("/dev/vdb", "/dev/vdc", S / 2, true, vec![]))
            .unwrap();
        dm.set_sync_step(SyncStep::Percent(0));
        let s = RaidStatus::parse(&dm.status(&r3).unwrap()[0].params).unwrap();
        assert!(s.is_synced());
        // frozen raid does not move
        dm.load(&r3, &raid("/dev/vdb", "/dev/vdc", S / 2, false, vec![]))
            .unwrap();
        dm.resume(&r3).unwrap();
        dm.set_sync_step(SyncStep::Percent(10));
        dm.message(&r3, 0, "frozen").unwrap();
        let s = RaidStatus::parse(&dm.status(&r3).unwrap()[0].params).unwrap();
        assert_eq!((s.sync_action.as_str(), s.in_sync), ("frozen", 0));
        dm.message(&r3, 0, "idle").unwrap();
        let s = RaidStatus::parse(&dm.status(&r3).unwrap()[0].params).unwrap();
        assert_eq!(s.sync_action, "resync");
        assert!(s.in_sync > 0);
        // mirrors take no messages
        let m = n("m");
        dm.create(&m, &mirror("/dev/vdb", "/dev/vdc", S)).unwrap();
        assert!(kernel_detail(dm.message(&m, 0, "resync").unwrap_err()).starts_with("EINVAL"));
    }

    #[test]
    fn snapshot_usage_overflow_and_forced_states() {
        let dm = SimDm::new();
        dm.add_disk("/dev/vdb", Sectors(S));
        dm.add_disk("/dev/vdd", Sectors(S));
        let (base, snap) = (n("base"), n("snap"));
        dm.create(
            &base,
            &[TableLine::new(
                Sectors(0),
                Sectors(S),
                Target::SnapshotOrigin(SnapshotOriginParams {
                    device: "/dev/vdb".into(),
                }),
            )],
        )
        .unwrap();
        let table = vec![TableLine::new(
            Sectors(0),
            Sectors(S),
            Target::Snapshot(SnapshotParams {
                origin: "/dev/vdb".into(),
                cow: "/dev/vdd".into(),
                persistent: true,
                chunk_size: 8,
            }),
        )];
        dm.create(&snap, &table).unwrap();
        assert_eq!(dm.status(&snap).unwrap()[0].params, "16/524288 16");
        assert_eq!(dm.status(&base).unwrap()[0].params, "");
        // the VM sample: 8 MiB written
        dm.set_snapshot_usage(&snap, 16384).unwrap();
        assert_eq!(dm.status(&snap).unwrap()[0].params, "16464/524288 80");
        // rewriting the whole origin does not fit a COW of the same size
        let ev = dm.info(&snap).unwrap().unwrap().event_nr;
        dm.set_snapshot_usage(&snap, S).unwrap();
        assert_eq!(dm.status(&snap).unwrap()[0].params, "Invalid");
        assert_eq!(dm.info(&snap).unwrap().unwrap().event_nr, ev + 1);
        dm.set_snapshot_status(&snap, SnapshotStatus::Overflow)
            .unwrap();
        assert_eq!(
            SnapshotStatus::parse(&dm.status(&snap).unwrap()[0].params).unwrap(),
            SnapshotStatus::Overflow
        );
        assert!(dm.set_snapshot_usage(&base, 8).is_err());
    }

    #[test]
    fn injected_failures_and_the_call_log() {
        let (dm, _, _, _) = sim();
        let (x, y) = (n("src-shim"), n("tgt-shim"));
        dm.create(&x, &linear("/dev/vdb", S)).unwrap();
        dm.create(&y, &linear("/dev/vdc", S)).unwrap();
        dm.fail_next(
            SimOp::Load,
            Some("tgt"),
            Error::kernel("load", "tgt", "ENOMEM: Cannot allocate memory"),
        );
        dm.load(&x, &linear("/dev/vdb", S)).unwrap();
        assert!(dm.load(&y, &linear("/dev/vdc", S)).is_err());
        dm.load(&y, &linear("/dev/vdc", S)).unwrap();
        dm.fail_next(SimOp::Status, None, Error::Other("no status".into()));
        assert!(dm.status(&x).is_err());
        assert!(dm.status(&x).is_ok());
        dm.fail_next(SimOp::Create, None, Error::kernel("create", "z", "EIO"));
        assert!(dm.create(&n("z"), &linear("/dev/vdb", 8)).is_err());
        assert!(dm.info(&n("z")).unwrap().is_none());

        let calls = dm.calls();
        let ops: Vec<(SimOp, &str, bool)> = calls
            .iter()
            .map(|c| (c.op, c.name.as_str(), c.ok))
            .collect();
        assert_eq!(
            ops,
            vec![
                (SimOp::Create, x.as_str(), true),
                (SimOp::Create, y.as_str(), true),
                (SimOp::Load, x.as_str(), true),
                (SimOp::Load, y.as_str(), false),
                (SimOp::Load, y.as_str(), true),
                (SimOp::Create, n("z").as_str(), false),
            ]
        );
        assert_eq!(calls[0].detail, "0 524288 linear /dev/vdb 0");
        dm.clear_calls();
        assert!(dm.calls().is_empty());

        // fail each step of a three-step swap in turn
        for k in 1..=3 {
            dm.fail_at_call(k);
            let r = dm
                .suspend(&x, false, Duration::from_secs(1))
                .and_then(|_| dm.load(&x, &mirror("/dev/vdb", "/dev/vdd", S / 2)))
                .and_then(|_| dm.resume(&x));
            let e = r.unwrap_err();
            assert!(kernel_detail(e).starts_with("EIO"));
            let _ = dm.clear(&x);
            dm.resume(&x).unwrap();
            assert_eq!(dm.table(&x).unwrap(), linear("8:0", S));
        }
        let before = dm.mutating_call_count();
        dm.fail_at_call(0);
        dm.resume(&x).unwrap();
        assert_eq!(dm.mutating_call_count(), before + 1);
    }

    #[test]
    fn hanging_suspend_times_out_and_leaves_the_device_running() {
        let (dm, _, _, _) = sim();
        let x = n("x");
        dm.create(&x, &linear("/dev/vdb", S)).unwrap();
        dm.load(&x, &mirror("/dev/vdb", "/dev/vdc", S)).unwrap();
        dm.set_suspend_hangs(true);
        let e = dm.suspend(&x, true, Duration::from_millis(10)).unwrap_err();
        assert!(matches!(e, Error::Timeout(_)), "{e}");
        assert_eq!(e.return_code().value(), 3);
        let i = dm.info(&x).unwrap().unwrap();
        assert!(!i.suspended && !i.inactive_table);
        let last = dm.calls().pop().unwrap();
        assert_eq!(
            (last.op, last.detail.as_str(), last.ok),
            (SimOp::Suspend, "noflush", false)
        );
        dm.set_suspend_hangs(false);
        dm.suspend(&x, true, Duration::from_millis(10)).unwrap();
    }

    #[test]
    fn temporary_files_serve_as_disks() {
        let tmp = tempfile::tempdir().unwrap();
        let dm = SimDm::with_dir(tmp.path().join("nodes"));
        let img = tmp.path().join("src.img");
        let f = fs::File::create(&img).unwrap();
        f.set_len(4 << 20).unwrap();
        let devno = dm.devno_of(&img).unwrap().to_string();
        assert!(devno.starts_with("240:"), "{devno}");
        assert_eq!(dm.devno_of(&img).unwrap().to_string(), devno);
        assert_eq!(dm.size_sectors(&img).unwrap(), Sectors(8192));
        assert!(matches!(
            dm.devno_of(&tmp.path().join("missing")),
            Err(Error::NotFound(_))
        ));

        let x = n("x");
        dm.create(&x, &linear(&devno, 8192)).unwrap();
        let p = dm.device_path(&x).unwrap();
        assert_eq!(p, tmp.path().join("nodes/dm-0"));
        assert_eq!(fs::read_link(&p).unwrap(), img);
        // writes through the device path reach the file
        fs::write(&p, b"hello").unwrap();
        assert_eq!(&fs::read(&img).unwrap()[..5], b"hello");
        // a device over a registered disk that is no file gets a stand-in file
        dm.add_disk("/dev/vdz", Sectors(64));
        let y = n("y");
        dm.create(&y, &linear("/dev/vdz", 64)).unwrap();
        let py = dm.device_path(&y).unwrap();
        assert_eq!(fs::metadata(&py).unwrap().len(), Sectors(64).bytes());
        // stacked: follows through the lower sim device to the file
        let z = n("z");
        dm.create(&z, &linear(&p.to_string_lossy(), 8192)).unwrap();
        assert_eq!(fs::read_link(dm.device_path(&z).unwrap()).unwrap(), img);
    }
}
