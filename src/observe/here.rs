//! The refresh's answer written by this program, on the node: what [`super::REFRESH_SCRIPT`]
//! prints, byte for byte, read with the file system's calls instead of a shell and a handful of
//! short processes per file (`wc`, `stat`, `cat`, `sha256sum`). The node's engine answers a
//! `refresh` request with it, and the local transport reads its roots with it in process; the
//! script stays for a node that has no homelab yet (read over shell steps).
//!
//! The two are held to each other by a differential test over a tree with every kind of entry
//! the script tells apart (below).

use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::transport::{ExecError, Output};

/// The largest file or journal whose content the answer carries; larger ones are named by
/// their hash (files) or left out (journals), as the script does.
const INLINE: u64 = 1 << 20;

/// The refresh answer for the runtime root `root`, as the script's run would give it: exit 0
/// and the answer, or exit 3 and why (the root is not a folder, or an entry cannot be read).
/// Read as the script is run, with no total limit but a pause: when the answer stops growing
/// for `idle` (a hung disk, a FIFO where a record should be) it is given up as
/// [`ExecError::Stalled`], carrying what it had said, so the plan says how far it got. The read
/// that hangs stays in its own thread, which ends with the process.
pub fn answer(root: &Path, idle: Duration) -> Result<Output, ExecError> {
    let out = Out::default();
    let (done, status) = (Arc::new(Mutex::new(None)), out.clone());
    let (root_owned, finished) = (root.to_path_buf(), done.clone());
    let start = Instant::now();
    std::thread::Builder::new()
        .name("refresh".to_owned())
        .spawn(move || {
            let result = write(&root_owned, &status);
            *finished.lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
        })
        .map_err(|source| ExecError::Spawn { program: "refresh".to_owned(), source })?;
    loop {
        if let Some(result) = done.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let stdout = out.take();
            return Ok(match result {
                Ok(()) => Output { status: Some(0), stdout, stderr: Vec::new() },
                Err(why) => Output { status: Some(3), stdout, stderr: why.into_bytes() },
            });
        }
        if out.since() >= idle {
            let what = format!("reading {}", root.display());
            return Err(ExecError::Stalled {
                what,
                idle,
                after: start.elapsed(),
                stdout: out.take(),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The answer as it grows, and when it last grew.
#[derive(Clone)]
struct Out(Arc<Mutex<(Vec<u8>, Instant)>>);

impl Default for Out {
    fn default() -> Out {
        Out(Arc::new(Mutex::new((Vec::new(), Instant::now()))))
    }
}

impl Out {
    fn extend_from_slice(&self, bytes: &[u8]) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        g.0.extend_from_slice(bytes);
        g.1 = Instant::now();
    }

    fn push(&self, byte: u8) {
        self.extend_from_slice(&[byte]);
    }

    fn since(&self) -> Duration {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).1.elapsed()
    }

    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()).0)
    }
}

fn write(root: &Path, out: &Out) -> Result<(), String> {
    out.extend_from_slice(b"homelab-refresh 1\n");
    if fs::symlink_metadata(root).is_ok() && !root.is_dir() {
        return Err(format!("runtime root {} is not a folder", root.display()));
    }
    let state = root.join("state");
    let services: Vec<PathBuf> =
        listed(&state.join("services")).into_iter().filter(|d| d.is_dir()).collect();
    out.extend_from_slice(format!("holds {}\n", services.len()).as_bytes());
    for name in [crate::model::TRUST_SIGNERS, crate::model::TRUST_POLICY] {
        let f = root.join("trust").join(name);
        if f.is_file() {
            let digest = hash_file(&f).map_err(|e| cannot("read", &f, &e))?;
            out.extend_from_slice(format!("pinned {name} {digest}\n").as_bytes());
        }
    }
    for (folder, word) in [("rejected", "rejected "), ("consumed", "consumed ")] {
        for f in listed(&state.join(folder)) {
            let name = f.file_name().unwrap_or_default().as_bytes();
            let Some(stem) = name.strip_suffix(b".json") else { continue };
            if f.exists() {
                line(out, &[word.as_bytes(), stem]);
            }
        }
    }
    for dir in listed(&state.join("deploy")) {
        let j = dir.join("journal.json");
        if !j.is_file() {
            continue;
        }
        let bytes = fs::read(&j).map_err(|e| cannot("read", &j, &e))?;
        if bytes.len() as u64 <= INLINE {
            let plan = dir.file_name().unwrap_or_default().as_bytes();
            line(out, &[format!("journal {} ", bytes.len()).as_bytes(), plan]);
            out.extend_from_slice(&bytes);
            out.push(b'\n');
        }
    }
    let lock = state.join("lock");
    if lock.is_dir() {
        // The script's `tr '\n' ' '` of the holder, nothing where it cannot be read.
        let holder = fs::read(lock.join("holder.json")).unwrap_or_default();
        let holder: Vec<u8> = holder.iter().map(|b| if *b == b'\n' { b' ' } else { *b }).collect();
        line(out, &[b"lock ", &holder]);
    }
    for d in services {
        let name = d.file_name().unwrap_or_default().as_bytes();
        line(out, &[b"service ", name]);
        if let Ok(target) = fs::read_link(&d) {
            line(out, &[b"release ", target.as_os_str().as_bytes()]);
        }
        let mut entries = Vec::new();
        walk(&d, Path::new(""), &mut entries).map_err(|e| cannot("list", &d, &e))?;
        entries.sort_by(|a, b| a.as_os_str().as_bytes().cmp(b.as_os_str().as_bytes()));
        for rel in entries {
            let path = d.join(&rel);
            let n = rel.as_os_str().as_bytes();
            let meta = fs::symlink_metadata(&path).map_err(|e| cannot("read", &path, &e))?;
            if meta.file_type().is_symlink() {
                // `readlink | sha256sum`: the target and readlink's newline.
                let target = fs::read_link(&path).map_err(|e| cannot("read", &path, &e))?;
                let mut h = Sha256::new();
                h.update(target.as_os_str().as_bytes());
                h.update(b"\n");
                let digest = crate::digest::hex(&h.finalize());
                line(out, &[format!("symlink {digest} ").as_bytes(), n]);
                continue;
            }
            let mode = meta.permissions().mode() & 0o7777;
            if meta.size() <= INLINE {
                let bytes = fs::read(&path).map_err(|e| cannot("read", &path, &e))?;
                line(out, &[format!("file {} {mode:o} ", bytes.len()).as_bytes(), n]);
                out.extend_from_slice(&bytes);
                out.push(b'\n');
            } else {
                let digest = hash_file(&path).map_err(|e| cannot("read", &path, &e))?;
                line(out, &[format!("big {digest} ").as_bytes(), n]);
            }
        }
    }
    out.extend_from_slice(b"end\n");
    Ok(())
}

/// The entries of `dir` a shell's `dir/*` gives: every name not beginning with a dot, in byte
/// order (what `sh` sorts by in the C locale); none when `dir` cannot be listed.
fn listed(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    let mut names: Vec<_> = entries
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| !n.as_bytes().starts_with(b"."))
        .collect();
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    names.into_iter().map(|n| dir.join(n)).collect()
}

/// Every file and symlink below `dir` (`find dir/ -mindepth 1 ( -type f -o -type l )`): by its
/// path in `dir`, symlinks never followed, names holding a newline left out (they cannot be
/// framed). Folders are walked, not listed; other kinds (sockets, fifos) are not state.
fn walk(dir: &Path, rel: &Path, found: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(dir.join(rel))? {
        let entry = entry?;
        let name = entry.file_name();
        if name.as_bytes().contains(&b'\n') {
            continue;
        }
        let path = rel.join(&name);
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(dir, &path, found)?;
        } else if kind.is_file() || kind.is_symlink() {
            found.push(path);
        }
    }
    Ok(())
}

fn line(out: &Out, parts: &[&[u8]]) {
    let mut l = parts.concat();
    l.push(b'\n');
    out.extend_from_slice(&l);
}

fn hash_file(path: &Path) -> io::Result<String> {
    let mut f = fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match f.read(&mut buf)? {
            0 => break,
            n => h.update(&buf[..n]),
        }
    }
    Ok(crate::digest::hex(&h.finalize()))
}

fn cannot(what: &str, path: &Path, e: &io::Error) -> String {
    format!("cannot {what} {}: {e}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A runtime root with every kind of entry the script tells apart: a release reached by a
    /// symlink and a service that is a folder, names with spaces, quotes, globs, `$(...)`, a
    /// leading dash, non-UTF-8 bytes and a newline (left out by both), a file over 1 MiB, a
    /// binary file, modes with special bits, symlinks to files, to folders and dangling,
    /// dotfiles, journals (one over 1 MiB), consumed and rejected records, a lock and trust roots.
    fn tree(root: &Path) {
        let w = |rel: &str, bytes: &[u8]| {
            let p = root.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, bytes).unwrap();
        };
        w("trust/allowed_signers", b"op@x ssh-ed25519 AAAA\n");
        w("trust/policy.json", b"{}");
        w("state/consumed/p1.json", b"{}");
        w("state/consumed/p0.json", b"{}");
        w("state/consumed/.hidden.json", b"{}");
        w("state/consumed/notes.txt", b"x");
        w("state/rejected/p2.json", b"{}");
        w("state/deploy/p1/journal.json", b"{\"plan\":\"p1\"}");
        w("state/deploy/big/journal.json", &vec![b'x'; (INLINE + 1) as usize]);
        fs::create_dir_all(root.join("state/deploy/empty")).unwrap();
        w("state/lock/holder.json", b"{\n  \"plan\": \"p1\"\n}\n");
        let rel = "state/releases/web/p1";
        w(&format!("{rel}/docker-compose.yml"), b"services: {}\n");
        w(&format!("{rel}/manifest.json"), b"{\"files\":[]}");
        w(&format!("{rel}/conf/a b.conf"), b"a = 'b'\n");
        w(&format!("{rel}/conf/$(touch pwned);`x`*?.conf"), b"");
        w(&format!("{rel}/-dash"), b"-\n");
        w(&format!("{rel}/.env.example"), b"A=1\n");
        w(&format!("{rel}/logo.bin"), &[0xff, 0xfe, 0x00, b'\n', 0x80]);
        w(&format!("{rel}/big.dat"), &vec![7u8; (INLINE + 10) as usize]);
        w(&format!("{rel}/conf-x"), b"sorts after conf/ in bytes\n");
        w(&format!("{rel}/new\nline"), b"left out\n");
        let raw = std::ffi::OsStr::from_bytes(b"caf\xe9.txt");
        fs::write(root.join(rel).join(raw), b"latin-1 name\n").unwrap();
        fs::set_permissions(root.join(rel).join("-dash"), fs::Permissions::from_mode(0o4755))
            .unwrap();
        fs::set_permissions(root.join(rel).join("logo.bin"), fs::Permissions::from_mode(0o600))
            .unwrap();
        symlink("docker-compose.yml", root.join(rel).join("compose.yaml")).unwrap();
        symlink("conf", root.join(rel).join("conf-link")).unwrap();
        symlink("/nowhere/at all", root.join(rel).join("dangling")).unwrap();
        fs::create_dir_all(root.join("state/services")).unwrap();
        symlink(root.join(rel), root.join("state/services/web")).unwrap();
        w("state/services/db/docker-compose.yml", b"services: {}\n");
        symlink("/nowhere", root.join("state/services/gone")).unwrap();
        w("state/services/stray-file", b"");
    }

    fn ours(root: &Path) -> Output {
        answer(root, Duration::from_secs(30)).unwrap()
    }

    /// A record that never ends (a FIFO where the lock's holder should be, as a hung disk
    /// would) stops the answer: given up after the pause, with what it said until then.
    #[test]
    fn an_answer_that_stops_growing_is_given_up_with_what_it_said() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("state/services/web")).unwrap();
        fs::create_dir_all(dir.path().join("state/lock")).unwrap();
        let fifo = dir.path().join("state/lock/holder.json");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let idle = Duration::from_millis(300);
        match answer(dir.path(), idle) {
            Err(ExecError::Stalled { idle: i, stdout, .. }) => {
                assert_eq!(i, idle);
                assert_eq!(String::from_utf8_lossy(&stdout), "homelab-refresh 1\nholds 1\n");
            }
            other => panic!("expected a stall, got {other:?}"),
        }
        // The next read of the same root, the FIFO gone, answers whole.
        fs::remove_file(&fifo).unwrap();
        fs::write(&fifo, b"{}").unwrap();
        assert!(String::from_utf8_lossy(&ours(dir.path()).stdout)
            .ends_with("lock {}\nservice web\nend\n"));
    }

    fn script(root: &Path) -> std::process::Output {
        std::process::Command::new("sh")
            .args(["-c", super::super::REFRESH_SCRIPT, "sh"])
            .arg(root)
            .output()
            .unwrap()
    }

    #[test]
    fn the_answer_is_the_scripts_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root $(x) 'q'");
        tree(&root);
        let theirs = script(&root);
        assert!(theirs.status.success(), "{}", String::from_utf8_lossy(&theirs.stderr));
        let ours = ours(&root);
        assert_eq!(ours.status, Some(0), "{}", String::from_utf8_lossy(&ours.stderr));
        assert_eq!(String::from_utf8_lossy(&ours.stdout), String::from_utf8_lossy(&theirs.stdout));
        assert_eq!(ours.stdout, theirs.stdout);
        // And what it says is the tree: the release, its binary file, its big file by hash.
        let text = String::from_utf8_lossy(&ours.stdout);
        assert!(text.contains("holds 2\n"), "{text}");
        assert!(text.contains("file 5 600 logo.bin\n"), "{text}");
        assert!(text.contains("file 2 4755 -dash\n"), "{text}");
        assert!(text.contains("big "), "{text}");
        assert!(!text.contains("left out"), "{text}");
        assert!(!root.join("state/releases/web/p1/conf/pwned").exists());
    }

    #[test]
    fn a_missing_root_and_a_root_that_is_a_file_answer_as_the_script_does() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        assert_eq!(ours(&missing).stdout, script(&missing).stdout);
        assert_eq!(ours(&missing).status, Some(0));
        let file = dir.path().join("file");
        fs::write(&file, b"x").unwrap();
        let (ours, theirs) = (ours(&file), script(&file));
        assert_eq!(ours.status, theirs.status.code());
        assert_eq!(ours.stdout, theirs.stdout);
        assert_eq!(
            String::from_utf8_lossy(&ours.stderr).trim(),
            String::from_utf8_lossy(&theirs.stderr).trim()
        );
    }

    #[test]
    fn the_answer_parses_into_the_state_the_tree_holds() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path());
        let state = super::super::parse_refresh(&ours(dir.path()).stdout).unwrap();
        let web = &state.services["web"];
        let logo = &web.files["logo.bin"];
        assert_eq!(logo.sha256, crate::digest::sha256_hex(&[0xff, 0xfe, 0x00, b'\n', 0x80]));
        assert_eq!(logo.mode, "0600");
        // A hand-placed file whose name is not UTF-8 is read, under its name made readable,
        // and is drift (a service without a manifest: every file is).
        assert!(web.files.contains_key("caf\u{fffd}.txt"), "{:?}", web.files.keys());
    }
}
