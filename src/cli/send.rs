//! `arduino send`: each message (the arguments, or else the lines of stdin), one at a time;
//! each ack printed on its own line, with `-v` beside its message and the round trip time.

use std::{
    io::{BufRead, Read},
    time::Duration,
};

use anyhow::bail;
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use tokio::{sync::mpsc, time::Instant};
use tokio_tungstenite::tungstenite::Message;

use super::{MeshArg, Verbosity, explain, plural, print, seconds, secret_for, target_url};
use crate::{client, logging::shown, mesh::DEFAULT_MAX_MESSAGE};

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

/// `arduino send`: each message, one at a time; each ack printed on its own line.
pub(super) async fn run(args: &SendArgs) -> anyhow::Result<()> {
    let mesh = args.mesh.load_or_empty()?;
    let url = target_url(&mesh, &args.target, &args.channel)?;
    let (secret, withheld) = secret_for(&mesh, &args.target, &url)?;
    let wait = Duration::from_secs_f64(args.timeout);
    let max_message = mesh
        .node(&args.target)
        .map_or(DEFAULT_MAX_MESSAGE, |node| node.max_message());
    let connecting = client::connect(&url, secret.as_deref(), mesh.tls.as_ref(), max_message);
    let mut ws = match tokio::time::timeout(wait, connecting).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(error)) => bail!(
            "cannot reach {url}: {}",
            explain(client::describe(&error), withheld)
        ),
        Err(_) => bail!(
            "cannot reach {url}: no websocket handshake within {}s",
            args.timeout
        ),
    };
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
        match tokio::time::timeout_at(deadline, ws.send(Message::text(message.as_str()))).await {
            Err(_) => bail!("{url}: could not send {message:?} within {}s", args.timeout),
            Ok(Err(error)) => bail!("{url}: {}", client::describe(&error)),
            Ok(Ok(())) => {}
        }
        let ack = loop {
            match tokio::time::timeout_at(deadline, ws.next()).await {
                Err(_) => bail!(
                    "{url}: no acknowledgement for {message:?} within {}s",
                    args.timeout
                ),
                Ok(Some(Ok(Message::Text(ack)))) => break ack,
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
        };
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
    let _ = tokio::time::timeout(Duration::from_millis(500), ws.close(None)).await;
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
