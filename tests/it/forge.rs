//! `homelab pr`: the plan's pull request on a stand-in Forgejo (`forge_standin`), driven by
//! the real binary with a real signed plan. The client is the one that talks to a real
//! Forgejo; only the base URL differs.

use crate::forge_standin::Standin;
use crate::support::{Key, Lab, Output};

const TOKEN: &str = "f0rg3-t0k3n-0123456789abcdef";

/// A lab with a committed repository, a planner key it trusts, and one signed plan.
fn lab_with_plan() -> (Lab, Key, String) {
    let lab = Lab::new();
    let key = lab.keygen("alice");
    lab.allow(&[("alice", "", &key)]);
    lab.policy("24h", 1, &["alice"]);
    lab.git_commit();
    let id = lab.plan(&key);
    (lab, key, id)
}

/// `homelab pr repo/plans/<id>.plan --forge <stand-in> --repo-slug me/homelab <extra>`, with
/// the token in the environment and retries a millisecond apart.
fn pr(lab: &Lab, forge: &Standin, id: &str, extra: &[&str]) -> Output {
    pr_env(lab, forge, id, extra, &[("HOMELAB_FORGE_TOKEN", TOKEN)])
}

fn pr_env(lab: &Lab, forge: &Standin, id: &str, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let plan = format!("repo/plans/{id}.plan");
    let mut args = vec!["pr", plan.as_str(), "--forge", forge.url.as_str()];
    if !extra.contains(&"--repo-slug") {
        args.extend(["--repo-slug", "me/homelab"]);
    }
    args.extend(extra);
    let mut env = env.to_vec();
    env.push(("HOMELAB_FORGE_RETRY_MS", "1"));
    lab.homelab_env(&args, &env)
}

fn markdown(lab: &Lab, id: &str) -> String {
    let out = lab.homelab(&["show", &format!("repo/plans/{id}.plan"), "--format", "markdown"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // As printed: the runtime roots (`--root rt`) name the lab's folder, which the harness
    // writes as `<lab>`.
    out.stdout.replace("<lab>", &lab.dir.path().display().to_string())
}

fn comments(forge: &Standin) -> Vec<String> {
    forge.with(|s| s.comments.iter().map(|(_, c)| c["body"].as_str().unwrap().to_owned()).collect())
}

fn count(forge: &Standin, method: &str, path: &str) -> usize {
    forge.requests().iter().filter(|r| r.method == method && r.path.contains(path)).count()
}

#[test]
fn pr_opens_a_pull_request_with_the_plan_file_its_comment_and_a_pending_status() {
    let (lab, _key, id) = lab_with_plan();
    let forge = Standin::start("me", "homelab", TOKEN);
    lab.write(
        "repo/inventory/forge.yaml",
        format!(
            "url: {}\nrepo: me/homelab\nbase: main\noperator_url: https://ops.lab/\n",
            forge.url
        ),
    );
    // Settings from inventory/forge.yaml alone.
    let out = lab
        .homelab_env(&["pr", &format!("repo/plans/{id}.plan")], &[("HOMELAB_FORGE_TOKEN", TOKEN)]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.starts_with("pull request #1 created: "), "{}", out.stdout);

    let branch = format!("plan/{id}");
    let file = forge.with(|s| s.files.get(&(branch.clone(), format!("plans/{id}.plan"))).cloned());
    assert_eq!(
        file.as_deref(),
        Some(lab.plan_file(&id).as_bytes()),
        "the plan file, byte for byte"
    );
    let (head, base, title) = forge.with(|s| {
        assert_eq!(s.pulls.len(), 1);
        let p = &s.pulls[0];
        (p["head"]["ref"].clone(), p["base"]["ref"].clone(), p["title"].clone())
    });
    assert_eq!((head.as_str(), base.as_str()), (Some(branch.as_str()), Some("main")));
    assert!(title.as_str().unwrap().contains(&id), "{title}");

    // The comment is the marker and exactly what `show --format markdown` prints.
    assert_eq!(comments(&forge), vec![format!("<!-- homelab-plan -->\n{}", markdown(&lab, &id))]);

    let statuses = forge.with(|s| s.statuses.clone());
    assert_eq!(statuses.len(), 1);
    let head_sha = forge.with(|s| s.branches[&branch].clone());
    assert_eq!(statuses[0].0, head_sha, "the status is on the branch's head");
    assert_eq!(statuses[0].1["state"], "pending");
    assert_eq!(statuses[0].1["context"], "homelab/plan");
    assert_eq!(statuses[0].1["target_url"], format!("https://ops.lab/plans/{id}"));

    // Again: nothing new on the forge but a fresh status.
    let again = lab
        .homelab_env(&["pr", &format!("repo/plans/{id}.plan")], &[("HOMELAB_FORGE_TOKEN", TOKEN)]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(again.stdout.contains("pull request #1 unchanged"), "{}", again.stdout);
    assert!(again.stdout.contains("plan comment unchanged"), "{}", again.stdout);
    forge.with(|s| {
        assert_eq!((s.pulls.len(), s.comments.len(), s.statuses.len()), (1, 1, 2));
    });
    assert_eq!(count(&forge, "POST", "/contents/"), 1);
    assert_eq!(count(&forge, "PATCH", "/"), 0);
}

#[test]
fn a_new_plan_for_the_same_pull_request_edits_its_one_comment() {
    let (lab, key, first) = lab_with_plan();
    let forge = Standin::start("me", "homelab", TOKEN);
    let out = pr(&lab, &forge, &first, &["--branch", "drift/chelsty"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // A plan made a second later has another id.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = lab.plan(&key);
    assert_ne!(first, second);
    let out = pr(&lab, &forge, &second, &["--branch", "drift/chelsty"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("pull request #1 updated"), "{}", out.stdout);
    assert!(out.stdout.contains("plan comment updated"), "{}", out.stdout);

    let all = comments(&forge);
    assert_eq!(all.len(), 1, "one comment, edited: {all:#?}");
    assert!(all[0].contains(&second) && !all[0].contains(&first), "{}", all[0]);
    assert_eq!(count(&forge, "PATCH", "/issues/comments/"), 1);
    forge.with(|s| {
        assert_eq!(s.pulls.len(), 1);
        assert!(s.pulls[0]["title"].as_str().unwrap().contains(&second));
        assert!(s
            .files
            .contains_key(&("drift/chelsty".to_owned(), format!("plans/{second}.plan"))));
        // The second status is on the commit that added the second plan.
        assert_eq!(s.statuses.len(), 2);
        assert_eq!(s.statuses[1].0, s.branches["drift/chelsty"]);
        assert_ne!(s.statuses[0].0, s.statuses[1].0);
    });
}

/// The base lab with `n` more web services on `alpha` (`pad-000`, ...): a plan whose Markdown,
/// one line per change even with its diffs left out, outgrows a comment.
fn lab_with_services(n: usize) -> (Lab, Key) {
    let lab = Lab::new();
    let key = lab.keygen("alice");
    lab.allow(&[("alice", "", &key)]);
    lab.policy("24h", 1, &["alice"]);
    let mut hosts = lab.read("repo/hosts/alpha/services.yaml");
    for i in 0..n {
        let name = format!("pad-{i:03}");
        for f in
            ["README.md", "docker-compose.yml", "env.example", "healthcheck.sh", "service.yaml"]
        {
            let text = lab.read(&format!("repo/services/web/{f}"));
            let text = text
                .replace("name: web", &format!("name: {name}"))
                .replace("  web:", &format!("  {name}:"))
                .replace("container_name: web", &format!("container_name: {name}"))
                .replace("# web", &format!("# {name}"));
            lab.write(&format!("repo/services/{name}/{f}"), text);
        }
        hosts.push_str(&format!("  - name: {name}\n    exposure: tailnet\n"));
    }
    lab.write("repo/hosts/alpha/services.yaml", hosts);
    lab.git_commit();
    (lab, key)
}

#[test]
fn a_plan_longer_than_a_comment_may_be_is_cut_with_a_link_to_the_plan_file() {
    let (lab, key) = lab_with_services(600);
    let id = lab.plan(&key);
    assert!(markdown(&lab, &id).len() > 65_535, "the plan must not fit in one comment");
    let forge = Standin::start("me", "homelab", TOKEN);
    let out = pr(&lab, &forge, &id, &[]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("cut to fit"), "{}", out.stdout);
    let all = comments(&forge);
    assert_eq!(all.len(), 1);
    let body = &all[0];
    assert!(body.len() <= 65_535, "{} bytes", body.len());
    assert!(body.starts_with("<!-- homelab-plan -->\n### homelab plan"), "{}", &body[..200]);
    let link = format!(
        "[`plans/{id}.plan`]({}/me/homelab/src/branch/plan/{id}/plans/{id}.plan)",
        forge.url
    );
    assert!(body.trim_end().ends_with(&format!("{link}.")), "{}", &body[body.len() - 300..]);
    assert_eq!(body.lines().filter(|l| l.trim_start().starts_with("```")).count() % 2, 0);
}

#[test]
fn status_sets_the_state_of_the_plans_branch_head_for_the_executor() {
    let (lab, _key, id) = lab_with_plan();
    let forge = Standin::start("me", "homelab", TOKEN);
    assert_eq!(pr(&lab, &forge, &id, &[]).code, 0);
    for state in ["success", "failure", "error"] {
        let out = pr(&lab, &forge, &id, &["--status", state]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let last = forge.with(|s| s.statuses.last().unwrap().clone());
        assert_eq!(last.1["state"], state);
        assert_eq!(last.0, forge.with(|s| s.branches[&format!("plan/{id}")].clone()));
    }
    // No pull request yet for this branch: a clear error, nothing posted.
    let out = pr(&lab, &forge, &id, &["--status", "success", "--branch", "plan/none"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("the branch `plan/none` is not on `me/homelab`"), "{}", out.stderr);
}

/// Each error answer: a message naming the call and what to do, exit 1, and no more requests
/// than the retries allow (counted on the stand-in).
#[test]
fn each_error_answer_says_what_failed_and_what_to_do_without_a_retry_storm() {
    let (lab, _key, id) = lab_with_plan();
    let branches = format!("GET /api/v1/repos/me/homelab/branches/plan/{id}`");
    let far = (std::time::SystemTime::now() + std::time::Duration::from_secs(3600))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    // (case, how the stand-in misbehaves, what stderr says, more arguments, requests made)
    type Case<'a> = (&'a str, Box<dyn Fn(&Standin)>, Vec<&'a str>, &'a [&'a str], usize);
    let cases: Vec<Case> = vec![
        (
            "401",
            Box::new(|_| {}),
            vec![
                "refused the token on `",
                "(401 Unauthorized: \"token is required\")",
                "HOMELAB_FORGE_TOKEN",
            ],
            &["--token-file", "keys/wrong-token"],
            1,
        ),
        (
            "403",
            Box::new(|f| f.fail("GET", "/branches/", 403, 9)),
            vec!["Forgejo forbids `", "(403 Forbidden", "write access to `me/homelab`"],
            &[],
            1,
        ),
        (
            "404",
            Box::new(|_| {}),
            vec![
                "has no `POST /api/v1/repos/me/nope/contents/plans/",
                "(404 Not Found",
                "check that the repository `me/nope` exists",
            ],
            &["--repo-slug", "me/nope"],
            2,
        ),
        (
            "409",
            Box::new(|f| f.fail("POST", "/pulls", 409, 9)),
            vec![
                "conflict on `POST /api/v1/repos/me/homelab/pulls` (409 Conflict",
                "run `homelab pr` again",
            ],
            &[],
            5,
        ),
        (
            "422",
            Box::new(|f| f.fail("POST", "/contents/", 422, 9)),
            vec![
                "rejected `POST /api/v1/repos/me/homelab/contents/plans/",
                "as invalid (422 Unprocessable Entity",
            ],
            &[],
            2,
        ),
        (
            "500",
            Box::new(|f| f.fail("GET", "/branches/", 500, 99)),
            vec![&branches, "(500: \"stand-in answers 500\") 4 times in a row", "try again later"],
            &[],
            4,
        ),
        (
            "429 asking for longer than homelab waits",
            Box::new(|f| f.fail_with("GET", "/branches/", 429, 99, &[("Retry-After", "120")])),
            vec!["is rate limiting `", "(HTTP 429); it asks to wait 120 s, still after 1 try"],
            &[],
            1,
        ),
        (
            "403 with the quota spent",
            Box::new(move |f| {
                f.fail_with(
                    "GET",
                    "/branches/",
                    403,
                    99,
                    &[("X-RateLimit-Remaining", "0"), ("X-RateLimit-Reset", far.as_str())],
                )
            }),
            vec!["is rate limiting `", "(HTTP 403); it asks to wait"],
            &[],
            1,
        ),
    ];
    lab.write("keys/wrong-token", "not-the-token\n");
    for (name, setup, expected, extra, requests) in cases {
        let forge = Standin::start("me", "homelab", TOKEN);
        setup(&forge);
        let out = pr(&lab, &forge, &id, extra);
        assert_eq!(out.code, 1, "{name}: {}{}", out.stdout, out.stderr);
        for e in expected {
            assert!(out.stderr.contains(e), "{name}: no {e:?} in\n{}", out.stderr);
        }
        assert_eq!(forge.requests().len(), requests, "{name}: {:#?}", forge.requests());
        assert!(forge.with(|s| s.statuses.is_empty()), "{name}: a status was set");
    }
}

/// 5xx and 429 are retried with a pause, and a run that gets through ends as one that never
/// met them.
#[test]
fn a_server_error_and_a_rate_limit_that_pass_are_retried() {
    let (lab, _key, id) = lab_with_plan();
    let forge = Standin::start("me", "homelab", TOKEN);
    forge.fail("GET", "/branches/", 502, 2);
    forge.fail_with("POST", "/statuses/", 429, 1, &[("Retry-After", "0")]);
    let out = pr(&lab, &forge, &id, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // branch, file, pulls list, pull, comments list, comment, status: 7, plus 3 retried.
    assert_eq!(forge.requests().len(), 10, "{:#?}", forge.requests());
    assert_eq!(forge.with(|s| s.statuses.len()), 1);
}

#[test]
fn a_forge_that_cannot_be_reached_is_tried_a_bounded_number_of_times() {
    let (lab, _key, id) = lab_with_plan();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let out = lab.homelab_env(
        &["pr", &format!("repo/plans/{id}.plan"), "--forge", &url, "--repo-slug", "me/homelab"],
        &[("HOMELAB_FORGE_TOKEN", TOKEN), ("HOMELAB_FORGE_RETRY_MS", "1")],
    );
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains(&format!("cannot reach Forgejo at `{url}`")), "{}", out.stderr);
    assert!(out.stderr.contains("after 4 tries"), "{}", out.stderr);
}

#[test]
fn missing_settings_and_token_are_named_with_their_fix() {
    let (lab, _key, id) = lab_with_plan();
    let plan = format!("repo/plans/{id}.plan");
    let out = lab.homelab_env(&["pr", &plan], &[("HOMELAB_FORGE_TOKEN", TOKEN)]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("no Forgejo server: pass --forge"), "{}", out.stderr);
    let out = lab.homelab(&["pr", &plan, "--forge", "https://f.lab", "--repo-slug", "me/h"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("no Forgejo token: set $HOMELAB_FORGE_TOKEN"), "{}", out.stderr);
    lab.write("repo/inventory/forge.yaml", "url: https://f.lab\nrepository: me/h\n");
    let out = lab.homelab_env(&["pr", &plan], &[("HOMELAB_FORGE_TOKEN", TOKEN)]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("`inventory/forge.yaml` is not valid"), "{}", out.stderr);
}

/// With every trace on, through success and failure, from the environment and from a file,
/// the token is in no byte of the output — even when the server echoes it.
#[test]
fn the_token_appears_nowhere_in_the_output() {
    let (lab, _key, id) = lab_with_plan();
    lab.write("keys/token", format!("{TOKEN}\n"));
    let forge = Standin::start("me", "homelab", TOKEN);
    forge.state.lock().unwrap().echo_auth = true;
    let trace = ("RUST_LOG", "trace");
    let runs = [
        pr_env(&lab, &forge, &id, &[], &[("HOMELAB_FORGE_TOKEN", TOKEN), trace]),
        pr_env(&lab, &forge, &id, &["--token-file", "keys/token"], &[trace]),
        pr_env(&lab, &forge, &id, &["--status", "success", "--token-file", "keys/token"], &[trace]),
        pr_env(
            &lab,
            &forge,
            &id,
            &["--repo-slug", "me/nope"],
            &[("HOMELAB_FORGE_TOKEN", TOKEN), trace],
        ),
    ];
    assert_eq!(runs.iter().map(|o| o.code).collect::<Vec<_>>(), [0, 0, 0, 1]);
    assert!(runs[0].stderr.contains("forgejo call"), "traces are on: {}", runs[0].stderr);
    // A wrong token that the server echoes back in its 401 is scrubbed too.
    let wrong = "wr0ng-s3cret-t0ken";
    let echoed = pr_env(&lab, &forge, &id, &[], &[("HOMELAB_FORGE_TOKEN", wrong), trace]);
    assert_eq!(echoed.code, 1);
    assert!(echoed.stderr.contains("invalid credentials: token <token>"), "{}", echoed.stderr);
    for out in runs.iter().chain([&echoed]) {
        for secret in [TOKEN, wrong] {
            assert!(
                !out.stdout.contains(secret) && !out.stderr.contains(secret),
                "{secret} leaked"
            );
        }
    }
    // It was sent, in the header and only there.
    let sent = forge.requests();
    assert!(sent.iter().any(|r| r.authorization.as_deref() == Some(&format!("token {TOKEN}"))));
    assert!(sent.iter().all(|r| !r.body.contains(TOKEN) && !r.path.contains(TOKEN)));
}

#[test]
fn plan_with_pr_saves_the_plan_and_opens_its_pull_request() {
    let lab = Lab::new();
    let key = lab.keygen("alice");
    lab.allow(&[("alice", "", &key)]);
    lab.policy("24h", 1, &["alice"]);
    let forge = Standin::start("me", "homelab", TOKEN);
    lab.write("repo/inventory/forge.yaml", format!("url: {}\nrepo: me/homelab\n", forge.url));
    lab.git_commit();
    let args = [
        "plan",
        "--transport",
        "local",
        "--root",
        "rt",
        "--controller-root",
        "rt",
        "--key",
        key.arg(),
        "--pr",
    ];
    let out = lab.homelab_env(&args, &[("HOMELAB_FORGE_TOKEN", TOKEN)]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let id = out.stdout.lines().next().unwrap().strip_prefix("plan ").unwrap().to_owned();
    assert!(out.stderr.contains("pull request #1 created"), "{}", out.stderr);
    assert_eq!(comments(&forge), vec![format!("<!-- homelab-plan -->\n{}", markdown(&lab, &id))]);
    assert_eq!(forge.with(|s| s.statuses[0].1["state"].clone()), "pending");

    // No token: the plan is still saved, and the message says how to open the pull request.
    let out = lab.homelab(&args);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("no Forgejo token"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("the plan was saved; open its pull request with `homelab pr repo/plans/"),
        "{}",
        out.stderr
    );
}

#[test]
fn pr_help_has_examples_and_names_the_token_variable() {
    let out = crate::support::homelab_in(&crate::support::repo_root(), &["pr", "--help"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for want in [
        "Examples:",
        "homelab pr plans/",
        "$HOMELAB_FORGE_TOKEN",
        "--status <STATE>",
        "docs/forgejo.md",
    ] {
        assert!(out.stdout.contains(want), "no {want:?} in\n{}", out.stdout);
    }
}

/// `https://` is spoken with TLS (rustls is built in): against the plain-HTTP stand-in the
/// handshake fails, and nothing is sent in clear text to a server that was meant to be TLS.
#[test]
fn an_https_forge_is_spoken_to_with_tls() {
    let (lab, _key, id) = lab_with_plan();
    let forge = Standin::start("me", "homelab", TOKEN);
    let url = forge.url.replace("http://", "https://");
    let out = lab.homelab_env(
        &["pr", &format!("repo/plans/{id}.plan"), "--forge", &url, "--repo-slug", "me/homelab"],
        &[("HOMELAB_FORGE_TOKEN", TOKEN), ("HOMELAB_FORGE_RETRY_MS", "1")],
    );
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains(&format!("cannot reach Forgejo at `{url}`")), "{}", out.stderr);
    // The stand-in was connected to (4 tries), but saw a TLS handshake, never an HTTP request.
    assert_eq!(forge.with(|s| s.connections), 4, "no connection was made: is TLS built in?");
    assert!(forge.requests().is_empty(), "{:#?}", forge.requests());
}

/// A plan's words make no link and notify nobody in the pull-request comment (issue 19,
/// item 6): a planner-chosen `reason` holding `[x](javascript:…)`, an image, a reference
/// link and `@mentions` reaches the comment with the brackets escaped and each mention broken
/// by a zero-width space; `owner@saturn` stays as it is.
#[test]
fn links_and_mentions_in_a_plans_words_are_neutralised_in_the_comment() {
    let (lab, key, id) = lab_with_plan();
    let hostile = "see [here](javascript:alert(1)) ![i](https://x/t.png) [r][1] @admin (@ops) by owner@saturn\n[1]: javascript:alert(2)";
    let text = lab.plan_file(&id);
    let body = crate::support::split_plan(&text).0;
    let body: String = body
        .lines()
        .map(|l| {
            if l.starts_with("reason ") {
                format!("reason {}\n", hostile.replace('\n', " "))
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let sig = key.ssh_sign("homelab-plan", body.as_bytes());
    let id = crate::support::id_of(body.as_bytes());
    lab.write(&format!("repo/plans/{id}.plan"), format!("{body}{sig}"));
    let forge = Standin::start("me", "homelab", TOKEN);
    // The review refuses a reason the render does not give (the comment says so), and the
    // comment shows the plan's words all the same, in the change list and in the refusal.
    let out = pr(&lab, &forge, &id, &[]);
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    let all = comments(&forge);
    let comment = &all[0];
    assert!(comment.contains("REFUSED"), "{comment}");
    assert!(comment.matches("\\[here\\](javascript:alert(1))").count() >= 2, "{comment}");
    assert!(comment.contains("owner@saturn"), "{comment}");
    for raw in ["[here](", "![i](", "[r][1]", "[1]:", " @admin", "(@ops)"] {
        assert!(!comment.contains(raw), "`{raw}` reached the comment:\n{comment}");
    }
    assert!(comment.contains("\\[here\\](javascript:alert(1))"), "{comment}");
    assert!(comment.contains("@\u{200b}admin") && comment.contains("(@\u{200b}ops)"), "{comment}");
}
