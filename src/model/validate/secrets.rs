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
use super::super::{ServiceFile, Source};
use super::{contract_file, is_placeholder, literal_assignment, Input};

pub(super) fn check(i: &Input, d: &mut Diagnostics) {
    // The overrides of each service, in node order, gathered once: asking every node for every
    // service's override was services × nodes (a million lookups at 10,000 services on 100).
    let mut overrides: BTreeMap<&ServiceName, Vec<&Source>> = BTreeMap::new();
    // The host's shipped files of each service, gathered once the same way.
    let mut host_files: BTreeMap<&ServiceName, Vec<&ServiceFile>> = BTreeMap::new();
    for node in i.lab.nodes.values() {
        for (svc, src) in &node.overrides {
            overrides.entry(svc).or_default().push(src);
        }
        for (svc, files) in &node.runtime_files {
            host_files.entry(svc).or_default().extend(files);
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
        let fix = |_: &str| {
            format!("remove it here and put it in /opt/homelab/config/{}/.env on the node (loaded with `env_file`); rotate the committed value", svc.name)
        };
        let undeclared = |name: &str| {
            format!("`{name}` looks like a secret and is set to a literal value in a file that ships from Git")
        };
        let undeclared_fix = |name: &str| {
            format!("declare `{name}` under `runtime.env_vars` with `secret: true`, write `${{{name}}}` here and put the value in /opt/homelab/config/{}/.env on the node; rotate the committed value", svc.name)
        };
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
                            fix(name),
                        );
                    }
                }
                // A name that is not declared but reads like a secret (`MYSQL_ROOT_PASSWORD:
                // example` as published projects write it).
                if let Some((name, _)) = secret_looking_literal(text, &secrets) {
                    d.err(
                        "secret",
                        &src.path,
                        Some(n as u64 + 1),
                        name.clone(),
                        undeclared(&name),
                        undeclared_fix(&name),
                    );
                }
            }
        }
        // What ships beside the compose file is in Git too: an env file (`db.env`), a file
        // named like a secret (`password.txt`), or a declared secret written out anywhere.
        let shipped =
            svc.files.iter().chain(host_files.get(&svc.name).into_iter().flatten().copied());
        for f in shipped.filter(|f| f.binary.is_none()) {
            let base = f.name.rsplit('/').next().unwrap_or(&f.name).to_ascii_lowercase();
            if ["password", "passwd", "secret", "token"].iter().any(|w| base.contains(w)) {
                let value = f.source.text.trim();
                if !is_placeholder(value) {
                    d.err(
                        "secret",
                        &f.source.path,
                        Some(1),
                        "",
                        format!("`{}` is named like a secret and holds a value: it ships from Git with every release", f.name),
                        format!("keep it on the node under `{{{{ config_dir }}}}/` (/opt/homelab/config/{}/) and point the compose file there (`secrets.<name>.file: \"{{{{ config_dir }}}}/{base}\"`); rotate the committed value", svc.name),
                    );
                    continue;
                }
            }
            let env_file = base.ends_with(".env");
            for (n, text) in f.source.text.lines().enumerate() {
                for name in &secrets {
                    let Some(value) = literal_assignment(text, name) else { continue };
                    if !value.starts_with('$') && !is_placeholder(&value) {
                        d.err("secret", &f.source.path, Some(n as u64 + 1), (*name).to_owned(), format!("the secret `{name}` is set to a literal value in a file that ships from Git"), fix(name));
                    }
                }
                if !env_file {
                    continue;
                }
                if let Some((name, _)) = secret_looking_literal(text, &secrets) {
                    let fix = format!("move the line to /opt/homelab/config/{}/.env on the node (loaded with `env_file`) and declare `{name}` under `runtime.env_vars` with `secret: true`; rotate the committed value", svc.name);
                    d.err(
                        "secret",
                        &f.source.path,
                        Some(n as u64 + 1),
                        name.clone(),
                        undeclared(&name),
                        fix,
                    );
                }
            }
        }
    }
}

/// Whether a variable name reads like a secret's (`DB_PASSWORD`, `ADMIN_TOKEN`, `API_KEY`,
/// `GPG_PASSPHRASE`), or ends like one: `…_KEY` (`N8N_ENCRYPTION_KEY`, `APP_KEY`,
/// `MEILI_MASTER_KEY`; not a `…_PUBLIC_KEY` or `…_PUBLISHABLE_KEY`) or `…_PASS` (`SMTP_PASS`),
/// as published projects name them (issue 21: those passed). A `_FILE` variant names the file
/// that holds one, not the secret.
pub fn looks_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    if upper.ends_with("_FILE") {
        return false;
    }
    let named = [
        "PASSWORD",
        "PASSWD",
        "PASSPHRASE",
        "SECRET",
        "TOKEN",
        "API_KEY",
        "PRIVATE_KEY",
        "ACCESS_KEY",
    ]
    .iter()
    .any(|w| upper.contains(w));
    let parts: Vec<&str> = upper.split('_').collect();
    let ends = match parts.as_slice() {
        [.., before, "KEY"] => !matches!(*before, "PUBLIC" | "PUBLISHABLE"),
        [_, .., "PASS"] => true,
        _ => false,
    };
    named || ends
}

/// Whether a value names where a secret is kept rather than being one: a path (`/run/…`,
/// `./…`) or one of the service's folders on the node (`{{ config_dir }}/ssh-key`), as a
/// `…_KEY` variable often does (`HOMELAB_SSH_KEY`, `TLS_KEY`).
fn names_a_path(value: &str) -> bool {
    ["/", "./", "../", "{{ config_dir }}", "{{ data_dir }}", "{{ root }}"]
        .iter()
        .any(|p| value.starts_with(p))
}

/// `NAME: value` or `NAME=value` (`- NAME=value`, quoted or not) on `line`, where `NAME` is an
/// environment variable name that reads like a secret, is not among the declared `secrets`
/// (checked by name above) and is given a literal value (not `$…`, not a placeholder).
pub fn secret_looking_literal(line: &str, secrets: &[&str]) -> Option<(String, String)> {
    let t = line.trim_start();
    if t.starts_with('#') {
        return None;
    }
    let t = t.strip_prefix("- ").map(str::trim_start).unwrap_or(t);
    let t = t.trim_start_matches(['"', '\'']);
    let end = t.find([':', '='])?;
    let name = t[..end].trim_end_matches(['"', '\'']);
    // An environment variable's name; lowercase letters too (Gitea's
    // `GITEA__database__PASSWD`), as long as one is uppercase: a compose key of its own
    // (`secrets: [db_password]`) is all lowercase.
    let ok = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && name.bytes().any(|b| b.is_ascii_uppercase())
        && !name.as_bytes()[0].is_ascii_digit();
    if !ok || !looks_secret(name) || secrets.contains(&name) {
        return None;
    }
    let value = literal_assignment(line, name)?;
    (!value.starts_with('$') && !is_placeholder(&value) && !names_a_path(&value))
        .then(|| (name.to_owned(), value))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_read_like_secrets() {
        for name in [
            "DB_PASSWORD",
            "ADMIN_TOKEN",
            "OPENAI_API_KEY",
            "N8N_ENCRYPTION_KEY",
            "APP_KEY",
            "MEILI_MASTER_KEY",
            "SMTP_PASS",
            "GPG_PASSPHRASE",
            "SECRET_KEY_BASE",
        ] {
            assert!(looks_secret(name), "{name}");
        }
        for name in
            ["DB_PASSWORD_FILE", "VAPID_PUBLIC_KEY", "KEYBOARD", "CACHE_KEY_PREFIX", "PASS", "KEY"]
        {
            assert!(!looks_secret(name), "{name}");
        }
    }

    #[test]
    fn a_path_under_a_key_name_is_no_literal_secret() {
        assert!(secret_looking_literal("      APP_KEY: base64:abc", &[]).is_some());
        assert!(secret_looking_literal("      TLS_KEY: /certs/tls.key", &[]).is_none());
        assert!(secret_looking_literal("      HOMELAB_SSH_KEY: \"{{ config_dir }}/ssh-key\"", &[])
            .is_none());
    }
}
