//! A source's device stack, built the way LVM builds an origin with snapshots:
//!
//! ```text
//! LIO backstore -> so-SRC  snapshot-origin real-SRC      (snapshot-merge while restoring)
//!                  real-SRC linear | mirror | raid1 over the source's disk (and its copies)
//! snapshot target: so-TGT  snapshot real-SRC <target's disk> P <chunk>
//! ```
//!
//! A storage object gets its real device with its first relationship as a source, and loses it
//! with its last (its shim is `linear` over its disk again). Snapshots are added and removed
//! while the origin is suspended; mirror, raid and clone tables are loaded into the real device
//! only, so the snapshots above it are untouched. With no snapshot the origin passes every I/O
//! straight through.

use super::adopt::Backing;
use super::plan::Plan;
use super::{names, Inner};
use crate::dm::{Devno, DmName, Sectors, SnapshotOriginParams, TableLine, Target};
use crate::error::{Error, Result};
use tracing::info;

/// The devices of one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stack {
    /// The storage object's own device (what LIO opens).
    pub shim: DmName,
    /// The device under the origin that holds the replicating table.
    pub real: DmName,
    /// The source's disk.
    pub raw: Devno,
    pub sectors: Sectors,
}

impl Stack {
    pub fn of(b: &Backing) -> Result<Stack> {
        Ok(Stack {
            shim: b.shim.clone(),
            real: names::real(&b.so.name)?,
            raw: b.raw,
            sectors: b.sectors,
        })
    }

    /// The device number of the real device.
    pub fn real_devno(&self, i: &Inner) -> Result<Devno> {
        i.devno(&self.real)
    }

    /// The origin's table: `snapshot-origin` over the real device.
    pub fn origin_table(&self, i: &Inner) -> Result<Vec<TableLine>> {
        Ok(vec![TableLine::new(
            Sectors(0),
            self.sectors,
            Target::SnapshotOrigin(SnapshotOriginParams {
                device: self.real_devno(i)?.to_string(),
            }),
        )])
    }

    /// The real device's table when nothing replicates: `linear` over the disk.
    pub fn linear(&self) -> Vec<TableLine> {
        Inner::linear(self.raw, self.sectors)
    }

    /// The device the shim's live origin (or merge) table sits on, if it has one.
    pub fn origin_of_shim(&self, i: &Inner) -> Result<Option<String>> {
        Ok(match i.dm.table(&self.shim)?.first().map(|l| &l.target) {
            Some(Target::SnapshotOrigin(o)) => Some(o.device.clone()),
            Some(Target::SnapshotMerge(m)) => Some(m.origin.clone()),
            _ => None,
        })
    }

    /// Whether the real device exists.
    pub fn built(&self, i: &Inner) -> Result<bool> {
        Ok(i.dm.info(&self.real)?.is_some())
    }
}

/// Give the source its real device and put its shim on `snapshot-origin` over it, as steps of
/// `p` (undone by putting the shim back on its disk). Nothing changes for the data: the real
/// device is `linear` over the same disk. A stack already built is left as it is.
pub(crate) fn ensure_step<'a>(i: &'a Inner, b: &Backing, p: &mut Plan<'a>) -> Result<Stack> {
    let st = Stack::of(b)?;
    if st.built(i)? {
        let real = st.real_devno(i)?;
        if !st
            .origin_of_shim(i)?
            .is_some_and(|o| real.is_written_as(&o))
        {
            return Err(Error::InUse(format!(
                "{} exists but {} is not on it; inspect both with `dmsetup table`",
                st.real, st.shim
            )));
        }
        return Ok(st);
    }
    let linear = st.linear();
    let (real, real2) = (st.real.clone(), st.real.clone());
    p.step(
        format!("create {real} over {}", st.raw),
        || i.dm.create(&real, &linear).map(|_| ()),
        move || i.dm.remove(&real2),
    )?;
    let origin = st.origin_table(i)?;
    let back = st.linear();
    let shim = st.shim.clone();
    p.step(
        format!("load snapshot-origin on {}", st.shim),
        || i.swap_table(&st.shim, &origin),
        move || i.swap_table(&shim, &back),
    )?;
    Ok(st)
}

/// Take the stack down when no relationship uses the source any more: the shim back on
/// `linear` over the disk, the real device removed. `in_use` says whether some relationship
/// still has this source.
pub(crate) fn collapse_if_unused(i: &Inner, st: &Stack, in_use: bool) -> Result<()> {
    if in_use || !st.built(i)? {
        return Ok(());
    }
    let real_table = i.dm.table(&st.real)?;
    if !matches!(
        real_table.first().map(|l| &l.target),
        Some(Target::Linear(_))
    ) {
        // something still replicates there: leave it for whoever owns it
        return Ok(());
    }
    let linear = st.linear();
    i.swap_table(&st.shim, &linear)?;
    i.dm.remove(&st.real)?;
    info!(device = %st.shim, "no relationship left: the source is on its disk again");
    Ok(())
}
