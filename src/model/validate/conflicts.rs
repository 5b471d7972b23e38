//! Conflicts on a node, found before the node finds them: two services publishing the same host
//! port (protocol and address), one container name in two services, two services writing the
//! same data path. Each is reported on the later instance, naming the earlier one. And an
//! external network (`external: true`) that no service on the node declares (`networks` of a
//! contract): nothing would create it.
//!
//! Reads the `Footprint`s `compose::check` returned for the instances of one node. No IO here.

use std::collections::{BTreeMap, BTreeSet};

use super::super::diag::Diagnostics;
use super::super::{Instance, NodeName};
use super::{Footprint, Located};

/// Checks the instances of `node`, in order.
pub fn check(node: &NodeName, instances: &[(&Instance, &Footprint)], d: &mut Diagnostics) {
    // The first earlier instance holding each container name and writable path, with where it
    // does: a lookup, where scanning every earlier instance made a node of k services cost k².
    // An instance's own entries join only after it is checked, as it is only compared with
    // the ones before it.
    let mut containers: BTreeMap<&str, (&Instance, &Located)> = BTreeMap::new();
    let mut binds: BTreeMap<&str, (&Instance, &Located)> = BTreeMap::new();
    for (j, (inst, fp)) in instances.iter().enumerate() {
        let earlier = &instances[..j];
        for p in &fp.ports {
            let other = earlier
                .iter()
                .find_map(|(o, ofp)| ofp.ports.iter().find(|q| q.clashes(p)).map(|q| (o, q)));
            if let Some((o, q)) = other {
                d.err(
                    "port-conflict",
                    &p.at.file,
                    p.at.line,
                    p.at.field.clone(),
                    format!(
                        "`{}` publishes host port {}, which `{}` publishes too ({} at {}) on node `{node}`",
                        inst.service,
                        p.shown(),
                        o.service,
                        q.shown(),
                        q.at.shown()
                    ),
                    "publish one of them on another host port or address",
                );
            }
        }
        for (name, at) in &fp.containers {
            let other = containers.get(name.as_str());
            if let Some((o, oat)) = other {
                d.err(
                    "container-conflict",
                    &at.file,
                    at.line,
                    at.field.clone(),
                    format!(
                        "container name `{name}` is taken by `{}` too ({}) on node `{node}`",
                        o.service,
                        oat.shown()
                    ),
                    "container names are unique on a node: rename the compose service in one of them",
                );
            }
        }
        for (path, at) in &fp.writable_binds {
            let other = binds.get(path.as_str());
            if let Some((o, oat)) = other {
                d.err(
                    "data-conflict",
                    &at.file,
                    at.line,
                    at.field.clone(),
                    format!(
                        "`{}` writes `{path}`, which `{}` writes too ({}) on node `{node}`",
                        inst.service,
                        o.service,
                        oat.shown()
                    ),
                    "give each service its own data folder (`{{ data_dir }}`), or mount it read-only in all but one",
                );
            }
        }
        for (name, at) in &fp.containers {
            containers.entry(name).or_insert((inst, at));
        }
        for (path, at) in &fp.writable_binds {
            binds.entry(path).or_insert((inst, at));
        }
    }
}

/// Every external network the compose files of `node`'s instances name must be declared by a
/// service on the node (`declared`: the `networks` of their contracts), so the plan creates it
/// before they come up; one that is not is reported where the compose file marks it external.
pub fn networks(
    node: &NodeName,
    instances: &[(&Instance, &Footprint)],
    declared: &BTreeSet<&str>,
    d: &mut Diagnostics,
) {
    for (inst, fp) in instances {
        for (name, at) in &fp.external_networks {
            if declared.contains(name.as_str()) {
                continue;
            }
            d.err(
                "network",
                &at.file,
                at.line,
                at.field.clone(),
                format!(
                    "`{name}` is an external network (`external: true`), and no service on node `{node}` declares it: nothing would create it, and `docker compose up` would fail"
                ),
                format!(
                    "add `networks: [{name}]` to services/{}/service.yaml (or to the contract of the service on `{node}` that owns the network): homelab then creates it on the node before the service comes up",
                    inst.service
                ),
            );
        }
    }
}
