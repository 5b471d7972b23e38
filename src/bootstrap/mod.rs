//! Bootstrap: what a node needs before plan/apply can deploy to it (the seed's
//! `prepare-node.sh` and `chelsty-runtime.sh`): Docker Engine and Compose v2, the runtime tree
//! with its owners and modes, this `homelab` binary at `<root>/bin/homelab`, and the agents'
//! image built from that binary on the node (`FROM scratch`, no registry, no network).
//!
//! The shape follows plan/apply: `remote::inspect` reads what the node has into a [`Found`]
//! (read-only, over a transport), [`changes`] is the pure difference between that and a
//! [`Want`], and `remote::run` carries out exactly those changes. `--check` stops after the
//! difference. First contact with a node (its host key) is `hostkey`'s.
//!
//! Must not: touch what is inside `data/`, `config/` or any other folder of the tree (only the
//! folders themselves: created, tightened, owned), loosen a mode an operator tightened, trust a
//! host key nobody confirmed, or prompt and print (that is `command/bootstrap.rs`'s).

pub mod elf;
pub mod hostkey;
pub mod remote;
pub mod trust;

use std::fmt;

use elf::Arch;

/// The image repository of the agents' image, and the tag services run
/// (`vars.image` of `stability-agent` and `control-plane`).
pub const IMAGE_REPOSITORY: &str = "homelab/agent";
pub const LOCAL_TAG: &str = "homelab/agent:local";
/// The image label holding the SHA-256 of the binary the image was built from.
pub const BINARY_LABEL: &str = "homelab.binary.sha256";

/// The folders bootstrap creates: the runtime tree, with its modes, as `node` spells it.
pub use crate::node::TREE;

/// What bootstrap brings the node to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    /// The node's runtime root.
    pub root: String,
    /// SHA-256 (hex) of the binary to install: this one, or `--binary`'s.
    pub sha256: String,
    /// Its version (`homelab --version` without the name). `None` for a `--binary` the node
    /// has not run yet: built for another architecture, it cannot say so here.
    pub version: Option<String>,
    /// What its ELF header says it is built for.
    pub arch: Arch,
    /// Its dynamic loader (`PT_INTERP`); `None`: static, the image needs no library.
    pub interpreter: Option<String>,
    /// The binary as a message names it: `this homelab binary (PATH)` or `--binary PATH`.
    pub origin: String,
}

impl Want {
    /// `homelab/agent:<version>-<first 12 hex of the binary's SHA-256>`: one tag per build.
    /// `None` while the version is not known.
    pub fn tag(&self) -> Option<String> {
        let version: String = self
            .version
            .as_deref()?
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '_' { c } else { '-' })
            .collect();
        Some(format!("{IMAGE_REPOSITORY}:{version}-{}", &self.sha256[..12.min(self.sha256.len())]))
    }

    /// Refuses a binary that cannot run on a node whose `uname -m` is `uname`: before
    /// anything is written there, naming both architectures and the way to the right binary.
    pub fn fits(&self, node: &str, uname: &str) -> Result<(), BootstrapError> {
        match Arch::from_uname(uname) {
            Some(arch) if arch == self.arch => Ok(()),
            Some(arch) => Err(BootstrapError::Arch {
                node: node.to_owned(),
                node_arch: uname.to_owned(),
                binary: self.origin.clone(),
                binary_arch: self.arch,
                target: arch.rust_target(),
            }),
            None => Err(BootstrapError::UnknownArch {
                node: node.to_owned(),
                node_arch: uname.to_owned(),
            }),
        }
    }
}

/// A folder of the tree as the node has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Folder {
    pub mode: u32,
    pub uid: u32,
}

/// The agents' image as the node's engine has it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Images {
    /// The image id of [`Want::tag`] and its [`BINARY_LABEL`], when the tag exists.
    pub versioned: Option<(String, String)>,
    /// The image id [`LOCAL_TAG`] points at.
    pub local: Option<String>,
}

/// What the node has, as `remote::inspect` read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The login user (who owns the tree).
    pub uid: u32,
    pub user: String,
    pub arch: String,
    pub engine: String,
    pub compose: String,
    /// One per [`TREE`] entry, in order; `None` when missing.
    pub folders: Vec<Option<Folder>>,
    /// SHA-256 of `<root>/bin/homelab`, when it exists.
    pub binary: Option<String>,
    pub images: Images,
}

/// One thing a bootstrap run does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A folder of [`TREE`]: created with `mode`, or its mode and/or owner corrected.
    Folder { rel: &'static str, exists: bool, mode: Option<(u32, u32)>, owner: Option<(u32, u32)> },
    /// `<root>/bin/homelab` installed (replacing a binary with this hash, if any).
    Binary { replaces: Option<String> },
    /// The image built from the installed binary, tagged `tag` and [`LOCAL_TAG`]. `None`: the
    /// version part of the tag is what a `--binary` prints on the node once installed.
    Image { tag: Option<String> },
    /// [`LOCAL_TAG`] pointed at the existing image `tag`.
    Retag { tag: String },
}

impl Change {
    /// The target mode of a folder change (what `chmod` sets), if any.
    pub fn folder_mode(&self) -> Option<u32> {
        match self {
            Change::Folder { exists: false, rel, .. } => Some(want_mode(rel)),
            Change::Folder { mode: Some((_, to)), .. } => Some(*to),
            _ => None,
        }
    }
}

fn want_mode(rel: &str) -> u32 {
    TREE.iter().find(|(r, _)| *r == rel).map(|(_, m)| *m).unwrap_or(0o755)
}

/// The mode an existing folder should have: never more than the tree allows (extra bits are
/// taken away), never less than the owner needs (rwx), and otherwise as the operator left it
/// (setgid and sticky bits included): bootstrap tightens, it never loosens.
pub fn tightened(have: u32, want: u32) -> u32 {
    (have & 0o7000) | (have & want & 0o777) | 0o700
}

/// Everything a run would change on a node that has `found`, in the order it is done: folders
/// (root first), the binary, the image.
pub fn changes(want: &Want, found: &Found) -> Vec<Change> {
    let mut out = Vec::new();
    for (i, (rel, mode)) in TREE.iter().enumerate() {
        match found.folders.get(i).copied().flatten() {
            None => out.push(Change::Folder { rel, exists: false, mode: None, owner: None }),
            Some(f) => {
                let to = tightened(f.mode, *mode);
                let mode = (to != f.mode & 0o7777).then_some((f.mode & 0o7777, to));
                let owner = (f.uid != found.uid).then_some((f.uid, found.uid));
                if mode.is_some() || owner.is_some() {
                    out.push(Change::Folder { rel, exists: true, mode, owner });
                }
            }
        }
    }
    let binary_ok = found.binary.as_deref() == Some(want.sha256.as_str());
    if !binary_ok {
        out.push(Change::Binary { replaces: found.binary.clone() });
    }
    let tag = want.tag();
    match (&found.images.versioned, &tag) {
        (Some((id, label)), Some(tag)) if binary_ok && *label == want.sha256 => {
            if found.images.local.as_ref() != Some(id) {
                out.push(Change::Retag { tag: tag.clone() });
            }
        }
        _ => out.push(Change::Image { tag }),
    }
    out
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Folder { rel, exists: false, .. } => {
                write!(f, "+ create {} ({:04o})", shown(rel), want_mode(rel))
            }
            Change::Folder { rel, mode, owner, .. } => {
                write!(f, "~ {}:", shown(rel))?;
                if let Some((from, to)) = mode {
                    write!(f, " mode {from:04o} -> {to:04o}")?;
                }
                if let Some((from, to)) = owner {
                    write!(f, " owner uid {from} -> {to}")?;
                }
                Ok(())
            }
            Change::Binary { replaces: None } => write!(f, "+ install bin/homelab"),
            Change::Binary { replaces: Some(old) } => {
                write!(f, "~ replace bin/homelab (was sha256 {})", &old[..12.min(old.len())])
            }
            Change::Image { tag: Some(tag) } => {
                write!(f, "+ build image {tag} and tag it {LOCAL_TAG}")
            }
            Change::Image { tag: None } => write!(
                f,
                "+ build image {IMAGE_REPOSITORY}:<the version it prints>-<its sha256> and tag it {LOCAL_TAG}"
            ),
            Change::Retag { tag } => write!(f, "~ tag {LOCAL_TAG} -> {tag}"),
        }
    }
}

fn shown(rel: &str) -> String {
    if rel.is_empty() {
        "<root>/".to_owned()
    } else {
        format!("{rel}/")
    }
}

/// Why a bootstrap could not go on. Nothing after the failing step has run.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("{node}: Docker Engine is not installed (no `docker` command for {user}): install it (Debian: `apt install docker.io`) and let {user} use it (`usermod -aG docker {user}`)")]
    NoDocker { node: String, user: String },
    #[error("{node}: the Docker Engine at {host} does not answer: {stderr}\nstart it (`systemctl enable --now docker`) and check that {user} may use it (`usermod -aG docker {user}`)")]
    EngineDown { node: String, host: String, user: String, stderr: String },
    #[error("{node}: Docker Compose v2 is missing (`docker compose version`: {found}): install the Compose v2 plugin (Debian 13: `apt install docker-compose`; Docker's packages: `apt install docker-compose-plugin`)")]
    NoCompose { node: String, found: String },
    #[error("{node} runs on {node_arch}, but {binary} is built for {binary_arch}: refused, nothing was changed on {node}. Build homelab for {node_arch} (`--target {target}`) and pass it with `--binary PATH` (docs/bootstrap.md, \"Other architectures\")")]
    Arch {
        node: String,
        node_arch: String,
        binary: String,
        binary_arch: Arch,
        target: &'static str,
    },
    #[error("{node} runs on {node_arch} (`uname -m`), which homelab does not install on (x86_64, aarch64, armv7l): refused, nothing was changed on {node}")]
    UnknownArch { node: String, node_arch: String },
    #[error("{path} is not a homelab binary bootstrap can install: {source}")]
    BinaryFormat { path: String, source: elf::ElfError },
    #[error("{node}: {step} failed (exit {}): {stderr}", .status.map(|c| c.to_string()).unwrap_or("signal".into()))]
    Step { node: String, step: &'static str, status: Option<i32>, stderr: String },
    #[error("{node}: unexpected answer from {step}: {answer}")]
    Answer { node: String, step: &'static str, answer: String },
    #[error("cannot reach {node} to bootstrap it: {source}")]
    Connect { node: String, source: crate::transport::ExecError },
    #[error("{node}: {source}")]
    Exec { node: String, source: crate::transport::ExecError },
    #[error("cannot read this homelab binary ({path}): {source}")]
    Binary { path: String, source: std::io::Error },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want() -> Want {
        Want {
            root: "/opt/homelab".into(),
            sha256: "ab".repeat(32),
            version: Some("0.1.0".into()),
            arch: Arch::X86_64,
            interpreter: Some("/lib64/ld-linux-x86-64.so.2".into()),
            origin: "this homelab binary (/usr/local/bin/homelab)".into(),
        }
    }

    fn done(want: &Want) -> Found {
        Found {
            uid: 1000,
            user: "homelab".into(),
            arch: "x86_64".into(),
            engine: "26.1.5".into(),
            compose: "2.40.3".into(),
            folders: TREE.iter().map(|(_, m)| Some(Folder { mode: *m, uid: 1000 })).collect(),
            binary: Some(want.sha256.clone()),
            images: Images {
                versioned: Some(("sha256:1".into(), want.sha256.clone())),
                local: Some("sha256:1".into()),
            },
        }
    }

    #[test]
    fn a_bootstrapped_node_has_nothing_to_do() {
        let w = want();
        assert_eq!(changes(&w, &done(&w)), vec![]);
    }

    #[test]
    fn a_bare_node_gets_every_folder_then_the_binary_then_the_image() {
        let w = want();
        let mut f = done(&w);
        f.folders = vec![None; TREE.len()];
        f.binary = None;
        f.images = Images::default();
        let c = changes(&w, &f);
        assert_eq!(c.len(), TREE.len() + 2);
        assert_eq!(c[0].to_string(), "+ create <root>/ (0755)");
        assert!(c.iter().any(|c| c.to_string() == "+ create config/ (0700)"));
        assert!(c.iter().any(|c| c.to_string() == "+ create logs/ (0750)"));
        assert_eq!(c[TREE.len()], Change::Binary { replaces: None });
        assert_eq!(
            c[TREE.len() + 1],
            Change::Image { tag: Some("homelab/agent:0.1.0-abababababab".into()) }
        );
    }

    #[test]
    fn modes_are_tightened_never_loosened() {
        assert_eq!(tightened(0o755, 0o700), 0o700);
        assert_eq!(tightened(0o777, 0o750), 0o750);
        assert_eq!(tightened(0o700, 0o755), 0o700);
        assert_eq!(tightened(0o500, 0o755), 0o700);
        assert_eq!(tightened(0o2775, 0o755), 0o2755);
        let w = want();
        let mut f = done(&w);
        let config = TREE.iter().position(|(r, _)| *r == "config").unwrap();
        let data = TREE.iter().position(|(r, _)| *r == "data").unwrap();
        f.folders[config] = Some(Folder { mode: 0o755, uid: 0 });
        f.folders[data] = Some(Folder { mode: 0o700, uid: 1000 });
        let c = changes(&w, &f);
        assert_eq!(
            c,
            vec![Change::Folder {
                rel: "config",
                exists: true,
                mode: Some((0o755, 0o700)),
                owner: Some((0, 1000))
            }]
        );
        assert_eq!(c[0].to_string(), "~ config/: mode 0755 -> 0700 owner uid 0 -> 1000");
    }

    #[test]
    fn a_new_binary_rebuilds_the_image_and_a_moved_local_tag_is_pointed_back() {
        let w = want();
        let mut f = done(&w);
        f.binary = Some("cd".repeat(32));
        assert_eq!(
            changes(&w, &f),
            vec![
                Change::Binary { replaces: Some("cd".repeat(32)) },
                Change::Image { tag: w.tag() }
            ]
        );
        let mut f = done(&w);
        f.images.local = Some("sha256:other".into());
        assert_eq!(changes(&w, &f), vec![Change::Retag { tag: w.tag().unwrap() }]);
        let mut f = done(&w);
        f.images.versioned = Some(("sha256:1".into(), "other".into()));
        assert_eq!(changes(&w, &f), vec![Change::Image { tag: w.tag() }]);
    }

    #[test]
    fn tags_keep_to_what_docker_allows() {
        let mut w = want();
        w.version = Some("1.2.0+local build".into());
        assert_eq!(w.tag().unwrap(), "homelab/agent:1.2.0-local-build-abababababab");
    }

    /// A `--binary` the node has not run yet: its version, so its tag, is not known; it is
    /// installed and the image built (the tag follows from what it prints there).
    #[test]
    fn a_binary_of_unknown_version_is_installed_and_its_image_built() {
        let mut w = want();
        w.version = None;
        let mut f = done(&w);
        f.binary = None;
        let c = changes(&w, &f);
        assert_eq!(c, vec![Change::Binary { replaces: None }, Change::Image { tag: None }]);
        assert_eq!(
            c[1].to_string(),
            "+ build image homelab/agent:<the version it prints>-<its sha256> and tag it homelab/agent:local"
        );
    }

    #[test]
    fn a_binary_for_another_architecture_is_refused_naming_both() {
        let mut w = want();
        w.fits("piha", "x86_64").unwrap();
        w.fits("piha", "amd64").unwrap();
        let err = w.fits("piha", "aarch64").unwrap_err();
        assert_eq!(
            err.to_string(),
            "piha runs on aarch64, but this homelab binary (/usr/local/bin/homelab) is built for x86_64: refused, nothing was changed on piha. Build homelab for aarch64 (`--target aarch64-unknown-linux-musl`) and pass it with `--binary PATH` (docs/bootstrap.md, \"Other architectures\")"
        );
        w.arch = Arch::Aarch64;
        w.origin = "--binary target/aarch64-unknown-linux-musl/release/homelab".into();
        w.fits("piha", "aarch64").unwrap();
        w.fits("piha", "arm64").unwrap();
        let err = w.fits("alpha", "x86_64").unwrap_err().to_string();
        assert!(
            err.starts_with("alpha runs on x86_64, but --binary target/aarch64-unknown-linux-musl/release/homelab is built for aarch64: refused"),
            "{err}"
        );
        assert!(err.contains("x86_64-unknown-linux-musl"), "{err}");
        w.arch = Arch::Arm;
        w.fits("pi2", "armv7l").unwrap();
        assert!(w.fits("pi2", "aarch64").is_err());
        let err = w.fits("board", "riscv64").unwrap_err().to_string();
        assert!(
            err.starts_with(
                "board runs on riscv64 (`uname -m`), which homelab does not install on"
            ),
            "{err}"
        );
    }
}
