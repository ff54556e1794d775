//! The caller side: one connection, requests sent and answered one at a time.

use super::protocol::{self, code, method, ErrorObject};
use crate::service::{JobView, MethodResult, RelationshipView, StorageObjectView};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// The daemon is not there (or not reachable by this user).
    #[error("cannot connect to {}: {}", path.display(), connect_hint(source))]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("talking to the daemon: {0}")]
    Io(#[from] io::Error),
    #[error("the daemon closed the connection without answering")]
    Closed,
    #[error("unexpected answer from the daemon: {0}")]
    Protocol(String),
    /// A JSON-RPC error response.
    #[error("{message} (JSON-RPC error {code})")]
    Server {
        code: i64,
        message: String,
        data: Option<Value>,
    },
}

fn connect_hint(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::PermissionDenied => {
            format!("{e}; the API is for root only (try sudo)")
        }
        _ => format!("is `lio-replica serve` running? ({e})"),
    }
}

impl RpcError {
    /// The JSON-RPC error code, for a server-side error.
    pub fn code(&self) -> Option<i64> {
        match self {
            RpcError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
    /// True for errors about the request's content (bad params, unknown job) rather than
    /// about reaching the daemon.
    pub fn is_invalid_parameter(&self) -> bool {
        matches!(
            self.code(),
            Some(code::INVALID_PARAMS) | Some(code::NO_SUCH_JOB)
        )
    }
}

/// `Err` for a JSON-RPC error response.
fn server_error(v: &Value) -> Result<(), RpcError> {
    let Some(err) = v.get("error") else {
        return Ok(());
    };
    let err: ErrorObject = serde_json::from_value(err.clone())
        .map_err(|e| RpcError::Protocol(format!("malformed error ({e}): {v}")))?;
    Err(RpcError::Server {
        code: err.code,
        message: err.message,
        data: err.data,
    })
}

/// The params of ModifySynchronization; `Force` only when set.
pub fn modify_params(relationship: &str, operation: u16, force: bool) -> Value {
    let mut p = json!({"Relationship": relationship, "Operation": operation});
    if force {
        p["Force"] = json!(true);
    }
    p
}

pub struct Client {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
}

impl Client {
    pub fn connect(path: impl AsRef<Path>) -> Result<Client, RpcError> {
        let path = path.as_ref().to_path_buf();
        let stream = UnixStream::connect(&path).map_err(|source| RpcError::Connect {
            path: path.clone(),
            source,
        })?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(Client {
            path,
            reader,
            writer: stream,
            next_id: 1,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends one request and waits for its answer. `params` of `Value::Null` sends none.
    pub fn call(&mut self, method_name: &str, params: Value) -> Result<Value, RpcError> {
        let id = self.next_id;
        self.next_id += 1;
        let params = (!params.is_null()).then_some(params);
        let mut line = protocol::request(id, method_name, params).to_string();
        line.push('\n');
        if let Err(e) = self.writer.write_all(line.as_bytes()) {
            // A daemon that refuses the connection (busy, permission) answers and closes at
            // once, possibly before our request is written: its answer is still readable.
            if matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ) {
                if let Ok(v) = self.read_answer() {
                    server_error(&v)?;
                }
            }
            return Err(e.into());
        }
        let v = self.read_answer()?;
        server_error(&v)?;
        if v.get("id") != Some(&json!(id)) {
            return Err(RpcError::Protocol(format!(
                "answer to request {id} has id {}",
                v.get("id").unwrap_or(&Value::Null)
            )));
        }
        // taken out, not cloned: a listing of 10,000 objects is megabytes
        match v {
            Value::Object(mut m) => m.remove("result").ok_or_else(|| {
                RpcError::Protocol(format!("answer without result: {}", Value::Object(m)))
            }),
            other => Err(RpcError::Protocol(format!(
                "answer without result: {other}"
            ))),
        }
    }

    fn read_answer(&mut self) -> Result<Value, RpcError> {
        let mut answer = String::new();
        if self.reader.read_line(&mut answer)? == 0 {
            return Err(RpcError::Closed);
        }
        serde_json::from_str(answer.trim_end())
            .map_err(|e| RpcError::Protocol(format!("not JSON ({e}): {answer:?}")))
    }

    fn typed<T: DeserializeOwned>(
        &mut self,
        method_name: &str,
        params: Value,
    ) -> Result<T, RpcError> {
        let v = self.call(method_name, params)?;
        T::deserialize(&v)
            .map_err(|e| RpcError::Protocol(format!("{method_name} result ({e}): {v}")))
    }

    pub fn attach_replica(
        &mut self,
        source: &str,
        target: &str,
        copy_type: u16,
    ) -> Result<MethodResult, RpcError> {
        self.typed(
            method::ATTACH_REPLICA,
            json!({"SourceElement": source, "TargetElement": target, "CopyType": copy_type}),
        )
    }

    /// `force` is sent as `Force: true` when set and left out otherwise (the daemon's
    /// default is false).
    pub fn modify_synchronization(
        &mut self,
        relationship: &str,
        operation: u16,
        force: bool,
    ) -> Result<MethodResult, RpcError> {
        self.typed(
            method::MODIFY_SYNCHRONIZATION,
            modify_params(relationship, operation, force),
        )
    }

    pub fn enumerate_jobs(&mut self) -> Result<Vec<JobView>, RpcError> {
        self.typed(method::ENUMERATE_JOBS, Value::Null)
    }

    pub fn get_job(&mut self, job: &str) -> Result<JobView, RpcError> {
        self.typed(method::GET_JOB, json!({ "Job": job }))
    }

    pub fn request_state_change(
        &mut self,
        job: &str,
        requested_state: u16,
    ) -> Result<MethodResult, RpcError> {
        self.typed(
            method::REQUEST_STATE_CHANGE,
            json!({"Job": job, "RequestedState": requested_state}),
        )
    }

    /// The job's error text, `None` if it has none.
    pub fn get_error(&mut self, job: &str) -> Result<Option<String>, RpcError> {
        #[derive(serde::Deserialize)]
        struct Answer {
            #[serde(rename = "Error")]
            error: Option<String>,
        }
        let a: Answer = self.typed(method::GET_ERROR, json!({ "Job": job }))?;
        Ok(a.error)
    }

    pub fn enumerate_relationships(&mut self) -> Result<Vec<RelationshipView>, RpcError> {
        self.typed(method::ENUMERATE_RELATIONSHIPS, Value::Null)
    }

    pub fn enumerate_storage_objects(&mut self) -> Result<Vec<StorageObjectView>, RpcError> {
        self.typed(method::ENUMERATE_STORAGE_OBJECTS, Value::Null)
    }

    pub fn adopt_storage_object(&mut self, element: &str) -> Result<MethodResult, RpcError> {
        self.typed(method::ADOPT_STORAGE_OBJECT, json!({ "Element": element }))
    }
}
