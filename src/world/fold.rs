//! The fold: the world's records from events. Pure: no clock, no files, no nodes.
//!
//! Every value the fold sets remembers the [`Key`] of the event it came from and changes only
//! for an event with a greater key (time first, then where it was read). So folding an event
//! a second time changes nothing, and a value is the one of the latest event whatever order
//! the events arrived in: a node that was offline for a day catches up into the same world.
//! Incidents, which open and close, are matched by key the same way (an event inside an
//! incident's span is part of it), so a re-read changes nothing there either.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::event::{Event, Key};

/// The world: the four files of `<root>/world/`, as values. Maps, so every file is written in
/// one order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct World {
    pub nodes: BTreeMap<String, NodeRecord>,
    /// By `service@node`.
    pub services: BTreeMap<String, ServiceRecord>,
    /// By plan id (the events' correlation id).
    pub deployments: BTreeMap<String, Deployment>,
    /// By incident id (`<node>-<day>-<offset>` of the event that opened it).
    pub incidents: BTreeMap<String, Incident>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// From the inventory (absent for a node known only from events).
    pub display_name: Option<String>,
    pub site: Option<String>,
    pub uplink: Option<String>,
    pub offline_first: Option<bool>,
    /// `online`, `offline` (a link its agent reports down), `unreachable` (the observer
    /// could not read it on its last try) or `unknown` (never read).
    pub status: String,
    /// The time of the newest event read from the node.
    pub last_seen: Option<String>,
    pub last_event: Option<Key>,
    /// By link (`data.link` of `node_online`/`node_offline`; `node` when it names none).
    pub links: BTreeMap<String, Link>,
    /// Whether the observer could read the node, since when (the pass that found it so).
    pub observer: Option<Reach>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    /// `online` or `offline`.
    pub state: String,
    pub since: String,
    pub event: Key,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reach {
    pub reachable: bool,
    pub since: String,
    /// Why it could not be read (absent when reachable).
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceRecord {
    pub service: String,
    pub node: String,
    pub health: Option<Health>,
    /// What is deployed: the plan of the release (absent when unknown).
    pub release: Option<Release>,
    pub last_deployment: Option<LastDeployment>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// `healthy` or `unhealthy`.
    pub state: String,
    /// When it became so (the first event of the run of equal states).
    pub since: String,
    /// The type of the latest event that said so.
    pub by: String,
    /// `data.error` or `data.reason` of that event.
    pub reason: Option<String>,
    pub event: Key,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Release {
    /// The plan whose release runs; `null` after a delete.
    pub plan: Option<String>,
    pub since: String,
    /// `deployment_completed` or `remediation_completed` (a rollback to an older release).
    pub by: String,
    pub event: Key,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastDeployment {
    pub plan: String,
    pub status: String,
    pub time: String,
    pub event: Key,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    /// Over its nodes: `running`, `rollback_failed`, `failed`, `rolled_back`, `completed`.
    pub status: String,
    pub started: Option<String>,
    /// When its last service ended (absent while running).
    pub ended: Option<String>,
    pub nodes: BTreeMap<String, DeploymentNode>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeploymentNode {
    /// Over its services, as for the deployment.
    pub status: String,
    pub started: Option<String>,
    pub ended: Option<String>,
    pub services: BTreeMap<String, DeploymentService>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeploymentService {
    /// `running`, `completed`, `failed`, `rolling_back`, `rolled_back`, `rollback_failed`.
    pub status: String,
    /// `data.action` of `deployment_started` (create, update, replace, delete).
    pub action: Option<String>,
    /// The time of its first event.
    pub started: Option<String>,
    /// The time of the event that set `status`.
    pub updated: String,
    /// By stage (prepare, validate, deploy, verify, diagnose, rollback, complete).
    pub stages: BTreeMap<String, StageRecord>,
    /// The first cause of a failure (`data.reason`), and the stage it failed in when known.
    pub reason: Option<String>,
    pub failed_stage: Option<String>,
    /// The latest failed try of the healthcheck (`data.attempt`), and when.
    pub healthcheck_failed: Option<Attempt>,
    pub event: Key,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    /// `started`, `completed` or `failed`.
    pub status: String,
    pub time: String,
    pub event: Key,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub attempt: Option<u64>,
    pub time: String,
    pub event: Key,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// The type of the event that opened it: `service_unhealthy`, `deployment_failed`,
    /// `remediation_failed`.
    pub kind: String,
    pub severity: String,
    pub node: String,
    pub service: Option<String>,
    /// The plan, for a deployment's incident.
    pub plan: Option<String>,
    /// `open` or `closed`.
    pub state: String,
    pub opened: String,
    pub opened_by: Key,
    /// `data.error` or `data.reason` of its latest event.
    pub reason: Option<String>,
    /// The latest event that opened it again while open (a second `service_unhealthy`).
    pub last: Key,
    pub closed: Option<String>,
    pub closed_by: Option<Key>,
    /// The type of the event that closed it.
    pub resolution: Option<String>,
}

/// A value set only by a later event.
fn later(current: Option<&Key>, key: &Key) -> bool {
    current.is_none_or(|c| key > c)
}

fn reason(e: &Event) -> Option<String> {
    e.text("error").or_else(|| e.text("reason"))
}

/// The id of the incident an event opens.
fn incident_id(k: &Key) -> String {
    format!("{}-{}-{}", k.node, k.day.replace('-', ""), k.offset)
}

impl World {
    /// Folds `events` in, in key order, and derives the summary fields. Events already folded
    /// change nothing.
    pub fn fold<'a>(&mut self, events: impl IntoIterator<Item = &'a Event>) {
        let mut events: Vec<&Event> = events.into_iter().collect();
        events.sort_by(|a, b| a.key.cmp(&b.key));
        for e in events {
            self.apply(e);
        }
        self.derive();
    }

    fn apply(&mut self, e: &Event) {
        let k = &e.key;
        let source = self.nodes.entry(k.node.clone()).or_default();
        if later(source.last_event.as_ref(), k) {
            source.last_seen = Some(k.time.clone());
            source.last_event = Some(k.clone());
        }
        match e.kind.as_str() {
            "node_online" | "node_offline" => {
                let state = if e.kind == "node_online" { "online" } else { "offline" };
                let link = e.text("link").unwrap_or_else(|| "node".to_owned());
                let n = self.nodes.entry(e.node.clone()).or_default();
                let l = n.links.get(&link);
                if later(l.map(|l| &l.event), k) {
                    let since = match l {
                        Some(l) if l.state == state => l.since.clone(),
                        _ => k.time.clone(),
                    };
                    n.links.insert(link, Link { state: state.to_owned(), since, event: k.clone() });
                }
            }
            _ => self.service_event(e),
        }
    }

    fn service_event(&mut self, e: &Event) {
        let Some(svc) = e.service.clone() else {
            // A service event about no service: only an incident (a script's OOM report).
            self.incident(e, None);
            return;
        };
        let k = &e.key;
        let deleted = e.text("action").as_deref() == Some("delete");
        let health = match e.kind.as_str() {
            "service_unhealthy" | "healthcheck_failed" => Some("unhealthy"),
            // A completed deploy was verified healthy; a delete says nothing of health.
            "service_recovered" => Some("healthy"),
            "deployment_completed" if !deleted => Some("healthy"),
            _ => None,
        };
        let deploying = matches!(
            e.kind.as_str(),
            "deployment_started"
                | "deployment_stage"
                | "deployment_completed"
                | "deployment_failed"
                | "remediation_started"
                | "remediation_completed"
                | "remediation_failed"
        );
        if health.is_none() && !deploying {
            return;
        }
        let rec = self.services.entry(format!("{svc}@{}", e.node)).or_insert_with(|| {
            ServiceRecord { service: svc.clone(), node: e.node.clone(), ..ServiceRecord::default() }
        });
        if let Some(state) = health {
            if later(rec.health.as_ref().map(|h| &h.event), k) {
                let since = match &rec.health {
                    Some(h) if h.state == state => h.since.clone(),
                    _ => k.time.clone(),
                };
                rec.health = Some(Health {
                    state: state.to_owned(),
                    since,
                    by: e.kind.clone(),
                    reason: if state == "unhealthy" { reason(e) } else { None },
                    event: k.clone(),
                });
            }
        }
        // The release that runs: a completed deploy's plan, or where a rollback went back to.
        let release = match e.kind.as_str() {
            "deployment_completed" if deleted => Some(None),
            "deployment_completed" => e.correlation_id.clone().map(Some),
            // `to` is the previous release's folder, named by its plan.
            "remediation_completed" => e.text("to").filter(|t| t.contains('/')).map(|t| {
                Some(t.trim_end_matches('/').rsplit('/').next().unwrap_or_default().to_owned())
            }),
            _ => None,
        };
        if let Some(plan) = release {
            if later(rec.release.as_ref().map(|r| &r.event), k) {
                rec.release = Some(Release {
                    plan,
                    since: k.time.clone(),
                    by: e.kind.clone(),
                    event: k.clone(),
                });
            }
        }
        if let (Some(plan), Some(status)) = (&e.correlation_id, status_of(e)) {
            if later(rec.last_deployment.as_ref().map(|d| &d.event), k) {
                rec.last_deployment = Some(LastDeployment {
                    plan: plan.clone(),
                    status: status.to_owned(),
                    time: k.time.clone(),
                    event: k.clone(),
                });
            }
        }
        if let Some(plan) = &e.correlation_id {
            self.deployment_event(e, plan, &svc);
        }
        self.incident(e, Some(&svc));
    }

    fn deployment_event(&mut self, e: &Event, plan: &str, svc: &str) {
        let k = &e.key;
        let status = status_of(e);
        // A failed healthcheck belongs to a deployment only once one is known: agents check
        // health too, with correlation ids of their own.
        if status.is_none() && !self.deployments.contains_key(plan) {
            return;
        }
        let d = self.deployments.entry(plan.to_owned()).or_default();
        let n = d.nodes.entry(e.node.clone()).or_default();
        let s = n.services.entry(svc.to_owned()).or_insert_with(|| DeploymentService {
            event: k.clone(),
            updated: k.time.clone(),
            ..DeploymentService::default()
        });
        if s.started.as_ref().is_none_or(|t| k.time < *t) {
            s.started = Some(k.time.clone());
        }
        // A healthcheck of a deployment under way, before anything else of this service.
        let status = status.or(s.status.is_empty().then_some("running"));
        if let Some(status) = status {
            if s.status.is_empty() || k > &s.event {
                s.status = status.to_owned();
                s.updated = k.time.clone();
                s.event = k.clone();
            }
        }
        if e.kind == "deployment_started" {
            if let Some(a) = e.text("action") {
                s.action = Some(a);
            }
        }
        if e.kind == "deployment_failed" && s.reason.is_none() {
            // The first cause stays: a rollback's failure follows it, never replaces it.
            s.reason = reason(e);
            s.failed_stage = e.text("stage");
        }
        if e.kind == "healthcheck_failed"
            && later(s.healthcheck_failed.as_ref().map(|a| &a.event), k)
        {
            s.healthcheck_failed = Some(Attempt {
                attempt: e.data.get("attempt").and_then(serde_json::Value::as_u64),
                time: k.time.clone(),
                event: k.clone(),
            });
        }
        if let Some((stage, status)) = stage_of(e) {
            if later(s.stages.get(&stage).map(|st| &st.event), k) {
                s.stages.insert(
                    stage,
                    StageRecord {
                        status: status.to_owned(),
                        time: k.time.clone(),
                        event: k.clone(),
                    },
                );
            }
        }
    }

    /// Opens, extends or closes incidents for `e`.
    fn incident(&mut self, e: &Event, svc: Option<&str>) {
        let k = &e.key;
        let plan = e.correlation_id.as_deref();
        let opens = matches!(
            e.kind.as_str(),
            "service_unhealthy" | "deployment_failed" | "remediation_failed"
        );
        if opens {
            // One incident per subject while it is open: a subject's deployment failures are
            // per plan.
            let subject = |i: &Incident| {
                i.kind == e.kind
                    && i.node == e.node
                    && i.service.as_deref() == svc
                    && (e.kind != "deployment_failed" || i.plan.as_deref() == plan)
            };
            let within = self.incidents.values_mut().find(|i| {
                subject(i) && i.opened_by <= *k && i.closed_by.as_ref().is_none_or(|c| k < c)
            });
            match within {
                Some(i) => {
                    if *k > i.last {
                        i.last = k.clone();
                        i.reason = reason(e).or(i.reason.take());
                    }
                }
                None => {
                    self.incidents.insert(
                        incident_id(k),
                        Incident {
                            kind: e.kind.clone(),
                            severity: e.severity.clone(),
                            node: e.node.clone(),
                            service: svc.map(str::to_owned),
                            plan: plan.map(str::to_owned),
                            state: "open".to_owned(),
                            opened: k.time.clone(),
                            opened_by: k.clone(),
                            reason: reason(e),
                            last: k.clone(),
                            closed: None,
                            closed_by: None,
                            resolution: None,
                        },
                    );
                }
            }
            return;
        }
        // What closes what: a recovery the service's unhealthiness; a completed deploy of the
        // service everything about it; a completed rollback its plan's failure and a failed
        // rollback before it.
        let closes = |i: &Incident| -> bool {
            if i.node != e.node || i.service.as_deref() != svc {
                return false;
            }
            match e.kind.as_str() {
                "service_recovered" => i.kind == "service_unhealthy",
                "deployment_completed" => true,
                "remediation_completed" => {
                    i.kind == "remediation_failed"
                        || (i.kind == "deployment_failed" && i.plan.as_deref() == plan)
                }
                _ => false,
            }
        };
        for i in self.incidents.values_mut() {
            if i.closed_by.is_none() && i.opened_by < *k && closes(i) {
                i.state = "closed".to_owned();
                i.closed = Some(k.time.clone());
                i.closed_by = Some(k.clone());
                i.resolution = Some(e.kind.clone());
            }
        }
    }

    /// Sets what the observer knows of a node from the inventory.
    pub fn inventory(&mut self, node: &crate::model::Node) {
        let n = self.nodes.entry(node.id.to_string()).or_default();
        n.display_name = Some(node.display_name.clone());
        n.site = Some(node.site.clone());
        n.uplink = Some(node.uplink.clone());
        n.offline_first = Some(node.offline_first);
    }

    /// Records whether the observer could read `node` at `now`: `since` moves only when that
    /// changes, so a pass that finds nothing new writes the same bytes.
    pub fn reach(&mut self, node: &str, result: Result<(), String>, now: &str) {
        let n = self.nodes.entry(node.to_owned()).or_default();
        let reachable = result.is_ok();
        let since = match &n.observer {
            Some(r) if r.reachable == reachable => r.since.clone(),
            _ => now.to_owned(),
        };
        n.observer = Some(Reach { reachable, since, error: result.err() });
    }

    /// The summary fields, from the records: recomputed whole, so they never drift.
    fn derive(&mut self) {
        for n in self.nodes.values_mut() {
            n.status = match &n.observer {
                Some(r) if !r.reachable => "unreachable",
                _ if n.links.values().any(|l| l.state == "offline") => "offline",
                Some(_) => "online",
                None => "unknown",
            }
            .to_owned();
        }
        for d in self.deployments.values_mut() {
            for n in d.nodes.values_mut() {
                let parts = n.services.values().map(|s| (s.status.as_str(), s.started.as_ref()));
                (n.status, n.started) = summary(parts);
                n.ended = (n.status != "running")
                    .then(|| n.services.values().map(|s| s.updated.clone()).max())
                    .flatten();
            }
            let parts = d.nodes.values().map(|n| (n.status.as_str(), n.started.as_ref()));
            (d.status, d.started) = summary(parts);
            d.ended = (d.status != "running")
                .then(|| d.nodes.values().filter_map(|n| n.ended.clone()).max())
                .flatten();
        }
    }
}

/// The status of a group (a node's services, a plan's nodes) and when it started: in progress
/// wins, then the worst outcome.
fn summary<'a>(
    parts: impl Iterator<Item = (&'a str, Option<&'a String>)>,
) -> (String, Option<String>) {
    const ORDER: [&str; 6] =
        ["running", "rolling_back", "rollback_failed", "failed", "rolled_back", "completed"];
    let parts: Vec<_> = parts.collect();
    let worst = ORDER.iter().find(|o| parts.iter().any(|p| p.0 == **o)).copied();
    let status = match worst {
        None | Some("rolling_back") => "running",
        Some(w) => w,
    };
    (status.to_owned(), parts.iter().filter_map(|p| p.1).min().cloned())
}

/// The status of a deployment's service after `e`.
fn status_of(e: &Event) -> Option<&'static str> {
    Some(match e.kind.as_str() {
        "deployment_started" => "running",
        "deployment_stage" => match (e.text("stage").as_deref(), e.text("status").as_deref()) {
            (Some("rollback"), Some("started")) => "rolling_back",
            (Some("rollback"), Some("completed")) => "rolled_back",
            (Some("rollback"), Some("failed")) => "rollback_failed",
            (Some("complete"), Some("completed")) => "completed",
            (_, Some("failed")) => "failed",
            _ => "running",
        },
        "deployment_completed" => "completed",
        "deployment_failed" => "failed",
        "remediation_started" => "rolling_back",
        "remediation_completed" => "rolled_back",
        "remediation_failed" => "rollback_failed",
        _ => return None,
    })
}

/// The stage an event tells of, and how it went.
fn stage_of(e: &Event) -> Option<(String, &'static str)> {
    let (stage, status) = match e.kind.as_str() {
        "deployment_stage" => {
            let status = match e.text("status").as_deref() {
                Some("started") => "started",
                Some("completed") => "completed",
                Some("failed") => "failed",
                _ => return None,
            };
            (e.text("stage")?, status)
        }
        "deployment_started" => ("prepare".to_owned(), "started"),
        "deployment_completed" => ("complete".to_owned(), "completed"),
        "deployment_failed" => (e.text("stage")?, "failed"),
        "remediation_started" => ("rollback".to_owned(), "started"),
        "remediation_completed" => ("rollback".to_owned(), "completed"),
        "remediation_failed" => ("rollback".to_owned(), "failed"),
        _ => return None,
    };
    Some((stage, status))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Events of `node`'s file of 2026-11-30 from `(second, type, service, plan, data)`, at
    /// offsets in the order given, as a pass reads them.
    fn events(node: &str, list: &[(u32, &str, &str, &str, serde_json::Value)]) -> Vec<Event> {
        list.iter()
            .enumerate()
            .map(|(i, (sec, kind, svc, plan, data))| {
                let line = serde_json::json!({
                    "time": format!("2026-11-30T10:00:{sec:02}Z"), "node": node, "type": kind,
                    "severity": "info", "source": "test", "service": svc,
                    "correlation_id": plan, "data": data,
                });
                Event::parse(line.to_string().as_bytes(), node, "2026-11-30", 100 * i as u64)
                    .unwrap()
            })
            .collect()
    }

    fn bytes(w: &World) -> Vec<u8> {
        super::super::store::encode(w).into_iter().flat_map(|(_, b)| b).collect()
    }

    fn rollout() -> Vec<Event> {
        use serde_json::json;
        let mut e = events(
            "alpha",
            &[
                (0, "deployment_started", "web", "p1", json!({"action": "create"})),
                (
                    0,
                    "deployment_stage",
                    "web",
                    "p1",
                    json!({"stage": "prepare", "status": "completed"}),
                ),
                (1, "deployment_completed", "web", "p1", json!({"action": "create"})),
                (2, "service_unhealthy", "web", "-", json!({"error": "OOM"})),
                (3, "service_unhealthy", "web", "-", json!({"error": "OOM again"})),
                (4, "service_recovered", "web", "-", json!({})),
                (5, "deployment_started", "web", "p2", json!({"action": "update"})),
                (6, "healthcheck_failed", "web", "p2", json!({"attempt": 2})),
                (
                    7,
                    "deployment_failed",
                    "web",
                    "p2",
                    json!({"stage": "verify", "reason": "unhealthy"}),
                ),
                (7, "remediation_started", "web", "p2", json!({"action": "rollback"})),
                (
                    8,
                    "remediation_completed",
                    "web",
                    "p2",
                    json!({"action": "rollback", "to": "/r/state/releases/web/p1"}),
                ),
                (9, "node_offline", "-", "-", json!({"link": "tailscale"})),
            ],
        );
        e.extend(events("edge", &[(1, "deployment_started", "app", "p2", json!({}))]));
        e
    }

    #[test]
    fn folding_the_same_events_again_changes_no_byte() {
        let mut w = World::default();
        w.fold(&rollout());
        let once = bytes(&w);
        w.fold(&rollout());
        assert_eq!(bytes(&w), once);
        // Each event again on its own, in reverse: still nothing.
        for e in rollout().iter().rev() {
            w.fold([e]);
        }
        assert_eq!(String::from_utf8(bytes(&w)).unwrap(), String::from_utf8(once).unwrap());
    }

    #[test]
    fn the_world_does_not_depend_on_how_passes_cut_the_events() {
        let all = rollout();
        let mut whole = World::default();
        whole.fold(&all);
        for cut in 1..all.len() {
            let mut w = World::default();
            w.fold(&all[..cut]);
            w.fold(&all[cut..]);
            assert_eq!(bytes(&w), bytes(&whole), "cut at {cut}");
        }
        // A node's events arriving a day late (after another node's) give the same world.
        let (edge, alpha): (Vec<Event>, Vec<Event>) =
            all.iter().cloned().partition(|e| e.key.node == "edge");
        let mut w = World::default();
        w.fold(&edge);
        w.fold(&alpha);
        assert_eq!(bytes(&w), bytes(&whole));
    }

    #[test]
    fn a_failed_deploy_rolled_back_is_told_in_every_file() {
        let mut w = World::default();
        w.fold(&rollout());
        let s = &w.services["web@alpha"];
        let h = s.health.as_ref().unwrap();
        assert_eq!((h.state.as_str(), h.since.as_str()), ("unhealthy", "2026-11-30T10:00:06Z"));
        let r = s.release.as_ref().unwrap();
        assert_eq!((r.plan.as_deref(), r.by.as_str()), (Some("p1"), "remediation_completed"));
        let last = s.last_deployment.as_ref().unwrap();
        assert_eq!((last.plan.as_str(), last.status.as_str()), ("p2", "rolled_back"));

        let p2 = &w.deployments["p2"];
        assert_eq!(p2.status, "running", "edge's app has only started");
        let web = &p2.nodes["alpha"].services["web"];
        assert_eq!(web.status, "rolled_back");
        assert_eq!(web.failed_stage.as_deref(), Some("verify"));
        assert_eq!(web.reason.as_deref(), Some("unhealthy"));
        assert_eq!(web.stages["verify"].status, "failed");
        assert_eq!(web.stages["rollback"].status, "completed");
        assert_eq!(web.healthcheck_failed.as_ref().unwrap().attempt, Some(2));
        assert_eq!(p2.nodes["alpha"].status, "rolled_back");
        assert_eq!(p2.nodes["alpha"].ended.as_deref(), Some("2026-11-30T10:00:08Z"));
        let p1 = &w.deployments["p1"];
        assert_eq!(
            (p1.status.as_str(), p1.ended.as_deref()),
            ("completed", Some("2026-11-30T10:00:01Z"))
        );
        assert_eq!(p1.nodes["alpha"].services["web"].stages["prepare"].status, "completed");

        // Two unhealthy reports, one incident, closed by the recovery; the failed deploy's
        // incident closed by its rollback.
        let inc: Vec<&Incident> = w.incidents.values().collect();
        assert_eq!(inc.len(), 2, "{inc:#?}");
        let unhealthy = &w.incidents["alpha-20261130-300"];
        assert_eq!(unhealthy.kind, "service_unhealthy");
        assert_eq!(unhealthy.reason.as_deref(), Some("OOM again"));
        assert_eq!(unhealthy.state, "closed");
        assert_eq!(unhealthy.resolution.as_deref(), Some("service_recovered"));
        let failed = &w.incidents["alpha-20261130-800"];
        assert_eq!(
            (failed.kind.as_str(), failed.plan.as_deref()),
            ("deployment_failed", Some("p2"))
        );
        assert_eq!(failed.resolution.as_deref(), Some("remediation_completed"));

        let n = &w.nodes["alpha"];
        assert_eq!(n.status, "offline");
        assert_eq!(n.links["tailscale"].state, "offline");
        assert_eq!(n.last_seen.as_deref(), Some("2026-11-30T10:00:09Z"));
    }

    #[test]
    fn incidents_stay_open_until_something_closes_them() {
        use serde_json::json;
        let mut w = World::default();
        w.fold(&events(
            "alpha",
            &[
                (
                    0,
                    "remediation_failed",
                    "db",
                    "p3",
                    json!({"reason": "verify", "error": "up failed"}),
                ),
                (1, "service_unhealthy", "-", "-", json!({"error": "disk full"})),
            ],
        ));
        assert!(w.incidents.values().all(|i| i.state == "open"));
        w.fold(&events("alpha", &[(2, "service_recovered", "db", "-", json!({}))]));
        assert!(
            w.incidents.values().all(|i| i.state == "open"),
            "a recovery closes only unhealthiness"
        );
        let mut later = events("alpha", &[(9, "deployment_completed", "db", "p4", json!({}))]);
        later[0].key.offset = 5000;
        w.fold(&later);
        let db = w.incidents.values().find(|i| i.service.as_deref() == Some("db")).unwrap();
        assert_eq!(
            (db.state.as_str(), db.closed.as_deref()),
            ("closed", Some("2026-11-30T10:00:09Z"))
        );
        assert_eq!(db.severity, "info");
        let none = w.incidents.values().find(|i| i.service.is_none()).unwrap();
        assert_eq!(none.state, "open");
    }

    #[test]
    fn reachability_moves_its_since_only_when_it_changes() {
        let mut w = World::default();
        w.reach("alpha", Ok(()), "2026-11-30T10:00:00Z");
        w.fold([]);
        assert_eq!(w.nodes["alpha"].status, "online");
        w.reach("alpha", Ok(()), "2026-11-30T10:05:00Z");
        assert_eq!(w.nodes["alpha"].observer.as_ref().unwrap().since, "2026-11-30T10:00:00Z");
        w.reach("alpha", Err("no route".into()), "2026-11-30T10:10:00Z");
        w.fold([]);
        let r = w.nodes["alpha"].observer.clone().unwrap();
        assert_eq!((r.reachable, r.since.as_str()), (false, "2026-11-30T10:10:00Z"));
        assert_eq!(w.nodes["alpha"].status, "unreachable");
    }
}
