//! The engine as the API sees it: one trait, plain serialisable views. The JSON-RPC layer
//! maps each method to one call here and nothing else.

use crate::error::ReturnCode;
use serde::{Deserialize, Serialize};

pub use crate::cim::{CopyType, JobState, Operation, RequestedState, SyncState};

/// ModifySynchronization operations as plain numbers (see [`Operation`]).
pub mod operation {
    use super::Operation;
    pub const DETACH: u16 = Operation::Detach as u16;
    pub const FRACTURE: u16 = Operation::Fracture as u16;
    pub const RESYNC: u16 = Operation::Resync as u16;
    pub const RESTORE: u16 = Operation::Restore as u16;
    pub const RESET_TO_SYNC: u16 = Operation::ResetToSync as u16;
    pub const RESET_TO_ASYNC: u16 = Operation::ResetToAsync as u16;
}

/// RequestStateChange values for jobs as plain numbers (see [`RequestedState`]).
pub mod requested_state {
    use super::RequestedState;
    pub const TERMINATE: u16 = RequestedState::Terminate as u16;
    pub const KILL: u16 = RequestedState::Kill as u16;
}

/// Answer of AttachReplica and ModifySynchronization: a CIM return value, with a reason
/// whenever it is not 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MethodResult {
    pub return_value: u32,
    /// InstanceID of the ConcreteJob, when 4096.
    pub job: Option<String>,
    /// InstanceID of the StorageSynchronized relationship created or changed, if any.
    pub relationship: Option<String>,
    /// Human-readable reason; always set when return_value != 0 and != 4096.
    pub description: Option<String>,
}

impl MethodResult {
    pub fn ok(code: ReturnCode, job: Option<String>, relationship: Option<String>) -> Self {
        MethodResult {
            return_value: code.value(),
            job,
            relationship,
            description: None,
        }
    }
    pub fn error(err: &crate::error::Error) -> Self {
        MethodResult {
            return_value: err.return_code().value(),
            job: None,
            relationship: None,
            description: Some(err.to_string()),
        }
    }
}

/// CIM_ConcreteJob.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct JobView {
    #[serde(rename = "InstanceID")]
    pub instance_id: String,
    pub name: String,
    pub job_state: u16,
    pub job_state_name: String,
    pub percent_complete: u16,
    /// Seconds since the Unix epoch.
    pub time_submitted: u64,
    pub start_time: Option<u64>,
    /// Seconds (with fraction) since start, or until the end.
    pub elapsed_time: f64,
    pub error_code: u32,
    pub error_description: Option<String>,
    pub delete_on_completion: bool,
    /// Seconds.
    pub time_before_removal: u64,
    pub source: String,
    pub target: String,
    pub copy_type: u16,
    pub relationship: Option<String>,
}

/// CIM_StorageSynchronized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RelationshipView {
    #[serde(rename = "InstanceID")]
    pub instance_id: String,
    pub system_element: String,
    pub synced_element: String,
    pub copy_type: u16,
    pub sync_state: u16,
    pub sync_state_name: String,
    pub sync_maintained: bool,
    pub percent_synced: u16,
    /// Seconds since the Unix epoch, when known (not kept across daemon restarts).
    pub when_synced: Option<u64>,
    /// Free text: lag bound (Async), COW usage (UnSyncAssoc), failure reason (Broken).
    pub progress_status: Option<String>,
    /// COW sectors used / total (UnSyncAssoc only).
    pub cow_used_sectors: Option<u64>,
    pub cow_total_sectors: Option<u64>,
    /// Async only: the most writes the replica may be behind (dm-raid max_write_behind).
    pub max_lag_writes: Option<u32>,
    /// Whether changes made while fractured are tracked, so that Resync copies only them
    /// (a raid1's write-intent bitmap: Async, or Sync whose target has the room); false: Resync
    /// copies everything.
    pub change_tracking: bool,
}

/// A storage object (backstore) with what the daemon knows of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StorageObjectView {
    /// `/backstores/PLUGIN/NAME`
    pub element: String,
    pub plugin: String,
    pub name: String,
    pub hba: String,
    pub device: Option<String>,
    pub size_bytes: Option<u64>,
    /// The logical block size initiators see.
    pub block_size: Option<u32>,
    pub wwn: Option<String>,
    pub enabled: bool,
    pub readonly: bool,
    /// `fabric/wwn/tpgt_N/lun_M` of every LUN that exports it.
    pub exported_by: Vec<String>,
    /// True when served through a device-mapper device this daemon owns.
    pub adopted: bool,
    /// The relationship it is part of, if any.
    pub relationship: Option<String>,
}

/// Everything the API can ask of the engine.
pub trait Service: Send + Sync {
    fn attach_replica(&self, source: &str, target: &str, copy_type: u16) -> MethodResult;
    /// `force`: go ahead even where the operation would otherwise be refused because the
    /// source is in use (a Restore while initiators are logged in to the source's LUNs).
    fn modify_synchronization(
        &self,
        relationship: &str,
        operation: u16,
        force: bool,
    ) -> MethodResult;
    fn jobs(&self) -> Vec<JobView>;
    fn job(&self, id: &str) -> Option<JobView>;
    /// Returns a CIM return value (0 ok, 5 unknown job or state, 4 job already finished...).
    fn request_state_change(&self, id: &str, requested_state: u16) -> MethodResult;
    /// `None` if there is no such job; `Some(None)` if it has no error.
    fn get_error(&self, id: &str) -> Option<Option<String>>;
    fn relationships(&self) -> Result<Vec<RelationshipView>, crate::error::Error>;
    fn storage_objects(&self) -> Result<Vec<StorageObjectView>, crate::error::Error>;
    fn adopt(&self, element: &str) -> MethodResult;
}
