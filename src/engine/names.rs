//! Names of the device-mapper devices the engine owns. All carry [`crate::dm::NAME_PREFIX`].
//!
//! | device | name suffix | table |
//! |---|---|---|
//! | shim under a storage object | `so-NAME` | linear; a source: snapshot-origin (snapshot-merge while restoring); a snapshot's target: snapshot |
//! | a source's replicating device | `real-NAME` | linear / mirror / raid, under the source's snapshot-origin |
//! | relationship record | `recCT-TARGET` | 1 sector `linear` over the target's raw device, 1 over the source's |
//! | dm-raid metadata (Async) | `meta0-SOURCE`, `meta1-SOURCE` | linear over the target's tail |
//! | a full copy beside an Async mirror | `copy-SOURCE` | mirror of the source's disk and the copy's, under the raid1's source leg |
//!
//! A target is in at most one relationship, so the record is named after it; a source may be
//! in many.

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

/// The device under a source's snapshot-origin that holds its replicating table.
pub fn real(source: &str) -> Result<DmName> {
    crate::names::validate_object_name(source)?;
    DmName::new(&format!("real-{source}"))
}

/// The storage object name of a source's real device, or None.
pub fn real_object(name: &DmName) -> Option<String> {
    name.suffix().strip_prefix("real-").map(str::to_string)
}

/// The record of the relationship whose target is `target`.
pub fn tag(ct: CopyType, target: &str) -> Result<DmName> {
    crate::names::validate_object_name(target)?;
    DmName::new(&format!("rec{}-{target}", ct.value()))
}

/// (copy type, target object name) of a relationship record device.
pub fn parse_tag(name: &DmName) -> Option<(CopyType, String)> {
    let rest = name.suffix().strip_prefix("rec")?;
    let (ct, tgt) = rest.split_once('-')?;
    let ct = CopyType::from_value(ct.parse().ok()?)?;
    Some((ct, tgt.to_string()))
}

/// A record device of the layout before sources could be in several relationships
/// (`relCT-SOURCE`, the source's shim carrying the replicating table itself).
pub fn is_old_record(name: &DmName) -> bool {
    name.suffix()
        .strip_prefix("rel")
        .and_then(|r| r.split_once('-'))
        .is_some_and(|(ct, _)| ct.parse::<u16>().is_ok())
}

/// The device a full copy of an Async-mirrored source replicates in: the raid1's source leg
/// (see [`super::clone`]).
pub fn copy(source: &str) -> Result<DmName> {
    crate::names::validate_object_name(source)?;
    DmName::new(&format!("copy-{source}"))
}

/// The storage object name of a source's copy device, or None.
pub fn copy_object(name: &DmName) -> Option<String> {
    name.suffix().strip_prefix("copy-").map(str::to_string)
}

pub fn meta(index: usize, source: &str) -> Result<DmName> {
    crate::names::validate_object_name(source)?;
    DmName::new(&format!("meta{index}-{source}"))
}

/// Where the daemon keeps the files of its loop-backed metadata devices.
pub fn meta_dir(state_dir: &std::path::Path) -> std::path::PathBuf {
    state_dir.join("raid-meta")
}

/// The file behind metadata device `name` (a validated name: one path component).
pub fn meta_file(state_dir: &std::path::Path, name: &DmName) -> std::path::PathBuf {
    meta_dir(state_dir).join(format!("{}.img", name.suffix()))
}

/// The source object name of a raid metadata device, or None.
pub fn meta_object(name: &DmName) -> Option<String> {
    let rest = name.suffix().strip_prefix("meta")?;
    let (k, source) = rest.split_once('-')?;
    k.parse::<usize>().ok().map(|_| source.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_limits() {
        let t = tag(CopyType::UnSyncAssoc, "db-01").unwrap();
        assert_eq!(t.as_str(), "lio-replica-v1-rec4-db-01");
        assert!(!is_old_record(&t));
        assert!(is_old_record(&DmName::new("rel3-db").unwrap()));
        let r = real("db-01").unwrap();
        assert_eq!(real_object(&r).as_deref(), Some("db-01"));
        assert_eq!(shim_object(&r), None);
        let c = copy("db-01").unwrap();
        assert_eq!(copy_object(&c).as_deref(), Some("db-01"));
        assert_eq!(real_object(&c), None);
        let m = meta(1, "db-01").unwrap();
        assert_eq!(meta_object(&m).as_deref(), Some("db-01"));
        assert_eq!(meta_object(&c), None);
        assert_eq!(parse_tag(&t), Some((CopyType::UnSyncAssoc, "db-01".into())));
        let s = shim("db-01").unwrap();
        assert_eq!(shim_object(&s).as_deref(), Some("db-01"));
        assert_eq!(shim_object(&t), None);
        // the longest object name still fits the kernel's 128-byte limit
        let long = "a".repeat(64);
        assert!(
            shim(&long).is_ok()
                && tag(CopyType::Sync, &long).is_ok()
                && meta(1, &long).is_ok()
                && real(&long).is_ok()
                && copy(&long).is_ok()
        );
        assert!(shim("../x").is_err());
    }
}
