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
    /// The engine of one plan on this node, started detached by `serve`.
    #[command(hide = true)]
    Engine {
        #[arg(long, value_name = "DIR")]
        root: PathBuf,
        #[arg(long, value_name = "ID")]
        plan: String,
    },
}

pub fn run(cmd: &NodeCommand) -> Result<Report, Error> {
    match cmd {
        NodeCommand::Serve { root } => {
            let mut input = std::io::stdin();
            let mut output = std::io::stdout().lock();
            crate::engine::serve::serve(root, &mut input, &mut output)
                .map_err(|e| Error::Unsupported { message: format!("node serve: {e}") })?;
            Ok(Report::Success)
        }
        NodeCommand::Engine { root, plan } => {
            crate::engine::run::engine(root, plan)
                .map_err(|message| Error::Unsupported { message })?;
            Ok(Report::Success)
        }
    }
}
