//! The command line: the clap types of every command, and one `match` that hands each to its
//! file under `command/`. Nothing else lives here; nothing but `lib.rs` imports it.

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::command::args::{
    Controller, DataFormat, EventsAt, GraphFormat, ShowFormat, StageArg, Target,
};
use crate::command::{self, apply::ApplyArgs, events::Emit, plan::PlanArgs};
use crate::error::{Error, Report};
use crate::node::journal::Stage;

const EXAMPLES: &str = "\
Examples:
  homelab validate                      check the homelab in the current folder
  homelab graph --format mermaid        the dependency graph, for a Forgejo PR
  homelab render --node chelsty-infra --out out/   what would be deployed on CHELSTY-INFRA
  homelab import ~/src/gitea --as gitea --node saturn   a published Compose project as a service
  homelab plan --key ~/.ssh/id_ed25519  plan every node over SSH; writes plans/<id>.plan
  homelab approve plans/<id>.plan       sign the plan as an approver
  homelab apply plans/<id>.approved     apply an approved plan";

#[derive(Debug, Parser)]
#[command(name = "homelab", version, about = "Plan/apply for a self-hosted homelab", after_help = EXAMPLES)]
pub struct Cli {
    /// The homelab repository (inventory/, hosts/, services/, templates/). Default: the first
    /// folder from the current one upwards holding `inventory/topology.yaml`, as Git finds
    /// its repository.
    #[arg(long, global = true, env = "HOMELAB_REPO", value_name = "DIR")]
    pub repo: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load the homelab definition and report every problem, with file, line and field.
    #[command(after_help = "Example:\n  homelab validate --repo ~/homelab")]
    Validate {
        #[arg(long, value_enum, default_value_t = DataFormat::Text)]
        format: DataFormat,
    },
    /// Print the dependency graph of service instances and the deployment order.
    #[command(
        after_help = "Examples:\n  homelab graph --format dot | dot -Tsvg > graph.svg\n  homelab graph --format mermaid   (paste into a Forgejo comment inside ```mermaid)"
    )]
    Graph {
        #[arg(long, value_enum, default_value_t = GraphFormat::Text)]
        format: GraphFormat,
    },
    /// Render the exact artifacts each service instance will have on its node.
    #[command(
        after_help = "Example:\n  homelab render --node chelsty-infra --service mosquitto --out out/\n  (writes out/chelsty-infra/mosquitto/{docker-compose.yml,healthcheck.sh,manifest.json})"
    )]
    Render {
        /// Only this node (id or display name).
        #[arg(long, value_name = "NODE")]
        node: Option<String>,
        /// Only this service.
        #[arg(long, value_name = "SERVICE")]
        service: Option<String>,
        /// Where to write `<node>/<service>/...`.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Render as `--transport local --root DIR` deploys: node `<id>`'s runtime root
        /// (`{{ root }}`, `{{ config_dir }}`, ...) is `DIR/<id>/` (default: the topology's).
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
    },
    /// Diff desired against actual state and write a signed plan: `plans/<id>.plan`.
    #[command(
        after_help = "Examples:\n  homelab plan --transport local --root /tmp/homelab-runtime\n  homelab plan --node chelsty-infra --key ~/.ssh/id_ed25519 --detailed-exitcode\n\nThe signing key is `--key`, else $HOMELAB_SIGNING_KEY, else Git's `user.signingkey`;\nan encrypted key takes its passphrase from $HOMELAB_KEY_PASSPHRASE."
    )]
    Plan {
        #[command(flatten)]
        target: Target,
        /// OpenSSH private key that signs the plan.
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        /// Folder for plan files (default: the repository's `plans/`).
        #[arg(long, value_name = "DIR")]
        plans_dir: Option<PathBuf>,
        /// Exit 0 when nothing changes, 2 when the plan has changes (as Terraform); 1 on any
        /// error, a node that could not be read included.
        #[arg(long)]
        detailed_exitcode: bool,
        /// Save the plan even when some nodes could not be read (nothing is planned for them;
        /// the exit status is still 1).
        #[arg(long)]
        allow_unreachable: bool,
        /// Once saved, open or update the plan's Forgejo pull request, as `homelab pr` does
        /// (settings from inventory/forge.yaml, token from $HOMELAB_FORGE_TOKEN).
        #[arg(long)]
        pr: bool,
    },
    /// Show a plan file: colour text, Markdown for a Forgejo comment, or JSON.
    #[command(
        after_help = "Examples:\n  homelab show plans/1a2b3c4d5e6f7a8b.plan\n  homelab show plans/1a2b3c4d5e6f7a8b.plan --format markdown > comment.md"
    )]
    Show {
        plan: PathBuf,
        #[arg(long, value_enum, default_value_t = ShowFormat::Text)]
        format: ShowFormat,
        /// Where the plan's action is (its reason, for a supervisor's plan).
        #[command(flatten)]
        controller: Controller,
    },
    /// Open or update the plan's pull request on Forgejo: the plan file on its branch, the
    /// plan comment, and a `pending` commit status; or, with --status, set that status.
    #[command(
        after_help = "Examples:\n  HOMELAB_FORGE_TOKEN=... homelab pr plans/1a2b3c4d5e6f7a8b.plan --forge https://forge.example.org --repo-slug me/homelab\n  homelab pr plans/1a2b3c4d5e6f7a8b.plan --token-file ~/.config/homelab/forge-token   (settings in inventory/forge.yaml)\n  homelab pr plans/1a2b3c4d5e6f7a8b.plan --status success   (after apply)\n\nThe token is $HOMELAB_FORGE_TOKEN or --token-file; it is never printed. See docs/forgejo.md."
    )]
    Pr {
        plan: PathBuf,
        #[command(flatten)]
        forge: command::pr::ForgeArgs,
        /// Only set the commit status of the plan's branch head (after apply, from scripts).
        #[arg(long, value_enum, value_name = "STATE")]
        status: Option<command::pr::StatusArg>,
    },
    /// Approve a plan with your SSH key: writes `plans/<id>.approved`.
    #[command(
        after_help = "Example:\n  homelab approve plans/1a2b3c4d5e6f7a8b.plan --key ~/.ssh/id_ed25519 --yes"
    )]
    Approve {
        plan: PathBuf,
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        /// Approve without asking (required when stdin is not a terminal).
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        controller: Controller,
    },
    /// Reject a plan: apply will refuse it.
    #[command(
        after_help = "Example:\n  homelab reject plans/1a2b3c4d5e6f7a8b.plan --reason \"mosquitto upgrade waits for the weekend\""
    )]
    Reject {
        plan: PathBuf,
        #[arg(long)]
        reason: String,
        /// Your key, to record who rejected (optional).
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        /// The nodes the rejection is recorded on (every node of the plan by default), so
        /// no controller and no copy of the plan can apply it there.
        #[command(flatten)]
        target: Target,
    },
    /// Apply an approved plan, per node.
    #[command(
        after_help = "Examples:\n  homelab apply plans/1a2b3c4d5e6f7a8b.approved\n  homelab apply --node chelsty-infra --transport local plans/1a2b3c4d5e6f7a8b.approved"
    )]
    Apply {
        /// The approved plan to apply, `plans/<id>.approved`, as `homelab approve` writes it.
        #[arg(value_name = "APPROVED")]
        approved: PathBuf,
        #[command(flatten)]
        target: Target,
        /// Only these services (repeatable); the rest of the plan stays pending.
        #[arg(long = "service", value_name = "SERVICE")]
        services: Vec<String>,
        /// Run only this stage of the pipeline, once the stages before it are done
        /// (`--stage prepare` first); every later `--stage` of the plan takes `--resume`.
        #[arg(long, value_enum)]
        stage: Option<StageArg>,
        /// Continue an apply that stopped (dropped link, killed process) where it stopped.
        #[arg(long)]
        resume: bool,
        /// Wait up to this many seconds for a node locked by another apply (default: refuse).
        #[arg(long, value_name = "SECONDS", default_value_t = 0)]
        lock_wait: u64,
        /// Seconds a node waits, after `compose up` and the healthcheck's own time, for this
        /// apply to confirm the deploy over a fresh connection; unconfirmed, the node rolls the
        /// service back by itself (a change that cut it off undoes itself). 0: no dead-man.
        #[arg(long, value_name = "SECONDS", default_value_t = 30)]
        confirm_timeout: u64,
        /// How many nodes to apply at once.
        #[arg(long, value_name = "N", default_value_t = 8)]
        parallel: usize,
        /// Progress as plain lines (default) or JSON lines.
        #[arg(long, value_enum, default_value_t = DataFormat::Text)]
        format: DataFormat,
    },
    /// Emit or read events (append-only JSON lines under <root>/events/).
    #[command(
        subcommand,
        after_help = "Examples:\n  homelab events emit deployment_started info my-script.sh mosquitto cid-123 '{}'\n  homelab events tail --node chelsty-infra"
    )]
    Events(EventsCommand),
    /// Print a completion script for a shell.
    #[command(
        after_help = "Examples:\n  homelab completions bash > ~/.local/share/bash-completion/completions/homelab\n  homelab completions zsh > ~/.zfunc/_homelab\n  homelab completions fish > ~/.config/fish/completions/homelab.fish"
    )]
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Prepare a node: host key, Docker checks, runtime tree, this binary and the agents' image.
    #[command(
        after_help = "Examples:\n  homelab bootstrap chelsty-infra --check\n  homelab bootstrap vps --host-key SHA256:... --yes"
    )]
    Bootstrap(command::bootstrap::BootstrapArgs),
    /// Fold every node's new events into the world: <controller root>/world/*.json.
    #[command(
        after_help = "Examples:\n  homelab observe --once\n  homelab observe --watch --interval 30\n  homelab observe --transport local --root /tmp/homelab-runtime --controller-root /tmp/ctl\n\nExits 1 when a node could not be read (the others are folded)."
    )]
    Observe {
        #[command(flatten)]
        target: Target,
        /// One pass (catching up a backlog), then exit: the default.
        #[arg(long, conflicts_with = "watch")]
        once: bool,
        /// A pass every `--interval` seconds until stopped.
        #[arg(long)]
        watch: bool,
        /// Seconds between passes with `--watch`.
        #[arg(long, value_name = "SECONDS", default_value_t = 30, requires = "watch")]
        interval: u64,
    },
    /// The stability agent of this node: watches containers, disk, Tailscale and MQTT and
    /// appends events; never restarts anything.
    #[command(
        after_help = "Examples:\n  homelab agent --node chelsty-infra --mqtt 127.0.0.1:1883\n  homelab agent --once --root /opt/homelab"
    )]
    Agent(command::agent::AgentArgs),
    /// Find drift between a commit's render and the nodes; write it as a pending plan.
    #[command(
        after_help = "Examples:\n  homelab supervise --once --key /opt/homelab/keys/supervisor\n  homelab supervise --interval 300 --key /opt/homelab/keys/supervisor\n\nThe key must be allowed to plan and not to approve (namespaces=\"homelab-plan\")."
    )]
    Supervise(command::supervise::SuperviseArgs),
    /// Apply approved plans: move actions pending → approved → running → completed/failed.
    #[command(
        after_help = "Examples:\n  homelab executor --once\n  homelab executor --watch --interval 10\n\nExits 1 when a pass moved an action to failed/."
    )]
    Executor(command::executor::ExecutorArgs),
    /// The Telegram bot: announce pending plans, results and incidents; Approve and Reject
    /// buttons that sign as `telegram:<user id>` where inventory/policy.yaml allows it.
    #[command(
        after_help = "Examples:\n  HOMELAB_TELEGRAM_TOKEN=... homelab telegram --watch --chat 123456789 --key /opt/homelab/keys/telegram\n  homelab telegram --once --token-file /opt/homelab/config/control-plane/telegram-token   (settings in inventory/telegram.yaml)\n\nThe token is $HOMELAB_TELEGRAM_TOKEN or --token-file; it is never printed. See docs/telegram.md."
    )]
    Telegram(command::telegram::TelegramArgs),
    /// Print (or commit on a branch) the patch that makes the repository match a node.
    #[command(
        after_help = "Examples:\n  homelab adopt chelsty-infra mosquitto | git apply\n  homelab adopt chelsty-infra mosquitto --branch adopt-mosquitto"
    )]
    Adopt(command::adopt::AdoptArgs),
    /// Serve the operator page: the world, plans with their diffs, events; approve or reject.
    #[command(
        after_help = "Examples:\n  homelab ui                                        on 127.0.0.1:8470, read-only\n  homelab ui --listen 100.101.102.103:8470 --token-file /opt/homelab/config/control-plane/ui-token\n\nApproving takes a signature made with `ssh-keygen -Y sign`; the login token only lets a browser hand it in. See docs/ui.md."
    )]
    Ui(command::ui::UiArgs),
    /// Make a published Compose project a service: writes `services/SVC/` (compose file made
    /// to follow the rules, contract, env.example, healthcheck, README) and adds it to the
    /// node's `services.yaml`; prints every edit with its reason.
    #[command(
        after_help = "Examples:\n  homelab import ~/src/gitea --as gitea --node saturn\n  homelab import ./immich --as immich --node solaria --exposure tailnet\n\nValues of the project's .env are never copied: env.example gets the names, the values go in\n<root>/config/SVC/.env on the node. Nothing is overwritten; when the result would not\nvalidate, nothing is written."
    )]
    Import(command::import::ImportArgs),
    /// This node's side: the session a controller talks to (`serve`) and the engine it starts.
    #[command(subcommand)]
    Node(command::node::NodeCommand),
    /// Copy the services' backup sets into each node's restic repository (topology
    /// `backup:`; its password is `config/backup/restic-password` on the node), or list the
    /// snapshots (`backup list`).
    Backup(command::backup::BackupArgs),
    /// Plan the restore of a service's data from a snapshot (local, or `restic:ID`): a signed
    /// plan like any other, approved under the policy as a `restore`, then applied.
    Restore(command::restore::RestoreArgs),
    /// Remove a node's apply lock after showing who holds it (for a holder that is gone).
    #[command(after_help = "Example:\n  homelab unlock --node chelsty-infra")]
    Unlock {
        #[command(flatten)]
        target: Target,
    },
}

/// The shells `homelab completions` writes a script for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Append one event, with the guide's argument order (`emit_event` of scripts/lib/events.sh).
    ///
    /// Bad input (an unknown type or severity, data that is not a JSON object, a control
    /// character in a field, a data key named like a secret, a line over 4096 bytes) writes
    /// nothing and exits 1 naming the argument. Events carry names, never secret values.
    #[command(
        override_usage = "homelab events emit [OPTIONS] TYPE SEVERITY SOURCE SERVICE CORRELATION_ID [DATA]\n       homelab events emit [OPTIONS] --stdin",
        after_help = "Examples:\n  homelab events emit service_unhealthy error monitor.py ollama cid-123 '{\"error\": \"OOM\"}'\n  printf '%s\\n' '{\"type\": \"node_online\", \"severity\": \"info\", \"source\": \"agent\", \"service\": \"-\", \"correlation_id\": \"c1\"}' | homelab events emit --stdin"
    )]
    Emit {
        /// One of the normalized types (deployment_started, service_unhealthy, ...).
        #[arg(required_unless_present = "stdin", value_name = "TYPE")]
        kind: Option<String>,
        /// debug, info, warning, error or critical.
        #[arg(required_unless_present = "stdin")]
        severity: Option<String>,
        /// Who emits it (a script, an agent).
        #[arg(required_unless_present = "stdin")]
        source: Option<String>,
        /// The service it is about (`-` for none).
        #[arg(required_unless_present = "stdin")]
        service: Option<String>,
        /// Correlation id tying related events together.
        #[arg(required_unless_present = "stdin")]
        correlation_id: Option<String>,
        /// A JSON object with details (names, never a secret value) [default: {}].
        data: Option<String>,
        /// Read events from stdin instead, one JSON object per line with the fields `type`,
        /// `severity`, `source`, `service`, `correlation_id` and `data`; all are checked before
        /// any is written.
        #[arg(long, conflicts_with_all = ["kind", "severity", "source", "service", "correlation_id", "data"])]
        stdin: bool,
        #[command(flatten)]
        at: EventsAt,
    },
    /// Print events, oldest first; `--follow` keeps printing new ones.
    #[command(after_help = "Example:\n  homelab events tail --node chelsty-infra --follow")]
    Tail {
        #[command(flatten)]
        at: EventsAt,
        #[arg(long)]
        follow: bool,
        #[arg(long, value_enum, default_value_t = DataFormat::Text)]
        format: DataFormat,
    },
}

/// The stage `--stage` names (diagnose is a mode of its own, see `ApplyArgs`).
fn stage_of(arg: StageArg) -> Stage {
    match arg {
        StageArg::Prepare => Stage::Prepared,
        StageArg::Validate => Stage::Validated,
        StageArg::Deploy => Stage::Deployed,
        StageArg::Verify => Stage::Verified,
        StageArg::Complete | StageArg::Diagnose => Stage::Completed,
    }
}

/// Runs one command, writing its data output to `out`.
pub fn run(cli: Cli, out: &mut dyn Write) -> Result<Report, Error> {
    let repo = &command::find_repo(cli.repo.as_deref());
    match &cli.command {
        Command::Validate { format } => command::validate::run(repo, *format, out),
        Command::Graph { format } => command::graph::run(repo, *format, out),
        Command::Render { node, service, out: dir, root } => {
            command::render::run(repo, node.as_deref(), service.as_deref(), dir, root.as_ref(), out)
        }
        Command::Plan { target, key, plans_dir, detailed_exitcode, allow_unreachable, pr } => {
            let args = PlanArgs {
                target,
                key: key.as_ref(),
                plans_dir: plans_dir.as_ref(),
                detailed_exitcode: *detailed_exitcode,
                allow_unreachable: *allow_unreachable,
                pr: *pr,
            };
            command::plan::run(repo, &args, out)
        }
        Command::Show { plan, format, controller } => {
            command::show::run(repo, plan, *format, &controller.root(None), out)
        }
        Command::Pr { plan, forge, status } => command::pr::run(repo, plan, forge, *status, out),
        Command::Approve { plan, key, yes, controller } => {
            command::approve::approve(repo, plan, key.as_ref(), *yes, controller, out)
        }
        Command::Reject { plan, reason, key, target } => {
            command::approve::reject(repo, plan, reason, key.as_ref(), target)
        }
        Command::Apply {
            approved,
            target,
            services,
            stage,
            resume,
            lock_wait,
            confirm_timeout,
            parallel,
            format,
        } => {
            let args = ApplyArgs {
                approved,
                target,
                services,
                mode: match stage {
                    Some(StageArg::Diagnose) => crate::apply::Mode::Diagnose,
                    _ => crate::apply::Mode::Run { only: stage.map(stage_of) },
                },
                resume: *resume,
                lock_wait: *lock_wait,
                confirm_timeout: *confirm_timeout,
                parallel: *parallel,
                json: matches!(format, DataFormat::Json),
            };
            command::apply::run(repo, &args, out)
        }
        Command::Events(EventsCommand::Emit { stdin: true, at, .. }) => {
            command::events::emit_stdin(at, &mut std::io::stdin().lock())
        }
        Command::Events(EventsCommand::Emit {
            kind,
            severity,
            source,
            service,
            correlation_id,
            data,
            at,
            stdin: false,
        }) => {
            // clap requires the five without `--stdin`.
            let arg = |a: &Option<String>| a.as_deref().unwrap_or_default().to_owned();
            let (kind, severity, source) = (arg(kind), arg(severity), arg(source));
            let (service, correlation_id) = (arg(service), arg(correlation_id));
            let data = data.as_deref().unwrap_or("{}");
            let emit = Emit {
                kind: &kind,
                severity: &severity,
                source: &source,
                service: &service,
                correlation_id: &correlation_id,
                data,
            };
            command::events::emit(&emit, at)
        }
        Command::Events(EventsCommand::Tail { at, follow, format }) => {
            command::events::tail(at, *follow, *format, out)
        }
        Command::Unlock { target } => command::apply::unlock(repo, target, out),
        Command::Backup(args) => command::backup::run(repo, args, out),
        Command::Restore(args) => command::restore::run(repo, args, out),
        Command::Bootstrap(args) => command::bootstrap::run(repo, args, out),
        Command::Supervise(args) => command::supervise::run(repo, args, out),
        Command::Executor(args) => command::executor::run(repo, args, out),
        Command::Telegram(args) => command::telegram::run(repo, args, out),
        Command::Adopt(args) => command::adopt::run(repo, args, out),
        Command::Import(args) => command::import::run(repo, args, out),
        Command::Ui(args) => command::ui::run(repo, args, out),
        Command::Observe { target, once: _, watch, interval } => {
            let args = command::observe::ObserveArgs { target, watch: *watch, interval: *interval };
            command::observe::run(repo, &args, out)
        }
        Command::Agent(args) => command::agent::run(args),
        Command::Node(cmd) => command::node::run(repo, cmd),
        Command::Completions { shell } => {
            use clap_complete::Shell as S;
            let shell = match shell {
                Shell::Bash => S::Bash,
                Shell::Zsh => S::Zsh,
                Shell::Fish => S::Fish,
            };
            let mut buf = Vec::new();
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "homelab",
                &mut buf,
            );
            out.write_all(&buf).map_err(Error::stdout)?;
            Ok(Report::Success)
        }
    }
}
