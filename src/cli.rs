//! The command line: one subcommand per API call, human output by default, `--json` for
//! scripts, and an exit status that carries the CIM return value.

use crate::api::protocol::method;
use crate::api::{self, Client, RpcError};
use crate::engine::{self, DmChoice, ServeConfig};
use crate::service::{
    CopyType, JobState, JobView, MethodResult, Operation, RelationshipView, RequestedState,
    StorageObjectView,
};
use crate::wbem;
use crate::wbem::xml::civil_from_days;
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const EXIT_STATUS: &str = "\
Exit status:
  0     the method returned 0 (completed) or 4096 (job started); with `attach --wait`,
        the job ended Completed
  1-6   the method's CIM return value: 1 not supported, 2 unspecified error, 3 timeout,
        4 failed, 5 invalid parameter, 6 in use; the reason is printed on stderr
  4     `attach --wait`: the job ended Exception, Terminated or Killed (reason on stderr)
  5     also: an invalid --copy-type word, an unknown job, a parameter the daemon refused
  2     also: the daemon cannot be reached or answered unexpectedly, and usage errors
  `serve` exits 0 after SIGTERM or SIGINT and 1 if it cannot start.";

/// Exit status for transport errors (and clap's usage errors).
pub const EXIT_TRANSPORT: i32 = 2;
/// Exit status of `attach --wait` when the job does not end Completed.
pub const EXIT_JOB_FAILED: i32 = 4;
/// Exit status for parameters refused before or by the daemon.
pub const EXIT_INVALID: i32 = 5;

/// How often `attach --wait` asks for the job's progress.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Without a terminal, how often `attach --wait` prints a progress line.
const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Parser)]
#[command(
    name = "lio-replica",
    version,
    about = "Replicas of LIO storage objects (CIM AttachReplica): mirrors, async copies, \
             snapshots and clones built from device-mapper",
    after_help = EXIT_STATUS
)]
pub struct Cli {
    /// The daemon's API socket.
    #[arg(long, global = true, value_name = "PATH", default_value = api::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Print the raw JSON result instead of human-readable output.
    #[arg(long, global = true)]
    pub json: bool,
    /// More log output on stderr (-v, -vv); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (as root): serve the API on the socket until SIGTERM or SIGINT.
    Serve(ServeArgs),
    /// Copy SOURCE to TARGET (AttachReplica).
    #[command(after_help = EXIT_STATUS)]
    Attach {
        /// An existing storage object: /backstores/PLUGIN/NAME or PLUGIN/NAME.
        source: String,
        /// An existing storage object at least as large as SOURCE, not exported through a LUN.
        target: String,
        /// async (2), sync (3), unsyncassoc (4, snapshot), unsyncunassoc (5, full copy),
        /// or a CopyType number.
        #[arg(long, short = 't', value_name = "TYPE", allow_hyphen_values = true)]
        copy_type: String,
        /// If a job started, follow its progress until it ends.
        #[arg(long)]
        wait: bool,
    },
    /// List copy jobs (EnumerateJobs).
    Jobs,
    /// Show one job (GetJob), or stop it (RequestStateChange).
    Job {
        id: String,
        /// Stop the copy and roll its relationship back (RequestedState 4).
        #[arg(long, conflicts_with = "kill")]
        terminate: bool,
        /// Stop the copy at once (RequestedState 5).
        #[arg(long)]
        kill: bool,
    },
    /// Explain why a job failed (GetError).
    JobError { id: String },
    /// List replication relationships (StorageSynchronized).
    Relationships,
    /// End a relationship (ModifySynchronization Operation 2, Detach).
    Detach {
        #[arg(value_name = "REL")]
        relationship: String,
    },
    /// Split a relationship, keeping the target as it is (Operation 3, Fracture).
    Fracture {
        #[arg(value_name = "REL")]
        relationship: String,
    },
    /// Bring a fractured target up to date again (Operation 4, Resync).
    Resync {
        #[arg(value_name = "REL")]
        relationship: String,
    },
    /// Make a mirror synchronous, live and without a copy (Operation 10, Reset To Sync).
    ResetToSync {
        #[arg(value_name = "REL")]
        relationship: String,
    },
    /// Make a mirror asynchronous, live and without a copy (Operation 11, Reset To Async);
    /// the target needs the room of an Async attach.
    ResetToAsync {
        #[arg(value_name = "REL")]
        relationship: String,
    },
    /// Copy the target back onto the source (Operation 5, Restore).
    Restore {
        #[arg(value_name = "REL")]
        relationship: String,
        /// restore even though initiators are logged in to the source's LUNs: their view of
        /// the LUN changes under them (unmount or stop I/O first)
        #[arg(long)]
        force: bool,
    },
    /// List storage objects (backstores) and what the daemon knows of them.
    StorageObjects,
    /// Put a storage object on a device-mapper device the daemon owns, ready to replicate.
    Adopt {
        #[arg(value_name = "OBJECT")]
        element: String,
    },
    /// At boot, before LIO's configuration is restored (target.service): re-create the
    /// device-mapper devices saved in the state directory (as root; no daemon needed).
    RestoreDevices {
        #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        /// Root of LIO's configfs tree.
        #[arg(long, value_name = "DIR", default_value = "/sys/kernel/config/target")]
        configfs_root: PathBuf,
    },
    /// Manage the accounts of the CIM-XML server (no daemon needed; it sees changes at once).
    CimUser {
        #[command(subcommand)]
        action: CimUserAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum CimUserAction {
    /// Add USER, or give it a new password; the password is read from standard input.
    Add {
        user: String,
        #[arg(long, value_name = "FILE", default_value = wbem::users::DEFAULT_USERS_FILE)]
        file: PathBuf,
    },
    /// Remove USER.
    Remove {
        user: String,
        #[arg(long, value_name = "FILE", default_value = wbem::users::DEFAULT_USERS_FILE)]
        file: PathBuf,
    },
    /// List the users.
    List {
        #[arg(long, value_name = "FILE", default_value = wbem::users::DEFAULT_USERS_FILE)]
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Root of LIO's configfs tree.
    #[arg(long, value_name = "DIR", default_value = "/sys/kernel/config/target")]
    pub configfs_root: PathBuf,
    /// Device-mapper backend: the kernel, or an in-memory simulation (for tests).
    #[arg(long, value_enum, default_value_t = DmArg::Kernel)]
    pub dm: DmArg,
    /// rtslib's backstore lock, taken while creating backstores.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/var/run/rtslib_backstore.lock"
    )]
    pub lock_file: PathBuf,
    /// Where the saved state (what a reboot must re-create) and the intent records of changes
    /// in progress (what a restart after a crash completes or rolls back) are kept.
    /// Default: /var/lib/lio-replica; with `--dm sim`, none unless given.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Serve CIM-XML over plain HTTP on ADDR:PORT (loopback addresses only; usually 5988).
    #[arg(long, value_name = "ADDR:PORT")]
    pub cim_listen: Option<std::net::SocketAddr>,
    /// Serve CIM-XML over HTTPS on ADDR:PORT (usually 5989); needs --tls-cert and --tls-key.
    #[arg(long, value_name = "ADDR:PORT")]
    pub cim_tls_listen: Option<std::net::SocketAddr>,
    /// The server's certificate chain (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// The CIM server's accounts (see `cim-user`).
    #[arg(long, value_name = "FILE", default_value = wbem::users::DEFAULT_USERS_FILE)]
    pub cim_users: PathBuf,
}

/// The state directory of a daemon on the kernel.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/lio-replica";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DmArg {
    Kernel,
    Sim,
}

impl Cli {
    /// True for the daemon subcommand (it logs at info by default).
    pub fn is_serve(&self) -> bool {
        matches!(self.command, Command::Serve(_))
    }
}

/// A failure to report on stderr, with the exit status it maps to.
#[derive(Debug)]
struct Failure {
    status: i32,
    message: String,
}

impl Failure {
    fn new(status: i32, message: impl Into<String>) -> Self {
        Failure {
            status,
            message: message.into(),
        }
    }
}

impl From<RpcError> for Failure {
    fn from(e: RpcError) -> Self {
        let status = if e.is_invalid_parameter() {
            EXIT_INVALID
        } else {
            EXIT_TRANSPORT
        };
        Failure::new(status, e.to_string())
    }
}

type Outcome = Result<i32, Failure>;

/// Runs a parsed command line; returns the exit status.
pub fn run(cli: Cli) -> i32 {
    let outcome = match &cli.command {
        Command::Serve(args) => return serve(&cli.socket, args),
        Command::RestoreDevices {
            state_dir,
            configfs_root,
        } => return restore_devices(state_dir, configfs_root, cli.json),
        Command::CimUser { action } => return cim_user(action, cli.json),
        _ => run_client(&cli),
    };
    match outcome {
        Ok(status) => status,
        Err(f) => {
            eprintln!("lio-replica: {}", f.message);
            f.status
        }
    }
}

fn serve(socket: &Path, args: &ServeArgs) -> i32 {
    match serve_inner(socket, args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("lio-replica: serve: {e:#}");
            1
        }
    }
}

fn cim_user(action: &CimUserAction, json: bool) -> i32 {
    use wbem::users;
    let result = match action {
        CimUserAction::Add { user, file } => users::validate_user(user)
            .and_then(|()| users::read_password(&mut std::io::stdin().lock()))
            .and_then(|pw| users::add(file, user, &pw))
            .map(|existed| {
                out(&if existed {
                    format!("CIM user {user}: password changed in {}.", file.display())
                } else {
                    format!("CIM user {user} added to {}.", file.display())
                })
            }),
        CimUserAction::Remove { user, file } => users::remove(file, user)
            .map(|()| out(&format!("CIM user {user} removed from {}.", file.display()))),
        CimUserAction::List { file } => users::list(file).map(|names| {
            if json {
                out(&serde_json::to_string_pretty(&names).unwrap_or_default());
            } else if names.is_empty() {
                out(&format!("No CIM users in {}.", file.display()));
            } else {
                out(&names.join("\n"));
            }
        }),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("lio-replica: cim-user: {e:#}");
            EXIT_INVALID
        }
    }
}

fn restore_devices(state_dir: &Path, configfs_root: &Path, json: bool) -> i32 {
    match engine::restore_devices_at_boot(state_dir, configfs_root) {
        Ok(r) => {
            if json {
                out(&serde_json::to_string_pretty(&r).unwrap_or_default());
            } else {
                out(&r.summary());
            }
            if r.failed.is_empty() {
                0
            } else {
                1
            }
        }
        Err(e) => {
            eprintln!("lio-replica: restore-devices: {e:#}");
            1
        }
    }
}

fn serve_inner(socket: &Path, args: &ServeArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    use nix::sys::signal::{SigSet, Signal};

    // Block the signals before any thread exists, so every thread inherits the mask and
    // only the waiting thread below receives them.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.thread_block().context("blocking SIGTERM/SIGINT")?;

    // The sockets first: a second daemon, or a mistaken CIM option, stops here, before
    // touching the kernel.
    let (listener, socket_file) = api::bind_socket(socket)?;
    let wbem_opts = wbem::WbemOptions {
        listen: args.cim_listen,
        tls_listen: args.cim_tls_listen,
        tls_cert: args.tls_cert.clone(),
        tls_key: args.tls_key.clone(),
        users: args.cim_users.clone(),
    };
    let cim_listeners = wbem::bind(&wbem_opts).context("the CIM-XML server")?;
    let cfg = ServeConfig {
        configfs_root: args.configfs_root.clone(),
        dm: match args.dm {
            DmArg::Kernel => DmChoice::Kernel,
            DmArg::Sim => DmChoice::Sim,
        },
        lock_path: args.lock_file.clone(),
        state_dir: match (&args.state_dir, args.dm) {
            (Some(d), _) => Some(d.clone()),
            (None, DmArg::Kernel) => Some(PathBuf::from(DEFAULT_STATE_DIR)),
            // a simulation must not mix its devices into a real host's saved state
            (None, DmArg::Sim) => None,
        },
    };
    tracing::info!(
        configfs = %cfg.configfs_root.display(),
        dm = ?cfg.dm,
        lock = %cfg.lock_path.display(),
        "starting engine"
    );
    let service = engine::build_service(&cfg).context("starting the engine")?;
    let _cim = if wbem_opts.enabled() {
        Some(wbem::start(cim_listeners, service.clone(), &wbem_opts)?)
    } else {
        None
    };
    let server = api::Server::new(listener, Some(socket_file), service);
    let handle = server.shutdown_handle();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Ok(sig) = signals.wait() {
                tracing::info!(signal = %sig, "shutting down");
                handle.shutdown();
            }
        })
        .context("starting the signal thread")?;
    tracing::info!(socket = %socket.display(), "serving");
    server.run().context("serving")?;
    Ok(())
}

fn run_client(cli: &Cli) -> Outcome {
    // Check what can be checked before reaching for the daemon.
    let attach_copy_type = match &cli.command {
        Command::Attach { copy_type, .. } => {
            Some(CopyType::parse_word(copy_type).ok_or_else(|| {
                Failure::new(
                    EXIT_INVALID,
                    format!(
                        "invalid --copy-type {copy_type:?}: expected async, sync, unsyncassoc, \
                     unsyncunassoc or a number 0-65535"
                    ),
                )
            })?)
        }
        _ => None,
    };
    let mut client = Client::connect(&cli.socket)?;
    let json = cli.json;
    match &cli.command {
        Command::Serve(_) | Command::RestoreDevices { .. } | Command::CimUser { .. } => {
            unreachable!("handled by run")
        }
        Command::Attach {
            source,
            target,
            wait,
            ..
        } => {
            let copy_type = attach_copy_type.unwrap_or_default();
            let (raw, r): (Value, MethodResult) = call(
                &mut client,
                method::ATTACH_REPLICA,
                json!({"SourceElement": source, "TargetElement": target, "CopyType": copy_type}),
            )?;
            let started = r.return_value == 4096;
            if *wait && started {
                if let Some(job) = &r.job {
                    if !json {
                        out(&started_text(&r, source, target, copy_type));
                    }
                    return follow(&mut client, job, json);
                }
            }
            Ok(report(json, &raw, &r, "attach", || {
                if started {
                    started_text(&r, source, target, copy_type)
                } else {
                    let mut s =
                        format!("Done: {source} → {target} ({}).", copy_type_name(copy_type));
                    if let Some(rel) = &r.relationship {
                        let _ = write!(s, "\nRelationship: {rel}");
                    }
                    s
                }
            }))
        }
        Command::Jobs => {
            let (raw, jobs): (Value, Vec<JobView>) =
                call(&mut client, method::ENUMERATE_JOBS, Value::Null)?;
            if json {
                print_json(&raw);
            } else if jobs.is_empty() {
                out("No jobs.");
            } else {
                out(&jobs_table(&jobs));
            }
            Ok(0)
        }
        Command::Job {
            id,
            terminate,
            kill,
        } => {
            if *terminate || *kill {
                let (state, verb) = if *kill {
                    (RequestedState::Kill, "kill")
                } else {
                    (RequestedState::Terminate, "terminate")
                };
                let (raw, r): (Value, MethodResult) = call(
                    &mut client,
                    method::REQUEST_STATE_CHANGE,
                    json!({"Job": id, "RequestedState": state.value()}),
                )?;
                return Ok(report(json, &raw, &r, verb, || {
                    format!("Job {id}: {verb} requested.")
                }));
            }
            let (raw, job): (Value, JobView) =
                call(&mut client, method::GET_JOB, json!({ "Job": id }))?;
            if json {
                print_json(&raw);
            } else {
                out(&job_details(&job));
            }
            Ok(0)
        }
        Command::JobError { id } => {
            let raw = client.call(method::GET_ERROR, json!({ "Job": id }))?;
            if json {
                print_json(&raw);
            } else {
                match raw.get("Error").and_then(Value::as_str) {
                    Some(e) => out(e),
                    None => out(&format!("Job {id} has no error.")),
                }
            }
            Ok(0)
        }
        Command::Relationships => {
            let (raw, rels): (Value, Vec<RelationshipView>) =
                call(&mut client, method::ENUMERATE_RELATIONSHIPS, Value::Null)?;
            if json {
                print_json(&raw);
            } else if rels.is_empty() {
                out("No relationships.");
            } else {
                out(&relationships_table(&rels));
            }
            Ok(0)
        }
        Command::Detach { relationship } => {
            modify(&mut client, json, relationship, Operation::Detach, false)
        }
        Command::Fracture { relationship } => {
            modify(&mut client, json, relationship, Operation::Fracture, false)
        }
        Command::Resync { relationship } => {
            modify(&mut client, json, relationship, Operation::Resync, false)
        }
        Command::ResetToSync { relationship } => modify(
            &mut client,
            json,
            relationship,
            Operation::ResetToSync,
            false,
        ),
        Command::ResetToAsync { relationship } => modify(
            &mut client,
            json,
            relationship,
            Operation::ResetToAsync,
            false,
        ),
        Command::Restore {
            relationship,
            force,
        } => modify(&mut client, json, relationship, Operation::Restore, *force),
        Command::StorageObjects => {
            let (raw, objs): (Value, Vec<StorageObjectView>) =
                call(&mut client, method::ENUMERATE_STORAGE_OBJECTS, Value::Null)?;
            if json {
                print_json(&raw);
            } else if objs.is_empty() {
                out("No storage objects.");
            } else {
                out(&storage_objects_table(&objs));
            }
            Ok(0)
        }
        Command::Adopt { element } => {
            let (raw, r): (Value, MethodResult) = call(
                &mut client,
                method::ADOPT_STORAGE_OBJECT,
                json!({ "Element": element }),
            )?;
            Ok(report(json, &raw, &r, "adopt", || {
                if r.return_value == 4096 {
                    format!(
                        "Adopting {element}: job {} started.",
                        r.job.as_deref().unwrap_or("?")
                    )
                } else {
                    format!("{element} is served through a device-mapper device of lio-replica.")
                }
            }))
        }
    }
}

fn modify(client: &mut Client, json: bool, rel: &str, op: Operation, force: bool) -> Outcome {
    let verb = op.name().to_ascii_lowercase();
    let (raw, r): (Value, MethodResult) = call(
        client,
        method::MODIFY_SYNCHRONIZATION,
        api::client::modify_params(rel, op.value(), force),
    )?;
    Ok(report(json, &raw, &r, &verb, || {
        let mut s = match r.return_value {
            4096 => format!("Relationship {rel}: {verb} started"),
            _ => format!("Relationship {rel}: {verb} done"),
        };
        if let Some(job) = &r.job {
            let _ = write!(s, " (job {job})");
        }
        s.push('.');
        s
    }))
}

/// Calls a method, keeping the raw result for `--json` and the typed one for people.
fn call<T: DeserializeOwned>(
    client: &mut Client,
    method_name: &str,
    params: Value,
) -> Result<(Value, T), Failure> {
    let raw = client.call(method_name, params)?;
    let typed = serde_json::from_value(raw.clone()).map_err(|e| {
        Failure::new(
            EXIT_TRANSPORT,
            format!("unexpected {method_name} result from the daemon ({e}): {raw}"),
        )
    })?;
    Ok((raw, typed))
}

/// Prints a CIM method outcome and maps it to the exit status.
fn report(
    json: bool,
    raw: &Value,
    r: &MethodResult,
    what: &str,
    ok_text: impl FnOnce() -> String,
) -> i32 {
    if json {
        print_json(raw);
    }
    match r.return_value {
        0 | 4096 => {
            if !json {
                out(&ok_text());
            }
            0
        }
        rv => {
            let name = crate::ReturnCode::from_value(rv)
                .map(|c| c.describe())
                .unwrap_or("unknown return value");
            let reason = r.description.as_deref().unwrap_or("no reason given");
            eprintln!("lio-replica: {what}: {name} ({rv}): {reason}");
            if (1..=6).contains(&rv) {
                rv as i32
            } else {
                EXIT_TRANSPORT
            }
        }
    }
}

fn started_text(r: &MethodResult, source: &str, target: &str, copy_type: u16) -> String {
    let job = r.job.as_deref().unwrap_or("?");
    let mut s = format!(
        "Job {job} started: {source} → {target} ({}).",
        copy_type_name(copy_type)
    );
    if let Some(rel) = &r.relationship {
        let _ = write!(s, "\nRelationship: {rel}");
    }
    s
}

/// `attach --wait`: polls the job until it reaches a final state.
fn follow(client: &mut Client, job_id: &str, json: bool) -> Outcome {
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::with_draw_target(Some(100), ProgressDrawTarget::stderr());
        if let Ok(style) =
            ProgressStyle::with_template("{spinner} {prefix} [{bar:40}] {pos:>3}% {msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(job_id.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    let mut last_line: Option<(Instant, u16)> = None;
    let result = loop {
        let (raw, job): (Value, JobView) =
            match call(client, method::GET_JOB, json!({ "Job": job_id })) {
                Ok(j) => j,
                Err(e) => break Err(e),
            };
        match &bar {
            Some(bar) => {
                bar.set_position(u64::from(job.percent_complete.min(100)));
                bar.set_message(job.job_state_name.clone());
            }
            None => {
                let due = match last_line {
                    None => true,
                    Some((at, state)) => {
                        state != job.job_state || at.elapsed() >= PLAIN_PROGRESS_EVERY
                    }
                };
                if due {
                    eprintln!("{job_id}: {} {}%", job.job_state_name, job.percent_complete);
                    last_line = Some((Instant::now(), job.job_state));
                }
            }
        }
        if JobState::from_value(job.job_state).is_some_and(JobState::is_final) {
            break Ok((raw, job));
        }
        std::thread::sleep(POLL_INTERVAL);
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let (raw, job) = result?;
    if json {
        print_json(&raw);
    } else {
        out(&format!(
            "Job {} {} ({}%) after {:.1} s: {} → {}.",
            job.instance_id,
            job.job_state_name,
            job.percent_complete,
            job.elapsed_time,
            job.source,
            job.target
        ));
    }
    if job.job_state == JobState::Completed.value() {
        Ok(0)
    } else {
        Err(Failure::new(
            EXIT_JOB_FAILED,
            format!(
                "job {} ended {}: {}",
                job.instance_id,
                job.job_state_name,
                job.error_description
                    .as_deref()
                    .unwrap_or("no reason given")
            ),
        ))
    }
}

fn copy_type_name(v: u16) -> String {
    match CopyType::from_value(v) {
        Some(ct) => ct.name().into(),
        None => format!("CopyType {v}"),
    }
}

fn jobs_table(jobs: &[JobView]) -> String {
    let rows = jobs
        .iter()
        .map(|j| {
            vec![
                j.instance_id.clone(),
                j.job_state_name.clone(),
                j.percent_complete.to_string(),
                format!("{} → {}", j.source, j.target),
                copy_type_name(j.copy_type),
            ]
        })
        .collect();
    table(&["ID", "STATE", "%", "SOURCE → TARGET", "TYPE"], rows)
}

fn relationships_table(rels: &[RelationshipView]) -> String {
    let rows = rels
        .iter()
        .map(|r| {
            let mut note = Vec::new();
            if let Some(s) = &r.progress_status {
                note.push(s.clone());
            }
            if let (Some(used), Some(total)) = (r.cow_used_sectors, r.cow_total_sectors) {
                let pct = used.saturating_mul(100).checked_div(total).unwrap_or(0);
                note.push(format!("COW {used}/{total} sectors ({pct}%)"));
            }
            if let Some(lag) = r.max_lag_writes {
                note.push(format!("lag ≤ {lag} writes"));
            }
            vec![
                r.instance_id.clone(),
                r.system_element.clone(),
                r.synced_element.clone(),
                copy_type_name(r.copy_type),
                r.sync_state_name.clone(),
                r.percent_synced.to_string(),
                if r.change_tracking { "yes" } else { "no" }.into(),
                note.join("; "),
            ]
        })
        .collect();
    table(
        &[
            "ID", "SOURCE", "TARGET", "TYPE", "STATE", "%", "TRACKED", "NOTE",
        ],
        rows,
    )
}

fn storage_objects_table(objs: &[StorageObjectView]) -> String {
    let rows = objs
        .iter()
        .map(|o| {
            let mut state = vec![if o.enabled { "enabled" } else { "disabled" }];
            if o.readonly {
                state.push("ro");
            }
            if o.adopted {
                state.push("adopted");
            }
            vec![
                o.element.clone(),
                o.size_bytes.map(human_size).unwrap_or_else(|| "-".into()),
                o.device.clone().unwrap_or_else(|| "-".into()),
                state.join(","),
                if o.exported_by.is_empty() {
                    "-".into()
                } else {
                    o.exported_by.join(",")
                },
                o.relationship.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(
        &[
            "ELEMENT",
            "SIZE",
            "DEVICE",
            "STATE",
            "EXPORTED BY",
            "RELATIONSHIP",
        ],
        rows,
    )
}

fn job_details(j: &JobView) -> String {
    let mut lines: Vec<(&str, String)> = vec![
        ("Job", j.instance_id.clone()),
        ("Name", j.name.clone()),
        ("State", format!("{} ({})", j.job_state_name, j.job_state)),
        ("Progress", format!("{}%", j.percent_complete)),
        ("Source", j.source.clone()),
        ("Target", j.target.clone()),
        (
            "CopyType",
            format!("{} ({})", copy_type_name(j.copy_type), j.copy_type),
        ),
        (
            "Relationship",
            j.relationship.clone().unwrap_or_else(|| "-".into()),
        ),
        ("Submitted", time_text(j.time_submitted)),
        (
            "Started",
            j.start_time.map(time_text).unwrap_or_else(|| "-".into()),
        ),
        ("Elapsed", format!("{:.1} s", j.elapsed_time)),
        ("ErrorCode", j.error_code.to_string()),
    ];
    if let Some(e) = &j.error_description {
        lines.push(("Error", e.clone()));
    }
    lines.push((
        "Removal",
        if j.delete_on_completion {
            format!("{} s after it ends", j.time_before_removal)
        } else {
            "kept".into()
        },
    ));
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    lines
        .iter()
        .map(|(k, v)| format!("{k:<width$}  {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Aligned columns, two spaces apart; the last column is not padded.
fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    std::iter::once(&header)
        .chain(rows.iter())
        .map(|row| {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let pad = widths[i] - cell.chars().count();
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad + 2));
                }
            }
            line.trim_end().to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Seconds since the epoch as `YYYY-MM-DD HH:MM:SS UTC (N s ago)`.
fn time_text(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    let mut s = format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
    if let Ok(now) = SystemTime::now().duration_since(UNIX_EPOCH) {
        if let Some(ago) = now.as_secs().checked_sub(secs) {
            let _ = write!(s, " ({ago} s ago)");
        }
    }
    s
}

fn print_json<T: Serialize>(v: &T) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => out(&s),
        Err(e) => eprintln!("lio-replica: cannot print JSON: {e}"),
    }
}

/// Prints a line on stdout; a closed pipe (`| head`) is not an error worth a panic.
fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{text}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn socket_is_global() {
        let a = Cli::try_parse_from(["lio-replica", "--socket", "/x", "jobs"]).unwrap();
        let b = Cli::try_parse_from(["lio-replica", "jobs", "--socket", "/x", "--json"]).unwrap();
        assert_eq!(a.socket, PathBuf::from("/x"));
        assert_eq!(b.socket, PathBuf::from("/x"));
        assert!(b.json);
        let c = Cli::try_parse_from(["lio-replica", "jobs"]).unwrap();
        assert_eq!(c.socket, PathBuf::from(api::DEFAULT_SOCKET));
    }

    #[test]
    fn terminate_and_kill_conflict() {
        assert!(Cli::try_parse_from(["lio-replica", "job", "j", "--terminate", "--kill"]).is_err());
    }

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert!(time_text(86_399).starts_with("1970-01-01 23:59:59 UTC"));
    }

    #[test]
    fn tables_align() {
        let t = table(
            &["ID", "STATE"],
            vec![
                vec!["job-10".into(), "Running".into()],
                vec!["j".into(), "x".into()],
            ],
        );
        assert_eq!(t, "ID      STATE\njob-10  Running\nj       x");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(10), "10 B");
    }
}
