//! Capabilities: what `hosts/<node>/capabilities.yaml` says about a node (architecture,
//! Compose v2, a GPU behind the `gpu` tag) and that every service's `requires` is met on each
//! node it runs on.
//!
//! A node whose capabilities.yaml failed to load is not checked against. No IO here.

use super::super::diag::Diagnostics;
use super::super::raw::line;
use super::super::Instance;
use super::{contract_file, Input};

pub(super) fn check(i: &Input, d: &mut Diagnostics) {
    for (id, host) in &i.raw.hosts {
        let Some(caps) = &host.capabilities else { continue };
        let caps_file = format!("hosts/{id}/capabilities.yaml");
        if !["x86_64", "aarch64", "armv7"].contains(&caps.arch.value.as_str()) {
            d.err(
                "capability",
                &caps_file,
                line(&caps.arch),
                "arch",
                format!("expected x86_64, aarch64 or armv7, found `{}`", caps.arch.value),
                "name the node's CPU architecture",
            );
        }
        if caps.docker.compose.value != "v2" {
            d.err(
                "capability",
                &caps_file,
                line(&caps.docker.compose),
                "docker.compose",
                format!("expected `v2`, found `{}`", caps.docker.compose.value),
                "homelab deploys with Docker Compose v2 (`docker compose`)",
            );
        }
        for c in &caps.capabilities {
            if c.value == "gpu" && caps.gpu.is_none() {
                d.err(
                    "capability",
                    &caps_file,
                    line(c),
                    "capabilities",
                    "expected a `gpu:` section for a node tagged `gpu`, found `gpu: null`",
                    "describe the GPU or drop the tag",
                );
            }
        }
    }
    for node in i.lab.nodes.values() {
        if !i.raw.capabilities_loaded(&node.id) {
            continue;
        }
        for svc_name in node.services.keys() {
            let svc = &i.lab.services[svc_name];
            let Some(raw) = i.raw.service(svc_name.as_str()) else { continue };
            let me = Instance { service: svc_name.clone(), node: node.id.clone() };
            for cap in svc.requires.iter().filter(|c| !node.capabilities.contains(*c)) {
                let l = raw.contract.requires.iter().find(|r| &r.value == cap).and_then(line);
                d.err(
                    "capability",
                    contract_file(svc_name.as_str()),
                    l,
                    "requires",
                    format!("`{me}` requires `{cap}`, but hosts/{}/capabilities.yaml does not provide it", node.id),
                    format!("place the service on a node with `{cap}`, or add the capability to that node if it has it"),
                );
            }
        }
    }
}
