//! `homelab ui`, the operator page, started for real on a free loopback port over a lab: a
//! committed homelab, a plan signed by a planner, events emitted on two nodes and folded by
//! `homelab observe` into the world. Plain HTTP (ureq) checks the refusals, CSRF, escaping
//! and the planted secret; Debian's chromium, driven through chromedriver, loads every page,
//! approves with a signature made by the real `ssh-keygen -Y sign` and keeps screenshots at
//! phone and desktop sizes under `target/ui-screenshots/`.
//!
//! Every refusal is checked to leave the repository and the runtime root byte for byte as
//! they were; every approval the page saves is checked by `ssh-keygen -Y verify` and by
//! `homelab apply`'s pre-flight.

use std::cell::RefCell;
use std::fs;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{split_plan, Key, Lab, Snapshot};
use crate::webdriver::Driver;

const TOKEN: &str = "ui-login-token-0123456789abcdef";
/// A secret value planted where the page must never read or show it.
const SECRET: &str = "planted-secret-value-7f3a9c";
/// Apply's pre-flight passed.
const PASSED: &str = "pre-flight passed";

/// A lab with a planner (plans only), two approvers the policy lists, an outsider key that
/// allowed_signers knows but the policy does not, a committed repository, a world, and a plan.
struct Site {
    lab: Lab,
    operator: Key,
    second: Key,
    outsider: Key,
    planner: Key,
    id: String,
}

impl Site {
    fn new() -> Site {
        let lab = Lab::new();
        let planner = lab.keygen("planner");
        let operator = lab.keygen("operator");
        let second = lab.keygen("second");
        let outsider = lab.keygen("outsider");
        lab.allow(&[
            ("planner@test", "namespaces=\"homelab-plan\"", &planner),
            ("operator@test", "", &operator),
            ("second@test", "", &second),
            ("outsider@test", "", &outsider),
        ]);
        lab.write(
            "repo/inventory/policy.yaml",
            "plan_ttl: 24h\napprovals:\n  default:\n    required: 1\n    approvers: [operator@test, second@test]\n",
        );
        lab.git_commit();
        let emit = |node: &str, args: &[&str]| {
            let mut a = vec!["events", "emit"];
            a.extend(args);
            a.extend(["--root", "rt", "--node", node]);
            let out = lab.homelab(&a);
            assert_eq!(out.code, 0, "emit {args:?}: {}", out.stderr);
        };
        emit(
            "alpha",
            &[
                "deployment_started",
                "info",
                "homelab apply",
                "web",
                "0123456789abcdef",
                r#"{"action":"create"}"#,
            ],
        );
        emit(
            "alpha",
            &[
                "service_unhealthy",
                "error",
                "monitor.py",
                "web",
                "cid-1",
                r#"{"error":"<script>alert(1)</script> OOM"}"#,
            ],
        );
        emit(
            "edge-a",
            &["node_offline", "warning", "homelab agent", "-", "cid-2", r#"{"link":"tailscale"}"#],
        );
        emit(
            "edge-a",
            &[
                "deployment_failed",
                "error",
                "homelab apply",
                "broker",
                "0123456789abcdef",
                r#"{"stage":"verify","reason":"healthcheck failed 3 time(s)"}"#,
            ],
        );
        let out = lab.observe_once();
        assert!(
            lab.path("rt/world/nodes.json").is_file(),
            "observe wrote no world: {}{}",
            out.stdout,
            out.stderr
        );
        let id = lab.plan(&planner);
        Site { lab, operator, second, outsider, planner, id }
    }

    /// The plan's signed bytes.
    fn body(&self) -> String {
        split_plan(&self.lab.plan_file(&self.id)).0.to_owned()
    }

    fn approved_rel(&self) -> String {
        format!("repo/plans/{}.approved", self.id)
    }

    /// The repository and runtime root, for "nothing was saved".
    fn state(&self) -> (Snapshot, Snapshot) {
        let s = self.lab.snapshot();
        (s.under("repo"), s.under("rt"))
    }

    fn assert_unchanged(&self, before: &(Snapshot, Snapshot), what: &str) {
        let after = self.state();
        before.0.assert_same(&after.0, what);
        before.1.assert_same(&after.1, what);
    }

    /// `ssh-keygen -Y verify` of one approval block, as `principal`.
    fn ssh_verify(&self, principal: &str, sig: &str) -> bool {
        self.lab.write("check.sig", sig);
        let ran = crate::support::ssh_verify(
            &self.lab.path("repo/inventory/allowed_signers"),
            principal,
            "homelab-approve",
            &self.lab.path("check.sig"),
            self.body().as_bytes(),
        );
        fs::remove_file(self.lab.path("check.sig")).unwrap();
        ran.ok
    }

    /// `homelab apply --stage prepare`: whether pre-flight passed, and what apply said.
    fn preflight(&self) -> (bool, String) {
        let out = self.lab.apply_with(&self.id, &["--stage", "prepare"]);
        let all = format!("{}{}", out.stdout, out.stderr);
        (all.contains(PASSED) && !out.stderr.contains("refused:"), all)
    }
}

/// `homelab ui` running in the lab; killed when dropped.
struct Ui {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Drop for Ui {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Ui {
    /// Starts `homelab --repo repo ui --listen 127.0.0.1:0 --controller-root rt --transport
    /// local --root rt <extra>` with `env` (and nothing else of the user's) and waits for its
    /// address.
    fn start(lab: &Lab, extra: &[&str], env: &[(&str, &str)]) -> Ui {
        let log = lab.path("ui.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_homelab"));
        cmd.current_dir(lab.dir.path())
            .args([
                "--repo",
                "repo",
                "ui",
                "--listen",
                "127.0.0.1:0",
                "--controller-root",
                "rt",
                "--transport",
                "local",
                "--root",
                "rt",
            ])
            .args(extra)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(fs::File::create(&log).unwrap()));
        lab.git_env(&mut cmd);
        let mut child = cmd.spawn().expect("start homelab ui");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let Some(base) = line.trim().strip_prefix("homelab ui: listening on ") else {
            let _ = child.kill();
            panic!(
                "homelab ui did not start: {line:?}\n{}",
                fs::read_to_string(&log).unwrap_or_default()
            );
        };
        Ui { base: base.to_owned(), child, log }
    }

    fn with_token(lab: &Lab) -> Ui {
        lab.write("keys/ui-token", format!("{TOKEN}\n"));
        Ui::start(lab, &["--token-file", "keys/ui-token"], &[])
    }

    fn http(&self) -> Http {
        Http::new(&self.base)
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// An HTTP answer.
struct Resp {
    status: u16,
    body: String,
    headers: Vec<(String, String)>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn set_cookies(&self) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A browser-like HTTP client: it keeps cookies and follows no redirect.
struct Http {
    agent: ureq::Agent,
    base: String,
    cookies: RefCell<Vec<(String, String)>>,
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl Http {
    fn new(base: &str) -> Http {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        Http { agent, base: base.to_owned(), cookies: RefCell::new(Vec::new()) }
    }

    fn cookie_header(&self) -> String {
        self.cookies.borrow().iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    fn take(&self, r: Result<ureq::http::Response<ureq::Body>, ureq::Error>, what: &str) -> Resp {
        let mut r = r.unwrap_or_else(|e| panic!("{what}: {e}"));
        let headers: Vec<(String, String)> = r
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
            .collect();
        let status = r.status().as_u16();
        let body = r.body_mut().read_to_string().unwrap_or_default();
        let resp = Resp { status, body, headers };
        for c in resp.set_cookies() {
            let pair = c.split(';').next().unwrap_or_default();
            let Some((k, v)) = pair.split_once('=') else { continue };
            let mut jar = self.cookies.borrow_mut();
            jar.retain(|(name, _)| name != k);
            if !c.contains("Max-Age=0") {
                jar.push((k.to_owned(), v.to_owned()));
            }
        }
        resp
    }

    fn get(&self, path: &str) -> Resp {
        let r = self
            .agent
            .get(&format!("{}{path}", self.base))
            .header("Cookie", &self.cookie_header())
            .call();
        self.take(r, &format!("GET {path}"))
    }

    fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        let mut b =
            self.agent.get(&format!("{}{path}", self.base)).header("Cookie", &self.cookie_header());
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.take(b.call(), &format!("GET {path}"))
    }

    fn post(&self, path: &str, content_type: &str, body: String, headers: &[(&str, &str)]) -> Resp {
        let mut b = self
            .agent
            .post(&format!("{}{path}", self.base))
            .header("Cookie", &self.cookie_header())
            .header("Content-Type", content_type);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.take(b.send(body), &format!("POST {path}"))
    }

    fn form(&self, path: &str, fields: &[(&str, &str)]) -> Resp {
        let body = fields
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        self.post(path, "application/x-www-form-urlencoded", body, &[])
    }

    fn multipart(&self, path: &str, fields: &[(&str, &str)], headers: &[(&str, &str)]) -> Resp {
        let boundary = "----homelab-test-boundary-5b1d";
        let mut body = String::new();
        for (k, v) in fields {
            if *k == "signature_file" {
                body.push_str(&format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"; filename=\"x.sig\"\r\nContent-Type: text/plain\r\n\r\n{v}\r\n"));
            } else {
                body.push_str(&format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
                ));
            }
        }
        body.push_str(&format!("--{boundary}--\r\n"));
        self.post(path, &format!("multipart/form-data; boundary={boundary}"), body, headers)
    }

    /// The CSRF field of the page at `path` (GET first: the page gives this client its cookie).
    fn csrf(&self, path: &str) -> String {
        let r = self.get(path);
        let at = r
            .body
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no CSRF field on {path}:\n{}", r.body));
        let rest = &r.body[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').unwrap()].to_owned()
    }

    /// Posts the approve form of plan `id`.
    fn approve(&self, id: &str, csrf: &str, token: &str, signature: &str) -> Resp {
        self.multipart(
            &format!("/plans/{id}/approve"),
            &[("csrf", csrf), ("token", token), ("signature", signature)],
            &[],
        )
    }
}

fn blocks(text: &str) -> Vec<String> {
    text.split_inclusive("-----END SSH SIGNATURE-----\n").map(str::to_owned).collect()
}

// ---------------------------------------------------------------------------------------------
// Plain HTTP.

#[test]
fn every_page_answers_and_escapes_what_the_files_hold() {
    let site = Site::new();
    let ui = Ui::with_token(&site.lab);
    let http = ui.http();

    let world = http.get("/");
    assert_eq!(world.status, 200, "{}", world.body);
    for want in [
        "ALPHA",
        "EDGE-A",
        "EDGE-B",
        "remote",
        "tailscale",
        "web@alpha",
        "broker@edge-a",
        "service_unhealthy",
        "deployment_failed",
        "healthcheck failed 3 time(s)",
        &site.id,
    ] {
        assert!(world.body.contains(want), "the world page lacks `{want}`:\n{}", world.body);
    }
    // The unhealthy report's text came from an event: escaped, never markup.
    assert!(world.body.contains("&lt;script&gt;alert(1)&lt;/script&gt; OOM"), "{}", world.body);
    assert!(!world.body.contains("<script"), "{}", world.body);
    assert!(world.body.contains("name=\"viewport\""));

    let plans = http.get("/plans");
    assert_eq!(plans.status, 200);
    assert!(plans.body.contains(&format!("href=\"/plans/{}\"", site.id)), "{}", plans.body);
    assert!(plans.body.contains("pending"), "{}", plans.body);

    let plan = http.get(&format!("/plans/{}", site.id));
    assert_eq!(plan.status, 200, "{}", plan.body);
    for want in [
        "valid: made by planner@test",
        "verified: every artifact is the render of commit",
        "<th>node</th><th>create</th>",
        "+++ b/docker-compose.yml",
        "no approval yet",
        &format!("sed &#39;/^-----BEGIN SSH SIGNATURE-----$/,$d&#39; plans/{0}.plan | ssh-keygen -Y sign -f ~/.ssh/id_ed25519 -n homelab-approve &gt; {0}.sig", site.id),
        &format!("curl -s {}/plans/{1}/signed-bytes | ssh-keygen -Y sign", ui.base, site.id),
        &format!("homelab approve plans/{}.plan --key ~/.ssh/id_ed25519", site.id),
        "enctype=\"multipart/form-data\"",
        "name=\"signature_file\"",
    ] {
        assert!(plan.body.contains(want), "the plan page lacks `{want}`:\n{}", plan.body);
    }
    // The bytes the command signs are the plan's signed bytes.
    let bytes = http.get(&format!("/plans/{}/signed-bytes", site.id));
    assert_eq!(bytes.status, 200);
    assert_eq!(bytes.body, site.body());
    assert_eq!(crate::support::id_of(bytes.body.as_bytes()), site.id);

    let events = http.get("/events");
    assert_eq!(events.status, 200);
    assert!(events.body.contains("4 of 4 matching events"), "{}", events.body);
    assert!(events.body.contains("&lt;script&gt;"), "{}", events.body);
    assert!(!events.body.contains("<script"), "{}", events.body);
    let filtered = http.get("/events?node=edge-a&severity=error");
    assert_eq!(filtered.status, 200);
    assert!(filtered.body.contains("1 of 1 matching event,"), "{}", filtered.body);
    assert!(
        filtered.body.contains("deployment_failed") && !filtered.body.contains("node_offline</td>"),
        "{}",
        filtered.body
    );
    let kind = http.get("/events?kind=node_offline");
    assert!(
        kind.body.contains("1 of 1 matching event,") && kind.body.contains("node_offline</td>"),
        "{}",
        kind.body
    );
    let bad = http.get("/events?kind=deployment_exploded");
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("unknown event type `deployment_exploded`"), "{}", bad.body);

    let css = http.get("/style.css");
    assert_eq!(css.status, 200);
    assert!(css.body.contains("@media (max-width"), "the style sheet adapts to phones");
    // Every answer carries the security headers; no page has a script.
    for r in [&world, &plans, &plan, &events, &css] {
        assert!(
            r.header("content-security-policy").is_some_and(|c| c.contains("default-src 'none'")),
            "{:?}",
            r.headers
        );
        assert_eq!(r.header("x-frame-options"), Some("DENY"));
        assert!(!r.body.contains("<script"));
    }
}

#[test]
fn hostile_text_in_a_plan_is_shown_escaped() {
    let site = Site::new();
    // A planner may write anything in a reason: the page escapes it as `show` does.
    let hostile = "\u{1b}]0;owned\u{7} </details><img src=x onerror=alert(1)> <script>x</script>";
    let body = site
        .body()
        .lines()
        .map(|l| if l.starts_with("reason ") { format!("reason {hostile}") } else { l.to_owned() })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    let sig = site.planner.ssh_sign("homelab-plan", body.as_bytes());
    let id = crate::support::id_of(body.as_bytes());
    site.lab.write(&format!("repo/plans/{id}.plan"), format!("{body}{sig}"));
    let ui = Ui::with_token(&site.lab);
    let page = ui.http().get(&format!("/plans/{id}"));
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains(
            "\\x1b]0;owned\\x07 &lt;/details&gt;&lt;img src=x onerror=alert(1)&gt; &lt;script&gt;"
        ),
        "{}",
        page.body
    );
    assert!(
        !page.body.contains("<img")
            && !page.body.contains("<script")
            && !page.body.contains('\u{1b}'),
        "{}",
        page.body
    );
}

#[test]
fn a_signature_posted_with_the_token_is_verified_saved_and_accepted_by_apply_and_ssh_keygen() {
    let site = Site::new();
    let ui = Ui::with_token(&site.lab);
    let http = ui.http();
    let csrf = http.csrf(&format!("/plans/{}", site.id));
    let sig = site.operator.ssh_sign("homelab-approve", site.body().as_bytes());
    let r = http.approve(&site.id, &csrf, TOKEN, &sig);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.contains(&format!(
            "approved by operator@test ({}): saved to {}.approved",
            site.operator.fingerprint, site.id
        )),
        "{}",
        r.body
    );
    assert!(r.body.contains("id=\"approvals\""), "{}", r.body);
    assert_eq!(
        site.lab.read(&site.approved_rel()),
        sig,
        "the approvals file is the signature, byte for byte"
    );
    assert!(site.ssh_verify("operator@test", &sig));

    // The same signature again adds nothing; a second approver's, uploaded as a file, is appended.
    let r = http.approve(&site.id, &csrf, TOKEN, &sig);
    assert!(r.body.contains("already approved by this key"), "{}", r.body);
    assert_eq!(site.lab.read(&site.approved_rel()), sig);
    let second = site.second.ssh_sign("homelab-approve", site.body().as_bytes());
    let r = http.multipart(
        &format!("/plans/{}/approve", site.id),
        &[("csrf", &csrf), ("token", TOKEN), ("signature", ""), ("signature_file", &second)],
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("approved by second@test"), "{}", r.body);
    let both = site.lab.read(&site.approved_rel());
    assert_eq!(blocks(&both), vec![sig, second.clone()]);
    assert!(site.ssh_verify("second@test", &second));
    // Last: apply's pre-flight starts an apply, after which the plan takes no approval.
    let (passed, said) = site.preflight();
    assert!(passed, "{said}");
    assert!(
        ui.log().contains(&format!("ui: plan {} approved by second@test", site.id)),
        "{}",
        ui.log()
    );
}

#[test]
fn refused_approvals_save_nothing_and_say_why() {
    let site = Site::new();
    let ui = Ui::with_token(&site.lab);
    let http = ui.http();
    let csrf = http.csrf(&format!("/plans/{}", site.id));
    let body = site.body();
    let good = site.operator.ssh_sign("homelab-approve", body.as_bytes());
    let stranger = site.lab.keygen("stranger");
    let forged = {
        // A valid block of the operator over other bytes.
        site.operator.ssh_sign("homelab-approve", b"another plan\n")
    };
    let plan_sig = split_plan(&site.lab.plan_file(&site.id)).1.to_owned();
    let two = format!("{good}{}", site.second.ssh_sign("homelab-approve", body.as_bytes()));
    let cases: Vec<(&str, String, &str, u16, &str)> = vec![
        ("no token", good.clone(), "", 403, "need the login token"),
        ("a wrong token", good.clone(), "not-the-token-0123456789", 403, "need the login token"),
        ("a forged signature", forged, TOKEN, 422, "the signature is not valid"),
        (
            "an unknown signer",
            stranger.ssh_sign("homelab-approve", body.as_bytes()),
            TOKEN,
            422,
            "the signature is not valid",
        ),
        (
            "a signer the policy does not list",
            site.outsider.ssh_sign("homelab-approve", body.as_bytes()),
            TOKEN,
            422,
            "outsider@test",
        ),
        ("the plan's own signature", plan_sig, TOKEN, 422, "the signature is not valid"),
        ("no signature", String::new(), TOKEN, 422, "no signature was given"),
        ("two blocks", two, TOKEN, 422, "expected one signature block"),
        (
            "a cut signature",
            good[..good.len() / 2].to_owned(),
            TOKEN,
            422,
            "the signature is not valid",
        ),
    ];
    for (what, sig, token, status, why) in cases {
        let before = site.state();
        let r = http.approve(&site.id, &csrf, token, &sig);
        assert_eq!(r.status, status, "{what}: {}", r.body);
        assert!(r.body.contains("refused"), "{what}: {}", r.body);
        assert!(r.body.contains(why), "{what}: expected `{why}` in:\n{}", r.body);
        site.assert_unchanged(&before, what);
        assert!(!site.lab.path(&site.approved_rel()).exists(), "{what}");
    }
    // The outsider's refusal names why it would not count.
    let r = http.approve(
        &site.id,
        &csrf,
        TOKEN,
        &site.outsider.ssh_sign("homelab-approve", body.as_bytes()),
    );
    assert!(
        r.body.contains("may not approve alpha, edge-a, edge-b per inventory/policy.yaml"),
        "{}",
        r.body
    );
    let (passed, said) = site.preflight();
    assert!(!passed && said.contains("no approval"), "{said}");
}

#[test]
fn posts_need_the_pages_csrf_field_its_origin_and_a_small_body() {
    let site = Site::new();
    let ui = Ui::with_token(&site.lab);
    let http = ui.http();
    let path = format!("/plans/{}/approve", site.id);
    let csrf = http.csrf(&format!("/plans/{}", site.id));
    let sig = site.operator.ssh_sign("homelab-approve", site.body().as_bytes());
    let before = site.state();

    // No CSRF field; a field made for another browser's cookie; no cookie at all.
    let r = http.multipart(&path, &[("token", TOKEN), ("signature", &sig)], &[]);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("CSRF"), "{}", r.body);
    let other = Http::new(&ui.base);
    let other_csrf = other.csrf("/login");
    let r =
        http.multipart(&path, &[("csrf", &other_csrf), ("token", TOKEN), ("signature", &sig)], &[]);
    assert_eq!(r.status, 403, "{}", r.body);
    let bare = Http::new(&ui.base);
    let r = bare.multipart(&path, &[("csrf", &csrf), ("token", TOKEN), ("signature", &sig)], &[]);
    assert_eq!(r.status, 403, "{}", r.body);
    // A form another site made the browser send.
    let r = http.multipart(
        &path,
        &[("csrf", &csrf), ("token", TOKEN), ("signature", &sig)],
        &[("Origin", "http://evil.example")],
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("another site"), "{}", r.body);
    let r = http.form(
        &format!("/plans/{}/reject", site.id),
        &[("csrf", &other_csrf), ("token", TOKEN), ("reason", "no")],
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let r = http.form("/login", &[("csrf", "0000"), ("token", TOKEN)]);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.set_cookies().iter().all(|c| !c.starts_with("homelab_session=")), "{:?}", r.headers);
    // A body over the limit is refused before it is read.
    let big = "A".repeat(200 * 1024);
    let boundary = "b0undary";
    let body = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"signature\"\r\n\r\n{big}\r\n--{boundary}--\r\n");
    let sent = http
        .agent
        .post(&format!("{}{path}", ui.base))
        .header("Cookie", &http.cookie_header())
        .header("Content-Type", &format!("multipart/form-data; boundary={boundary}"))
        .send(body);
    // The page answers 413 without reading it all, or closes the connection under the sender.
    match sent {
        Ok(r) => assert_eq!(r.status().as_u16(), 413, "a 200 KiB body"),
        Err(ureq::Error::Io(e)) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ),
            "{e}"
        ),
        Err(e) => panic!("a 200 KiB body: {e}"),
    }
    site.assert_unchanged(&before, "refused posts");

    // The cookies the page sets are HttpOnly and SameSite=Strict.
    let fresh = Http::new(&ui.base).get("/");
    let c = fresh.set_cookies();
    assert!(
        c.iter().any(|c| c.starts_with("homelab_csrf=")
            && c.contains("HttpOnly")
            && c.contains("SameSite=Strict")),
        "{c:?}"
    );
}

#[test]
fn login_lets_the_browser_reject_without_the_token_and_logout_ends_it() {
    let site = Site::new();
    let ui = Ui::with_token(&site.lab);
    let http = ui.http();
    let csrf = http.csrf("/login");
    let r = http.form("/login", &[("csrf", &csrf), ("token", "wrong-token-0123456789abcdef")]);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("not the login token"), "{}", r.body);
    assert!(!r.body.contains("wrong-token"), "the page never echoes a token");
    let r = http.form("/login", &[("csrf", &csrf), ("token", TOKEN)]);
    assert_eq!(r.status, 303, "{}", r.body);
    let session = r
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("homelab_session="))
        .expect("a session cookie")
        .to_owned();
    assert!(
        session.contains("HttpOnly")
            && session.contains("SameSite=Strict")
            && session.contains("Max-Age="),
        "{session}"
    );
    assert!(!session.contains(TOKEN), "the cookie is not the token");
    let plan = http.get(&format!("/plans/{}", site.id));
    assert!(
        plan.body.contains("log out") && !plan.body.contains("name=\"token\""),
        "logged in, the forms ask for no token:\n{}",
        plan.body
    );

    // Approved first: the rejection still wins.
    let sig = site.operator.ssh_sign("homelab-approve", site.body().as_bytes());
    let r = http.approve(&site.id, &csrf, "", &sig);
    assert_eq!(r.status, 200, "{}", r.body);
    let r = http.form(
        &format!("/plans/{}/reject", site.id),
        &[("csrf", &csrf), ("reason", "mosquitto upgrade waits for the weekend")],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains(&format!("rejected: recorded in {}.rejected", site.id)), "{}", r.body);
    assert!(site
        .lab
        .read(&format!("repo/plans/{}.rejected", site.id))
        .contains("mosquitto upgrade waits for the weekend"));
    assert!(site.lab.path(&format!("rt/state/rejected/{}.json", site.id)).is_file());
    // Like `homelab reject`, the page records it on the plan's nodes too, and says so.
    site.lab.assert_rejected_on_nodes(&site.id, "operator page (homelab ui)");
    assert!(r.body.contains("; recorded on "), "{}", r.body);
    assert!(!r.body.contains("NOT recorded"), "{}", r.body);
    assert!(ui.log().contains("rejection recorded on"), "{}", ui.log());
    let out = site.lab.apply(&site.id);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("was rejected by operator page (homelab ui)"), "{}", out.stderr);
    // A rejected plan takes no approval.
    let before = site.state();
    let r = http.approve(
        &site.id,
        &csrf,
        "",
        &site.second.ssh_sign("homelab-approve", site.body().as_bytes()),
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("was rejected"), "{}", r.body);
    site.assert_unchanged(&before, "an approval of a rejected plan");

    let r = http.form("/logout", &[("csrf", &csrf)]);
    assert_eq!(r.status, 303);
    let r =
        http.form(&format!("/plans/{}/reject", site.id), &[("csrf", &csrf), ("reason", "again")]);
    assert_eq!(r.status, 403, "logged out: {}", r.body);
}

/// A node the rejection cannot be written on is named on the page; the rejection itself stands
/// (beside the plan, on the controller, on the other nodes).
#[test]
fn a_rejection_names_the_nodes_it_could_not_be_recorded_on() {
    let site = Site::new();
    let nodes = site.lab.plan_nodes(&site.id);
    let (blocked, others) = nodes.split_first().expect("the plan covers a node");
    // A file where the node's folder of rejections belongs: the write there fails.
    site.lab.write(&format!("rt/{blocked}/state/rejected"), "not a folder");
    let ui = Ui::with_token(&site.lab);
    let http = ui.http();
    let csrf = http.csrf(&format!("/plans/{}", site.id));
    let r = http.form(
        &format!("/plans/{}/reject", site.id),
        &[("csrf", &csrf), ("token", TOKEN), ("reason", "not this week")],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains(&format!("rejected: recorded in {}.rejected", site.id)), "{}", r.body);
    assert!(r.body.contains("NOT recorded on "), "{}", r.body);
    assert!(r.body.contains("run `homelab reject` when it answers"), "{}", r.body);
    assert!(site.lab.path(&format!("rt/state/rejected/{}.json", site.id)).is_file());
    for node in others {
        assert!(
            site.lab.path(&format!("rt/{node}/state/rejected/{}.json", site.id)).is_file(),
            "{node}"
        );
    }
    assert!(ui.log().contains("rejection NOT recorded on"), "{}", ui.log());
}

#[test]
fn unknown_hosts_and_paths_are_refused_and_without_a_token_the_page_is_read_only() {
    let site = Site::new();
    let ui = Ui::start(&site.lab, &[], &[]);
    let http = ui.http();
    // A name the page does not know (DNS rebinding onto loopback).
    let r = http.get_with("/", &[("Host", "evil.example:8470")]);
    assert_eq!(r.status, 421, "{}", r.body);
    let r = http.get_with("/", &[("Host", "localhost")]);
    assert_eq!(r.status, 200);
    for path in
        ["/plans/..%2F..%2Fetc%2Fpasswd", "/plans/ZZZZ", "/plans/0123456789abcdef", "/nothing-here"]
    {
        let r = http.get(path);
        assert_eq!(r.status, 404, "{path}: {}", r.body);
    }
    // Read-only: the plan shows, the commands show, no form does, and a POST is refused.
    let plan = http.get(&format!("/plans/{}", site.id));
    assert_eq!(plan.status, 200);
    assert!(
        plan.body.contains("read-only") && plan.body.contains("ssh-keygen -Y sign"),
        "{}",
        plan.body
    );
    assert!(!plan.body.contains("id=\"approve-form\""), "{}", plan.body);
    let before = site.state();
    let sig = site.operator.ssh_sign("homelab-approve", site.body().as_bytes());
    let r = http.approve(&site.id, "no-form-to-take-it-from", TOKEN, &sig);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("started without a login token"), "{}", r.body);
    site.assert_unchanged(&before, "a post to a read-only page");
    assert!(ui.log().contains("the page is read-only"), "{}", ui.log());
}

#[test]
fn the_page_listens_only_on_loopback_or_the_tailnet_and_takes_only_a_long_token() {
    let site = Site::new();
    for addr in ["0.0.0.0:0", "192.168.1.10:0", "[::]:0"] {
        let out = site.lab.homelab(&["ui", "--listen", addr]);
        assert_eq!(out.code, 1, "{addr}: {}", out.stderr);
        assert!(
            out.stderr.contains("neither loopback nor a tailnet address")
                && out.stderr.contains("--allow-any-address"),
            "{}",
            out.stderr
        );
    }
    site.lab.write("keys/short", "abc\n");
    let out = site.lab.homelab(&["ui", "--token-file", "keys/short"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("fewer than 16") && !out.stderr.contains("abc"), "{}", out.stderr);
    let out =
        site.lab.homelab_env(&["ui"], &[("HOMELAB_UI_TOKEN", "has a space in it, long enough")]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("$HOMELAB_UI_TOKEN") && !out.stderr.contains("space in it"),
        "{}",
        out.stderr
    );
}

/// A secret value in a node's config, in the page's environment, under a secret-named key of
/// an event written by hand, and the login token itself: none reaches any page, logged in or
/// not, nor the page's output.
#[test]
fn a_planted_secret_never_reaches_a_page() {
    let site = Site::new();
    site.lab.write("rt/edge-a/config/broker/.env", format!("BROKER_PASSWORD={SECRET}\n"));
    site.lab.write("rt/config/broker/.env", format!("BROKER_PASSWORD={SECRET}\n"));
    let day = fs::read_dir(site.lab.path("rt/alpha/events"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    let file =
        site.lab.path(&format!("rt/alpha/events/{}/alpha/events.jsonl", day.to_string_lossy()));
    let mut text = fs::read_to_string(&file).unwrap();
    text.push_str(&format!(
        "{{\"correlation_id\":\"c9\",\"data\":{{\"api_token\":\"{SECRET}\",\"nested\":{{\"password\":\"{SECRET}\"}}}},\"node\":\"alpha\",\"service\":\"web\",\"severity\":\"info\",\"source\":\"by hand\",\"time\":\"2030-01-01T00:00:00Z\",\"type\":\"service_recovered\"}}\n"
    ));
    fs::write(&file, text).unwrap();
    site.lab.write("keys/ui-token", format!("{TOKEN}\n"));
    let ui = Ui::start(
        &site.lab,
        &["--token-file", "keys/ui-token"],
        &[("BROKER_PASSWORD", SECRET), ("HOMELAB_TEST_TOKEN", SECRET), ("RUST_LOG", "trace")],
    );
    let pages = [
        "/".to_owned(),
        "/plans".to_owned(),
        format!("/plans/{}", site.id),
        format!("/plans/{}/signed-bytes", site.id),
        "/events".to_owned(),
        "/events?service=web".to_owned(),
        "/events?correlation=c9".to_owned(),
        "/login".to_owned(),
        "/style.css".to_owned(),
        "/no-such-page".to_owned(),
    ];
    let check = |http: &Http, when: &str| {
        for p in &pages {
            let r = http.get(p);
            for (name, secret) in [("the planted secret", SECRET), ("the login token", TOKEN)] {
                assert!(!r.body.contains(secret), "{when}: {p} shows {name}:\n{}", r.body);
                assert!(
                    r.headers.iter().all(|(_, v)| !v.contains(secret)),
                    "{when}: {p} sends {name} in a header"
                );
            }
        }
    };
    let http = ui.http();
    check(&http, "logged out");
    let shown = http.get("/events?correlation=c9");
    assert!(
        shown.body.contains("(hidden)") && shown.body.contains("service_recovered"),
        "{}",
        shown.body
    );
    let csrf = http.csrf("/login");
    assert_eq!(http.form("/login", &[("csrf", &csrf), ("token", TOKEN)]).status, 303);
    check(&http, "logged in");
    // A failed approval and a failed login say nothing secret either.
    let r = http.approve(&site.id, &csrf, TOKEN, "not a signature");
    assert!(!r.body.contains(TOKEN) && !r.body.contains(SECRET));
    drop(ui);
    let log = fs::read_to_string(site.lab.path("ui.log")).unwrap();
    assert!(
        !log.contains(SECRET) && !log.contains(TOKEN),
        "the page's output holds a secret:\n{log}"
    );
}

// ---------------------------------------------------------------------------------------------
// In a real browser.

/// `target/ui-screenshots/<name>.png`, checked to be a PNG of nonzero size; returns its
/// width and height.
fn keep_screenshot(png: &[u8], name: &str) -> (u32, u32) {
    assert!(png.len() > 1000, "{name}: a screenshot of {} bytes", png.len());
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{name}: not a PNG");
    assert_eq!(&png[12..16], b"IHDR", "{name}: no PNG header chunk");
    let w = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert!(w > 0 && h > 0, "{name}: {w}×{h}");
    let dir = crate::support::repo_root().join("target/ui-screenshots");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(format!("{name}.png")), png).unwrap();
    (w, h)
}

#[test]
fn in_a_browser_a_pasted_ssh_keygen_signature_approves_and_bad_ones_are_refused() {
    let site = Site::new();
    let ui = Ui::with_token(&site.lab);
    let driver = Driver::start(&site.lab.path("chromedriver.log"));
    let b = driver.session(1366, 900, false);
    let plan_url = format!("{}/plans/{}", ui.base, site.id);

    // Each page loads and shows what it is about.
    b.goto(&format!("{}/", ui.base));
    assert_eq!(b.title(), "World · homelab");
    assert!(b.text("#node-edge-a").contains("EDGE-A"), "{}", b.text("#node-edge-a"));
    assert!(b.text("#node-edge-a").contains("remote"));
    assert!(b.text("#node-edge-a").contains("tailscale"));
    let world = b.text("main");
    assert!(
        world.contains("<script>alert(1)</script> OOM"),
        "the browser shows the text, never runs it:\n{world}"
    );
    keep_screenshot(&b.screenshot(), "desktop-world");

    b.goto(&format!("{}/events", ui.base));
    b.select("#f-node", "edge-a");
    b.click("#filters button[type=submit]");
    b.wait_text("#event-count", "2 of 2");
    assert!(b.url().contains("node=edge-a"), "{}", b.url());
    let rows = b.find_all("#events tbody tr");
    assert_eq!(rows.len(), 2, "{}", b.text("main"));
    assert!(b.text("#event-count").starts_with("2 of 2"), "{}", b.text("#event-count"));
    keep_screenshot(&b.screenshot(), "desktop-events");

    b.goto(&format!("{}/plans", ui.base));
    b.click(&format!("a[href=\"/plans/{}\"]", site.id));
    b.wait_text("h1", &site.id);
    assert_eq!(b.url(), plan_url);
    assert!(b
        .text("#sign-command")
        .contains("ssh-keygen -Y sign -f ~/.ssh/id_ed25519 -n homelab-approve"));
    assert!(b.source().contains("+++ b/docker-compose.yml"));
    keep_screenshot(&b.screenshot(), "desktop-plan");

    // Refusals: each says why, and nothing is saved.
    let body = site.body();
    let stranger = site.lab.keygen("stranger");
    let refusals = [
        (
            "bad signature",
            site.operator.ssh_sign("homelab-approve", b"other bytes\n"),
            TOKEN,
            "the signature is not valid",
        ),
        (
            "unknown signer",
            stranger.ssh_sign("homelab-approve", body.as_bytes()),
            TOKEN,
            "the signature is not valid",
        ),
        (
            "no token",
            site.operator.ssh_sign("homelab-approve", body.as_bytes()),
            "",
            "need the login token",
        ),
    ];
    for (what, sig, token, why) in refusals {
        let before = site.state();
        b.goto(&plan_url);
        b.type_into("#signature", &sig);
        if !token.is_empty() {
            b.type_into("#token-approve", token);
        }
        b.click("#approve");
        let shown = b.wait_text("main", "refused");
        assert!(
            shown.contains("refused") && shown.contains(why),
            "{what}: expected `{why}`:\n{shown}"
        );
        site.assert_unchanged(&before, what);
        keep_screenshot(&b.screenshot(), &format!("desktop-refused-{}", what.replace(' ', "-")));
    }
    assert!(!site.lab.path(&site.approved_rel()).exists());

    // Log in, then approve with the operator's signature pasted into the form.
    b.goto(&format!("{}/login", ui.base));
    b.type_into("#token", TOKEN);
    b.click("#login-form button");
    b.wait_text("h1", "Plans");
    assert!(b.url().ends_with("/plans"), "{}", b.url());
    b.goto(&plan_url);
    let sig = site.operator.ssh_sign("homelab-approve", body.as_bytes());
    b.type_into("#signature", &sig);
    b.click("#approve");
    let shown = b.wait_text("main", "approved by");
    assert!(
        shown.contains(&format!("approved by operator@test ({})", site.operator.fingerprint)),
        "{shown}"
    );
    assert!(b.text("#approvals").contains("operator@test"), "{}", b.text("#approvals"));
    assert!(b.text("main").contains("approved"), "the state is approved");
    keep_screenshot(&b.screenshot(), "desktop-approved");
    let saved = site.lab.read(&site.approved_rel());
    assert_eq!(saved, sig);
    assert!(
        site.ssh_verify("operator@test", &saved),
        "ssh-keygen -Y verify refused what the page saved"
    );

    // A second approver uploads the file ssh-keygen wrote.
    site.lab.write("second.sig", site.second.ssh_sign("homelab-approve", body.as_bytes()));
    b.goto(&plan_url);
    b.type_into("#signature-file", site.lab.path("second.sig").to_str().unwrap());
    b.click("#approve");
    b.wait_text("main", "approved by second@test");
    assert_eq!(blocks(&site.lab.read(&site.approved_rel())).len(), 2);
    assert!(b.text("#approvals").contains("second@test"));
    let (passed, said) = site.preflight();
    assert!(passed, "{said}");
}

#[test]
fn in_a_browser_every_page_fits_a_phone_and_a_desktop() {
    let site = Site::new();
    let ui = Ui::with_token(&site.lab);
    let driver = Driver::start(&site.lab.path("chromedriver.log"));
    let pages = [
        ("world", "/".to_owned()),
        ("plans", "/plans".to_owned()),
        ("plan", format!("/plans/{}", site.id)),
        ("events", "/events".to_owned()),
        ("login", "/login".to_owned()),
    ];
    for (size, w, h, mobile) in [("phone", 390, 844, true), ("desktop", 1366, 900, false)] {
        let b = driver.session(w, h, mobile);
        for (name, path) in &pages {
            b.goto(&format!("{}{path}", ui.base));
            assert!(b.title().ends_with("· homelab"), "{path}: {}", b.title());
            let inner = b.execute("return window.innerWidth;").as_u64().unwrap();
            assert_eq!(inner, u64::from(w), "{size} {path}: the viewport is {inner} wide");
            // Nothing makes the page wider than the screen: wide tables and diffs scroll inside.
            let wide = b.execute("return document.documentElement.scrollWidth;").as_u64().unwrap();
            assert!(
                wide <= inner,
                "{size} {path}: the page is {wide} px wide in a {inner} px viewport"
            );
            let (pw, ph) = keep_screenshot(&b.screenshot(), &format!("{size}-{name}"));
            assert!(pw >= w && ph > 0, "{size} {path}: {pw}×{ph}");
        }
    }
}

/// Token guesses are one budget for the whole page (issue 19, item 6): 60 wrong tokens sent at
/// once over 60 connections, to the login form and to the approve and reject forms, get at
/// most the burst (10) plus one per second compared; the rest are refused with 429 and
/// `Retry-After` without being compared. A right token is taken again once the budget refills.
#[test]
fn token_guesses_share_one_budget_across_connections_and_forms() {
    let site = Site::new();
    let ui = Ui::with_token(&site.lab);
    let id = site.id.clone();
    // Each guesser is a browser of its own, with its own CSRF cookie.
    let guessers: Vec<(Http, String, usize)> = (0..60)
        .map(|i| {
            let http = ui.http();
            let path = if i % 3 == 0 { "/login".to_owned() } else { format!("/plans/{id}") };
            let csrf = http.csrf(&path);
            (http, csrf, i % 3)
        })
        .collect();
    let barrier = std::sync::Barrier::new(guessers.len());
    let start = std::time::Instant::now();
    let answers: Vec<(u16, String, Option<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = guessers
            .into_iter()
            .enumerate()
            .map(|(n, (http, csrf, form))| {
                let (barrier, id) = (&barrier, &id);
                s.spawn(move || {
                    let wrong = format!("wrong-token-{n:04}-0123456789abcdef");
                    barrier.wait();
                    let r = match form {
                        0 => http.form("/login", &[("csrf", &csrf), ("token", &wrong)]),
                        1 => http.approve(id, &csrf, &wrong, "no signature"),
                        _ => http.form(
                            &format!("/plans/{id}/reject"),
                            &[("csrf", &csrf), ("token", &wrong), ("reason", "guess")],
                        ),
                    };
                    let retry = r.header("Retry-After").map(str::to_owned);
                    (r.status, r.body, retry)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let elapsed = start.elapsed().as_secs();
    let compared = answers.iter().filter(|(status, _, _)| *status == 403).count();
    let limited: Vec<_> = answers.iter().filter(|(status, _, _)| *status == 429).collect();
    assert_eq!(compared + limited.len(), answers.len(), "{answers:#?}");
    assert!(
        compared as u64 <= 10 + elapsed + 1,
        "{compared} wrong tokens compared in {elapsed} s: the budget is 10 and 1 a second"
    );
    assert!(compared >= 10, "the burst is compared: {compared}");
    for (_, body, retry) in &limited {
        assert!(body.contains("too many login tokens were tried"), "{body}");
        assert!(retry.as_deref().is_some_and(|s| s.parse::<u64>().is_ok()), "{retry:?}");
    }
    // Nothing was approved or rejected.
    assert!(!site.lab.path(&format!("repo/plans/{id}.approved")).exists());
    assert!(!site.lab.path(&format!("repo/plans/{id}.rejected")).exists());

    // The budget refills: the right token logs in after the wait the page named.
    let http = ui.http();
    let csrf = http.csrf("/login");
    let mut r = http.form("/login", &[("csrf", &csrf), ("token", TOKEN)]);
    for _ in 0..5 {
        if r.status != 429 {
            break;
        }
        let wait: u64 = r.header("Retry-After").unwrap().parse().unwrap();
        std::thread::sleep(Duration::from_secs(wait));
        r = http.form("/login", &[("csrf", &csrf), ("token", TOKEN)]);
    }
    assert_eq!(r.status, 303, "{}", r.body);
}

/// The plan's page says "DOWNGRADE" where the plan moves a node back to an older commit than
/// its last apply (issue 19, item 2), as `show` and `approve` do: the operator approves here too.
#[test]
fn the_plan_page_says_downgrade_where_a_node_runs_a_newer_commit() {
    let site = Site::new();
    let git = |args: &[&str]| {
        let mut cmd = Command::new("git");
        cmd.current_dir(site.lab.path("repo"))
            .args(["-c", "user.name=Test", "-c", "user.email=test@lab"])
            .args(args);
        site.lab.git_env(&mut cmd);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    site.lab.write("repo/services/web/README.md", "web, a newer version\n");
    git(&["add", "-A", "--", ".", ":(exclude)plans"]);
    git(&["commit", "-q", "-m", "newer"]);
    let newer = git(&["rev-parse", "HEAD"]);
    let ui = Ui::with_token(&site.lab);
    let page = ui.http().get(&format!("/plans/{}", site.id));
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(!page.body.contains("DOWNGRADE"), "{}", page.body);
    // The controller's record of a later plan of the newer commit, applied on ALPHA.
    site.lab.write(
        "rt/state/applied/00000000000000aa.json",
        serde_json::json!({
            "plan": "00000000000000aa",
            "state": "completed",
            "updated": "2026-12-05T00:00:00Z",
            "by": "test",
            "nodes": { "alpha": { "outcome": "applied", "detail": "" } },
            "commit": newer,
        })
        .to_string(),
    );
    let page = ui.http().get(&format!("/plans/{}", site.id));
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("DOWNGRADE: node"), "{}", page.body);
    assert!(page.body.contains(&newer), "{}", page.body);
}

/// The peak resident memory of process `pid` (`VmHWM` in `/proc/<pid>/status`), in KiB.
fn peak_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM in /proc status");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Issue 19: listings read a bounded summary of each plan (cached by the file's version),
/// never the whole file, and a plan's own page refuses one past its limit; eight 60 MB plans,
/// re-signed by the planner's key, and five requests at once keep the page's process under
/// 200 MB at its peak (its `VmHWM`, measured, not timed).
#[test]
fn eight_large_plans_and_five_requests_at_once_keep_the_page_under_200_mb() {
    let site = Site::new();
    let text = site.lab.plan_file(&site.id);
    let (body, _) = split_plan(&text);
    // 60 MB of content lines inside the plan's first artifact block.
    let at = body.find("\nartifact ").expect("an artifact") + 1;
    let at = at + body[at..].find('\n').unwrap() + 1;
    let filler = format!("|{}\n", "x".repeat(999)).repeat(60_000);
    let mut big = Vec::new();
    for n in 0..8 {
        let mut b = String::with_capacity(body.len() + filler.len() + 16);
        b.push_str(&body[..at]);
        b.push_str(&format!("|large plan {n}\n"));
        b.push_str(&filler);
        b.push_str(&body[at..]);
        let sig = site.planner.ssh_sign("homelab-plan", b.as_bytes());
        let id = crate::support::id_of(b.as_bytes());
        let mut f = fs::File::create(site.lab.path(&format!("repo/plans/{id}.plan"))).unwrap();
        std::io::Write::write_all(&mut f, b.as_bytes()).unwrap();
        std::io::Write::write_all(&mut f, sig.as_bytes()).unwrap();
        big.push(id);
    }
    drop(filler);
    let ui = Ui::start(&site.lab, &[], &[]);
    let pid = ui.child.id();
    // First listings hash every file once; a slow machine may take a while (not a bound).
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(900)))
        .build()
        .into();
    let get = |path: &str| -> (u16, String) {
        let mut r = agent.get(format!("{}{path}", ui.base)).call().unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap_or_default())
    };
    let big_page = format!("/plans/{}", big[0]);
    for round in [["/plans"; 5], ["/plans", "/", "/plans", &big_page, "/"]] {
        let answers: Vec<(u16, String)> = std::thread::scope(|s| {
            let hs: Vec<_> = round.iter().map(|p| s.spawn(move || get(p))).collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for ((status, page), path) in answers.iter().zip(round) {
            if path == big_page {
                assert_eq!(*status, 413, "{page}");
                assert!(page.contains("homelab show"), "{page}");
                continue;
            }
            assert_eq!(*status, 200, "{path}: {page}");
            // Every large plan is listed with its state, as apply's checks decide it.
            for id in &big {
                assert!(page.contains(id.as_str()), "{path} lists {id}:\n{page}");
            }
            if path == "/plans" {
                assert!(page.matches("pending").count() >= 9, "{page}");
            }
        }
    }
    let peak = peak_kib(pid);
    eprintln!("homelab ui peaked at {peak} KiB");
    assert!(peak < 200 * 1024, "the page peaked at {peak} KiB with eight 60 MB plans");
}

/// Issue 19: the controller's record of an apply quotes what the nodes' failed steps printed
/// (redacted on the nodes); the plan's page shows each node's outcome to anyone, and those
/// lines only to a logged-in visitor.
#[test]
fn the_plan_page_shows_what_failed_steps_printed_only_after_login() {
    let site = Site::new();
    const TAIL: &str = "healthcheck failed 3 time(s): probe: NOPE-4242 APP_TOKEN='[redacted]'";
    site.lab.write(
        &format!("rt/state/applied/{}.json", site.id),
        serde_json::json!({
            "plan": site.id,
            "state": "partial",
            "updated": "2026-12-05T00:00:00Z",
            "by": "test",
            "nodes": { "alpha": { "outcome": "rolled back", "detail": TAIL } },
        })
        .to_string(),
    );
    let ui = Ui::with_token(&site.lab);
    let http = ui.http();
    let page = http.get(&format!("/plans/{}", site.id));
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("rolled back"), "{}", page.body);
    assert!(!page.body.contains("NOPE-4242"), "shown logged out:\n{}", page.body);
    assert!(page.body.contains("shown after logging in"), "{}", page.body);
    let csrf = http.csrf("/login");
    assert_eq!(http.form("/login", &[("csrf", &csrf), ("token", TOKEN)]).status, 303);
    let page = http.get(&format!("/plans/{}", site.id));
    assert!(page.body.contains("probe: NOPE-4242 APP_TOKEN=&#39;[redacted]&#39;"), "{}", page.body);
}
