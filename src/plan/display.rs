//! How a plan reads: colour text for a terminal, Markdown for a Forgejo pull-request comment,
//! JSON for machines (schema in docs/plan-json.md). Writers are generic over `io::Write` so
//! tests compare exact output.
//!
//! Everything shown comes from a file someone else wrote (a plan, a node's answer), so it is
//! escaped for where it lands: control characters (ESC, BEL, CR, …) and bidirectional
//! overrides become visible `\x1b`/`\u{202e}` escapes in text; Markdown text is HTML-escaped, and
//! code goes in spans and fences longer than any backtick run inside them, so a plan cannot
//! close a `<details>`, open a comment or rewrite the reviewer's terminal.

use std::collections::BTreeSet;
use std::io::{self, Write};

use console::Style;
use serde_json::json;

use super::{Action, Plan, PlannedStatus};

/// Forgejo refuses comments over 65 535 characters; stay well under it.
pub const MARKDOWN_BUDGET: usize = 60_000;

/// Whether `c` must not reach a terminal or a page as itself: C0/C1 controls (but tab), DEL,
/// and the bidirectional controls that make text read differently from what it is.
fn hidden(c: char) -> bool {
    (c.is_control() && c != '\t')
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` with every hidden character written as an escape (`\x1b`, `\u{202e}`).
pub fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(hidden) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if !hidden(c) {
            out.push(c);
        } else if (c as u32) < 0x100 {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Markdown text (outside code): escaped, then HTML-escaped, with `|` escaped for tables,
/// `[` and `]` escaped so no link or image (`[x](javascript:…)`, `![](…)`, `[x][ref]`) is
/// made of a plan's words (a bare `http(s)://` URL is still linked by Forgejo, and only such
/// a URL), and a zero-width space after an `@` that could start a mention, so a plan's
/// words notify nobody (`@admin` reads the same and pings no one; `owner@saturn` is left
/// as it is).
pub fn md_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut before: Option<char> = None;
    for c in escape(s).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '|' => out.push_str("\\|"),
            '[' => out.push_str("\\["),
            ']' => out.push_str("\\]"),
            '@' if !before.is_some_and(char::is_alphanumeric) => out.push_str("@\u{200b}"),
            c => out.push(c),
        }
        before = Some(c);
    }
    out
}

/// The longest run of backticks in `s`.
fn longest_backtick_run(s: &str) -> usize {
    s.split(|c| c != '`').map(str::len).max().unwrap_or(0)
}

/// An inline code span holding `s` literally, whatever backticks it contains.
pub fn md_code(s: &str) -> String {
    let s = escape(s).replace('\n', " ");
    let ticks = "`".repeat(longest_backtick_run(&s) + 1);
    let pad = if s.starts_with('`') || s.ends_with('`') { " " } else { "" };
    format!("{ticks}{pad}{s}{pad}{ticks}")
}

/// A fence for a code block holding `s`: longer than any backtick run inside, at least three.
fn md_fence(s: &str) -> String {
    "`".repeat((longest_backtick_run(s) + 1).max(3))
}

fn style(color: bool, s: Style) -> Style {
    if color {
        s.force_styling(true)
    } else {
        Style::new().force_styling(false)
    }
}

fn action_style(color: bool, a: Action) -> Style {
    let s = match a {
        Action::Create => Style::new().green(),
        Action::Update => Style::new().yellow(),
        Action::Replace => Style::new().magenta(),
        Action::Delete => Style::new().red(),
        Action::NoOp => Style::new().dim(),
    };
    style(color, s)
}

/// The engine line every reachable node shares when none of their engines could be read.
fn shared_unavailable_engine(plan: &Plan) -> Option<&str> {
    let mut engines = plan
        .nodes
        .iter()
        .filter(|n| matches!(n.status, PlannedStatus::Reachable { .. }))
        .map(|n| n.engine.as_deref());
    let first = engines.next()??;
    let same = engines.all(|e| e == Some(first));
    (same && first.starts_with("unavailable: ")).then_some(first)
}

pub fn write_text<W: Write + ?Sized>(
    w: &mut W,
    id: &str,
    plan: &Plan,
    color: bool,
) -> io::Result<()> {
    write_text_checked(w, id, plan, color, None)
}

/// As `write_text`, with the outcome of checking the planner's signature (for reviewers).
pub fn write_text_checked<W: Write + ?Sized>(
    w: &mut W,
    id: &str,
    plan: &Plan,
    color: bool,
    signature: Option<&str>,
) -> io::Result<()> {
    let bold = style(color, Style::new().bold());
    writeln!(w, "{} {id}", bold.apply_to("plan"))?;
    writeln!(w, "  created  {}  expires {}", plan.created, plan.expires)?;
    writeln!(w, "  planner  {}", escape(&plan.planner))?;
    if let Some(s) = signature {
        writeln!(w, "  signature {}", escape(s))?;
    }
    writeln!(
        w,
        "  commit   {}{}",
        escape(&plan.commit),
        if plan.dirty { " (uncommitted changes)" } else { "" }
    )?;
    writeln!(w, "  summary  {}", plan.summary())?;
    if !plan.trust.is_empty() {
        writeln!(
            w,
            "  trust    {} (nodes whose pinned roots differ take these)",
            trust_line(plan)
        )?;
    }
    // No engine is not a failure: say once that container state was not read, not per node.
    let unread = shared_unavailable_engine(plan);
    if let Some(e) = unread {
        writeln!(
            w,
            "  note     container state was not read (engine {}); only files are compared",
            escape(e)
        )?;
    }
    for n in &plan.nodes {
        writeln!(w)?;
        match &n.status {
            PlannedStatus::Unreachable { reason } => {
                let red = style(color, Style::new().red().bold());
                writeln!(
                    w,
                    "{} {}: {}",
                    bold.apply_to(n.node.display_name()),
                    red.apply_to(unread_label(reason)),
                    escape(reason)
                )?;
                writeln!(w, "  nothing planned for this node; plan again when it is back")?;
                continue;
            }
            PlannedStatus::Reachable { .. } => {
                writeln!(w, "{}", bold.apply_to(n.node.display_name()))?;
                match &n.engine {
                    Some(e) if unread.is_some() => debug_assert_eq!(Some(e.as_str()), unread),
                    Some(e) if e.starts_with("unavailable: ") => {
                        writeln!(w, "  note: container state was not read (engine {})", escape(e))?;
                    }
                    Some(e) => writeln!(w, "  engine: {}", escape(e))?,
                    None => {}
                }
                if let Some(root) = &n.root {
                    writeln!(w, "  runtime root: {} (--root)", escape(root))?;
                }
                if n.pinned_match == Some(false) {
                    writeln!(
                        w,
                        "  trust roots: the node's pinned roots differ from this commit's; the apply rotates them (the node takes them only under an approval its old roots accept)"
                    )?;
                }
            }
        }
        // Node-level: the networks its services' compose files take as given.
        for (net, users) in n.networks() {
            let s = action_style(color, Action::Create);
            writeln!(
                w,
                "  {} {:<8} {}  created on the node if missing (`external: true`), before {} up",
                s.apply_to(format!("{:>3}", "+")),
                s.apply_to("network"),
                escape(net),
                users_of(&users)
            )?;
        }
        if n.changes.is_empty() {
            writeln!(w, "  no services")?;
        }
        for c in &n.changes {
            let s = action_style(color, c.action);
            writeln!(
                w,
                "  {} {:<8} {}  {}",
                s.apply_to(format!("{:>3}", c.action.symbol())),
                s.apply_to(c.action.as_str()),
                c.instance,
                escape(&c.reason)
            )?;
            if !c.after.is_empty() {
                let after: Vec<String> = c.after.iter().map(ToString::to_string).collect();
                writeln!(w, "      after {}", after.join(", "))?;
            }
            if c.action == Action::Create || c.action == Action::Replace {
                for a in &c.artifacts {
                    writeln!(
                        w,
                        "      {} {:04o} {} bytes",
                        escape(&a.name),
                        a.mode,
                        a.bytes().len()
                    )?;
                }
            }
            for (_, d) in &c.diffs {
                for line in d.split_terminator('\n') {
                    let s = if line.starts_with("+++") || line.starts_with("---") {
                        style(color, Style::new().bold())
                    } else if line.starts_with('+') {
                        style(color, Style::new().green())
                    } else if line.starts_with('-') {
                        style(color, Style::new().red())
                    } else if line.starts_with("@@") {
                        style(color, Style::new().cyan())
                    } else {
                        style(color, Style::new())
                    };
                    writeln!(w, "      {}", s.apply_to(escape(line)))?;
                }
            }
        }
    }
    Ok(())
}

/// The services a node-level change is for, by name, with the verb that follows them
/// (`web comes`, `traefik, whoami come`).
fn users_of(users: &[&crate::model::Instance]) -> String {
    let names: Vec<&str> = users.iter().map(|i| i.service.as_str()).collect();
    format!("{} {}", names.join(", "), if names.len() == 1 { "comes" } else { "come" })
}

fn mermaid_id(s: &str) -> String {
    s.replace('@', "__").replace('-', "_")
}

/// Markdown for a PR comment: summary table, a Mermaid graph of what changes, and one folded
/// section per node. Past the budget, full contents give way to a pointer to the plan file.
pub fn write_markdown<W: Write + ?Sized>(w: &mut W, id: &str, plan: &Plan) -> io::Result<()> {
    write_markdown_checked(w, id, plan, None)
}

/// As `write_markdown`, with the outcome of checking the planner's signature.
pub fn write_markdown_checked<W: Write + ?Sized>(
    w: &mut W,
    id: &str,
    plan: &Plan,
    signature: Option<&str>,
) -> io::Result<()> {
    let mut out = String::new();
    out.push_str(&format!("### homelab plan `{id}`\n\n"));
    out.push_str(&format!(
        "Created {} · expires {} · planner {} · commit {}{}\n\n",
        md_text(&plan.created),
        md_text(&plan.expires),
        md_code(&plan.planner),
        md_code(&plan.commit),
        if plan.dirty { " (uncommitted changes)" } else { "" }
    ));
    if let Some(sig) = signature {
        out.push_str(&format!("Signature: {}\n\n", md_text(sig)));
    }
    if !plan.trust.is_empty() {
        out.push_str(&format!(
            "Trust roots (nodes whose pinned roots differ take these): {}\n\n",
            md_text(&trust_line(plan))
        ));
    }
    out.push_str("| node | create | update | replace | delete | no-op | status |\n|---|---|---|---|---|---|---|\n");
    for n in &plan.nodes {
        let count = |a: Action| n.changes.iter().filter(|c| c.action == a).count();
        let status = match &n.status {
            PlannedStatus::Reachable { .. } => match &n.root {
                Some(root) => format!("reachable, runtime root {} (`--root`)", md_code(root)),
                None => "reachable".to_owned(),
            },
            PlannedStatus::Unreachable { reason } => {
                format!("**{}**: {}", unread_label(reason), md_text(reason))
            }
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            md_text(&n.node.display_name()),
            count(Action::Create),
            count(Action::Update),
            count(Action::Replace),
            count(Action::Delete),
            count(Action::NoOp),
            status
        ));
    }
    let changing: Vec<_> =
        plan.nodes.iter().flat_map(|n| &n.changes).filter(|c| c.action != Action::NoOp).collect();
    if !changing.is_empty() {
        out.push_str("\n```mermaid\nflowchart LR\n");
        let names: BTreeSet<String> = changing.iter().map(|c| c.instance.to_string()).collect();
        for c in &changing {
            out.push_str(&format!(
                "  {}[\"{} {}\"]\n",
                mermaid_id(&c.instance.to_string()),
                c.action.symbol().trim(),
                c.instance
            ));
        }
        for c in &changing {
            for dep in &c.after {
                if names.contains(&dep.to_string()) {
                    out.push_str(&format!(
                        "  {} --> {}\n",
                        mermaid_id(&c.instance.to_string()),
                        mermaid_id(&dep.to_string())
                    ));
                }
            }
        }
        out.push_str("```\n");
    }
    let mut full = true;
    for pass in 0..2 {
        let mut body = String::new();
        for n in &plan.nodes {
            let changes: Vec<_> = n.changes.iter().filter(|c| c.action != Action::NoOp).collect();
            if changes.is_empty() {
                continue;
            }
            body.push_str(&format!(
                "\n<details><summary><b>{}</b>: {} change{}</summary>\n\n",
                md_text(&n.node.display_name()),
                changes.len(),
                if changes.len() == 1 { "" } else { "s" }
            ));
            for (net, users) in n.networks() {
                body.push_str(&format!(
                    "- {} created on the node if missing (`external: true`), before {} up\n",
                    md_code(&format!("+ network {net}")),
                    md_text(&users_of(&users))
                ));
            }
            for c in changes {
                body.push_str(&format!(
                    "- {} {}\n",
                    md_code(&format!("{} {}", c.action.symbol().trim(), c.instance)),
                    md_text(&c.reason)
                ));
                // A new service's files are shown whole, folded so the comment stays readable.
                let fold = matches!(c.action, Action::Create | Action::Replace);
                for (name, d) in &c.diffs {
                    if full {
                        let fence = md_fence(d);
                        if fold {
                            body.push_str(&format!(
                                "\n  <details><summary><code>{}</code>: {} lines</summary>\n",
                                md_text(name),
                                d.lines().count().saturating_sub(3)
                            ));
                        }
                        body.push_str(&format!("\n  {}\n\n  {fence}diff\n", md_code(name)));
                        // Split on LF only, so a CR in a line shows as `\x0d`.
                        for l in d.split_terminator('\n') {
                            body.push_str(&format!("  {}\n", escape(l)));
                        }
                        body.push_str(&format!("  {fence}\n"));
                        if fold {
                            body.push_str("\n  </details>\n");
                        }
                    }
                }
            }
            body.push_str("\n</details>\n");
        }
        if out.len() + body.len() <= MARKDOWN_BUDGET || pass == 1 {
            if !full {
                body.push_str(&format!("\n_Diffs left out to stay under Forgejo's comment size; read them in `plans/{id}.plan`._\n"));
            }
            out.push_str(&body);
            break;
        }
        full = false;
    }
    w.write_all(out.as_bytes())
}

/// JSON for machines; schema in docs/plan-json.md.
pub fn to_json(id: &str, plan: &Plan) -> serde_json::Value {
    let nodes: Vec<_> = plan
        .nodes
        .iter()
        .map(|n| {
            let mut v = json!({
                "node": n.node,
                "changes": n.changes.iter().map(|c| json!({
                    "instance": c.instance.to_string(),
                    "service": c.instance.service,
                    "action": c.action,
                    "reason": c.reason,
                    "after": c.after.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "artifacts": c.artifacts.iter().map(|a| json!({
                        "name": a.name, "mode": format!("{:04o}", a.mode), "sha256": a.sha256, "size": a.bytes().len(),
                    })).collect::<Vec<_>>(),
                    "diffs": c.diffs.iter().map(|(name, text)| json!({"name": name, "text": text})).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            });
            let networks = n.networks();
            if !networks.is_empty() {
                v["networks"] = json!(networks
                    .iter()
                    .map(|(net, users)| json!({
                        "name": net,
                        "for": users.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    }))
                    .collect::<Vec<_>>());
            }
            match &n.status {
                PlannedStatus::Reachable { fingerprint, .. } => {
                    v["status"] = json!("reachable");
                    v["fingerprint"] = json!(fingerprint);
                    v["engine"] = json!(n.engine);
                    if let Some(root) = &n.root {
                        v["root"] = json!(root);
                    }
                }
                PlannedStatus::Unreachable { reason } => {
                    v["status"] = json!(unread_label(reason));
                    v["reason"] = json!(reason);
                }
            }
            v
        })
        .collect();
    let summary: serde_json::Map<String, serde_json::Value> =
        Action::ALL.iter().map(|a| (a.as_str().to_owned(), json!(plan.count(*a)))).collect();
    json!({
        "format_version": super::file::FORMAT_VERSION,
        "id": id,
        "created": plan.created,
        "expires": plan.expires,
        "planner": plan.planner,
        "commit": plan.commit,
        "dirty": plan.dirty,
        "trust": plan.trust.iter().map(|(name, text)| json!({
            "file": name,
            "sha256": crate::digest::sha256_hex(text.as_bytes()),
        })).collect::<Vec<_>>(),
        "summary": summary,
        "unreachable": plan.unreachable(),
        "nodes": nodes,
    })
}

/// The trust roots a plan carries, as `file sha256:<first 12 hex>` each.
fn trust_line(plan: &Plan) -> String {
    plan.trust
        .iter()
        .map(|(name, text)| {
            format!("{name} sha256:{}", &crate::digest::sha256_hex(text.as_bytes())[..12])
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// How a node that could not be read is labelled: "unreachable", unless it answered and its
/// answer stopped coming (a slow node is not an unreachable one).
fn unread_label(reason: &str) -> &'static str {
    if reason.starts_with(crate::observe::STALLED) {
        "not read"
    } else {
        "unreachable"
    }
}
