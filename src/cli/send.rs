//! `arduino send`: each message (the arguments, or else the lines of stdin), one at a time;
//! each ack printed on its own line, with `-v` beside its message and the round trip time.

use std::{
    io::{BufRead, Read},
    time::Duration,
};

use anyhow::bail;
use bytes::Bytes;
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use tokio::{sync::mpsc, time::Instant};
use tokio_tungstenite::tungstenite::Message;

use super::{MeshArg, Verbosity, explain, is_url, plural, print, seconds, secret_for, target_url};
use crate::{client, logging::shown, mesh::DEFAULT_MAX_MESSAGE, nats};

#[derive(Debug, Args)]
pub(super) struct SendArgs {
    /// A node of the mesh file, or a URL such as ws://127.0.0.1:8765.
    #[arg(value_name = "NODE|ws://URL")]
    pub(super) target: String,
    /// The messages, sent one at a time, each after the previous one's ack [default: the
    /// lines of stdin, one message a line].
    #[arg(value_name = "MSG")]
    pub(super) messages: Vec<String>,
    /// The channel (websocket path) to send on; a URL's own path wins.
    #[arg(long, short, default_value = "/datafeed")]
    pub(super) channel: String,
    /// Seconds to wait for the connection and for each acknowledgement (0.001 to 86400).
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0, value_parser = seconds)]
    pub(super) timeout: f64,
    #[command(flatten)]
    pub(super) mesh: MeshArg,
    /// With -v, each ack is printed beside its message, with the round trip time.
    #[command(flatten)]
    pub(super) verbosity: Verbosity,
}

/// Where the messages come from.
enum Messages<'a> {
    Given(std::slice::Iter<'a, String>),
    /// Lines of stdin, read on a thread of their own (a read of stdin blocks), handed over
    /// one at a time: a line is read only once the previous one was sent.
    Stdin(mpsc::Receiver<Result<String, String>>),
}

impl Messages<'_> {
    /// Lines of at most `max_message` bytes: a longer one is an error, found without reading
    /// more of it than that (stdin may be a file without newlines, or without end).
    fn stdin(max_message: usize) -> Self {
        let (lines_tx, lines_rx) = mpsc::channel(1);
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut line = Vec::new();
            // Room for the line ending too.
            let most = u64::try_from(max_message)
                .unwrap_or(u64::MAX)
                .saturating_add(2);
            for number in 1.. {
                line.clear();
                let read = match (&mut stdin).take(most).read_until(b'\n', &mut line) {
                    Ok(0) => return,
                    Ok(_) => {
                        let text = line.strip_suffix(b"\n").unwrap_or(&line);
                        let text = text.strip_suffix(b"\r").unwrap_or(text);
                        if text.len() > max_message {
                            Err(format!(
                                "stdin: line {number} is over {max_message} bytes, the most a \
                                 message to this node may be"
                            ))
                        } else {
                            String::from_utf8(text.to_vec())
                                .map_err(|_| format!("stdin: line {number} is not valid UTF-8"))
                        }
                    }
                    Err(error) => Err(format!("cannot read stdin: {error}")),
                };
                let failed = read.is_err();
                if lines_tx.blocking_send(read).is_err() || failed {
                    return;
                }
            }
        });
        Self::Stdin(lines_rx)
    }

    async fn next(&mut self) -> anyhow::Result<Option<String>> {
        match self {
            Self::Given(messages) => Ok(messages.next().cloned()),
            Self::Stdin(lines_rx) => match lines_rx.recv().await {
                None => Ok(None),
                Some(Ok(line)) => Ok(Some(line)),
                Some(Err(error)) => bail!("{error}"),
            },
        }
    }
}

/// A round trip time as a person reads it: `212 us`, `12.3 ms`.
fn took(elapsed: Duration) -> String {
    let micros = elapsed.as_micros();
    if micros < 10_000 {
        format!("{micros} us")
    } else {
        format!("{:.1} ms", elapsed.as_secs_f64() * 1e3)
    }
}

/// The node the messages go to, and how.
enum Peer {
    /// A websocket connection, to `url`.
    Ws { url: String, ws: Box<client::Ws> },
    /// Requests through a NATS server, on `subject`.
    Nats {
        node: String,
        subject: Bytes,
        client: nats::Client,
    },
}

/// How long `send` first waits before asking a node that is not up again; and the longest.
const RETRY_FIRST: Duration = Duration::from_millis(20);
const RETRY_CAP: Duration = Duration::from_millis(500);

impl Peer {
    /// Send `message` and wait for its ack until `deadline`.
    async fn ask(
        &mut self,
        message: &str,
        deadline: Instant,
        patience: f64,
    ) -> anyhow::Result<String> {
        match self {
            Peer::Ws { url, ws } => ask_ws(ws, url, message, deadline, patience).await,
            Peer::Nats {
                node,
                subject,
                client,
            } => ask_nats(client, node, subject, message, deadline, patience).await,
        }
    }

    async fn close(self) {
        match self {
            Peer::Ws { mut ws, .. } => {
                let _ = tokio::time::timeout(Duration::from_millis(500), (*ws).close(None)).await;
            }
            Peer::Nats { client, .. } => drop(client),
        }
    }
}

async fn ask_ws(
    ws: &mut client::Ws,
    url: &str,
    message: &str,
    deadline: Instant,
    patience: f64,
) -> anyhow::Result<String> {
    match tokio::time::timeout_at(deadline, ws.send(Message::text(message))).await {
        Err(_) => bail!("{url}: could not send {message:?} within {patience}s"),
        Ok(Err(error)) => bail!("{url}: {}", client::describe(&error)),
        Ok(Ok(())) => {}
    }
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => bail!("{url}: no acknowledgement for {message:?} within {patience}s"),
            Ok(Some(Ok(Message::Text(ack)))) => return Ok(ack.to_string()),
            Ok(Some(Ok(Message::Close(frame)))) => bail!(
                "{url} closed the connection: {}",
                frame.map_or_else(String::new, |f| format!(
                    "{} {}",
                    u16::from(f.code),
                    f.reason
                ))
            ),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(error))) => bail!("{url}: {}", client::describe(&error)),
            Ok(None) => bail!("{url} closed the connection before acknowledging {message:?}"),
        }
    }
}

/// A request on the node's subject; no copy of the node up (or the server not reached) is
/// asked again with backoff until `deadline`, as links do, so that `send` may start first.
async fn ask_nats(
    client: &nats::Client,
    node: &str,
    subject: &Bytes,
    message: &str,
    deadline: Instant,
    patience: f64,
) -> anyhow::Result<String> {
    let payload = Bytes::copy_from_slice(message.as_bytes());
    let mut pause = RETRY_FIRST;
    loop {
        let why = match client.start_request(subject.clone(), None, payload.clone()) {
            Ok(reply) => match tokio::time::timeout_at(deadline, reply).await {
                Err(_) => bail!("{node}: no acknowledgement for {message:?} within {patience}s"),
                Ok(Ok(Ok(ack))) => return Ok(String::from_utf8_lossy(&ack).into_owned()),
                Ok(Ok(Err(nats::RequestError::NoResponders))) => format!("no {node} is up"),
                Ok(Ok(Err(error))) if error.undelivered() => error.to_string(),
                // It may have been handled: sending it again could handle it twice.
                Ok(Ok(Err(error))) => {
                    bail!("{node}: {message:?} may not have been handled: {error}")
                }
                Ok(Err(_)) => bail!("{node}: the NATS client stopped"),
            },
            Err(error) => error.to_string(),
        };
        let now = Instant::now();
        if now + pause >= deadline {
            bail!("{node}: {why} (asked for {patience}s)");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(RETRY_CAP);
    }
}

/// `arduino send`: each message, one at a time; each ack printed on its own line.
pub(super) async fn run(args: &SendArgs) -> anyhow::Result<()> {
    let mut mesh = args.mesh.load_or_empty()?;
    let nats_url = nats::apply_url(&mut mesh, std::env::var(nats::URL_VAR).ok())?;
    let wait = Duration::from_secs_f64(args.timeout);
    let max_message = mesh
        .node(&args.target)
        .map_or(DEFAULT_MAX_MESSAGE, |node| node.max_message());
    let peer = match nats_url {
        // A URL still goes over websockets: it names an address, not a node.
        Some(url) if !is_url(&args.target) => {
            let subject = nats::subject(&args.target, &args.channel)
                .map_err(|why| anyhow::anyhow!("cannot send through NATS: {why}"))?;
            // Named `send`, as the server's monitoring shows it. The mesh's secret is not
            // given: NATS has its own access (the URL's user and password, or token; TLS).
            let client = nats::connect(&url, "send", mesh.tls.clone())?;
            if let Err(why) = client.connected(wait).await {
                bail!(
                    "cannot reach the NATS server at {}: {why} (for {}s)",
                    nats::without_credentials(&url),
                    args.timeout
                );
            }
            Peer::Nats {
                node: args.target.clone(),
                subject: Bytes::from(subject),
                client,
            }
        }
        _ => {
            let url = target_url(&mesh, &args.target, &args.channel)?;
            let (secret, withheld) = secret_for(&mesh, &args.target, &url)?;
            let connecting =
                client::connect(&url, secret.as_deref(), mesh.tls.as_ref(), max_message);
            match tokio::time::timeout(wait, connecting).await {
                Ok(Ok(ws)) => Peer::Ws {
                    url,
                    ws: Box::new(ws),
                },
                Ok(Err(error)) => bail!(
                    "cannot reach {url}: {}",
                    explain(client::describe(&error), withheld)
                ),
                Err(_) => bail!(
                    "cannot reach {url}: no websocket handshake within {}s",
                    args.timeout
                ),
            }
        }
    };
    let mut peer = peer;
    let mut messages = if args.messages.is_empty() {
        Messages::stdin(max_message)
    } else {
        Messages::Given(args.messages.iter())
    };
    let verbose = args.verbosity.verbose > 0;
    let mut out = std::io::stdout().lock();
    let (mut sent, mut errors) = (0_u64, 0_u64);
    while let Some(message) = messages.next().await? {
        // Sending (the node may not read) and the ack both count against the timeout.
        let started = Instant::now();
        let deadline = started + wait;
        let ack = peer.ask(&message, deadline, args.timeout).await?;
        let elapsed = started.elapsed();
        sent += 1;
        if verbose {
            print(
                &mut out,
                format_args!("{} -> {ack} ({})", shown(&message), took(elapsed)),
            )?;
        } else {
            print(&mut out, &ack)?;
        }
        if ack.starts_with(crate::Ack::ERROR_PREFIX) {
            errors += 1;
        }
    }
    peer.close().await;
    if errors > 0 {
        bail!(
            "{errors} of {} {} not handled",
            plural(sent, "message"),
            if errors == 1 { "was" } else { "were" }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_read_as_lines() {
        assert_eq!(took(Duration::from_micros(212)), "212 us");
        assert_eq!(took(Duration::from_micros(12_345)), "12.3 ms");
    }
}
