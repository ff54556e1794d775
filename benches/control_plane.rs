//! Control-plane benchmark on the host: no VM, no root, no kernel.
//!
//! * Enumerating storage objects on a fake configfs tree of `BENCH_OBJECTS` (10,000) iblock
//!   objects shaped like the kernel's (the fake's own object layout, one `iblock_N` HBA per
//!   object as targetcli makes them, each on its own sparse disk image), once with no
//!   exports and once with every object exported through a LUN (100 iSCSI targets). Timed:
//!   `ConfigFs::storage_objects()`, the engine's `Service::storage_objects()` (SimDm), and the
//!   API's EnumerateStorageObjects against `lio-replica serve --dm sim` on that tree.
//!   Baselines, same tree, same run: a plain `walkdir` over it, a walk that also reads every
//!   readable file, and the files a listing reads, read on one thread without checks.
//! * Memory: the daemon's VmRSS at rest, after `BENCH_JOBS` (10,000) UnSyncUnAssoc jobs
//!   (simulated device-mapper, so each job takes milliseconds), and on the big tree; the
//!   in-memory job table on its own (`JobManager`, same number of jobs, in this process).
//!
//! * CIM-XML: the daemons above also serve CIM-XML over HTTPS (a self-signed certificate made
//!   by `openssl`); EnumerateInstances of the tree's volumes and the AttachReplica round trip,
//!   each over one kept-alive HTTPS connection, against the same calls over JSON-RPC.
//!
//! Prints `BENCH key value` lines and Markdown table rows (`BENCHROW | ... |`), which
//! `scripts/bench` collects into BENCHMARKS.md. Run: `cargo bench --bench control_plane`.
//! The trees are built in `BENCH_DIR` (default `/dev/shm` if it is there: configfs lives in
//! memory too; else the temporary directory), one at a time (about 3 GiB each on tmpfs), and
//! removed after use.

use lio_replica::api::Client;
use lio_replica::configfs::fake::{fake_tree, FakeFs};
use lio_replica::configfs::{ConfigFs, FsOps, IblockSpec};
use lio_replica::dm::SimDm;
use lio_replica::engine::{Engine, Options};
use lio_replica::jobs::{JobManager, JobSpec};
use lio_replica::names::Plugin;
use lio_replica::service::Service;
use lio_replica::testing::cim::{class_name, reference, uint16, CimClient};
use lio_replica::testing::sparse_file;
use lio_replica::wbem::provider::NS_STORAGE;
use lio_replica::wbem::xml::{Call, IReturn, KeyValue, ObjectPath as CimPath, Response};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Placeholders in the template tree, replaced by each copy's numbers.
const M_OBJ: &str = "777777";
const M_TGT: &str = "888888";
const M_LUN: &str = "999999";
/// Timed repetitions (after one warm-up); the median is reported.
const REPEAT: usize = 3;
/// Targets the exported tree spreads its LUNs over.
const TARGETS: usize = 100;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn bench(key: &str, value: impl std::fmt::Display) {
    println!("BENCH {key} {value}");
}

fn row(cols: [&str; 5]) {
    println!("BENCHROW | {} |", cols.join(" | "));
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Median wall time of `f` over REPEAT runs after one warm-up; `f` returns a count that must
/// stay the same from run to run (entries, objects), returned too.
fn time_median(mut f: impl FnMut() -> usize) -> (Duration, usize) {
    let n = f();
    let mut t: Vec<Duration> = (0..REPEAT)
        .map(|_| {
            let t0 = Instant::now();
            let m = f();
            let e = t0.elapsed();
            assert_eq!(m, n, "a repetition saw a different count");
            e
        })
        .collect();
    t.sort();
    (t[REPEAT / 2], n)
}

fn status_kb(pid: &str, field: &str) -> u64 {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

// ---------------------------------------------------------------------------------------------
// The tree

/// One entry of a captured subtree (path relative to the configfs root).
enum Node {
    Dir(String),
    File(String, u32, String),
    Link(String, String),
}

/// Everything under `root/rel`, in walk order (parents first).
fn capture(root: &Path, rel: &str) -> Vec<Node> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(root.join(rel)).follow_links(false) {
        let e = e.expect("walk the template");
        let r = e
            .path()
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let md = fs::symlink_metadata(e.path()).unwrap();
        if md.file_type().is_symlink() {
            let t = fs::read_link(e.path()).unwrap();
            out.push(Node::Link(r, t.to_string_lossy().into_owned()));
        } else if md.is_dir() {
            out.push(Node::Dir(r));
        } else {
            let c = fs::read_to_string(e.path()).unwrap_or_default();
            out.push(Node::File(r, md.permissions().mode() & 0o7777, c));
        }
    }
    out
}

/// Write a captured subtree under `root`, with `subst` applied to names, contents and links.
fn replay(nodes: &[Node], root: &Path, subst: &dyn Fn(&str) -> String) {
    for n in nodes {
        match n {
            Node::Dir(r) => fs::create_dir(root.join(subst(r))).expect("mkdir"),
            Node::File(r, mode, c) => {
                let p = root.join(subst(r));
                fs::write(&p, subst(c)).expect("write");
                fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).expect("chmod");
            }
            Node::Link(r, t) => {
                std::os::unix::fs::symlink(subst(t), root.join(subst(r))).expect("symlink")
            }
        }
    }
}

struct Template {
    root: PathBuf,
    object: Vec<Node>,
    object_exported: Vec<Node>,
    fabric: Vec<Node>,
    target: Vec<Node>,
    lun: Vec<Node>,
}

/// One object made by the product's own `create_iblock` on the fake configfs, captured before
/// and after it is exported through a LUN of an enabled TPG.
fn template(dir: &Path) -> Template {
    let (cfs, _fake) = fake_tree(&dir.join("template"));
    let disk = dir.join("disks").join(format!("d{M_OBJ}.img"));
    let so = cfs
        .create_iblock(&IblockSpec {
            name: format!("bench{M_OBJ}"),
            hba: Some(format!("iblock_{M_OBJ}")),
            dev: disk,
            wwn: Some(format!("5e2e0000-0000-4000-8000-000000{M_OBJ}")),
            readonly: false,
            attributes: Default::default(),
        })
        .expect("create the template object");
    let root = cfs.root().to_path_buf();
    let obj_rel = format!("core/iblock_{M_OBJ}");
    let object = capture(&root, &obj_rel);
    let wwn = format!("iqn.2003-01.org.linux-iscsi.bench:t{M_TGT}");
    let tpg = cfs.create_tpg("iscsi", &wwn, 1).expect("template TPG");
    cfs.create_lun(&tpg, M_LUN.parse().unwrap(), &so, &format!("lnk{M_LUN}"))
        .expect("template LUN");
    cfs.set_tpg_enabled(&tpg, true)
        .expect("enable template TPG");
    let object_exported = capture(&root, &obj_rel);
    let lun_rel = format!("iscsi/{wwn}/tpgt_1/lun/lun_{M_LUN}");
    let lun = capture(&root, &lun_rel);
    let mut target = capture(&root, &format!("iscsi/{wwn}"));
    target.retain(|n| {
        let (Node::Dir(r) | Node::File(r, ..) | Node::Link(r, _)) = n;
        !r.starts_with(&lun_rel)
    });
    let mut fabric = capture(&root, "iscsi");
    fabric.retain(|n| {
        let (Node::Dir(r) | Node::File(r, ..) | Node::Link(r, _)) = n;
        !r.starts_with(&format!("iscsi/{wwn}"))
    });
    Template {
        root,
        object,
        object_exported,
        fabric,
        target,
        lun,
    }
}

/// A fake configfs at `dir/target` with `n` iblock objects (each on `disks/dN.img`, a sparse
/// 1 GiB file), exported through LUNs of TARGETS targets if `exported`. Returns its ConfigFs.
fn build_tree(t: &Template, dir: &Path, n: usize, exported: bool) -> ConfigFs {
    let (cfs, _fake) = fake_tree(dir);
    let root = cfs.root().to_path_buf();
    let from = t.root.to_string_lossy().into_owned();
    let to = root.to_string_lossy().into_owned();
    let object = if exported {
        &t.object_exported
    } else {
        &t.object
    };
    for i in 0..n {
        let i = i.to_string();
        replay(object, &root, &|s| s.replace(&from, &to).replace(M_OBJ, &i));
    }
    if exported {
        replay(&t.fabric, &root, &|s| s.to_string());
        let per = n.div_ceil(TARGETS);
        for k in 0..TARGETS.min(n) {
            let ks = k.to_string();
            replay(&t.target, &root, &|s| s.replace(M_TGT, &ks));
            for j in 0..per {
                let i = k * per + j;
                if i >= n {
                    break;
                }
                let (is, js) = (i.to_string(), j.to_string());
                replay(&t.lun, &root, &|s| {
                    s.replace(&from, &to)
                        .replace(M_TGT, &ks)
                        .replace(M_LUN, &js)
                        .replace(M_OBJ, &is)
                });
            }
        }
    }
    cfs
}

fn make_disks(dir: &Path, n: usize) {
    let d = dir.join("disks");
    fs::create_dir_all(&d).unwrap();
    for i in 0..n {
        sparse_file(&d.join(format!("d{i}.img")), 1 << 30).expect("sparse disk image");
    }
}

fn walk(root: &Path) -> usize {
    walkdir::WalkDir::new(root)
        .follow_links(false)
        .into_iter()
        .filter_map(|e| e.ok())
        .count()
}

/// A walk that also reads every file readable by its mode (what reading all attributes costs).
fn walk_read(root: &Path) -> usize {
    let mut bytes = 0;
    for e in walkdir::WalkDir::new(root).follow_links(false) {
        let Ok(e) = e else { continue };
        if !e.file_type().is_file() {
            continue;
        }
        let readable = e
            .metadata()
            .is_ok_and(|m| m.permissions().mode() & 0o444 != 0);
        if readable {
            bytes += fs::read(e.path()).map(|v| v.len()).unwrap_or(0);
        }
    }
    bytes
}

/// The files a listing reads, on one thread and with no checks: per object only what a
/// listing shows (`info`, `udev_path`, `enable`, `wwn/vpd_unit_serial`), directory kinds from
/// readdir (no stat per entry), one read per file. Not the product's code: what the same
/// reads cost without the product's checks and threads.
fn lean_list(root: &Path) -> usize {
    let mut n = 0;
    let mut buf = [0u8; 4096];
    for hba in fs::read_dir(root.join("core")).unwrap().flatten() {
        let name = hba.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with("iblock_") || !hba.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        for so in fs::read_dir(hba.path()).unwrap().flatten() {
            if !so.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let p = so.path();
            for f in ["info", "udev_path", "enable", "wwn/vpd_unit_serial"] {
                use std::io::Read;
                if let Ok(mut file) = fs::File::open(p.join(f)) {
                    let _ = file.read(&mut buf);
                }
            }
            n += 1;
        }
    }
    n
}

// ---------------------------------------------------------------------------------------------
// The daemon

struct Daemon {
    child: Child,
    socket: PathBuf,
    /// The CIM-XML server: its HTTPS address and certificate.
    cim: (std::net::SocketAddr, PathBuf),
}

const CIM_USER: &str = "bench";
const CIM_PW: &str = "bench-pw";

/// A self-signed certificate for 127.0.0.1 (not a CA: rustls wants an end-entity) and its key.
fn make_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("run openssl")
        .success();
    assert!(ok, "openssl could not make a certificate");
    (cert, key)
}

fn free_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

impl Daemon {
    /// `lio-replica serve --dm sim` on the configfs at `root` (seeded with four objects if it
    /// does not exist yet), logging to `dir/daemon.log`.
    fn start(dir: &Path, root: &Path) -> Daemon {
        fs::create_dir_all(dir).unwrap();
        let socket = dir.join("lio-replica.sock");
        let log = fs::File::create(dir.join("daemon.log")).unwrap();
        let (cert, key) = make_cert(dir);
        let users = dir.join("cim-users");
        lio_replica::wbem::users::add(&users, CIM_USER, CIM_PW).expect("a CIM account");
        let cim = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_lio-replica"))
            .arg("serve")
            .arg("--dm")
            .arg("sim")
            .arg("--configfs-root")
            .arg(root)
            .arg("--socket")
            .arg(&socket)
            .arg("--lock-file")
            .arg(dir.join("rtslib_backstore.lock"))
            .arg("--cim-tls-listen")
            .arg(cim.to_string())
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .arg("--cim-users")
            .arg(&users)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start lio-replica serve");
        let t0 = Instant::now();
        while Client::connect(&socket).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "the daemon did not come up (see {})",
                dir.join("daemon.log").display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // let start-up work (rediscovery, seeding) settle before reading its memory
        std::thread::sleep(Duration::from_millis(500));
        Daemon {
            child,
            socket,
            cim: (cim, cert),
        }
    }

    fn cim(&self) -> CimClient {
        CimClient::tls(self.cim.0, &self.cim.1, CIM_USER, CIM_PW)
            .expect("connect to the CIM server")
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn client(&self) -> Client {
        Client::connect(&self.socket).expect("connect to the daemon")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

/// AttachReplica of a snapshot (answer 0, no job) from `src` to `tgt` and its Detach, `n`
/// times; returns the attach round trips (the first also adopts both objects).
fn snapshot_rounds(d: &Daemon, src: &str, tgt: &str, n: usize) -> Vec<Duration> {
    let mut c = d.client();
    (0..n)
        .map(|_| {
            let t0 = Instant::now();
            let r = c.attach_replica(src, tgt, 4).expect("AttachReplica");
            let took = t0.elapsed();
            assert_eq!(r.return_value, 0, "snapshot attach: {:?}", r.description);
            let rel = r.relationship.expect("a relationship");
            let r = c.modify_synchronization(&rel, 2, false).expect("Detach");
            assert_eq!(r.return_value, 0, "detach: {:?}", r.description);
            took
        })
        .collect()
}

/// EnumerateInstances of CIM_StorageVolume over one HTTPS connection; the number of volumes.
fn cim_volumes(c: &mut CimClient) -> usize {
    match c
        .intrinsic(
            "EnumerateInstances",
            NS_STORAGE,
            vec![class_name("ClassName", "CIM_StorageVolume")],
        )
        .expect("EnumerateInstances")
    {
        Response::Intrinsic {
            result: Ok(IReturn::NamedInstances(v)),
            ..
        } => v.len(),
        other => panic!("EnumerateInstances: {other:?}"),
    }
}

/// `snapshot_rounds` over CIM-XML: AttachReplica and ModifySynchronization Detach, each with
/// volume references, on one kept-alive HTTPS connection; the attach round trips.
fn cim_snapshot_rounds(d: &Daemon, src: &str, tgt: &str, n: usize) -> Vec<Duration> {
    let mut c = d.cim();
    let service = CimPath::new("LIO_StorageConfigurationService")
        .with_string_key("SystemCreationClassName", "LIO_ComputerSystem")
        .with_string_key("SystemName", &lio_replica::wbem::host_name())
        .with_string_key("CreationClassName", "LIO_StorageConfigurationService")
        .with_string_key("Name", "lio-replica")
        .in_namespace(None, NS_STORAGE);
    let vol = |name: &str| {
        CimPath::new("LIO_StorageVolume")
            .with_string_key("SystemCreationClassName", "LIO_ComputerSystem")
            .with_string_key("SystemName", &lio_replica::wbem::host_name())
            .with_string_key("CreationClassName", "LIO_StorageVolume")
            .with_string_key("DeviceID", name)
    };
    let method = |name: &str| Call::Extrinsic {
        name: name.into(),
        target: service.clone(),
    };
    let rv = |r: Response| match r {
        Response::Extrinsic { result: Ok(m), .. } => m.return_value,
        other => panic!("{other:?}"),
    };
    (0..n)
        .map(|_| {
            let t0 = Instant::now();
            let r = c
                .call(
                    method("AttachReplica"),
                    vec![
                        reference("SourceElement", vol(src)),
                        reference("TargetElement", vol(tgt)),
                        uint16("CopyType", 4),
                    ],
                )
                .expect("AttachReplica");
            let took = t0.elapsed();
            assert_eq!(rv(r), "0", "snapshot attach over CIM-XML");
            let sync = CimPath::new("LIO_StorageSynchronized")
                .with_key("SystemElement", KeyValue::Reference(Box::new(vol(src))))
                .with_key("SyncedElement", KeyValue::Reference(Box::new(vol(tgt))));
            let r = c
                .call(
                    method("ModifySynchronization"),
                    vec![uint16("Operation", 2), reference("Synchronization", sync)],
                )
                .expect("Detach");
            assert_eq!(rv(r), "0", "detach over CIM-XML");
            took
        })
        .collect()
}

/// Sequential UnSyncUnAssoc copies disk1 -> disk2 on the simulated daemon; returns how long
/// they took.
fn run_jobs(d: &Daemon, n: usize) -> Duration {
    let mut c = d.client();
    let t0 = Instant::now();
    for k in 0..n {
        let r = c
            .attach_replica("block/disk1", "block/disk2", 5)
            .expect("AttachReplica");
        assert_eq!(r.return_value, 4096, "job {k}: {:?}", r.description);
        let job = r.job.expect("a job");
        loop {
            let v = c.get_job(&job).expect("GetJob");
            if v.job_state == 7 {
                break;
            }
            assert!(
                !matches!(v.job_state, 8..=10),
                "job {job} ended {}: {:?}",
                v.job_state_name,
                v.error_description
            );
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    t0.elapsed()
}

// ---------------------------------------------------------------------------------------------

fn main() {
    let n_obj = env_usize("BENCH_OBJECTS", 10_000);
    let n_jobs = env_usize("BENCH_JOBS", 10_000);
    let base = std::env::var_os("BENCH_DIR")
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from("/dev/shm")).filter(|p| p.is_dir()))
        .unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::Builder::new()
        .prefix("lio-replica-bench.")
        .tempdir_in(&base)
        .expect("temporary directory");
    let dir = tmp.path();
    let fstype = Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(dir)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!(
        "BENCHNOTE the trees are plain directories on {fstype} under {}, timings are the median of {REPEAT} runs after a warm-up.",
        base.display()
    );

    make_disks(dir, n_obj);
    let t = template(dir);

    // BENCH_PROFILE_LOOPS=N: only build a tree and enumerate it N times, to run the bench
    // binary under `perf record -g` or `strace -c`. BENCH_PROFILE=engine times the engine's
    // call instead of ConfigFs's; BENCH_PROFILE_EXPORTED=1 exports every object.
    let loops = env_usize("BENCH_PROFILE_LOOPS", 0);
    if loops > 0 {
        let exported = env_usize("BENCH_PROFILE_EXPORTED", 0) == 1;
        let cfs = build_tree(&t, &dir.join("profile"), n_obj, exported);
        let engine = (std::env::var("BENCH_PROFILE").as_deref() == Ok("engine")).then(|| {
            Engine::new(cfs.clone(), Arc::new(SimDm::new()), Options::default()).expect("engine")
        });
        eprintln!("profile: tree built, enumerating {loops} times");
        for _ in 0..loops {
            let t0 = Instant::now();
            let n = match &engine {
                Some(e) => e.storage_objects().expect("engine").len(),
                None => cfs.storage_objects().expect("storage_objects").len(),
            };
            eprintln!("profile: {n} objects in {:.1} ms", ms(t0.elapsed()));
        }
        return;
    }

    // --- the job table alone, in this process (first, while the process is small)
    let rss0 = status_kb("self", "VmRSS:");
    let mgr = JobManager::new();
    let t0 = Instant::now();
    for k in 0..n_jobs {
        let id = mgr.submit(
            JobSpec {
                name: format!("full copy {k}"),
                source: "/backstores/block/disk1".into(),
                target: "/backstores/block/disk2".into(),
                copy_type: 5,
                relationship: None,
                unstoppable: None,
            },
            |ctx| {
                ctx.set_percent(50);
                Ok(())
            },
        );
        mgr.wait(&id, Duration::from_secs(10)).expect("job ended");
    }
    let jm_time = t0.elapsed();
    let jm_listed = mgr.list().len();
    let rss1 = status_kb("self", "VmRSS:");
    bench("host.jobmanager.jobs", jm_listed);
    bench("host.jobmanager.rss_delta_kb", rss1.saturating_sub(rss0));
    drop(mgr);

    // --- the trees

    let mut big_attach = None;
    for (shape, exported, label) in [
        ("plain", false, "none exported"),
        ("exported", true, "each exported by a LUN (100 targets)"),
    ] {
        let t0 = Instant::now();
        let cfs = build_tree(&t, &dir.join(shape), n_obj, exported);
        bench(
            &format!("host.{shape}.build_s"),
            format!("{:.1}", t0.elapsed().as_secs_f64()),
        );
        // sanity: the product sees every object, with its device and serial, and the exports
        let sos = cfs.storage_objects().expect("storage_objects");
        assert_eq!(sos.len(), n_obj);
        let so = sos.iter().find(|s| s.name == "bench42").expect("bench42");
        assert_eq!(so.wwn.as_deref(), Some("5e2e0000-0000-4000-8000-00000042"));
        assert!(so
            .udev_path
            .as_deref()
            .is_some_and(|p| p.ends_with("/disks/d42.img")));
        let full = cfs
            .find_storage_object(&Plugin::Block, "bench42")
            .expect("bench42 read whole");
        assert_eq!(full.summary.clone(), *so);
        assert_eq!(
            cfs.exports_of(&full).expect("exports_of").len(),
            usize::from(exported)
        );
        drop(sos);
        let root = cfs.root().to_path_buf();
        let (t_walk, entries) = time_median(|| walk(&root));
        let (t_read, _) = time_median(|| walk_read(&root));
        let (t_lean, n0) = time_median(|| lean_list(&root));
        assert_eq!(n0, n_obj);
        // a ConfigFs whose operations are the fake's (reading does not go through them)
        let fresh = ConfigFs::with_ops(
            root.clone(),
            Arc::new(FakeFs::with_root(&root)) as Arc<dyn FsOps>,
            dir.join("lock"),
        );
        let (t_cfs, n1) = time_median(|| fresh.storage_objects().expect("storage_objects").len());
        let engine =
            Engine::new(fresh.clone(), Arc::new(SimDm::new()), Options::default()).expect("engine");
        let (t_eng, n2) = time_median(|| engine.storage_objects().expect("engine").len());
        assert_eq!((n1, n2), (n_obj, n_obj));
        bench(&format!("host.{shape}.entries"), entries);
        bench(
            &format!("host.{shape}.walk_ms"),
            format!("{:.1}", ms(t_walk)),
        );
        bench(
            &format!("host.{shape}.walk_read_ms"),
            format!("{:.1}", ms(t_read)),
        );
        bench(
            &format!("host.{shape}.lean_ms"),
            format!("{:.1}", ms(t_lean)),
        );
        bench(
            &format!("host.{shape}.configfs_ms"),
            format!("{:.1}", ms(t_cfs)),
        );
        bench(
            &format!("host.{shape}.engine_ms"),
            format!("{:.1}", ms(t_eng)),
        );
        let base = format!(
            "`walkdir` over the same tree ({entries} entries): {:.1} ms",
            ms(t_walk)
        );
        let ratio = |x: Duration| format!("**{:.2}**", t_walk.as_secs_f64() / x.as_secs_f64());
        row([
            &format!("`ConfigFs::storage_objects()`, {n_obj} iblock objects, {label}"),
            &format!("{:.1} ms", ms(t_cfs)),
            &base,
            &ratio(t_cfs),
            "≤ 100 ms",
        ]);
        row([
            "engine `Service::storage_objects()` (SimDm), same tree",
            &format!("{:.1} ms", ms(t_eng)),
            "the same walk",
            &ratio(t_eng),
            "≤ 100 ms",
        ]);
        row([
            "(second baseline) `walkdir` that also reads every readable file",
            &format!("{:.1} ms", ms(t_read)),
            "the same walk",
            &ratio(t_read),
            "—",
        ]);
        row([
            "(reference) the same files read on one thread without checks: readdir kinds, 4 attribute reads per object",
            &format!("{:.1} ms", ms(t_lean)),
            "the same walk",
            &ratio(t_lean),
            "—",
        ]);
        // the same call through the API: the daemon on this tree
        {
            let d = Daemon::start(&dir.join(format!("daemon-{shape}")), &root);
            let rest = status_kb(&d.pid(), "VmRSS:");
            let mut c = d.client();
            let (t_api, n3) = time_median(|| c.enumerate_storage_objects().expect("API").len());
            assert_eq!(n3, n_obj);
            let after = status_kb(&d.pid(), "VmRSS:");
            let hwm = status_kb(&d.pid(), "VmHWM:");
            bench(
                &format!("host.{shape}.api_enum_ms"),
                format!("{:.1}", ms(t_api)),
            );
            bench(&format!("host.{shape}.rss_rest_kb"), rest);
            bench(&format!("host.{shape}.rss_after_kb"), after);
            bench(&format!("host.{shape}.hwm_kb"), hwm);
            row([
                "EnumerateStorageObjects over the API (`serve --dm sim` on this tree, JSON included)",
                &format!("{:.1} ms", ms(t_api)),
                &format!("the engine call in-process: {:.1} ms", ms(t_eng)),
                &format!("**{:.2}**", t_eng.as_secs_f64() / t_api.as_secs_f64()),
                "—",
            ]);
            if !exported {
                let mut cim = d.cim();
                let (t_cim, n4) = time_median(|| cim_volumes(&mut cim));
                assert_eq!(n4, n_obj);
                bench("host.plain.cim_enum_ms", format!("{:.1}", ms(t_cim)));
                row([
                    &format!("EnumerateInstances of {n_obj} CIM_StorageVolume over HTTPS (kept-alive connection, CIM-XML included)"),
                    &format!("{:.1} ms", ms(t_cim)),
                    &format!("EnumerateStorageObjects over JSON-RPC, same daemon: {:.1} ms", ms(t_api)),
                    &format!("**{:.2}**", t_api.as_secs_f64() / t_cim.as_secs_f64()),
                    "—",
                ]);
            }
            row([
                "daemon VmRSS on this tree: at rest / after the enumerations above (peak)",
                &format!("{rest} KiB / {after} KiB (peak {hwm} KiB)"),
                "—",
                "—",
                "reported",
            ]);
            if !exported {
                // one AttachReplica on a big host: it looks its two elements up in the tree
                let t = snapshot_rounds(&d, "block/bench0", "block/bench1", 2);
                bench(
                    "host.plain.snap_attach_first_ms",
                    format!("{:.1}", ms(t[0])),
                );
                bench("host.plain.snap_attach_ms", format!("{:.1}", ms(t[1])));
                big_attach = Some(t[1]);
            }
        }
        fs::remove_dir_all(dir.join(shape)).expect("remove the tree");
    }

    // --- the daemon's memory: at rest, after n_jobs jobs
    let d = Daemon::start(&dir.join("daemon"), &dir.join("sim").join("target"));
    let rest = status_kb(&d.pid(), "VmRSS:");
    if let Some(big) = big_attach {
        let mut rt = snapshot_rounds(&d, "block/disk1", "block/disk2", 6);
        rt.remove(0); // the first also adopts
        rt.sort();
        let small = rt[rt.len() / 2];
        bench("host.small.snap_attach_ms", format!("{:.1}", ms(small)));
        row([
            &format!("AttachReplica round trip (snapshot, API) on the {n_obj}-object tree (objects already adopted)"),
            &format!("{:.1} ms", ms(big)),
            &format!(
                "the same call on the seeded 4-object daemon (median of 5): {:.1} ms",
                ms(small)
            ),
            &format!(
                "**{:.4}** ({:.0}× the time)",
                small.as_secs_f64() / big.as_secs_f64(),
                big.as_secs_f64() / small.as_secs_f64()
            ),
            "—",
        ]);
    }
    {
        let mut rt = snapshot_rounds(&d, "block/disk1", "block/disk2", 11);
        rt.sort();
        let json = rt[rt.len() / 2];
        let mut rt = cim_snapshot_rounds(&d, "block/disk1", "block/disk2", 11);
        rt.sort();
        let cim = rt[rt.len() / 2];
        bench("host.small.cim_attach_ms", format!("{:.2}", ms(cim)));
        bench("host.small.json_attach_ms", format!("{:.2}", ms(json)));
        row([
            "AttachReplica round trip (snapshot) over HTTPS, kept-alive connection (median of 11)",
            &format!("{:.2} ms", ms(cim)),
            &format!(
                "the same call over the Unix socket (JSON-RPC, median of 11): {:.2} ms",
                ms(json)
            ),
            &format!("**{:.2}**", json.as_secs_f64() / cim.as_secs_f64()),
            "—",
        ]);
    }
    let took = run_jobs(&d, n_jobs);
    std::thread::sleep(Duration::from_millis(500));
    let listed = d.client().enumerate_jobs().expect("EnumerateJobs").len();
    let after = status_kb(&d.pid(), "VmRSS:");
    let hwm = status_kb(&d.pid(), "VmHWM:");
    bench("host.daemon.rss_rest_kb", rest);
    bench("host.daemon.jobs", n_jobs);
    bench("host.daemon.jobs_s", format!("{:.1}", took.as_secs_f64()));
    bench("host.daemon.jobs_listed", listed);
    bench("host.daemon.rss_after_kb", after);
    bench("host.daemon.hwm_kb", hwm);
    row([
        "daemon VmRSS at rest (`serve --dm sim`, 4 seeded objects)",
        &format!("{rest} KiB"),
        "—",
        "—",
        "reported",
    ]);
    row([
        &format!(
            "daemon VmRSS after {n_jobs} UnSyncUnAssoc jobs ({:.1} s, {:.2} ms per attach → Completed; {listed} finished jobs still listed)",
            took.as_secs_f64(),
            ms(took) / n_jobs as f64
        ),
        &format!(
            "{after} KiB (peak {hwm} KiB): +{} KiB, {:.0} bytes per listed job",
            after.saturating_sub(rest),
            (after.saturating_sub(rest) * 1024) as f64 / listed.max(1) as f64
        ),
        &format!("at rest: {rest} KiB"),
        "—",
        "reported",
    ]);
    row([
        &format!(
            "the job table alone: `JobManager`, {n_jobs} trivial jobs in this process ({:.1} s)",
            jm_time.as_secs_f64()
        ),
        &format!(
            "+{} KiB VmRSS, {:.0} bytes per job ({jm_listed} listed)",
            rss1.saturating_sub(rss0),
            (rss1.saturating_sub(rss0) * 1024) as f64 / jm_listed.max(1) as f64
        ),
        "—",
        "—",
        "reported",
    ]);
}
