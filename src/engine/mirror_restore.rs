//! ModifySynchronization Restore (5) of a fractured Sync or Async mirror: the target's image
//! goes back onto the source while the LUN serves that image from the first moment.
//!
//! The source's real device becomes a dm `mirror` whose first leg is the target's disk and
//! whose second is the source's. dm-mirror reads from its first leg (and only from it where a
//! region is not yet in sync) and copies that leg onto the other, so every read shows the
//! target's image at once, every write goes to both disks, and a job follows the kernel's
//! in-sync count. Once in sync, the relationship's own table is loaded again with `nosync`,
//! as a mode change does ([`super::mode`]): the `mirror` with the source leg first for a Sync
//! `mirror`, for a relationship on a raid1 its raid1 on zeroed metadata (a clean bitmap). The
//! whole device is copied: the mirror keeps no record of what differs, and md cannot recover
//! the source leg from the other one by a fracture's bitmap.
//!
//! The job cannot be stopped: the source holds part of the image until it ends. A daemon
//! restart finds the restore from the table (a mirror whose first leg is the target's disk)
//! and follows it to the end with a new job.
//!
//! A leg failing meanwhile: the source's disk, and the LUN moves onto the target's disk, which
//! holds the whole image ([`super::sync::serve_from_target`]); the target's disk, and the
//! source is served alone, partly restored, and the relationship says so.

use super::names;
use super::relationship::{self, Finish, Relationship};
use super::{mode, Attached, Engine, Inner};
use crate::dm::{Devno, MirrorParams, MirrorStatus, Target};
use crate::error::{Error, Result, ReturnCode};
use tracing::{info, warn};

/// Whether the source's real device restores `rel`'s target onto the source now.
pub(crate) fn restoring(i: &Inner, rel: &Relationship) -> Result<bool> {
    Ok(match i.dm.table(&rel.real)?.first().map(|l| &l.target) {
        Some(Target::Mirror(m)) => m
            .legs
            .first()
            .is_some_and(|l| rel.tgt_raw.is_written_as(&l.device)),
        _ => false,
    })
}

/// The source's disk of a restore's mirror `m` (a relationship's record names its first leg as
/// the target's disk and its second as the source's), or `None` for any other mirror.
pub(crate) fn source_leg(i: &Inner, m: &MirrorParams) -> Result<Option<String>> {
    let [first, second] = m.legs.as_slice() else {
        return Ok(None);
    };
    let (Ok(t), Ok(s)) = (
        first.device.parse::<Devno>(),
        second.device.parse::<Devno>(),
    ) else {
        return Ok(None);
    };
    for d in i.dm.list()? {
        if names::parse_tag(&d.name).is_some()
            && relationship::record_devices(&i.dm.table(&d.name)?) == Some((t, s))
        {
            return Ok(Some(second.device.clone()));
        }
    }
    Ok(None)
}

/// Start the restore of the fractured mirror `rel`.
pub(crate) fn start(e: &Engine, rel: &Relationship, force: bool) -> Result<Attached> {
    let i = &*e.inner;
    let pr = relationship::progress(i, rel)?;
    // a raid1 serving from the target's disk alone, its source's disk failed: the target
    // holds everything
    let raid_legs = relationship::failed_raid_legs(i, rel)?;
    let source_lost = raid_legs == [0];
    if !source_lost {
        if let Some(why) = rel.broken.clone().or(pr.failed.clone()) {
            return Err(Error::Invalid(format!(
                "relationship {} is broken ({why}): its target is not known to hold a whole \
                 image; nothing was restored",
                rel.id
            )));
        }
    }
    if pr.replicating && !source_lost {
        return Err(Error::Invalid(format!(
            "relationship {} is not fractured: its target mirrors the source, there is no \
             other image to restore; Fracture it first to keep an image",
            rel.id
        )));
    }
    if relationship::replicating(i, &rel.source_name)
        .iter()
        .any(|r| r.id != rel.id)
        || rel.table_dev != rel.real
    {
        return Err(Error::InUse(format!(
            "a full copy of {} runs in its real device; wait for it to complete or terminate \
             its job",
            rel.source
        )));
    }
    relationship::refuse_restore_over(i, rel, force, "a restore copies its image back")?;
    let table = relationship::mirror_table(i, rel.tgt_raw, &[rel.src_raw], rel.sectors, false);
    relationship::swap_real(i, rel, &table)?;
    info!(relationship = %rel.id, device = %rel.real, disk = %rel.tgt_raw, "restoring: the real device reads from the target's disk and copies it onto the source's");
    i.rels.update(&rel.id, |r| {
        r.broken = None;
        r.when_synced = None;
        r.target_writes = None;
        r.watch = 0;
    });
    let job = start_job(e, rel)?;
    Ok(Attached {
        code: ReturnCode::JobStarted,
        job: Some(job),
        relationship: Some(rel.id.clone()),
    })
}

fn start_job(e: &Engine, rel: &Relationship) -> Result<String> {
    relationship::start_job_with(
        e,
        &rel.id,
        Finish::Keep,
        "restore",
        Some(format!(
            "a restore cannot be stopped: {} already holds part of the target's image",
            rel.source
        )),
    )
}

/// A rediscovered relationship: if its real device restores, a job follows it to the end.
pub(crate) fn resume(e: &Engine, rel: &Relationship) -> Result<bool> {
    if !restoring(&e.inner, rel)? {
        return Ok(false);
    }
    info!(relationship = %rel.id, "a restore is under way: following it");
    start_job(e, rel)?;
    Ok(true)
}

/// The restore's mirror is in sync: the relationship's own table again, with nothing copied.
pub(crate) fn finish(i: &Inner, rel: &Relationship) -> Result<()> {
    let table = if rel.raid {
        let meta = rel.meta_names()?;
        for m in &meta {
            i.zero_head(m, i.opts.raid_meta_sectors)?;
        }
        let mut t = relationship::raid_table(
            i,
            rel,
            [i.devno(&meta[0])?, i.devno(&meta[1])?],
            rel.src_raw,
        );
        if let Some(Target::Raid(r)) = t.first_mut().map(|l| &mut l.target) {
            r.nosync = true;
        }
        t
    } else {
        relationship::mirror_table(i, rel.src_raw, &[rel.tgt_raw], rel.sectors, true)
    };
    mode::swap_in_sync(i, rel, &table)?;
    if rel.raid {
        let seen = i.dm.sectors_written(&rel.tgt_shim).ok();
        i.rels.update(&rel.id, |r| r.target_writes = seen);
    }
    info!(relationship = %rel.id, device = %rel.real, "restore complete: the source leg first again, nothing copied");
    Ok(())
}

/// With the kernel lock held: a leg of the restore's mirror failed. Returns the reason.
pub(crate) fn leg_failed(i: &Inner, rel: &Relationship, why: &str) -> Result<String> {
    let st = i.dm.status(&rel.real)?;
    let failed = match st.first() {
        Some(l) if l.target_type == "mirror" => MirrorStatus::parse(&l.params)?.failed_legs(),
        _ => Vec::new(),
    };
    if !failed.contains(&0) {
        // the source's disk: the target's holds the whole image
        return super::sync::serve_from_target(i, rel, &format!("{why}; during the restore"));
    }
    let reason = format!(
        "{why}; the target's disk failed during the restore: the source is served alone, \
         partly restored (a mix of the target's image and its own data)"
    );
    i.rels.update(&rel.id, |r| r.broken = Some(reason.clone()));
    relationship::swap_real(i, rel, &Inner::linear(rel.src_raw, rel.sectors))?;
    relationship::mark_record(i, rel, true)?;
    warn!(relationship = %rel.id, device = %rel.real, disk = %rel.src_raw, "the target failed during a restore: the source is on its own disk, partly restored");
    Ok(reason)
}
