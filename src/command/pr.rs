//! `homelab pr PLAN`: the plan's pull request on Forgejo — the plan file on its branch, the one
//! plan comment (`show --format markdown`), the commit status — and `--status` to set that
//! status after apply. Settings come from flags, else `inventory/forge.yaml`; the token from
//! `--token-file`, else `$HOMELAB_FORGE_TOKEN`, and it is never printed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::args::ShowFormat;
use crate::error::{Error, Report};
use crate::forge::{self, comment, pr, Client, ForgeError, Slug, State, Token, DEFAULT_RETRY};
use crate::plan::file;

/// The settings file, relative to the repository.
pub const FORGE_FILE: &str = "inventory/forge.yaml";

/// The environment variable that holds the token.
pub const TOKEN_ENV: &str = "HOMELAB_FORGE_TOKEN";

/// A commit status to set, as `--status` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusArg {
    Pending,
    Success,
    Failure,
    Error,
}

impl From<StatusArg> for State {
    fn from(s: StatusArg) -> State {
        match s {
            StatusArg::Pending => State::Pending,
            StatusArg::Success => State::Success,
            StatusArg::Failure => State::Failure,
            StatusArg::Error => State::Error,
        }
    }
}

/// The forge options of `pr` (and `plan --pr`), as parsed.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ForgeArgs {
    /// The Forgejo server (default: `url` in inventory/forge.yaml).
    #[arg(long, value_name = "URL")]
    pub forge: Option<String>,
    /// The repository on it (default: `repo` in inventory/forge.yaml).
    #[arg(long, value_name = "OWNER/NAME")]
    pub repo_slug: Option<String>,
    /// The branch the pull request goes into (default: `base` in inventory/forge.yaml, else main).
    #[arg(long, value_name = "BRANCH")]
    pub base: Option<String>,
    /// The branch that carries the plan (default `plan/<id>`); name an open pull request's
    /// branch to put a new plan on it and update its comment.
    #[arg(long, value_name = "BRANCH")]
    pub branch: Option<String>,
    /// A file holding the Forgejo token (default: $HOMELAB_FORGE_TOKEN).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The operator page a commit status links to, as `<URL>/plans/<id>` (default:
    /// `operator_url` in inventory/forge.yaml, else the plan file on the forge).
    #[arg(long, value_name = "URL")]
    pub operator_url: Option<String>,
}

/// Everything `pr` needs, built from flags and the settings file.
pub struct Forge {
    pub client: Client,
    pub repo: Slug,
    pub base: String,
    pub comment_limit: usize,
    pub operator_url: Option<String>,
}

impl Forge {
    /// Flags first, then inventory/forge.yaml; the token from `--token-file` or the environment.
    pub fn build(repo: &Path, args: &ForgeArgs) -> Result<Forge, Error> {
        let path = repo.join(FORGE_FILE);
        let settings = if path.is_file() {
            let text = file::read_bounded(&path).map_err(|e| Error::Unsupported {
                message: format!("cannot read `{FORGE_FILE}`: {e}"),
            })?;
            forge::ForgeFile::parse(&text).map_err(|e| Error::Unsupported {
                message: format!(
                    "`{FORGE_FILE}` is not valid: {e} (docs/forgejo.md lists its fields)"
                ),
            })?
        } else {
            forge::ForgeFile::default()
        };
        let missing = |what: &str, flag: &str, field: &str| {
            Error::Forge(ForgeError::Config {
                what: what.to_owned(),
                fix: format!("pass {flag}, or set `{field}` in {FORGE_FILE} (docs/forgejo.md)"),
            })
        };
        let url = args
            .forge
            .clone()
            .or(settings.url)
            .ok_or_else(|| missing("server", "--forge https://forge.example.org", "url"))?;
        let url = forge::check_url("Forgejo URL", &url)?;
        let slug = args
            .repo_slug
            .clone()
            .or(settings.repo)
            .ok_or_else(|| missing("repository", "--repo-slug OWNER/NAME", "repo"))?;
        let slug = Slug::parse(&slug)?;
        let base = args.base.clone().or(settings.base).unwrap_or_else(|| "main".to_owned());
        forge::check_branch(&base)?;
        let operator_url = match args.operator_url.clone().or(settings.operator_url) {
            Some(u) => Some(forge::check_url("operator page URL", &u)?),
            None => None,
        };
        let token = token(args.token_file.as_deref())?;
        let mut retry = DEFAULT_RETRY;
        // Scripts (and the tests) may shorten the pause between retries.
        if let Some(ms) = std::env::var("HOMELAB_FORGE_RETRY_MS").ok().and_then(|v| v.parse().ok())
        {
            retry.base = Duration::from_millis(ms);
        }
        Ok(Forge {
            client: Client::new(&url, &slug, token, retry),
            repo: slug,
            base,
            comment_limit: settings.comment_limit.unwrap_or(comment::DEFAULT_LIMIT),
            operator_url,
        })
    }

    /// Where a commit status for plan `id` links to.
    fn target_url(&self, id: &str, branch: &str, plan_path: &str) -> String {
        match &self.operator_url {
            Some(u) => format!("{u}/plans/{id}"),
            None => format!("{}/{}/src/branch/{branch}/{plan_path}", self.client.base(), self.repo),
        }
    }
}

/// The token: `--token-file`, else `$HOMELAB_FORGE_TOKEN`. Never echoed.
fn token(file: Option<&Path>) -> Result<Token, Error> {
    let raw = match file {
        Some(p) => std::fs::read_to_string(p).map_err(|e| {
            Error::Forge(ForgeError::Token { message: format!("`{}`: {e}", p.display()) })
        })?,
        None => std::env::var(TOKEN_ENV).map_err(|_| {
            Error::Forge(ForgeError::Config {
                what: "token".to_owned(),
                fix: format!("set ${TOKEN_ENV}, or pass --token-file FILE (a token with the scopes `write:repository` and `write:issue`; docs/forgejo.md)"),
            })
        })?,
    };
    Token::new(&raw).map_err(Error::Forge)
}

/// `homelab pr PLAN [--status STATE]`.
pub fn run(
    repo: &Path,
    plan_path: &Path,
    args: &ForgeArgs,
    status: Option<StatusArg>,
    out: &mut dyn Write,
) -> Result<Report, Error> {
    let loaded = file::read(plan_path).map_err(crate::approve::policy::Refusal::from)?;
    let name = format!("plans/{}.plan", loaded.id);
    let branch = args.branch.clone().unwrap_or_else(|| format!("plan/{}", loaded.id));
    forge::check_branch(&branch)?;
    let forge = Forge::build(repo, args)?;
    let target_url = forge.target_url(&loaded.id, &branch, &name);
    if let Some(state) = status {
        let state = State::from(state);
        let description = match state {
            State::Pending => format!("plan {} awaits approval", loaded.id),
            State::Success => format!("plan {} applied", loaded.id),
            State::Failure => format!("plan {} failed to apply", loaded.id),
            State::Error => format!("plan {} could not be applied", loaded.id),
        };
        let sha = forge::set_status(
            &forge.client,
            &forge.repo,
            &branch,
            state,
            &target_url,
            &description,
        )?;
        writeln!(out, "status {} on {branch} ({sha}): {target_url}", state.as_str())
            .map_err(Error::stdout)?;
        return Ok(Report::Success);
    }
    open(repo, plan_path, &loaded, &forge, &branch, &target_url, out)
}

/// `plan --pr`: the pull request of the plan just saved, with the settings of
/// inventory/forge.yaml and the token of $HOMELAB_FORGE_TOKEN.
pub fn after_plan(repo: &Path, plan_path: &Path, out: &mut dyn Write) -> Result<Report, Error> {
    run(repo, plan_path, &ForgeArgs::default(), None, out).map_err(|e| Error::Unsupported {
        message: format!(
            "{e}\nthe plan was saved; open its pull request with `homelab pr {}`",
            plan_path.display()
        ),
    })
}

/// For the executor after apply: sets the status of plan `id`'s branch (`plan/<id>`) to
/// `state`, with the settings of inventory/forge.yaml and the token of $HOMELAB_FORGE_TOKEN.
/// `Ok(None)` when the repository has no inventory/forge.yaml (no forge to tell); `Ok(Some(sha))`
/// for the commit whose status was set.
pub fn report_apply(repo: &Path, id: &str, state: State) -> Result<Option<String>, Error> {
    if !repo.join(FORGE_FILE).is_file() {
        return Ok(None);
    }
    let forge = Forge::build(repo, &ForgeArgs::default())?;
    let branch = format!("plan/{id}");
    let target_url = forge.target_url(id, &branch, &format!("plans/{id}.plan"));
    let description = format!("plan {id}: apply ended in {}", state.as_str());
    forge::set_status(&forge.client, &forge.repo, &branch, state, &target_url, &description)
        .map(Some)
        .map_err(Error::Forge)
}

/// Opens or updates the pull request of the plan at `plan_path`.
fn open(
    repo: &Path,
    plan_path: &Path,
    loaded: &file::LoadedPlan,
    forge: &Forge,
    branch: &str,
    target_url: &str,
    out: &mut dyn Write,
) -> Result<Report, Error> {
    let bytes = std::fs::read(plan_path)
        .map_err(|source| Error::Read { path: plan_path.to_path_buf(), source })?;
    // The comment is exactly what `homelab show --format markdown` prints, review included.
    let mut markdown = Vec::new();
    // The controller's records as `show` finds them (a supervisor's plan shows its reason).
    let controller = super::args::Controller {
        controller_root: std::env::var_os("HOMELAB_ROOT").map(std::path::PathBuf::from),
    }
    .root(None);
    let review =
        super::show::run(repo, plan_path, ShowFormat::Markdown, &controller, &mut markdown)?;
    let markdown = String::from_utf8_lossy(&markdown);
    let name = format!("plans/{}.plan", loaded.id);
    let changes: usize = loaded.plan.nodes.iter().map(|n| n.changes.len()).sum();
    let nodes: Vec<String> = loaded.plan.nodes.iter().map(|n| n.node.display_name()).collect();
    let title = format!("homelab plan {}: {changes} change(s) on {}", loaded.id, nodes.join(", "));
    let (state, description) = if review == Report::Refused {
        (State::Failure, format!("homelab refused plan {} on review: see the comment", loaded.id))
    } else {
        (State::Pending, format!("plan {} awaits approval", loaded.id))
    };
    let t = pr::Target {
        repo: &forge.repo,
        base: &forge.base,
        branch,
        comment_limit: forge.comment_limit,
        target_url: Some(target_url),
    };
    let upload = pr::PlanUpload {
        id: &loaded.id,
        path: &name,
        bytes: &bytes,
        markdown: &markdown,
        title: &title,
    };
    let done = forge::open_or_update(&forge.client, &t, &upload, state, &description)?;
    let w = |out: &mut dyn Write, line: String| writeln!(out, "{line}").map_err(Error::stdout);
    w(out, format!("pull request #{} {}: {}", done.number, done.pr.word(), done.url))?;
    w(out, format!("plan file {name} on {branch}: {}", done.file.word()))?;
    w(
        out,
        format!(
            "plan comment {}{}",
            done.comment.word(),
            if done.cut { " (cut to fit; links to the plan file)" } else { "" }
        ),
    )?;
    w(out, format!("status {} on {}: {target_url}", done.state.as_str(), done.sha))?;
    Ok(review)
}
