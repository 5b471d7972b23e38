//! `homelab ui`: the operator page (the guide's Operator UI). An axum server on loopback or
//! the tailnet, server-rendered HTML without JavaScript, that shows the world, the plans with
//! their diffs, the event timeline, and takes approvals and rejections.
//!
//! An approval through the page is what `homelab approve` writes: an SSHSIG over the plan's
//! signed bytes, made by the operator's own key with `ssh-keygen -Y sign` (the page shows
//! the command) and pasted or uploaded here. It is verified before it is saved, by the same
//! code `approve` and `apply`'s pre-flight run (`approve::policy::add_signature`, the plan's
//! review against its commit, the policy). The page holds no key and signs nothing: the
//! login token only lets a browser hand in signatures and rejections.
//!
//! - `listen`: which addresses and `Host` names; `auth`: token, sessions, CSRF;
//! - `data`: what is read (world, plans, events), read-only; `view`, `html`: the pages;
//! - `app`: what handlers share; `pages`: what is read (GET); `forms`: what is sent (POST);
//!   this file: the server, its routes and the guard every request passes.
//!
//! Every request is guarded (`Host`, security headers, the visitor's CSRF cookie); bodies are
//! limited to [`MAX_BODY`]; file reads and signature checks run on the blocking pool. Nothing
//! here reads `<root>/config/` or prints the token.

mod app;
pub mod auth;
pub mod data;
mod forms;
pub mod html;
pub mod listen;
mod pages;
pub mod view;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use app::{random_bytes, secure, unix_now, App, Visitor};
use auth::{Keys, Token, CSRF_COOKIE, SESSION_COOKIE};
use data::Sources;

use crate::model::NodeName;
use crate::transport::Transport;

/// The largest request body accepted: a form with a signature (a few hundred bytes) and a
/// reason; an uploaded signature file is as small.
pub const MAX_BODY: usize = 64 * 1024;

/// How the page is served.
pub struct Config {
    pub sources: Sources,
    pub listen: SocketAddr,
    /// Serve on an address that is neither loopback nor the tailnet.
    pub allow_any_address: bool,
    /// `Host` names answered besides IP literals and `localhost` (a MagicDNS name).
    pub allow_hosts: Vec<String>,
    /// Without one the page is read-only for everyone.
    pub token: Option<Token>,
    /// How a rejection reaches the plan's nodes (`--transport` and its options).
    pub transport: Box<dyn Transport + Send>,
    /// The nodes a rejection is written on (`--node`); `None`: every node of the plan.
    pub nodes: Option<Vec<NodeName>>,
}

#[derive(Debug, thiserror::Error)]
pub enum UiError {
    #[error(transparent)]
    NotPrivate(#[from] listen::NotPrivate),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot start the page's runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot draw random bytes from /dev/urandom: {0}")]
    Random(std::io::Error),
    #[error("the page stopped: {0}")]
    Serve(std::io::Error),
}

/// Serves the page until SIGINT or SIGTERM. `ready` is called with the bound address once
/// the page accepts connections.
pub fn serve(config: Config, ready: impl FnOnce(SocketAddr)) -> Result<(), UiError> {
    listen::check(config.listen, config.allow_any_address)?;
    let mac = random_bytes::<32>().map_err(UiError::Random)?;
    let app = Arc::new(App {
        sources: config.sources,
        summaries: Default::default(),
        keys: Keys::new(mac, config.token),
        guesses: Default::default(),
        allow_hosts: config.allow_hosts,
        writing: Mutex::new(()),
        transport: config.transport,
        nodes: config.nodes,
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(UiError::Runtime)?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| UiError::Bind { addr: config.listen, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| UiError::Bind { addr: config.listen, source })?;
        ready(addr);
        axum::serve(listener, router(app))
            .with_graceful_shutdown(stopped())
            .await
            .map_err(UiError::Serve)
    })
}

async fn stopped() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(pages::world_page))
        .route("/plans", get(pages::plans_page))
        .route("/plans/{id}", get(pages::plan_page))
        .route("/plans/{id}/signed-bytes", get(pages::signed_bytes))
        .route("/plans/{id}/approve", post(forms::approve))
        .route("/plans/{id}/reject", post(forms::reject))
        .route("/events", get(pages::events_page))
        .route("/login", get(pages::login_page).post(forms::login))
        .route("/logout", post(forms::logout))
        .route("/style.css", get(pages::style))
        .fallback(pages::not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

/// Every request: a `Host` the page answers, the visitor's cookies read (a CSRF cookie
/// given to a new visitor), and the security headers on the answer.
async fn guard(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    if !listen::host_allowed(host, &app.allow_hosts) {
        let mut r = (
            StatusCode::MISDIRECTED_REQUEST,
            format!("this page answers IP addresses, localhost and the names given with --allow-host; `{}` is none of them\n", html::esc(host)),
        )
            .into_response();
        secure(r.headers_mut());
        return r;
    }
    let cookies = req
        .headers()
        .get(header::COOKIE)
        .and_then(|c| c.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let existing = auth::cookie(&cookies, CSRF_COOKIE)
        .filter(|c| c.len() == 32 && c.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_owned);
    let fresh = match existing {
        Some(_) => None,
        None => match random_bytes::<16>() {
            Ok(b) => Some(crate::digest::hex(&b)),
            Err(e) => {
                let mut r =
                    (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot draw random bytes: {e}\n"))
                        .into_response();
                secure(r.headers_mut());
                return r;
            }
        },
    };
    let logged_in = auth::cookie(&cookies, SESSION_COOKIE)
        .is_some_and(|s| app.keys.session_valid(s, unix_now()));
    let csrf_cookie = existing.or_else(|| fresh.clone()).unwrap_or_default();
    req.extensions_mut().insert(Visitor { csrf_cookie, logged_in });
    let mut r = next.run(req).await;
    if let Some(c) = fresh {
        if let Ok(v) =
            HeaderValue::from_str(&format!("{CSRF_COOKIE}={c}; Path=/; HttpOnly; SameSite=Strict"))
        {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    secure(r.headers_mut());
    r
}
