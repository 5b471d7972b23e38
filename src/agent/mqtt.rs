//! The MQTT broker link: an MQTT connection (rumqttc) to the node's broker, kept open with
//! keepalives, so a broker that stops is seen when its connection drops, not at the next poll.
//! The agent connects anonymously and subscribes to nothing; it holds no broker secret (it
//! never reads `config/`). A broker that answers the CONNECT, even with "not authorized", is
//! up: it is there and speaking MQTT; the agent then reconnects every interval to keep checking.

use std::time::Duration;

use rumqttc::{AsyncClient, ConnectionError, Event, MqttOptions, Packet};
use serde_json::{Map, Value};
use tokio::sync::mpsc::UnboundedSender;

use super::state::Observation;
use super::Report;

/// The link name in `node_offline`/`node_online` events about the broker.
pub const LINK: &str = "mqtt";

/// Watches the broker at `host:port` until `tx` closes; with `once`, one connection attempt.
pub async fn watch(
    broker: String,
    node: String,
    once: bool,
    interval: Duration,
    tx: UnboundedSender<Report>,
) {
    let (host, port) = match broker.rsplit_once(':').map(|(h, p)| (h, p.parse::<u16>())) {
        Some((h, Ok(p))) if !h.is_empty() => (h.trim_matches(['[', ']']).to_owned(), p),
        _ => {
            // The command checks the form; this is a guard, not a path users reach.
            let _ = tx.send(seen(&broker, false, Some("not HOST:PORT")));
            return;
        }
    };
    let mut opts = MqttOptions::new(format!("homelab-agent-{node}"), host, port);
    opts.set_keep_alive(interval.max(Duration::from_secs(1)));
    opts.set_clean_session(true);
    let (_client, mut events) = AsyncClient::new(opts, 10);
    events.network_options.set_connection_timeout(interval.as_secs().clamp(1, 10));
    loop {
        let (up, error, pause) = match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => (true, None, false),
            Ok(_) => continue,
            Err(ConnectionError::ConnectionRefused(code)) => {
                (true, Some(format!("connection refused: {code:?}")), true)
            }
            Err(e) => (false, Some(e.to_string()), true),
        };
        if tx.send(seen(&broker, up, error.as_deref())).is_err() || once {
            return;
        }
        if pause {
            tokio::time::sleep(interval).await;
        }
    }
}

fn seen(broker: &str, up: bool, error: Option<&str>) -> Report {
    let mut data = Map::new();
    data.insert("broker".into(), Value::from(broker));
    if let (false, Some(e)) = (up, error) {
        data.insert("error".into(), Value::from(e));
    }
    Report::Mqtt(Observation::Link { link: LINK.to_owned(), up, data })
}
