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
