//! A real engine on a fake configfs tree and the simulated device-mapper, for the hostile-input,
//! fuzz and stress tests: block backstores on sparse temporary files registered as disks.
#![allow(dead_code)]

use lio_replica::configfs::fake::{fake_tree, tree_listing, FakeFs};
use lio_replica::configfs::{ConfigFs, IblockSpec, StorageObject};
use lio_replica::dm::{DmBackend, SimDm};
use lio_replica::engine::{Engine, Options};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// 512-byte sectors in a MiB.
pub const MB: u64 = 2048;

pub struct World {
    pub dir: tempfile::TempDir,
    pub cfs: ConfigFs,
    pub fake: Arc<FakeFs>,
    pub sim: Arc<SimDm>,
    pub engine: Engine,
}

/// Short waits, small raid metadata areas: tests finish quickly.
pub fn fast_options() -> Options {
    Options {
        poll_interval: Duration::from_millis(5),
        stop_wait: Duration::from_secs(10),
        suspend_timeout: Duration::from_millis(500),
        raid_meta_sectors: 64,
        ..Options::default()
    }
}

impl World {
    /// Disks `d0..dN` of the given sizes (sectors): sparse files, registered with the simulator.
    pub fn new(sizes: &[u64]) -> World {
        World::with_options(sizes, fast_options())
    }

    pub fn with_options(sizes: &[u64], opts: Options) -> World {
        let dir = tempfile::Builder::new().prefix("lrw").tempdir().unwrap();
        let (cfs, fake) = fake_tree(dir.path());
        let sim = Arc::new(SimDm::with_dir(dir.path().join("dm")));
        std::fs::create_dir_all(dir.path().join("disks")).unwrap();
        for (k, s) in sizes.iter().enumerate() {
            let p = dir.path().join("disks").join(format!("d{k}"));
            std::fs::File::create(&p).unwrap().set_len(s * 512).unwrap();
            sim.add_disk(&p, *s);
        }
        let engine = Engine::new(cfs.clone(), sim.clone(), opts).unwrap();
        World {
            dir,
            cfs,
            fake,
            sim,
            engine,
        }
    }

    pub fn root(&self) -> &Path {
        self.cfs.root()
    }

    pub fn disk(&self, k: usize) -> PathBuf {
        self.dir.path().join("disks").join(format!("d{k}"))
    }

    /// A block backstore `name` on disk `k`.
    pub fn iblock(&self, name: &str, disk: usize) -> StorageObject {
        let mut attributes = BTreeMap::new();
        attributes.insert("emulate_tpu".to_string(), "1".to_string());
        self.cfs
            .create_iblock(&IblockSpec {
                name: name.into(),
                hba: None,
                dev: self.disk(disk),
                wwn: Some(format!("5e2e0000-0000-4000-8000-{disk:012}")),
                readonly: false,
                attributes,
            })
            .unwrap()
    }

    /// Export `so` as LUN 3 of an iSCSI TPG, mapped as LUN 7 to one initiator; returns the TPG.
    pub fn export(&self, so: &StorageObject, iqn: &str) -> PathBuf {
        let tpg = self.cfs.create_tpg("iscsi", iqn, 1).unwrap();
        self.cfs.create_lun(&tpg, 3, so, "lnk_x").unwrap();
        let acl = self
            .cfs
            .create_node_acl(&tpg, "iqn.1993-08.org.debian:01:init")
            .unwrap();
        self.cfs
            .create_mapped_lun(&acl, 7, 3, "mlnk", true)
            .unwrap();
        self.cfs.set_tpg_enabled(&tpg, true).unwrap();
        tpg
    }

    /// The configfs tree and every dm device with its live table, sorted.
    pub fn state(&self) -> (Vec<String>, Vec<String>) {
        let mut dm: Vec<String> = self
            .sim
            .list()
            .unwrap()
            .into_iter()
            .map(|d| {
                let t = self.sim.table(&d.name).unwrap();
                format!("{} {} {:?}", d.name, d.suspended, t)
            })
            .collect();
        dm.sort();
        (tree_listing(self.cfs.root()), dm)
    }
}
