//! Names the containers of a project reach each other by: a host name a compose file writes in
//! a URL (`http://ollama:11434`, `postgres://u@db:5432/x`) or as a variable's `host:port`
//! (`OLLAMA_HOST=ollama:11434`) must be answered by a container of the project: its compose
//! key, its `container_name`, a network alias, a `links` alias or an `extra_hosts` name (not
//! its `hostname`, which Docker's DNS does not answer). The container-name rule renames
//! containers that published projects reach by their old name; a rename that forgets the alias
//! leaves the name unresolved while the containers run and the healthcheck passes (issue 21).
//! Refused here, before a plan.
//!
//! Only where the project's own network decides: a project with a container on another
//! network mode or a network shared with other projects (`external`, `name:`), or that
//! `extends` a service of another file or `include`s one, is left alone, and so are names with
//! a dot (a domain), addresses, `localhost`, and the ids of the homelab's nodes and services.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use super::super::super::diag::Diagnostics;
use super::super::super::load::parse_yaml;
use super::super::super::Service;
use super::Rendered;

/// Checks the rendered compose files `files` of `svc`; `known` holds the names that answer
/// from outside the project (node ids, service names).
pub(super) fn check(
    svc: &Service,
    files: &[&Rendered],
    known: &BTreeSet<String>,
    d: &mut Diagnostics,
) {
    let mut answered: BTreeSet<String> = known.clone();
    answered.insert(svc.name.as_str().to_owned());
    let mut docs = Vec::new();
    for f in files {
        let Ok(doc) = parse_yaml::<Value>(Path::new(f.path), f.text) else { return };
        if !names(&doc, &mut answered) {
            return;
        }
        docs.push(doc);
    }
    for (f, doc) in files.iter().zip(&docs) {
        for (n, l) in f.text.lines().enumerate() {
            if l.trim_start().starts_with('#') {
                continue;
            }
            for host in reached(l) {
                if answered.contains(&host) {
                    continue;
                }
                let keys: Vec<String> =
                    files.iter().flat_map(|f| keys_of(f)).map(|k| format!("`{k}`")).collect();
                // The alias goes on a network the container that reaches it joins.
                let networks = service_at(f.text, n + 1)
                    .and_then(|k| doc.get("services")?.get(k)?.get("networks"));
                let alias = super::alias_snippet(networks, &host);
                d.err(
                    "compose-host",
                    f.path,
                    Some(n as u64 + 1),
                    host.clone(),
                    format!("this line reaches `{host}`, but no container of the project answers to that name (its compose keys: {}; nor a `container_name`, network alias or `links` alias): inside the project, `{host}` does not resolve", keys.join(", ")),
                    format!("when a container was renamed (the container-name rule), keep its old name reachable: add `{alias}` under the compose service that was `{host}` (on each network it joins), or write its compose key here; a host outside the project is written with its domain (`{host}.<domain>`) or its address"),
                );
            }
        }
    }
}

/// The compose service whose block holds line `n` (1-based) of a compose file's text: the
/// nearest key above it at the indentation of the keys under `services:`.
fn service_at(text: &str, n: usize) -> Option<&str> {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.iter().position(|l| l.trim_end() == "services:")?;
    let blank = |l: &&str| l.trim().is_empty() || l.trim_start().starts_with('#');
    let indent = |l: &str| l.len() - l.trim_start_matches(' ').len();
    let child = lines.get(start + 1..)?.iter().find(|l| !blank(l)).map(|l| indent(l))?;
    if child == 0 || n <= start + 1 {
        return None;
    }
    for l in lines.get(start + 1..n)?.iter().rev().filter(|l| !blank(l)) {
        match indent(l) {
            i if i < child => return None,
            i if i == child => {
                let key = l.trim().split(':').next()?.trim_matches(['"', '\'']);
                return (!key.is_empty()).then_some(key);
            }
            _ => {}
        }
    }
    None
}

/// The compose keys of a rendered file, for the message.
fn keys_of(f: &Rendered) -> Vec<String> {
    parse_yaml::<Value>(Path::new(f.path), f.text)
        .ok()
        .and_then(|doc| doc.get("services").and_then(Value::as_object).cloned())
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// Adds the names the containers of `doc` answer to; `false` when the project's own network
/// does not decide (another network mode, a shared network, `extends` of another file) or
/// when it has containers this does not read (`include`).
fn names(doc: &Value, out: &mut BTreeSet<String>) -> bool {
    // Services of an included file are the project's too, but not read here.
    if doc.get("include").is_some() {
        return false;
    }
    if let Some(nets) = doc.get("networks").and_then(Value::as_object) {
        let shared = nets.values().any(|n| {
            n.get("name").is_some() || n.get("external").is_some_and(|e| e.as_bool() != Some(false))
        });
        if shared {
            return false;
        }
    }
    let Some(services) = doc.get("services").and_then(Value::as_object) else { return true };
    for (key, s) in services {
        if s.get("network_mode").is_some()
            || s.get("extends").is_some_and(|e| e.get("file").is_some())
        {
            return false;
        }
        out.insert(key.clone());
        // Not `hostname`: Docker 20.10 (Debian's, on the nodes) resolves a container by its
        // name and aliases, never by the hostname it gives itself.
        if let Some(n) = s.get("container_name").and_then(Value::as_str) {
            out.insert(n.to_owned());
        }
        if let Some(Value::Object(nets)) = s.get("networks") {
            for n in nets.values() {
                let aliases = n.get("aliases").and_then(Value::as_array).into_iter().flatten();
                out.extend(aliases.filter_map(Value::as_str).map(str::to_owned));
            }
        }
        for l in s.get("links").and_then(Value::as_array).into_iter().flatten() {
            if let Some(l) = l.as_str() {
                out.extend(l.split(':').map(str::to_owned));
            }
        }
        match s.get("extra_hosts") {
            Some(Value::Array(hosts)) => {
                for h in hosts.iter().filter_map(Value::as_str) {
                    out.extend(h.split(['=', ':']).next().map(str::to_owned));
                }
            }
            Some(Value::Object(hosts)) => out.extend(hosts.keys().cloned()),
            _ => {}
        }
    }
    true
}

/// The single-label host names `line` reaches: the host of each URL, and the value of an
/// environment-style assignment (`NAME=host:port`, `NAME: host:port`).
fn reached(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("://") {
        let scheme_ok = rest[..at].chars().next_back().is_some_and(|c| c.is_ascii_alphanumeric());
        let after = &rest[at + 3..];
        let end = after.find(['/', '"', '\'', ' ', ',', ')', '?', '#', ']']).unwrap_or(after.len());
        let authority = &after[..end];
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let host = host_port.split(':').next().unwrap_or("");
        if scheme_ok {
            out.extend(label(host));
        }
        rest = &after[end..];
    }
    // `NAME=host:port` or `NAME: host:port`, NAME written as an environment variable's.
    let t = line.trim_start().trim_start_matches("- ").trim_start_matches(['"', '\'']);
    let split = t.split_once('=').or_else(|| t.split_once(": "));
    if let Some((name, value)) = split {
        let env_name = !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        let value = value.trim().trim_matches(['"', '\'']);
        if env_name && !value.contains("://") {
            if let Some((host, port)) = value.split_once(':') {
                if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
                    out.extend(label(host));
                }
            }
        }
    }
    out
}

/// `host` when it is a single DNS label that names a container: not an address, not
/// `localhost`, not a domain, nothing templated.
fn label(host: &str) -> Option<String> {
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && host.bytes().any(|b| b.is_ascii_lowercase())
        && host != "localhost";
    ok.then(|| host.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_read_from_urls_and_host_port_values() {
        assert_eq!(reached("      OLLAMA_BASE_URL: http://ollama:11434"), ["ollama"]);
        assert_eq!(reached("      - OLLAMA_HOST=ollama:11434"), ["ollama"]);
        assert_eq!(reached("      DB: \"postgres://u:p@db:5432/x\""), ["db"]);
        assert_eq!(reached("  test: wget http://127.0.0.1:3000/ && wget http://web/"), ["web"]);
        assert!(reached("    image: redis:7").is_empty());
        assert!(reached("    restart: on-failure:5").is_empty());
        assert!(reached("      URL: http://localhost:80 https://example.com/x").is_empty());
        assert!(reached("      URL: http://{{ node.address }}:3000/").is_empty());
        assert!(reached("      URL: http://$$TARGET/metrics ${HOST}:80").is_empty());
        assert!(reached("    user: \"1000:1000\"").is_empty());
    }

    #[test]
    fn names_come_from_keys_container_names_aliases_links_and_extra_hosts() {
        let doc = serde_json::json!({"services": {
            "ollama-cpu": {"container_name": "starter-ollama-cpu", "networks": {"default": {"aliases": ["ollama"]}}},
            "web": {"hostname": "www", "links": ["db:database"], "extra_hosts": ["gw:10.0.0.1"]},
        }});
        let mut out = BTreeSet::new();
        assert!(names(&doc, &mut out));
        let want = ["database", "db", "gw", "ollama", "ollama-cpu", "starter-ollama-cpu", "web"];
        assert_eq!(out.iter().map(String::as_str).collect::<Vec<_>>(), want);
        let shared =
            serde_json::json!({"services": {"a": {}}, "networks": {"proxy": {"external": true}}});
        assert!(!names(&shared, &mut BTreeSet::new()));
        let host = serde_json::json!({"services": {"a": {"network_mode": "host"}}});
        assert!(!names(&host, &mut BTreeSet::new()));
        let included = serde_json::json!({"include": ["other.yml"], "services": {"a": {}}});
        assert!(!names(&included, &mut BTreeSet::new()));
    }
}
