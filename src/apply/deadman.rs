//! A deploy's dead-man watchdog (`remote`'s `WATCHDOG`) done by this program: the deploy's
//! job forked into it once its `compose up` ended ([`after_job`]), or `homelab node deadman --
//! ARGS` started in its own session when the deploy is armed, with the script's own
//! arguments. It waits for the deploy's `compose up` job without a `sleep` process a second;
//! after a failed `up` it stands down (the engine rolls back); after a good one it gives the
//! confirmation its window; then whoever creates `decided/` first decides. When it
//! decides, a deploy no longer live is `superseded`; else it rolls the service back by itself
//! (the rollback script it was given, run by `sh`; the deploy's and the removal's own scripts
//! it does in process, as their jobs do), checks the previous release with its own
//! healthcheck, and appends the event line. The differential test in `native::tests` holds it
//! to the script.

use std::fs;
use std::io;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use super::native::{append_lines, at, shell_status};

/// How often the files are looked at (the script looks once a second, with a `sleep`).
const POLL: Duration = Duration::from_millis(200);

/// A rollback step: its arguments, the log it writes to, the time; its exit status.
type Step = fn(&[String], &fs::File, SystemTime) -> i32;

/// The rollback this program does itself rather than by `sh -c SCRIPT`: the deploy job's
/// (`SWITCH_AND_UP`, the previous release) or the removal's (`DOWN_AND_UNLINK`, a first
/// deploy), when this process is the `homelab` program's own `node deadman` — detached, its
/// output on `/dev/null`, so that from then on all of it, its children's included, goes to the
/// rollback's log as the script's would.
fn native_step(script: &str) -> Option<Step> {
    use super::{remote, switch};
    super::native::program()?;
    fn to_log(log: &fs::File) {
        use std::os::fd::AsRawFd;
        // SAFETY: dup2 of a descriptor we own onto this process's own stdout and stderr.
        unsafe {
            libc::dup2(log.as_raw_fd(), 1);
            libc::dup2(log.as_raw_fd(), 2);
        }
    }
    fn up(args: &[String], log: &fs::File, now: SystemTime) -> i32 {
        to_log(log);
        let docker = switch::Docker(Path::new("docker"));
        let code = switch::run(args, &docker, now, &mut io::stdout(), &mut io::stderr());
        let _ = io::Write::flush(&mut io::stdout());
        code
    }
    fn down(args: &[String], log: &fs::File, _: SystemTime) -> i32 {
        to_log(log);
        let docker = switch::Docker(Path::new("docker"));
        let code = switch::down(args, &docker, &mut io::stdout(), &mut io::stderr());
        let _ = io::Write::flush(&mut io::stdout());
        code
    }
    if script == remote::SWITCH_AND_UP {
        Some(up)
    } else if script == remote::DOWN_AND_UNLINK {
        Some(down)
    } else {
        None
    }
}

/// `WATCHDOG` with its arguments: the folder, the `up` job's folder, the window in seconds,
/// the events' root, the node, the event line, the live link, the deploy's release, the
/// rollback script, then the rollback's arguments. `now` reads the clock for the event.
pub fn watch(args: &[String], now: &dyn Fn() -> SystemTime) -> io::Result<()> {
    let Some((first, rollback_args)) = args.split_first_chunk::<9>() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "too few arguments"));
    };
    let [dm, upjob, secs, evroot, node, line, live, rel, script] = first;
    let dm = Path::new(dm);
    let pid = dm.join("pid");
    fs::write(&pid, format!("{}\n", std::process::id())).map_err(at(&pid))?;
    let rc = Path::new(upjob).join("rc");
    while !rc.is_file() {
        if !dm.is_dir() {
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
    if fs::read_to_string(&rc).unwrap_or_default().trim_end_matches('\n') != "0" {
        return Ok(());
    }
    let window = Duration::from_secs(secs.parse().unwrap_or(0));
    let until = Instant::now() + window;
    let decided = dm.join("decided");
    while Instant::now() < until {
        if decided.is_dir() {
            return Ok(());
        }
        std::thread::sleep(POLL.min(until.saturating_duration_since(Instant::now())));
    }
    if fs::create_dir(&decided).is_err() {
        return Ok(());
    }
    let points_at = fs::read_link(live).ok();
    if points_at.as_deref() != Some(Path::new(rel)) {
        return fs::write(decided.join("superseded"), b"").map_err(at(&decided));
    }
    fs::write(decided.join("rolled-back"), b"").map_err(at(&decided))?;
    let log = fs::File::create(dm.join("rollback.log")).map_err(at(dm))?;
    let code = match native_step(script) {
        Some(step) => step(rollback_args, &log, now()),
        None => {
            let status = Command::new("sh")
                .arg("-c")
                .arg(script)
                .arg("homelab")
                .args(rollback_args)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .status()?;
            shell_status(status)
        }
    };
    // The previous release, verified by its own healthcheck (three tries, 2 s apart), before
    // the rollback is recorded as done: `rollback.health` says ok or failed.
    let live_path = Path::new(live);
    if code == 0 && fs::symlink_metadata(live_path).is_ok_and(|m| m.file_type().is_symlink()) {
        let root = live.rfind("/state/services/").map_or(live.as_str(), |i| &live[..i]);
        let service = live.rsplit('/').next().unwrap_or(live);
        let mut health = "failed";
        for i in 0..3 {
            let log = fs::File::create(dm.join("rollback-health.log")).map_err(at(dm))?;
            let ok = Command::new("timeout")
                .args(["-k", "2", "30", "sh", "./healthcheck.sh"])
                .current_dir(live_path)
                .env("PWD", live_path)
                .env("HOMELAB_ROOT", root)
                .env("HOMELAB_NODE", node)
                .env("HOMELAB_SERVICE", service)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                health = "ok";
                break;
            }
            if i < 2 {
                std::thread::sleep(Duration::from_secs(2));
            }
        }
        fs::write(dm.join("rollback.health"), format!("{health}\n")).map_err(at(dm))?;
    }
    fs::write(dm.join("rollback.rc"), format!("{code}\n")).map_err(at(dm))?;
    // A rollback that failed is not told as completed.
    let line = if code == 0 {
        line.clone()
    } else {
        line.replacen("remediation_completed", "remediation_failed", 1)
    };
    let stamp = humantime::format_rfc3339_seconds(now()).to_string();
    let line = line.replacen("__TIME__", &stamp, 1);
    let file = Path::new(evroot).join(&stamp[..10]).join(node).join("events.jsonl");
    append_lines(&file, format!("{line}\n").as_bytes())
}

/// After a job's step ended (`homelab node job`, its `rc` written): a deploy's job that was
/// handed its dead-man's arguments when the deploy was armed becomes that watchdog.
pub fn after_job(job: &Path, step: &str) {
    if step != super::switch::STEP {
        return;
    }
    if let Some(args) = super::native::take_watch(job) {
        become_watchdog(job, args);
    }
}

/// The deploy's dead-man watchdog, handed to this job when the deploy was armed: a child of
/// this process (a fork, no second start of the program) in a session of its own, its output
/// on `/dev/null` as the armed watchdog's is, while this job ends as it always did.
fn become_watchdog(job: &Path, args: Vec<String>) {
    let Some(dm) = job.parent().map(|p| p.join("deadman")) else { return };
    let mut all = vec![dm.to_string_lossy().into_owned()];
    all.extend(args);
    // SAFETY: this process is single-threaded here (the step's children were waited for), so
    // the child may go on running Rust; it never returns from this function.
    match unsafe { libc::fork() } {
        0 => {
            // SAFETY: plain system calls on this process's own descriptors.
            unsafe {
                libc::setsid();
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                if null >= 0 {
                    for fd in 0..3 {
                        libc::dup2(null, fd);
                    }
                }
            }
            let code = match watch(&all, &SystemTime::now) {
                Ok(()) => 0,
                Err(_) => 1,
            };
            std::process::exit(code);
        }
        -1 => {
            // No process to fork: the watchdog is started as the engine starts it.
            let _ = super::native::start_watchdog(super::remote::WATCHDOG, &all);
        }
        child => {
            // The watchdog's pid is in its folder before this job's end is seen.
            let tmp = dm.join("pid.tmp");
            if fs::write(&tmp, format!("{child}\n")).is_ok() {
                let _ = fs::rename(&tmp, dm.join("pid"));
            }
        }
    }
}
