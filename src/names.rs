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

/// A storage element as the API names it: `/backstores/PLUGIN/NAME` or `PLUGIN/NAME`.
/// Returns (plugin, name). The plugin is one of targetcli's names
/// (block, fileio, ramdisk, pscsi, user:*).
pub fn parse_element(element: &str) -> Result<(String, String)> {
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
    let plugin_ok = matches!(plugin, "block" | "fileio" | "ramdisk" | "pscsi")
        || plugin.strip_prefix("user:").is_some_and(|h| {
            !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
    if !plugin_ok {
        return Err(Error::Invalid(format!(
            "element {element:?}: unknown backstore type {plugin:?} (block, fileio, ramdisk, pscsi, user:HANDLER)"
        )));
    }
    validate_object_name(name)?;
    Ok((plugin.to_string(), name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_forms() {
        assert_eq!(
            parse_element("/backstores/block/disk0").unwrap(),
            ("block".into(), "disk0".into())
        );
        assert_eq!(
            parse_element("block/disk0").unwrap(),
            ("block".into(), "disk0".into())
        );
        assert_eq!(parse_element("fileio/f1").unwrap().0, "fileio");
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
            let e = parse_element(bad).unwrap_err();
            assert!(matches!(e, Error::Invalid(_)), "{bad:?}: {e}");
        }
        let long = format!("block/{}", "a".repeat(65));
        assert!(parse_element(&long).is_err());
        assert!(validate_object_name(&"a".repeat(64)).is_ok());
    }
}
