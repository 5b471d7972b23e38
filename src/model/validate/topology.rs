//! The rules of `inventory/topology.yaml` beyond naming: the mesh, site uplinks, each node's
//! site, SSH address and user, and the absolute paths a node uses.
//!
//! Nodes with a broken id are still checked here (their fields are independent of the id).
//! No IO here.

use super::super::diag::Diagnostics;
use super::super::raw::{line, S};
use super::Input;

const FILE: &str = "inventory/topology.yaml";
const UPLINKS: [&str; 5] = ["fiber", "cable", "dsl", "lte", "other"];

pub(super) fn check(i: &Input, d: &mut Diagnostics) {
    let t = i.topology;
    if t.mesh.value != "tailscale" {
        d.err(
            "topology",
            FILE,
            line(&t.mesh),
            "mesh",
            format!("expected `tailscale`, found `{}`", t.mesh.value),
            "every node is reached over the Tailscale mesh: set `mesh: tailscale`",
        );
    }
    if let Some(r) = &t.runtime_root {
        absolute_path(d, r, "runtime_root");
    }
    if let Some(b) = &t.backup {
        backup_target(d, &b.value, "backup");
    }
    for (name, site) in &t.sites {
        if !UPLINKS.contains(&site.value.uplink.value.as_str()) {
            d.err(
                "topology",
                FILE,
                line(&site.value.uplink),
                format!("sites.{name}.uplink"),
                format!(
                    "expected one of {}, found `{}`",
                    UPLINKS.join(", "),
                    site.value.uplink.value
                ),
                "name the kind of uplink the site has",
            );
        }
    }
    for (id, raw) in &t.nodes {
        let n = &raw.value;
        let field = |f: &str| format!("nodes.{id}.{f}");
        if !t.sites.contains_key(&n.site.value) {
            let known: Vec<_> = t.sites.keys().map(String::as_str).collect();
            d.err(
                "topology",
                FILE,
                line(&n.site),
                field("site"),
                format!(
                    "expected one of the sites ({}), found `{}`",
                    known.join(", "),
                    n.site.value
                ),
                "declare the site under `sites:` or fix the name",
            );
        }
        if n.ssh.address.value.trim().is_empty()
            || n.ssh.address.value.starts_with('-')
            || n.ssh.address.value.contains(char::is_whitespace)
        {
            d.err(
                "topology",
                FILE,
                line(&n.ssh.address),
                field("ssh.address"),
                format!("expected a host name or IP address, found `{}`", n.ssh.address.value),
                "set the node's address on the mesh",
            );
        }
        if let Some(p) = user_problem(&n.ssh.user.value) {
            d.err(
                "topology",
                FILE,
                line(&n.ssh.user),
                field("ssh.user"),
                format!("expected {p}, found `{}`", n.ssh.user.value),
                "set a plain Unix user name",
            );
        }
        if let Some(r) = &n.runtime_root {
            absolute_path(d, r, &field("runtime_root"));
        }
        if let Some(b) = &n.backup {
            backup_target(d, &b.value, &field("backup"));
        }
        if let Some(m) = &n.snapshot_min_free {
            if m.value > 90 {
                d.err(
                    "topology",
                    FILE,
                    line(m),
                    field("snapshot_min_free"),
                    format!("expected a percentage from 0 to 90, found {}", m.value),
                    "the share of the disk a snapshot before a change must leave free (default 10)",
                );
            }
        }
        if let Some(s) = &n.docker_socket {
            absolute_path(d, s, &field("docker_socket"));
        }
        if let Some(a) = &n.lan_address {
            if let Err(expected) = super::super::build::lan_address(&a.value) {
                d.err(
                    "topology",
                    FILE,
                    line(a),
                    field("lan_address"),
                    format!("expected {expected}, found `{}`", crate::quote::cut(&a.value)),
                    "write the address the node has on its LAN (`lan_address: 192.168.1.20`), or leave `lan_address` out",
                );
            }
        }
    }
}

/// A path that reaches remote commands: absolute, no `..`, and only characters that need no
/// quoting care.
fn absolute_path(d: &mut Diagnostics, r: &S<String>, field: &str) {
    let ok = r.value.starts_with('/')
        && !r.value.split('/').any(|c| c == ".." || c == ".")
        && r.value.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+@,=~ ".contains(c));
    if !ok {
        d.err(
            "topology",
            FILE,
            line(r),
            field,
            format!(
                "expected an absolute path of letters, digits, spaces and `/._-+@,=~`, found `{}`",
                r.value
            ),
            "use a plain absolute path such as `/opt/homelab`",
        );
    }
}

fn user_problem(user: &str) -> Option<&'static str> {
    let ok = !user.is_empty()
        && user.len() <= 32
        && (user.as_bytes()[0].is_ascii_lowercase() || user.as_bytes()[0] == b'_')
        && user
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    (!ok).then_some("a Unix user name (lowercase letters, digits, `_`, `-`)")
}

/// A restic repository and its options reach a command on the node: one line each, options as
/// `key=value`.
fn backup_target(d: &mut Diagnostics, b: &super::super::raw::BackupTarget, field: &str) {
    let r = &b.repository;
    if r.value.trim().is_empty() || r.value.chars().any(char::is_control) {
        d.err(
            "topology",
            FILE,
            line(r),
            format!("{field}.repository"),
            format!("expected a restic repository, found `{}`", crate::quote::cut(&r.value)),
            "a path on the node (`/srv/restic`) or `sftp:user@host:/path`, as `restic -r` takes it",
        );
    }
    for (i, o) in b.options.iter().enumerate() {
        let ok = o.value.split_once('=').is_some_and(|(k, _)| {
            !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_')
        }) && !o.value.chars().any(char::is_control);
        if !ok {
            d.err(
                "topology",
                FILE,
                line(o),
                format!("{field}.options[{i}]"),
                format!("expected `key=value`, found `{}`", crate::quote::cut(&o.value)),
                "restic's extended options, as `-o` takes them (e.g. `sftp.command=ssh saturn -s sftp`)",
            );
        }
    }
}
