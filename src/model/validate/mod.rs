//! Validation: every rule of the guide and of DESIGN.md §2 as a pure check, one file per
//! family, each named by stable rule ids (`layout`, `naming`, `owner-node`, ...).
//!
//! Checks read the raw repository (`load::RawRepo`) and the model `build.rs` made of its sound
//! parts, and push `Diagnostic`s; they never stop at the first problem, never do IO and never
//! look above `model` (no graph, no render: those checks live in `crate::check`). Each rule has
//! one owner: a family meeting a thing whose name is broken skips it, `naming` reports it.
//! The families import only this file, never each other.

mod capabilities;
mod chelsty;
pub mod compose;
pub mod conflicts;
mod contract;
mod dependencies;
mod layout;
mod naming;
mod ownership;
mod policy;
mod secrets;
mod topology;

pub use secrets::{looks_secret, secret_looking_literal};

use super::diag::Diagnostics;
use super::load::RawRepo;
use super::raw::{self, line, S};
use super::{Exposure, Homelab};

/// The restart policies Docker knows; a contract names one of them.
pub const RESTART_POLICIES: [&str; 4] = ["no", "always", "on-failure", "unless-stopped"];

/// What every family reads: the raw repository, its topology and the model of its sound parts.
pub(super) struct Input<'a> {
    pub raw: &'a RawRepo,
    pub topology: &'a raw::Topology,
    pub lab: &'a Homelab,
}

/// Runs every family on a repository that was read. Without a topology only the problems of
/// reading it are known: every other check needs the nodes.
pub(super) fn all(raw: &RawRepo, lab: Option<&Homelab>, d: &mut Diagnostics) {
    layout::folders(raw, d);
    let (Some(topology), Some(lab)) = (&raw.topology, lab) else { return };
    let input = Input { raw, topology, lab };
    layout::check(&input, d);
    layout::service_files(&input, d);
    naming::check(&input, d);
    topology::check(&input, d);
    contract::check(&input, d);
    ownership::check(&input, d);
    capabilities::check(&input, d);
    dependencies::check(&input, d);
    chelsty::check(&input, d);
    secrets::check(&input, d);
    policy::check(&input, d);
}

/// The exposure class `e` names, or a diagnostic: shared by the contract and the hosts'
/// listings, which spell it the same way.
fn exposure(d: &mut Diagnostics, file: &str, e: &S<String>, field: &str) -> Option<Exposure> {
    let parsed = Exposure::parse(&e.value);
    if parsed.is_none() {
        let all: Vec<_> = Exposure::ALL.iter().map(|(n, _)| *n).collect();
        d.err(
            "exposure",
            file,
            line(e),
            field,
            format!("expected one of {}, found `{}`", all.join(", "), e.value),
            "pick the exposure class",
        );
    }
    parsed
}

/// Where a thing sits in a file: what diagnostics about it point at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub file: String,
    pub line: Option<u64>,
    pub field: String,
}

impl Located {
    /// `file:line`, as a message names the other side of a conflict.
    pub fn shown(&self) -> String {
        match self.line {
            Some(l) => format!("{}:{l}", self.file),
            None => self.file.clone(),
        }
    }
}

/// A host port range an instance publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The host IP as written; `None` when none is (every address of the node).
    pub host_ip: Option<String>,
    pub start: u16,
    pub end: u16,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    pub at: Located,
}

impl Published {
    /// `8080` or `8000-8010`.
    pub fn range(&self) -> String {
        if self.start == self.end {
            self.start.to_string()
        } else {
            format!("{}-{}", self.start, self.end)
        }
    }

    /// `8080/tcp`, `127.0.0.1:53/udp`.
    pub fn shown(&self) -> String {
        match &self.host_ip {
            Some(ip) => format!("{ip}:{}/{}", self.range(), self.protocol),
            None => format!("{}/{}", self.range(), self.protocol),
        }
    }

    /// Whether both take the same host port: same protocol, overlapping ranges, and the same
    /// address or one of them on every address.
    pub fn clashes(&self, other: &Published) -> bool {
        self.protocol == other.protocol
            && self.start <= other.end
            && other.start <= self.end
            && match (self.specific_ip(), other.specific_ip()) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }

    /// The one address it publishes on; `None` for every address (none, `0.0.0.0`, `::`).
    pub fn specific_ip(&self) -> Option<&str> {
        self.host_ip.as_deref().filter(|ip| !matches!(*ip, "0.0.0.0" | "::"))
    }
}

/// What one instance takes on its node, from its rendered compose files: what two services of
/// one node must not both take (`conflicts`).
#[derive(Debug, Default, Clone)]
pub struct Footprint {
    pub ports: Vec<Published>,
    /// Container names, as written.
    pub containers: Vec<(String, Located)>,
    /// Host paths under the runtime root the instance bind-mounts writable, normalized.
    pub writable_binds: Vec<(String, Located)>,
    /// The shipped files and folders the compose files name (relative to the service folder,
    /// normalized; `""` is the whole folder, a build context `.`).
    pub shipped_refs: std::collections::BTreeSet<String>,
    /// The networks the compose files mark `external: true`, by the name Docker knows them
    /// by: a service on the node must declare each (`networks` of its contract).
    pub external_networks: Vec<(String, Located)>,
}

/// Empty, or `<...>`: what env.example writes instead of a value.
fn is_placeholder(value: &str) -> bool {
    let v = value.trim().trim_matches(|c| c == '"' || c == '\'');
    v.is_empty() || (v.starts_with('<') && v.ends_with('>'))
}

/// The path of a service's contract, as diagnostics show it.
fn contract_file(service: &str) -> String {
    format!("services/{service}/service.yaml")
}

/// Whether `s` is `tcp://<host>:<port>`: how the SLZB-06U is reached.
fn is_tcp_endpoint(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("tcp://") else { return false };
    let Some((host, port)) = rest.rsplit_once(':') else { return false };
    !host.is_empty()
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && port.parse::<u16>().map(|p| p > 0).unwrap_or(false)
}

/// The value a line of YAML or env text assigns to `name`, in any of the compose spellings:
/// `NAME: value`, `- NAME=value`, `NAME=value`.
fn literal_assignment(line: &str, name: &str) -> Option<String> {
    let t = line.trim_start();
    let t = t.strip_prefix("- ").map(str::trim_start).unwrap_or(t);
    let t = t.trim_start_matches(['"', '\'']);
    let rest = t.strip_prefix(name)?;
    let rest = rest.trim_start_matches(['"', '\'']);
    let value = rest.strip_prefix(':').or_else(|| rest.strip_prefix('='))?;
    let value = value.trim().trim_end_matches(['"', '\'']).trim_start_matches(['"', '\'']);
    (!value.is_empty()).then(|| value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments() {
        assert_eq!(
            literal_assignment("      MQTT_PASSWORD: hunter2", "MQTT_PASSWORD").as_deref(),
            Some("hunter2")
        );
        assert_eq!(
            literal_assignment("  - MQTT_PASSWORD=hunter2", "MQTT_PASSWORD").as_deref(),
            Some("hunter2")
        );
        assert_eq!(
            literal_assignment("  - \"MQTT_PASSWORD=x\"", "MQTT_PASSWORD").as_deref(),
            Some("x")
        );
        assert_eq!(literal_assignment("  MQTT_PASSWORD_FILE: /x", "MQTT_PASSWORD"), None);
        assert_eq!(literal_assignment("  MQTT_PASSWORD:", "MQTT_PASSWORD"), None);
    }

    #[test]
    fn tcp_endpoints() {
        assert!(is_tcp_endpoint("tcp://192.168.1.105:6638"));
        assert!(!is_tcp_endpoint("/dev/ttyUSB0"));
        assert!(!is_tcp_endpoint("tcp://:6638"));
        assert!(!is_tcp_endpoint("tcp://host:0"));
    }
}
