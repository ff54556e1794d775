//! JSON-RPC 2.0 framing and the method table. One request per line, one response per line.
//!
//! | method | params | result |
//! |---|---|---|
//! | `AttachReplica` | `{SourceElement: string, TargetElement: string, CopyType: u16}` | `MethodResult` |
//! | `ModifySynchronization` | `{Relationship: string, Operation: u16, Force?: bool}` | `MethodResult` |
//! | `EnumerateJobs` | none | `[JobView]` |
//! | `GetJob` | `{Job: string}` | `JobView` (error [`code::NO_SUCH_JOB`] if unknown) |
//! | `RequestStateChange` | `{Job: string, RequestedState: u16}` | `MethodResult` |
//! | `GetError` | `{Job: string}` | `{Error: string or null}` (error [`code::NO_SUCH_JOB`] if unknown) |
//! | `EnumerateRelationships` | none | `[RelationshipView]` |
//! | `EnumerateStorageObjects` | none | `[StorageObjectView]` |
//! | `AdoptStorageObject` | `{Element: string}` | `MethodResult` |
//!
//! `Operation` is a [`crate::cim::Operation`] value (2 Detach, 3 Fracture, 4 Resync,
//! 5 Restore, 10 ResetToSync, 11 ResetToAsync). `Force` (default false) asks for the operation
//! even though initiators are logged in to the source's LUNs (a Restore changes the data
//! under them).
//!
//! Params are an object with the named members (by-name only); unknown members are refused
//! so that a misspelt name is not silently ignored. Methods without params accept a missing
//! `params`, `null` or `{}`.

use crate::error::ReturnCode;
use crate::service::{MethodResult, Service};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// JSON-RPC error codes used by this API.
pub mod code {
    /// The line is not valid JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// Valid JSON but not a request object (also: batches, oversize lines).
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// A parameter is missing, of the wrong type, or unknown.
    pub const INVALID_PARAMS: i64 = -32602;
    /// The engine failed in a way that is not a CIM outcome (e.g. it panicked, or an
    /// enumeration failed); `data` carries `ReturnValue` when there is one.
    pub const INTERNAL_ERROR: i64 = -32603;
    /// The daemon is serving its maximum number of connections; retry later.
    pub const SERVER_BUSY: i64 = -32000;
    /// `GetJob` / `GetError` named a job that does not exist (any more).
    pub const NO_SUCH_JOB: i64 = -32001;
    /// The peer's uid is neither 0 nor the daemon's own uid.
    pub const PERMISSION_DENIED: i64 = -32002;
}

/// Method names, after the CIM ones.
pub mod method {
    pub const ATTACH_REPLICA: &str = "AttachReplica";
    pub const MODIFY_SYNCHRONIZATION: &str = "ModifySynchronization";
    pub const ENUMERATE_JOBS: &str = "EnumerateJobs";
    pub const GET_JOB: &str = "GetJob";
    pub const REQUEST_STATE_CHANGE: &str = "RequestStateChange";
    pub const GET_ERROR: &str = "GetError";
    pub const ENUMERATE_RELATIONSHIPS: &str = "EnumerateRelationships";
    pub const ENUMERATE_STORAGE_OBJECTS: &str = "EnumerateStorageObjects";
    pub const ADOPT_STORAGE_OBJECT: &str = "AdoptStorageObject";

    pub const ALL: &[&str] = &[
        ATTACH_REPLICA,
        MODIFY_SYNCHRONIZATION,
        ENUMERATE_JOBS,
        GET_JOB,
        REQUEST_STATE_CHANGE,
        GET_ERROR,
        ENUMERATE_RELATIONSHIPS,
        ENUMERATE_STORAGE_OBJECTS,
        ADOPT_STORAGE_OBJECT,
    ];
}

/// The `error` member of a JSON-RPC response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorObject {
    pub code: i64,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl ErrorObject {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        ErrorObject {
            code,
            message: message.into(),
            data: None,
        }
    }
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }
    fn invalid_params(message: impl Into<String>) -> Self {
        ErrorObject::new(code::INVALID_PARAMS, message)
    }
}

/// A request as the client builds it.
pub fn request(id: u64, method: &str, params: Option<Value>) -> Value {
    let mut obj = Map::new();
    obj.insert("jsonrpc".into(), json!("2.0"));
    obj.insert("id".into(), json!(id));
    obj.insert("method".into(), json!(method));
    if let Some(p) = params {
        obj.insert("params".into(), p);
    }
    Value::Object(obj)
}

pub fn success_response(id: Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

pub fn error_response(id: Value, error: ErrorObject) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": error})
}

/// Handles one line (without its newline). Returns the response to send, or `None` for a
/// notification or a blank line.
pub fn handle_line(service: &dyn Service, line: &[u8]) -> Option<Value> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    match serde_json::from_slice::<Value>(line) {
        Ok(v) => handle_request(service, v),
        Err(e) => Some(error_response(
            Value::Null,
            ErrorObject::new(code::PARSE_ERROR, format!("parse error: {e}")),
        )),
    }
}

/// Handles one parsed JSON value. Returns `None` for a notification (a request without an
/// `id` member): it is executed but not answered.
pub fn handle_request(service: &dyn Service, req: Value) -> Option<Value> {
    let obj = match req {
        Value::Object(o) => o,
        Value::Array(_) => {
            return Some(error_response(
                Value::Null,
                ErrorObject::new(
                    code::INVALID_REQUEST,
                    "batch requests are not supported: send one request object per line",
                ),
            ))
        }
        _ => {
            return Some(error_response(
                Value::Null,
                ErrorObject::new(code::INVALID_REQUEST, "a request must be a JSON object"),
            ))
        }
    };
    // The id, when it is usable; an id of the wrong type makes the request invalid.
    let id = match obj.get("id") {
        None => None,
        Some(v @ (Value::Null | Value::String(_) | Value::Number(_))) => Some(v.clone()),
        Some(_) => {
            return Some(error_response(
                Value::Null,
                ErrorObject::new(
                    code::INVALID_REQUEST,
                    "\"id\" must be a string, a number or null",
                ),
            ))
        }
    };
    let invalid = |msg: &str| {
        Some(error_response(
            id.clone().unwrap_or(Value::Null),
            ErrorObject::new(code::INVALID_REQUEST, msg),
        ))
    };
    if obj.get("jsonrpc") != Some(&json!("2.0")) {
        return invalid("\"jsonrpc\" must be \"2.0\"");
    }
    let method = match obj.get("method") {
        Some(Value::String(m)) => m.as_str(),
        _ => return invalid("\"method\" must be a string"),
    };
    let params = match obj.get("params") {
        None | Some(Value::Null) => None,
        Some(p @ (Value::Object(_) | Value::Array(_))) => Some(p),
        Some(_) => return invalid("\"params\" must be an object"),
    };
    if let Some(extra) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "jsonrpc" | "id" | "method" | "params"))
    {
        return invalid(&format!("unknown request member {extra:?}"));
    }

    let id_text = id.as_ref().map(|v| v.to_string()).unwrap_or_default();
    let span = tracing::debug_span!("rpc", method, id = %id_text);
    let _guard = span.enter();
    let outcome = match catch_unwind(AssertUnwindSafe(|| dispatch(service, method, params))) {
        Ok(r) => r,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            tracing::error!(method, panic = %what, "engine panicked");
            Err(ErrorObject::new(
                code::INTERNAL_ERROR,
                format!("internal error handling {method}: {what}"),
            ))
        }
    };
    match &outcome {
        Ok(_) => tracing::debug!("answered"),
        Err(e) => tracing::debug!(code = e.code, message = %e.message, "refused"),
    }
    let id = id?;
    Some(match outcome {
        Ok(result) => success_response(id, result),
        Err(e) => error_response(id, e),
    })
}

/// Maps one method to one call on the service.
pub fn dispatch(
    service: &dyn Service,
    method_name: &str,
    params: Option<&Value>,
) -> Result<Value, ErrorObject> {
    use method::*;
    match method_name {
        ATTACH_REPLICA => {
            let p = Params::new(
                method_name,
                params,
                &["SourceElement", "TargetElement", "CopyType"],
            )?;
            let source = p.string("SourceElement")?;
            let target = p.opt_string("TargetElement")?;
            let copy_type = p.u16("CopyType")?;
            let result = match target {
                // The CIM method makes TargetElement optional; this implementation needs one,
                // and says so with return value 5 rather than a protocol error.
                None => MethodResult {
                    return_value: ReturnCode::InvalidParameter.value(),
                    job: None,
                    relationship: None,
                    description: Some(
                        "invalid parameter: TargetElement is missing; name an existing storage \
                         object to copy into"
                            .into(),
                    ),
                },
                Some(target) => service.attach_replica(&source, &target, copy_type),
            };
            log_outcome(method_name, &result);
            method_result(result)
        }
        MODIFY_SYNCHRONIZATION => {
            let p = Params::new(method_name, params, &["Relationship", "Operation", "Force"])?;
            let rel = p.string("Relationship")?;
            let op = p.u16("Operation")?;
            let force = p.opt_bool("Force")?.unwrap_or(false);
            let result = service.modify_synchronization(&rel, op, force);
            log_outcome(method_name, &result);
            method_result(result)
        }
        ENUMERATE_JOBS => {
            Params::new(method_name, params, &[])?;
            to_value(service.jobs())
        }
        GET_JOB => {
            let p = Params::new(method_name, params, &["Job"])?;
            let id = p.string("Job")?;
            match service.job(&id) {
                Some(job) => to_value(job),
                None => Err(no_such_job(&id)),
            }
        }
        REQUEST_STATE_CHANGE => {
            let p = Params::new(method_name, params, &["Job", "RequestedState"])?;
            let id = p.string("Job")?;
            let state = p.u16("RequestedState")?;
            let result = service.request_state_change(&id, state);
            log_outcome(method_name, &result);
            method_result(result)
        }
        GET_ERROR => {
            let p = Params::new(method_name, params, &["Job"])?;
            let id = p.string("Job")?;
            match service.get_error(&id) {
                Some(err) => Ok(json!({ "Error": err })),
                None => Err(no_such_job(&id)),
            }
        }
        ENUMERATE_RELATIONSHIPS => {
            Params::new(method_name, params, &[])?;
            service
                .relationships()
                .map_err(engine_error)
                .and_then(to_value)
        }
        ENUMERATE_STORAGE_OBJECTS => {
            Params::new(method_name, params, &[])?;
            service
                .storage_objects()
                .map_err(engine_error)
                .and_then(to_value)
        }
        ADOPT_STORAGE_OBJECT => {
            let p = Params::new(method_name, params, &["Element"])?;
            let element = p.string("Element")?;
            let result = service.adopt(&element);
            log_outcome(method_name, &result);
            method_result(result)
        }
        other => Err(ErrorObject::new(
            code::METHOD_NOT_FOUND,
            format!(
                "method not found: {other:?} (known methods: {})",
                method::ALL.join(", ")
            ),
        )),
    }
}

fn no_such_job(id: &str) -> ErrorObject {
    ErrorObject::new(code::NO_SUCH_JOB, format!("no such job: {id:?}"))
        .with_data(json!({ "Job": id }))
}

fn engine_error(e: crate::error::Error) -> ErrorObject {
    let rc = e.return_code();
    ErrorObject::new(code::INTERNAL_ERROR, e.to_string()).with_data(json!({
        "ReturnValue": rc.value(),
        "Description": e.to_string(),
    }))
}

fn to_value<T: Serialize>(v: T) -> Result<Value, ErrorObject> {
    serde_json::to_value(v).map_err(|e| {
        ErrorObject::new(
            code::INTERNAL_ERROR,
            format!("cannot serialise result: {e}"),
        )
    })
}

/// Serialises a CIM outcome, making sure a failure always carries a reason.
fn method_result(mut r: MethodResult) -> Result<Value, ErrorObject> {
    let rv = r.return_value;
    if rv != ReturnCode::Completed.value()
        && rv != ReturnCode::JobStarted.value()
        && r.description.as_deref().is_none_or(str::is_empty)
    {
        r.description = Some(
            ReturnCode::from_value(rv)
                .map(|c| c.describe().to_string())
                .unwrap_or_else(|| format!("return value {rv}")),
        );
    }
    to_value(r)
}

fn log_outcome(method: &str, r: &MethodResult) {
    tracing::info!(
        method,
        return_value = r.return_value,
        job = r.job.as_deref().unwrap_or(""),
        relationship = r.relationship.as_deref().unwrap_or(""),
        description = r.description.as_deref().unwrap_or(""),
        "method answered"
    );
}

/// Named parameters of one call.
struct Params<'a> {
    method: &'a str,
    map: Option<&'a Map<String, Value>>,
}

impl<'a> Params<'a> {
    fn new(
        method: &'a str,
        params: Option<&'a Value>,
        allowed: &[&str],
    ) -> Result<Params<'a>, ErrorObject> {
        let map = match params {
            None => None,
            Some(Value::Object(m)) => Some(m),
            Some(_) => {
                return Err(ErrorObject::invalid_params(format!(
                    "{method}: params must be an object with named members ({})",
                    if allowed.is_empty() {
                        "none expected".to_string()
                    } else {
                        allowed.join(", ")
                    }
                )))
            }
        };
        if let Some(m) = map {
            if let Some(k) = m.keys().find(|k| !allowed.contains(&k.as_str())) {
                return Err(ErrorObject::invalid_params(if allowed.is_empty() {
                    format!("{method} takes no parameters, got {k:?}")
                } else {
                    format!(
                        "{method}: unknown parameter {k:?} (expected: {})",
                        allowed.join(", ")
                    )
                }));
            }
        }
        Ok(Params { method, map })
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        self.map.and_then(|m| m.get(name)).filter(|v| !v.is_null())
    }

    fn string(&self, name: &str) -> Result<String, ErrorObject> {
        self.opt_string(name)?.ok_or_else(|| {
            ErrorObject::invalid_params(format!(
                "{}: missing parameter {name} (a string)",
                self.method
            ))
        })
    }

    fn opt_string(&self, name: &str) -> Result<Option<String>, ErrorObject> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(ErrorObject::invalid_params(format!(
                "{}: parameter {name} must be a string, got {other}",
                self.method
            ))),
        }
    }

    fn opt_bool(&self, name: &str) -> Result<Option<bool>, ErrorObject> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(ErrorObject::invalid_params(format!(
                "{}: parameter {name} must be true or false, got {other}",
                self.method
            ))),
        }
    }

    fn u16(&self, name: &str) -> Result<u16, ErrorObject> {
        match self.get(name) {
            None => Err(ErrorObject::invalid_params(format!(
                "{}: missing parameter {name} (an integer 0-65535)",
                self.method
            ))),
            Some(v) => v
                .as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .ok_or_else(|| {
                    ErrorObject::invalid_params(format!(
                        "{}: parameter {name} must be an integer 0-65535 (uint16), got {v}",
                        self.method
                    ))
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::{JobView, RelationshipView, StorageObjectView};

    struct Nothing;
    impl Service for Nothing {
        fn attach_replica(&self, s: &str, t: &str, c: u16) -> MethodResult {
            MethodResult {
                return_value: 6,
                job: None,
                relationship: Some(format!("{s}|{t}|{c}")),
                description: None,
            }
        }
        fn modify_synchronization(&self, _: &str, _: u16, _: bool) -> MethodResult {
            MethodResult::ok(ReturnCode::Completed, None, None)
        }
        fn jobs(&self) -> Vec<JobView> {
            vec![]
        }
        fn job(&self, _: &str) -> Option<JobView> {
            None
        }
        fn request_state_change(&self, _: &str, _: u16) -> MethodResult {
            MethodResult::ok(ReturnCode::Completed, None, None)
        }
        fn get_error(&self, _: &str) -> Option<Option<String>> {
            None
        }
        fn relationships(&self) -> crate::Result<Vec<RelationshipView>> {
            Err(crate::Error::Other("boom".into()))
        }
        fn storage_objects(&self) -> crate::Result<Vec<StorageObjectView>> {
            Ok(vec![])
        }
        fn adopt(&self, _: &str) -> MethodResult {
            panic!("adopt exploded")
        }
    }

    fn call(line: &str) -> Option<Value> {
        handle_line(&Nothing, line.as_bytes())
    }

    fn err_code(v: &Value) -> i64 {
        v["error"]["code"].as_i64().unwrap_or_else(|| panic!("{v}"))
    }

    #[test]
    fn framing_errors() {
        assert_eq!(err_code(&call("{").unwrap()), code::PARSE_ERROR);
        assert_eq!(err_code(&call("[]").unwrap()), code::INVALID_REQUEST);
        assert_eq!(err_code(&call("3").unwrap()), code::INVALID_REQUEST);
        let v = call(r#"{"id":7,"method":"EnumerateJobs"}"#).unwrap();
        assert_eq!(err_code(&v), code::INVALID_REQUEST);
        assert_eq!(v["id"], 7);
        let v = call(r#"{"jsonrpc":"2.0","id":{},"method":"EnumerateJobs"}"#).unwrap();
        assert_eq!(err_code(&v), code::INVALID_REQUEST);
        assert!(call("   ").is_none());
        assert!(call(r#"{"jsonrpc":"2.0","method":"Nope"}"#).is_none());
    }

    #[test]
    fn params_are_checked() {
        let v = call(r#"{"jsonrpc":"2.0","id":1,"method":"AttachReplica","params":{"SourceElement":"block/a","TargetElement":"block/b","CopyType":70000}}"#).unwrap();
        assert_eq!(err_code(&v), code::INVALID_PARAMS);
        let v = call(r#"{"jsonrpc":"2.0","id":1,"method":"AttachReplica","params":{"SourceElement":"block/a","TargetElement":"block/b","CopyType":3,"Extra":1}}"#).unwrap();
        assert_eq!(err_code(&v), code::INVALID_PARAMS);
        let v = call(r#"{"jsonrpc":"2.0","id":1,"method":"EnumerateJobs","params":[1]}"#).unwrap();
        assert_eq!(err_code(&v), code::INVALID_PARAMS);
        let v = call(r#"{"jsonrpc":"2.0","id":1,"method":"EnumerateJobs","params":{}}"#).unwrap();
        assert_eq!(v["result"], json!([]));
    }

    #[test]
    fn missing_target_is_return_value_5() {
        let v = call(r#"{"jsonrpc":"2.0","id":"a","method":"AttachReplica","params":{"SourceElement":"block/a","CopyType":3}}"#).unwrap();
        assert_eq!(v["result"]["ReturnValue"], 5);
        assert!(v["result"]["Description"]
            .as_str()
            .unwrap()
            .contains("TargetElement"));
    }

    #[test]
    fn failures_always_carry_a_description() {
        let v = call(r#"{"jsonrpc":"2.0","id":1,"method":"AttachReplica","params":{"SourceElement":"block/a","TargetElement":"block/b","CopyType":3}}"#).unwrap();
        assert_eq!(v["result"]["ReturnValue"], 6);
        assert_eq!(v["result"]["Description"], "In Use");
        assert_eq!(v["result"]["Relationship"], "block/a|block/b|3");
    }

    #[test]
    fn engine_errors_and_panics_are_internal_errors() {
        let v = call(r#"{"jsonrpc":"2.0","id":1,"method":"EnumerateRelationships"}"#).unwrap();
        assert_eq!(err_code(&v), code::INTERNAL_ERROR);
        assert_eq!(v["error"]["data"]["ReturnValue"], 2);
        let v = call(r#"{"jsonrpc":"2.0","id":1,"method":"AdoptStorageObject","params":{"Element":"block/x"}}"#).unwrap();
        assert_eq!(err_code(&v), code::INTERNAL_ERROR);
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("adopt exploded"));
    }

    #[test]
    fn unknown_job_has_its_own_code() {
        let v =
            call(r#"{"jsonrpc":"2.0","id":1,"method":"GetJob","params":{"Job":"j9"}}"#).unwrap();
        assert_eq!(err_code(&v), code::NO_SUCH_JOB);
        let v =
            call(r#"{"jsonrpc":"2.0","id":1,"method":"GetError","params":{"Job":"j9"}}"#).unwrap();
        assert_eq!(err_code(&v), code::NO_SUCH_JOB);
    }
}
