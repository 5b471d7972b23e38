//! The bot's memory, `<controller root>/state/telegram/state.json`: the `getUpdates` offset
//! (so no update is handled twice across restarts), the secret its buttons are signed with,
//! which message was sent for which plan (to edit it with the outcome), which incidents and
//! results were told, and the ids of the presses handled (a replayed press is refused).
//!
//! Written atomically (a temporary file, fsync, rename) with mode 0600: the button secret is
//! in it. The bot token is never in it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The version of the file; another one is refused, not guessed at.
pub const VERSION: u32 = 1;

/// Presses remembered as handled (Telegram answers a press for a few minutes at most).
const CALLBACKS_KEPT: usize = 2000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    /// The next `getUpdates` offset: one more than the last update handled.
    pub offset: i64,
    /// Hex of 32 random bytes: the key of the buttons' MAC.
    pub secret: String,
    /// Plan id → the message sent for it.
    #[serde(default)]
    pub messages: BTreeMap<String, Sent>,
    /// Incidents told (their ids in world/incidents.json).
    #[serde(default)]
    pub incidents: BTreeSet<String>,
    /// Actions that had ended when the bot first ran: their results are not news.
    #[serde(default)]
    pub old_results: BTreeSet<String>,
    /// Callback query ids handled, oldest first.
    #[serde(default)]
    pub callbacks: VecDeque<String>,
}

/// A message the bot sent for a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    pub chat: i64,
    pub message_id: i64,
    /// [`super::plan_hash`] of the plan file the message shows.
    pub hash: String,
    /// The text as first sent (what the plan is).
    pub text: String,
    /// What happened since, one line each (approvals, refusals), last few kept.
    #[serde(default)]
    pub notes: Vec<String>,
    /// How the action ended (`completed`, `failed`), once told: the buttons are gone then.
    #[serde(default)]
    pub outcome: Option<String>,
}

/// Notes kept on a message (it is edited, and Telegram caps its length).
const NOTES_KEPT: usize = 6;

impl Sent {
    /// The message as it reads now: the plan, what happened, how it ended.
    pub fn render(&self) -> String {
        let mut text = self.text.clone();
        if !self.notes.is_empty() {
            text.push_str("\n\n");
            text.push_str(&self.notes.join("\n"));
        }
        if let Some(o) = &self.outcome {
            text.push_str("\n\n");
            text.push_str(o);
        }
        super::fit(&text)
    }

    pub fn note(&mut self, line: String) {
        self.notes.push(line);
        if self.notes.len() > NOTES_KEPT {
            self.notes.remove(0);
        }
    }
}

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read the Telegram bot's state `{}`: {source}", .path.display())]
    Read { path: PathBuf, source: std::io::Error },

    #[error("`{}` is not the Telegram bot's state ({reason}): move it away to start afresh (pending plans are then announced again, and presses on older messages are refused)", .path.display())]
    Invalid { path: PathBuf, reason: String },

    #[error("cannot write the Telegram bot's state `{}`: {source}", .path.display())]
    Write { path: PathBuf, source: std::io::Error },

    #[error("no random bytes for the bot's button secret (`/dev/urandom`): {source}")]
    Random { source: std::io::Error },
}

impl State {
    pub fn path(root: &Path) -> PathBuf {
        PathBuf::from(crate::node::Layout::local(root).telegram_state())
    }

    /// The state at `path`: `Ok(None)` when there is none yet (the bot's first run).
    pub fn load(path: &Path) -> Result<Option<State>, StateError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StateError::Read { path: path.to_path_buf(), source }),
        };
        let state: State = serde_json::from_slice(&bytes)
            .map_err(|e| StateError::Invalid { path: path.to_path_buf(), reason: e.to_string() })?;
        if state.version != VERSION {
            return Err(StateError::Invalid {
                path: path.to_path_buf(),
                reason: format!("version {}, this homelab reads version {VERSION}", state.version),
            });
        }
        if state.secret.len() < 32 {
            return Err(StateError::Invalid {
                path: path.to_path_buf(),
                reason: "its `secret` is too short".to_owned(),
            });
        }
        Ok(Some(state))
    }

    /// A new state with a fresh random secret.
    pub fn fresh() -> Result<State, StateError> {
        let mut bytes = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
            .map_err(|source| StateError::Random { source })?;
        Ok(State {
            version: VERSION,
            offset: 0,
            secret: crate::digest::hex(&bytes),
            messages: BTreeMap::new(),
            incidents: BTreeSet::new(),
            old_results: BTreeSet::new(),
            callbacks: VecDeque::new(),
        })
    }

    pub fn secret(&self) -> &[u8] {
        self.secret.as_bytes()
    }

    /// Whether the press `id` was handled before; remembers it either way.
    pub fn seen_callback(&mut self, id: &str) -> bool {
        if self.callbacks.iter().any(|c| c == id) {
            return true;
        }
        self.callbacks.push_back(id.to_owned());
        while self.callbacks.len() > CALLBACKS_KEPT {
            self.callbacks.pop_front();
        }
        false
    }

    /// The plan whose message is `message_id` in `chat`.
    pub fn plan_of_message(&self, chat: i64, message_id: i64) -> Option<String> {
        self.messages
            .iter()
            .find(|(_, s)| s.chat == chat && s.message_id == message_id)
            .map(|(id, _)| id.clone())
    }

    /// Writes the state atomically, readable by its owner only.
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut bytes = serde_json::to_vec_pretty(self).expect("the state serializes");
        bytes.push(b'\n');
        let write = |source| StateError::Write { path: path.to_path_buf(), source };
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(write)?;
        let tmp = dir.join(format!(".state.json.tmp-{}", std::process::id()));
        let result = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            std::fs::File::open(dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(write)
    }
}
