//! The node protocol: what a controller and `homelab node serve` say to each other over the
//! stdin and stdout of one SSH session (docs/architecture.md, "The node engine").
//!
//! Each message is a frame: a 4-byte big-endian length, then that many bytes of JSON. The first
//! message each way is [`Hello`] with both programs' protocol and version; a node whose
//! protocol differs answers nothing else, and the controller says both versions and how to
//! upgrade. Then the controller sends one [`Request`] (and, during an apply, [`Request::Settled`]
//! as the run's other nodes settle) and reads [`Reply`] frames until the answer ends.
//!
//! This module knows frames and the shape of requests; what an apply's progress lines hold is
//! `apply`'s (they travel as [`Reply::Progress`] values), what a refresh's answer means is
//! `observe`'s.

use std::io::{Read, Write};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::model::{Instance, ServiceName};
use crate::transport::{Container, Output};

/// Raised when a message changes shape: a controller and a node speak only the same number.
/// 2: a bundle may carry the one stage to run (`apply --stage`).
/// 3: a refresh's answer travels as base64 (`Reply::Refreshed::base64`): it holds the files a
/// node has as they are, and a file that is not UTF-8 came across altered as text.
/// 4: a bundle's plan travels gzipped ([`Packed`]).
pub const PROTOCOL: u32 = 4;

/// This program's version, said in [`Hello`].
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The largest frame read: a bundle holds a plan of up to 64 MiB and its approvals.
pub const MAX_FRAME: u32 = 80 << 20;

/// A plan's text as a bundle carries it: gzipped, then base64 (a plan is text that repeats
/// itself; a 113 KB plan of 6 nodes is ~15 KB on the wire). Every node receives the whole
/// plan, whose signature covers all of it, on a link that often starts again from TCP's slow
/// start (the plan's connection sat idle through the review): over a 150 ms link, each
/// doubling of the congestion window a bigger bundle needs is 150 ms more. Compressed once per
/// run however many nodes it goes to (clones share it); what is read back is the text,
/// refused past 64 MiB.
#[derive(Debug, Clone)]
pub struct Packed {
    text: std::sync::Arc<str>,
    wire: std::sync::Arc<std::sync::OnceLock<String>>,
}

/// The largest plan text a [`Packed`] unpacks to.
const MAX_PLAN: u64 = 64 << 20;

impl Packed {
    pub fn new(text: String) -> Packed {
        Packed { text: text.into(), wire: Default::default() }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl From<String> for Packed {
    fn from(text: String) -> Packed {
        Packed::new(text)
    }
}

impl std::ops::Deref for Packed {
    type Target = str;
    fn deref(&self) -> &str {
        &self.text
    }
}

impl Serialize for Packed {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let wire = self.wire.get_or_init(|| {
            use std::io::Write;
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            // Writing to a Vec cannot fail.
            let _ = gz.write_all(self.text.as_bytes());
            crate::digest::base64_encode(&gz.finish().unwrap_or_default())
        });
        s.serialize_str(wire)
    }
}

impl<'de> Deserialize<'de> for Packed {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Packed, D::Error> {
        use serde::de::Error;
        use std::io::Read;
        let wire = String::deserialize(d)?;
        let gz = crate::digest::base64_decode(wire.as_bytes())
            .ok_or_else(|| D::Error::custom("a packed plan that is not base64"))?;
        let mut text = String::new();
        flate2::read::GzDecoder::new(gz.as_slice())
            .take(MAX_PLAN + 1)
            .read_to_string(&mut text)
            .map_err(|e| D::Error::custom(format!("a packed plan that does not unpack: {e}")))?;
        if text.len() as u64 > MAX_PLAN {
            return Err(D::Error::custom(format!("a packed plan of more than {MAX_PLAN} bytes")));
        }
        let wire = std::sync::OnceLock::from(wire);
        Ok(Packed { text: text.into(), wire: std::sync::Arc::new(wire) })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    pub version: String,
}

impl Hello {
    pub fn ours() -> Hello {
        Hello { protocol: PROTOCOL, version: VERSION.to_owned() }
    }

    /// Whether a peer that said `self` can be talked to by this program: the same protocol
    /// and the same version (the engine runs this program's pipeline, step for step).
    pub fn matches(&self) -> bool {
        self.protocol == PROTOCOL && self.version == VERSION
    }
}

/// What a controller asks of a node, after the hellos.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    Hello(Hello),
    /// The node's state, as a plan reads it: [`Reply::Refreshed`].
    Refresh,
    /// Run a plan's part for this node in the node's engine (or attach to the engine already
    /// running it): [`Reply::Refused`] before anything is written, or its progress.
    Apply(Bundle),
    /// Follow the engine that ran or runs `plan` here, from its first line.
    Attach {
        plan: String,
    },
    /// Over a fresh connection: the controller can still reach the node after the deploys that
    /// the engine's confirmation request `seq` follows.
    Confirm {
        plan: String,
        seq: u64,
    },
    /// The node's new event bytes past the observer's `cursors` (`day offset inode` lines),
    /// at most `budget` bytes: [`Reply::Events`].
    Events {
        node: String,
        cursors: String,
        budget: u64,
    },
    /// A dependency on another node settled (`ok`: at its new version), for the engine's
    /// services that wait for it.
    Settled {
        instance: Instance,
        ok: bool,
    },
    /// The container status of `services` for `plan` (`apply --stage diagnose`), their recent
    /// logs kept on the node: [`Reply::Diagnosed`]; refused for a plan rejected here. Changes
    /// nothing else.
    Diagnose {
        plan: String,
        services: Vec<ServiceName>,
    },
    /// Remove the node's apply lock, the last resort for a lock no apply takes over:
    /// [`Reply::Unlocked`]. The node refuses while an engine of its own runs (it holds the lock
    /// and `apply --resume` follows it).
    Unlock,
}

/// A plan's part for one node, as the node checks and runs it: the plan file's and the
/// approvals file's bytes (checked by the node against its own trust roots), and what the
/// operator asked for beyond the plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bundle {
    /// The node this part is for: the node refuses a bundle for another.
    pub node: String,
    /// `<id>.plan` as signed.
    pub plan: Packed,
    /// `<id>.approved` as signed.
    pub approved: String,
    pub services: Option<Vec<ServiceName>>,
    pub resume: bool,
    pub lock_wait_secs: u64,
    pub confirm_timeout_secs: Option<u64>,
    /// Who applies, as the lock and the records say it.
    pub holder: String,
    /// Every instance the run settles, on this node and others: a dependency outside it is
    /// taken as satisfied; one inside it on another node is waited for ([`Request::Settled`]).
    pub in_run: Vec<Instance>,
    /// Nodes whose part of this plan an earlier run finished (the controller's record): a
    /// dependency there is met though this run leaves it out.
    #[serde(default)]
    pub finished_nodes: Vec<crate::model::NodeName>,
    /// `apply --stage S`: only that stage, for the services whose journal stands right before
    /// it; `None`: the whole pipeline.
    #[serde(default)]
    pub stage: Option<crate::node::journal::Stage>,
}

/// What a node answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Hello(Hello),
    /// The refresh's answer (`observe::here`), its bytes in base64, and the engine's
    /// containers.
    Refreshed {
        status: Option<i32>,
        base64: String,
        stderr: String,
        containers: Result<Vec<Container>, String>,
    },
    /// Nothing was done, and why (a bad bundle, no trust roots, another node's part, a version
    /// mismatch).
    Refused {
        reason: String,
    },
    /// One line of an engine's progress (`apply::engine::Progress`).
    Progress {
        line: serde_json::Value,
    },
    /// The engine stopped before its end (killed, or the node rebooted): `--resume` continues.
    Interrupted {
        reason: String,
    },
    /// The confirmation was recorded for the engine.
    Confirmed,
    /// The pull script's answer (`world::pull`), base64.
    Events {
        base64: String,
    },
    /// Per service asked: its containers' status (`name state status` lines) or why it could
    /// not be read, and where its logs were kept on the node.
    Diagnosed {
        services: Vec<Diagnosed>,
    },
    /// The lock was removed; what its `holder.json` said (`None`: the node was not locked).
    Unlocked {
        holder: Option<String>,
    },
}

impl Reply {
    pub fn refreshed(
        out: Output,
        containers: Result<Vec<Container>, crate::transport::DockerError>,
    ) -> Reply {
        Reply::Refreshed {
            status: out.status,
            base64: crate::digest::base64_encode(&out.stdout),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            containers: containers.map_err(|e| e.to_string()),
        }
    }
}

/// One service's diagnosis on the node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Diagnosed {
    pub service: ServiceName,
    pub status: Result<String, String>,
    pub log: String,
}

/// Why no session with a node's homelab was opened.
#[derive(Debug)]
pub enum Opened {
    /// The transport runs nodes in this process (the local transport).
    Here,
    /// The node has no homelab binary (bootstrap not run); what the shell said.
    NotInstalled(String),
    /// Its homelab speaks another protocol or is another version: both, and the way out.
    Mismatch(String),
    /// It refused the session.
    Refused(String),
    /// The link, or the node's homelab ended without answering.
    Unreachable(String),
}

/// One request to `node`'s homelab and its one reply: opens a session, says hello, sends
/// `request`, closes its side and reads the answer. `Err` as [`open`] says, or `Unreachable`
/// with what the carrier said when the session ended without an answer.
pub fn ask(
    transport: &dyn crate::transport::Transport,
    node: &crate::model::Node,
    request: &Request,
) -> Result<Reply, Opened> {
    ask_on(Link::Shared, transport, node, request)
}

/// Which connection a session rides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// The node's connection, shared by the command's sessions and kept for the next command.
    Shared,
    /// A new connection of its own ([`crate::transport::Transport::fresh_session`]).
    Fresh,
}

/// [`ask`] over `link`.
pub fn ask_on(
    link: Link,
    transport: &dyn crate::transport::Transport,
    node: &crate::model::Node,
    request: &Request,
) -> Result<Reply, Opened> {
    let mut session = open(link, transport, node, request)?;
    session.input = None;
    match receive::<Reply>(&mut session.output) {
        Ok(Some(reply)) => Ok(reply),
        Ok(None) | Err(_) => {
            let (_, said) = session.ended();
            Err(Opened::Unreachable(if said.is_empty() {
                "the session ended".to_owned()
            } else {
                said
            }))
        }
    }
}

/// A session with `node`'s homelab over `link`, past the hellos, with `first` sent right behind
/// the controller's hello instead of after its answer: one round trip less a command (150 ms
/// over a 150 ms link). A node of another version answers the hello and reads nothing more, so
/// what it was sent unasked is never acted on; a `first` that could not be sent to a node that
/// answered is a lost link.
pub fn open(
    link: Link,
    transport: &dyn crate::transport::Transport,
    node: &crate::model::Node,
    first: &Request,
) -> Result<crate::transport::Session, Opened> {
    let carried = match link {
        Link::Shared => transport.session(node),
        Link::Fresh => transport.fresh_session(node),
    };
    let mut session = match carried {
        Ok(Some(s)) => s,
        Ok(None) => return Err(Opened::Here),
        Err(e) => return Err(Opened::Unreachable(e.to_string())),
    };
    let (hello, sent) = match session.input.as_mut() {
        Some(i) => match send(i, &Request::Hello(Hello::ours())) {
            Ok(()) => (Ok(()), send(i, first)),
            Err(e) => (Err(e), Ok(())),
        },
        None => (Ok(()), Ok(())),
    };
    // Sent or not, the hello's answer says best what the node is (another version, no homelab
    // at all) before a broken pipe would.
    let answer = hello.and_then(|()| receive::<Reply>(&mut session.output));
    session.answered();
    match answer {
        Ok(Some(Reply::Hello(theirs))) if theirs.matches() => match sent {
            Ok(()) => Ok(session),
            Err(e) => {
                let (_, said) = session.ended();
                Err(Opened::Unreachable(if said.is_empty() { e.to_string() } else { said }))
            }
        },
        Ok(Some(Reply::Hello(theirs))) => Err(Opened::Mismatch(format!(
            "the node runs homelab {} (protocol {}), this controller homelab {VERSION} (protocol \
             {PROTOCOL}): `homelab bootstrap {}` ships this controller's binary to it \
             (`--binary PATH` for another architecture)",
            theirs.version, theirs.protocol, node.id
        ))),
        Ok(Some(Reply::Refused { reason })) => Err(Opened::Refused(reason)),
        Ok(Some(other)) => {
            Err(Opened::Unreachable(format!("the node's homelab answered out of turn: {other:?}")))
        }
        Ok(None) | Err(_) => {
            let (status, said) = session.ended();
            match status {
                // sh's "not found" / "cannot execute": no homelab on the node yet.
                Some(126 | 127) => Err(Opened::NotInstalled(said)),
                _ if said.is_empty() => Err(Opened::Unreachable(format!(
                    "the node's homelab ended without answering (exit {})",
                    status.map_or("by a signal".to_owned(), |s| s.to_string())
                ))),
                _ => Err(Opened::Unreachable(said)),
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("the link: {0}")]
    Io(#[from] std::io::Error),
    #[error("a frame of {0} bytes, more than the {MAX_FRAME} allowed")]
    TooLarge(u64),
    #[error("an unreadable message: {0}")]
    Json(#[from] serde_json::Error),
}

/// Writes `msg` as one frame and flushes it.
pub fn send(w: &mut dyn Write, msg: &impl Serialize) -> Result<(), WireError> {
    let body = serde_json::to_vec(msg)?;
    if body.len() as u64 > MAX_FRAME as u64 {
        return Err(WireError::TooLarge(body.len() as u64));
    }
    w.write_all(&(body.len() as u32).to_be_bytes())?;
    w.write_all(&body)?;
    w.flush()?;
    Ok(())
}

/// Reads one frame; `None` at a clean end of the stream (between frames).
pub fn receive<T: DeserializeOwned>(r: &mut dyn Read) -> Result<Option<T>, WireError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..])? {
            0 if got == 0 => return Ok(None),
            0 => return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()),
            n => got += n,
        }
    }
    let len = u32::from_be_bytes(len);
    if len > MAX_FRAME {
        return Err(WireError::TooLarge(len as u64));
    }
    let mut body = Vec::new();
    r.take(len as u64).read_to_end(&mut body)?;
    if body.len() != len as usize {
        return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
    }
    Ok(Some(serde_json::from_slice(&body)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_end_cleanly() {
        let mut buf = Vec::new();
        send(&mut buf, &Request::Hello(Hello::ours())).unwrap();
        send(&mut buf, &Request::Attach { plan: "p".into() }).unwrap();
        let mut r = buf.as_slice();
        assert!(
            matches!(receive::<Request>(&mut r).unwrap(), Some(Request::Hello(h)) if h.matches())
        );
        assert!(
            matches!(receive::<Request>(&mut r).unwrap(), Some(Request::Attach { plan }) if plan == "p")
        );
        assert!(receive::<Request>(&mut r).unwrap().is_none());
    }

    #[test]
    fn a_cut_or_oversized_frame_is_an_error_not_a_message() {
        let mut buf = Vec::new();
        send(&mut buf, &Request::Refresh).unwrap();
        let mut cut = &buf[..buf.len() - 1];
        assert!(receive::<Request>(&mut cut).is_err());
        let mut huge: &[u8] = &[0xff, 0xff, 0xff, 0xff, b'{'];
        assert!(matches!(receive::<Request>(&mut huge), Err(WireError::TooLarge(_))));
        let mut junk: &[u8] = &[0, 0, 0, 2, b'i', b'd'];
        assert!(matches!(receive::<Request>(&mut junk), Err(WireError::Json(_))));
    }

    /// A "node" that is a shell command on this machine: its stdin and stdout the session's.
    struct Shell(String);

    impl crate::transport::Transport for Shell {
        fn connect(
            &self,
            _: &crate::model::Node,
        ) -> Result<Box<dyn crate::transport::NodeExec>, crate::transport::ExecError> {
            unreachable!("only sessions are asked for")
        }

        fn session(
            &self,
            _: &crate::model::Node,
        ) -> Result<Option<crate::transport::Session>, crate::transport::ExecError> {
            let errors = tempfile::tempfile().unwrap();
            let child = std::process::Command::new("sh")
                .args(["-c", &self.0])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(errors.try_clone().unwrap())
                .spawn()
                .unwrap();
            Ok(Some(crate::transport::Session::new(child, errors, None, "test".into()).unwrap()))
        }
    }

    fn node() -> crate::model::Node {
        let id = crate::model::NodeName::parse("far-away").unwrap();
        crate::model::Node::bare(id, "/opt/homelab".into(), "/var/run/docker.sock".into())
    }

    /// `n` letters that gzip cannot shrink much.
    fn noise(n: usize) -> String {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(b'a' + (x % 26) as u8)
            })
            .collect()
    }

    /// A request sent behind the hello (`open`) to a node of another version, which
    /// answers the hello, reads nothing more and ends: the controller says both versions and
    /// the way out, not a broken pipe, even when the request is larger than the pipes between
    /// (a bundle of a big plan), and does not wait on it. A node with no homelab at all (sh's
    /// 127) is said to be that.
    #[test]
    fn a_request_behind_the_hello_to_another_version_or_no_homelab_says_which() {
        let dir = tempfile::tempdir().unwrap();
        let frame = dir.path().join("hello");
        let theirs = Reply::Hello(Hello { protocol: PROTOCOL, version: "0.0.1-old".into() });
        send(&mut std::fs::File::create(&frame).unwrap(), &theirs).unwrap();
        // It reads the hello's frame, answers, and ends.
        let mut hello = Vec::new();
        send(&mut hello, &Request::Hello(Hello::ours())).unwrap();
        let old = Shell(format!("head -c {} > /dev/null; cat '{}'", hello.len(), frame.display()));
        // Sixteen times a pipe's buffer, as a big plan's bundle is (text that does not
        // compress: a packed plan is smaller than its text).
        let big = Request::Apply(Bundle {
            node: "far-away".into(),
            plan: noise(1 << 20).into(),
            approved: String::new(),
            services: None,
            resume: false,
            lock_wait_secs: 0,
            confirm_timeout_secs: None,
            holder: String::new(),
            in_run: Vec::new(),
            finished_nodes: Vec::new(),
            stage: None,
        });
        for first in [&big, &Request::Refresh] {
            match open(Link::Shared, &old, &node(), first) {
                Err(Opened::Mismatch(said)) => {
                    assert!(said.contains("0.0.1-old") && said.contains(VERSION), "{said}");
                    assert!(said.contains("homelab bootstrap far-away"), "{said}");
                }
                Err(e) => panic!("{e:?}"),
                Ok(_) => panic!("a node of another version was talked to"),
            }
        }
        let none = Shell("exec /nonexistent/bin/homelab node serve".into());
        assert!(matches!(
            open(Link::Shared, &none, &node(), &Request::Refresh),
            Err(Opened::NotInstalled(_))
        ));
        // The same version: the hello answered, then the request, whole, behind it.
        let ours = dir.path().join("ours");
        send(&mut std::fs::File::create(&ours).unwrap(), &Reply::Hello(Hello::ours())).unwrap();
        let got = dir.path().join("got");
        let same = Shell(format!("cat '{}'; cat > '{}'", ours.display(), got.display()));
        let mut s = open(Link::Shared, &same, &node(), &big).unwrap();
        s.input = None;
        assert!(receive::<Reply>(&mut s.output).unwrap().is_none());
        let _ = s.ended();
        let bytes = std::fs::read(&got).unwrap();
        let mut r = bytes.as_slice();
        assert!(
            matches!(receive::<Request>(&mut r).unwrap(), Some(Request::Hello(h)) if h.matches())
        );
        assert!(
            matches!(receive::<Request>(&mut r).unwrap(), Some(Request::Apply(b)) if b.plan.as_str() == noise(1 << 20))
        );
        assert!(r.is_empty());
    }

    /// A plan travels gzipped and comes back as its text, byte for byte; packed once however
    /// many bundles carry it; what does not unpack, or unpacks past 64 MiB (a gzip bomb), is
    /// an unreadable message, not a plan, and unpacking stops at the limit.
    #[test]
    fn a_packed_plan_unpacks_to_its_text_and_nothing_larger_than_a_plan() {
        let text = format!("{}\n{}é\n", "homelab plan\n".repeat(5000), noise(10_000));
        let packed = Packed::new(text.clone());
        let one = serde_json::to_string(&packed).unwrap();
        assert!(one.len() < text.len() / 2, "{} of {}", one.len(), text.len());
        let copy = packed.clone();
        assert!(std::sync::Arc::ptr_eq(&copy.wire, &packed.wire));
        assert!(copy.wire.get().is_some(), "packed once, for every clone");
        let back: Packed = serde_json::from_str(&one).unwrap();
        assert_eq!(back.as_str(), text);
        assert_eq!(serde_json::to_string(&back).unwrap(), one, "kept as it came");

        let bomb = {
            use std::io::Write;
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            let zeros = vec![b' '; 1 << 20];
            for _ in 0..65 {
                gz.write_all(&zeros).unwrap();
            }
            crate::digest::base64_encode(&gz.finish().unwrap())
        };
        assert!(bomb.len() < 1 << 20);
        let err = serde_json::from_str::<Packed>(&format!("\"{bomb}\"")).unwrap_err();
        assert!(err.to_string().contains("more than 67108864 bytes"), "{err}");
        for bad in ["\"not base64!\"", "\"aGVsbG8=\"", "12"] {
            assert!(serde_json::from_str::<Packed>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_name_from_the_wire_is_checked_like_one_from_a_file() {
        let bad =
            r#"{"request":"settled","instance":{"service":"a;rm -rf /","node":"n"},"ok":true}"#;
        assert!(serde_json::from_str::<Request>(bad).is_err());
    }
}
