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
    /// The mesh's TLS, for a `wss://` URL.
    pub tls: Option<crate::tls::Tls>,
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
    /// How long each connection and each acknowledgement may take: past it, the run fails.
    pub timeout: Duration,
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

/// Run the benchmark: [`connect`], then [`measure`].
///
/// # Errors
///
/// As [`connect`] and [`measure`].
pub async fn run(options: BenchOptions) -> Result<BenchReport, Error> {
    let connections = connect(&options).await?;
    measure(options, connections).await
}

/// Open every client's connection, each within the timeout.
///
/// # Errors
///
/// [`Error::Node`] with the reason (`connection refused`, `no websocket handshake within
/// 5s`) when a client cannot connect.
pub async fn connect(options: &BenchOptions) -> Result<Vec<client::Ws>, Error> {
    let clients = options.clients.max(1);
    let mut connections = Vec::with_capacity(clients.min(1 << 16));
    for _ in 0..clients {
        let connecting = client::connect(
            &options.url,
            options.secret.as_deref(),
            options.tls.as_ref(),
            usize::MAX >> 1,
        );
        let reason = match tokio::time::timeout(options.timeout, connecting).await {
            Ok(Ok(ws)) => {
                connections.push(ws);
                continue;
            }
            Ok(Err(error)) => client::describe(&error),
            Err(_) => format!(
                "no websocket handshake within {}s",
                options.timeout.as_secs_f64()
            ),
        };
        return Err(Error::Node {
            url: options.url.clone(),
            reason,
        });
    }
    Ok(connections)
}

/// Measure over `connections`, opened by [`connect`]: connecting is not measured.
///
/// # Errors
///
/// When a connection breaks, closes, or leaves a message unacknowledged past the timeout
/// before every message was acknowledged: a benchmark that lost messages has no figures
/// worth printing.
pub async fn measure(
    options: BenchOptions,
    connections: Vec<client::Ws>,
) -> Result<BenchReport, Error> {
    let clients = connections.len().max(1);
    let per_client = options.messages.div_ceil(clients).max(1);
    let text = Utf8Bytes::from(options.text.clone());
    let start = tokio::sync::watch::channel(false);
    let mut tasks = JoinSet::new();
    for ws in connections {
        let text = text.clone();
        let mut go = start.1.clone();
        let plan = Plan {
            warmup: options.warmup,
            count: per_client,
            window: options.window.max(1),
            hold: options.hold,
            timeout: options.timeout,
        };
        tasks.spawn(async move {
            let _ = go.wait_for(|&go| go).await;
            drive(ws, text, plan).await
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
        latencies: Vec::with_capacity(per_client.saturating_mul(clients).min(1 << 20)),
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

/// What one client does: `warmup` unmeasured messages, then `count` measured ones, `window`
/// in flight, each acknowledged within `timeout`; then it holds its connection for `hold`.
#[derive(Clone, Copy)]
struct Plan {
    warmup: usize,
    count: usize,
    window: usize,
    hold: Duration,
    timeout: Duration,
}

/// One client, as its plan says.
async fn drive(mut ws: client::Ws, text: Utf8Bytes, plan: Plan) -> Result<ClientRun, String> {
    let Plan {
        warmup,
        count,
        window,
        hold,
        timeout,
    } = plan;
    let total = warmup.saturating_add(count);
    let mut in_flight: VecDeque<Instant> = VecDeque::with_capacity(window);
    let mut run = ClientRun {
        started: Instant::now(),
        sent: 0,
        acked: 0,
        errors: 0,
        finished: Instant::now(),
        latencies: Vec::with_capacity(count.min(1 << 20)),
    };
    let (mut sent, mut received) = (0, 0);
    while received < total {
        // Sending (the node may not read) and the ack both count against the deadline.
        let deadline = Instant::now() + timeout;
        let late = || format!("no acknowledgement within {}s", timeout.as_secs_f64());
        while sent < total && in_flight.len() < window {
            if sent == warmup {
                run.started = Instant::now();
            }
            tokio::time::timeout_at(deadline, ws.feed(Message::Text(text.clone())))
                .await
                .map_err(|_| late())?
                .map_err(|e| client::describe(&e))?;
            in_flight.push_back(Instant::now());
            sent += 1;
        }
        tokio::time::timeout_at(deadline, ws.flush())
            .await
            .map_err(|_| late())?
            .map_err(|e| client::describe(&e))?;
        let ack = loop {
            let next = tokio::time::timeout_at(deadline, ws.next())
                .await
                .map_err(|_| format!("{} (after {received} acks)", late()))?;
            match next {
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
