//! `homelab plan` and `homelab show` with the local transport: the runtime root `rt/` of a lab
//! stands in for every node, keys are made by the real `ssh-keygen`, and the plan file is checked
//! with `ssh-keygen -Y verify` as a reviewer would.

use std::fs;

use crate::support::{id_of, sha256_hex, split_plan, ssh_verify, Key, Lab, Output};

/// A lab whose only signer is `operator@test` (the base fixture's approver).
fn lab_with_operator() -> (Lab, Key) {
    let lab = Lab::new();
    let key = lab.keygen("operator");
    lab.allow(&[("operator@test", "", &key)]);
    (lab, key)
}

fn ok(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.code, code,
        "{what}: exit {}\nstdout:\n{}\nstderr:\n{}",
        out.code, out.stdout, out.stderr
    );
    assert!(!out.stderr.contains("panicked"), "{what}: {}", out.stderr);
}

/// Every artifact `homelab render` writes for the base fixture, as `(node, service, name, mode,
/// text)`.
fn rendered(lab: &Lab) -> Vec<(String, String, String, u32, String)> {
    use std::os::unix::fs::PermissionsExt;
    ok(&lab.homelab(&["render", "--root", "rt", "--out", "expected"]), 0, "render");
    let mut out = Vec::new();
    for node in fs::read_dir(lab.path("expected")).unwrap() {
        let node = node.unwrap();
        for svc in fs::read_dir(node.path()).unwrap() {
            let svc = svc.unwrap();
            for f in fs::read_dir(svc.path()).unwrap() {
                let f = f.unwrap();
                let name = f.file_name().into_string().unwrap();
                if name == "manifest.json" {
                    continue;
                }
                let mode = f.metadata().unwrap().permissions().mode() & 0o777;
                out.push((
                    node.file_name().into_string().unwrap(),
                    svc.file_name().into_string().unwrap(),
                    name,
                    mode,
                    fs::read_to_string(f.path()).unwrap(),
                ));
            }
        }
    }
    fs::remove_dir_all(lab.path("expected")).unwrap();
    out.sort();
    assert_eq!(out.len(), 13, "6 instances with compose and healthcheck, 1 override");
    out
}

#[test]
fn a_plan_of_an_empty_runtime_root_is_readable_signed_and_pending() {
    let (lab, key) = lab_with_operator();
    let out = lab.plan_with(Some(&key), &[]);
    ok(&out, 0, "plan");
    let id = out.stdout.lines().next().unwrap().strip_prefix("plan ").unwrap().to_owned();

    // Readable: every instance of every node, created.
    assert!(
        out.stdout.contains("summary  6 create, 0 update, 0 replace, 0 delete, 0 no-op"),
        "{}",
        out.stdout
    );
    for (node, inst) in [
        ("ALPHA", "agent@alpha"),
        ("ALPHA", "web@alpha"),
        ("EDGE-A", "broker@edge-a"),
        ("EDGE-B", "app@edge-b"),
    ] {
        assert!(out.stdout.contains(&format!("\n{node}\n")), "{node}:\n{}", out.stdout);
        assert!(
            out.stdout.contains(&format!("+ create   {inst}  not deployed on the node yet")),
            "{inst}:\n{}",
            out.stdout
        );
    }
    assert!(
        out.stdout.contains("after broker@edge-a"),
        "cross-node dependency shown:\n{}",
        out.stdout
    );
    assert!(out.stderr.contains(&format!("saved repo/plans/{id}.plan")), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!("homelab approve repo/plans/{id}.plan")),
        "{}",
        out.stderr
    );

    // The file: signed bytes, then one signature block; its id is the digest of the signed bytes.
    let text = lab.plan_file(&id);
    assert!(text.starts_with("homelab-plan 2\n"), "{text}");
    let (body, sig) = split_plan(&text);
    assert!(body.ends_with('\n'));
    assert_eq!(
        id_of(body.as_bytes()),
        id,
        "id = first 16 hex digits of SHA-256 of the signed bytes"
    );
    assert!(
        sig.starts_with("-----BEGIN SSH SIGNATURE-----\n")
            && sig.ends_with("-----END SSH SIGNATURE-----\n"),
        "{sig}"
    );
    assert_eq!(sig.matches("-----BEGIN SSH SIGNATURE-----").count(), 1);

    // The README's recipe: ssh-keygen verifies the planner's signature.
    lab.write("sig", sig);
    let signers = lab.path("repo/inventory/allowed_signers");
    let sig_path = lab.path("sig");
    let verify = |ns: &str| ssh_verify(&signers, "operator@test", ns, &sig_path, body.as_bytes());
    let ran = verify("homelab-plan");
    assert!(ran.ok, "ssh-keygen -Y verify refused the plan: {}{}", ran.stdout, ran.stderr);
    assert!(!verify("homelab-approve").ok, "a plan signature is no approval");
    let ran = ssh_verify(
        &signers,
        "operator@test",
        "homelab-plan",
        &sig_path,
        format!("{body} ").as_bytes(),
    );
    assert!(!ran.ok, "ssh-keygen accepted changed bytes");

    // What it records.
    assert!(body.contains(&format!("planner operator@test {}\n", key.fingerprint)), "{body}");
    assert!(body.contains("\ncommit none dirty\n"), "not a Git repository: {body}");
    assert!(body.contains("\ncreated ") && body.contains("\nexpires "));
    // The runtime root each node's artifacts were rendered for: `--root rt` gives `rt/<node>`.
    let rt = std::path::absolute(lab.path("rt")).unwrap();
    for node in ["alpha", "edge-a", "edge-b"] {
        let root = rt.join(node);
        assert!(
            body.contains(&format!(
                "\nnode {node} reachable\nroot {}\nfingerprint sha256:",
                root.display()
            )),
            "{node}: {body}"
        );
    }

    // Every line of every artifact is a readable `|` line, with its name, mode and digest.
    for (node, svc, name, mode, content) in rendered(&lab) {
        let mut block = format!("artifact {name} {mode:04o} {}\n", sha256_hex(content.as_bytes()));
        for line in content.lines() {
            block.push_str(&format!("|{line}\n"));
        }
        block.push_str("end\n");
        let change = format!("\nchange create {svc}@{node}\n");
        let at = body.find(&change).unwrap_or_else(|| panic!("no {change} in the plan"));
        let next = body[at + change.len()..]
            .find("\nchange ")
            .map_or(body.len(), |n| at + change.len() + n);
        assert!(
            body[at..next].contains(&block),
            "{svc}@{node} {name} is not written whole:\n{block}\nin\n{}",
            &body[at..next]
        );
    }
    assert!(!body.contains("\\n") && !body.contains("\\\""), "no escaped strings:\n{body}");

    // The pending action, on the controller.
    let action: serde_json::Value =
        serde_json::from_str(&lab.read(&format!("rt/actions/pending/{id}.json"))).unwrap();
    assert_eq!(action["id"], id.as_str());
    assert_eq!(action["state"], "pending");
    assert_eq!(action["plan"], format!("repo/plans/{id}.plan"));
    assert_eq!(action["summary"], "6 create, 0 update, 0 replace, 0 delete, 0 no-op");
}

#[test]
fn detailed_exitcode_is_2_with_changes_and_0_once_everything_is_deployed() {
    let (lab, key) = lab_with_operator();
    let out = lab.plan_with(Some(&key), &["--detailed-exitcode"]);
    ok(&out, 2, "plan with changes");

    lab.deploy_all();
    let out = lab.plan_with(Some(&key), &["--detailed-exitcode"]);
    ok(&out, 0, "plan of a deployed homelab");
    assert!(
        out.stdout.contains("summary  0 create, 0 update, 0 replace, 0 delete, 6 no-op"),
        "{}",
        out.stdout
    );
    assert_eq!(out.stdout.matches("no-op    ").count(), 6, "{}", out.stdout);
    assert!(
        out.stdout.contains("no-op    broker@edge-a  deployed artifacts match"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_hand_edit_on_a_node_is_drift_and_a_changed_compose_file_is_a_unified_diff() {
    let (lab, key) = lab_with_operator();
    lab.deploy_all();
    let deployed = lab.path("rt/alpha/state/services/web/docker-compose.yml");
    let mut text = fs::read_to_string(&deployed).unwrap();
    text.push_str("    privileged: true\n");
    fs::write(&deployed, text).unwrap();
    let compose = lab.read("repo/services/broker/docker-compose.yml");
    lab.write(
        "repo/services/broker/docker-compose.yml",
        compose.replace("command: [\"sleep\", \"86400\"]", "command: [\"sleep\", \"3600\"]"),
    );

    let out = lab.plan_with(Some(&key), &["--detailed-exitcode"]);
    ok(&out, 2, "plan");
    assert!(
        out.stdout.contains("summary  0 create, 2 update, 0 replace, 0 delete, 4 no-op"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("~ update   web@alpha  changed: docker-compose.yml; drift on the node: docker-compose.yml was edited on the node"),
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains("privileged"),
        "a hand edit is never copied into a plan:\n{}",
        out.stdout
    );
    let diff = "      --- a/docker-compose.yml\n      +++ b/docker-compose.yml\n      @@ -3,7 +3,7 @@\n           image: \"homelab-test/busybox:1\"\n           container_name: broker\n           restart: unless-stopped\n      -    command: [\"sleep\", \"86400\"]\n      +    command: [\"sleep\", \"3600\"]\n";
    assert!(
        out.stdout.contains("~ update   broker@edge-a  changed: docker-compose.yml\n"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains(diff), "{}", out.stdout);

    // The file carries what the node holds (bound by hash to its state), never a diff: the
    // diff above is computed by the reader.
    let id = out.stdout.lines().next().unwrap().strip_prefix("plan ").unwrap();
    let body = lab.plan_file(id);
    assert!(!body.contains("\ndiff "), "{body}");
    assert!(body.contains("\nprior docker-compose.yml 0644 "), "{body}");
    assert!(body.contains("\n|    command: [\"sleep\", \"86400\"]\n"), "{body}");
    assert!(body.contains("\n|    command: [\"sleep\", \"3600\"]\n"), "{body}");
    assert!(!body.contains("privileged"), "{body}");
    let shown = lab.homelab(&["show", &format!("repo/plans/{id}.plan")]);
    assert!(shown.stdout.contains(diff), "{}", shown.stdout);
    assert!(!shown.stdout.contains("privileged"), "{}", shown.stdout);
}

/// A file put by hand in a deployed service's folder under a name that is not UTF-8 (a
/// Latin-1 `café.txt`) is drift like any other hand-placed file: the plan names it (its bad byte
/// shown as U+FFFD) and saves. Before, the whole node was "unreachable: unexpected answer from
/// the node: a name is not UTF-8" and no plan could be saved without leaving the node out.
#[test]
fn a_file_whose_name_is_not_utf8_is_drift_not_an_unreadable_node() {
    use std::os::unix::ffi::OsStrExt;
    let (lab, key) = lab_with_operator();
    lab.deploy_all();
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9.txt");
    fs::write(lab.path("rt/alpha/state/services/web").join(name), "by hand\n").unwrap();
    let out = lab.plan_with(Some(&key), &["--detailed-exitcode"]);
    ok(&out, 2, "plan");
    assert!(!out.stdout.contains("unreachable"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("~ update   web@alpha  drift on the node: caf\u{fffd}.txt is not homelab's"),
        "{}",
        out.stdout
    );
}

#[test]
fn without_a_key_the_plan_is_printed_nothing_is_written_and_the_user_is_told_how_to_sign() {
    let (lab, _key) = lab_with_operator();
    let before = lab.snapshot();
    let out = lab.plan_with(None, &["--detailed-exitcode"]);
    lab.snapshot().assert_same(&before, "plan without a key");
    ok(&out, 2, "plan without a key");
    assert!(out.stdout.starts_with("plan (not saved)\n"), "{}", out.stdout);
    assert!(out.stdout.contains("+ create   broker@edge-a"), "{}", out.stdout);
    for needle in [
        "NOT saved",
        "ssh-keygen -t ed25519",
        "--key",
        "HOMELAB_SIGNING_KEY",
        "git config user.signingkey",
        "namespaces=\"homelab-plan,homelab-approve\"",
        "inventory/allowed_signers",
    ] {
        assert!(out.stderr.contains(needle), "{needle}:\n{}", out.stderr);
    }
    assert!(!lab.path("rt").exists(), "nothing under the runtime root");
    let plans: Vec<_> =
        fs::read_dir(lab.path("repo/plans")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(plans, ["README.md"], "nothing under plans/");
}

#[test]
fn the_key_comes_from_homelab_signing_key_or_gits_user_signingkey() {
    let (lab, key) = lab_with_operator();
    let base = ["plan", "--transport", "local", "--root", "rt", "--controller-root", "rt"];
    let out = lab.homelab_env(&base, &[("HOMELAB_SIGNING_KEY", key.arg())]);
    ok(&out, 0, "plan with HOMELAB_SIGNING_KEY");
    assert!(
        out.stdout.contains(&format!("planner  operator@test {}", key.fingerprint)),
        "{}",
        out.stdout
    );

    lab.write("home/.gitconfig", format!("[user]\n\tsigningkey = {}\n", key.arg()));
    let out = lab.homelab(&base);
    ok(&out, 0, "plan with Git's user.signingkey");
    assert!(
        out.stdout.contains(&format!("planner  operator@test {}", key.fingerprint)),
        "{}",
        out.stdout
    );
}

// ---------------------------------------------------------------------------------------------
// Secrets: what is in `<root>/config/` or in the environment never leaves.

const SECRET: &str = "SUPERSECRET-4711";

#[test]
fn a_secret_on_the_node_or_in_the_environment_appears_in_no_plan_action_approval_or_output() {
    let (lab, key) = lab_with_operator();
    lab.deploy_all();
    // The secret where it belongs, and where it does not: a hand edit of a deployed file and
    // a stray copy of the .env in the service folder.
    lab.write("rt/edge-a/config/broker/.env", format!("BROKER_PASSWORD={SECRET}\n"));
    lab.write("rt/edge-a/state/services/broker/.env", format!("BROKER_PASSWORD={SECRET}\n"));
    let deployed = "rt/edge-a/state/services/broker/docker-compose.yml";
    lab.write(deployed, format!("{}      BROKER_PASSWORD: {SECRET}\n", lab.read(deployed)));
    let planted = [
        "rt/edge-a/config/broker/.env",
        "rt/edge-a/state/services/broker/.env",
        "rt/edge-a/state/services/broker/docker-compose.yml",
    ];
    let env = [("BROKER_PASSWORD", SECRET), ("HOMELAB_TEST_TOKEN", SECRET), ("RUST_LOG", "trace")];

    let run = |args: &[&str]| {
        let out = lab.homelab_env(args, &env);
        assert!(!out.stdout.contains(SECRET), "{args:?} printed the secret:\n{}", out.stdout);
        assert!(!out.stderr.contains(SECRET), "{args:?} printed the secret:\n{}", out.stderr);
        out
    };
    let plan = [
        "plan",
        "--transport",
        "local",
        "--root",
        "rt",
        "--controller-root",
        "rt",
        "--key",
        key.arg(),
    ];
    let out = run(&plan);
    ok(&out, 0, "plan");
    assert!(out.stdout.contains("~ update   broker@edge-a  changed: docker-compose.yml; drift on the node: docker-compose.yml was edited on the node; .env is not homelab's\n"), "{}", out.stdout);
    let id = out.stdout.lines().next().unwrap().strip_prefix("plan ").unwrap().to_owned();
    let plan_path = format!("repo/plans/{id}.plan");
    for format in ["text", "markdown", "json"] {
        ok(&run(&["show", &plan_path, "--format", format]), 0, format);
    }
    ok(
        &run(&["approve", &plan_path, "--key", key.arg(), "--yes", "--controller-root", "rt"]),
        0,
        "approve",
    );
    let out = run(&[
        "apply",
        &format!("repo/plans/{id}.approved"),
        "--transport",
        "local",
        "--root",
        "rt",
        "--controller-root",
        "rt",
        "--stage",
        "prepare",
    ]);
    assert!(out.stderr.contains("pre-flight passed"), "{}{}", out.stdout, out.stderr);

    // Only the planted files hold it: no plan, pending action, approval or record.
    let holding: Vec<String> = lab
        .snapshot()
        .0
        .into_iter()
        .filter(|(_, (_, bytes))| bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()))
        .map(|(path, _)| path)
        .collect();
    assert_eq!(holding, planted, "the secret leaked into a file");
    assert!(lab.path(format!("repo/plans/{id}.approved").as_str()).is_file());
    assert!(lab.path(format!("rt/actions/pending/{id}.json").as_str()).is_file());
}

// ---------------------------------------------------------------------------------------------
// `homelab show`.

/// Replaces what changes from run to run (times, ids, commit, node and key fingerprints) by
/// names, with plain string replacement of the values the JSON form reports.
struct Redact(Vec<(String, &'static str)>);

impl Redact {
    fn from_json(json: &serde_json::Value, key: &Key) -> Redact {
        let s = |v: &serde_json::Value| v.as_str().unwrap().to_owned();
        let mut pairs = vec![
            (s(&json["id"]), "<id>"),
            (s(&json["created"]), "<created>"),
            (s(&json["expires"]), "<expires>"),
            (s(&json["commit"]), "<commit>"),
            (key.fingerprint.clone(), "<key-fingerprint>"),
        ];
        // allowed_signers holds the test's fresh key: its digest changes every run.
        for t in json["trust"].as_array().unwrap() {
            if t["file"] == "allowed_signers" {
                let sha = s(&t["sha256"]);
                pairs.push((sha.clone(), "<signers-sha256>"));
                pairs.push((sha[..12].to_owned(), "<signers-sha256>"));
            }
        }
        for n in json["nodes"].as_array().unwrap() {
            if let Some(fp) = n["fingerprint"].as_str() {
                pairs.push((fp.to_owned(), "<node-fingerprint>"));
            }
            if let Some(e) = n["engine"].as_str() {
                pairs.push((e.to_owned(), "<engine>"));
            }
            // An artifact that names its runtime root (`{{ config_dir }}`) names the lab's
            // temporary folder, so its digest differs from run to run.
            for c in n["changes"].as_array().unwrap() {
                for a in c["artifacts"].as_array().unwrap() {
                    pairs.push((s(&a["sha256"]), "<sha256>"));
                }
            }
        }
        Redact(pairs)
    }

    fn apply(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (from, to) in &self.0 {
            out = out.replace(from, to);
        }
        out
    }
}

/// One plan with every kind of line: create (web@alpha, removed from the node), update with a
/// diff (broker@edge-a), delete (legacy@alpha), no-op (agent@*), and an unreachable node
/// (edge-b's runtime root is a file), in a clean Git repository.
fn scenario() -> (Lab, Key, String, String) {
    let (lab, key) = lab_with_operator();
    lab.deploy_all();
    fs::remove_dir_all(lab.path("rt/alpha/state/services/web")).unwrap();
    crate::support::copy_tree(
        &lab.path("rt/alpha/state/services/agent"),
        &lab.path("rt/alpha/state/services/legacy"),
    );
    fs::remove_dir_all(lab.path("rt/edge-b")).unwrap();
    lab.write("rt/edge-b", "not a folder\n");
    let compose = lab.read("repo/services/broker/docker-compose.yml");
    lab.write(
        "repo/services/broker/docker-compose.yml",
        compose.replace(
            "    environment:\n      BROKER_USER: broker\n",
            "    environment:\n      BROKER_USER: broker\n      BROKER_LOG: debug\n",
        ),
    );
    let commit = lab.git_commit();
    // A node that could not be read is saved only when asked, and the status stays 1.
    let out = lab.plan_with(Some(&key), &["--allow-unreachable"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("could not read node `edge-b`"), "{}", out.stderr);
    let first = out.stdout.lines().next().unwrap_or_default();
    let id = first.strip_prefix("plan ").expect("a saved plan").to_owned();
    assert!(lab.path(&format!("repo/plans/{id}.plan")).is_file());
    (lab, key, id, commit)
}

#[test]
fn show_pins_text_markdown_and_json() {
    let (lab, key, id, commit) = scenario();
    let plan_path = format!("repo/plans/{id}.plan");
    let json = lab.homelab(&["show", &plan_path, "--format", "json"]);
    ok(&json, 0, "show json");
    let doc: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(doc["id"], id.as_str());
    assert_eq!(doc["commit"], commit.as_str());
    assert_eq!(doc["dirty"], false);
    let redact = Redact::from_json(&doc, &key);

    let text = lab.homelab(&["show", &plan_path]);
    ok(&text, 0, "show text");
    assert!(!text.stdout.contains('\u{1b}'), "no colour with NO_COLOR and no terminal");
    let markdown = lab.homelab(&["show", &plan_path, "--format", "markdown"]);
    ok(&markdown, 0, "show markdown");
    insta::assert_snapshot!("show-text", redact.apply(&text.stdout));
    insta::assert_snapshot!("show-markdown", redact.apply(&markdown.stdout));
    insta::assert_snapshot!("show-json", redact.apply(&json.stdout));
}

#[test]
fn show_markdown_of_a_large_plan_stays_under_forgejos_limit_and_folds_per_node() {
    let (lab, key) = lab_with_operator();
    lab.deploy_all();
    // agent runs on every node: 2 000 new lines each, about 80 000 characters of diff per node.
    let mut compose = lab.read("repo/services/agent/docker-compose.yml");
    for i in 0..2000 {
        compose
            .push_str(&format!("    # padding {i:04}: a long comment that makes the diff large\n"));
    }
    lab.write("repo/services/agent/docker-compose.yml", compose);
    let id = lab.plan(&key);
    let plan_path = format!("repo/plans/{id}.plan");
    let text = lab.homelab(&["show", &plan_path]);
    ok(&text, 0, "show text");
    assert!(text.stdout.contains("+    # padding 1999:"), "text shows every line");
    assert!(text.stdout.len() > 3 * 100_000, "{}", text.stdout.len());

    let md = lab.homelab(&["show", &plan_path, "--format", "markdown"]);
    ok(&md, 0, "show markdown");
    let chars = md.stdout.chars().count();
    assert!(chars < 60_000, "{chars} characters: Forgejo refuses comments over 65 535");
    for node in ["ALPHA", "EDGE-A", "EDGE-B"] {
        assert!(
            md.stdout.contains(&format!("<details><summary><b>{node}</b>: 1 change</summary>")),
            "{node}:\n{}",
            md.stdout
        );
    }
    assert_eq!(md.stdout.matches("<details>").count(), 3);
    assert_eq!(md.stdout.matches("</details>").count(), 3);
    assert!(md.stdout.contains("```mermaid\n"), "{}", md.stdout);
    assert!(md.stdout.contains(&format!("read them in `plans/{id}.plan`")), "{}", md.stdout);
}

#[test]
fn show_refuses_another_format_version_naming_both() {
    let (lab, key) = lab_with_operator();
    let id = lab.plan(&key);
    let text = lab.plan_file(&id);
    let v2 = text.replacen("homelab-plan 2\n", "homelab-plan 3\n", 1);
    let (body, _) = split_plan(&v2);
    let new_id = id_of(body.as_bytes());

    // Edited in place, and as a version 3 homelab would name it.
    for name in [id.clone(), new_id] {
        lab.write(&format!("repo/plans/{name}.plan"), &v2);
        let out = lab.homelab(&["show", &format!("repo/plans/{name}.plan")]);
        assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
        assert!(out.stdout.is_empty(), "{}", out.stdout);
        assert!(
            out.stderr.contains("format version 3; this homelab reads version 2"),
            "{name}: {}",
            out.stderr
        );
    }
}

/// Regression: a permission change on a node (`chmod 0644 healthcheck.sh`) used to be no-op.
#[test]
fn a_mode_change_on_a_node_is_drift() {
    let (lab, key) = lab_with_operator();
    lab.deploy_all();
    let script = lab.path("rt/edge-a/state/services/broker/healthcheck.sh");
    fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = lab.plan_with(Some(&key), &["--detailed-exitcode"]);
    ok(&out, 2, "plan");
    assert!(
        out.stdout.contains("~ update   broker@edge-a  changed: healthcheck.sh; drift on the node: healthcheck.sh has mode 0644 on the node, not 0755"),
        "{}",
        out.stdout
    );
}

/// A key held only by a real ssh-agent signs the plan and an approval; ssh-keygen verifies both.
#[test]
fn a_key_held_by_ssh_agent_signs_plans_and_approvals() {
    let (lab, key) = lab_with_operator();
    let sock = lab.path("agent.sock");
    let agent = std::process::Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("ssh-agent (Debian openssh-client) must be installed");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _agent = Kill(agent);
    for _ in 0..100 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let pubkey = format!("{}.pub", key.arg());
    let env = [("SSH_AUTH_SOCK", sock.to_str().unwrap())];
    // Before `ssh-add`, the agent does not hold the key: a clear refusal, nothing written.
    let out =
        lab.homelab_env(&["plan", "--transport", "local", "--root", "rt", "--key", &pubkey], &env);
    ok(&out, 1, "plan with a key the agent lacks");
    assert!(out.stderr.contains("ssh-agent does not hold the key"), "{}", out.stderr);
    let add = std::process::Command::new("ssh-add")
        .arg(key.arg())
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    assert!(add.status.success(), "{}", String::from_utf8_lossy(&add.stderr));
    // The private key file is out of reach: only the agent can sign.
    let private = std::fs::read(&key.path).unwrap();
    std::fs::remove_file(&key.path).unwrap();
    let out =
        lab.homelab_env(&["plan", "--transport", "local", "--root", "rt", "--key", &pubkey], &env);
    ok(&out, 0, "plan with the agent");
    let id = out.stdout.lines().next().unwrap().strip_prefix("plan ").unwrap().to_owned();
    let text = lab.plan_file(&id);
    let (body, sig) = crate::support::split_plan(&text);
    lab.write("sig", sig);
    let signers = lab.path("repo/inventory/allowed_signers");
    let verify = |ns: &str, sig: &str| {
        ssh_verify(&signers, "operator@test", ns, std::path::Path::new(sig), body.as_bytes()).ok
    };
    assert!(verify("homelab-plan", lab.path("sig").to_str().unwrap()));
    let plan = format!("repo/plans/{id}.plan");
    let out = lab.homelab_env(
        &["approve", &plan, "--key", &pubkey, "--yes", "--controller-root", "rt"],
        &env,
    );
    ok(&out, 0, "approve with the agent");
    assert!(verify(
        "homelab-approve",
        lab.path(&format!("repo/plans/{id}.approved")).to_str().unwrap()
    ));
    std::fs::write(&key.path, private).unwrap();
}

/// An encrypted key: refused clearly without a terminal; asked for (echo off) on a terminal,
/// here a pseudo-terminal from util-linux's `script`.
#[test]
fn an_encrypted_key_is_asked_for_on_a_terminal_and_refused_without_one() {
    let lab = Lab::new();
    let enc = lab.path("keys/encrypted");
    let made = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "open sesame 4711", "-C", "enc", "-f"])
        .arg(&enc)
        .status()
        .expect("ssh-keygen");
    assert!(made.success());
    let public = fs::read_to_string(enc.with_extension("pub")).unwrap();
    let public: Vec<&str> = public.split_whitespace().take(2).collect();
    lab.write("repo/inventory/allowed_signers", format!("operator@test {}\n", public.join(" ")));
    let key = enc.to_str().unwrap();
    let out = lab.homelab(&["plan", "--transport", "local", "--root", "rt", "--key", key]);
    ok(&out, 1, "plan without a terminal");
    assert!(
        out.stderr.contains("encrypted") && out.stderr.contains("HOMELAB_KEY_PASSPHRASE"),
        "{}",
        out.stderr
    );

    let cmd = format!(
        "{} --repo repo plan --transport local --root rt --key {key}",
        env!("CARGO_BIN_EXE_homelab")
    );
    let mut script = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .current_dir(lab.path(""))
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("script (util-linux) must be installed");
    // Type the passphrase only once the prompt is up (echo is off from then on).
    let mut seen = Vec::new();
    let mut stdout = script.stdout.take().unwrap();
    while !String::from_utf8_lossy(&seen).contains("passphrase for") {
        let mut buf = [0u8; 256];
        let n = std::io::Read::read(&mut stdout, &mut buf).unwrap();
        assert!(n > 0, "no prompt: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    {
        use std::io::Write;
        script.stdin.take().unwrap().write_all(b"open sesame 4711\n").unwrap();
    }
    std::io::Read::read_to_end(&mut stdout, &mut seen).unwrap();
    let done = script.wait_with_output().unwrap();
    let all =
        format!("{}{}", String::from_utf8_lossy(&seen), String::from_utf8_lossy(&done.stderr));
    assert!(done.status.success(), "{all}");
    assert!(all.contains("passphrase for"), "{all}");
    assert!(all.contains("saved "), "{all}");
    assert!(!all.contains("open sesame"), "the passphrase is never echoed: {all}");
}

/// A reviewer sees whether the planner's signature holds against the repository's signers.
#[test]
fn show_checks_the_planners_signature() {
    let (lab, key) = lab_with_operator();
    let id = lab.plan(&key);
    let plan = format!("repo/plans/{id}.plan");
    let out = lab.homelab(&["show", &plan]);
    ok(&out, 0, "show");
    assert!(
        out.stdout
            .contains(&format!("  signature valid: made by operator@test ({})", key.fingerprint)),
        "{}",
        out.stdout
    );
    // The planner's key is no longer allowed: show still shows the plan, and says so.
    let other = lab.keygen("other");
    lab.allow(&[("operator@test", "", &other)]);
    let out = lab.homelab(&["show", &plan, "--format", "markdown"]);
    ok(&out, 0, "show");
    assert!(out.stdout.contains("Signature: NOT VALID: key "), "{}", out.stdout);
}

/// A service file that is not text (an icon, a DER certificate) ships byte for byte: the plan
/// carries it as base64, a reviewer reads its size and hash (never bytes on a terminal), and
/// the release on the node holds exactly those bytes (issue 9, item 1).
#[test]
fn a_binary_service_file_ships_byte_for_byte_and_is_shown_by_size_and_hash() {
    let (lab, key) = lab_with_operator();
    let bytes: Vec<u8> = (0..=255u8).rev().chain([0x1b, b'[', b'2', b'J', 0xff, 0xfe]).collect();
    lab.write("repo/services/web/static/favicon.ico", &bytes);
    let id = lab.plan(&key);
    let text = lab.plan_file(&id);
    assert!(text.contains("\nartifact static/favicon.ico 0644 "), "{text}");
    assert!(text
        .lines()
        .any(|l| l.starts_with("artifact static/favicon.ico ") && l.ends_with(" base64")));
    let shown = lab.homelab(&["show", &format!("repo/plans/{id}.plan")]);
    ok(&shown, 0, "show");
    let line = format!(
        "Binary file static/favicon.ico: {} bytes, sha256 {}",
        bytes.len(),
        sha256_hex(&bytes)
    );
    assert!(shown.stdout.contains(&line), "{}", shown.stdout);
    assert!(!shown.stdout.contains('\u{1b}'), "raw bytes reached the terminal");
    let out = lab.approve(&id, &key);
    ok(&out, 0, "approve");
    let out = lab.apply_with(&id, &["--node", "alpha", "--service", "web", "--stage", "prepare"]);
    ok(&out, 0, "apply --stage prepare");
    let shipped = lab.path(&format!("rt/alpha/state/releases/web/{id}/static/favicon.ico"));
    assert_eq!(fs::read(&shipped).unwrap(), bytes);
    // One byte changed in the base64 of the plan is refused by the reader.
    let tampered = text.replacen("\n|/", "\n|+", 1);
    assert_ne!(tampered, text);
    lab.write(&format!("repo/plans/{id}.plan"), &tampered);
    let shown = lab.homelab(&["show", &format!("repo/plans/{id}.plan")]);
    assert_eq!(shown.code, 3, "{}", shown.stderr);
}

/// Round trips are a number the program knows (issue 10, item 3): `apply --format json`
/// reports them per node, and prepare sends a service's artifacts in one stream, so a service
/// with five more files costs the node no more round trips.
#[test]
fn apply_reports_round_trips_and_artifacts_travel_in_one_stream() {
    let trips = |files: usize| {
        let (lab, key) = lab_with_operator();
        for i in 0..files {
            lab.write(&format!("repo/services/web/conf/extra-{i}.conf"), format!("n = {i}\n"));
        }
        let id = lab.plan(&key);
        ok(&lab.approve(&id, &key), 0, "approve");
        let out = lab.apply_with(
            &id,
            &["--node", "alpha", "--service", "web", "--stage", "prepare", "--format", "json"],
        );
        ok(&out, 0, "apply --stage prepare");
        let done: serde_json::Value = out
            .stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["event"] == "node-done" && v["node"] == "alpha")
            .unwrap_or_else(|| panic!("no node-done for alpha in {}", out.stdout));
        let shipped = lab.path(&format!("rt/alpha/state/releases/web/{id}"));
        assert_eq!(
            fs::read_dir(shipped.join("conf")).map(|d| d.count()).unwrap_or(0),
            files,
            "every file shipped"
        );
        done["round_trips"].as_u64().expect("round_trips in node-done")
    };
    let (none, five) = (trips(0), trips(5));
    assert!(none > 0);
    assert_eq!(none, five, "five more artifacts, the same round trips");
}

/// A refresh is limited per step (a pause in the node's answer), not by a total: a node holding
/// 100 services is read to the end, and one whose answer stops mid-way (here a FIFO as the lock's
/// holder, as a hung disk would) is "not read" — never "unreachable", since it answered — with how far its
/// refresh got; the plan exits 1, names the node, and saves nothing.
#[test]
fn a_refresh_that_stalls_is_not_called_unreachable_and_says_how_far_it_got() {
    let lab = Lab::new();
    for i in 0..100 {
        lab.write(&format!("rt/alpha/state/services/svc{i:03}/healthcheck.sh"), "exit 0\n");
    }
    let args = ["plan", "--transport", "local", "--root", "rt", "--controller-root", "rt"];
    let idle = [("HOMELAB_REFRESH_IDLE", "2")];
    let whole = lab.homelab_env(&args, &idle);
    assert_ne!(whole.code, 1, "100 services are read: {}\n{}", whole.stdout, whole.stderr);
    assert!(!whole.stdout.contains("not read: timed out"), "{}", whole.stdout);

    fs::create_dir_all(lab.path("rt/alpha/state/lock")).unwrap();
    let fifo = lab.path("rt/alpha/state/lock/holder.json");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let out = lab.homelab_env(&args, &idle);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains("not read: timed out after"))
        .unwrap_or_else(|| panic!("no `not read` line:\n{}", out.stdout));
    assert!(line.contains("reading 100 services"), "{line}");
    assert!(line.contains("sent nothing for 2 s (at service 0 of 100)"), "{line}");
    assert!(!out.stdout.contains("unreachable"), "{}", out.stdout);
    assert!(out.stderr.contains("could not read node `alpha`"), "{}", out.stderr);
    let saved = fs::read_dir(lab.path("repo/plans")).unwrap().filter_map(Result::ok);
    let saved: Vec<_> = saved.filter(|e| e.file_name() != "README.md").collect();
    assert!(saved.is_empty(), "no plan saved: {saved:?}");
}

/// The owner's own configuration files are reviewed code: a change to the Caddyfile, the
/// mosquitto config or the prometheus template shows in the plan as a diff of that file (issue
/// 9, "Done when").
#[test]
fn the_owners_config_files_show_as_diffs_in_a_plan() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    for d in ["inventory", "hosts", "services", "templates"] {
        crate::support::copy_tree(&crate::support::repo_root().join(d), &repo.join(d));
    }
    let stage = dir.path().join("stage");
    let rt = dir.path().join("rt");
    let out = crate::support::homelab_in(
        &repo,
        &["render", "--root", rt.to_str().unwrap(), "--out", stage.to_str().unwrap()],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    for node in fs::read_dir(&stage).unwrap() {
        let node = node.unwrap();
        for svc in fs::read_dir(node.path()).unwrap() {
            let svc = svc.unwrap();
            let to = rt.join(node.file_name()).join("state/services").join(svc.file_name());
            crate::support::copy_tree(&svc.path(), &to);
        }
    }
    let edit = |rel: &str, from: &str, to: &str| {
        let p = repo.join(rel);
        let text = fs::read_to_string(&p).unwrap();
        assert!(text.contains(from), "{rel} holds `{from}`");
        fs::write(&p, text.replacen(from, to, 1)).unwrap();
    };
    let caddy = fs::read_to_string(repo.join("services/caddy/Caddyfile")).unwrap();
    let first = caddy.lines().find(|l| !l.trim().is_empty()).unwrap().to_owned();
    edit("services/caddy/Caddyfile", &first, &format!("# reviewed\n{first}"));
    let mosq = fs::read_to_string(repo.join("services/mosquitto/mosquitto.conf")).unwrap();
    let first = mosq.lines().find(|l| !l.trim().is_empty()).unwrap().to_owned();
    edit("services/mosquitto/mosquitto.conf", &first, &format!("{first}\n# reviewed"));
    let (root, ctl) = (rt.to_str().unwrap(), dir.path().join("ctl"));
    let args = ["plan", "--transport", "local", "--root", root, "--controller-root"];
    let mut args = args.to_vec();
    args.push(ctl.to_str().unwrap());
    let out = crate::support::homelab_in(&repo, &args);
    assert!(out.stdout.contains("~ update   caddy@"), "{}", out.stdout);
    assert!(out.stdout.contains("~ update   mosquitto@"), "{}", out.stdout);
    assert!(out.stdout.contains("+# reviewed"), "the change as a diff line: {}", out.stdout);
    assert!(out.stdout.contains("Caddyfile"), "{}", out.stdout);
    assert!(out.stdout.contains("mosquitto.conf"), "{}", out.stdout);
    assert!(!out.stdout.contains("~ update   prometheus@"), "untouched: {}", out.stdout);
}

/// Issue 20: a change that writes a compose file the repository names `compose.yaml` says, once,
/// that it ships to the node as `docker-compose.yml` (the name the plan shows); files named as
/// they ship get no note.
#[test]
fn a_compose_file_named_otherwise_is_said_to_ship_as_docker_compose_yml() {
    let lab = Lab::new();
    let plain = lab.plan_with(None, &[]);
    ok(&plain, 0, "plan of the base fixture");
    assert!(!plain.stderr.contains("note:"), "{}", plain.stderr);
    fs::rename(
        lab.path("repo/services/app/docker-compose.yml"),
        lab.path("repo/services/app/compose.yaml"),
    )
    .unwrap();
    let out = lab.plan_with(None, &[]);
    ok(&out, 0, "plan with compose.yaml");
    assert!(out.stdout.contains("+ create   app@edge-b"), "{}", out.stdout);
    let notes: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with("note:")).collect();
    assert_eq!(
        notes,
        ["note: services/app/compose.yaml ships to the node as docker-compose.yml (the name the node's Compose commands use; the repository keeps its own)"],
        "{}",
        out.stderr
    );
}

/// An external network a service on the node declares (issue 20) is a node-level change of
/// the plan, shown once per node with the services that need it, carried in the plan file with
/// each change, and recomputed by the reviewer's `show` and `approve` as the rest of it is.
#[test]
fn an_external_network_is_a_node_level_change_the_review_recomputes() {
    let (lab, key) = lab_with_operator();
    let compose = lab.read("repo/services/web/docker-compose.yml");
    lab.write(
        "repo/services/web/docker-compose.yml",
        format!(
            "{}networks:\n  edge:\n    external: true\n    name: proxy\n",
            compose.replace(
                "    command: [\"httpd\", \"-f\", \"-p\", \"8080\"]\n",
                "    command: [\"httpd\", \"-f\", \"-p\", \"8080\"]\n    networks: [default, edge]\n",
            )
        ),
    );
    let contract = lab.read("repo/services/web/service.yaml");
    lab.write("repo/services/web/service.yaml", format!("{contract}networks: [proxy]\n"));
    lab.git_commit();
    let out = lab.plan_with(Some(&key), &[]);
    ok(&out, 0, "plan");
    assert!(
        out.stdout.contains("\nALPHA\n")
            && out.stdout.contains("    + network  proxy  created on the node if missing (`external: true`), before web comes up\n"),
        "{}",
        out.stdout
    );
    assert_eq!(out.stdout.matches("+ network").count(), 1, "{}", out.stdout);
    let id = out.stdout.lines().next().unwrap().strip_prefix("plan ").unwrap().to_owned();
    let plan = lab.plan_file(&id);
    assert_eq!(plan.matches("\nnetwork proxy\n").count(), 1, "{plan}");
    let path = format!("repo/plans/{id}.plan");
    let shown = lab.homelab(&["show", &path]);
    ok(&shown, 0, "show");
    assert!(shown.stdout.contains("+ network  proxy"), "{}", shown.stdout);
    let json = lab.homelab(&["show", &path, "--format", "json"]);
    ok(&json, 0, "show json");
    let doc: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let alpha = doc["nodes"].as_array().unwrap().iter().find(|n| n["node"] == "alpha").unwrap();
    assert_eq!(alpha["networks"], serde_json::json!([{"name": "proxy", "for": ["web@alpha"]}]));
    ok(&lab.approve(&id, &key), 0, "approve");
}
