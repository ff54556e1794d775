//! CopyType 3 Sync: a write completes only when both legs have it. Where the target has the
//! room of an Async copy (two metadata areas past the source's size), the source's real
//! device becomes a dm-raid raid1 like an Async mirror's, without `write_mostly`: its
//! write-intent bitmap makes a Fracture, a failed target leg and a reboot copy only what
//! changed, and md degrades by itself when either disk fails. On a same-size target (or
//! joining a full copy that runs in a mirror) it is a dm `mirror` with the source leg first and
//! `handle_errors`, which keeps no change log: a watcher drops a target leg the kernel marks
//! failed, a failed source leg moves the LUN onto the target's disk when the target is whole,
//! and every Resync copies everything. A job follows the initial copy from the kernel's
//! in-sync count; the relationship stays Synchronized after.

use super::plan::Plan;
use super::relationship::{self, Finish, Lifecycle, Relationship};
use super::{adopt, stack, Attached, Engine, Inner, Resolved};
use crate::cim::Operation;
use crate::dm::{DmName, Sectors, TableLine, Target};
use crate::error::{Error, Result, ReturnCode};
use crate::service::CopyType;
use tracing::info;

pub(crate) struct SyncMirror;

/// Adopt both objects, record the relationship, build the source's stack and load the mirror
/// into its real device. Rolled back on failure.
pub(crate) fn start_mirror(
    e: &Engine,
    ct: CopyType,
    src: &Resolved,
    tgt: &Resolved,
) -> Result<Relationship> {
    let i = &*e.inner;
    Plan::new(format!("attach {ct:?}")).run(|p| {
        let sb = adopt::adopt_step(i, src, p)?;
        let tb = adopt::adopt_step(i, tgt, p)?;
        let rel = Relationship::new(ct, &sb, &tb)?;
        relationship::create_tag_step(i, &rel, p)?;
        let st = stack::ensure_step(i, &sb, p)?;
        // a full copy and a Sync mirror of one source share one mirror, a leg each
        let existing = relationship::replicating(i, &rel.source_name);
        let synced = existing
            .first()
            .is_some_and(|r| relationship::progress(i, r).is_ok_and(|p| p.synced));
        let mut all = existing.clone();
        all.push(rel.clone());
        let table = relationship::real_table(i, &st, &all, false)?;
        let back = relationship::real_table(i, &st, &existing, synced)?;
        let undo = rel.clone();
        p.step(
            format!("load mirror on {}", rel.real),
            || i.swap_table(&rel.real, &table),
            move || relationship::swap_real(i, &undo, &back),
        )?;
        Ok(rel)
    })
}

/// Fracture, Resync and Restore, as the mirror types have them.
pub(crate) fn modify_mirror(
    e: &Engine,
    rel: &Relationship,
    op: Operation,
    force: bool,
) -> Result<Attached> {
    match op {
        Operation::Fracture => {
            relationship::fracture(e, rel)?;
            Ok(Attached {
                code: ReturnCode::Completed,
                job: None,
                relationship: Some(rel.id.clone()),
            })
        }
        Operation::Resync => relationship::resync(e, rel),
        Operation::Restore => super::mirror_restore::start(e, rel, force),
        _ => Err(Error::NotSupported(format!(
            "operation {} {op} is not supported for {:?} relationships",
            op.value(),
            rel.copy_type
        ))),
    }
}

impl Lifecycle for SyncMirror {
    fn attach(&self, e: &Engine, src: Resolved, tgt: Resolved) -> Result<Attached> {
        let i = &*e.inner;
        let room = super::async_copy::check_room(
            i,
            &src.so.element(),
            src.sectors,
            &tgt.so.element(),
            tgt.sectors,
        )
        .is_ok();
        if room && relationship::replicating(i, &src.so.name).is_empty() {
            return super::async_copy::attach_raid1(e, CopyType::Sync, &src, &tgt, "synchronise");
        }
        let rel = start_mirror(e, CopyType::Sync, &src, &tgt)?;
        let id = rel.id.clone();
        relationship::register(&e.inner, rel);
        let job = relationship::start_job(e, &id, Finish::Keep, "synchronise")?;
        Ok(Attached {
            code: ReturnCode::JobStarted,
            job: Some(job),
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
        modify_mirror(e, rel, op, force)
    }

    /// The source's disk failed. With the target in sync the LUN moves onto the target's
    /// disk; during the initial copy it gets the failed disk's errors at once instead of
    /// writes held by the mirror (see [`source_failed`]).
    /// (A raid1 has served from the target's leg by itself already.)
    fn source_leg_failed(
        &self,
        i: &Inner,
        rel: &Relationship,
        why: &str,
        target_healthy: bool,
    ) -> Result<Option<String>> {
        if rel.raid {
            return Ok(None);
        }
        source_failed(i, rel, why, target_healthy).map(Some)
    }

    /// A restore under way gets a job that finishes it; otherwise a failed leg under a
    /// rediscovered `mirror` must be dropped as soon as it shows (the kernel holds its writes
    /// meanwhile).
    fn resume(&self, e: &Engine, rel: &Relationship) -> Result<()> {
        if !super::mirror_restore::resume(e, rel)? && !rel.raid {
            relationship::watch(&e.inner, &rel.id);
        }
        Ok(())
    }

    fn replicates_in_real(&self) -> bool {
        true
    }

    /// The raid1 metadata devices, on a raid1.
    fn metadata(&self, rel: &Relationship) -> Result<Vec<DmName>> {
        Ok(if rel.raid {
            rel.meta_names()?.to_vec()
        } else {
            Vec::new()
        })
    }

    /// From now on a watcher drops a target leg the kernel marks failed (a `mirror` holds the
    /// writes for it; a raid1 degrades by itself).
    fn once_synced(&self, e: &Engine, rel: &Relationship) {
        if !rel.raid {
            relationship::watch(&e.inner, &rel.id);
        }
    }

    fn maintained(&self) -> bool {
        true
    }
}

/// The source leg of a lone Sync mirror failed; the mirror holds every write until its table
/// is reloaded. Target in sync (seen so by its job, its leg healthy): the LUN moves onto the
/// target's disk ([`serve_from_target`]). Otherwise the target is incomplete: the real device
/// goes back on the failed disk, whose errors reach the initiator at once.
pub(crate) fn source_failed(
    i: &Inner,
    rel: &Relationship,
    why: &str,
    target_healthy: bool,
) -> Result<String> {
    // Whole: its job, or the watcher of a rediscovered mirror, saw every region in sync (the
    // kernel's count drops as soon as writes fail on the source leg, so it cannot tell
    // afterwards) and its leg is healthy. A mirror that failed before anyone saw it in sync
    // takes the conservative way.
    let target_whole = rel.when_synced.is_some() && target_healthy;
    if !target_whole {
        let reason = format!(
            "{why}; the source's disk failed during the initial copy: the target is incomplete \
             and not used, the LUN returns the failed disk's I/O errors"
        );
        i.rels.update(&rel.id, |r| r.broken = Some(reason.clone()));
        relationship::swap_real(i, rel, &Inner::linear(rel.src_raw, rel.sectors))?;
        relationship::mark_record(i, rel, true)?;
        info!(relationship = %rel.id, device = %rel.real, disk = %rel.src_raw, "source leg failed during the copy: the source is on its failed disk alone");
        return Ok(reason);
    }
    serve_from_target(i, rel, why)
}

/// The source's disk failed and the target's holds the whole image: the real device goes onto
/// the target's disk with a `noflush` suspend, so the writes held by the mirror complete there
/// and the LUN keeps its identity; the target's own shim gets an `error` table (the disk now
/// serves the source's LUN, nothing else may write it); every relationship of the source
/// records the target's disk as the source's. Returns the reason.
pub(crate) fn serve_from_target(i: &Inner, rel: &Relationship, why: &str) -> Result<String> {
    let reason = format!(
        "{why}; the source's disk failed: the LUN now runs on the target's disk {} (the \
         target's own backstore is fenced with an error table); Detach, then attach a new \
         target to have a copy again",
        rel.tgt_raw
    );
    i.rels.update(&rel.id, |r| r.broken = Some(reason.clone()));
    relationship::swap_real(i, rel, &Inner::linear(rel.tgt_raw, rel.sectors))?;
    info!(relationship = %rel.id, device = %rel.real, disk = %rel.tgt_raw, "source leg failed: the source now runs on the target's disk");
    let fence = vec![TableLine::new(
        Sectors(0),
        rel.target_sectors,
        Target::Error,
    )];
    i.swap_table(&rel.tgt_shim, &fence)?;
    info!(device = %rel.tgt_shim, "target fenced: its disk serves the source's LUN");
    for other in i.relationships_of(&rel.source) {
        i.rels.update(&other.id, |r| r.src_raw = rel.tgt_raw);
        let moved = Relationship {
            src_raw: rel.tgt_raw,
            ..other.clone()
        };
        relationship::mark_record(i, &moved, other.id == rel.id || other.broken.is_some())?;
    }
    Ok(reason)
}
