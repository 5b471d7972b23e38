//! `homelab supervise` and `homelab adopt` over the local transport (`rt/<node>/` stands in for
//! every node, `rt/` is the controller): drift becomes one pending plan signed by the
//! supervisor's key, with the drift as its reason; the same drift makes no second one; the
//! supervisor's key approves nothing; adopt's patch makes the repository render the node.

use std::fs;
use std::process::Command;

use crate::support::{killed_after_line, killed_at, unfinished, Key, Lab, Output, Snapshot};

const SUPERVISOR: &str = "namespaces=\"homelab-plan\"";

/// A lab with everything deployed and committed, an operator and a supervisor key.
fn supervised() -> (Lab, Key, Key) {
    let lab = Lab::new();
    let operator = lab.keygen("operator");
    let supervisor = lab.keygen("supervisor");
    lab.allow(&[("operator@test", "", &operator), ("supervisor@test", SUPERVISOR, &supervisor)]);
    lab.deploy_all();
    lab.git_commit();
    (lab, operator, supervisor)
}

fn supervise(lab: &Lab, key: &Key) -> Output {
    lab.homelab_local(&["supervise", "--once", "--key", key.arg()])
}

/// The ids in `rt/actions/<state>/`.
fn actions(lab: &Lab, state: &str) -> Vec<String> {
    let mut ids: Vec<String> = fs::read_dir(lab.path(&format!("rt/actions/{state}")))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter_map(|n| n.strip_suffix(".json").map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

fn record(lab: &Lab, state: &str, id: &str) -> serde_json::Value {
    serde_json::from_str(&lab.read(&format!("rt/actions/{state}/{id}.json"))).unwrap()
}

fn plans(lab: &Lab) -> usize {
    fs::read_dir(lab.path("repo/plans"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".plan"))
        .count()
}

fn edit(lab: &Lab, rel: &str, f: impl FnOnce(String) -> String) {
    let text = lab.read(rel);
    lab.write(rel, f(text));
}

#[test]
fn drift_makes_one_signed_pending_plan_with_its_reason_and_the_supervisor_approves_nothing() {
    let (lab, _operator, supervisor) = supervised();
    let out = supervise(&lab, &supervisor);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(out.stdout, "no drift\n");
    assert!(actions(&lab, "pending").is_empty());

    // A hand edit on ALPHA: drift.
    edit(&lab, "rt/alpha/state/services/web/docker-compose.yml", |s| s + "# edited by hand\n");
    let out = supervise(&lab, &supervisor);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let pending = actions(&lab, "pending");
    assert_eq!(pending.len(), 1, "one pending plan: {}", out.stdout);
    let id = &pending[0];
    assert!(out.stdout.contains(&format!("plan {id} pending")), "{}", out.stdout);
    let action = record(&lab, "pending", id);
    let reason = action["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("drift: web@alpha update:")
            && reason.contains("docker-compose.yml was edited on the node"),
        "{reason}"
    );
    assert!(action["drift"].as_str().unwrap().starts_with("sha256:"));
    assert!(action["planner"].as_str().unwrap().starts_with("supervisor@test SHA256:"));
    // The plan is `plan`'s: the same format, from the commit, signed by the supervisor.
    let plan = lab.plan_file(id);
    assert!(plan.starts_with("homelab-plan 2\n"), "{plan}");
    assert!(plan.contains(&format!("planner supervisor@test {}\n", supervisor.fingerprint)));
    assert!(plan.contains(" clean\n"), "made from the commit: {plan}");
    let show = lab.homelab(&["show", &format!("repo/plans/{id}.plan"), "--controller-root", "rt"]);
    assert_eq!(show.code, 0, "{}{}", show.stdout, show.stderr);
    assert!(show.stdout.contains("valid: made by supervisor@test"), "{}", show.stdout);
    assert!(show.stdout.contains("verified: every artifact is the render of commit"));
    assert!(show.stdout.contains(&format!("\nreason: {reason}\n")), "{}", show.stdout);
    let json = lab.homelab(&[
        "show",
        &format!("repo/plans/{id}.plan"),
        "--format",
        "json",
        "--controller-root",
        "rt",
    ]);
    let doc: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(doc["reason"], reason);

    // The same drift: nothing new, pass after pass.
    for _ in 0..2 {
        let again = supervise(&lab, &supervisor);
        assert_eq!(again.code, 0, "{}", again.stderr);
        assert_eq!(again.stdout, format!("drift unchanged: plan {id} is pending\n"));
        assert_eq!(actions(&lab, "pending"), pending);
        assert_eq!(plans(&lab), 1);
    }

    // The supervisor's key may not approve: refused, nothing written.
    let before = lab.snapshot();
    let approve = lab.approve(id, &supervisor);
    assert_eq!(approve.code, 1, "{}{}", approve.stdout, approve.stderr);
    assert!(
        approve.stderr.contains(&format!(
            "the key {} cannot sign in `homelab-approve`",
            supervisor.fingerprint
        )),
        "{}",
        approve.stderr
    );
    before.assert_same(&lab.snapshot(), "a refused approval");

    // The drift changes: a new plan, and the old one is marked superseded.
    edit(&lab, "rt/alpha/state/services/agent/healthcheck.sh", |s| s + "# and this\n");
    let out = supervise(&lab, &supervisor);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let now = actions(&lab, "pending");
    assert_eq!(now.len(), 1, "{}", out.stdout);
    let second = &now[0];
    assert_ne!(second, id);
    let old = record(&lab, "failed", id);
    assert_eq!(old["state"], "superseded");
    assert_eq!(
        old["result"]["reason"],
        format!("superseded by plan {second}: the drift changed"),
        "{}",
        out.stdout
    );
    let reason = record(&lab, "pending", second)["reason"].as_str().unwrap().to_owned();
    assert!(
        reason.contains("agent@alpha update") && reason.contains("web@alpha update"),
        "{reason}"
    );

    // An approval forged with the supervisor's key (signed by hand in `homelab-approve`):
    // apply refuses it, and the executor fails the action without applying anything.
    let text = lab.plan_file(second);
    let (body, _) = crate::support::split_plan(&text);
    let forged = supervisor.ssh_sign("homelab-approve", body.as_bytes());
    lab.write(&format!("repo/plans/{second}.approved"), forged);
    let nodes = Snapshot::of(&lab.path("rt/alpha"));
    let apply = lab.apply(second);
    assert_eq!(apply.code, 3, "{}{}", apply.stdout, apply.stderr);
    assert!(apply.stderr.contains("approval 1 of 1"), "{}", apply.stderr);
    let exec = lab.homelab_local(&["executor", "--once"]);
    assert_eq!(exec.code, 1, "a pass that failed an action: {}{}", exec.stdout, exec.stderr);
    assert!(
        exec.stdout.contains(&format!("{second}: pending → failed: refused:")),
        "{}",
        exec.stdout
    );
    let failed = record(&lab, "failed", second);
    assert_eq!(failed["state"], "failed");
    assert!(failed["result"]["reason"].as_str().unwrap().contains("approval 1 of 1"), "{failed}");
    assert!(actions(&lab, "pending").is_empty() && actions(&lab, "running").is_empty());
    nodes.assert_same(&Snapshot::of(&lab.path("rt/alpha")), "nothing applied");

    // The drift is still there but its plan is gone (failed): the next pass plans it again.
    let out = supervise(&lab, &supervisor);
    assert_eq!(actions(&lab, "pending").len(), 1, "{}", out.stdout);
}

#[test]
fn a_supervisor_key_that_may_approve_is_refused() {
    let lab = Lab::new();
    let both = lab.keygen("both");
    lab.allow(&[("operator@test", "", &both)]);
    lab.deploy_all();
    lab.git_commit();
    let out = supervise(&lab, &both);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("may approve plans (as operator@test)"), "{}", out.stderr);
    assert!(!lab.path("rt/actions").exists());
}

fn git(lab: &Lab, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(lab.path("repo"))
        .args(args)
        .env("HOME", lab.path("home"))
        .env("GIT_CONFIG_GLOBAL", lab.path("home/.gitconfig"))
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn adopt_prints_the_patch_that_renders_the_node_and_commits_it_on_a_branch() {
    let (lab, _operator, _supervisor) = supervised();
    let adopt = |extra: &[&str]| {
        let mut args = vec!["adopt", "alpha", "web", "--transport", "local", "--root", "rt"];
        args.extend(extra);
        lab.homelab(&args)
    };
    let out = adopt(&[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "");
    assert!(out.stderr.contains("nothing to adopt"), "{}", out.stderr);

    // A hand edit on a line the template writes as is: adopted into the template.
    let node_file = "rt/alpha/state/services/web/docker-compose.yml";
    edit(&lab, node_file, |s| s.replace("\"8080\"]", "\"8090\"]"));
    let out = adopt(&[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "--- a/services/web/docker-compose.yml\n+++ b/services/web/docker-compose.yml\n@@ -3,5 +3,5 @@\n     image: \"{{ vars.image }}\"\n     container_name: web\n     restart: unless-stopped\n-    command: [\"httpd\", \"-f\", \"-p\", \"8080\"]\n+    command: [\"httpd\", \"-f\", \"-p\", \"8090\"]\n {% include \"labels.yml.j2\" %}\n"
    );

    // On a branch: committed from HEAD, the work tree untouched.
    let out = adopt(&["--branch", "adopt-web"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.starts_with("branch adopt-web at "), "{}", out.stdout);
    assert_eq!(git(&lab, &["status", "--porcelain", "--", ".", ":(exclude)plans"]), "");
    assert_eq!(git(&lab, &["branch", "--show-current"]).trim(), "main");
    let adopted = git(&lab, &["show", "adopt-web:services/web/docker-compose.yml"]);
    assert!(adopted.contains("\"8090\"]") && adopted.contains("{% include"), "{adopted}");
    let again = adopt(&["--branch", "adopt-web"]);
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("branch `adopt-web` exists already"), "{}", again.stderr);

    // The branch renders exactly the node's bytes.
    git(&lab, &["checkout", "-q", "adopt-web"]);
    let render = lab.homelab(&["render", "--node", "alpha", "--service", "web", "--out", "out"]);
    assert_eq!(render.code, 0, "{}", render.stderr);
    assert_eq!(lab.read("out/alpha/web/docker-compose.yml"), lab.read(node_file));
    // And the next plan finds no drift to undo there.
    let plan = lab.homelab(&["plan", "--transport", "local", "--root", "rt", "--node", "alpha"]);
    assert!(
        plan.stdout.contains("no-op    web@alpha  deployed artifacts match"),
        "{}",
        plan.stdout
    );
    assert!(!plan.stdout.contains("drift"), "{}\n{}", plan.stdout, plan.stderr);

    // A hand edit of a templated line: left for a person, said so, no patch for it.
    edit(&lab, node_file, |s| s.replace("homelab.node: \"alpha\"", "homelab.node: \"moved\""));
    let out = adopt(&[]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("docker-compose.yml: the node's edit touches templated lines"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stdout, "");
}

// ---------------------------------------------------------------------------------------------
// Killed and started again, against a lab node (its own sshd and Docker Engine).

use std::process::Stdio;
use std::time::Duration;

// One lab at a time, whichever test file starts it (they are heavy on 2 cores).
use crate::apply::LAB;

/// Issue 11: the supervisor killed at any point of a pass and started again plans each drift
/// once. Its cut points: while it refreshes a (slow) node, nothing is written yet; between
/// the plan file and its pending action, the next pass announces that plan instead of making
/// a second; between the action and its memory, the next pass finds the action by its drift.
#[test]
fn a_supervisor_killed_mid_pass_and_started_again_plans_each_drift_once() {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = std::time::Instant::now();
    let site = crate::executor::Site::new();
    let key = site.supervisor_key();
    let key = key.to_str().unwrap();
    site.commit("homelab");
    let args = ["supervise", "--once", "--key", key];
    let plans = || -> Vec<String> {
        let mut ids: Vec<String> = fs::read_dir(site.repo.path().join("plans"))
            .map(|d| {
                d.filter_map(|e| {
                    let n = e.unwrap().file_name().to_string_lossy().into_owned();
                    n.strip_suffix(".plan").map(str::to_owned)
                })
                .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    };
    let memory = || -> Option<serde_json::Value> {
        let text = fs::read_to_string(site.ctl.join("state/supervisor/last.json")).ok()?;
        Some(serde_json::from_str(&text).unwrap())
    };
    let whole = |what: &str| {
        let left = [unfinished(&site.ctl), unfinished(&site.repo.path().join("plans"))].concat();
        assert!(left.is_empty(), "{what}: unfinished writes left: {left:?}");
        for state in ["pending", "approved", "running", "completed", "failed"] {
            for id in site.actions(state) {
                let _ = site.record(state, &id); // panics on a torn record
            }
        }
    };
    // Nothing is deployed on ALPHA: its two services are the drift.

    // Killed while it refreshes the node (slowed, so the refresh takes a while): nothing was
    // written, nothing is half written.
    site.lab.slow("alpha", "delay 200ms");
    let mut supervise = site.command(&args);
    supervise.env("RUST_LOG", "debug").stdout(Stdio::null());
    killed_after_line(&mut supervise, "ssh command", Duration::ZERO);
    site.lab.unslow("alpha");
    assert_eq!(plans(), Vec::<String>::new());
    assert!(site.actions("pending").is_empty());
    assert_eq!(memory(), None);
    whole("killed in the refresh");

    // Killed after the plan file, before its action (as it makes actions/pending/).
    let pending_dir = site.ctl.join("actions/pending");
    killed_at(&site.command(&args), &pending_dir, 1);
    let orphan = plans();
    assert_eq!(orphan.len(), 1, "the plan file was written");
    let x = orphan[0].clone();
    assert!(site.actions("pending").is_empty(), "and not its action");
    whole("killed before the action");
    // Started again: that plan is announced, no second plan is made.
    let out = site.homelab(&args);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(&format!(
            "plan {x} was written for this drift by a pass that stopped before its action: announcing it"
        )),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains(&format!("plan {x} pending: ")), "{}", out.stdout);
    assert_eq!(plans(), [x.as_str()]);
    assert_eq!(site.actions("pending"), [x.as_str()]);
    let record = site.record("pending", &x);
    assert!(record["reason"].as_str().unwrap().contains("agent@alpha create"), "{record}");
    assert_eq!(memory().unwrap()["plan"], x.as_str());
    let out = site.homelab(&args);
    assert_eq!(out.stdout, format!("drift unchanged: plan {x} is pending\n"), "{}", out.stderr);

    // A new commit changes the drift. Killed after the new plan and its action, before its
    // memory (as it makes state/supervisor/).
    site.port(8080, 8090);
    site.commit("web on 8090");
    killed_at(&site.command(&args), &site.ctl.join("state/supervisor"), 1);
    let both = plans();
    assert_eq!(both.len(), 2, "{both:?}");
    let y = both.iter().find(|id| **id != x).unwrap().clone();
    let mut pending = vec![x.clone(), y.clone()];
    pending.sort();
    assert_eq!(site.actions("pending"), pending, "the old one not superseded yet");
    assert_eq!(memory().unwrap()["plan"], x.as_str(), "the memory not written yet");
    whole("killed before the memory");
    // Started again: the action is found by its drift; the old plan is superseded; no third.
    let out = site.homelab(&args);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.starts_with(&format!("drift unchanged: plan {y} is pending\n")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(&format!("plan {x} superseded by plan {y}: the drift changed")),
        "{}",
        out.stdout
    );
    assert_eq!(site.actions("pending"), [y.as_str()]);
    assert_eq!(site.record("failed", &x)["state"], "superseded");
    assert_eq!(plans().len(), 2);
    assert_eq!(memory().unwrap()["plan"], y.as_str(), "the drift's plan is remembered");
    whole("after the restarts");
    eprintln!("supervisor kill test: {:.1}s", t0.elapsed().as_secs_f64());
}
