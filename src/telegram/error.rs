//! What can go wrong talking to the Telegram Bot API, each case with what failed and what to do.
//! `method` is the Bot API method (`sendMessage`); the token, which Telegram puts in the URL
//! path, is never part of a message.

use crate::http::{said, wait};

#[derive(Debug, thiserror::Error)]
pub enum TelegramError {
    #[error("no Telegram {what}: {fix}")]
    Config { what: String, fix: String },

    /// `inventory/telegram.yaml` cannot be read or is not valid.
    #[error("`{file}`: {reason} (docs/telegram.md lists its fields)")]
    Settings { file: String, reason: String },

    #[error("cannot read the Telegram bot token: {message}")]
    Token { message: String },

    #[error("Telegram refused the bot token on `{method}` (401 Unauthorized): the token is wrong or was revoked; ask @BotFather for the current one (/token) and pass it in $HOMELAB_TELEGRAM_TOKEN or --token-file")]
    Unauthorized { method: String },

    #[error("Telegram forbids `{method}` (403{}): the bot was blocked by the user or removed from the chat; add it to the chat again (docs/telegram.md)", said(.description))]
    Forbidden { method: String, description: String },

    #[error("Telegram rejected `{method}` as a bad request (400{})", said(.description))]
    BadRequest { method: String, description: String },

    #[error("Telegram has no `{method}` (404{}): check the API URL (--api-url) and the token's form (`<digits>:<letters>`)", said(.description))]
    NotFound { method: String, description: String },

    #[error("Telegram failed on `{method}` ({status}{}) {tries} time{} in a row: try again later", said(.description), if *.tries == 1 { "" } else { "s" })]
    Server { method: String, status: u16, description: String, tries: u32 },

    #[error("Telegram is rate limiting `{method}` (429){}, still after {tries} tr{}: the bot sends too much; wait and try again", wait(.retry_after), if *.tries == 1 { "y" } else { "ies" })]
    RateLimited { method: String, retry_after: Option<u64>, tries: u32 },

    #[error("cannot reach Telegram at `{base}` for `{method}` after {tries} tr{}: {reason}; check the network and --api-url", if *.tries == 1 { "y" } else { "ies" })]
    Network { base: String, method: String, reason: String, tries: u32 },

    #[error("Telegram answered `{method}` with HTTP {status}{}: not an answer homelab expects", said(.description))]
    Unexpected { method: String, status: u16, description: String },

    #[error("Telegram's answer to `{method}` is not what the Bot API documents: {what}")]
    Decode { method: String, what: String },
}

impl TelegramError {
    /// Telegram's own words for a 400 (`Bad Request: message is not modified: …`).
    pub fn description(&self) -> Option<&str> {
        match self {
            TelegramError::BadRequest { description, .. }
            | TelegramError::Forbidden { description, .. } => Some(description),
            _ => None,
        }
    }
}
