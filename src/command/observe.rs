//! `homelab observe`: the guide's Observer. Each pass reads every node's new events (one
//! command per node) and folds them into `<controller root>/world/`; `--once` (the default)
//! does one pass, catching up in as many as a backlog needs, `--watch` one every `--interval`
//! seconds until stopped. The fold and the files are `crate::world`'s; this file owns the
//! clock, the loop and what is printed.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::args::Target;
use super::Selection;
use crate::error::{Error, Report};
use crate::world::{self, PassReport};

pub struct ObserveArgs<'a> {
    pub target: &'a Target,
    pub watch: bool,
    pub interval: u64,
}

/// How many passes `--once` makes at most to catch up a backlog larger than one pass reads.
const CATCH_UP: usize = 64;

pub fn run(repo: &Path, args: &ObserveArgs<'_>, out: &mut dyn Write) -> Result<Report, Error> {
    let lab = super::load(repo)?;
    let sel = Selection::of(repo, &lab, args.target)?;
    let root = args.target.controller.root(args.target.root.as_ref());
    let nodes: Vec<_> = sel.nodes.iter().map(|n| &lab.nodes[n]).collect();
    let pass = || {
        let now = crate::clock::rfc3339(SystemTime::now());
        world::pass(sel.transport.as_ref(), &nodes, &root, &now, world::pull::BUDGET).map_err(|e| {
            match e {
                world::StoreError::Read { path, source } => Error::Read { path, source },
                world::StoreError::Write { path, source } => Error::Write { path, source },
            }
        })
    };
    if args.watch {
        loop {
            match pass() {
                Ok(r) => show(out, &r, &root).map_err(Error::stdout)?,
                // A pass that cannot save is tried again next time: the disk may come back.
                Err(e) => eprintln!("error: {e}"),
            }
            out.flush().map_err(Error::stdout)?;
            std::thread::sleep(Duration::from_secs(args.interval.max(1)));
        }
    }
    let mut last = pass()?;
    show(out, &last, &root).map_err(Error::stdout)?;
    for _ in 1..CATCH_UP {
        if !last.more() {
            break;
        }
        last = pass()?;
        show(out, &last, &root).map_err(Error::stdout)?;
    }
    let unread: Vec<String> = last.unread().iter().map(|n| n.node.clone()).collect();
    if !unread.is_empty() {
        return Err(Error::Unreachable {
            nodes: unread,
            then: "the world holds the other nodes' events; theirs are read when they answer"
                .to_owned(),
        });
    }
    Ok(Report::Success)
}

/// One line per node, then where the world is and whether it changed.
fn show(out: &mut dyn Write, r: &PassReport, root: &Path) -> std::io::Result<()> {
    if let Some(why) = &r.fresh {
        writeln!(out, "starting the world afresh: {why}")?;
    }
    for n in &r.nodes {
        match &n.read {
            Err(reason) => writeln!(out, "{}: could not read: {reason}", n.node)?,
            Ok(read) => {
                let mut line = match read.events {
                    0 => "no new events".to_owned(),
                    1 => "1 event".to_owned(),
                    k => format!("{k} events"),
                };
                if read.skipped > 0 {
                    line.push_str(&format!(", {} torn line(s) skipped", read.skipped));
                }
                if read.held > 0 {
                    line.push_str(&format!(
                        ", {} byte(s) of an unfinished line held back",
                        read.held
                    ));
                }
                if !read.rewritten.is_empty() {
                    line.push_str(&format!(
                        ", read again from the start (rewritten): {}",
                        read.rewritten.join(", ")
                    ));
                }
                if read.more {
                    line.push_str(", more to read");
                }
                writeln!(out, "{}: {line}", n.node)?;
            }
        }
    }
    let world = root.join("world");
    let state = if r.changed { "updated" } else { "unchanged" };
    writeln!(out, "world {state}: {}", world.display())
}
