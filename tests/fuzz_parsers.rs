//! Property tests (proptest, fixed case counts and a fixed seed unless `PROPTEST_RNG_SEED` /
//! `PROPTEST_CASES` say otherwise) for everything that parses outside input:
//!
//! - the JSON-RPC line handler ([`protocol::handle_line`]) fed arbitrary bytes, arbitrary
//!   strings, arbitrary JSON values and mutated valid requests, against a canned service and
//!   against a real engine (fake configfs + simulated device-mapper): it never panics, answers
//!   every request that has an `id` (and every malformed line) with exactly one well-formed
//!   JSON-RPC response on one line, stays silent only for notifications and blank lines, echoes
//!   the id, uses only the documented error codes, and every CIM result carries a valid
//!   ReturnValue with a reason when it is a failure;
//! - the device-mapper status parsers and the table-line parser fed arbitrary strings and
//!   mutated real samples: they never panic, whatever parses prints back to text that parses
//!   to the same value, and typed values survive display -> parse unchanged.

use lio_replica::api::protocol::{self, code};
use lio_replica::dm::table::{
    LinearParams, MirrorParams, RaidDevice, RaidParams, SnapshotOriginParams, SnapshotParams,
    TableLine, Target,
};
use lio_replica::dm::{
    format_table, parse_table, MirrorStatus, RaidStatus, Sectors, SnapshotStatus,
};
use lio_replica::error::ReturnCode;
use lio_replica::service::{JobView, MethodResult, RelationshipView, Service, StorageObjectView};
use lio_replica::testing::world;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngSeed};
use serde_json::{json, Map, Value};
use std::sync::OnceLock;

/// `cases` cases from a fixed seed, no regression files; the environment may override both.
fn config(cases: u32) -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = cases;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        c.rng_seed = RngSeed::Fixed(0x5eed_110e_2024);
    }
    c.failure_persistence = None;
    c.max_shrink_iters = 2000;
    c
}

// ---------------------------------------------------------------------------------------------
// JSON-RPC

const DOCUMENTED_CODES: &[i64] = &[
    code::PARSE_ERROR,
    code::INVALID_REQUEST,
    code::METHOD_NOT_FOUND,
    code::INVALID_PARAMS,
    code::INTERNAL_ERROR,
    code::SERVER_BUSY,
    code::NO_SUCH_JOB,
    code::PERMISSION_DENIED,
];

/// Canned answers; never panics, so every internal error would be the protocol's own.
struct Canned;

fn canned_job(id: &str) -> JobView {
    JobView {
        instance_id: id.into(),
        name: "copy".into(),
        job_state: 4,
        job_state_name: "Running".into(),
        percent_complete: 10,
        time_submitted: 1,
        start_time: Some(2),
        elapsed_time: 0.5,
        error_code: 0,
        error_description: None,
        delete_on_completion: true,
        time_before_removal: 300,
        source: "/backstores/block/a".into(),
        target: "/backstores/block/b".into(),
        copy_type: 3,
        relationship: Some("a/b".into()),
    }
}

impl Service for Canned {
    fn attach_replica(&self, s: &str, t: &str, c: u16) -> MethodResult {
        match (s.len() + t.len() + c as usize) % 4 {
            0 => MethodResult::ok(ReturnCode::JobStarted, Some("1".into()), Some("a/b".into())),
            1 => MethodResult::ok(ReturnCode::Completed, None, Some("a/b".into())),
            // no description: the protocol must add one
            2 => MethodResult {
                return_value: 6,
                job: None,
                relationship: None,
                description: None,
            },
            _ => MethodResult::error(&lio_replica::Error::Invalid(format!("{s:?} {t:?}"))),
        }
    }
    fn modify_synchronization(&self, r: &str, op: u16, _force: bool) -> MethodResult {
        if r.is_empty() || op == 0 {
            MethodResult {
                return_value: 5,
                job: None,
                relationship: None,
                description: Some(String::new()),
            }
        } else {
            MethodResult::ok(ReturnCode::Completed, None, Some(r.into()))
        }
    }
    fn jobs(&self) -> Vec<JobView> {
        vec![canned_job("1")]
    }
    fn job(&self, id: &str) -> Option<JobView> {
        (id == "1").then(|| canned_job(id))
    }
    fn request_state_change(&self, id: &str, _: u16) -> MethodResult {
        MethodResult::ok(ReturnCode::Completed, Some(id.into()), None)
    }
    fn get_error(&self, id: &str) -> Option<Option<String>> {
        (id == "1").then_some(None)
    }
    fn relationships(&self) -> lio_replica::Result<Vec<RelationshipView>> {
        Err(lio_replica::Error::Other("enumeration failed".into()))
    }
    fn storage_objects(&self) -> lio_replica::Result<Vec<StorageObjectView>> {
        Ok(vec![])
    }
    fn adopt(&self, e: &str) -> MethodResult {
        MethodResult::ok(ReturnCode::Completed, None, Some(e.into()))
    }
}

/// What one line must get back, whatever it holds.
fn check_answer(line: &[u8], answer: Option<Value>) -> Result<(), TestCaseError> {
    check_answer_to(line, serde_json::from_slice(line).ok(), answer)
}

/// `parsed`: the request as the handler saw it (`None`: not JSON). Ids are compared with it,
/// not with a re-parse of `line`: serde_json's default float parsing may differ in the last
/// digit between two routes.
fn check_answer_to(
    line: &[u8],
    parsed: Option<Value>,
    answer: Option<Value>,
) -> Result<(), TestCaseError> {
    let blank = line.iter().all(u8::is_ascii_whitespace);
    let Some(v) = answer else {
        // silence only for blank lines and notifications (objects without an id)
        let notification = matches!(&parsed, Some(Value::Object(o)) if !o.contains_key("id"));
        prop_assert!(
            blank || notification,
            "no answer to {:?}",
            String::from_utf8_lossy(line)
        );
        return Ok(());
    };
    prop_assert!(!blank, "an answer to a blank line: {v}");
    let text = v.to_string();
    prop_assert!(!text.contains('\n'), "answer spans lines: {text}");
    prop_assert!(serde_json::from_str::<Value>(&text).is_ok(), "{}", text);
    let obj = v.as_object().expect("the answer is an object");
    prop_assert_eq!(obj.get("jsonrpc"), Some(&json!("2.0")), "{}", text);
    let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    let has_result = obj.contains_key("result");
    let has_error = obj.contains_key("error");
    prop_assert!(
        has_result != has_error,
        "exactly one of result/error: {}",
        text
    );
    prop_assert_eq!(
        keys.len(),
        3,
        "jsonrpc, id and one of result/error: {}",
        text
    );
    let id = obj.get("id").expect("the answer has an id");

    // The id: echoed when the request had a usable one, null otherwise.
    let req_id = match &parsed {
        Some(Value::Object(o)) => match o.get("id") {
            Some(i @ (Value::Null | Value::String(_) | Value::Number(_))) => Some(i.clone()),
            _ => None,
        },
        _ => None,
    };
    match &req_id {
        Some(rid) => prop_assert_eq!(id, rid, "{}", text),
        None => prop_assert_eq!(id, &Value::Null, "{}", text),
    }

    if has_error {
        let e = obj["error"].as_object().expect("error is an object");
        let c = e.get("code").and_then(Value::as_i64).expect("error code");
        prop_assert!(
            DOCUMENTED_CODES.contains(&c),
            "undocumented code {}: {}",
            c,
            text
        );
        let msg = e.get("message").and_then(Value::as_str).unwrap_or("");
        prop_assert!(!msg.is_empty(), "error without a message: {}", text);
        for k in e.keys() {
            prop_assert!(
                matches!(k.as_str(), "code" | "message" | "data"),
                "{}",
                text
            );
        }
        // the code fits the line
        match &parsed {
            None => prop_assert_eq!(c, code::PARSE_ERROR, "{}", text),
            Some(Value::Object(_)) => prop_assert!(c != code::PARSE_ERROR, "{}", text),
            Some(_) => prop_assert_eq!(c, code::INVALID_REQUEST, "{}", text),
        }
    } else {
        // results only for well-formed requests naming a known method
        let Some(Value::Object(o)) = &parsed else {
            return Err(TestCaseError::fail(format!(
                "a result for a non-request: {text}"
            )));
        };
        let method = o.get("method").and_then(Value::as_str).unwrap_or("");
        prop_assert!(protocol::method::ALL.contains(&method), "{}", text);
        let r = &obj["result"];
        if matches!(
            method,
            "AttachReplica" | "ModifySynchronization" | "RequestStateChange" | "AdoptStorageObject"
        ) {
            let rv = r["ReturnValue"].as_u64().expect("ReturnValue");
            prop_assert!(
                ReturnCode::from_value(rv as u32).is_some(),
                "unknown ReturnValue {}: {}",
                rv,
                text
            );
            if rv != 0 && rv != 4096 {
                let d = r["Description"].as_str().unwrap_or("");
                prop_assert!(!d.is_empty(), "failure without a reason: {}", text);
            }
            if rv == 4096 && method == "AttachReplica" {
                prop_assert!(r["Job"].is_string(), "job started without a job: {}", text);
            }
        }
    }
    Ok(())
}

const TOP_KEYS: &[&str] = &["jsonrpc", "id", "method", "params"];
const PARAM_KEYS: &[&str] = &[
    "SourceElement",
    "TargetElement",
    "CopyType",
    "Relationship",
    "Operation",
    "Force",
    "Job",
    "RequestedState",
    "Element",
];

/// Element-like and otherwise interesting strings.
fn some_string() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "block/src", "/backstores/block/src", "block/tgt", "block/big", "block/small",
            "block/exp", "/backstores/block/tgt", "src/tgt", "src/big", "1", "2", "0", "",
            "block/../etc", "block/a\0b", "user:x/y", "fileio/f0", "block/src/", "/", "..",
            "AttachReplica", "2.0",
        ]).prop_map(str::to_string),
        2 => "(/backstores/)?(block|fileio|ramdisk|pscsi|user:[a-z]{0,3}|[a-z.]{0,5})/[A-Za-z0-9_.:/ -]{0,70}",
        1 => "[0-9]{1,3}",
        2 => any::<String>(),
    ]
}

fn json_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec![
            0u64,
            1,
            2,
            3,
            4,
            5,
            6,
            32767,
            32768,
            65535,
            65536,
            u64::MAX
        ])
        .prop_map(|n| json!(n)),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
    ]
}

fn json_key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(
            TOP_KEYS
                .iter()
                .chain(PARAM_KEYS)
                .copied()
                .collect::<Vec<_>>()
        )
        .prop_map(str::to_string),
        any::<String>(),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        json_number(),
        some_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((json_key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A valid request of each method.
fn valid_requests() -> Vec<Value> {
    let p = |method: &str, params: Value| -> Value {
        json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params})
    };
    vec![
        p(
            "AttachReplica",
            json!({"SourceElement": "block/src", "TargetElement": "block/tgt", "CopyType": 3}),
        ),
        p(
            "AttachReplica",
            json!({"SourceElement": "/backstores/block/src", "TargetElement": "block/big", "CopyType": 4}),
        ),
        p(
            "AttachReplica",
            json!({"SourceElement": "block/tgt", "TargetElement": "block/big", "CopyType": 5}),
        ),
        p(
            "ModifySynchronization",
            json!({"Relationship": "src/tgt", "Operation": 2}),
        ),
        p("EnumerateJobs", json!({})),
        p("GetJob", json!({"Job": "1"})),
        p(
            "RequestStateChange",
            json!({"Job": "1", "RequestedState": 4}),
        ),
        p("GetError", json!({"Job": "1"})),
        p("EnumerateRelationships", Value::Null),
        json!({"jsonrpc": "2.0", "id": "s", "method": "EnumerateStorageObjects"}),
        p("AdoptStorageObject", json!({"Element": "block/small"})),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    RemoveTop(usize),
    SetTop(usize, Value),
    AddTop(String, Value),
    RemoveParam(usize),
    SetParam(usize, Value),
    ReplaceParams(Value),
    Method(String),
}

/// A parameter value that is mostly of a type the method could take.
fn plausible_param() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => some_string().prop_map(Value::String),
        2 => json_number(),
        1 => json_value(),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        1 => (0..TOP_KEYS.len()).prop_map(Mutation::RemoveTop),
        1 => (0..TOP_KEYS.len(), json_value()).prop_map(|(k, v)| Mutation::SetTop(k, v)),
        1 => (json_key(), json_value()).prop_map(|(k, v)| Mutation::AddTop(k, v)),
        1 => (0..PARAM_KEYS.len()).prop_map(Mutation::RemoveParam),
        3 => (0..PARAM_KEYS.len(), plausible_param()).prop_map(|(k, v)| Mutation::SetParam(k, v)),
        1 => json_value().prop_map(Mutation::ReplaceParams),
        1 => prop_oneof![
            prop::sample::select(protocol::method::ALL.to_vec()).prop_map(str::to_string),
            Just("attachreplica".to_string()),
            any::<String>(),
        ]
        .prop_map(Mutation::Method),
    ]
}

fn apply(mut req: Value, muts: &[Mutation]) -> Value {
    let o = req.as_object_mut().unwrap();
    for m in muts {
        match m {
            Mutation::RemoveTop(k) => {
                o.remove(TOP_KEYS[*k]);
            }
            Mutation::SetTop(k, v) => {
                o.insert(TOP_KEYS[*k].to_string(), v.clone());
            }
            Mutation::AddTop(k, v) => {
                o.insert(k.clone(), v.clone());
            }
            Mutation::RemoveParam(k) => {
                if let Some(Value::Object(p)) = o.get_mut("params") {
                    p.remove(PARAM_KEYS[*k]);
                }
            }
            Mutation::SetParam(k, v) => {
                if let Some(Value::Object(p)) = o.get_mut("params") {
                    p.insert(PARAM_KEYS[*k].to_string(), v.clone());
                }
            }
            Mutation::ReplaceParams(v) => {
                o.insert("params".into(), v.clone());
            }
            Mutation::Method(m) => {
                o.insert("method".into(), Value::String(m.clone()));
            }
        }
    }
    req
}

#[derive(Debug, Clone)]
enum ByteMut {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Truncate(usize),
}

fn byte_mutation() -> impl Strategy<Value = ByteMut> {
    let interesting = prop_oneof![
        prop::sample::select(b"{}[]\",:0123456789-+.eE \\nutfl\t\r\n\x00\xff".to_vec()),
        any::<u8>(),
    ];
    prop_oneof![
        (any::<usize>(), interesting.clone()).prop_map(|(i, b)| ByteMut::Flip(i, b)),
        (any::<usize>(), interesting).prop_map(|(i, b)| ByteMut::Insert(i, b)),
        any::<usize>().prop_map(ByteMut::Delete),
        any::<usize>().prop_map(ByteMut::Truncate),
    ]
}

fn mutate_bytes(mut b: Vec<u8>, muts: &[ByteMut]) -> Vec<u8> {
    for m in muts {
        let n = b.len();
        match *m {
            ByteMut::Flip(i, x) if n > 0 => b[i % n] = x,
            ByteMut::Insert(i, x) => b.insert(i % (n + 1), x),
            ByteMut::Delete(i) if n > 0 => {
                b.remove(i % n);
            }
            ByteMut::Truncate(i) => b.truncate(i % (n + 1)),
            _ => {}
        }
    }
    b
}

/// A line as the server would hand it to the handler: no newline inside.
fn as_line(mut b: Vec<u8>) -> Vec<u8> {
    b.retain(|&c| c != b'\n');
    b
}

/// A request line: mutated valid requests (some with byte damage; `mutated` in 11 + `mutated`
/// of the lines), arbitrary JSON, arbitrary text and arbitrary bytes.
fn request_line(mutated_weight: u32) -> impl Strategy<Value = Vec<u8>> {
    let mutated = (
        prop::sample::select(valid_requests()),
        prop_oneof![
            2 => Just(Vec::new()),
            3 => prop::collection::vec(mutation(), 1..2),
            1 => prop::collection::vec(mutation(), 2..5),
        ],
        prop::collection::vec(byte_mutation(), 1..4),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(req, muts, bytes, damage)| {
            let text = apply(req, &muts).to_string().into_bytes();
            if damage {
                mutate_bytes(text, &bytes)
            } else {
                text
            }
        });
    prop_oneof![
        mutated_weight => mutated,
        2 => json_value().prop_map(|v| v.to_string().into_bytes()),
        1 => "[ {}\\[\\]\":,0-9a-zA-Z.\\-]{0,120}".prop_map(String::into_bytes),
        1 => any::<String>().prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..300),
    ]
    .prop_map(as_line)
}

/// A real engine over four block backstores, shared by the cases of one property (its state
/// wanders as the cases attach, detach and adopt: that is part of the point).
fn engine_world() -> &'static world::World {
    static W: OnceLock<world::World> = OnceLock::new();
    W.get_or_init(|| {
        let w = world::World::guarded(&[
            16 * world::MB,
            16 * world::MB,
            32 * world::MB,
            8 * world::MB,
            16 * world::MB,
        ]);
        w.iblock("src", 0);
        w.iblock("tgt", 1);
        w.iblock("big", 2);
        w.iblock("small", 3);
        let exp = w.iblock("exp", 4);
        w.export(&exp, "iqn.2003-01.org.example:exp");
        w
    })
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn rpc_lines_get_well_formed_answers(line in request_line(6)) {
        let answer = protocol::handle_line(&Canned, &line);
        check_answer(&line, answer)?;
    }

    #[test]
    fn rpc_json_values_get_well_formed_answers(v in json_value()) {
        let line = v.to_string().into_bytes();
        let answer = protocol::handle_request(&Canned, v.clone());
        check_answer_to(&line, Some(v), answer)?;
    }
}

proptest! {
    #![proptest_config(config(400))]

    /// The same through a real engine: element names reach the engine's resolution and the
    /// fake kernel; nothing may panic (a panic would surface as -32603) and every CIM answer
    /// is one of the documented return values with a reason.
    #[test]
    fn rpc_lines_against_a_real_engine(line in request_line(40)) {
        let w = engine_world();
        let answer = protocol::handle_line(&w.engine, &line);
        if let Some(Value::Object(o)) = &answer {
            if let Some(e) = o.get("error") {
                prop_assert!(
                    e["code"] != json!(code::INTERNAL_ERROR)
                        || !e["message"].as_str().unwrap_or("").starts_with("internal error handling"),
                    "the engine panicked: {}", e
                );
            }
        }
        check_answer(&line, answer)?;
        // every path the fake kernel was asked to change lies under the configfs root
        for c in w.fake.calls() {
            prop_assert!(c.path.starts_with(w.root()), "{:?}", c);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// device-mapper status and table parsers

/// Real samples: the parsers' own unit tests (kernel 6.1 output and documented forms).
const MIRROR_SAMPLES: &[&str] = &[
    "2 253:16 253:32 512/512 1 AA 1 core",
    "2 253:16 253:32 37/512 1 AA 1 core",
    "3 8:16 8:32 8:48 1023/1024 1 ADA 3 disk 8:64 A",
    "2 8:16 8:32 512/512 1 AD 1 core",
];
const RAID_SAMPLES: &[&str] = &[
    "raid1 2 AA 524288/524288 idle 0 0 -",
    "raid1 2 Aa 1024/524288 resync 0 0 -",
    "raid1 2 aa 262144/524288 resync 0 0 -",
    "raid1 2 Aa 524288/524288 recover 0 0 -",
    "raid1 2 AA 100/524288 check 3 0 -",
    "raid1 3 AD- 524288/524288 idle 0 0 -",
    "raid1 2 AA 524288/524288",
    "raid4 5 AAAAA 2/490221568 init 0",
    "raid1 2 AA 10/20 idle 0 0",
    "raid5_ls 3 AAA 8/8 idle 0 0 A extra",
];
const SNAPSHOT_SAMPLES: &[&str] = &[
    "16464/524288 80",
    "Invalid",
    "Overflow",
    "Merge failed",
    "16/524288",
];
const TABLE_SAMPLES: &[&str] = &[
    "0 524288 linear /dev/vdb 2048",
    "0 524288 mirror core 1 1024 2 253:1 0 253:2 0 1 handle_errors",
    "0 524288 mirror core 2 1024 nosync 3 /dev/vdb 0 /dev/vdc 8 8:48 0",
    "0 524288 raid raid1 9 0 rebuild 1 write_mostly 1 max_write_behind 8192 region_size 1024 2 253:3 253:1 253:4 253:2",
    "0 524288 raid raid1 2 0 nosync 2 - 253:3 - -",
    "0 524288 raid raid1 3 0 region_size 1024 2 - 253:3 - 253:4",
    "0 524288 raid raid1 7 0 write_mostly 1 max_write_behind 4096 region_size 2048 2 253:5 253:1 253:6 253:2",
    "0 524288 raid raid1 5 0 rebuild 0 rebuild 1 2 - 8:17 - 8:33",
    "0 524288 snapshot-origin /dev/vdb",
    "0 524288 snapshot /dev/vdb /dev/vdd P 8",
    "0 8 snapshot 253:1 253:5 N 16",
    "524288 1024 zero",
    "525312 1024 error",
    "0 100 striped 2 128 8:16 0 8:32 0",
    "0 100 mirror disk 2 253:3 1024 2 253:1 0 253:2 0",
    "0 100 mirror core 1 1024 2 253:1 0 253:2 0 2 handle_errors keep_log",
    "0 100 raid raid5_ls 3 64 region_size 1024 3 - 8:1 - 8:2 - 8:3",
    "0 100 raid raid1 3 0 min_recovery_rate 100 2 - 8:1 - 8:2",
    "0 100 snapshot 253:1 253:2 PO 8",
    "0 100 snapshot 253:1 253:2 P 8 2 discard_zeroes_cow discard_passdown_origin",
];

/// Tokens that break parsers: huge and negative counts, ratios, odd words, any text.
fn hostile_token() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "0", "1", "2", "3", "-1", "+1", "4294967295", "4294967296", "9223372036854775807",
            "9223372036854775808", "18446744073709551615", "18446744073709551616",
            "1000000000000", "99999999999999999999999", "0/0", "1/0", "18446744073709551615/1",
            "/", "1/", "/1", "-", "A", "AA", "AD-", "core", "disk", "nosync", "sync",
            "handle_errors", "keep_log", "raid1", "rebuild", "write_mostly", "max_write_behind", "max_recovery_rate",
            "region_size", "P", "N", "PO", "Invalid", "Merge", "failed", "linear", "mirror",
            "raid", "snapshot", "snapshot-origin", "zero", "error", "\u{a0}", "é", "\u{0}",
        ])
        .prop_map(str::to_string),
        2 => any::<u64>().prop_map(|n| n.to_string()),
        1 => (any::<u64>(), any::<u64>()).prop_map(|(a, b)| format!("{a}/{b}")),
        1 => "[0-9]{1,30}",
        1 => "[A-Za-z0-9:/_.+-]{0,10}",
        1 => any::<String>(),
    ]
}

#[derive(Debug, Clone)]
enum TokMut {
    Replace(usize, String),
    Insert(usize, String),
    Delete(usize),
    Dup(usize),
    Swap(usize, usize),
    Truncate(usize),
}

fn tok_mutation() -> impl Strategy<Value = TokMut> {
    prop_oneof![
        4 => (any::<usize>(), hostile_token()).prop_map(|(i, t)| TokMut::Replace(i, t)),
        2 => (any::<usize>(), hostile_token()).prop_map(|(i, t)| TokMut::Insert(i, t)),
        2 => any::<usize>().prop_map(TokMut::Delete),
        1 => any::<usize>().prop_map(TokMut::Dup),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(i, j)| TokMut::Swap(i, j)),
        1 => any::<usize>().prop_map(TokMut::Truncate),
    ]
}

#[derive(Debug, Clone)]
enum CharMut {
    Insert(usize, char),
    Delete(usize),
    Replace(usize, char),
}

fn char_mutation() -> impl Strategy<Value = CharMut> {
    let c = prop_oneof![
        prop::sample::select(vec![
            ' ', '\t', '\n', '/', ':', '-', '0', '9', 'A', 'D', '\u{0}', '\u{85}', 'é'
        ]),
        any::<char>(),
    ];
    prop_oneof![
        (any::<usize>(), c.clone()).prop_map(|(i, c)| CharMut::Insert(i, c)),
        any::<usize>().prop_map(CharMut::Delete),
        (any::<usize>(), c).prop_map(|(i, c)| CharMut::Replace(i, c)),
    ]
}

fn mutate_sample(sample: &str, toks: &[TokMut], chars: &[CharMut], sep: &str) -> String {
    let mut t: Vec<String> = sample.split(' ').map(str::to_string).collect();
    for m in toks {
        let n = t.len();
        match m {
            TokMut::Replace(i, s) if n > 0 => t[i % n] = s.clone(),
            TokMut::Insert(i, s) => t.insert(i % (n + 1), s.clone()),
            TokMut::Delete(i) if n > 0 => {
                t.remove(i % n);
            }
            TokMut::Dup(i) if n > 0 => {
                let x = t[i % n].clone();
                t.insert(i % n, x);
            }
            TokMut::Swap(i, j) if n > 0 => t.swap(i % n, j % n),
            TokMut::Truncate(i) => t.truncate(i % (n + 1)),
            _ => {}
        }
    }
    let mut chars_v: Vec<char> = t.join(sep).chars().collect();
    for m in chars {
        let n = chars_v.len();
        match *m {
            CharMut::Insert(i, c) => chars_v.insert(i % (n + 1), c),
            CharMut::Delete(i) if n > 0 => {
                chars_v.remove(i % n);
            }
            CharMut::Replace(i, c) if n > 0 => chars_v[i % n] = c,
            _ => {}
        }
    }
    chars_v.into_iter().collect()
}

/// Mutated samples from `samples`, arbitrary text and near-miss token soup.
fn parser_input(samples: &'static [&'static str]) -> impl Strategy<Value = String> {
    let mutated = (
        prop::sample::select(samples.to_vec()),
        prop::collection::vec(tok_mutation(), 0..5),
        prop::collection::vec(char_mutation(), 0..3),
        prop::sample::select(vec![" ", " ", " ", "  ", "\t", " \n "]),
    )
        .prop_map(|(s, t, c, sep)| mutate_sample(s, &t, &c, sep));
    prop_oneof![
        6 => mutated,
        1 => prop::collection::vec(hostile_token(), 0..14).prop_map(|t| t.join(" ")),
        1 => any::<String>(),
    ]
}

/// Parse, and when it parses, printing and parsing again gives the same value.
macro_rules! parses_stably {
    ($ty:ty, $s:expr) => {{
        let s: &str = $s;
        if let Ok(v) = <$ty>::parse(s) {
            let printed = v.to_string();
            match <$ty>::parse(&printed) {
                Ok(again) => prop_assert_eq!(&again, &v, "{:?} printed as {:?}", s, printed),
                Err(e) => {
                    return Err(TestCaseError::fail(format!(
                        "{s:?} parsed to {v:?}, printed as {printed:?}, which does not parse: {e}"
                    )))
                }
            }
        }
    }};
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn mirror_status_never_panics(s in parser_input(MIRROR_SAMPLES)) {
        parses_stably!(MirrorStatus, &s);
        if let Ok(m) = MirrorStatus::parse(&s) {
            prop_assert!(m.percent() <= 100);
            prop_assert!(m.failed_legs().iter().all(|&i| i < m.devices.len()));
        }
    }

    #[test]
    fn raid_status_never_panics(s in parser_input(RAID_SAMPLES)) {
        parses_stably!(RaidStatus, &s);
        if let Ok(r) = RaidStatus::parse(&s) {
            prop_assert!(r.percent() <= 100);
        }
    }

    #[test]
    fn snapshot_status_never_panics(s in parser_input(SNAPSHOT_SAMPLES)) {
        parses_stably!(SnapshotStatus, &s);
        if let Ok(r) = SnapshotStatus::parse(&s) {
            prop_assert!(r.percent_used().is_none_or(|p| p <= 100));
        }
    }

    #[test]
    fn table_lines_never_panic(s in parser_input(TABLE_SAMPLES)) {
        parses_stably!(TableLine, &s);
        if let Ok(l) = TableLine::parse(&s) {
            let _ = l.devices();
            let mapped = l.target.map_devices(|d| format!("[{d}]"));
            prop_assert_eq!(mapped.devices().len(), l.devices().len());
        }
        // and the parameters alone through each typed parser and the dispatcher
        let params = s.splitn(4, char::is_whitespace).nth(3).unwrap_or("");
        let _ = LinearParams::parse(params);
        let _ = MirrorParams::parse(params);
        let _ = RaidParams::parse(params);
        let _ = SnapshotParams::parse(params);
        let _ = SnapshotOriginParams::parse(params);
        for ty in ["linear", "mirror", "raid", "snapshot", "snapshot-origin", "zero", "error", "", "x"] {
            let _ = Target::parse(ty, params);
        }
    }

    #[test]
    fn whole_tables_never_panic(lines in prop::collection::vec(parser_input(TABLE_SAMPLES), 0..6)) {
        let text = lines.join("\n");
        if let Ok(t) = parse_table(&text) {
            let printed = format_table(&t);
            prop_assert_eq!(parse_table(&printed).ok(), Some(t), "{:?}", printed);
        }
    }
}

// typed values -> text -> the same values

/// A device reference as tables write them: a path or `major:minor`, never blank.
fn dev() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u32..4096, 0u32..1_048_576).prop_map(|(a, b)| format!("{a}:{b}")),
        "/dev/[a-z0-9/_.-]{1,20}",
        "[A-Za-z0-9:/_.+é-]{1,12}".prop_filter("not a raid placeholder", |s| s != "-"),
    ]
}

fn word() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.:/+-]{1,12}"
}

fn mirror_status() -> impl Strategy<Value = MirrorStatus> {
    (1usize..5)
        .prop_flat_map(|n| {
            (
                prop::collection::vec(dev(), n),
                any::<u64>(),
                any::<u64>(),
                prop::collection::vec(prop::sample::select(vec!['A', 'D', 'S', 'R', 'F', 'U']), n),
                prop::collection::vec(word(), 0..4),
            )
        })
        .prop_map(|(devices, in_sync, total, health, log)| MirrorStatus {
            devices,
            in_sync,
            total,
            health,
            log,
        })
}

fn raid_status() -> impl Strategy<Value = RaidStatus> {
    (
        "raid(1|4|5_ls|6_zr|10)",
        prop::collection::vec(prop::sample::select(vec!['A', 'a', 'D', '-']), 1..6),
        any::<u64>(),
        any::<u64>(),
        prop::option::of((
            prop::sample::select(vec![
                "idle", "resync", "recover", "check", "repair", "frozen", "reshape",
            ]),
            any::<u64>(),
        )),
    )
        .prop_map(|(raid_type, health, in_sync, total, action)| {
            let (sync_action, mismatch) = match action {
                Some((a, m)) => (a.to_string(), m),
                None => (String::new(), 0),
            };
            RaidStatus {
                raid_type,
                health,
                in_sync,
                total,
                sync_action,
                mismatch,
            }
        })
}

fn snapshot_status() -> impl Strategy<Value = SnapshotStatus> {
    prop_oneof![
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(used, total, metadata)| {
            SnapshotStatus::Active {
                used,
                total,
                metadata,
            }
        }),
        Just(SnapshotStatus::Invalid),
        Just(SnapshotStatus::Overflow),
        Just(SnapshotStatus::MergeFailed),
    ]
}

fn linear() -> impl Strategy<Value = LinearParams> {
    (dev(), any::<u64>()).prop_map(|(device, offset)| LinearParams { device, offset })
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        linear().prop_map(Target::Linear),
        (
            any::<u64>(),
            any::<bool>(),
            prop::collection::vec(linear(), 1..5),
            any::<bool>()
        )
            .prop_map(|(region_size, nosync, legs, handle_errors)| {
                Target::Mirror(MirrorParams {
                    region_size,
                    nosync,
                    legs,
                    handle_errors,
                })
            }),
        (
            prop::option::of(any::<u64>()),
            any::<bool>(),
            prop::collection::vec(0usize..8, 0..3),
            prop::collection::vec(0usize..8, 0..3),
            prop::option::of(any::<u32>()),
            prop::option::of(any::<u64>()),
            prop::collection::vec(
                (
                    prop::option::of(dev()),
                    prop_oneof![dev(), Just("-".to_string())]
                )
                    .prop_map(|(meta, data)| RaidDevice { meta, data }),
                1..5,
            ),
        )
            .prop_map(
                |(
                    region_size,
                    nosync,
                    rebuild,
                    write_mostly,
                    max_write_behind,
                    max_recovery_rate,
                    devices,
                )| {
                    Target::Raid(RaidParams {
                        region_size,
                        nosync,
                        rebuild,
                        write_mostly,
                        max_write_behind,
                        max_recovery_rate,
                        devices,
                    })
                }
            ),
        dev().prop_map(|device| Target::SnapshotOrigin(SnapshotOriginParams { device })),
        (dev(), dev(), any::<bool>(), any::<u64>()).prop_map(
            |(origin, cow, persistent, chunk_size)| {
                Target::Snapshot(SnapshotParams {
                    origin,
                    cow,
                    persistent,
                    chunk_size,
                })
            }
        ),
        Just(Target::Zero),
        Just(Target::Error),
        (
            "[a-z][a-z0-9_-]{0,10}".prop_filter("not a typed target", |t| {
                !matches!(
                    t.as_str(),
                    "linear"
                        | "mirror"
                        | "raid"
                        | "snapshot"
                        | "snapshot-origin"
                        | "zero"
                        | "error"
                )
            }),
            prop::collection::vec(word(), 0..6),
        )
            .prop_map(|(target_type, params)| Target::Other {
                target_type,
                params: params.join(" "),
            }),
    ]
}

fn table_line() -> impl Strategy<Value = TableLine> {
    (any::<u64>(), any::<u64>(), target())
        .prop_map(|(s, l, t)| TableLine::new(Sectors(s), Sectors(l), t))
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn mirror_status_round_trips(m in mirror_status()) {
        let text = m.to_string();
        prop_assert_eq!(MirrorStatus::parse(&text).ok(), Some(m), "{}", text);
    }

    #[test]
    fn raid_status_round_trips(r in raid_status()) {
        let text = r.to_string();
        prop_assert_eq!(RaidStatus::parse(&text).ok(), Some(r), "{}", text);
    }

    #[test]
    fn snapshot_status_round_trips(s in snapshot_status()) {
        let text = s.to_string();
        prop_assert_eq!(SnapshotStatus::parse(&text).ok(), Some(s), "{}", text);
    }

    #[test]
    fn table_lines_round_trip(l in table_line()) {
        let text = l.to_string();
        let back = TableLine::parse(&text);
        prop_assert!(back.is_ok(), "{:?}: {:?}", text, back);
        prop_assert_eq!(back.unwrap(), l.clone(), "{}", text);
        // the parameters alone, as the ioctl interface hands them over
        prop_assert_eq!(Target::parse(l.target_type(), &l.params()).ok(), Some(l.target.clone()));
    }

    #[test]
    fn tables_round_trip(t in prop::collection::vec(table_line(), 0..5)) {
        let text = format_table(&t);
        prop_assert_eq!(parse_table(&text).ok(), Some(t), "{}", text);
    }
}

/// Counts read from a line used to size allocations up front: a huge count aborted the whole
/// process (allocation failure is not a panic) before the parser could notice the line was
/// short.
#[test]
fn huge_counts_are_parse_errors() {
    for n in [
        "18446744073709551615",
        "9223372036854775807",
        "1000000000000",
    ] {
        assert!(MirrorStatus::parse(&format!("{n} 8:16 8:32 1/2 1 AA 1 core")).is_err());
        assert!(MirrorStatus::parse(&format!("2 8:16 8:32 1/2 1 AA {n} core")).is_err());
        assert!(TableLine::parse(&format!("0 10 mirror core 1 1024 {n} 8:1 0 8:2 0")).is_err());
        assert!(TableLine::parse(&format!("0 10 raid raid1 1 0 {n} - 8:1 - 8:2")).is_err());
        assert!(TableLine::parse(&format!("0 10 snapshot 8:1 8:2 P 8 {n} x")).is_err());
        assert!(RaidStatus::parse(&format!("raid1 {n} AA 1/2 idle 0")).is_err());
    }
}
