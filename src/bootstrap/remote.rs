//! What bootstrap does on a node, as fixed shell scripts run through `NodeExec`. As in
//! `apply::remote`, every value (paths under the runtime root, tags, hashes, library paths)
//! reaches a script as a positional argument, never inside its text, and the argument vector is
//! quoted by `transport::quote` on the way. Scripts answer in lines that name no path (folders
//! are reported by their index in `TREE`), so a root with a newline in it cannot confuse them.

use std::time::Duration;

use super::{BootstrapError, Change, Folder, Found, Images, Want};
use super::{BINARY_LABEL, LOCAL_TAG, TREE};
use crate::node::Layout;
use crate::transport::{NodeExec, Output};

const SHORT: Duration = Duration::from_secs(30);
const LONG: Duration = Duration::from_secs(300);

/// Who logs in, the architecture, each folder of the tree (`dir <index> <mode> <uid>` or
/// `dir <index> -`) and the SHA-256 of the installed binary.
const PROBE: &str = r#"set -u
bin=$1; shift
echo "me $(id -u) $(id -un)"
echo "arch $(uname -m)"
i=0
for d in "$@"; do
  if [ -d "$d" ]; then echo "dir $i $(stat -c '%a %u' -- "$d")"; else echo "dir $i -"; fi
  i=$((i + 1))
done
if [ -f "$bin" ]; then echo "bin $(sha256sum < "$bin" | cut -c1-64)"; else echo "bin -"; fi
"#;

/// Docker Engine and Compose v2: `nodocker`, or `engine <version>` (else `down`, the reason on
/// stderr), then `compose <version>` (else `compose -`, the reason on stderr).
const DOCKER: &str = r#"set -u
if ! command -v docker >/dev/null 2>&1; then echo nodocker; exit 0; fi
if v=$(docker version --format '{{.Server.Version}}' 2>&1); then
  echo "engine $v"
else
  echo down; printf '%s\n' "$v" | tail -n 5 >&2; exit 0
fi
if c=$(docker compose version --short 2>&1); then
  echo "compose $c"
else
  echo "compose -"; printf '%s\n' "$c" | tail -n 3 >&2
fi
"#;

/// The agents' image tags: `<id> <label>` of `$1` (or `-`), then the id of `$2` (or `-`).
/// `$3` is the format that prints the id and the binary's label.
const IMAGES: &str = r#"set -u
tag=$1; local=$2; fmt=$3
if out=$(docker image inspect --format "$fmt" "$tag" 2>/dev/null); then echo "$out"; else echo -; fi
if out=$(docker image inspect --format '{{.Id}}' "$local" 2>/dev/null); then echo "$out"; else echo -; fi
"#;

/// Creates or corrects folders, given as `path mode` pairs (`-`: keep the mode), owned by uid
/// `$1`. Only the folders themselves: never what is inside them. A root the login user may
/// not create (`/opt` belongs to root) is created with `sudo -n` when that is allowed.
const TREE_SCRIPT: &str = r#"set -eu
uid=$1; shift
while [ $# -gt 0 ]; do
  d=$1; m=$2; shift 2
  if [ ! -d "$d" ]; then
    mkdir -p -m "$m" -- "$d" 2>/dev/null || sudo -n install -d -o "$uid" -m "$m" -- "$d" || {
      echo "cannot create $d: as root, run: install -d -o $uid -m $m <that folder>" >&2; exit 7; }
  fi
  if [ "$(stat -c %u -- "$d")" != "$uid" ]; then
    chown "$uid" -- "$d" 2>/dev/null || sudo -n chown "$uid" -- "$d" || {
      echo "cannot give $d to uid $uid: as root, run: chown $uid <that folder>" >&2; exit 7; }
  fi
  if [ "$m" != - ]; then chmod "$m" -- "$d"; fi
done
"#;

/// Writes stdin to `$1` through a temporary file, checked against its SHA-256 (`$2`) and run
/// (`--version`, which must say `homelab`) before the atomic rename: a cut upload, or a file
/// that is not homelab or cannot run on this node, never replaces a working binary. Prints
/// what `--version` said.
const INSTALL_BINARY: &str = r#"set -eu
bin=$1; want=$2
tmp="$bin.upload-$$"
trap 'rm -f -- "$tmp"' EXIT
cat > "$tmp"
got=$(sha256sum < "$tmp" | cut -c1-64)
if [ "$got" != "$want" ]; then
  echo "the upload was cut short or changed on the way (sha256 $got, expected $want)" >&2; exit 6
fi
chmod 0755 -- "$tmp"
if ! v=$("$tmp" --version 2>&1) || [ "${v#homelab }" = "$v" ]; then
  echo "the uploaded binary does not run as homelab on this node (\`--version\`: $v); the installed one was kept" >&2
  exit 8
fi
sync -- "$tmp"
mv -f -- "$tmp" "$bin"
sync -- "$(dirname -- "$bin")"
printf '%s\n' "$v"
"#;

/// Lays out a root filesystem (the binary at `/bin/homelab`, the shared libraries it needs at
/// their own paths, an empty `/tmp`), packs it and `docker import`s it: a `FROM scratch` image
/// with no registry and no network involved. Then tags it `$3` too.
const BUILD_IMAGE: &str = r#"set -eu
bin=$1; tag=$2; local=$3; label=$4; base=$5; shift 5
work=$(mktemp -d "$base/.agent-image.XXXXXX")
trap 'rm -rf -- "$work"' EXIT
r="$work/rootfs"
mkdir -p -- "$r/bin" "$r/tmp"
chmod 1777 -- "$r/tmp"
cp -- "$bin" "$r/bin/homelab"
for lib in "$@"; do
  mkdir -p -- "$r$(dirname -- "$lib")"
  cp -L -- "$lib" "$r$lib"
done
tar --numeric-owner --owner=0 --group=0 -C "$r" -cf "$work/rootfs.tar" .
docker import --change 'ENTRYPOINT ["/bin/homelab"]' --change "LABEL $label" \
  "$work/rootfs.tar" "$tag" >/dev/null
docker tag "$tag" "$local"
"#;

fn exec_err(node: &str) -> impl Fn(crate::transport::ExecError) -> BootstrapError + '_ {
    move |source| BootstrapError::Exec { node: node.to_owned(), source }
}

fn sh(
    exec: &dyn NodeExec,
    node: &str,
    script: &str,
    args: &[&str],
    stdin: &[u8],
    timeout: Duration,
) -> Result<Output, BootstrapError> {
    let host = format!("DOCKER_HOST={}", exec.docker_host());
    let mut argv: Vec<&str> = vec!["env", host.as_str(), "sh", "-c", script, "homelab"];
    argv.extend(args);
    exec.run(&argv, stdin, timeout).map_err(exec_err(node))
}

fn ok(out: Output, node: &str, step: &'static str) -> Result<String, BootstrapError> {
    if out.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(BootstrapError::Step {
            node: node.to_owned(),
            step,
            status: out.status,
            stderr: out.stderr_text(),
        })
    }
}

fn answer(node: &str, step: &'static str, text: &str) -> BootstrapError {
    BootstrapError::Answer { node: node.to_owned(), step, answer: text.trim().to_owned() }
}

/// The folders of `TREE` under `root`, in order.
fn folders(root: &str) -> Vec<String> {
    let layout = Layout::new(root);
    TREE.iter().map(|(rel, _)| layout.folder(rel)).collect()
}

/// Reads what the node has (nothing is written): who logs in, its architecture (an error when
/// `want`'s binary cannot run there), the tree and the binary, then Docker Engine and Compose
/// (an error when either is missing: nothing else can be done without them), and the image.
/// A `--binary` already installed (same hash) is asked its version, which completes `want`.
pub fn inspect(exec: &dyn NodeExec, node: &str, want: &mut Want) -> Result<Found, BootstrapError> {
    let mut args = vec![Layout::new(&want.root).binary()];
    args.extend(folders(&want.root));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let step = "reading the runtime tree";
    let text = ok(sh(exec, node, PROBE, &args, b"", SHORT)?, node, step)?;
    let (mut me, mut arch, mut binary) = (None, None, None);
    let mut folders = vec![None; TREE.len()];
    for line in text.lines() {
        let bad = || answer(node, step, line);
        match line.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["me", uid, user] => me = Some((uid.parse::<u32>().map_err(|_| bad())?, *user)),
            ["arch", a] => arch = Some((*a).to_owned()),
            ["dir", _, "-"] => {}
            ["dir", i, mode, owner] => {
                let i: usize = i.parse().map_err(|_| bad())?;
                let mode = u32::from_str_radix(mode, 8).map_err(|_| bad())?;
                let uid = owner.parse().map_err(|_| bad())?;
                if let Some(slot) = folders.get_mut(i) {
                    *slot = Some(Folder { mode, uid });
                }
            }
            ["bin", "-"] => {}
            ["bin", sha] if sha.len() == 64 => binary = Some((*sha).to_owned()),
            _ => return Err(bad()),
        }
    }
    let (Some((uid, user)), Some(arch)) = (me, arch) else {
        return Err(answer(node, step, &text));
    };
    // First: a binary that cannot run on the node is refused whatever else the node has.
    want.fits(node, &arch)?;
    let user = user.to_owned();
    let (engine, compose) = docker(exec, node, &user)?;
    if want.version.is_none() && binary.as_deref() == Some(want.sha256.as_str()) {
        let printed = version(exec, node, &want.root)?;
        want.version = Some(homelab_version(node, &printed)?);
    }
    let images = match want.tag() {
        Some(tag) => images(exec, node, &tag)?,
        // Not installed yet: there can be no image of it.
        None => Images::default(),
    };
    Ok(Found { uid, user, arch, engine, compose, folders, binary, images })
}

/// Docker Engine's and Compose's versions, or why there are none.
fn docker(exec: &dyn NodeExec, node: &str, user: &str) -> Result<(String, String), BootstrapError> {
    let out = sh(exec, node, DOCKER, &[], b"", SHORT)?;
    let stderr = out.stderr_text();
    let text = ok(out, node, "checking Docker")?;
    let mut engine = None;
    let mut compose = None;
    for line in text.lines() {
        match line.split_once(' ') {
            None if line == "nodocker" => {
                return Err(BootstrapError::NoDocker {
                    node: node.to_owned(),
                    user: user.to_owned(),
                })
            }
            None if line == "down" => {
                return Err(BootstrapError::EngineDown {
                    node: node.to_owned(),
                    host: exec.docker_host(),
                    user: user.to_owned(),
                    stderr,
                })
            }
            Some(("engine", v)) => engine = Some(v.trim().to_owned()),
            Some(("compose", v)) => compose = Some(v.trim().to_owned()),
            _ => {}
        }
    }
    let engine = engine.ok_or_else(|| answer(node, "checking Docker", &text))?;
    let compose = compose.unwrap_or_else(|| "-".to_owned());
    let major =
        compose.trim_start_matches('v').split('.').next().and_then(|m| m.parse::<u32>().ok());
    if major.is_none_or(|m| m < 2) {
        let found = if compose == "-" { stderr } else { compose };
        return Err(BootstrapError::NoCompose { node: node.to_owned(), found });
    }
    Ok((engine, compose.trim_start_matches('v').to_owned()))
}

fn images(exec: &dyn NodeExec, node: &str, tag: &str) -> Result<Images, BootstrapError> {
    let fmt = format!("{{{{.Id}}}} {{{{index .Config.Labels \"{BINARY_LABEL}\"}}}}");
    let text = ok(
        sh(exec, node, IMAGES, &[tag, LOCAL_TAG, &fmt], b"", SHORT)?,
        node,
        "looking for the agents' image",
    )?;
    let mut lines = text.lines();
    let versioned = match lines.next().map(str::trim) {
        Some("-") | None => None,
        Some(l) => {
            let (id, label) = l.split_once(' ').unwrap_or((l, ""));
            Some((id.to_owned(), label.trim().to_owned()))
        }
    };
    let local = match lines.next().map(str::trim) {
        Some("-") | None => None,
        Some(id) => Some(id.to_owned()),
    };
    Ok(Images { versioned, local })
}

/// Carries out `changes` (as [`super::changes`] computed them from `found`), in order, calling
/// `done` after each. `binary` is the binary to install (its hash is `want.sha256`); its
/// version, as it prints it on the node, completes `want`.
pub fn run(
    exec: &dyn NodeExec,
    node: &str,
    want: &mut Want,
    found: &Found,
    changes: &[Change],
    binary: &[u8],
    done: &mut dyn FnMut(&Change),
) -> Result<(), BootstrapError> {
    let folder_changes: Vec<&Change> =
        changes.iter().filter(|c| matches!(c, Change::Folder { .. })).collect();
    if !folder_changes.is_empty() {
        let uid = found.uid.to_string();
        let mut args: Vec<String> = vec![uid];
        for c in &folder_changes {
            let Change::Folder { rel, .. } = c else { continue };
            args.push(Layout::new(&want.root).folder(rel));
            args.push(c.folder_mode().map(|m| format!("{m:04o}")).unwrap_or_else(|| "-".into()));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(sh(exec, node, TREE_SCRIPT, &args, b"", SHORT)?, node, "creating the runtime tree")?;
        for c in folder_changes {
            done(c);
        }
    }
    for c in changes {
        match c {
            Change::Folder { .. } => {}
            Change::Binary { .. } => {
                let version = install_binary(exec, node, want, binary)?;
                want.version = Some(version);
                done(c);
            }
            Change::Image { .. } => {
                // The tag as the installed binary's version makes it (a `--binary`'s is known
                // only now).
                let tag = want.tag().ok_or_else(|| {
                    answer(node, "building the agents' image", "the binary's version is unknown")
                })?;
                build_image(exec, node, want, &tag)?;
                done(&Change::Image { tag: Some(tag) });
            }
            Change::Retag { tag } => {
                ok(
                    sh(exec, node, "docker tag \"$1\" \"$2\"", &[tag, LOCAL_TAG], b"", SHORT)?,
                    node,
                    "tagging the agents' image",
                )?;
                done(c);
            }
        }
    }
    Ok(())
}

/// Installs `binary` and returns its version, as it printed it on the node before the rename.
fn install_binary(
    exec: &dyn NodeExec,
    node: &str,
    want: &Want,
    binary: &[u8],
) -> Result<String, BootstrapError> {
    // A slow link (LTE) gets time for the upload: 100 kB/s at least.
    let timeout = Duration::from_secs(60 + binary.len() as u64 / 100_000);
    let path = Layout::new(&want.root).binary();
    let out = sh(exec, node, INSTALL_BINARY, &[&path, &want.sha256], binary, timeout)?;
    let printed = ok(out, node, "installing the binary")?;
    homelab_version(node, &printed)
}

/// `0.1.0` from `homelab 0.1.0`, as `homelab --version` prints it.
fn homelab_version(node: &str, printed: &str) -> Result<String, BootstrapError> {
    let step = "asking the binary its version";
    match printed.trim().strip_prefix("homelab ") {
        Some(v) if !v.trim().is_empty() => Ok(v.trim().to_owned()),
        _ => Err(answer(node, step, printed)),
    }
}

/// What `<root>/bin/homelab --version` prints on the node (`homelab 0.1.0`): the installed
/// binary runs there (a node whose C library is too old says so here).
pub fn version(exec: &dyn NodeExec, node: &str, root: &str) -> Result<String, BootstrapError> {
    let path = Layout::new(root).binary();
    let out = exec.run(&[&path, "--version"], b"", SHORT).map_err(exec_err(node))?;
    Ok(ok(out, node, "running the installed binary")?.trim().to_owned())
}

/// The shared libraries `ldd` says the binary needs on the node (the dynamic loader included).
/// Run on the node, on the installed binary, so the libraries are the node's for the node's
/// architecture, never the controller's; only for a binary with a dynamic loader.
pub fn libraries(
    exec: &dyn NodeExec,
    node: &str,
    bin: &str,
) -> Result<Vec<String>, BootstrapError> {
    let out = exec.run(&["ldd", bin], b"", SHORT).map_err(exec_err(node))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.success() {
        // "not a dynamic executable": nothing to add.
        if out.stderr_text().contains("not a dynamic executable") || text.contains("statically") {
            return Ok(Vec::new());
        }
        return Err(BootstrapError::Step {
            node: node.to_owned(),
            step: "listing the binary's libraries (`ldd`)",
            status: out.status,
            stderr: out.stderr_text(),
        });
    }
    parse_ldd(&text).map_err(|line| BootstrapError::Answer {
        node: node.to_owned(),
        step: "`ldd` of the installed binary",
        answer: line,
    })
}

/// The absolute paths in `ldd` output; `Err(line)` for a library it could not find.
pub fn parse_ldd(text: &str) -> Result<Vec<String>, String> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains("not found") {
            return Err(line.to_owned());
        }
        let path = match line.split_once("=>") {
            Some((_, right)) => right.trim(),
            None => line,
        };
        let path = path.split(" (").next().unwrap_or_default().trim();
        if path.starts_with('/') && !libs.iter().any(|l| l == path) {
            libs.push(path.to_owned());
        }
    }
    Ok(libs)
}

fn build_image(
    exec: &dyn NodeExec,
    node: &str,
    want: &Want,
    tag: &str,
) -> Result<(), BootstrapError> {
    let bin = Layout::new(&want.root).binary();
    // A static binary (no PT_INTERP, as its ELF header said) needs no library: `ldd` is not
    // asked. Otherwise the node's `ldd`, plus the loader the header names (a musl loader is
    // not one glibc's `ldd` knows).
    let libs = match &want.interpreter {
        None => Vec::new(),
        Some(loader) => {
            let mut libs = libraries(exec, node, &bin)?;
            if !libs.contains(loader) {
                libs.push(loader.clone());
            }
            libs
        }
    };
    let label = format!("{BINARY_LABEL}={}", want.sha256);
    let base = Layout::new(&want.root).folder("state");
    let mut args: Vec<&str> = vec![&bin, tag, LOCAL_TAG, &label, &base];
    args.extend(libs.iter().map(String::as_str));
    ok(sh(exec, node, BUILD_IMAGE, &args, b"", LONG)?, node, "building the agents' image")?;
    // The image is proven by running it: the binary and its libraries are all there.
    let out = sh(exec, node, "docker run --rm --network none \"$1\" --version", &[tag], b"", LONG)?;
    let printed = ok(out, node, "running the agents' image")?;
    let expected = format!("homelab {}", want.version.as_deref().unwrap_or_default());
    if printed.trim() != expected {
        return Err(answer(node, "running the agents' image", &printed));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_gives_the_loader_and_every_library_once() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
            \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
            \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n";
        assert_eq!(
            parse_ldd(text).unwrap(),
            vec![
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
        assert_eq!(
            parse_ldd("\tlibssl.so.3 => not found\n"),
            Err("libssl.so.3 => not found".to_owned())
        );
    }

    /// The install script run by a real `sh` on this machine: a file that says it is homelab
    /// is renamed into place and its version printed; one that is not (or does not run) is
    /// refused and the installed binary kept.
    #[test]
    fn an_upload_that_is_not_homelab_never_replaces_the_installed_binary() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("homelab");
        let bin = bin.to_str().unwrap();
        let install = |bytes: &[u8]| {
            let sha = crate::digest::sha256_hex(bytes);
            let mut child = std::process::Command::new("sh")
                .args(["-c", INSTALL_BINARY, "homelab", bin, &sha])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child.stdin.take().unwrap().write_all(bytes).unwrap();
            child.wait_with_output().unwrap()
        };
        let good = b"#!/bin/sh\necho homelab 9.9.9\n";
        let out = install(good);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(homelab_version("n", &String::from_utf8_lossy(&out.stdout)).unwrap(), "9.9.9");
        assert_eq!(std::fs::read(bin).unwrap(), good);
        for bad in [&b"#!/bin/sh\necho 'ls (GNU coreutils) 9.4'\n"[..], b"#!/bin/sh\nexit 3\n"] {
            let out = install(bad);
            assert_eq!(out.status.code(), Some(8));
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("does not run as homelab on this node"), "{err}");
            assert_eq!(std::fs::read(bin).unwrap(), good, "the installed binary was replaced");
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "an upload was left");
    }

    /// The probe run by a real `sh` on this machine: folders by index, modes in octal, a
    /// root with a newline and quotes in its name read as data.
    #[test]
    fn the_probe_reads_folders_by_index_whatever_their_names() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("a 'root'\nwith $(x)");
        std::fs::create_dir_all(root.join("config")).unwrap();
        std::fs::set_permissions(root.join("config"), std::fs::Permissions::from_mode(0o750))
            .unwrap();
        let root = root.to_str().unwrap();
        let layout = Layout::new(root);
        let (c, b) = (layout.folder("config"), layout.binary());
        let args = ["sh", "-c", PROBE, "homelab", b.as_str(), root, c.as_str(), "/nonexistent"];
        let out = std::process::Command::new(args[0]).args(&args[1..]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("me "), "{text}");
        assert!(lines[2].starts_with("dir 0 "), "{text}");
        assert!(lines[3].starts_with("dir 1 750 "), "{text}");
        assert_eq!(lines[4], "dir 2 -");
        assert_eq!(lines[5], "bin -");
    }
}
