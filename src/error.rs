//! The one library error type. Each variant is something the API must map to an
//! AttachReplica / ModifySynchronization return value (see `ReturnCode`).

use std::path::{Path, PathBuf};

/// Return values of `AttachReplica`, exactly as the CIM method page lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[repr(u32)]
pub enum ReturnCode {
    Completed = 0,
    NotSupported = 1,
    Unspecified = 2,
    Timeout = 3,
    Failed = 4,
    InvalidParameter = 5,
    InUse = 6,
    JobStarted = 4096,
}

impl ReturnCode {
    pub fn value(self) -> u32 {
        self as u32
    }
    pub fn from_value(v: u32) -> Option<ReturnCode> {
        use ReturnCode::*;
        Some(match v {
            0 => Completed,
            1 => NotSupported,
            2 => Unspecified,
            3 => Timeout,
            4 => Failed,
            5 => InvalidParameter,
            6 => InUse,
            4096 => JobStarted,
            _ => return None,
        })
    }
    pub fn describe(self) -> &'static str {
        use ReturnCode::*;
        match self {
            Completed => "Job Completed with No Error",
            NotSupported => "Not Supported",
            Unspecified => "Unspecified Error",
            Timeout => "Timeout",
            Failed => "Failed",
            InvalidParameter => "Invalid Parameter",
            InUse => "In Use",
            JobStarted => "Method Parameters Checked - Job Started",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Return value 1.
    #[error("not supported: {0}")]
    NotSupported(String),
    /// Return value 5: a named element does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// Return value 5.
    #[error("invalid parameter: {0}")]
    Invalid(String),
    /// Return value 6.
    #[error("in use: {0}")]
    InUse(String),
    /// Return value 3: a kernel step did not finish in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// Return value 4: the kernel refused a step.
    #[error("kernel refused {op} on {object}: {detail}")]
    Kernel {
        op: String,
        object: String,
        detail: String,
    },
    /// Return value 4: an I/O error on a configfs or device path.
    #[error("{op} {path}{value}: {source}", value = .value.as_ref().map(|v| format!(" (value {v:?})")).unwrap_or_default())]
    Io {
        op: &'static str,
        path: PathBuf,
        value: Option<String>,
        #[source]
        source: std::io::Error,
    },
    /// Return value 4, but worse: a failure whose rollback also failed.
    #[error("{cause}; rollback also failed, left behind: {left}")]
    RollbackFailed { cause: Box<Error>, left: String },
    /// A status or table line that does not parse; names the field.
    #[error("cannot parse {what}: field {field}: {detail}")]
    Parse {
        what: String,
        field: String,
        detail: String,
    },
    /// Return value 2.
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn return_code(&self) -> ReturnCode {
        match self {
            Error::NotSupported(_) => ReturnCode::NotSupported,
            Error::NotFound(_) | Error::Invalid(_) => ReturnCode::InvalidParameter,
            Error::InUse(_) => ReturnCode::InUse,
            Error::Timeout(_) => ReturnCode::Timeout,
            Error::Kernel { .. } | Error::Io { .. } | Error::RollbackFailed { .. } => {
                ReturnCode::Failed
            }
            Error::Parse { .. } | Error::Other(_) => ReturnCode::Unspecified,
        }
    }

    pub fn io(op: &'static str, path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            op,
            path: path.to_path_buf(),
            value: None,
            source,
        }
    }

    pub fn io_value(op: &'static str, path: &Path, value: &str, source: std::io::Error) -> Error {
        Error::Io {
            op,
            path: path.to_path_buf(),
            value: Some(value.to_string()),
            source,
        }
    }

    pub fn kernel(
        op: impl Into<String>,
        object: impl Into<String>,
        detail: impl ToString,
    ) -> Error {
        Error::Kernel {
            op: op.into(),
            object: object.into(),
            detail: detail.to_string(),
        }
    }

    /// The error to report after a rollback: `cause` when nothing was left behind,
    /// `RollbackFailed` naming what was otherwise.
    pub fn after_rollback(cause: Error, left: Vec<String>) -> Error {
        if left.is_empty() {
            cause
        } else {
            Error::RollbackFailed {
                cause: Box::new(cause),
                left: left.join("; "),
            }
        }
    }

    pub fn parse(
        what: impl Into<String>,
        field: impl Into<String>,
        detail: impl ToString,
    ) -> Error {
        Error::Parse {
            what: what.into(),
            field: field.into(),
            detail: detail.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_seed() {
        assert_eq!(Error::NotFound("x".into()).return_code().value(), 5);
        assert_eq!(Error::InUse("x".into()).return_code().value(), 6);
        assert_eq!(Error::NotSupported("x".into()).return_code().value(), 1);
        assert_eq!(Error::Timeout("x".into()).return_code().value(), 3);
        assert_eq!(
            Error::kernel("load", "dev", "EBUSY").return_code().value(),
            4
        );
        assert_eq!(ReturnCode::from_value(4096), Some(ReturnCode::JobStarted));
        assert_eq!(ReturnCode::from_value(7), None);
    }

    #[test]
    fn io_error_names_path_and_value() {
        let e = Error::io_value(
            "write",
            Path::new("/sys/kernel/config/target/core/iblock_0/x/enable"),
            "1",
            std::io::Error::from_raw_os_error(16),
        );
        let s = e.to_string();
        assert!(s.contains("iblock_0/x/enable"), "{s}");
        assert!(s.contains("\"1\""), "{s}");
    }
}
