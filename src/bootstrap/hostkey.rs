//! First contact with a node: is its host key in the repository's `known_hosts`, what key does
//! it present (`ssh-keyscan`), what is that key's SHA-256 fingerprint, and writing it there once
//! somebody confirmed it. Host keys are always checked strictly afterwards (`transport::ssh`):
//! this module is the only way one gets into the file, and it never decides to trust one.
//!
//! Runs the system's `ssh-keygen -F` (the lookup OpenSSH itself does, hashed entries included)
//! and `ssh-keyscan`; fingerprints are computed with the ssh-key crate, as `ssh-keygen -lf`
//! prints them (`SHA256:<base64>`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ssh_key::{HashAlg, PublicKey};

/// A host key of a node: its `known_hosts` line and fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKey {
    /// `<host> <algorithm> <base64>`, as written to `known_hosts`.
    pub line: String,
    pub algorithm: String,
    /// `SHA256:<base64>`.
    pub fingerprint: String,
}

#[derive(Debug, thiserror::Error)]
pub enum HostKeyError {
    #[error("cannot run `{program}` (Debian package openssh-client): {source}")]
    Tool { program: &'static str, source: std::io::Error },
    #[error("`ssh-keygen -F {host}` cannot read {}: {stderr}", .known_hosts.display())]
    Lookup { host: String, known_hosts: PathBuf, stderr: String },
    #[error("`ssh-keyscan` got no host key from {host}: {stderr}")]
    NoKey { host: String, stderr: String },
    #[error("cannot write {}: {source}", .known_hosts.display())]
    Write { known_hosts: PathBuf, source: std::io::Error },
}

/// How `known_hosts` names a host: `address`, or `[address]:port` off port 22.
pub fn pattern(address: &str, port: u16) -> String {
    if port == 22 {
        address.to_owned()
    } else {
        format!("[{address}]:{port}")
    }
}

/// The keys `known_hosts` holds for the host (empty when none, or no file).
pub fn known(known_hosts: &Path, address: &str, port: u16) -> Result<Vec<HostKey>, HostKeyError> {
    if !known_hosts.exists() {
        return Ok(Vec::new());
    }
    let host = pattern(address, port);
    let out = Command::new("ssh-keygen")
        .arg("-F")
        .arg(&host)
        .arg("-f")
        .arg(known_hosts)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| HostKeyError::Tool { program: "ssh-keygen", source })?;
    // Exit 1 with no output: not found.
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        if stderr.is_empty() {
            return Ok(Vec::new());
        }
        return Err(HostKeyError::Lookup { host, known_hosts: known_hosts.to_path_buf(), stderr });
    }
    Ok(parse(&String::from_utf8_lossy(&out.stdout), &host))
}

/// The host keys the node presents, as `ssh-keyscan` fetches them (every type it offers).
pub fn scan(address: &str, port: u16) -> Result<Vec<HostKey>, HostKeyError> {
    let host = pattern(address, port);
    let out = Command::new("ssh-keyscan")
        .args(["-T", "10", "-p", &port.to_string(), "--", address])
        .stdin(Stdio::null())
        .output()
        .map_err(|source| HostKeyError::Tool { program: "ssh-keyscan", source })?;
    let keys = parse(&String::from_utf8_lossy(&out.stdout), &host);
    if keys.is_empty() {
        let stderr = String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("; ");
        let stderr = if stderr.is_empty() { "no answer".to_owned() } else { stderr };
        return Err(HostKeyError::NoKey { host, stderr });
    }
    Ok(keys)
}

/// Key lines (`<host> <algorithm> <base64>`, `#` comments and markers skipped) as host keys
/// of `host`: each is re-written from its parsed key, so nothing but a key reaches the file.
pub fn parse(text: &str, host: &str) -> Vec<HostKey> {
    let mut keys: Vec<HostKey> = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 3 || fields[0].starts_with('#') || fields[0].starts_with('@') {
            continue;
        }
        let Ok(key) = PublicKey::from_openssh(&format!("{} {}", fields[1], fields[2])) else {
            continue;
        };
        let Ok(openssh) = key.to_openssh() else { continue };
        let openssh: String = openssh.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        let k = HostKey {
            line: format!("{host} {openssh}"),
            algorithm: key.algorithm().to_string(),
            fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
        };
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys
}

/// The key whose fingerprint is `fingerprint` (`SHA256:...`, as `ssh-keygen -lf` prints it).
pub fn matching<'a>(keys: &'a [HostKey], fingerprint: &str) -> Option<&'a HostKey> {
    keys.iter().find(|k| k.fingerprint == fingerprint.trim())
}

/// Appends `keys` to `known_hosts` (created when missing), atomically: the file is either as
/// it was or has every key.
pub fn trust(known_hosts: &Path, keys: &[HostKey]) -> Result<(), HostKeyError> {
    let mut text = match std::fs::read_to_string(known_hosts) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(HostKeyError::Write { known_hosts: known_hosts.to_path_buf(), source })
        }
    };
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    for k in keys {
        text.push_str(&k.line);
        text.push('\n');
    }
    crate::files::write_atomic(known_hosts, text.as_bytes())
        .map_err(|source| HostKeyError::Write { known_hosts: known_hosts.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKN2Wj36200Cv6+VJxB9H5GN/JgC840IF9C/gp0XNfE0";

    #[test]
    fn patterns_name_the_port_off_22() {
        assert_eq!(pattern("10.0.0.2", 22), "10.0.0.2");
        assert_eq!(pattern("vps.example", 2222), "[vps.example]:2222");
    }

    #[test]
    fn scanned_lines_become_keys_with_the_fingerprint_ssh_keygen_prints() {
        let text = format!(
            "# 10.0.0.2:22 SSH-2.0-OpenSSH_9.2\n10.0.0.2 {ED25519}\n10.0.0.2 {ED25519}\ngarbage\n10.0.0.2 ssh-ed25519 bm90IGEga2V5\n"
        );
        let keys = parse(&text, "10.0.0.2");
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].line, format!("10.0.0.2 {ED25519}"));
        assert_eq!(keys[0].algorithm, "ssh-ed25519");
        // `ssh-keygen -lf` of the same line.
        let tmp = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(tmp.path(), format!("{ED25519}\n")).unwrap();
        let out = Command::new("ssh-keygen").arg("-lf").arg(tmp.path()).output().unwrap();
        let printed = String::from_utf8_lossy(&out.stdout);
        assert_eq!(printed.split_whitespace().nth(1), Some(keys[0].fingerprint.as_str()));
        assert!(matching(&keys, &keys[0].fingerprint).is_some());
        assert!(matching(&keys, "SHA256:AAAA").is_none());
    }

    #[test]
    fn trusted_keys_are_found_again_and_nothing_else_is() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_hosts");
        assert!(known(&file, "10.0.0.2", 22).unwrap().is_empty());
        std::fs::write(&file, "other ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKN2Wj36200Cv6+VJxB9H5GN/JgC840IF9C/gp0XNfE0").unwrap();
        let keys = parse(&format!("[10.0.0.2]:2222 {ED25519}"), "[10.0.0.2]:2222");
        trust(&file, &keys).unwrap();
        assert_eq!(known(&file, "10.0.0.2", 2222).unwrap(), keys);
        assert!(known(&file, "10.0.0.2", 22).unwrap().is_empty());
        assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 2);
    }
}
