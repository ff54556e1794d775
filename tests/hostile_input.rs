//! Hostile input against a real engine on a fake configfs tree (simulated device-mapper):
//! element names that try to leave their directory or break names further down, and symlinks
//! planted in the tree that lead outside the configfs root. Every refusal is a CIM return
//! value with a reason, the tree and the kernel state stay as they were, and no configfs
//! change ever lands outside the root: the world's [`Guard`] resolves where each change
//! really lands, the sentinel directory beside the root must not change, and every path the
//! fake kernel was asked to change lies under the root.

use lio_replica::api::protocol;
use lio_replica::configfs::fake::FakeFs;
use lio_replica::configfs::{ConfigFs, FsOps, IblockSpec};
use lio_replica::dm::DmBackend;
use lio_replica::names::Plugin;
use lio_replica::service::{MethodResult, Service};
use lio_replica::testing::{World, MB};
use serde_json::json;
use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Source `src` (disk 0, 16 MiB), target `tgt` (disk 1, 16 MiB), spare disks 2 and 3 for
/// objects planted by the tests.
fn world() -> World {
    let w = World::guarded(&[16 * MB, 16 * MB, 16 * MB, 16 * MB]);
    w.iblock("src", 0);
    w.iblock("tgt", 1);
    std::fs::write(w.outside().join("secret"), "do not touch\n").unwrap();
    std::fs::create_dir(w.outside().join("dir")).unwrap();
    std::fs::write(w.outside().join("dir/file"), "1\n").unwrap();
    w
}

/// A configfs tree of its own inside the sentinel directory, with a well-formed block
/// backstore `ghost` on disk `disk`: planted links lead here, so a reader that follows them
/// finds something that looks usable. Returns the object's directory.
fn ghost(w: &World, disk: usize) -> PathBuf {
    let root = w.outside().join("target");
    FakeFs::create_root(&root).unwrap();
    let cfs = ConfigFs::with_ops(
        &root,
        Arc::new(FakeFs::with_root(&root)) as Arc<dyn FsOps>,
        w.outside().join("lock"),
    );
    let so = cfs
        .create_iblock(&IblockSpec {
            name: "ghost".into(),
            hba: None,
            dev: w.disk(disk),
            wwn: Some("ghost-serial".into()),
            readonly: false,
            attributes: BTreeMap::new(),
        })
        .unwrap();
    so.summary.path
}

/// The state to compare against after an operation.
struct Before {
    state: (Vec<String>, Vec<String>),
    outside: Vec<String>,
}

fn before(w: &World) -> Before {
    w.fake.clear_calls();
    Before {
        state: w.state(),
        outside: w.outside_listing(),
    }
}

/// Nothing escaped the root, whatever happened inside it.
fn assert_contained(w: &World, b: &Before, what: &str) {
    assert_eq!(w.guard().escapes(), Vec::<String>::new(), "{what}: escaped");
    assert_eq!(
        w.outside_listing(),
        b.outside,
        "{what}: the sentinel changed"
    );
    for c in w.fake.calls() {
        assert!(c.path.starts_with(w.root()), "{what}: {c:?}");
    }
    // the host's own files (a planted link leads to /etc)
    assert!(Path::new("/etc/passwd").exists());
}

/// Refused with `code` and a reason, and nothing changed at all.
fn assert_refused(w: &World, b: &Before, r: &MethodResult, codes: &[u32], what: &str) {
    assert_refused_quick(w, r, codes, what);
    assert_eq!(w.state(), b.state, "{what}: the tree or the kernel changed");
    assert_contained(w, b, what);
}

/// Refused with `code` and a reason, without a configfs change or an escape (the whole
/// tree is compared by the caller, less often).
fn assert_refused_quick(w: &World, r: &MethodResult, codes: &[u32], what: &str) {
    assert!(
        codes.contains(&r.return_value),
        "{what}: expected one of {codes:?}, got {r:?}"
    );
    let d = r.description.as_deref().unwrap_or("");
    assert!(!d.trim().is_empty(), "{what}: no reason: {r:?}");
    assert!(
        w.fake.calls().iter().all(|c| c.failed),
        "{what}: configfs was changed: {:?}",
        w.fake.calls()
    );
    assert_eq!(w.guard().escapes(), Vec::<String>::new(), "{what}: escaped");
}

/// The same call through the JSON-RPC layer (the name JSON-escaped on the wire).
fn rpc(w: &World, method: &str, params: serde_json::Value) -> serde_json::Value {
    let line = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
    let v = protocol::handle_line(&w.engine, line.as_bytes()).expect("an answer");
    assert!(v.get("result").is_some(), "{method} {params}: {v}");
    v["result"].clone()
}

fn hostile_names() -> Vec<String> {
    let mut v: Vec<String> = [
        "",
        " ",
        "block",
        "block/",
        "/backstores/block/",
        "block/.",
        "block/..",
        "block/../tgt",
        "block/../../../../etc/passwd",
        "/backstores/block/../../etc",
        "/backstores/block/src/..",
        "/backstores//src",
        "//block/src",
        "block//src",
        "block/src/",
        "block/src/x",
        "block/src/../tgt",
        "../../etc/passwd",
        "/etc/passwd",
        "block/a\0b",
        "block/src\0",
        "block/\0",
        "block/a b",
        "block/src ",
        " block/src",
        "block/ src",
        "block/src\n",
        "block/src\nblock/tgt",
        "block/\n",
        "block/src\t",
        "block/src\r",
        "block/.hidden",
        "block/-rf",
        "block/*",
        "block/src;rm -rf /",
        "block/$(reboot)",
        "block/`id`",
        "block/src%2f..",
        "block\\src",
        "block/ünïcödé",
        "block/src\u{200b}",
        "block/\u{0455}rc", // Cyrillic s
        "block/😀",
        "block/src\u{202e}",
        "BLOCK/src",
        "Block/src",
        "iblock/src",
        "iblock_0/src",
        "core/iblock_0/src",
        "nosuch/src",
        "user:evil/x",
        "user:/x",
        "user:../x",
        "user:a b/x",
        "user:a/b/c",
        "user:../../etc/passwd",
        "fileio/../../x",
        "ramdisk/../block/src",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for n in [65, 100, 128, 224, 300, 5000] {
        v.push(format!("block/{}", "a".repeat(n)));
        v.push(format!("/backstores/block/{}", "b".repeat(n)));
    }
    v.push(format!("{}/x", "user:".repeat(40)));
    v
}

#[test]
fn hostile_element_names_are_invalid_parameters() {
    let w = world();
    let b = before(&w);
    for name in hostile_names() {
        for ct in [3u16, 4, 5] {
            let r = w.engine.attach_replica(&name, "block/tgt", ct);
            assert_refused_quick(&w, &r, &[5], &format!("source {name:?} ct {ct}"));
            let r = w.engine.attach_replica("block/src", &name, ct);
            assert_refused_quick(&w, &r, &[5], &format!("target {name:?} ct {ct}"));
        }
        let r = w.engine.adopt(&name);
        assert_refused_quick(&w, &r, &[5], &format!("adopt {name:?}"));
        for op in [2u16, 3, 4, 5] {
            let r = w.engine.modify_synchronization(&name, op, false);
            assert_refused_quick(&w, &r, &[5], &format!("modify {name:?} op {op}"));
        }
        assert!(w.engine.job(&name).is_none());
        assert!(w.engine.get_error(&name).is_none());
        let r = w.engine.request_state_change(&name, 4);
        assert_refused_quick(&w, &r, &[5], &format!("stop job {name:?}"));

        // and through the wire format
        let r = rpc(
            &w,
            "AttachReplica",
            json!({"SourceElement": name, "TargetElement": "block/tgt", "CopyType": 3}),
        );
        assert_eq!(r["ReturnValue"], 5, "{name:?}: {r}");
        let r = rpc(&w, "AdoptStorageObject", json!({ "Element": name }));
        assert_eq!(r["ReturnValue"], 5, "{name:?}: {r}");
        assert_eq!(
            w.state(),
            b.state,
            "{name:?}: the tree or the kernel changed"
        );
        assert_eq!(
            w.outside_listing(),
            b.outside,
            "{name:?}: the sentinel changed"
        );
    }
    assert_contained(&w, &b, "hostile names");
    // the honest call still works afterwards
    let r = w.engine.attach_replica("block/src", "block/tgt", 4);
    assert_eq!(r.return_value, 0, "{r:?}");
}

/// LIO takes object names far longer than device-mapper names may be (128 bytes with our
/// prefix); such objects made by someone else are refused with a reason, and the longest name
/// we accept still fits every dm name the engine builds from it.
#[test]
fn names_too_long_for_device_mapper_are_refused_cleanly() {
    let w = world();
    let root = w.root().to_path_buf();
    for (hba, name, disk) in [
        ("iblock_5", "l".repeat(100), 2),
        ("iblock_6", "m".repeat(200), 3),
    ] {
        let so = root.join("core").join(hba).join(&name);
        w.fake.mkdir(so.parent().unwrap()).unwrap();
        w.fake.mkdir(&so).unwrap();
        w.fake
            .write(
                &so.join("control"),
                &format!("udev_path={}", w.disk(disk).display()),
            )
            .unwrap();
        w.fake.write(&so.join("enable"), "1").unwrap();
    }
    // listed (it exists), but never used
    let objs = w.engine.storage_objects().unwrap();
    assert!(objs.iter().any(|o| o.name.len() == 100), "{objs:?}");
    let b = before(&w);
    for name in ["l".repeat(100), "m".repeat(200)] {
        for el in [format!("block/{name}"), format!("/backstores/block/{name}")] {
            for ct in [2u16, 3, 4, 5] {
                let r = w.engine.attach_replica(&el, "block/tgt", ct);
                assert_refused(&w, &b, &r, &[5], &format!("long source ct {ct}"));
                assert!(r.description.unwrap().contains("too long"));
                let r = w.engine.attach_replica("block/src", &el, ct);
                assert_refused(&w, &b, &r, &[5], &format!("long target ct {ct}"));
            }
            let r = w.engine.adopt(&el);
            assert_refused(&w, &b, &r, &[5], "adopt long");
            let r = w
                .engine
                .modify_synchronization(&format!("src/{name}"), 2, false);
            assert_refused(&w, &b, &r, &[5], "modify long");
        }
    }

    // 64 bytes, the longest accepted name: every device-mapper name fits
    let w = World::guarded(&[16 * MB, 16 * MB + 16 * MB]);
    let long_src = "s".repeat(64);
    let long_tgt = "t".repeat(64);
    w.iblock(&long_src, 0);
    w.iblock(&long_tgt, 1);
    for ct in [4u16, 3, 2] {
        let r = w.engine.attach_replica(
            &format!("block/{long_src}"),
            &format!("block/{long_tgt}"),
            ct,
        );
        assert!(
            r.return_value == 0 || r.return_value == 4096,
            "ct {ct}: {r:?}"
        );
        if let Some(j) = &r.job {
            let v = w.engine.jobs().wait(j, Duration::from_secs(20)).unwrap();
            assert_eq!(v.job_state, 7, "{v:?}");
        }
        let rel = r.relationship.unwrap();
        assert_eq!(w.engine.relationships().unwrap().len(), 1);
        let d = w.engine.modify_synchronization(&rel, 2, false);
        assert_eq!(d.return_value, 0, "{d:?}");
    }
    for d in w.sim.list().unwrap() {
        assert!(d.name.as_str().len() < 128, "{}", d.name);
    }
}

#[test]
fn other_plugins_are_not_supported_whatever_the_handler_name() {
    let w = world();
    let root = w.root().to_path_buf();
    // a TCMU (user) backstore and a fileio one, made as the kernel would show them
    let u = root.join("core/user_0/u0");
    w.fake.mkdir(u.parent().unwrap()).unwrap();
    w.fake.mkdir(&u).unwrap();
    w.fake
        .write(
            &u.join("control"),
            "dev_config=rbd/pool/img,dev_size=16777216",
        )
        .unwrap();
    w.fake.write(&u.join("enable"), "1").unwrap();
    let f = root.join("core/fileio_1/f0");
    w.fake.mkdir(f.parent().unwrap()).unwrap();
    w.fake.mkdir(&f).unwrap();
    w.fake
        .write(
            &f.join("control"),
            &format!("fd_dev_name={},fd_dev_size=16777216", w.disk(2).display()),
        )
        .unwrap();
    w.fake.write(&f.join("enable"), "1").unwrap();
    let b = before(&w);
    for el in [
        "user:rbd/u0",
        "user:qcow/u0",
        "/backstores/user:rbd/u0",
        "fileio/f0",
        "/backstores/fileio/f0",
    ] {
        for ct in [2u16, 3, 4, 5] {
            let r = w.engine.attach_replica(el, "block/tgt", ct);
            assert_refused(&w, &b, &r, &[1], &format!("{el} as source"));
            let r = w.engine.attach_replica("block/src", el, ct);
            assert_refused(&w, &b, &r, &[1], &format!("{el} as target"));
        }
        let r = w.engine.adopt(el);
        assert_refused(&w, &b, &r, &[1], &format!("adopt {el}"));
    }
    // a plugin name for an object of another plugin does not exist
    for el in [
        "block/u0",
        "user:rbd/src",
        "fileio/src",
        "ramdisk/f0",
        "pscsi/src",
    ] {
        let r = w.engine.attach_replica(el, "block/tgt", 3);
        assert_refused(&w, &b, &r, &[5], el);
    }
}

/// A symlink where configfs has a storage object or HBA directory is not a storage object,
/// wherever it leads.
#[test]
fn symlinked_storage_objects_do_not_exist() {
    let w = world();
    let g = ghost(&w, 2);
    let core = w.root().join("core");
    symlink(&g, core.join("iblock_0/evil")).unwrap();
    symlink("/etc", core.join("iblock_0/etc")).unwrap();
    symlink(w.outside(), core.join("iblock_1/out")).unwrap();
    // a whole HBA directory leading outside, holding `ghost`
    symlink(g.parent().unwrap(), core.join("iblock_7")).unwrap();
    // and a relative one that climbs out
    let rel = PathBuf::from("../../../..").join(g.strip_prefix("/").unwrap());
    symlink(&rel, core.join("iblock_1/climb")).unwrap();
    let b = before(&w);

    let names: Vec<String> = w
        .engine
        .storage_objects()
        .unwrap()
        .into_iter()
        .map(|o| o.element)
        .collect();
    assert_eq!(
        names,
        vec!["/backstores/block/src", "/backstores/block/tgt"],
        "planted links are not storage objects"
    );
    for el in [
        "block/evil",
        "block/etc",
        "block/out",
        "block/ghost",
        "block/climb",
    ] {
        for ct in [2u16, 3, 4, 5] {
            let r = w.engine.attach_replica(el, "block/tgt", ct);
            assert_refused(&w, &b, &r, &[5], &format!("{el} as source"));
            let r = w.engine.attach_replica("block/src", el, ct);
            assert_refused(&w, &b, &r, &[5], &format!("{el} as target"));
        }
        let r = w.engine.adopt(el);
        assert_refused(&w, &b, &r, &[5], &format!("adopt {el}"));
    }
}

/// LUN and mapped-LUN links that lead outside the root export nothing, and working on the
/// objects beside them touches only what is inside.
#[test]
fn lun_links_leading_outside_are_ignored() {
    let w = world();
    let g = ghost(&w, 2);
    let src = w.cfs.find_storage_object(&Plugin::Block, "src").unwrap();
    let tpg = w.export(&src, "iqn.2003-01.org.example:t");
    for (lun, target) in [
        ("lun_5", g.clone()),
        (
            "lun_6",
            PathBuf::from("../../../../../../../../../..").join(g.strip_prefix("/").unwrap()),
        ),
        ("lun_8", PathBuf::from("/etc")),
        ("lun_9", w.outside().join("secret")),
    ] {
        let d = tpg.join("lun").join(lun);
        w.fake.mkdir(&d).unwrap();
        symlink(&target, d.join("evil")).unwrap();
    }
    // a mapped LUN whose link leads outside
    let acl = tpg.join("acls/iqn.1993-08.org.debian:01:init");
    w.fake.mkdir(&acl.join("lun_9")).unwrap();
    symlink(w.outside().join("dir"), acl.join("lun_9/evil")).unwrap();
    let b = before(&w);

    let views = w.engine.storage_objects().unwrap();
    let v = views.iter().find(|v| v.name == "src").unwrap();
    assert_eq!(
        v.exported_by,
        vec!["iscsi/iqn.2003-01.org.example:t/tpgt_1/lun_3"]
    );
    assert!(views.iter().all(|v| v.name != "ghost"));

    // adoption re-creates the real LUN; the planted ones stay as they were
    let r = w.engine.adopt("block/src");
    assert_eq!(r.return_value, 0, "{r:?}");
    assert_contained(&w, &b, "adopt beside planted LUN links");
    for c in w.fake.calls() {
        let p = c.path.to_string_lossy();
        assert!(
            !p.contains("lun_5") && !p.contains("lun_6") && !p.contains("lun_8"),
            "{c:?}"
        );
        assert!(
            !p.contains("acls/iqn.1993-08.org.debian:01:init/lun_9"),
            "{c:?}"
        );
    }
    for lun in ["lun_5", "lun_6", "lun_8", "lun_9"] {
        assert!(std::fs::symlink_metadata(tpg.join("lun").join(lun).join("evil")).is_ok());
    }
    // a copy of it works and stays inside too
    let r = w.engine.attach_replica("block/src", "block/tgt", 3);
    assert_eq!(r.return_value, 4096, "{r:?}");
    let j = w
        .engine
        .jobs()
        .wait(r.job.as_ref().unwrap(), Duration::from_secs(20))
        .unwrap();
    assert_eq!(j.job_state, 7, "{j:?}");
    assert_eq!(
        w.engine
            .modify_synchronization("src/tgt", 2, false)
            .return_value,
        0
    );
    assert_contained(&w, &b, "copy beside planted LUN links");
}

/// Attribute files replaced by symlinks (to the sentinel, to /etc) are neither read through
/// nor written through; an object in that state is refused or handled without leaving the
/// root, and a refusal leaves everything as it was.
#[test]
fn symlinked_attribute_files_are_not_followed() {
    let w = world();
    let so = w.root().join("core/iblock_0/src");
    let secret = w.outside().join("secret");
    for (attr, target) in [
        ("attrib/emulate_tpu", secret.clone()),
        ("attrib/queue_depth", PathBuf::from("/etc/hostname")),
        ("wwn/vendor_id", secret.clone()),
        ("alias", secret.clone()),
    ] {
        let p = so.join(attr);
        std::fs::remove_file(&p).unwrap();
        symlink(&target, &p).unwrap();
    }
    let src = w.cfs.find_storage_object(&Plugin::Block, "src").unwrap();
    assert!(!src.attributes.contains_key("emulate_tpu"), "{src:?}");
    assert!(!src.attributes.contains_key("queue_depth"), "{src:?}");
    let b = before(&w);
    for (what, r) in [
        ("adopt", w.engine.adopt("block/src")),
        ("sync", w.engine.attach_replica("block/src", "block/tgt", 3)),
        (
            "snapshot",
            w.engine.attach_replica("block/src", "block/tgt", 4),
        ),
    ] {
        // the fake kernel refuses to remove a directory holding a link (as configfs would
        // never hold one): a kernel refusal, rolled back
        assert_refused(&w, &b, &r, &[4, 5], what);
    }

    // the same for the target of a copy, and for files the daemon reads to identify objects
    let w = world();
    let so = w.root().join("core/iblock_1/tgt");
    for (attr, target) in [
        ("info", secret.clone()),
        ("udev_path", PathBuf::from("/etc/passwd")),
        ("wwn/vpd_unit_serial", secret.clone()),
        ("enable", secret.clone()),
    ] {
        let p = so.join(attr);
        std::fs::remove_file(&p).unwrap();
        symlink(&target, &p).unwrap();
    }
    let tgt = w.cfs.find_storage_object(&Plugin::Block, "tgt").unwrap();
    assert_eq!(tgt.wwn, None, "{tgt:?}");
    assert_ne!(tgt.udev_path.as_deref(), Some("do not touch"), "{tgt:?}");
    let b = before(&w);
    for (what, r) in [
        ("adopt", w.engine.adopt("block/tgt")),
        ("sync", w.engine.attach_replica("block/src", "block/tgt", 3)),
        (
            "snapshot",
            w.engine.attach_replica("block/src", "block/tgt", 4),
        ),
    ] {
        assert_refused(&w, &b, &r, &[4, 5], what);
    }
}

/// The groups configfs has at fixed names (`core`, a TPG's `lun` and `acls`) replaced by
/// symlinks leading outside: nothing behind them is read as part of the tree, so nothing
/// behind them is changed.
#[test]
fn symlinked_group_directories_are_not_followed() {
    // a TPG's `lun` directory leading outside, holding a LUN whose link (relative, as configfs
    // writes them) names `src` inside the root
    let w = world();
    let tpg = w
        .cfs
        .create_tpg("iscsi", "iqn.2003-01.org.example:t", 1)
        .unwrap();
    w.cfs.set_tpg_enabled(&tpg, true).unwrap();
    let luns = w.outside().join("luns");
    std::fs::create_dir_all(luns.join("lun_0")).unwrap();
    symlink("../../../../../core/iblock_0/src", luns.join("lun_0/lnk")).unwrap();
    std::fs::remove_dir(tpg.join("lun")).unwrap();
    symlink(&luns, tpg.join("lun")).unwrap();
    // and its `acls` directory, with a mapped LUN
    let acls = w.outside().join("acls");
    std::fs::create_dir_all(acls.join("iqn.1993-08.org.debian:01:init/lun_0")).unwrap();
    symlink(
        "../../../lun/lun_0",
        acls.join("iqn.1993-08.org.debian:01:init/lun_0/mlnk"),
    )
    .unwrap();
    std::fs::write(
        acls.join("iqn.1993-08.org.debian:01:init/lun_0/write_protect"),
        "0\n",
    )
    .unwrap();
    std::fs::remove_dir(tpg.join("acls")).unwrap();
    symlink(&acls, tpg.join("acls")).unwrap();
    let b = before(&w);
    let views = w.engine.storage_objects().unwrap();
    let v = views.iter().find(|v| v.name == "src").unwrap();
    assert!(v.exported_by.is_empty(), "{v:?}");
    // The fake kernel, like the daemon before, counts the planted link as an export and
    // refuses to remove `src` (EBUSY): either outcome is fine as long as nothing outside
    // changes and a refusal leaves nothing behind.
    for (what, r) in [
        ("adopt", w.engine.adopt("block/src")),
        ("sync", w.engine.attach_replica("block/src", "block/tgt", 3)),
    ] {
        if r.return_value == 0 || r.return_value == 4096 {
            assert_contained(&w, &b, what);
        } else {
            assert_refused(&w, &b, &r, &[4], what);
        }
    }
    assert!(
        luns.join("lun_0/lnk").is_symlink()
            && acls
                .join("iqn.1993-08.org.debian:01:init/lun_0/mlnk")
                .is_symlink()
    );

    // the whole of `core` leading to another tree
    let w = world();
    let g = ghost(&w, 2);
    let other_core = g.parent().unwrap().parent().unwrap().to_path_buf();
    std::fs::rename(w.root().join("core"), w.dir.path().join("core.real")).unwrap();
    symlink(&other_core, w.root().join("core")).unwrap();
    let b = before(&w);
    let r = w.engine.storage_objects();
    assert!(
        r.as_ref().map_or(true, |v| v.is_empty()),
        "objects behind a symlinked core: {r:?}"
    );
    for (what, r) in [
        ("adopt", w.engine.adopt("block/ghost")),
        (
            "as source",
            w.engine.attach_replica("block/ghost", "block/src", 4),
        ),
        (
            "as target",
            w.engine.attach_replica("block/src", "block/ghost", 4),
        ),
    ] {
        assert_refused(&w, &b, &r, &[4, 5], what);
    }
}
