//! The bot's passes: read the presses (`getUpdates` from the kept offset) and answer each, then
//! announce what is new under the controller root: a message with Approve and Reject buttons
//! for each new pending plan, the outcome edited into a plan's message when its action reaches
//! `completed/` or `failed/`, and a message for each new open incident of the world.
//!
//! A press approves only when all of these hold, else nothing is signed and the presser (and
//! the message) are told why: it was not handled before (replay), its data carries the bot's
//! MAC (forgery), its user is named in `policy.yaml` (`telegram.users`), the plan file still
//! has the hash the button was made for (stale), the plan is still pending, the policy grants
//! the user every change of the plan, every node that asks for a human's key has one already,
//! and the plan passes the review `homelab approve` runs. The signing and the records are
//! `approve::policy`'s, the same functions `homelab approve` and `homelab reject` call; a
//! rejection is then written on the plan's nodes as `homelab reject` writes it
//! (`apply::reject`).
//!
//! Telegram being down never stops a pass: what could not be sent is tried again on the next
//! one, and nothing here is on the path of an apply.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::client::{CallbackQuery, Client};
use super::state::{Sent, State, StateError};
use super::{fit, Button, Callback, Op};
use crate::apply::reject::{describe, missed_any, record_on_nodes};
use crate::approve::policy::{self, Refusal};
use crate::approve::{AllowedSigners, Signer, Verified};
use crate::executor::Queue;
use crate::model::{Homelab, NodeName};
use crate::node::records::{PendingAction, Rejection};
use crate::node::ActionState;
use crate::plan::file::{self, LoadedPlan};
use crate::transport::Transport;

/// Everything a pass needs, built by the command.
pub struct Bot<'a> {
    pub repo: &'a Path,
    /// Where the plans are (`plans/` of the repository).
    pub plans: PathBuf,
    pub lab: &'a Homelab,
    pub signers: &'a AllowedSigners,
    pub key: &'a Signer,
    /// What the bot's key may sign as in `homelab-approve` (its `telegram:` principals).
    pub key_allows: &'a Verified,
    pub queue: Queue,
    pub client: &'a Client,
    pub chat: i64,
    /// How a rejection reaches the plan's nodes, and which of them it is written on.
    pub transport: &'a dyn Transport,
    pub nodes: &'a [NodeName],
    pub state_path: PathBuf,
    pub state: State,
}

/// What a press came to.
struct Verdict {
    /// For answerCallbackQuery (at most 200 characters shown).
    answer: String,
    /// For the plan's message (and stdout).
    note: String,
}

impl Bot<'_> {
    /// One pass: presses first (waiting up to `poll` seconds for one), then announcements.
    /// Returns how many things could not be sent; errors only when the state cannot be kept.
    pub fn pass(&mut self, poll: u64, out: &mut dyn Write) -> Result<usize, StateError> {
        let mut failed = 0;
        match self.client.get_updates(self.state.offset, poll) {
            Ok(updates) => {
                for u in updates {
                    if u.update_id < self.state.offset {
                        continue;
                    }
                    if let Some(cb) = u.callback_query {
                        self.press(cb, out)?;
                    }
                    // Saved after each update: a restart never handles one twice.
                    self.state.offset = u.update_id + 1;
                    self.state.save(&self.state_path)?;
                }
            }
            Err(e) => {
                failed += 1;
                say(out, format!("telegram: cannot read presses: {e}"));
            }
        }
        failed += self.announce_pending(out)?;
        failed += self.announce_results(out)?;
        failed += self.announce_incidents(out)?;
        Ok(failed)
    }

    /// The first run: actions that ended before the bot ran and incidents already closed are
    /// not news.
    pub fn baseline(&mut self) {
        for state in [ActionState::Completed, ActionState::Failed] {
            for f in self.queue.list(state).unwrap_or_default() {
                self.state.old_results.insert(f.id);
            }
        }
        if let Ok(w) = crate::world::store::load(&self.queue_root()) {
            for (id, i) in &w.world.incidents {
                if i.state != "open" {
                    self.state.incidents.insert(id.clone());
                }
            }
        }
    }

    fn queue_root(&self) -> PathBuf {
        // `<root>/actions/pending/x.json` → `<root>`.
        let p = self.queue.path(ActionState::Pending, "x");
        p.ancestors().nth(3).map(Path::to_path_buf).unwrap_or_default()
    }

    // ---- presses -------------------------------------------------------------------------

    fn press(&mut self, cb: CallbackQuery, out: &mut dyn Write) -> Result<(), StateError> {
        let verdict = self.judge(&cb);
        say(out, format!("press by {} ({}): {}", cb.from.id, who(&cb), verdict.note));
        if let Err(e) = self.client.answer_callback_query(&cb.id, &verdict.answer) {
            // A replayed press can no longer be answered (Telegram: "query is too old"); the
            // message still says why.
            say(out, format!("telegram: cannot answer the press: {e}"));
        }
        // The note goes on the plan's message, when it is one of ours.
        let Some(m) = &cb.message else { return Ok(()) };
        let Some(id) = self.state.plan_of_message(m.chat.id, m.message_id) else { return Ok(()) };
        let buttons = self.buttons_for(&id);
        let sent = self.state.messages.get_mut(&id).expect("found above");
        sent.note(format!("{} {}", stamp(), verdict.note));
        let text = sent.render();
        let (chat, message_id) = (sent.chat, sent.message_id);
        self.state.save(&self.state_path)?;
        if let Err(e) = self.client.edit_message_text(chat, message_id, &text, &buttons) {
            say(out, format!("telegram: cannot edit the message of plan {id}: {e}"));
        }
        Ok(())
    }

    /// The buttons a plan's message keeps: while its action is pending and its outcome untold.
    fn buttons_for(&self, id: &str) -> Vec<Button> {
        let Some(sent) = self.state.messages.get(id) else { return Vec::new() };
        if sent.outcome.is_some() || !self.queue.path(ActionState::Pending, id).exists() {
            return Vec::new();
        }
        self.buttons(id, &sent.hash)
    }

    fn buttons(&self, id: &str, hash: &str) -> Vec<Button> {
        let secret = self.state.secret().to_vec();
        let data = |op| Callback { op, id: id.to_owned(), hash: hash.to_owned() }.encode(&secret);
        vec![
            Button { text: "✅ Approve".to_owned(), data: data(Op::Approve) },
            Button { text: "❌ Reject".to_owned(), data: data(Op::Reject) },
        ]
    }

    fn judge(&mut self, cb: &CallbackQuery) -> Verdict {
        let refuse = |short: &str, long: String| Verdict {
            answer: format!("Refused: {short}. Nothing done."),
            note: format!("refused: {long}; nothing done"),
        };
        if self.state.seen_callback(&cb.id) {
            return refuse(
                "this press was handled already",
                format!("press {} by user {} was handled already (replayed)", cb.id, cb.from.id),
            );
        }
        let data = cb.data.as_deref().unwrap_or_default();
        let Some(call) = Callback::verify(data, self.state.secret()) else {
            return refuse(
                "this button was not made by this bot",
                format!(
                    "a press by user {} carried data this bot did not make (forged or from an older bot)",
                    cb.from.id
                ),
            );
        };
        let user = cb.from.id;
        let principal = format!("{}{user}", crate::model::TELEGRAM_PRINCIPAL);
        if cb.from.is_bot || !self.lab.policy.telegram.contains_key(&user) {
            return refuse(
                "you are not named in the homelab's policy",
                format!(
                    "Telegram user {user} ({}) is not named in inventory/policy.yaml (telegram.users)",
                    who(cb)
                ),
            );
        }
        let id = call.id.clone();
        let path = self.plans.join(format!("{id}.plan"));
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                return refuse(
                    "the plan file is gone",
                    format!("plan {id}: cannot read `{}`: {e}", path.display()),
                )
            }
        };
        let now_hash = super::plan_hash(&bytes);
        if now_hash != call.hash {
            return refuse(
                "the plan changed since this message",
                format!(
                    "plan {id} changed since this message (its file hashes to {now_hash}, the button was made for {}): stale",
                    call.hash
                ),
            );
        }
        let loaded = match file::read(&path) {
            Ok(l) => l,
            Err(e) => return refuse("the plan cannot be read", format!("plan {id}: {e}")),
        };
        if !self.queue.path(ActionState::Pending, &id).exists() {
            let state = [
                ActionState::Approved,
                ActionState::Running,
                ActionState::Completed,
                ActionState::Failed,
            ]
            .into_iter()
            .find(|s| self.queue.path(*s, &id).exists())
            .map_or("not in the actions", ActionState::as_str);
            return refuse(
                &format!("the plan is no longer pending ({state})"),
                format!("plan {id} is no longer pending ({state})"),
            );
        }
        let now = SystemTime::now();
        match call.op {
            Op::Approve => self.approve(&loaded, &principal, cb, now),
            Op::Reject => self.reject(&loaded, &principal, cb, now),
        }
    }

    fn approve(
        &self,
        loaded: &LoadedPlan,
        principal: &str,
        cb: &CallbackQuery,
        now: SystemTime,
    ) -> Verdict {
        let id = &loaded.id;
        let refused = |r: &dyn std::fmt::Display| Verdict {
            answer: fit_answer(&format!("Not approved: {r}")),
            note: format!("refused: {principal} ({}) did not approve: {r}", who(cb)),
        };
        if !self.key_allows.allows(principal) {
            return refused(&format!(
                "the bot's key {} is not allowed as `{principal}` in inventory/allowed_signers",
                self.key.fingerprint()
            ));
        }
        if let Err(r) = policy::check_bot_approval(self.lab, loaded, self.signers, principal, now) {
            return refused(&r);
        }
        // What `homelab approve` checks before it shows a plan as approvable.
        if let Err(r) = crate::review::verify(self.repo, self.lab, loaded) {
            return refused(&r);
        }
        match policy::approve(
            loaded,
            self.key,
            self.signers,
            &self.lab.policy,
            self.queue.records(),
            now,
        ) {
            Ok(done) if done.added => Verdict {
                answer: format!("Approved plan {id} as {principal}."),
                note: format!(
                    "approved by {principal} ({}) with the bot's key {}: {}",
                    who(cb),
                    self.key.fingerprint(),
                    done.path.display()
                ),
            },
            Ok(_) => Verdict {
                answer: "Refused: already approved by this bot; nothing more signed.".to_owned(),
                note: format!(
                    "refused: {principal} ({}) pressed Approve again: plan {id} is already approved by the bot's key (duplicate); nothing more signed",
                    who(cb)
                ),
            },
            Err(e) => refused(&e),
        }
    }

    fn reject(
        &self,
        loaded: &LoadedPlan,
        principal: &str,
        cb: &CallbackQuery,
        now: SystemTime,
    ) -> Verdict {
        let by = format!("{principal} ({}) through the Telegram bot", who(cb));
        let record = Rejection::new(
            &loaded.id,
            crate::clock::rfc3339(now),
            by.clone(),
            "rejected from Telegram".to_owned(),
        );
        let path = match policy::reject(loaded, &record, self.queue.records()) {
            Ok(path) => path,
            Err(e) => {
                return Verdict {
                    answer: fit_answer(&format!("Not rejected: {e}")),
                    note: format!("refused: the rejection by {by} could not be recorded: {e}"),
                }
            }
        };
        // Recorded beside the plan and on the controller, the rejection stands; on its nodes
        // it also refuses other controllers and copies of the plan. A node that cannot be
        // reached is told, not a failure of the rejection.
        let on_nodes = record_on_nodes(self.lab, loaded, &record, self.transport, self.nodes);
        let mut note = format!("rejected by {by}: {}", path.display());
        let described = describe(&on_nodes);
        if !described.is_empty() {
            note.push_str(&format!("; {described}"));
        }
        let mut answer = format!("Rejected plan {}.", loaded.id);
        if missed_any(&on_nodes) {
            note.push_str(": an apply from another controller could still reach it there; run `homelab reject` when it answers");
            answer.push_str(" Not recorded on some of its nodes: see the message.");
        }
        Verdict { answer: fit_answer(&answer), note }
    }

    // ---- announcements -------------------------------------------------------------------

    fn announce_pending(&mut self, out: &mut dyn Write) -> Result<usize, StateError> {
        let mut failed = 0;
        for found in self.queue.list(ActionState::Pending).unwrap_or_default() {
            if self.state.messages.contains_key(&found.id) {
                continue;
            }
            let path = self.plans.join(format!("{}.plan", found.id));
            let bytes = std::fs::read(&path).unwrap_or_default();
            let hash = super::plan_hash(&bytes);
            let checked = file::read(&path).map_err(Refusal::from).and_then(|l| {
                policy::verify_planner(&l, self.signers, SystemTime::now())?;
                Ok(l)
            });
            let text = pending_text(&found.id, &checked, found.record.as_ref());
            let buttons = if checked.is_ok() { self.buttons(&found.id, &hash) } else { vec![] };
            match self.client.send_message(self.chat, &fit(&text), &buttons) {
                Ok(message_id) => {
                    self.state.messages.insert(
                        found.id.clone(),
                        Sent {
                            chat: self.chat,
                            message_id,
                            hash,
                            text: fit(&text),
                            notes: Vec::new(),
                            outcome: None,
                        },
                    );
                    self.state.save(&self.state_path)?;
                    say(out, format!("sent plan {} (message {message_id})", found.id));
                }
                Err(e) => {
                    failed += 1;
                    say(out, format!("telegram: cannot send plan {}: {e}", found.id));
                }
            }
        }
        Ok(failed)
    }

    fn announce_results(&mut self, out: &mut dyn Write) -> Result<usize, StateError> {
        let mut failed = 0;
        for state in [ActionState::Completed, ActionState::Failed] {
            for found in self.queue.list(state).unwrap_or_default() {
                if self.state.old_results.contains(&found.id) {
                    continue;
                }
                let outcome = outcome_text(state, found.record.as_ref());
                let told = match self.state.messages.get(&found.id) {
                    Some(s) if s.outcome.is_some() => continue,
                    Some(s) => {
                        let mut s = s.clone();
                        s.outcome = Some(outcome.clone());
                        self.client
                            .edit_message_text(s.chat, s.message_id, &s.render(), &[])
                            .map(|()| s)
                    }
                    None => {
                        let mut s = Sent {
                            chat: self.chat,
                            message_id: 0,
                            hash: String::new(),
                            text: format!("homelab: plan {}", found.id),
                            notes: Vec::new(),
                            outcome: Some(outcome.clone()),
                        };
                        self.client.send_message(self.chat, &s.render(), &[]).map(|mid| {
                            s.message_id = mid;
                            s
                        })
                    }
                };
                match told {
                    Ok(s) => {
                        let mid = s.message_id;
                        self.state.messages.insert(found.id.clone(), s);
                        self.state.save(&self.state_path)?;
                        say(
                            out,
                            format!("told plan {} {} (message {mid})", found.id, state.as_str()),
                        );
                    }
                    Err(e) => {
                        failed += 1;
                        say(
                            out,
                            format!("telegram: cannot tell the result of plan {}: {e}", found.id),
                        );
                    }
                }
            }
        }
        Ok(failed)
    }

    fn announce_incidents(&mut self, out: &mut dyn Write) -> Result<usize, StateError> {
        let Ok(loaded) = crate::world::store::load(&self.queue_root()) else { return Ok(0) };
        let mut failed = 0;
        for (id, i) in &loaded.world.incidents {
            if self.state.incidents.contains(id) {
                continue;
            }
            if i.state != "open" {
                // Closed before the bot saw it open: not news any more.
                self.state.incidents.insert(id.clone());
                continue;
            }
            let mut text = format!(
                "⚠️ homelab incident on {}: {}",
                i.node.to_uppercase(),
                i.kind.replace('_', " ")
            );
            if let Some(s) = &i.service {
                text.push_str(&format!(" of {s}"));
            }
            text.push_str(&format!(" ({}), since {}", i.severity, i.opened));
            if let Some(r) = &i.reason {
                text.push_str(&format!("\nreason: {r}"));
            }
            if let Some(p) = &i.plan {
                text.push_str(&format!("\nplan: {p}"));
            }
            match self.client.send_message(self.chat, &fit(&text), &[]) {
                Ok(mid) => {
                    self.state.incidents.insert(id.clone());
                    self.state.save(&self.state_path)?;
                    say(out, format!("told incident {id} (message {mid})"));
                }
                Err(e) => {
                    failed += 1;
                    say(out, format!("telegram: cannot tell incident {id}: {e}"));
                }
            }
        }
        Ok(failed)
    }
}

/// The first name (and @username) of a presser.
fn who(cb: &CallbackQuery) -> String {
    let mut w = cb.from.first_name.clone();
    if let Some(u) = &cb.from.username {
        w.push_str(&format!(" @{u}"));
    }
    if w.is_empty() {
        w = "no name".to_owned();
    }
    w
}

fn fit_answer(text: &str) -> String {
    let t: String = text.chars().take(200).collect();
    t
}

fn stamp() -> String {
    let t = crate::clock::rfc3339(SystemTime::now());
    // `2026-11-30T01:02:03Z` → `01:02Z`: the message shows the day already.
    t.get(11..16).map(|hm| format!("[{hm}Z]")).unwrap_or_default()
}

fn say(out: &mut dyn Write, line: String) {
    let _ = writeln!(out, "{line}");
}

/// A pending plan's message: what it changes where, who planned it and why, computed from the
/// plan file (the record's `reason` is the supervisor's word for the drift).
pub fn pending_text(
    id: &str,
    loaded: &Result<LoadedPlan, Refusal>,
    record: Option<&PendingAction>,
) -> String {
    let loaded = match loaded {
        Ok(l) => l,
        Err(r) => {
            return format!(
                "homelab: plan {id} is pending, but it cannot be approved: {r}\n(no buttons: fix or plan again)"
            )
        }
    };
    let plan = &loaded.plan;
    let nodes: Vec<String> = policy::changed_nodes(plan).map(|n| n.display_name()).collect();
    let mut t = format!("homelab: plan {id} awaits approval\n{}\n", plan.summary());
    t.push_str(&format!(
        "nodes: {}\n",
        if nodes.is_empty() { "none changed".to_owned() } else { nodes.join(", ") }
    ));
    let planner = plan.planner.split_whitespace().next().unwrap_or_default();
    t.push_str(&format!("planned by {planner}"));
    if plan.dirty || plan.commit == "none" {
        t.push_str(" from uncommitted changes\n");
    } else {
        t.push_str(&format!(" at commit {}\n", plan.commit.get(..12).unwrap_or(&plan.commit)));
    }
    if let Some(r) = record.and_then(|r| r.reason.as_ref()) {
        t.push_str(&format!("reason: {r}\n"));
    }
    t.push_str("changes:\n");
    for n in &plan.nodes {
        let changes: Vec<_> =
            n.changes.iter().filter_map(|c| policy::change_kind(c).map(|k| (k, c))).collect();
        if changes.is_empty() {
            continue;
        }
        t.push_str(&format!("{}\n", n.node.display_name()));
        for (kind, c) in changes {
            t.push_str(&format!(
                "  {} {} {kind}: {}\n",
                c.action.symbol(),
                c.instance.service,
                c.reason
            ));
        }
    }
    t.push_str(&format!("expires {}\nor: homelab approve plans/{id}.plan", plan.expires));
    t
}

/// How an action ended, for its message.
pub fn outcome_text(state: ActionState, record: Option<&PendingAction>) -> String {
    let result = record.and_then(|r| r.result.as_ref());
    let label = record.map(|r| r.state.as_str()).unwrap_or(state.as_str());
    let mut t = match (state, label) {
        (ActionState::Completed, _) => "✅ applied".to_owned(),
        (_, "superseded") => "↪️ superseded, not applied".to_owned(),
        _ => "❌ not applied".to_owned(),
    };
    if let Some(r) = result {
        t.push_str(&format!(" ({} by {}): {}", r.at, r.by, r.reason));
        for (node, s) in &r.nodes {
            t.push_str(&format!("\n  {node}: {}", s.outcome));
            if !s.detail.is_empty() {
                t.push_str(&format!(" ({})", s.detail));
            }
        }
    }
    t
}
