//! The lab itself works: real sshd with pinned host keys, a real Docker Engine per node with the
//! test image, Compose v2, and cutting a node's link.

use crate::lab::{Lab, IMAGE};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn ok(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn http_get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp
}

/// `ssh root@<node> true` with a 2 s connect timeout.
fn ssh_quick(lab: &Lab, node: &str) -> Output {
    Command::new("ssh")
        .args(["-o", "ConnectTimeout=2"])
        .args(lab.ssh_options())
        .args([&format!("root@{}", lab.node(node).address), "--", "true"])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn lab_nodes_have_sshd_docker_compose_and_can_be_cut_off() {
    let lab = Lab::start(&["alpha", "beta"]);

    for name in ["alpha", "beta"] {
        let node = lab.node(name);

        // ssh with strict host key checking against the lab's known_hosts, an argv kept intact.
        let out = lab.ssh(name, &["printf", "%s|", "it's", "a b", "-n", "$HOME", ";id"]);
        assert_eq!(ok(&format!("ssh to {name}"), &out), "it's|a b|-n|$HOME|;id|");
        // The node is its own host: its own address, and sessions reach its own engine.
        let out = lab.ssh(name, &["sh", "-c", "ip -o -4 addr show dev eth0; echo $DOCKER_HOST"]);
        let text = ok(&format!("ssh to {name}"), &out);
        assert!(text.contains(&format!("{}/24", node.address)), "{text}");
        assert!(text.contains(&node.docker_socket.display().to_string()), "{text}");

        // The system ssh refuses a host whose key is not the pinned one.
        let wrong = lab.dir().join(format!("known_hosts.wrong.{name}"));
        let other = lab.node(if name == "alpha" { "beta" } else { "alpha" });
        let pinned = std::fs::read_to_string(lab.known_hosts()).unwrap();
        let swapped: String = pinned
            .lines()
            .filter(|l| l.starts_with(&format!("{} ", other.address)))
            .map(|l| l.replacen(&other.address, &node.address, 1) + "\n")
            .collect();
        std::fs::write(&wrong, swapped).unwrap();
        let out = Command::new("ssh")
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", wrong.display()))
            .args(lab.ssh_options())
            .args([&format!("root@{}", node.address), "--", "true"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "ssh accepted a host key that is not pinned for {name}");
        assert!(err.contains("HOST IDENTIFICATION HAS CHANGED"), "{err}");

        // The engine: its own, with the test image, running busybox.
        let info = ok("docker info", &lab.docker(name, &["info", "--format", "{{json .}}"]));
        let info: serde_json::Value = serde_json::from_str(info.trim()).unwrap();
        assert!(
            info["DockerRootDir"].as_str().unwrap().starts_with(&node.dir.display().to_string()),
            "{info}"
        );
        let out = lab.docker(name, &["run", "--rm", IMAGE, "echo", "ok"]);
        assert_eq!(ok("docker run", &out).trim(), "ok");
        let out = lab.ssh(name, &["docker", "run", "--rm", IMAGE, "sh", "-c", "echo ok over ssh"]);
        assert_eq!(ok("docker run over ssh", &out).trim(), "ok over ssh");
    }

    // Both engines hold the same image (loaded from one archive).
    let id = |n: &str| {
        ok("docker image inspect", &lab.docker(n, &["image", "inspect", "-f", "{{.Id}}", IMAGE]))
    };
    assert_eq!(id("alpha"), id("beta"));

    // Compose v2 on one node, driven over ssh the way the tool will: a web server with a
    // healthcheck and a sleeper that depends on it.
    let project = lab.node("beta").root().join("smoke");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(
        project.join("compose.yaml"),
        format!(
            r#"services:
  web:
    image: {IMAGE}
    command: ["httpd", "-f", "-p", "8080", "-h", "/etc"]
    ports: ["8080:8080"]
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/passwd"]
      interval: 1s
      retries: 30
  sleeper:
    image: {IMAGE}
    command: ["sleep", "3600"]
    depends_on:
      web:
        condition: service_healthy
"#
        ),
    )
    .unwrap();
    let dir = project.display().to_string();
    ok("docker compose version", &lab.ssh("beta", &["docker", "compose", "version"]));
    let up =
        ["docker", "compose", "--project-directory", &dir, "-p", "smoke", "up", "-d", "--wait"];
    ok("docker compose up", &lab.ssh("beta", &up));
    let ps = ok(
        "docker ps",
        &lab.docker(
            "beta",
            &[
                "ps",
                "--filter",
                "label=com.docker.compose.project=smoke",
                "--format",
                "{{.Names}} {{.Status}}",
            ],
        ),
    );
    assert!(ps.contains("smoke-web-1") && ps.contains("healthy"), "{ps}");
    assert!(ps.contains("smoke-sleeper-1"), "{ps}");
    // The published port answers on the node's address (a real network path to the node).
    let page = http_get(&format!("{}:8080", lab.node("beta").address), "/passwd");
    assert!(page.contains("200 OK") && page.contains("root:x:0:0"), "{page}");
    let other = ok("docker ps on alpha", &lab.docker("alpha", &["ps", "-q"]));
    assert!(other.trim().is_empty(), "alpha's engine runs beta's containers: {other}");
    ok(
        "docker compose down",
        &lab.ssh(
            "beta",
            &["docker", "compose", "--project-directory", &dir, "-p", "smoke", "down"],
        ),
    );
    let ps = ok("docker ps", &lab.docker("beta", &["ps", "-aq"]));
    assert!(ps.trim().is_empty(), "{ps}");

    // Cut alpha off: ssh fails within its connect timeout; beta is untouched; restore brings
    // alpha back.
    lab.cut("alpha");
    let out = ssh_quick(&lab, "alpha");
    assert!(!out.status.success(), "ssh to a cut node succeeded");
    ok("ssh to beta while alpha is cut", &lab.ssh("beta", &["true"]));
    // On the node itself (no ssh), its engine still answers.
    let out =
        lab.node_command("alpha", "docker").args(["image", "ls", "-q", IMAGE]).output().unwrap();
    assert!(!ok("docker on a cut node, locally", &out).trim().is_empty());
    lab.restore("alpha");
    ok("ssh to alpha after restore", &lab.ssh("alpha", &["true"]));

    // Silently dropped packets (a dead LTE link): the connect times out.
    lab.blackhole("alpha");
    let out = ssh_quick(&lab, "alpha");
    assert!(!out.status.success(), "ssh to a blackholed node succeeded");
    lab.restore("alpha");
    ok("ssh to alpha after restore", &lab.ssh("alpha", &["true"]));

    // A slow, lossy link still carries ssh (the times are printed, not asserted).
    let t = Instant::now();
    ok("ssh to alpha", &lab.ssh("alpha", &["true"]));
    eprintln!("lab_smoke: ssh on a plain link: {:?}", t.elapsed());
    lab.slow("alpha", "loss 100%");
    assert!(!ssh_quick(&lab, "alpha").status.success(), "ssh through `loss 100%` succeeded");
    lab.slow("alpha", "delay 100ms loss 5%");
    let t = Instant::now();
    ok("ssh to alpha over a slow link", &lab.ssh("alpha", &["true"]));
    eprintln!("lab_smoke: ssh on `delay 100ms loss 5%`: {:?}", t.elapsed());
    lab.unslow("alpha");
    ok("ssh to alpha after unslow", &lab.ssh("alpha", &["true"]));
}
