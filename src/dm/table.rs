//! Typed device-mapper table lines. Each target's parameters print to and parse from the
//! kernel's table syntax. CONTRACT: field names are used by the engine.
//!
//! Printing gives the constructor syntax the kernel takes (`dmsetup table` style). Parsing
//! accepts that syntax and the kernel's own printed table (devices as `major:minor`, optional
//! arguments in the kernel's order). Tables using features these types cannot express (a
//! mirror with a `disk` log, raid levels other than raid1, `PO` snapshots, ...) parse as
//! [`Target::Other`] with the parameters kept verbatim, so nothing is lost or misread.
//!
//! One asymmetry of the kernel is worth knowing: dm-raid takes `max_write_behind` in sectors
//! but prints it in KiB (half the value). [`RaidParams`] always holds sectors; the kernel
//! backend converts the printed value back when it reads a live table.

use super::Sectors;
use crate::error::{Error, Result};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableLine {
    pub start: Sectors,
    pub length: Sectors,
    pub target: Target,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Linear(LinearParams),
    Mirror(MirrorParams),
    Raid(RaidParams),
    SnapshotOrigin(SnapshotOriginParams),
    Snapshot(SnapshotParams),
    /// `snapshot-merge`: takes the origin's place while a snapshot's changed chunks are
    /// copied back onto the origin; the same parameters as `snapshot`.
    SnapshotMerge(SnapshotParams),
    Zero,
    Error,
    /// Any other target, kept verbatim.
    Other {
        target_type: String,
        params: String,
    },
}

/// `linear <device> <offset>`; `device` is a path or `major:minor`.
///
/// Every device field of a table line is kept as text: the kernel takes a path as well as a
/// number (it prints numbers back), and the raid `-` placeholder is not a device at all.
/// [`Devno`](super::Devno) parses a field and tells whether one names it.
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
///
/// Printed in the kernel's order: `nosync`, `rebuild`, `max_recovery_rate`, `write_mostly`,
/// `max_write_behind`, `region_size`. `max_write_behind` is in sectors, as the constructor
/// takes it; `max_recovery_rate` in KiB/s per device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaidParams {
    pub region_size: Option<u64>,
    pub nosync: bool,
    pub rebuild: Vec<usize>,
    pub write_mostly: Vec<usize>,
    pub max_write_behind: Option<u32>,
    pub max_recovery_rate: Option<u64>,
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
    /// A line from its parts.
    pub fn new(start: Sectors, length: Sectors, target: Target) -> TableLine {
        TableLine {
            start,
            length,
            target,
        }
    }

    /// The kernel's target type name (`linear`, `mirror`, ...).
    pub fn target_type(&self) -> &str {
        self.target.target_type()
    }

    /// The parameter string as the kernel takes it.
    pub fn params(&self) -> String {
        self.target.params()
    }

    /// Parse `start length type params...`.
    pub fn parse(line: &str) -> Result<TableLine> {
        let what = "table line";
        let line = line.trim();
        let mut rest = line;
        let mut field = |name: &str| -> Result<&str> {
            let r = rest.trim_start();
            if r.is_empty() {
                return Err(Error::parse(what, name, format!("missing in {line:?}")));
            }
            let end = r.find(char::is_whitespace).unwrap_or(r.len());
            rest = &r[end..];
            Ok(&r[..end])
        };
        let start = parse_num(what, "start", field("start")?)?;
        let length = parse_num(what, "length", field("length")?)?;
        let target_type = field("target type")?.to_string();
        let params = rest.trim();
        Self::from_parts(start, length, &target_type, params)
    }

    /// Build a line from the four parts the ioctl interface uses
    /// (`(start, length, type, params)`, as the kernel reports them).
    pub fn from_parts(
        start: Sectors,
        length: Sectors,
        target_type: &str,
        params: &str,
    ) -> Result<TableLine> {
        Ok(TableLine {
            start,
            length,
            target: Target::parse(target_type, params)?,
        })
    }

    /// The devices this line refers to (paths or `major:minor`), in table order.
    pub fn devices(&self) -> Vec<&str> {
        self.target.devices()
    }
}

impl fmt::Display for TableLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let params = self.params();
        if params.is_empty() {
            write!(f, "{} {} {}", self.start, self.length, self.target_type())
        } else {
            write!(
                f,
                "{} {} {} {}",
                self.start,
                self.length,
                self.target_type(),
                params
            )
        }
    }
}

impl FromStr for TableLine {
    type Err = Error;
    fn from_str(s: &str) -> Result<TableLine> {
        TableLine::parse(s)
    }
}

/// A whole table as text, one line per target (the form `dmsetup table` prints).
pub fn format_table(lines: &[TableLine]) -> String {
    lines
        .iter()
        .map(|l| l.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Parse a whole table, one line per target; blank lines are skipped.
pub fn parse_table(text: &str) -> Result<Vec<TableLine>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(TableLine::parse)
        .collect()
}

/// The size a table maps (the end of its last line).
pub fn table_length(lines: &[TableLine]) -> Sectors {
    lines
        .iter()
        .map(|l| l.start + l.length)
        .max()
        .unwrap_or_default()
}

impl Target {
    /// The kernel's target type name.
    pub fn target_type(&self) -> &str {
        match self {
            Target::Linear(_) => "linear",
            Target::Mirror(_) => "mirror",
            Target::Raid(_) => "raid",
            Target::SnapshotOrigin(_) => "snapshot-origin",
            Target::Snapshot(_) => "snapshot",
            Target::SnapshotMerge(_) => "snapshot-merge",
            Target::Zero => "zero",
            Target::Error => "error",
            Target::Other { target_type, .. } => target_type,
        }
    }

    /// The parameter string as the kernel takes it (empty for `zero` and `error`).
    pub fn params(&self) -> String {
        match self {
            Target::Linear(p) => p.to_string(),
            Target::Mirror(p) => p.to_string(),
            Target::Raid(p) => p.to_string(),
            Target::SnapshotOrigin(p) => p.to_string(),
            Target::Snapshot(p) | Target::SnapshotMerge(p) => p.to_string(),
            Target::Zero | Target::Error => String::new(),
            Target::Other { params, .. } => params.clone(),
        }
    }

    /// Parse the parameters of a target of type `target_type`. Well-formed parameters that
    /// the typed forms cannot express give [`Target::Other`].
    pub fn parse(target_type: &str, params: &str) -> Result<Target> {
        let params = params.trim();
        let other = || Target::Other {
            target_type: target_type.to_string(),
            params: params.to_string(),
        };
        Ok(match target_type {
            "linear" => Target::Linear(LinearParams::parse(params)?),
            "mirror" => match MirrorParams::parse_opt(params)? {
                Some(p) => Target::Mirror(p),
                None => other(),
            },
            "raid" => match RaidParams::parse_opt(params)? {
                Some(p) => Target::Raid(p),
                None => other(),
            },
            "snapshot-origin" => Target::SnapshotOrigin(SnapshotOriginParams::parse(params)?),
            "snapshot" => match SnapshotParams::parse_opt(params)? {
                Some(p) => Target::Snapshot(p),
                None => other(),
            },
            "snapshot-merge" => match SnapshotParams::parse_opt(params)? {
                Some(p) if p.persistent => Target::SnapshotMerge(p),
                _ => other(),
            },
            "zero" if params.is_empty() => Target::Zero,
            "error" if params.is_empty() => Target::Error,
            "" => return Err(Error::parse("table line", "target type", "empty")),
            _ => other(),
        })
    }

    /// The devices this target refers to (paths or `major:minor`; `-` placeholders of raid
    /// are left out). Unknown targets report none.
    pub fn devices(&self) -> Vec<&str> {
        match self {
            Target::Linear(p) => vec![p.device.as_str()],
            Target::Mirror(p) => p.legs.iter().map(|l| l.device.as_str()).collect(),
            Target::Raid(p) => p
                .devices
                .iter()
                .flat_map(|d| d.meta.as_deref().into_iter().chain([d.data.as_str()]))
                .filter(|d| *d != "-")
                .collect(),
            Target::SnapshotOrigin(p) => vec![p.device.as_str()],
            Target::Snapshot(p) | Target::SnapshotMerge(p) => {
                vec![p.origin.as_str(), p.cow.as_str()]
            }
            Target::Zero | Target::Error | Target::Other { .. } => Vec::new(),
        }
    }

    /// The same target with every device reference replaced by `f(reference)` (raid `-`
    /// placeholders are kept). Used to turn paths into `major:minor` as the kernel does.
    pub fn map_devices(&self, mut f: impl FnMut(&str) -> String) -> Target {
        let mut map = |d: &str| if d == "-" { d.to_string() } else { f(d) };
        match self {
            Target::Linear(p) => Target::Linear(LinearParams {
                device: map(&p.device),
                offset: p.offset,
            }),
            Target::Mirror(p) => Target::Mirror(MirrorParams {
                legs: p
                    .legs
                    .iter()
                    .map(|l| LinearParams {
                        device: map(&l.device),
                        offset: l.offset,
                    })
                    .collect(),
                ..p.clone()
            }),
            Target::Raid(p) => Target::Raid(RaidParams {
                devices: p
                    .devices
                    .iter()
                    .map(|d| RaidDevice {
                        meta: d.meta.as_deref().map(&mut map),
                        data: map(&d.data),
                    })
                    .collect(),
                ..p.clone()
            }),
            Target::SnapshotOrigin(p) => Target::SnapshotOrigin(SnapshotOriginParams {
                device: map(&p.device),
            }),
            Target::Snapshot(p) => Target::Snapshot(p.map_devices(map)),
            Target::SnapshotMerge(p) => Target::SnapshotMerge(p.map_devices(map)),
            other => other.clone(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// token helpers

fn parse_num<T: FromStr>(what: &str, field: &str, tok: &str) -> Result<T>
where
    T::Err: fmt::Display,
{
    tok.parse::<T>()
        .map_err(|e| Error::parse(what, field, format!("{tok:?}: {e}")))
}

/// Whitespace tokens of a parameter string, with errors that name the field.
pub(crate) struct Tokens<'a> {
    what: &'static str,
    toks: Vec<&'a str>,
    pos: usize,
}

impl<'a> Tokens<'a> {
    pub(crate) fn new(what: &'static str, s: &'a str) -> Tokens<'a> {
        Tokens {
            what,
            toks: s.split_whitespace().collect(),
            pos: 0,
        }
    }

    pub(crate) fn next(&mut self, field: &str) -> Result<&'a str> {
        let t = self
            .toks
            .get(self.pos)
            .copied()
            .ok_or_else(|| Error::parse(self.what, field, "missing"))?;
        self.pos += 1;
        Ok(t)
    }

    pub(crate) fn num<T: FromStr>(&mut self, field: &str) -> Result<T>
    where
        T::Err: fmt::Display,
    {
        let t = self.next(field)?;
        parse_num(self.what, field, t)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.toks.len()
    }

    /// The next token, not taken.
    pub(crate) fn peek(&self) -> Option<&'a str> {
        self.toks.get(self.pos).copied()
    }

    pub(crate) fn err(&self, field: &str, detail: impl ToString) -> Error {
        Error::parse(self.what, field, detail)
    }

    /// Fails when tokens are left over.
    pub(crate) fn end(&self) -> Result<()> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(self.err(
                "end",
                format!("unexpected {:?}", self.toks[self.pos..].join(" ")),
            ))
        }
    }
}

fn device<'a>(t: &mut Tokens<'a>, field: &str) -> Result<&'a str> {
    t.next(field)
}

// ---------------------------------------------------------------------------------------------
// linear

impl LinearParams {
    /// Parse `<device> <offset>`.
    pub fn parse(params: &str) -> Result<LinearParams> {
        let mut t = Tokens::new("linear table", params);
        let p = LinearParams {
            device: device(&mut t, "device")?.to_string(),
            offset: t.num("offset")?,
        };
        t.end()?;
        Ok(p)
    }
}

impl fmt::Display for LinearParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.device, self.offset)
    }
}

impl FromStr for LinearParams {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

// ---------------------------------------------------------------------------------------------
// mirror

impl MirrorParams {
    /// Parse `core <1|2> <region_size> [nosync] <#legs> (<dev> <offset>)... [<#features> handle_errors]`.
    /// Other log types and features are refused; [`TableLine::parse`] keeps them as
    /// [`Target::Other`] instead.
    pub fn parse(params: &str) -> Result<MirrorParams> {
        Self::parse_opt(params)?.ok_or_else(|| {
            Error::parse(
                "mirror table",
                "log",
                format!("only a core log without sync/keep_log is supported: {params:?}"),
            )
        })
    }

    /// `Ok(None)`: well-formed as far as read, but not expressible by this type.
    fn parse_opt(params: &str) -> Result<Option<MirrorParams>> {
        let mut t = Tokens::new("mirror table", params);
        let log = t.next("log type")?;
        if log != "core" {
            return Ok(None);
        }
        let nlog: u32 = t.num("#log args")?;
        if !(1..=2).contains(&nlog) {
            return Err(t.err("#log args", format!("{nlog}: a core log takes 1 or 2")));
        }
        let region_size: u64 = t.num("region size")?;
        let mut nosync = false;
        if nlog == 2 {
            match t.next("log sync option")? {
                "nosync" => nosync = true,
                "sync" => return Ok(None),
                other => {
                    return Err(t.err(
                        "log sync option",
                        format!("{other:?}: expected sync or nosync"),
                    ))
                }
            }
        }
        let nlegs: usize = t.num("#legs")?;
        if nlegs == 0 {
            return Err(t.err("#legs", "0: a mirror needs legs"));
        }
        // `nlegs` comes from the line: never reserve by it (a huge count would abort)
        let mut legs = Vec::new();
        for i in 0..nlegs {
            legs.push(LinearParams {
                device: device(&mut t, &format!("leg {i} device"))?.to_string(),
                offset: t.num(&format!("leg {i} offset"))?,
            });
        }
        let mut handle_errors = false;
        if !t.is_empty() {
            let nfeat: usize = t.num("#features")?;
            for _ in 0..nfeat {
                match t.next("feature")? {
                    "handle_errors" => handle_errors = true,
                    "keep_log" => return Ok(None),
                    other => return Err(t.err("feature", format!("unknown feature {other:?}"))),
                }
            }
        }
        t.end()?;
        Ok(Some(MirrorParams {
            region_size,
            nosync,
            legs,
            handle_errors,
        }))
    }
}

impl fmt::Display for MirrorParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nosync {
            write!(f, "core 2 {} nosync", self.region_size)?;
        } else {
            write!(f, "core 1 {}", self.region_size)?;
        }
        write!(f, " {}", self.legs.len())?;
        for l in &self.legs {
            write!(f, " {l}")?;
        }
        if self.handle_errors {
            write!(f, " 1 handle_errors")?;
        }
        Ok(())
    }
}

impl FromStr for MirrorParams {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

// ---------------------------------------------------------------------------------------------
// raid

/// raid parameters taking one value that [`RaidParams`] cannot express.
const RAID_OTHER_VALUED: &[&str] = &[
    "daemon_sleep",
    "min_recovery_rate",
    "stripe_cache",
    "raid10_copies",
    "raid10_format",
    "data_offset",
    "delta_disks",
    "journal_dev",
    "journal_mode",
];

impl RaidParams {
    /// The `<#raid_params>` count: chunk size, then one per flag and two per keyed value.
    pub fn param_count(&self) -> usize {
        1 + usize::from(self.nosync)
            + 2 * self.rebuild.len()
            + 2 * self.write_mostly.len()
            + 2 * usize::from(self.max_write_behind.is_some())
            + 2 * usize::from(self.max_recovery_rate.is_some())
            + 2 * usize::from(self.region_size.is_some())
    }

    /// Parse `raid1 <#params> <chunk> [args...] <#devs> (<meta|-> <data|->)...`.
    /// Other raid levels and arguments are refused; [`TableLine::parse`] keeps them as
    /// [`Target::Other`] instead.
    pub fn parse(params: &str) -> Result<RaidParams> {
        Self::parse_opt(params)?.ok_or_else(|| {
            Error::parse(
                "raid table",
                "raid params",
                format!(
                    "only raid1 with region_size/nosync/rebuild/write_mostly/max_write_behind/max_recovery_rate is supported: {params:?}"
                ),
            )
        })
    }

    fn parse_opt(params: &str) -> Result<Option<RaidParams>> {
        let mut t = Tokens::new("raid table", params);
        let raid_type = t.next("raid type")?;
        if raid_type != "raid1" {
            return Ok(None);
        }
        let nparams: usize = t.num("#raid params")?;
        if nparams == 0 {
            return Err(t.err("#raid params", "0: the chunk size is required"));
        }
        // raid1 ignores the chunk size (the kernel prints 0); any number is accepted.
        let _chunk: u64 = t.num("chunk size")?;
        let mut p = RaidParams {
            region_size: None,
            nosync: false,
            rebuild: Vec::new(),
            write_mostly: Vec::new(),
            max_write_behind: None,
            max_recovery_rate: None,
            devices: Vec::new(),
        };
        let mut expressible = true;
        let mut unplaced = 0;
        let mut left = nparams - 1;
        while left > 0 {
            let key = t.next("raid param")?;
            left -= 1;
            match key {
                "nosync" => p.nosync = true,
                "sync" | "raid10_use_near_sets" => expressible = false,
                _ => {
                    if left == 0 {
                        return Err(t.err(
                            "#raid params",
                            format!("{nparams} leaves {key:?} without its value"),
                        ));
                    }
                    left -= 1;
                    match key {
                        "rebuild" => p.rebuild.push(t.num("rebuild index")?),
                        "write_mostly" => {
                            // the kernel prints a write-mostly device's place in the array,
                            // which is -1 once md has failed it
                            if t.peek() == Some("-1") {
                                t.next("write_mostly index")?;
                                unplaced += 1;
                            } else {
                                p.write_mostly.push(t.num("write_mostly index")?);
                            }
                        }
                        "max_write_behind" => p.max_write_behind = Some(t.num("max_write_behind")?),
                        "region_size" => p.region_size = Some(t.num("region_size")?),
                        "max_recovery_rate" => {
                            p.max_recovery_rate = Some(t.num("max_recovery_rate")?)
                        }
                        k if RAID_OTHER_VALUED.contains(&k) => {
                            t.next(k)?;
                            expressible = false;
                        }
                        other => {
                            return Err(t.err("raid param", format!("unknown parameter {other:?}")))
                        }
                    }
                }
            }
        }
        let ndevs: usize = t.num("#raid devs")?;
        if ndevs == 0 {
            return Err(t.err("#raid devs", "0: raid1 needs devices"));
        }
        for i in 0..ndevs {
            let meta = device(&mut t, &format!("device {i} metadata"))?;
            let data = device(&mut t, &format!("device {i} data"))?;
            p.devices.push(RaidDevice {
                meta: (meta != "-").then(|| meta.to_string()),
                data: data.to_string(),
            });
        }
        t.end()?;
        // A failed write-mostly device is the last one not named otherwise: the raid1s of this
        // daemon make only their last leg (the target's) write-mostly.
        for _ in 0..unplaced {
            let last = (0..ndevs)
                .rev()
                .find(|k| !p.write_mostly.contains(k))
                .ok_or_else(|| t.err("write_mostly index", "-1 with every device named"))?;
            p.write_mostly.push(last);
        }
        Ok(expressible.then_some(p))
    }
}

impl fmt::Display for RaidParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "raid1 {} 0", self.param_count())?;
        if self.nosync {
            write!(f, " nosync")?;
        }
        for i in &self.rebuild {
            write!(f, " rebuild {i}")?;
        }
        if let Some(n) = self.max_recovery_rate {
            write!(f, " max_recovery_rate {n}")?;
        }
        for i in &self.write_mostly {
            write!(f, " write_mostly {i}")?;
        }
        if let Some(n) = self.max_write_behind {
            write!(f, " max_write_behind {n}")?;
        }
        if let Some(n) = self.region_size {
            write!(f, " region_size {n}")?;
        }
        write!(f, " {}", self.devices.len())?;
        for d in &self.devices {
            write!(f, " {} {}", d.meta.as_deref().unwrap_or("-"), d.data)?;
        }
        Ok(())
    }
}

impl FromStr for RaidParams {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

// ---------------------------------------------------------------------------------------------
// snapshot-origin

impl SnapshotOriginParams {
    /// Parse `<device>`.
    pub fn parse(params: &str) -> Result<SnapshotOriginParams> {
        let mut t = Tokens::new("snapshot-origin table", params);
        let p = SnapshotOriginParams {
            device: device(&mut t, "device")?.to_string(),
        };
        t.end()?;
        Ok(p)
    }
}

impl fmt::Display for SnapshotOriginParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.device)
    }
}

impl FromStr for SnapshotOriginParams {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

// ---------------------------------------------------------------------------------------------
// snapshot

impl SnapshotParams {
    /// Parse `<origin> <cow> <P|N> <chunk_size>`. `PO` stores and discard features are
    /// refused; [`TableLine::parse`] keeps them as [`Target::Other`] instead.
    pub fn parse(params: &str) -> Result<SnapshotParams> {
        Self::parse_opt(params)?.ok_or_else(|| {
            Error::parse(
                "snapshot table",
                "persistence",
                format!("only P and N stores without features are supported: {params:?}"),
            )
        })
    }

    fn parse_opt(params: &str) -> Result<Option<SnapshotParams>> {
        let mut t = Tokens::new("snapshot table", params);
        let origin = device(&mut t, "origin")?.to_string();
        let cow = device(&mut t, "cow")?.to_string();
        let persistent = match t.next("persistence")? {
            "P" | "p" => true,
            "N" | "n" => false,
            "PO" | "po" | "Po" | "pO" => return Ok(None),
            other => {
                return Err(t.err("persistence", format!("{other:?}: expected P or N")));
            }
        };
        let chunk_size = t.num("chunk size")?;
        if !t.is_empty() {
            let nfeat: usize = t.num("#features")?;
            for _ in 0..nfeat {
                t.next("feature")?;
            }
            t.end()?;
            if nfeat > 0 {
                return Ok(None);
            }
        }
        Ok(Some(SnapshotParams {
            origin,
            cow,
            persistent,
            chunk_size,
        }))
    }
}

impl SnapshotParams {
    fn map_devices(&self, mut f: impl FnMut(&str) -> String) -> SnapshotParams {
        SnapshotParams {
            origin: f(&self.origin),
            cow: f(&self.cow),
            ..self.clone()
        }
    }
}

impl fmt::Display for SnapshotParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {}",
            self.origin,
            self.cow,
            if self.persistent { "P" } else { "N" },
            self.chunk_size
        )
    }
}

impl FromStr for SnapshotParams {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leg(d: &str) -> LinearParams {
        LinearParams {
            device: d.into(),
            offset: 0,
        }
    }

    fn field_of(e: Error) -> String {
        match e {
            Error::Parse { field, .. } => field,
            other => panic!("not a parse error: {other}"),
        }
    }

    fn samples() -> Vec<TableLine> {
        vec![
            TableLine::new(
                Sectors(0),
                Sectors(524288),
                Target::Linear(LinearParams {
                    device: "/dev/vdb".into(),
                    offset: 2048,
                }),
            ),
            TableLine::new(
                Sectors(0),
                Sectors(524288),
                Target::Mirror(MirrorParams {
                    region_size: 1024,
                    nosync: false,
                    legs: vec![leg("253:1"), leg("253:2")],
                    handle_errors: true,
                }),
            ),
            TableLine::new(
                Sectors(0),
                Sectors(524288),
                Target::Mirror(MirrorParams {
                    region_size: 1024,
                    nosync: true,
                    legs: vec![
                        leg("/dev/vdb"),
                        LinearParams {
                            device: "/dev/vdc".into(),
                            offset: 8,
                        },
                        leg("8:48"),
                    ],
                    handle_errors: false,
                }),
            ),
            TableLine::new(
                Sectors(0),
                Sectors(524288),
                Target::Raid(RaidParams {
                    region_size: Some(1024),
                    nosync: false,
                    rebuild: vec![1],
                    write_mostly: vec![1],
                    max_write_behind: Some(8192),
                    max_recovery_rate: None,
                    devices: vec![
                        RaidDevice {
                            meta: Some("253:3".into()),
                            data: "253:1".into(),
                        },
                        RaidDevice {
                            meta: Some("253:4".into()),
                            data: "253:2".into(),
                        },
                    ],
                }),
            ),
            TableLine::new(
                Sectors(0),
                Sectors(524288),
                Target::Raid(RaidParams {
                    region_size: None,
                    nosync: true,
                    rebuild: vec![],
                    write_mostly: vec![],
                    max_write_behind: None,
                    max_recovery_rate: None,
                    devices: vec![
                        RaidDevice {
                            meta: None,
                            data: "253:3".into(),
                        },
                        RaidDevice {
                            meta: None,
                            data: "-".into(),
                        },
                    ],
                }),
            ),
            TableLine::new(
                Sectors(0),
                Sectors(524288),
                Target::SnapshotOrigin(SnapshotOriginParams {
                    device: "/dev/vdb".into(),
                }),
            ),
            TableLine::new(
                Sectors(0),
                Sectors(524288),
                Target::Snapshot(SnapshotParams {
                    origin: "/dev/vdb".into(),
                    cow: "/dev/vdd".into(),
                    persistent: true,
                    chunk_size: 8,
                }),
            ),
            TableLine::new(
                Sectors(0),
                Sectors(8),
                Target::Snapshot(SnapshotParams {
                    origin: "253:1".into(),
                    cow: "253:5".into(),
                    persistent: false,
                    chunk_size: 16,
                }),
            ),
            TableLine::new(Sectors(524288), Sectors(1024), Target::Zero),
            TableLine::new(Sectors(525312), Sectors(1024), Target::Error),
            TableLine::new(
                Sectors(0),
                Sectors(100),
                Target::Other {
                    target_type: "striped".into(),
                    params: "2 128 8:16 0 8:32 0".into(),
                },
            ),
        ]
    }

    #[test]
    fn every_type_round_trips() {
        for line in samples() {
            let text = line.to_string();
            let back = TableLine::parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(back, line, "{text}");
            assert_eq!(back.to_string(), text);
            // and the params alone through their own parser
            let again = Target::parse(line.target_type(), &line.params()).unwrap();
            assert_eq!(again, line.target);
        }
        let table = samples();
        assert_eq!(parse_table(&format_table(&table)).unwrap(), table);
    }

    #[test]
    fn prints_kernel_syntax() {
        let s = samples();
        assert_eq!(s[0].to_string(), "0 524288 linear /dev/vdb 2048");
        assert_eq!(
            s[1].to_string(),
            "0 524288 mirror core 1 1024 2 253:1 0 253:2 0 1 handle_errors"
        );
        assert_eq!(
            s[2].params(),
            "core 2 1024 nosync 3 /dev/vdb 0 /dev/vdc 8 8:48 0"
        );
        assert_eq!(
            s[3].params(),
            "raid1 9 0 rebuild 1 write_mostly 1 max_write_behind 8192 region_size 1024 2 253:3 253:1 253:4 253:2"
        );
        assert_eq!(s[4].params(), "raid1 2 0 nosync 2 - 253:3 - -");
        assert_eq!(s[6].params(), "/dev/vdb /dev/vdd P 8");
        assert_eq!(s[8].to_string(), "524288 1024 zero");
        assert_eq!(s[8].params(), "");
    }

    #[test]
    fn parses_kernel_output() {
        // `dmsetup table` on kernel 6.1 (VM notes) and the documented forms
        let m = TableLine::parse("0 524288 mirror core 1 1024 2 253:16 0 253:32 0").unwrap();
        assert_eq!(
            m.target,
            Target::Mirror(MirrorParams {
                region_size: 1024,
                nosync: false,
                legs: vec![leg("253:16"), leg("253:32")],
                handle_errors: false,
            })
        );
        let m = TableLine::parse("0 524288 mirror core 1 1024 2 253:1 0 253:2 0 1 handle_errors")
            .unwrap();
        assert!(matches!(
            m.target,
            Target::Mirror(MirrorParams {
                handle_errors: true,
                ..
            })
        ));

        let r =
            TableLine::parse("0 524288 raid raid1 3 0 region_size 1024 2 - 253:3 - 253:4").unwrap();
        let Target::Raid(r) = r.target else {
            panic!("not raid")
        };
        assert_eq!(r.region_size, Some(1024));
        assert_eq!(r.devices.len(), 2);
        assert_eq!(r.devices[0].meta, None);
        assert_eq!(r.devices[1].data, "253:4");

        // the kernel prints max_write_behind in KiB, after write_mostly, before region_size
        let r = RaidParams::parse(
            "raid1 7 0 write_mostly 1 max_write_behind 4096 region_size 2048 2 253:5 253:1 253:6 253:2",
        )
        .unwrap();
        assert_eq!(r.write_mostly, vec![1]);
        assert_eq!(r.max_write_behind, Some(4096));
        assert_eq!(r.region_size, Some(2048));
        assert_eq!(r.devices[0].meta.as_deref(), Some("253:5"));

        let r = RaidParams::parse("raid1 5 0 rebuild 0 rebuild 1 2 - 8:17 - 8:33").unwrap();
        assert_eq!(r.rebuild, vec![0, 1]);

        let s = TableLine::parse("0 524288 snapshot 253:16 253:48 P 8").unwrap();
        assert_eq!(
            s.target,
            Target::Snapshot(SnapshotParams {
                origin: "253:16".into(),
                cow: "253:48".into(),
                persistent: true,
                chunk_size: 8,
            })
        );
        let o = TableLine::parse("0 524288 snapshot-origin 253:16").unwrap();
        assert_eq!(o.devices(), vec!["253:16"]);
        let l = TableLine::parse("0 524288 linear 254:0 0").unwrap();
        assert_eq!(l.devices(), vec!["254:0"]);
    }

    #[test]
    fn a_failed_write_mostly_leg_the_kernel_prints_as_minus_one_is_the_last_leg() {
        // what 6.1 shows for an Async raid1 whose target leg md has failed
        let line = TableLine::parse(
            "0 229376 raid raid1 7 0 max_recovery_rate 4000000 write_mostly -1 max_write_behind 256 2 254:6 254:0 254:7 254:1",
        )
        .unwrap();
        let Target::Raid(r) = &line.target else {
            panic!("{line:?}");
        };
        assert_eq!(r.write_mostly, vec![1]);
        // printed back as a table the kernel loads
        assert!(line.to_string().contains(" write_mostly 1 "), "{line}");
    }

    #[test]
    fn snapshot_merge_round_trips_and_names_both_devices() {
        let line = "0 262144 snapshot-merge 253:4 8:16 P 8";
        let t = TableLine::parse(line).unwrap();
        assert!(matches!(&t.target, Target::SnapshotMerge(p) if p.cow == "8:16" && p.persistent));
        assert_eq!(t.to_string(), line);
        assert_eq!(t.devices(), vec!["253:4", "8:16"]);
        let moved = t.target.map_devices(|d| format!("{d}x"));
        assert_eq!(moved.params(), "253:4x 8:16x P 8");
        // the kernel merges persistent stores only
        assert!(matches!(
            TableLine::parse("0 8 snapshot-merge 253:4 8:16 N 8")
                .unwrap()
                .target,
            Target::Other { .. }
        ));
    }

    #[test]
    fn inexpressible_tables_are_kept_verbatim() {
        for (ty, params) in [
            ("mirror", "disk 2 253:3 1024 2 253:1 0 253:2 0"),
            ("mirror", "core 2 1024 sync 2 253:1 0 253:2 0"),
            (
                "mirror",
                "core 1 1024 2 253:1 0 253:2 0 2 handle_errors keep_log",
            ),
            ("raid", "raid5_ls 3 64 region_size 1024 3 - 8:1 - 8:2 - 8:3"),
            ("raid", "raid1 3 0 min_recovery_rate 100 2 - 8:1 - 8:2"),
            ("raid", "raid1 2 0 sync 2 - 8:1 - 8:2"),
            ("snapshot", "253:1 253:2 PO 8"),
            (
                "snapshot",
                "253:1 253:2 P 8 2 discard_zeroes_cow discard_passdown_origin",
            ),
            ("thin-pool", "253:1 253:2 128 0 0"),
            ("zero", "unexpected"),
        ] {
            let line = format!("0 100 {ty} {params}");
            let t = TableLine::parse(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(
                t.target,
                Target::Other {
                    target_type: ty.into(),
                    params: params.into()
                }
            );
            assert_eq!(t.to_string(), line);
        }
        // but the typed parsers say why they refuse
        assert!(MirrorParams::parse("disk 2 253:3 1024 2 253:1 0 253:2 0").is_err());
        assert!(RaidParams::parse("raid5_ls 1 64 3 - 8:1 - 8:2 - 8:3").is_err());
        assert!(SnapshotParams::parse("253:1 253:2 PO 8").is_err());
    }

    #[test]
    fn malformed_lines_name_the_field() {
        let cases = [
            ("", "start"),
            ("x 10 linear /dev/a 0", "start"),
            ("0 y linear /dev/a 0", "length"),
            ("0 10", "target type"),
            ("0 10 linear", "device"),
            ("0 10 linear /dev/a", "offset"),
            ("0 10 linear /dev/a zz", "offset"),
            ("0 10 linear /dev/a 0 junk", "end"),
            ("0 10 mirror core", "#log args"),
            ("0 10 mirror core 3 1024 x y 2", "#log args"),
            ("0 10 mirror core 1 abc 2 a 0 b 0", "region size"),
            ("0 10 mirror core 2 1024 maybe 2 a 0 b 0", "log sync option"),
            ("0 10 mirror core 1 1024 0", "#legs"),
            ("0 10 mirror core 1 1024 2 a 0 b", "leg 1 offset"),
            ("0 10 mirror core 1 1024 2 a 0 b 0 1 frobnicate", "feature"),
            ("0 10 mirror core 1 1024 2 a 0 b 0 x", "#features"),
            ("0 10 raid raid1", "#raid params"),
            ("0 10 raid raid1 0 0 2 - a - b", "#raid params"),
            ("0 10 raid raid1 3 0 region_size 2 - a - b", "#raid devs"),
            ("0 10 raid raid1 2 0 region_size 2 - a - b", "#raid params"),
            ("0 10 raid raid1 3 0 bogus 1 2 - a - b", "raid param"),
            ("0 10 raid raid1 3 0 rebuild x 2 - a - b", "rebuild index"),
            ("0 10 raid raid1 1 0 2 - a -", "device 1 data"),
            ("0 10 raid raid1 1 0 0", "#raid devs"),
            ("0 10 snapshot a b Q 8", "persistence"),
            ("0 10 snapshot a b P", "chunk size"),
            ("0 10 snapshot a", "cow"),
            ("0 10 snapshot-origin", "device"),
            ("0 10 snapshot-origin a b", "end"),
        ];
        for (line, field) in cases {
            let e = TableLine::parse(line).expect_err(line);
            assert_eq!(field_of(e), field, "{line}");
        }
        let e = TableLine::parse("0 10 linear /dev/a zz").unwrap_err();
        assert!(e.to_string().contains("linear table"), "{e}");
    }

    #[test]
    fn devices_and_mapping() {
        let s = samples();
        assert_eq!(s[3].devices(), vec!["253:3", "253:1", "253:4", "253:2"]);
        assert_eq!(s[4].devices(), vec!["253:3"]);
        assert_eq!(s[6].devices(), vec!["/dev/vdb", "/dev/vdd"]);
        let mapped = s[2].target.map_devices(|d| format!("[{d}]"));
        assert_eq!(mapped.devices(), vec!["[/dev/vdb]", "[/dev/vdc]", "[8:48]"]);
        let mapped = s[4].target.map_devices(|d| format!("[{d}]"));
        assert_eq!(mapped.params(), "raid1 2 0 nosync 2 - [253:3] - -");
        assert_eq!(table_length(&s[8..10]), Sectors(526336));
    }
}
