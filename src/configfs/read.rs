//! Reading the tree: storage objects under `core/`, fabric targets everywhere else.
//!
//! Every name read from the tree is validated before it is joined into a path; symlinks where
//! configfs has directories, and links leading outside the root, are skipped with a warning.
//!
//! Listing is a matter of system calls: entries take their kind from the directory
//! (`d_type`), files are opened relative to their open HBA or LUN directory, each attribute
//! is one open, one read and one close, and the directories are read on several threads.

use super::dir::{is_symlink_at, read_link_at, read_text_at};
use super::paths::{
    child_dirs, child_links, dir_names, entries, info_value, link_names, link_target,
    listing_if_there, mode_nofollow, open_listing, parse_index, plugin_of_hba, read_attr,
    read_flag, root_entries, split_hba, EntryKind, FABRIC_NON_TARGETS,
};
use super::{ConfigFs, LunExport, LunLink, MappedLun, NodeAcl, StorageObject, Target, Tpg};
use super::{Lun, StorageObjectSummary};
use crate::error::{Error, Result};
use crate::names::{validate_configfs_component, Plugin};
use crate::par;
use std::collections::BTreeMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

const SERIAL_LABEL: &str = "T10 VPD Unit Serial Number:";

/// HBA directories or storage objects one thread reads at least, when reading on several.
const PER_THREAD: usize = 32;
/// Targets, likewise.
const TARGETS_PER_THREAD: usize = 4;
/// LUNs of one TPG, likewise (a TPG's LUNs are read on several threads only when it has many).
const LUNS_PER_THREAD: usize = 256;

impl ConfigFs {
    /// `attrib/block_size` of a listed storage object: the logical block size initiators
    /// see. Not part of the listing, which reads no attributes.
    pub fn block_size(&self, so: &StorageObjectSummary) -> Option<u32> {
        read_attr(&so.path.join("attrib").join("block_size"))?
            .trim()
            .parse()
            .ok()
    }

    /// Every storage object of every plugin under `core/`, without attributes, sorted by
    /// plugin, HBA index and name.
    pub fn storage_objects(&self) -> Result<Vec<StorageObjectSummary>> {
        let core = self.root.join("core");
        let Hbas {
            core: core_fd,
            dirs: hbas,
        } = hba_dirs(self)?;
        let Some(core_fd) = core_fd else {
            return Ok(Vec::new());
        };
        let core_fd = core_fd.as_fd();
        let per_hba = par::map(&hbas, PER_THREAD, |(plugin, hba)| {
            list_hba(core_fd, &core, plugin, hba)
        });
        let mut out = Vec::new();
        for (objects, (_, hba)) in per_hba.into_iter().zip(&hbas) {
            // every HBA name passed split_hba in hba_dirs
            let index = split_hba(hba).map_or(0, |h| h.1);
            out.extend(objects?.into_iter().map(|so| (index, so)));
        }
        out.sort_by(|(ia, a), (ib, b)| (&a.plugin, ia, &a.name).cmp(&(&b.plugin, ib, &b.name)));
        Ok(out.into_iter().map(|(_, so)| so).collect())
    }

    /// One storage object, attributes included. `plugin` is targetcli's name (block,
    /// fileio, ...). `Error::NotFound` if absent.
    pub fn find_storage_object(&self, plugin: &Plugin, name: &str) -> Result<StorageObject> {
        // read only the one object: an attach must not cost a walk of the whole tree
        match locate_storage_object(self, plugin, name)? {
            Some((plugin, hba)) => Ok(read_storage_object(self, &plugin, &hba, name)),
            None => Err(Error::NotFound(format!(
                "no storage object /backstores/{plugin}/{name}"
            ))),
        }
    }

    /// All fabric targets (every directory under the root except `core`).
    pub fn targets(&self) -> Result<Vec<Target>> {
        let dirs = target_dirs(self)?;
        par::map(&dirs, TARGETS_PER_THREAD, |(fabric, wwn)| {
            read_target(self, fabric, wwn)
        })
        .into_iter()
        .collect()
    }

    /// Every LUN that links to a storage object, in the order of [`ConfigFs::targets`] (by
    /// fabric and WWN, then TPG tag, then LUN index).
    pub fn lun_links(&self) -> Result<Vec<LunLink>> {
        let dirs = target_dirs(self)?;
        let per_target = par::map(
            &dirs,
            TARGETS_PER_THREAD,
            |(fabric, wwn)| -> Result<Vec<LunLink>> {
                let path = self.root.join(fabric).join(wwn);
                let mut out = Vec::new();
                for (t, tag) in tpg_dirs(&path)? {
                    for lun in read_luns(self, &path.join(&t))? {
                        if let Some(so) = lun.storage_object {
                            out.push(LunLink {
                                fabric: fabric.clone(),
                                wwn: wwn.clone(),
                                tpg_tag: tag,
                                lun: lun.index,
                                storage_object: so,
                            });
                        }
                    }
                }
                Ok(out)
            },
        );
        let mut out = Vec::new();
        for links in per_target {
            out.extend(links?);
        }
        Ok(out)
    }

    /// Every LUN that links to `so`, with its ACL mappings.
    pub fn exports_of(&self, so: &StorageObject) -> Result<Vec<LunExport>> {
        Ok(Self::exports_in(&self.targets()?, so))
    }

    /// As [`ConfigFs::exports_of`], from targets already read with [`ConfigFs::targets`] (one
    /// read of the fabric tree for many objects).
    pub fn exports_in(targets: &[Target], so: &StorageObject) -> Vec<LunExport> {
        let key = (so.hba.clone(), so.name.clone());
        let mut out = Vec::new();
        for t in targets {
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
        out
    }

    /// What a storage object holds that lives only in the kernel and is lost when the object
    /// is deleted and created again: SCSI persistent reservation registrations and a
    /// reservation (`pr/`), its own ALUA target port groups (`alua/` besides
    /// `default_tg_pt_gp`) and a membership of an ALUA LU group other than the default. One
    /// line for each, empty when there is none.
    pub fn kernel_only_state(&self, so: &StorageObject) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let attr = |rel: &str| read_attr(&so.path.join(rel)).unwrap_or_default();
        let regs = attr("pr/res_pr_registered_i_pts");
        let regs: Vec<&str> = regs
            .lines()
            .map(|l| l.trim_matches(|c: char| c.is_whitespace() || c == '\0'))
            // (the kernel heads the list with "SPC-3 PR Registrations:", or says "None")
            .filter(|l| !l.is_empty() && *l != "None" && !l.ends_with("Registrations:"))
            .collect();
        if !regs.is_empty() {
            out.push(format!(
                "persistent reservation registrations: {}",
                regs.join("; ")
            ));
        }
        let holder = attr("pr/res_holder");
        if holder.contains("Initiator:") {
            out.push(format!("a reservation: {}", holder.trim()));
        }
        let groups: Vec<String> = child_dirs(&so.path.join("alua"))?
            .into_iter()
            .filter(|g| g != "default_tg_pt_gp")
            .collect();
        if !groups.is_empty() {
            out.push(format!("ALUA target port groups: {}", groups.join(", ")));
        }
        let lu_gp = attr("alua_lu_gp");
        if let Some(alias) = lu_gp
            .lines()
            .find_map(|l| l.strip_prefix("LU Group Alias: "))
            .filter(|a| *a != "default_lu_gp")
        {
            out.push(format!("membership of the ALUA LU group {alias}"));
        }
        Ok(out)
    }

    /// The initiators logged in through the TPG at `tpg`: those with a session on a dynamic ACL
    /// (`dynamic_sessions`, one name a line) and each explicit ACL whose `info` names its
    /// session's initiator (without a session it reads "No active iSCSI Session").
    pub fn sessions(&self, tpg: &Path) -> Result<Vec<String>> {
        // (the kernel's list may end in a NUL byte, which is no session)
        let mut out: Vec<String> = read_attr(&tpg.join("dynamic_sessions"))
            .unwrap_or_default()
            .lines()
            .map(|l| l.trim_matches(|c: char| c.is_whitespace() || c == '\0'))
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        for acl in child_dirs(&tpg.join("acls"))? {
            let info = read_attr(&tpg.join("acls").join(&acl).join("info")).unwrap_or_default();
            if info.contains("InitiatorName:") {
                out.push(acl);
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

/// `core/`, open, and its backstore HBA directories.
struct Hbas {
    /// `None` where a symlink stands in place of `core`
    core: Option<OwnedFd>,
    /// `(plugin, hba directory name)`, by name
    dirs: Vec<(Plugin, String)>,
}

fn hba_dirs(cfs: &ConfigFs) -> Result<Hbas> {
    let core = cfs.root.join("core");
    let listing =
        open_listing(None, &core, &core).map_err(|e| Error::io("read directory", &core, e))?;
    // a symlink in place of `core` (warned) holds no objects
    let Some(listing) = listing else {
        return Ok(Hbas {
            core: None,
            dirs: Vec::new(),
        });
    };
    let mut out = Vec::new();
    for e in listing.entries {
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
    Ok(Hbas {
        core: Some(listing.fd),
        dirs: out,
    })
}

/// The storage objects in the HBA directory `hba` of `core` (open as `core_fd`).
fn list_hba(
    core_fd: BorrowedFd<'_>,
    core: &Path,
    plugin: &Plugin,
    hba: &str,
) -> Result<Vec<StorageObjectSummary>> {
    let dir = core.join(hba);
    let Some(listing) = listing_if_there(Some(core_fd), Path::new(hba), &dir)? else {
        return Ok(Vec::new());
    };
    let names = dir_names(&dir, listing.entries);
    let hba_fd = listing.fd.as_fd();
    Ok(par::map(&names, PER_THREAD, |name| {
        read_summary(&ObjectDir {
            hba_fd: Some(hba_fd),
            core,
            plugin,
            hba,
            name,
        })
    }))
}

/// One storage object's directory, read relative to its open HBA directory; `hba` and `name`
/// are validated names, and the object's directory is known not to be a symlink.
struct ObjectDir<'a> {
    /// `None` if the HBA directory could not be opened: nothing can be read
    hba_fd: Option<BorrowedFd<'a>>,
    core: &'a Path,
    plugin: &'a Plugin,
    hba: &'a str,
    name: &'a str,
}

impl ObjectDir<'_> {
    fn rel(&self, file: &str) -> PathBuf {
        Path::new(self.name).join(file)
    }

    fn attr(&self, file: &str) -> Option<String> {
        read_text_at(Some(self.hba_fd?), &self.rel(file))
    }

    /// `group/file`, not through a symlinked group (`wwn`, `attrib`): that file is not in the
    /// tree.
    fn group_attr(&self, group: &str, file: &str) -> Option<String> {
        let fd = self.hba_fd?;
        let g = self.rel(group);
        if is_symlink_at(Some(fd), &g) {
            return None;
        }
        read_text_at(Some(fd), &g.join(file))
    }
}

/// Everything of one storage object but its attributes.
fn read_summary(o: &ObjectDir<'_>) -> StorageObjectSummary {
    let info = o.attr("info").unwrap_or_default();
    // The `udev_path` attribute is only what someone wrote to it (rtslib does); a backstore
    // configured through `control` alone shows its device in `info` only.
    let udev_path = o
        .attr("udev_path")
        .filter(|s| !s.is_empty())
        .or_else(|| match o.plugin {
            Plugin::Block => info_value(&info, "UDEV PATH"),
            Plugin::Fileio => info_value(&info, "File"),
            _ => None,
        })
        .filter(|s| !s.is_empty());
    let readonly = info_value(&info, "readonly")
        .or_else(|| o.group_attr("attrib", "readonly"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|v| v != 0);
    let size_bytes = match o.plugin {
        Plugin::Fileio | Plugin::User(_) => {
            info_value(&info, "Size").and_then(|v| v.parse::<u64>().ok())
        }
        Plugin::Ramdisk => info_value(&info, "PAGES/PAGE_SIZE").and_then(|v| {
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
    StorageObjectSummary {
        plugin: o.plugin.clone(),
        hba: o.hba.to_string(),
        name: o.name.to_string(),
        udev_path,
        size_bytes,
        wwn: o
            .group_attr("wwn", "vpd_unit_serial")
            .map(|s| strip_serial_label(&s))
            .filter(|s| !s.is_empty()),
        // rtslib: an object without `enable` is always enabled.
        enabled: o
            .attr("enable")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_none_or(|v| v != 0),
        readonly,
        path: o.core.join(o.hba).join(o.name),
    }
}

/// One storage object, attributes included; `hba` and `name` are validated names of a
/// directory that is not a symlink.
pub(super) fn read_storage_object(
    cfs: &ConfigFs,
    plugin: &Plugin,
    hba: &str,
    name: &str,
) -> StorageObject {
    let core = cfs.root.join("core");
    let hba_dir = core.join(hba);
    let hba_fd = super::dir::open_dir(None, &hba_dir, false).ok();
    let s = read_summary(&ObjectDir {
        hba_fd: hba_fd.as_ref().map(AsFd::as_fd),
        core: &core,
        plugin,
        hba,
        name,
    });
    let attributes = match hba_fd {
        Some(_) => read_attributes(&s.path.join("attrib")),
        None => BTreeMap::new(),
    };
    StorageObject {
        summary: s,
        attributes,
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
        if e.kind != EntryKind::File {
            continue;
        }
        if validate_configfs_component(&e.name).is_err() {
            continue;
        }
        let p = dir.join(&e.name);
        if mode_nofollow(&p).is_none_or(|m| m & 0o600 != 0o600) {
            continue;
        }
        if let Some(v) = read_attr(&p) {
            out.insert(e.name, v);
        }
    }
    out
}

/// `(plugin, hba)` of the storage object `plugin`/`name`, if there is one: one `stat` per HBA
/// directory of that plugin, nothing read.
pub(super) fn locate_storage_object(
    cfs: &ConfigFs,
    want: &Plugin,
    name: &str,
) -> Result<Option<(Plugin, String)>> {
    validate_configfs_component(name)?;
    let core = cfs.root.join("core");
    for (plugin, hba) in hba_dirs(cfs)?.dirs {
        if !plugin.same_kind(want) {
            continue;
        }
        // a real directory, not a symlink planted in its place
        let dir = core.join(&hba).join(name);
        if std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
            return Ok(Some((plugin, hba)));
        }
    }
    Ok(None)
}

/// `(fabric, wwn)` of every target directory, sorted.
fn target_dirs(cfs: &ConfigFs) -> Result<Vec<(String, String)>> {
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
            out.push((e.name.clone(), wwn));
        }
    }
    out.sort();
    Ok(out)
}

/// `(directory name, tag)` of the TPGs of the target at `path`, by tag.
fn tpg_dirs(path: &Path) -> Result<Vec<(String, u16)>> {
    let mut out: Vec<(String, u16)> = child_dirs(path)?
        .into_iter()
        .filter_map(|t| {
            let tag = parse_index(&t, "tpgt_").and_then(|v| u16::try_from(v).ok())?;
            Some((t, tag))
        })
        .collect();
    out.sort_by_key(|t| t.1);
    Ok(out)
}

fn read_target(cfs: &ConfigFs, fabric: &str, wwn: &str) -> Result<Target> {
    let path = cfs.root.join(fabric).join(wwn);
    let mut tpgs = Vec::new();
    for (t, tag) in tpg_dirs(&path)? {
        tpgs.push(read_tpg(cfs, [fabric, wwn, &t], tag)?);
    }
    Ok(Target {
        fabric: fabric.to_string(),
        wwn: wwn.to_string(),
        tpgs,
        path,
    })
}

fn read_tpg(cfs: &ConfigFs, comps: [&str; 3], tag: u16) -> Result<Tpg> {
    let path = cfs.root.join(comps[0]).join(comps[1]).join(comps[2]);
    let luns = read_luns(cfs, &path)?;
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

/// The LUNs of the TPG at `tpg`, by index. Each LUN directory is read relative to the open
/// `lun` group: its listing and its link, nothing else.
fn read_luns(cfs: &ConfigFs, tpg: &Path) -> Result<Vec<Lun>> {
    let group = tpg.join("lun");
    let Some(listing) = listing_if_there(None, &group, &group)? else {
        return Ok(Vec::new());
    };
    let group_fd = listing.fd.as_fd();
    let names: Vec<(String, u64)> = dir_names(&group, listing.entries)
        .into_iter()
        .filter_map(|l| {
            let index = parse_index(&l, "lun_")?;
            Some((l, index))
        })
        .collect();
    let mut luns = par::map(&names, LUNS_PER_THREAD, |(l, index)| {
        read_lun(cfs, group_fd, &group, l, *index)
    })
    .into_iter()
    .collect::<Result<Vec<Lun>>>()?;
    luns.sort_by_key(|l| l.index);
    Ok(luns)
}

/// The LUN directory `name` in the `lun` group `group` (open as `group_fd`).
fn read_lun(
    cfs: &ConfigFs,
    group_fd: BorrowedFd<'_>,
    group: &Path,
    name: &str,
    index: u64,
) -> Result<Lun> {
    let dir = group.join(name);
    let listing = listing_if_there(Some(group_fd), Path::new(name), &dir)?;
    let (links, fd) = match listing {
        Some(l) => (link_names(&dir, l.entries), Some(l.fd)),
        None => (Vec::new(), None),
    };
    if links.len() > 1 {
        tracing::warn!(lun = %dir.display(), "LUN directory holds {} links; using the first", links.len());
    }
    let link_name = links.first().cloned().unwrap_or_default();
    let storage_object = links.first().zip(fd).and_then(|(l, fd)| {
        let link = dir.join(l);
        match cfs
            .components_of_link(&link, read_link_at(fd.as_fd(), l))?
            .as_slice()
        {
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
        path: dir,
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
