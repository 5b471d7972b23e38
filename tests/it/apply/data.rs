//! Data-safe updates (issue 18): before a change the node snapshots the service's data (its
//! folders and the named volumes of its compose project), and every rollback — the
//! controller's after a failed verify, the node's own dead-man — puts that data back before
//! the previous release starts. A snapshot that would leave the disk under the node's
//! threshold refuses the change before anything stops.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::*;

/// `web` made stateful: a bind mount under its data folder and a named volume. Version 1
/// writes `schema1` into both when they are empty; version 2 "migrates" them (a marker, and
/// `schema2` in both), as an app that migrates its database on start does. The healthcheck
/// passes only on `schema1`, so version 2 fails its verify.
fn stateful(site: &Site, version: &str) {
    let command = match version {
        "1" => "[ -f /state/schema ] || echo schema1 > /state/schema; [ -f /db/schema ] || echo schema1 > /db/schema; exec httpd -f -p 8080",
        "1b" => "[ -f /state/schema ] || echo schema1 > /state/schema; [ -f /db/schema ] || echo schema1 > /db/schema; exec httpd -f -p 8081",
        _ => "echo migrated > /state/marker; echo schema2 > /state/schema; echo schema2 > /db/schema; rm -f /state/owned; exec httpd -f -p 8080",
    };
    site.write(
        "services/web/docker-compose.yml",
        &format!(
            r#"services:
  web:
    image: "{{{{ vars.image }}}}"
    container_name: web
    restart: unless-stopped
    command: ["sh", "-c", "{command}"]
    volumes:
      - "{{{{ data_dir }}}}/state:/state"
      - db:/db
{{% include "labels.yml.j2" %}}
volumes:
  db: {{}}
"#
        ),
    );
    site.write(
        "services/web/healthcheck.sh",
        "#!/bin/sh\n# Healthy when the data is at the schema this version reads.\ns=$(docker exec web cat /state/schema) || exit 1\n[ \"$s\" = schema1 ] || { echo \"schema is $s\"; exit 1; }\n",
    );
    site.edit("services/web/service.yaml", |s| {
        let s = s
            .replace("  interval: 5s\n  timeout: 2s\n  retries: 3\n", "  interval: 1s\n  timeout: 1s\n  retries: 2\n")
            .replace("  stable_for: 2s\n", "  stable_for: 1s\n");
        if s.contains("persistence:") {
            s
        } else {
            s + "persistence:\n  paths: [data/web]\nbackup:\n  sets:\n    - name: web-state\n      paths: [data/web]\n      critical: true\n"
        }
    });
}

/// Every entry under `dir`: path, kind, owner, mode, and content or link target.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for p in entries {
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            let what = if m.file_type().is_symlink() {
                format!("-> {}", fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                "dir".to_owned()
            } else {
                format!("{:?}", fs::read(&p).unwrap())
            };
            out.push(format!("{rel} {}:{} {:o} {what}", m.uid(), m.gid(), m.mode() & 0o7777));
            if m.is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let m = fs::metadata(dir).unwrap();
    let mut out = vec![format!(". {}:{} {:o}", m.uid(), m.gid(), m.mode() & 0o7777)];
    walk(dir, dir, &mut out);
    out
}

/// A small tmpfs mounted on a node for the length of a test, unmounted however the test ends.
/// Mounted over ssh: the node's sshd has a mount namespace of its own (`ip netns exec`).
struct Mounted<'l> {
    lab: &'l Lab,
    node: &'static str,
    path: String,
}

impl<'l> Mounted<'l> {
    fn tmpfs(lab: &'l Lab, node: &'static str, path: &Path, size: &str) -> Mounted<'l> {
        let path = path.display().to_string();
        let out =
            lab.ssh(node, &["mount", "-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", &path]);
        assert!(
            out.status.success(),
            "mount a tmpfs on {node}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Mounted { lab, node, path }
    }
}

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        let _ = self.lab.ssh(self.node, &["umount", &self.path]);
    }
}

/// The migration case, the dead-man's rollback, and a disk too full for the snapshot.
#[test]
fn a_rolled_back_update_brings_back_the_data_it_migrated_and_a_full_disk_refuses_it() {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new(Lab::start(&NODES));
    stateful(&site, "1");
    let id = site.plan_and_approve();
    let out = site.apply(&id, &[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);

    // The data as version 1 left it, plus what an owner would hold: another owner and mode,
    // a symlink, a private folder; in the bind mount and in the named volume.
    let state = site.root("alpha").join("data/web/state");
    let volume = {
        let out =
            site.lab.docker("alpha", &["volume", "inspect", "-f", "{{.Mountpoint}}", "web_db"]);
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    };
    assert_eq!(fs::read_to_string(state.join("schema")).unwrap(), "schema1\n");
    assert_eq!(fs::read_to_string(volume.join("schema")).unwrap(), "schema1\n");
    for dir in [&state, &volume] {
        fs::write(dir.join("owned"), "keys\n").unwrap();
        std::os::unix::fs::chown(dir.join("owned"), Some(1234), Some(5678)).unwrap();
        fs::set_permissions(dir.join("owned"), fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::symlink("schema", dir.join("link")).unwrap();
        fs::create_dir(dir.join("private")).unwrap();
        fs::write(dir.join("private/z2m-network-key"), [0u8, 1, 2, 255]).unwrap();
        fs::set_permissions(dir.join("private"), fs::Permissions::from_mode(0o700)).unwrap();
    }
    let (state_before, volume_before) = (tree(&state), tree(&volume));

    // Version 2 migrates the data and fails its verify: rolled back, data and all.
    stateful(&site, "2");
    let id = site.plan_and_approve();
    let out = site.apply(&id, &[]);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert_ne!(out.code, 0, "{all}");
    assert!(all.contains(&format!("data snapshot {id} taken before the change")), "{all}");
    assert!(all.contains(&format!("data restored to snapshot {id}, healthy")), "{all}");
    assert_eq!(tree(&state), state_before, "the bind mount, byte for byte, owners and modes");
    assert_eq!(tree(&volume), volume_before, "the named volume, byte for byte, owners and modes");
    let snapshot = site.root("alpha").join(format!("state/snapshots/web/{id}"));
    assert_eq!(fs::metadata(&snapshot).unwrap().permissions().mode() & 0o777, 0o700);

    // The node's own rollback (no confirmation reaches it) restores the data too.
    let id = site.plan_and_approve();
    let mut child = site.spawn_apply(&id, &["--confirm-timeout", "2", "--node", "alpha"]);
    let (seen, rest) = wait_for_line(&mut child, "[alpha] web deploy:");
    site.lab.refuse_new("alpha");
    let (code, tail) = finish(child, rest);
    let all = format!("{}{tail}", seen.join(""));
    assert_ne!(code, 0, "{all}");
    let dm = site.root("alpha").join(format!("state/deploy/{id}/jobs/web/deadman"));
    let until = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while !dm.join("rollback.rc").exists() && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    site.lab.accept_new("alpha");
    assert!(dm.join("decided/rolled-back").exists(), "the node rolled back by itself: {all}");
    let log = fs::read_to_string(dm.join("rollback.log")).unwrap_or_default();
    assert_eq!(fs::read_to_string(dm.join("rollback.rc")).unwrap().trim(), "0", "{log}");
    assert!(log.contains(&format!("hl-data: restored {id}")), "{log}");
    assert_eq!(fs::read_to_string(dm.join("rollback.health")).unwrap().trim(), "ok", "{log}");
    assert_eq!(tree(&state), state_before, "restored by the node's own rollback");
    assert_eq!(tree(&volume), volume_before, "restored by the node's own rollback");
    // The resume records the node's decision and releases the node.
    let out = site.apply(&id, &["--resume", "--confirm-timeout", "2"]);
    assert!(out.stdout.contains("by itself"), "{}\n{}", out.stdout, out.stderr);

    // A disk too small for the snapshot: refused before anything stops, nothing changed.
    stateful(&site, "1b");
    let snapshots = site.root("alpha").join("state/snapshots");
    let mount = Mounted::tmpfs(&site.lab, "alpha", &snapshots, "1m");
    fs::write(state.join("big"), vec![7u8; 2 << 20]).unwrap();
    let started = |site: &Site| {
        let out =
            site.lab.docker("alpha", &["inspect", "-f", "{{.Id}} {{.State.StartedAt}}", "web"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let (before, live) = (started(&site), site.live(&site.root("alpha"), "web"));
    let id = site.plan_and_approve();
    let out = site.apply(&id, &[]);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert_ne!(out.code, 0, "{all}");
    assert!(all.contains("snapshot_min_free"), "{all}");
    assert!(all.contains("nothing was stopped or changed"), "{all}");
    assert!(all.contains("data/web"), "names what it would copy: {all}");
    assert_eq!(started(&site), before, "the container was not stopped or recreated");
    assert_eq!(site.live(&site.root("alpha"), "web"), live, "the live release is unchanged");
    assert!(site.running("alpha", "web"));
    let journal = site.journal("alpha", &id);
    assert_eq!(journal["services"]["web"]["stage"], "failed", "{id}: {journal}");

    // With room again, the next plan applies.
    drop(mount);
    let id = site.plan_and_approve();
    let out = site.apply(&id, &[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(fs::read_dir(&snapshots).unwrap().count() > 0);
}

/// `net.ipv4.ip_forward` on for the length of a test (lab nodes reach each other through this
/// machine), put back as it was however the test ends.
struct Forwarding(String);

impl Forwarding {
    fn on() -> Forwarding {
        let path = "/proc/sys/net/ipv4/ip_forward";
        let was = fs::read_to_string(path).unwrap_or_else(|_| "0".into()).trim().to_owned();
        fs::write(path, "1").expect("turn on forwarding");
        Forwarding(was)
    }
}

impl Drop for Forwarding {
    fn drop(&mut self) {
        let _ = fs::write("/proc/sys/net/ipv4/ip_forward", &self.0);
    }
}

/// A restic repository at `path` on edge-b over SFTP, and the `-o sftp.command` that names the
/// lab's key and known hosts: `(repository, option)`.
fn sftp_on_edge_b(site: &Site, path: &Path) -> (String, String) {
    let b = site.lab.node("edge-b");
    let command = format!(
        "sftp.command=ssh -i {} -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes -o BatchMode=yes root@{} -s sftp",
        site.lab.client_key().display(),
        site.lab.known_hosts().display(),
        b.address
    );
    (format!("sftp:root@{}:{}", b.address, path.display()), command)
}

/// What restic itself says is in a repository: `(set tag, short id)` per snapshot.
fn restic_snapshots(repo: &str, password: &Path, options: &[String]) -> Vec<(String, String)> {
    let out = Command::new("restic")
        .args(options)
        .args(["-r", repo, "--password-file"])
        .arg(password)
        .args(["snapshots", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "restic snapshots: {}", String::from_utf8_lossy(&out.stderr));
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    list.iter()
        .map(|s| {
            let set = s["tags"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|t| t.as_str()?.strip_prefix("set="))
                .next()
                .unwrap_or("?")
                .to_owned();
            (set, s["short_id"].as_str().unwrap().to_owned())
        })
        .collect()
}

/// `homelab backup` copies the sets into restic on the node, to a local path and over SFTP to
/// another node, keeps `retain:` snapshots per set, never shows the password, and restic's own
/// restore gives the data back byte for byte; `backup list` shows both kinds of snapshot.
#[test]
fn backups_go_to_restic_locally_and_over_sftp_and_restore_byte_for_byte() {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new(Lab::start(&NODES));
    stateful(&site, "1");
    site.edit("services/web/service.yaml", |s| {
        s.replace("      critical: true\n", "      critical: true\n      retain: 2\n")
    });
    let local_repo = site.lab.dir().join("restic local $(touch pwned)");
    site.edit("inventory/topology.yaml", |s| {
        s.replacen(
            "nodes:\n",
            &format!("backup:\n  repository: \"{}\"\nnodes:\n", local_repo.display()),
            1,
        )
    });
    let id = site.plan_and_approve();
    let out = site.apply(&id, &[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);

    // No password file yet: a clear refusal, nothing made.
    let out = site.homelab(&["backup", "--node", "alpha"]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("no restic password file at"), "{}", out.stdout);
    assert!(!local_repo.exists());

    let password = "correct horse $(touch pwned) `id` \"battery\"";
    let pwfile = site.root("alpha").join("config/backup/restic-password");
    fs::create_dir_all(pwfile.parent().unwrap()).unwrap();
    fs::write(&pwfile, password).unwrap();
    fs::set_permissions(&pwfile, fs::Permissions::from_mode(0o600)).unwrap();
    let state = site.root("alpha").join("data/web/state");
    fs::write(state.join("z2m-network-key"), [9u8, 0, 255, 1]).unwrap();
    let mut ids = Vec::new();
    for round in 0..3 {
        fs::write(state.join("round"), format!("{round}\n")).unwrap();
        let out = site.homelab(&["backup", "--node", "alpha", "--service", "web"]);
        assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
        assert!(!out.stdout.contains("horse") && !out.stderr.contains("horse"));
        let said =
            out.stdout.lines().find(|l| l.starts_with("alpha web/web-state: restic snapshot"));
        let said = said.unwrap_or_else(|| panic!("{}", out.stdout));
        ids.push(said.split(' ').nth(4).unwrap().trim_end_matches(',').to_owned());
    }
    assert!(!site.lab.dir().join("pwned").exists() && !Path::new("pwned").exists());
    let repo = local_repo.display().to_string();
    let kept = restic_snapshots(&repo, &pwfile, &[]);
    assert_eq!(kept.len(), 2, "retain: 2 keeps two: {kept:?}");
    assert!(kept.iter().all(|(set, _)| set == "web-state"), "{kept:?}");
    assert!(kept.iter().any(|(_, id)| *id == ids[2]), "the newest is kept: {kept:?} {ids:?}");
    let record =
        fs::read_to_string(site.root("alpha").join("state/backups/web/web-state.json")).unwrap();
    assert!(!record.contains("horse"), "{record}");

    // restic's own restore of the newest gives the set back, byte for byte.
    let back = tempfile::tempdir().unwrap();
    let out = Command::new("restic")
        .args(["-r", &repo, "--password-file"])
        .arg(&pwfile)
        .args(["restore", "latest", "--target"])
        .arg(back.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let restored = back.path().join(state.strip_prefix("/").unwrap());
    assert_eq!(tree(&restored), tree(&state));

    // Over SFTP to another node, with restic's own `-o sftp.command` naming the key.
    let _forwarding = Forwarding::on();
    let remote = site.lab.node("edge-b").dir.join("restic-sftp");
    let (sftp, command) = sftp_on_edge_b(&site, &remote);
    site.edit("inventory/topology.yaml", |s| {
        s.replacen(
            &format!("  repository: \"{}\"\n", local_repo.display()),
            &format!("  repository: \"{sftp}\"\n  options:\n    - \"{command}\"\n"),
            1,
        )
    });
    let out = site.homelab(&["backup", "--node", "alpha"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("alpha web/web-state: restic snapshot"), "{}", out.stdout);
    assert!(remote.join("config").exists(), "the repository is on edge-b");
    let over = restic_snapshots(&sftp, &pwfile, &["-o".to_owned(), command.clone()]);
    assert_eq!(over.len(), 1, "{over:?}");

    // The listing shows the snapshot taken before a change and restic's.
    stateful(&site, "1b");
    let id = site.plan_and_approve();
    let out = site.apply(&id, &[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let out = site.homelab(&["backup", "list", "--node", "alpha"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains(&format!("local  web - {id}")), "{}", out.stdout);
    assert!(out.stdout.contains(&format!("restic web web-state {}", over[0].1)), "{}", out.stdout);
}

/// Waits (bounded) until `path` exists; whether it did.
fn appears(path: &Path, within: std::time::Duration) -> bool {
    let until = std::time::Instant::now() + within;
    while !path.exists() {
        if std::time::Instant::now() > until {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    true
}

/// Kills the controller `child` and then the node's detached job in `job` (its whole process
/// group: `setsid` made it a leader), as a node that reboots mid-step would leave it.
fn kill_both(mut child: Child, job: &Path) {
    child.kill().unwrap();
    child.wait().unwrap();
    let pid: i32 = fs::read_to_string(job.join("pid")).unwrap().trim().parse().unwrap();
    let _ = Command::new("kill").args(["-9", "--", &format!("-{pid}")]).status();
}

/// A snapshot and a restore cut off mid-copy (the controller and the node's job both killed, as
/// by a reboot): `--resume` makes the snapshot again from the start, or restores again whole,
/// and converges with nothing lost.
#[test]
fn a_snapshot_or_a_restore_killed_mid_copy_is_made_again_whole_on_resume() {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new(Lab::start(&NODES));
    stateful(&site, "1");
    let id = site.plan_and_approve();
    let out = site.apply(&id, &["--node", "alpha"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    // Enough data that copying it takes a while: random bytes do not compress.
    let state = site.root("alpha").join("data/web/state");
    let mut big = fs::File::create(state.join("big")).unwrap();
    let mut random = std::io::Read::take(fs::File::open("/dev/urandom").unwrap(), 160 << 20);
    std::io::copy(&mut random, &mut big).unwrap();
    drop(big);
    let before = tree(&state);

    // Killed while the snapshot is being copied; resumed: made again whole, then deployed.
    stateful(&site, "1b");
    let id = site.plan_and_approve();
    let child = site.spawn_apply(&id, &["--node", "alpha"]);
    let root = site.root("alpha");
    let tmp = root.join(format!("state/snapshots/web/{id}.tmp"));
    assert!(
        appears(&tmp.join("manifest"), std::time::Duration::from_secs(120)),
        "the snapshot began"
    );
    kill_both(child, &root.join(format!("state/deploy/{id}/jobs/web/up")));
    let snapshot = root.join(format!("state/snapshots/web/{id}"));
    assert!(!snapshot.exists(), "killed before the snapshot was whole");
    let out = site.apply(&id, &["--node", "alpha", "--resume"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(snapshot.join("complete").exists() && !tmp.exists(), "made again whole");
    assert_eq!(tree(&state), before, "nothing lost");

    // Killed while a rollback restores the data; resumed: restored again whole, rolled back.
    stateful(&site, "2");
    let id = site.plan_and_approve();
    let child = site.spawn_apply(&id, &["--node", "alpha"]);
    let job = root.join(format!("state/deploy/{id}/jobs/web/rollback"));
    assert!(appears(&job.join("pid"), std::time::Duration::from_secs(120)), "the rollback began");
    // The restore empties the folder first: wait until the copy back is under way.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while state.join("marker").exists() && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    kill_both(child, &job);
    assert!(!job.join("rc").exists(), "killed before the restore ended");
    assert_ne!(tree(&state), before, "cut mid-restore");
    let out = site.apply(&id, &["--node", "alpha", "--resume"]);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains(&format!("data restored to snapshot {id}, healthy")), "{all}");
    assert_eq!(tree(&state), before, "restored whole");
}

impl Site {
    /// `homelab restore --node N --service S --snapshot ID --key <operator>`.
    fn restore(&self, node: &str, svc: &str, snapshot: &str) -> Output {
        let key = self.key.to_str().unwrap().to_owned();
        let args = ["restore", "--node", node, "--service", svc, "--snapshot", snapshot, "--key"];
        self.homelab(&[&args[..], &[key.as_str()]].concat())
    }

    /// Approves plan `id` with the operator's key.
    fn approve(&self, id: &str) -> Output {
        let key = self.key.to_str().unwrap().to_owned();
        let plan = self.plan_path(id).display().to_string();
        self.homelab(&["approve", &plan, "--key", &key, "--yes"])
    }
}

/// The id of the plan a `plan`-like command printed first.
fn plan_id(out: &Output) -> String {
    let first = out.stdout.lines().next().and_then(|l| l.strip_prefix("plan "));
    first.unwrap_or_else(|| panic!("{}\n{}", out.stdout, out.stderr)).trim().to_owned()
}

/// Issue 18 item 4: a restore is a reviewed change. `homelab restore` makes a signed plan
/// whose one change puts the data back (a local snapshot, or a restic backup); it applies only
/// once approved, with a snapshot of the data it replaces; an id that is not there, or not a
/// snapshot id, is refused naming what there is. Then the disaster drill: the node's runtime
/// root, containers and volumes destroyed, its services planned and applied anew, and its data
/// restored from restic over SFTP on another node, byte for byte.
#[test]
fn a_restore_is_a_reviewed_plan_and_a_destroyed_node_gets_its_data_back_from_restic() {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new(Lab::start(&NODES));
    let _forwarding = Forwarding::on();
    stateful(&site, "1");
    // The set holds the bind mount and the compose project's named volume.
    site.edit("services/web/service.yaml", |s| {
        s.replace("      paths: [data/web]\n", "      paths: [data/web]\n      volumes: [db]\n")
    });
    let (sftp, command) = sftp_on_edge_b(&site, &site.lab.node("edge-b").dir.join("restic"));
    site.edit("inventory/topology.yaml", |s| {
        let backup =
            format!("backup:\n  repository: \"{sftp}\"\n  options:\n    - \"{command}\"\n");
        s.replacen("nodes:\n", &format!("{backup}nodes:\n"), 1)
    });
    let out = site.apply(&site.plan_and_approve(), &[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let state = site.root("alpha").join("data/web/state");
    let volume = || {
        let out =
            site.lab.docker("alpha", &["volume", "inspect", "-f", "{{.Mountpoint}}", "web_db"]);
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    };
    fs::write(volume().join("retained"), "mosquitto's retained messages\n").unwrap();
    fs::write(state.join("z2m-network-key"), [9u8, 0, 255, 1]).unwrap();
    fs::write(state.join("owned"), "keys\n").unwrap();
    std::os::unix::fs::chown(state.join("owned"), Some(1234), Some(5678)).unwrap();
    fs::set_permissions(state.join("owned"), fs::Permissions::from_mode(0o640)).unwrap();

    // The deploy made the critical set watched before any backup: its record counts from the
    // deploy (the stability agent reports it once past max_age, see `backup::tests`).
    let record = site.root("alpha").join("state/backups/web/web-state.json");
    let watched: serde_json::Value = serde_json::from_slice(&fs::read(&record).unwrap()).unwrap();
    assert_eq!(watched["time"], serde_json::Value::Null, "{watched}");
    assert_eq!(watched["max_age_secs"], 172_800, "{watched}");
    assert!(watched["since"].as_str().is_some_and(|t| t.ends_with('Z')), "{watched}");
    assert_eq!(fs::metadata(&record).unwrap().permissions().mode() & 0o777, 0o600);

    // A backup to edge-b over SFTP.
    let pwfile = site.root("alpha").join("config/backup/restic-password");
    let write_password = || {
        fs::create_dir_all(pwfile.parent().unwrap()).unwrap();
        fs::write(&pwfile, "drill $(touch pwned) password").unwrap();
        fs::set_permissions(&pwfile, fs::Permissions::from_mode(0o600)).unwrap();
    };
    write_password();
    let out = site.homelab(&["backup", "--node", "alpha", "--service", "web"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let said = out.stdout.lines().find(|l| l.starts_with("alpha web/web-state: restic snapshot"));
    let backup = said.unwrap_or_else(|| panic!("{}", out.stdout));
    let backup = backup.split(' ').nth(4).unwrap().trim_end_matches(',').to_owned();
    let backed_up = tree(&state);
    let volume_backed_up = tree(&volume());
    let recorded: serde_json::Value = serde_json::from_slice(&fs::read(&record).unwrap()).unwrap();
    assert!(recorded["time"].is_string(), "the backup's record replaces the deploy's: {recorded}");

    // An update snapshots the data first (snapshot `before`); the data then goes wrong.
    stateful(&site, "1b");
    let before = site.plan_and_approve();
    let out = site.apply(&before, &[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    fs::write(state.join("z2m-network-key"), "lost\n").unwrap();
    fs::write(state.join("junk"), "written after\n").unwrap();

    // Refused before any plan: an id that is not there (naming the ones there are), or no id.
    let out = site.restore("alpha", "web", "deadbeefdeadbeef");
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("has no local snapshot `deadbeefdeadbeef`"), "{}", out.stderr);
    assert!(out.stderr.contains(&before), "names the snapshots there are: {}", out.stderr);
    let out = site.restore("alpha", "web", "$(touch pwned)");
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("expected a snapshot id"), "{}", out.stderr);
    assert!(!Path::new("pwned").exists() && !site.lab.dir().join("pwned").exists());

    // The restore plan: one change, reviewed like any other, applied once approved.
    let out = site.restore("alpha", "web", &before);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let restore = plan_id(&out);
    assert!(
        out.stdout.contains(&format!("restore data from local snapshot {before}")),
        "{}",
        out.stdout
    );
    let text = fs::read_to_string(site.plan_path(&restore)).unwrap();
    assert!(text.contains(&format!("\nrestore local {before}\n")), "{text}");
    let show = site.homelab(&["show", site.plan_path(&restore).to_str().unwrap()]);
    assert_eq!(show.code, 0, "{}\n{}", show.stdout, show.stderr);
    let out = site.apply(&restore, &[]);
    assert_ne!(out.code, 0, "not approved yet: {}\n{}", out.stdout, out.stderr);
    assert_eq!(fs::read_to_string(state.join("junk")).unwrap(), "written after\n");
    let out = site.approve(&restore);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let out = site.apply(&restore, &[]);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert_eq!(out.code, 0, "{all}");
    assert!(all.contains(&format!("data restored from local snapshot {before}, healthy")), "{all}");
    assert_eq!(tree(&state), backed_up, "the data as the snapshot holds it");
    // The data it replaced is kept in the restore plan's own snapshot.
    let replaced = site.root("alpha").join(format!("state/snapshots/web/{restore}"));
    assert!(replaced.join("complete").exists());
    // Applied once: the same plan again is a replay.
    let out = site.apply(&restore, &[]);
    assert_ne!(out.code, 0, "{}\n{}", out.stdout, out.stderr);

    // A restore that does not come up healthy is rolled back to the data it replaced: a
    // snapshot of broken data (taken by an update that then failed on it), restored.
    fs::write(state.join("schema"), "schema2\n").unwrap();
    stateful(&site, "1");
    let broken = site.plan_and_approve();
    assert_ne!(site.apply(&broken, &[]).code, 0);
    stateful(&site, "1b");
    fs::write(state.join("schema"), "schema1\n").unwrap();
    let good = tree(&state);
    let out = site.restore("alpha", "web", &broken);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let bad = plan_id(&out);
    assert_eq!(site.approve(&bad).code, 0);
    let out = site.apply(&bad, &[]);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert_ne!(out.code, 0, "{all}");
    assert!(all.contains(&format!("data restored to snapshot {bad}, healthy")), "{all}");
    assert_eq!(tree(&state), good, "the data the failed restore replaced, back");

    // The drill: the node destroyed (containers, volumes, its whole runtime root).
    for c in ["web", "cache"] {
        site.lab.docker("alpha", &["rm", "-f", c]);
    }
    site.lab.docker("alpha", &["volume", "rm", "-f", "web_db"]);
    let root = site.root("alpha");
    fs::remove_dir_all(&root).unwrap();
    fs::create_dir_all(&root).unwrap();
    // A new node: its services planned and applied anew, the operator's password put back.
    let out = site.apply(&site.plan_and_approve(), &[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_ne!(tree(&state), backed_up);
    assert!(!volume().join("retained").exists(), "a new, empty volume");
    write_password();
    let out = site.homelab(&["backup", "list", "--node", "alpha"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains(&format!("restic web web-state {backup}")), "{}", out.stdout);
    // The newest backup of the service, by `restic:latest`: the plan names the id it took.
    let out = site.restore("alpha", "web", "restic:latest");
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let restore = plan_id(&out);
    let text = fs::read_to_string(site.plan_path(&restore)).unwrap();
    assert!(text.contains(&format!("\nrestore restic {backup}\n")), "{text}");
    assert!(site.approve(&restore).code == 0);
    let out = site.apply(&restore, &[]);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert_eq!(out.code, 0, "{all}");
    assert!(
        all.contains(&format!("data restored from restic snapshot {backup}, healthy")),
        "{all}"
    );
    assert_eq!(tree(&state), backed_up, "the network key and all, owners and modes kept");
    assert_eq!(tree(&volume()), volume_backed_up, "the named volume, from its own mountpoint");
    assert!(site.running("alpha", "web"));
    assert!(!all.contains("drill"), "the password never shows: {all}");
}
