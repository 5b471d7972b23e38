//! Who runs what: a contract's `owner_node` names a node (or `all`), and it agrees with the
//! `hosts/*/services.yaml` listings, seen from both sides; a listed service exists and is
//! listed with the contract's exposure class.
//!
//! A host file that failed to load is not checked against (that would repeat the load
//! problem). No IO here.

use super::super::build::owner;
use super::super::diag::Diagnostics;
use super::super::names::ServiceName;
use super::super::raw::line;
use super::super::Owner;
use super::{contract_file, exposure, Input};

pub(super) fn check(i: &Input, d: &mut Diagnostics) {
    owners(i, d);
    listings(i, d);
    agreement(i, d);
}

/// `owner_node` names `all` or a node of the topology.
fn owners(i: &Input, d: &mut Diagnostics) {
    for (dir, rs) in i.raw.services() {
        let c = &rs.contract;
        if owner(c, &i.lab.nodes).is_none() {
            let known: Vec<_> = i.lab.nodes.keys().map(|n| n.as_str()).collect();
            d.err(
                "owner-node",
                contract_file(dir),
                line(&c.owner_node),
                "owner_node",
                format!(
                    "expected a node of inventory/topology.yaml ({}) or `all`, found `{}`",
                    known.join(", "),
                    c.owner_node.value
                ),
                "name the node that runs this service",
            );
        }
    }
}

/// Each entry of a node's services.yaml, against the contract it names.
fn listings(i: &Input, d: &mut Diagnostics) {
    for (id, host) in &i.raw.hosts {
        let Some(hs) = &host.services else { continue };
        let svc_file = format!("hosts/{id}/services.yaml");
        for (n, s) in hs.services.iter().enumerate() {
            let field = format!("services[{n}].name");
            let name = &s.value.name;
            let Some(svc) =
                ServiceName::parse(&name.value).ok().and_then(|n| i.lab.services.get(&n))
            else {
                if !i.raw.has_service_dir(&name.value) {
                    d.err(
                        "dependency",
                        &svc_file,
                        line(name),
                        field,
                        format!("expected a service of services/, found `{}`", name.value),
                        format!("add services/{}/ or fix the name", name.value),
                    );
                }
                continue;
            };
            let exposure_field = format!("services[{n}].exposure");
            let listed = exposure(d, &svc_file, &s.value.exposure, &exposure_field);
            if let Some(e) = listed.filter(|e| *e != svc.exposure) {
                d.err(
                    "exposure",
                    &svc_file,
                    line(&s.value.exposure),
                    exposure_field,
                    format!(
                        "expected `{}` as in services/{}/service.yaml, found `{}`",
                        svc.exposure.as_str(),
                        svc.name,
                        e.as_str()
                    ),
                    "make the host's exposure class and the contract's agree",
                );
            }
            match &svc.owner {
                Owner::Node(owner) if owner != id => d.err(
                    "owner-node",
                    &svc_file,
                    line(name),
                    field,
                    format!("`{}` has `owner_node: {owner}` in services/{}/service.yaml, but is listed on `{id}`", svc.name, svc.name),
                    format!("list it only in hosts/{owner}/services.yaml, or change its owner_node"),
                ),
                _ => {}
            }
        }
    }
}

/// Agreement of owner_node with the hosts listing, seen from the contract.
fn agreement(i: &Input, d: &mut Diagnostics) {
    let nodes = &i.lab.nodes;
    for svc in i.lab.services.values() {
        let file = contract_file(svc.name.as_str());
        let l = i.raw.service(svc.name.as_str()).and_then(|r| line(&r.contract.owner_node));
        match &svc.owner {
            Owner::Node(owner) => {
                let listed =
                    nodes.get(owner).map(|n| n.services.contains_key(&svc.name)).unwrap_or(false);
                if !listed && i.raw.services_loaded(owner) {
                    d.err("owner-node", &file, l, "owner_node", format!("`{owner}` is the owner but hosts/{owner}/services.yaml does not list `{}`", svc.name), format!("add `{}` to hosts/{owner}/services.yaml", svc.name));
                }
            }
            Owner::All => {
                // Reported where the fix goes: the services.yaml of each node that lacks it
                // (a node added to the topology, most often), at its last entry.
                for n in nodes.values() {
                    if !i.raw.services_loaded(&n.id) || n.services.contains_key(&svc.name) {
                        continue;
                    }
                    let hs = i.raw.hosts.get(&n.id).and_then(|h| h.services.as_ref());
                    let at = hs.and_then(|hs| {
                        hs.services.last().and_then(line).or_else(|| line(&hs.node))
                    });
                    d.err(
                        "owner-node",
                        format!("hosts/{}/services.yaml", n.id),
                        at,
                        "services",
                        format!(
                            "`{}` has `owner_node: all` in {file} (line {}), which means every node, but `{}` does not list it",
                            svc.name,
                            l.map_or("?".to_owned(), |l| l.to_string()),
                            n.id
                        ),
                        format!(
                            "add `- name: {}` with `exposure: {}` to the services of hosts/{}/services.yaml, or give `{}` one owner node",
                            svc.name,
                            svc.exposure.as_str(),
                            n.id,
                            svc.name
                        ),
                    );
                }
            }
        }
    }
}
