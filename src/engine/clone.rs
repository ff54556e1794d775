//! CopyType 5 UnSyncUnAssoc: an independent full copy. The source's real device becomes a
//! `mirror` (the kernel copies every region, initiators keep writing to both legs); when every
//! region is in sync the job splits the mirror back to `linear`. The copy is consistent as of
//! that split, which is the moment the job completes; afterwards the target stands alone and
//! no relationship remains.
//!
//! Beside a Sync `mirror` the copy is one more leg of that mirror. Beside a raid1 (an Async
//! mirror, or a Sync one whose target has the room) the raid1 keeps the real device, and the copy replicates one level down, in a copy device
//! `copy-SOURCE` that takes the place of the source's disk under the raid1's source leg:
//!
//! ```text
//! real-SRC  raid1  leg 0: copy-SRC  mirror <source's disk> <copy's disk>
//!                  leg 1: the raid1's target
//! ```
//!
//! It is built in three table changes, each harmless alone: the copy device as `linear` over
//! the disk, the raid1's source leg moved onto it (reloaded without `rebuild`: its metadata
//! keeps what each leg holds, so the raid1's target is not copied again), then the copy
//! device's `mirror`, which from then on sees every write. The split goes the other way: the
//! copy device back on `linear`, the raid1 back on the disk, the copy device removed.

use super::plan::Plan;
use super::relationship::{self, Finish, Lifecycle, Progress, Relationship};
use super::sync::start_mirror;
use super::{adopt, names, stack, Attached, Engine, Inner, Resolved};
use crate::cim::Operation;
use crate::error::{Error, Result, ReturnCode};
use crate::service::{CopyType, RelationshipView, SyncState};

pub(crate) struct FullCopy;

impl Lifecycle for FullCopy {
    fn attach(&self, e: &Engine, src: Resolved, tgt: Resolved) -> Result<Attached> {
        let beside_raid1 = e
            .inner
            .relationships_of(&src.so.element())
            .iter()
            .any(|r| r.raid);
        let rel = if beside_raid1 {
            under_raid(&e.inner, &src, &tgt)?
        } else {
            start_mirror(e, CopyType::UnSyncUnAssoc, &src, &tgt)?
        };
        let id = rel.id.clone();
        relationship::register(&e.inner, rel);
        let job = relationship::start_job(e, &id, Finish::Split, "full copy")?;
        Ok(Attached {
            code: ReturnCode::JobStarted,
            job: Some(job),
            relationship: None,
        })
    }

    fn modify(
        &self,
        _e: &Engine,
        rel: &Relationship,
        op: Operation,
        _force: bool,
    ) -> Result<Attached> {
        Err(Error::NotSupported(format!(
            "operation {} {op} is not supported while the full copy {} runs; Detach (or \
             terminating its job) stops it",
            op.value(),
            rel.id
        )))
    }

    /// A copy interrupted by a restart gets a new job that finishes it; a split interrupted
    /// by it (the copy's table already gone) is completed.
    fn resume(&self, e: &Engine, rel: &Relationship) -> Result<()> {
        let i = &*e.inner;
        if !relationship::progress(i, rel)?.replicating {
            let _k = i.kernel_lock();
            tracing::warn!(relationship = %rel.id, "completing the split of a full copy interrupted by a restart");
            return self.teardown(i, rel);
        }
        relationship::start_job(
            e,
            &rel.id,
            Finish::Split,
            "copy (resumed after daemon restart)",
        )
        .map(|_| ())
    }

    fn replicates_in_real(&self) -> bool {
        true
    }

    fn replicating_state(&self, pr: &Progress, v: &mut RelationshipView) -> SyncState {
        v.progress_status = Some(format!("copying, {}%", pr.percent));
        SyncState::CopyInProgress
    }

    fn maintained(&self) -> bool {
        false
    }
}

/// Build the copy in a copy device under the source's raid1 (see the module's notes).
fn under_raid(i: &Inner, src: &Resolved, tgt: &Resolved) -> Result<Relationship> {
    Plan::new("attach UnSyncUnAssoc beside a raid1").run(|p| {
        let sb = adopt::adopt_step(i, src, p)?;
        let tb = adopt::adopt_step(i, tgt, p)?;
        let mut rel = Relationship::new(CopyType::UnSyncUnAssoc, &sb, &tb)?;
        rel.table_dev = names::copy(&rel.source_name)?;
        relationship::create_tag_step(i, &rel, p)?;
        let st = stack::ensure_step(i, &sb, p)?;
        let raid = relationship::replicating(i, &rel.source_name);
        let copy = rel.table_dev.clone();
        let linear = st.linear();
        let copy2 = copy.clone();
        p.step(
            format!("create {copy} over {}", st.raw),
            || i.dm.create(&copy, &linear).map(|_| ()),
            move || i.dm.remove(&copy2),
        )?;
        let mut all = raid.clone();
        all.push(rel.clone());
        let onto_copy = relationship::real_table(i, &st, &all, true)?;
        let onto_disk = relationship::real_table(i, &st, &raid, true)?;
        let real = st.real.clone();
        p.step(
            format!("move the raid1 source leg of {} onto {copy}", st.real),
            || i.swap_table(&st.real, &onto_copy),
            move || i.swap_table(&real, &onto_disk),
        )?;
        let mirror = relationship::mirror_table(i, st.raw, &[rel.tgt_raw], st.sectors, false);
        let back = st.linear();
        let copy3 = copy.clone();
        p.step(
            format!("load mirror on {copy}"),
            || i.swap_table(&copy, &mirror),
            move || relationship::swap_replicating(i, &copy3, &back),
        )?;
        Ok(rel)
    })
}
