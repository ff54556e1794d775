//! Typed status lines. A parse error names the field. CONTRACT: used by the engine.

use crate::error::Result;

/// mirror: `<#legs> <dev>... <in_sync>/<total> <#health> <health chars> <#log args> <log args>...`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorStatus {
    pub devices: Vec<String>,
    pub in_sync: u64,
    pub total: u64,
    /// One char per leg: A alive, D dead (write failure), S sync failure, R read failure, F flush failure, U unclassified
    pub health: Vec<char>,
    pub log: Vec<String>,
}

/// raid: `<type> <#devs> <health chars> <in_sync>/<total> <sync_action> <mismatch_cnt> [<data_offset> [<journal>]]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaidStatus {
    pub raid_type: String,
    pub health: Vec<char>,
    pub in_sync: u64,
    pub total: u64,
    pub sync_action: String,
    pub mismatch: u64,
}

/// snapshot: `<used>/<total> <metadata>` | `Invalid` | `Overflow` | `Merge failed` | ...
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotStatus {
    Active { used: u64, total: u64, metadata: u64 },
    Invalid,
    Overflow,
    MergeFailed,
}

impl MirrorStatus {
    pub fn parse(params: &str) -> Result<MirrorStatus> {
        let _ = params;
        todo!()
    }
}

impl RaidStatus {
    pub fn parse(params: &str) -> Result<RaidStatus> {
        let _ = params;
        todo!()
    }
}

impl SnapshotStatus {
    pub fn parse(params: &str) -> Result<SnapshotStatus> {
        let _ = params;
        todo!()
    }
}
