//! The compose rules, on a compose file as rendered for one instance: the compose services of a
//! service carry its name, `container_name` equals the compose service name, `restart` follows
//! the contract's `restart_policy`, and the Zigbee serial port is the contract's.
//!
//! Pure: it takes the rendered text and never renders itself (rendering is above `model`;
//! `crate::check` renders each instance and calls this). No IO here.

use std::path::Path;

use super::super::diag::Diagnostics;
use super::super::load::parse_yaml;
use super::super::raw::{self, line};
use super::super::{Instance, Service};
use super::{is_tcp_endpoint, literal_assignment, RESTART_POLICIES};

/// Which of an instance's compose files `check` looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComposeFile {
    /// `services/<svc>/docker-compose.yml`.
    Service,
    /// `hosts/<node>/runtime/<svc>/docker-compose.override.yml`.
    Override,
}

/// Checks `text`, the file at `path` as rendered for `inst` of `svc`.
pub fn check(
    svc: &Service,
    inst: &Instance,
    kind: ComposeFile,
    path: &str,
    text: &str,
    d: &mut Diagnostics,
) {
    let name = svc.name.as_str();
    let compose: raw::Compose = match parse_yaml(Path::new(path), text) {
        Ok(c) => c,
        Err(mut e) => {
            e.message = format!("rendered for `{inst}`: {}", e.message);
            d.push(e);
            return;
        }
    };
    let is_override = kind == ComposeFile::Override;
    // A restart policy or Zigbee port the contract gets wrong is reported on the contract;
    // comparing the compose file with it would only repeat that problem.
    let restart_known = RESTART_POLICIES.contains(&svc.restart_policy.as_str());
    let zigbee = svc.zigbee.as_ref().filter(|z| is_tcp_endpoint(&z.port));
    if !is_override && !compose.services.contains_key(name) {
        d.err(
            "container-name",
            path,
            None,
            "services",
            format!(
                "expected a compose service named `{name}`, found {}",
                compose.services.keys().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
            ),
            format!("name the compose service `{name}`, as the service"),
        );
    }
    for (key, cs) in &compose.services {
        let field = format!("services.{key}");
        if key != name && !key.starts_with(&format!("{name}-")) {
            d.err(
                "container-name",
                path,
                line(cs),
                field.clone(),
                format!("expected `{name}` or `{name}-<part>`, found `{key}`"),
                "compose services of a service carry its name",
            );
        }
        if is_override {
            if let Some(c) = &cs.value.container_name {
                if c.value != *key {
                    d.err(
                        "container-name",
                        path,
                        line(c),
                        format!("{field}.container_name"),
                        format!("expected `{key}`, found `{}`", c.value),
                        "an override may not rename the container",
                    );
                }
            }
            if let Some(r) = cs.value.restart.as_ref().filter(|_| restart_known) {
                if r.value != svc.restart_policy {
                    d.err(
                        "restart",
                        path,
                        line(r),
                        format!("{field}.restart"),
                        format!(
                            "expected `{}` (the contract's restart_policy), found `{}`",
                            svc.restart_policy, r.value
                        ),
                        "change restart_policy in service.yaml instead",
                    );
                }
            }
            continue;
        }
        match &cs.value.container_name {
            Some(c) if c.value == *key => {}
            Some(c) => d.err(
                "container-name",
                path,
                line(c),
                format!("{field}.container_name"),
                format!("expected `{key}`, found `{}`", c.value),
                format!("set `container_name: {key}`: container names match service names"),
            ),
            None => d.err(
                "container-name",
                path,
                line(cs),
                format!("{field}.container_name"),
                format!("expected `container_name: {key}`, found none"),
                format!("add `container_name: {key}`"),
            ),
        }
        if !restart_known {
            continue;
        }
        match &cs.value.restart {
            Some(r) if r.value == svc.restart_policy => {}
            Some(r) => d.err(
                "restart",
                path,
                line(r),
                format!("{field}.restart"),
                format!(
                    "expected `{}` (the contract's restart_policy), found `{}`",
                    svc.restart_policy, r.value
                ),
                format!(
                    "set `restart: {}` or change restart_policy in service.yaml",
                    svc.restart_policy
                ),
            ),
            None => d.err(
                "restart",
                path,
                line(cs),
                format!("{field}.restart"),
                format!("expected `restart: {}`, found none", svc.restart_policy),
                format!("add `restart: {}`", svc.restart_policy),
            ),
        }
    }
    if let Some(z) = zigbee {
        for (n, l) in text.lines().enumerate() {
            if let Some(v) = literal_assignment(l, "ZIGBEE2MQTT_CONFIG_SERIAL_PORT") {
                if v != z.port {
                    d.err(
                        "zigbee",
                        path,
                        Some(n as u64 + 1),
                        "ZIGBEE2MQTT_CONFIG_SERIAL_PORT",
                        format!("expected `{}` (zigbee.port in service.yaml), found `{v}`", z.port),
                        "take the port from the contract",
                    );
                }
            }
        }
    }
}
