//! `homelab import` (issue 20): published Compose projects (`tests/fixtures/import/`, their
//! `.env` and secret files written here, never tracked) become services that `validate`
//! accepts, with every edit printed; nothing outside `services/SVC/` and the node's
//! `services.yaml` changes, no value of a `.env` reaches the repository, an existing service
//! is never overwritten, and bad input writes nothing.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::support::{copy_tree, fixtures, Output, Snapshot, Tree};

/// A published project in a temporary folder, with its hidden files.
struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn fixture(name: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        copy_tree(&fixtures().join("import").join(name), &dir.path().join(name));
        Project { dir }
    }

    /// An empty project folder `name` (write its files with `write`).
    fn empty(name: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join(name)).unwrap();
        Project { dir }
    }

    fn path(&self) -> PathBuf {
        let mut entries = fs::read_dir(self.dir.path()).unwrap();
        entries.next().unwrap().unwrap().path()
    }

    fn write(&self, rel: &str, text: &str) -> &Project {
        let p = self.path().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
        self
    }
}

fn import(tree: &Tree, project: &Path, args: &[&str]) -> Output {
    let dir = project.to_str().unwrap();
    let mut all = vec!["import", dir];
    all.extend_from_slice(args);
    tree.homelab(&all)
}

/// Every file of the tree, as text, joined: what a leaked value would be found in.
pub(crate) fn all_text(dir: &Path) -> String {
    Snapshot::of(dir).0.values().map(|(_, b)| String::from_utf8_lossy(b).into_owned()).collect()
}

/// Imports `project` as `svc` on `node` and checks what holds for every import: exit 0, the
/// repository validates, only `services/<svc>/` and `hosts/<node>/services.yaml` changed,
/// the project folder did not, and no value of `secrets` reached the repository.
fn imported(
    tree: &Tree,
    project: &Project,
    svc: &str,
    node: &str,
    extra: &[&str],
    secrets: &[&str],
) -> Output {
    let before = Snapshot::of(tree.path());
    let project_before = Snapshot::of(&project.path());
    let mut args = vec!["--as", svc, "--node", node];
    args.extend_from_slice(extra);
    let out = import(tree, &project.path(), &args);
    assert_eq!(out.code, 0, "import {svc}: {}\n{}", out.stdout, out.stderr);
    let valid = tree.homelab(&["validate"]);
    assert_eq!(valid.code, 0, "{svc} does not validate:\n{}", valid.stderr);
    let after = Snapshot::of(tree.path());
    let host = format!("hosts/{}/services.yaml", node.to_lowercase());
    let prefix = format!("services/{svc}");
    let keys: std::collections::BTreeSet<&String> = before.0.keys().chain(after.0.keys()).collect();
    let changed: Vec<&String> = keys
        .into_iter()
        .filter(|k| before.0.get(*k) != after.0.get(*k))
        .filter(|k| **k != host && **k != prefix && !k.starts_with(&format!("{prefix}/")))
        .collect();
    assert!(changed.is_empty(), "import {svc} changed {changed:?}");
    assert_ne!(before.0.get(&host), after.0.get(&host), "{host} lists {svc}");
    project_before.assert_same(&Snapshot::of(&project.path()), "the project folder");
    let text = all_text(tree.path());
    for s in secrets {
        assert!(!text.contains(s), "the value `{s}` reached the repository");
    }
    out
}

fn read(tree: &Tree, rel: &str) -> String {
    fs::read_to_string(tree.path().join(rel)).unwrap()
}

/// Host folders under `${DOCKER_VOLUME_STORAGE:-/mnt/…}`, `env_file: .env`, a literal
/// `MYSQL_ROOT_PASSWORD`, `restart: always`, a renamed container others reach by its old name,
/// a key that already carries the service's name, a database's named volume, depends_on
/// between the containers, a healthcheck, a published port and a top-level `name:`.
#[test]
fn a_stack_with_host_folders_under_a_variable_imports_and_validates() {
    let tree = Tree::base();
    let p = Project::fixture("stack");
    p.write(
        ".env",
        "MYSQL_PASSWORD=very-secret-1\nNEXTCLOUD_ADMIN_PASSWORD=very-secret-2\nTZ=Europe/Warsaw\n",
    );
    let out = imported(
        &tree,
        &p,
        "stack",
        "alpha",
        &[],
        &["very-secret-1", "very-secret-2", "Europe/Warsaw", "ROOT_PASSWORD: example"],
    );
    let compose = read(&tree, "services/stack/docker-compose.yml");
    for expected in [
        "name: stack\n",
        "    container_name: stack\n    networks: {default: {aliases: [nextcloud]}}\n",
        "    container_name: stack_db\n",
        "    container_name: stack-redis\n",
        "      - \"{{ data_dir }}/html:/var/www/html\"\n",
        "      - \"{{ data_dir }}/db:/var/lib/mysql\"\n",
        "      - \"{{ data_dir }}/redis-data:/data\"\n",
        "    env_file: \"{{ config_dir }}/.env\"\n",
        "      MYSQL_ROOT_PASSWORD: ${MYSQL_ROOT_PASSWORD}\n",
        "      - 0.0.0.0:8080:80\n",
        "    depends_on:\n      - stack_db\n      - redis\n",
    ] {
        assert!(compose.contains(expected), "no {expected:?} in\n{compose}");
    }
    assert!(!compose.contains("restart: always") && !compose.contains("DOCKER_VOLUME_STORAGE"));
    assert_eq!(compose.matches("restart: unless-stopped").count(), 3);
    let contract = read(&tree, "services/stack/service.yaml");
    for expected in [
        "owner_node: alpha\nexposure: lan\n",
        "dependencies: []\n",
        "healthcheck:\n  interval: 30s\n  timeout: 5s\n  retries: 5\n  start_period: 1m\n",
        "persistence:\n  paths: [data/stack, config/stack]\n",
        "    - name: MYSQL_ROOT_PASSWORD\n      secret: true\n      required: true\n",
        "    - name: TZ\n      secret: false\n      required: false\n",
        "    - name: stack-db\n      paths: [data/stack/db]\n      critical: true\n",
        "    - name: stack-redis\n      paths: [data/stack/redis-data]\n",
    ] {
        assert!(contract.contains(expected), "no {expected:?} in\n{contract}");
    }
    assert_eq!(
        read(&tree, "services/stack/env.example")
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>(),
        ["MYSQL_PASSWORD=", "MYSQL_ROOT_PASSWORD=", "NEXTCLOUD_ADMIN_PASSWORD=", "TZ="]
    );
    let health = read(&tree, "services/stack/healthcheck.sh");
    assert!(health.starts_with("#!/bin/sh\n"), "{health}");
    assert!(health.contains("for c in stack_db; do\n  health=$(docker inspect"), "{health}");
    assert!(
        fs::metadata(tree.path().join("services/stack/healthcheck.sh"))
            .unwrap()
            .permissions()
            .mode()
            & 0o111
            != 0
    );
    assert!(
        read(&tree, "hosts/alpha/services.yaml").ends_with("  - name: stack\n    exposure: lan\n")
    );
    // Every edit is printed with its line and reason, and the README keeps the list.
    for expected in [
        "edit stack/docker-compose.yml:9 services.stack.container_name: `nextcloud` → `stack` (",
        "edit stack/docker-compose.yml:18 services.stack.volumes[0]: `${DOCKER_VOLUME_STORAGE:-/mnt/docker-volumes}/stack/html` → `{{ data_dir }}/html` (a host folder under a variable",
        "edit stack/docker-compose.yml:13 services.stack.env_file: `.env` → `{{ config_dir }}/.env` (a hidden file never ships",
        "edit stack/docker-compose.yml:27 MYSQL_ROOT_PASSWORD: value → `${MYSQL_ROOT_PASSWORD}` (a literal secret in Git",
        "edit hosts/alpha/services.yaml: added `stack` with exposure `lan`",
        "set in /opt/homelab/config/stack/.env on `alpha`: MYSQL_PASSWORD, MYSQL_ROOT_PASSWORD, NEXTCLOUD_ADMIN_PASSWORD\n",
    ] {
        assert!(out.stdout.contains(expected), "no {expected:?} in\n{}", out.stdout);
    }
    assert!(read(&tree, "services/stack/README.md")
        .contains("services.stack.container_name: `nextcloud` → `stack`"));
}

/// A variable that the project's `.env` sets to a relative folder (`UPLOAD_LOCATION=./library`:
/// the release folder on a node) and a variable defaulting to one, a writable relative bind, a
/// shipped config folder mounted writable, a one-shot init container, `depends_on` with
/// conditions, Docker's `{{.Name}}`, a key carrying the service's name and a `compose.yaml`.
#[test]
fn relative_folders_behind_variables_move_to_the_data_folder() {
    let tree = Tree::base();
    let p = Project::fixture("gallery");
    p.write(".env", "UPLOAD_LOCATION=./library\nDB_PASSWORD=postgres-secret-value\n");
    imported(&tree, &p, "gallery", "edge-a", &[], &["postgres-secret-value"]);
    let compose = read(&tree, "services/gallery/docker-compose.yml");
    assert!(!tree.path().join("services/gallery/compose.yaml").exists());
    for expected in [
        "    container_name: gallery-server\n",
        "    container_name: gallery-migrate\n",
        "    container_name: gallery-database\n",
        "      - \"{{ data_dir }}/library:/data\"\n",
        "      - \"{{ data_dir }}/config:/config\"\n",
        "      - ./conf:/etc/gallery:ro\n",
        "        source: \"{{ data_dir }}/postgres\"\n",
        "        tag: \"{{ '{{' }}.Name}}\"\n",
        "    restart: \"no\"\n",
        "      - \"0.0.0.0:${GALLERY_PORT:-2283}:2283\"\n",
        "        condition: service_completed_successfully\n",
    ] {
        assert!(compose.contains(expected), "no {expected:?} in\n{compose}");
    }
    assert!(!compose.contains("${UPLOAD_LOCATION}") && !compose.contains("restart: always"));
    assert_eq!(
        fs::read_to_string(tree.path().join("services/gallery/conf/gallery.yml")).unwrap(),
        fs::read_to_string(p.path().join("conf/gallery.yml")).unwrap()
    );
    let contract = read(&tree, "services/gallery/service.yaml");
    assert!(
        contract.contains("    - name: gallery-database\n      paths: [data/gallery/postgres]\n"),
        "{contract}"
    );
    assert!(contract.contains("host_paths:\n  - \"/etc/localtime\"\n"), "{contract}");
    assert!(
        !contract.contains("UPLOAD_LOCATION"),
        "a variable that only named a host folder is gone: {contract}"
    );
    // The one-shot container is not expected to be running.
    let health = read(&tree, "services/gallery/healthcheck.sh");
    assert!(health.contains("for c in gallery-database gallery-server; do"), "{health}");
    // The rendered Docker template comes out as Docker wrote it.
    let out = tree.dir.path().join("out");
    let r = tree.homelab(&[
        "render",
        "--node",
        "edge-a",
        "--service",
        "gallery",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let rendered = fs::read_to_string(out.join("edge-a/gallery/docker-compose.yml")).unwrap();
    assert!(
        rendered.contains("tag: \"{{.Name}}\"")
            && rendered.contains("/opt/homelab/data/gallery/library:/data"),
        "{rendered}"
    );
}

/// One container: a literal token, a secret's default, a shipped env file, a writable shipped
/// folder, a secret file, the Docker socket, `restart: on-failure` on the main container, and
/// an exposure given on the command line.
#[test]
fn secrets_stay_out_and_shipped_files_are_copied() {
    let tree = Tree::base();
    let p = Project::fixture("proxy");
    p.write("secrets/api_key.txt", "sk-live-0123456789\n");
    let out = imported(
        &tree,
        &p,
        "proxy",
        "alpha",
        &["--exposure", "tailnet"],
        &["sk-live-0123456789", "abc123", "changeme"],
    );
    let compose = read(&tree, "services/proxy/docker-compose.yml");
    for expected in [
        "    container_name: proxy\n    restart: unless-stopped\n",
        "      - \"API_TOKEN=${API_TOKEN}\"\n",
        "      - ADMIN_PASSWORD=${ADMIN_PASSWORD}\n",
        "      - ./html:/usr/share/nginx/html:ro\n",
        "      - \"{{ data_dir }}/logs:/var/log/nginx\"\n",
        "    file: \"{{ config_dir }}/api_key.txt\"\n",
        "      - \"127.0.0.1:8081:80\"\n",
        "      - ./proxy.env\n",
    ] {
        assert!(compose.contains(expected), "no {expected:?} in\n{compose}");
    }
    for f in ["nginx.conf", "proxy.env", "html/index.html"] {
        assert_eq!(
            fs::read(tree.path().join("services/proxy").join(f)).unwrap(),
            fs::read(p.path().join(f)).unwrap(),
            "{f}"
        );
    }
    assert!(!tree.path().join("services/proxy/secrets").exists());
    let contract = read(&tree, "services/proxy/service.yaml");
    assert!(
        contract.contains("exposure: tailnet\n")
            && contract.contains("host_paths:\n  - \"/var/run/docker.sock\"\n"),
        "{contract}"
    );
    assert!(
        out.stdout.contains("put `api_key.txt` in /opt/homelab/config/proxy/ on `alpha`"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("and the plan creates it on `alpha` before the service comes up"),
        "{}",
        out.stdout
    );
    assert!(contract.contains("networks:\n  - \"proxy\"\n"), "{contract}");
    assert!(read(&tree, "hosts/alpha/services.yaml")
        .contains("  - name: proxy\n    exposure: tailnet\n"));
}

/// Issue 21: the starter kit reaches Ollama as `ollama`, the `container_name` its services
/// merge from an anchor (`<<: *service-ollama`), on a network of the project (`demo`). Import
/// renamed the container but kept the old name reachable only for a container on the default
/// network with no `networks` of its own, so such a project was taken back out (rule
/// `compose-host`). The alias now goes on every network the container joins: a merged
/// `networks` gets a key of the block's own, an own list or map is written again as a map,
/// its other settings and aliases kept. The kit's model pull, with no restart policy and
/// nothing waiting for it, got `unless-stopped` and re-ran after every exit: it is a job now.
#[test]
fn the_starter_kits_shape_keeps_its_old_names_reachable_and_its_pull_job_runs_once() {
    let tree = Tree::base();
    let p = Project::empty("kit");
    p.write(
        "docker-compose.yml",
        "x-ollama: &service-ollama\n  image: ollama/ollama:latest\n  container_name: ollama\n  networks: ['demo']\n  restart: unless-stopped\n\nservices:\n  web:\n    image: ghcr.io/open-webui/open-webui:main\n    container_name: open-webui\n    restart: unless-stopped\n    networks:\n      - demo\n    environment:\n      OLLAMA_BASE_URL: http://ollama:11434\n      SEARXNG_QUERY_URL: http://searxng:8080/search?q=<query>\n  ollama-cpu:\n    <<: *service-ollama\n  search:\n    image: searxng/searxng:latest\n    container_name: searxng\n    restart: unless-stopped\n    networks:\n      demo:\n        aliases: [search-engine]\n  ollama-pull:\n    image: ollama/ollama:latest\n    networks: ['demo']\n    entrypoint: /bin/sh\n    environment:\n      - OLLAMA_HOST=ollama:11434\n    command: [\"-c\", \"sleep 3; ollama pull llama3.2\"]\n    depends_on:\n      - ollama-cpu\n\nnetworks:\n  demo:\n",
    );
    let out = imported(&tree, &p, "kit", "alpha", &[], &[]);
    let compose = read(&tree, "services/kit/docker-compose.yml");
    for expected in [
        "  web:\n    image: ghcr.io/open-webui/open-webui:main\n    container_name: kit-web\n    restart: unless-stopped\n    networks:\n      - demo\n",
        "  ollama-cpu:\n    container_name: kit-ollama-cpu\n    networks: {demo: {aliases: [ollama]}}\n",
        "    <<: *service-ollama\n",
        "    container_name: kit-search\n    restart: unless-stopped\n    networks: {demo: {aliases: [search-engine, searxng]}}\n  ollama-pull:\n",
        // The model pull runs once: no restart policy of its own, nothing waits for it.
        "  ollama-pull:\n    container_name: kit-ollama-pull\n    restart: \"no\"\n",
    ] {
        assert!(compose.contains(expected), "no {expected:?} in\n{compose}");
    }
    for expected in [
        "services.ollama-cpu.container_name: `ollama` → `kit-ollama-cpu` (",
        "`ollama` stays reachable as a network alias",
        "services.search.container_name: `searxng` → `kit-search` (",
        "`searxng` stays reachable as a network alias",
        "services.ollama-pull.restart: added `restart: \"no\"` (the project gives it no restart policy",
    ] {
        assert!(out.stdout.contains(expected), "no {expected:?} in\n{}", out.stdout);
    }
    // Nothing reaches `open-webui`: no alias is made for it.
    assert!(!compose.contains("[open-webui]"), "{compose}");
    // The healthcheck waits for what keeps running, not for the job.
    let health = read(&tree, "services/kit/healthcheck.sh");
    assert!(health.contains("kit-ollama-cpu") && !health.contains("kit-ollama-pull"), "{health}");
    // And checks that the renamed containers answer to the names the others reach them by.
    for (name, old) in [("kit-ollama-cpu", "ollama"), ("kit-search", "searxng")] {
        assert!(
            health.contains(&format!("{{{{end}}}}{{{{end}}}}' {name} 2>&1) || fail \"{name}: $names\"\nfor a in {old}; do\n")),
            "{health}"
        );
    }
}

/// `depends_on` naming a service of the homelab (not of the project) becomes a dependency of
/// the contract; a display name is accepted for the node.
#[test]
fn depends_on_another_homelab_service_becomes_a_dependency() {
    let tree = Tree::base();
    let p = Project::empty("sensor");
    p.write(
        "docker-compose.yml",
        "services:\n  sensor:\n    image: busybox\n    depends_on:\n      - broker\n      - cache\n  cache:\n    image: busybox\n",
    );
    imported(&tree, &p, "sensor", "EDGE-A", &[], &[]);
    let contract = read(&tree, "services/sensor/service.yaml");
    assert!(contract.contains("dependencies:\n  - service: broker\n"), "{contract}");
    assert!(contract.contains("exposure: internal\n"), "no port published: {contract}");
    let compose = read(&tree, "services/sensor/docker-compose.yml");
    assert!(
        compose.contains("    depends_on:\n      - cache\n") && !compose.contains("broker"),
        "{compose}"
    );
    assert!(read(&tree, "hosts/edge-a/services.yaml").contains("  - name: sensor\n"));
}

/// Issue 20: on a node with a LAN address, `lan` ports are published on `{{ lan_ip }}` (a
/// published `0.0.0.0` too, which validate refuses there), and the result validates and
/// renders with the address.
#[test]
fn lan_ports_publish_on_the_nodes_lan_address() {
    let tree = Tree::base();
    let topology = read(&tree, "inventory/topology.yaml");
    let with_lan = topology.replace(
        "      address: 10.77.0.3\n",
        "      address: 10.77.0.3\n    lan_address: 192.168.1.10\n",
    );
    assert_ne!(with_lan, topology, "the base topology changed: edge-a's address moved");
    tree.write("inventory/topology.yaml", with_lan);
    let p = Project::empty("gitea");
    p.write(
        "compose.yaml",
        "services:\n  gitea:\n    image: gitea/gitea\n    ports:\n      - \"3000:3000\"\n      - 0.0.0.0:2222:22\n",
    );
    let out = imported(&tree, &p, "gitea", "edge-a", &[], &[]);
    assert!(out.stdout.contains("`3000:3000` → `{{ lan_ip }}:3000:3000`"), "{}", out.stdout);
    let compose = read(&tree, "services/gitea/docker-compose.yml");
    assert!(
        compose.contains("      - \"{{ lan_ip }}:3000:3000\"\n      - \"{{ lan_ip }}:2222:22\"\n"),
        "{compose}"
    );
    let dir = tempfile::tempdir().unwrap();
    let r = tree.homelab(&[
        "render",
        "--node",
        "edge-a",
        "--service",
        "gitea",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let rendered = fs::read_to_string(dir.path().join("edge-a/gitea/docker-compose.yml")).unwrap();
    assert!(rendered.contains("      - \"192.168.1.10:3000:3000\"\n"), "{rendered}");
}

/// `build: .` ships the project folder, less the compose file, the files import writes
/// itself and hidden files (`.env`, `.git`).
#[test]
fn a_build_context_ships_the_project_without_its_compose_file_or_hidden_files() {
    let tree = Tree::base();
    let p = Project::empty("tool");
    p.write("compose.yaml", "services:\n  tool:\n    build: .\n    env_file: .env\n")
        .write("Dockerfile", "FROM busybox\nCOPY run.sh /run.sh\n")
        .write("run.sh", "#!/bin/sh\nexec sleep 1000\n")
        .write("README.md", "the project's own readme\n")
        .write(".env", "TOOL_TOKEN=do-not-copy-42\n")
        .write(".git/config", "[core]\n");
    fs::set_permissions(p.path().join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    imported(&tree, &p, "tool", "alpha", &[], &["do-not-copy-42"]);
    let mode = |f: &str| {
        fs::metadata(tree.path().join("services/tool").join(f)).unwrap().permissions().mode()
            & 0o777
    };
    assert_eq!(
        (mode("run.sh"), mode("Dockerfile")),
        (0o755, 0o644),
        "an executable ships executable"
    );
    let mut shipped: Vec<String> =
        Snapshot::of(&tree.path().join("services/tool")).0.into_keys().collect();
    shipped.sort();
    assert_eq!(
        shipped,
        [
            "Dockerfile",
            "README.md",
            "docker-compose.yml",
            "env.example",
            "healthcheck.sh",
            "run.sh",
            "service.yaml"
        ]
    );
    assert!(read(&tree, "services/tool/README.md")
        .starts_with("# tool\n\nImported with `homelab import`"));
    assert!(read(&tree, "services/tool/env.example").contains("\nTOOL_TOKEN=\n"));
}

#[test]
fn an_existing_service_is_never_overwritten() {
    let tree = Tree::base();
    let p = Project::fixture("proxy");
    p.write("secrets/api_key.txt", "x\n");
    imported(&tree, &p, "proxy", "alpha", &["--exposure", "tailnet"], &[]);
    let before = Snapshot::of(tree.path());
    let again =
        import(&tree, &p.path(), &["--as", "proxy", "--node", "alpha", "--exposure", "tailnet"]);
    assert_eq!(again.code, 1, "{}", again.stderr);
    assert!(
        again.stderr.contains("`services/proxy` exists already: import never overwrites"),
        "{}",
        again.stderr
    );
    // The base fixture's own service, and a folder without a contract, too.
    let app = import(&tree, &p.path(), &["--as", "app", "--node", "alpha"]);
    assert!(
        app.code == 1 && app.stderr.contains("`services/app` exists already"),
        "{}",
        app.stderr
    );
    fs::create_dir(tree.path().join("services/half")).unwrap();
    let before_half = Snapshot::of(tree.path());
    let half = import(&tree, &p.path(), &["--as", "half", "--node", "alpha"]);
    assert!(
        half.code == 1 && half.stderr.contains("`services/half` exists already"),
        "{}",
        half.stderr
    );
    before_half.assert_same(&Snapshot::of(tree.path()), "a refused import");
    fs::remove_dir(tree.path().join("services/half")).unwrap();
    before.assert_same(&Snapshot::of(tree.path()), "a refused import");
}

/// Bad input: a clear error naming what is wrong (file, line, field), exit 1, nothing written.
#[test]
fn bad_input_is_refused_and_writes_nothing() {
    let tree = Tree::base();
    let before = Snapshot::of(tree.path());
    let ok = Project::fixture("proxy");
    let no_compose = Project::empty("empty");
    no_compose.write("README.md", "no compose file here\n");
    let broken = Project::empty("broken");
    broken.write("compose.yaml", "services:\n  app:\n    image: [unclosed\n    ports: x\n");
    let internal = Project::empty("web");
    internal.write(
        "docker-compose.yml",
        "services:\n  web:\n    image: nginx\n    ports:\n      - 8080:80\n",
    );
    let missing = Project::empty("miss");
    missing.write("docker-compose.yml", "services:\n  miss:\n    image: nginx\n    volumes:\n      - ./site.conf:/etc/site.conf:ro\n");
    let two = Project::empty("two");
    two.write("compose.yaml", "services: {}\n").write("docker-compose.yml", "services: {}\n");
    let nowhere = ok.dir.path().join("nowhere");
    let cases: Vec<(PathBuf, Vec<&str>, &str)> = vec![
        (nowhere.clone(), vec!["--as", "x", "--node", "alpha"], "does not exist"),
        (no_compose.path(), vec!["--as", "x", "--node", "alpha"], "no compose file in `"),
        (broken.path(), vec!["--as", "x", "--node", "alpha"], "error[yaml]: broken/compose.yaml:"),
        (ok.path(), vec!["--as", "My_Proxy", "--node", "alpha"], "`My_Proxy` is not a service name: expected"),
        (ok.path(), vec!["--as", "proxy", "--node", "nowhere"], "unknown node `nowhere`: expected one of `alpha`"),
        (internal.path(), vec!["--as", "web2", "--node", "alpha", "--exposure", "internal"], "web/docker-compose.yml:5: `services.web.ports[0]`: publishes a host port, but the exposure is `internal`"),
        (missing.path(), vec!["--as", "miss", "--node", "alpha"], "miss/docker-compose.yml:5: `services.miss.volumes[0]`: `./site.conf` is mounted read-only but does not exist in the project"),
        (two.path(), vec!["--as", "two", "--node", "alpha"], "two compose files in"),
    ];
    for (dir, args, expected) in cases {
        let out = import(&tree, &dir, &args);
        assert_eq!(out.code, 1, "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains(expected),
            "{args:?}: expected {expected:?} in\n{}",
            out.stderr
        );
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
        before.assert_same(&Snapshot::of(tree.path()), &format!("{args:?}"));
    }
}

/// A result that would not validate (here: two services publishing one port on one node) is
/// taken back out, and the problem is shown.
#[test]
fn an_import_that_would_not_validate_is_taken_back_out() {
    let tree = Tree::base();
    let p = Project::fixture("stack");
    p.write(".env", "TZ=UTC\n");
    imported(&tree, &p, "stack", "alpha", &[], &[]);
    let before = Snapshot::of(tree.path());
    let out = import(&tree, &p.path(), &["--as", "stack-two", "--node", "alpha"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stderr.contains("error[port-conflict]"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("the imported service would not validate (1 problem); nothing was written"),
        "{}",
        out.stderr
    );
    before.assert_same(&Snapshot::of(tree.path()), "an import taken back out");
}

/// In the lab: a project imported with no edit by hand (its secret put on the node, as the
/// output says) is planned and applied; its containers run healthy, the host folder that was
/// behind a variable is the service's data folder on the node, and its config file is there.
/// Its seed job runs once (issue 21: import gave such a job `unless-stopped`), and the name
/// its database reaches the renamed web container by, on the project's own network, resolves.
#[test]
fn an_imported_project_plans_and_applies_on_a_lab_node() {
    use crate::apply::{Site, LAB, NODES};
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new(crate::lab::Lab::start(&NODES));
    let p = Project::empty("notes");
    p.write(
        "docker-compose.yml",
        &format!(
            "services:\n  notes:\n    image: {image}\n    container_name: web\n    restart: always\n    networks: [back]\n    env_file: .env\n    command: [\"sh\", \"-c\", \"cp /etc/notes/motd /www/index.html && exec httpd -f -p 8080 -h /www\"]\n    volumes:\n      - ${{DATA_ROOT:-/mnt/docker-volumes}}/notes/www:/www\n      - ./conf:/etc/notes\n    healthcheck:\n      test: [\"CMD\", \"wget\", \"-q\", \"-O\", \"-\", \"http://127.0.0.1:8080/\"]\n      interval: 1s\n      timeout: 1s\n      retries: 10\n  notes_db:\n    image: {image}\n    restart: always\n    networks: [back]\n    environment:\n      DB_PASSWORD: ${{DB_PASSWORD}}\n    command: [\"sh\", \"-c\", \"test -n \\\"$$DB_PASSWORD\\\" && until wget -q -O /var/lib/db/ready http://web:8080/; do sleep 1; done && exec sleep 1000000\"]\n    healthcheck:\n      test: [\"CMD\", \"test\", \"-s\", \"/var/lib/db/ready\"]\n      interval: 1s\n      timeout: 1s\n      retries: 30\n    volumes:\n      - ${{DATA_ROOT:-/mnt/docker-volumes}}/notes/db:/var/lib/db\n    depends_on:\n      - notes\n  notes_seed:\n    image: {image}\n    command: [\"true\"]\nnetworks:\n  back:\n",
            image = crate::lab::IMAGE
        ),
    );
    p.write("conf/motd", "imported notes\n");
    p.write(".env", "DB_PASSWORD=lab-secret-0815\n");
    let out =
        site.homelab(&["import", p.path().to_str().unwrap(), "--as", "notes", "--node", "alpha"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("set in "), "{}", out.stdout);
    let config = site.root("alpha").join("config/notes");
    fs::create_dir_all(&config).unwrap();
    fs::write(config.join(".env"), "DB_PASSWORD=lab-secret-0815\n").unwrap();
    let id = site.plan_and_approve();
    let applied = site.apply(&id, &[]);
    assert_eq!(applied.code, 0, "{}\n{}", applied.stdout, applied.stderr);
    assert!(site.running("alpha", "notes") && site.running("alpha", "notes_db"));
    let data = site.root("alpha").join("data/notes");
    assert_eq!(fs::read_to_string(data.join("www/index.html")).unwrap(), "imported notes\n");
    // The database saw its secret, reached the web container by the name the project gave it
    // (`web`, renamed `notes`: a network alias on `back` keeps it), and wrote its data folder.
    assert_eq!(fs::read_to_string(data.join("db/ready")).unwrap(), "imported notes\n");
    let health = site.lab.docker("alpha", &["inspect", "-f", "{{.State.Health.Status}}", "notes"]);
    assert_eq!(String::from_utf8_lossy(&health.stdout).trim(), "healthy");
    // The service's healthcheck (which the apply ran) checks that `notes` answers to `web`:
    // once the container is back on `back` without the alias, it fails saying so.
    let root = site.root("alpha");
    let healthcheck = || {
        let script = root.join("state/services/notes/healthcheck.sh");
        let out = site.lab.ssh(
            "alpha",
            &[
                "env",
                &format!("HOMELAB_ROOT={}", root.display()),
                "HOMELAB_NODE=alpha",
                "HOMELAB_SERVICE=notes",
                "sh",
                script.to_str().unwrap(),
            ],
        );
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    assert_eq!(healthcheck(), (Some(0), "healthy: notes\n".to_owned()));
    for args in [
        ["network", "disconnect", "notes_back", "notes"],
        ["network", "connect", "notes_back", "notes"],
    ] {
        let out = site.lab.docker("alpha", &args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let (code, said) = healthcheck();
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("notes does not answer to web"), "{said}");
    // The seed job (no restart policy, nothing waits for it) runs once: Docker never starts it
    // again, and the apply did not wait for it to keep running.
    let policy = site
        .lab
        .docker("alpha", &["inspect", "-f", "{{.HostConfig.RestartPolicy.Name}}", "notes_seed"]);
    assert_eq!(String::from_utf8_lossy(&policy.stdout).trim(), "no");
    assert!(!crate::import::all_text(site.repo.path()).contains("lab-secret-0815"));
}
