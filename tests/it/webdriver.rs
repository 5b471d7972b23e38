//! A small W3C WebDriver client over ureq, for the operator page's browser tests: Debian's
//! `chromedriver` drives Debian's `chromium`, headless. Both are started by the test and
//! missing ones fail the test loudly (`.ci/install` installs them); nothing is downloaded.
//!
//! Why not a WebDriver crate: `fantoccini` with its default features off still brings the
//! `webdriver` crate and with it two ICU stacks, `time`, two `cookie`s and `http` 0.2 (about
//! 60 crates) to say what a dozen JSON requests say; ureq, serde_json and base64 are already
//! dependencies.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// The W3C key of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A free port on loopback (bound, then released for the child to bind).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running `chromedriver`, stopped (after its sessions) when dropped.
pub struct Driver {
    child: Child,
    base: String,
    agent: ureq::Agent,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    /// Starts chromedriver on a free loopback port and waits until it is ready.
    pub fn start(log: &Path) -> Driver {
        for (bin, package) in [(CHROMEDRIVER, "chromium-driver"), (CHROMIUM, "chromium")] {
            assert!(
                Path::new(bin).exists(),
                "`{bin}` is missing: the operator page's browser tests need Debian's `{package}` (run .ci/install, or `apt-get install -y chromium chromium-driver`)"
            );
        }
        let port = free_port();
        let log_file = std::fs::File::create(log).unwrap();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::from(log_file.try_clone().unwrap()))
            .stderr(Stdio::from(log_file))
            .spawn()
            .expect("cannot start chromedriver");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let d = Driver { child, base: format!("http://127.0.0.1:{port}"), agent };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut r) = d.agent.get(&format!("{}/status", d.base)).call() {
                let text = r.body_mut().read_to_string().unwrap_or_default();
                let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                if v["value"]["ready"] == true {
                    return d;
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready: see {}",
                log.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A WebDriver command: its value, or the error WebDriver answered.
    fn try_call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let r = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("DELETE", _) => self.agent.delete(&url).call(),
            (_, b) => self
                .agent
                .post(&url)
                .header("Content-Type", "application/json")
                .send(b.unwrap_or(json!({})).to_string()),
        };
        let mut r = r.map_err(|e| format!("WebDriver {method} {path}: {e}"))?;
        let status = r.status();
        let text = r
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_string()
            .map_err(|e| format!("WebDriver {method} {path}: {e}"))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| format!("WebDriver {method} {path}: not JSON ({e}): {text}"))?;
        if !status.is_success() {
            return Err(format!("WebDriver {method} {path}: {status}: {}", v["value"]));
        }
        Ok(v["value"].clone())
    }

    /// A new headless Chromium session: `mobile` emulates a phone of that CSS size (a real
    /// mobile viewport, so the page's viewport meta applies), else a desktop window.
    pub fn session(&self, width: u32, height: u32, mobile: bool) -> Session<'_> {
        let mut options = json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--disable-crash-reporter", "--disable-breakpad", "--no-first-run",
                "--disable-background-networking", "--disable-sync", "--disable-extensions",
                format!("--window-size={width},{height}"),
            ],
        });
        if mobile {
            options["mobileEmulation"] = json!({
                "deviceMetrics": {"width": width, "height": height, "pixelRatio": 2.0, "touch": true, "mobile": true},
                "userAgent": "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0 Mobile Safari/537.36",
            });
        }
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}}});
        let v = self.call("POST", "/session", Some(caps));
        let id = v["sessionId"].as_str().expect("a session id").to_owned();
        let s = Session { driver: self, id };
        if !mobile {
            s.cmd("POST", "/window/rect", json!({"width": width, "height": height}));
        }
        s
    }
}

/// One browser; closed when dropped.
pub struct Session<'a> {
    driver: &'a Driver,
    id: String,
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let _ =
            self.driver.agent.delete(&format!("{}/session/{}", self.driver.base, self.id)).call();
    }
}

impl Session<'_> {
    fn cmd(&self, method: &str, path: &str, body: Value) -> Value {
        self.driver.call(method, &format!("/session/{}{path}", self.id), Some(body))
    }

    fn get(&self, path: &str) -> Value {
        self.driver.call("GET", &format!("/session/{}{path}", self.id), None)
    }

    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", json!({"url": url}));
    }

    pub fn url(&self) -> String {
        self.get("/url").as_str().unwrap_or_default().to_owned()
    }

    pub fn title(&self) -> String {
        self.get("/title").as_str().unwrap_or_default().to_owned()
    }

    /// The page's HTML as the browser holds it.
    pub fn source(&self) -> String {
        self.get("/source").as_str().unwrap_or_default().to_owned()
    }

    /// The element a CSS selector finds (the test fails when there is none).
    pub fn find(&self, css: &str) -> String {
        let v = self.cmd("POST", "/element", json!({"using": "css selector", "value": css}));
        v[ELEMENT].as_str().unwrap_or_else(|| panic!("no element `{css}`: {v}")).to_owned()
    }

    /// Every element a CSS selector finds.
    pub fn find_all(&self, css: &str) -> Vec<String> {
        let v = self.cmd("POST", "/elements", json!({"using": "css selector", "value": css}));
        v.as_array().unwrap().iter().map(|e| e[ELEMENT].as_str().unwrap().to_owned()).collect()
    }

    /// The rendered text of the element `css` finds.
    pub fn text(&self, css: &str) -> String {
        let el = self.find(css);
        self.get(&format!("/element/{el}/text")).as_str().unwrap_or_default().to_owned()
    }

    /// Types `text` into the element `css` finds (a file input takes a path: an upload).
    pub fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css);
        self.cmd("POST", &format!("/element/{el}/value"), json!({"text": text}));
    }

    /// The text of the element `css` finds once it contains `want` (a form's answer is a new
    /// page: the old one may still be there, or going, when the click returns).
    pub fn wait_text(&self, css: &str, want: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut last = String::new();
        while Instant::now() < deadline {
            let found = self
                .driver
                .try_call(
                    "POST",
                    &format!("/session/{}/element", self.id),
                    Some(json!({"using": "css selector", "value": css})),
                )
                .ok()
                .and_then(|v| v[ELEMENT].as_str().map(str::to_owned))
                .and_then(|el| {
                    self.driver
                        .try_call("GET", &format!("/session/{}/element/{el}/text", self.id), None)
                        .ok()
                })
                .and_then(|v| v.as_str().map(str::to_owned));
            if let Some(t) = found {
                if t.contains(want) {
                    return t;
                }
                last = t;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("`{css}` never showed `{want}`; it shows:\n{last}");
    }

    pub fn click(&self, css: &str) {
        let el = self.find(css);
        self.cmd("POST", &format!("/element/{el}/click"), json!({}));
    }

    /// Chooses the `<option>` with `value` of the `<select>` `css` finds.
    pub fn select(&self, css: &str, value: &str) {
        self.click(&format!("{css} option[value=\"{value}\"]"));
    }

    /// Runs a script in the page (the test's, not the page's: the page has none).
    pub fn execute(&self, script: &str) -> Value {
        self.cmd("POST", "/execute/sync", json!({"script": script, "args": []}))
    }

    /// A PNG of what the browser shows.
    pub fn screenshot(&self) -> Vec<u8> {
        use base64::Engine as _;
        let b64 = self.get("/screenshot");
        base64::engine::general_purpose::STANDARD.decode(b64.as_str().unwrap()).unwrap()
    }
}
