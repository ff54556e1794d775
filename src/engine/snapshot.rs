//! CopyType 4 UnSyncAssoc: a point-in-time copy. The source's shim becomes `snapshot-origin`
//! and the target's shim becomes a persistent `snapshot` whose COW store is the target's own
//! device; the target backstore then serves the image of the moment of the switch. Done at
//! return (0), no job.
//!
//! The COW store needs room for changed chunks plus its metadata (one 4 KiB metadata chunk
//! per 256 data chunks, plus a header): a target of at least source × 257/256 + 16 KiB never
//! overflows. A smaller one overflows once enough of the source is rewritten; the snapshot
//! then turns Invalid, the relationship is reported Broken and the source is unaffected.

use super::plan::Plan;
use super::relationship::{self, Relationship};
use super::{adopt, Attached, Element, Engine, Inner};
use crate::dm::{SnapshotOriginParams, SnapshotParams, TableLine, Target};
use crate::error::{Error, Result, ReturnCode};
use crate::service::CopyType;

fn origin_table(rel: &Relationship) -> Vec<TableLine> {
    vec![TableLine {
        start: 0,
        length: rel.sectors,
        target: Target::SnapshotOrigin(SnapshotOriginParams {
            device: rel.src_raw.clone(),
        }),
    }]
}

fn snapshot_table(i: &Inner, rel: &Relationship) -> Vec<TableLine> {
    vec![TableLine {
        start: 0,
        length: rel.sectors,
        target: Target::Snapshot(SnapshotParams {
            origin: rel.src_raw.clone(),
            cow: rel.tgt_raw.clone(),
            persistent: true,
            chunk_size: i.opts.snapshot_chunk,
        }),
    }]
}

/// With the source suspended: the target becomes a fresh snapshot (COW header zeroed first),
/// then the source resumes as snapshot-origin. Undone step by step on failure.
fn take_snapshot<'a>(i: &'a Inner, rel: &Relationship, p: &mut Plan<'a>) -> Result<()> {
    let src = rel.src_shim.clone();
    let tgt = rel.tgt_shim.clone();
    p.step(
        format!("suspend {src}"),
        || i.dm.suspend(&src, false, i.opts.suspend_timeout),
        {
            let src = src.clone();
            move || i.dm.resume(&src)
        },
    )?;
    // the target is on linear here: its first chunk is the COW header
    p.last(|| i.zero_head(&tgt, (i.opts.snapshot_chunk * 512) as usize))?;
    let snap = snapshot_table(i, rel);
    let back = Inner::linear(&rel.tgt_raw, rel.target_sectors);
    p.step(
        format!("load snapshot on {tgt}"),
        || i.swap_table(&tgt, &snap),
        {
            let tgt = tgt.clone();
            move || i.swap_table(&tgt, &back)
        },
    )?;
    let origin = origin_table(rel);
    p.step(
        format!("load snapshot-origin on {src}"),
        || i.dm.load(&src, &origin),
        {
            let src = src.clone();
            move || i.dm.clear(&src)
        },
    )?;
    p.last(|| i.dm.resume(&src))
}

pub(crate) fn attach(e: &Engine, src: Element, tgt: Element) -> Result<Attached> {
    let i = &*e.inner;
    let rel = Plan::new("attach UnSyncAssoc").run(|p| {
        let sb = adopt::adopt_step(i, &src, p)?;
        let tb = adopt::adopt_step(i, &tgt, p)?;
        let rel = Relationship::new(CopyType::UnSyncAssoc, &sb, &tb)?;
        relationship::create_tag_step(i, &rel, p)?;
        take_snapshot(i, &rel, p)?;
        Ok(rel)
    })?;
    let mut rel = rel;
    rel.when_synced = Some(relationship::now_secs());
    let id = rel.id.clone();
    relationship::register(i, rel);
    Ok(Attached {
        code: ReturnCode::Completed,
        job: None,
        relationship: Some(id),
    })
}

/// ModifySynchronization Resync on a snapshot: a new point in time (the old image is
/// discarded).
pub(crate) fn refresh(e: &Engine, rel: &Relationship) -> Result<Attached> {
    let i = &*e.inner;
    Plan::new("refresh snapshot")
        .run(|p| {
            let back = Inner::linear(&rel.tgt_raw, rel.target_sectors);
            let src = rel.src_shim.clone();
            p.step(
                format!("suspend {src}"),
                || i.dm.suspend(&rel.src_shim, false, i.opts.suspend_timeout),
                move || i.dm.resume(&src),
            )?;
            // drop the old snapshot: the target back on linear, then a new one from there
            p.last(|| i.swap_table(&rel.tgt_shim, &back))?;
            p.last(|| i.dm.resume(&rel.src_shim))?;
            Ok(())
        })
        .map_err(|e| Error::kernel("refresh snapshot", rel.id.clone(), e))?;
    Plan::new("refresh snapshot").run(|p| take_snapshot(i, rel, p))?;
    if let Some(r) = i.rels.lock().unwrap().get_mut(&rel.id) {
        r.when_synced = Some(relationship::now_secs());
    }
    Ok(Attached {
        code: ReturnCode::Completed,
        job: None,
        relationship: Some(rel.id.clone()),
    })
}
