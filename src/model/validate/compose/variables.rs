//! Variables the way Compose users write them: `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
//! `${VAR:?message}`, `${VAR?message}` and `$VAR` in a rendered compose file are interpolated on
//! the node from `<root>/config/<svc>/.env`, so each must be declared in `runtime.env_vars`;
//! `$$` is a literal dollar. A secret's default is a literal secret in Git.

use super::super::super::diag::Diagnostics;
use super::super::super::Service;
use super::super::is_placeholder;

/// One variable a line interpolates.
#[derive(Debug, PartialEq, Eq)]
struct Use<'a> {
    name: &'a str,
    /// The default of `${VAR:-default}` / `${VAR-default}`.
    default: Option<&'a str>,
}

pub(super) fn check(svc: &Service, path: &str, text: &str, d: &mut Diagnostics) {
    let name = svc.name.as_str();
    for (n, l) in text.lines().enumerate() {
        // Compose interpolates values, not comments.
        if l.trim_start().starts_with('#') {
            continue;
        }
        let mut seen = Vec::new();
        for u in scan(l) {
            if seen.contains(&u.name) {
                continue;
            }
            seen.push(u.name);
            let Some(var) = svc.env_vars.iter().find(|e| e.name == u.name) else {
                d.err(
                    "compose-variable",
                    path,
                    Some(n as u64 + 1),
                    u.name.to_owned(),
                    format!("`{}` is interpolated by Compose on the node, but services/{name}/service.yaml does not declare it in `runtime.env_vars`", u.name),
                    format!("declare `{}` under `runtime.env_vars` (and in env.example) so it is set in /opt/homelab/config/{name}/.env, or write `$${}` for a literal dollar", u.name, u.name),
                );
                continue;
            };
            let literal = u.default.is_some_and(|v| !v.starts_with('$') && !is_placeholder(v));
            if var.secret && literal {
                d.err(
                    "secret",
                    path,
                    Some(n as u64 + 1),
                    u.name.to_owned(),
                    format!("the secret `{}` has a literal default value in Git", u.name),
                    format!("write `${{{}}}` without a default and put the value in /opt/homelab/config/{name}/.env on the node (loaded with `env_file`); rotate the committed value", u.name),
                );
            }
        }
    }
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_name(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The variables `line` interpolates, defaults' own variables included.
fn scan(line: &str) -> Vec<Use<'_>> {
    let b = line.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'$' {
            i += 1;
            continue;
        }
        match b.get(i + 1) {
            Some(b'$') => i += 2,
            Some(b'{') => {
                let start = i + 2;
                let mut j = start;
                while j < b.len() && is_name(b[j]) {
                    j += 1;
                }
                // The matching `}`: defaults may hold `${...}` of their own.
                let mut depth = 1;
                let mut k = j;
                while k < b.len() {
                    match b[k] {
                        b'{' => depth += 1,
                        b'}' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    k += 1;
                }
                if j > start && is_name_start(b[start]) {
                    let op = &line[j..k.min(b.len())];
                    let default =
                        op.strip_prefix(":-").or_else(|| op.strip_prefix('-')).map(str::trim);
                    out.push(Use { name: &line[start..j], default });
                    if let Some(rest) = op.get(1..) {
                        out.extend(scan(rest));
                    }
                }
                i = k + 1;
            }
            Some(&c) if is_name_start(c) => {
                let start = i + 1;
                let mut j = start;
                while j < b.len() && is_name(b[j]) {
                    j += 1;
                }
                out.push(Use { name: &line[start..j], default: None });
                i = j;
            }
            _ => i += 1,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(l: &str) -> Vec<(&str, Option<&str>)> {
        scan(l).into_iter().map(|u| (u.name, u.default)).collect()
    }

    #[test]
    fn every_compose_spelling() {
        assert_eq!(names("a: ${A}"), [("A", None)]);
        assert_eq!(names("a: ${A:-x y}"), [("A", Some("x y"))]);
        assert_eq!(names("a: ${A-x}"), [("A", Some("x"))]);
        assert_eq!(names("a: ${A:?set A}"), [("A", None)]);
        assert_eq!(names("a: ${A?set A}"), [("A", None)]);
        assert_eq!(names("a: $A/b"), [("A", None)]);
        assert_eq!(names("a: $$A $${B} 5$"), []);
        assert_eq!(names("a: ${A:-${B}}"), [("A", Some("${B}")), ("B", None)]);
        assert_eq!(names("a: ${1} $9"), []);
    }
}
