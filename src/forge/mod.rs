//! Forgejo: the REST client (`client`) and the pull-request flow (`pr`) that puts a plan file
//! on a branch, opens or updates its pull request, keeps one plan comment on it (`comment`) and
//! sets the commit status of its head. The same code talks to a real Forgejo and to the tests'
//! stand-in; only the base URL differs.
//!
//! It owns the forge's wire format and nothing else: it is handed the plan's bytes and its
//! Markdown (rendered by `show`), never reads the repository, never decides what a plan means,
//! and never treats anything the forge says as an approval. Its settings file is
//! `inventory/forge.yaml` (docs/forgejo.md); reading it is the command's.

pub mod client;
pub mod comment;
pub mod error;
pub mod pr;

pub use crate::http::Retry;
pub use client::{Client, DEFAULT_RETRY};
pub use error::ForgeError;
pub use pr::{open_or_update, set_status, Opened, PlanUpload, State};

use std::fmt;

use crate::http::Secret;

/// A Forgejo access token. Its only way out is [`Token::secret`], used for the
/// `Authorization` header; `Debug` is redacted and there is no `Display`, so it cannot reach a
/// log line or a message by accident.
#[derive(Clone, Debug)]
pub struct Token(Secret);

impl Token {
    /// A token as read from the environment or a file (surrounding white space dropped).
    pub fn new(raw: &str) -> Result<Token, ForgeError> {
        let t = raw.trim();
        if t.is_empty() {
            return Err(ForgeError::Token { message: "it is empty".to_owned() });
        }
        if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ForgeError::Token {
                message: "it holds white space or control characters: one token, one line"
                    .to_owned(),
            });
        }
        Ok(Token(Secret::new(t)))
    }

    pub(crate) fn secret(&self) -> &str {
        self.0.expose()
    }
}

/// `owner/name` of a repository on the forge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slug {
    pub owner: String,
    pub name: String,
}

impl Slug {
    pub fn parse(text: &str) -> Result<Slug, ForgeError> {
        let bad = || {
            ForgeError::Config {
            what: format!("repository `{text}`"),
            fix: "expected `OWNER/NAME` (letters, digits, `-`, `_`, `.`), as in the repository's Forgejo URL".to_owned(),
        }
        };
        let (owner, name) = text.split_once('/').ok_or_else(bad)?;
        let ok = |s: &str| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !ok(owner) || !ok(name) {
            return Err(bad());
        }
        Ok(Slug { owner: owner.to_owned(), name: name.to_owned() })
    }

    /// `/repos/{owner}/{name}`.
    pub fn api(&self) -> String {
        format!("/repos/{}/{}", self.owner, self.name)
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

/// A branch name homelab will put in a URL path: Git's rules, narrowed to what needs no
/// escaping (`plan/<id>`, `drift/chelsty`).
pub fn check_branch(name: &str) -> Result<(), ForgeError> {
    let ok = !name.is_empty()
        && !name.starts_with(['/', '-', '.'])
        && !name.ends_with(['/', '.'])
        && !name.contains("..")
        && !name.contains("//")
        && !name.ends_with(".lock")
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if ok {
        Ok(())
    } else {
        Err(ForgeError::Config {
            what: format!("valid branch name in `{name}`"),
            fix: "use letters, digits, `-`, `_`, `.` and `/` (as `plan/<id>`)".to_owned(),
        })
    }
}

/// `inventory/forge.yaml`, as written.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForgeFile {
    /// The Forgejo server: `https://forge.example.org`.
    pub url: Option<String>,
    /// `owner/name` of this repository on it.
    pub repo: Option<String>,
    /// The branch pull requests go into (default `main`).
    pub base: Option<String>,
    /// The operator page: a commit status links to `<operator_url>/plans/<id>`.
    pub operator_url: Option<String>,
    /// The most bytes a plan comment may hold (default 65,536).
    pub comment_limit: Option<usize>,
}

impl ForgeFile {
    pub fn parse(text: &str) -> Result<ForgeFile, String> {
        serde_saphyr::from_str(text).map_err(|e| e.to_string())
    }
}

/// An `http://` or `https://` URL, without a trailing slash.
pub fn check_url(what: &str, url: &str) -> Result<String, ForgeError> {
    crate::http::base_url(url).ok_or_else(|| ForgeError::Config {
        what: format!("usable {what} in `{url}`"),
        fix: "expected `https://host[:port][/path]`, with no user or password in it".to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_never_shows_in_debug() {
        let t = Token::new("s3cr3t-token\n").unwrap();
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
        assert_eq!(t.secret(), "s3cr3t-token");
        assert!(Token::new("  ").is_err());
        assert!(Token::new("a b").is_err());
    }

    #[test]
    fn slugs_branches_and_urls_are_checked() {
        assert_eq!(Slug::parse("me/homelab").unwrap().api(), "/repos/me/homelab");
        for bad in ["me", "me/", "/x", "me/../x", "me/a b", "me/x?y"] {
            assert!(Slug::parse(bad).is_err(), "{bad}");
        }
        assert!(check_branch("plan/1a2b").is_ok());
        for bad in ["", "/a", "a/", "a..b", "a b", "a?b", "-a", "a.lock"] {
            assert!(check_branch(bad).is_err(), "{bad}");
        }
        assert_eq!(check_url("u", "https://f.example/").unwrap(), "https://f.example");
        assert!(check_url("u", "ftp://x").is_err());
        assert!(check_url("u", "https://me:pw@x").is_err());
    }

    #[test]
    fn the_settings_file_refuses_unknown_fields() {
        let f = ForgeFile::parse("url: https://f\nrepo: me/h\ncomment_limit: 1000\n").unwrap();
        assert_eq!(f.comment_limit, Some(1000));
        assert!(ForgeFile::parse("uri: x\n").is_err());
    }
}
