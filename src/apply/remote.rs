//! What apply does on a node, as fixed scripts run through `NodeExec`. Every value reaches a
//! script as a positional argument (`"$1"`), never inside the script text, and the argument
//! vector is quoted by `transport::quote` on the way (SSH) or passed as-is (local).
//!
//! Scripts are given every path they touch, computed by `node::Layout` (DESIGN.md §6); they
//! never spell a path under `<root>` themselves. This module decides nothing: which step runs
//! when, and what its result means, is the rest of `apply`'s.

use std::time::Duration;

use crate::node::records::LockHolder;
use crate::node::Layout;
use crate::transport::{ExecError, NodeExec, Output};

/// Short steps (file writes, renames) and long ones (pulling, starting containers).
pub const SHORT: Duration = Duration::from_secs(30);
pub const LONG: Duration = Duration::from_secs(300);

/// Writes stdin to `$1` durably: temporary file, fsync, rename, fsync the folder. Stdin is
/// checked against its SHA-256 (`$3`) first: a controller killed mid-write closes stdin early,
/// and a truncated journal must never replace a whole one.
const WRITE_DURABLE: &str = r#"set -eu
f=$1; m=$2; want=$3
d=$(dirname -- "$f")
mkdir -p -- "$d"
cat > "$f.tmp"
got=$(sha256sum < "$f.tmp" | cut -c1-64)
if [ "$got" != "$want" ]; then rm -f -- "$f.tmp"; echo "$f: the upload was cut short (sha256 $got)" >&2; exit 6; fi
chmod "$m" -- "$f.tmp"
sync -- "$f.tmp"
mv -f -- "$f.tmp" "$f"
sync -- "$d"
"#;

/// Prepare in one round trip: unpacks the release (a tar archive on stdin) into a fresh
/// staging folder, checks every file's SHA-256 against the plan (`name sha` pairs) and syncs it,
/// renames the staging folder into place as the release, and prints where the live link
/// pointed before. A controller killed mid-upload closes stdin early: tar or a hash refuses it,
/// the staging folder is removed, and the previous release stays untouched.
const UPLOAD_RELEASE: &str = r#"set -eu
staging=$1; release=$2; live=$3; shift 3
rm -rf -- "$staging"
mkdir -p -- "$staging"
if ! tar -x -o -C "$staging" 2>"$staging.err"; then
  echo "the upload was cut short or is not an archive: $(head -c 300 "$staging.err")" >&2
  rm -rf -- "$staging" "$staging.err"; exit 6
fi
rm -f -- "$staging.err"
while [ $# -gt 0 ]; do
  n=$1; want=$2; shift 2
  got=$(sha256sum < "$staging/$n" | cut -c1-64) || got=missing
  if [ "$got" != "$want" ]; then
    echo "uploaded $n does not match the plan (sha256 $got, expected $want)" >&2
    rm -rf -- "$staging"; exit 5
  fi
  sync -- "$staging/$n"
done
rm -rf -- "$release"
mv -- "$staging" "$release"
sync -- "$(dirname -- "$release")"
readlink -- "$live" || true
"#;

/// `compose ARGS...` in a release folder: the project named after the service, its compose
/// file and the host's override, and the node's `config/<svc>/.env` as the project's env file
/// when it exists, so `${VAR}` is interpolated from the secrets kept on the node. Needs `$svc`
/// and `$envf`.
macro_rules! compose_fn {
    () => {
        r#"compose() {
  if [ -f "$envf" ]; then set -- --env-file "$envf" "$@"; fi
  if [ -f docker-compose.override.yml ]; then
    set -- -f docker-compose.yml -f docker-compose.override.yml "$@"
  else
    set -- -f docker-compose.yml "$@"
  fi
  docker compose -p "$svc" "$@"
}
# Runs a step; its output is kept in $log on the node, and its last lines go to stderr.
logged() {
  mkdir -p -- "$(dirname -- "$log")"
  if "$@" > "$log" 2>&1; then return 0; else rc=$?; fi
  tail -n 20 -- "$log" >&2
  return "$rc"
}
"#
    };
}

/// `docker compose config` of a release, the contract's secrets present in the node's
/// `config/<svc>/.env` (names only are checked; values are never read back), and
/// `docker compose build` when the service builds its image from its shipped context.
const VALIDATE: &str = concat!(
    r#"set -eu
rel=$1; svc=$2; envf=$3; log=$4; shift 4
"#,
    compose_fn!(),
    r#"cd -- "$rel"
set -- "$@" END
missing=""
while [ "$1" != END ]; do
  grep -q "^$1=" "$envf" 2>/dev/null || missing="$missing $1"
  shift
done
if [ -n "$missing" ]; then echo "secrets missing from $envf:$missing" >&2; exit 4; fi
logged compose config -q
# A service built from its shipped context is built here, on the node, before anything live
# changes: a build that fails stops the service at validate, with its output kept.
if grep -qE '^[[:space:]]+build:' docker-compose.yml docker-compose.override.yml 2>/dev/null; then
  logged compose build
fi
"#
);

/// Points the live link of a service at a release (atomic symlink rename) and brings the
/// project up. Idempotent: running it again after a dropped link converges to the same state.
/// A live folder that is not a link (deployed by hand) is kept among the releases.
const SWITCH_AND_UP: &str = concat!(
    r#"set -eu
svc=$1; rel=$2; live=$3; services=$4; data=$5; logs=$6; releases=$7; envf=$8; log=$9
"#,
    compose_fn!(),
    r#"mkdir -p -- "$services" "$data" "$logs"
if [ -d "$live" ] && [ ! -L "$live" ]; then
  mkdir -p -- "$releases"
  mv -- "$live" "$releases/adopted-$(date +%s)"
fi
rm -f -- "$live.new"
ln -s -- "$rel" "$live.new"
mv -fT -- "$live.new" "$live"
sync -- "$services"
cd -- "$live"
logged compose up -d --remove-orphans --force-recreate
"#
);

/// Takes a project down and removes its live link (releases are kept for rollback).
const DOWN_AND_UNLINK: &str = concat!(
    r#"set -eu
svc=$1; live=$2; services=$3; envf=$4
"#,
    compose_fn!(),
    r#"if [ -e "$live" ]; then
  cd -- "$live"
  compose down --remove-orphans
  cd /
fi
rm -f -- "$live"
sync -- "$services" 2>/dev/null || true
"#
);

/// Runs the contract's healthcheck once, with its timeout; its output is kept in `$3` on the
/// node and its last lines printed.
const HEALTHCHECK: &str = r#"set -u
live=$1; secs=$2; log=$3
mkdir -p -- "$(dirname -- "$log")"
cd -- "$live" || exit 1
timeout -k 2 "$secs" sh ./healthcheck.sh > "$log" 2>&1
rc=$?
tail -n 20 -- "$log"
exit "$rc"
"#;

/// What a failing service looks like, for the incident: status and recent logs, written to
/// `logs/<svc>/` on the node (logs may hold secrets: they stay on the node).
const DIAGNOSE: &str = r#"set -u
svc=$1; live=$2; out=$3; envf=$4
mkdir -p -- "$(dirname -- "$out")"
cd -- "$live" 2>/dev/null || cd /
dc() {
  if [ -f "$envf" ]; then docker compose -p "$svc" --env-file "$envf" "$@"; else docker compose -p "$svc" "$@"; fi
}
{
  echo "== docker compose ps"; dc ps -a 2>&1
  echo "== docker compose logs (last 100 lines)"; dc logs --no-color --tail 100 2>&1
} > "$out"
dc ps -a --format '{{.Name}} {{.State}} {{.Status}}' 2>/dev/null | head -n 20
"#;

/// Takes the node lock (`mkdir` is atomic) and writes stdin as its holder, or prints the
/// holder there is.
const LOCK: &str = r#"set -u
l=$1; h=$2
mkdir -p -- "$(dirname -- "$l")"
if mkdir -- "$l" 2>/dev/null; then
  cat > "$h"; sync -- "$h"; echo acquired
else
  echo held; cat -- "$h" 2>/dev/null || echo '{}'
fi
"#;

/// Releases the lock only when its holder is byte for byte the one on stdin: ours, never
/// another run's that took it meanwhile.
const UNLOCK: &str = r#"set -eu
l=$1; h=$2
if [ -f "$h" ] && cmp -s - "$h"; then rm -rf -- "$l"; fi
"#;

/// Prints the holder and removes the lock; exits 3 when there is no lock.
const BREAK_LOCK: &str = r#"set -eu
l=$1; h=$2
[ -d "$l" ] || exit 3
cat -- "$h" 2>/dev/null || echo '{}'
rm -rf -- "$l"
"#;

/// Appends one event line (atomic for a line under PIPE_BUF with O_APPEND).
const APPEND_EVENT: &str = r#"set -eu
f=$1
mkdir -p -- "$(dirname -- "$f")"
cat >> "$f"
"#;

const READ_FILE: &str = r#"f=$1
[ -f "$f" ] || exit 44
cat -- "$f"
"#;

/// A failed remote step: the link (a timeout counts: a dead link looks like one), or the step.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The node was lost; the journal on it says where the apply stopped.
    #[error("{reason}")]
    Link { reason: String },
    /// The step ran and failed.
    #[error("{step} failed (exit {}): {stderr}", exit_text(*.status))]
    Failed { step: &'static str, status: Option<i32>, stderr: String },
    /// The step could not be started (on this machine).
    #[error(transparent)]
    Exec(ExecError),
    #[error("unexpected answer to the lock: {answer}")]
    LockAnswer { answer: String },
    #[error("reading {path}: {stderr}")]
    Read { path: String, stderr: String },
}

fn exit_text(status: Option<i32>) -> String {
    status.map(|c| c.to_string()).unwrap_or("signal".into())
}

impl From<ExecError> for StepError {
    fn from(e: ExecError) -> StepError {
        match e {
            ExecError::Unreachable { node, reason } => {
                StepError::Link { reason: format!("{node}: {reason}") }
            }
            e @ ExecError::Timeout { .. } => StepError::Link { reason: e.to_string() },
            e => StepError::Exec(e),
        }
    }
}

fn sh(
    exec: &dyn NodeExec,
    script: &str,
    args: &[&str],
    stdin: &[u8],
    timeout: Duration,
    docker: bool,
) -> Result<Output, StepError> {
    let host = format!("DOCKER_HOST={}", exec.docker_host());
    let mut argv: Vec<&str> = Vec::new();
    if docker {
        argv.extend(["env", host.as_str()]);
    }
    argv.extend(["sh", "-c", script, "homelab"]);
    argv.extend(args);
    Ok(exec.run(&argv, stdin, timeout)?)
}

fn ok(out: Output, step: &'static str) -> Result<Output, StepError> {
    if out.success() {
        Ok(out)
    } else {
        Err(StepError::Failed { step, status: out.status, stderr: out.stderr_text() })
    }
}

pub fn write_durable(
    exec: &dyn NodeExec,
    path: &str,
    mode: &str,
    bytes: &[u8],
) -> Result<(), StepError> {
    let sha = crate::digest::sha256_hex(bytes);
    ok(sh(exec, WRITE_DURABLE, &[path, mode, &sha], bytes, SHORT, false)?, "writing a file")
        .map(|_| ())
}

/// Uploads a release as one tar stream, checks and seals it (see `UPLOAD_RELEASE`); returns
/// where the live link pointed before. `files`: (path in the release, mode, bytes).
pub fn upload_release(
    exec: &dyn NodeExec,
    staging: &str,
    release: &str,
    live: &str,
    files: &[(&str, u32, &[u8])],
) -> Result<Option<String>, StepError> {
    let mut archive = tar::Builder::new(Vec::new());
    for (name, mode, bytes) in files {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(*mode);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        archive.append_data(&mut header, name, *bytes).map_err(|e| StepError::Failed {
            step: "packing the release",
            status: None,
            stderr: e.to_string(),
        })?;
    }
    let archive = archive.into_inner().map_err(|e| StepError::Failed {
        step: "packing the release",
        status: None,
        stderr: e.to_string(),
    })?;
    let hashes: Vec<(String, String)> =
        files.iter().map(|(n, _, b)| ((*n).to_owned(), crate::digest::sha256_hex(b))).collect();
    let mut args = vec![staging, release, live];
    for (n, h) in &hashes {
        args.push(n);
        args.push(h);
    }
    let out = ok(sh(exec, UPLOAD_RELEASE, &args, &archive, LONG, false)?, "uploading the release")?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Ok((!s.is_empty()).then_some(s))
}

/// `log`: where the output of `compose config` is kept on the node.
pub fn validate(
    exec: &dyn NodeExec,
    release: &str,
    svc: &str,
    env_file: &str,
    log: &str,
    secrets: &[String],
) -> Result<(), StepError> {
    let mut args = vec![release, svc, env_file, log];
    args.extend(secrets.iter().map(String::as_str));
    ok(sh(exec, VALIDATE, &args, b"", LONG, true)?, "validate").map(|_| ())
}

/// `log`: where the output of `compose up` is kept on the node.
pub fn switch_and_up(
    exec: &dyn NodeExec,
    layout: &Layout,
    svc: &str,
    release: &str,
    log: &str,
) -> Result<(), StepError> {
    let args = [
        svc,
        release,
        &layout.live(svc),
        &layout.services(),
        &layout.data(svc),
        &layout.logs(svc),
        &layout.releases(svc),
        &layout.env_file(svc),
        log,
    ];
    ok(sh(exec, SWITCH_AND_UP, &args, b"", LONG, true)?, "docker compose up").map(|_| ())
}

pub fn down_and_unlink(exec: &dyn NodeExec, layout: &Layout, svc: &str) -> Result<(), StepError> {
    let args = [svc, &layout.live(svc), &layout.services(), &layout.env_file(svc)];
    ok(sh(exec, DOWN_AND_UNLINK, &args, b"", LONG, true)?, "docker compose down").map(|_| ())
}

/// One healthcheck attempt: whether it passed, and the last lines it printed (its whole output
/// is kept in `log` on the node).
pub fn healthcheck(
    exec: &dyn NodeExec,
    layout: &Layout,
    node: &str,
    svc: &str,
    timeout: Duration,
    log: &str,
) -> Result<(bool, String), StepError> {
    let live = layout.live(svc);
    let secs = timeout.as_secs().max(1).to_string();
    let env = [
        format!("HOMELAB_ROOT={}", layout.root()),
        format!("HOMELAB_NODE={node}"),
        format!("HOMELAB_SERVICE={svc}"),
    ];
    let host = format!("DOCKER_HOST={}", exec.docker_host());
    let mut argv: Vec<&str> = vec!["env", host.as_str()];
    argv.extend(env.iter().map(String::as_str));
    argv.extend(["sh", "-c", HEALTHCHECK, "homelab", live.as_str(), secs.as_str(), log]);
    let out = exec.run(&argv, b"", timeout + Duration::from_secs(10))?;
    Ok((out.success(), String::from_utf8_lossy(&out.stdout).trim().to_owned()))
}

/// Status and logs of a service into `out` on the node; returns the short status lines.
pub fn diagnose(
    exec: &dyn NodeExec,
    layout: &Layout,
    svc: &str,
    out: &str,
) -> Result<String, StepError> {
    let args = [svc, &layout.live(svc), out, &layout.env_file(svc)];
    let o = sh(exec, DIAGNOSE, &args, b"", LONG, true)?;
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_owned())
}

/// The last `lines` lines of `text`, at most `chars` characters: enough of a tool's output to
/// say why in a summary or an event, never a whole log.
pub fn last_lines(text: &str, lines: usize, chars: usize) -> String {
    let all: Vec<&str> = text.trim().lines().collect();
    let kept = all[all.len().saturating_sub(lines)..].join("\n");
    if kept.chars().count() <= chars {
        return kept;
    }
    let skip = kept.chars().count() - chars;
    format!("…{}", kept.chars().skip(skip).collect::<String>())
}

pub enum Lock {
    Acquired,
    /// Held by this holder (one whose `holder.json` does not parse is an unknown holder).
    Held(LockHolder),
}

/// Takes the node lock for `holder` (the exact bytes [`unlock`] compares later).
pub fn lock(exec: &dyn NodeExec, layout: &Layout, holder: &[u8]) -> Result<Lock, StepError> {
    let (l, h) = (layout.lock(), layout.lock_holder());
    let out = ok(sh(exec, LOCK, &[&l, &h], holder, SHORT, false)?, "taking the node lock")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    match text.split_once('\n') {
        Some(("acquired", _)) => Ok(Lock::Acquired),
        Some(("held", rest)) => Ok(Lock::Held(crate::observe::lock_holder(rest))),
        _ if text.trim() == "acquired" => Ok(Lock::Acquired),
        _ => Err(StepError::LockAnswer { answer: text }),
    }
}

/// Releases the lock if `holder` (the bytes given to [`lock`]) still holds it.
pub fn unlock(exec: &dyn NodeExec, layout: &Layout, holder: &[u8]) -> Result<(), StepError> {
    let (l, h) = (layout.lock(), layout.lock_holder());
    ok(sh(exec, UNLOCK, &[&l, &h], holder, SHORT, false)?, "releasing the node lock").map(|_| ())
}

/// Removes the lock whoever holds it; returns what its `holder.json` said (`{}` if nothing),
/// or `None` when the node was not locked.
pub fn break_lock(exec: &dyn NodeExec, layout: &Layout) -> Result<Option<String>, StepError> {
    let (l, h) = (layout.lock(), layout.lock_holder());
    let out = sh(exec, BREAK_LOCK, &[&l, &h], b"", SHORT, false)?;
    if out.status == Some(3) {
        return Ok(None);
    }
    let out = ok(out, "breaking the node lock")?;
    Ok(Some(String::from_utf8_lossy(&out.stdout).trim().to_owned()))
}

pub fn append_event(exec: &dyn NodeExec, path: &str, line: &[u8]) -> Result<(), StepError> {
    ok(sh(exec, APPEND_EVENT, &[path], line, SHORT, false)?, "writing an event").map(|_| ())
}

/// Reads a small file; `Ok(None)` when it does not exist.
pub fn read_file(exec: &dyn NodeExec, path: &str) -> Result<Option<Vec<u8>>, StepError> {
    let out = sh(exec, READ_FILE, &[path], b"", SHORT, false)?;
    match out.status {
        Some(0) => Ok(Some(out.stdout)),
        Some(44) => Ok(None),
        _ => Err(StepError::Read { path: path.to_owned(), stderr: out.stderr_text() }),
    }
}
