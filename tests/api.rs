//! The JSON-RPC server against a mock service: framing, errors, concurrency, socket setup.

use lio_replica::api::protocol::code;
use lio_replica::api::{Client, RpcError, Server, ServerError, ServerOptions};
use lio_replica::testing::{error_code, Mock, Raw, TestServer, BAD_JOB_ERROR};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::sync::Arc;

#[test]
fn socket_is_private() {
    let t = TestServer::start();
    let mode = std::fs::metadata(&t.socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    let dir_mode = std::fs::metadata(t.socket.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700, "directory mode {dir_mode:o}");
}

#[test]
fn every_method_round_trips() {
    let t = TestServer::start();
    let mut c = Client::connect(&t.socket).unwrap();

    let r = c.attach_replica("block/src", "block/dst", 3).unwrap();
    assert_eq!(r.return_value, 4096);
    assert_eq!(r.job.as_deref(), Some("job-1"));
    assert_eq!(r.relationship.as_deref(), Some("rel-1"));

    let r = c.attach_replica("block/busy", "block/dst", 3).unwrap();
    assert_eq!(r.return_value, 6);
    assert!(r.description.unwrap().contains("in use"));

    let r = c.modify_synchronization("rel-1", 3, false).unwrap();
    assert_eq!(r.return_value, 0);

    let jobs = c.enumerate_jobs().unwrap();
    assert_eq!(jobs.len(), 3);
    assert_eq!(jobs[0].instance_id, "job-1");

    let j = c.get_job("job-bad").unwrap();
    assert_eq!(j.job_state, 10);

    let r = c.request_state_change("job-1", 4).unwrap();
    assert_eq!(r.return_value, 0);

    assert_eq!(
        c.get_error("job-bad").unwrap().as_deref(),
        Some(BAD_JOB_ERROR)
    );
    assert_eq!(c.get_error("job-1").unwrap(), None);

    let rels = c.enumerate_relationships().unwrap();
    assert_eq!(rels[0].instance_id, "rel-1");
    assert_eq!(rels[0].max_lag_writes, Some(256));

    let objs = c.enumerate_storage_objects().unwrap();
    assert_eq!(objs[0].element, "/backstores/block/src");

    let r = c.adopt_storage_object("block/src").unwrap();
    assert_eq!(r.return_value, 0);

    assert_eq!(
        t.mock.calls(),
        vec![
            "AttachReplica(block/src,block/dst,3)",
            "AttachReplica(block/busy,block/dst,3)",
            "ModifySynchronization(rel-1,3,false)",
            "EnumerateJobs",
            "GetJob(job-bad)",
            "EnumerateJobs",
            "RequestStateChange(job-1,4)",
            "GetError(job-bad)",
            "GetError(job-1)",
            "EnumerateRelationships",
            "EnumerateStorageObjects",
            "AdoptStorageObject(block/src)",
        ]
    );
}

#[test]
fn wire_format_uses_cim_names() {
    let t = TestServer::start();
    let mut raw = Raw::connect(&t.socket);
    let v = raw.call(
        r#"{"jsonrpc":"2.0","id":"a1","method":"AttachReplica","params":{"SourceElement":"/backstores/block/src","TargetElement":"/backstores/block/dst","CopyType":2}}"#,
    );
    assert_eq!(
        v,
        json!({"jsonrpc":"2.0","id":"a1","result":{
            "ReturnValue":4096,"Job":"job-1","Relationship":"rel-1","Description":null}})
    );
    let v = raw.call(r#"{"jsonrpc":"2.0","id":2,"method":"GetError","params":{"Job":"job-done"}}"#);
    assert_eq!(v["result"], json!({"Error": null}));
    let v = raw.call(r#"{"jsonrpc":"2.0","id":3,"method":"GetJob","params":{"Job":"job-1"}}"#);
    for key in [
        "JobState",
        "PercentComplete",
        "ErrorDescription",
        "TimeBeforeRemoval",
    ] {
        assert!(v["result"].get(key).is_some(), "{key} missing in {v}");
    }
}

#[test]
fn cim_failures_are_results_not_errors() {
    let t = TestServer::start();
    let mut raw = Raw::connect(&t.socket);
    for (ct, expect) in [(0, 5), (1, 5), (7, 5), (40000, 1), (4, 0)] {
        let v = raw.call(&format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"AttachReplica","params":{{"SourceElement":"block/a","TargetElement":"block/b","CopyType":{ct}}}}}"#
        ));
        assert_eq!(v["result"]["ReturnValue"], expect, "CopyType {ct}: {v}");
        if expect != 0 {
            assert!(v["result"]["Description"].is_string(), "{v}");
        }
    }
    // Missing target: return value 5 with a reason, and the engine is not asked.
    let v = raw.call(r#"{"jsonrpc":"2.0","id":1,"method":"AttachReplica","params":{"SourceElement":"block/a","CopyType":3}}"#);
    assert_eq!(v["result"]["ReturnValue"], 5);
    assert!(v["result"]["Description"]
        .as_str()
        .unwrap()
        .contains("TargetElement"));
    assert_eq!(t.mock.calls().len(), 5);
}

#[test]
fn malformed_json_then_the_connection_still_works() {
    let t = TestServer::start();
    let mut raw = Raw::connect(&t.socket);
    let v = raw.call(r#"{"jsonrpc":"2.0","id":1,"method":"#);
    assert_eq!(error_code(&v), code::PARSE_ERROR);
    assert_eq!(v["id"], Value::Null);
    let v = raw.call(r#"{"jsonrpc":"2.0","id":2,"method":"EnumerateJobs"}"#);
    assert_eq!(v["id"], 2);
    assert_eq!(v["result"].as_array().unwrap().len(), 3);
}

#[test]
fn invalid_requests() {
    let t = TestServer::start();
    let mut raw = Raw::connect(&t.socket);
    let v = raw.call(r#"[{"jsonrpc":"2.0","id":1,"method":"EnumerateJobs"}]"#);
    assert_eq!(error_code(&v), code::INVALID_REQUEST);
    assert!(v["error"]["message"].as_str().unwrap().contains("batch"));
    let v = raw.call(r#"{"id":5,"method":"EnumerateJobs"}"#);
    assert_eq!(error_code(&v), code::INVALID_REQUEST);
    assert_eq!(v["id"], 5);
    let v = raw.call(r#""hello""#);
    assert_eq!(error_code(&v), code::INVALID_REQUEST);
}

#[test]
fn unknown_method() {
    let t = TestServer::start();
    let mut raw = Raw::connect(&t.socket);
    let v = raw.call(r#"{"jsonrpc":"2.0","id":9,"method":"DetachReplica"}"#);
    assert_eq!(error_code(&v), code::METHOD_NOT_FOUND);
    assert_eq!(v["id"], 9);
}

#[test]
fn bad_params() {
    let t = TestServer::start();
    let mut raw = Raw::connect(&t.socket);
    for params in [
        r#"{"TargetElement":"block/b","CopyType":3}"#,
        r#"{"SourceElement":"block/a","TargetElement":"block/b"}"#,
        r#"{"SourceElement":"block/a","TargetElement":"block/b","CopyType":"sync"}"#,
        r#"{"SourceElement":"block/a","TargetElement":"block/b","CopyType":65536}"#,
        r#"{"SourceElement":"block/a","TargetElement":"block/b","CopyType":-1}"#,
        r#"{"SourceElement":"block/a","TargetElement":"block/b","CopyType":3.5}"#,
        r#"{"SourceElement":7,"TargetElement":"block/b","CopyType":3}"#,
        r#"{"SourceElement":"block/a","TargetElement":"block/b","CopyType":3,"Copytype":3}"#,
        r#"["block/a","block/b",3]"#,
    ] {
        let v = raw.call(&format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"AttachReplica","params":{params}}}"#
        ));
        assert_eq!(error_code(&v), code::INVALID_PARAMS, "{params}: {v}");
    }
    let v = raw.call(r#"{"jsonrpc":"2.0","id":1,"method":"GetJob"}"#);
    assert_eq!(error_code(&v), code::INVALID_PARAMS);
    let v = raw.call(r#"{"jsonrpc":"2.0","id":1,"method":"ModifySynchronization","params":{"Relationship":"rel-1"}}"#);
    assert_eq!(error_code(&v), code::INVALID_PARAMS);
    let v = raw.call(r#"{"jsonrpc":"2.0","id":1,"method":"EnumerateJobs","params":{"All":true}}"#);
    assert_eq!(error_code(&v), code::INVALID_PARAMS);
    assert!(t.mock.calls().is_empty(), "{:?}", t.mock.calls());
}

#[test]
fn unknown_job_is_a_clear_error() {
    let t = TestServer::start();
    let mut c = Client::connect(&t.socket).unwrap();
    for r in [
        c.get_job("job-404").map(|_| ()),
        c.get_error("job-404").map(|_| ()),
    ] {
        match r {
            Err(RpcError::Server {
                code: c, message, ..
            }) => {
                assert_eq!(c, code::NO_SUCH_JOB);
                assert!(message.contains("job-404"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn engine_panic_is_an_internal_error_and_the_daemon_lives_on() {
    let t = TestServer::start();
    let mut raw = Raw::connect(&t.socket);
    let v = raw.call(r#"{"jsonrpc":"2.0","id":1,"method":"AdoptStorageObject","params":{"Element":"block/panic"}}"#);
    assert_eq!(error_code(&v), code::INTERNAL_ERROR);
    let v = raw.call(r#"{"jsonrpc":"2.0","id":2,"method":"EnumerateJobs"}"#);
    assert!(v["result"].is_array());
}

#[test]
fn notifications_get_no_answer() {
    let t = TestServer::start();
    let mut raw = Raw::connect(&t.socket);
    raw.send(r#"{"jsonrpc":"2.0","method":"ModifySynchronization","params":{"Relationship":"rel-1","Operation":2}}"#);
    raw.send(r#"{"jsonrpc":"2.0","method":"NoSuchMethod"}"#);
    raw.send("");
    let v = raw.call(r#"{"jsonrpc":"2.0","id":"after","method":"EnumerateRelationships"}"#);
    assert_eq!(v["id"], "after");
    // The notification was still carried out, in order.
    assert_eq!(
        t.mock.calls(),
        vec![
            "ModifySynchronization(rel-1,2,false)",
            "EnumerateRelationships"
        ]
    );
}

#[test]
fn requests_on_one_connection_are_answered_in_order() {
    let t = TestServer::start();
    let mut raw = Raw::connect(&t.socket);
    let mut batch = String::new();
    for i in 0..50 {
        batch.push_str(&format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":{i},\"method\":\"GetJob\",\"params\":{{\"Job\":\"job-1\"}}}}\n"
        ));
    }
    raw.send_bytes(batch.as_bytes());
    for i in 0..50 {
        assert_eq!(raw.recv().unwrap()["id"], i);
    }
}

#[test]
fn concurrent_clients_are_all_answered() {
    let t = TestServer::start();
    let threads: Vec<_> = (0..20)
        .map(|i| {
            let socket = t.socket.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(&socket).unwrap();
                for _ in 0..5 {
                    let r = c
                        .attach_replica(&format!("block/s{i}"), &format!("block/t{i}"), 2)
                        .unwrap();
                    assert_eq!(r.return_value, 4096);
                    assert_eq!(c.enumerate_jobs().unwrap().len(), 3);
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    let attaches = t
        .mock
        .calls()
        .iter()
        .filter(|c| c.starts_with("AttachReplica"))
        .count();
    assert_eq!(attaches, 100);
}

#[test]
fn connection_limit_answers_busy() {
    let t = TestServer::start_with(ServerOptions {
        max_connections: 1,
        ..Default::default()
    });
    let mut first = Raw::connect(&t.socket);
    first.call(r#"{"jsonrpc":"2.0","id":1,"method":"EnumerateJobs"}"#);
    let mut second = Raw::connect(&t.socket);
    let v = second.recv().unwrap();
    assert_eq!(error_code(&v), code::SERVER_BUSY);
    assert!(second.recv().is_none(), "busy connection closed");
    drop(first);
    // The slot frees when the first connection's thread ends.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let mut again = Raw::connect(&t.socket);
        let v = again.try_call(r#"{"jsonrpc":"2.0","id":2,"method":"EnumerateJobs"}"#);
        if v.as_ref().is_some_and(|v| v.get("result").is_some()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "slot never freed: {v:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn oversize_line_is_refused_and_the_connection_survives() {
    let t = TestServer::start();
    let mut raw = Raw::connect(&t.socket);
    let mut big = br#"{"jsonrpc":"2.0","id":1,"method":"GetJob","params":{"Job":""#.to_vec();
    big.resize(big.len() + (1 << 20), b'x');
    big.extend_from_slice(b"\"}}\n");
    raw.send_bytes(&big);
    let v = raw.recv().unwrap();
    assert_eq!(error_code(&v), code::INVALID_REQUEST);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("too large"),
        "{v}"
    );
    let v = raw.call(r#"{"jsonrpc":"2.0","id":2,"method":"EnumerateJobs"}"#);
    assert_eq!(v["id"], 2);
    assert!(t.mock.calls().iter().all(|c| !c.starts_with("GetJob")));
}

#[test]
fn shutdown_removes_the_socket() {
    let mut t = TestServer::start();
    let mut idle = Raw::connect(&t.socket);
    assert!(t.socket.exists());
    t.stop();
    assert!(!t.socket.exists());
    // Idle connections are ended, not left hanging.
    assert!(idle.recv().is_none());
    match Client::connect(&t.socket) {
        Err(e @ RpcError::Connect { .. }) => {
            assert!(
                e.to_string().contains("is `lio-replica serve` running?"),
                "{e}"
            )
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("connected to a stopped server"),
    }
}

#[test]
fn a_live_daemon_is_not_replaced() {
    let t = TestServer::start();
    match Server::bind(&t.socket, t.mock.clone()) {
        Err(ServerError::AlreadyRunning(p)) => assert_eq!(p, t.socket),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("bound over a live daemon"),
    }
    // And it still serves.
    let mut c = Client::connect(&t.socket).unwrap();
    assert_eq!(c.enumerate_jobs().unwrap().len(), 3);
}

#[test]
fn a_stale_socket_is_replaced_but_other_files_are_not() {
    let dir = tempfile::Builder::new().prefix("lr").tempdir().unwrap();
    let path = dir.path().join("api.sock");
    drop(UnixListener::bind(&path).unwrap()); // leaves a socket nobody listens on
    let mock = Arc::new(Mock::default());
    let running = Server::bind(&path, mock.clone()).unwrap().spawn();
    let mut c = Client::connect(&path).unwrap();
    assert_eq!(c.enumerate_jobs().unwrap().len(), 3);
    running.stop().unwrap();
    assert!(!path.exists());

    std::fs::write(&path, "not a socket").unwrap();
    assert!(matches!(
        Server::bind(&path, mock),
        Err(ServerError::NotASocket(_))
    ));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a socket");
}

#[test]
fn peers_of_other_uids_are_refused() {
    use std::os::unix::process::CommandExt;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to connect as another uid");
        return;
    }
    let t = TestServer::start();
    // Open the path to everyone so that only the credential check stands in the way.
    let mut dir = t.socket.parent();
    while let Some(d) =
        dir.filter(|d| d.starts_with(std::env::temp_dir()) && *d != std::env::temp_dir())
    {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir = d.parent();
    }
    std::fs::set_permissions(&t.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_lio-replica"))
        .uid(65534)
        .gid(65534)
        .arg("--socket")
        .arg(&t.socket)
        .arg("jobs")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("permission denied: uid 65534"), "{err}");
    assert!(t.mock.calls().is_empty());
}

#[test]
fn force_reaches_the_service() {
    let t = TestServer::start();
    let mut raw = Raw::connect(&t.socket);
    for params in [
        r#"{"Relationship":"rel-1","Operation":5,"Force":true}"#,
        r#"{"Relationship":"rel-1","Operation":5,"Force":false}"#,
        r#"{"Relationship":"rel-1","Operation":5}"#,
        r#"{"Relationship":"rel-1","Operation":5,"Force":null}"#,
    ] {
        let v = raw.call(&format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"ModifySynchronization","params":{params}}}"#
        ));
        assert!(v["result"]["ReturnValue"].is_u64(), "{params}: {v}");
    }
    // Force is a boolean, nothing else
    for force in [r#""yes""#, "1", "[]"] {
        let v = raw.call(&format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"ModifySynchronization","params":{{"Relationship":"rel-1","Operation":5,"Force":{force}}}}}"#
        ));
        assert_eq!(error_code(&v), code::INVALID_PARAMS, "Force {force}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("Force"),
            "{v}"
        );
    }
    let mut c = Client::connect(&t.socket).unwrap();
    c.modify_synchronization("rel-1", 5, true).unwrap();
    c.modify_synchronization("rel-1", 5, false).unwrap();
    assert_eq!(
        t.mock.calls(),
        vec![
            "ModifySynchronization(rel-1,5,true)",
            "ModifySynchronization(rel-1,5,false)",
            "ModifySynchronization(rel-1,5,false)",
            "ModifySynchronization(rel-1,5,false)",
            "ModifySynchronization(rel-1,5,true)",
            "ModifySynchronization(rel-1,5,false)",
        ]
    );
}
