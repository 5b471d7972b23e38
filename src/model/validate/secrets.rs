//! No secret value in Git: a variable of `runtime.env_vars` marked secret appears in
//! `env.example` only as a placeholder and never as a literal in a compose file or override;
//! `env.example` and the contract declare the same variables (rule `env-example`: a
//! disagreement there is no leak).
//!
//! Reads the files as written (a secret is in Git whether or not it renders). No IO here.

use std::collections::BTreeMap;

use super::super::diag::Diagnostics;
use super::super::names::ServiceName;
use super::super::raw::line;
use super::super::Source;
use super::{contract_file, is_placeholder, literal_assignment, Input};

pub(super) fn check(i: &Input, d: &mut Diagnostics) {
    // The overrides of each service, in node order, gathered once: asking every node for every
    // service's override was services × nodes (a million lookups at 10,000 services on 100).
    let mut overrides: BTreeMap<&ServiceName, Vec<&Source>> = BTreeMap::new();
    for node in i.lab.nodes.values() {
        for (svc, src) in &node.overrides {
            overrides.entry(svc).or_default().push(src);
        }
    }
    for svc in i.lab.services.values() {
        let Some(raw) = i.raw.service(svc.name.as_str()) else { continue };
        let example = parse_env_example(&svc.env_example.text);
        for (name, (l, value)) in &example {
            match svc.env_vars.iter().find(|e| &e.name == name) {
                // Declarations that disagree are no leak: their own rule, not `secret`.
                None => d.err("env-example", &svc.env_example.path, Some(*l), name.clone(), format!("`{name}` is not declared in services/{}/service.yaml", svc.name), "declare it under `runtime.env_vars` (with `secret: true` if it is one)"),
                Some(e) if e.secret && !is_placeholder(value) => d.err(
                    "secret",
                    &svc.env_example.path,
                    Some(*l),
                    name.clone(),
                    format!("`{name}` is a secret, but env.example gives it a value"),
                    format!("write `{name}=<set in /opt/homelab/config/{}/.env>` and rotate the value that was committed", svc.name),
                ),
                Some(_) => {}
            }
        }
        for (e, spanned) in svc.env_vars.iter().zip(&raw.contract.runtime.env_vars) {
            if !example.contains_key(&e.name) {
                d.err(
                    "env-example",
                    contract_file(svc.name.as_str()),
                    line(&spanned.value.name),
                    "runtime.env_vars",
                    format!("`{}` is not in env.example", e.name),
                    format!("add `{}=` to services/{}/env.example", e.name, svc.name),
                );
            }
        }
        let secrets: Vec<&str> =
            svc.env_vars.iter().filter(|e| e.secret).map(|e| e.name.as_str()).collect();
        let mut files = vec![&svc.compose];
        files.extend(overrides.get(&svc.name).into_iter().flatten());
        for src in files {
            for (n, text) in src.text.lines().enumerate() {
                for name in &secrets {
                    let Some(value) = literal_assignment(text, name) else { continue };
                    if !value.starts_with("${") && !is_placeholder(&value) {
                        d.err(
                            "secret",
                            &src.path,
                            Some(n as u64 + 1),
                            (*name).to_owned(),
                            format!("the secret `{name}` is set to a literal value in Git"),
                            format!("remove it here and put it in /opt/homelab/config/{}/.env on the node (loaded with `env_file`); rotate the committed value", svc.name),
                        );
                    }
                }
            }
        }
    }
}

/// `NAME=value` lines of an env.example, with their line numbers.
pub(super) fn parse_env_example(text: &str) -> BTreeMap<String, (u64, String)> {
    let mut out = BTreeMap::new();
    for (i, l) in text.lines().enumerate() {
        let l = l.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let l = l.strip_prefix("export ").unwrap_or(l);
        let (name, value) = l.split_once('=').unwrap_or((l, ""));
        out.insert(name.trim().to_owned(), (i as u64 + 1, value.trim().to_owned()));
    }
    out
}
