//! `homelab bootstrap` against a bare lab node (sshd and dockerd only): first contact, the
//! runtime tree with its modes, the binary, the agents' image run in a container, a second run
//! that changes nothing, and `--check` that writes nothing. Then the node takes a plan and an
//! apply of its services, the repository's own `stability-agent` among them, run under Compose
//! from the image bootstrap built, and bootstrap still finds nothing to do. The node's runtime root holds
//! spaces and option-like words, so every value is seen to arrive as one argument. (Quotes,
//! `$`, backticks and newlines are refused in a root by validation; the node-side scripts are
//! run with those by the unit tests of `bootstrap::remote`.)

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::lab::Lab;
use crate::support::{copy_tree, fixtures, Output, Snapshot};

/// One lab at a time.
// One lab at a time, whichever test file starts it (they are heavy on 2 cores).
use crate::apply::LAB;

/// The base fixture with ALPHA on a lab node (EDGE-A and EDGE-B are never contacted), and no
/// known_hosts file: ALPHA is met for the first time.
struct Site {
    lab: Lab,
    repo: tempfile::TempDir,
    root: PathBuf,
}

impl Site {
    fn new(lab: Lab, root: PathBuf) -> Site {
        let repo = tempfile::tempdir().unwrap();
        copy_tree(&fixtures().join("base"), repo.path());
        let n = lab.node("alpha");
        let yaml = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        let topology = format!(
            "mesh: tailscale\nsites:\n  home:\n    uplink: fiber\n    offline_first: false\n  remote:\n    uplink: lte\n    offline_first: true\nnodes:\n  alpha:\n    display_name: ALPHA\n    roles: [control]\n    site: home\n    ssh:\n      address: {}\n      user: root\n      port: 22\n    runtime_root: \"{}\"\n    docker_socket: \"{}\"\n  edge-a:\n    display_name: EDGE-A\n    roles: [edge, mqtt]\n    site: remote\n    ssh:\n      address: 192.0.2.3\n  edge-b:\n    display_name: EDGE-B\n    roles: [edge]\n    site: remote\n    ssh:\n      address: 192.0.2.4\n",
            n.address,
            yaml(&root.display().to_string()),
            n.docker_socket.display()
        );
        fs::write(repo.path().join("inventory/topology.yaml"), topology).unwrap();
        let _ = fs::remove_file(repo.path().join("inventory/known_hosts"));
        Site { lab, repo, root }
    }

    fn known_hosts(&self) -> PathBuf {
        self.repo.path().join("inventory/known_hosts")
    }

    /// `homelab bootstrap alpha ARGS`, stdin not a terminal.
    fn bootstrap(&self, args: &[&str]) -> Output {
        let out = Command::new(env!("CARGO_BIN_EXE_homelab"))
            .arg("--repo")
            .arg(self.repo.path())
            .args(["bootstrap", "alpha"])
            .args(args)
            .env("NO_COLOR", "1")
            .env("HOMELAB_SSH_KEY", self.lab.client_key())
            .env_remove("HOMELAB_REPO")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        Output::from(out)
    }

    /// `homelab ARGS` with the lab's login key and a controller root in the repository.
    fn homelab(&self, args: &[&str]) -> Output {
        let out = Command::new(env!("CARGO_BIN_EXE_homelab"))
            .arg("--repo")
            .arg(self.repo.path())
            .args(args)
            .env("NO_COLOR", "1")
            .env("HOMELAB_SSH_KEY", self.lab.client_key())
            .env("HOMELAB_ROOT", self.repo.path().join(".controller"))
            .env_remove("HOMELAB_SIGNING_KEY")
            .env_remove("HOMELAB_REPO")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        Output::from(out)
    }

    /// The node's host key fingerprint, as its console would show it.
    fn fingerprint(&self) -> String {
        let key = self.lab.node("alpha").dir.join("ssh_host_ed25519_key.pub");
        fingerprint_of(&key)
    }

    fn mode(&self, rel: &str) -> u32 {
        fs::metadata(self.root.join(rel)).unwrap().permissions().mode() & 0o7777
    }

    fn image_id(&self, image: &str) -> String {
        let out = self.lab.docker("alpha", &["image", "inspect", "--format", "{{.Id}}", image]);
        assert!(out.status.success(), "{image}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

/// `sha256sum` (coreutils): the test binary is large, and hashing it unoptimized is slow.
fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)[..64].to_owned()
}

fn fingerprint_of(public_key: &Path) -> String {
    let out = Command::new("ssh-keygen").arg("-lf").arg(public_key).output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).split_whitespace().nth(1).unwrap().to_owned()
}

/// Every path under `dir` with its mode, owner, inode, size and modification time: a file
/// rewritten (even atomically, by rename) or a folder touched shows.
type Entry = (String, u32, u32, u64, u64, i64, i64);

fn snapshot(dir: &Path) -> Vec<Entry> {
    let mut out = Vec::new();
    fn walk(base: &Path, d: &Path, out: &mut Vec<Entry>) {
        let mut entries: Vec<_> = fs::read_dir(d).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for p in entries {
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            let mtime = m.mtime_nsec();
            out.push((rel, m.mode() & 0o7777, m.uid(), m.ino(), m.size(), m.mtime(), mtime));
            if m.is_dir() {
                walk(base, &p, out);
            }
        }
    }
    walk(dir, dir, &mut out);
    out
}

#[test]
fn bootstrap_meets_a_bare_node_installs_and_builds_and_a_second_run_changes_nothing() {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = std::time::Instant::now();
    let step =
        |what: &str| eprintln!("bootstrap test: {what} at {:.1}s", t0.elapsed().as_secs_f64());
    let lab = Lab::start(&["alpha"]);
    // The topology allows letters, digits, spaces and `/._-+@,=~` in a root: every one of
    // them, with words a split would turn into options.
    let root = lab.node("alpha").dir.join("hl root -n --help, a=b+c@d ~x");
    let split = lab.node("alpha").dir.join("hl");
    let site = Site::new(lab, root.clone());
    let right = site.fingerprint();
    // A real fingerprint of another key: the client's.
    let wrong = fingerprint_of(&site.lab.client_key().with_extension("pub"));
    assert_ne!(right, wrong);

    // First contact, no terminal, no --host-key: refused, the fingerprint shown, nothing written.
    let out = site.bootstrap(&["--yes"]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains(&right), "the fingerprint is shown: {}", out.stderr);
    assert!(out.stderr.contains("--host-key"), "{}", out.stderr);
    assert!(!site.known_hosts().exists(), "a key nobody confirmed was written");
    assert!(!root.exists());

    step("refused without confirmation");
    // The wrong --host-key: refused, nothing written.
    let out = site.bootstrap(&["--yes", "--host-key", &wrong]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("refused, nothing was written"), "{}", out.stderr);
    assert!(!site.known_hosts().exists());
    assert!(!root.exists());

    step("refused a wrong --host-key");
    // --check on the fresh node with the right key: reports, exits 2, writes nothing (the
    // host key included).
    let out = site.bootstrap(&["--check", "--host-key", &right]);
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    for line in [
        "+ add the node's host key to the known_hosts file",
        "+ create <root>/ (0755)",
        "+ create config/ (0700)",
        "+ create logs/ (0750)",
        "+ create actions/pending/ (0755)",
        "+ install bin/homelab",
        "+ build image homelab/agent:",
    ] {
        assert!(out.stdout.contains(line), "missing {line:?} in:\n{}", out.stdout);
    }
    assert!(!site.known_hosts().exists(), "--check wrote the host key");
    assert!(!root.exists(), "--check created the root");
    let images = site.lab.docker("alpha", &["image", "ls", "-q", "homelab/agent"]);
    assert!(images.stdout.is_empty(), "--check built an image");

    step("--check");
    // What the operator had before: a config folder open to all, a secret and some data.
    fs::create_dir_all(root.join("config/broker")).unwrap();
    fs::set_permissions(root.join("config"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(root.join("config/broker/.env"), "BROKER_PASSWORD=kept\n").unwrap();
    fs::create_dir_all(root.join("data/broker")).unwrap();
    fs::write(root.join("data/broker/db"), "data\n").unwrap();
    fs::set_permissions(root.join("data"), fs::Permissions::from_mode(0o700)).unwrap();

    // The right --host-key: trusted, written, and the node bootstrapped.
    let out = site.bootstrap(&["--yes", "--host-key", &right]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let pinned = fs::read_to_string(site.lab.known_hosts()).unwrap();
    assert_eq!(fs::read_to_string(site.known_hosts()).unwrap(), pinned);
    assert!(out.stdout.contains("~ config/: mode 0755 -> 0700"), "{}", out.stdout);
    let version = format!("homelab {}", env!("CARGO_PKG_VERSION"));
    assert!(out.stdout.contains("bootstrapped alpha: "), "{}", out.stdout);
    assert!(out.stdout.contains(&version), "the version is shown: {}", out.stdout);

    step("bootstrapped");
    // The tree, with its modes (tightened, never loosened) and owner; contents untouched.
    for (rel, mode) in [
        ("", 0o755),
        ("bin", 0o755),
        ("config", 0o700),
        ("data", 0o700),
        ("logs", 0o750),
        ("state", 0o755),
        ("events", 0o755),
        ("world", 0o755),
        ("actions", 0o755),
        ("actions/pending", 0o755),
        ("actions/approved", 0o755),
        ("actions/running", 0o755),
        ("actions/completed", 0o755),
        ("actions/failed", 0o755),
    ] {
        assert_eq!(site.mode(rel), mode, "mode of {rel:?}");
        assert_eq!(fs::metadata(root.join(rel)).unwrap().uid(), 0, "owner of {rel:?}");
    }
    assert_eq!(
        fs::read_to_string(root.join("config/broker/.env")).unwrap(),
        "BROKER_PASSWORD=kept\n"
    );
    assert_eq!(fs::read_to_string(root.join("data/broker/db")).unwrap(), "data\n");

    // The binary: this one, byte for byte, and it runs on the node.
    let ours = sha256sum(Path::new(env!("CARGO_BIN_EXE_homelab")));
    let installed = root.join("bin/homelab");
    assert_eq!(sha256sum(&installed), ours);
    assert_eq!(site.mode("bin/homelab"), 0o755);
    let on_node = site.lab.ssh("alpha", &[installed.to_str().unwrap(), "--version"]);
    assert_eq!(String::from_utf8_lossy(&on_node.stdout).trim(), version);

    // The image: FROM scratch, built on the node, runs the binary in a container.
    let run = site.lab.ssh(
        "alpha",
        &["docker", "run", "--rm", "--network", "none", "homelab/agent:local", "--version"],
    );
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(String::from_utf8_lossy(&run.stdout).trim(), version);
    let tag = format!("homelab/agent:{}-{}", env!("CARGO_PKG_VERSION"), &ours[..12]);
    let id = site.image_id(&tag);
    assert_eq!(site.image_id("homelab/agent:local"), id);
    let layers = site.lab.docker("alpha", &["history", "-q", "--no-trunc", &tag]);
    assert_eq!(String::from_utf8_lossy(&layers.stdout).lines().count(), 1, "one layer, no base");

    step("checked the tree, binary and image");
    // A second run: nothing to do, nothing touched.
    let before = snapshot(&root);
    let out = site.bootstrap(&["--yes"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("already bootstrapped: alpha"), "{}", out.stdout);
    assert!(out.stdout.contains("nothing changed"), "{}", out.stdout);
    assert_eq!(snapshot(&root), before);
    assert_eq!(site.image_id("homelab/agent:local"), id);
    let out = site.bootstrap(&["--check"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);

    step("second run");
    // A moved tag is put back, and only that.
    let moved = site.lab.docker("alpha", &["tag", crate::lab::IMAGE, "homelab/agent:local"]);
    assert!(moved.status.success());
    let out = site.bootstrap(&["--check"]);
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains(&format!("~ tag homelab/agent:local -> {tag}")), "{}", out.stdout);
    let out = site.bootstrap(&["--yes"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(site.image_id("homelab/agent:local"), id);
    assert_eq!(snapshot(&root), before);

    step("retagged");
    // Every value arrived as data: the root is where the topology says, in one piece.
    assert!(root.join("bin/homelab").is_file());
    assert!(!split.exists(), "the runtime root was split into words");

    // An engine that does not answer is named, with what to do, before anything is changed.
    let topology = site.repo.path().join("inventory/topology.yaml");
    let socket = site.lab.node("alpha").docker_socket.display().to_string();
    let text = fs::read_to_string(&topology).unwrap();
    fs::write(&topology, text.replace(&socket, "/nonexistent/docker.sock")).unwrap();
    let out = site.bootstrap(&["--yes"]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("the Docker Engine at unix:///nonexistent/docker.sock does not answer"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("systemctl enable --now docker"), "{}", out.stderr);
    assert_eq!(snapshot(&root), before);

    fs::write(&topology, text).unwrap();

    step("engine down named");
    // The bootstrapped node takes a plan and an apply of its services: the fixture's and the
    // repository's own stability-agent, whose image is the one bootstrap built. The lab's
    // engine listens on a socket of its own, so the node's override mounts that one where the
    // agent looks (Compose merges volumes by their target).
    copy_tree(
        &crate::support::repo_root().join("services/stability-agent"),
        &site.repo.path().join("services/stability-agent"),
    );
    let write = |rel: &str, text: &str| {
        let p = site.repo.path().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    };
    let edit = |rel: &str, f: &dyn Fn(String) -> String| {
        let p = site.repo.path().join(rel);
        fs::write(&p, f(fs::read_to_string(&p).unwrap())).unwrap();
    };
    let socket = site.lab.node("alpha").docker_socket.display().to_string();
    for node in ["alpha", "edge-a", "edge-b"] {
        edit(&format!("hosts/{node}/services.yaml"), &|s| {
            s + "  - name: stability-agent\n    exposure: internal\n"
        });
    }
    edit("services/stability-agent/service.yaml", &|s| {
        s.replace("host_paths: [", &format!("host_paths: [\"{socket}\", "))
    });
    write(
        "hosts/alpha/runtime/stability-agent/docker-compose.override.yml",
        &format!(
            "services:\n  stability-agent:\n    volumes:\n      - \"{socket}:/var/run/docker.sock:ro\"\n"
        ),
    );
    // Quick healthchecks keep the lab fast.
    for svc in ["agent", "web", "stability-agent"] {
        edit(&format!("services/{svc}/service.yaml"), &|s| {
            s.replace("interval: 5s", "interval: 1s")
                .replace("interval: 30s", "interval: 1s")
                .replace("timeout: 2s", "timeout: 1s")
                .replace("timeout: 5s", "timeout: 1s")
        });
    }
    let key = site.repo.path().join(".operator_key");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "operator@test", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(made.status.success());
    let public = fs::read_to_string(key.with_extension("pub")).unwrap();
    let public: Vec<&str> = public.split_whitespace().take(2).collect();
    write(
        "inventory/allowed_signers",
        &format!(
            "operator@test namespaces=\"homelab-plan,homelab-approve\" {}\n",
            public.join(" ")
        ),
    );
    // The node pinned the repository's roots of its bootstrap: new ones are refused until the
    // owner says to replace them (or a plan approved under the old ones carries them).
    let out = site.bootstrap(&["--yes"]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("differ from the repository's: nothing was changed"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("--replace-trust"), "{}", out.stderr);
    let out = site.bootstrap(&["--yes", "--replace-trust"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("~ replace the pinned trust roots"), "{}", out.stdout);
    assert!(fs::read_to_string(root.join("trust/allowed_signers"))
        .unwrap()
        .contains("operator@test"));
    let key = key.to_str().unwrap();
    let out = site.homelab(&["plan", "--node", "alpha", "--key", key]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let plan_id = out.stdout.lines().next().and_then(|l| l.strip_prefix("plan ")).unwrap().trim();
    for svc in ["agent", "web", "stability-agent"] {
        assert!(
            out.stdout.contains(&format!("+ create   {svc}@alpha")),
            "{svc} created: {}",
            out.stdout
        );
    }
    let plan = site.repo.path().join(format!("plans/{plan_id}.plan"));
    let out = site.homelab(&["approve", plan.to_str().unwrap(), "--key", key, "--yes"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let approved = plan.with_extension("approved");
    let out = site.homelab(&["apply", approved.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    step("planned and applied");

    // The agent runs the bootstrapped binary from the bootstrapped image, under Compose, and
    // writes its heartbeat (which its healthcheck, passed by apply's verify, requires).
    let inspect = |what: &str| {
        let out = site.lab.docker("alpha", &["inspect", "-f", what, "stability-agent"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(inspect("{{.Image}}"), id, "the image bootstrap built");
    assert_eq!(inspect("{{.State.Running}}"), "true");
    assert_eq!(
        inspect("{{index .Config.Labels \"com.docker.compose.project\"}}"),
        "stability-agent"
    );
    // Its first heartbeat may come before it has reached the engine: wait for one that has.
    let path = root.join("state/agent/heartbeat.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let heartbeat = loop {
        let h: serde_json::Value = fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        if h["status"]["docker"] == "connected" {
            break h;
        }
        assert!(std::time::Instant::now() < deadline, "no heartbeat connected to Docker: {h}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(heartbeat["node"], "alpha");
    assert_eq!(heartbeat["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(heartbeat["watching"]["docker"], "/var/run/docker.sock");
    for svc in ["agent", "web"] {
        assert_eq!(
            String::from_utf8_lossy(
                &site.lab.docker("alpha", &["inspect", "-f", "{{.State.Running}}", svc]).stdout
            )
            .trim(),
            "true",
            "{svc}"
        );
    }
    let out = site.homelab(&["plan", "--node", "alpha", "--detailed-exitcode"]);
    assert_eq!(out.code, 0, "nothing left to plan: {}\n{}", out.stdout, out.stderr);

    // Bootstrap after the apply: still nothing to do.
    let out = site.bootstrap(&["--yes"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("already bootstrapped: alpha"), "{}", out.stdout);
    assert!(out.stdout.contains("nothing changed"), "{}", out.stdout);
    assert_eq!(site.image_id("homelab/agent:local"), id);
    step("bootstrap after apply");
}

/// The header of an aarch64 executable (64-bit little-endian, `EM_AARCH64`, one `PT_LOAD`):
/// all bootstrap reads of a binary before it goes to a node.
fn aarch64_elf() -> Vec<u8> {
    let mut b = vec![0u8; 64 + 56];
    b[..4].copy_from_slice(b"\x7fELF");
    b[4] = 2; // ELFCLASS64
    b[5] = 1; // ELFDATA2LSB
    b[6] = 1; // EV_CURRENT
    b[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    b[18..20].copy_from_slice(&183u16.to_le_bytes()); // EM_AARCH64
    b[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    b[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    b[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
    b[64..68].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    b
}

/// `--binary`: a binary built for another architecture than the node's (aarch64 for this
/// x86_64 lab node) is refused, naming both, before anything is written on the node (`--check`
/// says so too); a file that is not a binary is refused naming the file; the real binary given
/// as `--binary` is installed and its image built, and a second run with it changes nothing.
#[test]
fn bootstrap_refuses_a_binary_for_another_architecture_and_installs_the_right_one() {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::start(&["alpha"]);
    let root = lab.node("alpha").dir.join("hl root");
    let site = Site::new(lab, root.clone());
    let right = site.fingerprint();
    // What the operator had before: some data, which must not be touched.
    fs::create_dir_all(root.join("data/broker")).unwrap();
    fs::write(root.join("data/broker/db"), "data\n").unwrap();
    let before = Snapshot::of(&root);

    let files = tempfile::tempdir().unwrap();
    let foreign = files.path().join("homelab-aarch64");
    fs::write(&foreign, aarch64_elf()).unwrap();
    let foreign = foreign.to_str().unwrap();
    for check in [true, false] {
        let mut args = vec!["--binary", foreign, "--host-key", &right];
        args.push(if check { "--check" } else { "--yes" });
        let out = site.bootstrap(&args);
        assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
        let expected = format!("alpha runs on x86_64, but --binary {foreign} is built for aarch64");
        assert!(out.stderr.contains(&expected), "{}", out.stderr);
        assert!(out.stderr.contains("nothing was changed on alpha"), "{}", out.stderr);
        assert!(out.stderr.contains("x86_64-unknown-linux-musl"), "{}", out.stderr);
        assert!(out.stderr.contains("Other architectures"), "{}", out.stderr);
        before.assert_same(&Snapshot::of(&root), "a refused --binary");
        assert!(!root.join("bin").exists());
        let images = site.lab.docker("alpha", &["image", "ls", "-q", "homelab/agent"]);
        assert!(images.stdout.is_empty(), "an image was built");
    }

    // Not a binary at all: refused naming the file, before the node is contacted.
    let script = files.path().join("homelab.sh");
    fs::write(&script, "#!/bin/sh\necho homelab 0.1.0\n").unwrap();
    let out = site.bootstrap(&["--binary", script.to_str().unwrap(), "--yes"]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "{} is not a homelab binary bootstrap can install: not an ELF file",
            script.display()
        )),
        "{}",
        out.stderr
    );
    before.assert_same(&Snapshot::of(&root), "a script as --binary");

    // The real binary as --binary: installed, its version learnt on the node, its image built.
    let real = env!("CARGO_BIN_EXE_homelab");
    let version = format!("homelab {}", env!("CARGO_PKG_VERSION"));
    let out = site.bootstrap(&["--binary", real, "--check"]);
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("+ install bin/homelab"), "{}", out.stdout);
    assert!(
        out.stdout.contains("+ build image homelab/agent:<the version it prints>"),
        "{}",
        out.stdout
    );
    let out = site.bootstrap(&["--binary", real, "--yes"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let ours = sha256sum(Path::new(real));
    let tag = format!("homelab/agent:{}-{}", env!("CARGO_PKG_VERSION"), &ours[..12]);
    assert!(out.stdout.contains(&format!("done: + build image {tag}")), "{}", out.stdout);
    assert!(out.stdout.contains("bootstrapped alpha: "), "{}", out.stdout);
    assert!(out.stdout.contains(&format!("{version} (x86_64)")), "{}", out.stdout);
    assert_eq!(sha256sum(&root.join("bin/homelab")), ours);
    assert_eq!(fs::read_to_string(root.join("data/broker/db")).unwrap(), "data\n");
    let run = site.lab.ssh(
        "alpha",
        &["docker", "run", "--rm", "--network", "none", "homelab/agent:local", "--version"],
    );
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(String::from_utf8_lossy(&run.stdout).trim(), version);
    let id = site.image_id(&tag);
    assert_eq!(site.image_id("homelab/agent:local"), id);

    // Again with the same --binary, and without it (this binary is the same file): the hash
    // and the image's label say it is done; nothing changes.
    let done = Snapshot::of(&root);
    for args in [&["--binary", real, "--yes"][..], &["--yes"][..], &["--binary", real, "--check"]] {
        let out = site.bootstrap(args);
        assert_eq!(out.code, 0, "{args:?}: {}\n{}", out.stdout, out.stderr);
        assert!(out.stdout.contains("already bootstrapped: alpha"), "{}", out.stdout);
        done.assert_same(&Snapshot::of(&root), "a second run");
        assert_eq!(site.image_id("homelab/agent:local"), id);
    }
}
