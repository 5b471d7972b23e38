//! Putting an import in the repository, all or nothing: the service folder is written beside
//! `services/` under a hidden name and renamed into place, the node's `services.yaml` gets the
//! service appended (the rest of it kept as written), and the repository is validated; a
//! problem the import brought is reported and both are taken back out. Writes nothing else.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::edit::{self, indent, is_blank, Op};
use super::project::{self, Project, COMPOSE_FILES};
use super::ImportError;
use crate::model::load::parse_yaml;
use crate::model::{raw, Diagnostic, Exposure};

/// The files import writes itself; a project file of the same name is not copied.
const GENERATED: [&str; 5] =
    ["docker-compose.yml", "service.yaml", "env.example", "healthcheck.sh", "README.md"];

pub struct Files {
    pub compose: String,
    pub contract: String,
    pub env_example: String,
    pub healthcheck: String,
    pub readme: String,
}

/// Whether a host's `services.yaml` lists `svc`.
pub fn lists(text: &str, svc: &str) -> bool {
    match parse_yaml::<raw::HostServices>(Path::new("services.yaml"), text) {
        Ok(h) => h.services.iter().any(|s| s.value.name.value == svc),
        Err(_) => text.lines().any(|l| {
            let t = l.trim().trim_start_matches("- ").trim();
            t.strip_prefix("name:").is_some_and(|v| v.trim().trim_matches(['"', '\'']) == svc)
        }),
    }
}

/// The node's `services.yaml` with `svc` appended to its `services:` list, everything else as
/// written.
pub fn add_to_host(text: Option<&str>, node: &str, svc: &str, exposure: Exposure) -> String {
    let item = |pad: &str| {
        vec![format!("{pad}- name: {svc}"), format!("{pad}  exposure: {}", exposure.as_str())]
    };
    let Some(text) = text else {
        return format!("node: {node}\nservices:\n{}\n", item("  ").join("\n"));
    };
    let lines: Vec<&str> = text.lines().collect();
    let Some(at) = lines.iter().position(|l| l.starts_with("services:")) else {
        let mut t = text.to_owned();
        if !t.is_empty() && !t.ends_with('\n') {
            t.push('\n');
        }
        return format!("{t}services:\n{}\n", item("  ").join("\n"));
    };
    let n = at + 1;
    let rest = lines[at]["services:".len()..].trim();
    let mut ops = Vec::new();
    let mut after = n;
    let mut pad = "  ".to_owned();
    if rest.starts_with('[') {
        // `services: []`, or a flow list: written out as a block list.
        let inner = rest.trim_start_matches('[').split(']').next().unwrap_or("").trim();
        ops.push(Op::Replace { line: n, old: lines[at].to_owned(), new: "services:".into() });
        for existing in inner.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            ops.push(Op::Insert { after: n, text: format!("  - {existing}") });
        }
    } else {
        for (k, l) in lines.iter().enumerate().skip(n) {
            if is_blank(l) {
                continue;
            }
            if indent(l) > 0 || l.starts_with("- ") {
                if after == n {
                    pad = " ".repeat(indent(l));
                }
                after = k + 1;
            } else {
                break;
            }
        }
    }
    for t in item(&pad) {
        ops.push(Op::Insert { after, text: t });
    }
    edit::apply(text, &ops).unwrap_or_else(|_| text.to_owned())
}

/// The files of the project that ship, relative to its folder, sorted: what `ship` names
/// (folders whole, hidden files left out), without the files import writes itself.
pub fn shipped(
    p: &Project,
    ship: &BTreeSet<String>,
    shown: &str,
) -> Result<Vec<String>, ImportError> {
    let dir = shown.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    let problem = |path: &str, message: String, fix: &str| {
        ImportError::Project(Diagnostic::new(
            "import",
            Path::new(&format!("{dir}/{path}")),
            None,
            "",
            message,
            fix,
        ))
    };
    let mut out = BTreeSet::new();
    for rel in ship {
        if let Some(l) = p.links_under(rel).next() {
            return Err(problem(
                l,
                "is a symbolic link: import copies files, never links".into(),
                "replace the link with the file it points at",
            ));
        }
        if rel.split('/').any(|part| part.starts_with('.')) {
            return Err(problem(
                rel,
                "is hidden, and hidden files never ship".into(),
                "rename it without a leading `.`",
            ));
        }
        for f in p.files_under(rel) {
            let top = !f.contains('/');
            if top && (COMPOSE_FILES.contains(&f.as_str()) || GENERATED.contains(&f.as_str())) {
                if f == rel {
                    return Err(problem(f, format!("is referenced by the compose file, but `{f}` is a file homelab writes itself"), "rename it (and its reference)"));
                }
                continue;
            }
            let ok = f.split('/').all(|part| {
                part.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            });
            if !ok {
                return Err(problem(
                    f,
                    "has a name that cannot ship: file paths are letters, digits, `.`, `_`, `-`"
                        .into(),
                    "rename it (and its reference)",
                ));
            }
            out.insert(f.clone());
        }
    }
    Ok(out.into_iter().collect())
}

/// Writes the service and the host's listing, validates, and takes both back out when the
/// import brought a problem. Returns what validate notes about the service.
#[allow(clippy::too_many_arguments)]
pub fn commit(
    repo: &Path,
    p: &Project,
    svc: &str,
    files: &Files,
    copied: &[String],
    host_file: &Path,
    host_before: Option<&str>,
    host_after: &str,
) -> Result<Vec<Diagnostic>, ImportError> {
    let before: BTreeSet<Diagnostic> =
        crate::check::validate(repo).err().unwrap_or_default().into_iter().collect();
    let services = repo.join("services");
    let dest = services.join(svc);
    let stage = services.join(format!(".import-{svc}-{}", std::process::id()));
    // What this import has put in place, so undoing takes back exactly that.
    let renamed = std::cell::Cell::new(false);
    let listed = std::cell::Cell::new(false);
    let staged = (|| -> Result<(), ImportError> {
        let w = |path: &Path, bytes: &[u8], mode: u32| -> Result<(), ImportError> {
            let err = |source| ImportError::Write { path: path.to_path_buf(), source };
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).map_err(err)?;
            }
            fs::write(path, bytes).map_err(err)?;
            fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(err)
        };
        fs::create_dir_all(&stage)
            .map_err(|source| ImportError::Write { path: stage.clone(), source })?;
        w(&stage.join("docker-compose.yml"), files.compose.as_bytes(), 0o644)?;
        w(&stage.join("service.yaml"), files.contract.as_bytes(), 0o644)?;
        w(&stage.join("env.example"), files.env_example.as_bytes(), 0o644)?;
        w(&stage.join("healthcheck.sh"), files.healthcheck.as_bytes(), 0o755)?;
        w(&stage.join("README.md"), files.readme.as_bytes(), 0o644)?;
        for rel in copied {
            let from = p.dir.join(rel);
            let bytes = project::bytes_of(&from)?;
            let exec =
                fs::metadata(&from).map(|m| m.permissions().mode() & 0o111 != 0).unwrap_or(false);
            w(&stage.join(rel), &bytes, if exec { 0o755 } else { 0o644 })?;
        }
        if fs::symlink_metadata(&dest).is_ok() {
            return Err(ImportError::Exists { service: svc.to_owned() });
        }
        fs::rename(&stage, &dest)
            .map_err(|source| ImportError::Write { path: dest.clone(), source })?;
        renamed.set(true);
        crate::files::write_atomic(host_file, host_after.as_bytes())
            .map_err(|source| ImportError::Write { path: host_file.to_path_buf(), source })?;
        listed.set(true);
        Ok(())
    })();
    let undo = || {
        let _ = fs::remove_dir_all(&stage);
        if renamed.get() {
            let _ = fs::remove_dir_all(&dest);
        }
        if listed.get() {
            let _ = match host_before {
                Some(t) => crate::files::write_atomic(host_file, t.as_bytes()),
                None => fs::remove_file(host_file),
            };
        }
    };
    if let Err(e) = staged {
        undo();
        return Err(e);
    }
    match crate::check::validate(repo) {
        Ok(lab) => {
            let prefix = format!("services/{svc}/");
            Ok(lab.notes.into_iter().filter(|n| n.file.starts_with(&prefix)).collect())
        }
        Err(after) => {
            let new: Vec<Diagnostic> = after.into_iter().filter(|d| !before.contains(d)).collect();
            if new.is_empty() {
                return Ok(Vec::new());
            }
            undo();
            Err(ImportError::Invalid { diagnostics: new })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_is_appended_to_the_hosts_list_and_the_rest_kept() {
        let text = "node: a\n# the node's services\nservices:\n  - name: web\n    exposure: lan\n    vars:\n      x: 1\n";
        let out = add_to_host(Some(text), "a", "app", Exposure::Internal);
        assert_eq!(out, format!("{text}  - name: app\n    exposure: internal\n"));
        assert!(lists(&out, "app") && lists(&out, "web") && !lists(&out, "ap"));
        let empty = add_to_host(Some("node: a\nservices: []\n"), "a", "app", Exposure::Lan);
        assert_eq!(empty, "node: a\nservices:\n  - name: app\n    exposure: lan\n");
        let after = add_to_host(
            Some("services:\n- name: web\n  exposure: lan\nnode: a\n"),
            "a",
            "app",
            Exposure::Lan,
        );
        assert_eq!(
            after,
            "services:\n- name: web\n  exposure: lan\n- name: app\n  exposure: lan\nnode: a\n"
        );
        assert!(lists(&after, "app"));
        let none = add_to_host(None, "a", "app", Exposure::Lan);
        assert_eq!(none, "node: a\nservices:\n  - name: app\n    exposure: lan\n");
    }
}
