//! The command line: every command's `--help` carries an example.

use crate::support::{homelab_in, repo_root};

#[test]
fn every_command_has_an_example_in_its_help() {
    let commands = [
        vec![],
        vec!["validate"],
        vec!["graph"],
        vec!["render"],
        vec!["plan"],
        vec!["show"],
        vec!["approve"],
        vec!["reject"],
        vec!["apply"],
        vec!["unlock"],
        vec!["events"],
        vec!["events", "emit"],
        vec!["events", "tail"],
    ];
    for cmd in commands {
        let mut args = cmd.clone();
        args.push("--help");
        let out = homelab_in(&repo_root(), &args);
        assert_eq!(out.code, 0, "{cmd:?}: {}", out.stderr);
        assert!(out.stdout.contains("Example"), "{cmd:?} has no example:\n{}", out.stdout);
        assert!(out.stdout.contains("homelab "), "{cmd:?}");
    }
}
