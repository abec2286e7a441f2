//! The [`Sketch`] trait, Arduino's two hooks, and what a sketch sees of the world: a [`Setup`]
//! to read its configuration from, and a [`Context`] to stream to its peers from its loop.
//! A sketch never sees a socket: the runtime owns those.

use std::{fmt, future::Future, time::Duration};

use rand::SeedableRng;

use crate::{
    link::{Links, SendError},
    message::{Ack, Input, Text},
    shape::Batch,
};

/// A simulated device. The runtime calls [`setup`](Sketch::setup) once, before the node starts,
/// then [`loop_once`](Sketch::loop_once) for every message that arrives and every tick of the
/// sketch's timer, one call at a time: a sketch's state is never touched by two messages at
/// once.
///
/// ```
/// use arduino::{Ack, ConfigError, Context, Input, Setup, Sketch};
///
/// /// Acknowledges every message with its length.
/// struct Counter {
///     seen: u64,
/// }
///
/// impl Sketch for Counter {
///     fn setup(setup: &mut Setup<'_>) -> Result<Self, ConfigError> {
///         Ok(Counter { seen: setup.get("start", 0)? })
///     }
///
///     async fn loop_once(&mut self, _ctx: &mut Context, input: Input<'_>) -> Ack {
///         self.seen += 1;
///         match input {
///             Input::Message { text, .. } => Ack::from(format!("{} #{}", text.len(), self.seen)),
///             Input::Tick(_) => Ack::NA,
///         }
///     }
/// }
/// ```
pub trait Sketch: Sized + Send + 'static {
    /// Whether a node running this sketch listens for messages. A sketch that only drives
    /// others (the clock) says `false`: its `--host`/`--port` then name the peer to drive.
    const LISTENS: bool = true;

    /// Arduino's `setup`: build the sketch from its node's configuration. Read every key with
    /// [`Setup::get`]; a key the sketch never reads is reported to the user as unknown.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] when a value is of the wrong type or out of range.
    fn setup(setup: &mut Setup<'_>) -> Result<Self, ConfigError>;

    /// Arduino's `loop`: handle one message (or timer tick) and say what to acknowledge.
    fn loop_once(
        &mut self,
        ctx: &mut Context,
        input: Input<'_>,
    ) -> impl Future<Output = Ack> + Send;

    /// Whether the sketch takes a `buffer`'s batches whole, in
    /// [`loop_batch`](Sketch::loop_batch). Otherwise (the default) a batch's messages are
    /// handed to [`loop_once`](Sketch::loop_once) one by one once the batch is complete.
    const TAKES_BATCHES: bool = false;

    /// Handle a whole batch of messages (see `buffer` in the mesh file's `[node.input]`), and
    /// say what to acknowledge: every message of the batch gets this ack. Called only when
    /// [`TAKES_BATCHES`](Sketch::TAKES_BATCHES) is true.
    fn loop_batch(
        &mut self,
        ctx: &mut Context,
        batch: Batch<'_>,
    ) -> impl Future<Output = Ack> + Send {
        let _ = (ctx, batch);
        async { Ack::error("this sketch does not take batches") }
    }
}

/// A configuration value a sketch can read with [`Setup::get`].
pub trait ConfigValue: Sized {
    /// What the user should have written, for error messages ("a number").
    const EXPECTED: &'static str;

    /// The value, when `value` is of the right type.
    fn from_toml(value: &toml::Value) -> Option<Self>;
}

impl ConfigValue for f64 {
    const EXPECTED: &'static str = "a number";
    /// Finite numbers only: `inf` and `nan` are valid TOML but no sketch can count with them.
    fn from_toml(value: &toml::Value) -> Option<Self> {
        match value {
            toml::Value::Float(x) if x.is_finite() => Some(*x),
            toml::Value::Integer(n) => Some(*n as f64),
            _ => None,
        }
    }
}

impl ConfigValue for u64 {
    const EXPECTED: &'static str = "a whole number, 0 or more";
    fn from_toml(value: &toml::Value) -> Option<Self> {
        value.as_integer().and_then(|n| u64::try_from(n).ok())
    }
}

impl ConfigValue for u32 {
    const EXPECTED: &'static str = "a whole number, 0 or more";
    fn from_toml(value: &toml::Value) -> Option<Self> {
        value.as_integer().and_then(|n| u32::try_from(n).ok())
    }
}

impl ConfigValue for bool {
    const EXPECTED: &'static str = "true or false";
    fn from_toml(value: &toml::Value) -> Option<Self> {
        value.as_bool()
    }
}

impl ConfigValue for String {
    const EXPECTED: &'static str = "a string";
    fn from_toml(value: &toml::Value) -> Option<Self> {
        value.as_str().map(str::to_owned)
    }
}

/// A configuration value that a sketch cannot run with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The key at fault.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    /// `key` holds a value the sketch cannot use, for the reason given.
    pub fn invalid(key: &str, message: impl fmt::Display) -> Self {
        Self {
            key: key.to_owned(),
            message: message.to_string(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config key `{}` {}", self.key, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// The longest time a setting may give, in seconds: one day. Longer ones are mistakes (a
/// timeout in milliseconds, say), and far longer ones cannot be represented as instants.
pub const MAX_SECONDS: f64 = 86_400.0;

/// `seconds` as a [`Duration`], when it is a number from `min` to [`MAX_SECONDS`].
///
/// # Errors
///
/// A sentence to follow the key's name (`must be between 0.001 and 86400 seconds, not 1e300`)
/// when it is out of range, infinite or not a number.
pub fn seconds_between(seconds: f64, min: f64) -> Result<Duration, String> {
    let duration = (min..=MAX_SECONDS)
        .contains(&seconds)
        .then(|| Duration::try_from_secs_f64(seconds).ok())
        .flatten();
    duration.ok_or_else(|| {
        format!(
            "must be between {} and {} seconds, not {}",
            number(min),
            number(MAX_SECONDS),
            number(seconds)
        )
    })
}

/// A number as a person would write it: `1e300` rather than three hundred digits.
pub(crate) fn number(x: f64) -> String {
    let size = x.abs();
    if x.is_finite() && x != 0.0 && !(1e-3..1e9).contains(&size) {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

/// A configured value as it would be written in TOML, on one line and cut short: for error
/// messages, which must stay one line whatever the file holds.
pub(crate) fn shown(value: &toml::Value) -> String {
    const MOST: usize = 40;
    let text = match value {
        toml::Value::Float(x) => number(*x),
        toml::Value::String(text) => format!("{text:?}"),
        other => other.to_string(),
    };
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match text.char_indices().nth(MOST) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text,
    }
}

/// A sketch's own timer: fire `count` times (or for ever), `period` apart, the first at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ticks {
    /// Time between two ticks.
    pub period: Duration,
    /// How many ticks, `None` for no end.
    pub count: Option<u64>,
}

/// What [`Sketch::setup`] reads its configuration from (the `[node.config]` table of the mesh
/// file, with command-line flags applied).
pub struct Setup<'a> {
    node: &'a str,
    config: &'a toml::Table,
    seed: u64,
    peers: &'a [String],
    read: Vec<&'static str>,
    ticks: Option<Ticks>,
    timeout: Duration,
}

impl<'a> Setup<'a> {
    pub(crate) fn new(
        node: &'a str,
        config: &'a toml::Table,
        seed: u64,
        peers: &'a [String],
    ) -> Self {
        Self {
            node,
            config,
            seed,
            peers,
            read: Vec::new(),
            ticks: None,
            timeout: crate::mesh::DEFAULT_TIMEOUT,
        }
    }

    /// The same, for a node whose `timeout` is `timeout`.
    pub(crate) fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The value of `key`, or `default` when the configuration does not set it.
    ///
    /// # Errors
    ///
    /// When the configured value is not of type `T`.
    pub fn get<T: ConfigValue>(&mut self, key: &'static str, default: T) -> Result<T, ConfigError> {
        self.read.push(key);
        match self.config.get(key) {
            None => Ok(default),
            Some(value) => T::from_toml(value).ok_or_else(|| {
                ConfigError::invalid(
                    key,
                    format_args!("must be {}, not {}", T::EXPECTED, shown(value)),
                )
            }),
        }
    }

    /// The duration `key` gives in seconds (fractions allowed), or `default` when the
    /// configuration does not set it. Accepts 0 to [`MAX_SECONDS`]; a sketch that needs more
    /// than 0 checks that itself.
    ///
    /// # Errors
    ///
    /// When the value is not a number, or is out of that range.
    pub fn seconds(
        &mut self,
        key: &'static str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        self.read.push(key);
        let seconds = match self.config.get(key) {
            None => return Ok(default),
            Some(toml::Value::Float(x)) => *x,
            Some(toml::Value::Integer(n)) => *n as f64,
            Some(value) => {
                return Err(ConfigError::invalid(
                    key,
                    format_args!("must be a number of seconds, not {}", shown(value)),
                ));
            }
        };
        seconds_between(seconds, 0.0).map_err(|message| ConfigError::invalid(key, message))
    }

    /// The node's name in the mesh.
    pub fn node(&self) -> &str {
        self.node
    }

    /// The names of the peers this node streams to, in order.
    pub fn peers(&self) -> &[String] {
        self.peers
    }

    /// The node's seed: the one the user gave (`--seed` or `seed` in the mesh file), else a
    /// random one, so that runs with a seed repeat.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// How long the node waits on a peer's acknowledgement (its `timeout`, 5 s unless set):
    /// for a sketch that waits on something else, the time it may give it.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A random number generator seeded with [`Setup::seed`].
    pub fn rng<R: SeedableRng>(&self) -> R {
        R::seed_from_u64(self.seed)
    }

    /// Ask the runtime to call the loop hook with [`Input::Tick`] every `period`, `count` times
    /// (`None`: until the node stops), the first tick at once. A node with a finite timer and no
    /// listener is done after its last tick.
    pub fn tick_every(&mut self, period: Duration, count: Option<u64>) {
        self.ticks = Some(Ticks { period, count });
    }

    /// The keys of the configuration that the sketch never read.
    pub(crate) fn unread(&self) -> impl Iterator<Item = &str> {
        self.config
            .keys()
            .map(String::as_str)
            .filter(|key| !self.read.contains(key))
    }

    /// The keys the sketch reads, for error messages.
    pub(crate) fn known(&self) -> &[&'static str] {
        &self.read
    }

    pub(crate) fn ticks(&self) -> Option<Ticks> {
        self.ticks
    }
}

/// What a sketch's loop hook can do besides returning its acknowledgement: stream messages to
/// the peers the mesh file wires its node to, over links the runtime keeps open.
pub struct Context {
    pub(crate) links: Links,
}

impl Context {
    /// This node's name.
    pub fn node(&self) -> &str {
        self.links.node()
    }

    /// How many peers this node streams to.
    pub fn peer_count(&self) -> usize {
        self.links.peer_count()
    }

    /// The name of peer `index`, in the order of the node's `to` list.
    pub fn peer_name(&self, index: usize) -> &str {
        self.links.peer_name(index)
    }

    /// Send `text` to peer `index` on `channel` and wait for its acknowledgement.
    ///
    /// The link to the peer is opened on first use and kept for the next message. A peer that
    /// was never up is waited for, with backoff, for as long as the node runs; one that was up
    /// and went away is reconnected to for up to half the node's timeout.
    ///
    /// # Errors
    ///
    /// A [`SendError`] when the peer cannot be reached, does not acknowledge within the node's
    /// timeout, closes the link, or acknowledges with an `error: `. The failure is already
    /// logged and counted.
    pub async fn send(
        &mut self,
        peer: usize,
        channel: &str,
        text: impl Into<Text>,
    ) -> Result<Ack, SendError> {
        self.links.send(peer, channel, text.into()).await
    }
}
