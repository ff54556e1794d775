//! Typed device-mapper table lines. Each target's parameters print to and parse from the
//! kernel's table syntax. CONTRACT: field names are used by the engine.

use crate::error::Result;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableLine {
    pub start: u64,
    pub length: u64,
    pub target: Target,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Linear(LinearParams),
    Mirror(MirrorParams),
    Raid(RaidParams),
    SnapshotOrigin(SnapshotOriginParams),
    Snapshot(SnapshotParams),
    Zero,
    Error,
    /// Any other target, kept verbatim.
    Other { target_type: String, params: String },
}

/// `linear <device> <offset>`; `device` is a path or `major:minor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinearParams {
    pub device: String,
    pub offset: u64,
}

/// `mirror core <1|2> <region_size> [nosync] <#legs> <dev> <offset>... [1 handle_errors]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorParams {
    pub region_size: u64,
    pub nosync: bool,
    pub legs: Vec<LinearParams>,
    pub handle_errors: bool,
}

/// `raid raid1 <#params> 0 [region_size N] [nosync] [rebuild I].. [write_mostly I].. [max_write_behind N] <#devs> <meta|-> <data>...`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaidParams {
    pub region_size: Option<u64>,
    pub nosync: bool,
    pub rebuild: Vec<usize>,
    pub write_mostly: Vec<usize>,
    pub max_write_behind: Option<u32>,
    pub devices: Vec<RaidDevice>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaidDevice {
    pub meta: Option<String>,
    pub data: String,
}

/// `snapshot-origin <device>`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotOriginParams {
    pub device: String,
}

/// `snapshot <origin> <cow> <P|N> <chunk_size>`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotParams {
    pub origin: String,
    pub cow: String,
    pub persistent: bool,
    pub chunk_size: u64,
}

impl TableLine {
    /// The kernel's target type name (`linear`, `mirror`, ...).
    pub fn target_type(&self) -> &str {
        todo!()
    }
    /// The parameter string as the kernel takes it.
    pub fn params(&self) -> String {
        todo!()
    }
    /// Parse `start length type params...`.
    pub fn parse(line: &str) -> Result<TableLine> {
        let _ = line;
        todo!()
    }
}
