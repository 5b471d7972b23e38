//! The node's engine (issue 17): nodes bootstrapped with a deploy key restricted to
//! `homelab node serve`, plans applied through it, and the node's own refusals of bad bundles.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use homelab::wire::{self, Bundle, Hello, Reply, Request};

use super::*;

impl Site {
    /// A key pair for the controller, `.deploy_key` in the repository's folder (never
    /// committed: the tests' repositories are not Git trees).
    fn deploy_key(&self) -> PathBuf {
        let key = self.repo.path().join(".deploy_key");
        if !key.exists() {
            keygen(&key, "deploy@test");
        }
        key
    }

    /// `homelab bootstrap NODE --yes --deploy-key`: the binary, the trust roots, the
    /// restricted key.
    fn bootstrap_with_deploy_key(&self, node: &str) -> Output {
        let public = self.deploy_key().with_extension("pub");
        // Each lab node's sshd also reads an authorized_keys file of its own.
        let keys = self.lab.node(node).dir.join("authorized_keys");
        self.homelab(&[
            "bootstrap",
            node,
            "--yes",
            "--deploy-key",
            public.to_str().unwrap(),
            "--authorized-keys",
            keys.to_str().unwrap(),
        ])
    }

    /// `homelab ARGS` logging in with the deploy key only.
    fn as_deployer(&self, args: &[&str]) -> Output {
        let out = self.command(args).env("HOMELAB_SSH_KEY", self.deploy_key()).output().unwrap();
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `ssh` to `node` with the deploy key only.
    fn deployer_ssh(&self, node: &str) -> Command {
        let client = self.lab.client_key().display().to_string();
        let key = self.deploy_key().display().to_string();
        let options: Vec<String> = self
            .lab
            .ssh_options()
            .into_iter()
            .map(|o| if o == client { key.clone() } else { o })
            .collect();
        let mut c = Command::new("ssh");
        c.args(options).arg(format!("root@{}", self.lab.node(node).address));
        c
    }

    /// One session with `node`'s `homelab node serve` over the deploy key: hello, `request`,
    /// and every reply until the node ends the session.
    fn session(&self, node: &str, request: &Request) -> Vec<Reply> {
        converse(self.deployer_ssh(node), request)
    }
}

/// Runs `cmd` (a `homelab node serve`, however reached), says hello and `request`, and reads
/// every reply until the node ends the session.
fn converse(mut cmd: Command, request: &Request) -> Vec<Reply> {
    let mut child =
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    wire::send(&mut input, &Request::Hello(Hello::ours())).unwrap();
    wire::send(&mut input, request).unwrap();
    drop(input);
    let mut output = child.stdout.take().unwrap();
    let mut replies = Vec::new();
    while let Ok(Some(r)) = wire::receive::<Reply>(&mut output) {
        replies.push(r);
    }
    let _ = child.wait();
    replies
}

/// A new ed25519 key pair at `path` (and `path.pub`).
fn keygen(path: &Path, comment: &str) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// Every path under `dir`, for "nothing was written".
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A plan file re-signed after `edit` of its body, with the operator's key (a planner and an
/// approver of allowed_signers), as a hostile controller holding that key's signatures could
/// not do but a test can; returns the new plan's text.
fn resign(site: &Site, plan: &str, edit: impl FnOnce(String) -> String) -> String {
    let cut = plan.find("-----BEGIN SSH SIGNATURE-----").unwrap();
    let body = edit(plan[..cut].to_owned());
    let sig = sign(site, &body, "homelab-plan");
    format!("{body}{sig}")
}

fn sign(site: &Site, text: &str, namespace: &str) -> String {
    let mut child = Command::new("ssh-keygen")
        .args(["-Y", "sign", "-n", namespace, "-f"])
        .arg(&site.key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn bundle_for(node: &str, plan: String, approved: String) -> Bundle {
    Bundle {
        node: node.to_owned(),
        plan: plan.into(),
        approved,
        services: None,
        resume: false,
        lock_wait_secs: 0,
        confirm_timeout_secs: Some(30),
        holder: "test".to_owned(),
        in_run: Vec::new(),
        finished_nodes: Vec::new(),
        stage: None,
    }
}

fn refused(replies: &[Reply]) -> String {
    match replies {
        [Reply::Hello(_), Reply::Refused { reason }] => reason.clone(),
        other => panic!("expected hello and a refusal, got {other:?}"),
    }
}

#[test]
fn a_restricted_deploy_key_applies_approved_plans_through_the_engine_and_nothing_else() {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new(Lab::start(&NODES));
    for node in NODES {
        let out = site.bootstrap_with_deploy_key(node);
        assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
        assert!(out.stdout.contains("+ pin the trust roots"), "{}", out.stdout);
        assert!(out.stdout.contains("for `homelab node serve` only"), "{}", out.stdout);
    }
    // A second bootstrap finds nothing to do.
    let again = site.bootstrap_with_deploy_key("alpha");
    assert_eq!(again.code, 0, "{}\n{}", again.stdout, again.stderr);
    assert!(again.stdout.contains("already bootstrapped"), "{}", again.stdout);

    // The deploy key runs no command of its choosing.
    let mut id = site.deployer_ssh("alpha");
    let id = id
        .arg("--")
        .arg("id; touch /tmp/owned-by-deploy-key")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&id.stdout).contains("uid="), "{id:?}");
    assert!(!Path::new("/tmp/owned-by-deploy-key").exists());

    // Plan and apply with the deploy key only: every node through its engine, one session
    // for the run and one fresh one for the confirmation.
    let key = site.key.to_str().unwrap();
    let plan = site.as_deployer(&["plan", "--key", key]);
    assert_eq!(plan.code, 0, "{}\n{}", plan.stdout, plan.stderr);
    let plan_id =
        plan.stdout.lines().next().unwrap().strip_prefix("plan ").unwrap().trim().to_owned();
    let a = site.homelab(&[
        "approve",
        site.plan_path(&plan_id).to_str().unwrap(),
        "--key",
        key,
        "--yes",
    ]);
    assert_eq!(a.code, 0, "{}", a.stderr);
    let approved = site.approved(&plan_id);
    let out = site.as_deployer(&["apply", &approved]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("[alpha] connect: the node's engine answered"), "{}", out.stderr);
    assert!(out.stderr.contains("confirm: confirmed over a fresh connection"), "{}", out.stderr);
    for (node, c) in [("alpha", "web"), ("edge-a", "broker"), ("edge-b", "app")] {
        assert!(site.running(node, c), "{c} on {node} is not running");
    }
    // The cross-node dependency, relayed to edge-b's engine: broker completed first.
    let broker_done = out.stderr.find("[edge-a] broker complete").expect("broker completed");
    let app_deploy = out.stderr.find("[edge-b] app deploy").expect("app deployed");
    assert!(broker_done < app_deploy, "{}", out.stderr);
    let journal = site.journal("alpha", &plan_id);
    assert!(
        journal["holder"].as_str().unwrap_or("").contains("the node's engine")
            || journal.to_string().contains("completed"),
        "{journal}"
    );
    assert_eq!(site.detailed(), 0, "the nodes are at the plan's state");
    // The observer's pulls go through `node serve` too.
    let observed = site.as_deployer(&["observe", "--once"]);
    assert_eq!(observed.code, 0, "{}\n{}", observed.stdout, observed.stderr);
    let deployments = fs::read_to_string(site.ctl.join("world/deployments.json")).unwrap();
    assert!(deployments.contains(&plan_id), "{deployments}");

    // `unlock` goes through `node serve` too: a lock whose holder is gone is removed, naming
    // it; while an engine of the node runs, the node refuses and names the plan to resume.
    let root = site.root("alpha");
    let lock = root.join("state/lock");
    fs::create_dir_all(&lock).unwrap();
    fs::write(lock.join("holder.json"), "{\"holder\": \"gone@elsewhere\"}\n").unwrap();
    let mut engine = Command::new("sleep").arg("60").spawn().unwrap();
    let pid = root.join(format!("state/deploy/{plan_id}/engine/pid"));
    let was = fs::read_to_string(&pid).ok();
    fs::write(&pid, format!("{}\n", engine.id())).unwrap();
    let out = site.as_deployer(&["unlock", "--node", "alpha"]);
    assert_ne!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains(&format!("the node's engine runs plan `{plan_id}`")),
        "{}",
        out.stderr
    );
    assert!(lock.join("holder.json").exists(), "kept while the engine runs");
    engine.kill().unwrap();
    engine.wait().unwrap();
    match was {
        Some(p) => fs::write(&pid, p).unwrap(),
        None => fs::remove_file(&pid).unwrap(),
    }
    let out = site.as_deployer(&["unlock", "--node", "alpha"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("removed the lock held by") && out.stdout.contains("gone@elsewhere"),
        "{}",
        out.stdout
    );
    assert!(!lock.exists());
    let out = site.as_deployer(&["unlock", "--node", "alpha"]);
    assert!(out.stdout.contains("not locked"), "{}", out.stdout);
    // So does `--stage diagnose`: the status, the logs kept on the node.
    let out = site.as_deployer(&["apply", "--stage", "diagnose", "--node", "alpha", &approved]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("[alpha] web diagnose: web running"), "{}", out.stderr);
    let log = root.join(format!("logs/web/diagnose-{plan_id}.log"));
    assert!(fs::read_to_string(log).unwrap().contains("docker compose ps"));
    // And every other `--stage`: the node's engine runs just that stage; `--resume` the rest.
    site.web_version("v2", 1);
    let staged = site.plan_and_approve();
    let approved_staged = site.approved(&staged);
    let out =
        site.as_deployer(&["apply", "--stage", "prepare", "--node", "alpha", &approved_staged]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("[alpha] connect: the node's engine answered"), "{}", out.stderr);
    assert!(out.stderr.contains("[alpha] web prepare"), "{}", out.stderr);
    assert!(!out.stderr.contains("[alpha] web deploy"), "{}", out.stderr);
    assert_eq!(site.journal("alpha", &staged)["services"]["web"]["stage"], "prepared");
    let stage_validate = ["apply", "--stage", "validate", "--resume", "--node", "alpha"];
    let out = site.as_deployer(&[&stage_validate[..], &[approved_staged.as_str()]].concat());
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(site.journal("alpha", &staged)["services"]["web"]["stage"], "validated");
    assert!(!site.env_of("alpha", "web").iter().any(|e| e == "WEB_VERSION=v2"));
    let out = site.as_deployer(&["apply", "--resume", "--node", "alpha", &approved_staged]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(site.env_of("alpha", "web").iter().any(|e| e == "WEB_VERSION=v2"));

    // Bad bundles, sent over the restricted key as a hostile controller would: each refused by
    // the node before anything is written there.
    let plan_text = fs::read_to_string(site.plan_path(&plan_id)).unwrap();
    let approved_text = fs::read_to_string(&approved).unwrap();
    let root = site.root("alpha");
    let before = tree(&root);
    let cases: Vec<(&str, Bundle, &str)> = vec![
        (
            "unapproved",
            bundle_for("alpha", plan_text.clone(), String::new()),
            "no `-----begin ssh signature-----` block",
        ),
        (
            "tampered",
            bundle_for(
                "alpha",
                plan_text.replacen("|services:", "|servicez:", 1),
                approved_text.clone(),
            ),
            "the plan was edited",
        ),
        (
            "tampered outside the artifacts",
            bundle_for(
                "alpha",
                plan_text.replacen("\nreason ", "\nreason tampered ", 1),
                approved_text.clone(),
            ),
            "signature is not valid",
        ),
        (
            "for another node",
            bundle_for("edge-a", plan_text.clone(), approved_text.clone()),
            "this node is `alpha`",
        ),
        (
            "expired, re-signed by the planner",
            {
                let p = resign(&site, &plan_text, |b| {
                    let at = b.find("expires ").unwrap();
                    let end = at + b[at..].find('\n').unwrap();
                    format!("{}expires 2020-01-01T00:00:00Z{}", &b[..at], &b[end..])
                });
                let body = &p[..p.find("-----BEGIN SSH SIGNATURE-----").unwrap()];
                let approval = sign(&site, body, "homelab-approve");
                bundle_for("alpha", p.clone(), approval)
            },
            "expired",
        ),
    ];
    for (what, bundle, says) in cases {
        let replies = site.session("alpha", &Request::Apply(bundle));
        let reason = refused(&replies);
        eprintln!("{what}: {reason}");
        assert!(reason.to_lowercase().contains(says), "{what}: {reason}");
        assert_eq!(tree(&root), before, "{what}: the node wrote something");
    }
    // The same plan again (a replay): the engine finds the node at the plan's state and does
    // nothing.
    let replay = site.as_deployer(&["apply", &approved]);
    assert!(replay.code == 0 || replay.code == 3, "{}\n{}", replay.stdout, replay.stderr);
    assert!(site.running("alpha", "web"));
    assert_eq!(site.detailed(), 0);
}

impl Site {
    /// Every node given what bootstrap leaves for the engine — this binary at
    /// `<root>/bin/homelab` and the trust roots (`homelab node pin`) — without the agents'
    /// image it also builds (the restricted-key test runs the whole bootstrap): applies go
    /// through the nodes' engines.
    pub(super) fn with_engines(self) -> Site {
        for node in NODES {
            let bin = self.root(node).join("bin");
            fs::create_dir_all(&bin).unwrap();
            std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_homelab"), bin.join("homelab")).unwrap();
            let root = self.root(node);
            let out = self.homelab(&["node", "pin", node, "--into", root.to_str().unwrap()]);
            assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
        }
        self
    }

    fn engine_dir(&self, node: &str, id: &str) -> PathBuf {
        self.root(node).join(format!("state/deploy/{id}/engine"))
    }

    /// The runs an engine made for plan `id` on `node`.
    fn engine_runs(&self, node: &str, id: &str) -> Vec<String> {
        let mut runs: Vec<String> = fs::read_dir(self.engine_dir(node, id))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("run-"))
                    .collect()
            })
            .unwrap_or_default();
        runs.sort();
        runs
    }

    /// Kills the engine running plan `id` on `node` (SIGKILL), as a crash or a reboot would.
    fn kill_engine(&self, node: &str, id: &str) {
        let pid = fs::read_to_string(self.engine_dir(node, id).join("pid")).unwrap();
        let out = Command::new("kill").args(["-9", pid.trim()]).output().unwrap();
        assert!(out.status.success(), "{out:?}");
    }

    /// A web version whose verify lasts `secs` seconds (its stability window).
    fn web_version(&self, greeting: &str, secs: u32) {
        self.edit("services/web/service.yaml", |s| {
            let at = s.find("stable_for:").unwrap();
            let end = at + s[at..].find('\n').unwrap();
            format!("{}stable_for: {secs}s{}", &s[..at], &s[end..])
        });
        self.edit("services/web/docker-compose.yml", |s| {
            let marker = "      WEB_VERSION: ";
            match s.find(marker) {
                Some(at) => {
                    let end = at + s[at..].find('\n').unwrap();
                    format!("{}{marker}\"{greeting}\"{}", &s[..at], &s[end..])
                }
                None => s.replacen(
                    "    container_name: web\n",
                    &format!("    container_name: web\n    environment:\n{marker}\"{greeting}\"\n"),
                    1,
                ),
            }
        });
    }
}

/// A second controller (its own records) applying a plan that a first one is applying
/// attaches to the nodes' engines: it shows the run from its first line and its end, and no
/// node runs the plan twice. A controller killed mid-apply leaves the engines finishing;
/// `--resume` follows them to their end.
#[test]
fn a_second_controller_attaches_and_a_killed_controller_is_resumed_by_following_the_engine() {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new(Lab::start(&NODES)).with_engines();
    let id = site.plan_and_approve();
    assert_eq!(site.apply(&id, &[]).code, 0);

    // v2 of web, whose verify takes 8 s: time for a second controller to come.
    site.web_version("v2", 8);
    let id = site.plan_and_approve();
    let mut first = site.spawn_apply(&id, &[]);
    let (_, rest) = wait_for_line(&mut first, "[alpha] web verify");
    let second = site.apply_from(".second", &id, &[]);
    assert_eq!(second.code, 0, "{}\n{}", second.stdout, second.stderr);
    assert!(
        second.stderr.contains("[alpha] web deploy"),
        "attached from the first line: {}",
        second.stderr
    );
    assert!(second.stderr.contains("[alpha] applied"), "{}", second.stderr);
    let (code, tail) = finish(first, rest);
    assert_eq!(code, 0, "{tail}");
    assert_eq!(site.engine_runs("alpha", &id), ["run-1.jsonl"], "alpha ran the plan once");
    assert!(site.env_of("alpha", "web").iter().any(|e| e == "WEB_VERSION=v2"));

    // v3: the controller is SIGKILLed during web's verify; the engine finishes by itself and
    // `--resume` follows it to its end.
    site.web_version("v3", 6);
    let id = site.plan_and_approve();
    let mut first = site.spawn_apply(&id, &[]);
    let (_, _rest) = wait_for_line(&mut first, "[alpha] web verify");
    first.kill().unwrap();
    first.wait().unwrap();
    let resumed = site.apply(&id, &["--resume"]);
    assert_eq!(resumed.code, 0, "{}\n{}", resumed.stdout, resumed.stderr);
    assert!(
        resumed.stderr.contains("[alpha] applied")
            || resumed.stderr.contains("[alpha] already applied"),
        "{}",
        resumed.stderr
    );
    assert!(site.env_of("alpha", "web").iter().any(|e| e == "WEB_VERSION=v3"));
    assert_eq!(
        site.engine_runs("alpha", &id).len(),
        1,
        "followed, not run again: {:?}",
        site.engine_runs("alpha", &id)
    );
    assert_eq!(site.detailed(), 0);
}

/// The engine SIGKILLed at each step boundary of a deploy (after prepare, during deploy's
/// verify, while waiting for the confirmation), then `apply --resume`: every time the node
/// converges, web at its new version and nothing else touched, and the next plan runs.
#[test]
fn an_engine_killed_at_each_step_boundary_converges_on_resume() {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new(Lab::start(&NODES)).with_engines();
    let id = site.plan_and_approve();
    assert_eq!(site.apply(&id, &[]).code, 0);
    for (i, boundary) in ["web prepare", "web verify", "confirm"].iter().enumerate() {
        let version = format!("v{}", i + 2);
        site.web_version(&version, 4);
        let id = site.plan_and_approve();
        let mut apply = site.spawn_apply(&id, &[]);
        let (_, rest) = wait_for_line(&mut apply, &format!("[alpha] {boundary}"));
        site.kill_engine("alpha", &id);
        let (code, tail) = finish(apply, rest);
        assert_ne!(code, 0, "{boundary}: the cut run does not say applied: {tail}");
        assert!(tail.contains("--resume"), "{boundary}: {tail}");
        let resumed = site.apply(&id, &["--resume"]);
        assert_eq!(resumed.code, 0, "{boundary}: {}\n{}", resumed.stdout, resumed.stderr);
        assert!(site.running("alpha", "web"), "{boundary}");
        assert!(
            site.env_of("alpha", "web").iter().any(|e| *e == format!("WEB_VERSION={version}")),
            "{boundary}: {:?}",
            site.env_of("alpha", "web")
        );
        assert_eq!(site.detailed(), 0, "{boundary}: the node is at the plan's state");
    }
}

/// A first apply, then an apply of broker on edge-a with `BROKER_USER: <user>` and
/// `--confirm-timeout <secs>`, started, and new connections to edge-a refused from its deploy
/// on: the plan, the running apply, the lines it said so far and the rest of its stderr.
fn deploying_broker_cut_off(
    site: &Site,
    user: &str,
    secs: &str,
) -> (String, Child, Vec<String>, BufReader<std::process::ChildStderr>) {
    let id = site.plan_and_approve();
    assert_eq!(site.apply(&id, &["--confirm-timeout", secs]).code, 0);
    site.edit("services/broker/docker-compose.yml", |s| {
        s.replace("BROKER_USER: broker\n", &format!("BROKER_USER: {user}\n"))
    });
    let id = site.plan_and_approve();
    let mut child = site.spawn_apply(&id, &["--confirm-timeout", secs, "--node", "edge-a"]);
    let (seen, rest) = wait_for_line(&mut child, "[edge-a] broker deploy:");
    site.lab.refuse_new("edge-a");
    (id, child, seen, rest)
}

/// Through the engine (its removal job, `homelab node job down-and-unlink`): a service whose
/// first deploy fails its healthcheck is taken down again by the rollback, no container and
/// no live link left, the others untouched; once it works it is created; and a service the
/// repository no longer places on the node is taken down there, its data and config kept in
/// the plan's snapshot. Real Docker and Compose.
#[test]
fn an_engine_takes_down_a_created_service_that_fails_and_a_removed_one() {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new(Lab::start(&NODES)).with_engines();
    let good =
        fs::read_to_string(site.repo.path().join("services/cache/docker-compose.yml")).unwrap();
    site.edit("services/cache/docker-compose.yml", |s| {
        s.replace(r#"command: ["httpd", "-f", "-p", "8081"]"#, r#"command: ["sh", "-c", "exit 3"]"#)
    });
    let id = site.plan_and_approve();
    let out = site.apply(&id, &["--node", "alpha"]);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert_ne!(out.code, 0, "{all}");
    assert!(all.contains("first deploy: taking it down"), "{all}");
    let root = site.root("alpha");
    assert_eq!(site.live(&root, "cache"), None, "no live link left");
    let gone = site.lab.docker("alpha", &["inspect", "cache"]);
    assert!(!gone.status.success(), "no container left: {:?}", gone.status);
    assert!(site.running("alpha", "web"), "the other services are up");

    fs::write(site.repo.path().join("services/cache/docker-compose.yml"), good).unwrap();
    let id = site.plan_and_approve();
    let out = site.apply(&id, &[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(site.running("alpha", "cache"));
    fs::create_dir_all(root.join("data/cache")).unwrap();
    fs::write(root.join("data/cache/kept.txt"), "the cache's data\n").unwrap();

    site.edit("hosts/alpha/services.yaml", |s| {
        s.replace("  - name: cache\n    exposure: tailnet\n", "")
    });
    fs::remove_dir_all(site.repo.path().join("services/cache")).unwrap();
    let id = site.plan_and_approve();
    let out = site.apply(&id, &[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains("cache complete: removed; its data is kept in snapshot"), "{all}");
    assert_eq!(site.live(&root, "cache"), None);
    assert!(!site.lab.docker("alpha", &["inspect", "cache"]).status.success());
    let snap = root.join(format!("state/snapshots/cache/{id}"));
    assert!(snap.join("complete").is_file(), "{}", snap.display());
    let manifest = fs::read_to_string(snap.join("manifest")).unwrap();
    assert!(manifest.contains("/data/cache"), "{manifest}");
    assert!(site.running("alpha", "web"));
    assert_eq!(site.detailed(), 0, "the node is at the plan's state");
}

/// Through the engine, a service's first deploy that cannot be confirmed (new connections to
/// its node refused from the deploy on): the node's watchdog takes it down by itself (the
/// removal's step, done in the watchdog's process), no container and no live link left, and
/// the engine reports the node's own rollback; the services already there stay up.
#[test]
fn an_engine_whose_first_deploy_cannot_be_confirmed_is_taken_down_by_the_node() {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new(Lab::start(&NODES)).with_engines();
    let cache = site.repo.path().join("services/cache");
    let aside = site.ctl.join("cache-aside");
    copy_tree(&cache, &aside);
    fs::remove_dir_all(&cache).unwrap();
    let entry = "  - name: cache\n    exposure: tailnet\n";
    site.edit("hosts/alpha/services.yaml", |s| s.replace(entry, ""));
    let id = site.plan_and_approve();
    assert_eq!(site.apply(&id, &["--confirm-timeout", "3"]).code, 0);

    copy_tree(&aside, &cache);
    site.edit("hosts/alpha/services.yaml", |s| format!("{s}{entry}"));
    let id = site.plan_and_approve();
    let mut child = site.spawn_apply(&id, &["--confirm-timeout", "3", "--node", "alpha"]);
    let (seen, rest) = wait_for_line(&mut child, "[alpha] cache deploy:");
    site.lab.refuse_new("alpha");
    let (code, tail) = finish(child, rest);
    site.lab.accept_new("alpha");
    let all = format!("{}{tail}", seen.join(""));
    assert_ne!(code, 0, "{all}");
    assert!(all.contains("by itself"), "{all}");
    let root = site.root("alpha");
    let dm = root.join(format!("state/deploy/{id}/jobs/cache/deadman"));
    assert!(dm.join("decided/rolled-back").exists(), "the node's one decision");
    let rc = fs::read_to_string(dm.join("rollback.rc")).unwrap();
    assert_eq!(rc.trim(), "0", "{}", fs::read_to_string(dm.join("rollback.log")).unwrap());
    assert_eq!(site.live(&root, "cache"), None, "no live link left");
    let gone = site.lab.docker("alpha", &["inspect", "cache"]);
    assert!(!gone.status.success(), "no container left");
    assert!(site.running("alpha", "web"));
}

/// Through the engine, a deploy that cuts the node off from new connections: the run's session
/// stays, the fresh one for the confirmation is refused, the node's watchdog rolls back by
/// itself and verifies the old version, and the engine, which owns that decision, reports it
/// in the same run. A resume says the same and changes nothing.
#[test]
fn an_engine_whose_deploy_cannot_be_confirmed_reports_the_nodes_own_rollback() {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new(Lab::start(&NODES)).with_engines();
    let (id, child, seen, rest) = deploying_broker_cut_off(&site, "cut-off", "3");
    let (code, tail) = finish(child, rest);
    site.lab.accept_new("edge-a");
    let all = format!("{}{tail}", seen.join(""));
    assert_ne!(code, 0, "{all}");
    assert!(all.contains("no fresh connection to confirm the deploy"), "{all}");
    assert!(all.contains("rolled back"), "{all}");
    assert!(all.contains("by itself"), "{all}");
    assert!(all.contains("the previous version is healthy"), "{all}");
    let dm = site.root("edge-a").join(format!("state/deploy/{id}/jobs/broker/deadman"));
    assert!(dm.join("decided/rolled-back").exists(), "the node's one decision");
    assert!(site.env_of("edge-a", "broker").contains(&"BROKER_USER=broker".to_owned()));
    let journal = site.journal("edge-a", &id);
    assert_eq!(journal["services"]["broker"]["stage"], "rolled-back", "{journal}");

    let out = site.apply(&id, &["--resume", "--confirm-timeout", "3"]);
    assert_ne!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("rolled back"), "{}", out.stdout);
    assert!(site.env_of("edge-a", "broker").contains(&"BROKER_USER=broker".to_owned()));
}

/// Through the engine, a deploy is checked while its confirmation is on the way: new
/// connections to the node are refused from the deploy on, so the controller's fresh one
/// cannot come; the healthcheck runs all the same (its log appears while they are refused).
/// Once they are taken again the confirmation comes, the deploy is confirmed only then, and
/// the apply succeeds.
#[test]
fn an_engine_checks_a_deploy_while_its_confirmation_is_on_the_way() {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new(Lab::start(&NODES)).with_engines();
    let (id, child, seen, rest) = deploying_broker_cut_off(&site, "late", "120");
    let health = site.root("edge-a").join(format!("logs/broker/healthcheck-{id}.log"));
    let dm = site.root("edge-a").join(format!("state/deploy/{id}/jobs/broker/deadman"));
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !health.exists() && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let checked_unconfirmed = health.exists() && !dm.join("decided").exists();
    // The watchdog waiting for this confirmation is the deploy's job itself, forked once its
    // `compose up` ended (no second start of the program): its process carries the job's
    // command line.
    let pid = fs::read_to_string(dm.join("pid")).expect("the watchdog's pid");
    let cmdline = fs::read(format!("/proc/{}/cmdline", pid.trim())).expect("the watchdog runs");
    let watchdog: Vec<String> =
        cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    // And the engine is the session's `serve` forked once it checked the bundle (no second
    // start of the program, no second check).
    let pid = site.root("edge-a").join(format!("state/deploy/{id}/engine/pid"));
    let pid = fs::read_to_string(pid).expect("the engine's pid");
    let cmdline = fs::read(format!("/proc/{}/cmdline", pid.trim())).expect("the engine runs");
    let engine: Vec<String> =
        cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    site.lab.accept_new("edge-a");
    let (code, tail) = finish(child, rest);
    let all = format!("{}{tail}", seen.join(""));
    assert!(checked_unconfirmed, "the healthcheck waited for the confirmation:\n{all}");
    let job = ["node", "job", "--dir"].map(str::to_owned);
    assert_eq!(watchdog.get(1..4), Some(&job[..]), "{watchdog:?}");
    assert!(watchdog.iter().any(|a| a.ends_with(&format!("{id}/jobs/broker/up"))), "{watchdog:?}");
    assert_eq!(engine.get(1..3), Some(&["node", "serve"].map(str::to_owned)[..]), "{engine:?}");
    assert_eq!(code, 0, "{all}");
    assert!(all.contains("confirmed over a fresh connection"), "{all}");
    assert!(dm.join("decided/confirmed").exists(), "confirmed once the confirmation came");
    assert!(site.env_of("edge-a", "broker").contains(&"BROKER_USER=late".to_owned()));
}

/// New trust roots reach a node only inside a plan approved under the roots it holds: a plan
/// approved by a key the node does not know yet is refused there with nothing written (the
/// controller, reading the repository's new roots, let it through); approved by a key the node
/// knows, it applies and the node takes the plan's roots; from then on the new key's approval
/// is enough.
#[test]
fn a_trust_root_rotation_reaches_a_node_only_in_a_plan_approved_under_its_old_roots() {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new(Lab::start(&NODES)).with_engines();
    let id = site.plan_and_approve();
    assert_eq!(site.apply(&id, &[]).code, 0);
    let pinned = site.root("alpha").join("trust/allowed_signers");
    let old_roots = fs::read_to_string(&pinned).unwrap();

    // A second approver, added to the repository's roots, with a change on alpha.
    let second = site.repo.path().join(".second_key");
    keygen(&second, "second@test");
    let public = fs::read_to_string(second.with_extension("pub")).unwrap();
    let public: Vec<&str> = public.split_whitespace().take(2).collect();
    site.edit("inventory/allowed_signers", |s| {
        format!("{s}second@test namespaces=\"homelab-approve\" {}\n", public.join(" "))
    });
    site.edit("inventory/policy.yaml", |s| {
        s.replace("[operator@test]", "[operator@test, second@test]")
    });
    site.web_version("v2", 1);
    let key = site.key.to_str().unwrap();
    let plan = site.homelab(&["plan", "--key", key]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    // The plan says on which nodes the pinned roots differ from the commit's: all of them.
    const DIFFER: &str = "trust roots: the node's pinned roots differ from this commit's";
    let pinned_differ = |text: &str| text.matches(DIFFER).count();
    assert_eq!(pinned_differ(&plan.stdout), NODES.len(), "{}", plan.stdout);
    let id = plan.stdout.lines().next().unwrap().strip_prefix("plan ").unwrap().trim().to_owned();
    let plan_path = site.plan_path(&id);
    let shown = site.homelab(&["show", plan_path.to_str().unwrap()]);
    assert!(shown.stdout.contains("trust    allowed_signers sha256:"), "{}", shown.stdout);

    // Approved by the new key only: the controller accepts it, the node does not know the key.
    let a = site.homelab(&[
        "approve",
        plan_path.to_str().unwrap(),
        "--key",
        second.to_str().unwrap(),
        "--yes",
    ]);
    assert_eq!(a.code, 0, "{}", a.stderr);
    let before = tree(&site.root("alpha"));
    let out = site.apply(&id, &[]);
    assert_ne!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("[alpha]") || out.stderr.contains("[alpha]"),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(
        all.contains("allowed_signers") || all.contains("not allowed") || all.contains("no key"),
        "{all}"
    );
    assert_eq!(fs::read_to_string(&pinned).unwrap(), old_roots, "the node kept its roots");
    assert!(!site.env_of("alpha", "web").iter().any(|e| e == "WEB_VERSION=v2"));
    let after: Vec<String> =
        tree(&site.root("alpha")).into_iter().filter(|p| !p.starts_with("events")).collect();
    let before: Vec<String> = before.into_iter().filter(|p| !p.starts_with("events")).collect();
    assert_eq!(after, before, "nothing written on alpha");

    // Approved by the key the node knows: applied, and the node takes the plan's roots.
    fs::remove_file(site.approved(&id)).unwrap();
    fs::remove_dir_all(site.ctl.join("state/applied")).ok();
    let a = site.homelab(&["approve", plan_path.to_str().unwrap(), "--key", key, "--yes"]);
    assert_eq!(a.code, 0, "{}", a.stderr);
    let out = site.apply(&id, &[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("[alpha] trust: the node's trust roots replaced"),
        "{}",
        out.stderr
    );
    assert!(fs::read_to_string(&pinned).unwrap().contains("second@test"));
    assert!(site.env_of("alpha", "web").iter().any(|e| e == "WEB_VERSION=v2"));
    // The nodes with no service to change took the roots too: the plan went to each.
    for node in ["edge-a", "edge-b"] {
        let said = format!("[{node}] trust: the node's trust roots replaced");
        assert!(out.stderr.contains(&said), "{}", out.stderr);
        let theirs = fs::read_to_string(site.root(node).join("trust/allowed_signers")).unwrap();
        assert!(theirs.contains("second@test"), "{node}");
    }

    // From now on the new key's approval counts on every node, and no node differs.
    site.web_version("v3", 1);
    let plan = site.homelab(&["plan", "--key", key]);
    assert_eq!(pinned_differ(&plan.stdout), 0, "{}", plan.stdout);
    let id = plan.stdout.lines().next().unwrap().strip_prefix("plan ").unwrap().trim().to_owned();
    let a = site.homelab(&[
        "approve",
        site.plan_path(&id).to_str().unwrap(),
        "--key",
        second.to_str().unwrap(),
        "--yes",
    ]);
    assert_eq!(a.code, 0, "{}", a.stderr);
    let out = site.apply(&id, &[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(site.env_of("alpha", "web").iter().any(|e| e == "WEB_VERSION=v3"));
}

/// Through the engine a node costs the session and one fresh session per level of dependency
/// deployed (the dead-man's confirmation): one changed service 2, a no-op plan none.
#[test]
fn round_trips_through_the_engine_are_two_for_a_change() {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new(Lab::start(&NODES)).with_engines();
    let trips = |id: &str| -> std::collections::BTreeMap<String, u64> {
        let out = site.apply(id, &["--format", "json"]);
        assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
        out.stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["event"] == "node-done")
            .map(|e| (e["node"].as_str().unwrap().to_owned(), e["round_trips"].as_u64().unwrap()))
            .collect()
    };
    let id = site.plan_and_approve();
    let fresh = trips(&id);
    // alpha: agent and cache side by side, web after cache: two levels, two confirmations.
    assert_eq!(fresh["alpha"], 3, "fresh: {fresh:?}");
    // edge-a: agent and broker side by side, one level: one confirmation, 2 round trips.
    assert_eq!(fresh["edge-a"], 2, "fresh: {fresh:?}");
    let id = site.plan_and_approve();
    let none = trips(&id);
    assert!(none.values().all(|n| *n == 0), "a no-op plan costs no round trip: {none:?}");
    site.edit("services/cache/docker-compose.yml", |s| s.replace("\"8081\"]", "\"8082\"]"));
    let id = site.plan_and_approve();
    let one = trips(&id);
    assert_eq!(one["alpha"], 2, "one change: {one:?}");
    assert_eq!(one.get("edge-a").copied().unwrap_or(0), 0, "{one:?}");
}

/// How many logins each of the lab's nodes has accepted so far (its sshd's log, `LogLevel
/// VERBOSE`), by name.
fn logins(site: &Site) -> BTreeMap<String, u64> {
    NODES
        .iter()
        .map(|n| {
            let log = fs::read_to_string(site.lab.node(n).dir.join("sshd.log")).unwrap_or_default();
            (n.to_string(), log.matches("Accepted publickey").count() as u64)
        })
        .collect()
}

/// Per node, how many more of `after` than of `before`.
fn more(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after.iter().map(|(n, a)| (n.clone(), a - before.get(n).copied().unwrap_or(0))).collect()
}

/// Issue 17 item 8: a plan and its apply made in a row ride one connection per node, the
/// plan's, kept for the idle limit (`--ssh-idle`), and so does the next plan: the apply's only
/// logins are the dead-man's confirmations, each over a connection of its own (a kept one
/// would prove nothing about the node taking new ones). With `--ssh-idle 0` every session
/// logs in: an apply's logins are its round trips.
#[test]
fn a_plan_and_its_apply_share_one_kept_connection_per_node_and_confirm_over_new_ones() {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new(Lab::start(&NODES)).with_engines();
    let tmp = tempfile::tempdir().unwrap();
    let key = site.key.to_str().unwrap().to_owned();
    let run = |idle: &str, args: &[&str]| -> String {
        let out = site
            .command(args)
            .env("TMPDIR", tmp.path())
            .env("HOMELAB_SSH_IDLE", idle)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "homelab {args:?}:\n{said}{err}");
        said
    };
    let plan = |idle: &str| -> String {
        let said = run(idle, &["plan", "--key", &key]);
        let id = said.lines().next().and_then(|l| l.strip_prefix("plan ")).expect("a plan id");
        let id = id.trim().to_owned();
        run(idle, &["approve", site.plan_path(&id).to_str().unwrap(), "--key", &key, "--yes"]);
        id
    };
    // Per node, the round trips of an apply (`node-done` events) and its logins.
    let apply = |idle: &str, id: &str| -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
        let before = logins(&site);
        let said = run(idle, &["apply", "--format", "json", &site.approved(id)]);
        let trips = said
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["event"] == "node-done")
            .map(|e| (e["node"].as_str().unwrap().to_owned(), e["round_trips"].as_u64().unwrap()))
            .collect();
        (trips, more(&before, &logins(&site)))
    };
    let each = |n: u64| -> BTreeMap<String, u64> {
        NODES.iter().map(|node| (node.to_string(), n)).collect()
    };

    // Nothing kept: the plan logs in once per node, the apply once per round trip.
    let before = logins(&site);
    let id = plan("0");
    assert_eq!(more(&before, &logins(&site)), each(1), "a plan logs in once per node");
    let (trips, logged) = apply("0", &id);
    assert!(trips.values().all(|t| *t >= 2), "a fresh apply deploys on every node: {trips:?}");
    assert_eq!(logged, trips, "with nothing kept, each session logs in");

    // Kept: the plan logs in, its apply rides that login and logs in only to confirm.
    site.edit("services/cache/docker-compose.yml", |s| s.replace("\"8081\"]", "\"8082\"]"));
    site.edit("services/broker/docker-compose.yml", |s| {
        s.replace("BROKER_USER: broker\n", "BROKER_USER: kept\n")
    });
    let before = logins(&site);
    let id = plan("120");
    assert_eq!(more(&before, &logins(&site)), each(1), "a plan logs in once per node");
    let (trips, logged) = apply("120", &id);
    let confirmations: BTreeMap<String, u64> =
        trips.iter().map(|(n, t)| (n.clone(), t.saturating_sub(1))).collect();
    assert!(trips["alpha"] >= 2 && trips["edge-a"] >= 2, "{trips:?}");
    assert_eq!(logged, confirmations, "the apply's logins are its confirmations ({trips:?})");
    // And the next plan rides the same connections.
    let before = logins(&site);
    run("120", &["plan", "--key", &key]);
    assert_eq!(more(&before, &logins(&site)), each(0), "the next plan rides the kept ones");
}

/// `node`'s sshd with its configuration edited by `edit`: written, then `SIGHUP` (sshd execs
/// itself again and reads it); returns once it listens again. Connections already made are
/// kept as they were.
fn reconfigure_sshd(site: &Site, node: &str, edit: impl FnOnce(String) -> String) {
    let dir = &site.lab.node(node).dir;
    let config = dir.join("sshd_config");
    fs::write(&config, edit(fs::read_to_string(&config).unwrap())).unwrap();
    let log = dir.join("sshd.log");
    let listening = || fs::read_to_string(&log).unwrap().matches("Server listening on").count();
    let before = listening();
    let pid: i32 = fs::read_to_string(dir.join("sshd.pid")).unwrap().trim().parse().unwrap();
    // SAFETY: kill has no memory preconditions; the pid is the lab's own sshd.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while listening() == before {
        assert!(std::time::Instant::now() < deadline, "{node}'s sshd did not listen again");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The key exchanges `node`'s sshd logged (`LogLevel DEBUG1`: `kex: algorithm: NAME`), in order.
fn key_exchanges(site: &Site, node: &str) -> Vec<String> {
    let log = fs::read_to_string(site.lab.node(node).dir.join("sshd.log")).unwrap();
    log.lines()
        .filter_map(|l| l.split("kex: algorithm: ").nth(1))
        .map(|rest| rest.split_whitespace().next().unwrap_or("").to_owned())
        .collect()
}

/// The dead-man's confirmation proves a new login and carries nothing secret (a plan id, the
/// word `confirm`): its connection asks for curve25519 first, a sixth of the controller's CPU of
/// OpenSSH 9.2's default hybrid; the plan's and apply's kept connection keeps OpenSSH's default.
/// A node whose sshd allows only the post-quantum hybrid is confirmed all the same (ssh's `^`
/// puts curve25519 at the head of OpenSSH's list, not in its place).
#[test]
fn a_confirmation_asks_for_a_cheap_key_exchange_first_and_takes_what_the_node_allows() {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new(Lab::start(&NODES)).with_engines();
    let tmp = tempfile::tempdir().unwrap();
    let key = site.key.to_str().unwrap().to_owned();
    let run = |args: &[&str]| -> String {
        let out = site.command(args).env("TMPDIR", tmp.path()).output().unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "homelab {args:?}:\n{said}{err}");
        said
    };
    let plan_and_apply = || {
        let said = run(&["plan", "--key", &key]);
        let id = said.lines().next().and_then(|l| l.strip_prefix("plan ")).expect("a plan id");
        let id = id.trim().to_owned();
        run(&["approve", site.plan_path(&id).to_str().unwrap(), "--key", &key, "--yes"]);
        run(&["apply", &site.approved(&id)])
    };
    reconfigure_sshd(&site, "alpha", |c| c.replace("LogLevel VERBOSE", "LogLevel DEBUG1"));
    let default = key_exchanges(&site, "alpha").len();
    let said = plan_and_apply();
    assert!(said.contains("applied"), "{said}");
    // alpha deploys two levels (agent and cache, then web): the kept connection, then one
    // confirmation per level.
    let seen = key_exchanges(&site, "alpha")[default..].to_vec();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen[0].starts_with("sntrup761x25519-sha512"), "the kept connection: {seen:?}");
    assert!(seen[1..].iter().all(|k| k == "curve25519-sha256"), "the confirmations: {seen:?}");

    // A node that allows only the hybrid: its confirmation is made with it.
    reconfigure_sshd(&site, "alpha", |c| {
        format!("KexAlgorithms sntrup761x25519-sha512@openssh.com\n{c}")
    });
    let before = key_exchanges(&site, "alpha").len();
    site.edit("services/cache/docker-compose.yml", |s| s.replace("\"8081\"]", "\"8082\"]"));
    let said = plan_and_apply();
    assert!(said.contains("applied"), "{said}");
    let seen = key_exchanges(&site, "alpha")[before..].to_vec();
    assert!(!seen.is_empty(), "the confirmation logged in: {seen:?}");
    assert!(seen.iter().all(|k| k.starts_with("sntrup761x25519-sha512")), "{seen:?}");
    assert_eq!(site.detailed(), 0, "the node is at the plan's state");
}

/// Issue 20, item 1, both ways the node validates: with validate as a stage of its own (shell
/// steps), and through the node's engine (prepare and validate in one command). Each reads
/// what Compose resolves with the node's env file and refuses a writable bind a variable puts
/// in the release folder, naming it; nothing of the service goes live.
#[test]
fn the_engine_and_a_validate_stage_refuse_a_bind_the_nodes_env_file_puts_in_the_release() {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new(Lab::start(&NODES)).with_engines();
    site.edit("services/cache/docker-compose.yml", |s| {
        s.replace(
            "    command: [\"httpd\", \"-f\", \"-p\", \"8081\"]\n",
            "    command: [\"httpd\", \"-f\", \"-p\", \"8081\"]\n    volumes:\n      - \"${WEB_DATA:-{{ data_dir }}/www}:/www\"\n",
        )
    });
    site.edit("services/cache/service.yaml", |s| {
        s.replace("  env_vars: []\n", "  env_vars:\n    - name: WEB_DATA\n      secret: false\n")
    });
    site.edit("services/cache/env.example", |s| format!("{s}WEB_DATA=\n"));
    let env = site.root("alpha").join("config/cache/.env");
    fs::create_dir_all(env.parent().unwrap()).unwrap();
    fs::write(&env, "WEB_DATA=./www\n").unwrap();
    let refused = |id: &str, out: &Output| {
        assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
        let release = site.root("alpha").join(format!("state/releases/cache/{id}/www"));
        for said in [
            "error[release-mount]: services/cache/docker-compose.yml:8: `services.cache.volumes[0]`: on the node, `cache` mounts `".to_owned(),
            format!("{}` writable at `/www`", release.display()),
            format!("through `WEB_DATA` from {}", env.display()),
        ] {
            assert!(out.stdout.contains(&said), "expected {said:?} in:\n{}\n{}", out.stdout, out.stderr);
        }
        assert_eq!(site.journal("alpha", id)["services"]["cache"]["stage"], "failed");
        assert_eq!(site.live(&site.root("alpha"), "cache"), None);
        assert!(!site.running("alpha", "cache") && !release.exists());
    };

    let id = site.plan_and_approve();
    let out = site.apply(&id, &["--node", "alpha", "--service", "cache", "--stage", "prepare"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let out = site
        .apply(&id, &["--node", "alpha", "--service", "cache", "--resume", "--stage", "validate"]);
    refused(&id, &out);

    let id = site.plan_and_approve();
    let out = site.apply(&id, &["--node", "alpha"]);
    assert!(!site.engine_runs("alpha", &id).is_empty(), "the engine ran alpha's part");
    refused(&id, &out);
}

/// Issue 19 through the node's engine (which runs the same step scripts on the node): a
/// failing healthcheck that prints the node's secrets reaches the engine's progress, the
/// controller and the events only with every value of the node's `.env` redacted, and the
/// engine's progress file, which quotes the lines, is the owner's only.
#[test]
fn through_the_engine_a_failing_steps_secrets_stay_on_the_node() {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new(Lab::start(&NODES)).with_engines();
    const SECRET: &str = "engine-s3cret $(id) *.[x] & \"q\"";
    let env = site.root("edge-b").join("config/app/.env");
    fs::create_dir_all(env.parent().unwrap()).unwrap();
    fs::write(&env, format!("APP_TOKEN='{SECRET}'\n")).unwrap();
    site.edit("services/app/healthcheck.sh", |s| {
        s.replace(
            "exit 0\n",
            "echo \"probe: NOPE-4242\"\ncat \"$HOMELAB_ROOT/config/app/.env\"\nexit 1\n",
        )
    });
    let id = site.plan_and_approve();
    let out = site.apply(&id, &[]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("the node's engine answered"), "{}", out.stderr);
    assert!(out.stdout.contains("probe: NOPE-4242"), "{}", out.stdout);
    assert!(out.stdout.contains("APP_TOKEN='[redacted]'"), "{}", out.stdout);
    let leaked = |t: &str| t.contains("engine-s3cret");
    assert!(!leaked(&out.stdout) && !leaked(&out.stderr), "{}\n{}", out.stdout, out.stderr);
    let runs = site.engine_runs("edge-b", &id);
    assert!(!runs.is_empty(), "edge-b's engine ran the plan");
    for run in runs {
        let path = site.engine_dir("edge-b", &id).join(run);
        let text = fs::read_to_string(&path).unwrap();
        assert!(!leaked(&text), "{text}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let events = super::events_of(&site.root("edge-b"), "edge-b");
    assert!(!leaked(&events) && !events.contains("NOPE-4242"), "{events}");
    let log = site.root("edge-b").join(format!("logs/app/healthcheck-{id}.log"));
    assert!(fs::read_to_string(log).unwrap().contains(SECRET));
}

/// A service may ship a file that is not text (an icon, a DER certificate). Read through the
/// node's engine, its bytes reach the plan as they are: after the apply the next plan is a
/// no-op, and a hand edit of one byte of it is drift. (The engine's answer travelled as text
/// before, and a byte that is not UTF-8 changed its length: the node was "unreachable".)
#[test]
fn a_binary_file_a_service_ships_is_read_through_the_engine_as_its_bytes() {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new(Lab::start(&NODES)).with_engines();
    let icon: Vec<u8> = vec![0x89, b'P', b'N', b'G', 0xff, 0xfe, 0x00, b'\n', 0x80, 0xc3];
    fs::write(site.repo.path().join("services/web/favicon.ico"), &icon).unwrap();
    let id = site.plan_and_approve();
    let out = site.apply(&id, &[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let shipped = site.root("alpha").join("state/services/web/favicon.ico");
    assert_eq!(fs::read(&shipped).unwrap(), icon);
    let plan = site.homelab(&["plan", "--key", site.key.to_str().unwrap(), "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "a no-op after the apply:\n{}\n{}", plan.stdout, plan.stderr);
    assert!(!plan.stdout.contains("unreachable"), "{}", plan.stdout);
    let mut edited = icon.clone();
    edited[4] = 0xfd;
    fs::write(&shipped, &edited).unwrap();
    let plan = site.homelab(&["plan", "--key", site.key.to_str().unwrap(), "--detailed-exitcode"]);
    assert_eq!(
        plan.code, 2,
        "one byte changed on the node is drift:\n{}\n{}",
        plan.stdout, plan.stderr
    );
    assert!(plan.stdout.contains("favicon.ico"), "{}", plan.stdout);
}

impl Site {
    /// One session with `node`'s `homelab node serve`, run as on the node (its namespace, its
    /// engine, its root): hello, `request`, and every reply until it ends the session. What
    /// the node itself decides, without the controller's pre-flight in front of it.
    fn served(&self, node: &str, request: &Request) -> Vec<Reply> {
        let root = self.root(node);
        let mut cmd = self.lab.node_command(node, root.join("bin/homelab"));
        cmd.args(["node", "serve", "--root", root.to_str().unwrap()]);
        converse(cmd, request)
    }
}

/// New trust roots are a change of kind `trust` on every node that takes them, with or without
/// a service to change there: the node's own rule counts the approvals, on the controller and
/// on the node. Here edge-b's rule wants `second@test`, and a rotation that would make
/// `mallory@test` edge-b's approver, approved by the operator alone (an approver of the other
/// nodes), is refused by apply's pre-flight (under the commit's rule: mallory) and by edge-b's
/// engine itself (under its pinned rule: second), nothing taken; approved by mallory too, the
/// node still refuses; approved by `second@test` as well, every node takes the roots. Before, a node with only a
/// rotation counted as unchanged, and any one valid approval gave it roots naming a new
/// approver.
#[test]
fn a_trust_rotation_is_approved_as_each_nodes_own_rule_says_with_no_service_to_change() {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new(Lab::start(&NODES));
    fn add_key(site: &Site, name: &str) -> PathBuf {
        let path = site.repo.path().join(format!(".{name}_key"));
        keygen(&path, &format!("{name}@test"));
        let public = fs::read_to_string(path.with_extension("pub")).unwrap();
        let public: Vec<&str> = public.split_whitespace().take(2).collect();
        site.edit("inventory/allowed_signers", |s| {
            format!("{s}{name}@test namespaces=\"homelab-approve\" {}\n", public.join(" "))
        });
        path
    }
    /// edge-b's rule in inventory/policy.yaml: one approval, by `who`.
    fn edge_b_rule(site: &Site, who: &str) {
        site.edit("inventory/policy.yaml", |s| {
            let rule = format!("    edge-b:\n      required: 1\n      approvers: [{who}]\n");
            match (s.find("    edge-b:\n"), s.find("  nodes:\n")) {
                (Some(b), _) => {
                    let end = b + s[b..].find("]\n").unwrap() + 2;
                    format!("{}{rule}{}", &s[..b], &s[end..])
                }
                (None, Some(at)) => {
                    let at = at + "  nodes:\n".len();
                    format!("{}{rule}{}", &s[..at], &s[at..])
                }
                (None, None) => format!("{s}  nodes:\n{rule}"),
            }
        })
    }
    let second = add_key(&site, "second");
    edge_b_rule(&site, "second@test");
    let site = site.with_engines();
    let key = site.key.to_str().unwrap().to_owned();
    let approve = |id: &str, k: &str| {
        let plan = site.plan_path(id);
        let a = site.homelab(&["approve", plan.to_str().unwrap(), "--key", k, "--yes"]);
        assert_eq!(a.code, 0, "{}", a.stderr);
    };
    // Everything deployed, under the roots every node pinned: edge-b's approver is `second`.
    let id = site.plan_and_approve();
    approve(&id, second.to_str().unwrap());
    let out = site.apply(&id, &[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);

    // A rotation and nothing else: mallory becomes edge-b's approver.
    let mallory = add_key(&site, "mallory");
    edge_b_rule(&site, "mallory@test");
    let plan = site.homelab(&["plan", "--key", &key]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    let id = plan.stdout.lines().next().unwrap().strip_prefix("plan ").unwrap().trim().to_owned();
    let text = fs::read_to_string(site.plan_path(&id)).unwrap();
    assert_eq!(text.matches("\ntrust-rotate\n").count(), NODES.len(), "{text}");
    assert!(
        !text.lines().any(|l| l.starts_with("change ") && !l.starts_with("change no-op")),
        "no service changes anywhere: {text}"
    );
    approve(&id, &key);
    let pinned = site.root("edge-b").join("trust/policy.json");
    let before = fs::read_to_string(&pinned).unwrap();
    // The controller counts under the commit's roots (edge-b: mallory)...
    let out = site.apply(&id, &[]);
    assert_eq!(out.code, 3, "{}\n{}", out.stdout, out.stderr);
    let said = "node `edge-b` needs 1 approval from distinct keys of `mallory@test`; it has 0";
    assert!(out.stderr.contains(said), "{}", out.stderr);
    assert_eq!(fs::read_to_string(&pinned).unwrap(), before);
    // ...and the node under the roots it holds (edge-b: second), without the controller's
    // pre-flight in front of it.
    let bundle =
        bundle_for("edge-b", text.clone(), fs::read_to_string(site.approved(&id)).unwrap());
    let reason = refused(&site.served("edge-b", &Request::Apply(bundle)));
    assert!(reason.contains("second@test"), "{reason}");
    assert_eq!(fs::read_to_string(&pinned).unwrap(), before, "edge-b kept its roots");
    assert!(!site.root("edge-b").join(format!("state/deploy/{id}")).exists());

    // Approved by mallory as well (the commit's rule): the node still wants its own rule's
    // approver, and keeps its roots.
    approve(&id, mallory.to_str().unwrap());
    let bundle =
        bundle_for("edge-b", text.clone(), fs::read_to_string(site.approved(&id)).unwrap());
    let reason = refused(&site.served("edge-b", &Request::Apply(bundle)));
    assert!(reason.contains("second@test"), "{reason}");
    assert_eq!(fs::read_to_string(&pinned).unwrap(), before, "edge-b kept its roots");

    // Approved by edge-b's approver under its pinned roots too: every node takes the roots.
    approve(&id, second.to_str().unwrap());
    let out = site.apply(&id, &[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    for node in NODES {
        let policy = fs::read_to_string(site.root(node).join("trust/policy.json")).unwrap();
        assert!(policy.contains("mallory@test"), "{node}: {policy}");
    }
}
