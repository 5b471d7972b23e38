//! The pages as HTML, from values already read (`data`): the world, the plans, one plan with
//! its diffs and the approve/reject forms, the event timeline, the login form. Every piece of
//! text goes through `html::esc`; a plan's diffs read as in its Markdown comment (`show
//! --format markdown`): a summary table, then per node its changes, each diff in full.
//! Pure; no IO.

use std::fmt::Write as _;

use super::data::{self, EventFilter, PlanView, State};
use super::html::{badge, esc, notice, page, query_value, Nav, Viewer};
use crate::approve::APPROVE_NAMESPACE;
use crate::plan::{Action, PlannedStatus};
use crate::world::World;

/// A plan as a row of a list.
pub struct PlanRow {
    pub id: String,
    pub state: Result<State, String>,
    pub summary: String,
    pub created: String,
    pub nodes: Vec<String>,
    pub reason: Option<String>,
}

fn opt(s: Option<&str>) -> String {
    s.map_or_else(|| "<span class=\"muted\">—</span>".to_owned(), esc)
}

fn plan_link(id: &str) -> String {
    if id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        format!("<a href=\"/plans/{0}\"><code>{0}</code></a>", esc(id))
    } else {
        format!("<code>{}</code>", esc(id))
    }
}

fn plan_rows(rows: &[PlanRow], out: &mut String) {
    if rows.is_empty() {
        out.push_str("<p class=\"muted\">No plans.</p>\n");
        return;
    }
    out.push_str("<div class=\"table\"><table><thead><tr><th>plan</th><th>state</th><th>changes</th><th class=\"hide-narrow\">nodes</th><th class=\"hide-narrow\">created</th></tr></thead><tbody>\n");
    for r in rows {
        let (state, why) = match &r.state {
            Ok(s) => (badge(s.word()), s.why().map(esc).unwrap_or_default()),
            Err(e) => (badge("refused"), esc(e)),
        };
        let reason = r
            .reason
            .as_deref()
            .map(|x| format!("<br><span class=\"muted\">reason: {}</span>", esc(x)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{state}<br><small class=\"muted\">{why}</small></td><td>{}{reason}</td><td class=\"hide-narrow\">{}</td><td class=\"hide-narrow\">{}</td></tr>",
            plan_link(&r.id),
            esc(&r.summary),
            esc(&r.nodes.join(", ")),
            esc(&r.created),
        );
    }
    out.push_str("</tbody></table></div>\n");
}

/// The front page: nodes, services, incidents, the last deployments and the plans waiting.
pub fn world(viewer: &Viewer, w: &World, problem: Option<&str>, waiting: &[PlanRow]) -> String {
    let mut b = String::new();
    if let Some(p) = problem {
        b.push_str(&notice("warn", p));
    }
    let _ = writeln!(b, "<h2>Plans waiting</h2>");
    plan_rows(waiting, &mut b);

    let _ = writeln!(b, "<h2>Nodes</h2>");
    if w.nodes.is_empty() {
        b.push_str("<p class=\"muted\">No world yet: the observer (<code>homelab observe</code>) has not written <code>world/nodes.json</code>.</p>\n");
    }
    b.push_str("<div class=\"cards\">\n");
    for (id, n) in &w.nodes {
        let name = n.display_name.clone().unwrap_or_else(|| id.to_uppercase());
        let _ = write!(
            b,
            "<div class=\"card\" id=\"node-{}\"><h3>{} {}</h3><dl>",
            esc(id),
            esc(&name),
            badge(&n.status)
        );
        let _ = write!(
            b,
            "<dt>site</dt><dd>{}{}</dd><dt>uplink</dt><dd>{}</dd>",
            opt(n.site.as_deref()),
            if n.offline_first == Some(true) {
                " <small class=\"muted\">(offline-first)</small>"
            } else {
                ""
            },
            opt(n.uplink.as_deref())
        );
        for (link, l) in &n.links {
            let _ = write!(
                b,
                "<dt>{}</dt><dd>{} <small class=\"muted\">since {}</small></dd>",
                esc(link),
                badge(&l.state),
                esc(&l.since)
            );
        }
        if let Some(r) = &n.observer {
            let word = if r.reachable { "reachable" } else { "unreachable" };
            let err = r
                .error
                .as_deref()
                .map(|e| format!("<br><small>{}</small>", esc(e)))
                .unwrap_or_default();
            let _ = write!(
                b,
                "<dt>observer</dt><dd>{} <small class=\"muted\">since {}</small>{err}</dd>",
                badge(word),
                esc(&r.since)
            );
        }
        let _ =
            writeln!(b, "<dt>last seen</dt><dd>{}</dd></dl></div>", opt(n.last_seen.as_deref()));
    }
    b.push_str("</div>\n");

    let _ = writeln!(b, "<h2>Services</h2>");
    if w.services.is_empty() {
        b.push_str("<p class=\"muted\">No service has reported yet.</p>\n");
    } else {
        b.push_str("<div class=\"table\"><table><thead><tr><th>service</th><th>health</th><th class=\"hide-narrow\">release</th><th>last deployment</th></tr></thead><tbody>\n");
        for (key, s) in &w.services {
            let health = match &s.health {
                Some(h) => format!(
                    "{} <small class=\"muted\">since {}</small>{}",
                    badge(&h.state),
                    esc(&h.since),
                    h.reason
                        .as_deref()
                        .map(|r| format!("<br><small>{}</small>", esc(r)))
                        .unwrap_or_default()
                ),
                None => badge("unknown"),
            };
            let release = s
                .release
                .as_ref()
                .and_then(|r| r.plan.as_deref())
                .map_or_else(|| opt(None), plan_link);
            let last = s.last_deployment.as_ref().map_or_else(
                || opt(None),
                |d| {
                    format!(
                        "{} {} <small class=\"muted\">{}</small>",
                        plan_link(&d.plan),
                        badge(&d.status),
                        esc(&d.time)
                    )
                },
            );
            let _ = writeln!(
                b,
                "<tr><td><a href=\"/events?service={}&amp;node={}\">{}</a></td><td>{health}</td><td class=\"hide-narrow\">{release}</td><td>{last}</td></tr>",
                esc(&query_value(&s.service)),
                esc(&query_value(&s.node)),
                esc(key)
            );
        }
        b.push_str("</tbody></table></div>\n");
    }

    let _ = writeln!(b, "<h2>Incidents</h2>");
    let mut incidents: Vec<_> = w.incidents.iter().collect();
    // Open ones first, then the newest.
    incidents.sort_by(|a, b| {
        (a.1.state != "open").cmp(&(b.1.state != "open")).then(b.1.opened.cmp(&a.1.opened))
    });
    if incidents.is_empty() {
        b.push_str("<p class=\"muted\">No incidents.</p>\n");
    } else {
        b.push_str("<div class=\"table\"><table><thead><tr><th>incident</th><th>state</th><th>where</th><th class=\"hide-narrow\">opened</th><th>reason</th></tr></thead><tbody>\n");
        for (id, i) in incidents.into_iter().take(30) {
            let place = match &i.service {
                Some(s) => format!("{s}@{}", i.node),
                None => i.node.clone(),
            };
            let closed = i
                .closed
                .as_deref()
                .map(|c| {
                    format!(
                        "<br><small class=\"muted\">closed {} by {}</small>",
                        esc(c),
                        esc(i.resolution.as_deref().unwrap_or("?"))
                    )
                })
                .unwrap_or_default();
            let _ = writeln!(
                b,
                "<tr><td><code>{}</code><br><small>{} {}</small></td><td>{}{closed}</td><td>{}</td><td class=\"hide-narrow\">{}</td><td>{}{}</td></tr>",
                esc(id),
                esc(&i.kind),
                badge(&i.severity),
                badge(&i.state),
                esc(&place),
                esc(&i.opened),
                opt(i.reason.as_deref()),
                i.plan.as_deref().map(|p| format!("<br><small>plan {}</small>", plan_link(p))).unwrap_or_default(),
            );
        }
        b.push_str("</tbody></table></div>\n");
    }

    let _ = writeln!(b, "<h2>Last deployments</h2>");
    let mut deployments: Vec<_> = w.deployments.iter().collect();
    deployments.sort_by(|a, b| b.1.started.cmp(&a.1.started).then(a.0.cmp(b.0)));
    if deployments.is_empty() {
        b.push_str("<p class=\"muted\">No deployments yet.</p>\n");
    } else {
        b.push_str("<div class=\"table\"><table><thead><tr><th>plan</th><th>status</th><th>nodes</th><th class=\"hide-narrow\">started</th><th class=\"hide-narrow\">ended</th></tr></thead><tbody>\n");
        for (plan, d) in deployments.into_iter().take(10) {
            let nodes: Vec<String> = d
                .nodes
                .iter()
                .map(|(n, dn)| {
                    let failed: Vec<String> = dn
                        .services
                        .iter()
                        .filter_map(|(s, ds)| ds.reason.as_deref().map(|r| format!("{s}: {r}")))
                        .collect();
                    let why = if failed.is_empty() {
                        String::new()
                    } else {
                        format!("<br><small>{}</small>", esc(&failed.join("; ")))
                    };
                    format!("{} {}{why}", esc(n), badge(&dn.status))
                })
                .collect();
            let _ = writeln!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"hide-narrow\">{}</td><td class=\"hide-narrow\">{}</td></tr>",
                plan_link(plan),
                badge(&d.status),
                nodes.join("<br>"),
                opt(d.started.as_deref()),
                opt(d.ended.as_deref()),
            );
        }
        b.push_str("</tbody></table></div>\n");
    }
    page("World", Nav::World, viewer, &b)
}

/// Every plan, newest first.
pub fn plans(viewer: &Viewer, rows: &[PlanRow], problem: Option<&str>) -> String {
    let mut b = String::new();
    if let Some(p) = problem {
        b.push_str(&notice("error", p));
    }
    plan_rows(rows, &mut b);
    let _ =
        writeln!(b, "<p class=\"muted\">The newest {} plan files are listed.</p>", data::MAX_PLANS);
    page("Plans", Nav::Plans, viewer, &b)
}

fn diff_block(d: &str) -> String {
    let mut out = String::from("<pre class=\"diff\">");
    // Split on LF only, so a CR in a line shows as `\x0d`.
    for l in d.split_terminator('\n') {
        let class = if l.starts_with("+++") || l.starts_with("---") {
            "head"
        } else if l.starts_with('+') {
            "add"
        } else if l.starts_with('-') {
            "del"
        } else if l.starts_with("@@") {
            "hunk"
        } else {
            "ctx"
        };
        let _ = write!(
            out,
            "<span class=\"{class}\">{}</span>",
            if l.is_empty() { " ".to_owned() } else { esc(l) }
        );
    }
    out.push_str("</pre>");
    out
}

/// What the plan page needs beyond the plan.
pub struct PlanPage<'a> {
    pub view: &'a PlanView,
    /// Whether its content is the render of its commit, by this binary (`review::verify`).
    pub review: Result<String, String>,
    /// The plan file as the signer finds it in a clone of the repository.
    pub plan_rel: String,
    /// `http://host` of this page, for the `curl` command.
    pub base: String,
    /// A message above the page (an outcome of a form).
    pub notice: Option<(&'static str, String)>,
}

/// One plan: its header, its diffs as in the Markdown comment, its approvals and the forms.
pub fn plan(viewer: &Viewer, p: &PlanPage<'_>) -> String {
    let v = p.view;
    let plan = &v.loaded.plan;
    let id = &v.loaded.id;
    let mut b = String::new();
    if let Some((kind, text)) = &p.notice {
        b.push_str(&notice(kind, text));
    }
    let why = v.state.why().map(|w| format!(" <small>{}</small>", esc(w))).unwrap_or_default();
    let _ = write!(b, "<dl><dt>state</dt><dd>{}{why}</dd>", badge(v.state.word()));
    let _ = write!(b, "<dt>summary</dt><dd>{}</dd>", esc(&plan.summary()));
    let _ = write!(
        b,
        "<dt>created</dt><dd>{}</dd><dt>expires</dt><dd>{}</dd>",
        esc(&plan.created),
        esc(&plan.expires)
    );
    let _ = write!(b, "<dt>planner</dt><dd><code>{}</code></dd>", esc(&plan.planner));
    let sig = match &v.planner {
        Ok(s) => format!("{} {}", badge("valid"), esc(s)),
        Err(e) => format!("{} {}", badge("refused"), esc(e)),
    };
    let _ = write!(b, "<dt>signature</dt><dd>{sig}</dd>");
    let _ = write!(
        b,
        "<dt>commit</dt><dd><code>{}</code>{}</dd>",
        esc(&plan.commit),
        if plan.dirty { " (uncommitted changes)" } else { "" }
    );
    let review = match &p.review {
        Ok(s) => esc(s),
        Err(e) => format!("{} {}", badge("refused"), esc(e)),
    };
    let _ = write!(b, "<dt>content</dt><dd>{review}</dd>");
    if let Some(a) = &v.applied {
        use crate::node::records::ApplyState;
        let word = match a.state {
            ApplyState::Started => "started",
            ApplyState::Partial => "partial",
            ApplyState::Completed => "completed",
        };
        let _ = write!(
            b,
            "<dt>apply</dt><dd>{} <small class=\"muted\">{} by {}</small>",
            badge(word),
            esc(&a.updated),
            esc(&a.by)
        );
        // A node's detail quotes the last lines its failed steps printed (the node's secrets
        // redacted there): for a logged-in operator only (issue 19).
        let mut hidden = false;
        for (node, s) in &a.nodes {
            let _ = write!(b, "<br>{} {}", esc(node), badge(&s.outcome));
            match (s.detail.is_empty(), viewer.logged_in) {
                (true, _) => {}
                (false, true) => {
                    let _ = write!(b, "<br><small><code>{}</code></small>", esc(&s.detail));
                }
                (false, false) => hidden = true,
            }
        }
        if hidden {
            b.push_str("<br><small class=\"muted\">what the nodes' steps printed is shown after logging in</small>");
        }
        b.push_str("</dd>");
    }
    if let Some((state, reason)) = &v.action {
        let _ = write!(
            b,
            "<dt>action</dt><dd><code>actions/{}/{}.json</code></dd>",
            state.as_str(),
            esc(id)
        );
        if let Some(r) = reason {
            let _ = write!(b, "<dt>reason</dt><dd>{}</dd>", esc(r));
        }
    }
    b.push_str("</dl>\n");

    // As the Markdown comment: the table, then each node's changes.
    b.push_str("<div class=\"table\"><table><thead><tr><th>node</th><th>create</th><th>update</th><th>replace</th><th>delete</th><th>no-op</th><th>status</th></tr></thead><tbody>\n");
    for n in &plan.nodes {
        let count = |a: Action| n.changes.iter().filter(|c| c.action == a).count();
        let status = match &n.status {
            PlannedStatus::Reachable { .. } => badge("reachable"),
            PlannedStatus::Unreachable { reason } => {
                format!("{} {}", badge("unreachable"), esc(reason))
            }
        };
        let _ = writeln!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{status}</td></tr>",
            esc(&n.node.display_name()),
            count(Action::Create),
            count(Action::Update),
            count(Action::Replace),
            count(Action::Delete),
            count(Action::NoOp),
        );
    }
    b.push_str("</tbody></table></div>\n<h2>Changes</h2>\n");
    let mut any = false;
    for n in &plan.nodes {
        let changes: Vec<_> = n.changes.iter().filter(|c| c.action != Action::NoOp).collect();
        if changes.is_empty() {
            continue;
        }
        any = true;
        let _ = writeln!(
            b,
            "<details open><summary><b>{}</b>: {} change{}</summary>\n<ul>",
            esc(&n.node.display_name()),
            changes.len(),
            if changes.len() == 1 { "" } else { "s" }
        );
        for c in changes {
            let _ = write!(
                b,
                "<li><code>{} {}</code> {}",
                esc(c.action.symbol().trim()),
                esc(&c.instance.to_string()),
                esc(&c.reason)
            );
            if !c.after.is_empty() {
                let after: Vec<String> = c.after.iter().map(ToString::to_string).collect();
                let _ =
                    write!(b, " <small class=\"muted\">after {}</small>", esc(&after.join(", ")));
            }
            // A new service's files are shown whole, folded, as in the comment.
            let fold = matches!(c.action, Action::Create | Action::Replace);
            for (name, d) in &c.diffs {
                if fold {
                    let _ = write!(
                        b,
                        "<details><summary><code>{}</code>: {} lines</summary>{}</details>",
                        esc(name),
                        d.lines().count().saturating_sub(3),
                        diff_block(d)
                    );
                } else {
                    let _ = write!(b, "<div><code>{}</code>{}</div>", esc(name), diff_block(d));
                }
            }
            b.push_str("</li>\n");
        }
        b.push_str("</ul></details>\n");
    }
    if !any {
        b.push_str("<p class=\"muted\">This plan changes nothing.</p>\n");
    }

    b.push_str("<h2>Approvals</h2>\n");
    if v.approvals.is_empty() {
        b.push_str("<p class=\"muted\">None yet.</p>\n");
    } else {
        b.push_str("<ol id=\"approvals\">\n");
        for a in &v.approvals {
            match &a.verified {
                Ok(ok) => {
                    let _ = writeln!(
                        b,
                        "<li>{} <b>{}</b> <code>{}</code></li>",
                        badge("valid"),
                        esc(&ok.principals.join(", ")),
                        esc(&ok.fingerprint)
                    );
                }
                Err(e) => {
                    let _ = writeln!(b, "<li>{} {}</li>", badge("refused"), esc(e));
                }
            }
        }
        b.push_str("</ol>\n");
    }

    if v.state.open() {
        approve_forms(viewer, p, &mut b);
    }
    page(&format!("Plan {id}"), Nav::Plans, viewer, &b)
}

fn token_input(viewer: &Viewer) -> String {
    if viewer.logged_in {
        String::new()
    } else {
        "<label for=\"token-TAG\">Login token</label><input type=\"password\" id=\"token-TAG\" name=\"token\" autocomplete=\"current-password\">".to_owned()
    }
}

fn approve_forms(viewer: &Viewer, p: &PlanPage<'_>, b: &mut String) {
    let id = &p.view.loaded.id;
    b.push_str("<h2>Approve</h2>\n");
    if !viewer.token_configured {
        b.push_str(&notice(
            "warn",
            "This page was started without a login token: it is read-only. Approve with `homelab approve` or start `homelab ui` with a token (docs/ui.md).",
        ));
    }
    let key = "~/.ssh/id_ed25519";
    let sign = format!("ssh-keygen -Y sign -f {key} -n {APPROVE_NAMESPACE}");
    let _ = writeln!(
        b,
        "<p>An approval is your SSH signature over the plan's signed bytes (the plan file up to its own signature), in the namespace <code>{APPROVE_NAMESPACE}</code>. In a clone of the repository:</p>\n<pre class=\"cmd\" id=\"sign-command\">{}</pre>\n<p>or from this page (check that <code>sha256sum</code> of the bytes begins with <code>{}</code>):</p>\n<pre class=\"cmd\" id=\"sign-command-curl\">{}</pre>\n<p>or sign and save in one step with <code>homelab approve</code> where the repository and the controller are:</p>\n<pre class=\"cmd\" id=\"approve-command\">{}</pre>",
        esc(&format!("sed '/^-----BEGIN SSH SIGNATURE-----$/,$d' {} | {sign} > {id}.sig", p.plan_rel)),
        esc(id),
        esc(&format!("curl -s {}/plans/{id}/signed-bytes | {sign} > {id}.sig", p.base)),
        esc(&format!("homelab approve {} --key {key}", p.plan_rel)),
    );
    if !viewer.token_configured {
        return;
    }
    let _ = writeln!(
        b,
        "<form class=\"box\" method=\"post\" action=\"/plans/{id}/approve\" enctype=\"multipart/form-data\" id=\"approve-form\">{}\n\
<label for=\"signature\">Signature (the whole <code>{id}.sig</code>, from <code>-----BEGIN SSH SIGNATURE-----</code> to its END line)</label>\n\
<textarea id=\"signature\" name=\"signature\" spellcheck=\"false\" autocomplete=\"off\"></textarea>\n\
<label for=\"signature-file\">or upload the file</label><input type=\"file\" id=\"signature-file\" name=\"signature_file\" accept=\".sig,text/plain\">\n\
{}\n<button type=\"submit\" class=\"primary\" id=\"approve\">Verify and save approval</button>\n\
<p class=\"muted\">The signature is checked against <code>inventory/allowed_signers</code> and <code>inventory/policy.yaml</code>, as <code>homelab apply</code> checks it, before anything is saved.</p></form>",
        viewer.csrf_input(),
        token_input(viewer).replace("TAG", "approve"),
    );
    b.push_str("<h2>Reject</h2>\n");
    let _ = writeln!(
        b,
        "<form class=\"box\" method=\"post\" action=\"/plans/{id}/reject\" id=\"reject-form\">{}\n\
<label for=\"reason\">Reason</label><input type=\"text\" id=\"reason\" name=\"reason\" required maxlength=\"500\">\n\
{}\n<button type=\"submit\" class=\"danger\" id=\"reject\">Reject plan</button>\n\
<p class=\"muted\">Recorded beside the plan and on the controller: apply and the executor refuse it from then on. <code>homelab reject</code> also records it on the nodes.</p></form>",
        viewer.csrf_input(),
        token_input(viewer).replace("TAG", "reject"),
    );
}

/// The event timeline, newest first, with its filters.
pub fn events(
    viewer: &Viewer,
    filter: &EventFilter,
    nodes: &[String],
    shown: &[serde_json::Value],
    matched: usize,
    torn: usize,
    problem: Option<&str>,
) -> String {
    let mut b = String::new();
    if let Some(p) = problem {
        b.push_str(&notice("error", p));
    }
    let select = |name: &str, label: &str, options: &[&str], current: &str| {
        let mut s = format!("<div><label for=\"f-{name}\">{label}</label><select id=\"f-{name}\" name=\"{name}\"><option value=\"\">any</option>");
        for o in options {
            let sel = if *o == current { " selected" } else { "" };
            let _ = write!(s, "<option value=\"{0}\"{sel}>{0}</option>", esc(o));
        }
        s.push_str("</select></div>");
        s
    };
    let node_names: Vec<&str> = nodes.iter().map(String::as_str).collect();
    let _ = writeln!(
        b,
        "<form method=\"get\" action=\"/events\" class=\"filters\" id=\"filters\">{}{}{}\
<div><label for=\"f-service\">service</label><input type=\"search\" id=\"f-service\" name=\"service\" value=\"{}\"></div>\
<div><label for=\"f-correlation\">plan / correlation id</label><input type=\"search\" id=\"f-correlation\" name=\"correlation\" value=\"{}\"></div>\
<div><button type=\"submit\">Filter</button> <a href=\"/events\">clear</a></div></form>",
        select("node", "node", &node_names, &filter.node),
        select("kind", "type", &crate::events::TYPES, &filter.kind),
        select("severity", "severity at least", &crate::events::SEVERITIES, &filter.severity),
        esc(&filter.service),
        esc(&filter.correlation),
    );
    let _ = writeln!(
        b,
        "<p class=\"muted\" id=\"event-count\">{} of {matched} matching event{}, newest first.{}</p>",
        shown.len(),
        if matched == 1 { "" } else { "s" },
        if torn > 0 { format!(" {torn} torn line(s) skipped.") } else { String::new() }
    );
    if !shown.is_empty() {
        b.push_str("<div class=\"table\"><table id=\"events\"><thead><tr><th>time</th><th>node</th><th>severity</th><th>type</th><th>service</th><th class=\"hide-narrow\">correlation</th><th>data</th></tr></thead><tbody>\n");
        for e in shown {
            let s = |k: &str| e[k].as_str().unwrap_or("-").to_owned();
            let data = data::hide_secrets(&e["data"]);
            let data = if data.is_null() || data.as_object().is_some_and(|m| m.is_empty()) {
                String::new()
            } else {
                data.to_string()
            };
            let _ = writeln!(
                b,
                "<tr><td><small>{}</small></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"hide-narrow\">{}</td><td><code>{}</code></td></tr>",
                esc(&s("time")),
                esc(&s("node")),
                badge(&s("severity")),
                esc(&s("type")),
                esc(&s("service")),
                plan_link(&s("correlation_id")),
                esc(&data),
            );
        }
        b.push_str("</tbody></table></div>\n");
    }
    page("Events", Nav::Events, viewer, &b)
}

/// The login form (the token is never put back into it).
pub fn login(viewer: &Viewer, message: Option<(&'static str, String)>) -> String {
    let mut b = String::new();
    if let Some((kind, text)) = message {
        b.push_str(&notice(kind, &text));
    }
    if !viewer.token_configured {
        b.push_str(&notice("warn", "This page was started without a login token: it is read-only for everyone (docs/ui.md)."));
        return page("Log in", Nav::Login, viewer, &b);
    }
    let _ = writeln!(
        b,
        "<form class=\"box\" method=\"post\" action=\"/login\" id=\"login-form\">{}\n<label for=\"token\">Login token</label><input type=\"password\" id=\"token\" name=\"token\" autocomplete=\"current-password\" required>\n<button type=\"submit\" class=\"primary\">Log in</button>\n<p class=\"muted\">Logging in lets this browser approve and reject plans for 12 hours. Reading needs no login.</p></form>",
        viewer.csrf_input()
    );
    page("Log in", Nav::Login, viewer, &b)
}

/// A page that only says something (not found, refused, an error).
pub fn message(viewer: &Viewer, title: &str, kind: &str, text: &str) -> String {
    page(title, Nav::World, viewer, &notice(kind, text))
}
