//! The CIM enumerations the API speaks in: CopyType, SyncState, JobState, the
//! ModifySynchronization operations and the RequestStateChange values. On the wire each is
//! its CIM number (u16); these types name the numbers and convert both ways.

use serde::{Deserialize, Serialize};

/// CIM_ConcreteJob.JobState values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    New = 2,
    Starting = 3,
    Running = 4,
    Suspended = 5,
    Completed = 7,
    Terminated = 8,
    Killed = 9,
    Exception = 10,
}

impl JobState {
    pub fn value(self) -> u16 {
        self as u16
    }
    pub fn from_value(v: u16) -> Option<JobState> {
        Some(match v {
            2 => JobState::New,
            3 => JobState::Starting,
            4 => JobState::Running,
            5 => JobState::Suspended,
            7 => JobState::Completed,
            8 => JobState::Terminated,
            9 => JobState::Killed,
            10 => JobState::Exception,
            _ => return None,
        })
    }
    /// Completed, Terminated, Killed or Exception: the job will not change any more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Terminated | JobState::Killed | JobState::Exception
        )
    }
}

/// CIM_StorageSynchronized.SyncState values used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncState {
    ResyncInProgress = 5,
    Synchronized = 6,
    /// The target is being copied back onto the source (ModifySynchronization Restore).
    RestoreInProgress = 10,
    Idle = 11,
    Broken = 12,
    Fractured = 13,
    CopyInProgress = 15,
}

impl SyncState {
    pub fn value(self) -> u16 {
        self as u16
    }
    pub fn from_value(v: u16) -> Option<SyncState> {
        Some(match v {
            5 => SyncState::ResyncInProgress,
            6 => SyncState::Synchronized,
            10 => SyncState::RestoreInProgress,
            11 => SyncState::Idle,
            12 => SyncState::Broken,
            13 => SyncState::Fractured,
            15 => SyncState::CopyInProgress,
            _ => return None,
        })
    }
}

/// CopyType values of AttachReplica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CopyType {
    Async = 2,
    Sync = 3,
    UnSyncAssoc = 4,
    UnSyncUnAssoc = 5,
}

impl CopyType {
    pub fn value(self) -> u16 {
        self as u16
    }
    pub fn from_value(v: u16) -> Option<CopyType> {
        Some(match v {
            2 => CopyType::Async,
            3 => CopyType::Sync,
            4 => CopyType::UnSyncAssoc,
            5 => CopyType::UnSyncUnAssoc,
            _ => return None,
        })
    }
    /// The CIM name: `Async`, `Sync`, `UnSyncAssoc`, `UnSyncUnAssoc`.
    pub fn name(self) -> &'static str {
        match self {
            CopyType::Async => "Async",
            CopyType::Sync => "Sync",
            CopyType::UnSyncAssoc => "UnSyncAssoc",
            CopyType::UnSyncUnAssoc => "UnSyncUnAssoc",
        }
    }
    /// Parses a CLI word (`sync`, `async`, `unsyncassoc`, `unsyncunassoc`, any case) or a number.
    pub fn parse_word(s: &str) -> Option<u16> {
        match s.to_ascii_lowercase().as_str() {
            "async" => Some(CopyType::Async.value()),
            "sync" => Some(CopyType::Sync.value()),
            "unsyncassoc" => Some(CopyType::UnSyncAssoc.value()),
            "unsyncunassoc" => Some(CopyType::UnSyncUnAssoc.value()),
            other => other.parse().ok(),
        }
    }
}

/// The `Operation` of ModifySynchronization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operation {
    /// End the relationship; source and target go their own ways.
    Detach = 2,
    /// Split the pair, keeping the target as it is.
    Fracture = 3,
    /// Bring a fractured target up to date again.
    Resync = 4,
    /// Copy the target back onto the source.
    Restore = 5,
    /// Make an Async relationship Sync.
    ResetToSync = 10,
    /// Make a Sync relationship Async.
    ResetToAsync = 11,
}

impl Operation {
    pub fn value(self) -> u16 {
        self as u16
    }
    pub fn from_value(v: u16) -> Option<Operation> {
        Some(match v {
            2 => Operation::Detach,
            3 => Operation::Fracture,
            4 => Operation::Resync,
            5 => Operation::Restore,
            10 => Operation::ResetToSync,
            11 => Operation::ResetToAsync,
            _ => return None,
        })
    }
    /// The CIM name, for messages: `Detach`, `Fracture`, `Resync`, `Restore`, `ResetToSync`,
    /// `ResetToAsync`.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Detach => "Detach",
            Operation::Fracture => "Fracture",
            Operation::Resync => "Resync",
            Operation::Restore => "Restore",
            Operation::ResetToSync => "ResetToSync",
            Operation::ResetToAsync => "ResetToAsync",
        }
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The `RequestedState` of RequestStateChange on a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestedState {
    /// Stop the job and roll its relationship back.
    Terminate = 4,
    /// Stop the job at once.
    Kill = 5,
}

impl RequestedState {
    pub fn value(self) -> u16 {
        self as u16
    }
    pub fn from_value(v: u16) -> Option<RequestedState> {
        Some(match v {
            4 => RequestedState::Terminate,
            5 => RequestedState::Kill,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        for v in 0..=20 {
            if let Some(s) = JobState::from_value(v) {
                assert_eq!(s.value(), v);
            }
            if let Some(s) = SyncState::from_value(v) {
                assert_eq!(s.value(), v);
            }
            if let Some(c) = CopyType::from_value(v) {
                assert_eq!(c.value(), v);
            }
            if let Some(o) = Operation::from_value(v) {
                assert_eq!(o.value(), v);
            }
            if let Some(r) = RequestedState::from_value(v) {
                assert_eq!(r.value(), v);
            }
        }
        assert_eq!(JobState::from_value(6), None);
        assert_eq!(SyncState::RestoreInProgress.value(), 10);
        assert_eq!(Operation::from_value(10), Some(Operation::ResetToSync));
        assert_eq!(Operation::from_value(11), Some(Operation::ResetToAsync));
        assert_eq!(Operation::from_value(6), None);
        assert_eq!(Operation::Restore.to_string(), "Restore");
        assert_eq!(RequestedState::from_value(5), Some(RequestedState::Kill));
        assert_eq!(RequestedState::from_value(3), None);
    }

    #[test]
    fn final_job_states() {
        let finals: Vec<u16> = (0..=20)
            .filter_map(JobState::from_value)
            .filter(|s| s.is_final())
            .map(JobState::value)
            .collect();
        assert_eq!(finals, vec![7, 8, 9, 10]);
    }

    #[test]
    fn copy_type_words() {
        assert_eq!(CopyType::parse_word("UnSyncAssoc"), Some(4));
        assert_eq!(CopyType::parse_word("async"), Some(2));
        assert_eq!(CopyType::parse_word("77"), Some(77));
        assert_eq!(CopyType::parse_word("mirror"), None);
        assert_eq!(CopyType::Sync.name(), "Sync");
    }
}
