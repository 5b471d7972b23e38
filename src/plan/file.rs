//! The plan file format, version 1: the only module that reads or writes it.
//!
//! A plan file is text a reviewer reads in a pull request: every artifact's full content and
//! every diff line appears as a line of its own (prefixed `|`), never as an escaped string.
//! The file is the *signed bytes* followed by one armored SSHSIG block; the signed bytes are
//! everything up to and including the newline before `-----BEGIN SSH SIGNATURE-----`. The
//! plan's id is the first 16 hex digits of the SHA-256 of the signed bytes.
//!
//! ```text
//! homelab-plan 1
//! created 2026-11-25T23:30:00Z
//! expires 2026-11-26T23:30:00Z
//! planner owner@saturn SHA256:...
//! commit 6ef54a2... clean
//! summary 2 create, 1 update, 0 replace, 0 delete, 3 no-op
//!
//! node chelsty-infra reachable
//! root /tmp/homelab-runtime/chelsty-infra   (only when `--root` placed the runtime root)
//! fingerprint sha256:...
//! actual mosquitto manifest <sha256>
//! actual mosquitto file docker-compose.yml <sha256>
//!
//! change update mosquitto@chelsty-infra
//! reason changed: docker-compose.yml
//! after zigbee2mqtt@chelsty-infra
//! artifact docker-compose.yml 0644 <sha256>
//! |services:
//! |  mosquitto:
//! end
//! diff docker-compose.yml
//! |--- a/docker-compose.yml
//! |+++ b/docker-compose.yml
//! end
//! ```
//!
//! A content block whose text has no final newline ends with a line `\` before `end`.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{Action, Change, NodePlan, Plan, PlannedArtifact, PlannedStatus};
use crate::model::{Instance, NodeName, ServiceName};

pub const FORMAT_VERSION: u32 = 2;
const MAGIC: &str = "homelab-plan";
/// The line of a node whose pinned trust roots differ from the plan's.
const TRUST_ROTATE: &str = "trust-rotate";
pub const SIGNATURE_BEGIN: &str = "-----BEGIN SSH SIGNATURE-----";
const SIGNATURE_END: &str = "-----END SSH SIGNATURE-----";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct PlanFileError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

/// A plan file is large only if something is wrong; never read more than this.
pub const MAX_PLAN_BYTES: u64 = 64 * 1024 * 1024;

/// Why a plan file could not be read as a plan.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read `{}`: {source}", .path.display())]
    Unreadable { path: PathBuf, source: std::io::Error },

    #[error("`{}` is {size} bytes, more than a plan can be", .path.display())]
    TooLarge { path: PathBuf, size: u64 },

    #[error("`{}` is not UTF-8 text: it is not a homelab plan", .path.display())]
    NotUtf8 { path: PathBuf },

    #[error(transparent)]
    Format(#[from] PlanFileError),

    #[error(
        "`{}`: its signed bytes hash to id `{id}`, not the id in its name: the plan was changed after it was made; plan again",
        .path.display()
    )]
    IdMismatch { path: PathBuf, id: String },
}

/// A plan file as read from disk: its id (from its signed bytes), the signed bytes, the
/// planner's signature and the plan. The signature is not verified here.
#[derive(Debug)]
pub struct LoadedPlan {
    pub path: PathBuf,
    pub id: String,
    pub body: String,
    pub signature: String,
    pub plan: Plan,
    /// The signed bytes' SHA-256 (the id's) and SHA-512, hashed once for every signature
    /// checked over them (the planner's and each approval's).
    pub digests: crate::digest::Digests,
}

/// Reads a text file of at most `MAX_PLAN_BYTES` (plans and approvals).
pub fn read_bounded(path: &Path) -> Result<String, ReadError> {
    let unreadable = |source| ReadError::Unreadable { path: path.to_path_buf(), source };
    let meta = fs::metadata(path).map_err(unreadable)?;
    if meta.len() > MAX_PLAN_BYTES {
        return Err(ReadError::TooLarge { path: path.to_path_buf(), size: meta.len() });
    }
    let bytes = fs::read(path).map_err(unreadable)?;
    String::from_utf8(bytes).map_err(|_| ReadError::NotUtf8 { path: path.to_path_buf() })
}

/// Reads a plan file and checks that its name is its id. Does not verify the signature.
pub fn read(path: &Path) -> Result<LoadedPlan, ReadError> {
    let text = read_bounded(path)?;
    from_text(&text, path, true)
}

/// What a listing needs of a plan file, read in one streaming pass that never holds more than
/// a line's first [`SUMMARY_LINE`] bytes (the operator page lists large plans in bounded
/// memory, issue 19): the header, each changed node with its kinds of change (as
/// `approve::policy::change_kind` tells them), the signature block and the digests of the
/// signed bytes, over which signatures are checked without the bytes. The framing is checked
/// as [`read`] checks it (version, the id in the name, one signature block that ends the file);
/// the content blocks are not decoded: [`read`] does that for a plan's own page and for apply.
#[derive(Debug, Clone)]
pub struct Summary {
    pub path: PathBuf,
    pub id: String,
    pub size: u64,
    pub created: String,
    pub expires: String,
    pub planner: String,
    pub summary: String,
    /// Each node with a change other than a no-op, in file order, with the kinds of change on
    /// it, sorted, once each.
    pub changes: Vec<(NodeName, Vec<&'static str>)>,
    pub signature: String,
    pub digests: crate::digest::Digests,
}

/// How much of a line [`summarize`] looks at: a header line is far shorter; content lines
/// (`|…`), however long, are only hashed.
pub const SUMMARY_LINE: usize = 4096;
/// The longest signature block [`summarize`] takes (an RSA-16384 one is about 6 KiB).
const SUMMARY_SIGNATURE: usize = 64 * 1024;

/// Reads a plan file's [`Summary`], streaming. Does not verify the signature.
pub fn summarize(path: &Path) -> Result<Summary, ReadError> {
    use std::io::{BufRead, BufReader};
    let unreadable = |source| ReadError::Unreadable { path: path.to_path_buf(), source };
    let file = fs::File::open(path).map_err(unreadable)?;
    let size = file.metadata().map_err(unreadable)?.len();
    if size > MAX_PLAN_BYTES {
        return Err(ReadError::TooLarge { path: path.to_path_buf(), size });
    }
    let shown = path.display().to_string();
    let mut input = BufReader::with_capacity(64 * 1024, file);
    let mut digests = crate::digest::Digesting::default();
    let mut s = Scan::default();
    // The current line's first bytes, not yet hashed (it may be the signature's first line,
    // which is not signed); `spilled`: the line outgrew them and its bytes went to the hashes.
    let mut head: Vec<u8> = Vec::new();
    let mut spilled = false;
    let mut lines = 0usize;
    let mut read = 0u64;
    loop {
        let buf = input.fill_buf().map_err(unreadable)?;
        if buf.is_empty() {
            break;
        }
        let (part, ended) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..=i], true),
            None => (buf, false),
        };
        let n = part.len();
        read += n as u64;
        if read > MAX_PLAN_BYTES {
            return Err(ReadError::TooLarge { path: path.to_path_buf(), size: read });
        }
        if let Some(sig) = &mut s.signature {
            // After the signed bytes: the signature block, bounded.
            if sig.len() + n > SUMMARY_SIGNATURE {
                return Err(ReadError::Format(PlanFileError {
                    file: shown,
                    line: lines + 1,
                    message: "the signature block is longer than a signature can be".to_owned(),
                }));
            }
            sig.extend_from_slice(part);
        } else if spilled {
            digests.update(part);
        } else if head.len() + n > SUMMARY_LINE {
            digests.update(&head);
            digests.update(part);
            s.line(&head, lines + 1, &shown)?;
            head.clear();
            spilled = true;
        } else {
            head.extend_from_slice(part);
        }
        input.consume(n);
        if ended {
            lines += 1;
            if s.signature.is_none() && !spilled {
                let line = &head[..head.len() - 1];
                if line == SIGNATURE_BEGIN.as_bytes() {
                    s.signature = Some(head.clone());
                } else {
                    digests.update(&head);
                    s.line(line, lines, &shown)?;
                }
            }
            head.clear();
            spilled = false;
        }
    }
    let Some(signature) = s.signature.take() else {
        return Err(ReadError::Format(PlanFileError {
            file: shown,
            line: lines,
            message: format!("expected a signature block (`{SIGNATURE_BEGIN}`) after the plan, found none: the plan is unsigned or truncated; re-run `homelab plan`"),
        }));
    };
    let signature = String::from_utf8(signature)
        .map_err(|_| ReadError::NotUtf8 { path: path.to_path_buf() })?;
    // The block's own rules, as `read` checks them.
    split_signed(&signature, &shown)?;
    let digests = digests.finish();
    // The plan's id, as `plan_id` says it: the SHA-256 of the signed bytes.
    let id = id_of(&digests.sha256);
    let stem = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".plan"));
    if stem != Some(id.as_str()) {
        return Err(ReadError::IdMismatch { path: path.to_path_buf(), id });
    }
    let missing = |what: &str| {
        ReadError::Format(PlanFileError {
            file: shown.clone(),
            line: 1,
            message: format!("expected a `{what}` line in the plan's header"),
        })
    };
    let mut changes: Vec<(NodeName, Vec<&'static str>)> = Vec::new();
    for (node, cs) in s.nodes {
        let mut kinds: Vec<&'static str> = cs.iter().filter_map(ScanChange::kind).collect();
        if s.rotating.contains(&node) {
            kinds.push(crate::model::TRUST_KIND);
        }
        kinds.sort_unstable();
        kinds.dedup();
        if !kinds.is_empty() {
            changes.push((node, kinds));
        }
    }
    Ok(Summary {
        path: path.to_path_buf(),
        id,
        size,
        created: s.created.ok_or_else(|| missing("created"))?,
        expires: s.expires.ok_or_else(|| missing("expires"))?,
        planner: s.planner.ok_or_else(|| missing("planner"))?,
        summary: s.summary.ok_or_else(|| missing("summary"))?,
        changes,
        signature,
        digests,
    })
}

/// What [`summarize`] gathers line by line.
#[derive(Default)]
struct Scan {
    created: Option<String>,
    expires: Option<String>,
    planner: Option<String>,
    summary: Option<String>,
    nodes: Vec<(NodeName, Vec<ScanChange>)>,
    /// Nodes with a `trust-rotate` line (kind `trust`).
    rotating: BTreeSet<NodeName>,
    /// The signature block, once its first line was read.
    signature: Option<Vec<u8>>,
}

struct ScanChange {
    action: Action,
    /// A `restore` line: the service's data put back (`homelab restore`).
    restore: bool,
    /// `name mode sha256` of each artifact and each prior file.
    artifacts: Vec<String>,
    prior: Vec<String>,
}

impl ScanChange {
    /// As `approve::policy::change_kind`: an update that writes no file is a restart.
    fn kind(&self) -> Option<&'static str> {
        Some(match self.action {
            Action::NoOp => return None,
            Action::Create => "create",
            Action::Replace => "replace",
            Action::Delete => "delete",
            Action::Update if self.restore => "restore",
            Action::Update => {
                let same = self.artifacts.len() == self.prior.len()
                    && self.artifacts.iter().all(|a| self.prior.contains(a));
                if same {
                    "restart"
                } else {
                    "update"
                }
            }
        })
    }
}

impl Scan {
    /// One line of the signed bytes (its first [`SUMMARY_LINE`] bytes, no newline).
    fn line(&mut self, line: &[u8], n: usize, file: &str) -> Result<(), ReadError> {
        let err = |message: String| {
            ReadError::Format(PlanFileError { file: file.to_owned(), line: n, message })
        };
        if line.first() == Some(&b'|') {
            return Ok(());
        }
        let Ok(line) = std::str::from_utf8(line) else {
            return Err(err("a header line that is not UTF-8".to_owned()));
        };
        if n == 1 {
            check_version(&format!("{line}\n"), file)?;
            return Ok(());
        }
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        let field = |slot: &mut Option<String>| {
            if slot.is_none() {
                *slot = Some(rest.to_owned());
            }
        };
        match word {
            "created" => field(&mut self.created),
            "expires" => field(&mut self.expires),
            "planner" => field(&mut self.planner),
            "summary" => field(&mut self.summary),
            "node" => {
                let name = rest.split(' ').next().unwrap_or_default();
                let node = NodeName::parse(name).map_err(|e| {
                    err(format!("expected a node id ({e}), found `{}`", shorten(name)))
                })?;
                self.nodes.push((node, Vec::new()));
            }
            "change" => {
                let action = rest.split(' ').next().unwrap_or_default();
                let action = Action::parse(action).ok_or_else(|| {
                    err(format!(
                        "expected create, update, replace, delete or no-op, found `{}`",
                        shorten(action)
                    ))
                })?;
                let node = self
                    .nodes
                    .last_mut()
                    .ok_or_else(|| err("a `change` before any `node`".to_owned()))?;
                node.1.push(ScanChange {
                    action,
                    restore: false,
                    artifacts: Vec::new(),
                    prior: Vec::new(),
                });
            }
            "restore" => {
                if let Some(c) = self.nodes.last_mut().and_then(|n| n.1.last_mut()) {
                    c.restore = true;
                }
            }
            TRUST_ROTATE => {
                if let Some((node, _)) = self.nodes.last() {
                    self.rotating.insert(node.clone());
                }
            }
            "artifact" | "prior" => {
                if let Some(c) = self.nodes.last_mut().and_then(|n| n.1.last_mut()) {
                    // `name mode sha256`, without the `base64` mark of a binary artifact.
                    let key: Vec<&str> = rest.split(' ').take(3).collect();
                    let list = if word == "artifact" { &mut c.artifacts } else { &mut c.prior };
                    list.push(key.join(" "));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// A plan file's `text`, as read from `path` (with `named`, the name its id is checked
/// against; without, a plan that came over the wire, named `<id>.plan` after its id). Does not
/// verify the signature.
pub fn from_text(text: &str, path: &Path, named: bool) -> Result<LoadedPlan, ReadError> {
    from_text_with(text, path, named, Diffs::Shown)
}

/// Whether a decoded plan carries what a reviewer is shown (its changes' unified diffs): a
/// node that runs a plan shows nothing, and each node receives the whole plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Diffs {
    Shown,
    NotShown,
}

/// [`from_text`], the diffs computed or not.
pub fn from_text_with(
    text: &str,
    path: &Path,
    named: bool,
    diffs: Diffs,
) -> Result<LoadedPlan, ReadError> {
    if text.len() as u64 > MAX_PLAN_BYTES {
        return Err(ReadError::TooLarge { path: path.to_path_buf(), size: text.len() as u64 });
    }
    let shown = path.display().to_string();
    check_version(text, &shown)?;
    let (body, signature) = split_signed(text, &shown)?;
    let digests = crate::digest::Digests::of(body.as_bytes());
    let id = id_of(&digests.sha256);
    let path = if named { path.to_path_buf() } else { path.join(format!("{id}.plan")) };
    let path = path.as_path();
    let stem = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".plan"));
    if stem != Some(id.as_str()) {
        return Err(ReadError::IdMismatch { path: path.to_path_buf(), id });
    }
    let plan = decode_with(body, &shown, diffs)?;
    Ok(LoadedPlan {
        path: path.to_path_buf(),
        id,
        body: body.to_owned(),
        signature: signature.to_owned(),
        plan,
        digests,
    })
}

/// A signed plan file: the signed bytes followed by the armored signature over them.
pub fn join(body: &str, signature: &str) -> String {
    format!("{body}{signature}")
}

/// The id of a plan: the first 16 hex digits of the SHA-256 of its signed bytes.
pub fn plan_id(signed: &[u8]) -> String {
    id_of(&Sha256::digest(signed))
}

/// [`plan_id`] of the signed bytes' SHA-256.
fn id_of(sha256: &[u8]) -> String {
    sha256.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Splits a plan file into its signed bytes and its armored signature, exactly as the README's
/// `sed` recipe does: at the first line that is `-----BEGIN SSH SIGNATURE-----` and nothing else
/// (no trailing blank, no CR). The signature must be one armored block and the file must end
/// with it: nothing unsigned may follow what a reviewer reads as signed.
pub fn split_signed<'a>(text: &'a str, file: &str) -> Result<(&'a str, &'a str), PlanFileError> {
    let at = text
        .match_indices(SIGNATURE_BEGIN)
        .find(|(i, _)| {
            (*i == 0 || text.as_bytes()[i - 1] == b'\n')
                && text.as_bytes().get(i + SIGNATURE_BEGIN.len()) == Some(&b'\n')
        })
        .map(|(i, _)| i)
        .ok_or_else(|| PlanFileError {
            file: file.to_owned(),
            line: text.lines().count(),
            message: format!("expected a signature block (`{SIGNATURE_BEGIN}`) after the plan, found none: the plan is unsigned or truncated; re-run `homelab plan`"),
        })?;
    let signature = &text[at..];
    let start_line = text[..at].matches('\n').count() + 1;
    let mut lines = signature.split('\n').enumerate().skip(1);
    let mut ended = false;
    for (n, l) in lines.by_ref() {
        if l == SIGNATURE_END {
            ended = true;
            break;
        }
        if l.is_empty() || !l.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)) {
            return Err(PlanFileError {
                file: file.to_owned(),
                line: start_line + n,
                message: format!(
                    "expected base64 or `{SIGNATURE_END}` in the signature, found `{}`",
                    shorten(l)
                ),
            });
        }
    }
    let rest: Vec<(usize, &str)> = lines.collect();
    if !ended || rest.iter().any(|(_, l)| !l.is_empty()) || rest.len() > 1 {
        let line =
            rest.iter().find(|(_, l)| !l.is_empty()).map_or(start_line, |(n, _)| start_line + n);
        return Err(PlanFileError {
            file: file.to_owned(),
            line,
            message: if ended {
                "unexpected text after the signature: nothing may follow the signed plan's signature; re-run `homelab plan`".to_owned()
            } else {
                format!("the signature has no `{SIGNATURE_END}` line: the plan is truncated; re-run `homelab plan`")
            },
        });
    }
    Ok((&text[..at], signature))
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

fn block(out: &mut String, text: &str) {
    for line in text.split_inclusive('\n') {
        out.push('|');
        out.push_str(line.strip_suffix('\n').unwrap_or(line));
        out.push('\n');
    }
    if !text.is_empty() && !text.ends_with('\n') {
        out.push_str("\\\n");
    }
    out.push_str("end\n");
}

/// The canonical bytes of a plan (what is signed).
pub fn encode(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{MAGIC} {FORMAT_VERSION}");
    let _ = writeln!(
        out,
        "# Review every change below. Approve with `homelab approve plans/<id>.plan`."
    );
    let _ = writeln!(out, "created {}", plan.created);
    let _ = writeln!(out, "expires {}", plan.expires);
    let _ = writeln!(out, "planner {}", one_line(&plan.planner));
    let _ = writeln!(out, "commit {} {}", plan.commit, if plan.dirty { "dirty" } else { "clean" });
    let _ = writeln!(out, "summary {}", plan.summary());
    for (name, text) in &plan.trust {
        let _ = writeln!(out, "trust {name} {}", crate::digest::sha256_hex(text.as_bytes()));
        block(&mut out, text);
    }
    for n in &plan.nodes {
        out.push('\n');
        match &n.status {
            PlannedStatus::Unreachable { reason } => {
                let _ = writeln!(out, "node {} unreachable", n.node);
                root_line(&mut out, n);
                let _ = writeln!(out, "reason {}", one_line(reason));
            }
            PlannedStatus::Reachable { fingerprint, actual } => {
                let _ = writeln!(out, "node {} reachable", n.node);
                root_line(&mut out, n);
                let _ = writeln!(out, "fingerprint {fingerprint}");
                for a in actual {
                    let _ = writeln!(out, "actual {}", one_line(a));
                }
                if let Some(e) = &n.engine {
                    let _ = writeln!(out, "engine {}", one_line(e));
                }
                if n.pinned_match == Some(false) {
                    let _ = writeln!(out, "{TRUST_ROTATE}");
                }
            }
        }
        for c in &n.changes {
            out.push('\n');
            let _ = writeln!(out, "change {} {}", c.action, c.instance);
            let _ = writeln!(out, "reason {}", one_line(&c.reason));
            if !c.after.is_empty() {
                let after: Vec<String> = c.after.iter().map(ToString::to_string).collect();
                let _ = writeln!(out, "after {}", after.join(" "));
            }
            if let Some(rt) = &c.runtime {
                let h = &rt.healthcheck;
                let _ = writeln!(
                    out,
                    "healthcheck interval={} timeout={} retries={} start_period={} stable_for={}",
                    h.interval.as_secs(),
                    h.timeout.as_secs(),
                    h.retries,
                    h.start_period.as_secs(),
                    h.stable_for.as_secs()
                );
                if !rt.secrets.is_empty() {
                    let _ = writeln!(out, "secrets {}", rt.secrets.join(" "));
                }
                for f in &rt.folders {
                    let mut line = format!("folder {}", f.path);
                    if let Some(o) = &f.owner {
                        line.push_str(&format!(" owner={o}"));
                    }
                    if let Some(m) = &f.mode {
                        line.push_str(&format!(" mode={m}"));
                    }
                    let _ = writeln!(out, "{line}");
                }
                for n in &rt.networks {
                    let _ = writeln!(out, "network {n}");
                }
                if !rt.variables.is_empty() {
                    let vars: Vec<String> =
                        rt.variables.iter().map(|v| format!("{}:{}", v.name, v.line)).collect();
                    let _ = writeln!(out, "variables {}", vars.join(" "));
                }
                if let Some(s) = &rt.snapshot {
                    let mut line = format!(
                        "snapshot {} min_free={}",
                        if s.stop { "stop" } else { "live" },
                        s.min_free
                    );
                    for p in &s.paths {
                        line.push(' ');
                        line.push_str(p);
                    }
                    let _ = writeln!(out, "{line}");
                }
                for (set, secs) in &rt.watched {
                    let _ = writeln!(out, "backup-watch {set} max_age={secs}");
                }
                if let Some(l) = &rt.limits {
                    let _ = writeln!(out, "exposure {}", l.exposure.as_str());
                    if let Some(a) = l.lan_address {
                        let _ = writeln!(out, "lan-address {a}");
                    }
                    for p in &l.paths {
                        let _ = writeln!(out, "host-path {}", one_line(p));
                    }
                }
            }
            if let Some(r) = &c.restore {
                let _ = writeln!(out, "restore {} {}", r.kind(), r.id);
                if let super::RestoreFrom::Restic { repository, options } = &r.from {
                    let _ = writeln!(out, "restore-repository {}", one_line(repository));
                    for o in options {
                        let _ = writeln!(out, "restore-option {}", one_line(o));
                    }
                }
            }
            for a in &c.artifacts {
                match &a.binary {
                    None => {
                        let _ = writeln!(out, "artifact {} {:04o} {}", a.name, a.mode, a.sha256);
                        block(&mut out, &a.text);
                    }
                    // Bytes that are not text travel as base64 lines, 76 to a line.
                    Some(b) => {
                        let _ =
                            writeln!(out, "artifact {} {:04o} {} base64", a.name, a.mode, a.sha256);
                        let encoded = crate::digest::base64_encode(b);
                        let mut lines = String::new();
                        for chunk in encoded.as_bytes().chunks(76) {
                            lines.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
                            lines.push('\n');
                        }
                        block(&mut out, &lines);
                    }
                }
            }
            for a in &c.prior {
                let _ = writeln!(out, "prior {} {:04o} {}", a.name, a.mode, a.sha256);
                block(&mut out, &a.text);
            }
        }
    }
    out
}

/// `root <path>`: the runtime root the node's artifacts were rendered for, when `--root` gave
/// it (absent: the topology's). Written only then, so other plans keep their bytes.
fn root_line(out: &mut String, n: &NodePlan) {
    if let Some(root) = &n.root {
        let _ = writeln!(out, "root {}", one_line(root));
    }
}

struct Parser<'a> {
    file: &'a str,
    lines: Vec<&'a str>,
    at: usize,
}

impl<'a> Parser<'a> {
    fn err(&self, message: impl Into<String>) -> PlanFileError {
        PlanFileError {
            file: self.file.to_owned(),
            line: self.at.max(1),
            message: bounded(message.into()),
        }
    }

    /// The next line that is not blank or a comment, with its 1-based number in `self.at`.
    fn next(&mut self) -> Option<&'a str> {
        while self.at < self.lines.len() {
            let l = self.lines[self.at];
            self.at += 1;
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            return Some(l);
        }
        None
    }

    fn peek(&self) -> Option<&'a str> {
        self.lines[self.at..].iter().copied().find(|l| !l.is_empty() && !l.starts_with('#'))
    }

    fn expect(&mut self, key: &str) -> Result<&'a str, PlanFileError> {
        match self.next() {
            Some(l) => match l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')) {
                Some(rest) => Ok(rest),
                None => Err(self.err(format!("expected `{key} ...`, found `{}`", shorten(l)))),
            },
            None => {
                Err(self
                    .err(format!("expected `{key} ...`, found the end of the plan (truncated?)")))
            }
        }
    }

    fn content(&mut self) -> Result<String, PlanFileError> {
        let mut out = String::new();
        loop {
            let Some(&l) = self.lines.get(self.at) else {
                return Err(self.err(
                    "expected `end` after a content block, found the end of the plan (truncated?)",
                ));
            };
            self.at += 1;
            if l == "end" {
                return Ok(out);
            }
            if l == "\\" {
                if !out.ends_with('\n') {
                    return Err(self.err("`\\` must follow a content line"));
                }
                out.pop();
                if self.lines.get(self.at) != Some(&"end") {
                    return Err(self.err("expected `end` after `\\`"));
                }
                continue;
            }
            match l.strip_prefix('|') {
                Some(text) => {
                    out.push_str(text);
                    out.push('\n');
                }
                None => {
                    return Err(self.err(format!(
                        "expected a content line starting with `|` or `end`, found `{}`",
                        shorten(l)
                    )))
                }
            }
        }
    }
}

/// Apply runs a node's changes in plan order, each waiting for its `after` instances: a change
/// that waits for a later change of its own node, or a circle of waits across nodes, would hold
/// the node lock forever. Both are refused here, before anything runs.
fn check_order(
    plan: &Plan,
    file: &str,
    lines: &std::collections::BTreeMap<Instance, usize>,
) -> Result<(), PlanFileError> {
    let err = |inst: &Instance, message: String| PlanFileError {
        file: file.to_owned(),
        line: lines.get(inst).copied().unwrap_or(1),
        message: bounded(message),
    };
    let mut graph = petgraph::graph::DiGraph::<&Instance, ()>::new();
    let index: std::collections::BTreeMap<&Instance, _> = plan
        .nodes
        .iter()
        .flat_map(|n| &n.changes)
        .map(|c| (&c.instance, graph.add_node(&c.instance)))
        .collect();
    for n in &plan.nodes {
        for (i, c) in n.changes.iter().enumerate() {
            for dep in &c.after {
                if dep == &c.instance {
                    return Err(err(&c.instance, format!("`{dep}` waits for itself")));
                }
                let later = n.changes[i + 1..].iter().any(|d| &d.instance == dep);
                if later {
                    return Err(err(
                        &c.instance,
                        format!(
                            "`{}` waits for `{dep}`, which comes after it on the same node: apply would wait forever; the plan was edited",
                            c.instance
                        ),
                    ));
                }
                if let (Some(&from), Some(&to)) = (index.get(&c.instance), index.get(dep)) {
                    graph.add_edge(from, to, ());
                }
            }
        }
    }
    if let Err(cycle) = petgraph::algo::toposort(&graph, None) {
        let at = graph[cycle.node_id()];
        return Err(err(
            at,
            format!("`{at}` is in a circle of `after` waits across nodes: apply would wait forever; the plan was edited"),
        ));
    }
    Ok(())
}

/// An error message names what it found, but a hostile file must not make it megabytes long.
fn bounded(message: String) -> String {
    const MAX: usize = 300;
    if message.chars().count() <= MAX {
        return message;
    }
    let mut s: String = message.chars().take(MAX).collect();
    s.push('…');
    s
}

fn shorten(l: &str) -> String {
    let mut s: String = l.chars().take(60).collect();
    if s.len() < l.len() {
        s.push('…');
    }
    s
}

fn parse_instance(s: &str) -> Option<Instance> {
    let (svc, node) = s.split_once('@')?;
    Some(Instance { service: ServiceName::parse(svc).ok()?, node: NodeName::parse(node).ok()? })
}

/// Checks the first line of a plan file, `homelab-plan <version>`, before anything else: the
/// layout, the signed bytes and the id of another version may differ, so a file of another
/// version is refused naming both versions, never as a changed or corrupt plan.
pub fn check_version(text: &str, file: &str) -> Result<(), PlanFileError> {
    let err = |message: String| PlanFileError {
        file: file.to_owned(),
        line: 1,
        message: bounded(message),
    };
    let first = text.split('\n').next().unwrap_or_default();
    if text.is_empty() {
        return Err(err(format!("expected `{MAGIC} {FORMAT_VERSION}`, found an empty file")));
    }
    match first.strip_prefix(MAGIC).and_then(|r| r.strip_prefix(' ')) {
        Some(v) if v == FORMAT_VERSION.to_string() => Ok(()),
        Some(v) => Err(err(format!(
            "this plan has format version {}; this homelab reads version {FORMAT_VERSION}: plan again with this version of homelab",
            shorten(v)
        ))),
        None => Err(err(format!(
            "expected `{MAGIC} {FORMAT_VERSION}` (a homelab plan), found `{}`",
            shorten(first)
        ))),
    }
}

/// Parses the signed bytes of a plan. `file` is the name shown in errors.
pub fn decode(body: &str, file: &str) -> Result<Plan, PlanFileError> {
    decode_with(body, file, Diffs::Shown)
}

fn decode_with(body: &str, file: &str, diffs: Diffs) -> Result<Plan, PlanFileError> {
    let mut p = Parser { file, lines: body.split('\n').collect(), at: 0 };
    if p.lines.last() == Some(&"") {
        p.lines.pop();
    }
    check_version(body, file)?;
    p.next();
    let created = p.expect("created")?.to_owned();
    let expires = p.expect("expires")?.to_owned();
    for (t, what) in [(&created, "created"), (&expires, "expires")] {
        if humantime::parse_rfc3339(t).is_err() {
            return Err(p.err(format!("expected an RFC 3339 time in `{what}`, found `{t}`")));
        }
    }
    let planner = p.expect("planner")?.to_owned();
    let commit_line = p.expect("commit")?;
    let (commit, state) =
        commit_line.rsplit_once(' ').ok_or_else(|| p.err("expected `commit <id> clean|dirty`"))?;
    let dirty = match state {
        "clean" => false,
        "dirty" => true,
        _ => return Err(p.err(format!("expected `clean` or `dirty`, found `{state}`"))),
    };
    let summary = p.expect("summary")?.to_owned();
    let summary_line = p.at;
    let mut trust: Vec<(String, String)> = Vec::new();
    while p.peek().is_some_and(|l| l.starts_with("trust ")) {
        let line = p.expect("trust")?.to_owned();
        let (name, sha) =
            line.split_once(' ').ok_or_else(|| p.err("expected `trust <file> <sha256>`"))?;
        let known = [crate::model::TRUST_SIGNERS, crate::model::TRUST_POLICY];
        if !known.contains(&name) || trust.iter().any(|(n, _)| n == name) {
            return Err(p.err(format!(
                "expected one `trust` block each for {}, found `{}`",
                known.join(" and "),
                shorten(name)
            )));
        }
        let text = p.content()?;
        if crate::digest::sha256_hex(text.as_bytes()) != sha {
            return Err(p.err(format!(
                "the trust root `{name}` does not match its sha256: the plan was edited"
            )));
        }
        trust.push((name.to_owned(), text));
    }
    let mut nodes: Vec<NodePlan> = Vec::new();
    // The line of every change, to name it when the changes do not hold together.
    let mut change_lines: std::collections::BTreeMap<Instance, usize> = Default::default();
    while let Some(l) = p.next() {
        if let Some(rest) = l.strip_prefix("node ") {
            let (name, status) = rest
                .split_once(' ')
                .ok_or_else(|| p.err("expected `node <id> reachable|unreachable`"))?;
            let node = NodeName::parse(name)
                .map_err(|e| p.err(format!("expected a node id ({e}), found `{name}`")))?;
            if nodes.last().is_some_and(|n| n.node >= node) {
                return Err(p.err(format!("node `{node}` is out of order or repeated")));
            }
            let root = if p.peek().is_some_and(|l| l.starts_with("root ")) {
                let root = p.expect("root")?;
                if !root.starts_with('/') {
                    return Err(p.err(format!(
                        "expected an absolute runtime root in `root`, found `{}`",
                        shorten(root)
                    )));
                }
                Some(root.to_owned())
            } else {
                None
            };
            let status = match status {
                "reachable" => {
                    let fingerprint = p.expect("fingerprint")?.to_owned();
                    let mut actual = Vec::new();
                    while p.peek().is_some_and(|l| l.starts_with("actual ")) {
                        actual.push(p.expect("actual")?.to_owned());
                    }
                    // The fingerprint is the digest of these lines: check it here, so the lines
                    // a reviewer is shown are the ones apply compares with the node.
                    if crate::observe::fingerprint_of(&actual) != fingerprint {
                        return Err(p.err(format!(
                            "the fingerprint of node `{node}` is not the digest of its `actual` lines: the plan was edited"
                        )));
                    }
                    PlannedStatus::Reachable { fingerprint, actual }
                }
                "unreachable" => {
                    PlannedStatus::Unreachable { reason: p.expect("reason")?.to_owned() }
                }
                other => {
                    return Err(
                        p.err(format!("expected `reachable` or `unreachable`, found `{other}`"))
                    )
                }
            };
            let engine = if p.peek().is_some_and(|l| l.starts_with("engine ")) {
                Some(p.expect("engine")?.to_owned())
            } else {
                None
            };
            // The node's pinned trust roots are not the commit's: apply takes the plan to it,
            // work or none, so the rotation reaches it (approved under its old roots).
            let rotate = matches!(status, PlannedStatus::Reachable { .. })
                && p.peek().is_some_and(|l| l == TRUST_ROTATE);
            if rotate {
                p.next();
            }
            nodes.push(NodePlan {
                node,
                status,
                changes: Vec::new(),
                engine,
                root,
                pinned_match: rotate.then_some(false),
            });
        } else if let Some(rest) = l.strip_prefix("change ") {
            let node = nodes.last_mut().ok_or_else(|| p.err("a `change` before any `node`"))?;
            let (action, inst) = rest
                .split_once(' ')
                .ok_or_else(|| p.err("expected `change <action> <service>@<node>`"))?;
            let action = Action::parse(action).ok_or_else(|| {
                p.err(format!(
                    "expected create, update, replace, delete or no-op, found `{action}`"
                ))
            })?;
            let instance = parse_instance(inst)
                .ok_or_else(|| p.err(format!("expected `<service>@<node>`, found `{inst}`")))?;
            if instance.node != node.node {
                let msg = format!("`{instance}` is listed under node `{}`", node.node);
                return Err(p.err(msg));
            }
            if let Some(first) = change_lines.insert(instance.clone(), p.at) {
                return Err(p.err(format!(
                    "`{instance}` is changed twice (first on line {first}): a plan has one change per service per node; the plan was edited"
                )));
            }
            node.changes.push(Change {
                instance,
                action,
                reason: String::new(),
                after: Vec::new(),
                artifacts: Vec::new(),
                prior: Vec::new(),
                diffs: Vec::new(),
                runtime: None,
                restore: None,
            });
            let reason = p.expect("reason")?.to_owned();
            let change = nodes.last_mut().and_then(|n| n.changes.last_mut()).expect("just pushed");
            change.reason = reason;
        } else {
            if nodes.last().and_then(|n| n.changes.last()).is_none() {
                return Err(p.err(format!("expected `node` or `change`, found `{}`", shorten(l))));
            }
            if let Some(rest) = l.strip_prefix("healthcheck ") {
                let mut f = std::collections::BTreeMap::new();
                for kv in rest.split(' ') {
                    let (k, v) = kv
                        .split_once('=')
                        .ok_or_else(|| p.err(format!("expected `key=seconds`, found `{kv}`")))?;
                    let v: u64 = v
                        .parse()
                        .map_err(|_| p.err(format!("expected whole seconds in `{kv}`")))?;
                    f.insert(k, v);
                }
                let get = |k: &str| {
                    f.get(k).copied().ok_or_else(|| p.err(format!("`healthcheck` lacks `{k}=`")))
                };
                // Bounded as validation bounds the contract: apply sleeps these.
                let secs = |k: &str| -> Result<std::time::Duration, PlanFileError> {
                    let v = get(k)?;
                    if v > 86_400 {
                        return Err(p.err(format!("`{k}={v}` is more than a day")));
                    }
                    Ok(std::time::Duration::from_secs(v))
                };
                let retries = get("retries")?;
                if !(1..=100).contains(&retries) {
                    return Err(p.err(format!("expected 1 to 100 retries, found {retries}")));
                }
                let healthcheck = crate::model::Healthcheck {
                    interval: secs("interval")?,
                    timeout: secs("timeout")?,
                    retries: retries as u32,
                    start_period: secs("start_period")?,
                    // A plan written before the stability window had none: its default.
                    stable_for: if f.contains_key("stable_for") {
                        secs("stable_for")?.min(crate::model::MAX_STABLE_FOR)
                    } else {
                        crate::model::DEFAULT_STABLE_FOR
                    },
                };
                let change = nodes.last_mut().and_then(|n| n.changes.last_mut()).expect("checked");
                change.runtime = Some(super::Runtime {
                    healthcheck,
                    secrets: Vec::new(),
                    variables: Vec::new(),
                    folders: Vec::new(),
                    snapshot: None,
                    limits: None,
                    watched: Vec::new(),
                    networks: Vec::new(),
                });
            } else if let Some(rest) = l.strip_prefix("exposure ") {
                let change = nodes.last_mut().and_then(|n| n.changes.last_mut()).expect("checked");
                let rt = change
                    .runtime
                    .as_mut()
                    .ok_or_else(|| p.err("`exposure` must follow `healthcheck`"))?;
                let exposure = crate::model::Exposure::parse(rest).ok_or_else(|| {
                    p.err(format!(
                        "expected `internal`, `lan`, `tailnet` or `public`, found `{}`",
                        shorten(rest)
                    ))
                })?;
                if rt.limits.is_some() {
                    return Err(p.err("a second `exposure` for the same change"));
                }
                rt.limits = Some(super::Limits { exposure, lan_address: None, paths: Vec::new() });
            } else if let Some(rest) = l.strip_prefix("lan-address ") {
                let change = nodes.last_mut().and_then(|n| n.changes.last_mut()).expect("checked");
                let limits = change
                    .runtime
                    .as_mut()
                    .and_then(|rt| rt.limits.as_mut())
                    .filter(|l| l.lan_address.is_none() && l.paths.is_empty())
                    .ok_or_else(|| p.err("`lan-address` must follow `exposure`, once"))?;
                // As the topology's check takes it: the node judges ports against it.
                let ip = crate::model::lan_address(rest).map_err(|expected| {
                    p.err(format!("expected {expected}, found `{}`", shorten(rest)))
                })?;
                limits.lan_address = Some(ip);
            } else if let Some(rest) = l.strip_prefix("host-path ") {
                let change = nodes.last_mut().and_then(|n| n.changes.last_mut()).expect("checked");
                let limits = change
                    .runtime
                    .as_mut()
                    .and_then(|rt| rt.limits.as_mut())
                    .ok_or_else(|| p.err("`host-path` must follow `exposure`"))?;
                limits.paths.push(rest.to_owned());
            } else if let Some(rest) = l.strip_prefix("network ") {
                let change = nodes.last_mut().and_then(|n| n.changes.last_mut()).expect("checked");
                let rt = change
                    .runtime
                    .as_mut()
                    .ok_or_else(|| p.err("`network` must follow `healthcheck`"))?;
                // The contract's check: the name reaches a script on the node.
                if !crate::model::network_name_ok(rest) {
                    return Err(p.err(format!(
                        "`network`: expected a Docker network name, found `{}`",
                        shorten(rest)
                    )));
                }
                if rt.networks.iter().any(|n| n == rest) {
                    return Err(p.err(format!("`network {rest}` twice for the same change")));
                }
                rt.networks.push(rest.to_owned());
            } else if let Some(rest) = l.strip_prefix("folder ") {
                let change = nodes.last_mut().and_then(|n| n.changes.last_mut()).expect("checked");
                let svc = change.instance.service.to_string();
                let rt = change
                    .runtime
                    .as_mut()
                    .ok_or_else(|| p.err("`folder` must follow `healthcheck`"))?;
                let mut words = rest.split(' ');
                let path = words.next().unwrap_or_default().to_owned();
                let (mut owner, mut mode) = (None, None);
                for w in words {
                    match w.split_once('=') {
                        Some(("owner", v)) if owner.is_none() => owner = Some(v.to_owned()),
                        Some(("mode", v)) if mode.is_none() => mode = Some(v.to_owned()),
                        _ => {
                            return Err(p.err(format!("expected `owner=` or `mode=`, found `{w}`")))
                        }
                    }
                }
                // The same check as the contract's: these reach a script on the node.
                if let Some((_, why)) =
                    crate::model::Folder::problem(&svc, &path, owner.as_deref(), mode.as_deref())
                {
                    return Err(p.err(format!("`folder`: {why}")));
                }
                rt.folders.push(crate::model::Folder { path, owner, mode });
            } else if let Some(rest) = l.strip_prefix("snapshot ") {
                let change = nodes.last_mut().and_then(|n| n.changes.last_mut()).expect("checked");
                let rt = change
                    .runtime
                    .as_mut()
                    .ok_or_else(|| p.err("`snapshot` must follow `healthcheck`"))?;
                if rt.snapshot.is_some() {
                    return Err(p.err("a second `snapshot` line"));
                }
                let mut words = rest.split(' ');
                let stop = match words.next() {
                    Some("stop") => true,
                    Some("live") => false,
                    other => {
                        return Err(p.err(format!(
                            "`snapshot`: expected `stop` or `live`, found `{}`",
                            crate::quote::cut(other.unwrap_or_default())
                        )))
                    }
                };
                let min_free = words
                    .next()
                    .and_then(|w| w.strip_prefix("min_free="))
                    .and_then(|v| v.parse::<u8>().ok())
                    .filter(|v| *v <= 90)
                    .ok_or_else(|| p.err("`snapshot`: expected `min_free=<0 to 90>` second"))?;
                let mut paths = Vec::new();
                for w in words {
                    if !super::Snapshot::path_ok(w) {
                        return Err(p.err(format!(
                            "`snapshot`: expected paths relative to the runtime root, found `{}`",
                            crate::quote::cut(w)
                        )));
                    }
                    paths.push(w.to_owned());
                }
                rt.snapshot = Some(super::Snapshot { stop, min_free, paths });
            } else if let Some(rest) = l.strip_prefix("variables ") {
                let change = nodes.last_mut().and_then(|n| n.changes.last_mut()).expect("checked");
                let rt = change
                    .runtime
                    .as_mut()
                    .ok_or_else(|| p.err("`variables` must follow `healthcheck`"))?;
                for v in rest.split(' ') {
                    // `NAME:LINE`, the name as validation allows it: it reaches a script on
                    // the node.
                    let parsed = v.split_once(':').and_then(|(name, line)| {
                        let ok = !name.is_empty()
                            && !name.as_bytes()[0].is_ascii_digit()
                            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                        Some(super::Required { name: name.to_owned(), line: line.parse().ok()? })
                            .filter(|_| ok)
                    });
                    let Some(r) = parsed else {
                        let msg =
                            format!("expected `NAME:LINE` (a required variable), found `{v}`");
                        return Err(p.err(msg));
                    };
                    rt.variables.push(r);
                }
            } else if let Some(rest) = l.strip_prefix("secrets ") {
                let change = nodes.last_mut().and_then(|n| n.changes.last_mut()).expect("checked");
                let rt = change
                    .runtime
                    .as_mut()
                    .ok_or_else(|| p.err("`secrets` must follow `healthcheck`"))?;
                rt.secrets = rest.split(' ').map(str::to_owned).collect();
                // Names only, as validation allows them: they reach a script on the node.
                if let Some(bad) = rt.secrets.iter().find(|n| {
                    n.is_empty()
                        || n.as_bytes()[0].is_ascii_digit()
                        || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                }) {
                    let msg = format!("expected environment variable names, found `{bad}`");
                    return Err(p.err(msg));
                }
            } else if let Some(rest) = l.strip_prefix("backup-watch ") {
                let change = nodes.last_mut().and_then(|n| n.changes.last_mut()).expect("checked");
                let rt = change
                    .runtime
                    .as_mut()
                    .ok_or_else(|| p.err("`backup-watch` must follow `healthcheck`"))?;
                let parsed = rest.split_once(" max_age=").and_then(|(set, secs)| {
                    // A set's name reaches a path on the node: kebab-case, as validation has it.
                    let name_ok = !set.is_empty()
                        && set
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
                    Some((set.to_owned(), secs.parse::<u64>().ok()?)).filter(|_| name_ok)
                });
                let Some(w) = parsed else {
                    return Err(p.err(format!(
                        "expected `backup-watch <set> max_age=<seconds>`, found `{}`",
                        shorten(rest)
                    )));
                };
                rt.watched.push(w);
            } else if let Some(rest) = l.strip_prefix("restore ") {
                let change = nodes.last_mut().and_then(|n| n.changes.last_mut()).expect("checked");
                if change.restore.is_some() {
                    return Err(p.err("a second `restore` for the same change"));
                }
                let (kind, id) = rest.split_once(' ').unwrap_or((rest, ""));
                // An id reaches a script on the node: hex digits only.
                if !super::Restore::id_ok(id) {
                    return Err(p.err(format!(
                        "`restore`: expected a snapshot id (8 to 64 hex digits), found `{}`",
                        shorten(id)
                    )));
                }
                let from = match kind {
                    "local" => super::RestoreFrom::Local,
                    "restic" => super::RestoreFrom::Restic {
                        repository: String::new(),
                        options: Vec::new(),
                    },
                    _ => {
                        return Err(p.err(format!(
                            "`restore`: expected `local` or `restic`, found `{}`",
                            shorten(kind)
                        )))
                    }
                };
                change.restore = Some(super::Restore { id: id.to_owned(), from });
            } else if let Some(rest) = l.strip_prefix("restore-repository ") {
                let change = nodes.last_mut().and_then(|n| n.changes.last_mut()).expect("checked");
                match change.restore.as_mut().map(|r| &mut r.from) {
                    Some(super::RestoreFrom::Restic { repository, .. })
                        if repository.is_empty() =>
                    {
                        if rest.is_empty() {
                            return Err(p.err("`restore-repository` is empty"));
                        }
                        *repository = rest.to_owned();
                    }
                    _ => {
                        return Err(p.err("`restore-repository` must follow `restore restic`, once"))
                    }
                }
            } else if let Some(rest) = l.strip_prefix("restore-option ") {
                let change = nodes.last_mut().and_then(|n| n.changes.last_mut()).expect("checked");
                match change.restore.as_mut().map(|r| &mut r.from) {
                    Some(super::RestoreFrom::Restic { repository, options })
                        if !repository.is_empty() =>
                    {
                        options.push(rest.to_owned());
                    }
                    _ => return Err(p.err("`restore-option` must follow `restore-repository`")),
                }
            } else if let Some(rest) = l.strip_prefix("after ") {
                for s in rest.split(' ') {
                    let i = parse_instance(s).ok_or_else(|| {
                        p.err(format!("expected `<service>@<node>`, found `{s}`"))
                    })?;
                    let change =
                        nodes.last_mut().and_then(|n| n.changes.last_mut()).expect("checked");
                    change.after.push(i);
                }
            } else if let Some(rest) = l.strip_prefix("artifact ") {
                let parts: Vec<&str> = rest.split(' ').collect();
                let (name, mode, sha, base64) = match parts[..] {
                    [name, mode, sha] => (name, mode, sha, false),
                    [name, mode, sha, "base64"] => (name, mode, sha, true),
                    _ => return Err(p.err("expected `artifact <name> <mode> <sha256> [base64]`")),
                };
                if !crate::node::manifest::is_artifact_name(name) {
                    return Err(p.err(format!(
                        "expected an artifact path (letters, digits, `._-`, `/` between parts, no `..`), found `{}`",
                        shorten(name)
                    )));
                }
                let mode = match mode {
                    "0644" => 0o644,
                    "0755" => 0o755,
                    _ => return Err(p.err(format!("expected mode 0644 or 0755, found `{mode}`"))),
                };
                let (name, sha) = (name.to_owned(), sha.to_owned());
                let mut text = p.content()?;
                let mut binary = None;
                if base64 {
                    let joined: String = text.lines().collect();
                    let bytes =
                        crate::digest::base64_decode(joined.as_bytes()).ok_or_else(|| {
                            p.err(format!("the base64 content of `{name}` does not decode"))
                        })?;
                    // Text travels as text: base64 is only for bytes that are not UTF-8.
                    if std::str::from_utf8(&bytes).is_ok() {
                        return Err(p.err(format!(
                            "`{name}` is text, carried as base64: the plan was edited"
                        )));
                    }
                    text = String::new();
                    binary = Some(bytes);
                }
                let artifact = PlannedArtifact { name, mode, sha256: sha, text, binary };
                if crate::digest::sha256_hex(artifact.bytes()) != artifact.sha256 {
                    return Err(p.err(format!(
                        "the content of `{}` does not match its sha256: the plan was edited",
                        artifact.name
                    )));
                }
                let change = nodes.last_mut().and_then(|n| n.changes.last_mut()).expect("checked");
                change.artifacts.push(artifact);
            } else if let Some(rest) = l.strip_prefix("prior ") {
                let parts: Vec<&str> = rest.split(' ').collect();
                let [name, mode, sha] = parts[..] else {
                    return Err(p.err("expected `prior <name> <mode> <sha256>`"));
                };
                let mode_bits = match mode {
                    "0644" => 0o644,
                    "0755" => 0o755,
                    _ => return Err(p.err(format!("expected mode 0644 or 0755, found `{mode}`"))),
                };
                let (name, sha) = (name.to_owned(), sha.to_owned());
                let node = nodes.last().expect("checked");
                let svc = node.changes.last().expect("checked").instance.service.to_string();
                // The prior content is what the node holds, bound by its hash to the node's
                // fingerprint (which apply checks again): never the planner's say-so.
                let on_node = format!("{svc} file {name} {sha} {mode}");
                let bound = matches!(&node.status, PlannedStatus::Reachable { actual, .. } if actual.contains(&on_node));
                if !bound {
                    return Err(p.err(format!(
                        "the prior content of `{name}` of `{svc}` is not what the node's state (`actual` lines) says is there: the plan was edited"
                    )));
                }
                let text = p.content()?;
                if crate::digest::sha256_hex(text.as_bytes()) != sha {
                    return Err(p.err(format!(
                        "the prior content of `{name}` does not match its sha256: the plan was edited"
                    )));
                }
                let change = nodes.last_mut().and_then(|n| n.changes.last_mut()).expect("checked");
                change.prior.push(PlannedArtifact {
                    name,
                    mode: mode_bits,
                    sha256: sha,
                    text,
                    binary: None,
                });
            } else {
                return Err(p.err(format!(
                    "expected `after`, `artifact`, `prior`, `change` or `node`, found `{}`",
                    shorten(l)
                )));
            }
        }
    }
    let mut plan =
        Plan { created, expires, planner, commit: commit.to_owned(), dirty, trust, nodes };
    check_order(&plan, file, &change_lines)?;
    // What a reviewer sees is computed here from bound content, never read from the file.
    for n in &mut plan.nodes {
        let actual = match &n.status {
            PlannedStatus::Reachable { actual, .. } => actual.clone(),
            PlannedStatus::Unreachable { .. } => Vec::new(),
        };
        for c in &n.changes {
            // The action must fit what the node's (fingerprinted) state says is there: an
            // "update" of a service the node does not have would pass for a small change.
            let svc = c.instance.service.as_str();
            let manifest = actual
                .iter()
                .find_map(|l| l.strip_prefix(&format!("{svc} manifest ")))
                .map(str::to_owned);
            let fits = match c.action {
                Action::Create => manifest.is_none(),
                Action::Update | Action::NoOp => {
                    manifest.as_deref().is_some_and(|m| m != "none" && m != "corrupt")
                }
                Action::Replace | Action::Delete => manifest.is_some(),
            };
            if !fits {
                return Err(PlanFileError {
                    file: file.to_owned(),
                    line: change_lines.get(&c.instance).copied().unwrap_or(1),
                    message: bounded(format!(
                        "`{}` is planned as `{}`, which the node's state does not allow ({}): the plan was edited",
                        c.instance,
                        c.action,
                        match &manifest {
                            None => "it has no such service".to_owned(),
                            Some(m) => format!("its manifest is {m}"),
                        }
                    )),
                });
            }
        }
        if diffs == Diffs::Shown {
            for c in &mut n.changes {
                c.diffs = super::diffs_of(c, &actual);
            }
        }
    }
    if plan.summary() != summary {
        return Err(PlanFileError {
            file: file.to_owned(),
            line: summary_line,
            message: format!(
                "the summary says `{}` but the changes add up to `{}`: the plan was edited",
                crate::quote::cut(&summary),
                plan.summary()
            ),
        });
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Plan {
        let inst = |s: &str, n: &str| Instance {
            service: ServiceName::parse(s).unwrap(),
            node: NodeName::parse(n).unwrap(),
        };
        let old = "a: |\n  end\n|y\n";
        let actual = vec![
            "broker manifest 00".to_owned(),
            format!(
                "broker file docker-compose.yml {} 0644",
                crate::digest::sha256_hex(old.as_bytes())
            ),
        ];
        let mut plan = Plan {
            created: "2026-11-25T10:00:00Z".into(),
            expires: "2026-11-26T10:00:00Z".into(),
            planner: "owner@saturn SHA256:abc".into(),
            commit: "0123abcd".into(),
            dirty: true,
            trust: vec![
                ("allowed_signers".into(), "owner@saturn ssh-ed25519 AAAA\n".into()),
                ("policy.json".into(), "{}\n".into()),
            ],
            nodes: vec![
                NodePlan {
                    node: NodeName::parse("edge-a").unwrap(),
                    status: PlannedStatus::Reachable {
                        fingerprint: crate::observe::fingerprint_of(&actual),
                        actual: actual.clone(),
                    },
                    changes: vec![Change {
                        instance: inst("broker", "edge-a"),
                        action: Action::Update,
                        reason: "changed: docker-compose.yml".into(),
                        after: vec![inst("agent", "edge-a")],
                        artifacts: vec![
                            PlannedArtifact {
                                name: "docker-compose.yml".into(),
                                mode: 0o644,
                                sha256: crate::digest::sha256_hex(b"a: |\n  end\n|x\n"),
                                text: "a: |\n  end\n|x\n".into(),
                                binary: None,
                            },
                            PlannedArtifact {
                                name: "healthcheck.sh".into(),
                                mode: 0o755,
                                sha256: crate::digest::sha256_hex(b"exit 0"),
                                text: "exit 0".into(),
                                binary: None,
                            },
                            PlannedArtifact {
                                name: "icon.png".into(),
                                mode: 0o644,
                                sha256: crate::digest::sha256_hex(b"\x89PNG\r\n\x1a\n\xff\x00"),
                                text: String::new(),
                                binary: Some(b"\x89PNG\r\n\x1a\n\xff\x00".to_vec()),
                            },
                        ],
                        prior: vec![PlannedArtifact {
                            name: "docker-compose.yml".into(),
                            mode: 0o644,
                            sha256: crate::digest::sha256_hex(old.as_bytes()),
                            text: old.into(),
                            binary: None,
                        }],
                        diffs: Vec::new(),
                        runtime: Some(crate::plan::Runtime {
                            healthcheck: crate::model::Healthcheck {
                                interval: std::time::Duration::from_secs(30),
                                timeout: std::time::Duration::from_secs(5),
                                retries: 3,
                                start_period: std::time::Duration::from_secs(0),
                                stable_for: std::time::Duration::from_secs(10),
                            },
                            secrets: vec!["BROKER_PASSWORD".into()],
                            variables: vec![crate::plan::Required {
                                name: "BROKER_TAG".into(),
                                line: 18,
                            }],
                            folders: vec![crate::model::Folder {
                                path: "data/broker/db".into(),
                                owner: Some("1000:1000".into()),
                                mode: Some("0750".into()),
                            }],
                            snapshot: Some(crate::plan::Snapshot {
                                stop: true,
                                min_free: 10,
                                paths: vec!["config/broker".into(), "data/broker".into()],
                            }),
                            limits: Some(crate::plan::Limits {
                                exposure: crate::model::Exposure::Lan,
                                lan_address: Some("192.168.1.20".parse().unwrap()),
                                paths: vec!["/var/run/docker.sock".into(), "data/broker".into()],
                            }),
                            watched: vec![("broker-state".into(), 172_800)],
                            networks: vec!["proxy".into(), "web.2".into()],
                        }),
                        restore: Some(crate::plan::Restore {
                            id: "1a2b3c4d".into(),
                            from: crate::plan::RestoreFrom::Restic {
                                repository: "sftp:homelab@saturn:/srv/restic repo".into(),
                                options: vec!["sftp.command=ssh -p 2222 saturn -s sftp".into()],
                            },
                        }),
                    }],
                    engine: Some("2 container(s), 2 running".into()),
                    root: None,
                    pinned_match: Some(false),
                },
                NodePlan {
                    node: NodeName::parse("edge-b").unwrap(),
                    status: PlannedStatus::Unreachable { reason: "link down".into() },
                    changes: vec![],
                    engine: None,
                    root: Some("/tmp/lab/edge-b".into()),
                    pinned_match: None,
                },
            ],
        };
        let c = &mut plan.nodes[0].changes[0];
        c.diffs = crate::plan::diffs_of(c, &actual);
        assert!(!c.diffs.is_empty());
        plan
    }

    #[test]
    fn round_trip_keeps_every_byte() {
        let plan = sample();
        let text = encode(&plan);
        assert!(text.contains("\n|  end\n"), "content lines are readable: {text}");
        assert_eq!(decode(&text, "p").unwrap(), plan);
    }

    /// A node decodes the plan it runs without the reviewer's diffs, and nothing else of it
    /// differs; an edited artifact is refused all the same.
    #[test]
    fn a_plan_decoded_for_a_node_lacks_only_the_diffs() {
        let mut plan = sample();
        let text = encode(&plan);
        let bare = decode_with(&text, "p", Diffs::NotShown).unwrap();
        assert!(bare.nodes.iter().flat_map(|n| &n.changes).all(|c| c.diffs.is_empty()));
        for c in plan.nodes.iter_mut().flat_map(|n| &mut n.changes) {
            c.diffs.clear();
        }
        assert_eq!(bare, plan);
        let edited = text.replace("|exit 0", "|exit 1");
        let e = decode_with(&edited, "p", Diffs::NotShown).unwrap_err();
        assert!(e.message.contains("does not match its sha256"), "{e}");
    }

    #[test]
    fn other_versions_are_refused_naming_both() {
        let text = encode(&sample()).replacen("homelab-plan 2", "homelab-plan 7", 1);
        let e = decode(&text, "p").unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.message.contains("format version 7; this homelab reads version 2"), "{e}");
    }

    #[test]
    fn an_edited_artifact_is_refused() {
        let text = encode(&sample()).replace("|exit 0", "|exit 1");
        assert!(decode(&text, "p").unwrap_err().message.contains("does not match its sha256"));
    }

    #[test]
    fn values_that_reach_the_node_are_bounded() {
        let text = encode(&sample());
        let bad_secret =
            text.replace("secrets BROKER_PASSWORD", "secrets BROKER_PASSWORD $(reboot)");
        assert!(decode(&bad_secret, "p")
            .unwrap_err()
            .message
            .contains("environment variable names"));
        let forever = text.replace("interval=30 ", "interval=99999999 ");
        assert!(decode(&forever, "p").unwrap_err().message.contains("more than a day"));
        let no_retry = text.replace("retries=3 ", "retries=0 ");
        assert!(decode(&no_retry, "p").unwrap_err().message.contains("1 to 100 retries"));
        // The node judges ports against the LAN address: every address is not one.
        assert!(text.contains("\nexposure lan\nlan-address 192.168.1.20\nhost-path "), "{text}");
        let every = text.replace("lan-address 192.168.1.20", "lan-address 0.0.0.0");
        assert!(decode(&every, "p").unwrap_err().message.contains("not every address"));
        let twice =
            text.replace("lan-address 192.168.1.20", "lan-address 10.0.0.1\nlan-address 10.0.0.2");
        assert!(decode(&twice, "p").unwrap_err().message.contains("once"));
        // A network's name reaches a script on the node: only a Docker network name.
        assert!(text.contains("\nnetwork proxy\nnetwork web.2\n"), "{text}");
        for bad in ["proxy;reboot", "$(reboot)", "-d", "a b"] {
            let evil = text.replace("network proxy\n", &format!("network {bad}\n"));
            let e = decode(&evil, "p").unwrap_err();
            assert!(e.message.contains("expected a Docker network name"), "{bad}: {e}");
        }
    }

    /// Any edit or cut of a plan file is an error or a valid plan, never a panic.
    #[test]
    fn a_summary_read_streaming_agrees_with_the_whole_read() {
        let mut plan = sample();
        // A node that only takes new trust roots: a change of kind `trust`, nothing else.
        plan.nodes.push(NodePlan {
            node: NodeName::parse("edge-c").unwrap(),
            status: plan.nodes[0].status.clone(),
            changes: vec![],
            engine: None,
            root: None,
            pinned_match: Some(false),
        });
        // A content line far longer than a summary looks at, and one that starts like a header.
        let a = &mut plan.nodes[0].changes[0].artifacts[0];
        a.text = format!(
            "{}\nnode evil reachable\nchange delete x@evil\n",
            "x".repeat(3 * SUMMARY_LINE)
        );
        a.sha256 = crate::digest::sha256_hex(a.text.as_bytes());
        let body = encode(&plan);
        let sig = "-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n";
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("{}.plan", plan_id(body.as_bytes())));
        fs::write(&path, join(&body, sig)).unwrap();
        let whole = read(&path).unwrap();
        let s = summarize(&path).unwrap();
        assert_eq!(s.id, whole.id);
        assert_eq!(
            (s.created.as_str(), s.expires.as_str()),
            (plan.created.as_str(), plan.expires.as_str())
        );
        assert_eq!(s.planner, plan.planner);
        assert_eq!(s.summary, plan.summary());
        assert_eq!(s.signature, whole.signature);
        assert_eq!(s.digests, crate::digest::Digests::of(whole.body.as_bytes()));
        let kinds: Vec<(NodeName, Vec<&str>)> = crate::approve::policy::changed_nodes(&whole.plan)
            .map(|n| (n.clone(), crate::approve::policy::kinds_on(&whole.plan, n)))
            .collect();
        assert_eq!(s.changes, kinds);
        let edge_c = NodeName::parse("edge-c").unwrap();
        assert!(s.changes.contains(&(edge_c, vec!["trust"])), "{:?}", s.changes);
        assert!(s.changes.iter().any(|(_, k)| k.contains(&"restore") && k.contains(&"trust")));
        // What `read` refuses in the framing, the summary refuses too.
        let other = dir.path().join("0123456789abcdef.plan");
        fs::write(&other, join(&body, sig)).unwrap();
        assert!(matches!(summarize(&other), Err(ReadError::IdMismatch { .. })));
        fs::write(&path, &body).unwrap();
        assert!(summarize(&path).unwrap_err().to_string().contains("unsigned or truncated"));
        fs::write(&path, format!("{body}{sig}trailing\n")).unwrap();
        assert!(summarize(&path).unwrap_err().to_string().contains("after the signature"));
    }

    #[test]
    fn mutated_and_cut_plans_never_panic() {
        let text = encode(&sample());
        let bytes = text.as_bytes();
        for cut in 0..bytes.len() {
            if let Ok(t) = std::str::from_utf8(&bytes[..cut]) {
                let _ = decode(t, "p");
            }
        }
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let alphabet = b" |\\\n=@-_:0123456789abcdefz";
        for _ in 0..5000 {
            let mut b = bytes.to_vec();
            for _ in 0..(next() % 3 + 1) {
                let i = (next() as usize) % b.len();
                b[i] = alphabet[(next() as usize) % alphabet.len()];
            }
            if let Ok(t) = std::str::from_utf8(&b) {
                let _ = decode(t, "p");
            }
        }
    }

    #[test]
    fn truncation_is_refused() {
        let text = encode(&sample());
        let cut = &text[..text.find("prior docker").unwrap() + 30];
        assert!(decode(cut, "p").is_err());
    }
}
