//! The signature layer of plans and approvals (DESIGN.md §5): plans are signed in the
//! [`PLAN_NAMESPACE`], approvals in the [`APPROVE_NAMESPACE`], both as SSHSIG (byte for byte what
//! `ssh-keygen -Y sign` writes), and verified against an OpenSSH allowed-signers file
//! (`inventory/allowed_signers`), so the same keys serve Git, Forgejo and homelab.
//!
//! [`sshsig`] owns the signing side (loading a private key, producing and splitting armored
//! signatures); [`signers`] owns the verifying side (the allowed-signers file and the checks a
//! signature must pass).

pub mod error;
pub mod signers;
pub mod sshsig;

pub use error::{SignersError, VerifyError};
pub use signers::{AllowedSigners, Verified};
pub use sshsig::{split_armored, SignError, SigningKey, APPROVE_NAMESPACE, PLAN_NAMESPACE};

pub mod agent;
pub mod keys;
pub mod policy;

/// A key that signs plans and approvals: a private key file, or a key held by ssh-agent.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per process; boxing buys nothing
pub enum Signer {
    File(SigningKey),
    Agent(agent::AgentKey),
}

impl Signer {
    /// Loads the key at `path`: a private key file, or a public key (`.pub`, or any file that
    /// holds an OpenSSH public key line) whose private half ssh-agent holds.
    pub fn load(path: &std::path::Path, passphrase: Option<&str>) -> Result<Signer, SignError> {
        if let Ok(text) = std::fs::read_to_string(path) {
            if looks_public(&text) {
                return agent::AgentKey::new(&text).map(Signer::Agent);
            }
        }
        SigningKey::load(path, passphrase).map(Signer::File)
    }

    /// A public key written out (`key::ssh-ed25519 AAAA…` in Git's `user.signingkey`): ssh-agent.
    pub fn from_public(text: &str) -> Result<Signer, SignError> {
        agent::AgentKey::new(text).map(Signer::Agent)
    }

    pub fn sign(&self, namespace: &str, message: &[u8]) -> Result<String, SignError> {
        match self {
            Signer::File(k) => k.sign(namespace, message),
            Signer::Agent(k) => k.sign(namespace, message),
        }
    }

    pub fn fingerprint(&self) -> String {
        match self {
            Signer::File(k) => k.fingerprint(),
            Signer::Agent(k) => k.fingerprint(),
        }
    }

    pub fn public_key_openssh(&self) -> String {
        match self {
            Signer::File(k) => k.public_key_openssh(),
            Signer::Agent(k) => k.public_key_openssh(),
        }
    }
}

fn looks_public(text: &str) -> bool {
    let first = text.trim_start();
    [
        "ssh-ed25519 ",
        "ssh-rsa ",
        "ecdsa-sha2-nistp256 ",
        "ecdsa-sha2-nistp384 ",
        "ecdsa-sha2-nistp521 ",
    ]
    .iter()
    .any(|p| first.starts_with(p))
}
