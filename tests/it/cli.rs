//! The command line: every command's `--help` carries an example; exit codes scripts can trust
//! (a usage error or an unread node is 1, never 0 or 2); the small things users hit.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::support::{homelab_in, repo_root, Key, Lab, Output, Tree};

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
        vec!["completions"],
        vec!["bootstrap"],
        vec!["observe"],
        vec!["agent"],
        vec!["pr"],
        vec!["supervise"],
        vec!["executor"],
        vec!["adopt"],
        vec!["import"],
        vec!["ui"],
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

/// `homelab <args>` run from `dir` with no `--repo` and no `HOMELAB_REPO`.
fn homelab_at(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_homelab"))
        .current_dir(dir)
        .args(args)
        .env_remove("HOMELAB_REPO")
        .env_remove("HOMELAB_ROOT")
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .output()
        .expect("run homelab");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn a_usage_error_exits_1_never_2_and_help_and_version_exit_0() {
    let out = homelab_in(&repo_root(), &["plan", "--no-such-option"]);
    assert_eq!(out.code, 1, "2 means the plan has changes: {}", out.stderr);
    assert!(out.stderr.contains("--no-such-option"), "{}", out.stderr);
    let out = homelab_in(&repo_root(), &["frobnicate"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let out =
        homelab_in(&repo_root(), &["plan", "--detailed-exitcode", "--transport", "carrier-pigeon"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    for args in [&["--help"][..], &["--version"], &["plan", "--help"]] {
        let out = homelab_in(&repo_root(), args);
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
        assert!(!out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn the_repository_is_found_from_any_folder_inside_it_like_git() {
    let tree = Tree::base();
    let deep = tree.path().join("services/broker");
    let out = homelab_at(&deep, &["validate"], &[]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let out = homelab_at(&tree.path().join("inventory"), &["graph"], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("broker@edge-a"), "{}", out.stdout);
    // `--repo` and HOMELAB_REPO still win over the search.
    let elsewhere = tempfile::tempdir().unwrap();
    let out = homelab_at(&deep, &["validate", "--repo", elsewhere.path().to_str().unwrap()], &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let out =
        homelab_at(&deep, &["validate"], &[("HOMELAB_REPO", elsewhere.path().to_str().unwrap())]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    // Outside any repository: the current folder, whose load says what is missing.
    let out = homelab_at(elsewhere.path(), &["validate"], &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("expected the folder `inventory/`"), "{}", out.stderr);
}

#[test]
fn apply_names_its_positional_argument_and_completions_exist_for_bash_zsh_fish() {
    let out = homelab_in(&repo_root(), &["apply", "--help"]);
    assert_eq!(out.code, 0);
    assert!(
        out.stdout.contains("<APPROVED>") && out.stdout.contains("The approved plan to apply"),
        "{}",
        out.stdout
    );
    for (shell, marker) in
        [("bash", "complete -F"), ("zsh", "#compdef homelab"), ("fish", "complete -c homelab")]
    {
        let out = homelab_in(&repo_root(), &["completions", shell]);
        assert_eq!(out.code, 0, "{shell}: {}", out.stderr);
        assert!(out.stdout.contains(marker), "{shell}: {}", out.stdout);
        assert!(out.stdout.contains("detailed-exitcode"), "{shell}");
    }
    let out = homelab_in(&repo_root(), &["completions", "tcsh"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
}

/// `--stage` runs one stage once the ones before it are done, and a second `--stage` call of
/// a plan needs `--resume` (issue 21): `--help` says it as the README and apply's answer do.
#[test]
fn apply_help_says_what_stage_runs_and_that_the_next_call_takes_resume() {
    let out = homelab_in(&repo_root(), &["apply", "--help"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let help: String = out.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        help.contains("Run only this stage of the pipeline, once the stages before it are done (`--stage prepare` first); every later `--stage` of the plan takes `--resume`"),
        "{}",
        out.stdout
    );
}

/// A lab whose edge-b runtime root is a file: the local transport cannot read that node.
fn lab_with_an_unreadable_node() -> (Lab, Key) {
    let lab = Lab::new();
    let key = lab.keygen("operator");
    lab.allow(&[("operator@test", "", &key)]);
    lab.write("rt/edge-b", "not a folder\n");
    (lab, key)
}

#[test]
fn plan_with_a_node_it_could_not_read_exits_1_names_it_and_saves_nothing() {
    let (lab, key) = lab_with_an_unreadable_node();
    for extra in [&[][..], &["--detailed-exitcode"]] {
        let out = lab.plan_with(Some(&key), extra);
        assert_eq!(out.code, 1, "{extra:?}: {}{}", out.stdout, out.stderr);
        assert!(
            out.stderr.contains("error: could not read node `edge-b`: the plan was NOT saved"),
            "{}",
            out.stderr
        );
        assert!(out.stdout.contains("EDGE-B unreachable: "), "{}", out.stdout);
        assert!(!out.stdout.contains("unreachable: unreachable"), "{}", out.stdout);
        assert_eq!(plans(&lab), 0, "no plan claims edge-b has no changes");
        assert!(!lab.path("rt/actions").exists(), "no pending action");
    }
    // Without a key nothing is saved anyway; the status still says a node was not read.
    let out = lab.plan_with(None, &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    // Saved only when asked, and the status stays 1.
    let out = lab.plan_with(Some(&key), &["--allow-unreachable", "--detailed-exitcode"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("saved anyway (--allow-unreachable)"), "{}", out.stderr);
    assert_eq!(plans(&lab), 1);
}

fn plans(lab: &Lab) -> usize {
    fs::read_dir(lab.path("repo/plans")).map_or(0, |rd| {
        rd.filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "plan")).count()
    })
}

#[test]
fn the_readme_main_job_exits_0_and_says_once_that_no_engine_was_read() {
    let lab = Lab::new();
    let out = lab.homelab(&["plan", "--transport", "local", "--root", "rt"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        out.stdout.matches("container state was not read").count(),
        1,
        "once, not per node:\n{}",
        out.stdout
    );
    assert!(!out.stdout.contains("engine: unavailable"), "{}", out.stdout);
}

#[test]
fn unlock_without_a_lock_says_so_and_exits_0() {
    let lab = Lab::new();
    let args = ["unlock", "--transport", "local", "--root", "rt", "--node", "alpha"];
    let out = lab.homelab(&args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "alpha: not locked; nothing to remove\n");
    lab.write("rt/alpha/state/lock/holder.json", "{\"holder\": \"someone\"}\n");
    let out = lab.homelab(&args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.starts_with("alpha: removed the lock held by"), "{}", out.stdout);
    assert!(!lab.path("rt/alpha/state/lock").exists());
}

/// Runs `homelab` on a pseudo-terminal (util-linux `script`) with `TERM`, and no `NO_COLOR`.
fn on_a_terminal(lab: &Lab, term: &str) -> String {
    let bin = env!("CARGO_BIN_EXE_homelab");
    let cmd = format!("{bin} --repo repo plan --transport local --root rt");
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .current_dir(lab.path(""))
        .env_remove("NO_COLOR")
        .env("TERM", term)
        .output()
        .expect("cannot run `script` (util-linux)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn term_dumb_gets_no_colour() {
    let lab = Lab::new();
    assert!(on_a_terminal(&lab, "xterm-256color").contains('\u{1b}'), "colour on a terminal");
    let dumb = on_a_terminal(&lab, "dumb");
    assert!(dumb.contains("plan (not saved)"), "{dumb}");
    assert!(!dumb.contains('\u{1b}'), "{dumb}");
}

/// A reader that goes away (`homelab graph | head`) ends the command quietly: no error, no
/// panic, exit 0.
#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_homelab"))
        .arg("--repo")
        .arg(repo_root())
        .args(["graph"])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}
