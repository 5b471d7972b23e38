//! Raw serde types that mirror the YAML files one to one.
//!
//! Nothing here is validated beyond YAML types: validation (`validate/`) checks them and
//! `build.rs` turns them into the model. No IO here: `load.rs` fills these in. Fields that a semantic check may point at are `Spanned`, so the diagnostic can
//! name their line. Unknown fields are refused so a typo is never silently ignored.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

pub type S<T> = Spanned<T>;

/// The line a value sits on, when it came from the file (defaults have no line).
pub fn line<T>(s: &Spanned<T>) -> Option<u64> {
    Some(s.referenced.line()).filter(|l| *l > 0)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    pub mesh: S<String>,
    #[serde(default)]
    pub runtime_root: Option<S<String>>,
    /// Where `homelab backup` puts the nodes' backup sets (a node may name its own).
    #[serde(default)]
    pub backup: Option<S<BackupTarget>>,
    pub sites: BTreeMap<String, S<Site>>,
    pub nodes: BTreeMap<String, S<Node>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    pub uplink: S<String>,
    #[serde(default)]
    pub offline_first: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub display_name: S<String>,
    #[serde(default)]
    pub roles: Vec<S<String>>,
    pub site: S<String>,
    pub ssh: Ssh,
    #[serde(default)]
    pub runtime_root: Option<S<String>>,
    /// The node's Docker Engine socket (default `/var/run/docker.sock`).
    #[serde(default)]
    pub docker_socket: Option<S<String>>,
    /// The share of its disk (percent) a snapshot before a change must leave free (default
    /// 10): below it the engine refuses the change before anything stops.
    #[serde(default)]
    pub snapshot_min_free: Option<S<u8>>,
    /// This node's restic repository, in place of the topology's `backup`.
    #[serde(default)]
    pub backup: Option<S<BackupTarget>>,
    /// The node's address on its LAN (`192.168.1.20`): what `lan` services publish on
    /// (`{{ lan_ip }}` in templates). A string here so a bad one is a diagnostic with its line.
    #[serde(default)]
    pub lan_address: Option<S<String>>,
}

/// A restic repository: `repository` as restic takes it (a path on the node, `sftp:…`),
/// `options` as restic's `-o key=value` (e.g. `sftp.command=ssh -i … saturn -s sftp`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupTarget {
    pub repository: S<String>,
    #[serde(default)]
    pub options: Vec<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ssh {
    pub address: S<String>,
    #[serde(default = "default_user")]
    pub user: S<String>,
    #[serde(default = "default_port")]
    pub port: u16,
}

fn default_user() -> S<String> {
    Spanned::new(
        "homelab".to_owned(),
        serde_saphyr::Location::UNKNOWN,
        serde_saphyr::Location::UNKNOWN,
    )
}

fn default_port() -> u16 {
    22
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub plan_ttl: S<String>,
    /// Whether a plan made from a tree with uncommitted changes (or outside Git) may be
    /// approved: its artifacts cannot be checked against a commit.
    #[serde(default)]
    pub allow_uncommitted: bool,
    /// The branches plans must come from: a plan's commit is reachable from one of them.
    /// Default `[main]`.
    #[serde(default)]
    pub reviewed_branches: Option<S<Vec<S<String>>>>,
    /// How many releases (and apply journals) of each service a node keeps; older ones are
    /// pruned after a completed apply. Default 5.
    #[serde(default)]
    pub keep_releases: Option<S<u32>>,
    pub approvals: Approvals,
    /// The Telegram users the bot answers, and what their approvals may count for
    /// (docs/telegram.md).
    #[serde(default)]
    pub telegram: Option<S<TelegramPolicy>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelegramPolicy {
    #[serde(default)]
    pub users: Vec<S<TelegramUser>>,
}

/// One Telegram user: its numeric id (the principal `telegram:<id>`), and the nodes and kinds
/// of change its approval may count for. A user with no nodes or no changes may only reject.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelegramUser {
    pub id: S<u64>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub nodes: Vec<S<String>>,
    #[serde(default)]
    pub changes: Vec<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approvals {
    pub default: S<ApprovalRule>,
    #[serde(default)]
    pub nodes: BTreeMap<String, S<ApprovalRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRule {
    pub required: S<u32>,
    pub approvers: Vec<S<String>>,
    /// How many of the approvals must be by a human's key (not a bot's). Default 1.
    #[serde(default)]
    pub humans: Option<S<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    pub node: S<String>,
    pub arch: S<String>,
    pub cpu: Cpu,
    pub memory_mb: u64,
    #[serde(default)]
    pub gpu: Option<Gpu>,
    #[serde(default)]
    pub devices: Vec<S<String>>,
    pub docker: Docker,
    #[serde(default)]
    pub capabilities: Vec<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cpu {
    pub cores: u32,
    #[serde(default)]
    pub model: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gpu {
    pub vendor: String,
    pub model: String,
    #[serde(default)]
    pub vram_mb: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Docker {
    pub engine: String,
    pub compose: S<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostServices {
    pub node: S<String>,
    #[serde(default)]
    pub services: Vec<S<HostService>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostService {
    pub name: S<String>,
    pub exposure: S<String>,
    #[serde(default)]
    pub vars: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contract {
    pub name: S<String>,
    #[serde(default)]
    pub description: String,
    pub owner_node: S<String>,
    pub exposure: S<String>,
    #[serde(default)]
    pub dependencies: Vec<S<Dependency>>,
    #[serde(default = "default_restart")]
    pub restart_policy: S<String>,
    pub healthcheck: S<Healthcheck>,
    #[serde(default)]
    pub persistence: Persistence,
    #[serde(default)]
    pub runtime: Runtime,
    #[serde(default)]
    pub requires: Vec<S<String>>,
    #[serde(default)]
    pub backup: Backup,
    #[serde(default)]
    pub zigbee: Option<S<Zigbee>>,
    #[serde(default)]
    pub vars: BTreeMap<String, serde_json::Value>,
    /// Which files are minijinja templates (paths under the service folder). Absent: the
    /// compose file and the host's override; a `*.j2` file always is.
    #[serde(default)]
    pub templates: Option<Vec<S<String>>>,
    /// Host paths outside the service's runtime folders that its compose file may name (the
    /// Docker or Tailscale socket, `/etc/localtime`): absolute, or relative to the runtime root.
    #[serde(default)]
    pub host_paths: Vec<S<String>>,
    /// Docker networks homelab creates on the node before the service comes up: the ones a
    /// compose file of a service on that node marks `external: true`.
    #[serde(default)]
    pub networks: Vec<S<String>>,
}

fn default_restart() -> S<String> {
    Spanned::new(
        "unless-stopped".to_owned(),
        serde_saphyr::Location::UNKNOWN,
        serde_saphyr::Location::UNKNOWN,
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dependency {
    pub service: S<String>,
    #[serde(default)]
    pub node: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Healthcheck {
    pub interval: S<String>,
    pub timeout: S<String>,
    pub retries: S<u32>,
    #[serde(default)]
    pub start_period: Option<S<String>>,
    #[serde(default)]
    pub stable_for: Option<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Persistence {
    #[serde(default)]
    pub paths: Vec<S<String>>,
    /// Folders of the service's runtime folders whose owner and mode the engine sets.
    #[serde(default)]
    pub folders: Vec<S<Folder>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Folder {
    pub path: S<String>,
    #[serde(default)]
    pub owner: Option<S<String>>,
    #[serde(default)]
    pub mode: Option<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Runtime {
    #[serde(default)]
    pub env_vars: Vec<S<EnvVar>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvVar {
    pub name: S<String>,
    #[serde(default)]
    pub secret: bool,
    #[serde(default = "default_true")]
    pub required: bool,
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backup {
    #[serde(default)]
    pub sets: Vec<S<BackupSet>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupSet {
    pub name: S<String>,
    #[serde(default)]
    pub paths: Vec<S<String>>,
    /// Named volumes of the service's compose project (their compose keys) the set holds.
    #[serde(default)]
    pub volumes: Vec<S<String>>,
    #[serde(default)]
    pub critical: bool,
    /// `stop`: the service's containers are stopped while its snapshot is copied (the default
    /// for a critical set); `live`: copied while it runs.
    #[serde(default)]
    pub consistency: Option<S<String>>,
    /// How many restic snapshots of the set `homelab backup` keeps (default 7).
    #[serde(default)]
    pub retain: Option<S<u32>>,
    /// How old the last backup of a critical set may be before the stability agent reports
    /// it (default `2d`).
    #[serde(default)]
    pub max_age: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Zigbee {
    pub coordinator: S<String>,
    pub port: S<String>,
    pub adapter: S<String>,
}

/// The part of a compose file that validation reads; the rest is passed through untouched.
/// Fields Compose lets users spell several ways (short and long syntax) are kept as values and
/// read by `validate::compose`.
#[derive(Debug, Deserialize)]
pub struct Compose {
    /// The project name a published file may set; homelab names the project after the
    /// service (`-p <svc>`), which wins.
    #[serde(default)]
    pub name: Option<S<String>>,
    #[serde(default)]
    pub services: BTreeMap<String, S<ComposeService>>,
    #[serde(default)]
    pub secrets: BTreeMap<String, S<serde_json::Value>>,
    #[serde(default)]
    pub configs: BTreeMap<String, S<serde_json::Value>>,
    #[serde(default)]
    pub include: Vec<S<serde_json::Value>>,
    /// Top-level networks: the ones marked `external: true` must exist on the node.
    #[serde(default)]
    pub networks: BTreeMap<String, S<serde_json::Value>>,
}

#[derive(Debug, Deserialize)]
pub struct ComposeService {
    #[serde(default)]
    pub container_name: Option<S<String>>,
    #[serde(default)]
    pub restart: Option<S<String>>,
    #[serde(default)]
    pub network_mode: Option<S<String>>,
    /// The networks it joins (a list or a map), for the alias that keeps an old name.
    #[serde(default)]
    pub networks: Option<S<serde_json::Value>>,
    #[serde(default)]
    pub volumes: Vec<S<serde_json::Value>>,
    #[serde(default)]
    pub ports: Vec<S<serde_json::Value>>,
    #[serde(default)]
    pub env_file: Option<S<serde_json::Value>>,
    #[serde(default)]
    pub build: Option<S<serde_json::Value>>,
    #[serde(default)]
    pub extends: Option<S<serde_json::Value>>,
    #[serde(default)]
    pub depends_on: Option<S<serde_json::Value>>,
}
