//! The import corpus (issue 20): sixteen Compose projects under `tests/corpus-import/`, written
//! in the styles they are published in (host folders under `${…:-/mnt/…}`, a variable whose
//! value in `.env` is a relative folder, an external network, keys that already carry the
//! service's name, `extends` that brings `depends_on`, a one-shot job, `configs:`, literal
//! passwords, `restart: always`). Each goes through `homelab import` with nothing edited by
//! hand (the node is the only choice made), then validates and plans; in the lab all of them
//! are applied in one plan, all sixteen are updated in a second (each change seen in its
//! container, every data folder kept) and a broken update of every
//! one in a third is rolled back to its healthy previous release.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::support::{Lab as Local, Output};

/// The corpus as published, prepared once per run in the test's own temporary folder: a
/// project's `.env` is kept in Git as `dot.env` (no `.env` file is ever tracked, whatever it
/// holds) and is put back under its own name here.
fn corpus() -> PathBuf {
    static PREPARED: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PREPARED
        .get_or_init(|| {
            let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus-import");
            let dst = Path::new(env!("CARGO_TARGET_TMPDIR")).join("corpus-import");
            let _ = fs::remove_dir_all(&dst);
            crate::support::copy_tree(&src, &dst);
            for e in fs::read_dir(&dst).unwrap() {
                let project = e.unwrap().path();
                if project.join("dot.env").is_file() {
                    fs::rename(project.join("dot.env"), project.join(".env")).unwrap();
                }
            }
            dst
        })
        .clone()
}

/// Every project of the corpus (a folder), by name: the name it is imported as.
fn projects() -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(corpus())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    out.sort();
    out
}

/// `homelab import <project> --as <name> --node alpha`, run by `homelab`: exit 0, or the
/// test fails with what import said.
fn import_all(homelab: &dyn Fn(&[&str]) -> Output) -> BTreeMap<String, String> {
    let mut said = BTreeMap::new();
    for p in projects() {
        let dir = corpus().join(&p);
        let out = homelab(&["import", dir.to_str().unwrap(), "--as", &p, "--node", "alpha"]);
        assert_eq!(out.code, 0, "import {p}:\n{}\n{}", out.stdout, out.stderr);
        said.insert(p, out.stdout);
    }
    said
}

/// The names import says the node's `.env` of a service must set before its first deploy.
fn names_to_set(said: &str) -> Vec<String> {
    said.lines()
        .filter(|l| l.starts_with("before the first deploy, set in "))
        .filter_map(|l| l.rsplit_once(": "))
        .flat_map(|(_, names)| names.split(", ").map(str::to_owned))
        .collect()
}

#[test]
fn the_import_corpus_has_sixteen_projects_with_the_published_styles_that_cost_edits() {
    let all = projects();
    assert!(all.len() >= 16, "{all:?}");
    let text = |p: &str, f: &str| fs::read_to_string(corpus().join(p).join(f)).unwrap();
    // A variable whose value in `.env` is a relative folder (Immich's `UPLOAD_LOCATION`).
    assert!(text("immich", ".env").contains("UPLOAD_LOCATION=./library\n"));
    assert!(text("immich", "docker-compose.yml").contains("${UPLOAD_LOCATION}:"));
    // A host folder under a variable with a default.
    assert!(text("nextcloud", "docker-compose.yml")
        .contains("${DOCKER_VOLUME_STORAGE:-/mnt/docker-volumes}/nextcloud/html:"));
    // An external network, and keys that already carry the service's name.
    assert!(text("traefik", "docker-compose.yml").contains("  proxy:\n    external: true\n"));
    assert!(text("n8n", "docker-compose.yml").contains("\n  n8n-db:\n"));
    assert!(text("matomo", "docker-compose.yml").contains("\n  matomo_db:\n"));
}

/// Every project imports as published, onto one node beside the base fixture's services; the
/// whole homelab then validates and plans every one of them as a create, with the external
/// network as a node-level change, and the reviewer's `show` recomputes that plan.
#[test]
fn every_published_project_imports_validates_and_plans() {
    let lab = Local::new();
    let key = lab.keygen("operator");
    lab.allow(&[("operator@test", "", &key)]);
    let said = import_all(&|args| lab.homelab(args));
    let out = lab.homelab(&["validate"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let read = |rel: &str| lab.read(&format!("repo/services/{rel}"));

    // The relative folder behind a variable is the service's data folder, keeping its name.
    let immich = read("immich/docker-compose.yml");
    assert!(immich.contains("\"{{ data_dir }}/library:/usr/src/app/upload\""), "{immich}");
    assert!(!immich.contains("UPLOAD_LOCATION"), "{immich}");
    // Keys that carry the name are their own container names; the others get the prefix.
    let n8n = read("n8n/docker-compose.yml");
    assert!(n8n.contains("container_name: n8n-db\n"), "{n8n}");
    assert!(!n8n.contains("n8n-n8n-db"), "{n8n}");
    let matomo = read("matomo/docker-compose.yml");
    assert!(matomo.contains("container_name: matomo_db\n"), "{matomo}");
    // What `environment` lists without a value comes from the node's env file: named there.
    let to_set = names_to_set(&said["n8n"]);
    for name in ["POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_NON_ROOT_PASSWORD"] {
        assert!(to_set.iter().any(|n| n == name), "{name}: {}", said["n8n"]);
    }
    // A literal password under a mixed-case name (Gitea's) does not stay in Git.
    let gitea = read("gitea/docker-compose.yml");
    assert!(gitea.contains("- GITEA__database__PASSWD=${GITEA__database__PASSWD}\n"), "{gitea}");
    // Host folders under a variable with a default move under the data folder.
    let nextcloud = read("nextcloud/docker-compose.yml");
    assert!(!nextcloud.contains("DOCKER_VOLUME_STORAGE"), "{nextcloud}");
    assert!(nextcloud.contains("{{ data_dir }}/html:/var/www/html"), "{nextcloud}");
    // The external network is declared, so the plan creates it.
    for svc in ["traefik", "whoami"] {
        assert!(read(&format!("{svc}/service.yaml")).contains("networks:\n  - \"proxy\"\n"));
        assert!(said[svc].contains("the plan creates it on `alpha`"), "{}", said[svc]);
    }

    lab.git_commit();
    let out = lab.plan_with(Some(&key), &[]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    for p in projects() {
        assert!(
            out.stdout.contains(&format!("+ create   {p}@alpha  not deployed on the node yet")),
            "{p}:\n{}",
            out.stdout
        );
    }
    assert!(
        out.stdout.contains("+ network  proxy  created on the node if missing (`external: true`), before traefik, whoami come up"),
        "{}",
        out.stdout
    );
    let id = out.stdout.lines().next().unwrap().strip_prefix("plan ").unwrap().to_owned();
    let shown = lab.homelab(&["show", &format!("repo/plans/{id}.plan")]);
    assert_eq!(shown.code, 0, "{}{}", shown.stdout, shown.stderr);
}

/// The update of the lab test: (service, file it ships, text, replacement, container, where
/// the container sees the file).
const UPDATES: &[(&str, &str, &str, &str, &str, &str)] = &[
    (
        "traefik",
        "dynamic/routes.yml",
        "whoami.lan",
        "whoami.home.lan",
        "traefik",
        "/etc/traefik/dynamic/routes.yml",
    ),
    (
        "nextcloud",
        "php.ini",
        "upload_max_filesize = 512M",
        "upload_max_filesize = 2G",
        "nextcloud",
        "/usr/local/etc/php/conf.d/custom.ini",
    ),
    (
        "immich",
        "immich.json",
        "\"crf\": 23",
        "\"crf\": 30",
        "immich-server",
        "/etc/immich/immich.json",
    ),
    ("gitea", "app.ini", "RUN_MODE = prod", "RUN_MODE = dev", "gitea-server", "/etc/gitea/app.ini"),
    (
        "n8n",
        "init-data.sh",
        "No Environment variables given!",
        "No environment variables given.",
        "n8n-db",
        "/docker-entrypoint-initdb.d/init-data.sh",
    ),
    (
        "monitoring",
        "prometheus/prometheus.yml",
        "scrape_interval: 15s",
        "scrape_interval: 30s",
        "monitoring-prometheus",
        "/etc/prometheus/prometheus.yml",
    ),
    (
        "matomo",
        "config.ini.php",
        "force_ssl = 0",
        "force_ssl = 1",
        "matomo",
        "/etc/matomo/config.ini.php",
    ),
    (
        "starter",
        "seed/demo.txt",
        "demo data, loaded once",
        "demo data, second edition",
        "starter-app",
        "/data/demo.txt",
    ),
    (
        "analytics",
        "clickhouse/logs.xml",
        "<level>warning</level>",
        "<level>error</level>",
        "analytics",
        "/etc/analytics/clickhouse.xml",
    ),
    (
        "mosquitto",
        "config/mosquitto.conf",
        "allow_anonymous true",
        "allow_anonymous false",
        "mosquitto",
        "/mosquitto/config/mosquitto.conf",
    ),
    (
        "pihole",
        "custom/adlists.list",
        "StevenBlack/hosts/",
        "StevenBlack/hosts-extra/",
        "pihole",
        "/etc/pihole-custom/adlists.list",
    ),
    (
        "homepage",
        "config/settings.yaml",
        "theme: dark",
        "theme: light",
        "homepage",
        "/app/config/settings.yaml",
    ),
];

/// The four projects that ship no config file, updated through their compose file: `(service,
/// from, to, container, path, what the path then holds)`, written by the new container.
const COMPOSE_UPDATES: &[(&str, &str, &str, &str, &str, &str)] = &[
    (
        "vaultwarden",
        "https://vault.example.com",
        "https://vault.home.lan",
        "vaultwarden",
        "/data/domain.txt",
        "https://vault.home.lan",
    ),
    (
        "wordpress",
        "WORDPRESS_DB_HOST: db",
        "WORDPRESS_DB_HOST: db:3306",
        "wordpress",
        "/var/www/html/index.html",
        "db=db:3306",
    ),
    (
        "whoami",
        "hostname > /www/index.html",
        "echo whoami-2 > /www/index.html",
        "whoami",
        "/www/index.html",
        "whoami-2",
    ),
    (
        "uptime",
        "mkdir -p /app/data && exec",
        "mkdir -p /app/data && echo uptime-2 > /app/data/release.txt && exec",
        "uptime",
        "/app/data/release.txt",
        "uptime-2",
    ),
];

/// Sixteen services verified side by side on a loaded 2-core lab: the controller's confirmation
/// to the node's dead-man may come late, and the node would roll a healthy deploy back by
/// itself (tested on its own in `apply`); the window is made wide for this test.
const SIXTEEN: [&str; 4] = ["--node", "alpha", "--confirm-timeout", "600"];

/// In the lab, on one node: every project imported as published (its images stand-ins, its
/// `.env` values on the node as import asked), applied in one plan; then an update of every
/// one (the changed files seen in the containers, the data still there); then a broken update of every one, in one plan (two that break the service itself,
/// fourteen whose release fails its check), each rolled back to its previous release, healthy,
/// with its config files and data.
#[test]
fn the_published_projects_run_update_and_roll_back_in_the_lab() {
    use crate::apply::{Site, LAB, NODES};
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new(crate::lab::Lab::start(&NODES));
    let said = import_all(&|args| site.homelab(args));
    let repo = site.repo.path();

    // Stand-ins for the published images: the lab's image under each name.
    let mut images: Vec<String> = Vec::new();
    for p in projects() {
        let compose = fs::read_to_string(repo.join(format!("services/{p}/docker-compose.yml")))
            .unwrap()
            .replace("${IMMICH_VERSION:-release}", "release");
        for l in compose.lines() {
            if let Some(i) = l.trim().strip_prefix("image: ") {
                images.push(i.trim_matches('"').to_owned());
            }
        }
    }
    images.sort();
    images.dedup();
    for i in &images {
        let t = site.lab.docker("alpha", &["tag", crate::lab::IMAGE, i.as_str()]);
        assert!(t.status.success(), "{i}: {}", String::from_utf8_lossy(&t.stderr));
    }
    // The node's `.env` of each service, as its owner fills it in from env.example and what
    // import said to set (the published `.env` values where the project had them).
    let known: BTreeMap<&str, &str> = BTreeMap::from([
        ("UPLOAD_LOCATION", "./library"),
        ("DB_DATA_LOCATION", "./postgres"),
        ("IMMICH_VERSION", "release"),
        ("DB_USERNAME", "postgres"),
        ("DB_DATABASE_NAME", "immich"),
        ("NEXTCLOUD_TRUSTED_DOMAINS", "cloud.lab"),
        ("POSTGRES_DB", "n8n"),
        ("POSTGRES_USER", "n8n-root"),
        ("POSTGRES_NON_ROOT_USER", "n8n"),
    ]);
    for p in projects() {
        let example = fs::read_to_string(repo.join(format!("services/{p}/env.example"))).unwrap();
        let mut names: Vec<String> = example
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| l.split_once('=').map(|(n, _)| n.trim().to_owned()))
            .collect();
        names.extend(names_to_set(&said[&p]));
        names.sort();
        names.dedup();
        let mut env = String::new();
        for name in names {
            let value =
                known.get(name.as_str()).map_or(format!("lab-{p}-value"), |v| v.to_string());
            env.push_str(&format!("{name}={value}\n"));
        }
        let dir = site.root("alpha").join(format!("config/{p}"));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(".env"), env).unwrap();
    }

    let id = site.plan_and_approve();
    let out = site.apply(&id, &SIXTEEN);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let exec = |container: &str, argv: &[&str]| {
        let mut args = vec!["exec", container];
        args.extend_from_slice(argv);
        let out = site.lab.docker("alpha", &args);
        assert!(
            out.status.success(),
            "{container} {argv:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for c in [
        "traefik",
        "whoami",
        "nextcloud",
        "nextcloud_db",
        "nextcloud-redis",
        "immich-server",
        "immich-database",
        "gitea-server",
        "gitea-db",
        "n8n",
        "n8n-db",
        "monitoring-prometheus",
        "monitoring-grafana",
        "monitoring-node-exporter",
        "wordpress",
        "wordpress-db",
        "matomo",
        "matomo_db",
        "starter-app",
        "analytics",
        "analytics-events",
        "vaultwarden",
        "mosquitto",
        "pihole",
        "uptime",
        "homepage",
    ] {
        assert!(site.running("alpha", c), "{c} is not running");
    }
    // The one-shot containers ran and stay exited.
    for c in ["immich-migrate", "starter-import"] {
        let s = site
            .lab
            .docker("alpha", &["inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", c]);
        assert_eq!(String::from_utf8_lossy(&s.stdout).trim(), "exited 0", "{c}");
    }
    // The network the plan created joins the proxy and what it routes to.
    assert!(exec("whoami", &["wget", "-q", "-O", "-", "http://traefik:8080/config.txt"])
        .contains("whoami.lan"));
    // The library behind `UPLOAD_LOCATION=./library` is the service's data folder.
    let data = site.root("alpha").join("data");
    assert_eq!(fs::read_to_string(data.join("immich/library/.migrations")).unwrap(), "migrated\n");
    assert_eq!(exec("nextcloud", &["cat", "/var/www/html/trusted.txt"]), "cloud.lab\n");

    // An update of every project, in one plan (its config file, or its compose file for the
    // four that ship none): each change is what its container sees; the data written before
    // stays.
    let marked: Vec<String> = projects().into_iter().filter(|p| data.join(p).is_dir()).collect();
    for p in &marked {
        fs::write(data.join(p).join("marker.txt"), format!("{p} before the update\n")).unwrap();
    }
    let edit = |rel: &str, from: &str, to: &str| {
        let p = repo.join(rel);
        let text = fs::read_to_string(&p).unwrap();
        assert!(text.contains(from), "{rel}: no `{from}`");
        fs::write(p, text.replace(from, to)).unwrap();
    };
    for (svc, file, from, to, _, _) in UPDATES {
        edit(&format!("services/{svc}/{file}"), from, to);
    }
    for (svc, from, to, _, _, _) in COMPOSE_UPDATES {
        edit(&format!("services/{svc}/docker-compose.yml"), from, to);
    }
    let id = site.plan_and_approve();
    let out = site.apply(&id, &SIXTEEN);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    for (svc, _, _, to, container, path) in UPDATES {
        let seen = exec(container, &["cat", path]);
        assert!(seen.contains(to), "{svc}: {container} sees {path} as\n{seen}");
    }
    for (svc, _, _, container, path, shows) in COMPOSE_UPDATES {
        let seen = exec(container, &["cat", path]);
        assert!(seen.contains(shows), "{svc}: {container} sees {path} as\n{seen}");
    }
    let kept = |why: &str| {
        for p in &marked {
            let marker = fs::read_to_string(data.join(p).join("marker.txt"));
            assert_eq!(marker.ok(), Some(format!("{p} before the update\n")), "{p}, {why}");
        }
    };
    kept("after the update");
    // The one-shot import ran again with the release, on the data it keeps.
    assert_eq!(
        fs::read_to_string(data.join("starter/data/imports")).unwrap(),
        "imported\nimported\n"
    );

    // Broken updates, in one plan: nextcloud's own healthcheck no longer passes, homepage
    // looks for a file the release no longer has. Each is rolled back to the release before,
    // healthy, with its config files and data.
    edit("services/nextcloud/php.ini", "memory_limit = 512M", "memory_limit = 1G");
    edit(
        "services/nextcloud/docker-compose.yml",
        "http://127.0.0.1/php.txt",
        "http://127.0.0.1:81/php.txt",
    );
    let settings = repo.join("services/homepage/config/settings.yaml");
    let text = fs::read_to_string(&settings).unwrap();
    fs::remove_file(&settings).unwrap();
    fs::write(settings.with_extension("yml"), text.replace("theme: light", "theme: blue")).unwrap();
    // Every other project's new release fails its check (as a version that no longer serves
    // would): each of the sixteen goes through a broken update in the same plan.
    for p in projects().iter().filter(|p| !["nextcloud", "homepage"].contains(&p.as_str())) {
        edit(
            &format!("services/{p}/healthcheck.sh"),
            "set -u\n",
            "set -u\necho \"unhealthy: this release does not serve\"; exit 1\n",
        );
    }
    let id = site.plan_and_approve();
    let out = site.apply(&id, &SIXTEEN);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let both = format!("{}{}", out.stdout, out.stderr);
    for svc in projects() {
        let said = format!("[alpha] {svc} rollback: rolled back to ");
        assert!(
            both.lines().any(|l| l.starts_with(&said) && l.ends_with(", healthy")),
            "{svc}:\n{both}"
        );
    }
    let ini = exec("nextcloud", &["cat", "/usr/local/etc/php/conf.d/custom.ini"]);
    assert!(ini.contains("= 2G") && ini.contains("memory_limit = 512M"), "{ini}");
    let health =
        site.lab.docker("alpha", &["inspect", "-f", "{{.State.Health.Status}}", "nextcloud"]);
    assert_eq!(String::from_utf8_lossy(&health.stdout).trim(), "healthy");
    assert!(site.running("alpha", "homepage"));
    assert!(exec("homepage", &["cat", "/app/config/settings.yaml"]).contains("theme: light"));
    kept("after the rollbacks");
    // No value of the nodes' `.env` reached the repository.
    assert!(!crate::import::all_text(repo).contains("lab-nextcloud-value"));
}
