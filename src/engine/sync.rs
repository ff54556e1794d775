//! CopyType 3 Sync: the source's shim becomes a dm `mirror` with the source leg first and
//! `handle_errors`; a write completes only when both legs have it. A job follows the initial
//! resync from the kernel's in-sync region count; the relationship stays Synchronized after.

use super::plan::Plan;
use super::relationship::{self, Finish, Relationship};
use super::{adopt, Attached, Element, Engine, Inner};
use crate::error::{Result, ReturnCode};
use crate::service::CopyType;

/// Adopt both objects, record the relationship, load the mirror. Rolled back on failure.
pub(crate) fn start_mirror(
    e: &Engine,
    ct: CopyType,
    src: &Element,
    tgt: &Element,
) -> Result<Relationship> {
    let i = &*e.inner;
    Plan::new(format!("attach {ct:?}")).run(|p| {
        let sb = adopt::adopt_step(i, src, p)?;
        let tb = adopt::adopt_step(i, tgt, p)?;
        let rel = Relationship::new(ct, &sb, &tb)?;
        relationship::create_tag_step(i, &rel, p)?;
        let table = relationship::mirror_table(i, &rel);
        let shim = rel.src_shim.clone();
        let linear = Inner::linear(&rel.src_raw, rel.sectors);
        p.step(
            format!("load mirror on {}", rel.src_shim),
            || i.swap_table(&rel.src_shim, &table),
            move || i.swap_table(&shim, &linear),
        )?;
        Ok(rel)
    })
}

pub(crate) fn attach(e: &Engine, src: Element, tgt: Element) -> Result<Attached> {
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
