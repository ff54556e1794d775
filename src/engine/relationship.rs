//! Relationships (CIM_StorageSynchronized): what the kernel holds, how its state is read,
//! how they end, and how they are found again when the daemon starts.
//!
//! A relationship is recorded in the kernel by a two-sector device `recCT-TARGET` whose table
//! points at the target's raw device, then at the source's; with the shims' tables this is all
//! that is needed to rebuild it after a daemon restart. A relationship found broken (its
//! target leg failed and was dropped) is marked in that record by a third, `error` sector, so
//! it stays Broken across a restart.
//!
//! A source may be in several relationships at once (see [`super::stack`]): any number of
//! snapshots, and one relationship whose table replicates in its real device (a Sync or Async
//! mirror, or a running clone). Each copy type's whole life is one [`Lifecycle`]; what the
//! mirror types share is here.
//!
//! dm-mirror with `handle_errors` does not drop a failed leg by itself: it marks the leg
//! (health `D`, or `S` when the failure hit the resync), raises an event and holds every
//! write from then on until userspace reloads the table; a suspend with flush would fail the
//! held writes, a `noflush` suspend requeues them to the next table. So a Sync relationship's
//! mirror is followed all the time: by its job while it resynchronises, by a watcher thread
//! afterwards; either drops a failed target leg at once (the source back on `linear`,
//! suspended with `noflush`) and the held writes complete on the source.

use super::adopt::{self, Backing};
use super::plan::Plan;
use super::stack::{self, Stack};
use super::{names, Attached, Engine, Inner, Resolved};
use crate::cim::Operation;
use crate::dm::table::RaidDevice;
use crate::dm::{Devno, DmName, Sectors};
use crate::dm::{
    LinearParams, MirrorParams, MirrorStatus, RaidParams, RaidStatus, TableLine, Target,
};
use crate::error::{Error, Result, ReturnCode};
use crate::jobs::{JobCtx, JobSpec, JobStop};
use crate::names::{Element, Plugin};
use crate::service::{CopyType, RelationshipView, SyncState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tracing::{info, warn};

#[derive(Debug, Clone, PartialEq)]
pub struct Relationship {
    /// `SOURCE/TARGET` (storage object names)
    pub id: String,
    /// `/backstores/block/SOURCE`
    pub source: Element,
    pub target: Element,
    pub source_name: String,
    pub target_name: String,
    pub copy_type: CopyType,
    pub src_shim: DmName,
    /// The source's real device (see [`super::stack`]): where mirror and raid tables live.
    pub real: DmName,
    /// The device whose table replicates for this relationship: the real device, or for a
    /// full copy beside an Async mirror the copy device under the raid1's source leg.
    pub table_dev: DmName,
    pub tgt_shim: DmName,
    pub tag: DmName,
    /// The raw devices
    pub src_raw: Devno,
    pub tgt_raw: Devno,
    /// source size
    pub sectors: Sectors,
    /// target size (its shim's linear table spans it all)
    pub target_sectors: Sectors,
    pub job: Option<String>,
    pub when_synced: Option<u64>,
    /// Why the relationship is broken, when a job or the watcher found out (or the record
    /// says so).
    pub broken: Option<String>,
    /// The watcher allowed to follow this relationship's mirror (0: none); a watcher whose
    /// token is no longer here stops.
    pub watch: u64,
    /// Sectors written to the target's shim (through its own LUN, around the raid1), as this
    /// daemon saw them when the raid1 began to replicate and at a Fracture. A Resync after a
    /// Fracture or a target leg that failed and came back copies only what the bitmap says
    /// when that count has not moved since. `None` (a `mirror`, or the daemon restarted
    /// since): Resync copies everything.
    pub target_writes: Option<u64>,
    /// Whether it replicates in a dm-raid raid1 whose metadata (superblocks and write-intent
    /// bitmap) is carved from the target's tail: every Async mirror, and a Sync mirror whose
    /// target has that room. Such a mirror tracks what changes while a leg is out (Fracture,
    /// a failed target, a reboot) and copies only that. A Sync mirror on a same-size target
    /// is a dm `mirror`, whose region log lives in memory: it copies everything again.
    pub raid: bool,
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Relationship {
    pub(crate) fn new(ct: CopyType, src: &Backing, tgt: &Backing) -> Result<Relationship> {
        Ok(Relationship {
            id: format!("{}/{}", src.so.name, tgt.so.name),
            source: src.so.element(),
            target: tgt.so.element(),
            source_name: src.so.name.clone(),
            target_name: tgt.so.name.clone(),
            copy_type: ct,
            src_shim: src.shim.clone(),
            real: names::real(&src.so.name)?,
            table_dev: names::real(&src.so.name)?,
            tgt_shim: tgt.shim.clone(),
            tag: names::tag(ct, &tgt.so.name)?,
            src_raw: src.raw,
            tgt_raw: tgt.raw,
            sectors: src.sectors,
            target_sectors: tgt.sectors,
            job: None,
            when_synced: None,
            broken: None,
            watch: 0,
            target_writes: None,
            raid: ct == CopyType::Async,
        })
    }

    pub(crate) fn meta_names(&self) -> Result<[DmName; 2]> {
        Ok([
            names::meta(0, &self.source_name)?,
            names::meta(1, &self.source_name)?,
        ])
    }

    pub(crate) fn stack(&self) -> Stack {
        Stack {
            shim: self.src_shim.clone(),
            real: self.real.clone(),
            raw: self.src_raw,
            sectors: self.sectors,
        }
    }

    pub(crate) fn lifecycle(&self) -> &'static dyn Lifecycle {
        lifecycle(self.copy_type)
    }
}

/// The relationships this daemon knows, by InstanceID, behind their own lock: every method
/// takes it for one short look or change and hands copies out, so no caller holds it while
/// it works on the kernel.
#[derive(Default)]
pub(crate) struct Registry(std::sync::Mutex<std::collections::BTreeMap<String, Relationship>>);

impl Registry {
    fn map(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, Relationship>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, id: &str) -> Option<Relationship> {
        self.map().get(id).cloned()
    }

    /// Every relationship, by InstanceID.
    pub fn all(&self) -> Vec<Relationship> {
        self.map().values().cloned().collect()
    }

    /// The relationships for which `f` holds, by InstanceID.
    pub fn filter(&self, f: impl Fn(&Relationship) -> bool) -> Vec<Relationship> {
        self.map().values().filter(|r| f(r)).cloned().collect()
    }

    pub fn any(&self, f: impl Fn(&Relationship) -> bool) -> bool {
        self.map().values().any(f)
    }

    /// Change the relationship `id` if it is still there; what `f` returns, if it was.
    pub fn update<T>(&self, id: &str, f: impl FnOnce(&mut Relationship) -> T) -> Option<T> {
        self.map().get_mut(id).map(f)
    }

    fn insert(&self, rel: Relationship) {
        self.map().insert(rel.id.clone(), rel);
    }

    fn remove(&self, id: &str) {
        self.map().remove(id);
    }

    /// Start a job for `id` and record it there, with the registry held meanwhile so that the
    /// job sees its own id recorded when it first looks.
    pub fn with_job(&self, id: &str, submit: impl FnOnce() -> String) -> String {
        let mut map = self.map();
        let job = submit();
        if let Some(r) = map.get_mut(id) {
            r.job = Some(job.clone());
        }
        job
    }
}

/// One copy type's whole life: how it is built, what it lets ModifySynchronization do, how
/// it ends, how its state is read from the kernel and what happens once the daemon finds it
/// again after a restart.
pub(crate) trait Lifecycle: Sync {
    /// AttachReplica: build it in the kernel (rolled back entirely on failure), register it
    /// and start what follows it.
    fn attach(&self, e: &Engine, src: Resolved, tgt: Resolved) -> Result<Attached>;
    /// A ModifySynchronization operation other than Detach (already checked to be one of
    /// the operations the API knows).
    fn modify(
        &self,
        e: &Engine,
        rel: &Relationship,
        op: Operation,
        force: bool,
    ) -> Result<Attached>;
    /// Detach, or the end of a copy: undo it in the kernel and forget it; the source's other
    /// relationships stay exactly as they are. (The mirror types' way unless overridden.)
    fn teardown(&self, i: &Inner, rel: &Relationship) -> Result<()> {
        teardown_mirror(i, rel)
    }
    /// Its state, read from the kernel now. (The mirror types' way unless overridden.)
    fn live_state(
        &self,
        i: &Inner,
        rel: &Relationship,
        v: &mut RelationshipView,
    ) -> Result<SyncState> {
        mirror_state(i, rel, v)
    }
    /// The daemon (re)started and found it in the kernel: follow it again.
    fn resume(&self, e: &Engine, rel: &Relationship) -> Result<()>;
    /// Whether its table takes the source's real device (see [`can_share_real`]).
    fn replicates_in_real(&self) -> bool;
    /// Devices of its own beside the record (raid metadata), removed when it ends and
    /// cleared for a full resync.
    fn metadata(&self, _rel: &Relationship) -> Result<Vec<DmName>> {
        Ok(Vec::new())
    }
    /// Its job saw the replicating table in sync and ends; the relationship stays.
    fn once_synced(&self, _e: &Engine, _rel: &Relationship) {}
    /// The most writes its target may lag behind while it replicates, if it may.
    fn max_lag_writes(&self, _i: &Inner) -> Option<u32> {
        None
    }
    /// Its state while its table replicates and no leg failed (mirror types).
    fn replicating_state(&self, pr: &Progress, v: &mut RelationshipView) -> SyncState {
        if pr.synced {
            SyncState::Synchronized
        } else {
            v.progress_status = Some(format!("resynchronising, {}%", pr.percent));
            SyncState::ResyncInProgress
        }
    }
    /// Whether the target is kept up to date (CIM SyncMaintained).
    fn maintained(&self) -> bool;
    /// With the kernel lock held: the source's leg of its mirror failed (and no other copy
    /// shares the mirror); `target_healthy`: the kernel marks the target's leg healthy.
    /// Returns the reason once handled; `None` leaves the mirror as the kernel keeps it.
    fn source_leg_failed(
        &self,
        _i: &Inner,
        _rel: &Relationship,
        _why: &str,
        _target_healthy: bool,
    ) -> Result<Option<String>> {
        Ok(None)
    }
}

pub(crate) fn lifecycle(ct: CopyType) -> &'static dyn Lifecycle {
    match ct {
        CopyType::Async => &super::async_copy::AsyncMirror,
        CopyType::Sync => &super::sync::SyncMirror,
        CopyType::UnSyncAssoc => &super::snapshot::Snapshot,
        CopyType::UnSyncUnAssoc => &super::clone::FullCopy,
    }
}

/// The record device's table: one sector pointing at the target's raw device, one at the
/// source's, and a third, `error` sector when the relationship is broken.
fn record_table(rel: &Relationship, broken: bool) -> Vec<TableLine> {
    let sector = |start, device: Devno| {
        TableLine::new(
            Sectors(start),
            Sectors(1),
            Target::Linear(LinearParams {
                device: device.to_string(),
                offset: 0,
            }),
        )
    };
    let mut table = vec![sector(0, rel.tgt_raw), sector(1, rel.src_raw)];
    if broken {
        table.push(TableLine::new(Sectors(2), Sectors(1), Target::Error));
    }
    table
}

/// (target's raw device, source's raw device) a record points at.
pub(crate) fn record_devices(table: &[TableLine]) -> Option<(Devno, Devno)> {
    match (
        table.first().map(|l| &l.target),
        table.get(1).map(|l| &l.target),
    ) {
        (Some(Target::Linear(t)), Some(Target::Linear(s))) => {
            Some((t.device.parse().ok()?, s.device.parse().ok()?))
        }
        _ => None,
    }
}

/// Whether the record device says the relationship is broken.
fn record_says_broken(table: &[TableLine]) -> bool {
    table.iter().any(|l| matches!(l.target, Target::Error))
}

/// Mark the record broken (or whole again).
pub(crate) fn mark_record(i: &Inner, rel: &Relationship, broken: bool) -> Result<()> {
    i.swap_table(&rel.tag, &record_table(rel, broken))?;
    info!(device = %rel.tag, relationship = %rel.id, broken, "relationship record marked");
    Ok(())
}

/// Create the record device as a plan step.
pub(crate) fn create_tag_step<'a>(
    i: &'a Inner,
    rel: &Relationship,
    p: &mut Plan<'a>,
) -> Result<()> {
    let table = record_table(rel, false);
    let tag = rel.tag.clone();
    let tag2 = tag.clone();
    p.step(
        format!("create {tag}"),
        || i.dm.create(&tag, &table).map(|_| ()),
        move || i.dm.remove(&tag2),
    )
}

/// The mirror-type relationships a source's real device replicates for, the maintained one
/// (Sync or Async) first: at most a maintained mirror and a running full copy.
pub(crate) fn replicating(i: &Inner, source_name: &str) -> Vec<Relationship> {
    // A broken `mirror` relationship has lost its leg (its source rests on one disk), and one
    // whose LUN moved onto its target's disk has nothing left to copy: the tables the other
    // relationships of the source change must not bring them back.
    let mut v: Vec<Relationship> = i.rels.filter(|r| {
        r.source_name == source_name
            && r.lifecycle().replicates_in_real()
            && r.src_raw != r.tgt_raw
            && (r.raid || r.broken.is_none())
    });
    v.sort_by_key(|r| r.copy_type == CopyType::UnSyncUnAssoc);
    v
}

/// Whether a relationship of copy type `new` can join one of type `old` on a source: a Sync
/// mirror and a full copy share one mirror with a leg for each; a full copy added to an Async
/// mirror replicates in a copy device under the raid1's source leg (see [`super::clone`]).
/// The raid1 is not put over a running copy: that would restart the copy under it.
pub(crate) fn can_share_real(old: CopyType, new: CopyType) -> bool {
    matches!(
        (old, new),
        (CopyType::Sync, CopyType::UnSyncUnAssoc)
            | (CopyType::UnSyncUnAssoc, CopyType::Sync)
            | (CopyType::Async, CopyType::UnSyncUnAssoc)
    )
}

/// The real device's table for these relationships of one source: `linear` with none, the
/// raid1 of an Async one, otherwise one `mirror` whose legs are the source then each target.
/// A full copy in a copy device takes no leg here: the copy device replaces the source's disk.
/// `nosync`: every leg already holds the source's data (a leg was just taken away from a mirror
/// in sync).
pub(crate) fn real_table(
    i: &Inner,
    st: &Stack,
    rels: &[Relationship],
    nosync: bool,
) -> Result<Vec<TableLine>> {
    // a full copy replicating in a copy device below: that device stands for the source's disk
    let (here, below): (Vec<&Relationship>, Vec<&Relationship>) =
        rels.iter().partition(|r| r.table_dev == st.real);
    let base = match below.first() {
        Some(r) => i.devno(&r.table_dev)?,
        None => st.raw,
    };
    match here.as_slice() {
        [] => Ok(Inner::linear(base, st.sectors)),
        [r] if r.raid => {
            let [m0, m1] = r.meta_names()?;
            let mut t = raid_table(i, r, [i.devno(&m0)?, i.devno(&m1)?], base);
            // a change-tracked fracture stays one while other relationships change the table
            if raid_fractured(&i.dm.table(&st.real)?) {
                leave_out_target_leg(&mut t);
            }
            Ok(t)
        }
        _ => {
            let targets: Vec<Devno> = here.iter().map(|r| r.tgt_raw).collect();
            Ok(mirror_table(i, base, &targets, st.sectors, nosync))
        }
    }
}

/// A `mirror` of `sectors` whose first leg is `base` and whose other legs are `targets`,
/// with `handle_errors` (see the module's notes).
pub(crate) fn mirror_table(
    i: &Inner,
    base: Devno,
    targets: &[Devno],
    sectors: Sectors,
    nosync: bool,
) -> Vec<TableLine> {
    let leg = |device: Devno| LinearParams {
        device: device.to_string(),
        offset: 0,
    };
    let legs = std::iter::once(leg(base))
        .chain(targets.iter().map(|t| leg(*t)))
        .collect();
    vec![TableLine::new(
        Sectors(0),
        sectors,
        Target::Mirror(MirrorParams {
            region_size: i.opts.mirror_region,
            nosync,
            legs,
            handle_errors: true,
        }),
    )]
}

/// The relationships of `rel`'s source that replicate in its real device, but `rel`.
fn others(i: &Inner, rel: &Relationship) -> Vec<Relationship> {
    replicating(i, &rel.source_name)
        .into_iter()
        .filter(|r| r.id != rel.id)
        .collect()
}

/// The real device's table once `rel` no longer replicates there; when every leg is in sync,
/// the legs that stay need no copy.
fn table_without(i: &Inner, rel: &Relationship) -> Result<Vec<TableLine>> {
    let rest = others(i, rel);
    let synced = !rest.is_empty() && progress(i, rel).is_ok_and(|p| p.synced && p.failed.is_none());
    real_table(i, &rel.stack(), &rest, synced)
}

/// dm-raid `max_recovery_rate` (KiB/s per device) for Async copies: md's global default
/// (`speed_limit_max`, 200 MB/s) would otherwise cap every initial copy and resync. md still
/// slows a resync down to `speed_limit_min` while the array serves other I/O, so initiators
/// keep their priority.
const RAID_MAX_RECOVERY_KIB: u64 = 4_000_000;

/// The raid1 of a relationship on one ([`Relationship::raid`]), its source leg on `base` (the
/// source's disk, or the copy device over it). Async: the target leg is `write_mostly`, so a
/// write completes once the source leg has it; Sync: a write completes on both legs.
///
/// No `rebuild`: the metadata devices say what each leg holds. Zeroed (a new relationship, a
/// Resync) they make a new array, which md resynchronises in full, reading from the leg that
/// is not write-mostly, the source; kept (a reload, a reboot) the array goes on from its
/// superblocks and write-intent bitmap instead of copying everything again, as `rebuild 1`
/// would make it.
pub(crate) fn raid_table(
    i: &Inner,
    rel: &Relationship,
    meta: [Devno; 2],
    base: Devno,
) -> Vec<TableLine> {
    let [m0, m1] = meta;
    vec![TableLine {
        start: Sectors(0),
        length: rel.sectors,
        target: Target::Raid(RaidParams {
            region_size: None,
            nosync: false,
            rebuild: Vec::new(),
            // (max_write_behind for Sync too: md keeps it in the bitmap's superblock from
            // the array's creation on, so that a Reset To Async needs only write_mostly)
            write_mostly: if rel.copy_type == CopyType::Async {
                vec![1]
            } else {
                Vec::new()
            },
            max_write_behind: Some(i.opts.max_write_behind),
            max_recovery_rate: Some(RAID_MAX_RECOVERY_KIB),
            devices: vec![
                RaidDevice {
                    meta: Some(m0.to_string()),
                    data: base.to_string(),
                },
                RaidDevice {
                    meta: Some(m1.to_string()),
                    data: rel.tgt_raw.to_string(),
                },
            ],
        }),
    }]
}

/// Whether a table is a raid1 whose target leg is left out (`- -`): a change-tracked
/// fracture.
pub(crate) fn raid_fractured(table: &[TableLine]) -> bool {
    matches!(table.first().map(|l| &l.target),
        Some(Target::Raid(r)) if r.devices.get(1).is_some_and(|d| d.data == "-"))
}

/// The raid1 `table` with its target leg left out: md keeps the source leg serving and sets
/// the bitmap bit of every region written from then on.
pub(crate) fn leave_out_target_leg(table: &mut [TableLine]) {
    set_target_leg(
        table,
        RaidDevice {
            meta: None,
            data: "-".into(),
        },
    );
}

/// The raid1 `table` of `rel` with its target leg (metadata and disk) in again.
fn put_back_target_leg(i: &Inner, rel: &Relationship, table: &mut [TableLine]) -> Result<()> {
    let [_, m1] = rel.meta_names()?;
    set_target_leg(
        table,
        RaidDevice {
            meta: Some(i.devno(&m1)?.to_string()),
            data: rel.tgt_raw.to_string(),
        },
    );
    Ok(())
}

fn set_target_leg(table: &mut [TableLine], leg: RaidDevice) {
    if let Some(Target::Raid(r)) = table.first_mut().map(|l| &mut l.target) {
        if let Some(d) = r.devices.get_mut(1) {
            *d = leg;
        }
    }
}

pub(crate) fn register(i: &Inner, rel: Relationship) {
    info!(relationship = %rel.id, copy_type = ?rel.copy_type, "relationship recorded");
    i.rels.insert(rel);
}

fn unregister(i: &Inner, id: &str) {
    i.rels.remove(id);
}

/// Progress of a replicating table, read from the kernel.
pub(crate) struct Progress {
    pub percent: u16,
    pub synced: bool,
    pub failed: Option<String>,
    pub replicating: bool,
}

pub(crate) fn progress(i: &Inner, rel: &Relationship) -> Result<Progress> {
    let st = i.dm.status(&rel.table_dev)?;
    let line = st
        .first()
        .ok_or_else(|| Error::Other(format!("{} has no status", rel.table_dev)))?;
    // (percent, in sync, failed leg, leg's device, health) of a replicating table
    let (percent, synced, failed_leg, device, health) = match line.target_type.as_str() {
        "mirror" => {
            let s = MirrorStatus::parse(&line.params)?;
            let leg = failed_legs_of(&s, rel).first().copied();
            let dev = leg.and_then(|l| s.devices.get(l).cloned());
            (s.percent(), s.is_synced(), leg, dev, s.health)
        }
        "raid" => {
            let s = RaidStatus::parse(&line.params)?;
            if s.health.get(1) == Some(&'-') {
                // the target leg left out: a change-tracked fracture
                return Ok(Progress {
                    percent: 0,
                    synced: false,
                    failed: None,
                    replicating: false,
                });
            }
            let leg = s.health.iter().position(|c| *c == 'D');
            (s.percent(), s.is_synced(), leg, None, s.health)
        }
        _ => {
            return Ok(Progress {
                percent: 0,
                synced: false,
                failed: None,
                replicating: false,
            })
        }
    };
    let raid = line.target_type == "raid";
    let failed = failed_leg.map(|leg| {
        // a raid1 degrades by itself: say which disk is gone and what serves
        let serving = match (raid, leg) {
            (true, 0) => {
                " (the source's disk): the LUN is served from the target's disk alone; once \
                 the source's disk is back or replaced, Restore (Operation 5) copies the \
                 target onto it"
            }
            (true, _) => {
                " (the target's disk): the source's disk serves alone; once the target's disk \
                 is back, Resync copies it again"
            }
            _ => "",
        };
        format!(
            "{} leg {leg}{} failed: health {}{serving}",
            line.target_type,
            device.map(|d| format!(" ({d})")).unwrap_or_default(),
            health.iter().collect::<String>()
        )
    });
    Ok(Progress {
        percent: percent.into(),
        synced,
        failed,
        replicating: true,
    })
}

/// Put `table` into the source's real device. Leaving a `mirror`, the suspend is `noflush`:
/// writes the mirror holds for a failed leg are requeued to the new table instead of failing.
pub(crate) fn swap_real(i: &Inner, rel: &Relationship, table: &[TableLine]) -> Result<()> {
    swap_replicating(i, &rel.real, table)
}

/// Put `table` into `dev`, which may hold a `mirror` (then suspended `noflush`, as in
/// [`swap_real`]).
pub(crate) fn swap_replicating(i: &Inner, dev: &DmName, table: &[TableLine]) -> Result<()> {
    let leaving_mirror = matches!(
        i.dm.table(dev)?.first().map(|l| &l.target),
        Some(Target::Mirror(_))
    );
    i.swap_table_checked(dev, leaving_mirror, table, || Ok(()))
}

/// The legs of the source's mirror that the kernel marks failed and that matter to `rel`: the
/// source's, and its own (empty for other tables).
fn failed_mirror_legs(i: &Inner, rel: &Relationship) -> Result<Vec<usize>> {
    let st = i.dm.status(&rel.table_dev)?;
    Ok(match st.first() {
        Some(l) if l.target_type == "mirror" => {
            failed_legs_of(&MirrorStatus::parse(&l.params)?, rel)
        }
        _ => Vec::new(),
    })
}

/// The legs of `rel`'s raid1 that the kernel marks dead (empty for other tables).
pub(crate) fn failed_raid_legs(i: &Inner, rel: &Relationship) -> Result<Vec<usize>> {
    let st = i.dm.status(&rel.table_dev)?;
    Ok(match st.first() {
        Some(l) if l.target_type == "raid" => RaidStatus::parse(&l.params)?
            .health
            .iter()
            .enumerate()
            .filter(|(_, c)| **c == 'D')
            .map(|(k, _)| k)
            .collect(),
        _ => Vec::new(),
    })
}

/// The failed legs of a mirror that matter to `rel`: the first (the source's, or during a
/// restore the target's), and those on its own two disks (another copy may share the mirror).
fn failed_legs_of(s: &MirrorStatus, rel: &Relationship) -> Vec<usize> {
    s.failed_legs()
        .into_iter()
        .filter(|l| {
            *l == 0
                || s.devices
                    .get(*l)
                    .is_some_and(|d| rel.tgt_raw.is_written_as(d) || rel.src_raw.is_written_as(d))
        })
        .collect()
}

/// With the kernel lock held: a leg of the relationship's replicating table failed. Record the
/// relationship broken and, for a mirror whose target leg failed, drop that leg: the record
/// is marked, then the source goes back on `linear` (the writes the mirror held complete
/// there). Returns the reason, or `None` when nothing (any more) reports a failure.
pub(crate) fn break_relationship(i: &Inner, rel_id: &str) -> Result<Option<String>> {
    let Some(rel) = i.relationship(rel_id) else {
        return Ok(None);
    };
    let Some(why) = progress(i, &rel)?.failed else {
        return Ok(rel.broken);
    };
    if super::mirror_restore::restoring(i, &rel)? {
        let reason = super::mirror_restore::leg_failed(i, &rel, &why)?;
        warn!(relationship = %rel.id, reason = %reason, "relationship broken");
        return Ok(Some(reason));
    }
    let set_broken = |reason: &str| {
        i.rels
            .update(rel_id, |r| r.broken = Some(reason.to_string()));
    };
    let legs = failed_mirror_legs(i, &rel)?;
    let raid_legs = failed_raid_legs(i, &rel)?;
    let rest = others(i, &rel);
    // full copies sharing the mirror cannot complete without the source's disk: the table
    // that replaces the mirror drops their legs, and their jobs end
    let only_copies_beside = rest
        .iter()
        .all(|r| r.copy_type == CopyType::UnSyncUnAssoc && r.table_dev == rel.table_dev);
    if (legs.contains(&0) || raid_legs.contains(&0)) && only_copies_beside {
        // (legs holds the source's leg and this relationship's own, nothing else; a raid1
        // has just the two)
        let target_healthy = legs.len() == 1 || raid_legs == [0];
        if let Some(reason) = rel
            .lifecycle()
            .source_leg_failed(i, &rel, &why, target_healthy)?
        {
            warn!(relationship = %rel.id, reason = %reason, "relationship broken");
            return Ok(Some(reason));
        }
    }
    if legs.is_empty() || legs.contains(&0) {
        // raid1 degrades by itself and keeps serving; a failed source leg of a mirror is not
        // repaired here (the mirror serves from the leg that is left)
        let reason = if legs.contains(&0) {
            format!("{why}; the source leg failed, the mirror is left as the kernel keeps it")
        } else {
            why.clone()
        };
        warn!(relationship = %rel.id, reason = %reason, "relationship broken");
        set_broken(&reason);
        return Ok(Some(reason));
    }
    let reason = if rest.is_empty() {
        format!(
            "{why}; the failed target leg was dropped, the source is served alone \
             (Resync copies everything again)"
        )
    } else {
        format!(
            "{why}; the failed target leg was dropped, the source's other copy goes on \
             (Resync copies everything again)"
        )
    };
    set_broken(&reason);
    let linear = real_table(i, &rel.stack(), &rest, false)?;
    Plan::new("drop a failed mirror leg")
        .run(|p| {
            p.step(
                format!("mark {} broken", rel.tag),
                || mark_record(i, &rel, true),
                || mark_record(i, &rel, false),
            )?;
            p.last(|| swap_real(i, &rel, &linear))
        })
        .map_err(|e| {
            Error::kernel(
                "drop the failed target leg of",
                rel.real.to_string(),
                format!("{why}: {e}"),
            )
        })?;
    info!(relationship = %rel.id, device = %rel.real, reason = %why, "failed target leg dropped: the source is on linear");
    Ok(Some(reason))
}

static WATCH_TOKENS: AtomicU64 = AtomicU64::new(1);

/// Follow a Sync relationship's mirror after its job: drop a leg the kernel marks failed.
/// The watcher stops when the relationship ends, its source leaves the mirror, another
/// watcher or a job takes over, or the engine is dropped.
pub(crate) fn watch(i: &Arc<Inner>, rel_id: &str) {
    let token = WATCH_TOKENS.fetch_add(1, Ordering::Relaxed);
    if i.rels.update(rel_id, |r| r.watch = token).is_none() {
        return;
    }
    let weak = Arc::downgrade(i);
    let id = rel_id.to_string();
    let spawned = std::thread::Builder::new()
        .name(format!("watch {rel_id}"))
        .spawn(move || watch_loop(&weak, &id, token));
    if let Err(e) = spawned {
        warn!(relationship = %rel_id, error = %e, "cannot start the mirror watcher");
    }
}

fn watch_loop(weak: &Weak<Inner>, rel_id: &str, token: u64) {
    let mut event = None;
    let mut last_error = None;
    loop {
        let Some(i) = weak.upgrade() else {
            return;
        };
        let Some(rel) = i.relationship(rel_id) else {
            return;
        };
        if rel.watch != token {
            return;
        }
        let started = Instant::now();
        // Some(true): an event came, look again at once; Some(false): look again after the
        // poll interval; None: nothing more to watch
        let step = (|| -> Result<Option<bool>> {
            let pr = progress(&i, &rel)?;
            if !pr.replicating {
                return Ok(None);
            }
            if pr.failed.is_some() {
                let _k = i.kernel_lock();
                if i.rels.get(rel_id).map(|r| r.watch) == Some(token) {
                    break_relationship(&i, rel_id)?;
                }
                return Ok(None);
            }
            if pr.synced && rel.when_synced.is_none() {
                // a rediscovered mirror the kernel shows in sync, every leg healthy: its
                // target is whole from here on (a failing source leg drops the count at once)
                i.rels.update(rel_id, |r| r.when_synced = Some(now_secs()));
                info!(relationship = %rel_id, device = %rel.table_dev, "mirror seen in sync after a restart: the target is whole");
            }
            let current = match event {
                Some(ev) => ev,
                None => i.dm.info(&rel.table_dev)?.map(|d| d.event_nr).unwrap_or(0),
            };
            let now =
                i.dm.wait_event(&rel.table_dev, current, i.opts.poll_interval)?;
            event = Some(now);
            Ok(Some(now != current))
        })();
        match step {
            Ok(None) => return,
            Ok(Some(true)) => continue,
            Ok(Some(false)) => last_error = None,
            Err(e) => {
                // read again (and retry dropping a failed leg) after the poll interval
                let text = e.to_string();
                if last_error.as_deref() != Some(text.as_str()) {
                    warn!(relationship = %rel_id, error = %text, "mirror watcher: cannot read or repair the kernel state");
                    last_error = Some(text);
                }
            }
        }
        let pause = i.opts.poll_interval.saturating_sub(started.elapsed());
        drop(i);
        std::thread::sleep(pause);
    }
}

/// What a sync job does once the copy is in sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finish {
    /// Keep replicating (Sync, Async): the job ends, the relationship stays.
    Keep,
    /// Split the mirror and end the relationship (UnSyncUnAssoc).
    Split,
}

/// Start a job that follows the copy of `rel` (already registered).
pub(crate) fn start_job(e: &Engine, rel_id: &str, finish: Finish, what: &str) -> Result<String> {
    start_job_with(e, rel_id, finish, what, None)
}

/// [`start_job`], for a job that cannot be stopped when `unstoppable` says why.
pub(crate) fn start_job_with(
    e: &Engine,
    rel_id: &str,
    finish: Finish,
    what: &str,
    unstoppable: Option<String>,
) -> Result<String> {
    let i = &*e.inner;
    let rel = i
        .relationship(rel_id)
        .ok_or_else(|| Error::Other(format!("relationship {rel_id} vanished")))?;
    let spec = JobSpec {
        name: format!(
            "{what} {} -> {} (CopyType {})",
            rel.source,
            rel.target,
            rel.copy_type.value()
        ),
        source: rel.source.to_string(),
        target: rel.target.to_string(),
        copy_type: rel.copy_type.value(),
        relationship: (finish == Finish::Keep).then(|| rel.id.clone()),
        unstoppable,
    };
    let e2 = e.clone();
    let id_for_job = rel.id.clone();
    let job = i.rels.with_job(&rel.id, || {
        i.jobs
            .submit(spec, move |ctx| follow(&e2, &id_for_job, ctx, finish))
    });
    Ok(job)
}

fn follow(e: &Engine, rel_id: &str, ctx: &JobCtx, finish: Finish) -> Result<(), JobStop> {
    let i = &*e.inner;
    let mut event = None;
    loop {
        let rel = i
            .relationship(rel_id)
            .ok_or_else(|| Error::Other(format!("relationship {rel_id} was removed")))?;
        if let Some(state) = ctx.stop_requested() {
            let _k = i.kernel_lock();
            info!(job = %ctx.id(), relationship = %rel.id, "stopping: rolling the relationship back");
            rel.lifecycle().teardown(i, &rel)?;
            return Err(JobStop::Requested(state));
        }
        let pr = progress(i, &rel)?;
        ctx.set_percent(if pr.synced { 100 } else { pr.percent.min(99) });
        if let Some(why) = pr.failed {
            let _k = i.kernel_lock();
            if finish == Finish::Split && failed_mirror_legs(i, &rel)?.contains(&0) {
                // the source's disk failed: a mirror sharing the table decides where the
                // source goes (onto its target's disk when that is whole); the copy ends
                for other in others(i, &rel) {
                    if other.copy_type != CopyType::UnSyncUnAssoc {
                        break_relationship(i, &other.id)?;
                    }
                }
            }
            // (read again: the source's disk may be the target's now)
            let rel = i.relationship(rel_id).unwrap_or(rel);
            let msg = match finish {
                // the copy cannot complete: roll the source back to linear, as Terminate does
                Finish::Split => match rel.lifecycle().teardown(i, &rel) {
                    Ok(()) => format!(
                        "copy {} failed: {why}; the source is back on linear, the target holds \
                         a partial copy",
                        rel.id
                    ),
                    Err(e) => format!("copy {} failed: {why}; rolling back failed: {e}", rel.id),
                },
                Finish::Keep => match break_relationship(i, rel_id) {
                    Ok(reason) => format!(
                        "relationship {} is broken: {}",
                        rel.id,
                        reason.unwrap_or(why)
                    ),
                    Err(e) => format!("relationship {} is broken: {why}; {e}", rel.id),
                },
            };
            return Err(JobStop::Failed(Error::kernel(
                "replicate",
                rel.table_dev.to_string(),
                msg,
            )));
        }
        if !pr.replicating {
            if finish == Finish::Split {
                // a mirror sharing the table replaced it (its source's disk failed)
                let _k = i.kernel_lock();
                let rel = i.relationship(rel_id).unwrap_or(rel);
                rel.lifecycle().teardown(i, &rel)?;
                return Err(JobStop::Failed(Error::Other(format!(
                    "copy {} failed: {} no longer mirrors (the source's disk failed?); the \
                     target holds a partial copy",
                    rel.id, rel.table_dev
                ))));
            }
            return Err(JobStop::Failed(Error::Other(format!(
                "{} no longer carries a replicating table",
                rel.table_dev
            ))));
        }
        if pr.synced {
            match finish {
                Finish::Keep => {
                    if super::mirror_restore::restoring(i, &rel)? {
                        let _k = i.kernel_lock();
                        super::mirror_restore::finish(i, &rel)?;
                    }
                    i.rels.update(rel_id, |r| r.when_synced = Some(now_secs()));
                    info!(relationship = %rel.id, "in sync");
                    rel.lifecycle().once_synced(e, &rel);
                }
                Finish::Split => {
                    let _k = i.kernel_lock();
                    rel.lifecycle().teardown(i, &rel)?;
                    info!(relationship = %rel.id, "copy complete; split at this point in time");
                }
            }
            return Ok(());
        }
        let current = match event {
            Some(ev) => ev,
            None => i.dm.info(&rel.table_dev)?.map(|d| d.event_nr).unwrap_or(0),
        };
        event = Some(i.dm.wait_event(&rel.table_dev, current, i.opts.poll_interval)?);
    }
}

/// Undo a mirror-type relationship: its real device back on what the source's other
/// relationships need (`linear` over the source's disk when none), its copy device and
/// metadata devices removed, then [`forget`]. Both storage objects stay adopted.
pub(crate) fn teardown_mirror(i: &Inner, rel: &Relationship) -> Result<()> {
    let below = rel.table_dev != rel.real && i.dm.info(&rel.table_dev)?.is_some();
    if below {
        // first the copy's mirror off the source's disk: it may hold writes for a failed
        // leg, which a flushing suspend of the raid1 above would wait for
        let linear = Inner::linear(rel.src_raw, rel.sectors);
        if i.dm.table(&rel.table_dev)? != linear {
            swap_replicating(i, &rel.table_dev, &linear)?;
        }
    }
    if i.dm.info(&rel.real)?.is_some() {
        let table = table_without(i, rel)?;
        if i.dm.table(&rel.real)? != table {
            swap_real(i, rel, &table)?;
        }
    }
    if below {
        // nothing above reads it any more: the real device was just put back on the disk
        i.dm.remove(&rel.table_dev)?;
        info!(device = %rel.table_dev, relationship = %rel.id, "removed device");
    }
    super::async_copy::remove_metadata(i, rel)?;
    forget(i, rel)
}

/// The last step of every teardown: the record removed, the relationship forgotten, and the
/// source's stack taken down if nothing else uses it.
pub(crate) fn forget(i: &Inner, rel: &Relationship) -> Result<()> {
    if i.dm.info(&rel.tag)?.is_some() {
        i.dm.remove(&rel.tag)?;
    }
    unregister(i, &rel.id);
    info!(relationship = %rel.id, "relationship ended");
    let in_use = i.rels.any(|r| r.source_name == rel.source_name);
    stack::collapse_if_unused(i, &rel.stack(), in_use)
}

/// Size of a device known by its number (sysfs), for rediscovery.
fn sectors_of_devno(devno: Devno) -> Option<Sectors> {
    std::fs::read_to_string(format!("/sys/dev/block/{devno}/size"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// ModifySynchronization Fracture: the source back on linear; the target keeps the image of
/// this moment.
pub(crate) fn fracture(e: &Engine, rel: &Relationship) -> Result<()> {
    let i = &*e.inner;
    if !progress(i, rel)?.replicating {
        return Err(Error::Invalid(match &rel.broken {
            Some(why) => format!(
                "relationship {} is broken ({why}); its source is already served alone: \
                 use Resync or Detach",
                rel.id
            ),
            None => format!("relationship {} is already fractured", rel.id),
        }));
    }
    // tracking: the target leg left out of the raid1, its bitmap marks what changes
    let (table, written) = if rel.raid {
        let mut table = real_table(i, &rel.stack(), &replicating(i, &rel.source_name), false)?;
        leave_out_target_leg(&mut table);
        (table, Some(i.dm.sectors_written(&rel.tgt_shim)?))
    } else {
        (table_without(i, rel)?, None)
    };
    swap_real(i, rel, &table)?;
    i.rels.update(&rel.id, |r| {
        r.when_synced = None;
        r.target_writes = written;
    });
    info!(relationship = %rel.id, device = %rel.real, tracked = written.is_some(), "fractured");
    Ok(())
}

/// ModifySynchronization Resync: replicate again (full copy; no change tracking while
/// fractured), followed by a job. Works on a fractured relationship and on a broken one: a
/// replicating table with a failed leg is dropped first, then the whole table is loaded
/// afresh (every region copied again) and the broken mark is cleared.
pub(crate) fn resync(e: &Engine, rel: &Relationship) -> Result<Attached> {
    let i = &*e.inner;
    if rel.src_raw == rel.tgt_raw {
        return Err(Error::Invalid(format!(
            "relationship {} cannot be resynchronised: its source's disk failed and the LUN \
             runs on the target's disk {}; Detach it, then attach a new target",
            rel.id, rel.tgt_raw
        )));
    }
    if failed_raid_legs(i, rel)?.contains(&0) {
        return Err(Error::Invalid(format!(
            "relationship {} cannot be resynchronised: its source's disk failed and the raid1 \
             serves the LUN from the target's disk; once the source's disk is back (or \
             replaced), Restore (Operation 5) copies the target onto it",
            rel.id
        )));
    }
    let pr = progress(i, rel)?;
    let broken_in_place = pr.replicating && pr.failed.is_some();
    if pr.replicating && !broken_in_place {
        return Err(Error::Invalid(format!(
            "relationship {} is neither fractured nor broken; nothing to resync",
            rel.id
        )));
    }
    let marked = record_says_broken(&i.dm.table(&rel.tag)?);
    let fractured_raid = raid_fractured(&i.dm.table(&rel.real)?);
    // a raid1 whose target leg failed: md marked it faulty and its bitmap has kept the bit of
    // every region written since; the same table loaded again makes dm-raid try the leg
    // again (as `lvchange --refresh` does), and md copies only those regions onto it
    let target_back = broken_in_place && rel.raid && failed_raid_legs(i, rel)? == [1];
    if target_back {
        // Both metadata areas are on the target's disk: while it was gone md kept the bitmap's
        // new bits in memory only, and writes them out when the raid1 is suspended for the
        // reload. With the disk still failing they would be lost, and a later Resync would
        // skip regions that differ.
        if let Err(e) = i.dm.read_probe(rel.tgt_raw, super::DISK_PROBE_TIMEOUT) {
            return Err(Error::Invalid(format!(
                "relationship {} cannot be resynchronised yet: the target's disk {} does not \
                 answer ({e}); Resync once it is back",
                rel.id, rel.tgt_raw
            )));
        }
    }
    // only what the bitmap says when nothing wrote to the target meanwhile
    let tracked = (fractured_raid || target_back)
        && !marked
        && rel.target_writes.is_some()
        && rel.target_writes == Some(i.dm.sectors_written(&rel.tgt_shim)?);
    if (fractured_raid || target_back) && !tracked {
        warn!(relationship = %rel.id, "the target may have been written behind the raid1's bitmap (or the daemon restarted): copying everything");
    }
    // (a broken `mirror` relationship is not among those replicating: it comes back here)
    let mut all = replicating(i, &rel.source_name);
    if !all.iter().any(|r| r.id == rel.id) {
        all.insert(0, rel.clone());
    }
    let mut table = real_table(i, &rel.stack(), &all, false)?;
    if fractured_raid {
        // real_table keeps a live fracture as it is
        put_back_target_leg(i, rel, &mut table)?;
    }
    let linear = table_without(i, rel)?;
    Plan::new("resync").run(|p| {
        if (fractured_raid || broken_in_place) && !tracked {
            // the failed leg goes first (the kernel may be holding writes for it), or the
            // raid1 lets go of its metadata before it is cleared; the source alone on linear
            // is where a broken or fractured relationship rests anyway, so no undo
            p.last(|| swap_real(i, rel, &linear))?;
            info!(relationship = %rel.id, device = %rel.real, "source on linear before the resync");
        }
        if !tracked {
            for m in rel.lifecycle().metadata(rel)? {
                p.last(|| i.zero_head(&m, i.opts.raid_meta_sectors))?;
            }
        }
        if marked {
            p.step(
                format!("clear the broken mark of {}", rel.tag),
                || mark_record(i, rel, false),
                || mark_record(i, rel, true),
            )?;
        }
        p.last(|| i.swap_table(&rel.real, &table))?;
        if tracked {
            info!(relationship = %rel.id, device = %rel.real, "target leg back in the raid1: copying the regions changed while it was out");
        } else {
            info!(relationship = %rel.id, device = %rel.real, "replicating table loaded: full resync");
        }
        Ok(())
    })?;
    let target_writes = if rel.raid {
        Some(i.dm.sectors_written(&rel.tgt_shim)?)
    } else {
        None
    };
    i.rels.update(&rel.id, |r| {
        r.broken = None;
        r.when_synced = None;
        r.target_writes = target_writes;
        // the job follows the mirror now; it starts a new watcher once in sync
        r.watch = 0;
    });
    let job = start_job(e, &rel.id, Finish::Keep, "resync")?;
    Ok(Attached {
        code: ReturnCode::JobStarted,
        job: Some(job),
        relationship: Some(rel.id.clone()),
    })
}

/// The relationship as the API shows it, with its state read from the kernel now.
pub(crate) fn view(i: &Inner, rel: &Relationship) -> RelationshipView {
    let lc = rel.lifecycle();
    let mut v = RelationshipView {
        instance_id: rel.id.clone(),
        system_element: rel.source.to_string(),
        synced_element: rel.target.to_string(),
        copy_type: rel.copy_type.value(),
        sync_state: SyncState::Broken.value(),
        sync_state_name: String::new(),
        sync_maintained: lc.maintained(),
        percent_synced: 0,
        when_synced: rel.when_synced,
        progress_status: None,
        cow_used_sectors: None,
        cow_total_sectors: None,
        max_lag_writes: None,
        change_tracking: rel.raid,
    };
    let state = match lc.live_state(i, rel, &mut v) {
        Ok(s) => s,
        Err(e) => {
            v.progress_status = Some(format!("cannot read the kernel state: {e}"));
            SyncState::Broken
        }
    };
    v.sync_state = state.value();
    v.sync_state_name = format!("{state:?}");
    v
}

/// The state of a mirror-type relationship, read from its real device.
pub(crate) fn mirror_state(
    i: &Inner,
    rel: &Relationship,
    v: &mut RelationshipView,
) -> Result<SyncState> {
    let pr = progress(i, rel)?;
    let lc = rel.lifecycle();
    if pr.replicating {
        v.max_lag_writes = lc.max_lag_writes(i);
    }
    if let Some(why) = rel.broken.clone().or(pr.failed.clone()) {
        v.percent_synced = if pr.replicating { pr.percent } else { 0 };
        v.progress_status = Some(why);
        return Ok(SyncState::Broken);
    }
    if !pr.replicating {
        v.progress_status = Some(if raid_fractured(&i.dm.table(&rel.real)?) {
            "fractured: the target keeps the image of the fracture; the bitmap tracks what \
             changes, Resync copies only that (unless the target is written meanwhile)"
                .into()
        } else {
            "fractured: the target keeps the image of the fracture".into()
        });
        return Ok(SyncState::Fractured);
    }
    v.percent_synced = pr.percent;
    // a restore in sync is still a restore until its job has put the own table back
    if super::mirror_restore::restoring(i, rel)? {
        v.progress_status = Some(if pr.synced {
            "the target's image is restored onto the source; the relationship's own table \
             goes back in next"
                .into()
        } else {
            format!(
                "restoring the target's image onto the source, {}%; the LUN reads that image",
                pr.percent
            )
        });
        return Ok(SyncState::RestoreInProgress);
    }
    Ok(lc.replicating_state(&pr, v))
}

/// The span of a device's live table.
fn span(i: &Inner, n: &DmName) -> Result<Sectors> {
    Ok(crate::dm::table_length(&i.dm.table(n)?))
}

/// Rebuild the relationship a record device describes.
fn from_record(i: &Inner, record: &DmName, ct: CopyType, tgt_name: &str) -> Result<Relationship> {
    let (tgt_raw, src_raw) = record_devices(&i.dm.table(record)?)
        .ok_or_else(|| Error::Other(format!("unexpected record table on {record}")))?;
    let broken = record_says_broken(&i.dm.table(record)?).then(|| {
        "the target leg failed and was dropped before the daemon (re)started; the source is \
         served alone (Resync copies everything again)"
            .to_string()
    });
    let tgt_shim = names::shim(tgt_name)?;
    if i.dm.info(&tgt_shim)?.is_none() {
        return Err(Error::Other(format!("target shim {tgt_shim} is missing")));
    }
    // the source: the storage object whose real device sits on the recorded disk
    let mut source = None;
    for d in i.dm.list()? {
        let Some(obj) = names::real_object(&d.name) else {
            continue;
        };
        if adopt::raw_under(i, &d.name).ok() == Some(src_raw) {
            source = Some(obj);
            break;
        }
    }
    let src_name = source.ok_or_else(|| {
        Error::Other(format!(
            "no source stack sits on the recorded source disk {src_raw}"
        ))
    })?;
    let src_shim = names::shim(&src_name)?;
    let sectors = span(i, &src_shim)?;
    let target_sectors = match i.dm.table(&tgt_shim)?.first().map(|l| &l.target) {
        Some(Target::Linear(_)) => span(i, &tgt_shim)?,
        _ => sectors_of_devno(tgt_raw).unwrap_or(sectors),
    };
    let real = names::real(&src_name)?;
    let raid = match ct {
        CopyType::Async => true,
        CopyType::Sync => sync_on_raid(i, &src_name, src_raw)?,
        _ => false,
    };
    let copy = names::copy(&src_name)?;
    let table_dev = if ct == CopyType::UnSyncUnAssoc && i.dm.info(&copy)?.is_some() {
        copy
    } else {
        real.clone()
    };
    Ok(Relationship {
        id: format!("{src_name}/{tgt_name}"),
        source: Element::existing(Plugin::Block, &src_name),
        target: Element::existing(Plugin::Block, tgt_name),
        source_name: src_name.clone(),
        target_name: tgt_name.to_string(),
        copy_type: ct,
        real,
        table_dev,
        src_shim,
        tgt_shim,
        tag: record.clone(),
        src_raw,
        tgt_raw,
        sectors,
        target_sectors,
        job: None,
        when_synced: None,
        broken,
        watch: 0,
        target_writes: None,
        raid,
    })
}

/// Whether a rediscovered Sync mirror is on a raid1: its source has raid metadata and its real
/// device is not a dm `mirror` with the source's disk first (the table of a Sync mirror on a
/// same-size target, beside which metadata can only be left from an interrupted Reset To
/// Async). A restore in progress, a fracture and a degraded raid1 all keep the metadata.
fn sync_on_raid(i: &Inner, src_name: &str, src_raw: Devno) -> Result<bool> {
    if i.dm.info(&names::meta(0, src_name)?)?.is_none() {
        return Ok(false);
    }
    Ok(!matches!(
        i.dm.table(&names::real(src_name)?)?.first().map(|l| &l.target),
        Some(Target::Mirror(m)) if m.legs.first().is_some_and(|l| src_raw.is_written_as(&l.device))
    ))
}

/// Find relationships from the kernel's record devices and the shims' tables, and register
/// them. Returns them, for each copy type to resume (after the start-up recovery).
pub(crate) fn rediscover(e: &Engine) -> Result<Vec<String>> {
    let i = &*e.inner;
    let mut found = Vec::new();
    let mut rebuilt = Vec::new();
    for d in i.dm.list()? {
        if names::is_old_record(&d.name) {
            warn!(device = %d.name, "relationship record of an older layout (the source's shim carrying the copy itself): not managed; remove it with `dmsetup remove` after putting its source back on linear");
            continue;
        }
        let Some((ct, tgt_name)) = names::parse_tag(&d.name) else {
            continue;
        };
        match from_record(i, &d.name, ct, &tgt_name) {
            Ok(rel) => rebuilt.push(rel),
            Err(err) => {
                warn!(device = %d.name, error = %err, "cannot rebuild the relationship recorded by this device; left as is")
            }
        }
    }
    for rel in drop_stale_records(i, rebuilt)? {
        info!(relationship = %rel.id, copy_type = ?rel.copy_type, "rediscovered");
        found.push(rel.id.clone());
        register(i, rel);
    }
    Ok(found)
}

/// Two records of one target are left by a mode change (see [`super::mode`]) that was
/// stopped between creating the new record and removing the old one: the source's real device
/// says which holds (a raid1 whose target leg is write-mostly is Async, anything else Sync).
/// The other record is removed.
fn drop_stale_records(i: &Inner, rels: Vec<Relationship>) -> Result<Vec<Relationship>> {
    let mut by_target: std::collections::BTreeMap<String, Vec<Relationship>> = Default::default();
    for r in rels {
        by_target.entry(r.target_name.clone()).or_default().push(r);
    }
    let mut keep = Vec::new();
    for (_, mut recs) in by_target {
        if recs.len() > 1 {
            let write_behind = recs.first().is_some_and(|r| {
                matches!(
                    i.dm.table(&r.real)
                        .ok()
                        .as_deref()
                        .and_then(|t| t.first())
                        .map(|l| &l.target),
                    Some(Target::Raid(p)) if p.write_mostly.contains(&1)
                )
            });
            let holds = if write_behind {
                CopyType::Async
            } else {
                CopyType::Sync
            };
            let (kept, stale): (Vec<_>, Vec<_>) =
                recs.into_iter().partition(|r| r.copy_type == holds);
            for r in &stale {
                i.dm.remove(&r.tag)?;
                warn!(device = %r.tag, kept = ?holds, "removed the record of an interrupted mode change");
            }
            recs = kept;
        }
        keep.extend(recs);
    }
    Ok(keep)
}

/// Take down every source stack no relationship uses.
pub(crate) fn collapse_unused_stacks(i: &Inner) -> Result<()> {
    let devices = i.dm.list()?;
    // a copy device nothing reads any more (its copy split off, the removal interrupted)
    for d in &devices {
        if names::copy_object(&d.name).is_none() || i.rels.any(|r| r.table_dev == d.name) {
            continue;
        }
        if d.open_count == 0 {
            i.dm.remove(&d.name)?;
            info!(device = %d.name, "removed a copy device no relationship uses");
        } else {
            warn!(device = %d.name, "a copy device no relationship uses is still open; left as is");
        }
    }
    // raid metadata no raid1 mirror uses (an attach or a mode change interrupted)
    for d in &devices {
        let Some(obj) = names::meta_object(&d.name) else {
            continue;
        };
        if i.rels.any(|r| r.source_name == obj && r.raid) {
            continue;
        }
        if d.open_count == 0 {
            i.dm.remove(&d.name)?;
            info!(device = %d.name, "removed a raid metadata device no relationship uses");
        } else {
            warn!(device = %d.name, "a raid metadata device no relationship uses is still open; left as is");
        }
    }
    // (removing a copy or metadata device changes no real device: the same listing serves)
    for d in &devices {
        let Some(obj) = names::real_object(&d.name) else {
            continue;
        };
        let in_use = i.rels.any(|r| r.source_name == obj);
        if in_use {
            continue;
        }
        let shim = names::shim(&obj)?;
        if i.dm.info(&shim)?.is_none() {
            continue;
        }
        let st = Stack {
            raw: adopt::raw_under(i, &d.name)?,
            sectors: crate::dm::table_length(&i.dm.table(&d.name)?),
            shim,
            real: d.name.clone(),
        };
        if let Err(e) = stack::collapse_if_unused(i, &st, false) {
            warn!(device = %d.name, error = %e, "cannot take down an unused source stack");
        }
    }
    Ok(())
}

/// Let each rediscovered relationship's copy type follow it again.
pub(crate) fn resume_all(e: &Engine, ids: &[String]) -> Result<()> {
    for id in ids {
        if let Some(rel) = e.inner.relationship(id) {
            rel.lifecycle().resume(e, &rel)?;
        }
    }
    Ok(())
}

/// Who is logged in through the LUNs that export `element`, as `INITIATOR (LUN path)`.
fn sessions_on(i: &Inner, element_name: &str) -> Result<Vec<String>> {
    let so = i.cfs.find_storage_object(&Plugin::Block, element_name)?;
    let exports = i.cfs.exports_of(&so)?;
    let mut out = Vec::new();
    for e in &exports {
        for who in i.cfs.sessions(&e.tpg)? {
            out.push(format!(
                "{who} ({}/{}/tpgt_{}/lun_{})",
                e.fabric, e.wwn, e.tpg_tag, e.lun
            ));
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// A Restore (of any copy type) is refused while its target is exported (`what` it does to the
/// target says why), and while initiators are logged in to the source unless `force`: the LUN's
/// contents change under them.
pub(crate) fn refuse_restore_over(
    i: &Inner,
    rel: &Relationship,
    force: bool,
    what: &str,
) -> Result<()> {
    let tgt_so = i
        .cfs
        .find_storage_object(&Plugin::Block, &rel.target_name)?;
    if let Some(x) = i.cfs.exports_of(&tgt_so)?.first() {
        return Err(Error::InUse(format!(
            "{} is exported through {}/{}/tpgt_{}/lun_{}: {what}, remove that LUN first",
            rel.target, x.fabric, x.wwn, x.tpg_tag, x.lun
        )));
    }
    let sessions = sessions_on(i, &rel.source_name)?;
    if !sessions.is_empty() && !force {
        return Err(Error::InUse(format!(
            "initiators are logged in to {}: {}; the LUN's contents would change under them. \
             Log them out (or stop their I/O and unmount) and retry, or force it",
            rel.source,
            sessions.join(", ")
        )));
    }
    if !sessions.is_empty() {
        warn!(relationship = %rel.id, sessions = %sessions.join(", "), "restore forced with initiators logged in");
    }
    Ok(())
}
