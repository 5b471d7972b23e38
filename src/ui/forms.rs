//! The forms a visitor sends: approve (a signature, verified before it is saved), reject,
//! log in and out. Each passes `app::refuse_post` (Origin, token, CSRF) first; refusals say
//! why and change nothing.

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{Multipart, Path as UrlPath, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};

use super::app::{
    base_of, blocking, html_response, refuse_post, same_origin, too_many_tries,
    too_many_tries_text, try_token, unix_now, viewer, App, Visitor,
};
use super::auth::{SESSION_COOKIE, SESSION_SECONDS};
use super::data;
use super::pages::render_plan;
use super::view;
use crate::approve::policy::{self, ApproveError};
use crate::approve::APPROVE_NAMESPACE;

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

pub async fn approve(
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
    if let Some(r) = refuse_post(&app, &v, &headers, &form.csrf, &form.token).await {
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
    let loaded = super::data::read_plan(&path).map_err(|e| match e {
        data::PlanRead::TooLarge(why) | data::PlanRead::Refused(why) => Outcome::Refused(why),
    })?;
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
    let (done, v) = match policy::add_signature(
        &loaded,
        signature,
        &signers,
        &lab.policy,
        &app.sources.records(),
        now,
    ) {
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
pub struct RejectForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    token: String,
    #[serde(default)]
    reason: String,
}

pub async fn reject(
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
    if let Some(r) = refuse_post(&app, &v, &headers, &form.csrf, &form.token).await {
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
        let result = (|| -> Result<(&'static str, String), String> {
            let lab = app.sources.lab()?;
            let loaded = data::read_plan(&path).map_err(|e| match e {
                data::PlanRead::TooLarge(why) | data::PlanRead::Refused(why) => why,
            })?;
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
            drop(_one);
            eprintln!("ui: plan {id} rejected: {}", at.display());
            let mut text = format!(
                "rejected: recorded in {} and on the controller",
                at.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
            );
            // Recorded beside the plan and on the controller, the rejection stands; on its
            // nodes it also refuses other controllers and copies of the plan. A node that
            // cannot be reached is reported, not a failure of the rejection.
            let all: Vec<_>;
            let nodes = match &app.nodes {
                Some(n) => n.as_slice(),
                None => {
                    all = lab.nodes.keys().cloned().collect();
                    all.as_slice()
                }
            };
            let on_nodes = crate::apply::reject::record_on_nodes(
                &lab,
                &loaded,
                &record,
                app.transport.as_ref(),
                nodes,
            );
            for n in &on_nodes {
                match &n.result {
                    Ok(()) => eprintln!("ui: plan {id} rejection recorded on {}", n.display_name),
                    Err(e) => eprintln!(
                        "ui: plan {id} rejection NOT recorded on {}: {e}",
                        n.display_name
                    ),
                }
            }
            let described = crate::apply::reject::describe(&on_nodes);
            if !described.is_empty() {
                text.push_str(&format!("; {described}"));
            }
            if crate::apply::reject::missed_any(&on_nodes) {
                text.push_str(": an apply from another controller could still reach it there; run `homelab reject` when it answers");
                return Ok(("warn", text));
            }
            Ok(("ok", text))
        })();
        match result {
            Ok(notice) => render_plan(&app, &viewer, &id, base, Some(notice), StatusCode::OK),
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

#[derive(serde::Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    token: String,
}

pub async fn login(
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
    match try_token(&app, &form.token).await {
        Ok(()) => {}
        Err(Some(wait)) => {
            let body = view::login(&viewer, Some(("error", too_many_tries_text(wait))));
            return too_many_tries(wait, body);
        }
        Err(None) => {
            return html_response(
                StatusCode::FORBIDDEN,
                view::login(
                    &viewer,
                    Some(("error", "refused: that is not the login token".to_owned())),
                ),
            );
        }
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

pub async fn logout(
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
