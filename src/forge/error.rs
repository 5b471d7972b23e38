//! What can go wrong talking to Forgejo, each case with what failed and what to do about it.
//! `call` is always `METHOD /api/v1/...` (never the host's credentials, never the token).

use crate::http::{said, wait};

/// A Forgejo API call that did not give what homelab needed.
#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    #[error("no Forgejo {what}: {fix}")]
    Config { what: String, fix: String },

    #[error("cannot read the Forgejo token: {message}")]
    Token { message: String },

    #[error("Forgejo refused the token on `{call}` (401 Unauthorized{}): the token is missing, wrong, expired or revoked; make a new one (Settings → Applications, scopes `write:repository` and `write:issue`) and pass it in $HOMELAB_FORGE_TOKEN or --token-file", said(.message))]
    Unauthorized { call: String, message: String },

    #[error("Forgejo forbids `{call}` (403 Forbidden{}): the token's user needs write access to `{repo}`, and the token the scopes `write:repository` and `write:issue`", said(.message))]
    Forbidden { call: String, repo: String, message: String },

    #[error("Forgejo has no `{call}` (404 Not Found{}): {hint}", said(.message))]
    NotFound { call: String, message: String, hint: String },

    #[error("Forgejo reports a conflict on `{call}` (409 Conflict{}): something else changed the pull request at the same time; run `homelab pr` again", said(.message))]
    Conflict { call: String, message: String },

    #[error("Forgejo rejected `{call}` as invalid (422 Unprocessable Entity{}): {hint}", said(.message))]
    Invalid { call: String, message: String, hint: String },

    #[error("Forgejo failed on `{call}` ({status}{}) {tries} time{} in a row: the server is in trouble; check its log (or its proxy's) and try again later", said(.message), if *.tries == 1 { "" } else { "s" })]
    Server { call: String, status: u16, message: String, tries: u32 },

    #[error("Forgejo is rate limiting `{call}` (HTTP {status}){}, still after {tries} tr{}: wait and try again, or raise the limit", wait(.retry_after), if *.tries == 1 { "y" } else { "ies" })]
    RateLimited { call: String, status: u16, retry_after: Option<u64>, tries: u32 },

    #[error("cannot reach Forgejo at `{base}` for `{call}` after {tries} tr{}: {reason}; check the URL (--forge, or `url` in inventory/forge.yaml) and the network", if *.tries == 1 { "y" } else { "ies" })]
    Network { base: String, call: String, reason: String, tries: u32 },

    #[error("Forgejo answered `{call}` with HTTP {status}{}: not an answer homelab expects", said(.message))]
    Unexpected { call: String, status: u16, message: String },

    #[error("Forgejo's answer to `{call}` is not what its API documents: {what}")]
    Decode { call: String, what: String },
}
