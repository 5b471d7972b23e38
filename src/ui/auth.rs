//! Who may change something through the operator page, and that a form came from the page.
//!
//! - The login token (from a file or the environment) is held here and nowhere else: it is
//!   never shown, logged or written; [`Token`]'s `Debug` hides it. A token offered by a form
//!   is compared with it in constant time (both hashed first, so not even its length leaks).
//! - A session is a cookie `<expiry>.<mac>`, the MAC (HMAC-SHA256 under a key drawn at start)
//!   binding the expiry to the token: no state on the server, and a restart or a new token
//!   ends every session.
//! - CSRF: every visitor gets a random cookie; forms carry the MAC of it, which another site
//!   can neither read nor compute. Cookies are `SameSite=Strict` and `HttpOnly` too.
//!
//! - Guessing the token: every token a form offers (the login form, and the approve and
//!   reject forms of a visitor not logged in) first takes a try from [`Guesses`], one budget
//!   for the whole server whatever the connection, so many connections guess no faster than
//!   one; a right token gives its try back, a wrong one also costs its sender half a second.
//!
//! Pure functions of their inputs (the key and the time are passed in); no IO.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::digest::{hex, hmac_sha256, hmac_sha256_verify, unhex};

pub const SESSION_COOKIE: &str = "homelab_session";
pub const CSRF_COOKIE: &str = "homelab_csrf";
/// How long a login lasts.
pub const SESSION_SECONDS: u64 = 12 * 3600;
/// A shorter token is refused at start: it could be guessed.
pub const MIN_TOKEN_LEN: usize = 16;

/// The login token. Never printed: `Debug` shows only that there is one.
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<hidden>)")
    }
}

/// Why a token was not accepted at start (the message never holds the token).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the login token from {from} is {len} characters, fewer than {MIN_TOKEN_LEN}: make one with `openssl rand -hex 32`")]
    TooShort { from: String, len: usize },
    #[error("the login token from {from} holds a space or a control character: use a single word (`openssl rand -hex 32`)")]
    NotOneWord { from: String },
}

impl Token {
    /// A token read from `from` (a file, an environment variable): trailing newlines dropped,
    /// at least [`MIN_TOKEN_LEN`] characters, one word.
    pub fn new(text: &str, from: &str) -> Result<Token, TokenError> {
        let t = text.trim_end_matches(['\n', '\r']);
        if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(TokenError::NotOneWord { from: from.to_owned() });
        }
        if t.chars().count() < MIN_TOKEN_LEN {
            return Err(TokenError::TooShort { from: from.to_owned(), len: t.chars().count() });
        }
        Ok(Token(t.to_owned()))
    }

    /// Whether `offered` is the token, in time independent of where they differ.
    pub fn matches(&self, offered: &str) -> bool {
        ct_eq(&Sha256::digest(offered.as_bytes()), &Sha256::digest(self.0.as_bytes()))
    }
}

/// Equality of two byte strings whose time does not depend on where they differ.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The server's keys: drawn at start, never shown.
pub struct Keys {
    mac: [u8; 32],
    token: Option<Token>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys").field("token", &self.token).finish_non_exhaustive()
    }
}

impl Keys {
    pub fn new(mac: [u8; 32], token: Option<Token>) -> Keys {
        Keys { mac, token }
    }

    /// Whether a token was configured (without one, nothing can be changed from the page).
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Whether `offered` is the login token.
    pub fn token_matches(&self, offered: &str) -> bool {
        self.token.as_ref().is_some_and(|t| t.matches(offered))
    }

    fn session_message(&self, expires: u64) -> String {
        let token = self.token.as_ref().map(|t| t.0.as_str()).unwrap_or_default();
        format!("session {expires} {token}")
    }

    /// A session cookie's value for a login at `now` (Unix seconds).
    pub fn session(&self, now: u64) -> String {
        let expires = now + SESSION_SECONDS;
        let mac = hmac_sha256(&self.mac, self.session_message(expires).as_bytes());
        format!("{expires}.{}", hex(&mac))
    }

    /// Whether a session cookie's value is one this server made, for this token, not expired.
    pub fn session_valid(&self, value: &str, now: u64) -> bool {
        if self.token.is_none() {
            return false;
        }
        let Some((expires, mac)) = value.split_once('.') else { return false };
        let Ok(expires) = expires.parse::<u64>() else { return false };
        expires > now && self.mac_valid(&self.session_message(expires), mac)
    }

    /// The form field that goes with a visitor's CSRF cookie.
    pub fn csrf_field(&self, cookie: &str) -> String {
        hex(&hmac_sha256(&self.mac, format!("csrf {cookie}").as_bytes()))
    }

    /// Whether a form's CSRF field goes with the visitor's cookie.
    pub fn csrf_valid(&self, cookie: &str, field: &str) -> bool {
        !cookie.is_empty() && self.mac_valid(&format!("csrf {cookie}"), field)
    }

    /// Whether `mac_hex` is the hex of our MAC of `message` (the lowercase hex we write; any
    /// other text is refused, as a string comparison would).
    fn mac_valid(&self, message: &str, mac_hex: &str) -> bool {
        unhex(mac_hex).is_some_and(|tag| hmac_sha256_verify(&self.mac, message.as_bytes(), &tag))
    }
}

/// How many token tries the server takes at once, from every connection together.
pub const GUESS_BURST: u32 = 10;
/// How often one more try is allowed once the burst is spent.
pub const GUESS_EVERY: Duration = Duration::from_secs(1);
/// What a wrong token costs its sender, besides its try.
pub const WRONG_TOKEN_PAUSE: Duration = Duration::from_millis(500);

/// The server's budget of token tries: a bucket of [`GUESS_BURST`] tries, one more every
/// [`GUESS_EVERY`]. Shared by all connections and forms: 200 concurrent guesses are not 200
/// tries. The time is passed in.
#[derive(Debug)]
pub struct Guesses {
    bucket: Mutex<(f64, Option<Instant>)>,
}

impl Default for Guesses {
    fn default() -> Self {
        Guesses { bucket: Mutex::new((f64::from(GUESS_BURST), None)) }
    }
}

impl Guesses {
    /// Takes one try at `now`, or says how long until there is one.
    pub fn take(&self, now: Instant) -> Result<(), Duration> {
        let mut b = self.bucket.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (tries, last) = &mut *b;
        if let Some(then) = *last {
            let refilled =
                now.saturating_duration_since(then).as_secs_f64() / GUESS_EVERY.as_secs_f64();
            *tries = (*tries + refilled).min(f64::from(GUESS_BURST));
        }
        *last = Some(now);
        if *tries >= 1.0 {
            *tries -= 1.0;
            Ok(())
        } else {
            Err(GUESS_EVERY.mul_f64(1.0 - *tries))
        }
    }

    /// Gives back a try that found the right token: an operator logging in spends nothing.
    pub fn give_back(&self) {
        let mut b = self.bucket.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        b.0 = (b.0 + 1.0).min(f64::from(GUESS_BURST));
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find_map(|(k, v)| (k == name).then_some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::new([7; 32], Some(Token::new("correct-horse-battery-staple\n", "test").unwrap()))
    }

    #[test]
    fn tokens_are_one_long_word_and_never_debug_printed() {
        assert!(matches!(Token::new("short", "f"), Err(TokenError::TooShort { len: 5, .. })));
        assert!(matches!(
            Token::new("two words but long enough", "f"),
            Err(TokenError::NotOneWord { .. })
        ));
        let t = Token::new("0123456789abcdef\r\n", "f").unwrap();
        assert!(t.matches("0123456789abcdef"));
        assert!(!t.matches("0123456789abcdeF"));
        assert!(!t.matches(""));
        assert!(!format!("{t:?} {:?}", keys()).contains("0123"));
        assert!(!format!("{:?}", keys()).contains("horse"));
    }

    #[test]
    fn sessions_expire_and_are_bound_to_the_token_and_the_key() {
        let k = keys();
        let s = k.session(1000);
        assert!(k.session_valid(&s, 1000));
        assert!(k.session_valid(&s, 1000 + SESSION_SECONDS - 1));
        assert!(!k.session_valid(&s, 1000 + SESSION_SECONDS));
        // A later expiry with the old MAC is not a session.
        let (_, mac) = s.split_once('.').unwrap();
        assert!(!k.session_valid(&format!("{}.{mac}", 1000 + 2 * SESSION_SECONDS), 1000));
        let other_token =
            Keys::new([7; 32], Some(Token::new("another-token-entirely", "t").unwrap()));
        assert!(!other_token.session_valid(&s, 1000));
        let other_key =
            Keys::new([8; 32], Some(Token::new("correct-horse-battery-staple", "t").unwrap()));
        assert!(!other_key.session_valid(&s, 1000));
        let none = Keys::new([7; 32], None);
        assert!(!none.session_valid(&none.session(1000), 1000));
        for bad in ["", ".", "x.y", "1.", "99999999999999999999999.ab"] {
            assert!(!k.session_valid(bad, 0), "{bad}");
        }
    }

    #[test]
    fn csrf_fields_go_with_their_cookie_only() {
        let k = keys();
        let f = k.csrf_field("abc");
        assert!(k.csrf_valid("abc", &f));
        assert!(!k.csrf_valid("abd", &f));
        assert!(!k.csrf_valid("", &k.csrf_field("")));
        assert!(!k.csrf_valid("abc", ""));
    }

    #[test]
    fn token_tries_are_one_budget_that_refills_and_right_ones_cost_nothing() {
        let g = Guesses::default();
        let t0 = Instant::now();
        for _ in 0..GUESS_BURST {
            assert_eq!(g.take(t0), Ok(()));
        }
        let wait = g.take(t0).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= GUESS_EVERY, "{wait:?}");
        assert!(g.take(t0 + GUESS_EVERY / 2).is_err());
        assert_eq!(g.take(t0 + GUESS_EVERY), Ok(()));
        assert!(g.take(t0 + GUESS_EVERY).is_err());
        g.give_back();
        assert_eq!(g.take(t0 + GUESS_EVERY), Ok(()));
        // Refilled, never past the burst.
        let later = t0 + GUESS_EVERY * 1000;
        for _ in 0..GUESS_BURST {
            assert_eq!(g.take(later), Ok(()));
        }
        assert!(g.take(later).is_err());
    }

    #[test]
    fn cookies_are_found_by_name() {
        let h = "a=1; homelab_csrf=xyz;homelab_session=2.ff";
        assert_eq!(cookie(h, CSRF_COOKIE), Some("xyz"));
        assert_eq!(cookie(h, SESSION_COOKIE), Some("2.ff"));
        assert_eq!(cookie(h, "b"), None);
    }
}
