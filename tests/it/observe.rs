//! `homelab observe`: events written into node roots by `homelab events emit` (or by hand, for
//! other days and torn lines) are folded into the controller's `world/`; a pass with nothing
//! new changes no byte, a lost cursor re-reads without changing a byte, a torn last line
//! waits until it is whole, an unreadable node is named and the others are folded. The last
//! tests do it over real SSH against lab nodes: one cut off with its agent running, and an
//! observer killed while it writes the world.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{copy_tree, fixtures, homelab_in, Output, Tree};

/// The base fixture (alpha, edge-a, edge-b), node roots under `nodes/<id>/` and a controller
/// root, all in temporary folders.
struct Observed {
    repo: Tree,
    nodes: tempfile::TempDir,
    ctl: tempfile::TempDir,
}

impl Observed {
    fn new() -> Observed {
        Observed {
            repo: Tree::base(),
            nodes: tempfile::tempdir().unwrap(),
            ctl: tempfile::tempdir().unwrap(),
        }
    }

    fn root(&self, node: &str) -> PathBuf {
        self.nodes.path().join(node)
    }

    /// `homelab events emit TYPE SEVERITY SOURCE SERVICE CID DATA --root <nodes> --node N`.
    fn emit(&self, node: &str, args: [&str; 6]) {
        let out = Command::new(env!("CARGO_BIN_EXE_homelab"))
            .args(["events", "emit"])
            .args(args)
            .arg("--root")
            .arg(self.nodes.path())
            .args(["--node", node])
            .env_remove("HOMELAB_ROOT")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    /// Appends raw bytes to a node's events file of `day`, as a writer (or a crash) leaves them.
    fn append(&self, node: &str, day: &str, bytes: &str) {
        let f = self.root(node).join(format!("events/{day}/{node}/events.jsonl"));
        fs::create_dir_all(f.parent().unwrap()).unwrap();
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(f)
            .unwrap()
            .write_all(bytes.as_bytes())
            .unwrap();
    }

    /// `homelab observe --once` over the local transport.
    fn observe(&self) -> Output {
        let (nodes, ctl) = (self.nodes.path().to_str().unwrap(), self.ctl.path().to_str().unwrap());
        let args = ["observe", "--once", "--transport", "local", "--root", nodes];
        homelab_in(self.repo.path(), &[&args[..], &["--controller-root", ctl]].concat())
    }

    fn observed(&self) -> Output {
        let out = self.observe();
        assert_eq!(out.code, 0, "stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
        out
    }

    /// The four world files, by name, as bytes.
    fn world(&self) -> BTreeMap<&'static str, Vec<u8>> {
        ["nodes", "services", "deployments", "incidents"]
            .into_iter()
            .map(|n| (n, fs::read(self.ctl.path().join(format!("world/{n}.json"))).unwrap()))
            .collect()
    }

    fn file(&self, name: &str) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_slice(&self.world()[name]).unwrap();
        assert_eq!(v["version"], 1);
        v[name].clone()
    }
}

/// An event line of `node` at `time`, as `homelab events emit` writes it.
fn line(time: &str, node: &str, kind: &str, service: &str, data: &str) -> String {
    let data: serde_json::Value = serde_json::from_str(data).unwrap();
    let v = serde_json::json!({
        "time": time, "node": node, "type": kind, "severity": "info", "source": "test",
        "service": service, "correlation_id": "-", "data": data,
    });
    format!("{v}\n")
}

#[test]
fn emitted_events_are_folded_and_a_pass_with_nothing_new_changes_no_byte() {
    let o = Observed::new();
    o.emit(
        "alpha",
        ["deployment_started", "info", "apply", "web", "p1", r#"{"action": "create"}"#],
    );
    o.emit(
        "alpha",
        ["deployment_completed", "info", "apply", "web", "p1", r#"{"action": "create"}"#],
    );
    o.emit(
        "alpha",
        ["service_unhealthy", "error", "monitor.py", "web", "cid-9", r#"{"error": "OOM"}"#],
    );
    o.emit("edge-a", ["node_offline", "warning", "agent", "-", "-", r#"{"link": "tailscale"}"#]);
    let out = o.observed();
    assert_eq!(
        out.stdout.lines().take(3).collect::<Vec<_>>(),
        ["alpha: 3 events", "edge-a: 1 event", "edge-b: no new events"],
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("world updated: "), "{}", out.stdout);

    let web = &o.file("services")["web@alpha"];
    assert_eq!(web["health"]["state"], "unhealthy");
    assert_eq!(web["health"]["reason"], "OOM");
    assert_eq!(web["release"]["plan"], "p1");
    assert_eq!(
        o.file("deployments")["p1"]["nodes"]["alpha"]["services"]["web"]["status"],
        "completed"
    );
    assert_eq!(o.file("deployments")["p1"]["status"], "completed");
    let incidents = o.file("incidents");
    let open: Vec<_> = incidents.as_object().unwrap().values().collect();
    assert_eq!(open.len(), 1, "{incidents:#}");
    assert_eq!(
        (open[0]["kind"].as_str(), open[0]["state"].as_str()),
        (Some("service_unhealthy"), Some("open"))
    );
    let nodes = o.file("nodes");
    assert_eq!(nodes["alpha"]["status"], "online");
    assert_eq!(nodes["alpha"]["site"], "home");
    assert_eq!(nodes["alpha"]["uplink"], "fiber");
    assert_eq!(nodes["edge-a"]["status"], "offline");
    assert_eq!(nodes["edge-a"]["links"]["tailscale"]["state"], "offline");
    assert_eq!(nodes["edge-b"]["last_seen"], serde_json::Value::Null);

    let before = o.world();
    let cursors = fs::read(o.ctl.path().join("state/observer/cursors.json")).unwrap();
    let out = o.observed();
    assert!(out.stdout.contains("alpha: no new events"), "{}", out.stdout);
    assert!(out.stdout.contains("world unchanged"), "{}", out.stdout);
    assert_eq!(o.world(), before);
    assert_eq!(fs::read(o.ctl.path().join("state/observer/cursors.json")).unwrap(), cursors);

    // The recovery closes the incident.
    o.emit("alpha", ["service_recovered", "info", "agent", "web", "-", "{}"]);
    o.observed();
    let incidents = o.file("incidents");
    let i = incidents.as_object().unwrap().values().next().unwrap();
    assert_eq!(
        (i["state"].as_str(), i["resolution"].as_str()),
        (Some("closed"), Some("service_recovered"))
    );
    assert_eq!(o.file("services")["web@alpha"]["health"]["state"], "healthy");
}

#[test]
fn events_read_again_after_a_lost_cursor_change_no_byte() {
    let o = Observed::new();
    o.emit("alpha", ["deployment_started", "info", "apply", "web", "p1", "{}"]);
    o.emit("alpha", ["deployment_failed", "error", "apply", "web", "p1", r#"{"reason": "x"}"#]);
    o.emit("edge-b", ["service_unhealthy", "error", "agent", "app", "-", "{}"]);
    // Yesterday web was unhealthy; today it recovered.
    let yesterday = line("2026-11-29T10:00:00Z", "alpha", "service_unhealthy", "web", "{}");
    o.append("alpha", "2026-11-29", &yesterday);
    o.append(
        "alpha",
        "2026-11-29",
        &line("2026-11-29T11:00:00Z", "alpha", "service_unhealthy", "web", "{}"),
    );
    o.append(
        "alpha",
        "2026-11-30",
        &line("2026-11-30T09:00:00Z", "alpha", "service_recovered", "web", "{}"),
    );
    o.observed();
    let before = o.world();
    assert_eq!(o.file("services")["web@alpha"]["health"]["state"], "healthy");

    // Yesterday's cursor lost alone: its events come again after today's, and change nothing.
    let cursors = o.ctl.path().join("state/observer/cursors.json");
    let mut c: serde_json::Value = serde_json::from_slice(&fs::read(&cursors).unwrap()).unwrap();
    c["nodes"]["alpha"].as_object_mut().unwrap().remove("2026-11-29").unwrap();
    fs::write(&cursors, c.to_string()).unwrap();
    let out = o.observed();
    assert!(out.stdout.contains("alpha: 2 events"), "{}", out.stdout);
    assert!(out.stdout.contains("world unchanged"), "{}", out.stdout);
    assert_eq!(o.world(), before);

    // Every cursor lost: everything is read again, folded to no effect.
    fs::remove_file(&cursors).unwrap();
    let out = o.observed();
    assert!(out.stdout.contains("alpha: 5 events"), "{}", out.stdout);
    assert!(out.stdout.contains("world unchanged"), "{}", out.stdout);
    assert_eq!(o.world(), before);

    // Without its world, the observer folds every event again into the same records.
    fs::remove_dir_all(o.ctl.path().join("world")).unwrap();
    o.observed();
    let after = o.world();
    for name in ["services", "deployments", "incidents"] {
        assert_eq!(after[name], before[name], "{name}");
    }
}

#[test]
fn new_events_and_new_days_are_picked_up_where_the_last_pass_stopped() {
    let o = Observed::new();
    o.append(
        "edge-a",
        "2026-11-28",
        &line("2026-11-28T23:00:00Z", "edge-a", "node_online", "-", "{}"),
    );
    o.observed();
    assert_eq!(o.file("nodes")["edge-a"]["last_seen"], "2026-11-28T23:00:00Z");
    // Offline for two days: its agent went on writing, a day file per day.
    o.append(
        "edge-a",
        "2026-11-28",
        &line(
            "2026-11-28T23:59:00Z",
            "edge-a",
            "service_unhealthy",
            "broker",
            r#"{"error": "down"}"#,
        ),
    );
    o.append(
        "edge-a",
        "2026-11-29",
        &line("2026-11-29T08:00:00Z", "edge-a", "node_offline", "-", r#"{"link": "lte"}"#),
    );
    o.append(
        "edge-a",
        "2026-11-30",
        &line("2026-11-30T09:00:00Z", "edge-a", "node_online", "-", r#"{"link": "lte"}"#),
    );
    o.append(
        "edge-a",
        "2026-11-30",
        &line("2026-11-30T09:01:00Z", "edge-a", "service_recovered", "broker", "{}"),
    );
    let out = o.observed();
    assert!(out.stdout.contains("edge-a: 4 events"), "{}", out.stdout);
    let n = &o.file("nodes")["edge-a"];
    assert_eq!(n["last_seen"], "2026-11-30T09:01:00Z");
    assert_eq!(n["links"]["lte"]["state"], "online");
    assert_eq!(n["links"]["lte"]["since"], "2026-11-30T09:00:00Z");
    let health = &o.file("services")["broker@edge-a"]["health"];
    assert_eq!(
        (health["state"].as_str(), health["since"].as_str()),
        (Some("healthy"), Some("2026-11-30T09:01:00Z"))
    );
    let cursors: serde_json::Value = serde_json::from_slice(
        &fs::read(o.ctl.path().join("state/observer/cursors.json")).unwrap(),
    )
    .unwrap();
    let days: Vec<&String> = cursors["nodes"]["edge-a"].as_object().unwrap().keys().collect();
    assert_eq!(days, ["2026-11-28", "2026-11-29", "2026-11-30"]);
    let size =
        fs::metadata(o.root("edge-a").join("events/2026-11-30/edge-a/events.jsonl")).unwrap().len();
    assert_eq!(cursors["nodes"]["edge-a"]["2026-11-30"]["offset"], size);
}

#[test]
fn a_torn_last_line_is_held_back_until_it_is_whole() {
    let o = Observed::new();
    let whole =
        line("2026-11-30T10:00:00Z", "alpha", "service_unhealthy", "web", r#"{"error": "OOM"}"#);
    let (head, tail) = whole.split_at(40);
    o.append(
        "alpha",
        "2026-11-30",
        &line("2026-11-30T09:00:00Z", "alpha", "node_online", "-", "{}"),
    );
    o.append("alpha", "2026-11-30", head);
    let out = o.observed();
    assert!(
        out.stdout.contains("alpha: 1 event, 40 byte(s) of an unfinished line held back"),
        "{}",
        out.stdout
    );
    assert_eq!(o.file("services").as_object().unwrap().len(), 0);
    // The writer finishes its line: the next pass reads it whole.
    o.append("alpha", "2026-11-30", tail);
    let out = o.observed();
    assert!(out.stdout.contains("alpha: 1 event\n"), "{}", out.stdout);
    assert_eq!(o.file("services")["web@alpha"]["health"]["reason"], "OOM");
    // A line torn for good (a crash), then a new event after it: the torn one is skipped.
    o.append("alpha", "2026-11-30", "{\"time\": \"2026-11-30T11:\n");
    o.append(
        "alpha",
        "2026-11-30",
        &line("2026-11-30T11:00:00Z", "alpha", "service_recovered", "web", "{}"),
    );
    let out = o.observed();
    assert!(out.stdout.contains("alpha: 1 event, 1 torn line(s) skipped"), "{}", out.stdout);
    assert_eq!(o.file("services")["web@alpha"]["health"]["state"], "healthy");
}

#[test]
fn an_unreadable_node_is_named_and_the_others_are_folded() {
    let o = Observed::new();
    o.emit("alpha", ["service_unhealthy", "error", "agent", "web", "-", "{}"]);
    fs::create_dir_all(o.root("edge-b")).unwrap();
    fs::write(o.root("edge-b").join("events"), "not a folder").unwrap();
    let out = o.observe();
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("alpha: 1 event"), "{}", out.stdout);
    assert!(
        out.stdout.contains("edge-b: could not read: cannot read its events: "),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("is not a folder"), "{}", out.stdout);
    assert!(out.stderr.contains("could not read node `edge-b`"), "{}", out.stderr);
    assert_eq!(o.file("services")["web@alpha"]["health"]["state"], "unhealthy");
    let nodes = o.file("nodes");
    assert_eq!(nodes["edge-b"]["status"], "unreachable");
    assert_eq!(nodes["edge-b"]["observer"]["reachable"], false);
    assert_eq!(nodes["alpha"]["observer"]["reachable"], true);
    // When it can be read again, it is.
    fs::remove_file(o.root("edge-b").join("events")).unwrap();
    o.emit("edge-b", ["service_unhealthy", "error", "agent", "app", "-", "{}"]);
    let out = o.observed();
    assert!(out.stdout.contains("edge-b: 1 event"), "{}", out.stdout);
    assert_eq!(o.file("nodes")["edge-b"]["status"], "online");
}

#[test]
fn watch_folds_events_as_they_come() {
    let o = Observed::new();
    let mut child = Command::new(env!("CARGO_BIN_EXE_homelab"))
        .arg("--repo")
        .arg(o.repo.path())
        .args(["observe", "--watch", "--interval", "1", "--transport", "local", "--root"])
        .arg(o.nodes.path())
        .arg("--controller-root")
        .arg(o.ctl.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    o.emit("edge-a", ["service_unhealthy", "error", "agent", "broker", "-", "{}"]);
    // The world file is the outcome; it is written by a later pass, so it is waited for.
    let services = o.ctl.path().join("world/services.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let seen = loop {
        let text = fs::read_to_string(&services).unwrap_or_default();
        if text.contains("broker@edge-a") || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(seen.contains("broker@edge-a"), "{seen}");
}

// ---------------------------------------------------------------------------------------------
// Over real SSH.

// One lab at a time, whichever test file starts it (they are heavy on 2 cores).
use crate::apply::LAB;

/// Writes a topology with alpha at the lab node and the edges at a port nothing answers on.
fn lab_repo(lab: &crate::lab::Lab, roots: &Path) -> tempfile::TempDir {
    let repo = tempfile::tempdir().unwrap();
    copy_tree(&fixtures().join("base"), repo.path());
    let a = lab.node("alpha");
    let mut topo = String::from(
        "mesh: tailscale\nsites:\n  home:\n    uplink: fiber\n    offline_first: false\n  remote:\n    uplink: lte\n    offline_first: true\nnodes:\n",
    );
    for (name, port) in [("alpha", 22), ("edge-a", 1), ("edge-b", 1)] {
        let site = if name == "alpha" { "home" } else { "remote" };
        topo.push_str(&crate::support::topology_node(
            name,
            site,
            (&a.address, port),
            &roots.join(name),
            &a.docker_socket,
        ));
    }
    fs::write(repo.path().join("inventory/topology.yaml"), topo).unwrap();
    fs::copy(lab.known_hosts(), repo.path().join("inventory/known_hosts")).unwrap();
    repo
}

#[test]
fn observe_reads_a_lab_node_over_ssh_and_names_the_ones_it_cannot_reach() {
    let _serial = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let lab = crate::lab::Lab::start(&["alpha"]);
    let roots = lab.node("alpha").root();
    let repo = lab_repo(&lab, &roots);
    let ctl = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_homelab");
    let emit = |args: &[&str]| {
        let root = roots.to_str().unwrap();
        let argv =
            [&[bin, "events", "emit"][..], args, &["--root", root, "--node", "alpha"]].concat();
        let out = lab.ssh("alpha", &argv);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    let observe = |extra: &[&str]| {
        let out = Command::new(bin)
            .arg("--repo")
            .arg(repo.path())
            .args(["observe", "--once", "--controller-root"])
            .arg(ctl.path())
            .args(extra)
            .env("HOMELAB_SSH_KEY", lab.client_key())
            .env("NO_COLOR", "1")
            .env_remove("HOMELAB_ROOT")
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let world = |name: &str| -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_slice(
            &fs::read(ctl.path().join(format!("world/{name}.json"))).unwrap(),
        )
        .unwrap();
        v[name].clone()
    };

    emit(&["deployment_started", "info", "apply", "web", "p1", "{}"]);
    emit(&["service_unhealthy", "error", "agent", "web", "-", r#"{"error": "OOM"}"#]);
    let (code, out, err) = observe(&[]);
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(out.contains("alpha: 2 events"), "{out}");
    assert!(out.contains("edge-a: could not read"), "{out}");
    assert!(err.contains("could not read nodes `edge-a`, `edge-b`"), "{err}");
    assert_eq!(world("services")["web@alpha"]["health"]["state"], "unhealthy");
    assert_eq!(world("nodes")["alpha"]["status"], "online");
    assert_eq!(world("nodes")["edge-a"]["status"], "unreachable");

    // Cut off, the node keeps its events; back, the observer catches up.
    lab.cut("alpha");
    fs::OpenOptions::new()
        .append(true)
        .open(roots.join(format!("alpha/events/{}/alpha/events.jsonl", today(&roots))))
        .unwrap()
        .write_all(
            line("2099-01-01T00:00:00Z", "alpha", "service_recovered", "web", "{}").as_bytes(),
        )
        .unwrap();
    let (code, out, _) = observe(&["--node", "alpha"]);
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(world("nodes")["alpha"]["status"], "unreachable");
    lab.restore("alpha");
    let (code, out, err) = observe(&["--node", "alpha"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("alpha: 1 event\n"), "{out}");
    assert_eq!(world("services")["web@alpha"]["health"]["state"], "healthy");
    assert_eq!(world("nodes")["alpha"]["status"], "online");
}

/// The one day folder of alpha's events under `roots`.
fn today(roots: &Path) -> String {
    let days: Vec<_> =
        fs::read_dir(roots.join("alpha/events")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(days.len(), 1);
    days[0].to_string_lossy().into_owned()
}

/// A process of the test's, killed when dropped (a failed assertion leaves nothing running).
struct Proc(std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `f` every 100 ms until it holds, for at most 30 s; panics naming `what`.
fn wait_until(what: &str, f: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "waited 30 s for {what}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Issue 11: a CHELSTY-like node (an offline-first site on LTE) with its link cut keeps its
/// stability agent running and its events recorded; the observer names it unreachable and
/// folds the others; when the link returns the observer catches up, and an observer killed in
/// the middle of writing the world (between two of its files, by `strace` at the `mkdir`
/// before each write) and started again loses no event and folds none twice: the world is the
/// one a fold of every event from scratch gives.
#[test]
fn a_cut_off_node_keeps_its_events_and_a_killed_observer_catches_up_with_none_lost() {
    let _serial = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = std::time::Instant::now();
    let lab = crate::lab::Lab::start(&["alpha", "edge-a"]);
    let repo = tempfile::tempdir().unwrap();
    copy_tree(&fixtures().join("base"), repo.path());
    fs::remove_dir_all(repo.path().join("hosts/edge-b")).unwrap();
    fs::remove_dir_all(repo.path().join("services/app")).unwrap();
    let mut topo = String::from(
        "mesh: tailscale\nsites:\n  home:\n    uplink: fiber\n    offline_first: false\n  chelsty:\n    uplink: lte\n    offline_first: true\nnodes:\n",
    );
    for (name, site) in [("alpha", "home"), ("edge-a", "chelsty")] {
        let n = lab.node(name);
        fs::create_dir_all(n.root()).unwrap();
        topo.push_str(&crate::support::topology_node(
            name,
            site,
            (&n.address, 22),
            &n.root(),
            &n.docker_socket,
        ));
    }
    fs::write(repo.path().join("inventory/topology.yaml"), topo).unwrap();
    fs::copy(lab.known_hosts(), repo.path().join("inventory/known_hosts")).unwrap();
    let ctl = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_homelab");
    let observe_cmd = |ctl: &Path| {
        let mut c = Command::new(bin);
        c.arg("--repo")
            .arg(repo.path())
            .args(["observe", "--once", "--controller-root"])
            .arg(ctl)
            .env("HOMELAB_SSH_KEY", lab.client_key())
            .env("NO_COLOR", "1")
            .env_remove("HOMELAB_ROOT");
        c
    };
    let observe = |ctl: &Path| {
        let out = observe_cmd(ctl).output().unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let world = |ctl: &Path, name: &str| -> serde_json::Value {
        let v: serde_json::Value =
            serde_json::from_slice(&fs::read(ctl.join(format!("world/{name}.json"))).unwrap())
                .unwrap();
        v[name].clone()
    };
    let edge = lab.node("edge-a");
    let root = edge.root();
    let events = || -> Vec<serde_json::Value> {
        let (all, torn) = homelab::events::read_all(&root, Some("edge-a")).unwrap_or_default();
        assert_eq!(torn, 0);
        all
    };
    let has = |kind: &str, key: &str, name: &str| {
        events().iter().any(|e| e["type"] == kind && e[key] == name)
    };

    // EDGE-A runs its broker (started by hand, labelled as Compose labels it) and its agent,
    // in its own network namespace, watching its uplink `eth0`.
    let run = lab.docker(
        "edge-a",
        &[
            "run",
            "-d",
            "--name",
            "broker",
            "--network",
            "none",
            "--label",
            "com.docker.compose.project=broker",
            "--label",
            "com.docker.compose.service=broker",
            crate::lab::IMAGE,
            "sh",
            "-c",
            "exec sleep 3600",
        ],
    );
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let log = edge.dir.join("agent.log");
    let mut agent = lab.node_command("edge-a", bin);
    agent
        .arg("agent")
        .arg("--root")
        .arg(&root)
        .args(["--node", "edge-a", "--docker-socket"])
        .arg(&edge.docker_socket)
        .args(["--interface", "eth0", "--interval", "0.5"])
        .env_remove("HOMELAB_ROOT")
        .env_remove("HOMELAB_MQTT")
        .stdout(std::process::Stdio::null())
        .stderr(fs::File::create(&log).unwrap());
    let agent = Proc(agent.spawn().unwrap());
    let heartbeat = || -> serde_json::Value {
        fs::read_to_string(root.join("state/agent/heartbeat.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    };
    wait_until("the agent ready", || {
        let h = heartbeat();
        h["pid"] == agent.0.id()
            && h["status"]["docker"] == "connected"
            && h["status"]["interface"] == "up"
    });
    let (code, out, err) = observe(ctl.path());
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert_eq!(world(ctl.path(), "nodes")["edge-a"]["status"], "online");

    // The link to everything cut: the agent sees its uplink go, goes on, and records what
    // happens on the node: the broker stopped and started by hand.
    lab.cut("edge-a");
    wait_until("node_offline eth0", || {
        events().iter().any(|e| e["type"] == "node_offline" && e["data"]["link"] == "eth0")
    });
    let stop = lab.docker("edge-a", &["stop", "broker"]);
    assert!(stop.status.success());
    wait_until("service_unhealthy broker", || has("service_unhealthy", "service", "broker"));
    let start = lab.docker("edge-a", &["start", "broker"]);
    assert!(start.status.success());
    wait_until("service_recovered broker", || has("service_recovered", "service", "broker"));
    let beat = heartbeat()["time"].clone();
    wait_until("a heartbeat while cut off", || heartbeat()["time"] != beat);
    // Meanwhile on ALPHA.
    let alpha_root = format!("HOMELAB_ROOT={}", lab.node("alpha").root().display());
    let out = lab.ssh(
        "alpha",
        &["env", &alpha_root, bin, "events", "emit", "service_unhealthy", "error", "agent", "web"]
            .into_iter()
            .chain(["-", "{}", "--node", "alpha"])
            .collect::<Vec<_>>(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // The observer names EDGE-A unreachable and folds ALPHA.
    let (code, out, err) = observe(ctl.path());
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(out.contains("alpha: 1 event\n"), "{out}");
    assert!(out.contains("edge-a: could not read"), "{out}");
    assert!(err.contains("could not read node `edge-a`"), "{err}");
    let nodes = world(ctl.path(), "nodes");
    assert_eq!(nodes["edge-a"]["status"], "unreachable");
    assert_eq!(nodes["edge-a"]["observer"]["reachable"], false);
    assert_eq!(nodes["alpha"]["status"], "online");
    let services = world(ctl.path(), "services");
    assert_eq!(services["web@alpha"]["health"]["state"], "unhealthy");
    assert!(services.get("broker@edge-a").is_none(), "{services}");

    // The link back: the agent says so; the observer catches up, killed once between two of
    // the world's files and started again.
    lab.restore("edge-a");
    wait_until("node_online eth0", || {
        events().iter().any(|e| e["type"] == "node_online" && e["data"]["link"] == "eth0")
    });
    let during = events();
    let kinds: Vec<&str> = during.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["node_offline", "service_unhealthy", "service_recovered", "node_online"],
        "the node's events"
    );
    crate::support::killed_at(&observe_cmd(ctl.path()), &ctl.path().join("world"), 2);
    // Killed with nodes.json written and services.json not, the cursors not moved.
    assert_eq!(world(ctl.path(), "nodes")["edge-a"]["observer"]["reachable"], true);
    assert!(world(ctl.path(), "services").get("broker@edge-a").is_none());
    let cursors: serde_json::Value =
        serde_json::from_slice(&fs::read(ctl.path().join("state/observer/cursors.json")).unwrap())
            .unwrap();
    assert_eq!(cursors["nodes"]["edge-a"], serde_json::json!({}), "{cursors}");
    let (code, out, err) = observe(ctl.path());
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("edge-a: 4 events\n"), "read again from before the kill: {out}");
    let nodes = world(ctl.path(), "nodes");
    let e = &nodes["edge-a"];
    assert_eq!(e["status"], "online", "{e}");
    assert_eq!(e["links"]["eth0"]["state"], "online", "{e}");
    assert_eq!(e["last_seen"], during[3]["time"], "{e}");
    let services = world(ctl.path(), "services");
    let broker = &services["broker@edge-a"]["health"];
    assert_eq!(
        (broker["state"].as_str(), broker["by"].as_str()),
        (Some("healthy"), Some("service_recovered"))
    );
    let incidents = world(ctl.path(), "incidents");
    let theirs: Vec<&serde_json::Value> =
        incidents.as_object().unwrap().values().filter(|i| i["node"] == "edge-a").collect();
    assert_eq!(theirs.len(), 1, "one stop, one incident: {incidents:#}");
    assert_eq!(theirs[0]["state"], "closed");
    assert_eq!(theirs[0]["resolution"], "service_recovered");

    // Nothing new: nothing read, nothing written.
    let (code, out, _) = observe(ctl.path());
    assert_eq!(code, Some(0));
    assert!(out.contains("edge-a: no new events") && out.contains("world unchanged"), "{out}");
    // None lost, none twice: a fold of every event from scratch gives the same world (but
    // for when each observer found each node reachable).
    let fresh = tempfile::tempdir().unwrap();
    let (code, out, err) = observe(fresh.path());
    assert_eq!(code, Some(0), "{out}\n{err}");
    for name in ["services", "deployments", "incidents"] {
        assert_eq!(world(fresh.path(), name), world(ctl.path(), name), "{name}");
    }
    let strip = |mut v: serde_json::Value| {
        for n in v.as_object_mut().unwrap().values_mut() {
            n.as_object_mut().unwrap().remove("observer");
        }
        v
    };
    assert_eq!(strip(world(fresh.path(), "nodes")), strip(world(ctl.path(), "nodes")));
    drop(agent);
    eprintln!("cut-off node test: {:.1}s with the lab", t0.elapsed().as_secs_f64());
}

/// A node whose read ends before it takes what the observer sends it (here its events folder
/// became a file, so the node's script exits at once; a cut link does the same to `ssh`) is an
/// error of that node: the observer is never ended by the closed pipe (SIGPIPE), names the node
/// it could not read and keeps the world it had.
#[test]
fn a_node_that_stops_reading_its_cursors_is_named_and_never_ends_the_observer() {
    let o = Observed::new();
    // Enough days that the cursors sent back (one line a day) outgrow a pipe's buffer (64 KiB).
    let mut days = 0;
    'all: for year in 2000..2040 {
        for month in 1..=12 {
            for day in 1..=28 {
                let d = format!("{year}-{month:02}-{day:02}");
                o.append(
                    "alpha",
                    &d,
                    &line(&format!("{d}T12:00:00Z"), "alpha", "node_online", "-", "{}"),
                );
                days += 1;
                if days == 3000 {
                    break 'all;
                }
            }
        }
    }
    o.observed();
    let cursors = fs::read_to_string(o.ctl.path().join("state/observer/cursors.json")).unwrap();
    assert!(cursors.len() > 70_000, "{} bytes", cursors.len());
    let before = o.world();
    let events = o.root("alpha").join("events");
    fs::remove_dir_all(&events).unwrap();
    fs::write(&events, "not a folder\n").unwrap();
    let out = o.observe();
    assert_eq!(out.code, 1, "stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("could not read node `alpha`"), "{}", out.stderr);
    assert!(out.stdout.contains("is not a folder"), "{}", out.stdout);
    assert_eq!(o.file("nodes")["alpha"]["status"], "unreachable");
    assert_eq!(o.world()["services"], before["services"]);
}
