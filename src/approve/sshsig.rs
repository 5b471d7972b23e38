//! The signing side of SSHSIG (OpenSSH's `PROTOCOL.sshsig`): loading an OpenSSH private key,
//! signing a message in a namespace exactly as `ssh-keygen -Y sign` does (SHA-512 message hash,
//! armored output wrapped at 70 columns), and splitting a file of armored signatures into blocks.
//!
//! Key material and passphrases never appear in errors, `Debug` output or logs: a key is named by
//! its file and its public fingerprint only.

use std::fmt;
use std::path::{Path, PathBuf};

use ssh_key::private::{KeypairData, RsaKeypair};
use ssh_key::public::KeyData;
use ssh_key::{Algorithm, HashAlg, LineEnding, Mpint, PrivateKey, PublicKey, SshSig};

use super::error::VerifyError;

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

    #[error(
        "the signing key `{}` is a {bits}-bit RSA key, and homelab needs at least {MIN_RSA_BITS} \
         bits: generate a new key, e.g. `ssh-keygen -t ed25519`",
        .path.display()
    )]
    WeakKey { path: PathBuf, bits: usize },

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
        let file = Secret(
            std::fs::read(path)
                .map_err(|source| SignError::Read { path: path.to_path_buf(), source })?,
        );
        let not_a_key = |reason: String| SignError::NotAKey { path: path.to_path_buf(), reason };
        let pem = std::str::from_utf8(&file.0).map_err(|_| not_a_key("not text".to_string()))?;
        let key = match PrivateKey::from_openssh(pem) {
            Ok(key) => key,
            Err(e) => short_ecdsa::load(pem, None).ok_or_else(|| not_a_key(e.to_string()))?,
        };
        let key = if key.is_encrypted() {
            let Some(passphrase) = passphrase else {
                return Err(SignError::Encrypted { path: path.to_path_buf() });
            };
            match key.decrypt(passphrase) {
                Ok(decrypted) => decrypted,
                // A wrong passphrase derives a wrong key: the check integers or the
                // authentication tag do not match.
                Err(ssh_key::Error::Crypto) => {
                    return Err(SignError::WrongPassphrase { path: path.to_path_buf() })
                }
                Err(e) => short_ecdsa::load(pem, Some((&key, passphrase))).ok_or_else(|| {
                    SignError::Decrypt { path: path.to_path_buf(), reason: e.to_string() }
                })?,
            }
        } else {
            key
        };
        match key.key_data() {
            KeypairData::Rsa(rsa) if rsa_bits(&rsa.public.n) < MIN_RSA_BITS => {
                Err(SignError::WeakKey { path: path.to_path_buf(), bits: rsa_bits(&rsa.public.n) })
            }
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
        let fail = |reason: String| SignError::Sign { namespace: namespace.to_string(), reason };
        let sig = match self.key.key_data() {
            KeypairData::Rsa(keypair) => {
                sign_rsa(keypair, self.key.public_key().key_data(), namespace, message)
            }
            _ => self.key.sign(namespace, HashAlg::Sha512, message).map_err(|e| e.to_string()),
        }
        .map_err(fail)?;
        let mut armored = sig.to_pem(LineEnding::LF).map_err(|e| fail(e.to_string()))?;
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

/// Signs as `ssh-keygen -Y sign` does with an RSA key: RSASSA-PKCS1-v1_5 over SHA-512
/// (`rsa-sha2-512`) of the SSHSIG signed data.
///
/// Done here rather than by `ssh-key` 0.6.7, whose conversion to `rsa::RsaPrivateKey` passes the
/// prime `p` twice (fixed upstream by RustCrypto/SSH#217, unreleased in 0.6), so that every RSA
/// signature fails. Drop this once `ssh-key` signs RSA keys again.
fn sign_rsa(
    keypair: &RsaKeypair,
    public: &KeyData,
    namespace: &str,
    message: &[u8],
) -> Result<SshSig, String> {
    use rsa::signature::{SignatureEncoding, Signer};

    let big = |m: &Mpint| {
        m.as_positive_bytes()
            .map(rsa::BigUint::from_bytes_be)
            .ok_or_else(|| "the RSA key has a negative component".to_string())
    };
    let private = &keypair.private;
    let key = rsa::RsaPrivateKey::from_components(
        big(&keypair.public.n)?,
        big(&keypair.public.e)?,
        big(&private.d)?,
        vec![big(&private.p)?, big(&private.q)?],
    )
    .map_err(|e| format!("the RSA key is inconsistent ({e})"))?;
    let signed =
        SshSig::signed_data(namespace, HashAlg::Sha512, message).map_err(|e| e.to_string())?;
    let signature = rsa::pkcs1v15::SigningKey::<rsa::sha2::Sha512>::new(key)
        .try_sign(&signed)
        .map_err(|e| e.to_string())?;
    let signature =
        ssh_key::Signature::new(Algorithm::Rsa { hash: Some(HashAlg::Sha512) }, signature.to_vec())
            .map_err(|e| e.to_string())?;
    SshSig::new(public.clone(), namespace, HashAlg::Sha512, signature).map_err(|e| e.to_string())
}

/// The smallest RSA modulus homelab signs with or accepts (as `ssh-key` verifies).
pub(crate) const MIN_RSA_BITS: usize = 2048;

/// The size in bits of an RSA modulus.
pub(crate) fn rsa_bits(n: &Mpint) -> usize {
    let bytes = n.as_positive_bytes().unwrap_or_default();
    match bytes.iter().position(|&b| b != 0) {
        Some(i) => (bytes.len() - i) * 8 - bytes[i].leading_zeros() as usize,
        None => 0,
    }
}

/// `type base64` of a public key, without comment.
pub(crate) fn public_key_openssh(key: &KeyData) -> String {
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
                parse_armored(&block).map_err(|e| match e {
                    VerifyError::Malformed { reason } => {
                        malformed(format!("the block starting at line {start}: {reason}"))
                    }
                    other => other,
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

/// Decodes one armored block into its SSHSIG structure. A signature made with an OpenSSH
/// certificate (which `ssh-key` cannot decode) is [`VerifyError::Unsupported`].
pub(crate) fn parse_armored(block: &str) -> Result<SshSig, VerifyError> {
    SshSig::from_pem(block).map_err(|e| match embedded_key_type(block) {
        Some(name) if name.ends_with(CERT_SUFFIX) => {
            VerifyError::Unsupported { reason: certificate_refusal(&name) }
        }
        _ => malformed(format!("it does not decode as an SSH signature ({e})")),
    })
}

pub(crate) const CERT_SUFFIX: &str = "-cert-v01@openssh.com";

/// Why a certificate signature is refused.
pub(crate) fn certificate_refusal(name: &str) -> String {
    format!(
        "it was made with an OpenSSH certificate (`{name}`), and homelab does not support \
         certificates or `cert-authority`; sign with the plain key and list its public key in \
         the allowed signers file"
    )
}

/// The key type named inside an armored SSHSIG block, read from the start of its binary form
/// (`"SSHSIG"`, version, then the public key blob, which starts with its type name).
fn embedded_key_type(block: &str) -> Option<String> {
    let body: String = block.lines().filter(|l| !l.starts_with("-----")).collect();
    let bytes = base64_prefix(&body, 200)?;
    let rest = bytes.strip_prefix(b"SSHSIG")?.get(4..)?; // version
    let rest = rest.get(4..)?; // length of the public key blob
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let name = rest.get(4..4 + len)?;
    String::from_utf8(name.to_vec()).ok()
}

/// Decodes up to `max` leading base64 characters (whole quads only).
fn base64_prefix(text: &str, max: usize) -> Option<Vec<u8>> {
    let text = text.as_bytes();
    crate::digest::base64_decode(&text[..text.len().min(max) / 4 * 4])
}

/// Decodes padded base64 (`text.len()` a multiple of 4).
/// Bytes holding private key material, overwritten with zeros when dropped.
struct Secret(Vec<u8>);

impl Drop for Secret {
    fn drop(&mut self) {
        for b in self.0.iter_mut() {
            // SAFETY: `b` is a valid, aligned, exclusive reference to a byte of the vector.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
    }
}

/// Works around `ssh-key` 0.6.7 refusing ("length invalid") an ECDSA private key whose scalar
/// encodes shorter than the field: about one P-256 or P-384 key in 256, and one P-521 key in
/// two (RustCrypto/SSH#350, fixed upstream by #351 and #356, unreleased in 0.6). The key's
/// private section (decrypted first if needed) is rewritten with the scalar zero-padded to the
/// field size, as an unencrypted OpenSSH key held only in memory, and parsed again. Drop this
/// once `ssh-key` reads such keys.
mod short_ecdsa {
    use ssh_key::PrivateKey;

    use super::Secret;
    use crate::digest::{base64_decode, base64_encode};

    const MAGIC: &[u8] = b"openssh-key-v1\0";

    /// The key in `pem`, if it is an OpenSSH ECDSA key with a short scalar. `encrypted` is the
    /// already parsed (still encrypted) key and its passphrase, for an encrypted file.
    pub(super) fn load(pem: &str, encrypted: Option<(&PrivateKey, &str)>) -> Option<PrivateKey> {
        let body = Secret(
            pem.lines()
                .map(str::trim)
                .filter(|l| !l.starts_with("-----"))
                .flat_map(str::bytes)
                .collect(),
        );
        let blob = Secret(base64_decode(&body.0)?);
        let mut r = Reader(&blob.0);
        if r.take(MAGIC.len())? != MAGIC {
            return None;
        }
        let cipher = r.string()?;
        let (_kdf, _kdf_options) = (r.string()?, r.string()?);
        if r.u32()? != 1 {
            return None;
        }
        let public = r.string()?;
        let mut private = Secret(r.string()?.to_vec());
        let tag = r.0;
        match encrypted {
            None if cipher == b"none" => {}
            None => return None,
            Some((key, passphrase)) => {
                let (k, iv) = key.kdf().derive_key_and_iv(key.cipher(), passphrase).ok()?;
                let tag = match key.cipher().has_tag() {
                    true => Some(<[u8; 16]>::try_from(tag).ok()?),
                    false => None,
                };
                key.cipher().decrypt(&k, &iv, &mut private.0, tag).ok()?;
            }
        }
        let private = pad_scalar(&private.0)?;

        let mut out = Secret(MAGIC.to_vec());
        put_string(&mut out.0, b"none"); // cipher
        put_string(&mut out.0, b"none"); // KDF
        put_string(&mut out.0, b""); // KDF options
        out.0.extend(1u32.to_be_bytes()); // one key
        put_string(&mut out.0, public);
        put_string(&mut out.0, &private.0);
        let text = Secret(base64_encode(&out.0).into_bytes());
        let mut pem = Secret(b"-----BEGIN OPENSSH PRIVATE KEY-----\n".to_vec());
        for line in text.0.chunks(70) {
            pem.0.extend(line);
            pem.0.push(b'\n');
        }
        pem.0.extend(b"-----END OPENSSH PRIVATE KEY-----\n");
        PrivateKey::from_openssh(std::str::from_utf8(&pem.0).ok()?).ok()
    }

    /// The decrypted private section with an ECDSA scalar shorter than its field zero-padded to
    /// the field size; `None` for any other key.
    fn pad_scalar(private: &[u8]) -> Option<Secret> {
        let mut r = Reader(private);
        let check = r.take(8)?;
        let key_type = r.string()?;
        let size = match key_type {
            b"ecdsa-sha2-nistp256" => 32,
            b"ecdsa-sha2-nistp384" => 48,
            b"ecdsa-sha2-nistp521" => 66,
            _ => return None,
        };
        let (curve, point, scalar, comment) = (r.string()?, r.string()?, r.string()?, r.string()?);
        if scalar.is_empty() || scalar.len() >= size {
            return None;
        }
        let mut out = Secret(check.to_vec());
        for field in [key_type, curve, point] {
            put_string(&mut out.0, field);
        }
        out.0.extend((size as u32).to_be_bytes());
        out.0.resize(out.0.len() + size - scalar.len(), 0);
        out.0.extend(scalar);
        put_string(&mut out.0, comment);
        // Padding to the block size of the `none` cipher (8): 1, 2, 3, …
        let mut pad = 1u8;
        while out.0.len() % 8 != 0 {
            out.0.push(pad);
            pad += 1;
        }
        Some(out)
    }

    fn put_string(out: &mut Vec<u8>, s: &[u8]) {
        out.extend((s.len() as u32).to_be_bytes());
        out.extend(s);
    }

    /// Reads the SSH wire format.
    struct Reader<'a>(&'a [u8]);

    impl<'a> Reader<'a> {
        fn take(&mut self, n: usize) -> Option<&'a [u8]> {
            let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
            self.0 = rest;
            Some(head)
        }

        fn u32(&mut self) -> Option<u32> {
            Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
        }

        fn string(&mut self) -> Option<&'a [u8]> {
            let n = self.u32()? as usize;
            self.take(n)
        }
    }
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

pub use crate::digest::Digests;

/// What a signature is checked over: the message itself, or its digests.
#[derive(Debug, Clone, Copy)]
pub enum Message<'a> {
    Bytes(&'a [u8]),
    Digests(&'a Digests),
}

impl Message<'_> {
    /// The message's hash in `alg`, as SSHSIG signs it.
    fn hash(&self, alg: HashAlg) -> Vec<u8> {
        match (self, alg) {
            (Message::Bytes(b), alg) => alg.digest(b),
            (Message::Digests(d), HashAlg::Sha256) => d.sha256.to_vec(),
            (Message::Digests(d), HashAlg::Sha512) => d.sha512.to_vec(),
            // `HashAlg` is non-exhaustive; SSHSIG knows only the two.
            (Message::Digests(_), _) => Vec::new(),
        }
    }
}

/// Whether `sig` is a valid signature, by its own key, in `namespace`, over `message`: the
/// SSHSIG signed data (`SSHSIG`, namespace, reserved, hash algorithm, the message's hash, as
/// PROTOCOL.sshsig lays it out) verified against the signature.
pub(crate) fn verify_message(sig: &SshSig, namespace: &str, message: Message<'_>) -> bool {
    use rsa::signature::Verifier;
    if sig.namespace() != namespace {
        return false;
    }
    let hash = message.hash(sig.hash_alg());
    if hash.is_empty() {
        return false;
    }
    let mut data = b"SSHSIG".to_vec();
    for field in [namespace.as_bytes(), sig.reserved(), sig.hash_alg().as_str().as_bytes(), &hash] {
        data.extend_from_slice(&(field.len() as u32).to_be_bytes());
        data.extend_from_slice(field);
    }
    sig.public_key().verify(&data, sig.signature()).is_ok()
}

#[cfg(test)]
mod digest_tests {
    use super::*;

    #[test]
    fn a_signature_checks_the_same_over_the_message_or_its_digests() {
        let seed = ssh_key::private::Ed25519Keypair::from_seed(&[7; 32]);
        let key = SigningKey { key: PrivateKey::from(seed) };
        let msg = b"homelab-plan 2\nsummary 1 create\n";
        let armored = key.sign(PLAN_NAMESPACE, msg).unwrap();
        let sig = parse_armored(&armored).unwrap();
        let d = Digests::of(msg);
        assert!(verify_message(&sig, PLAN_NAMESPACE, Message::Bytes(msg)));
        assert!(verify_message(&sig, PLAN_NAMESPACE, Message::Digests(&d)));
        assert!(!verify_message(&sig, APPROVE_NAMESPACE, Message::Digests(&d)));
        let other = Digests::of(b"homelab-plan 2\nsummary 2 create\n");
        assert!(!verify_message(&sig, PLAN_NAMESPACE, Message::Digests(&other)));
    }
}
