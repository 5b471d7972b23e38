//! `homelab render`: writes, per selected instance, the exact artifacts its node will get and
//! their manifest, to a folder for review or diffing. Rendering itself is `crate::render`
//! (pure); this command owns the writing.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use crate::error::{Error, Report};
use crate::render::{self, Rendered};

pub fn run(
    repo: &Path,
    node: Option<&str>,
    service: Option<&str>,
    dir: &Path,
    root: Option<&std::path::PathBuf>,
    out: &mut dyn Write,
) -> Result<Report, Error> {
    let lab = super::load_under(repo, root)?;
    let node = node.map(|n| super::resolve_node(&lab, n)).transpose()?;
    let service = service.map(|s| super::resolve_service(&lab, s, node.as_ref())).transpose()?;
    let rendered = render::render_all(&lab, |i| {
        node.as_ref().is_none_or(|n| &i.node == n)
            && service.as_ref().is_none_or(|s| &i.service == s)
    })?;
    write_tree(dir, &rendered).map_err(|e| Error::Write { path: dir.to_path_buf(), source: e })?;
    for r in &rendered {
        writeln!(
            out,
            "rendered {} -> {}",
            r.instance,
            dir.join(r.instance.node.as_str()).join(r.instance.service.as_str()).display()
        )
        .map_err(Error::stdout)?;
    }
    // The rendered folder holds `docker-compose.yml` where the repository has `compose.yaml`:
    // said once per file, on stderr beside the data.
    let renamed: std::collections::BTreeSet<(String, &str)> =
        rendered.iter().flat_map(|r| render::renamed(&lab, &r.instance)).collect();
    for (path, release) in &renamed {
        eprintln!("{}", render::renamed_note(path, release));
    }
    Ok(Report::Success)
}

/// Writes `<out>/<node>/<svc>/<artifact>` and its `manifest.json`. Files of an earlier render
/// that are no longer artifacts are removed, so the folder is exactly what the node gets.
fn write_tree(out: &Path, rendered: &[Rendered]) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for r in rendered {
        let dir = out.join(r.instance.node.as_str()).join(r.instance.service.as_str());
        fs::create_dir_all(&dir)?;
        let mut keep: Vec<&str> = r.artifacts.iter().map(|a| a.name.as_str()).collect();
        keep.push(crate::node::manifest::MANIFEST);
        remove_others(&dir, &dir, &keep)?;
        for a in &r.artifacts {
            let path = dir.join(&a.name);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)?;
            }
            fs::write(&path, &a.bytes)?;
            fs::set_permissions(&path, fs::Permissions::from_mode(a.mode))?;
        }
        fs::write(dir.join(crate::node::manifest::MANIFEST), r.manifest_bytes())?;
    }
    Ok(())
}

/// Removes the files under `dir` whose path below `top` is not in `keep`.
fn remove_others(top: &Path, dir: &Path, keep: &[&str]) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            remove_others(top, &path, keep)?;
        } else if kind.is_file() {
            let rel = path.strip_prefix(top).unwrap_or(&path).to_string_lossy().into_owned();
            if !keep.contains(&rel.as_str()) {
                fs::remove_file(&path)?;
            }
        }
    }
    Ok(())
}
