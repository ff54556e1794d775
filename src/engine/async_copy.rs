//! CopyType 2 Async: the source's real device becomes a dm `raid` raid1 whose target leg is
//! `write_mostly` with `max_write_behind`: a write completes when the source leg has it, the
//! target leg may lag by up to max_write_behind/2 outstanding writes (bounded lag, tracked by
//! the write-intent bitmap). dm-raid needs a metadata device per leg: the target leg's is
//! carved from the target's tail, the source leg's is a file in the state directory (see
//! [`create_metadata`]); the target must be larger than the source by two metadata areas
//! ([`super::Options::raid_meta_sectors`] each, 4 MiB by default; the first stays unused
//! while there is a state directory). A Sync mirror whose target has that room is built here
//! too, without `write_mostly` (see [`super::sync`]).

use super::plan::Plan;
use super::relationship::{self, Finish, Lifecycle, Progress, Relationship};
use super::{adopt, names, stack, Attached, Engine, Inner, Resolved};
use crate::cim::Operation;
use crate::dm::{Devno, DmName, LinearParams, Sectors, TableLine, Target};
use crate::error::{Error, Result, ReturnCode};
use crate::names::Element;
use crate::service::{CopyType, RelationshipView, SyncState};
use std::path::Path;
use tracing::info;

pub(crate) struct AsyncMirror;

impl Lifecycle for AsyncMirror {
    fn attach(&self, e: &Engine, src: Resolved, tgt: Resolved) -> Result<Attached> {
        attach(e, src, tgt)
    }

    fn modify(
        &self,
        e: &Engine,
        rel: &Relationship,
        op: Operation,
        force: bool,
    ) -> Result<Attached> {
        super::sync::modify_mirror(e, rel, op, force)
    }

    /// A restore under way gets a job that finishes it; otherwise nothing to follow (raid1
    /// degrades by itself and keeps serving).
    fn resume(&self, e: &Engine, rel: &Relationship) -> Result<()> {
        super::mirror_restore::resume(e, rel).map(|_| ())
    }

    fn replicates_in_real(&self) -> bool {
        true
    }

    /// The two dm-raid metadata devices carved from the target's tail.
    fn metadata(&self, rel: &Relationship) -> Result<Vec<DmName>> {
        Ok(rel.meta_names()?.to_vec())
    }

    /// The kernel keeps `max_write_behind` in KiB: half the sectors given.
    fn max_lag_writes(&self, i: &Inner) -> Option<u32> {
        Some(i.opts.max_write_behind / 2)
    }

    fn replicating_state(&self, pr: &Progress, v: &mut RelationshipView) -> SyncState {
        if pr.synced {
            v.progress_status = Some("in sync, writing behind".into());
            SyncState::Synchronized
        } else {
            v.progress_status = Some(format!("resynchronising, {}%", pr.percent));
            SyncState::ResyncInProgress
        }
    }

    fn maintained(&self) -> bool {
        true
    }
}

fn attach(e: &Engine, src: Resolved, tgt: Resolved) -> Result<Attached> {
    check_room(
        &e.inner,
        &src.so.element(),
        src.sectors,
        &tgt.so.element(),
        tgt.sectors,
    )?;
    attach_raid1(e, CopyType::Async, &src, &tgt, "asynchronous mirror")
}

/// Adopt both objects, record the relationship, carve the metadata from the target's tail and
/// load the raid1 into the source's real device (rolled back on failure); a job follows the
/// initial copy. Async mirrors, and Sync mirrors whose target has the room.
pub(crate) fn attach_raid1(
    e: &Engine,
    ct: CopyType,
    src: &Resolved,
    tgt: &Resolved,
    what: &str,
) -> Result<Attached> {
    let i = &*e.inner;
    let rel = Plan::new(format!("attach {ct:?} on raid1")).run(|p| {
        let sb = adopt::adopt_step(i, src, p)?;
        let tb = adopt::adopt_step(i, tgt, p)?;
        let mut rel = Relationship::new(ct, &sb, &tb)?;
        rel.raid = true;
        relationship::create_tag_step(i, &rel, p)?;
        stack::ensure_step(i, &sb, p)?;
        let devnos = create_metadata(i, &rel, p)?;
        let table = relationship::raid_table(i, &rel, devnos, rel.src_raw);
        let real = rel.real.clone();
        let linear = rel.stack().linear();
        p.step(
            format!("load raid1 on {}", rel.real),
            || i.swap_table(&rel.real, &table),
            move || i.swap_table(&real, &linear),
        )?;
        Ok(rel)
    })?;
    let mut rel = rel;
    // (unknown: the first Resync after a Fracture or a failure copies everything)
    rel.target_writes = i.dm.sectors_written(&rel.tgt_shim).ok();
    let id = rel.id.clone();
    relationship::register(i, rel);
    let job = relationship::start_job(e, &id, Finish::Keep, what)?;
    Ok(Attached {
        code: ReturnCode::JobStarted,
        job: Some(job),
        relationship: Some(id),
    })
}

/// The two metadata devices of `rel`'s raid1, zeroed (a new array), as plan steps; returns
/// their device numbers. The target leg's is carved from the target's tail. The source leg's
/// is a file in the state directory behind a loop device: on the target's disk, a failing
/// target would fail md's writes to the source leg's superblock and bitmap too, and md may
/// then fail the source leg first, leaving the array on the dead disk. (A source leg with no
/// metadata device (`-`) is no way out: md would write the bitmap into the source's data.)
/// Without a state directory (a simulation) both are on the target's tail.
pub(crate) fn create_metadata<'a>(
    i: &'a Inner,
    rel: &Relationship,
    p: &mut Plan<'a>,
) -> Result<[Devno; 2]> {
    let meta = i.opts.raid_meta_sectors;
    let mut devnos = Vec::with_capacity(2);
    for (k, name) in rel.meta_names()?.into_iter().enumerate() {
        let file = match (k, &i.opts.state_dir) {
            (0, Some(dir)) => Some(names::meta_file(dir, &name)),
            _ => None,
        };
        // `bound` is held until the dm device over it holds the loop device
        let (device, offset, bound) = match &file {
            Some(f) => {
                let undo = f.clone();
                p.step(
                    format!("create {}", f.display()),
                    || create_meta_file(f, meta),
                    move || remove_meta_file(&undo),
                )?;
                let d = i.dm.attach_file(f)?;
                (d.devno, 0, Some(d))
            }
            None => (rel.tgt_raw, (rel.sectors + meta * k as u64).0, None),
        };
        let table = vec![TableLine {
            start: Sectors(0),
            length: meta,
            target: Target::Linear(LinearParams {
                device: device.to_string(),
                offset,
            }),
        }];
        let n2 = name.clone();
        let info = p.step(
            format!("create {name}"),
            || i.dm.create(&name, &table),
            move || i.dm.remove(&n2),
        )?;
        drop(bound);
        p.last(|| i.zero_head(&name, meta))?;
        devnos.push(info.devno());
    }
    Ok([devnos[0], devnos[1]])
}

/// A new metadata file of `len`, private to root (its content is made by zeroing the device).
fn create_meta_file(file: &Path, len: Sectors) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = file.parent().unwrap_or(Path::new("/"));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io("create", dir, e))?;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(file)
        .map_err(|e| Error::io("create", file, e))?;
    f.set_len(len.bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io_value("size", file, &format!("{} bytes", len.bytes()), e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("sync", dir, e))?;
    info!(file = %file.display(), bytes = len.bytes(), "created a metadata file");
    Ok(())
}

fn remove_meta_file(file: &Path) -> Result<()> {
    match std::fs::remove_file(file) {
        Ok(()) => {
            info!(file = %file.display(), "removed a metadata file");
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", file, e)),
    }
}

/// Remove `rel`'s metadata devices that exist, then the files behind them (the kernel
/// unbinds a loop device once the dm device over it is gone).
pub(crate) fn remove_metadata(i: &Inner, rel: &Relationship) -> Result<()> {
    let names = rel.lifecycle().metadata(rel)?;
    for m in names.iter().rev() {
        if i.dm.info(m)?.is_some() {
            i.dm.remove(m)?;
            info!(device = %m, relationship = %rel.id, "removed device");
        }
    }
    remove_meta_files(i, &names)
}

/// The files behind metadata devices `names` that no longer exist.
pub(crate) fn remove_meta_files(i: &Inner, names: &[DmName]) -> Result<()> {
    let Some(dir) = &i.opts.state_dir else {
        return Ok(());
    };
    for m in names {
        if i.dm.info(m)?.is_none() {
            remove_meta_file(&names::meta_file(dir, m))?;
        }
    }
    Ok(())
}

/// The target must hold the source and, past it, the two metadata areas.
pub(crate) fn check_room(
    i: &Inner,
    src: &Element,
    src_sectors: Sectors,
    tgt: &Element,
    tgt_sectors: Sectors,
) -> Result<()> {
    let meta = i.opts.raid_meta_sectors;
    let need = src_sectors + meta * 2;
    if tgt_sectors < need {
        return Err(Error::Invalid(format!(
            "target {tgt} ({tgt_sectors} sectors) is too small for an Async copy of {src} \
             ({src_sectors} sectors): it needs {need} sectors, the source's size plus two \
             {meta}-sector metadata areas"
        )));
    }
    Ok(())
}
