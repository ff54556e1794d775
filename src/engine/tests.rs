//! Engine tests on a fake configfs tree and the simulated device-mapper: the tables each copy
//! type loads and in what order, every return value, rollback after a failure injected at
//! every step, adoption keeping identity, rediscovery, conflicts and job states.

use super::*;
use crate::configfs::fake::fake_tree;
use crate::configfs::FsOps;
use crate::dm::{Devno, SimDm, SimOp, SyncStep};
use crate::names::Plugin;
use crate::service::{JobState, Service, SyncState};
use crate::testing::world::{fast_options, World, MB};
use std::time::Duration;

/// Short suspends; [`state_opts`] adds the journal in the world's `state` directory, as every
/// engine test keeps one (they restart engines on the same world).
fn opts() -> Options {
    Options {
        suspend_timeout: Duration::from_millis(200),
        ..fast_options()
    }
}

fn state_opts(dir: &std::path::Path) -> Options {
    Options {
        state_dir: Some(dir.join("state")),
        ..opts()
    }
}

/// Disks `d0..dN` of the given sizes (sectors), an engine journalling under `state`.
fn world(sizes: &[u64]) -> World {
    World::builder(sizes).options(opts()).state_dir().build()
}

#[test]
fn sync_loads_a_mirror_and_the_job_follows_the_kernel() {
    let w = world(&[64 * MB, 64 * MB]);
    w.iblock("src", 0);
    w.iblock("tgt", 1);
    w.sim.set_sync_step(SyncStep::Percent(10));
    let r = w.attach("/backstores/block/src", "block/tgt", 3);
    assert_eq!(r.return_value, 4096, "{r:?}");
    let job = w.wait_job(r.job.as_ref().unwrap());
    assert_eq!(job.job_state, JobState::Completed.value(), "{job:?}");
    assert_eq!(job.percent_complete, 100);
    assert_eq!(job.relationship.as_deref(), Some("src/tgt"));
    let rels = w.rels();
    assert_eq!(rels.len(), 1);
    assert_eq!(rels[0].sync_state, 6, "{rels:?}");
    assert_eq!(rels[0].copy_type, 3);
    assert!(rels[0].when_synced.is_some());
    // the tables, and the order of the kernel changes
    let t = w.table_of("real-src");
    assert!(
        t.contains("mirror core 1 4096 2 8:0 0 8:16 0 1 handle_errors"),
        "{t}"
    );
    assert!(w.table_of("so-tgt").contains("linear 8:16 0"));
    assert!(w
        .table_of("rec3-tgt")
        .contains("0 1 linear 8:16 0\n1 1 linear 8:0 0"));
    let ops: Vec<String> = w
        .sim
        .calls()
        .iter()
        .filter(|c| c.ok)
        .map(|c| format!("{:?} {}", c.op, c.name))
        .collect();
    let want = [
        "Create lio-replica-v1-so-src",
        "Create lio-replica-v1-so-tgt",
        "Create lio-replica-v1-rec3-tgt",
        "Create lio-replica-v1-real-src",
        "Suspend lio-replica-v1-so-src",
        "Load lio-replica-v1-so-src",
        "Resume lio-replica-v1-so-src",
        "Suspend lio-replica-v1-real-src",
        "Load lio-replica-v1-real-src",
        "Resume lio-replica-v1-real-src",
    ];
    let got: Vec<&str> = ops
        .iter()
        .map(String::as_str)
        .filter(|o| !o.starts_with("Status") && !o.starts_with("Wait"))
        .collect();
    assert_eq!(got, want);
    // both backstores now sit on our devices
    let so = w.cfs.find_storage_object(&Plugin::Block, "src").unwrap();
    assert_eq!(
        so.udev_path.as_deref(),
        Some(
            w.sim
                .device_path(&DmName::new("so-src").unwrap())
                .unwrap()
                .to_str()
                .unwrap()
        )
    );
}

#[test]
fn return_values_and_reasons() {
    let w = world(&[64 * MB, 64 * MB, 32 * MB, 64 * MB, 64 * MB]);
    w.iblock("src", 0);
    w.iblock("tgt", 1);
    w.iblock("small", 2);
    let exp = w.iblock("exported", 3);
    w.export(&exp, "iqn.2003-01.org.example:exp");
    let before = w.state();
    let cases: &[(&str, &str, u16, u32, &str)] = &[
        ("block/src", "block/tgt", 0, 5, "CopyType 0 is not valid"),
        ("block/src", "block/tgt", 1, 5, "CopyType 1 is not valid"),
        ("block/src", "block/tgt", 6, 5, "CopyType 6"),
        ("block/src", "block/tgt", 32767, 5, "CopyType 32767"),
        ("block/src", "block/tgt", 32768, 1, "vendor-specific"),
        ("block/src", "block/tgt", 65535, 1, "vendor-specific"),
        ("block/src", "", 3, 5, "missing TargetElement"),
        (
            "block/nosuch",
            "block/tgt",
            3,
            5,
            "source element /backstores/block/nosuch does not exist",
        ),
        ("block/src", "block/nosuch", 3, 5, "target element"),
        ("block/src", "/backstores/block/src", 3, 5, "same element"),
        ("block/src", "block/small", 3, 5, "smaller than source"),
        (
            "block/src",
            "block/exported",
            3,
            6,
            "exported through iscsi/iqn.2003-01.org.example:exp/tpgt_1/lun_3",
        ),
        ("block/../etc", "block/tgt", 3, 5, "not of the form"),
        (
            "block/src",
            "block/tgt",
            2,
            5,
            "too small for an Async copy",
        ),
    ];
    for (s, t, ct, code, why) in cases {
        let r = w.attach(s, t, *ct);
        assert_eq!(r.return_value, *code, "{s} {t} {ct}: {r:?}");
        let d = r.description.unwrap_or_default();
        assert!(d.contains(why), "{s} {t} {ct}: {d:?} lacks {why:?}");
        assert_eq!(w.state(), before, "{s} {t} {ct} changed something");
    }
}

#[test]
fn other_plugins_are_not_supported() {
    let w = world(&[64 * MB]);
    w.iblock("tgt", 0);
    let f = w.cfs.root().join("core/fileio_0/f0");
    w.fake.mkdir(f.parent().unwrap()).unwrap();
    w.fake.mkdir(&f).unwrap();
    let file = w.dir.path().join("f0.img");
    std::fs::File::create(&file)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    w.fake
        .write(
            &f.join("control"),
            &format!("fd_dev_name={},fd_dev_size={}", file.display(), 64 << 20),
        )
        .unwrap();
    w.fake.write(&f.join("enable"), "1").unwrap();
    let r = w.attach("fileio/f0", "block/tgt", 3);
    assert_eq!(r.return_value, 1, "{r:?}");
    assert!(r.description.unwrap().contains("fileio backstore"));
    let r = w.engine.adopt("fileio/f0");
    assert_eq!(r.return_value, 1, "{r:?}");
}

#[test]
fn adoption_keeps_identity_and_is_idempotent() {
    let w = world(&[64 * MB]);
    let so = w.iblock("src", 0);
    let tpg = w.export(&so, "iqn.2003-01.org.example:t");
    let before = w.cfs.find_storage_object(&Plugin::Block, "src").unwrap();
    let r = w.engine.adopt("block/src");
    assert_eq!(r.return_value, 0, "{r:?}");
    let after = w.cfs.find_storage_object(&Plugin::Block, "src").unwrap();
    assert_eq!(after.hba, before.hba);
    assert_eq!(after.wwn, before.wwn);
    assert_eq!(after.attributes, before.attributes);
    assert_eq!(after.readonly, before.readonly);
    assert!(after.enabled);
    assert_ne!(after.udev_path, before.udev_path);
    let t = &w.cfs.targets().unwrap()[0];
    let tpg_now = &t.tpgs[0];
    assert_eq!(tpg_now.path, tpg);
    assert!(tpg_now.enabled);
    assert_eq!(tpg_now.luns.len(), 1);
    assert_eq!(tpg_now.luns[0].index, 3);
    assert_eq!(tpg_now.luns[0].link_name, "lnk_x");
    assert_eq!(
        tpg_now.luns[0].storage_object,
        Some((before.hba.clone(), "src".to_string()))
    );
    let m = &tpg_now.acls[0].mapped_luns[0];
    assert_eq!((m.index, m.tpg_lun, m.write_protect), (7, 3, true));
    assert!(w.table_of("so-src").contains("linear 8:0 0"));
    let views = w.engine.storage_objects().unwrap();
    let v = views.iter().find(|v| v.name == "src").unwrap();
    assert!(v.adopted, "{v:?}");
    assert_eq!(
        v.exported_by,
        vec!["iscsi/iqn.2003-01.org.example:t/tpgt_1/lun_3"]
    );
    // again: nothing changes
    let s1 = w.state();
    assert_eq!(w.engine.adopt("block/src").return_value, 0);
    assert_eq!(w.state(), s1);
}

fn ids(rels: &[RelationshipView]) -> Vec<String> {
    rels.iter().map(|r| r.instance_id.clone()).collect()
}

/// Run `op` in a fresh world once to count the kernel changes, then once per change with a
/// failure injected there: every run must fail and leave the world exactly as it was.
fn rollback_at_every_step(
    sizes: &[u64],
    setup: impl Fn(&World),
    op: impl Fn(&World) -> MethodResult,
) {
    let w = world(sizes);
    setup(&w);
    // as in the runs below: a job the op starts must not finish (and split its copy) while
    // the op's own calls are counted
    w.sim.set_sync_step(SyncStep::Percent(0));
    let (dm0, fs0) = (w.sim.mutating_call_count(), w.fake.calls().len());
    let r = op(&w);
    assert!(r.return_value == 0 || r.return_value == 4096, "{r:?}");
    let dm_steps = w.sim.mutating_call_count() - dm0;
    let fs_steps = w.fake.calls().len() - fs0;
    assert!(dm_steps > 0 && fs_steps > 0);
    for (kind, steps) in [("dm", dm_steps as usize), ("configfs", fs_steps)] {
        for k in 1..=steps {
            let w = world(sizes);
            setup(&w);
            w.sim.set_sync_step(SyncStep::Percent(0));
            let before = w.state();
            let rels_before = ids(&w.rels());
            if kind == "dm" {
                w.sim.fail_at_call(k as u64);
            } else {
                w.fake.fail_at_call(k);
            }
            let r = op(&w);
            w.sim.fail_at_call(0);
            if r.return_value == 0 || r.return_value == 4096 {
                // only a step whose failure does not matter may be tolerated: removing an
                // emptied HBA directory (it is reused when the object is re-created)
                let failed: Vec<_> = w.fake.calls().into_iter().filter(|c| c.failed).collect();
                assert!(
                    kind == "configfs"
                        && failed.len() == 1
                        && failed[0].op == crate::configfs::fake::FakeOp::Rmdir
                        && failed[0].path.parent().is_some_and(|p| p.ends_with("core")),
                    "{kind} step {k}/{steps} did not fail the operation: {failed:?}"
                );
                continue;
            }
            assert!(
                r.return_value == 4 || r.return_value == 2,
                "{kind} step {k}/{steps}: {r:?}"
            );
            assert!(r.description.is_some());
            assert_eq!(
                w.state(),
                before,
                "{kind} step {k}/{steps} left something behind: {r:?}"
            );
            assert_eq!(ids(&w.rels()), rels_before, "{kind} step {k}/{steps}");
        }
    }
}

fn exported_pair(w: &World) {
    let so = w.iblock("src", 0);
    w.export(&so, "iqn.2003-01.org.example:src");
    w.iblock("tgt", 1);
}

#[test]
fn rollback_sync() {
    rollback_at_every_step(&[64 * MB, 64 * MB], exported_pair, |w| {
        w.attach("block/src", "block/tgt", 3)
    });
}

#[test]
fn rollback_snapshot() {
    rollback_at_every_step(&[64 * MB, 64 * MB], exported_pair, |w| {
        w.attach("block/src", "block/tgt", 4)
    });
}

#[test]
fn rollback_async() {
    rollback_at_every_step(&[64 * MB, 65 * MB], exported_pair, |w| {
        w.attach("block/src", "block/tgt", 2)
    });
}

#[test]
fn rollback_adoption() {
    rollback_at_every_step(&[64 * MB, 64 * MB], exported_pair, |w| {
        w.engine.adopt("block/src")
    });
}

#[test]
fn suspend_timeout_is_return_value_3_and_rolls_back() {
    let w = world(&[64 * MB, 64 * MB]);
    exported_pair(&w);
    w.engine.adopt("block/src");
    w.engine.adopt("block/tgt");
    let before = w.state();
    w.sim.set_suspend_hangs(true);
    let r = w.attach("block/src", "block/tgt", 3);
    assert_eq!(r.return_value, 3, "{r:?}");
    w.sim.set_suspend_hangs(false);
    assert_eq!(w.state(), before);
}

#[test]
fn snapshot_is_done_at_return_and_reports_cow_usage() {
    let w = world(&[64 * MB, 64 * MB]);
    exported_pair(&w);
    let r = w.attach("block/src", "block/tgt", 4);
    assert_eq!((r.return_value, r.job.as_deref()), (0, None), "{r:?}");
    assert_eq!(r.relationship.as_deref(), Some("src/tgt"));
    let real = w
        .sim
        .info(&DmName::new("real-src").unwrap())
        .unwrap()
        .unwrap();
    assert!(w.table_of("real-src").contains("linear 8:0 0"));
    assert!(w
        .table_of("so-src")
        .contains(&format!("snapshot-origin {}", real.devno())));
    assert!(w
        .table_of("so-tgt")
        .contains(&format!("snapshot {} 8:16 P 8", real.devno())));
    let tgt = DmName::new("so-tgt").unwrap();
    w.sim.set_snapshot_usage(&tgt, 8 * MB).unwrap();
    let v = &w.rels()[0];
    assert_eq!(v.sync_state, 11, "{v:?}");
    assert!(v.cow_used_sectors.unwrap() >= 8 * MB);
    w.sim
        .set_snapshot_status(&tgt, crate::dm::SnapshotStatus::Invalid)
        .unwrap();
    let v = &w.rels()[0];
    assert_eq!(v.sync_state, 12, "{v:?}");
    assert!(v
        .progress_status
        .as_ref()
        .unwrap()
        .contains("source is unaffected"));
    // detach: both back on linear, record gone
    let m = w.engine.modify_synchronization("src/tgt", 2, false);
    assert_eq!(m.return_value, 0, "{m:?}");
    assert!(w.table_of("so-src").contains("linear"));
    assert!(w.table_of("so-tgt").contains("linear 8:16 0"));
    assert!(w.rels().is_empty());
    assert!(w
        .sim
        .info(&DmName::new("rec4-tgt").unwrap())
        .unwrap()
        .is_none());
}

#[test]
fn snapshot_resync_takes_a_new_point_in_time() {
    let w = world(&[64 * MB, 64 * MB]);
    exported_pair(&w);
    assert_eq!(w.attach("block/src", "block/tgt", 4).return_value, 0);
    let tgt = DmName::new("so-tgt").unwrap();
    w.sim.set_snapshot_usage(&tgt, 8 * MB).unwrap();
    let m = w.engine.modify_synchronization("src/tgt", 4, false);
    assert_eq!(m.return_value, 0, "{m:?}");
    let v = &w.rels()[0];
    assert_eq!(v.sync_state, 11);
    assert!(v.cow_used_sectors.unwrap() < 8 * MB, "{v:?}");
}

#[test]
fn clone_splits_at_the_end_and_leaves_no_relationship() {
    let w = world(&[64 * MB, 64 * MB]);
    exported_pair(&w);
    let r = w.attach("block/src", "block/tgt", 5);
    assert_eq!(r.return_value, 4096, "{r:?}");
    let j = w.wait_job(r.job.as_ref().unwrap());
    assert_eq!(j.job_state, 7, "{j:?}");
    assert_eq!(j.percent_complete, 100);
    assert!(w.rels().is_empty());
    assert!(w.table_of("so-src").contains("linear 8:0 0"));
    assert!(w
        .sim
        .info(&DmName::new("rec5-tgt").unwrap())
        .unwrap()
        .is_none());
}

#[test]
fn async_uses_raid1_write_mostly_with_the_target_legs_metadata_on_the_target_tail() {
    let w = world(&[64 * MB, 65 * MB]);
    exported_pair(&w);
    let r = w.attach("block/src", "block/tgt", 2);
    assert_eq!(r.return_value, 4096, "{r:?}");
    assert_eq!(w.wait_job(r.job.as_ref().unwrap()).job_state, 7);
    let t = w.table_of("real-src");
    assert!(t.contains("raid raid1"), "{t}");
    assert!(t.contains("write_mostly 1"), "{t}");
    assert!(t.contains("max_write_behind"), "{t}");
    // zeroed metadata makes a new array, resynchronised in full from the source leg
    assert!(!t.contains("rebuild"), "{t}");
    // the source leg's in a file of the state directory, not on the target's disk
    let file = w.dir.path().join("state/raid-meta/meta0-src.img");
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 64 * 512);
    assert!(w.table_of("meta0-src").contains("64 linear 7:0 0"));
    assert!(w
        .table_of("meta1-src")
        .contains(&format!("64 linear 8:16 {}", 64 * MB + 64)));
    let v = &w.rels()[0];
    assert_eq!((v.copy_type, v.sync_state), (2, 6), "{v:?}");
    assert_eq!(v.max_lag_writes, Some(256));
    assert_eq!(
        w.engine
            .modify_synchronization("src/tgt", 2, false)
            .return_value,
        0
    );
    assert!(w
        .sim
        .info(&DmName::new("meta0-src").unwrap())
        .unwrap()
        .is_none());
    assert!(!file.exists(), "{}", file.display());
    assert!(w.table_of("so-src").contains("linear"));
}

#[test]
fn without_a_state_directory_both_metadata_areas_are_on_the_target() {
    let w = World::builder(&[64 * MB, 65 * MB]).options(opts()).build();
    exported_pair(&w);
    assert_eq!(w.attach("block/src", "block/tgt", 2).return_value, 4096);
    assert!(w
        .table_of("meta0-src")
        .contains(&format!("64 linear 8:16 {}", 64 * MB)));
    assert!(w
        .table_of("meta1-src")
        .contains(&format!("64 linear 8:16 {}", 64 * MB + 64)));
}

#[test]
fn terminate_rolls_the_relationship_back() {
    for (req, state) in [(4u16, 8u16), (5, 9)] {
        let w = world(&[64 * MB, 64 * MB]);
        exported_pair(&w);
        w.sim.set_sync_step(SyncStep::Percent(0));
        let r = w.attach("block/src", "block/tgt", 3);
        let job = r.job.unwrap();
        let s = w.engine.request_state_change(&job, req);
        assert_eq!(s.return_value, 0, "{s:?}");
        let j = w.engine.job(&job).unwrap();
        assert_eq!(j.job_state, state);
        assert!(w.table_of("so-src").contains("linear 8:0 0"));
        assert!(w.rels().is_empty());
        assert!(w
            .sim
            .info(&DmName::new("rec3-tgt").unwrap())
            .unwrap()
            .is_none());
        // the job is over: a second request is refused
        assert_eq!(w.engine.request_state_change(&job, req).return_value, 5);
    }
}

#[test]
fn leg_failure_breaks_the_relationship_and_the_job() {
    let w = world(&[64 * MB, 64 * MB]);
    exported_pair(&w);
    w.sim.set_sync_step(SyncStep::Percent(0));
    let r = w.attach("block/src", "block/tgt", 3);
    w.sim
        .set_leg_failed(&DmName::new("real-src").unwrap(), 1)
        .unwrap();
    let j = w.wait_job(r.job.as_ref().unwrap());
    assert_eq!(j.job_state, 10, "{j:?}");
    assert_eq!(j.error_code, 4);
    let d = j.error_description.unwrap();
    assert!(d.contains("leg 1") && d.contains("dropped"), "{d}");
    assert_eq!(w.rels()[0].sync_state, 12);
    // the failed leg is gone: the source alone on linear, entered with a noflush suspend so
    // the writes the mirror held go on to the source
    assert!(w.table_of("real-src").contains("linear 8:0 0"));
    let suspend = w
        .sim
        .calls()
        .into_iter()
        .rfind(|c| c.op == SimOp::Suspend && c.name.ends_with("real-src"))
        .unwrap();
    assert_eq!(suspend.detail, "noflush");
    assert_eq!(
        w.engine.get_error(r.job.as_ref().unwrap()),
        Some(
            w.engine
                .job(r.job.as_ref().unwrap())
                .unwrap()
                .error_description
        )
    );
}

#[test]
fn fracture_and_resync() {
    let w = world(&[64 * MB, 64 * MB]);
    exported_pair(&w);
    let r = w.attach("block/src", "block/tgt", 3);
    w.wait_job(r.job.as_ref().unwrap());
    assert_eq!(
        w.engine
            .modify_synchronization("block/tgt", 3, false)
            .return_value,
        0
    );
    assert_eq!(w.rels()[0].sync_state, 13);
    assert!(
        !w.rels()[0].change_tracking,
        "a Sync mirror keeps no change log"
    );
    assert!(w.table_of("real-src").contains("linear"));
    // fracturing twice is invalid
    assert_eq!(
        w.engine
            .modify_synchronization("src/tgt", 3, false)
            .return_value,
        5
    );
    let m = w.engine.modify_synchronization("src/tgt", 4, false);
    assert_eq!(m.return_value, 4096, "{m:?}");
    assert_eq!(w.wait_job(m.job.as_ref().unwrap()).job_state, 7);
    assert_eq!(w.rels()[0].sync_state, 6);
    // Restore needs a fractured mirror
    assert_eq!(
        w.engine
            .modify_synchronization("src/tgt", 5, false)
            .return_value,
        5
    );
    assert_eq!(
        w.engine
            .modify_synchronization("src/tgt", 9, false)
            .return_value,
        5
    );
    assert_eq!(
        w.engine
            .modify_synchronization("nosuch", 2, false)
            .return_value,
        5
    );
}

/// The tables loaded into `real-src` since the calls were last cleared.
fn real_loads(w: &World) -> Vec<String> {
    w.sim
        .calls()
        .into_iter()
        .filter(|c| c.ok && (c.op == SimOp::Load) && c.name.ends_with("real-src"))
        .map(|c| c.detail)
        .collect()
}

#[test]
fn a_raid1_fracture_tracks_changes_and_its_resync_copies_only_them() {
    // Async, and Sync on a raid1 (its target has the room)
    for ct in [2u16, 3] {
        let w = world(&[64 * MB, 65 * MB]);
        exported_pair(&w);
        let r = w.attach("block/src", "block/tgt", ct);
        assert_eq!(w.wait_job(r.job.as_ref().unwrap()).job_state, 7);
        let full = w.table_of("real-src");
        assert_eq!(
            w.engine
                .modify_synchronization("src/tgt", 3, false)
                .return_value,
            0
        );
        // the target leg left out: md keeps the source serving, the bitmap marks what changes
        let fractured = w.table_of("real-src");
        assert!(fractured.ends_with(" 8:0 - -"), "{fractured}");
        let v = &w.rels()[0];
        assert_eq!(v.sync_state, SyncState::Fractured.value(), "{v:?}");
        assert!(v.change_tracking);
        assert!(
            v.progress_status.as_deref().unwrap().contains("bitmap"),
            "{v:?}"
        );
        assert_eq!(
            w.engine
                .modify_synchronization("src/tgt", 3, false)
                .return_value,
            5
        );
        // Resync: the leg back in, the metadata kept (no linear in between, no rebuild)
        w.sim.clear_calls();
        let m = w.engine.modify_synchronization("src/tgt", 4, false);
        assert_eq!(m.return_value, 4096, "{m:?}");
        let loads = real_loads(&w);
        assert_eq!(loads.len(), 1, "{loads:?}");
        assert!(
            loads[0].contains("raid raid1") && !loads[0].contains("rebuild"),
            "{loads:?}"
        );
        assert_eq!(w.table_of("real-src"), full);
        assert_eq!(w.wait_job(m.job.as_ref().unwrap()).job_state, 7);
        assert_eq!(w.rels()[0].sync_state, 6);

        // a target written while fractured: everything is copied again, from new metadata
        assert_eq!(
            w.engine
                .modify_synchronization("src/tgt", 3, false)
                .return_value,
            0
        );
        w.sim
            .add_sectors_written(&DmName::new("so-tgt").unwrap(), 8);
        w.sim.clear_calls();
        let m = w.engine.modify_synchronization("src/tgt", 4, false);
        assert_eq!(m.return_value, 4096, "{m:?}");
        let loads = real_loads(&w);
        assert_eq!(loads.len(), 2, "{loads:?}");
        assert!(
            loads[0].contains(" linear 8:0 0"),
            "the raid1 lets go of its metadata first: {loads:?}"
        );
        assert_eq!(w.table_of("real-src"), full);
        assert_eq!(w.wait_job(m.job.as_ref().unwrap()).job_state, 7);

        // a new daemon does not know what was written meanwhile: a full copy too
        assert_eq!(
            w.engine
                .modify_synchronization("src/tgt", 3, false)
                .return_value,
            0
        );
        let e2 = Engine::new(w.cfs.clone(), w.sim.clone(), opts()).unwrap();
        let rels = e2.relationships().unwrap();
        assert_eq!(rels[0].sync_state, SyncState::Fractured.value(), "{rels:?}");
        w.sim.clear_calls();
        let m = e2.modify_synchronization("src/tgt", 4, false);
        assert_eq!(m.return_value, 4096, "{m:?}");
        assert_eq!(real_loads(&w).len(), 2);
        // Detach of a fractured one: the source back on its disk, the metadata gone
        let j = e2
            .jobs()
            .wait(m.job.as_ref().unwrap(), Duration::from_secs(20))
            .unwrap();
        assert_eq!(j.job_state, 7, "{j:?}");
        assert_eq!(
            e2.modify_synchronization("src/tgt", 3, false).return_value,
            0
        );
        assert_eq!(
            e2.modify_synchronization("src/tgt", 2, false).return_value,
            0
        );
        assert!(w.table_of("so-src").contains("linear 8:0 0"));
        assert!(w
            .sim
            .info(&DmName::new("meta0-src").unwrap())
            .unwrap()
            .is_none());
    }
}

#[test]
fn relationships_are_rediscovered_by_a_new_daemon() {
    let w = world(&[64 * MB, 64 * MB, 64 * MB, 64 * MB]);
    exported_pair(&w);
    w.iblock("a", 2);
    w.iblock("b", 3);
    let r = w.attach("block/src", "block/tgt", 3);
    w.wait_job(r.job.as_ref().unwrap());
    assert_eq!(w.attach("block/a", "block/b", 4).return_value, 0);
    let mut before = w.rels();
    let e2 = Engine::new(w.cfs.clone(), w.sim.clone(), opts()).unwrap();
    let mut after = e2.relationships().unwrap();
    for v in before.iter_mut().chain(after.iter_mut()) {
        v.when_synced = None; // kept in memory only
    }
    assert_eq!(after, before);
    // and it can end them
    assert_eq!(e2.modify_synchronization("a/b", 2, false).return_value, 0);
    assert_eq!(
        e2.modify_synchronization("src/tgt", 2, false).return_value,
        0
    );
    assert!(e2.relationships().unwrap().is_empty());
}

#[test]
fn a_copy_in_progress_is_finished_by_a_new_daemon() {
    let w = world(&[64 * MB, 64 * MB]);
    exported_pair(&w);
    w.sim.set_sync_step(SyncStep::Percent(0));
    // the first daemon dies before its job could finish: its job stops following (here: a
    // status read fails) and leaves the kernel as it is, mirror still syncing
    let r = w.attach("block/src", "block/tgt", 5);
    assert_eq!(r.return_value, 4096);
    w.sim.fail_next(
        SimOp::Status,
        Some("real-src"),
        Error::Other("the daemon died".into()),
    );
    let j1 = w.wait_job(r.job.as_ref().unwrap());
    assert_eq!(j1.job_state, 10, "{j1:?}");
    assert!(w.table_of("real-src").contains("mirror"));
    let e2 = Engine::new(w.cfs.clone(), w.sim.clone(), opts()).unwrap();
    w.sim.set_sync_step(SyncStep::Percent(50));
    let jobs = e2.jobs().list();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let j = e2
        .jobs()
        .wait(&jobs[0].instance_id, Duration::from_secs(20))
        .unwrap();
    assert_eq!(j.job_state, 7, "{j:?}");
    assert!(e2.relationships().unwrap().is_empty());
    assert!(w.table_of("so-src").contains("linear"));
}

#[test]
fn conflicting_attaches_exactly_one_wins() {
    // two mirrors of one source at once: whichever comes first, the other is refused
    for _ in 0..10 {
        let w = Arc::new(world(&[64 * MB, 64 * MB, 64 * MB]));
        w.iblock("src", 0);
        w.iblock("t1", 1);
        w.iblock("t2", 2);
        w.sim.set_sync_step(SyncStep::Percent(0));
        let handles: Vec<_> = ["block/t1", "block/t2"]
            .into_iter()
            .map(|t| {
                let w = w.clone();
                std::thread::spawn(move || w.attach("block/src", t, 3).return_value)
            })
            .collect();
        let mut codes: Vec<u32> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        codes.sort();
        assert_eq!(codes, vec![6, 4096]);
        assert_eq!(w.rels().len(), 1);
    }
}

#[test]
fn element_in_a_relationship_is_in_use() {
    let w = world(&[64 * MB; 4]);
    exported_pair(&w);
    w.iblock("t2", 2);
    w.iblock("t3", 3);
    assert_eq!(w.attach("block/src", "block/tgt", 4).return_value, 0);
    // a target is in one relationship
    let r = w.attach("block/t2", "block/tgt", 3);
    assert_eq!(r.return_value, 6);
    assert!(r
        .description
        .unwrap()
        .contains("target /backstores/block/tgt is already in relationship src/tgt"));
    // no cascading: a replica is not a source
    let r = w.attach("block/tgt", "block/t2", 4);
    assert_eq!(r.return_value, 6);
    assert!(r.description.unwrap().contains("no cascading"));
    // one mirror beside the snapshots, not two
    assert_eq!(w.attach("block/src", "block/t2", 3).return_value, 4096);
    let r = w.attach("block/src", "block/t3", 2);
    assert_eq!(r.return_value, 6);
    assert!(r
        .description
        .unwrap()
        .contains("already replicated by relationship src/t2"));
    // a job still copying keeps ModifySynchronization off
    let w = world(&[64 * MB, 64 * MB]);
    exported_pair(&w);
    w.sim.set_sync_step(SyncStep::Percent(0));
    let r = w.attach("block/src", "block/tgt", 3);
    let m = w.engine.modify_synchronization("src/tgt", 2, false);
    assert_eq!(m.return_value, 6, "{m:?}");
    w.engine.request_state_change(r.job.as_ref().unwrap(), 4);
}

#[test]
fn unknown_jobs() {
    let w = world(&[]);
    assert!(w.engine.job("job-1").is_none());
    assert!(w.engine.get_error("nope").is_none());
    assert_eq!(w.engine.request_state_change("job-9", 4).return_value, 5);
}

/// Where a crash can happen: a substring of every kind of plan step.
const CRASH_POINTS: &[&str] = &[
    "disable ",
    "delete mapped LUN",
    "delete LUN",
    "delete storage object",
    "create lio-replica-v1-so-",
    "create storage object",
    "create LUN",
    "create mapped LUN",
    "enable ",
    "adopt /backstores/block/src",
    "adopt /backstores/block/tgt",
    "create lio-replica-v1-rec",
    "create lio-replica-v1-real",
    "create lio-replica-v1-meta0",
    "create lio-replica-v1-meta1",
    "create lio-replica-v1-copy",
    "move the raid1 source leg",
    "load mirror",
    "load raid1",
    "suspend ",
    "load snapshot on",
    "load snapshot-origin",
    "load snapshot-merge",
];

/// Kill the daemon (a panic on its thread, no rollback) right after each kind of step of
/// `op`, start a new daemon on the same kernel state and check: the LUN is served as before,
/// no relationship and no half-built device remain, no device is left suspended, and the
/// intent records are gone.
fn crash_at_every_step(sizes: &[u64], op: impl Fn(&World) -> MethodResult) -> usize {
    let mut hit = 0;
    for point in CRASH_POINTS {
        let w = world(sizes);
        exported_pair(&w);
        let exports_before = w.cfs.targets().unwrap();
        let so_before = w.cfs.find_storage_object(&Plugin::Block, "src").unwrap();
        journal::set_test_crash_point(Some(point));
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| op(&w)));
        journal::set_test_crash_point(None);
        if r.is_ok() {
            continue; // this op has no such step
        }
        hit += 1;
        assert!(
            !w.engine.inner.journal.pending().is_empty(),
            "{point}: no intent record"
        );
        let e2 = Engine::new(w.cfs.clone(), w.sim.clone(), state_opts(w.dir.path())).unwrap();
        let so = w.cfs.find_storage_object(&Plugin::Block, "src").unwrap();
        assert!(so.enabled, "{point}");
        assert_eq!(
            (&so.hba, &so.wwn, &so.attributes),
            (&so_before.hba, &so_before.wwn, &so_before.attributes),
            "{point}"
        );
        let exports_after = w.cfs.targets().unwrap();
        assert_eq!(exports_after.len(), exports_before.len(), "{point}");
        for (a, b) in exports_after.iter().zip(&exports_before) {
            for (ta, tb) in a.tpgs.iter().zip(&b.tpgs) {
                assert_eq!(
                    (ta.enabled, &ta.luns.len()),
                    (tb.enabled, &tb.luns.len()),
                    "{point}"
                );
                assert_eq!(ta.luns[0].index, tb.luns[0].index, "{point}");
                assert_eq!(ta.luns[0].link_name, tb.luns[0].link_name, "{point}");
                assert_eq!(ta.acls, tb.acls, "{point}");
            }
        }
        assert!(e2.relationships().unwrap().is_empty(), "{point}");
        for d in w.sim.list().unwrap() {
            assert!(!d.suspended, "{point}: {} left suspended", d.name);
            assert!(
                names::shim_object(&d.name).is_some(),
                "{point}: {} left behind",
                d.name
            );
            let t = crate::dm::table::format_table(&w.sim.table(&d.name).unwrap());
            assert!(t.contains(" linear "), "{point}: {} is {t}", d.name);
        }
        let files: Vec<String> = w
            .state()
            .1
            .into_iter()
            .filter(|l| l.starts_with("file "))
            .collect();
        assert!(files.is_empty(), "{point}: {files:?} left behind");
        assert!(e2.inner.journal.pending().is_empty(), "{point}");
    }
    hit
}

#[test]
fn crash_during_adoption_is_recovered() {
    let hit = crash_at_every_step(&[64 * MB, 64 * MB], |w| w.engine.adopt("block/src"));
    assert!(hit >= 8, "only {hit} crash points reached");
}

#[test]
fn crash_during_attach_is_rolled_back() {
    for (ct, sizes) in [
        (3u16, [64 * MB, 64 * MB]),
        (4, [64 * MB, 64 * MB]),
        (2, [64 * MB, 65 * MB]),
    ] {
        let hit = crash_at_every_step(&sizes, |w| w.attach("block/src", "block/tgt", ct));
        assert!(hit >= 10, "CopyType {ct}: only {hit} crash points reached");
    }
}

/// Poll `cond` for up to 10 s.
fn eventually(what: &str, cond: impl Fn() -> bool) {
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            std::time::Instant::now() < until,
            "timed out waiting: {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_source_disk_failing_after_the_sync_moves_the_lun_onto_the_target_disk() {
    let w = world(&[64 * MB, 64 * MB, 64 * MB]);
    exported_pair(&w);
    w.iblock("s0", 2);
    let r = w.attach("block/src", "block/tgt", 3);
    assert_eq!(w.wait_job(r.job.as_ref().unwrap()).job_state, 7);
    assert_eq!(w.attach("block/src", "block/s0", 4).return_value, 0);
    let so_before = w.cfs.find_storage_object(&Plugin::Block, "src").unwrap();
    w.sim
        .set_leg_failed(&DmName::new("real-src").unwrap(), 0)
        .unwrap();
    eventually("the LUN on the target's disk", || {
        w.table_of("real-src").contains("linear 8:16 0")
    });
    // the target's own backstore can no longer write the disk that serves the source
    assert!(
        w.table_of("so-tgt").contains(" error"),
        "{}",
        w.table_of("so-tgt")
    );
    let rels = w.rels();
    let v = rels.iter().find(|v| v.instance_id == "src/tgt").unwrap();
    assert_eq!(v.sync_state, 12, "{v:?}");
    let why = v.progress_status.as_deref().unwrap();
    assert!(why.contains("runs on the target's disk 8:16"), "{why}");
    // every record of the source names the target's disk as the source's now
    assert!(
        w.table_of("rec3-tgt").contains("1 1 linear 8:16 0"),
        "{}",
        w.table_of("rec3-tgt")
    );
    assert!(w.table_of("rec3-tgt").contains("error"));
    assert!(
        w.table_of("rec4-s0").contains("1 1 linear 8:16 0"),
        "{}",
        w.table_of("rec4-s0")
    );
    // same storage object, same identity
    let so = w.cfs.find_storage_object(&Plugin::Block, "src").unwrap();
    assert_eq!((so.enabled, &so.wwn), (true, &so_before.wwn));
    let m = w.engine.modify_synchronization("src/tgt", 4, false);
    assert_eq!(m.return_value, 5, "{m:?}");
    assert!(m.description.unwrap().contains("attach a new target"));
    // a new daemon finds both relationships as they are
    let e2 = Engine::new(w.cfs.clone(), w.sim.clone(), opts()).unwrap();
    let rels = e2.relationships().unwrap();
    assert_eq!(ids(&rels), ["src/s0", "src/tgt"]);
    assert!(rels
        .iter()
        .any(|v| v.instance_id == "src/tgt" && v.sync_state == 12));
    drop(e2);
    // the relationships end; the source stays on the disk that has its data
    for id in ["src/tgt", "src/s0"] {
        assert_eq!(
            w.engine.modify_synchronization(id, 2, false).return_value,
            0
        );
    }
    assert!(
        w.table_of("so-src").contains("linear 8:16 0"),
        "{}",
        w.table_of("so-src")
    );
}

#[test]
fn a_restarted_daemon_trusts_a_mirror_it_sees_in_sync_when_the_source_disk_fails() {
    let mut w = world(&[64 * MB, 64 * MB]);
    exported_pair(&w);
    let r = w.attach("block/src", "block/tgt", 3);
    assert_eq!(w.wait_job(r.job.as_ref().unwrap()).job_state, 7);
    // the daemon restarts: the old engine (and its watcher, which knew) is gone
    w.engine = Engine::new(w.cfs.clone(), w.sim.clone(), state_opts(w.dir.path())).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let e2 = &w.engine;
    eventually("the restarted daemon sees the mirror in sync", || {
        e2.inner
            .relationship("src/tgt")
            .is_some_and(|r| r.when_synced.is_some())
    });
    w.sim
        .set_leg_failed(&DmName::new("real-src").unwrap(), 0)
        .unwrap();
    eventually("the LUN on the target's disk", || {
        w.table_of("real-src").contains("linear 8:16 0")
    });
    let v = e2.relationships().unwrap().remove(0);
    assert_eq!(v.sync_state, 12, "{v:?}");
    assert!(v
        .progress_status
        .as_deref()
        .unwrap()
        .contains("runs on the target's disk 8:16"));
}

#[test]
fn a_source_disk_failing_during_the_initial_copy_fails_io_at_once() {
    let w = world(&[64 * MB, 64 * MB]);
    exported_pair(&w);
    w.sim.set_sync_step(SyncStep::Percent(0));
    let r = w.attach("block/src", "block/tgt", 3);
    assert_eq!(r.return_value, 4096);
    w.sim
        .set_leg_failed(&DmName::new("real-src").unwrap(), 0)
        .unwrap();
    let j = w.wait_job(r.job.as_ref().unwrap());
    assert_eq!(j.job_state, 10, "{j:?}");
    // no mirror left to hold the writes: the failed disk answers them
    assert!(w.table_of("real-src").contains("linear 8:0 0"));
    assert!(
        w.table_of("so-tgt").contains("linear 8:16 0"),
        "the target is left alone"
    );
    let v = &w.rels()[0];
    assert_eq!(v.sync_state, 12, "{v:?}");
    assert!(
        v.progress_status
            .as_deref()
            .unwrap()
            .contains("during the initial copy"),
        "{v:?}"
    );
}

#[test]
fn a_target_leg_failing_after_the_sync_is_dropped_and_resync_repairs_it() {
    let w = world(&[64 * MB, 64 * MB]);
    exported_pair(&w);
    let r = w.attach("block/src", "block/tgt", 3);
    assert_eq!(w.wait_job(r.job.as_ref().unwrap()).job_state, 7);
    assert_eq!(w.rels()[0].sync_state, 6);
    // no job follows the mirror any more: the watcher reacts
    w.sim
        .set_leg_failed(&DmName::new("real-src").unwrap(), 1)
        .unwrap();
    eventually("the failed leg dropped", || {
        w.table_of("real-src").contains("linear 8:0 0")
    });
    let v = &w.rels()[0];
    assert_eq!(v.sync_state, 12, "{v:?}");
    let why = v.progress_status.as_deref().unwrap();
    assert!(
        why.contains("leg 1") && why.contains("served alone"),
        "{why}"
    );
    // the record keeps it broken across a daemon restart
    assert!(w.table_of("rec3-tgt").contains("2 1 error"));
    let e2 = Engine::new(w.cfs.clone(), w.sim.clone(), opts()).unwrap();
    assert_eq!(e2.relationships().unwrap()[0].sync_state, 12);
    drop(e2);
    // Fracture has nothing to do
    let f = w.engine.modify_synchronization("src/tgt", 3, false);
    assert_eq!(f.return_value, 5, "{f:?}");
    assert!(f.description.unwrap().contains("is broken"));
    // Resync: a fresh mirror, a full copy, the mark cleared
    let m = w.engine.modify_synchronization("src/tgt", 4, false);
    assert_eq!(m.return_value, 4096, "{m:?}");
    assert_eq!(w.wait_job(m.job.as_ref().unwrap()).job_state, 7);
    let v = &w.rels()[0];
    assert_eq!(v.sync_state, 6, "{v:?}");
    assert!(w.table_of("real-src").contains("mirror"));
    assert!(!w.table_of("rec3-tgt").contains("error"));
    // and a second failure is caught again
    w.sim
        .set_leg_failed(&DmName::new("real-src").unwrap(), 1)
        .unwrap();
    eventually("the failed leg dropped again", || {
        w.table_of("real-src").contains("linear 8:0 0")
    });
    assert_eq!(w.rels()[0].sync_state, 12);
    assert_eq!(
        w.engine
            .modify_synchronization("src/tgt", 2, false)
            .return_value,
        0
    );
    assert!(w.rels().is_empty());
}

#[test]
fn resync_of_a_mirror_still_holding_a_failed_leg() {
    let w = world(&[64 * MB, 64 * MB]);
    exported_pair(&w);
    w.sim.set_sync_step(SyncStep::Percent(0)); // the copy waits for the failure
    let r = w.attach("block/src", "block/tgt", 3);
    // the job cannot drop the leg: the kernel refuses the suspend
    w.sim.fail_next(
        SimOp::Suspend,
        Some("real-src"),
        Error::kernel("suspend", "real-src", "EIO"),
    );
    w.sim
        .set_leg_failed(&DmName::new("real-src").unwrap(), 1)
        .unwrap();
    let j = w.wait_job(r.job.as_ref().unwrap());
    assert_eq!(j.job_state, 10, "{j:?}");
    assert!(j.error_description.unwrap().contains("EIO"));
    assert!(w.table_of("real-src").contains("mirror"));
    // the mark was rolled back with the failed drop
    assert!(!w.table_of("rec3-tgt").contains("error"));
    assert_eq!(w.rels()[0].sync_state, 12);
    w.sim.set_sync_step(SyncStep::Percent(50));
    w.sim.clear_calls();
    let m = w.engine.modify_synchronization("src/tgt", 4, false);
    assert_eq!(m.return_value, 4096, "{m:?}");
    assert_eq!(w.wait_job(m.job.as_ref().unwrap()).job_state, 7);
    assert_eq!(w.rels()[0].sync_state, 6);
    let got: Vec<String> = w
        .sim
        .calls()
        .iter()
        .filter(|c| c.ok && c.name.ends_with("real-src"))
        .map(|c| format!("{:?} {}", c.op, c.detail.lines().next().unwrap_or("")))
        .collect();
    assert_eq!(
        got,
        [
            "Suspend noflush".to_string(),
            format!("Load 0 {} linear 8:0 0", 64 * MB),
            "Resume ".to_string(),
            "Suspend flush".to_string(),
            format!(
                "Load 0 {} mirror core 1 4096 2 8:0 0 8:16 0 1 handle_errors",
                64 * MB
            ),
            "Resume ".to_string(),
        ]
    );
}

#[test]
fn a_failed_copy_rolls_the_source_back() {
    let w = world(&[64 * MB, 64 * MB]);
    exported_pair(&w);
    w.sim.set_sync_step(SyncStep::Percent(0)); // the copy waits for the failure
    let r = w.attach("block/src", "block/tgt", 5);
    w.sim
        .set_leg_failed(&DmName::new("real-src").unwrap(), 1)
        .unwrap();
    let j = w.wait_job(r.job.as_ref().unwrap());
    assert_eq!(j.job_state, 10, "{j:?}");
    let d = j.error_description.unwrap();
    assert!(d.contains("back on linear"), "{d}");
    assert!(w.rels().is_empty());
    assert!(w.table_of("so-src").contains("linear 8:0 0"));
    assert!(w
        .sim
        .info(&DmName::new("rec5-tgt").unwrap())
        .unwrap()
        .is_none());
}

/// What a reboot leaves: the disks (found again under other numbers), the state directory,
/// and a configfs tree where LIO's own restore made the TPG and its ACL but none of the
/// adopted storage objects.
fn reboot(w: &World, disks: &[usize]) -> (ConfigFs, Arc<SimDm>, Engine) {
    std::fs::remove_dir_all(w.cfs.root()).unwrap();
    let (cfs, _fake) = fake_tree(w.dir.path());
    let tpg = cfs
        .create_tpg("iscsi", "iqn.2003-01.org.example:src", 1)
        .unwrap();
    cfs.create_node_acl(&tpg, "iqn.1993-08.org.debian:01:init")
        .unwrap();
    let sim = Arc::new(SimDm::with_dir(w.dir.path().join("dm-after")));
    // another order: every disk gets another major:minor than before
    for &k in disks.iter().rev() {
        sim.add_disk(w.disk(k), w.sim.size_sectors(&w.disk(k)).unwrap());
    }
    let opts = Options {
        boot_id: Some("the-next-boot".into()),
        ..state_opts(w.dir.path())
    };
    let e = Engine::new(cfs.clone(), sim.clone(), opts).unwrap();
    (cfs, sim, e)
}

#[test]
fn a_reboot_brings_relationships_and_adopted_objects_back() {
    let w = world(&[64 * MB; 6]);
    exported_pair(&w);
    w.iblock("a", 2);
    w.iblock("b", 3);
    w.iblock("c", 4);
    w.iblock("d", 5);
    let r = w.attach("block/src", "block/tgt", 3);
    w.wait_job(r.job.as_ref().unwrap());
    assert_eq!(w.attach("block/a", "block/b", 4).return_value, 0);
    // a relationship detached before the reboot stays detached
    let r = w.attach("block/c", "block/d", 3);
    w.wait_job(r.job.as_ref().unwrap());
    assert_eq!(
        w.engine
            .modify_synchronization("c/d", 2, false)
            .return_value,
        0
    );
    let src_before = w.cfs.find_storage_object(&Plugin::Block, "src").unwrap();
    let devno = |sim: &SimDm, k: usize| sim.devno_of(&w.disk(k)).unwrap();
    let old_d0 = devno(&w.sim, 0);

    let (cfs, sim, e) = reboot(&w, &[0, 1, 2, 3, 4, 5]);
    let new_d0 = devno(&sim, 0);
    assert_ne!(new_d0, old_d0, "the test must renumber the disks");
    let mut rels: Vec<(String, u16)> = e
        .relationships()
        .unwrap()
        .into_iter()
        .map(|v| (v.instance_id.clone(), v.copy_type))
        .collect();
    rels.sort();
    assert_eq!(rels, vec![("a/b".into(), 4), ("src/tgt".into(), 3)]);
    // the mirror's legs are the same disks under their new numbers, source first
    let mirror = crate::dm::format_table(&sim.table(&DmName::new("real-src").unwrap()).unwrap());
    let legs = format!("2 {new_d0} 0 {} 0", devno(&sim, 1));
    assert!(mirror.contains(&legs), "{mirror} lacks {legs}");
    // the exported source is back in LIO on its shim, with its identity, LUN and mapping
    let src = cfs.find_storage_object(&Plugin::Block, "src").unwrap();
    assert_eq!(src.wwn, src_before.wwn);
    assert_eq!(src.attributes, src_before.attributes);
    assert_eq!(src.hba, src_before.hba);
    let shim_dev = sim.info(&DmName::new("so-src").unwrap()).unwrap().unwrap();
    assert_eq!(
        sim.devno_of(std::path::Path::new(src.udev_path.as_deref().unwrap()))
            .unwrap(),
        shim_dev.devno()
    );
    let ex = cfs.exports_of(&src).unwrap();
    assert_eq!(ex.len(), 1, "{ex:?}");
    assert_eq!((ex[0].lun, ex[0].tpg_enabled), (3, true));
    assert_eq!(ex[0].mapped.len(), 1);
    assert!(ex[0].mapped[0].write_protect);
    // the snapshot's target and the detached pair are back as adopted objects, no more
    for name in ["b", "c", "d"] {
        let so = cfs.find_storage_object(&Plugin::Block, name).unwrap();
        assert!(cfs.exports_of(&so).unwrap().is_empty());
    }
    assert!(
        crate::dm::format_table(&sim.table(&DmName::new("so-c").unwrap()).unwrap())
            .contains("linear")
    );
    // a daemon restart in the same boot does not restore anything again
    drop(e);
    std::fs::remove_dir_all(
        cfs.find_storage_object(&Plugin::Block, "b")
            .unwrap()
            .path
            .parent()
            .unwrap(),
    )
    .ok();
    let again = Options {
        boot_id: Some("the-next-boot".into()),
        ..state_opts(w.dir.path())
    };
    let e2 = Engine::new(cfs.clone(), sim.clone(), again).unwrap();
    assert_eq!(e2.relationships().unwrap().len(), 2);
    // (an object deleted since is not brought back by a mere restart)
    assert!(matches!(
        cfs.find_storage_object(&Plugin::Block, "b"),
        Err(Error::NotFound(_))
    ));
}

#[test]
fn a_reboot_binds_the_source_legs_metadata_file_again() {
    let w = world(&[64 * MB, 65 * MB]);
    exported_pair(&w);
    let r = w.attach("block/src", "block/tgt", 2);
    assert_eq!(w.wait_job(r.job.as_ref().unwrap()).job_state, 7);
    let (_cfs, sim, e) = reboot(&w, &[0, 1]);
    let table = |n: &str| crate::dm::format_table(&sim.table(&DmName::new(n).unwrap()).unwrap());
    // the file bound to a loop device of this boot, the raid1 on it and the target's tail
    assert!(
        table("meta0-src").contains("linear 7:0 0"),
        "{}",
        table("meta0-src")
    );
    let m0 = sim
        .info(&DmName::new("meta0-src").unwrap())
        .unwrap()
        .unwrap();
    let m1 = sim
        .info(&DmName::new("meta1-src").unwrap())
        .unwrap()
        .unwrap();
    let raid = table("real-src");
    let legs = format!(
        "{} {} {} {}",
        m0.devno(),
        sim.devno_of(&w.disk(0)).unwrap(),
        m1.devno(),
        sim.devno_of(&w.disk(1)).unwrap()
    );
    assert!(raid.contains(&legs), "{raid} lacks {legs}");
    // (the simulated raid1 resyncs after a re-creation; the kernel's goes on from the bitmap)
    let v = &e.relationships().unwrap()[0];
    assert_eq!((v.copy_type, v.change_tracking), (2, true), "{v:?}");
    assert_ne!(v.sync_state, 12, "{v:?}");
}

#[test]
fn a_reboot_without_the_target_disk_brings_the_source_back_alone() {
    let w = world(&[64 * MB; 2]);
    exported_pair(&w);
    let r = w.attach("block/src", "block/tgt", 3);
    w.wait_job(r.job.as_ref().unwrap());
    // disk 1 (the target) does not come back
    let (cfs, sim, e) = reboot(&w, &[0]);
    assert!(e.relationships().unwrap().is_empty());
    let t = crate::dm::format_table(&sim.table(&DmName::new("so-src").unwrap()).unwrap());
    assert_eq!(
        t.trim(),
        format!(
            "0 {} linear {} 0",
            64 * MB,
            sim.devno_of(&w.disk(0)).unwrap()
        )
    );
    let src = cfs.find_storage_object(&Plugin::Block, "src").unwrap();
    assert_eq!(cfs.exports_of(&src).unwrap().len(), 1);
    // nothing was made for the target: not its shim, not its record, not its storage object
    assert!(sim.info(&DmName::new("so-tgt").unwrap()).unwrap().is_none());
    assert!(sim
        .info(&DmName::new("rec3-tgt").unwrap())
        .unwrap()
        .is_none());
    assert!(matches!(
        cfs.find_storage_object(&Plugin::Block, "tgt"),
        Err(Error::NotFound(_))
    ));
}

/// Enough objects that the listing is read on several threads: every object once, ordered by
/// HBA index (iblock_2 before iblock_10, unlike the directory's order), each with its own
/// size, exports and adoption.
#[test]
fn storage_objects_of_a_big_tree() {
    let n = 150;
    let sizes: Vec<u64> = (0..n).map(|k| 4096 + k as u64).collect();
    let w = world(&sizes);
    for k in 0..n {
        w.iblock(&format!("o{k}"), k);
    }
    let mut exports = BTreeMap::new();
    for k in (0..n).step_by(7) {
        let iqn = format!("iqn.2003-01.org.example:t{}", k % 3);
        let tpg = w.cfs.create_tpg("iscsi", &iqn, 1).unwrap();
        let so = w
            .cfs
            .find_storage_object(&Plugin::Block, &format!("o{k}"))
            .unwrap();
        w.cfs.create_lun(&tpg, k as u64, &so, "l").unwrap();
        exports.insert(k, vec![format!("iscsi/{iqn}/tpgt_1/lun_{k}")]);
    }
    assert_eq!(w.engine.adopt("block/o42").return_value, 0);

    let views = w.engine.storage_objects().unwrap();
    assert_eq!(
        views.iter().map(|v| v.name.clone()).collect::<Vec<_>>(),
        (0..n).map(|k| format!("o{k}")).collect::<Vec<_>>()
    );
    for (k, v) in views.iter().enumerate() {
        assert_eq!(v.hba, format!("iblock_{k}"));
        assert_eq!(v.size_bytes, Some(Sectors(sizes[k]).bytes()), "{v:?}");
        assert_eq!(v.adopted, k == 42, "{v:?}");
        assert_eq!(v.exported_by, exports.get(&k).cloned().unwrap_or_default());
        assert_eq!(v.relationship, None);
    }
}

#[test]
fn an_interrupted_rebuild_of_another_boot_is_not_redone_on_a_device_path() {
    let w = world(&[64 * MB]);
    let so = w.iblock("src", 0);
    // a release was under way when the host went down: the object was deleted, the record
    // names the raw device by the path it had in that boot
    let journal = journal::Journal::new(Some(w.dir.path().join("state")));
    let rec = journal::Intent::Rebuild {
        so: Box::new(so.clone()),
        old_dev: "/dev/dm-7".into(),
        new_dev: w.disk(0).display().to_string(),
        to_shim: false,
        exports: vec![],
        boot_id: Some("an-earlier-boot".into()),
    };
    let _left = journal.record("rebuild", "src", &rec).unwrap();
    std::fs::remove_dir_all(so.path.parent().unwrap()).unwrap();
    let e = Engine::new(w.cfs.clone(), w.sim.clone(), state_opts(w.dir.path())).unwrap();
    assert!(matches!(
        w.cfs.find_storage_object(&Plugin::Block, "src"),
        Err(Error::NotFound(_))
    ));
    assert_eq!(
        journal.pending().len(),
        1,
        "the record stays for the operator"
    );
    drop(e);
    // the same record written in this boot is finished: the object comes back on the disk
    let this_boot = journal::Intent::Rebuild {
        so: Box::new(so.clone()),
        old_dev: "/dev/dm-7".into(),
        new_dev: w.disk(0).display().to_string(),
        to_shim: false,
        exports: vec![],
        boot_id: Some(state::current_boot_id()),
    };
    for (path, _) in journal.pending() {
        std::fs::remove_file(path).unwrap();
    }
    let _left = journal.record("rebuild", "src", &this_boot).unwrap();
    let _e = Engine::new(w.cfs.clone(), w.sim.clone(), state_opts(w.dir.path())).unwrap();
    let back = w.cfs.find_storage_object(&Plugin::Block, "src").unwrap();
    assert_eq!(back.wwn, so.wwn);
    assert!(journal.pending().is_empty());
}

/// `n` snapshot targets `s0..` on disks 2.. beside `src` (disk 0) and `tgt` (disk 1).
fn snapshot_targets(w: &World, n: usize) {
    for k in 0..n {
        w.iblock(&format!("s{k}"), k + 2);
    }
}

#[test]
fn many_snapshots_and_a_mirror_on_one_source() {
    let n = 33;
    let w = world(&vec![64 * MB; n + 2]);
    exported_pair(&w);
    snapshot_targets(&w, n);
    // half the snapshots, the mirror, the other half: each snapshot's table stays as it was
    for k in 0..n / 2 {
        let r = w.attach("block/src", &format!("block/s{k}"), 4);
        assert_eq!(r.return_value, 0, "{r:?}");
    }
    let before: Vec<String> = (0..n / 2)
        .map(|k| w.table_of(&format!("so-s{k}")))
        .collect();
    let r = w.attach("block/src", "block/tgt", 3);
    assert_eq!(w.wait_job(r.job.as_ref().unwrap()).job_state, 7);
    for k in n / 2..n {
        assert_eq!(
            w.attach("block/src", &format!("block/s{k}"), 4)
                .return_value,
            0
        );
    }
    let after: Vec<String> = (0..n / 2)
        .map(|k| w.table_of(&format!("so-s{k}")))
        .collect();
    assert_eq!(before, after);
    let real = w
        .sim
        .info(&DmName::new("real-src").unwrap())
        .unwrap()
        .unwrap();
    assert!(w.table_of("real-src").contains("mirror core"));
    for k in 0..n {
        assert!(w
            .table_of(&format!("so-s{k}"))
            .contains(&format!("snapshot {} ", real.devno())));
    }
    let rels = w.rels();
    assert_eq!(rels.len(), n + 1);
    assert!(rels
        .iter()
        .all(|v| v.sync_state == if v.copy_type == 3 { 6 } else { 11 }));
    // the element alone is ambiguous; an InstanceID is not
    let m = w.engine.modify_synchronization("block/src", 2, false);
    assert_eq!(m.return_value, 5, "{m:?}");
    assert!(m.description.unwrap().contains("src/s0, src/s1"));
    let others = w.state().1;
    assert_eq!(
        w.engine
            .modify_synchronization("src/s3", 2, false)
            .return_value,
        0
    );
    assert!(w.table_of("so-s3").contains("linear"));
    // nothing else changed but s3 and its record
    let now = w.state().1;
    let changed: Vec<_> = others.iter().filter(|l| !now.contains(l)).collect();
    assert!(
        changed
            .iter()
            .all(|l| l.contains("so-s3") || l.contains("rec4-s3")),
        "{changed:?}"
    );
    // the mirror ends, the snapshots stay
    assert_eq!(
        w.engine
            .modify_synchronization("block/tgt", 2, false)
            .return_value,
        0
    );
    assert!(w.table_of("real-src").contains("linear 8:0 0"));
    assert!(w.table_of("so-src").contains("snapshot-origin"));
    for k in (0..n).filter(|k| *k != 3) {
        assert_eq!(
            w.engine
                .modify_synchronization(&format!("src/s{k}"), 2, false)
                .return_value,
            0
        );
    }
    assert!(w.rels().is_empty());
    assert!(w.table_of("so-src").contains("linear 8:0 0"));
    assert!(w
        .sim
        .info(&DmName::new("real-src").unwrap())
        .unwrap()
        .is_none());
}

#[test]
fn a_mirror_first_then_snapshots_and_a_clone_beside_snapshots() {
    let w = world(&[64 * MB, 64 * MB, 64 * MB, 64 * MB, 64 * MB]);
    exported_pair(&w);
    snapshot_targets(&w, 3);
    let r = w.attach("block/src", "block/tgt", 3);
    w.wait_job(r.job.as_ref().unwrap());
    let mirror = w.table_of("real-src");
    w.sim.clear_calls();
    assert_eq!(w.attach("block/src", "block/s0", 4).return_value, 0);
    // adding the snapshot suspends the origin, never reloads the mirror
    assert!(!w
        .sim
        .calls()
        .iter()
        .any(|c| c.ok && c.op == SimOp::Load && c.name.ends_with("real-src")));
    assert_eq!(w.table_of("real-src"), mirror);
    // a clone beside the mirror and the snapshot: one mirror with a leg for each copy
    let snap = w.table_of("so-s0");
    w.sim.set_sync_step(SyncStep::Percent(0));
    let r = w.attach("block/src", "block/s1", 5);
    assert_eq!(r.return_value, 4096, "{r:?}");
    let three = w.table_of("real-src");
    assert!(
        three.contains("mirror core 1 4096 3 8:0 0 8:16 0 8:48 0 1 handle_errors"),
        "{three}"
    );
    w.sim.set_sync_step(SyncStep::Percent(50));
    assert_eq!(w.wait_job(r.job.as_ref().unwrap()).job_state, 7);
    // split: the Sync mirror goes on with its two legs, in sync, without a new copy
    assert_eq!(
        w.table_of("real-src"),
        mirror.replace("mirror core 1 4096 2", "mirror core 2 4096 nosync 2")
    );
    assert_eq!(w.table_of("so-s0"), snap);
    let rels = w.rels();
    assert_eq!(rels.len(), 2, "{rels:?}");
    assert!(rels
        .iter()
        .any(|v| v.instance_id == "src/tgt" && v.sync_state == 6));
}

/// src exported, its Async mirror on tgt in sync and a snapshot s0; the copy's disk is d3.
fn async_and_snapshot(w: &World) {
    exported_pair(w);
    snapshot_targets(w, 2);
    let r = w.attach("block/src", "block/tgt", 2);
    assert_eq!(w.wait_job(r.job.as_ref().unwrap()).job_state, 7);
    assert_eq!(w.attach("block/src", "block/s0", 4).return_value, 0);
}

fn devno_of(w: &World, suffix: &str) -> Devno {
    w.sim
        .info(&DmName::new(suffix).unwrap())
        .unwrap()
        .unwrap_or_else(|| panic!("no device {suffix}"))
        .devno()
}

const ASYNC_WORLD: [u64; 4] = [64 * MB, 65 * MB, 64 * MB, 64 * MB];

#[test]
fn a_clone_beside_an_async_mirror_copies_under_its_source_leg() {
    let w = world(&ASYNC_WORLD);
    async_and_snapshot(&w);
    let raid = w.table_of("real-src");
    let snap = w.table_of("so-s0");
    assert!(raid.contains(" 8:0 "), "{raid}");
    w.sim.set_sync_step(SyncStep::Percent(0));
    let r = w.attach("block/src", "block/s1", 5);
    assert_eq!(r.return_value, 4096, "{r:?}");
    // the copy device mirrors the source's disk onto the copy's; the raid1's source leg is on
    // it, reloaded without a rebuild (the Async target is not copied again)
    let copy = w.table_of("copy-src");
    assert!(
        copy.contains("mirror core 1 4096 2 8:0 0 8:48 0 1 handle_errors"),
        "{copy}"
    );
    let moved = w.table_of("real-src");
    assert!(!moved.contains("rebuild"), "{moved}");
    let copy_dev = devno_of(&w, "copy-src").to_string();
    assert_eq!(moved, raid.replace(" 8:0 ", &format!(" {copy_dev} ")),);
    assert_eq!(w.table_of("so-s0"), snap);
    let rels = w.rels();
    let state = |id: &str| {
        rels.iter()
            .find(|v| v.instance_id == id)
            .map(|v| v.sync_state)
    };
    assert_eq!(
        state("src/tgt"),
        Some(6),
        "the Async mirror stays in sync: {rels:?}"
    );
    assert_eq!(
        state("src/s1"),
        Some(SyncState::CopyInProgress.value()),
        "{rels:?}"
    );
    // the split: the raid1 back on the disk, the copy device gone, the others as they were
    w.sim.set_sync_step(SyncStep::Percent(50));
    assert_eq!(w.wait_job(r.job.as_ref().unwrap()).job_state, 7);
    assert_eq!(w.table_of("real-src"), raid);
    assert!(w
        .sim
        .info(&DmName::new("copy-src").unwrap())
        .unwrap()
        .is_none());
    assert_eq!(w.table_of("so-s0"), snap);
    assert_eq!(
        ids(&w.rels()),
        vec!["src/s0".to_string(), "src/tgt".to_string()]
    );
    assert!(w
        .rels()
        .iter()
        .all(|v| v.sync_state == 6 || v.copy_type == 4));
}

#[test]
fn the_async_mirror_may_end_while_a_copy_runs_under_it_but_not_start_over_one() {
    let w = world(&ASYNC_WORLD);
    async_and_snapshot(&w);
    w.sim.set_sync_step(SyncStep::Percent(0));
    let r = w.attach("block/src", "block/s1", 5);
    assert_eq!(r.return_value, 4096, "{r:?}");
    // the Async mirror ends: the real device is linear over the copy device, which goes on
    assert_eq!(
        w.engine
            .modify_synchronization("src/tgt", 2, false)
            .return_value,
        0
    );
    let copy_dev = devno_of(&w, "copy-src");
    assert!(
        w.table_of("real-src")
            .contains(&format!("linear {copy_dev} 0")),
        "{}",
        w.table_of("real-src")
    );
    assert!(w
        .sim
        .info(&DmName::new("meta0-src").unwrap())
        .unwrap()
        .is_none());
    // no raid1 over a running copy
    let a = w.attach("block/src", "block/tgt", 2);
    assert_eq!(a.return_value, 6, "{a:?}");
    assert!(a.description.unwrap().contains("not while one runs"));
    w.sim.set_sync_step(SyncStep::Percent(50));
    assert_eq!(w.wait_job(r.job.as_ref().unwrap()).job_state, 7);
    assert!(w.table_of("real-src").contains("linear 8:0 0"));
    assert!(w
        .sim
        .info(&DmName::new("copy-src").unwrap())
        .unwrap()
        .is_none());
    assert_eq!(ids(&w.rels()), vec!["src/s0".to_string()]);
}

#[test]
fn rollback_clone_beside_an_async_mirror() {
    rollback_at_every_step(&ASYNC_WORLD, async_and_snapshot, |w| {
        w.attach("block/src", "block/s1", 5)
    });
}

#[test]
fn crash_during_a_clone_beside_an_async_mirror_is_rolled_back() {
    let hit = crash_beside(
        &ASYNC_WORLD,
        async_and_snapshot,
        |w| w.attach("block/src", "block/s1", 5),
        |_, _| false,
    );
    assert!(hit >= 4, "only {hit} crash points reached");
}

#[test]
fn a_copy_under_an_async_mirror_is_finished_by_a_new_daemon() {
    let w = world(&ASYNC_WORLD);
    async_and_snapshot(&w);
    let raid = w.table_of("real-src");
    w.sim.set_sync_step(SyncStep::Percent(0));
    let r = w.attach("block/src", "block/s1", 5);
    assert_eq!(r.return_value, 4096);
    w.sim.fail_next(
        SimOp::Status,
        Some("copy-src"),
        Error::Other("the daemon died".into()),
    );
    assert_eq!(w.wait_job(r.job.as_ref().unwrap()).job_state, 10);
    let e2 = Engine::new(w.cfs.clone(), w.sim.clone(), opts()).unwrap();
    let rels = ids(&e2.relationships().unwrap());
    assert_eq!(rels, ["src/s0", "src/s1", "src/tgt"]);
    w.sim.set_sync_step(SyncStep::Percent(50));
    let jobs = e2.jobs().list();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let j = e2
        .jobs()
        .wait(&jobs[0].instance_id, Duration::from_secs(20))
        .unwrap();
    assert_eq!(j.job_state, 7, "{j:?}");
    assert_eq!(ids(&e2.relationships().unwrap()), ["src/s0", "src/tgt"]);
    assert!(w
        .sim
        .info(&DmName::new("copy-src").unwrap())
        .unwrap()
        .is_none());
    assert_eq!(w.table_of("real-src"), raid);
}

/// src exported with a logged-in initiator; snapshots s0 and s1, s0 with 8 MiB changed.
fn restore_world() -> World {
    let w = world(&[64 * MB; 4]);
    exported_pair(&w);
    snapshot_targets(&w, 2);
    assert_eq!(w.attach("block/src", "block/s0", 4).return_value, 0);
    assert_eq!(w.attach("block/src", "block/s1", 4).return_value, 0);
    w.sim
        .set_snapshot_usage(&DmName::new("so-s0").unwrap(), 8 * MB)
        .unwrap();
    let tpg = w
        .cfs
        .root()
        .join("iscsi/iqn.2003-01.org.example:src/tpgt_1");
    std::fs::write(
        tpg.join("dynamic_sessions"),
        "iqn.1993-08.org.debian:01:host7\n",
    )
    .unwrap();
    w
}

#[test]
fn a_failing_source_disk_breaks_every_snapshot_a_failing_cow_store_only_its_own() {
    let w = restore_world();
    let states = |w: &World| -> Vec<(String, u16, String)> {
        w.rels()
            .into_iter()
            .map(|v| {
                (
                    v.instance_id,
                    v.sync_state,
                    v.progress_status.unwrap_or_default(),
                )
            })
            .collect()
    };
    let (src, cow1) = (Devno::new(8, 0), Devno::new(8, 48));
    assert!(w.table_of("so-s1").contains(&format!(" {cow1} P ")));
    w.sim.set_disk_failed(cow1, true);
    let st = states(&w);
    assert_eq!((st[0].0.as_str(), st[0].1), ("src/s0", 11), "{st:?}");
    assert_eq!((st[1].0.as_str(), st[1].1), ("src/s1", 12), "{st:?}");
    assert!(
        st[1].2.contains("the COW store's disk (8:48) fails")
            && st[1].2.contains("Input/output error"),
        "{st:?}"
    );
    w.sim.set_disk_failed(cow1, false);
    assert!(states(&w).iter().all(|s| s.1 == 11), "{:?}", states(&w));

    w.sim.set_disk_failed(src, true);
    let st = states(&w);
    for s in &st {
        assert_eq!(s.1, 12, "{st:?}");
        assert!(s.2.contains("the source's disk (8:0) fails"), "{st:?}");
    }
    // a mirror under the source answers for its disks itself: the snapshots read through it
    w.sim.set_disk_failed(src, false);
    assert_eq!(w.attach("block/src", "block/tgt", 3).return_value, 4096);
    w.sim.set_disk_failed(src, true);
    let st = states(&w);
    assert!(st.iter().all(|s| s.1 != 12), "{st:?}");
}

fn restore(w: &World, rel: &str, force: bool) -> MethodResult {
    w.engine
        .modify_synchronization(rel, crate::service::operation::RESTORE, force)
}

#[test]
fn restore_is_refused_with_sessions_or_an_exported_snapshot() {
    let w = restore_world();
    let before = w.state();
    let r = restore(&w, "src/s0", false);
    assert_eq!(r.return_value, 6, "{r:?}");
    assert!(r
        .description
        .unwrap()
        .contains("iqn.1993-08.org.debian:01:host7"));
    let s0 = w.cfs.find_storage_object(&Plugin::Block, "s0").unwrap();
    w.export(&s0, "iqn.2003-01.org.example:s0");
    let before_export = w.state();
    let r = restore(&w, "src/s0", true);
    assert_eq!(r.return_value, 6, "{r:?}");
    assert!(r.description.unwrap().contains("exported"));
    assert_eq!(w.state(), before_export);
    assert_ne!(before, before_export);
}

#[test]
fn restore_merges_the_snapshot_back_and_ends_it() {
    let w = restore_world();
    w.sim.set_sync_step(SyncStep::Percent(25));
    let s1 = w.table_of("so-s1");
    let r = restore(&w, "src/s0", true);
    assert_eq!(r.return_value, 4096, "{r:?}");
    let job = r.job.unwrap();
    // a restore cannot be stopped
    let stop = w.engine.request_state_change(&job, 4);
    assert!(stop.return_value == 1 || stop.return_value == 5, "{stop:?}");
    let j = w.wait_job(&job);
    assert_eq!((j.job_state, j.percent_complete), (7, 100), "{j:?}");
    let rels = w.rels();
    assert_eq!(rels.len(), 1, "{rels:?}");
    assert_eq!(rels[0].instance_id, "src/s1");
    assert!(w.table_of("so-src").contains("snapshot-origin"));
    assert!(w.table_of("so-s0").contains("linear 8:32 0"));
    assert_eq!(w.table_of("so-s1"), s1);
    assert!(w
        .sim
        .info(&DmName::new("rec4-s0").unwrap())
        .unwrap()
        .is_none());
    // the merge went through the origin: snapshot-merge, then snapshot-origin again
    let loads: Vec<String> = w
        .sim
        .calls()
        .into_iter()
        .filter(|c| c.ok && c.op == SimOp::Load && c.name.ends_with("so-src"))
        .map(|c| c.detail)
        .collect();
    assert!(
        loads.iter().any(|d| d.contains("snapshot-merge")),
        "{loads:?}"
    );
    assert!(
        loads.last().unwrap().contains("snapshot-origin"),
        "{loads:?}"
    );
}

#[test]
fn a_merge_in_progress_is_followed_by_a_new_daemon() {
    let w = restore_world();
    w.sim.set_sync_step(SyncStep::Percent(0));
    let r = restore(&w, "src/s0", true);
    assert_eq!(r.return_value, 4096, "{r:?}");
    // the first daemon's job dies; the kernel goes on merging
    w.sim.fail_next(
        SimOp::Status,
        Some("so-src"),
        Error::Other("the daemon died".into()),
    );
    assert_eq!(w.wait_job(r.job.as_ref().unwrap()).job_state, 10);
    let e2 = Engine::new(w.cfs.clone(), w.sim.clone(), opts()).unwrap();
    let v = e2.relationships().unwrap();
    let s0 = v.iter().find(|v| v.instance_id == "src/s0").unwrap();
    assert_eq!(s0.sync_state, 10, "{s0:?}");
    w.sim.set_sync_step(SyncStep::Percent(50));
    let jobs = e2.jobs().list();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let j = e2
        .jobs()
        .wait(&jobs[0].instance_id, Duration::from_secs(20))
        .unwrap();
    assert_eq!(j.job_state, 7, "{j:?}");
    let v = e2.relationships().unwrap();
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(w.table_of("so-src").contains("snapshot-origin"));
}

#[test]
fn rollback_snapshot_beside_a_mirror() {
    rollback_at_every_step(
        &[64 * MB; 3],
        |w| {
            exported_pair(w);
            w.iblock("s0", 2);
            let r = w.attach("block/src", "block/tgt", 3);
            w.wait_job(r.job.as_ref().unwrap());
        },
        |w| w.attach("block/src", "block/s0", 4),
    );
}

/// Kill the daemon right after each kind of step of `op`, run beside the relationships `setup`
/// made; a new daemon on the same kernel state must either have rolled `op` back (the
/// relationships and every device exactly as `setup` left them) or, where `done` says the
/// change went through, have it complete. No device stays suspended, no intent record stays.
fn crash_beside(
    sizes: &[u64],
    setup: impl Fn(&World),
    op: impl Fn(&World) -> MethodResult,
    done: impl Fn(&World, &Engine) -> bool,
) -> usize {
    let mut hit = 0;
    for point in CRASH_POINTS {
        let w = world(sizes);
        setup(&w);
        let rels_before = ids(&w.rels());
        let dm_before = w.sim.listing().unwrap();
        journal::set_test_crash_point(Some(point));
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| op(&w)));
        journal::set_test_crash_point(None);
        if r.is_ok() {
            continue;
        }
        hit += 1;
        let e2 = Engine::new(w.cfs.clone(), w.sim.clone(), state_opts(w.dir.path())).unwrap();
        if !done(&w, &e2) {
            assert_eq!(ids(&e2.relationships().unwrap()), rels_before, "{point}");
            // an interrupted adoption is completed: the new object's shim on linear may stay
            let now: Vec<String> = w
                .sim
                .listing()
                .unwrap()
                .into_iter()
                .filter(|l| dm_before.contains(l) || !l.contains("target: Linear"))
                .collect();
            assert_eq!(now, dm_before, "{point}");
        }
        for d in w.sim.list().unwrap() {
            assert!(!d.suspended, "{point}: {} left suspended", d.name);
        }
        assert!(e2.inner.journal.pending().is_empty(), "{point}");
    }
    hit
}

#[test]
fn crash_during_attach_beside_a_mirror_and_a_snapshot_is_rolled_back() {
    let setup = |w: &World| {
        exported_pair(w);
        snapshot_targets(w, 2);
        let r = w.attach("block/src", "block/tgt", 3);
        w.wait_job(r.job.as_ref().unwrap());
        assert_eq!(w.attach("block/src", "block/s0", 4).return_value, 0);
    };
    let hit = crash_beside(
        &[64 * MB; 4],
        setup,
        |w| w.attach("block/src", "block/s1", 4),
        |_, _| false,
    );
    assert!(hit >= 4, "only {hit} crash points reached");
}

#[test]
fn crash_during_restore_rolls_back_or_completes() {
    let setup = |w: &World| {
        exported_pair(w);
        snapshot_targets(w, 2);
        assert_eq!(w.attach("block/src", "block/s0", 4).return_value, 0);
        assert_eq!(w.attach("block/src", "block/s1", 4).return_value, 0);
        w.sim.set_sync_step(SyncStep::Percent(50));
    };
    let hit = crash_beside(
        &[64 * MB; 4],
        setup,
        |w| restore(w, "src/s0", true),
        |w, e2| {
            // a merge that had started goes on: the new daemon follows it to the end
            if !w.table_of("so-src").contains("snapshot-merge") {
                return false;
            }
            let jobs = e2.jobs().list();
            assert_eq!(jobs.len(), 1, "{jobs:?}");
            let j = e2
                .jobs()
                .wait(&jobs[0].instance_id, Duration::from_secs(20))
                .unwrap();
            assert_eq!(j.job_state, 7, "{j:?}");
            assert_eq!(
                ids(&e2.relationships().unwrap()),
                vec!["src/s1".to_string()]
            );
            assert!(w.table_of("so-src").contains("snapshot-origin"));
            true
        },
    );
    assert!(hit >= 2, "only {hit} crash points reached");
}

#[test]
fn rollback_clone_beside_a_mirror_and_a_snapshot() {
    rollback_at_every_step(
        &[64 * MB; 4],
        |w| {
            exported_pair(w);
            snapshot_targets(w, 2);
            let r = w.attach("block/src", "block/tgt", 3);
            w.wait_job(r.job.as_ref().unwrap());
            assert_eq!(w.attach("block/src", "block/s0", 4).return_value, 0);
        },
        |w| w.attach("block/src", "block/s1", 5),
    );
}

/// A failure injected at each kernel change of a Restore: before the merge has taken over
/// the snapshot's store the restore fails and nothing changed; after it, the merge goes on and
/// its job ends it as usual.
#[test]
fn restore_fails_cleanly_or_completes_at_every_step() {
    let w = restore_world();
    let dm0 = w.sim.mutating_call_count();
    let r = restore(&w, "src/s0", true);
    assert_eq!(r.return_value, 4096, "{r:?}");
    w.wait_job(r.job.as_ref().unwrap());
    let steps = w.sim.mutating_call_count() - dm0;
    assert!(steps >= 4, "{steps}");
    let (mut failed, mut completed) = (0, 0);
    for k in 1..=steps {
        let w = restore_world();
        let before = w.state();
        w.sim.fail_at_call(k);
        let r = restore(&w, "src/s0", true);
        w.sim.fail_at_call(0);
        if r.return_value == 4096 {
            let j = w.wait_job(r.job.as_ref().unwrap());
            if j.job_state == 7 {
                completed += 1;
                assert_eq!(ids(&w.rels()), vec!["src/s1".to_string()], "step {k}");
                assert!(w.table_of("so-src").contains("snapshot-origin"), "step {k}");
                continue;
            }
            // the failure hit the job's own end: the merge is done in the kernel, a new
            // daemon finishes what is left
            let e2 = Engine::new(w.cfs.clone(), w.sim.clone(), opts()).unwrap();
            let jobs = e2.jobs().list();
            for j in &jobs {
                e2.jobs().wait(&j.instance_id, Duration::from_secs(20));
            }
            assert_eq!(
                ids(&e2.relationships().unwrap()),
                vec!["src/s1".to_string()],
                "step {k}: {j:?}"
            );
            completed += 1;
            continue;
        }
        failed += 1;
        assert!(matches!(r.return_value, 2..=4), "step {k}: {r:?}");
        assert!(r.description.is_some(), "step {k}");
        assert_eq!(w.state(), before, "step {k} left something behind: {r:?}");
        assert_eq!(ids(&w.rels()), vec!["src/s0", "src/s1"], "step {k}");
    }
    assert!(
        failed >= 3 && completed >= 1,
        "failed {failed}, completed {completed}"
    );
}

#[test]
fn stacked_relationships_are_rediscovered_by_a_new_daemon() {
    let w = world(&[64 * MB; 5]);
    exported_pair(&w);
    snapshot_targets(&w, 3);
    assert_eq!(w.attach("block/src", "block/s0", 4).return_value, 0);
    let r = w.attach("block/src", "block/tgt", 3);
    w.wait_job(r.job.as_ref().unwrap());
    assert_eq!(w.attach("block/src", "block/s1", 4).return_value, 0);
    w.sim.set_sync_step(SyncStep::Percent(0));
    let r = w.attach("block/src", "block/s2", 5);
    assert_eq!(r.return_value, 4096, "{r:?}");
    let mut before = w.rels();
    let e2 = Engine::new(w.cfs.clone(), w.sim.clone(), opts()).unwrap();
    let mut after = e2.relationships().unwrap();
    for v in before.iter_mut().chain(after.iter_mut()) {
        v.when_synced = None; // kept in memory only
    }
    assert_eq!(after, before);
    assert_eq!(ids(&after), vec!["src/s0", "src/s1", "src/s2", "src/tgt"]);
    // the new daemon finishes the copy and ends the others one by one
    w.sim.set_sync_step(SyncStep::Percent(50));
    let jobs = e2.jobs().list();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let j = e2
        .jobs()
        .wait(&jobs[0].instance_id, Duration::from_secs(20))
        .unwrap();
    assert_eq!(j.job_state, 7, "{j:?}");
    w.engine
        .jobs()
        .wait(r.job.as_ref().unwrap(), Duration::from_secs(20));
    for id in ["src/s0", "src/tgt", "src/s1"] {
        assert_eq!(
            e2.modify_synchronization(id, 2, false).return_value,
            0,
            "{id}"
        );
    }
    assert!(e2.relationships().unwrap().is_empty());
    assert!(w.table_of("so-src").contains("linear 8:0 0"));
}

/// Source and target exported/adopted, and a relationship of copy type `ct` in sync.
fn synced_pair(w: &World, ct: u16) {
    exported_pair(w);
    let r = w.attach("block/src", "block/tgt", ct);
    assert_eq!(w.wait_job(r.job.as_ref().unwrap()).job_state, 7, "{r:?}");
}

fn modify_tgt(w: &World, op: u16) -> MethodResult {
    w.engine.modify_synchronization("src/tgt", op, false)
}

/// A Sync relationship on a dm `mirror` although its target has room for raid metadata: it
/// joined a full copy running in a mirror, which has completed since.
fn mirror_sync_pair(w: &World) {
    exported_pair(w);
    w.iblock("c", 2);
    w.sim.set_sync_step(SyncStep::Percent(0));
    let c = w.attach("block/src", "block/c", 5);
    assert_eq!(c.return_value, 4096, "{c:?}");
    let r = w.attach("block/src", "block/tgt", 3);
    assert_eq!(r.return_value, 4096, "{r:?}");
    w.sim.set_sync_step(SyncStep::Percent(50));
    assert_eq!(w.wait_job(c.job.as_ref().unwrap()).job_state, 7);
    assert_eq!(w.wait_job(r.job.as_ref().unwrap()).job_state, 7);
    let t = w.table_of("real-src");
    assert!(
        t.contains("mirror core 2 4096 nosync 2 8:0 0 8:16 0 "),
        "{t}"
    );
    let v = &w.rels()[0];
    assert_eq!(
        (v.copy_type, v.sync_state, v.change_tracking),
        (3, 6, false)
    );
}

#[test]
fn reset_to_async_and_back_toggles_write_mostly_on_the_same_raid1() {
    let w = world(&[64 * MB, 65 * MB]);
    synced_pair(&w, 3);
    // a Sync mirror whose target has the room is a raid1 without write_mostly
    let t = w.table_of("real-src");
    assert!(
        t.contains("raid raid1") && !t.contains("write_mostly"),
        "{t}"
    );
    assert!(w.rels()[0].change_tracking);
    let meta = [w.table_of("meta0-src"), w.table_of("meta1-src")];
    w.sim.set_sync_step(SyncStep::Percent(0));
    let m = modify_tgt(&w, 11);
    assert_eq!((m.return_value, &m.job), (0, &None), "{m:?}");
    let t = w.table_of("real-src");
    assert!(
        t.contains("raid raid1") && t.contains("write_mostly 1"),
        "{t}"
    );
    assert!(w.has_device("rec2-tgt") && !w.has_device("rec3-tgt"));
    assert_eq!([w.table_of("meta0-src"), w.table_of("meta1-src")], meta);
    // in sync at once, with no copy able to progress: nothing was copied
    let v = &w.rels()[0];
    assert_eq!((v.copy_type, v.sync_state), (2, 6), "{v:?}");
    assert!(v.change_tracking);
    assert_eq!(v.max_lag_writes, Some(256));
    // a Fracture is tracked as before
    assert_eq!(modify_tgt(&w, 3).return_value, 0);
    assert!(w.table_of("real-src").ends_with(" - -"));
    w.sim.set_sync_step(SyncStep::Percent(50));
    let m = modify_tgt(&w, 4);
    assert_eq!(m.return_value, 4096, "{m:?}");
    assert_eq!(w.wait_job(m.job.as_ref().unwrap()).job_state, 7);

    w.sim.set_sync_step(SyncStep::Percent(0));
    let m = modify_tgt(&w, 10);
    assert_eq!((m.return_value, &m.job), (0, &None), "{m:?}");
    let t = w.table_of("real-src");
    assert!(
        t.contains("raid raid1") && !t.contains("write_mostly"),
        "{t}"
    );
    assert!(w.has_device("rec3-tgt") && !w.has_device("rec2-tgt"));
    assert_eq!([w.table_of("meta0-src"), w.table_of("meta1-src")], meta);
    let v = &w.rels()[0];
    assert_eq!((v.copy_type, v.sync_state), (3, 6), "{v:?}");
    assert!(v.change_tracking && v.max_lag_writes.is_none());
    // asking for the type it has changes nothing
    let before = w.state();
    assert_eq!(modify_tgt(&w, 10).return_value, 0);
    assert_eq!(w.state(), before);
    // a new daemon finds the Sync mirror on its raid1
    let e2 = Engine::new(w.cfs.clone(), w.sim.clone(), opts()).unwrap();
    let v = &e2.relationships().unwrap()[0];
    assert_eq!((v.copy_type, v.sync_state, v.change_tracking), (3, 6, true));
}

#[test]
fn reset_to_async_of_a_sync_dm_mirror_builds_a_raid1_without_a_copy() {
    let w = world(&[64 * MB, 65 * MB, 64 * MB]);
    mirror_sync_pair(&w);
    w.sim.set_sync_step(SyncStep::Percent(0));
    let m = modify_tgt(&w, 11);
    assert_eq!((m.return_value, &m.job), (0, &None), "{m:?}");
    let t = w.table_of("real-src");
    assert!(
        t.contains("raid raid1") && t.contains("nosync") && t.contains("write_mostly 1"),
        "{t}"
    );
    assert!(w.has_device("rec2-tgt") && !w.has_device("rec3-tgt"));
    assert!(w.has_device("meta0-src") && w.has_device("meta1-src"));
    let v = &w.rels()[0];
    assert_eq!((v.copy_type, v.sync_state, v.change_tracking), (2, 6, true));
    // and back: Sync on that raid1, tracking changes from now on
    let m = modify_tgt(&w, 10);
    assert_eq!(m.return_value, 0, "{m:?}");
    let t = w.table_of("real-src");
    assert!(
        t.contains("raid raid1") && !t.contains("write_mostly"),
        "{t}"
    );
    let v = &w.rels()[0];
    assert_eq!((v.copy_type, v.sync_state, v.change_tracking), (3, 6, true));
}

#[test]
fn a_mode_change_needs_a_lone_mirror_in_sync_and_room_for_metadata() {
    let refused = |w: &World, op: u16, code: u32, text: &str| {
        let before = w.state();
        let m = modify_tgt(w, op);
        assert_eq!(m.return_value, code, "{m:?}");
        let d = m.description.unwrap();
        assert!(d.contains(text), "{d}");
        assert_eq!(w.state(), before);
    };
    // a same-size target has no room for the raid1's metadata
    let w = world(&[64 * MB; 2]);
    synced_pair(&w, 3);
    refused(&w, 11, 5, "too small for an Async copy");
    let w = world(&[64 * MB, 65 * MB]);
    synced_pair(&w, 3);
    assert_eq!(modify_tgt(&w, 3).return_value, 0);
    refused(&w, 11, 5, "fractured; Resync it first");
    // still copying: its job works on it
    let w = world(&[64 * MB, 65 * MB]);
    exported_pair(&w);
    w.sim.set_sync_step(SyncStep::Percent(0));
    assert_eq!(w.attach("block/src", "block/tgt", 2).return_value, 4096);
    refused(&w, 10, 6, "is still working on relationship");
    // a full copy in the same mirror
    let w = world(&[64 * MB, 65 * MB, 64 * MB]);
    synced_pair(&w, 3);
    w.iblock("c", 2);
    w.sim.set_sync_step(SyncStep::Percent(0));
    assert_eq!(w.attach("block/src", "block/c", 5).return_value, 4096);
    refused(
        &w,
        11,
        6,
        "a full copy of the same source runs in its mirror",
    );
    // not a mirror
    let w = world(&[64 * MB; 2]);
    exported_pair(&w);
    assert_eq!(w.attach("block/src", "block/tgt", 4).return_value, 0);
    refused(&w, 11, 1, "only Sync and Async mirrors");
    for op in [0, 1, 6, 12] {
        refused(&w, op, 5, "is not valid");
    }
}

/// A mode change of a mirror in sync (`ct`, by `op`) that fails at any kernel call leaves
/// everything as it was; a failure that only hit the removal of the old type's devices
/// leaves the change made, and a new daemon removes what was left.
fn mode_change_fails_cleanly_at_every_step(setup: fn(&World), op: u16) {
    let sizes = [64 * MB, 65 * MB, 64 * MB];
    let w = world(&sizes);
    setup(&w);
    let n0 = w.sim.mutating_call_count();
    assert_eq!(modify_tgt(&w, op).return_value, 0);
    let steps = w.sim.mutating_call_count() - n0;
    let switched = w.state().1;
    let rels_switched = w.rels();
    assert!(steps >= 4, "{steps}");
    for k in 1..=steps {
        let w = world(&sizes);
        setup(&w);
        let before = w.state();
        let rels_before = w.rels();
        w.sim.fail_at_call(k);
        let m = modify_tgt(&w, op);
        w.sim.fail_at_call(0);
        if m.return_value == 0 {
            let e2 = Engine::new(w.cfs.clone(), w.sim.clone(), opts()).unwrap();
            // (another world: only the dm devices compare; configfs paths name its directory)
            assert_eq!(w.state().1, switched, "step {k}/{steps}");
            let mut after = e2.relationships().unwrap();
            after[0].when_synced = rels_switched[0].when_synced; // kept in memory only
            assert_eq!(after, rels_switched, "step {k}/{steps}");
            continue;
        }
        assert_eq!(m.return_value, 4, "step {k}/{steps}: {m:?}");
        assert_eq!(w.state(), before, "step {k}/{steps}: {m:?}");
        assert_eq!(w.rels(), rels_before, "step {k}/{steps}");
    }
}

#[test]
fn reset_to_async_fails_cleanly_at_every_step() {
    mode_change_fails_cleanly_at_every_step(|w| synced_pair(w, 3), 11);
    mode_change_fails_cleanly_at_every_step(mirror_sync_pair, 11);
}

#[test]
fn reset_to_sync_fails_cleanly_at_every_step() {
    mode_change_fails_cleanly_at_every_step(|w| synced_pair(w, 2), 10);
}

/// A daemon killed anywhere in a mode change: the new daemon has either the old mirror, with
/// nothing of the new type left, or the new one, with nothing of the old type left.
fn crash_during_a_mode_change(setup: fn(&World), from: &'static str, op: u16) -> usize {
    let to = if from == "3" { "2" } else { "3" };
    crash_beside(
        &[64 * MB, 65 * MB, 64 * MB],
        setup,
        |w| modify_tgt(w, op),
        move |w, e2| {
            let t = w.table_of("real-src");
            let raid = t.contains("raid raid1");
            let now = if t.contains("write_mostly 1") {
                "2"
            } else {
                "3"
            };
            let v = &e2.relationships().unwrap()[0];
            assert_eq!(v.copy_type.to_string(), now);
            assert_eq!(v.sync_state, 6, "{v:?}");
            assert!(w.has_device(&format!("rec{now}-tgt")));
            assert!(!w.has_device(&format!("rec{}-tgt", if now == "2" { "3" } else { "2" })));
            // metadata exactly beside a raid1
            assert_eq!(w.has_device("meta0-src"), raid);
            assert_eq!(w.has_device("meta1-src"), raid);
            assert_eq!(v.change_tracking, raid);
            // switched: done; else crash_beside compares everything with the start
            now == to
        },
    )
}

#[test]
fn crash_during_reset_to_async_keeps_one_type() {
    let hit = crash_during_a_mode_change(|w| synced_pair(w, 3), "3", 11);
    assert!(hit >= 2, "only {hit} crash points reached");
    let hit = crash_during_a_mode_change(mirror_sync_pair, "3", 11);
    assert!(hit >= 4, "only {hit} crash points reached");
}

#[test]
fn crash_during_reset_to_sync_keeps_one_type() {
    let hit = crash_during_a_mode_change(|w| synced_pair(w, 2), "2", 10);
    assert!(hit >= 2, "only {hit} crash points reached");
}

/// A session logged in to `src`'s LUN (what LIO lists under the TPG).
fn log_in_to_src(w: &World) {
    let tpg = w
        .cfs
        .root()
        .join("iscsi/iqn.2003-01.org.example:src/tpgt_1");
    std::fs::write(
        tpg.join("dynamic_sessions"),
        "iqn.1993-08.org.debian:01:host7\n",
    )
    .unwrap();
}

#[test]
fn a_fractured_mirror_is_restored_from_its_target_and_mirrors_again() {
    // a Sync `mirror` (a same-size target), a Sync raid1 and an Async one
    for (ct, tgt_size) in [(3u16, 64 * MB), (3, 65 * MB), (2, 65 * MB)] {
        let w = world(&[64 * MB, tgt_size]);
        synced_pair(&w, ct);
        // not fractured: nothing to restore
        let r = restore(&w, "src/tgt", true);
        assert_eq!(r.return_value, 5, "{ct}: {r:?}");
        assert!(r.description.unwrap().contains("not fractured"));
        assert_eq!(modify_tgt(&w, 3).return_value, 0);
        log_in_to_src(&w);
        let before = w.state();
        let r = restore(&w, "src/tgt", false);
        assert_eq!(r.return_value, 6, "{ct}: {r:?}");
        assert!(r.description.unwrap().contains("host7"));
        assert_eq!(w.state(), before);

        w.sim.set_sync_step(SyncStep::Percent(0));
        let r = restore(&w, "src/tgt", true);
        assert_eq!(r.return_value, 4096, "{ct}: {r:?}");
        // the target's disk first: the LUN reads the target's image from the first moment
        let t = w.table_of("real-src");
        assert!(
            t.contains("mirror core 1 4096 2 8:16 0 8:0 0 "),
            "{ct}: {t}"
        );
        let v = &w.rels()[0];
        assert_eq!(
            v.sync_state,
            SyncState::RestoreInProgress.value(),
            "{ct}: {v:?}"
        );
        assert!(v.progress_status.as_deref().unwrap().contains("restoring"));
        // nothing else may use the source meanwhile, and the job cannot be stopped
        let job = r.job.unwrap();
        assert_eq!(modify_tgt(&w, 2).return_value, 6);
        let stop = w.engine.request_state_change(&job, 4);
        assert_ne!(stop.return_value, 0, "{stop:?}");
        w.sim.set_sync_step(SyncStep::Percent(25));
        let j = w.wait_job(&job);
        assert_eq!(j.job_state, 7, "{ct}: {j:?}");
        // mirroring again, the source leg first, nothing copied for the switch
        let t = w.table_of("real-src");
        assert!(t.contains("nosync") && t.contains(" 8:0 "), "{ct}: {t}");
        if tgt_size > 64 * MB {
            assert!(t.contains("raid raid1") && t.ends_with(" 8:16"), "{t}");
            assert_eq!(t.contains("write_mostly 1"), ct == 2, "{t}");
        } else {
            assert!(t.contains(" 2 8:0 0 8:16 0 "), "{t}");
        }
        let v = &w.rels()[0];
        assert_eq!((v.copy_type, v.sync_state), (ct, 6), "{v:?}");
    }
}

#[test]
fn a_restore_is_followed_to_the_end_by_a_new_daemon() {
    // a Sync mirror on a raid1: the new daemon knows it is one from its metadata
    let w = world(&[64 * MB, 65 * MB]);
    synced_pair(&w, 3);
    assert_eq!(modify_tgt(&w, 3).return_value, 0);
    w.sim.set_sync_step(SyncStep::Percent(0));
    assert_eq!(restore(&w, "src/tgt", false).return_value, 4096);
    let e2 = Engine::new(w.cfs.clone(), w.sim.clone(), opts()).unwrap();
    let v = &e2.relationships().unwrap()[0];
    assert_eq!(v.sync_state, SyncState::RestoreInProgress.value(), "{v:?}");
    // (a clone cannot join the source meanwhile)
    w.sim.set_sync_step(SyncStep::Percent(50));
    let jobs = e2.jobs().list();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let j = e2
        .jobs()
        .wait(&jobs[0].instance_id, Duration::from_secs(20))
        .unwrap();
    assert_eq!(j.job_state, 7, "{j:?}");
    let t = w.table_of("real-src");
    assert!(
        t.contains("raid raid1") && t.contains("nosync") && !t.contains("write_mostly"),
        "{t}"
    );
    let v = &e2.relationships().unwrap()[0];
    assert_eq!((v.copy_type, v.sync_state), (3, 6), "{v:?}");
    assert!(v.change_tracking, "{v:?}");
}

#[test]
fn a_leg_failing_during_a_restore() {
    for (leg, table, why) in [
        // the source's disk: the LUN moves onto the target's, which holds the whole image
        (1, "0 131072 linear 8:16 0", "now runs on the target's disk"),
        // the target's disk: the source is served alone, partly restored
        (0, "0 131072 linear 8:0 0", "partly restored"),
    ] {
        let w = world(&[64 * MB, 65 * MB]);
        synced_pair(&w, 3);
        assert_eq!(modify_tgt(&w, 3).return_value, 0);
        w.sim.set_sync_step(SyncStep::Percent(0));
        let r = restore(&w, "src/tgt", false);
        w.sim
            .set_leg_failed(&DmName::new("real-src").unwrap(), leg)
            .unwrap();
        let j = w.wait_job(r.job.as_ref().unwrap());
        assert_eq!(j.job_state, 10, "leg {leg}: {j:?}");
        assert_eq!(w.table_of("real-src"), table, "leg {leg}");
        let v = &w.rels()[0];
        assert_eq!(v.sync_state, 12, "leg {leg}: {v:?}");
        assert!(
            v.progress_status.as_deref().unwrap().contains(why),
            "leg {leg}: {v:?}"
        );
    }
}

#[test]
fn a_restore_whose_job_failed_at_its_very_end_is_ended_by_a_new_daemon() {
    // the merge completes, then the release of the spent snapshot's shim, or the removal of
    // the record, fails
    for (op, dev) in [(SimOp::Load, "so-s0"), (SimOp::Remove, "rec4-s0")] {
        let w = restore_world();
        w.sim.set_sync_step(SyncStep::Percent(0));
        let r = restore(&w, "src/s0", true);
        assert_eq!(r.return_value, 4096, "{r:?}");
        w.sim
            .fail_next(op, Some(dev), crate::error::Error::Other("EIO".into()));
        w.sim.set_sync_step(SyncStep::Percent(50));
        let j = w.wait_job(r.job.as_ref().unwrap());
        assert_eq!(j.job_state, 10, "{dev}: {j:?}");
        assert!(w.table_of("so-src").contains("snapshot-origin"));
        let e2 = Engine::new(w.cfs.clone(), w.sim.clone(), opts()).unwrap();
        assert_eq!(
            ids(&e2.relationships().unwrap()),
            vec!["src/s1".to_string()],
            "{dev}"
        );
        assert!(w.table_of("so-s0").contains("linear"), "{dev}");
        assert!(!w.has_device("rec4-s0"), "{dev}");
    }
}

#[test]
fn a_mirror_restore_in_sync_is_not_synchronized_until_its_own_table_is_back() {
    let w = world(&[64 * MB; 2]);
    synced_pair(&w, 3);
    assert_eq!(modify_tgt(&w, 3).return_value, 0);
    w.sim.set_sync_step(SyncStep::Percent(0));
    let r = restore(&w, "src/tgt", true);
    assert_eq!(r.return_value, 4096, "{r:?}");
    // the restore copies everything, then loading the own table fails
    w.sim.fail_next(
        SimOp::Load,
        Some("real-src"),
        crate::error::Error::Other("ENOMEM".into()),
    );
    w.sim.set_sync_step(SyncStep::Percent(100));
    let j = w.wait_job(r.job.as_ref().unwrap());
    assert_eq!(j.job_state, 10, "{j:?}");
    assert!(w
        .table_of("real-src")
        .contains("mirror core 1 4096 2 8:16 0 8:0 0 "));
    let v = &w.rels()[0];
    assert_eq!(v.sync_state, SyncState::RestoreInProgress.value(), "{v:?}");
    assert!(
        v.progress_status
            .as_deref()
            .unwrap()
            .contains("own table goes back in"),
        "{v:?}"
    );
    // a new daemon finishes it
    let e2 = Engine::new(w.cfs.clone(), w.sim.clone(), opts()).unwrap();
    let jobs = e2.jobs().list();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let j = e2
        .jobs()
        .wait(&jobs[0].instance_id, Duration::from_secs(20))
        .unwrap();
    assert_eq!(j.job_state, 7, "{j:?}");
    assert!(w.table_of("real-src").contains(" 2 8:0 0 8:16 0 "));
    assert_eq!(e2.relationships().unwrap()[0].sync_state, 6);
}

#[test]
fn a_raid1_source_disk_failing_is_reported_and_restore_brings_it_back() {
    // Async, and Sync on a raid1 (its target has the room)
    for ct in [2u16, 3] {
        let w = world(&[64 * MB, 65 * MB]);
        synced_pair(&w, ct);
        let real = DmName::new("real-src").unwrap();
        w.sim.set_leg_failed(&real, 0).unwrap();
        let v = &w.rels()[0];
        assert_eq!(v.sync_state, 12, "{v:?}");
        let why = v.progress_status.clone().unwrap();
        assert!(
            why.contains("(the source's disk)") && why.contains("served from the target's disk"),
            "{why}"
        );
        // Resync would copy the failed disk: refused, pointing at Restore
        let before = w.state();
        let m = modify_tgt(&w, 4);
        assert_eq!(m.return_value, 5, "{m:?}");
        assert!(m.description.unwrap().contains("Restore (Operation 5)"));
        assert_eq!(w.state(), before);
        // the disk is back: Restore copies the target onto it, then the raid1 again
        w.sim.set_sync_step(SyncStep::Percent(0));
        let m = restore(&w, "src/tgt", false);
        assert_eq!(m.return_value, 4096, "{m:?}");
        assert!(w
            .table_of("real-src")
            .contains("mirror core 1 4096 2 8:16 0 8:0 0 "));
        assert_eq!(w.rels()[0].sync_state, SyncState::RestoreInProgress.value());
        w.sim.set_sync_step(SyncStep::Percent(50));
        assert_eq!(w.wait_job(m.job.as_ref().unwrap()).job_state, 7);
        let t = w.table_of("real-src");
        assert!(t.contains("raid raid1") && t.contains("nosync"), "{t}");
        let v = &w.rels()[0];
        assert_eq!((v.copy_type, v.sync_state), (ct, 6), "{v:?}");
    }
}

#[test]
fn a_raid1_target_disk_failing_says_the_source_serves_alone() {
    // Async, and Sync on a raid1 (its target has the room)
    for ct in [2u16, 3] {
        let w = world(&[64 * MB, 65 * MB]);
        synced_pair(&w, ct);
        w.sim
            .set_leg_failed(&DmName::new("real-src").unwrap(), 1)
            .unwrap();
        let v = &w.rels()[0];
        assert_eq!(v.sync_state, 12, "{v:?}");
        let why = v.progress_status.clone().unwrap();
        assert!(
            why.contains("(the target's disk)") && why.contains("the source's disk serves alone"),
            "{why}"
        );
        // a Restore needs the target whole
        assert_eq!(restore(&w, "src/tgt", false).return_value, 5);
    }
}

#[test]
fn a_copy_beside_a_broken_sync_mirror_leaves_the_failed_leg_out_and_resync_brings_it_back() {
    let w = world(&[64 * MB; 3]);
    synced_pair(&w, 3);
    w.sim
        .set_leg_failed(&DmName::new("real-src").unwrap(), 1)
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while w.table_of("real-src") != "0 131072 linear 8:0 0" && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(w.table_of("real-src"), "0 131072 linear 8:0 0");
    w.iblock("c", 2);
    w.sim.set_sync_step(SyncStep::Percent(0));
    let c = w.attach("block/src", "block/c", 5);
    assert_eq!(c.return_value, 4096, "{c:?}");
    let t = w.table_of("real-src");
    assert!(
        t.contains(" 2 8:0 0 8:32 0 "),
        "the broken target's leg stays out: {t}"
    );
    w.sim.set_sync_step(SyncStep::Percent(50));
    assert_eq!(w.wait_job(c.job.as_ref().unwrap()).job_state, 7);
    assert_eq!(w.table_of("real-src"), "0 131072 linear 8:0 0");
    assert_eq!(w.rels()[0].sync_state, 12);
    // its Resync puts its own leg back
    let m = modify_tgt(&w, 4);
    assert_eq!(m.return_value, 4096, "{m:?}");
    assert!(w.table_of("real-src").contains(" 2 8:0 0 8:16 0 "));
    assert_eq!(w.wait_job(m.job.as_ref().unwrap()).job_state, 7);
    assert_eq!(w.rels()[0].sync_state, 6);
}

#[test]
fn a_source_disk_failing_under_a_sync_mirror_shared_with_a_copy_moves_the_lun_and_ends_the_copy() {
    let w = world(&[64 * MB; 3]);
    synced_pair(&w, 3);
    w.iblock("c", 2);
    w.sim.set_sync_step(SyncStep::Percent(0));
    let c = w.attach("block/src", "block/c", 5);
    assert_eq!(c.return_value, 4096, "{c:?}");
    assert!(w.table_of("real-src").contains(" 3 8:0 0 8:16 0 8:32 0 "));
    w.sim
        .set_leg_failed(&DmName::new("real-src").unwrap(), 0)
        .unwrap();
    let j = w.wait_job(c.job.as_ref().unwrap());
    assert_eq!(j.job_state, 10, "{j:?}");
    // whichever saw it first, the LUN is on the target's disk, which the mirror kept whole,
    // and no table holds the failed disk's writes any more
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while w.table_of("real-src") != "0 131072 linear 8:16 0" && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        w.table_of("real-src"),
        "0 131072 linear 8:16 0",
        "{:?} {j:?}",
        w.rels()
    );
    assert!(w.table_of("so-tgt").contains(" error"));
    let rels = w.rels();
    assert_eq!(ids(&rels), vec!["src/tgt".to_string()], "{rels:?}");
    assert_eq!(rels[0].sync_state, 12);
    assert!(rels[0]
        .progress_status
        .as_deref()
        .unwrap()
        .contains("runs on the target's disk"));
    assert!(!w.has_device("rec5-c"));
    // Detach leaves the source there
    assert_eq!(modify_tgt(&w, 2).return_value, 0);
    assert_eq!(w.table_of("so-src"), "0 131072 linear 8:16 0");
}

#[test]
fn a_raid1_target_leg_that_failed_and_came_back_copies_only_what_changed() {
    for ct in [2u16, 3] {
        let w = world(&[64 * MB, 65 * MB]);
        synced_pair(&w, ct);
        let real = DmName::new("real-src").unwrap();
        let full = w.table_of("real-src");
        w.sim.set_leg_failed(&real, 1).unwrap();
        assert_eq!(w.rels()[0].sync_state, 12);
        // not while the disk does not answer: md could not write out what its bitmap holds
        w.sim.set_disk_failed(Devno::new(8, 16), true);
        let before = w.state();
        let m = modify_tgt(&w, 4);
        assert_eq!(m.return_value, 5, "{ct}: {m:?}");
        assert!(m.description.unwrap().contains("does not answer"));
        assert_eq!(w.state(), before);
        w.sim.set_disk_failed(Devno::new(8, 16), false);
        // the same raid1 again, on the same metadata: md tries the leg again from its bitmap
        w.sim.clear_calls();
        let m = modify_tgt(&w, 4);
        assert_eq!(m.return_value, 4096, "{ct}: {m:?}");
        assert_eq!(real_loads(&w), vec![full.clone()], "{ct}");
        let j = w.wait_job(m.job.as_ref().unwrap());
        assert_eq!(j.job_state, 7, "{ct}: {j:?}");
        assert_eq!(w.rels()[0].sync_state, 6);
        // written through its own LUN meanwhile: the bitmap does not know, everything again
        w.sim.set_leg_failed(&real, 1).unwrap();
        w.sim
            .add_sectors_written(&DmName::new("so-tgt").unwrap(), 8);
        w.sim.clear_calls();
        let m = modify_tgt(&w, 4);
        assert_eq!(m.return_value, 4096, "{ct}: {m:?}");
        let loads = real_loads(&w);
        assert_eq!(loads.len(), 2, "{ct}: {loads:?}");
        assert!(loads[0].contains(" linear 8:0 0"), "{ct}: {loads:?}");
        assert_eq!(w.wait_job(m.job.as_ref().unwrap()).job_state, 7);
        // and so does a new daemon, which cannot know what was written
        w.sim.set_leg_failed(&real, 1).unwrap();
        let e2 = Engine::new(w.cfs.clone(), w.sim.clone(), opts()).unwrap();
        w.sim.clear_calls();
        let m = e2.modify_synchronization("src/tgt", 4, false);
        assert_eq!(m.return_value, 4096, "{ct}: {m:?}");
        assert_eq!(real_loads(&w).len(), 2, "{ct}");
    }
}

#[test]
fn adoption_is_refused_while_the_backstore_holds_reservations_or_alua_groups() {
    let w = world(&[64 * MB; 2]);
    exported_pair(&w);
    let so = w.cfs.find_storage_object(&Plugin::Block, "src").unwrap();
    let put = |rel: &str, text: &str| {
        let p = so.path.join(rel);
        let mut perm = std::fs::metadata(&p).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o644);
        std::fs::set_permissions(&p, perm).unwrap();
        std::fs::write(&p, text).unwrap();
    };
    let refused = |text: &str| {
        let before = w.state();
        for r in [
            w.engine.adopt("block/src"),
            w.attach("block/src", "block/tgt", 3),
        ] {
            assert_eq!(r.return_value, 6, "{r:?}");
            let d = r.description.unwrap();
            assert!(d.contains("cannot be adopted") && d.contains(text), "{d}");
        }
        assert_eq!(w.state(), before);
    };
    put(
        "pr/res_pr_registered_i_pts",
        "SPC-3 PR Registrations:\niSCSI Node: iqn.1993-08.org.debian:01:host7,i,0x23d000000 Key: 0x0000000000001234 PRgen: 0x00000000\n",
    );
    put(
        "pr/res_holder",
        "SPC-3 Reservation: iSCSI Initiator: iqn.1993-08.org.debian:01:host7,i,0x23d000000\n",
    );
    refused("registrations: iSCSI Node: iqn.1993-08.org.debian:01:host7");
    refused("a reservation: SPC-3 Reservation");
    put(
        "pr/res_pr_registered_i_pts",
        "SPC-3 PR Registrations:\nNone\n",
    );
    put("pr/res_holder", "No SPC-3 Reservation holder\n");
    std::fs::create_dir(so.path.join("alua/site-a")).unwrap();
    refused("ALUA target port groups: site-a");
    std::fs::remove_dir(so.path.join("alua/site-a")).unwrap();
    put("alua_lu_gp", "LU Group Alias: cluster\nLU Group ID: 3\n");
    refused("the ALUA LU group cluster");
    put(
        "alua_lu_gp",
        "LU Group Alias: default_lu_gp\nLU Group ID: 0\n",
    );
    assert_eq!(w.engine.adopt("block/src").return_value, 0);
}
