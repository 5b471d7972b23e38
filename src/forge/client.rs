//! The HTTP half of the Forgejo client: one call to `/api/v1`, with the token in its header,
//! bounded retries for what a retry can fix (5xx, 429, network), and every other answer mapped
//! to a [`ForgeError`] that says what failed and what to do. It knows nothing of plans.
//!
//! The token goes into exactly one place, the `Authorization` header; it is never formatted
//! into a message, a trace line or an error (its `Debug` is redacted, it has no `Display`),
//! and a server message that echoes it is scrubbed before it is shown.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::error::ForgeError;
use super::{Slug, Token};
use crate::http::{self, Reply, Retry, Step};

/// Four tries, the second after half a second; a server asking for more than a minute fails
/// at once.
pub const DEFAULT_RETRY: Retry =
    Retry { tries: 4, base: Duration::from_millis(500), max_wait: Duration::from_secs(60) };

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Patch,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Patch => "PATCH",
        }
    }
}

/// An answer the caller asked to see (a 2xx, or a status it listed as expected).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub json: Value,
}

/// A Forgejo server and the token to talk to it with.
pub struct Client {
    agent: ureq::Agent,
    /// `https://forge.example.org` (no trailing slash).
    base: String,
    token: Token,
    retry: Retry,
    /// For messages: the repository the calls are about.
    repo: String,
}

impl Client {
    pub fn new(base: &str, repo: &Slug, token: Token, retry: Retry) -> Client {
        Client {
            agent: http::agent(Duration::from_secs(30)),
            base: base.trim_end_matches('/').to_owned(),
            token,
            retry,
            repo: repo.to_string(),
        }
    }

    /// The web address of the server (for links in comments).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `method /api/v1{path}` with `body` as JSON. A 2xx, or a status in `expected`, is an
    /// [`Answer`]; anything else is the matching [`ForgeError`], after the retries allowed.
    pub fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        expected: &[u16],
    ) -> Result<Answer, ForgeError> {
        let path = format!("/api/v1{path}");
        let call = format!("{} {}", method.name(), path.split('?').next().unwrap_or(&path));
        let url = format!("{}{path}", self.base);
        let payload = body.map(|b| serde_json::to_string(b).expect("json"));
        http::with_retries(
            &self.retry,
            16 * 1024 * 1024,
            |attempt| {
                tracing::debug!(call = %call, try_ = attempt.number, "forgejo call");
                self.send(method, &url, payload.as_deref())
            },
            |e, attempt| {
                let reason = self.scrub(&e.to_string());
                tracing::debug!(call = %call, %reason, "forgejo call failed");
                ForgeError::Network {
                    base: self.base.clone(),
                    call: call.clone(),
                    reason,
                    tries: attempt.number,
                }
            },
            |Reply { status, headers, text }, attempt| {
                tracing::debug!(call = %call, status, "forgejo answered");
                let call = call.clone();
                let tries = attempt.number;
                if (200..300).contains(&status) || expected.contains(&status) {
                    let json = if text.trim().is_empty() {
                        Value::Null
                    } else {
                        match serde_json::from_str(&text) {
                            Ok(json) => json,
                            Err(e) => {
                                let what = format!("not JSON ({e})");
                                return Step::Fail(ForgeError::Decode { call, what });
                            }
                        }
                    };
                    return Step::Done(Answer { status, json });
                }
                let message = self.scrub(&message_of(&text));
                // Rate limited: 429, or a 403 that says the quota is spent
                // (X-RateLimit-Remaining: 0).
                let spent =
                    header(&headers, "x-ratelimit-remaining").is_some_and(|v| v.trim() == "0");
                if status == 429 || (status == 403 && spent) {
                    let asked = rate_wait(&headers);
                    // Without a wait asked for, the backoff, unbounded: one longer than the
                    // longest wait fails rather than being cut short.
                    let pause = asked.map(Duration::from_secs).unwrap_or(attempt.backoff);
                    return match attempt.again_after(pause) {
                        Some(pause) => Step::Wait(pause),
                        None => Step::Fail(ForgeError::RateLimited {
                            call,
                            status,
                            retry_after: asked,
                            tries,
                        }),
                    };
                }
                if status >= 500 {
                    return match attempt.again() {
                        Some(pause) => Step::Wait(pause),
                        None => Step::Fail(ForgeError::Server { call, status, message, tries }),
                    };
                }
                Step::Fail(match status {
                    401 => ForgeError::Unauthorized { call, message },
                    403 => ForgeError::Forbidden { call, repo: self.repo.clone(), message },
                    404 => ForgeError::NotFound {
                        call,
                        message,
                        hint: format!(
                            "check that the repository `{}` exists on {} and that the token's user can see it (Forgejo answers 404 for a private repository it hides)",
                            self.repo, self.base
                        ),
                    },
                    409 => ForgeError::Conflict { call, message },
                    422 => ForgeError::Invalid {
                        call,
                        message,
                        hint: "check the base branch (--base) exists and differs from the plan's branch; if a file or branch already exists, run `homelab pr` again".to_owned(),
                    },
                    _ => ForgeError::Unexpected { call, status, message },
                })
            },
        )
    }

    fn send(
        &self,
        method: Method,
        url: &str,
        payload: Option<&str>,
    ) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
        let auth = format!("token {}", self.token.secret());
        match method {
            Method::Get => self
                .agent
                .get(url)
                .header("Authorization", &auth)
                .header("Accept", "application/json")
                .call(),
            Method::Post | Method::Patch => {
                let builder = if method == Method::Post {
                    self.agent.post(url)
                } else {
                    self.agent.patch(url)
                };
                builder
                    .header("Authorization", &auth)
                    .header("Accept", "application/json")
                    .header("Content-Type", "application/json")
                    .send(payload.unwrap_or("{}"))
            }
        }
    }

    /// `text` with the token, should a server or a library echo it, replaced.
    fn scrub(&self, text: &str) -> String {
        http::scrub(text, self.token.secret())
    }
}

fn header<'h>(headers: &'h ureq::http::HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Seconds the server asks to wait: `Retry-After` (seconds), else `X-RateLimit-Reset` (the Unix
/// time the quota comes back).
fn rate_wait(headers: &ureq::http::HeaderMap) -> Option<u64> {
    if let Some(s) = header(headers, "retry-after").and_then(|v| v.trim().parse::<u64>().ok()) {
        return Some(s);
    }
    let reset = header(headers, "x-ratelimit-reset")?.trim().parse::<u64>().ok()?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(reset.saturating_sub(now))
}

/// Forgejo's error body is `{"message": "...", "url": "..."}` (APIError); a proxy's may be
/// anything. The first line of it, bounded, for a message.
fn message_of(text: &str) -> String {
    let raw = serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| text.lines().next().unwrap_or_default().to_owned());
    http::bounded(&raw)
}
