//! The compose rules on the node: what Compose will really run, as `docker compose config`
//! resolves it there with the node's env file, judged by the rules `validate` applies to the
//! repository. A writable bind whose source lies in the release folder (`release-mount`) or
//! outside the runtime folders of the service and the paths its contract declares
//! (`compose-path`), and a published port that breaks the service's exposure
//! (`exposure-port`), are refused, each traced back to the variable that produced it in the
//! compose files as shipped. Validate cannot see a value only the node's env file holds; this
//! can.
//!
//! Pure: the node's answer comes in as values (`apply` reads it off the validate step), the
//! compose files as text. The rules themselves are the repository's (`paths::declared`,
//! `published`, `exposure`), not copies.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::super::super::diag::{Diagnostic, Diagnostics};
use super::super::super::load::{parse_yaml, OVERRIDE_FILE};
use super::super::super::raw::{self, line};
use super::super::super::{Exposure, Instance};
use super::super::Located;
use super::{exposure, paths, published, variables, RELEASE_COMPOSE};

/// One compose service as the node's Compose resolved it: its `volumes` and `ports` in the
/// long syntax `docker compose config --format json` prints, and whether it runs on the host
/// network (where published ports are discarded).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ResolvedService {
    pub volumes: Vec<Value>,
    pub ports: Vec<Value>,
    pub host_network: bool,
}

/// What the node's check needs beyond the resolved configuration.
pub struct OnNode<'a> {
    pub inst: &'a Instance,
    /// The node's runtime root.
    pub root: &'a str,
    /// The service's exposure on the node.
    pub exposure: Exposure,
    /// The node's LAN address, as the plan carries it: a `lan` service publishes on it, and on
    /// no address or every address only when the node has none.
    pub lan_ip: Option<std::net::IpAddr>,
    /// The paths the contract declares beyond the runtime folders: `host_paths` and
    /// `persistence.paths` (absolute, or relative to the root).
    pub declared: &'a [String],
    /// The folders releases of the service live in (every release, and the live link).
    pub releases: &'a [String],
    /// The node's env file of the service, where its variables are set.
    pub env_file: &'a str,
    /// The compose files as shipped, by their name in the release (`docker-compose.yml`,
    /// `docker-compose.override.yml`), rendered but not interpolated.
    pub files: &'a [(&'a str, &'a str)],
}

/// One entry of `volumes:` or `ports:` as the shipped compose files write it.
struct Written {
    at: Located,
    /// As written: a bind's source, or a port's whole entry.
    text: String,
    /// A volume's target, a port's container port (as written).
    target: String,
    /// The variables the entry's text interpolates.
    vars: Vec<String>,
}

/// The problems of the resolved configuration `resolved` (compose key → service), sorted.
pub fn on_node(on: &OnNode, resolved: &BTreeMap<String, ResolvedService>) -> Vec<Diagnostic> {
    let (volumes, ports) = written(on);
    let svc = on.inst.service.as_str();
    let root = on.root.trim_end_matches('/');
    let mut d = Diagnostics::default();
    for (key, s) in resolved {
        for v in &s.volumes {
            let Some((source, read_only)) = paths::bind_mount(v) else { continue };
            if read_only {
                continue;
            }
            let target = v.get("target").and_then(Value::as_str).unwrap_or("").to_owned();
            // Compose resolves every bind source to an absolute path; one that is not (or
            // climbs above `/`) is judged as lying in the release folder it is relative to.
            let abs = absolute(&source);
            let in_release = match &abs {
                Some(abs) => on.releases.iter().any(|r| paths::under(abs, r)),
                None => true,
            };
            let abs = abs.unwrap_or(source.clone());
            let declared = paths::declared(&abs, root, svc, on.declared);
            let w = volumes
                .get(key.as_str())
                .and_then(|ws| ws.iter().find(|w| same_target(&w.target, &target)));
            // `~` is the home of whoever runs Compose: a written `~/…` the contract lists (as
            // the repository's check reads it) is the path it declares.
            let home = w.is_some_and(|w| {
                w.text.starts_with('~') && on.declared.iter().any(|h| paths::under(&w.text, h))
            });
            if !in_release && (declared || home) {
                continue;
            }
            let at = w.map(|w| w.at.clone()).unwrap_or_else(|| Located {
                file: shown(on, RELEASE_COMPOSE),
                line: None,
                field: format!("services.{key}.volumes"),
            });
            let through = through(on, w, &abs);
            let data = format!("{root}/data/{svc}/");
            let (rule, message, fix) = if in_release {
                (
                    "release-mount",
                    format!("on the node, `{key}` mounts `{abs}` writable at `{target}`{through}: that is inside the release folder, which is replaced on every update: what the container writes there stays behind in the old release, and the next version starts without it"),
                    match w.map(|w| &w.vars[..]).unwrap_or_default() {
                        [] => "use `{{ data_dir }}` for what the container writes, or mount it read-only (`:ro`)".to_owned(),
                        vars => format!("set {} in {} on the node to a folder under {data} (the service's data folder, kept across updates and rollbacks), as an absolute path", said(vars), on.env_file),
                    },
                )
            } else {
                (
                    "compose-path",
                    format!("on the node, `{key}` mounts `{abs}` writable at `{target}`{through}: a host path outside {root}/config/{svc}/, {data} and {root}/logs/{svc}/, and services/{svc}/service.yaml declares it neither in `host_paths` nor in `persistence.paths`"),
                    match w.map(|w| &w.vars[..]).unwrap_or_default() {
                        [] => format!("list `{abs}` under `host_paths` in services/{svc}/service.yaml so the host path is reviewed, or use `{{{{ data_dir }}}}`"),
                        vars => format!("set {} in {} on the node to a folder under {data}, or list `{abs}` under `host_paths` in services/{svc}/service.yaml so the host path is reviewed", said(vars), on.env_file),
                    },
                )
            };
            d.err(rule, &at.file, at.line, at.field, message, fix);
        }
        if s.host_network {
            continue;
        }
        for p in &s.ports {
            let container = p.get("target").map(|t| match t {
                Value::String(s) => s.clone(),
                t => t.to_string(),
            });
            // The entry that wrote it: one with a variable and this container port, else the
            // one written with this container port, else the only one with a variable (whose
            // container port a variable may hide: `${WEB_PORT-:8080:8000}`).
            let w = ports.get(key.as_str()).and_then(|ws| {
                let by_target = |w: &&Written| container.as_deref() == Some(w.target.as_str());
                let mut with_vars = ws.iter().filter(|w| !w.vars.is_empty());
                ws.iter()
                    .filter(|w| !w.vars.is_empty())
                    .find(by_target)
                    .or_else(|| ws.iter().find(by_target))
                    .or_else(|| match (with_vars.next(), with_vars.next()) {
                        (Some(one), None) => Some(one),
                        _ => None,
                    })
            });
            let at = w.map(|w| w.at.clone()).unwrap_or_else(|| Located {
                file: shown(on, RELEASE_COMPOSE),
                line: None,
                field: format!("services.{key}.ports"),
            });
            let Some(published) = published(p, at) else { continue };
            let mut found = Diagnostics::default();
            exposure(on.inst, on.exposure, on.lan_ip, &published, &mut found);
            for mut diag in found.into_sorted() {
                let resolved = match &published.host_ip {
                    Some(ip) => format!("{ip}:{}", published.range()),
                    None => published.range(),
                };
                diag.message = format!(
                    "on the node, {}{}",
                    diag.message,
                    through(on, w, &format!("{resolved}/{}", published.protocol))
                );
                if let Some(vars) = w.map(|w| &w.vars[..]).filter(|v| !v.is_empty()) {
                    diag.fix = format!(
                        "set {} in {} on the node to a value that fits the exposure; or {}",
                        said(vars),
                        on.env_file,
                        diag.fix
                    );
                }
                d.push(diag);
            }
        }
    }
    d.into_sorted()
}

/// `path`, absolute and normalized; `None` for a relative path or one that climbs above `/`.
fn absolute(path: &str) -> Option<String> {
    path.starts_with('/').then(|| paths::absolute(path)).flatten()
}

fn same_target(written: &str, resolved: &str) -> bool {
    let w = written.trim_end_matches('/');
    !w.is_empty() && w == resolved.trim_end_matches('/')
}

/// The repository path of a compose file shipped as `release` (as diagnostics show it).
fn shown(on: &OnNode, release: &str) -> String {
    let svc = on.inst.service.as_str();
    if release == OVERRIDE_FILE {
        format!("hosts/{}/runtime/{svc}/{OVERRIDE_FILE}", on.inst.node)
    } else {
        format!("services/{svc}/{release}")
    }
}

/// What a message adds about where a resolved value came from: the entry as written and the
/// variables that made it, or that it is written out.
fn through(on: &OnNode, w: Option<&Written>, value: &str) -> String {
    match w {
        Some(w) if !w.vars.is_empty() => format!(
            " (`{}` resolves to `{value}` there, through {} from {} or the default the file gives)",
            w.text,
            said(&w.vars),
            on.env_file
        ),
        Some(w) => format!(" (written `{}`)", w.text),
        None => String::new(),
    }
}

/// `` `A` `` or `` `A`, `B` ``.
fn said(vars: &[String]) -> String {
    vars.iter().map(|v| format!("`{v}`")).collect::<Vec<_>>().join(", ")
}

type ByKey = BTreeMap<String, Vec<Written>>;

/// The bind mounts and published ports the shipped compose files write, by compose key.
fn written(on: &OnNode) -> (ByKey, ByKey) {
    let (mut volumes, mut ports) = (ByKey::new(), ByKey::new());
    for (release, text) in on.files {
        let file = shown(on, release);
        // A file that does not parse was refused at validate; here it only names less.
        let Ok(c) = parse_yaml::<raw::Compose>(Path::new(release), text) else { continue };
        for (key, cs) in &c.services {
            for (i, v) in cs.value.volumes.iter().enumerate() {
                let (source, target) = match &v.value {
                    Value::String(s) => {
                        let parts = split_short(s);
                        (parts.first().copied().unwrap_or(""), parts.get(1).copied().unwrap_or(""))
                    }
                    Value::Object(m) => (
                        m.get("source").and_then(Value::as_str).unwrap_or(""),
                        m.get("target").and_then(Value::as_str).unwrap_or(""),
                    ),
                    _ => continue,
                };
                volumes.entry(key.clone()).or_default().push(Written {
                    at: Located {
                        file: file.clone(),
                        line: line(v),
                        field: format!("services.{key}.volumes[{i}]"),
                    },
                    text: source.to_owned(),
                    target: target.to_owned(),
                    vars: variables::names(source),
                });
            }
            for (i, p) in cs.value.ports.iter().enumerate() {
                let (text, target) = match &p.value {
                    Value::String(s) => {
                        let spec = s.rsplit_once('/').map_or(s.as_str(), |(spec, _)| spec);
                        let target = split_short(spec).last().copied().unwrap_or("").to_owned();
                        (s.clone(), target)
                    }
                    Value::Object(m) => {
                        let target = match m.get("target") {
                            Some(Value::String(s)) => s.clone(),
                            Some(t) => t.to_string(),
                            None => String::new(),
                        };
                        (p.value.to_string(), target)
                    }
                    v => (v.to_string(), String::new()),
                };
                ports.entry(key.clone()).or_default().push(Written {
                    at: Located {
                        file: file.clone(),
                        line: line(p),
                        field: format!("services.{key}.ports[{i}]"),
                    },
                    vars: variables::names(&text),
                    text,
                    target,
                });
            }
        }
    }
    (volumes, ports)
}

/// The parts of a short-syntax entry (`source:target:mode`, `ip:host:container`), split at the
/// colons outside `${…}` (a default may hold colons of its own).
fn split_short(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ':' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{NodeName, ServiceName};
    use serde_json::json;

    const COMPOSE: &str = "services:\n  immich:\n    image: x\n    volumes:\n      - ${UPLOAD_LOCATION:-/opt/homelab/data/immich/library}:/data\n      - ./conf:/conf:ro\n      - type: bind\n        source: ${BACKUP}\n        target: /backup\n      - /opt/homelab/data/immich/db:/db\n      - ~/.config/x:/home\n    ports:\n      - \"${WEB_PORT:-127.0.0.1:2283}:2283\"\n      - \"10.0.0.5:9000:9000\"\n";

    fn bind(source: &str, target: &str, ro: bool) -> Value {
        json!({"type": "bind", "source": source, "target": target, "read_only": ro})
    }

    fn port(ip: Option<&str>, published: &str, target: u16) -> Value {
        let mut p =
            json!({"mode": "ingress", "target": target, "published": published, "protocol": "tcp"});
        if let Some(ip) = ip {
            p["host_ip"] = json!(ip);
        }
        p
    }

    fn check(exposure: Exposure, s: ResolvedService) -> Vec<Diagnostic> {
        check_in(COMPOSE, exposure, s)
    }

    fn check_in(compose: &str, exposure: Exposure, s: ResolvedService) -> Vec<Diagnostic> {
        check_on(compose, exposure, None, s)
    }

    /// On a node whose LAN address is `lan_ip`.
    fn check_on(
        compose: &str,
        exposure: Exposure,
        lan_ip: Option<std::net::IpAddr>,
        s: ResolvedService,
    ) -> Vec<Diagnostic> {
        let inst = Instance {
            service: ServiceName::parse("immich").unwrap(),
            node: NodeName::parse("alpha").unwrap(),
        };
        let declared =
            vec!["/srv/photos".to_owned(), "data/immich".to_owned(), "~/.config".to_owned()];
        let releases = vec!["/opt/homelab/state/releases/immich".to_owned()];
        let on = OnNode {
            inst: &inst,
            root: "/opt/homelab",
            exposure,
            lan_ip,
            declared: &declared,
            releases: &releases,
            env_file: "/opt/homelab/config/immich/.env",
            files: &[("docker-compose.yml", compose)],
        };
        on_node(&on, &BTreeMap::from([("immich".to_owned(), s)]))
    }

    #[test]
    fn a_writable_bind_a_variable_puts_in_the_release_folder_is_refused_naming_it() {
        let found = check(
            Exposure::Lan,
            ResolvedService {
                volumes: vec![
                    bind("/opt/homelab/state/releases/immich/p1/library", "/data", false),
                    // Read-only in the release: shipped configuration, as it should be.
                    bind("/opt/homelab/state/releases/immich/p1/conf", "/conf", true),
                    bind("/opt/homelab/data/immich/db", "/db", false),
                ],
                ..Default::default()
            },
        );
        assert_eq!(found.len(), 1, "{found:?}");
        let d = &found[0];
        assert_eq!(d.rule, "release-mount");
        assert_eq!(d.file, "services/immich/docker-compose.yml");
        assert_eq!(d.line, Some(5));
        assert_eq!(d.field, "services.immich.volumes[0]");
        assert!(d.message.contains("`immich` mounts `/opt/homelab/state/releases/immich/p1/library` writable at `/data`"), "{}", d.message);
        assert!(
            d.message.contains("through `UPLOAD_LOCATION` from /opt/homelab/config/immich/.env"),
            "{}",
            d.message
        );
        assert!(d.fix.starts_with("set `UPLOAD_LOCATION` in /opt/homelab/config/immich/.env on the node to a folder under /opt/homelab/data/immich/"), "{}", d.fix);
    }

    #[test]
    fn a_writable_bind_outside_what_the_contract_declares_is_refused_and_declared_ones_pass() {
        let found = check(
            Exposure::Lan,
            ResolvedService {
                volumes: vec![
                    bind("/mnt/elsewhere", "/backup", false),
                    bind("/srv/photos/2026", "/data", false),
                    bind("/root/.config/x", "/home", false),
                    bind("/opt/homelab/data/immich/library/../../other/x", "/db", false),
                    json!({"type": "volume", "source": "db", "target": "/v"}),
                ],
                ..Default::default()
            },
        );
        let said: Vec<(&str, Option<u64>, &str)> =
            found.iter().map(|d| (d.rule, d.line, d.field.as_str())).collect();
        assert_eq!(
            said,
            [
                ("compose-path", Some(7), "services.immich.volumes[2]"),
                ("compose-path", Some(10), "services.immich.volumes[3]"),
            ],
            "{found:#?}"
        );
        assert!(found[0].message.contains("`/mnt/elsewhere`"), "{}", found[0].message);
        assert!(found[0].message.contains("through `BACKUP`"), "{}", found[0].message);
        assert!(found[1].message.contains("`/opt/homelab/data/other/x`"), "{}", found[1].message);
        assert!(found[1].message.contains("(written `/opt/homelab/data/immich/db`)"));
        assert!(found[1].fix.starts_with("list `/opt/homelab/data/other/x` under `host_paths`"));
    }

    #[test]
    fn a_port_a_variable_publishes_on_every_address_breaks_a_lan_exposure() {
        let ports = vec![port(None, "2283", 2283), port(Some("10.0.0.5"), "9000", 9000)];
        let found =
            check(Exposure::Lan, ResolvedService { ports: ports.clone(), ..Default::default() });
        assert_eq!(found.len(), 1, "{found:#?}");
        let d = &found[0];
        assert_eq!(
            (d.rule, d.line, d.field.as_str()),
            ("exposure-port", Some(13), "services.immich.ports[0]")
        );
        assert!(d.message.starts_with("on the node, publishes host port 2283"), "{}", d.message);
        assert!(
            d.message.contains("resolves to `2283/tcp` there, through `WEB_PORT`"),
            "{}",
            d.message
        );
        assert!(
            d.fix.starts_with("set `WEB_PORT` in /opt/homelab/config/immich/.env"),
            "{}",
            d.fix
        );
        // Internal: nothing is published; on the host network, ports are discarded.
        assert_eq!(
            check(
                Exposure::Internal,
                ResolvedService { ports: ports.clone(), ..Default::default() }
            )
            .len(),
            2
        );
        let host = ResolvedService { ports, host_network: true, ..Default::default() };
        assert!(check(Exposure::Internal, host).is_empty());
        let tailnet =
            ResolvedService { ports: vec![port(None, "2283", 2283)], ..Default::default() };
        assert!(check(Exposure::Tailnet, tailnet).is_empty());
    }

    /// Issue 20: on a node with a LAN address, a `lan` service publishes there; what Compose
    /// resolves to every address (a variable's `0.0.0.0`, or no address) is refused, naming
    /// `{{ lan_ip }}`, and the address itself passes.
    #[test]
    fn on_a_node_with_a_lan_address_a_lan_port_publishes_there_only() {
        let compose = "services:\n  immich:\n    ports:\n      - \"192.168.1.20:9000:9000\"\n      - ${WEB_PORT:-0.0.0.0:8080}:8000\n      - \"10.0.0.5:9001:9001\"\n";
        let ports = vec![
            port(Some("192.168.1.20"), "9000", 9000),
            port(Some("0.0.0.0"), "8080", 8000),
            port(Some("10.0.0.5"), "9001", 9001),
        ];
        let lan = Some("192.168.1.20".parse().unwrap());
        let resolved = ResolvedService { ports: ports.clone(), ..Default::default() };
        let found = check_on(compose, Exposure::Lan, lan, resolved.clone());
        let said: Vec<(&str, Option<u64>)> = found.iter().map(|d| (d.rule, d.line)).collect();
        assert_eq!(said, [("exposure-port", Some(5))], "{found:#?}");
        assert!(
            found[0].message.contains("whose LAN address is 192.168.1.20"),
            "{}",
            found[0].message
        );
        assert!(found[0].message.contains("through `WEB_PORT`"), "{}", found[0].message);
        assert!(found[0].fix.contains("{{ lan_ip }}:8080:<container port>"), "{}", found[0].fix);
        // Without a LAN address, `0.0.0.0` is a choice written out, as before.
        assert!(check_on(compose, Exposure::Lan, None, resolved).is_empty());
        let bare = ResolvedService { ports: vec![port(None, "8080", 8000)], ..Default::default() };
        assert_eq!(check_on(compose, Exposure::Lan, lan, bare).len(), 1);
    }

    #[test]
    fn a_port_whose_whole_entry_is_a_variable_is_traced_to_it_and_literal_ones_to_themselves() {
        let compose = "services:\n  immich:\n    ports:\n      - \"0.0.0.0:9000:9000\"\n      - ${WEB_PORT-:8080:8000}\n      - \"9001:9001\"\n";
        let ports = vec![port(None, "8080", 8000), port(None, "9001", 9001)];
        let found =
            check_in(compose, Exposure::Lan, ResolvedService { ports, ..Default::default() });
        let said: Vec<(Option<u64>, &str)> =
            found.iter().map(|d| (d.line, d.field.as_str())).collect();
        assert_eq!(
            said,
            [(Some(5), "services.immich.ports[1]"), (Some(6), "services.immich.ports[2]")]
        );
        assert!(found[0].message.contains("through `WEB_PORT`"), "{}", found[0].message);
        assert!(found[1].message.contains("(written `9001:9001`)"), "{}", found[1].message);
    }

    #[test]
    fn short_entries_split_outside_variables() {
        assert_eq!(split_short("${A:-/x:y}:/data:ro"), ["${A:-/x:y}", "/data", "ro"]);
        assert_eq!(split_short("127.0.0.1:80:8080"), ["127.0.0.1", "80", "8080"]);
        assert_eq!(split_short("${P-:80:8000}"), ["${P-:80:8000}"]);
    }
}
