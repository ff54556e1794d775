//! A real engine on a fake configfs tree and the simulated device-mapper: block backstores on
//! sparse temporary files registered as disks.
//!
//! A world made by [`World::guarded`] (or [`WorldBuilder::guarded`]) sends every configfs
//! change through [`Guard`], which resolves the directory it lands in (following symlinks, as
//! the kernel's path walk would) and records any change that would land outside the configfs
//! root. Such a change is carried out only inside the world's sentinel directory
//! [`World::outside`] (so a test can also see it there) and refused anywhere else, so a bug
//! cannot touch the host running the tests.

use crate::configfs::fake::{tree_listing, FakeFs};
use crate::configfs::{ConfigFs, FsOps, IblockSpec, StorageObject};
use crate::dm::{DmBackend, DmName, Sectors, SimDm};
use crate::engine::{Engine, Options};
use crate::service::{JobView, MethodResult, RelationshipView, Service};
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
    /// A guard over `inner`, whose root is `root`, letting escaping changes through only under
    /// `sentinel`.
    pub fn new(inner: Arc<FakeFs>, root: &Path, sentinel: &Path) -> io::Result<Guard> {
        Ok(Guard {
            inner,
            root: std::fs::canonicalize(root)?,
            sentinel: std::fs::canonicalize(sentinel)?,
            escapes: Mutex::new(Vec::new()),
        })
    }

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

/// A fake configfs tree (at `dir/target`), the simulated device-mapper (keeping its devices
/// under `dir/dm`), disks `dir/disks/d0..dN` and an engine over them.
pub struct World {
    pub dir: tempfile::TempDir,
    /// A sentinel directory beside (not under) the configfs root, in a guarded world.
    outside: Option<tempfile::TempDir>,
    pub cfs: ConfigFs,
    pub fake: Arc<FakeFs>,
    guard: Option<Arc<Guard>>,
    pub sim: Arc<SimDm>,
    pub engine: Engine,
}

/// How to make a [`World`]: disk sizes, engine options, whether the engine keeps a journal
/// and whether configfs changes go through a [`Guard`].
pub struct WorldBuilder {
    sizes: Vec<u64>,
    options: Options,
    state_dir: bool,
    guarded: bool,
}

impl WorldBuilder {
    /// The engine's options (default: [`fast_options`]).
    pub fn options(mut self, options: Options) -> WorldBuilder {
        self.options = options;
        self
    }

    /// The engine keeps its journal in the world's `state` directory.
    pub fn state_dir(mut self) -> WorldBuilder {
        self.state_dir = true;
        self
    }

    /// Configfs changes go through a [`Guard`], with a sentinel directory outside the root.
    pub fn guarded(mut self) -> WorldBuilder {
        self.guarded = true;
        self
    }

    pub fn build(self) -> World {
        let dir = tempfile::Builder::new().prefix("lrw").tempdir().unwrap();
        let root = dir.path().join("target");
        FakeFs::create_root(&root).unwrap();
        let fake = Arc::new(FakeFs::with_root(&root));
        let (outside, guard) = if self.guarded {
            let outside = tempfile::Builder::new()
                .prefix("lrw-out")
                .tempdir()
                .unwrap();
            let guard = Guard::new(fake.clone(), &root, outside.path()).unwrap();
            (Some(outside), Some(Arc::new(guard)))
        } else {
            (None, None)
        };
        let ops: Arc<dyn FsOps> = match &guard {
            Some(g) => g.clone(),
            None => fake.clone(),
        };
        let cfs = ConfigFs::with_ops(&root, ops, dir.path().join("rtslib_backstore.lock"));
        let sim = Arc::new(SimDm::with_dir(dir.path().join("dm")));
        std::fs::create_dir_all(dir.path().join("disks")).unwrap();
        for (k, s) in self.sizes.iter().enumerate() {
            let p = dir.path().join("disks").join(format!("d{k}"));
            super::sparse_file(&p, Sectors(*s).bytes()).unwrap();
            sim.add_disk(&p, Sectors(*s));
        }
        let mut opts = self.options;
        if self.state_dir {
            opts.state_dir = Some(dir.path().join("state"));
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
}

impl World {
    /// Disks `d0..dN` of the given sizes (sectors): sparse files, registered with the
    /// simulator. Fast options, no journal, no guard.
    pub fn new(sizes: &[u64]) -> World {
        World::builder(sizes).build()
    }

    /// As [`World::new`], with every configfs change going through a [`Guard`].
    pub fn guarded(sizes: &[u64]) -> World {
        World::builder(sizes).guarded().build()
    }

    pub fn builder(sizes: &[u64]) -> WorldBuilder {
        WorldBuilder {
            sizes: sizes.to_vec(),
            options: fast_options(),
            state_dir: false,
            guarded: false,
        }
    }

    /// The guard every configfs change goes through. Panics unless the world is guarded.
    pub fn guard(&self) -> &Guard {
        self.guard.as_deref().expect("a guarded world")
    }

    /// The sentinel directory beside (not under) the configfs root; tests plant links to it.
    /// Panics unless the world is guarded.
    pub fn outside(&self) -> &Path {
        self.outside.as_ref().expect("a guarded world").path()
    }

    /// Everything in the sentinel directory: names, modes, contents, link targets.
    pub fn outside_listing(&self) -> Vec<String> {
        tree_listing(self.outside())
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

    /// Export `so` as LUN 3 of an iSCSI TPG, mapped (write-protected) as LUN 7 to one
    /// initiator; returns the TPG.
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

    /// The whole observable state: the configfs tree, and every dm device with its live table
    /// followed by the metadata files in the state directory, sorted.
    pub fn state(&self) -> (Vec<String>, Vec<String>) {
        let mut dm = self.sim.listing().unwrap();
        let meta = crate::engine::names::meta_dir(&self.dir.path().join("state"));
        let mut files: Vec<String> = std::fs::read_dir(&meta)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| format!("file raid-meta/{}", e.file_name().to_string_lossy()))
            .collect();
        files.sort();
        dm.extend(files);
        (tree_listing(self.cfs.root()), dm)
    }

    pub fn attach(&self, source: &str, target: &str, copy_type: u16) -> MethodResult {
        self.engine.attach_replica(source, target, copy_type)
    }

    /// The job `id` once it has finished (waiting up to 20 s).
    pub fn wait_job(&self, id: &str) -> JobView {
        self.engine
            .jobs()
            .wait(id, Duration::from_secs(20))
            .unwrap()
    }

    /// The live table of our dm device `suffix`, formatted.
    pub fn table_of(&self, suffix: &str) -> String {
        let n = DmName::new(suffix).unwrap();
        crate::dm::table::format_table(&self.sim.table(&n).unwrap())
    }

    /// Whether our dm device `suffix` exists.
    pub fn has_device(&self, suffix: &str) -> bool {
        let n = DmName::new(suffix).unwrap();
        self.sim.info(&n).unwrap().is_some()
    }

    pub fn rels(&self) -> Vec<RelationshipView> {
        self.engine.relationships().unwrap()
    }
}
