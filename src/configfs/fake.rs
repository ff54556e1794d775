//! A plain directory that behaves like LIO's configfs for tests and demos.
//!
//! [`FakeFs`] implements [`FsOps`] over an ordinary directory: `mkdir` of a configfs group
//! creates the attribute files and default groups the kernel would show (modes included:
//! read-only attributes are `0444`, `control` is write-only `0200`), `rmdir` removes them and
//! refuses while user-made children remain (`ENOTEMPTY`) or a link points at the directory
//! (`EBUSY`), and writes have the kernel's side effects where the engine depends on them:
//! `control` sets the iblock device (shown in `info`), `enable` opens it exclusively
//! (`EINVAL` without a device, `EBUSY` when another enabled object holds it), the unit serial
//! is refused while exported, and so on.
//!
//! The fake keeps no state of its own besides the call log and injected failures: everything
//! is read back from the directory, so a second `FakeFs` (a restarted daemon) sees the same
//! tree. Failure injection ([`FakeFs::fail_on`], [`FakeFs::fail_at_call`]) lets tests walk
//! every step of a plan into a failure and check the rollback.

use super::paths::{info_value, link_target, normalize, parse_index, split_hba};
use super::{ConfigFs, FsOps};
use std::collections::BTreeSet;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// Most calls the log keeps (tests read a handful; a sim daemon would otherwise grow).
const CALL_LOG_MAX: usize = 100_000;

/// A mutating operation of [`FsOps`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FakeOp {
    Mkdir,
    Rmdir,
    Write,
    Symlink,
    Unlink,
}

/// One call made through the fake, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeCall {
    pub op: FakeOp,
    /// The path operated on (for `Symlink`, the link)
    pub path: PathBuf,
    /// The value written, or the symlink's target
    pub value: Option<String>,
    /// The call returned an error (injected or the fake kernel's own)
    pub failed: bool,
}

struct Injected {
    op: FakeOp,
    suffix: String,
    errno: i32,
}

#[derive(Default)]
struct State {
    calls: Vec<FakeCall>,
    fail_on: Vec<Injected>,
    /// (1-based number of the call that fails, errno)
    fail_at: Option<(usize, i32)>,
}

/// configfs over a plain directory. See the module documentation.
pub struct FakeFs {
    root: Option<PathBuf>,
    state: Mutex<State>,
    /// Devices opened exclusively by someone else (device-mapper, a mounted filesystem)
    held: Mutex<BTreeSet<String>>,
}

impl Default for FakeFs {
    fn default() -> Self {
        Self::new()
    }
}

/// Names under the root that `mkdir` accepts as fabric modules.
const FABRICS: &[&str] = &[
    "iscsi",
    "loopback",
    "vhost",
    "tcm_fc",
    "qla2xxx",
    "srpt",
    "ib_srpt",
    "usb_gadget",
    "xen-pvscsi",
    "efct",
    "sbp",
    "fc",
];

/// A `ConfigFs` over `DIR/target` with the fake's operations and the lock file
/// `DIR/rtslib_backstore.lock`; the tree starts as a freshly loaded target core (`core/`,
/// `version`, `dbroot`). Panics if the directory cannot be written (it is for tests).
pub fn fake_tree(dir: &Path) -> (ConfigFs, Arc<FakeFs>) {
    let root = dir.join("target");
    FakeFs::create_root(&root)
        .unwrap_or_else(|e| panic!("cannot create a fake configfs at {}: {e}", root.display()));
    let fake = Arc::new(FakeFs::with_root(&root));
    let cfs = ConfigFs::with_ops(
        root,
        fake.clone() as Arc<dyn FsOps>,
        dir.join("rtslib_backstore.lock"),
    );
    (cfs, fake)
}

/// A recursive listing of `dir` for comparing trees: one line per entry, sorted, with the type,
/// the mode, the content of readable files and the target of links.
pub fn tree_listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(dir)
        .follow_links(false)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter()
        .filter_map(|e| e.ok())
    {
        let rel = e.path().strip_prefix(dir).unwrap_or(e.path()).display();
        let Ok(md) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        let mode = md.permissions().mode() & 0o7777;
        if md.file_type().is_symlink() {
            let t = std::fs::read_link(e.path()).unwrap_or_default();
            out.push(format!("l {rel} -> {}", t.display()));
        } else if md.is_dir() {
            out.push(format!("d {rel} {mode:o}"));
        } else if mode & 0o400 != 0 {
            let c = std::fs::read_to_string(e.path()).unwrap_or_else(|e| format!("<{e}>"));
            out.push(format!("f {rel} {mode:o} {c:?}"));
        } else {
            out.push(format!("f {rel} {mode:o} <write-only>"));
        }
    }
    out
}

impl FakeFs {
    /// A fake that finds its root as the nearest ancestor named `target` holding `core/`
    /// (the kernel's layout). Use [`FakeFs::with_root`] when the root is named otherwise.
    pub fn new() -> FakeFs {
        FakeFs {
            root: None,
            state: Mutex::new(State::default()),
            held: Mutex::new(BTreeSet::new()),
        }
    }

    /// A fake for the tree at `root` (create it with [`FakeFs::create_root`]).
    pub fn with_root(root: impl Into<PathBuf>) -> FakeFs {
        FakeFs {
            root: Some(root.into()),
            state: Mutex::new(State::default()),
            held: Mutex::new(BTreeSet::new()),
        }
    }

    /// Make `root` look like a freshly mounted configfs with target_core_mod loaded.
    /// Existing entries are kept.
    pub fn create_root(root: &Path) -> io::Result<()> {
        std::fs::create_dir_all(root)?;
        apply_template(root, &root_template(), false)
    }

    /// The next call of `op` on a path ending with `path_suffix` fails with `EIO` (once).
    pub fn fail_on(&self, op: FakeOp, path_suffix: &str) {
        self.fail_on_errno(op, path_suffix, nix::libc::EIO);
    }

    /// Like [`FakeFs::fail_on`] with a chosen errno (e.g. `EBUSY`).
    pub fn fail_on_errno(&self, op: FakeOp, path_suffix: &str, errno: i32) {
        self.lock().fail_on.push(Injected {
            op,
            suffix: path_suffix.to_string(),
            errno,
        });
    }

    /// The `n`-th mutating call from now fails with `EIO` (1 = the next one), once.
    pub fn fail_at_call(&self, n: usize) {
        let mut st = self.lock();
        st.fail_at = Some((st.calls.len() + n.max(1), nix::libc::EIO));
    }

    /// Pretend `dev` is opened exclusively by someone else: enabling an iblock object on it
    /// fails with `EBUSY`, as LIO's exclusive open does (e.g. a disk under a dm table).
    pub fn hold_device(&self, dev: &str) {
        self.held_devices().insert(dev.to_string());
    }

    /// Undo [`FakeFs::hold_device`].
    pub fn release_device(&self, dev: &str) {
        self.held_devices().remove(dev);
    }

    fn held_devices(&self) -> MutexGuard<'_, BTreeSet<String>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forget injected failures that have not fired.
    pub fn clear_failures(&self) {
        let mut st = self.lock();
        st.fail_on.clear();
        st.fail_at = None;
    }

    /// Every mutating call so far, in order (failed ones included).
    pub fn calls(&self) -> Vec<FakeCall> {
        self.lock().calls.clone()
    }

    /// Forget the call log (injected failures keep counting from the new start).
    pub fn clear_calls(&self) {
        let mut st = self.lock();
        if let Some((at, errno)) = st.fail_at {
            let done = st.calls.len();
            st.fail_at = Some((at.saturating_sub(done).max(1), errno));
        }
        st.calls.clear();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Log the call, fire an injected failure if one matches, else run `f`.
    fn call(
        &self,
        op: FakeOp,
        path: &Path,
        value: Option<String>,
        f: impl FnOnce() -> io::Result<()>,
    ) -> io::Result<()> {
        // Held through `f`: the fake kernel does one thing at a time.
        let mut st = self.lock();
        let n = st.calls.len() + 1;
        let mut injected = None;
        if let Some((at, errno)) = st.fail_at {
            if at == n {
                injected = Some(errno);
                st.fail_at = None;
            }
        }
        if injected.is_none() {
            let p = path.to_string_lossy();
            if let Some(i) = st
                .fail_on
                .iter()
                .position(|f| f.op == op && p.ends_with(&f.suffix))
            {
                injected = Some(st.fail_on.remove(i).errno);
            }
        }
        let r = match injected {
            Some(errno) => Err(io::Error::from_raw_os_error(errno)),
            None => f(),
        };
        if st.calls.len() >= CALL_LOG_MAX {
            // a long-running `serve --dm sim` keeps only the newest calls
            st.calls.drain(..CALL_LOG_MAX / 2);
        }
        st.calls.push(FakeCall {
            op,
            path: path.to_path_buf(),
            value,
            failed: r.is_err(),
        });
        r
    }

    fn root_for(&self, p: &Path) -> io::Result<PathBuf> {
        if let Some(r) = &self.root {
            return Ok(normalize(r));
        }
        p.ancestors()
            .find(|a| a.file_name().is_some_and(|n| n == "target") && a.join("core").is_dir())
            .map(normalize)
            .ok_or_else(|| errno(nix::libc::EPERM))
    }

    /// (root, components of `p` below it)
    fn locate(&self, p: &Path) -> io::Result<(PathBuf, Vec<String>)> {
        let root = self.root_for(p)?;
        let np = normalize(p);
        let rel = np
            .strip_prefix(&root)
            .map_err(|_| errno(nix::libc::EPERM))?;
        let comps = rel
            .components()
            .map(|c| match c {
                Component::Normal(s) => s.to_str().map(str::to_string),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| errno(nix::libc::EINVAL))?;
        Ok((root, comps))
    }
}

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

// ---------------------------------------------------------------------------------------------
// Directory kinds and what the kernel puts in them.

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Fabric,
    /// prefix of the HBA (`iblock`, `fileio`, ...)
    Hba(&'static str),
    So(&'static str),
    SoAluaGroup,
    Target,
    Tpg,
    TpgLun,
    Portal,
    Acl,
    MappedLun,
    Other,
}

fn is_tpgt(s: &str) -> bool {
    parse_index(s, "tpgt_").is_some_and(|v| v <= u16::MAX as u64)
}

fn kind(c: &[String]) -> Kind {
    let s: Vec<&str> = c.iter().map(String::as_str).collect();
    match s.as_slice() {
        ["core", h] => split_hba(h).map_or(Kind::Other, |(p, _)| Kind::Hba(p)),
        ["core", h, _] => split_hba(h).map_or(Kind::Other, |(p, _)| Kind::So(p)),
        ["core", h, _, "alua", g] if split_hba(h).is_some() && *g != "default_tg_pt_gp" => {
            Kind::SoAluaGroup
        }
        ["core", ..] => Kind::Other,
        [_] => Kind::Fabric,
        [_, w] if !super::paths::FABRIC_NON_TARGETS.contains(w) => Kind::Target,
        [_, _, t] if is_tpgt(t) => Kind::Tpg,
        [_, _, t, "lun", l] if is_tpgt(t) && parse_index(l, "lun_").is_some() => Kind::TpgLun,
        [_, _, t, "np", _] if is_tpgt(t) => Kind::Portal,
        [_, _, t, "acls", _] if is_tpgt(t) => Kind::Acl,
        [_, _, t, "acls", _, l] if is_tpgt(t) && parse_index(l, "lun_").is_some() => {
            Kind::MappedLun
        }
        _ => Kind::Other,
    }
}

/// Positions where the kernel has a `make_group` (a bad name there is `EINVAL`, not `EPERM`).
fn makeable_slot(c: &[String]) -> bool {
    let s: Vec<&str> = c.iter().map(String::as_str).collect();
    match s.as_slice() {
        [_] | ["core", _] => true,
        ["core", h, _] | ["core", h, _, "alua", _] => split_hba(h).is_some(),
        ["core", ..] => false,
        [_, _] | [_, _, _] => true,
        [_, _, t, "lun" | "np" | "acls", _] => is_tpgt(t),
        [_, _, t, "acls", _, _] => is_tpgt(t),
        _ => false,
    }
}

struct TEntry {
    rel: String,
    /// None = directory
    file: Option<(u32, String)>,
}

#[derive(Default)]
struct Template(Vec<TEntry>);

impl Template {
    fn dir(&mut self, rel: &str) -> &mut Self {
        self.0.push(TEntry {
            rel: rel.to_string(),
            file: None,
        });
        self
    }
    fn file(&mut self, rel: &str, mode: u32, content: &str) -> &mut Self {
        let content = if content.is_empty() || content.ends_with('\n') {
            content.to_string()
        } else {
            format!("{content}\n")
        };
        self.0.push(TEntry {
            rel: rel.to_string(),
            file: Some((mode, content)),
        });
        self
    }
    fn rw(&mut self, rel: &str, content: &str) -> &mut Self {
        self.file(rel, 0o644, content)
    }
    fn ro(&mut self, rel: &str, content: &str) -> &mut Self {
        self.file(rel, 0o444, content)
    }
    fn wo(&mut self, rel: &str) -> &mut Self {
        self.file(rel, 0o200, "")
    }
    fn names(&self) -> BTreeSet<String> {
        self.0.iter().map(|e| e.rel.clone()).collect()
    }
}

fn root_template() -> Template {
    let mut t = Template::default();
    t.ro(
        "version",
        "Target Engine Core ConfigFS Infrastructure v5.0 on Linux/x86_64 on 6.1.0-fake",
    )
    .rw("dbroot", "/etc/target")
    .dir("core")
    .dir("core/alua")
    .dir("core/alua/lu_gps")
    .dir("core/alua/lu_gps/default_lu_gp")
    .rw("core/alua/lu_gps/default_lu_gp/lu_gp_id", "0")
    .ro("core/alua/lu_gps/default_lu_gp/members", "");
    t
}

/// `attrib/` of a backstore using the SBC emulation (iblock, fileio, rd_mcp): name, mode,
/// default on a 512-byte disk (kernel 6.1).
const SBC_ATTRIBS: &[(&str, u32, &str)] = &[
    ("alua_support", 0o644, "1"),
    ("block_size", 0o644, "512"),
    ("emulate_3pc", 0o644, "1"),
    ("emulate_caw", 0o644, "1"),
    ("emulate_dpo", 0o644, "1"),
    ("emulate_fua_read", 0o644, "1"),
    ("emulate_fua_write", 0o644, "1"),
    ("emulate_model_alias", 0o644, "1"),
    ("emulate_pr", 0o644, "1"),
    ("emulate_rest_reord", 0o644, "0"),
    ("emulate_tas", 0o644, "1"),
    ("emulate_tpu", 0o644, "0"),
    ("emulate_tpws", 0o644, "0"),
    ("emulate_ua_intlck_ctrl", 0o644, "0"),
    ("emulate_write_cache", 0o644, "0"),
    ("enforce_pr_isids", 0o644, "1"),
    ("force_pr_aptpl", 0o644, "0"),
    ("hw_block_size", 0o444, "512"),
    ("hw_max_sectors", 0o444, "32768"),
    ("hw_pi_prot_type", 0o444, "0"),
    ("hw_queue_depth", 0o444, "128"),
    ("is_nonrot", 0o644, "0"),
    ("max_unmap_block_desc_count", 0o644, "0"),
    ("max_unmap_lba_count", 0o644, "0"),
    ("max_write_same_len", 0o644, "65535"),
    ("optimal_sectors", 0o644, "32768"),
    ("pgr_support", 0o644, "1"),
    ("pi_prot_format", 0o644, "0"),
    ("pi_prot_type", 0o644, "0"),
    ("pi_prot_verify", 0o644, "0"),
    ("queue_depth", 0o644, "128"),
    ("unmap_granularity", 0o644, "0"),
    ("unmap_granularity_alignment", 0o644, "0"),
    ("unmap_zeroes_data", 0o644, "0"),
];

/// `attrib/` of a pass-through backstore (pscsi, user).
const PASSTHROUGH_ATTRIBS: &[(&str, u32, &str)] = &[
    ("alua_support", 0o644, "0"),
    ("emulate_pr", 0o644, "1"),
    ("hw_block_size", 0o444, "512"),
    ("hw_max_sectors", 0o444, "1024"),
    ("hw_pi_prot_type", 0o444, "0"),
    ("hw_queue_depth", 0o444, "128"),
    ("pgr_support", 0o644, "0"),
];

/// Attributes the kernel refuses to change while the object is exported.
const FIXED_WHILE_EXPORTED: &[&str] = &[
    "block_size",
    "queue_depth",
    "optimal_sectors",
    "pi_prot_type",
];

fn so_template(prefix: &str, hba_index: u32) -> Template {
    let mut t = Template::default();
    t.wo("control")
        .rw("enable", "0")
        .rw("udev_path", "")
        .rw("alias", "")
        .rw(
            "alua_lu_gp",
            "LU Group Alias: default_lu_gp\nLU Group ID: 0\n",
        )
        .rw("lba_map", "")
        .ro("info", &render_info(prefix, hba_index, &SoState::default()));
    t.dir("wwn")
        .rw("wwn/vpd_unit_serial", "T10 VPD Unit Serial Number: ")
        .rw("wwn/vendor_id", "LIO-ORG")
        .rw(
            "wwn/product_id",
            match prefix {
                "iblock" => "IBLOCK",
                "fileio" => "FILEIO",
                "rd_mcp" => "RAMDISK-MCP",
                "user" => "TCMU device",
                _ => "",
            },
        )
        .rw("wwn/revision", "4.0")
        .rw("wwn/company_id", "0x001405")
        .rw("wwn/vpd_protocol_identifier", "")
        .ro("wwn/vpd_assoc_logical_unit", "")
        .ro("wwn/vpd_assoc_target_port", "")
        .ro("wwn/vpd_assoc_scsi_target_device", "");
    t.dir("attrib");
    let attribs = match prefix {
        "pscsi" | "user" => PASSTHROUGH_ATTRIBS,
        _ => SBC_ATTRIBS,
    };
    for (name, mode, default) in attribs {
        t.file(&format!("attrib/{name}"), *mode, default);
    }
    t.dir("pr")
        .ro("pr/res_holder", "No SPC-3 Reservation holder")
        .ro(
            "pr/res_pr_all_tgt_pts",
            "SPC-3 Reservation: Single Target Port",
        )
        .ro("pr/res_pr_generation", "0x00000000")
        .ro("pr/res_pr_holder_tg_port", "No SPC-3 Reservation holder")
        .ro(
            "pr/res_pr_registered_i_pts",
            "SPC-3 PR Registrations:\nNone",
        )
        .ro("pr/res_pr_type", "SPC-3 Reservation Type: None")
        .ro("pr/res_type", "SPC_PASSTHROUGH")
        .ro("pr/res_aptpl_active", "APTPL Bit Status: Disabled")
        .wo("pr/res_aptpl_metadata");
    t.dir("alua")
        .dir("alua/default_tg_pt_gp")
        .rw("alua/default_tg_pt_gp/alua_access_state", "0")
        .rw("alua/default_tg_pt_gp/alua_access_status", "None")
        .rw(
            "alua/default_tg_pt_gp/alua_access_type",
            "Implicit and Explicit",
        )
        .rw("alua/default_tg_pt_gp/tg_pt_gp_id", "0")
        .ro("alua/default_tg_pt_gp/members", "");
    t.dir("statistics")
        .dir("statistics/scsi_dev")
        .ro("statistics/scsi_dev/inst", &hba_index.to_string())
        .ro("statistics/scsi_dev/ports", "0")
        .dir("statistics/scsi_lu")
        .ro("statistics/scsi_lu/status", "available")
        .dir("statistics/scsi_tgt_dev")
        .ro("statistics/scsi_tgt_dev/num_lus", "1");
    t.dir("action");
    t
}

fn template(k: &Kind, c: &[String]) -> Template {
    let mut t = Template::default();
    let fabric = c.first().map(String::as_str).unwrap_or("");
    let auth = |t: &mut Template, base: &str| {
        t.dir(base);
        for f in ["userid", "password", "userid_mutual", "password_mutual"] {
            t.rw(&format!("{base}/{f}"), "NULL");
        }
        t.ro(&format!("{base}/authenticate_target"), "0");
    };
    match k {
        Kind::Fabric if fabric == "iscsi" => {
            auth(&mut t, "discovery_auth");
            t.rw("discovery_auth/enforce_discovery_auth", "0")
                .ro("lio_version", "Datera Inc. iSCSI Target v4.1.0")
                .rw("cpus_allowed_list", "0-1");
        }
        Kind::Fabric => {
            t.ro("version", &format!("TCM {fabric} fabric module"));
        }
        Kind::Hba(prefix) => {
            let index = c.get(1).and_then(|h| split_hba(h)).map_or(0, |h| h.1);
            t.ro(
                "hba_info",
                &format!("HBA Index: {index} plugin: {prefix} version: v5.0"),
            )
            .rw("hba_mode", "0");
        }
        Kind::So(prefix) => {
            let index = c.get(1).and_then(|h| split_hba(h)).map_or(0, |h| h.1);
            t = so_template(prefix, index);
        }
        Kind::SoAluaGroup => {
            t.rw("alua_access_state", "0")
                .rw("alua_access_status", "None")
                .rw("alua_access_type", "None")
                .rw("tg_pt_gp_id", "0")
                .ro("members", "");
        }
        Kind::Target => {
            t.dir("param").rw("param/cmd_completion_affinity", "-1");
            t.dir("fabric_statistics");
            if fabric == "iscsi" {
                for s in [
                    "iscsi_instance",
                    "iscsi_sess_err",
                    "iscsi_tgt_attr",
                    "iscsi_login_stats",
                    "iscsi_logout_stats",
                ] {
                    t.dir(&format!("fabric_statistics/{s}"));
                }
            }
        }
        Kind::Tpg => {
            t.dir("lun")
                .dir("acls")
                .dir("np")
                .dir("attrib")
                .dir("param");
            auth(&mut t, "auth");
            match fabric {
                "loopback" => {
                    t.rw("nexus", "").rw("transport_status", "ONLINE");
                }
                "iscsi" => {
                    t.rw("enable", "0").ro("dynamic_sessions", "");
                    for (a, v) in [
                        ("authentication", "0"),
                        ("cache_dynamic_acls", "0"),
                        ("default_cmdsn_depth", "64"),
                        ("default_erl", "0"),
                        ("demo_mode_discovery", "1"),
                        ("demo_mode_write_protect", "1"),
                        ("fabric_prot_type", "0"),
                        ("generate_node_acls", "0"),
                        ("login_keys_workaround", "1"),
                        ("login_timeout", "15"),
                        ("netif_timeout", "2"),
                        ("prod_mode_write_protect", "0"),
                        ("t10_pi", "0"),
                        ("tpg_enabled_sendtargets", "1"),
                    ] {
                        t.rw(&format!("attrib/{a}"), v);
                    }
                    for (p, v) in [
                        ("AuthMethod", "CHAP,None"),
                        ("DataDigest", "CRC32C,None"),
                        ("DataPDUInOrder", "Yes"),
                        ("DataSequenceInOrder", "Yes"),
                        ("DefaultTime2Retain", "20"),
                        ("DefaultTime2Wait", "2"),
                        ("ErrorRecoveryLevel", "0"),
                        ("FirstBurstLength", "65536"),
                        ("HeaderDigest", "CRC32C,None"),
                        ("ImmediateData", "Yes"),
                        ("InitialR2T", "Yes"),
                        ("MaxBurstLength", "262144"),
                        ("MaxConnections", "1"),
                        ("MaxOutstandingR2T", "1"),
                        ("MaxRecvDataSegmentLength", "8192"),
                        ("MaxXmitDataSegmentLength", "262144"),
                        ("TargetAlias", "LIO Target"),
                    ] {
                        t.rw(&format!("param/{p}"), v);
                    }
                }
                _ => {
                    t.rw("enable", "0");
                }
            }
        }
        Kind::TpgLun => {
            t.rw(
                "alua_tg_pt_gp",
                "TG Port Alias: default_tg_pt_gp\nTG Port Group ID: 0\n",
            )
            .rw("alua_tg_pt_offline", "0")
            .rw("alua_tg_pt_status", "0")
            .rw("alua_tg_pt_write_md", "0");
            t.dir("statistics")
                .dir("statistics/scsi_port")
                .dir("statistics/scsi_tgt_port")
                .dir("statistics/scsi_transport");
        }
        Kind::Portal => {
            t.rw("iser", "0").rw("cxgbit", "0");
        }
        Kind::Acl => {
            let init = c.get(4).map(String::as_str).unwrap_or("");
            t.dir("attrib").dir("param").dir("fabric_statistics");
            auth(&mut t, "auth");
            t.ro(
                "info",
                &format!("No active iSCSI Session for Initiator Endpoint: {init}"),
            )
            .rw("cmdsn_depth", "64")
            .rw("tag", "(null)");
            if fabric == "iscsi" {
                for (a, v) in [
                    ("authentication", "-1"),
                    ("dataout_timeout", "3"),
                    ("dataout_timeout_retries", "5"),
                    ("default_erl", "0"),
                    ("nopin_response_timeout", "30"),
                    ("nopin_timeout", "15"),
                    ("random_datain_pdu_offsets", "0"),
                    ("random_datain_seq_offsets", "0"),
                    ("random_r2t_offsets", "0"),
                ] {
                    t.rw(&format!("attrib/{a}"), v);
                }
            }
        }
        Kind::MappedLun => {
            t.rw("write_protect", "0");
            t.dir("statistics")
                .dir("statistics/scsi_auth_intr")
                .dir("statistics/scsi_att_intr_port");
        }
        Kind::Other => {}
    }
    t
}

/// Create the template's entries under `dir` (skipping existing ones if `strict` is false).
fn apply_template(dir: &Path, t: &Template, strict: bool) -> io::Result<()> {
    for e in &t.0 {
        let p = dir.join(&e.rel);
        if !strict && std::fs::symlink_metadata(&p).is_ok() {
            continue;
        }
        match &e.file {
            None => std::fs::create_dir(&p)?,
            Some((mode, content)) => {
                std::fs::write(&p, content)?;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode))?;
            }
        }
    }
    Ok(())
}

/// Is `c` one of the groups or attributes the kernel made with an ancestor?
fn is_default(c: &[String]) -> bool {
    (0..c.len()).rev().any(|k| {
        let anc = &c[..k];
        let t = if k == 0 {
            root_template()
        } else {
            template(&kind(anc), anc)
        };
        t.names().contains(&c[k..].join("/"))
    })
}

/// Replace a file's content the way a `store` + `show` would, whatever its mode.
fn put(path: &Path, content: &str) -> io::Result<()> {
    let mode = std::fs::symlink_metadata(path)?.permissions().mode() & 0o7777;
    if mode & 0o200 == 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    let r = std::fs::write(path, content);
    if mode & 0o200 == 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    r
}

/// A file's content; empty if absent (the fake only reads readable files this way).
fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Every symlink in the tree that points at `target`. configfs links live only in TPG LUN and
/// mapped-LUN directories; only those are searched.
fn links_to(root: &Path, target: &Path) -> Vec<PathBuf> {
    let target = normalize(target);
    let subdirs = |d: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(d)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect()
    };
    let mut holders = Vec::new();
    for fabric in subdirs(root) {
        if fabric.file_name().is_some_and(|n| n == "core") {
            continue;
        }
        for tpg in subdirs(&fabric).iter().flat_map(|w| subdirs(w)) {
            holders.extend(subdirs(&tpg.join("lun")));
            for acl in subdirs(&tpg.join("acls")) {
                holders.extend(subdirs(&acl));
            }
        }
    }
    holders
        .iter()
        .flat_map(|d| std::fs::read_dir(d).into_iter().flatten())
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_symlink()))
        .map(|e| e.path())
        .filter(|p| link_target(p).as_deref() == Some(target.as_path()))
        .collect()
}

/// What the fake kernel knows about a storage object, read back from its files.
#[derive(Debug, Default, Clone)]
struct SoState {
    enabled: bool,
    exported: bool,
    /// iblock/pscsi `udev_path=`, fileio `fd_dev_name=`, user `dev_config=`
    dev: Option<String>,
    readonly: bool,
    size: u64,
    pages: u64,
}

fn so_state(root: &Path, prefix: &str, dir: &Path) -> SoState {
    let info = read(&dir.join("info"));
    let dev_key = match prefix {
        "fileio" => "File",
        "user" => "Config",
        _ => "UDEV PATH",
    };
    SoState {
        enabled: read(&dir.join("enable")).trim() == "1",
        exported: !links_to(root, dir).is_empty(),
        dev: info_value(&info, dev_key).filter(|s| !s.is_empty() && s != "(null)"),
        readonly: info_value(&info, "readonly").is_some_and(|v| v != "0"),
        size: info_value(&info, "Size")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        pages: info_value(&info, "PAGES/PAGE_SIZE")
            .and_then(|v| v.split_once('*').and_then(|(p, _)| p.parse().ok()))
            .unwrap_or(0),
    }
}

/// The `info` text as the 6.1 kernel prints it.
fn render_info(prefix: &str, hba_index: u32, st: &SoState) -> String {
    let mut s = format!(
        "Status: {}  Max Queue Depth: {}  SectorSize: 512  HwMaxSectors: {}\n        ",
        if st.exported {
            "ACTIVATED"
        } else {
            "DEACTIVATED"
        },
        if st.exported { 128 } else { 0 },
        if st.enabled { 32768 } else { 0 },
    );
    match prefix {
        "iblock" => {
            if let (true, Some(d)) = (st.enabled, &st.dev) {
                let base = Path::new(d)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                s.push_str(&format!("iBlock device: {base}"));
            }
            if let Some(d) = &st.dev {
                s.push_str(&format!("  UDEV PATH: {d}"));
            }
            s.push_str(&format!("  readonly: {}\n        ", st.readonly as u8));
            if st.enabled {
                s.push_str(&format!(
                    "Major: 254 Minor: {hba_index}  CLAIMED: IBLOCK\n"
                ));
            } else {
                s.push_str("Major: 0 Minor: 0\n");
            }
        }
        "fileio" => s.push_str(&format!(
            "TCM FILEIO ID: {hba_index}        File: {}  Size: {}  Mode: O_DSYNC Async: 0\n",
            st.dev.as_deref().unwrap_or(""),
            st.size
        )),
        "rd_mcp" => s.push_str(&format!(
            "TCM RamDisk ID: {hba_index}  RamDisk Makeup: rd_mcp\n        PAGES/PAGE_SIZE: {}*4096  SG_table_count: 0  nullio: 0\n",
            st.pages
        )),
        "user" => s.push_str(&format!(
            "Dev Config: {}  Size: {}  MaxDataAreaMB: 8\n",
            st.dev.as_deref().unwrap_or("NULL"),
            st.size
        )),
        _ => s.push_str(&format!(
            "SCSI Device Bus Location: Channel ID: 0 Target ID: 0 LUN: 0  UDEV PATH: {}\n",
            st.dev.as_deref().unwrap_or("")
        )),
    }
    s
}

fn rewrite_info(root: &Path, so_comps: &[String]) -> io::Result<()> {
    let Some((prefix, index)) = so_comps.get(1).and_then(|h| split_hba(h)) else {
        return Ok(());
    };
    let dir = so_comps.iter().fold(root.to_path_buf(), |p, c| p.join(c));
    let st = so_state(root, prefix, &dir);
    put(&dir.join("info"), &render_info(prefix, index, &st))
}

fn parse_num(v: &str) -> io::Result<u64> {
    let v = v.trim();
    let r = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    r.map_err(|_| errno(nix::libc::EINVAL))
}

// ---------------------------------------------------------------------------------------------
// The operations.

impl FakeFs {
    fn do_mkdir(&self, path: &Path) -> io::Result<()> {
        let (_, c) = self.locate(path)?;
        if std::fs::symlink_metadata(path).is_ok() {
            return Err(errno(nix::libc::EEXIST));
        }
        let parent = path.parent().ok_or_else(|| errno(nix::libc::ENOENT))?;
        if !std::fs::symlink_metadata(parent).is_ok_and(|m| m.is_dir()) {
            return Err(errno(nix::libc::ENOENT));
        }
        if c.is_empty() || is_default(&c) {
            return Err(errno(nix::libc::EPERM));
        }
        let k = kind(&c);
        match &k {
            Kind::Other => {
                return Err(errno(if makeable_slot(&c) {
                    nix::libc::EINVAL
                } else {
                    nix::libc::EPERM
                }))
            }
            Kind::Fabric if !FABRICS.contains(&c[0].as_str()) => {
                return Err(errno(nix::libc::ENOENT))
            }
            _ => {}
        }
        std::fs::create_dir(path)?;
        if let Err(e) = apply_template(path, &template(&k, &c), true) {
            let _ = std::fs::remove_dir_all(path);
            return Err(e);
        }
        Ok(())
    }

    fn do_rmdir(&self, path: &Path) -> io::Result<()> {
        let (root, c) = self.locate(path)?;
        let md = std::fs::symlink_metadata(path)?;
        if !md.is_dir() {
            return Err(errno(nix::libc::ENOTDIR));
        }
        if c.is_empty() || is_default(&c) {
            return Err(errno(nix::libc::EPERM));
        }
        let k = kind(&c);
        if k == Kind::Other {
            return Err(errno(nix::libc::EPERM));
        }
        let allowed = template(&k, &c).names();
        for e in walkdir::WalkDir::new(path)
            .follow_links(false)
            .min_depth(1)
            .into_iter()
        {
            let e = e.map_err(io::Error::other)?;
            let rel = e.path().strip_prefix(path).unwrap_or(e.path());
            let rel = rel.to_string_lossy();
            if e.path_is_symlink() || !allowed.contains(rel.as_ref()) {
                return Err(errno(nix::libc::ENOTEMPTY));
            }
        }
        if !links_to(&root, path).is_empty() {
            return Err(errno(nix::libc::EBUSY));
        }
        std::fs::remove_dir_all(path)
    }

    fn do_write(&self, path: &Path, value: &str) -> io::Result<()> {
        let (root, c) = self.locate(path)?;
        let md = std::fs::symlink_metadata(path)?;
        if md.file_type().is_symlink() {
            return Err(errno(nix::libc::ELOOP));
        }
        if md.is_dir() {
            return Err(errno(nix::libc::EISDIR));
        }
        if md.permissions().mode() & 0o200 == 0 {
            return Err(errno(nix::libc::EACCES));
        }
        let (name, parent) = c.split_last().ok_or_else(|| errno(nix::libc::EPERM))?;
        let pk = kind(parent);
        let grandparent = parent.split_last().map(|(_, g)| g).unwrap_or(&[]);
        let gk = kind(grandparent);
        let trimmed = value.trim_end_matches('\n');
        match (&pk, name.as_str()) {
            (Kind::So(prefix), "control") => self.so_control(&root, parent, prefix, value),
            (Kind::So(prefix), "enable") => self.so_enable(&root, parent, prefix, value),
            (Kind::So(_), "udev_path") => {
                if trimmed.is_empty() || trimmed.len() > 511 {
                    return Err(errno(nix::libc::EINVAL));
                }
                put(path, &format!("{trimmed}\n"))
            }
            (Kind::Tpg, "enable") => match trimmed.trim() {
                "0" | "1" => put(path, &format!("{}\n", trimmed.trim())),
                _ => Err(errno(nix::libc::EINVAL)),
            },
            (Kind::MappedLun, "write_protect") => {
                let v = parse_num(trimmed)?;
                put(path, if v != 0 { "1\n" } else { "0\n" })
            }
            (Kind::Other, attr) if matches!(gk, Kind::So(_)) => {
                let so_dir = grandparent.iter().fold(root.clone(), |p, c| p.join(c));
                let exported = !links_to(&root, &so_dir).is_empty();
                match parent.last().map(String::as_str) {
                    Some("wwn") if attr == "vpd_unit_serial" => {
                        if exported {
                            return Err(errno(nix::libc::EINVAL));
                        }
                        let serial = value.trim();
                        if serial.len() >= 254 {
                            return Err(errno(nix::libc::EOVERFLOW));
                        }
                        put(path, &format!("T10 VPD Unit Serial Number: {serial}\n"))
                    }
                    Some("attrib") => {
                        let v = parse_num(trimmed)?;
                        let boolean = attr.starts_with("emulate_")
                            || matches!(
                                attr,
                                "is_nonrot"
                                    | "enforce_pr_isids"
                                    | "force_pr_aptpl"
                                    | "unmap_zeroes_data"
                                    | "alua_support"
                                    | "pgr_support"
                                    | "pi_prot_verify"
                            );
                        if (boolean && v > 1)
                            || (attr == "block_size" && ![512, 1024, 2048, 4096].contains(&v))
                            || (exported && FIXED_WHILE_EXPORTED.contains(&attr))
                        {
                            return Err(errno(nix::libc::EINVAL));
                        }
                        put(path, &format!("{v}\n"))
                    }
                    _ => put(path, &format!("{}\n", trimmed)),
                }
            }
            _ => put(path, &format!("{trimmed}\n")),
        }
    }

    fn so_control(&self, root: &Path, so: &[String], prefix: &str, value: &str) -> io::Result<()> {
        let dir = so.iter().fold(root.to_path_buf(), |p, c| p.join(c));
        let mut st = so_state(root, prefix, &dir);
        for tok in value.split([',', '\n']).filter(|t| !t.is_empty()) {
            let (k, v) = tok.split_once('=').unwrap_or((tok, ""));
            match (prefix, k) {
                ("iblock" | "pscsi", "udev_path")
                | ("fileio", "fd_dev_name")
                | ("user", "dev_config") => {
                    if st.enabled {
                        return Err(errno(nix::libc::EEXIST));
                    }
                    if v.is_empty() {
                        return Err(errno(nix::libc::EINVAL));
                    }
                    st.dev = Some(v.to_string());
                }
                ("iblock", "readonly") => st.readonly = parse_num(v)? != 0,
                ("fileio", "fd_dev_size") | ("user", "dev_size") => st.size = parse_num(v)?,
                ("rd_mcp", "rd_pages") => st.pages = parse_num(v)?,
                // Unknown options are ignored, as the kernel's parsers do.
                _ => {}
            }
        }
        let index = so.get(1).and_then(|h| split_hba(h)).map_or(0, |h| h.1);
        put(&dir.join("info"), &render_info(prefix, index, &st))
    }

    fn so_enable(&self, root: &Path, so: &[String], prefix: &str, value: &str) -> io::Result<()> {
        let dir = so.iter().fold(root.to_path_buf(), |p, c| p.join(c));
        if !value.contains('1') {
            return Err(errno(nix::libc::EINVAL));
        }
        let mut st = so_state(root, prefix, &dir);
        if st.enabled {
            return Err(errno(nix::libc::EEXIST));
        }
        match prefix {
            "iblock" | "fileio" | "pscsi" => {
                let Some(dev) = st.dev.clone() else {
                    return Err(errno(nix::libc::EINVAL));
                };
                // The kernel opens the device exclusively.
                if prefix == "iblock"
                    && (self.held_devices().contains(&dev) || self.claimed(root, &dir, &dev))
                {
                    return Err(errno(nix::libc::EBUSY));
                }
            }
            "rd_mcp" if st.pages == 0 => return Err(errno(nix::libc::EINVAL)),
            _ => {}
        }
        put(&dir.join("enable"), "1\n")?;
        st.enabled = true;
        let index = so.get(1).and_then(|h| split_hba(h)).map_or(0, |h| h.1);
        put(&dir.join("info"), &render_info(prefix, index, &st))
    }

    /// Another enabled iblock object holds `dev`.
    fn claimed(&self, root: &Path, me: &Path, dev: &str) -> bool {
        let core = root.join("core");
        let Ok(hbas) = std::fs::read_dir(&core) else {
            return false;
        };
        hbas.filter_map(|h| h.ok())
            .filter_map(|h| {
                let name = h.file_name().to_str()?.to_string();
                match split_hba(&name)? {
                    ("iblock", _) => Some(h.path()),
                    _ => None,
                }
            })
            .flat_map(|h| {
                std::fs::read_dir(h)
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e.ok())
            })
            .map(|e| e.path())
            .filter(|p| p != me && p.is_dir())
            .any(|p| {
                let st = so_state(root, "iblock", &p);
                st.enabled && st.dev.as_deref() == Some(dev)
            })
    }

    fn do_symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        let (root, lc) = self.locate(link)?;
        if std::fs::symlink_metadata(link).is_ok() {
            return Err(errno(nix::libc::EEXIST));
        }
        let parent = link.parent().ok_or_else(|| errno(nix::libc::ENOENT))?;
        if !std::fs::symlink_metadata(parent).is_ok_and(|m| m.is_dir()) {
            return Err(errno(nix::libc::ENOENT));
        }
        let full = if target.is_absolute() {
            normalize(target)
        } else {
            normalize(&parent.join(target))
        };
        // configfs only links to its own items.
        let (_, tc) = self.locate(&full).map_err(|_| errno(nix::libc::EPERM))?;
        if !std::fs::symlink_metadata(&full).is_ok_and(|m| m.is_dir()) {
            return Err(errno(nix::libc::ENOENT));
        }
        let parent_c = &lc[..lc.len().saturating_sub(1)];
        match (kind(parent_c), kind(&tc)) {
            (Kind::TpgLun, Kind::So(prefix)) => {
                if !so_state(&root, prefix, &full).enabled {
                    return Err(errno(nix::libc::ENODEV));
                }
                if has_link(parent) {
                    return Err(errno(nix::libc::EEXIST));
                }
            }
            (Kind::MappedLun, Kind::TpgLun) => {
                if parent_c[..3] != tc[..3] {
                    return Err(errno(nix::libc::EINVAL));
                }
                if !has_link(&full) {
                    return Err(errno(nix::libc::ENODEV));
                }
                if has_link(parent) {
                    return Err(errno(nix::libc::EEXIST));
                }
            }
            _ => return Err(errno(nix::libc::EPERM)),
        }
        // Store it the way the kernel's readlink shows it: relative, through the mount point.
        let base = root.parent().unwrap_or(Path::new("/"));
        let up = parent
            .strip_prefix(base)
            .map(|p| p.components().count())
            .unwrap_or(0);
        let mut rel = PathBuf::new();
        for _ in 0..up {
            rel.push("..");
        }
        rel.push(full.strip_prefix(base).unwrap_or(&full));
        std::os::unix::fs::symlink(&rel, link)?;
        if matches!(kind(&tc), Kind::So(_)) {
            rewrite_info(&root, &tc)?;
        }
        Ok(())
    }

    fn do_unlink(&self, link: &Path) -> io::Result<()> {
        let (root, _) = self.locate(link)?;
        let md = std::fs::symlink_metadata(link)?;
        if !md.file_type().is_symlink() {
            return Err(errno(if md.is_dir() {
                nix::libc::EISDIR
            } else {
                nix::libc::EPERM
            }));
        }
        let target = link_target(link);
        std::fs::remove_file(link)?;
        if let Some(t) = target {
            if let Ok((_, tc)) = self.locate(&t) {
                if matches!(kind(&tc), Kind::So(_)) && t.is_dir() {
                    rewrite_info(&root, &tc)?;
                }
            }
        }
        Ok(())
    }
}

fn has_link(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .any(|e| e.file_type().is_ok_and(|t| t.is_symlink()))
}

impl FsOps for FakeFs {
    fn mkdir(&self, path: &Path) -> io::Result<()> {
        self.call(FakeOp::Mkdir, path, None, || self.do_mkdir(path))
    }
    fn rmdir(&self, path: &Path) -> io::Result<()> {
        self.call(FakeOp::Rmdir, path, None, || self.do_rmdir(path))
    }
    fn write(&self, path: &Path, value: &str) -> io::Result<()> {
        self.call(FakeOp::Write, path, Some(value.to_string()), || {
            self.do_write(path, value)
        })
    }
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        self.call(
            FakeOp::Symlink,
            link,
            Some(target.display().to_string()),
            || self.do_symlink(target, link),
        )
    }
    fn unlink(&self, link: &Path) -> io::Result<()> {
        self.call(FakeOp::Unlink, link, None, || self.do_unlink(link))
    }
}
