//! `homelab node serve` and `homelab node engine`: this node's side (`crate::engine`). They
//! need no homelab repository: a node holds only its runtime root, whose trust roots say what
//! it accepts.

use std::path::PathBuf;

use crate::error::{Error, Report};

#[derive(Debug, clap::Subcommand)]
pub enum NodeCommand {
    /// Answer one controller session on stdin and stdout (the node protocol): what a
    /// controller's SSH session runs, and all a deploy key restricted by bootstrap can run.
    #[command(
        after_help = "Example (in authorized_keys, written by `homelab bootstrap --deploy-key`):\n  restrict,command=\"/opt/homelab/bin/homelab node serve --root /opt/homelab\" ssh-ed25519 AAAA... homelab-deploy"
    )]
    Serve {
        /// This node's runtime root.
        #[arg(long, value_name = "DIR", env = "HOMELAB_ROOT", default_value = "/opt/homelab")]
        root: PathBuf,
    },
    /// Write NODE's trust roots, as bootstrap pins them, into the runtime root DIR on this
    /// machine (for nodes set up by hand, and the benchmark's fleet).
    #[command(hide = true)]
    Pin {
        #[arg(value_name = "NODE")]
        node: String,
        #[arg(long, value_name = "DIR")]
        into: PathBuf,
    },
    /// A step of a deploy as a detached job of this node, started by the engine: its pid,
    /// output and exit status kept in the job folder DIR.
    #[command(hide = true)]
    Job {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        #[arg(value_name = "STEP")]
        step: String,
        /// The step's arguments, after `--`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// A deploy's dead-man watchdog, started detached by the engine when it arms the deploy.
    #[command(hide = true)]
    Deadman {
        /// The watchdog's arguments, after `--`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// The engine of one plan on this node, started detached by `serve`.
    #[command(hide = true)]
    Engine {
        #[arg(long, value_name = "DIR")]
        root: PathBuf,
        #[arg(long, value_name = "ID")]
        plan: String,
    },
}

pub fn run(repo: &std::path::Path, cmd: &NodeCommand) -> Result<Report, Error> {
    match cmd {
        NodeCommand::Pin { node, into } => {
            let lab = super::load(repo)?;
            let id = super::resolve_node(&lab, node)?;
            let dir = into.join("trust");
            for (name, bytes) in crate::bootstrap::trust::wanted(&lab, &id) {
                super::write(&dir.join(name), &bytes)?;
            }
            Ok(Report::Success)
        }
        NodeCommand::Serve { root } => {
            let mut input = std::io::stdin();
            let mut output = std::io::stdout().lock();
            crate::engine::serve::serve(root, &mut input, &mut output)
                .map_err(|e| Error::Unsupported { message: format!("node serve: {e}") })?;
            Ok(Report::Success)
        }
        NodeCommand::Job { dir, step, args } => {
            let now = std::time::SystemTime::now();
            // The step's status is its `rc` file's; nothing more is printed (stderr is the
            // job's `err` by now).
            crate::apply::switch::job_main(dir, step, args, now)
                .map_err(|e| Error::Unsupported { message: format!("node job: {e}") })?;
            crate::apply::deadman::after_job(dir, step);
            Ok(Report::Success)
        }
        NodeCommand::Deadman { args } => {
            crate::apply::deadman::watch(args, &std::time::SystemTime::now)
                .map_err(|e| Error::Unsupported { message: format!("node deadman: {e}") })?;
            Ok(Report::Success)
        }
        NodeCommand::Engine { root, plan } => {
            crate::engine::run::engine(root, plan)
                .map_err(|message| Error::Unsupported { message })?;
            Ok(Report::Success)
        }
    }
}
