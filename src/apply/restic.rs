//! A restic snapshot fetched onto the node for a restore plan (issue 18, `homelab restore
//! --snapshot restic:ID`): checked to be a backup of the service with every path inside its own
//! data, then restored by restic into the node's snapshots folder in the form of a snapshot
//! taken before a change, which the deploy puts back as it puts back any snapshot.

use std::time::Duration;

use super::remote::{self, StepError};
use crate::node::Layout;
use crate::transport::NodeExec;

const SHOW_TIMEOUT: Duration = Duration::from_secs(300);
/// A fetch copies the data: long, but not without end.
const FETCH_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// What a restic snapshot is: `$1` repository, `$2` password file, `$3` id, then restic's
/// `-o` options. Prints restic's JSON listing of that one snapshot.
const SHOW: &str = r#"set -u
repo=$1; pwf=$2; id=$3; shift 3
command -v restic > /dev/null || { echo "restic is not installed on the node: apt-get install restic" >&2; exit 3; }
[ -r "$pwf" ] || { echo "no restic password file at $pwf on the node" >&2; exit 3; }
unset RESTIC_PASSWORD RESTIC_PASSWORD_COMMAND
export RESTIC_REPOSITORY="$repo" RESTIC_PASSWORD_FILE="$pwf"
t=$(mktemp) || exit 90
trap 'rm -f -- "$t"' EXIT
restic "$@" snapshots --json "$id" 2> "$t" || { tail -n 3 "$t" >&2; exit 4; }
"#;

/// Fetches a restic snapshot into the node's snapshots folder in the form of a local one
/// (`manifest`, an item per path, `complete`), so a restore puts it back as it puts back a
/// snapshot taken before a change: `$1` repository, `$2` password file, `$3` id, `$4` the
/// folder to make, `$5` runtime root, `$6` the number of paths and the paths (relative to
/// the root, as the backup holds them under it), then restic's `-o` options. A folder already
/// complete is kept (a resumed apply). Prints `hl-fetch: ITEMS`.
const FETCH: &str = r#"set -u
repo=$1; pwf=$2; id=$3; dest=$4; droot=$5; n=$6; shift 6
if [ -f "$dest/complete" ]; then echo "hl-fetch: $(grep -c '^path ' "$dest/manifest")"; exit 0; fi
tmp=$dest.tmp
rm -rf -- "$tmp"; mkdir -p -- "${dest%/*}"; mkdir -m 700 -- "$tmp" || exit 3
: > "$tmp/manifest"
i=0; k=$n
while [ "$k" -gt 0 ]; do printf '%s
' "$1" >> "$tmp/paths"; shift; k=$((k - 1)); done
unset RESTIC_PASSWORD RESTIC_PASSWORD_COMMAND
export RESTIC_REPOSITORY="$repo" RESTIC_PASSWORD_FILE="$pwf"
restic "$@" restore "$id" --target "$tmp/r" > /dev/null 2> "$tmp/err" || { tail -n 3 "$tmp/err" >&2; rm -rf -- "$tmp"; exit 4; }
while IFS= read -r p; do
  src=$tmp/r$droot/$p
  if [ ! -e "$src" ] && [ ! -L "$src" ]; then continue; fi
  i=$((i + 1))
  printf 'path %s %s %s
' "$i" "$(stat -c %u:%g:%a -- "$src")" "$droot/$p" >> "$tmp/manifest"
  mv -- "$src" "$tmp/$i" || { rm -rf -- "$tmp"; exit 5; }
done < "$tmp/paths"
rm -rf -- "$tmp/r" "$tmp/err" "$tmp/paths"
: > "$tmp/complete"
sync -f -- "$tmp" 2>/dev/null || true
mv -- "$tmp" "$dest"
echo "hl-fetch: $i"
"#;

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
    let opts: Vec<String> = options.iter().flat_map(|o| ["-o".to_owned(), o.clone()]).collect();
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
    let mut paths = Vec::new();
    for p in snap["paths"].as_array().into_iter().flatten() {
        let p = p.as_str().unwrap_or_default();
        let rel = p
            .strip_prefix(&root)
            .and_then(|r| r.strip_prefix('/'))
            .filter(|r| crate::model::relative_path_ok(r))
            .filter(|r| within.iter().any(|w| crate::model::within(r, w)));
        match rel {
            Some(r) => paths.push(r.to_owned()),
            None => {
                return Err(failed(format!(
                "restic snapshot {id} holds `{}`, outside {svc}'s data under {root}: not restored",
                crate::quote::cut(p)
            )))
            }
        }
    }
    if paths.is_empty() {
        return Err(failed(format!("restic snapshot {id} holds no path")));
    }
    let n = paths.len().to_string();
    let mut args: Vec<&str> = vec![repository, &pwf, id, dest, &root, &n];
    args.extend(paths.iter().map(String::as_str));
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
