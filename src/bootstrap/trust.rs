//! The node's trust roots and the restricted deploy key, installed by bootstrap.
//!
//! - `<root>/trust/{allowed_signers, policy.json, node}`: what the node's engine checks every
//!   bundle against (`engine::trust`). Pinned on first bootstrap; pinned roots that differ
//!   from the repository's are replaced only with `--replace-trust` (the owner, with a shell on
//!   the node, says so).
//! - `--deploy-key FILE.pub`: the controller's key in the login user's `authorized_keys` as
//!   `restrict,command="<root>/bin/homelab node serve --root <root>"`: it can run nothing but
//!   the node's side of the protocol, and the key used for bootstrap stays the owner's.

use std::time::Duration;

use super::BootstrapError;
use crate::engine::trust::NODE;
use crate::model::{Homelab, NodeName};
use crate::transport::{quote, NodeExec};

/// The trust files the node should hold, by name.
pub fn wanted(lab: &Homelab, node: &NodeName) -> Vec<(&'static str, Vec<u8>)> {
    // The same bytes every plan carries (`Homelab::trust_roots`): a node bootstrapped from
    // this commit finds nothing to take from its plans.
    let mut files: Vec<(&'static str, Vec<u8>)> =
        lab.trust_roots().into_iter().map(|(n, t)| (n, t.into_bytes())).collect();
    files.push((NODE, format!("{node}\n").into_bytes()));
    files
}

const READ: &str = r#"f=$1
[ -f "$f" ] || { echo absent; exit 0; }
echo present; cat -- "$f"
"#;

const WRITE: &str = r#"set -eu
f=$1; d=$(dirname -- "$f")
mkdir -p -- "$d"; chmod 700 -- "$d"
umask 077
cat > "$f.tmp"
mv -f -- "$f.tmp" "$f"
"#;

/// Which of `files` the node lacks (`missing`) or holds with other bytes (`differ`).
pub fn compare(
    exec: &dyn NodeExec,
    node: &str,
    trust_dir: &str,
    files: &[(&'static str, Vec<u8>)],
) -> Result<(Vec<&'static str>, Vec<&'static str>), BootstrapError> {
    let (mut missing, mut differ) = (Vec::new(), Vec::new());
    for (name, bytes) in files {
        let path = format!("{trust_dir}/{name}");
        let out = exec
            .run(&["sh", "-c", READ, "homelab", &path], b"", Duration::from_secs(30))
            .map_err(|source| BootstrapError::Exec { node: node.to_owned(), source })?;
        let text = out.stdout;
        if text.starts_with(b"absent") {
            missing.push(*name);
        } else if text.strip_prefix(b"present\n") != Some(bytes.as_slice()) {
            differ.push(*name);
        }
    }
    Ok((missing, differ))
}

/// Writes `files` into the trust folder (owner-only, each file replaced atomically).
pub fn pin(
    exec: &dyn NodeExec,
    node: &str,
    trust_dir: &str,
    files: &[(&'static str, Vec<u8>)],
) -> Result<(), BootstrapError> {
    for (name, bytes) in files {
        let path = format!("{trust_dir}/{name}");
        run(exec, node, "pinning the trust roots", WRITE, &[&path], bytes)?;
    }
    Ok(())
}

/// `script` with `args` on the node; its stdout, or the step's failure.
fn run(
    exec: &dyn NodeExec,
    node: &str,
    step: &'static str,
    script: &str,
    args: &[&str],
    stdin: &[u8],
) -> Result<String, BootstrapError> {
    let mut argv = vec!["sh", "-c", script, "homelab"];
    argv.extend_from_slice(args);
    let out = exec
        .run(&argv, stdin, Duration::from_secs(30))
        .map_err(|source| BootstrapError::Exec { node: node.to_owned(), source })?;
    if !out.success() {
        return Err(BootstrapError::Step {
            node: node.to_owned(),
            step,
            status: out.status,
            stderr: out.stderr_text(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `authorized_keys` line of a deploy key: `public` (`TYPE BASE64 [COMMENT]`) restricted
/// to the node's side of the protocol. `None` when `public` is not one public key line.
pub fn deploy_key_line(root: &str, public: &str) -> Option<(String, String)> {
    let mut words = public.split_whitespace();
    let (kind, blob) = (words.next()?, words.next()?);
    let ok_kind = kind.starts_with("ssh-") || kind.starts_with("ecdsa-") || kind.starts_with("sk-");
    let ok_blob = blob.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b));
    if !ok_kind || !ok_blob || public.lines().count() != 1 {
        return None;
    }
    let root = root.trim_end_matches('/');
    let command =
        quote::argv(&[&format!("{root}/bin/homelab"), "node", "serve", "--root", root]).ok()?;
    // Inside `command="…"`, `"` and `\` are escaped for sshd.
    let command = command.replace('\\', "\\\\").replace('"', "\\\"");
    Some((format!("restrict,command=\"{command}\" {kind} {blob} homelab-deploy"), blob.to_owned()))
}

const KEY: &str = r#"set -eu
line=$1; blob=$2; mode=$3; k=$4
case $k in "~/"*) k="$HOME/${k#"~/"}" ;; esac
if [ -f "$k" ] && grep -qxF -- "$line" "$k"; then echo present; exit 0; fi
[ "$mode" = write ] || { echo absent; exit 0; }
d=$(dirname -- "$k")
[ -d "$d" ] || { mkdir -p -- "$d"; chmod 700 -- "$d"; }
touch -- "$k"
umask 077
grep -vF -- " $blob" "$k" > "$k.tmp" || true
printf '%s\n' "$line" >> "$k.tmp"
mv -f -- "$k.tmp" "$k"
echo written
"#;

/// Whether the node's `authorized_keys` file (`~/` is the login user's home) holds `line`
/// already; with `write`, puts it there in place of any other line for the same key.
pub fn deploy_key(
    exec: &dyn NodeExec,
    node: &str,
    file: &str,
    line: &str,
    blob: &str,
    write: bool,
) -> Result<bool, BootstrapError> {
    let mode = if write { "write" } else { "check" };
    let said = run(exec, node, "installing the deploy key", KEY, &[line, blob, mode, file], b"")?;
    Ok(said.trim() != "absent")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deploy_key_is_restricted_to_node_serve_and_odd_roots_are_quoted() {
        let (line, blob) =
            deploy_key_line("/opt/home lab/", "ssh-ed25519 AAAAC3Nz+/= me@ctl\n").unwrap();
        assert_eq!(blob, "AAAAC3Nz+/=");
        assert_eq!(
            line,
            "restrict,command=\"'/opt/home lab/bin/homelab' 'node' 'serve' '--root' '/opt/home lab'\" ssh-ed25519 AAAAC3Nz+/= homelab-deploy"
        );
        assert!(deploy_key_line("/opt/homelab", "not a key").is_none());
        assert!(deploy_key_line("/opt/homelab", "ssh-ed25519 AA\"A").is_none());
        assert!(deploy_key_line("/opt/homelab", "ssh-ed25519 AAAA\nssh-rsa BBBB").is_none());
    }
}
