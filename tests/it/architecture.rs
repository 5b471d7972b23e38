//! The shape of the source tree, checked: no import cycle between modules, and nothing below
//! `command` reaches up into `command` or `cli` (STYLE.md; issue 7). Reads `src/` as text, so a
//! new `use` that closes a circle fails here before it tangles the tree.
//!
//! A module is a file (`src/apply/node.rs` is `apply::node`, `src/apply/mod.rs` is `apply`).
//! An edge is any `crate::…` or `super::…` path in a file, outside comments and its
//! `#[cfg(test)]` module, resolved to the deepest module it names. A parent module naming its
//! own children (`pub mod`, `pub use child::…`) is structure, not a dependency, and is left
//! out; every other edge counts, at file level and at top level (`observe` ↔ `transport`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use petgraph::algo::tarjan_scc;
use petgraph::graph::DiGraph;

/// Module path (`["apply", "node"]`) → source text without comments and test modules.
fn modules() -> BTreeMap<Vec<String>, String> {
    fn walk(dir: &Path, prefix: &[String], out: &mut BTreeMap<Vec<String>, String>) {
        for entry in std::fs::read_dir(dir).expect("src/ is readable") {
            let path = entry.expect("entry").path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                let mut p = prefix.to_vec();
                p.push(name);
                walk(&path, &p, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let mut module = prefix.to_vec();
                if !matches!(name.as_str(), "mod" | "lib") {
                    module.push(name.clone());
                }
                if prefix.is_empty() && name == "main" {
                    continue; // the binary: a client of the library, not a module of it
                }
                let text = std::fs::read_to_string(&path).expect("readable source");
                out.insert(module, strip(&text));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &[], &mut out);
    out
}

/// The code of a file without line comments and without its trailing `#[cfg(test)]` module.
fn strip(text: &str) -> String {
    let code = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    code.lines()
        .map(|l| match l.find("//") {
            Some(at) => &l[..at],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every path a `crate::`/`super::` reference in `code` spells, expanded over one `{…}` group
/// per level (`crate::a::{b, c::d}` gives `a::b` and `a::c::d`), made absolute.
fn references(module: &[String], code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(start) {
            let at = from + i;
            from = at + start.len();
            if at > 0 && code[..at].ends_with(|c: char| is_ident(c) || c == ':') {
                continue; // `homelab::crate::` or `a::super::`: not a path root
            }
            // The base the path is relative to.
            let mut base: Vec<String> = if start == "crate::" {
                Vec::new()
            } else {
                // `super` of `a::b` (`a/b.rs`) is `a`; of `a` (`a/mod.rs`) it is the crate.
                let mut b = module.to_vec();
                b.pop();
                b
            };
            let mut rest = &code[from..];
            // Further `super::` segments.
            while let Some(r) = rest.strip_prefix("super::") {
                base.pop();
                rest = r;
            }
            expand(&base, rest, &mut out);
        }
    }
    out
}

fn expand(base: &[String], rest: &str, out: &mut Vec<Vec<String>>) {
    let mut path = base.to_vec();
    let mut rest = rest;
    loop {
        let seg: String = rest.chars().take_while(|c| is_ident(*c)).collect();
        if seg.is_empty() {
            if let Some(group) = rest.strip_prefix('{') {
                // Split the group at depth-0 commas.
                let mut depth = 0;
                let mut item = String::new();
                for c in group.chars() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            expand(&path, item.trim(), out);
                            item.clear();
                            continue;
                        }
                        _ => {}
                    }
                    item.push(c);
                }
                expand(&path, item.trim(), out);
                return;
            }
            out.push(path);
            return;
        }
        path.push(seg.clone());
        rest = &rest[seg.len()..];
        match rest.strip_prefix("::") {
            Some(r) => rest = r,
            None => {
                out.push(path);
                return;
            }
        }
    }
}

/// The deepest known module that `path` starts with.
fn resolve(path: &[String], known: &BTreeSet<Vec<String>>) -> Vec<String> {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| known.contains(p))
        .unwrap_or_default()
}

fn name(m: &[String]) -> String {
    if m.is_empty() {
        "crate".to_owned()
    } else {
        m.join("::")
    }
}

/// Module → the modules it depends on.
fn edges() -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let mods = modules();
    let known: BTreeSet<Vec<String>> = mods.keys().cloned().collect();
    let mut out: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (m, code) in &mods {
        let deps = out.entry(m.clone()).or_default();
        for r in references(m, code) {
            let target = resolve(&r, &known);
            // A module and its own descendants: structure (declaring, re-exporting).
            if target.starts_with(m) {
                continue;
            }
            deps.insert(target);
        }
    }
    out
}

fn cycles(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<String> {
    let mut g = DiGraph::<String, ()>::new();
    let mut idx = BTreeMap::new();
    for m in edges.keys().chain(edges.values().flatten()) {
        idx.entry(m.clone()).or_insert_with(|| g.add_node(name(m)));
    }
    for (from, tos) in edges {
        for to in tos {
            g.add_edge(idx[from], idx[to], ());
        }
    }
    tarjan_scc(&g)
        .into_iter()
        .filter(|scc| scc.len() > 1)
        .map(|scc| {
            let mut names: Vec<&str> = scc.iter().map(|i| g[*i].as_str()).collect();
            names.sort();
            names.join(" <-> ")
        })
        .collect()
}

#[test]
fn no_import_cycle_between_files() {
    let found = cycles(&edges());
    assert!(found.is_empty(), "import cycles between modules:\n  {}", found.join("\n  "));
}

#[test]
fn no_import_cycle_between_top_level_modules() {
    let mut top: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (from, tos) in edges() {
        let Some(f) = from.first() else { continue };
        let entry = top.entry(vec![f.clone()]).or_default();
        for to in tos {
            if let Some(t) = to.first().filter(|t| *t != f) {
                entry.insert(vec![t.clone()]);
            }
        }
    }
    let found = cycles(&top);
    assert!(found.is_empty(), "import cycles between top-level modules:\n  {}", found.join("\n  "));
}

#[test]
fn nothing_below_command_reaches_up_into_command_or_cli() {
    let mut bad = Vec::new();
    for (from, tos) in edges() {
        let top = from.first().map(String::as_str).unwrap_or("crate");
        if matches!(top, "crate" | "cli" | "command") {
            continue;
        }
        for to in tos {
            if matches!(to.first().map(String::as_str), Some("command" | "cli")) {
                bad.push(format!("{} uses {}", name(&from), name(&to)));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "domain modules must not import command or cli:\n  {}",
        bad.join("\n  ")
    );
}

/// The checker itself: a circle it must see, and paths it must resolve.
#[test]
fn the_checker_sees_a_circle_and_resolves_groups() {
    let known: BTreeSet<Vec<String>> =
        [vec![], vec!["a".to_owned()], vec!["a".to_owned(), "b".to_owned()]].into_iter().collect();
    let refs = references(&["x".to_owned()], "use crate::a::{b::{C, d}, E};");
    let resolved: BTreeSet<Vec<String>> = refs.iter().map(|r| resolve(r, &known)).collect();
    assert!(resolved.contains(&vec!["a".to_owned(), "b".to_owned()]));
    assert!(resolved.contains(&vec!["a".to_owned()]));
    let v = |s: &str| vec![s.to_owned()];
    let mut e = BTreeMap::new();
    e.insert(v("p"), [v("q")].into_iter().collect::<BTreeSet<_>>());
    e.insert(v("q"), [v("p")].into_iter().collect::<BTreeSet<_>>());
    assert_eq!(cycles(&e), vec!["p <-> q".to_owned()]);
}
