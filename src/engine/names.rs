//! Names of the device-mapper devices the engine owns. All carry [`crate::dm::NAME_PREFIX`].
//!
//! | device | name suffix | table |
//! |---|---|---|
//! | shim under a storage object | `so-NAME` | linear / mirror / raid / snapshot-origin / snapshot |
//! | relationship record | `relCT-SOURCE` | 1 sector `linear` over the target's raw device |
//! | dm-raid metadata (Async) | `meta0-SOURCE`, `meta1-SOURCE` | linear over the target's tail |

use crate::dm::DmName;
use crate::error::Result;
use crate::service::CopyType;

pub fn shim(object: &str) -> Result<DmName> {
    crate::names::validate_object_name(object)?;
    DmName::new(&format!("so-{object}"))
}

/// The storage object name of a shim, or None if `name` is not a shim.
pub fn shim_object(name: &DmName) -> Option<String> {
    name.suffix().strip_prefix("so-").map(str::to_string)
}

pub fn tag(ct: CopyType, source: &str) -> Result<DmName> {
    crate::names::validate_object_name(source)?;
    DmName::new(&format!("rel{}-{source}", ct.value()))
}

/// (copy type, source object name) of a relationship record device.
pub fn parse_tag(name: &DmName) -> Option<(CopyType, String)> {
    let rest = name.suffix().strip_prefix("rel")?;
    let (ct, src) = rest.split_once('-')?;
    let ct = CopyType::from_value(ct.parse().ok()?)?;
    Some((ct, src.to_string()))
}

pub fn meta(index: usize, source: &str) -> Result<DmName> {
    crate::names::validate_object_name(source)?;
    DmName::new(&format!("meta{index}-{source}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_limits() {
        let t = tag(CopyType::UnSyncAssoc, "db-01").unwrap();
        assert_eq!(t.as_str(), "lio-replica-v1-rel4-db-01");
        assert_eq!(parse_tag(&t), Some((CopyType::UnSyncAssoc, "db-01".into())));
        let s = shim("db-01").unwrap();
        assert_eq!(shim_object(&s).as_deref(), Some("db-01"));
        assert_eq!(shim_object(&t), None);
        // the longest object name still fits the kernel's 128-byte limit
        let long = "a".repeat(64);
        assert!(
            shim(&long).is_ok() && tag(CopyType::Sync, &long).is_ok() && meta(1, &long).is_ok()
        );
        assert!(shim("../x").is_err());
    }
}
