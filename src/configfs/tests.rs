//! The configfs model against the fake kernel tree.

use super::fake::{fake_tree, tree_listing, FakeFs, FakeOp};
use super::*;
use crate::error::Error;
use crate::names::Plugin;
use std::path::Path;

const IQN: &str = "iqn.2003-01.org.linux-iscsi.vmprobe:tgt1";

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

fn errno_of(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

fn spec(name: &str, dev: &str) -> IblockSpec {
    IblockSpec {
        name: name.into(),
        hba: None,
        dev: dev.into(),
        wwn: None,
        readonly: false,
        attributes: BTreeMap::new(),
    }
}

/// The commands of the reference VM scenario (VM-NOTES a), through the fake's operations.
fn build_sample(cfs: &ConfigFs) {
    let ops = cfs.ops();
    let t = cfs.root();
    let b = t.join("core/iblock_0/disk0");
    ops.mkdir(&t.join("core/iblock_0")).unwrap();
    ops.mkdir(&b).unwrap();
    ops.write(&b.join("control"), "udev_path=/dev/vda\n")
        .unwrap();
    ops.write(&b.join("enable"), "1\n").unwrap();
    ops.write(
        &b.join("wwn/vpd_unit_serial"),
        "1234abcd-0000-4000-8000-000000000001\n",
    )
    .unwrap();
    let tpg = t.join("iscsi").join(IQN).join("tpgt_1");
    for d in [
        t.join("iscsi"),
        t.join("iscsi").join(IQN),
        tpg.clone(),
        tpg.join("lun/lun_0"),
    ] {
        ops.mkdir(&d).unwrap();
    }
    ops.symlink(&b, &tpg.join("lun/lun_0/lnk0")).unwrap();
    ops.mkdir(&tpg.join("np/127.0.0.1:3260")).unwrap();
    for (a, v) in [
        ("authentication", "0"),
        ("generate_node_acls", "1"),
        ("demo_mode_write_protect", "0"),
        ("cache_dynamic_acls", "1"),
    ] {
        ops.write(&tpg.join("attrib").join(a), &format!("{v}\n"))
            .unwrap();
    }
    ops.write(&tpg.join("enable"), "1\n").unwrap();
}

/// `find $T -maxdepth 4 | head -40` from the reference serial log.
const SAMPLE_LISTING: &str = "
iscsi
iscsi/iqn.2003-01.org.linux-iscsi.vmprobe:tgt1
iscsi/iqn.2003-01.org.linux-iscsi.vmprobe:tgt1/tpgt_1
iscsi/iqn.2003-01.org.linux-iscsi.vmprobe:tgt1/tpgt_1/param
iscsi/iqn.2003-01.org.linux-iscsi.vmprobe:tgt1/tpgt_1/auth
iscsi/iqn.2003-01.org.linux-iscsi.vmprobe:tgt1/tpgt_1/attrib
iscsi/iqn.2003-01.org.linux-iscsi.vmprobe:tgt1/tpgt_1/acls
iscsi/iqn.2003-01.org.linux-iscsi.vmprobe:tgt1/tpgt_1/np
iscsi/iqn.2003-01.org.linux-iscsi.vmprobe:tgt1/tpgt_1/lun
iscsi/iqn.2003-01.org.linux-iscsi.vmprobe:tgt1/tpgt_1/enable
iscsi/iqn.2003-01.org.linux-iscsi.vmprobe:tgt1/tpgt_1/dynamic_sessions
iscsi/iqn.2003-01.org.linux-iscsi.vmprobe:tgt1/param
iscsi/iqn.2003-01.org.linux-iscsi.vmprobe:tgt1/param/cmd_completion_affinity
iscsi/iqn.2003-01.org.linux-iscsi.vmprobe:tgt1/fabric_statistics
iscsi/iqn.2003-01.org.linux-iscsi.vmprobe:tgt1/fabric_statistics/iscsi_logout_stats
iscsi/iqn.2003-01.org.linux-iscsi.vmprobe:tgt1/fabric_statistics/iscsi_login_stats
iscsi/iqn.2003-01.org.linux-iscsi.vmprobe:tgt1/fabric_statistics/iscsi_tgt_attr
iscsi/iqn.2003-01.org.linux-iscsi.vmprobe:tgt1/fabric_statistics/iscsi_sess_err
iscsi/iqn.2003-01.org.linux-iscsi.vmprobe:tgt1/fabric_statistics/iscsi_instance
iscsi/discovery_auth
iscsi/discovery_auth/enforce_discovery_auth
iscsi/discovery_auth/password_mutual
iscsi/discovery_auth/userid_mutual
iscsi/discovery_auth/authenticate_target
iscsi/discovery_auth/password
iscsi/discovery_auth/userid
iscsi/cpus_allowed_list
iscsi/lio_version
core
core/iblock_0
core/iblock_0/disk0
core/iblock_0/disk0/statistics
core/iblock_0/disk0/alua
core/iblock_0/disk0/wwn
core/iblock_0/disk0/pr
core/iblock_0/disk0/attrib
core/iblock_0/disk0/action
core/iblock_0/disk0/lba_map
core/iblock_0/disk0/alua_lu_gp
";

#[test]
fn reads_a_tree_built_like_the_kernels() {
    let d = tmp();
    let (cfs, _fake) = fake_tree(d.path());
    build_sample(&cfs);
    for p in SAMPLE_LISTING.lines().filter(|l| !l.is_empty()) {
        assert!(
            std::fs::symlink_metadata(cfs.root().join(p)).is_ok(),
            "{p} missing from the fake tree"
        );
    }
    let b = cfs.root().join("core/iblock_0/disk0");
    for f in ["control", "enable", "udev_path", "info", "alias"] {
        assert!(b.join(f).is_file(), "{f}");
    }
    // The kernel's readlink answer, verbatim from the serial log.
    let lnk = cfs
        .root()
        .join("iscsi")
        .join(IQN)
        .join("tpgt_1/lun/lun_0/lnk0");
    assert_eq!(
        std::fs::read_link(&lnk).unwrap(),
        Path::new("../../../../../../target/core/iblock_0/disk0")
    );

    let sos = cfs.storage_objects().unwrap();
    assert_eq!(sos.len(), 1);
    let so = &sos[0];
    assert_eq!(so.plugin, Plugin::Block);
    assert_eq!(so.hba, "iblock_0");
    assert_eq!(so.name, "disk0");
    assert_eq!(so.element().to_string(), "/backstores/block/disk0");
    // Only `control` was written: the device comes from `info`.
    assert_eq!(so.udev_path.as_deref(), Some("/dev/vda"));
    assert_eq!(
        so.wwn.as_deref(),
        Some("1234abcd-0000-4000-8000-000000000001")
    );
    assert!(so.enabled);
    assert!(!so.readonly);
    assert_eq!(so.size_bytes, None);
    assert_eq!(so.path, b);
    // the object read whole: the same, and its read-write attributes
    let full = cfs.find_storage_object(&Plugin::Block, "disk0").unwrap();
    assert_eq!(full.summary, *so);
    // saved (state, intent records) as one flat object, as before the two were split
    let json = serde_json::to_value(&full).unwrap();
    assert_eq!(json["name"], "disk0");
    assert!(json.get("summary").is_none() && json["attributes"].is_object());
    assert_eq!(serde_json::from_value::<StorageObject>(json).unwrap(), full);
    assert_eq!(
        full.attributes.get("block_size").map(String::as_str),
        Some("512")
    );
    assert_eq!(
        full.attributes.get("queue_depth").map(String::as_str),
        Some("128")
    );
    assert!(
        !full.attributes.contains_key("hw_block_size"),
        "read-only kept"
    );
    assert!(!full.attributes.contains_key("hw_max_sectors"));
    assert!(std::fs::read_to_string(b.join("info"))
        .unwrap()
        .starts_with("Status: ACTIVATED"));

    let ts = cfs.targets().unwrap();
    assert_eq!(ts.len(), 1);
    assert_eq!(ts[0].fabric, "iscsi");
    assert_eq!(ts[0].wwn, IQN);
    let tpg = &ts[0].tpgs[0];
    assert_eq!(tpg.tag, 1);
    assert!(tpg.enabled);
    assert_eq!(tpg.portals, vec!["127.0.0.1:3260".to_string()]);
    assert_eq!(tpg.luns.len(), 1);
    assert_eq!(tpg.luns[0].index, 0);
    assert_eq!(tpg.luns[0].link_name, "lnk0");
    assert_eq!(
        tpg.luns[0].storage_object,
        Some(("iblock_0".into(), "disk0".into()))
    );
    assert!(tpg.acls.is_empty());

    let e = cfs.find_storage_object(&Plugin::Block, "nope").unwrap_err();
    assert!(matches!(e, Error::NotFound(_)));
    assert_eq!(
        e.to_string(),
        "not found: no storage object /backstores/block/nope"
    );
    assert!(matches!(
        cfs.find_storage_object(&Plugin::Fileio, "disk0"),
        Err(Error::NotFound(_))
    ));
}

#[test]
fn reads_every_plugin_and_skips_non_hba_entries() {
    let d = tmp();
    let (cfs, _f) = fake_tree(d.path());
    let ops = cfs.ops();
    let core = cfs.root().join("core");
    for (hba, name, control) in [
        (
            "fileio_1",
            "f1",
            "fd_dev_name=/var/lib/f1.img,fd_dev_size=1048576",
        ),
        ("rd_mcp_2", "r1", "rd_pages=256"),
        ("pscsi_3", "p1", "udev_path=/dev/sg0"),
        ("user_4", "u1", "dev_config=rbd/pool/img,dev_size=4096"),
    ] {
        ops.mkdir(&core.join(hba)).unwrap();
        ops.mkdir(&core.join(hba).join(name)).unwrap();
        ops.write(&core.join(hba).join(name).join("control"), control)
            .unwrap();
        ops.write(&core.join(hba).join(name).join("enable"), "1")
            .unwrap();
    }
    let sos = cfs.storage_objects().unwrap();
    let plugins: Vec<_> = sos
        .iter()
        .map(|s| (s.plugin.name(), s.name.as_str()))
        .collect();
    assert_eq!(
        plugins,
        vec![
            ("fileio", "f1"),
            ("pscsi", "p1"),
            ("ramdisk", "r1"),
            ("user", "u1")
        ]
    );
    let f1 = &sos[0];
    assert_eq!(f1.udev_path.as_deref(), Some("/var/lib/f1.img"));
    assert_eq!(f1.size_bytes, Some(1048576));
    assert_eq!(sos[2].size_bytes, Some(256 * 4096));
    assert_eq!(sos[3].size_bytes, Some(4096));
    assert_eq!(
        sos.iter()
            .map(|s| cfs
                .find_storage_object(&s.plugin, &s.name)
                .unwrap()
                .summary
                .clone())
            .collect::<Vec<_>>(),
        sos
    );
    let p1 = cfs.find_storage_object(&Plugin::Pscsi, "p1").unwrap();
    assert!(!p1.attributes.is_empty());
    assert!(p1.attributes.keys().all(|k| !k.starts_with("hw_")));
    assert_eq!(
        cfs.find_storage_object(&"user:rbd".parse().unwrap(), "u1")
            .unwrap()
            .hba,
        "user_4"
    );
}

#[test]
fn create_and_delete_iblock() {
    let d = tmp();
    let (cfs, fake) = fake_tree(d.path());
    let before = tree_listing(cfs.root());
    let _lock = cfs.lock().unwrap();
    let mut s = spec("src1", "/dev/mapper/lr1-src1");
    s.wwn = Some("5ea1-0001".into());
    s.readonly = true;
    s.attributes = BTreeMap::from([
        ("block_size".to_string(), "512".to_string()),
        ("emulate_write_cache".to_string(), "1".to_string()),
        ("hw_block_size".to_string(), "4096".to_string()),
        ("no_such_attribute".to_string(), "1".to_string()),
    ]);
    let so = cfs.create_iblock(&s).unwrap();
    assert_eq!(so.hba, "iblock_0");
    assert_eq!(so.udev_path.as_deref(), Some("/dev/mapper/lr1-src1"));
    assert_eq!(so.wwn.as_deref(), Some("5ea1-0001"));
    assert!(so.enabled && so.readonly);
    assert_eq!(so.attributes["emulate_write_cache"], "1");

    let r = cfs.root().join("core/iblock_0");
    let calls: Vec<_> = fake
        .calls()
        .into_iter()
        .map(|c| (c.op, c.path, c.value))
        .collect();
    let w = |p: &str, v: &str| (FakeOp::Write, r.join(p), Some(v.to_string()));
    assert_eq!(
        calls,
        vec![
            (FakeOp::Mkdir, r.clone(), None),
            (FakeOp::Mkdir, r.join("src1"), None),
            w("src1/control", "udev_path=/dev/mapper/lr1-src1"),
            w("src1/control", "readonly=1"),
            w("src1/udev_path", "/dev/mapper/lr1-src1"),
            w("src1/enable", "1"),
            w("src1/wwn/vpd_unit_serial", "5ea1-0001"),
            // block_size already 512, hw_block_size read-only, the unknown one absent.
            w("src1/attrib/emulate_write_cache", "1"),
        ]
    );

    // Same device again: the kernel's exclusive open refuses, nothing is left behind.
    let mid = tree_listing(cfs.root());
    let e = cfs
        .create_iblock(&spec("other", "/dev/mapper/lr1-src1"))
        .unwrap_err();
    match &e {
        Error::Io {
            path,
            value,
            source,
            ..
        } => {
            assert!(path.ends_with("iblock_1/other/enable"), "{e}");
            assert_eq!(value.as_deref(), Some("1"));
            assert_eq!(errno_of(source), nix::libc::EBUSY);
        }
        other => panic!("{other}"),
    }
    assert_eq!(tree_listing(cfs.root()), mid);
    // Same name: refused before any change.
    assert!(matches!(
        cfs.create_iblock(&spec("src1", "/dev/vdb")),
        Err(Error::InUse(_))
    ));

    cfs.delete_storage_object(&so).unwrap();
    assert_eq!(tree_listing(cfs.root()), before);
    assert!(matches!(
        cfs.delete_storage_object(&so),
        Err(Error::NotFound(_))
    ));
}

#[test]
fn refused_attribute_is_a_warning_not_a_failure() {
    let d = tmp();
    let (cfs, fake) = fake_tree(d.path());
    let mut s = spec("a", "/dev/vdb");
    s.attributes = BTreeMap::from([
        ("emulate_tpu".to_string(), "1".to_string()),
        ("emulate_write_cache".to_string(), "1".to_string()),
    ]);
    fake.fail_on(FakeOp::Write, "attrib/emulate_tpu");
    let so = cfs.create_iblock(&s).unwrap();
    assert_eq!(so.attributes["emulate_tpu"], "0");
    assert_eq!(so.attributes["emulate_write_cache"], "1");
}

/// A tree with something in it already: an exported object in iblock_0, a TPG with an ACL.
fn populated(dir: &Path) -> (ConfigFs, std::sync::Arc<FakeFs>, StorageObject, PathBuf) {
    let (cfs, fake) = fake_tree(dir);
    let so = cfs.create_iblock(&spec("disk0", "/dev/vda")).unwrap();
    let tpg = cfs.create_tpg("iscsi", IQN, 1).unwrap();
    cfs.create_lun(&tpg, 0, &so, "lnk0").unwrap();
    let acl = cfs
        .create_node_acl(&tpg, "iqn.1993-08.org.debian:01:init1")
        .unwrap();
    cfs.create_mapped_lun(&acl, 0, 0, "m0", false).unwrap();
    fake.clear_calls();
    (cfs, fake, so, tpg)
}

/// Run `op` on a fresh populated tree with the n-th call failing, for every n until it
/// succeeds; every failure must leave the tree exactly as it was.
fn every_step_fails<T: std::fmt::Debug>(
    name: &str,
    prepare: impl Fn(&ConfigFs, &StorageObject, &Path),
    op: impl Fn(&ConfigFs, &StorageObject, &Path) -> Result<T>,
) -> usize {
    for n in 1.. {
        let d = tmp();
        let (cfs, fake, so, tpg) = populated(d.path());
        prepare(&cfs, &so, &tpg);
        fake.clear_calls();
        let before = tree_listing(cfs.root());
        fake.fail_at_call(n);
        match op(&cfs, &so, &tpg) {
            Ok(_) => {
                assert!(n > 1, "{name}: no step could fail");
                return n - 1;
            }
            Err(e) => {
                assert!(matches!(e, Error::Io { .. }), "{name} step {n}: {e}");
                assert_eq!(
                    tree_listing(cfs.root()),
                    before,
                    "{name}: step {n} failed ({e}) and changed the tree"
                );
                let calls = fake.calls();
                assert!(calls[n - 1].failed, "{name}: step {n} did not fail");
            }
        }
    }
    unreachable!()
}

#[test]
fn create_iblock_rolls_back_at_every_step() {
    let mut s = spec("src1", "/dev/vdb");
    s.wwn = Some("serial-1".into());
    s.readonly = true;
    // New hba directory: mkdir hba, mkdir so, control, readonly, udev_path, enable, serial.
    let n = every_step_fails(
        "create_iblock",
        |_, _, _| (),
        |cfs, _, _| cfs.create_iblock(&s),
    );
    assert_eq!(n, 7);
    // Into an existing hba directory (as adoption re-creates one in place).
    let mut s2 = spec("src2", "/dev/vdc");
    s2.hba = Some("iblock_0".into());
    let n = every_step_fails(
        "create_iblock in iblock_0",
        |_, _, _| (),
        |cfs, _, _| cfs.create_iblock(&s2),
    );
    assert_eq!(n, 4);
}

#[test]
fn lun_operations_roll_back_at_every_step() {
    let acl = |tpg: &Path| tpg.join("acls/iqn.1993-08.org.debian:01:init1");
    assert_eq!(
        every_step_fails(
            "create_lun",
            |_, _, _| (),
            |cfs, so, tpg| { cfs.create_lun(tpg, 7, so, "lnk7") }
        ),
        2
    );
    assert_eq!(
        every_step_fails(
            "create_mapped_lun",
            |_, _, _| (),
            |cfs, _, tpg| { cfs.create_mapped_lun(&acl(tpg), 3, 0, "m3", true) }
        ),
        3
    );
    assert_eq!(
        every_step_fails(
            "delete_mapped_lun",
            |_, _, _| (),
            |cfs, _, tpg| { cfs.delete_mapped_lun(&acl(tpg), 0) }
        ),
        2
    );
    assert_eq!(
        every_step_fails(
            "delete_lun",
            |cfs, _, tpg| cfs.delete_mapped_lun(&acl(tpg), 0).unwrap(),
            |cfs, _, tpg| cfs.delete_lun(tpg, 0)
        ),
        2
    );
    assert_eq!(
        every_step_fails(
            "create_tpg",
            |_, _, _| (),
            |cfs, _, _| { cfs.create_tpg("loopback", "naa.5001405abcdef012", 1) }
        ),
        3
    );
}

#[test]
fn delete_storage_object_steps() {
    let d = tmp();
    let (cfs, fake, so, tpg) = populated(d.path());
    // Exported: refused before any change.
    let e = cfs.delete_storage_object(&so).unwrap_err();
    assert!(matches!(e, Error::InUse(_)), "{e}");
    assert!(e.to_string().contains("lun_0"), "{e}");
    assert!(fake.calls().is_empty());
    let acl = tpg.join("acls/iqn.1993-08.org.debian:01:init1");
    // The LUN is still mapped: refused.
    assert!(matches!(cfs.delete_lun(&tpg, 0), Err(Error::InUse(_))));
    cfs.delete_mapped_lun(&acl, 0).unwrap();
    cfs.delete_lun(&tpg, 0).unwrap();

    let before = tree_listing(cfs.root());
    fake.fail_on(FakeOp::Rmdir, "/disk0");
    assert!(matches!(
        cfs.delete_storage_object(&so),
        Err(Error::Io { .. })
    ));
    assert_eq!(tree_listing(cfs.root()), before);

    // The hba directory refusing to go is only a warning.
    fake.fail_on(FakeOp::Rmdir, "/iblock_0");
    cfs.delete_storage_object(&so).unwrap();
    assert!(!so.path.exists());
    assert!(cfs.root().join("core/iblock_0").is_dir());
    assert!(cfs.storage_objects().unwrap().is_empty());
}

#[test]
fn failed_rollback_is_reported() {
    let d = tmp();
    let (cfs, fake) = fake_tree(d.path());
    fake.fail_on(FakeOp::Write, "x1/enable");
    fake.fail_on(FakeOp::Rmdir, "/x1");
    let e = cfs.create_iblock(&spec("x1", "/dev/vdb")).unwrap_err();
    match &e {
        Error::RollbackFailed { cause, left } => {
            assert!(matches!(**cause, Error::Io { .. }));
            assert!(left.contains("iblock_0/x1"), "{left}");
            // The hba directory could not go either (the object is still in it).
            assert!(left.contains("iblock_0 ("), "{left}");
        }
        other => panic!("{other}"),
    }
    assert_eq!(e.return_code(), crate::error::ReturnCode::Failed);
}

#[test]
fn lock_is_exclusive() {
    use nix::fcntl::{Flock, FlockArg};
    let d = tmp();
    let (cfs, _) = fake_tree(d.path());
    let l = cfs.lock().unwrap();
    assert!(cfs.lock_path().is_file());
    let other = std::fs::File::open(cfs.lock_path()).unwrap();
    let other = match Flock::lock(other, FlockArg::LockExclusiveNonblock) {
        Ok(_) => panic!("second lock taken while the first is held"),
        Err((f, e)) => {
            assert_eq!(e, nix::errno::Errno::EWOULDBLOCK);
            f
        }
    };
    drop(l);
    let again = Flock::lock(other, FlockArg::LockExclusiveNonblock);
    assert!(again.is_ok(), "lock not released on drop");
    drop(again);

    let nowhere = ConfigFs::with_ops(
        cfs.root(),
        cfs.ops().clone(),
        d.path().join("no/such/dir/lock"),
    );
    assert!(matches!(nowhere.lock(), Err(Error::Io { .. })));
}

#[test]
fn hostile_names_are_refused_before_any_write() {
    let d = tmp();
    let (cfs, fake, so, tpg) = populated(d.path());
    let long = "a".repeat(65);
    for bad in [
        "..",
        ".",
        "a/b",
        "a b",
        "a\0b",
        "-x",
        ".hidden",
        "",
        long.as_str(),
        "a\nb",
    ] {
        let e = cfs.create_iblock(&spec(bad, "/dev/vdb")).unwrap_err();
        assert!(matches!(e, Error::Invalid(_)), "{bad:?}: {e}");
    }
    for dev in [
        "vdb",
        "/dev/vdb,readonly=0",
        "/dev/../etc/passwd",
        "/dev/a b",
        "/dev/a\nb",
    ] {
        let e = cfs.create_iblock(&spec("ok", dev)).unwrap_err();
        assert!(matches!(e, Error::Invalid(_)), "{dev:?}: {e}");
    }
    for hba in ["../iblock_0", "iblock_x", "fileio_0", "iblock_0/x"] {
        let mut s = spec("ok", "/dev/vdb");
        s.hba = Some(hba.into());
        assert!(
            matches!(cfs.create_iblock(&s), Err(Error::Invalid(_))),
            "{hba}"
        );
    }
    let mut s = spec("ok", "/dev/vdb");
    s.wwn = Some("bad\nserial".into());
    assert!(matches!(cfs.create_iblock(&s), Err(Error::Invalid(_))));
    let mut s = spec("ok", "/dev/vdb");
    s.attributes.insert("../../enable".into(), "1".into());
    assert!(matches!(cfs.create_iblock(&s), Err(Error::Invalid(_))));

    for link in ["..", "a/b", "a b", ""] {
        assert!(
            matches!(cfs.create_lun(&tpg, 3, &so, link), Err(Error::Invalid(_))),
            "{link:?}"
        );
    }
    let mut evil = so.clone();
    evil.summary.name = "../../iscsi".into();
    assert!(matches!(
        cfs.create_lun(&tpg, 3, &evil, "l"),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        cfs.delete_storage_object(&evil),
        Err(Error::Invalid(_))
    ));
    let outside = d.path().join("elsewhere/iscsi/x/tpgt_1");
    let dotted = tpg.join("../tpgt_1");
    let core_tpg = cfs.root().join("core/iblock_0/tpgt_1");
    for p in [&outside, &dotted, &core_tpg, &tpg.join("lun")] {
        assert!(
            matches!(cfs.set_tpg_enabled(p, false), Err(Error::Invalid(_))),
            "{}",
            p.display()
        );
        assert!(matches!(
            cfs.create_lun(p, 3, &so, "l"),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            cfs.create_node_acl(p, "iqn.x"),
            Err(Error::Invalid(_))
        ));
    }
    for init in ["a b", "../x", "x/y"] {
        assert!(
            matches!(cfs.create_node_acl(&tpg, init), Err(Error::Invalid(_))),
            "{init}"
        );
    }
    assert!(matches!(
        cfs.create_mapped_lun(&tpg.join("acls/../lun"), 1, 0, "m", false),
        Err(Error::Invalid(_))
    ));
    for (fabric, wwn) in [
        ("core", "x"),
        ("../x", "y"),
        ("iscsi", "a/b"),
        ("iscsi", ""),
        ("iscsi", "discovery_auth"),
    ] {
        assert!(
            matches!(cfs.create_tpg(fabric, wwn, 1), Err(Error::Invalid(_))),
            "{fabric} {wwn}"
        );
    }
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());
}

#[test]
fn planted_symlinks_are_not_followed() {
    let d = tmp();
    let (cfs, _fake, _so, tpg) = populated(d.path());
    let root = cfs.root().to_path_buf();
    // A convincing storage object and fabric outside the root.
    let evil = d.path().join("evil");
    std::fs::create_dir_all(evil.join("iblock_7/x/wwn")).unwrap();
    std::fs::write(evil.join("iblock_7/x/enable"), "1\n").unwrap();
    std::fs::write(evil.join("iblock_7/x/udev_path"), "/dev/sda\n").unwrap();
    std::fs::create_dir_all(evil.join("naa.1/tpgt_1/lun")).unwrap();
    std::fs::write(evil.join("info"), "readonly: 1  UDEV PATH: /dev/evil\n").unwrap();
    use std::os::unix::fs::symlink;
    symlink(evil.join("iblock_7"), root.join("core/iblock_7")).unwrap();
    symlink(evil.join("iblock_7/x"), root.join("core/iblock_0/sneaky")).unwrap();
    symlink(&evil, root.join("loopback")).unwrap();
    symlink(&evil, root.join("iscsi/naa.2")).unwrap();
    // A LUN whose link leaves the root, and one that climbs out and back in.
    std::fs::create_dir(tpg.join("lun/lun_3")).unwrap();
    symlink("/etc", tpg.join("lun/lun_3/out")).unwrap();
    std::fs::create_dir(tpg.join("lun/lun_4")).unwrap();
    symlink(evil.join("iblock_7/x"), tpg.join("lun/lun_4/out")).unwrap();
    // An attribute replaced by a link to a file outside.
    let info = root.join("core/iblock_0/disk0/info");
    std::fs::remove_file(&info).unwrap();
    symlink(evil.join("info"), &info).unwrap();

    let sos = cfs.storage_objects().unwrap();
    assert_eq!(sos.len(), 1, "{sos:?}");
    assert_eq!(sos[0].name, "disk0");
    assert!(!sos[0].readonly);
    assert_ne!(sos[0].udev_path.as_deref(), Some("/dev/evil"));

    let ts = cfs.targets().unwrap();
    assert_eq!(ts.len(), 1, "{ts:?}");
    let luns = &ts[0].tpgs[0].luns;
    assert_eq!(luns.len(), 3);
    assert_eq!(luns[1].index, 3);
    assert_eq!(luns[1].storage_object, None);
    assert_eq!(luns[2].storage_object, None);
    let disk0 = cfs.find_storage_object(&Plugin::Block, "disk0").unwrap();
    assert_eq!(disk0.summary.clone(), sos[0]);
    assert_eq!(cfs.exports_of(&disk0).unwrap().len(), 1);
}

#[test]
fn exports_of_finds_luns_and_acl_mappings() {
    let d = tmp();
    let (cfs, _fake, so, tpg) = populated(d.path());
    let other = cfs.create_iblock(&spec("disk1", "/dev/vdb")).unwrap();
    cfs.create_lun(&tpg, 1, &other, "lnk1").unwrap();
    let init1 = tpg.join("acls/iqn.1993-08.org.debian:01:init1");
    let init2 = cfs
        .create_node_acl(&tpg, "iqn.1993-08.org.debian:01:init2")
        .unwrap();
    cfs.create_mapped_lun(&init2, 5, 0, "m5", true).unwrap();
    cfs.create_mapped_lun(&init1, 1, 1, "m1", false).unwrap();
    let tpg2 = cfs
        .create_tpg("iscsi", "iqn.2003-01.org.example:t2", 3)
        .unwrap();
    cfs.create_lun(&tpg2, 9, &so, "x").unwrap();
    cfs.set_tpg_enabled(&tpg2, true).unwrap();
    let lo = cfs
        .create_tpg("loopback", "naa.5001405abcdef012", 1)
        .unwrap();
    cfs.create_lun(&lo, 0, &other, "y").unwrap();

    let mut ex = cfs.exports_of(&so).unwrap();
    assert_eq!(ex.len(), 2, "{ex:#?}");
    // Sorted by fabric and WWN: "...org.example:t2" comes first.
    ex.reverse();
    assert_eq!((ex[0].wwn.as_str(), ex[0].tpg_tag, ex[0].lun), (IQN, 1, 0));
    assert_eq!(ex[0].link_name, "lnk0");
    assert!(!ex[0].tpg_enabled);
    assert_eq!(ex[0].tpg, tpg);
    let m: Vec<_> = ex[0]
        .mapped
        .iter()
        .map(|m| (m.index, m.tpg_lun, m.write_protect, m.link_name.as_str()))
        .collect();
    assert_eq!(m, vec![(0, 0, false, "m0"), (5, 0, true, "m5")]);
    assert_eq!(ex[0].mapped_acls, vec![init1.clone(), init2.clone()]);
    assert_eq!(ex[0].mapped[1].path, init2.join("lun_5"));
    assert_eq!((ex[1].tpg_tag, ex[1].lun, ex[1].tpg_enabled), (3, 9, true));
    assert!(ex[1].mapped.is_empty());

    let ex1 = cfs.exports_of(&other).unwrap();
    assert_eq!(ex1.len(), 2);
    assert_eq!(ex1[1].fabric, "loopback");
    assert!(
        ex1[1].tpg_enabled,
        "loopback TPGs have no enable: always on"
    );
    assert_eq!(ex1[0].mapped.len(), 1);

    // the LUN links alone: the same LUNs as the targets read whole, in the same order
    let from_targets: Vec<LunLink> = cfs
        .targets()
        .unwrap()
        .iter()
        .flat_map(|t| {
            t.tpgs.iter().flat_map(move |tpg| {
                tpg.luns.iter().filter_map(move |l| {
                    Some(LunLink {
                        fabric: t.fabric.clone(),
                        wwn: t.wwn.clone(),
                        tpg_tag: tpg.tag,
                        lun: l.index,
                        storage_object: l.storage_object.clone()?,
                    })
                })
            })
        })
        .collect();
    assert_eq!(from_targets.len(), 4);
    assert_eq!(cfs.lun_links().unwrap(), from_targets);
}

/// Listing opens no `attrib/*` file (it shows no attributes; an object has more than 30)
/// and reads no ACL for the LUN links; reading the object or the targets whole does, which
/// shows the watch sees these reads.
#[test]
fn listing_reads_neither_attributes_nor_acls() {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let d = tmp();
    let (cfs, _fake, so, tpg) = populated(d.path());
    let opened = |dir: &Path| {
        let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).unwrap();
        ino.add_watch(dir, AddWatchFlags::IN_OPEN | AddWatchFlags::IN_ACCESS)
            .unwrap();
        ino
    };
    let names = |ino: &Inotify| -> Vec<String> {
        match ino.read_events() {
            Ok(ev) => ev
                .into_iter()
                .map(|e| {
                    e.name
                        .map_or(".".into(), |n| n.to_string_lossy().into_owned())
                })
                .collect(),
            Err(nix::errno::Errno::EAGAIN) => Vec::new(),
            Err(e) => panic!("inotify: {e}"),
        }
    };
    let attrib = opened(&so.path.join("attrib"));
    let acl = opened(&tpg.join("acls/iqn.1993-08.org.debian:01:init1/lun_0"));

    assert_eq!(cfs.storage_objects().unwrap(), vec![so.summary.clone()]);
    assert_eq!(cfs.lun_links().unwrap().len(), 1);
    assert_eq!(names(&attrib), Vec::<String>::new());
    assert_eq!(names(&acl), Vec::<String>::new());

    assert_eq!(
        cfs.find_storage_object(&Plugin::Block, "disk0").unwrap(),
        so
    );
    assert!(names(&attrib).iter().any(|n| n == "block_size"));
    assert_eq!(cfs.targets().unwrap()[0].tpgs[0].acls.len(), 1);
    assert!(names(&acl).iter().any(|n| n == "write_protect"));
}

#[test]
fn tpg_enable_and_ensure_semantics() {
    let d = tmp();
    let (cfs, fake, _so, tpg) = populated(d.path());
    cfs.set_tpg_enabled(&tpg, true).unwrap();
    cfs.set_tpg_enabled(&tpg, true).unwrap();
    assert_eq!(fake.calls().len(), 1, "no write when already enabled");
    assert!(cfs.targets().unwrap()[0].tpgs[0].enabled);
    cfs.set_tpg_enabled(&tpg, false).unwrap();
    assert!(!cfs.targets().unwrap()[0].tpgs[0].enabled);
    let lo = cfs
        .create_tpg("loopback", "naa.5001405abcdef012", 1)
        .unwrap();
    fake.clear_calls();
    cfs.set_tpg_enabled(&lo, false).unwrap();
    assert!(fake.calls().is_empty());
    assert_eq!(cfs.create_tpg("iscsi", IQN, 1).unwrap(), tpg);
    let acl = tpg.join("acls/iqn.1993-08.org.debian:01:init1");
    assert_eq!(
        cfs.create_node_acl(&tpg, "iqn.1993-08.org.debian:01:init1")
            .unwrap(),
        acl
    );
    assert!(fake.calls().is_empty());
    let missing = cfs.root().join("iscsi/iqn.2000-01.x:none/tpgt_1");
    assert!(matches!(
        cfs.set_tpg_enabled(&missing, true),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        cfs.create_lun(&missing, 0, &_so, "l"),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        cfs.create_lun(&tpg, 0, &_so, "l"),
        Err(Error::InUse(_))
    ));
    assert!(matches!(
        cfs.create_mapped_lun(&acl, 0, 0, "m", false),
        Err(Error::InUse(_))
    ));
    assert!(matches!(
        cfs.create_mapped_lun(&acl, 1, 42, "m", false),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(cfs.delete_lun(&tpg, 42), Err(Error::NotFound(_))));
    assert!(matches!(
        cfs.delete_mapped_lun(&acl, 42),
        Err(Error::NotFound(_))
    ));
}

#[test]
fn missing_root_is_a_clear_error() {
    let d = tmp();
    let cfs = ConfigFs::with_ops(
        d.path().join("target"),
        std::sync::Arc::new(FakeFs::new()),
        d.path().join("lock"),
    );
    assert!(matches!(cfs.storage_objects(), Err(Error::Io { .. })));
    assert!(matches!(cfs.targets(), Err(Error::Io { .. })));
    let e = cfs.create_iblock(&spec("a", "/dev/vdb")).unwrap_err();
    assert!(e.to_string().contains("target_core_mod"), "{e}");
}

#[test]
fn fake_kernel_semantics() {
    let d = tmp();
    let (cfs, fake, so, tpg) = populated(d.path());
    let ops = cfs.ops();
    let core = cfs.root().join("core");
    let e = |r: std::io::Result<()>| r.map_err(|e| errno_of(&e)).unwrap_err();

    // enable without a device; a device held by another enabled object.
    ops.mkdir(&core.join("iblock_5")).unwrap();
    let x = core.join("iblock_5/x");
    ops.mkdir(&x).unwrap();
    assert_eq!(e(ops.write(&x.join("enable"), "1")), nix::libc::EINVAL);
    ops.write(&x.join("control"), "udev_path=/dev/vda").unwrap();
    assert_eq!(e(ops.write(&x.join("enable"), "1")), nix::libc::EBUSY);
    ops.write(&x.join("control"), "udev_path=/dev/vdx,readonly=1")
        .unwrap();
    ops.write(&x.join("enable"), "1").unwrap();
    assert_eq!(e(ops.write(&x.join("enable"), "1")), nix::libc::EEXIST);
    assert_eq!(
        e(ops.write(&x.join("control"), "udev_path=/dev/vdy")),
        nix::libc::EEXIST
    );
    let info = std::fs::read_to_string(x.join("info")).unwrap();
    assert!(
        info.contains("iBlock device: vdx  UDEV PATH: /dev/vdx  readonly: 1"),
        "{info}"
    );
    // A device someone else holds.
    fake.hold_device("/dev/held");
    ops.mkdir(&core.join("iblock_5/h")).unwrap();
    ops.write(&core.join("iblock_5/h/control"), "udev_path=/dev/held")
        .unwrap();
    assert_eq!(
        e(ops.write(&core.join("iblock_5/h/enable"), "1")),
        nix::libc::EBUSY
    );
    fake.release_device("/dev/held");
    ops.write(&core.join("iblock_5/h/enable"), "1").unwrap();
    // Attribute rules.
    assert_eq!(
        e(ops.write(&x.join("attrib/hw_block_size"), "4096")),
        nix::libc::EACCES
    );
    assert_eq!(
        e(ops.write(&x.join("attrib/block_size"), "513")),
        nix::libc::EINVAL
    );
    assert_eq!(
        e(ops.write(&x.join("attrib/emulate_tpu"), "2")),
        nix::libc::EINVAL
    );
    assert_eq!(
        e(ops.write(&x.join("attrib/nosuch"), "1")),
        nix::libc::ENOENT
    );
    assert_eq!(
        e(ops.write(&so.path.join("attrib/block_size"), "4096")),
        nix::libc::EINVAL
    );
    // Serial refused while exported.
    assert_eq!(
        e(ops.write(&so.path.join("wwn/vpd_unit_serial"), "x")),
        nix::libc::EINVAL
    );
    // rmdir: exported object busy; a LUN with its link not empty; default groups fixed.
    assert_eq!(e(ops.rmdir(&so.path)), nix::libc::EBUSY);
    assert_eq!(e(ops.rmdir(&tpg.join("lun/lun_0"))), nix::libc::ENOTEMPTY);
    assert_eq!(e(ops.rmdir(&so.path.join("attrib"))), nix::libc::EPERM);
    assert_eq!(e(ops.rmdir(&core)), nix::libc::EPERM);
    assert_eq!(e(ops.rmdir(&core.join("iblock_5"))), nix::libc::ENOTEMPTY);
    // mkdir rules.
    assert_eq!(e(ops.mkdir(&core.join("bogus"))), nix::libc::EINVAL);
    assert_eq!(e(ops.mkdir(&tpg.join("lun/lun_x"))), nix::libc::EINVAL);
    assert_eq!(e(ops.mkdir(&so.path.join("attrib/new"))), nix::libc::EPERM);
    assert_eq!(e(ops.mkdir(&tpg)), nix::libc::EEXIST);
    // symlink rules: only to our own items, only where the kernel allows, one per LUN.
    ops.mkdir(&tpg.join("lun/lun_8")).unwrap();
    assert_eq!(
        e(ops.symlink(Path::new("/etc"), &tpg.join("lun/lun_8/l"))),
        nix::libc::EPERM
    );
    assert_eq!(
        e(ops.symlink(&tpg, &tpg.join("lun/lun_8/l"))),
        nix::libc::EPERM
    );
    ops.mkdir(&core.join("iblock_5/off")).unwrap();
    assert_eq!(
        e(ops.symlink(&core.join("iblock_5/off"), &tpg.join("lun/lun_8/l"))),
        nix::libc::ENODEV
    );
    assert_eq!(
        e(ops.symlink(&so.path, &tpg.join("lun/lun_0/again"))),
        nix::libc::EEXIST
    );
    assert_eq!(e(ops.unlink(&so.path.join("enable"))), nix::libc::EPERM);
    // rmdir takes the kernel-made files with it.
    ops.rmdir(&core.join("iblock_5/off")).unwrap();
    assert!(!core.join("iblock_5/off").exists());
    // Unlinking the LUN deactivates the object.
    ops.unlink(&tpg.join("lun/lun_0/lnk0")).unwrap();
    assert!(std::fs::read_to_string(so.path.join("info"))
        .unwrap()
        .starts_with("Status: DEACTIVATED"));
    // Failed calls are logged as such.
    assert!(fake.calls().iter().any(|c| c.failed));
    assert!(fake.calls().iter().any(|c| !c.failed));
}

#[test]
fn a_second_fake_sees_the_same_tree() {
    let d = tmp();
    let (cfs, _fake, so, _tpg) = populated(d.path());
    let again = ConfigFs::with_ops(
        cfs.root(),
        std::sync::Arc::new(FakeFs::new()),
        cfs.lock_path().to_path_buf(),
    );
    assert_eq!(again.storage_objects().unwrap(), vec![so.summary.clone()]);
    assert_eq!(
        again.find_storage_object(&Plugin::Block, &so.name).unwrap(),
        so
    );
    let e = again.create_iblock(&spec("dup", "/dev/vda")).unwrap_err();
    assert!(
        matches!(e, Error::Io { .. }),
        "exclusive open seen by a new fake: {e}"
    );
}
