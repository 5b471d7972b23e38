//! Round trips per node, not per service (issue 10): the services of a node run on their own
//! threads, one stage after another, and the commands they send to the node at the same time
//! travel together as one command. The [`Batcher`] counts the node's service threads that can
//! send (the active ones; a thread waiting for a dependency or pausing between healthcheck
//! tries is not); when every active thread has a command waiting, the last to arrive sends them
//! all in one round trip ([`BATCH`]), and each thread gets its own command's answer. Which
//! commands go together is decided by the threads' progress, never by a timer, so the count
//! of round trips is a number the run knows: services in step run their prepares, their
//! deploys and their healthchecks together.
//!
//! The records a command carries (the journal's latest save, events) go first, in the batch's
//! prelude, before any of the batch's commands runs: a stage recorded as begun is on the node
//! before any step of the batch does anything.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::remote::{self, Carry};
use crate::transport::{quote, Container, DockerError, ExecError, NodeExec, Output};

/// How many commands of one batch run at once on the node: a few `compose up`s side by side
/// without crowding a small node. The batch is still one round trip whatever its size.
pub(super) const AT_ONCE_ON_NODE: usize = 8;

/// Runs a batch (a tar archive on stdin: `pre`, the records' command, `p/NNNNNN/{cmd,in}`,
/// each command as a quoted command line and its stdin, and `end`, last) in a fresh private folder: the prelude
/// first (a failure stops the batch with exit 97, as the records' own step does), then the
/// commands, `$1` at once, each with its stdin, its output and status kept; then prints each
/// command's result framed as `HLPART <n> <status> <stdout bytes> <stderr bytes>` followed by
/// the bytes. A controller killed mid-upload cuts the archive short: tar refuses it and
/// nothing runs.
const BATCH: &str = r#"set -u
k=$1
t=$(mktemp -d "${TMPDIR:-/tmp}/hl-batch.XXXXXX") || exit 90
trap 'rm -rf -- "$t"' EXIT
trap 'exit 129' HUP INT TERM
if ! tar -x -o -C "$t" 2>"$t/tar.err" || [ ! -f "$t/end" ]; then
  echo "the batch was cut short or is not an archive: $(head -c 300 "$t/tar.err")" >&2; exit 91
fi
if [ -f "$t/pre" ]; then
  sh "$t/pre" < /dev/null > "$t/pre.out" 2>&1 || { cat -- "$t/pre.out" >&2; exit 97; }
fi
n=0
for d in "$t"/p/*; do
  [ -d "$d" ] || continue
  ( sh "$d/cmd" < "$d/in" > "$d/out" 2> "$d/err"; echo "$?" > "$d/rc" ) &
  n=$((n + 1))
  if [ "$n" -ge "$k" ]; then wait; n=0; fi
done
wait
for d in "$t"/p/*; do
  [ -d "$d" ] || continue
  printf 'HLPART %s %s %s %s\n' "${d##*/}" "$(cat -- "$d/rc" 2>/dev/null)" "$(wc -c < "$d/out")" "$(wc -c < "$d/err")"
  cat -- "$d/out" "$d/err"
done
"#;

/// One command waiting in a batch.
struct Call {
    ticket: u64,
    exec: Arc<dyn NodeExec>,
    argv: Vec<String>,
    stdin: Vec<u8>,
    timeout: Duration,
}

#[derive(Default)]
struct State {
    /// Threads of the node that may send a command.
    active: usize,
    queue: Vec<Call>,
    answers: BTreeMap<u64, (Result<Output, ExecError>, u64)>,
    next: u64,
    /// Batches sent and answered so far.
    sent: u64,
    sending: bool,
    /// On this machine: the batch each waiting ticket was released into, with the answer all
    /// of its commands get instead of running when its records could not be written.
    released: BTreeMap<u64, (u64, Option<Output>)>,
    /// On this machine: per batch released, its commands still running, and once all ended,
    /// its number (as `sent` counts) and the members yet to read it.
    running: BTreeMap<u64, (usize, usize)>,
    ended: BTreeMap<u64, (u64, usize)>,
    released_batches: u64,
}

impl State {
    /// A command waits in the queue; its ticket.
    fn enqueue(
        &mut self,
        exec: &Arc<dyn NodeExec>,
        argv: &[&str],
        stdin: &[u8],
        timeout: Duration,
    ) -> u64 {
        let ticket = self.next;
        self.next += 1;
        self.queue.push(Call {
            ticket,
            exec: exec.clone(),
            argv: argv.iter().map(|a| (*a).to_owned()).collect(),
            stdin: stdin.to_vec(),
            timeout,
        });
        ticket
    }

    /// When every active thread has a command waiting and no batch is on its way: the
    /// waiting commands, taken by the caller, who sends them (`sending` until it is done).
    fn all_waiting(&mut self) -> Option<Vec<Call>> {
        if self.sending || self.queue.is_empty() || self.queue.len() < self.active {
            return None;
        }
        self.sending = true;
        Some(std::mem::take(&mut self.queue))
    }
}

/// The meeting point of a node's service threads (see the module's text).
#[derive(Default)]
pub(super) struct Batcher {
    state: Mutex<State>,
    changed: Condvar,
}

/// The records' command the batch runs first, when there are records waiting.
pub(super) type Prelude<'p> = dyn Fn() -> Option<Carry> + Sync + 'p;

impl Batcher {
    /// `n` more threads may send.
    pub(super) fn activate(&self, n: usize) {
        self.state.lock().expect("batcher").active += n;
    }

    /// A thread stops sending for now (waits for something else, pauses, or ends): the others
    /// need not wait for it.
    pub(super) fn deactivate(&self) {
        // Also while a panic unwinds: the others must not wait for this thread.
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.active = s.active.saturating_sub(1);
        self.changed.notify_all();
    }

    /// Runs `f` with this thread not counted as one that may send.
    pub(super) fn aside<T>(&self, f: impl FnOnce() -> T) -> T {
        self.deactivate();
        let out = f();
        self.activate(1);
        out
    }

    /// [`Batcher::call`] on this machine, where there is no trip to save but the batch's
    /// order still holds: the thread waits until every active thread has a command waiting;
    /// the last to arrive writes the records (`native::carry`) and releases them all; each
    /// runs its own `work`; each returns once all of its batch have ended, with the batch's
    /// number. So a stage is recorded before any step of its batch does anything, and a fresh
    /// connection made after a batch (a deploy's confirmation) is made after all of it, as
    /// with the batches a remote node gets. When the records cannot be written, every command
    /// of the batch answers as `CARRY` does (exit 97) and none runs.
    fn call_here(
        &self,
        exec: &Arc<dyn NodeExec>,
        prelude: &Prelude<'_>,
        work: &mut dyn FnMut() -> Output,
    ) -> (Output, u64) {
        let mut s = self.state.lock().expect("batcher");
        let ticket = s.enqueue(exec, &[], &[], Duration::ZERO);
        let (batch, refused) = loop {
            if let Some(release) = s.released.remove(&ticket) {
                break release;
            }
            if let Some(calls) = s.all_waiting() {
                drop(s);
                let refused = prelude()
                    .and_then(|c| super::native::carry(&c).err())
                    .map(|e| remote::records_not_written(&e));
                s = self.state.lock().expect("batcher");
                let batch = s.released_batches;
                s.released_batches += 1;
                s.running.insert(batch, (calls.len(), calls.len()));
                for c in calls {
                    s.released.insert(c.ticket, (batch, refused.clone()));
                }
                s.sending = false;
                self.changed.notify_all();
                continue;
            }
            s = self.changed.wait(s).expect("batcher");
        };
        drop(s);
        let out = match refused {
            Some(refused) => refused,
            None => work(),
        };
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((left, size)) = s.running.get_mut(&batch).map(|(left, size)| {
            *left -= 1;
            (*left, *size)
        }) {
            if left == 0 {
                s.running.remove(&batch);
                s.sent += 1;
                let no = s.sent;
                s.ended.insert(batch, (no, size));
                self.changed.notify_all();
            }
        }
        loop {
            if let Some((no, unread)) = s.ended.get_mut(&batch) {
                let no = *no;
                *unread -= 1;
                if *unread == 0 {
                    s.ended.remove(&batch);
                }
                return (out, no);
            }
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// How many batches were answered so far.
    pub(super) fn sent(&self) -> u64 {
        self.state.lock().expect("batcher").sent
    }

    /// Sends `argv` with the others' commands; its answer, and the number of the batch that
    /// carried it (batches are numbered from 1 in the order they were answered).
    fn call(
        &self,
        exec: &Arc<dyn NodeExec>,
        argv: &[&str],
        stdin: &[u8],
        timeout: Duration,
        prelude: &Prelude<'_>,
    ) -> (Result<Output, ExecError>, u64) {
        let mut s = self.state.lock().expect("batcher");
        let ticket = s.enqueue(exec, argv, stdin, timeout);
        loop {
            if let Some(answer) = s.answers.remove(&ticket) {
                return answer;
            }
            if let Some(calls) = s.all_waiting() {
                drop(s);
                let answers = send(calls, prelude);
                s = self.state.lock().expect("batcher");
                s.sent += 1;
                let no = s.sent;
                s.answers.extend(answers.into_iter().map(|(t, a)| (t, (a, no))));
                s.sending = false;
                self.changed.notify_all();
                continue;
            }
            s = self.changed.wait(s).expect("batcher");
        }
    }
}

/// A node's connection as its service threads use it: commands go through the [`Batcher`].
pub(super) struct Batched<'b> {
    pub(super) batcher: &'b Batcher,
    pub(super) exec: Arc<dyn NodeExec>,
    pub(super) prelude: &'b Prelude<'b>,
}

thread_local! {
    /// The number of the batch that carried this thread's last command.
    static LAST_BATCH: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The number of the batch that carried the calling thread's last command through a
/// [`Batched`] connection (0: none yet).
pub(super) fn last_batch() -> u64 {
    LAST_BATCH.with(|c| c.get())
}

impl NodeExec for Batched<'_> {
    fn run(&self, argv: &[&str], stdin: &[u8], timeout: Duration) -> Result<Output, ExecError> {
        if self.exec.on_this_machine() {
            let mut answer = None;
            let mut work = || {
                answer = Some(self.exec.run(argv, stdin, timeout));
                Output::default()
            };
            // Its answer when it ran; else the batch's refusal (its records not written).
            let (refused, no) = self.batcher.call_here(&self.exec, self.prelude, &mut work);
            LAST_BATCH.with(|c| c.set(no));
            return answer.unwrap_or(Ok(refused));
        }
        let (answer, no) = self.batcher.call(&self.exec, argv, stdin, timeout, self.prelude);
        LAST_BATCH.with(|c| c.set(no));
        answer
    }

    fn run_native(&self, work: &mut dyn FnMut() -> Output) -> Output {
        // Through the connection's own `run_native`: counted there as a command.
        let mut counted = || self.exec.run_native(work);
        let (out, no) = self.batcher.call_here(&self.exec, self.prelude, &mut counted);
        LAST_BATCH.with(|c| c.set(no));
        out
    }

    fn run_streaming(
        &self,
        argv: &[&str],
        stdin: &[u8],
        idle: Duration,
    ) -> Result<Output, ExecError> {
        self.exec.run_streaming(argv, stdin, idle)
    }

    fn containers(&self) -> Result<Vec<Container>, DockerError> {
        self.exec.containers()
    }

    fn root(&self) -> &str {
        self.exec.root()
    }

    fn docker_host(&self) -> String {
        self.exec.docker_host()
    }

    fn on_this_machine(&self) -> bool {
        self.exec.on_this_machine()
    }

    fn proven(&self) -> Result<(), ExecError> {
        self.exec.proven()
    }
}

/// Sends the waiting commands, one batch per connection they go to (the run's own, or a fresh
/// one), the records first.
fn send(calls: Vec<Call>, prelude: &Prelude<'_>) -> Vec<(u64, Result<Output, ExecError>)> {
    // Group by connection, in the order they came.
    let mut groups: Vec<Vec<Call>> = Vec::new();
    for c in calls {
        match groups.iter_mut().find(|g| Arc::ptr_eq(&g[0].exec, &c.exec)) {
            Some(g) => g.push(c),
            None => groups.push(vec![c]),
        }
    }
    let mut answers = Vec::new();
    for group in groups {
        let pre = prelude();
        let exec = group[0].exec.clone();
        let results = run_batch(exec.as_ref(), pre, &group);
        answers.extend(group.iter().map(|c| c.ticket).zip(results));
    }
    answers
}

/// One round trip for `calls` on `exec`: a lone command without records runs as itself.
fn run_batch(
    exec: &dyn NodeExec,
    pre: Option<Carry>,
    calls: &[Call],
) -> Vec<Result<Output, ExecError>> {
    let pre = pre.as_ref().and_then(remote::carry_command);
    if let ([c], None) = (calls, &pre) {
        let argv: Vec<&str> = c.argv.iter().map(String::as_str).collect();
        return vec![exec.run(&argv, &c.stdin, c.timeout)];
    }
    // A command that cannot be quoted gets its error; the others still go.
    let mut refused: BTreeMap<usize, quote::QuoteError> = BTreeMap::new();
    let archive = match pack(pre.as_deref(), calls, &mut refused) {
        Ok(a) => a,
        Err(e) => {
            let err = || ExecError::Spawn {
                program: "packing a batch of commands".to_owned(),
                source: std::io::Error::other(e.to_string()),
            };
            return calls.iter().map(|_| Err(err())).collect();
        }
    };
    let timeout = batch_timeout(calls.iter().map(|c| c.timeout));
    let k = AT_ONCE_ON_NODE.to_string();
    let out = exec.run(&["sh", "-c", BATCH, "homelab", &k], &archive, timeout);
    let mut parts = match &out {
        Ok(o) => unframe(&o.stdout),
        Err(_) => BTreeMap::new(),
    };
    (0..calls.len())
        .map(|i| {
            if let Some(e) = refused.remove(&i) {
                return Err(ExecError::Quote(e));
            }
            match &out {
                Err(e) => Err(same(e)),
                Ok(o) => Ok(parts.remove(&i).unwrap_or_else(|| Output {
                    // The batch ended before this command's answer: the batch's own.
                    status: if o.success() { None } else { o.status },
                    stdout: Vec::new(),
                    stderr: if o.stderr.is_empty() {
                        b"the node sent no answer for this command".to_vec()
                    } else {
                        o.stderr.clone()
                    },
                })),
            }
        })
        .collect()
}

/// How long a batch may take: `BATCH` starts its commands `AT_ONCE_ON_NODE` at a time and
/// waits for each such wave to end before the next, so the longest command of every wave, added
/// up. (A verify holds its command open for the stability window: ten of them are two waves.)
fn batch_timeout(timeouts: impl Iterator<Item = Duration>) -> Duration {
    let all: Vec<Duration> = timeouts.collect();
    all.chunks(AT_ONCE_ON_NODE).map(|wave| wave.iter().copied().max().unwrap_or_default()).sum()
}

/// The batch's archive: the records' command and each command with its stdin.
fn pack(
    pre: Option<&[String]>,
    calls: &[Call],
    refused: &mut BTreeMap<usize, quote::QuoteError>,
) -> std::io::Result<Vec<u8>> {
    let mut archive = tar::Builder::new(Vec::new());
    let mut add = |name: &str, bytes: &[u8]| {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o600);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        archive.append_data(&mut header, name, bytes)
    };
    if let Some(pre) = pre {
        let line = quote::argv(pre).map_err(|e| std::io::Error::other(e.to_string()))?;
        add("pre", format!("{line}\n").as_bytes())?;
    }
    for (i, c) in calls.iter().enumerate() {
        match quote::argv(&c.argv) {
            Ok(line) => {
                add(&format!("p/{i:06}/cmd"), format!("{line}\n").as_bytes())?;
                add(&format!("p/{i:06}/in"), &c.stdin)?;
            }
            Err(e) => {
                refused.insert(i, e);
            }
        }
    }
    // Last: a batch that arrived without it was cut short at an entry's boundary.
    add("end", b"")?;
    archive.into_inner()
}

/// The commands' answers from a batch's output (see [`BATCH`]); a torn frame ends the parse.
fn unframe(mut bytes: &[u8]) -> BTreeMap<usize, Output> {
    let mut parts = BTreeMap::new();
    while let Some(end) = bytes.iter().position(|b| *b == b'\n') {
        let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
        let f: Vec<&str> = head.split(' ').collect();
        let ["HLPART", n, rc, out, err] = f[..] else { break };
        let (Ok(n), Ok(out), Ok(err)) =
            (n.parse::<usize>(), out.trim().parse::<usize>(), err.trim().parse::<usize>())
        else {
            break;
        };
        let rest = &bytes[end + 1..];
        if rest.len() < out + err {
            break;
        }
        parts.insert(
            n,
            Output {
                status: rc.trim().parse::<i32>().ok(),
                stdout: rest[..out].to_vec(),
                stderr: rest[out..out + err].to_vec(),
            },
        );
        bytes = &rest[out + err..];
    }
    parts
}

/// The same error again, for each command of a batch that failed as a whole.
fn same(e: &ExecError) -> ExecError {
    match e {
        ExecError::Unreachable { node, reason } => {
            ExecError::Unreachable { node: node.clone(), reason: reason.clone() }
        }
        ExecError::Timeout { what, after } => {
            ExecError::Timeout { what: what.clone(), after: *after }
        }
        ExecError::Stalled { what, idle, after, stdout } => ExecError::Stalled {
            what: what.clone(),
            idle: *idle,
            after: *after,
            stdout: stdout.clone(),
        },
        ExecError::Quote(q) => ExecError::Quote(q.clone()),
        other => ExecError::Spawn {
            program: "a batch of commands".to_owned(),
            source: std::io::Error::other(other.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::local::LocalExec;

    fn local() -> Arc<dyn NodeExec> {
        let dir = std::env::temp_dir();
        Arc::new(LocalExec::for_tests(dir.to_str().expect("utf-8 temp dir")))
    }

    /// A node taken for a remote one, and one on this machine (whose `Batched` commands
    /// meet in `call_here`; given to `run_batch` directly, it runs [`BATCH`] too).
    fn both() -> [Arc<dyn NodeExec>; 2] {
        let dir = std::env::temp_dir();
        let dir = dir.to_str().expect("utf-8 temp dir");
        [Arc::new(LocalExec::for_tests_as_remote(dir)), Arc::new(LocalExec::for_tests(dir))]
    }

    /// Records that cannot be written: the journal's folder would be inside a file.
    fn unwritable(under: &std::path::Path) -> Carry {
        std::fs::write(under.join("file"), "").expect("write");
        let journal = under.join("file/deploy/journal.json");
        Carry {
            journal: Some((journal.to_str().expect("utf-8").to_owned(), 1, "{}".to_owned())),
            events: None,
        }
    }

    /// Each command of a batch gets its own stdin, output and status, hostile arguments intact.
    #[test]
    fn a_batch_waits_for_each_wave_of_its_commands() {
        let secs = |v: &[u64]| batch_timeout(v.iter().map(|s| Duration::from_secs(*s)));
        assert_eq!(secs(&[]), Duration::ZERO);
        assert_eq!(secs(&[5, 30, 10]), Duration::from_secs(30));
        let nine = [20, 1, 1, 1, 1, 1, 1, 1, 7];
        assert_eq!(nine.len(), AT_ONCE_ON_NODE + 1);
        assert_eq!(secs(&nine), Duration::from_secs(27), "two waves: 20 + 7");
    }

    #[test]
    fn a_batch_answers_each_command_with_its_own_output_and_status() {
        for exec in both() {
            answers_each_command(exec);
        }
    }

    fn answers_each_command(exec: Arc<dyn NodeExec>) {
        let records = tempfile::tempdir().expect("tempdir");
        let events = records.path().join("events.jsonl");
        let carry = Carry {
            journal: None,
            events: Some((events.to_str().expect("utf-8").to_owned(), "{\"a\":1}\n".to_owned())),
        };
        let calls: Vec<Call> = [
            (vec!["sh", "-c", "cat; echo \"$1\" >&2; exit 3", "x", "a'b $(c) `d`;e\nf"], "in-0"),
            (vec!["sh", "-c", "printf '%s' \"$1\"", "x", "HLPART 0 0 0 0\n"], ""),
            (vec!["true"], ""),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, (argv, stdin))| Call {
            ticket: i as u64,
            exec: exec.clone(),
            argv: argv.into_iter().map(str::to_owned).collect(),
            stdin: stdin.as_bytes().to_vec(),
            timeout: Duration::from_secs(20),
        })
        .collect();
        let out = run_batch(exec.as_ref(), Some(carry), &calls);
        let out: Vec<Output> = out.into_iter().map(|r| r.expect("ran")).collect();
        assert_eq!(std::fs::read_to_string(&events).expect("events"), "{\"a\":1}\n");
        assert_eq!(out[0].status, Some(3));
        assert_eq!(out[0].stdout, b"in-0");
        assert_eq!(out[0].stderr, "a'b $(c) `d`;e\nf\n".as_bytes());
        assert_eq!(out[1].stdout, b"HLPART 0 0 0 0\n");
        assert_eq!(out[2].status, Some(0));
    }

    /// Records that cannot be written stop the whole batch before any command runs.
    #[test]
    fn a_failing_prelude_runs_no_command() {
        for exec in both() {
            let marker = tempfile::tempdir().expect("tempdir");
            let m = marker.path().join("ran");
            let calls = vec![Call {
                ticket: 0,
                exec: exec.clone(),
                argv: vec!["touch".into(), m.to_str().expect("utf-8").into()],
                stdin: Vec::new(),
                timeout: Duration::from_secs(20),
            }];
            let out = run_batch(exec.as_ref(), Some(unwritable(marker.path())), &calls);
            let o = out.into_iter().next().expect("one").expect("ran");
            assert_eq!(o.status, Some(97), "{}", o.stderr_text());
            assert!(o.stderr_text().contains("cannot write the apply journal"));
            assert!(!m.exists());
        }
    }

    /// A controller killed mid-upload cuts the batch short: nothing of it runs.
    #[test]
    fn a_batch_cut_short_runs_nothing() {
        let exec = local();
        let marker = tempfile::tempdir().expect("tempdir");
        let m = marker.path().join("ran");
        let argv = vec!["touch".to_owned(), m.to_str().expect("utf-8").to_owned()];
        let calls = [Call {
            ticket: 0,
            exec: exec.clone(),
            argv: argv.clone(),
            stdin: Vec::new(),
            timeout: Duration::from_secs(20),
        }];
        let mut refused = BTreeMap::new();
        let whole = pack(Some(&["true".to_owned()]), &calls, &mut refused).expect("packs");
        for cut in [100, 512, 1024, 1536, 2048, whole.len() - 1536, whole.len() - 1100] {
            let out = exec
                .run(&["sh", "-c", BATCH, "homelab", "8"], &whole[..cut], Duration::from_secs(20))
                .expect("ran");
            assert_eq!(out.status, Some(91), "cut at {cut}: {}", out.stderr_text());
            assert!(!m.exists(), "cut at {cut}: a command ran");
        }
        let out = exec.run(&["sh", "-c", BATCH, "homelab", "8"], &whole, Duration::from_secs(20));
        assert!(out.expect("ran").success());
        assert!(m.exists());
    }

    /// Threads in step send one batch: three threads, one round trip.
    #[test]
    fn threads_in_step_share_one_round_trip() {
        let [exec, _] = both();
        let batcher = Batcher::default();
        let prelude = || None;
        batcher.activate(3);
        std::thread::scope(|s| {
            for i in 0..3 {
                let (batcher, exec, prelude) = (&batcher, exec.clone(), &prelude);
                s.spawn(move || {
                    let b = Batched { batcher, exec, prelude };
                    let o = b
                        .run(
                            &["sh", "-c", "echo $1", "x", &i.to_string()],
                            b"",
                            Duration::from_secs(20),
                        )
                        .expect("ran");
                    assert_eq!(o.stdout, format!("{i}\n").as_bytes());
                    batcher.deactivate();
                });
            }
        });
        assert_eq!(batcher.sent(), 1);
    }

    /// On this machine the batch is kept without a trip: threads in step are one batch (one
    /// number), its records are written before any of its commands runs, and records that
    /// cannot be written run none of them.
    #[test]
    fn on_this_machine_threads_in_step_are_one_batch_with_the_records_first() {
        let [_, exec] = both();
        assert!(exec.on_this_machine());
        let dir = tempfile::tempdir().expect("tempdir");
        for writable in [true, false] {
            let events = dir.path().join(format!("events-{writable}.jsonl"));
            let records = Carry {
                journal: None,
                events: Some((events.to_str().expect("utf-8").to_owned(), "{\"a\":1}\n".into())),
            };
            let pending = Mutex::new(Some(if writable { records } else { unwritable(dir.path()) }));
            let prelude = || pending.lock().expect("pending").take();
            let batcher = Batcher::default();
            batcher.activate(3);
            std::thread::scope(|s| {
                for i in 0..3 {
                    let (batcher, exec, prelude) = (&batcher, exec.clone(), &prelude);
                    let (events, out) =
                        (events.clone(), dir.path().join(format!("{writable}-{i}")));
                    s.spawn(move || {
                        let b = Batched { batcher, exec, prelude };
                        let (events, out) = (events.to_str().unwrap(), out.to_str().unwrap());
                        let o = b
                            .run(
                                &["sh", "-c", "cat \"$1\" > \"$2\"", "x", events, out],
                                b"",
                                Duration::from_secs(20),
                            )
                            .expect("ran");
                        assert_eq!(
                            o.status,
                            Some(if writable { 0 } else { 97 }),
                            "{}",
                            o.stderr_text()
                        );
                        assert_eq!(last_batch(), 1);
                        batcher.deactivate();
                    });
                }
            });
            assert_eq!(batcher.sent(), 1);
            for i in 0..3 {
                let out = std::fs::read_to_string(dir.path().join(format!("{writable}-{i}")));
                if writable {
                    assert_eq!(out.expect("ran"), "{\"a\":1}\n", "the records before the command");
                } else {
                    assert!(out.is_err(), "a command ran after its records failed");
                }
            }
        }
    }
}
