//! `homelab validate`: the repository's own homelab, the base fixture, one broken tree per
//! rule (snapshots pin the exact messages), and hostile files.

use std::fs;

use crate::support::{copy_tree, fixtures, homelab_in, repo_root, Tree};

#[test]
fn the_repositorys_own_homelab_is_valid() {
    let out = homelab_in(&repo_root(), &["validate"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "homelab is valid: 6 nodes, 10 services, 15 service instances\n");
}

#[test]
fn the_base_fixture_is_valid() {
    let out = Tree::base().homelab(&["validate"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

/// Every folder of `tests/fixtures/broken/` is the base fixture with one rule broken (or, for
/// `many-problems`, many): each reports its problems with file and line, pinned by a snapshot.
#[test]
fn broken_fixtures_report_every_problem_with_file_and_line() {
    let mut cases: Vec<String> = fs::read_dir(fixtures().join("broken"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    cases.sort();
    assert!(cases.len() >= 10, "expected a broken fixture per rule, found {cases:?}");
    for case in cases {
        let out = Tree::broken(&case).homelab(&["validate"]);
        assert_eq!(out.code, 1, "{case}: expected exit 1\n{}", out.stderr);
        assert!(out.stdout.is_empty(), "{case}: errors go to stderr");
        for l in
            out.stderr.lines().filter(|l| l.starts_with("error[") || l.starts_with("error: error["))
        {
            let located = l.split(": ").nth(1).or_else(|| l.split(": ").nth(2));
            assert!(located.is_some(), "{case}: no file in {l}");
        }
        insta::assert_snapshot!(format!("broken-{case}"), out.stderr);
    }
}

#[test]
fn json_output_lists_the_problems() {
    let out = Tree::broken("owner-node").homelab(&["validate", "--format", "json"]);
    assert_eq!(out.code, 1);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc["valid"], false);
    assert!(doc["problems"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["file"].is_string() && p["rule"].is_string()));
}

#[test]
fn a_yaml_bomb_is_refused_not_expanded() {
    let tree = Tree::base();
    let mut bomb = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let names = ["b", "c", "d", "e", "f", "g", "h", "i", "j"];
    let mut prev = "a";
    for n in names {
        bomb.push_str(&format!(
            "{n}: &{n} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
        ));
        prev = n;
    }
    tree.write("inventory/policy.yaml", bomb);
    let out = tree.homelab(&["validate"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("error[yaml]: inventory/policy.yaml"), "{}", out.stderr);
}

/// The billion-laughs bomb, as a compose file: nine anchors, each nine aliases of the one
/// before, expanding to 9^9 scalars.
fn bomb() -> String {
    let mut bomb = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let mut prev = "a";
    for n in ["b", "c", "d", "e", "f", "g", "h", "i", "j"] {
        bomb.push_str(&format!(
            "{n}: &{n} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
        ));
        prev = n;
    }
    bomb
}

/// Regression (issue 9): the bomb was refused with the parser's `Debug` text
/// (`budget breached: Nodes { nodes: 250001 }`); the message now names the file, the limit
/// and why, with no line (the parser's line may lie past the end of the file).
#[test]
fn a_yaml_bomb_in_a_compose_file_is_refused_with_a_clean_message() {
    let tree = Tree::base();
    tree.write("services/web/docker-compose.yml", bomb());
    let out = tree.homelab(&["validate"]);
    assert_eq!(out.code, 1);
    assert!(!out.stderr.contains('{'), "Debug text in {}", out.stderr);
    insta::assert_snapshot!("yaml-bomb-compose", out.stderr);
}

/// Regression (issue 9): a compose file sharing a few `x-` blocks through 300 aliases (real
/// stacks have 150+) was refused by the alias/anchor ratio heuristic, and its message named a
/// line past the end of the file. The budget is on the expanded size now.
#[test]
fn a_compose_file_with_300_aliases_validates() {
    let tree = Tree::base();
    let mut text = String::from(
        "x-logging: &logging\n  driver: json-file\n  options:\n    max-size: \"10m\"\nx-tz: &tz UTC\nx-restart: &restart unless-stopped\n\nservices:\n  web:\n    image: \"{{ vars.image }}\"\n    container_name: web\n    restart: *restart\n    logging: *logging\n    labels:\n",
    );
    // 100 labels with anchors of their own, then 300 aliases of them and of the `x-` blocks.
    for i in 0..100 {
        text.push_str(&format!("      l{i}: &l{i} v{i}\n"));
    }
    text.push_str("    environment:\n");
    for i in 0..300 {
        let alias = if i % 3 == 0 { "tz".to_owned() } else { format!("l{}", i % 100) };
        text.push_str(&format!("      X{i}: *{alias}\n"));
    }
    tree.write("services/web/docker-compose.yml", text);
    let out = tree.homelab(&["validate"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

/// Every folder of `tests/fixtures/valid/` is the base fixture with a real-world shape applied
/// (a multi-container service with a database, a one-shot init container, a build, reviewed
/// config files mounted read-only, `${VAR}` interpolation, anchors and merge keys): each
/// validates.
#[test]
fn real_world_shapes_validate() {
    let mut cases: Vec<String> = fs::read_dir(fixtures().join("valid"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    cases.sort();
    assert!(!cases.is_empty());
    for case in cases {
        let tree = Tree::base();
        copy_tree(&fixtures().join("valid").join(&case), tree.path());
        let out = tree.homelab(&["validate"]);
        assert_eq!(out.code, 0, "{case}: {}", out.stderr);
    }
}

/// The multi-container naming rule is the owner's, not more: a one-container service's
/// container is `<svc>` whatever its compose key (`WORDPRESS_DB_HOST=db` keeps working).
#[test]
fn a_one_container_service_keeps_its_compose_key() {
    let tree = Tree::base();
    let text = fs::read_to_string(tree.path().join("services/web/docker-compose.yml")).unwrap();
    tree.write("services/web/docker-compose.yml", text.replacen("  web:", "  httpd:", 1));
    let out = tree.homelab(&["validate"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

/// Issue 21: the container-name rule renames containers that published projects reach by
/// their old name (the starter kit reaches `ollama-cpu`, `container_name: ollama`, as
/// `ollama`). A rename that does not keep the old name as a network alias leaves a name no
/// container answers to: refused at the line that reaches it; with the alias, valid.
#[test]
fn a_name_no_container_of_the_project_answers_to_is_refused_until_an_alias_keeps_it() {
    let tree = Tree::base();
    let text = fs::read_to_string(tree.path().join("services/web/docker-compose.yml")).unwrap();
    let renamed = text.replacen(
        "    command:",
        "    environment:\n      OLLAMA_BASE_URL: http://ollama:11434\n    command:",
        1,
    );
    let ollama = "  ollama-cpu:\n    image: \"{{ vars.image }}\"\n    container_name: web-ollama-cpu\n    restart: unless-stopped\n";
    tree.write("services/web/docker-compose.yml", format!("{renamed}{ollama}"));
    let out = tree.homelab(&["validate"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let line = renamed.lines().position(|l| l.contains("http://ollama")).unwrap() + 1;
    assert!(
        out.stderr.contains(&format!("error[compose-host]: services/web/docker-compose.yml:{line}: `ollama`: this line reaches `ollama`, but no container of the project answers to that name (its compose keys: `ollama-cpu`, `web`")),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("add `networks: {default: {aliases: [ollama]}}`"),
        "{}",
        out.stderr
    );

    let aliased = format!("{ollama}    networks:\n      default:\n        aliases: [ollama]\n");
    tree.write("services/web/docker-compose.yml", format!("{renamed}{aliased}"));
    let out = tree.homelab(&["validate"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

/// A container on a network of the project's own is reached there: the alias that keeps a
/// renamed container's old name goes on that network. The fix said
/// `networks: {default: {aliases: [ollama]}}`, which would take the container off `back`,
/// where its users reach it (issue 21: a message that misled). Both the container-name rule
/// and the compose-host rule now name the networks.
#[test]
fn the_alias_a_fix_asks_for_goes_on_the_network_the_container_is_reached_on() {
    let tree = Tree::base();
    let text = fs::read_to_string(tree.path().join("services/web/docker-compose.yml")).unwrap();
    let web = text.replacen(
        "    command:",
        "    networks: [back]\n    environment:\n      OLLAMA_BASE_URL: http://ollama:11434\n    command:",
        1,
    );
    let ollama = |name: &str| {
        format!("  ollama-cpu:\n    image: \"{{{{ vars.image }}}}\"\n    container_name: {name}\n    restart: unless-stopped\n    networks:\n      back: {{}}\nnetworks:\n  back: {{}}\n")
    };
    tree.write("services/web/docker-compose.yml", format!("{web}{}", ollama("web-ollama-cpu")));
    let out = tree.homelab(&["validate"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("error[compose-host]: "), "{}", out.stderr);
    assert!(
        out.stderr.contains("add `networks: {back: {aliases: [ollama]}}` under the compose service that was `ollama`"),
        "{}",
        out.stderr
    );

    tree.write("services/web/docker-compose.yml", format!("{web}{}", ollama("ollama")));
    let out = tree.homelab(&["validate"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("reaches this container as `ollama`: keep that name reachable by adding `networks: {back: {aliases: [ollama]}}` under `services.ollama-cpu`"),
        "{}",
        out.stderr
    );

    let aliased =
        ollama("web-ollama-cpu").replace("      back: {}\n", "      back: {aliases: [ollama]}\n");
    tree.write("services/web/docker-compose.yml", format!("{web}{aliased}"));
    let out = tree.homelab(&["validate"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

/// Regression (issue 9): a service folder may name its compose file as Compose does
/// (`compose.yaml`, `compose.yml`, `docker-compose.yaml`); it ships as `docker-compose.yml`,
/// the name the node's scripts and the override use, and its problems are located in it.
#[test]
fn every_compose_file_name_is_recognised_and_ships_as_docker_compose_yml() {
    for name in ["compose.yaml", "compose.yml", "docker-compose.yaml"] {
        let tree = Tree::base();
        let from = tree.path().join("services/web/docker-compose.yml");
        let text = fs::read_to_string(&from).unwrap();
        fs::remove_file(&from).unwrap();
        tree.write(&format!("services/web/{name}"), &text);
        let out = tree.homelab(&["validate"]);
        assert_eq!(out.code, 0, "{name}: {}", out.stderr);
        let stage = tree.path().join("stage");
        let args = ["render", "--node", "alpha", "--service", "web", "--out"];
        let out = tree.homelab(&[&args[..], &[stage.to_str().unwrap()]].concat());
        assert_eq!(out.code, 0, "{name}: {}", out.stderr);
        let release = stage.join("alpha/web");
        assert!(!release.join(name).exists(), "{name} ships under its own name");
        let shipped = fs::read_to_string(release.join("docker-compose.yml")).unwrap();
        assert!(shipped.contains("container_name: web"), "{shipped}");
        tree.write(&format!("services/web/{name}"), text.replace("restart:", "restart: no #"));
        let out = tree.homelab(&["validate"]);
        assert!(
            out.stderr.contains(&format!("error[restart]: services/web/{name}:")),
            "{}",
            out.stderr
        );
    }
}

/// Regression (found by the corpus): a service that inherits `restart:` through `extends`
/// (a chain: a shipped file's service that extends another one of that file) follows the
/// restart rule; before, it failed with "expected `restart: unless-stopped`, found none".
#[test]
fn restart_inherited_through_an_extends_chain_counts() {
    let tree = Tree::base();
    let path = "services/web/docker-compose.yml";
    let text = fs::read_to_string(tree.path().join(path)).unwrap();
    tree.write(
        path,
        text.replace(
            "    restart: unless-stopped\n",
            "    extends:\n      file: ./base/common.yml\n      service: daemon\n",
        ),
    );
    tree.write(
        "services/web/base/common.yml",
        "services:\n  daemon:\n    extends: always-up\n  always-up:\n    restart: unless-stopped\n",
    );
    let out = tree.homelab(&["validate"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // The inherited value is the one checked, located where it is written.
    tree.write(
        "services/web/base/common.yml",
        "services:\n  daemon:\n    extends: always-up\n  always-up:\n    restart: always\n",
    );
    let out = tree.homelab(&["validate"]);
    assert!(
        out.stderr.contains("error[restart]: services/web/base/common.yml:5: `services.always-up.restart`: expected `unless-stopped` (the contract's restart_policy), found `always` (inherited by `services.web` through `extends`)"),
        "{}",
        out.stderr
    );
}

/// A host path the contract lists in `host_paths` is allowed; the same path unlisted is not
/// (the broken fixture `compose-path` pins that message).
#[test]
fn a_host_path_listed_in_the_contract_is_allowed() {
    let tree = Tree::base();
    let compose =
        fs::read_to_string(tree.path().join("services/agent/docker-compose.yml")).unwrap();
    tree.write(
        "services/agent/docker-compose.yml",
        format!("{compose}      - \"/var/run/docker.sock:/var/run/docker.sock:ro\"\n      - \"{{{{ root }}}}/events:/events\"\n"),
    );
    let out = tree.homelab(&["validate"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("`/var/run/docker.sock` is a host path"), "{}", out.stderr);
    assert!(out.stderr.contains("`/opt/homelab/events` is a host path"), "{}", out.stderr);
    let contract = fs::read_to_string(tree.path().join("services/agent/service.yaml")).unwrap();
    tree.write(
        "services/agent/service.yaml",
        format!("{contract}host_paths: [/var/run/docker.sock, events]\n"),
    );
    let out = tree.homelab(&["validate"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn a_huge_file_is_refused_without_reading_it_all() {
    let tree = Tree::base();
    let f = fs::File::create(tree.path().join("services/web/README.md")).unwrap();
    f.set_len(50 * 1024 * 1024).unwrap();
    let out = tree.homelab(&["validate"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains(
            "error[file]: services/web/README.md: expected at most 1048576 bytes, found 52428800"
        ),
        "{}",
        out.stderr
    );
}

#[test]
fn a_non_utf8_file_names_its_line() {
    let tree = Tree::base();
    tree.write("services/web/service.yaml", b"name: web\ndescription: caf\xe9\n".as_slice());
    let out = tree.homelab(&["validate"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("error[file]: services/web/service.yaml:2: expected UTF-8 text"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_symlink_out_of_the_repository_is_refused() {
    let tree = Tree::base();
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("env.example"), "X=1\n").unwrap();
    fs::remove_file(tree.path().join("services/web/env.example")).unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("env.example"),
        tree.path().join("services/web/env.example"),
    )
    .unwrap();
    let out = tree.homelab(&["validate"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("services/web/env.example: is a symlink to"), "{}", out.stderr);
    assert!(out.stderr.contains("outside the repository"), "{}", out.stderr);
}

#[test]
fn a_fifo_is_refused_instead_of_blocking() {
    let tree = Tree::base();
    let p = tree.path().join("services/web/README.md");
    fs::remove_file(&p).unwrap();
    let status = std::process::Command::new("mkfifo").arg(&p).status().unwrap();
    assert!(status.success());
    let out = tree.homelab(&["validate"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("services/web/README.md: expected a regular file"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_missing_folder_is_named() {
    let tree = Tree::base();
    fs::remove_dir_all(tree.path().join("hosts")).unwrap();
    let out = tree.homelab(&["validate"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("error[layout]: hosts: expected the folder `hosts/`"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_repository_that_does_not_exist_is_named() {
    let out = homelab_in(std::path::Path::new("/nonexistent/homelab"), &["validate"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("cannot open the repository folder"), "{}", out.stderr);
}

/// Edits anywhere in the definition give diagnostics or a valid homelab, never a panic.
#[test]
fn mutated_definitions_never_panic() {
    let tree = Tree::base();
    let files = [
        "inventory/topology.yaml",
        "services/app/service.yaml",
        "hosts/edge-b/services.yaml",
        "services/web/docker-compose.yml",
    ];
    let originals: Vec<Vec<u8>> =
        files.iter().map(|f| fs::read(tree.path().join(f)).unwrap()).collect();
    let mut rng = crate::support::Mutator::new(0x853c_49e6_748f_ea9b);
    let alphabet = b" :-\n[]{}&*!|>'\"#@%{}0aZ\t";
    for round in 0..400 {
        let which = round % files.len();
        let b = rng.mutate(&originals[which], alphabet, 4);
        fs::write(tree.path().join(files[which]), &b).unwrap();
        let _ = homelab::check::homelab(tree.path());
        fs::write(tree.path().join(files[which]), &originals[which]).unwrap();
    }
    assert!(homelab::check::homelab(tree.path()).is_ok());
}

/// A `.env` beside an override (made here, not committed: no secret-looking file is tracked)
/// is refused: host-local secrets live on the node.
#[test]
fn a_dotenv_file_under_a_hosts_runtime_folder_is_refused() {
    let tree = Tree::base();
    tree.write("hosts/edge-b/runtime/app/.env", "APP_SECRET=hunter2\n");
    let out = tree.homelab(&["validate"]);
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stderr,
        "error[override]: hosts/edge-b/runtime/app/.env: expected the host's files of the service here, found the hidden file `.env`\n  fix: host-local secrets live on the node under <root>/config/<svc>/, never in Git\n1 problem found in the homelab definition\n"
    );
}

/// Regression: a compose file with both a wrong `container_name` and a `/dev/ttyUSB0` device
/// reported only the device, and any problem anywhere (an env.example here, a policy there)
/// hid every compose-rule and template problem, because those checks only ran on an otherwise
/// valid tree. Now every rule runs on every file it can read; the snapshot
/// `broken-every-problem-in-one-run` pins the whole list.
#[test]
fn one_run_reports_compose_and_template_problems_beside_unrelated_ones() {
    let out = Tree::broken("every-problem-in-one-run").homelab(&["validate"]);
    assert_eq!(out.code, 1);
    for expected in [
        // Two rules broken in the same compose file.
        "error[container-name]: services/broker/docker-compose.yml:4: `services.broker.container_name`",
        "error[zigbee]: services/broker/docker-compose.yml:11:",
        // An env.example problem in one service, compose and template problems in others.
        "error[secret]: services/broker/env.example:2: `BROKER_PASSWORD`",
        "error[env-example]: services/app/env.example:3: `APP_DEBUG`",
        "error[restart]: services/web/docker-compose.yml:5: `services.web.restart`",
        "error[template]: hosts/edge-b/runtime/app/docker-compose.override.yml:4: `vars.greting`",
        // Unrelated rules elsewhere, including a broken policy.
        "error[policy]: inventory/policy.yaml:1: `plan_ttl`",
        "error[naming]: inventory/topology.yaml:27: `nodes.edge-b.display_name`",
        "error[healthcheck]: services/web/service.yaml:10: `healthcheck.timeout`",
    ] {
        assert!(out.stderr.contains(expected), "missing {expected:?} in\n{}", out.stderr);
    }
}

/// `keep_releases` below 2 would prune the release a rollback goes back to: refused with the
/// file, line and field.
#[test]
fn keeping_fewer_than_two_releases_is_refused() {
    let tree = Tree::base();
    let policy = fs::read_to_string(tree.path().join("inventory/policy.yaml")).unwrap();
    tree.write(
        "inventory/policy.yaml",
        policy.replace("allow_uncommitted: true\n", "allow_uncommitted: true\nkeep_releases: 1\n"),
    );
    let out = tree.homelab(&["validate"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stderr.contains("inventory/policy.yaml:4: `keep_releases`: expected at least 2"),
        "{}",
        out.stderr
    );
}

/// `reviewed_branches` (issue 19, item 2) names Git branches: an empty list, or a name Git
/// refuses as a branch (an option, a revision expression), is reported with file, line and
/// field.
#[test]
fn reviewed_branches_must_be_branch_names() {
    let tree = Tree::base();
    let policy = fs::read_to_string(tree.path().join("inventory/policy.yaml")).unwrap();
    let with = |branches: &str| {
        tree.write(
            "inventory/policy.yaml",
            policy.replace(
                "allow_uncommitted: true\n",
                &format!("allow_uncommitted: true\nreviewed_branches: {branches}\n"),
            ),
        );
        tree.homelab(&["validate"])
    };
    let out = with("[]");
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stderr
            .contains("inventory/policy.yaml:4: `reviewed_branches`: expected at least one branch"),
        "{}",
        out.stderr
    );
    let out = with("[main, \"--all\", \"main~3\", \"a..b\"]");
    assert_eq!(out.code, 1, "{}", out.stdout);
    for name in ["--all", "main~3", "a..b"] {
        let said = format!(
            "inventory/policy.yaml:4: `reviewed_branches`: expected a Git branch name, found `{name}`"
        );
        assert!(out.stderr.contains(&said), "expected `{said}` in:\n{}", out.stderr);
    }
    assert!(!out.stderr.contains("found `main`"), "{}", out.stderr);
    let out = with("[main, release/2026]");
    assert_eq!(out.code, 0, "{}", out.stderr);
}

/// `validate` refuses what `approve` and `apply` refuse in `inventory/allowed_signers`
/// (issue 19, item 6): a line whose key is not base64, an unknown option, a window that is
/// never valid; each named with file and line.
#[test]
fn an_allowed_signers_file_apply_would_refuse_is_invalid() {
    let tree = Tree::base();
    let path = tree.path().join("inventory/allowed_signers");
    let signers = fs::read_to_string(&path).unwrap();
    let lines = signers.lines().count() + 1;
    for (line, said) in [
        ("broken@test ssh-ed25519 AAAA-not-base64", "invalid `ssh-ed25519` public key"),
        ("x@test certificate=\"yes\" ssh-ed25519 AAAA", "unsupported option `certificate`"),
        (
            "x@test valid-after=\"20270101Z\",valid-before=\"20260101Z\" ssh-ed25519 AAAA",
            "is not after `valid-after`",
        ),
    ] {
        tree.write("inventory/allowed_signers", format!("{signers}{line}\n"));
        let out = tree.homelab(&["validate"]);
        assert_eq!(out.code, 1, "{line}: {}{}", out.stdout, out.stderr);
        let want = format!("error[allowed-signers]: inventory/allowed_signers:{lines}: `signer`: ");
        assert!(out.stderr.contains(&want), "{line}: expected `{want}` in:\n{}", out.stderr);
        assert!(out.stderr.contains(said), "{line}: expected `{said}` in:\n{}", out.stderr);
    }
    tree.write("inventory/allowed_signers", &signers);
    let out = tree.homelab(&["validate"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

/// A one-shot job keeps its own restart policy (issue 21): forced to `unless-stopped`, an
/// import container nobody waits for ran again after every successful exit. A container with
/// `restart: "no"` or `on-failure` that is not the main one and that nothing waits for as
/// running is exempt; the main container, or one another waits for as started, is not.
#[test]
fn a_one_shot_job_nobody_waits_for_keeps_its_restart_policy() {
    let tree = Tree::base();
    let compose = |main_restart: &str, depends: &str| {
        format!(
            "services:\n  broker:\n    image: \"{{{{ vars.image }}}}\"\n    container_name: broker\n    restart: {main_restart}\n    command: [\"sleep\", \"86400\"]\n    env_file: [\"{{{{ config_dir }}}}/.env\"]\n{depends}  import:\n    image: \"{{{{ vars.image }}}}\"\n    container_name: broker-import\n    restart: \"no\"\n    command: [\"true\"]\n  retry:\n    image: \"{{{{ vars.image }}}}\"\n    container_name: broker-retry\n    restart: on-failure:3\n    command: [\"true\"]\n"
        )
    };
    tree.write("services/broker/docker-compose.yml", compose("unless-stopped", ""));
    let out = tree.homelab(&["validate"]);
    assert_eq!(out.code, 0, "{}", out.stderr);

    // The main container is never a one-shot job.
    tree.write("services/broker/docker-compose.yml", compose("\"no\"", ""));
    let out = tree.homelab(&["validate"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("docker-compose.yml:5: `services.broker.restart`: expected `unless-stopped`"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.matches("error[restart]").count(), 1, "{}", out.stderr);

    // Waited for as running (the list form means `service_started`): kept up, not one-shot.
    tree.write(
        "services/broker/docker-compose.yml",
        compose("unless-stopped", "    depends_on: [retry]\n"),
    );
    let out = tree.homelab(&["validate"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("`services.retry.restart`: expected `unless-stopped`"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.matches("error[restart]").count(), 1, "{}", out.stderr);
}

/// A top-level `name:` is replaced by `-p <svc>`, and validate says so (issue 21): named volumes
/// become `<svc>_*`, which silently left a project's data behind. A note, not a problem: the
/// homelab stays valid, and a name equal to the service's says nothing.
#[test]
fn a_top_level_name_that_p_svc_replaces_is_said_as_a_note() {
    let tree = Tree::base();
    let compose =
        fs::read_to_string(tree.path().join("services/broker/docker-compose.yml")).unwrap();
    tree.write("services/broker/docker-compose.yml", format!("name: mqtt-stack\n{compose}"));
    let out = tree.homelab(&["validate"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.starts_with("homelab is valid"), "{}", out.stdout);
    assert!(
        out.stderr.starts_with("note[compose-name]: services/broker/docker-compose.yml:1: `name`: the project is named `broker` on the node, not `mqtt-stack`: homelab runs `docker compose -p broker`, which replaces `name:`, so named volumes and networks are `broker_<key>`, not `mqtt-stack_<key>`\n  fix: remove `name:`"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.matches("note[").count(), 1, "{}", out.stderr);
    let json = tree.homelab(&["validate", "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(doc["valid"], true);
    assert_eq!(doc["notes"][0]["rule"], "compose-name", "{doc}");
    assert_eq!(doc["notes"][0]["line"], 1, "{doc}");

    tree.write("services/broker/docker-compose.yml", format!("name: broker\n{compose}"));
    let out = tree.homelab(&["validate"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.is_empty(), "{}", out.stderr);
}

/// A shipped file that nothing names gets a note (issue 21: such files got no warning): one
/// the compose file mounts, or another shipped file names, gets none.
#[test]
fn a_shipped_file_that_nothing_names_is_said_as_a_note() {
    let tree = Tree::base();
    let compose =
        fs::read_to_string(tree.path().join("services/broker/docker-compose.yml")).unwrap();
    tree.write(
        "services/broker/docker-compose.yml",
        format!("{compose}    volumes:\n      - ./broker.conf:/etc/broker.conf:ro\n"),
    );
    tree.write("services/broker/broker.conf", "include /etc/broker/acl.list\n");
    tree.write("services/broker/acl.list", "user broker\n");
    tree.write("services/broker/conf/unused.conf", "listener 1884\n");
    let out = tree.homelab(&["validate"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stderr,
        "note[unreferenced]: services/broker/conf/unused.conf: `conf/unused.conf` ships with every release of `broker`, but no compose file mounts, builds or includes it and no other shipped file names it\n  fix: mount it read-only (`./conf/unused.conf:<path in the container>:ro`), or remove it from the service's folder\n"
    );
}

/// Names that read like a secret's as published projects write them (issue 21: these passed):
/// a `…_KEY` (`N8N_ENCRYPTION_KEY`), a `…_PASS`, a `…PASSPHRASE` given a literal in the compose
/// file are refused like a `…PASSWORD`. A `…_KEY` whose value is a path names where a key is
/// kept, and a public key is no secret: both pass.
#[test]
fn a_literal_under_a_key_pass_or_passphrase_name_is_refused() {
    let tree = Tree::base();
    let compose =
        fs::read_to_string(tree.path().join("services/broker/docker-compose.yml")).unwrap();
    tree.write(
        "services/broker/docker-compose.yml",
        format!("{compose}      N8N_ENCRYPTION_KEY: x8Yh2kPq\n      SMTP_PASS: hunter2\n      GPG_PASSPHRASE: \"correct horse\"\n      TLS_KEY: /certs/tls.key\n      SSH_KEY: \"{{{{ config_dir }}}}/ssh-key\"\n      VAPID_PUBLIC_KEY: BExyz\n"),
    );
    let out = tree.homelab(&["validate"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    for (line, name) in [(10, "N8N_ENCRYPTION_KEY"), (11, "SMTP_PASS"), (12, "GPG_PASSPHRASE")] {
        assert!(
            out.stderr.contains(&format!("error[secret]: services/broker/docker-compose.yml:{line}: `{name}`: `{name}` looks like a secret and is set to a literal value in a file that ships from Git")),
            "{name}: {}",
            out.stderr
        );
    }
    assert_eq!(out.stderr.matches("error[").count(), 3, "{}", out.stderr);
}

/// An external network (issue 20) is one a service on the node declares (`networks` of its
/// contract, its own or another's), which the plan then creates; undeclared, nothing would
/// create it and `compose up` would fail, so validate refuses it where the compose file marks
/// it external. A name that could not be passed to Docker as written is refused too.
#[test]
fn an_external_network_is_declared_by_a_service_on_its_node() {
    let tree = Tree::base();
    let path = "services/web/docker-compose.yml";
    let text = fs::read_to_string(tree.path().join(path)).unwrap();
    let joined = text.replace(
        "    command: [\"httpd\", \"-f\", \"-p\", \"8080\"]\n",
        "    command: [\"httpd\", \"-f\", \"-p\", \"8080\"]\n    networks: [default, edge]\n",
    );
    tree.write(path, format!("{joined}networks:\n  edge:\n    external: true\n    name: proxy\n"));
    let out = tree.homelab(&["validate"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("error[network]: services/web/docker-compose.yml:")
            && out.stderr.contains("`networks.edge.external`: `proxy` is an external network (`external: true`), and no service on node `alpha` declares it: nothing would create it"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("add `networks: [proxy]` to services/web/service.yaml"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.matches("error[").count(), 1, "{}", out.stderr);

    // Declared by another service of the node (agent runs on every node).
    let agent = fs::read_to_string(tree.path().join("services/agent/service.yaml")).unwrap();
    tree.write("services/agent/service.yaml", format!("{agent}networks: [proxy]\n"));
    let out = tree.homelab(&["validate"]);
    assert_eq!(out.code, 0, "{}", out.stderr);

    // A name that is not one Docker takes as written, in the contract or the compose file.
    tree.write("services/agent/service.yaml", format!("{agent}networks: [\"proxy; reboot\"]\n"));
    let out = tree.homelab(&["validate"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("error[network]: services/agent/service.yaml:")
            && out.stderr.contains("`networks[0]`: expected a Docker network name"),
        "{}",
        out.stderr
    );
    tree.write("services/agent/service.yaml", format!("{agent}networks: [proxy]\n"));
    tree.write(
        path,
        format!("{joined}networks:\n  edge:\n    external: true\n    name: \"$(reboot)\"\n"),
    );
    let out = tree.homelab(&["validate"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "`networks.edge.external`: expected the name of the external network written out"
        ),
        "{}",
        out.stderr
    );
}

/// `depends_on` inherited through `extends` (issue 20, item 4) counts as Compose runs it: a
/// base in a shipped file that waits for `migrate` to complete makes `migrate` a one-shot init
/// container of the service that extends it, which needs no `restart: unless-stopped`; without
/// that wait, `migrate` is a container like the others and needs it.
#[test]
fn depends_on_inherited_through_extends_marks_a_one_shot_init_container() {
    let tree = Tree::base();
    tree.write(
        "services/web/docker-compose.yml",
        "services:\n  web:\n    extends:\n      file: ./base/common.yml\n      service: server\n    container_name: web\n    restart: unless-stopped\n  migrate:\n    image: \"{{ vars.image }}\"\n    container_name: web-migrate\n    command: [\"true\"]\n",
    );
    let base = |depends: &str| {
        format!("services:\n  server:\n    image: homelab-test/busybox:1\n    command: [\"httpd\", \"-f\", \"-p\", \"8080\"]\n{depends}")
    };
    tree.write("services/web/base/common.yml", base(""));
    let out = tree.homelab(&["validate"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("`services.migrate.restart`: expected `restart: unless-stopped`, found none"),
        "{}",
        out.stderr
    );
    tree.write(
        "services/web/base/common.yml",
        base(
            "    depends_on:\n      migrate:\n        condition: service_completed_successfully\n",
        ),
    );
    let out = tree.homelab(&["validate"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // Its own `depends_on` wins over the base's for the same key, as Compose merges them.
    tree.write(
        "services/web/docker-compose.yml",
        "services:\n  web:\n    extends:\n      file: ./base/common.yml\n      service: server\n    container_name: web\n    restart: unless-stopped\n    depends_on:\n      migrate:\n        condition: service_started\n  migrate:\n    image: \"{{ vars.image }}\"\n    container_name: web-migrate\n    command: [\"true\"]\n",
    );
    let out = tree.homelab(&["validate"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("`services.migrate.restart`"), "{}", out.stderr);
}

/// Regression (found by the import corpus): Gitea's published compose file sets
/// `GITEA__database__PASSWD=gitea`, a literal password in Git that validate let through
/// because the name has lowercase letters. An environment name with an uppercase letter is
/// read as one; a compose key of its own, all lowercase (`secrets: [db_password]`), is not.
#[test]
fn a_literal_password_under_a_mixed_case_environment_name_is_refused() {
    let tree = Tree::base();
    let path = "services/web/docker-compose.yml";
    let text = fs::read_to_string(tree.path().join(path)).unwrap();
    let with = |env: &str| {
        text.replace(
            "    command: [\"httpd\", \"-f\", \"-p\", \"8080\"]\n",
            &format!("    command: [\"httpd\", \"-f\", \"-p\", \"8080\"]\n{env}"),
        )
    };
    tree.write(path, with("    environment:\n      - GITEA__database__PASSWD=gitea\n"));
    let out = tree.homelab(&["validate"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("error[secret]: services/web/docker-compose.yml:"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("GITEA__database__PASSWD"), "{}", out.stderr);
    tree.write(path, with("    secrets: [db_password]\n"));
    let out = tree.homelab(&["validate"]);
    assert!(!out.stderr.contains("error[secret]"), "{}", out.stderr);
}
