//! What apply does on a node, as fixed scripts run through `NodeExec`. Every value reaches a
//! script as a positional argument (`"$1"`), never inside the script text, and the argument
//! vector is quoted by `transport::quote` on the way (SSH) or passed as-is (local).
//!
//! Scripts are given every path they touch, computed by `node::Layout` (DESIGN.md §6); they
//! never spell a path under `<root>` themselves. This module decides nothing: which step runs
//! when, and what its result means, is the rest of `apply`'s.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::model::validate::compose::ResolvedService;
use crate::node::records::LockHolder;
use crate::node::Layout;
use crate::transport::{ExecError, NodeExec, Output};

pub use super::native::{Carry, REDACT_MIN, SNAPSHOT_REFUSED};

/// The five arguments `CARRY` reads.
fn carry_args(carry: &Carry) -> [String; 5] {
    let (jf, js, jb) = match &carry.journal {
        Some((path, n, text)) => (path.clone(), n.to_string(), text.clone()),
        None => Default::default(),
    };
    let (ef, eb) = carry.events.clone().unwrap_or_default();
    [jf, js, jb, ef, eb]
}

/// Runs first in every command, with the five arguments of a [`Carry`] (empty strings for
/// none): writes the journal durably unless the node already holds a later save (the highest
/// sequence number wins; saves of services running side by side may arrive in any order;
/// `flock` on the plan's folder orders writers), then appends the events in one write under
/// the events file's lock (the one `homelab events emit` takes). A
/// record that cannot be written stops the command before its step runs (exit 97).
const CARRY: &str = r#"hl_carry() {
  jf=$1 js=$2 jb=$3 ef=$4 eb=$5
  if [ -n "$jf" ]; then
    jd=$(dirname -- "$jf")
    mkdir -p -- "$jd" || return 1
    exec 8<"$jd" || return 1
    flock 8 || return 1
    old=$(cat -- "$jf.seq" 2>/dev/null) || old=0
    if [ "$js" -gt "${old:-0}" ]; then
      # 0600: the journal quotes the output of failed steps.
      (umask 077 && printf '%s' "$jb" > "$jf.tmp") && chmod 600 -- "$jf.tmp" && sync -- "$jf.tmp" && mv -f -- "$jf.tmp" "$jf" || return 1
      printf '%s\n' "$js" > "$jf.seq.tmp" && mv -f -- "$jf.seq.tmp" "$jf.seq" || return 1
      sync -- "$jd" || return 1
    fi
    exec 8<&-
  fi
  if [ -n "$eb" ]; then
    # As `events::APPEND_SH`: under the file's lock, never glued onto a torn last line.
    mkdir -p -- "$(dirname -- "$ef")" || return 1
    exec 9>>"$ef" || return 1
    flock 9 || return 1
    if [ -s "$ef" ] && [ "$(tail -c 1 -- "$ef" | od -An -tx1 | tr -d ' \n')" != 0a ]; then printf '\n' >&9; fi
    printf '%s' "$eb" >&9 || return 1
    exec 9>&-
  fi
}
hl_carry "$1" "$2" "$3" "$4" "$5" || { echo "cannot write the apply journal or events on the node" >&2; exit 97; }
shift 5
"#;

/// Short steps (file writes, renames) and long ones (pulling, starting containers).
pub const SHORT: Duration = Duration::from_secs(30);
pub const LONG: Duration = Duration::from_secs(300);

/// `hl_redact ENVFILE`: copies stdin to stdout with every value set in `ENVFILE` (the node's
/// `config/<svc>/.env`) of at least [`REDACT_MIN`] bytes replaced by `[redacted]`, so no secret
/// kept on the node leaves it in a step's output (issue 19). Literal matching (`index`, never a
/// regular expression), so a value's metacharacters mean nothing; the values are read from the
/// file by awk, never through the shell. Each line of a value counts on its own (a quoted
/// value may span lines), quotes around a value are dropped, and a value holding `$` is also
/// redacted as Compose prints it (`$$`). Longer values first, so a value that holds another
/// is not left half shown. With no such file the text passes (the node keeps no values); with
/// one this user cannot read, nothing passes.
macro_rules! redact_fn {
    () => {
        r#"hl_redact() {
  if [ -n "${1:-}" ] && [ -f "$1" ] && [ ! -r "$1" ]; then
    # Values that cannot be read cannot be redacted: nothing of the output leaves.
    cat > /dev/null; echo "[output withheld: $1 cannot be read to redact it; the whole output is in the log on the node]"
  elif [ -n "${1:-}" ] && [ -f "$1" ]; then
    LC_ALL=C awk -v min=6 '
      function add(v,   w) {
        if (length(v) < min) return
        vals[++n] = v
        if (index(v, "$") > 0) { w = v; gsub(/\$/, "$$", w); vals[++n] = w }
      }
      function swap(s, v,   out, p) {
        out = ""
        while ((p = index(s, v)) > 0) { out = out substr(s, 1, p - 1) "[redacted]"; s = substr(s, p + length(v)) }
        return out s
      }
      FILENAME == ARGV[1] {
        v = $0
        sub(/\r$/, "", v)
        if (inq != "") {
          # A line inside a quoted value that spans lines: all of it is the value.
          sub(/^[ \t]+/, "", v); sub(/[ \t]+$/, "", v)
          if (length(v) > 0 && substr(v, length(v)) == inq) { v = substr(v, 1, length(v) - 1); inq = "" }
          add(v)
          next
        }
        if (v ~ /^[ \t]*#/) next
        if (match(v, /^[ \t]*(export[ \t]+)?[A-Za-z_][A-Za-z0-9_.-]*[ \t]*=/)) v = substr(v, RLENGTH + 1)
        sub(/^[ \t]+/, "", v); sub(/[ \t]+$/, "", v)
        q = substr(v, 1, 1)
        if (q == "\"" || q == "'\''") {
          v = substr(v, 2)
          if (length(v) > 0 && substr(v, length(v)) == q) v = substr(v, 1, length(v) - 1)
          else inq = q
        } else {
          w = v; sub(/[ \t]+#.*$/, "", w); if (w != v) add(w)
        }
        add(v)
        next
      }
      !sorted {
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (length(vals[j]) > length(vals[i])) { t = vals[i]; vals[i] = vals[j]; vals[j] = t }
        sorted = 1
      }
      { line = $0; for (i = 1; i <= n; i++) line = swap(line, vals[i]); print line }
    ' "$1" -
  else
    cat
  fi
}
"#
    };
}

/// The redaction as a script of its own, for the tests.
#[cfg(test)]
pub(super) const REDACT: &str = redact_fn!();

#[cfg(test)]
/// `hl_redact ENV` run by the system's `sh` and `awk` (as on a node) over `text`, for the
/// tests (`native`'s hold theirs to it).
pub(super) fn redact_by_script(env: &[u8], text: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    // A path a shell or awk could misread: spaces, `=`, a backslash.
    let envf = dir.path().join("a dir =x\\y");
    std::fs::create_dir_all(&envf).unwrap();
    let envf = envf.join(".env");
    std::fs::write(&envf, env).unwrap();
    let out = redact_with(std::process::Command::new("sh"), &envf, text);
    assert!(out.status.success());
    out.stdout
}

/// `hl_redact ENVF` over `text`, run by `sh` as `cmd` starts it (`sh` itself, or `setpriv …
/// sh` to run it as another user).
#[cfg(test)]
fn redact_with(
    mut cmd: std::process::Command,
    envf: &std::path::Path,
    text: &[u8],
) -> std::process::Output {
    use std::io::Write;
    let script = format!("{REDACT}hl_redact \"$1\"");
    let mut child = cmd
        .args(["-c", &script, "sh"])
        .arg(envf)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sh");
    child.stdin.take().unwrap().write_all(text).unwrap();
    child.wait_with_output().unwrap()
}

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

/// `compose ARGS...` in a release folder: the project named after the service, its compose
/// file and the host's override, and the node's `config/<svc>/.env` as the project's env file
/// when it exists, so `${VAR}` is interpolated from the secrets kept on the node. Needs `$svc`
/// and `$envf`.
macro_rules! compose_fn {
    () => {
        concat!(
            redact_fn!(),
            r#"compose() {
  if [ -f "$envf" ]; then set -- --env-file "$envf" "$@"; fi
  if [ -f docker-compose.override.yml ]; then
    set -- -f docker-compose.yml -f docker-compose.override.yml "$@"
  else
    set -- -f docker-compose.yml "$@"
  fi
  docker compose -p "$svc" "$@"
}
# Runs a step; its output is kept in $log on the node (0600: it may hold secrets), and its last
# lines go to stderr with the values of $envf redacted: only they leave the node.
logged() {
  mkdir -p -- "$(dirname -- "$log")"
  : > "$log"; chmod 600 -- "$log"
  if "$@" > "$log" 2>&1; then return 0; else rc=$?; fi
  tail -n 20 -- "$log" | hl_redact "$envf" >&2
  return "$rc"
}
"#
        )
    };
}

/// The line before the resolved configuration in what validate prints.
const RESOLVED: &str = "homelab-resolved";

/// `docker compose config` of a release, the contract's secrets present in the node's
/// `config/<svc>/.env` (names only are checked; values are never read back), its required
/// variables that the compose files interpolate set there to something (not empty), and
/// `docker compose build` when the service builds its image from its shipped context. Needs
/// `$rel`, `$svc`, `$envf`, `$log`, and as the arguments the secrets' names, then `--` and the
/// required variables as `NAME:LINE` (the line of their entry in service.yaml).
macro_rules! validate_body {
    () => {
        r#"cd -- "$rel"
set -- "$@" END
missing=""
while [ "$1" != END ] && [ "$1" != -- ]; do
  # `NAME=…` or `export NAME=…`, as Compose reads the file (names are `[A-Za-z0-9_]`).
  grep -Eq "^[[:space:]]*(export[[:space:]]+)?$1[[:space:]]*=" "$envf" 2>/dev/null || missing="$missing $1"
  shift
done
if [ -n "$missing" ]; then echo "secrets missing from $envf:$missing" >&2; exit 4; fi
# One line per variable, the fix once before them: what an apply shows of a failed step is
# its end, so every variable's file and line stay in sight.
unset_vars=""
if [ "$1" = -- ]; then
  shift
  while [ "$1" != END ]; do
    name=${1%%:*}; line=${1#*:}
    # Set to something, as Compose reads the file: `NAME=v`, `export NAME=v`, `NAME="v"`;
    # not `NAME=`, `NAME=""` or `NAME=''`, which Compose reads as empty.
    if ! grep -Eq "^[[:space:]]*(export[[:space:]]+)?$name[[:space:]]*=[[:space:]]*([^[:space:]\"']|\"[^\"]|'[^'])" "$envf" 2>/dev/null; then
      at="services/$svc/service.yaml"; [ "$line" = 0 ] || at="$at:$line"
      unset_vars="$unset_vars
$at: \`runtime.env_vars\`: \`$name\` is required, but $envf does not set it (or sets it empty)"
    fi
    shift
  done
fi
if [ -n "$unset_vars" ]; then
  echo "the compose file interpolates these required variables with no default, so Compose would run the service with an empty string: set each in $envf, give it a default (\`\${NAME:-...}\`), or mark it \`required: false\`$unset_vars" >&2
  exit 4
fi
logged compose config -q
# What Compose will really run, for the node's checks (`resolved`): of the resolved
# configuration only each service's name, network mode, ports and volumes, never the rest
# (its environment holds the secrets of the env file).
echo homelab-resolved
compose config --format json | awk '
/^  "services": [{]$/ { s = 1; next }
s && /^  [}]/ { s = 0 }
!s { next }
/^    "/ && /[{]$/ { print; next }
/^      "network_mode": / { print; next }
/^      "(ports|volumes)": \[$/ { b = 1; print; next }
b { print; if ($0 ~ /^      \]/) b = 0 }
'
# A service built from its shipped context is built here, on the node, before anything live
# changes: a build that fails stops the service at validate, with its output kept.
if grep -qE '^[[:space:]]+build:' docker-compose.yml docker-compose.override.yml 2>/dev/null; then
  logged compose build
fi
"#
    };
}

const VALIDATE: &str = concat!(
    r#"set -eu
rel=$1; svc=$2; envf=$3; log=$4; shift 4
"#,
    compose_fn!(),
    validate_body!()
);

/// Prepare in one round trip: unpacks the release (a tar archive on stdin) into a fresh
/// staging folder, checks every file's SHA-256 against the plan (`$5` `name sha` pairs) and
/// syncs it, renames the staging folder into place as the release, starts the service's jobs of
/// this plan over, and prints `uploaded` and where the live link pointed before. A controller
/// killed mid-upload closes stdin early: tar or a hash refuses it, the staging folder is
/// removed, and the previous release stays untouched. With `validate` after the pairs, the
/// validate stage runs next in the same command (see `VALIDATE`).
const PREPARE: &str = concat!(
    r#"set -eu
staging=$1; release=$2; live=$3; jobs=$4; n=$5; shift 5
rm -rf -- "$staging"
mkdir -p -- "$staging"
# `-m`: files are dated when they arrive, not 1970: a build context whose file changed but kept
# its size must miss Docker's build cache.
if ! tar -x -o -m -C "$staging" 2>"$staging.err"; then
  echo "the upload was cut short or is not an archive: $(head -c 300 "$staging.err")" >&2
  rm -rf -- "$staging" "$staging.err"; exit 6
fi
rm -f -- "$staging.err"
while [ "$n" -gt 0 ]; do
  f=$1; want=$2; shift 2; n=$((n - 1))
  got=$(sha256sum < "$staging/$f") || got=missing
  got=${got%% *}
  if [ "$got" != "$want" ]; then
    echo "uploaded $f does not match the plan (sha256 $got, expected $want)" >&2
    rm -rf -- "$staging"; exit 5
  fi
done
# Every file and folder of the release on disk before it is sealed, each on its own up to 512 of
# them: a sync of the whole file system (`sync -f`) waits for whatever else the node is writing.
if [ "$(find "$staging" | head -n 514 | wc -l)" -le 513 ]; then find "$staging" -exec sync -- {} +
else sync -f -- "$staging"; fi
rm -rf -- "$release"
mv -- "$staging" "$release"
sync -- "$(dirname -- "$release")"
rm -rf -- "$jobs"
echo uploaded
readlink -- "$live" || true
[ "${1:-}" = validate ] || exit 0
rel=$release; svc=$2; envf=$3; log=$4; shift 4
"#,
    compose_fn!(),
    validate_body!()
);

/// The service's data around a change (issue 18), as shell functions of the scripts that change
/// a service; they need `$svc` (the compose project). `hl_data MODE ...` runs the data
/// arguments of a script: `-` (nothing), or `snap SNAPSHOT STOP MINFREE ROOT N PATH...` or
/// `restore SNAPSHOT STOP MINFREE ROOT N PATH...` (the same arguments both ways, `STOP` being
/// `stop` or `live`, the paths relative to `ROOT`); it sets `$hl_shift` to the number of
/// arguments it used.
///
/// `hl_snapshot`: before a change, copies the service's folders that exist and the named
/// volumes of its compose project into the folder `SNAPSHOT` (0700), with owners, modes,
/// xattrs and symlinks kept: a reflink copy where the file system clones (`cp -a
/// --reflink=always`), otherwise a compressed archive of the folder (`tar --xattrs`). A folder
/// that does not exist is recorded as absent. The copy is made in `SNAPSHOT.tmp` and renamed
/// into place once whole (with a `complete` mark), so a snapshot cut short is made again from
/// the start and one already complete (an earlier run of this deploy) is kept as it is. Before
/// anything stops it checks the space: with the copy counted whole, the disk holding the
/// snapshots must keep `MINFREE` percent free, or it refuses (exit 71, nothing stopped or
/// changed). With `STOP` = `stop` the project's running containers are stopped for the copy
/// (the change that follows recreates them; a copy that fails starts them again, exit 71).
/// Prints `hl-data: snapshot ID ITEMS KIB`.
///
/// `hl_restore`: stops the project's containers and puts every item of a complete snapshot
/// back (what the folder holds is replaced; an absent one is emptied), its own owner and mode
/// included; prints `hl-data: restored ID ITEMS`, or `hl-data: no snapshot` when there is none
/// to restore. Idempotent: a restore cut short is run again whole. Fails with exit 72.
macro_rules! data_fns {
    () => {
        r#"hl_stop_project() {
  ids=$(docker ps -q --filter "label=com.docker.compose.project=$svc") || return 1
  # $ids unquoted: Docker's hex ids, one word each.
  [ -z "$ids" ] || docker stop $ids > /dev/null
}
hl_snapshot() {
  snap=$1; stop=$2; minfree=$3; droot=$4; n=$5; shift 5
  id=${snap##*/}
  if [ -f "$snap/complete" ]; then echo "hl-data: snapshot $id $(grep -cE '^(path|volume) ' "$snap/manifest") 0"; return 0; fi
  tmp=$snap.tmp
  rm -rf -- "$tmp"; mkdir -p -- "${snap%/*}"; mkdir -m 700 -- "$tmp" || return 71
  : > "$tmp/manifest"
  need=0; what=""; i=0
  while [ "$n" -gt 0 ]; do
    p=$1; shift; n=$((n - 1)); src=$droot/$p
    if [ ! -e "$src" ] && [ ! -L "$src" ]; then printf 'absent 0 - %s
' "$src" >> "$tmp/manifest"; continue; fi
    i=$((i + 1))
    printf 'path %s %s %s
' "$i" "$(stat -c %u:%g:%a -- "$src")" "$src" >> "$tmp/manifest"
    k=$(du -sk -- "$src" | cut -f1); k=${k:-0}; need=$((need + k)); what="$what, $p $k KiB"
  done
  vols=$(docker volume ls -q --filter "label=com.docker.compose.project=$svc") || { echo "docker volume ls failed" >&2; rm -rf -- "$tmp"; return 71; }
  for v in $vols; do
    mp=$(docker volume inspect -f '{{.Mountpoint}}' "$v") || { rm -rf -- "$tmp"; return 71; }
    if [ ! -r "$mp" ]; then echo "the snapshot cannot read volume $v at $mp: the node's homelab user needs root for snapshots" >&2; rm -rf -- "$tmp"; return 71; fi
    i=$((i + 1))
    printf 'volume %s %s %s %s
' "$i" "$(stat -c %u:%g:%a -- "$mp")" "$v" "$mp" >> "$tmp/manifest"
    k=$(du -sk -- "$mp" | cut -f1); k=${k:-0}; need=$((need + k)); what="$what, volume $v $k KiB"
  done
  df=$(df -Pk -- "$tmp" | awk 'NR == 2 { print $2, $4 }')
  total=${df% *}; avail=${df#* }
  case "$total$avail" in ''|*[!0-9]*) echo "df found no free space figure for $tmp" >&2; rm -rf -- "$tmp"; return 71 ;; esac
  left=$((avail - need))
  if [ "$total" -gt 0 ] && [ $((left * 100)) -lt $((total * minfree)) ]; then
    echo "the snapshot before this change needs $need KiB (${what#, }); the disk holding ${snap%/*/*} has $avail KiB free of $total KiB, so it would leave $((left * 100 / total))% free, under the node's threshold of $minfree% (snapshot_min_free in inventory/topology.yaml): nothing was stopped or changed; free space on the node, then apply again" >&2
    rm -rf -- "$tmp"; return 71
  fi
  stopped=""
  if [ "$stop" = stop ]; then
    hl_stop_project || { echo "stopping $svc for its snapshot failed" >&2; rm -rf -- "$tmp"; return 71; }
    stopped=1
  fi
  failed=""
  while read -r kind j own rest; do
    case $kind in
      path) src=$rest ;;
      volume) src=${rest#* } ;;
      *) continue ;;
    esac
    if [ -d "$src" ] && [ ! -L "$src" ]; then
      if ! cp -a --reflink=always -- "$src" "$tmp/$j" 2>/dev/null; then
        rm -rf -- "$tmp/$j"
        tar --xattrs --xattrs-include='*' --numeric-owner -C "$src" -czpf "$tmp/$j.tgz" . 2> "$tmp/err" || { failed="$src: $(head -c 300 "$tmp/err")"; break; }
      fi
    else
      cp -a --reflink=auto -- "$src" "$tmp/$j" 2> "$tmp/err" || { failed="$src: $(head -c 300 "$tmp/err")"; break; }
    fi
  done < "$tmp/manifest"
  if [ -n "$failed" ]; then
    rm -rf -- "$tmp"
    [ -z "$stopped" ] || docker start $(docker ps -aq --filter "label=com.docker.compose.project=$svc") > /dev/null 2>&1 || true
    echo "the snapshot before this change failed ($failed): nothing was changed" >&2; return 71
  fi
  rm -f -- "$tmp/err"
  : > "$tmp/complete"
  # Each file and folder synced where they are files and folders, up to 512 of them; else
  # (a larger copy, a link, a device) the file system.
  if [ -z "$(find "$tmp" ! -type f ! -type d | head -c 1)" ] && [ "$(find "$tmp" | head -n 514 | wc -l)" -le 513 ]; then
    find "$tmp" -exec sync -- {} +
  else sync -f -- "$tmp"; fi
  mv -- "$tmp" "$snap"; sync -- "${snap%/*}"
  echo "hl-data: snapshot $id $i $need"
}
hl_restore() {
  snap=$1; id=${snap##*/}
  if [ ! -f "$snap/complete" ]; then echo "hl-data: no snapshot"; return 0; fi
  hl_stop_project || { echo "stopping $svc to restore its data failed" >&2; return 72; }
  items=0
  while read -r kind j own rest; do
    case $kind in
      absent)
        if [ -d "$rest" ] && [ ! -L "$rest" ]; then find "$rest" -mindepth 1 -delete || return 72
        else rm -f -- "$rest" || return 72; fi
        continue ;;
      path) dst=$rest ;;
      volume) dst=${rest#* } ;;
      *) continue ;;
    esac
    items=$((items + 1))
    if [ -d "$snap/$j" ] && [ ! -L "$snap/$j" ] || [ -f "$snap/$j.tgz" ]; then
      [ ! -L "$dst" ] || rm -f -- "$dst"
      [ -d "$dst" ] || { rm -f -- "$dst"; mkdir -p -- "$dst"; } || return 72
      find "$dst" -mindepth 1 -delete || { echo "emptying $dst failed" >&2; return 72; }
      if [ -d "$snap/$j" ]; then cp -a --reflink=auto -- "$snap/$j/." "$dst/" || return 72
      else tar --xattrs --xattrs-include='*' --numeric-owner -C "$dst" -xzpf "$snap/$j.tgz" || return 72; fi
      chown -- "${own%:*}" "$dst" && chmod -- "${own##*:}" "$dst" || return 72
    else
      rm -rf -- "$dst" && cp -a --reflink=auto -- "$snap/$j" "$dst" || return 72
    fi
  done < "$snap/manifest"
  sync -f -- "$snap" 2>/dev/null || true
  echo "hl-data: restored $id $items"
}
hl_data() {
  hl_shift=1
  [ "${1:--}" != - ] || return 0
  m=$1; snap=$2; stop=$3; minfree=$4; droot=$5; n=$6
  hl_shift=$((6 + n))
  shift 6
  case $m in
    snap) hl_snapshot "$snap" "$stop" "$minfree" "$droot" "$n" "$@" ;;
    restore) hl_restore "$snap" ;;
    recover)
      # A restore plan: the snapshot to put back follows the paths. Checked before anything
      # stops; then the data it replaces is snapshotted (a failed restore rolls back to it).
      hl_shift=$((hl_shift + 1))
      eval "from=\${$((n + 1))}"
      if [ ! -f "$from/complete" ]; then echo "no complete snapshot at $from on the node: nothing was stopped or changed" >&2; return 71; fi
      hl_snapshot "$snap" "$stop" "$minfree" "$droot" "$n" "$@" || return $?
      hl_restore "$from" || { echo "restoring $svc's data from ${from##*/} failed" >&2; return 72; } ;;
  esac
}
"#
    };
}

/// Points the live link of a service at a release (atomic symlink rename) and brings the
/// project up. Idempotent: running it again after a dropped link converges to the same state.
/// A live folder that is not a link (deployed by hand) is kept among the releases. The tenth
/// argument counts the contract's folders that follow, three arguments each (absolute path,
/// `UID:GID` or `-`, octal mode or `-`): created, given their owner (the folder and what it
/// holds, only when the folder's own owner differs, so a large data folder is walked once) and
/// their mode (the folder itself), before the project comes up. Counted, not taken to the
/// end: the dead-man runs this script with more arguments after its own. After the folders,
/// a count of the Docker networks the compose files take as `external: true`, and when it is
/// not 0 a lock file and their names: each created when missing (names checked by the plan's
/// reader), one service at a time (`flock`, where the node has it). Before the folders
/// come the data arguments (`data_fns`): a deploy snapshots the service's data first, a
/// rollback restores the snapshot its deploy took, both before anything else.
pub(super) const SWITCH_AND_UP: &str = concat!(
    r#"set -eu
svc=$1; rel=$2; live=$3; services=$4; data=$5; logs=$6; releases=$7; envf=$8; log=$9
shift 9
"#,
    compose_fn!(),
    data_fns!(),
    r#"rc=0; hl_data "$@" || rc=$?
[ "$rc" = 0 ] || exit "$rc"
shift "$hl_shift"
k=${1:-0}; [ $# -eq 0 ] || shift
mkdir -p -- "$services" "$data" "$logs"
while [ "$k" -gt 0 ]; do
  f=$1; o=$2; m=$3; shift 3; k=$((k - 1))
  mkdir -p -- "$f"
  if [ "$o" != - ] && [ "$(stat -c %u:%g -- "$f")" != "$o" ]; then chown -R -- "$o" "$f"; fi
  if [ "$m" != - ]; then chmod -- "$m" "$f"; fi
done
j=${1:-0}; [ $# -eq 0 ] || shift
locked=""
if [ "$j" -gt 0 ]; then
  # Services of one apply come up side by side: one of them creates a network at a time, or
  # two `network create` at once could make two networks of one name.
  netlock=$1; shift
  if command -v flock >/dev/null 2>&1; then
    mkdir -p -- "$(dirname -- "$netlock")"; exec 9>>"$netlock"; flock 9; locked=1
  fi
fi
while [ "$j" -gt 0 ]; do
  net=$1; shift; j=$((j - 1))
  docker network inspect -- "$net" >/dev/null 2>&1 && continue
  if ! said=$(docker network create -- "$net" 2>&1); then
    printf 'cannot create the Docker network %s: %s\n' "$net" "$said" | tail -n 5 >&2; exit 1
  fi
done
if [ -n "$locked" ]; then exec 9>&-; fi
# The critical backup sets the stability agent watches: a set with no backup record yet gets
# one that counts from now, so a set never backed up is reported once past its max_age.
w=${1:-0}; [ $# -eq 0 ] || shift
while [ "$w" -gt 0 ]; do
  r=$1; a=$2; shift 2; w=$((w - 1))
  [ ! -e "$r" ] || continue
  mkdir -p -- "${r%/*}"
  printf '{"time":null,"since":"%s","critical":true,"max_age_secs":%s}\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$a" > "$r.tmp"
  chmod 600 -- "$r.tmp"; mv -f -- "$r.tmp" "$r"
done
if [ -d "$live" ] && [ ! -L "$live" ]; then
  mkdir -p -- "$releases"
  mv -- "$live" "$releases/adopted-$(date +%s)"
fi
rm -f -- "$live.new"
ln -s -- "$rel" "$live.new"
mv -fT -- "$live.new" "$live"
sync -- "$services"
cd -- "$live"
# `--build`: a release that builds its image builds it again here (from the cache when validate
# just built it); a rollback thereby restores the previous release's image under its tag,
# which the failed release's build had taken.
logged compose up -d --build --remove-orphans --force-recreate
"#
);

/// Takes a project down and removes its live link (releases are kept for rollback).
/// Then the data arguments (`data_fns`): a delete snapshots the service's data before it
/// goes down (the last snapshot is kept), the rollback of a first deploy restores what was
/// there before it, after the project is down.
pub(super) const DOWN_AND_UNLINK: &str = concat!(
    r#"set -eu
svc=$1; live=$2; services=$3; envf=$4; shift 4
"#,
    compose_fn!(),
    data_fns!(),
    r#"if [ "${1:--}" = snap ]; then rc=0; hl_data "$@" || rc=$?; [ "$rc" = 0 ] || exit "$rc"; fi
if [ -e "$live" ]; then
  cd -- "$live"
  if ! said=$(compose down --remove-orphans 2>&1); then
    printf '%s\n' "$said" | tail -n 20 | hl_redact "$envf" >&2; exit 1
  fi
  cd /
fi
rm -f -- "$live"
sync -- "$services" 2>/dev/null || true
if [ "${1:--}" = restore ]; then rc=0; hl_data "$@" || rc=$?; [ "$rc" = 0 ] || exit "$rc"; fi
"#
);

/// Runs the contract's healthcheck once, with its timeout; its output is kept in `$3` on the
/// node and its last lines printed, with the values of the node's `.env` (`$7`) redacted.
/// When it passes and `$5` (seconds) is not 0, the service's
/// containers (compose project `$6`) are watched over that stability window (`STABLE`): a
/// service that does not stay up exits 76. Then, with a dead-man folder `$4`, a healthy and
/// stable service confirms the deploy, unless the node decided first (exit 75). When an
/// earlier run of the apply already decided to roll back (`controller-rollback`), nothing runs
/// and it exits 77: that rollback is to be finished, not a verify. A failing check exits 1
/// whatever its own status, so that 75, 76 and 77 always mean the above.
const HEALTHCHECK: &str = r#"set -u
live=$1; secs=$2; log=$3; dm=${4:-}; stable=${5:-0}; svc=${6:-}; envf=${7:-}
if [ -n "$dm" ] && [ -f "$dm/decided/controller-rollback" ]; then
  echo "an earlier run of this apply decided to roll back"; exit 77
fi
mkdir -p -- "$(dirname -- "$log")"
: > "$log"; chmod 600 -- "$log"
cd -- "$live" || exit 1
timeout -k 2 "$secs" sh ./healthcheck.sh > "$log" 2>&1
rc=$?
tail -n 20 -- "$log" | hl_redact "$envf"
[ "$rc" = 0 ] || exit 1
if [ "$stable" -gt 0 ]; then
  if ! said=$(hl_stable "$svc" "$stable"); then printf '%s\n' "$said" | hl_redact "$envf"; exit 76; fi
fi
if [ -n "$dm" ] && [ -d "$dm" ]; then
  if mkdir -- "$dm/decided" 2>/dev/null; then : > "$dm/decided/confirmed"; exit 0; fi
  [ -f "$dm/decided/confirmed" ] && exit 0
  echo "the node rolled the service back by itself: no confirmation before its deadline"
  echo "node-rollback: $(cat -- "$dm/rollback.rc" 2>/dev/null || echo running) $(cat -- "$dm/rollback.health" 2>/dev/null || echo unknown)"
  exit 75
fi
exit 0
"#;

/// `hl_stable SVC SECONDS`: every container of the compose project `SVC` stays up for that
/// many seconds, looked at every second: running (a one-shot container that exited 0 under
/// restart `no` or `on-failure` counts as done), its restart count unchanged since the first
/// look, and not `unhealthy` where the compose file defines Docker's own healthcheck. Prints
/// what broke and returns 1 at the first look that finds a problem.
pub(super) const STABLE: &str = r#"hl_stable() {
  svc=$1; n=$2
  ids=$(docker ps -aq --filter "label=com.docker.compose.project=$svc") || { echo "docker ps failed"; return 1; }
  [ -n "$ids" ] || { echo "the healthcheck passed, but project $svc has no container"; return 1; }
  # A container with no `restart:` has an empty policy, which Docker takes as `no`: written
  # so, or `read` would shift every field after it (its exit code read as the policy).
  fmt='{{.Name}} {{.State.Status}} {{.RestartCount}} {{if .HostConfig.RestartPolicy.Name}}{{.HostConfig.RestartPolicy.Name}}{{else}}no{{end}} {{.State.ExitCode}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}'
  # $ids unquoted: Docker's hex ids, one word each.
  first=$(docker inspect -f "$fmt" $ids 2>&1) || { echo "docker inspect failed: $first"; return 1; }
  t=0
  while :; do
    now=$(docker inspect -f "$fmt" $ids 2>&1) || { echo "a container of $svc went away: $now"; return 1; }
    bad=$(printf '%s\n' "$now" | while read -r name st count policy code health; do
      was=$count
      while read -r n0 _ c0 _; do [ "$n0" = "$name" ] && was=$c0; done <<EOF
$first
EOF
      name=${name#/}
      case $st in
        running) ;;
        exited) case "$code:$policy" in 0:no|0:on-failure|0:) ;; *) echo "$name exited (code $code)" ;; esac ;;
        *) echo "$name is $st" ;;
      esac
      [ "$count" = "$was" ] || echo "$name restarted $((count - was)) time(s)"
      [ "$health" != unhealthy ] || echo "$name is unhealthy (its compose healthcheck)"
    done)
    if [ -n "$bad" ]; then
      echo "the healthcheck passed, then the service did not stay up for ${n}s (at ${t}s: $(printf '%s' "$bad" | tr '\n' ';' | sed 's/;/; /g'))"
      return 1
    fi
    [ "$t" -lt "$n" ] || return 0
    sleep 1; t=$((t + 1))
  done
}
"#;

/// What a failing service looks like, for the incident: status and recent logs, written to
/// `logs/<svc>/` on the node (logs may hold secrets: they stay on the node). With a dead-man
/// folder `$5`, the controller first takes the deploy's one decision for its own rollback
/// (`decided/controller-rollback`), so the node's watchdog stands down for good; when the node
/// had already decided and rolled back by itself, it exits 75 after printing the status. A
/// rollback an earlier run of the apply decided keeps that run's incident log.
pub(super) const DIAGNOSE: &str = concat!(
    redact_fn!(),
    r#"set -u
svc=$1; live=$2; out=$3; envf=$4; dm=${5:-}
by_node="" again=""
if [ -n "$dm" ] && [ -d "$dm" ]; then
  if mkdir -- "$dm/decided" 2>/dev/null; then : > "$dm/decided/controller-rollback"
  elif [ -f "$dm/decided/rolled-back" ]; then by_node=1
  elif [ -f "$dm/decided/controller-rollback" ] && [ -s "$out" ]; then again=1
  fi
fi
cd -- "$live" 2>/dev/null || cd /
dc() {
  if [ -f "$envf" ]; then docker compose -p "$svc" --env-file "$envf" "$@"; else docker compose -p "$svc" "$@"; fi
}
# A rollback decided by an earlier run keeps that run's incident log: it shows the failure.
if [ -z "$again" ]; then
  mkdir -p -- "$(dirname -- "$out")"
  : > "$out"; chmod 600 -- "$out"
  {
    echo "== docker compose ps"; dc ps -a 2>&1
    echo "== docker compose logs (last 100 lines)"; dc logs --no-color --tail 100 2>&1
  } > "$out"
fi
dc ps -a --format '{{.Name}} {{.State}} {{.Status}}' 2>/dev/null | head -n 20 | hl_redact "$envf"
[ -z "$by_node" ] || exit 75
"#
);

/// The detached job's own process (`JOB`; `native::job` starts it the same way): `$1` the job
/// folder, then the step's `sh -c` arguments; its pid, output and exit status kept there, the
/// status written last and synced, so `rc` is there only once the rest is.
macro_rules! job_wrapper {
    () => {
        r#"j=$1; shift; echo $$ > "$j/pid.tmp"; mv -f -- "$j/pid.tmp" "$j/pid"
      sh -c "$@" > "$j/out" 2> "$j/err"; rc=$?
      echo "$rc" > "$j/rc.tmp"; sync -- "$j/rc.tmp" "$j/out" "$j/err" 2>/dev/null; mv -f -- "$j/rc.tmp" "$j/rc""#
    };
}

/// [`job_wrapper`] as a script of its own, for `native::job`.
const JOB_WRAPPER: &str = job_wrapper!();

/// Runs a step (`$2`, a script, with the arguments after it) as a detached job of the node:
/// in its own session (`setsid`), so a controller that dies or loses the link leaves it
/// finishing, with its pid, output and exit status kept in the job folder `$1`. A job already
/// running there (started by a run that died) is waited for, and a finished one's result is
/// read, instead of starting the step again beside it; a job whose process is gone without a
/// result (the node rebooted) is started again. Prints the job's output and exits with its
/// status.
const JOB: &str = concat!(
    r#"set -u
j=$1; shift
if [ ! -f "$j/rc" ]; then
  pid=$(cat -- "$j/pid" 2>/dev/null) || pid=""
  if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
    rm -rf -- "$j"; mkdir -p -m 700 -- "$j" || exit 96
    setsid sh -c '"#,
    job_wrapper!(),
    r#"' \
      homelab-job "$j" "$@" < /dev/null > /dev/null 2>&1 &
    # Started here: wait for it as a child, no polling (a job started by another run is polled
    # below; so is this one if `setsid` had to fork).
    wait "$!"
  fi
  while [ ! -f "$j/rc" ]; do
    pid=$(cat -- "$j/pid" 2>/dev/null) || pid=""
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null && [ ! -f "$j/rc" ]; then
      sleep 0.2; [ -f "$j/rc" ] && break
      echo "the job in $j ended without a result" >&2; exit 98
    fi
    sleep 0.2
  done
fi
cat -- "$j/out" 2>/dev/null
cat -- "$j/err" >&2 2>/dev/null
exit "$(cat -- "$j/rc")"
"#
);

/// The dead-man's watchdog (`ARM`; `native::arm` starts it the same way): its arguments are
/// `ARM`'s after `$dm`, see there.
macro_rules! watchdog {
    () => {
        r#"dm=$1; upjob=$2; secs=$3; evroot=$4; node=$5; line=$6; live=$7; rel=$8; script=$9; shift 9
      echo "$$" > "$dm/pid"
      while [ ! -f "$upjob/rc" ]; do [ -d "$dm" ] || exit 0; sleep 1; done
      [ "$(cat -- "$upjob/rc")" = 0 ] || exit 0
      t=0
      while [ "$t" -lt "$secs" ]; do [ -d "$dm/decided" ] && exit 0; sleep 1; t=$((t + 1)); done
      mkdir -- "$dm/decided" 2>/dev/null || exit 0
      if [ "$(readlink -- "$live" 2>/dev/null)" != "$rel" ]; then : > "$dm/decided/superseded"; exit 0; fi
      : > "$dm/decided/rolled-back"
      sh -c "$script" homelab "$@" > "$dm/rollback.log" 2>&1; rc=$?
      # The previous release, verified by its own healthcheck (three tries, 2 s apart), before
      # the rollback is recorded as done: `rollback.health` says ok or failed.
      if [ "$rc" = 0 ] && [ -L "$live" ]; then
        health=failed; i=0
        while [ "$i" -lt 3 ]; do
          if (cd -- "$live" && HOMELAB_ROOT=${live%/state/services/*} HOMELAB_NODE=$node HOMELAB_SERVICE=${live##*/} timeout -k 2 30 sh ./healthcheck.sh) > "$dm/rollback-health.log" 2>&1; then health=ok; break; fi
          i=$((i + 1)); sleep 2
        done
        echo "$health" > "$dm/rollback.health"
      fi
      echo "$rc" > "$dm/rollback.rc"
      # A rollback that failed is not told as completed.
      [ "$rc" = 0 ] || line="${line%%remediation_completed*}remediation_failed${line#*remediation_completed}"
      now=$(date -u +%Y-%m-%dT%H:%M:%SZ); day=$(date -u +%F)
      mkdir -p -- "$evroot/$day/$node"
      printf "%s\n" "${line%%__TIME__*}$now${line#*__TIME__}" >> "$evroot/$day/$node/events.jsonl""#
    };
}

/// [`watchdog`] as a script of its own, for `native::arm`.
pub(super) const WATCHDOG: &str = watchdog!();

/// Arms the dead-man rollback of a deploy, before its job starts (in the same command): a
/// watchdog in its own session waits for the `compose up` job (`$2`) to end; after a failed
/// `up` it stands down (the controller rolls back); after a good one it gives the controller
/// `$3` seconds to confirm over a fresh connection (`HEALTHCHECK` with the folder). Whoever creates `$1/decided`
/// first decides: the confirmation, or the watchdog, which then rolls the service back by
/// itself (the script `$9` with the arguments after `$10`, its output in `$1/rollback.log`) and
/// appends the event line `$6` (`__TIME__` replaced by the time) to the day's file under `$4`
/// for node `$5`. So a change that cuts the node off from its controller undoes itself.
/// The decision is made once: the controller's own rollback takes it first (`DIAGNOSE`), and
/// a watchdog whose deploy is no longer the live release (`$7` no longer points at `$8`:
/// rolled back, or replaced by a newer plan) records `superseded` and touches nothing.
/// With `$1` empty, nothing is armed. Shifts its arguments; `JOB` follows.
pub(super) const ARM: &str = concat!(
    r#"dm=$1; shift
if [ -n "$dm" ]; then
  upjob=$1; secs=$2; evroot=$3; node=$4; line=$5; live=$6; rel=$7; script=$8; n=$9; shift 9
  # Armed once per deploy: a resumed deploy keeps the watchdog (or the decision) it finds.
  pid=$(cat -- "$dm/pid" 2>/dev/null) || pid=""
  if [ ! -d "$dm/decided" ] && { [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; }; then
    rm -rf -- "$dm"; mkdir -p -m 700 -- "$dm"
    setsid sh -c '"#,
    watchdog!(),
    r#"' \
      homelab-deadman "$dm" "$upjob" "$secs" "$evroot" "$node" "$line" "$live" "$rel" "$script" "$@" < /dev/null > /dev/null 2>&1 &
  fi
  shift "$n"
fi
"#
);

/// The end of a node's run in one command: the records it carries, then the plan recorded as
/// consumed (`$2`, written to `$1`, when `$1` is not empty), then housekeeping (`$5` releases
/// kept per service: of each `releases live` pair after `$7`, the older releases are removed,
/// never the live one nor a staging folder (pairs `snapshots -` prune a service's snapshots the
/// same way); of the apply journals under `$6`, finished ones
/// beyond the newest `$5` and never this plan's `$7`), then the lock released if its holder is
/// still ours (stdin).
const FINISH: &str = r#"set -eu
consumed=$1; record=$2; l=$3; h=$4; keep=$5; deploys=$6; plan=$7; shift 7
if [ -n "$consumed" ]; then
  d=$(dirname -- "$consumed"); mkdir -p -- "$d"
  printf '%s' "$record" > "$consumed.tmp"
  sync -- "$consumed.tmp"; mv -f -- "$consumed.tmp" "$consumed"; sync -- "$d"
fi
while [ $# -ge 2 ]; do
  rels=$1; live=$2; shift 2
  cur=$(readlink -- "$live" 2>/dev/null) || cur=""
  n=0
  for r in $(ls -1t -- "$rels" 2>/dev/null); do
    case $r in .staging-*|*.tmp) continue ;; esac
    n=$((n + 1))
    if [ "$n" -le "$keep" ] || [ "$rels/$r" = "$cur" ]; then continue; fi
    rm -rf -- "${rels:?}/$r"
  done
done
if [ -n "$deploys" ]; then
  n=0
  for p in $(ls -1t -- "$deploys" 2>/dev/null); do
    [ "$p" = "$plan" ] && continue
    grep -q '"finished": true' "$deploys/$p/journal.json" 2>/dev/null || continue
    n=$((n + 1))
    if [ "$n" -ge "$keep" ]; then rm -rf -- "${deploys:?}/$p"; fi
  done
fi
if [ -f "$h" ] && cmp -s - "$h"; then rm -rf -- "$l"; fi
"#;

/// Runs nothing: for records that must reach the node now (a rollback's outcome).
const NOTHING: &str = "true\n";

/// Takes the node lock (`mkdir` is atomic) and writes stdin as its holder, or prints the
/// holder there is, on one line. Ends by shifting its two arguments, so the refresh script
/// can follow it in the same command.
const LOCK: &str = r#"l=$1; h=$2; shift 2
mkdir -p -- "$(dirname -- "$l")"
if mkdir -- "$l" 2>/dev/null; then
  cat > "$h"; sync -- "$h"; echo acquired
else
  echo "held $(tr '\n' ' ' < "$h" 2>/dev/null || echo '{}')"
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

/// Runs `script` on the node with `args`, after the records `carry` brings (see `CARRY`).
#[allow(clippy::too_many_arguments)] // the parts of one command, each named at the call
fn sh(
    exec: &dyn NodeExec,
    carry: &Carry,
    script: &str,
    args: &[&str],
    stdin: &[u8],
    timeout: Duration,
    docker: bool,
) -> Result<Output, StepError> {
    let host = format!("DOCKER_HOST={}", exec.docker_host());
    let env: &[&str] = if docker { &[&host] } else { &[] };
    run_sh(carry, script, args, env, |argv| exec.run(argv, stdin, timeout))
}

/// Runs `work`, a step done in process (`native`), as one command of `exec`
/// (`NodeExec::run_native`: with its batch, the batch's records first), after the records
/// `carry` brings. `work` must not send a command through `exec` itself.
fn here<T>(
    exec: &dyn NodeExec,
    carry: &Carry,
    work: impl FnOnce() -> Result<T, StepError>,
) -> Result<T, StepError> {
    let mut work = Some(work);
    let mut result = None;
    let out = exec.run_native(&mut || {
        if let Some(Err(e)) = (!carry.is_empty()).then(|| super::native::carry(carry)) {
            return records_not_written(&e);
        }
        if let Some(w) = work.take() {
            result = Some(w());
        }
        Output::default()
    });
    result.unwrap_or_else(|| {
        Err(records_refused(&out).unwrap_or_else(|| StepError::Failed {
            step: "writing the apply journal",
            status: out.status,
            stderr: out.stderr_text(),
        }))
    })
}

/// A step done in process (see [`here`]) that carries no records, for the modules beside this
/// one; `step` names it in its error.
pub(super) fn in_process<T>(
    exec: &dyn NodeExec,
    step: &'static str,
    work: impl FnOnce() -> std::io::Result<T>,
) -> Result<T, StepError> {
    here(exec, &Carry::default(), || work().map_err(failed(step)))
}

/// An error of a step done in process.
fn failed(step: &'static str) -> impl Fn(std::io::Error) -> StepError {
    move |e| StepError::Failed { step, status: None, stderr: e.to_string() }
}

/// What a command answers when the records it carries cannot be written (as `CARRY` exits).
pub(super) fn records_not_written(e: &std::io::Error) -> Output {
    Output {
        status: Some(97),
        stdout: Vec::new(),
        stderr: format!("cannot write the apply journal or events on the node: {e}").into_bytes(),
    }
}

/// Runs a script of another module on the node (`sh -c`, with `DOCKER_HOST` set), nothing
/// carried: backups and their listing.
pub fn script(
    exec: &dyn NodeExec,
    script: &str,
    args: &[&str],
    timeout: Duration,
) -> Result<Output, StepError> {
    sh(exec, &Carry::default(), script, args, b"", timeout, true)
}

/// The command line of `sh`: `env` (`NAME=value`, set for the script), the records, the
/// script and its arguments, run by `run`.
fn run_sh(
    carry: &Carry,
    script: &str,
    args: &[&str],
    env: &[&str],
    run: impl FnOnce(&[&str]) -> Result<Output, ExecError>,
) -> Result<Output, StepError> {
    let text = format!("{CARRY}{script}");
    let records = carry_args(carry);
    let mut argv: Vec<&str> = Vec::new();
    if !env.is_empty() {
        argv.push("env");
        argv.extend(env);
    }
    argv.extend(["sh", "-c", &text, "homelab"]);
    argv.extend(records.iter().map(String::as_str));
    argv.extend(args);
    Ok(run(&argv)?)
}

/// The error of a command whose carried records could not be written on the node (`CARRY`
/// exits 97 before the step runs), for commands whose other statuses all mean something.
fn records_refused(out: &Output) -> Option<StepError> {
    (out.status == Some(97)).then(|| StepError::Failed {
        step: "writing the apply journal",
        status: out.status,
        stderr: out.stderr_text(),
    })
}

fn ok(out: Output, step: &'static str) -> Result<Output, StepError> {
    if out.success() {
        Ok(out)
    } else {
        Err(StepError::Failed { step, status: out.status, stderr: out.stderr_text() })
    }
}

/// Runs `script` as a detached job of the node in the folder `job` (see `JOB`); where the
/// node's root is on this machine, this program does it when it can (`homelab node job`,
/// its step `native`, one process where the script starts a dozen).
#[allow(clippy::too_many_arguments)] // as `sh`
pub(super) fn job(
    exec: &dyn NodeExec,
    carry: &Carry,
    job: &str,
    (script, native): (&str, &'static str),
    args: &[&str],
    timeout: Duration,
    step: &'static str,
) -> Result<Output, StepError> {
    if exec.on_this_machine() {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let host = exec.docker_host();
        let runner = match super::native::program() {
            Some(program) => super::native::Runner::Program { program, step: native },
            None => super::native::Runner::Script { wrapper: JOB_WRAPPER, script },
        };
        return here(exec, carry, || ok(run_job_here(runner, job, &args, timeout, &host)?, step));
    }
    let mut all = vec![job, script, "homelab"];
    all.extend(args);
    ok(sh(exec, carry, JOB, &all, b"", timeout, true)?, step)
}

fn run_job_here(
    runner: super::native::Runner<'_>,
    dir: &str,
    args: &[String],
    timeout: Duration,
    docker_host: &str,
) -> Result<Output, StepError> {
    let deadline = std::time::Instant::now() + timeout;
    let j = super::native::Job { runner, dir, args, docker_host, deadline };
    match super::native::job(&j).map_err(failed("starting a job"))? {
        Some(out) => Ok(out),
        None => {
            Err(ExecError::Timeout { what: format!("the job in {dir}"), after: timeout }.into())
        }
    }
}

pub fn write_durable(
    exec: &dyn NodeExec,
    path: &str,
    mode: &str,
    bytes: &[u8],
) -> Result<(), StepError> {
    let sha = crate::digest::sha256_hex(bytes);
    let none = Carry::default();
    ok(sh(exec, &none, WRITE_DURABLE, &[path, mode, &sha], bytes, SHORT, false)?, "writing a file")
        .map(|_| ())
}

/// The command that writes the records `carry` brings and nothing else, as an argument
/// vector: the prelude of a batch (`batch`); `None` when it brings nothing.
pub fn carry_command(carry: &Carry) -> Option<Vec<String>> {
    if carry.is_empty() {
        return None;
    }
    let mut argv = vec!["sh".to_owned(), "-c".to_owned(), format!("{CARRY}{NOTHING}")];
    argv.push("homelab".to_owned());
    argv.extend(carry_args(carry));
    Some(argv)
}

/// Writes the records `carry` brings, and nothing else.
pub fn flush(exec: &dyn NodeExec, carry: &Carry) -> Result<(), StepError> {
    ok(sh(exec, carry, NOTHING, &[], b"", SHORT, false)?, "writing the apply journal").map(|_| ())
}

/// What validate needs, when it runs in the same command as prepare.
pub struct ValidateArgs<'a> {
    pub svc: &'a str,
    pub env_file: &'a str,
    pub log: &'a str,
    pub secrets: &'a [String],
    pub variables: &'a [crate::plan::Required],
}

impl ValidateArgs<'_> {
    /// The script's arguments after its fixed ones: the secrets' names, then `--` and each
    /// required variable as `NAME:LINE`.
    fn names(&self) -> Vec<String> {
        let mut out: Vec<String> = self.secrets.to_vec();
        if !self.variables.is_empty() {
            out.push("--".to_owned());
            out.extend(self.variables.iter().map(|v| format!("{}:{}", v.name, v.line)));
        }
        out
    }
}

/// What the prepare command did: the release is sealed (`previous`: where the live link
/// pointed before), and, when asked, how validate went.
pub struct Prepared {
    pub previous: Option<String>,
    pub validated: Option<Result<Resolved, StepError>>,
}

/// The node's resolved configuration, by compose key: what validate read from `docker compose
/// config --format json` with the node's env file.
pub type Resolved = BTreeMap<String, ResolvedService>;

/// Reads the resolved configuration out of what validate printed (`stdout`, from the line
/// `homelab-resolved` on): Compose's indented JSON as `VALIDATE`'s filter kept it, a line
/// `    "<key>": {` a service, then its `"network_mode"` line and its `"ports"` and `"volumes"`
/// arrays, whole.
fn resolved(stdout: &str) -> Result<Resolved, StepError> {
    let bad = unreadable_config;
    let mut lines = stdout.lines().skip_while(|l| *l != RESOLVED);
    if lines.next().is_none() {
        return Err(bad("the node printed none".to_owned()));
    }
    let mut out = Resolved::new();
    let mut current: Option<String> = None;
    while let Some(l) = lines.next() {
        if let Some(head) = l.strip_prefix("    \"").and_then(|_| l.trim().strip_suffix(": {")) {
            let key: String = serde_json::from_str(head)
                .map_err(|e| bad(format!("`{}`: {e}", crate::quote::cut(l))))?;
            out.entry(key.clone()).or_default();
            current = Some(key);
            continue;
        }
        let Some(key) = &current else {
            return Err(bad(format!("`{}` before any service", crate::quote::cut(l))));
        };
        let svc = out.get_mut(key).expect("entered above");
        if let Some(mode) = l.strip_prefix("      \"network_mode\": ") {
            let mode: String = serde_json::from_str(mode.trim_end_matches(','))
                .map_err(|e| bad(format!("`network_mode`: {e}")))?;
            svc.host_network = mode == "host";
            continue;
        }
        let list = match l {
            "      \"ports\": [" => &mut svc.ports,
            "      \"volumes\": [" => &mut svc.volumes,
            _ => return Err(bad(format!("unexpected `{}`", crate::quote::cut(l)))),
        };
        let mut text = String::from("[");
        loop {
            let Some(item) = lines.next() else {
                return Err(bad("an array of a service does not end".to_owned()));
            };
            if item == "      ]" || item == "      ]," {
                break;
            }
            text.push_str(item);
        }
        text.push(']');
        *list = serde_json::from_str(&text)
            .map_err(|e| bad(format!("the ports or volumes of `{key}`: {e}")))?;
    }
    if out.is_empty() {
        return Err(bad("it names no service".to_owned()));
    }
    Ok(out)
}

/// Validate's error when the node's resolved configuration cannot be read (`why`).
fn unreadable_config(why: String) -> StepError {
    StepError::Failed {
        step: "validate",
        status: None,
        stderr: format!("the node's resolved configuration (`docker compose config --format json`) does not read as expected: {why}; what Compose will mount cannot be checked"),
    }
}

/// Uploads a release as one tar stream, checks and seals it (see `PREPARE`), and validates it
/// in the same command when `validate` is given. `files`: (path in the release, mode, bytes);
/// `jobs`: the service's job folder of this plan, started over.
#[allow(clippy::too_many_arguments)] // the parts of one command, each named at the call
pub fn prepare(
    exec: &dyn NodeExec,
    carry: &Carry,
    staging: &str,
    release: &str,
    live: &str,
    jobs: &str,
    files: &[(&str, u32, &[u8])],
    validate: Option<ValidateArgs<'_>>,
) -> Result<Prepared, StepError> {
    if exec.on_this_machine() {
        // The upload in process (`native::upload`), then validate.
        return here(exec, carry, || {
            let previous = super::native::upload(staging, release, live, jobs, files)
                .map_err(failed("uploading the release"))?;
            let validated = validate.map(|v| validate_here(exec, release, &v));
            Ok(Prepared { previous, validated })
        });
    }
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
    let count = hashes.len().to_string();
    let mut args = vec![staging, release, live, jobs, count.as_str()];
    for (n, h) in &hashes {
        args.push(n);
        args.push(h);
    }
    let names = validate.as_ref().map(ValidateArgs::names).unwrap_or_default();
    if let Some(v) = &validate {
        args.extend(["validate", v.svc, v.env_file, v.log]);
        args.extend(names.iter().map(String::as_str));
    }
    let out = sh(exec, carry, PREPARE, &args, &archive, LONG, validate.is_some())?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    // The upload's own lines come before validate's.
    let mut lines = stdout.lines().take_while(|l| *l != RESOLVED);
    if lines.next() != Some("uploaded") {
        ok(out, "uploading the release")?;
        return Err(StepError::Failed {
            step: "uploading the release",
            status: None,
            stderr: "the node did not confirm the upload".to_owned(),
        });
    }
    let previous = lines.next().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned);
    let validated = validate.map(|_| ok(out, "validate").and_then(|_| resolved(&stdout)));
    Ok(Prepared { previous, validated })
}

/// `log`: where the output of `compose config` is kept on the node. What Compose resolved is
/// returned for the node's checks.
pub fn validate(
    exec: &dyn NodeExec,
    carry: &Carry,
    release: &str,
    v: &ValidateArgs<'_>,
) -> Result<Resolved, StepError> {
    if exec.on_this_machine() {
        return here(exec, carry, || validate_here(exec, release, v));
    }
    let mut args = vec![release, v.svc, v.env_file, v.log];
    let names = v.names();
    args.extend(names.iter().map(String::as_str));
    let out = ok(sh(exec, carry, VALIDATE, &args, b"", LONG, true)?, "validate")?;
    resolved(&String::from_utf8_lossy(&out.stdout))
}

/// [`validate`] in process (`native::validate`), inside the command that runs it.
fn validate_here(
    exec: &dyn NodeExec,
    release: &str,
    v: &ValidateArgs<'_>,
) -> Result<Resolved, StepError> {
    let host = exec.docker_host();
    let checks = super::native::Validate {
        release,
        svc: v.svc,
        env_file: v.env_file,
        log: v.log,
        secrets: v.secrets,
        variables: v.variables,
        docker_host: &host,
        deadline: std::time::Instant::now() + LONG,
    };
    match super::native::validate(&checks).map_err(failed("validate"))? {
        super::native::Validated::Refused(out) => Err(ok(out, "validate").expect_err("refused")),
        super::native::Validated::TimedOut(what) => {
            Err(ExecError::Timeout { what, after: LONG }.into())
        }
        super::native::Validated::Config(json) => resolved_json(&json),
    }
}

/// The resolved configuration out of `docker compose config --format json` itself (validate
/// in process): each service's network mode, ports and volumes, as [`resolved`] reads them
/// from what `VALIDATE`'s filter kept.
fn resolved_json(json: &[u8]) -> Result<Resolved, StepError> {
    let bad = unreadable_config;
    let config: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| bad(format!("it is not JSON: {e}")))?;
    let services = config
        .get("services")
        .and_then(serde_json::Value::as_object)
        .ok_or_else(|| bad("it names no service".to_owned()))?;
    let list = |svc: &serde_json::Value, key: &str| -> Vec<serde_json::Value> {
        svc.get(key).and_then(serde_json::Value::as_array).cloned().unwrap_or_default()
    };
    let out: Resolved = services
        .iter()
        .map(|(key, svc)| {
            let service = ResolvedService {
                host_network: svc.get("network_mode").and_then(serde_json::Value::as_str)
                    == Some("host"),
                ports: list(svc, "ports"),
                volumes: list(svc, "volumes"),
            };
            (key.clone(), service)
        })
        .collect();
    if out.is_empty() {
        return Err(bad("it names no service".to_owned()));
    }
    Ok(out)
}

/// What a step does with the service's data (issue 18; see `data_fns`).
#[derive(Clone, Copy)]
pub enum Data<'a> {
    /// Nothing (a plan written before snapshots, or a step that does not change the service).
    Keep,
    /// Snapshot before the change, into `dir`.
    Snapshot { dir: &'a str, spec: &'a crate::plan::Snapshot },
    /// Restore the snapshot in `dir`, taken before the change being undone.
    Restore { dir: &'a str },
    /// A restore plan: snapshot into `dir` (what the restore replaces), then put back the
    /// snapshot in `from`.
    Recover { dir: &'a str, spec: &'a crate::plan::Snapshot, from: &'a str },
}

impl Data<'_> {
    /// The script's data arguments.
    fn args(&self, layout: &Layout) -> Vec<String> {
        let (mode, dir, spec) = match self {
            Data::Keep => return vec!["-".to_owned()],
            Data::Snapshot { dir, spec } => ("snap", dir, Some(spec)),
            Data::Restore { dir } => ("restore", dir, None),
            Data::Recover { dir, spec, from } => {
                let mut args = Data::Snapshot { dir, spec }.args(layout);
                args[0] = "recover".to_owned();
                args.push((*from).to_owned());
                return args;
            }
        };
        let mut args = vec![mode.to_owned(), (*dir).to_owned()];
        match spec {
            Some(s) => {
                args.push(if s.stop { "stop" } else { "live" }.to_owned());
                args.push(s.min_free.to_string());
                args.push(layout.root().trim_end_matches('/').to_owned());
                args.push(s.paths.len().to_string());
                args.extend(s.paths.iter().cloned());
            }
            None => {
                args.extend(["live".to_owned(), "0".to_owned(), layout.root().to_owned()]);
                args.push("0".to_owned());
            }
        }
        args
    }
}

/// What the data part of a step's output said: the snapshot it took or the one it restored.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DataSaid {
    /// `(id, items, KiB)` of the snapshot taken (or kept from an earlier run).
    pub snapshot: Option<(String, u64, u64)>,
    /// `(id, items)` of the snapshot restored.
    pub restored: Option<(String, u64)>,
}

impl DataSaid {
    pub fn read(stdout: &str) -> DataSaid {
        let mut said = DataSaid::default();
        for l in stdout.lines() {
            let Some(rest) = l.strip_prefix("hl-data: ") else { continue };
            let w: Vec<&str> = rest.split(' ').collect();
            let num = |i: usize| w.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            match w.first() {
                Some(&"snapshot") if w.len() >= 2 => {
                    said.snapshot = Some((w[1].to_owned(), num(2), num(3)))
                }
                Some(&"restored") if w.len() >= 2 => {
                    said.restored = Some((w[1].to_owned(), num(2)))
                }
                _ => {}
            }
        }
        said
    }
}

/// A deploy's dead-man rollback (see `ARM`): where its decision is kept, how long the node
/// waits for the controller's confirmation after `compose up`, and what it rolls back to.
pub struct Deadman<'a> {
    pub dir: &'a str,
    pub secs: u64,
    pub node: &'a str,
    /// The event the node appends when it rolls back by itself, `__TIME__` for its time.
    pub line: &'a str,
    /// The release to go back to; `None`: a first deploy, taken down.
    pub previous: Option<&'a str>,
    /// Where the output of the node's own rollback is kept.
    pub log: &'a str,
}

/// Switches the live link to `release` and brings it up, as the detached job `job_dir`; with
/// `deadman`, the node rolls it back by itself unless the controller confirms in time.
/// `log`: where the output of `compose up` is kept on the node.
#[allow(clippy::too_many_arguments)] // the parts of one command, each named at the call
pub fn switch_and_up(
    exec: &dyn NodeExec,
    carry: &Carry,
    layout: &Layout,
    svc: &str,
    release: &str,
    log: &str,
    job_dir: &str,
    deadman: Option<&Deadman<'_>>,
    folders: &[crate::model::Folder],
    watched: &[(String, u64)],
    networks: &[String],
    data: Data<'_>,
) -> Result<DataSaid, StepError> {
    let up_args = |rel: &'_ str, log: &'_ str, data: Data<'_>| -> Vec<String> {
        let mut args = vec![
            svc.to_owned(),
            rel.to_owned(),
            layout.live(svc),
            layout.services(),
            layout.data(svc),
            layout.logs(svc),
            layout.releases(svc),
            layout.env_file(svc),
            log.to_owned(),
        ];
        args.extend(data.args(layout));
        args.push(folders.len().to_string());
        for f in folders {
            args.push(format!("{}/{}", layout.root().trim_end_matches('/'), f.path));
            args.push(f.owner.clone().unwrap_or_else(|| "-".to_owned()));
            args.push(f.mode.clone().unwrap_or_else(|| "-".to_owned()));
        }
        args.push(networks.len().to_string());
        if !networks.is_empty() {
            // The apply's own folder (`state/deploy/<plan>`, three up from the job's), shared
            // by the services of the apply: the lock of their network creation.
            let job = std::path::Path::new(job_dir);
            let apply = job.ancestors().nth(3).unwrap_or(job);
            args.push(apply.join("networks.lock").display().to_string());
            args.extend(networks.iter().cloned());
        }
        args.push(watched.len().to_string());
        for (set, secs) in watched {
            args.push(layout.backup_record(svc, set));
            args.push(secs.to_string());
        }
        args
    };
    let mut all: Vec<String> = Vec::new();
    match deadman {
        None => all.push(String::new()),
        Some(d) => {
            // The node's own rollback restores the snapshot this deploy takes.
            let restore = match data {
                Data::Snapshot { dir, .. } | Data::Recover { dir, .. } => Data::Restore { dir },
                _ => Data::Keep,
            };
            let (script, back) = match d.previous {
                Some(prev) => (SWITCH_AND_UP, up_args(prev, d.log, restore)),
                None => {
                    let mut back = vec![
                        svc.to_owned(),
                        layout.live(svc),
                        layout.services(),
                        layout.env_file(svc),
                    ];
                    back.extend(restore.args(layout));
                    (DOWN_AND_UNLINK, back)
                }
            };
            all.extend([
                d.dir.to_owned(),
                job_dir.to_owned(),
                d.secs.to_string(),
                layout.events_root(),
                d.node.to_owned(),
                d.line.to_owned(),
                layout.live(svc),
                release.to_owned(),
                script.to_owned(),
                back.len().to_string(),
            ]);
            all.extend(back);
        }
    }
    if exec.on_this_machine() {
        let host = exec.docker_host();
        return here(exec, carry, || {
            if deadman.is_some() {
                // The watchdog's arguments: all but the folder and the count of the rollback's.
                let mut watch: Vec<String> = all[1..9].to_vec();
                watch.extend_from_slice(&all[10..]);
                super::native::arm(WATCHDOG, &all[0], &watch, &host)
                    .map_err(failed("arming the dead-man"))?;
            }
            let args = up_args(release, log, data);
            // This program does the step (`homelab node job`) when it can: one process where
            // the script starts some thirty.
            let runner = match super::native::program() {
                Some(program) => {
                    super::native::Runner::Program { program, step: super::switch::STEP }
                }
                None => {
                    super::native::Runner::Script { wrapper: JOB_WRAPPER, script: SWITCH_AND_UP }
                }
            };
            let out = ok(run_job_here(runner, job_dir, &args, LONG, &host)?, "docker compose up")?;
            Ok(DataSaid::read(&String::from_utf8_lossy(&out.stdout)))
        });
    }
    all.extend([job_dir.to_owned(), SWITCH_AND_UP.to_owned(), "homelab".to_owned()]);
    all.extend(up_args(release, log, data));
    let args: Vec<&str> = all.iter().map(String::as_str).collect();
    let script = format!("{ARM}{JOB}");
    let out = ok(sh(exec, carry, &script, &args, b"", LONG, true)?, "docker compose up")?;
    Ok(DataSaid::read(&String::from_utf8_lossy(&out.stdout)))
}

/// Takes the project down and removes its live link, as the detached job `job_dir`.
pub fn down_and_unlink(
    exec: &dyn NodeExec,
    carry: &Carry,
    layout: &Layout,
    svc: &str,
    job_dir: &str,
    data: Data<'_>,
) -> Result<DataSaid, StepError> {
    let mut args = vec![svc.to_owned(), layout.live(svc), layout.services(), layout.env_file(svc)];
    args.extend(data.args(layout));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let steps = (DOWN_AND_UNLINK, super::switch::DOWN);
    let out = job(exec, carry, job_dir, steps, &args, LONG, "docker compose down")?;
    Ok(DataSaid::read(&String::from_utf8_lossy(&out.stdout)))
}

/// What one healthcheck attempt found.
#[derive(Debug, PartialEq, Eq)]
pub enum Health {
    /// It passed, the service stayed up over the stability window, and (with a dead-man
    /// folder) the deploy is confirmed.
    Healthy,
    /// It failed; the last lines it printed.
    Failing(String),
    /// It passed, then a container restarted, stopped or turned unhealthy within the
    /// stability window: what broke.
    Unstable(String),
    /// An earlier run of this apply (killed or cut off) had decided to roll back: finish that.
    RollbackBegun,
    /// It passed too late: the node had already rolled the service back by itself; how that
    /// rollback stands, as the node recorded it.
    RolledBackByNode(NodeRollback),
}

/// One healthcheck attempt (its whole output is kept in `log` on the node), followed on a
/// pass by the stability window `stable` (in the same command: the node watches, the link only
/// waits); with `deadman`, a healthy and stable service confirms the deploy in that command too.
#[allow(clippy::too_many_arguments)] // the parts of one command, each named at the call
pub fn healthcheck(
    exec: &dyn NodeExec,
    carry: &Carry,
    layout: &Layout,
    node: &str,
    svc: &str,
    timeout: Duration,
    stable: Duration,
    log: &str,
    deadman: Option<&str>,
) -> Result<Health, StepError> {
    let live = layout.live(svc);
    let secs = timeout.as_secs().max(1).to_string();
    let stable_secs = stable.as_secs().to_string();
    let env = [
        format!("HOMELAB_ROOT={}", layout.root()),
        format!("HOMELAB_NODE={node}"),
        format!("HOMELAB_SERVICE={svc}"),
    ];
    let host = format!("DOCKER_HOST={}", exec.docker_host());
    let mut vars: Vec<&str> = vec![host.as_str()];
    vars.extend(env.iter().map(String::as_str));
    let envf = layout.env_file(svc);
    // The window is watched on the node: one `docker inspect` a second, at most a few more.
    let budget = timeout + stable + stable / 2 + Duration::from_secs(10);
    // Where the proof that the node takes new connections comes apart from this connection
    // (a node's engine), why it did not come.
    let unproven = std::cell::RefCell::new(None);
    let out = if exec.on_this_machine() {
        let proven = || {
            exec.proven().map_err(|e| {
                let said = e.to_string();
                *unproven.borrow_mut() = Some(e);
                std::io::Error::other(said)
            })
        };
        let check = super::native::Check {
            live: &live,
            timeout: timeout.max(Duration::from_secs(1)),
            log,
            deadman,
            env_file: &envf,
            env: &vars,
            proven: &proven,
        };
        // The window, when there is one, watched here as `STABLE` watches it: what broke, or
        // nothing.
        let docker_host = exec.docker_host();
        let watch = || {
            if stable.is_zero() {
                return None;
            }
            super::stable::watch(&super::stable::Window {
                svc,
                secs: stable.as_secs(),
                docker: std::path::Path::new("docker"),
                docker_host: &docker_host,
                deadline: std::time::Instant::now() + stable + stable / 2 + Duration::from_secs(10),
            })
        };
        let out = here(exec, carry, || {
            super::native::healthcheck(&check, watch).map_err(failed("healthcheck"))
        });
        if let Some(e) = unproven.take() {
            return Err(StepError::Link {
                reason: format!("no new connection to the node after the deploy: {e}"),
            });
        }
        out?
    } else {
        let args =
            [live.as_str(), secs.as_str(), log, deadman.unwrap_or(""), &stable_secs, svc, &envf];
        let script = format!("{}{STABLE}{HEALTHCHECK}", redact_fn!());
        run_sh(carry, &script, &args, &vars, |argv| exec.run(argv, b"", budget))?
    };
    if let Some(e) = records_refused(&out) {
        return Err(e);
    }
    match out.status {
        Some(0) => Ok(Health::Healthy),
        Some(75) if deadman.is_some() => {
            Ok(Health::RolledBackByNode(NodeRollback::parse(&String::from_utf8_lossy(&out.stdout))))
        }
        Some(77) if deadman.is_some() => Ok(Health::RollbackBegun),
        Some(76) => Ok(Health::Unstable(
            String::from_utf8_lossy(&out.stdout).trim().lines().last().unwrap_or("").to_owned(),
        )),
        _ => Ok(Health::Failing(String::from_utf8_lossy(&out.stdout).trim().to_owned())),
    }
}

/// What diagnose found: the short status lines, and whether the node's dead-man had already
/// rolled the service back by itself (else, with a dead-man folder, the decision is now the
/// controller's rollback).
pub struct Diagnosis {
    pub status: String,
    pub rolled_back_by_node: bool,
}

/// How the dead-man's own rollback stands, from the `node-rollback: RC HEALTH` line the
/// healthcheck command prints when the node decided first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeRollback {
    /// Still running (no exit status yet), or the line was missing.
    Running,
    /// The rollback failed with this exit status.
    Failed(String),
    /// The previous release is up; `Some(true)`: its healthcheck passed; `None`: a first deploy
    /// taken down, nothing to check.
    Done(Option<bool>),
}

impl NodeRollback {
    fn parse(stdout: &str) -> NodeRollback {
        let Some(rest) = stdout.lines().rev().find_map(|l| l.strip_prefix("node-rollback: "))
        else {
            return NodeRollback::Running;
        };
        let mut words = rest.split_whitespace();
        match (words.next(), words.next()) {
            (Some("0"), Some("ok")) => NodeRollback::Done(Some(true)),
            (Some("0"), Some("failed")) => NodeRollback::Done(Some(false)),
            (Some("0"), _) => NodeRollback::Done(None),
            (Some("running") | None, _) => NodeRollback::Running,
            (Some(rc), _) => NodeRollback::Failed(rc.to_owned()),
        }
    }

    /// How a summary says it.
    pub fn said(&self) -> String {
        match self {
            NodeRollback::Running => "its rollback was still running".to_owned(),
            NodeRollback::Failed(rc) => format!("its rollback FAILED (exit {rc})"),
            NodeRollback::Done(Some(true)) => "the previous version is healthy".to_owned(),
            NodeRollback::Done(Some(false)) => {
                "the previous version is up but its healthcheck fails".to_owned()
            }
            NodeRollback::Done(None) => "the first deploy was taken down".to_owned(),
        }
    }
}

/// Status and logs of a service into `out` on the node; with `deadman`, takes the deploy's
/// decision for the controller's rollback in the same command (see `DIAGNOSE`).
pub fn diagnose(
    exec: &dyn NodeExec,
    carry: &Carry,
    layout: &Layout,
    svc: &str,
    out: &str,
    deadman: Option<&str>,
) -> Result<Diagnosis, StepError> {
    let (live, envf) = (layout.live(svc), layout.env_file(svc));
    let o = if exec.on_this_machine() {
        let host = exec.docker_host();
        here(exec, carry, || {
            super::diagnose::diagnose(&super::diagnose::Diagnose {
                svc,
                live: &live,
                out,
                env_file: &envf,
                deadman,
                docker: std::path::Path::new("docker"),
                docker_host: &host,
                deadline: std::time::Instant::now() + LONG,
            })
            .map_err(failed("diagnose"))
        })?
    } else {
        let args = [svc, &live, out, &envf, deadman.unwrap_or("")];
        sh(exec, carry, DIAGNOSE, &args, b"", LONG, true)?
    };
    if let Some(e) = records_refused(&o) {
        return Err(e);
    }
    Ok(Diagnosis {
        status: String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        rolled_back_by_node: o.status == Some(75),
    })
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

/// Takes the node lock for `holder` (the exact bytes [`unlock`] compares later) and, in the
/// same command, reads the node as refresh does (so what is checked is read under the lock
/// when it was taken): the lock's answer, and the refresh answer for `observe::answer`.
pub fn lock_and_refresh(
    exec: &dyn NodeExec,
    layout: &Layout,
    holder: &[u8],
    idle: Duration,
) -> Result<(Lock, Result<Output, ExecError>), StepError> {
    if exec.on_this_machine() {
        return lock_and_refresh_here(exec, layout, holder, idle);
    }
    let (l, h) = (layout.lock(), layout.lock_holder());
    let script = format!("{LOCK}{}", crate::observe::REFRESH_SCRIPT);
    let args = [l.as_str(), h.as_str(), exec.root()];
    let none = Carry::default();
    // Read as it comes: a node holding many services answers at length, and only a pause
    // (`idle`) gives up; a refresh that stalls after the lock was taken still says so.
    let (out, stalled) =
        match run_sh(&none, &script, &args, &[], |argv| exec.run_streaming(argv, holder, idle)) {
            Ok(out) => (out, None),
            Err(StepError::Exec(ExecError::Stalled { what, idle, after, stdout })) => {
                let out = Output { status: None, stdout: stdout.clone(), stderr: Vec::new() };
                (out, Some(ExecError::Stalled { what, idle, after, stdout: Vec::new() }))
            }
            Err(e) => return Err(e),
        };
    let Some(i) = out.stdout.iter().position(|b| *b == b'\n') else {
        if let Some(e) = stalled {
            return Err(StepError::Link { reason: e.to_string() });
        }
        return Err(StepError::LockAnswer {
            answer: String::from_utf8_lossy(&out.stdout).into_owned() + &out.stderr_text(),
        });
    };
    let first = String::from_utf8_lossy(&out.stdout[..i]).into_owned();
    let rest = out.stdout[i + 1..].to_vec();
    let lock = match first.split_once(' ') {
        _ if first == "acquired" => Lock::Acquired,
        Some(("held", holder)) => Lock::Held(crate::observe::lock_holder(holder)),
        _ => return Err(StepError::LockAnswer { answer: first }),
    };
    let answer = match stalled {
        Some(ExecError::Stalled { what, idle, after, .. }) => {
            Err(ExecError::Stalled { what, idle, after, stdout: rest })
        }
        _ => Ok(Output { status: out.status, stdout: rest, stderr: out.stderr }),
    };
    Ok((lock, answer))
}

/// [`lock_and_refresh`] where the node's root is on this machine (the node's engine, the local
/// transport): the lock taken with one `mkdir` as [`LOCK`] takes it, its holder written and
/// synced, and the refresh read in process (`observe::here`), with no shell.
fn lock_and_refresh_here(
    exec: &dyn NodeExec,
    layout: &Layout,
    holder: &[u8],
    idle: Duration,
) -> Result<(Lock, Result<Output, ExecError>), StepError> {
    use std::path::Path;
    let (l, h) = (layout.lock(), layout.lock_holder());
    let failed = |what: &str, e: std::io::Error| StepError::Failed {
        step: "taking the node lock",
        status: None,
        stderr: format!("{what}: {e}"),
    };
    if let Some(parent) = Path::new(&l).parent() {
        std::fs::create_dir_all(parent).map_err(|e| failed(&l, e))?;
    }
    let lock = match std::fs::create_dir(&l) {
        Ok(()) => {
            crate::files::write_atomic(Path::new(&h), holder).map_err(|e| failed(&h, e))?;
            Lock::Acquired
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // As the script says it: the holder on one line, `{}` when it cannot be read.
            let text = std::fs::read(&h)
                .map(|b| String::from_utf8_lossy(&b).replace('\n', " "))
                .unwrap_or_else(|_| "{}".to_owned());
            Lock::Held(crate::observe::lock_holder(&text))
        }
        Err(e) => return Err(failed(&l, e)),
    };
    Ok((lock, crate::observe::here::answer(Path::new(exec.root()), idle)))
}

/// Releases the lock if `holder` (the bytes given to [`lock_and_refresh`]) still holds it.
pub fn unlock(exec: &dyn NodeExec, layout: &Layout, holder: &[u8]) -> Result<(), StepError> {
    let (l, h) = (layout.lock(), layout.lock_holder());
    let none = Carry::default();
    if exec.on_this_machine() {
        return here(exec, &none, || {
            super::native::unlock(&l, &h, holder).map_err(failed("releasing the node lock"))
        });
    }
    ok(sh(exec, &none, UNLOCK, &[&l, &h], holder, SHORT, false)?, "releasing the node lock")
        .map(|_| ())
}

/// What the end of a node's run prunes: `keep` releases per service of `services` (those
/// this run completed) and `keep` apply journals, never `plan`'s.
pub struct Prune<'a> {
    pub keep: u32,
    pub plan: &'a str,
    pub services: &'a [String],
}

/// The end of a node's run in one command: the records `carry` brings, the plan recorded as
/// consumed on the node (`consumed`: its path and record), housekeeping (`prune`), and the lock
/// released if `holder` still holds it.
pub fn finish(
    exec: &dyn NodeExec,
    carry: &Carry,
    layout: &Layout,
    consumed: Option<(&str, &str)>,
    prune: &Prune<'_>,
    holder: &[u8],
) -> Result<(), StepError> {
    let (l, h) = (layout.lock(), layout.lock_holder());
    let (path, record) = consumed.unwrap_or(("", ""));
    let keep = prune.keep.max(2).to_string();
    let deploys = layout.deploy_root();
    // Releases beside the live one, and snapshots of the services' data (the newest always
    // stays: a deleted service keeps its last).
    let pairs: Vec<(String, String)> = prune
        .services
        .iter()
        .flat_map(|s| {
            [(layout.releases(s), layout.live(s)), (layout.snapshots(s), String::from("-"))]
        })
        .collect();
    if exec.on_this_machine() {
        let keep = prune.keep.max(2) as usize;
        let lock = (l.as_str(), h.as_str(), holder);
        return here(exec, carry, || {
            super::native::finish(consumed, &pairs, keep, &deploys, prune.plan, lock)
                .map_err(failed("recording the plan as applied"))
        });
    }
    let mut args = vec![path, record, &l, &h, &keep, &deploys, prune.plan];
    for (r, live) in &pairs {
        args.push(r);
        args.push(live);
    }
    ok(sh(exec, carry, FINISH, &args, holder, SHORT, false)?, "recording the plan as applied")
        .map(|_| ())
}

/// Removes the lock whoever holds it; returns what its `holder.json` said (`{}` if nothing),
/// or `None` when the node was not locked.
pub fn break_lock(exec: &dyn NodeExec, layout: &Layout) -> Result<Option<String>, StepError> {
    let (l, h) = (layout.lock(), layout.lock_holder());
    if exec.on_this_machine() {
        let none = Carry::default();
        let holder = here(exec, &none, || {
            super::native::break_lock(&l, &h).map_err(failed("breaking the node lock"))
        })?;
        return Ok(holder.map(|h| String::from_utf8_lossy(&h).trim().to_owned()));
    }
    let out = sh(exec, &Carry::default(), BREAK_LOCK, &[&l, &h], b"", SHORT, false)?;
    if out.status == Some(3) {
        return Ok(None);
    }
    let out = ok(out, "breaking the node lock")?;
    Ok(Some(String::from_utf8_lossy(&out.stdout).trim().to_owned()))
}

/// Reads a small file; `Ok(None)` when it does not exist.
pub fn read_file(exec: &dyn NodeExec, path: &str) -> Result<Option<Vec<u8>>, StepError> {
    if exec.on_this_machine() {
        // As `READ_FILE`: only a regular file (a folder there is no file).
        return here(exec, &Carry::default(), || match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Ok(m) if !m.is_file() => Ok(None),
            _ => std::fs::read(path)
                .map(Some)
                .map_err(|e| StepError::Read { path: path.to_owned(), stderr: e.to_string() }),
        });
    }
    let out = sh(exec, &Carry::default(), READ_FILE, &[path], b"", SHORT, false)?;
    match out.status {
        Some(0) => Ok(Some(out.stdout)),
        Some(44) => Ok(None),
        _ => Err(StepError::Read { path: path.to_owned(), stderr: out.stderr_text() }),
    }
}

#[cfg(test)]
mod tests {
    use super::{NodeRollback, REDACT, REDACT_MIN};

    /// `hl_redact ENV` run by the system's `sh` and `awk` (as on a node) over `text`.
    fn redact(env: &str, text: &str) -> String {
        String::from_utf8(super::redact_by_script(env.as_bytes(), text.as_bytes())).unwrap()
    }

    #[test]
    fn the_nodes_env_values_are_redacted_literally_whatever_they_hold() {
        assert!(REDACT.contains(&format!("awk -v min={REDACT_MIN} ")));
        let env = concat!(
            "# a comment, not a value: comment-words\n",
            "PLAIN=plain-value-1\n",
            "export EXPORTED=exported-value\n",
            "META='s3cr3t $(touch /tmp/x) `id` *.[a]^ \\1 & | \"q\"'\n",
            "DOLLAR=pa$word$1\n",
            "DQ=\"double quoted!\"\n",
            "INLINE=inline-value # a comment\n",
            "MULTI=\"-----BEGIN KEY\nmiddle-line-of-it\nbGluZTI=\n-----END KEY\"\n",
            "LONGER=plain-value-1-and-more\n",
            "SHORT=abc\n",
            "EMPTY=\n",
            "CRLF=windows-line\r\n",
        );
        let text = concat!(
            "a plain-value-1-and-more b plain-value-1 c\n",
            "exported-value\n",
            "s3cr3t $(touch /tmp/x) `id` *.[a]^ \\1 & | \"q\"\n",
            "compose prints pa$$word$$1, the shell pa$word$1\n",
            "double quoted! inline-value\n",
            "-----BEGIN KEY\nmiddle-line-of-it\nbGluZTI=\n-----END KEY\n",
            "abc stays, as does comment-words, windows-line goes\n",
        );
        assert_eq!(
            redact(env, text),
            concat!(
                "a [redacted] b [redacted] c\n",
                "[redacted]\n",
                "[redacted]\n",
                "compose prints [redacted], the shell [redacted]\n",
                "[redacted] [redacted]\n",
                "[redacted]\n[redacted]\n[redacted]\n[redacted]\n",
                "abc stays, as does comment-words, [redacted] goes\n",
            )
        );
        // No value is ever printed from the file itself, and with no file the text passes.
        assert_eq!(redact("", "x y\n"), "x y\n");
        assert_eq!(redact("A=plain-value-1\n", ""), "");
    }

    #[test]
    fn output_whose_values_cannot_be_read_is_withheld() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let envf = dir.path().join(".env");
        std::fs::write(&envf, "TOKEN=unreadable-value\n").unwrap();
        std::fs::set_permissions(&envf, std::fs::Permissions::from_mode(0o000)).unwrap();
        // As root every file is readable: the check runs as `nobody`, as an apply user that
        // is not the file's owner would.
        // SAFETY: geteuid has no preconditions.
        let cmd = if unsafe { libc::geteuid() } == 0 {
            let mut c = std::process::Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "sh"]);
            c
        } else {
            std::process::Command::new("sh")
        };
        let out = super::redact_with(cmd, &envf, b"TOKEN=unreadable-value\n");
        let said = String::from_utf8(out.stdout).unwrap();
        assert!(!said.contains("unreadable-value"), "{said}");
        assert!(said.contains("[output withheld:"), "{said}");
    }

    /// What `VALIDATE`'s filter keeps of `docker compose config --format json` (Compose
    /// v2.40's output, cut by the script's awk), after the upload's lines.
    const FILTERED: &str = r#"uploaded
/opt/homelab/state/releases/immich/p0
homelab-resolved
    "immich": {
      "network_mode": "bridge",
      "ports": [
        {
          "mode": "ingress",
          "host_ip": "0.0.0.0",
          "target": 9000,
          "published": "9000",
          "protocol": "tcp"
        }
      ],
      "volumes": [
        {
          "type": "bind",
          "source": "/opt/homelab/state/releases/immich/p1/library",
          "target": "/data",
          "bind": {
            "create_host_path": true
          }
        }
      ]
    "other": {
    "with \"quotes\"": {
      "network_mode": "host",
      "ports": [
        {
          "target": 53,
          "published": "53",
          "protocol": "udp"
        }
      ],
"#;

    #[test]
    fn the_resolved_configuration_is_read_service_by_service() {
        let r = super::resolved(FILTERED).unwrap();
        assert_eq!(r.keys().collect::<Vec<_>>(), ["immich", "other", "with \"quotes\""]);
        assert_eq!(
            r["immich"].volumes[0]["source"],
            "/opt/homelab/state/releases/immich/p1/library"
        );
        assert_eq!(r["immich"].ports[0]["host_ip"], "0.0.0.0");
        assert!(!r["immich"].host_network && r["with \"quotes\""].host_network);
        assert!(r["other"].volumes.is_empty() && r["other"].ports.is_empty());
    }

    #[test]
    fn a_resolved_configuration_that_does_not_read_fails_validate() {
        let said = |s: &str| super::resolved(s).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(said("uploaded\n").contains("the node printed none"));
        assert!(said("homelab-resolved\n").contains("it names no service"));
        assert!(said("homelab-resolved\n      \"ports\": [\n").contains("before any service"));
        let cut = "homelab-resolved\n    \"a\": {\n      \"volumes\": [\n        {\n";
        assert!(said(cut).contains("does not end"), "{}", said(cut));
        let bad = "homelab-resolved\n    \"a\": {\n      \"volumes\": [\n        {x\n      ]\n";
        assert!(said(bad).contains("the ports or volumes of `a`"), "{}", said(bad));
    }

    #[test]
    fn the_nodes_own_rollback_is_read_from_its_last_line() {
        let said = |s: &str| NodeRollback::parse(s);
        assert_eq!(said("x\nnode-rollback: 0 ok\n"), NodeRollback::Done(Some(true)));
        assert_eq!(said("node-rollback: 0 failed"), NodeRollback::Done(Some(false)));
        assert_eq!(said("node-rollback: 0 unknown"), NodeRollback::Done(None));
        assert_eq!(said("node-rollback: 3 unknown"), NodeRollback::Failed("3".into()));
        assert_eq!(said("node-rollback: running unknown"), NodeRollback::Running);
        assert_eq!(said("no such line"), NodeRollback::Running);
    }
}
