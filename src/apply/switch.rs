//! A deploy's detached job (`remote`'s `SWITCH_AND_UP`), done by this program rather than by
//! some thirty short shell processes: `homelab node job --dir DIR switch-and-up -- ARGS` is
//! started in its own session by the node's engine, outlives it as the script's job does, and
//! leaves the same job folder (`pid`, `out`, `err`, then `rc`, synced and renamed last).
//!
//! It takes the script's own arguments (`remote::switch_and_up`'s `up_args`) and does what
//! the script does, in its order: the data snapshot before the change (`hl_snapshot`), the
//! contract's folders, the external networks (one service at a time under the apply's lock),
//! the watched backup sets' first records, the live link switched by one rename, and
//! `docker compose up` with its output in the step's log (0600) and the end of it, redacted,
//! on stderr. What stays a process is what moves data or talks to Docker: `docker`, `cp -a`
//! and `tar` for the snapshot's copies, `chown -R` and `chmod` when a folder's owner or mode
//! differs. Every data mode is here: the snapshot before a change, a rollback's restore of it,
//! a restore plan's snapshot then restore. The differential test in `native::tests` holds it
//! to the script.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::SystemTime;

use super::native::{
    at, compose_command, parent, private_log, redact, remove_all, shell_status, strip_newlines,
    sync_dir, syncfs, tail_lines, SYNC_ONE_BY_ONE,
};

/// The step's name on `homelab node job`'s command line.
pub const STEP: &str = "switch-and-up";

/// A snapshot before the change (`hl_data snap ...`).
#[derive(Debug)]
struct Snapshot {
    dir: String,
    stop: bool,
    min_free: i64,
    data_root: String,
    paths: Vec<String>,
}

/// What is done with the service's data before anything else (`hl_data`).
#[derive(Debug)]
enum Data {
    Keep,
    Snapshot(Snapshot),
    /// Put back the snapshot in this folder (a rollback).
    Restore(String),
    /// A restore plan: snapshot what is there, then put back the snapshot in `from`.
    Recover(Snapshot, String),
}

/// `SWITCH_AND_UP`'s arguments, read.
#[derive(Debug)]
struct Args {
    svc: String,
    release: String,
    live: String,
    services: String,
    data: String,
    logs: String,
    releases: String,
    env_file: String,
    log: String,
    /// What is done with the data first.
    before: Data,
    /// Path, owner (`UID:GID` or `-`), mode (or `-`).
    folders: Vec<(String, String, String)>,
    /// The lock of the apply's network creation, and the networks.
    networks: Option<(String, Vec<String>)>,
    /// A backup set's record, and its max age in seconds.
    watched: Vec<(String, String)>,
}

/// `hl_data`'s arguments: what is done with the service's data (`-`, `snap`, `restore` or
/// `recover`, then the snapshot's).
fn read_data(next: &mut dyn FnMut(&str) -> Result<String, String>) -> Result<Data, String> {
    let count = |v: String| v.parse::<usize>().map_err(|_| format!("not a count: {v:?}"));
    let snapshot = |next: &mut dyn FnMut(&str) -> Result<String, String>| {
        let dir = next("snapshot")?;
        let stop = next("stop")? == "stop";
        let min = next("min free")?;
        let min_free = min.parse().map_err(|_| format!("not a number: {min:?}"))?;
        let data_root = next("data root")?;
        let n = count(next("paths")?)?;
        let paths = (0..n).map(|_| next("path")).collect::<Result<_, _>>()?;
        Ok::<_, String>(Snapshot { dir, stop, min_free, data_root, paths })
    };
    Ok(match next("data mode")?.as_str() {
        "-" => Data::Keep,
        "snap" => Data::Snapshot(snapshot(next)?),
        "restore" => Data::Restore(snapshot(next)?.dir),
        "recover" => {
            let s = snapshot(next)?;
            Data::Recover(s, next("snapshot to restore")?)
        }
        other => return Err(format!("no data mode {other:?}")),
    })
}

fn read_args(args: &[String]) -> Result<Args, String> {
    let mut it = args.iter().cloned();
    let mut next = |what: &str| it.next().ok_or_else(|| format!("missing argument: {what}"));
    let [svc, release, live, services, data, logs, releases, env_file, log] =
        ["service", "release", "live", "services", "data", "logs", "releases", "env file", "log"]
            .map(&mut next);
    let count = |v: String| v.parse::<usize>().map_err(|_| format!("not a count: {v:?}"));
    let before = read_data(&mut next)?;
    let k = count(next("folders").unwrap_or_else(|_| "0".to_owned()))?;
    let folders = (0..k)
        .map(|_| Ok((next("folder")?, next("owner")?, next("mode")?)))
        .collect::<Result<_, String>>()?;
    let j = count(next("networks").unwrap_or_else(|_| "0".to_owned()))?;
    let networks = if j > 0 {
        let lock = next("network lock")?;
        Some((lock, (0..j).map(|_| next("network")).collect::<Result<_, _>>()?))
    } else {
        None
    };
    let w = count(next("watched").unwrap_or_else(|_| "0".to_owned()))?;
    let watched =
        (0..w).map(|_| Ok((next("record")?, next("max age")?))).collect::<Result<_, String>>()?;
    Ok(Args {
        svc: svc?,
        release: release?,
        live: live?,
        services: services?,
        data: data?,
        logs: logs?,
        releases: releases?,
        env_file: env_file?,
        log: log?,
        before,
        folders,
        networks,
        watched,
    })
}

/// `docker` for the step: the program's path (`docker`, found on `PATH`, outside the tests).
pub struct Docker<'a>(pub &'a Path);

impl Docker<'_> {
    fn cmd(&self) -> Command {
        let mut c = Command::new(self.0);
        c.stdin(Stdio::null());
        c
    }

    /// `$(docker ARGS)`: its stdout when it succeeded (its stderr passes on).
    fn output(&self, args: &[&str]) -> io::Result<Option<String>> {
        let out = self.cmd().args(args).stderr(Stdio::inherit()).output()?;
        Ok(out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
    }

    /// Whether `docker ARGS` succeeded, its output dropped.
    fn quiet(&self, args: &[&str]) -> io::Result<bool> {
        let status = self.cmd().args(args).stdout(Stdio::null()).stderr(Stdio::null()).status()?;
        Ok(status.success())
    }
}

/// How the step ended: the script's exit status, its message on stderr.
struct Exit(i32, String);

impl From<io::Error> for Exit {
    /// A command of the script that failed under `set -e`.
    fn from(e: io::Error) -> Exit {
        Exit(1, format!("homelab: {e}\n"))
    }
}

/// The step: what it prints (`hl-data: ...`) goes to `out`, its messages to `err` (the job's
/// files, where the step's children also write). Its exit status, as the script's.
pub fn run(
    args: &[String],
    docker: &Docker<'_>,
    now: SystemTime,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let a = match read_args(args) {
        Ok(a) => a,
        Err(e) => {
            let _ = writeln!(err, "homelab node job {STEP}: {e}");
            return 2;
        }
    };
    match step(&a, docker, now, out) {
        Ok(()) => 0,
        Err(Exit(code, message)) => {
            let _ = err.write_all(message.as_bytes());
            code
        }
    }
}

fn step(a: &Args, docker: &Docker<'_>, now: SystemTime, out: &mut dyn Write) -> Result<(), Exit> {
    match &a.before {
        Data::Keep => {}
        Data::Snapshot(s) => snapshot(&a.svc, s, docker, out)?,
        Data::Restore(dir) => restore(&a.svc, Path::new(dir), docker, out)?,
        Data::Recover(s, from) => {
            // Checked before anything stops; then the data it replaces is snapshotted (a
            // failed restore rolls back to it).
            let from = Path::new(from);
            if !from.join("complete").is_file() {
                return Err(Exit(
                    super::native::SNAPSHOT_REFUSED,
                    format!(
                        "no complete snapshot at {} on the node: nothing was stopped or changed\n",
                        from.display()
                    ),
                ));
            }
            snapshot(&a.svc, s, docker, out)?;
            if let Err(Exit(_, said)) = restore(&a.svc, from, docker, out) {
                let id =
                    from.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                return Err(Exit(
                    RESTORE_FAILED,
                    format!("{said}restoring {}'s data from {id} failed\n", a.svc),
                ));
            }
        }
    }
    for d in [&a.services, &a.data, &a.logs] {
        fs::create_dir_all(d).map_err(at(Path::new(d)))?;
    }
    for (f, owner, mode) in &a.folders {
        let path = Path::new(f);
        fs::create_dir_all(path).map_err(at(path))?;
        if owner != "-" {
            let m = fs::symlink_metadata(path).map_err(at(path))?;
            if format!("{}:{}", m.uid(), m.gid()) != *owner {
                run_tool(Command::new("chown").args(["-R", "--", owner, f]))?;
            }
        }
        if mode != "-" {
            chmod(mode, path)?;
        }
    }
    if let Some((lock, networks)) = &a.networks {
        // Services of one apply come up side by side: one of them creates a network at a
        // time, or two `network create` at once could make two networks of one name.
        let lock = Path::new(lock);
        fs::create_dir_all(parent(lock)).map_err(at(parent(lock)))?;
        let file = fs::OpenOptions::new().create(true).append(true).open(lock).map_err(at(lock))?;
        let _held = crate::files::Flock::exclusive(&file).map_err(at(lock))?;
        for net in networks {
            if docker.quiet(&["network", "inspect", "--", net])? {
                continue;
            }
            let said = docker.cmd().args(["network", "create", "--", net]).output()?;
            if !said.status.success() {
                let mut text = format!("cannot create the Docker network {net}: ").into_bytes();
                text.extend_from_slice(strip_newlines(&[said.stdout, said.stderr].concat()));
                text.push(b'\n');
                return Err(Exit(1, String::from_utf8_lossy(&tail_lines(&text, 5)).into_owned()));
            }
        }
    }
    // The critical backup sets the stability agent watches: a set with no backup record yet
    // gets one that counts from now, so a set never backed up is reported once past its max_age.
    for (record, max_age) in &a.watched {
        let r = Path::new(record);
        if r.exists() {
            continue;
        }
        fs::create_dir_all(parent(r)).map_err(at(parent(r)))?;
        let tmp = PathBuf::from(format!("{record}.tmp"));
        let since = humantime::format_rfc3339_seconds(now);
        let text = format!(
            "{{\"time\":null,\"since\":\"{since}\",\"critical\":true,\"max_age_secs\":{max_age}}}\n"
        );
        fs::write(&tmp, text).map_err(at(&tmp))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)).map_err(at(&tmp))?;
        fs::rename(&tmp, r).map_err(at(r))?;
    }
    let live = Path::new(&a.live);
    if fs::symlink_metadata(live).is_ok_and(|m| m.is_dir()) {
        // Deployed by hand: kept among the releases.
        fs::create_dir_all(&a.releases).map_err(at(Path::new(&a.releases)))?;
        let secs = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let to = Path::new(&a.releases).join(format!("adopted-{secs}"));
        fs::rename(live, &to).map_err(at(&to))?;
    }
    let new = PathBuf::from(format!("{}.new", a.live));
    remove_all(&new)?;
    std::os::unix::fs::symlink(&a.release, &new).map_err(at(&new))?;
    fs::rename(&new, live).map_err(at(live))?;
    sync_dir(Path::new(&a.services)).map_err(at(Path::new(&a.services)))?;
    // `--build`: a release that builds its image builds it again here (from the cache when
    // validate just built it); a rollback thereby restores the previous release's image under
    // its tag, which the failed release's build had taken.
    let log = Path::new(&a.log);
    let file = private_log(log)?;
    // In the live link, `PWD` naming it: Compose's project folder is the link.
    let mut cmd = compose_command(docker.0, &a.svc, live, &a.env_file);
    cmd.args(["up", "-d", "--build", "--remove-orphans", "--force-recreate"]);
    let status = cmd.stdin(Stdio::null()).stdout(file.try_clone()?).stderr(file).status()?;
    if status.success() {
        return Ok(());
    }
    let said = redact(Path::new(&a.env_file), &tail_lines(&fs::read(log).map_err(at(log))?, 20));
    Err(Exit(shell_status(status), String::from_utf8_lossy(&said).into_owned()))
}

/// The step's name for taking a service away (`remote`'s `DOWN_AND_UNLINK`).
pub const DOWN: &str = "down-and-unlink";

/// `DOWN_AND_UNLINK`: a snapshot first when the data says so, the project taken down in its
/// live release (`docker compose down --remove-orphans`, the end of what it said redacted on
/// stderr when it fails), the live link removed and its folder synced, then the snapshot put
/// back when the data says so (a created service rolled back). Its arguments: the service,
/// the live link, the services folder, the env file, then `hl_data`'s. Its exit status, as
/// the script's.
pub fn down(args: &[String], docker: &Docker<'_>, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let read = || {
        let mut it = args.iter().cloned();
        let mut next = |what: &str| it.next().ok_or_else(|| format!("missing argument: {what}"));
        let [svc, live, services, env_file] =
            ["service", "live", "services", "env file"].map(&mut next);
        let data = if args.len() > 4 { read_data(&mut next)? } else { Data::Keep };
        Ok::<_, String>((svc?, live?, services?, env_file?, data))
    };
    let (svc, live, services, env_file, data) = match read() {
        Ok(a) => a,
        Err(e) => {
            let _ = writeln!(err, "homelab node job {DOWN}: {e}");
            return 2;
        }
    };
    let mut step = || -> Result<(), Exit> {
        if let Data::Snapshot(s) = &data {
            snapshot(&svc, s, docker, out)?;
        }
        let live_path = Path::new(&live);
        // `[ -e "$live" ]`: through the link; a link to nothing is only removed.
        if live_path.exists() {
            if !live_path.is_dir() {
                return Err(Exit(2, format!("cd: can't cd to {live}\n")));
            }
            let mut cmd = compose_command(docker.0, &svc, live_path, &env_file);
            cmd.args(["down", "--remove-orphans"]);
            let far = std::time::Instant::now() + std::time::Duration::from_secs(365 * 86400);
            let (status, said) =
                super::native::captured(cmd, true, far)?.ok_or_else(|| Exit(1, String::new()))?;
            if !status.success() {
                let mut said = strip_newlines(&said).to_vec();
                said.push(b'\n');
                let said = redact(Path::new(&env_file), &tail_lines(&said, 20));
                return Err(Exit(1, String::from_utf8_lossy(&said).into_owned()));
            }
        }
        match fs::symlink_metadata(live_path) {
            Ok(m) if m.is_dir() => {
                return Err(Exit(1, format!("rm: cannot remove '{live}': Is a directory\n")))
            }
            Ok(_) => fs::remove_file(live_path).map_err(at(live_path))?,
            Err(_) => {}
        }
        let _ = sync_dir(Path::new(&services));
        if let Data::Restore(dir) = &data {
            restore(&svc, Path::new(dir), docker, out)?;
        }
        Ok(())
    };
    match step() {
        Ok(()) => 0,
        Err(Exit(code, message)) => {
            let _ = err.write_all(message.as_bytes());
            code
        }
    }
}

/// `chmod -- MODE PATH`, unless the path already has that (octal) mode: GNU chmod keeps a
/// folder's set-group-ID bit under a numeric mode, which a plain chmod(2) would not.
fn chmod(mode: &str, path: &Path) -> Result<(), Exit> {
    let same = u32::from_str_radix(mode, 8)
        .ok()
        .is_some_and(|want| fs::metadata(path).is_ok_and(|m| m.mode() & 0o7777 == want));
    if same {
        return Ok(());
    }
    run_tool(Command::new("chmod").args(["--", mode]).arg(path))
}

/// A tool the script runs under `set -e`: its failure ends the step with its status.
fn run_tool(cmd: &mut Command) -> Result<(), Exit> {
    let status = cmd.stdin(Stdio::null()).status()?;
    if status.success() {
        Ok(())
    } else {
        Err(Exit(shell_status(status), String::new()))
    }
}

/// `du -sk`: the disk usage of a path in KiB, rounded up, each file counted once.
fn disk_usage_kib(path: &Path) -> u64 {
    let mut seen = std::collections::HashSet::new();
    let mut blocks = 0u64;
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(m) = fs::symlink_metadata(&p) else { continue };
        if m.nlink() > 1 && !m.is_dir() && !seen.insert((m.dev(), m.ino())) {
            continue;
        }
        blocks += m.blocks();
        if m.is_dir() {
            if let Ok(entries) = fs::read_dir(&p) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        }
    }
    (blocks * 512).div_ceil(1024)
}

/// `stat -c %u:%g:%a` (the path itself, not what a link points at).
pub(super) fn owner_and_mode(path: &Path) -> io::Result<String> {
    let m = fs::symlink_metadata(path).map_err(at(path))?;
    Ok(format!("{}:{}:{:o}", m.uid(), m.gid(), m.mode() & 0o7777))
}

/// `df -Pk`'s size and free space (KiB) of the file system holding `path`.
fn df_kib(path: &Path) -> Option<(i64, i64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: a NUL-terminated path and a zeroed statvfs the call fills.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let kib = |n: u64| (n as u128 * st.f_frsize as u128).div_ceil(1024) as i64;
    Some((kib(st.f_blocks as u64), kib(st.f_bavail as u64)))
}

/// `hl_snapshot`: the service's data paths and its Compose volumes copied into a new
/// snapshot folder, after checking the disk keeps `min_free`% free; the project stopped
/// first when the contract says so. A complete snapshot of an earlier run is kept.
fn snapshot(svc: &str, s: &Snapshot, docker: &Docker<'_>, out: &mut dyn Write) -> Result<(), Exit> {
    const REFUSED: i32 = super::native::SNAPSHOT_REFUSED;
    let snap = Path::new(&s.dir);
    let id = snap.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if snap.join("complete").is_file() {
        let manifest = fs::read(snap.join("manifest")).unwrap_or_default();
        let items = manifest
            .split(|b| *b == b'\n')
            .filter(|l| l.starts_with(b"path ") || l.starts_with(b"volume "))
            .count();
        writeln!(out, "hl-data: snapshot {id} {items} 0")?;
        return Ok(());
    }
    let tmp = PathBuf::from(format!("{}.tmp", s.dir));
    let refuse = |message: String| {
        let _ = remove_all(&tmp);
        Exit(REFUSED, message)
    };
    let made = remove_all(&tmp)
        .and_then(|()| fs::create_dir_all(parent(snap)).map_err(at(parent(snap))))
        .and_then(|()| fs::create_dir(&tmp).map_err(at(&tmp)))
        .and_then(|()| {
            fs::set_permissions(&tmp, fs::Permissions::from_mode(0o700)).map_err(at(&tmp))
        });
    if let Err(e) = made {
        return Err(Exit(REFUSED, format!("homelab: {e}\n")));
    }
    let mut manifest = String::new();
    let (mut need, mut what, mut i) = (0i64, String::new(), 0usize);
    for p in &s.paths {
        let src = format!("{}/{p}", s.data_root);
        let src_path = Path::new(&src);
        if fs::symlink_metadata(src_path).is_err() {
            manifest.push_str(&format!("absent 0 - {src}\n"));
            continue;
        }
        i += 1;
        let own = owner_and_mode(src_path).map_err(|e| refuse(format!("homelab: {e}\n")))?;
        manifest.push_str(&format!("path {i} {own} {src}\n"));
        let k = disk_usage_kib(src_path) as i64;
        need += k;
        what.push_str(&format!(", {p} {k} KiB"));
    }
    let filter = format!("label=com.docker.compose.project={}", svc);
    let Some(vols) = docker.output(&["volume", "ls", "-q", "--filter", &filter])? else {
        return Err(refuse("docker volume ls failed\n".to_owned()));
    };
    for v in vols.split_whitespace() {
        let Some(mp) = docker.output(&["volume", "inspect", "-f", "{{.Mountpoint}}", v])? else {
            return Err(refuse(String::new()));
        };
        let mp = String::from_utf8_lossy(strip_newlines(mp.as_bytes())).into_owned();
        if !readable(Path::new(&mp)) {
            return Err(refuse(format!("the snapshot cannot read volume {v} at {mp}: the node's homelab user needs root for snapshots\n")));
        }
        i += 1;
        let own = owner_and_mode(Path::new(&mp)).map_err(|e| refuse(format!("homelab: {e}\n")))?;
        manifest.push_str(&format!("volume {i} {own} {v} {mp}\n"));
        let k = disk_usage_kib(Path::new(&mp)) as i64;
        need += k;
        what.push_str(&format!(", volume {v} {k} KiB"));
    }
    let manifest_file = tmp.join("manifest");
    fs::write(&manifest_file, &manifest).map_err(|e| refuse(format!("homelab: {e}\n")))?;
    let Some((total, avail)) = df_kib(&tmp) else {
        return Err(refuse(format!("df found no free space figure for {}\n", tmp.display())));
    };
    let left = avail - need;
    if total > 0 && left * 100 < total * s.min_free {
        let disk = parent(parent(snap)).display();
        return Err(refuse(format!(
            "the snapshot before this change needs {need} KiB ({}); the disk holding {disk} has {avail} KiB free of {total} KiB, so it would leave {}% free, under the node's threshold of {}% (snapshot_min_free in inventory/topology.yaml): nothing was stopped or changed; free space on the node, then apply again\n",
            what.strip_prefix(", ").unwrap_or(&what),
            left * 100 / total,
            s.min_free
        )));
    }
    let mut stopped = false;
    if s.stop {
        if !stop_project(docker, &filter)? {
            return Err(refuse(format!("stopping {} for its snapshot failed\n", svc)));
        }
        stopped = true;
    }
    let mut failed = None;
    for line in manifest.lines() {
        let mut w = line.splitn(4, ' ');
        let (kind, j, _own, rest) = (w.next(), w.next(), w.next(), w.next().unwrap_or(""));
        let src = match kind {
            Some("path") => rest,
            Some("volume") => rest.split_once(' ').map_or("", |(_, mp)| mp),
            _ => continue,
        };
        let j = j.unwrap_or("");
        let to = tmp.join(j);
        let err_file = tmp.join("err");
        let is_dir = fs::symlink_metadata(src).is_ok_and(|m| m.is_dir());
        let copied = if is_dir {
            // `cp --reflink=always` fails where the file system cannot clone: asked only when a
            // clone of one of the folder's files could be made (or it holds none).
            let quiet = may_clone(Path::new(src), &tmp)
                && Command::new("cp")
                    .args(["-a", "--reflink=always", "--", src])
                    .arg(&to)
                    .stdin(Stdio::null())
                    .stderr(Stdio::null())
                    .status()?
                    .success();
            quiet || {
                let _ = remove_all(&to);
                archive(Path::new(src), &tmp.join(format!("{j}.tgz")), &err_file)?
            }
        } else {
            Command::new("cp")
                .args(["-a", "--reflink=auto", "--", src])
                .arg(&to)
                .stdin(Stdio::null())
                .stderr(fs::File::create(&err_file)?)
                .status()?
                .success()
        };
        if !copied {
            let said = fs::read(&err_file).unwrap_or_default();
            let said = String::from_utf8_lossy(&said[..said.len().min(300)]).into_owned();
            failed = Some(format!("{src}: {said}"));
            break;
        }
    }
    if let Some(failed) = failed {
        let _ = remove_all(&tmp);
        if stopped {
            if let Ok(Some(ids)) = docker.output(&["ps", "-aq", "--filter", &filter]) {
                let mut args = vec!["start"];
                args.extend(ids.split_whitespace());
                let _ = docker.quiet(&args);
            }
        }
        return Err(Exit(
            REFUSED,
            format!("the snapshot before this change failed ({failed}): nothing was changed\n"),
        ));
    }
    let sealed = remove_all(&tmp.join("err"))
        .and_then(|()| fs::write(tmp.join("complete"), b"").map_err(at(&tmp)))
        .and_then(|()| sync_snapshot(&tmp))
        .and_then(|()| fs::rename(&tmp, snap).map_err(at(snap)))
        .and_then(|()| sync_dir(parent(snap)).map_err(at(parent(snap))));
    if let Err(e) = sealed {
        return Err(refuse(format!("homelab: {e}\n")));
    }
    writeln!(out, "hl-data: snapshot {id} {i} {need}")?;
    Ok(())
}

/// A snapshot's folder on disk before it is sealed: each of its files and folders synced (the
/// archives, the single files, the folders `cp -a` copied) where they are regular files and
/// folders, up to [`SYNC_ONE_BY_ONE`] of them; else (a larger copy, a link, a device) the file
/// system that holds it (`sync -f`), which on a busy node waits for whatever else is being
/// written (95 ms a sync on average with twenty nodes deploying on one disk, 360 ms at worst).
fn sync_snapshot(tmp: &Path) -> io::Result<()> {
    let Some((files, dirs)) = one_by_one(tmp)? else { return syncfs(tmp) };
    for f in &files {
        fs::File::open(f).and_then(|f| f.sync_all()).map_err(at(f))?;
    }
    dirs.iter().rev().try_for_each(|d| sync_dir(d).map_err(at(d)))
}

/// The files and the folders (`tmp` first) under `tmp` when they are only regular files and
/// folders, at most [`SYNC_ONE_BY_ONE`] of them besides `tmp`; `None` otherwise.
fn one_by_one(tmp: &Path) -> io::Result<Option<(Vec<PathBuf>, Vec<PathBuf>)>> {
    let (mut files, mut dirs) = (Vec::new(), vec![tmp.to_path_buf()]);
    let (mut next, mut entries) = (0, 0);
    while let Some(dir) = dirs.get(next).cloned() {
        next += 1;
        for entry in fs::read_dir(&dir).map_err(at(&dir))? {
            let path = entry.map_err(at(&dir))?.path();
            let kind = fs::symlink_metadata(&path).map_err(at(&path))?.file_type();
            entries += 1;
            if entries > SYNC_ONE_BY_ONE {
                return Ok(None);
            } else if kind.is_dir() {
                dirs.push(path);
            } else if kind.is_file() {
                files.push(path);
            } else {
                return Ok(None);
            }
        }
    }
    Ok(Some((files, dirs)))
}

/// Whether `cp -a --reflink=always` of the folder `src` into `into`'s file system may work: a
/// clone (`FICLONE`) of the first regular file found in it, made beside `into` and removed,
/// succeeds; or it holds no regular file (cp then makes the folder's copy, which clones
/// nothing); or the clone failed for another reason than the file system not cloning (cp is
/// then asked, as ever).
fn may_clone(src: &Path, into: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let Some(file) = first_file(src) else { return true };
    let Ok(from) = fs::File::open(&file) else { return true };
    let probe = into.join(".clone-probe");
    let Ok(to) = fs::File::create(&probe) else { return true };
    // SAFETY: FICLONE between two descriptors we own.
    let cloned = unsafe { libc::ioctl(to.as_raw_fd(), libc::FICLONE, from.as_raw_fd()) } == 0;
    let why = io::Error::last_os_error().raw_os_error();
    drop(to);
    let _ = fs::remove_file(&probe);
    let cannot = [libc::EOPNOTSUPP, libc::EXDEV, libc::EINVAL, libc::ENOTTY, libc::ENOSYS];
    cloned || !why.is_some_and(|e| cannot.contains(&e))
}

/// The first regular file under `dir` (depth first), if any.
fn first_file(dir: &Path) -> Option<PathBuf> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).ok()?.flatten() {
            match e.file_type() {
                Ok(t) if t.is_file() => return Some(e.path()),
                Ok(t) if t.is_dir() => stack.push(e.path()),
                _ => {}
            }
        }
    }
    None
}

/// `tar --xattrs --xattrs-include='*' --numeric-owner -C SRC -czpf TGZ .`, compressed here
/// rather than by the `sh -c gzip` and `gzip` processes tar starts: GNU tar writes the archive
/// (every kind of file, owners, modes, times, xattrs), this process gzips it. Whether it
/// succeeded; tar's complaints (or the write's) in `err_file`.
fn archive(src: &Path, tgz: &Path, err_file: &Path) -> io::Result<bool> {
    use std::io::Read;
    let mut child = Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-C"])
        .arg(src)
        .args(["-cpf", "-", "."])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(fs::File::create(err_file)?)
        .spawn()?;
    let mut stream = child.stdout.take().expect("piped");
    let written = (|| {
        let file = fs::File::create(tgz).map_err(at(tgz))?;
        let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            gz.write_all(&chunk[..n]).map_err(at(tgz))?;
        }
        gz.finish().map_err(at(tgz)).map(drop)
    })();
    // A write that failed leaves tar on a pipe nobody reads: it ends on SIGPIPE.
    drop(stream);
    let status = child.wait()?;
    if let Err(e) = written {
        fs::write(err_file, format!("{e}\n"))?;
        return Ok(false);
    }
    Ok(status.success())
}

/// `hl_stop_project`: the project's running containers (`filter`: its label) stopped; whether
/// that went well.
fn stop_project(docker: &Docker<'_>, filter: &str) -> io::Result<bool> {
    Ok(match docker.output(&["ps", "-q", "--filter", filter])? {
        None => false,
        Some(ids) if ids.split_whitespace().next().is_none() => true,
        Some(ids) => {
            let mut args = vec!["stop"];
            args.extend(ids.split_whitespace());
            docker.cmd().args(&args).stdout(Stdio::null()).status()?.success()
        }
    })
}

/// A restore that failed (the project is stopped; the engine's rollback takes over).
const RESTORE_FAILED: i32 = 72;

/// `hl_restore`: the project stopped, then each item of the snapshot's manifest put back as it
/// was: a folder emptied and filled from its copy or archive, given its owner and mode; a
/// file or link replaced; what was absent removed again. Nothing is done without a complete
/// snapshot.
fn restore(svc: &str, snap: &Path, docker: &Docker<'_>, out: &mut dyn Write) -> Result<(), Exit> {
    let failed = |what: String| Exit(RESTORE_FAILED, what);
    let id = snap.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if !snap.join("complete").is_file() {
        writeln!(out, "hl-data: no snapshot")?;
        return Ok(());
    }
    let filter = format!("label=com.docker.compose.project={}", svc);
    if !stop_project(docker, &filter)? {
        return Err(failed(format!("stopping {} to restore its data failed\n", svc)));
    }
    let manifest = fs::read_to_string(snap.join("manifest")).unwrap_or_default();
    let mut items = 0usize;
    for line in manifest.lines() {
        let mut w = line.splitn(4, ' ');
        let (kind, j, own, rest) =
            (w.next(), w.next().unwrap_or(""), w.next().unwrap_or(""), w.next().unwrap_or(""));
        let dst = match kind {
            Some("absent") => {
                let p = Path::new(rest);
                let emptied = if fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()) {
                    empty(p)
                } else {
                    remove_file_if_any(p)
                };
                emptied.map_err(|e| failed(format!("homelab: {e}\n")))?;
                continue;
            }
            Some("path") => rest,
            Some("volume") => rest.split_once(' ').map_or("", |(_, mp)| mp),
            _ => continue,
        };
        items += 1;
        let dst_path = Path::new(dst);
        let copy = snap.join(j);
        let tgz = snap.join(format!("{j}.tgz"));
        let copy_is_dir = fs::symlink_metadata(&copy).is_ok_and(|m| m.is_dir());
        if copy_is_dir || tgz.is_file() {
            let m = fs::symlink_metadata(dst_path);
            if m.as_ref().is_ok_and(|m| m.file_type().is_symlink()) || m.is_ok_and(|m| !m.is_dir())
            {
                remove_file_if_any(dst_path).map_err(|e| failed(format!("homelab: {e}\n")))?;
            }
            if !dst_path.is_dir() {
                fs::create_dir_all(dst_path).map_err(|e| failed(format!("homelab: {e}\n")))?;
            }
            if let Err(e) = empty(dst_path) {
                return Err(failed(format!("homelab: {e}\nemptying {dst} failed\n")));
            }
            let filled = if copy.is_dir() {
                Command::new("cp")
                    .args(["-a", "--reflink=auto", "--"])
                    .arg(copy.join("."))
                    .arg(format!("{dst}/"))
                    .stdin(Stdio::null())
                    .status()?
            } else {
                Command::new("tar")
                    .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-C", dst, "-xzpf"])
                    .arg(&tgz)
                    .stdin(Stdio::null())
                    .status()?
            };
            if !filled.success() {
                return Err(failed(String::new()));
            }
            let (owner, mode) = own.rsplit_once(':').unwrap_or((own, ""));
            run_tool(Command::new("chown").args(["--", owner, dst]))
                .map_err(|_| failed(String::new()))?;
            chmod(mode, dst_path).map_err(|_| failed(String::new()))?;
        } else {
            remove_all(dst_path).map_err(|e| failed(format!("homelab: {e}\n")))?;
            let status = Command::new("cp")
                .args(["-a", "--reflink=auto", "--"])
                .arg(&copy)
                .arg(dst)
                .stdin(Stdio::null())
                .status()?;
            if !status.success() {
                return Err(failed(String::new()));
            }
        }
    }
    let _ = syncfs(snap);
    writeln!(out, "hl-data: restored {id} {items}")?;
    Ok(())
}

/// `find DIR -mindepth 1 -delete`: the folder emptied, kept.
fn empty(dir: &Path) -> io::Result<()> {
    for e in fs::read_dir(dir).map_err(at(dir))? {
        remove_all(&e?.path())?;
    }
    Ok(())
}

/// `rm -f`: a file or link removed; none there is no error.
fn remove_file_if_any(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e).map_err(at(path)),
        _ => Ok(()),
    }
}

/// `[ -r PATH ]`.
pub(super) fn readable(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else { return false };
    // SAFETY: a NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), libc::R_OK) == 0 }
}

/// `homelab node job --dir DIR STEP -- ARGS`: the job wrapper (`remote`'s `JOB_WRAPPER`) around
/// the step: its pid in `DIR/pid`, its stdout and stderr in `DIR/out` and `DIR/err`, then its
/// exit status in `DIR/rc`, those three synced before `rc` is renamed into place. The job's
/// result is kept whether or not anyone still waits for it.
pub fn job_main(dir: &Path, step: &str, args: &[String], now: SystemTime) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let pid_tmp = dir.join("pid.tmp");
    fs::write(&pid_tmp, format!("{}\n", std::process::id())).map_err(at(&pid_tmp))?;
    fs::rename(&pid_tmp, dir.join("pid")).map_err(at(dir))?;
    let out = fs::File::create(dir.join("out")).map_err(at(dir))?;
    let err = fs::File::create(dir.join("err")).map_err(at(dir))?;
    // The step's children (docker, cp) write where the script's would: the job's files.
    // SAFETY: dup2 onto this process's own stdout and stderr.
    unsafe {
        libc::dup2(out.as_raw_fd(), 1);
        libc::dup2(err.as_raw_fd(), 2);
    }
    let docker = Docker(Path::new("docker"));
    let rc = if step == STEP {
        run(args, &docker, now, &mut io::stdout().lock(), &mut io::stderr().lock())
    } else if step == DOWN {
        down(args, &docker, &mut io::stdout().lock(), &mut io::stderr().lock())
    } else {
        eprintln!("homelab node job: no step {step:?}");
        2
    };
    let _ = io::stdout().flush();
    let rc_tmp = dir.join("rc.tmp");
    fs::write(&rc_tmp, format!("{rc}\n")).map_err(at(&rc_tmp))?;
    for f in [&rc_tmp, &dir.join("out"), &dir.join("err")] {
        let _ = fs::File::open(f).and_then(|f| f.sync_all());
    }
    fs::rename(&rc_tmp, dir.join("rc")).map_err(at(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot of archives and copied folders is synced file by file and folder by folder,
    /// every one of them; a link, or more entries than [`SYNC_ONE_BY_ONE`], and it is the file
    /// system's sync; both seal the snapshot.
    #[test]
    fn a_snapshot_is_synced_entry_by_entry_unless_it_is_large_or_holds_a_link() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tmp = dir.path().join("snap.tmp");
        fs::create_dir_all(tmp.join("2/sub")).expect("mkdir");
        for f in ["manifest", "1.tgz", "complete", "2/a", "2/sub/b"] {
            fs::write(tmp.join(f), f).expect("write");
        }
        let (files, dirs) = one_by_one(&tmp).expect("read").expect("one by one");
        let mut files: Vec<_> = files.iter().map(|f| f.strip_prefix(&tmp).expect("in")).collect();
        files.sort();
        let want: Vec<&Path> =
            ["1.tgz", "2/a", "2/sub/b", "complete", "manifest"].map(Path::new).to_vec();
        assert_eq!(files, want);
        assert_eq!(dirs, [tmp.clone(), tmp.join("2"), tmp.join("2/sub")]);
        sync_snapshot(&tmp).expect("synced");

        std::os::unix::fs::symlink("a", tmp.join("2/link")).expect("symlink");
        assert_eq!(one_by_one(&tmp).expect("read"), None, "a link: the file system's sync");
        sync_snapshot(&tmp).expect("synced");
        fs::remove_file(tmp.join("2/link")).expect("rm");

        // 7 entries so far; up to SYNC_ONE_BY_ONE one by one, one more and it is the file system.
        for i in 0..SYNC_ONE_BY_ONE - 7 {
            fs::write(tmp.join(format!("2/sub/f{i}")), "").expect("write");
        }
        assert!(one_by_one(&tmp).expect("read").is_some(), "{SYNC_ONE_BY_ONE} entries");
        fs::write(tmp.join("2/sub/one-more"), "").expect("write");
        assert_eq!(one_by_one(&tmp).expect("read"), None, "past the bound");
        sync_snapshot(&tmp).expect("synced");
    }

    /// The clone is tried where `cp --reflink=always` clones a file here, and for a folder that
    /// holds no regular file (cp copies it, cloning nothing); the probe leaves nothing behind.
    #[test]
    fn a_reflink_copy_is_tried_only_where_the_file_system_clones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (src, into) = (dir.path().join("src"), dir.path().join("into"));
        fs::create_dir_all(src.join("a/b")).expect("mkdir");
        fs::create_dir_all(&into).expect("mkdir");
        assert!(may_clone(&src, &into), "no regular file: cp is asked");
        fs::write(src.join("a/b/data"), "data").expect("write");
        let cp = Command::new("cp")
            .args(["--reflink=always", "--"])
            .arg(src.join("a/b/data"))
            .arg(dir.path().join("copy"))
            .stderr(Stdio::null())
            .status()
            .expect("cp");
        assert_eq!(may_clone(&src, &into), cp.success());
        assert_eq!(fs::read_dir(&into).expect("read_dir").count(), 0, "the probe is removed");
    }
}
