//! State kept on disk for what the kernel forgets at a reboot: our device-mapper devices (the
//! shims under adopted backstores, relationship records, raid metadata devices) with their
//! tables, and the LIO configuration of every adopted storage object (name, HBA, serial,
//! attributes, LUNs and ACL mappings).
//!
//! `STATE_DIR/state.json` is rewritten (atomically: temporary file, fsync, rename, fsync of the
//! directory) after every kernel change, before the API answers, from what the kernel holds at
//! that moment; so it is never ahead of the kernel, and at most one change behind it after a
//! power loss during that change (which the intent records then roll back or finish).
//!
//! At boot, before LIO's configuration is restored (`target.service`), `lio-replica
//! restore-devices` re-creates the devices ([`restore_devices`]). Table lines name devices by
//! `major:minor`, which changes from boot to boot: every device a table refers to is saved
//! with its [`DiskIdentity`] and found again by it; a device that cannot be found, or is found
//! twice, is never guessed. A relationship whose target is missing is not re-created: its
//! source comes back alone on `linear`, so its LUN serves; a source that is missing is not
//! re-created at all (nothing would serve another disk's data under its name).
//!
//! The daemon's first start after a boot then re-creates, on their shims, the adopted storage
//! objects LIO's restore did not make, with their LUNs and mappings ([`restore_lio`]).

use super::{adopt, journal, names, recovery};
use crate::configfs::{ConfigFs, LunExport, StorageObject};
use crate::dm::{
    Devno, DiskIdentity, DmBackend, DmName, FileDevice, LinearParams, TableLine, Target,
    NAME_PREFIX, UUID_PREFIX,
};
use crate::error::{Error, Result};
use crate::names::Plugin;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use tracing::{info, warn};

pub const STATE_FILE: &str = "state.json";
const FORMAT: u32 = 1;

/// One of our devices and its table as the kernel showed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedDevice {
    pub name: DmName,
    /// `start length type params`, devices as `major:minor` of the boot it was saved in.
    pub table: Vec<String>,
}

/// An adopted storage object with what exports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedObject {
    pub so: StorageObject,
    pub exports: Vec<LunExport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedState {
    pub format: u32,
    /// The boot the devices were saved in (`/proc/sys/kernel/random/boot_id`).
    pub boot_id: String,
    pub devices: Vec<SavedDevice>,
    /// Every device the tables use (`major:minor` in the file) -> what identifies it.
    pub disks: BTreeMap<Devno, DiskIdentity>,
    pub objects: Vec<SavedObject>,
    /// Devices were re-created at this boot; the storage objects are still to be.
    #[serde(default)]
    pub lio_pending: bool,
}

/// This boot's id, read from the kernel.
pub fn current_boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

pub fn load(dir: &Path) -> Result<Option<SavedState>> {
    let path = dir.join(STATE_FILE);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", &path, e)),
    };
    let st: SavedState = serde_json::from_slice(&text)
        .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    if st.format != FORMAT {
        return Err(Error::NotSupported(format!(
            "{}: format {} (this version reads {FORMAT})",
            path.display(),
            st.format
        )));
    }
    Ok(Some(st))
}

pub fn save(dir: &Path, st: &SavedState) -> Result<()> {
    let body = serde_json::to_vec_pretty(st).map_err(|e| Error::Other(e.to_string()))?;
    journal::write_atomic(dir, STATE_FILE, &body)
}

/// What the kernel and LIO hold now. An adopted object LIO does not show (not restored yet)
/// keeps its entry from `previous`.
pub fn capture(
    cfs: &ConfigFs,
    dm: &dyn DmBackend,
    boot_id: &str,
    previous: Option<&SavedState>,
) -> Result<SavedState> {
    let mut devices = Vec::new();
    let mut used = std::collections::BTreeSet::new();
    let mut objects = Vec::new();
    // the fabric tree is read once, and only if some adopted object is in LIO
    let mut targets = None;
    for d in dm.list()? {
        let table = dm.table(&d.name)?;
        for line in &table {
            // the kernel shows every device of a live table by its number
            for dev in line.devices() {
                used.insert(dev.parse::<Devno>()?);
            }
        }
        devices.push(SavedDevice {
            name: d.name.clone(),
            table: table.iter().map(ToString::to_string).collect(),
        });
        let Some(obj) = names::shim_object(&d.name) else {
            continue;
        };
        let live = cfs
            .find_storage_object(&Plugin::Block, &obj)
            .ok()
            .filter(|so| adopt::runs_on(dm, so.udev_path.as_deref(), d.devno()));
        match live {
            Some(so) => {
                if targets.is_none() {
                    targets = Some(cfs.targets()?);
                }
                let exports = ConfigFs::exports_in(targets.as_deref().unwrap_or_default(), &so);
                objects.push(SavedObject { so, exports });
            }
            None => {
                if let Some(o) = previous
                    .into_iter()
                    .flat_map(|p| &p.objects)
                    .find(|o| o.so.name == obj)
                {
                    objects.push(o.clone());
                }
            }
        }
    }
    let used: Vec<Devno> = used.into_iter().collect();
    let disks = used
        .iter()
        .copied()
        .zip(dm.disk_identities(&used)?)
        .collect();
    Ok(SavedState {
        format: FORMAT,
        boot_id: boot_id.to_string(),
        devices,
        disks,
        objects,
        lio_pending: false,
    })
}

/// What [`restore_devices`] did.
#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct Restored {
    /// Devices created with their saved table.
    pub created: Vec<DmName>,
    /// Devices already present (left as they are).
    pub present: Vec<DmName>,
    /// Source shims created alone on `linear` because their relationship could not be.
    pub degraded: Vec<DmName>,
    /// Devices not created, with why.
    pub failed: Vec<(DmName, String)>,
}

impl Restored {
    /// One line per device, for the command line.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for (what, list) in [
            ("re-created", &self.created),
            ("already present", &self.present),
            (
                "re-created alone on linear (relationship lost)",
                &self.degraded,
            ),
        ] {
            for n in list {
                out.push_str(&format!("{what}: {n}\n"));
            }
        }
        for (n, why) in &self.failed {
            out.push_str(&format!("NOT re-created: {n}: {why}\n"));
        }
        out.push_str(&format!(
            "{} re-created, {} already present, {} alone on linear, {} not re-created",
            self.created.len(),
            self.present.len(),
            self.degraded.len(),
            self.failed.len()
        ));
        out
    }
}

/// Our device a saved identity names, if it is one of ours.
fn own_device(id: &DiskIdentity) -> Option<DmName> {
    id.ids.iter().find_map(|i| {
        let suffix = i.strip_prefix("dm-uuid:")?.strip_prefix(UUID_PREFIX)?;
        DmName::parse(&format!("{NAME_PREFIX}{suffix}")).ok()
    })
}

enum Resolve {
    Now(Devno),
    /// One of our devices, not made yet.
    Later(DmName),
    Never(String),
}

fn resolve(dm: &dyn DmBackend, st: &SavedState, old: &str) -> Resolve {
    let Some(id) = old.parse().ok().and_then(|d: Devno| st.disks.get(&d)) else {
        return Resolve::Never(format!("device {old} has no saved identity"));
    };
    if let Some(own) = own_device(id) {
        return match dm.info(&own) {
            Ok(Some(d)) => Resolve::Now(d.devno()),
            Ok(None) => Resolve::Later(own),
            Err(e) => Resolve::Never(e.to_string()),
        };
    }
    if id.ids.is_empty() {
        return Resolve::Never(format!(
            "device {} has nothing that identifies it across a reboot (no serial, WWID, \
             by-id link or device-mapper UUID)",
            id.describe()
        ));
    }
    match dm.find_disks(id) {
        Ok(found) if found.len() == 1 => Resolve::Now(found[0]),
        Ok(found) if found.is_empty() => {
            Resolve::Never(format!("device {} is not present", id.describe()))
        }
        Ok(found) => Resolve::Never(format!(
            "device {} matches {} devices ({}); not guessing",
            id.describe(),
            found.len(),
            found
                .iter()
                .map(Devno::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Err(e) => Resolve::Never(e.to_string()),
    }
}

/// A saved table with this boot's device numbers; `Err(Some(dev))` waits for our device
/// `dev`, `Err(None)` with `why` cannot be.
fn map_table(
    dm: &dyn DmBackend,
    st: &SavedState,
    table: &[TableLine],
) -> std::result::Result<Vec<TableLine>, (Option<DmName>, String)> {
    let mut map = BTreeMap::new();
    for line in table {
        for dev in line.devices() {
            if map.contains_key(dev) {
                continue;
            }
            match resolve(dm, st, dev) {
                Resolve::Now(n) => {
                    map.insert(dev.to_string(), n);
                }
                Resolve::Later(own) => {
                    let why = format!("waits for {own}");
                    return Err((Some(own), why));
                }
                Resolve::Never(why) => return Err((None, why)),
            }
        }
    }
    Ok(table
        .iter()
        .map(|l| TableLine {
            start: l.start,
            length: l.length,
            target: l
                .target
                .map_devices(|d| map.get(d).map_or_else(|| d.to_string(), Devno::to_string)),
        })
        .collect())
}

/// A source's replicating table reduced to its own disk: `linear` over the source's raw
/// device (for a source's real device, or a shim that carries a mirror itself).
fn source_alone(table: &[TableLine]) -> Option<Vec<TableLine>> {
    let line = table.first()?;
    let raw = match &line.target {
        Target::Mirror(m) => m.legs.first()?.device.clone(),
        Target::Raid(r) => r.devices.first()?.data.clone(),
        _ => return None,
    };
    let len = crate::dm::table_length(table);
    Some(vec![TableLine::new(
        crate::dm::Sectors(0),
        len,
        Target::Linear(LinearParams {
            device: raw,
            offset: 0,
        }),
    )])
}

/// Re-create every saved device that does not exist, ours referring to ours after them.
/// The loop devices over the daemon's own files in `state_dir` are bound first.
pub fn restore_devices(dm: &dyn DmBackend, st: &SavedState, state_dir: &Path) -> Result<Restored> {
    let mut out = Restored::default();
    // held until the devices stacked on them exist (the kernel unbinds them when unheld)
    let _bound = bind_loop_files(dm, st, state_dir);
    // every saved table parsed once; `todo`: the devices still to make, in saved order
    let mut tables: BTreeMap<&DmName, Vec<TableLine>> = BTreeMap::new();
    let mut todo: Vec<&DmName> = Vec::new();
    for d in &st.devices {
        if dm.info(&d.name)?.is_some() {
            out.present.push(d.name.clone());
            continue;
        }
        let table: Result<Vec<TableLine>> = d.table.iter().map(|l| TableLine::parse(l)).collect();
        match table {
            Ok(t) => {
                tables.insert(&d.name, t);
                todo.push(&d.name);
            }
            Err(e) => out
                .failed
                .push((d.name.clone(), format!("saved table: {e}"))),
        }
    }
    // a source whose copy cannot come back (a disk of it is missing) serves alone
    let mut alone: BTreeMap<&DmName, String> = BTreeMap::new();
    loop {
        let mut progress = false;
        let mut waiting = Vec::new();
        let pending = std::mem::take(&mut todo);
        for &name in &pending {
            // an origin comes after every snapshot of it: a merge resumed before a snapshot
            // of the same origin exists would not copy its writes into that snapshot
            let origin = match tables[name].first().map(|l| &l.target) {
                Some(Target::SnapshotOrigin(o)) => Some(o.device.as_str()),
                Some(Target::SnapshotMerge(m)) => Some(m.origin.as_str()),
                _ => None,
            };
            let snapshot_waits = origin.is_some_and(|o| {
                pending.iter().any(|other| {
                    matches!(tables[other].first().map(|l| &l.target),
                        Some(Target::Snapshot(sp)) if sp.origin == o)
                })
            });
            if snapshot_waits {
                waiting.push(name);
                continue;
            }
            match map_table(dm, st, &tables[name]) {
                Ok(mapped) => {
                    dm.create(name, &mapped)?;
                    info!(device = %name, table = %crate::dm::format_table(&mapped).trim_end(), "re-created device");
                    match alone.remove(name) {
                        Some(why) => {
                            warn!(device = %name, reason = %why, "re-created a source alone on linear: its relationship could not be re-created");
                            out.degraded.push(name.clone());
                        }
                        None => out.created.push(name.clone()),
                    }
                    progress = true;
                }
                Err((Some(own), _)) if !out.failed.iter().any(|(n, _)| *n == own) => {
                    waiting.push(name);
                }
                Err((None, why)) if !alone.contains_key(name) => {
                    match source_alone(&tables[name]) {
                        Some(t)
                            if names::real_object(name).is_some()
                                || names::copy_object(name).is_some()
                                || names::shim_object(name).is_some() =>
                        {
                            tables.insert(name, t);
                            alone.insert(name, why);
                            waiting.push(name);
                        }
                        _ => out.failed.push((name.clone(), why)),
                    }
                    progress = true;
                }
                Err((_, why)) => {
                    out.failed.push((name.clone(), why));
                    progress = true;
                }
            }
        }
        todo = waiting;
        if todo.is_empty() {
            break;
        }
        if !progress {
            for name in todo.drain(..) {
                out.failed.push((
                    name.clone(),
                    "refers to a device that is neither present nor saved".into(),
                ));
            }
            break;
        }
    }
    for (name, why) in &out.failed {
        warn!(device = %name, reason = %why, "device not re-created");
    }
    // the node LIO's saved configuration names (made here where no udev makes it)
    for name in out.created.iter().chain(&out.degraded) {
        if names::shim_object(name).is_some() {
            if let Err(e) = dm.device_path(name) {
                warn!(device = %name, error = %e, "no device node for a re-created shim");
            }
        }
    }
    Ok(out)
}

/// Bind a loop device to every saved file of ours that none is bound to. Only files in the
/// state directory's metadata folder are bound: the saved state names them, and nothing
/// else of the host's is ours to attach. A file that cannot be bound is logged; the device
/// over it then fails to come back with the reason.
fn bind_loop_files(dm: &dyn DmBackend, st: &SavedState, state_dir: &Path) -> Vec<FileDevice> {
    let own = names::meta_dir(state_dir);
    let own = std::fs::canonicalize(&own).unwrap_or(own);
    let mut out = Vec::new();
    for id in st.disks.values() {
        let Some(file) = id.loop_file() else {
            continue;
        };
        if file.parent() != Some(own.as_path()) {
            warn!(file = %file.display(), "a saved loop device's file is not in the state directory: not bound");
            continue;
        }
        if dm.find_disks(id).is_ok_and(|f| !f.is_empty()) {
            continue;
        }
        // (the backend logs the binding)
        match dm.attach_file(file) {
            Ok(d) => out.push(d),
            Err(e) => {
                warn!(file = %file.display(), error = %e, "cannot bind a saved metadata file")
            }
        }
    }
    out
}

/// Re-create the adopted storage objects LIO does not show, on their shims, with their LUNs
/// and mappings. Returns how many could not be (each logged).
pub fn restore_lio(cfs: &ConfigFs, dm: &dyn DmBackend, st: &SavedState) -> Result<usize> {
    let mut failures = 0;
    for o in &st.objects {
        let r = (|| -> Result<bool> {
            let shim = names::shim(&o.so.name)?;
            let Some(info) = dm.info(&shim)? else {
                return Err(Error::NotFound(format!(
                    "its device {shim} was not re-created"
                )));
            };
            match cfs.find_storage_object(&Plugin::Block, &o.so.name) {
                Ok(cur) => {
                    if !adopt::runs_on(dm, cur.udev_path.as_deref(), info.devno()) {
                        return Err(Error::InUse(format!(
                            "LIO already has {} on {}, not on {shim}: writes to it bypass its \
                             replica; delete it and restart the daemon",
                            cur.element(),
                            cur.udev_path.as_deref().unwrap_or("no device")
                        )));
                    }
                    Ok(false)
                }
                Err(Error::NotFound(_)) => {
                    let _lock = cfs.lock()?;
                    let dev = dm.device_path(&shim)?.to_string_lossy().into_owned();
                    let cur = cfs.create_iblock(&adopt::spec_of(&o.so, &dev))?;
                    recovery::restore_exports(cfs, &cur, &o.exports)?;
                    Ok(true)
                }
                Err(e) => Err(e),
            }
        })();
        match r {
            Ok(true) => {
                info!(element = %o.so.element(), luns = o.exports.len(), "re-created an adopted storage object after a reboot")
            }
            Ok(false) => {
                info!(element = %o.so.element(), "adopted storage object already restored by LIO")
            }
            Err(e) => {
                failures += 1;
                warn!(element = %o.so.element(), error = %e, "adopted storage object not restored");
            }
        }
    }
    Ok(failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state file as written before device numbers and sizes had types of their own.
    const OLD_FORMAT: &str = r#"{
  "format": 1,
  "boot_id": "0f3c4e2a-5d1b-4c8e-9a7f-2b6d8e1c3a5f",
  "devices": [
    {
      "name": "lio-replica-v1-so-disk0",
      "table": ["0 131072 snapshot-origin 253:1"]
    },
    {
      "name": "lio-replica-v1-real-disk0",
      "table": ["0 131072 mirror core 1 4096 2 8:0 0 8:16 0 1 handle_errors"]
    }
  ],
  "disks": {
    "253:1": {
      "ids": ["dm-uuid:LIOREPLICA-V1-real-disk0"],
      "sectors": 131072,
      "kernel_name": "dm-1"
    },
    "8:0": {
      "ids": ["serial:lr-disk0"],
      "sectors": 131072,
      "kernel_name": "vdb"
    },
    "8:16": {
      "ids": ["by-id:virtio-lr-disk1", "serial:lr-disk1"],
      "sectors": 262144,
      "kernel_name": "vdc"
    }
  },
  "objects": [
    {
      "so": {
        "plugin": "block",
        "hba": "iblock_0",
        "name": "disk0",
        "udev_path": "/dev/mapper/lio-replica-v1-so-disk0",
        "size_bytes": null,
        "wwn": "5e2e0000-0000-4000-8000-000000000000",
        "enabled": true,
        "readonly": false,
        "path": "/sys/kernel/config/target/core/iblock_0/disk0",
        "attributes": {"emulate_tpu": "0", "queue_depth": "128"}
      },
      "exports": [
        {
          "fabric": "iscsi",
          "wwn": "iqn.2003-01.org.linux-iscsi.sim:disk0",
          "tpg": "/sys/kernel/config/target/iscsi/iqn.2003-01.org.linux-iscsi.sim:disk0/tpgt_1",
          "tpg_tag": 1,
          "tpg_enabled": true,
          "lun": 0,
          "link_name": "lnk0",
          "mapped": [],
          "mapped_acls": []
        }
      ]
    }
  ],
  "lio_pending": false
}"#;

    #[test]
    fn an_old_format_state_file_still_loads_and_saves_the_same() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE), OLD_FORMAT).unwrap();
        let st = load(dir.path()).unwrap().unwrap();
        let vdc = &st.disks[&Devno::new(8, 16)];
        assert_eq!(vdc.sectors, crate::dm::Sectors(262144));
        assert_eq!(vdc.kernel_name, "vdc");
        assert_eq!(
            st.disks.keys().map(ToString::to_string).collect::<Vec<_>>(),
            ["8:0", "8:16", "253:1"]
        );
        assert_eq!(st.objects[0].so.plugin, Plugin::Block);
        // written back, it is the same document
        save(dir.path(), &st).unwrap();
        let text = std::fs::read_to_string(dir.path().join(STATE_FILE)).unwrap();
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        let old: serde_json::Value = serde_json::from_str(OLD_FORMAT).unwrap();
        assert_eq!(back, old);
        // and a device number that is not one is refused, naming the file
        let bad = OLD_FORMAT.replace(r#""8:16": {"#, r#""vdc": {"#);
        std::fs::write(dir.path().join(STATE_FILE), bad).unwrap();
        let e = load(dir.path()).unwrap_err();
        assert!(e.to_string().contains(STATE_FILE), "{e}");
    }
}
