//! Test harness: a fixture homelab copied to a temporary folder, and a builder that runs the
//! real binary the way a user would.

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Copies `from` into `to` (files and folders, modes kept).
/// One node of `inventory/topology.yaml` as the lab tests write it: role `edge`, login `root`,
/// its display name the id in capitals.
pub fn topology_node(
    name: &str,
    site: &str,
    (address, port): (&str, u16),
    root: &Path,
    docker_socket: &Path,
) -> String {
    format!(
        "  {name}:\n    display_name: {}\n    roles: [edge]\n    site: {site}\n    ssh:\n      address: {address}\n      user: root\n      port: {port}\n    runtime_root: \"{}\"\n    docker_socket: \"{}\"\n",
        name.to_uppercase(),
        root.display(),
        docker_socket.display()
    )
}

pub fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    let mut entries: Vec<_> = fs::read_dir(from).unwrap().map(|e| e.unwrap()).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// A homelab tree in a temporary folder.
pub struct Tree {
    pub dir: tempfile::TempDir,
}

impl Tree {
    /// The small base fixture (3 nodes, 4 services).
    pub fn base() -> Tree {
        Tree::copy_of(&fixtures().join("base"))
    }

    pub fn copy_of(src: &Path) -> Tree {
        let dir = tempfile::tempdir().unwrap();
        copy_tree(src, dir.path());
        Tree { dir }
    }

    /// The base fixture with a broken overlay applied: the overlay's files replace the base's,
    /// and paths listed in its `REMOVE` file are deleted.
    pub fn broken(case: &str) -> Tree {
        let tree = Tree::base();
        let overlay = fixtures().join("broken").join(case);
        let remove = overlay.join("REMOVE");
        if remove.exists() {
            for line in
                fs::read_to_string(&remove).unwrap().lines().filter(|l| !l.trim().is_empty())
            {
                let p = tree.path().join(line.trim());
                if p.is_dir() {
                    fs::remove_dir_all(&p).unwrap();
                } else {
                    fs::remove_file(&p).unwrap();
                }
            }
        }
        copy_tree(&overlay, tree.path());
        let _ = fs::remove_file(tree.path().join("REMOVE"));
        // Hidden files (`.env`) are written from `DOTFILES` (`path=one line`), never committed:
        // a tracked `.env` looks like a secret in Git.
        let dotfiles = tree.path().join("DOTFILES");
        if let Ok(text) = fs::read_to_string(&dotfiles) {
            for (path, line) in text.lines().filter_map(|l| l.split_once('=')) {
                let p = tree.path().join(path);
                fs::create_dir_all(p.parent().unwrap()).unwrap();
                fs::write(p, format!("{line}\n")).unwrap();
            }
            fs::remove_file(&dotfiles).unwrap();
        }
        tree
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, text: impl AsRef<[u8]>) {
        let p = self.path().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    pub fn homelab(&self, args: &[&str]) -> Output {
        homelab_in(self.path(), args)
    }
}

pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// A process's output as text, as it was (no path replaced); `-1` for a process killed by a
/// signal.
impl From<std::process::Output> for Output {
    fn from(out: std::process::Output) -> Output {
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Runs `homelab --repo <repo> <args>`; paths of the repo in the output become `<repo>`.
pub fn homelab_in(repo: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_homelab"))
        .arg("--repo")
        .arg(repo)
        .args(args)
        .env_remove("HOMELAB_REPO")
        .env("NO_COLOR", "1")
        .output()
        .expect("run homelab");
    let clean =
        |b: &[u8]| String::from_utf8_lossy(b).replace(&repo.display().to_string(), "<repo>");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: clean(&out.stdout),
        stderr: clean(&out.stderr),
    }
}

// ---------------------------------------------------------------------------------------------
// Plan, approve, apply: a lab of a homelab repository, a runtime root standing in for every
// node, and SSH keys made by the real `ssh-keygen`, driven the way an operator would.

/// What an external program did.
pub struct Ran {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the real `ssh-keygen` (Debian openssh-client) with `stdin`. A missing binary fails the
/// test, never skips it.
pub fn ssh_keygen(args: &[&str], stdin: &[u8]) -> Ran {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new("ssh-keygen")
        .args(args)
        .env("TZ", "UTC")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run `ssh-keygen`: these tests need the real binary (install the Debian package `openssh-client`)");
    // ssh-keygen may exit without reading its input (a malformed signature): not an error.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    let out = child.wait_with_output().unwrap();
    Ran {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// An unencrypted ed25519 key made by `ssh-keygen -t ed25519 -N ''`.
#[derive(Clone)]
pub struct Key {
    pub name: String,
    pub path: PathBuf,
    /// `ssh-ed25519 AAAA…`, without comment.
    pub public: String,
    /// `SHA256:…`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
}

impl Key {
    /// The key file as a command-line argument.
    pub fn arg(&self) -> &str {
        self.path.to_str().unwrap()
    }

    /// `ssh-keygen -Y sign` of `message` in `namespace`: the armored signature.
    pub fn ssh_sign(&self, namespace: &str, message: &[u8]) -> String {
        let ran = ssh_keygen(&["-Y", "sign", "-f", self.arg(), "-n", namespace], message);
        assert!(ran.ok, "ssh-keygen -Y sign failed: {}", ran.stderr);
        ran.stdout
    }
}

/// A plan file split as the format says: the signed bytes, and the armored signature after
/// them (from the line `-----BEGIN SSH SIGNATURE-----`).
pub fn split_plan(text: &str) -> (&str, &str) {
    let at = text.find("\n-----BEGIN SSH SIGNATURE-----\n").expect("a signature block") + 1;
    (&text[..at], &text[at..])
}

/// The first 16 hex digits of the SHA-256 of `bytes`.
pub fn id_of(bytes: &[u8]) -> String {
    sha256_hex(bytes)[..16].to_owned()
}

/// The SHA-256 of `bytes` in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Every path under a folder with its mode and content (symlinks by target): compared before
/// and after a command that must change nothing.
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot(pub std::collections::BTreeMap<String, (u32, Vec<u8>)>);

impl Snapshot {
    pub fn of(dir: &Path) -> Snapshot {
        use std::os::unix::fs::PermissionsExt;
        let mut out = std::collections::BTreeMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                let meta = fs::symlink_metadata(&p).unwrap();
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                let mode = meta.permissions().mode();
                let bytes = if meta.file_type().is_symlink() {
                    fs::read_link(&p).unwrap().display().to_string().into_bytes()
                } else if meta.is_dir() {
                    stack.push(p.clone());
                    b"<dir>".to_vec()
                } else {
                    fs::read(&p).unwrap()
                };
                out.insert(rel, (mode, bytes));
            }
        }
        Snapshot(out)
    }

    /// The entries under `prefix` (a path relative to the snapshot's folder).
    pub fn under(&self, prefix: &str) -> Snapshot {
        let inside = |k: &String| k == prefix || k.starts_with(&format!("{prefix}/"));
        Snapshot(
            self.0.iter().filter(|(k, _)| inside(k)).map(|(k, v)| (k.clone(), v.clone())).collect(),
        )
    }

    /// Panics with the paths that differ.
    pub fn assert_same(&self, after: &Snapshot, what: &str) {
        if self == after {
            return;
        }
        let keys: std::collections::BTreeSet<&String> =
            self.0.keys().chain(after.0.keys()).collect();
        let changed: Vec<&String> =
            keys.into_iter().filter(|k| self.0.get(*k) != after.0.get(*k)).collect();
        panic!("{what}: the tree changed at {changed:?}");
    }
}

/// A lab in a temporary folder: `repo/` (a copy of the base fixture), `rt/` (the runtime root:
/// node `<id>` at `rt/<id>/`, the controller at `rt/`), `keys/`, and an empty `home/` so that
/// neither the user's Git configuration nor their keys leak in. Commands run in the lab with
/// relative paths, so outputs are the same on every machine.
pub struct Lab {
    pub dir: tempfile::TempDir,
}

impl Default for Lab {
    fn default() -> Self {
        Lab::new()
    }
}

impl Lab {
    pub fn new() -> Lab {
        let dir = tempfile::tempdir().unwrap();
        copy_tree(&fixtures().join("base"), &dir.path().join("repo"));
        for d in ["keys", "home"] {
            fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        fs::write(dir.path().join("home/.gitconfig"), "").unwrap();
        // No Docker Engine for these nodes, whatever this machine runs: plans over the local
        // transport must not depend on the machine's own containers.
        let topology = dir.path().join("repo/inventory/topology.yaml");
        let text = fs::read_to_string(&topology).unwrap();
        let none = dir.path().join("no-engine/docker.sock");
        let text = text
            .replace("    ssh:\n", &format!("    docker_socket: {}\n    ssh:\n", none.display()));
        fs::write(&topology, text).unwrap();
        Lab { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    pub fn write(&self, rel: &str, text: impl AsRef<[u8]>) {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    /// `ssh-keygen -t ed25519 -N '' -f keys/<name>`.
    pub fn keygen(&self, name: &str) -> Key {
        let path = self.path(&format!("keys/{name}"));
        let ran = ssh_keygen(
            &[
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                &format!("{name}@lab"),
                "-f",
                path.to_str().unwrap(),
            ],
            b"",
        );
        assert!(ran.ok, "ssh-keygen could not make a key: {}", ran.stderr);
        let public: String = fs::read_to_string(path.with_extension("pub"))
            .unwrap()
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let ran = ssh_keygen(
            &["-l", "-E", "sha256", "-f", path.with_extension("pub").to_str().unwrap()],
            b"",
        );
        assert!(ran.ok, "{}", ran.stderr);
        let fingerprint = ran.stdout.split_whitespace().nth(1).unwrap().to_owned();
        Key { name: name.to_owned(), path, public, fingerprint }
    }

    /// Writes `repo/inventory/allowed_signers`: one line per `(principal, options, key)`;
    /// empty options mean `namespaces="homelab-plan,homelab-approve"`.
    pub fn allow(&self, lines: &[(&str, &str, &Key)]) {
        let mut text = String::from("# written by the test\n");
        for (principal, options, key) in lines {
            let options = if options.is_empty() {
                "namespaces=\"homelab-plan,homelab-approve\""
            } else {
                options
            };
            text.push_str(&format!("{principal} {options} {}\n", key.public));
        }
        self.write("repo/inventory/allowed_signers", text);
    }

    /// Writes `repo/inventory/policy.yaml`: `required` distinct approvers of `approvers` for
    /// every node, plans living `ttl`.
    pub fn policy(&self, ttl: &str, required: u32, approvers: &[&str]) {
        self.write(
            "repo/inventory/policy.yaml",
            format!(
                "plan_ttl: {ttl}\nallow_uncommitted: true\napprovals:\n  default:\n    required: {required}\n    approvers: [{}]\n",
                approvers.join(", ")
            ),
        );
    }

    /// Runs `homelab --repo repo <args>` in the lab, with nothing of the user's environment
    /// but `PATH` (plus `env`).
    pub fn homelab_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_homelab"));
        cmd.current_dir(self.dir.path())
            .arg("--repo")
            .arg("repo")
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("NO_COLOR", "1");
        self.git_env(&mut cmd);
        cmd.envs(env.iter().copied());
        let out = cmd.output().expect("run homelab");
        let lab = self.dir.path().display().to_string();
        let clean = |b: &[u8]| String::from_utf8_lossy(b).replace(&lab, "<lab>");
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: clean(&out.stdout),
            stderr: clean(&out.stderr),
        }
    }

    pub fn homelab(&self, args: &[&str]) -> Output {
        self.homelab_env(args, &[])
    }

    /// Git sees only the lab: an empty global configuration, no system one, and no repository
    /// above the lab.
    pub fn git_env(&self, cmd: &mut Command) {
        cmd.env("HOME", self.path("home"))
            .env("GIT_CONFIG_GLOBAL", self.path("home/.gitconfig"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CEILING_DIRECTORIES", self.dir.path());
    }

    /// Makes `repo/` a Git repository with one commit of everything; returns the commit.
    pub fn git_commit(&self) -> String {
        let git = |args: &[&str]| {
            let mut cmd = Command::new("git");
            cmd.current_dir(self.path("repo")).args(args).env_remove("GIT_DIR");
            self.git_env(&mut cmd);
            let out = cmd.output().expect("cannot run `git`");
            assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        git(&["init", "-q", "-b", "main"]);
        git(&["add", "-A"]);
        git(&[
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@lab",
            "commit",
            "-q",
            "-m",
            "homelab",
        ]);
        git(&["rev-parse", "HEAD"])
    }

    /// `homelab <args> --transport local --root rt --controller-root rt`: a command against
    /// the lab's nodes and its controller, all under `rt/`.
    pub fn homelab_local(&self, args: &[&str]) -> Output {
        let mut all = args.to_vec();
        all.extend(["--transport", "local", "--root", "rt", "--controller-root", "rt"]);
        self.homelab(&all)
    }

    /// `homelab observe --once` of the lab's nodes into the controller's world.
    pub fn observe_once(&self) -> Output {
        self.homelab_local(&["observe", "--once"])
    }

    /// `homelab plan --transport local --root rt --controller-root rt [--key KEY] <extra>`.
    pub fn plan_with(&self, key: Option<&Key>, extra: &[&str]) -> Output {
        let mut args =
            vec!["plan", "--transport", "local", "--root", "rt", "--controller-root", "rt"];
        if let Some(k) = key {
            args.extend(["--key", k.arg()]);
        }
        args.extend(extra);
        self.homelab(&args)
    }

    /// Plans, signed by `key`, and returns the id of the plan written.
    pub fn plan(&self, key: &Key) -> String {
        let out = self.plan_with(Some(key), &[]);
        assert_eq!(out.code, 0, "plan failed:\n{}{}", out.stdout, out.stderr);
        let first = out.stdout.lines().next().unwrap_or_default();
        let id = first.strip_prefix("plan ").unwrap_or_else(|| panic!("no id in {first:?}"));
        assert!(self.path(&format!("repo/plans/{id}.plan")).is_file());
        id.to_owned()
    }

    /// `homelab approve repo/plans/<id>.plan --key KEY --yes --controller-root rt`.
    pub fn approve(&self, id: &str, key: &Key) -> Output {
        self.homelab(&[
            "approve",
            &format!("repo/plans/{id}.plan"),
            "--key",
            key.arg(),
            "--yes",
            "--controller-root",
            "rt",
        ])
    }

    /// `homelab apply repo/plans/<id>.approved --transport local --root rt --controller-root rt`.
    pub fn apply(&self, id: &str) -> Output {
        self.apply_with(id, &[])
    }

    /// `apply`, with more arguments (`--stage prepare` runs no `docker` on this machine).
    pub fn apply_with(&self, id: &str, extra: &[&str]) -> Output {
        let approved = format!("repo/plans/{id}.approved");
        let mut args = vec![
            "apply",
            approved.as_str(),
            "--transport",
            "local",
            "--root",
            "rt",
            "--controller-root",
            "rt",
        ];
        args.extend(extra);
        self.homelab(&args)
    }

    pub fn plan_file(&self, id: &str) -> String {
        self.read(&format!("repo/plans/{id}.plan"))
    }

    /// The nodes plan `id` covers (its `node <id> ...` lines).
    pub fn plan_nodes(&self, id: &str) -> Vec<String> {
        let text = self.plan_file(id);
        let body = split_plan(&text).0;
        body.lines()
            .filter_map(|l| l.strip_prefix("node "))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .collect()
    }

    /// Asserts that the rejection of plan `id` is recorded on each of its nodes, as the local
    /// transport lays them out under `rt/` (`rt/<node>/` + `Layout::rejected`), naming `by`.
    pub fn assert_rejected_on_nodes(&self, id: &str, by: &str) -> Vec<String> {
        let nodes = self.plan_nodes(id);
        assert!(!nodes.is_empty(), "plan {id} covers no node");
        for node in &nodes {
            let layout = homelab::node::Layout::local(&self.path(&format!("rt/{node}")));
            let path = std::path::PathBuf::from(layout.rejected(id));
            let text = fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("no rejection on {node} at {}: {e}", path.display()));
            assert!(text.contains(by), "{node}: {text}");
        }
        nodes
    }

    /// Deploys what the repository renders, as apply will: `homelab render --root rt --out
    /// stage` (the runtime roots the lab's plans render for), then
    /// each `stage/<node>/<svc>/` copied to `rt/<node>/state/services/<svc>/`.
    pub fn deploy_all(&self) {
        let out = self.homelab(&["render", "--root", "rt", "--out", "stage"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        for node in fs::read_dir(self.path("stage")).unwrap() {
            let node = node.unwrap();
            for svc in fs::read_dir(node.path()).unwrap() {
                let svc = svc.unwrap();
                let to = self
                    .path("rt")
                    .join(node.file_name())
                    .join("state/services")
                    .join(svc.file_name());
                copy_tree(&svc.path(), &to);
            }
        }
        fs::remove_dir_all(self.path("stage")).unwrap();
    }

    /// Every path, mode and byte of the lab.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot::of(self.dir.path())
    }
}

/// `ssh-keygen -Y verify -f <signers> -I <principal> -n <namespace> -s <signature file>` of
/// `message`, with the real binary.
pub fn ssh_verify(
    signers: &Path,
    principal: &str,
    namespace: &str,
    sig: &Path,
    message: &[u8],
) -> Ran {
    ssh_keygen(
        &[
            "-Y",
            "verify",
            "-f",
            signers.to_str().unwrap(),
            "-I",
            principal,
            "-n",
            namespace,
            "-s",
            sig.to_str().unwrap(),
        ],
        message,
    )
}

/// A small deterministic generator (xorshift64) for mutation tests: the same seed, the same edits.
pub struct Mutator(u64);

impl Mutator {
    pub fn new(seed: u64) -> Mutator {
        Mutator(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// `bytes` with 1 to `max_edits` bytes replaced by bytes of `alphabet`.
    pub fn mutate(&mut self, bytes: &[u8], alphabet: &[u8], max_edits: u64) -> Vec<u8> {
        let mut b = bytes.to_vec();
        for _ in 0..(self.next() % max_edits + 1) {
            let i = (self.next() as usize) % b.len();
            b[i] = alphabet[(self.next() as usize) % alphabet.len()];
        }
        b
    }
}

// ---------------------------------------------------------------------------------------------
// Killed at an exact point: the supervisor's, the executor's, the observer's and the agent's
// kill tests stop the real binary with strace where it writes, then start it again.

/// `cmd` run by `strace`, which SIGKILLs it at the `nth` call of one of `syscalls` (strace's
/// syntax, e.g. `?mkdir,mkdirat`) made by its main thread on one of `paths`: a real kill at an
/// exact point of its work, with no hook in homelab. (If the write moves off the main thread,
/// the kill no longer comes and the test says so.)
pub fn under_strace(cmd: &Command, paths: &[&Path], syscalls: &str, nth: u32) -> Command {
    assert!(
        Path::new("/usr/bin/strace").is_file(),
        "/usr/bin/strace is missing: install Debian's package strace (.ci/install does)"
    );
    let mut c = Command::new("/usr/bin/strace");
    // Only the main thread, where each of these writes is made: its threads and children
    // (ssh, git) run untraced, at full speed.
    c.args(["-qq", "-o", "/dev/null"]);
    for p in paths {
        c.arg("-P").arg(p);
    }
    c.args(["-e", &format!("trace={syscalls}"), "-e"])
        .arg(format!("inject={syscalls}:signal=KILL:when={nth}"))
        .arg("--")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    if let Some(d) = cmd.get_current_dir() {
        c.current_dir(d);
    }
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.stdin(Stdio::null());
    c
}

/// Whether a process (or the strace that ran it) ended by SIGKILL.
pub fn was_killed(status: std::process::ExitStatus) -> bool {
    status.signal() == Some(9) || status.code() == Some(137)
}

/// Runs `cmd` until strace SIGKILLs it as it makes the folder `dir` (the `mkdir` that
/// `files::write_atomic` does before each file it writes there) for the `nth` time. Panics
/// unless it was killed there. Returns its stdout.
pub fn killed_at(cmd: &Command, dir: &Path, nth: u32) -> String {
    let out = under_strace(cmd, &[dir], "?mkdir,mkdirat", nth).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        was_killed(out.status),
        "not killed at mkdir #{nth} of {} ({}):\n{stdout}\n{}",
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Every file under `dir` whose name says a write did not finish (`files::write_atomic`'s
/// temporary files).
pub fn unfinished(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(unfinished(&p));
        } else if e.file_name().to_string_lossy().contains(".tmp-") {
            out.push(p.display().to_string());
        }
    }
    out
}

/// Runs `cmd` with its stderr piped until a line of it contains `needle`, lets it go on for
/// `then`, and SIGKILLs it: a kill in the middle of the step that line announces. Panics if it
/// ends first. Returns the stderr seen.
pub fn killed_after_line(cmd: &mut Command, needle: &str, then: std::time::Duration) -> String {
    use std::io::{BufRead, BufReader};
    let mut child = cmd.stderr(Stdio::piped()).spawn().unwrap();
    let mut reader = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut l = String::new();
        assert!(reader.read_line(&mut l).unwrap() > 0, "ended before `{needle}`:\n{seen}");
        seen.push_str(&l);
        if l.contains(needle) {
            break;
        }
    }
    std::thread::sleep(then);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    seen
}

// ---------------------------------------------------------------------------------------------
// The HTTP of the Forgejo and Telegram stand-ins: one request in, one JSON answer out, the
// connection closed.

/// A request as a stand-in reads it: header names in lowercase, values trimmed.
pub struct HttpRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// One request from `stream` (waiting at most 10 s for it); `None` when the client sent
/// nothing.
pub fn read_http_request(stream: &std::net::TcpStream) -> Option<HttpRequest> {
    use std::io::{BufRead, BufReader, Read};
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(10)));
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        let (k, v) = h.split_once(':').unwrap_or((&h, ""));
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    let mut request = HttpRequest { method, path, headers, body: Vec::new() };
    let length = request.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    request.body = vec![0; length];
    let _ = reader.read_exact(&mut request.body);
    Some(request)
}

/// The reason phrase of the statuses the stand-ins answer.
pub fn http_reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        _ => "Other",
    }
}

/// Answers `status` with `json` (of `content_type`) and `headers`, and closes.
pub fn write_http_answer(
    stream: &mut std::net::TcpStream,
    status: u16,
    content_type: &str,
    headers: &[(String, String)],
    json: &str,
) {
    use std::io::Write;
    let reason = http_reason(status);
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        json.len()
    );
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(json);
    let _ = stream.write_all(out.as_bytes());
    let _ = stream.flush();
}
