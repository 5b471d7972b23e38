//! The homelab model: what the repository says should run where. The bottom layer: nothing
//! here may use `graph`, `render`, `check`, `command`, `cli` or anything else above it.
//!
//! The pipeline inside: `load` reads the repository (the only IO of this module) into raw
//! serde values (`raw`), `validate/` checks them, rule family by rule family, collecting every
//! problem as a `Diagnostic`, and `build` turns them into these types. Code past this module
//! only sees validated values; it never reads the repository itself. Checks that need the
//! dependency graph or a render are `crate::check`'s, which most callers want instead.

mod build;
pub mod diag;
pub mod load;
pub mod names;
pub mod raw;
pub mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::time::Duration;

pub(crate) use build::lan_address;
pub use diag::{Diagnostic, Diagnostics};
pub use names::{NodeName, ServiceName};

/// Loads and validates the homelab definition at `repo` as far as the model can: every problem,
/// sorted, or the model. Cycles and render problems are not looked for: use
/// `crate::check::homelab` for the full validation.
pub fn load(repo: &Path) -> Result<Homelab, Vec<Diagnostic>> {
    let Loaded { lab, diagnostics, .. } = load_partial(repo);
    match lab {
        Some(lab) if diagnostics.is_empty() => Ok(lab),
        _ => Err(diagnostics.into_sorted()),
    }
}

/// Everything the model layer can say about a repository, problems or not.
#[derive(Debug)]
pub struct Loaded {
    /// The repository as read; `None` when its folder cannot be opened.
    pub raw: Option<load::RawRepo>,
    /// The model of the repository's sound parts; `None` when there is no topology. With
    /// diagnostics it is partial (broken parts left out, a broken policy stood in for) and is
    /// only fit for further checks, never to plan or apply.
    pub lab: Option<Homelab>,
    /// Every problem found, unsorted.
    pub diagnostics: Diagnostics,
}

/// Loads, validates and builds what can be built, keeping the model even when there are
/// problems, so checks above the model can look at the parts that are sound.
pub fn load_partial(repo: &Path) -> Loaded {
    let mut diagnostics = Diagnostics::default();
    let raw = load::read(repo, &mut diagnostics);
    let lab = raw.as_ref().and_then(build::homelab);
    if let Some(raw) = &raw {
        validate::all(raw, lab.as_ref(), &mut diagnostics);
    }
    Loaded { raw, lab, diagnostics }
}

#[derive(Debug, Clone)]
pub struct Homelab {
    pub mesh: String,
    pub nodes: BTreeMap<NodeName, Node>,
    pub services: BTreeMap<ServiceName, Service>,
    pub policy: Policy,
    /// `inventory/allowed_signers` as written.
    pub allowed_signers: String,
    /// Shared templates from `templates/`, by path relative to that folder.
    pub templates: BTreeMap<String, String>,
    /// Every service instance with the instances it depends on.
    pub instances: BTreeMap<Instance, Vec<Instance>>,
    /// What validation notes without failing (`crate::check` fills it): a top-level `name:`
    /// that `-p <svc>` replaces, say.
    pub notes: Vec<Diagnostic>,
}

/// A service placed on a node: `service@node`.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Instance {
    pub service: ServiceName,
    pub node: NodeName,
}

impl fmt::Display for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.service, self.node)
    }
}

#[derive(Debug, Clone)]
pub struct Node {
    pub id: NodeName,
    pub display_name: String,
    pub roles: Vec<String>,
    pub site: String,
    pub uplink: String,
    pub offline_first: bool,
    pub ssh: SshTarget,
    /// The node's address on its LAN (`lan_address` in the topology): `lan` services publish
    /// on it (`{{ lan_ip }}`), never on every address of the node.
    pub lan_address: Option<std::net::IpAddr>,
    pub runtime_root: String,
    /// Whether `runtime_root` was placed by `--transport local --root DIR` (`DIR/<id>`) rather
    /// than read from the topology: a plan then records it, so its review renders the same.
    pub root_given: bool,
    /// Path of the node's Docker Engine socket, on the node.
    pub docker_socket: String,
    /// The share of the disk (percent) a snapshot before a change must leave free.
    pub snapshot_min_free: u8,
    /// The restic repository `homelab backup` copies this node's backup sets into.
    pub backup: Option<BackupTarget>,
    pub capabilities: BTreeSet<String>,
    pub services: BTreeMap<ServiceName, HostService>,
    /// Compose override templates, `hosts/<node>/runtime/<svc>/docker-compose.override.yml`.
    pub overrides: BTreeMap<ServiceName, Source>,
    /// Other files of `hosts/<node>/runtime/<svc>/`: host-specific configuration, shipped in
    /// place of (or beside) the service's own files of the same name.
    pub runtime_files: BTreeMap<ServiceName, Vec<ServiceFile>>,
}

impl Node {
    /// A node known by its id, runtime root and Docker socket alone, with no inventory: what a
    /// node's own engine knows of itself (reached as `localhost`, no services, roles or LAN
    /// address: what it checks of those comes with each change).
    pub fn bare(id: NodeName, runtime_root: String, docker_socket: String) -> Node {
        Node {
            display_name: id.display_name(),
            id,
            roles: Vec::new(),
            site: String::new(),
            uplink: String::new(),
            offline_first: false,
            ssh: SshTarget { address: "localhost".to_owned(), user: String::new(), port: 22 },
            lan_address: None,
            runtime_root,
            // The node's own root: no `--root` stands in for it.
            root_given: false,
            docker_socket,
            snapshot_min_free: DEFAULT_SNAPSHOT_MIN_FREE,
            backup: None,
            capabilities: Default::default(),
            services: Default::default(),
            overrides: Default::default(),
            runtime_files: Default::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    pub address: String,
    pub user: String,
    pub port: u16,
}

#[derive(Debug, Clone)]
pub struct HostService {
    pub exposure: Exposure,
    pub vars: BTreeMap<String, serde_json::Value>,
}

/// A file of the repository, with the path it is shown under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub path: String,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Exposure {
    Internal,
    Lan,
    Tailnet,
    Public,
}

impl Exposure {
    pub const ALL: [(&'static str, Exposure); 4] = [
        ("internal", Exposure::Internal),
        ("lan", Exposure::Lan),
        ("tailnet", Exposure::Tailnet),
        ("public", Exposure::Public),
    ];

    pub fn parse(s: &str) -> Option<Exposure> {
        Self::ALL.iter().find(|(n, _)| *n == s).map(|(_, e)| *e)
    }

    pub fn as_str(self) -> &'static str {
        Self::ALL.iter().find(|(_, e)| *e == self).map(|(n, _)| *n).unwrap_or("internal")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Node(NodeName),
    /// A per-node service, such as the stability agent.
    All,
}

#[derive(Debug, Clone)]
pub struct Service {
    pub name: ServiceName,
    pub description: String,
    pub owner: Owner,
    pub exposure: Exposure,
    pub restart_policy: String,
    pub healthcheck: Healthcheck,
    pub persistence_paths: Vec<String>,
    /// `persistence.folders`: owners and modes the engine sets.
    pub folders: Vec<Folder>,
    pub env_vars: Vec<EnvVar>,
    pub requires: BTreeSet<String>,
    pub backup_sets: Vec<BackupSet>,
    pub zigbee: Option<Zigbee>,
    pub vars: BTreeMap<String, serde_json::Value>,
    /// Host paths outside its runtime folders the compose file may name (`host_paths`).
    pub host_paths: Vec<String>,
    /// Docker networks homelab creates on the node before the service comes up (`networks`
    /// of the contract): what compose files on the node mark `external: true`.
    pub networks: Vec<String>,
    pub compose: Source,
    pub healthcheck_script: Source,
    pub env_example: Source,
    /// `templates:` of the contract: which files are minijinja templates. `None`: the compose
    /// file and the host's override are (and any `*.j2` file).
    pub templates: Option<Vec<String>>,
    /// Every other file of the service folder: configuration that ships with it.
    pub files: Vec<ServiceFile>,
}

/// A folder of a service's runtime folders (`data/<svc>/…`, `config/<svc>/…`, `logs/<svc>/…`)
/// whose owner and mode the engine sets before the service comes up, so an image that runs as
/// its own user (grafana's 472, n8n's 1000) can write its data folder without a hand on the
/// node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folder {
    /// Relative to the runtime root.
    pub path: String,
    /// `UID:GID`, numbers (the node may not know the image's user names).
    pub owner: Option<String>,
    /// Octal, `0750`.
    pub mode: Option<String>,
}

impl Folder {
    /// What is wrong with a folder of `svc`, as (the field, what was expected): the same check
    /// for the contract and for a plan, whose folders reach a script on the node.
    pub fn problem(
        svc: &str,
        path: &str,
        owner: Option<&str>,
        mode: Option<&str>,
    ) -> Option<(&'static str, String)> {
        let parts: Vec<&str> = path.split('/').collect();
        let part_ok = |p: &&str| {
            !p.is_empty()
                && *p != "."
                && *p != ".."
                && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        };
        let own =
            parts.len() >= 2 && ["data", "config", "logs"].contains(&parts[0]) && parts[1] == svc;
        if !own || !parts.iter().all(part_ok) {
            return Some((
                "path",
                format!("expected a folder of the service's own, `data/{svc}`, `config/{svc}` or `logs/{svc}` (or below), found `{path}`"),
            ));
        }
        if let Some(o) = owner {
            let ok = o.split_once(':').is_some_and(|(u, g)| {
                [u, g].iter().all(|n| {
                    !n.is_empty()
                        && n.len() <= 10
                        && n.bytes().all(|b| b.is_ascii_digit())
                        && n.parse::<u32>().is_ok()
                })
            });
            if !ok {
                return Some((
                    "owner",
                    format!("expected `UID:GID` in numbers (such as `1000:1000`), found `{o}`"),
                ));
            }
        }
        if let Some(m) = mode {
            let digits = m.strip_prefix('0').filter(|r| r.len() == 3).unwrap_or(m);
            if digits.len() != 3 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
                return Some(("mode", format!("expected an octal mode such as `0750` (no setuid, setgid or sticky bit), found `{m}`")));
            }
        }
        if owner.is_none() && mode.is_none() {
            return Some(("owner", "expected `owner`, `mode` or both, found neither".to_owned()));
        }
        None
    }
}

/// A file that ships with a service to its release on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceFile {
    /// Its path in the release (`conf/mosquitto.conf`): the path under the service's folder,
    /// without the `.j2` suffix of a template.
    pub name: String,
    pub source: Source,
    /// Rendered with minijinja: a `.j2` file, or one listed in the contract's `templates:`.
    pub template: bool,
    /// 0755 when the file is executable in the repository, else 0644.
    pub mode: u32,
    /// The bytes of a file that is not UTF-8 text (its `source.text` is empty); shipped as is.
    pub binary: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Healthcheck {
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub start_period: Duration,
    /// After the healthcheck passes, how long every container of the service must stay up (not
    /// restarting, restart count unchanged, not unhealthy by Docker's own check) before the
    /// deploy counts as verified. Zero turns the window off.
    pub stable_for: Duration,
}

/// The stability window when the contract does not say: long enough for a container that
/// crashes at start to be restarted by Docker (its first restarts come within a second or two)
/// and be seen doing so.
pub const DEFAULT_STABLE_FOR: Duration = Duration::from_secs(10);

/// The longest stability window a contract may ask for: apply holds the node's command open
/// for it.
pub const MAX_STABLE_FOR: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvVar {
    pub name: String,
    pub secret: bool,
    pub required: bool,
    /// The line of its entry in service.yaml, for messages from the node.
    pub line: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSet {
    pub name: String,
    pub paths: Vec<String>,
    /// Named volumes of the service's compose project, by compose key.
    pub volumes: Vec<String>,
    pub critical: bool,
    /// The containers are stopped while the set is copied (`consistency: stop`, the default
    /// of a critical set).
    pub stop: bool,
    /// Restic snapshots of the set kept by `homelab backup`.
    pub retain: u32,
    /// How old its last backup may be before the stability agent reports it (critical sets).
    pub max_age: std::time::Duration,
}

/// How old a critical set's last backup may be unless its contract says `max_age:`.
pub const DEFAULT_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(2 * 86_400);

/// Restic snapshots of a backup set kept unless its contract says `retain:`.
pub const DEFAULT_RETAIN: u32 = 7;

/// A restic repository (topology `backup:`): the repository as restic takes it and its `-o`
/// options. The password never appears here: it is a file on the node
/// (`config/backup/restic-password`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupTarget {
    pub repository: String,
    pub options: Vec<String>,
}

impl BackupTarget {
    /// Its options as restic's arguments.
    pub fn option_args(&self) -> Vec<String> {
        restic_option_args(&self.options)
    }
}

/// restic's `-o` options (`sftp.command=…`) as its arguments: `-o`, then the option, each.
pub fn restic_option_args(options: &[String]) -> Vec<String> {
    options.iter().flat_map(|o| ["-o".to_owned(), o.clone()]).collect()
}

/// Folders of the runtime root a snapshot never holds, so a rollback never puts them back:
/// the logs that say why it happened, the events every service appends to, and homelab's own
/// state, trust roots and binary.
pub const NOT_SNAPSHOTTED: [&str; 5] = ["logs", "events", "state", "trust", "bin"];

/// Path `p` is `q` or lies inside it (both relative, `/`-separated).
pub fn within(p: &str, q: &str) -> bool {
    p == q || p.strip_prefix(q).is_some_and(|r| r.starts_with('/'))
}

/// A compose volume key as a backup set may name it (it reaches a label filter on the node).
pub fn volume_key_ok(v: &str) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// A path relative to the runtime root as validation allows it (no `..`, no empty or `.`
/// part, no space or control character): such a path reaches scripts on the node.
/// Whether `name` is a Docker network name homelab creates: a letter or digit, then letters,
/// digits, `_`, `.` or `-`, at most 64 in all. It reaches a script on the node (as an argument,
/// quoted); nothing else is ever passed there.
pub fn network_name_ok(name: &str) -> bool {
    name.len() <= 64
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

pub fn relative_path_ok(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('/')
        && !p.split('/').any(|c| c == ".." || c.is_empty() || c == ".")
        && !p.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// The share of its disk a node keeps free after a snapshot unless its topology says another
/// (`snapshot_min_free`).
pub const DEFAULT_SNAPSHOT_MIN_FREE: u8 = 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zigbee {
    pub coordinator: String,
    pub port: String,
    pub adapter: String,
}

/// Also a node's pinned trust root (`<root>/trust/policy.json`, written by bootstrap): the
/// node counts approvals by it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Policy {
    pub plan_ttl: Duration,
    /// Plans from uncommitted trees may be approved (their artifacts are then the planner's
    /// word, and reviewers are told so).
    pub allow_uncommitted: bool,
    /// The branches plans must come from (`reviewed_branches`, default `main`): a plan whose
    /// commit none of them reaches was never merged after review, and is refused.
    pub reviewed_branches: Vec<String>,
    /// Releases (and journals) kept per service on a node; at least 2 (the live one and the
    /// one a rollback goes back to).
    pub keep_releases: u32,
    pub default: ApprovalRule,
    pub nodes: BTreeMap<NodeName, ApprovalRule>,
    /// Telegram users by id: the only ones the bot answers, and what each may approve.
    pub telegram: BTreeMap<u64, TelegramGrant>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ApprovalRule {
    pub required: u32,
    pub approvers: BTreeSet<String>,
    /// How many of `required` must be approvals by a human's key: a bot's (`telegram:<id>`)
    /// never counts for these.
    pub humans: u32,
}

/// What a Telegram user's approval (the principal `telegram:<id>`) may count for.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct TelegramGrant {
    pub name: Option<String>,
    pub nodes: BTreeSet<NodeName>,
    /// Kinds of change, of [`CHANGE_KINDS`].
    pub changes: BTreeSet<String>,
}

/// The prefix of a bot's principals: `telegram:<user id>`.
pub const TELEGRAM_PRINCIPAL: &str = "telegram:";

/// The branch plans come from when `inventory/policy.yaml` names none.
pub const DEFAULT_REVIEWED_BRANCH: &str = "main";

/// The kinds of change a policy may grant a bot: a plan's actions, with an update that writes
/// no file (only brings containers back up) told apart as `restart`, a restore of data as
/// `restore`, and new trust roots taken by a node (`trust-rotate`: who may plan and approve,
/// and how approvals count there) as `trust`.
pub const CHANGE_KINDS: [&str; 7] =
    ["create", "update", "restart", "replace", "delete", "restore", "trust"];

/// The kind of change a node taking new trust roots is.
pub const TRUST_KIND: &str = "trust";

/// Whether `principal` is a bot's (`telegram:<id>`), which never stands for a human.
pub fn is_bot_principal(principal: &str) -> bool {
    principal.starts_with(TELEGRAM_PRINCIPAL)
}

impl Policy {
    pub fn rule_for(&self, node: &NodeName) -> &ApprovalRule {
        self.nodes.get(node).unwrap_or(&self.default)
    }

    /// The bot principals (`telegram:<id>`) whose approval counts on `node` for a change of
    /// the given kinds (every kind must be granted).
    pub fn bots_for<'a>(
        &self,
        node: &NodeName,
        kinds: impl IntoIterator<Item = &'a str> + Clone,
    ) -> BTreeSet<String> {
        self.telegram
            .iter()
            .filter(|(_, g)| {
                g.nodes.contains(node) && kinds.clone().into_iter().all(|k| g.changes.contains(k))
            })
            .map(|(id, _)| format!("{TELEGRAM_PRINCIPAL}{id}"))
            .collect()
    }
}

/// The trust roots a node pins (`<root>/trust/<name>`), besides its own name: who may plan and
/// approve, and how approvals are counted.
pub const TRUST_SIGNERS: &str = "allowed_signers";
pub const TRUST_POLICY: &str = "policy.json";

impl Homelab {
    /// The trust roots every node should hold, by file name: `inventory/allowed_signers` as
    /// written, and the approval policy as this program reads `inventory/policy.yaml`. Every
    /// plan carries them; a node takes them from a plan approved under the roots it holds.
    pub fn trust_roots(&self) -> Vec<(&'static str, String)> {
        let mut policy = serde_json::to_string_pretty(&self.policy).unwrap_or_default();
        policy.push('\n');
        vec![(TRUST_SIGNERS, self.allowed_signers.clone()), (TRUST_POLICY, policy)]
    }

    /// Resolves a node as the CLI accepts it (id or display name).
    pub fn node(&self, name: &str) -> Option<&Node> {
        NodeName::from_cli(name).ok().and_then(|n| self.nodes.get(&n))
    }
}

/// Parses `30s`, `5m`, `1h`, `2d` (one unit, a whole number).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86400)?,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("24h"), Some(Duration::from_secs(86400)));
        assert_eq!(parse_duration("2d"), Some(Duration::from_secs(172800)));
        for bad in ["", "s", "30", "1.5h", "-1s", "10 parsecs", "99999999999999999999d"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }
}
