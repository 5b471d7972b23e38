//! Validation: raw YAML types in, the model out, every broken rule collected as a diagnostic.
//!
//! Each rule of the guide and of DESIGN.md §2 is one check here, named by a stable rule id
//! (`layout`, `naming`, `owner-node`, ...). Checks never stop at the first problem: a run
//! reports all of them, sorted by file and line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_saphyr::Spanned;

use super::diag::{Diagnostic, Diagnostics};
use super::load::{parse_yaml, Repo};
use super::names::{kebab_problem, NodeName, ServiceName};
use super::{raw, *};

const SERVICE_FILES: [&str; 5] =
    ["docker-compose.yml", "service.yaml", "README.md", "env.example", "healthcheck.sh"];
const OVERRIDE_FILE: &str = "docker-compose.override.yml";
const RESTART_POLICIES: [&str; 4] = ["no", "always", "on-failure", "unless-stopped"];
const UPLINKS: [&str; 5] = ["fiber", "cable", "dsl", "lte", "other"];
const ZIGBEE_COORDINATOR: &str = "SLZB-06U";
const ZIGBEE_ADAPTER: &str = "ezsp";

fn line<T>(s: &Spanned<T>) -> Option<u64> {
    Some(s.referenced.line()).filter(|l| *l > 0)
}

pub(super) fn load(path: &Path) -> Result<Homelab, Vec<Diagnostic>> {
    let repo = Repo::open(path).map_err(|d| vec![d])?;
    let mut v = Validator {
        repo,
        diags: Diagnostics::default(),
        service_dirs: BTreeSet::new(),
        caps_loaded: BTreeSet::new(),
        services_loaded: BTreeSet::new(),
    };
    let lab = v.run();
    if v.diags.is_empty() {
        if let Some(lab) = lab {
            return Ok(lab);
        }
    }
    Err(v.diags.into_sorted())
}

struct Validator {
    repo: Repo,
    diags: Diagnostics,
    /// Every folder under `services/`, loaded or not: a broken one is reported where it
    /// breaks, not again wherever its name is used.
    service_dirs: BTreeSet<String>,
    /// Nodes whose `capabilities.yaml` / `services.yaml` were read: checks against a file that
    /// failed to load would only repeat that failure.
    caps_loaded: BTreeSet<NodeName>,
    services_loaded: BTreeSet<NodeName>,
}

struct RawService {
    dir: String,
    contract: raw::Contract,
    compose: Source,
    healthcheck: Source,
    env_example: Source,
}

impl Validator {
    fn err(
        &mut self,
        rule: &'static str,
        file: impl AsRef<Path>,
        line: Option<u64>,
        field: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.diags.push(Diagnostic::new(rule, file, line, field, message, fix));
    }

    fn yaml<T: serde::de::DeserializeOwned>(&mut self, rel: &str) -> Option<T> {
        match self.repo.read_yaml::<T>(Path::new(rel)) {
            Ok((value, _)) => Some(value),
            Err(d) => {
                self.diags.push(d);
                None
            }
        }
    }

    fn source(&mut self, rel: String) -> Option<Source> {
        match self.repo.read_text(Path::new(&rel)) {
            Ok(text) => Some(Source { path: rel, text }),
            Err(d) => {
                self.diags.push(d);
                None
            }
        }
    }

    /// Entries of a folder, hidden ones (`.gitkeep`, editor files) left out.
    fn list(&mut self, rel: &str) -> Vec<String> {
        let mut names = self.list_all(rel);
        names.retain(|n| !n.starts_with('.'));
        names
    }

    fn list_all(&mut self, rel: &str) -> Vec<String> {
        match self.repo.list_dir(Path::new(rel)) {
            Ok(names) => names,
            Err(d) => {
                self.diags.push(d);
                Vec::new()
            }
        }
    }

    fn run(&mut self) -> Option<Homelab> {
        let mut missing = false;
        for dir in ["inventory", "hosts", "services"] {
            if !self.repo.is_dir(Path::new(dir)) {
                missing = true;
                self.err(
                    "layout",
                    dir,
                    None,
                    "",
                    format!("expected the folder `{dir}/` in the repository, found none"),
                    "run homelab from the root of the homelab repository (or pass `--repo`); \
                     a homelab needs `inventory/`, `hosts/` and `services/`",
                );
            }
        }
        if missing {
            return None;
        }
        let topology = self.yaml::<raw::Topology>("inventory/topology.yaml");
        let policy = self.yaml::<raw::Policy>("inventory/policy.yaml");
        let signers = self.source("inventory/allowed_signers".into());
        let templates = self.templates();
        let topology = topology?;
        let mut nodes = self.nodes(&topology);
        let raw_services = self.raw_services();
        let services = self.services(&raw_services, &nodes);
        self.hosts(&mut nodes, &services, &raw_services);
        let principals = signers.as_ref().map(|s| signer_principals(&s.text)).unwrap_or_default();
        let policy = policy.and_then(|p| self.policy(&p, &nodes, &principals));
        let instances = self.instances(&nodes, &services, &raw_services);
        self.secrets_and_zigbee(&nodes, &services, &raw_services);
        let lab = Homelab {
            mesh: topology.mesh.value.clone(),
            nodes,
            services,
            policy: policy?,
            allowed_signers: signers?.text,
            templates,
            instances,
        };
        if self.diags.is_empty() {
            self.cycles(&lab, &raw_services);
        }
        if self.diags.is_empty() {
            self.rendering(&lab);
        }
        Some(lab)
    }

    fn templates(&mut self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if !self.repo.exists(Path::new("templates")) {
            return out;
        }
        let mut stack = vec![PathBuf::from("templates")];
        while let Some(dir) = stack.pop() {
            for name in self.list(&diag::slash_path(&dir)) {
                let rel = dir.join(&name);
                if self.repo.is_dir(&rel) {
                    stack.push(rel);
                } else if name != "README.md" {
                    if let Some(src) = self.source(diag::slash_path(&rel)) {
                        let key = diag::slash_path(rel.strip_prefix("templates").unwrap_or(&rel));
                        out.insert(key, src.text);
                    }
                }
            }
        }
        out
    }

    fn nodes(&mut self, t: &raw::Topology) -> BTreeMap<NodeName, Node> {
        const FILE: &str = "inventory/topology.yaml";
        if t.mesh.value != "tailscale" {
            self.err(
                "topology",
                FILE,
                line(&t.mesh),
                "mesh",
                format!("expected `tailscale`, found `{}`", t.mesh.value),
                "every node is reached over the Tailscale mesh: set `mesh: tailscale`",
            );
        }
        let default_root = t.runtime_root.as_ref().map(|r| {
            self.check_root(FILE, r, "runtime_root");
            r.value.clone()
        });
        for (name, site) in &t.sites {
            if let Some(p) = kebab_problem(name) {
                self.err(
                    "naming",
                    FILE,
                    line(site),
                    format!("sites.{name}"),
                    format!("expected {p}, found `{name}`"),
                    "rename the site",
                );
            }
            if !UPLINKS.contains(&site.value.uplink.value.as_str()) {
                self.err(
                    "topology",
                    FILE,
                    line(&site.value.uplink),
                    format!("sites.{name}.uplink"),
                    format!(
                        "expected one of {}, found `{}`",
                        UPLINKS.join(", "),
                        site.value.uplink.value
                    ),
                    "name the kind of uplink the site has",
                );
            }
        }
        let mut nodes = BTreeMap::new();
        for (id, raw) in &t.nodes {
            let n = &raw.value;
            let field = |f: &str| format!("nodes.{id}.{f}");
            let name = match NodeName::parse(id) {
                Ok(name) => Some(name),
                Err(p) => {
                    self.err(
                        "naming",
                        FILE,
                        line(raw),
                        format!("nodes.{id}"),
                        format!("expected a node id in {p}, found `{id}`"),
                        format!(
                            "use `{}` as the id and put the capitals in `display_name`",
                            id.to_ascii_lowercase()
                        ),
                    );
                    None
                }
            };
            let upper = id.to_ascii_uppercase();
            if n.display_name.value != upper {
                self.err(
                    "naming",
                    FILE,
                    line(&n.display_name),
                    field("display_name"),
                    format!(
                        "expected `{upper}` (the id in ALL CAPS), found `{}`",
                        n.display_name.value
                    ),
                    format!("set `display_name: {upper}`"),
                );
            }
            for role in &n.roles {
                if let Some(p) = kebab_problem(&role.value) {
                    self.err(
                        "naming",
                        FILE,
                        line(role),
                        field("roles"),
                        format!("expected a role in {p}, found `{}`", role.value),
                        "write roles in kebab-case",
                    );
                }
            }
            let site = t.sites.get(&n.site.value);
            if site.is_none() {
                let known: Vec<_> = t.sites.keys().map(String::as_str).collect();
                self.err(
                    "topology",
                    FILE,
                    line(&n.site),
                    field("site"),
                    format!(
                        "expected one of the sites ({}), found `{}`",
                        known.join(", "),
                        n.site.value
                    ),
                    "declare the site under `sites:` or fix the name",
                );
            }
            if n.ssh.address.value.trim().is_empty()
                || n.ssh.address.value.starts_with('-')
                || n.ssh.address.value.contains(char::is_whitespace)
            {
                self.err(
                    "topology",
                    FILE,
                    line(&n.ssh.address),
                    field("ssh.address"),
                    format!("expected a host name or IP address, found `{}`", n.ssh.address.value),
                    "set the node's address on the mesh",
                );
            }
            if let Some(p) = user_problem(&n.ssh.user.value) {
                self.err(
                    "topology",
                    FILE,
                    line(&n.ssh.user),
                    field("ssh.user"),
                    format!("expected {p}, found `{}`", n.ssh.user.value),
                    "set a plain Unix user name",
                );
            }
            let root = match &n.runtime_root {
                Some(r) => {
                    self.check_root(FILE, r, &field("runtime_root"));
                    r.value.clone()
                }
                None => default_root.clone().unwrap_or_else(|| "/opt/homelab".to_owned()),
            };
            let docker_socket = match &n.docker_socket {
                Some(s) => {
                    self.check_root(FILE, s, &field("docker_socket"));
                    s.value.clone()
                }
                None => "/var/run/docker.sock".to_owned(),
            };
            if let Some(name) = name {
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
                        runtime_root: root,
                        docker_socket,
                        capabilities: BTreeSet::new(),
                        services: BTreeMap::new(),
                        overrides: BTreeMap::new(),
                    },
                );
            }
        }
        nodes
    }

    fn check_root(&mut self, file: &str, r: &Spanned<String>, field: &str) {
        let ok = r.value.starts_with('/')
            && !r.value.split('/').any(|c| c == ".." || c == ".")
            && r.value.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+@,=~ ".contains(c));
        if !ok {
            self.err(
                "topology",
                file,
                line(r),
                field,
                format!(
                    "expected an absolute path of letters, digits, spaces and `/._-+@,=~`, found `{}`",
                    r.value
                ),
                "use a plain absolute path such as `/opt/homelab`",
            );
        }
    }

    fn raw_services(&mut self) -> BTreeMap<String, RawService> {
        let mut out = BTreeMap::new();
        for dir in self.list("services") {
            let base = format!("services/{dir}");
            if !self.repo.is_dir(Path::new(&base)) {
                self.err(
                    "layout",
                    &base,
                    None,
                    "",
                    "expected a service folder, found a file",
                    "move it into a folder `services/<service>/`",
                );
                continue;
            }
            self.service_dirs.insert(dir.clone());
            let mut complete = true;
            for file in SERVICE_FILES {
                if !self.repo.exists(Path::new(&format!("{base}/{file}"))) {
                    complete = false;
                    self.err(
                        "layout",
                        format!("{base}/{file}"),
                        None,
                        "",
                        format!("expected the service file `{file}`, found none"),
                        format!("every service has {}; add `{file}`", SERVICE_FILES.join(", ")),
                    );
                }
            }
            if !complete {
                continue;
            }
            let contract = self.yaml::<raw::Contract>(&format!("{base}/service.yaml"));
            let compose = self.source(format!("{base}/docker-compose.yml"));
            let healthcheck = self.source(format!("{base}/healthcheck.sh"));
            let env_example = self.source(format!("{base}/env.example"));
            // README.md only has to exist and be readable text.
            let _ = self.source(format!("{base}/README.md"));
            if let (Some(contract), Some(compose), Some(healthcheck), Some(env_example)) =
                (contract, compose, healthcheck, env_example)
            {
                out.insert(
                    dir.clone(),
                    RawService { dir, contract, compose, healthcheck, env_example },
                );
            }
        }
        out
    }

    fn services(
        &mut self,
        raws: &BTreeMap<String, RawService>,
        nodes: &BTreeMap<NodeName, Node>,
    ) -> BTreeMap<ServiceName, Service> {
        let mut out = BTreeMap::new();
        for r in raws.values() {
            let file = format!("services/{}/service.yaml", r.dir);
            let c = &r.contract;
            let name = match ServiceName::parse(&r.dir) {
                Ok(n) => Some(n),
                Err(p) => {
                    self.err(
                        "naming",
                        format!("services/{}", r.dir),
                        None,
                        "",
                        format!("expected a service name in {p}, found `{}`", r.dir),
                        "rename the folder in kebab-case",
                    );
                    None
                }
            };
            if c.name.value != r.dir {
                self.err(
                    "naming",
                    &file,
                    line(&c.name),
                    "name",
                    format!("expected `{}` (the folder's name), found `{}`", r.dir, c.name.value),
                    format!("set `name: {}` or rename the folder", r.dir),
                );
            }
            let owner = if c.owner_node.value == "all" {
                Some(Owner::All)
            } else {
                match NodeName::parse(&c.owner_node.value) {
                    Ok(n) if nodes.contains_key(&n) => Some(Owner::Node(n)),
                    _ => {
                        let known: Vec<_> = nodes.keys().map(|n| n.as_str()).collect();
                        self.err(
                            "owner-node",
                            &file,
                            line(&c.owner_node),
                            "owner_node",
                            format!("expected a node of inventory/topology.yaml ({}) or `all`, found `{}`", known.join(", "), c.owner_node.value),
                            "name the node that runs this service",
                        );
                        None
                    }
                }
            };
            let exposure = self.exposure(&file, &c.exposure, "exposure");
            if !RESTART_POLICIES.contains(&c.restart_policy.value.as_str()) {
                self.err(
                    "restart",
                    &file,
                    line(&c.restart_policy),
                    "restart_policy",
                    format!(
                        "expected one of {}, found `{}`",
                        RESTART_POLICIES.join(", "),
                        c.restart_policy.value
                    ),
                    "the guide's default is `unless-stopped`",
                );
            }
            let healthcheck = self.healthcheck(&file, &c.healthcheck);
            for (i, p) in c.persistence.paths.iter().enumerate() {
                self.check_rel_path(&file, p, &format!("persistence.paths[{i}]"));
            }
            let mut seen = BTreeSet::new();
            for (i, e) in c.runtime.env_vars.iter().enumerate() {
                let n = &e.value.name.value;
                let ok = !n.is_empty()
                    && !n.as_bytes()[0].is_ascii_digit()
                    && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if !ok {
                    self.err("naming", &file, line(&e.value.name), format!("runtime.env_vars[{i}].name"), format!("expected an environment variable name (letters, digits, `_`), found `{n}`"), "rename the variable");
                }
                if !seen.insert(n.clone()) {
                    self.err(
                        "naming",
                        &file,
                        line(&e.value.name),
                        format!("runtime.env_vars[{i}].name"),
                        format!("`{n}` is declared twice"),
                        "declare each variable once",
                    );
                }
            }
            for (i, set) in c.backup.sets.iter().enumerate() {
                if let Some(p) = kebab_problem(&set.value.name.value) {
                    self.err(
                        "naming",
                        &file,
                        line(&set.value.name),
                        format!("backup.sets[{i}].name"),
                        format!("expected {p}, found `{}`", set.value.name.value),
                        "name backup sets in kebab-case",
                    );
                }
                if set.value.paths.is_empty() {
                    self.err(
                        "backup",
                        &file,
                        line(set),
                        format!("backup.sets[{i}].paths"),
                        "expected at least one path",
                        "list what the set backs up",
                    );
                }
                for (j, p) in set.value.paths.iter().enumerate() {
                    self.check_rel_path(&file, p, &format!("backup.sets[{i}].paths[{j}]"));
                }
            }
            let zigbee = c.zigbee.as_ref().map(|z| self.zigbee(&file, z));
            if zigbee.is_none() && r.dir == "zigbee2mqtt" {
                self.err(
                    "zigbee",
                    &file,
                    line(&c.name),
                    "zigbee",
                    "expected a `zigbee:` section naming the SLZB-06U coordinator over TCP",
                    "add `zigbee: {coordinator: SLZB-06U, port: tcp://192.168.1.105:6638, adapter: ezsp}`",
                );
            }
            if let (Some(name), Some(owner), Some(exposure)) = (name, owner, exposure) {
                out.insert(
                    name.clone(),
                    Service {
                        name,
                        description: c.description.clone(),
                        owner,
                        exposure,
                        restart_policy: c.restart_policy.value.clone(),
                        healthcheck,
                        persistence_paths: c
                            .persistence
                            .paths
                            .iter()
                            .map(|p| p.value.clone())
                            .collect(),
                        env_vars: c
                            .runtime
                            .env_vars
                            .iter()
                            .map(|e| EnvVar {
                                name: e.value.name.value.clone(),
                                secret: e.value.secret,
                                required: e.value.required,
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
                                critical: s.value.critical,
                            })
                            .collect(),
                        zigbee,
                        vars: c.vars.clone(),
                        compose: r.compose.clone(),
                        healthcheck_script: r.healthcheck.clone(),
                        env_example: r.env_example.clone(),
                    },
                );
            }
        }
        out
    }

    fn exposure(&mut self, file: &str, e: &Spanned<String>, field: &str) -> Option<Exposure> {
        let parsed = Exposure::parse(&e.value);
        if parsed.is_none() {
            let all: Vec<_> = Exposure::ALL.iter().map(|(n, _)| *n).collect();
            self.err(
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

    fn healthcheck(&mut self, file: &str, h: &Spanned<raw::Healthcheck>) -> Healthcheck {
        let dur = |v: &mut Self, s: &Spanned<String>, f: &str| match parse_duration(&s.value) {
            Some(d) if !d.is_zero() || f == "healthcheck.start_period" => d,
            _ => {
                v.err(
                    "healthcheck",
                    file,
                    line(s),
                    f,
                    format!("expected a duration such as `30s` or `5m`, found `{}`", s.value),
                    "write a whole number followed by s, m, h or d",
                );
                Duration::from_secs(1)
            }
        };
        let interval = dur(self, &h.value.interval, "healthcheck.interval");
        let timeout = dur(self, &h.value.timeout, "healthcheck.timeout");
        let start_period = h
            .value
            .start_period
            .as_ref()
            .map(|s| dur(self, s, "healthcheck.start_period"))
            .unwrap_or_default();
        if timeout > interval {
            self.err(
                "healthcheck",
                file,
                line(&h.value.timeout),
                "healthcheck.timeout",
                format!(
                    "expected a timeout no longer than the interval ({}), found `{}`",
                    h.value.interval.value, h.value.timeout.value
                ),
                "shorten the timeout or lengthen the interval",
            );
        }
        let retries = h.value.retries.value;
        if retries == 0 || retries > 100 {
            self.err(
                "healthcheck",
                file,
                line(&h.value.retries),
                "healthcheck.retries",
                format!("expected 1 to 100 retries, found {retries}"),
                "retry a failing check a few times",
            );
        }
        Healthcheck { interval, timeout, retries, start_period }
    }

    fn check_rel_path(&mut self, file: &str, p: &Spanned<String>, field: &str) {
        let v = &p.value;
        let ok = !v.is_empty()
            && !v.starts_with('/')
            && !v.split('/').any(|c| c == ".." || c.is_empty() || c == ".");
        if !ok {
            self.err(
                "persistence",
                file,
                line(p),
                field,
                format!(
                    "expected a path relative to the runtime root (e.g. `data/<svc>`), found `{v}`"
                ),
                "write the path relative to the node's runtime root, without `..`",
            );
        }
    }

    fn zigbee(&mut self, file: &str, z: &Spanned<raw::Zigbee>) -> Zigbee {
        let z = &z.value;
        if z.coordinator.value != ZIGBEE_COORDINATOR {
            self.err(
                "zigbee",
                file,
                line(&z.coordinator),
                "zigbee.coordinator",
                format!("expected `{ZIGBEE_COORDINATOR}`, found `{}`", z.coordinator.value),
                "the chelsty coordinator is the SLZB-06U",
            );
        }
        if z.adapter.value != ZIGBEE_ADAPTER {
            self.err(
                "zigbee",
                file,
                line(&z.adapter),
                "zigbee.adapter",
                format!("expected `{ZIGBEE_ADAPTER}`, found `{}`", z.adapter.value),
                "the SLZB-06U speaks `ezsp`",
            );
        }
        if !is_tcp_endpoint(&z.port.value) {
            self.err(
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
        Zigbee {
            coordinator: z.coordinator.value.clone(),
            port: z.port.value.clone(),
            adapter: z.adapter.value.clone(),
        }
    }

    /// Reads `hosts/`: capabilities, the services each node wants, and its overrides.
    fn hosts(
        &mut self,
        nodes: &mut BTreeMap<NodeName, Node>,
        services: &BTreeMap<ServiceName, Service>,
        raws: &BTreeMap<String, RawService>,
    ) {
        let dirs = self.list("hosts");
        for dir in &dirs {
            if NodeName::parse(dir).map(|n| !nodes.contains_key(&n)).unwrap_or(true) {
                self.err("layout", format!("hosts/{dir}"), None, "", format!("expected a folder named after a node of inventory/topology.yaml, found `{dir}`"), "declare the node in inventory/topology.yaml or remove the folder");
            }
        }
        let ids: Vec<NodeName> = nodes.keys().cloned().collect();
        for id in ids {
            let base = format!("hosts/{id}");
            if !dirs.contains(&id.to_string()) {
                self.err(
                    "layout",
                    &base,
                    None,
                    "",
                    format!("expected the folder `{base}/` for node `{id}`, found none"),
                    format!("add {base}/capabilities.yaml and {base}/services.yaml"),
                );
                continue;
            }
            let caps_file = format!("{base}/capabilities.yaml");
            if let Some(caps) = self.yaml::<raw::Capabilities>(&caps_file) {
                self.caps_loaded.insert(id.clone());
                self.node_field(&caps_file, &caps.node, &id);
                if !["x86_64", "aarch64", "armv7"].contains(&caps.arch.value.as_str()) {
                    self.err(
                        "capability",
                        &caps_file,
                        line(&caps.arch),
                        "arch",
                        format!("expected x86_64, aarch64 or armv7, found `{}`", caps.arch.value),
                        "name the node's CPU architecture",
                    );
                }
                if caps.docker.compose.value != "v2" {
                    self.err(
                        "capability",
                        &caps_file,
                        line(&caps.docker.compose),
                        "docker.compose",
                        format!("expected `v2`, found `{}`", caps.docker.compose.value),
                        "homelab deploys with Docker Compose v2 (`docker compose`)",
                    );
                }
                let mut set = BTreeSet::new();
                for c in &caps.capabilities {
                    if let Some(p) = kebab_problem(&c.value) {
                        self.err(
                            "naming",
                            &caps_file,
                            line(c),
                            "capabilities",
                            format!("expected {p}, found `{}`", c.value),
                            "write capability tags in kebab-case",
                        );
                    }
                    if c.value == "gpu" && caps.gpu.is_none() {
                        self.err(
                            "capability",
                            &caps_file,
                            line(c),
                            "capabilities",
                            "expected a `gpu:` section for a node tagged `gpu`, found `gpu: null`",
                            "describe the GPU or drop the tag",
                        );
                    }
                    set.insert(c.value.clone());
                }
                nodes.get_mut(&id).expect("id from nodes").capabilities = set;
            }
            let svc_file = format!("{base}/services.yaml");
            // Every name the file lists, including services that failed to load.
            let mut listed_names = BTreeSet::new();
            if let Some(hs) = self.yaml::<raw::HostServices>(&svc_file) {
                self.services_loaded.insert(id.clone());
                self.node_field(&svc_file, &hs.node, &id);
                let mut wanted = BTreeMap::new();
                for (i, s) in hs.services.iter().enumerate() {
                    let field = format!("services[{i}].name");
                    let name = &s.value.name;
                    listed_names.insert(name.value.clone());
                    let Some(svc) =
                        ServiceName::parse(&name.value).ok().and_then(|n| services.get(&n))
                    else {
                        if !self.service_dirs.contains(&name.value) {
                            self.err(
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
                    let exposure = self.exposure(
                        &svc_file,
                        &s.value.exposure,
                        &format!("services[{i}].exposure"),
                    );
                    if let Some(e) = exposure.filter(|e| *e != svc.exposure) {
                        self.err(
                            "exposure",
                            &svc_file,
                            line(&s.value.exposure),
                            format!("services[{i}].exposure"),
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
                        Owner::Node(owner) if *owner != id => self.err(
                            "owner-node",
                            &svc_file,
                            line(name),
                            field.clone(),
                            format!("`{}` has `owner_node: {owner}` in services/{}/service.yaml, but is listed on `{id}`", svc.name, svc.name),
                            format!("list it only in hosts/{owner}/services.yaml, or change its owner_node"),
                        ),
                        _ => {}
                    }
                    if wanted
                        .insert(
                            svc.name.clone(),
                            HostService { exposure: svc.exposure, vars: s.value.vars.clone() },
                        )
                        .is_some()
                    {
                        self.err(
                            "naming",
                            &svc_file,
                            line(name),
                            field,
                            format!("`{}` is listed twice", svc.name),
                            "list each service once",
                        );
                    }
                }
                nodes.get_mut(&id).expect("id from nodes").services = wanted;
            }
            let runtime = format!("{base}/runtime");
            if self.repo.exists(Path::new(&runtime)) {
                for svc_dir in self.list(&runtime) {
                    let path = format!("{runtime}/{svc_dir}");
                    let listed = nodes[&id].services.keys().any(|s| s.as_str() == svc_dir);
                    if !listed_names.contains(&svc_dir) && self.services_loaded.contains(&id) {
                        self.err("override", &path, None, "", format!("expected an override for a service listed in {base}/services.yaml, found `{svc_dir}`"), "list the service on the node or remove the override");
                    }
                    if !listed {
                        continue;
                    }
                    for f in self.list_all(&path) {
                        if f != OVERRIDE_FILE {
                            self.err("override", format!("{path}/{f}"), None, "", format!("expected only `{OVERRIDE_FILE}` here, found `{f}`"), "host-local secrets live on the node under <root>/config/<svc>/, never in Git");
                        }
                    }
                    let file = format!("{path}/{OVERRIDE_FILE}");
                    if self.repo.exists(Path::new(&file)) {
                        if let Some(src) = self.source(file) {
                            let svc =
                                ServiceName::parse(&svc_dir).expect("listed services are valid");
                            nodes.get_mut(&id).expect("id from nodes").overrides.insert(svc, src);
                        }
                    }
                }
            }
        }
        // Agreement of owner_node with the hosts listing, seen from the contract.
        for svc in services.values() {
            let file = format!("services/{}/service.yaml", svc.name);
            let l = raws.get(svc.name.as_str()).and_then(|r| line(&r.contract.owner_node));
            match &svc.owner {
                Owner::Node(owner) => {
                    let listed = nodes
                        .get(owner)
                        .map(|n| n.services.contains_key(&svc.name))
                        .unwrap_or(false);
                    if !listed && self.services_loaded.contains(owner) {
                        self.err("owner-node", &file, l, "owner_node", format!("`{owner}` is the owner but hosts/{owner}/services.yaml does not list `{}`", svc.name), format!("add `{}` to hosts/{owner}/services.yaml", svc.name));
                    }
                }
                Owner::All => {
                    let missing: Vec<_> = nodes
                        .values()
                        .filter(|n| {
                            self.services_loaded.contains(&n.id)
                                && !n.services.contains_key(&svc.name)
                        })
                        .map(|n| n.id.to_string())
                        .collect();
                    if !missing.is_empty() {
                        self.err(
                            "owner-node",
                            &file,
                            l,
                            "owner_node",
                            format!(
                                "`all` means every node, but these do not list `{}`: {}",
                                svc.name,
                                missing.join(", ")
                            ),
                            "list it in every node's services.yaml, or name one owner node",
                        );
                    }
                }
            }
        }
    }

    fn node_field(&mut self, file: &str, node: &Spanned<String>, id: &NodeName) {
        if node.value != id.as_str() {
            self.err(
                "naming",
                file,
                line(node),
                "node",
                format!("expected `{id}` (the folder's node), found `{}`", node.value),
                format!("set `node: {id}`"),
            );
        }
    }

    fn policy(
        &mut self,
        p: &raw::Policy,
        nodes: &BTreeMap<NodeName, Node>,
        principals: &BTreeSet<String>,
    ) -> Option<Policy> {
        const FILE: &str = "inventory/policy.yaml";
        let ttl = parse_duration(&p.plan_ttl.value).filter(|d| !d.is_zero());
        if ttl.is_none() {
            self.err(
                "policy",
                FILE,
                line(&p.plan_ttl),
                "plan_ttl",
                format!("expected a duration such as `24h`, found `{}`", p.plan_ttl.value),
                "set how long a plan stays valid",
            );
        }
        let rule = |v: &mut Self, r: &Spanned<raw::ApprovalRule>, field: &str| {
            let required = r.value.required.value;
            let approvers: BTreeSet<String> =
                r.value.approvers.iter().map(|a| a.value.clone()).collect();
            if required == 0 {
                v.err(
                    "policy",
                    FILE,
                    line(&r.value.required),
                    format!("{field}.required"),
                    "expected at least 1 approval",
                    "every apply needs a human approval",
                );
            } else if required as usize > approvers.len() {
                v.err(
                    "policy",
                    FILE,
                    line(&r.value.required),
                    format!("{field}.required"),
                    format!(
                        "expected at most {} (the number of approvers), found {required}",
                        approvers.len()
                    ),
                    "add approvers or lower `required`",
                );
            }
            for a in &r.value.approvers {
                if !principals.contains(&a.value) {
                    v.err(
                        "policy",
                        FILE,
                        line(a),
                        format!("{field}.approvers"),
                        format!(
                            "expected a principal of inventory/allowed_signers, found `{}`",
                            a.value
                        ),
                        "add the approver's key to inventory/allowed_signers",
                    );
                }
            }
            ApprovalRule { required, approvers }
        };
        let default = rule(self, &p.approvals.default, "approvals.default");
        let mut per_node = BTreeMap::new();
        for (name, r) in &p.approvals.nodes {
            let field = format!("approvals.nodes.{name}");
            let rr = rule(self, r, &field);
            match NodeName::parse(name).ok().filter(|n| nodes.contains_key(n)) {
                Some(n) => {
                    per_node.insert(n, rr);
                }
                None => self.err(
                    "policy",
                    FILE,
                    line(r),
                    field,
                    format!("expected a node of inventory/topology.yaml, found `{name}`"),
                    "fix the node id",
                ),
            }
        }
        Some(Policy { plan_ttl: ttl?, default, nodes: per_node })
    }

    /// Places every service on its nodes and resolves its dependencies to instances.
    fn instances(
        &mut self,
        nodes: &BTreeMap<NodeName, Node>,
        services: &BTreeMap<ServiceName, Service>,
        raws: &BTreeMap<String, RawService>,
    ) -> BTreeMap<Instance, Vec<Instance>> {
        let mut out = BTreeMap::new();
        for node in nodes.values() {
            for svc_name in node.services.keys() {
                let svc = &services[svc_name];
                let raw = &raws[svc_name.as_str()].contract;
                let file = format!("services/{svc_name}/service.yaml");
                let me = Instance { service: svc_name.clone(), node: node.id.clone() };
                for cap in &svc.requires {
                    if self.caps_loaded.contains(&node.id) && !node.capabilities.contains(cap) {
                        let l = raw.requires.iter().find(|r| &r.value == cap).and_then(line);
                        self.err(
                            "capability",
                            &file,
                            l,
                            "requires",
                            format!("`{me}` requires `{cap}`, but hosts/{}/capabilities.yaml does not provide it", node.id),
                            format!("place the service on a node with `{cap}`, or add the capability to that node if it has it"),
                        );
                    }
                }
                let mut deps = Vec::new();
                for (i, d) in raw.dependencies.iter().enumerate() {
                    let field = format!("dependencies[{i}]");
                    let dname = &d.value.service;
                    let Some(dep) =
                        ServiceName::parse(&dname.value).ok().and_then(|n| services.get(&n))
                    else {
                        if !self.service_dirs.contains(&dname.value) {
                            self.err(
                                "dependency",
                                &file,
                                line(dname),
                                format!("{field}.service"),
                                format!("expected a service of services/, found `{}`", dname.value),
                                "fix the name or add the service",
                            );
                        }
                        continue;
                    };
                    let target = match (&d.value.node, &dep.owner) {
                        (Some(n), _) => {
                            match NodeName::from_cli(&n.value)
                                .ok()
                                .filter(|n| nodes.contains_key(n))
                            {
                                Some(n) => n,
                                None => {
                                    self.err("dependency", &file, line(n), format!("{field}.node"), format!("expected a node of inventory/topology.yaml, found `{}`", n.value), "fix the node id");
                                    continue;
                                }
                            }
                        }
                        (None, Owner::Node(owner)) => owner.clone(),
                        (None, Owner::All) => node.id.clone(),
                    };
                    if dep.name == *svc_name && target == node.id {
                        self.err(
                            "cycle",
                            &file,
                            line(dname),
                            format!("{field}.service"),
                            format!("`{me}` depends on itself"),
                            "remove the dependency",
                        );
                        continue;
                    }
                    let runs_there = nodes[&target].services.contains_key(&dep.name);
                    if !runs_there {
                        if self.services_loaded.contains(&target) {
                            self.err("dependency", &file, line(dname), field.clone(), format!("`{me}` depends on `{}@{target}`, but hosts/{target}/services.yaml does not list `{}`", dep.name, dep.name), "depend on a node that runs the service (`node:`), or place the service there");
                        }
                        continue;
                    }
                    let target_node = &nodes[&target];
                    if node.offline_first && target_node.site != node.site {
                        self.err(
                            "offline-first",
                            &file,
                            line(dname),
                            field.clone(),
                            format!(
                                "`{me}` runs on the offline-first site `{}` but depends on `{}@{target}` at site `{}`",
                                node.site, dep.name, target_node.site
                            ),
                            format!("services on `{}` must keep working when the LTE link is down: depend only on services of the same site", node.site),
                        );
                    }
                    deps.push(Instance { service: dep.name.clone(), node: target });
                }
                deps.sort();
                deps.dedup();
                out.insert(me, deps);
            }
        }
        out
    }

    /// Text checks over every file that reaches a node: secrets and serial devices.
    fn secrets_and_zigbee(
        &mut self,
        nodes: &BTreeMap<NodeName, Node>,
        services: &BTreeMap<ServiceName, Service>,
        raws: &BTreeMap<String, RawService>,
    ) {
        for r in raws.values() {
            let contract_file = format!("services/{}/service.yaml", r.dir);
            let contract_text = self.repo.read_text(Path::new(&contract_file)).unwrap_or_default();
            for src in [
                &r.compose,
                &r.healthcheck,
                &r.env_example,
                &Source { path: contract_file.clone(), text: contract_text },
            ] {
                self.serial_devices(src);
            }
        }
        for node in nodes.values() {
            for src in node.overrides.values() {
                self.serial_devices(src);
            }
        }
        for svc in services.values() {
            let raw = &raws[svc.name.as_str()].contract;
            let contract_file = format!("services/{}/service.yaml", svc.name);
            let example = parse_env_example(&svc.env_example.text);
            for (name, (l, value)) in &example {
                match svc.env_vars.iter().find(|e| &e.name == name) {
                    None => self.err("secret", &svc.env_example.path, Some(*l), name.clone(), format!("`{name}` is not declared in services/{}/service.yaml", svc.name), "declare it under `runtime.env_vars` (with `secret: true` if it is one)"),
                    Some(e) if e.secret && !is_placeholder(value) => self.err(
                        "secret",
                        &svc.env_example.path,
                        Some(*l),
                        name.clone(),
                        format!("`{name}` is a secret, but env.example gives it a value"),
                        format!("write `{name}=<set in /opt/homelab/config/{}/.env>` and rotate the value that was committed", svc.name),
                    ),
                    Some(_) => {}
                }
            }
            for (e, spanned) in svc.env_vars.iter().zip(&raw.runtime.env_vars) {
                if !example.contains_key(&e.name) {
                    self.err(
                        "secret",
                        &contract_file,
                        line(&spanned.value.name),
                        "runtime.env_vars",
                        format!("`{}` is not in env.example", e.name),
                        format!("add `{}=` to services/{}/env.example", e.name, svc.name),
                    );
                }
            }
            let secrets: Vec<&str> =
                svc.env_vars.iter().filter(|e| e.secret).map(|e| e.name.as_str()).collect();
            let mut files = vec![&svc.compose];
            files.extend(nodes.values().filter_map(|n| n.overrides.get(&svc.name)));
            for src in files {
                for (i, text) in src.text.lines().enumerate() {
                    for name in &secrets {
                        if let Some(value) = literal_assignment(text, name) {
                            if !value.starts_with("${") && !is_placeholder(&value) {
                                self.err(
                                    "secret",
                                    &src.path,
                                    Some(i as u64 + 1),
                                    (*name).to_owned(),
                                    format!("the secret `{name}` is set to a literal value in Git"),
                                    format!("remove it here and put it in /opt/homelab/config/{}/.env on the node (loaded with `env_file`); rotate the committed value", svc.name),
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    fn serial_devices(&mut self, src: &Source) {
        for (i, text) in src.text.lines().enumerate() {
            if text.contains("/dev/ttyUSB") || text.contains("/dev/ttyACM") {
                self.err(
                    "zigbee",
                    &src.path,
                    Some(i as u64 + 1),
                    "",
                    "expected the Zigbee coordinator over TCP, found a serial device (`/dev/ttyUSB*`/`/dev/ttyACM*`)",
                    "use the SLZB-06U at `tcp://192.168.1.105:6638` with adapter `ezsp`; never /dev/ttyUSB0",
                );
            }
        }
    }

    fn cycles(&mut self, lab: &Homelab, raws: &BTreeMap<String, RawService>) {
        if let Err(cycle) = crate::graph::DeployGraph::build(lab) {
            let first = &cycle.path[0];
            let file = format!("services/{}/service.yaml", first.service);
            let shown: Vec<String> = cycle.path.iter().map(ToString::to_string).collect();
            // The dependency entry of the first instance that leads to the next one.
            let entry = cycle.path.get(1).and_then(|next| {
                raws.get(first.service.as_str())?.contract.dependencies.iter().enumerate().find(
                    |(_, d)| {
                        d.value.service.value == next.service.as_str()
                            && d.value.node.as_ref().is_none_or(|n| {
                                NodeName::from_cli(&n.value).ok().as_ref() == Some(&next.node)
                            })
                    },
                )
            });
            let (l, field) = match entry {
                Some((i, d)) => (line(&d.value.service), format!("dependencies[{i}]")),
                None => (None, "dependencies".to_owned()),
            };
            self.err(
                "cycle",
                file,
                l,
                field,
                format!("dependency cycle: {}", shown.join(" -> ")),
                "break the cycle: one of these services must not depend on the next",
            );
        }
    }

    /// Renders every instance: undefined variables, bad templates and compose files that break
    /// the naming rules are found here, with the template's file and line.
    fn rendering(&mut self, lab: &Homelab) {
        for inst in lab.instances.keys() {
            match crate::render::render_instance(lab, inst) {
                Ok(rendered) => self.compose_rules(lab, inst, &rendered),
                Err(crate::render::RenderError::Template { file, line, message }) => {
                    let undefined = message
                        .starts_with("undefined value")
                        .then(|| undefined_var(lab, inst, &file, line))
                        .flatten();
                    match undefined {
                        Some(expr) => {
                            let svc = &inst.service;
                            let key = expr.trim_start_matches("vars.");
                            self.err(
                                "template",
                                &file,
                                line,
                                expr.clone(),
                                format!("undefined value: `{key}` is not among the `vars:` of services/{svc}/service.yaml or of the host"),
                                format!("define `{key}` under `vars:` in services/{svc}/service.yaml (or per node in hosts/<node>/services.yaml), or fix the name"),
                            )
                        }
                        None => self.err("template", file, line, "", message, "define the variable under `vars:` in service.yaml or the host's services.yaml, or fix the template"),
                    }
                }
            }
        }
    }

    fn compose_rules(
        &mut self,
        lab: &Homelab,
        inst: &Instance,
        rendered: &crate::render::Rendered,
    ) {
        let svc = &lab.services[&inst.service];
        let node = &lab.nodes[&inst.node];
        let name = svc.name.as_str();
        for artifact in &rendered.artifacts {
            let source = if artifact.name == crate::render::COMPOSE {
                &svc.compose
            } else if artifact.name == crate::render::OVERRIDE {
                &node.overrides[&inst.service]
            } else {
                continue;
            };
            let text = String::from_utf8_lossy(&artifact.bytes);
            let compose: raw::Compose = match parse_yaml(Path::new(&source.path), &text) {
                Ok(c) => c,
                Err(mut d) => {
                    d.message = format!("rendered for `{inst}`: {}", d.message);
                    self.diags.push(d);
                    continue;
                }
            };
            let is_override = artifact.name == crate::render::OVERRIDE;
            if !is_override && !compose.services.contains_key(name) {
                self.err(
                    "container-name",
                    &source.path,
                    None,
                    "services",
                    format!(
                        "expected a compose service named `{name}`, found {}",
                        compose
                            .services
                            .keys()
                            .map(|k| format!("`{k}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    format!("name the compose service `{name}`, as the service"),
                );
            }
            for (key, cs) in &compose.services {
                let field = format!("services.{key}");
                if key != name && !key.starts_with(&format!("{name}-")) {
                    self.err(
                        "container-name",
                        &source.path,
                        line(cs),
                        field.clone(),
                        format!("expected `{name}` or `{name}-<part>`, found `{key}`"),
                        "compose services of a service carry its name",
                    );
                }
                if is_override {
                    if let Some(c) = &cs.value.container_name {
                        if c.value != *key {
                            self.err(
                                "container-name",
                                &source.path,
                                line(c),
                                format!("{field}.container_name"),
                                format!("expected `{key}`, found `{}`", c.value),
                                "an override may not rename the container",
                            );
                        }
                    }
                    if let Some(r) = &cs.value.restart {
                        if r.value != svc.restart_policy {
                            self.err(
                                "restart",
                                &source.path,
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
                    Some(c) => self.err(
                        "container-name",
                        &source.path,
                        line(c),
                        format!("{field}.container_name"),
                        format!("expected `{key}`, found `{}`", c.value),
                        format!("set `container_name: {key}`: container names match service names"),
                    ),
                    None => self.err(
                        "container-name",
                        &source.path,
                        line(cs),
                        format!("{field}.container_name"),
                        format!("expected `container_name: {key}`, found none"),
                        format!("add `container_name: {key}`"),
                    ),
                }
                match &cs.value.restart {
                    Some(r) if r.value == svc.restart_policy => {}
                    Some(r) => self.err(
                        "restart",
                        &source.path,
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
                    None => self.err(
                        "restart",
                        &source.path,
                        line(cs),
                        format!("{field}.restart"),
                        format!("expected `restart: {}`, found none", svc.restart_policy),
                        format!("add `restart: {}`", svc.restart_policy),
                    ),
                }
            }
            if let Some(z) = &svc.zigbee {
                for (i, l) in text.lines().enumerate() {
                    if let Some(v) = literal_assignment(l, "ZIGBEE2MQTT_CONFIG_SERIAL_PORT") {
                        if v != z.port {
                            self.err(
                                "zigbee",
                                &source.path,
                                Some(i as u64 + 1),
                                "ZIGBEE2MQTT_CONFIG_SERIAL_PORT",
                                format!(
                                    "expected `{}` (zigbee.port in service.yaml), found `{v}`",
                                    z.port
                                ),
                                "take the port from the contract",
                            );
                        }
                    }
                }
            }
        }
    }
}

/// The first `{{ vars.<key> }}` on `line` of the template `file` whose key neither the contract
/// nor the host defines: what a strict "undefined value" render error is about.
fn undefined_var(lab: &Homelab, inst: &Instance, file: &str, line: Option<u64>) -> Option<String> {
    let svc = &lab.services[&inst.service];
    let node = &lab.nodes[&inst.node];
    let text = if file == svc.compose.path {
        &svc.compose.text
    } else if let Some(o) = node.overrides.get(&inst.service).filter(|o| o.path == file) {
        &o.text
    } else {
        lab.templates.get(file.strip_prefix("templates/")?)?
    };
    let src = text.lines().nth(usize::try_from(line?).ok()?.checked_sub(1)?)?;
    let host = &node.services.get(&inst.service)?.vars;
    src.split("{{")
        .skip(1)
        .filter_map(|s| s.split_once("}}").map(|(e, _)| e.split('|').next().unwrap_or("").trim()))
        .find(|e| {
            e.strip_prefix("vars.").is_some_and(|k| {
                !k.is_empty()
                    && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    && !svc.vars.contains_key(k)
                    && !host.contains_key(k)
            })
        })
        .map(str::to_owned)
}

fn user_problem(user: &str) -> Option<&'static str> {
    let ok = !user.is_empty()
        && user.len() <= 32
        && (user.as_bytes()[0].is_ascii_lowercase() || user.as_bytes()[0] == b'_')
        && user
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    (!ok).then_some("a Unix user name (lowercase letters, digits, `_`, `-`)")
}

fn is_tcp_endpoint(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("tcp://") else { return false };
    let Some((host, port)) = rest.rsplit_once(':') else { return false };
    !host.is_empty()
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && port.parse::<u16>().map(|p| p > 0).unwrap_or(false)
}

/// `NAME=value` lines of an env.example, with their line numbers.
fn parse_env_example(text: &str) -> BTreeMap<String, (u64, String)> {
    let mut out = BTreeMap::new();
    for (i, l) in text.lines().enumerate() {
        let l = l.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let l = l.strip_prefix("export ").unwrap_or(l);
        let (name, value) = l.split_once('=').unwrap_or((l, ""));
        out.insert(name.trim().to_owned(), (i as u64 + 1, value.trim().to_owned()));
    }
    out
}

fn is_placeholder(value: &str) -> bool {
    let v = value.trim().trim_matches(|c| c == '"' || c == '\'');
    v.is_empty() || (v.starts_with('<') && v.ends_with('>'))
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

/// Principals named in an allowed-signers file (first field, comma-separated).
fn signer_principals(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next())
        .flat_map(|p| p.split(',').map(|s| s.trim_matches('"').to_owned()).collect::<Vec<_>>())
        .collect()
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
