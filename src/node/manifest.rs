//! `manifest.json`: what homelab put in a release on a node, each artifact with its SHA-256,
//! size and mode. Rendering writes it beside the artifacts, prepare uploads it, refresh reads it
//! back to tell homelab's files from hand edits. [`Manifest::of`] is the one way to make one.

use serde::{Deserialize, Serialize};

/// The manifest's file name in a release.
pub const MANIFEST: &str = "manifest.json";
pub const MANIFEST_FORMAT: u32 = 1;

/// Whether `name` may be the path of an artifact in a release: relative, `/`-separated, each
/// part made of letters, digits, `.`, `_`, `-` and not starting with `.`, at most 8 parts and
/// 255 bytes, and not the manifest. Everything that names a file on a node passes this.
pub fn is_artifact_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    !name.is_empty()
        && name.len() <= 255
        && parts.len() <= 8
        && name != MANIFEST
        && parts.iter().all(|p| {
            !p.is_empty()
                && !p.starts_with('.')
                && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        })
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub service: String,
    pub node: String,
    /// The compose project name: the service name.
    pub project: String,
    pub artifacts: Vec<ManifestEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub name: String,
    pub sha256: String,
    pub size: u64,
    /// Permission bits as four octal digits (`0644`).
    pub mode: String,
}

impl Manifest {
    /// The manifest of `service` on `node` with these artifacts (name, bytes, mode), in the
    /// order given (artifacts are kept sorted by name).
    pub fn of<'a>(
        service: &str,
        node: &str,
        artifacts: impl IntoIterator<Item = (&'a str, &'a [u8], u32)>,
    ) -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT,
            service: service.to_owned(),
            node: node.to_owned(),
            project: service.to_owned(),
            artifacts: artifacts
                .into_iter()
                .map(|(name, bytes, mode)| ManifestEntry {
                    name: name.to_owned(),
                    sha256: crate::digest::sha256_hex(bytes),
                    size: bytes.len() as u64,
                    mode: format!("{mode:04o}"),
                })
                .collect(),
        }
    }

    /// The bytes written to `manifest.json`: pretty JSON and a newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("a manifest serializes");
        out.push(b'\n');
        out
    }
}
