//! Changing the tree, in rtslib's order, undoing a half-done change in reverse order.
//! Every name is validated before it becomes a path; every kernel change is logged once.

use super::paths::{
    child_links, entries, entries_or_empty, exists_nofollow, is_real_dir, link_target,
    mode_nofollow, read_attr, split_hba, EntryKind, FABRIC_NON_TARGETS,
};
use super::read::{locate_storage_object, mapped_luns_of, read_storage_object};
use super::{ConfigFs, IblockSpec, StorageObject};
use crate::error::{Error, Result};
use crate::names::{validate_configfs_component, validate_object_name, Element, Plugin};
use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

/// `SE_UDEV_PATH_LEN` in the kernel, terminating NUL included.
const UDEV_PATH_MAX: usize = 511;
/// `INQUIRY_VPD_SERIAL_LEN` in the kernel, terminating NUL included.
const SERIAL_MAX: usize = 253;

impl ConfigFs {
    pub(crate) fn k_mkdir(&self, p: &Path) -> Result<()> {
        self.check_change_path(p)?;
        self.ops.mkdir(p).map_err(|e| Error::io("mkdir", p, e))?;
        tracing::info!(path = %p.display(), "configfs mkdir");
        Ok(())
    }

    pub(crate) fn k_rmdir(&self, p: &Path) -> Result<()> {
        self.check_change_path(p)?;
        self.ops.rmdir(p).map_err(|e| Error::io("rmdir", p, e))?;
        tracing::info!(path = %p.display(), "configfs rmdir");
        Ok(())
    }

    pub(crate) fn k_write(&self, p: &Path, value: &str) -> Result<()> {
        self.check_change_path(p)?;
        self.ops
            .write(p, value)
            .map_err(|e| Error::io_value("write", p, value, e))?;
        tracing::info!(path = %p.display(), value, "configfs write");
        Ok(())
    }

    pub(crate) fn k_symlink(&self, target: &Path, link: &Path) -> Result<()> {
        self.check_change_path(link)?;
        self.ops
            .symlink(target, link)
            .map_err(|e| Error::io_value("symlink", link, &target.display().to_string(), e))?;
        tracing::info!(path = %link.display(), value = %target.display(), "configfs symlink");
        Ok(())
    }

    pub(crate) fn k_unlink(&self, link: &Path) -> Result<()> {
        self.check_change_path(link)?;
        self.ops
            .unlink(link)
            .map_err(|e| Error::io("unlink", link, e))?;
        tracing::info!(path = %link.display(), "configfs unlink");
        Ok(())
    }
}

/// One way back from a step that was done.
enum Step {
    Rmdir(PathBuf),
    Unlink(PathBuf),
    /// Re-create a removed link (and restore `write_protect` of a mapped LUN).
    Relink {
        target: PathBuf,
        link: PathBuf,
        write_protect: Option<(PathBuf, String)>,
    },
}

/// The steps done so far; [`Undo::fail`] walks them back in reverse order.
struct Undo<'a> {
    cfs: &'a ConfigFs,
    steps: Vec<Step>,
}

impl<'a> Undo<'a> {
    fn new(cfs: &'a ConfigFs) -> Undo<'a> {
        Undo {
            cfs,
            steps: Vec::new(),
        }
    }

    fn mkdir(&mut self, p: &Path) -> Result<()> {
        self.cfs.k_mkdir(p)?;
        self.steps.push(Step::Rmdir(p.to_path_buf()));
        Ok(())
    }

    fn symlink(&mut self, target: &Path, link: &Path) -> Result<()> {
        self.cfs.k_symlink(target, link)?;
        self.steps.push(Step::Unlink(link.to_path_buf()));
        Ok(())
    }

    /// Remove a link; undone by linking again.
    fn unlink(&mut self, link: &Path, write_protect: Option<(PathBuf, String)>) -> Result<()> {
        let target = link_target(link);
        self.cfs.k_unlink(link)?;
        match target {
            Some(target) => self.steps.push(Step::Relink {
                target,
                link: link.to_path_buf(),
                write_protect,
            }),
            None => {
                tracing::warn!(link = %link.display(), "unreadable link removed; it cannot be restored on failure")
            }
        }
        Ok(())
    }

    /// Undo everything, newest first; the error to return is `cause`, or `RollbackFailed`
    /// naming what is left behind.
    fn fail(self, cause: Error) -> Error {
        tracing::warn!("{cause}; undoing {} configfs step(s)", self.steps.len());
        let mut left = Vec::new();
        for step in self.steps.into_iter().rev() {
            let (what, r) = match &step {
                Step::Rmdir(p) => (format!("directory {}", p.display()), self.cfs.k_rmdir(p)),
                Step::Unlink(l) => (format!("link {}", l.display()), self.cfs.k_unlink(l)),
                Step::Relink {
                    target,
                    link,
                    write_protect,
                } => (
                    format!("missing link {} -> {}", link.display(), target.display()),
                    self.cfs
                        .k_symlink(target, link)
                        .and_then(|()| match write_protect {
                            Some((p, v)) => self.cfs.k_write(p, v),
                            None => Ok(()),
                        }),
                ),
            };
            if let Err(e) = r {
                tracing::error!("rollback step failed: {e}");
                left.push(format!("{what} ({e})"));
            }
        }
        Error::after_rollback(cause, left)
    }
}

/// Run `f` with an undo log; on error, undo and return the error.
fn with_undo<T>(cfs: &ConfigFs, f: impl FnOnce(&mut Undo<'_>) -> Result<T>) -> Result<T> {
    let mut undo = Undo::new(cfs);
    match f(&mut undo) {
        Ok(v) => Ok(v),
        Err(e) => Err(undo.fail(e)),
    }
}

/// A block device path as the kernel's `udev_path=` option takes it.
fn check_dev(dev: &Path) -> Result<String> {
    let s = dev
        .to_str()
        .ok_or_else(|| Error::Invalid(format!("device path {dev:?} is not UTF-8")))?;
    let plain = dev.is_absolute()
        && dev
            .components()
            .skip(1)
            .all(|c| matches!(c, Component::Normal(_)));
    if !plain
        || s.len() > UDEV_PATH_MAX
        || s.chars()
            .any(|c| c == ',' || c.is_whitespace() || c.is_control())
    {
        return Err(Error::Invalid(format!(
            "device path {s:?} must be absolute, plain, at most {UDEV_PATH_MAX} bytes, without ',' or spaces"
        )));
    }
    Ok(s.to_string())
}

/// A unit serial as the kernel stores it: printable ASCII.
fn check_serial(s: &str) -> Result<()> {
    if s.trim().is_empty()
        || s.len() > SERIAL_MAX
        || s != s.trim()
        || !s.bytes().all(|b| (0x20..=0x7e).contains(&b))
    {
        return Err(Error::Invalid(format!(
            "unit serial {s:?} must be 1..={SERIAL_MAX} printable ASCII characters"
        )));
    }
    Ok(())
}

fn check_attribute(name: &str, value: &str) -> Result<()> {
    validate_configfs_component(name)?;
    if value.trim().is_empty() || value.chars().any(|c| c.is_control()) {
        return Err(Error::Invalid(format!(
            "attribute {name}: value {value:?} is empty or has control characters"
        )));
    }
    Ok(())
}

fn missing_core(cfs: &ConfigFs, element: &str) -> Error {
    Error::kernel(
        "create",
        element,
        format!(
            "{} does not exist: is configfs mounted and target_core_mod loaded?",
            cfs.root.join("core").display()
        ),
    )
}

/// The lowest index no backstore directory of any plugin uses (as rtslib allocates).
fn lowest_free_index(core: &Path) -> Result<u32> {
    let used: BTreeSet<u32> = entries(core)
        .map_err(|e| Error::io("read directory", core, e))?
        .iter()
        .filter_map(|e| split_hba(&e.name).map(|(_, i)| i))
        .collect();
    (0..=u32::MAX)
        .find(|i| !used.contains(i))
        .ok_or_else(|| Error::Other("no free backstore index".into()))
}

/// Write the attributes that differ from the fresh object's; unknown, read-only and refused
/// ones are logged and skipped.
fn write_attributes(
    cfs: &ConfigFs,
    dir: &Path,
    attributes: &std::collections::BTreeMap<String, String>,
) {
    if attributes.is_empty() {
        return;
    }
    let present = match entries(dir) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), "cannot list attributes, none written: {e}");
            return;
        }
    };
    for (k, v) in attributes {
        let Some(e) = present.iter().find(|e| e.name == *k) else {
            tracing::warn!(attribute = %k, value = %v, "this kernel has no such attribute; skipped");
            continue;
        };
        if e.kind != EntryKind::File || mode_nofollow(&dir.join(k)).is_none_or(|m| m & 0o200 == 0) {
            tracing::warn!(attribute = %k, value = %v, "attribute is read-only; skipped");
            continue;
        }
        let p = dir.join(k);
        if read_attr(&p).as_deref() == Some(v.trim()) {
            continue;
        }
        if let Err(e) = cfs.k_write(&p, v.trim()) {
            tracing::warn!(attribute = %k, value = %v, "kernel refused attribute, left at its default: {e}");
        }
    }
}

impl ConfigFs {
    /// rtslib order: mkdir hba (if new) -> mkdir so -> control udev_path[,readonly] -> enable ->
    /// wwn/vpd_unit_serial -> attributes. On failure undoes what it did, in reverse order.
    /// The caller holds [`ConfigFs::lock`].
    ///
    /// Between `control` and `enable` the `udev_path` attribute is written too (as rtslib
    /// does): the kernel keeps it apart from the `control` value and shows it to targetcli.
    /// Attributes are written only where they differ from the fresh object's value; one the
    /// kernel refuses is logged as a warning and left at its default (compare the returned
    /// object's `attributes` with the spec to notice).
    pub fn create_iblock(&self, spec: &IblockSpec) -> Result<StorageObject> {
        validate_object_name(&spec.name)?;
        let dev = check_dev(&spec.dev)?;
        if let Some(w) = &spec.wwn {
            check_serial(w)?;
        }
        for (k, v) in &spec.attributes {
            check_attribute(k, v)?;
        }
        if let Some(h) = &spec.hba {
            validate_configfs_component(h)?;
            if !matches!(split_hba(h), Some(("iblock", _))) {
                return Err(Error::Invalid(format!(
                    "{h:?} is not an iblock HBA directory (iblock_N)"
                )));
            }
        }
        let element = Element::existing(Plugin::Block, &spec.name);
        let core = self.root.join("core");
        if !is_real_dir(&core) {
            return Err(missing_core(self, &element.to_string()));
        }
        if locate_storage_object(self, &Plugin::Block, &spec.name)?.is_some() {
            return Err(Error::InUse(format!("{element} already exists")));
        }
        let hba = match &spec.hba {
            Some(h) => h.clone(),
            None => format!("iblock_{}", lowest_free_index(&core)?),
        };
        let hba_dir = core.join(&hba);
        let so_dir = hba_dir.join(&spec.name);
        if exists_nofollow(&hba_dir) && !is_real_dir(&hba_dir) {
            return Err(Error::Invalid(format!(
                "{} is not a directory",
                hba_dir.display()
            )));
        }
        if exists_nofollow(&so_dir) {
            return Err(Error::InUse(format!("{} already exists", so_dir.display())));
        }
        let _span = tracing::info_span!("create_iblock", element = %element, dev = %dev).entered();
        with_undo(self, |u| {
            if !exists_nofollow(&hba_dir) {
                u.mkdir(&hba_dir)?;
            }
            u.mkdir(&so_dir)?;
            // Everything below lives in the object's directory and goes with its rmdir.
            self.k_write(&so_dir.join("control"), &format!("udev_path={dev}"))?;
            if spec.readonly {
                self.k_write(&so_dir.join("control"), "readonly=1")?;
            }
            self.k_write(&so_dir.join("udev_path"), &dev)?;
            self.k_write(&so_dir.join("enable"), "1")?;
            if let Some(w) = &spec.wwn {
                self.k_write(&so_dir.join("wwn").join("vpd_unit_serial"), w)?;
            }
            Ok(())
        })?;
        write_attributes(self, &so_dir.join("attrib"), &spec.attributes);
        Ok(read_storage_object(self, &Plugin::Block, &hba, &spec.name))
    }

    /// Refuses (InUse) while a LUN links it. Removes the hba directory if it became empty.
    pub fn delete_storage_object(&self, so: &StorageObject) -> Result<()> {
        let dir = self.so_dir(&so.hba, &so.name)?;
        let element = so.element();
        if !is_real_dir(&dir) {
            return Err(Error::NotFound(format!("no storage object {element}")));
        }
        let exports = self.exports_of(so)?;
        if !exports.is_empty() {
            let luns: Vec<String> = exports
                .iter()
                .map(|e| format!("{}/{}/tpgt_{}/lun_{}", e.fabric, e.wwn, e.tpg_tag, e.lun))
                .collect();
            return Err(Error::InUse(format!(
                "{element} is exported by {}",
                luns.join(", ")
            )));
        }
        let _span = tracing::info_span!("delete_storage_object", element = %element).entered();
        self.k_rmdir(&dir)?;
        let hba_dir = self.root.join("core").join(&so.hba);
        let still_used = entries_or_empty(&hba_dir)?
            .iter()
            .any(|e| matches!(e.kind, EntryKind::Dir | EntryKind::Symlink));
        if !still_used {
            if let Err(e) = self.k_rmdir(&hba_dir) {
                tracing::warn!("storage object removed, its empty HBA directory stays: {e}");
            }
        }
        Ok(())
    }

    /// Writes `enable` unless it already holds the wanted value. A TPG without an `enable`
    /// attribute (loopback) is always enabled: disabling it only logs a warning.
    pub fn set_tpg_enabled(&self, tpg: &Path, enabled: bool) -> Result<()> {
        let (t, _, _) = self.check_tpg_path(tpg)?;
        if !is_real_dir(&t) {
            return Err(Error::NotFound(format!("no TPG {}", t.display())));
        }
        let p = t.join("enable");
        if !exists_nofollow(&p) {
            if !enabled {
                tracing::warn!(tpg = %t.display(), "TPG has no enable attribute; it stays enabled");
            }
            return Ok(());
        }
        let want = if enabled { "1" } else { "0" };
        if read_attr(&p).as_deref() == Some(want) {
            tracing::debug!(tpg = %t.display(), enabled, "TPG already in that state");
            return Ok(());
        }
        self.k_write(&p, want)
    }

    /// mkdir `lun/lun_INDEX` and link it to `so` with `link_name`.
    pub fn create_lun(
        &self,
        tpg: &Path,
        index: u64,
        so: &StorageObject,
        link_name: &str,
    ) -> Result<()> {
        let (t, _, _) = self.check_tpg_path(tpg)?;
        validate_configfs_component(link_name)?;
        let so_dir = self.so_dir(&so.hba, &so.name)?;
        if !is_real_dir(&t.join("lun")) {
            return Err(Error::NotFound(format!("no TPG {}", t.display())));
        }
        if !is_real_dir(&so_dir) {
            return Err(Error::NotFound(format!(
                "no storage object {}",
                so.element()
            )));
        }
        let lun_dir = t.join("lun").join(format!("lun_{index}"));
        if exists_nofollow(&lun_dir) {
            return Err(Error::InUse(format!(
                "LUN {index} already exists in {}",
                t.display()
            )));
        }
        with_undo(self, |u| {
            u.mkdir(&lun_dir)?;
            u.symlink(&so_dir, &lun_dir.join(link_name))
        })
    }

    /// Remove the link and `lun/lun_INDEX` (mapped LUNs pointing at it must be gone first).
    pub fn delete_lun(&self, tpg: &Path, index: u64) -> Result<()> {
        let (t, comps, _) = self.check_tpg_path(tpg)?;
        let lun_dir = t.join("lun").join(format!("lun_{index}"));
        if !is_real_dir(&lun_dir) {
            return Err(Error::NotFound(format!(
                "no LUN {index} in {}",
                t.display()
            )));
        }
        let mapped = mapped_luns_of(self, &comps, index)?;
        if !mapped.is_empty() {
            let paths: Vec<String> = mapped
                .iter()
                .map(|m| m.path.display().to_string())
                .collect();
            return Err(Error::InUse(format!(
                "LUN {index} of {} is mapped by {}",
                t.display(),
                paths.join(", ")
            )));
        }
        let links = child_links(&lun_dir)?;
        with_undo(self, |u| {
            for l in &links {
                u.unlink(&lun_dir.join(l), None)?;
            }
            self.k_rmdir(&lun_dir)
        })
    }

    /// mkdir `ACL/lun_INDEX`, link it to the TPG's `lun_TPGLUN`, set write_protect.
    pub fn create_mapped_lun(
        &self,
        acl: &Path,
        index: u64,
        tpg_lun: u64,
        link_name: &str,
        write_protect: bool,
    ) -> Result<()> {
        let (t, a) = self.check_acl_path(acl)?;
        validate_configfs_component(link_name)?;
        if !is_real_dir(&a) {
            return Err(Error::NotFound(format!("no node ACL {}", a.display())));
        }
        let lun_dir = t.join("lun").join(format!("lun_{tpg_lun}"));
        if !is_real_dir(&lun_dir) {
            return Err(Error::NotFound(format!(
                "no LUN {tpg_lun} in {}",
                t.display()
            )));
        }
        let m = a.join(format!("lun_{index}"));
        if exists_nofollow(&m) {
            return Err(Error::InUse(format!(
                "mapped LUN {index} already exists in {}",
                a.display()
            )));
        }
        with_undo(self, |u| {
            u.mkdir(&m)?;
            u.symlink(&lun_dir, &m.join(link_name))?;
            self.k_write(
                &m.join("write_protect"),
                if write_protect { "1" } else { "0" },
            )
        })
    }

    /// Remove the link and `ACL/lun_INDEX`; if that fails, the link and its `write_protect`
    /// are restored.
    pub fn delete_mapped_lun(&self, acl: &Path, index: u64) -> Result<()> {
        let (_, a) = self.check_acl_path(acl)?;
        let m = a.join(format!("lun_{index}"));
        if !is_real_dir(&m) {
            return Err(Error::NotFound(format!(
                "no mapped LUN {index} in {}",
                a.display()
            )));
        }
        let wp_path = m.join("write_protect");
        let wp = read_attr(&wp_path).map(|v| (wp_path, v));
        let links = child_links(&m)?;
        with_undo(self, |u| {
            for l in &links {
                u.unlink(&m.join(l), wp.clone())?;
            }
            self.k_rmdir(&m)
        })
    }

    /// Create `FABRIC/WWN/tpgt_TAG` (and the target directory if needed); for tests and tools.
    /// Returns the existing TPG's path if it is already there.
    pub fn create_tpg(&self, fabric: &str, wwn: &str, tag: u16) -> Result<PathBuf> {
        validate_configfs_component(fabric)?;
        validate_configfs_component(wwn)?;
        if fabric == "core" {
            return Err(Error::Invalid("\"core\" is not a fabric".into()));
        }
        if FABRIC_NON_TARGETS.contains(&wwn) {
            return Err(Error::Invalid(format!("{wwn:?} is not a target name")));
        }
        if !is_real_dir(&self.root) {
            return Err(Error::kernel(
                "create",
                format!("{fabric}/{wwn}/tpgt_{tag}"),
                format!("configfs root {} does not exist", self.root.display()),
            ));
        }
        let f = self.root.join(fabric);
        let w = f.join(wwn);
        let t = w.join(format!("tpgt_{tag}"));
        for p in [&f, &w, &t] {
            if exists_nofollow(p) && !is_real_dir(p) {
                return Err(Error::Invalid(format!(
                    "{} is not a directory",
                    p.display()
                )));
            }
        }
        if is_real_dir(&t) {
            return Ok(t);
        }
        with_undo(self, |u| {
            for p in [&f, &w] {
                if !exists_nofollow(p) {
                    u.mkdir(p)?;
                }
            }
            u.mkdir(&t)
        })?;
        Ok(t)
    }

    /// Create `TPG/acls/INITIATOR`. Returns the existing ACL's path if it is already there.
    pub fn create_node_acl(&self, tpg: &Path, initiator: &str) -> Result<PathBuf> {
        let (t, _, _) = self.check_tpg_path(tpg)?;
        validate_configfs_component(initiator)?;
        if !is_real_dir(&t.join("acls")) {
            return Err(Error::NotFound(format!("no TPG {}", t.display())));
        }
        let a = t.join("acls").join(initiator);
        if is_real_dir(&a) {
            return Ok(a);
        }
        if exists_nofollow(&a) {
            return Err(Error::Invalid(format!(
                "{} is not a directory",
                a.display()
            )));
        }
        self.k_mkdir(&a)?;
        Ok(a)
    }
}
