//! Crash recovery: what a daemon that starts does with the intent records ([`super::journal`])
//! a previous one left. It first resumes any of its devices left suspended, then completes an
//! interrupted adoption or release (so the LUN comes back with its identity) and rolls an
//! interrupted AttachReplica back, leaving the source's other relationships as they are.

use super::journal::Intent;
use super::{adopt, names, Engine, Inner};
use crate::configfs::{LunExport, StorageObject};
use crate::dm::{Sectors, Target};
use crate::error::{Error, Result};
use crate::names::Plugin;
use tracing::{info, warn};

/// Finish a storage object rebuild that was interrupted: the object exists (on the new
/// device when it can be, on the old one otherwise) with all its LUNs, mappings and enabled
/// TPGs.
fn recover_rebuild(
    i: &Inner,
    so: &StorageObject,
    (old_dev, new_dev): (&str, &str),
    to_shim: bool,
    exports: &[LunExport],
    boot_id: Option<&str>,
) -> Result<()> {
    let cfs = &i.cfs;
    let shim = names::shim(&so.name)?;
    let shim_info = i.dm.info(&shim)?;
    let cur = match cfs.find_storage_object(&Plugin::Block, &so.name) {
        Ok(cur) => cur,
        Err(Error::NotFound(_))
            if boot_id.is_some_and(|b| b != i.boot_id) && !(to_shim && shim_info.is_some()) =>
        {
            // its device paths are of another boot: /dev/sdb may be another disk now
            return Err(Error::Other(format!(
                "{} was being re-created when the host went down, and its device paths are \
                 of that boot; re-create it by hand (it was on {old_dev}, with serial {})",
                so.element(),
                so.wwn.as_deref().unwrap_or("none")
            )));
        }
        Err(Error::NotFound(_)) => {
            let _lock = cfs.lock()?;
            let dev = if to_shim && shim_info.is_some() {
                i.dm.device_path(&shim)?.to_string_lossy().into_owned()
            } else {
                // a release, or the shim was never made: back on the raw device, which the
                // shim must not hold any more
                if let Some(d) = &shim_info {
                    if d.open_count == 0 {
                        i.dm.remove(&shim)?;
                        info!(device = %shim, "removed device");
                    }
                }
                if to_shim {
                    old_dev.to_string()
                } else {
                    new_dev.to_string()
                }
            };
            warn!(element = %so.element(), device = %dev, "re-creating a storage object an interrupted change had removed");
            cfs.create_iblock(&adopt::spec_of(so, &dev))?
        }
        Err(e) => return Err(e),
    };
    restore_exports(cfs, &cur, exports)
}

/// Make every LUN and mapped LUN of `exports` that is missing, pointing at `cur`, and enable
/// the TPGs that were enabled. A TPG that is gone is skipped with a warning.
pub(crate) fn restore_exports(
    cfs: &crate::configfs::ConfigFs,
    cur: &StorageObject,
    exports: &[LunExport],
) -> Result<()> {
    let targets = cfs.targets()?;
    for e in exports {
        let tpg = targets
            .iter()
            .flat_map(|t| t.tpgs.iter())
            .find(|t| t.path == e.tpg);
        let Some(tpg) = tpg else {
            warn!(tpg = %e.tpg.display(), "the TPG of a LUN to restore is gone; skipped");
            continue;
        };
        if !tpg.luns.iter().any(|l| l.index == e.lun) {
            cfs.create_lun(&e.tpg, e.lun, cur, &e.link_name)?;
        }
        for (m, acl) in e.mapped.iter().zip(&e.mapped_acls) {
            let present = tpg
                .acls
                .iter()
                .find(|a| &a.path == acl)
                .is_some_and(|a| a.mapped_luns.iter().any(|x| x.index == m.index));
            if !present {
                cfs.create_mapped_lun(acl, m.index, e.lun, &m.link_name, m.write_protect)?;
            }
        }
        if e.tpg_enabled {
            cfs.set_tpg_enabled(&e.tpg, true)?;
        }
    }
    Ok(())
}

/// Roll back an interrupted AttachReplica of `source` onto `target`: the relationship if its
/// record was complete, else whatever pieces of it exist. The source's other relationships
/// are left as they are.
fn recover_attach(e: &Engine, source: &str, target: Option<&str>, copy_type: u16) -> Result<()> {
    let i = &*e.inner;
    let rel = i
        .rels
        .filter(|r| r.source_name == source && target.is_none_or(|t| r.target_name == t))
        .into_iter()
        .next();
    if let Some(rel) = rel {
        warn!(relationship = %rel.id, "rolling back an AttachReplica interrupted by a restart");
        // a job the restart may have started for it stops on its own: the record is gone
        return rel.lifecycle().teardown(i, &rel);
    }
    let others = i.rels.filter(|r| r.source_name == source);
    let replicated = others.iter().any(|r| r.lifecycle().replicates_in_real());
    // no complete record: remove whatever pieces exist
    for d in i.dm.list()? {
        let record =
            target.is_some_and(|t| names::parse_tag(&d.name).is_some_and(|(_, tn)| tn == t));
        let meta = matches!(copy_type, 2 | 3)
            && !replicated
            && (0..2).any(|k| names::meta(k, source).ok().as_ref() == Some(&d.name));
        if (record || meta) && d.open_count == 0 {
            i.dm.remove(&d.name)?;
            info!(device = %d.name, "removed device left by an interrupted AttachReplica");
        }
    }
    if !replicated {
        let metas = [names::meta(0, source)?, names::meta(1, source)?];
        super::async_copy::remove_meta_files(i, &metas)?;
    }
    let shim = names::shim(source)?;
    let real = names::real(source)?;
    if !replicated && i.dm.info(&real)?.is_some() {
        let table = i.dm.table(&real)?;
        if !matches!(table.first().map(|l| &l.target), Some(Target::Linear(_))) {
            let raw = adopt::raw_under(i, &real)?;
            let len = crate::dm::table_length(&table);
            i.swap_table(&real, &Inner::linear(raw, len))?;
            info!(device = %real, "source's real device back on linear after an interrupted AttachReplica");
        }
    }
    if let Some(t) = target {
        let tshim = names::shim(t)?;
        if i.dm.info(&tshim)?.is_some() {
            let table = i.dm.table(&tshim)?;
            if let Some(Target::Snapshot(sp)) = table.first().map(|l| &l.target) {
                let len = crate::dm::table_length(&table);
                let back = Inner::linear(sp.cow.parse()?, len.max(Sectors(1)));
                i.dm.suspend(&shim, false, i.opts.suspend_timeout)?;
                let r = i.swap_table(&tshim, &back);
                i.dm.resume(&shim)?;
                r?;
                info!(device = %tshim, "half-made snapshot back on linear after an interrupted AttachReplica");
            }
        }
    }
    // a stack left without relationships is taken down by the start-up that runs this
    Ok(())
}

/// Act on every intent record left by a previous daemon; called at start after rediscovery.
pub(crate) fn recover(e: &Engine) -> Result<()> {
    let i = &*e.inner;
    // A daemon that died between suspend and resume leaves a LUN stalled: resume it on the
    // table it had (dropping a table loaded but never resumed) before anything else.
    for d in i.dm.list()? {
        if d.suspended {
            let _k = i.kernel_lock();
            if d.inactive_table {
                i.dm.clear(&d.name)?;
                info!(device = %d.name, "dropped a table an interrupted change had loaded");
            }
            i.dm.resume(&d.name)?;
            info!(device = %d.name, "resumed a device an interrupted change had left suspended");
        }
    }
    for (path, intent) in i.journal.pending() {
        let _k = i.kernel_lock();
        let r = match &intent {
            Intent::Rebuild {
                so,
                old_dev,
                new_dev,
                to_shim,
                exports,
                boot_id,
            } => recover_rebuild(
                i,
                so,
                (old_dev, new_dev),
                *to_shim,
                exports,
                boot_id.as_deref(),
            ),
            Intent::Attach {
                source,
                target,
                copy_type,
            } => recover_attach(e, source, target.as_deref(), *copy_type),
        };
        match r {
            Ok(()) => {
                info!(record = %path.display(), "recovered an interrupted change");
                std::fs::remove_file(&path).map_err(|err| Error::io("remove", &path, err))?;
            }
            Err(err) => {
                warn!(record = %path.display(), error = %err, "could not recover an interrupted change; record kept")
            }
        }
    }
    Ok(())
}
