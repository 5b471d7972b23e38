//! The verifying side of SSHSIG: the OpenSSH allowed-signers file (`inventory/allowed_signers`,
//! `man ssh-keygen`, section ALLOWED SIGNERS) and the checks a signature must pass before a plan
//! or an approval is trusted, with the same outcome as `ssh-keygen -Y verify` on the same file.
//!
//! As in `ssh-keygen`: `valid-after`/`valid-before` times with a `Z` (or `UTC`) suffix are UTC,
//! times without one are the checking machine's local time (standard time, as OpenSSH's
//! `mktime` call with `tm_isdst = 0` reads them); write the `Z` to mean the same instant on
//! every machine. A principal negated on its own line (`a,!a`) is not allowed as `a`.
//!
//! Differences from `ssh-keygen`, on purpose:
//! - Impossible dates (`20260230`) are refused where `ssh-keygen` normalises them.
//! - `cert-authority` lines are parsed but authorise nothing (as in `ssh-keygen`, they never
//!   authorise the CA key itself), and signatures made with a certificate are refused as
//!   unsupported. Hardware-backed `sk-` keys are refused as unsupported too.
//! - [`AllowedSigners::verify`] does not take a signer identity (`ssh-keygen -I`): it returns
//!   the principals of every line that allows the key, for the caller to judge.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ssh_key::public::KeyData;
use ssh_key::{Algorithm, HashAlg, PublicKey, SshSig};

pub use super::error::{SignersError, VerifyError};
use super::sshsig::{
    certificate_refusal, parse_armored, public_key_openssh, rsa_bits, split_armored,
    verify_message, Message, CERT_SUFFIX, MIN_RSA_BITS,
};
use crate::quote::cut;

/// What a valid signature proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The principals (as written, possibly `*`/`?` patterns) of every line allowing the key
    /// that the line's own negations (`!name`) do not take back, in file order, without
    /// duplicates: what to show a person.
    pub principals: Vec<String>,
    /// The principals field of every line allowing the key, as written: what [`allows`]
    /// matches against, as `ssh-keygen -Y verify -I` does.
    ///
    /// [`allows`]: Verified::allows
    pub lists: Vec<String>,
    /// `SHA256:…` of the signing key.
    pub fingerprint: String,
    /// The signing key in OpenSSH form, without comment (`ssh-ed25519 AAAA…`).
    pub public_key: String,
}

impl Verified {
    /// Whether `identity` (e.g. `alice@example.com`) matches one of the principal patterns, as
    /// `ssh-keygen -Y verify -I <identity>` would match them.
    pub fn allows(&self, identity: &str) -> bool {
        self.lists.iter().any(|list| match_pattern_list(identity, list))
    }
}

/// One key line of an allowed-signers file.
#[derive(Debug, Clone)]
struct Entry {
    line: usize,
    /// The comma-separated principal pattern list, as written (unquoted).
    principals: String,
    options: Options,
    key: KeyData,
}

/// The options field of a line.
#[derive(Debug, Clone, Default)]
struct Options {
    cert_authority: bool,
    namespaces: Option<String>,
    /// Seconds since the Unix epoch.
    valid_after: Option<u64>,
    valid_before: Option<u64>,
}

/// A parsed allowed-signers file.
#[derive(Debug, Clone)]
pub struct AllowedSigners {
    file: String,
    entries: Vec<Entry>,
}

impl AllowedSigners {
    /// Reads and parses the allowed-signers file at `path` (named in errors as given).
    pub fn load(path: &Path) -> Result<AllowedSigners, SignersError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| SignersError::Read { path: path.to_path_buf(), source })?;
        AllowedSigners::parse(&text, &path.display().to_string())
    }

    /// Parses the allowed-signers format: principals (comma-separated, with `*`/`?` wildcards,
    /// optionally in double quotes), options (`cert-authority`, `namespaces="a,b"`,
    /// `valid-after="YYYYMMDD[HHMM[SS]][Z]"`, `valid-before=…`; comma-separated without spaces,
    /// names case-insensitive, values in double quotes), key type, base64 key, optional comment;
    /// `#` comments and blank lines. `file` is the name shown in errors, which give the line.
    ///
    /// Times without `Z` are taken as UTC, unlike `ssh-keygen`, which takes them as local time:
    /// CI and the nodes run in UTC, and a file must mean the same on every machine.
    pub fn parse(text: &str, file: &str) -> Result<AllowedSigners, SignersError> {
        let mut entries = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let rest = raw.trim_start_matches([' ', '\t']);
            if rest.is_empty() || rest.starts_with('#') {
                continue;
            }
            let entry = parse_line(rest, line).map_err(|reason| SignersError::Parse {
                file: file.to_string(),
                line,
                // What a line quotes of itself is cut already; this bounds the sum.
                reason: crate::quote::cut_to(&reason, 1000),
            })?;
            entries.push(entry);
        }
        Ok(AllowedSigners { file: file.to_string(), entries })
    }

    /// Verifies one armored signature over `message` in `namespace` at time `now`: the
    /// signature must parse, its namespace must equal `namespace`, it must verify
    /// cryptographically, and its key must appear on a line whose `namespaces=` (if present)
    /// include `namespace` and whose validity window contains `now` (both bounds inclusive, as
    /// in `ssh-keygen`). Returns the principals of every matching line and the key fingerprint.
    pub fn verify(
        &self,
        namespace: &str,
        message: &[u8],
        armored: &str,
        now: SystemTime,
    ) -> Result<Verified, VerifyError> {
        self.verify_message(namespace, Message::Bytes(message), armored, now)
    }

    /// [`verify`](Self::verify) over a message given as itself or as its digests.
    pub fn verify_message(
        &self,
        namespace: &str,
        message: Message<'_>,
        armored: &str,
        now: SystemTime,
    ) -> Result<Verified, VerifyError> {
        let blocks = split_armored(armored)?;
        if blocks.len() != 1 {
            return Err(VerifyError::Malformed {
                reason: format!("expected exactly one signature block, found {}", blocks.len()),
            });
        }
        let sig = parse_armored(&blocks[0])?;
        check_supported(&sig)?;

        if sig.namespace() != namespace {
            return Err(VerifyError::WrongNamespace {
                found: sig.namespace().to_string(),
                expected: namespace.to_string(),
            });
        }

        let key = sig.public_key();
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        if !verify_message(&sig, namespace, message) {
            return Err(VerifyError::BadSignature { fingerprint: fingerprint.clone() });
        }

        let now_secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut principals: Vec<String> = Vec::new();
        let mut lists: Vec<String> = Vec::new();
        let mut refusal = None;
        let mut cert_authority_line = None;
        for e in self.entries.iter().filter(|e| &e.key == key) {
            if e.options.cert_authority {
                cert_authority_line.get_or_insert(e.line);
                continue;
            }
            if let Some(reason) = self.refusal(e, namespace, now_secs, &fingerprint) {
                refusal.get_or_insert(reason);
                continue;
            }
            // `a,!a` allows nobody as `a`: show only what the line really allows.
            for p in e.principals.split(',') {
                if !p.starts_with('!')
                    && match_pattern_list(p, &e.principals)
                    && !principals.iter().any(|q| q == p)
                {
                    principals.push(p.to_string());
                }
            }
            lists.push(e.principals.clone());
        }
        if !lists.is_empty() {
            return Ok(Verified {
                principals,
                lists,
                fingerprint,
                public_key: public_key_openssh(key),
            });
        }
        Err(refusal.unwrap_or_else(|| VerifyError::NotAllowed {
            fingerprint,
            key_type: key.algorithm().as_str().to_string(),
            file: self.file.clone(),
            cert_authority_line,
        }))
    }

    /// Why the line `e`, which lists the key, does not allow it here and now; `None` if it does.
    fn refusal(&self, e: &Entry, namespace: &str, now: u64, fp: &str) -> Option<VerifyError> {
        if let Some(namespaces) = &e.options.namespaces {
            if !match_pattern_list(namespace, namespaces) {
                return Some(VerifyError::NamespaceNotAllowed {
                    fingerprint: fp.to_string(),
                    file: self.file.clone(),
                    line: e.line,
                    namespaces: namespaces.clone(),
                    namespace: namespace.to_string(),
                });
            }
        }
        if let Some(after) = e.options.valid_after.filter(|&t| now < t) {
            return Some(VerifyError::NotYetValid {
                fingerprint: fp.to_string(),
                file: self.file.clone(),
                line: e.line,
                valid_after: format_time(after),
                now: format_time(now),
            });
        }
        if let Some(before) = e.options.valid_before.filter(|&t| now > t) {
            return Some(VerifyError::Expired {
                fingerprint: fp.to_string(),
                file: self.file.clone(),
                line: e.line,
                valid_before: format_time(before),
                now: format_time(now),
            });
        }
        None
    }
}

/// Refuses what homelab does not verify: certificates, `sk-` keys, unknown key types, and RSA
/// signatures over SHA-1 (`ssh-keygen` refuses those too).
fn check_supported(sig: &SshSig) -> Result<(), VerifyError> {
    let key = sig.public_key();
    let name = key.algorithm().as_str().to_string();
    let reason = match key {
        KeyData::Rsa(rsa) if rsa_bits(&rsa.n) < MIN_RSA_BITS => format!(
            "it was made with a {}-bit RSA key, and homelab accepts RSA keys of at least \
             {MIN_RSA_BITS} bits; sign with a stronger key",
            rsa_bits(&rsa.n)
        ),
        KeyData::Ed25519(_) | KeyData::Ecdsa(_) | KeyData::Rsa(_) => {
            if matches!(sig.algorithm(), Algorithm::Rsa { hash: None }) {
                "the signature is RSA over SHA-1 (`ssh-rsa`); sign again with `rsa-sha2-512` \
                 (`homelab approve` and `ssh-keygen -Y sign` do)"
                    .to_string()
            } else {
                return Ok(());
            }
        }
        _ if name.ends_with(CERT_SUFFIX) => certificate_refusal(&name),
        KeyData::SkEd25519(_) | KeyData::SkEcdsaSha2NistP256(_) => format!(
            "it was made with a hardware-backed `{name}` key, which homelab does not support yet; \
             sign with an `ssh-ed25519`, `ecdsa-sha2-nistp*` or `ssh-rsa` key"
        ),
        _ => format!(
            "key type `{name}` is not supported; sign with an `ssh-ed25519`, `ecdsa-sha2-nistp*` \
             or `ssh-rsa` key"
        ),
    };
    Err(VerifyError::Unsupported { reason })
}

/// Parses one non-blank, non-comment line (leading blanks removed).
fn parse_line(text: &str, line: usize) -> Result<Entry, String> {
    let (principals, rest) = principals_field(text)?;
    if principals.is_empty() {
        return Err("empty principals field: expected `<principals> [options] <key type> \
                    <base64 key> [comment]`"
            .to_string());
    }
    let rest = skip_blanks(rest);
    let first = first_word(rest);
    if first.is_empty() {
        return Err(format!(
            "expected a key type and a base64 key after the principals `{}`",
            cut(&principals)
        ));
    }
    let mut options = Options::default();
    let rest =
        if is_key_type(first) { rest } else { skip_blanks(parse_options(rest, &mut options)?) };
    let key_type = first_word(rest);
    if key_type.is_empty() {
        return Err("expected a key type and a base64 key after the options".to_string());
    }
    if !is_key_type(key_type) {
        return Err(format!(
            "unknown key type `{}`: expected `ssh-ed25519`, `ecdsa-sha2-nistp256`, \
             `ecdsa-sha2-nistp384`, `ecdsa-sha2-nistp521` or `ssh-rsa` (options are separated \
             by commas, without spaces)",
            cut(key_type)
        ));
    }
    let base64 = first_word(skip_blanks(&rest[key_type.len()..]));
    if base64.is_empty() {
        return Err(format!("expected a base64 key after `{}`", cut(key_type)));
    }
    let key = PublicKey::from_openssh(&format!("{key_type} {base64}")).map_err(|e| {
        format!("invalid `{}` public key ({e}): copy the line from the `.pub` file", cut(key_type))
    })?;
    match key.key_data() {
        KeyData::Ed25519(_) | KeyData::Ecdsa(_) | KeyData::Rsa(_) => {}
        _ => {
            return Err(format!(
                "unsupported key type `{key_type}`: expected `ssh-ed25519`, \
                 `ecdsa-sha2-nistp256/384/521` or `ssh-rsa` (certificates and `sk-` keys are \
                 not supported)"
            ))
        }
    }
    Ok(Entry { line, principals, options, key: key.key_data().clone() })
}

/// The principals field (in double quotes or up to the first blank) and the rest of the line.
fn principals_field(text: &str) -> Result<(String, &str), String> {
    if let Some(quoted) = text.strip_prefix('"') {
        let end = quoted
            .find('"')
            .ok_or("unterminated `\"` in the principals field: add the closing quote")?;
        Ok((quoted[..end].to_string(), &quoted[end + 1..]))
    } else {
        let word = first_word(text);
        Ok((word.to_string(), &text[word.len()..]))
    }
}

/// Parses the options field into `entry`; returns the text after it.
fn parse_options<'a>(mut opts: &'a str, entry: &mut Options) -> Result<&'a str, String> {
    const EXPECTED: &str = "expected `cert-authority`, `namespaces=\"…\"`, `valid-after=\"…\"` \
                            or `valid-before=\"…\"`, separated by commas without spaces";
    loop {
        if let Some(rest) = strip_prefix_ci(opts, "cert-authority")
            .filter(|r| r.is_empty() || r.starts_with([',', ' ', '\t']))
        {
            entry.cert_authority = true;
            opts = rest;
        } else if let Some(rest) = strip_prefix_ci(opts, "namespaces=") {
            let (value, rest) = dequote(rest, "namespaces")?;
            if entry.namespaces.is_some() {
                return Err("`namespaces` is given twice: merge the lists".to_string());
            }
            entry.namespaces = Some(value);
            opts = rest;
        } else if let Some(rest) = strip_prefix_ci(opts, "valid-after=") {
            let (value, rest) = dequote(rest, "valid-after")?;
            if entry.valid_after.is_some() {
                return Err("`valid-after` is given twice: keep one".to_string());
            }
            entry.valid_after = Some(parse_time(&value, "valid-after")?);
            opts = rest;
        } else if let Some(rest) = strip_prefix_ci(opts, "valid-before=") {
            let (value, rest) = dequote(rest, "valid-before")?;
            if entry.valid_before.is_some() {
                return Err("`valid-before` is given twice: keep one".to_string());
            }
            entry.valid_before = Some(parse_time(&value, "valid-before")?);
            opts = rest;
        } else {
            let name = opts.split([',', '=', ' ', '\t']).next().unwrap_or_default();
            return Err(format!("unsupported option `{}`: {EXPECTED}", cut(name)));
        }
        match opts.chars().next() {
            None | Some(' ' | '\t') => break,
            Some(',') => {
                opts = &opts[1..];
                if opts.is_empty() || opts.starts_with([' ', '\t']) {
                    return Err(format!("the options end with a comma: {EXPECTED}"));
                }
            }
            Some(c) => return Err(format!("unexpected `{c}` after an option: {EXPECTED}")),
        }
    }
    if let (Some(after), Some(before)) = (entry.valid_after, entry.valid_before) {
        if before <= after {
            return Err(format!(
                "`valid-before` ({}) is not after `valid-after` ({}): the key would never be valid",
                format_time(before),
                format_time(after)
            ));
        }
    }
    Ok(opts)
}

/// A double-quoted option value (`\"` escapes a quote) and the text after it.
fn dequote<'a>(text: &'a str, option: &str) -> Result<(String, &'a str), String> {
    let Some(inner) = text.strip_prefix('"') else {
        return Err(format!(
            "the value of `{option}` must be in double quotes, e.g. `{option}=\"…\"`"
        ));
    };
    let mut value = String::new();
    let mut chars = inner.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &inner[i + 1..])),
            '\\' if inner[i + 1..].starts_with('"') => {
                chars.next();
                value.push('"');
            }
            c => value.push(c),
        }
    }
    Err(format!("the value of `{option}` has no closing `\"`"))
}

/// An OpenSSH absolute time, `YYYYMMDD`, `YYYYMMDDHHMM` or `YYYYMMDDHHMMSS`, optionally followed
/// by `Z` (or `UTC`) for UTC, else local time (see the module doc). Returns seconds since the
/// Unix epoch.
fn parse_time(value: &str, option: &str) -> Result<u64, String> {
    let invalid = || {
        format!(
            "invalid `{option}` time `{}`: expected `YYYYMMDD`, `YYYYMMDDHHMM` or \
             `YYYYMMDDHHMMSS`, optionally followed by `Z` (times are UTC), e.g. `20260101Z`",
            cut(value)
        )
    };
    let utc = value.strip_suffix(['Z', 'z']).filter(|d| !d.is_empty()).or_else(|| {
        let cut = value.len().checked_sub(3)?;
        (cut > 0 && value.get(cut..)?.eq_ignore_ascii_case("UTC")).then(|| &value[..cut])
    });
    let digits = utc.unwrap_or(value);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let d = digits;
    let (hh, mm, ss) = match d.len() {
        8 => ("00", "00", "00"),
        12 => (&d[8..10], &d[10..12], "00"),
        14 => (&d[8..10], &d[10..12], &d[12..14]),
        _ => return Err(invalid()),
    };
    let rfc3339 = format!("{}-{}-{}T{hh}:{mm}:{ss}Z", &d[..4], &d[4..6], &d[6..8]);
    let t = humantime::parse_rfc3339(&rfc3339).map_err(|_| invalid())?;
    let as_utc = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).map_err(|_| invalid())?;
    let secs = match utc {
        Some(_) => as_utc,
        None => local_time(&d[..4], &d[4..6], &d[6..8], hh, mm, ss).ok_or_else(invalid)?,
    };
    // ssh-keygen refuses the epoch itself (0 means "unset" there) and times before it.
    if secs > 0 {
        Ok(secs)
    } else {
        Err(invalid())
    }
}

/// A wall-clock time in this machine's time zone (`TZ`), as seconds since the epoch: what
/// OpenSSH's `mktime` with `tm_isdst = 0` gives for a time without `Z`.
fn local_time(y: &str, mo: &str, d: &str, h: &str, mi: &str, s: &str) -> Option<u64> {
    let n = |v: &str| v.parse::<libc::c_int>().ok();
    // SAFETY: `tm` is a plain C struct we own, zeroed then filled; mktime only reads the time
    // zone and normalises `tm` in place.
    let t = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        tm.tm_year = n(y)? - 1900;
        tm.tm_mon = n(mo)? - 1;
        tm.tm_mday = n(d)?;
        tm.tm_hour = n(h)?;
        tm.tm_min = n(mi)?;
        tm.tm_sec = n(s)?;
        tm.tm_isdst = 0;
        libc::mktime(&mut tm)
    };
    u64::try_from(t).ok()
}

fn format_time(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// Whether `word` names a public key type (as opposed to an options field).
fn is_key_type(word: &str) -> bool {
    !word.contains(['=', '"', ',']) && word.parse::<Algorithm>().is_ok()
}

fn first_word(text: &str) -> &str {
    text.split([' ', '\t']).next().unwrap_or_default()
}

fn skip_blanks(text: &str) -> &str {
    text.trim_start_matches([' ', '\t'])
}

fn strip_prefix_ci<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &text[prefix.len()..])
}

/// OpenSSH `match_pattern_list`: `s` matches a comma-separated list of `*`/`?` patterns if it
/// matches at least one pattern and no `!`-negated one. Case-sensitive, no trimming.
fn match_pattern_list(s: &str, list: &str) -> bool {
    let mut positive = false;
    for pattern in list.split(',') {
        match pattern.strip_prefix('!') {
            Some(negated) if match_pattern(s, negated) => return false,
            Some(_) => {}
            None => positive |= match_pattern(s, pattern),
        }
    }
    positive
}

/// OpenSSH `match_pattern`: `*` matches any run of bytes, `?` any one byte. Bytes, not
/// characters, as OpenSSH's C does: `?@saturn` does not match `ü@saturn` (two bytes), and
/// `??@saturn` does, for `ssh-keygen -Y verify` and for homelab alike.
fn match_pattern(s: &str, pattern: &str) -> bool {
    let s = s.as_bytes();
    let p = pattern.as_bytes();
    let (mut si, mut pi) = (0, 0);
    // The position after the last `*` seen, and the text position it was tried at.
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
            si += 1;
            pi += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi + 1, si));
            pi += 1;
        } else if let Some((after, tried)) = star {
            pi = after;
            si = tried + 1;
            star = Some((after, tried + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(match_pattern("alice@example.com", "*@example.com"));
        assert!(match_pattern("alice@example.com", "alic?@*"));
        assert!(match_pattern("a", "*"));
        assert!(match_pattern("", "*"));
        assert!(!match_pattern("alice@example.org", "*@example.com"));
        assert!(!match_pattern("alice", "alice?"));
        assert!(match_pattern("abcabd", "*abd"));
        assert!(match_pattern_list("homelab-plan", "git,homelab-*"));
        assert!(!match_pattern_list("homelab-plan", "homelab-*,!homelab-plan"));
        assert!(!match_pattern_list("homelab-plan", "!git"));
        assert!(!match_pattern_list("homelab-plan", "git, homelab-plan"));
        // Bytes, as OpenSSH: `ü` is two of them.
        assert!(!match_pattern("ü@saturn", "?@saturn"));
        assert!(match_pattern("ü@saturn", "??@saturn"));
        assert!(match_pattern("ü@saturn", "*@saturn"));
        assert!(match_pattern("aü", "a*"));
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("19700102Z", "t"), Ok(86400));
        assert_eq!(parse_time("19700102utc", "t"), Ok(86400));
        assert_eq!(parse_time("197001020001Z", "t"), Ok(86460));
        // Local time: within a day of the UTC reading, whatever this machine's zone.
        let local = parse_time("20260102", "t").unwrap();
        assert!(local.abs_diff(parse_time("20260102Z", "t").unwrap()) <= 14 * 3600);
        assert_eq!(parse_time("19700102000101z", "t"), Ok(86461));
        for bad in ["", "Z", "1970010", "19700100", "19700230", "2026-01-01", "19700101Z"] {
            assert!(parse_time(bad, "t").is_err(), "{bad}");
        }
    }
}
