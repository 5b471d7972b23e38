//! Actual state: what is really on a node, read through a `Transport`.
//!
//! For each node: the artifacts homelab last deployed and their manifest, the hashes of what
//! is really on disk (a hand edit is drift), and what the node has consumed (applied plan
//! ids). A node that cannot be read is *unreachable*; that is a value, not an error, so the
//! rest of a plan goes on. This module never reads `<root>/config/` (secrets), never writes to
//! a node, and reads records through `node`'s types, never by searching their text.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use crate::model::NodeName;
use crate::node::journal::Journal;
use crate::node::manifest::Manifest;
use crate::node::records::LockHolder;
pub use crate::transport::Container;

pub mod here;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActualNode {
    pub node: NodeName,
    pub status: NodeStatus,
}

// One per node per run: boxing the state would buy nothing but a deref at every use.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeStatus {
    Reachable(NodeState),
    Unreachable { reason: String },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeState {
    /// Services homelab has deployed on the node, by service name as found on disk.
    pub services: BTreeMap<String, DeployedService>,
    /// Plan ids already applied on this node.
    pub consumed: BTreeSet<String>,
    /// Plan ids rejected, recorded on the node by `homelab reject`: refused from any
    /// controller and any copy of the plan.
    pub rejected: BTreeSet<String>,
    /// Plan ids with an apply journal on this node (started, maybe not finished).
    pub journals: BTreeSet<String>,
    /// Those journals that parse, by plan id: whether each apply finished and where its
    /// services stand (an apply of one plan refuses while another is undecided on the node).
    pub parsed_journals: BTreeMap<String, Journal>,
    /// The holder of the node's apply lock, when it is held (see [`lock_holder`] for a
    /// `holder.json` that does not parse).
    pub lock: Option<LockHolder>,
    /// Services an apply switched to a new release but did not finish (link dropped, killed):
    /// service → (plan id, stage). Their containers may not match their files.
    pub interrupted: BTreeMap<String, (String, String)>,
    pub engine: Engine,
    /// The trust roots bootstrap (or a rotation) pinned on the node: file name → SHA-256.
    /// Empty on a node with none (not bootstrapped with the engine). Not in the fingerprint:
    /// a rotation must not make the plan that carries it stale.
    pub pinned: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Engine {
    Available { containers: Vec<Container> },
    Unavailable { reason: String },
}

impl Default for Engine {
    fn default() -> Self {
        Engine::Unavailable { reason: "not checked".to_owned() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployedService {
    pub manifest: ManifestState,
    /// The release the service folder points at, when it is a symlink (see `apply`).
    pub release: Option<String>,
    /// Every file in the service's folder except the manifest.
    pub files: BTreeMap<String, FileState>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestState {
    Present { manifest: Manifest, sha256: String },
    Missing,
    Corrupt { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileState {
    /// SHA-256 of the bytes, or of `symlink:<target>` for a symlink.
    pub sha256: String,
    /// Permission bits as four octal digits (`0755`); empty for a symlink or a large file.
    pub mode: String,
    /// The text, kept only when it is exactly what the manifest says homelab wrote: a file
    /// edited by hand on a node may hold anything, a secret included, and never enters a plan.
    pub content: Option<String>,
}

impl DeployedService {
    /// Files whose bytes differ from the manifest, missing ones, and extra ones.
    pub fn drift(&self) -> Vec<String> {
        let ManifestState::Present { manifest, .. } = &self.manifest else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in &manifest.artifacts {
            match self.files.get(&entry.name) {
                None => out.push(format!("{} is missing", entry.name)),
                Some(f) if f.sha256 == entry.sha256 && f.mode != entry.mode => out.push(format!(
                    "{} has mode {} on the node, not {}",
                    entry.name, f.mode, entry.mode
                )),
                Some(f) if f.sha256 != entry.sha256 => {
                    out.push(format!("{} was edited on the node", entry.name))
                }
                Some(_) => {}
            }
        }
        for name in self.files.keys() {
            if !manifest.artifacts.iter().any(|a| &a.name == name) {
                out.push(format!("{name} is not homelab's"));
            }
        }
        out
    }
}

impl NodeState {
    /// A digest of everything a plan was computed against: per service the manifest and the
    /// hash of every file. Container states are left out on purpose: a restart or a health flap
    /// must not make every plan stale.
    pub fn fingerprint(&self) -> String {
        fingerprint_of(&self.fingerprint_lines())
    }

    /// The lines the fingerprint is made of, also recorded in the plan so a stale plan can say
    /// what changed.
    pub fn fingerprint_lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, svc) in &self.services {
            let manifest = match &svc.manifest {
                ManifestState::Present { sha256, .. } => sha256.clone(),
                ManifestState::Missing => "none".to_owned(),
                ManifestState::Corrupt { .. } => "corrupt".to_owned(),
            };
            out.push(format!("{name} manifest {manifest}"));
            for (file, state) in &svc.files {
                out.push(format!("{name} file {file} {} {}", state.sha256, state.mode));
            }
        }
        out
    }
}

/// The digest of a node's state lines (`NodeState::fingerprint_lines`): what a plan records and
/// apply compares with the node right before its first write.
pub fn fingerprint_of(lines: &[String]) -> String {
    let mut h = Sha256::new();
    for line in lines {
        h.update(line.as_bytes());
        h.update(b"\n");
    }
    format!("sha256:{}", crate::digest::hex(&h.finalize()))
}

/// One round trip that prints everything refresh needs about a runtime root: consumed plan
/// ids, and per service folder its files (content framed by length, so any bytes survive).
/// The root is passed as `$1`, never interpolated into the script. `config/` is never read.
/// The script globs under `$root` itself (one argument cannot name every journal); the paths it
/// walks are the ones `node::Layout` documents, and must move with it.
pub const REFRESH_SCRIPT: &str = r#"set -u
root=$1
echo "homelab-refresh 1"
if [ -e "$root" ] && [ ! -d "$root" ]; then echo "runtime root $root is not a folder" >&2; exit 3; fi
# How many services the node holds, first: a refresh that stalls says how far it got.
n=0; for d in "$root"/state/services/*; do [ -d "$d" ] && n=$((n + 1)); done; echo "holds $n"
for f in allowed_signers policy.json; do
  [ -f "$root/trust/$f" ] && echo "pinned $f $(sha256sum < "$root/trust/$f" | cut -c1-64)"
done
for f in "$root"/state/rejected/*.json; do
  [ -e "$f" ] || continue
  b=${f##*/}; echo "rejected ${b%.json}"
done
for f in "$root"/state/consumed/*.json; do
  [ -e "$f" ] || continue
  b=${f##*/}; echo "consumed ${b%.json}"
done
for j in "$root"/state/deploy/*/journal.json; do
  [ -f "$j" ] || continue
  p=${j%/journal.json}
  size=$(wc -c < "$j")
  if [ "$size" -le 1048576 ]; then echo "journal $size ${p##*/}"; cat "$j"; echo; fi
done
if [ -d "$root/state/lock" ]; then
  printf 'lock '; tr '\n' ' ' < "$root/state/lock/holder.json" 2>/dev/null; echo
fi
for d in "$root"/state/services/*; do
  [ -d "$d" ] || continue
  echo "service ${d##*/}"
  if [ -L "$d" ]; then echo "release $(readlink "$d")"; fi
  # Every file and symlink below the release, by its path in it (`conf/a.conf`); folders
  # themselves are not state. Names holding a newline cannot be framed and are skipped.
  find "$d/" -mindepth 1 \( -type f -o -type l \) ! -name '*
*' -print | LC_ALL=C sort | while IFS= read -r f; do
    n=${f#"$d"/}; n=${n#/}
    if [ -L "$f" ]; then echo "symlink $(readlink "$f" | sha256sum | cut -c1-64) $n"; continue; fi
    size=$(wc -c < "$f")
    mode=$(stat -c %a -- "$f")
    if [ "$size" -le 1048576 ]; then echo "file $size $mode $n"; cat "$f"; echo; else echo "big $(sha256sum < "$f" | cut -c1-64) $n"; fi
  done
done
echo "end"
"#;

/// The stage as the journal records it (`deployed`), which plans quote.
fn journal_name(stage: crate::node::journal::Stage) -> String {
    serde_json::to_value(stage).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// The holder of a lock from the text of its `holder.json` (newlines may have become spaces). A
/// holder that does not parse is still a holder: an unknown one, whose text is kept in
/// `holder` for operators to read, with no plan, host or pid, so it is never taken for ours
/// nor for gone.
pub fn lock_holder(text: &str) -> LockHolder {
    LockHolder::parse(text).unwrap_or_else(|| LockHolder {
        holder: text.split_whitespace().collect::<Vec<_>>().join(" "),
        plan: String::new(),
        since: String::new(),
        host: String::new(),
        pid: 0,
    })
}

/// Reads a node through `exec`. Never fails: a node that cannot be read is `Unreachable`.
/// The engine's containers are read at the same time as the runtime root, over the same
/// connection: a plan costs the node one round trip of waiting, not two.
pub fn refresh(node: &crate::model::Node, exec: &dyn crate::transport::NodeExec) -> ActualNode {
    let _span = tracing::debug_span!("refresh", node = %node.id).entered();
    let argv = ["sh", "-c", REFRESH_SCRIPT, "sh", exec.root()];
    let (out, engine) = std::thread::scope(|s| {
        let engine = s.spawn(|| exec.containers());
        let out = match exec.on_this_machine() {
            true => here::answer(std::path::Path::new(exec.root()), refresh_idle()),
            false => exec.run_streaming(&argv, b"", refresh_idle()),
        };
        (out, engine.join())
    });
    let engine = engine.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    read(node, out, || engine)
}

/// How long a refresh may pause, per step (reading one service, one record): the answer of a
/// node holding many services keeps coming and is never cut short by a fixed total. 30 s, or
/// `HOMELAB_REFRESH_IDLE` seconds (for nodes on very slow disks or links).
pub fn refresh_idle() -> std::time::Duration {
    let secs = std::env::var("HOMELAB_REFRESH_IDLE").ok().and_then(|s| s.trim().parse().ok());
    std::time::Duration::from_secs(secs.filter(|s| *s > 0).unwrap_or(30))
}

/// A node as [`REFRESH_SCRIPT`]'s answer `out` shows it (run alone or after another step in the
/// same command), with its engine's containers read through `exec`.
pub fn answer(
    node: &crate::model::Node,
    exec: &dyn crate::transport::NodeExec,
    out: Result<crate::transport::Output, crate::transport::ExecError>,
) -> ActualNode {
    read(node, out, || exec.containers())
}

/// A node as the refresh's answer `out` and its engine's containers (read when the answer is
/// good) show it.
fn read(
    node: &crate::model::Node,
    out: Result<crate::transport::Output, crate::transport::ExecError>,
    containers: impl FnOnce() -> Result<Vec<crate::transport::Container>, crate::transport::DockerError>,
) -> ActualNode {
    read_with(node, out, || containers().map_err(|e| e.to_string()))
}

fn read_with(
    node: &crate::model::Node,
    out: Result<crate::transport::Output, crate::transport::ExecError>,
    containers: impl FnOnce() -> Result<Vec<crate::transport::Container>, String>,
) -> ActualNode {
    let status = match out {
        Err(crate::transport::ExecError::Stalled { idle, after, stdout, .. }) => {
            NodeStatus::Unreachable { reason: stalled(&stdout, idle, after) }
        }
        Err(e) => NodeStatus::Unreachable { reason: e.to_string() },
        Ok(out) if !out.success() => NodeStatus::Unreachable {
            reason: format!("cannot read the runtime root: {}", out.stderr_text()),
        },
        Ok(out) => match parse_refresh(&out.stdout) {
            Ok(mut state) => {
                state.engine = match containers() {
                    Ok(containers) => Engine::Available { containers },
                    Err(reason) => Engine::Unavailable { reason },
                };
                NodeStatus::Reachable(state)
            }
            Err(reason) => NodeStatus::Unreachable {
                reason: format!("unexpected answer from the node: {reason}"),
            },
        },
    };
    ActualNode { node: node.id.clone(), status }
}

/// What a refresh that stopped answering mid-way says: the node answered, so it is not
/// "unreachable"; how long, how many services it holds and how far it got.
pub(crate) fn stalled(
    stdout: &[u8],
    idle: std::time::Duration,
    after: std::time::Duration,
) -> String {
    let text = String::from_utf8_lossy(stdout);
    let holds = text.lines().find_map(|l| l.strip_prefix("holds ")).map(str::trim);
    let read = text.lines().filter(|l| l.starts_with("service ")).count();
    let (what, at) = match holds {
        Some(n) => (format!("reading {n} services"), format!(" (at service {read} of {n})")),
        None => ("reading the node".to_owned(), String::new()),
    };
    format!(
        "{STALLED} {} s {what}: the node answered, then sent nothing for {} s{at}",
        after.as_secs(),
        idle.as_secs()
    )
}

/// How a refresh that stalled begins its reason (plans show it as "not read", not
/// "unreachable").
pub const STALLED: &str = "timed out after";

fn parse_refresh(bytes: &[u8]) -> Result<NodeState, String> {
    let mut state = NodeState::default();
    let mut at = 0;
    // A line, and whether it was UTF-8 (a file's name may not be: see below).
    let line = |at: &mut usize| -> Result<(String, bool), String> {
        let rest = bytes.get(*at..).ok_or("truncated")?;
        let end = rest.iter().position(|b| *b == b'\n').ok_or("truncated")?;
        *at += end + 1;
        Ok(match std::str::from_utf8(&rest[..end]) {
            Ok(l) => (l.to_owned(), true),
            Err(_) => (String::from_utf8_lossy(&rest[..end]).into_owned(), false),
        })
    };
    if line(&mut at)?.0 != "homelab-refresh 1" {
        return Err("not a refresh answer".to_owned());
    }
    let mut current: Option<(String, DeployedService, Option<Vec<u8>>)> = None;
    let finish = |state: &mut NodeState,
                  cur: Option<(String, DeployedService, Option<Vec<u8>>)>| {
        if let Some((name, mut svc, manifest)) = cur {
            svc.manifest = match manifest {
                None => ManifestState::Missing,
                Some(bytes) => match serde_json::from_slice::<Manifest>(&bytes) {
                    Ok(manifest) => ManifestState::Present {
                        manifest,
                        sha256: crate::digest::sha256_hex(&bytes),
                    },
                    Err(e) => ManifestState::Corrupt { reason: format!("manifest.json: {e}") },
                },
            };
            // Keep content only where it is what homelab wrote (see `FileState::content`).
            if let ManifestState::Present { manifest, .. } = &svc.manifest {
                for (n, f) in svc.files.iter_mut() {
                    if !manifest.artifacts.iter().any(|a| &a.name == n && a.sha256 == f.sha256) {
                        f.content = None;
                    }
                }
            } else {
                svc.files.values_mut().for_each(|f| f.content = None);
            }
            state.services.insert(name, svc);
        }
    };
    loop {
        let (l, utf8) = line(&mut at)?;
        // A file in a service's folder whose name is not UTF-8 was put there by hand (homelab
        // names none so): it is read under its name with the bad bytes replaced, so the plan
        // shows it as drift ("… is not homelab's") and the next deploy replaces the folder.
        // Any other line that is not UTF-8 is not an answer this program wrote.
        let a_file = ["file ", "symlink ", "big "].iter().any(|k| l.starts_with(k));
        if !utf8 && !a_file {
            return Err("a name is not UTF-8".to_owned());
        }
        if l == "end" {
            finish(&mut state, current.take());
            return Ok(state);
        }
        let (kind, rest) = l.split_once(' ').ok_or_else(|| format!("unexpected line `{l}`"))?;
        match kind {
            "rejected" => {
                state.rejected.insert(rest.to_owned());
            }
            "consumed" => {
                state.consumed.insert(rest.to_owned());
            }
            "holds" => {}
            "pinned" => {
                if let Some((file, sha)) = rest.split_once(' ') {
                    state.pinned.insert(file.to_owned(), sha.to_owned());
                }
            }
            "lock" => {
                state.lock = Some(lock_holder(rest));
            }
            "journal" => {
                let (size, id) = rest.split_once(' ').ok_or("bad journal entry")?;
                let size: usize = size.trim().parse().map_err(|_| "bad size")?;
                let end = at.checked_add(size).ok_or("bad size")?;
                let content = bytes.get(at..end).ok_or("truncated journal")?;
                at = end + 1;
                state.journals.insert(id.to_owned());
                // Services whose live link was switched by that apply but not confirmed. A
                // journal that does not parse marks nothing: its apply refuses to resume it.
                if let Ok(journal) = serde_json::from_slice::<Journal>(content) {
                    for (svc, e) in &journal.services {
                        if e.stage.switched_unconfirmed() {
                            let at = (id.to_owned(), journal_name(e.stage));
                            state.interrupted.insert(svc.clone(), at);
                        }
                    }
                    state.parsed_journals.insert(id.to_owned(), journal);
                }
            }
            "service" => {
                finish(&mut state, current.take());
                current = Some((
                    rest.to_owned(),
                    DeployedService {
                        manifest: ManifestState::Missing,
                        files: BTreeMap::new(),
                        release: None,
                    },
                    None,
                ));
            }
            "release" => {
                let (_, svc, _) = current.as_mut().ok_or("release outside a service")?;
                svc.release = Some(rest.to_owned());
            }
            "symlink" | "big" => {
                let (sha, name) = rest.split_once(' ').ok_or("bad entry")?;
                let (_, svc, _) = current.as_mut().ok_or("file outside a service")?;
                let marker = format!("{kind}:{sha}");
                svc.files.insert(
                    name.to_owned(),
                    FileState {
                        sha256: crate::digest::sha256_hex(marker.as_bytes()),
                        mode: String::new(),
                        content: None,
                    },
                );
            }
            "file" => {
                let (size, rest) = rest.split_once(' ').ok_or("bad file entry")?;
                let (mode, name) = rest.split_once(' ').ok_or("bad file entry")?;
                let size: usize = size.trim().parse().map_err(|_| "bad size")?;
                let mode = u32::from_str_radix(mode, 8)
                    .map(|m| format!("{m:04o}"))
                    .map_err(|_| "bad mode")?;
                let end = at.checked_add(size).ok_or("bad size")?;
                let content = bytes.get(at..end).ok_or("truncated file")?.to_vec();
                at = end + 1;
                let (_, svc, manifest) = current.as_mut().ok_or("file outside a service")?;
                if name == crate::node::manifest::MANIFEST {
                    *manifest = Some(content);
                    continue;
                }
                let sha256 = crate::digest::sha256_hex(&content);
                svc.files.insert(
                    name.to_owned(),
                    FileState { sha256, mode, content: String::from_utf8(content).ok() },
                );
            }
            _ => return Err(format!("unexpected line `{l}`")),
        }
    }
}

/// Refreshes every node in parallel, one thread each (nodes are a handful).
/// A node read by its own homelab (`node serve`): one session, one round trip. `None` where
/// the transport has no sessions (local) or the node has no homelab yet (the shell's
/// refresh reads it then).
pub fn refresh_by_session(
    transport: &dyn crate::transport::Transport,
    node: &crate::model::Node,
) -> Option<ActualNode> {
    use crate::wire::{self, Opened, Reply, Request};
    let unreachable = |reason: String| {
        Some(ActualNode { node: node.id.clone(), status: NodeStatus::Unreachable { reason } })
    };
    match wire::ask(transport, node, &Request::Refresh) {
        Err(Opened::Here | Opened::NotInstalled(_)) => None,
        Err(Opened::Mismatch(r) | Opened::Refused(r) | Opened::Unreachable(r)) => unreachable(r),
        Ok(Reply::Refreshed { status, base64, stderr, containers }) => {
            let Some(stdout) = crate::digest::base64_decode(base64.as_bytes()) else {
                return unreachable("the node's homelab sent a refresh that is not base64".into());
            };
            let out = crate::transport::Output { status, stdout, stderr: stderr.into_bytes() };
            Some(read_with(node, Ok(out), || containers))
        }
        Ok(Reply::Refused { reason }) => unreachable(reason),
        Ok(other) => unreachable(format!("the node's homelab answered out of turn: {other:?}")),
    }
}

pub fn refresh_all<'a>(
    transport: &dyn crate::transport::Transport,
    nodes: impl IntoIterator<Item = &'a crate::model::Node>,
) -> Vec<ActualNode> {
    let nodes: Vec<_> = nodes.into_iter().collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = nodes
            .iter()
            .map(|n| {
                s.spawn(move || {
                    if let Some(actual) = refresh_by_session(transport, n) {
                        return actual;
                    }
                    match transport.connect(n) {
                        Ok(exec) => refresh(n, exec.as_ref()),
                        Err(e) => ActualNode {
                            node: n.id.clone(),
                            status: NodeStatus::Unreachable { reason: e.to_string() },
                        },
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .zip(&nodes)
            .map(|(h, n)| {
                h.join().unwrap_or_else(|_| ActualNode {
                    node: n.id.clone(),
                    status: NodeStatus::Unreachable { reason: "refresh crashed".to_owned() },
                })
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::journal::{Entry, Stage};

    const GOOD: &[u8] =
        b"homelab-refresh 1\nconsumed abc\nservice web\nfile 5 644 healthcheck.sh\nexit\n\nend\n";

    #[test]
    fn a_refresh_answer_parses() {
        let state = parse_refresh(GOOD).unwrap();
        assert!(state.consumed.contains("abc"));
        let web = &state.services["web"];
        assert_eq!(web.files["healthcheck.sh"].mode, "0644");
        assert_eq!(web.manifest, ManifestState::Missing);
    }

    /// A lock is held even when its `holder.json` is not ours to read: its holder is unknown,
    /// shown as found, and never taken for this plan's nor for gone.
    #[test]
    fn an_unparseable_lock_holder_is_still_a_holder() {
        let state =
            parse_refresh(b"homelab-refresh 1\nlock { \"holder\": \"root@x pid 1\" } \nend\n")
                .unwrap();
        let holder = state.lock.expect("held");
        assert_eq!(holder.holder, "{ \"holder\": \"root@x pid 1\" }");
        assert!(holder.plan.is_empty() && !holder.is_gone_from(""));
    }

    /// A journal's switched but unconfirmed services are interrupted, named by the stage the
    /// journal records.
    #[test]
    fn a_journal_stopped_after_the_switch_marks_its_service_interrupted() {
        let mut j = Journal::new("p1", "n", std::time::UNIX_EPOCH);
        for (svc, stage) in [("a", Stage::Deployed), ("b", Stage::Prepared)] {
            let e = Entry { action: "update".into(), stage, previous: None, error: None };
            j.services.insert(svc.into(), e);
        }
        let bytes = j.to_bytes();
        let mut answer = format!("homelab-refresh 1\njournal {} p1\n", bytes.len()).into_bytes();
        answer.extend(&bytes);
        answer.extend(b"\nend\n");
        let state = parse_refresh(&answer).unwrap();
        assert!(state.journals.contains("p1"));
        assert!(!state.parsed_journals["p1"].finished, "read as the node holds it");
        let want = [("a".to_owned(), ("p1".to_owned(), "deployed".to_owned()))];
        assert_eq!(state.interrupted, want.into_iter().collect());
    }

    /// Whatever a node answers (a hostile or broken one), refresh errs, it never panics.
    #[test]
    fn hostile_refresh_answers_never_panic() {
        for bad in [
            &b"homelab-refresh 1\nservice web\nfile 18446744073709551615 644 x\n"[..],
            b"homelab-refresh 1\njournal 99999999999999999999 id\n",
            b"homelab-refresh 1\nfile 3 644 x\nabc\nend\n",
            b"homelab-refresh 1\nservice web\nfile 3 999 x\nabc\nend\n",
            b"homelab-refresh 1\nservice web\nfile 100 644 x\nabc\n",
            b"homelab-refresh 1\n\xff\xfe\n",
            b"",
        ] {
            assert!(parse_refresh(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        for cut in 0..GOOD.len() {
            let _ = parse_refresh(&GOOD[..cut]);
        }
    }
}
