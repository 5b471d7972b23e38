//! The signing side of SSHSIG (OpenSSH's `PROTOCOL.sshsig`): loading an OpenSSH private key,
//! signing a message in a namespace exactly as `ssh-keygen -Y sign` does (SHA-512 message hash,
//! armored output wrapped at 70 columns), and splitting a file of armored signatures into blocks.
//!
//! Key material and passphrases never appear in errors, `Debug` output or logs: a key is named by
//! its file and its public fingerprint only.

use std::fmt;
use std::path::{Path, PathBuf};

use ssh_key::private::KeypairData;
use ssh_key::{HashAlg, LineEnding, PrivateKey, PublicKey, SshSig};

use super::signers::VerifyError;

/// The namespace plans are signed in (`homelab plan`).
pub const PLAN_NAMESPACE: &str = "homelab-plan";
/// The namespace approvals are signed in (`homelab approve`).
pub const APPROVE_NAMESPACE: &str = "homelab-approve";

const BEGIN: &str = "-----BEGIN SSH SIGNATURE-----";
const END: &str = "-----END SSH SIGNATURE-----";
/// The width `ssh-keygen` wraps the base64 body at (and the width `SshSig::from_pem` expects).
const WRAP: usize = 70;

/// Why a key could not be loaded or a message could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("cannot read the signing key `{}`: {source}", .path.display())]
    Read { path: PathBuf, source: std::io::Error },

    #[error(
        "`{}` is not an OpenSSH private key ({reason}): expected a file starting with \
         `-----BEGIN OPENSSH PRIVATE KEY-----` as written by `ssh-keygen`; a key in another \
         format can be converted with `ssh-keygen -p -f {}`",
        .path.display(), .path.display()
    )]
    NotAKey { path: PathBuf, reason: String },

    #[error(
        "the signing key `{}` is encrypted with a passphrase and none was given: set \
         `HOMELAB_KEY_PASSPHRASE` to its passphrase, or use an unencrypted deploy key \
         (loading it into `ssh-agent` will work once agent support exists)",
        .path.display()
    )]
    Encrypted { path: PathBuf },

    #[error(
        "wrong passphrase for the signing key `{}`: check `HOMELAB_KEY_PASSPHRASE` (or the \
         passphrase typed at the prompt)",
        .path.display()
    )]
    WrongPassphrase { path: PathBuf },

    #[error("cannot decrypt the signing key `{}`: {reason}", .path.display())]
    Decrypt { path: PathBuf, reason: String },

    #[error(
        "the signing key `{}` is a `{algorithm}` key, which homelab cannot sign with: expected \
         an `ssh-ed25519`, `ecdsa-sha2-nistp256/384/521` or `ssh-rsa` key (hardware-backed \
         `sk-` keys need ssh-agent support, which does not exist yet)",
        .path.display()
    )]
    UnsupportedKey { path: PathBuf, algorithm: String },

    #[error("cannot sign in namespace `{namespace}`: {reason}")]
    Sign { namespace: String, reason: String },
}

/// An OpenSSH private key, decrypted, ready to sign plans and approvals.
pub struct SigningKey {
    key: PrivateKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("algorithm", &self.key.algorithm().as_str())
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Loads an OpenSSH private key file. An encrypted key is decrypted with `passphrase` if
    /// given (callers read it from the env var `HOMELAB_KEY_PASSPHRASE` or a prompt), otherwise
    /// refused with [`SignError::Encrypted`], which says how to proceed. A passphrase given for
    /// an unencrypted key is ignored.
    pub fn load(path: &Path, passphrase: Option<&str>) -> Result<SigningKey, SignError> {
        let key = PrivateKey::read_openssh_file(path).map_err(|e| match e {
            ssh_key::Error::Io(kind) => {
                SignError::Read { path: path.to_path_buf(), source: kind.into() }
            }
            other => SignError::NotAKey { path: path.to_path_buf(), reason: other.to_string() },
        })?;
        let key = if key.is_encrypted() {
            let Some(passphrase) = passphrase else {
                return Err(SignError::Encrypted { path: path.to_path_buf() });
            };
            key.decrypt(passphrase).map_err(|e| match e {
                // A wrong passphrase derives a wrong key: the check integers or the
                // authentication tag do not match.
                ssh_key::Error::Crypto => SignError::WrongPassphrase { path: path.to_path_buf() },
                other => SignError::Decrypt { path: path.to_path_buf(), reason: other.to_string() },
            })?
        } else {
            key
        };
        match key.key_data() {
            KeypairData::Ed25519(_) | KeypairData::Ecdsa(_) | KeypairData::Rsa(_) => {
                Ok(SigningKey { key })
            }
            _ => Err(SignError::UnsupportedKey {
                path: path.to_path_buf(),
                algorithm: key.algorithm().as_str().to_string(),
            }),
        }
    }

    /// Signs `message` in `namespace` and returns the armored signature
    /// (`-----BEGIN SSH SIGNATURE-----` … `-----END SSH SIGNATURE-----\n`), hashing the message
    /// with SHA-512 as `ssh-keygen -Y sign` does (RSA keys sign with `rsa-sha2-512`).
    pub fn sign(&self, namespace: &str, message: &[u8]) -> Result<String, SignError> {
        let fail = |e: ssh_key::Error| SignError::Sign {
            namespace: namespace.to_string(),
            reason: e.to_string(),
        };
        let sig = self.key.sign(namespace, HashAlg::Sha512, message).map_err(fail)?;
        let mut armored = sig.to_pem(LineEnding::LF).map_err(fail)?;
        if !armored.ends_with('\n') {
            armored.push('\n');
        }
        Ok(armored)
    }

    /// The SHA-256 fingerprint of the public key, as `ssh-keygen -l` prints it (`SHA256:…`).
    pub fn fingerprint(&self) -> String {
        self.key.fingerprint(HashAlg::Sha256).to_string()
    }

    /// The public key in OpenSSH form without a comment (`ssh-ed25519 AAAA…`), ready for an
    /// allowed-signers line.
    pub fn public_key_openssh(&self) -> String {
        public_key_openssh(self.key.public_key().key_data())
    }
}

/// `type base64` of a public key, without comment.
pub(crate) fn public_key_openssh(key: &ssh_key::public::KeyData) -> String {
    PublicKey::from(key.clone())
        .to_openssh()
        .map(|s| s.trim_end().to_string())
        .unwrap_or_else(|e| format!("<unencodable {} key: {e}>", key.algorithm().as_str()))
}

/// Splits a text holding one or more armored SSHSIG blocks (with optional blank or `#` comment
/// lines between them) into the blocks, each normalised to `ssh-keygen`'s layout (LF line ends,
/// body wrapped at 70 columns, trailing newline). Every block must decode as an SSHSIG
/// structure; a truncated or malformed block is an error naming its line.
pub fn split_armored(text: &str) -> Result<Vec<String>, VerifyError> {
    let mut blocks = Vec::new();
    // The open block: the line of its BEGIN, and its base64 body so far.
    let mut open: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        match open.as_mut() {
            None if line.is_empty() || line.starts_with('#') => {}
            None if line == BEGIN => open = Some((n, String::new())),
            None => {
                return Err(malformed(format!(
                    "line {n}: expected `{BEGIN}`, a `#` comment or a blank line, found `{}`",
                    abbreviate(line)
                )))
            }
            Some((start, _)) if line == BEGIN => return Err(truncated(*start, Some(n))),
            Some((start, body)) if line == END => {
                let block = armor(body);
                parse_armored(&block).map_err(|reason| {
                    malformed(format!("the block starting at line {start}: {reason}"))
                })?;
                blocks.push(block);
                open = None;
            }
            Some((_, body)) => body.extend(line.chars().filter(|c| !c.is_whitespace())),
        }
    }
    if let Some((start, _)) = open {
        return Err(truncated(start, None));
    }
    if blocks.is_empty() {
        return Err(malformed(format!("no `{BEGIN}` block found")));
    }
    Ok(blocks)
}

/// Decodes one armored block into its SSHSIG structure.
pub(crate) fn parse_armored(block: &str) -> Result<SshSig, String> {
    SshSig::from_pem(block).map_err(|e| format!("it does not decode as an SSH signature ({e})"))
}

fn armor(body: &str) -> String {
    let mut out =
        String::with_capacity(body.len() + body.len() / WRAP + BEGIN.len() + END.len() + 4);
    out.push_str(BEGIN);
    out.push('\n');
    // The body is base64 (ASCII) once validated; a non-ASCII body is cut on char boundaries and
    // fails to decode just the same.
    let chars: Vec<char> = body.chars().collect();
    for chunk in chars.chunks(WRAP) {
        out.extend(chunk);
        out.push('\n');
    }
    out.push_str(END);
    out.push('\n');
    out
}

fn malformed(reason: String) -> VerifyError {
    VerifyError::Malformed { reason }
}

fn truncated(start: usize, next_begin: Option<usize>) -> VerifyError {
    let cut = match next_begin {
        Some(n) => format!(" before the next block starts at line {n}"),
        None => " before the end of the text".to_string(),
    };
    malformed(format!(
        "the block starting at line {start} has no `{END}` line{cut}: the signature is truncated"
    ))
}

/// The start of a line, for an error message (a stray line may be long).
fn abbreviate(line: &str) -> String {
    const MAX: usize = 40;
    match line.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line.to_string(),
    }
}
