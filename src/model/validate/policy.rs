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

const FILE: &str = "inventory/policy.yaml";

pub(super) fn check(i: &Input, d: &mut Diagnostics) {
    let Some(p) = &i.raw.policy else { return };
    let principals =
        i.raw.allowed_signers.as_ref().map(|s| signer_principals(&s.text)).unwrap_or_default();
    if parse_duration(&p.plan_ttl.value).filter(|d| !d.is_zero()).is_none() {
        d.err(
            "policy",
            FILE,
            line(&p.plan_ttl),
            "plan_ttl",
            format!("expected a duration such as `24h`, found `{}`", p.plan_ttl.value),
            "set how long a plan stays valid",
        );
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
    rule(d, &p.approvals.default, "approvals.default", &principals);
    for (name, r) in &p.approvals.nodes {
        let field = format!("approvals.nodes.{name}");
        rule(d, r, &field, &principals);
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

fn rule(d: &mut Diagnostics, r: &S<raw::ApprovalRule>, field: &str, principals: &BTreeSet<String>) {
    let required = r.value.required.value;
    let approvers: BTreeSet<&String> = r.value.approvers.iter().map(|a| &a.value).collect();
    if required == 0 {
        d.err(
            "policy",
            FILE,
            line(&r.value.required),
            format!("{field}.required"),
            "expected at least 1 approval",
            "every apply needs a human approval",
        );
    } else if required as usize > approvers.len() {
        d.err(
            "policy",
            FILE,
            line(&r.value.required),
            format!("{field}.required"),
            format!(
                "expected at most {} (the number of approvers), found {required}",
                approvers.len()
            ),
            "add approvers or lower `required`",
        );
    }
    for a in &r.value.approvers {
        if !principals.contains(&a.value) {
            d.err(
                "policy",
                FILE,
                line(a),
                format!("{field}.approvers"),
                format!("expected a principal of inventory/allowed_signers, found `{}`", a.value),
                "add the approver's key to inventory/allowed_signers",
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
