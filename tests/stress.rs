//! Load: the real JSON-RPC server over a real engine (fake configfs, simulated device-mapper,
//! ten block backstores on sparse files) and 100 concurrent clients issuing conflicting calls
//! for a bounded time: attaches of the same objects to different targets with every copy type,
//! detaches, fractures, resyncs, adoptions, enumerations, job queries on real and made-up ids,
//! job stops, notifications and malformed lines, with connections opened and closed as they go.
//!
//! Checked: no deadlock (every request is answered within a bound; the whole run has a
//! deadline with a clear failure); every answer is well-formed JSON-RPC carrying the request's
//! id and a documented outcome (an attach gets exactly one of 0, 4096, 5, 6); when 100 clients
//! race to attach one source, exactly one wins; no enumeration ever shows an element in two
//! relationships; at the end the relationships the API lists are exactly those the kernel
//! (SimDm) records, a freshly started engine rediscovers the same ones, no device is left
//! suspended and every backstore is still there; and the process's resident memory after a
//! warm-up round grows by less than 20 MiB over the following rounds.
//!
//! The figures (answers per outcome, RSS per round) are printed; see them with
//! `cargo test --test stress -- --nocapture`.

use lio_replica::api::{Client, Server};
use lio_replica::dm::DmBackend;
use lio_replica::engine::{names, Engine};
use lio_replica::names::Plugin;
use lio_replica::service::Service;
use lio_replica::testing::world::{self, World, MB};
use lio_replica::testing::Raw;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

const CLIENTS: usize = 100;
const OBJECTS: usize = 10;
/// A request not answered within this is a hang.
const ANSWER_BOUND: Duration = Duration::from_secs(20);
const WARM_UP: Duration = Duration::from_millis(1000);
const ROUND: Duration = Duration::from_millis(1000);
const ROUNDS: usize = 4;
const RSS_GROWTH_LIMIT_KIB: u64 = 20 * 1024;

/// xorshift64*: deterministic per client and round, no dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
}

/// What all clients share: the job ids seen, the outcome counts, the failures.
#[derive(Default)]
struct Tally {
    jobs: Mutex<Vec<String>>,
    /// relationship ids answered by attaches and enumerations
    rels: Mutex<Vec<String>>,
    outcomes: Mutex<BTreeMap<String, u64>>,
    failures: Mutex<Vec<String>>,
    requests: AtomicU64,
    /// attach -> job done -> detach cycles completed by the retrying clients
    cycles: AtomicU64,
}

impl Tally {
    fn fail(&self, what: String) {
        let mut f = self.failures.lock().unwrap();
        if f.len() < 50 {
            f.push(what);
        }
    }
    fn count(&self, key: String) {
        *self.outcomes.lock().unwrap().entry(key).or_default() += 1;
    }
}

fn element(k: u64) -> String {
    format!("block/b{k}")
}

/// Checks the envelope; returns the result, or the error code.
fn envelope(v: &Value, id: u64) -> Result<Result<Value, i64>, String> {
    let o = v.as_object().ok_or_else(|| format!("not an object: {v}"))?;
    if o.get("jsonrpc") != Some(&json!("2.0")) {
        return Err(format!("no jsonrpc 2.0: {v}"));
    }
    if o.get("id") != Some(&json!(id)) {
        return Err(format!("answer to id {id} carries {:?}: {v}", o.get("id")));
    }
    match (o.get("result"), o.get("error")) {
        (Some(r), None) => Ok(Ok(r.clone())),
        (None, Some(e)) => {
            let c = e["code"].as_i64().ok_or_else(|| format!("no code: {v}"))?;
            if e["message"].as_str().is_none_or(str::is_empty) {
                return Err(format!("error without message: {v}"));
            }
            Ok(Err(c))
        }
        _ => Err(format!("not exactly one of result/error: {v}")),
    }
}

/// In one enumeration: a target is in one relationship, and no source is a target.
fn check_one_relationship_each(rels: &Value) -> Result<(), String> {
    let arr = rels.as_array().ok_or("not an array")?;
    let mut targets = BTreeSet::new();
    let mut sources = BTreeSet::new();
    for r in arr {
        let s = r["SystemElement"].as_str().ok_or("element missing")?;
        let t = r["SyncedElement"].as_str().ok_or("element missing")?;
        if !targets.insert(t.to_string()) {
            return Err(format!("{t} is the target of two relationships: {rels}"));
        }
        sources.insert(s.to_string());
    }
    if let Some(e) = sources.intersection(&targets).next() {
        return Err(format!("{e} is both a source and a target: {rels}"));
    }
    Ok(())
}

struct Ctx {
    socket: PathBuf,
    tally: Tally,
}

/// Clients `0..CYCLERS` retry on 6 to get whole copies done; the others call at random.
const CYCLERS: usize = 4;
/// Longest pause of a random client between two calls, microseconds.
const THINK_US: u64 = 4000;

/// One request on `conn`, answer checked and counted; `None` after a failure (recorded).
fn call(t: &Tally, conn: &mut Raw, id: u64, method: &str, params: Value) -> Option<Value> {
    let req = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    t.requests.fetch_add(1, Ordering::Relaxed);
    let r = conn
        .send_line(req.to_string().as_bytes())
        .map_err(|e| e.to_string())
        .and_then(|()| conn.answer());
    match r {
        Ok(answer) => match judge(t, method, &req, &answer, id) {
            Ok(()) => Some(answer),
            Err(e) => {
                t.fail(format!("{method} {req}: {e}"));
                None
            }
        },
        Err(e) => {
            t.fail(format!("{method} {req}: {e}"));
            None
        }
    }
}

/// A client that wants whole copies of `b(2n)` onto `b(2n+1)`, copy types in turn: attach
/// (retrying while the elements are busy, detaching a relationship in its way), wait for the
/// job, detach. Shows that work gets done while everyone else contends for the same objects.
fn cycler(ctx: &Ctx, n: usize, round: usize, until: Instant) {
    let t = &ctx.tally;
    let (s, d) = (element(2 * n as u64), element(2 * n as u64 + 1));
    let mut conn = match Raw::connect_within(&ctx.socket, ANSWER_BOUND) {
        Ok(c) => c,
        Err(e) => return t.fail(format!("cycler {n}: connect: {e}")),
    };
    let mut seq = 0u64;
    let mut next_id = || {
        seq += 1;
        ((round * CLIENTS + n) as u64) << 24 | seq
    };
    let pause = || std::thread::sleep(Duration::from_millis(2));
    let mut k = round + n;
    'cycle: while Instant::now() < until {
        k += 1;
        let ct = [3u16, 4, 5, 2][k % 4];
        // attach
        let rel = loop {
            if Instant::now() >= until {
                return;
            }
            let p = json!({"SourceElement": s, "TargetElement": d, "CopyType": ct});
            let Some(a) = call(t, &mut conn, next_id(), "AttachReplica", p) else {
                return;
            };
            let r = &a["result"];
            match r["ReturnValue"].as_u64() {
                Some(0 | 4096) => {
                    if let Some(j) = r["Job"].as_str() {
                        // wait for the job (someone may stop it: fine)
                        loop {
                            if Instant::now() >= until {
                                return;
                            }
                            let Some(v) =
                                call(t, &mut conn, next_id(), "GetJob", json!({"Job": j}))
                            else {
                                return;
                            };
                            if v["result"]["JobState"].as_u64().is_none_or(|st| st >= 7) {
                                break;
                            }
                            pause();
                        }
                    }
                    break r["Relationship"].as_str().unwrap_or_default().to_string();
                }
                Some(6) => {
                    // a relationship in the way: ask for it to go
                    let why = r["Description"].as_str().unwrap_or_default();
                    if let Some(other) = why
                        .strip_prefix("in use: ")
                        .filter(|w| w.contains("already in relationship"))
                        .and_then(|w| w.rsplit(' ').next())
                    {
                        let p = json!({"Relationship": other, "Operation": 2});
                        if call(t, &mut conn, next_id(), "ModifySynchronization", p).is_none() {
                            return;
                        }
                    }
                    pause();
                }
                _ => {
                    t.fail(format!("cycler {n}: attach {s} {d} {ct}: {a}"));
                    continue 'cycle;
                }
            }
        };
        // detach (an UnSyncUnAssoc copy, or a stopped job, leaves none: 5)
        loop {
            if Instant::now() >= until {
                return;
            }
            let p = json!({"Relationship": rel, "Operation": 2});
            let Some(a) = call(t, &mut conn, next_id(), "ModifySynchronization", p) else {
                return;
            };
            match a["result"]["ReturnValue"].as_u64() {
                Some(0 | 5) => break,
                _ => pause(),
            }
        }
        t.cycles.fetch_add(1, Ordering::Relaxed);
    }
}

/// One client: random calls until `until`, every answer checked.
fn client(ctx: &Ctx, n: usize, round: usize, until: Instant) {
    if n < CYCLERS {
        return cycler(ctx, n, round, until);
    }
    let t = &ctx.tally;
    let mut rng = Rng::new((round as u64) << 32 | n as u64);
    let mut conn = match Raw::connect_within(&ctx.socket, ANSWER_BOUND) {
        Ok(c) => c,
        Err(e) => return t.fail(format!("client {n}: connect: {e}")),
    };
    let mut seq = 0u64;
    if n == CYCLERS && round == 0 {
        // one line over the 1 MiB limit (in the warm-up: buffers freed by many threads at
        // once stay in the allocator's arenas; see oversize_lines_do_not_accumulate)
        t.requests.fetch_add(1, Ordering::Relaxed);
        let big = vec![b'x'; (1 << 20) + 1];
        let answer = conn
            .send_line(&big)
            .map_err(|e| e.to_string())
            .and_then(|()| conn.answer());
        match answer {
            Ok(v) if v["error"]["code"] == json!(-32600) && v["id"].is_null() => {
                t.count("oversize line -32600".into())
            }
            other => t.fail(format!("client {n}: oversize line: {other:?}")),
        }
    }
    while Instant::now() < until {
        // a little think time: management software does not spin on its socket
        std::thread::sleep(Duration::from_micros(rng.below(THINK_US)));
        seq += 1;
        let id = ((round * CLIENTS + n) as u64) << 24 | seq;
        // connection churn
        if rng.below(25) == 0 {
            conn = match Raw::connect_within(&ctx.socket, ANSWER_BOUND) {
                Ok(c) => c,
                Err(e) => return t.fail(format!("client {n}: reconnect: {e}")),
            };
        }
        let roll = rng.below(100);
        let (method, params): (&str, Value) = match roll {
            0..=29 => {
                let s = rng.below(OBJECTS as u64);
                let d = rng.below(OBJECTS as u64);
                let ct = *rng.pick(&[2u16, 3, 3, 4, 4, 5, 5, 0, 7]);
                (
                    "AttachReplica",
                    json!({"SourceElement": element(s), "TargetElement": element(d), "CopyType": ct}),
                )
            }
            30..=44 => {
                let s = rng.below(OBJECTS as u64);
                let d = rng.below(OBJECTS as u64);
                let known = t.rels.lock().unwrap().clone();
                let rel = match rng.below(6) {
                    0 => format!("/backstores/{}", element(s)),
                    1 => element(s),
                    2 => format!("b{s}/b{d}"),
                    _ if !known.is_empty() => rng.pick(&known).clone(),
                    _ => format!("b{s}/b{d}"),
                };
                let op = *rng.pick(&[2u16, 2, 2, 3, 4]);
                (
                    "ModifySynchronization",
                    json!({"Relationship": rel, "Operation": op}),
                )
            }
            45..=54 => ("EnumerateRelationships", Value::Null),
            55..=57 => ("EnumerateJobs", Value::Null),
            58..=60 => ("EnumerateStorageObjects", Value::Null),
            61..=72 => {
                let job = known_or_made_up(t, &mut rng);
                (
                    *rng.pick(&["GetJob", "GetJob", "GetError"]),
                    json!({ "Job": job }),
                )
            }
            73..=77 => {
                let job = known_or_made_up(t, &mut rng);
                let st = *rng.pick(&[4u16, 5]);
                (
                    "RequestStateChange",
                    json!({"Job": job, "RequestedState": st}),
                )
            }
            78..=84 => (
                "AdoptStorageObject",
                json!({ "Element": element(rng.below(OBJECTS as u64 + 1)) }),
            ),
            _ => {
                malformed(ctx, &mut conn, &mut rng, id, n);
                continue;
            }
        };
        let mut req = json!({"jsonrpc": "2.0", "id": id, "method": method});
        if !params.is_null() {
            req["params"] = params;
        }
        t.requests.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = conn.send_line(req.to_string().as_bytes()) {
            return t.fail(format!("client {n}: send {method}: {e}"));
        }
        let answer = match conn.answer() {
            Ok(v) => v,
            Err(e) => return t.fail(format!("client {n}: {method} {req}: {e}")),
        };
        if let Err(e) = judge(t, method, &req, &answer, id) {
            t.fail(format!("client {n}: {method} {req}: {e}"));
        }
    }
}

fn known_or_made_up(t: &Tally, rng: &mut Rng) -> String {
    let jobs = t.jobs.lock().unwrap();
    if !jobs.is_empty() && rng.below(4) != 0 {
        rng.pick(&jobs).clone()
    } else {
        rng.pick(&[
            "0",
            "999999",
            "-1",
            "job-1",
            "",
            "1 2",
            "18446744073709551616",
        ])
        .to_string()
    }
}

/// Lines that are not requests, and notifications: the server answers the former with an
/// error (id null) and the latter not at all.
fn malformed(ctx: &Ctx, conn: &mut Raw, rng: &mut Rng, id: u64, n: usize) {
    let t = &ctx.tally;
    t.requests.fetch_add(1, Ordering::Relaxed);
    let (line, code): (Vec<u8>, Option<i64>) = match rng.below(6) {
        0 => (b"{".to_vec(), Some(-32700)),
        1 => (b"[]".to_vec(), Some(-32600)),
        2 => (vec![0xff, 0x00, b'{', 0x80], Some(-32700)),
        3 => (
            br#"{"jsonrpc":"2.0","id":null,"method":"AttachReplica","params":[1,2,3]}"#.to_vec(),
            Some(-32602),
        ),
        4 => (
            br#"{"jsonrpc":"2.0","method":"EnumerateJobs"}"#.to_vec(),
            None,
        ),
        _ => (b"   ".to_vec(), None),
    };
    if let Err(e) = conn.send_line(&line) {
        return t.fail(format!("client {n}: send malformed: {e}"));
    }
    if let Some(want) = code {
        match conn.answer() {
            Ok(v) => {
                let c = v["error"]["code"].as_i64();
                if c != Some(want) || v.get("id") != Some(&Value::Null) {
                    t.fail(format!(
                        "client {n}: {:?} answered {v}",
                        String::from_utf8_lossy(&line)
                    ));
                }
                t.count(format!("malformed {want}"));
            }
            Err(e) => t.fail(format!("client {n}: malformed line: {e}")),
        }
    } else {
        // silence; prove it with a request right behind it
        let probe = json!({"jsonrpc": "2.0", "id": id, "method": "EnumerateJobs"});
        if let Err(e) = conn.send_line(probe.to_string().as_bytes()) {
            return t.fail(format!("client {n}: send probe: {e}"));
        }
        match conn.answer() {
            Ok(v) if v["id"] == json!(id) => t.count("notification: silent".into()),
            Ok(v) => t.fail(format!("client {n}: a notification was answered: {v}")),
            Err(e) => t.fail(format!("client {n}: probe: {e}")),
        }
    }
}

/// The answer fits the method; counts it.
fn judge(t: &Tally, method: &str, req: &Value, answer: &Value, id: u64) -> Result<(), String> {
    let outcome = envelope(answer, id)?;
    let key = match &outcome {
        Ok(r) => match r.get("ReturnValue").and_then(Value::as_u64) {
            Some(rv) => format!("{method} {rv}"),
            None => format!("{method} ok"),
        },
        Err(c) => format!("{method} error {c}"),
    };
    t.count(key);
    match (method, &outcome) {
        ("AttachReplica", Ok(r)) => {
            let rv = r["ReturnValue"].as_u64().ok_or("no ReturnValue")?;
            if ![0, 4096, 5, 6].contains(&rv) {
                return Err(format!("attach answered {rv}: {r}"));
            }
            if rv == 4096 {
                let j = r["Job"].as_str().ok_or("4096 without a job")?;
                t.jobs.lock().unwrap().push(j.to_string());
            }
            if let Some(rel) = r["Relationship"].as_str() {
                let mut rels = t.rels.lock().unwrap();
                if !rels.iter().any(|x| x == rel) {
                    rels.push(rel.to_string());
                }
            }
            if rv == 0 && req["params"]["CopyType"] != 4 {
                return Err(format!("0 for a copy type that starts a job: {r}"));
            }
            if rv != 0 && rv != 4096 && r["Description"].as_str().is_none_or(str::is_empty) {
                return Err(format!("no reason: {r}"));
            }
        }
        ("ModifySynchronization", Ok(r)) => {
            let rv = r["ReturnValue"].as_u64().ok_or("no ReturnValue")?;
            if ![0, 1, 4096, 5, 6].contains(&rv) {
                return Err(format!("modify answered {rv}: {r}"));
            }
            if rv == 4096 {
                if let Some(j) = r["Job"].as_str() {
                    t.jobs.lock().unwrap().push(j.to_string());
                }
            }
        }
        ("RequestStateChange", Ok(r)) => {
            let rv = r["ReturnValue"].as_u64().ok_or("no ReturnValue")?;
            if ![0, 5].contains(&rv) {
                return Err(format!("stop answered {rv}: {r}"));
            }
        }
        ("AdoptStorageObject", Ok(r)) => {
            let rv = r["ReturnValue"].as_u64().ok_or("no ReturnValue")?;
            if ![0, 5, 6].contains(&rv) {
                return Err(format!("adopt answered {rv}: {r}"));
            }
        }
        ("EnumerateRelationships", Ok(r)) => check_one_relationship_each(r)?,
        ("EnumerateJobs" | "EnumerateStorageObjects", Ok(r)) => {
            r.as_array().ok_or("not an array")?;
        }
        ("GetJob", Ok(r)) => {
            r["InstanceID"].as_str().ok_or("no InstanceID")?;
        }
        ("GetError", Ok(r)) => {
            if !(r["Error"].is_null() || r["Error"].is_string()) {
                return Err(format!("GetError: {r}"));
            }
        }
        ("GetJob" | "GetError", Err(c)) if *c == -32001 => {}
        (_, Err(c)) => return Err(format!("error {c}: {answer}")),
        _ => return Err(format!("unexpected: {answer}")),
    }
    Ok(())
}

/// Resident set size of this process, KiB.
fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// Twenty lines over the 1 MiB limit, one after the other on fresh connections: each is
/// refused, the connection stays usable, and the server keeps none of it.
fn oversize_lines_do_not_accumulate(socket: &Path) {
    let mut rss = Vec::new();
    for i in 0..20 {
        let mut conn = Raw::connect_within(socket, ANSWER_BOUND).unwrap();
        conn.send_line(&vec![b'{'; (1 << 20) + 1]).unwrap();
        let v = conn.answer().unwrap();
        assert_eq!(v["error"]["code"], json!(-32600), "{v}");
        conn.send_line(br#"{"jsonrpc":"2.0","id":5,"method":"EnumerateJobs"}"#)
            .unwrap();
        assert_eq!(conn.answer().unwrap()["id"], json!(5));
        drop(conn);
        std::thread::sleep(Duration::from_millis(5));
        if i == 4 || i == 19 {
            rss.push(rss_kib());
        }
    }
    println!("  RSS after 5 and 20 oversize lines (KiB): {rss:?}");
    assert!(
        rss[1].saturating_sub(rss[0]) < 4096,
        "20 oversize lines grew memory: {rss:?}"
    );
}

/// Runs `CLIENTS` clients for `d`; panics with a clear message if they do not all finish
/// within the deadline.
fn round(ctx: &Arc<Ctx>, r: usize, d: Duration) {
    let until = Instant::now() + d;
    let (tx, rx) = mpsc::channel();
    for n in 0..CLIENTS {
        let ctx = ctx.clone();
        let tx = tx.clone();
        std::thread::Builder::new()
            .name(format!("client-{n}"))
            .spawn(move || {
                client(&ctx, n, r, until);
                let _ = tx.send(n);
            })
            .unwrap();
    }
    drop(tx);
    let deadline = until + ANSWER_BOUND + Duration::from_secs(10);
    let mut done = BTreeSet::new();
    while done.len() < CLIENTS {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(n) => {
                done.insert(n);
            }
            Err(_) => {
                let stuck: Vec<usize> = (0..CLIENTS).filter(|n| !done.contains(n)).collect();
                panic!(
                    "DEADLOCK? round {r}: {} clients still waiting for answers {:?} after the deadline: {stuck:?}",
                    stuck.len(),
                    deadline.saturating_duration_since(until)
                );
            }
        }
    }
}

/// All 100 clients attach one source to different targets at the same instant: exactly one
/// wins, the others hear 6 (In Use).
fn burst(ctx: &Arc<Ctx>) {
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let handles: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let ctx = ctx.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(&ctx.socket).unwrap();
                // b1..b8: b9 is exported, so a racer aiming at it may rightly win the claim
                // and still hear 6
                let target = element(1 + (n % (OBJECTS - 2)) as u64);
                barrier.wait();
                c.attach_replica("block/b0", &target, 3).unwrap()
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let won: Vec<_> = results.iter().filter(|r| r.return_value == 4096).collect();
    let summary: BTreeMap<u32, usize> = results.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r.return_value).or_default() += 1;
        m
    });
    assert_eq!(
        won.len(),
        1,
        "winners of the race for b0: {won:?}; answers {summary:?}; {:?}",
        results.iter().find(|r| r.return_value != 6)
    );
    for r in &results {
        assert!(
            r.return_value == 4096 || r.return_value == 6,
            "a racing attach answered {r:?}"
        );
    }
    ctx.tally
        .jobs
        .lock()
        .unwrap()
        .push(won[0].job.clone().unwrap());
}

fn wait_idle(engine: &Engine) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while engine.jobs().any_running() {
        assert!(
            Instant::now() < deadline,
            "jobs still running 30 s after the load stopped: {:?}",
            engine
                .jobs()
                .list()
                .iter()
                .filter(|j| j.job_state < 7)
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn hundred_clients_conflicting_calls() {
    let started = Instant::now();
    // b0..b9: 8 MiB, 9 MiB, ...: every later one can take a copy of every earlier one
    let sizes: Vec<u64> = (0..OBJECTS as u64).map(|k| (8 + k) * MB).collect();
    let w = World::guarded(&sizes);
    for k in 0..OBJECTS {
        w.iblock(&format!("b{k}"), k);
    }
    // one of them exported: a target it may not be
    let b9 = w.cfs.find_storage_object(&Plugin::Block, "b9").unwrap();
    w.export(&b9, "iqn.2003-01.org.example:stress");
    let socket = w.dir.path().join("run/api.sock");
    let server = Server::bind(&socket, Arc::new(w.engine.clone()))
        .unwrap()
        .spawn();
    let ctx = Arc::new(Ctx {
        socket,
        tally: Tally::default(),
    });

    burst(&ctx);
    round(&ctx, 0, WARM_UP);
    wait_idle(&w.engine);
    let settle = || {
        wait_idle(&w.engine);
        // the test doubles' own call logs grow with every call: not the daemon's memory
        w.sim.clear_calls();
        w.fake.clear_calls();
        rss_kib()
    };
    let rss_warm = settle();
    let mut rss = vec![rss_warm];
    for r in 1..=ROUNDS {
        round(&ctx, r, ROUND);
        rss.push(settle());
    }
    let load_time = started.elapsed();

    let t = &ctx.tally;
    let outcomes = t.outcomes.lock().unwrap().clone();
    println!(
        "stress: {} requests from {CLIENTS} clients in {} rounds, {:.1} s in all",
        t.requests.load(Ordering::Relaxed),
        ROUNDS + 1,
        load_time.as_secs_f64()
    );
    for (k, v) in &outcomes {
        println!("  {v:6}  {k}");
    }
    println!("  RSS after warm-up and each round (KiB): {rss:?}");
    let cycles = t.cycles.load(Ordering::Relaxed);
    println!("  whole copies (attach, job done, detach) by {CYCLERS} retrying clients: {cycles}");
    let failures = t.failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // the load was real: conflicts happened and copies ran
    for k in ["AttachReplica 4096", "AttachReplica 6", "AttachReplica 5"] {
        assert!(
            outcomes.get(k).copied().unwrap_or(0) > 0,
            "no {k:?}: {outcomes:?}"
        );
    }

    // the end state, through the API, against the kernel
    let mut c = Client::connect(&ctx.socket).unwrap();
    let rels = c.enumerate_relationships().unwrap();
    // a target is in one relationship, a source may be in several but is never a target
    let mut targets = BTreeSet::new();
    for r in &rels {
        assert!(
            targets.insert(r.synced_element.clone()),
            "{} is the target of two relationships: {rels:?}",
            r.synced_element
        );
    }
    for r in &rels {
        assert!(
            !targets.contains(&r.system_element),
            "{} is both a source and a target: {rels:?}",
            r.system_element
        );
    }
    let api: BTreeSet<(u16, String)> = rels
        .iter()
        .map(|r| {
            let tgt = r.synced_element.rsplit('/').next().unwrap().to_string();
            (r.copy_type, tgt)
        })
        .collect();
    let devices = w.sim.list().unwrap();
    let kernel: BTreeSet<(u16, String)> = devices
        .iter()
        .filter_map(|d| names::parse_tag(&d.name))
        .map(|(ct, s)| (ct.value(), s))
        .collect();
    assert_eq!(api, kernel, "relationships: API vs kernel records");
    for d in &devices {
        assert!(!d.suspended, "{} left suspended", d.name);
    }
    let objs = c.enumerate_storage_objects().unwrap();
    assert_eq!(objs.len(), OBJECTS, "{objs:?}");
    assert!(objs.iter().all(|o| o.enabled), "{objs:?}");
    assert_eq!(w.guard().escapes(), Vec::<String>::new());
    oversize_lines_do_not_accumulate(&ctx.socket);
    drop(c);
    server.stop().unwrap();

    // a restarted daemon finds the same relationships in the kernel
    let again = Engine::new(w.cfs.clone(), w.sim.clone(), world::fast_options()).unwrap();
    let key = |v: &lio_replica::service::RelationshipView| {
        (
            v.instance_id.clone(),
            v.system_element.clone(),
            v.synced_element.clone(),
            v.copy_type,
        )
    };
    let live: BTreeSet<_> = w.engine.relationships().unwrap().iter().map(key).collect();
    let found: BTreeSet<_> = again.relationships().unwrap().iter().map(key).collect();
    assert_eq!(live, found, "relationships: live vs rediscovered");

    // Once the load is gone nothing is left held: every relationship can be detached and
    // every pair attached and detached again at the first try (a leaked claim or lock would
    // answer 6, or hang).
    let t0 = Instant::now();
    for r in w.engine.relationships().unwrap() {
        let d = w.engine.modify_synchronization(&r.instance_id, 2, false);
        assert_eq!(
            d.return_value, 0,
            "detach {} after the load: {d:?}",
            r.instance_id
        );
    }
    for k in 0..4u64 {
        let (s, d) = (element(2 * k), element(2 * k + 1));
        let a = w.engine.attach_replica(&s, &d, 3);
        assert_eq!(a.return_value, 4096, "attach {s} {d} after the load: {a:?}");
        let j = w
            .engine
            .jobs()
            .wait(a.job.as_ref().unwrap(), Duration::from_secs(20))
            .unwrap();
        assert_eq!(j.job_state, 7, "{j:?}");
        let rel = a.relationship.unwrap();
        let x = w.engine.modify_synchronization(&rel, 2, false);
        assert_eq!(x.return_value, 0, "detach {rel} after the load: {x:?}");
    }
    assert!(w.engine.relationships().unwrap().is_empty());
    for d in w.sim.list().unwrap() {
        assert!(
            names::parse_tag(&d.name).is_none(),
            "record {} left",
            d.name
        );
        let t = w.sim.table(&d.name).unwrap();
        assert!(
            t.len() == 1 && t[0].target_type() == "linear",
            "{} not back to linear: {t:?}",
            d.name
        );
    }
    println!(
        "stress: after the load, everything detached and 4 copies made and detached in {:.2} s",
        t0.elapsed().as_secs_f64()
    );

    let growth = rss.last().unwrap().saturating_sub(rss_warm);
    assert!(
        growth < RSS_GROWTH_LIMIT_KIB,
        "resident memory grew by {growth} KiB after the warm-up: {rss:?}"
    );
    println!(
        "stress: {} relationships at the end, RSS growth after warm-up {growth} KiB, {:.1} s",
        rels.len(),
        started.elapsed().as_secs_f64()
    );
}
