//! `homelab agent` against real parts: a lab node's Docker Engine (its event stream), a dummy
//! `tailscale0` link in the node's network namespace (Tailscale itself cannot run here), Debian's
//! `mosquitto` as the broker, and a small tmpfs as the runtime root so the disk can really fill.
//! The agent runs inside the node's network namespace, as the `stability-agent` container does
//! with host networking. Every wait is a bounded poll of a file (the events, the heartbeat) or
//! of the engine, never a sleep standing in for an outcome. Kills at exact points of recording
//! an event are made by `strace` (`support::under_strace`), not by hooks in homelab.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use crate::lab::Lab;

/// One lab at a time (this file's tests).
// One lab at a time, whichever test file starts it (they are heavy on 2 cores).
use crate::apply::LAB;

const NODE: &str = "alpha";
const BROKER: &str = "127.0.0.1:1883";

/// A process of the test's, killed when dropped (a failed assertion leaves nothing running).
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // The lab's teardown unmounts it first when the lab goes first; quiet then.
        let _ = Command::new("umount").arg("-l").arg(&self.0).stderr(Stdio::null()).status();
    }
}

fn ok(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

/// Polls `f` every 50 ms until it gives a value, for at most `secs`; panics naming `what`.
fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "waited {secs} s for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

struct Site {
    lab: Lab,
    root: PathBuf,
    log: PathBuf,
}

impl Site {
    fn ip(&self, args: &[&str]) {
        let out = self.lab.node_command(NODE, "ip").args(args).output().unwrap();
        ok(out, &format!("ip {}", args.join(" ")));
    }

    fn docker(&self, args: &[&str]) -> Output {
        ok(self.lab.docker(NODE, args), &format!("docker {}", args.join(" ")))
    }

    fn health(&self, container: &str) -> String {
        let out = self.lab.docker(NODE, &["inspect", "-f", "{{.State.Health.Status}}", container]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `homelab agent <extra>` in the node's network namespace, against the node's engine,
    /// its stderr appended to the log.
    fn agent_command(&self, extra: &[&str]) -> Command {
        let node = self.lab.node(NODE);
        let mut c = self.lab.node_command(NODE, env!("CARGO_BIN_EXE_homelab"));
        c.arg("agent")
            .arg("--root")
            .arg(&self.root)
            .args(["--node", NODE, "--docker-socket"])
            .arg(&node.docker_socket)
            .args(extra)
            .env_remove("HOMELAB_ROOT")
            .env_remove("HOMELAB_NODE")
            .env_remove("HOMELAB_MQTT")
            .stdout(Stdio::null())
            .stderr(fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap());
        c
    }

    /// The agent watching the engine, the broker, `tailscale0` and the disk.
    fn agent(&self) -> Proc {
        let mut c = self.agent_command(&[
            "--mqtt",
            BROKER,
            "--interface",
            "tailscale0",
            "--interval",
            "0.5",
            "--disk-threshold",
            "50",
        ]);
        Proc(c.spawn().expect("homelab agent starts"))
    }

    /// `docker run` of a container `web` from the lab's image, labelled as Compose labels a
    /// project's container, with `options`, running `script`.
    fn compose_web(&self, options: &[&str], script: &str) {
        let mut args = vec![
            "run",
            "-d",
            "--name",
            "web",
            "--network",
            "none",
            "--label",
            "com.docker.compose.project=web",
            "--label",
            "com.docker.compose.service=web",
        ];
        args.extend(options);
        args.extend([crate::lab::IMAGE, "sh", "-c", script]);
        self.docker(&args);
    }

    /// Debian's mosquitto on the node, listening once its log says so.
    fn broker(&self) -> Proc {
        let dir = self.lab.node(NODE).dir.join("mosquitto");
        fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("mosquitto.conf");
        fs::write(
            &conf,
            "listener 1883 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\n",
        )
        .unwrap();
        let log = dir.join("mosquitto.log");
        let mut c = self.lab.node_command(NODE, "/usr/sbin/mosquitto");
        c.arg("-c").arg(&conf).stdout(Stdio::null()).stderr(fs::File::create(&log).unwrap());
        let p = Proc(c.spawn().expect("nsenter runs mosquitto"));
        wait_for("mosquitto to listen", 20, || {
            fs::read_to_string(&log).unwrap_or_default().contains(" running").then_some(())
        });
        p
    }

    fn events(&self) -> Vec<Value> {
        let (events, torn) = homelab::events::read_all(&self.root, Some(NODE)).unwrap();
        assert_eq!(torn, 0);
        events
    }

    /// Waits for the `n`-th (1-based) event of `kind` whose `key` (service, or data.link /
    /// data.check) is `name`.
    fn wait_event(&self, n: usize, kind: &str, name: &str) -> Value {
        wait_for(&format!("event #{n} {kind} {name}\n{}", self.dump()), 20, || {
            self.matching(kind, name).into_iter().nth(n - 1)
        })
    }

    fn matching(&self, kind: &str, name: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| {
                e["type"] == kind
                    && (e["service"] == name
                        || e["data"]["link"] == name
                        || e["data"]["check"] == name)
            })
            .collect()
    }

    fn dump(&self) -> String {
        let lines: Vec<String> = self.events().iter().map(Value::to_string).collect();
        format!(
            "events:\n{}\nagent log:\n{}",
            lines.join("\n"),
            fs::read_to_string(&self.log).unwrap_or_default()
        )
    }

    fn heartbeat(&self) -> Option<Value> {
        let text = fs::read_to_string(self.root.join("state/agent/heartbeat.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Waits until the agent `pid` has scanned the engine, reached the broker and read the
    /// link, and has written a heartbeat since: everything it saw at start is in the events.
    fn wait_ready(&self, pid: u32) -> Value {
        let first = wait_for(&format!("agent {pid} ready\n{}", self.dump()), 30, || {
            self.heartbeat().filter(|h| {
                h["pid"] == pid
                    && h["status"]["docker"] == "connected"
                    && h["status"]["mqtt"] == "up"
                    && h["status"]["interface"].is_string()
            })
        });
        self.next_heartbeat(&first)
    }

    /// Waits for a heartbeat written after `h` (a later `time` or another write).
    fn next_heartbeat(&self, h: &Value) -> Value {
        let path = self.root.join("state/agent/heartbeat.json");
        let before = fs::metadata(&path).and_then(|m| m.modified()).unwrap();
        wait_for("the next heartbeat", 10, || {
            let m = fs::metadata(&path).and_then(|m| m.modified()).ok()?;
            (m > before).then(|| self.heartbeat()).flatten().filter(|n| n["pid"] == h["pid"])
        })
    }
}

#[test]
fn the_agent_reports_containers_links_broker_and_disk_once_each_across_restarts() {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    assert!(
        std::path::Path::new("/usr/sbin/mosquitto").is_file(),
        "/usr/sbin/mosquitto is missing: install Debian's package mosquitto (.ci/install does)"
    );
    let lab = Lab::start(&[NODE]);
    let root = lab.node(NODE).root();
    fs::create_dir_all(&root).unwrap();
    // A small filesystem of its own, so filling the disk past the threshold is real.
    ok(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
            .arg(&root)
            .output()
            .unwrap(),
        "mount tmpfs",
    );
    let _tmpfs = Tmpfs(root.clone());
    let site = Site { log: lab.node(NODE).dir.join("agent.log"), lab, root };

    // The node before the agent starts: a healthy compose container, the tailnet link up, the
    // broker running. The lab's image, labelled as Compose labels a project's container.
    site.compose_web(
        &[
            "--health-cmd",
            "test -f /tmp/ok",
            "--health-interval",
            "1s",
            "--health-timeout",
            "1s",
            "--health-retries",
            "1",
        ],
        "touch /tmp/ok; exec sleep 3600",
    );
    // A veth pair stands in for the tun device (this kernel may lack the `dummy` module; veth
    // is what the lab itself is built on). Its peer stays up, so `tailscale0` is up exactly
    // when the test sets it up.
    site.ip(&["link", "add", "tailscale0", "type", "veth", "peer", "name", "ts-peer"]);
    site.ip(&["link", "set", "ts-peer", "up"]);
    site.ip(&["link", "set", "tailscale0", "up"]);
    let mut broker = site.broker();
    wait_for("web healthy", 20, || (site.health("web") == "healthy").then_some(()));

    let t0 = Instant::now();
    let agent = site.agent();
    let ready = site.wait_ready(agent.0.id());
    // All well at first sight: nothing to report.
    assert_eq!(site.events(), Vec::<Value>::new(), "{}", site.dump());
    assert_eq!(ready["node"], NODE);
    assert_eq!(ready["watching"]["interface"], "tailscale0");
    assert_eq!(ready["watching"]["mqtt"], BROKER);
    assert_eq!(ready["version"], env!("CARGO_PKG_VERSION"));
    let age = SystemTime::now()
        .duration_since(humantime::parse_rfc3339(ready["time"].as_str().unwrap()).unwrap())
        .unwrap_or_default();
    assert!(age < Duration::from_secs(5), "heartbeat {age:?} old");

    // Failing healthcheck → unhealthy; passing again → recovered, the same incident.
    site.docker(&["exec", "web", "rm", "/tmp/ok"]);
    let down = site.wait_event(1, "service_unhealthy", "web");
    assert_eq!(down["source"], "stability-agent");
    assert_eq!(down["severity"], "error");
    assert_eq!(down["data"]["health"], "unhealthy");
    assert_eq!(down["data"]["container"], "web");
    site.docker(&["exec", "web", "touch", "/tmp/ok"]);
    let up = site.wait_event(1, "service_recovered", "web");
    assert_eq!(up["correlation_id"], down["correlation_id"]);
    assert_eq!(up["data"]["health"], "healthy");

    // Killed → unhealthy with the exit code.
    site.docker(&["kill", "web"]);
    let died = site.wait_event(2, "service_unhealthy", "web");
    assert_eq!(died["data"]["error"], "exited with code 137", "{died}");
    assert_ne!(died["correlation_id"], down["correlation_id"]);

    // The tailnet link down and up.
    site.ip(&["link", "set", "tailscale0", "down"]);
    let off = site.wait_event(1, "node_offline", "tailscale0");
    assert_eq!(off["severity"], "warning");
    site.ip(&["link", "set", "tailscale0", "up"]);
    let on = site.wait_event(1, "node_online", "tailscale0");
    assert_eq!(on["correlation_id"], off["correlation_id"]);

    // The broker stopped and started.
    drop(broker);
    let off = site.wait_event(1, "node_offline", "mqtt");
    assert_eq!(off["data"]["broker"], BROKER);
    broker = site.broker();
    site.wait_event(1, "node_online", "mqtt");

    // The disk over 50 %: reported once, however many intervals it stays there.
    let fill = site.root.join("fill");
    fs::write(&fill, vec![1u8; 5 << 20]).unwrap();
    let full = site.wait_event(1, "service_unhealthy", "disk");
    assert_eq!(full["severity"], "warning");
    assert_eq!(full["service"], "-");
    assert!(full["data"]["used_percent"].as_f64().unwrap() > 50.0, "{full}");
    let mut h = site.heartbeat().unwrap();
    for _ in 0..3 {
        h = site.next_heartbeat(&h);
    }
    assert_eq!(site.matching("service_unhealthy", "disk").len(), 1, "{}", site.dump());
    assert!(h["status"]["disk_used_percent"].as_f64().unwrap() > 50.0, "{h}");
    fs::remove_file(&fill).unwrap();
    site.wait_event(1, "service_recovered", "disk");

    // Killed and started again with nothing changed: no event repeated.
    let before = site.events().len();
    drop(agent);
    let agent = site.agent();
    let h = site.wait_ready(agent.0.id());
    let h = site.next_heartbeat(&h);
    assert_eq!(h["status"]["unhealthy_services"], serde_json::json!(["web"]), "{h}");
    assert_eq!(site.events().len(), before, "a restarted agent repeated events\n{}", site.dump());

    // Killed; while it is away web comes back and the link goes down: both are reported when
    // it is back, once each.
    drop(agent);
    site.docker(&["start", "web"]);
    site.ip(&["link", "set", "tailscale0", "down"]);
    wait_for("web healthy again", 20, || (site.health("web") == "healthy").then_some(()));
    let agent = site.agent();
    site.wait_ready(agent.0.id());
    let back = site.wait_event(2, "service_recovered", "web");
    assert_eq!(back["correlation_id"], died["correlation_id"]);
    site.wait_event(2, "node_offline", "tailscale0");
    let h = site.heartbeat().unwrap();
    site.next_heartbeat(&h);

    let count = |kind: &str, name: &str| site.matching(kind, name).len();
    let counts = [
        count("service_unhealthy", "web"),
        count("service_recovered", "web"),
        count("node_offline", "tailscale0"),
        count("node_online", "tailscale0"),
        count("node_offline", "mqtt"),
        count("node_online", "mqtt"),
        count("service_unhealthy", "disk"),
        count("service_recovered", "disk"),
    ];
    assert_eq!(counts, [2, 2, 2, 1, 1, 1, 1, 1], "{}", site.dump());
    assert_eq!(site.events().len(), 11, "{}", site.dump());
    // It never touched what it watches: web still runs as started by hand.
    assert_eq!(site.health("web"), "healthy");
    // And it never wrote outside events/ and state/agent/.
    let mut top: Vec<String> = fs::read_dir(&site.root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(top, ["events", "state"]);
    let state: Vec<String> = fs::read_dir(site.root.join("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(state, ["agent"]);
    eprintln!("agent test: {:.1}s after the lab was up", t0.elapsed().as_secs_f64());
    drop(agent);
    drop(broker);
}

/// Issue 11: the agent killed at each point of recording an event, and started again, loses
/// none and repeats none. An event is decided, written to `state/agent/state.json` as pending,
/// appended to the events file, then cleared from the pending list. `strace` SIGKILLs the agent
/// (1) as it opens the events file to append a pending event (recorded, not appended: the next
/// agent appends it), (2) after its write, at the `fdatasync` (appended, still pending: the next
/// agent finds the line there and does not append it again). A kill before the pending save
/// is a kill before the event, which the other test covers (the next agent's first look
/// reports what changed while it was away).
#[test]
fn the_agent_killed_while_it_records_an_event_loses_none_and_repeats_none() {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::start(&[NODE]);
    let root = lab.node(NODE).root();
    fs::create_dir_all(&root).unwrap();
    let t0 = Instant::now();
    let site = Site { log: lab.node(NODE).dir.join("agent.log"), lab, root };
    site.compose_web(&[], "exec sleep 3600");
    let command = || site.agent_command(&["--interface", "lo", "--interval", "0.5"]);
    let pending = || -> Vec<String> {
        let text = fs::read_to_string(site.root.join("state/agent/state.json")).unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or_default();
        let lines = v["pending"].as_array().cloned().unwrap_or_default();
        lines.iter().map(Value::to_string).collect()
    };
    let count = |kind: &str| site.matching(kind, "web").len();
    // An agent (under strace its pid is not the child's) is ready once a heartbeat written
    // after `since` says it has reached the engine.
    let ready = |since: SystemTime| {
        let path = site.root.join("state/agent/heartbeat.json");
        wait_for(&format!("an agent ready\n{}", site.dump()), 30, || {
            let m = fs::metadata(&path).and_then(|m| m.modified()).ok()?;
            let h = site.heartbeat()?;
            (m > since && h["status"]["docker"] == "connected").then_some(())
        });
    };
    // The node's events file (of today, or of tomorrow should the day turn meanwhile).
    let now = SystemTime::now();
    let files: Vec<PathBuf> = [now, now + Duration::from_secs(86_400)]
        .into_iter()
        .map(|t| site.root.join(format!("events/{}/{NODE}/events.jsonl", homelab::clock::day(t))))
        .collect();
    let files: Vec<&std::path::Path> = files.iter().map(PathBuf::as_path).collect();
    // Runs the agent under strace until it is killed at the cut, after `then` made an event.
    let cut = |syscalls: &str, then: &[&str]| {
        let since = SystemTime::now();
        let mut strace = crate::support::under_strace(&command(), &files, syscalls, 1);
        let log = fs::OpenOptions::new().append(true).open(&site.log).unwrap();
        let mut child = Proc(strace.stdout(Stdio::null()).stderr(log).spawn().unwrap());
        ready(since);
        site.docker(then);
        let status = wait_for(&format!("the kill at {syscalls}\n{}", site.dump()), 30, || {
            child.0.try_wait().unwrap()
        });
        assert!(crate::support::was_killed(status), "{status}\n{}", site.dump());
    };
    // Started again without strace: ready, and one more heartbeat so any catch-up is done.
    let restart = || {
        let since = SystemTime::now();
        let agent = Proc(command().spawn().unwrap());
        ready(since);
        let h = site.heartbeat().unwrap();
        site.next_heartbeat(&h);
        agent
    };

    // (1) Killed as it opens the events file to append the event it recorded as pending.
    cut("?open,openat", &["stop", "web"]);
    assert_eq!(count("service_unhealthy"), 0, "{}", site.dump());
    let left = pending();
    assert!(left.len() == 1 && left[0].contains("service_unhealthy"), "{left:?}");
    let agent = restart();
    assert_eq!(count("service_unhealthy"), 1, "appended by the next agent\n{}", site.dump());
    assert!(pending().is_empty());
    drop(agent);

    // (2) Killed once the line is written, before it is synced and cleared from pending.
    cut("fdatasync,fsync", &["start", "web"]);
    assert_eq!(count("service_recovered"), 1, "{}", site.dump());
    let left = pending();
    assert!(left.len() == 1 && left[0].contains("service_recovered"), "{left:?}");
    let agent = restart();
    assert_eq!(count("service_recovered"), 1, "not appended again\n{}", site.dump());
    assert!(pending().is_empty());
    drop(agent);
    assert_eq!(site.events().len(), 2, "{}", site.dump());
    eprintln!("agent kill test: {:.1}s after the lab was up", t0.elapsed().as_secs_f64());
}
