//! CopyType 5 UnSyncUnAssoc: an independent full copy. The source's real device becomes a
//! `mirror` (the kernel copies every region, initiators keep writing to both legs); when every
//! region is in sync the job splits the mirror back to `linear`. The copy is consistent as of
//! that split, which is the moment the job completes; afterwards the target stands alone and
//! no relationship remains.

use super::relationship::{self, Finish, Lifecycle, Progress, Relationship};
use super::sync::start_mirror;
use super::{Attached, Engine, Resolved};
use crate::cim::Operation;
use crate::error::{Error, Result, ReturnCode};
use crate::service::{CopyType, RelationshipView, SyncState};

pub(crate) struct FullCopy;

impl Lifecycle for FullCopy {
    fn attach(&self, e: &Engine, src: Resolved, tgt: Resolved) -> Result<Attached> {
        let rel = start_mirror(e, CopyType::UnSyncUnAssoc, &src, &tgt)?;
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

    /// A copy interrupted by a restart gets a new job that finishes it.
    fn resume(&self, e: &Engine, rel: &Relationship) -> Result<()> {
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
