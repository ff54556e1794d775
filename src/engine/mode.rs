//! ModifySynchronization 10 Reset To Sync and 11 Reset To Async: a mirror in sync becomes the
//! other mirror type live, and nothing is copied.
//!
//! Both types keep both legs identical once in sync, so the switch is one table swap: the old
//! table is suspended (`noflush`: a mirror may hold writes for a failed leg), its status read
//! while suspended must still say every leg is in sync (md's suspend has waited for the
//! write-behind writes by then), and the new table goes in.
//!
//! A mirror on a raid1 (every Async one, a Sync one whose target has the room) keeps its
//! raid1: only the target leg's `write_mostly` changes, on the same metadata, so md goes on
//! from its superblocks and bitmap (and keeps the `max_write_behind` it was created with). A
//! Sync `mirror` becoming Async gets a raid1 whose metadata is carved from the target's tail
//! (so the target must have the room an Async attach needs) on zeroed devices, loaded with
//! `nosync`, which tells the kernel that the legs need no copy: it starts with a clean bitmap,
//! and a later Fracture tracks changes as usual.
//!
//! The relationship's record is named after its copy type, so the switch creates the new
//! record before the swap and removes the old one after it. A daemon stopped in between finds
//! two records of one target; the real device's table says which one holds (see
//! [`super::relationship::rediscover`]), and metadata devices no raid1 uses are removed at
//! start.

use super::plan::Plan;
use super::relationship::{self, Relationship};
use super::{async_copy, names, Attached, Engine, Inner};
use crate::cim::Operation;
use crate::dm::{TableLine, Target};
use crate::error::{Error, Result, ReturnCode};
use crate::service::CopyType;
use tracing::{info, warn};

/// Switch the mirror `rel` to copy type `to` (Sync or Async).
pub(crate) fn reset(e: &Engine, rel: &Relationship, op: Operation) -> Result<Attached> {
    let i = &*e.inner;
    let to = match op {
        Operation::ResetToSync => CopyType::Sync,
        _ => CopyType::Async,
    };
    let done = Attached {
        code: ReturnCode::Completed,
        job: None,
        relationship: Some(rel.id.clone()),
    };
    if rel.copy_type == to {
        info!(relationship = %rel.id, copy_type = ?to, "already of this copy type: nothing to change");
        return Ok(done);
    }
    check_switchable(i, rel, op)?;
    let new = Relationship {
        copy_type: to,
        tag: names::tag(to, &rel.target_name)?,
        raid: true,
        ..rel.clone()
    };
    Plan::new(format!("reset {} to {to:?}", rel.id)).run(|p| {
        let table = if rel.raid {
            // the same array: its superblocks say the legs are in sync
            let [m0, m1] = rel.meta_names()?;
            relationship::raid_table(i, &new, [i.devno(&m0)?, i.devno(&m1)?], rel.src_raw)
        } else {
            let meta = async_copy::create_metadata(i, &new, p)?;
            let mut t = relationship::raid_table(i, &new, meta, rel.src_raw);
            if let Some(Target::Raid(r)) = t.first_mut().map(|l| &mut l.target) {
                r.nosync = true;
            }
            t
        };
        relationship::create_tag_step(i, &new, p)?;
        // the last step: nothing after it can fail the plan
        p.last(|| swap_in_sync(i, rel, &table))
    })?;
    info!(relationship = %rel.id, device = %rel.real, write_mostly = (to == CopyType::Async), copy_type = ?to, "mirror type changed without a copy");
    super::journal::crash_point(&format!("load raid1 on {}", rel.real));
    i.rels.update(&rel.id, |r| {
        r.copy_type = to;
        r.tag = new.tag.clone();
        if !rel.raid {
            r.target_writes = i.dm.sectors_written(&rel.tgt_shim).ok();
        }
        r.raid = true;
        // a Sync mirror's watcher stops: a raid1 degrades by itself
        r.watch = 0;
    });
    // The old record is removed now, or by the next start if this fails.
    match i.dm.remove(&rel.tag) {
        Ok(()) => info!(device = %rel.tag, relationship = %rel.id, "removed device"),
        Err(err) => {
            warn!(device = %rel.tag, error = %err, "cannot remove the old copy type's record; the next start removes it")
        }
    }
    Ok(done)
}

/// Only a lone mirror in sync switches: a full copy sharing its table would be copied again
/// or lose its leg.
fn check_switchable(i: &Inner, rel: &Relationship, op: Operation) -> Result<()> {
    let what = format!("operation {} {op} on relationship {}", op.value(), rel.id);
    if !matches!(rel.copy_type, CopyType::Sync | CopyType::Async) {
        return Err(Error::NotSupported(format!(
            "{what}: only Sync and Async mirrors change their mode; this is {:?}",
            rel.copy_type
        )));
    }
    if relationship::replicating(i, &rel.source_name)
        .iter()
        .any(|r| r.id != rel.id)
        || rel.table_dev != rel.real
    {
        return Err(Error::InUse(format!(
            "{what}: a full copy of the same source runs in its mirror; wait for it to \
             complete or terminate its job"
        )));
    }
    let pr = relationship::progress(i, rel)?;
    if let Some(why) = rel.broken.clone().or(pr.failed) {
        return Err(Error::Invalid(format!(
            "{what}: the relationship is broken ({why}); Resync it first"
        )));
    }
    if !pr.replicating {
        return Err(Error::Invalid(format!(
            "{what}: the relationship is fractured; Resync it first"
        )));
    }
    if !pr.synced {
        return Err(Error::Invalid(format!(
            "{what}: the target is still being copied ({}%); wait until it is Synchronized",
            pr.percent
        )));
    }
    if !rel.raid {
        async_copy::check_room(i, &rel.source, rel.sectors, &rel.target, rel.target_sectors)?;
    }
    Ok(())
}

/// Suspend the source's real device, check that its suspended table still has no failed leg,
/// and put `table` in; the old table again on any failure. (A suspended raid1 reports its
/// resync as frozen and its sync ratio as 0, so only a mirror's count is read again there;
/// [`check_switchable`] saw the raid1 in sync just before, and with the kernel lock held
/// nothing but a failing leg can change that.)
pub(crate) fn swap_in_sync(i: &Inner, rel: &Relationship, table: &[TableLine]) -> Result<()> {
    let dev = &rel.real;
    let mirror = matches!(
        i.dm.table(dev)?.first().map(|l| &l.target),
        Some(Target::Mirror(_))
    );
    i.swap_table_checked(dev, true, table, || {
        let pr = relationship::progress(i, rel)?;
        match pr.failed {
            None if pr.replicating && (pr.synced || !mirror) => Ok(()),
            failed => Err(Error::Invalid(format!(
                "relationship {} is no longer in sync ({}); nothing was changed",
                rel.id,
                failed.unwrap_or_else(|| format!("{}%", pr.percent))
            ))),
        }
    })
}
