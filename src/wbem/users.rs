//! The CIM server's accounts: a file of `NAME:HASH` lines, each hash an Argon2id PHC string
//! (salted, deliberately slow), managed by `lio-replica cim-user` as OpenPegasus's `cimuser`
//! manages its own. The file must be the daemon's user's alone (mode 0600 or stricter): the
//! server refuses every login while it is not.

use anyhow::{anyhow, bail, Context};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// Where `serve` and `cim-user` look unless told otherwise.
pub const DEFAULT_USERS_FILE: &str = "/etc/lio-replica/cim-users";
/// Longer passwords are refused, so that a login cannot make the hash work on megabytes.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// A user name: 1 to 64 of `A-Z a-z 0-9 . _ -`, not starting with `-` or `.`.
pub fn validate_user(name: &str) -> anyhow::Result<()> {
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !name.starts_with(['-', '.']);
    if ok {
        Ok(())
    } else {
        bail!("invalid user name {name:?}: 1 to 64 of A-Z a-z 0-9 . _ - (not starting with - or .)")
    }
}

/// 16 random bytes from the kernel.
fn new_salt() -> anyhow::Result<SaltString> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .context("reading /dev/urandom for a salt")?;
    SaltString::encode_b64(&bytes).map_err(|e| anyhow!("encoding the salt: {e}"))
}

fn hasher() -> Argon2<'static> {
    // Argon2id with the crate's defaults (19 MiB, 2 passes), OWASP's minimum
    Argon2::default()
}

fn parse(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(u, h)| (u.to_string(), h.to_string()))
        .collect()
}

/// Refuses a file others may read or write, or that belongs to another user.
fn check_private(path: &Path, meta: &std::fs::Metadata) -> anyhow::Result<()> {
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != euid {
        bail!(
            "{} belongs to uid {}, not to this process's uid {euid}",
            path.display(),
            meta.uid()
        );
    }
    if meta.mode() & 0o077 != 0 {
        bail!(
            "{} has mode {:o}: it must be readable by its owner only (chmod 600)",
            path.display(),
            meta.mode() & 0o7777
        );
    }
    Ok(())
}

fn read(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    match std::fs::metadata(path) {
        Ok(m) => check_private(path, &m)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(parse(&text))
}

/// Writes the accounts through a new file renamed over the old one, so a reader sees the old
/// list or the new, never half of one.
fn write(path: &Path, users: &[(String, String)]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.exists() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("cim-users"),
        std::process::id()
    ));
    let mut text =
        String::from("# lio-replica CIM accounts (lio-replica cim-user): NAME:ARGON2ID-HASH\n");
    for (u, h) in users {
        text.push_str(&format!("{u}:{h}\n"));
    }
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Reads a password from the first line of `input` (the newline is not part of it).
pub fn read_password(input: &mut impl std::io::BufRead) -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::Read::take(input, MAX_PASSWORD_BYTES as u64 + 2),
        &mut line,
    )
    .context("reading the password from standard input")?;
    let pw = line.strip_suffix('\n').unwrap_or(&line);
    let pw = pw.strip_suffix('\r').unwrap_or(pw);
    if pw.is_empty() {
        bail!("empty password: give it on standard input");
    }
    if pw.len() > MAX_PASSWORD_BYTES {
        bail!("the password is longer than {MAX_PASSWORD_BYTES} bytes");
    }
    Ok(pw.to_string())
}

/// `cim-user add`: adds `user`, or gives an existing one a new password.
pub fn add(path: &Path, user: &str, password: &str) -> anyhow::Result<bool> {
    validate_user(user)?;
    if password.is_empty() || password.len() > MAX_PASSWORD_BYTES {
        bail!("the password must be 1 to {MAX_PASSWORD_BYTES} bytes");
    }
    let salt = new_salt()?;
    let hash = hasher()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow!("hashing the password: {e}"))?
        .to_string();
    let mut users = read(path)?;
    let existed = users.iter().any(|(u, _)| u == user);
    users.retain(|(u, _)| u != user);
    users.push((user.to_string(), hash));
    write(path, &users)?;
    Ok(existed)
}

/// `cim-user remove`.
pub fn remove(path: &Path, user: &str) -> anyhow::Result<()> {
    validate_user(user)?;
    let mut users = read(path)?;
    let before = users.len();
    users.retain(|(u, _)| u != user);
    if users.len() == before {
        bail!("no CIM user {user} in {}", path.display());
    }
    write(path, &users)
}

/// `cim-user list`.
pub fn list(path: &Path) -> anyhow::Result<Vec<String>> {
    Ok(read(path)?.into_iter().map(|(u, _)| u).collect())
}

/// A file's modification time and size: what tells that it changed.
pub type Version = (SystemTime, u64);
/// (user, hash) pairs.
type Accounts = Vec<(String, String)>;

/// The accounts as the server checks them: the file is read again when it changes.
pub struct Users {
    path: PathBuf,
    cache: Mutex<Option<(Version, Accounts)>>,
    /// Held while a hash is checked: each check takes 19 MiB and tens of milliseconds, so
    /// logins arriving together are checked one after another, not all at once.
    hashing: Mutex<()>,
}

/// A hash to verify against when the user does not exist, so that the answer takes as long.
fn dummy_hash() -> &'static str {
    static H: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    H.get_or_init(|| {
        let Ok(salt) = new_salt() else {
            return String::new();
        };
        hasher()
            .hash_password(b"no such user", &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

impl Users {
    pub fn new(path: PathBuf) -> Users {
        Users {
            path,
            cache: Mutex::new(None),
            hashing: Mutex::new(()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's current modification time and size (what tells a change), or why the file
    /// cannot be used.
    pub fn version(&self) -> anyhow::Result<Version> {
        let m = std::fs::metadata(&self.path)
            .with_context(|| format!("no CIM accounts: {}", self.path.display()))?;
        check_private(&self.path, &m)?;
        Ok((m.modified()?, m.len()))
    }

    fn hash_of(&self, user: &str) -> anyhow::Result<Option<String>> {
        let version = self.version()?;
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if c.as_ref().is_none_or(|(v, _)| *v != version) {
            *c = Some((version, read(&self.path)?));
        }
        Ok(c.as_ref()
            .and_then(|(_, users)| users.iter().find(|(u, _)| u == user))
            .map(|(_, h)| h.clone()))
    }

    /// Whether `user` with `password` may log in. Errors are about the file, not the login.
    pub fn verify(&self, user: &str, password: &str) -> anyhow::Result<bool> {
        if password.len() > MAX_PASSWORD_BYTES {
            return Ok(false);
        }
        let stored = self.hash_of(user)?;
        let hash = stored.as_deref().unwrap_or_else(|| dummy_hash());
        let Ok(parsed) = PasswordHash::new(hash) else {
            return Err(anyhow!(
                "the hash of {user} in {} is damaged",
                self.path.display()
            ));
        };
        let ok = {
            let _one_at_a_time = self.hashing.lock().unwrap_or_else(|p| p.into_inner());
            hasher()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        };
        Ok(ok && stored.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_verify_remove_and_the_file_stays_private() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("etc/cim-users");
        assert!(!add(&f, "alice", "s3cret").unwrap());
        assert!(add(&f, "alice", "n3w").unwrap(), "a second add replaces");
        add(&f, "bob", "pw").unwrap();
        assert_eq!(list(&f).unwrap(), ["alice", "bob"]);
        let mode = std::fs::metadata(&f).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            !text.contains("n3w") && text.contains("alice:$argon2id$"),
            "{text}"
        );

        let users = Users::new(f.clone());
        assert!(users.verify("alice", "n3w").unwrap());
        assert!(!users.verify("alice", "s3cret").unwrap());
        assert!(!users.verify("carol", "pw").unwrap());
        remove(&f, "alice").unwrap();
        assert!(!users.verify("alice", "n3w").unwrap(), "a change is seen");
        assert!(remove(&f, "alice")
            .unwrap_err()
            .to_string()
            .contains("no CIM user alice"));

        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = users.verify("bob", "pw").unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }

    #[test]
    fn names_and_passwords_are_checked() {
        for bad in ["", "-x", ".x", "a:b", "a b", "a/b", &"x".repeat(65)] {
            assert!(validate_user(bad).is_err(), "{bad:?}");
        }
        validate_user("svc.smis-1_A").unwrap();
        let mut input: &[u8] = b"pw with spaces\r\nsecond line";
        assert_eq!(read_password(&mut input).unwrap(), "pw with spaces");
        let mut empty: &[u8] = b"\n";
        assert!(read_password(&mut empty).is_err());
        let long = "x".repeat(MAX_PASSWORD_BYTES + 1);
        let mut input = long.as_bytes();
        assert!(read_password(&mut input).is_err());
    }
}
