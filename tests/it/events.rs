//! `homelab events`: the guide's argument order, one line per event, torn lines skipped.

use std::fs;
use std::process::Command;

fn homelab(root: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_homelab"))
        .args(args)
        .arg("--root")
        .arg(root)
        .env_remove("HOMELAB_ROOT")
        .env_remove("HOMELAB_NODE")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn emit_appends_lines_and_tail_skips_a_torn_one() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let (code, _, err) = homelab(
        r,
        &[
            "events",
            "emit",
            "deployment_started",
            "info",
            "my-script.sh",
            "mosquitto",
            "cid-123",
            "{}",
            "--node",
            "CHELSTY-INFRA",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = homelab(
        r,
        &[
            "events",
            "emit",
            "service_unhealthy",
            "error",
            "monitor.py",
            "ollama",
            "cid-124",
            r#"{"error": "OOM"}"#,
            "--node",
            "solaria",
        ],
    );
    assert_eq!(code, 0, "{err}");
    // A crash mid-write leaves half a line; the next event starts on a line of its own.
    let day = fs::read_dir(r.join("chelsty-infra/events")).unwrap().next().unwrap().unwrap().path();
    let file = day.join("chelsty-infra/events.jsonl");
    let mut text = fs::read_to_string(&file).unwrap();
    text.push_str("{\"time\": \"2026-11-25T10:00:00Z\", \"node\": \"chel");
    text.push('\n');
    fs::write(&file, text).unwrap();
    let (code, _, err) = homelab(
        r,
        &[
            "events",
            "emit",
            "deployment_completed",
            "info",
            "my-script.sh",
            "mosquitto",
            "cid-123",
            "--node",
            "chelsty-infra",
        ],
    );
    assert_eq!(code, 0, "{err}");

    let (code, out, err) = homelab(r, &["events", "tail", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let events: Vec<serde_json::Value> =
        out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events.len(), 3, "{out}");
    assert!(err.contains("skipped 1 torn line"), "{err}");
    let e = &events.iter().find(|e| e["service"] == "ollama").unwrap();
    assert_eq!(e["type"], "service_unhealthy");
    assert_eq!(e["severity"], "error");
    assert_eq!(e["source"], "monitor.py");
    assert_eq!(e["correlation_id"], "cid-124");
    assert_eq!(e["node"], "solaria");
    assert_eq!(e["data"]["error"], "OOM");
    let (_, out, _) = homelab(r, &["events", "tail", "--node", "chelsty-infra"]);
    assert_eq!(out.lines().count(), 2, "{out}");
}

#[test]
fn unknown_types_severities_and_non_object_data_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let (code, _, err) = homelab(
        r,
        &["events", "emit", "deployment_exploded", "info", "x", "y", "z", "--node", "piha"],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains(
            "unknown event type `deployment_exploded`: expected one of deployment_started"
        ),
        "{err}"
    );
    let (code, _, err) =
        homelab(r, &["events", "emit", "node_online", "loud", "x", "y", "z", "--node", "piha"]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown severity `loud`"), "{err}");
    let (code, _, err) = homelab(
        r,
        &["events", "emit", "node_online", "info", "x", "y", "z", "[1,2]", "--node", "piha"],
    );
    assert_eq!(code, 1);
    assert!(err.contains("expected a JSON object as data"), "{err}");
    assert!(!r.join("events").exists(), "nothing written");
}

#[test]
fn tail_of_a_missing_or_unreadable_root_or_an_unknown_node_is_an_error_naming_it() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let missing = r.join("nowhere");
    let (code, out, err) = homelab(&missing, &["events", "tail"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains(&format!("`{}` does not exist", missing.display())), "{err}");
    let file = r.join("a-file");
    fs::write(&file, "not a folder\n").unwrap();
    let (code, _, err) = homelab(&file, &["events", "tail"]);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("cannot read `{}`", file.display())), "{err}");
    let (code, _, err) = homelab(
        r,
        &["events", "emit", "node_online", "info", "x", "-", "c", "{}", "--node", "alpha"],
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = homelab(r, &["events", "tail", "--node", "nosuchnode"]);
    assert_eq!(code, 1, "{out}");
    assert!(err.contains("unknown node `nosuchnode`") && err.contains("`alpha`"), "{err}");
    let (code, out, err) = homelab(r, &["events", "tail", "--node", "alpha"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
}

#[test]
fn root_means_what_it_means_for_plan_and_apply_one_runtime_root_per_node() {
    // `apply --transport local --root rt` keeps node `alpha`'s events under rt/alpha/events/;
    // `events --root rt` reads and writes the same place.
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let (code, _, err) = homelab(
        r,
        &["events", "emit", "node_online", "info", "x", "-", "c", "{}", "--node", "alpha"],
    );
    assert_eq!(code, 0, "{err}");
    let day = fs::read_dir(r.join("alpha/events")).unwrap().next().unwrap().unwrap().path();
    assert!(day.join("alpha/events.jsonl").is_file());
    assert!(!r.join("events").exists());
    // Without `--root`: this node's own runtime root, $HOMELAB_ROOT.
    let out = Command::new(env!("CARGO_BIN_EXE_homelab"))
        .args(["events", "tail", "--format", "json"])
        .env("HOMELAB_ROOT", r.join("alpha"))
        .env_remove("HOMELAB_NODE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
}

/// Every event file under a `--root` folder (all nodes, all days), as bytes.
fn all_event_bytes(root: &std::path::Path) -> Vec<u8> {
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == "events.jsonl") {
                files.push(p);
            }
        }
    }
    files.sort();
    files.iter().flat_map(|f| fs::read(f).unwrap()).collect()
}

#[test]
fn bad_input_writes_nothing_and_says_which_argument_and_why() {
    let big = format!(r#"{{"output": "{}"}}"#, "x".repeat(4096));
    let cases: [(&[&str], &str); 11] = [
        (
            &["node_exploded", "info", "s", "web", "c", "{}"],
            "argument `type`: unknown event type `node_exploded`",
        ),
        (
            &["node_online", "loud", "s", "web", "c", "{}"],
            "argument `severity`: unknown severity `loud`",
        ),
        (&["node_online", "info", "s", "web", "c", "{oops"], "argument `data` is not JSON"),
        (
            &["node_online", "info", "s", "web", "c", "[1,2]"],
            "argument `data`: expected a JSON object as data, found an array",
        ),
        (&["node_online", "info", "s", "web", "c", "\"text\""], "found a string"),
        (
            &["node_online", "info", "my\nscript.sh", "web", "c", "{}"],
            "argument `source` holds a control character (U+000A) at character 2",
        ),
        (
            &["node_online", "info", "s", "web\u{1b}[31m", "c", "{}"],
            "argument `service` holds a control character (U+001B)",
        ),
        (
            &["node_online", "info", "s", "web", "c\r1", "{}"],
            "argument `correlation_id` holds a control character (U+000D)",
        ),
        (&["node_online", "info", "", "web", "c", "{}"], "argument `source` is empty"),
        (
            &["node_online", "info", "s", "web", "c", r#"{"db": {"DB_PASSWORD": "hunter2"}}"#],
            "key `DB_PASSWORD` is named like a secret",
        ),
        (
            &["node_online", "info", "s", "web", "c", &big],
            "bytes as a line, over the limit of 4096",
        ),
    ];
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for (args, why) in cases {
        let mut all = vec!["events", "emit"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--node", "piha"]);
        let (code, _, err) = homelab(r, &all);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains(why) && err.contains("nothing was written"), "{args:?}: {err}");
        assert_eq!(fs::read_dir(r).unwrap().count(), 0, "{args:?} wrote something");
    }
    // A newline inside a data string is JSON-escaped: the event stays one line.
    let (code, _, err) = homelab(
        r,
        &[
            "events",
            "emit",
            "node_online",
            "info",
            "s",
            "-",
            "c",
            r#"{"note": "a\nb"}"#,
            "--node",
            "piha",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let text = String::from_utf8(all_event_bytes(r)).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    let e: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
    assert_eq!(e["data"]["note"], "a\nb");
}

/// Runs `homelab events emit --stdin` for node `alpha` under `root` with `input`.
fn emit_stdin(root: &std::path::Path, input: Vec<u8>) -> std::process::Child {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_homelab"))
        .args(["events", "emit", "--stdin", "--node", "alpha", "--root"])
        .arg(root)
        .env_remove("HOMELAB_ROOT")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::thread::spawn(move || stdin.write_all(&input).unwrap());
    child
}

#[test]
fn a_bad_line_in_a_stdin_batch_writes_none_of_it() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let good = r#"{"type": "node_online", "severity": "info", "source": "agent", "service": "-", "correlation_id": "c1"}"#;
    let bad = r#"{"type": "node_online", "severity": "info", "source": "agent", "service": "-", "correlation_id": "c1", "data": {"api_key": "x"}}"#;
    let out = emit_stdin(r, format!("{good}\n\n{good}\n{bad}\n").into_bytes()).wait_with_output();
    let out = out.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("line 4 of stdin: argument `data`: key `api_key`"), "{err}");
    assert_eq!(fs::read_dir(r).unwrap().count(), 0, "nothing written");
    let out = emit_stdin(r, format!("{good}\n{{\"type\": \"node_online\"}}\n").into_bytes());
    let out = out.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2 of stdin: field `severity` is missing"), "{err}");
    assert_eq!(fs::read_dir(r).unwrap().count(), 0, "nothing written");
    let out = emit_stdin(r, format!("{good}\n{good}").into_bytes()).wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(all_event_bytes(r)).unwrap().lines().count(), 2);
}

const WRITERS: usize = 8;
const EACH: usize = 10_000;

/// Exactly `WRITERS * EACH` lines, each an intact event, each (writer, seq) once, and the
/// file ends with a newline.
fn assert_every_event_once(bytes: &[u8], started: std::time::Instant, what: &str) {
    assert_eq!(bytes.last(), Some(&b'\n'));
    let mut seen = vec![vec![false; EACH]; WRITERS];
    let mut lines = 0;
    for l in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        lines += 1;
        let e: serde_json::Value = serde_json::from_slice(l).unwrap_or_else(|err| {
            panic!("line {lines} torn ({err}): {}", String::from_utf8_lossy(l))
        });
        let (w, i) = (e["data"]["writer"].as_u64().unwrap(), e["data"]["seq"].as_u64().unwrap());
        assert!(!std::mem::replace(&mut seen[w as usize][i as usize], true), "({w}, {i}) twice");
    }
    assert_eq!(lines, WRITERS * EACH);
    assert!(seen.iter().flatten().all(|s| *s));
    eprintln!("{what}: {} lines in {:?}", lines, started.elapsed());
}

/// A line about 300 bytes long, with a multi-byte character: enough for a torn write to show.
fn batch_line(w: usize, i: usize) -> String {
    format!(
        r#"{{"type": "healthcheck_failed", "severity": "warning", "source": "writer-{w}", "service": "mosquitto", "correlation_id": "cid-{w}-{i}", "data": {{"writer": {w}, "seq": {i}, "output": "{}é"}}}}"#,
        "o".repeat(120)
    )
}

#[test]
fn eight_processes_of_ten_thousand_events_give_80000_intact_lines() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let started = std::time::Instant::now();
    let children: Vec<_> = (0..WRITERS)
        .map(|w| {
            let input: String = (0..EACH).map(|i| batch_line(w, i) + "\n").collect();
            emit_stdin(r, input.into_bytes())
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert_every_event_once(&all_event_bytes(r), started, "8 processes");
    let (code, out, err) = homelab(r, &["events", "tail", "--format", "json", "--node", "alpha"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), WRITERS * EACH);
    assert!(!err.contains("torn"), "{err}");
}

#[test]
fn eight_threads_of_ten_thousand_appends_give_80000_intact_lines() {
    use homelab::events::{Appender, Event, Kind, Severity};
    let root = tempfile::tempdir().unwrap();
    let file = homelab::events::path(&root.path().join("alpha"), "2026-11-30", "alpha");
    let started = std::time::Instant::now();
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let file = &file;
            s.spawn(move || {
                // Each writer its own open file, as each process has: the same path the CLI takes.
                let mut a = Appender::open(file).unwrap();
                for i in 0..EACH {
                    let e = Event::new(
                        Kind::HealthcheckFailed,
                        Severity::Warning,
                        &format!("writer-{w}"),
                        "mosquitto",
                        &format!("cid-{w}-{i}"),
                        "alpha",
                    )
                    .with("writer", w)
                    .with("seq", i)
                    .with("output", "o".repeat(120) + "é");
                    a.append(&e.to_line("2026-11-30T10:00:00Z").unwrap()).unwrap();
                }
            });
        }
    });
    assert_every_event_once(&fs::read(&file).unwrap(), started, "8 threads");
}

#[test]
fn a_torn_last_line_hides_nothing_and_the_next_event_starts_a_line_of_its_own() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let emit = |cid: &str| {
        let (code, _, err) = homelab(
            r,
            &[
                "events",
                "emit",
                "node_online",
                "info",
                "agent",
                "-",
                cid,
                r#"{"note": "café"}"#,
                "--node",
                "piha",
            ],
        );
        assert_eq!(code, 0, "{err}");
    };
    emit("c1");
    emit("c2");
    let day = fs::read_dir(r.join("piha/events")).unwrap().next().unwrap().unwrap().path();
    let file = day.join("piha/events.jsonl");
    // A crash mid-write: half a line, no newline, cut inside the two bytes of `é`.
    let mut bytes = fs::read(&file).unwrap();
    let whole = bytes.clone();
    let first = whole.split(|b| *b == b'\n').next().unwrap();
    let cut = first.iter().position(|b| *b == 0xc3).unwrap() + 1;
    bytes.extend_from_slice(&first[..cut]);
    fs::write(&file, &bytes).unwrap();

    let (code, out, err) = homelab(r, &["events", "tail", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(err.contains("skipped 1 torn line"), "{err}");

    emit("c3");
    let after = fs::read(&file).unwrap();
    assert!(after.starts_with(&bytes), "earlier bytes untouched");
    let rest = &after[bytes.len()..];
    assert_eq!(rest[0], b'\n', "the torn line is ended before the next event");
    let next: serde_json::Value = serde_json::from_slice(&rest[1..rest.len() - 1]).unwrap();
    assert_eq!(next["correlation_id"], "c3");
    let (code, out, err) = homelab(r, &["events", "tail", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let cids: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["correlation_id"].to_string()
        })
        .collect();
    assert_eq!(cids, [r#""c1""#, r#""c2""#, r#""c3""#]);
    assert!(err.contains("skipped 1 torn line"), "{err}");
}

/// The guide's examples, exactly as the guide gives them (homelab-guide.md, "Event System").
const GUIDE_SHELL: &str = r#"source scripts/lib/events.sh
emit_event "deployment_started" "info" "my-script.sh" "mosquitto" "cid-123" '{}'
"#;
const GUIDE_PYTHON: &str = r#"from scripts.lib.events import emit_event
emit_event("service_unhealthy", "error", "monitor.py", "ollama", "cid-123", {"error": "OOM"})
"#;

/// Runs `program args` in the repository (where the guide's examples run), with the runtime
/// root `root`, node `chelsty-infra` and `bin` as $HOMELAB_BIN (or, when None, on PATH only).
fn run_in_repo(
    program: &str,
    args: &[&str],
    root: &std::path::Path,
    bin: Option<&std::path::Path>,
) -> (i32, String) {
    let mut c = Command::new(program);
    c.args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("HOMELAB_ROOT", root)
        .env("HOMELAB_NODE", "CHELSTY-INFRA")
        .env_remove("HOMELAB_BIN");
    match bin {
        Some(b) => {
            c.env("HOMELAB_BIN", b);
        }
        None => {
            let dir = root.join("bin");
            fs::create_dir_all(&dir).unwrap();
            let link = dir.join("homelab");
            if !link.exists() {
                std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_homelab"), &link).unwrap();
            }
            let path = std::env::var("PATH").unwrap_or_default();
            c.env("PATH", format!("{}:{path}", dir.display()));
        }
    }
    let out = c.output().unwrap_or_else(|e| panic!("{program} must be installed: {e}"));
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn events_of(root: &std::path::Path) -> Vec<serde_json::Value> {
    let (events, torn) = homelab::events::read_all(root, None).unwrap();
    assert_eq!(torn, 0);
    events
}

#[test]
fn the_guides_shell_and_python_examples_run_unchanged() {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_homelab"));
    for via_path in [false, true] {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let b = if via_path { None } else { Some(bin) };
        let (code, err) = run_in_repo("bash", &["-c", GUIDE_SHELL], r, b);
        assert_eq!(code, 0, "{err}");
        let (code, err) = run_in_repo("python3", &["-c", GUIDE_PYTHON], r, b);
        assert_eq!(code, 0, "{err}");
        let events = events_of(r);
        assert_eq!(events.len(), 2, "{events:?}");
        let shell = events.iter().find(|e| e["source"] == "my-script.sh").unwrap();
        let python = events.iter().find(|e| e["source"] == "monitor.py").unwrap();
        for (e, kind, severity, service, data) in [
            (shell, "deployment_started", "info", "mosquitto", serde_json::json!({})),
            (python, "service_unhealthy", "error", "ollama", serde_json::json!({"error": "OOM"})),
        ] {
            assert_eq!(e["type"], kind);
            assert_eq!(e["severity"], severity);
            assert_eq!(e["service"], service);
            assert_eq!(e["correlation_id"], "cid-123");
            assert_eq!(e["node"], "chelsty-infra");
            assert_eq!(e["data"], data);
        }
    }
}

#[test]
fn the_wrappers_pass_values_as_they_are_and_report_refusals() {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_homelab"));
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let pwned = r.join("pwned");
    // Shell and quoting tricks arrive as plain text, never run.
    let hostile = format!("$(touch {p}) `touch {p}` '; touch {p}; '", p = pwned.display());
    let shell = r#"source scripts/lib/events.sh
emit_event node_online info "$1" -x cid '{"v": "$x"}'
emit_event node_exploded info s - c '{}' && exit 9
emit_event only two && exit 9
exit 0
"#;
    let (code, err) = run_in_repo("bash", &["-c", shell, "bash", &hostile], r, Some(bin));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("argument `type`: unknown event type `node_exploded`"), "{err}");
    assert!(
        err.contains("emit_event: expected TYPE SEVERITY SOURCE SERVICE CORRELATION_ID [DATA]"),
        "{err}"
    );
    let python = r#"import sys
from scripts.lib.events import emit_event, EventError
emit_event('node_online', 'info', sys.argv[1], '-x', 'cid', {'v': sys.argv[1]})
try:
    emit_event('node_online', 'info', 's', 'x', 'c', {'token': 'abc'})
    sys.exit(9)
except EventError as e:
    print(e, file=sys.stderr)
"#;
    let (code, err) = run_in_repo("python3", &["-c", python, &hostile], r, Some(bin));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("key `token` is named like a secret"), "{err}");
    assert!(!pwned.exists(), "a value was run as a command");
    let events = events_of(r);
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events.iter().all(|e| e["source"] == hostile.as_str() && e["service"] == "-x"));
    assert_eq!(events.iter().filter(|e| e["data"]["v"] == hostile.as_str()).count(), 1);
    assert_eq!(events.iter().filter(|e| e["data"]["v"] == "$x").count(), 1);
}

/// One session with `homelab node serve --root ROOT` run here (as sshd runs it on a node):
/// hello, `request`, and the one answer after the hellos.
fn serve_once(
    root: &std::path::Path,
    env: &[(&str, &str)],
    request: &homelab::wire::Request,
) -> homelab::wire::Reply {
    use homelab::wire::{self, Hello, Reply, Request};
    let mut child = Command::new(env!("CARGO_BIN_EXE_homelab"))
        .args(["node", "serve", "--root"])
        .arg(root)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    wire::send(&mut input, &Request::Hello(Hello::ours())).unwrap();
    wire::send(&mut input, request).unwrap();
    drop(input);
    let mut output = child.stdout.take().unwrap();
    let hello: Option<Reply> = wire::receive(&mut output).unwrap();
    assert!(matches!(hello, Some(Reply::Hello(_))), "{hello:?}");
    let reply: Reply = wire::receive(&mut output).unwrap().expect("an answer");
    assert!(child.wait().unwrap().success());
    reply
}

/// The observer's pull through a node's `serve` gives up on a read that hangs (an event file
/// that is a link to a FIFO nobody writes: its `open` never returns, as on a hung disk) once
/// `HOMELAB_EVENTS_TIMEOUT` has passed, saying so, and the session ends; once the file is an
/// ordinary one again, the next pull reads it.
#[test]
fn a_pull_of_events_that_hangs_is_given_up_after_its_timeout_and_the_next_pull_reads() {
    use homelab::wire::{Reply, Request};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let day = root.join("events/2026-12-06/alpha");
    fs::create_dir_all(&day).unwrap();
    let fifo = dir.path().join("hung");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    std::os::unix::fs::symlink(&fifo, day.join("events.jsonl")).unwrap();
    let pull =
        Request::Events { node: "alpha".to_owned(), cursors: String::new(), budget: 1 << 20 };
    let env = [("HOMELAB_EVENTS_TIMEOUT", "2")];
    let started = std::time::Instant::now();
    match serve_once(&root, &env, &pull) {
        Reply::Refused { reason } => {
            assert!(reason.contains("no answer within 2s"), "{reason}");
        }
        other => panic!("a hung read answered {other:?}"),
    }
    assert!(started.elapsed() >= std::time::Duration::from_secs(2), "gave up before its time");

    fs::remove_file(day.join("events.jsonl")).unwrap();
    let line = "{\"type\":\"deploy_succeeded\"}\n";
    fs::write(day.join("events.jsonl"), line).unwrap();
    match serve_once(&root, &env, &pull) {
        Reply::Events { base64 } => {
            let bytes = homelab::digest::base64_decode(base64.as_bytes()).expect("base64");
            let text = String::from_utf8_lossy(&bytes);
            assert!(text.contains("deploy_succeeded"), "{text}");
        }
        other => panic!("the next pull answered {other:?}"),
    }
}
