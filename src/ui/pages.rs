//! The pages a visitor reads: the world, the plans, one plan, its signed bytes, the events,
//! the login form, the style sheet. Each reads its files on the blocking pool and renders
//! with `view`; nothing here writes.

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;

use super::app::{base_of, blocking, html_response, viewer, App, Visitor};
use super::data::{self, EventFilter, State as PlanState};
use super::html::{self, Viewer};
use super::view;
use crate::approve::policy;

/// The plans, as rows: all of them, or only those still open to approvals.
pub fn plan_rows(
    app: &App,
    lab: Option<&crate::model::Homelab>,
    only_open: bool,
) -> (Vec<view::PlanRow>, Option<String>) {
    let files = match data::plan_files(&app.sources.plans, &app.summaries) {
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
                state: Err(e),
                summary: String::new(),
                created: String::new(),
                nodes: Vec::new(),
                reason: None,
            },
            Ok(s) => {
                let state = match (&signers, lab) {
                    (Some(Ok(signers)), Some(l)) => {
                        Ok(data::state(s.as_ref(), signers, l, &records, now))
                    }
                    (Some(Err(e)), _) => Err(e.to_string()),
                    _ => Err("the homelab does not validate: states unknown".to_owned()),
                };
                let reason = data::action(&records, &s.id).and_then(|(_, r)| r);
                view::PlanRow {
                    id: s.id.clone(),
                    summary: s.summary.clone(),
                    created: s.created.clone(),
                    nodes: s.changes.iter().map(|(n, _)| n.to_string()).collect(),
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

pub async fn world_page(State(app): State<Arc<App>>, Extension(v): Extension<Visitor>) -> Response {
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

pub async fn plans_page(State(app): State<Arc<App>>, Extension(v): Extension<Visitor>) -> Response {
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

/// Renders plan `id`'s page with a notice and a status; 404 when there is no such plan.
pub fn render_plan(
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
    let loaded = match data::read_plan(&path) {
        Ok(l) => l,
        Err(data::PlanRead::TooLarge(why)) => {
            return html_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                view::message(viewer, &format!("Plan {id}"), "error", &why),
            )
        }
        Err(data::PlanRead::Refused(e)) => {
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
    // As `show` and `approve` say it: the provenance, and a downgrade of any node.
    let review = crate::review::verify(&app.sources.repo, &lab, &loaded)
        .map(|p| {
            let records = app.sources.records();
            let mut said = p.describe();
            for d in crate::review::downgrades(&app.sources.repo, &records, &loaded) {
                said.push_str("; ");
                said.push_str(&d);
            }
            said
        })
        .map_err(|e| e.to_string());
    let plan_rel = path
        .strip_prefix(&app.sources.repo)
        .map_or_else(|_| path.display().to_string(), |p| p.display().to_string());
    let pv = data::plan_view(loaded, &lab, &app.sources.records(), SystemTime::now());
    let page = view::PlanPage { view: &pv, review, plan_rel, base, notice };
    html_response(status, view::plan(viewer, &page))
}

pub async fn plan_page(
    State(app): State<Arc<App>>,
    Extension(v): Extension<Visitor>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let base = base_of(&headers);
    blocking(move || render_plan(&app, &viewer(&app, &v), &id, base, None, StatusCode::OK)).await
}

/// The plan's signed bytes, for `curl … | ssh-keygen -Y sign`.
pub async fn signed_bytes(State(app): State<Arc<App>>, UrlPath(id): UrlPath<String>) -> Response {
    blocking(move || {
        let Some(path) = app.sources.plan_path(&id).filter(|p| p.is_file()) else {
            return (StatusCode::NOT_FOUND, format!("there is no plan `{id}`\n")).into_response();
        };
        match data::read_plan(&path) {
            Ok(l) => {
                ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], l.body).into_response()
            }
            Err(data::PlanRead::TooLarge(why)) => {
                (StatusCode::PAYLOAD_TOO_LARGE, format!("{why}\n")).into_response()
            }
            Err(data::PlanRead::Refused(e)) => {
                (StatusCode::UNPROCESSABLE_ENTITY, format!("refused: {e}\n")).into_response()
            }
        }
    })
    .await
}

pub async fn events_page(
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

pub async fn login_page(State(app): State<Arc<App>>, Extension(v): Extension<Visitor>) -> Response {
    html_response(StatusCode::OK, view::login(&viewer(&app, &v), None))
}

pub async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], html::STYLE).into_response()
}

pub async fn not_found(State(app): State<Arc<App>>, Extension(v): Extension<Visitor>) -> Response {
    html_response(
        StatusCode::NOT_FOUND,
        view::message(&viewer(&app, &v), "Not found", "error", "there is no such page"),
    )
}
