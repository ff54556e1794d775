//! CopyType 5 UnSyncUnAssoc: an independent full copy. The source's shim becomes a `mirror`
//! (the kernel copies every region, initiators keep writing to both legs); when every region
//! is in sync the job splits the mirror back to `linear`. The copy is consistent as of that
//! split, which is the moment the job completes; afterwards the target stands alone and no
//! relationship remains.

use super::relationship::{self, Finish};
use super::sync::start_mirror;
use super::{Attached, Element, Engine};
use crate::error::{Result, ReturnCode};
use crate::service::CopyType;

pub(crate) fn attach(e: &Engine, src: Element, tgt: Element) -> Result<Attached> {
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
