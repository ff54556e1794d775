//! Replication engine: composes configfs steps and device-mapper steps into plans that undo
//! step by step. One module per copy type:
//!
//! | CopyType | module | device-mapper stack under the source backstore |
//! |---|---|---|
//! | 2 Async | [`async_copy`] | `raid raid1`, target leg `write_mostly` + `max_write_behind` |
//! | 3 Sync | [`sync`] | `raid raid1` where the target has the room, else `mirror` (source leg first, `handle_errors`) |
//! | 4 UnSyncAssoc | [`snapshot`] | `snapshot-origin`; the target serves `snapshot` with itself as COW |
//! | 5 UnSyncUnAssoc | [`clone`] | `mirror` until in sync, then split back to `linear` |
//!
//! Every storage object taking part is first *adopted* ([`adopt`]): served through a `linear`
//! device-mapper device this daemon owns, so tables can be swapped under a live LUN.

pub mod adopt;
pub mod async_copy;
pub mod clone;
pub mod journal;
mod mirror_restore;
mod mode;
pub mod names;
pub mod plan;
pub mod recovery;
pub mod relationship;
pub mod snapshot;
pub mod stack;
pub mod state;
pub mod sync;

#[cfg(test)]
mod tests;

use crate::configfs::{ConfigFs, StorageObject};
use crate::dm::{Devno, DmBackend, DmName, LinearParams, Sectors, TableLine, Target};
use crate::error::{Error, Result, ReturnCode};
use crate::jobs::JobManager;
use crate::names::Element;
use crate::service::{
    CopyType, JobView, MethodResult, RelationshipView, Service, StorageObjectView,
};
use relationship::Relationship;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

/// How long a look at a disk the kernel reports nothing about (a snapshot's origin or COW
/// store, a returning raid1 target) waits for a read of its first block.
pub(crate) const DISK_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
use std::time::Duration;
use tracing::{info, info_span, warn};

/// Which device-mapper backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmChoice {
    Kernel,
    Sim,
}

/// What `lio-replica serve` needs to build the engine.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub configfs_root: PathBuf,
    pub dm: DmChoice,
    /// rtslib's backstore lock file
    pub lock_path: PathBuf,
    /// Where the saved state and the intent records are kept; None keeps neither.
    pub state_dir: Option<PathBuf>,
}

/// Knobs with defaults for production; tests shorten the waits.
#[derive(Debug, Clone)]
pub struct Options {
    /// Longest a suspend may take before the step counts as timed out (return value 3).
    pub suspend_timeout: Duration,
    /// Longest a job waits for a device event before re-reading the status.
    pub poll_interval: Duration,
    /// How long RequestStateChange waits for a job to stop.
    pub stop_wait: Duration,
    /// Mirror region size, sectors (2 MiB, as LVM's raid_region_size: dm-mirror copies one
    /// region at a time, so small regions make a slow resync; a write to the region being
    /// copied waits for it).
    pub mirror_region: u64,
    /// Snapshot chunk size.
    pub snapshot_chunk: Sectors,
    /// Size of each dm-raid metadata area carved from the Async target's tail.
    pub raid_meta_sectors: Sectors,
    /// dm-raid `max_write_behind` (kernel halves it: outstanding writes the replica may lag).
    pub max_write_behind: u32,
    /// Directory of intent records (crash recovery) and of the saved state (reboots); None
    /// keeps neither.
    pub state_dir: Option<PathBuf>,
    /// This boot's id; None reads the kernel's (tests simulate reboots with it).
    pub boot_id: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            suspend_timeout: Duration::from_secs(10),
            poll_interval: Duration::from_secs(1),
            stop_wait: Duration::from_secs(60),
            mirror_region: 4096,
            snapshot_chunk: Sectors(8),
            raid_meta_sectors: Sectors(8192),
            max_write_behind: 512,
            state_dir: None,
            boot_id: None,
        }
    }
}

pub(crate) struct Inner {
    pub cfs: ConfigFs,
    pub dm: Arc<dyn DmBackend>,
    pub jobs: JobManager,
    pub opts: Options,
    pub journal: journal::Journal,
    /// Serialises every kernel change (control-plane operations are short).
    kernel: Mutex<()>,
    /// Elements an API call is working on right now.
    claims: Mutex<BTreeSet<Element>>,
    /// Relationships by InstanceID.
    pub rels: relationship::Registry,
    /// The state last saved to disk; saving starts once start-up recovery is over.
    saved: Mutex<Option<state::SavedState>>,
    saving: std::sync::atomic::AtomicBool,
    boot_id: String,
}

/// The kernel lock; when released, the state on disk is brought up to date with the kernel
/// (see [`state`]), before the call that made the change answers.
pub(crate) struct KernelGuard<'a> {
    inner: &'a Inner,
    _g: MutexGuard<'a, ()>,
}

impl Drop for KernelGuard<'_> {
    fn drop(&mut self) {
        // a panic stands for a crash in tests: a dead daemon saves nothing
        if !std::thread::panicking() {
            self.inner.save_state();
        }
    }
}

/// The engine. Cheap to clone; jobs hold a clone.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

/// Removes its claims when dropped.
pub(crate) struct Claim<'a> {
    inner: &'a Inner,
    keys: Vec<Element>,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut c = self.inner.claims.lock().unwrap();
        for k in &self.keys {
            c.remove(k);
        }
    }
}

/// A storage object resolved for an operation, with its size.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub so: StorageObject,
    pub sectors: Sectors,
}

impl Inner {
    /// Claim elements for the duration of a call; In Use if another call holds one.
    pub fn claim(&self, keys: &[Element]) -> Result<Claim<'_>> {
        let mut c = self.claims.lock().unwrap();
        if let Some(k) = keys.iter().find(|k| c.contains(*k)) {
            return Err(Error::InUse(format!(
                "{k} is being changed by another request"
            )));
        }
        for k in keys {
            c.insert(k.clone());
        }
        Ok(Claim {
            inner: self,
            keys: keys.to_vec(),
        })
    }

    pub fn kernel_lock(&self) -> KernelGuard<'_> {
        KernelGuard {
            inner: self,
            _g: self.kernel.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }

    /// Save the kernel's state if it changed since the last save (called with the kernel
    /// lock held). A failure is logged: the change is made, but would not survive a reboot.
    fn save_state(&self) {
        let Some(dir) = &self.opts.state_dir else {
            return;
        };
        if !self.saving.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let mut saved = self.saved.lock().unwrap_or_else(|p| p.into_inner());
        let r = state::capture(&self.cfs, &*self.dm, &self.boot_id, saved.as_ref()).and_then(
            |now| {
                if saved.as_ref() != Some(&now) {
                    state::save(dir, &now)?;
                    tracing::debug!(dir = %dir.display(), devices = now.devices.len(), "state saved");
                    *saved = Some(now);
                }
                Ok(())
            },
        );
        if let Err(e) = r {
            tracing::error!(dir = %dir.display(), error = %e, "cannot save the state: the last change will not survive a reboot");
        }
    }

    /// The relationship with this InstanceID, if any (a copy: the map stays unlocked).
    pub fn relationship(&self, id: &str) -> Option<Relationship> {
        self.rels.get(id)
    }

    /// The relationships `element` takes part in, as source or target.
    pub fn relationships_of(&self, element: &Element) -> Vec<Relationship> {
        self.rels
            .filter(|r| r.source == *element || r.target == *element)
    }

    /// Why `src` may not take part as the source of a new relationship `lc` beside the ones it
    /// has, and why `tgt` may not be its target, if either may not.
    fn refuse_attach(
        &self,
        src: &Resolved,
        tgt: &Resolved,
        ct: CopyType,
        lc: &dyn relationship::Lifecycle,
    ) -> Option<String> {
        let (s, t) = (src.so.element(), tgt.so.element());
        if let Some(r) = self.relationships_of(&t).first() {
            return Some(format!("target {t} is already in relationship {}", r.id));
        }
        let of_source = self.relationships_of(&s);
        if let Some(r) = of_source.iter().find(|r| r.target == s) {
            return Some(format!(
                "source {s} is the target of relationship {}; a replica cannot be the source \
                 of another (no cascading)",
                r.id
            ));
        }
        if lc.replicates_in_real() {
            let replicating: Vec<_> = of_source
                .iter()
                .filter(|r| r.lifecycle().replicates_in_real())
                .collect();
            if let Some(r) = replicating
                .iter()
                .find(|r| mirror_restore::restoring(self, r).unwrap_or(true))
            {
                return Some(format!(
                    "source {s} is being restored from relationship {}'s target; wait for its job",
                    r.id
                ));
            }
            let shares = replicating.len() == 1
                && relationship::can_share_real(replicating[0].copy_type, ct);
            if let Some(r) = replicating.first().filter(|_| !shares) {
                return Some(format!(
                    "source {s} is already replicated by relationship {} (CopyType {}); a \
                     source has one mirror (Sync or Async) and one running full copy at a \
                     time, beside any number of snapshots, and an Async mirror is attached \
                     before a full copy, not while one runs",
                    r.id,
                    r.copy_type.value()
                ));
            }
        }
        None
    }

    /// The relationship a ModifySynchronization names: its InstanceID, or an element of it
    /// when that element is in exactly one relationship.
    fn named_relationship(&self, name: &str) -> Result<Relationship> {
        if let Some(r) = self.relationship(name) {
            return Ok(r);
        }
        let element = Element::parse(name)
            .map_err(|_| Error::NotFound(format!("no relationship {name:?}")))?;
        let mut found = self.relationships_of(&element);
        match found.len() {
            0 => Err(Error::NotFound(format!("no relationship {name:?}"))),
            1 => Ok(found.remove(0)),
            _ => Err(Error::Invalid(format!(
                "{element} is in {} relationships; name one by its InstanceID: {}",
                found.len(),
                found
                    .iter()
                    .map(|r| r.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// Resolve an element name to an existing, replicable storage object.
    pub fn resolve(&self, element: &Element, role: &str) -> Result<Resolved> {
        let so = self
            .cfs
            .find_storage_object(element.plugin(), element.name())
            .map_err(|e| match e {
                Error::NotFound(_) => {
                    Error::NotFound(format!("{role} element {element} does not exist"))
                }
                other => other,
            })?;
        if !so.plugin.can_replicate() {
            return Err(Error::NotSupported(format!(
                "{role} {} is a {} backstore; only block (iblock) backstores can be replicated, \
                 because their device can be put under device-mapper",
                so.element(),
                so.plugin
            )));
        }
        let dev = so.udev_path.clone().ok_or_else(|| {
            Error::Invalid(format!("{role} {} has no udev_path set", so.element()))
        })?;
        if !so.enabled {
            return Err(Error::Invalid(format!(
                "{role} {} is not enabled",
                so.element()
            )));
        }
        let sectors = self.dm.size_sectors(std::path::Path::new(&dev))?;
        Ok(Resolved { so, sectors })
    }

    /// Suspend `name`, load `table`, resume. On failure the device is left resumed with its
    /// old table.
    pub fn swap_table(&self, name: &DmName, table: &[TableLine]) -> Result<()> {
        self.swap_table_checked(name, false, table, || Ok(()))
    }

    /// [`Self::swap_table`], the suspend `noflush` if asked, and `check` run while `name` is
    /// suspended: if it fails, nothing is loaded.
    pub(crate) fn swap_table_checked(
        &self,
        name: &DmName,
        noflush: bool,
        table: &[TableLine],
        check: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        self.dm.suspend(name, noflush, self.opts.suspend_timeout)?;
        if let Err(e) = check().and_then(|()| self.dm.load(name, table)) {
            self.resume_after_failure(name);
            return Err(e);
        }
        if let Err(e) = self.dm.resume(name) {
            let _ = self.dm.clear(name);
            self.resume_after_failure(name);
            return Err(e);
        }
        Ok(())
    }

    fn resume_after_failure(&self, name: &DmName) {
        if let Err(e) = self.dm.resume(name) {
            warn!(device = %name, error = %e, "could not resume after a failed table swap");
        }
    }

    /// The device number of one of our devices.
    pub fn devno(&self, name: &DmName) -> Result<Devno> {
        self.dm
            .info(name)?
            .map(|d| d.devno())
            .ok_or_else(|| Error::Other(format!("device {name} is missing")))
    }

    /// A one-line linear table over `devno`.
    pub fn linear(devno: Devno, sectors: Sectors) -> Vec<TableLine> {
        vec![TableLine {
            start: Sectors(0),
            length: sectors,
            target: Target::Linear(LinearParams {
                device: devno.to_string(),
                offset: 0,
            }),
        }]
    }

    /// Write zeros over the first `len` of a device we own (COW header, raid metadata).
    pub fn zero_head(&self, name: &DmName, len: Sectors) -> Result<()> {
        use std::io::{Seek, SeekFrom, Write};
        let bytes = usize::try_from(len.bytes())
            .map_err(|_| Error::Invalid(format!("cannot zero {len} sectors at once")))?;
        let path = self.dm.device_path(name)?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("open", &path, e))?;
        f.seek(SeekFrom::Start(0))
            .map_err(|e| Error::io("seek", &path, e))?;
        f.write_all(&vec![0u8; bytes])
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::io_value("write zeros to", &path, &format!("{bytes} bytes"), e))?;
        info!(device = %name, path = %path.display(), bytes, "zeroed device head");
        Ok(())
    }
}

/// Log what [`state::restore_devices`] did.
pub(crate) fn report_restored(r: &state::Restored) {
    info!(
        created = r.created.len(),
        present = r.present.len(),
        degraded = r.degraded.len(),
        failed = r.failed.len(),
        "saved devices restored"
    );
    for (name, why) in &r.failed {
        warn!(device = %name, reason = %why, "saved device not re-created");
    }
}

fn validate_copy_type(ct: u16) -> Result<CopyType> {
    match ct {
        32768..=65535 => Err(Error::NotSupported(format!(
            "CopyType {ct} is in the vendor-specific range; no vendor copy types are implemented"
        ))),
        _ => CopyType::from_value(ct).ok_or_else(|| {
            Error::Invalid(format!(
                "CopyType {ct} is not valid: use 2 Async, 3 Sync, 4 UnSyncAssoc or 5 UnSyncUnAssoc"
            ))
        }),
    }
}

/// What a successful AttachReplica returns.
pub(crate) struct Attached {
    pub code: ReturnCode,
    pub job: Option<String>,
    pub relationship: Option<String>,
}

impl Engine {
    /// Build the engine and rediscover relationships from the kernel.
    pub fn new(cfs: ConfigFs, dm: Arc<dyn DmBackend>, opts: Options) -> Result<Engine> {
        Self::with_jobs(cfs, dm, opts, JobManager::new())
    }

    pub fn with_jobs(
        cfs: ConfigFs,
        dm: Arc<dyn DmBackend>,
        opts: Options,
        jobs: JobManager,
    ) -> Result<Engine> {
        let boot_id = opts.boot_id.clone().unwrap_or_else(state::current_boot_id);
        let engine = Engine {
            inner: Arc::new(Inner {
                cfs,
                dm,
                jobs,
                journal: journal::Journal::new(opts.state_dir.clone()),
                opts,
                kernel: Mutex::new(()),
                claims: Mutex::new(BTreeSet::new()),
                rels: relationship::Registry::default(),
                saved: Mutex::new(None),
                saving: std::sync::atomic::AtomicBool::new(false),
                boot_id,
            }),
        };
        let i = &*engine.inner;
        // after a reboot: the devices first (if `restore-devices` did not run at boot)
        let mut saved = match &i.opts.state_dir {
            Some(dir) => state::load(dir)?,
            None => None,
        };
        if let (Some(st), Some(dir)) = (saved.as_mut(), &i.opts.state_dir) {
            if st.boot_id != i.boot_id {
                warn!(
                    "the saved devices were not re-created at boot: doing it now (run \
                     `lio-replica restore-devices` before target.service; see the README)"
                );
                report_restored(&state::restore_devices(&*i.dm, st, dir)?);
                st.lio_pending = true;
            }
        }
        let found = relationship::rediscover(&engine)?;
        recovery::recover(&engine)?;
        relationship::resume_all(&engine, &found)?;
        {
            // a stack whose relationships did not come back (after a reboot without a
            // target disk) serves its source straight from its disk again
            let _k = i.kernel_lock();
            relationship::collapse_unused_stacks(i)?;
        }
        let mut lio_pending = false;
        if let Some(st) = saved.as_ref().filter(|s| s.lio_pending) {
            let _k = i.kernel_lock();
            lio_pending = state::restore_lio(&i.cfs, &*i.dm, st)? > 0;
        }
        *i.saved.lock().unwrap() = saved;
        i.saving.store(true, std::sync::atomic::Ordering::Release);
        i.save_state();
        if lio_pending {
            // what could not be restored is tried again at the next start
            let mut s = i.saved.lock().unwrap();
            if let (Some(dir), Some(st)) = (&i.opts.state_dir, s.as_mut()) {
                st.lio_pending = true;
                state::save(dir, st)?;
            }
        }
        Ok(engine)
    }

    pub fn jobs(&self) -> &JobManager {
        &self.inner.jobs
    }

    fn attach(&self, source: &str, target: &str, ct: u16) -> Result<Attached> {
        let ct = validate_copy_type(ct)?;
        let i = &*self.inner;
        if target.trim().is_empty() {
            return Err(Error::Invalid("missing TargetElement".into()));
        }
        let skey = Element::parse(source)?;
        let tkey = Element::parse(target)?;
        if skey == tkey {
            return Err(Error::Invalid(format!(
                "source and target are the same element {skey}"
            )));
        }
        let _claim = i.claim(&[skey.clone(), tkey.clone()])?;
        let _k = i.kernel_lock();
        let src = i.resolve(&skey, "source")?;
        let tgt = i.resolve(&tkey, "target")?;
        let lc = relationship::lifecycle(ct);
        if let Some(why) = i.refuse_attach(&src, &tgt, ct, lc) {
            return Err(Error::InUse(why));
        }
        let exports = i.cfs.exports_of(&tgt.so)?;
        if let Some(e) = exports.first() {
            return Err(Error::InUse(format!(
                "target {} is exported through {}/{}/tpgt_{}/lun_{}; remove the LUN first, \
                 the replica's contents will be overwritten",
                tgt.so.element(),
                e.fabric,
                e.wwn,
                e.tpg_tag,
                e.lun
            )));
        }
        if tgt.sectors < src.sectors {
            return Err(Error::Invalid(format!(
                "target {} ({} sectors) is smaller than source {} ({} sectors)",
                tgt.so.element(),
                tgt.sectors,
                src.so.element(),
                src.sectors
            )));
        }
        let span = info_span!("attach", source = %skey, target = %tkey, copy_type = ct.value());
        let _s = span.enter();
        let record = i.journal.record(
            "attach",
            &tgt.so.name,
            &journal::Intent::Attach {
                source: src.so.name.clone(),
                target: Some(tgt.so.name.clone()),
                copy_type: ct.value(),
            },
        )?;
        let out = lc.attach(self, src, tgt);
        // done or rolled back: the record has served; after a failed rollback it stays for
        // the next start to finish
        if !matches!(out, Err(Error::RollbackFailed { .. })) {
            record.done()?;
        }
        out
    }

    fn modify(&self, rel_id: &str, op: u16, force: bool) -> Result<Attached> {
        let i = &*self.inner;
        let named = i.named_relationship(rel_id)?;
        let _claim = i.claim(&[named.source.clone(), named.target.clone()])?;
        // Read again under the claim: another request may have ended or changed it between
        // the lookup and the claim (and a stale copy would act on a stack that is gone).
        let rel = i.relationship(&named.id).ok_or_else(|| {
            Error::NotFound(format!(
                "relationship {} ended while this request waited for it",
                named.id
            ))
        })?;
        if let Some(job) = rel.job.as_ref().and_then(|j| i.jobs.get(j)) {
            if !crate::service::JobState::is_final(job_state(&job)) {
                return Err(Error::InUse(format!(
                    "job {} is still working on relationship {}; wait for it or terminate it",
                    job.instance_id, rel.id
                )));
            }
        }
        let _k = i.kernel_lock();
        let span = info_span!("modify", relationship = %rel.id, operation = op);
        let _s = span.enter();
        use crate::cim::Operation;
        let Some(op) = Operation::from_value(op) else {
            return Err(Error::Invalid(format!(
                "operation {op} is not valid: use 2 Detach, 3 Fracture, 4 Resync, 5 Restore, \
                 10 Reset To Sync, 11 Reset To Async"
            )));
        };
        match op {
            Operation::Detach => {
                rel.lifecycle().teardown(i, &rel)?;
                Ok(Attached {
                    code: ReturnCode::Completed,
                    job: None,
                    relationship: Some(rel.id.clone()),
                })
            }
            Operation::ResetToSync | Operation::ResetToAsync => mode::reset(self, &rel, op),
            _ => rel.lifecycle().modify(self, &rel, op, force),
        }
    }

    /// Put a storage object on a shim device of ours (idempotent).
    pub fn adopt_element(&self, element: &str) -> Result<StorageObject> {
        let i = &*self.inner;
        let key = Element::parse(element)?;
        let _claim = i.claim(std::slice::from_ref(&key))?;
        let _k = i.kernel_lock();
        let el = i.resolve(&key, "element")?;
        let b = adopt::adopt(i, &el)?;
        Ok(b.so)
    }
}

pub(crate) fn job_state(v: &JobView) -> crate::service::JobState {
    use crate::service::JobState::*;
    match v.job_state {
        2 => New,
        3 => Starting,
        4 => Running,
        5 => Suspended,
        7 => Completed,
        8 => Terminated,
        9 => Killed,
        _ => Exception,
    }
}

impl Service for Engine {
    fn attach_replica(&self, source: &str, target: &str, copy_type: u16) -> MethodResult {
        match self.attach(source, target, copy_type) {
            Ok(a) => MethodResult::ok(a.code, a.job, a.relationship),
            Err(e) => {
                warn!(source, target, copy_type, error = %e, code = e.return_code().value(), "AttachReplica refused");
                MethodResult::error(&e)
            }
        }
    }

    fn modify_synchronization(
        &self,
        relationship: &str,
        operation: u16,
        force: bool,
    ) -> MethodResult {
        match self.modify(relationship, operation, force) {
            Ok(a) => MethodResult::ok(a.code, a.job, a.relationship),
            Err(e) => {
                warn!(relationship, operation, error = %e, "ModifySynchronization refused");
                MethodResult::error(&e)
            }
        }
    }

    fn jobs(&self) -> Vec<JobView> {
        self.inner.jobs.list()
    }

    fn job(&self, id: &str) -> Option<JobView> {
        self.inner.jobs.get(id)
    }

    fn request_state_change(&self, id: &str, requested_state: u16) -> MethodResult {
        match self
            .inner
            .jobs
            .request_stop(id, requested_state, self.inner.opts.stop_wait)
        {
            Ok(v) => MethodResult::ok(ReturnCode::Completed, Some(v.instance_id), v.relationship),
            Err(e) => MethodResult::error(&e),
        }
    }

    fn get_error(&self, id: &str) -> Option<Option<String>> {
        self.inner.jobs.get(id).map(|v| v.error_description)
    }

    fn relationships(&self) -> Result<Vec<RelationshipView>> {
        let rels = self.inner.rels.all();
        Ok(rels
            .iter()
            .map(|r| relationship::view(&self.inner, r))
            .collect())
    }

    fn storage_objects(&self) -> Result<Vec<StorageObjectView>> {
        let i = &*self.inner;
        // one pass over the LUNs, their links only: (hba, name) -> the LUNs exporting it
        let mut exports: HashMap<(String, String), Vec<String>> = HashMap::new();
        for l in i.cfs.lun_links()? {
            let lun = format!("{}/{}/tpgt_{}/lun_{}", l.fabric, l.wwn, l.tpg_tag, l.lun);
            exports.entry(l.storage_object).or_default().push(lun);
        }
        // our shims, listed once: object name -> the shim's device number
        let ours: BTreeMap<String, Devno> =
            i.dm.list()?
                .into_iter()
                .filter_map(|d| {
                    let n = names::shim_object(&d.name)?;
                    Some((n, d.devno()))
                })
                .collect();
        // element -> the relationship it is part of (the first by id, should there be two)
        let mut rel_of: HashMap<Element, String> = HashMap::new();
        for r in i.rels.all() {
            for el in [&r.source, &r.target] {
                rel_of.entry(el.clone()).or_insert_with(|| r.id.clone());
            }
        }
        let objects = i.cfs.storage_objects()?;
        // what only the block device tells: an iblock object's size (an open and an ioctl
        // each, so on several threads), and for an object named like one of our shims
        // whether it runs on it
        let from_device = crate::par::map(&objects, 64, |so| {
            let dev = so.udev_path.as_deref().map(std::path::Path::new);
            let size_bytes = so.size_bytes.or_else(|| {
                dev.and_then(|p| i.dm.size_sectors(p).ok())
                    .map(Sectors::bytes)
            });
            let adopted = so.plugin.can_replicate()
                && ours
                    .get(&so.name)
                    .is_some_and(|devno| adopt::runs_on(&*i.dm, so.udev_path.as_deref(), *devno));
            // what initiators see; read here, not by the listing, which reads no attributes
            let block_size = i.cfs.block_size(so);
            (size_bytes, adopted, block_size)
        });
        Ok(objects
            .into_iter()
            .zip(from_device)
            .map(|(so, (size_bytes, adopted, block_size))| {
                let element = so.element();
                let relationship = rel_of.get(&element).cloned();
                let key = (so.hba, so.name);
                let exported_by = exports.remove(&key).unwrap_or_default();
                let (hba, name) = key;
                StorageObjectView {
                    element: element.to_string(),
                    plugin: so.plugin.to_string(),
                    name,
                    hba,
                    device: so.udev_path,
                    size_bytes,
                    block_size,
                    wwn: so.wwn,
                    enabled: so.enabled,
                    readonly: so.readonly,
                    exported_by,
                    adopted,
                    relationship,
                }
            })
            .collect())
    }

    fn adopt(&self, element: &str) -> MethodResult {
        match self.adopt_element(element) {
            Ok(_) => MethodResult::ok(ReturnCode::Completed, None, None),
            Err(e) => MethodResult::error(&e),
        }
    }
}

/// Build the engine behind the API.
/// `lio-replica restore-devices`: re-create the saved devices unless this boot already has
/// (the state says so), and mark the storage objects as still to be restored by the daemon.
pub fn restore_devices_at_boot(
    state_dir: &std::path::Path,
    configfs_root: &std::path::Path,
) -> anyhow::Result<state::Restored> {
    use anyhow::Context;
    let Some(mut st) = state::load(state_dir)? else {
        info!(dir = %state_dir.display(), "no saved state: nothing to restore");
        return Ok(state::Restored::default());
    };
    let boot = state::current_boot_id();
    if st.boot_id == boot {
        info!("the saved state is this boot's own: nothing to restore");
        return Ok(state::Restored::default());
    }
    let dm = crate::dm::KernelDm::new().context("opening device-mapper control")?;
    let r = state::restore_devices(&dm, &st, state_dir)?;
    report_restored(&r);
    // this boot's numbers from now on; the objects stay as saved until the daemon made them
    let cfs = ConfigFs::new(configfs_root.to_path_buf());
    let mut now = state::capture(&cfs, &dm, &boot, Some(&st))?;
    now.objects = std::mem::take(&mut st.objects);
    now.lio_pending = true;
    state::save(state_dir, &now)?;
    Ok(r)
}

pub fn build_service(cfg: &ServeConfig) -> anyhow::Result<Arc<dyn Service>> {
    use anyhow::Context;
    let (ops, dm): (Arc<dyn crate::configfs::FsOps>, Arc<dyn DmBackend>) = match cfg.dm {
        DmChoice::Kernel => (
            Arc::new(crate::configfs::RealFs),
            Arc::new(crate::dm::KernelDm::new().context("opening device-mapper control")?),
        ),
        // the simulation: a plain directory that behaves like configfs (made if missing), and
        // device-mapper in memory; regular files stand in for disks
        DmChoice::Sim => {
            use crate::configfs::fake::FakeFs;
            let fresh = !cfg.configfs_root.join("core").is_dir();
            if fresh {
                FakeFs::create_root(&cfg.configfs_root).with_context(|| {
                    format!(
                        "creating a simulated configfs at {}",
                        cfg.configfs_root.display()
                    )
                })?;
            }
            let ops = Arc::new(FakeFs::with_root(&cfg.configfs_root));
            if fresh {
                let cfs = ConfigFs::with_ops(
                    cfg.configfs_root.clone(),
                    ops.clone(),
                    cfg.lock_path.clone(),
                );
                seed_simulation(&cfs).context("seeding the simulated target")?;
            }
            (ops, Arc::new(crate::dm::SimDm::new()))
        }
    };
    let cfs = ConfigFs::with_ops(cfg.configfs_root.clone(), ops, cfg.lock_path.clone());
    let opts = Options {
        state_dir: cfg.state_dir.clone(),
        ..Options::default()
    };
    let engine = Engine::new(cfs, dm, opts).context("starting the engine")?;
    Ok(Arc::new(engine))
}

/// A new simulated target: four sparse disk images beside the configfs root, a block
/// backstore on each (`disk0`..`disk3`), `disk0` exported as LUN 0 of an iSCSI target.
/// `disk0` and `disk1` have 64 MiB; `disk2` and `disk3` 72 MiB, the room an Async copy of
/// `disk0` needs for its metadata.
fn seed_simulation(cfs: &ConfigFs) -> Result<()> {
    let dir = cfs.root().parent().unwrap_or(cfs.root()).join("sim-disks");
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
    for k in 0..4 {
        let img = dir.join(format!("disk{k}.img"));
        std::fs::File::create(&img)
            .and_then(|f| f.set_len(if k < 2 { 64 << 20 } else { 72 << 20 }))
            .map_err(|e| Error::io("create", &img, e))?;
        let so = cfs.create_iblock(&crate::configfs::IblockSpec {
            name: format!("disk{k}"),
            hba: None,
            dev: img,
            wwn: Some(format!("5e2e0000-0000-4000-8000-00000000000{k}")),
            readonly: false,
            attributes: BTreeMap::new(),
        })?;
        if k == 0 {
            let tpg = cfs.create_tpg("iscsi", "iqn.2003-01.org.linux-iscsi.sim:disk0", 1)?;
            cfs.create_lun(&tpg, 0, &so, "lnk0")?;
            cfs.set_tpg_enabled(&tpg, true)?;
        }
    }
    info!(root = %cfs.root().display(), "seeded a simulated target with disk0..disk3");
    Ok(())
}
