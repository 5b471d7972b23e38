//! One event as the fold sees it: the line's fields, and where it was read (its [`Key`]).
//!
//! Pure: parses bytes it is given. The line format is `events`' (docs/events.md); this module
//! only reads it, leniently (an unknown field is ignored, a missing one is empty), because the
//! files also hold what scripts and older versions wrote.

use std::fmt;

use serde_json::{Map, Value};

/// The identity and order of an event: its time, then where it was read (the node whose file
/// it is in, the file's day, the byte offset of its line). Two reads of the same line give the
/// same key, so the fold can tell an event it has already folded; the time comes first so a
/// value is always the one of the latest event, however the events arrived; the offset orders
/// events of one second as they were written.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// RFC 3339 UTC, seconds (`2026-11-30T04:07:37Z`): compares as text.
    pub time: String,
    pub node: String,
    pub day: String,
    pub offset: u64,
}

impl fmt::Display for Key {
    /// `2026-11-30T04:07:37Z alpha 2026-11-30 1234`: the time, then the line's place (the file
    /// `events/2026-11-30/alpha/events.jsonl`, byte 1234).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {} {}", self.time, self.node, self.day, self.offset)
    }
}

impl std::str::FromStr for Key {
    type Err = String;

    fn from_str(s: &str) -> Result<Key, String> {
        let p: Vec<&str> = s.split(' ').collect();
        match p.as_slice() {
            [time, node, day, offset] => Ok(Key {
                time: (*time).to_owned(),
                node: (*node).to_owned(),
                day: (*day).to_owned(),
                offset: offset.parse().map_err(|_| format!("not an event key: `{s}`"))?,
            }),
            _ => Err(format!("not an event key: `{s}`")),
        }
    }
}

impl serde::Serialize for Key {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An event line, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub key: Key,
    /// `type`: the fold acts on the types it knows and ignores the rest.
    pub kind: String,
    pub severity: String,
    /// The node the event is about (`node`; the file's node when the line has none).
    pub node: String,
    /// `None` for `-` or empty.
    pub service: Option<String>,
    /// `None` for `-` or empty.
    pub correlation_id: Option<String>,
    pub data: Map<String, Value>,
}

/// Why a line is not an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Not a JSON object: a line torn by a crash or a full disk.
    Torn,
    /// A JSON object without a `type` or a time that parses.
    Malformed,
}

impl Event {
    /// The line at byte `offset` of `node`'s events file of `day` (without its newline).
    pub fn parse(line: &[u8], node: &str, day: &str, offset: u64) -> Result<Event, Skip> {
        let Ok(Value::Object(mut m)) = serde_json::from_slice::<Value>(line) else {
            return Err(Skip::Torn);
        };
        let text = |m: &Map<String, Value>, k: &str| {
            m.get(k).and_then(Value::as_str).map(str::trim).unwrap_or_default().to_owned()
        };
        let optional = |s: String| Some(s).filter(|s| !s.is_empty() && s != "-");
        let kind = text(&m, "type");
        // Times are compared as text: normalized to one form (UTC, seconds) first.
        let time = humantime::parse_rfc3339_weak(&text(&m, "time"))
            .map(crate::clock::rfc3339)
            .map_err(|_| Skip::Malformed)?;
        if kind.is_empty() {
            return Err(Skip::Malformed);
        }
        let about = optional(text(&m, "node")).unwrap_or_else(|| node.to_owned());
        let data = match m.remove("data") {
            Some(Value::Object(d)) => d,
            _ => Map::new(),
        };
        Ok(Event {
            key: Key { time, node: node.to_owned(), day: day.to_owned(), offset },
            kind,
            severity: text(&m, "severity"),
            node: about,
            service: optional(text(&m, "service")),
            correlation_id: optional(text(&m, "correlation_id")),
            data,
        })
    }

    /// A string of `data`, when it holds one.
    pub fn text(&self, key: &str) -> Option<String> {
        self.data.get(key).and_then(Value::as_str).map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_print_and_parse_back_and_order_by_time_first() {
        let k = Key {
            time: "2026-11-30T04:07:37Z".into(),
            node: "a".into(),
            day: "d".into(),
            offset: 7,
        };
        assert_eq!(k.to_string().parse::<Key>().unwrap(), k);
        let earlier_but_later_in_file =
            Key { time: "2026-11-30T04:07:36Z".into(), offset: 99, ..k.clone() };
        assert!(earlier_but_later_in_file < k);
        assert!(Key { offset: 8, ..k.clone() } > k);
        assert!("x y z".parse::<Key>().is_err());
    }

    #[test]
    fn lines_parse_leniently_and_torn_ones_are_told_apart() {
        let l = br#"{"time":"2026-11-30T04:07:37Z","node":"alpha","type":"service_unhealthy","severity":"error","service":"-","correlation_id":"c1","data":{"error":"OOM"}}"#;
        let e = Event::parse(l, "alpha", "2026-11-30", 10).unwrap();
        assert_eq!(e.kind, "service_unhealthy");
        assert_eq!(e.service, None);
        assert_eq!(e.correlation_id.as_deref(), Some("c1"));
        assert_eq!(e.text("error").as_deref(), Some("OOM"));
        assert_eq!(e.key.offset, 10);
        assert_eq!(Event::parse(b"{\"time\": \"2026-11-", "a", "d", 0), Err(Skip::Torn));
        assert_eq!(Event::parse(b"[1]", "a", "d", 0), Err(Skip::Torn));
        assert_eq!(Event::parse(b"{\"type\": \"x\"}", "a", "d", 0), Err(Skip::Malformed));
        // A line without a node is about the node whose file it is in.
        let e =
            Event::parse(br#"{"time":"2026-11-30 04:07:37","type":"node_online"}"#, "b", "d", 0)
                .unwrap();
        assert_eq!((e.node.as_str(), e.key.time.as_str()), ("b", "2026-11-30T04:07:37Z"));
    }
}
