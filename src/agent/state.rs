//! What the stability agent last saw, and the pure step from one observation to the events it
//! means. Events are transitions, not samples: a service already reported unhealthy is not
//! reported again until it has recovered, a link already down stays quiet, a disk over its
//! threshold is reported once per crossing. This state is kept in `<root>/state/agent/state.json`
//! (`node::Layout::agent_state`), so a restarted agent compares what it sees with what it last
//! reported: it repeats nothing and, since it rescans at start, misses no transition that
//! happened while it was down (only flaps that began and ended in that time).
//!
//! No IO and no clock here: [`State::observe`] takes an observation and gives events.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::events::{Event, Kind, Severity};

/// The `source` of every event the agent writes.
pub const SOURCE: &str = "stability-agent";

/// The version of `state.json`; another is refused rather than misread.
pub const VERSION: u32 = 1;

/// Below the threshold by this many points before a full disk counts as recovered, so a disk
/// hovering at the threshold does not report a crossing every tick.
pub const DISK_HYSTERESIS: f64 = 2.0;

/// What one source of the agent saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// A container of a compose project (the project is the service), from an engine event or
    /// the scan at start.
    Container { service: String, container: String, status: Status },
    /// A link of the node (the Tailscale interface, the MQTT broker) is up or down.
    Link { link: String, up: bool, data: serde_json::Map<String, Value> },
    /// The use of the filesystem holding the runtime root.
    Disk { path: String, used_percent: f64, threshold: f64 },
    /// A critical backup set's last restic backup (`homelab backup`'s record on the node):
    /// how old it is and how old it may be; `never`: no backup yet, its age counted from the
    /// deploy that first placed the set.
    Backup { service: String, set: String, age_secs: u64, limit_secs: u64, never: bool },
}

/// A container's condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    /// Stopped, dead, out of memory or failing its healthcheck.
    Bad { error: String, state: String, health: String },
    /// Running and healthy (or running with no healthcheck).
    Good { state: String, health: String },
}

/// A service the agent has reported unhealthy: which of its containers are bad, and why.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceRecord {
    /// Container name → the error that made it bad.
    pub bad: BTreeMap<String, String>,
    /// The correlation id of the open incident (its `service_unhealthy` event).
    pub incident: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkRecord {
    pub up: bool,
    /// The correlation id of the `node_offline` event while down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DiskRecord {
    pub over: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<String>,
}

/// Everything the agent keeps between runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    /// The last incident number handed out (correlation ids are `<node>-agent-<n>`).
    pub seq: u64,
    /// Services reported unhealthy and not yet recovered.
    pub services: BTreeMap<String, ServiceRecord>,
    /// Links by name, as last reported (or first seen).
    pub links: BTreeMap<String, LinkRecord>,
    pub disk: DiskRecord,
    /// Critical backup sets (`<svc>/<set>`) reported as overdue and not backed up since.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub backups: BTreeMap<String, DiskRecord>,
    /// Event lines decided but maybe not yet appended: written here first, appended, then
    /// cleared, so an agent killed in between appends each exactly once when it starts again
    /// (it looks for the exact line in the events file first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<String>,
}

impl Default for State {
    fn default() -> State {
        State {
            version: VERSION,
            seq: 0,
            services: BTreeMap::new(),
            links: BTreeMap::new(),
            disk: DiskRecord::default(),
            backups: BTreeMap::new(),
            pending: Vec::new(),
        }
    }
}

impl State {
    fn incident(&mut self, node: &str) -> String {
        self.seq += 1;
        format!("{node}-agent-{}", self.seq)
    }

    /// The events `obs` means on `node`, with the state moved on. Nothing when it only confirms
    /// what was last reported.
    pub fn observe(&mut self, node: &str, obs: &Observation) -> Vec<Event> {
        match obs {
            Observation::Container { service, container, status } => {
                self.container(node, service, container, status)
            }
            Observation::Link { link, up, data } => self.link(node, link, *up, data),
            Observation::Disk { path, used_percent, threshold } => {
                self.disk(node, path, *used_percent, *threshold)
            }
            Observation::Backup { service, set, age_secs, limit_secs, never } => {
                self.backup(node, service, set, (*age_secs, *limit_secs), *never)
            }
        }
    }

    /// A critical set's backup older than its limit is reported once, as a critical
    /// `service_unhealthy` of its service (check `backup`), and recovered by the next backup.
    fn backup(
        &mut self,
        node: &str,
        svc: &str,
        set: &str,
        (age, limit): (u64, u64),
        never: bool,
    ) -> Vec<Event> {
        let key = format!("{svc}/{set}");
        let over = self.backups.get(&key).is_some_and(|r| r.over);
        let data = |e: Event| {
            e.with("check", "backup")
                .with("set", set)
                .with("age_seconds", json!(age))
                .with("limit_seconds", json!(limit))
        };
        if !over && age > limit {
            let incident = self.incident(node);
            self.backups.insert(key, DiskRecord { over: true, incident: Some(incident.clone()) });
            let e =
                Event::new(Kind::ServiceUnhealthy, Severity::Critical, SOURCE, svc, &incident, node)
                    .with(
                        "error",
                        if never {
                            format!("critical set {set} has never been backed up, {}h after its first deploy, over its limit of {}h: run `homelab backup --service {svc}`", age / 3600, limit / 3600)
                        } else {
                            format!("the last backup of critical set {set} is {}h old, over its limit of {}h: run `homelab backup --service {svc}`", age / 3600, limit / 3600)
                        },
                    );
            return vec![data(e)];
        }
        if over && age <= limit {
            let incident = self
                .backups
                .remove(&key)
                .and_then(|r| r.incident)
                .unwrap_or_else(|| self.incident(node));
            let e =
                Event::new(Kind::ServiceRecovered, Severity::Info, SOURCE, svc, &incident, node);
            return vec![data(e)];
        }
        Vec::new()
    }

    fn container(
        &mut self,
        node: &str,
        service: &str,
        container: &str,
        status: &Status,
    ) -> Vec<Event> {
        match status {
            Status::Bad { error, state, health } => {
                if let Some(rec) = self.services.get_mut(service) {
                    // Already reported: remember this container too, say nothing new.
                    rec.bad.insert(container.to_owned(), error.clone());
                    return Vec::new();
                }
                let incident = self.incident(node);
                self.services.insert(
                    service.to_owned(),
                    ServiceRecord {
                        bad: BTreeMap::from([(container.to_owned(), error.clone())]),
                        incident: incident.clone(),
                    },
                );
                vec![Event::new(
                    Kind::ServiceUnhealthy,
                    Severity::Error,
                    SOURCE,
                    service,
                    &incident,
                    node,
                )
                .with("error", error.as_str())
                .with("state", state.as_str())
                .with("health", health.as_str())
                .with("container", container)]
            }
            Status::Good { state, health } => {
                let Some(rec) = self.services.get_mut(service) else { return Vec::new() };
                rec.bad.remove(container);
                if !rec.bad.is_empty() {
                    return Vec::new();
                }
                let incident = rec.incident.clone();
                self.services.remove(service);
                vec![Event::new(
                    Kind::ServiceRecovered,
                    Severity::Info,
                    SOURCE,
                    service,
                    &incident,
                    node,
                )
                .with("state", state.as_str())
                .with("health", health.as_str())
                .with("container", container)]
            }
        }
    }

    fn link(
        &mut self,
        node: &str,
        link: &str,
        up: bool,
        data: &serde_json::Map<String, Value>,
    ) -> Vec<Event> {
        let before = self.links.get(link).cloned();
        match (before, up) {
            // First sight of a link that is up: nothing happened worth saying.
            (None, true) => {
                self.links.insert(link.to_owned(), LinkRecord { up: true, incident: None });
                Vec::new()
            }
            (Some(b), now) if b.up == now => Vec::new(),
            (_, false) => {
                let incident = self.incident(node);
                self.links.insert(
                    link.to_owned(),
                    LinkRecord { up: false, incident: Some(incident.clone()) },
                );
                let mut e =
                    Event::new(Kind::NodeOffline, Severity::Warning, SOURCE, "-", &incident, node)
                        .with("link", link);
                e.data.extend(data.clone());
                vec![e]
            }
            (Some(b), true) => {
                let incident = b.incident.unwrap_or_else(|| self.incident(node));
                self.links.insert(link.to_owned(), LinkRecord { up: true, incident: None });
                let mut e =
                    Event::new(Kind::NodeOnline, Severity::Info, SOURCE, "-", &incident, node)
                        .with("link", link);
                e.data.extend(data.clone());
                vec![e]
            }
        }
    }

    fn disk(&mut self, node: &str, path: &str, used: f64, threshold: f64) -> Vec<Event> {
        let used_r = (used * 10.0).round() / 10.0;
        let data = |e: Event| {
            e.with("check", "disk")
                .with("path", path)
                .with("used_percent", json!(used_r))
                .with("threshold_percent", json!(threshold))
        };
        if !self.disk.over && used > threshold {
            let incident = self.incident(node);
            self.disk = DiskRecord { over: true, incident: Some(incident.clone()) };
            let e =
                Event::new(Kind::ServiceUnhealthy, Severity::Warning, SOURCE, "-", &incident, node)
                    .with("error", format!("disk {used_r}% used, over {threshold}%"));
            return vec![data(e)];
        }
        if self.disk.over && used < threshold - DISK_HYSTERESIS {
            let incident = self.disk.incident.take().unwrap_or_else(|| self.incident(node));
            self.disk = DiskRecord::default();
            let e =
                Event::new(Kind::ServiceRecovered, Severity::Info, SOURCE, "-", &incident, node);
            return vec![data(e)];
        }
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(error: &str) -> Status {
        Status::Bad { error: error.into(), state: "exited".into(), health: "none".into() }
    }

    fn good() -> Status {
        Status::Good { state: "running".into(), health: "healthy".into() }
    }

    fn c(service: &str, container: &str, status: Status) -> Observation {
        Observation::Container { service: service.into(), container: container.into(), status }
    }

    fn link(up: bool) -> Observation {
        Observation::Link { link: "tailscale0".into(), up, data: Default::default() }
    }

    fn kinds(events: &[Event]) -> Vec<&'static str> {
        events.iter().map(|e| e.kind.as_str()).collect()
    }

    #[test]
    fn a_service_is_reported_once_per_incident_and_recovers_when_all_its_containers_do() {
        let mut s = State::default();
        let e = s.observe("alpha", &c("web", "web-1", bad("exited with code 137")));
        assert_eq!(kinds(&e), ["service_unhealthy"]);
        assert_eq!(e[0].correlation_id, "alpha-agent-1");
        assert_eq!(e[0].data["error"], "exited with code 137");
        assert!(s.observe("alpha", &c("web", "web-1", bad("out of memory"))).is_empty());
        assert!(s.observe("alpha", &c("web", "web-2", bad("unhealthy"))).is_empty());
        assert!(s.observe("alpha", &c("web", "web-1", good())).is_empty());
        let e = s.observe("alpha", &c("web", "web-2", good()));
        assert_eq!(kinds(&e), ["service_recovered"]);
        assert_eq!(e[0].correlation_id, "alpha-agent-1", "the recovery closes the incident");
        assert!(s.observe("alpha", &c("web", "web-2", good())).is_empty());
        assert!(s.services.is_empty());
    }

    #[test]
    fn a_state_read_back_repeats_nothing() {
        let mut s = State::default();
        s.observe("alpha", &c("web", "web", bad("unhealthy")));
        s.observe("alpha", &link(false));
        let text = serde_json::to_string(&s).unwrap();
        let mut back: State = serde_json::from_str(&text).unwrap();
        assert_eq!(back, s);
        assert!(back.observe("alpha", &c("web", "web", bad("unhealthy"))).is_empty());
        assert!(back.observe("alpha", &link(false)).is_empty());
        assert_eq!(kinds(&back.observe("alpha", &link(true))), ["node_online"]);
    }

    #[test]
    fn links_report_changes_and_a_first_down_but_not_a_first_up() {
        let mut s = State::default();
        assert!(s.observe("a", &link(true)).is_empty());
        assert!(s.observe("a", &link(true)).is_empty());
        let e = s.observe("a", &link(false));
        assert_eq!(kinds(&e), ["node_offline"]);
        assert_eq!(e[0].data["link"], "tailscale0");
        assert!(s.observe("a", &link(false)).is_empty());
        let back = s.observe("a", &link(true));
        assert_eq!(kinds(&back), ["node_online"]);
        assert_eq!(back[0].correlation_id, e[0].correlation_id);
        let mut fresh = State::default();
        assert_eq!(kinds(&fresh.observe("a", &link(false))), ["node_offline"]);
    }

    #[test]
    fn a_full_disk_is_reported_once_per_crossing() {
        let mut s = State::default();
        let d = |used| Observation::Disk {
            path: "/opt/homelab".into(),
            used_percent: used,
            threshold: 90.0,
        };
        assert!(s.observe("a", &d(50.0)).is_empty());
        let e = s.observe("a", &d(91.26));
        assert_eq!(kinds(&e), ["service_unhealthy"]);
        assert_eq!(e[0].severity, Severity::Warning);
        assert_eq!(e[0].service, "-");
        assert_eq!(e[0].data["check"], "disk");
        assert_eq!(e[0].data["used_percent"], json!(91.3));
        assert!(s.observe("a", &d(95.0)).is_empty());
        assert!(s.observe("a", &d(89.0)).is_empty(), "within the hysteresis");
        assert_eq!(kinds(&s.observe("a", &d(80.0))), ["service_recovered"]);
        assert!(s.observe("a", &d(80.0)).is_empty());
    }

    #[test]
    fn an_overdue_critical_backup_is_reported_once_and_recovers_with_the_next_backup() {
        let mut s = State::default();
        let b = |age| Observation::Backup {
            service: "zigbee2mqtt".into(),
            set: "zigbee2mqtt-config".into(),
            age_secs: age,
            limit_secs: 86_400,
            never: false,
        };
        assert!(s.observe("a", &b(3_600)).is_empty());
        let e = s.observe("a", &b(90_000));
        assert_eq!(kinds(&e), ["service_unhealthy"]);
        assert_eq!(e[0].severity, Severity::Critical);
        assert_eq!(e[0].service, "zigbee2mqtt");
        assert_eq!(e[0].data["check"], "backup");
        assert!(s.observe("a", &b(100_000)).is_empty(), "once per crossing");
        let mut s: State = serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
        assert!(s.observe("a", &b(100_000)).is_empty(), "also after a restart");
        assert_eq!(kinds(&s.observe("a", &b(60))), ["service_recovered"]);
        assert!(s.observe("a", &b(60)).is_empty());
        // A set never backed up is reported as such, counted from its first deploy.
        let mut s = State::default();
        let never = Observation::Backup {
            service: "mosquitto".into(),
            set: "mosquitto-data".into(),
            age_secs: 90_000,
            limit_secs: 86_400,
            never: true,
        };
        let e = s.observe("a", &never);
        assert_eq!(kinds(&e), ["service_unhealthy"]);
        let error = e[0].data["error"].as_str().unwrap();
        assert!(
            error.starts_with("critical set mosquitto-data has never been backed up"),
            "{error}"
        );
    }

    #[test]
    fn every_event_is_a_valid_line() {
        let mut s = State::default();
        let mut all = s.observe("a", &c("web", "web", bad("x")));
        all.extend(s.observe("a", &c("web", "web", good())));
        all.extend(s.observe("a", &link(false)));
        all.extend(s.observe("a", &link(true)));
        for e in all {
            e.to_line("2026-01-01T00:00:00Z").unwrap();
            assert_eq!(e.source, SOURCE);
        }
    }
}
