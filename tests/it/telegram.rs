//! `homelab telegram`: the bot against a stand-in Bot API (`telegram_standin`), driven by the
//! real binary with real signed plans and keys made by the real `ssh-keygen`. A press is what
//! Telegram would send; the approval the bot writes is checked by `ssh-keygen -Y verify` and by
//! `homelab apply`'s pre-flight. The lab end-to-end test (a supervisor's plan approved from
//! Telegram and applied by the executor) is at the end.

use std::fs;
use std::time::Duration;

use crate::support::{split_plan, ssh_verify, Key, Lab, Output};
use crate::telegram_standin::Standin;

const TOKEN: &str = "7123456789:AAF-t3st_t0ken-QWERTYUIOPASDFGHJKLZXCV";
const CHAT: i64 = 5_550_001;
/// Granted creates on every node of the base fixture.
const OWNER: u64 = 111;
/// Named in the policy, granted nothing: may reject only.
const PARTNER: u64 = 222;
/// Not named anywhere.
const STRANGER: u64 = 999;

/// The base fixture with a planner key (plans only), an operator key (a human approver), the
/// bot's key (allowed as `telegram:111,telegram:222`), and a policy (`rule` is the default
/// approval rule's YAML, indented under `default:`).
struct Bot {
    lab: Lab,
    tg: Standin,
    planner: Key,
    operator: Key,
}

impl Bot {
    fn new(rule: &str) -> Bot {
        let lab = Lab::new();
        let planner = lab.keygen("planner");
        let operator = lab.keygen("operator");
        let bot = lab.keygen("bot");
        lab.allow(&[
            ("planner@lab", "namespaces=\"homelab-plan\"", &planner),
            ("operator@lab", "namespaces=\"homelab-approve\"", &operator),
            ("telegram:111,telegram:222", "namespaces=\"homelab-approve\"", &bot),
        ]);
        lab.write(
            "repo/inventory/policy.yaml",
            format!(
                "plan_ttl: 24h\nallow_uncommitted: true\napprovals:\n  default:\n{rule}telegram:\n  users:\n    - id: {OWNER}\n      name: owner\n      nodes: [alpha, edge-a, edge-b]\n      changes: [create, restart]\n    - id: {PARTNER}\n      name: partner\n"
            ),
        );
        let v = lab.homelab(&["validate"]);
        assert_eq!(v.code, 0, "{}{}", v.stdout, v.stderr);
        Bot { lab, tg: Standin::start(TOKEN, CHAT), planner, operator }
    }

    /// A bot may approve alone: `humans: 0`.
    fn alone() -> Bot {
        Bot::new("    required: 1\n    humans: 0\n    approvers: [operator@lab]\n")
    }

    fn plan(&self) -> String {
        self.lab.plan(&self.planner)
    }

    fn run_env(&self, extra: &[&str], env: &[(&str, &str)]) -> Output {
        let chat = CHAT.to_string();
        let mut args = vec![
            "telegram",
            "--once",
            "--api-url",
            self.tg.url.as_str(),
            "--chat",
            chat.as_str(),
            "--key",
            "keys/bot",
            "--controller-root",
            "rt",
            "--transport",
            "local",
            "--root",
            "rt",
        ];
        args.extend(extra);
        let mut env = env.to_vec();
        env.push(("HOMELAB_TELEGRAM_RETRY_MS", "1"));
        let out = self.lab.homelab_env(&args, &env);
        for text in [&out.stdout, &out.stderr] {
            assert!(!text.contains(TOKEN), "the token leaked:\n{text}");
            assert!(!text.contains("panicked"), "{text}");
        }
        out
    }

    /// One pass of the bot with the token in the environment; it must succeed.
    fn run(&self) -> Output {
        let out = self.run_env(&[], &[("HOMELAB_TELEGRAM_TOKEN", TOKEN)]);
        assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
        out
    }

    /// The message sent for plan `id`.
    fn message_of(&self, id: &str) -> crate::telegram_standin::Msg {
        self.tg
            .messages()
            .into_iter()
            .find(|m| m.text.contains(&format!("plan {id}")))
            .unwrap_or_else(|| panic!("no message for plan {id}: {:#?}", self.tg.messages()))
    }

    fn approved(&self, id: &str) -> Option<String> {
        fs::read_to_string(self.lab.path(&format!("repo/plans/{id}.approved"))).ok()
    }

    /// A press of `label` on plan `id`'s message by `user`, and a pass of the bot; the press's
    /// id and the answer the bot asked to show.
    fn press(&self, id: &str, user: u64, label: &str) -> (String, String) {
        let m = self.message_of(id);
        let cb = self.tg.press(user, m.message_id, &m.button(label));
        self.run();
        let asked = self.tg.answers_asked(&cb);
        assert_eq!(asked.len(), 1, "one answer to press {cb}: {asked:?}");
        (cb, asked[0].clone())
    }
}

/// `ssh-keygen -Y verify` of every signature block in `approved` over the plan's signed bytes,
/// as `principal`: how many verify.
fn verified_blocks(lab: &Lab, id: &str, approved: &str, principal: &str) -> usize {
    let plan = lab.plan_file(id);
    let (body, _) = split_plan(&plan);
    let mut n = 0;
    for (i, block) in approved.split_inclusive("-----END SSH SIGNATURE-----\n").enumerate() {
        let sig = lab.path(&format!("sig-{i}"));
        fs::write(&sig, block).unwrap();
        let ran = ssh_verify(
            &lab.path("repo/inventory/allowed_signers"),
            principal,
            "homelab-approve",
            &sig,
            body.as_bytes(),
        );
        n += usize::from(ran.ok);
    }
    n
}

#[test]
fn a_pending_plan_is_announced_and_an_allowed_press_signs_an_approval_apply_accepts() {
    let b = Bot::alone();
    let id = b.plan();
    let out = b.run();
    assert!(out.stdout.contains(&format!("sent plan {id}")), "{}", out.stdout);
    let msgs = b.tg.messages();
    assert_eq!(msgs.len(), 1, "{msgs:#?}");
    let m = &msgs[0];
    assert_eq!(m.chat, CHAT);
    for want in [
        format!("plan {id} awaits approval"),
        "nodes: ALPHA, EDGE-A, EDGE-B".to_owned(),
        "planned by planner@lab".to_owned(),
        "+ web create: not deployed on the node yet".to_owned(),
        format!("homelab approve plans/{id}.plan"),
    ] {
        assert!(m.text.contains(&want), "`{want}` in:\n{}", m.text);
    }
    let buttons = m.buttons();
    assert_eq!(buttons.len(), 2, "{buttons:?}");
    assert!(buttons[0].0.contains("Approve") && buttons[1].0.contains("Reject"));
    for (_, data) in &buttons {
        assert!(data.len() <= 64 && data.contains(&id), "{data}");
    }
    assert!(b.approved(&id).is_none());

    // The owner presses Approve: the bot signs as telegram:111, as `ssh-keygen` verifies.
    let (_, answer) = b.press(&id, OWNER, "Approve");
    assert_eq!(answer, format!("Approved plan {id} as telegram:111."));
    let approved = b.approved(&id).expect("an approval beside the plan");
    assert_eq!(verified_blocks(&b.lab, &id, &approved, "telegram:111"), 1);
    let m = b.message_of(&id);
    assert!(m.text.contains("approved by telegram:111 (User111 @user111)"), "{}", m.text);
    assert_eq!(m.buttons().len(), 2, "still pending: the buttons stay");

    // `homelab apply`'s pre-flight accepts it (prepare only: no containers here).
    let out = b.lab.apply_with(&id, &["--stage", "prepare"]);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains("pre-flight passed"), "{all}");

    // Nothing new: no second message, no second answer.
    let before = b.tg.requests("sendMessage").len();
    b.run();
    assert_eq!(b.tg.requests("sendMessage").len(), before);
    assert_eq!(b.tg.requests("answerCallbackQuery").len(), 1);
}

#[test]
fn refused_presses_approve_nothing_and_say_why() {
    let b = Bot::alone();
    let id = b.plan();
    b.run();
    let m = b.message_of(&id);
    let refused = |answer: &str, note: &str, cb: &str| {
        assert!(
            answer.starts_with("Refused: ") || answer.starts_with("Not approved: "),
            "{answer}"
        );
        let text = b.message_of(&id).text;
        assert!(text.contains(note), "`{note}` in the message:\n{text}");
        assert!(b.approved(&id).is_none(), "nothing approved after press {cb}");
    };

    // A user the policy does not name.
    let (cb, answer) = b.press(&id, STRANGER, "Approve");
    assert_eq!(answer, "Refused: you are not named in the homelab's policy. Nothing done.");
    refused(
        &answer,
        "Telegram user 999 (User999 @user999) is not named in inventory/policy.yaml (telegram.users); nothing done",
        &cb,
    );

    // A user named but granted nothing.
    let (cb, answer) = b.press(&id, PARTNER, "Approve");
    assert!(answer.contains("`telegram:222` may not approve create on node `alpha`"), "{answer}");
    refused(&answer, "refused: telegram:222 (User222 @user222) did not approve", &cb);

    // Data the bot did not make: the right shape, no valid MAC.
    let forged = format!("a:{id}:{}:AAAAAAAAAAAAAAAAAAAAAA", &m.button("Approve")[19..31]);
    let cb = b.tg.press(OWNER, m.message_id, &forged);
    b.run();
    let answer = b.tg.answers_asked(&cb).remove(0);
    assert_eq!(answer, "Refused: this button was not made by this bot. Nothing done.");
    refused(&answer, "carried data this bot did not make (forged", &cb);

    // The owner approves; pressing again is a duplicate; a replay of the press is refused.
    let approved_cb = {
        let (cb, answer) = b.press(&id, OWNER, "Approve");
        assert!(answer.starts_with("Approved"), "{answer}");
        cb
    };
    let first = b.approved(&id).unwrap();
    let (_, answer) = b.press(&id, OWNER, "Approve");
    assert_eq!(answer, "Refused: already approved by this bot; nothing more signed.");
    assert!(b.message_of(&id).text.contains("(duplicate); nothing more signed"));
    b.tg.replay(&approved_cb);
    b.run();
    let asked = b.tg.answers_asked(&approved_cb);
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert_eq!(asked[1], "Refused: this press was handled already. Nothing done.");
    assert_eq!(b.tg.answers_to(&approved_cb).len(), 1, "Telegram refuses a second answer");
    assert!(b.message_of(&id).text.contains("was handled already (replayed)"));
    assert_eq!(b.approved(&id).unwrap(), first, "one signature, however often pressed");

    // A plan changed since its message: stale.
    std::thread::sleep(Duration::from_millis(1100));
    let second = b.plan();
    assert_ne!(second, id);
    b.run();
    let path = b.lab.path(&format!("repo/plans/{second}.plan"));
    let text = fs::read_to_string(&path).unwrap();
    fs::write(&path, text.replacen("not deployed", "NOT deployed", 1)).unwrap();
    let (cb, answer) = b.press(&second, OWNER, "Approve");
    assert_eq!(answer, "Refused: the plan changed since this message. Nothing done.");
    assert!(b.approved(&second).is_none(), "{cb}");
    assert!(b
        .message_of(&second)
        .text
        .contains(&format!("plan {second} changed since this message")));

    // A plan no longer pending (superseded, here moved by hand).
    fs::write(&path, text).unwrap();
    fs::create_dir_all(b.lab.path("rt/actions/failed")).unwrap();
    fs::rename(
        b.lab.path(&format!("rt/actions/pending/{second}.json")),
        b.lab.path(&format!("rt/actions/failed/{second}.json")),
    )
    .unwrap();
    let m2 = b.message_of(&second);
    let cb = b.tg.press(OWNER, m2.message_id, &m2.button("Approve"));
    b.run();
    assert_eq!(
        b.tg.answers_asked(&cb),
        ["Refused: the plan is no longer pending (failed). Nothing done."]
    );
    assert!(b.approved(&second).is_none());
}

#[test]
fn a_bot_approval_never_stands_alone_where_the_policy_asks_for_a_human_key() {
    // `humans` defaults to 1.
    let b = Bot::new("    required: 1\n    approvers: [operator@lab]\n");
    let id = b.plan();
    b.run();
    let (_, answer) = b.press(&id, OWNER, "Approve");
    assert!(
        answer.starts_with(
            "Not approved: node `alpha` needs 1 approval by a human's key of `operator@lab`"
        ),
        "{answer}"
    );
    assert!(b.approved(&id).is_none(), "nothing signed");
    assert!(b
        .message_of(&id)
        .text
        .contains("a bot's approval (`telegram:<id>`) never counts as the only one"));

    // A bot signature put there by other means does not pass apply either.
    let bot = Key {
        name: "bot".into(),
        path: b.lab.path("keys/bot"),
        public: String::new(),
        fingerprint: String::new(),
    };
    let plan = b.lab.plan_file(&id);
    let (body, _) = split_plan(&plan);
    b.lab.write(
        &format!("repo/plans/{id}.approved"),
        bot.ssh_sign("homelab-approve", body.as_bytes()),
    );
    let out = b.lab.apply_with(&id, &["--stage", "prepare"]);
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("needs 1 approval by a human's key"), "{}", out.stderr);
    fs::remove_file(b.lab.path(&format!("repo/plans/{id}.approved"))).unwrap();

    // With the operator's approval first, the bot's press adds its signature.
    let a = b.lab.approve(&id, &b.operator);
    assert_eq!(a.code, 0, "{}", a.stderr);
    let (_, answer) = b.press(&id, OWNER, "Approve");
    assert!(answer.starts_with("Approved"), "{answer}");
    let approved = b.approved(&id).unwrap();
    assert_eq!(verified_blocks(&b.lab, &id, &approved, "telegram:111"), 1);
    assert_eq!(verified_blocks(&b.lab, &id, &approved, "operator@lab"), 1);
    let out = b.lab.apply_with(&id, &["--stage", "prepare"]);
    assert!(
        format!("{}{}", out.stdout, out.stderr).contains("pre-flight passed"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_reject_press_records_a_rejection_that_apply_refuses() {
    let b = Bot::alone();
    let id = b.plan();
    b.run();
    // Approved by a human first: the rejection still wins.
    let a = b.lab.approve(&id, &b.operator);
    assert_eq!(a.code, 0, "{}", a.stderr);
    let (_, answer) = b.press(&id, PARTNER, "Reject");
    assert_eq!(answer, format!("Rejected plan {id}."));
    let record: serde_json::Value =
        serde_json::from_str(&b.lab.read(&format!("repo/plans/{id}.rejected"))).unwrap();
    assert_eq!(record["state"], "rejected");
    assert!(record["by"].as_str().unwrap().starts_with("telegram:222"), "{record}");
    assert!(b.lab.path(&format!("rt/state/rejected/{id}.json")).exists());
    assert!(b.lab.path(&format!("rt/actions/failed/{id}.json")).exists());
    // Like `homelab reject`, the bot records it on the plan's nodes too, and says so.
    b.lab.assert_rejected_on_nodes(&id, "telegram:222");
    let m = b.tg.message(b.message_of(&id).message_id);
    assert!(m.text.contains("; recorded on "), "{}", m.text);
    assert!(!m.text.contains("NOT recorded"), "{}", m.text);
    let out = b.lab.apply(&id);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("was rejected by telegram:222"), "{}", out.stderr);
    // The next pass tells the outcome on the message, and the buttons go.
    b.run();
    let m = b.tg.message(b.message_of(&id).message_id);
    assert!(m.text.contains("❌ not applied"), "{}", m.text);
    assert!(m.buttons().is_empty(), "{m:?}");
}

/// A node the rejection cannot be written on is named on the message; the rejection itself
/// stands (beside the plan, on the controller, on the other nodes).
#[test]
fn a_reject_press_names_the_nodes_it_could_not_be_recorded_on() {
    let b = Bot::alone();
    let id = b.plan();
    b.run();
    let nodes = b.lab.plan_nodes(&id);
    let (blocked, others) = nodes.split_first().expect("the plan covers a node");
    // A file where the node's folder of rejections belongs: the write there fails.
    b.lab.write(&format!("rt/{blocked}/state/rejected"), "not a folder");
    let (_, answer) = b.press(&id, PARTNER, "Reject");
    assert!(answer.starts_with(&format!("Rejected plan {id}.")), "{answer}");
    assert!(answer.contains("Not recorded on some of its nodes"), "{answer}");
    assert!(b.lab.path(&format!("repo/plans/{id}.rejected")).exists());
    assert!(b.lab.path(&format!("rt/state/rejected/{id}.json")).exists());
    for node in others {
        assert!(b.lab.path(&format!("rt/{node}/state/rejected/{id}.json")).exists(), "{node}");
    }
    let m = b.tg.message(b.message_of(&id).message_id);
    assert!(m.text.contains("NOT recorded on "), "{}", m.text);
}

#[test]
fn results_and_incidents_are_announced() {
    let b = Bot::alone();
    let id = b.plan();
    b.run();
    // The executor's end of an action, as it writes it.
    let pending = b.lab.path(&format!("rt/actions/pending/{id}.json"));
    let mut record: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&pending).unwrap()).unwrap();
    record["state"] = "completed".into();
    record["result"] = serde_json::json!({ "at": "2026-11-30T01:00:00Z", "by": "executor test",
        "reason": "applied", "nodes": { "alpha": { "outcome": "applied", "detail": "" } } });
    b.lab.write(&format!("rt/actions/completed/{id}.json"), record.to_string());
    fs::remove_file(&pending).unwrap();

    // An incident, from an event through the observer.
    let out = b.lab.homelab(&[
        "events",
        "emit",
        "service_unhealthy",
        "error",
        "test",
        "web",
        "cid-1",
        "{\"error\": \"exited 137\"}",
        "--root",
        "rt",
        "--node",
        "alpha",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = b.lab.observe_once();
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);

    let out = b.run();
    assert!(out.stdout.contains(&format!("told plan {id} completed")), "{}", out.stdout);
    let m = b.message_of(&id);
    assert!(
        m.text.contains(
            "✅ applied (2026-11-30T01:00:00Z by executor test): applied\n  alpha: applied"
        ),
        "{}",
        m.text
    );
    assert!(m.buttons().is_empty());
    let incident =
        b.tg.messages()
            .into_iter()
            .find(|m| m.text.contains("incident"))
            .unwrap_or_else(|| panic!("{}", out.stdout));
    assert!(
        incident.text.contains("homelab incident on ALPHA: service unhealthy of web (error)"),
        "{}",
        incident.text
    );
    assert!(incident.text.contains("reason: exited 137"), "{}", incident.text);

    // Told once.
    let sent = b.tg.requests("sendMessage").len();
    let edits = b.tg.requests("editMessageText").len();
    b.run();
    assert_eq!(
        (b.tg.requests("sendMessage").len(), b.tg.requests("editMessageText").len()),
        (sent, edits)
    );
}

#[test]
fn rate_limits_and_server_errors_are_retried_and_a_long_wait_fails_fast() {
    let b = Bot::alone();
    let id = b.plan();
    // 429 asking for 1 s, then two 502s (retried a millisecond apart), then the message.
    b.tg.fail("sendMessage", 429, 1, Some(1));
    b.tg.fail("sendMessage", 502, 2, None);
    b.run();
    let sends = b.tg.requests("sendMessage");
    assert_eq!(sends.iter().map(|r| r.status).collect::<Vec<_>>(), [429, 502, 502, 200]);
    let waited = sends[1].at.duration_since(sends[0].at);
    assert!(waited >= Duration::from_secs(1), "retry_after honoured: waited {waited:?}");
    b.message_of(&id);

    // Asked to wait longer than the bot ever waits: it says so at once, and the next pass
    // sends what could not be sent.
    std::thread::sleep(Duration::from_millis(1100));
    let second = b.plan();
    b.tg.fail("sendMessage", 429, 1, Some(600));
    let started = std::time::Instant::now();
    let out = b.run_env(&[], &[("HOMELAB_TELEGRAM_TOKEN", TOKEN)]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        out.stdout.contains(&format!("cannot send plan {second}: Telegram is rate limiting `sendMessage` (429); it asks to wait 600 s")),
        "{}",
        out.stdout
    );
    b.run();
    b.message_of(&second);
}

#[test]
fn the_offset_is_kept_across_restarts_and_no_update_is_handled_twice() {
    let b = Bot::alone();
    let id = b.plan();
    b.run();
    let (cb, _) = b.press(&id, STRANGER, "Approve");
    let state: serde_json::Value =
        serde_json::from_str(&b.lab.read("rt/state/telegram/state.json")).unwrap();
    let handled = b.tg.with(|s| s.queries.len());
    assert_eq!(handled, 1);
    let offset = state["offset"].as_i64().unwrap();
    assert!(offset > 0, "{state}");
    // A new process: it asks from the kept offset, and the press is not answered again.
    b.run();
    let polls = b.tg.requests("getUpdates");
    assert_eq!(polls.last().unwrap().body["offset"], offset, "{:?}", polls.last());
    assert_eq!(b.tg.answers_asked(&cb).len(), 1);
    assert!(b.tg.with(|s| s.updates.is_empty()), "the offset confirmed the update");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode =
            fs::metadata(b.lab.path("rt/state/telegram/state.json")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the state holds the button secret");
    }
}

#[test]
fn the_token_never_appears_in_output_state_or_logs_and_a_bad_one_is_named_as_such() {
    let b = Bot::alone();
    let id = b.plan();
    // A wrong token: Telegram's 401, said without the token.
    let wrong = "7123456789:AAwrong-t0ken-0000000000000000000000";
    let out = b.run_env(&[], &[("HOMELAB_TELEGRAM_TOKEN", wrong), ("RUST_LOG", "trace")]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("Telegram refused the bot token on `getUpdates` (401 Unauthorized)"),
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains(wrong) && !out.stderr.contains(wrong),
        "{}{}",
        out.stdout,
        out.stderr
    );
    let refused = b.tg.requests("getUpdates");
    assert!(refused.iter().all(|r| r.token == wrong && r.status == 401), "{refused:?}");
    // Not of Telegram's form: named, not shown.
    let odd = "not a token at all";
    let out = b.run_env(&[], &[("HOMELAB_TELEGRAM_TOKEN", odd)]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("cannot read the Telegram bot token: it is not of the form"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains(odd));
    // From a file, with tracing on: the token is in no output, no state, no log line.
    b.lab.write("token", format!("{TOKEN}\n"));
    let out = b.run_env(&["--token-file", "token"], &[("RUST_LOG", "trace")]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("telegram call"), "tracing is on: {}", out.stderr);
    b.message_of(&id);
    let (_, _) = b.press(&id, OWNER, "Approve");
    for (path, (_, bytes)) in crate::support::Snapshot::of(b.lab.dir.path()).0 {
        if path == "token" {
            continue;
        }
        assert!(!String::from_utf8_lossy(&bytes).contains(TOKEN), "the token is in `{path}`");
    }
    // The stand-in saw it only in the path.
    assert!(b.tg.with(|s| s.requests.iter().all(|r| !r.body.to_string().contains(TOKEN))));
}

#[test]
fn a_key_that_may_approve_as_a_human_and_missing_settings_are_refused() {
    let b = Bot::alone();
    // The operator's key as the bot's: refused before anything is sent.
    let chat = CHAT.to_string();
    let out = b.lab.homelab_env(
        &[
            "telegram",
            "--once",
            "--api-url",
            &b.tg.url,
            "--chat",
            &chat,
            "--key",
            "keys/operator",
            "--controller-root",
            "rt",
        ],
        &[("HOMELAB_TELEGRAM_TOKEN", TOKEN)],
    );
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("may approve as `operator@lab`"), "{}", out.stderr);
    assert!(b.tg.with(|s| s.requests.is_empty()));
    // No chat.
    let out = b.lab.homelab_env(
        &["telegram", "--once", "--key", "keys/bot", "--controller-root", "rt"],
        &[("HOMELAB_TELEGRAM_TOKEN", TOKEN)],
    );
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains(
            "no Telegram chat: pass --chat ID, or set `chat_id` in inventory/telegram.yaml"
        ),
        "{}",
        out.stderr
    );
    // A policy that lists a bot principal as a plain approver is invalid, naming the line.
    b.lab.write(
        "repo/inventory/policy.yaml",
        "plan_ttl: 24h\napprovals:\n  default:\n    required: 1\n    approvers: [telegram:111]\ntelegram:\n  users:\n    - id: 111\n      nodes: [nowhere]\n      changes: [reboot]\n",
    );
    let out = b.lab.homelab(&["validate"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    let all = format!("{}{}", out.stdout, out.stderr);
    for want in [
        "inventory/policy.yaml:5",
        "expected a human's principal, found the bot principal `telegram:111`",
        "expected a node of inventory/topology.yaml, found `nowhere`",
        "expected one of create, update, restart, replace, delete, restore, trust, found `reboot`",
    ] {
        assert!(all.contains(want), "`{want}` in:\n{all}");
    }
}

/// Issue 12 end to end on a real node of the lab (sshd, Docker Engine, Compose v2): a container
/// stopped by hand → the supervisor's signed pending plan (and its pull request on the forge
/// stand-in) → a Telegram message → presses that approve nothing (a stranger; the owner while
/// the policy asks for a human key) and the executor applies nothing → the owner allows
/// restarts from Telegram alone → an Approve press → the executor applies → the message shows
/// the result and the pull request's commit status is `success`.
#[test]
fn a_supervisors_plan_approved_from_telegram_is_applied_and_the_message_shows_it() {
    use crate::executor::Site;
    use std::process::Command;
    let _one = crate::apply::LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new();
    let keygen = |name: &str, principal: &str, namespaces: &str| {
        let path = site.repo.path().join(format!(".{name}_key"));
        let made = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(made.status.success());
        let public = fs::read_to_string(path.with_extension("pub")).unwrap();
        let public: Vec<&str> = public.split_whitespace().take(2).collect();
        let signers = site.repo.path().join("inventory/allowed_signers");
        let text = fs::read_to_string(&signers).unwrap();
        fs::write(
            &signers,
            format!("{text}{principal} namespaces=\"{namespaces}\" {}\n", public.join(" ")),
        )
        .unwrap();
        path
    };
    let sup = keygen("supervisor", "supervisor@test", "homelab-plan");
    let bot = keygen("telegram", "telegram:111", "homelab-approve");
    let policy = |humans: u32| {
        site.write(
            "inventory/policy.yaml",
            &format!(
                "plan_ttl: 24h\nallow_uncommitted: true\napprovals:\n  default:\n    required: 1\n    approvers: [operator@test]\n  nodes:\n    alpha:\n      required: 1\n      humans: {humans}\n      approvers: [operator@test]\ntelegram:\n  users:\n    - id: {OWNER}\n      name: owner\n      nodes: [alpha]\n      changes: [restart]\n"
            ),
        )
    };
    policy(1);
    let forge = crate::forge_standin::Standin::start("me", "homelab", "f0rg3-t0k3n");
    site.write("inventory/forge.yaml", &format!("url: {}\nrepo: me/homelab\n", forge.url));
    let tg = Standin::start(TOKEN, CHAT);
    let v = site.homelab(&["validate"]);
    assert_eq!(v.code, 0, "{}{}", v.stdout, v.stderr);

    // The supervisor plans from a commit.
    let home = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .current_dir(site.repo.path())
            .args(args)
            .env("HOME", home.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env_remove("GIT_DIR")
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    fs::write(site.repo.path().join(".gitignore"), ".controller/\n.*_key*\n").unwrap();
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "-A"]);
    git(&["-c", "user.name=T", "-c", "user.email=t@lab", "commit", "-q", "-m", "homelab"]);
    let run = |args: &[&str]| -> Output {
        let out = site
            .command(args)
            .env("HOMELAB_FORGE_TOKEN", "f0rg3-t0k3n")
            .env("HOMELAB_FORGE_RETRY_MS", "1")
            .env("HOMELAB_TELEGRAM_TOKEN", TOKEN)
            .env("HOMELAB_TELEGRAM_RETRY_MS", "1")
            .output()
            .unwrap();
        let out = Output::from(out);
        assert!(!out.stdout.contains(TOKEN) && !out.stderr.contains(TOKEN));
        out
    };
    let chat = CHAT.to_string();
    let bot_key = bot.to_str().unwrap().to_owned();
    let telegram = || {
        let out =
            run(&["telegram", "--once", "--api-url", &tg.url, "--chat", &chat, "--key", &bot_key]);
        assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
        out
    };

    // Deployed through the executor, then the container stopped by hand.
    let first = site.plan();
    site.approve(&first);
    let out = site.executor();
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    git(&["add", "-A"]);
    git(&["-c", "user.name=T", "-c", "user.email=t@lab", "commit", "-q", "-m", "plan"]);
    // The bot's first pass: the first plan's result is history, not news.
    telegram();
    assert!(tg.messages().is_empty(), "{:#?}", tg.messages());
    let stop = site.lab.docker("alpha", &["stop", "web"]);
    assert!(stop.status.success());

    // The supervisor's plan and its pull request.
    let out = run(&["supervise", "--once", "--key", sup.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let pending = site.actions("pending");
    assert_eq!(pending.len(), 1, "{}", out.stdout);
    let id = pending[0].clone();
    let plan = site.repo.path().join(format!("plans/{id}.plan"));
    let out = run(&["pr", plan.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);

    // The message.
    let out = telegram();
    assert!(out.stdout.contains(&format!("sent plan {id}")), "{}", out.stdout);
    let m = tg.messages().into_iter().find(|m| m.text.contains(&id)).unwrap();
    for want in [
        "awaits approval",
        "planned by supervisor@test",
        "reason: drift: web@alpha",
        "ALPHA",
        "web restart:",
    ] {
        assert!(m.text.contains(want), "`{want}` in:\n{}", m.text);
    }
    let approve = m.button("Approve");

    // Refused: a stranger; the owner while the policy asks for a human key.
    let press = |user: u64| {
        let cb = tg.press(user, m.message_id, &approve);
        telegram();
        (cb.clone(), tg.answers_asked(&cb).join(" | "))
    };
    let (_, answer) = press(STRANGER);
    assert!(answer.contains("not named in the homelab's policy"), "{answer}");
    let (_, answer) = press(OWNER);
    assert!(answer.contains("needs 1 approval by a human's key"), "{answer}");
    let approved = site.repo.path().join(format!("plans/{id}.approved"));
    assert!(!approved.exists());
    let out = site.executor();
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains(&format!("{id}: pending: no approval")), "{}", out.stdout);
    let running = |c: &str| {
        let o = site.lab.docker("alpha", &["inspect", "-f", "{{.State.Running}}", c]);
        String::from_utf8_lossy(&o.stdout).trim() == "true"
    };
    assert!(!running("web"), "nothing applied");

    // The owner lets restarts on ALPHA be approved from Telegram alone.
    policy(0);
    let (cb, answer) = press(OWNER);
    assert_eq!(answer, format!("Approved plan {id} as telegram:111."));
    assert!(approved.exists());
    // Replayed: refused, nothing more signed.
    let signed = fs::read_to_string(&approved).unwrap();
    tg.replay(&cb);
    telegram();
    assert!(tg.answers_asked(&cb).last().unwrap().contains("handled already"));
    assert_eq!(fs::read_to_string(&approved).unwrap(), signed);

    // The executor applies; the PR's status says so; the message shows it.
    let out = run(&["executor", "--once"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains(&format!("{id}: running → completed: applied")), "{}", out.stdout);
    assert!(running("web"));
    let (state, on_head) = forge.with(|s| {
        let (sha, status) = s.statuses.last().unwrap().clone();
        (status["state"].clone(), sha == s.branches[&format!("plan/{id}")])
    });
    assert_eq!(state, "success");
    assert!(on_head, "the status is on the plan branch's head");
    let out = telegram();
    assert!(out.stdout.contains(&format!("told plan {id} completed")), "{}", out.stdout);
    let m = tg.message(m.message_id);
    assert!(m.text.contains("approved by telegram:111"), "{}", m.text);
    assert!(m.text.contains("✅ applied") && m.text.contains("alpha: applied"), "{}", m.text);
    assert!(m.buttons().is_empty(), "no buttons once applied: {m:?}");
}

/// The control-plane service's `.env` names (services/control-plane/env.example) serve too.
#[test]
fn the_control_plane_services_env_names_give_the_token_and_the_chat() {
    let b = Bot::alone();
    let id = b.plan();
    // The token and the chat only from those names: no --chat, no $HOMELAB_TELEGRAM_TOKEN.
    let with_chat = |chat: &str| {
        b.lab.homelab_env(
            &[
                "telegram",
                "--once",
                "--api-url",
                &b.tg.url,
                "--key",
                "keys/bot",
                "--controller-root",
                "rt",
            ],
            &[("TELEGRAM_BOT_TOKEN", TOKEN), ("TELEGRAM_CHAT_ID", chat)],
        )
    };
    let out = with_chat(&CHAT.to_string());
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(b.message_of(&id).chat, CHAT);
    let out = with_chat("@me");
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("expected a numeric chat id"), "{}", out.stderr);
}

/// The planted-secret test for the bot: a secret in a node's `.env`, in a hand edit of a
/// deployed file and in the environment reaches no message, answer or state of the bot.
#[test]
fn a_secret_on_the_node_or_in_the_environment_reaches_no_telegram_message() {
    const SECRET: &str = "SUPERSECRET-4711";
    let b = Bot::alone();
    b.lab.deploy_all();
    b.lab.write("rt/edge-a/config/broker/.env", format!("BROKER_PASSWORD={SECRET}\n"));
    let deployed = "rt/edge-a/state/services/broker/docker-compose.yml";
    b.lab.write(deployed, format!("{}      BROKER_PASSWORD: {SECRET}\n", b.lab.read(deployed)));
    let id = b.plan();
    let out = b.run_env(&[], &[("HOMELAB_TELEGRAM_TOKEN", TOKEN), ("BROKER_PASSWORD", SECRET)]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let m = b.message_of(&id);
    assert!(m.text.contains("broker"), "the edited service is in the message: {}", m.text);
    b.press(&id, STRANGER, "Approve");
    for r in b.tg.with(|s| s.requests.clone()) {
        assert!(!r.body.to_string().contains(SECRET), "{} sent the secret: {}", r.method, r.body);
    }
    assert!(!b.lab.read("rt/state/telegram/state.json").contains(SECRET));
    assert!(!out.stdout.contains(SECRET) && !out.stderr.contains(SECRET));
}
