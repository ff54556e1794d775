//! CopyType 4 UnSyncAssoc: a point-in-time copy. The source's shim is `snapshot-origin` over
//! its real device (see [`super::stack`]) and the target's shim becomes a persistent
//! `snapshot` of that real device whose COW store is the target's own disk; the target
//! backstore then serves the image of the moment it was taken. Done at return (0), no job. A
//! source may have any number of them, each with its own moment; every write to the source
//! copies the chunk it overwrites into each snapshot that still shares it.
//!
//! The COW store needs room for changed chunks plus its metadata (one 4 KiB metadata chunk
//! per 256 data chunks, plus a header): a target of at least source × 257/256 + 16 KiB never
//! overflows. A smaller one overflows once enough of the source is rewritten; the snapshot
//! then turns Invalid, the relationship is reported Broken and the source is unaffected.
//!
//! Restore (ModifySynchronization 5) merges the snapshot back: the origin becomes
//! `snapshot-merge`, which takes the snapshot's COW store over from it (the kernel's
//! handover) and copies every chunk back onto the source while the LUN keeps serving: reads
//! see the snapshot's image from the first moment, and the other snapshots of the source keep
//! theirs (the merge writes through the origin's copy-on-write like any other write). A job
//! follows the merge from the kernel's count of chunks left; when none are left the origin is
//! `snapshot-origin` again, the relationship has ended and the target is free (its disk holds
//! the spent COW store, not an image).

use super::plan::Plan;
use super::relationship::{self, Lifecycle, Relationship};
use super::{adopt, stack, Attached, Engine, Inner, Resolved};
use crate::cim::Operation;
use crate::dm::{Devno, DmName, Sectors, SnapshotParams, SnapshotStatus, TableLine, Target};
use crate::error::{Error, Result, ReturnCode};
use crate::jobs::{JobCtx, JobSpec, JobStop};
use crate::service::{CopyType, RelationshipView, SyncState};
use tracing::{info, warn};

pub(crate) struct Snapshot;

fn params(i: &Inner, rel: &Relationship) -> Result<SnapshotParams> {
    Ok(SnapshotParams {
        origin: i.devno(&rel.real)?.to_string(),
        cow: rel.tgt_raw.to_string(),
        persistent: true,
        chunk_size: i.opts.snapshot_chunk.0,
    })
}

fn snapshot_table(i: &Inner, rel: &Relationship) -> Result<Vec<TableLine>> {
    Ok(vec![TableLine::new(
        Sectors(0),
        rel.sectors,
        Target::Snapshot(params(i, rel)?),
    )])
}

/// Suspend the source's origin as a step of `p` (undone by resuming it): snapshots are added
/// and removed only while no write is between the origin and its snapshots.
fn suspend_origin_step<'a>(i: &'a Inner, rel: &Relationship, p: &mut Plan<'a>) -> Result<()> {
    let src = rel.src_shim.clone();
    p.step(
        format!("suspend {src}"),
        || i.dm.suspend(&rel.src_shim, false, i.opts.suspend_timeout),
        move || i.dm.resume(&src),
    )
}

/// With the origin suspended: the target becomes a fresh snapshot (COW header zeroed first),
/// then the origin resumes. Undone step by step on failure.
fn take_snapshot<'a>(i: &'a Inner, rel: &Relationship, p: &mut Plan<'a>) -> Result<()> {
    suspend_origin_step(i, rel, p)?;
    // the target is on linear here: its first chunk is the COW header
    p.last(|| i.zero_head(&rel.tgt_shim, i.opts.snapshot_chunk))?;
    let snap = snapshot_table(i, rel)?;
    let back = Inner::linear(rel.tgt_raw, rel.target_sectors);
    let tgt = rel.tgt_shim.clone();
    p.step(
        format!("load snapshot on {tgt}"),
        || i.swap_table(&rel.tgt_shim, &snap),
        move || i.swap_table(&tgt, &back),
    )?;
    p.last(|| i.dm.resume(&rel.src_shim))
}

/// With the origin suspended, the target back on `linear`: the snapshot is gone.
fn drop_snapshot(i: &Inner, rel: &Relationship) -> Result<()> {
    Plan::new(format!("drop snapshot {}", rel.id)).run(|p| {
        suspend_origin_step(i, rel, p)?;
        p.last(|| {
            i.swap_table(
                &rel.tgt_shim,
                &Inner::linear(rel.tgt_raw, rel.target_sectors),
            )
        })?;
        p.last(|| i.dm.resume(&rel.src_shim))
    })
}

/// Why the snapshot's image cannot be read whole, if one of its disks fails reads: the
/// source's disk (which holds every chunk not copied out yet; only while the source's real
/// device is that disk alone: a mirror under the source answers for its own legs) or the
/// COW store. The kernel says nothing of either until a write needs a chunk copied.
fn failed_disk(i: &Inner, rel: &Relationship) -> Result<Option<String>> {
    let origin_disk = match i.dm.table(&rel.real)?.as_slice() {
        [TableLine {
            target: Target::Linear(l),
            ..
        }] => l.device.parse::<Devno>().ok(),
        _ => None,
    };
    if let Some(dev) = origin_disk {
        if let Err(e) = i.dm.read_probe(dev, super::DISK_PROBE_TIMEOUT) {
            return Ok(Some(format!(
                "the source's disk ({dev}) fails ({e}): the source fails too, and the image, \
                 which shares every chunk not yet copied out with that disk, cannot be read \
                 whole"
            )));
        }
    }
    if let Err(e) = i.dm.read_probe(rel.tgt_raw, super::DISK_PROBE_TIMEOUT) {
        return Ok(Some(format!(
            "the COW store's disk ({}) fails ({e}): the image is lost; the source is unaffected",
            rel.tgt_raw
        )));
    }
    Ok(None)
}

/// The COW store the source's origin is merging, if it is merging one.
fn merging_store(i: &Inner, src_shim: &DmName) -> Result<Option<String>> {
    Ok(match i.dm.table(src_shim)?.first().map(|l| &l.target) {
        Some(Target::SnapshotMerge(m)) => Some(m.cow.clone()),
        _ => None,
    })
}

fn is_restoring(i: &Inner, rel: &Relationship) -> Result<bool> {
    Ok(merging_store(i, &rel.src_shim)?.is_some_and(|cow| rel.tgt_raw.is_written_as(&cow)))
}

/// The merge's status line on the origin.
fn merge_status(i: &Inner, rel: &Relationship) -> Result<SnapshotStatus> {
    let st = i.dm.status(&rel.src_shim)?;
    let line = st
        .first()
        .ok_or_else(|| Error::Other(format!("{} has no status", rel.src_shim)))?;
    SnapshotStatus::parse(&line.params)
}

/// Data sectors the merge still has to copy back (what is allocated beyond the metadata).
fn left_to_merge(s: &SnapshotStatus) -> Option<u64> {
    match s {
        SnapshotStatus::Active { used, metadata, .. } => Some(used.saturating_sub(*metadata)),
        _ => None,
    }
}

/// ModifySynchronization Restore: start merging the snapshot back into its source, followed
/// by a job.
fn restore(e: &Engine, rel: &Relationship, force: bool) -> Result<Attached> {
    let i = &*e.inner;
    if let Some(cow) = merging_store(i, &rel.src_shim)? {
        return Err(Error::InUse(format!(
            "{} is already being restored from the snapshot on {cow}; wait for that job",
            rel.source
        )));
    }
    let snap = i.dm.status(&rel.tgt_shim)?;
    let valid = snap
        .first()
        .filter(|l| l.target_type == "snapshot")
        .map(|l| SnapshotStatus::parse(&l.params))
        .transpose()?
        .is_some_and(|s| s.is_valid());
    if !valid {
        return Err(Error::Invalid(format!(
            "snapshot {} holds no valid image (see its relationship's state); nothing to \
             restore",
            rel.id
        )));
    }
    relationship::refuse_restore_over(i, rel, force, "a restore consumes its image")?;
    let merge = vec![TableLine::new(
        Sectors(0),
        rel.sectors,
        Target::SnapshotMerge(params(i, rel)?),
    )];
    Plan::new(format!("restore {}", rel.id)).run(|p| {
        // the handover needs the snapshot suspended when the merge resumes
        let tgt = rel.tgt_shim.clone();
        p.step(
            format!("suspend {tgt}"),
            || i.dm.suspend(&rel.tgt_shim, false, i.opts.suspend_timeout),
            move || i.dm.resume(&tgt),
        )?;
        suspend_origin_step(i, rel, p)?;
        let src = rel.src_shim.clone();
        p.step(
            format!("load snapshot-merge on {src}"),
            || i.dm.load(&rel.src_shim, &merge),
            move || i.dm.clear(&src),
        )?;
        p.last(|| i.dm.resume(&rel.src_shim))
    })?;
    info!(relationship = %rel.id, device = %rel.src_shim, "merging the snapshot back into its source");
    // the snapshot handed its store over and is invalid now: its LUN-less backstore reads
    // errors until the merge is done, rather than a store that is being emptied
    let error = vec![TableLine::new(
        Sectors(0),
        rel.target_sectors,
        Target::Error,
    )];
    if let Err(err) =
        i.dm.load(&rel.tgt_shim, &error)
            .and_then(|_| i.dm.resume(&rel.tgt_shim))
    {
        warn!(device = %rel.tgt_shim, error = %err, "cannot park the spent snapshot on an error table");
    }
    let job = start_restore_job(e, rel)?;
    Ok(Attached {
        code: ReturnCode::JobStarted,
        job: Some(job),
        relationship: Some(rel.id.clone()),
    })
}

fn start_restore_job(e: &Engine, rel: &Relationship) -> Result<String> {
    let spec = JobSpec {
        name: format!(
            "restore {} from snapshot {} (CopyType 4)",
            rel.source, rel.target
        ),
        source: rel.target.to_string(),
        target: rel.source.to_string(),
        copy_type: CopyType::UnSyncAssoc.value(),
        relationship: Some(rel.id.clone()),
        unstoppable: Some(format!(
            "a restore cannot be stopped: {} already holds part of the snapshot's image and \
             the snapshot has handed its store over",
            rel.source
        )),
    };
    let e2 = e.clone();
    let id = rel.id.clone();
    let job = e.inner.rels.with_job(&rel.id, || {
        e.inner
            .jobs
            .submit(spec, move |ctx| follow_merge(&e2, &id, ctx))
    });
    Ok(job)
}

fn follow_merge(e: &Engine, rel_id: &str, ctx: &JobCtx) -> std::result::Result<(), JobStop> {
    let i = &*e.inner;
    let mut first: Option<u64> = None;
    let mut event = None;
    loop {
        let rel = i
            .relationship(rel_id)
            .ok_or_else(|| Error::Other(format!("relationship {rel_id} was removed")))?;
        let status = merge_status(i, &rel)?;
        let Some(left) = left_to_merge(&status) else {
            return Err(JobStop::Failed(Error::kernel(
                "merge the snapshot into",
                rel.src_shim.to_string(),
                format!(
                    "the merge reports {status:?}; {} is partly restored",
                    rel.source
                ),
            )));
        };
        let from = *first.get_or_insert(left);
        if left == 0 {
            let _k = i.kernel_lock();
            finish_merge(i, &rel)?;
            ctx.set_percent(100);
            return Ok(());
        }
        let done = from.saturating_sub(left);
        ctx.set_percent(
            (done * 100)
                .checked_div(from)
                .map_or(0, |p| p.min(99) as u16),
        );
        let current = match event {
            Some(ev) => ev,
            None => i.dm.info(&rel.src_shim)?.map(|d| d.event_nr).unwrap_or(0),
        };
        event = Some(i.dm.wait_event(&rel.src_shim, current, i.opts.poll_interval)?);
    }
}

/// Every chunk is back on the source: the origin is `snapshot-origin` again, the target back
/// on `linear`, the relationship ends.
fn finish_merge(i: &Inner, rel: &Relationship) -> Result<()> {
    let origin = rel.stack().origin_table(i)?;
    i.swap_table(&rel.src_shim, &origin)?;
    release_spent_target(i, rel)
}

/// Whether the snapshot handed its store over to a merge that has ended: its shim no longer a
/// `snapshot` (parked on `error` by [`restore`], or already back on `linear`) while the source
/// merges no more.
fn spent(i: &Inner, rel: &Relationship) -> Result<bool> {
    Ok(!is_restoring(i, rel)?
        && matches!(
            i.dm.table(&rel.tgt_shim)?.first().map(|l| &l.target),
            Some(Target::Error | Target::Linear(_))
        ))
}

/// The end of a restore once the source is `snapshot-origin` again: the target back on
/// `linear`, the relationship ends.
fn release_spent_target(i: &Inner, rel: &Relationship) -> Result<()> {
    let back = Inner::linear(rel.tgt_raw, rel.target_sectors);
    if i.dm.table(&rel.tgt_shim)? != back {
        i.swap_table(&rel.tgt_shim, &back)?;
    }
    info!(relationship = %rel.id, "restore complete: the source holds the snapshot's image");
    relationship::forget(i, rel)
}

/// ModifySynchronization Resync on a snapshot: a new point in time (the old image is
/// discarded).
fn refresh(e: &Engine, rel: &Relationship) -> Result<Attached> {
    let i = &*e.inner;
    drop_snapshot(i, rel).map_err(|e| Error::kernel("refresh snapshot", rel.id.clone(), e))?;
    Plan::new("refresh snapshot").run(|p| take_snapshot(i, rel, p))?;
    i.rels
        .update(&rel.id, |r| r.when_synced = Some(relationship::now_secs()));
    Ok(Attached {
        code: ReturnCode::Completed,
        job: None,
        relationship: Some(rel.id.clone()),
    })
}

impl Lifecycle for Snapshot {
    fn attach(&self, e: &Engine, src: Resolved, tgt: Resolved) -> Result<Attached> {
        let i = &*e.inner;
        let mut rel = Plan::new("attach UnSyncAssoc").run(|p| {
            let sb = adopt::adopt_step(i, &src, p)?;
            let tb = adopt::adopt_step(i, &tgt, p)?;
            let rel = Relationship::new(CopyType::UnSyncAssoc, &sb, &tb)?;
            relationship::create_tag_step(i, &rel, p)?;
            stack::ensure_step(i, &sb, p)?;
            take_snapshot(i, &rel, p)?;
            Ok(rel)
        })?;
        rel.when_synced = Some(relationship::now_secs());
        let id = rel.id.clone();
        relationship::register(i, rel);
        Ok(Attached {
            code: ReturnCode::Completed,
            job: None,
            relationship: Some(id),
        })
    }

    fn modify(
        &self,
        e: &Engine,
        rel: &Relationship,
        op: Operation,
        force: bool,
    ) -> Result<Attached> {
        if is_restoring(&e.inner, rel)? {
            return Err(Error::InUse(format!(
                "snapshot {} is being merged back into {}; wait for the restore to finish",
                rel.id, rel.source
            )));
        }
        match op {
            Operation::Resync => refresh(e, rel),
            Operation::Restore => restore(e, rel, force),
            _ => Err(Error::NotSupported(format!(
                "operation {} {op} is not supported for UnSyncAssoc relationships (Resync takes \
                 a new point in time, Restore rolls the source back, Detach ends it)",
                op.value()
            ))),
        }
    }

    fn teardown(&self, i: &Inner, rel: &Relationship) -> Result<()> {
        if is_restoring(i, rel)? {
            return Err(Error::InUse(format!(
                "snapshot {} is being merged back into {}; it ends by itself when the restore \
                 is done",
                rel.id, rel.source
            )));
        }
        drop_snapshot(i, rel)?;
        relationship::forget(i, rel)
    }

    fn live_state(
        &self,
        i: &Inner,
        rel: &Relationship,
        v: &mut RelationshipView,
    ) -> Result<SyncState> {
        if is_restoring(i, rel)? {
            let s = merge_status(i, rel)?;
            if let SnapshotStatus::Active { used, total, .. } = s {
                v.cow_used_sectors = Some(used);
                v.cow_total_sectors = Some(total);
                v.progress_status = Some(format!(
                    "restoring {}: {} sectors left to merge back",
                    rel.source,
                    left_to_merge(&s).unwrap_or(0)
                ));
                return Ok(SyncState::RestoreInProgress);
            }
            v.progress_status = Some(format!(
                "the restore of {} failed ({s:?}): it is partly restored",
                rel.source
            ));
            return Ok(SyncState::Broken);
        }
        let st = i.dm.status(&rel.tgt_shim)?;
        let line = st
            .first()
            .ok_or_else(|| Error::Other(format!("{} has no status", rel.tgt_shim)))?;
        if line.target_type != "snapshot" {
            v.progress_status = Some(format!("{} is not a snapshot any more", rel.tgt_shim));
            return Ok(SyncState::Broken);
        }
        if let Some(reason) = failed_disk(i, rel)? {
            v.progress_status = Some(reason);
            return Ok(SyncState::Broken);
        }
        Ok(match SnapshotStatus::parse(&line.params)? {
            SnapshotStatus::Active { used, total, .. } => {
                v.cow_used_sectors = Some(used);
                v.cow_total_sectors = Some(total);
                v.percent_synced = 100;
                v.progress_status = Some("point-in-time image".into());
                SyncState::Idle
            }
            other => {
                v.progress_status = Some(format!(
                    "snapshot is {other:?}: the kernel gave it up when its COW store \
                     overflowed, or when copying a chunk out failed (a read error on the \
                     source's disk or a write error on the COW store); the image is lost, \
                     the source is unaffected"
                ));
                SyncState::Broken
            }
        })
    }

    /// A merge the daemon was following goes on in the kernel: follow it to the end.
    fn resume(&self, e: &Engine, rel: &Relationship) -> Result<()> {
        let i = &*e.inner;
        if is_restoring(i, rel)? {
            info!(relationship = %rel.id, "a restore is in progress: following it again");
            start_restore_job(e, rel)?;
        } else if spent(i, rel)? {
            // the merge completed, its job stopped before the target was released
            info!(relationship = %rel.id, "a restore completed before the daemon (re)started: ending it");
            let _k = i.kernel_lock();
            release_spent_target(i, rel)?;
        }
        Ok(())
    }

    fn replicates_in_real(&self) -> bool {
        false
    }

    fn maintained(&self) -> bool {
        false
    }
}
