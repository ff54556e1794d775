//! Reading the tree: storage objects under `core/`, fabric targets everywhere else.
//!
//! Every name read from the tree is validated before it is joined into a path; symlinks where
//! configfs has directories, and links leading outside the root, are skipped with a warning.

use super::paths::{
    child_dirs, child_links, entries, info_value, link_target, parse_index, plugin_of_hba,
    read_attr, read_flag, root_entries, split_hba, EntryKind, FABRIC_NON_TARGETS,
};
use super::Lun;
use super::{ConfigFs, LunExport, MappedLun, NodeAcl, StorageObject, Target, Tpg};
use crate::error::{Error, Result};
use crate::names::validate_configfs_component;
use std::collections::BTreeMap;
use std::path::Path;

const SERIAL_LABEL: &str = "T10 VPD Unit Serial Number:";

/// `(plugin, hba directory name)` of every backstore HBA directory under `core/`.
fn hba_dirs(cfs: &ConfigFs) -> Result<Vec<(&'static str, String)>> {
    let core = cfs.root.join("core");
    let ents = entries(&core).map_err(|e| Error::io("read directory", &core, e))?;
    let mut out = Vec::new();
    for e in ents {
        let Some(plugin) = plugin_of_hba(&e.name) else {
            if e.name != "alua" {
                tracing::debug!(path = %core.join(&e.name).display(), "not a backstore HBA directory");
            }
            continue;
        };
        match e.kind {
            EntryKind::Dir => {}
            EntryKind::Symlink => {
                tracing::warn!(path = %core.join(&e.name).display(), "ignoring a symlink where configfs has an HBA directory");
                continue;
            }
            _ => continue,
        }
        if let Err(err) = validate_configfs_component(&e.name) {
            tracing::warn!("ignoring HBA directory: {err}");
            continue;
        }
        out.push((plugin, e.name));
    }
    Ok(out)
}

pub(super) fn storage_objects(cfs: &ConfigFs) -> Result<Vec<StorageObject>> {
    let core = cfs.root.join("core");
    let mut out = Vec::new();
    for (plugin, hba) in hba_dirs(cfs)? {
        for name in child_dirs(&core.join(&hba))? {
            out.push(read_storage_object(cfs, plugin, &hba, &name));
        }
    }
    out.sort_by(|a, b| {
        (&a.plugin, split_hba(&a.hba).map(|h| h.1), &a.name).cmp(&(
            &b.plugin,
            split_hba(&b.hba).map(|h| h.1),
            &b.name,
        ))
    });
    Ok(out)
}

/// One storage object; `hba` and `name` are validated names.
pub(super) fn read_storage_object(
    cfs: &ConfigFs,
    plugin: &str,
    hba: &str,
    name: &str,
) -> StorageObject {
    let path = cfs.root.join("core").join(hba).join(name);
    let info = read_attr(&path.join("info")).unwrap_or_default();
    // The `udev_path` attribute is only what someone wrote to it (rtslib does); a backstore
    // configured through `control` alone shows its device in `info` only.
    let udev_path = read_attr(&path.join("udev_path"))
        .filter(|s| !s.is_empty())
        .or_else(|| match plugin {
            "block" => info_value(&info, "UDEV PATH"),
            "fileio" => info_value(&info, "File"),
            _ => None,
        })
        .filter(|s| !s.is_empty());
    let readonly = info_value(&info, "readonly")
        .or_else(|| read_attr(&path.join("attrib").join("readonly")))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|v| v != 0);
    let size_bytes = match plugin {
        "fileio" | "user" => info_value(&info, "Size").and_then(|v| v.parse::<u64>().ok()),
        "ramdisk" => info_value(&info, "PAGES/PAGE_SIZE").and_then(|v| {
            let (pages, page) = v.split_once('*')?;
            pages
                .parse::<u64>()
                .ok()?
                .checked_mul(page.parse::<u64>().ok()?)
        }),
        // iblock: the kernel does not show the size; ask the block device.
        _ => None,
    }
    .filter(|s| *s > 0);
    StorageObject {
        plugin: plugin.to_string(),
        hba: hba.to_string(),
        name: name.to_string(),
        udev_path,
        size_bytes,
        wwn: read_attr(&path.join("wwn").join("vpd_unit_serial"))
            .map(|s| strip_serial_label(&s))
            .filter(|s| !s.is_empty()),
        // rtslib: an object without `enable` is always enabled.
        enabled: read_flag(&path.join("enable")).unwrap_or(true),
        readonly,
        attributes: read_attributes(&path.join("attrib")),
        path,
    }
}

fn strip_serial_label(s: &str) -> String {
    match s.strip_prefix(SERIAL_LABEL) {
        Some(rest) => rest.trim().to_string(),
        None => s
            .split_once(':')
            .map_or(s, |(_, rest)| rest)
            .trim()
            .to_string(),
    }
}

/// `attrib/*` that are both readable and writable by their mode bits (what rtslib saves);
/// read-only (`hw_*`) and write-only ones are left out, unreadable ones skipped silently.
pub(super) fn read_attributes(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let ents = match entries(dir) {
        Ok(v) => v,
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), "cannot list attributes: {e}");
            }
            return out;
        }
    };
    for e in ents {
        if e.kind != EntryKind::File || e.mode & 0o600 != 0o600 {
            continue;
        }
        if validate_configfs_component(&e.name).is_err() {
            continue;
        }
        if let Some(v) = read_attr(&dir.join(&e.name)) {
            out.insert(e.name, v);
        }
    }
    out
}

pub(super) fn find_storage_object(
    cfs: &ConfigFs,
    plugin: &str,
    name: &str,
) -> Result<StorageObject> {
    let want = if plugin.starts_with("user:") {
        "user"
    } else {
        plugin
    };
    // read only the one object: an attach must not cost a walk of the whole tree
    validate_configfs_component(name)?;
    let core = cfs.root.join("core");
    for (plugin, hba) in hba_dirs(cfs)? {
        if plugin != want {
            continue;
        }
        // a real directory, not a symlink planted in its place
        let dir = core.join(&hba).join(name);
        if std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
            return Ok(read_storage_object(cfs, plugin, &hba, name));
        }
    }
    Err(Error::NotFound(format!(
        "no storage object /backstores/{plugin}/{name}"
    )))
}

pub(super) fn targets(cfs: &ConfigFs) -> Result<Vec<Target>> {
    let root = &cfs.root;
    let ents = root_entries(root).map_err(|e| Error::io("read directory", root, e))?;
    let mut out = Vec::new();
    for e in ents {
        if e.name == "core" {
            continue;
        }
        match e.kind {
            EntryKind::Dir => {}
            EntryKind::Symlink => {
                tracing::warn!(path = %root.join(&e.name).display(), "ignoring a symlink where configfs has a fabric directory");
                continue;
            }
            _ => continue,
        }
        if let Err(err) = validate_configfs_component(&e.name) {
            tracing::warn!("ignoring fabric directory: {err}");
            continue;
        }
        let fabric_dir = root.join(&e.name);
        for wwn in child_dirs(&fabric_dir)? {
            if FABRIC_NON_TARGETS.contains(&wwn.as_str()) {
                continue;
            }
            out.push(read_target(cfs, &e.name, &wwn)?);
        }
    }
    out.sort_by(|a, b| (&a.fabric, &a.wwn).cmp(&(&b.fabric, &b.wwn)));
    Ok(out)
}

fn read_target(cfs: &ConfigFs, fabric: &str, wwn: &str) -> Result<Target> {
    let path = cfs.root.join(fabric).join(wwn);
    let mut tpgs = Vec::new();
    for t in child_dirs(&path)? {
        let Some(tag) = parse_index(&t, "tpgt_").and_then(|v| u16::try_from(v).ok()) else {
            continue;
        };
        tpgs.push(read_tpg(cfs, [fabric, wwn, &t], tag)?);
    }
    tpgs.sort_by_key(|t| t.tag);
    Ok(Target {
        fabric: fabric.to_string(),
        wwn: wwn.to_string(),
        tpgs,
        path,
    })
}

fn read_tpg(cfs: &ConfigFs, comps: [&str; 3], tag: u16) -> Result<Tpg> {
    let path = cfs.root.join(comps[0]).join(comps[1]).join(comps[2]);
    let mut luns = Vec::new();
    for l in child_dirs(&path.join("lun"))? {
        let Some(index) = parse_index(&l, "lun_") else {
            continue;
        };
        luns.push(read_lun(cfs, &path.join("lun").join(&l), index)?);
    }
    luns.sort_by_key(|l| l.index);
    let mut acls = Vec::new();
    for initiator in child_dirs(&path.join("acls"))? {
        let acl = path.join("acls").join(&initiator);
        let mut mapped_luns = Vec::new();
        for m in child_dirs(&acl)? {
            let Some(index) = parse_index(&m, "lun_") else {
                continue;
            };
            if let Some(ml) = read_mapped_lun(cfs, &comps, &acl.join(&m), index)? {
                mapped_luns.push(ml);
            }
        }
        mapped_luns.sort_by_key(|m| m.index);
        acls.push(NodeAcl {
            initiator,
            mapped_luns,
            path: acl,
        });
    }
    Ok(Tpg {
        tag,
        // rtslib: a TPG without `enable` (loopback) is always enabled.
        enabled: read_flag(&path.join("enable")).unwrap_or(true),
        luns,
        acls,
        portals: child_dirs(&path.join("np"))?,
        path,
    })
}

fn read_lun(cfs: &ConfigFs, dir: &Path, index: u64) -> Result<Lun> {
    let links = child_links(dir)?;
    if links.len() > 1 {
        tracing::warn!(lun = %dir.display(), "LUN directory holds {} links; using the first", links.len());
    }
    let link_name = links.first().cloned().unwrap_or_default();
    let storage_object = links.first().and_then(|l| {
        let link = dir.join(l);
        match cfs.link_components(&link)?.as_slice() {
            [core, hba, name] if core == "core" && split_hba(hba).is_some() => {
                Some((hba.clone(), name.clone()))
            }
            _ => {
                tracing::warn!(link = %link.display(), target = ?link_target(&link), "LUN link does not lead to a storage object");
                None
            }
        }
    });
    Ok(Lun {
        index,
        link_name,
        storage_object,
        path: dir.to_path_buf(),
    })
}

fn read_mapped_lun(
    cfs: &ConfigFs,
    tpg: &[&str; 3],
    dir: &Path,
    index: u64,
) -> Result<Option<MappedLun>> {
    let links = child_links(dir)?;
    let Some(link_name) = links.first() else {
        tracing::debug!(mapped_lun = %dir.display(), "mapped LUN without a link");
        return Ok(None);
    };
    let link = dir.join(link_name);
    let Some(comps) = cfs.link_components(&link) else {
        return Ok(None);
    };
    let tpg_lun = match comps.as_slice() {
        [f, w, t, lun, l] if [f, w, t] == *tpg && lun == "lun" => parse_index(l, "lun_"),
        _ => None,
    };
    let Some(tpg_lun) = tpg_lun else {
        tracing::warn!(link = %link.display(), "mapped LUN link does not lead to a LUN of its own TPG");
        return Ok(None);
    };
    Ok(Some(MappedLun {
        index,
        tpg_lun,
        write_protect: read_flag(&dir.join("write_protect")).unwrap_or(false),
        link_name: link_name.clone(),
        path: dir.to_path_buf(),
    }))
}

pub(super) fn exports_of(cfs: &ConfigFs, so: &StorageObject) -> Result<Vec<LunExport>> {
    let key = (so.hba.clone(), so.name.clone());
    let mut out = Vec::new();
    for t in targets(cfs)? {
        for tpg in &t.tpgs {
            for lun in tpg
                .luns
                .iter()
                .filter(|l| l.storage_object.as_ref() == Some(&key))
            {
                let mut mapped = Vec::new();
                let mut mapped_acls = Vec::new();
                for acl in &tpg.acls {
                    for m in acl.mapped_luns.iter().filter(|m| m.tpg_lun == lun.index) {
                        mapped.push(m.clone());
                        mapped_acls.push(acl.path.clone());
                    }
                }
                out.push(LunExport {
                    fabric: t.fabric.clone(),
                    wwn: t.wwn.clone(),
                    tpg: tpg.path.clone(),
                    tpg_tag: tpg.tag,
                    tpg_enabled: tpg.enabled,
                    lun: lun.index,
                    link_name: lun.link_name.clone(),
                    mapped,
                    mapped_acls,
                });
            }
        }
    }
    Ok(out)
}

/// The TPG's mapped LUNs (in all its ACLs) that point at `tpg_lun`.
pub(super) fn mapped_luns_of(
    cfs: &ConfigFs,
    tpg: &[String; 3],
    tpg_lun: u64,
) -> Result<Vec<MappedLun>> {
    let t = read_tpg(
        cfs,
        [&tpg[0], &tpg[1], &tpg[2]],
        parse_index(&tpg[2], "tpgt_").unwrap_or_default() as u16,
    )?;
    Ok(t.acls
        .into_iter()
        .flat_map(|a| a.mapped_luns)
        .filter(|m| m.tpg_lun == tpg_lun)
        .collect())
}
