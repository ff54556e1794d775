//! Typed status lines. A parse error names the field. CONTRACT: used by the engine.
//!
//! Each type also prints back to the kernel's format (`Display`), which the simulator uses to
//! produce its status lines.

use super::table::Tokens;
use crate::error::Result;
use std::fmt;

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
    Active {
        used: u64,
        total: u64,
        metadata: u64,
    },
    Invalid,
    Overflow,
    MergeFailed,
}

/// `a/b` with errors naming `field`.
fn ratio(t: &mut Tokens<'_>, field: &str) -> Result<(u64, u64)> {
    let tok = t.next(field)?;
    let (a, b) = tok
        .split_once('/')
        .ok_or_else(|| t.err(field, format!("{tok:?} is not <n>/<total>")))?;
    let a = a
        .parse::<u64>()
        .map_err(|e| t.err(field, format!("{tok:?}: {e}")))?;
    let b = b
        .parse::<u64>()
        .map_err(|e| t.err(field, format!("{tok:?}: {e}")))?;
    Ok((a, b))
}

/// Whole percent of `done` out of `total`, floored; 100 only when `complete`.
fn percent_of(done: u64, total: u64, complete: bool) -> u8 {
    if complete {
        return 100;
    }
    if total == 0 {
        return 0;
    }
    let p = (u128::from(done.min(total)) * 100 / u128::from(total)) as u8;
    p.min(99)
}

impl MirrorStatus {
    pub fn parse(params: &str) -> Result<MirrorStatus> {
        let mut t = Tokens::new("mirror status", params);
        let n: usize = t.num("#legs")?;
        if n == 0 {
            return Err(t.err("#legs", "0"));
        }
        // `n` comes from the line: never reserve by it (a huge count would abort on allocation)
        let mut devices = Vec::new();
        for i in 0..n {
            devices.push(t.next(&format!("leg {i} device"))?.to_string());
        }
        let (in_sync, total) = t.ratio_field("sync ratio")?;
        let nhealth: usize = t.num("#health args")?;
        if nhealth == 0 {
            return Err(t.err("#health args", "0: the health characters are missing"));
        }
        let health: Vec<char> = t.next("health")?.chars().collect();
        if health.len() != n {
            return Err(t.err(
                "health",
                format!("{} characters for {n} legs", health.len()),
            ));
        }
        for i in 1..nhealth {
            t.next(&format!("health arg {i}"))?;
        }
        let nlog: usize = t.num("#log args")?;
        let mut log = Vec::new();
        for i in 0..nlog {
            log.push(t.next(&format!("log arg {i}"))?.to_string());
        }
        t.end()?;
        Ok(MirrorStatus {
            devices,
            in_sync,
            total,
            health,
            log,
        })
    }

    /// Every region in sync and every leg alive.
    pub fn is_synced(&self) -> bool {
        self.in_sync >= self.total && self.failed_legs().is_empty()
    }

    /// Whole percent of regions in sync, 0..=100, floored; 100 only when [`Self::is_synced`].
    pub fn percent(&self) -> u8 {
        percent_of(self.in_sync, self.total, self.is_synced())
    }

    /// Indexes of legs whose health is not `A` (alive).
    pub fn failed_legs(&self) -> Vec<usize> {
        failed(&self.health, |c| c != 'A')
    }
}

impl fmt::Display for MirrorStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.devices.len())?;
        for d in &self.devices {
            write!(f, " {d}")?;
        }
        write!(
            f,
            " {}/{} 1 {} {}",
            self.in_sync,
            self.total,
            self.health.iter().collect::<String>(),
            self.log.len()
        )?;
        for a in &self.log {
            write!(f, " {a}")?;
        }
        Ok(())
    }
}

fn failed(health: &[char], bad: impl Fn(char) -> bool) -> Vec<usize> {
    health
        .iter()
        .enumerate()
        .filter(|(_, c)| bad(**c))
        .map(|(i, _)| i)
        .collect()
}

impl RaidStatus {
    /// Parses the current form and the older ones: before dm-raid 1.5.0 the line ends after
    /// the sync ratio (`sync_action` is then empty), before 1.9.0 after `mismatch_cnt`.
    /// `data_offset`, the journal character and anything later are read past.
    pub fn parse(params: &str) -> Result<RaidStatus> {
        let mut t = Tokens::new("raid status", params);
        let raid_type = t.next("raid type")?.to_string();
        let n: usize = t.num("#devs")?;
        let health: Vec<char> = t.next("health")?.chars().collect();
        if health.len() != n {
            return Err(t.err(
                "health",
                format!("{} characters for {n} devices", health.len()),
            ));
        }
        if let Some(c) = health.iter().find(|c| !matches!(c, 'A' | 'a' | 'D' | '-')) {
            return Err(t.err("health", format!("unknown health character {c:?}")));
        }
        let (in_sync, total) = t.ratio_field("sync ratio")?;
        let mut s = RaidStatus {
            raid_type,
            health,
            in_sync,
            total,
            sync_action: String::new(),
            mismatch: 0,
        };
        if t.is_empty() {
            return Ok(s);
        }
        s.sync_action = t.next("sync action")?.to_string();
        if !t.is_empty() {
            s.mismatch = t.num("mismatch count")?;
        }
        if !t.is_empty() {
            let _data_offset: u64 = t.num("data offset")?;
        }
        Ok(s)
    }

    /// The array is in sync: every device alive and in sync (`A`), and either no
    /// resync/recovery/reshape is running with the ratio complete, or a `check`/`repair`
    /// scrub is running (which the kernel only does on a synchronised array).
    pub fn is_synced(&self) -> bool {
        if self.health.iter().any(|c| *c != 'A') {
            return false;
        }
        match self.sync_action.as_str() {
            "check" | "repair" => true,
            "resync" | "recover" | "reshape" => false,
            _ => self.in_sync >= self.total,
        }
    }

    /// Whole percent of the sync ratio, 0..=100, floored; 100 only when [`Self::is_synced`].
    pub fn percent(&self) -> u8 {
        percent_of(self.in_sync, self.total, self.is_synced())
    }

    /// Indexes of devices that are dead (`D`) or missing (`-`). Devices that are alive but
    /// still being synchronised (`a`) are not failed.
    pub fn failed_legs(&self) -> Vec<usize> {
        failed(&self.health, |c| c == 'D' || c == '-')
    }
}

impl fmt::Display for RaidStatus {
    /// The current kernel form, with data offset 0 and no journal (`-`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {}/{}",
            self.raid_type,
            self.health.len(),
            self.health.iter().collect::<String>(),
            self.in_sync,
            self.total
        )?;
        if !self.sync_action.is_empty() {
            write!(f, " {} {} 0 -", self.sync_action, self.mismatch)?;
        }
        Ok(())
    }
}

impl SnapshotStatus {
    pub fn parse(params: &str) -> Result<SnapshotStatus> {
        let p = params.split_whitespace().collect::<Vec<_>>().join(" ");
        match p.as_str() {
            "Invalid" => return Ok(SnapshotStatus::Invalid),
            "Overflow" => return Ok(SnapshotStatus::Overflow),
            "Merge failed" => return Ok(SnapshotStatus::MergeFailed),
            _ => {}
        }
        let mut t = Tokens::new("snapshot status", &p);
        let (used, total) = t.ratio_field("usage")?;
        // before 2.6.33 the metadata count was not printed
        let metadata = if t.is_empty() {
            0
        } else {
            t.num("metadata sectors")?
        };
        t.end()?;
        Ok(SnapshotStatus::Active {
            used,
            total,
            metadata,
        })
    }

    /// The snapshot still holds a valid image.
    pub fn is_valid(&self) -> bool {
        matches!(self, SnapshotStatus::Active { .. })
    }

    /// Whole percent of the COW store in use (data and metadata), floored; `Overflow` is 100;
    /// `None` when the snapshot is invalid or its merge failed (the usage is unknown).
    pub fn percent_used(&self) -> Option<u8> {
        match self {
            SnapshotStatus::Active { used, total, .. } => {
                if *total == 0 {
                    return Some(100);
                }
                let p = u128::from(*used) * 100 / u128::from(*total);
                Some(p.min(100) as u8)
            }
            SnapshotStatus::Overflow => Some(100),
            SnapshotStatus::Invalid | SnapshotStatus::MergeFailed => None,
        }
    }
}

impl fmt::Display for SnapshotStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotStatus::Active {
                used,
                total,
                metadata,
            } => write!(f, "{used}/{total} {metadata}"),
            SnapshotStatus::Invalid => f.write_str("Invalid"),
            SnapshotStatus::Overflow => f.write_str("Overflow"),
            SnapshotStatus::MergeFailed => f.write_str("Merge failed"),
        }
    }
}

impl Tokens<'_> {
    fn ratio_field(&mut self, field: &str) -> Result<(u64, u64)> {
        ratio(self, field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    fn field_of(e: Error) -> String {
        match e {
            Error::Parse { field, .. } => field,
            other => panic!("not a parse error: {other}"),
        }
    }

    #[test]
    fn mirror_real_samples() {
        // dmsetup status on kernel 6.1 (VM notes), params after "0 524288 mirror"
        let s = MirrorStatus::parse("2 253:16 253:32 512/512 1 AA 1 core").unwrap();
        assert_eq!(s.devices, vec!["253:16", "253:32"]);
        assert_eq!((s.in_sync, s.total), (512, 512));
        assert_eq!(s.health, vec!['A', 'A']);
        assert_eq!(s.log, vec!["core"]);
        assert!(s.is_synced());
        assert_eq!(s.percent(), 100);
        assert!(s.failed_legs().is_empty());

        let s = MirrorStatus::parse("2 253:16 253:32 37/512 1 AA 1 core").unwrap();
        assert!(!s.is_synced());
        assert_eq!(s.percent(), 7);

        // disk log with its device and health
        let s = MirrorStatus::parse("3 8:16 8:32 8:48 1023/1024 1 ADA 3 disk 8:64 A").unwrap();
        assert_eq!(s.log, vec!["disk", "8:64", "A"]);
        assert_eq!(s.failed_legs(), vec![1]);
        assert!(!s.is_synced());
        assert_eq!(s.percent(), 99);

        // all regions in sync but a dead leg: not synced, below 100
        let s = MirrorStatus::parse("2 8:16 8:32 512/512 1 AD 1 core").unwrap();
        assert!(!s.is_synced());
        assert_eq!(s.percent(), 99);
        assert_eq!(s.failed_legs(), vec![1]);
    }

    #[test]
    fn raid_real_samples() {
        let s = RaidStatus::parse("raid1 2 AA 524288/524288 idle 0 0 -").unwrap();
        assert_eq!(s.raid_type, "raid1");
        assert_eq!(s.health, vec!['A', 'A']);
        assert_eq!((s.in_sync, s.total), (524288, 524288));
        assert_eq!(s.sync_action, "idle");
        assert!(s.is_synced());
        assert_eq!(s.percent(), 100);

        let s = RaidStatus::parse("raid1 2 Aa 1024/524288 resync 0 0 -").unwrap();
        assert!(!s.is_synced());
        assert_eq!(s.percent(), 0);
        assert!(s.failed_legs().is_empty());
        let s = RaidStatus::parse("raid1 2 aa 262144/524288 resync 0 0 -").unwrap();
        assert_eq!(s.percent(), 50);

        // ratio complete but the action not yet idle: not synced
        let s = RaidStatus::parse("raid1 2 Aa 524288/524288 recover 0 0 -").unwrap();
        assert!(!s.is_synced());
        assert_eq!(s.percent(), 99);

        // a scrub runs on a synchronised array; its ratio is the scrub's progress
        let s = RaidStatus::parse("raid1 2 AA 100/524288 check 3 0 -").unwrap();
        assert!(s.is_synced());
        assert_eq!(s.mismatch, 3);

        let s = RaidStatus::parse("raid1 3 AD- 524288/524288 idle 0 0 -").unwrap();
        assert_eq!(s.failed_legs(), vec![1, 2]);
        assert!(!s.is_synced());

        // older forms
        let s = RaidStatus::parse("raid1 2 AA 524288/524288").unwrap();
        assert_eq!(s.sync_action, "");
        assert!(s.is_synced());
        let s = RaidStatus::parse("raid4 5 AAAAA 2/490221568 init 0").unwrap();
        assert_eq!(s.sync_action, "init");
        assert_eq!(s.mismatch, 0);
        let s = RaidStatus::parse("raid1 2 AA 10/20 idle 0 0").unwrap();
        assert_eq!(s.in_sync, 10);
        // a journal device character and later fields are read past
        let s = RaidStatus::parse("raid5_ls 3 AAA 8/8 idle 0 0 A extra").unwrap();
        assert!(s.is_synced());
    }

    #[test]
    fn snapshot_samples() {
        let s = SnapshotStatus::parse("16464/524288 80").unwrap();
        assert_eq!(
            s,
            SnapshotStatus::Active {
                used: 16464,
                total: 524288,
                metadata: 80
            }
        );
        assert_eq!(s.percent_used(), Some(3));
        assert!(s.is_valid());
        assert_eq!(
            SnapshotStatus::parse("Invalid").unwrap(),
            SnapshotStatus::Invalid
        );
        assert_eq!(
            SnapshotStatus::parse("Overflow").unwrap(),
            SnapshotStatus::Overflow
        );
        assert_eq!(
            SnapshotStatus::parse("Merge failed").unwrap(),
            SnapshotStatus::MergeFailed
        );
        assert_eq!(SnapshotStatus::Invalid.percent_used(), None);
        assert_eq!(SnapshotStatus::Overflow.percent_used(), Some(100));
        assert!(!SnapshotStatus::Overflow.is_valid());
        let old = SnapshotStatus::parse("16/524288").unwrap();
        assert_eq!(old.percent_used(), Some(0));
    }

    #[test]
    fn statuses_round_trip() {
        for s in [
            "2 253:16 253:32 512/512 1 AA 1 core",
            "3 8:16 8:32 8:48 1023/1024 1 ADA 3 disk 8:64 A",
        ] {
            assert_eq!(MirrorStatus::parse(s).unwrap().to_string(), s);
        }
        for s in [
            "raid1 2 AA 524288/524288 idle 0 0 -",
            "raid1 2 aa 0/524288 resync 0 0 -",
            "raid1 2 AA 524288/524288",
        ] {
            assert_eq!(RaidStatus::parse(s).unwrap().to_string(), s);
        }
        for s in ["16464/524288 80", "Invalid", "Overflow", "Merge failed"] {
            assert_eq!(SnapshotStatus::parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn malformed_status_names_the_field() {
        let mirror = [
            ("", "#legs"),
            ("x", "#legs"),
            ("0 1/1 1 A 1 core", "#legs"),
            ("2 8:16", "leg 1 device"),
            ("2 8:16 8:32 512 1 AA 1 core", "sync ratio"),
            ("2 8:16 8:32 a/512 1 AA 1 core", "sync ratio"),
            ("2 8:16 8:32 1/b 1 AA 1 core", "sync ratio"),
            ("2 8:16 8:32 1/2 x AA 1 core", "#health args"),
            ("2 8:16 8:32 1/2 0 AA 1 core", "#health args"),
            ("2 8:16 8:32 1/2 1 A 1 core", "health"),
            ("2 8:16 8:32 1/2 1 AA", "#log args"),
            ("2 8:16 8:32 1/2 1 AA 3 disk 8:64", "log arg 2"),
            ("2 8:16 8:32 1/2 1 AA 1 core extra", "end"),
        ];
        for (s, field) in mirror {
            assert_eq!(field_of(MirrorStatus::parse(s).expect_err(s)), field, "{s}");
        }
        let raid = [
            ("", "raid type"),
            ("raid1", "#devs"),
            ("raid1 two AA 1/2", "#devs"),
            ("raid1 2", "health"),
            ("raid1 2 A 1/2 idle 0", "health"),
            ("raid1 2 AX 1/2 idle 0", "health"),
            ("raid1 2 AA", "sync ratio"),
            ("raid1 2 AA 1-2 idle", "sync ratio"),
            ("raid1 2 AA 1/2 idle x", "mismatch count"),
            ("raid1 2 AA 1/2 idle 0 y", "data offset"),
        ];
        for (s, field) in raid {
            assert_eq!(field_of(RaidStatus::parse(s).expect_err(s)), field, "{s}");
        }
        let snap = [
            ("", "usage"),
            ("Unknown", "usage"),
            ("16/x 8", "usage"),
            ("16/32 x", "metadata sectors"),
            ("16/32 8 9", "end"),
        ];
        for (s, field) in snap {
            assert_eq!(
                field_of(SnapshotStatus::parse(s).expect_err(s)),
                field,
                "{s}"
            );
        }
        let e = MirrorStatus::parse("2 8:16 8:32 1/2 1 A 1 core").unwrap_err();
        assert!(e.to_string().contains("mirror status"), "{e}");
    }

    #[test]
    fn percent_floors_and_saves_100_for_sync() {
        assert_eq!(percent_of(0, 0, false), 0);
        assert_eq!(percent_of(999, 1000, false), 99);
        assert_eq!(percent_of(1000, 1000, false), 99);
        assert_eq!(percent_of(1000, 1000, true), 100);
        assert_eq!(percent_of(u64::MAX - 1, u64::MAX, false), 99);
        assert_eq!(percent_of(5, 1000, false), 0);
    }
}
