//! The rules of the chelsty site: offline-first sites never depend at runtime on a node of
//! another site, and the Zigbee coordinator is the SLZB-06U over TCP (`ezsp`), never a serial
//! device (`/dev/ttyUSB*`, `/dev/ttyACM*`) in any file that reaches a node.
//!
//! The serial-device rule reads the files as written; the rendered compose files are checked
//! for the Zigbee port by `compose.rs`. No IO here.

use super::super::build::{resolve, Resolved};
use super::super::diag::Diagnostics;
use super::super::raw::{self, line, S};
use super::super::{Instance, Source};
use super::{contract_file, is_tcp_endpoint, Input};

const ZIGBEE_COORDINATOR: &str = "SLZB-06U";
const ZIGBEE_ADAPTER: &str = "ezsp";

pub(super) fn check(i: &Input, d: &mut Diagnostics) {
    for (dir, rs) in i.raw.services() {
        let file = contract_file(dir);
        let c = &rs.contract;
        match &c.zigbee {
            Some(z) => zigbee(d, &file, z),
            None if dir == "zigbee2mqtt" => d.err(
                "zigbee",
                &file,
                line(&c.name),
                "zigbee",
                "expected a `zigbee:` section naming the SLZB-06U coordinator over TCP",
                "add `zigbee: {coordinator: SLZB-06U, port: tcp://192.168.1.105:6638, adapter: ezsp}`",
            ),
            None => {}
        }
        for src in [&rs.compose, &rs.healthcheck, &rs.env_example, &rs.contract_source] {
            serial_devices(d, src);
        }
    }
    for node in i.lab.nodes.values() {
        for src in node.overrides.values() {
            serial_devices(d, src);
        }
    }
    offline_first(i, d);
}

fn zigbee(d: &mut Diagnostics, file: &str, z: &S<raw::Zigbee>) {
    let z = &z.value;
    if z.coordinator.value != ZIGBEE_COORDINATOR {
        d.err(
            "zigbee",
            file,
            line(&z.coordinator),
            "zigbee.coordinator",
            format!("expected `{ZIGBEE_COORDINATOR}`, found `{}`", z.coordinator.value),
            "the chelsty coordinator is the SLZB-06U",
        );
    }
    if z.adapter.value != ZIGBEE_ADAPTER {
        d.err(
            "zigbee",
            file,
            line(&z.adapter),
            "zigbee.adapter",
            format!("expected `{ZIGBEE_ADAPTER}`, found `{}`", z.adapter.value),
            "the SLZB-06U speaks `ezsp`",
        );
    }
    if !is_tcp_endpoint(&z.port.value) {
        d.err(
            "zigbee",
            file,
            line(&z.port),
            "zigbee.port",
            format!(
                "expected the coordinator over TCP (`tcp://<host>:<port>`), found `{}`",
                z.port.value
            ),
            "use `tcp://192.168.1.105:6638`; never a serial device such as /dev/ttyUSB0",
        );
    }
}

fn serial_devices(d: &mut Diagnostics, src: &Source) {
    for (n, text) in src.text.lines().enumerate() {
        if text.contains("/dev/ttyUSB") || text.contains("/dev/ttyACM") {
            d.err(
                "zigbee",
                &src.path,
                Some(n as u64 + 1),
                "",
                "expected the Zigbee coordinator over TCP, found a serial device (`/dev/ttyUSB*`/`/dev/ttyACM*`)",
                "use the SLZB-06U at `tcp://192.168.1.105:6638` with adapter `ezsp`; never /dev/ttyUSB0",
            );
        }
    }
}

/// Services on an offline-first site keep working when its uplink is down: every dependency
/// stays on the site.
fn offline_first(i: &Input, d: &mut Diagnostics) {
    let (nodes, services) = (&i.lab.nodes, &i.lab.services);
    for node in nodes.values().filter(|n| n.offline_first) {
        for svc_name in node.services.keys() {
            let Some(raw) = i.raw.service(svc_name.as_str()) else { continue };
            let me = Instance { service: svc_name.clone(), node: node.id.clone() };
            for (n, dep) in raw.contract.dependencies.iter().enumerate() {
                let Resolved::To(dep_svc, target) =
                    resolve(nodes, services, svc_name, &node.id, &dep.value)
                else {
                    continue;
                };
                let target_node = &nodes[&target.node];
                if target_node.site != node.site {
                    d.err(
                        "offline-first",
                        contract_file(svc_name.as_str()),
                        line(&dep.value.service),
                        format!("dependencies[{n}]"),
                        format!(
                            "`{me}` runs on the offline-first site `{}` but depends on `{}@{}` at site `{}`",
                            node.site, dep_svc.name, target.node, target_node.site
                        ),
                        format!("services on `{}` must keep working when the LTE link is down: depend only on services of the same site", node.site),
                    );
                }
            }
        }
    }
}
