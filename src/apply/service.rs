//! The stages of one service on one node, one method each, from where its journal stands:
//! prepare (upload, seal) → validate → deploy (switch, `compose up`) → verify (healthcheck) →
//! complete, and the rollback when deploy or verify fails. Each stage saves the journal before
//! the next one starts. Which services run, and in what order, is `node`'s.

use std::sync::Mutex;

use serde_json::json;

use super::node::{At, NodeRun};
use super::remote::{self, StepError};
use crate::events::{stage_data, Kind, Stage as Step, StageStatus};
use crate::model::ServiceName;
use crate::node::journal::{Journal, Stage};
use crate::node::manifest::{Manifest, MANIFEST};
use crate::plan::{Action, Change, Runtime};

/// One service of a node's run.
struct ServiceRun<'r, 'a, 'e> {
    run: &'r NodeRun<'a>,
    at: &'r At<'e>,
    c: &'r Change,
    svc: &'r str,
    /// Where this plan's release of the service is on the node.
    release: String,
    /// The number of the batch that carried this run's deploy of the service (0: none).
    deployed_in: std::cell::Cell<u64>,
}

impl NodeRun<'_> {
    /// Runs the stages of one service from where its journal stands, up to `until`. `Ok`
    /// carries the stage it ended in; `Err(Link)` means the node was lost mid-way (resume
    /// continues).
    pub(super) fn service(
        &self,
        at: &At,
        c: &Change,
        journal: &Mutex<Journal>,
        until: Stage,
    ) -> Result<Stage, StepError> {
        let svc = c.instance.service.as_str();
        let release = at.layout.release(svc, self.id);
        let s = ServiceRun { run: self, at, c, svc, release, deployed_in: Default::default() };
        let only = self.opts.mode.only();
        let runs = |st: Stage| only.is_none_or(|o| o == st);
        let mut stage = journal.lock().expect("journal").services[svc].stage;

        if c.action == Action::Delete {
            if !runs(Stage::Deployed) {
                return Ok(stage);
            }
            return s.delete(journal);
        }
        let Some(rt) = &c.runtime else {
            s.set(
                journal,
                Stage::Failed,
                Some("the plan lacks the healthcheck and secrets of this service".into()),
            );
            return Ok(Stage::Failed);
        };
        // Each stage runs when the journal stands right before it; a stage that ends short of
        // the next one, or in a final stage (failed, rolled back), ends the service. Prepare
        // also validates when the whole pipeline runs (one command for both).
        let steps: [(Stage, &[Stage], Stage); 5] = [
            (Stage::Prepared, &[Stage::Pending], Stage::Prepared),
            (Stage::Validated, &[Stage::Prepared], Stage::Validated),
            (Stage::Deployed, &[Stage::Validated, Stage::Deploying], Stage::Deployed),
            (Stage::Verified, &[Stage::Deployed], Stage::Verified),
            (Stage::Completed, &[Stage::Verified], Stage::Completed),
        ];
        for (step, from, next) in steps {
            if !from.contains(&stage) {
                continue;
            }
            if step > until || !runs(step) {
                return Ok(stage);
            }
            stage = match step {
                Stage::Prepared => s.prepare(journal, only.is_none().then_some(rt))?,
                Stage::Validated => s.validate(journal, rt)?,
                Stage::Deployed => s.deploy(journal, rt, only.is_none())?,
                Stage::Verified => s.verify(journal, rt)?,
                // Stage::Completed, the last of the steps above.
                _ => match &c.restore {
                    Some(r) => {
                        let what = format!("{} snapshot {}", r.kind(), r.id);
                        let data = json!({"release": s.release, "restored": what});
                        s.complete(journal, data, &format!("data restored from {what}, healthy"))?
                    }
                    None => {
                        s.complete(journal, json!({"release": s.release}), "at the new version")?
                    }
                },
            };
            if stage < next || stage.is_final() {
                return Ok(stage);
            }
        }
        Ok(stage)
    }
}

impl ServiceRun<'_, '_, '_> {
    fn say(&self, stage: &str, message: String) {
        self.run.say(Some(&self.c.instance.service), stage, message);
    }

    fn event(&self, kind: &str, severity: &str, data: serde_json::Value) {
        self.run.event(self.at, kind, severity, self.svc, data);
    }

    /// The guide's per-stage event: `step` of this service completed.
    fn stage_done(&self, step: Step) {
        let data = stage_data(step, StageStatus::Completed);
        self.event(Kind::DeploymentStage.as_str(), "info", data);
    }

    fn set(&self, journal: &Mutex<Journal>, stage: Stage, error: Option<String>) {
        self.run.set(journal, self.svc, stage, error)
    }

    /// The records this service's next command carries: none of its own, since the batch
    /// that carries the command writes every waiting record first (`batch`).
    fn carry(&self) -> remote::Carry {
        remote::Carry::default()
    }

    /// This service's detached job for `step` in this plan.
    fn job(&self, step: &str) -> String {
        self.at.layout.job(self.run.id, self.svc, step)
    }

    /// Where this plan's snapshot of the service's data is kept on the node.
    fn snapshot_dir(&self) -> String {
        self.at.layout.snapshot(self.svc, self.run.id)
    }

    /// A service the plan removes: its data snapshotted (the last snapshot is kept), down,
    /// unlink, complete.
    fn delete(&self, journal: &Mutex<Journal>) -> Result<Stage, StepError> {
        self.say("deploy", "snapshot of its data, then docker compose down".to_owned());
        self.event("deployment_started", "info", json!({"action": "delete"}));
        // A delete carries no contract: its own folders, with the containers stopped.
        let spec = crate::plan::Snapshot {
            stop: true,
            min_free: crate::model::DEFAULT_SNAPSHOT_MIN_FREE,
            paths: vec![format!("data/{}", self.svc), format!("config/{}", self.svc)],
        };
        let dir = self.snapshot_dir();
        let said = match remote::down_and_unlink(
            self.at.exec,
            &self.carry(),
            &self.at.layout,
            self.svc,
            &self.job("down"),
            remote::Data::Snapshot { dir: &dir, spec: &spec },
        ) {
            Ok(said) => said,
            Err(e @ StepError::Failed { status: Some(remote::SNAPSHOT_REFUSED), .. }) => {
                return self.fail_early(journal, e, None, "deploy");
            }
            Err(e) => return Err(e),
        };
        let mut data = json!({"action": "delete"});
        let mut message = "removed".to_owned();
        if let Some((id, items, _)) = said.snapshot.filter(|s| s.1 > 0) {
            data["snapshot"] = json!(id);
            message = format!("removed; its data is kept in snapshot {id} ({items} item(s))");
        }
        self.complete(journal, data, &message)
    }

    /// Uploads the artifacts and their manifest to a staging folder, checks every hash on the
    /// node and seals it as the release; remembers what was live for rollback. With `rt`,
    /// validates the release in the same command (see `validate`).
    fn prepare(&self, journal: &Mutex<Journal>, rt: Option<&Runtime>) -> Result<Stage, StepError> {
        let (c, at, svc) = (self.c, self.at, self.svc);
        let also = if rt.is_some() { " and validating" } else { "" };
        self.say("prepare", format!("uploading {} artifact(s){also}", c.artifacts.len()));
        self.event("deployment_started", "info", json!({"action": c.action.as_str()}));
        let staging = at.layout.staging(svc, self.run.id);
        let manifest = Manifest::of(
            svc,
            self.run.node.id.as_str(),
            c.artifacts.iter().map(|a| (a.name.as_str(), a.bytes(), a.mode)),
        );
        let mbytes = manifest.to_bytes();
        // One stream, one round trip: every artifact and the manifest, checked against the
        // plan's hashes on the node, then sealed as the release.
        let mut files: Vec<(&str, u32, &[u8])> =
            c.artifacts.iter().map(|a| (a.name.as_str(), a.mode, a.bytes())).collect();
        files.push((MANIFEST, 0o644, &mbytes));
        let live = at.layout.live(svc);
        let env_file = at.layout.env_file(svc);
        let log = self.log("validate");
        let validate = rt.map(|rt| remote::ValidateArgs {
            svc,
            env_file: &env_file,
            log: &log,
            secrets: &rt.secrets,
            variables: &rt.variables,
        });
        let jobs = at.layout.jobs(self.run.id, svc);
        let carry = self.carry();
        let prepared = match remote::prepare(
            at.exec,
            &carry,
            &staging,
            &self.release,
            &live,
            &jobs,
            &files,
            validate,
        ) {
            Ok(p) => p,
            Err(e) => return self.fail_early(journal, e, None, "prepare"),
        };
        let previous = prepared.previous.filter(|p| *p != self.release);
        self.stage_done(Step::Prepare);
        let stage = match prepared.validated {
            None => Stage::Prepared,
            Some(Ok(resolved)) => {
                if let Some(why) = rt.and_then(|rt| self.refusal(rt, &resolved)) {
                    self.run.update(journal, svc, |e| e.previous = previous);
                    return self.refuse(journal, Why::same(why), Some(&log), "validate");
                }
                self.stage_done(Step::Validate);
                Stage::Validated
            }
            Some(Err(e)) => {
                self.run.update(journal, svc, |e| e.previous = previous);
                return self.fail_early(journal, e, Some(&log), "validate");
            }
        };
        self.run.update(journal, svc, |e| {
            e.previous = previous;
            e.stage = stage;
            e.error = None;
        });
        Ok(stage)
    }

    /// The compose rules on what the node's Compose resolved (`compose::on_node`): why the
    /// release may not go live, or `None`. A plan made before the node checked this carries no
    /// limits and is not judged.
    fn refusal(&self, rt: &Runtime, resolved: &remote::Resolved) -> Option<String> {
        let limits = rt.limits.as_ref()?;
        let layout = &self.at.layout;
        let files: Vec<(&str, &str)> = self
            .c
            .artifacts
            .iter()
            .filter(|a| a.name == crate::render::COMPOSE || a.name == crate::render::OVERRIDE)
            .map(|a| (a.name.as_str(), a.text.as_str()))
            .collect();
        let releases = [layout.releases(self.svc), layout.live(self.svc)];
        let env_file = layout.env_file(self.svc);
        let on = crate::model::validate::compose::OnNode {
            inst: &self.c.instance,
            root: layout.root(),
            exposure: limits.exposure,
            lan_ip: limits.lan_address,
            declared: &limits.paths,
            releases: &releases,
            env_file: &env_file,
            files: &files,
        };
        let found = crate::model::validate::compose::on_node(&on, resolved);
        if found.is_empty() {
            return None;
        }
        // Every problem, up to a summary's worth: the reason travels in the journal and events.
        let mut said: Vec<String> =
            found.iter().take(SAID_PROBLEMS).map(ToString::to_string).collect();
        if found.len() > SAID_PROBLEMS {
            said.push(format!(
                "and {} more problem(s) with what the node resolved",
                found.len() - SAID_PROBLEMS
            ));
        }
        Some(format!(
            "what Compose would run on the node breaks the compose rules, so nothing was deployed:\n{}",
            said.join("\n")
        ))
    }

    /// `docker compose config` of the release, and the contract's secrets present.
    fn validate(&self, journal: &Mutex<Journal>, rt: &Runtime) -> Result<Stage, StepError> {
        self.say("validate", "docker compose config, secrets present".to_owned());
        let env_file = self.at.layout.env_file(self.svc);
        let log = self.log("validate");
        let v = remote::ValidateArgs {
            svc: self.svc,
            env_file: &env_file,
            log: &log,
            secrets: &rt.secrets,
            variables: &rt.variables,
        };
        let resolved = match remote::validate(self.at.exec, &self.carry(), &self.release, &v) {
            Ok(r) => r,
            Err(e) => return self.fail_early(journal, e, Some(&log), "validate"),
        };
        if let Some(why) = self.refusal(rt, &resolved) {
            return self.refuse(journal, Why::same(why), Some(&log), "validate");
        }
        self.stage_done(Step::Validate);
        self.set(journal, Stage::Validated, None);
        Ok(Stage::Validated)
    }

    /// Switches the live link and brings the release up. `Deploying` is journaled first, so a
    /// cut here is resumed by running it again. When verify follows in this run and the
    /// dead-man is on, the node is told to roll back by itself unless verify confirms in time.
    fn deploy(
        &self,
        journal: &Mutex<Journal>,
        rt: &Runtime,
        verify_follows: bool,
    ) -> Result<Stage, StepError> {
        self.say("deploy", "switching to the new release, docker compose up -d".to_owned());
        // `deploying` travels with the command that switches: it is on the node first.
        self.set(journal, Stage::Deploying, None);
        let log = self.log("up");
        let previous = journal.lock().expect("journal").services[self.svc].previous.clone();
        let to = previous.as_deref().unwrap_or("nothing (first deploy)");
        let h = rt.healthcheck;
        let secs = self.run.opts.confirm_timeout.filter(|_| verify_follows).map(|c| {
            // The confirmation comes after the healthcheck passes: its whole budget first.
            let tries = (h.interval + h.timeout) * h.retries;
            (c + h.start_period + tries + h.stable_for).as_secs().max(1)
        });
        let line = crate::events::line(
            "__TIME__",
            "remediation_completed",
            "critical",
            "homelab dead-man",
            self.svc,
            self.run.id,
            self.run.node.id.as_str(),
            json!({
                "action": "rollback",
                "to": to,
                "reason": format!("no confirmation from the controller within {} s of compose up", secs.unwrap_or(0)),
            }),
        );
        let dir = self.job("deadman");
        let back_log = self.log("deadman-rollback");
        let deadman = secs.map(|secs| remote::Deadman {
            dir: &dir,
            secs,
            node: self.run.node.id.as_str(),
            line: line.trim_end(),
            previous: previous.as_deref(),
            log: &back_log,
        });
        let snapshot = self.snapshot_dir();
        // A restore plan puts back a snapshot: a restic one is fetched into the node's
        // snapshots first (nothing is stopped or changed if that fails).
        let from = match self.restore_source(rt) {
            Ok(from) => from,
            Err(StepError::Link { reason }) => return Err(StepError::Link { reason }),
            Err(e) => return self.fail_early(journal, e, None, "deploy"),
        };
        let data = match (&rt.snapshot, &from) {
            (Some(spec), Some(from)) => remote::Data::Recover { dir: &snapshot, spec, from },
            (Some(spec), None) => remote::Data::Snapshot { dir: &snapshot, spec },
            (None, _) => remote::Data::Keep,
        };
        match remote::switch_and_up(
            self.at.exec,
            &self.carry(),
            &self.at.layout,
            self.svc,
            &self.release,
            &log,
            &self.job("up"),
            deadman.as_ref(),
            &rt.folders,
            &rt.watched,
            &rt.networks,
            data,
        ) {
            Ok(said) => {
                if let Some((id, items, kib)) = said.snapshot.filter(|s| s.1 > 0) {
                    self.say(
                        "deploy",
                        format!("data snapshot {id} taken before the change: {items} item(s), {kib} KiB"),
                    );
                }
                if let (Some(r), Some((_, items))) = (&self.c.restore, said.restored) {
                    let what = format!("{} snapshot {}", r.kind(), r.id);
                    self.say("deploy", format!("data restored from {what}: {items} item(s)"));
                }
            }
            Err(StepError::Link { reason }) => return Err(StepError::Link { reason }),
            // The snapshot refused (space) or failed: nothing was stopped or changed.
            Err(e @ StepError::Failed { status: Some(remote::SNAPSHOT_REFUSED), .. }) => {
                return self.fail_early(journal, e, None, "deploy");
            }
            Err(e) => return self.roll_back(journal, rt, cause(&e, Some(&log)), "deploy"),
        }
        self.deployed_in.set(super::batch::last_batch());
        self.stage_done(Step::Deploy);
        self.set(journal, Stage::Deployed, None);
        Ok(Stage::Deployed)
    }

    /// Where a restore plan's data comes from on the node (`None`: not a restore): a local
    /// snapshot's folder, or the folder a restic snapshot is fetched into.
    fn restore_source(&self, rt: &Runtime) -> Result<Option<String>, StepError> {
        let Some(r) = &self.c.restore else { return Ok(None) };
        let refused = |stderr: String| StepError::Failed { step: "restore", status: None, stderr };
        let Some(spec) = &rt.snapshot else {
            return Err(refused("the plan names no data folders to restore".to_owned()));
        };
        match &r.from {
            crate::plan::RestoreFrom::Local => Ok(Some(self.at.layout.snapshot(self.svc, &r.id))),
            crate::plan::RestoreFrom::Restic { repository, options } => {
                let dest = self.at.layout.snapshot(self.svc, &format!("restic-{}", r.id));
                self.say("deploy", format!("fetching restic snapshot {} from {repository}", r.id));
                let items = super::restic::fetch(
                    self.at.exec,
                    self.svc,
                    &r.id,
                    repository,
                    options,
                    &dest,
                    &spec.paths,
                )?;
                self.say("deploy", format!("restic snapshot {} fetched: {items} item(s)", r.id));
                Ok(Some(dest))
            }
        }
    }

    /// The contract's healthcheck, with Docker's meaning of its fields: it is tried at once;
    /// `start_period` is a grace period during which failures do not count; `interval` is the
    /// pause between tries; `retries` the failures tolerated after the grace period. A pass is
    /// not yet verified: every container of the service must then stay up over the stability
    /// window (`stable_for`), watched on the node in the same command.
    fn verify(&self, journal: &Mutex<Journal>, rt: &Runtime) -> Result<Stage, StepError> {
        let h = rt.healthcheck;
        self.say(
            "verify",
            format!(
                "healthcheck: at once, then every {:?}; {} failure(s) after a {:?} grace period, timeout {:?}; then up for {:?}",
                h.interval, h.retries, h.start_period, h.timeout, h.stable_for
            ),
        );
        // With the dead-man on, over a fresh connection: a pass also confirms the deploy, and
        // proves the node can still be reached anew after the change.
        let fresh = match self.run.opts.confirm_timeout {
            Some(_) => Some(self.run.fresh(self.at, self.deployed_in.get())?),
            None => None,
        };
        let exec: &dyn crate::transport::NodeExec = match &fresh {
            Some(e) => e,
            None => self.at.exec,
        };
        let deadman = self.job("deadman");
        let log = self.log("healthcheck");
        match self.health(exec, rt, &log, Some(&deadman))? {
            Checked::Healthy => {}
            Checked::RolledBackByNode(how) => return self.rolled_back_by_node(journal, Some(how)),
            Checked::Unhealthy(why) => return self.roll_back(journal, rt, why, "verify"),
            // The earlier run's rollback job is waited for (or its result read), never started
            // beside it: `roll_back` is idempotent.
            Checked::RollbackBegun => {
                let why = "an earlier run of this apply found the new version failing and began its rollback (its incident log is on the node); this run finishes it";
                return self.roll_back(journal, rt, Why::same(why.to_owned()), "verify");
            }
        }
        self.stage_done(Step::Verify);
        self.set(journal, Stage::Verified, None);
        Ok(Stage::Verified)
    }

    /// Tries the healthcheck as `verify` says, over `exec`, with the stability window after a
    /// pass; with `deadman`, a healthy and stable service confirms the deploy.
    fn health(
        &self,
        exec: &dyn crate::transport::NodeExec,
        rt: &Runtime,
        log: &str,
        deadman: Option<&str>,
    ) -> Result<Checked, StepError> {
        let h = rt.healthcheck;
        let started = std::time::Instant::now();
        // Never spin on a zero interval: each try is a command on the node.
        let pause = h.interval.max(std::time::Duration::from_millis(500));
        let mut said = String::new();
        let mut attempt = 0u32;
        let mut failures = 0u32;
        while failures < h.retries {
            attempt += 1;
            let node = self.run.node.id.as_str();
            let health = remote::healthcheck(
                exec,
                &self.carry(),
                &self.at.layout,
                node,
                self.svc,
                h.timeout,
                h.stable_for,
                log,
                deadman,
            )?;
            let output = match health {
                remote::Health::Healthy => return Ok(Checked::Healthy),
                remote::Health::RolledBackByNode(how) => return Ok(Checked::RolledBackByNode(how)),
                remote::Health::RollbackBegun => return Ok(Checked::RollbackBegun),
                // Up, then down again: another try would catch it up between two crashes.
                remote::Health::Unstable(what) => {
                    return Ok(Checked::Unhealthy(Why::same(format!("{what} (log: {log})"))))
                }
                remote::Health::Failing(output) => output,
            };
            said = output;
            let grace = started.elapsed() < h.start_period;
            if !grace {
                failures += 1;
            }
            self.event(
                "healthcheck_failed",
                "warning",
                json!({"attempt": attempt, "failures": failures, "of": h.retries, "grace_period": grace}),
            );
            if failures < h.retries {
                // Pausing, this service sends nothing: the others' commands need not wait.
                self.at.batcher.aside(|| std::thread::sleep(pause));
            }
        }
        let output = if said.is_empty() {
            "no output".to_owned()
        } else {
            remote::last_lines(&said, QUOTED_LINES, QUOTED_CHARS)
        };
        Ok(Checked::Unhealthy(Why {
            said: format!("healthcheck failed {} time(s): {output} (log: {log})", h.retries),
            noted: format!("healthcheck failed {} time(s) (log: {log})", h.retries),
        }))
    }

    /// The node rolled the service back by itself (the dead-man): no confirmation reached it in
    /// time. Recorded at once; the node wrote its own event. `how`: the node's own record of
    /// its rollback, when the command that found the decision read it.
    fn rolled_back_by_node(
        &self,
        journal: &Mutex<Journal>,
        how: Option<remote::NodeRollback>,
    ) -> Result<Stage, StepError> {
        let previous = journal.lock().expect("journal").services[self.svc].previous.clone();
        let to = previous.as_deref().unwrap_or("nothing (first deploy)");
        let mut reason = format!(
            "the node rolled back to {to} by itself: this apply's confirmation over a fresh connection came after its deadline (--confirm-timeout; log: {})",
            self.log("deadman-rollback")
        );
        if let Some(how) = &how {
            reason = format!("{reason}; {}", how.said());
        }
        let stage = match how {
            Some(remote::NodeRollback::Failed(_)) => Stage::RollbackFailed,
            _ => Stage::RolledBack,
        };
        self.say("rollback", reason.clone());
        self.set(journal, stage, Some(reason));
        self.run.flush(self.at)?;
        Ok(stage)
    }

    /// The last stage of a service: journal, event, progress.
    fn complete(
        &self,
        journal: &Mutex<Journal>,
        data: serde_json::Value,
        message: &str,
    ) -> Result<Stage, StepError> {
        self.set(journal, Stage::Completed, None);
        self.event("deployment_completed", "info", data);
        self.say("complete", message.to_owned());
        Ok(Stage::Completed)
    }

    /// Where the output of `step` of this service in this plan is kept on the node.
    fn log(&self, step: &str) -> String {
        self.at.layout.step_log(self.svc, self.run.id, step)
    }

    /// Prepare or validate failed: nothing live changed.
    fn fail_early(
        &self,
        journal: &Mutex<Journal>,
        e: StepError,
        log: Option<&str>,
        stage: &str,
    ) -> Result<Stage, StepError> {
        if matches!(e, StepError::Link { .. }) {
            return Err(e);
        }
        self.refuse(journal, cause(&e, log), log, stage)
    }

    /// The release may not go live, for `why`: nothing live changed.
    fn refuse(
        &self,
        journal: &Mutex<Journal>,
        why: Why,
        log: Option<&str>,
        stage: &str,
    ) -> Result<Stage, StepError> {
        self.run.say(ServiceName::parse(self.svc).ok().as_ref(), "failed", why.said.clone());
        self.set(journal, Stage::Failed, Some(why.said));
        self.event(
            "deployment_failed",
            "error",
            json!({"stage": stage, "reason": why.noted, "log": log}),
        );
        Ok(Stage::Failed)
    }

    /// Diagnose (status, logs kept on the node, an incident event) and take the deploy's one
    /// decision from the node's dead-man, then switch back to the previous release, bring it
    /// up and verify it as a deploy is verified; a first deploy is taken down instead. `reason`
    /// is the first cause: what the rollback finds adds to it, never replaces it. When the node
    /// had already rolled back by itself, nothing is done twice.
    fn roll_back(
        &self,
        journal: &Mutex<Journal>,
        rt: &Runtime,
        why: Why,
        stage: &str,
    ) -> Result<Stage, StepError> {
        let (at, svc) = (self.at, self.svc);
        let Why { said: reason, noted } = why;
        self.say("diagnose", reason.clone());
        let log = at.layout.incident_log(svc, self.run.id);
        let deadman = self.job("deadman");
        let found =
            match remote::diagnose(at.exec, &self.carry(), &at.layout, svc, &log, Some(&deadman)) {
                Ok(d) => d,
                Err(e @ StepError::Link { .. }) => return Err(e),
                // Status is for the incident: without it the rollback still goes on. The decision
                // was not taken, but the watchdog stands down by itself once the live release is
                // no longer the one it guards.
                Err(e) => remote::Diagnosis { status: e.to_string(), rolled_back_by_node: false },
            };
        if found.rolled_back_by_node {
            return self.rolled_back_by_node(journal, None);
        }
        self.event(
            "deployment_failed",
            "error",
            json!({"stage": stage, "reason": noted, "containers": found.status, "log": log}),
        );
        let previous = journal.lock().expect("journal").services[svc].previous.clone();
        let to = previous.as_deref().unwrap_or("nothing (first deploy)");
        self.event("remediation_started", "warning", json!({"action": "rollback", "to": to}));
        let rollback_log = self.log("rollback");
        // The data goes back with the release: the snapshot this deploy took, if any.
        let snapshot = self.snapshot_dir();
        let data = match &rt.snapshot {
            Some(_) => remote::Data::Restore { dir: &snapshot },
            None => remote::Data::Keep,
        };
        let done = match &previous {
            Some(prev) => {
                self.say("rollback", format!("back to {prev}"));
                let job = self.job("rollback");
                remote::switch_and_up(
                    at.exec,
                    &self.carry(),
                    &at.layout,
                    svc,
                    prev,
                    &rollback_log,
                    &job,
                    None,
                    &rt.folders,
                    &rt.watched,
                    &rt.networks,
                    data,
                )
            }
            None => {
                self.say("rollback", "first deploy: taking it down".to_owned());
                remote::down_and_unlink(
                    at.exec,
                    &self.carry(),
                    &at.layout,
                    svc,
                    &self.job("rollback"),
                    data,
                )
            }
        };
        let restored = match done {
            Ok(said) => said.restored.filter(|r| r.1 > 0).map(|r| r.0),
            Err(e @ StepError::Link { .. }) => return Err(e),
            Err(e) => {
                let failed = cause(&e, previous.as_ref().map(|_| rollback_log.as_str()));
                let error = format!(
                    "{reason}; then the rollback to {to} failed: {}; the node runs neither version as planned: repair it by hand (`homelab apply --stage diagnose` shows its state), then plan again",
                    failed.said
                );
                self.run.say(ServiceName::parse(svc).ok().as_ref(), "failed", error.clone());
                self.set(journal, Stage::RollbackFailed, Some(error));
                self.event(
                    "remediation_failed",
                    "critical",
                    json!({"action": "rollback", "reason": noted, "error": failed.noted}),
                );
                // The node must not claim the new version is live: recorded now.
                self.run.flush(at)?;
                return Ok(Stage::RollbackFailed);
            }
        };
        let data = match &restored {
            Some(id) => format!(", data restored to snapshot {id}"),
            None => String::new(),
        };
        // The previous version is verified as a deploy is: "rolled back" says whether it is
        // healthy. A first deploy taken down has nothing to verify.
        let (outcome, healthy) = match &previous {
            None => (format!("first deploy taken down{data}"), true),
            Some(prev) => {
                self.say("verify", format!("the previous release {prev}"));
                let log = self.log("rollback-healthcheck");
                match self.health(at.exec, rt, &log, None)? {
                    Checked::Unhealthy(why) => (
                        format!("rolled back to {prev}{data}, which is unhealthy: {}", why.said),
                        false,
                    ),
                    _ => (format!("rolled back to {prev}{data}, healthy"), true),
                }
            }
        };
        self.say("rollback", outcome.clone());
        self.set(journal, Stage::RolledBack, Some(format!("{reason}; {outcome}")));
        self.event(
            "remediation_completed",
            if healthy { "info" } else { "critical" },
            json!({"action": "rollback", "to": to, "healthy": healthy, "snapshot": restored}),
        );
        // A rolled-back service must never be resumed as if its new version were live.
        self.run.flush(at)?;
        Ok(Stage::RolledBack)
    }
}

/// What trying a service's healthcheck (and stability window) found.
enum Checked {
    Healthy,
    /// Not healthy, or not staying up: why, with where its output is kept.
    Unhealthy(Why),
    /// An earlier run of this apply had taken the decision to roll back.
    RollbackBegun,
    /// The node's dead-man had decided first and rolled the service back by itself.
    RolledBackByNode(remote::NodeRollback),
}

/// How many of the node's problems with a release a summary says in full.
const SAID_PROBLEMS: usize = 5;

/// How many lines of a tool's output a summary or an event quotes, and at most how many
/// characters: the whole output stays in the log on the node.
const QUOTED_LINES: usize = 5;
const QUOTED_CHARS: usize = 600;

/// Why a service failed, said twice (issue 19). `said` is for the operator's own output and
/// the node's journal (0600): it quotes the last lines of the tool's output, whose values of
/// the node's `.env` the node redacted before they left it. `noted` is for events, and so for
/// everything folded from them (the world, the operator page): it names the step, its status
/// and where the whole output is kept on the node (0600), never the output itself.
struct Why {
    said: String,
    noted: String,
}

impl Why {
    /// A cause in homelab's own words, with no tool output in it: said and noted alike.
    fn same(text: String) -> Why {
        Why { noted: text.clone(), said: text }
    }
}

/// A failed step as the cause users read: the step, its status and the last lines it printed,
/// and where its whole output is kept on the node; for events, without the lines.
fn cause(e: &StepError, log: Option<&str>) -> Why {
    let at = |text: String| match log {
        Some(log) => format!("{text} (log: {log})"),
        None => text,
    };
    match e {
        StepError::Failed { step, status, stderr } => {
            let head = format!(
                "{step} failed (exit {})",
                status.map_or("signal".to_owned(), |c| c.to_string())
            );
            Why {
                said: at(format!(
                    "{head}: {}",
                    remote::last_lines(stderr, QUOTED_LINES, QUOTED_CHARS)
                )),
                noted: at(head),
            }
        }
        e => Why::same(at(e.to_string())),
    }
}
