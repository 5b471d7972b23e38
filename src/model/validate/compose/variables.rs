//! Variables the way Compose users write them: `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
//! `${VAR:?message}`, `${VAR?message}` and `$VAR` in a rendered compose file are interpolated on
//! the node from `<root>/config/<svc>/.env`, so each must be declared in `runtime.env_vars`,
//! except one with a default (`${TAG:-latest}`) whose name does not read like a secret; `$$` is
//! a literal dollar. A secret's default is a literal secret in Git.

use std::collections::BTreeMap;

use super::super::super::diag::Diagnostics;
use super::super::super::Service;
use super::super::is_placeholder;

/// What a variable was taken to be where validation resolved it: Compose interpolates the
/// rendered file on the node, but what the repository knows of a value (a default written in
/// the file, the value env.example gives a variable that is not secret) is what the paths,
/// mounts and ports really are unless the node's env file says otherwise. Checking those
/// resolved values keeps a variable from hiding a writable mount in the release folder, a host
/// folder outside `host_paths`, or a port published on every address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Substitution {
    /// As written: `${LIBRARY}`, `${PORT:-8080}`.
    pub written: String,
    pub value: String,
    /// `from env.example` or `its default`.
    pub origin: &'static str,
}

/// A compose text with the variables whose value the repository knows replaced by it, and
/// what was replaced on each line (1-based). Lines keep their numbers.
pub(super) struct Resolved {
    pub text: String,
    pub lines: BTreeMap<u64, Vec<Substitution>>,
}

impl Resolved {
    /// What a diagnostic on `line` adds: which variables made the value it judged.
    pub fn note(&self, line: Option<u64>) -> Option<String> {
        let subs = self.lines.get(&line?)?;
        let said: Vec<String> = subs
            .iter()
            .map(|s| format!("`{}` resolves to `{}` ({})", s.written, s.value, s.origin))
            .collect();
        Some(format!("; here {}", said.join(", ")))
    }
}

/// Resolves the variables of `text` the repository knows a value of: a non-secret variable's
/// value in env.example, else the default of `${VAR:-default}` / `${VAR-default}`. Secrets,
/// variables without a known value and defaults that hold variables of their own are left
/// as written (the node checks what Compose really resolves).
pub(super) fn resolve(svc: &Service, text: &str) -> Resolved {
    let example = super::super::secrets::parse_env_example(&svc.env_example.text);
    let known = |name: &str| -> Option<String> {
        let var = svc.env_vars.iter().find(|e| e.name == name);
        if var.is_some_and(|v| v.secret) {
            return None;
        }
        let (_, v) = example.get(name)?;
        let v = v.trim();
        let v = unquote(v);
        (!is_placeholder(v)).then(|| v.to_owned())
    };
    let mut out = String::with_capacity(text.len());
    let mut lines = BTreeMap::new();
    for (n, l) in text.split_inclusive('\n').enumerate() {
        if l.trim_start().starts_with('#') || !l.contains('$') {
            out.push_str(l);
            continue;
        }
        let mut subs = Vec::new();
        let mut line = String::with_capacity(l.len());
        let mut rest = l;
        while let Some((before, u, after)) = next_use(rest) {
            line.push_str(before);
            let written = &rest[before.len()..rest.len() - after.len()];
            let secret = svc.env_vars.iter().any(|e| e.name == u.name && e.secret);
            let found = match known(u.name) {
                _ if secret => None,
                Some(v) => Some((v, "from env.example")),
                None => u
                    .default
                    .filter(|d| !d.contains('$') && u.braced)
                    .map(|d| (d.to_owned(), "its default")),
            };
            match found {
                Some((value, origin)) => {
                    line.push_str(&value);
                    subs.push(Substitution { written: written.to_owned(), value, origin });
                }
                None => line.push_str(written),
            }
            rest = after;
        }
        line.push_str(rest);
        out.push_str(&line);
        if !subs.is_empty() {
            lines.insert(n as u64 + 1, subs);
        }
    }
    Resolved { text: out, lines }
}

/// The first interpolation of `s` at the top level: the text before it, the use, and the text
/// after it. `$$` is skipped (a literal dollar).
fn next_use(s: &str) -> Option<(&str, Use<'_>, &str)> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'$' {
            i += 1;
            continue;
        }
        match b.get(i + 1) {
            Some(b'$') => i += 2,
            Some(b'{') => {
                let end = closing(b, i + 2)?;
                let u = scan(&s[i..=end]).into_iter().next()?;
                return Some((&s[..i], u, &s[end + 1..]));
            }
            Some(&c) if is_name_start(c) => {
                let mut j = i + 1;
                while j < b.len() && is_name(b[j]) {
                    j += 1;
                }
                let u = Use { name: &s[i + 1..j], default: None, braced: false };
                return Some((&s[..i], u, &s[j..]));
            }
            _ => i += 1,
        }
    }
    None
}

/// The index of the `}` that closes a `${` whose body starts at `start`.
fn closing(b: &[u8], start: usize) -> Option<usize> {
    let mut depth = 1;
    for (k, &c) in b.iter().enumerate().skip(start) {
        match c {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(k);
                }
            }
            _ => {}
        }
    }
    None
}

/// One variable a line interpolates.
#[derive(Debug, PartialEq, Eq)]
struct Use<'a> {
    name: &'a str,
    /// The default of `${VAR:-default}` / `${VAR-default}`.
    default: Option<&'a str>,
    /// `${…}` rather than `$VAR`.
    braced: bool,
}

/// `binds`: the lines of bind mounts whose source holds a variable.
pub(super) fn check(
    svc: &Service,
    path: &str,
    text: &str,
    binds: &std::collections::BTreeSet<u64>,
    d: &mut Diagnostics,
) {
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
                // A default that is not a secret's needs no declaration: Compose runs it unless
                // the node's env file sets the variable, and what the default names (a path, a
                // port) is judged resolved, as any value the repository knows.
                if u.default.is_some() && !super::super::looks_secret(u.name) {
                    continue;
                }
                let fix = if binds.contains(&(n as u64 + 1)) {
                    // A host folder from a variable is a folder nobody reviewed: the data
                    // folder of the service is the one homelab keeps, snapshots and checks.
                    format!("write the host folder as `{{{{ data_dir }}}}/…` (the service's data folder, kept across updates and rollbacks) instead of `{}`; a folder elsewhere on the host goes under `host_paths` in services/{name}/service.yaml, written out", u.name)
                } else if u.default.is_some() {
                    format!("declare `{}` under `runtime.env_vars` with `secret: true` (and in env.example, without a value): a name that reads like a secret is declared even with a default, so it is set in /opt/homelab/config/{name}/.env", u.name)
                } else {
                    format!("declare `{}` under `runtime.env_vars` (and in env.example) so it is set in /opt/homelab/config/{name}/.env, or write `$${}` for a literal dollar", u.name, u.name)
                };
                d.err(
                    "compose-variable",
                    path,
                    Some(n as u64 + 1),
                    u.name.to_owned(),
                    format!("`{}` is interpolated by Compose on the node, but services/{name}/service.yaml does not declare it in `runtime.env_vars`", u.name),
                    fix,
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

/// See `compose::interpolated_without_default`.
pub(super) fn without_default(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(scan)
        .filter(|u| u.default.is_none())
        .map(|u| u.name.to_owned())
        .collect()
}

/// The names of the variables `s` interpolates, defaults' own variables included, each once.
pub(super) fn names(s: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for u in scan(s) {
        if !out.iter().any(|n| n == u.name) {
            out.push(u.name.to_owned());
        }
    }
    out
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
                    out.push(Use { name: &line[start..j], default, braced: true });
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
                out.push(Use { name: &line[start..j], default: None, braced: false });
                i = j;
            }
            _ => i += 1,
        }
    }
    out
}

/// See `compose::variables_used`.
pub(super) fn used(text: &str) -> Vec<(String, Option<String>)> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(scan)
        .map(|u| (u.name.to_owned(), u.default.map(str::to_owned)))
        .collect()
}

/// A value of an env file without the one pair of quotes (`"…"` or `'…'`) around it.
pub fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
        .unwrap_or(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(l: &str) -> Vec<(&str, Option<&str>)> {
        scan(l).into_iter().map(|u| (u.name, u.default)).collect()
    }

    #[test]
    fn the_next_use_of_a_line_is_split_out_whole() {
        let split =
            |s| next_use(s).map(|(before, u, after)| (before, u.name, u.default, u.braced, after));
        assert_eq!(
            split("- \"${A:-/mnt/x}/t:/t\""),
            Some(("- \"", "A", Some("/mnt/x"), true, "/t:/t\""))
        );
        assert_eq!(split("- $A/b:/b"), Some(("- ", "A", None, false, "/b:/b")));
        assert_eq!(split("- ${P-:80:8000}"), Some(("- ", "P", Some(":80:8000"), true, "")));
        assert_eq!(split("a: $$A $${B}"), None);
        assert_eq!(split("a: ${unclosed"), None);
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
