//! The node's engine (issue 17): nodes bootstrapped with a deploy key restricted to
//! `homelab node serve`, plans applied through it, and the node's own refusals of bad bundles.

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
            let out = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "deploy@test", "-f"])
                .arg(&key)
                .output()
                .unwrap();
            assert!(out.status.success());
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
        let mut child = self
            .deployer_ssh(node)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
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
        plan,
        approved,
        services: None,
        resume: false,
        lock_wait_secs: 0,
        confirm_timeout_secs: Some(30),
        holder: "test".to_owned(),
        in_run: Vec::new(),
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
