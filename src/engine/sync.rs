//! CopyType 3 Sync: the source's real device becomes a dm `mirror` with the source leg first
//! and `handle_errors`; a write completes only when both legs have it. A job follows the
//! initial resync from the kernel's in-sync region count; the relationship stays
//! Synchronized after, and a watcher drops a target leg the kernel marks failed.

use super::plan::Plan;
use super::relationship::{self, Finish, Lifecycle, Relationship};
use super::{adopt, stack, Attached, Engine, Resolved};
use crate::cim::Operation;
use crate::error::{Error, Result, ReturnCode};
use crate::service::CopyType;

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

/// Fracture and Resync, as the mirror types have them; Restore is not there yet.
pub(crate) fn modify_mirror(e: &Engine, rel: &Relationship, op: Operation) -> Result<Attached> {
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
        _ => Err(Error::NotSupported(format!(
            "operation {} {op} is not supported for {:?} relationships",
            op.value(),
            rel.copy_type
        ))),
    }
}

impl Lifecycle for SyncMirror {
    fn attach(&self, e: &Engine, src: Resolved, tgt: Resolved) -> Result<Attached> {
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
        _force: bool,
    ) -> Result<Attached> {
        modify_mirror(e, rel, op)
    }

    /// A failed leg under a rediscovered mirror must be dropped as soon as it shows (the
    /// kernel holds its writes meanwhile).
    fn resume(&self, e: &Engine, rel: &Relationship) -> Result<()> {
        relationship::watch(&e.inner, &rel.id);
        Ok(())
    }

    fn replicates_in_real(&self) -> bool {
        true
    }

    /// From now on a watcher drops a target leg the kernel marks failed.
    fn once_synced(&self, e: &Engine, rel: &Relationship) {
        relationship::watch(&e.inner, &rel.id);
    }

    fn maintained(&self) -> bool {
        true
    }
}
