//! `homelab adopt NODE SERVICE`: drift resolved the other way. Given what a node holds for a
//! service, the patch (unified diff, repository paths) that makes the repository render
//! exactly those bytes.
//!
//! Each artifact comes from one repository file (the service's, or the host's over it, as
//! `render` picks them). A file shipped as written is replaced by the node's text. A template
//! is merged three ways: the render is the base, the template one side (what templating did to
//! it), the node the other (what was edited by hand); a hand edit on a templated line is a
//! conflict, and that artifact is left for a person, said so. Every patched file is rendered
//! again and must give the node's bytes, or it is not offered. Pure: the node's files are
//! read by the command.

use std::collections::BTreeMap;

use similar::{capture_diff_slices, Algorithm, DiffTag};

use crate::model::{Homelab, Instance, Source};
use crate::render::{self, Rendered};

/// The outcome of an adoption: the patch, and what it could not cover.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Adoption {
    /// Repository path → (its text now, its text after the patch).
    pub files: BTreeMap<String, (String, String)>,
    /// Artifacts left out, each with why (`docker-compose.yml: line 7 is templated ...`).
    pub left: Vec<String>,
}

impl Adoption {
    /// The patch as `git apply` takes it (`a/` and `b/` repository paths).
    pub fn patch(&self) -> String {
        self.files.iter().map(|(path, (old, new))| crate::plan::unified(path, old, new)).collect()
    }
}

/// The repository file an artifact of `inst` comes from, as `render::render_instance` picks
/// it: the host's runtime files over its override over the service's files over the
/// healthcheck over the compose file.
fn source_mut<'a>(lab: &'a mut Homelab, inst: &Instance, name: &str) -> Option<&'a mut Source> {
    let node = lab.nodes.get_mut(&inst.node)?;
    if let Some(f) = node
        .runtime_files
        .get_mut(&inst.service)
        .and_then(|fs| fs.iter_mut().rev().find(|f| f.name == name))
    {
        return f.binary.is_none().then_some(&mut f.source);
    }
    if name == render::OVERRIDE {
        if let Some(o) = node.overrides.get_mut(&inst.service) {
            return Some(o);
        }
    }
    let svc = lab.services.get_mut(&inst.service)?;
    if let Some(f) = svc.files.iter_mut().rev().find(|f| f.name == name) {
        return f.binary.is_none().then_some(&mut f.source);
    }
    match name {
        render::HEALTHCHECK => Some(&mut svc.healthcheck_script),
        render::COMPOSE => Some(&mut svc.compose),
        _ => None,
    }
}

/// The patch making `lab` render `node`'s files for `inst`. `rendered` is `lab`'s render of
/// it; `node` holds the node's file bytes by artifact name (a file missing there is absent).
pub fn adopt(
    lab: &Homelab,
    inst: &Instance,
    rendered: &Rendered,
    node: &BTreeMap<String, Vec<u8>>,
) -> Adoption {
    let mut out = Adoption::default();
    let mut patched = lab.clone();
    let mut adopted = Vec::new();
    for art in &rendered.artifacts {
        let Some(theirs) = node.get(&art.name) else {
            out.left.push(format!(
                "{}: missing on the node; the patch does not delete it from the repository",
                art.name
            ));
            continue;
        };
        if *theirs == art.bytes {
            continue;
        }
        let Ok(theirs) = std::str::from_utf8(theirs) else {
            out.left.push(format!("{}: not text on the node; copy it by hand", art.name));
            continue;
        };
        let Some(src) = source_mut(&mut patched, inst, &art.name) else {
            out.left.push(format!("{}: no repository text file renders it", art.name));
            continue;
        };
        let Ok(base) = std::str::from_utf8(&art.bytes) else { continue };
        let new = if src.text == base {
            theirs.to_owned()
        } else {
            match carry(base, &src.text, theirs) {
                Ok(text) => text,
                Err(lines) => {
                    out.left.push(format!(
                        "{}: the node's edit touches templated lines of `{}` (line {}); edit the template by hand",
                        art.name, src.path, lines
                    ));
                    continue;
                }
            }
        };
        let old = std::mem::replace(&mut src.text, new.clone());
        out.files.insert(src.path.clone(), (old, new));
        adopted.push(art.name.clone());
    }
    if out.files.is_empty() {
        return out;
    }
    // The proof: the patched repository renders the node's bytes, artifact for artifact.
    let again = render::render_instance(&patched, inst);
    let wrong: Vec<String> = match &again {
        Ok(r) => adopted
            .iter()
            .filter(|name| {
                let now = r.artifacts.iter().find(|a| &a.name == *name).map(|a| &a.bytes);
                now != node.get(*name)
            })
            .cloned()
            .collect(),
        Err(e) => vec![format!("the patched repository does not render: {e}")],
    };
    if !wrong.is_empty() {
        out.left.push(format!(
            "the patch would not render the node's bytes ({}); nothing offered",
            wrong.join(", ")
        ));
        out.files.clear();
    }
    out
}

/// The template `template` with the edits that turn its render `base` into `theirs`, where
/// every edited line of the render is a line the template writes as is (or an insertion
/// beside one). `Err`: the first template line (1-based) an edit falls on that templating
/// wrote.
fn carry(base: &str, template: &str, theirs: &str) -> Result<String, usize> {
    let lines = |s: &str| -> Vec<String> { s.split_inclusive('\n').map(str::to_owned).collect() };
    let (base, mut tmpl, theirs) = (lines(base), lines(template), lines(theirs));
    // Which template line wrote each render line as is.
    let mut from: Vec<Option<usize>> = vec![None; base.len()];
    for op in capture_diff_slices(Algorithm::Myers, &tmpl, &base) {
        let (tag, t, b) = op.as_tag_tuple();
        if tag == DiffTag::Equal {
            for (i, j) in t.zip(b) {
                from[j] = Some(i);
            }
        }
    }
    // The first unmapped template line near render line `j`, for the message.
    let near = |j: usize| (0..j).rev().find_map(|k| from[k]).map(|i| i + 2).unwrap_or(1);
    let mut edits: Vec<(std::ops::Range<usize>, Vec<String>)> = Vec::new();
    for op in capture_diff_slices(Algorithm::Myers, &base, &theirs) {
        let (tag, b, n) = op.as_tag_tuple();
        if tag == DiffTag::Equal {
            continue;
        }
        let new: Vec<String> = theirs[n].to_vec();
        let at = if b.is_empty() {
            // An insertion: after the line before it, or before the line after it.
            let after = b.start.checked_sub(1).and_then(|k| from[k]).map(|i| i + 1);
            let before = from.get(b.start).copied().flatten();
            match after.or(before).or((base.is_empty()).then_some(0)) {
                Some(i) => i..i,
                None => return Err(near(b.start)),
            }
        } else {
            let first = from[b.start].ok_or_else(|| near(b.start))?;
            for (k, j) in b.clone().enumerate() {
                if from[j] != Some(first + k) {
                    return Err(near(j));
                }
            }
            first..first + b.len()
        };
        edits.push((at, new));
    }
    for (at, new) in edits.into_iter().rev() {
        tmpl.splice(at, new);
    }
    Ok(tmpl.concat())
}

#[cfg(test)]
mod tests {
    use super::carry;

    #[test]
    fn an_edit_next_to_a_templated_line_is_carried_and_one_on_it_is_not() {
        let render = "a\nb\nc\nl1\nl2\n";
        let template = "a\nb\nc\n{% include %}\n";
        assert_eq!(
            carry(render, template, "a\nb\nC\nl1\nl2\n").unwrap(),
            "a\nb\nC\n{% include %}\n"
        );
        assert_eq!(
            carry(render, template, "a\nb\nc\nx\nl1\nl2\n").unwrap(),
            "a\nb\nc\nx\n{% include %}\n"
        );
        assert_eq!(carry(render, template, "b\nc\nl1\nl2\n").unwrap(), "b\nc\n{% include %}\n");
        assert_eq!(carry(render, template, "a\nb\nc\nl1\nL2\n"), Err(4));
        // A line the template renders with a value is templated too.
        assert_eq!(carry("x: 1\n", "x: {{ v }}\n", "x: 2\n"), Err(1));
    }
}
