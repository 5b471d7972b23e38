//! Dependencies: every dependency of a placed service names a service that exists, on a node
//! that exists and runs it, and an instance never depends on itself.
//!
//! Longer cycles need the graph and are found in `crate::check`. Dependencies are read through
//! `build::resolve`, the same function that builds the model's instances. No IO here.

use super::super::build::{resolve, Resolved};
use super::super::diag::Diagnostics;
use super::super::raw::line;
use super::super::Instance;
use super::{contract_file, Input};

pub(super) fn check(i: &Input, d: &mut Diagnostics) {
    let (nodes, services) = (&i.lab.nodes, &i.lab.services);
    for node in nodes.values() {
        for svc_name in node.services.keys() {
            let Some(raw) = i.raw.service(svc_name.as_str()) else { continue };
            let file = contract_file(svc_name.as_str());
            let me = Instance { service: svc_name.clone(), node: node.id.clone() };
            for (n, dep) in raw.contract.dependencies.iter().enumerate() {
                let field = format!("dependencies[{n}]");
                let dname = &dep.value.service;
                match resolve(nodes, services, svc_name, &node.id, &dep.value) {
                    Resolved::UnknownService => {
                        // A folder that failed to load is reported where it breaks.
                        if !i.raw.has_service_dir(&dname.value) {
                            d.err(
                                "dependency",
                                &file,
                                line(dname),
                                format!("{field}.service"),
                                format!("expected a service of services/, found `{}`", dname.value),
                                "fix the name or add the service",
                            );
                        }
                    }
                    Resolved::UnknownNode => {
                        let n = dep.value.node.as_ref().expect("only a named node is unknown");
                        d.err(
                            "dependency",
                            &file,
                            line(n),
                            format!("{field}.node"),
                            format!(
                                "expected a node of inventory/topology.yaml, found `{}`",
                                n.value
                            ),
                            "fix the node id",
                        );
                    }
                    Resolved::Itself => d.err(
                        "cycle",
                        &file,
                        line(dname),
                        format!("{field}.service"),
                        format!("`{me}` depends on itself"),
                        "remove the dependency",
                    ),
                    Resolved::NotOnNode(dep, target) => {
                        if i.raw.services_loaded(&target) {
                            d.err("dependency", &file, line(dname), field, format!("`{me}` depends on `{}@{target}`, but hosts/{target}/services.yaml does not list `{}`", dep.name, dep.name), "depend on a node that runs the service (`node:`), or place the service there");
                        }
                    }
                    Resolved::To(..) => {}
                }
            }
        }
    }
}
