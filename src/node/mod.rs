//! A node's runtime root (`<root>`, `/opt/homelab` by default; DESIGN.md §6) and the records
//! kept there. [`Layout`] is the one place a path under `<root>` is spelled; the serde types of
//! [`journal`], [`records`] and [`manifest`] are the one place a record's shape is. `apply`,
//! `observe`, `events`, the approval records and the agents use only these.
//!
//! This module does no IO: it names paths and (de)serializes records. It imports nothing of
//! homelab's above `model`'s names.

pub mod journal;
pub mod manifest;
pub mod records;

/// The runtime root of a node (or of the controller) and every path under it. Paths are POSIX
/// strings: on a node they are arguments of remote commands, never parsed by a shell.
///
/// ```text
/// <root>/bin/homelab                     this binary, installed by bootstrap (the agents run it)
/// <root>/data/<svc>/                     persistent volumes
/// <root>/config/<svc>/.env               secrets (never read into a plan)
/// <root>/logs/<svc>/                     service logs, incident and diagnose logs
/// <root>/state/services/<svc>            -> releases/<svc>/<plan>/ (the live compose project)
/// <root>/state/releases/<svc>/<plan>/    artifacts and manifest.json of one version
/// <root>/state/deploy/<plan>/journal.json  stage state of an apply
/// <root>/state/lock/holder.json          the node lock and who holds it
/// <root>/state/consumed/<plan>.json      plans applied on this node (replay protection)
/// <root>/state/applied/<plan>.json       the controller's record of an apply
/// <root>/state/rejected/<plan>.json      a rejection
/// <root>/state/agent/heartbeat.json     the stability agent's heartbeat
/// <root>/state/agent/state.json         what the agent last saw (so a restart re-emits nothing)
/// <root>/events/<day>/<node>/events.jsonl  append-only events
/// <root>/world/<name>.json               the observer's world: nodes, services, deployments, incidents
/// <root>/state/observer/cursors.json     where the observer stopped reading each node's events
/// <root>/state/supervisor/last.json      the supervisor's last drift and its plan
/// <root>/state/executor/lock             held by the running executor
/// <root>/state/telegram/state.json       the Telegram bot's offset, messages and button secret
/// <root>/actions/<state>/<plan>.json     pending / approved / running / completed / failed
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: String,
}

/// The folders every runtime root has (DESIGN.md §6, the guide's "Runtime Path Conventions"),
/// relative to the root (`""` is the root itself), with the mode each is created with and the
/// most it may grant. `config/` holds secrets and `logs/` may (a failed deploy's output):
/// neither is world-readable. `bootstrap` creates exactly these; every path [`Layout`] spells
/// sits in one of them (a unit test checks it).
pub const TREE: &[(&str, u32)] = &[
    ("", 0o755),
    ("bin", 0o755),
    ("config", 0o700),
    ("data", 0o755),
    ("logs", 0o750),
    ("state", 0o755),
    ("events", 0o755),
    ("world", 0o755),
    ("actions", 0o755),
    ("actions/pending", 0o755),
    ("actions/approved", 0o755),
    ("actions/running", 0o755),
    ("actions/completed", 0o755),
    ("actions/failed", 0o755),
];

/// The folders of the guide's action flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionState {
    Pending,
    Approved,
    Running,
    Completed,
    Failed,
}

impl ActionState {
    /// Every state, in the order an action moves through them.
    pub const ALL: [ActionState; 5] = [
        ActionState::Pending,
        ActionState::Approved,
        ActionState::Running,
        ActionState::Completed,
        ActionState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ActionState::Pending => "pending",
            ActionState::Approved => "approved",
            ActionState::Running => "running",
            ActionState::Completed => "completed",
            ActionState::Failed => "failed",
        }
    }
}

impl Layout {
    pub fn new(root: impl Into<String>) -> Layout {
        let mut root = root.into();
        while root.len() > 1 && root.ends_with('/') {
            root.pop();
        }
        Layout { root }
    }

    /// A root on this machine (the controller's, or a node's with the local transport).
    pub fn local(root: &std::path::Path) -> Layout {
        Layout::new(root.to_string_lossy())
    }

    pub fn root(&self) -> &str {
        &self.root
    }

    fn at(&self, rel: &str) -> String {
        if self.root == "/" {
            format!("/{rel}")
        } else {
            format!("{}/{rel}", self.root)
        }
    }

    // The tree.

    /// A folder of [`TREE`] (`rel` as listed there; `""` is the root itself).
    pub fn folder(&self, rel: &str) -> String {
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.at(rel)
        }
    }

    /// This binary on the node, as bootstrap installs it and the agents' image runs it.
    pub fn binary(&self) -> String {
        self.at("bin/homelab")
    }

    // Service folders.

    pub fn data(&self, svc: &str) -> String {
        self.at(&format!("data/{svc}"))
    }

    pub fn config(&self, svc: &str) -> String {
        self.at(&format!("config/{svc}"))
    }

    /// The service's secrets: names are checked by validate, values never leave the node.
    pub fn env_file(&self, svc: &str) -> String {
        self.at(&format!("config/{svc}/.env"))
    }

    pub fn logs(&self, svc: &str) -> String {
        self.at(&format!("logs/{svc}"))
    }

    pub fn incident_log(&self, svc: &str, plan: &str) -> String {
        self.at(&format!("logs/{svc}/incident-{plan}.log"))
    }

    /// The output of one step of an apply (`validate`, `up`, `healthcheck`), kept on the node.
    pub fn step_log(&self, svc: &str, plan: &str, step: &str) -> String {
        self.at(&format!("logs/{svc}/{step}-{plan}.log"))
    }

    pub fn diagnose_log(&self, svc: &str, plan: &str) -> String {
        self.at(&format!("logs/{svc}/diagnose-{plan}.log"))
    }

    // Releases.

    /// The folder of live links, one per deployed service.
    pub fn services(&self) -> String {
        self.at("state/services")
    }

    /// The live link of a service: a symlink to its current release.
    pub fn live(&self, svc: &str) -> String {
        self.at(&format!("state/services/{svc}"))
    }

    pub fn releases(&self, svc: &str) -> String {
        self.at(&format!("state/releases/{svc}"))
    }

    pub fn release(&self, svc: &str, plan: &str) -> String {
        self.at(&format!("state/releases/{svc}/{plan}"))
    }

    /// The snapshots of a service's data, one folder per plan that changed it.
    pub fn snapshots(&self, svc: &str) -> String {
        self.at(&format!("state/snapshots/{svc}"))
    }

    /// The snapshot of a service's data taken before `plan` changed it.
    pub fn snapshot(&self, svc: &str, plan: &str) -> String {
        self.at(&format!("state/snapshots/{svc}/{plan}"))
    }

    /// The restic repository's password on the node (written by the operator, 0600; homelab
    /// only names it to restic).
    pub fn backup_password(&self) -> String {
        self.at("config/backup/restic-password")
    }

    /// The record of a backup set's last restic backup.
    pub fn backup_record(&self, svc: &str, set: &str) -> String {
        self.at(&format!("state/backups/{svc}/{set}.json"))
    }

    /// Where prepare uploads a release before it is checked and sealed.
    pub fn staging(&self, svc: &str, plan: &str) -> String {
        self.at(&format!("state/releases/{svc}/.staging-{plan}"))
    }

    // Apply records on a node.

    /// The apply journals of every plan, one folder each.
    pub fn deploy_root(&self) -> String {
        self.at("state/deploy")
    }

    pub fn deploy(&self, plan: &str) -> String {
        self.at(&format!("state/deploy/{plan}"))
    }

    /// The node engine's folder for a plan: the bundle it runs, its runs' progress, the
    /// confirmations and settled dependencies sessions hand it.
    pub fn engine(&self, plan: &str) -> String {
        self.at(&format!("state/deploy/{plan}/engine"))
    }

    /// The trust roots pinned on the node (`allowed_signers`, `policy.json`, `node`), written
    /// by bootstrap: the node's engine checks every bundle against them.
    pub fn trust(&self) -> String {
        self.at("trust")
    }

    pub fn journal(&self, plan: &str) -> String {
        self.at(&format!("state/deploy/{plan}/journal.json"))
    }

    /// A step of an apply run on the node as a detached job (`compose up`, a rollback): its
    /// pid, output and exit status, so a controller that died is never raced by its successor.
    pub fn job(&self, plan: &str, svc: &str, step: &str) -> String {
        self.at(&format!("state/deploy/{plan}/jobs/{svc}/{step}"))
    }

    /// The jobs of a service in a plan; a new prepare starts them over.
    pub fn jobs(&self, plan: &str, svc: &str) -> String {
        self.at(&format!("state/deploy/{plan}/jobs/{svc}"))
    }

    /// The node lock: a folder (`mkdir` is atomic) holding `holder.json`.
    pub fn lock(&self) -> String {
        self.at("state/lock")
    }

    pub fn lock_holder(&self) -> String {
        self.at("state/lock/holder.json")
    }

    pub fn consumed(&self, plan: &str) -> String {
        self.at(&format!("state/consumed/{plan}.json"))
    }

    // Controller records.

    /// The controller's record of an apply (distinct from the nodes' `consumed`: the
    /// controller may be a node itself, and applies on a node record there too).
    pub fn applied(&self, plan: &str) -> String {
        self.at(&format!("state/applied/{plan}.json"))
    }

    pub fn rejected(&self, plan: &str) -> String {
        self.at(&format!("state/rejected/{plan}.json"))
    }

    /// The folder of the actions in `state`.
    pub fn actions(&self, state: ActionState) -> String {
        self.at(&format!("actions/{}", state.as_str()))
    }

    pub fn action(&self, state: ActionState, plan: &str) -> String {
        format!("{}/{plan}.json", self.actions(state))
    }

    // The stability agent.

    /// The stability agent's own records (heartbeat, what it last saw).
    pub fn agent_dir(&self) -> String {
        self.at("state/agent")
    }

    /// Written atomically every interval: when, which node, which version, what it watches.
    pub fn agent_heartbeat(&self) -> String {
        self.at("state/agent/heartbeat.json")
    }

    /// The transitions the agent has reported, so a restarted agent neither repeats nor loses one.
    pub fn agent_state(&self) -> String {
        self.at("state/agent/state.json")
    }

    // Events.

    /// A node's events of one day (`YYYY-MM-DD`).
    pub fn events(&self, day: &str, node: &str) -> String {
        self.at(&format!("events/{day}/{node}/events.jsonl"))
    }

    pub fn events_root(&self) -> String {
        self.at("events")
    }

    // The observer (on the controller).

    /// One file of the world the observer folds from events (`nodes`, `services`,
    /// `deployments`, `incidents`; docs/world.md).
    pub fn world(&self, name: &str) -> String {
        self.at(&format!("world/{name}.json"))
    }

    /// Where the observer stopped reading each node's event files.
    pub fn observer_cursors(&self) -> String {
        self.at("state/observer/cursors.json")
    }

    // The supervisor and the executor (on the controller).

    /// The supervisor's memory: the last drift it planned for, and the plan.
    pub fn supervisor_state(&self) -> String {
        self.at("state/supervisor/last.json")
    }

    /// Held (`flock`) by the one executor working on this root's actions.
    pub fn executor_lock(&self) -> String {
        self.at("state/executor/lock")
    }

    /// The Telegram bot's state (getUpdates offset, messages sent, button secret; mode 0600).
    pub fn telegram_state(&self) -> String {
        self.at("state/telegram/state.json")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_sit_under_the_root() {
        let l = Layout::new("/opt/homelab/");
        assert_eq!(l.root(), "/opt/homelab");
        assert_eq!(l.live("mosquitto"), "/opt/homelab/state/services/mosquitto");
        assert_eq!(l.journal("ab12"), "/opt/homelab/state/deploy/ab12/journal.json");
        assert_eq!(
            l.events("2026-11-30", "chelsty-infra"),
            "/opt/homelab/events/2026-11-30/chelsty-infra/events.jsonl"
        );
        assert_eq!(
            l.action(ActionState::Pending, "ab12"),
            "/opt/homelab/actions/pending/ab12.json"
        );
        assert_eq!(Layout::new("/").live("x"), "/state/services/x");
        assert_eq!(l.world("nodes"), "/opt/homelab/world/nodes.json");
        assert_eq!(l.observer_cursors(), "/opt/homelab/state/observer/cursors.json");
        assert_eq!(l.folder(""), "/opt/homelab");
        assert_eq!(l.folder("actions/pending"), "/opt/homelab/actions/pending");
        assert_eq!(l.binary(), "/opt/homelab/bin/homelab");
        assert_eq!(Layout::new("/").folder(""), "/");
        assert_eq!(Layout::new("/").binary(), "/bin/homelab");
        assert_eq!(Layout::new("/srv/it's here").binary(), "/srv/it's here/bin/homelab");
    }

    /// One source of truth: every path spelled here sits under a folder bootstrap creates,
    /// and every action state has its folder in the tree.
    #[test]
    fn every_path_sits_in_a_folder_of_the_tree() {
        let l = Layout::new("/r");
        let in_tree = |path: &str| {
            let rel = path.strip_prefix("/r/").unwrap();
            TREE.iter().any(|(f, _)| !f.is_empty() && rel.starts_with(&format!("{f}/")))
        };
        for state in ActionState::ALL {
            let folder = l.actions(state);
            let rel = folder.strip_prefix("/r/").unwrap();
            assert!(TREE.iter().any(|(f, _)| *f == rel), "{rel} is not in TREE");
            assert!(in_tree(&l.action(state, "p")));
        }
        for path in [
            l.binary(),
            l.data("s"),
            l.config("s"),
            l.env_file("s"),
            l.logs("s"),
            l.step_log("s", "p", "up"),
            l.live("s"),
            l.release("s", "p"),
            l.staging("s", "p"),
            l.journal("p"),
            l.job("p", "s", "up"),
            l.lock_holder(),
            l.consumed("p"),
            l.applied("p"),
            l.rejected("p"),
            l.agent_heartbeat(),
            l.agent_state(),
            l.events("2026-11-30", "n"),
            l.world("nodes"),
            l.observer_cursors(),
            l.supervisor_state(),
            l.executor_lock(),
        ] {
            assert!(in_tree(&path), "{path} is in no folder of TREE");
        }
        let config = TREE.iter().find(|(f, _)| *f == "config").unwrap().1;
        let logs = TREE.iter().find(|(f, _)| *f == "logs").unwrap().1;
        assert_eq!((config & 0o007, logs & 0o007), (0, 0), "secrets are not world-readable");
    }
}
