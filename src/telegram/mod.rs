//! Telegram: the Bot API client (`client`) and the bot (`bot`) that tells the owner of each new
//! pending plan, incident and apply result, and turns an Approve press into an approval signed
//! with the bot's own key under the principal `telegram:<user id>` (a Reject press into a
//! rejection), as `homelab approve`/`reject` record them. The same code talks to Telegram and to
//! the tests' stand-in; only the base URL differs.
//!
//! Nothing Telegram says is an approval by itself: what the bot signs is checked by `apply`
//! against `inventory/allowed_signers` and `inventory/policy.yaml` like any other signature.
//! The bot is a process of its own reading the actions folders: nothing of `apply` or the
//! executor waits for it. Its settings file is `inventory/telegram.yaml` (docs/telegram.md);
//! its state is `<controller root>/state/telegram/state.json` (`state`).

pub mod bot;
pub mod client;
pub mod error;
pub mod state;

pub use crate::http::Retry;
pub use client::{Button, Client, DEFAULT_RETRY};
pub use error::TelegramError;
pub use state::StateError;

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::http::Secret;

/// The public Bot API server.
pub const DEFAULT_API: &str = "https://api.telegram.org";

/// A bot token (`123456:ABC-DEF…` from @BotFather). Its only way out is [`Token::secret`],
/// used to build the call's URL; `Debug` is redacted and there is no `Display`.
#[derive(Clone, Debug)]
pub struct Token(Secret);

impl Token {
    /// A token as read from the environment or a file (surrounding white space dropped).
    pub fn new(raw: &str) -> Result<Token, TelegramError> {
        let t = raw.trim();
        let bad = |why: &str| TelegramError::Token { message: why.to_owned() };
        if t.is_empty() {
            return Err(bad("it is empty"));
        }
        let (id, rest) = t.split_once(':').ok_or_else(|| {
            bad("it is not of the form `<bot id>:<secret>` that @BotFather gives")
        })?;
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) || rest.is_empty() {
            return Err(bad("it is not of the form `<bot id>:<secret>` that @BotFather gives"));
        }
        if !rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            return Err(bad(
                "it holds characters a Telegram token never has (white space, quotes, `/`): one token, one line",
            ));
        }
        Ok(Token(Secret::new(t)))
    }

    pub(crate) fn secret(&self) -> &str {
        self.0.expose()
    }
}

/// `inventory/telegram.yaml`, as written.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelegramFile {
    /// The chat the bot writes to: the owner's private chat with the bot, or a group.
    pub chat_id: Option<i64>,
    /// The Bot API server (default https://api.telegram.org).
    pub api_url: Option<String>,
}

impl TelegramFile {
    pub fn parse(text: &str) -> Result<TelegramFile, String> {
        serde_saphyr::from_str(text).map_err(|e| e.to_string())
    }
}

/// An `http://` or `https://` URL without user or password, without a trailing slash.
pub fn check_url(url: &str) -> Result<String, TelegramError> {
    crate::http::base_url(url).ok_or_else(|| TelegramError::Config {
        what: format!("usable API URL in `{url}`"),
        fix: "expected `https://host[:port]` (default https://api.telegram.org)".to_owned(),
    })
}

/// Telegram's limit is 4096 characters per message; what is longer is cut.
pub const MAX_TEXT: usize = 4000;

/// `text`, cut to fit a message.
pub fn fit(text: &str) -> String {
    if text.chars().count() <= MAX_TEXT {
        return text.to_owned();
    }
    let mut t: String = text.chars().take(MAX_TEXT - 60).collect();
    t.push_str("\n… (cut to fit Telegram; the whole plan: homelab show)");
    t
}

/// What a button does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Approve,
    Reject,
}

impl Op {
    fn letter(self) -> char {
        match self {
            Op::Approve => 'a',
            Op::Reject => 'r',
        }
    }
}

/// A button's callback data, as the bot made it: what to do, to which plan, as the plan's
/// bytes were when the message was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callback {
    pub op: Op,
    pub id: String,
    /// The first 12 hex digits of the SHA-256 of the plan file when the message was sent.
    pub hash: String,
}

/// Hex digits of the plan file's hash carried in a button (48 bits: a plan changed by
/// accident or by someone without the bot's secret is told apart).
pub const HASH_DIGITS: usize = 12;

impl Callback {
    /// `a:<id>:<hash>:<mac>` (54 bytes; Telegram allows 64). The MAC, HMAC-SHA-256 with the
    /// bot's secret cut to 128 bits, proves the bot made the data: anyone can send a
    /// `callback_query` with data of their choosing to a bot's own chat.
    pub fn encode(&self, secret: &[u8]) -> String {
        let body = format!("{}:{}:{}", self.op.letter(), self.id, self.hash);
        let mac = crate::digest::hmac_sha256(secret, body.as_bytes());
        format!("{body}:{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&mac[..16]))
    }

    /// The callback the bot made, or `None` for data it did not make (forged, or of another
    /// secret).
    pub fn verify(data: &str, secret: &[u8]) -> Option<Callback> {
        let (body, mac) = data.rsplit_once(':')?;
        let mac = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(mac).ok()?;
        if mac.len() != 16
            || !crate::digest::hmac_sha256_verify_prefix(secret, body.as_bytes(), &mac)
        {
            return None;
        }
        let mut parts = body.split(':');
        let op = match parts.next()? {
            "a" => Op::Approve,
            "r" => Op::Reject,
            _ => return None,
        };
        let id = parts.next()?.to_owned();
        let hash = parts.next()?.to_owned();
        if parts.next().is_some() || !crate::executor::is_plan_id(&id) {
            return None;
        }
        Some(Callback { op, id, hash })
    }
}

/// The first [`HASH_DIGITS`] hex digits of the SHA-256 of a plan file's bytes.
pub fn plan_hash(bytes: &[u8]) -> String {
    crate::digest::hex(&Sha256::digest(bytes))[..HASH_DIGITS].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_data_fits_telegram_and_only_the_secret_makes_it() {
        let c = Callback {
            op: Op::Approve,
            id: "0123456789abcdef".into(),
            hash: "a1b2c3d4e5f6".into(),
        };
        let data = c.encode(b"secret");
        assert!(data.len() <= 64, "{}", data.len());
        assert_eq!(Callback::verify(&data, b"secret"), Some(c.clone()));
        assert_eq!(Callback::verify(&data, b"other"), None);
        assert_eq!(Callback::verify(&data.replacen("a:", "r:", 1), b"secret"), None);
        assert_eq!(Callback::verify("a:0123456789abcdef:a1b2c3d4e5f6:AAAA", b"secret"), None);
        assert_eq!(Callback::verify("", b"secret"), None);
    }

    #[test]
    fn a_token_never_shows_in_debug_and_has_telegrams_form() {
        let t = Token::new("123456:AAbb-cc_DD\n").unwrap();
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
        assert_eq!(t.secret(), "123456:AAbb-cc_DD");
        for bad in ["", "abc", "12:", ":x", "12:a b", "12:a/b", "x1:abc"] {
            assert!(Token::new(bad).is_err(), "{bad}");
        }
    }
}
