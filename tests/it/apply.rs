//! `homelab apply` on real nodes: the lab's network namespaces, each with its own sshd and
//! Docker Engine, reached over real SSH with Compose v2. Labs are started one at a time (they
//! are heavy on 2 cores) and torn down when each test ends.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use crate::lab::Lab;
use crate::support::{copy_tree, fixtures, Output};

/// At most [`Labs::at_once`] labs at a time in this process: two unless `HOMELAB_TEST_LABS`
/// says otherwise. Two side by side fit on 2 cores (the tests mostly wait) and take CI from
/// ~30 to ~18 min. What two labs once showed was real and is fixed: an observer ended by
/// SIGPIPE when its `ssh` to a cut-off node exited before reading (seen with one lab too),
/// and a service stepping aside from its batch for an instant.
pub(crate) static LAB: Labs = Labs { running: Mutex::new(0), freed: std::sync::Condvar::new() };

/// A counting semaphore with the calls of a `Mutex` (`LAB.lock().unwrap_or_else(|e|
/// e.into_inner())`), so a test holds a lab's place for its whole length.
pub(crate) struct Labs {
    running: Mutex<usize>,
    freed: std::sync::Condvar,
}

/// A place among the labs that may run, given back when dropped (also when the test panics).
pub(crate) struct LabPlace(&'static Labs);

/// Never made: `lock` always succeeds (a test that panicked gave its place back).
pub(crate) struct NoPlace(LabPlace);

impl NoPlace {
    pub(crate) fn into_inner(self) -> LabPlace {
        self.0
    }
}

impl Labs {
    /// `HOMELAB_TEST_LABS` (default 2): how many labs may run at once.
    fn at_once() -> usize {
        std::env::var("HOMELAB_TEST_LABS").ok().and_then(|v| v.parse().ok()).unwrap_or(2).max(1)
    }

    pub(crate) fn lock(&'static self) -> Result<LabPlace, NoPlace> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        while *running >= Labs::at_once() {
            running = self.freed.wait(running).unwrap_or_else(|e| e.into_inner());
        }
        *running += 1;
        Ok(LabPlace(self))
    }
}

impl Drop for LabPlace {
    fn drop(&mut self) {
        let mut running = self.0.running.lock().unwrap_or_else(|e| e.into_inner());
        *running -= 1;
        self.0.freed.notify_one();
    }
}

pub(crate) const NODES: [&str; 3] = ["alpha", "edge-a", "edge-b"];

/// The base fixture pointed at a lab: addresses, roots, engines, host keys, an operator key.
pub(crate) struct Site {
    pub(crate) lab: Lab,
    pub(crate) repo: tempfile::TempDir,
    ctl: PathBuf,
    key: PathBuf,
}

impl Site {
    pub(crate) fn new(lab: Lab) -> Site {
        Site::with_roots(lab, |n| n.root())
    }

    /// `root_of` picks each node's runtime root (a folder of the shared filesystem).
    fn with_roots(lab: Lab, root_of: impl Fn(&crate::lab::LabNode) -> PathBuf) -> Site {
        let repo = tempfile::tempdir().unwrap();
        copy_tree(&fixtures().join("base"), repo.path());
        let mut topo = String::from(
            "mesh: tailscale\nsites:\n  home:\n    uplink: fiber\n    offline_first: false\n  remote:\n    uplink: lte\n    offline_first: true\nnodes:\n",
        );
        for name in NODES {
            let n = lab.node(name);
            let root = root_of(n);
            fs::create_dir_all(&root).unwrap();
            let site = if name == "alpha" { "home" } else { "remote" };
            topo.push_str(&crate::support::topology_node(
                name,
                site,
                (&n.address, 22),
                &root,
                &n.docker_socket,
            ));
        }
        let site = Site {
            ctl: repo.path().join(".controller"),
            key: repo.path().join(".operator_key"),
            lab,
            repo,
        };
        site.write("inventory/topology.yaml", &topo);
        fs::copy(site.lab.known_hosts(), site.repo.path().join("inventory/known_hosts")).unwrap();
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "operator@test", "-f"])
            .arg(&site.key)
            .output()
            .expect("ssh-keygen (Debian openssh-client) must be installed");
        assert!(out.status.success());
        let public = fs::read_to_string(site.key.with_extension("pub")).unwrap();
        let public: Vec<&str> = public.split_whitespace().take(2).collect();
        site.write(
            "inventory/allowed_signers",
            &format!(
                "operator@test namespaces=\"homelab-plan,homelab-approve\" {}\n",
                public.join(" ")
            ),
        );
        // Quick healthchecks keep the lab fast; a fifth service on alpha.
        for svc in ["agent", "broker", "app", "web"] {
            site.edit(&format!("services/{svc}/service.yaml"), |s| {
                s.replace("interval: 5s", "interval: 1s").replace("timeout: 2s", "timeout: 1s")
            });
        }
        copy_tree(&fixtures().join("base/services/web"), &site.repo.path().join("services/cache"));
        site.edit("services/cache/service.yaml", |s| {
            s.replace("name: web", "name: cache")
                .replace("dependencies:\n  - service: agent\n", "dependencies: []\n")
        });
        site.edit("services/cache/docker-compose.yml", |s| {
            s.replace("  web:", "  cache:")
                .replace("container_name: web", "container_name: cache")
                .replace("\"8080\"", "\"8081\"")
        });
        site.edit("hosts/alpha/services.yaml", |s| {
            format!("{s}  - name: cache\n    exposure: tailnet\n")
        });
        // The broker's secret, on its node only.
        let env = root_of(site.lab.node("edge-a")).join("config/broker/.env");
        fs::create_dir_all(env.parent().unwrap()).unwrap();
        fs::write(env, "BROKER_PASSWORD=not-in-git-4711\n").unwrap();
        let v = site.homelab(&["validate"]);
        assert_eq!(v.code, 0, "{}", v.stderr);
        site
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.repo.path().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    fn edit(&self, rel: &str, f: impl FnOnce(String) -> String) {
        let p = self.repo.path().join(rel);
        let s = fs::read_to_string(&p).unwrap();
        fs::write(p, f(s)).unwrap();
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_homelab"));
        c.arg("--repo")
            .arg(self.repo.path())
            .args(args)
            .env("NO_COLOR", "1")
            .env("HOMELAB_SSH_KEY", self.lab.client_key())
            .env("HOMELAB_ROOT", &self.ctl)
            .env_remove("HOMELAB_SIGNING_KEY")
            .env_remove("HOMELAB_REPO");
        c
    }

    pub(crate) fn homelab(&self, args: &[&str]) -> Output {
        let out = self.command(args).output().unwrap();
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Plans and approves; the plan's id.
    pub(crate) fn plan_and_approve(&self) -> String {
        let key = self.key.to_str().unwrap();
        let out = self.homelab(&["plan", "--key", key]);
        assert_eq!(out.code, 0, "plan failed:\n{}\n{}", out.stdout, out.stderr);
        let id = out
            .stdout
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("plan "))
            .expect("plan id")
            .trim()
            .to_owned();
        let plan = self.plan_path(&id);
        let a = self.homelab(&["approve", plan.to_str().unwrap(), "--key", key, "--yes"]);
        assert_eq!(a.code, 0, "approve failed: {}", a.stderr);
        id
    }

    fn plan_path(&self, id: &str) -> PathBuf {
        self.repo.path().join(format!("plans/{id}.plan"))
    }

    fn approved(&self, id: &str) -> String {
        self.repo.path().join(format!("plans/{id}.approved")).display().to_string()
    }

    pub(crate) fn apply(&self, id: &str, extra: &[&str]) -> Output {
        let approved = self.approved(id);
        let mut args = vec!["apply"];
        args.extend(extra);
        args.push(&approved);
        self.homelab(&args)
    }

    fn spawn_apply(&self, id: &str, extra: &[&str]) -> Child {
        let approved = self.approved(id);
        let mut args = vec!["apply"];
        args.extend(extra);
        args.push(&approved);
        self.command(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
    }

    fn detailed(&self) -> i32 {
        let out =
            self.homelab(&["plan", "--key", self.key.to_str().unwrap(), "--detailed-exitcode"]);
        assert!(out.code == 0 || out.code == 2, "{}", out.stderr);
        out.code
    }

    pub(crate) fn root(&self, node: &str) -> PathBuf {
        self.lab.node(node).root()
    }

    pub(crate) fn running(&self, node: &str, container: &str) -> bool {
        let out = self.lab.docker(node, &["inspect", "-f", "{{.State.Running}}", container]);
        String::from_utf8_lossy(&out.stdout).trim() == "true"
    }

    fn env_of(&self, node: &str, container: &str) -> Vec<String> {
        let out = self.lab.docker(node, &["inspect", "-f", "{{json .Config.Env}}", container]);
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }

    /// The apply journal of plan `id` on `node`, as the node holds it.
    fn journal(&self, node: &str, id: &str) -> serde_json::Value {
        let path = self.root(node).join(format!("state/deploy/{id}/journal.json"));
        serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
    }

    fn live(&self, root: &Path, svc: &str) -> Option<String> {
        fs::read_link(root.join("state/services").join(svc)).ok().map(|p| p.display().to_string())
    }
}

/// Reads an apply's progress lines until one contains `needle`; returns the lines so far.
fn wait_for_line(
    child: &mut Child,
    needle: &str,
) -> (Vec<String>, BufReader<std::process::ChildStderr>) {
    let mut reader = BufReader::new(child.stderr.take().unwrap());
    let mut lines = Vec::new();
    loop {
        let mut l = String::new();
        let n = reader.read_line(&mut l).unwrap();
        assert!(n > 0, "apply ended before `{needle}`:\n{}", lines.join(""));
        lines.push(l.clone());
        if l.contains(needle) {
            return (lines, reader);
        }
    }
}

fn finish(mut child: Child, mut rest: BufReader<std::process::ChildStderr>) -> (i32, String) {
    let mut tail = String::new();
    let _ = std::io::Read::read_to_string(&mut rest, &mut tail);
    let status = child.wait().unwrap();
    (status.code().unwrap_or(-1), tail)
}

#[test]
fn fresh_apply_then_no_op_then_update_and_rollback_then_stale() {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new(Lab::start(&NODES));

    // A fresh apply brings every container up and healthy.
    let id = site.plan_and_approve();
    let out = site.apply(&id, &[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    for (node, c) in [
        ("alpha", "agent"),
        ("alpha", "web"),
        ("alpha", "cache"),
        ("edge-a", "agent"),
        ("edge-a", "broker"),
        ("edge-b", "agent"),
        ("edge-b", "app"),
    ] {
        assert!(site.running(node, c), "{c} on {node} is not running");
    }
    assert!(site.env_of("edge-b", "app").contains(&"APP_GREETING=hello from edge-b".to_owned()));
    // The cross-node dependency: broker@edge-a completed before app@edge-b was deployed (its
    // release was uploaded and validated meanwhile: nothing live changes before its deploy).
    let broker_done = out.stderr.find("[edge-a] broker complete").expect("broker completed");
    let app_start = out.stderr.find("[edge-b] app deploy").expect("app deployed");
    assert!(broker_done < app_start, "{}", out.stderr);
    // A second apply of the same plan is a replay.
    let again = site.apply(&id, &[]);
    assert_eq!(again.code, 3, "{}", again.stderr);
    assert!(again.stderr.contains("already applied"), "{}", again.stderr);
    // A second plan is all no-op.
    assert_eq!(site.detailed(), 0);
    // Container state comes from the Docker Engine API over the SSH connection: a stopped
    // container makes its service an update even though its files match.
    let stop = site.lab.docker("alpha", &["stop", "web"]);
    assert!(stop.status.success());
    let out = site.homelab(&["plan", "--key", site.key.to_str().unwrap()]);
    assert!(
        out.stdout.contains("~ update   web@alpha  artifacts match, but `web` is exited"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("engine: 3 container(s), 2 running; not up: web exited"),
        "{}",
        out.stdout
    );
    let start = site.lab.docker("alpha", &["start", "web"]);
    assert!(start.status.success());
    assert_eq!(site.detailed(), 0);

    // A changed compose file updates exactly the services it touches.
    site.edit("services/cache/docker-compose.yml", |s| {
        s.replace(
            "restart: unless-stopped\n",
            "restart: unless-stopped\n    environment:\n      CACHE_SIZE: \"64\"\n",
        )
    });
    site.edit("services/cache/service.yaml", |s| {
        s.replace("  env_vars: []", "  env_vars:\n    - name: CACHE_SIZE")
    });
    site.write("services/cache/env.example", "CACHE_SIZE=64\n");
    let web_before = site.live(&site.root("alpha"), "web");
    let id2 = site.plan_and_approve();
    let plan = fs::read_to_string(site.plan_path(&id2)).unwrap();
    assert!(plan.contains("change update cache@alpha"), "{plan}");
    assert_eq!(
        plan.matches("\nchange update ").count() + plan.matches("\nchange create ").count(),
        1,
        "{plan}"
    );
    let out = site.apply(&id2, &[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(site.env_of("alpha", "cache").contains(&"CACHE_SIZE=64".to_owned()));
    assert_eq!(site.live(&site.root("alpha"), "web"), web_before, "web was not touched");

    // A failing healthcheck rolls that service back to its previous version and containers.
    let broker_before = site.live(&site.root("edge-a"), "broker").unwrap();
    site.edit("services/broker/healthcheck.sh", |s| s.replace("exit 0", "exit 1"));
    site.edit("services/broker/docker-compose.yml", |s| {
        s.replace("BROKER_USER: broker", "BROKER_USER: broker2")
    });
    let id3 = site.plan_and_approve();
    let out = site.apply(&id3, &[]);
    assert_eq!(out.code, 1, "a rollback is never success:\n{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("EDGE-A           rolled back"), "{}", out.stdout);
    assert_eq!(site.live(&site.root("edge-a"), "broker").unwrap(), broker_before);
    assert!(site.running("edge-a", "broker"));
    assert!(
        site.env_of("edge-a", "broker").contains(&"BROKER_USER=broker".to_owned()),
        "previous containers are back"
    );
    let journal =
        fs::read_to_string(site.root("edge-a").join(format!("state/deploy/{id3}/journal.json")))
            .unwrap();
    assert!(journal.contains("\"stage\": \"rolled-back\""), "{journal}");
    let events = fs::read_dir(site.root("edge-a").join("events"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("edge-a/events.jsonl");
    let events = fs::read_to_string(events).unwrap();
    assert!(
        events.contains("\"type\":\"deployment_failed\"")
            && events.contains("\"type\":\"remediation_completed\""),
        "{events}"
    );
    assert!(!events.contains("not-in-git-4711"), "no secret in events");
    // The guide's `--stage diagnose`: status now, logs kept on the node, nothing changed.
    let out = site.apply(&id3, &["--stage", "diagnose", "--service", "broker"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("[edge-a] broker diagnose: broker running"), "{}", out.stderr);
    assert!(site.root("edge-a").join(format!("logs/broker/diagnose-{id3}.log")).is_file());
    assert!(
        out.stdout.contains("EDGE-A           stage done: diagnosed; nothing changed"),
        "{}",
        out.stdout
    );
    site.edit("services/broker/healthcheck.sh", |s| s.replace("exit 1", "exit 0"));
    site.edit("services/broker/docker-compose.yml", |s| {
        s.replace("BROKER_USER: broker2", "BROKER_USER: broker")
    });

    // A node edited by hand between plan and apply is refused as stale; the others go on.
    site.edit("services/web/docker-compose.yml", |s| s.replace("\"8080\"]", "\"8082\"]"));
    site.edit("services/agent/docker-compose.yml", |s| s.replace("\"86400\"]", "\"86401\"]"));
    let id4 = site.plan_and_approve();
    let hand = site.root("edge-b").join("state/services/agent/docker-compose.yml");
    let mut text = fs::read_to_string(&hand).unwrap();
    text.push_str("# edited by hand\n");
    fs::write(&hand, text).unwrap();
    let out = site.apply(&id4, &[]);
    assert_eq!(out.code, 3, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("EDGE-B           stale"), "{}", out.stdout);
    assert!(
        out.stdout.contains("agent file docker-compose.yml"),
        "names the change: {}",
        out.stdout
    );
    assert!(out.stdout.contains("ALPHA            applied"), "{}", out.stdout);
    assert!(
        !site.root("edge-b").join(format!("state/deploy/{id4}")).exists(),
        "nothing done on the stale node"
    );

    // Host keys are checked strictly: ALPHA answering with another host's key is refused.
    let known = fs::read_to_string(site.lab.known_hosts()).unwrap();
    let key_of = |addr: &str| {
        known
            .lines()
            .find(|l| l.split_whitespace().next() == Some(addr))
            .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|| panic!("{addr} not in {known}"))
    };
    let (alpha, edge) =
        (site.lab.node("alpha").address.clone(), site.lab.node("edge-a").address.clone());
    let forged: String = known
        .lines()
        .map(|l| {
            if l.split_whitespace().next() == Some(alpha.as_str()) {
                format!("{alpha} {}\n", key_of(&edge))
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    site.write("inventory/known_hosts", &forged);
    let out = site.homelab(&["plan", "--key", site.key.to_str().unwrap(), "--detailed-exitcode"]);
    assert!(out.stdout.contains("ALPHA unreachable"), "{}", out.stdout);
    // A node answering with the wrong host key was not read: exit 1 naming it, nothing saved.
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("could not read node `alpha`"), "{}", out.stderr);
    assert!(!out.stdout.contains("unreachable: unreachable"), "{}", out.stdout);
    assert!(
        out.stdout.contains("Host key verification failed")
            || out.stdout.contains("IDENTIFICATION HAS CHANGED"),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
}

/// Every service on a node is at its old or its new version: its live link points at a sealed
/// release whose files match that release's manifest.
fn assert_whole_versions(root: &Path) {
    let services = root.join("state/services");
    let Ok(rd) = fs::read_dir(&services) else { return };
    for e in rd {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        if name.ends_with(".new") {
            continue;
        }
        let target =
            fs::read_link(e.path()).unwrap_or_else(|_| panic!("{name} is not a release link"));
        let manifest: serde_json::Value =
            serde_json::from_slice(&fs::read(target.join("manifest.json")).unwrap()).unwrap();
        for a in manifest["artifacts"].as_array().unwrap() {
            let bytes = fs::read(target.join(a["name"].as_str().unwrap())).unwrap();
            assert_eq!(
                homelab::digest::sha256_hex(&bytes),
                a["sha256"].as_str().unwrap(),
                "{name} is between versions"
            );
        }
    }
}

#[test]
fn a_link_cut_mid_apply_is_resumed_and_other_nodes_go_on() {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new(Lab::start(&NODES));
    let id = site.plan_and_approve();
    assert_eq!(site.apply(&id, &[]).code, 0);

    // Cut EDGE-A at a different stage each round: the link dies like LTE (packets dropped).
    for (round, stage) in ["prepare", "deploy", "verify"].into_iter().enumerate() {
        site.edit("services/broker/docker-compose.yml", |s| {
            let from = if round == 0 {
                "BROKER_USER: broker\n".to_owned()
            } else {
                format!("BROKER_USER: broker{round}\n")
            };
            s.replace(&from, &format!("BROKER_USER: broker{}\n", round + 1))
        });
        site.edit("services/web/docker-compose.yml", |s| {
            s.replace(&format!("\"{}\"]", 8080 + round), &format!("\"{}\"]", 8081 + round))
        });
        let id = site.plan_and_approve();
        // A dead-man deadline longer than the cut: the resume, not the node, finishes it.
        let mut child = site.spawn_apply(&id, &["--confirm-timeout", "600"]);
        let (seen, rest) = wait_for_line(&mut child, &format!("[edge-a] broker {stage}:"));
        site.lab.blackhole("edge-a");
        let (code, tail) = finish(child, rest);
        let all = format!("{}{tail}", seen.join(""));
        assert_ne!(code, 0, "round {round}: {all}");
        assert!(all.contains("[alpha] applied"), "round {round}: alpha was held up: {all}");
        assert!(all.contains("[edge-a] unreachable"), "round {round}: {all}");
        assert_whole_versions(&site.root("edge-a"));
        site.lab.restore("edge-a");
        if stage == "verify" {
            // Switched but never confirmed: a plan made now says so instead of a no-op.
            let out = site.homelab(&["plan", "--key", site.key.to_str().unwrap()]);
            assert!(
                // `deploying` or `deployed`: a stage's record travels with the next command.
                out.stdout.contains(&format!(
                    "~ update   broker@edge-a  the apply of plan {id} stopped at `deploy"
                )),
                "{}",
                out.stdout
            );
        }
        let out = site.apply(&id, &["--resume"]);
        assert_eq!(out.code, 0, "round {round} resume:\n{}\n{}", out.stdout, out.stderr);
        assert!(site.running("edge-a", "broker"));
        assert!(
            site.env_of("edge-a", "broker").contains(&format!("BROKER_USER=broker{}", round + 1)),
            "round {round}"
        );
        assert_whole_versions(&site.root("edge-a"));
        assert_eq!(site.detailed(), 0, "round {round}: everything applied");
    }

    // The apply process killed while the node runs `compose up`, then resumed at once: the
    // resume waits for the job the killed run left running and reads its result; it never
    // runs a second `compose up` beside it (which left a `<hash>_broker` container and a
    // failed healthcheck). The old container takes seconds to stop (SIGTERM, ignored by its
    // PID 1, then SIGKILL after the grace period), so `compose up` is surely running. Two
    // services of the node change, so the kill hits a batch of two `compose up` jobs.
    for svc in ["broker", "agent"] {
        site.edit(&format!("services/{svc}/docker-compose.yml"), |s| {
            s.replace(
                "    restart: unless-stopped\n",
                "    restart: unless-stopped\n    stop_signal: SIGTERM\n    stop_grace_period: 6s\n",
            )
        });
    }
    let id = site.plan_and_approve();
    assert_eq!(site.apply(&id, &[]).code, 0);
    site.edit("services/broker/docker-compose.yml", |s| {
        s.replace("BROKER_USER: broker3\n", "BROKER_USER: killed\n")
    });
    site.edit("services/agent/docker-compose.yml", |s| s.replace("\"86400\"]", "\"86401\"]"));
    let id = site.plan_and_approve();
    let mut child = site.spawn_apply(&id, &[]);
    let (_seen, _rest) = wait_for_line(&mut child, "[edge-a] broker deploy:");
    std::thread::sleep(std::time::Duration::from_secs(2));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_whole_versions(&site.root("edge-a"));
    let plain = site.apply(&id, &[]);
    assert_eq!(plain.code, 3, "a second plain apply is refused: {}", plain.stderr);
    assert!(
        format!("{}{}", plain.stdout, plain.stderr).contains("--resume"),
        "it says what helps: {}\n{}",
        plain.stdout,
        plain.stderr
    );
    let out = site.apply(&id, &["--resume"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(site.env_of("edge-a", "broker").contains(&"BROKER_USER=killed".to_owned()));
    let names = site.lab.docker("edge-a", &["ps", "-a", "--format", "{{.Names}}"]);
    let names = String::from_utf8_lossy(&names.stdout).into_owned();
    for svc in ["broker", "agent"] {
        assert!(
            names.lines().filter(|n| n.ends_with(svc)).collect::<Vec<_>>() == [svc],
            "one {svc} container, none left by a second `compose up`: {names}"
        );
        let job = site.root("edge-a").join(format!("state/deploy/{id}/jobs/{svc}/up"));
        assert_eq!(fs::read_to_string(job.join("rc")).unwrap().trim(), "0", "{svc}'s own result");
    }
    let agent = site.lab.docker("edge-a", &["inspect", "-f", "{{.Config.Cmd}}", "agent"]);
    assert!(String::from_utf8_lossy(&agent.stdout).contains("86401"), "agent at its new version");
    assert_eq!(site.detailed(), 0);

    // A slow, lossy LTE link: plan and apply still go through.
    site.lab.slow("edge-a", "delay 150ms loss 3%");
    site.edit("services/broker/docker-compose.yml", |s| {
        s.replace("BROKER_USER: killed\n", "BROKER_USER: lte\n")
    });
    let id = site.plan_and_approve();
    let out = site.apply(&id, &[]);
    site.lab.unslow("edge-a");
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(site.env_of("edge-a", "broker").contains(&"BROKER_USER=lte".to_owned()));
}

#[test]
fn a_second_apply_on_a_locked_node_waits_or_refuses() {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new(Lab::start(&NODES));
    // A slow first deploy: the web healthcheck takes a while to answer.
    site.edit("services/web/service.yaml", |s| {
        s.replace("timeout: 1s", "timeout: 20s").replace("interval: 1s", "interval: 20s")
    });
    site.edit("services/web/healthcheck.sh", |s| s.replace("#!/bin/sh\n", "#!/bin/sh\nsleep 8\n"));
    let id = site.plan_and_approve();
    let mut first = site.spawn_apply(&id, &["--node", "alpha"]);
    let (_seen, rest) = wait_for_line(&mut first, "[alpha] web verify:");
    // Other controllers (their own records) apply the same plan meanwhile.
    let other = |records: &str, extra: &[&str]| {
        let approved = site.approved(&id);
        let mut args = vec!["apply", "--node", "alpha"];
        args.extend(extra);
        args.push(&approved);
        let mut c = site.command(&args);
        c.env("HOMELAB_ROOT", site.repo.path().join(records));
        c
    };
    let refused = other(".controller-2", &[]).output().unwrap();
    let text = String::from_utf8_lossy(&refused.stdout);
    assert_eq!(refused.status.code(), Some(3), "{text}");
    assert!(
        text.contains("locked by") && text.contains(&id),
        "names the holder and its plan: {text}"
    );
    let waiting = other(".controller-3", &["--lock-wait", "120"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (code, tail) = finish(first, rest);
    assert_eq!(code, 0, "{tail}");
    let waited = waiting.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&waited.stdout);
    // It waited for the lock, then found the plan applied and the node still at its state:
    // done, nothing interleaved (issue 17: not a replay to refuse).
    assert_eq!(waited.status.code(), Some(0), "{text}");
    assert!(text.contains("applied earlier: already applied on this node (by "), "{text}");
    // The journal shows one run only.
    let journal =
        fs::read_to_string(site.root("alpha").join(format!("state/deploy/{id}/journal.json")))
            .unwrap();
    assert!(journal.contains("\"finished\": true"), "{journal}");

    // A lock whose holder is gone (another machine's apply that died) is never broken
    // silently: apply refuses naming it, `homelab unlock` shows it and removes it.
    let lock = site.root("alpha").join("state/lock");
    fs::create_dir_all(&lock).unwrap();
    fs::write(
        lock.join("holder.json"),
        "{\n  \"holder\": \"root@elsewhere pid 1\",\n  \"plan\": \"0000000000000000\"\n}\n",
    )
    .unwrap();
    site.edit("services/web/service.yaml", |s| {
        s.replace("timeout: 20s", "timeout: 1s").replace("interval: 20s", "interval: 1s")
    });
    site.edit("services/web/healthcheck.sh", |s| s.replace("sleep 8\n", ""));
    site.edit("services/cache/docker-compose.yml", |s| s.replace("\"8081\"]", "\"8091\"]"));
    let id = site.plan_and_approve();
    let out = site.apply(&id, &[]);
    assert_eq!(out.code, 3, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("locked by { \"holder\": \"root@elsewhere pid 1\""),
        "{}",
        out.stdout
    );
    let unlock = site.homelab(&["unlock", "--node", "alpha"]);
    assert_eq!(unlock.code, 0, "{}", unlock.stderr);
    assert!(
        unlock.stdout.contains("removed the lock held by { \"holder\": \"root@elsewhere pid 1\""),
        "{}",
        unlock.stdout
    );

    // Part of a plan: one service, one stage at a time; the rest stays pending. (EDGE-A and
    // EDGE-B were applied by the refused run above, so this continues that plan.)
    let journal = || {
        fs::read_to_string(site.root("alpha").join(format!("state/deploy/{id}/journal.json")))
            .unwrap()
    };
    let out = site.apply(&id, &["--resume", "--service", "cache", "--stage", "prepare"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("ALPHA            stage done"), "{}", out.stdout);
    assert!(journal().contains("\"stage\": \"prepared\""), "{}", journal());
    assert!(!journal().contains("\"web\""), "web is not touched: {}", journal());
    let out = site.apply(&id, &["--resume", "--service", "cache", "--stage", "verify"]);
    assert_eq!(out.code, 1, "verify needs validate and deploy first: {}", out.stdout);
    assert!(
        out.stdout.contains("cache: at `prepare`: `--stage verify` runs that one stage, once the stages before it are done; run `--stage validate` first, and every later `--stage` of this plan with `--resume`"),
        "{}",
        out.stdout
    );
    let out = site.apply(&id, &["--resume", "--service", "cache"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(site.running("alpha", "cache"));
    // The rest, with progress as JSON lines.
    let out = site.apply(&id, &["--resume", "--format", "json"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let events: Vec<serde_json::Value> =
        out.stdout.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert!(
        events.iter().any(|e| e["event"] == "node-done"
            && e["node"] == "alpha"
            && e["outcome"] == "applied"),
        "{}",
        out.stdout
    );
    let last = events.last().unwrap();
    assert_eq!(last["event"], "summary");
    assert_eq!(last["exit_code"], 0);
    assert_eq!(site.detailed(), 0);
}

#[test]
fn shell_metacharacters_arrive_intact_and_nothing_runs() {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::start(&NODES);
    let canary = lab.dir().join("pwned");
    // Runtime roots with spaces and quotes-in-names; values with every kind of metacharacter.
    let site = Site::with_roots(lab, |n| n.dir.join("root with spaces, and =signs"));
    let hostile = format!(
        "$(touch {0}) `touch {0}`; touch {0} && echo 'single' \"double\" | cat > {0}",
        canary.display()
    );
    let yaml_value = hostile.replace('\\', "\\\\").replace('"', "\\\"").replace('$', "$$");
    site.edit("services/app/docker-compose.yml", |s| {
        format!("{s}    environment:\n      APP_HOSTILE: \"{yaml_value}\"\n      APP_DASH: \"-n --version\"\n    volumes:\n      - \"{{{{ data_dir }}}}/a folder with spaces:/data\"\n")
    });
    site.edit("services/app/service.yaml", |s| s.replace("    - name: APP_NODE\n      secret: false\n", "    - name: APP_NODE\n      secret: false\n    - name: APP_HOSTILE\n    - name: APP_DASH\n"));
    site.edit("services/app/env.example", |s| format!("{s}APP_HOSTILE=x\nAPP_DASH=-n\n"));
    let id = site.plan_and_approve();
    let out = site.apply(&id, &[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let env = site.env_of("edge-b", "app");
    assert!(env.contains(&format!("APP_HOSTILE={hostile}")), "{env:?}");
    assert!(env.contains(&"APP_DASH=-n --version".to_owned()), "{env:?}");
    assert!(!canary.exists(), "a value was executed");
    let root = site.root_with_spaces("edge-b");
    assert!(root.join("data/app/a folder with spaces").is_dir());
    assert!(root.join("state/services/app").exists());
}

impl Site {
    fn root_with_spaces(&self, node: &str) -> PathBuf {
        self.lab.node(node).dir.join("root with spaces, and =signs")
    }
}

#[test]
fn apply_on_the_node_itself_with_the_controller_unreachable() {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new(Lab::start(&NODES));
    let id = site.plan_and_approve();
    // On EDGE-A, inside its network namespace, through the local transport: the controller's
    // network is not needed.
    let ns = site.lab.node("edge-a").ns.clone();
    let node_records = site.root("edge-a");
    let mut on_node = Command::new("ip");
    on_node
        .args(["netns", "exec", &ns, env!("CARGO_BIN_EXE_homelab"), "--repo"])
        .arg(site.repo.path())
        .args(["apply", "--transport", "local", "--node", "edge-a", &site.approved(&id)])
        .env("NO_COLOR", "1")
        .env("HOMELAB_ROOT", &node_records);
    let out = on_node.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(site.running("edge-a", "broker"));
    let journal =
        fs::read_to_string(site.root("edge-a").join(format!("state/deploy/{id}/journal.json")))
            .unwrap();
    assert!(journal.contains("\"finished\": true"), "{journal}");
    // Later, the controller continues the plan: EDGE-A was applied on the node, the rest now.
    let out = site.apply(&id, &["--resume"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("EDGE-A           applied earlier"), "{}", out.stdout);
    assert!(site.running("edge-b", "app") && site.running("alpha", "web"));
}

impl Site {
    /// `homelab apply --transport local --node NODE plans/<id>.approved` run on the node itself
    /// (in its network namespace), keeping its controller records in the node's runtime root.
    fn apply_on_node(&self, node: &str, id: &str) -> Output {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.lab.node(node).ns, env!("CARGO_BIN_EXE_homelab")])
            .arg("--repo")
            .arg(self.repo.path())
            .args(["apply", "--transport", "local", "--node", node, &self.approved(id)])
            .env("NO_COLOR", "1")
            .env("HOMELAB_ROOT", self.root(node))
            .output()
            .unwrap();
        out.into()
    }

    /// `apply` from another controller (its own records, under `records` in the repository).
    fn apply_from(&self, records: &str, id: &str, extra: &[&str]) -> Output {
        let approved = self.approved(id);
        let mut args = vec!["apply"];
        args.extend(extra);
        args.push(&approved);
        let mut c = self.command(&args);
        c.env("HOMELAB_ROOT", self.repo.path().join(records));
        c.output().unwrap().into()
    }
}

/// Issue 17: a plain apply after a node-local apply of the same plan exited 3 ("replay")
/// although the node was at the plan's state. It is done (exit 0, who applied it and when),
/// and the controller records the plan as applied. Once the node has moved on (another plan
/// applied there), the old plan is a replay again, refused saying what differs.
#[test]
fn a_plain_apply_after_the_node_applied_the_plan_itself_is_done_until_the_node_moves_on() {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new(Lab::start(&NODES));
    let id = site.plan_and_approve();
    let out = site.apply_on_node("edge-a", &id);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);

    let out = site.apply(&id, &[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let edge_a = out.stdout.lines().find(|l| l.contains("EDGE-A")).unwrap_or_default();
    assert!(
        edge_a.contains("applied earlier: already applied on this node (by ")
            && edge_a.contains(", at "),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("ALPHA            applied"), "{}", out.stdout);
    assert!(site.running("edge-b", "app") && site.running("alpha", "web"));
    let record = fs::read_to_string(site.ctl.join(format!("state/applied/{id}.json"))).unwrap();
    assert!(record.contains("\"state\": \"completed\""), "{record}");
    // Recorded: a plain apply from this controller is now refused by its own record.
    let again = site.apply(&id, &[]);
    assert_eq!(again.code, 3, "{}\n{}", again.stdout, again.stderr);
    assert!(again.stderr.contains("already applied"), "{}", again.stderr);

    // The node moves on: another plan changes broker there.
    site.edit("services/broker/docker-compose.yml", |s| {
        s.replace("BROKER_USER: broker\n", "BROKER_USER: moved-on\n")
    });
    let next = site.plan_and_approve();
    let out = site.apply(&next, &[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    // The old plan, from a controller that never applied it: a replay on EDGE-A, saying what
    // differs; nothing changes there.
    let out = site.apply_from(".controller-2", &id, &["--node", "edge-a"]);
    assert_eq!(out.code, 3, "{}\n{}", out.stdout, out.stderr);
    let edge_a = out.stdout.lines().find(|l| l.contains("EDGE-A")).unwrap_or_default();
    assert!(edge_a.contains("already applied on this node (by "), "{}", out.stdout);
    assert!(edge_a.contains("moved on since (broker: docker-compose.yml"), "{}", out.stdout);
    assert!(edge_a.contains("replay"), "{}", out.stdout);
    assert!(!out.stdout.contains("--resume"), "a resume cannot help a replay: {}", out.stdout);
    assert!(site.env_of("edge-a", "broker").contains(&"BROKER_USER=moved-on".to_owned()));
}

/// Issue 17: an apply killed mid-way left its lock, and a new plan was refused with "locked
/// ... homelab unlock", never naming the plan to resume. The refusal names the interrupted
/// plan and the command that decides it (its resume, which takes the lock over), and mentions
/// `homelab unlock` only after, as the last resort. Once resumed, the new plan meets the node
/// the old one left: stale, plan again.
#[test]
fn a_new_plan_on_a_node_an_interrupted_apply_left_locked_names_the_plan_to_resume() {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new(Lab::start(&NODES));
    // Both plans are made against the empty node, so the newer one is stale once the older
    // one is applied there.
    let old = site.plan_and_approve();
    site.edit("services/broker/docker-compose.yml", |s| {
        s.replace("BROKER_USER: broker\n", "BROKER_USER: newer\n")
    });
    let new = site.plan_and_approve();
    let mut cmd = site.command(&["apply", "--node", "edge-a", &site.approved(&old)]);
    crate::support::killed_after_line(
        &mut cmd,
        "[edge-a] broker deploy:",
        std::time::Duration::from_secs(1),
    );
    assert!(site.root("edge-a").join("state/lock").exists(), "the killed run left its lock");

    let out = site.apply(&new, &["--node", "edge-a"]);
    assert_eq!(out.code, 3, "{}\n{}", out.stdout, out.stderr);
    let edge_a = out.stdout.lines().find(|l| l.contains("EDGE-A")).unwrap_or_default();
    let resume = format!("homelab apply --resume plans/{old}.approved");
    assert!(edge_a.contains(&format!("plan `{old}` that was interrupted")), "{}", out.stdout);
    let (at_resume, at_unlock) = (edge_a.find(&resume), edge_a.find("homelab unlock"));
    assert!(at_resume.is_some() && at_unlock.is_some(), "{}", out.stdout);
    assert!(at_resume < at_unlock, "the command that makes progress first: {}", out.stdout);
    assert!(
        !site.root("edge-a").join(format!("state/deploy/{new}")).exists(),
        "nothing of the new plan on the node"
    );

    let out = site.apply(&old, &["--resume", "--node", "edge-a"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(site.env_of("edge-a", "broker").contains(&"BROKER_USER=broker".to_owned()));
    let out = site.apply(&new, &["--node", "edge-a"]);
    assert_eq!(out.code, 3, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("EDGE-A           stale"), "{}", out.stdout);
    assert!(out.stdout.contains("plan again"), "{}", out.stdout);
}

/// Service files beyond the five ship with the release (issue 9): a plain config file and a
/// `.j2` template reach the container through read-only relative mounts, a plan shows a change
/// to the config file as a diff of that file, and after the update the container reads the
/// new content (the release is switched and the container recreated, never left on the old
/// file).
#[test]
fn config_files_ship_with_the_service_and_an_update_replaces_them() {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new(Lab::start(&NODES));
    site.write("services/web/conf/motd.txt", "version one\n{{.Name}} stays as written\n");
    site.write("services/web/greeting.txt.j2", "hello from {{ node.display_name }}\n");
    site.edit("services/web/docker-compose.yml", |s| {
        s.replace(
            "    command: [\"httpd\", \"-f\", \"-p\", \"8080\"]\n",
            "    command: [\"httpd\", \"-f\", \"-p\", \"8080\"]\n    volumes:\n      - \"./conf/motd.txt:/etc/motd.txt:ro\"\n      - \"./greeting.txt:/etc/greeting.txt:ro\"\n",
        )
    });
    let read = |path: &str| {
        let out = site.lab.docker("alpha", &["exec", "web", "cat", path]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let id = site.plan_and_approve();
    let plan = fs::read_to_string(site.plan_path(&id)).unwrap();
    assert!(plan.contains("\nartifact conf/motd.txt 0644 "), "{plan}");
    assert!(plan.contains("\nartifact greeting.txt 0644 "), "{plan}");
    let out = site.apply(&id, &[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(read("/etc/motd.txt"), "version one\n{{.Name}} stays as written\n");
    assert_eq!(read("/etc/greeting.txt"), "hello from ALPHA\n");

    site.write("services/web/conf/motd.txt", "version two\n{{.Name}} stays as written\n");
    let key = site.key.to_str().unwrap().to_owned();
    let planned = site.homelab(&["plan", "--key", &key]);
    assert_eq!(planned.code, 0, "{}", planned.stderr);
    assert!(
        planned.stdout.contains("~ update   web@alpha  changed: conf/motd.txt"),
        "{}",
        planned.stdout
    );
    assert!(
        planned.stdout.contains("--- a/conf/motd.txt\n      +++ b/conf/motd.txt\n      @@ -1,2 +1,2 @@\n      -version one\n      +version two\n"),
        "{}",
        planned.stdout
    );
    let id = planned.stdout.lines().next().unwrap().strip_prefix("plan ").unwrap().to_owned();
    let plan = site.plan_path(&id);
    let a = site.homelab(&["approve", plan.to_str().unwrap(), "--key", &key, "--yes"]);
    assert_eq!(a.code, 0, "{}", a.stderr);
    let out = site.apply(&id, &[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(read("/etc/motd.txt"), "version two\n{{.Name}} stays as written\n");
    assert_eq!(site.detailed(), 0, "everything is at its new version");
}

#[test]
fn secrets_reach_compose_from_the_nodes_env_and_failures_quote_their_output_redacted() {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new(Lab::start(&NODES));
    // `${VAR}` is interpolated on the node from `<root>/config/<svc>/.env`.
    site.edit("services/broker/docker-compose.yml", |s| {
        s.replace(
            "BROKER_USER: broker\n",
            "BROKER_USER: broker\n      BROKER_SEEN: \"${BROKER_PASSWORD}\"\n",
        )
    });
    let id = site.plan_and_approve();
    let out = site.apply(&id, &[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        site.env_of("edge-a", "broker").contains(&"BROKER_SEEN=not-in-git-4711".to_owned()),
        "{:?}",
        site.env_of("edge-a", "broker")
    );

    // A failing healthcheck whose output holds the node's secrets (issue 19): the whole output
    // is kept on the node (0600); the summary quotes its last lines with every value of the
    // node's `.env` redacted on the node (metacharacters and all); the incident event, the
    // journal, the controller's record and the world never hold a value, and the event only
    // names the log; the records that quote output are readable by their owner only.
    const APP_SECRET: &str = "app-s3cret $(touch /tmp/pwned) `id` *.[a]^ \\1 & | \"q\" ;";
    let app_env = site.root("edge-b").join("config/app/.env");
    fs::create_dir_all(app_env.parent().unwrap()).unwrap();
    fs::write(&app_env, format!("APP_TOKEN='{APP_SECRET}'\nAPP_OTHER=other-value-77\n")).unwrap();
    site.edit("services/app/healthcheck.sh", |s| {
        s.replace(
            "exit 0\n",
            "echo \"probe: NOPE-4242\"\ncat \"$HOMELAB_ROOT/config/app/.env\"\necho \"token: $(sed -n 's/^APP_OTHER=//p' \"$HOMELAB_ROOT/config/app/.env\")\"\nexit 1\n",
        )
    });
    let id2 = site.plan_and_approve();
    let out = site.apply(&id2, &[]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("rolled back: app; app: healthcheck failed"), "{}", out.stdout);
    assert!(out.stdout.contains("probe: NOPE-4242"), "{}", out.stdout);
    assert!(out.stdout.contains("APP_TOKEN='[redacted]'"), "{}", out.stdout);
    assert!(out.stdout.contains("token: [redacted]"), "{}", out.stdout);
    let leaked = |text: &str| text.contains("app-s3cret") || text.contains("other-value-77");
    assert!(!leaked(&out.stdout) && !leaked(&out.stderr), "{}\n{}", out.stdout, out.stderr);
    let mode = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    };
    let log = site.root("edge-b").join(format!("logs/app/healthcheck-{id2}.log"));
    assert!(fs::read_to_string(&log).unwrap().contains(APP_SECRET));
    assert_eq!(mode(&log), 0o600);
    let events = events_of(&site.root("edge-b"), "edge-b");
    let failed: Vec<&str> =
        events.lines().filter(|l| l.contains("\"type\":\"deployment_failed\"")).collect();
    assert!(
        failed
            .iter()
            .any(|l| l.contains(&format!("healthcheck-{id2}.log"))
                && l.contains("healthcheck failed")),
        "{events}"
    );
    assert!(!leaked(&events) && !events.contains("NOPE-4242"), "{events}");
    let journal = site.root("edge-b").join(format!("state/deploy/{id2}/journal.json"));
    let text = fs::read_to_string(&journal).unwrap();
    assert!(text.contains("NOPE-4242") && !leaked(&text), "{text}");
    assert_eq!(mode(&journal), 0o600);
    let record = site.ctl.join(format!("state/applied/{id2}.json"));
    let text = fs::read_to_string(&record).unwrap();
    assert!(text.contains("NOPE-4242") && !leaked(&text), "{text}");
    assert_eq!(mode(&record), 0o600);
    let observed = site.homelab(&["observe", "--once"]);
    assert_eq!(observed.code, 0, "{}", observed.stderr);
    for f in ["incidents", "deployments", "services"] {
        let text = fs::read_to_string(site.ctl.join(format!("world/{f}.json"))).unwrap();
        assert!(!leaked(&text) && !text.contains("NOPE-4242"), "{f}: {text}");
    }
    assert!(
        fs::read_to_string(site.ctl.join("world/incidents.json"))
            .unwrap()
            .contains(&format!("healthcheck-{id2}.log")),
        "the incident names the log on the node"
    );

    // A required secret missing on the node fails validate with its name, never a value.
    fs::write(site.root("edge-a").join("config/broker/.env"), "OTHER=still-secret-99\n").unwrap();
    site.edit("services/broker/docker-compose.yml", |s| {
        s.replace("BROKER_USER: broker\n", "BROKER_USER: broker3\n")
    });
    let id3 = site.plan_and_approve();
    let out = site.apply(&id3, &[]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("secrets missing from"), "{}", out.stdout);
    assert!(out.stdout.contains("BROKER_PASSWORD"), "{}", out.stdout);
    let all = format!("{}{}{}", out.stdout, out.stderr, events_of(&site.root("edge-a"), "edge-a"));
    assert!(!all.contains("still-secret-99") && !all.contains("not-in-git-4711"), "{all}");
    let journal: serde_json::Value = serde_json::from_slice(
        &fs::read(site.root("edge-a").join(format!("state/deploy/{id3}/journal.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(journal["services"]["broker"]["stage"], "failed", "{journal}");
    assert!(journal["services"]["broker"]["error"].is_string(), "{journal}");
}

/// Every event line a node's runtime root holds.
fn events_of(root: &Path, node: &str) -> String {
    let mut all = String::new();
    for day in fs::read_dir(root.join("events")).unwrap() {
        let f = day.unwrap().path().join(node).join("events.jsonl");
        all.push_str(&fs::read_to_string(f).unwrap_or_default());
    }
    all
}

/// Healthy means healthy at once (issue 10, item 1): `start_period` is Docker's grace period
/// for failures, not a wait. A service whose healthcheck passes is verified on the first try
/// even with an hour of start period; the guard below only turns a regression (a wait of an
/// hour) into a failure instead of a hang.
#[test]
fn a_healthy_service_is_verified_at_once_whatever_its_start_period() {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new(Lab::start(&NODES));
    site.edit("services/web/service.yaml", |s| {
        s.replace("  retries: 3\n", "  retries: 3\n  start_period: 1h\n")
    });
    let id = site.plan_and_approve();
    let mut child = site.spawn_apply(&id, &["--node", "alpha"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("verify waited for the start period of a healthy service");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("[alpha] web complete"), "{stderr}");
    assert!(site.running("alpha", "web"));
    let root = site.root("alpha");
    let events = events_of(&root, "alpha");
    assert!(
        !events
            .lines()
            .any(|l| l.contains("healthcheck_failed") && l.contains("\"service\":\"web\"")),
        "a healthy service failed no healthcheck:\n{events}"
    );
}

/// `build:` works (issue 9, item 2): the build context ships with the service, the node builds
/// the image in the validate stage (no registry: `FROM` the image the node has), and the
/// container runs what was built; a context that does not build stops the service at validate
/// with the build's output quoted, and nothing live changes.
#[test]
fn a_service_built_from_its_shipped_context_runs_what_was_built() {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new(Lab::start(&NODES));
    site.write(
        "services/web/Dockerfile",
        "FROM homelab-test/busybox:1\nCOPY built.txt /built.txt\n",
    );
    site.write("services/web/built.txt", "built on the node\n");
    site.edit("services/web/docker-compose.yml", |s| {
        s.replace("    image: \"{{ vars.image }}\"\n", "    image: \"web-built:1\"\n    build: .\n")
    });
    let id = site.plan_and_approve();
    let out = site.apply(&id, &["--node", "alpha"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let cat = site.lab.docker("alpha", &["exec", "web", "cat", "/built.txt"]);
    assert_eq!(String::from_utf8_lossy(&cat.stdout), "built on the node\n");

    site.write("services/web/Dockerfile", "FROM homelab-test/busybox:1\nRUN exit 7\n");
    let id = site.plan_and_approve();
    let out = site.apply(&id, &["--node", "alpha"]);
    assert_ne!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains("web"), "{all}");
    assert!(all.contains("validate"), "{all}");
    // Stopped before anything live changed: nothing to roll back.
    assert!(!all.contains("rolled back") && !all.contains("rollback"), "{all}");
    // Still the old container, with what was built before.
    let cat = site.lab.docker("alpha", &["exec", "web", "cat", "/built.txt"]);
    assert_eq!(String::from_utf8_lossy(&cat.stdout), "built on the node\n");
}

/// The node checks what Compose will really mount and publish (issues 20 and 21): a variable
/// the repository resolves to a fine default, but that the node's env file sets otherwise, is
/// refused at validate on the node, naming the service, the mount and the variable; nothing of
/// that service is deployed. Immich's `.env` sets `UPLOAD_LOCATION=./library`, which lands in
/// the release folder, replaced on every update.
#[test]
fn a_variable_the_nodes_env_file_resolves_to_a_release_mount_or_an_open_port_is_refused_at_validate(
) {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new(Lab::start(&NODES));
    site.edit("services/app/docker-compose.yml", |s| {
        s.replace(
            "    command: [\"sleep\", \"86400\"]\n",
            "    command: [\"sleep\", \"86400\"]\n    volumes:\n      - \"${UPLOAD_LOCATION:-{{ data_dir }}/library}:/data\"\n      - \"${BACKUP_DIR:-{{ data_dir }}/backup}:/backup\"\n    ports:\n      - \"${APP_PORT:-127.0.0.1:8090}:8090\"\n",
        )
    });
    site.edit("services/app/service.yaml", |s| {
        s.replace(
            "  env_vars:\n",
            "  env_vars:\n    - name: UPLOAD_LOCATION\n      secret: false\n    - name: BACKUP_DIR\n      secret: false\n    - name: APP_PORT\n      secret: false\n",
        )
    });
    site.edit("services/app/env.example", |s| {
        format!("{s}UPLOAD_LOCATION=\nBACKUP_DIR=\nAPP_PORT=\n")
    });
    let v = site.homelab(&["validate"]);
    assert_eq!(v.code, 0, "the repository knows only the defaults, which are fine: {}", v.stderr);

    let root = site.root("edge-b");
    let elsewhere = root.parent().unwrap().join("elsewhere");
    let env = root.join("config/app/.env");
    fs::create_dir_all(env.parent().unwrap()).unwrap();
    fs::write(
        &env,
        format!("UPLOAD_LOCATION=./library\nBACKUP_DIR={}\nAPP_PORT=8090\n", elsewhere.display()),
    )
    .unwrap();
    let id = site.plan_and_approve();
    let out = site.apply(&id, &[]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let all = format!("{}{}", out.stdout, out.stderr);
    let release = root.join(format!("state/releases/app/{id}/library"));
    for said in [
        "error[release-mount]: services/app/docker-compose.yml:8: `services.app.volumes[0]`: on the node, `app` mounts `".to_owned(),
        format!("{}` writable at `/data`", release.display()),
        "through `UPLOAD_LOCATION` from".to_owned(),
        format!("set `UPLOAD_LOCATION` in {} on the node to a folder under {}/data/app/", env.display(), root.display()),
        format!("error[compose-path]: services/app/docker-compose.yml:9: `services.app.volumes[1]`: on the node, `app` mounts `{}` writable at `/backup`", elsewhere.display()),
        "through `BACKUP_DIR` from".to_owned(),
        "error[exposure-port]: services/app/docker-compose.yml:11: `services.app.ports[0]`: on the node, publishes host port 8090/tcp on every address of the node (0.0.0.0)".to_owned(),
        "through `APP_PORT` from".to_owned(),
    ] {
        assert!(all.contains(&said), "expected {said:?} in:\n{all}");
    }
    // Refused at validate: nothing of the service went live, nothing was created for it.
    let journal = site.journal("edge-b", &id);
    assert_eq!(journal["services"]["app"]["stage"], "failed", "{journal}");
    assert!(journal["services"]["app"]["error"].as_str().unwrap().contains("UPLOAD_LOCATION"));
    assert_eq!(site.live(&root, "app"), None);
    assert!(!site.running("edge-b", "app"));
    assert!(!release.exists() && !elsewhere.exists());
    assert!(events_of(&root, "edge-b")
        .lines()
        .any(|l| l.contains("\"type\":\"deployment_failed\"")
            && l.contains("\"stage\":\"validate\"")
            && l.contains("APP_PORT")));

    // Values that fit: the service goes live and writes where the contract says.
    let library = root.join("data/app/library");
    fs::write(&env, format!("UPLOAD_LOCATION={}\nAPP_PORT=127.0.0.1:8090\n", library.display()))
        .unwrap();
    let id = site.plan_and_approve();
    let out = site.apply(&id, &[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let touched = site.lab.docker("edge-b", &["exec", "app", "touch", "/data/marker"]);
    assert!(touched.status.success(), "{}", String::from_utf8_lossy(&touched.stderr));
    assert!(library.join("marker").exists());
}

/// Issue 21: the starter kit reaches Ollama (`ollama-cpu`, `container_name: ollama`) as
/// `ollama`. Renamed by the container-name rule without keeping that name, it no longer
/// resolves while every container runs: `plan` refuses it (rule `compose-host`). With the
/// network alias the message asks for, the old name answers on the node, and the service's
/// healthcheck checks the name its web container uses.
#[test]
fn a_renamed_container_answers_to_its_old_name_through_the_alias_validation_asks_for() {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new(Lab::start(&NODES));
    let compose = |networks: &str| {
        format!(
            "services:\n  web:\n    image: \"{{{{ vars.image }}}}\"\n    container_name: web\n    restart: unless-stopped\n    environment:\n      OLLAMA_BASE_URL: http://ollama:11434\n    command: [\"httpd\", \"-f\", \"-p\", \"8080\"]\n  ollama-cpu:\n    image: \"{{{{ vars.image }}}}\"\n    container_name: web-ollama-cpu\n    restart: unless-stopped\n    command: [\"httpd\", \"-f\", \"-p\", \"11434\", \"-h\", \"/etc\"]\n{networks}"
        )
    };
    site.write("services/web/docker-compose.yml", &compose(""));
    site.write(
        "services/web/healthcheck.sh",
        "#!/bin/sh\n# What web reaches Ollama by, from web.\ndocker exec \"$HOMELAB_SERVICE\" wget -q -O /dev/null http://ollama:11434/hostname\n",
    );
    let key = site.key.to_str().unwrap().to_owned();
    let refused = site.homelab(&["plan", "--key", &key]);
    assert_eq!(refused.code, 1, "{}\n{}", refused.stdout, refused.stderr);
    assert!(
        refused.stderr.contains("error[compose-host]: services/web/docker-compose.yml:7: `ollama`"),
        "{}",
        refused.stderr
    );

    site.write(
        "services/web/docker-compose.yml",
        &compose("    networks:\n      default:\n        aliases: [ollama]\n"),
    );
    let id = site.plan_and_approve();
    let out = site.apply(&id, &["--node", "alpha"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let reached = site
        .lab
        .docker("alpha", &["exec", "web", "wget", "-q", "-O", "-", "http://ollama:11434/hostname"]);
    assert!(reached.status.success(), "{}", String::from_utf8_lossy(&reached.stderr));
}

/// Independent services of a node run side by side (issue 10, item 2), shown without a clock:
/// on ALPHA, `agent` and `cache` (independent) are healthy only once the other one's
/// healthcheck has run too, a rendezvous that a run of one service after another cannot make
/// (the first one's grace period ends alone, it rolls back). `web` needs `agent`: it still
/// starts only after `agent` completed, and is skipped when `agent` does not make it, while the
/// independent `cache` goes on.
#[test]
fn independent_services_of_a_node_run_side_by_side_and_dependents_wait() {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new(Lab::start(&NODES));
    let rendezvous = r#"#!/bin/sh
# Healthy when the container runs and the partner's healthcheck has run too.
state=$(docker inspect -f '{{.State.Running}}' "$HOMELAB_SERVICE" 2>/dev/null) || exit 1
[ "$state" = "true" ] || exit 1
[ "$HOMELAB_NODE" = alpha ] || exit 0
case $HOMELAB_SERVICE in agent) other=cache ;; *) other=agent ;; esac
mkdir -p "$HOMELAB_ROOT/rendezvous"
: > "$HOMELAB_ROOT/rendezvous/$HOMELAB_SERVICE"
[ -f "$HOMELAB_ROOT/rendezvous/$other" ] || { echo "waiting for $other"; exit 1; }
exit 0
"#;
    for svc in ["agent", "cache"] {
        site.write(&format!("services/{svc}/healthcheck.sh"), rendezvous);
        // A grace period long enough for the partner to get there, bounded so a run of one
        // service after another fails (rolls back) instead of hanging.
        site.edit(&format!("services/{svc}/service.yaml"), |s| {
            s.replace("  retries: 3\n", "  retries: 3\n  start_period: 30s\n")
        });
    }
    let id = site.plan_and_approve();
    let out = site.apply(&id, &["--node", "alpha"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("ALPHA            applied"), "{}", out.stdout);
    let at = |line: &str| {
        out.stderr.find(line).unwrap_or_else(|| panic!("no `{line}` in:\n{}", out.stderr))
    };
    // Both verified at the same time: each began verifying before the other completed.
    assert!(at("[alpha] cache verify:") < at("[alpha] agent complete"), "{}", out.stderr);
    assert!(at("[alpha] agent verify:") < at("[alpha] cache complete"), "{}", out.stderr);
    // The dependent waited for its dependency before anything live changed (it was prepared
    // with the others: one upload for the node).
    assert!(at("[alpha] agent complete") < at("[alpha] web deploy:"), "{}", out.stderr);
    assert!(at("[alpha] web prepare:") < at("[alpha] agent deploy:"), "{}", out.stderr);
    for c in ["agent", "web", "cache"] {
        assert!(site.running("alpha", c), "{c} is not running");
    }
    let journal: serde_json::Value = site.journal("alpha", &id);
    for svc in ["agent", "web", "cache"] {
        assert_eq!(journal["services"][svc]["stage"], "completed", "{journal}");
    }
    assert_eq!(journal["finished"], true, "{journal}");

    // A dependency that fails still skips its dependent, with the same words; the independent
    // service is applied all the same.
    site.write("services/agent/healthcheck.sh", "#!/bin/sh\necho broken\nexit 1\n");
    site.edit("services/agent/service.yaml", |s| s.replace("  start_period: 30s\n", ""));
    site.edit("services/web/docker-compose.yml", |s| s.replace("\"8080\"]", "\"8083\"]"));
    site.edit("services/cache/docker-compose.yml", |s| s.replace("\"8081\"]", "\"8084\"]"));
    let id = site.plan_and_approve();
    let out = site.apply(&id, &["--node", "alpha"]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("ALPHA            rolled back"), "{}", out.stdout);
    assert!(
        out.stderr.contains("[alpha] web skip: skipped: agent@alpha did not reach its new version"),
        "{}",
        out.stderr
    );
    // Its release was uploaded with the others', but nothing live of it changed.
    assert!(!out.stderr.contains("[alpha] web deploy:"), "{}", out.stderr);
    assert!(out.stderr.contains("[alpha] cache complete"), "{}", out.stderr);
    let journal: serde_json::Value = site.journal("alpha", &id);
    assert_eq!(journal["services"]["agent"]["stage"], "rolled-back", "{journal}");
    assert_eq!(journal["services"]["web"]["stage"], "skipped", "{journal}");
    assert_eq!(journal["services"]["cache"]["stage"], "completed", "{journal}");
}

/// Issue 17, the contradiction: when the controller rolls a failed deploy back, that rollback
/// is the deploy's one decision, and the node's dead-man stands down for good. A newer version
/// applied afterwards stays, past the whole window the old watchdog had (and the next plan
/// finds nothing to do); the node writes no `remediation_completed` of its own.
#[test]
fn a_controller_rollback_is_the_deploys_one_decision_and_a_later_apply_stays() {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new(Lab::start(&NODES));
    let id = site.plan_and_approve();
    let out = site.apply(&id, &["--confirm-timeout", "3"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let root = site.root("alpha");

    // Version two fails its healthcheck: the controller rolls it back.
    site.edit("services/web/healthcheck.sh", |s| {
        s.replace("exit 0", "echo broken on purpose; exit 1")
    });
    let failed = site.plan_and_approve();
    let started = std::time::Instant::now();
    let out =
        site.apply(&failed, &["--node", "alpha", "--service", "web", "--confirm-timeout", "3"]);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert_ne!(out.code, 0, "{all}");
    assert!(all.contains("rolled back to") && all.contains("healthy"), "{all}");
    let decided = root.join(format!("state/deploy/{failed}/jobs/web/deadman/decided"));
    assert!(decided.join("controller-rollback").exists(), "the controller took the decision");
    assert!(!decided.join("rolled-back").exists());

    // Version three is good and applied.
    site.edit("services/web/healthcheck.sh", |s| {
        s.replace("echo broken on purpose; exit 1", "exit 0")
    });
    site.edit("services/web/docker-compose.yml", |s| {
        s.replace(
            "    restart: unless-stopped\n",
            "    restart: unless-stopped\n    environment:\n      VERSION: \"3\"\n",
        )
    });
    let good = site.plan_and_approve();
    let out = site.apply(&good, &["--node", "alpha", "--service", "web", "--confirm-timeout", "3"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(site.env_of("alpha", "web").contains(&"VERSION=3".to_owned()));

    // Past the failed deploy's whole dead-man window (3 s to confirm, 3 tries of 1 s + 1 s,
    // 2 s of stability: 11 s after its `compose up`), with room to spare.
    let window = std::time::Duration::from_secs(11 + 15);
    if let Some(rest) = window.checked_sub(started.elapsed()) {
        std::thread::sleep(rest);
    }
    assert!(site.env_of("alpha", "web").contains(&"VERSION=3".to_owned()), "version three stays");
    assert!(site.running("alpha", "web"));
    assert_eq!(
        fs::read_link(root.join("state/services/web")).unwrap(),
        root.join(format!("state/releases/web/{good}")),
        "the live release is still version three's"
    );
    let events = events_of(&root, "alpha");
    assert!(
        !events.lines().any(|l| l.contains("homelab dead-man")),
        "the node decided nothing by itself:\n{events}"
    );
    // And the next operation finds the node as applied.
    assert_eq!(site.detailed(), 0, "no changes after the good apply");
}

/// Issue 17: "verify" means healthy and staying healthy. A version that passes its healthcheck
/// in its first second and then crashes (and is restarted by Docker, `restart: unless-stopped`)
/// is rolled back within the stability window, and the previous version is verified healthy.
#[test]
fn a_version_that_crashes_after_start_is_rolled_back_and_the_old_one_verified() {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new(Lab::start(&NODES));
    let id = site.plan_and_approve();
    let out = site.apply(&id, &["--node", "alpha"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);

    site.edit("services/web/service.yaml", |s| s.replace("stable_for: 2s", "stable_for: 6s"));
    site.edit("services/web/docker-compose.yml", |s| {
        s.replace(
            r#"command: ["httpd", "-f", "-p", "8080"]"#,
            r#"command: ["sh", "-c", "sleep 1; echo crashing on purpose; exit 3"]"#,
        )
    });
    let id = site.plan_and_approve();
    let out = site.apply(&id, &["--node", "alpha", "--service", "web"]);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert_ne!(out.code, 0, "{all}");
    assert!(all.contains("did not stay up"), "the stability window caught it:\n{all}");
    assert!(all.contains("rolled back to") && all.contains(", healthy"), "{all}");
    let journal: serde_json::Value = site.journal("alpha", &id);
    assert_eq!(journal["services"]["web"]["stage"], "rolled-back", "{journal}");
    // The old version runs and stays: its command, not the crashing one.
    let cmd = site.lab.docker("alpha", &["inspect", "-f", "{{json .Config.Cmd}}", "web"]);
    assert!(String::from_utf8_lossy(&cmd.stdout).contains("httpd"), "{cmd:?}");
    std::thread::sleep(std::time::Duration::from_secs(3));
    let restarts = site.lab.docker("alpha", &["inspect", "-f", "{{.RestartCount}}", "web"]);
    assert_eq!(String::from_utf8_lossy(&restarts.stdout).trim(), "0");
    assert!(site.running("alpha", "web"));
}

/// Issue 17: where the compose file defines Docker's own healthcheck, the stability window
/// reads it too: a version whose contract healthcheck passes but that Docker finds `unhealthy`
/// within the window is rolled back, and the summary names the container and why. Through the
/// node's engine, which watches the window and diagnoses in process (the crash test above
/// takes the scripts' way).
#[test]
fn a_version_docker_calls_unhealthy_within_the_window_is_rolled_back() {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new(Lab::start(&NODES)).with_engines();
    let id = site.plan_and_approve();
    let out = site.apply(&id, &["--node", "alpha"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);

    site.edit("services/web/service.yaml", |s| s.replace("stable_for: 2s", "stable_for: 8s"));
    site.edit("services/web/docker-compose.yml", |s| {
        s.replace(
            "    restart: unless-stopped\n",
            "    restart: unless-stopped\n    healthcheck:\n      test: [\"CMD\", \"false\"]\n      interval: 1s\n      timeout: 1s\n      retries: 1\n",
        )
    });
    let id = site.plan_and_approve();
    let out = site.apply(&id, &["--node", "alpha", "--service", "web"]);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert_ne!(out.code, 0, "{all}");
    assert!(all.contains("web is unhealthy (its compose healthcheck)"), "{all}");
    assert!(all.contains("rolled back to") && all.contains(", healthy"), "{all}");
    // The incident log the engine kept on the node (0600): Compose's own view of the version
    // that failed, and its logs.
    let incident = site.root("alpha").join(format!("logs/web/incident-{id}.log"));
    let log = fs::read_to_string(&incident).unwrap();
    assert!(log.starts_with("== docker compose ps\n") && log.contains("unhealthy"), "{log}");
    assert!(log.contains("== docker compose logs (last 100 lines)\n"), "{log}");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&incident).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let health = site.lab.docker("alpha", &["inspect", "-f", "{{.State.Health}}", "web"]);
    assert_eq!(
        String::from_utf8_lossy(&health.stdout).trim(),
        "<nil>",
        "the old version, no check"
    );
    assert!(site.running("alpha", "web"));
}

/// Issue 17: a controller killed in the middle of its own rollback. The decision it took
/// (`controller-rollback`) stands: `--resume` does not verify the new version again nor start
/// a second rollback beside the first; it finishes that one (its detached job waited for or
/// its result read), verifies the previous version and says so. The first run's incident log
/// is kept.
#[test]
fn a_controller_killed_mid_rollback_is_resumed_into_the_same_rollback() {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new(Lab::start(&NODES));
    let id = site.plan_and_approve();
    let out = site.apply(&id, &["--node", "alpha"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);

    site.edit("services/web/healthcheck.sh", |s| {
        s.replace("exit 0", "echo broken on purpose; exit 1")
    });
    site.edit("services/web/docker-compose.yml", |s| {
        s.replace(
            "    restart: unless-stopped\n",
            "    restart: unless-stopped\n    environment:\n      VERSION: \"2\"\n",
        )
    });
    let id = site.plan_and_approve();
    let approved = site.approved(&id);
    let mut cmd = site.command(&["apply", "--node", "alpha", "--service", "web", &approved]);
    let seen = crate::support::killed_after_line(
        &mut cmd,
        "[alpha] web rollback:",
        std::time::Duration::from_millis(1500),
    );
    assert!(seen.contains("healthcheck failed"), "{seen}");
    let root = site.root("alpha");
    let dm = root.join(format!("state/deploy/{id}/jobs/web/deadman/decided"));
    assert!(dm.join("controller-rollback").exists(), "the killed run had decided");
    let incident = root.join(format!("logs/web/incident-{id}.log"));
    let first = fs::read(&incident).ok();
    let checked = root.join(format!("logs/web/healthcheck-{id}.log"));
    let mtime = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    let checked_at = mtime(&checked);
    assert!(checked_at.is_some(), "the new version's healthcheck ran in the first run");

    let out = site.apply(&id, &["--node", "alpha", "--service", "web", "--resume"]);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert_ne!(out.code, 0, "{all}");
    assert!(all.contains("began its rollback"), "{all}");
    assert!(all.contains("rolled back to") && all.contains(", healthy"), "{all}");
    assert_eq!(mtime(&checked), checked_at, "the new version is not checked again:\n{all}");
    assert!(!site.env_of("alpha", "web").contains(&"VERSION=2".to_owned()), "the old version runs");
    assert!(site.running("alpha", "web"));
    if let Some(first) = first {
        assert_eq!(fs::read(&incident).ok(), Some(first), "the first incident log is kept");
    }
    let journal: serde_json::Value = site.journal("alpha", &id);
    assert_eq!(journal["services"]["web"]["stage"], "rolled-back", "{journal}");
}

/// A rollback that fails adds to the first cause, never replaces it (issue 9, item 7): web is
/// deployed from image `:1`; that tag is then removed from the node (the running container
/// keeps its image) and version two, on a tag `:2` of the same layer, fails its healthcheck; the
/// rollback to version one cannot recreate its container (no `:1` and no registry). The
/// summary names both causes, the journal says failed with its error, and a
/// `remediation_failed` event is written.
#[test]
fn a_failed_rollback_keeps_the_first_cause_and_says_what_failed_next() {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new(Lab::start(&NODES));
    let id = site.plan_and_approve();
    let out = site.apply(&id, &["--node", "alpha"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let tag =
        site.lab.docker("alpha", &["tag", "homelab-test/busybox:1", "homelab-test/busybox:2"]);
    assert!(tag.status.success(), "{}", String::from_utf8_lossy(&tag.stderr));
    let rmi = site.lab.docker("alpha", &["rmi", "homelab-test/busybox:1"]);
    assert!(rmi.status.success(), "{}", String::from_utf8_lossy(&rmi.stderr));

    site.edit("services/web/service.yaml", |s| {
        s.replace("homelab-test/busybox:1", "homelab-test/busybox:2")
    });
    site.edit("services/web/healthcheck.sh", |s| {
        s.replace("exit 0", "echo broken on purpose; exit 1")
    });
    let id = site.plan_and_approve();
    let out = site.apply(&id, &["--node", "alpha", "--service", "web"]);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert_ne!(out.code, 0, "{all}");
    let summary = all.lines().find(|l| l.contains("ALPHA")).unwrap_or_default().to_owned();
    assert!(summary.contains("healthcheck failed"), "the first cause stays first:\n{all}");
    assert!(summary.contains("then the rollback to"), "and the rollback's failure follows:\n{all}");
    let journal: serde_json::Value = site.journal("alpha", &id);
    assert_eq!(journal["services"]["web"]["stage"], "rollback-failed", "{journal}");
    let error = journal["services"]["web"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("healthcheck failed") && error.contains("rollback"), "{journal}");
    let events = events_of(&site.root("alpha"), "alpha");
    assert!(
        events
            .lines()
            .any(|l| l.contains("remediation_failed") && l.contains("\"service\":\"web\"")),
        "{events}"
    );
    // Issue 17: a failed rollback is its own outcome, and neither the summary nor its hint
    // offers a resume, which could only start the broken version again.
    assert!(all.contains("rollback failed"), "{all}");
    assert!(!all.contains("--resume"), "no hint to resume:\n{all}");
    let up = |root: &Path| {
        fs::metadata(root.join(format!("logs/web/up-{id}.log"))).and_then(|m| m.modified()).ok()
    };
    let before = up(&site.root("alpha"));
    assert!(before.is_some(), "the deploy's log is where the test looks");
    let out = site.apply(&id, &["--node", "alpha", "--service", "web", "--resume"]);
    let again = format!("{}{}", out.stdout, out.stderr);
    assert_ne!(out.code, 0, "{again}");
    assert!(again.contains("rollback failed"), "{again}");
    assert!(!again.contains("web deploy:"), "nothing deployed again:\n{again}");
    assert_eq!(up(&site.root("alpha")), before, "compose up did not run again");
    let journal: serde_json::Value = site.journal("alpha", &id);
    assert_eq!(journal["services"]["web"]["stage"], "rollback-failed", "{journal}");
}

/// The round trips of a node are a number the program knows, and they are per node, not per
/// service or artifact: a fresh apply costs the lock-and-read, the engine's state, one
/// prepare+validate for all the node's services, a deploy and a verify per level of
/// dependency among them (services in step go together), and the end; a no-op plan none; one
/// changed service on a node holding several, six — whatever else the node holds. These nodes
/// are not bootstrapped: each apply also costs the session that finds no engine there (the
/// engine's own counts are pinned in `engine::round_trips_through_the_engine_are_two`).
#[test]
fn round_trips_per_node_are_pinned_for_fresh_no_op_and_one_change() {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new(Lab::start(&NODES));
    let trips = |id: &str| -> (std::collections::BTreeMap<String, u64>, usize) {
        let out = site.apply(id, &["--format", "json"]);
        assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
        let events: Vec<serde_json::Value> =
            out.stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        let completed = events
            .iter()
            .filter(|e| e["event"] == "step" && e["node"] == "alpha" && e["stage"] == "complete")
            .filter(|e| !e["service"].is_null())
            .count();
        let per_node = events
            .iter()
            .filter(|e| e["event"] == "node-done")
            .map(|e| (e["node"].as_str().unwrap().to_owned(), e["round_trips"].as_u64().unwrap()))
            .collect();
        (per_node, completed)
    };
    // alpha's events on the node, as whole lines.
    let events_of_alpha = || -> (String, Vec<serde_json::Value>) {
        let mut lines = String::new();
        for day in fs::read_dir(site.root("alpha").join("events")).unwrap() {
            lines += &fs::read_to_string(day.unwrap().path().join("alpha/events.jsonl")).unwrap();
        }
        let events = lines.lines().map(|l| serde_json::from_str(l).expect("whole lines")).collect();
        (lines, events)
    };
    // A healthcheck that fails its first try (a container still starting on a loaded machine)
    // is tried again, which is a command of its own: each such try may cost one more round
    // trip (fewer when another service's command travels with it), never more. The node
    // records every failed try as an event of the plan.
    let pinned = |id: &str, trips: u64, base: u64| {
        let retried = events_of_alpha()
            .1
            .iter()
            .filter(|e| e["type"] == "healthcheck_failed" && e["correlation_id"] == id)
            .count() as u64;
        assert!(
            (base..=base + retried).contains(&trips),
            "{trips} round trips: {base}, plus at most {retried} healthcheck tries again"
        );
    };
    let id = site.plan_and_approve();
    let (fresh, services) = trips(&id);
    assert!(services >= 3, "alpha holds several services: {services}");
    // alpha: agent and cache side by side, web after cache: 4 + 2 × 2 levels, not 3 + 3 × 3.
    assert_eq!(services, 3);
    // Plus one: the session that finds the node has no engine (not bootstrapped).
    pinned(&id, fresh["alpha"], 9);
    // The records travelled with the stage commands: every stage of every service has its
    // event on the node, in order, as the guide names them.
    let (lines, events) = events_of_alpha();
    let of = |svc: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["service"] == svc && e["correlation_id"] == id.as_str())
            .filter(|e| e["type"] != "healthcheck_failed")
            .map(|e| match e["data"]["stage"].as_str() {
                Some(stage) => format!("{}:{stage}", e["type"].as_str().unwrap()),
                None => e["type"].as_str().unwrap().to_owned(),
            })
            .collect()
    };
    assert_eq!(
        of("web"),
        [
            "deployment_started",
            "deployment_stage:prepare",
            "deployment_stage:validate",
            "deployment_stage:deploy",
            "deployment_stage:verify",
            "deployment_completed"
        ],
        "{lines}"
    );

    let id = site.plan_and_approve();
    let (none, _) = trips(&id);
    assert!(none.values().all(|n| *n == 0), "a no-op plan costs no round trip: {none:?}");

    site.edit("services/cache/docker-compose.yml", |s| s.replace("\"8081\"]", "\"8082\"]"));
    let id = site.plan_and_approve();
    let (one, _) = trips(&id);
    pinned(&id, one["alpha"], 7);
    assert_eq!(one.get("edge-a").copied().unwrap_or(0), 0, "{one:?}");

    // Housekeeping (policy `keep_releases: 2`): after a third release of cache, its oldest is
    // pruned, never the live one; of the finished journals two are kept; logs are 0600.
    site.edit("inventory/policy.yaml", |s| {
        s.replace("allow_uncommitted: true\n", "allow_uncommitted: true\nkeep_releases: 2\n")
    });
    site.edit("services/cache/docker-compose.yml", |s| s.replace("\"8082\"]", "\"8083\"]"));
    let id = site.plan_and_approve();
    let (last, _) = trips(&id);
    pinned(&id, last["alpha"], 7);
    let alpha = site.root("alpha");
    let releases: Vec<String> = fs::read_dir(alpha.join("state/releases/cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(releases.len(), 2, "{releases:?}");
    assert!(releases.contains(&id), "the live release is kept: {releases:?}");
    assert_eq!(fs::read_dir(alpha.join("state/deploy")).unwrap().count(), 2);
    use std::os::unix::fs::PermissionsExt;
    for log in fs::read_dir(alpha.join("logs/cache")).unwrap() {
        let log = log.unwrap();
        let mode = log.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", log.path().display());
    }
}

/// The dead-man rollback: a deploy whose node can no longer be reached anew (here its SSH port
/// refuses new connections right after `compose up`, as a change that breaks the network
/// would) is rolled back by the node itself once the confirmation deadline passes; the node
/// records its own event, and the apply and its resume say what happened. A normal deploy is
/// confirmed over a fresh connection and stays.
#[test]
fn a_deploy_the_controller_cannot_confirm_is_rolled_back_by_the_node() {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new(Lab::start(&NODES));
    let id = site.plan_and_approve();
    let out = site.apply(&id, &["--confirm-timeout", "3"]);
    assert_eq!(out.code, 0, "confirmed over a fresh connection: {}\n{}", out.stdout, out.stderr);
    let root = site.root("edge-a");
    let decided = root.join(format!("state/deploy/{id}/jobs/broker/deadman/decided"));
    assert!(decided.join("confirmed").exists(), "the deploy was confirmed");

    site.edit("services/broker/docker-compose.yml", |s| {
        s.replace("BROKER_USER: broker\n", "BROKER_USER: cut-off\n")
    });
    let id = site.plan_and_approve();
    let mut child = site.spawn_apply(&id, &["--confirm-timeout", "3", "--node", "edge-a"]);
    let (seen, rest) = wait_for_line(&mut child, "[edge-a] broker deploy:");
    site.lab.refuse_new("edge-a");
    let (code, tail) = finish(child, rest);
    let all = format!("{}{tail}", seen.join(""));
    assert_ne!(code, 0, "{all}");
    assert!(all.contains("no new connection to the node after the deploy"), "{all}");
    // The node decides by itself: wait (bounded) for its decision, made with no controller.
    let decided = root.join(format!("state/deploy/{id}/jobs/broker/deadman/decided"));
    let until = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while !decided.join("rolled-back").exists() && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert!(decided.join("rolled-back").exists(), "the node rolled back by itself");
    let rc = root.join(format!("state/deploy/{id}/jobs/broker/deadman/rollback.rc"));
    while !rc.exists() && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert_eq!(fs::read_to_string(&rc).unwrap().trim(), "0", "its rollback worked");
    let health = root.join(format!("state/deploy/{id}/jobs/broker/deadman/rollback.health"));
    assert_eq!(fs::read_to_string(&health).unwrap().trim(), "ok", "and verified the old version");
    site.lab.accept_new("edge-a");
    assert!(site.env_of("edge-a", "broker").contains(&"BROKER_USER=broker".to_owned()));
    let mut lines = String::new();
    for day in fs::read_dir(root.join("events")).unwrap() {
        lines += &fs::read_to_string(day.unwrap().path().join("edge-a/events.jsonl")).unwrap();
    }
    let own = lines
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("whole lines"))
        .find(|e| e["source"] == "homelab dead-man" && e["correlation_id"] == id.as_str())
        .unwrap_or_else(|| panic!("the node's own event: {lines}"));
    assert_eq!(own["type"], "remediation_completed");
    assert_eq!(own["service"], "broker");

    // The resume finds the node's decision: rolled back, not applied.
    let out = site.apply(&id, &["--resume", "--confirm-timeout", "3"]);
    assert_ne!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("rolled back"), "{}", out.stdout);
    assert!(out.stdout.contains("by itself"), "{}", out.stdout);
    assert!(out.stdout.contains("the previous version is healthy"), "{}", out.stdout);
    assert!(site.env_of("edge-a", "broker").contains(&"BROKER_USER=broker".to_owned()));
}

/// The ssh processes of one controller run, as `pid: command line`: those (`comm` is `ssh`,
/// whatever a daemonised master makes of its command line) whose command line names something
/// under `tmp` (the run's `TMPDIR`, where its control folders are) or has a lab node's address
/// as one of its arguments.
fn ssh_processes(tmp: &Path, addresses: &[String]) -> Vec<String> {
    let tmp = tmp.to_str().unwrap();
    let mut found = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let comm = fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        let Ok(raw) = fs::read(e.path().join("cmdline")) else { continue };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if comm.trim() == "ssh" && args.iter().any(|a| a.contains(tmp) || addresses.contains(a)) {
            found.push(format!("{pid}: {}", args.join(" ")));
        }
    }
    found
}

/// Runs `cmd` until a line of its stderr contains `needle`, lets it go on for `then` and
/// SIGKILLs it (as `support::killed_after_line`); the run's ssh processes just before the kill,
/// which must be some (else the kill proves nothing).
fn killed_with_ssh_up(
    cmd: &mut Command,
    needle: &str,
    then: std::time::Duration,
    tmp: &Path,
    addresses: &[String],
) -> Vec<String> {
    let mut child = cmd.stderr(Stdio::piped()).spawn().unwrap();
    let mut reader = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    while !seen.lines().any(|l| l.contains(needle)) {
        let mut l = String::new();
        assert!(reader.read_line(&mut l).unwrap() > 0, "ended before `{needle}`:\n{seen}");
        seen.push_str(&l);
    }
    std::thread::sleep(then);
    let up = ssh_processes(tmp, addresses);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!up.is_empty(), "no ssh process was up at the kill:\n{seen}");
    eprintln!("killed with {} ssh process(es) up:\n{}", up.len(), up.join("\n"));
    up
}

/// Waits (bounded: a minute, polling, well past the idle limit the tests give a kept
/// connection) until no ssh process of the run is left; the ones left if some are.
fn ssh_left_after_kill(tmp: &Path, addresses: &[String]) -> Vec<String> {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let left = ssh_processes(tmp, addresses);
        if left.is_empty() || std::time::Instant::now() > until {
            return left;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Issue 17 item 8: a SIGKILLed controller left its ssh masters running (daemons with an idle
/// limit that a forwarded Docker socket kept from firing). Killed in the middle of a plan's
/// refresh (masters up, commands and Docker API calls in flight, over slow links) and in the
/// middle of an apply's deploy, it leaves no ssh process past the idle limit of the connections
/// kept between commands (3 s here), and the next plan runs; so does the one after that plan's
/// connections have gone.
#[test]
fn a_sigkilled_plan_or_apply_leaves_no_ssh_process_and_the_next_plan_runs() {
    use std::time::Duration;
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new(Lab::start(&NODES));
    let addresses: Vec<String> = NODES.iter().map(|n| site.lab.node(n).address.clone()).collect();
    let tmp = tempfile::tempdir().unwrap();
    let key = site.key.to_str().unwrap().to_owned();
    let run = |args: &[&str]| {
        let mut c = site.command(args);
        c.env("TMPDIR", tmp.path())
            .env("RUST_LOG", "debug")
            .env("HOMELAB_SSH_IDLE", "3")
            .stdout(Stdio::null());
        c
    };
    assert_eq!(ssh_processes(tmp.path(), &addresses), Vec::<String>::new());

    // A plan killed as it reads the nodes, slowed so that it is still reading them.
    for n in NODES {
        site.lab.slow(n, "delay 100ms");
    }
    let mut plan = run(&["plan", "--key", &key]);
    let up = killed_with_ssh_up(
        &mut plan,
        "ssh command",
        Duration::from_millis(300),
        tmp.path(),
        &addresses,
    );
    for n in NODES {
        site.lab.unslow(n);
    }
    let left = ssh_left_after_kill(tmp.path(), &addresses);
    assert!(left.is_empty(), "a killed plan left:\n{}\nof:\n{}", left.join("\n"), up.join("\n"));

    // An apply killed while EDGE-A deploys (its node engine goes on without it).
    let id = site.plan_and_approve();
    let approved = site.approved(&id);
    let mut apply = run(&["apply", &approved]);
    let up = killed_with_ssh_up(
        &mut apply,
        "[edge-a] broker deploy:",
        Duration::ZERO,
        tmp.path(),
        &addresses,
    );
    let left = ssh_left_after_kill(tmp.path(), &addresses);
    assert!(left.is_empty(), "a killed apply left:\n{}\nof:\n{}", left.join("\n"), up.join("\n"));

    // The next command connects afresh and works; the connections it keeps go after the idle
    // limit, and the command after that connects afresh again.
    for _ in 0..2 {
        let mut next = run(&["plan", "--key", &key]);
        let out = next.stdout(Stdio::piped()).stderr(Stdio::piped()).output().unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{text}");
        let left = ssh_left_after_kill(tmp.path(), &addresses);
        assert!(
            left.is_empty(),
            "a plan's kept connections outlived the limit:\n{}",
            left.join("\n")
        );
    }
}

mod data;
mod engine;

/// An external network (issue 20): `proxy`, a traefik-like service whose compose file takes
/// the network `proxy` as given (`external: true`) and whose contract declares it, and `web`,
/// which joins the network `proxy` declared: the apply creates the network before either
/// comes up (they deploy side by side, each making sure of it), both run on it and reach each
/// other by name. An update, with the network there already, goes through as well.
#[test]
fn an_external_network_a_service_declares_is_created_before_its_services_come_up() {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new(Lab::start(&NODES));
    copy_tree(&site.repo.path().join("services/web"), &site.repo.path().join("services/proxy"));
    site.edit("services/proxy/service.yaml", |s| {
        let s = s
            .replace("name: web", "name: proxy")
            .replace("dependencies:\n  - service: agent\n", "dependencies: []\n");
        format!("{s}networks: [proxy]\n")
    });
    let proxy = |env: &str| {
        format!("services:\n  proxy:\n    image: \"{{{{ vars.image }}}}\"\n    container_name: proxy\n    restart: unless-stopped\n    command: [\"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/etc\"]\n{env}    networks: [proxy]\nnetworks:\n  proxy:\n    external: true\n")
    };
    site.write("services/proxy/docker-compose.yml", &proxy(""));
    site.edit("hosts/alpha/services.yaml", |s| {
        format!("{s}  - name: proxy\n    exposure: tailnet\n")
    });
    site.edit("services/web/docker-compose.yml", |s| {
        let s = s.replace(
            "    command: [\"httpd\", \"-f\", \"-p\", \"8080\"]\n",
            "    command: [\"httpd\", \"-f\", \"-p\", \"8080\"]\n    networks: [default, edge]\n",
        );
        format!("{s}networks:\n  edge:\n    external: true\n    name: proxy\n")
    });
    let absent = site.lab.docker("alpha", &["network", "inspect", "proxy"]);
    assert!(!absent.status.success(), "the lab starts without the network");
    let key = site.key.to_str().unwrap().to_owned();
    let planned = site.homelab(&["plan", "--key", &key]);
    assert_eq!(planned.code, 0, "{}\n{}", planned.stdout, planned.stderr);
    assert!(
        planned.stdout.contains(
            "+ network  proxy  created on the node if missing (`external: true`), before proxy, web come up"
        ),
        "{}",
        planned.stdout
    );
    let id = site.plan_and_approve();
    let out = site.apply(&id, &["--node", "alpha"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(site.running("alpha", "proxy") && site.running("alpha", "web"));
    let inspect = |container: &str| {
        let out = site.lab.docker(
            "alpha",
            &[
                "inspect",
                "-f",
                "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
                container,
            ],
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(inspect("proxy").split_whitespace().any(|n| n == "proxy"), "{}", inspect("proxy"));
    assert!(inspect("web").split_whitespace().any(|n| n == "proxy"), "{}", inspect("web"));
    let reached = site
        .lab
        .docker("alpha", &["exec", "web", "wget", "-q", "-O", "-", "http://proxy/hostname"]);
    assert!(reached.status.success(), "{}", String::from_utf8_lossy(&reached.stderr));

    // An update with the network there already.
    site.write(
        "services/proxy/docker-compose.yml",
        &proxy("    environment:\n      RELEASE: \"2\"\n"),
    );
    let id = site.plan_and_approve();
    let out = site.apply(&id, &["--node", "alpha"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(site.env_of("alpha", "proxy").contains(&"RELEASE=2".to_owned()));
    assert!(inspect("proxy").split_whitespace().any(|n| n == "proxy"), "{}", inspect("proxy"));
}
