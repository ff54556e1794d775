//! The built binary against the mock-service server: exit codes, output, socket option.

use lio_replica::testing::{TestServer, BAD_JOB_ERROR, FAIL_JOB_ERROR};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_lio-replica");

fn run(socket: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn status(o: &Output) -> i32 {
    o.status.code().expect("exited, not killed")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn attach_started_job_exits_0() {
    let t = TestServer::start();
    let o = run(
        &t.socket,
        &["attach", "block/src", "block/dst", "--copy-type", "sync"],
    );
    assert_eq!(status(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("Job job-1 started"), "{}", stdout(&o));
    assert_eq!(t.mock.calls(), vec!["AttachReplica(block/src,block/dst,3)"]);
}

#[test]
fn attach_completed_exits_0() {
    let t = TestServer::start();
    let o = run(
        &t.socket,
        &["attach", "block/src", "block/dst", "-t", "UnSyncAssoc"],
    );
    assert_eq!(status(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("rel-snap"), "{}", stdout(&o));
}

#[test]
fn attach_failures_exit_with_the_return_value_and_say_why() {
    let t = TestServer::start();
    let o = run(
        &t.socket,
        &["attach", "block/busy", "block/dst", "--copy-type", "async"],
    );
    assert_eq!(status(&o), 6);
    assert!(
        stderr(&o).contains("In Use (6): in use: block/busy"),
        "{}",
        stderr(&o)
    );
    assert!(stdout(&o).is_empty());

    // Numbers go to the daemon as they are, which answers for them.
    for (ct, code) in [("0", 5), ("1", 5), ("7", 5), ("40000", 1)] {
        let o = run(
            &t.socket,
            &["attach", "block/a", "block/b", "--copy-type", ct],
        );
        assert_eq!(status(&o), code, "CopyType {ct}: {}", stderr(&o));
        assert!(!stderr(&o).is_empty());
    }
    let o = run(
        &t.socket,
        &["attach", "block/a", "block/a", "--copy-type", "sync"],
    );
    assert_eq!(status(&o), 5);
    assert!(stderr(&o).contains("same"), "{}", stderr(&o));
}

#[test]
fn invalid_copy_type_word_exits_5_without_asking_the_daemon() {
    let t = TestServer::start();
    for word in ["mirror", "70000", "-3"] {
        let o = run(
            &t.socket,
            &["attach", "block/a", "block/b", "--copy-type", word],
        );
        assert_eq!(status(&o), 5, "{word}: {}", stderr(&o));
        assert!(stderr(&o).contains("invalid --copy-type"), "{}", stderr(&o));
    }
    assert!(t.mock.calls().is_empty());
}

#[test]
fn json_output_parses() {
    let t = TestServer::start();
    let o = run(
        &t.socket,
        &["--json", "attach", "block/s", "block/t", "--copy-type", "2"],
    );
    assert_eq!(status(&o), 0);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["ReturnValue"], 4096);
    assert_eq!(v["Job"], "job-1");

    let o = run(&t.socket, &["jobs", "--json"]);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 3);

    let o = run(
        &t.socket,
        &["--json", "attach", "block/busy", "block/t", "-t", "sync"],
    );
    assert_eq!(status(&o), 6);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["ReturnValue"], 6);
    assert!(stderr(&o).contains("in use"));

    for args in [
        &["--json", "relationships"][..],
        &["--json", "storage-objects"],
        &["--json", "job", "job-bad"],
        &["--json", "job-error", "job-bad"],
    ] {
        let o = run(&t.socket, args);
        assert_eq!(status(&o), 0, "{args:?}: {}", stderr(&o));
        serde_json::from_str::<Value>(&stdout(&o))
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", stdout(&o)));
    }
}

#[test]
fn socket_before_or_after_the_subcommand() {
    let t = TestServer::start();
    let before = Command::new(BIN)
        .arg("--socket")
        .arg(&t.socket)
        .arg("jobs")
        .output()
        .unwrap();
    let after = Command::new(BIN)
        .arg("jobs")
        .arg("--socket")
        .arg(&t.socket)
        .output()
        .unwrap();
    assert_eq!(status(&before), 0, "{}", stderr(&before));
    assert_eq!(status(&after), 0, "{}", stderr(&after));
    assert_eq!(stdout(&before), stdout(&after));
    let table = stdout(&before);
    let header = table.lines().next().unwrap();
    for col in ["ID", "STATE", "%", "SOURCE → TARGET", "TYPE"] {
        assert!(header.contains(col), "{header}");
    }
    assert!(table.contains("job-bad") && table.contains("Exception"));
}

#[test]
fn cannot_connect_says_so_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(&dir.path().join("nobody.sock"), &["jobs"]);
    assert_eq!(status(&o), 2);
    let err = stderr(&o);
    assert!(err.contains("cannot connect to"), "{err}");
    assert!(err.contains("nobody.sock"), "{err}");
    assert!(err.contains("is `lio-replica serve` running?"), "{err}");
}

#[test]
fn usage_errors_exit_2_and_help_documents_exit_status() {
    let o = Command::new(BIN).args(["attach", "a"]).output().unwrap();
    assert_eq!(status(&o), 2);
    let o = Command::new(BIN).arg("--help").output().unwrap();
    assert_eq!(status(&o), 0);
    assert!(stdout(&o).contains("Exit status"), "{}", stdout(&o));
}

#[test]
fn attach_wait_follows_the_job_to_completion() {
    let t = TestServer::start();
    let o = run(
        &t.socket,
        &["attach", "block/slow", "block/dst", "-t", "sync", "--wait"],
    );
    assert_eq!(status(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).contains("job-slow Completed (100%)"),
        "{}",
        stdout(&o)
    );
    // No terminal: plain progress lines on stderr instead of a bar.
    assert!(
        stderr(&o).contains("job-slow: Running 30%"),
        "{}",
        stderr(&o)
    );
    let polls = t
        .mock
        .calls()
        .iter()
        .filter(|c| *c == "GetJob(job-slow)")
        .count();
    assert_eq!(polls, 3);
}

#[test]
fn attach_wait_on_a_failing_job_exits_4_with_the_reason() {
    let t = TestServer::start();
    let o = run(
        &t.socket,
        &["attach", "block/fail", "block/dst", "-t", "async", "--wait"],
    );
    assert_eq!(status(&o), 4);
    assert!(stderr(&o).contains(FAIL_JOB_ERROR), "{}", stderr(&o));
    assert!(stderr(&o).contains("Exception"), "{}", stderr(&o));

    let o = run(
        &t.socket,
        &[
            "--json",
            "attach",
            "block/fail2",
            "block/dst",
            "-t",
            "async",
            "--wait",
        ],
    );
    assert_eq!(status(&o), 4);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["JobState"], 10);
}

#[test]
fn jobs_and_job_errors() {
    let t = TestServer::start();
    let o = run(&t.socket, &["job", "job-bad"]);
    assert_eq!(status(&o), 0);
    assert!(stdout(&o).contains(BAD_JOB_ERROR), "{}", stdout(&o));

    let o = run(&t.socket, &["job", "job-404"]);
    assert_eq!(status(&o), 5);
    assert!(stderr(&o).contains("no such job"), "{}", stderr(&o));

    let o = run(&t.socket, &["job-error", "job-bad"]);
    assert_eq!(status(&o), 0);
    assert_eq!(stdout(&o).trim(), BAD_JOB_ERROR);
    let o = run(&t.socket, &["job-error", "job-done"]);
    assert!(stdout(&o).contains("no error"));

    let o = run(&t.socket, &["job", "job-1", "--terminate"]);
    assert_eq!(status(&o), 0, "{}", stderr(&o));
    let o = run(&t.socket, &["job", "job-done", "--kill"]);
    assert_eq!(status(&o), 5);
    assert!(t
        .mock
        .calls()
        .contains(&"RequestStateChange(job-1,4)".to_string()));
    assert!(t
        .mock
        .calls()
        .contains(&"RequestStateChange(job-done,5)".to_string()));
}

#[test]
fn relationships_storage_objects_and_modify() {
    let t = TestServer::start();
    let o = run(&t.socket, &["relationships"]);
    assert_eq!(status(&o), 0);
    let out = stdout(&o);
    for col in [
        "ID", "SOURCE", "TARGET", "TYPE", "STATE", "%", "TRACKED", "NOTE",
    ] {
        assert!(out.lines().next().unwrap().contains(col), "{out}");
    }
    let row = out.lines().nth(1).unwrap();
    assert!(
        row.contains("Synchronized") && row.contains(" yes ") && row.contains("lag ≤ 256 writes"),
        "{out}"
    );

    let o = run(&t.socket, &["storage-objects"]);
    assert_eq!(status(&o), 0);
    assert!(stdout(&o).contains("1.0 GiB"), "{}", stdout(&o));

    for (cmd, op) in [
        ("detach", 2),
        ("fracture", 3),
        ("resync", 4),
        ("reset-to-sync", 10),
        ("reset-to-async", 11),
    ] {
        let o = run(&t.socket, &[cmd, "rel-1"]);
        assert_eq!(status(&o), 0, "{cmd}: {}", stderr(&o));
        assert!(t
            .mock
            .calls()
            .contains(&format!("ModifySynchronization(rel-1,{op},false)")));
    }
    let o = run(&t.socket, &["restore", "rel-1"]);
    assert_eq!(status(&o), 1);
    assert!(stderr(&o).contains("Not Supported (1)"), "{}", stderr(&o));

    let o = run(&t.socket, &["adopt", "block/src"]);
    assert_eq!(status(&o), 0);
    let o = run(&t.socket, &["adopt", "block/busy"]);
    assert_eq!(status(&o), 6);
}

#[test]
fn restore_sends_force_only_with_the_flag() {
    let t = TestServer::start();
    let o = run(&t.socket, &["restore", "rel-1", "--force"]);
    assert!(
        !stderr(&o).contains("unexpected argument"),
        "{}",
        stderr(&o)
    );
    let o = run(&t.socket, &["restore", "rel-1"]);
    assert_eq!(status(&o), 1, "{}", stderr(&o));
    assert_eq!(
        t.mock.calls(),
        vec![
            "ModifySynchronization(rel-1,5,true)",
            "ModifySynchronization(rel-1,5,false)",
        ]
    );
    // only restore takes --force
    for cmd in ["detach", "fracture", "resync"] {
        let o = run(&t.socket, &[cmd, "rel-1", "--force"]);
        assert_eq!(status(&o), 2, "{cmd}: {}", stderr(&o));
    }
    assert_eq!(t.mock.calls().len(), 2);
    let o = run(&t.socket, &["restore", "--help"]);
    assert_eq!(status(&o), 0);
    assert!(
        stdout(&o).contains("their view of the LUN changes under them"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn serve_refuses_to_start_over_a_live_daemon() {
    let t = TestServer::start();
    let o = Command::new(BIN)
        .args(["serve", "--dm", "sim", "--socket"])
        .arg(&t.socket)
        .output()
        .unwrap();
    assert_eq!(status(&o), 1);
    assert!(stderr(&o).contains("already serving"), "{}", stderr(&o));
    // The live daemon keeps its socket.
    assert!(t.socket.exists());
    assert_eq!(status(&run(&t.socket, &["jobs"])), 0);
}

#[test]
fn restore_devices_without_state_does_nothing_and_a_bad_state_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("unused.sock");
    let state = dir.path().join("state");
    let st = state.to_str().unwrap();
    // no state saved yet (a host that never adopted anything): nothing to do, no kernel needed
    let o = run(&sock, &["restore-devices", "--state-dir", st]);
    assert_eq!(status(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("0 re-created"), "{}", stdout(&o));
    // a damaged state file is an error naming the file, not a silent empty restore
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("state.json"), b"{ not json").unwrap();
    let o = run(&sock, &["restore-devices", "--state-dir", st]);
    assert_eq!(status(&o), 1);
    assert!(stderr(&o).contains("state.json"), "{}", stderr(&o));
}
