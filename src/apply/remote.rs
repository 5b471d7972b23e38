//! What apply does on a node, as fixed scripts run through `NodeExec`. Every value reaches a
//! script as a positional argument (`"$1"`), never inside the script text, and the argument
//! vector is quoted by `transport::quote` on the way (SSH) or passed as-is (local).
//!
//! Layout under `<root>/state/` (DESIGN.md §6):
//! - `services/<svc>` → symlink to `releases/<svc>/<plan-id>/`: the live compose project;
//!   switching versions is one atomic `rename(2)` of a symlink.
//! - `releases/<svc>/<plan-id>/`: artifacts and `manifest.json` of one version.
//! - `deploy/<plan-id>/journal.json`: stage state of an apply, written durably.
//! - `lock/`: the node lock (`mkdir` is atomic), `holder.json` names holder and plan.
//! - `consumed/<plan-id>.json`: plans applied on this node (replay protection).

use std::time::Duration;

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

/// Checks the staged files' SHA-256 (`name sha` pairs), then renames the staging folder into
/// place as the release.
const SEAL_RELEASE: &str = r#"set -eu
staging=$1; release=$2; shift 2
while [ $# -gt 0 ]; do
  n=$1; want=$2; shift 2
  got=$(sha256sum < "$staging/$n" | cut -c1-64)
  [ "$got" = "$want" ] || { echo "uploaded $n does not match the plan (sha256 $got, expected $want)" >&2; exit 5; }
done
rm -rf -- "$release"
mv -- "$staging" "$release"
sync -- "$(dirname -- "$release")"
"#;

/// `docker compose config` of a release, and the contract's secrets present in the node's
/// `config/<svc>/.env` (names only are checked; values are never read back).
const VALIDATE: &str = r#"set -eu
rel=$1; svc=$2; envf=$3; shift 3
cd -- "$rel"
set -- "$@" END
missing=""
while [ "$1" != END ]; do
  grep -q "^$1=" "$envf" 2>/dev/null || missing="$missing $1"
  shift
done
if [ -n "$missing" ]; then echo "secrets missing from $envf:$missing" >&2; exit 4; fi
if [ -f docker-compose.override.yml ]; then
  docker compose -p "$svc" -f docker-compose.yml -f docker-compose.override.yml config -q
else
  docker compose -p "$svc" -f docker-compose.yml config -q
fi
"#;

/// Points `services/<svc>` at a release (atomic symlink rename) and brings the project up.
/// Idempotent: running it again after a dropped link converges to the same state.
const SWITCH_AND_UP: &str = r#"set -eu
root=$1; svc=$2; rel=$3
live="$root/state/services/$svc"
mkdir -p -- "$root/state/services" "$root/data/$svc" "$root/logs/$svc"
if [ -d "$live" ] && [ ! -L "$live" ]; then
  mkdir -p -- "$root/state/releases/$svc"
  mv -- "$live" "$root/state/releases/$svc/adopted-$(date +%s)"
fi
rm -f -- "$live.new"
ln -s -- "$rel" "$live.new"
mv -fT -- "$live.new" "$live"
sync -- "$root/state/services"
cd -- "$live"
if [ -f docker-compose.override.yml ]; then
  docker compose -p "$svc" -f docker-compose.yml -f docker-compose.override.yml up -d --remove-orphans
else
  docker compose -p "$svc" -f docker-compose.yml up -d --remove-orphans
fi
"#;

/// Takes a project down and removes its live link (releases are kept for rollback).
const DOWN_AND_UNLINK: &str = r#"set -eu
root=$1; svc=$2
live="$root/state/services/$svc"
if [ -e "$live" ]; then
  cd -- "$live"
  if [ -f docker-compose.override.yml ]; then
    docker compose -p "$svc" -f docker-compose.yml -f docker-compose.override.yml down --remove-orphans
  else
    docker compose -p "$svc" -f docker-compose.yml down --remove-orphans
  fi
  cd /
fi
rm -f -- "$live"
sync -- "$root/state/services" 2>/dev/null || true
"#;

/// Runs the contract's healthcheck once, with its timeout.
const HEALTHCHECK: &str = r#"set -u
live=$1; secs=$2
cd -- "$live" || exit 1
timeout -k 2 "$secs" sh ./healthcheck.sh
"#;

/// What a failing service looks like, for the incident: status and recent logs, written to
/// `logs/<svc>/` on the node (logs may hold secrets: they stay on the node).
const DIAGNOSE: &str = r#"set -u
root=$1; svc=$2; out=$3
mkdir -p -- "$(dirname -- "$out")"
cd -- "$root/state/services/$svc" 2>/dev/null || cd /
{
  echo "== docker compose ps"; docker compose -p "$svc" ps -a 2>&1
  echo "== docker compose logs (last 100 lines)"; docker compose -p "$svc" logs --no-color --tail 100 2>&1
} > "$out"
docker compose -p "$svc" ps -a --format '{{.Name}} {{.State}} {{.Status}}' 2>/dev/null | head -n 20
"#;

/// Takes the node lock, or prints the holder.
const LOCK: &str = r#"set -u
l=$1
mkdir -p -- "$(dirname -- "$l")"
if mkdir -- "$l" 2>/dev/null; then
  cat > "$l/holder.json"; sync -- "$l/holder.json"; echo acquired
else
  echo held; cat -- "$l/holder.json" 2>/dev/null || echo '{}'
fi
"#;

const UNLOCK: &str = r#"set -eu
l=$1; want=$2
if [ -f "$l/holder.json" ] && grep -qF -- "$want" "$l/holder.json"; then rm -rf -- "$l"; fi
"#;

const BREAK_LOCK: &str = r#"set -eu
l=$1
cat -- "$l/holder.json" 2>/dev/null || echo '{}'
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

const READLINK: &str = r#"readlink -- "$1" || true"#;

/// A failed remote step: the link, a timeout, or the step itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepError {
    Link(String),
    Failed(String),
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepError::Link(s) | StepError::Failed(s) => f.write_str(s),
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
    exec.run(&argv, stdin, timeout).map_err(|e| match e {
        ExecError::Unreachable(s) => StepError::Link(s),
        ExecError::Timeout { .. } => StepError::Link(e.to_string()),
        ExecError::Other(s) => StepError::Failed(s),
    })
}

fn ok(out: Output, what: &str) -> Result<Output, StepError> {
    if out.success() {
        Ok(out)
    } else {
        Err(StepError::Failed(format!(
            "{what} failed (exit {}): {}",
            out.status.map(|c| c.to_string()).unwrap_or("signal".into()),
            out.stderr_text()
        )))
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

pub fn seal_release(
    exec: &dyn NodeExec,
    staging: &str,
    release: &str,
    hashes: &[(String, String)],
) -> Result<(), StepError> {
    let mut args = vec![staging, release];
    for (n, h) in hashes {
        args.push(n);
        args.push(h);
    }
    ok(sh(exec, SEAL_RELEASE, &args, b"", SHORT, false)?, "checking the uploaded artifacts")
        .map(|_| ())
}

pub fn validate(
    exec: &dyn NodeExec,
    release: &str,
    svc: &str,
    env_file: &str,
    secrets: &[String],
) -> Result<(), StepError> {
    let mut args = vec![release, svc, env_file];
    args.extend(secrets.iter().map(String::as_str));
    ok(sh(exec, VALIDATE, &args, b"", LONG, true)?, "validate").map(|_| ())
}

pub fn switch_and_up(
    exec: &dyn NodeExec,
    root: &str,
    svc: &str,
    release: &str,
) -> Result<(), StepError> {
    ok(sh(exec, SWITCH_AND_UP, &[root, svc, release], b"", LONG, true)?, "docker compose up")
        .map(|_| ())
}

pub fn down_and_unlink(exec: &dyn NodeExec, root: &str, svc: &str) -> Result<(), StepError> {
    ok(sh(exec, DOWN_AND_UNLINK, &[root, svc], b"", LONG, true)?, "docker compose down").map(|_| ())
}

/// One healthcheck attempt: `Ok(true)` healthy, `Ok(false)` unhealthy.
pub fn healthcheck(
    exec: &dyn NodeExec,
    root: &str,
    node: &str,
    svc: &str,
    timeout: Duration,
) -> Result<bool, StepError> {
    let live = format!("{root}/state/services/{svc}");
    let secs = timeout.as_secs().max(1).to_string();
    let env = [
        format!("HOMELAB_ROOT={root}"),
        format!("HOMELAB_NODE={node}"),
        format!("HOMELAB_SERVICE={svc}"),
    ];
    let host = format!("DOCKER_HOST={}", exec.docker_host());
    let mut argv: Vec<&str> = vec!["env", host.as_str()];
    argv.extend(env.iter().map(String::as_str));
    argv.extend(["sh", "-c", HEALTHCHECK, "homelab", live.as_str(), secs.as_str()]);
    match exec.run(&argv, b"", timeout + Duration::from_secs(10)) {
        Ok(out) => Ok(out.success()),
        Err(ExecError::Unreachable(s)) => Err(StepError::Link(s)),
        Err(e @ ExecError::Timeout { .. }) => Err(StepError::Link(e.to_string())),
        Err(ExecError::Other(s)) => Err(StepError::Failed(s)),
    }
}

pub fn diagnose(
    exec: &dyn NodeExec,
    root: &str,
    svc: &str,
    out: &str,
) -> Result<String, StepError> {
    let o = sh(exec, DIAGNOSE, &[root, svc, out], b"", LONG, true)?;
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_owned())
}

pub enum Lock {
    Acquired,
    Held(String),
}

pub fn lock(exec: &dyn NodeExec, path: &str, holder: &[u8]) -> Result<Lock, StepError> {
    let out = ok(sh(exec, LOCK, &[path], holder, SHORT, false)?, "taking the node lock")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    match text.split_once('\n') {
        Some(("acquired", _)) => Ok(Lock::Acquired),
        Some(("held", rest)) => Ok(Lock::Held(rest.trim().to_owned())),
        _ if text.trim() == "acquired" => Ok(Lock::Acquired),
        _ => Err(StepError::Failed(format!("unexpected answer to the lock: {text}"))),
    }
}

pub fn unlock(exec: &dyn NodeExec, path: &str, token: &str) -> Result<(), StepError> {
    ok(sh(exec, UNLOCK, &[path, token], b"", SHORT, false)?, "releasing the node lock").map(|_| ())
}

pub fn break_lock(exec: &dyn NodeExec, path: &str) -> Result<String, StepError> {
    let out = ok(sh(exec, BREAK_LOCK, &[path], b"", SHORT, false)?, "breaking the node lock")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
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
        _ => Err(StepError::Failed(format!("reading {path}: {}", out.stderr_text()))),
    }
}

pub fn readlink(exec: &dyn NodeExec, path: &str) -> Result<Option<String>, StepError> {
    let out = ok(sh(exec, READLINK, &[path], b"", SHORT, false)?, "reading a link")?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Ok((!s.is_empty()).then_some(s))
}
