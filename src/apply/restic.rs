//! A restic snapshot fetched onto the node for a restore plan (issue 18, `homelab restore
//! --snapshot restic:ID`): checked to be a backup of the service with every path inside its own
//! data, then restored by restic into the node's snapshots folder in the form of a snapshot
//! taken before a change, which the deploy puts back as it puts back any snapshot.

use std::time::Duration;

use super::remote::{self, StepError};
use crate::node::Layout;
use crate::transport::NodeExec;

/// The lines that make restic ready in a script holding `$repo` and `$pwf`: it is installed and
/// the password file readable (else exit 3, saying which), then its environment names the
/// repository and the file, never a password the caller's environment holds.
macro_rules! restic_ready {
    () => {
        r#"command -v restic > /dev/null || { echo "restic is not installed on the node: apt-get install restic" >&2; exit 3; }
[ -r "$pwf" ] || { echo "no restic password file at $pwf on the node: write the repository's password there (chmod 600)" >&2; exit 3; }
"#
    };
}
pub(crate) use restic_ready;

/// restic's environment from `$repo` and `$pwf` alone.
macro_rules! restic_env {
    () => {
        r#"unset RESTIC_PASSWORD RESTIC_PASSWORD_COMMAND
export RESTIC_REPOSITORY="$repo" RESTIC_PASSWORD_FILE="$pwf"
"#
    };
}
pub(crate) use restic_env;

const SHOW_TIMEOUT: Duration = Duration::from_secs(300);
/// A fetch copies the data: long, but not without end.
const FETCH_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// What a restic snapshot is: `$1` repository, `$2` password file, `$3` id, then restic's
/// `-o` options. Prints restic's JSON listing of that one snapshot.
const SHOW: &str = concat!(
    r#"set -u
repo=$1; pwf=$2; id=$3; shift 3
"#,
    restic_ready!(),
    restic_env!(),
    r#"t=$(mktemp) || exit 90
trap 'rm -f -- "$t"' EXIT
restic "$@" snapshots --json "$id" 2> "$t" || { tail -n 3 "$t" >&2; exit 4; }
"#
);

/// Fetches a restic snapshot into the node's snapshots folder in the form of a local one
/// (`manifest`, an item per path or volume, `complete`), so a restore puts it back as it puts
/// back a snapshot taken before a change: `$1` repository, `$2` password file, `$3` id, `$4`
/// the folder to make, `$5` runtime root, `$6` the service (its compose project), `$7` the
/// number of entries, then three arguments an entry: `path`, the path as backed up and the
/// path relative to the root; or `volume`, the mountpoint as backed up and the volume's compose
/// key (found on this node by Compose's labels); then restic's `-o` options. A folder already
/// complete is kept (a resumed apply). Prints `hl-fetch: ITEMS`.
const FETCH: &str = concat!(
    r#"set -u
repo=$1; pwf=$2; id=$3; dest=$4; droot=$5; svc=$6; n=$7; shift 7
if [ -f "$dest/complete" ]; then echo "hl-fetch: $(grep -cE '^(path|volume) ' "$dest/manifest")"; exit 0; fi
tmp=$dest.tmp
rm -rf -- "$tmp"; mkdir -p -- "${dest%/*}"; mkdir -m 700 -- "$tmp" || exit 3
: > "$tmp/manifest"; : > "$tmp/entries"
k=$n
while [ "$k" -gt 0 ]; do printf '%s %s\n' "$1" "$3" >> "$tmp/entries"; printf '%s\n' "$2" >> "$tmp/sources"; shift 3; k=$((k - 1)); done
"#,
    restic_env!(),
    r#"restic "$@" restore "$id" --target "$tmp/r" > /dev/null 2> "$tmp/err" || { tail -n 3 "$tmp/err" >&2; rm -rf -- "$tmp"; exit 4; }
i=0
while IFS= read -r src <&3 && IFS=' ' read -r kind key <&4; do
  from=$tmp/r$src
  if [ ! -e "$from" ] && [ ! -L "$from" ]; then continue; fi
  i=$((i + 1))
  own=$(stat -c %u:%g:%a -- "$from")
  case $kind in
    path) printf 'path %s %s %s\n' "$i" "$own" "$droot/$key" >> "$tmp/manifest" ;;
    volume)
      vol=$(docker volume ls -q --filter "label=com.docker.compose.project=$svc" --filter "label=com.docker.compose.volume=$key" | head -n 1)
      if [ -z "$vol" ]; then echo "the volume $key of $svc is not on the node: apply a plan that creates $svc, then restore" >&2; rm -rf -- "$tmp"; exit 6; fi
      mp=$(docker volume inspect -f '{{.Mountpoint}}' "$vol") || { rm -rf -- "$tmp"; exit 6; }
      printf 'volume %s %s %s %s\n' "$i" "$own" "$vol" "$mp" >> "$tmp/manifest" ;;
  esac
  mv -- "$from" "$tmp/$i" || { rm -rf -- "$tmp"; exit 5; }
done 3< "$tmp/sources" 4< "$tmp/entries"
rm -rf -- "$tmp/r" "$tmp/err" "$tmp/sources" "$tmp/entries"
: > "$tmp/complete"
sync -f -- "$tmp" 2>/dev/null || true
mv -- "$tmp" "$dest"
echo "hl-fetch: $i"
"#
);

/// Fetches restic snapshot `id` of service `svc` into `dest` on the node, in the form of a
/// snapshot taken before a change. Refused unless the snapshot is a backup of `svc` (its
/// `svc=` tag) whose every path lies under the node's runtime root, inside one of `within`
/// (the service's own data, as its plan's snapshot names it). Returns the items fetched.
pub fn fetch(
    exec: &dyn NodeExec,
    svc: &str,
    id: &str,
    repository: &str,
    options: &[String],
    dest: &str,
    within: &[String],
) -> Result<u64, StepError> {
    let failed =
        |stderr: String| StepError::Failed { step: "restic restore", status: None, stderr };
    let layout = Layout::new(exec.root());
    let root = layout.root().trim_end_matches('/').to_owned();
    let pwf = layout.backup_password();
    let opts = crate::model::restic_option_args(options);
    let mut args: Vec<&str> = vec![repository, &pwf, id];
    args.extend(opts.iter().map(String::as_str));
    let out = remote::script(exec, SHOW, &args, SHOW_TIMEOUT)?;
    if !out.success() {
        return Err(failed(format!("restic cannot show snapshot {id}: {}", out.stderr_text())));
    }
    let shown: Vec<serde_json::Value> =
        serde_json::from_slice(&out.stdout).map_err(|e| failed(format!("restic's answer: {e}")))?;
    let [snap] = &shown[..] else {
        return Err(failed(format!("restic has no single snapshot {id} (found {})", shown.len())));
    };
    let tags: Vec<&str> =
        snap["tags"].as_array().into_iter().flatten().filter_map(|t| t.as_str()).collect();
    if !tags.contains(&format!("svc={svc}").as_str()) {
        return Err(failed(format!(
            "restic snapshot {id} is not a backup of {svc} (tags: {})",
            tags.join(", ")
        )));
    }
    // The volumes the backup holds, by mountpoint: `volumes=<key>=<mountpoint>;…`.
    let volumes: Vec<(&str, &str)> = tags
        .iter()
        .filter_map(|t| t.strip_prefix("volumes="))
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| crate::model::volume_key_ok(k))
        .collect();
    // `(kind, as backed up, where it goes)`.
    let mut entries: Vec<(&str, String, String)> = Vec::new();
    for p in snap["paths"].as_array().into_iter().flatten() {
        let p = p.as_str().unwrap_or_default();
        let rel = p
            .strip_prefix(&root)
            .and_then(|r| r.strip_prefix('/'))
            .filter(|r| crate::model::relative_path_ok(r))
            .filter(|r| within.iter().any(|w| crate::model::within(r, w)));
        if let Some(r) = rel {
            entries.push(("path", p.to_owned(), r.to_owned()));
        } else if let Some((key, _)) = volumes.iter().find(|(_, mp)| *mp == p) {
            entries.push(("volume", p.to_owned(), (*key).to_owned()));
        } else {
            return Err(failed(format!(
                "restic snapshot {id} holds `{}`, neither inside {svc}'s data under {root} nor one of its volumes: not restored",
                crate::quote::cut(p)
            )));
        }
    }
    if entries.is_empty() {
        return Err(failed(format!("restic snapshot {id} holds no path")));
    }
    let n = entries.len().to_string();
    let mut args: Vec<&str> = vec![repository, &pwf, id, dest, &root, svc, &n];
    for (kind, from, to) in &entries {
        args.extend([*kind, from.as_str(), to.as_str()]);
    }
    args.extend(opts.iter().map(String::as_str));
    let out = remote::script(exec, FETCH, &args, FETCH_TIMEOUT)?;
    if !out.success() {
        return Err(failed(format!("fetching restic snapshot {id}: {}", out.stderr_text())));
    }
    let said = String::from_utf8_lossy(&out.stdout);
    Ok(said
        .lines()
        .find_map(|l| l.strip_prefix("hl-fetch: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    /// Each script that runs restic is one the node's `sh` reads, and makes restic ready the
    /// one way: with no restic on the `PATH`, it says so and exits 3 before anything else.
    #[test]
    fn the_restic_scripts_parse_and_refuse_a_node_without_restic() {
        let scripts = [super::SHOW, super::FETCH, crate::backup::BACKUP, crate::backup::LIST];
        for script in scripts {
            let out = std::process::Command::new("sh").args(["-n", "-c", script]).output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
        let dir = tempfile::tempdir().unwrap();
        let pwf = dir.path().join("pw");
        std::fs::write(&pwf, "x").unwrap();
        let out = std::process::Command::new("/bin/sh")
            .args(["-c", super::SHOW, "sh", "/nowhere"])
            .arg(&pwf)
            .arg("abc123")
            .env("PATH", dir.path())
            .env("RESTIC_PASSWORD", "from-the-caller")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("restic is not installed on the node")
        );
    }
}
