//! `homelab telegram [--once | --watch]`: the guide's Telegram Bot (in `control-plane`). Each
//! pass answers the presses on its buttons and announces new pending plans, apply results and
//! incidents (`crate::telegram::bot`). Settings come from flags, else `inventory/telegram.yaml`;
//! the token from `--token-file`, else `$HOMELAB_TELEGRAM_TOKEN` (or the control-plane service's
//! `$TELEGRAM_BOT_TOKEN`), and it is never printed; the chat from `--chat`, the file, else
//! `$TELEGRAM_CHAT_ID`; the bot's signing key from `--key`, else `$HOMELAB_TELEGRAM_KEY`. Its
//! key must be allowed in `inventory/allowed_signers` only as `telegram:<id>` principals, or it
//! refuses to run. A rejection pressed in the chat is also written on the plan's nodes, reached
//! as `--transport` and its options say (as for `homelab reject`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::args::Target;
use crate::approve::{keys, APPROVE_NAMESPACE};
use crate::error::{Error, Report};
use crate::executor::Queue;
use crate::plan::file;
use crate::telegram::bot::Bot;
use crate::telegram::state::{State, StateError};
use crate::telegram::{self, Client, TelegramError, Token, DEFAULT_RETRY};

/// The settings file, relative to the repository.
pub const TELEGRAM_FILE: &str = "inventory/telegram.yaml";

/// The environment variable that holds the token.
pub const TOKEN_ENV: &str = "HOMELAB_TELEGRAM_TOKEN";

/// The names `services/control-plane/env.example` gives the token and the chat in the
/// container's `.env`: read when nothing else says.
pub const SERVICE_TOKEN_ENV: &str = "TELEGRAM_BOT_TOKEN";
pub const CHAT_ENV: &str = "TELEGRAM_CHAT_ID";

#[derive(Debug, clap::Args)]
pub struct TelegramArgs {
    /// How a rejection reaches the plan's nodes, as for `homelab reject`.
    #[command(flatten)]
    pub target: Target,
    /// One pass (presses waiting now, then announcements), then exit: the default.
    #[arg(long, conflicts_with = "watch")]
    pub once: bool,
    /// Passes until stopped, long polling for presses between them.
    #[arg(long)]
    pub watch: bool,
    /// With `--watch`: seconds each `getUpdates` long poll waits for a press.
    #[arg(long, value_name = "SECONDS", default_value_t = 25)]
    pub poll: u64,
    /// The Bot API server (default: `api_url` in inventory/telegram.yaml, else
    /// https://api.telegram.org).
    #[arg(long, value_name = "URL", env = "HOMELAB_TELEGRAM_API")]
    pub api_url: Option<String>,
    /// The chat the bot writes to (default: `chat_id` in inventory/telegram.yaml, else
    /// $TELEGRAM_CHAT_ID).
    #[arg(long, value_name = "ID", allow_hyphen_values = true)]
    pub chat: Option<i64>,
    /// A file holding the bot token (default: $HOMELAB_TELEGRAM_TOKEN, else
    /// $TELEGRAM_BOT_TOKEN).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The bot's own signing key: allowed in inventory/allowed_signers only as
    /// `telegram:<id>` principals, in `homelab-approve`.
    #[arg(long, value_name = "FILE", env = "HOMELAB_TELEGRAM_KEY")]
    pub key: Option<PathBuf>,
    /// Where the plans are (default: the repository's `plans/`).
    #[arg(long, value_name = "DIR")]
    pub plans_dir: Option<PathBuf>,
}

fn config(e: TelegramError) -> Error {
    Error::from(e)
}

fn state_error(e: StateError) -> Error {
    Error::from(e)
}

pub fn run(repo: &Path, args: &TelegramArgs, out: &mut dyn Write) -> Result<Report, Error> {
    let path = repo.join(TELEGRAM_FILE);
    let settings = if path.is_file() {
        let text = file::read_bounded(&path).map_err(|e| TelegramError::Settings {
            file: TELEGRAM_FILE.to_owned(),
            reason: format!("cannot read it: {e}"),
        })?;
        telegram::TelegramFile::parse(&text).map_err(|e| TelegramError::Settings {
            file: TELEGRAM_FILE.to_owned(),
            reason: format!("not valid: {e}"),
        })?
    } else {
        telegram::TelegramFile::default()
    };
    let api = args
        .api_url
        .clone()
        .or(settings.api_url)
        .unwrap_or_else(|| telegram::DEFAULT_API.to_owned());
    let api = telegram::check_url(&api).map_err(config)?;
    let from_env = match std::env::var(CHAT_ENV) {
        Ok(v) if !v.trim().is_empty() => Some(v.trim().parse::<i64>().map_err(|_| {
            config(TelegramError::Config {
                what: format!("chat in ${CHAT_ENV}"),
                fix: format!(
                    "expected a numeric chat id (a group's is negative), found `{}`",
                    v.trim()
                ),
            })
        })?),
        _ => None,
    };
    let chat = args.chat.or(settings.chat_id).or(from_env).ok_or_else(|| {
        config(TelegramError::Config {
            what: "chat".to_owned(),
            fix: format!(
                "pass --chat ID, or set `chat_id` in {TELEGRAM_FILE}, or ${CHAT_ENV} (docs/telegram.md)"
            ),
        })
    })?;
    let token = token(args.token_file.as_deref())?;
    let key_path = args.key.clone().ok_or_else(|| {
        config(TelegramError::Config {
            what: "signing key for the bot".to_owned(),
            fix: "pass --key FILE or set $HOMELAB_TELEGRAM_KEY: a key of the bot's own, allowed in inventory/allowed_signers as `telegram:<id>` (docs/telegram.md)".to_owned(),
        })
    })?;
    let key = keys::load(&keys::KeySource::Flag(key_path))?;
    let mut retry = DEFAULT_RETRY;
    // Scripts (and the tests) may shorten the pause between retries.
    if let Some(ms) = std::env::var("HOMELAB_TELEGRAM_RETRY_MS").ok().and_then(|v| v.parse().ok()) {
        retry.base = Duration::from_millis(ms);
    }
    let poll = if args.watch { args.poll } else { 0 };
    let client = Client::new(&api, token, retry, Duration::from_secs(poll));
    let root = args.target.controller.root(args.target.root.as_ref());
    let state_path = State::path(&root);
    let plans = super::plans_dir(repo, args.plans_dir.as_ref());
    loop {
        let result =
            pass(repo, &args.target, &key, &client, chat, &root, &state_path, &plans, poll, out);
        out.flush().map_err(Error::stdout)?;
        if !args.watch {
            return result;
        }
        match result {
            // Telegram answered at once (no long poll): a pause so a failing server is not
            // hammered.
            Ok(Report::Failed) => std::thread::sleep(Duration::from_secs(5)),
            Ok(_) => {}
            Err(e) => {
                // The next pass tries again: the repository or the disk may be fixed by then.
                eprintln!("error: {e}");
                std::thread::sleep(Duration::from_secs(poll.max(5)));
            }
        }
    }
}

/// One pass, with the repository's policy and signers as they are now.
#[allow(clippy::too_many_arguments)]
fn pass(
    repo: &Path,
    target: &Target,
    key: &crate::approve::Signer,
    client: &Client,
    chat: i64,
    root: &Path,
    state_path: &Path,
    plans: &Path,
    poll: u64,
    out: &mut dyn Write,
) -> Result<Report, Error> {
    let lab = super::load(repo)?;
    let signers = keys::allowed_signers(&lab.allowed_signers)?;
    let key_allows = check_key(key, &signers)?;
    let sel = super::Selection::of(repo, &lab, target)?;
    let (state, first) = match State::load(state_path).map_err(state_error)? {
        Some(s) => (s, false),
        None => (State::fresh().map_err(state_error)?, true),
    };
    let mut bot = Bot {
        repo,
        plans: plans.to_path_buf(),
        lab: &lab,
        signers: &signers,
        key,
        key_allows: &key_allows,
        queue: Queue::at(root),
        client,
        chat,
        transport: sel.transport.as_ref(),
        nodes: &sel.nodes,
        state_path: state_path.to_path_buf(),
        state,
    };
    if first {
        bot.baseline();
        bot.state.save(state_path).map_err(state_error)?;
    }
    let failed = bot.pass(poll, out).map_err(state_error)?;
    Ok(if failed > 0 { Report::Failed } else { Report::Success })
}

/// The bot's key approves only as bots: every principal it may sign as in `homelab-approve`
/// is a `telegram:` one, so it can never stand in for a human.
fn check_key(
    key: &crate::approve::Signer,
    signers: &crate::approve::AllowedSigners,
) -> Result<crate::approve::Verified, Error> {
    let v = keys::principals_of(key, signers, APPROVE_NAMESPACE, SystemTime::now())?;
    let human: Vec<&String> =
        v.principals.iter().filter(|p| !crate::model::is_bot_principal(p)).collect();
    if !human.is_empty() {
        return Err(Error::Usage {
            message: format!(
                "the bot's key {} may approve as {} per inventory/allowed_signers: give the bot a key of its own, allowed only as `telegram:<id>` principals (docs/telegram.md)",
                key.fingerprint(),
                human.iter().map(|p| format!("`{p}`")).collect::<Vec<_>>().join(", ")
            ),
        });
    }
    Ok(v)
}

/// The token: `--token-file`, else `$HOMELAB_TELEGRAM_TOKEN`. Never echoed.
fn token(file: Option<&Path>) -> Result<Token, Error> {
    let raw = match file {
        Some(p) => std::fs::read_to_string(p).map_err(|e| {
            config(TelegramError::Token { message: format!("`{}`: {e}", p.display()) })
        })?,
        None => std::env::var(TOKEN_ENV).or_else(|_| std::env::var(SERVICE_TOKEN_ENV)).map_err(|_| {
            config(TelegramError::Config {
                what: "bot token".to_owned(),
                fix: format!("set ${TOKEN_ENV} (or ${SERVICE_TOKEN_ENV}), or pass --token-file FILE (the token @BotFather gave; docs/telegram.md)"),
            })
        })?,
    };
    Token::new(&raw).map_err(config)
}
