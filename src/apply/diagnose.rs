//! What a failing service looks like, for the incident (`remote`'s `DIAGNOSE`), done by this
//! program: with a dead-man folder, the deploy's one decision taken first for the controller's
//! rollback (or found already taken); `docker compose ps -a` and the last 100 lines of its logs
//! kept in the incident log on the node (0600: logs may hold secrets); the short status lines
//! answered, redacted. Three `docker` processes where the script starts a dozen; the same
//! files, commands and answer, which the differential test below holds it to.

use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use super::native::{captured, late, private_log, redact, spawn_grouped, wait_or_kill};
use crate::transport::Output;

/// What `DIAGNOSE` is given, by name.
pub(super) struct Diagnose<'a> {
    pub svc: &'a str,
    pub live: &'a str,
    /// The incident log.
    pub out: &'a str,
    pub env_file: &'a str,
    /// The deploy's dead-man folder, when it has one.
    pub deadman: Option<&'a str>,
    pub docker: &'a Path,
    pub docker_host: &'a str,
    /// When every command must have ended.
    pub deadline: Instant,
}

/// The status lines (stdout) and the script's status: 75 when the node had already rolled the
/// service back by itself, else 0.
pub(super) fn diagnose(d: &Diagnose<'_>) -> io::Result<Output> {
    let (mut by_node, mut again) = (false, false);
    if let Some(dm) = d.deadman.filter(|dm| !dm.is_empty() && Path::new(dm).is_dir()) {
        let decided = Path::new(dm).join("decided");
        if fs::create_dir(&decided).is_ok() {
            let file = decided.join("controller-rollback");
            fs::write(&file, b"").map_err(super::native::at(&file))?;
        } else if decided.join("rolled-back").is_file() {
            by_node = true;
        } else if decided.join("controller-rollback").is_file()
            && fs::metadata(d.out).is_ok_and(|m| m.len() > 0)
        {
            again = true;
        }
    }
    // `cd -- "$live" 2>/dev/null || cd /`
    let dir = if Path::new(d.live).is_dir() { Path::new(d.live) } else { Path::new("/") };
    let dc = |args: &[&str]| {
        let mut cmd = Command::new(d.docker);
        cmd.args(["compose", "-p", d.svc]);
        if Path::new(d.env_file).is_file() {
            cmd.args(["--env-file", d.env_file]);
        }
        cmd.args(args).current_dir(dir).env("PWD", dir).env("DOCKER_HOST", d.docker_host);
        cmd
    };
    // A rollback decided by an earlier run keeps that run's incident log: it shows the failure.
    if !again {
        let mut log = private_log(Path::new(d.out))?;
        log.write_all(b"== docker compose ps\n")?;
        into(dc(&["ps", "-a"]), &log, d.deadline)?;
        log.write_all(b"== docker compose logs (last 100 lines)\n")?;
        into(dc(&["logs", "--no-color", "--tail", "100"]), &log, d.deadline)?;
    }
    let format = "{{.Name}} {{.State}} {{.Status}}";
    let Some((_, status)) = captured(dc(&["ps", "-a", "--format", format]), false, d.deadline)?
    else {
        return Err(late("docker compose ps"));
    };
    let status = redact(Path::new(d.env_file), &head(&status, 20));
    Ok(Output { status: Some(if by_node { 75 } else { 0 }), stdout: status, stderr: Vec::new() })
}

/// `cmd >> LOG 2>&1`, to its end or the deadline.
fn into(mut cmd: Command, log: &fs::File, deadline: Instant) -> io::Result<()> {
    cmd.stdout(Stdio::from(log.try_clone()?)).stderr(Stdio::from(log.try_clone()?));
    let mut child = spawn_grouped(&mut cmd)?;
    match wait_or_kill(&mut child, deadline)? {
        Some(_) => Ok(()),
        None => Err(late("docker compose")),
    }
}

/// `head -n N`: the first `n` lines, a last one without its newline kept as it is.
fn head(text: &[u8], n: usize) -> Vec<u8> {
    let end = text
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(n.saturating_sub(1))
        .map_or(text.len(), |(i, _)| i + 1);
    text[..end].to_vec()
}

#[cfg(test)]
mod tests {
    use super::super::remote;
    use super::*;
    use std::collections::BTreeMap;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    /// A `docker` for the twins: logs `$PWD|$DOCKER_HOST|ARGS`; `ps -a` with a format answers
    /// 25 status lines, one with the secret; without, a table (and a warning on stderr);
    /// `logs` a few lines, one with the secret.
    const DOCKER: &str = r#"#!/bin/sh
d=__ROOT__
printf '%s|%s|%s\n' "$PWD" "$DOCKER_HOST" "$*" >> "$d/log"
case " $* " in
  *" ps -a --format "*) i=0; while [ $i -lt 25 ]; do echo "web-$i running Up $i minutes"; i=$((i + 1)); done
     echo "web-x exited token=s3cr3t-value" ;;
  *" ps -a "*) echo "NAME IMAGE STATUS"; echo "web-1 busybox Restarting (1)"; echo "warning: orphan" >&2 ;;
  *" logs "*) echo "booting"; echo "token=s3cr3t-value"; echo "crashed" >&2 ;;
esac
"#;

    /// The whole tree under `root` (the stand-in's own files left out), as path → (mode,
    /// content with the root as ROOT).
    fn tree(root: &Path) -> BTreeMap<String, (u32, String)> {
        let mut out = BTreeMap::new();
        let mut stack = vec![root.to_path_buf()];
        let r = root.to_str().expect("utf-8");
        while let Some(dir) = stack.pop() {
            for e in fs::read_dir(&dir).expect("read_dir").flatten() {
                let p = e.path();
                let m = fs::symlink_metadata(&p).expect("stat");
                let rel = p.strip_prefix(root).expect("under").to_string_lossy().into_owned();
                if rel.starts_with("bin") {
                    continue;
                }
                let body = if m.is_dir() {
                    stack.push(p.clone());
                    String::new()
                } else if m.file_type().is_symlink() {
                    fs::read_link(&p).expect("link").to_string_lossy().replace(r, "ROOT")
                } else {
                    fs::read_to_string(&p).expect("read").replace(r, "ROOT")
                };
                out.insert(rel, (m.mode() & 0o7777, body));
            }
        }
        out
    }

    /// Twin roots, set up alike by `setup`, then `DIAGNOSE` on one and this module on the
    /// other: each one's (status, stdout) and tree, compared.
    fn both(setup: impl Fn(&Path), deadman: bool) -> (Output, BTreeMap<String, (u32, String)>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let roots = [dir.path().join("script"), dir.path().join("native")];
        for r in &roots {
            fs::create_dir_all(r.join("bin")).expect("mkdir");
            let docker = r.join("bin/docker");
            fs::write(&docker, DOCKER.replace("__ROOT__", r.to_str().expect("utf-8")))
                .expect("write");
            fs::set_permissions(&docker, fs::Permissions::from_mode(0o755)).expect("chmod");
            fs::create_dir_all(r.join("state/releases/web/p2")).expect("mkdir");
            fs::create_dir_all(r.join("state/services")).expect("mkdir");
            fs::create_dir_all(r.join("config/web")).expect("mkdir");
            fs::write(r.join("config/web/.env"), "TOKEN=s3cr3t-value\n").expect("write");
            setup(r);
        }
        let args = |r: &Path| {
            let r = r.to_str().expect("utf-8");
            [
                "web".to_owned(),
                format!("{r}/state/services/web"),
                format!("{r}/logs/web/incident-p2.log"),
                format!("{r}/config/web/.env"),
                if deadman {
                    format!("{r}/state/deploy/p2/jobs/web/deadman")
                } else {
                    String::new()
                },
            ]
        };
        let script = {
            let r = &roots[0];
            let path = format!("{}:{}", r.join("bin").display(), std::env::var("PATH").unwrap());
            let o = Command::new("sh")
                .arg("-c")
                .arg(remote::DIAGNOSE)
                .arg("homelab")
                .args(args(r))
                .env("PATH", path)
                .env("DOCKER_HOST", "unix:///n.sock")
                .stdin(Stdio::null())
                .output()
                .expect("sh");
            assert!(o.stderr.is_empty(), "{}", String::from_utf8_lossy(&o.stderr));
            Output { status: o.status.code(), stdout: o.stdout, stderr: Vec::new() }
        };
        let native = {
            let r = &roots[1];
            let a = args(r);
            let docker = r.join("bin/docker");
            diagnose(&Diagnose {
                svc: &a[0],
                live: &a[1],
                out: &a[2],
                env_file: &a[3],
                deadman: Some(a[4].as_str()),
                docker: &docker,
                docker_host: "unix:///n.sock",
                deadline: Instant::now() + std::time::Duration::from_secs(20),
            })
            .expect("diagnosed")
        };
        let text = |o: &Output, r: &Path| {
            (
                o.status,
                String::from_utf8_lossy(&o.stdout).replace(r.to_str().expect("utf-8"), "ROOT"),
            )
        };
        assert_eq!(text(&script, &roots[0]), text(&native, &roots[1]));
        let [a, b] = [tree(&roots[0]), tree(&roots[1])];
        assert_eq!(a, b, "the script's tree, then this module's");
        (native, a)
    }

    fn live(r: &Path) {
        std::os::unix::fs::symlink(r.join("state/releases/web/p2"), r.join("state/services/web"))
            .expect("link");
    }

    #[test]
    fn a_diagnosis_here_writes_and_answers_as_the_script_does() {
        // No dead-man: the incident log (0600, both commands' output and errors), the first
        // 20 status lines, redacted, from the live release.
        let (o, t) = both(live, false);
        assert_eq!(o.status, Some(0));
        let said = String::from_utf8(o.stdout).expect("utf-8");
        assert_eq!(said.lines().count(), 20, "{said}");
        let (mode, log) = &t["logs/web/incident-p2.log"];
        assert_eq!(*mode, 0o600);
        assert!(log.starts_with("== docker compose ps\nNAME IMAGE STATUS\n"), "{log}");
        assert!(log.contains("warning: orphan") && log.contains("token=s3cr3t-value"), "{log}");
        assert!(t["log"].1.contains("ROOT/state/services/web|unix:///n.sock|compose -p web --env-file ROOT/config/web/.env ps -a"), "{t:?}");
        // Not deployed (no live link), no env file: from `/`, without `--env-file`.
        let (o, t) = both(|r| fs::remove_file(r.join("config/web/.env")).expect("rm"), false);
        assert_eq!(o.status, Some(0));
        assert!(t["log"].1.starts_with("/|unix:///n.sock|compose -p web ps -a\n"), "{t:?}");
    }

    #[test]
    fn a_diagnosis_takes_or_finds_the_deploys_one_decision_as_the_script_does() {
        let dm = "state/deploy/p2/jobs/web/deadman";
        // Undecided: the controller's rollback is decided here.
        let (o, t) = both(
            |r| {
                live(r);
                fs::create_dir_all(r.join(dm)).expect("mkdir")
            },
            true,
        );
        assert_eq!(o.status, Some(0));
        assert!(t.contains_key(&format!("{dm}/decided/controller-rollback")), "{t:?}");
        // The node rolled back by itself first: 75, after the status.
        let (o, _) = both(
            |r| {
                live(r);
                fs::create_dir_all(r.join(dm).join("decided")).expect("mkdir");
                fs::write(r.join(dm).join("decided/rolled-back"), "").expect("write");
            },
            true,
        );
        assert_eq!(o.status, Some(75));
        assert!(!o.stdout.is_empty());
        // An earlier run decided the controller's rollback and kept its incident log: kept.
        let (o, t) = both(
            |r| {
                live(r);
                fs::create_dir_all(r.join(dm).join("decided")).expect("mkdir");
                fs::write(r.join(dm).join("decided/controller-rollback"), "").expect("write");
                fs::create_dir_all(r.join("logs/web")).expect("mkdir");
                fs::write(r.join("logs/web/incident-p2.log"), "the first run's\n").expect("w");
            },
            true,
        );
        assert_eq!(o.status, Some(0));
        assert_eq!(t["logs/web/incident-p2.log"].1, "the first run's\n");
        // A dead-man folder named but gone: nothing decided.
        let (o, t) = both(live, true);
        assert_eq!(o.status, Some(0));
        assert!(!t.keys().any(|k| k.contains("decided")), "{t:?}");
    }
}
