//! The rules of a service's contract (`service.yaml`) that concern it alone: exposure class,
//! restart policy, healthcheck, the relative paths of persistence and backups, and the names
//! of the Docker networks it has homelab create.
//!
//! Naming, ownership, dependencies and capabilities of a contract have their own families.
//! No IO here.

use super::super::build::healthcheck_duration;
use super::super::diag::Diagnostics;
use super::super::raw::{line, S};
use super::{contract_file, exposure, Input, RESTART_POLICIES};

pub(super) fn check(i: &Input, d: &mut Diagnostics) {
    // Every service's declared data paths, to find a backup set that reaches into another's.
    let declared: Vec<(&str, &str)> = i
        .raw
        .services()
        .flat_map(|(dir, rs)| {
            let c = &rs.contract;
            c.persistence
                .paths
                .iter()
                .map(|p| p.value.as_str())
                .chain(
                    c.backup
                        .sets
                        .iter()
                        .flat_map(|s| s.value.paths.iter().map(|p| p.value.as_str())),
                )
                .map(move |p| (dir, p.trim_end_matches('/')))
        })
        .collect();
    for (dir, rs) in i.raw.services() {
        let file = contract_file(dir);
        let c = &rs.contract;
        exposure(d, &file, &c.exposure, "exposure");
        if !RESTART_POLICIES.contains(&c.restart_policy.value.as_str()) {
            d.err(
                "restart",
                &file,
                line(&c.restart_policy),
                "restart_policy",
                format!(
                    "expected one of {}, found `{}`",
                    RESTART_POLICIES.join(", "),
                    c.restart_policy.value
                ),
                "the guide's default is `unless-stopped`",
            );
        }
        healthcheck(d, &file, &c.healthcheck.value);
        for (i, p) in c.persistence.paths.iter().enumerate() {
            relative_path(d, &file, p, &format!("persistence.paths[{i}]"));
        }
        for (i, f) in c.persistence.folders.iter().enumerate() {
            let f = &f.value;
            let owner = f.owner.as_ref().map(|o| o.value.as_str());
            let mode = f.mode.as_ref().map(|m| m.value.as_str());
            if let Some((field, message)) =
                crate::model::Folder::problem(&c.name.value, &f.path.value, owner, mode)
            {
                let at = match field {
                    "owner" => f.owner.as_ref().and_then(line).or_else(|| line(&f.path)),
                    "mode" => f.mode.as_ref().and_then(line),
                    _ => line(&f.path),
                };
                d.err(
                    "persistence",
                    &file,
                    at,
                    format!("persistence.folders[{i}].{field}"),
                    message,
                    "the engine sets the owner (`chown`, the folder and what it holds, when it differs) and mode (`chmod`, the folder itself) of the service's own folders only, before the service comes up",
                );
            }
        }
        for (i, n) in c.networks.iter().enumerate() {
            if !crate::model::network_name_ok(&n.value) {
                d.err(
                    "network",
                    &file,
                    line(n),
                    format!("networks[{i}]"),
                    format!(
                        "expected a Docker network name (a letter or digit, then letters, digits, `_`, `.` or `-`; at most 64), found `{}`",
                        crate::quote::cut(&n.value)
                    ),
                    "name the network as the compose file's `external: true` network is named (its `name:`, else its key)",
                );
            }
        }
        for (i, set) in c.backup.sets.iter().enumerate() {
            if set.value.paths.is_empty() && set.value.volumes.is_empty() {
                d.err(
                    "backup",
                    &file,
                    line(set),
                    format!("backup.sets[{i}].paths"),
                    "expected at least one path or volume",
                    "list what the set backs up: folders under `paths`, named volumes of the compose project under `volumes`",
                );
            }
            for (j, v) in set.value.volumes.iter().enumerate() {
                if !super::super::volume_key_ok(&v.value) {
                    d.err(
                        "backup",
                        &file,
                        line(v),
                        format!("backup.sets[{i}].volumes[{j}]"),
                        format!("expected a named volume's key in the compose file (letters, digits, `_.-`), found `{}`", crate::quote::cut(&v.value)),
                        "name the volume as the compose file's top-level `volumes:` does (`db`, not `web_db`)",
                    );
                }
            }
            for (j, p) in set.value.paths.iter().enumerate() {
                let field = format!("backup.sets[{i}].paths[{j}]");
                relative_path(d, &file, p, &field);
                backup_path(d, &file, dir, c, p, &field, &declared);
            }
            if let Some(m) = &set.value.max_age {
                if healthcheck_duration(&m.value, false).is_none() {
                    d.err(
                        "backup",
                        &file,
                        line(m),
                        format!("backup.sets[{i}].max_age"),
                        format!("expected a duration such as `1d` or `12h`, found `{}`", crate::quote::cut(&m.value)),
                        "how old the last backup of a critical set may be before the stability agent reports it (default 2d)",
                    );
                }
            }
            if let Some(r) = &set.value.retain {
                if r.value == 0 || r.value > 1000 {
                    d.err(
                        "backup",
                        &file,
                        line(r),
                        format!("backup.sets[{i}].retain"),
                        format!("expected 1 to 1000 snapshots, found {}", r.value),
                        "how many restic snapshots of the set `homelab backup` keeps (default 7)",
                    );
                }
            }
            if let Some(c) = &set.value.consistency {
                if c.value != "stop" && c.value != "live" {
                    d.err(
                        "backup",
                        &file,
                        line(c),
                        format!("backup.sets[{i}].consistency"),
                        format!("expected `stop` or `live`, found `{}`", c.value),
                        "`stop` stops the service's containers while its snapshot is copied (the default for a critical set); `live` copies while it runs",
                    );
                }
            }
        }
    }
}

fn healthcheck(d: &mut Diagnostics, file: &str, h: &super::raw::Healthcheck) {
    let mut dur = |s: &S<String>, f: &str| {
        let zero = f == "healthcheck.start_period" || f == "healthcheck.stable_for";
        let parsed = healthcheck_duration(&s.value, zero);
        if parsed.is_none() {
            d.err(
                "healthcheck",
                file,
                line(s),
                f,
                format!("expected a duration such as `30s` or `5m`, found `{}`", s.value),
                "write a whole number followed by s, m, h or d",
            );
        }
        parsed
    };
    let interval = dur(&h.interval, "healthcheck.interval");
    let timeout = dur(&h.timeout, "healthcheck.timeout");
    if let Some(s) = &h.start_period {
        dur(s, "healthcheck.start_period");
    }
    let stable = h.stable_for.as_ref().map(|s| (s, dur(s, "healthcheck.stable_for")));
    if let Some((s, Some(v))) = stable {
        if v > crate::model::MAX_STABLE_FOR {
            d.err(
                "healthcheck",
                file,
                line(s),
                "healthcheck.stable_for",
                format!("expected at most 1h, found `{}`", s.value),
                "a minute or two shows a service that stays up; `0s` turns the window off",
            );
        }
    }
    // A broken duration counts as one second, as the model holds it.
    let one = std::time::Duration::from_secs(1);
    if timeout.unwrap_or(one) > interval.unwrap_or(one) {
        d.err(
            "healthcheck",
            file,
            line(&h.timeout),
            "healthcheck.timeout",
            format!(
                "expected a timeout no longer than the interval ({}), found `{}`",
                h.interval.value, h.timeout.value
            ),
            "shorten the timeout or lengthen the interval",
        );
    }
    let retries = h.retries.value;
    if retries == 0 || retries > 100 {
        d.err(
            "healthcheck",
            file,
            line(&h.retries),
            "healthcheck.retries",
            format!("expected 1 to 100 retries, found {retries}"),
            "retry a failing check a few times",
        );
    }
}

/// A backup set's path (issue 18) is part of the service's declared persistence, lies in its
/// own data or config folder (or is a persistence path of its own outside them, such as the
/// control plane's `actions`), is none of homelab's own folders, and reaches into no other
/// service's paths: a snapshot or a restore of it touches this service's data only.
fn backup_path(
    d: &mut Diagnostics,
    file: &str,
    svc: &str,
    c: &super::super::raw::Contract,
    p: &S<String>,
    field: &str,
    declared: &[(&str, &str)],
) {
    let v = p.value.trim_end_matches('/');
    let persisted =
        c.persistence.paths.iter().any(|q| crate::model::within(v, q.value.trim_end_matches('/')));
    let problem = if let Some(o) =
        crate::model::NOT_SNAPSHOTTED.iter().find(|o| crate::model::within(v, o))
    {
        Some((
            format!("expected the service's own data, found `{v}`, which is homelab's `{o}` folder"),
            "a snapshot never holds logs, events or homelab's state: back up the service's data and config folders".to_owned(),
        ))
    } else if !persisted {
        Some((
            format!("expected a path among `persistence.paths`, found `{v}`"),
            format!("add `{v}` (or a folder holding it) to `persistence.paths`, or remove it from the set"),
        ))
    } else if let Some((other, q)) = declared
        .iter()
        .find(|(o, q)| *o != svc && (crate::model::within(v, q) || crate::model::within(q, v)))
    {
        Some((
            format!("expected a path of this service's own, found `{v}`, which overlaps `{q}` of service `{other}`"),
            format!("a restore of `{svc}` must not touch `{other}`'s data: keep each service's data in its own folder (`data/{svc}`, `config/{svc}`)"),
        ))
    } else {
        None
    };
    if let Some((message, fix)) = problem {
        d.err("backup", file, line(p), field, message, fix);
    }
}

fn relative_path(d: &mut Diagnostics, file: &str, p: &S<String>, field: &str) {
    let v = &p.value;
    let ok = crate::model::relative_path_ok(v);
    if !ok {
        d.err(
            "persistence",
            file,
            line(p),
            field,
            format!(
                "expected a path relative to the runtime root (e.g. `data/<svc>`), found `{v}`"
            ),
            "write the path relative to the node's runtime root, without `..` or spaces",
        );
    }
}
