//! The HTTP plumbing the Forgejo and Telegram clients share: the ureq agent, the loop that
//! tries a call again with a bounded, doubling pause when a retry can fix it, the token kept
//! out of every text shown, and the pieces of their error messages that read the same.
//!
//! What an answer means stays with each service (`forge::client`, `telegram::client`): which
//! statuses are retried, how long a server may ask to wait, and every error's text. Nothing
//! here knows of either, of plans, or of the rest of homelab.

use std::time::Duration;

use ureq::http::{HeaderMap, Response};
use ureq::Body;

/// How often and how long to retry a call that a retry can fix.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Tries in all, the first included.
    pub tries: u32,
    /// The pause before the second try; doubled before each next one.
    pub base: Duration,
    /// The longest pause homelab waits (a longer wait the server asks for fails at once,
    /// saying so).
    pub max_wait: Duration,
}

/// One try of a call, as the service judges its outcome.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    /// 1 for the first try.
    pub number: u32,
    /// Whether no try is left after this one.
    pub last: bool,
    /// `base` doubled once for each earlier try, not yet bounded by `max_wait`.
    pub backoff: Duration,
    max_wait: Duration,
}

impl Attempt {
    /// The pause before the next try: the backoff, at most `max_wait`.
    pub fn pause(&self) -> Duration {
        self.backoff.min(self.max_wait)
    }

    /// The pause before trying again, or `None` when this was the last try.
    pub fn again(&self) -> Option<Duration> {
        (!self.last).then(|| self.pause())
    }

    /// `pause` (as the server asked), or `None` when this was the last try or the server asks
    /// for longer than homelab waits.
    pub fn again_after(&self, pause: Duration) -> Option<Duration> {
        (!self.last && pause <= self.max_wait).then_some(pause)
    }
}

/// An answer, read whole (up to the caller's limit; a body that cannot be read is empty).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
}

/// What the service makes of a [`Reply`].
pub enum Step<T, E> {
    Done(T),
    Fail(E),
    /// Try again after this pause.
    Wait(Duration),
}

/// An agent that hands every status to the caller (no status is an error to ureq), with a
/// timeout for the whole call.
pub fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .user_agent(concat!("homelab/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// Sends with `send` until `judge` is done with a reply or the tries of `retry` run out.
///
/// A send that fails becomes `network`'s error (it is called on every failed send, so it can
/// trace it; the error is returned when no try is left or the failure is not one a new try may
/// cure, else the pause is [`Attempt::pause`]). A reply's body is read up to `limit` bytes and
/// handed to `judge`, which says whether the call is done, failed, or is tried again.
pub fn with_retries<T, E>(
    retry: &Retry,
    limit: u64,
    mut send: impl FnMut(&Attempt) -> Result<Response<Body>, ureq::Error>,
    mut network: impl FnMut(&ureq::Error, &Attempt) -> E,
    mut judge: impl FnMut(Reply, &Attempt) -> Step<T, E>,
) -> Result<T, E> {
    let mut number = 0;
    loop {
        number += 1;
        let attempt = Attempt {
            number,
            last: number >= retry.tries,
            backoff: retry.base * 2u32.saturating_pow(number - 1),
            max_wait: retry.max_wait,
        };
        let step = match send(&attempt) {
            Ok(mut response) => {
                let status = response.status().as_u16();
                let headers = response.headers().clone();
                let text = response
                    .body_mut()
                    .with_config()
                    .limit(limit)
                    .read_to_string()
                    .unwrap_or_default();
                judge(Reply { status, headers, text }, &attempt)
            }
            Err(e) => {
                let error = network(&e, &attempt);
                if attempt.last || !retryable(&e) {
                    Step::Fail(error)
                } else {
                    Step::Wait(attempt.pause())
                }
            }
        };
        match step {
            Step::Done(t) => return Ok(t),
            Step::Fail(e) => return Err(e),
            Step::Wait(pause) => std::thread::sleep(pause),
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

/// A service's token as its `Token` holds it: `Debug` shows `<redacted>` and there is no
/// `Display`, so it cannot reach a log line or a message by accident; [`Secret::expose`] is its
/// only way out.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(token: &str) -> Secret {
        Secret(token.to_owned())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `text` with `secret`, should a server or a library echo it, replaced by `<token>`.
pub fn scrub(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        text.to_owned()
    } else {
        text.replace(secret, "<token>")
    }
}

/// A server's words, for a message: no control characters, at most 300 characters (cut ones
/// end in `…`).
pub fn bounded(raw: &str) -> String {
    let mut m: String = raw.chars().filter(|c| !c.is_control()).take(300).collect();
    if raw.chars().count() > 300 {
        m.push('…');
    }
    m
}

/// `url` without its trailing slashes, if it is `http://` or `https://` with a host, no white
/// space and no user or password; the caller says what it expected.
pub fn base_url(url: &str) -> Option<String> {
    let host = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"))?;
    (!host.is_empty() && !url.contains(char::is_whitespace) && !url.contains('@'))
        .then(|| url.trim_end_matches('/').to_owned())
}

/// `: "<what the server said>"`, or nothing when it said nothing.
pub fn said(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": \"{message}\"")
    }
}

/// `; it asks to wait <n> s`, or nothing when the server did not say.
pub fn wait(after: &Option<u64>) -> String {
    match after {
        Some(s) => format!("; it asks to wait {s} s"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_doubles_and_is_bounded() {
        let retry =
            Retry { tries: 3, base: Duration::from_secs(1), max_wait: Duration::from_secs(3) };
        let at = |number: u32| Attempt {
            number,
            last: number >= retry.tries,
            backoff: retry.base * 2u32.pow(number - 1),
            max_wait: retry.max_wait,
        };
        assert_eq!(at(1).again(), Some(Duration::from_secs(1)));
        assert_eq!(at(2).again(), Some(Duration::from_secs(2)));
        assert_eq!(at(2).again_after(Duration::from_secs(4)), None);
        assert_eq!(at(3).again(), None);
        assert_eq!(at(3).pause(), Duration::from_secs(3));
    }

    #[test]
    fn tokens_are_scrubbed_and_words_bounded() {
        assert_eq!(scrub("bad 12:ab at /bot12:ab/x", "12:ab"), "bad <token> at /bot<token>/x");
        assert_eq!(scrub("x", ""), "x");
        assert_eq!(bounded("a\tb"), "ab");
        assert_eq!(bounded(&"x".repeat(301)).chars().count(), 301);
        assert_eq!(base_url("https://h:1/p//").as_deref(), Some("https://h:1/p"));
        for bad in ["ftp://h", "https://", "https://u:p@h", "https://h x"] {
            assert_eq!(base_url(bad), None, "{bad}");
        }
    }
}
