//! The corpus (issue 9): thirteen multi-container services under `tests/corpus/`, written in
//! the styles people publish (init scripts, a reverse proxy's config files, anchors and merge
//! keys, profiles, `build:`, `.env` interpolation, a one-shot migration, `secrets:` and
//! `configs:` from files, `extends:`, the long volume syntax). Each one validates, renders and
//! plans without a node; in the lab all of them are applied in one plan, updated in a second
//! (their data read back afterwards), and a third plan breaks six of them, which roll back with
//! their previous config files and their data in place.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::lab::Lab;
use crate::support::{copy_tree, fixtures, sha256_hex, Lab as Local, Output};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// Every corpus service (a folder with a `service.yaml`) and its owner node, by name.
fn services() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in fs::read_dir(corpus()).unwrap() {
        let p = e.unwrap().path();
        let Ok(contract) = fs::read_to_string(p.join("service.yaml")) else { continue };
        let owner = contract
            .lines()
            .find_map(|l| l.strip_prefix("owner_node: "))
            .unwrap_or_else(|| panic!("{}: no owner_node", p.display()))
            .trim()
            .to_owned();
        out.push((p.file_name().unwrap().to_str().unwrap().to_owned(), owner));
    }
    out.sort();
    out
}

/// The field `field: value` of a service's contract.
fn contract_field(svc: &str, field: &str) -> String {
    let text = fs::read_to_string(corpus().join(svc).join("service.yaml")).unwrap();
    let prefix = format!("{field}: ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap().trim().to_owned()
}

/// Every file of a corpus service that ships with it, relative to its folder, sorted.
fn shipped(svc: &str) -> Vec<String> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, base, out);
            } else {
                let rel = p.strip_prefix(base).unwrap().to_str().unwrap().to_owned();
                if !["README.md", "env.example", "service.yaml"].contains(&rel.as_str()) {
                    out.push(rel);
                }
            }
        }
    }
    let base = corpus().join(svc);
    let mut out = Vec::new();
    walk(&base, &base, &mut out);
    out.sort();
    out
}

/// Replaces the base fixture's services of the homelab at `repo` with the corpus: each service
/// on its owner node, the nodes in `nodes` hosting nothing else.
fn place_corpus(repo: &Path, nodes: &[&str]) {
    fs::remove_dir_all(repo.join("services")).unwrap();
    fs::remove_dir_all(repo.join("hosts/edge-b/runtime")).unwrap();
    let all = services();
    for node in nodes {
        let mut text = format!("node: {node}\nservices:\n");
        let mine: Vec<_> = all.iter().filter(|(_, owner)| owner == node).collect();
        if mine.is_empty() {
            text = format!("node: {node}\nservices: []\n");
        }
        for (svc, _) in mine {
            text.push_str(&format!(
                "  - name: {svc}\n    exposure: {}\n",
                contract_field(svc, "exposure")
            ));
        }
        fs::write(repo.join(format!("hosts/{node}/services.yaml")), text).unwrap();
    }
    for (svc, _) in &all {
        copy_tree(&corpus().join(svc), &repo.join("services").join(svc));
    }
}

#[test]
fn the_corpus_has_twelve_or_more_services_on_two_nodes_and_each_ships_beyond_the_five_files() {
    let all = services();
    assert!(all.len() >= 12, "{all:?}");
    for node in ["alpha", "edge-a"] {
        assert!(all.iter().any(|(_, n)| n == node), "no corpus service on {node}");
    }
    for (svc, _) in &all {
        let files = shipped(svc);
        assert!(files.len() > 2, "{svc} ships only {files:?}");
        for five in ["healthcheck.sh", "service.yaml", "README.md"] {
            assert!(corpus().join(svc).join(five).is_file(), "{svc}: no {five}");
        }
        let compose: Vec<_> =
            files.iter().filter(|f| COMPOSE_NAMES.contains(&f.as_str())).collect();
        assert_eq!(compose.len(), 1, "{svc}: one compose file, found {compose:?}");
    }
    // Compose's preferred name is recognised, not only `docker-compose.yml`.
    assert!(corpus().join("media/compose.yaml").is_file());
}

/// The names Compose finds a project's file under; each ships as `docker-compose.yml`.
const COMPOSE_NAMES: [&str; 4] =
    ["compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml"];

/// The name a shipped file has in the release: a template without its `.j2`, the compose file
/// as `docker-compose.yml`.
fn release_name(file: &str) -> &str {
    if COMPOSE_NAMES.contains(&file) {
        return "docker-compose.yml";
    }
    file.strip_suffix(".j2").unwrap_or(file)
}

/// Every corpus service validates, renders every file it ships (templates without their
/// `.j2`, the others byte for byte) and is planned with each of those files as an artifact.
#[test]
fn every_corpus_service_validates_renders_and_plans() {
    let lab = Local::new();
    let key = lab.keygen("operator");
    lab.allow(&[("operator@test", "", &key)]);
    place_corpus(&lab.path("repo"), &["alpha", "edge-a", "edge-b"]);
    let all = services();

    let out = lab.homelab(&["validate"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(&format!("{n} services, {n} service instances", n = all.len())),
        "{}",
        out.stdout
    );

    let out = lab.homelab(&["render", "--out", "stage"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for (svc, node) in &all {
        let release = lab.path(&format!("stage/{node}/{svc}"));
        for file in shipped(svc) {
            let source = fs::read(corpus().join(svc).join(&file)).unwrap();
            let name = release_name(&file);
            if COMPOSE_NAMES.contains(&file.as_str()) {
                let text = fs::read_to_string(release.join(name)).unwrap();
                assert!(!text.contains("{{ "), "{svc}: compose file not rendered:\n{text}");
                assert!(!text.contains("{%"), "{svc}: compose file not rendered:\n{text}");
                assert!(
                    file == name || !release.join(&file).exists(),
                    "{svc}: {file} ships as {name}"
                );
                continue;
            }
            match file.strip_suffix(".j2") {
                Some(name) => {
                    let text = fs::read_to_string(release.join(name))
                        .unwrap_or_else(|e| panic!("{svc}: {name} not rendered: {e}"));
                    assert!(!text.contains("{{"), "{svc}/{name} is rendered:\n{text}");
                    assert!(!release.join(&file).exists(), "{svc}: {file} keeps its suffix");
                }
                None => assert_eq!(
                    fs::read(release.join(&file))
                        .unwrap_or_else(|e| panic!("{svc}: {file} not rendered: {e}")),
                    source,
                    "{svc}: {file} ships byte for byte"
                ),
            }
        }
    }
    // Docker's own Go template in a log option survives rendering through `{% raw %}`.
    let monitoring = lab.read("stage/alpha/monitoring/docker-compose.yml");
    assert!(monitoring.contains("tag: \"{{.Name}}\""), "{monitoring}");
    // A per-node template: the settings name the node they were rendered for.
    assert!(lab.read("stage/edge-a/photos/photos.conf").contains("server_name = photos@edge-a\n"));

    let id = lab.plan(&key);
    let plan = lab.plan_file(&id);
    assert!(!plan.contains("\nchange update ") && !plan.contains("\nchange delete "), "{plan}");
    for (svc, node) in &all {
        assert!(plan.contains(&format!("\nchange create {svc}@{node}")), "{svc}@{node}:\n{plan}");
        for file in shipped(svc) {
            let name = release_name(&file);
            let mode = if file == "healthcheck.sh" || is_executable(&corpus().join(svc).join(&file))
            {
                "0755"
            } else {
                "0644"
            };
            let line = format!("\nartifact {name} {mode} ");
            assert!(plan.contains(&line), "{svc}: no `{}` in the plan", line.trim());
            if file != name || name == "docker-compose.yml" {
                continue;
            }
            let digest = sha256_hex(&fs::read(corpus().join(svc).join(&file)).unwrap());
            assert!(
                plan.contains(&format!("{line}{digest}")),
                "{svc}: {file} is planned byte for byte"
            );
        }
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p).unwrap().permissions().mode() & 0o111 != 0
}

// ---------------------------------------------------------------------------------------------
// The lab: two nodes, all of the corpus.

/// One corpus service as the lab test checks it.
struct Case {
    svc: &'static str,
    node: &'static str,
    /// Containers that run once the service is applied.
    running: &'static [&'static str],
    /// Containers that must not exist (opt-in profiles).
    absent: &'static [&'static str],
    /// One-shot containers that ran and exited 0.
    exited: &'static [&'static str],
    /// A shipped file as a container sees it: (container, path inside, path in the release);
    /// no container: the file on the node only (its container has exited).
    config: (&'static str, &'static str, &'static str),
    /// A folder a container keeps its data in (under the service's data folder).
    data: (&'static str, &'static str),
    /// The update: (file of the service or `hosts/...` path, text to replace, replacement); an
    /// empty text to replace creates the file.
    update: &'static [(&'static str, &'static str, &'static str)],
    /// What shows the update is live: (container, command, text its output contains).
    probe: (&'static str, &'static [&'static str], &'static str),
    /// A breaking update (caught by the healthcheck or the deploy), rolled back.
    breaks: &'static [(&'static str, &'static str, &'static str)],
}

const CASES: &[Case] = &[
    Case {
        svc: "blog",
        node: "alpha",
        running: &["blog", "blog-db", "blog-cache"],
        absent: &[],
        exited: &[],
        config: ("blog", "/usr/local/etc/php/conf.d/uploads.ini", "uploads.ini"),
        data: ("blog", "/var/www/html/wp-content/uploads"),
        update: &[
            ("uploads.ini", "upload_max_filesize = 64M", "upload_max_filesize = 128M"),
            ("docker-compose.yml", "${BLOG_TITLE:-A homelab blog}", "${BLOG_TITLE:-Blog two}"),
        ],
        probe: ("blog", &["wget", "-q", "-O", "-", "http://127.0.0.1:8080/"], "<h1>Blog two</h1>"),
        breaks: &[],
    },
    Case {
        svc: "proxy",
        node: "alpha",
        running: &["proxy", "proxy-app"],
        absent: &[],
        exited: &[],
        config: ("proxy", "/etc/proxy/upstreams.conf", "upstreams.conf"),
        data: ("proxy-app", "/data/public"),
        update: &[
            ("upstreams.conf", "timeout = 1", "timeout = 2"),
            ("www/index.html", "front door.", "front door, version two."),
        ],
        probe: ("proxy", &["wget", "-q", "-O", "-", "http://127.0.0.1:8080/"], "version two"),
        breaks: &[("upstreams.conf", "upstream = app:3000", "upstream = app:3999")],
    },
    Case {
        svc: "monitoring",
        node: "alpha",
        running: &["monitoring", "monitoring-node-exporter", "monitoring-blackbox"],
        absent: &[],
        exited: &[],
        config: ("monitoring", "/etc/monitoring/targets.conf", "targets.conf"),
        data: ("monitoring", "/tsdb"),
        update: &[("targets.conf", "probe blackbox:9115\n", "probe blackbox:9115\nself node-exporter:9100\n")],
        probe: ("monitoring", &["cat", "/tsdb/targets"], "self up"),
        breaks: &[("targets.conf", "self node-exporter", "gone nowhere:9999\nself node-exporter")],
    },
    Case {
        svc: "media",
        node: "alpha",
        running: &["media"],
        absent: &["media-transcoder", "media-scanner"],
        exited: &[],
        config: ("media", "/etc/media/media.conf", "media.conf"),
        data: ("media", "/media/library"),
        update: &[("media.conf", "transcode = off", "transcode = vaapi")],
        probe: (
            "media",
            &["wget", "-q", "-O", "-", "http://127.0.0.1:8096/served-with.conf"],
            "transcode = vaapi",
        ),
        breaks: &[],
    },
    Case {
        svc: "notes",
        node: "alpha",
        running: &["notes"],
        absent: &[],
        exited: &[],
        config: ("notes", "/srv/www/index.html", "app/www/index.html"),
        data: ("notes", "/var/lib/notes/notes"),
        update: &[
            ("service.yaml", "version: \"1.0\"", "version: \"1.1\""),
            ("app/www/index.html", "Your notes live", "Your notes (1.1) live"),
        ],
        probe: ("notes", &["wget", "-q", "-O", "-", "http://127.0.0.1:8000/version.txt"], "1.1"),
        // A change of size: a same-size change of a build context is not rebuilt (homelab
        // bug, see `a_same_size_change_in_a_build_context_is_built`).
        breaks: &[
            ("service.yaml", "version: \"1.1\"", "version: \"1.2\""),
            ("app/notes-server", "-p 8000", "-p 18000"),
        ],
    },
    Case {
        svc: "ledger",
        node: "alpha",
        running: &["ledger", "ledger-db"],
        absent: &[],
        exited: &[],
        config: ("ledger", "/etc/ledger/ledger.ini", "ledger.ini"),
        data: ("ledger-db", "/var/lib/postgresql/data"),
        update: &[
            ("ledger.ini", "rounding = 2", "rounding = 4"),
            ("docker-compose.yml", "${LEDGER_CURRENCY:-EUR}", "${LEDGER_CURRENCY:-CHF}"),
        ],
        probe: ("ledger", &["cat", "/srv/settings"], "currency=CHF workers=2"),
        breaks: &[("docker-compose.yml", "${LEDGER_CURRENCY:-CHF}", "${LEDGER_CURRENCY:-EURO}")],
    },
    Case {
        svc: "chat",
        node: "alpha",
        running: &["chat", "chat-bridge"],
        absent: &[],
        exited: &[],
        config: ("chat", "/etc/chat/homeserver.yaml", "homeserver.yaml"),
        data: ("chat", "/data/media"),
        update: &[
            ("homeserver.yaml", "max_upload_size: 50M", "max_upload_size: 100M"),
            ("chat.env", "CHAT_LOG_LEVEL=info", "CHAT_LOG_LEVEL=debug"),
        ],
        probe: ("chat", &["cat", "/srv/whoami"], "chat.lab debug"),
        breaks: &[],
    },
    Case {
        svc: "tracker",
        node: "edge-a",
        running: &["tracker"],
        absent: &[],
        exited: &["tracker-migrate"],
        config: ("", "", "migrations/001-issues.sh"),
        data: ("tracker", "/var/lib/tracker/issues"),
        update: &[(
            "migrations/003-milestones.sh",
            "",
            "# 003: milestones.\nmkdir -p \"$1/milestones\"\n",
        )],
        probe: ("tracker", &["cat", "/var/lib/tracker/schema_version"], "3"),
        breaks: &[("migrations/004-broken.sh", "", "# 004: fails half-way.\nexit 1\n")],
    },
    Case {
        svc: "keyring",
        node: "edge-a",
        running: &["keyring", "keyring-db"],
        absent: &[],
        exited: &[],
        config: ("keyring", "/run/secrets/ca.pem", "certs/ca.pem"),
        data: ("keyring", "/data/vault"),
        update: &[(
            "certs/ca.pem",
            "-----END CERTIFICATE-----\n",
            "-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nMIIBhTCCASugAwIBAgIUsecondCorpusCA\n-----END CERTIFICATE-----\n",
        )],
        probe: ("keyring", &["cat", "/srv/ca-certs"], "2"),
        breaks: &[("certs/ca.pem", "-----BEGIN CERTIFICATE-----", "-----BEGIN BROKEN-----")],
    },
    Case {
        svc: "jobs",
        node: "edge-a",
        running: &["jobs", "jobs-queue", "jobs-worker"],
        absent: &[],
        exited: &[],
        config: ("jobs-worker", "/etc/worker/worker.conf", "worker.conf"),
        data: ("jobs-queue", "/spool/done"),
        update: &[("worker.conf", "handler = uppercase", "handler = reverse")],
        probe: ("jobs-worker", &["sh", "-c", "echo abc > /spool/incoming/probe; sleep 2; cat /spool/done/probe"], "cba"),
        breaks: &[],
    },
    Case {
        svc: "wiki",
        node: "edge-a",
        running: &["wiki", "wiki-search"],
        absent: &[],
        exited: &[],
        config: ("wiki", "/etc/wiki/config.yml", "config.yml"),
        data: ("wiki", "/wiki/pages"),
        update: &[("config.yml", "title: Homelab wiki", "title: Homelab wiki two")],
        probe: ("wiki", &["wget", "-q", "-O", "-", "http://127.0.0.1:3000/config.yml"], "wiki two"),
        breaks: &[],
    },
    Case {
        svc: "photos",
        node: "edge-a",
        running: &["photos", "photos-ml"],
        absent: &[],
        exited: &[],
        config: ("photos", "/etc/photos/photos.conf", "photos.conf"),
        data: ("photos", "/photos"),
        update: &[
            ("hosts/edge-a/services.yaml", "  - name: photos\n    exposure: internal\n", "  - name: photos\n    exposure: internal\n    vars:\n      workers: 4\n"),
            ("photos.conf.j2", "ml_url = ", "face_recognition = on\nml_url = "),
        ],
        probe: ("photos", &["wget", "-q", "-O", "-", "http://127.0.0.1:2283/photos.conf"], "workers = 4\nface_recognition = on\n"),
        breaks: &[],
    },
    Case {
        svc: "dns",
        node: "edge-a",
        running: &["dns", "dns-admin"],
        absent: &[],
        exited: &[],
        config: ("dns", "/etc/dns/blocklist.txt", "blocklist.txt"),
        data: ("dns", "/etc/dnsmasq.d"),
        update: &[("blocklist.txt", "tracker.example.net\n", "tracker.example.net\nmetrics.example.org\n")],
        probe: ("dns-admin", &["wget", "-q", "-O", "-", "http://dns:5380/stats"], "blocked_domains=3 "),
        breaks: &[],
    },
];

/// Secrets the test writes on the nodes (never in the repository): (node, path under the
/// runtime root, content).
const SECRETS: &[(&str, &str, &str)] = &[
    ("alpha", "config/blog/.env", "BLOG_DB_PASSWORD=blog-secret-5150\n"),
    (
        "alpha",
        "config/ledger/.env",
        "LEDGER_SECRET_KEY=ledger-key-8086\nLEDGER_DB_PASSWORD=ledger-db-6502\n",
    ),
    (
        "alpha",
        "config/chat/.env",
        "CHAT_SERVER_NAME=chat.lab\nCHAT_REGISTRATION_SHARED_SECRET=chat-secret-2600\n",
    ),
    ("edge-a", "config/keyring/db_password.txt", "keyring-db-1337\n"),
    ("edge-a", "config/keyring/admin_token.txt", "keyring-admin-31337\n"),
];

const LAB_NODES: [&str; 2] = ["alpha", "edge-a"];

/// The base fixture turned into the corpus homelab and pointed at the lab's two nodes, with an
/// operator key and the services' secrets on their nodes.
struct Site {
    lab: Lab,
    repo: tempfile::TempDir,
    key: PathBuf,
}

impl Site {
    fn new(lab: Lab) -> Site {
        let repo = tempfile::tempdir().unwrap();
        copy_tree(&fixtures().join("base"), repo.path());
        place_corpus(repo.path(), &LAB_NODES);
        fs::remove_dir_all(repo.path().join("hosts/edge-b")).unwrap();
        let mut topo = String::from(
            "mesh: tailscale\nsites:\n  home:\n    uplink: fiber\n    offline_first: false\n  remote:\n    uplink: lte\n    offline_first: true\nnodes:\n",
        );
        for name in LAB_NODES {
            let n = lab.node(name);
            fs::create_dir_all(n.root()).unwrap();
            let site = if name == "alpha" { "home" } else { "remote" };
            topo.push_str(&crate::support::topology_node(
                name,
                site,
                (&n.address, 22),
                &n.root(),
                &n.docker_socket,
            ));
        }
        fs::write(repo.path().join("inventory/topology.yaml"), topo).unwrap();
        fs::copy(lab.known_hosts(), repo.path().join("inventory/known_hosts")).unwrap();
        let key = repo.path().join(".operator_key");
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "operator@test", "-f"])
            .arg(&key)
            .output()
            .expect("ssh-keygen (Debian openssh-client) must be installed");
        assert!(out.status.success());
        let public = fs::read_to_string(key.with_extension("pub")).unwrap();
        let public: Vec<&str> = public.split_whitespace().take(2).collect();
        fs::write(
            repo.path().join("inventory/allowed_signers"),
            format!(
                "operator@test namespaces=\"homelab-plan,homelab-approve\" {}\n",
                public.join(" ")
            ),
        )
        .unwrap();
        for (node, rel, content) in SECRETS {
            let p = lab.node(node).root().join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, content).unwrap();
        }
        let site = Site { lab, repo, key };
        let v = site.homelab(&["validate"]);
        assert_eq!(v.code, 0, "{}{}", v.stdout, v.stderr);
        site
    }

    fn homelab(&self, args: &[&str]) -> Output {
        let out = Command::new(env!("CARGO_BIN_EXE_homelab"))
            .arg("--repo")
            .arg(self.repo.path())
            .args(args)
            .env("NO_COLOR", "1")
            .env("HOMELAB_SSH_KEY", self.lab.client_key())
            .env("HOMELAB_ROOT", self.repo.path().join(".controller"))
            .env_remove("HOMELAB_SIGNING_KEY")
            .env_remove("HOMELAB_REPO")
            .output()
            .unwrap();
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Plans and approves; the plan's id and the plan file.
    fn plan_and_approve(&self) -> (String, String) {
        let key = self.key.to_str().unwrap();
        let out = self.homelab(&["plan", "--key", key]);
        assert_eq!(out.code, 0, "plan failed:\n{}\n{}", out.stdout, out.stderr);
        let id = out.stdout.lines().next().and_then(|l| l.strip_prefix("plan ")).expect("plan id");
        let plan = self.repo.path().join(format!("plans/{id}.plan"));
        let a = self.homelab(&["approve", plan.to_str().unwrap(), "--key", key, "--yes"]);
        assert_eq!(a.code, 0, "approve failed: {}", a.stderr);
        (id.to_owned(), fs::read_to_string(plan).unwrap())
    }

    fn apply(&self, id: &str) -> Output {
        let approved = self.repo.path().join(format!("plans/{id}.approved"));
        self.homelab(&["apply", approved.to_str().unwrap()])
    }

    /// `path` of the service (or `hosts/...` of the repo) with `from` replaced by `to`; an empty
    /// `from` writes `to` as a new file.
    fn edit(&self, svc: &str, (path, from, to): (&str, &str, &str)) {
        let p = if path.starts_with("hosts/") {
            self.repo.path().join(path)
        } else {
            self.repo.path().join("services").join(svc).join(path)
        };
        if from.is_empty() {
            assert!(!p.exists(), "{} exists", p.display());
            fs::write(&p, to).unwrap();
            return;
        }
        let text = fs::read_to_string(&p).unwrap();
        assert!(text.contains(from), "{}: no {from:?} in:\n{text}", p.display());
        fs::write(&p, text.replace(from, to)).unwrap();
    }

    fn root(&self, node: &str) -> PathBuf {
        self.lab.node(node).root()
    }

    /// `docker exec <container> <argv>` on the node: its stdout, or a panic with its stderr.
    fn exec(&self, node: &str, container: &str, argv: &[&str]) -> String {
        let mut args = vec!["exec", container];
        args.extend(argv);
        let out = self.lab.docker(node, &args);
        assert!(
            out.status.success(),
            "docker exec {container} {argv:?} on {node}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn state(&self, node: &str, container: &str) -> Option<String> {
        let out = self
            .lab
            .docker(node, &["inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", container]);
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// The release `state/services/<svc>` points to on the node.
    fn live(&self, node: &str, svc: &str) -> PathBuf {
        fs::read_link(self.root(node).join("state/services").join(svc))
            .unwrap_or_else(|e| panic!("{svc}@{node} has no live release: {e}"))
    }

    /// The service's own healthcheck, run on the node over ssh as apply runs it.
    fn healthcheck(&self, case: &Case) -> Output {
        let root = self.root(case.node);
        let script = root.join("state/services").join(case.svc).join("healthcheck.sh");
        let out = self.lab.ssh(
            case.node,
            &[
                "env",
                &format!("HOMELAB_ROOT={}", root.display()),
                &format!("HOMELAB_NODE={}", case.node),
                &format!("HOMELAB_SERVICE={}", case.svc),
                "sh",
                script.to_str().unwrap(),
            ],
        );
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The case's config file is in place: the node's release holds the bytes the repository
    /// renders, and the container reads those bytes.
    fn assert_config(&self, case: &Case, want: &str) {
        let (container, inside, rel) = case.config;
        let release = self.root(case.node).join("state/services").join(case.svc).join(rel);
        let on_node = fs::read_to_string(&release)
            .unwrap_or_else(|e| panic!("{}: {} not on the node: {e}", case.svc, release.display()));
        assert_eq!(on_node, want, "{}: {rel} on the node", case.svc);
        if !container.is_empty() {
            assert_eq!(
                self.exec(case.node, container, &["cat", inside]),
                want,
                "{}: {inside}",
                case.svc
            );
        }
    }

    /// The rendered or shipped content of the case's config file as the repository has it now.
    fn config_in_repo(&self, case: &Case) -> String {
        let dir = self.repo.path().join("services").join(case.svc);
        match fs::read_to_string(dir.join(case.config.2)) {
            Ok(text) => text,
            // A template: what the node got is checked against the render below.
            Err(_) => {
                let out = tempfile::tempdir().unwrap();
                let r = self.homelab(&["render", "--out", out.path().to_str().unwrap()]);
                assert_eq!(r.code, 0, "{}", r.stderr);
                fs::read_to_string(out.path().join(case.node).join(case.svc).join(case.config.2))
                    .unwrap()
            }
        }
    }

    /// Writes `token` into the case's data folder through its container; the file lands under
    /// the service's data folder on the node.
    fn write_data(&self, case: &Case, token: &str) {
        let (container, dir) = case.data;
        self.exec(
            case.node,
            container,
            &[
                "sh",
                "-c",
                "mkdir -p \"$1\" && echo \"$2\" > \"$1/corpus-data.txt\"",
                "sh",
                dir,
                token,
            ],
        );
        let found = find_file(&self.root(case.node).join("data").join(case.svc), "corpus-data.txt");
        let found = found
            .unwrap_or_else(|| panic!("{}: the data is not under data/{}", case.svc, case.svc));
        assert_eq!(fs::read_to_string(found).unwrap(), format!("{token}\n"));
    }

    fn read_data(&self, case: &Case) -> String {
        let (container, dir) = case.data;
        self.exec(case.node, container, &["cat", &format!("{dir}/corpus-data.txt")])
    }
}

fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for e in fs::read_dir(dir).ok()? {
        let p = e.ok()?.path();
        if p.is_dir() {
            if let Some(f) = find_file(&p, name) {
                return Some(f);
            }
        } else if p.file_name().is_some_and(|n| n == name) {
            return Some(p);
        }
    }
    None
}

fn token(svc: &str) -> String {
    format!("kept-by-{svc}-{}", std::process::id())
}

/// The whole corpus in the lab: one plan creates every service, a second updates every one of
/// them (a config file and, where the style has one, an image build, an env default, a host
/// variable or a new migration), a third breaks six of them in six different ways. Data written
/// through the containers survives both; the broken ones roll back to their previous config
/// files and stay healthy.
#[test]
fn the_corpus_applies_updates_keeps_its_data_and_rolls_back_in_the_lab() {
    let _one = crate::apply::LAB.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = std::time::Instant::now();
    let site = Site::new(Lab::start(&LAB_NODES));
    assert_eq!(CASES.len(), services().len(), "every corpus service has a case");
    eprintln!("corpus: lab up after {:?}", t0.elapsed());

    // 1. Everything is created, in one plan.
    let (id, plan) = site.plan_and_approve();
    for (_, _, secret) in SECRETS {
        for value in secret.lines().map(|l| l.split_once('=').map_or(l, |(_, v)| v)) {
            assert!(!plan.contains(value), "the plan holds the secret {value}");
        }
    }
    let out = site.apply(&id);
    if std::env::var_os("CORPUS_DEBUG").is_some() && out.code != 0 {
        eprintln!("DEBUG {}\n{}\n{:?}", out.stdout, out.stderr, site.lab.dir());
        std::thread::sleep(std::time::Duration::from_secs(900));
    }
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    eprintln!("corpus: created after {:?}", t0.elapsed());
    for case in CASES {
        for c in case.running {
            assert_eq!(
                site.state(case.node, c).as_deref(),
                Some("running 0"),
                "{c} of {} on {}",
                case.svc,
                case.node
            );
        }
        for c in case.absent {
            assert_eq!(site.state(case.node, c), None, "{c} has a profile nobody asked for");
        }
        for c in case.exited {
            assert_eq!(site.state(case.node, c).as_deref(), Some("exited 0"), "{c} ran once");
        }
        site.assert_config(case, &site.config_in_repo(case));
        site.write_data(case, &token(case.svc));
    }
    // The proxy's published port answers on the node's loopback.
    let published =
        site.lab.ssh("alpha", &["busybox", "wget", "-q", "-O", "-", "http://127.0.0.1:18080/"]);
    assert!(
        String::from_utf8_lossy(&published.stdout).contains("front door"),
        "{}",
        String::from_utf8_lossy(&published.stderr)
    );
    let initialized = site.exec("alpha", "blog-db", &["cat", "/var/lib/mysql/.initialized"]);
    // Applied is applied: nothing is left to do, opt-in profiles and the one-shot migration
    // that exited 0 included.
    let again = site.homelab(&["plan"]);
    assert!(again.code == 0 || again.code == 2, "{}", again.stderr);
    for case in CASES {
        let line = format!("no-op    {}@{}  deployed artifacts match\n", case.svc, case.node);
        assert!(again.stdout.contains(&line), "{} is not a no-op:\n{}", case.svc, again.stdout);
    }

    // 2. Every service is updated; its data is read back, its new config is live.
    for case in CASES {
        for &edit in case.update {
            site.edit(case.svc, edit);
        }
    }
    let (id, plan) = site.plan_and_approve();
    for case in CASES {
        assert!(
            plan.contains(&format!("\nchange update {}@{}", case.svc, case.node)),
            "{} is not updated:\n{plan}",
            case.svc
        );
    }
    let out = site.apply(&id);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    eprintln!("corpus: updated after {:?}", t0.elapsed());
    let mut updated = Vec::new();
    for case in CASES {
        assert_eq!(
            site.read_data(case),
            format!("{}\n", token(case.svc)),
            "{} lost its data",
            case.svc
        );
        let config = site.config_in_repo(case);
        site.assert_config(case, &config);
        let (container, argv, want) = case.probe;
        let got = site.exec(case.node, container, argv);
        assert!(got.contains(want), "{}: the update is not live: {got:?} lacks {want:?}", case.svc);
        updated.push((site.live(case.node, case.svc), config));
    }
    assert_eq!(
        site.exec("alpha", "blog-db", &["cat", "/var/lib/mysql/.initialized"]),
        initialized,
        "the database's init scripts ran again on a database that has data"
    );
    assert_eq!(site.state("edge-a", "tracker-migrate").as_deref(), Some("exited 0"));

    // 3. Six services break, each its own way; they roll back, the rest stay as they are.
    let broken: Vec<&Case> = CASES.iter().filter(|c| !c.breaks.is_empty()).collect();
    assert_eq!(broken.len(), 6);
    for case in &broken {
        for &edit in case.breaks {
            site.edit(case.svc, edit);
        }
    }
    let (id, _) = site.plan_and_approve();
    let out = site.apply(&id);
    assert_eq!(out.code, 1, "a rollback is never success:\n{}\n{}", out.stdout, out.stderr);
    eprintln!("corpus: rolled back after {:?}", t0.elapsed());
    for node in LAB_NODES {
        let journal: serde_json::Value = serde_json::from_slice(
            &fs::read(site.root(node).join(format!("state/deploy/{id}/journal.json"))).unwrap(),
        )
        .unwrap();
        for case in broken.iter().filter(|c| c.node == node) {
            assert_eq!(
                journal["services"][case.svc]["stage"], "rolled-back",
                "{}: {journal}",
                case.svc
            );
        }
    }
    for (case, (live, config)) in CASES.iter().zip(&updated) {
        assert_eq!(&site.live(case.node, case.svc), live, "{} is back on its release", case.svc);
        site.assert_config(case, config);
        assert_eq!(
            site.read_data(case),
            format!("{}\n", token(case.svc)),
            "{} lost its data",
            case.svc
        );
        // A rollback brings the previous release up (recreated containers) but does not wait
        // for its health: a collector that scrapes every second may still show a target down
        // for a moment. Its healthcheck must pass within the contract's own budget.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let health = loop {
            let health = site.healthcheck(case);
            if health.code == 0 || std::time::Instant::now() >= until {
                break health;
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        };
        assert_eq!(
            health.code, 0,
            "{} is unhealthy 30 s after the rollback: {}{}",
            case.svc, health.stdout, health.stderr
        );
    }
    eprintln!("corpus: done after {:?}", t0.elapsed());
}

/// Regression (homelab bug, found by the corpus): a one-shot init container (`restart: "no"`,
/// waited for with `service_completed_successfully`) has exited 0 once its service is up, as
/// it should; `plan` calls that "artifacts match, but `tracker-migrate` is exited" and plans an
/// update of a service that has nothing to do, on every plan (`containers_not_up` in
/// `src/plan/mod.rs` counts every container that is not running).
#[test]
fn a_one_shot_init_container_that_exited_0_is_not_drift() {
    let _one = crate::apply::LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new(Lab::start(&LAB_NODES));
    let (id, _) = site.plan_and_approve();
    let approved = site.repo.path().join(format!("plans/{id}.approved"));
    let out = site.homelab(&["apply", approved.to_str().unwrap(), "--service", "tracker"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(site.state("edge-a", "tracker-migrate").as_deref(), Some("exited 0"));
    let again = site.homelab(&["plan", "--node", "edge-a"]);
    assert!(
        again.stdout.contains("no-op    tracker@edge-a  deployed artifacts match\n"),
        "{}",
        again.stdout
    );
    assert!(again.stdout.contains("one-shot, exited 0: tracker-migrate"), "{}", again.stdout);
    // A long-running container of the same service that is down is still drift, and the files
    // that match are not called "edited by hand".
    let stop = site.lab.docker("edge-a", &["stop", "tracker"]);
    assert!(stop.status.success());
    let again = site.homelab(&["plan", "--node", "edge-a"]);
    assert!(
        again
            .stdout
            .contains("~ update   tracker@edge-a  artifacts match, but `tracker` is exited"),
        "{}",
        again.stdout
    );
    assert!(!again.stdout.contains("edited by hand"), "{}", again.stdout);
}

/// A one-shot job nobody waits for keeps `restart: "no"` (issue 21): forced to
/// `unless-stopped`, the starter kit's import container ran again after every successful exit
/// (7 restarts in 30 s). In the lab: it runs once, exits 0 and stays exited through the
/// stability window, the apply succeeds, and the next plan is a no-op that names it.
#[test]
fn a_one_shot_job_nobody_waits_for_runs_once_and_is_not_drift() {
    let _one = crate::apply::LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new(Lab::start(&LAB_NODES));
    site.edit(
        "tracker",
        (
            "docker-compose.yml",
            "  tracker:\n",
            "  report:\n    image: \"{{ vars.image }}\"\n    container_name: tracker-report\n    restart: \"no\"\n    command: [\"sh\", \"-c\", \"echo run >> /var/lib/tracker/report-runs\"]\n    volumes:\n      - \"{{ data_dir }}/db:/var/lib/tracker\"\n\n  tracker:\n",
        ),
    );
    let v = site.homelab(&["validate"]);
    assert_eq!(v.code, 0, "{}{}", v.stdout, v.stderr);
    let (id, _) = site.plan_and_approve();
    let approved = site.repo.path().join(format!("plans/{id}.approved"));
    let out = site.homelab(&["apply", approved.to_str().unwrap(), "--service", "tracker"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(site.state("edge-a", "tracker-report").as_deref(), Some("exited 0"));
    let runs = fs::read_to_string(site.root("edge-a").join("data/tracker/db/report-runs")).unwrap();
    assert_eq!(runs, "run\n", "the job ran once, through the stability window");
    let again = site.homelab(&["plan", "--node", "edge-a"]);
    assert!(
        again.stdout.contains("no-op    tracker@edge-a  deployed artifacts match\n"),
        "{}",
        again.stdout
    );
    assert!(again.stdout.contains("tracker-report"), "{}", again.stdout);
}

/// The contract gives a data folder its owner and mode, and the engine applies them (issue 21:
/// grafana and n8n needed a hand's `chown 1000` on the node). In the lab: the plan shows the
/// folder, and after the apply the folder on the node is 1000:1000, mode 0750, with the
/// service healthy.
#[test]
fn a_folder_of_the_contract_gets_its_owner_and_mode_from_the_engine() {
    use std::os::unix::fs::MetadataExt;
    let _one = crate::apply::LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new(Lab::start(&LAB_NODES));
    site.edit(
        "tracker",
        (
            "service.yaml",
            "persistence:\n",
            "persistence:\n  folders:\n    - path: data/tracker/db\n      owner: \"1000:1000\"\n      mode: \"0750\"\n",
        ),
    );
    let v = site.homelab(&["validate"]);
    assert_eq!(v.code, 0, "{}{}", v.stdout, v.stderr);
    let (id, plan) = site.plan_and_approve();
    assert!(plan.contains("\nfolder data/tracker/db owner=1000:1000 mode=0750\n"), "{plan}");
    let approved = site.repo.path().join(format!("plans/{id}.approved"));
    let out = site.homelab(&["apply", approved.to_str().unwrap(), "--service", "tracker"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let meta = fs::metadata(site.root("edge-a").join("data/tracker/db")).unwrap();
    assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o7777), (1000, 1000, 0o750));
}

/// Regression (homelab bug, found by the corpus): release files are unpacked with the
/// archive's mtime, 1970-01-01 for every file (`header.set_mtime(0)` in
/// `src/apply/remote.rs`, `tar -x -o` on the node); BuildKit's context transfer takes a file of
/// the same size and mtime as unchanged, so a same-size edit of a shipped build context is
/// `CACHED`, and the service is reported "at the new version" while it runs the old code.
#[test]
fn a_same_size_change_in_a_build_context_is_built() {
    let _one = crate::apply::LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new(Lab::start(&LAB_NODES));
    let (id, _) = site.plan_and_approve();
    let approved = site.repo.path().join(format!("plans/{id}.approved"));
    let out = site.homelab(&["apply", approved.to_str().unwrap(), "--service", "notes"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    site.edit("notes", ("app/www/index.html", "Your notes live", "Your notes LIVE"));
    let (id, _) = site.plan_and_approve();
    let approved = site.repo.path().join(format!("plans/{id}.approved"));
    let out = site.homelab(&["apply", approved.to_str().unwrap(), "--service", "notes"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let page = site.exec("alpha", "notes", &["cat", "/srv/www/index.html"]);
    assert!(page.contains("Your notes LIVE"), "the container runs the old build:\n{page}");
}

/// Regression (homelab bug, found by the corpus): a service built under one tag
/// (`image: app:local` with `build:`) is rebuilt under that tag by the update; when the update
/// fails its healthcheck, the rollback recreates the previous release's containers from the
/// tag, which now holds the failed build: the journal says `rolled-back`, the service is down.
/// (The corpus's `notes` tags each version, which is what a rollback needs today.)
#[test]
fn the_rollback_of_a_built_service_runs_the_previous_build() {
    let _one = crate::apply::LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new(Lab::start(&LAB_NODES));
    site.edit(
        "notes",
        ("docker-compose.yml", "\"corpus-notes:{{ vars.version }}\"", "corpus-notes:local"),
    );
    let (id, _) = site.plan_and_approve();
    let approved = site.repo.path().join(format!("plans/{id}.approved"));
    let out = site.homelab(&["apply", approved.to_str().unwrap(), "--service", "notes"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    site.edit("notes", ("app/notes-server", "-p 8000", "-p 18000"));
    let (id, _) = site.plan_and_approve();
    let approved = site.repo.path().join(format!("plans/{id}.approved"));
    let out = site.homelab(&["apply", approved.to_str().unwrap(), "--service", "notes"]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let case = CASES.iter().find(|c| c.svc == "notes").unwrap();
    let health = site.healthcheck(case);
    assert_eq!(health.code, 0, "rolled back, yet: {}{}", health.stdout, health.stderr);
}
