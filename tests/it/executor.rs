//! `homelab executor` on a real node of the lab (its own sshd and Docker Engine, Compose v2):
//! a pending plan waits for its approval, then is applied and completed; a plan moved to
//! `approved/` without approvals, or tampered with after approval, fails and is never applied;
//! an executor killed while the node deploys, or after the apply and before its action is
//! moved, is restarted and applies nothing twice.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::lab::Lab;
use crate::support::{copy_tree, fixtures, killed_after_line, Output};

// One lab at a time, whichever test file starts it (they are heavy on 2 cores).
use crate::apply::LAB;

/// The base fixture reduced to ALPHA (agent and web), pointed at a lab node; also the
/// supervisor's lab test's.
pub(crate) struct Site {
    pub(crate) lab: Lab,
    pub(crate) repo: tempfile::TempDir,
    pub(crate) ctl: PathBuf,
    pub(crate) key: PathBuf,
    /// `HOME` for Git.
    home: tempfile::TempDir,
}

impl Site {
    pub(crate) fn new() -> Site {
        let lab = Lab::start(&["alpha"]);
        let repo = tempfile::tempdir().unwrap();
        copy_tree(&fixtures().join("base"), repo.path());
        for gone in ["hosts/edge-a", "hosts/edge-b", "services/broker", "services/app"] {
            fs::remove_dir_all(repo.path().join(gone)).unwrap();
        }
        let n = lab.node("alpha");
        let root = n.root();
        fs::create_dir_all(&root).unwrap();
        let topo = format!(
            "mesh: tailscale\nsites:\n  home:\n    uplink: fiber\n    offline_first: false\nnodes:\n  alpha:\n    display_name: ALPHA\n    roles: [control]\n    site: home\n    ssh:\n      address: {}\n      user: root\n      port: 22\n    runtime_root: \"{}\"\n    docker_socket: \"{}\"\n",
            n.address,
            root.display(),
            n.docker_socket.display()
        );
        let site = Site {
            ctl: repo.path().join(".controller"),
            key: repo.path().join(".operator_key"),
            lab,
            repo,
            home: tempfile::tempdir().unwrap(),
        };
        site.write("inventory/topology.yaml", &topo);
        site.write(
            "inventory/policy.yaml",
            "plan_ttl: 24h\nallow_uncommitted: true\napprovals:\n  default:\n    required: 1\n    approvers: [operator@test]\n",
        );
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
        for svc in ["agent", "web"] {
            site.edit(&format!("services/{svc}/service.yaml"), |s| {
                s.replace("interval: 5s", "interval: 1s").replace("timeout: 2s", "timeout: 1s")
            });
        }
        // Stopping the old web container takes seconds, so a redeploy is surely running
        // when the test kills the executor.
        site.edit("services/web/docker-compose.yml", |s| {
            s.replace(
                "    restart: unless-stopped\n",
                "    restart: unless-stopped\n    stop_signal: SIGTERM\n    stop_grace_period: 5s\n",
            )
        });
        let v = site.homelab(&["validate"]);
        assert_eq!(v.code, 0, "{}", v.stderr);
        site
    }

    pub(crate) fn write(&self, rel: &str, text: &str) {
        let p = self.repo.path().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    pub(crate) fn edit(&self, rel: &str, f: impl FnOnce(String) -> String) {
        let p = self.repo.path().join(rel);
        let s = fs::read_to_string(&p).unwrap();
        fs::write(p, f(s)).unwrap();
    }

    pub(crate) fn command(&self, args: &[&str]) -> Command {
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
        Output::from(out)
    }

    pub(crate) fn plan(&self) -> String {
        let out = self.homelab(&["plan", "--key", self.key.to_str().unwrap()]);
        assert_eq!(out.code, 0, "plan failed:\n{}\n{}", out.stdout, out.stderr);
        out.stdout.lines().next().and_then(|l| l.strip_prefix("plan ")).unwrap().trim().to_owned()
    }

    pub(crate) fn approve(&self, id: &str) {
        let plan = self.repo.path().join(format!("plans/{id}.plan"));
        let key = self.key.to_str().unwrap();
        let a = self.homelab(&["approve", plan.to_str().unwrap(), "--key", key, "--yes"]);
        assert_eq!(a.code, 0, "approve failed: {}", a.stderr);
    }

    pub(crate) fn executor(&self) -> Output {
        self.homelab(&["executor", "--once"])
    }

    /// The ids in `<controller>/actions/<state>/`.
    pub(crate) fn actions(&self, state: &str) -> Vec<String> {
        let mut ids: Vec<String> = fs::read_dir(self.ctl.join("actions").join(state))
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .filter_map(|n| n.strip_suffix(".json").map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    }

    pub(crate) fn record(&self, state: &str, id: &str) -> serde_json::Value {
        let text = fs::read_to_string(self.ctl.join(format!("actions/{state}/{id}.json"))).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// A key for the supervisor, allowed to plan and never to approve; its path.
    pub(crate) fn supervisor_key(&self) -> PathBuf {
        let sup = self.repo.path().join(".supervisor_key");
        let made = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "supervisor@test", "-f"])
            .arg(&sup)
            .output()
            .unwrap();
        assert!(made.status.success());
        let public = fs::read_to_string(sup.with_extension("pub")).unwrap();
        let public: Vec<&str> = public.split_whitespace().take(2).collect();
        let signers =
            fs::read_to_string(self.repo.path().join("inventory/allowed_signers")).unwrap();
        self.write(
            "inventory/allowed_signers",
            &format!("{signers}supervisor@test namespaces=\"homelab-plan\" {}\n", public.join(" ")),
        );
        sup
    }

    pub(crate) fn git(&self, args: &[&str]) {
        let out = Command::new("git")
            .current_dir(self.repo.path())
            .args(args)
            .env("HOME", self.home.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env_remove("GIT_DIR")
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Commits the work tree (a Git repository from the first call on): the supervisor plans
    /// from a commit.
    pub(crate) fn commit(&self, message: &str) {
        if !self.repo.path().join(".git").exists() {
            fs::write(
                self.repo.path().join(".gitignore"),
                ".controller/\n.operator_key*\n.supervisor_key*\n",
            )
            .unwrap();
            self.git(&["init", "-q", "-b", "main"]);
        }
        self.git(&["add", "-A"]);
        self.git(&["-c", "user.name=T", "-c", "user.email=t@lab", "commit", "-q", "-m", message]);
    }

    pub(crate) fn web_command(&self) -> String {
        let out = self.lab.docker("alpha", &["inspect", "-f", "{{json .Config.Cmd}}", "web"]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    pub(crate) fn port(&self, from: u32, to: u32) {
        self.edit("services/web/docker-compose.yml", |s| {
            s.replace(&format!("\"{from}\"]"), &format!("\"{to}\"]"))
        });
    }
}

#[test]
fn the_executor_applies_approved_plans_fails_the_rest_and_survives_a_kill() {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new();
    let root = site.lab.node("alpha").root();

    // Pending without an approval: it waits, and nothing is applied.
    let first = site.plan();
    let out = site.executor();
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains(&format!("{first}: pending: no approval")), "{}", out.stdout);
    assert_eq!(site.actions("pending"), [first.as_str()]);
    assert!(!root.join("state/services/web").exists());

    // Approved: pending → approved → running → completed, applied by apply's own code.
    site.approve(&first);
    let out = site.executor();
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    for step in ["pending → approved", "approved → running", "running → completed: applied"] {
        assert!(out.stdout.contains(&format!("{first}: {step}")), "{step}: {}", out.stdout);
    }
    assert!(out.stdout.contains(&format!("apply of plan {first}:")), "{}", out.stdout);
    assert_eq!(site.actions("completed"), [first.as_str()]);
    assert!(site.actions("pending").is_empty() && site.actions("running").is_empty());
    let done = site.record("completed", &first);
    assert_eq!(done["state"], "completed");
    assert_eq!(done["result"]["nodes"]["alpha"]["outcome"], "applied");
    assert!(site.web_command().contains("8080"), "{}", site.web_command());
    assert!(root.join(format!("state/consumed/{first}.json")).exists());

    // Moved to approved/ by hand, with no approval: refused, failed, never applied.
    site.port(8080, 8081);
    let unapproved = site.plan();
    fs::create_dir_all(site.ctl.join("actions/approved")).unwrap();
    fs::rename(
        site.ctl.join(format!("actions/pending/{unapproved}.json")),
        site.ctl.join(format!("actions/approved/{unapproved}.json")),
    )
    .unwrap();
    let out = site.executor();
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(&format!("{unapproved}: approved → failed: refused: no approval")),
        "{}",
        out.stdout
    );
    let failed = site.record("failed", &unapproved);
    assert!(failed["result"]["reason"].as_str().unwrap().contains("no approval"), "{failed}");

    // Approved, then tampered with: failed, never applied.
    let tampered = site.plan();
    site.approve(&tampered);
    let path = site.repo.path().join(format!("plans/{tampered}.plan"));
    let text = fs::read_to_string(&path).unwrap();
    fs::write(&path, text.replacen("\"8081\"]", "\"6666\"]", 1)).unwrap();
    let out = site.executor();
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(&format!("{tampered}: pending → failed: refused:")),
        "{}",
        out.stdout
    );
    let reason = site.record("failed", &tampered)["result"]["reason"].as_str().unwrap().to_owned();
    assert!(reason.contains("was changed after it was made"), "{reason}");
    assert!(site.web_command().contains("8080"), "nothing applied: {}", site.web_command());
    assert!(!root.join(format!("state/consumed/{unapproved}.json")).exists());
    assert!(!root.join(format!("state/consumed/{tampered}.json")).exists());

    // Killed while the node deploys, then started again: resumed, applied once.
    fs::remove_file(&path).unwrap();
    let killed = site.plan();
    site.approve(&killed);
    let seen = killed_after_line(
        site.command(&["executor", "--once"]).stdout(Stdio::null()),
        "[alpha] web deploy:",
        Duration::from_secs(1),
    );
    assert_eq!(site.actions("running"), [killed.as_str()], "{seen}");
    let out = site.executor();
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(&format!("{killed}: running when the executor stopped: resuming")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(&format!("{killed}: running → completed: applied")),
        "{}",
        out.stdout
    );
    assert!(site.web_command().contains("8081"), "{}", site.web_command());
    let names = site.lab.docker("alpha", &["ps", "-a", "--format", "{{.Names}}"]);
    let names = String::from_utf8_lossy(&names.stdout).into_owned();
    assert_eq!(
        names.lines().filter(|n| n.ends_with("web")).collect::<Vec<_>>(),
        ["web"],
        "one web container, none from a second `compose up`: {names}"
    );
    let job = root.join(format!("state/deploy/{killed}/jobs/web/up"));
    assert_eq!(fs::read_to_string(job.join("rc")).unwrap().trim(), "0", "the killed run's job");
    // A third run finds nothing to do and changes nothing.
    let before = crate::support::Snapshot::of(&site.ctl.join("actions"));
    let out = site.executor();
    assert_eq!((out.code, out.stdout.as_str()), (0, ""), "{}", out.stderr);
    before.assert_same(
        &crate::support::Snapshot::of(&site.ctl.join("actions")),
        "a pass with nothing to do",
    );
    let completed = site.actions("completed");
    assert_eq!(completed.len(), 2);
    assert!(completed.contains(&killed) && completed.contains(&first));

    // Killed once the apply is done, before its action is moved to completed/ (strace, at the
    // mkdir of that folder): started again, it records the apply it finds and applies nothing
    // twice.
    site.port(8081, 8082);
    let late = site.plan();
    site.approve(&late);
    let out = crate::support::killed_at(
        &site.command(&["executor", "--once"]),
        &site.ctl.join("actions/completed"),
        1,
    );
    assert!(out.contains(&format!("{late}: approved → running")), "{out}");
    assert_eq!(site.actions("running"), [late.as_str()], "{out}");
    assert!(site.ctl.join(format!("state/applied/{late}.json")).exists());
    assert!(site.web_command().contains("8082"), "{}", site.web_command());
    let out = site.executor();
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(&format!("{late}: running → completed: applied")),
        "{}",
        out.stdout
    );
    let (events, _) = homelab::events::read_all(&root, Some("alpha")).unwrap();
    let started = events
        .iter()
        .filter(|e| e["type"] == "deployment_started" && e["correlation_id"] == late.as_str())
        .count();
    assert_eq!(started, 1, "deployed once");
    assert_eq!(site.actions("completed").len(), 3);
    assert!(site.actions("running").is_empty());
}

/// Without the lab (nothing applies): a plan nobody approves waits, then fails when it
/// expires; one without changes completes at once.
#[test]
fn an_unapproved_plan_waits_until_it_expires_and_a_no_op_plan_completes() {
    let lab = crate::support::Lab::new();
    let operator = lab.keygen("operator");
    lab.allow(&[("operator@test", "", &operator)]);
    lab.policy("2s", 1, &["operator@test"]);
    let executor = || lab.homelab_local(&["executor", "--once"]);
    let id = lab.plan(&operator);
    let out = executor();
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.starts_with(&format!("{id}: pending: no approval")), "{}", out.stdout);
    assert!(lab.path(&format!("rt/actions/pending/{id}.json")).exists());
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let out = executor();
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(&format!("{id}: pending → failed: refused: plan `{id}` expired at")),
        "{}",
        out.stdout
    );
    assert!(!lab.path(&format!("rt/actions/pending/{id}.json")).exists());
    assert!(!lab.path("rt/alpha/state").exists(), "nothing applied");

    // Everything deployed: `plan` still writes an action, which the executor completes.
    lab.deploy_all();
    let noop = lab.plan(&operator);
    let out = executor();
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        out.stdout,
        format!("{noop}: pending → completed: the plan changes nothing: nothing to apply\n")
    );
    let record: serde_json::Value =
        serde_json::from_str(&lab.read(&format!("rt/actions/completed/{noop}.json"))).unwrap();
    assert_eq!(record["state"], "completed");
}

/// Issue 11, end to end, on a real node: a container stopped by hand → the stability agent's
/// event (Docker's event stream) → the observer's world shows it → the supervisor writes one
/// signed pending plan (and no second one for the same drift) → an operator's approval → the
/// executor applies it → the agent sees it recover and the world shows it healthy.
#[test]
fn a_stopped_container_is_seen_planned_approved_applied_and_healthy_again() {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new();
    let root = site.lab.node("alpha").root();
    // The supervisor's key: may plan, never approve. It plans from a commit.
    let sup = site.supervisor_key();
    site.commit("homelab");

    // Deployed through the executor.
    let first = site.plan();
    site.approve(&first);
    let out = site.executor();
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    site.commit("plan");

    // The agent on the node, against its engine.
    let node = site.lab.node("alpha");
    let log = node.dir.join("agent.log");
    let mut agent = site.lab.node_command("alpha", env!("CARGO_BIN_EXE_homelab"));
    agent
        .arg("agent")
        .arg("--root")
        .arg(&root)
        .args(["--node", "alpha", "--docker-socket"])
        .arg(&node.docker_socket)
        .args(["--interval", "0.5"])
        .env_remove("HOMELAB_ROOT")
        .env_remove("HOMELAB_MQTT")
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap());
    let mut agent = agent.spawn().unwrap();
    let heartbeat = root.join("state/agent/heartbeat.json");
    let wait = |what: &str, f: &dyn Fn() -> bool| {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !f() {
            assert!(
                std::time::Instant::now() < until,
                "waited for {what}; agent log:\n{}",
                fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };
    wait("the agent's heartbeat", &|| heartbeat.exists());
    let events = |kind: &str| -> usize {
        let (all, _) = homelab::events::read_all(&root, Some("alpha")).unwrap_or_default();
        all.iter().filter(|e| e["type"] == kind && e["service"] == "web").count()
    };
    let recovered_before = events("service_recovered");

    // Stopped by hand.
    let stop = site.lab.docker("alpha", &["stop", "web"]);
    assert!(stop.status.success());
    wait("service_unhealthy for web", &|| events("service_unhealthy") > 0);

    // The observer folds it into the world.
    let out = site.homelab(&["observe", "--once"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let world = |file: &str| -> serde_json::Value {
        serde_json::from_str(&fs::read_to_string(site.ctl.join("world").join(file)).unwrap())
            .unwrap()
    };
    let services = world("services.json");
    assert_eq!(services["services"]["web@alpha"]["health"]["state"], "unhealthy", "{services}");

    // The supervisor writes one pending plan for the drift, signed by its key.
    let sup_key = sup.to_str().unwrap();
    let out = site.homelab(&["supervise", "--once", "--key", sup_key]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let pending = site.actions("pending");
    assert_eq!(pending.len(), 1, "{}", out.stdout);
    let id = pending[0].clone();
    let reason = site.record("pending", &id)["reason"].as_str().unwrap_or_default().to_owned();
    assert!(reason.contains("web@alpha"), "{reason}");
    let out = site.homelab(&["supervise", "--once", "--key", sup_key]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(site.actions("pending"), [id.as_str()], "the same drift, no second plan");

    // An operator approves; the executor applies.
    site.approve(&id);
    let out = site.executor();
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains(&format!("{id}: running → completed: applied")), "{}", out.stdout);
    let up = site.lab.docker("alpha", &["inspect", "-f", "{{.State.Running}}", "web"]);
    assert_eq!(String::from_utf8_lossy(&up.stdout).trim(), "true");

    // The agent sees it recover; the world shows it healthy.
    wait("service_recovered for web", &|| events("service_recovered") > recovered_before);
    let out = site.homelab(&["observe", "--once"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let services = world("services.json");
    assert_eq!(services["services"]["web@alpha"]["health"]["state"], "healthy", "{services}");
    let _ = agent.kill();
    let _ = agent.wait();
}
