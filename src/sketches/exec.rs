//! A program as the sketch, in any language: the runtime hands it each message and tick as a
//! JSON line on its stdin, reads its answers (and its sends to peers) as JSON lines on its
//! stdout, logs its stderr, and restarts it with backoff when it fails. The protocol is
//! described in `docs/exec.md`.

use std::{
    borrow::Cow,
    io,
    process::{ExitStatus, Stdio},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader},
    process::{Child, ChildStdin, ChildStdout},
    time::{Instant, timeout},
};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use crate::{
    Ack, ConfigError, ConfigValue, Context, Input, Key, Setup, Sketch, Text, logging::shown,
};

/// The version of the line protocol, sent in the init line.
pub const PROTOCOL: u32 = 1;
/// The longest line the program may print, unless `max_line` says otherwise.
pub const DEFAULT_MAX_LINE: u64 = 1 << 20;
/// The longest stderr line logged whole; the rest of a longer one is dropped.
const MAX_LOG_LINE: usize = 64 << 10;
/// The first restart after a failure is at once; each further failure in a row doubles the
/// wait, from this...
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// ...up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// When the node stops: how long the program has to exit once its stdin is closed, and then
/// once it got SIGTERM, before SIGKILL. Both fit in the node's stop second.
const STOP_STDIN: Duration = Duration::from_millis(200);
const STOP_TERM: Duration = Duration::from_millis(200);
/// How long a program whose stdout closed has to exit before it is killed.
const EXIT_WAIT: Duration = Duration::from_millis(500);

/// Runs `command` as the sketch and speaks the line protocol of `docs/exec.md` with it: each
/// message or tick is one JSON line on the program's stdin; the program answers on its stdout
/// with JSON lines that send to peers and finally acknowledge. A program that crashes, hangs
/// past the node's timeout or prints something else fails the message in hand with an
/// `error: ` ack and is started again, with backoff; the node stays up. Its config keys are
/// in [`Exec::CONFIG`](Sketch::CONFIG).
pub struct Exec {
    command: CommandLine,
    env: EnvVars,
    cwd: Option<String>,
    /// The init line, rendered once: every start of the program begins with it.
    init: Vec<u8>,
    timeout: Duration,
    max_line: usize,
    program: Option<Program>,
    next_id: u64,
    /// The line being written, reused from message to message.
    out: Vec<u8>,
    /// Failures in a row, for the backoff; a handled message resets it.
    failures: u32,
    /// When the program may be started again, and why it stopped.
    restart: Option<(Instant, String)>,
    /// The last ack and text the program gave, reused when it repeats them (most do).
    last_ack: Ack,
    last_text: Text,
    /// Stops the tasks that log the program's stderr, when the node stops.
    stop_logging: CancellationToken,
}

/// The `command` key: a program and its arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandLine(pub Vec<String>);

impl ConfigValue for CommandLine {
    const EXPECTED: &'static str = "a list of strings, the program first";
    fn from_toml(value: &toml::Value) -> Option<Self> {
        let list = value.as_array()?;
        let words = list
            .iter()
            .map(|word| word.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()?;
        Some(Self(words))
    }
}

/// The `env` key: extra environment variables for the program.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvVars(pub Vec<(String, String)>);

impl ConfigValue for EnvVars {
    const EXPECTED: &'static str = "a table of strings, such as { LANG = \"C\" }";
    fn from_toml(value: &toml::Value) -> Option<Self> {
        let table = value.as_table()?;
        let vars = table
            .iter()
            .map(|(key, value)| value.as_str().map(|value| (key.clone(), value.to_owned())))
            .collect::<Option<Vec<_>>>()?;
        Some(Self(vars))
    }
}

/// The `settings` key: any table, handed to the program as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings(pub serde_json::Value);

impl ConfigValue for Settings {
    const EXPECTED: &'static str = "a table";
    fn from_toml(value: &toml::Value) -> Option<Self> {
        value.as_table()?;
        serde_json::to_value(value).ok().map(Self)
    }
}

/// The first line of every start.
#[derive(Serialize)]
struct InitLine<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    protocol: u32,
    node: &'a str,
    peers: &'a [String],
    seed: u64,
    timeout: f64,
    settings: &'a serde_json::Value,
}

#[derive(Serialize)]
struct MessageLine<'a> {
    id: u64,
    #[serde(rename = "type")]
    kind: &'static str,
    channel: &'a str,
    text: &'a str,
}

#[derive(Serialize)]
struct TickLine {
    id: u64,
    #[serde(rename = "type")]
    kind: &'static str,
    n: u64,
}

/// The runtime's reply to a `send`: the peer's ack, or why there is none.
#[derive(Serialize)]
struct AckLine<'a> {
    id: u64,
    #[serde(rename = "type")]
    kind: &'static str,
    peer: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ack: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

/// A line from the program.
#[derive(Deserialize)]
struct Answer<'a> {
    id: Option<u64>,
    #[serde(borrow, default)]
    ack: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    error: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    send: Option<SendRequest<'a>>,
}

#[derive(Deserialize)]
struct SendRequest<'a> {
    #[serde(borrow)]
    peer: PeerRef<'a>,
    #[serde(borrow)]
    text: Cow<'a, str>,
    #[serde(borrow, default)]
    channel: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum PeerRef<'a> {
    Index(u64),
    Name(#[serde(borrow)] Cow<'a, str>),
}

/// A started program.
struct Program {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: LineReader<BufReader<ChildStdout>>,
    /// A line was being written when the message was abandoned: the program saw half of it.
    torn: bool,
    /// The program's process group (its pid), kept for after it is reaped: what it started
    /// goes with it.
    group: Option<i32>,
}

/// Why the message in hand failed, and whether the program must be started again.
struct Failure {
    reason: String,
    restart: bool,
}

impl Failure {
    fn restart(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            restart: true,
        }
    }
}

impl Sketch for Exec {
    const CONFIG: &'static [Key] = &[
        Key::required(
            "command",
            "the program and its arguments, such as [\"python3\", \"-u\", \"blink.py\"]",
        ),
        Key::table(
            "env",
            "extra environment variables, such as { LANG = \"C\" }",
        ),
        Key::optional("cwd", "the directory to run it in (default: the node's)"),
        Key::table("settings", "a table handed to the program in its init line"),
        Key::whole(
            "max_line",
            DEFAULT_MAX_LINE as i64,
            "the longest line it may print, in bytes (64 or more)",
        ),
    ];

    fn setup(setup: &mut Setup<'_>) -> Result<Self, ConfigError> {
        let command: CommandLine = setup.get("command")?;
        if command.0.is_empty() || command.0[0].is_empty() {
            return Err(ConfigError::invalid(
                "command",
                "must name the program to run, such as [\"python3\", \"-u\", \"blink.py\"]",
            ));
        }
        let env: EnvVars = setup.get("env")?;
        let cwd: Option<String> = setup.optional("cwd")?;
        let settings: Settings = setup.get("settings")?;
        let max_line: u64 = setup.get("max_line")?;
        if max_line < 64 {
            return Err(ConfigError::invalid("max_line", "must be 64 bytes or more"));
        }
        let init = InitLine {
            kind: "init",
            protocol: PROTOCOL,
            node: setup.node(),
            peers: setup.peers(),
            seed: setup.seed(),
            timeout: setup.timeout().as_secs_f64(),
            settings: &settings.0,
        };
        let mut line =
            serde_json::to_vec(&init).map_err(|error| ConfigError::invalid("settings", error))?;
        line.push(b'\n');
        Ok(Self {
            command,
            env,
            cwd: cwd.filter(|cwd| !cwd.is_empty()),
            init: line,
            timeout: setup.timeout(),
            max_line: usize::try_from(max_line).unwrap_or(usize::MAX),
            program: None,
            next_id: 1,
            out: Vec::new(),
            failures: 0,
            restart: None,
            last_ack: Ack::NA,
            last_text: Text::from_static(""),
            stop_logging: CancellationToken::new(),
        })
    }

    async fn loop_once(&mut self, ctx: &mut Context, input: Input<'_>) -> Ack {
        let id = self.next_id;
        self.next_id += 1;
        match self.handle(ctx, id, input).await {
            Ok(ack) => {
                self.failures = 0;
                ack
            }
            Err(failure) => {
                if failure.restart {
                    self.stop_program();
                    let wait = backoff(self.failures);
                    self.failures = self.failures.saturating_add(1);
                    self.restart = Some((Instant::now() + wait, failure.reason.clone()));
                    warn!(
                        "request {id} failed: {}; starting the program again in {}s",
                        failure.reason,
                        wait.as_secs_f64()
                    );
                } else {
                    warn!("request {id} failed: {}", failure.reason);
                }
                Ack::error(failure.reason)
            }
        }
    }
}

/// What an answer of the program asks for.
enum Step {
    /// Send `text` to a peer (or say why there is no such peer: its name as given, and why).
    Send {
        peer: Result<usize, (String, String)>,
        text: Text,
        channel: Option<String>,
    },
    /// The request is done: acknowledge.
    Done(Ack),
}

/// Read the program's `line`, an answer to request `id`. The ack and text are kept in `last_ack`
/// and `last_text`, and reused when the next answer repeats them.
fn step(
    line: &[u8],
    id: u64,
    ctx: &Context,
    last_ack: &mut Ack,
    last_text: &mut Text,
) -> Result<Step, Failure> {
    let answer: Answer<'_> = parse(line).map_err(|error| {
        warn!(
            "the program printed a line that is not a JSON answer ({error}): {}; \
             its stdout is for answers only, logs go to stderr",
            shown(&String::from_utf8_lossy(line))
        );
        Failure::restart(format!(
            "the program printed a line that is not a JSON answer: {error}"
        ))
    })?;
    match answer.id {
        Some(answered) if answered == id => {}
        Some(answered) => {
            return Err(Failure::restart(format!(
                "the program answered request {answered} while request {id} was in hand"
            )));
        }
        None => {
            return Err(Failure::restart(
                "the program printed an answer without an `id`",
            ));
        }
    }
    if let Some(send) = answer.send {
        let index = match &send.peer {
            PeerRef::Index(index) => usize::try_from(*index)
                .ok()
                .filter(|index| *index < ctx.peer_count()),
            PeerRef::Name(name) => (0..ctx.peer_count()).find(|i| ctx.peer_name(*i) == name),
        };
        let peer = index.ok_or_else(|| {
            let (name, asked) = match &send.peer {
                PeerRef::Index(index) => (index.to_string(), index.to_string()),
                PeerRef::Name(name) => (name.clone().into_owned(), format!("{name:?}")),
            };
            let peers: Vec<&str> = (0..ctx.peer_count()).map(|i| ctx.peer_name(i)).collect();
            let reason = format!(
                "there is no peer {asked}; this node's peers are [{}]",
                peers.join(", ")
            );
            (name, reason)
        });
        if send.text != last_text.as_str() {
            *last_text = Text::from(send.text.into_owned());
        }
        return Ok(Step::Send {
            peer,
            text: last_text.clone(),
            channel: send.channel.map(Cow::into_owned),
        });
    }
    if let Some(ack) = answer.ack {
        if ack != last_ack.as_str() {
            *last_ack = Ack::from(ack.into_owned());
        }
        return Ok(Step::Done(last_ack.clone()));
    }
    if let Some(error) = answer.error {
        return Ok(Step::Done(Ack::error(error)));
    }
    Err(Failure::restart(format!(
        "the program's answer to request {id} has none of `ack`, `error`, `send`"
    )))
}

/// An answer is a JSON object (serde would also take an array for a struct).
fn parse(line: &[u8]) -> Result<Answer<'_>, String> {
    if line.trim_ascii_start().first() != Some(&b'{') {
        return Err("expected a JSON object, one per line".to_owned());
    }
    serde_json::from_slice(line).map_err(|error| error.to_string())
}

/// How long to wait before the next start, after `failures` failures in a row.
fn backoff(failures: u32) -> Duration {
    match failures {
        0 => Duration::ZERO,
        n => FIRST_BACKOFF
            .saturating_mul(1 << (n - 1).min(16))
            .min(MAX_BACKOFF),
    }
}

impl Exec {
    /// Hand `input` to the program as request `id` and see it through to its answer.
    async fn handle(
        &mut self,
        ctx: &mut Context,
        id: u64,
        input: Input<'_>,
    ) -> Result<Ack, Failure> {
        if self.program.as_ref().is_some_and(|program| program.torn) {
            self.stop_program();
        }
        self.out.clear();
        if self.program.is_none() {
            // The init line goes out with the first request: nothing waits for the program
            // to be ready, as its pipe holds the lines until it reads them.
            self.start()?;
            self.out.extend_from_slice(&self.init);
        }
        let channel = match input {
            Input::Message { channel, text } => {
                let line = MessageLine {
                    id,
                    kind: "message",
                    channel,
                    text,
                };
                write_json(&mut self.out, &line);
                channel
            }
            Input::Tick(n) => {
                let line = TickLine {
                    id,
                    kind: "tick",
                    n,
                };
                write_json(&mut self.out, &line);
                "/"
            }
        };
        self.write_out().await?;
        loop {
            self.read_line().await?;
            let Some(program) = &self.program else {
                return Err(Failure::restart("the program is not running"));
            };
            let line = program.stdout.line();
            let (peer, text, asked) =
                match step(line, id, ctx, &mut self.last_ack, &mut self.last_text)? {
                    Step::Done(ack) => return Ok(ack),
                    Step::Send {
                        peer,
                        text,
                        channel,
                    } => (peer, text, channel),
                };
            let channel = asked.as_deref().unwrap_or(channel);
            let (name, reply) = match peer {
                Ok(index) => {
                    let sent = ctx.send(index, channel, text).await;
                    (
                        Cow::Borrowed(ctx.peer_name(index)),
                        sent.map_err(|error| error.to_string()),
                    )
                }
                Err((name, reason)) => (Cow::Owned(name), Err(reason)),
            };
            let (ack, error) = match &reply {
                Ok(ack) => (Some(ack.as_str()), None),
                Err(error) => (None, Some(error.as_str())),
            };
            self.out.clear();
            let line = AckLine {
                id,
                kind: "ack",
                peer: &name,
                ack,
                error,
            };
            write_json(&mut self.out, &line);
            self.write_out().await?;
        }
    }

    /// Start the program, unless it failed too recently.
    fn start(&mut self) -> Result<(), Failure> {
        if let Some((at, why)) = &self.restart {
            let now = Instant::now();
            if *at > now {
                return Err(Failure {
                    reason: format!(
                        "the program is being restarted ({why}); next start in {:.1}s",
                        (*at - now).as_secs_f64()
                    ),
                    restart: false,
                });
            }
        }
        let mut command = tokio::process::Command::new(&self.command.0[0]);
        command
            .args(&self.command.0[1..])
            // Python buffers a piped stdout, which would hold answers back until it exits.
            .env("PYTHONUNBUFFERED", "1")
            .envs(self.env.0.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a Ctrl-C at the terminal reaches the node, which stops
            // the program in order, rather than both at once.
            .process_group(0)
            .kill_on_drop(true);
        if let Some(cwd) = &self.cwd {
            command.current_dir(cwd);
        }
        let mut child = command.spawn().map_err(|error| {
            Failure::restart(format!("cannot start {:?}: {error}", self.command.0[0]))
        })?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(Failure::restart("the program's pipes could not be opened"));
        };
        info!(
            pid = child.id(),
            "started {}",
            shown(&self.command.0.join(" "))
        );
        let stop = self.stop_logging.clone();
        tokio::spawn(log_stderr(stderr, stop).in_current_span());
        self.restart = None;
        let group = child.id().and_then(|pid| i32::try_from(pid).ok());
        self.program = Some(Program {
            group,
            child,
            stdin: Some(stdin),
            stdout: LineReader::new(BufReader::new(stdout), self.max_line),
            torn: false,
        });
        Ok(())
    }

    /// Write the line in `out` (with the init line before it, after a start).
    async fn write_out(&mut self) -> Result<(), Failure> {
        let Some(program) = &mut self.program else {
            return Err(Failure::restart("the program is not running"));
        };
        let Some(stdin) = &mut program.stdin else {
            return Err(Failure::restart("the program's stdin is closed"));
        };
        program.torn = true;
        match stdin.write_all(&self.out).await {
            Ok(()) => {
                program.torn = false;
                Ok(())
            }
            // It closed its stdin or exited: say how it ended.
            Err(_) => Err(self.exited().await),
        }
    }

    /// The next line the program prints, within the node's timeout.
    async fn read_line(&mut self) -> Result<(), Failure> {
        let Some(program) = &mut self.program else {
            return Err(Failure::restart("the program is not running"));
        };
        let reading = async {
            tokio::select! {
                biased;
                read = program.stdout.next() => read,
                // A process it started may hold its stdout open: its exit is the end, once
                // what it printed before exiting is read.
                Ok(status) = program.child.wait() => {
                    match timeout(EXIT_WAIT, program.stdout.next()).await {
                        Ok(read) => read,
                        Err(_) => Err(io::Error::other(describe(status))),
                    }
                }
            }
        };
        let read = match timeout(self.timeout, reading).await {
            Ok(read) => read,
            Err(_) => {
                return Err(Failure::restart(format!(
                    "the program did not answer within {}s (is its stdout flushed after each line?)",
                    self.timeout.as_secs_f64()
                )));
            }
        };
        match read {
            Ok(Line::Complete) => Ok(()),
            Ok(Line::TooLong) => Err(Failure::restart(format!(
                "the program printed a line over {} bytes",
                self.max_line
            ))),
            Ok(Line::End) | Err(_) => Err(self.exited().await),
        }
    }

    /// The failure of a program whose stdout or stdin closed: how it exited.
    async fn exited(&mut self) -> Failure {
        let Some(program) = &mut self.program else {
            return Failure::restart("the program is not running");
        };
        match timeout(EXIT_WAIT, program.child.wait()).await {
            Ok(Ok(status)) => {
                Failure::restart(format!("the program {} before answering", describe(status)))
            }
            _ => Failure::restart("the program closed its stdout before answering"),
        }
    }

    /// Kill the program at once (it failed; its state is not worth a grace period).
    fn stop_program(&mut self) {
        if let Some(mut program) = self.program.take() {
            let _ = program.child.start_kill();
            signal_group(program.group, libc::SIGKILL);
            // Dropped here: tokio reaps it in the background.
        }
    }
}

impl Drop for Exec {
    /// The node is stopping: close the program's stdin, then SIGTERM its process group, then
    /// SIGKILL it, each after a short grace, so that it and what it started are gone within
    /// the node's stop second. This blocks the thread for at most 0.4 s, once, as the node
    /// ends: there is no later point at which to wait.
    fn drop(&mut self) {
        self.stop_logging.cancel();
        let Some(mut program) = self.program.take() else {
            return;
        };
        drop(program.stdin.take());
        if !exited_within(&mut program.child, STOP_STDIN) {
            signal_group(program.group, libc::SIGTERM);
            if !exited_within(&mut program.child, STOP_TERM) {
                warn!("the program ignored its closed stdin and SIGTERM: killing it");
                let _ = program.child.start_kill();
                exited_within(&mut program.child, STOP_TERM);
            }
        }
        // Whatever the program started and left running goes with the node.
        signal_group(program.group, libc::SIGKILL);
    }
}

/// Send `signal` to the process group `group` (a program's and what it started), if any is
/// left.
fn signal_group(group: Option<i32>, signal: libc::c_int) {
    if let Some(group) = group.filter(|&group| group > 0) {
        // SAFETY: kill(2) with a negative pid signals a process group: the one the program
        // leads since its start, which the kernel keeps from reuse while any member lives.
        unsafe {
            libc::kill(-group, signal);
        }
    }
}

/// Poll `child` until it exits or `grace` passes.
fn exited_within(child: &mut Child, grace: Duration) -> bool {
    let deadline = std::time::Instant::now() + grace;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return true,
            Ok(None) if std::time::Instant::now() >= deadline => return false,
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// How a program ended, as words.
fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => "exited".to_owned(),
    }
}

fn write_json(out: &mut Vec<u8>, line: &impl Serialize) {
    // Serializing these plain structs into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, line);
    out.push(b'\n');
}

/// The most lines of a program's stderr logged in a second. Each is a write to the node's
/// stderr: a program writing without end would otherwise keep a thread of the node busy
/// logging, and starve the other nodes of the process.
const MAX_LOG_LINES: u32 = 1000;

/// Each line of the program's stderr into the node's log, until it closes or the node stops;
/// past [`MAX_LOG_LINES`] in a second, the rest of that second's are counted, not logged.
async fn log_stderr(stderr: impl AsyncRead + Unpin, stop: CancellationToken) {
    let mut lines = LineReader::new(BufReader::new(stderr), MAX_LOG_LINE);
    let mut second = Instant::now();
    let (mut logged, mut hidden) = (0u32, 0u64);
    let say_hidden = |hidden: u64| {
        if hidden > 0 {
            info!("({hidden} more lines of its stderr not shown: over {MAX_LOG_LINES} a second)");
        }
    };
    loop {
        let read = tokio::select! {
            read = lines.next() => read,
            () = stop.cancelled() => return,
        };
        let now = Instant::now();
        if now.duration_since(second) >= Duration::from_secs(1) {
            say_hidden(std::mem::take(&mut hidden));
            second = now;
            logged = 0;
        }
        match read {
            Ok(Line::Complete | Line::TooLong) if logged >= MAX_LOG_LINES => hidden += 1,
            Ok(Line::Complete) => {
                logged += 1;
                info!("{}", shown(&String::from_utf8_lossy(lines.line())));
            }
            Ok(Line::TooLong) => {
                logged += 1;
                info!("(a line over {MAX_LOG_LINE} bytes, not shown)");
            }
            Ok(Line::End) | Err(_) => {
                say_hidden(hidden);
                debug!("the program closed its stderr");
                return;
            }
        }
    }
}

/// What [`LineReader::next`] found.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// A line, in [`LineReader::line`].
    Complete,
    /// A line longer than the limit, skipped.
    TooLong,
    /// The stream ended (a last line without its newline is dropped).
    End,
}

/// Newline-separated lines of at most `max` bytes, in one buffer reused from line to line.
/// Cancel-safe: a read abandoned halfway resumes where it stopped.
struct LineReader<R> {
    reader: R,
    line: Vec<u8>,
    max: usize,
    /// The line in `line` was handed out; clear it before the next.
    complete: bool,
    /// The current line is over `max`: skipping to its end.
    skipping: bool,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    fn new(reader: R, max: usize) -> Self {
        Self {
            reader,
            line: Vec::new(),
            max,
            complete: false,
            skipping: false,
        }
    }

    async fn next(&mut self) -> io::Result<Line> {
        if self.complete {
            self.line.clear();
            self.complete = false;
        }
        loop {
            let buf = self.reader.fill_buf().await?;
            if buf.is_empty() {
                return Ok(Line::End);
            }
            let (chunk, end) = match buf.iter().position(|&b| b == b'\n') {
                Some(at) => (&buf[..at], Some(at + 1)),
                None => (buf, None),
            };
            if !self.skipping {
                if self.line.len() + chunk.len() > self.max {
                    self.skipping = true;
                    self.line.clear();
                } else {
                    self.line.extend_from_slice(chunk);
                }
            }
            let used = end.unwrap_or(buf.len());
            self.reader.consume(used);
            if end.is_some() {
                if std::mem::take(&mut self.skipping) {
                    return Ok(Line::TooLong);
                }
                if self.line.last() == Some(&b'\r') {
                    self.line.pop();
                }
                if self.line.iter().all(u8::is_ascii_whitespace) {
                    // Blank lines carry nothing: skip them.
                    self.line.clear();
                    continue;
                }
                self.complete = true;
                return Ok(Line::Complete);
            }
        }
    }

    fn line(&self) -> &[u8] {
        &self.line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(config: &str) -> Result<Exec, ConfigError> {
        let table: toml::Table = toml::from_str(config).unwrap();
        let peers = ["buzzer".to_owned()];
        Exec::setup(&mut Setup::new(Exec::CONFIG, "pin", &table, 7, &peers))
    }

    #[test]
    fn the_command_is_required_and_a_list_of_strings() {
        assert!(exec("").err().unwrap().to_string().contains("`command`"));
        assert!(exec("command = []").is_err());
        assert!(exec("command = \"python3 x.py\"").is_err());
        assert!(exec("command = [\"python3\", 3]").is_err());
        let ok = exec("command = [\"python3\", \"-u\", \"x.py\"]").unwrap();
        assert_eq!(ok.command.0, ["python3", "-u", "x.py"]);
    }

    #[test]
    fn env_cwd_settings_and_max_line_are_checked() {
        let base = "command = [\"x\"]\n";
        assert!(exec(&format!("{base}env = {{ A = 1 }}")).is_err());
        assert!(exec(&format!("{base}settings = 3")).is_err());
        assert!(exec(&format!("{base}max_line = 10")).is_err());
        let ok = exec(&format!(
            "{base}env = {{ A = \"1\" }}\ncwd = \"/tmp\"\nsettings = {{ chance = 0.6 }}"
        ))
        .unwrap();
        assert_eq!(ok.env.0, [("A".to_owned(), "1".to_owned())]);
        assert_eq!(ok.cwd.as_deref(), Some("/tmp"));
    }

    #[test]
    fn the_init_line_carries_node_peers_seed_timeout_and_settings() {
        let ok = exec("command = [\"x\"]\nsettings = { chance = 0.6, sequence = 3 }").unwrap();
        let init: serde_json::Value = serde_json::from_slice(&ok.init).unwrap();
        assert_eq!(
            init,
            serde_json::json!({
                "type": "init", "protocol": 1, "node": "pin", "peers": ["buzzer"], "seed": 7,
                "timeout": 5.0, "settings": { "chance": 0.6, "sequence": 3 }
            })
        );
        assert!(ok.init.ends_with(b"}\n"));
    }

    #[test]
    fn requests_are_one_json_line_each() {
        let mut out = Vec::new();
        write_json(
            &mut out,
            &MessageLine {
                id: 1,
                kind: "message",
                channel: "/datafeed",
                text: "0\n\"",
            },
        );
        write_json(
            &mut out,
            &AckLine {
                id: 1,
                kind: "ack",
                peer: "buzzer",
                ack: None,
                error: Some("down"),
            },
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"id\":1,\"type\":\"message\",\"channel\":\"/datafeed\",\"text\":\"0\\n\\\"\"}\n\
             {\"id\":1,\"type\":\"ack\",\"peer\":\"buzzer\",\"error\":\"down\"}\n"
        );
    }

    #[test]
    fn answers_parse_with_a_peer_by_number_or_name() {
        let answer: Answer<'_> =
            serde_json::from_str(r#"{"id":3,"send":{"peer":0,"text":"1"}}"#).unwrap();
        assert_eq!(answer.id, Some(3));
        assert!(matches!(answer.send.unwrap().peer, PeerRef::Index(0)));
        let answer: Answer<'_> =
            serde_json::from_str(r#"{"id":3,"send":{"peer":"buzzer","text":"1","channel":"/x"}}"#)
                .unwrap();
        let send = answer.send.unwrap();
        assert!(matches!(send.peer, PeerRef::Name(name) if name == "buzzer"));
        assert_eq!(send.channel.as_deref(), Some("/x"));
        let answer: Answer<'_> = serde_json::from_str(r#"{"id":3,"ack":"a\"b"}"#).unwrap();
        assert_eq!(answer.ack.as_deref(), Some("a\"b"));
        assert!(parse(b"hello").is_err());
        assert!(parse(b"[1]").is_err());
        assert!(parse(b"{\"id\":1}").is_ok());
    }

    #[test]
    fn the_shipped_python_mesh_sets_up() {
        let text = include_str!("../../examples/python-mesh.toml");
        let mesh = crate::Mesh::parse(text, "python-mesh.toml").unwrap();
        crate::builtin().check(&mesh).unwrap();
    }

    #[test]
    fn backoff_starts_at_once_then_doubles_to_a_cap() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), FIRST_BACKOFF);
        assert_eq!(backoff(2), FIRST_BACKOFF * 2);
        assert_eq!(backoff(10), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[tokio::test]
    async fn lines_are_bounded_and_resume_after_a_long_one() {
        let input: &[u8] = b"one\r\n\n  \ntwo\nxxxxxxxxxxxxxxxxxxxx\nthree\nfour";
        let mut lines = LineReader::new(BufReader::with_capacity(4, input), 8);
        assert_eq!(lines.next().await.unwrap(), Line::Complete);
        assert_eq!(lines.line(), b"one");
        assert_eq!(lines.next().await.unwrap(), Line::Complete);
        assert_eq!(lines.line(), b"two");
        assert_eq!(lines.next().await.unwrap(), Line::TooLong);
        assert_eq!(lines.next().await.unwrap(), Line::Complete);
        assert_eq!(lines.line(), b"three");
        assert_eq!(lines.next().await.unwrap(), Line::End);
    }
}
