//! `homelab approve`, `homelab reject`, and the pre-flight of `homelab apply`: every refusal
//! exits 3, says why, and changes nothing on disk (the whole lab is compared byte for byte and
//! mode for mode before and after). Stale and replayed nodes are refused per node, right before
//! that node's first stage: the refused node is never touched, and when it is the only node
//! with changes nothing is done anywhere. Approvals are made by `homelab approve` or by the real
//! `ssh-keygen -Y sign`, and checked by `ssh-keygen -Y verify` too.
//!
//! Applies that get past pre-flight run `--stage prepare` only, so no test starts containers
//! on the machine running the tests.

use std::fs;

use crate::support::{id_of, split_plan, Key, Lab, Output, Ran, Snapshot};

/// Apply's pre-flight passed (execution itself may still be missing or fail).
const PASSED: &str = "pre-flight passed";

/// A lab with a planner (allowed to sign plans only) and an operator (the base fixture's
/// approver), and a plan of an empty runtime root (6 creates on 3 nodes).
struct Planned {
    lab: Lab,
    planner: Key,
    operator: Key,
    id: String,
}

impl Planned {
    fn new() -> Planned {
        Planned::with(|_| {})
    }

    /// A lab with a planner and an operator key, `setup` run on it, then a plan.
    fn with(setup: impl FnOnce(&Lab)) -> Planned {
        let lab = Lab::new();
        let planner = lab.keygen("planner");
        let operator = lab.keygen("operator");
        lab.allow(&[
            ("planner@test", "namespaces=\"homelab-plan\"", &planner),
            ("operator@test", "", &operator),
        ]);
        setup(&lab);
        let id = lab.plan(&planner);
        Planned { lab, planner, operator, id }
    }

    /// A hostile planner's plan: this plan's body edited by `edit`, signed again with the
    /// (allowed) planner key as `ssh-keygen -Y sign` does, saved under its new id.
    /// The operator's approval of it is written too (by `ssh-keygen -Y sign`), so what apply
    /// says is about the plan, not a missing approval.
    fn resigned(&self, edit: impl Fn(&str) -> String) -> String {
        let body = edit(&self.body());
        let sig = self.planner.ssh_sign("homelab-plan", body.as_bytes());
        let id = crate::support::id_of(body.as_bytes());
        self.lab.write(&format!("repo/plans/{id}.plan"), format!("{body}{sig}"));
        let approval = self.operator.ssh_sign("homelab-approve", body.as_bytes());
        self.lab.write(&format!("repo/plans/{id}.approved"), approval);
        id
    }

    /// The plan's signed bytes.
    fn body(&self) -> String {
        split_plan(&self.lab.plan_file(&self.id)).0.to_owned()
    }

    fn approved_rel(&self) -> String {
        format!("repo/plans/{}.approved", self.id)
    }

    fn approve(&self, key: &Key) -> Output {
        let out = self.lab.approve(&self.id, key);
        assert_eq!(out.code, 0, "approve by {}: {}{}", key.name, out.stdout, out.stderr);
        out
    }

    /// Writes `plans/<id>.approved` as given.
    fn write_approved(&self, text: &str) {
        self.lab.write(&self.approved_rel(), text);
    }

    /// `ssh-keygen -Y verify -f repo/inventory/allowed_signers -I <principal> -n <ns>` of the
    /// plan's signed bytes.
    fn ssh_verify(&self, principal: &str, namespace: &str, sig: &str) -> Ran {
        self.lab.write("check.sig", sig);
        let signers = self.lab.path("repo/inventory/allowed_signers");
        let sig = self.lab.path("check.sig");
        let ran = crate::support::ssh_verify(
            &signers,
            principal,
            namespace,
            &sig,
            self.body().as_bytes(),
        );
        fs::remove_file(self.lab.path("check.sig")).unwrap();
        ran
    }

    /// Runs apply, which must refuse (exit 3), say each of `why`, and change nothing.
    fn refused(&self, why: &[&str]) -> Output {
        self.refused_id(&self.id, why)
    }

    fn refused_id(&self, id: &str, why: &[&str]) -> Output {
        let before = self.lab.snapshot();
        let out = self.lab.apply(id);
        self.lab.snapshot().assert_same(&before, "a refused apply");
        assert_eq!(
            out.code, 3,
            "expected a refusal (3)\nstdout:\n{}\nstderr:\n{}",
            out.stdout, out.stderr
        );
        assert!(!out.stdout.contains(PASSED), "{}", out.stdout);
        assert!(out.stderr.starts_with("error: refused: "), "{}", out.stderr);
        assert!(out.stderr.contains("nothing was changed"), "{}", out.stderr);
        for w in why {
            assert!(out.stderr.contains(w), "expected `{w}` in:\n{}", out.stderr);
        }
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
        out
    }

    /// Runs apply of the prepare stage only (no `docker`): pre-flight passes.
    fn passes(&self) -> Output {
        self.passes_id(&self.id)
    }

    fn passes_id(&self, id: &str) -> Output {
        let out = self.lab.apply_with(id, &["--stage", "prepare"]);
        let all = format!("{}{}", out.stdout, out.stderr);
        assert!(all.contains(PASSED), "pre-flight refused:\n{all}");
        assert!(!out.stderr.contains("refused:"), "{all}");
        out
    }

    /// Runs apply with `extra` arguments, which must refuse `node` on a line saying each of
    /// `why`, and leave that node's runtime root and the repository untouched. Returns the
    /// exit code and the snapshots before and after.
    fn refused_on_node(
        &self,
        node: &str,
        extra: &[&str],
        why: &[&str],
    ) -> (i32, Snapshot, Snapshot) {
        let before = self.lab.snapshot();
        let out = self.lab.apply_with(&self.id, extra);
        let after = self.lab.snapshot();
        let all = format!("{}{}", out.stdout, out.stderr);
        assert_ne!(out.code, 0, "expected a refusal:\n{all}");
        let rt = format!("rt/{node}");
        before.under(&rt).assert_same(&after.under(&rt), "the refused node");
        before.under("repo").assert_same(&after.under("repo"), "the repository");
        let upper = node.to_uppercase();
        let said = all
            .lines()
            .any(|l| (l.contains(node) || l.contains(&upper)) && why.iter().all(|w| l.contains(w)));
        assert!(said, "expected a line naming `{node}` with {why:?} in:\n{all}");
        assert!(!all.contains("panicked"), "{all}");
        (out.code, before, after)
    }
}

fn blocks(text: &str) -> Vec<String> {
    text.split_inclusive("-----END SSH SIGNATURE-----\n").map(str::to_owned).collect()
}

// ---------------------------------------------------------------------------------------------
// approve

#[test]
fn approve_writes_a_signature_ssh_keygen_accepts_once_per_key_and_appends_other_approvers() {
    let p = Planned::new();
    let second = p.lab.keygen("second");
    p.lab.allow(&[
        ("planner@test", "namespaces=\"homelab-plan\"", &p.planner),
        ("operator@test", "", &p.operator),
        ("second@test", "", &second),
    ]);
    let out = p.approve(&p.operator);
    assert!(
        out.stdout.starts_with(&format!("plan {}\n", p.id)),
        "approve shows the plan:\n{}",
        out.stdout
    );
    assert!(out.stdout.contains("summary  6 create"), "{}", out.stdout);
    assert!(
        out.stderr.contains(&format!(
            "approved by operator@test ({}): repo/plans/{}.approved",
            p.operator.fingerprint, p.id
        )),
        "{}",
        out.stderr
    );
    let first = p.lab.read(&p.approved_rel());
    assert_eq!(blocks(&first).len(), 1, "{first}");
    let ran = p.ssh_verify("operator@test", "homelab-approve", &first);
    assert!(ran.ok, "ssh-keygen -Y verify refused the approval: {}{}", ran.stdout, ran.stderr);
    assert!(
        !p.ssh_verify("operator@test", "homelab-plan", &first).ok,
        "an approval is no plan signature"
    );
    // Ed25519 signatures are deterministic: ssh-keygen signs the same bytes to the same block.
    assert_eq!(first, p.operator.ssh_sign("homelab-approve", p.body().as_bytes()));

    // Twice with the same key: no second block.
    let out = p.approve(&p.operator);
    assert!(out.stderr.contains("already approved by this key"), "{}", out.stderr);
    assert_eq!(p.lab.read(&p.approved_rel()), first);

    // A second approver is appended; each block verifies on its own.
    let out = p.approve(&second);
    assert!(out.stderr.contains("approved by second@test"), "{}", out.stderr);
    let both = p.lab.read(&p.approved_rel());
    assert!(both.starts_with(&first), "{both}");
    let bs = blocks(&both);
    assert_eq!(bs.len(), 2, "{both}");
    assert!(p.ssh_verify("second@test", "homelab-approve", &bs[1]).ok);
    assert!(!p.ssh_verify("operator@test", "homelab-approve", &bs[1]).ok);
    p.passes();
}

#[test]
fn an_approved_plan_passes_pre_flight_and_ssh_keygen_approvals_count() {
    let p = Planned::new();
    p.write_approved(&p.operator.ssh_sign("homelab-approve", p.body().as_bytes()));
    let out = p.passes();
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains(&format!("{PASSED} for plan {}: 6 create", p.id)), "{all}");
}

// ---------------------------------------------------------------------------------------------
// Every refusal of apply's pre-flight.

#[test]
fn no_approval_is_refused() {
    let p = Planned::new();
    p.refused(&[
        "no approval",
        &format!("repo/plans/{}.approved` does not exist", p.id),
        "homelab approve",
    ]);
}

#[test]
fn an_approval_by_a_key_not_in_allowed_signers_is_refused() {
    let p = Planned::new();
    let stranger = p.lab.keygen("stranger");
    let sig = stranger.ssh_sign("homelab-approve", p.body().as_bytes());
    assert!(!p.ssh_verify("operator@test", "homelab-approve", &sig).ok, "ssh-keygen agrees");
    p.write_approved(&sig);
    p.refused(&[&stranger.fingerprint, "is not in `inventory/allowed_signers`"]);
}

#[test]
fn an_approval_by_a_key_past_its_valid_before_is_refused() {
    let p = Planned::new();
    p.approve(&p.operator);
    p.lab.allow(&[
        ("planner@test", "namespaces=\"homelab-plan\"", &p.planner),
        (
            "operator@test",
            "namespaces=\"homelab-plan,homelab-approve\",valid-before=\"20200101Z\"",
            &p.operator,
        ),
    ]);
    let approved = p.lab.read(&p.approved_rel());
    assert!(!p.ssh_verify("operator@test", "homelab-approve", &approved).ok, "ssh-keygen agrees");
    p.refused(&[&p.operator.fingerprint, "has expired", "valid-before", "2020-01-01T00:00:00Z"]);
}

#[test]
fn an_approval_by_a_key_before_its_valid_after_is_refused() {
    let p = Planned::new();
    p.approve(&p.operator);
    p.lab.allow(&[
        ("planner@test", "namespaces=\"homelab-plan\"", &p.planner),
        (
            "operator@test",
            "namespaces=\"homelab-plan,homelab-approve\",valid-after=\"20990101Z\"",
            &p.operator,
        ),
    ]);
    let approved = p.lab.read(&p.approved_rel());
    assert!(!p.ssh_verify("operator@test", "homelab-approve", &approved).ok, "ssh-keygen agrees");
    p.refused(&[
        &p.operator.fingerprint,
        "is not yet valid",
        "valid-after",
        "2099-01-01T00:00:00Z",
    ]);
}

#[test]
fn an_approval_by_a_key_not_allowed_to_approve_is_refused() {
    let p = Planned::new();
    p.approve(&p.operator);
    p.lab.allow(&[
        ("planner@test", "namespaces=\"homelab-plan\"", &p.planner),
        ("operator@test", "namespaces=\"homelab-plan\"", &p.operator),
    ]);
    let approved = p.lab.read(&p.approved_rel());
    assert!(!p.ssh_verify("operator@test", "homelab-approve", &approved).ok, "ssh-keygen agrees");
    p.refused(&["only for namespaces `homelab-plan`, not `homelab-approve`"]);
}

#[test]
fn a_forged_approval_is_refused() {
    let p = Planned::new();
    // A valid block, by an allowed key, in the right namespace, over another message.
    let sig = p.operator.ssh_sign("homelab-approve", b"homelab-plan 1\nsome other plan\n");
    assert!(!p.ssh_verify("operator@test", "homelab-approve", &sig).ok, "ssh-keygen agrees");
    p.write_approved(&sig);
    p.refused(&["bad signature by key", &p.operator.fingerprint, "forged"]);
}

#[test]
fn a_truncated_approval_is_refused() {
    let p = Planned::new();
    p.approve(&p.operator);
    let approved = p.lab.read(&p.approved_rel());
    let cut: String = approved.lines().take(3).map(|l| format!("{l}\n")).collect();
    assert!(!p.ssh_verify("operator@test", "homelab-approve", &cut).ok, "ssh-keygen agrees");
    p.write_approved(&cut);
    p.refused(&["malformed signature", "truncated"]);
}

/// The byte that changes: the last digit of the expiry year (a plan made to live longer).
fn change_one_byte(text: &str) -> String {
    let at = text.find("\nexpires ").unwrap() + "\nexpires ".len() + 3;
    let mut bytes = text.as_bytes().to_vec();
    bytes[at] = if bytes[at] == b'9' { b'0' } else { bytes[at] + 1 };
    String::from_utf8(bytes).unwrap()
}

#[test]
fn a_plan_changed_by_one_byte_after_signing_is_refused_in_place_and_renamed() {
    let p = Planned::new();
    p.approve(&p.operator);
    let changed = change_one_byte(&p.lab.plan_file(&p.id));

    // In place: its bytes no longer hash to its name.
    let plan_rel = format!("repo/plans/{}.plan", p.id);
    p.lab.write(&plan_rel, &changed);
    p.refused(&["hash to id", "changed after it was made"]);

    // Renamed to its new id, with the approval copied alongside: the signatures are over
    // the old bytes.
    let new_id = id_of(split_plan(&changed).0.as_bytes());
    assert_ne!(new_id, p.id);
    fs::rename(p.lab.path(&plan_rel), p.lab.path(&format!("repo/plans/{new_id}.plan"))).unwrap();
    fs::copy(p.lab.path(&p.approved_rel()), p.lab.path(&format!("repo/plans/{new_id}.approved")))
        .unwrap();
    p.refused_id(
        &new_id,
        &["the plan's signature is not valid", "bad signature", &p.planner.fingerprint],
    );
}

#[test]
fn the_plans_own_signature_offered_as_an_approval_is_refused() {
    let p = Planned::new();
    let text = p.lab.plan_file(&p.id);
    let (_, sig) = split_plan(&text);
    assert!(!p.ssh_verify("planner@test", "homelab-approve", sig).ok, "ssh-keygen agrees");
    p.write_approved(sig);
    p.refused(&[
        "wrong signature namespace",
        "signed for `homelab-plan`, expected `homelab-approve`",
    ]);
}

#[test]
fn two_signatures_by_one_key_count_once_and_two_distinct_approvers_pass() {
    let p = Planned::new();
    let second = p.lab.keygen("second");
    p.lab.allow(&[
        ("planner@test", "namespaces=\"homelab-plan\"", &p.planner),
        ("operator@test", "", &p.operator),
        ("second@test", "", &second),
    ]);
    p.lab.policy("24h", 2, &["operator@test", "second@test"]);
    // The same key twice: once by homelab, once by ssh-keygen.
    p.approve(&p.operator);
    let again = p.operator.ssh_sign("homelab-approve", p.body().as_bytes());
    p.write_approved(&format!("{}{again}", p.lab.read(&p.approved_rel())));
    assert_eq!(blocks(&p.lab.read(&p.approved_rel())).len(), 2);
    p.refused(&["needs 2 approvals from distinct keys", "it has 1", "count once"]);

    // The same key listed under both approvers' names still counts once.
    p.lab.allow(&[
        ("planner@test", "namespaces=\"homelab-plan\"", &p.planner),
        ("operator@test", "", &p.operator),
        ("second@test", "", &p.operator),
    ]);
    p.refused(&["needs 2 approvals from distinct keys", "it has 1"]);

    // Two distinct allowed keys.
    p.lab.allow(&[
        ("planner@test", "namespaces=\"homelab-plan\"", &p.planner),
        ("operator@test", "", &p.operator),
        ("second@test", "", &second),
    ]);
    fs::remove_file(p.lab.path(&p.approved_rel())).unwrap();
    p.approve(&p.operator);
    p.approve(&second);
    p.passes();
}

/// `required: 2` counts people, not keys: two keys of `operator@test` are one approver, and
/// `second@test` never approved (issue 8, finding 4).
#[test]
fn two_keys_of_one_principal_count_as_one_approver() {
    let p = Planned::new();
    let spare = p.lab.keygen("spare");
    let second = p.lab.keygen("second");
    p.lab.allow(&[
        ("planner@test", "namespaces=\"homelab-plan\"", &p.planner),
        ("operator@test", "", &p.operator),
        ("operator@test", "", &spare),
        ("second@test", "", &second),
    ]);
    p.lab.policy("24h", 2, &["operator@test", "second@test"]);
    p.approve(&p.operator);
    p.approve(&spare);
    assert_eq!(blocks(&p.lab.read(&p.approved_rel())).len(), 2);
    p.refused(&["needs 2 approvals from distinct keys", "it has 1", "two keys of one principal"]);
    p.approve(&second);
    p.passes();
}

/// A line that names a principal and takes it back (`a,!a`) allows nobody as `a`, as
/// `ssh-keygen -Y verify -I a` says (issue 8, finding 8).
#[test]
fn a_negated_principal_does_not_approve() {
    let p = Planned::new();
    p.lab.allow(&[
        ("planner@test", "namespaces=\"homelab-plan\"", &p.planner),
        ("operator@test,!operator@test", "", &p.operator),
    ]);
    p.lab.policy("24h", 1, &["operator@test"]);
    let sig = p.operator.ssh_sign("homelab-approve", p.body().as_bytes());
    assert!(!p.ssh_verify("operator@test", "homelab-approve", &sig).ok);
    p.write_approved(&sig);
    p.refused(&["needs 1 approval from distinct keys", "it has 0"]);
}

#[test]
fn an_expired_plan_is_refused() {
    let lab = Lab::new();
    let operator = lab.keygen("operator");
    lab.allow(&[("operator@test", "", &operator)]);
    lab.policy("1s", 1, &["operator@test"]);
    let id = lab.plan(&operator);
    let body = split_plan(&lab.plan_file(&id)).0.to_owned();
    lab.write(
        &format!("repo/plans/{id}.approved"),
        operator.ssh_sign("homelab-approve", body.as_bytes()),
    );
    std::thread::sleep(std::time::Duration::from_secs(2));
    let p = Planned { lab, planner: operator.clone(), operator, id };
    p.refused(&["expired at", "plan again"]);
}

#[test]
fn a_rejected_plan_is_refused() {
    let p = Planned::new();
    p.approve(&p.operator);
    let out = p.lab.homelab(&[
        "reject",
        &format!("repo/plans/{}.plan", p.id),
        "--reason",
        "the broker upgrade waits for the weekend",
        "--transport",
        "local",
        "--root",
        "rt",
        "--controller-root",
        "rt",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        !p.lab.path(&format!("rt/actions/pending/{}.json", p.id)).exists(),
        "no longer pending"
    );
    p.refused(&["was rejected", "the broker upgrade waits for the weekend"]);
    // `--stage diagnose` does not look at a rejected plan either.
    let out = p.lab.apply_with(&p.id, &["--stage", "diagnose"]);
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("was rejected"), "{}", out.stderr);

    // The rejection travels with the plan's id (issue 8, finding 6): the same plan copied to
    // another folder and applied from another controller is refused on every node.
    for f in ["plan", "approved"] {
        let text = p.lab.read(&format!("repo/plans/{}.{f}", p.id));
        p.lab.write(&format!("elsewhere/{}.{f}", p.id), text);
    }
    let before = p.lab.snapshot();
    let out = p.lab.homelab(&[
        "apply",
        &format!("elsewhere/{}.approved", p.id),
        "--transport",
        "local",
        "--root",
        "rt",
        "--controller-root",
        "rt2",
    ]);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert_eq!(out.code, 3, "{all}");
    assert!(all.contains("recorded on this node by `homelab reject`"), "{all}");
    p.lab.snapshot().under("rt").assert_same(&before.under("rt"), "the nodes of a rejected plan");
}

/// Expiry binds every start (issue 8, finding 5): after one node was prepared before expiry,
/// `apply --resume` after expiry leaves out the nodes that never started, and says so.
#[test]
fn after_expiry_resume_finishes_only_nodes_that_started() {
    let p = Planned::with(|lab| lab.policy("20s", 1, &["operator@test"]));
    let (lab, id) = (&p.lab, &p.id);
    let out = lab.approve(id, &p.operator);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = lab.apply_with(id, &["--node", "edge-a", "--stage", "prepare"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    // Wait until the plan has expired (its own `expires` line, not a guess).
    let text = lab.plan_file(id);
    let expires = text.lines().find_map(|l| l.strip_prefix("expires ")).unwrap();
    let expires = humantime::parse_rfc3339(expires).unwrap();
    while std::time::SystemTime::now() <= expires + std::time::Duration::from_secs(1) {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let before = lab.snapshot();
    let out = lab.apply_with(id, &["--resume"]);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert_ne!(out.code, 0, "{all}");
    for node in ["alpha", "edge-b"] {
        let line = all.lines().find(|l| l.contains(&node.to_uppercase()) && l.contains("left out"));
        assert!(line.is_some_and(|l| l.contains("expired")), "{node} left out, in:\n{all}");
        before
            .under(&format!("rt/{node}"))
            .assert_same(&lab.snapshot().under(&format!("rt/{node}")), "a node that never started");
    }
}

#[test]
fn a_plan_already_applied_is_refused_by_the_controllers_record() {
    let p = Planned::new();
    p.approve(&p.operator);
    // The controller's record of an apply (`<controller root>/state/applied/`).
    p.lab.write(&format!("rt/state/applied/{}.json", p.id), "{}\n");
    p.refused(&["already applied", &format!("rt/state/applied/{}.json", p.id)]);
}

/// A lab whose deployed homelab differs from the repository on `edge-b` only (`app`'s
/// override changed), planned and approved: every other node has nothing to do.
fn planned_on_edge_b() -> Planned {
    let lab = Lab::new();
    let planner = lab.keygen("planner");
    let operator = lab.keygen("operator");
    lab.allow(&[
        ("planner@test", "namespaces=\"homelab-plan\"", &planner),
        ("operator@test", "", &operator),
    ]);
    lab.deploy_all();
    let rel = "repo/hosts/edge-b/runtime/app/docker-compose.override.yml";
    lab.write(rel, lab.read(rel).replace("APP_NODE", "APP_HOST"));
    let id = lab.plan(&planner);
    assert!(lab
        .plan_file(&id)
        .contains("summary 0 create, 1 update, 0 replace, 0 delete, 5 no-op\n"));
    let p = Planned { lab, planner, operator, id };
    p.approve(&p.operator);
    p
}

/// When the only node with changes is refused, nothing is done anywhere.
///
/// The controller's record `rt/state/applied/<id>.json` is left out of the comparison: apply
/// currently writes it (`partial`) even when no node did anything, because a node with nothing
/// to do counts as touched (`NodeOutcome::touched` in src/apply/mod.rs): a bug, reported.
fn nothing_done(before: &Snapshot, after: &Snapshot, id: &str) {
    let record = format!("rt/state/applied/{id}.json");
    let skip = [record.as_str(), "rt/state/applied", "rt/state"];
    let keep = |s: &Snapshot| {
        Snapshot(
            s.0.iter()
                .filter(|(k, _)| !skip.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    };
    keep(before).assert_same(&keep(after), "a plan refused on its only node");
}

#[test]
fn a_plan_already_applied_is_refused_by_a_nodes_record() {
    let p = planned_on_edge_b();
    p.lab.write(&format!("rt/edge-b/state/consumed/{}.json", p.id), "{}\n");
    let (code, before, after) =
        p.refused_on_node("edge-b", &[], &["already applied on this node", "replay"]);
    assert_eq!(code, 3, "refused");
    nothing_done(&before, &after, &p.id);
}

#[test]
fn a_stale_plan_is_refused_naming_the_node_and_what_changed() {
    let p = planned_on_edge_b();
    let deployed = "rt/edge-b/state/services/app/docker-compose.yml";
    p.lab.write(deployed, format!("{}# edited on the node\n", p.lab.read(deployed)));
    let (code, before, after) =
        p.refused_on_node("edge-b", &[], &["stale", "app file docker-compose.yml", "plan again"]);
    assert_eq!(code, 3, "refused");
    nothing_done(&before, &after, &p.id);
    // Not even an empty folder is left of the controller's record (issue 8, finding 10).
    assert!(!p.lab.path("rt/state/applied").exists(), "an empty state/applied/ was left");
    // The summary suggests what can help a stale node (a new plan), not `--resume`.
    let out = p.lab.apply(&p.id);
    assert!(out.stdout.contains("needs a new plan"), "{}", out.stdout);
    assert!(!out.stdout.contains("--resume"), "{}", out.stdout);
}

/// A plain apply of a plan whose apply started and did not finish (killed, cut, or run one
/// stage at a time) is not called a replay to plan again: it says `--resume` continues it.
#[test]
fn a_plain_apply_of_an_unfinished_apply_points_at_resume() {
    let p = Planned::new();
    p.approve(&p.operator);
    p.passes();
    let out = p.refused(&["already started and did not finish", "homelab apply --resume"]);
    assert!(!out.stderr.contains("plan again"), "{}", out.stderr);
}

/// Issue 17: one plan at a time per node. A plan whose apply started on a node and did not
/// finish (here: run through `prepare` only, so its lock was released) is undecided there; a
/// newer plan is refused on that node naming it and the command that decides it, and nothing
/// of the newer plan is written anywhere.
#[test]
fn a_newer_plan_is_refused_while_an_older_one_is_undecided_on_the_node() {
    let p = Planned::new();
    p.approve(&p.operator);
    p.passes();
    let older = p.id.clone();
    let rel = "repo/hosts/edge-b/runtime/app/docker-compose.override.yml";
    p.lab.write(rel, p.lab.read(rel).replace("APP_NODE", "APP_HOST"));
    let newer = Planned { id: p.lab.plan(&p.planner), ..p };
    newer.approve(&newer.operator);
    let resume = format!("homelab apply --resume plans/{older}.approved");
    let why = [&format!("plan `{older}` is undecided on this node"), resume.as_str()];
    let (code, before, after) = newer.refused_on_node("edge-a", &[], &why);
    assert_eq!(code, 3, "refused");
    nothing_done(&before, &after, &newer.id);
    assert!(!newer.lab.path(&format!("rt/state/applied/{}.json", newer.id)).exists());
}

#[test]
fn a_stale_node_is_refused_and_left_untouched_among_nodes_that_go_on() {
    let p = Planned::new();
    // The plan creates everything everywhere; since then, someone deployed `agent` by hand on
    // edge-a.
    p.approve(&p.operator);
    p.lab.write("rt/edge-a/state/services/agent/docker-compose.yml", "services: {}\n");
    // The other nodes go on (prepare stage only: no `docker`), so the exit code is theirs
    // too; edge-a is refused and untouched.
    p.refused_on_node(
        "edge-a",
        &["--stage", "prepare"],
        &["stale", "agent file docker-compose.yml", "plan again"],
    );
}

#[test]
fn an_approver_the_policy_does_not_list_is_told_the_approval_does_not_count() {
    let p = Planned::new();
    let outsider = p.lab.keygen("outsider");
    p.lab.allow(&[
        ("planner@test", "namespaces=\"homelab-plan\"", &p.planner),
        ("operator@test", "", &p.operator),
        ("outsider@test", "", &outsider),
    ]);
    let out = p.approve(&outsider);
    assert!(
        out.stderr.contains("warning: outsider@test may not approve alpha, edge-a, edge-b per inventory/policy.yaml"),
        "{}",
        out.stderr
    );
    p.refused(&["needs 1 approval from distinct keys", "it has 0", "approvals by `outsider@test`"]);
}

/// Raw terminal escapes and raw HTML from a plan never reach the reviewer: `show` and
/// `approve` print control characters as `\x1b`-style escapes, Markdown HTML-escapes text and
/// fences content longer than any backtick run (issue 8, finding 7).
#[test]
fn terminal_escapes_and_html_in_a_plan_are_shown_escaped() {
    let p = Planned::new();
    let hostile = "\u{1b}]0;owned\u{7}\u{1b}[2J\rok </details><!-- ```` <img src=x>";
    let id =
        p.resigned(|body| {
            body.lines()
                .map(|l| {
                    if l.starts_with("reason ") {
                        format!("reason {hostile}")
                    } else {
                        l.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
                + "\n"
        });
    let plan = format!("repo/plans/{id}.plan");
    let text = p.lab.homelab(&["show", &plan]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert!(text.stdout.contains("\\x1b]0;owned\\x07\\x1b[2J\\x0dok"), "{}", text.stdout);
    for c in ['\u{1b}', '\u{7}', '\r'] {
        assert!(!text.stdout.contains(c), "raw {c:?} in text output:\n{}", text.stdout);
    }
    let md = p.lab.homelab(&["show", &plan, "--format", "markdown"]);
    assert_eq!(md.code, 0, "{}", md.stderr);
    assert!(!md.stdout.contains("</details><!--"), "{}", md.stdout);
    assert!(!md.stdout.contains("<img"), "{}", md.stdout);
    assert!(md.stdout.contains("&lt;/details&gt;&lt;!--"), "{}", md.stdout);
    assert_eq!(md.stdout.matches("</details>").count(), md.stdout.matches("<details>").count());
    let json = p.lab.homelab(&["show", &plan, "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let reasons: Vec<&str> = doc["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|n| n["changes"].as_array().unwrap())
        .map(|c| c["reason"].as_str().unwrap())
        .collect();
    assert!(reasons.contains(&hostile), "JSON carries the text as JSON: {reasons:?}");
    let approve = p.lab.approve(&id, &p.operator);
    assert!(!approve.stdout.contains('\u{1b}'), "{}", approve.stdout);
}

/// The `change` lines of a plan body: (line index, instance, node).
fn change_lines(body: &str) -> Vec<(usize, String, String)> {
    body.lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let inst = l.strip_prefix("change ")?.split(' ').nth(1)?.to_owned();
            let node = inst.split('@').nth(1)?.to_owned();
            Some((i, inst, node))
        })
        .collect()
}

/// A body with `line` inserted after line `after` (0-based).
fn insert_line(body: &str, after: usize, line: &str) -> String {
    let mut lines: Vec<String> = body.lines().map(str::to_owned).collect();
    lines.insert(after + 1, line.to_owned());
    lines.join("\n") + "\n"
}

/// Bounded work (issue 8, finding 9): an `after` that points at a later change of the same
/// node, or a circle of waits, would hold the node lock forever; a service changed twice in
/// one node would have its second change ignored. Each is refused when the plan is read.
#[test]
fn waits_that_never_end_and_a_service_changed_twice_are_refused() {
    let p = Planned::new();
    let body = p.body();
    let changes = change_lines(&body);
    let (first, second) = changes
        .iter()
        .enumerate()
        .find_map(|(i, a)| changes[i + 1..].iter().find(|b| b.2 == a.2).map(|b| (a, b)))
        .expect("a node with two changes in the fixture");
    // `after` goes right after the change's `reason` line.
    let id = p.resigned(|b| insert_line(b, first.0 + 1, &format!("after {}", second.1)));
    let out = p.lab.homelab(&["show", &format!("repo/plans/{id}.plan")]);
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("comes after it on the same node"), "{}", out.stderr);
    p.refused_id(&id, &["comes after it on the same node"]);

    // A circle across two nodes.
    let other = changes.iter().find(|c| c.2 != first.2).expect("two nodes with changes");
    let id = p.resigned(|b| {
        let b = insert_line(b, other.0 + 1, &format!("after {}", first.1));
        // `other` may sit before or after `first`: find `first` again in the edited body.
        let at = change_lines(&b).into_iter().find(|c| c.1 == first.1).unwrap().0;
        insert_line(&b, at + 1, &format!("after {}", other.1))
    });
    p.refused_id(&id, &["circle of `after` waits"]);

    // The same service twice on one node.
    let id = p.resigned(|b| {
        let lines: Vec<&str> = b.lines().collect();
        let end = (first.0 + 1..lines.len())
            .find(|&i| lines[i].starts_with("change ") || lines[i].starts_with("node "))
            .unwrap_or(lines.len());
        let block = lines[first.0..end].join("\n");
        insert_line(b, end - 1, &block)
    });
    p.refused_id(&id, &["is changed twice"]);
}

/// `.approved` is bounded like the plan: a huge file or thousands of blocks are refused at
/// once; a block copied several times is verified once and still counts once.
#[test]
fn an_approvals_file_is_bounded_and_duplicates_count_once() {
    let p = Planned::new();
    p.lab.policy("24h", 1, &["operator@test"]);
    let sig = p.operator.ssh_sign("homelab-approve", p.body().as_bytes());
    p.write_approved(&sig.repeat(1000));
    p.refused(&["holds", "more than 262144"]);
    p.write_approved(&sig.repeat(100));
    p.refused(&["100 signature blocks, more than 64"]);
    p.write_approved(&sig.repeat(3));
    p.passes();
}

/// Smaller findings of issue 8 (10): nothing unsigned may follow a plan's signature; a bad
/// version line is quoted, not echoed whole; a malformed allowed_signers refuses (3).
#[test]
fn unsigned_text_after_the_signature_a_huge_version_line_and_a_broken_signers_file_refuse() {
    let p = Planned::new();
    p.approve(&p.operator);
    let path = format!("repo/plans/{}.plan", p.id);
    let original = p.lab.read(&path);
    p.lab.write(&path, format!("{original}# approved by everyone, trust me\n"));
    p.refused(&["unexpected text after the signature"]);
    p.lab.write(
        &path,
        original.replacen("-----BEGIN SSH SIGNATURE-----\n", "-----BEGIN SSH SIGNATURE----- \n", 1),
    );
    p.refused(&["expected a signature block"]);
    p.lab.write(&path, &original);
    p.passes();

    let huge = format!("homelab-plan {}\n", "9".repeat(10 * 1024 * 1024));
    p.lab.write("repo/plans/0000000000000000.plan", &huge);
    let out = p.lab.homelab(&["show", "repo/plans/0000000000000000.plan"]);
    assert_eq!(out.code, 3, "{}", out.stderr.len());
    assert!(out.stderr.len() < 1000, "an error of {} bytes", out.stderr.len());

    let signers = p.lab.read("repo/inventory/allowed_signers");
    p.lab.write(
        "repo/inventory/allowed_signers",
        format!("{signers}broken@test ssh-ed25519 AAAA-not-base64\n"),
    );
    p.refused(&["cannot check signatures", "allowed_signers"]);
}

/// A repository committed to Git with a policy that approves only committed plans, and a plan
/// made from that commit.
fn committed() -> Planned {
    Planned::with(|lab| {
        lab.write(
            "repo/inventory/policy.yaml",
            "plan_ttl: 24h\napprovals:\n  default:\n    required: 1\n    approvers: [operator@test]\n",
        );
        lab.git_commit();
    })
}

/// `body` with the content of the first `artifact <name>` block edited by `edit` and its
/// `artifact` line's sha256 fixed to match: a plan that decodes, by a planner key that is
/// allowed, whose content is not what its commit renders.
fn with_artifact_edited(body: &str, name: &str, edit: impl Fn(&str) -> String) -> String {
    let lines: Vec<&str> = body.split_inclusive('\n').collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with(&format!("artifact {name} ")))
        .unwrap_or_else(|| panic!("no artifact {name} in the plan"));
    let end = start + lines[start..].iter().position(|l| *l == "end\n").unwrap();
    let content: String =
        lines[start + 1..end].iter().map(|l| l.strip_prefix('|').unwrap()).collect();
    let edited = edit(&content);
    let header: Vec<&str> = lines[start].trim_end().split(' ').collect();
    let mut out: String = lines[..start].concat();
    out.push_str(&format!(
        "artifact {} {} {}\n",
        header[1],
        header[2],
        crate::support::sha256_hex(edited.as_bytes())
    ));
    for l in edited.split_inclusive('\n') {
        out.push('|');
        out.push_str(l);
    }
    out.push_str("end\n");
    out.push_str(&lines[end + 1..].concat());
    out
}

/// What the approver sees is what the node gets (issue 8, findings 1 and 2): a plan whose
/// compose file differs by one line from its commit's render is refused by `approve` (naming
/// the file), `show` says why, and `apply` refuses it; the honest plan passes all three.
#[test]
fn a_plan_whose_artifacts_differ_from_its_commit_is_refused_everywhere() {
    let p = committed();
    let honest = p.lab.homelab(&["show", &format!("repo/plans/{}.plan", p.id)]);
    assert_eq!(honest.code, 0, "{}{}", honest.stdout, honest.stderr);
    assert!(
        honest.stdout.contains("verified: every artifact is the render of commit"),
        "{}",
        honest.stdout
    );

    let id = p.resigned(|body| {
        with_artifact_edited(body, "docker-compose.yml", |c| {
            c.replacen(
                "restart: unless-stopped\n",
                "restart: unless-stopped\n    privileged: true\n",
                1,
            )
        })
    });
    let plan = format!("repo/plans/{id}.plan");
    let before = p.lab.snapshot();
    let approve = p.lab.approve(&id, &p.operator);
    p.lab.snapshot().assert_same(&before, "a refused approval");
    assert_eq!(approve.code, 3, "{}{}", approve.stdout, approve.stderr);
    assert!(
        approve.stderr.contains("docker-compose.yml differs from the render of commit"),
        "{}",
        approve.stderr
    );
    assert!(approve.stderr.contains("line 6"), "{}", approve.stderr);
    let show = p.lab.homelab(&["show", &plan]);
    assert_eq!(show.code, 3, "{}", show.stderr);
    assert!(show.stdout.contains("REFUSED"), "{}", show.stdout);
    assert!(show.stderr.contains("differs from the render of commit"), "{}", show.stderr);
    // resigned() wrote an approval made by ssh-keygen: apply still refuses.
    p.refused_id(&id, &["docker-compose.yml differs from the render of commit"]);

    // What the node checks the resolved configuration against, widened to the whole disk.
    let id = p.resigned(|body| {
        let line = body.lines().find(|l| l.starts_with("exposure ")).unwrap();
        body.replacen(&format!("\n{line}\n"), &format!("\n{line}\nhost-path /\n"), 1)
    });
    p.refused_id(&id, &["required variables, exposure, host paths or networks"]);
    // A Docker network the commit's compose files do not name, slipped into a change.
    let id = p.resigned(|body| {
        let line = body.lines().find(|l| l.starts_with("healthcheck ")).unwrap();
        body.replacen(&format!("\n{line}\n"), &format!("\n{line}\nnetwork evil\n"), 1)
    });
    p.refused_id(&id, &["required variables, exposure, host paths or networks"]);

    // A service no commit places on the node.
    let id = p.resigned(|body| body.replace("web@alpha", "evil@alpha"));
    p.refused_id(&id, &["the commit does not place it on this node"]);

    // A commit the repository does not have.
    let id = p.resigned(|body| {
        let line = body.lines().find(|l| l.starts_with("commit ")).unwrap();
        body.replacen(line, &format!("commit {} clean", "ab".repeat(20)), 1)
    });
    p.refused_id(&id, &["is not in the repository", "git fetch"]);

    let approve = p.approve(&p.operator);
    assert!(approve.stderr.contains("approved by operator@test"), "{}", approve.stderr);
    p.passes();
}

/// The planner shown is the signer (issue 8, finding 3): a plan that names another planner
/// than the key that signed it is refused.
#[test]
fn a_plan_naming_another_planner_than_its_signer_is_refused() {
    let p = Planned::new();
    let id = p.resigned(|body| {
        let line = body.lines().find(|l| l.starts_with("planner ")).unwrap();
        body.replacen(line, "planner owner@saturn SHA256:someone-else", 1)
    });
    p.refused_id(
        &id,
        &["claims it was made by `owner@saturn SHA256:someone-else`", "planner@test"],
    );
    let show = p.lab.homelab(&["show", &format!("repo/plans/{id}.plan")]);
    assert!(show.stdout.contains("NOT VALID"), "{}", show.stdout);
}

/// A plan made from uncommitted changes is approvable only where the policy says so.
#[test]
fn an_uncommitted_plan_is_refused_unless_the_policy_allows_it() {
    let p = committed();
    p.lab.write("repo/services/web/README.md", "edited, not committed\n");
    let id = p.lab.plan(&p.planner);
    let approve = p.lab.approve(&id, &p.operator);
    assert_eq!(approve.code, 3, "{}", approve.stderr);
    assert!(approve.stderr.contains("made from uncommitted changes"), "{}", approve.stderr);
    assert!(approve.stderr.contains("allow_uncommitted"), "{}", approve.stderr);
}

/// An "update" against a node that does not have the service passes for a small change; the
/// plan reader refuses an action the node's fingerprinted state does not allow (issue 8,
/// finding 1).
#[test]
fn an_update_of_a_service_the_node_does_not_have_is_refused() {
    let p = Planned::new();
    let id = p.resigned(|body| {
        let line = body.lines().find(|l| l.starts_with("change create ")).unwrap();
        body.replacen(line, &line.replacen("change create ", "change update ", 1), 1)
    });
    p.refused_id(&id, &["is planned as `update`", "it has no such service"]);
}

/// `body` with its `created` and `expires` lines set to these times.
fn with_times(
    body: &str,
    created: std::time::SystemTime,
    expires: std::time::SystemTime,
) -> String {
    let time = |t| humantime::format_rfc3339_seconds(t).to_string();
    body.lines()
        .map(|l| {
            if l.starts_with("created ") {
                format!("created {}\n", time(created))
            } else if l.starts_with("expires ") {
                format!("expires {}\n", time(expires))
            } else {
                format!("{l}\n")
            }
        })
        .collect()
}

/// Time is the policy's, not the planner's (issue 19, item 3): a plan that lives longer than
/// `plan_ttl` (24h here) or says it was made in the future is refused by `approve`, `show` and
/// `apply`, changing nothing; a plan made a little ahead of the checker's clock (within the
/// skew) and living exactly `plan_ttl` passes.
#[test]
fn a_plan_living_longer_than_plan_ttl_or_created_in_the_future_is_refused() {
    use std::time::{Duration, SystemTime};
    let p = Planned::new();
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    let refused_everywhere = |id: &str, why: &[&str]| {
        let before = p.lab.snapshot();
        let approve = p.lab.approve(id, &p.operator);
        p.lab.snapshot().assert_same(&before, "a refused approval");
        assert_eq!(approve.code, 3, "{}{}", approve.stdout, approve.stderr);
        let show = p.lab.homelab(&["show", &format!("repo/plans/{id}.plan")]);
        assert_eq!(show.code, 3, "{}{}", show.stdout, show.stderr);
        assert!(show.stdout.contains("REFUSED"), "{}", show.stdout);
        for w in why {
            assert!(approve.stderr.contains(w), "expected `{w}` in:\n{}", approve.stderr);
            assert!(show.stderr.contains(w), "expected `{w}` in:\n{}", show.stderr);
        }
        // resigned() wrote an approval made by ssh-keygen: apply still refuses.
        p.refused_id(id, why);
    };

    // `expires 2099-12-31T23:59:59Z` with `plan_ttl: 24h`.
    let far = humantime::parse_rfc3339("2099-12-31T23:59:59Z").unwrap();
    let id = p.resigned(|b| with_times(b, now, far));
    refused_everywhere(&id, &["is valid for", "longer than the `plan_ttl` of 1day"]);

    // 24 hours and one second.
    let id = p.resigned(|b| with_times(b, now, now + 24 * hour + Duration::from_secs(1)));
    refused_everywhere(&id, &["longer than the `plan_ttl` of 1day"]);

    // `created` in 2098, living one hour.
    let later = humantime::parse_rfc3339("2098-06-01T00:00:00Z").unwrap();
    let id = p.resigned(|b| with_times(b, later, later + hour));
    refused_everywhere(&id, &["created at 2098-06-01T00:00:00Z", "later than now", "5m"]);

    // Ten minutes ahead is more than the skew.
    let ahead = now + Duration::from_secs(600);
    let id = p.resigned(|b| with_times(b, ahead, ahead + hour));
    refused_everywhere(&id, &["later than now"]);

    // Two minutes ahead (a planner's clock a little fast), living exactly `plan_ttl`: passes.
    let ahead = now + Duration::from_secs(120);
    let id = p.resigned(|b| with_times(b, ahead, ahead + 24 * hour));
    let show = p.lab.homelab(&["show", &format!("repo/plans/{id}.plan")]);
    assert_eq!(show.code, 0, "{}{}", show.stdout, show.stderr);
    let approve = p.lab.approve(&id, &p.operator);
    assert_eq!(approve.code, 0, "{}{}", approve.stdout, approve.stderr);
    p.passes_id(&id);
}

/// `git <args>` in the lab's repository; its output.
fn git(lab: &Lab, args: &[&str]) -> String {
    let mut cmd = std::process::Command::new("git");
    cmd.current_dir(lab.path("repo"))
        .args(["-c", "user.name=Test", "-c", "user.email=test@lab"])
        .args(args);
    lab.git_env(&mut cmd);
    let out = cmd.output().expect("cannot run `git`");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn git_commit_all(lab: &Lab, message: &str) {
    git(lab, &["add", "-A", "--", ".", ":(exclude)plans"]);
    git(lab, &["commit", "-q", "-m", message]);
}

/// Plans come from the reviewed branch (issue 19, item 2): an honest plan of a side-branch
/// commit that adds `privileged: true` renders exactly what its commit says, and is still
/// refused by `show`, `approve` and `apply`, saying the commit is not on `main`; merged into
/// `main`, the same plan passes. A policy naming a branch the repository lacks says so.
#[test]
fn a_plan_of_a_commit_not_on_the_reviewed_branch_is_refused() {
    let p = committed();
    git(&p.lab, &["checkout", "-q", "-b", "side"]);
    let compose = "repo/services/web/docker-compose.yml";
    let text = p.lab.read(compose);
    p.lab.write(
        compose,
        text.replacen(
            "restart: unless-stopped\n",
            "restart: unless-stopped\n    privileged: true\n",
            1,
        ),
    );
    git_commit_all(&p.lab, "web: privileged");
    let side = git(&p.lab, &["rev-parse", "HEAD"]);
    let id = p.lab.plan(&p.planner);
    assert!(p.lab.plan_file(&id).contains(&format!("commit {side} clean")));
    assert!(p.lab.plan_file(&id).contains("privileged: true"));
    git(&p.lab, &["checkout", "-q", "main"]);

    let why = [
        &format!("the plan's commit `{side}` is not on the reviewed branch `main`")[..],
        "reviewed_branches",
    ];
    let before = p.lab.snapshot();
    let approve = p.lab.approve(&id, &p.operator);
    p.lab.snapshot().assert_same(&before, "a refused approval");
    assert_eq!(approve.code, 3, "{}{}", approve.stdout, approve.stderr);
    let show = p.lab.homelab(&["show", &format!("repo/plans/{id}.plan")]);
    assert_eq!(show.code, 3, "{}{}", show.stdout, show.stderr);
    assert!(show.stdout.contains("REFUSED"), "{}", show.stdout);
    assert!(!show.stdout.contains("verified: every artifact"), "{}", show.stdout);
    for w in why {
        assert!(approve.stderr.contains(w), "expected `{w}` in:\n{}", approve.stderr);
        assert!(show.stderr.contains(w), "expected `{w}` in:\n{}", show.stderr);
    }
    // An approval made with ssh-keygen does not get it past apply either.
    let body = split_plan(&p.lab.plan_file(&id)).0.to_owned();
    p.lab.write(
        &format!("repo/plans/{id}.approved"),
        p.operator.ssh_sign("homelab-approve", body.as_bytes()),
    );
    p.refused_id(&id, &why);

    // A policy naming a branch this repository does not have.
    let policy = p.lab.read("repo/inventory/policy.yaml");
    p.lab.write("repo/inventory/policy.yaml", format!("{policy}reviewed_branches: [prod]\n"));
    git_commit_all(&p.lab, "policy: prod");
    p.refused_id(&id, &["branch `prod` is not in the repository", "reviewed_branches"]);
    p.lab.write("repo/inventory/policy.yaml", format!("{policy}reviewed_branches: [prod, main]\n"));
    git_commit_all(&p.lab, "policy: prod or main");
    git(&p.lab, &["branch", "prod"]);

    // Merged into `main`, the side commit is reviewed: the plan passes.
    git(&p.lab, &["merge", "-q", "--no-edit", "side"]);
    let show = p.lab.homelab(&["show", &format!("repo/plans/{id}.plan")]);
    assert_eq!(show.code, 0, "{}{}", show.stdout, show.stderr);
    p.passes_id(&id);
}

/// Errors quote input cut to a few hundred characters (issue 19, item 6): a plan whose
/// `summary` line is 400 KB, an allowed_signers option word of 400 KB, and a policy principal
/// of 400 KB (listed in allowed_signers too, so the policy is valid) each give an error of a
/// few hundred bytes, from `show`, `apply` and `validate`.
#[test]
fn errors_quote_huge_input_cut_short() {
    let p = Planned::new();
    let huge = "x".repeat(400 * 1024);
    let bounded = |out: &Output, what: &str, said: &str| {
        assert!(out.code != 0, "{what}: {}", out.stdout);
        assert!(out.stderr.contains(said), "{what}: expected `{said}` in:\n{:.2000}", out.stderr);
        assert!(out.stderr.len() < 4000, "{what}: an error of {} bytes", out.stderr.len());
        assert!(out.stdout.len() < 100_000, "{what}: {} bytes of output", out.stdout.len());
    };

    let id = p.resigned(|body| {
        let line = body.lines().find(|l| l.starts_with("summary ")).unwrap();
        body.replacen(line, &format!("summary {huge}"), 1)
    });
    let show = p.lab.homelab(&["show", &format!("repo/plans/{id}.plan")]);
    bounded(&show, "show", "the summary says `xxx");
    let apply = p.lab.apply(&id);
    bounded(&apply, "apply", "the summary says `xxx");

    let signers = p.lab.read("repo/inventory/allowed_signers");
    let line = format!("someone@test {huge}=\"x\" {}\n", p.operator.public);
    p.lab.write("repo/inventory/allowed_signers", format!("{signers}{line}"));
    let apply = p.lab.apply(&p.id);
    bounded(&apply, "apply", "unsupported option `xxx");

    // An approval by a key the policy does not count: the refusal lists who would count.
    let principal = format!("{huge}@test");
    let other = p.lab.keygen("other");
    p.lab.write(
        "repo/inventory/allowed_signers",
        format!("{signers}{principal} {}\nother@test {}\n", p.operator.public, other.public),
    );
    p.lab.write(&p.approved_rel(), other.ssh_sign("homelab-approve", p.body().as_bytes()));
    let policy = p.lab.read("repo/inventory/policy.yaml");
    p.lab.write(
        "repo/inventory/policy.yaml",
        policy.replace("approvers: [operator@test]", &format!("approvers: [{principal}]")),
    );
    let apply = p.lab.apply(&p.id);
    bounded(&apply, "apply", "from distinct keys of `xxx");
    let policy = p.lab.read("repo/inventory/policy.yaml");
    p.lab.write("repo/inventory/policy.yaml", policy.replace(&principal, &format!("{huge}@else")));
    let validate = p.lab.homelab(&["validate"]);
    bounded(&validate, "validate", "expected a principal of inventory/allowed_signers, found `xxx");
}

/// `body` without the change of `instance` (its `change` line up to the next `change` or
/// `node` line), its `summary` line recounted so the plan reads.
fn without_change(body: &str, instance: &str) -> String {
    let mut out = Vec::new();
    let mut skipping = false;
    for l in body.split_inclusive('\n') {
        if l.starts_with("change ") || l.starts_with("node ") {
            skipping = l.starts_with("change ") && l.trim_end().ends_with(&format!(" {instance}"));
        }
        if !skipping {
            out.push(l);
        }
    }
    with_summary(&out.concat())
}

/// `body` with its `summary` line recounted from its `change` lines.
fn with_summary(body: &str) -> String {
    let count = |a: &str| body.lines().filter(|l| l.starts_with(&format!("change {a} "))).count();
    let summary = format!(
        "summary {} create, {} update, {} replace, {} delete, {} no-op",
        count("create"),
        count("update"),
        count("replace"),
        count("delete"),
        count("no-op")
    );
    let old = body.lines().find(|l| l.starts_with("summary ")).unwrap();
    body.replacen(old, &summary, 1)
}

/// `body` with the line starting `from` replaced by `to` (the first such line).
fn with_line(body: &str, from: &str, to: &str) -> String {
    let line = body.lines().find(|l| l.starts_with(from)).unwrap_or_else(|| panic!("no `{from}`"));
    body.replacen(line, to, 1)
}

/// A plan is the whole change (issue 19, item 1): `show`, `approve` and `apply` recompute each
/// node's change set from the commit's render and the node's state bound in the plan, and
/// refuse a plan re-signed with a valid planner key that leaves out a dependency's `create`
/// (broker@edge-a, which app@edge-b waits for), leaves out a `delete`, rewrites a delete's
/// reason to "deployed artifacts match", relabels an `update` as `replace`, or adds a change
/// the render does not call for. Honest plans pass.
#[test]
fn a_plan_that_is_not_the_whole_change_is_refused() {
    let p = committed();
    let refused_everywhere = |id: &str, why: &[&str]| {
        let show = p.lab.homelab(&["show", &format!("repo/plans/{id}.plan")]);
        assert_eq!(show.code, 3, "{}{}", show.stdout, show.stderr);
        assert!(show.stdout.contains("REFUSED"), "{}{}", show.stdout, show.stderr);
        let before = p.lab.snapshot();
        let approve = p.lab.approve(id, &p.operator);
        p.lab.snapshot().assert_same(&before, "a refused approval");
        assert_eq!(approve.code, 3, "{}{}", approve.stdout, approve.stderr);
        for w in why {
            assert!(show.stderr.contains(w), "expected `{w}` in:\n{}", show.stderr);
            assert!(approve.stderr.contains(w), "expected `{w}` in:\n{}", approve.stderr);
        }
        // resigned() wrote an approval made by ssh-keygen: apply still refuses.
        p.refused_id(id, why);
    };
    assert!(p.body().contains("after broker@edge-a"), "app@edge-b waits for the broker");
    let id = p.resigned(|b| without_change(b, "broker@edge-a"));
    refused_everywhere(
        &id,
        &[
            "node `edge-a`: the plan lacks `broker@edge-a`",
            "`create` (not deployed on the node yet)",
        ],
    );

    // Deployed as the commit renders, then: the broker's compose file changed, and a service
    // the commit does not place on alpha (the broker, copied there by hand) to delete.
    p.lab.deploy_all();
    let from = p.lab.path("rt/edge-a/state/services/broker");
    crate::support::copy_tree(&from, &p.lab.path("rt/alpha/state/services/broker"));
    let compose = p.lab.read("repo/services/broker/docker-compose.yml");
    let edited =
        compose.replacen("    environment:\n", "    environment:\n      BROKER_LOG: debug\n", 1);
    assert_ne!(compose, edited);
    p.lab.write("repo/services/broker/docker-compose.yml", edited);
    git_commit_all(&p.lab, "broker: debug");
    // And on alpha, web's compose file edited by hand and a file put beside it: an update
    // whose reason (changed files and drift) the review recomputes to the byte.
    let web = "rt/alpha/state/services/web";
    let deployed = p.lab.read(&format!("{web}/docker-compose.yml"));
    p.lab.write(&format!("{web}/docker-compose.yml"), format!("{deployed}# by hand\n"));
    p.lab.write(&format!("{web}/my notes.txt"), "notes\n");
    let honest = p.lab.plan(&p.planner);
    let body = split_plan(&p.lab.plan_file(&honest)).0.to_owned();
    assert!(body.contains("\nchange delete broker@alpha\n"), "{body}");
    assert!(body.contains("\nchange update broker@edge-a\n"), "{body}");
    assert!(
        body.contains("\nchange update web@alpha\nreason changed: docker-compose.yml; drift on the node: docker-compose.yml was edited on the node; my notes.txt is not homelab's\n"),
        "{body}"
    );
    let show = p.lab.homelab(&["show", &format!("repo/plans/{honest}.plan")]);
    assert_eq!(show.code, 0, "{}{}", show.stdout, show.stderr);
    let resign = |edit: &dyn Fn(&str) -> String| {
        let body = edit(&body);
        let sig = p.planner.ssh_sign("homelab-plan", body.as_bytes());
        let id = crate::support::id_of(body.as_bytes());
        p.lab.write(&format!("repo/plans/{id}.plan"), format!("{body}{sig}"));
        p.lab.write(
            &format!("repo/plans/{id}.approved"),
            p.operator.ssh_sign("homelab-approve", body.as_bytes()),
        );
        id
    };

    let id = resign(&|b| without_change(b, "broker@alpha"));
    refused_everywhere(&id, &["node `alpha`: the plan lacks `broker@alpha`", "`delete`"]);

    let id = resign(&|b| {
        let at = b.find("\nchange delete broker@alpha\n").unwrap() + 1;
        let (head, tail) = b.split_at(at);
        format!("{head}{}", with_line(tail, "reason ", "reason deployed artifacts match"))
    });
    refused_everywhere(
        &id,
        &["the plan has `delete broker@alpha` (deployed artifacts match)", "no longer desired"],
    );

    let id = resign(&|b| {
        with_summary(&b.replacen(
            "\nchange update broker@edge-a\n",
            "\nchange replace broker@edge-a\n",
            1,
        ))
    });
    refused_everywhere(
        &id,
        &["the plan has `replace broker@edge-a`", "call for `update` (the node's manifest is not"],
    );

    // One change more than the whole: a delete of a service the node does not hold, slipped
    // in beside the honest delete, with the same lines. A delete of nothing is caught by the
    // plan file's check against the node's bound state, before the review recomputes the set.
    let id = resign(&|b| {
        let at = b.find("\nchange delete broker@alpha\n").unwrap() + 1;
        let rest = &b[at + 1..];
        let next = |w: &str| rest.find(w).unwrap_or(rest.len());
        let len = next("\nchange ").min(next("\nnode ")) + 2;
        let block = b[at..at + len].replace("broker@alpha", "ghost@alpha");
        with_summary(&format!("{}{block}{}", &b[..at], &b[at..]))
    });
    // The plan file's own check against the node's bound state catches it, before the review.
    let why = ["`ghost@alpha` is planned as `delete`", "it has no such service", "edited"];
    let show = p.lab.homelab(&["show", &format!("repo/plans/{id}.plan")]);
    let approve = p.lab.approve(&id, &p.operator);
    for out in [&show, &approve] {
        assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
        why.iter().for_each(|w| assert!(out.stderr.contains(w), "`{w}` in:\n{}", out.stderr));
    }
    p.refused_id(&id, &why);

    let approve = p.lab.approve(&honest, &p.operator);
    assert_eq!(approve.code, 0, "{}{}", approve.stdout, approve.stderr);
    p.passes_id(&honest);
}

/// A plan that moves a node back to an older commit than the one it runs says "DOWNGRADE"
/// (issue 19, item 2): apply records the plan's commit in the controller's record; a later
/// plan of an older commit of `main` is shown by `show` (text and the Markdown of the PR
/// comment) and by `approve` as a downgrade of each node whose last apply ran a newer commit;
/// a plan of the commit the nodes run says nothing of the kind.
#[test]
fn a_plan_of_an_older_commit_than_the_nodes_run_says_downgrade() {
    let p = committed();
    let older = git(&p.lab, &["rev-parse", "HEAD"]);
    let compose = "repo/services/web/docker-compose.yml";
    let text = p.lab.read(compose);
    p.lab.write(compose, text.replacen("\"8080\"]", "\"8090\"]", 1));
    git_commit_all(&p.lab, "web: port 8090");
    let newer = git(&p.lab, &["rev-parse", "HEAD"]);
    let id = p.lab.plan(&p.planner);
    let body = split_plan(&p.lab.plan_file(&id)).0.to_owned();
    p.lab.write(
        &format!("repo/plans/{id}.approved"),
        p.operator.ssh_sign("homelab-approve", body.as_bytes()),
    );
    // The controller's record of an apply keeps the plan's commit.
    p.passes_id(&id);
    let record: serde_json::Value =
        serde_json::from_str(&p.lab.read(&format!("rt/state/applied/{id}.json"))).unwrap();
    assert_eq!(record["commit"], newer.as_str(), "{record}");
    // The nodes took it (a full apply's record; this test starts no containers).
    let mut done = record.clone();
    done["state"] = "completed".into();
    done["nodes"] = serde_json::json!({
        "alpha": { "outcome": "applied", "detail": "" },
        "edge-a": { "outcome": "applied", "detail": "" },
    });
    p.lab.write(&format!("rt/state/applied/{id}.json"), done.to_string());
    let show = |id: &str, format: &str| {
        p.lab.homelab(&[
            "show",
            &format!("repo/plans/{id}.plan"),
            "--format",
            format,
            "--controller-root",
            "rt",
        ])
    };

    // A plan of the older commit, made from a checkout of it.
    git(&p.lab, &["checkout", "-q", &older]);
    let back = p.lab.plan(&p.planner);
    git(&p.lab, &["checkout", "-q", "main"]);
    let said = format!(
        "DOWNGRADE: node `alpha` runs commit `{newer}` (plan `{id}`, applied {}); this plan's commit `{older}` is older",
        record["updated"].as_str().unwrap()
    );
    for format in ["text", "markdown", "json"] {
        let out = show(&back, format);
        assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
        assert!(out.stdout.contains(&said), "{format}: expected `{said}` in:\n{}", out.stdout);
        assert!(out.stdout.contains("node `edge-a` runs commit"), "{}", out.stdout);
        // edge-b's last apply is not recorded as applied: not judged.
        assert!(!out.stdout.contains("node `edge-b`"), "{}", out.stdout);
    }
    let approve = p.lab.approve(&back, &p.operator);
    assert_eq!(approve.code, 0, "{}{}", approve.stdout, approve.stderr);
    assert!(approve.stdout.contains(&said), "{}", approve.stdout);

    // A plan of the commit the nodes run is no downgrade.
    let again = p.lab.plan(&p.planner);
    let out = show(&again, "text");
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(!out.stdout.contains("DOWNGRADE"), "{}", out.stdout);
}

/// A dependency outside the run is met only where the plan shows it at the version the render
/// wants (issue 19, item 1): a deploy of EDGE-B alone skips app@edge-b, whose broker@edge-a the
/// plan creates in a run left for later; once the controller's record says an earlier run
/// finished EDGE-A, a resume of EDGE-B goes on; and a broker the plan shows as deployed and
/// matching (a no-op) is met without EDGE-A in the run. Preparing alone changes nothing live
/// and needs no dependency. (`--stage deploy` on a plan not yet prepared stops at "the stages
/// before `deploy` come first" once past the dependency check, so no container is started.)
#[test]
fn a_dependency_outside_the_run_is_met_only_where_the_plan_shows_it() {
    const SKIPPED: &str = "app: skipped: broker@edge-a is not in this run, and the plan does not show it at the version the render wants (apply its node and service too)";
    const PAST: &str = "app: at `pending`: `--stage deploy` runs that one stage, once the stages before it are done";
    let p = Planned::new();
    p.approve(&p.operator);
    let out = p.lab.apply_with(&p.id, &["--node", "edge-b", "--stage", "deploy"]);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert_ne!(out.code, 0, "{all}");
    assert!(all.contains(SKIPPED), "{all}");
    assert!(!all.contains(PAST), "{all}");

    // An earlier run finished EDGE-A (as the controller's record says): EDGE-B goes on.
    let record = format!("rt/state/applied/{}.json", p.id);
    let mut r: serde_json::Value = serde_json::from_str(&p.lab.read(&record)).unwrap();
    r["nodes"]["edge-a"] = serde_json::json!({ "outcome": "applied", "detail": "" });
    p.lab.write(&record, r.to_string());
    let out = p.lab.apply_with(&p.id, &["--resume", "--node", "edge-b", "--stage", "deploy"]);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains(PAST), "{all}");
    assert!(!all.contains(SKIPPED), "{all}");

    // Preparing alone needs no dependency.
    let out = p.lab.apply_with(&p.id, &["--resume", "--node", "edge-b", "--stage", "prepare"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);

    // Deployed and matching: the broker is a no-op of the plan, and met.
    let p = Planned::with(|lab| {
        lab.deploy_all();
        let compose = lab.read("repo/services/app/docker-compose.yml");
        lab.write("repo/services/app/docker-compose.yml", compose.replace("86400", "86401"));
    });
    let body = p.body();
    assert!(body.contains("\nchange no-op broker@edge-a\n"), "{body}");
    assert!(body.contains("\nchange update app@edge-b\n"), "{body}");
    p.approve(&p.operator);
    let out = p.lab.apply_with(&p.id, &["--node", "edge-b", "--stage", "deploy"]);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains(PAST), "{all}");
    assert!(!all.contains(SKIPPED), "{all}");
}

/// `--root` reaches the templates (issue 21): with `--transport local --root DIR`,
/// `{{ config_dir }}` renders as `DIR/<node>/config/<svc>`, where apply gives Compose its env
/// file, not as the topology's `/opt/homelab`; the plan records the root, so `show` (which takes
/// no `--root`) verifies the same bytes against the commit, and an apply under another root is
/// refused, changing nothing.
#[test]
fn root_reaches_the_templates_and_a_plan_applies_only_under_the_root_it_was_rendered_for() {
    let p = committed();
    let rt = std::path::absolute(p.lab.path("rt")).unwrap();
    let body = p.body();
    assert!(
        body.contains(&format!("\nnode edge-a reachable\nroot {}/edge-a\n", rt.display())),
        "{body}"
    );
    let env_file = format!("|    env_file: [\"{}/edge-a/config/broker/.env\"]\n", rt.display());
    assert!(body.contains(&env_file), "expected {env_file} in:\n{body}");
    assert!(!body.contains("/opt/homelab"), "{body}");

    // `render --root` writes the same bytes the plan holds.
    let out = p.lab.homelab(&["render", "--root", "rt", "--node", "edge-a", "--out", "out"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rendered = p.lab.read("out/edge-a/broker/docker-compose.yml");
    assert!(rendered.contains(&env_file[1..]), "{rendered}");

    let show = p.lab.homelab(&["show", &format!("repo/plans/{}.plan", p.id)]);
    assert_eq!(show.code, 0, "{}{}", show.stdout, show.stderr);
    assert!(
        show.stdout.contains("verified: every artifact is the render of commit"),
        "{}",
        show.stdout
    );
    p.approve(&p.operator);

    let before = p.lab.snapshot();
    let approved = p.approved_rel();
    let args = [
        "apply",
        &approved,
        "--transport",
        "local",
        "--root",
        "elsewhere",
        "--controller-root",
        "rt",
    ];
    let out = p.lab.homelab(&args);
    p.lab.snapshot().assert_same(&before, "an apply under another root");
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("node `alpha`: the plan was rendered for the runtime root `<lab>/rt/alpha`, and this apply would write to `<lab>/elsewhere/alpha`"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("nothing was changed"), "{}", out.stderr);
    p.passes();

    // A plan made without `--root` names the topology's folders: not applied under `rt/`.
    let args = ["plan", "--transport", "local", "--controller-root", "rt", "--key"];
    let out = p.lab.homelab(&[&args[..], &[p.planner.arg()]].concat());
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let id = out.stdout.lines().next().unwrap().strip_prefix("plan ").unwrap().to_owned();
    assert!(!p.lab.plan_file(&id).contains("\nroot "), "no root line without --root");
    let approve = p.lab.approve(&id, &p.operator);
    assert_eq!(approve.code, 0, "{}", approve.stderr);
    let before = p.lab.snapshot();
    let out = p.lab.apply(&id);
    p.lab.snapshot().assert_same(&before, "an apply under another root");
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("node `alpha`: the plan was rendered for the runtime root of the topology (it was planned without `--root`), and this apply would write to `<lab>/rt/alpha`"),
        "{}",
        out.stderr
    );
}

/// `required: true` holds for a variable that is not secret (issue 21): one the compose file
/// interpolates with no default, which the node's env file does not set, refuses at validate,
/// naming service.yaml, the line of its entry and the field, before Compose would run the
/// service with an empty string. The plan carries it (reviewed, signed) as `variables`.
#[test]
fn a_required_variable_the_node_does_not_set_refuses_at_validate_naming_its_entry() {
    let p = Planned::with(|lab| {
        let compose = lab.read("repo/services/broker/docker-compose.yml");
        lab.write(
            "repo/services/broker/docker-compose.yml",
            compose.replace("BROKER_USER: broker\n", "BROKER_USER: broker\n      BROKER_TAG: ${BROKER_TAG}\n      BROKER_MODE: ${BROKER_MODE:-fast}\n      BROKER_ZONE: ${BROKER_ZONE}\n      BROKER_SITE: ${BROKER_SITE}\n"),
        );
        let contract = lab.read("repo/services/broker/service.yaml");
        lab.write(
            "repo/services/broker/service.yaml",
            contract.replace(
                "    - name: BROKER_PASSWORD\n",
                "    - name: BROKER_TAG\n      secret: false\n    - name: BROKER_MODE\n      secret: false\n    - name: BROKER_ZONE\n      secret: false\n    - name: BROKER_SITE\n      secret: false\n    - name: BROKER_PASSWORD\n",
            ),
        );
        let example = lab.read("repo/services/broker/env.example");
        lab.write(
            "repo/services/broker/env.example",
            format!("{example}BROKER_TAG=v1\nBROKER_MODE=\nBROKER_ZONE=\nBROKER_SITE=\n"),
        );
        // The secret is there (after `export`, as Compose reads it too); the variable is
        // set, but empty, and so is one in quotes, as Compose reads it (`""` passed as set);
        // one after `export` is set.
        lab.write(
            "rt/edge-a/config/broker/.env",
            "export BROKER_PASSWORD=kept\nBROKER_TAG=\nBROKER_ZONE=\"\"\nexport BROKER_SITE=west\n",
        );
    });
    let contract = p.lab.read("repo/services/broker/service.yaml");
    let line = contract.lines().position(|l| l == "    - name: BROKER_TAG").unwrap() + 1;
    // Only the one with no default is required of the node.
    let site = contract.lines().position(|l| l == "    - name: BROKER_SITE").unwrap() + 1;
    let zone = contract.lines().position(|l| l == "    - name: BROKER_ZONE").unwrap() + 1;
    assert!(
        p.body().contains(&format!(
            "\nvariables BROKER_TAG:{line} BROKER_ZONE:{zone} BROKER_SITE:{site}\n"
        )),
        "{}",
        p.body()
    );
    p.approve(&p.operator);
    let out = p.lab.apply_with(&p.id, &["--node", "edge-a", "--stage", "prepare"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let out = p.lab.apply_with(&p.id, &["--node", "edge-a", "--resume", "--stage", "validate"]);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert_eq!(out.code, 1, "{all}");
    // Both, each naming its entry: what is shown of a failed step is its end, and the fix
    // comes once, before them.
    assert!(
        all.contains(&format!("services/broker/service.yaml:{line}: `runtime.env_vars`: `BROKER_TAG` is required, but")),
        "{all}"
    );
    assert!(all.contains("Compose would run the service with an empty string"), "{all}");
    assert!(
        all.contains(&format!("services/broker/service.yaml:{zone}: `runtime.env_vars`: `BROKER_ZONE` is required, but")),
        "{all}"
    );
    assert!(
        !all.contains("BROKER_MODE") && !all.contains("BROKER_SITE") && !all.contains("kept"),
        "{all}"
    );
}

/// `--stage X` runs X alone (issue 21): the answer to a first `--stage validate` said only "the
/// stages before `validate` come first"; it now names the call that comes first and that
/// every later `--stage` of the plan takes `--resume`.
#[test]
fn a_stage_ahead_of_the_journal_names_the_call_that_comes_first_and_resume() {
    let p = Planned::new();
    p.approve(&p.operator);
    let out = p.lab.apply_with(&p.id, &["--node", "edge-a", "--stage", "validate"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("broker: at `pending`: `--stage validate` runs that one stage, once the stages before it are done; run `--stage prepare` first, and every later `--stage` of this plan with `--resume`"),
        "{}",
        out.stdout
    );
}
