//! Intent records: written (atomically: temporary file, fsync, rename, fsync of the directory)
//! before a multi-step kernel change starts, removed once it completed or rolled back. This
//! module is their format and their files; what a daemon that finds one does with it (it was
//! stopped in the middle of that change: a crash, a kill -9) is [`super::recovery`].
//!
//! Crash points for tests: `LIO_REPLICA_CRASH_AFTER=TEXT` makes the daemon abort right after
//! the first plan step whose description contains TEXT (see [`crash_point`]).

use crate::configfs::{LunExport, StorageObject};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use tracing::warn;

/// What was about to happen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Intent {
    /// A storage object being re-created from `old_dev` onto `new_dev` (adopt or release).
    Rebuild {
        so: Box<StorageObject>,
        old_dev: String,
        new_dev: String,
        /// true: onto our shim (adopt); false: back to the raw device (release)
        to_shim: bool,
        exports: Vec<LunExport>,
        /// The boot it was written in: after a reboot a device path may name another disk.
        #[serde(default)]
        boot_id: Option<String>,
    },
    /// An AttachReplica of `source` onto `target` (storage object names) in progress.
    Attach {
        source: String,
        #[serde(default)]
        target: Option<String>,
        copy_type: u16,
    },
}

/// The directory of intent records; `None` keeps none (tests that do not test recovery).
#[derive(Debug, Clone, Default)]
pub struct Journal {
    dir: Option<PathBuf>,
}

/// A record on disk; `done` removes it.
pub struct Record {
    path: Option<PathBuf>,
}

impl Record {
    pub fn done(self) -> Result<()> {
        if let Some(p) = &self.path {
            std::fs::remove_file(p).map_err(|e| Error::io("remove", p, e))?;
            if let Some(d) = p.parent() {
                sync_dir(d);
            }
        }
        Ok(())
    }
}

/// Write `dir/name` so that it holds either its old or its new contents whatever happens:
/// a temporary file (mode 0600) written and fsynced, renamed over it, the directory fsynced.
pub(crate) fn write_atomic(dir: &Path, name: &str, body: &[u8]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode_0600()
            .open(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|e| Error::io("write", &path, e))?;
    sync_dir(dir);
    Ok(())
}

fn sync_dir(d: &Path) {
    if let Ok(f) = std::fs::File::open(d) {
        let _ = f.sync_all();
    }
}

impl Journal {
    pub fn new(dir: Option<PathBuf>) -> Journal {
        Journal { dir }
    }

    /// Write the record `KIND-KEY` (KEY is a storage object name).
    pub fn record(&self, kind: &str, key: &str, intent: &Intent) -> Result<Record> {
        let Some(dir) = &self.dir else {
            return Ok(Record { path: None });
        };
        crate::names::validate_object_name(key)?;
        let name = format!("{kind}-{key}.intent.json");
        let body = serde_json::to_vec_pretty(intent).map_err(|e| Error::Other(e.to_string()))?;
        write_atomic(dir, &name, &body)?;
        let path = dir.join(name);
        Ok(Record { path: Some(path) })
    }

    pub fn pending(&self) -> Vec<(PathBuf, Intent)> {
        let Some(dir) = &self.dir else {
            return Vec::new();
        };
        let Ok(rd) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut out: Vec<(PathBuf, Intent)> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().ends_with(".intent.json"))
            .filter_map(|p| {
                let text = std::fs::read(&p).ok()?;
                match serde_json::from_slice(&text) {
                    Ok(i) => Some((p, i)),
                    Err(e) => {
                        warn!(path = %p.display(), error = %e, "unreadable intent record left as is");
                        None
                    }
                }
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for std::fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600)
    }
}

thread_local! {
    static TEST_CRASH: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Tests: make the plan step whose description contains `text` panic right after it ran, on
/// this thread, as if the daemon had died there (no rollback runs).
pub fn set_test_crash_point(text: Option<&str>) {
    TEST_CRASH.with(|c| *c.borrow_mut() = text.map(str::to_string));
}

/// Called after every plan step.
pub(crate) fn crash_point(desc: &str) {
    static ENV: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let env = ENV.get_or_init(|| {
        std::env::var("LIO_REPLICA_CRASH_AFTER")
            .ok()
            .filter(|s| !s.is_empty())
    });
    if let Some(p) = env {
        if desc.contains(p.as_str()) {
            eprintln!("lio-replica: LIO_REPLICA_CRASH_AFTER: aborting after: {desc}");
            std::process::abort();
        }
    }
    TEST_CRASH.with(|c| {
        if let Some(p) = &*c.borrow() {
            if desc.contains(p.as_str()) {
                // unwinds without the panic hook: no message and no backtrace (which, with
                // RUST_BACKTRACE set, took most of a crash test's time to symbolise)
                std::panic::resume_unwind(Box::new(format!("simulated crash after: {desc}")));
            }
        }
    });
}
