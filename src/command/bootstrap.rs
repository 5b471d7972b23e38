//! `homelab bootstrap NODE`: first contact (the host key, confirmed on the terminal or by
//! `--host-key`), then what `crate::bootstrap` finds missing on the node, shown and made.
//! This file owns the terminal: the fingerprints shown, the questions asked, the report.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use super::args::TransportKind;
use crate::bootstrap::hostkey::{self, HostKey};
use crate::bootstrap::{
    self, elf, remote, BootstrapError, Change, Want, IMAGE_REPOSITORY, LOCAL_TAG,
};
use crate::error::{Error, Report};
use crate::model::Node;
use crate::transport::Transport;

#[derive(Debug, clap::Args)]
pub struct BootstrapArgs {
    /// The node (id or display name), as `inventory/topology.yaml` has it.
    #[arg(value_name = "NODE")]
    pub node: String,
    /// Only report what a run would change; write nothing. Exit 0 when there is nothing to
    /// do, 2 when there is (as `plan --detailed-exitcode`).
    #[arg(long)]
    pub check: bool,
    /// First contact without a terminal: the node's host key fingerprint, as
    /// `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` prints it on the node's console.
    /// A node presenting another key is refused and nothing is written.
    #[arg(long, value_name = "SHA256:...")]
    pub host_key: Option<String>,
    /// Make the changes without asking (required when stdin is not a terminal). Never trusts
    /// a host key: that takes `--host-key` or a confirmation on the terminal.
    #[arg(long)]
    pub yes: bool,
    /// `ssh` (default), or `local`: bootstrap this machine as NODE (homelab run on the node
    /// itself, e.g. copied there by hand on an offline site).
    #[arg(long, value_enum, default_value_t = TransportKind::Ssh)]
    pub transport: TransportKind,
    /// The known_hosts file host keys are checked against and added to (default:
    /// inventory/known_hosts of the repository).
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
    /// The private key to log in to the node with (default: ssh's own).
    #[arg(long, value_name = "FILE", env = "HOMELAB_SSH_KEY")]
    pub ssh_key: Option<PathBuf>,
    /// The homelab binary to install instead of this one: one built for the node's
    /// architecture (e.g. `target/aarch64-unknown-linux-musl/release/homelab` for an aarch64
    /// node; docs/bootstrap.md, "Other architectures"). A binary that does not match the node
    /// is refused before anything is written there.
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
    /// The controller's deploy key (a `.pub` file): authorized on the node for
    /// `homelab node serve` only (`restrict,command=...`), so that it can apply approved plans
    /// and nothing else. The key you bootstrap with stays unrestricted.
    #[arg(long, value_name = "FILE.pub")]
    pub deploy_key: Option<PathBuf>,
    /// The node's `authorized_keys` file the deploy key goes into, as its sshd's
    /// `AuthorizedKeysFile` says (`~/` is the login user's home).
    #[arg(
        long,
        value_name = "FILE",
        default_value = "~/.ssh/authorized_keys",
        requires = "deploy_key"
    )]
    pub authorized_keys: String,
    /// Replace trust roots pinned on the node (`<root>/trust/`) that differ from the
    /// repository's allowed_signers and policy.
    #[arg(long)]
    pub replace_trust: bool,
}

pub fn run(repo: &Path, args: &BootstrapArgs, out: &mut dyn Write) -> Result<Report, Error> {
    let lab = super::load(repo)?;
    let id = super::resolve_node(&lab, &args.node)?;
    let node = &lab.nodes[&id];
    // The binary to install, read and its ELF header checked here, before the node is
    // contacted: what it is built for decides whether the node can take it.
    let (path, origin, version) = match &args.binary {
        Some(path) => (path.clone(), format!("--binary {}", path.display()), None),
        None => {
            let exe = std::env::current_exe().map_err(|source| BootstrapError::Binary {
                path: "current executable".into(),
                source,
            })?;
            let origin = format!("this homelab binary ({})", exe.display());
            (exe, origin, Some(env!("CARGO_PKG_VERSION").to_owned()))
        }
    };
    let binary = std::fs::read(&path)
        .map_err(|source| BootstrapError::Binary { path: path.display().to_string(), source })?;
    let elf = elf::parse(&binary).map_err(|source| BootstrapError::BinaryFormat {
        path: path.display().to_string(),
        source,
    })?;

    // Where the node's host key is checked: the repository's file, or (for --check on first
    // contact) a temporary one that is thrown away.
    // Kept until the end of the run: the temporary known_hosts lives in it.
    let mut _scratch: Option<tempfile::TempDir> = None;
    let mut new_key = false;
    let transport: Box<dyn Transport> = match args.transport {
        TransportKind::Local => Box::new(crate::transport::local::LocalTransport::new(None)),
        TransportKind::Ssh => {
            let repo_file =
                args.known_hosts.clone().unwrap_or_else(|| repo.join("inventory/known_hosts"));
            let file = match first_contact(node, &repo_file, args)? {
                None => repo_file,
                Some(keys) if args.check => {
                    new_key = true;
                    let dir = tempfile::tempdir()
                        .map_err(|source| Error::Write { path: std::env::temp_dir(), source })?;
                    let file = dir.path().join("known_hosts");
                    hostkey::trust(&file, &keys)?;
                    _scratch = Some(dir);
                    file
                }
                Some(keys) => {
                    hostkey::trust(&repo_file, &keys)?;
                    for k in &keys {
                        eprintln!(
                            "added {} {} to {}",
                            k.algorithm,
                            k.fingerprint,
                            repo_file.display()
                        );
                    }
                    repo_file
                }
            };
            Box::new(crate::transport::ssh::SshTransport::new(file, args.ssh_key.clone()))
        }
    };
    let name = node.id.as_str();
    let exec = transport
        .connect(node)
        .map_err(|source| BootstrapError::Connect { node: name.to_owned(), source })?;
    let mut want = Want {
        root: exec.root().to_owned(),
        sha256: crate::digest::sha256_hex(&binary),
        version,
        arch: elf.arch,
        interpreter: elf.interpreter,
        origin,
    };
    let found = remote::inspect(exec.as_ref(), name, &mut want)?;
    let changes = bootstrap::changes(&want, &found);
    // The trust roots the node's engine checks plans against, and the deploy key.
    let trust_dir = crate::node::Layout::new(&want.root).trust();
    let roots = bootstrap::trust::wanted(&lab, &node.id);
    let (missing, differ) = bootstrap::trust::compare(exec.as_ref(), name, &trust_dir, &roots)?;
    let mut extra: Vec<String> = Vec::new();
    if !differ.is_empty() {
        if !args.replace_trust && !args.check {
            return Err(Error::Unsupported {
                message: format!(
                    "{name}: the trust roots pinned in {trust_dir} ({}) differ from the repository's: nothing was changed. The node checks every plan against them; replace them with `homelab bootstrap {name} --replace-trust`",
                    differ.join(", ")
                ),
            });
        }
        extra.push(format!(
            "~ replace the pinned trust roots in {trust_dir} ({})",
            differ.join(", ")
        ));
    } else if !missing.is_empty() {
        extra.push(format!("+ pin the trust roots in {trust_dir} ({})", missing.join(", ")));
    }
    let pin_roots = !extra.is_empty();
    let deploy_key = match &args.deploy_key {
        None => None,
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .map_err(|source| Error::Read { path: file.clone(), source })?;
            let Some((line, blob)) = bootstrap::trust::deploy_key_line(&want.root, &text) else {
                return Err(Error::Unsupported {
                    message: format!(
                        "{}: expected one public key line (`ssh-ed25519 AAAA... comment`), as `ssh-keygen` writes to a .pub file",
                        file.display()
                    ),
                });
            };
            let own = args
                .ssh_key
                .as_ref()
                .and_then(|k| std::fs::read_to_string(k.with_extension("pub")).ok())
                .and_then(|t| t.split_whitespace().nth(1).map(str::to_owned));
            if own.as_deref() == Some(blob.as_str()) {
                return Err(Error::Unsupported {
                    message: format!(
                        "{}: this is the key bootstrap logs in with (--ssh-key); restricting it would lock you out of {name}: give the controller a key of its own",
                        file.display()
                    ),
                });
            }
            if bootstrap::trust::deploy_key(
                exec.as_ref(),
                name,
                &args.authorized_keys,
                &line,
                &blob,
                false,
            )? {
                None
            } else {
                extra.push(format!(
                    "+ authorize the deploy key {} for `homelab node serve` only",
                    file.display()
                ));
                Some((line, blob))
            }
        }
    };
    let finish_extra = |exec: &dyn crate::transport::NodeExec| -> Result<(), Error> {
        if pin_roots {
            bootstrap::trust::pin(exec, name, &trust_dir, &roots)?;
        }
        if let Some((line, blob)) = &deploy_key {
            bootstrap::trust::deploy_key(exec, name, &args.authorized_keys, line, blob, true)?;
        }
        Ok(())
    };
    let w = |out: &mut dyn Write, line: String| writeln!(out, "{line}").map_err(Error::stdout);
    w(
        out,
        format!(
            "{} ({}): Docker Engine {}, Compose {}, runtime root {}",
            node.display_name, found.user, found.engine, found.compose, want.root
        ),
    )?;

    if changes.is_empty() && extra.is_empty() {
        let version = remote::version(exec.as_ref(), name, &want.root)?;
        let state = summary(&want, &version);
        if new_key {
            w(out, "+ add the node's host key to the known_hosts file".into())?;
            w(out, format!("{name}: 1 change to make (the rest is bootstrapped: {state})"))?;
            return Ok(Report::Changes);
        }
        w(out, format!("already bootstrapped: {name}: {state}; nothing changed"))?;
        return Ok(Report::Success);
    }

    if new_key {
        w(out, "+ add the node's host key to the known_hosts file".into())?;
    }
    for c in &changes {
        w(out, c.to_string())?;
    }
    for e in &extra {
        w(out, e.clone())?;
    }
    let count = changes.len() + extra.len() + usize::from(new_key);
    if args.check {
        w(
            out,
            format!(
                "{name}: {count} change{} to make; nothing was changed (run `homelab bootstrap {name}` to make them)",
                plural(count)
            ),
        )?;
        return Ok(Report::Changes);
    }
    confirm(args.yes, name, count)?;
    let mut progress = |c: &Change| {
        let _ = writeln!(out, "done: {c}");
    };
    if !changes.is_empty() {
        remote::run(exec.as_ref(), name, &mut want, &found, &changes, &binary, &mut progress)?;
    }
    finish_extra(exec.as_ref())?;
    for e in &extra {
        let _ = writeln!(out, "done: {}", &e[2..]);
    }
    let version = remote::version(exec.as_ref(), name, &want.root)?;
    let made = changes.len() + extra.len();
    w(
        out,
        format!(
            "bootstrapped {name}: {} change{}; {}",
            made,
            plural(made),
            summary(&want, &version)
        ),
    )?;
    Ok(Report::Success)
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn summary(want: &Want, version: &str) -> String {
    format!(
        "{version} ({}) at {} (sha256 {}), image {} ({LOCAL_TAG})",
        want.arch,
        crate::node::Layout::new(&want.root).binary(),
        &want.sha256[..12],
        want.tag().unwrap_or_else(|| IMAGE_REPOSITORY.to_owned())
    )
}

/// The node's host key: `None` when the known_hosts file already has it (and it agrees with
/// `--host-key`, if given); else the keys somebody confirmed, to be written. Refuses (writing
/// nothing) a key nobody confirmed or one that differs from `--host-key`.
fn first_contact(
    node: &Node,
    known_hosts: &Path,
    args: &BootstrapArgs,
) -> Result<Option<Vec<HostKey>>, Error> {
    let (address, port) = (&node.ssh.address, node.ssh.port);
    let host = hostkey::pattern(address, port);
    let known = hostkey::known(known_hosts, address, port)?;
    if !known.is_empty() {
        if let Some(fp) = &args.host_key {
            if hostkey::matching(&known, fp).is_none() {
                return Err(Error::NotConfirmed {
                    message: format!(
                        "{} has {} for {host} in {}, not {fp}: nothing was changed. If the node was reinstalled, check its new key on its console, remove the old one (`ssh-keygen -R '{host}' -f {}`) and bootstrap again",
                        known_hosts.display(),
                        fingerprints(&known),
                        known_hosts.display(),
                        known_hosts.display()
                    ),
                });
            }
        }
        return Ok(None);
    }
    let scanned = hostkey::scan(address, port)?;
    eprintln!("{} ({host}) is not in {}; it presents:", node.display_name, known_hosts.display());
    for k in &scanned {
        eprintln!("  {} {}", k.algorithm, k.fingerprint);
    }
    if let Some(fp) = &args.host_key {
        return match hostkey::matching(&scanned, fp) {
            Some(k) => {
                eprintln!("{fp} matches --host-key");
                Ok(Some(vec![k.clone()]))
            }
            None => Err(Error::NotConfirmed {
                message: format!(
                    "{host} presents {}, not the --host-key {fp}: refused, nothing was written. Check the fingerprint on the node's console (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`): a different key means a typo, a reinstalled node or someone in between",
                    fingerprints(&scanned)
                ),
            }),
        };
    }
    if !std::io::stdin().is_terminal() {
        return Err(Error::NotConfirmed {
            message: format!(
                "{host}'s host key is not trusted yet and there is no terminal to confirm it on: check the fingerprint on the node's console (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`) and pass it as `--host-key SHA256:...`; nothing was written"
            ),
        });
    }
    eprint!(
        "compare with `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the node's console.\ntrust this host key for {}? [y/N] ",
        node.display_name
    );
    let mut answer = String::new();
    let _ = std::io::stdin().read_line(&mut answer);
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(Some(scanned))
    } else {
        Err(Error::NotConfirmed { message: "host key not trusted; nothing was written".into() })
    }
}

fn fingerprints(keys: &[HostKey]) -> String {
    keys.iter().map(|k| k.fingerprint.as_str()).collect::<Vec<_>>().join(", ")
}

fn confirm(yes: bool, name: &str, count: usize) -> Result<(), Error> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Error::NotConfirmed {
            message: format!(
                "not bootstrapped: pass `--yes` to make these changes on {name} without a terminal to confirm on"
            ),
        });
    }
    eprint!("\nmake {count} change{} on {name}? [y/N] ", plural(count));
    let mut answer = String::new();
    let _ = std::io::stdin().read_line(&mut answer);
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(Error::NotConfirmed { message: "not bootstrapped; nothing was changed".into() })
    }
}
