//! The naming rule, reported here and nowhere else: node ids, site, role, capability and
//! backup-set names in kebab-case, display names in ALL CAPS, service folders in kebab-case and
//! equal to their contract's `name`, environment variable names, the `node:` field of a host's
//! files, and nothing declared or listed twice.
//!
//! Other families skip what has a broken name instead of reporting it again. No IO here.

use std::collections::BTreeSet;

use super::super::diag::Diagnostics;
use super::super::names::{kebab_problem, NodeName, ServiceName};
use super::super::raw::{line, S};
use super::{contract_file, Input};

pub(super) fn check(i: &Input, d: &mut Diagnostics) {
    topology(i, d);
    contracts(i, d);
    hosts(i, d);
}

fn topology(i: &Input, d: &mut Diagnostics) {
    const FILE: &str = "inventory/topology.yaml";
    let t = i.topology;
    for (name, site) in &t.sites {
        if let Some(p) = kebab_problem(name) {
            d.err(
                "naming",
                FILE,
                line(site),
                format!("sites.{name}"),
                format!("expected {p}, found `{name}`"),
                "rename the site",
            );
        }
    }
    for (id, raw) in &t.nodes {
        let n = &raw.value;
        let field = |f: &str| format!("nodes.{id}.{f}");
        if let Err(p) = NodeName::parse(id) {
            d.err(
                "naming",
                FILE,
                line(raw),
                format!("nodes.{id}"),
                format!("expected a node id in {p}, found `{id}`"),
                format!(
                    "use `{}` as the id and put the capitals in `display_name`",
                    id.to_ascii_lowercase()
                ),
            );
        }
        let upper = id.to_ascii_uppercase();
        if n.display_name.value != upper {
            d.err(
                "naming",
                FILE,
                line(&n.display_name),
                field("display_name"),
                format!(
                    "expected `{upper}` (the id in ALL CAPS), found `{}`",
                    n.display_name.value
                ),
                format!("set `display_name: {upper}`"),
            );
        }
        for role in &n.roles {
            if let Some(p) = kebab_problem(&role.value) {
                d.err(
                    "naming",
                    FILE,
                    line(role),
                    field("roles"),
                    format!("expected a role in {p}, found `{}`", role.value),
                    "write roles in kebab-case",
                );
            }
        }
    }
}

fn contracts(i: &Input, d: &mut Diagnostics) {
    for (dir, rs) in i.raw.services() {
        let file = contract_file(dir);
        let c = &rs.contract;
        if let Err(p) = ServiceName::parse(dir) {
            d.err(
                "naming",
                format!("services/{dir}"),
                None,
                "",
                format!("expected a service name in {p}, found `{dir}`"),
                "rename the folder in kebab-case",
            );
        }
        if c.name.value != dir {
            d.err(
                "naming",
                &file,
                line(&c.name),
                "name",
                format!("expected `{dir}` (the folder's name), found `{}`", c.name.value),
                format!("set `name: {dir}` or rename the folder"),
            );
        }
        let mut seen = BTreeSet::new();
        for (i, e) in c.runtime.env_vars.iter().enumerate() {
            let n = &e.value.name.value;
            let ok = !n.is_empty()
                && !n.as_bytes()[0].is_ascii_digit()
                && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !ok {
                d.err(
                    "naming",
                    &file,
                    line(&e.value.name),
                    format!("runtime.env_vars[{i}].name"),
                    format!(
                        "expected an environment variable name (letters, digits, `_`), found `{n}`"
                    ),
                    "rename the variable",
                );
            }
            if !seen.insert(n.clone()) {
                d.err(
                    "naming",
                    &file,
                    line(&e.value.name),
                    format!("runtime.env_vars[{i}].name"),
                    format!("`{n}` is declared twice"),
                    "declare each variable once",
                );
            }
        }
        for (i, set) in c.backup.sets.iter().enumerate() {
            if let Some(p) = kebab_problem(&set.value.name.value) {
                d.err(
                    "naming",
                    &file,
                    line(&set.value.name),
                    format!("backup.sets[{i}].name"),
                    format!("expected {p}, found `{}`", set.value.name.value),
                    "name backup sets in kebab-case",
                );
            }
        }
    }
}

fn hosts(i: &Input, d: &mut Diagnostics) {
    for (id, host) in &i.raw.hosts {
        let base = format!("hosts/{id}");
        if let Some(caps) = &host.capabilities {
            let caps_file = format!("{base}/capabilities.yaml");
            node_field(d, &caps_file, &caps.node, id);
            for c in &caps.capabilities {
                if let Some(p) = kebab_problem(&c.value) {
                    d.err(
                        "naming",
                        &caps_file,
                        line(c),
                        "capabilities",
                        format!("expected {p}, found `{}`", c.value),
                        "write capability tags in kebab-case",
                    );
                }
            }
        }
        if let Some(hs) = &host.services {
            let svc_file = format!("{base}/services.yaml");
            node_field(d, &svc_file, &hs.node, id);
            let mut seen = BTreeSet::new();
            for (n, s) in hs.services.iter().enumerate() {
                let name = &s.value.name;
                // Only loaded services: an unknown one is `ownership`'s to report.
                let Some(svc) =
                    ServiceName::parse(&name.value).ok().and_then(|n| i.lab.services.get(&n))
                else {
                    continue;
                };
                if !seen.insert(&svc.name) {
                    d.err(
                        "naming",
                        &svc_file,
                        line(name),
                        format!("services[{n}].name"),
                        format!("`{}` is listed twice", svc.name),
                        "list each service once",
                    );
                }
            }
        }
    }
}

fn node_field(d: &mut Diagnostics, file: &str, node: &S<String>, id: &NodeName) {
    if node.value != id.as_str() {
        d.err(
            "naming",
            file,
            line(node),
            "node",
            format!("expected `{id}` (the folder's node), found `{}`", node.value),
            format!("set `node: {id}`"),
        );
    }
}
