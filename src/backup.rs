//! Backups off the node (issue 18): `homelab backup` copies each backup set of the selected
//! services into the node's restic repository (topology `backup:`), run on the node over the
//! node's transport, with the repository's password read by restic from a file on the node
//! (`config/backup/restic-password`) that homelab never reads, prints or carries. A set with
//! `consistency: stop` (the default of a critical set) has its service's containers stopped
//! for the copy and started again after it. Each set keeps its last `retain:` snapshots
//! (`restic forget --prune`), and its last backup is recorded on the node
//! (`state/backups/<svc>/<set>.json`). `homelab backup list` shows a node's local snapshots
//! (taken before changes) and its restic snapshots.

use std::time::Duration;

use crate::apply::remote::{self, StepError};
use crate::apply::restic::{restic_env, restic_ready};
use crate::model::{BackupSet, BackupTarget};
use crate::node::Layout;
use crate::transport::NodeExec;

/// A backup runs as long as the data takes to copy: long, but not without end.
const BACKUP_TIMEOUT: Duration = Duration::from_secs(6 * 3600);
const LIST_TIMEOUT: Duration = Duration::from_secs(300);

/// Backs up one set: `$1` repository, `$2` password file, `$3` node, `$4` service, `$5` set,
/// `$6` snapshots kept, `$7` `stop` or `live`, `$8` runtime root, `$9` the record to write,
/// then whether the set is critical (`1`/`0`) and how old its backup may be (seconds, both
/// kept in the record for the stability agent), then the number of the set's paths and the
/// paths (relative to the root), the number of its named volumes and their compose keys, then
/// restic's `-o` options. Prints `hl-backup: empty` when no path of the set exists on the node, else
/// restic's JSON summary line as `hl-backup: {…}`. Restic's own output stays in a private
/// temporary folder, removed at the end; a failure prints its last lines.
pub(crate) const BACKUP: &str = concat!(
    r#"set -u
repo=$1; pwf=$2; node=$3; svc=$4; set=$5; keep=$6; stop=$7; droot=$8; rec=$9; shift 9
crit=$1; limit=$2; m=$3; shift 3
t=$(mktemp -d "${TMPDIR:-/tmp}/hl-backup.XXXXXX") || exit 90
trap 'rm -rf -- "$t"' EXIT
have=0
while [ "$m" -gt 0 ]; do
  p=$droot/$1; shift; m=$((m - 1))
  if [ -e "$p" ]; then printf '%s\n' "$p" >> "$t/list"; have=$((have + 1)); fi
done
# The set's named volumes, found by the labels Compose gives them; one tag maps each
# mountpoint to its compose key, so a restore finds the volume on a node rebuilt since.
v=$1; shift; vtag=""
while [ "$v" -gt 0 ]; do
  k=$1; shift; v=$((v - 1))
  vol=$(docker volume ls -q --filter "label=com.docker.compose.project=$svc" --filter "label=com.docker.compose.volume=$k" | head -n 1) || exit 5
  [ -n "$vol" ] || continue
  mp=$(docker volume inspect -f '{{.Mountpoint}}' "$vol") || exit 5
  case $mp in *[,\;=]*|'') echo "volume $vol has a mountpoint restic's tags cannot hold: $mp" >&2; exit 5 ;; esac
  printf '%s\n' "$mp" >> "$t/list"; have=$((have + 1))
  vtag="$vtag${vtag:+;}$k=$mp"
done
if [ "$have" = 0 ]; then echo "hl-backup: empty"; exit 0; fi
"#,
    restic_ready!(),
    restic_env!(),
    r#"if ! restic "$@" cat config > /dev/null 2> "$t/cat.err"; then
  # A repository not made yet is made on first use; one that exists but refuses the password
  # fails here with restic's words.
  restic "$@" init > "$t/init.out" 2>&1 || { tail -n 3 "$t/cat.err" "$t/init.out" >&2; exit 4; }
fi
stopped=""
if [ "$stop" = stop ]; then
  ids=$(docker ps -q --filter "label=com.docker.compose.project=$svc") || exit 5
  # $ids unquoted: Docker's hex ids, one word each.
  if [ -n "$ids" ]; then docker stop $ids > /dev/null || exit 5; stopped=$ids; fi
fi
restic "$@" backup --json --host "$node" --tag homelab --tag "svc=$svc" --tag "set=$set" \
  ${vtag:+--tag} ${vtag:+"volumes=$vtag"} --files-from-verbatim "$t/list" > "$t/out" 2> "$t/err"
rc=$?
if [ -n "$stopped" ]; then docker start $stopped > /dev/null || echo "starting $svc again after its backup failed" >&2; fi
# 3: some files could not be read, the snapshot was made all the same.
if [ "$rc" != 0 ] && [ "$rc" != 3 ]; then tail -n 5 "$t/err" >&2; exit 6; fi
summary=$(grep '"message_type":"summary"' "$t/out" | tail -n 1)
restic "$@" forget --quiet --host "$node" --tag "svc=$svc,set=$set" --keep-last "$keep" --prune > "$t/forget" 2>&1 \
  || { echo "the backup was made; pruning the old ones failed: $(tail -n 2 "$t/forget")" >&2; }
mkdir -p -- "${rec%/*}"
printf '{"time":"%s","critical":%s,"max_age_secs":%s,"summary":%s}\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  "$([ "$crit" = 1 ] && echo true || echo false)" "$limit" "${summary:-null}" > "$rec.tmp"
chmod 600 -- "$rec.tmp"; mv -f -- "$rec.tmp" "$rec"
[ -n "$summary" ] || summary='{}'
echo "hl-backup: $summary"
[ "$rc" = 0 ] || echo "restic could not read some files: $(tail -n 2 "$t/err")" >&2
exit 0
"#
);

/// Lists a node's snapshots: `$1` the snapshots folder, `$2` repository (empty: none), `$3`
/// password file, `$4` node, then restic's `-o` options. Prints `local SVC ID EPOCH KIB` per
/// complete local snapshot, then `restic JSON` (restic's list) or `restic-error WORDS`.
pub(crate) const LIST: &str = concat!(
    r#"set -u
snaps=$1; repo=$2; pwf=$3; node=$4; shift 4
for s in "$snaps"/*/*; do
  [ -f "$s/complete" ] || continue
  svc=${s%/*}; svc=${svc##*/}
  printf 'local %s %s %s %s\n' "$svc" "${s##*/}" "$(stat -c %Y -- "$s/complete")" "$(du -sk -- "$s" | cut -f1)"
done
[ -n "$repo" ] || exit 0
command -v restic > /dev/null || { echo "restic-error restic is not installed on the node"; exit 0; }
[ -r "$pwf" ] || { echo "restic-error no restic password file at $pwf"; exit 0; }
"#,
    restic_env!(),
    r#"t=$(mktemp) || exit 90
trap 'rm -f -- "$t"' EXIT
if out=$(restic "$@" snapshots --json --host "$node" --tag homelab 2> "$t"); then
  printf 'restic %s\n' "$out" | tr -d '\n'; echo
else
  echo "restic-error $(tail -n 2 "$t" | tr '\n' ' ')"
fi
"#
);

/// What backing up one set did.
#[derive(Debug, Clone, PartialEq)]
pub enum Backed {
    /// A restic snapshot: its short id, the files it holds, the bytes it added.
    Snapshot { id: String, files: u64, added: u64 },
    /// No path of the set exists on the node.
    Empty,
}

/// Backs up `set` of `svc` on the node into `target`.
pub fn back_up(
    exec: &dyn NodeExec,
    node: &str,
    svc: &str,
    set: &BackupSet,
    target: &BackupTarget,
) -> Result<Backed, StepError> {
    let layout = Layout::new(exec.root());
    let mut args: Vec<String> = vec![
        target.repository.clone(),
        layout.backup_password(),
        node.to_owned(),
        svc.to_owned(),
        set.name.clone(),
        set.retain.to_string(),
        if set.stop { "stop" } else { "live" }.to_owned(),
        layout.root().trim_end_matches('/').to_owned(),
        layout.backup_record(svc, &set.name),
        if set.critical { "1" } else { "0" }.to_owned(),
        set.max_age.as_secs().to_string(),
        set.paths.len().to_string(),
    ];
    args.extend(set.paths.iter().cloned());
    args.push(set.volumes.len().to_string());
    args.extend(set.volumes.iter().cloned());
    args.extend(target.option_args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = remote::script(exec, BACKUP, &args, BACKUP_TIMEOUT)?;
    if !out.success() {
        return Err(StepError::Failed {
            step: "restic backup",
            status: out.status,
            stderr: out.stderr_text(),
        });
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let said = stdout.lines().find_map(|l| l.strip_prefix("hl-backup: ")).unwrap_or_default();
    if said == "empty" {
        return Ok(Backed::Empty);
    }
    let summary: serde_json::Value = serde_json::from_str(said).unwrap_or_default();
    let id = summary["snapshot_id"].as_str().unwrap_or_default();
    Ok(Backed::Snapshot {
        id: id.chars().take(8).collect(),
        files: summary["total_files_processed"].as_u64().unwrap_or(0),
        added: summary["data_added"].as_u64().unwrap_or(0),
    })
}

/// A snapshot of a node's data, local (taken before a change) or in restic.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    /// `local` or `restic`.
    pub kind: &'static str,
    pub service: String,
    /// The backup set (restic) or `-` (a local snapshot holds all the service's data).
    pub set: String,
    pub id: String,
    /// RFC 3339.
    pub time: String,
    /// KiB, for a local snapshot.
    pub kib: Option<u64>,
}

/// A node's snapshots, and what kept restic's from being listed.
pub fn list(
    exec: &dyn NodeExec,
    node: &str,
    target: Option<&BackupTarget>,
) -> Result<(Vec<Listed>, Option<String>), StepError> {
    let layout = Layout::new(exec.root());
    let snaps = format!("{}/state/snapshots", layout.root().trim_end_matches('/'));
    let mut args: Vec<String> = vec![
        snaps,
        target.map(|t| t.repository.clone()).unwrap_or_default(),
        layout.backup_password(),
        node.to_owned(),
    ];
    if let Some(t) = target {
        args.extend(t.option_args());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = remote::script(exec, LIST, &args, LIST_TIMEOUT)?;
    if !out.success() {
        return Err(StepError::Failed {
            step: "listing snapshots",
            status: out.status,
            stderr: out.stderr_text(),
        });
    }
    Ok(parse_list(&String::from_utf8_lossy(&out.stdout)))
}

fn parse_list(stdout: &str) -> (Vec<Listed>, Option<String>) {
    let (mut found, mut error) = (Vec::new(), None);
    for l in stdout.lines() {
        if let Some(rest) = l.strip_prefix("local ") {
            let w: Vec<&str> = rest.split(' ').collect();
            if let [svc, id, epoch, kib] = w[..] {
                let time = epoch
                    .parse::<u64>()
                    .map(|s| {
                        humantime::format_rfc3339_seconds(
                            std::time::UNIX_EPOCH + Duration::from_secs(s),
                        )
                        .to_string()
                    })
                    .unwrap_or_default();
                found.push(Listed {
                    kind: "local",
                    service: svc.to_owned(),
                    set: "-".to_owned(),
                    id: id.to_owned(),
                    time,
                    kib: kib.parse().ok(),
                });
            }
        } else if let Some(json) = l.strip_prefix("restic ") {
            let snaps: Vec<serde_json::Value> = serde_json::from_str(json).unwrap_or_default();
            for s in snaps {
                let tag = |prefix: &str| {
                    s["tags"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|t| t.as_str()?.strip_prefix(prefix))
                        .next()
                        .unwrap_or("?")
                        .to_owned()
                };
                found.push(Listed {
                    kind: "restic",
                    service: tag("svc="),
                    set: tag("set="),
                    id: s["short_id"].as_str().unwrap_or("?").to_owned(),
                    time: s["time"].as_str().unwrap_or("").chars().take(19).collect(),
                    kib: None,
                });
            }
        } else if let Some(why) = l.strip_prefix("restic-error ") {
            error = Some(crate::quote::cut(why.trim()));
        }
    }
    (found, error)
}

/// The last backups recorded on a node (`state/backups/<svc>/<set>.json`) of its critical
/// sets: `(service, set, (age, limit), never backed up)`, for the stability agent; a set never backed up has the
/// record its first deploy wrote, and its age counts from that deploy. Unreadable records are
/// skipped: the agent reports what it can read.
pub fn overdue_candidates(
    layout: &Layout,
    now: std::time::SystemTime,
) -> Vec<(String, String, (u64, u64), bool)> {
    let mut found = Vec::new();
    let dir = std::path::PathBuf::from(layout.root()).join("state/backups");
    let Ok(services) = std::fs::read_dir(&dir) else { return found };
    for svc in services.flatten() {
        let Ok(sets) = std::fs::read_dir(svc.path()) else { continue };
        for set in sets.flatten() {
            let path = set.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()?.strip_suffix(".json"))
            else {
                continue;
            };
            let Ok(bytes) = std::fs::read(&path) else { continue };
            let Ok(rec) = serde_json::from_slice::<serde_json::Value>(&bytes) else { continue };
            if rec["critical"] != true {
                continue;
            }
            // Never backed up: counted from the deploy that first placed the set (`since`).
            let at = rec["time"].as_str().or_else(|| rec["since"].as_str());
            let Some(time) = at.and_then(|t| humantime::parse_rfc3339(t).ok()) else {
                continue;
            };
            let age = now.duration_since(time).unwrap_or_default().as_secs();
            let limit =
                rec["max_age_secs"].as_u64().unwrap_or(crate::model::DEFAULT_MAX_AGE.as_secs());
            found.push((
                svc.file_name().to_string_lossy().into_owned(),
                name.to_owned(),
                (age, limit),
                rec["time"].is_null(),
            ));
        }
    }
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_reads_local_and_restic_snapshots_and_names_a_restic_error() {
        let out = "local web 0123456789abcdef 1764900000 120\nrestic [{\"short_id\":\"1a2b3c4d\",\"time\":\"2026-12-05T10:00:00.123Z\",\"tags\":[\"homelab\",\"svc=web\",\"set=web-state\"]}]\n";
        let (found, error) = parse_list(out);
        assert_eq!(error, None);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].kind, "local");
        assert_eq!(found[0].kib, Some(120));
        assert_eq!(found[1].set, "web-state");
        assert_eq!(found[1].time, "2026-12-05T10:00:00");
        let (_, error) = parse_list("restic-error wrong password or no key found\n");
        assert_eq!(error.as_deref(), Some("wrong password or no key found"));
    }

    /// A critical set never backed up has the record its deploy wrote (`time` null, `since`):
    /// its age counts from the deploy, and it is told apart; a backup's record replaces it.
    #[test]
    fn a_set_never_backed_up_is_aged_from_its_deploy() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::local(dir.path());
        let rec = std::path::PathBuf::from(layout.backup_record("zigbee2mqtt", "z2m-data"));
        std::fs::create_dir_all(rec.parent().unwrap()).unwrap();
        std::fs::write(
            &rec,
            r#"{"time":null,"since":"2026-12-01T00:00:00Z","critical":true,"max_age_secs":172800}"#,
        )
        .unwrap();
        let at = |s: &str| humantime::parse_rfc3339(s).unwrap();
        let found = overdue_candidates(&layout, at("2026-12-04T00:00:00Z"));
        let want = ("zigbee2mqtt".to_owned(), "z2m-data".to_owned(), (259_200, 172_800), true);
        assert_eq!(found, vec![want]);
        std::fs::write(
            &rec,
            r#"{"time":"2026-12-03T12:00:00Z","critical":true,"max_age_secs":172800,"summary":null}"#,
        )
        .unwrap();
        let found = overdue_candidates(&layout, at("2026-12-04T00:00:00Z"));
        assert_eq!(found[0].2, (43_200, 172_800));
        assert!(!found[0].3);
    }
}
