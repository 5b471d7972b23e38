//! `homelab ui`: the operator page. Reads the login token (a file, or `$HOMELAB_UI_TOKEN`)
//! and the places to read from, then hands them to `crate::ui`, which serves until stopped.
//! A rejection made on the page is also written on the plan's nodes, reached as `--transport`
//! and its options say (as for `homelab reject`).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use super::args::Target;
use crate::error::{Error, Report};
use crate::model::NodeName;
use crate::ui::{self, auth::Token, data::Sources};

/// The environment variable the login token may come from (a file is better: see docs/ui.md).
pub const TOKEN_ENV: &str = "HOMELAB_UI_TOKEN";

#[derive(Debug, clap::Args)]
pub struct UiArgs {
    /// Address to listen on: loopback (default) or the node's tailnet address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8470")]
    pub listen: SocketAddr,
    /// Listen on an address that is neither loopback nor the tailnet (plain HTTP: put TLS in
    /// front of it).
    #[arg(long)]
    pub allow_any_address: bool,
    /// A host name the page answers besides IP addresses and localhost, such as the node's
    /// MagicDNS name (repeatable).
    #[arg(long = "allow-host", value_name = "NAME")]
    pub allow_hosts: Vec<String>,
    /// File holding the login token that approving and rejecting need (else
    /// $HOMELAB_UI_TOKEN; without either the page is read-only).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Folder of plan files (default: the repository's `plans/`).
    #[arg(long, value_name = "DIR")]
    pub plans_dir: Option<PathBuf>,
    /// How a rejection reaches the plan's nodes, as for `homelab reject`. With `--root DIR`
    /// the nodes' runtime roots are on this machine: node `<id>`'s events under
    /// `DIR/<id>/events/` also join the timeline.
    #[command(flatten)]
    pub target: Target,
}

fn token(args: &UiArgs) -> Result<Option<Token>, Error> {
    let bad = |e: ui::auth::TokenError| Error::Unsupported { message: e.to_string() };
    if let Some(path) = &args.token_file {
        let text = std::fs::read_to_string(path)
            .map_err(|source| Error::Read { path: path.clone(), source })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
                eprintln!(
                    "warning: `{}` can be read by other users; `chmod 600` it",
                    path.display()
                );
            }
        }
        return Token::new(&text, &format!("`{}`", path.display())).map(Some).map_err(bad);
    }
    match std::env::var(TOKEN_ENV) {
        Ok(t) if !t.is_empty() => Token::new(&t, &format!("${TOKEN_ENV}")).map(Some).map_err(bad),
        _ => Ok(None),
    }
}

/// The nodes `--node` names (the homelab is read only then: the page starts without a valid
/// one and says what is wrong); `None`: every node of the plan.
fn nodes(repo: &std::path::Path, target: &Target) -> Result<Option<Vec<NodeName>>, Error> {
    if target.nodes.is_empty() {
        return Ok(None);
    }
    let lab = super::load(repo)?;
    let mut out = Vec::new();
    for n in &target.nodes {
        let id = super::resolve_node(&lab, n)?;
        if !out.contains(&id) {
            out.push(id);
        }
    }
    Ok(Some(out))
}

pub fn run(repo: &std::path::Path, args: &UiArgs, out: &mut dyn Write) -> Result<Report, Error> {
    let token = token(args)?;
    let read_only = token.is_none();
    let config = ui::Config {
        sources: Sources {
            repo: repo.to_path_buf(),
            plans: super::plans_dir(repo, args.plans_dir.as_ref()),
            root: args.target.controller.root(args.target.root.as_ref()),
            node_roots: args.target.root.clone(),
        },
        listen: args.listen,
        allow_any_address: args.allow_any_address,
        allow_hosts: args.allow_hosts.clone(),
        token,
        transport: super::transport(repo, &args.target),
        nodes: nodes(repo, &args.target)?,
    };
    let mut said = Ok(());
    ui::serve(config, |addr| {
        said = writeln!(out, "homelab ui: listening on http://{addr}").and_then(|()| out.flush());
        if read_only {
            eprintln!(
                "homelab ui: no login token (--token-file or ${TOKEN_ENV}): the page is read-only"
            );
        }
    })
    .map_err(|e| Error::Unsupported { message: e.to_string() })?;
    said.map_err(Error::stdout)?;
    Ok(Report::Success)
}
