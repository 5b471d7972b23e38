//! Line edits on a text: what `import` does to a published compose file, so the file keeps
//! its comments, order and layout and every change is one reviewed line. Pure: no IO.

use std::collections::BTreeMap;

/// One change to one line (1-based, of the original text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Replace the first `old` on the line with `new`.
    Replace { line: usize, old: String, new: String },
    /// Add a whole line (without its newline) after `line`.
    Insert { after: usize, text: String },
    /// Drop the line.
    Delete { line: usize },
}

/// An edit as the user reads it: where, what, why; and the operations that make it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    /// The file it is about, as the project names it.
    pub file: String,
    /// 1-based, in the file as published; `None` for the file as a whole.
    pub line: Option<usize>,
    pub field: String,
    pub what: String,
    pub why: String,
    pub ops: Vec<Op>,
}

impl Edit {
    /// `docker-compose.yml:12 services.db.container_name: set `app-db` (why)`.
    pub fn shown(&self) -> String {
        let at = match self.line {
            Some(l) => format!("{}:{l}", self.file),
            None => self.file.clone(),
        };
        let field = if self.field.is_empty() { String::new() } else { format!(" {}", self.field) };
        format!("{at}{field}: {} ({})", self.what, self.why)
    }
}

/// A replacement that did not find its text: the line as written is not what the parser
/// said (a value split over lines, an escape), so import cannot edit it safely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotFound {
    pub line: usize,
    pub old: String,
}

/// `text` with every operation applied. Lines keep their endings; an inserted line takes
/// `\n`.
pub fn apply(text: &str, ops: &[Op]) -> Result<String, NotFound> {
    let mut replace: BTreeMap<usize, Vec<(&str, &str)>> = BTreeMap::new();
    let mut insert: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
    let mut delete = std::collections::BTreeSet::new();
    for op in ops {
        match op {
            Op::Replace { line, old, new } => {
                replace.entry(*line).or_default().push((old, new));
            }
            Op::Insert { after, text } => insert.entry(*after).or_default().push(text),
            Op::Delete { line } => {
                delete.insert(*line);
            }
        }
    }
    let mut out = String::with_capacity(text.len() + 256);
    if let Some(lines) = insert.get(&0) {
        for l in lines {
            out.push_str(l);
            out.push('\n');
        }
    }
    for (i, l) in text.split_inclusive('\n').enumerate() {
        let n = i + 1;
        if !delete.contains(&n) {
            let mut l = l.to_owned();
            for (old, new) in replace.get(&n).into_iter().flatten() {
                let Some(at) = l.find(old) else {
                    return Err(NotFound { line: n, old: (*old).to_owned() });
                };
                l.replace_range(at..at + old.len(), new);
            }
            out.push_str(&l);
        }
        if let Some(lines) = insert.get(&n) {
            if !out.ends_with('\n') && !out.is_empty() {
                out.push('\n');
            }
            for l in lines {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    Ok(out)
}

/// The indentation (spaces) of a line.
pub fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// Whether a line holds nothing for YAML (blank or a comment).
pub fn is_blank(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#')
}

/// The last line (1-based) of the block that starts at `start`: the lines after it that are
/// blank or indented deeper (trailing blank lines left out).
pub fn block_end(lines: &[&str], start: usize) -> usize {
    let Some(first) = start.checked_sub(1).and_then(|i| lines.get(i)) else { return start };
    let base = indent(first);
    let mut end = start;
    for (i, l) in lines.iter().enumerate().skip(start) {
        if is_blank(l) {
            continue;
        }
        if indent(l) > base {
            end = i + 1;
        } else {
            break;
        }
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_apply_to_the_lines_of_the_original() {
        let text = "a: 1\nb: 2\nc: 3";
        let ops = vec![
            Op::Replace { line: 2, old: "2".into(), new: "two".into() },
            Op::Insert { after: 1, text: "  x: y".into() },
            Op::Delete { line: 1 },
            Op::Insert { after: 3, text: "d: 4".into() },
        ];
        assert_eq!(apply(text, &ops).unwrap(), "  x: y\nb: two\nc: 3\nd: 4\n");
        let missing = vec![Op::Replace { line: 1, old: "zz".into(), new: "".into() }];
        assert_eq!(apply(text, &missing), Err(NotFound { line: 1, old: "zz".into() }));
    }

    #[test]
    fn a_block_ends_where_the_indentation_comes_back() {
        let lines = ["a:", "  b: 1", "", "  # c", "  c:", "    d", "e: 2"];
        assert_eq!(block_end(&lines, 1), 6);
        assert_eq!(block_end(&lines, 5), 6);
        assert_eq!(block_end(&lines, 7), 7);
    }
}
