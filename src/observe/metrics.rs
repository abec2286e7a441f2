//! A node's counts, kept in atomics as events happen and rendered in the Prometheus text
//! exposition format for `GET /metrics`. Per-peer series are made once, from the node's peer
//! names: counting an event takes no lock and allocates nothing.

use std::{
    fmt::{self, Write as _},
    sync::atomic::{AtomicI64, AtomicU64, Ordering},
    time::Duration,
};

use crate::{
    events::{Event, Observer},
    message::Ack,
};

/// Upper bounds of the peer ack time histogram, in seconds: from 10 us (a peer in the same
/// process) to 10 s (a peer at its timeout).
const BUCKETS: [(f64, &str); 19] = [
    (0.000_01, "1e-05"),
    (0.000_025, "2.5e-05"),
    (0.000_05, "5e-05"),
    (0.000_1, "0.0001"),
    (0.000_25, "0.00025"),
    (0.000_5, "0.0005"),
    (0.001, "0.001"),
    (0.002_5, "0.0025"),
    (0.005, "0.005"),
    (0.01, "0.01"),
    (0.025, "0.025"),
    (0.05, "0.05"),
    (0.1, "0.1"),
    (0.25, "0.25"),
    (0.5, "0.5"),
    (1.0, "1"),
    (2.5, "2.5"),
    (5.0, "5"),
    (10.0, "10"),
];

/// What became of an acknowledgement the node sent to a client.
const ACK_OUTCOMES: [&str; 3] = ["ok", "superseded", "error"];
/// What became of a message the node sent to a peer: acknowledged, acknowledged with an
/// `error: `, or not acknowledged at all.
const PEER_OUTCOMES: [&str; 3] = ["ok", "error", "failed"];

/// A node's counts. Register it as an [`Observer`] of the node's events, and render it with
/// [`Metrics::render`].
#[derive(Debug)]
pub struct Metrics {
    messages: AtomicU64,
    acks: [AtomicU64; ACK_OUTCOMES.len()],
    refused: AtomicU64,
    connections: AtomicI64,
    peers: Box<[PeerCounts]>,
}

#[derive(Debug)]
struct PeerCounts {
    name: Box<str>,
    messages: [AtomicU64; PEER_OUTCOMES.len()],
    /// Links open to the peer (one per channel): it is up while one is.
    links: AtomicI64,
    /// Per bucket, not cumulative: one increment per ack; summed up when rendered.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Metrics {
    /// Counts for a node that streams to `peers`, named as its events name them. Events about
    /// other peers are not counted per peer.
    pub fn new<'p>(peers: impl IntoIterator<Item = &'p str>) -> Self {
        let mut counts: Vec<PeerCounts> = Vec::new();
        for name in peers {
            if counts.iter().all(|p| &*p.name != name) {
                counts.push(PeerCounts {
                    name: name.into(),
                    messages: Default::default(),
                    links: AtomicI64::new(0),
                    buckets: std::array::from_fn(|_| AtomicU64::new(0)),
                    sum_nanos: AtomicU64::new(0),
                });
            }
        }
        Self {
            messages: AtomicU64::new(0),
            acks: Default::default(),
            refused: AtomicU64::new(0),
            connections: AtomicI64::new(0),
            peers: counts.into_boxed_slice(),
        }
    }

    fn ack_out(&self, ack: &str) {
        let outcome = if ack.starts_with(Ack::ERROR_PREFIX) {
            2
        } else if ack == "superseded" {
            1
        } else {
            0
        };
        self.acks[outcome].fetch_add(1, Ordering::Relaxed);
    }

    fn peer_ack(&self, peer: &str, ack: &str, took: Duration) {
        let Some(peer) = self.peer(peer) else { return };
        let outcome = usize::from(ack.starts_with(Ack::ERROR_PREFIX));
        peer.messages[outcome].fetch_add(1, Ordering::Relaxed);
        let seconds = took.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|&(le, _)| seconds <= le)
            .unwrap_or(BUCKETS.len());
        peer.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        peer.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// A peer by name: a scan of a few names, cheaper than hashing for a node's handful.
    fn peer(&self, name: &str) -> Option<&PeerCounts> {
        self.peers.iter().find(|p| &*p.name == name)
    }

    /// The counts in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048 + self.peers.len() * 2048);
        // Writing to a String cannot fail.
        let _ = self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) -> fmt::Result {
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        header(
            out,
            "arduino_messages_total",
            "counter",
            "Messages received from clients.",
        )?;
        writeln!(out, "arduino_messages_total {}", get(&self.messages))?;

        header(
            out,
            "arduino_acks_total",
            "counter",
            "Acknowledgements sent to clients, by outcome (ok, superseded, error).",
        )?;
        for (outcome, n) in ACK_OUTCOMES.iter().zip(&self.acks) {
            writeln!(
                out,
                "arduino_acks_total{{outcome=\"{outcome}\"}} {}",
                get(n)
            )?;
        }

        header(
            out,
            "arduino_clients_refused_total",
            "counter",
            "Connections refused before or during their handshake.",
        )?;
        writeln!(out, "arduino_clients_refused_total {}", get(&self.refused))?;

        header(
            out,
            "arduino_connections",
            "gauge",
            "Websocket clients connected now.",
        )?;
        let connections = self.connections.load(Ordering::Relaxed).max(0);
        writeln!(out, "arduino_connections {connections}")?;

        header(
            out,
            "arduino_peer_messages_total",
            "counter",
            "Messages sent to peers, by outcome (ok, error: acknowledged with an error, \
             failed: not acknowledged).",
        )?;
        for peer in &self.peers {
            let name = Label(&peer.name);
            for (outcome, n) in PEER_OUTCOMES.iter().zip(&peer.messages) {
                writeln!(
                    out,
                    "arduino_peer_messages_total{{peer=\"{name}\",outcome=\"{outcome}\"}} {}",
                    get(n)
                )?;
            }
        }

        header(
            out,
            "arduino_peer_up",
            "gauge",
            "Whether the link to a peer is up (1) or not (0).",
        )?;
        for peer in &self.peers {
            let name = Label(&peer.name);
            let up = u8::from(peer.links.load(Ordering::Relaxed) > 0);
            writeln!(out, "arduino_peer_up{{peer=\"{name}\"}} {up}")?;
        }

        header(
            out,
            "arduino_peer_ack_seconds",
            "histogram",
            "Time from a message sent to a peer to its acknowledgement.",
        )?;
        for peer in &self.peers {
            let name = Label(&peer.name);
            let mut cumulative = 0;
            for (i, n) in peer.buckets.iter().enumerate() {
                cumulative += get(n);
                let le = BUCKETS.get(i).map_or("+Inf", |&(_, le)| le);
                writeln!(
                    out,
                    "arduino_peer_ack_seconds_bucket{{peer=\"{name}\",le=\"{le}\"}} {cumulative}"
                )?;
            }
            let sum = Duration::from_nanos(get(&peer.sum_nanos)).as_secs_f64();
            writeln!(out, "arduino_peer_ack_seconds_sum{{peer=\"{name}\"}} {sum}")?;
            writeln!(
                out,
                "arduino_peer_ack_seconds_count{{peer=\"{name}\"}} {cumulative}"
            )?;
        }
        Ok(())
    }
}

impl Observer for Metrics {
    fn observe(&self, _node: &str, event: &Event<'_>) {
        match *event {
            Event::MessageIn { .. } => {
                self.messages.fetch_add(1, Ordering::Relaxed);
            }
            Event::AckOut { ack, .. } => self.ack_out(ack),
            Event::ClientUp { .. } => {
                self.connections.fetch_add(1, Ordering::Relaxed);
            }
            Event::ClientDown { .. } => {
                self.connections.fetch_sub(1, Ordering::Relaxed);
            }
            Event::ClientRefused { .. } => {
                self.refused.fetch_add(1, Ordering::Relaxed);
            }
            Event::PeerUp { peer, .. } => {
                if let Some(peer) = self.peer(peer) {
                    peer.links.fetch_add(1, Ordering::Relaxed);
                }
            }
            Event::PeerDown { peer, .. } => {
                if let Some(peer) = self.peer(peer) {
                    peer.links.fetch_sub(1, Ordering::Relaxed);
                }
            }
            Event::PeerAck { peer, ack, took } => self.peer_ack(peer, ack, took),
            Event::SendFailed { peer, .. } => {
                if let Some(peer) = self.peer(peer) {
                    peer.messages[2].fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {}
        }
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) -> fmt::Result {
    writeln!(out, "# HELP {name} {help}")?;
    writeln!(out, "# TYPE {name} {kind}")
}

/// A label value, escaped as the exposition format wants (`\\`, `\"`, `\n`).
struct Label<'a>(&'a str);

impl fmt::Display for Label<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '"' => f.write_str("\\\"")?,
                '\n' => f.write_str("\\n")?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> crate::events::Client<'static> {
        crate::events::Client::Addr("127.0.0.1:4000".parse().unwrap())
    }

    #[test]
    fn counts_show_in_the_exposition() {
        let metrics = Metrics::new(["buzzer", "say \"hi\"\\"]);
        metrics.observe(
            "pin",
            &Event::ClientUp {
                client: client(),
                channel: "/",
            },
        );
        for ack in ["acknowledged", "superseded", "error: busy", "n/a"] {
            metrics.observe(
                "pin",
                &Event::MessageIn {
                    client: client(),
                    channel: "/",
                    text: "1",
                },
            );
            metrics.observe(
                "pin",
                &Event::AckOut {
                    client: client(),
                    ack,
                    took: Duration::from_micros(3),
                },
            );
        }
        metrics.observe(
            "pin",
            &Event::PeerUp {
                peer: "buzzer",
                url: "ws://x",
            },
        );
        for micros in [5, 41, 41, 3_000_000, 20_000_000] {
            metrics.observe(
                "pin",
                &Event::PeerAck {
                    peer: "buzzer",
                    ack: "...",
                    took: Duration::from_micros(micros),
                },
            );
        }
        metrics.observe(
            "pin",
            &Event::SendFailed {
                peer: "buzzer",
                reason: "timed out",
            },
        );
        let text = metrics.render();
        for line in [
            "arduino_messages_total 4",
            "arduino_acks_total{outcome=\"ok\"} 2",
            "arduino_acks_total{outcome=\"superseded\"} 1",
            "arduino_acks_total{outcome=\"error\"} 1",
            "arduino_connections 1",
            "arduino_peer_up{peer=\"buzzer\"} 1",
            "arduino_peer_up{peer=\"say \\\"hi\\\"\\\\\"} 0",
            "arduino_peer_messages_total{peer=\"buzzer\",outcome=\"ok\"} 5",
            "arduino_peer_messages_total{peer=\"buzzer\",outcome=\"failed\"} 1",
            "arduino_peer_ack_seconds_bucket{peer=\"buzzer\",le=\"1e-05\"} 1",
            "arduino_peer_ack_seconds_bucket{peer=\"buzzer\",le=\"2.5e-05\"} 1",
            "arduino_peer_ack_seconds_bucket{peer=\"buzzer\",le=\"5e-05\"} 3",
            "arduino_peer_ack_seconds_bucket{peer=\"buzzer\",le=\"5\"} 4",
            "arduino_peer_ack_seconds_bucket{peer=\"buzzer\",le=\"+Inf\"} 5",
            "arduino_peer_ack_seconds_sum{peer=\"buzzer\"} 23.000087",
            "arduino_peer_ack_seconds_count{peer=\"buzzer\"} 5",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
        }
    }
}
