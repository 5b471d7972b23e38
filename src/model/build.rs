//! Building the model: a `RawRepo` in, a `Homelab` out.
//!
//! Silent on purpose: it reports nothing, it leaves out what is broken (a node or service whose
//! name, owner or exposure is invalid, a dependency that cannot be resolved) and the checks of
//! `validate/` say why. So a tree with problems still gives the model of its sound parts, which
//! lets later checks (the graph and render checks in `crate::check`) look at those parts too.
//! A model built from a tree with problems must never be planned or applied: `model::load`
//! only returns one when there is no diagnostic. No IO here.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::load::{ExtraFile, RawRepo, RawService};
use super::names::{NodeName, ServiceName};
use super::{raw, *};

/// The model of the sound parts of `r`; `None` when there is no topology to build it on.
pub(super) fn homelab(r: &RawRepo) -> Option<Homelab> {
    let topology = r.topology.as_ref()?;
    let mut nodes = nodes(topology);
    let services = services(r, &nodes);
    hosts(r, &mut nodes, &services);
    let instances = instances(r, &nodes, &services);
    let policy = r.policy.as_ref().and_then(|p| policy(p, &nodes)).unwrap_or_else(|| Policy {
        // Stands in for a policy that is broken: it is reported, so this lab is never used
        // to plan or approve.
        plan_ttl: Duration::ZERO,
        allow_uncommitted: false,
        reviewed_branches: vec![DEFAULT_REVIEWED_BRANCH.to_owned()],
        keep_releases: DEFAULT_KEEP_RELEASES,
        default: ApprovalRule { required: 0, approvers: BTreeSet::new(), humans: 0 },
        nodes: BTreeMap::new(),
        telegram: BTreeMap::new(),
    });
    Some(Homelab {
        mesh: topology.mesh.value.clone(),
        nodes,
        services,
        policy,
        allowed_signers: r.allowed_signers.as_ref().map(|s| s.text.clone()).unwrap_or_default(),
        templates: r.templates.clone(),
        instances,
        notes: Vec::new(),
    })
}

fn nodes(t: &raw::Topology) -> BTreeMap<NodeName, Node> {
    let default_root = t.runtime_root.as_ref().map(|r| r.value.clone());
    let mut nodes = BTreeMap::new();
    for (id, raw) in &t.nodes {
        let Ok(name) = NodeName::parse(id) else { continue };
        let n = &raw.value;
        let site = t.sites.get(&n.site.value);
        let runtime_root = match &n.runtime_root {
            Some(r) => r.value.clone(),
            None => default_root.clone().unwrap_or_else(|| "/opt/homelab".to_owned()),
        };
        let docker_socket = match &n.docker_socket {
            Some(s) => s.value.clone(),
            None => "/var/run/docker.sock".to_owned(),
        };
        nodes.insert(
            name.clone(),
            Node {
                id: name,
                display_name: n.display_name.value.clone(),
                roles: n.roles.iter().map(|r| r.value.clone()).collect(),
                site: n.site.value.clone(),
                uplink: site.map(|s| s.value.uplink.value.clone()).unwrap_or_default(),
                offline_first: site.map(|s| s.value.offline_first).unwrap_or(false),
                ssh: SshTarget {
                    address: n.ssh.address.value.clone(),
                    user: n.ssh.user.value.clone(),
                    port: n.ssh.port,
                },
                // A bad address is reported by `validate::topology`; here it is left out.
                lan_address: n.lan_address.as_ref().and_then(|a| lan_address(&a.value).ok()),
                runtime_root,
                root_given: false,
                docker_socket,
                backup: n.backup.as_ref().or(t.backup.as_ref()).map(|b| {
                    crate::model::BackupTarget {
                        repository: b.value.repository.value.clone(),
                        options: b.value.options.iter().map(|o| o.value.clone()).collect(),
                    }
                }),
                snapshot_min_free: n
                    .snapshot_min_free
                    .as_ref()
                    .map_or(crate::model::DEFAULT_SNAPSHOT_MIN_FREE, |v| v.value),
                capabilities: BTreeSet::new(),
                services: BTreeMap::new(),
                overrides: BTreeMap::new(),
                runtime_files: BTreeMap::new(),
            },
        );
    }
    nodes
}

/// A node's LAN address as the topology writes it: an IPv4 or IPv6 address of one interface,
/// so not `0.0.0.0`/`::` (every address, what `lan_address` replaces), a loopback or a
/// multicast address. The error says what was expected.
pub(crate) fn lan_address(s: &str) -> Result<std::net::IpAddr, &'static str> {
    let ip: std::net::IpAddr =
        s.trim().parse().map_err(|_| "an IPv4 or IPv6 address (`192.168.1.20`, `fd00::20`)")?;
    if ip.is_unspecified() {
        return Err("the node's own address on the LAN, not every address (`0.0.0.0`, `::`)");
    }
    if ip.is_loopback() || ip.is_multicast() {
        return Err("the node's address on the LAN, not a loopback or multicast address");
    }
    Ok(ip)
}

/// The owner a contract names, when it is `all` or a node of the topology.
pub(super) fn owner(c: &raw::Contract, nodes: &BTreeMap<NodeName, Node>) -> Option<Owner> {
    if c.owner_node.value == "all" {
        return Some(Owner::All);
    }
    NodeName::parse(&c.owner_node.value).ok().filter(|n| nodes.contains_key(n)).map(Owner::Node)
}

/// A duration of the healthcheck; a broken one (reported by `validate::contract`) stands in as
/// one second so the rest of the service can still be checked.
pub(super) fn healthcheck_duration(s: &str, may_be_zero: bool) -> Option<Duration> {
    parse_duration(s).filter(|d| !d.is_zero() || may_be_zero)
}

fn healthcheck(h: &raw::Healthcheck) -> Healthcheck {
    let dur = |s: &raw::S<String>, zero| {
        healthcheck_duration(&s.value, zero).unwrap_or(Duration::from_secs(1))
    };
    Healthcheck {
        interval: dur(&h.interval, false),
        timeout: dur(&h.timeout, false),
        retries: h.retries.value,
        start_period: h.start_period.as_ref().map(|s| dur(s, true)).unwrap_or_default(),
        stable_for: h
            .stable_for
            .as_ref()
            .map(|s| dur(s, true).min(super::MAX_STABLE_FOR))
            .unwrap_or(super::DEFAULT_STABLE_FOR),
    }
}

fn services(r: &RawRepo, nodes: &BTreeMap<NodeName, Node>) -> BTreeMap<ServiceName, Service> {
    let mut out = BTreeMap::new();
    for (dir, rs) in r.services() {
        let c = &rs.contract;
        let (Ok(name), Some(owner), Some(exposure)) =
            (ServiceName::parse(dir), owner(c, nodes), Exposure::parse(&c.exposure.value))
        else {
            continue;
        };
        out.insert(name.clone(), service(name, owner, exposure, rs));
    }
    out
}

fn service(name: ServiceName, owner: Owner, exposure: Exposure, r: &RawService) -> Service {
    let c = &r.contract;
    Service {
        name,
        description: c.description.clone(),
        owner,
        exposure,
        restart_policy: c.restart_policy.value.clone(),
        healthcheck: healthcheck(&c.healthcheck.value),
        persistence_paths: c.persistence.paths.iter().map(|p| p.value.clone()).collect(),
        folders: c
            .persistence
            .folders
            .iter()
            .map(|f| Folder {
                path: f.value.path.value.clone(),
                owner: f.value.owner.as_ref().map(|o| o.value.clone()),
                mode: f.value.mode.as_ref().map(|m| m.value.clone()),
            })
            .collect(),
        env_vars: c
            .runtime
            .env_vars
            .iter()
            .map(|e| EnvVar {
                name: e.value.name.value.clone(),
                secret: e.value.secret,
                required: e.value.required,
                line: raw::line(&e.value.name),
            })
            .collect(),
        requires: c.requires.iter().map(|r| r.value.clone()).collect(),
        backup_sets: c
            .backup
            .sets
            .iter()
            .map(|s| BackupSet {
                name: s.value.name.value.clone(),
                paths: s.value.paths.iter().map(|p| p.value.clone()).collect(),
                volumes: s.value.volumes.iter().map(|v| v.value.clone()).collect(),
                critical: s.value.critical,
                stop: match &s.value.consistency {
                    Some(c) => c.value == "stop",
                    None => s.value.critical,
                },
                retain: s.value.retain.as_ref().map_or(crate::model::DEFAULT_RETAIN, |r| r.value),
                max_age: s
                    .value
                    .max_age
                    .as_ref()
                    .and_then(|m| healthcheck_duration(&m.value, false))
                    .unwrap_or(crate::model::DEFAULT_MAX_AGE),
            })
            .collect(),
        zigbee: c.zigbee.as_ref().map(|z| Zigbee {
            coordinator: z.value.coordinator.value.clone(),
            port: z.value.port.value.clone(),
            adapter: z.value.adapter.value.clone(),
        }),
        vars: c.vars.clone(),
        host_paths: c.host_paths.iter().map(|p| p.value.clone()).collect(),
        // Only names the contract's check accepts: they reach a script on the node.
        networks: c
            .networks
            .iter()
            .map(|n| n.value.clone())
            .filter(|n| crate::model::network_name_ok(n))
            .collect(),
        compose: r.compose.clone(),
        healthcheck_script: r.healthcheck.clone(),
        env_example: r.env_example.clone(),
        templates: c.templates.as_ref().map(|t| t.iter().map(|n| n.value.clone()).collect()),
        files: r
            .extra
            .iter()
            .map(|f| service_file(f, &format!("services/{}/", r.compose_dir())))
            .collect(),
    }
}

/// A file that ships with a service: its name in the release is its path under the service's
/// folder, without a `.j2` suffix, which marks it a template.
pub(crate) fn service_file(f: &ExtraFile, base: &str) -> ServiceFile {
    let rel = f.source.path.strip_prefix(base).unwrap_or(&f.source.path);
    let (name, template) = match rel.strip_suffix(".j2") {
        // A binary file is never a template.
        Some(stem) if f.binary.is_none() => (stem.to_owned(), true),
        _ => (rel.to_owned(), false),
    };
    ServiceFile {
        name,
        source: f.source.clone(),
        template,
        mode: if f.executable { 0o755 } else { 0o644 },
        binary: f.binary.clone(),
    }
}

/// Capabilities, wanted services and overrides of each node, from `hosts/`.
fn hosts(
    r: &RawRepo,
    nodes: &mut BTreeMap<NodeName, Node>,
    services: &BTreeMap<ServiceName, Service>,
) {
    for (id, host) in &r.hosts {
        let Some(node) = nodes.get_mut(id) else { continue };
        if let Some(caps) = &host.capabilities {
            node.capabilities = caps.capabilities.iter().map(|c| c.value.clone()).collect();
        }
        if let Some(hs) = &host.services {
            for s in &hs.services {
                let Some(svc) =
                    ServiceName::parse(&s.value.name.value).ok().and_then(|n| services.get(&n))
                else {
                    continue;
                };
                // A service listed twice is reported by `validate::naming`; the last one wins.
                node.services.insert(
                    svc.name.clone(),
                    HostService { exposure: svc.exposure, vars: s.value.vars.clone() },
                );
            }
        }
        for dir in &host.runtime {
            // A lookup, not a scan of the node's services per runtime folder.
            let Some(svc) =
                ServiceName::parse(&dir.name).ok().filter(|s| node.services.contains_key(s))
            else {
                continue;
            };
            if let Some(Ok(src)) = &dir.override_file {
                node.overrides.insert(svc.clone(), src.clone());
            }
            let base = format!("hosts/{id}/runtime/{}/", dir.name);
            let files: Vec<ServiceFile> = dir
                .extra
                .iter()
                .filter_map(|f| f.as_ref().ok())
                .map(|f| service_file(f, &base))
                .collect();
            if !files.is_empty() {
                node.runtime_files.insert(svc, files);
            }
        }
    }
}

/// Releases kept per service when `policy.yaml` does not say.
pub const DEFAULT_KEEP_RELEASES: u32 = 5;

fn policy(p: &raw::Policy, nodes: &BTreeMap<NodeName, Node>) -> Option<Policy> {
    let rule = |r: &raw::S<raw::ApprovalRule>| ApprovalRule {
        required: r.value.required.value,
        approvers: r.value.approvers.iter().map(|a| a.value.clone()).collect(),
        // By default one approval must be a human's: a bot never approves alone.
        humans: r.value.humans.as_ref().map_or(1.min(r.value.required.value), |h| h.value),
    };
    let telegram = p
        .telegram
        .iter()
        .flat_map(|t| &t.value.users)
        .map(|u| {
            let u = &u.value;
            let grant = TelegramGrant {
                name: u.name.clone(),
                nodes: u
                    .nodes
                    .iter()
                    .filter_map(|n| NodeName::from_cli(&n.value).ok())
                    .filter(|n| nodes.contains_key(n))
                    .collect(),
                changes: u
                    .changes
                    .iter()
                    .map(|c| c.value.clone())
                    .filter(|c| CHANGE_KINDS.contains(&c.as_str()))
                    .collect(),
            };
            (u.id.value, grant)
        })
        .collect();
    let per_node = p
        .approvals
        .nodes
        .iter()
        .filter_map(|(name, r)| {
            NodeName::parse(name).ok().filter(|n| nodes.contains_key(n)).map(|n| (n, rule(r)))
        })
        .collect();
    Some(Policy {
        plan_ttl: parse_duration(&p.plan_ttl.value).filter(|d| !d.is_zero())?,
        allow_uncommitted: p.allow_uncommitted,
        reviewed_branches: match &p.reviewed_branches {
            Some(b) => b.value.iter().map(|b| b.value.clone()).collect(),
            None => vec![DEFAULT_REVIEWED_BRANCH.to_owned()],
        },
        keep_releases: p.keep_releases.as_ref().map_or(DEFAULT_KEEP_RELEASES, |k| k.value.max(2)),
        default: rule(&p.approvals.default),
        nodes: per_node,
        telegram,
    })
}

/// Where a dependency of `svc@node` leads, or why it leads nowhere. Shared by the build and by
/// `validate::dependencies`, so both read a dependency the same way.
pub(super) enum Resolved<'a> {
    /// No loaded service has that name.
    UnknownService,
    /// `node:` names no node of the topology.
    UnknownNode,
    /// The instance depends on itself.
    Itself,
    /// The target node does not list the service.
    NotOnNode(&'a Service, NodeName),
    To(&'a Service, Instance),
}

pub(super) fn resolve<'a>(
    nodes: &BTreeMap<NodeName, Node>,
    services: &'a BTreeMap<ServiceName, Service>,
    svc: &ServiceName,
    node: &NodeName,
    d: &raw::Dependency,
) -> Resolved<'a> {
    let Some(dep) = ServiceName::parse(&d.service.value).ok().and_then(|n| services.get(&n)) else {
        return Resolved::UnknownService;
    };
    let target = match (&d.node, &dep.owner) {
        (Some(n), _) => match NodeName::from_cli(&n.value).ok().filter(|n| nodes.contains_key(n)) {
            Some(n) => n,
            None => return Resolved::UnknownNode,
        },
        (None, Owner::Node(owner)) => owner.clone(),
        (None, Owner::All) => node.clone(),
    };
    if dep.name == *svc && target == *node {
        return Resolved::Itself;
    }
    if !nodes[&target].services.contains_key(&dep.name) {
        return Resolved::NotOnNode(dep, target);
    }
    Resolved::To(dep, Instance { service: dep.name.clone(), node: target })
}

/// Places every service on its nodes and resolves its dependencies to instances.
fn instances(
    r: &RawRepo,
    nodes: &BTreeMap<NodeName, Node>,
    services: &BTreeMap<ServiceName, Service>,
) -> BTreeMap<Instance, Vec<Instance>> {
    let mut out = BTreeMap::new();
    for node in nodes.values() {
        for svc in node.services.keys() {
            let Some(rs) = r.service(svc.as_str()) else { continue };
            let mut deps: Vec<Instance> = rs
                .contract
                .dependencies
                .iter()
                .filter_map(|d| match resolve(nodes, services, svc, &node.id, &d.value) {
                    Resolved::To(_, inst) => Some(inst),
                    _ => None,
                })
                .collect();
            deps.sort();
            deps.dedup();
            out.insert(Instance { service: svc.clone(), node: node.id.clone() }, deps);
        }
    }
    out
}
