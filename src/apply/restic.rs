//! A restic snapshot fetched onto the node for a restore plan (issue 18, `homelab restore
//! --snapshot restic:ID`): checked to be a backup of the service with every path inside its own
//! data, then restored by restic into the node's snapshots folder in the form of a snapshot
//! taken before a change, which the deploy puts back as it puts back any snapshot.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::remote::{self, StepError};
use crate::node::Layout;
use crate::transport::NodeExec;
use crate::transport::Output;

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
    let out = if exec.on_this_machine() {
        let deadline = Instant::now() + SHOW_TIMEOUT;
        remote::in_process(exec, "restic snapshots", || show(&args, deadline))?
    } else {
        remote::script(exec, SHOW, &args, SHOW_TIMEOUT)?
    };
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
    let out = if exec.on_this_machine() {
        let deadline = Instant::now() + FETCH_TIMEOUT;
        let host = exec.docker_host();
        remote::in_process(exec, "restic restore", || fetch_here(&args, &host, deadline))?
    } else {
        remote::script(exec, FETCH, &args, FETCH_TIMEOUT)?
    };
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

/// What a step done in process answers: its status, what it printed, what it said.
fn answer(status: i32, stdout: Vec<u8>, stderr: String) -> Output {
    Output { status: Some(status), stdout, stderr: stderr.into_bytes() }
}

/// `restic_ready`: why restic cannot run here, as the script says it, if it cannot.
fn not_ready(pwf: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path).any(|d| {
        fs::metadata(d.join("restic"))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    });
    if !found {
        return Some("restic is not installed on the node: apt-get install restic\n".to_owned());
    }
    if !super::switch::readable(Path::new(pwf)) {
        return Some(format!("no restic password file at {pwf} on the node: write the repository's password there (chmod 600)\n"));
    }
    None
}

/// `restic OPTIONS...` with its environment from the repository and the password file alone
/// (`restic_env`): never a password the caller's environment holds.
fn restic(repo: &str, pwf: &str, options: &[&str]) -> Command {
    let mut cmd = Command::new("restic");
    cmd.env_remove("RESTIC_PASSWORD")
        .env_remove("RESTIC_PASSWORD_COMMAND")
        .env("RESTIC_REPOSITORY", repo)
        .env("RESTIC_PASSWORD_FILE", pwf)
        .args(options);
    cmd
}

/// `SHOW` in process, with its arguments: restic's listing of the one snapshot on stdout, or
/// the script's status and words.
fn show(args: &[&str], deadline: Instant) -> io::Result<Output> {
    let [repo, pwf, id, options @ ..] = args else {
        return Ok(answer(2, Vec::new(), "too few arguments\n".to_owned()));
    };
    if let Some(why) = not_ready(pwf) {
        return Ok(answer(3, Vec::new(), why));
    }
    let mut cmd = restic(repo, pwf, options);
    cmd.args(["snapshots", "--json", id]);
    let out = super::native::output_until(cmd, deadline)?
        .ok_or_else(|| super::native::late("restic snapshots"))?;
    if out.success() {
        return Ok(answer(0, out.stdout, String::new()));
    }
    let said = String::from_utf8_lossy(&super::native::tail_lines(&out.stderr, 3)).into_owned();
    Ok(answer(4, out.stdout, said))
}

/// `FETCH` in process, with its arguments: the snapshot restored by restic into a private
/// folder beside `dest`, each entry found there moved in as the item of a local snapshot
/// (`manifest`: its owner and mode, where it goes; a volume found on the node by Compose's
/// labels), then `complete`, the file system synced and the folder renamed to `dest`. A
/// complete `dest` is kept. Prints `hl-fetch: ITEMS`.
fn fetch_here(args: &[&str], docker_host: &str, deadline: Instant) -> io::Result<Output> {
    let [repo, pwf, id, dest, droot, svc, n, rest @ ..] = args else {
        return Ok(answer(2, Vec::new(), "too few arguments\n".to_owned()));
    };
    let n: usize = n.parse().unwrap_or(0);
    let (entries, options) = rest.split_at((3 * n).min(rest.len()));
    let dest = Path::new(dest);
    if dest.join("complete").is_file() {
        let manifest = fs::read_to_string(dest.join("manifest")).unwrap_or_default();
        let items =
            manifest.lines().filter(|l| l.starts_with("path ") || l.starts_with("volume ")).count();
        return Ok(answer(0, format!("hl-fetch: {items}\n").into_bytes(), String::new()));
    }
    let tmp = PathBuf::from(format!("{}.tmp", dest.display()));
    let made = super::native::remove_all(&tmp)
        .and_then(|()| fs::create_dir_all(super::native::parent(dest)))
        .and_then(|()| {
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new().mode(0o700).create(&tmp)
        });
    if let Err(e) = made {
        return Ok(answer(3, Vec::new(), format!("{e}\n")));
    }
    let gone = |status: i32, said: String| {
        let _ = super::native::remove_all(&tmp);
        Ok(answer(status, Vec::new(), said))
    };
    let restored = tmp.join("r");
    let mut cmd = restic(repo, pwf, options);
    cmd.args(["restore", id, "--target"]).arg(&restored);
    let out = super::native::output_until(cmd, deadline)?
        .ok_or_else(|| super::native::late("restic restore"))?;
    if !out.success() {
        let said = String::from_utf8_lossy(&super::native::tail_lines(&out.stderr, 3)).into_owned();
        return gone(4, said);
    }
    let (mut manifest, mut i) = (String::new(), 0usize);
    for entry in entries.chunks(3) {
        let [kind, src, key] = entry else { continue };
        let from = PathBuf::from(format!("{}{src}", restored.display()));
        if fs::symlink_metadata(&from).is_err() {
            continue;
        }
        i += 1;
        let own = super::switch::owner_and_mode(&from)?;
        match *kind {
            "path" => manifest.push_str(&format!("path {i} {own} {droot}/{key}\n")),
            "volume" => {
                let docker = |args: &[&str]| {
                    let mut cmd = Command::new("docker");
                    cmd.args(args).env("DOCKER_HOST", docker_host);
                    super::native::captured(cmd, false, deadline)
                };
                let project = format!("label=com.docker.compose.project={svc}");
                let volume = format!("label=com.docker.compose.volume={key}");
                let listed =
                    docker(&["volume", "ls", "-q", "--filter", &project, "--filter", &volume])?;
                let vol = listed
                    .and_then(|(_, out)| {
                        String::from_utf8_lossy(&out).lines().next().map(str::to_owned)
                    })
                    .filter(|v| !v.is_empty());
                let Some(vol) = vol else {
                    return gone(6, format!("the volume {key} of {svc} is not on the node: apply a plan that creates {svc}, then restore\n"));
                };
                let mp = match docker(&["volume", "inspect", "-f", "{{.Mountpoint}}", &vol])? {
                    Some((status, out)) if status.success() => {
                        String::from_utf8_lossy(&out).trim_end_matches('\n').to_owned()
                    }
                    _ => return gone(6, String::new()),
                };
                manifest.push_str(&format!("volume {i} {own} {vol} {mp}\n"));
            }
            _ => {}
        }
        if let Err(e) = fs::rename(&from, tmp.join(i.to_string())) {
            return gone(5, format!("{e}\n"));
        }
    }
    super::native::remove_all(&restored)?;
    fs::write(tmp.join("manifest"), manifest)?;
    fs::write(tmp.join("complete"), b"")?;
    let _ = super::native::syncfs(&tmp);
    fs::rename(&tmp, dest)?;
    Ok(answer(0, format!("hl-fetch: {i}\n").into_bytes(), String::new()))
}

#[cfg(test)]
mod tests {
    use crate::node::Layout;
    use crate::transport::local::LocalExec;
    use std::collections::BTreeMap;
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;

    /// Path under `dir` → (mode, content), the root's own path read as `ROOT`.
    fn tree(dir: &Path, root: &Path) -> BTreeMap<String, (u32, String)> {
        let mut out = BTreeMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
                let p = e.path();
                let m = std::fs::symlink_metadata(&p).expect("stat");
                let body = if m.is_dir() {
                    stack.push(p.clone());
                    String::new()
                } else {
                    std::fs::read_to_string(&p).unwrap_or_default()
                };
                let body = body.replace(root.to_str().expect("utf-8"), "ROOT");
                let rel = p.strip_prefix(dir).expect("under").to_string_lossy().into_owned();
                out.insert(rel, (m.mode() & 0o7777, body));
            }
        }
        out
    }

    /// A restic snapshot fetched by this program (the node's engine) lands as the `FETCH`
    /// script lands it, and is refused or kept alike: real restic, a local repository, one
    /// node root, the script's way then this program's into two snapshot folders.
    #[test]
    fn a_restic_snapshot_is_fetched_here_as_the_fetch_script_fetches_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        let r = root.to_str().expect("utf-8").to_owned();
        let layout = Layout::new(&r);
        let repo = dir.path().join("repo").to_str().expect("utf-8").to_owned();
        let pwf = layout.backup_password();
        std::fs::create_dir_all(Path::new(&pwf).parent().expect("parent")).expect("mkdir");
        std::fs::write(&pwf, "drill $(touch pwned) password").expect("write");
        std::fs::create_dir_all(root.join("data/web/sub")).expect("mkdir");
        std::fs::write(root.join("data/web/a.txt"), "alpha").expect("write");
        std::fs::write(root.join("data/web/sub/b.bin"), [0u8, 159, 146, 150]).expect("write");
        std::fs::write(root.join("data/web.db"), "db").expect("write");
        let restic = |args: &[&str]| {
            let out = std::process::Command::new("restic")
                .args(args)
                .env("RESTIC_REPOSITORY", &repo)
                .env("RESTIC_PASSWORD_FILE", &pwf)
                .output()
                .expect("restic (Debian's restic) must be installed");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            out.stdout
        };
        restic(&["init"]);
        let web = format!("{r}/data/web");
        let db = format!("{r}/data/web.db");
        restic(&["backup", "--tag", "svc=web", &web, &db]);
        restic(&["backup", "--tag", "svc=other", &web]);
        let listed: Vec<serde_json::Value> =
            serde_json::from_slice(&restic(&["snapshots", "--json"])).expect("json");
        let id_of = |tag: &str| {
            listed
                .iter()
                .find(|s| s["tags"][0] == tag)
                .and_then(|s| s["short_id"].as_str())
                .expect("snapshot")
                .to_owned()
        };
        let (ours, theirs) = (id_of("svc=web"), id_of("svc=other"));
        let within = ["data/web".to_owned(), "data/web.db".to_owned()];
        let script = LocalExec::for_tests_as_remote(&r);
        let native = LocalExec::for_tests(&r);
        let fetch = |exec: &LocalExec, id: &str, into: &str| {
            super::fetch(exec, "web", id, &repo, &[], &layout.snapshot("web", into), &within)
                .map_err(|e| e.to_string().replace(&r, "ROOT"))
        };
        // Fetched: the same items, manifest and modes.
        assert_eq!(fetch(&script, &ours, "s"), Ok(2));
        assert_eq!(fetch(&native, &ours, "n"), Ok(2));
        let snaps = root.join("state/snapshots/web");
        let fetched = tree(&snaps.join("n"), &root);
        assert_eq!(tree(&snaps.join("s"), &root), fetched);
        assert_eq!(fetched["1/a.txt"].1, "alpha");
        assert!(fetched["manifest"].1.contains(" ROOT/data/web.db\n"), "{fetched:?}");
        assert!(fetched.contains_key("complete") && !fetched.contains_key("r"), "{fetched:?}");
        // Fetched again: the complete folder is kept.
        assert_eq!(fetch(&native, &ours, "n"), Ok(2));
        assert_eq!(tree(&snaps.join("n"), &root), fetched);
        // Another service's backup, a snapshot restic does not have, a wrong password: refused
        // alike, nothing left behind.
        for (id, into) in [(theirs.as_str(), "x"), ("deadbeef", "y")] {
            let [a, b] = [(&script, "s-"), (&native, "n-")]
                .map(|(exec, way)| fetch(exec, id, &format!("{way}{into}")));
            assert_eq!(a, b);
            assert!(a.is_err(), "{a:?}");
        }
        std::fs::write(&pwf, "not the password").expect("write");
        let [a, b] =
            [(&script, "s-z"), (&native, "n-z")].map(|(exec, into)| fetch(exec, &ours, into));
        assert_eq!(a, b);
        assert!(a.as_ref().is_err_and(|e| e.contains("restic cannot show snapshot")), "{a:?}");
        let left: Vec<String> = std::fs::read_dir(&snaps)
            .expect("read_dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(!root.join("pwned").exists() && !Path::new("pwned").exists());
    }

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
