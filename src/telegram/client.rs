//! The HTTP half of the bot: one Bot API call (`POST <base>/bot<token>/<method>` with a JSON
//! body), bounded retries for what a retry can fix (429 with its `retry_after`, 5xx, the
//! network), and every other answer mapped to a [`TelegramError`]. It knows nothing of plans.
//!
//! The token is part of the URL path, as the Bot API wants it; the URL is therefore never
//! formatted into a message, a trace line or an error, and any text from a server or a library
//! is scrubbed of the token before it is shown.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use super::error::TelegramError;
use super::Token;
use crate::http::{self, Reply, Retry, Step};

/// Five tries, the second after half a second; a `retry_after` of more than a minute fails at
/// once.
pub const DEFAULT_RETRY: Retry =
    Retry { tries: 5, base: Duration::from_millis(500), max_wait: Duration::from_secs(60) };

/// A Bot API server and the bot's token.
pub struct Client {
    agent: ureq::Agent,
    /// `https://api.telegram.org` (no trailing slash).
    base: String,
    token: Token,
    retry: Retry,
}

/// An inline keyboard button: its label and its callback data (1 to 64 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Button {
    pub text: String,
    pub data: String,
}

/// An update, as far as the bot reads it: only button presses (`callback_query`).
#[derive(Debug, Clone, Deserialize)]
pub struct Update {
    pub update_id: i64,
    #[serde(default)]
    pub callback_query: Option<CallbackQuery>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CallbackQuery {
    pub id: String,
    pub from: User,
    #[serde(default)]
    pub message: Option<Message>,
    #[serde(default)]
    pub data: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct User {
    pub id: u64,
    #[serde(default)]
    pub is_bot: bool,
    #[serde(default)]
    pub first_name: String,
    #[serde(default)]
    pub username: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    pub message_id: i64,
    pub chat: Chat,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Chat {
    pub id: i64,
}

/// The Bot API's answer envelope.
#[derive(Debug, Deserialize)]
struct Envelope {
    ok: bool,
    #[serde(default)]
    result: Value,
    #[serde(default)]
    error_code: Option<u16>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Parameters>,
}

#[derive(Debug, Deserialize)]
struct Parameters {
    #[serde(default)]
    retry_after: Option<u64>,
}

impl Client {
    /// `poll`: the longest `getUpdates` long poll this client makes (the HTTP timeout is that
    /// plus a margin).
    pub fn new(base: &str, token: Token, retry: Retry, poll: Duration) -> Client {
        let agent = http::agent(poll + Duration::from_secs(30));
        Client { agent, base: base.trim_end_matches('/').to_owned(), token, retry }
    }

    /// `method` with `body`; its `result` on success.
    pub fn call(&self, method: &str, body: &Value) -> Result<Value, TelegramError> {
        let url = format!("{}/bot{}/{method}", self.base, self.token.secret());
        let payload = body.to_string();
        http::with_retries(
            &self.retry,
            8 * 1024 * 1024,
            |attempt| {
                tracing::debug!(method, try_ = attempt.number, "telegram call");
                self.agent
                    .post(&url)
                    .header("Content-Type", "application/json")
                    .header("Accept", "application/json")
                    .send(payload.as_str())
            },
            |e, attempt| {
                let reason = self.scrub(&e.to_string());
                tracing::debug!(method, %reason, "telegram call failed");
                TelegramError::Network {
                    base: self.base.clone(),
                    method: method.to_owned(),
                    reason,
                    tries: attempt.number,
                }
            },
            |Reply { status, text, .. }, attempt| {
                tracing::debug!(method, status, "telegram answered");
                let tries = attempt.number;
                let envelope = serde_json::from_str::<Envelope>(&text).ok();
                if let Some(e) = envelope.as_ref().filter(|e| e.ok && (200..300).contains(&status))
                {
                    return Step::Done(e.result.clone());
                }
                let description = self.scrub(&http::bounded(
                    &envelope
                        .as_ref()
                        .and_then(|e| e.description.clone())
                        .unwrap_or_else(|| text.lines().next().unwrap_or_default().to_owned()),
                ));
                let code = envelope.as_ref().and_then(|e| e.error_code).unwrap_or(status);
                let method = method.to_owned();
                if code == 429 || status == 429 {
                    let asked = envelope.as_ref().and_then(|e| e.parameters.as_ref()?.retry_after);
                    let pause = asked.map(Duration::from_secs).unwrap_or(attempt.pause());
                    return match attempt.again_after(pause) {
                        Some(pause) => {
                            tracing::debug!(
                                method,
                                seconds = pause.as_secs_f64(),
                                "telegram asks to wait"
                            );
                            Step::Wait(pause)
                        }
                        None => Step::Fail(TelegramError::RateLimited {
                            method,
                            retry_after: asked,
                            tries,
                        }),
                    };
                }
                if status >= 500 {
                    return match attempt.again() {
                        Some(pause) => Step::Wait(pause),
                        None => {
                            Step::Fail(TelegramError::Server { method, status, description, tries })
                        }
                    };
                }
                if (200..300).contains(&status) {
                    return Step::Fail(TelegramError::Decode {
                        method,
                        what: "not `{\"ok\": true, \"result\": …}`".to_owned(),
                    });
                }
                Step::Fail(match code {
                    400 => TelegramError::BadRequest { method, description },
                    401 => TelegramError::Unauthorized { method },
                    403 => TelegramError::Forbidden { method, description },
                    404 => TelegramError::NotFound { method, description },
                    _ => TelegramError::Unexpected { method, status, description },
                })
            },
        )
    }

    /// `sendMessage` (plain text, no parse mode: nothing to escape) with an inline keyboard of
    /// one row; the new message's id.
    pub fn send_message(
        &self,
        chat: i64,
        text: &str,
        buttons: &[Button],
    ) -> Result<i64, TelegramError> {
        let mut body = json!({ "chat_id": chat, "text": text, "disable_web_page_preview": true });
        if !buttons.is_empty() {
            body["reply_markup"] = keyboard(buttons);
        }
        let result = self.call("sendMessage", &body)?;
        result["message_id"].as_i64().ok_or_else(|| TelegramError::Decode {
            method: "sendMessage".to_owned(),
            what: "no `message_id` in the sent message".to_owned(),
        })
    }

    /// `editMessageText`: the message's new text, and its keyboard (none: the buttons go).
    /// Telegram's "message is not modified" is success: the message already says it.
    pub fn edit_message_text(
        &self,
        chat: i64,
        message_id: i64,
        text: &str,
        buttons: &[Button],
    ) -> Result<(), TelegramError> {
        let mut body = json!({ "chat_id": chat, "message_id": message_id, "text": text,
            "disable_web_page_preview": true });
        if !buttons.is_empty() {
            body["reply_markup"] = keyboard(buttons);
        }
        match self.call("editMessageText", &body) {
            Ok(_) => Ok(()),
            Err(e) if e.description().is_some_and(|d| d.contains("message is not modified")) => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// `answerCallbackQuery`: the short notice the presser sees (at most 200 characters).
    pub fn answer_callback_query(&self, id: &str, text: &str) -> Result<(), TelegramError> {
        let text: String = text.chars().take(200).collect();
        self.call("answerCallbackQuery", &json!({ "callback_query_id": id, "text": text }))
            .map(|_| ())
    }

    /// `getUpdates` from `offset`, waiting up to `timeout` seconds for one (long polling).
    pub fn get_updates(&self, offset: i64, timeout: u64) -> Result<Vec<Update>, TelegramError> {
        let body = json!({ "offset": offset, "timeout": timeout, "limit": 100,
            "allowed_updates": ["callback_query"] });
        let result = self.call("getUpdates", &body)?;
        let Value::Array(items) = result else {
            return Err(TelegramError::Decode {
                method: "getUpdates".to_owned(),
                what: "`result` is not an array of updates".to_owned(),
            });
        };
        // One update that does not parse is skipped (its id still moves the offset on).
        Ok(items
            .into_iter()
            .filter_map(|v| {
                let id = v["update_id"].as_i64()?;
                Some(
                    serde_json::from_value::<Update>(v)
                        .unwrap_or(Update { update_id: id, callback_query: None }),
                )
            })
            .collect())
    }

    /// `text` with the token, should a server or a library echo it, replaced.
    fn scrub(&self, text: &str) -> String {
        http::scrub(text, self.token.secret())
    }
}

fn keyboard(buttons: &[Button]) -> Value {
    let row: Vec<Value> =
        buttons.iter().map(|b| json!({ "text": b.text, "callback_data": b.data })).collect();
    json!({ "inline_keyboard": [row] })
}
