//! `extends:`: what a compose service inherits from another one, in the same file or in a
//! shipped file (`extends.file`), through chains of any length, so the rules that read a
//! container's keys (`restart`, `container_name`, `network_mode`, `ports`, `volumes`) see what
//! Compose will run. A cycle or a base that does not exist is reported here; a file that is not
//! shipped is the `paths` rule's.
//!
//! Pure: the shipped files' rendered text comes in as `Context::texts` holds it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

use super::super::super::diag::Diagnostics;
use super::super::super::load::parse_yaml;
use super::super::super::raw::{self, line};

/// One compose file as `extends` sees it: its path in the release and in the repository.
pub(super) struct Doc<'a> {
    pub display: &'a str,
    pub compose: &'a raw::Compose,
}

/// A service another one inherits from: its file (release and repository path), its key and
/// its keys.
pub(super) struct Ancestor<'a> {
    pub release: &'a str,
    pub display: &'a str,
    pub key: &'a str,
    pub service: &'a raw::ComposeService,
}

impl Ancestor<'_> {
    /// The folder of its file in the release, where its relative paths start (`""` or `base/`).
    pub fn dir(&self) -> &str {
        self.release.rsplit_once('/').map_or("", |(d, _)| d)
    }
}

/// The base a service names: (release path of its file, key), or `None` without `extends`.
fn base_of(release: &str, s: &raw::ComposeService) -> Option<(String, String)> {
    match &s.extends.as_ref()?.value {
        Value::String(key) => Some((release.to_owned(), key.clone())),
        Value::Object(m) => {
            let key = m.get("service")?.as_str()?.to_owned();
            let file = match m.get("file").and_then(Value::as_str) {
                Some(f) => join(release, f)?,
                None => release.to_owned(),
            };
            Some((file, key))
        }
        _ => None,
    }
}

/// `file` named in the compose file at `release`, as a path in the release; `None` when it is
/// absolute or leaves the release (the `paths` rule reports those).
fn join(release: &str, file: &str) -> Option<String> {
    if file.starts_with(['/', '~']) {
        return None;
    }
    let dir = release.rsplit_once('/').map_or("", |(d, _)| d);
    super::paths::normalize(&format!("{dir}/{file}")).map(|parts| parts.join("/"))
}

/// Parses every shipped file a compose file in `docs` reaches through `extends.file`, chains
/// included; each file once.
pub(super) fn load(
    docs: &BTreeMap<String, Doc>,
    texts: &BTreeMap<String, (String, String)>,
    d: &mut Diagnostics,
) -> BTreeMap<String, (String, raw::Compose)> {
    let mut loaded: BTreeMap<String, (String, raw::Compose)> = BTreeMap::new();
    let refs = |release: &str, c: &raw::Compose| -> Vec<String> {
        c.services.values().filter_map(|s| base_of(release, &s.value)).map(|(f, _)| f).collect()
    };
    let mut todo: Vec<String> = docs.iter().flat_map(|(r, doc)| refs(r, doc.compose)).collect();
    let mut seen: BTreeSet<String> = docs.keys().cloned().collect();
    while let Some(release) = todo.pop() {
        if !seen.insert(release.clone()) {
            continue;
        }
        // Not shipped: the `paths` rule says so.
        let Some((display, text)) = texts.get(&release) else { continue };
        match parse_yaml::<raw::Compose>(Path::new(display), text) {
            Ok(c) => {
                todo.extend(refs(&release, &c));
                loaded.insert(release, (display.clone(), c));
            }
            Err(e) => d.push(e),
        }
    }
    loaded
}

/// What the service `key` of the file `release` inherits, nearest first. A cycle or a missing
/// base is reported at the `extends` that names it, and ends the chain there.
pub(super) fn ancestors<'a>(
    docs: &'a BTreeMap<String, Doc<'a>>,
    release: &'a str,
    key: &'a str,
    d: &mut Diagnostics,
) -> Vec<Ancestor<'a>> {
    let mut out: Vec<Ancestor<'a>> = Vec::new();
    let mut seen = BTreeSet::from([(release.to_owned(), key.to_owned())]);
    let (mut at_release, mut at_key) = (release, key);
    while let Some(doc) = docs.get(at_release) {
        let Some(cs) = doc.compose.services.get(at_key) else { break };
        let Some((file, base)) = base_of(at_release, &cs.value) else { break };
        let field = format!("services.{at_key}.extends");
        let l = cs.value.extends.as_ref().and_then(line);
        let Some((release, bdoc)) = docs.get_key_value(&file) else { break };
        let Some((bkey, bs)) = bdoc.compose.services.get_key_value(&base) else {
            d.err(
                "extends",
                doc.display,
                l,
                field,
                format!(
                    "`services.{at_key}` extends `{base}`, but {} has no service `{base}`",
                    bdoc.display
                ),
                format!("name a service of {} under `extends.service`", bdoc.display),
            );
            break;
        };
        if !seen.insert((file.clone(), base.clone())) {
            let chain: Vec<&str> = std::iter::once(key)
                .chain(out.iter().map(|a| a.key))
                .chain([base.as_str()])
                .collect();
            d.err(
                "extends",
                doc.display,
                l,
                field,
                format!(
                    "`extends` goes round in a cycle ({}): Compose refuses it",
                    chain.join(" -> ")
                ),
                "let one of these services stop extending the next",
            );
            break;
        }
        out.push(Ancestor {
            release: release.as_str(),
            display: bdoc.display,
            key: bkey.as_str(),
            service: &bs.value,
        });
        (at_release, at_key) = (release.as_str(), bkey.as_str());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::join;

    #[test]
    fn extends_files_resolve_against_their_own_folder() {
        assert_eq!(join("docker-compose.yml", "./common.yml").as_deref(), Some("common.yml"));
        assert_eq!(join("base/common.yml", "more.yml").as_deref(), Some("base/more.yml"));
        assert_eq!(join("base/common.yml", "../top.yml").as_deref(), Some("top.yml"));
        assert_eq!(join("docker-compose.yml", "../out.yml"), None);
        assert_eq!(join("docker-compose.yml", "/etc/x.yml"), None);
    }
}
