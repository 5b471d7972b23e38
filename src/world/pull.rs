//! Reading a node's new events: one fixed script per node per pass, run through `NodeExec`,
//! and the pure half that turns its answer into events and the next cursors.
//!
//! A cursor says, per day file of a node, the file's inode and the byte offset after the last
//! whole line read. The script sends, for every day file of the node, its inode and size and
//! the bytes after the cursor (all of them for a file it has no cursor for, or whose inode
//! changed or that got shorter: a rewritten file is read again from its start). Only whole
//! lines are consumed: a torn last line is held back until a writer completes it. Every value
//! reaches the script as a positional argument or on stdin, never inside its text.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::event::{Event, Skip};
use crate::transport::{NodeExec, Output};

/// Where the observer stopped in one day file of a node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub inode: u64,
    /// The byte after the last whole line read.
    pub offset: u64,
}

/// A node's cursors, by day (`YYYY-MM-DD`).
pub type NodeCursors = BTreeMap<String, Cursor>;

/// At most this many bytes of a node's events in one pass (the rest comes in the next): a node
/// back after a long time offline must not make one answer of unbounded size.
pub const BUDGET: u64 = 8 << 20;

/// Lists the node's day files (`<events>/<day>/<node>/events.jsonl`, the paths
/// `node::Layout::events` spells; the script globs them and must move with it), joins them with
/// the cursors on stdin (`day offset inode` lines), and answers per file
/// `file DAY INODE SIZE FROM N`, then N bytes from FROM and a newline; then `end`. `$1` is the
/// events folder, `$2` the node, `$3` the byte budget of the pass.
pub const PULL_SCRIPT: &str = r#"set -u
ev=$1; node=$2; left=$3
echo "homelab-events 1"
if [ -e "$ev" ] && [ ! -d "$ev" ]; then echo "$ev is not a folder" >&2; exit 3; fi
if [ ! -e "$ev" ]; then echo end; exit 0; fi
if [ ! -r "$ev" ] || [ ! -x "$ev" ]; then echo "cannot read $ev" >&2; exit 3; fi
{ stat -c '%i %s %n' -- "$ev"/*/"$node"/events.jsonl 2>/dev/null; echo --; cat; } | awk '
  c == 0 && $0 == "--" { c = 1; next }
  c == 0 {
    p = $0; sub(/^[^ ]* [^ ]* /, "", p); k = split(p, q, "/"); d = q[k - 2]
    if (d !~ /^[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]$/) next
    n++; day[n] = d; ino[d] = $1; size[d] = $2; next
  }
  NF == 3 { off[$1] = $2; cino[$1] = $3 }
  END {
    for (i = 1; i <= n; i++) {
      d = day[i]; from = 0
      if ((d in off) && cino[d] == ino[d] && off[d] + 0 <= size[d] + 0) from = off[d]
      print d, ino[d], size[d], from
    }
  }' | {
  while read -r d i s from; do
    n=$((s - from))
    if [ "$n" -gt "$left" ]; then n=$left; fi
    if [ "$n" -lt 0 ]; then n=0; fi
    echo "file $d $i $s $from $n"
    if [ "$n" -gt 0 ]; then
      tail -c +"$((from + 1))" -- "$ev/$d/$node/events.jsonl" | head -c "$n"
      left=$((left - n))
    fi
    echo
  done
  echo end
}
"#;

/// The pull's answer written by this program, on the node: what [`PULL_SCRIPT`] prints for
/// the events folder `events`, the node `node`, the cursor lines `cursors` (its stdin) and the
/// byte budget `budget`, read with the file system's calls instead of `stat`, `awk`, `tail` and
/// `head`. The node's engine answers an `events` request with it, and the local transport
/// reads its events with it in process. One difference, on purpose: a file that shrinks between
/// its size being read and its bytes is announced with the bytes really read, where the
/// script's announced count would no longer match (and the observer retries).
pub fn answer(events: &std::path::Path, node: &str, cursors: &str, budget: u64) -> Output {
    use std::io::{Read, Seek};
    use std::os::unix::fs::MetadataExt;
    let refuse = |out: Vec<u8>, why: String| Output {
        status: Some(3),
        stdout: out,
        stderr: format!("{why}\n").into_bytes(),
    };
    let mut out = b"homelab-events 1\n".to_vec();
    let is_day = |d: &[u8]| {
        d.len() == 10
            && d.iter().enumerate().all(|(i, b)| match i {
                4 | 7 => *b == b'-',
                _ => b.is_ascii_digit(),
            })
    };
    match std::fs::metadata(events) {
        Ok(m) if !m.is_dir() => {
            return refuse(out, format!("{} is not a folder", events.display()));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            out.extend_from_slice(b"end\n");
            return Output { status: Some(0), stdout: out, stderr: Vec::new() };
        }
        Err(e) => return refuse(out, format!("cannot read {}: {e}", events.display())),
    }
    let days = match std::fs::read_dir(events) {
        Ok(entries) => {
            let mut days: Vec<Vec<u8>> = entries
                .flatten()
                .map(|e| std::os::unix::ffi::OsStrExt::as_bytes(e.file_name().as_os_str()).to_vec())
                .filter(|d| is_day(d))
                .collect();
            days.sort();
            days
        }
        Err(e) => return refuse(out, format!("cannot read {}: {e}", events.display())),
    };
    let mut known: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for l in cursors.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if let [day, offset, inode] = f.as_slice() {
            // awk reads a field that is not a number as 0.
            let num = |s: &str| s.parse::<u64>().unwrap_or(0);
            known.insert(day, (num(offset), num(inode)));
        }
    }
    let mut left = budget;
    for day in days {
        let day = String::from_utf8(day).unwrap_or_default();
        let path = events.join(&day).join(node).join("events.jsonl");
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        let (inode, size) = (meta.ino(), meta.size());
        let from = match known.get(day.as_str()) {
            Some((offset, i)) if *i == inode && *offset <= size => *offset,
            _ => 0,
        };
        let want = size.saturating_sub(from).min(left);
        let mut bytes = Vec::new();
        if want > 0 {
            let read = std::fs::File::open(&path).and_then(|mut f| {
                f.seek(std::io::SeekFrom::Start(from))?;
                f.take(want).read_to_end(&mut bytes)
            });
            if read.is_err() {
                bytes.clear();
            }
        }
        let n = bytes.len() as u64;
        out.extend_from_slice(format!("file {day} {inode} {size} {from} {n}\n").as_bytes());
        out.extend_from_slice(&bytes);
        out.push(b'\n');
        left -= n;
    }
    out.extend_from_slice(b"end\n");
    Output { status: Some(0), stdout: out, stderr: Vec::new() }
}

/// One day file as the node answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRead {
    pub day: String,
    pub inode: u64,
    pub size: u64,
    /// Where `bytes` start in the file.
    pub from: u64,
    pub bytes: Vec<u8>,
}

/// The cursors as the pull script reads them on stdin: `day offset inode` lines.
pub fn cursor_lines(cursors: &NodeCursors) -> String {
    let mut stdin = String::new();
    for (day, c) in cursors {
        stdin.push_str(&format!("{day} {} {}\n", c.offset, c.inode));
    }
    stdin
}

/// Reads the node's new event bytes through its own homelab (`node serve`): one session, and
/// all a deploy key restricted to it can do. `None` where the transport has no sessions or the
/// node has no homelab yet (then [`pull`] reads them over the shell).
pub fn pull_by_session(
    transport: &dyn crate::transport::Transport,
    node: &crate::model::Node,
    cursors: &NodeCursors,
    budget: u64,
) -> Option<Result<Vec<FileRead>, String>> {
    use crate::wire::{self, Opened, Reply, Request};
    let request =
        Request::Events { node: node.id.to_string(), cursors: cursor_lines(cursors), budget };
    Some(match wire::ask(transport, node, &request) {
        Err(Opened::Here | Opened::NotInstalled(_)) => return None,
        Err(Opened::Mismatch(r) | Opened::Refused(r) | Opened::Unreachable(r)) => Err(r),
        Ok(Reply::Events { base64 }) => crate::digest::base64_decode(base64.as_bytes())
            .ok_or_else(|| "unexpected answer from the node: not base64".to_owned())
            .and_then(|bytes| {
                parse(&bytes).map_err(|e| format!("unexpected answer from the node: {e}"))
            }),
        Ok(Reply::Refused { reason }) => Err(reason),
        Ok(other) => Err(format!("the node's homelab answered out of turn: {other:?}")),
    })
}

/// Reads the node's new event bytes: one command. An error is why the node could not be read.
pub fn pull(
    exec: &dyn NodeExec,
    events_root: &str,
    node: &str,
    cursors: &NodeCursors,
    budget: u64,
) -> Result<Vec<FileRead>, String> {
    let stdin = cursor_lines(cursors);
    let out = if exec.on_this_machine() {
        answer(std::path::Path::new(events_root), node, &stdin, budget)
    } else {
        let budget = budget.to_string();
        exec.run(
            &["sh", "-c", PULL_SCRIPT, "sh", events_root, node, &budget],
            stdin.as_bytes(),
            Duration::from_secs(120),
        )
        .map_err(|e| e.to_string())?
    };
    if !out.success() {
        return Err(format!("cannot read its events: {}", out.stderr_text()));
    }
    parse(&out.stdout).map_err(|e| format!("unexpected answer from the node: {e}"))
}

/// The script's answer.
pub fn parse(bytes: &[u8]) -> Result<Vec<FileRead>, String> {
    let mut at = 0;
    let line = |at: &mut usize| -> Result<String, String> {
        let rest = &bytes[(*at).min(bytes.len())..];
        let end = rest.iter().position(|b| *b == b'\n').ok_or("cut short")?;
        *at += end + 1;
        String::from_utf8(rest[..end].to_vec()).map_err(|_| "a header is not UTF-8".to_owned())
    };
    if line(&mut at)? != "homelab-events 1" {
        return Err("not an events answer".to_owned());
    }
    let mut files = Vec::new();
    loop {
        let l = line(&mut at)?;
        if l == "end" {
            return Ok(files);
        }
        let f: Vec<&str> = l.split(' ').collect();
        let [kw, day, inode, size, from, n] = f.as_slice() else {
            return Err(format!("unexpected line `{l}`"));
        };
        let num = |s: &str| s.parse::<u64>().map_err(|_| format!("unexpected line `{l}`"));
        if *kw != "file" {
            return Err(format!("unexpected line `{l}`"));
        }
        let (inode, size, from, n) = (num(inode)?, num(size)?, num(from)?, num(n)?);
        let n = usize::try_from(n).map_err(|_| format!("unexpected line `{l}`"))?;
        let chunk = bytes.get(at..at + n).ok_or("cut short in a file's bytes")?;
        if bytes.get(at + n) != Some(&b'\n') {
            return Err(format!("the bytes of {day} are not the {n} announced"));
        }
        at += n + 1;
        files.push(FileRead { day: (*day).to_owned(), inode, size, from, bytes: chunk.to_vec() });
    }
}

/// What one file's bytes gave.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Taken {
    pub events: Vec<Event>,
    /// Lines that were not events (torn by a crash, or without a type or time).
    pub skipped: usize,
    /// Bytes of a last line not yet whole, left for the next pass.
    pub held: u64,
    /// The file was read again from its start (its inode changed or it got shorter).
    pub rewritten: bool,
    /// Bytes were left for the next pass (the budget ran out).
    pub more: bool,
    pub cursor: Cursor,
}

/// The events of one file's bytes, and the cursor after its last whole line. Pure.
pub fn take(node: &str, read: &FileRead, before: Option<&Cursor>) -> Taken {
    let rewritten = before.is_some_and(|c| c.offset != read.from);
    let bytes = &read.bytes;
    let cut_by_budget = read.from + (bytes.len() as u64) < read.size;
    let whole = match bytes.iter().rposition(|b| *b == b'\n') {
        Some(i) => i + 1,
        // A line longer than a whole pass's budget can never be read whole: skip it.
        None if cut_by_budget => bytes.len(),
        None => 0,
    };
    let mut t = Taken {
        rewritten,
        more: cut_by_budget,
        held: (bytes.len() - whole) as u64,
        cursor: Cursor { inode: read.inode, offset: read.from + whole as u64 },
        ..Taken::default()
    };
    let mut start = 0;
    while start < whole {
        let end = bytes[start..whole].iter().position(|b| *b == b'\n').map_or(whole, |i| start + i);
        let l = &bytes[start..end];
        if !l.trim_ascii().is_empty() {
            match Event::parse(l, node, &read.day, read.from + start as u64) {
                Ok(e) => t.events.push(e),
                Err(Skip::Torn | Skip::Malformed) => t.skipped += 1,
            }
        }
        start = end + 1;
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(events: &std::path::Path, node: &str, cursors: &str, budget: u64) -> Output {
        let mut child = std::process::Command::new("sh")
            .args(["-c", PULL_SCRIPT, "sh"])
            .arg(events)
            .args([node, &budget.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(cursors.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        Output { status: out.status.code(), stdout: out.stdout, stderr: out.stderr }
    }

    /// The answer written in process is the script's, byte for byte: day files with and
    /// without cursors, a cursor of another inode and one past the end (read again from the
    /// start), a torn last line, another node's files, folders that are not days, a budget
    /// that runs out in the middle of a file and one that runs out before a file.
    #[test]
    fn the_answer_is_the_scripts_byte_for_byte() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let ev = dir.path().join("events $(x)");
        let w = |day: &str, node: &str, text: &str| {
            let p = ev.join(day).join(node);
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join("events.jsonl"), text).unwrap();
        };
        w("2026-11-28", "a", &format!("{A}\n{A}\n"));
        w("2026-11-29", "a", &format!("{A}\n{A}\n{A}\n"));
        w("2026-11-30", "a", &format!("{A}\n{{\"torn"));
        w("2026-12-01", "a", &format!("{A}\n"));
        w("2026-11-30", "b", &format!("{A}\n"));
        w("notaday", "a", &format!("{A}\n"));
        w(".2026-11-27", "a", &format!("{A}\n"));
        let inode =
            |day: &str| std::fs::metadata(ev.join(day).join("a/events.jsonl")).unwrap().ino();
        let cursors = format!(
            "2026-11-28 {} {}\n2026-11-29 {} {}\n2026-11-30 99999 {}\nnot a cursor line here\n",
            A.len() + 1,
            inode("2026-11-28"),
            A.len() + 1,
            inode("2026-11-29") + 1,
            inode("2026-11-30"),
        );
        for budget in [0, 10, (A.len() as u64) * 3, 8 << 20] {
            for c in ["", cursors.as_str()] {
                let (ours, theirs) = (answer(&ev, "a", c, budget), script(&ev, "a", c, budget));
                assert_eq!(
                    ours.status,
                    theirs.status,
                    "{}",
                    String::from_utf8_lossy(&theirs.stderr)
                );
                assert_eq!(
                    String::from_utf8_lossy(&ours.stdout),
                    String::from_utf8_lossy(&theirs.stdout),
                    "budget {budget}, cursors {c:?}"
                );
                assert!(parse(&ours.stdout).is_ok());
            }
        }
        // No events folder yet, and one that is a file.
        let missing = dir.path().join("missing");
        assert_eq!(answer(&missing, "a", "", 10).stdout, script(&missing, "a", "", 10).stdout);
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let (ours, theirs) = (answer(&file, "a", "", 10), script(&file, "a", "", 10));
        assert_eq!((ours.status, ours.stdout), (theirs.status, theirs.stdout));
        assert_eq!(ours.stderr, theirs.stderr);
    }

    fn read(from: u64, bytes: &[u8], size: u64) -> FileRead {
        FileRead { day: "2026-11-30".into(), inode: 7, size, from, bytes: bytes.to_vec() }
    }

    const A: &str = r#"{"time":"2026-11-30T01:00:00Z","type":"node_online","node":"a"}"#;

    #[test]
    fn answers_parse_and_bad_ones_are_refused() {
        let a =
            b"homelab-events 1\nfile 2026-11-30 7 10 4 3\nabc\nfile 2026-12-01 8 0 0 0\n\nend\n";
        let f = parse(a).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!((f[0].inode, f[0].size, f[0].from, &f[0].bytes[..]), (7, 10, 4, &b"abc"[..]));
        assert!(parse(b"homelab-events 1\nfile 2026-11-30 7 10 4 3\nab\nend\n").is_err());
        assert!(parse(b"homelab-events 1\nfile 2026-11-30 7 10 4 3\nabc\n").is_err());
        assert!(parse(b"hello\nend\n").is_err());
        assert!(parse(b"homelab-events 1\nfile x\nend\n").is_err());
    }

    #[test]
    fn only_whole_lines_are_taken_and_a_torn_one_is_counted() {
        let torn = "{\"time\": \"20\n";
        let text = format!("{A}\n{torn}{A}\n{{\"time\":");
        let t = take("a", &read(100, text.as_bytes(), 100 + text.len() as u64), None);
        assert_eq!(t.events.len(), 2);
        assert_eq!(t.skipped, 1);
        assert_eq!(t.held, 8);
        assert_eq!(t.cursor.offset, 100 + text.len() as u64 - 8);
        assert_eq!(t.events[0].key.offset, 100);
        assert_eq!(t.events[1].key.offset, 100 + (A.len() + 1 + torn.len()) as u64);
        assert!(!t.rewritten && !t.more);
        // A cursor that does not match where the bytes start: the file was rewritten.
        let t = take("a", &read(0, b"", 0), Some(&Cursor { inode: 7, offset: 50 }));
        assert!(t.rewritten);
        assert_eq!(t.cursor.offset, 0);
        // A line longer than the budget is skipped, not waited for forever.
        let t = take("a", &read(0, b"xxxx", 100), None);
        assert_eq!((t.cursor.offset, t.more), (4, true));
    }
}
