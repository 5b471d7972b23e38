//! Finding and loading the key that signs a plan or an approval, and telling which principals
//! of `inventory/allowed_signers` it may sign as. The search order is the README's: `--key`,
//! `HOMELAB_SIGNING_KEY`, Git's `user.signingkey`; an encrypted key takes its passphrase from
//! `HOMELAB_KEY_PASSPHRASE` or, on a terminal, from a prompt with echo off.
//!
//! This module reads the environment, Git's config and the terminal; it decides nothing about
//! whether a plan may run (that is `policy`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use super::{AllowedSigners, SignError, Signer, SignersError, Verified, VerifyError};

/// Where a signing key comes from, in the order they are tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Flag(PathBuf),
    Env(PathBuf),
    GitConfig(PathBuf),
    /// Git's `user.signingkey = key::ssh-ed25519 AAAA…`: a key held by ssh-agent.
    GitConfigPublic(String),
}

/// Why no usable key was found, or what it may not sign.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Load(#[from] SignError),

    #[error(transparent)]
    Signers(#[from] SignersError),

    #[error(
        "the key {fingerprint} cannot sign in `{namespace}` per inventory/allowed_signers: {source}\n  \
         add a line `<you>@<host> namespaces=\"homelab-plan,homelab-approve\" {public_key}` to inventory/allowed_signers \
         (reviewed like any change) and plan again"
    )]
    NotAllowed { fingerprint: String, namespace: String, public_key: String, source: VerifyError },

    #[error("no key to {action} with: pass `--key ~/.ssh/id_ed25519`, or set HOMELAB_SIGNING_KEY")]
    Missing { action: &'static str },
}

/// `--key`, then `HOMELAB_SIGNING_KEY`, then Git's `user.signingkey` (a private key path, or a
/// public key whose private half ssh-agent holds).
pub fn find(repo: &Path, flag: Option<&PathBuf>) -> Option<KeySource> {
    if let Some(p) = flag {
        return Some(KeySource::Flag(p.clone()));
    }
    if let Some(p) = std::env::var_os("HOMELAB_SIGNING_KEY").filter(|v| !v.is_empty()) {
        return Some(KeySource::Env(PathBuf::from(p)));
    }
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["config", "--get", "user.signingkey"])
        .output()
        .ok()?;
    let value = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if value.is_empty() {
        return None;
    }
    if let Some(public) = value.strip_prefix("key::") {
        return Some(KeySource::GitConfigPublic(public.to_owned()));
    }
    if value.starts_with("ssh-") || value.starts_with("ecdsa-") {
        return Some(KeySource::GitConfigPublic(value));
    }
    let path = match value.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default().join(rest),
        None => PathBuf::from(value),
    };
    Some(KeySource::GitConfig(path))
}

/// Loads a key: a private key file, or a public key whose private half ssh-agent holds.
pub fn load(source: &KeySource) -> Result<Signer, KeyError> {
    let passphrase = std::env::var("HOMELAB_KEY_PASSPHRASE").ok();
    let signer = match source {
        KeySource::Flag(p) | KeySource::Env(p) | KeySource::GitConfig(p) => {
            match Signer::load(p, passphrase.as_deref()) {
                // Encrypted and no passphrase given: ask on the terminal, if there is one.
                Err(SignError::Encrypted { .. }) if passphrase.is_none() => match ask_passphrase(p)
                {
                    Some(typed) => Signer::load(p, Some(&typed)),
                    None => Signer::load(p, None),
                },
                other => other,
            }
        }
        KeySource::GitConfigPublic(text) => Signer::from_public(text),
    }?;
    Ok(signer)
}

/// Reads a passphrase from the terminal with echo off; `None` without a terminal.
fn ask_passphrase(path: &Path) -> Option<String> {
    use std::io::{BufRead, IsTerminal, Write};
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return None;
    }
    // Echo goes off before the prompt appears, so nothing typed after it is ever echoed.
    // SAFETY: tcgetattr/tcsetattr on fd 0 with a termios we own; restored before returning.
    let saved = unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(0, &mut t) != 0 {
            return None;
        }
        let saved = t;
        t.c_lflag &= !libc::ECHO;
        libc::tcsetattr(0, libc::TCSANOW, &t);
        saved
    };
    eprint!("passphrase for {}: ", path.display());
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    // SAFETY: as above.
    unsafe {
        libc::tcsetattr(0, libc::TCSANOW, &saved);
    }
    eprintln!();
    read.ok()?;
    Some(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// The repository's `inventory/allowed_signers`, as loaded with the homelab.
pub fn allowed_signers(text: &str) -> Result<AllowedSigners, KeyError> {
    Ok(AllowedSigners::parse(text, "inventory/allowed_signers")?)
}

/// What `key` may sign as in `namespace`: a probe signature verified like any other, so planner
/// identity and apply's checks can never disagree.
pub fn principals_of(
    key: &Signer,
    signers: &AllowedSigners,
    namespace: &str,
    now: SystemTime,
) -> Result<Verified, KeyError> {
    let probe = b"homelab: which principals is this key?";
    let sig = key.sign(namespace, probe)?;
    signers.verify(namespace, probe, &sig, now).map_err(|source| KeyError::NotAllowed {
        fingerprint: key.fingerprint(),
        namespace: namespace.to_owned(),
        public_key: key.public_key_openssh(),
        source,
    })
}
