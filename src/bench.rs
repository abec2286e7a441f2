//! `arduino bench`: drive a node with one or many websocket clients, check that every message
//! got exactly one acknowledgement, and measure acknowledged messages per second and round-trip
//! latency. The clients share the caller's runtime (one thread in the `arduino` program), so
//! they use one core and leave the other to the node.

use std::{collections::VecDeque, time::Duration};

use futures_util::{SinkExt, StreamExt};
use tokio::{task::JoinSet, time::Instant};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::{client, error::Error};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The node's URL, channel included.
    pub url: String,
    /// The mesh's secret, if any.
    pub secret: Option<String>,
    /// Concurrent connections.
    pub clients: usize,
    /// Messages in all, shared among the clients.
    pub messages: usize,
    /// Messages each client keeps in flight (1: stop and wait).
    pub window: usize,
    /// Messages each client sends first, not measured.
    pub warmup: usize,
    /// The text of each message.
    pub text: String,
    /// Keep every connection open this long after the run, for measuring a node's memory with
    /// that many clients.
    pub hold: Duration,
}

/// What was measured.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchReport {
    /// Messages sent (measured ones).
    pub sent: u64,
    /// Messages acknowledged without an error.
    pub acked: u64,
    /// Messages acknowledged with an `error: `.
    pub errors: u64,
    /// Time from the first measured message to the last acknowledgement.
    pub elapsed: Duration,
    /// Round-trip times of the measured messages, sorted.
    pub latencies: Vec<Duration>,
}

impl BenchReport {
    /// Acknowledgements (error or not) per second.
    pub fn rate(&self) -> f64 {
        (self.acked + self.errors) as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    /// The latency below which a fraction `q` (0 to 1) of the messages fall.
    pub fn percentile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((self.latencies.len() - 1) as f64 * q).round() as usize;
        self.latencies[rank]
    }
}

/// Run the benchmark.
///
/// # Errors
///
/// When a client cannot connect, or a connection breaks or closes before every message was
/// acknowledged: a benchmark that lost messages has no figures worth printing.
pub async fn run(options: BenchOptions) -> Result<BenchReport, Error> {
    let clients = options.clients.max(1);
    let per_client = options.messages.div_ceil(clients).max(1);
    let text = Utf8Bytes::from(options.text.clone());
    // Connect everyone first, so that connecting is not measured.
    let mut connections = Vec::with_capacity(clients);
    for _ in 0..clients {
        let ws = client::connect(&options.url, options.secret.as_deref(), usize::MAX >> 1)
            .await
            .map_err(|error| Error::Node {
                url: options.url.clone(),
                reason: format!("cannot connect: {}", client::describe(&error)),
            })?;
        connections.push(ws);
    }
    let start = tokio::sync::watch::channel(false);
    let mut tasks = JoinSet::new();
    for ws in connections {
        let text = text.clone();
        let mut go = start.1.clone();
        let (window, warmup, hold) = (options.window.max(1), options.warmup, options.hold);
        tasks.spawn(async move {
            let _ = go.wait_for(|&go| go).await;
            drive(ws, text, warmup, per_client, window, hold).await
        });
    }
    let began = Instant::now();
    // Every client starts at once: the measured part of the run is from the first measured
    // message any client sends to the last acknowledgement any client receives.
    let _ = start.0.send(true);
    let mut report = BenchReport {
        sent: 0,
        acked: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::with_capacity(per_client * clients),
    };
    let mut first = None::<Instant>;
    let mut last = began;
    while let Some(joined) = tasks.join_next().await {
        let run = joined.map_err(|error| Error::Node {
            url: options.url.clone(),
            reason: format!("a bench client failed: {error}"),
        })?;
        let run = run.map_err(|reason| Error::Node {
            url: options.url.clone(),
            reason,
        })?;
        report.sent += run.sent;
        report.acked += run.acked;
        report.errors += run.errors;
        last = last.max(run.finished);
        first = Some(first.map_or(run.started, |first| first.min(run.started)));
        report.latencies.extend(run.latencies);
    }
    report.elapsed = last - first.unwrap_or(began);
    report.latencies.sort_unstable();
    Ok(report)
}

struct ClientRun {
    started: Instant,
    sent: u64,
    acked: u64,
    errors: u64,
    finished: Instant,
    latencies: Vec<Duration>,
}

/// One client: `warmup` unmeasured messages, then `count` measured ones, `window` in flight.
async fn drive(
    mut ws: client::Ws,
    text: Utf8Bytes,
    warmup: usize,
    count: usize,
    window: usize,
    hold: Duration,
) -> Result<ClientRun, String> {
    let total = warmup + count;
    let mut in_flight: VecDeque<Instant> = VecDeque::with_capacity(window);
    let mut run = ClientRun {
        started: Instant::now(),
        sent: 0,
        acked: 0,
        errors: 0,
        finished: Instant::now(),
        latencies: Vec::with_capacity(count),
    };
    let (mut sent, mut received) = (0, 0);
    while received < total {
        while sent < total && in_flight.len() < window {
            if sent == warmup {
                run.started = Instant::now();
            }
            ws.feed(Message::Text(text.clone()))
                .await
                .map_err(|e| client::describe(&e))?;
            in_flight.push_back(Instant::now());
            sent += 1;
        }
        ws.flush().await.map_err(|e| client::describe(&e))?;
        let ack = loop {
            match ws.next().await {
                Some(Ok(Message::Text(ack))) => break ack,
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Binary(_))) => {
                    return Err("the node answered with a binary frame".into());
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(format!(
                        "the node closed the connection after {received} acks: {frame:?}"
                    ));
                }
                Some(Err(error)) => return Err(client::describe(&error)),
                None => return Err(format!("the connection ended after {received} acks")),
            }
        };
        let Some(sent_at) = in_flight.pop_front() else {
            return Err("an acknowledgement for a message that was never sent".into());
        };
        if received >= warmup {
            run.latencies.push(sent_at.elapsed());
            if ack.starts_with(crate::Ack::ERROR_PREFIX) {
                run.errors += 1;
            } else {
                run.acked += 1;
            }
        }
        received += 1;
    }
    run.sent = (sent - warmup) as u64;
    run.finished = Instant::now();
    if !hold.is_zero() {
        tokio::time::sleep(hold).await;
    }
    let _ = tokio::time::timeout(Duration::from_millis(500), ws.close(None)).await;
    Ok(run)
}
