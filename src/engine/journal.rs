//! Intent records: written (atomically: temporary file, fsync, rename, fsync of the directory)
//! before a multi-step kernel change starts, removed once it completed or rolled back. A daemon
//! that starts and finds one was stopped in the middle of that change (a crash, a kill -9):
//! [`recover`] completes an adoption (so the LUN comes back) and rolls an AttachReplica back.
//!
//! Crash points for tests: `LIO_REPLICA_CRASH_AFTER=TEXT` makes the daemon abort right after
//! the first plan step whose description contains TEXT (see [`crash_point`]).

use super::{adopt, names, Engine, Inner};
use crate::configfs::{LunExport, StorageObject};
use crate::dm::{Sectors, Target};
use crate::error::{Error, Result};
use crate::names::Plugin;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use tracing::{info, warn};

/// What was about to happen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Intent {
    /// A storage object being re-created from `old_dev` onto `new_dev` (adopt or release).
    Rebuild {
        so: Box<StorageObject>,
        old_dev: String,
        new_dev: String,
        /// true: onto our shim (adopt); false: back to the raw device (release)
        to_shim: bool,
        exports: Vec<LunExport>,
        /// The boot it was written in: after a reboot a device path may name another disk.
        #[serde(default)]
        boot_id: Option<String>,
    },
    /// An AttachReplica of `source` onto `target` (storage object names) in progress.
    Attach {
        source: String,
        #[serde(default)]
        target: Option<String>,
        copy_type: u16,
    },
}

/// The directory of intent records; `None` keeps none (tests that do not test recovery).
#[derive(Debug, Clone, Default)]
pub struct Journal {
    dir: Option<PathBuf>,
}

/// A record on disk; `done` removes it.
pub struct Record {
    path: Option<PathBuf>,
}

impl Record {
    pub fn done(self) -> Result<()> {
        if let Some(p) = &self.path {
            std::fs::remove_file(p).map_err(|e| Error::io("remove", p, e))?;
            if let Some(d) = p.parent() {
                sync_dir(d);
            }
        }
        Ok(())
    }
}

/// Write `dir/name` so that it holds either its old or its new contents whatever happens:
/// a temporary file (mode 0600) written and fsynced, renamed over it, the directory fsynced.
pub(crate) fn write_atomic(dir: &Path, name: &str, body: &[u8]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode_0600()
            .open(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|e| Error::io("write", &path, e))?;
    sync_dir(dir);
    Ok(())
}

fn sync_dir(d: &Path) {
    if let Ok(f) = std::fs::File::open(d) {
        let _ = f.sync_all();
    }
}

impl Journal {
    pub fn new(dir: Option<PathBuf>) -> Journal {
        Journal { dir }
    }

    /// Write the record `KIND-KEY` (KEY is a storage object name).
    pub fn record(&self, kind: &str, key: &str, intent: &Intent) -> Result<Record> {
        let Some(dir) = &self.dir else {
            return Ok(Record { path: None });
        };
        crate::names::validate_object_name(key)?;
        let name = format!("{kind}-{key}.intent.json");
        let body = serde_json::to_vec_pretty(intent).map_err(|e| Error::Other(e.to_string()))?;
        write_atomic(dir, &name, &body)?;
        let path = dir.join(name);
        Ok(Record { path: Some(path) })
    }

    pub fn pending(&self) -> Vec<(PathBuf, Intent)> {
        let Some(dir) = &self.dir else {
            return Vec::new();
        };
        let Ok(rd) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut out: Vec<(PathBuf, Intent)> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().ends_with(".intent.json"))
            .filter_map(|p| {
                let text = std::fs::read(&p).ok()?;
                match serde_json::from_slice(&text) {
                    Ok(i) => Some((p, i)),
                    Err(e) => {
                        warn!(path = %p.display(), error = %e, "unreadable intent record left as is");
                        None
                    }
                }
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for std::fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600)
    }
}

thread_local! {
    static TEST_CRASH: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Tests: make the plan step whose description contains `text` panic right after it ran, on
/// this thread, as if the daemon had died there (no rollback runs).
pub fn set_test_crash_point(text: Option<&str>) {
    TEST_CRASH.with(|c| *c.borrow_mut() = text.map(str::to_string));
}

/// Called after every plan step.
pub(crate) fn crash_point(desc: &str) {
    static ENV: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let env = ENV.get_or_init(|| {
        std::env::var("LIO_REPLICA_CRASH_AFTER")
            .ok()
            .filter(|s| !s.is_empty())
    });
    if let Some(p) = env {
        if desc.contains(p.as_str()) {
            eprintln!("lio-replica: LIO_REPLICA_CRASH_AFTER: aborting after: {desc}");
            std::process::abort();
        }
    }
    TEST_CRASH.with(|c| {
        if let Some(p) = &*c.borrow() {
            if desc.contains(p.as_str()) {
                panic!("simulated crash after: {desc}");
            }
        }
    });
}

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
        .lock()
        .unwrap()
        .values()
        .find(|r| r.source_name == source && target.is_none_or(|t| r.target_name == t))
        .cloned();
    if let Some(rel) = rel {
        warn!(relationship = %rel.id, "rolling back an AttachReplica interrupted by a restart");
        // a job the restart may have started for it stops on its own: the record is gone
        return rel.lifecycle().teardown(i, &rel);
    }
    let others: Vec<_> = i
        .rels
        .lock()
        .unwrap()
        .values()
        .filter(|r| r.source_name == source)
        .cloned()
        .collect();
    let replicated = others.iter().any(|r| r.lifecycle().replicates_in_real());
    // no complete record: remove whatever pieces exist
    for d in i.dm.list()? {
        let record =
            target.is_some_and(|t| names::parse_tag(&d.name).is_some_and(|(_, tn)| tn == t));
        let meta = copy_type == 2
            && !replicated
            && (0..2).any(|k| names::meta(k, source).ok().as_ref() == Some(&d.name));
        if (record || meta) && d.open_count == 0 {
            i.dm.remove(&d.name)?;
            info!(device = %d.name, "removed device left by an interrupted AttachReplica");
        }
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
    if others.is_empty() && i.dm.info(&shim)?.is_some() && i.dm.info(&real)?.is_some() {
        let raw = adopt::raw_under(i, &real)?;
        let len = crate::dm::table_length(&i.dm.table(&shim)?);
        super::stack::collapse_if_unused(
            i,
            &super::stack::Stack {
                shim: shim.clone(),
                real: real.clone(),
                raw,
                sectors: len,
            },
            false,
        )?;
    }
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
