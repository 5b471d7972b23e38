//! `homelab graph`: the edge the owner cares about, deterministic order, cycles printed.

use crate::support::{homelab_in, repo_root, Tree};

#[test]
fn dot_shows_homeassistant_depending_on_mosquitto_across_nodes() {
    let out = homelab_in(&repo_root(), &["graph", "--format", "dot"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("\"homeassistant@chelsty-ha\" -> \"mosquitto@chelsty-infra\";"),
        "{}",
        out.stdout
    );
}

#[test]
fn formats_of_the_base_fixture() {
    let tree = Tree::base();
    for format in ["text", "dot", "mermaid"] {
        let out = tree.homelab(&["graph", "--format", format]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        insta::assert_snapshot!(format!("graph-{format}"), out.stdout);
    }
}

#[test]
fn a_cycle_is_an_error_that_prints_the_cycle() {
    let tree = Tree::base();
    let broker = std::fs::read_to_string(tree.path().join("services/broker/service.yaml")).unwrap();
    tree.write(
        "services/broker/service.yaml",
        broker.replace("dependencies: []", "dependencies:\n  - service: app\n    node: edge-b"),
    );
    let out = tree.homelab(&["graph"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("dependency cycle: app@edge-b -> broker@edge-a -> app@edge-b"),
        "{}",
        out.stderr
    );
}
