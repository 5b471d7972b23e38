//! `homelab render`: exact artifacts, manifest digests, and byte-identical output however
//! the files were created on disk.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use crate::support::{copy_tree, fixtures, homelab_in, repo_root, Tree};

fn read_tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
                out.insert(rel, fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

/// Copies a tree creating entries in reverse name order, so directory order on disk differs.
fn copy_tree_reversed(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    let mut entries: Vec<_> = fs::read_dir(from).unwrap().map(|e| e.unwrap()).collect();
    entries.sort_by_key(|e| std::cmp::Reverse(e.file_name()));
    for e in entries {
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree_reversed(&e.path(), &target);
        } else {
            fs::copy(e.path(), &target).unwrap();
        }
    }
}

#[test]
fn rendering_is_byte_identical_twice_and_from_a_reordered_copy() {
    let src = repo_root();
    let copy = tempfile::tempdir().unwrap();
    for dir in ["inventory", "hosts", "services", "templates", "plans"] {
        copy_tree_reversed(&src.join(dir), &copy.path().join(dir));
    }
    let out = tempfile::tempdir().unwrap();
    let (a, b, c) = (out.path().join("a"), out.path().join("b"), out.path().join("c"));
    for (repo, dir) in [(src.as_path(), &a), (src.as_path(), &b), (copy.path(), &c)] {
        let r = homelab_in(repo, &["render", "--out", dir.to_str().unwrap()]);
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    let (ta, tb, tc) = (read_tree(&a), read_tree(&b), read_tree(&c));
    assert_eq!(
        ta.len(),
        15 * 3 + 5 + 3,
        "15 instances, each with compose, healthcheck, manifest; 5 overrides; prometheus.yml, Caddyfile, mosquitto.conf"
    );
    assert_eq!(ta, tb);
    assert_eq!(ta, tc);
}

#[test]
fn artifacts_and_manifest_of_one_instance() {
    let tree = Tree::base();
    let out = tempfile::tempdir().unwrap();
    let r = tree.homelab(&[
        "render",
        "--node",
        "EDGE-B",
        "--service",
        "app",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let dir = out.path().join("edge-b/app");
    let names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(
        names,
        ["docker-compose.override.yml", "docker-compose.yml", "healthcheck.sh", "manifest.json"]
    );
    let over = fs::read_to_string(dir.join("docker-compose.override.yml")).unwrap();
    assert!(over.contains("APP_GREETING: \"hello from edge-b\""), "{over}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    for a in manifest["artifacts"].as_array().unwrap() {
        let bytes = fs::read(dir.join(a["name"].as_str().unwrap())).unwrap();
        assert_eq!(a["sha256"].as_str().unwrap(), homelab::digest::sha256_hex(&bytes));
        assert_eq!(a["size"].as_u64().unwrap(), bytes.len() as u64);
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(dir.join("healthcheck.sh")).unwrap().permissions().mode() & 0o777,
        0o755
    );
}

#[test]
fn compose_files_point_at_the_nodes_config_folder_and_hold_no_secret() {
    let tree = Tree::base();
    tree.write("hosts/edge-a/secret-note.txt", "");
    let out = tempfile::tempdir().unwrap();
    let r = tree.homelab(&["render", "--node", "edge-a", "--out", out.path().to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let compose = fs::read_to_string(out.path().join("edge-a/broker/docker-compose.yml")).unwrap();
    assert!(compose.contains("env_file: [\"/opt/homelab/config/broker/.env\"]"), "{compose}");
    assert!(!compose.contains("BROKER_PASSWORD"));
}

#[test]
fn an_undefined_variable_names_the_template_and_line() {
    let tree = Tree::base();
    tree.write(
        "hosts/edge-b/runtime/app/docker-compose.override.yml",
        "services:\n  app:\n    environment:\n      X: \"{{ vars.nope }}\"\n",
    );
    let out = tree.homelab(&["render", "--out", tree.path().join("out").to_str().unwrap()]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("hosts/edge-b/runtime/app/docker-compose.override.yml:4"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("undefined"), "{}", out.stderr);
}

#[test]
fn an_unknown_node_is_named() {
    let out = Tree::base().homelab(&["render", "--node", "nope", "--out", "/tmp/unused"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("unknown node `nope`: expected one of `alpha`, `edge-a`, `edge-b`"),
        "{}",
        out.stderr
    );
}

/// Issue 20: `{{ lan_ip }}` renders as the node's `lan_address` from the topology, so a `lan`
/// port is published on the node's LAN address, not on every address.
#[test]
fn lan_ip_renders_as_the_nodes_lan_address() {
    let tree = Tree::base();
    let topology = fs::read_to_string(tree.path().join("inventory/topology.yaml")).unwrap();
    let with_lan = topology.replace(
        "      address: 10.77.0.3\n",
        "      address: 10.77.0.3\n    lan_address: 192.168.1.20\n",
    );
    assert_ne!(with_lan, topology, "the base topology changed: edge-a's address moved");
    tree.write("inventory/topology.yaml", with_lan);
    let compose =
        fs::read_to_string(tree.path().join("services/broker/docker-compose.yml")).unwrap();
    tree.write(
        "services/broker/docker-compose.yml",
        format!("{compose}    ports:\n      - \"{{{{ lan_ip }}}}:1883:1883\"\n      - target: 8883\n        published: 8883\n        host_ip: \"{{{{ lan_ip }}}}\"\n"),
    );
    let out = tempfile::tempdir().unwrap();
    let r = tree.homelab(&["render", "--node", "edge-a", "--out", out.path().to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let rendered = fs::read_to_string(out.path().join("edge-a/broker/docker-compose.yml")).unwrap();
    assert!(
        rendered.ends_with("    ports:\n      - \"192.168.1.20:1883:1883\"\n      - target: 8883\n        published: 8883\n        host_ip: \"192.168.1.20\"\n"),
        "{rendered}"
    );
    let valid = tree.homelab(&["validate"]);
    assert_eq!(valid.code, 0, "{}", valid.stderr);
}

/// Issue 20: a host's `compose.override.yaml` (beside a `compose.yaml`) is the override, shipped
/// as `docker-compose.override.yml`; `render` says which files the node gets under another name.
#[test]
fn compose_override_yaml_is_the_override_and_renamed_files_are_said() {
    let tree = Tree::base();
    for (from, to) in [
        ("services/app/docker-compose.yml", "services/app/compose.yaml"),
        (
            "hosts/edge-b/runtime/app/docker-compose.override.yml",
            "hosts/edge-b/runtime/app/compose.override.yaml",
        ),
    ] {
        fs::rename(tree.path().join(from), tree.path().join(to)).unwrap();
    }
    let valid = tree.homelab(&["validate"]);
    assert_eq!(valid.code, 0, "{}", valid.stderr);
    let out = tempfile::tempdir().unwrap();
    let r = tree.homelab(&["render", "--node", "edge-b", "--out", out.path().to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let dir = out.path().join("edge-b/app");
    let o = fs::read_to_string(dir.join("docker-compose.override.yml")).unwrap();
    assert!(o.contains("APP_NODE: \"edge-b\""), "{o}");
    assert!(!dir.join("compose.override.yaml").exists());
    assert!(dir.join("docker-compose.yml").exists());
    assert_eq!(
        r.stderr,
        "note: hosts/edge-b/runtime/app/compose.override.yaml ships to the node as docker-compose.override.yml (the name the node's Compose commands use; the repository keeps its own)\n\
         note: services/app/compose.yaml ships to the node as docker-compose.yml (the name the node's Compose commands use; the repository keeps its own)\n"
    );
    // Files named as they ship get no note.
    let plain = Tree::base().homelab(&["render", "--out", out.path().to_str().unwrap()]);
    assert_eq!((plain.code, plain.stderr.as_str()), (0, ""));
}

#[allow(dead_code)]
fn unused() {
    let _ = (fixtures(), copy_tree);
}
