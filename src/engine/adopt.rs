//! Adoption: re-create a backstore on a `linear` device-mapper shim over the same device,
//! keeping its name, HBA directory, unit serial, attributes, LUN numbers and ACL mappings.
//! The TPGs exporting it are disabled only for the swap; initiators recover through iSCSI
//! reconnection. `release` is the inverse, used when a later step of a plan fails.

use super::journal::Intent;
use super::plan::Plan;
use super::{names, Inner, Resolved};
use crate::configfs::{IblockSpec, StorageObject};
use crate::dm::{Devno, DmName, Sectors, SnapshotOriginParams, SnapshotParams, Target};
use crate::error::{Error, Result};
use crate::names::Plugin;
use std::collections::BTreeSet;
use std::path::PathBuf;
use tracing::{info, warn};

/// Attributes that only bound LIO's own queueing and are clamped by the kernel to the
/// backing device's limits (a dm device may report a smaller queue than the disk under it).
const HOST_SIDE_LIMITS: &[&str] = &["queue_depth", "optimal_sectors"];

/// A storage object served through its shim.
#[derive(Debug, Clone)]
pub(crate) struct Backing {
    pub so: StorageObject,
    pub shim: DmName,
    /// The device under the shim.
    pub raw: Devno,
    pub sectors: Sectors,
}

/// What re-creates `so` on `dev` with its identity.
pub(crate) fn spec_of(so: &StorageObject, dev: &str) -> IblockSpec {
    IblockSpec {
        name: so.name.clone(),
        hba: Some(so.hba.clone()),
        dev: PathBuf::from(dev),
        wwn: so.wwn.clone(),
        readonly: so.readonly,
        attributes: so.attributes.clone(),
    }
}

/// The raw device under a shim (or a real device), read from the live tables.
pub(crate) fn raw_under(i: &Inner, shim: &DmName) -> Result<Devno> {
    let table = i.dm.table(shim)?;
    let line = table
        .first()
        .ok_or_else(|| Error::Other(format!("device {shim} has no table")))?;
    let field = match &line.target {
        Target::Linear(l) => l.device.clone(),
        // (a restore's mirror reads from the target's disk first: the source's is its other leg)
        Target::Mirror(m) => match super::mirror_restore::source_leg(i, m)? {
            Some(d) => d,
            None => m
                .legs
                .first()
                .map(|l| l.device.clone())
                .ok_or_else(|| Error::Other(format!("mirror {shim} has no legs")))?,
        },
        Target::Raid(r) => r
            .devices
            .first()
            .map(|d| d.data.clone())
            .ok_or_else(|| Error::Other(format!("raid {shim} has no devices")))?,
        // a source's origin sits on its real device, which sits on the disk
        Target::SnapshotOrigin(SnapshotOriginParams { device: origin })
        | Target::SnapshotMerge(SnapshotParams { origin, .. }) => {
            let real = names::shim_object(shim)
                .map(|o| names::real(&o))
                .transpose()?;
            match real {
                Some(real)
                    if i.dm
                        .info(&real)?
                        .is_some_and(|d| d.devno().is_written_as(origin)) =>
                {
                    return raw_under(i, &real)
                }
                _ => origin.clone(),
            }
        }
        // a snapshot shim serves a target: its own device is the COW store
        Target::Snapshot(s) => s.cow.clone(),
        other => {
            return Err(Error::Other(format!(
                "device {shim} has an unexpected table {other:?}"
            )))
        }
    };
    // the kernel shows every device of a live table by its number
    let devno: Devno = field
        .parse()
        .map_err(|e| Error::Other(format!("device {shim}: {e}")))?;
    // a real device whose raid1 source leg is the copy device of a full copy: the disk is
    // under that
    if let Some(obj) = names::real_object(shim) {
        let copy = names::copy(&obj)?;
        if i.dm.info(&copy)?.is_some_and(|d| d.devno() == devno) {
            return raw_under(i, &copy);
        }
    }
    Ok(devno)
}

/// Whether a storage object whose device is `udev_path` runs on the block device `devno`.
pub(crate) fn runs_on(
    dm: &dyn crate::dm::DmBackend,
    udev_path: Option<&str>,
    devno: Devno,
) -> bool {
    udev_path.is_some_and(|p| dm.devno_of(std::path::Path::new(p)).ok() == Some(devno))
}

/// If `el` is already served through its shim, describe it.
pub(crate) fn adopted(i: &Inner, el: &Resolved) -> Result<Option<Backing>> {
    let shim = names::shim(&el.so.name)?;
    let Some(info) = i.dm.info(&shim)? else {
        return Ok(None);
    };
    let udev = el.so.udev_path.clone().unwrap_or_default();
    let on_shim =
        i.dm.device_path(&shim)
            .map(|p| p.to_string_lossy() == udev)
            .unwrap_or(false)
            || runs_on(&*i.dm, Some(&udev), info.devno());
    if on_shim {
        return Ok(Some(Backing {
            so: el.so.clone(),
            raw: raw_under(i, &shim)?,
            shim,
            sectors: el.sectors,
        }));
    }
    // A shim of ours that nothing uses, left by an interrupted adoption: remove it if it sits
    // on the very device the backstore uses now; otherwise refuse to guess.
    let raw = raw_under(i, &shim).ok();
    if info.open_count == 0 && raw.is_some_and(|r| runs_on(&*i.dm, Some(&udev), r)) {
        warn!(device = %shim, "removing an unused shim left by an interrupted adoption");
        i.dm.remove(&shim)?;
        info!(device = %shim, "removed device");
        return Ok(None);
    }
    Err(Error::InUse(format!(
        "device-mapper device {shim} exists but {} is not served by it; inspect it with \
         `dmsetup table {shim}`",
        el.so.element()
    )))
}

/// Re-create `so` on `new_dev`, running `middle` (with its undo) between deleting the old
/// storage object and creating the new one. Everything is undone on failure.
fn rebuild_on<'a>(
    i: &'a Inner,
    so: &StorageObject,
    what: String,
    (new_dev, to_shim): (&dyn Fn() -> Result<String>, bool),
    middle_desc: String,
    middle: impl FnOnce() -> Result<()>,
    middle_undo: impl FnOnce() -> Result<()> + Send + 'a,
) -> Result<StorageObject> {
    let exports = i.cfs.exports_of(so)?;
    let _lock = i.cfs.lock()?;
    let tpgs: BTreeSet<PathBuf> = exports
        .iter()
        .filter(|e| e.tpg_enabled)
        .map(|e| e.tpg.clone())
        .collect();
    let old_dev = so.udev_path.clone().unwrap_or_default();
    let spec_old = spec_of(so, &old_dev);
    let cfs = &i.cfs;
    let record = i.journal.record(
        "rebuild",
        &so.name,
        &Intent::Rebuild {
            so: Box::new(so.clone()),
            old_dev: old_dev.clone(),
            new_dev: if to_shim { String::new() } else { new_dev()? },
            to_shim,
            exports: exports.clone(),
            boot_id: Some(i.boot_id.clone()),
        },
    )?;
    let out = Plan::new(what).run(|p| {
        for tpg in &tpgs {
            p.step(
                format!("disable {}", tpg.display()),
                || cfs.set_tpg_enabled(tpg, false),
                move || cfs.set_tpg_enabled(tpg, true),
            )?;
        }
        for e in &exports {
            for (m, acl) in e.mapped.iter().zip(&e.mapped_acls) {
                p.step(
                    format!("delete mapped LUN {}", m.path.display()),
                    || cfs.delete_mapped_lun(acl, m.index),
                    move || {
                        cfs.create_mapped_lun(acl, m.index, e.lun, &m.link_name, m.write_protect)
                    },
                )?;
            }
        }
        for e in &exports {
            p.step(
                format!("delete LUN {}/lun/lun_{}", e.tpg.display(), e.lun),
                || cfs.delete_lun(&e.tpg, e.lun),
                move || cfs.create_lun(&e.tpg, e.lun, so, &e.link_name),
            )?;
        }
        p.step(
            format!("delete storage object {}", so.path.display()),
            || cfs.delete_storage_object(so),
            move || cfs.create_iblock(&spec_old).map(|_| ()),
        )?;
        p.step(middle_desc, middle, middle_undo)?;
        let new_dev = new_dev()?;
        let spec_new = spec_of(so, &new_dev);
        let name = so.name.clone();
        let new_so = p.step(
            format!("create storage object {} on {new_dev}", so.element()),
            || cfs.create_iblock(&spec_new),
            move || {
                let cur = cfs.find_storage_object(&Plugin::Block, &name)?;
                cfs.delete_storage_object(&cur)
            },
        )?;
        // identity: every attribute the initiators can see must read back as it was; the
        // kernel clamps the host-side queue limits to the new device's own
        for k in HOST_SIDE_LIMITS {
            if let (Some(old), Some(new)) = (so.attributes.get(*k), new_so.attributes.get(*k)) {
                if old != new {
                    warn!(element = %so.element(), attribute = k, was = %old, now = %new,
                        "the kernel limited a host-side attribute on the new device");
                }
            }
        }
        let lost: Vec<String> = so
            .attributes
            .iter()
            .filter(|(k, _)| !HOST_SIDE_LIMITS.contains(&k.as_str()))
            .filter(|(k, v)| new_so.attributes.get(*k) != Some(*v))
            .map(|(k, v)| {
                format!(
                    "{k} (was {v}, now {})",
                    new_so
                        .attributes
                        .get(k)
                        .map(String::as_str)
                        .unwrap_or("missing")
                )
            })
            .collect();
        if !lost.is_empty() {
            return Err(Error::kernel(
                "restore attributes of",
                new_so.path.display().to_string(),
                format!("the kernel did not keep: {}", lost.join(", ")),
            ));
        }
        for e in &exports {
            let new_so = &new_so;
            p.step(
                format!("create LUN {}/lun/lun_{}", e.tpg.display(), e.lun),
                || cfs.create_lun(&e.tpg, e.lun, new_so, &e.link_name),
                move || cfs.delete_lun(&e.tpg, e.lun),
            )?;
        }
        for e in &exports {
            for (m, acl) in e.mapped.iter().zip(&e.mapped_acls) {
                p.step(
                    format!("create mapped LUN {}", m.path.display()),
                    || cfs.create_mapped_lun(acl, m.index, e.lun, &m.link_name, m.write_protect),
                    move || cfs.delete_mapped_lun(acl, m.index),
                )?;
            }
        }
        for tpg in &tpgs {
            p.step(
                format!("enable {}", tpg.display()),
                || cfs.set_tpg_enabled(tpg, true),
                move || cfs.set_tpg_enabled(tpg, false),
            )?;
        }
        Ok(new_so)
    });
    if !matches!(out, Err(Error::RollbackFailed { .. })) {
        record.done()?;
    }
    out
}

/// Adopt `el` (no-op if already adopted). Complete, or rolled back entirely.
pub(crate) fn adopt(i: &Inner, el: &Resolved) -> Result<Backing> {
    if let Some(b) = adopted(i, el)? {
        return Ok(b);
    }
    let so = &el.so;
    // Re-creating the object would drop these without the initiators being told: clustered
    // hosts (failover clusters, Pacemaker, VMware) would lose their reservations.
    let lost = i.cfs.kernel_only_state(so)?;
    if !lost.is_empty() {
        return Err(Error::InUse(format!(
            "{} cannot be adopted: adoption re-creates its backstore, which would drop its {}. \
             These are not carried over; release them first (the initiators' reservations \
             with `sg_persist --out --release/--register`, the groups under its alua/ \
             directory), or leave this object unreplicated",
            so.element(),
            lost.join("; ")
        )));
    }
    let shim = names::shim(&so.name)?;
    let raw_path = so
        .udev_path
        .clone()
        .ok_or_else(|| Error::Invalid(format!("{} has no udev_path", so.element())))?;
    let raw = i.dm.devno_of(std::path::Path::new(&raw_path))?;
    let table = Inner::linear(raw, el.sectors);
    let dm = &i.dm;
    let shim_c = shim.clone();
    let new_so = rebuild_on(
        i,
        so,
        format!("adopt {}", so.element()),
        (
            &|| Ok(dm.device_path(&shim)?.to_string_lossy().into_owned()),
            true,
        ),
        format!("create {shim} over {raw}"),
        || dm.create(&shim, &table).map(|_| ()),
        move || dm.remove(&shim_c),
    )?;
    info!(element = %so.element(), device = %shim, "adopted");
    match i.dm.disk_identities(&[raw]).as_deref() {
        Ok([id]) if id.ids.is_empty() => warn!(
            element = %so.element(),
            device = %id.describe(),
            "this disk has nothing that identifies it across a reboot (no serial, WWID, by-id \
             link or device-mapper UUID): its device will not be re-created at boot"
        ),
        Ok(_) => {}
        Err(e) => warn!(element = %so.element(), error = %e, "cannot read the disk's identity"),
    }
    Ok(Backing {
        so: new_so,
        shim,
        raw,
        sectors: el.sectors,
    })
}

/// Put a storage object back on its raw device and remove its shim (the inverse of adopt).
pub(crate) fn release(i: &Inner, b: &Backing, raw_path: &str) -> Result<()> {
    let so = i.cfs.find_storage_object(&Plugin::Block, &b.so.name)?;
    let dm = &i.dm;
    let table = Inner::linear(b.raw, b.sectors);
    let shim = b.shim.clone();
    rebuild_on(
        i,
        &so,
        format!("release {}", so.element()),
        (&|| Ok(raw_path.to_string()), false),
        format!("remove {shim}"),
        || dm.remove(&b.shim),
        move || dm.create(&shim, &table).map(|_| ()),
    )?;
    info!(element = %so.element(), "released to its raw device");
    Ok(())
}

/// Adopt `el` as one step of a bigger plan: if the plan rolls back later, the storage object
/// is put back on its raw device. Already adopted objects are left as they are.
pub(crate) fn adopt_step<'a>(i: &'a Inner, el: &Resolved, p: &mut Plan<'a>) -> Result<Backing> {
    if let Some(b) = adopted(i, el)? {
        return Ok(b);
    }
    let raw_path = el.so.udev_path.clone().unwrap_or_default();
    let b = adopt(i, el)?;
    let undo = b.clone();
    p.step(
        format!("adopt {}", el.so.element()),
        || Ok(()),
        move || release(i, &undo, &raw_path),
    )?;
    Ok(b)
}
