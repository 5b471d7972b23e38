//! What every handler of the page shares: the server's state, the visitor the guard found,
//! the security headers, the checks every POST passes before its content is looked at, and
//! running file reads off the async thread.

use std::io::Read as _;
use std::sync::Mutex;
use std::time::SystemTime;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::auth::{Guesses, Keys, WRONG_TOKEN_PAUSE};
use super::data::Sources;
use super::html::Viewer;
use super::view;

pub struct App {
    pub sources: Sources,
    /// The plans' summaries the listings read (by file version).
    pub summaries: super::data::Summaries,
    pub keys: Keys,
    /// The budget of token tries, shared by every connection and form.
    pub guesses: Guesses,
    pub allow_hosts: Vec<String>,
    /// One approval or rejection written at a time (each re-reads the approvals file).
    pub writing: Mutex<()>,
    /// How a rejection reaches the plan's nodes.
    pub transport: Box<dyn crate::transport::Transport + Send>,
    /// The nodes a rejection is written on; `None`: every node of the plan.
    pub nodes: Option<Vec<crate::model::NodeName>>,
}

/// The visitor as the guard found them: their CSRF cookie and whether they are logged in.
#[derive(Clone)]
pub struct Visitor {
    pub csrf_cookie: String,
    pub logged_in: bool,
}

pub fn random_bytes<const N: usize>() -> Result<[u8; N], std::io::Error> {
    let mut b = [0u8; N];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b)
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub fn secure(h: &mut HeaderMap) {
    let set = |h: &mut HeaderMap, k: header::HeaderName, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::REFERRER_POLICY, "same-origin");
    set(h, header::CACHE_CONTROL, "no-store");
}

pub fn viewer(app: &App, v: &Visitor) -> Viewer {
    Viewer {
        logged_in: v.logged_in,
        token_configured: app.keys.has_token(),
        csrf: app.keys.csrf_field(&v.csrf_cookie),
    }
}

pub fn html_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

/// Runs blocking reads off the async thread; a panic there is an error page, not a crash.
pub async fn blocking(f: impl FnOnce() -> Response + Send + 'static) -> Response {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|_| {
        (StatusCode::INTERNAL_SERVER_ERROR, "the page failed to answer this request\n")
            .into_response()
    })
}

/// The `http://host` the visitor used (already checked by the guard).
pub fn base_of(headers: &HeaderMap) -> String {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
    format!("http://{host}")
}

/// Whether a form came from this page: a browser's `Origin` names the host the form was on,
/// which must be the `Host` it is sent to (`http` directly, or `https` through a TLS proxy in
/// front). No `Origin` (not a browser) leaves it to the CSRF field.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else { return true };
    let host = headers.get(header::HOST).map(HeaderValue::as_bytes).unwrap_or_default();
    let origin = origin.as_bytes();
    let rest = origin
        .strip_prefix(b"http://")
        .or_else(|| origin.strip_prefix(b"https://"))
        .unwrap_or_default();
    !rest.is_empty() && rest.eq_ignore_ascii_case(host)
}

/// Whether `offered` is the login token, as a try of the server's budget ([`Guesses`]):
/// `Err(Some(wait))` when the budget is spent (the token is not even compared), `Err(None)`
/// for a wrong token, after [`WRONG_TOKEN_PAUSE`]. An empty field is no try.
pub async fn try_token(app: &App, offered: &str) -> Result<(), Option<std::time::Duration>> {
    if offered.is_empty() {
        return Err(None);
    }
    app.guesses.take(std::time::Instant::now()).map_err(Some)?;
    if app.keys.token_matches(offered) {
        app.guesses.give_back();
        return Ok(());
    }
    tokio::time::sleep(WRONG_TOKEN_PAUSE).await;
    Err(None)
}

/// The answer to a token try refused because the server's budget of tries is spent.
pub fn too_many_tries(wait: std::time::Duration, body: String) -> Response {
    let secs = wait.as_secs() + 1;
    let mut r = html_response(StatusCode::TOO_MANY_REQUESTS, body);
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// The words of [`too_many_tries`].
pub fn too_many_tries_text(wait: std::time::Duration) -> String {
    format!(
        "refused: too many login tokens were tried lately (from anywhere); try again in {} s; nothing was changed",
        wait.as_secs() + 1
    )
}

/// Why a POST is refused before its content is looked at.
pub async fn refuse_post(
    app: &App,
    v: &Visitor,
    headers: &HeaderMap,
    csrf: &str,
    token: &str,
) -> Option<Response> {
    let viewer = viewer(app, v);
    let forbidden = |text: &str| {
        Some(html_response(StatusCode::FORBIDDEN, view::message(&viewer, "Refused", "error", text)))
    };
    // A browser says where a form came from: only this page's own origin may post.
    if !same_origin(headers) {
        return forbidden("refused: the form was sent from another site (its Origin is not this page's); nothing was changed");
    }
    if !app.keys.has_token() {
        return forbidden("refused: this page was started without a login token, so it is read-only; approve with `homelab approve` (docs/ui.md); nothing was changed");
    }
    if !app.keys.csrf_valid(&v.csrf_cookie, csrf) {
        return forbidden("refused: the form is not one this page made for this browser (missing or stale CSRF field, or cookies blocked); reload the page and send it again; nothing was changed");
    }
    if !v.logged_in {
        match try_token(app, token).await {
            Ok(()) => {}
            Err(Some(wait)) => {
                let text = too_many_tries_text(wait);
                let body = view::message(&viewer, "Refused", "error", &text);
                return Some(too_many_tries(wait, body));
            }
            Err(None) => return forbidden("refused: approving and rejecting need the login token (log in, or give it in the form); nothing was changed"),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_is_from_this_page_when_its_origin_names_the_host_it_is_sent_to() {
        let h = |origin: Option<&str>, host: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::HOST, HeaderValue::from_str(host).unwrap());
            if let Some(o) = origin {
                m.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
            }
            same_origin(&m)
        };
        assert!(h(None, "127.0.0.1:8470"));
        assert!(h(Some("http://127.0.0.1:8470"), "127.0.0.1:8470"));
        assert!(h(Some("https://VPS.tail1234.ts.net"), "vps.tail1234.ts.net"));
        assert!(!h(Some("http://evil.example"), "127.0.0.1:8470"));
        assert!(!h(Some("null"), "127.0.0.1:8470"));
        assert!(!h(Some("http://127.0.0.1:8471"), "127.0.0.1:8470"));
        assert!(!h(Some("http://"), ""));
    }
}
