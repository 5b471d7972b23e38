//! `homelab import DIR --as SVC --node NODE [--exposure CLASS]`: a Compose project folder as
//! published becomes `services/SVC/` (`crate::import` does the work). This file owns the
//! arguments and what the terminal shows: every edit with its reason, the files copied, and
//! what the operator still has to put on the node.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Report};
use crate::import::{self, Request};
use crate::model::Exposure;

/// The exposure classes, as `--exposure` takes them.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ExposureArg {
    Internal,
    Lan,
    Tailnet,
    Public,
}

impl From<ExposureArg> for Exposure {
    fn from(e: ExposureArg) -> Exposure {
        match e {
            ExposureArg::Internal => Exposure::Internal,
            ExposureArg::Lan => Exposure::Lan,
            ExposureArg::Tailnet => Exposure::Tailnet,
            ExposureArg::Public => Exposure::Public,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The Compose project folder, as published (its compose file, config files, `.env`).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// The service's name in the homelab (kebab-case): `services/<SVC>/`, its container and
    /// compose project name.
    #[arg(long = "as", value_name = "SVC")]
    pub service: String,
    /// The node that runs it (id or display name); the service is added to its
    /// `hosts/<node>/services.yaml`.
    #[arg(long, value_name = "NODE")]
    pub node: String,
    /// The exposure class. Default: `lan` when the project publishes a port, else `internal`.
    #[arg(long, value_enum, value_name = "CLASS")]
    pub exposure: Option<ExposureArg>,
}

pub fn run(repo: &Path, args: &ImportArgs, out: &mut dyn Write) -> Result<Report, Error> {
    let req = Request {
        dir: &args.dir,
        service: &args.service,
        node: &args.node,
        exposure: args.exposure.map(Exposure::from),
    };
    let done = import::run(repo, &req)?;
    let mut text = format!(
        "imported `{}` as services/{}/ on `{}` (exposure {})\n",
        args.dir.display(),
        done.service,
        done.node,
        done.exposure.as_str()
    );
    for e in &done.edits {
        text.push_str(&format!("  edit {e}\n"));
    }
    for c in &done.copied {
        text.push_str(&format!("  copy {c}\n"));
    }
    let config = format!("{}/config/{}", done.root.trim_end_matches('/'), done.service);
    if !done.secrets.is_empty() {
        text.push_str(&format!(
            "before the first deploy, set in {config}/.env on `{}`: {}\n",
            done.node,
            done.secrets.join(", ")
        ));
    }
    if !done.required.is_empty() {
        text.push_str(&format!(
            "before the first deploy, set in {config}/.env on `{}` (no default): {}\n",
            done.node,
            done.required.join(", ")
        ));
    }
    for f in &done.node_files {
        text.push_str(&format!(
            "before the first deploy, put `{f}` in {config}/ on `{}`\n",
            done.node
        ));
    }
    for n in &done.networks {
        text.push_str(&format!(
            "the project marks the Docker network `{n}` `external: true`: service.yaml declares it (`networks`), and the plan creates it on `{}` before the service comes up\n",
            done.node
        ));
    }
    text.push_str("services/");
    text.push_str(&done.service);
    text.push_str("/ validates; review it (README.md lists every edit), then `homelab plan`\n");
    out.write_all(text.as_bytes()).map_err(Error::stdout)?;
    for n in &done.notes {
        eprintln!("{}", n.as_note());
    }
    Ok(Report::Success)
}
