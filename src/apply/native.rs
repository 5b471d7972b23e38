//! The steps of `remote` done in process where the node's root is on this machine (the node's
//! engine, the local transport: `NodeExec::on_this_machine`): the same files, modes, syncs and
//! locks as the scripts, with file-system calls instead of a shell and a dozen short
//! processes per step (issue 17: "the fixed shell scripts of apply go away"). Each function
//! names the script it stands for, and `remote`'s tests hold each to it on twin trees.
//!
//! What still runs as a process here is what must: Docker and Compose, the contract's
//! healthcheck, and the detached jobs and dead-man that outlive the engine; where this process
//! is the `homelab` program ([`program`]), those two are this program too (`switch`,
//! `deadman`).

use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// The apply records that travel with a command, written on the node before the command's
/// own step runs (issue 10: a stage's journal write and its events cost no round trip of their
/// own). Empty for commands that carry nothing.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Carry {
    /// The journal: its path, its sequence number and its text.
    pub journal: Option<(String, u64, String)>,
    /// Event lines (each ending in a newline) and the file they are appended to.
    pub events: Option<(String, String)>,
}

impl Carry {
    pub fn is_empty(&self) -> bool {
        self.journal.is_none() && self.events.is_none()
    }
}

/// The shortest value of a node's `.env` that `remote`'s `REDACT` replaces. Shorter values (a port, a
/// flag, `true`, a two-letter code) would blank out ordinary words of every line, and are no
/// secret worth the name (the README's "What the review guarantees" says so to operators).
pub const REDACT_MIN: usize = 6;

/// This program, when it is the `homelab` binary (its `main` said so): the job is then
/// started as `PROGRAM node job ...`. Unset in the library's own tests, whose program is the
/// test harness: their jobs run the script.
static PROGRAM: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Called by `main`. `/proc/self/exe` runs this very binary even after an upgrade replaced
/// the file (bootstrap shipping a new version while an engine runs).
pub fn this_is_the_program() {
    let me = Path::new("/proc/self/exe");
    let path = if me.exists() { Some(me.to_path_buf()) } else { std::env::current_exe().ok() };
    if let Some(path) = path {
        let _ = PROGRAM.set(path);
    }
}

/// The homelab program that can run the job, if this process is it.
pub fn program() -> Option<&'static Path> {
    PROGRAM.get().map(PathBuf::as_path)
}

/// A snapshot that refused or failed before the change: nothing was changed (exit 71).
pub const SNAPSHOT_REFUSED: i32 = 71;

/// `fsync` of a folder (after a rename into it), as `sync -- DIR`.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// The text without its trailing newlines, as `$(...)` gives it.
pub(super) fn strip_newlines(text: &[u8]) -> &[u8] {
    let mut t = text;
    while let [rest @ .., b'\n'] = t {
        t = rest;
    }
    t
}

/// The error of a command given up at its deadline.
pub(super) fn late(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("`{what}` did not end in time"))
}

/// The most files and folders a release or a snapshot syncs one by one (a service's files, a
/// data folder of a few hundred); past it (a large build context, a large copy), one sync of
/// the file system costs less than a sync each.
pub(super) const SYNC_ONE_BY_ONE: usize = 512;

/// `sync -f PATH`: the file system holding it synced.
pub(super) fn syncfs(path: &Path) -> io::Result<()> {
    let f = fs::File::open(path).map_err(at(path))?;
    // SAFETY: syncfs on a descriptor we own.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(at(path)(io::Error::last_os_error()));
    }
    Ok(())
}

/// A status as the shell reports it: a signal as 128 + its number.
pub(super) fn shell_status(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// `docker compose` of the project `svc` in `dir`, as `compose_fn` runs it: the compose file
/// and the host's override, the node's env file when there is one; in `dir` with `PWD` naming
/// it, as the script's `cd` leaves it (Go's `os.Getwd` trusts a `PWD` that is the working
/// folder, so for a live link Compose's project folder is the link, not its release).
pub(super) fn compose_command(
    docker: &Path,
    svc: &str,
    dir: &Path,
    env_file: &str,
) -> std::process::Command {
    let mut cmd = std::process::Command::new(docker);
    cmd.args(["compose", "-p", svc, "-f", "docker-compose.yml"]);
    if dir.join("docker-compose.override.yml").is_file() {
        cmd.args(["-f", "docker-compose.override.yml"]);
    }
    if Path::new(env_file).is_file() {
        cmd.args(["--env-file", env_file]);
    }
    cmd.current_dir(dir).env("PWD", dir);
    cmd
}

/// The folder a path is in (`.` for a bare name), as `dirname`.
pub(super) fn parent(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Names the path an error is about.
pub(super) fn at(path: &Path) -> impl FnOnce(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// `rm -rf`: gone, whatever it was; nothing there is not an error.
pub(super) fn remove_all(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
    }
    .map_err(at(path))
}

/// `CARRY`: the journal written durably unless the node already holds a later save (the plan
/// folder's `flock` orders writers), then the events appended in one write under the events
/// file's lock, after a newline when the file ends in a torn line.
pub(super) fn carry(carry: &Carry) -> io::Result<()> {
    if let Some((file, seq, text)) = &carry.journal {
        let file = Path::new(file);
        let dir = parent(file);
        fs::create_dir_all(dir).map_err(at(dir))?;
        let folder = fs::File::open(dir).map_err(at(dir))?;
        let _lock = crate::files::Flock::exclusive(&folder)?;
        let seq_file = file.with_file_name(format!("{}.seq", file_name(file)));
        let old: u64 =
            fs::read_to_string(&seq_file).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        if *seq > old {
            // 0600: the journal quotes the output of failed steps.
            let tmp = file.with_file_name(format!("{}.tmp", file_name(file)));
            write_synced(&tmp, text.as_bytes(), 0o600)?;
            fs::rename(&tmp, file).map_err(at(file))?;
            let seq_tmp = file.with_file_name(format!("{}.seq.tmp", file_name(file)));
            fs::write(&seq_tmp, format!("{seq}\n")).map_err(at(&seq_tmp))?;
            fs::rename(&seq_tmp, &seq_file).map_err(at(&seq_file))?;
            sync_dir(dir).map_err(at(dir))?;
        }
    }
    if let Some((file, lines)) = &carry.events {
        if !lines.is_empty() {
            append_lines(Path::new(file), lines.as_bytes())?;
        }
    }
    Ok(())
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Writes `bytes` to `path` with `mode` from its first byte (and again, for a file left by a
/// crash), and syncs it.
fn write_synced(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(at(path))?;
    f.set_permissions(fs::Permissions::from_mode(mode)).map_err(at(path))?;
    f.write_all(bytes).map_err(at(path))?;
    f.sync_all().map_err(at(path))
}

/// Event lines appended as `events::APPEND_SH` appends them (`events::append_whole`).
pub(super) fn append_lines(file: &Path, lines: &[u8]) -> io::Result<()> {
    let dir = parent(file);
    fs::create_dir_all(dir).map_err(at(dir))?;
    let f =
        fs::OpenOptions::new().read(true).create(true).append(true).open(file).map_err(at(file))?;
    crate::events::append_whole(&f, lines).map_err(at(file))
}

/// The upload half of `PREPARE`: the release's files written into a fresh staging folder
/// (each with its mode, dated now), each file and folder synced (the file system for a large
/// release), the staging folder renamed
/// into place as the release, the service's jobs of this plan started over; where the live
/// link pointed before. A name that would leave the staging folder is refused before anything
/// is written (the plan's reader refuses them first).
pub(super) fn upload(
    staging: &str,
    release: &str,
    live: &str,
    jobs: &str,
    files: &[(&str, u32, &[u8])],
) -> io::Result<Option<String>> {
    if let Some((name, _, _)) = files.iter().find(|(n, _, _)| !inside(n)) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{name}` is not a path inside the release"),
        ));
    }
    let (staging, release) = (Path::new(staging), Path::new(release));
    remove_all(staging)?;
    fs::create_dir_all(staging).map_err(at(staging))?;
    // Every file and folder of the release on disk before it is sealed. Each synced on its
    // own, not the whole file system (`sync -f`): that waited for whatever else the node was
    // writing (images being pulled, the other services' releases), 95 ms a sync on average
    // with twenty nodes deploying on one disk, 360 ms at worst. A release of more than
    // SYNC_ONE_BY_ONE files and folders (a build context) is synced with its file system.
    let dirs: std::collections::BTreeSet<PathBuf> = files
        .iter()
        .flat_map(|(name, _, _)| {
            let path = staging.join(name);
            let dir = parent(&path).to_path_buf();
            dir.ancestors()
                .map(Path::to_path_buf)
                .take_while(|d| d.starts_with(staging))
                .collect::<Vec<_>>()
        })
        .chain([staging.to_path_buf()])
        .collect();
    let one_by_one = files.len() + dirs.len() - 1 <= SYNC_ONE_BY_ONE;
    let written = (|| {
        for (name, mode, bytes) in files {
            let path = staging.join(name);
            let dir = parent(&path);
            fs::create_dir_all(dir).map_err(at(dir))?;
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(at(&path))?;
            f.write_all(bytes).map_err(at(&path))?;
            // As tar, run by root, sets it: the mode the plan gives, whatever the umask.
            f.set_permissions(fs::Permissions::from_mode(*mode & 0o7777)).map_err(at(&path))?;
            if one_by_one {
                f.sync_all().map_err(at(&path))?;
            }
        }
        if one_by_one {
            dirs.iter().try_for_each(|d| sync_dir(d).map_err(at(d)))
        } else {
            syncfs(staging)
        }
    })();
    if let Err(e) = written {
        let _ = remove_all(staging);
        return Err(e);
    }
    remove_all(release)?;
    fs::rename(staging, release).map_err(at(release))?;
    sync_dir(parent(release)).map_err(at(parent(release)))?;
    remove_all(Path::new(jobs))?;
    Ok(fs::read_link(live).ok().map(|p| p.to_string_lossy().into_owned()))
}

/// A relative path with no `..`, as the plan's artifacts are named.
fn inside(name: &str) -> bool {
    let p = Path::new(name);
    !name.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)))
}

/// `UNLOCK`: the lock removed only when its holder is byte for byte `holder`.
pub(super) fn unlock(lock: &str, holder_file: &str, holder: &[u8]) -> io::Result<()> {
    match fs::read(holder_file) {
        Ok(held) if held == holder => remove_all(Path::new(lock)),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(at(Path::new(holder_file))(e)),
    }
}

/// `BREAK_LOCK`: the node lock removed whoever holds it; what its holder file said (`{}` when
/// it says nothing readable), or `None` when there was no lock.
pub(super) fn break_lock(lock: &str, holder_file: &str) -> io::Result<Option<Vec<u8>>> {
    if !Path::new(lock).is_dir() {
        return Ok(None);
    }
    let holder = fs::read(holder_file).unwrap_or_else(|_| b"{}\n".to_vec());
    remove_all(Path::new(lock))?;
    Ok(Some(holder))
}

/// `FINISH`: the plan recorded as consumed (`consumed`: its path and record), the older
/// releases of each `(releases, live)` pair pruned past `keep` (never the live one; `-` as
/// the live link prunes snapshots the same way), the finished apply journals under `deploys`
/// beyond the newest `keep - 1` others (never `plan`'s), then the lock released if `holder`
/// still holds it.
pub(super) fn finish(
    consumed: Option<(&str, &str)>,
    pairs: &[(String, String)],
    keep: usize,
    deploys: &str,
    plan: &str,
    (lock, holder_file, holder): (&str, &str, &[u8]),
) -> io::Result<()> {
    if let Some((path, record)) = consumed {
        let path = Path::new(path);
        let dir = parent(path);
        fs::create_dir_all(dir).map_err(at(dir))?;
        let tmp = path.with_file_name(format!("{}.tmp", file_name(path)));
        let mut f = fs::File::create(&tmp).map_err(at(&tmp))?;
        f.write_all(record.as_bytes()).map_err(at(&tmp))?;
        f.sync_all().map_err(at(&tmp))?;
        fs::rename(&tmp, path).map_err(at(path))?;
        sync_dir(dir).map_err(at(dir))?;
    }
    for (releases, live) in pairs {
        let current = fs::read_link(live).ok().map(|p| p.to_string_lossy().into_owned());
        let mut n = 0;
        for name in newest_first(Path::new(releases)) {
            if name.starts_with(".staging-") || name.ends_with(".tmp") {
                continue;
            }
            n += 1;
            let path = format!("{releases}/{name}");
            if n <= keep || current.as_deref() == Some(path.as_str()) {
                continue;
            }
            remove_all(Path::new(&path))?;
        }
    }
    if !deploys.is_empty() {
        let mut n = 0;
        for name in newest_first(Path::new(deploys)) {
            if name == plan {
                continue;
            }
            let journal = Path::new(deploys).join(&name).join("journal.json");
            if !finished(&journal) {
                continue;
            }
            n += 1;
            if n >= keep {
                remove_all(&Path::new(deploys).join(&name))?;
            }
        }
    }
    unlock(lock, holder_file, holder)
}

/// The journal says the apply finished (`"finished": true`, as `grep` finds it).
fn finished(journal: &Path) -> bool {
    let mut text = String::new();
    fs::File::open(journal).and_then(|mut f| f.read_to_string(&mut text)).is_ok()
        && text.contains("\"finished\": true")
}

/// The names in a folder as `ls -1t` lists them: not the hidden ones, newest change first,
/// then by name. A folder that cannot be read lists nothing.
fn newest_first(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    let mut names: Vec<(std::time::SystemTime, String)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                return None;
            }
            let time = fs::symlink_metadata(e.path()).and_then(|m| m.modified()).ok()?;
            Some((time, name))
        })
        .collect();
    names.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    names.into_iter().map(|(_, n)| n).collect()
}

/// One healthcheck attempt as `HEALTHCHECK` makes it (its arguments, by name).
pub(super) struct Check<'a> {
    pub live: &'a str,
    pub timeout: std::time::Duration,
    pub log: &'a str,
    pub deadman: Option<&'a str>,
    pub env_file: &'a str,
    /// `NAME=value` for the healthcheck's environment (`DOCKER_HOST`, `HOMELAB_*`).
    pub env: &'a [&'a str],
    /// Waited for before a healthy service confirms its deploy (`NodeExec::proven`).
    pub proven: &'a dyn Fn() -> io::Result<()>,
}

/// `HEALTHCHECK` in process, up to the stability window: the answer the script gives (its
/// status and what it prints), with `stable` run when the check passed — the window is
/// watched by `STABLE`'s script, which asks Docker each second. The contract's
/// `healthcheck.sh` runs as the script runs it: in the live release, in a process group of its
/// own that is sent `TERM` at the timeout and `KILL` two seconds later, its output kept in the
/// log (0600) and its last 20 lines printed redacted.
pub(super) fn healthcheck(
    c: &Check<'_>,
    stable: impl FnOnce() -> Option<Vec<u8>>,
) -> io::Result<crate::transport::Output> {
    use crate::transport::Output;
    let answer =
        |status: i32, stdout: Vec<u8>| Output { status: Some(status), stdout, stderr: Vec::new() };
    if let Some(dm) = c.deadman.filter(|d| !d.is_empty()) {
        if Path::new(dm).join("decided/controller-rollback").exists() {
            return Ok(answer(77, b"an earlier run of this apply decided to roll back\n".to_vec()));
        }
    }
    let log = Path::new(c.log);
    let out = private_log(log)?;
    if !Path::new(c.live).is_dir() {
        return Ok(Output {
            status: Some(1),
            stdout: Vec::new(),
            stderr: format!("cannot enter {}", c.live).into_bytes(),
        });
    }
    let passed = run_timed(c, out)?;
    let mut said = redact(Path::new(c.env_file), &tail_lines(&fs::read(log).map_err(at(log))?, 20));
    if !passed {
        return Ok(answer(1, said));
    }
    if let Some(broke) = stable() {
        // As `$(hl_stable …)` then `printf '%s\n'`: its trailing newlines as one.
        let mut broke = broke;
        while broke.last() == Some(&b'\n') {
            broke.pop();
        }
        broke.push(b'\n');
        said.extend(redact(Path::new(c.env_file), &broke));
        return Ok(answer(76, said));
    }
    let Some(dm) = c.deadman.filter(|d| !d.is_empty() && Path::new(d).is_dir()) else {
        return Ok(answer(0, said));
    };
    (c.proven)()?;
    let dm = Path::new(dm);
    match fs::create_dir(dm.join("decided")) {
        Ok(()) => {
            fs::write(dm.join("decided/confirmed"), "").map_err(at(dm))?;
            return Ok(answer(0, said));
        }
        Err(_) if dm.join("decided/confirmed").exists() => return Ok(answer(0, said)),
        Err(_) => {}
    }
    let read = |name: &str, none: &str| match fs::read(dm.join(name)) {
        Ok(mut b) => {
            while b.last() == Some(&b'\n') {
                b.pop();
            }
            String::from_utf8_lossy(&b).into_owned()
        }
        Err(_) => none.to_owned(),
    };
    said.extend(
        format!(
            "the node rolled the service back by itself: no confirmation before its deadline\nnode-rollback: {} {}\n",
            read("rollback.rc", "running"),
            read("rollback.health", "unknown")
        )
        .into_bytes(),
    );
    Ok(answer(75, said))
}

/// `timeout -k 2 SECS sh ./healthcheck.sh > LOG 2>&1` in the live release: whether it exited 0
/// in time.
fn run_timed(c: &Check<'_>, log: fs::File) -> io::Result<bool> {
    use std::time::{Duration, Instant};
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("./healthcheck.sh").current_dir(c.live).stdout(log.try_clone()?).stderr(log);
    for pair in c.env {
        if let Some((k, v)) = pair.split_once('=') {
            cmd.env(k, v);
        }
    }
    let mut child = spawn_grouped(&mut cmd)?;
    if let Some(status) = wait_until(&mut child, Instant::now() + c.timeout)? {
        return Ok(status.success());
    }
    signal_group(&child, libc::SIGTERM);
    if wait_until(&mut child, Instant::now() + Duration::from_secs(2))?.is_none() {
        signal_group(&child, libc::SIGKILL);
        let _ = child.wait();
    }
    Ok(false)
}

/// What validate checks and runs (`VALIDATE`'s arguments, by name).
pub(super) struct Validate<'a> {
    pub release: &'a str,
    pub svc: &'a str,
    pub env_file: &'a str,
    pub log: &'a str,
    pub secrets: &'a [String],
    pub variables: &'a [crate::plan::Required],
    pub docker_host: &'a str,
    /// When the whole step must have ended.
    pub deadline: std::time::Instant,
}

/// How validate in process ended.
pub(super) enum Validated {
    /// The answer the script gives when it refuses (its status, what it printed on stderr).
    Refused(crate::transport::Output),
    /// `docker compose config --format json`'s output, for the node's checks.
    Config(Vec<u8>),
    /// A command did not end by the deadline.
    TimedOut(String),
}

/// `VALIDATE` in process: the contract's secrets named in the node's env file, its required
/// variables set there to something, `docker compose config --format json` (its stderr kept in the log,
/// the end of it printed redacted when it fails), the resolved configuration read, and
/// `docker compose build` when a compose file builds an image.
pub(super) fn validate(v: &Validate<'_>) -> io::Result<Validated> {
    use crate::transport::Output;
    let refused = |status: i32, text: String| {
        Validated::Refused(Output {
            status: Some(status),
            stdout: Vec::new(),
            stderr: text.into_bytes(),
        })
    };
    let env = fs::read(v.env_file).unwrap_or_default();
    let env_lines: Vec<&[u8]> = lines(&env).collect();
    let missing: String = v
        .secrets
        .iter()
        .filter(|name| !env_lines.iter().any(|l| sets(l, name.as_bytes(), false)))
        .map(|name| format!(" {name}"))
        .collect();
    if !missing.is_empty() {
        return Ok(refused(4, format!("secrets missing from {}:{missing}\n", v.env_file)));
    }
    let unset: String = v
        .variables
        .iter()
        .filter(|var| !env_lines.iter().any(|l| sets(l, var.name.as_bytes(), true)))
        .map(|var| {
            let mut at = format!("services/{}/service.yaml", v.svc);
            if var.line != 0 {
                at.push_str(&format!(":{}", var.line));
            }
            format!(
                "\n{at}: `runtime.env_vars`: `{}` is required, but {} does not set it (or sets it empty)",
                var.name, v.env_file
            )
        })
        .collect();
    if !unset.is_empty() {
        return Ok(refused(
            4,
            format!(
                "the compose file interpolates these required variables with no default, so Compose would run the service with an empty string: set each in {}, give it a default (`${{NAME:-...}}`), or mark it `required: false`{unset}\n",
                v.env_file
            ),
        ));
    }
    // One `config` does both: its exit status and stderr validate (as `config -q` would), its
    // stdout is the resolved configuration (kept out of the log: it holds the env file's values).
    let json = match logged(v, &["config", "--format", "json"], true)? {
        Ok(json) => json,
        Err(answer) => return Ok(answer),
    };
    // A service built from its shipped context is built here, on the node, before anything
    // live changes: a build that fails stops the service at validate, with its output kept.
    let builds = ["docker-compose.yml", "docker-compose.override.yml"].iter().any(|f| {
        let text = fs::read(Path::new(v.release).join(f)).unwrap_or_default();
        let found = lines(&text).any(|l| {
            let rest = trim_space_start(l);
            rest.len() < l.len() && rest.starts_with(b"build:")
        });
        found
    });
    if builds {
        if let Err(answer) = logged(v, &["build"], false)? {
            return Ok(answer);
        }
    }
    Ok(Validated::Config(json))
}

/// `[[:space:]]` of the C locale.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

fn trim_space_start(mut v: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = v {
        if !is_space(*first) {
            break;
        }
        v = rest;
    }
    v
}

/// Whether an env file's line sets `name`, as `VALIDATE`'s `grep -E` reads it:
/// `^[[:space:]]*(export[[:space:]]+)?NAME[[:space:]]*=`, and with `to_something` a value
/// after it that Compose does not read as empty: `([^[:space:]"']|"[^"]|'[^'])`.
fn sets(line: &[u8], name: &[u8], to_something: bool) -> bool {
    let after_name = |rest: &[u8]| -> bool {
        let Some(rest) = rest.strip_prefix(name) else { return false };
        let rest = trim_space_start(rest);
        let Some(value) = rest.strip_prefix(b"=") else { return false };
        if !to_something {
            return true;
        }
        match trim_space_start(value) {
            [q @ (b'"' | b'\''), next, ..] => next != q,
            [b'"' | b'\''] | [] => false,
            _ => true,
        }
    };
    let line = trim_space_start(line);
    if after_name(line) {
        return true;
    }
    match line.strip_prefix(b"export") {
        Some(rest) if rest.first().is_some_and(|b| is_space(*b)) => {
            after_name(trim_space_start(rest))
        }
        _ => false,
    }
}

/// `docker compose` for the release, as `compose_fn` runs it: the project named after the
/// service, the compose file and the host's override, the node's env file when there is one.
fn compose(v: &Validate<'_>, args: &[&str]) -> std::process::Command {
    let mut cmd = compose_command(Path::new("docker"), v.svc, Path::new(v.release), v.env_file);
    cmd.args(args).env("DOCKER_HOST", v.docker_host);
    cmd
}

/// `logged compose ARGS`: its output kept in the log (0600), its last 20 lines redacted as the
/// answer's stderr when it fails (the `Err`). With `capture`, its stdout is not logged but
/// read, and returned when it passed.
fn logged(
    v: &Validate<'_>,
    args: &[&str],
    capture: bool,
) -> io::Result<Result<Vec<u8>, Validated>> {
    let log = Path::new(v.log);
    let file = private_log(log)?;
    let mut cmd = compose(v, args);
    if capture {
        cmd.stdout(std::process::Stdio::piped());
    } else {
        cmd.stdout(file.try_clone()?);
    }
    cmd.stderr(file);
    let mut child = spawn_grouped(&mut cmd)?;
    let reading = child.stdout.take().map(|mut stdout| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = stdout.read_to_end(&mut out);
            out
        })
    });
    let status = wait_or_kill(&mut child, v.deadline)?;
    let out = reading.map(|r| r.join().unwrap_or_default()).unwrap_or_default();
    let Some(status) = status else {
        return Ok(Err(Validated::TimedOut(format!("docker compose {}", args.join(" ")))));
    };
    if status.success() {
        return Ok(Ok(out));
    }
    let said = redact(Path::new(v.env_file), &tail_lines(&fs::read(log).map_err(at(log))?, 20));
    Ok(Err(Validated::Refused(crate::transport::Output {
        // As the shell reports it: a signal as 128 + its number.
        status: Some(shell_status(status)),
        stdout: Vec::new(),
        stderr: said,
    })))
}

/// [`wait_until`], the group killed at the deadline.
pub(super) fn wait_or_kill(
    child: &mut std::process::Child,
    deadline: std::time::Instant,
) -> io::Result<Option<std::process::ExitStatus>> {
    let status = wait_until(child, deadline)?;
    if status.is_none() {
        signal_group(child, libc::SIGKILL);
        let _ = child.wait();
    }
    Ok(status)
}

/// `cmd` run to its end or to `deadline`, with stdin empty, in a process group of its own: its
/// status and its stdout (with its stderr, as `2>&1`, when `with_stderr`; else its stderr
/// dropped); `None` when it did not end by the deadline (it and its group are killed).
pub(super) fn captured(
    cmd: std::process::Command,
    with_stderr: bool,
    deadline: std::time::Instant,
) -> io::Result<Option<(std::process::ExitStatus, Vec<u8>)>> {
    captured_with(cmd, Some(with_stderr), deadline)
}

/// [`captured`], its stderr as the command has it set when `with_stderr` is `None`.
fn captured_with(
    mut cmd: std::process::Command,
    with_stderr: Option<bool>,
    deadline: std::time::Instant,
) -> io::Result<Option<(std::process::ExitStatus, Vec<u8>)>> {
    let (mut reader, writer) = pipe()?;
    cmd.stdout(writer.try_clone()?);
    match with_stderr {
        Some(true) => {
            cmd.stderr(writer);
        }
        Some(false) => {
            cmd.stderr(std::process::Stdio::null());
            drop(writer);
        }
        None => drop(writer),
    }
    let mut child = spawn_grouped(&mut cmd)?;
    // Our copies of the pipe's writing end go with the command: the reader sees its end when
    // the child's do.
    drop(cmd);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = reader.read_to_end(&mut out);
        let _ = tx.send(out);
    });
    let Some(status) = wait_or_kill(&mut child, deadline)? else { return Ok(None) };
    // A child of its own that still holds the pipe past the deadline counts as not done.
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    Ok(rx.recv_timeout(left).ok().map(|out| (status, out)))
}

/// A pipe (both ends closed on exec): its reading end, its writing end.
fn pipe() -> io::Result<(std::fs::File, std::fs::File)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: pipe2(2) fills the two descriptors of the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: two descriptors just made, owned by nothing else.
    Ok(unsafe { (std::fs::File::from_raw_fd(fds[0]), std::fs::File::from_raw_fd(fds[1])) })
}

/// `cmd` run to its end or to `deadline` as [`captured`] runs it, its stdout and stderr kept
/// apart: `None` when it did not end by the deadline.
pub(super) fn output_until(
    mut cmd: std::process::Command,
    deadline: std::time::Instant,
) -> io::Result<Option<crate::transport::Output>> {
    let (mut err_reader, err_writer) = pipe()?;
    cmd.stderr(err_writer);
    let (tx, rx) = std::sync::mpsc::channel();
    let reading = std::thread::spawn(move || {
        let mut err = Vec::new();
        let _ = err_reader.read_to_end(&mut err);
        let _ = tx.send(err);
    });
    let out = captured_with(cmd, None, deadline);
    drop(reading);
    let Some((status, stdout)) = out? else { return Ok(None) };
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    let Ok(stderr) = rx.recv_timeout(left) else { return Ok(None) };
    Ok(Some(crate::transport::Output { status: Some(shell_status(status)), stdout, stderr }))
}

/// `cmd` started with stdin empty, in a process group of its own (so that a timeout takes its
/// children with it, as `timeout` and `transport::local` do).
pub(super) fn spawn_grouped(cmd: &mut std::process::Command) -> io::Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.stdin(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("{program}: {e}")))
}

/// The child's status once it ends, or `None` at `deadline` (it goes on).
///
/// It sleeps until the child ends (`poll` on a pidfd, Linux 5.3 and later) rather than
/// looking every few milliseconds: a node's engine waits on eight or more children at once,
/// and two hundred wake-ups a second for each of them took the CPU its children needed.
/// Where the kernel has no pidfd it looks every 5 ms.
pub(super) fn wait_until(
    child: &mut std::process::Child,
    deadline: std::time::Instant,
) -> io::Result<Option<std::process::ExitStatus>> {
    use std::time::{Duration, Instant};
    let pidfd = pidfd_of(child.id());
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        match &pidfd {
            Some(fd) => crate::files::wait_readable(std::os::fd::AsFd::as_fd(fd), left),
            None => std::thread::sleep(left.min(Duration::from_millis(5))),
        }
    }
}

/// A pidfd of process `pid` (`pidfd_open(2)`), `None` where the kernel has none.
fn pidfd_of(pid: u32) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: a descriptor just opened, owned by nothing else.
    Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// `signal` to the process group of a child [`spawn_grouped`] started.
pub(super) fn signal_group(child: &std::process::Child, signal: i32) {
    // SAFETY: kill(2) on the group of a child this module started; no memory is touched.
    unsafe { libc::kill(-(child.id() as i32), signal) };
}

/// A step run as a detached job of the node (`JOB`): `script` run by `sh -c` with `args` after
/// `$0`, in its own session, in the job folder `dir`.
pub(super) struct Job<'a> {
    /// What runs the step.
    pub runner: Runner<'a>,
    pub dir: &'a str,
    pub args: &'a [String],
    pub docker_host: &'a str,
    pub deadline: std::time::Instant,
}

/// What runs a job's step.
pub(super) enum Runner<'a> {
    /// `remote`'s `JOB_WRAPPER` around the script.
    Script { wrapper: &'a str, script: &'a str },
    /// This program (`homelab node job`), the step by its name (`switch::STEP`).
    Program { program: &'a Path, step: &'a str },
}

/// `sh -c SCRIPT NAME ARGS`, for [`detached`].
fn shell(script: &str, name: &str, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c").arg(script).arg(name).args(args);
    cmd
}

/// `cmd` as a process detached from this one's session (`setsid`), stdio on `/dev/null`,
/// `DOCKER_HOST` set: it outlives the engine (or the session) that started it.
fn detached(mut cmd: std::process::Command, docker_host: &str) -> io::Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.env("DOCKER_HOST", docker_host);
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    };
    cmd.spawn().map_err(|e| io::Error::new(e.kind(), format!("{program}: {e}")))
}

/// Reaps a detached child whenever it ends, so that it never lingers as a zombie that a
/// `pid` check would take for alive.
fn reap(mut child: std::process::Child) {
    std::thread::spawn(move || {
        let _ = child.wait();
    });
}

fn pid_in(file: &Path) -> Option<u32> {
    fs::read_to_string(file).ok()?.trim().parse().ok()
}

fn alive(pid: Option<u32>) -> bool {
    pid.is_some_and(crate::node::records::process_alive)
}

/// `JOB` in process: a job already running there (started by a run that died) is waited for,
/// and a finished one's result read, instead of starting the step again beside it; a job whose
/// process is gone without a result (the node rebooted) is started again. Its answer, or
/// `None` at the deadline (the job goes on).
pub(super) fn job(j: &Job<'_>) -> io::Result<Option<crate::transport::Output>> {
    use std::time::{Duration, Instant};
    let dir = Path::new(j.dir);
    let (rc, pid) = (dir.join("rc"), dir.join("pid"));
    if !rc.exists() {
        if !alive(pid_in(&pid)) {
            remove_all(dir)?;
            fs::create_dir_all(dir).map_err(at(dir))?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(at(dir))?;
            let cmd = match j.runner {
                Runner::Script { wrapper, script } => {
                    let mut args: Vec<&str> = vec![j.dir, script, "homelab"];
                    args.extend(j.args.iter().map(String::as_str));
                    shell(wrapper, "homelab-job", &args)
                }
                Runner::Program { program, step } => {
                    let mut cmd = std::process::Command::new(program);
                    cmd.args(["node", "job", "--dir", j.dir, step, "--"]).args(j.args);
                    cmd
                }
            };
            let mut child = detached(cmd, j.docker_host)?;
            // Started here: waited for as a child (it goes on past the deadline).
            if wait_until(&mut child, j.deadline)?.is_none() {
                reap(child);
                return Ok(None);
            }
        }
        while !rc.exists() {
            if !alive(pid_in(&pid)) {
                std::thread::sleep(Duration::from_millis(200));
                if rc.exists() {
                    break;
                }
                return Ok(Some(crate::transport::Output {
                    status: Some(98),
                    stdout: Vec::new(),
                    stderr: format!("the job in {} ended without a result", j.dir).into_bytes(),
                }));
            }
            if Instant::now() >= j.deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let status = fs::read_to_string(&rc).map_err(at(&rc))?.trim().parse().ok();
    Ok(Some(crate::transport::Output {
        status,
        stdout: fs::read(dir.join("out")).unwrap_or_default(),
        stderr: fs::read(dir.join("err")).unwrap_or_default(),
    }))
}

/// The file of a dead-man's folder that hands the watchdog's arguments (NUL-separated) to the
/// deploy's job: see [`arm`] and [`take_watch`].
pub(super) const HANDOVER: &str = "handover";

/// The deploy job `job` (its folder), its step ended: the watchdog's arguments, if [`arm`]
/// handed them to this job and this call took them (removed the file) before anyone else.
pub(super) fn take_watch(job: &Path) -> Option<Vec<String>> {
    let handover = job.parent()?.join("deadman").join(HANDOVER);
    let text = fs::read_to_string(&handover).ok()?;
    let args: Vec<String> = text.split('\0').map(str::to_owned).collect();
    if args.first().map(Path::new) != Some(job) {
        return None;
    }
    fs::remove_file(&handover).ok()?;
    Some(args)
}

/// `ARM` in process: the deploy's dead-man watchdog (`WATCHDOG`, with `args`: `ARM`'s after
/// the folder, without the count) started in its own session, once per deploy: a resumed
/// deploy keeps the watchdog, or the decision, it finds.
///
/// Where this program runs the deploy's job (`homelab node job`) and that job has not ended,
/// no process is started here: the watchdog's arguments are handed over in the folder
/// ([`HANDOVER`]) and the job, once its `compose up` ended, forks into the watchdog (one
/// process a deploy fewer, no second start of this program). Whichever takes the handover
/// (removes the file: one can) watches: the job, or this call when the job ended meanwhile.
pub(super) fn arm(watchdog: &str, dm: &str, args: &[String], docker_host: &str) -> io::Result<()> {
    let dir = Path::new(dm);
    if dir.join("decided").is_dir() || alive(pid_in(&dir.join("pid"))) {
        return Ok(());
    }
    let up_rc = args.first().map(|job| Path::new(job).join("rc"));
    let handed = program().is_some() && up_rc.as_ref().is_some_and(|rc| !rc.exists());
    let handover = dir.join(HANDOVER);
    let text = args.join("\0");
    if handed && fs::read(&handover).is_ok_and(|t| t == text.as_bytes()) {
        // Handed over already, by a run that died: the job takes it when its `up` ends.
        return Ok(());
    }
    remove_all(dir)?;
    fs::create_dir_all(dir).map_err(at(dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(at(dir))?;
    if handed {
        let tmp = dir.join(format!("{HANDOVER}.tmp"));
        fs::write(&tmp, &text).map_err(at(&tmp))?;
        fs::rename(&tmp, &handover).map_err(at(dir))?;
        // A job that a run that died started may have ended (and looked) meanwhile.
        if !up_rc.as_ref().is_some_and(|rc| rc.exists()) || fs::remove_file(&handover).is_err() {
            return Ok(());
        }
    }
    let mut all: Vec<&str> = vec![dm];
    all.extend(args.iter().map(String::as_str));
    spawn_watchdog(watchdog, &all, docker_host)
}

/// The watchdog (`WATCHDOG`'s arguments, its folder first) started in its own session by a
/// deploy job that could not fork: as [`arm`] starts it.
pub(super) fn start_watchdog(watchdog: &str, all: &[String]) -> io::Result<()> {
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let host = std::env::var("DOCKER_HOST").unwrap_or_default();
    spawn_watchdog(watchdog, &all, &host)
}

fn spawn_watchdog(watchdog: &str, all: &[&str], docker_host: &str) -> io::Result<()> {
    // This program watches when it can (`homelab node deadman`, no `sleep` process a second).
    let cmd = match program() {
        Some(program) => {
            let mut cmd = std::process::Command::new(program);
            cmd.args(["node", "deadman", "--"]).args(all);
            cmd
        }
        None => shell(watchdog, "homelab-deadman", all),
    };
    reap(detached(cmd, docker_host)?);
    Ok(())
}

/// The last `n` lines of `text`, as `tail -n N` prints them.
pub(super) fn tail_lines(text: &[u8], n: usize) -> Vec<u8> {
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let start = body
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, b)| **b == b'\n')
        .nth(n.saturating_sub(1))
        .map_or(0, |(i, _)| i + 1);
    text[start..].to_vec()
}

/// A step's log, emptied and readable by its owner only (it may hold secrets), its folder made.
pub(super) fn private_log(log: &Path) -> io::Result<fs::File> {
    fs::create_dir_all(parent(log)).map_err(at(parent(log)))?;
    let file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(log)
        .map_err(at(log))?;
    file.set_permissions(fs::Permissions::from_mode(0o600)).map_err(at(log))?;
    Ok(file)
}

/// `hl_redact ENVFILE` (`remote::redact_fn`): `text` with every value `env_file` sets, of at
/// least `REDACT_MIN` bytes, replaced by `[redacted]`, read as its awk reads the file (byte
/// by byte, as under `LC_ALL=C`). With no such file the text passes as it is; with one that
/// cannot be read, none of it does.
pub(super) fn redact(env_file: &Path, text: &[u8]) -> Vec<u8> {
    let env = match fs::read(env_file) {
        Ok(bytes) => bytes,
        Err(_) if !env_file.is_file() => return text.to_vec(),
        Err(_) => {
            return format!(
                "[output withheld: {} cannot be read to redact it; the whole output is in the log on the node]\n",
                env_file.display()
            )
            .into_bytes()
        }
    };
    let values = secret_values(&env);
    let mut out = Vec::with_capacity(text.len());
    for line in lines(text) {
        let mut line = line.to_vec();
        for v in &values {
            line = swap(&line, v);
        }
        out.extend_from_slice(&line);
        out.push(b'\n');
    }
    out
}

/// The lines of `text` as awk reads them: split at newlines, a last line without one kept.
fn lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let none = text.is_empty();
    body.split(|b| *b == b'\n').filter(move |_| !none)
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim_blanks(mut v: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = v {
        if !is_blank(*first) {
            break;
        }
        v = rest;
    }
    while let [rest @ .., last] = v {
        if !is_blank(*last) {
            break;
        }
        v = rest;
    }
    v
}

/// The values of an env file, longest first, as the script's awk collects and orders them.
fn secret_values(env: &[u8]) -> Vec<Vec<u8>> {
    let mut vals: Vec<Vec<u8>> = Vec::new();
    let mut add = |v: &[u8]| {
        if v.len() < REDACT_MIN {
            return;
        }
        vals.push(v.to_vec());
        if v.contains(&b'$') {
            let mut w = Vec::with_capacity(v.len() + 2);
            for b in v {
                w.push(*b);
                if *b == b'$' {
                    w.push(b'$');
                }
            }
            vals.push(w);
        }
    };
    let mut quote: Option<u8> = None;
    for line in lines(env) {
        let v = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(q) = quote {
            // A line inside a quoted value that spans lines: all of it is the value.
            let mut v = trim_blanks(v);
            if v.last() == Some(&q) {
                v = &v[..v.len() - 1];
                quote = None;
            }
            add(v);
            continue;
        }
        if trim_blanks(v).first() == Some(&b'#') {
            continue;
        }
        let v = match assignment(v) {
            Some(n) => &v[n..],
            None => v,
        };
        let mut v = trim_blanks(v);
        match v.first() {
            Some(&q) if q == b'"' || q == b'\'' => {
                v = &v[1..];
                if v.last() == Some(&q) {
                    v = &v[..v.len() - 1];
                } else {
                    quote = Some(q);
                }
            }
            _ => {
                if let Some(cut) = comment_at(v) {
                    add(&v[..cut]);
                }
            }
        }
        add(v);
    }
    // The awk's own exchange sort, longest first, so equal lengths keep its order.
    let n = vals.len();
    for i in 0..n {
        for j in i + 1..n {
            if vals[j].len() > vals[i].len() {
                vals.swap(i, j);
            }
        }
    }
    vals
}

/// The length of `^[ \t]*(export[ \t]+)?[A-Za-z_][A-Za-z0-9_.-]*[ \t]*=` at the start of `v`,
/// the longest of its two ways (with `export ` and without), as awk's `match` finds it.
fn assignment(v: &[u8]) -> Option<usize> {
    let blanks = |from: usize| from + v[from..].iter().take_while(|b| is_blank(**b)).count();
    let name_then_eq = |from: usize| -> Option<usize> {
        let first = *v.get(from)?;
        if !(first.is_ascii_alphabetic() || first == b'_') {
            return None;
        }
        let mut i = from + 1;
        while v.get(i).is_some_and(|b| b.is_ascii_alphanumeric() || b"_.-".contains(b)) {
            i += 1;
        }
        let i = blanks(i);
        (v.get(i) == Some(&b'=')).then_some(i + 1)
    };
    let start = blanks(0);
    let plain = name_then_eq(start);
    let exported = v[start..].strip_prefix(b"export").and_then(|rest| {
        let after = start + 6;
        (rest.first().is_some_and(|b| is_blank(*b))).then(|| name_then_eq(blanks(after)))?
    });
    plain.max(exported)
}

/// Where `[ \t]+#.*$` first matches in `v`: the start of the first run of blanks followed by
/// `#`.
fn comment_at(v: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < v.len() {
        if is_blank(v[i]) {
            let end = i + v[i..].iter().take_while(|b| is_blank(**b)).count();
            if v.get(end) == Some(&b'#') {
                return Some(i);
            }
            i = end;
        } else {
            i += 1;
        }
    }
    None
}

/// Every occurrence of `value` in `s`, left to right, replaced by `[redacted]`.
fn swap(s: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut rest = s;
    while let Some(p) = rest.windows(value.len()).position(|w| w == value) {
        out.extend_from_slice(&rest[..p]);
        out.extend_from_slice(b"[redacted]");
        rest = &rest[p + value.len()..];
    }
    out.extend_from_slice(rest);
    out
}

#[cfg(test)]
mod upload_tests {
    use super::*;

    /// A release is written whole and renamed into place whatever its size: a few files (each
    /// synced), and a build context of more files and folders than are synced one by one
    /// (its file system synced).
    #[test]
    fn a_release_of_any_size_is_written_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let at = |p: &str| dir.path().join(p).to_string_lossy().into_owned();
        fs::create_dir(dir.path().join("releases")).expect("mkdir");
        for count in [3, 1500] {
            let names: Vec<String> = (0..count).map(|i| format!("ctx/d{}/f{i}", i % 7)).collect();
            let files: Vec<(&str, u32, &[u8])> =
                names.iter().map(|n| (n.as_str(), 0o640, n.as_bytes())).collect();
            let release = at(&format!("releases/r{count}"));
            let before = upload(&at(".staging"), &release, &at("live"), &at("jobs"), &files)
                .expect("uploaded");
            assert_eq!(before, None);
            assert!(!Path::new(&at(".staging")).exists(), "the staging folder became the release");
            for n in &names {
                let path = Path::new(&release).join(n);
                assert_eq!(fs::read(&path).expect("written"), n.as_bytes());
                let mode = fs::metadata(&path).expect("stat").permissions().mode();
                assert_eq!(mode & 0o7777, 0o640, "{n}");
            }
        }
    }
}

#[cfg(test)]
mod wait_tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn started(script: &str) -> std::process::Child {
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", script]);
        spawn_grouped(&mut cmd).expect("sh starts")
    }

    /// A child's end is seen whatever its status: an exit code, a signal, and a child that
    /// ends after the wait began (the pidfd's wake-up, not a deadline's).
    #[test]
    fn a_childs_end_is_its_status() {
        let mut quick = started("exit 3");
        let far = Instant::now() + Duration::from_secs(60);
        let status = wait_until(&mut quick, far).expect("wait").expect("ended");
        assert_eq!(shell_status(status), 3);
        let mut later = started("sleep 0.3; exit 0");
        let status = wait_until(&mut later, far).expect("wait").expect("ended");
        assert!(status.success());
        let mut killed = started("kill -TERM $$; sleep 60");
        let status = wait_until(&mut killed, far).expect("wait").expect("ended");
        assert_eq!(shell_status(status), 128 + libc::SIGTERM);
    }

    /// A child still running at the deadline is left running (`None`), not before the
    /// deadline; the next wait, past a kill, has its status; the group is gone.
    #[test]
    fn a_child_past_its_deadline_goes_on_until_it_is_killed() {
        let mut slow = started("sleep 60");
        let deadline = Instant::now() + Duration::from_millis(300);
        assert!(wait_until(&mut slow, deadline).expect("wait").is_none());
        assert!(Instant::now() >= deadline, "not given up before its deadline");
        assert!(slow.try_wait().expect("try_wait").is_none(), "still running");
        let far = Instant::now() + Duration::from_secs(60);
        signal_group(&slow, libc::SIGKILL);
        let status = wait_until(&mut slow, far).expect("wait").expect("ended");
        assert_eq!(shell_status(status), 128 + libc::SIGKILL);
        let mut gone = started("sleep 60");
        assert!(wait_or_kill(&mut gone, Instant::now()).expect("wait").is_none());
        assert!(gone.try_wait().expect("reaped").is_some(), "killed and reaped");
    }
}

#[cfg(test)]
mod handover_tests {
    use super::*;

    /// The watchdog's arguments handed to a deploy's job are taken once, by that job only: a
    /// second look (the arming run, or a job started again) finds nothing, and another job of
    /// the service (its folder not the first argument) takes nothing.
    #[test]
    fn a_handed_over_watch_is_taken_once_and_only_by_its_own_job() {
        let dir = tempfile::tempdir().expect("tempdir");
        let jobs = dir.path().join("jobs/web");
        let (up, other, dm) = (jobs.join("up"), jobs.join("rollback"), jobs.join("deadman"));
        fs::create_dir_all(&dm).expect("mkdir");
        let args = [up.to_str().expect("utf-8"), "60", "a b", "it's $(x)\nline"];
        fs::write(dm.join(HANDOVER), args.join("\0")).expect("write");
        assert_eq!(take_watch(&other), None, "not the job it was handed to");
        assert!(dm.join(HANDOVER).exists());
        assert_eq!(take_watch(&up), Some(args.map(str::to_owned).to_vec()));
        assert!(!dm.join(HANDOVER).exists(), "taken");
        assert_eq!(take_watch(&up), None, "taken once");
    }
}

#[cfg(test)]
mod tests {
    //! Each step in process against its script, on twin trees: the same files, modes, links
    //! and answers (paths read relative to each tree's root).
    use std::collections::BTreeMap;
    use std::os::unix::fs::{symlink, MetadataExt};
    use std::path::{Path, PathBuf};

    use super::super::remote::{self, Carry, Prune};
    use crate::node::Layout;
    use crate::transport::local::LocalExec;
    use crate::transport::NodeExec;

    /// Two roots, the first run through the scripts (as a remote node), the second in process.
    struct Twins {
        _dir: tempfile::TempDir,
        roots: [PathBuf; 2],
    }

    impl Twins {
        fn new() -> Twins {
            let dir = tempfile::tempdir().expect("tempdir");
            let roots = [dir.path().join("script"), dir.path().join("native")];
            for r in &roots {
                std::fs::create_dir(r).expect("root");
            }
            Twins { _dir: dir, roots }
        }

        /// Runs `f` on each root, with its exec and layout, in the same state before.
        fn each<T>(&self, f: impl Fn(&dyn NodeExec, &Layout, &Path) -> T) -> [T; 2] {
            let run = |i: usize| {
                let root = self.roots[i].to_str().expect("utf-8");
                let exec = if i == 0 {
                    LocalExec::for_tests_as_remote(root)
                } else {
                    LocalExec::for_tests(root)
                };
                assert_eq!(exec.on_this_machine(), i == 1);
                f(&exec, &Layout::new(root), &self.roots[i])
            };
            [run(0), run(1)]
        }

        /// Both trees, as (kind, mode, content or link target) by path, the root's own path
        /// read as `ROOT`; they must be the same.
        fn same(&self) -> BTreeMap<String, (char, u32, String)> {
            let [a, b] = [0, 1].map(|i| tree(&self.roots[i]));
            assert_eq!(a, b, "the script's tree, then the native one");
            a
        }
    }

    fn tree(root: &Path) -> BTreeMap<String, (char, u32, String)> {
        let mut out = BTreeMap::new();
        let r = root.to_str().expect("utf-8");
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).expect("read_dir").flatten() {
                let p = e.path();
                let m = std::fs::symlink_metadata(&p).expect("stat");
                let rel = p.strip_prefix(root).expect("under").to_string_lossy().into_owned();
                let (kind, body) = if m.file_type().is_symlink() {
                    (
                        'l',
                        std::fs::read_link(&p).expect("link").to_string_lossy().replace(r, "ROOT"),
                    )
                } else if m.is_dir() {
                    stack.push(p.clone());
                    ('d', String::new())
                } else {
                    let bytes = std::fs::read(&p).expect("read");
                    ('f', String::from_utf8_lossy(&bytes).replace(r, "ROOT"))
                };
                out.insert(rel, (kind, m.mode() & 0o7777, body));
            }
        }
        out
    }

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }

    fn set_age(root: &Path, rel: &str, secs_ago: u64) {
        let t = std::time::SystemTime::now() - std::time::Duration::from_secs(secs_ago);
        let f = std::fs::File::open(root.join(rel)).expect("open");
        f.set_modified(t).expect("mtime");
    }

    #[test]
    fn records_are_written_as_the_carry_script_writes_them() {
        let t = Twins::new();
        t.each(|_, _, root| {
            write(root, "state/deploy/p/journal.json.seq", "4\n");
            write(root, "state/deploy/p/journal.json", "{\"seq\": 4}");
            write(root, "events/d/n/events.jsonl", "{\"torn\":");
        });
        let carry = |root: &Path, seq: u64, text: &str, events: &str| Carry {
            journal: Some((
                root.join("state/deploy/p/journal.json").to_str().expect("utf-8").to_owned(),
                seq,
                text.to_owned(),
            )),
            events: Some((
                root.join("events/d/n/events.jsonl").to_str().expect("utf-8").to_owned(),
                events.to_owned(),
            )),
        };
        // An older save arrives late: kept out; a newer one replaces it; the events follow a
        // torn line on a line of their own, and the next ones after them.
        for (seq, text, events) in [
            (3, "{\"seq\": 3}", "{\"a\":1}\n"),
            (5, "{\"seq\": 5, \"quote\": \"it's $(x) `y`\"}", "{\"b\":2}\n{\"c\":3}\n"),
            (5, "{\"seq\": 5, \"again\": true}", ""),
        ] {
            let out = t.each(|exec, _, root| {
                remote::flush(exec, &carry(root, seq, text, events)).map_err(|e| e.to_string())
            });
            assert!(out.iter().all(Result::is_ok), "{out:?}");
            t.same();
        }
        let tree = t.same();
        assert_eq!(tree["state/deploy/p/journal.json"].1, 0o600);
        assert!(tree["state/deploy/p/journal.json"].2.contains("it's $(x)"));
        assert_eq!(tree["state/deploy/p/journal.json.seq"].2, "5\n");
        assert_eq!(
            tree["events/d/n/events.jsonl"].2,
            "{\"torn\":\n{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n"
        );
        // Records that cannot be written: the step does not run, exit 97 both ways.
        let out = t.each(|exec, _, root| {
            write(root, "blocker", "");
            let bad = Carry {
                journal: Some((
                    root.join("blocker/j.json").to_str().expect("utf-8").to_owned(),
                    1,
                    "{}".to_owned(),
                )),
                events: None,
            };
            remote::flush(exec, &bad).map_err(|e| e.to_string())
        });
        for o in out {
            let e = o.expect_err("refused");
            assert!(e.contains("exit 97") && e.contains("apply journal"), "{e}");
        }
    }

    #[test]
    fn an_upload_is_sealed_as_the_prepare_script_seals_it() {
        let t = Twins::new();
        let files: &[(&str, u32, &[u8])] = &[
            ("docker-compose.yml", 0o644, b"services: {}\n"),
            ("healthcheck.sh", 0o755, b"#!/bin/sh\nexit 0\n"),
            ("conf/deep/it's a $(name).conf", 0o600, b"k = v\n"),
            ("bin/été", 0o640, &[0, 159, 146, 150, 255]),
        ];
        let previous = t.each(|exec, l, root| {
            // A staging folder left by a killed run, an older copy of this release, a job.
            write(root, "state/releases/web/.staging-p/junk", "x");
            write(root, "state/releases/web/p/stale", "x");
            write(root, "state/deploy/p/jobs/web/up/rc", "0");
            write(root, "state/releases/web/old/docker-compose.yml", "old");
            std::fs::create_dir_all(root.join("state/services")).expect("mkdir");
            symlink(root.join("state/releases/web/old"), l.live("web")).expect("link");
            let release = format!("{}/p", l.releases("web"));
            let staging = format!("{}/.staging-p", l.releases("web"));
            let jobs = format!("{}/jobs/web", l.deploy("p"));
            let p = remote::prepare(
                exec,
                &Carry::default(),
                &staging,
                &release,
                &l.live("web"),
                &jobs,
                files,
                None,
            )
            .map_err(|e| e.to_string())
            .expect("prepared");
            p.previous.map(|p| p.replace(root.to_str().expect("utf-8"), "ROOT"))
        });
        assert_eq!(previous[0], previous[1]);
        assert_eq!(previous[0].as_deref(), Some("ROOT/state/releases/web/old"));
        let tree = t.same();
        assert_eq!(tree["state/releases/web/p/healthcheck.sh"].1, 0o755);
        assert_eq!(tree["state/releases/web/p/conf/deep/it's a $(name).conf"].1, 0o600);
        assert!(!tree.contains_key("state/releases/web/p/stale"));
        assert!(!tree.contains_key("state/deploy/p/jobs/web"));
        assert!(!tree.keys().any(|k| k.contains(".staging")));
    }

    #[test]
    fn the_end_of_a_run_prunes_and_unlocks_as_the_finish_script_does() {
        let t = Twins::new();
        let holder = b"{\"holder\": \"us\"}\n";
        t.each(|_, l, root| {
            // Five releases of web, the live one the second oldest; snapshots; journals.
            for (i, name) in ["r1", "r2", "r3", "r4", "r5"].iter().enumerate() {
                write(root, &format!("state/releases/web/{name}/f"), name);
                set_age(root, &format!("state/releases/web/{name}"), 100 - 10 * i as u64);
            }
            std::fs::create_dir_all(root.join("state/services")).expect("mkdir");
            symlink(root.join("state/releases/web/r2"), l.live("web")).expect("link");
            for (i, name) in ["s1", "s2", "s3"].iter().enumerate() {
                write(root, &format!("state/snapshots/web/{name}/manifest"), name);
                set_age(root, &format!("state/snapshots/web/{name}"), 100 - 10 * i as u64);
            }
            for (i, (plan, done)) in
                [("a", true), ("b", false), ("c", true), ("d", true), ("p", true)]
                    .iter()
                    .enumerate()
            {
                let text = if *done { "{\n  \"finished\": true\n}" } else { "{}" };
                write(root, &format!("state/deploy/{plan}/journal.json"), text);
                set_age(root, &format!("state/deploy/{plan}"), 100 - 10 * i as u64);
            }
            write(root, "state/lock/holder.json", std::str::from_utf8(holder).expect("utf-8"));
            let _ = l;
        });
        let out = t.each(|exec, l, _| {
            let consumed = l.consumed("p");
            let services = ["web".to_owned()];
            let prune = Prune { keep: 2, plan: "p", services: &services };
            remote::finish(
                exec,
                &Carry::default(),
                l,
                Some((&consumed, "{\"plan\": \"p\"}")),
                &prune,
                holder,
            )
            .map_err(|e| e.to_string())
        });
        assert!(out.iter().all(Result::is_ok), "{out:?}");
        let tree = t.same();
        let releases: Vec<&str> = ["r1", "r2", "r3", "r4", "r5"]
            .into_iter()
            .filter(|r| tree.contains_key(&format!("state/releases/web/{r}")))
            .collect();
        assert_eq!(releases, ["r2", "r4", "r5"], "the newest two and the live one");
        assert!(!tree.contains_key("state/lock"), "our lock released");
        // A lock another run holds stays.
        t.each(|_, _, root| write(root, "state/lock/holder.json", "{\"holder\": \"them\"}\n"));
        let out = t.each(|exec, l, _| remote::unlock(exec, l, holder).map_err(|e| e.to_string()));
        assert!(out.iter().all(Result::is_ok), "{out:?}");
        assert!(t.same().contains_key("state/lock/holder.json"));
    }

    #[test]
    fn a_lock_is_broken_as_the_break_lock_script_breaks_it() {
        let t = Twins::new();
        let broken = || t.each(|exec, l, _| remote::break_lock(exec, l).map_err(|e| e.to_string()));
        // No lock: nothing to break.
        assert_eq!(broken(), [Ok(None), Ok(None)]);
        // A lock and its holder: the holder said, the lock gone.
        t.each(|_, _, root| {
            write(root, "state/lock/holder.json", "{\"holder\": \"gone@elsewhere\"}\n")
        });
        let said = broken();
        assert_eq!(said[0], said[1]);
        assert_eq!(said[1], Ok(Some("{\"holder\": \"gone@elsewhere\"}".to_owned())));
        assert!(!t.same().contains_key("state/lock"));
        // A lock with no holder file (a crash between the two): `{}`, and gone.
        t.each(|_, _, root| std::fs::create_dir_all(root.join("state/lock")).expect("mkdir"));
        let said = broken();
        assert_eq!(said[0], said[1]);
        assert_eq!(said[1], Ok(Some("{}".to_owned())));
        assert!(!t.same().contains_key("state/lock"));
    }

    #[test]
    fn a_file_is_read_as_the_read_script_reads_it() {
        let t = Twins::new();
        let read = |rel: &str| {
            t.each(|exec, _, root| {
                let p = root.join(rel);
                remote::read_file(exec, p.to_str().expect("utf-8")).map_err(|e| e.to_string())
            })
        };
        t.each(|_, _, root| {
            write(root, "a/file", "bytes\n");
            std::fs::create_dir_all(root.join("a/dir")).expect("mkdir");
        });
        for rel in ["a/file", "a/missing", "a/dir"] {
            let [a, b] = read(rel);
            assert_eq!(a, b, "{rel}");
        }
        assert_eq!(read("a/file")[1], Ok(Some(b"bytes\n".to_vec())));
    }

    /// `hl_redact ENV` run by `sh` and `awk` over `text`, and [`super::redact`]: the same bytes.
    fn redact_both(env: &[u8], text: &[u8]) -> Vec<u8> {
        let dir = tempfile::tempdir().expect("tempdir");
        let envf = dir.path().join(".env");
        std::fs::write(&envf, env).expect("write");
        let native = super::redact(&envf, text);
        assert_eq!(
            String::from_utf8_lossy(&remote::redact_by_script(env, text)),
            String::from_utf8_lossy(&native),
            "env {:?}, text {:?}",
            String::from_utf8_lossy(env),
            String::from_utf8_lossy(text)
        );
        native
    }

    #[test]
    fn values_are_redacted_as_the_scripts_awk_redacts_them() {
        let envs: &[&[u8]] = &[
            b"PLAIN=plain-value-1\nexport EXPORTED=exported-value\n",
            b"META='s3cr3t $(touch /tmp/x) `id` *.[a]^ \\1 & | \"q\"'\nDOLLAR=pa$word$1\n",
            b"DQ=\"double quoted!\"\nINLINE=inline-value # a comment\nTAB=tabbed-value\t#c\n",
            b"MULTI=\"-----BEGIN KEY\nmiddle-line-of-it\n  bGluZTI=  \n-----END KEY\"\nAFTER=after-value\n",
            b"UNENDED='opened-and-never\nclosed-value-line\n",
            b"# comment-words here\n   # indented-comment\nSHORT=abc\nEMPTY=\nCRLF=windows-line\r\n",
            b"export =not-a-name-value\nexportFOO=glued-export\nexport\tTABBED=tab-exported\n",
            b"name.with-dots=dotted-value\n1BAD=digit-first-value\n  SPACED  =  spaced-value  \n",
            b"A=abcdefgh\nB=bcdefghi\nC=abcdefghi\nD=a b #c d\nE=x  #  y z #w\n",
            b"Q='\nQQ=\"\"\nNOEQUALS-LINE-VALUE\n=starts-with-equals\n",
            b"LAST=no-newline-at-end",
            b"",
            b"\xff\xfeBIN=\xc3\xa9t\xc3\xa9-\xff-value\n",
        ];
        let texts: &[&[u8]] = &[
            b"a plain-value-1 b exported-value c\n",
            b"s3cr3t $(touch /tmp/x) `id` *.[a]^ \\1 & | \"q\"\ncompose pa$$word$$1 shell pa$word$1\n",
            b"double quoted! inline-value inline-value # a comment tabbed-value\n",
            b"-----BEGIN KEY\nmiddle-line-of-it\nbGluZTI=\n-----END KEY after-value\n",
            b"opened-and-never closed-value-line\n",
            b"comment-words indented-comment abc windows-line\r\n",
            b"not-a-name-value glued-export tab-exported =not-a-name-value\n",
            b"dotted-value digit-first-value spaced-value\n",
            b"abcdefghij bcdefghi abcdefgh a b #c d x  #  y z #w\n",
            b"NOEQUALS-LINE-VALUE starts-with-equals\n",
            b"no-newline-at-end",
            b"",
            b"\n\n",
            b"\xc3\xa9t\xc3\xa9-\xff-value and more\n",
        ];
        for env in envs {
            for text in texts {
                redact_both(env, text);
            }
        }
        // What it is for: the values gone, other words kept.
        let out = redact_both(envs[0], texts[0]);
        assert_eq!(out, b"a [redacted] b [redacted] c\n");
        // No file: the text passes as it is (no newline added).
        let none = super::redact(Path::new("/nonexistent/.env"), b"x y");
        assert_eq!(none, b"x y");
    }

    #[test]
    fn a_healthcheck_answers_as_the_healthcheck_script_answers() {
        use std::time::Duration;
        // One attempt of `svc`'s healthcheck, a second to pass, no stability window.
        let check = |exec: &dyn NodeExec, l: &Layout, root: &Path, svc: &str, dm: Option<&str>| {
            let log = root.join(format!("logs/{svc}/healthcheck-p.log"));
            let log = log.to_str().expect("utf-8");
            let (second, none) = (Duration::from_secs(1), Duration::ZERO);
            remote::healthcheck(exec, &Carry::default(), l, "alpha", svc, second, none, log, dm)
                .map_err(|e| e.to_string())
        };
        let t = Twins::new();
        let checks: &[(&str, &str)] = &[
            ("passes", "echo \"ok $HOMELAB_SERVICE on $HOMELAB_NODE; token healthy-secret-1\"\n"),
            ("fails", "i=0; while [ $i -lt 30 ]; do echo \"line $i healthy-secret-1\"; i=$((i+1)); done; exit 3\n"),
            ("quiet", "exit 0"),
            ("no-newline", "printf 'partial healthy-secret-1'; exit 1\n"),
            ("hangs", "echo before; exec sleep 30\n"),
        ];
        // (dead-man folder state, the label) before each check.
        type Files<'a> = &'a [(&'a str, &'a str)];
        let deadmen: &[(Option<Files>, &str)] = &[
            (None, "no dead-man"),
            (Some(&[]), "armed, undecided"),
            (Some(&[("decided/confirmed", "")]), "confirmed before"),
            (
                Some(&[
                    ("decided/rolled-back", ""),
                    ("rollback.rc", "0\n"),
                    ("rollback.health", "ok\n"),
                ]),
                "node rolled back",
            ),
            (Some(&[("decided/rolled-back", "")]), "node rolling back"),
            (Some(&[("decided/controller-rollback", "")]), "controller rolling back"),
        ];
        for (name, body) in checks {
            for (dm, label) in deadmen {
                if *name == "hangs" && dm.is_some() {
                    continue;
                }
                let health = t.each(|exec, l, root| {
                    let _ = std::fs::remove_dir_all(root.join("state"));
                    write(root, "state/releases/web/p/healthcheck.sh", body);
                    write(root, "config/web/.env", "TOKEN=healthy-secret-1\n");
                    std::fs::create_dir_all(root.join("state/services")).expect("mkdir");
                    symlink(root.join("state/releases/web/p"), l.live("web")).expect("link");
                    let dm_path = root.join("state/deploy/p/jobs/web/deadman");
                    if let Some(files) = dm {
                        std::fs::create_dir_all(&dm_path).expect("mkdir");
                        for (f, text) in *files {
                            write(&dm_path, f, text);
                        }
                    }
                    check(exec, l, root, "web", dm.map(|_| dm_path.to_str().expect("utf-8")))
                });
                assert_eq!(health[0], health[1], "{name}, {label}");
                let tree = t.same();
                assert_eq!(tree["logs/web/healthcheck-p.log"].1, 0o600, "{name}, {label}");
                let said = format!("{:?}", health[1]);
                assert!(!said.contains("healthy-secret-1"), "{name}, {label}: {said}");
            }
        }
        // A live release that is not there: failing, both ways.
        let health = t.each(|exec, l, root| {
            let _ = std::fs::remove_dir_all(root.join("state"));
            check(exec, l, root, "gone", None)
        });
        assert_eq!(health[0], health[1]);
        assert_eq!(health[1], Ok(remote::Health::Failing(String::new())));
    }

    /// Validate's checks of the node's env file, then Compose's own, as the script makes them.
    #[test]
    fn validate_refuses_and_reads_as_the_validate_script_does() {
        use crate::plan::Required;
        let t = Twins::new();
        let envs: &[&str] = &[
            "",
            "TOKEN=value\nexport\tOTHER = x\n",
            "  TOKEN=\nOTHER=''\nEMPTYQ=\"\"\nSPACEQ=\" \"\n",
            "#TOKEN=x\nTOKENX=y\nexportTOKEN=z\nexport  OTHER=\"v\nREQ=   set\r\n",
            "TOKEN='x'\nOTHER=\"y\"\nREQ=$x\nLATE=1",
        ];
        let secrets: &[&[&str]] = &[&[], &["TOKEN"], &["TOKEN", "OTHER"]];
        let variables: &[&[(&str, u64)]] =
            &[&[], &[("REQ", 12)], &[("OTHER", 3), ("SPACEQ", 0), ("EMPTYQ", 4), ("LATE", 9)]];
        let compose = "services:\n  app:\n    image: busybox\n    volumes:\n      - ./data:/data\n";
        // Validate of web's release `p`: what it read, or its error, the root's path as ROOT.
        let validate = |exec: &dyn NodeExec,
                        l: &Layout,
                        root: &Path,
                        secrets: &[String],
                        variables: &[Required]| {
            let envf = l.env_file("web");
            let log = root.join("logs/web/validate-p.log");
            let log = log.to_str().expect("utf-8");
            let v = remote::ValidateArgs { svc: "web", env_file: &envf, log, secrets, variables };
            let release = root.join("state/releases/web/p");
            let root = root.to_str().expect("utf-8");
            remote::validate(exec, &Carry::default(), release.to_str().expect("utf-8"), &v)
                .map(|r| format!("{r:?}").replace(root, "ROOT"))
                .map_err(|e| e.to_string().replace(root, "ROOT"))
        };
        for env in envs {
            for names in secrets {
                for vars in variables {
                    let secrets: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
                    let variables: Vec<Required> = vars
                        .iter()
                        .map(|(n, line)| Required { name: (*n).to_owned(), line: *line })
                        .collect();
                    let said = t.each(|exec, l, root| {
                        write(root, "config/web/.env", env);
                        write(root, "state/releases/web/p/docker-compose.yml", compose);
                        validate(exec, l, root, &secrets, &variables)
                    });
                    assert_eq!(
                        said[0], said[1],
                        "env {env:?}, secrets {names:?}, variables {vars:?}"
                    );
                    if *env == envs[1] && names.is_empty() && vars.is_empty() {
                        let read = said[1].as_ref().expect("valid");
                        assert!(read.contains("\"app\"") && read.contains("/data"), "{read}");
                    }
                }
            }
        }
        // A compose file Compose refuses: its words, as the script passes them on.
        let said = t.each(|exec, l, root| {
            write(root, "config/web/.env", "TOKEN=value\n");
            write(root, "state/releases/web/p/docker-compose.yml", "services: [not, a, map]\n");
            validate(exec, l, root, &[], &[])
        });
        assert_eq!(said[0], said[1]);
        assert!(said[1].as_ref().is_err_and(|e| e.contains("must be a mapping")), "{said:?}");
    }

    /// Files of a job folder (its pid aside: each run has its own).
    fn job_files(root: &Path) -> BTreeMap<String, (char, u32, String)> {
        tree(root).into_iter().filter(|(k, _)| !k.ends_with("/pid")).collect()
    }

    #[test]
    fn a_job_runs_once_and_answers_as_the_job_script_does() {
        use std::time::Duration;
        let t = Twins::new();
        let script =
            "echo \"out $1 $(cat \"$2\" 2>/dev/null)\"; echo err >&2; touch \"$2\"; exit 3";
        let run = |t: &Twins| {
            t.each(|exec, _, root| {
                let marker = root.join("ran");
                let dir = root.join("state/deploy/p/jobs/web/up");
                remote::job(
                    exec,
                    &Carry::default(),
                    dir.to_str().expect("utf-8"),
                    // The tests' program is not homelab: the script runs.
                    (script, "no step of this program"),
                    &["it's $(x)", marker.to_str().expect("utf-8")],
                    Duration::from_secs(20),
                    "a step",
                )
                .map_err(|e| e.to_string().replace(root.to_str().expect("utf-8"), "ROOT"))
            })
        };
        let first = run(&t);
        assert_eq!(first[0], first[1]);
        assert!(
            first[1].as_ref().is_err_and(|e| e.contains("exit 3") && e.contains("err")),
            "{first:?}"
        );
        let [a, b] = [0, 1].map(|i| job_files(&t.roots[i]));
        assert_eq!(a, b);
        assert_eq!(a["state/deploy/p/jobs/web/up"].1, 0o700);
        assert_eq!(a["state/deploy/p/jobs/web/up/out"].2, "out it's $(x) \n");
        // Finished: its result again, the step not run again (the marker would show).
        assert_eq!(run(&t), first);
        // Its process gone without a result (the node rebooted): started again.
        t.each(|_, _, root| {
            let dir = root.join("state/deploy/p/jobs/web/up");
            std::fs::remove_file(dir.join("rc")).expect("rm");
            std::fs::write(dir.join("pid"), "999999999\n").expect("pid");
        });
        let again = run(&t);
        assert_eq!(again[0], again[1]);
        let [a, b] = [0, 1].map(|i| job_files(&t.roots[i]));
        assert_eq!(a, b);
        assert!(a["state/deploy/p/jobs/web/up/out"].2.starts_with("out it's $(x) "), "{a:?}");
    }

    /// The watchdog armed in process stands down as the script's does: a deploy no longer
    /// live is `superseded`, with nothing rolled back.
    #[test]
    fn a_watchdog_armed_in_process_decides_as_the_armed_script_does() {
        use std::time::{Duration, Instant};
        let t = Twins::new();
        t.each(|exec, l, root| {
            let dm = root.join("state/deploy/p/jobs/web/deadman");
            let up = root.join("state/deploy/p/jobs/web/up");
            write(&up, "rc", "0\n");
            write(root, "state/releases/web/old/f", "old");
            std::fs::create_dir_all(root.join("state/services")).expect("mkdir");
            symlink(root.join("state/releases/web/old"), l.live("web")).expect("link");
            let args: Vec<String> = [
                up.to_str().expect("utf-8"),
                "1",
                &l.events_root(),
                "alpha",
                "{\"time\":\"__TIME__\"}",
                &l.live("web"),
                &format!("{}/p", l.releases("web")),
                "touch \"$1\"",
                root.join("rolled").to_str().expect("utf-8"),
            ]
            .map(str::to_owned)
            .to_vec();
            let dm = dm.to_str().expect("utf-8");
            if exec.on_this_machine() {
                super::arm(remote::WATCHDOG, dm, &args, "unix:///nonexistent.sock").expect("armed");
            } else {
                let mut argv = vec!["sh".to_owned(), "-c".to_owned(), remote::ARM.to_owned()];
                argv.extend(["homelab".to_owned(), dm.to_owned()]);
                argv.extend(args[..8].iter().cloned());
                argv.push("1".to_owned());
                argv.extend(args[8..].iter().cloned());
                let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
                let out = exec.run(&argv, b"", Duration::from_secs(20)).expect("ran");
                assert!(out.success(), "{}", out.stderr_text());
            }
        });
        let began = Instant::now();
        let decided = |i: usize| {
            t.roots[i].join("state/deploy/p/jobs/web/deadman/decided/superseded").exists()
        };
        while !(decided(0) && decided(1)) {
            assert!(began.elapsed() < Duration::from_secs(30), "no decision");
            std::thread::sleep(Duration::from_millis(100));
        }
        let [a, b] = [0, 1].map(|i| job_files(&t.roots[i]));
        assert_eq!(a, b);
        assert_eq!(a["state/deploy/p/jobs/web/deadman"].1, 0o700);
        assert!(!t.roots[1].join("rolled").exists() && !t.roots[0].join("rolled").exists());
    }

    type Entry = (char, u32, String);
    type Tree = BTreeMap<String, Entry>;

    /// `text` with the first `key` and the UTC time after it (`YYYY-MM-DDTHH:MM:SSZ`) as
    /// `mask`: a moment each way writes on its own.
    fn stamp_masked(text: String, key: &str, mask: &str) -> String {
        match text.find(key) {
            Some(at) => format!("{}{mask}{}", &text[..at], &text[at + key.len() + 20..]),
            None => text,
        }
    }

    /// The entries of two trees that differ, both sides, for an assertion's message.
    fn differing<'a>(
        a: &'a Tree,
        b: &'a Tree,
    ) -> Vec<(&'a String, Option<&'a Entry>, Option<&'a Entry>)> {
        a.keys()
            .chain(b.keys())
            .filter(|k| a.get(*k) != b.get(*k))
            .map(|k| (k, a.get(k), b.get(k)))
            .collect()
    }

    /// The trees of the script's root and the native one alike but for the moment of writing
    /// (a watched set's `since`, an adopted folder's name); an archive compared by its list.
    fn alike(roots: &[PathBuf; 2]) -> Tree {
        let [a, b] = [0, 1].map(|i| {
            tree(&roots[i])
                .into_iter()
                .map(|(k, (kind, mode, body))| {
                    let k = match k.find("adopted-") {
                        Some(at) => format!(
                            "{}adopted-N{}",
                            &k[..at],
                            &k[at + 8..].trim_start_matches(|c: char| c.is_ascii_digit())
                        ),
                        None => k,
                    };
                    // An archive's bytes carry its files' times: its list is compared.
                    let body = if k.ends_with(".tgz") {
                        let o = std::process::Command::new("tar")
                            .arg("-tzvf")
                            .arg(roots[i].join(&k))
                            .output()
                            .expect("tar");
                        let mut l: Vec<String> = String::from_utf8_lossy(&o.stdout)
                            .lines()
                            .map(|l| {
                                let w: Vec<&str> = l.split_whitespace().collect();
                                format!("{} {} {}", w[0], w[2], w[5..].join(" "))
                            })
                            .collect();
                        l.sort();
                        l.join("\n")
                    } else {
                        body
                    };
                    (k, (kind, mode, stamp_masked(body, "\"since\":\"", "SINCE")))
                })
                .collect::<BTreeMap<_, _>>()
        });
        let differ = differing(&a, &b);
        assert!(differ.is_empty(), "the script's tree, then the native one: {differ:?}");
        a
    }

    /// A `docker` for the deploy job's twins: it records `$PWD|ARGS` in `ROOT/docker.log` and
    /// answers as the files under `ROOT/docker/` say (volumes, running containers, networks
    /// that exist, networks whose creation fails, a failing `up`).
    const DOCKER: &str = r#"#!/bin/sh
d=__ROOT__/docker
printf '%s|%s\n' "$PWD" "$*" >> __ROOT__/docker.log
case "$1 $2" in
  "volume ls") cat "$d/volumes" 2>/dev/null ;;
  "volume inspect") echo "__ROOT__/volumes/$5" ;;
  "ps -q") cat "$d/running" 2>/dev/null ;;
  "ps -aq") cat "$d/running" 2>/dev/null ;;
  "network inspect") [ -e "$d/net-$4" ] ;;
  "network create")
    if [ -e "$d/refuse-$4" ]; then printf 'one\ntwo\nthree\nfour\nfive\nsix: %s refused\n\n' "$4"; exit 1; fi
    : > "$d/net-$4" ;;
  "compose -p")
    case " $* " in *" up "*)
      if [ -e "$d/fail-up" ]; then i=0; while [ $i -lt 25 ]; do echo "line $i token=$(cat "$d/secret")"; i=$((i+1)); done; exit 3; fi
      echo started ;;
    esac
    case " $* " in *" down "*)
      if [ -e "$d/fail-down" ]; then echo "removing network: token=$(cat "$d/secret") in use" >&2; exit 1; fi
      echo "stopped" ;;
    esac ;;
esac
"#;

    /// Twin roots (`script`, `native`) for a job's differential test, each with the recording
    /// `docker` (`DOCKER`) in `bin/`, its secret, and web's env file holding it.
    fn job_roots() -> (tempfile::TempDir, [PathBuf; 2]) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let roots = [dir.path().join("script"), dir.path().join("native")];
        for r in &roots {
            let rs = r.to_str().expect("utf-8");
            write(r, "bin/docker", &DOCKER.replace("__ROOT__", rs));
            std::fs::set_permissions(r.join("bin/docker"), std::fs::Permissions::from_mode(0o755))
                .expect("chmod");
            write(r, "docker/secret", "s3cr3t-value");
            write(r, "config/web/.env", "TOKEN=s3cr3t-value\n");
        }
        (dir, roots)
    }

    /// A job's step on root `r`: `sh -c SCRIPT homelab ARGS` with the root's `bin/` first on
    /// `PATH`, or this program's step (`native`, given the root's `docker`); (status, stdout,
    /// stderr) with the root's path read as `ROOT`.
    fn job_step(
        r: &Path,
        script: Option<&str>,
        args: &[String],
        native: impl FnOnce(&Path, &mut Vec<u8>, &mut Vec<u8>) -> i32,
    ) -> (i32, String, String) {
        let (code, out, err) = match script {
            Some(script) => {
                let path = format!(
                    "{}:{}",
                    r.join("bin").display(),
                    std::env::var("PATH").unwrap_or_default()
                );
                let o = std::process::Command::new("sh")
                    .arg("-c")
                    .arg(script)
                    .arg("homelab")
                    .args(args)
                    .env("PATH", path)
                    .stdin(std::process::Stdio::null())
                    .output()
                    .expect("sh");
                (o.status.code().unwrap_or(-1), o.stdout, o.stderr)
            }
            None => {
                let (mut out, mut err) = (Vec::new(), Vec::new());
                let code = native(&r.join("bin/docker"), &mut out, &mut err);
                (code, out, err)
            }
        };
        let rs = r.to_str().expect("utf-8");
        let text = |b: Vec<u8>| String::from_utf8_lossy(&b).replace(rs, "ROOT");
        (code, text(out), text(err))
    }

    /// A service's removal done by this program (`switch::down`) leaves the node as the
    /// `DOWN_AND_UNLINK` script leaves it, and answers as it does: a live release taken down
    /// and unlinked; a snapshot first; a `down` that fails, its end redacted, the link kept;
    /// nothing live but a dangling link; a created service rolled back (the snapshot put back
    /// after the link is gone).
    #[test]
    fn a_removal_job_takes_down_and_unlinks_as_the_script_does() {
        use super::super::switch;
        use std::os::unix::fs::symlink;
        let (_dir, roots) = job_roots();
        for r in &roots {
            write(r, "state/releases/web/p1/docker-compose.yml", "services: {}\n");
            write(r, "state/releases/web/p1/docker-compose.override.yml", "services: {}\n");
            write(r, "data/web/a.txt", "alpha");
            write(r, "docker/volumes", "");
            write(r, "docker/running", "");
            std::fs::create_dir_all(r.join("state/services")).expect("mkdir");
            symlink(r.join("state/releases/web/p1"), r.join("state/services/web")).expect("link");
        }
        let both = |data: &[&str]| {
            let [script, native] = [0, 1].map(|i| {
                let r = &roots[i];
                let rs = r.to_str().expect("utf-8");
                let mut a: Vec<String> = vec![
                    "web".into(),
                    format!("{rs}/state/services/web"),
                    format!("{rs}/state/services"),
                    format!("{rs}/config/web/.env"),
                ];
                a.extend(data.iter().map(|d| d.replace("ROOT", rs)));
                let script = (i == 0).then_some(remote::DOWN_AND_UNLINK);
                job_step(r, script, &a, |docker, out, err| {
                    switch::down(&a, &switch::Docker(docker), out, err)
                })
            });
            assert_eq!(script, native, "the script's answer, then the native one");
            native
        };
        let snap = ["snap", "ROOT/state/snapshots/web/SNAP", "-", "0", "ROOT", "1", "data/web"];
        // A snapshot, then `down` fails: the link stays, the end of what it said redacted.
        for r in &roots {
            write(r, "docker/fail-down", "");
        }
        let (code, out, err) = both(&snap);
        assert_eq!(code, 1, "{out}{err}");
        assert!(out.starts_with("hl-data: snapshot SNAP 1 "), "{out}");
        assert_eq!(err, "removing network: token=[redacted] in use\n");
        let t = alike(&roots);
        assert_eq!(t["state/services/web"].2, "ROOT/state/releases/web/p1");
        // Then it goes: taken down in the live release, unlinked; the snapshot kept.
        for r in &roots {
            std::fs::remove_file(r.join("docker/fail-down")).expect("rm");
        }
        let (code, out, err) = both(&snap);
        assert_eq!((code, err.as_str()), (0, ""), "{out}");
        assert!(out.starts_with("hl-data: snapshot SNAP 1 0"), "{out}");
        let t = alike(&roots);
        assert!(!t.contains_key("state/services/web"), "{t:?}");
        assert!(t["docker.log"].2.contains(
            "ROOT/state/services/web|compose -p web -f docker-compose.yml -f docker-compose.override.yml --env-file ROOT/config/web/.env down --remove-orphans"
        ), "{t:?}");
        // A created service rolled back: a dangling link only removed (no `down`), then the
        // snapshot put back (the project stopped first).
        for r in &roots {
            write(r, "data/web/a.txt", "changed");
            write(r, "data/web/new.txt", "new");
            symlink(r.join("state/releases/web/gone"), r.join("state/services/web")).expect("ln");
            std::fs::remove_file(r.join("docker.log")).expect("rm");
        }
        let restore = ["restore", "ROOT/state/snapshots/web/SNAP", "-", "0", "ROOT", "0"];
        let (code, out, _) = both(&restore);
        assert_eq!(code, 0, "{out}");
        assert_eq!(out, "hl-data: restored SNAP 1\n");
        let t = alike(&roots);
        assert_eq!(t["data/web/a.txt"].2, "alpha");
        assert!(!t.contains_key("data/web/new.txt") && !t.contains_key("state/services/web"));
        assert!(!t["docker.log"].2.contains(" down "), "{t:?}");
        // Nothing there at all, no data: nothing to do, and it says nothing.
        assert_eq!(both(&["-"]), (0, String::new(), String::new()));
        // A live folder deployed by hand (not a link) is not removed: said as `rm` says it.
        for r in &roots {
            write(r, "state/services/web/docker-compose.yml", "services: {}\n");
        }
        let (code, _, err) = both(&["-"]);
        assert_eq!(code, 1);
        assert!(err.contains("Is a directory"), "{err}");
    }

    /// The deploy's job done by this program (`switch::run`) leaves the node as the
    /// `SWITCH_AND_UP` script leaves it, and answers as it does: a first deploy with folders,
    /// a network and a watched backup set; a snapshot of paths and a volume with the project
    /// stopped, then a failing `up` with its end redacted; the complete snapshot kept on the
    /// next run; a snapshot refused for space; a network whose creation fails; a live folder
    /// deployed by hand adopted.
    #[test]
    fn a_deploy_job_switches_and_starts_as_the_script_does() {
        use super::super::switch;
        use std::os::unix::fs::PermissionsExt;
        let (_dir, roots) = job_roots();
        for r in &roots {
            write(r, "state/releases/web/p1/docker-compose.yml", "services: {}\n");
            write(r, "state/releases/web/p2/docker-compose.yml", "services: {}\n");
            write(r, "state/releases/web/p2/docker-compose.override.yml", "services: {}\n");
        }
        let owner = {
            let m = std::fs::metadata(&roots[0]).expect("stat");
            format!("{}:{}", m.uid(), m.gid())
        };
        // `SWITCH_AND_UP`'s arguments for root `r`: release `rel`, data arguments, folders,
        // networks, watched sets.
        let args = |r: &Path, rel: &str, data: &[&str], nets: &[&str], watched: bool| {
            let r = r.to_str().expect("utf-8");
            let mut a: Vec<String> = [
                "web",
                &format!("{r}/state/releases/web/{rel}"),
                &format!("{r}/state/services/web"),
                &format!("{r}/state/services"),
                &format!("{r}/data/web"),
                &format!("{r}/logs/web"),
                &format!("{r}/state/releases/web"),
                &format!("{r}/config/web/.env"),
                &format!("{r}/logs/web/up-{rel}.log"),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            a.extend(data.iter().map(|d| d.replace("ROOT", r)));
            a.extend(["2".into(), format!("{r}/data/web/db"), owner.clone(), "0750".into()]);
            a.extend([format!("{r}/data/web/cache"), "-".into(), "-".into()]);
            a.push(nets.len().to_string());
            if !nets.is_empty() {
                a.push(format!("{r}/state/deploy/{rel}/networks.lock"));
                a.extend(nets.iter().map(|n| n.to_string()));
            }
            if watched {
                a.extend([
                    "1".into(),
                    format!("{r}/state/backups/web/nightly.json"),
                    "86400".into(),
                ]);
            } else {
                a.push("0".into());
            }
            // What the dead-man adds after its own: ignored.
            a.push("extra".into());
            a
        };
        let now = std::time::SystemTime::now();
        // Both ways, on each root; (status, stdout, stderr) with the root's path as ROOT.
        let both = |rel: &str, data: &[&str], nets: &[&str], watched: bool| {
            [Some(remote::SWITCH_AND_UP), None].map(|script| {
                let r = &roots[usize::from(script.is_none())];
                let a = args(r, rel, data, nets, watched);
                job_step(r, script, &a, |docker, out, err| {
                    switch::run(&a, &switch::Docker(docker), now, out, err)
                })
            })
        };
        let same = || alike(&roots);
        let data = |mode: &str| {
            vec![
                "snap".to_owned(),
                "ROOT/state/snapshots/web/SNAP".to_owned(),
                mode.to_owned(),
                "5".to_owned(),
                "ROOT".to_owned(),
                "3".to_owned(),
                "data/web".to_owned(),
                "data/web.db".to_owned(),
                "data/missing".to_owned(),
            ]
        };

        // A first deploy: no data, a network created, a watched set.
        let said = both("p1", &["-"], &["front", "back"], true);
        assert_eq!(said[0], said[1]);
        assert_eq!(said[1].0, 0, "{said:?}");
        for r in &roots {
            write(r, "docker/net-back", "");
        }
        let t = same();
        assert_eq!(t["state/services/web"].2, "ROOT/state/releases/web/p1");
        assert_eq!(t["data/web/db"].1, 0o750);
        assert_eq!(t["logs/web/up-p1.log"].1, 0o600);
        assert!(t["state/backups/web/nightly.json"].2.contains("\"max_age_secs\":86400"));

        // A snapshot of paths and a volume, the project stopped; then `up` fails.
        for r in &roots {
            write(r, "data/web/a.txt", "alpha");
            write(r, "data/web/sub/b.bin", "beta");
            symlink("a.txt", r.join("data/web/link")).expect("link");
            write(r, "data/web.db", "db");
            write(r, "volumes/vol1/v.txt", "volume data");
            write(r, "docker/volumes", "vol1\n");
            write(r, "docker/running", "c0ffee\n");
            write(r, "docker/fail-up", "");
        }
        let d = data("stop");
        let d: Vec<&str> = d.iter().map(String::as_str).collect();
        let said = both("p2", &d, &[], false);
        assert_eq!(said[0], said[1]);
        assert_eq!(said[1].0, 3, "{said:?}");
        assert!(said[1].1.starts_with("hl-data: snapshot SNAP 3 "), "{said:?}");
        assert!(
            said[1].2.contains("line 24 token=[redacted]") && !said[1].2.contains("line 4 "),
            "{said:?}"
        );
        let t = same();
        assert_eq!(t["state/services/web"].2, "ROOT/state/releases/web/p2");
        assert!(t["state/snapshots/web/SNAP/manifest"].2.contains("absent 0 - ROOT/data/missing"));
        // A folder is copied with reflinks where the file system has them, else archived.
        let holds = |j: &str, name: &str| {
            let snap = "state/snapshots/web/SNAP";
            t.contains_key(&format!("{snap}/{j}/{name}"))
                || t.get(&format!("{snap}/{j}.tgz")).is_some_and(|l| l.2.contains(name))
        };
        assert!(holds("3", "v.txt") && holds("1", "link") && holds("1", "sub/b.bin"), "{t:?}");
        assert_eq!(t["state/snapshots/web/SNAP/2"].2, "db");
        // Run again: the complete snapshot is kept, not taken again.
        let said = both("p2", &d, &[], false);
        assert_eq!(said[0], said[1]);
        assert!(said[1].1.starts_with("hl-data: snapshot SNAP 3 0"), "{said:?}");

        // A rollback: the data changed since is put back from the snapshot (a folder emptied
        // and refilled, a file replaced, what was absent removed again).
        for r in &roots {
            write(r, "data/web/a.txt", "changed");
            write(r, "data/web/new.txt", "new");
            std::fs::remove_file(r.join("data/web.db")).expect("rm");
            write(r, "data/missing/x", "x");
            write(r, "volumes/vol1/v.txt", "changed too");
            std::fs::set_permissions(r.join("data/web"), std::fs::Permissions::from_mode(0o700))
                .expect("chmod");
        }
        let restore = ["restore", "ROOT/state/snapshots/web/SNAP", "live", "0", "ROOT", "0"];
        let said = both("p1", &restore, &[], false);
        assert_eq!(said[0], said[1]);
        assert_eq!(said[1].0, 3, "up still fails: {said:?}");
        assert!(said[1].1.starts_with("hl-data: restored SNAP 3"), "{said:?}");
        let t = same();
        assert_eq!(t["data/web/a.txt"].2, "alpha");
        assert!(!t.contains_key("data/web/new.txt") && !t.contains_key("data/missing/x"), "{t:?}");
        assert_eq!(t["data/web.db"].2, "db");
        assert_eq!(t["data/web"].1, 0o755);
        assert_eq!(t["volumes/vol1/v.txt"].2, "volume data");
        // A restore plan: what is there snapshotted first, then the snapshot put back; one
        // whose snapshot is not complete refused before anything stops.
        for r in &roots {
            write(r, "data/web/a.txt", "third");
            std::fs::remove_file(r.join("docker/fail-up")).expect("rm");
        }
        let recover = |from: &str| {
            let mut d = data("stop");
            d[0] = "recover".to_owned();
            d[1] = d[1].replace("SNAP", "SNAP3");
            d.push(format!("ROOT/state/snapshots/web/{from}"));
            d
        };
        // (data/missing is an emptied folder now: four items to snapshot.)
        let d = recover("SNAP");
        let d: Vec<&str> = d.iter().map(String::as_str).collect();
        let said = both("p2", &d, &[], false);
        assert_eq!(said[0], said[1]);
        assert_eq!(said[1].0, 0, "{said:?}");
        assert!(
            said[1].1.contains("hl-data: snapshot SNAP3 4 ")
                && said[1].1.contains("hl-data: restored SNAP 3"),
            "{said:?}"
        );
        let t = same();
        assert_eq!(t["data/web/a.txt"].2, "alpha");
        let d = recover("NONE");
        let d: Vec<&str> = d.iter().map(String::as_str).collect();
        let said = both("p2", &d, &[], false);
        assert_eq!(said[0], said[1]);
        assert_eq!(said[1].0, remote::SNAPSHOT_REFUSED, "{said:?}");
        for r in &roots {
            write(r, "docker/fail-up", "");
        }

        // Refused for space (nothing stopped or changed); a network Compose cannot create.
        let d = data("live");
        let mut d: Vec<String> = d.into_iter().map(|x| x.replace("SNAP", "SNAP2")).collect();
        d[3] = "100".to_owned();
        let dd: Vec<&str> = d.iter().map(String::as_str).collect();
        let said = both("p1", &dd, &[], false);
        let digits = |s: &str| {
            s.chars().map(|c| if c.is_ascii_digit() { '#' } else { c }).collect::<String>()
        };
        assert_eq!(digits(&format!("{:?}", said[0])), digits(&format!("{:?}", said[1])));
        assert_eq!(said[1].0, remote::SNAPSHOT_REFUSED, "{said:?}");
        assert!(said[1].2.contains("under the node's threshold of 100%"), "{said:?}");
        for r in &roots {
            std::fs::remove_file(r.join("docker/fail-up")).expect("rm");
            write(r, "docker/refuse-bad", "");
        }
        let said = both("p1", &["-"], &["bad"], false);
        assert_eq!(said[0], said[1]);
        assert_eq!(said[1].0, 1, "{said:?}");
        assert!(
            said[1].2.starts_with("two\n") && said[1].2.ends_with("six: bad refused\n"),
            "{said:?}"
        );
        let t = same();
        assert_eq!(t["state/services/web"].2, "ROOT/state/releases/web/p2", "not switched");

        // A live folder deployed by hand: adopted among the releases, then switched.
        for r in &roots {
            std::fs::remove_file(r.join("state/services/web")).expect("rm");
            write(r, "state/services/web/docker-compose.yml", "by hand");
        }
        let said = both("p1", &["-"], &[], false);
        assert_eq!(said[0], said[1]);
        assert_eq!(said[1].0, 0, "{said:?}");
        let t = same();
        assert_eq!(t["state/releases/web/adopted-N/docker-compose.yml"].2, "by hand");
        let logs = [0, 1].map(|i| {
            std::fs::read_to_string(roots[i].join("docker.log"))
                .expect("log")
                .replace(roots[i].to_str().expect("utf-8"), "ROOT")
        });
        assert_eq!(logs[0], logs[1], "the same Docker calls");
        assert!(
            logs[1].contains("|stop c0ffee\n")
                && logs[1].contains("-f docker-compose.override.yml --env-file"),
            "{}",
            logs[1]
        );
    }

    /// The watchdog as this program (`deadman::watch`) decides and acts as the `WATCHDOG`
    /// script does, on twin trees, each case both ways at once: a good `up` not confirmed in
    /// its window rolled back, the previous release's healthcheck passing (run in the live
    /// link with the script's environment) or failing its three tries; a rollback that fails
    /// told as `remediation_failed`; a failed `up` stood down from; a deploy no longer live
    /// `superseded`; a deploy already confirmed left alone.
    #[test]
    fn a_watchdog_decides_and_rolls_back_as_the_watchdog_script_does() {
        use super::super::deadman;
        let dir = tempfile::tempdir().expect("tempdir");
        // (name, the up job's rc, live points at the deploy, confirmed, rollback's exit, health's exit)
        let cases: &[(&str, &str, bool, bool, u8, u8)] = &[
            ("rolled", "0\n", true, false, 0, 0),
            ("unhealthy", "0\n", true, false, 0, 1),
            ("failed", "0\n", true, false, 3, 0),
            ("stood-down", "1\n", true, false, 0, 0),
            ("superseded", "0\n", false, false, 0, 0),
            ("confirmed", "0\n", true, true, 0, 0),
        ];
        let now = std::time::SystemTime::now();
        let mut runs = Vec::new();
        for (name, rc, is_live, confirmed, rollback, health) in cases {
            for way in ["script", "native"] {
                let root = dir.path().join(name).join(way);
                let r = root.to_str().expect("utf-8").to_owned();
                write(&root, "up/rc", rc);
                std::fs::create_dir_all(root.join("dm")).expect("dm");
                if *confirmed {
                    std::fs::create_dir(root.join("dm/decided")).expect("decided");
                }
                write(&root, "state/releases/web/new/f", "new");
                write(
                    &root,
                    "state/releases/web/old/healthcheck.sh",
                    &format!("echo \"$HOMELAB_ROOT $HOMELAB_NODE $HOMELAB_SERVICE $PWD\"; exit {health}\n"),
                );
                std::fs::create_dir_all(root.join("state/services")).expect("services");
                let target = if *is_live { "new" } else { "old" };
                symlink(
                    root.join("state/releases/web").join(target),
                    root.join("state/services/web"),
                )
                .expect("link");
                let args: Vec<String> = [
                    format!("{r}/dm"),
                    format!("{r}/up"),
                    "1".to_owned(),
                    format!("{r}/events"),
                    "alpha".to_owned(),
                    "{\"time\":\"__TIME__\",\"event\":\"remediation_completed\"}".to_owned(),
                    format!("{r}/state/services/web"),
                    format!("{r}/state/releases/web/new"),
                    "rm -f \"$2\"; ln -s \"$1\" \"$2\"; echo rolled \"$@\"; exit $3".to_owned(),
                    format!("{r}/state/releases/web/old"),
                    format!("{r}/state/services/web"),
                    rollback.to_string(),
                ]
                .to_vec();
                runs.push(std::thread::spawn(move || {
                    if way == "script" {
                        let status = std::process::Command::new("sh")
                            .arg("-c")
                            .arg(remote::WATCHDOG)
                            .arg("homelab-deadman")
                            .args(&args)
                            .stdin(std::process::Stdio::null())
                            .status()
                            .expect("sh");
                        assert!(status.success() || status.code() == Some(0), "{status:?}");
                    } else {
                        deadman::watch(&args, &|| now).expect("watched");
                    }
                }));
            }
        }
        for run in runs {
            run.join().expect("ran");
        }
        for (name, _, _, _, rollback, health) in cases {
            let [a, b] = ["script", "native"].map(|way| {
                let root = dir.path().join(name).join(way);
                tree(&root)
                    .into_iter()
                    .filter(|(k, _)| k != "dm/pid")
                    .map(|(k, (kind, mode, body))| {
                        (k, (kind, mode, stamp_masked(body, "\"time\":\"", "TIME")))
                    })
                    .collect::<BTreeMap<_, _>>()
            });
            let differ = differing(&a, &b);
            assert!(differ.is_empty(), "{name}: the script's, then the native: {differ:?}");
            let decision: Vec<&String> =
                a.keys().filter(|k| k.starts_with("dm/decided/")).collect();
            match *name {
                "rolled" | "unhealthy" | "failed" => {
                    assert_eq!(decision, ["dm/decided/rolled-back"], "{name}");
                    assert_eq!(a["state/services/web"].2, "ROOT/state/releases/web/old");
                    assert_eq!(a["dm/rollback.rc"].2, format!("{rollback}\n"));
                    let event = a.iter().find(|(k, _)| k.ends_with("alpha/events.jsonl"));
                    let event = &event.expect("an event").1 .2;
                    assert_eq!(event.contains("remediation_failed"), *rollback != 0, "{event}");
                }
                "superseded" => assert_eq!(decision, ["dm/decided/superseded"]),
                _ => assert!(decision.is_empty() && !a.contains_key("dm/rollback.rc"), "{name}"),
            }
            if *name == "rolled" || *name == "unhealthy" {
                let said = if *health == 0 { "ok\n" } else { "failed\n" };
                assert_eq!(a["dm/rollback.health"].2, said, "{name}");
                assert_eq!(
                    a["dm/rollback-health.log"].2, "ROOT alpha web ROOT/state/services/web\n",
                    "{name}"
                );
            }
        }
    }
}
