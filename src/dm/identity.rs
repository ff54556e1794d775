//! What identifies a block device across reboots. Table lines name devices by `major:minor`,
//! which the kernel hands out again at every boot (and `/dev/sdb` may be another disk after
//! one); a table re-created at boot must find each device by something that stays with it.
//!
//! Read from sysfs (`/sys/dev/block/M:m`) and from udev's `/dev/disk/by-id` links when there
//! are any:
//!
//! | id | from |
//! |---|---|
//! | `by-id:NAME` | a `/dev/disk/by-id/NAME` link to the device (udev hosts) |
//! | `wwid:…` | `wwid` or `device/wwid` (SCSI, NVMe) |
//! | `serial:…` | `serial` or `device/serial` (virtio, some SCSI) |
//! | `dm-uuid:…` | `dm/uuid` (LVM volumes, our own devices) |
//! | `loop-file:…` | `loop/backing_file` (a loop device over one of the daemon's files) |
//!
//! A partition carries its disk's ids with `#partN` appended. A device matches a saved
//! identity when it shares one id with it and has the same size; a device with no id at all
//! is never matched (its kernel name alone could be another disk after a reboot).

use super::{Devno, Sectors};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The id prefix of a loop device's backing file.
pub const LOOP_FILE: &str = "loop-file:";

/// What is saved about a device a table refers to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskIdentity {
    /// Stable ids (see the module documentation), sorted.
    pub ids: Vec<String>,
    pub sectors: Sectors,
    /// The kernel's name when the identity was read (`sdb`, `vda`, `dm-3`): for messages only.
    pub kernel_name: String,
}

impl DiskIdentity {
    /// Whether `other` (a device present now) is the same device.
    pub fn matches(&self, other: &DiskIdentity) -> bool {
        self.sectors == other.sectors && self.ids.iter().any(|i| other.ids.contains(i))
    }

    /// The file behind a loop device, which a reboot must bind again before the device can
    /// be found.
    pub fn loop_file(&self) -> Option<&Path> {
        self.ids
            .iter()
            .find_map(|i| i.strip_prefix(LOOP_FILE))
            .map(Path::new)
    }

    /// `sdb (serial:abc, 2097152 sectors)`
    pub fn describe(&self) -> String {
        format!(
            "{} ({}{} sectors)",
            self.kernel_name,
            if self.ids.is_empty() {
                "no stable id, ".to_string()
            } else {
                format!("{}, ", self.ids.join(", "))
            },
            self.sectors
        )
    }
}

/// Reads identities from a sysfs tree and a by-id directory (injectable for tests).
#[derive(Debug, Clone)]
pub struct SysBlock {
    pub sysfs: PathBuf,
    pub by_id: PathBuf,
}

impl Default for SysBlock {
    fn default() -> Self {
        SysBlock {
            sysfs: PathBuf::from("/sys"),
            by_id: PathBuf::from("/dev/disk/by-id"),
        }
    }
}

fn read_trim(p: &Path) -> Option<String> {
    let s = fs::read_to_string(p).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

impl SysBlock {
    /// Device number -> by-id link names.
    fn by_id_links(&self) -> BTreeMap<Devno, Vec<String>> {
        let mut out: BTreeMap<Devno, Vec<String>> = BTreeMap::new();
        let Ok(rd) = fs::read_dir(&self.by_id) else {
            return out;
        };
        for e in rd.flatten() {
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            // follows the link: the block node it leads to
            if let Ok(m) = fs::metadata(e.path()) {
                use std::os::unix::fs::FileTypeExt;
                if m.file_type().is_block_device() {
                    out.entry(Devno::from_dev_t(m.rdev()))
                        .or_default()
                        .push(name);
                }
            }
        }
        out
    }

    fn identity_with(
        &self,
        devno: Devno,
        links: &BTreeMap<Devno, Vec<String>>,
    ) -> Result<DiskIdentity> {
        let sys = self.sysfs.join("dev/block").join(devno.to_string());
        let real = fs::canonicalize(&sys)
            .map_err(|_| Error::NotFound(format!("block device {devno} (no {})", sys.display())))?;
        let kernel_name = real
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let sectors = read_trim(&real.join("size"))
            .and_then(|s| s.parse::<Sectors>().ok())
            .ok_or_else(|| Error::Other(format!("cannot read the size of {}", real.display())))?;
        let mut ids = Vec::new();
        if let Some(u) = read_trim(&real.join("dm/uuid")) {
            ids.push(format!("dm-uuid:{u}"));
        }
        if let Some(f) = read_trim(&real.join("loop/backing_file")) {
            ids.push(format!("{LOOP_FILE}{f}"));
        }
        let (disk, suffix) = match read_trim(&real.join("partition")) {
            Some(n) => (
                real.parent().map(Path::to_path_buf).unwrap_or_default(),
                format!("#part{n}"),
            ),
            None => (real.clone(), String::new()),
        };
        for (file, kind) in [
            ("wwid", "wwid"),
            ("device/wwid", "wwid"),
            ("serial", "serial"),
            ("device/serial", "serial"),
        ] {
            if let Some(v) = read_trim(&disk.join(file)) {
                ids.push(format!("{kind}:{v}{suffix}"));
            }
        }
        for l in links.get(&devno).into_iter().flatten() {
            ids.push(format!("by-id:{l}"));
        }
        ids.sort();
        ids.dedup();
        Ok(DiskIdentity {
            ids,
            sectors,
            kernel_name,
        })
    }

    /// The identity of the block device `devno`.
    pub fn identity(&self, devno: Devno) -> Result<DiskIdentity> {
        self.identity_with(devno, &self.by_id_links())
    }

    /// The identities of several block devices, reading the by-id links once.
    pub fn identities(&self, devnos: &[Devno]) -> Result<Vec<DiskIdentity>> {
        let links = self.by_id_links();
        devnos
            .iter()
            .map(|d| self.identity_with(*d, &links))
            .collect()
    }

    /// Every block device now present that matches `id`.
    pub fn find(&self, id: &DiskIdentity) -> Result<Vec<Devno>> {
        let dir = self.sysfs.join("dev/block");
        let rd = fs::read_dir(&dir).map_err(|e| Error::io("read directory", &dir, e))?;
        let links = self.by_id_links();
        let mut out = Vec::new();
        for e in rd.flatten() {
            let Some(devno) = e.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            if let Ok(have) = self.identity_with(devno, &links) {
                if id.matches(&have) {
                    out.push(devno);
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn d(s: &str) -> Devno {
        s.parse().unwrap()
    }

    /// `sys/devices/…/block/NAME` with `size` and the given files, linked from
    /// `sys/dev/block/DEVNO`.
    fn disk(sys: &Path, devno: &str, rel: &str, size: u64, files: &[(&str, &str)]) {
        let d = sys.join("devices").join(rel);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("size"), format!("{size}\n")).unwrap();
        for (f, v) in files {
            let p = d.join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, format!("{v}\n")).unwrap();
        }
        fs::create_dir_all(sys.join("dev/block")).unwrap();
        symlink(&d, sys.join("dev/block").join(devno)).unwrap();
    }

    #[test]
    fn identities_from_sysfs() {
        let t = tempfile::tempdir().unwrap();
        let sys = t.path().join("sys");
        disk(
            &sys,
            "254:0",
            "virtio1/block/vda",
            2048,
            &[("serial", "lr-disk0")],
        );
        disk(
            &sys,
            "254:16",
            "virtio2/block/vdb",
            2048,
            &[("serial", "lr-disk1")],
        );
        disk(
            &sys,
            "254:17",
            "virtio2/block/vdb/vdb1",
            1024,
            &[("partition", "1")],
        );
        disk(
            &sys,
            "8:0",
            "pci/host0/block/sda",
            4096,
            &[("device/wwid", "naa.6001405abc")],
        );
        disk(&sys, "8:16", "pci/host1/block/sdb", 4096, &[]);
        disk(
            &sys,
            "253:3",
            "virtual/block/dm-3",
            512,
            &[("dm/uuid", "LVM-xyz")],
        );
        disk(
            &sys,
            "7:0",
            "virtual/block/loop0",
            8192,
            &[(
                "loop/backing_file",
                "/var/lib/lio-replica/raid-meta/meta0-a.img",
            )],
        );
        let sb = SysBlock {
            sysfs: sys.clone(),
            by_id: t.path().join("no-by-id"),
        };
        let vda = sb.identity(d("254:0")).unwrap();
        assert_eq!(vda.ids, vec!["serial:lr-disk0".to_string()]);
        assert_eq!(
            (vda.sectors, vda.kernel_name.as_str()),
            (Sectors(2048), "vda")
        );
        assert_eq!(
            sb.identity(d("254:17")).unwrap().ids,
            vec!["serial:lr-disk1#part1".to_string()]
        );
        assert_eq!(
            sb.identity(d("8:0")).unwrap().ids,
            vec!["wwid:naa.6001405abc".to_string()]
        );
        assert_eq!(
            sb.identity(d("253:3")).unwrap().ids,
            vec!["dm-uuid:LVM-xyz".to_string()]
        );
        let lo = sb.identity(d("7:0")).unwrap();
        assert_eq!(
            lo.ids,
            vec!["loop-file:/var/lib/lio-replica/raid-meta/meta0-a.img".to_string()]
        );
        assert_eq!(
            lo.loop_file(),
            Some(Path::new("/var/lib/lio-replica/raid-meta/meta0-a.img"))
        );
        assert_eq!(sb.identity(d("254:0")).unwrap().loop_file(), None);
        // a disk with nothing stable is never found again, even by its own name and size
        let sdb = sb.identity(d("8:16")).unwrap();
        assert!(sdb.ids.is_empty());
        assert!(sb.find(&sdb).unwrap().is_empty());
        assert!(matches!(sb.identity(d("9:9")), Err(Error::NotFound(_))));
        assert_eq!(
            sb.identities(&[d("254:0"), d("8:0")]).unwrap(),
            vec![vda.clone(), sb.identity(d("8:0")).unwrap()]
        );
        assert!(sb.identities(&[d("254:0"), d("9:9")]).is_err());

        // "after a reboot" the disks come back under other numbers: found by id and size
        let sys2 = t.path().join("sys2");
        disk(
            &sys2,
            "254:32",
            "virtio3/block/vdc",
            2048,
            &[("serial", "lr-disk0")],
        );
        disk(
            &sys2,
            "254:0",
            "virtio1/block/vda",
            2048,
            &[("serial", "lr-disk1")],
        );
        disk(
            &sys2,
            "254:16",
            "virtio2/block/vdb",
            4096,
            &[("serial", "lr-disk2")],
        );
        let sb2 = SysBlock {
            sysfs: sys2,
            by_id: t.path().join("no-by-id"),
        };
        assert_eq!(sb2.find(&vda).unwrap(), vec![d("254:32")]);
        // the same id with another size is another device
        let mut grown = vda.clone();
        grown.sectors = Sectors(4096);
        assert!(sb2.find(&grown).unwrap().is_empty());
        assert!(vda.describe().contains("serial:lr-disk0"));
    }
}
