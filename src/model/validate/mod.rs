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
mod contract;
mod dependencies;
mod layout;
mod naming;
mod ownership;
mod policy;
mod secrets;
mod topology;

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
