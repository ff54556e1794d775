//! Validation of every name that becomes a path component or a device-mapper name.

use crate::error::{Error, Result};

/// Longest configfs directory name we accept (LIO itself allows more; targetcli uses far less).
pub const MAX_NAME: usize = 64;

/// A storage object / backstore name as targetcli accepts it: `[A-Za-z0-9_.:-]`, not starting
/// with `.` or `-`, 1..=64 bytes. Anything else (`/`, `..`, NUL, spaces) is refused.
pub fn validate_object_name(name: &str) -> Result<()> {
    validate_component(name, "storage object name", |c| {
        c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')
    })
}

/// A component of a configfs path read from the kernel or given by a user (IQN, tpgt_N, lun_N,
/// portal `IP:PORT`, ACL initiator name). Allows `[A-Za-z0-9_.:,@\[\]-]`.
pub fn validate_component(name: &str, what: &str, ok: impl Fn(char) -> bool) -> Result<()> {
    if name.is_empty() {
        return Err(Error::Invalid(format!("{what} is empty")));
    }
    if name.len() > MAX_NAME.max(223) || (what == "storage object name" && name.len() > MAX_NAME) {
        return Err(Error::Invalid(format!(
            "{what} {name:?} is too long ({} bytes)",
            name.len()
        )));
    }
    if name == "." || name == ".." || name.starts_with('.') || name.starts_with('-') {
        return Err(Error::Invalid(format!(
            "{what} {name:?} may not start with '.' or '-'"
        )));
    }
    if let Some(c) = name.chars().find(|c| !ok(*c)) {
        return Err(Error::Invalid(format!(
            "{what} {name:?} contains the character {c:?}"
        )));
    }
    Ok(())
}

/// Any directory name that we read back from configfs before using it as a path component.
pub fn validate_configfs_component(name: &str) -> Result<()> {
    validate_component(name, "configfs name", |c| {
        c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-' | ',' | '@' | '[' | ']')
    })
}

/// A backstore plugin, by targetcli's name. The one place that says what each plugin is: its
/// name, the prefix of its HBA directories under `core/`, and what it can do.
///
/// The variants are in the order of their names, so plugins sort as their names do.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Plugin {
    /// `iblock`: a block device. The only plugin whose objects can be replicated, because
    /// their device can be put under device-mapper.
    Block,
    /// `fileio`: a file (or a block device through the page cache).
    Fileio,
    /// `pscsi`: a SCSI device passed through.
    Pscsi,
    /// `rd_mcp`: memory.
    Ramdisk,
    /// `user`: a TCMU handler in user space, `user:HANDLER`. configfs does not show the
    /// handler in the directory name, so objects read from it have `None`.
    User(Option<String>),
}

impl Plugin {
    /// Every kind of plugin (a user plugin without handler stands for them all).
    pub const KINDS: [Plugin; 5] = [
        Plugin::Block,
        Plugin::Fileio,
        Plugin::Pscsi,
        Plugin::Ramdisk,
        Plugin::User(None),
    ];

    /// targetcli's name of the kind, without a user handler.
    pub fn name(&self) -> &'static str {
        match self {
            Plugin::Block => "block",
            Plugin::Fileio => "fileio",
            Plugin::Pscsi => "pscsi",
            Plugin::Ramdisk => "ramdisk",
            Plugin::User(_) => "user",
        }
    }

    /// The prefix of its HBA directories (`iblock` for `iblock_0`).
    pub fn hba_prefix(&self) -> &'static str {
        match self {
            Plugin::Block => "iblock",
            Plugin::Fileio => "fileio",
            Plugin::Pscsi => "pscsi",
            Plugin::Ramdisk => "rd_mcp",
            Plugin::User(_) => "user",
        }
    }

    /// The plugin of an HBA directory prefix.
    pub fn from_hba_prefix(prefix: &str) -> Option<Plugin> {
        Self::KINDS.into_iter().find(|p| p.hba_prefix() == prefix)
    }

    /// Whether `other` is the same kind of plugin (user plugins of any handler are).
    pub fn same_kind(&self, other: &Plugin) -> bool {
        self.name() == other.name()
    }

    /// Whether its storage objects can be replicated (put on device-mapper).
    pub fn can_replicate(&self) -> bool {
        matches!(self, Plugin::Block)
    }

    /// The name as configfs listings show it: [`FromStr`](std::str::FromStr) forms, and
    /// `user` alone.
    pub fn parse_listed(s: &str) -> Result<Plugin> {
        match s {
            "user" => Ok(Plugin::User(None)),
            _ => s.parse(),
        }
    }
}

impl std::fmt::Display for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Plugin::User(Some(h)) => write!(f, "user:{h}"),
            p => f.write_str(p.name()),
        }
    }
}

impl std::str::FromStr for Plugin {
    type Err = Error;
    /// What the API takes: block, fileio, ramdisk, pscsi or user:HANDLER.
    fn from_str(s: &str) -> Result<Plugin> {
        if let Some(h) = s.strip_prefix("user:") {
            if !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Ok(Plugin::User(Some(h.to_string())));
            }
        }
        Self::KINDS
            .into_iter()
            .find(|p| !matches!(p, Plugin::User(_)) && p.name() == s)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "unknown backstore type {s:?} (block, fileio, ramdisk, pscsi, user:HANDLER)"
                ))
            })
    }
}

impl serde::Serialize for Plugin {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Plugin {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Plugin, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Plugin::parse_listed(&s).map_err(serde::de::Error::custom)
    }
}

/// A storage element: a backstore plugin and a storage object name. Shown as
/// `/backstores/PLUGIN/NAME`; parsed from that form or from `PLUGIN/NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Element {
    plugin: Plugin,
    name: String,
}

impl Element {
    /// An element named by a user: the name must be a valid storage object name.
    pub fn new(plugin: Plugin, name: &str) -> Result<Element> {
        validate_object_name(name)?;
        Ok(Element {
            plugin,
            name: name.to_string(),
        })
    }

    /// The element of an object that exists already (read from configfs, or named by one of
    /// our devices), whose name was checked when it was read.
    pub(crate) fn existing(plugin: Plugin, name: &str) -> Element {
        Element {
            plugin,
            name: name.to_string(),
        }
    }

    /// `/backstores/PLUGIN/NAME` or `PLUGIN/NAME`.
    pub fn parse(element: &str) -> Result<Element> {
        let rest = element.strip_prefix("/backstores/").unwrap_or(element);
        let mut parts = rest.split('/');
        let (plugin, name) = match (parts.next(), parts.next(), parts.next()) {
            (Some(p), Some(n), None) if !p.is_empty() => (p, n),
            _ => {
                return Err(Error::Invalid(format!(
                    "element {element:?} is not of the form /backstores/PLUGIN/NAME"
                )))
            }
        };
        let Ok(plugin) = plugin.parse::<Plugin>() else {
            return Err(Error::Invalid(format!(
                "element {element:?}: unknown backstore type {plugin:?} (block, fileio, ramdisk, pscsi, user:HANDLER)"
            )));
        };
        Element::new(plugin, name)
    }

    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl std::fmt::Display for Element {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "/backstores/{}/{}", self.plugin, self.name)
    }
}

impl std::str::FromStr for Element {
    type Err = Error;
    fn from_str(s: &str) -> Result<Element> {
        Element::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(p: Plugin, n: &str) -> Element {
        Element::new(p, n).unwrap()
    }

    #[test]
    fn element_forms() {
        assert_eq!(
            Element::parse("/backstores/block/disk0").unwrap(),
            el(Plugin::Block, "disk0")
        );
        assert_eq!(
            Element::parse("block/disk0").unwrap(),
            el(Plugin::Block, "disk0")
        );
        assert_eq!(
            *Element::parse("fileio/f1").unwrap().plugin(),
            Plugin::Fileio
        );
        let u = Element::parse("user:rbd/u1").unwrap();
        assert_eq!(*u.plugin(), Plugin::User(Some("rbd".into())));
        assert_eq!(u.to_string(), "/backstores/user:rbd/u1");
        assert_eq!(
            el(Plugin::Block, "disk0").to_string(),
            "/backstores/block/disk0"
        );
        assert_eq!(u.to_string().parse::<Element>().unwrap(), u);
    }

    #[test]
    fn plugins() {
        for p in Plugin::KINDS {
            assert_eq!(Plugin::from_hba_prefix(p.hba_prefix()), Some(p.clone()));
            assert_eq!(Plugin::parse_listed(&p.to_string()).unwrap(), p);
            assert_eq!(p.can_replicate(), p == Plugin::Block);
        }
        assert_eq!(Plugin::from_hba_prefix("rd_mcp"), Some(Plugin::Ramdisk));
        assert_eq!(Plugin::from_hba_prefix("nope"), None);
        // the API names a user plugin with its handler; a listing shows `user`
        assert!("user".parse::<Plugin>().is_err());
        assert!("user:".parse::<Plugin>().is_err());
        assert!("user:a-b".parse::<Plugin>().is_err());
        assert!(Plugin::User(Some("rbd".into())).same_kind(&Plugin::User(None)));
        assert_eq!(
            serde_json::to_string(&Plugin::User(None)).unwrap(),
            r#""user""#
        );
        assert_eq!(
            serde_json::from_str::<Plugin>(r#""block""#).unwrap(),
            Plugin::Block
        );
        // sorted as their names are
        let mut names: Vec<&str> = Plugin::KINDS.iter().map(Plugin::name).collect();
        names.sort();
        assert_eq!(
            names,
            Plugin::KINDS.iter().map(Plugin::name).collect::<Vec<_>>()
        );
    }

    #[test]
    fn hostile_names_refused() {
        for bad in [
            "block/../x",
            "block/a b",
            "block/a\0b",
            "block/..",
            "block/.hidden",
            "block/",
            "/backstores/block/a/b",
            "nosuch/x",
            "disk0",
        ] {
            let e = Element::parse(bad).unwrap_err();
            assert!(matches!(e, Error::Invalid(_)), "{bad:?}: {e}");
        }
        let long = format!("block/{}", "a".repeat(65));
        assert!(Element::parse(&long).is_err());
        assert!(validate_object_name(&"a".repeat(64)).is_ok());
    }
}
