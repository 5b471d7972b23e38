//! The rules of a service's contract (`service.yaml`) that concern it alone: exposure class,
//! restart policy, healthcheck, and the relative paths of persistence and backups.
//!
//! Naming, ownership, dependencies and capabilities of a contract have their own families.
//! No IO here.

use super::super::build::healthcheck_duration;
use super::super::diag::Diagnostics;
use super::super::raw::{line, S};
use super::{contract_file, exposure, Input, RESTART_POLICIES};

pub(super) fn check(i: &Input, d: &mut Diagnostics) {
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
        for (i, set) in c.backup.sets.iter().enumerate() {
            if set.value.paths.is_empty() {
                d.err(
                    "backup",
                    &file,
                    line(set),
                    format!("backup.sets[{i}].paths"),
                    "expected at least one path",
                    "list what the set backs up",
                );
            }
            for (j, p) in set.value.paths.iter().enumerate() {
                relative_path(d, &file, p, &format!("backup.sets[{i}].paths[{j}]"));
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

fn relative_path(d: &mut Diagnostics, file: &str, p: &S<String>, field: &str) {
    let v = &p.value;
    let ok = !v.is_empty()
        && !v.starts_with('/')
        && !v.split('/').any(|c| c == ".." || c.is_empty() || c == ".")
        && !v.chars().any(|c| c.is_whitespace() || c.is_control());
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
