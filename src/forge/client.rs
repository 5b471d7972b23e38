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

/// How often and how long to retry a call that a retry can fix.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Tries in all, the first included.
    pub tries: u32,
    /// The pause before the second try; doubled before each next one.
    pub base: Duration,
    /// The longest pause homelab waits (a longer `Retry-After` fails at once, saying so).
    pub max_wait: Duration,
}

impl Default for Retry {
    fn default() -> Retry {
        Retry { tries: 4, base: Duration::from_millis(500), max_wait: Duration::from_secs(60) }
    }
}

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
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .user_agent(concat!("homelab/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Client {
            agent,
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
        let mut tries = 0;
        loop {
            tries += 1;
            tracing::debug!(call = %call, try_ = tries, "forgejo call");
            let last = tries >= self.retry.tries;
            let backoff = self.retry.base * 2u32.saturating_pow(tries - 1);
            let mut response = match self.send(method, &url, payload.as_deref()) {
                Ok(r) => r,
                Err(e) => {
                    let reason = self.scrub(&e.to_string());
                    tracing::debug!(call = %call, %reason, "forgejo call failed");
                    if last || !retryable(&e) {
                        return Err(ForgeError::Network {
                            base: self.base.clone(),
                            call,
                            reason,
                            tries,
                        });
                    }
                    std::thread::sleep(backoff.min(self.retry.max_wait));
                    continue;
                }
            };
            let status = response.status().as_u16();
            tracing::debug!(call = %call, status, "forgejo answered");
            let headers = response.headers().clone();
            let text = response
                .body_mut()
                .with_config()
                .limit(16 * 1024 * 1024)
                .read_to_string()
                .unwrap_or_default();
            if (200..300).contains(&status) || expected.contains(&status) {
                let json = if text.trim().is_empty() {
                    Value::Null
                } else {
                    serde_json::from_str(&text).map_err(|e| ForgeError::Decode {
                        call: call.clone(),
                        what: format!("not JSON ({e})"),
                    })?
                };
                return Ok(Answer { status, json });
            }
            let message = self.scrub(&message_of(&text));
            // Rate limited: 429, or a 403 that says the quota is spent (X-RateLimit-Remaining: 0).
            let spent = header(&headers, "x-ratelimit-remaining").is_some_and(|v| v.trim() == "0");
            if status == 429 || (status == 403 && spent) {
                let asked = rate_wait(&headers);
                let pause = asked.map(Duration::from_secs).unwrap_or(backoff);
                if last || pause > self.retry.max_wait {
                    return Err(ForgeError::RateLimited {
                        call,
                        status,
                        retry_after: asked,
                        tries,
                    });
                }
                std::thread::sleep(pause);
                continue;
            }
            if status >= 500 {
                if last {
                    return Err(ForgeError::Server { call, status, message, tries });
                }
                std::thread::sleep(backoff.min(self.retry.max_wait));
                continue;
            }
            return Err(match status {
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
            });
        }
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
        let secret = self.token.secret();
        if secret.is_empty() {
            text.to_owned()
        } else {
            text.replace(secret, "<token>")
        }
    }
}

/// Errors a new try may cure: the network, not a refusal or a bad request.
fn retryable(e: &ureq::Error) -> bool {
    matches!(
        e,
        ureq::Error::Io(_)
            | ureq::Error::Timeout(_)
            | ureq::Error::HostNotFound
            | ureq::Error::ConnectionFailed
            | ureq::Error::Protocol(_)
    )
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
    let mut m: String = raw.chars().filter(|c| !c.is_control()).take(300).collect();
    if raw.chars().count() > 300 {
        m.push('…');
    }
    m
}
