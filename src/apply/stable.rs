//! The stability window (`remote`'s `STABLE`, `hl_stable SVC SECONDS`) done by this program:
//! after the contract's healthcheck passed, every container of the compose project is looked at
//! once a second for the window, one `docker inspect` a look, where the script also starts a
//! subshell, a `read` loop and `sleep` per look. What it finds, and the words it says it with,
//! are the script's; the differential test below holds it to the script.

use std::io;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::native::{captured, strip_newlines};

/// `docker inspect`'s format: name, status, restart count, restart policy (`no` when none is
/// set, as Docker takes an empty one), exit code, Docker's own health status or `none`.
const FORMAT: &str = "{{.Name}} {{.State.Status}} {{.RestartCount}} {{if .HostConfig.RestartPolicy.Name}}{{.HostConfig.RestartPolicy.Name}}{{else}}no{{end}} {{.State.ExitCode}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}";

/// One stability window to watch.
pub(super) struct Window<'a> {
    /// The compose project (the service).
    pub svc: &'a str,
    /// How long every container must stay up.
    pub secs: u64,
    /// The `docker` program and the `DOCKER_HOST` it is given.
    pub docker: &'a Path,
    pub docker_host: &'a str,
    /// When every Docker command must have answered.
    pub deadline: Instant,
}

/// What broke, as `hl_stable` prints it (one line), or `None` when every container stayed up
/// for the whole window.
pub(super) fn watch(w: &Window<'_>) -> Option<Vec<u8>> {
    match looks(w) {
        Ok(None) => None,
        Ok(Some(said)) => Some(format!("{said}\n").into_bytes()),
        Err(e) => Some(format!("the stability window could not be watched: {e}\n").into_bytes()),
    }
}

fn looks(w: &Window<'_>) -> io::Result<Option<String>> {
    let filter = format!("label=com.docker.compose.project={}", w.svc);
    let (ok, ids) = docker(w, &["ps", "-aq", "--filter", &filter], false)?;
    if !ok {
        return Ok(Some("docker ps failed".to_owned()));
    }
    let ids = String::from_utf8_lossy(&ids).into_owned();
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if ids.is_empty() {
        return Ok(Some(format!("the healthcheck passed, but project {} has no container", w.svc)));
    }
    let mut args = vec!["inspect", "-f", FORMAT];
    args.extend(&ids);
    let (ok, first) = docker(w, &args, true)?;
    let first = substituted(&first);
    if !ok {
        return Ok(Some(format!("docker inspect failed: {first}")));
    }
    let start = Instant::now();
    let mut t = 0u64;
    loop {
        let (ok, now) = docker(w, &args, true)?;
        let now = substituted(&now);
        if !ok {
            return Ok(Some(format!("a container of {} went away: {now}", w.svc)));
        }
        let bad = broken(&first, &now);
        if !bad.is_empty() {
            return Ok(Some(format!(
                "the healthcheck passed, then the service did not stay up for {}s (at {t}s: {})",
                w.secs,
                bad.join("\n").replace('\n', ";").replace(';', "; ")
            )));
        }
        if t >= w.secs {
            return Ok(None);
        }
        t += 1;
        // A look a second, counted from the first: the window is its length, however long a
        // look takes.
        std::thread::sleep(
            (start + Duration::from_secs(t)).saturating_duration_since(Instant::now()),
        );
    }
}

/// What `$(...)` makes of a command's output: its trailing newlines dropped.
fn substituted(out: &[u8]) -> String {
    String::from_utf8_lossy(strip_newlines(out)).into_owned()
}

/// The problems of one look (`now`) against the first (`first`), a line each, as the
/// script's `read` loop words them.
fn broken(first: &str, now: &str) -> Vec<String> {
    let mut bad = Vec::new();
    for line in now.split('\n') {
        let f = fields(line, 6);
        let [name, st, count, policy, code, health] = [0, 1, 2, 3, 4, 5].map(|i| f[i]);
        // The restart count of the same name at the first look (the last such line), else
        // this look's own.
        let was =
            first.split('\n').map(|l| fields(l, 4)).rfind(|f| f[0] == name).map_or(count, |f| f[2]);
        let name = name.strip_prefix('/').unwrap_or(name);
        match st {
            "running" => {}
            "exited" => {
                if !matches!(format!("{code}:{policy}").as_str(), "0:no" | "0:on-failure" | "0:") {
                    bad.push(format!("{name} exited (code {code})"));
                }
            }
            _ => bad.push(format!("{name} is {st}")),
        }
        if count != was {
            let n = |v: &str| v.parse::<i64>().unwrap_or(0);
            bad.push(format!("{name} restarted {} time(s)", n(count) - n(was)));
        }
        if health == "unhealthy" {
            bad.push(format!("{name} is unhealthy (its compose healthcheck)"));
        }
    }
    bad
}

/// `read -r` into `n` variables: words split at blanks, the last one taking the rest of the
/// line (its trailing blanks dropped), missing ones empty.
fn fields(line: &str, n: usize) -> Vec<&str> {
    let blank = |c: char| c == ' ' || c == '\t';
    let mut rest = line.trim_matches(blank);
    let mut out = Vec::with_capacity(n);
    while out.len() + 1 < n && !rest.is_empty() {
        let end = rest.find(blank).unwrap_or(rest.len());
        out.push(&rest[..end]);
        rest = rest[end..].trim_start_matches(blank);
    }
    out.push(rest);
    out.resize(n, "");
    out
}

/// `docker ARGS`: whether it succeeded, and its stdout (with its stderr, as `2>&1`, when
/// `with_stderr`); an error when it did not answer by the window's deadline.
fn docker(w: &Window<'_>, args: &[&str], with_stderr: bool) -> io::Result<(bool, Vec<u8>)> {
    let mut cmd = Command::new(w.docker);
    cmd.args(args).env("DOCKER_HOST", w.docker_host);
    match captured(cmd, with_stderr, w.deadline)? {
        Some((status, out)) => Ok((status.success(), out)),
        None => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("`docker {}` did not answer in time", args[..2].join(" ")),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::super::remote;
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Stdio;

    /// A `docker` for the twins: `ps` answers `ids` (or fails when `ps-fails` is there);
    /// each `inspect` counts its call and answers `inspect-<call>`, else `inspect` (or fails
    /// when that file's `.fails` is there). Every call is logged.
    const DOCKER: &str = r#"#!/bin/sh
d=__ROOT__
printf '%s|%s\n' "$DOCKER_HOST" "$*" >> "$d/log"
case "$1" in
  ps) if [ -e "$d/ps-fails" ]; then echo "Cannot connect to the Docker daemon" >&2; exit 1; fi
      cat "$d/ids" 2>/dev/null ;;
  inspect)
    n=$(cat "$d/count" 2>/dev/null || echo 0); n=$((n + 1)); echo "$n" > "$d/count"
    f="$d/inspect-$n"; [ -e "$f" ] || [ -e "$f.fails" ] || f="$d/inspect"
    if [ -e "$f.fails" ]; then echo "Error: No such object: $4" >&2; exit 1; fi
    cat "$f" ;;
esac
"#;

    /// The script's answer and this module's for the same stand-in state, on two twin
    /// folders: (what it printed, whether it passed), and each side's Docker log.
    fn both(files: &[(&str, &str)], secs: u64) -> [(String, bool, String); 2] {
        let dir = tempfile::tempdir().expect("tempdir");
        let roots = [dir.path().join("script"), dir.path().join("native")];
        for r in &roots {
            std::fs::create_dir_all(r.join("bin")).expect("mkdir");
            let docker = r.join("bin/docker");
            std::fs::write(&docker, DOCKER.replace("__ROOT__", r.to_str().expect("utf-8")))
                .expect("write");
            std::fs::set_permissions(&docker, std::fs::Permissions::from_mode(0o755))
                .expect("chmod");
            for (name, text) in files {
                std::fs::write(r.join(name), text).expect("write");
            }
        }
        let log = |r: &Path| std::fs::read_to_string(r.join("log")).unwrap_or_default();
        let script = {
            let r = &roots[0];
            let path = format!("{}:{}", r.join("bin").display(), std::env::var("PATH").unwrap());
            let o = Command::new("sh")
                .arg("-c")
                .arg(format!("{}hl_stable \"$1\" \"$2\"\n", remote::STABLE))
                .args(["homelab", "web app", &secs.to_string()])
                .env("PATH", path)
                .env("DOCKER_HOST", "unix:///x.sock")
                .stdin(Stdio::null())
                .output()
                .expect("sh");
            (String::from_utf8_lossy(&o.stdout).into_owned(), o.status.success(), log(r))
        };
        let native = {
            let r = &roots[1];
            let docker = r.join("bin/docker");
            let w = Window {
                svc: "web app",
                secs,
                docker: &docker,
                docker_host: "unix:///x.sock",
                deadline: Instant::now() + Duration::from_secs(30),
            };
            let said = watch(&w);
            let ok = said.is_none();
            (String::from_utf8(said.unwrap_or_default()).expect("utf-8"), ok, log(r))
        };
        [script, native]
    }

    fn same(files: &[(&str, &str)], secs: u64) -> (String, bool) {
        let [script, native] = both(files, secs);
        assert_eq!(script, native, "the script's answer, then this module's");
        (native.0, native.1)
    }

    const UP: &str =
        "/web-1 running 0 unless-stopped 0 none\n/web-db-1 running 3 always 0 healthy\n";

    #[test]
    fn a_window_watched_here_finds_what_the_script_finds() {
        // Every container up over a window of a second: two looks after the first.
        let (said, ok) = same(&[("ids", "aaa\nbbb\n"), ("inspect", UP)], 1);
        assert!(ok && said.is_empty(), "{said}");
        // A restart between looks, at the second look after the first.
        let restarted =
            "/web-1 restarting 2 unless-stopped 1 none\n/web-db-1 running 3 always 0 healthy\n";
        let (said, ok) = same(&[("ids", "aaa bbb"), ("inspect", UP), ("inspect-3", restarted)], 1);
        assert!(!ok, "{said}");
        assert_eq!(
            said,
            "the healthcheck passed, then the service did not stay up for 1s (at 1s: web-1 is restarting; web-1 restarted 2 time(s))\n"
        );
        // A one-shot that exited 0 under `no` is done; one that exited 1, or exited 0 under
        // `always`, is not; Docker's own health `unhealthy` is not; a container the first look
        // did not see keeps its count.
        let mixed = "/init exited 0 no 0 none\n/job exited 0 on-failure 0 none\n/crash exited 1 no 1 none\n/daemon exited 0 always 0 none\n/web-1 running 0 unless-stopped 0 unhealthy\n/new running 5 always 0 none\n";
        let (said, ok) = same(&[("ids", "a\nb\nc\nd\ne\nf\n"), ("inspect", mixed)], 0);
        assert!(!ok);
        assert_eq!(
            said,
            "the healthcheck passed, then the service did not stay up for 0s (at 0s: crash exited (code 1); daemon exited (code 0); web-1 is unhealthy (its compose healthcheck))\n"
        );
        // Fewer fields than the format gives (an older Docker): missing ones are empty.
        let (_, ok) = same(&[("ids", "a"), ("inspect", "/short running\n")], 0);
        assert!(ok);
    }

    #[test]
    fn a_window_that_cannot_be_watched_says_why_as_the_script_does() {
        let (said, ok) = same(&[("ps-fails", "")], 0);
        assert_eq!((said.as_str(), ok), ("docker ps failed\n", false));
        let (said, ok) = same(&[("ids", "\n\n")], 0);
        assert_eq!(
            (said.as_str(), ok),
            ("the healthcheck passed, but project web app has no container\n", false)
        );
        let (said, ok) = same(&[("ids", "aaa"), ("inspect-1.fails", "")], 0);
        assert_eq!(
            (said.as_str(), ok),
            ("docker inspect failed: Error: No such object: aaa\n", false)
        );
        let (said, ok) = same(&[("ids", "aaa"), ("inspect", UP), ("inspect-2.fails", "")], 0);
        assert!(!ok);
        assert!(
            said.starts_with("a container of web app went away: Error: No such object"),
            "{said}"
        );
    }

    #[test]
    fn a_docker_that_does_not_answer_is_given_up_at_the_deadline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let docker = dir.path().join("docker");
        std::fs::write(&docker, "#!/bin/sh\nexec sleep 30\n").expect("write");
        std::fs::set_permissions(&docker, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let w = Window {
            svc: "web",
            secs: 10,
            docker: &docker,
            docker_host: "unix:///x.sock",
            deadline: Instant::now() + Duration::from_millis(300),
        };
        let said = String::from_utf8(watch(&w).expect("given up")).expect("utf-8");
        assert_eq!(
            said,
            "the stability window could not be watched: `docker ps -aq` did not answer in time\n"
        );
        // The next window, with a Docker that answers, is watched as ever.
        std::fs::write(
            &docker,
            "#!/bin/sh\ncase $1 in ps) echo a ;; *) echo '/a running 0 no 0 none' ;; esac\n",
        )
        .expect("write");
        let w = Window { deadline: Instant::now() + Duration::from_secs(10), secs: 0, ..w };
        assert_eq!(watch(&w), None);
    }
}
