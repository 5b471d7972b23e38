//! The rules of `inventory/policy.yaml`: a plan lifetime, at least one and at most as many
//! approvals as approvers, approvers that are principals of `inventory/allowed_signers`, and
//! per-node rules for nodes that exist.
//!
//! Reads `allowed_signers` as text; verifying signatures is `crate::approve`'s job. No IO here.

use std::collections::BTreeSet;

use super::super::diag::Diagnostics;
use super::super::names::NodeName;
use super::super::parse_duration;
use super::super::raw::{self, line, S};
use super::Input;
use crate::quote::cut;

const FILE: &str = "inventory/policy.yaml";

pub(super) fn check(i: &Input, d: &mut Diagnostics) {
    let Some(p) = &i.raw.policy else { return };
    let principals =
        i.raw.allowed_signers.as_ref().map(|s| signer_principals(&s.text)).unwrap_or_default();
    telegram(i, d, &principals);
    if parse_duration(&p.plan_ttl.value).filter(|d| !d.is_zero()).is_none() {
        d.err(
            "policy",
            FILE,
            line(&p.plan_ttl),
            "plan_ttl",
            format!("expected a duration such as `24h`, found `{}`", cut(&p.plan_ttl.value)),
            "set how long a plan stays valid",
        );
    }
    if let Some(b) = &p.reviewed_branches {
        if b.value.is_empty() {
            d.err(
                "policy",
                FILE,
                line(b),
                "reviewed_branches",
                "expected at least one branch, found none",
                "name the branch reviewed plans come from, e.g. `reviewed_branches: [main]`, or leave the field out for `main`",
            );
        }
        for name in &b.value {
            if let Some(why) = bad_branch_name(&name.value) {
                d.err(
                    "policy",
                    FILE,
                    line(name).or(line(b)),
                    "reviewed_branches",
                    format!("expected a Git branch name, found `{}`: {why}", cut(&name.value)),
                    "name a branch as `git branch --list` shows it, e.g. `main`",
                );
            }
        }
    }
    if let Some(k) = p.keep_releases.as_ref().filter(|k| k.value < 2) {
        d.err(
            "policy",
            FILE,
            line(k),
            "keep_releases",
            format!("expected at least 2 releases kept per service, found {}", k.value),
            "keep the live release and the one a rollback goes back to: `keep_releases: 2` or more",
        );
    }
    // Which rule covers which node, to know whether a granted bot may count under it.
    let granted: BTreeSet<String> = p
        .telegram
        .iter()
        .flat_map(|t| &t.value.users)
        .filter(|u| !u.value.changes.is_empty())
        .flat_map(|u| u.value.nodes.iter().map(|n| n.value.to_ascii_lowercase()))
        .collect();
    let default_bot = i
        .lab
        .nodes
        .keys()
        .any(|n| !p.approvals.nodes.contains_key(n.as_str()) && granted.contains(n.as_str()));
    rule(d, &p.approvals.default, "approvals.default", &principals, default_bot);
    for (name, r) in &p.approvals.nodes {
        let field = format!("approvals.nodes.{name}");
        rule(d, r, &field, &principals, granted.contains(name.as_str()));
        if NodeName::parse(name).ok().filter(|n| i.lab.nodes.contains_key(n)).is_none() {
            d.err(
                "policy",
                FILE,
                line(r),
                field,
                format!("expected a node of inventory/topology.yaml, found `{name}`"),
                "fix the node id",
            );
        }
    }
}

/// One approval rule. `bot`: a Telegram user is granted a node the rule covers, so one bot
/// approval (the bot has one key) may count besides the listed approvers.
fn rule(
    d: &mut Diagnostics,
    r: &S<raw::ApprovalRule>,
    field: &str,
    principals: &BTreeSet<String>,
    bot: bool,
) {
    let required = r.value.required.value;
    let approvers: BTreeSet<&String> = r.value.approvers.iter().map(|a| &a.value).collect();
    let most = approvers.len() + usize::from(bot);
    if let Some(h) = &r.value.humans {
        if h.value > required {
            d.err(
                "policy",
                FILE,
                line(h),
                format!("{field}.humans"),
                format!("expected at most {required} (`required`), found {}", h.value),
                "`humans` says how many of the required approvals must be by a human's key",
            );
        } else if h.value as usize > approvers.len() {
            d.err(
                "policy",
                FILE,
                line(h),
                format!("{field}.humans"),
                format!(
                    "expected at most {} (the number of approvers), found {}",
                    approvers.len(),
                    h.value
                ),
                "add approvers or lower `humans`",
            );
        }
    }
    if required == 0 {
        d.err(
            "policy",
            FILE,
            line(&r.value.required),
            format!("{field}.required"),
            "expected at least 1 approval",
            "every apply needs a human approval",
        );
    } else if required as usize > most {
        d.err(
            "policy",
            FILE,
            line(&r.value.required),
            format!("{field}.required"),
            format!(
                "expected at most {most} (the number of approvers{}), found {required}",
                if bot { ", and one for the Telegram bot's key" } else { "" }
            ),
            "add approvers or lower `required`",
        );
    }
    for a in &r.value.approvers {
        if super::super::is_bot_principal(&a.value) {
            d.err(
                "policy",
                FILE,
                line(a),
                format!("{field}.approvers"),
                format!("expected a human's principal, found the bot principal `{}`", cut(&a.value)),
                "grant a Telegram user under `telegram.users` (its `id`, `nodes` and `changes`), which says what its approvals may count for",
            );
            continue;
        }
        if !principals.contains(&a.value) {
            d.err(
                "policy",
                FILE,
                line(a),
                format!("{field}.approvers"),
                format!(
                    "expected a principal of inventory/allowed_signers, found `{}`",
                    cut(&a.value)
                ),
                "add the approver's key to inventory/allowed_signers",
            );
        }
    }
}

/// `telegram.users`: numeric ids, once each; nodes of the topology; kinds of change homelab
/// knows; and a line of allowed_signers for `telegram:<id>` when the user may approve.
fn telegram(i: &Input, d: &mut Diagnostics, principals: &BTreeSet<String>) {
    let Some(p) = &i.raw.policy else { return };
    let Some(t) = &p.telegram else { return };
    let mut seen = BTreeSet::new();
    for (n, u) in t.value.users.iter().enumerate() {
        let field = format!("telegram.users[{n}]");
        let id = u.value.id.value;
        if id == 0 {
            d.err(
                "policy",
                FILE,
                line(&u.value.id),
                format!("{field}.id"),
                "expected a Telegram user id (a positive number), found 0",
                "ask @userinfobot for your numeric id",
            );
        } else if !seen.insert(id) {
            d.err(
                "policy",
                FILE,
                line(&u.value.id),
                format!("{field}.id"),
                format!("expected each user once, found {id} again"),
                "merge the two entries",
            );
        }
        for node in &u.value.nodes {
            let known =
                NodeName::from_cli(&node.value).ok().filter(|n| i.lab.nodes.contains_key(n));
            if known.is_none() {
                d.err(
                    "policy",
                    FILE,
                    line(node),
                    format!("{field}.nodes"),
                    format!(
                        "expected a node of inventory/topology.yaml, found `{}`",
                        cut(&node.value)
                    ),
                    "fix the node id",
                );
            }
        }
        for c in &u.value.changes {
            if !super::super::CHANGE_KINDS.contains(&c.value.as_str()) {
                d.err(
                    "policy",
                    FILE,
                    line(c),
                    format!("{field}.changes"),
                    format!(
                        "expected one of {}, found `{}`",
                        super::super::CHANGE_KINDS.join(", "),
                        c.value
                    ),
                    "`restart` is an update that writes no file (containers brought back up)",
                );
            }
        }
        let principal = format!("{}{id}", super::super::TELEGRAM_PRINCIPAL);
        let listed = principals.contains(&principal)
            || principals
                .iter()
                .any(|p| super::super::is_bot_principal(p) && (p.contains('*') || p.contains('?')));
        if id != 0 && !u.value.nodes.is_empty() && !u.value.changes.is_empty() && !listed {
            d.err(
                "policy",
                FILE,
                line(&u.value.id),
                format!("{field}.id"),
                format!("expected `{principal}` among the principals of inventory/allowed_signers"),
                format!("add `{principal}` to the bot key's line: `{principal} namespaces=\"homelab-approve\" ssh-ed25519 AAAA…`"),
            );
        }
    }
}

/// Principals named in an allowed-signers file (first field, comma-separated).
fn signer_principals(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(principals_field)
        .flat_map(|p| {
            // Negated entries take a name away; they name no approver.
            p.split(',').filter(|s| !s.starts_with('!')).map(str::to_owned).collect::<Vec<_>>()
        })
        .collect()
}

/// The principals field of an allowed-signers line, as OpenSSH reads it: in double quotes (a
/// principal may hold a space) or up to the first blank.
fn principals_field(line: &str) -> Option<&str> {
    match line.strip_prefix('"') {
        Some(quoted) => quoted.find('"').map(|end| &quoted[..end]),
        None => line.split_whitespace().next(),
    }
}

/// Why `name` is not a branch name Git accepts (`git check-ref-format --branch`'s main rules),
/// so no policy can name a ref that is no branch, or an option (`-…`), to `git`.
fn bad_branch_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("it is empty");
    }
    if name.starts_with('-') {
        return Some("it starts with `-`");
    }
    if name.bytes().any(|b| b.is_ascii_control() || b" ~^:?*[\\".contains(&b)) {
        return Some("it holds a space, a control character or one of `~^:?*[\\`");
    }
    if name.contains("..") || name.contains("@{") || name.contains("//") {
        return Some("it holds `..`, `@{` or `//`");
    }
    if name.starts_with('/') || name.ends_with('/') || name.ends_with('.') || name == "@" {
        return Some("it starts or ends with `/`, ends with `.` or is `@`");
    }
    if name.split('/').any(|c| c.starts_with('.') || c.ends_with(".lock")) {
        return Some("a part of it starts with `.` or ends with `.lock`");
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn quoted_principals_may_hold_spaces_and_negations_name_nobody() {
        let p = super::signer_principals(
            "\"ops team@saturn,!x@y\" ssh-ed25519 AAAA\nowner@saturn ssh-ed25519 AAAA\n",
        );
        let want: Vec<&str> = vec!["ops team@saturn", "owner@saturn"];
        assert_eq!(p.iter().map(String::as_str).collect::<Vec<_>>(), want);
    }
}
