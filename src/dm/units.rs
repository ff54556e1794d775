//! Units of device-mapper work: a block device number ([`Devno`]) and a count of 512-byte
//! sectors ([`Sectors`]).
//!
//! Our own small types rather than the `devicemapper` crate's `Device` and `Sectors`: ours
//! print the way table lines and the state file write them (`253:4`, a bare `2048`), serialize
//! as those same forms (a `Devno` as its `major:minor` string, so it can key a JSON object;
//! `Sectors` as a plain number), order numerically and convert to and from bytes as `u64`.
//! The crate's `Device` has no serde and no ordering, and its `Sectors` prints a unit suffix
//! and counts bytes in `u128`. [`Devno`] converts to and from the crate's `Device` for the
//! ioctls.

use crate::error::{Error, Result};
use std::fmt;
use std::str::FromStr;

/// The size of a sector, the unit of every device-mapper table.
pub const SECTOR_SIZE: u64 = 512;

/// A block device number, `major:minor` as table lines write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Devno {
    pub major: u32,
    pub minor: u32,
}

impl Devno {
    pub fn new(major: u32, minor: u32) -> Devno {
        Devno { major, minor }
    }

    /// From a `dev_t` (`st_rdev` of a block node).
    pub fn from_dev_t(rdev: u64) -> Devno {
        // the kernel's majors and minors fit 32 bits (12 and 20 of them)
        Devno {
            major: nix::sys::stat::major(rdev) as u32,
            minor: nix::sys::stat::minor(rdev) as u32,
        }
    }

    /// The `dev_t` of this number (to make a node for it).
    pub fn dev_t(self) -> u64 {
        nix::sys::stat::makedev(u64::from(self.major), u64::from(self.minor))
    }

    /// Whether a table line's device field (a `major:minor` or a path) is this number
    /// written out. A path is never taken for it.
    pub fn is_written_as(self, field: &str) -> bool {
        field.parse::<Devno>().ok() == Some(self)
    }
}

impl fmt::Display for Devno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

impl FromStr for Devno {
    type Err = Error;
    /// `major:minor`, decimal numbers only.
    fn from_str(s: &str) -> Result<Devno> {
        let num = |t: &str| -> Option<u32> {
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            t.parse().ok()
        };
        s.split_once(':')
            .and_then(|(ma, mi)| Some(Devno::new(num(ma)?, num(mi)?)))
            .ok_or_else(|| Error::Invalid(format!("{s:?} is not a device number major:minor")))
    }
}

impl From<devicemapper::Device> for Devno {
    fn from(d: devicemapper::Device) -> Devno {
        Devno::new(d.major, d.minor)
    }
}

impl From<Devno> for devicemapper::Device {
    fn from(d: Devno) -> devicemapper::Device {
        devicemapper::Device {
            major: d.major,
            minor: d.minor,
        }
    }
}

impl serde::Serialize for Devno {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Devno {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Devno, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A count (or an offset) of 512-byte sectors. Prints and serializes as the bare number.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct Sectors(pub u64);

impl Sectors {
    /// The whole sectors in `bytes` (a partial last sector is not counted).
    pub const fn from_bytes(bytes: u64) -> Sectors {
        Sectors(bytes / SECTOR_SIZE)
    }

    /// The bytes in these sectors.
    pub const fn bytes(self) -> u64 {
        self.0 * SECTOR_SIZE
    }
}

impl fmt::Display for Sectors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for Sectors {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> std::result::Result<Sectors, Self::Err> {
        s.parse().map(Sectors)
    }
}

impl From<u64> for Sectors {
    fn from(n: u64) -> Sectors {
        Sectors(n)
    }
}

impl std::ops::Add for Sectors {
    type Output = Sectors;
    fn add(self, o: Sectors) -> Sectors {
        Sectors(self.0 + o.0)
    }
}

impl std::ops::AddAssign for Sectors {
    fn add_assign(&mut self, o: Sectors) {
        self.0 += o.0;
    }
}

impl std::ops::Sub for Sectors {
    type Output = Sectors;
    fn sub(self, o: Sectors) -> Sectors {
        Sectors(self.0 - o.0)
    }
}

impl std::ops::Mul<u64> for Sectors {
    type Output = Sectors;
    fn mul(self, n: u64) -> Sectors {
        Sectors(self.0 * n)
    }
}

impl std::iter::Sum for Sectors {
    fn sum<I: Iterator<Item = Sectors>>(it: I) -> Sectors {
        Sectors(it.map(|s| s.0).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devno_forms() {
        let d: Devno = "253:16".parse().unwrap();
        assert_eq!(d, Devno::new(253, 16));
        assert_eq!(d.to_string(), "253:16");
        for bad in [
            "", "253", "253:", ":1", "a:1", "1:2:3", "-1:2", "+1:2", " 1:2", "/dev/vdb",
        ] {
            assert!(bad.parse::<Devno>().is_err(), "{bad:?}");
        }
        assert!(d.is_written_as("253:16"));
        assert!(!d.is_written_as("/dev/dm-16"));
        assert_eq!(Devno::from_dev_t(d.dev_t()), d);
        let dm: devicemapper::Device = d.into();
        assert_eq!(Devno::from(dm), d);
        // numbers order numerically, not as text
        assert!(Devno::new(8, 0) < Devno::new(253, 0));
    }

    #[test]
    fn devno_serializes_as_its_string() {
        let d = Devno::new(8, 16);
        assert_eq!(serde_json::to_string(&d).unwrap(), r#""8:16""#);
        assert_eq!(serde_json::from_str::<Devno>(r#""8:16""#).unwrap(), d);
        assert!(serde_json::from_str::<Devno>(r#""8-16""#).is_err());
        let m: std::collections::BTreeMap<Devno, u32> =
            serde_json::from_str(r#"{"253:1": 1, "8:0": 2}"#).unwrap();
        assert_eq!(m[&Devno::new(8, 0)], 2);
        assert_eq!(serde_json::to_string(&m).unwrap(), r#"{"8:0":2,"253:1":1}"#);
    }

    #[test]
    fn sectors_and_bytes() {
        assert_eq!(Sectors::from_bytes(4096), Sectors(8));
        assert_eq!(Sectors::from_bytes(4097), Sectors(8));
        assert_eq!(Sectors(8).bytes(), 4096);
        assert_eq!(Sectors(2048).to_string(), "2048");
        assert_eq!(serde_json::to_string(&Sectors(7)).unwrap(), "7");
        assert_eq!(Sectors(3) + Sectors(4), Sectors(7));
        assert_eq!(Sectors(7) - Sectors(4), Sectors(3));
    }
}
