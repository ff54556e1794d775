//! A real engine on a fake configfs tree and the simulated device-mapper, for the hostile-input,
//! fuzz and stress tests: block backstores on sparse temporary files registered as disks.
//!
//! Every configfs change goes through [`Guard`], which resolves the directory it lands in
//! (following symlinks, as the kernel's path walk would) and records any change that would
//! land outside the configfs root. Such a change is carried out only inside the world's
//! sentinel directory `outside` (so a test can also see it there) and refused anywhere else,
//! so a bug cannot touch the host running the tests.
#![allow(dead_code)]

use lio_replica::configfs::fake::{tree_listing, FakeFs};
use lio_replica::configfs::{ConfigFs, FsOps, IblockSpec, StorageObject};
use lio_replica::dm::{Sectors, SimDm};
use lio_replica::engine::{Engine, Options};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// [`FsOps`] over the fake that notices changes escaping the root through symlinks.
pub struct Guard {
    inner: Arc<FakeFs>,
    /// canonical configfs root
    root: PathBuf,
    /// canonical directory where an escaping change is let through (to be seen there)
    sentinel: PathBuf,
    escapes: Mutex<Vec<String>>,
}

impl Guard {
    /// Every change so far that resolved outside the root.
    pub fn escapes(&self) -> Vec<String> {
        self.escapes.lock().unwrap().clone()
    }

    /// Where `p` really is: its parent directory resolved, plus its own name.
    fn resolve(p: &Path) -> Option<PathBuf> {
        let parent = std::fs::canonicalize(p.parent()?).ok()?;
        Some(parent.join(p.file_name()?))
    }

    fn check(&self, op: &str, p: &Path) -> io::Result<()> {
        // A parent that does not exist: the operation itself fails with ENOENT.
        let Some(real) = Self::resolve(p) else {
            return Ok(());
        };
        if real.starts_with(&self.root) {
            return Ok(());
        }
        self.escapes.lock().unwrap().push(format!(
            "{op} {} lands at {}",
            p.display(),
            real.display()
        ));
        if real.starts_with(&self.sentinel) {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(nix::libc::EPERM))
        }
    }
}

impl FsOps for Guard {
    fn mkdir(&self, path: &Path) -> io::Result<()> {
        self.check("mkdir", path)?;
        self.inner.mkdir(path)
    }
    fn rmdir(&self, path: &Path) -> io::Result<()> {
        self.check("rmdir", path)?;
        self.inner.rmdir(path)
    }
    fn write(&self, path: &Path, value: &str) -> io::Result<()> {
        self.check("write", path)?;
        self.inner.write(path, value)
    }
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        self.check("symlink", link)?;
        let full = if target.is_absolute() {
            target.to_path_buf()
        } else {
            link.parent().unwrap_or(Path::new("/")).join(target)
        };
        if let Ok(t) = std::fs::canonicalize(&full) {
            if !t.starts_with(&self.root) {
                self.escapes.lock().unwrap().push(format!(
                    "symlink {} points outside the root, at {}",
                    link.display(),
                    t.display()
                ));
                return Err(io::Error::from_raw_os_error(nix::libc::EPERM));
            }
        }
        self.inner.symlink(target, link)
    }
    fn unlink(&self, link: &Path) -> io::Result<()> {
        self.check("unlink", link)?;
        self.inner.unlink(link)
    }
}

/// 512-byte sectors in a MiB.
pub const MB: u64 = 2048;

pub struct World {
    pub dir: tempfile::TempDir,
    /// A sentinel directory beside (not under) the configfs root; tests plant links to it.
    pub outside: tempfile::TempDir,
    pub cfs: ConfigFs,
    pub fake: Arc<FakeFs>,
    pub guard: Arc<Guard>,
    pub sim: Arc<SimDm>,
    pub engine: Engine,
}

/// Short waits, small raid metadata areas: tests finish quickly.
pub fn fast_options() -> Options {
    Options {
        poll_interval: Duration::from_millis(5),
        stop_wait: Duration::from_secs(10),
        suspend_timeout: Duration::from_millis(500),
        raid_meta_sectors: Sectors(64),
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
        let outside = tempfile::Builder::new()
            .prefix("lrw-out")
            .tempdir()
            .unwrap();
        let root = dir.path().join("target");
        FakeFs::create_root(&root).unwrap();
        let fake = Arc::new(FakeFs::with_root(&root));
        let guard = Arc::new(Guard {
            inner: fake.clone(),
            root: std::fs::canonicalize(&root).unwrap(),
            sentinel: std::fs::canonicalize(outside.path()).unwrap(),
            escapes: Mutex::new(Vec::new()),
        });
        let cfs = ConfigFs::with_ops(
            &root,
            guard.clone() as Arc<dyn FsOps>,
            dir.path().join("rtslib_backstore.lock"),
        );
        let sim = Arc::new(SimDm::with_dir(dir.path().join("dm")));
        std::fs::create_dir_all(dir.path().join("disks")).unwrap();
        for (k, s) in sizes.iter().enumerate() {
            let p = dir.path().join("disks").join(format!("d{k}"));
            std::fs::File::create(&p)
                .unwrap()
                .set_len(Sectors(*s).bytes())
                .unwrap();
            sim.add_disk(&p, Sectors(*s));
        }
        let engine = Engine::new(cfs.clone(), sim.clone(), opts).unwrap();
        World {
            dir,
            outside,
            cfs,
            fake,
            guard,
            sim,
            engine,
        }
    }

    /// Everything in the sentinel directory: names, modes, contents, link targets.
    pub fn outside_listing(&self) -> Vec<String> {
        tree_listing(self.outside.path())
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
        (tree_listing(self.cfs.root()), self.sim.listing().unwrap())
    }
}
