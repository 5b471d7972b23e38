//! `inventory/allowed_signers` read by homelab and by `ssh-keygen -Y verify` give the same
//! verdict: a differential test over generated lines (principal lists with negations, wildcards
//! and quotes; namespaces; validity windows with and without `Z`) and identities, run against
//! the real `ssh-keygen`. Then the time zone: a time without `Z` is local time for both.

use std::fs;

use homelab::approve::AllowedSigners;

use crate::support::Lab;

const MESSAGE: &[u8] = b"homelab-plan 1\nthe bytes an approver signs\n";
const NAMESPACE: &str = "homelab-approve";
/// The time of every check, ours and `ssh-keygen`'s (`-Overify-time`).
const NOW: &str = "2026-06-01T12:00:00Z";
const NOW_SSH: &str = "20260601120000Z";

fn ssh_verdict(dir: &std::path::Path, line: &str, identity: &str, sig: &str, tz: &str) -> bool {
    let signers = dir.join("allowed_signers");
    let sig_path = dir.join("msg.sig");
    fs::write(&signers, format!("{line}\n")).unwrap();
    fs::write(&sig_path, sig).unwrap();
    let time = format!("-Overify-time={NOW_SSH}");
    ssh_verify(&signers, identity, NAMESPACE, &sig_path, MESSAGE, tz, &[&time])
}

/// `ssh-keygen -Y verify` of `message` in the time zone `tz`, with extra options.
fn ssh_verify(
    signers: &std::path::Path,
    identity: &str,
    namespace: &str,
    sig: &std::path::Path,
    message: &[u8],
    tz: &str,
    extra: &[&str],
) -> bool {
    std::process::Command::new("ssh-keygen")
        .args(["-Y", "verify", "-f"])
        .arg(signers)
        .args(["-I", identity, "-n", namespace, "-s"])
        .arg(sig)
        .args(extra)
        .env("TZ", tz)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            let _ = c.stdin.take().unwrap().write_all(message);
            c.wait()
        })
        .expect("cannot run `ssh-keygen`: install openssh-client")
        .success()
}

fn homelab_verdict(line: &str, identity: &str, sig: &str) -> bool {
    let Ok(signers) = AllowedSigners::parse(&format!("{line}\n"), "allowed_signers") else {
        return false;
    };
    let now = humantime::parse_rfc3339(NOW).unwrap();
    signers.verify(NAMESPACE, MESSAGE, sig, now).is_ok_and(|v| v.allows(identity))
}

#[test]
fn allowed_signers_verdicts_agree_with_ssh_keygen() {
    let lab = Lab::new();
    let key = lab.keygen("appr");
    let sig = key.ssh_sign(NAMESPACE, MESSAGE);
    let principals = [
        "appr@saturn",
        "appr@saturn,!appr@saturn",
        "!appr@saturn,appr@saturn",
        "*@saturn",
        "*@saturn,!appr@*",
        "appr@*,!*@vps",
        "\"appr one@saturn\"",
        "\"appr@saturn,alice@saturn\"",
        "alice@saturn,appr@saturn",
        "other@saturn",
        "appr?saturn",
    ];
    let options = [
        "",
        "namespaces=\"homelab-approve\" ",
        "namespaces=\"homelab-*\" ",
        "namespaces=\"homelab-*,!homelab-approve\" ",
        "namespaces=\"git\" ",
        "valid-after=\"20260101Z\" ",
        "valid-after=\"20270101Z\" ",
        "valid-before=\"20260101\" ",
        "valid-before=\"202606011300\" ",
        "valid-before=\"20260601115959Z\" ",
        "valid-after=\"20260601120000Z\",valid-before=\"20260601120000Z\" ",
        "valid-after=\"20250101\",namespaces=\"homelab-approve,git\" ",
    ];
    let identities = ["appr@saturn", "appr one@saturn", "alice@saturn", "x@vps", "appr@vps"];
    let dir = lab.path("differential");
    fs::create_dir_all(&dir).unwrap();
    let mut disagreements = Vec::new();
    let mut checked = 0;
    for p in principals {
        for o in options {
            let line = format!("{p} {o}{}", key.public);
            for id in identities {
                let ours = homelab_verdict(&line, id, &sig);
                let theirs = ssh_verdict(&dir, &line, id, &sig, "UTC");
                checked += 1;
                if ours != theirs {
                    disagreements.push(format!(
                        "-I {id:?} with `{line}`: homelab {ours}, ssh-keygen {theirs}"
                    ));
                }
            }
        }
    }
    assert_eq!(checked, principals.len() * options.len() * identities.len());
    assert!(
        disagreements.is_empty(),
        "{} of {checked} verdicts differ:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
}

/// A `valid-before` without `Z` is local time: five hours east of UTC, a key valid until two
/// hours from now (local wall clock) stopped being valid three hours ago. `ssh-keygen` and
/// homelab (`show` checks the planner's key) agree, in UTC and in that zone.
#[test]
fn a_time_without_z_is_local_time_as_in_ssh_keygen() {
    let lab = Lab::new();
    let key = lab.keygen("appr");
    let sig = key.ssh_sign(NAMESPACE, MESSAGE);
    let dir = lab.path("tz");
    fs::create_dir_all(&dir).unwrap();
    // NOW is 12:00 UTC; 14:00 without Z is valid in UTC, expired at UTC+5 (POSIX `XXX-5`).
    let line = format!("appr@saturn valid-before=\"202606011400\" {}", key.public);
    assert!(ssh_verdict(&dir, &line, "appr@saturn", &sig, "UTC"));
    assert!(!ssh_verdict(&dir, &line, "appr@saturn", &sig, "XXX-5"));

    // The same through homelab: a plan signed now by a key whose line ends two hours from
    // now, written as a UTC wall-clock time without `Z`.
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(2 * 3600);
    let wall: String = humantime::format_rfc3339_seconds(later)
        .to_string()
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    let options = format!("namespaces=\"homelab-plan,homelab-approve\",valid-before=\"{wall}\"");
    lab.allow(&[("appr@saturn", options.as_str(), &key)]);
    lab.policy("24h", 1, &["appr@saturn"]);
    let id = lab.homelab_env(&["validate"], &[("TZ", "UTC")]);
    assert_eq!(id.code, 0, "{}", id.stderr);
    let out = lab.homelab_env(
        &["plan", "--transport", "local", "--root", "rt", "--key", key.arg()],
        &[("TZ", "UTC")],
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let id = out.stdout.lines().next().unwrap().strip_prefix("plan ").unwrap().to_owned();
    let plan = format!("repo/plans/{id}.plan");
    let utc = lab.homelab_env(&["show", &plan], &[("TZ", "UTC")]);
    assert!(utc.stdout.contains("valid: made by appr@saturn"), "{}", utc.stdout);
    let east = lab.homelab_env(&["show", &plan], &[("TZ", "XXX-5")]);
    assert!(
        east.stdout.contains("NOT VALID") && east.stdout.contains("has expired"),
        "{}",
        east.stdout
    );
    // And ssh-keygen, on the plan itself, in both zones.
    let text = lab.plan_file(&id);
    let (body, plan_sig) = crate::support::split_plan(&text);
    fs::write(dir.join("allowed_signers"), lab.read("repo/inventory/allowed_signers")).unwrap();
    fs::write(dir.join("plan.sig"), plan_sig).unwrap();
    for (tz, ok) in [("UTC", true), ("XXX-5", false)] {
        let ran = ssh_verify(
            &dir.join("allowed_signers"),
            "appr@saturn",
            "homelab-plan",
            &dir.join("plan.sig"),
            body.as_bytes(),
            tz,
            &[],
        );
        assert_eq!(ran, ok, "ssh-keygen in {tz}");
    }
}

/// `?` and `*` match bytes, as OpenSSH's `match_pattern` does, not characters (issue 19,
/// item 6): `?@saturn` does not allow `ü@saturn` (two bytes in UTF-8) for `ssh-keygen`, so not
/// for homelab either; `??@saturn` does for both.
#[test]
fn wildcards_match_bytes_as_in_ssh_keygen() {
    let lab = Lab::new();
    let key = lab.keygen("appr");
    let sig = key.ssh_sign(NAMESPACE, MESSAGE);
    let principals = [
        "?@saturn",
        "??@saturn",
        "???@saturn",
        "*@saturn",
        "?*@saturn",
        "ü@saturn",
        "?ü@saturn",
        "*,!?@saturn",
        "*,!??@saturn",
        "\"日?@saturn\"",
        "\"日???@saturn\"",
    ];
    let identities = ["ü@saturn", "a@saturn", "aü@saturn", "üa@saturn", "日本@saturn", "ab@saturn"];
    let dir = lab.path("differential");
    fs::create_dir_all(&dir).unwrap();
    let mut disagreements = Vec::new();
    let mut allowed = 0;
    for p in principals {
        let line = format!("{p} {}", key.public);
        for id in identities {
            let ours = homelab_verdict(&line, id, &sig);
            let theirs = ssh_verdict(&dir, &line, id, &sig, "UTC");
            allowed += usize::from(theirs);
            if ours != theirs {
                disagreements
                    .push(format!("-I {id:?} with `{line}`: homelab {ours}, ssh-keygen {theirs}"));
            }
        }
    }
    // The cases are not all one verdict: some allow, some do not.
    assert!(allowed > 5 && allowed < principals.len() * identities.len() - 5, "{allowed}");
    assert!(disagreements.is_empty(), "verdicts differ:\n{}", disagreements.join("\n"));
}
