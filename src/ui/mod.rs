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
//! - `data`: what is read (world, plans, events), read-only; `view`, `html`: the pages.
//!
//! Every request is guarded (`Host`, security headers, the visitor's CSRF cookie); bodies are
//! limited to [`MAX_BODY`]; file reads and signature checks run on the blocking pool. Nothing
//! here reads `<root>/config/` or prints the token.

pub mod auth;
pub mod data;
pub mod html;
pub mod listen;
pub mod view;

use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::extract::{DefaultBodyLimit, Multipart, Path as UrlPath, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};

use crate::approve::policy::{self, ApproveError};
use crate::approve::APPROVE_NAMESPACE;
use auth::{Keys, Token, CSRF_COOKIE, SESSION_COOKIE, SESSION_SECONDS};
use data::{EventFilter, Sources, State as PlanState};
use html::Viewer;

/// The largest request body accepted: a form with a signature (a few hundred bytes) and a
/// reason; an uploaded signature file is as small.
pub const MAX_BODY: usize = 64 * 1024;

/// How the page is served.
#[derive(Debug)]
pub struct Config {
    pub sources: Sources,
    pub listen: SocketAddr,
    /// Serve on an address that is neither loopback nor the tailnet.
    pub allow_any_address: bool,
    /// `Host` names answered besides IP literals and `localhost` (a MagicDNS name).
    pub allow_hosts: Vec<String>,
    /// Without one the page is read-only for everyone.
    pub token: Option<Token>,
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

struct App {
    sources: Sources,
    keys: Keys,
    allow_hosts: Vec<String>,
    /// One approval or rejection written at a time (each re-reads the approvals file).
    writing: Mutex<()>,
}

/// The visitor as the guard found them: their CSRF cookie and whether they are logged in.
#[derive(Clone)]
struct Visitor {
    csrf_cookie: String,
    logged_in: bool,
}

fn random_bytes<const N: usize>() -> Result<[u8; N], std::io::Error> {
    let mut b = [0u8; N];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b)
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Serves the page until SIGINT or SIGTERM. `ready` is called with the bound address once
/// the page accepts connections.
pub fn serve(config: Config, ready: impl FnOnce(SocketAddr)) -> Result<(), UiError> {
    listen::check(config.listen, config.allow_any_address)?;
    let mac = random_bytes::<32>().map_err(UiError::Random)?;
    let app = Arc::new(App {
        sources: config.sources,
        keys: Keys::new(mac, config.token),
        allow_hosts: config.allow_hosts,
        writing: Mutex::new(()),
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
        .route("/", get(world_page))
        .route("/plans", get(plans_page))
        .route("/plans/{id}", get(plan_page))
        .route("/plans/{id}/signed-bytes", get(signed_bytes))
        .route("/plans/{id}/approve", post(approve))
        .route("/plans/{id}/reject", post(reject))
        .route("/events", get(events_page))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/style.css", get(style))
        .fallback(not_found)
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
            Ok(b) => Some(auth::hex(&b)),
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

fn secure(h: &mut HeaderMap) {
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

fn viewer(app: &App, v: &Visitor) -> Viewer {
    Viewer {
        logged_in: v.logged_in,
        token_configured: app.keys.has_token(),
        csrf: app.keys.csrf_field(&v.csrf_cookie),
    }
}

fn html_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

/// Runs blocking reads off the async thread; a panic there is an error page, not a crash.
async fn blocking(f: impl FnOnce() -> Response + Send + 'static) -> Response {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|_| {
        (StatusCode::INTERNAL_SERVER_ERROR, "the page failed to answer this request\n")
            .into_response()
    })
}

/// The plans, as rows: all of them, or only those still open to approvals.
fn plan_rows(
    app: &App,
    lab: Option<&crate::model::Homelab>,
    only_open: bool,
) -> (Vec<view::PlanRow>, Option<String>) {
    let files = match data::plan_files(&app.sources.plans) {
        Ok(f) => f,
        Err(e) => return (Vec::new(), Some(e)),
    };
    let records = app.sources.records();
    let now = SystemTime::now();
    let signers = lab.map(|l| policy::signers(&l.allowed_signers));
    let mut rows = Vec::new();
    for (path, read) in files {
        let id = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
        let row = match read {
            Err(e) => view::PlanRow {
                id,
                state: Err(e.to_string()),
                summary: String::new(),
                created: String::new(),
                nodes: Vec::new(),
                reason: None,
            },
            Ok(loaded) => {
                let state = match (&signers, lab) {
                    (Some(Ok(s)), Some(l)) => Ok(data::state(&loaded, s, l, &records, now)),
                    (Some(Err(e)), _) => Err(e.to_string()),
                    _ => Err("the homelab does not validate: states unknown".to_owned()),
                };
                let reason = data::action(&records, &loaded.id).and_then(|(_, r)| r);
                view::PlanRow {
                    id: loaded.id.clone(),
                    summary: loaded.plan.summary(),
                    created: loaded.plan.created.clone(),
                    nodes: policy::changed_nodes(&loaded.plan).map(ToString::to_string).collect(),
                    state,
                    reason,
                }
            }
        };
        if !only_open || row.state.as_ref().is_ok_and(PlanState::open) {
            rows.push(row);
        }
    }
    (rows, None)
}

async fn world_page(State(app): State<Arc<App>>, Extension(v): Extension<Visitor>) -> Response {
    blocking(move || {
        let viewer = viewer(&app, &v);
        let mut problems = Vec::new();
        let world = match crate::world::store::load(&app.sources.root) {
            Ok(l) => {
                problems.extend(l.fresh);
                l.world
            }
            Err(e) => {
                problems.push(e.to_string());
                crate::world::World::default()
            }
        };
        let lab = app.sources.lab().map_err(|e| problems.push(e)).ok();
        let (rows, p) = plan_rows(&app, lab.as_ref(), true);
        problems.extend(p);
        let problem = (!problems.is_empty()).then(|| problems.join("; "));
        html_response(StatusCode::OK, view::world(&viewer, &world, problem.as_deref(), &rows))
    })
    .await
}

async fn plans_page(State(app): State<Arc<App>>, Extension(v): Extension<Visitor>) -> Response {
    blocking(move || {
        let viewer = viewer(&app, &v);
        let mut problems = Vec::new();
        let lab = app.sources.lab().map_err(|e| problems.push(e)).ok();
        let (rows, p) = plan_rows(&app, lab.as_ref(), false);
        problems.extend(p);
        let problem = (!problems.is_empty()).then(|| problems.join("; "));
        html_response(StatusCode::OK, view::plans(&viewer, &rows, problem.as_deref()))
    })
    .await
}

/// The `http://host` the visitor used (already checked by the guard).
fn base_of(headers: &HeaderMap) -> String {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
    format!("http://{host}")
}

/// Renders plan `id`'s page with a notice and a status; 404 when there is no such plan.
fn render_plan(
    app: &App,
    viewer: &Viewer,
    id: &str,
    base: String,
    notice: Option<(&'static str, String)>,
    status: StatusCode,
) -> Response {
    let not_found = || {
        html_response(
            StatusCode::NOT_FOUND,
            view::message(
                viewer,
                "Not found",
                "error",
                &format!("there is no plan `{id}` in {}", app.sources.plans.display()),
            ),
        )
    };
    let Some(path) = app.sources.plan_path(id) else { return not_found() };
    if !path.is_file() {
        return not_found();
    }
    let loaded = match crate::plan::file::read(&path) {
        Ok(l) => l,
        Err(e) => {
            return html_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                view::message(viewer, &format!("Plan {id}"), "error", &format!("refused: {e}")),
            )
        }
    };
    let lab = match app.sources.lab() {
        Ok(l) => l,
        Err(e) => {
            return html_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                view::message(viewer, &format!("Plan {id}"), "error", &e),
            )
        }
    };
    let review = crate::review::verify(&app.sources.repo, &lab, &loaded)
        .map(|p| p.describe())
        .map_err(|e| e.to_string());
    let plan_rel = path
        .strip_prefix(&app.sources.repo)
        .map_or_else(|_| path.display().to_string(), |p| p.display().to_string());
    let pv = data::plan_view(loaded, &lab, &app.sources.records(), SystemTime::now());
    let page = view::PlanPage { view: &pv, review, plan_rel, base, notice };
    html_response(status, view::plan(viewer, &page))
}

async fn plan_page(
    State(app): State<Arc<App>>,
    Extension(v): Extension<Visitor>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let base = base_of(&headers);
    blocking(move || render_plan(&app, &viewer(&app, &v), &id, base, None, StatusCode::OK)).await
}

/// The plan's signed bytes, for `curl … | ssh-keygen -Y sign`.
async fn signed_bytes(State(app): State<Arc<App>>, UrlPath(id): UrlPath<String>) -> Response {
    blocking(move || {
        let Some(path) = app.sources.plan_path(&id).filter(|p| p.is_file()) else {
            return (StatusCode::NOT_FOUND, format!("there is no plan `{id}`\n")).into_response();
        };
        match crate::plan::file::read(&path) {
            Ok(l) => {
                ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], l.body).into_response()
            }
            Err(e) => (StatusCode::UNPROCESSABLE_ENTITY, format!("refused: {e}\n")).into_response(),
        }
    })
    .await
}

/// Whether a form came from this page: a browser's `Origin` names the host the form was on,
/// which must be the `Host` it is sent to (`http` directly, or `https` through a TLS proxy in
/// front). No `Origin` (not a browser) leaves it to the CSRF field.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else { return true };
    let host = headers.get(header::HOST).map(HeaderValue::as_bytes).unwrap_or_default();
    let origin = origin.as_bytes();
    let rest = origin
        .strip_prefix(b"http://")
        .or_else(|| origin.strip_prefix(b"https://"))
        .unwrap_or_default();
    !rest.is_empty() && rest.eq_ignore_ascii_case(host)
}

/// Why a POST is refused before its content is looked at.
fn refuse_post(
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
    if !v.logged_in && !app.keys.token_matches(token) {
        return forbidden("refused: approving and rejecting need the login token (log in, or give it in the form); nothing was changed");
    }
    None
}

/// The fields of the approve form, read from its multipart body.
#[derive(Default)]
struct ApproveForm {
    csrf: String,
    token: String,
    signature: String,
    signature_file: String,
}

async fn read_approve_form(mut m: Multipart) -> Result<ApproveForm, (StatusCode, String)> {
    let mut f = ApproveForm::default();
    loop {
        let field = match m.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => {
                return Err((e.status(), format!("the form could not be read: {}", e.body_text())))
            }
        };
        let name = field.name().unwrap_or_default().to_owned();
        let bytes = field
            .bytes()
            .await
            .map_err(|e| (e.status(), format!("the form could not be read: {}", e.body_text())))?;
        let text = String::from_utf8(bytes.to_vec()).map_err(|_| {
            (StatusCode::BAD_REQUEST, format!("form field `{name}` is not UTF-8 text"))
        })?;
        match name.as_str() {
            "csrf" => f.csrf = text,
            "token" => f.token = text,
            "signature" => f.signature = text,
            "signature_file" => f.signature_file = text,
            _ => {}
        }
    }
    Ok(f)
}

async fn approve(
    State(app): State<Arc<App>>,
    Extension(v): Extension<Visitor>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    form: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Response {
    let viewer0 = viewer(&app, &v);
    let bad = |status: StatusCode, text: String| {
        html_response(status, view::message(&viewer0, "Refused", "error", &text))
    };
    let form = match form {
        Ok(m) => match read_approve_form(m).await {
            Ok(f) => f,
            Err((status, e)) => return bad(status, format!("refused: {e}; nothing was saved")),
        },
        Err(e) => return bad(StatusCode::BAD_REQUEST, format!("refused: the approval form must be sent as multipart/form-data ({e}); nothing was saved")),
    };
    if let Some(r) = refuse_post(&app, &v, &headers, &form.csrf, &form.token) {
        return r;
    }
    let base = base_of(&headers);
    blocking(move || {
        let viewer = viewer(&app, &v);
        let signature =
            if form.signature.trim().is_empty() { form.signature_file } else { form.signature };
        let outcome = add_approval(&app, &id, &signature);
        match outcome {
            Err(Outcome::NotFound) => {
                render_plan(&app, &viewer, &id, base, None, StatusCode::NOT_FOUND)
            }
            Err(Outcome::Refused(why)) => {
                let text = format!("refused: {why}. Nothing was saved.");
                render_plan(
                    &app,
                    &viewer,
                    &id,
                    base,
                    Some(("error", text)),
                    StatusCode::UNPROCESSABLE_ENTITY,
                )
            }
            Ok(text) => render_plan(&app, &viewer, &id, base, Some(("ok", text)), StatusCode::OK),
        }
    })
    .await
}

enum Outcome {
    NotFound,
    Refused(String),
}

/// Verifies `signature` as an approval of plan `id` and saves it: the plan's own checks
/// (planner, content against its commit, expiry, not applied or rejected), then the signature
/// (one block, `homelab-approve`, a key of allowed_signers), then the policy (it must count
/// for at least one node the plan changes). Nothing is written unless all pass.
fn add_approval(app: &App, id: &str, signature: &str) -> Result<String, Outcome> {
    let refused = |e: &dyn std::fmt::Display| Outcome::Refused(e.to_string());
    let path = app.sources.plan_path(id).filter(|p| p.is_file()).ok_or(Outcome::NotFound)?;
    if signature.trim().is_empty() {
        return Err(Outcome::Refused("no signature was given: paste the output of the `ssh-keygen -Y sign` command above, or upload its file".to_owned()));
    }
    let lab = app.sources.lab().map_err(|e| refused(&e))?;
    let loaded = crate::plan::file::read(&path).map_err(|e| refused(&e))?;
    let signers = policy::signers(&lab.allowed_signers).map_err(|e| refused(&e))?;
    let now = SystemTime::now();
    // What the operator approves is what this binary renders from the plan's commit.
    crate::review::verify(&app.sources.repo, &lab, &loaded).map_err(|e| refused(&e))?;
    // Who signed, before anything is written: a signature that counts for no node is refused.
    let blocks = crate::approve::split_armored(signature)
        .map_err(|e| refused(&format!("the signature is not valid: {e}")))?;
    if let [block] = blocks.as_slice() {
        let v = signers
            .verify(APPROVE_NAMESPACE, loaded.body.as_bytes(), block, now)
            .map_err(|e| refused(&format!("the signature is not valid: {e}")))?;
        let changed: Vec<_> = policy::changed_nodes(&loaded.plan).collect();
        let counted: Vec<String> = changed
            .iter()
            .filter(|n| lab.policy.rule_for(n).approvers.iter().any(|a| v.allows(a)))
            .map(ToString::to_string)
            .collect();
        if !changed.is_empty() && counted.is_empty() {
            return Err(Outcome::Refused(format!(
                "{} ({}) may not approve {} per inventory/policy.yaml: the approval would count nowhere",
                v.principals.join(", "),
                v.fingerprint,
                changed.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            )));
        }
    }
    let _one = app.writing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let (done, v) =
        match policy::add_signature(&loaded, signature, &signers, &app.sources.records(), now) {
            Ok(x) => x,
            Err(ApproveError::Refused(r)) => return Err(refused(&r)),
            Err(e) => return Err(refused(&e)),
        };
    let who = format!("{} ({})", v.principals.join(", "), v.fingerprint);
    let not_counted: Vec<String> = policy::changed_nodes(&loaded.plan)
        .filter(|n| !lab.policy.rule_for(n).approvers.iter().any(|a| v.allows(a)))
        .map(ToString::to_string)
        .collect();
    let mut text = if done.added {
        eprintln!("ui: plan {id} approved by {who}: {}", done.path.display());
        format!(
            "approved by {who}: saved to {}",
            done.path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
        )
    } else {
        format!("already approved by this key {who}: nothing added")
    };
    if !not_counted.is_empty() {
        text.push_str(&format!(
            "; it does not count for {} per inventory/policy.yaml",
            not_counted.join(", ")
        ));
    }
    Ok(text)
}

#[derive(serde::Deserialize)]
struct RejectForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    token: String,
    #[serde(default)]
    reason: String,
}

async fn reject(
    State(app): State<Arc<App>>,
    Extension(v): Extension<Visitor>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    form: Result<Form<RejectForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return html_response(
            StatusCode::BAD_REQUEST,
            view::message(
                &viewer(&app, &v),
                "Refused",
                "error",
                "refused: the form could not be read; nothing was changed",
            ),
        );
    };
    if let Some(r) = refuse_post(&app, &v, &headers, &form.csrf, &form.token) {
        return r;
    }
    let base = base_of(&headers);
    blocking(move || {
        let viewer = viewer(&app, &v);
        let reason = form.reason.trim();
        let problem = if reason.is_empty() {
            Some("a rejection needs a reason".to_owned())
        } else if reason.chars().count() > 500 || reason.chars().any(char::is_control) {
            Some("the reason must be one line of at most 500 characters".to_owned())
        } else {
            None
        };
        if let Some(p) = problem {
            return render_plan(
                &app,
                &viewer,
                &id,
                base,
                Some(("error", format!("refused: {p}. Nothing was changed."))),
                StatusCode::UNPROCESSABLE_ENTITY,
            );
        }
        let Some(path) = app.sources.plan_path(&id).filter(|p| p.is_file()) else {
            return render_plan(&app, &viewer, &id, base, None, StatusCode::NOT_FOUND);
        };
        let result = (|| -> Result<String, String> {
            let lab = app.sources.lab()?;
            let loaded = crate::plan::file::read(&path).map_err(|e| e.to_string())?;
            let signers = policy::signers(&lab.allowed_signers).map_err(|e| e.to_string())?;
            let records = app.sources.records();
            let _one = app.writing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let state = data::state(&loaded, &signers, &lab, &records, SystemTime::now());
            if !state.open() {
                return Err(format!(
                    "plan `{id}` is {}: it can no longer be rejected",
                    state.word()
                ));
            }
            let record = crate::node::records::Rejection::new(
                &id,
                crate::clock::rfc3339(SystemTime::now()),
                "operator page (homelab ui)".to_owned(),
                reason.to_owned(),
            );
            let at = policy::reject(&loaded, &record, &records).map_err(|e| e.to_string())?;
            eprintln!("ui: plan {id} rejected: {}", at.display());
            Ok(format!(
                "rejected: recorded in {} and on the controller",
                at.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
            ))
        })();
        match result {
            Ok(text) => render_plan(&app, &viewer, &id, base, Some(("ok", text)), StatusCode::OK),
            Err(e) => render_plan(
                &app,
                &viewer,
                &id,
                base,
                Some(("error", format!("refused: {e}. Nothing was changed."))),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
        }
    })
    .await
}

async fn events_page(
    State(app): State<Arc<App>>,
    Extension(v): Extension<Visitor>,
    filter: Result<Query<EventFilter>, axum::extract::rejection::QueryRejection>,
) -> Response {
    blocking(move || {
        let viewer = viewer(&app, &v);
        let (filter, mut problem) = match filter {
            Ok(Query(f)) => (f, None),
            Err(e) => (EventFilter::default(), Some(format!("the filters could not be read: {e}"))),
        };
        let lab_nodes: Vec<String> = app
            .sources
            .lab()
            .map(|l| l.nodes.keys().map(ToString::to_string).collect())
            .unwrap_or_default();
        let (all, torn) = match data::events(&app.sources, &lab_nodes) {
            Ok(x) => x,
            Err(e) => {
                problem = Some(e);
                (Vec::new(), 0)
            }
        };
        let mut nodes: Vec<String> = lab_nodes;
        for e in &all {
            if let Some(n) = e["node"].as_str() {
                if !nodes.iter().any(|x| x == n) {
                    nodes.push(n.to_owned());
                }
            }
        }
        nodes.sort();
        let status = if let Some(p) = filter.problem() {
            problem = Some(p);
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        };
        let matching: Vec<&serde_json::Value> = if status == StatusCode::OK {
            all.iter().filter(|e| filter.passes(e)).collect()
        } else {
            Vec::new()
        };
        let shown: Vec<serde_json::Value> =
            matching.iter().rev().take(data::MAX_EVENTS).map(|e| (*e).clone()).collect();
        html_response(
            status,
            view::events(
                &viewer,
                &filter,
                &nodes,
                &shown,
                matching.len(),
                torn,
                problem.as_deref(),
            ),
        )
    })
    .await
}

async fn login_page(State(app): State<Arc<App>>, Extension(v): Extension<Visitor>) -> Response {
    html_response(StatusCode::OK, view::login(&viewer(&app, &v), None))
}

#[derive(serde::Deserialize)]
struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    token: String,
}

async fn login(
    State(app): State<Arc<App>>,
    Extension(v): Extension<Visitor>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let viewer = viewer(&app, &v);
    let Ok(Form(form)) = form else {
        return html_response(
            StatusCode::BAD_REQUEST,
            view::login(&viewer, Some(("error", "the form could not be read".to_owned()))),
        );
    };
    if !same_origin(&headers) {
        return html_response(
            StatusCode::FORBIDDEN,
            view::login(
                &viewer,
                Some(("error", "refused: the form was sent from another site".to_owned())),
            ),
        );
    }
    if !app.keys.csrf_valid(&v.csrf_cookie, &form.csrf) {
        return html_response(
            StatusCode::FORBIDDEN,
            view::login(
                &viewer,
                Some((
                    "error",
                    "refused: the form is stale (reload the page and try again)".to_owned(),
                )),
            ),
        );
    }
    if !app.keys.token_matches(&form.token) {
        // A wrong token costs the guesser time.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        return html_response(
            StatusCode::FORBIDDEN,
            view::login(
                &viewer,
                Some(("error", "refused: that is not the login token".to_owned())),
            ),
        );
    }
    let cookie = format!(
        "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECONDS}",
        app.keys.session(unix_now())
    );
    let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, "/plans")]).into_response();
    if let Ok(c) = HeaderValue::from_str(&cookie) {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    r
}

async fn logout(
    State(app): State<Arc<App>>,
    Extension(v): Extension<Visitor>,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let viewer = viewer(&app, &v);
    let csrf = form.map(|Form(f)| f.csrf).unwrap_or_default();
    if !app.keys.csrf_valid(&v.csrf_cookie, &csrf) {
        return html_response(
            StatusCode::FORBIDDEN,
            view::message(
                &viewer,
                "Refused",
                "error",
                "refused: the form is stale (reload the page and try again)",
            ),
        );
    }
    let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    r.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static("homelab_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    r
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], html::STYLE).into_response()
}

async fn not_found(State(app): State<Arc<App>>, Extension(v): Extension<Visitor>) -> Response {
    html_response(
        StatusCode::NOT_FOUND,
        view::message(&viewer(&app, &v), "Not found", "error", "there is no such page"),
    )
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
