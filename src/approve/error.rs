//! Why a signature or an allowed-signers file was refused. These sit below both halves of the
//! signature layer (`sshsig` parses armored blocks and reports them malformed; `signers`
//! checks them), so neither half imports the other for its errors.

/// Why an allowed-signers file could not be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum SignersError {
    #[error("cannot read the allowed signers file `{}`: {source}", .path.display())]
    Read { path: std::path::PathBuf, source: std::io::Error },

    #[error("{file}:{line}: {reason}")]
    Parse { file: String, line: usize, reason: String },
}

/// Why a signature was refused. Each variant says exactly why, and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(
        "malformed signature: {reason}; expected one armored block from `homelab approve` or \
         `ssh-keygen -Y sign`, copied whole"
    )]
    Malformed { reason: String },

    #[error(
        "wrong signature namespace: signed for `{found}`, expected `{expected}`; a plan is \
         signed in `homelab-plan` and an approval in `homelab-approve`, so sign again in \
         `{expected}`"
    )]
    WrongNamespace { found: String, expected: String },

    #[error(
        "bad signature by key {fingerprint}: it does not match the signed bytes (the message \
         changed after signing, or the signature is forged); sign the current bytes again"
    )]
    BadSignature { fingerprint: String },

    #[error(
        "key {fingerprint} ({key_type}) is not in `{file}`{}: add a line `<principal> <public \
         key>` for it (see `man ssh-keygen`, ALLOWED SIGNERS), or sign with a listed key",
        .cert_authority_line.map(|l| format!(" (line {l} lists it only as `cert-authority`, which homelab does not support)")).unwrap_or_default()
    )]
    NotAllowed {
        fingerprint: String,
        key_type: String,
        file: String,
        cert_authority_line: Option<usize>,
    },

    #[error(
        "key {fingerprint} is allowed by `{file}:{line}` only for namespaces `{namespaces}`, \
         not `{namespace}`: add `{namespace}` to its `namespaces=\"…\"` option, or sign with a \
         key allowed for `{namespace}`"
    )]
    NamespaceNotAllowed {
        fingerprint: String,
        file: String,
        line: usize,
        namespaces: String,
        namespace: String,
    },

    #[error(
        "key {fingerprint} is not yet valid: `{file}:{line}` allows it from {valid_after} \
         (`valid-after`), and the time of the check is {now}; wait, or change `valid-after`"
    )]
    NotYetValid { fingerprint: String, file: String, line: usize, valid_after: String, now: String },

    #[error(
        "key {fingerprint} has expired: `{file}:{line}` allows it until {valid_before} \
         (`valid-before`), and the time of the check is {now}; sign with a current key, or \
         extend `valid-before`"
    )]
    Expired { fingerprint: String, file: String, line: usize, valid_before: String, now: String },

    #[error("unsupported signature: {reason}")]
    Unsupported { reason: String },
}
