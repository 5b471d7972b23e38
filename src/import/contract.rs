//! The four files import writes beside the compose file: `service.yaml` (the contract, from
//! what `compose::transform` found), `env.example` (names only), `healthcheck.sh` (from the
//! compose healthchecks) and `README.md` (where it came from, every edit, what the node
//! needs). Pure text: no IO here.

use super::compose::{Output, Timing, RESTART};
use crate::model::names::kebab_problem;
use crate::model::Exposure;

/// What the texts are about.
pub struct About<'a> {
    pub service: &'a str,
    pub node: &'a str,
    /// The node's runtime root (`/opt/homelab`).
    pub root: &'a str,
    /// The project folder's name, as the files say where they came from.
    pub source: &'a str,
}

/// A YAML double-quoted string (JSON's escapes are YAML's).
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

pub fn service_yaml(a: &About, o: &Output) -> String {
    let svc = a.service;
    let exposure = o.exposure.unwrap_or(Exposure::Internal).as_str();
    let mut s = format!(
        "# Written by `homelab import` from `{}`; README.md lists every edit it made.\nname: {svc}\ndescription: {}\nowner_node: {}\nexposure: {exposure}\n",
        a.source,
        q(&format!("{} (imported from {})", svc, a.source)),
        a.node
    );
    if o.dependencies.is_empty() {
        s.push_str("dependencies: []\n");
    } else {
        s.push_str("dependencies:\n");
        for d in &o.dependencies {
            s.push_str(&format!("  - service: {d}\n"));
        }
    }
    s.push_str(&format!("restart_policy: {RESTART}\n"));
    let h = healthcheck(&o.timing);
    s.push_str(&format!(
        "healthcheck:\n  interval: {}\n  timeout: {}\n  retries: {}\n",
        h.interval.as_deref().unwrap_or("10s"),
        h.timeout.as_deref().unwrap_or("5s"),
        h.retries.unwrap_or(3)
    ));
    if let Some(p) = &h.start_period {
        s.push_str(&format!("  start_period: {p}\n"));
    }
    let mut paths = Vec::new();
    if !o.data.is_empty() {
        paths.push(format!("data/{svc}"));
    }
    if o.uses_config {
        paths.push(format!("config/{svc}"));
    }
    s.push_str(&format!("persistence:\n  paths: [{}]\n", paths.join(", ")));
    if o.variables.is_empty() {
        s.push_str("runtime:\n  env_vars: []\n");
    } else {
        s.push_str("runtime:\n  env_vars:\n");
        for v in &o.variables {
            s.push_str(&format!(
                "    - name: {}\n      secret: {}\n      required: {}\n",
                v.name, v.secret, v.required
            ));
        }
    }
    let sets = backup_sets(svc, o);
    if !sets.is_empty() {
        s.push_str("backup:\n  sets:\n");
        for (name, paths) in sets {
            s.push_str(&format!(
                "    - name: {name}\n      paths: [{}]\n      critical: true\n",
                paths.join(", ")
            ));
        }
    }
    if !o.host_paths.is_empty() {
        s.push_str("host_paths:\n");
        for p in &o.host_paths {
            s.push_str(&format!("  - {}\n", q(p)));
        }
    }
    if !o.external_networks.is_empty() {
        // The compose file marks them `external: true`: homelab creates them on the node.
        s.push_str("networks:\n");
        for n in &o.external_networks {
            s.push_str(&format!("  - {}\n", q(n)));
        }
    }
    s
}

/// The backup set of each database: its name (kebab-case, `<svc>-<key>`) and its folders
/// relative to the runtime root.
pub fn backup_sets(svc: &str, o: &Output) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for (key, dirs) in &o.backups {
        let k = kebab(key);
        let mut name = if k.starts_with(&format!("{svc}-")) || k == svc {
            k.clone()
        } else {
            format!("{svc}-{k}")
        };
        if kebab_problem(&name).is_some() {
            name = format!("{svc}-db");
        }
        while out.iter().any(|(n, _)| *n == name) {
            name.push_str("-2");
        }
        out.push((name, dirs.iter().map(|d| format!("data/{svc}/{d}")).collect()));
    }
    out
}

fn kebab(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_owned()
}

/// A Go duration (`1m30s`, `500ms`) in whole seconds, rounded up; `None` when unparsable.
pub fn seconds(d: &str) -> Option<u64> {
    let mut total_ms: u64 = 0;
    let mut rest = d.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n_end = rest.find(|c: char| !c.is_ascii_digit())?;
        let n: u64 = rest[..n_end].parse().ok()?;
        rest = &rest[n_end..];
        let u_end = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let ms = match &rest[..u_end] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "us" | "µs" | "ns" => 0,
            _ => return None,
        };
        total_ms = total_ms.checked_add(n.checked_mul(ms)?)?;
        rest = &rest[u_end..];
    }
    Some(total_ms.div_ceil(1000))
}

/// Seconds as homelab writes a duration: one unit, a whole number.
fn duration(secs: u64) -> String {
    if secs > 0 && secs % 3600 == 0 {
        format!("{}h", secs / 3600)
    } else if secs > 0 && secs % 60 == 0 {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// The contract's healthcheck from the compose one: its timings in homelab's units, a timeout
/// no longer than the interval, 3 to 100 tries (the script reads Docker's verdict, which
/// needs an interval or two after a start).
pub fn healthcheck(t: &Timing) -> Timing {
    let interval = t.interval.as_deref().and_then(seconds).unwrap_or(10).max(1);
    let timeout = t.timeout.as_deref().and_then(seconds).unwrap_or(5).clamp(1, interval);
    Timing {
        interval: Some(duration(interval)),
        timeout: Some(duration(timeout)),
        retries: Some(t.retries.unwrap_or(3).clamp(3, 100)),
        start_period: t.start_period.as_deref().and_then(seconds).map(duration),
    }
}

pub fn env_example(a: &About, o: &Output) -> String {
    let mut s = format!(
        "# The variables of {}, written by `homelab import`: names only. Their values go in\n# {}/config/{}/.env on {} (secrets there only, never here).\n",
        a.service,
        a.root.trim_end_matches('/'),
        a.service,
        a.node
    );
    for v in &o.variables {
        s.push_str(&format!("{}=\n", v.name));
    }
    s
}

pub fn healthcheck_sh(a: &About, o: &Output) -> String {
    let svc = a.service;
    let running: Vec<&str> =
        o.containers.iter().filter(|c| !c.one_shot).map(|c| c.name.as_str()).collect();
    let healthy: Vec<&str> = o
        .containers
        .iter()
        .filter(|c| !c.one_shot && c.healthcheck)
        .map(|c| c.name.as_str())
        .collect();
    let mut s = format!(
        "#!/bin/sh\n# Written by `homelab import` from the project's compose healthchecks: healthy when every\n# long-running container of {svc} runs and Docker reports each one that has a healthcheck\n# healthy. Replace it with a check of what the service does when you can.\nset -u\nfail() {{ echo \"unhealthy: {svc}: $*\"; exit 1; }}\n"
    );
    if !running.is_empty() {
        s.push_str(&format!(
            "for c in {}; do\n  state=$(docker inspect --format '{{{{.State.Status}}}}' \"$c\" 2>&1) || fail \"$c: $state\"\n  [ \"$state\" = running ] || fail \"$c is $state\"\ndone\n",
            running.join(" ")
        ));
    }
    if !healthy.is_empty() {
        s.push_str(&format!(
            "for c in {}; do\n  health=$(docker inspect --format '{{{{.State.Health.Status}}}}' \"$c\" 2>&1) || fail \"$c: $health\"\n  [ \"$health\" = healthy ] || fail \"$c is $health\"\ndone\n",
            healthy.join(" ")
        ));
    }
    // A renamed container answers to the names its users reach it by (issue 21: the starter
    // kit's Ollama ran healthy under its new name while `ollama` resolved nowhere).
    // Only names Docker takes for a container reach the script (no quoting needed there).
    let plain = |n: &str| {
        !n.is_empty()
            && n.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    for c in o.containers.iter().filter(|c| !c.one_shot && plain(&c.name)) {
        let aliases: Vec<&str> =
            c.aliases.iter().map(String::as_str).filter(|a| plain(a)).collect();
        if aliases.is_empty() {
            continue;
        }
        s.push_str(&format!(
            "# {name} answers to the names the others reach it by (network aliases).\nnames=$(docker inspect --format '{{{{range .NetworkSettings.Networks}}}}{{{{range .Aliases}}}}{{{{.}}}} {{{{end}}}}{{{{end}}}}' {name} 2>&1) || fail \"{name}: $names\"\nfor a in {aliases}; do\n  case \" $names \" in *\" $a \"*) ;; *) fail \"{name} does not answer to $a, the name others in {svc} reach it by\" ;; esac\ndone\n",
            name = c.name,
            aliases = aliases.join(" "),
        ));
    }
    s.push_str(&format!("echo \"healthy: {svc}\"\n"));
    s
}

pub fn readme(a: &About, o: &Output, copied: &[String]) -> String {
    let svc = a.service;
    let root = a.root.trim_end_matches('/');
    let mut s = format!(
        "# {svc}\n\nImported with `homelab import` from the Compose project `{}`, for `{}`.\n\n## What import changed\n\n",
        a.source, a.node
    );
    if o.edits.is_empty() {
        s.push_str("Nothing: the compose file followed the rules as published.\n");
    }
    for e in &o.edits {
        s.push_str(&format!("- {}\n", e.shown()));
    }
    if !copied.is_empty() {
        s.push_str("\nFiles shipped with the service, copied as published:\n\n");
        for c in copied {
            s.push_str(&format!("- `{c}`\n"));
        }
    }
    let secrets: Vec<&str> =
        o.variables.iter().filter(|v| v.secret).map(|v| v.name.as_str()).collect();
    if !o.external_networks.is_empty() {
        let names: Vec<String> = o.external_networks.iter().map(|n| format!("`{n}`")).collect();
        s.push_str(&format!(
            "\nThe compose file takes the Docker network(s) {} as given (`external: true`): `networks` in service.yaml declares them, and the plan creates each on `{}` when it is missing, before the service comes up.\n",
            names.join(", "),
            a.node
        ));
    }
    if !secrets.is_empty() || !o.node_files.is_empty() {
        s.push_str(&format!("\n## Before the first deploy\n\nOn `{}`:\n\n", a.node));
        if !secrets.is_empty() {
            s.push_str(&format!(
                "- set {} in `{root}/config/{svc}/.env`\n",
                secrets.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
            ));
        }
        for f in &o.node_files {
            s.push_str(&format!("- put `{f}` in `{root}/config/{svc}/`\n"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_become_homelab_ones() {
        assert_eq!(seconds("30s"), Some(30));
        assert_eq!(seconds("1m30s"), Some(90));
        assert_eq!(seconds("500ms"), Some(1));
        assert_eq!(seconds("1h"), Some(3600));
        assert_eq!(seconds("x"), None);
        assert_eq!(seconds(""), None);
        let h = healthcheck(&Timing {
            interval: Some("1m".into()),
            timeout: Some("2m".into()),
            retries: Some(1),
            start_period: Some("0s".into()),
        });
        assert_eq!(h.interval.as_deref(), Some("1m"));
        assert_eq!(h.timeout.as_deref(), Some("1m"), "no longer than the interval");
        assert_eq!(h.retries, Some(3));
        assert_eq!(h.start_period.as_deref(), Some("0s"));
        assert_eq!(healthcheck(&Timing::default()).interval.as_deref(), Some("10s"));
    }

    #[test]
    fn backup_sets_are_named_in_kebab_case_once() {
        let mut o = Output::default();
        o.backups.insert("app_db".into(), ["db".to_owned()].into());
        o.backups.insert("postgres".into(), ["pg".to_owned()].into());
        let sets = backup_sets("app", &o);
        assert_eq!(sets[0], ("app-db".into(), vec!["data/app/db".into()]));
        assert_eq!(sets[1], ("app-postgres".into(), vec!["data/app/pg".into()]));
    }
}
