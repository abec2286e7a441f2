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
/// use arduino::{Ack, ConfigError, Context, Input, Key, Setup, Sketch};
///
/// /// Acknowledges every message with its length.
/// struct Counter {
///     seen: u64,
/// }
///
/// impl Sketch for Counter {
///     const CONFIG: &'static [Key] = &[Key::whole("start", 0, "the count before the first message")];
///
///     fn setup(setup: &mut Setup<'_>) -> Result<Self, ConfigError> {
///         Ok(Counter { seen: setup.get("start")? })
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

    /// The config keys the sketch reads, each with its default and one line on what it does:
    /// `arduino SKETCH --help` lists them, a key of the mesh file that is not here is reported
    /// as unknown, and [`Setup::get`] reads only these.
    const CONFIG: &'static [Key] = &[];

    /// Arduino's `setup`: build the sketch from its node's configuration, read with
    /// [`Setup::get`] (the default coming from [`Sketch::CONFIG`]).
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

/// A config key a sketch declares in [`Sketch::CONFIG`]: its name, its default, and one line
/// on what it does, for `--help`. Made in a `const`:
///
/// ```
/// use arduino::Key;
///
/// const CONFIG: &[Key] = &[
///     Key::number("chance", 0.5, "probability that a drawn bit is 0 (0 to 1)"),
///     Key::whole("sequence", 3, "bits drawn per message (1 to 64)"),
///     Key::required("command", "the program and its arguments"),
/// ];
/// assert_eq!(CONFIG[0].default_text().as_deref(), Some("0.5"));
/// assert_eq!(CONFIG[2].default_text(), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Key {
    /// The key's name in `[node.config]`.
    pub name: &'static str,
    /// One line on what it does (and the values it takes).
    pub about: &'static str,
    preset: Preset,
}

/// A key's default.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Preset {
    Number(f64),
    Whole(i64),
    Text(&'static str),
    Flag(bool),
    /// An empty table.
    Table,
    /// No default: the user must give it.
    Required,
    /// No default: the sketch does without.
    Optional,
}

impl Key {
    const fn new(name: &'static str, preset: Preset, about: &'static str) -> Self {
        Self {
            name,
            about,
            preset,
        }
    }

    /// A number (fractions allowed; also what [`Setup::seconds`] reads), `default` unless set.
    pub const fn number(name: &'static str, default: f64, about: &'static str) -> Self {
        Self::new(name, Preset::Number(default), about)
    }

    /// A whole number, `default` unless set.
    pub const fn whole(name: &'static str, default: i64, about: &'static str) -> Self {
        Self::new(name, Preset::Whole(default), about)
    }

    /// A string, `default` unless set.
    pub const fn text(name: &'static str, default: &'static str, about: &'static str) -> Self {
        Self::new(name, Preset::Text(default), about)
    }

    /// `true` or `false`, `default` unless set.
    pub const fn flag(name: &'static str, default: bool, about: &'static str) -> Self {
        Self::new(name, Preset::Flag(default), about)
    }

    /// A table, empty unless set.
    pub const fn table(name: &'static str, about: &'static str) -> Self {
        Self::new(name, Preset::Table, about)
    }

    /// A key without a default that the node's config must give: [`Setup::get`] says so when
    /// it is missing.
    pub const fn required(name: &'static str, about: &'static str) -> Self {
        Self::new(name, Preset::Required, about)
    }

    /// A key without a default that the sketch does without: read it with
    /// [`Setup::optional`].
    pub const fn optional(name: &'static str, about: &'static str) -> Self {
        Self::new(name, Preset::Optional, about)
    }

    /// Whether the config must give this key.
    pub fn is_required(&self) -> bool {
        self.preset == Preset::Required
    }

    /// The default as it would be written in the mesh file (`0.5`, `"/datafeed"`, `{}`), or
    /// `None` for a key without one.
    pub fn default_text(&self) -> Option<String> {
        self.default_value().map(|value| shown(&value))
    }

    fn default_value(&self) -> Option<toml::Value> {
        Some(match self.preset {
            Preset::Number(x) => toml::Value::Float(x),
            Preset::Whole(n) => toml::Value::Integer(n),
            Preset::Text(text) => toml::Value::String(text.to_owned()),
            Preset::Flag(flag) => toml::Value::Boolean(flag),
            Preset::Table => toml::Value::Table(toml::Table::new()),
            Preset::Required | Preset::Optional => return None,
        })
    }
}

/// `keys` as an aligned table, one key a line: its name, its default (`required` or `none`
/// for keys without one) and what it does. Empty for no keys.
pub fn describe(keys: &[Key]) -> String {
    let rows: Vec<(&str, String, &str)> = keys
        .iter()
        .map(|key| {
            let default = key.default_text().unwrap_or_else(|| {
                if key.is_required() {
                    "required"
                } else {
                    "none"
                }
                .to_owned()
            });
            (key.name, default, key.about)
        })
        .collect();
    let name_width = rows
        .iter()
        .map(|row| row.0.chars().count())
        .max()
        .unwrap_or(0);
    let default_width = rows
        .iter()
        .map(|row| row.1.chars().count())
        .max()
        .unwrap_or(0);
    let mut text = String::new();
    for (name, default, about) in rows {
        let line = format!("  {name:<name_width$}  {default:<default_width$}  {about}");
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
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

impl ConfigValue for i64 {
    const EXPECTED: &'static str = "a whole number";
    fn from_toml(value: &toml::Value) -> Option<Self> {
        value.as_integer()
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
    keys: &'static [Key],
    ticks: Option<Ticks>,
    timeout: Duration,
}

impl<'a> Setup<'a> {
    /// The setup of node `node`, whose sketch declares `keys`.
    pub(crate) fn new(
        keys: &'static [Key],
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
            keys,
            ticks: None,
            timeout: crate::mesh::DEFAULT_TIMEOUT,
        }
    }

    /// The same, for a node whose `timeout` is `timeout`.
    pub(crate) fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The value of `key`, or its default from [`Sketch::CONFIG`] when the configuration does
    /// not set it.
    ///
    /// # Errors
    ///
    /// When the configured value is not of type `T`, or a [required](Key::required) key is
    /// missing; and, as mistakes of the sketch rather than of its config, when `key` is not in
    /// [`Sketch::CONFIG`], its default is not of type `T`, or it has no default and is not read
    /// with [`Setup::optional`].
    pub fn get<T: ConfigValue>(&mut self, key: &str) -> Result<T, ConfigError> {
        match self.optional(key)? {
            Some(value) => Ok(value),
            None => Err(self.missing(key)),
        }
    }

    /// The value of `key`, its default when it has one, or `None` for a key declared with
    /// [`Key::optional`] that the configuration does not set.
    ///
    /// # Errors
    ///
    /// As for [`Setup::get`].
    pub fn optional<T: ConfigValue>(&mut self, key: &str) -> Result<Option<T>, ConfigError> {
        let declared = self.declared(key)?;
        match self.config.get(key) {
            Some(value) => T::from_toml(value).map(Some).ok_or_else(|| {
                ConfigError::invalid(
                    key,
                    format_args!("must be {}, not {}", T::EXPECTED, shown(value)),
                )
            }),
            None => match declared.default_value() {
                None => Ok(None),
                Some(value) => T::from_toml(&value).map(Some).ok_or_else(|| {
                    ConfigError::invalid(
                        key,
                        format_args!(
                            "has a default ({}) that is not {}: a mistake in the sketch's CONFIG",
                            shown(&value),
                            T::EXPECTED
                        ),
                    )
                }),
            },
        }
    }

    /// The duration `key` gives in seconds (fractions allowed), or its default from
    /// [`Sketch::CONFIG`] when the configuration does not set it. Accepts 0 to
    /// [`MAX_SECONDS`]; a sketch that needs more than 0 checks that itself.
    ///
    /// # Errors
    ///
    /// When the value is not a number, or is out of that range; and as for [`Setup::get`].
    pub fn seconds(&mut self, key: &str) -> Result<Duration, ConfigError> {
        let declared = self.declared(key)?;
        let seconds = match self.config.get(key) {
            None => match declared.default_value() {
                Some(toml::Value::Float(x)) => x,
                Some(toml::Value::Integer(n)) => n as f64,
                _ => {
                    return Err(ConfigError::invalid(
                        key,
                        "has no default number of seconds: a mistake in the sketch's CONFIG",
                    ));
                }
            },
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

    /// The declaration of `key`.
    fn declared(&self, key: &str) -> Result<Key, ConfigError> {
        self.keys
            .iter()
            .find(|declared| declared.name == key)
            .copied()
            .ok_or_else(|| {
                ConfigError::invalid(
                    key,
                    "is read by the sketch but not declared in its CONFIG: a mistake in the sketch, not in the mesh file",
                )
            })
    }

    /// Why `key`, which the configuration does not set, has no value.
    fn missing(&self, key: &str) -> ConfigError {
        match self.keys.iter().find(|declared| declared.name == key) {
            Some(declared) if declared.is_required() => {
                ConfigError::invalid(key, format_args!("is required: {}", declared.about))
            }
            _ => ConfigError::invalid(
                key,
                "has no default and is read with Setup::get: a mistake in the sketch (declare a default, or read it with Setup::optional)",
            ),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: &[Key] = &[
        Key::number("chance", 0.5, "probability that a drawn bit is 0"),
        Key::whole("sequence", 3, "bits drawn per message"),
        Key::text("sound", "buzz", "what it says"),
        Key::flag("loud", false, "whether it shouts"),
        Key::table("env", "extra environment variables"),
        Key::required("command", "the program to run"),
        Key::optional("cwd", "where to run it"),
    ];

    fn read<T: ConfigValue>(config: &str, key: &str) -> Result<T, String> {
        let table: toml::Table = toml::from_str(config).unwrap();
        let mut setup = Setup::new(KEYS, "node", &table, 0, &[]);
        setup.get(key).map_err(|error| error.to_string())
    }

    #[test]
    fn values_come_from_the_config_else_from_the_declaration() {
        assert_eq!(read::<f64>("", "chance"), Ok(0.5));
        assert_eq!(read::<f64>("chance = 0.25", "chance"), Ok(0.25));
        assert_eq!(read::<u32>("", "sequence"), Ok(3));
        assert_eq!(read::<String>("", "sound"), Ok("buzz".to_owned()));
        assert_eq!(read::<bool>("", "loud"), Ok(false));
        assert_eq!(
            read::<f64>("chance = \"high\"", "chance"),
            Err("config key `chance` must be a number, not \"high\"".to_owned())
        );
    }

    #[test]
    fn a_required_key_must_be_given_and_an_optional_one_may_be_absent() {
        assert_eq!(
            read::<String>("", "command"),
            Err("config key `command` is required: the program to run".to_owned())
        );
        assert_eq!(read::<String>("command = \"x\"", "command"), Ok("x".into()));
        let table = toml::Table::new();
        let mut setup = Setup::new(KEYS, "node", &table, 0, &[]);
        assert_eq!(setup.optional::<String>("cwd"), Ok(None));
        assert_eq!(setup.optional::<f64>("chance"), Ok(Some(0.5)));
        assert!(setup.get::<String>("cwd").is_err());
    }

    /// The sketch's own mistakes are errors that say so, never panics.
    #[test]
    fn reading_an_undeclared_key_or_a_default_of_another_type_is_the_sketchs_mistake() {
        let error = read::<f64>("", "chanse").unwrap_err();
        assert!(
            error.starts_with(
                "config key `chanse` is read by the sketch but not declared in its CONFIG"
            ),
            "{error}"
        );
        let error = read::<f64>("chanse = 1.0", "chanse").unwrap_err();
        assert!(error.contains("not declared"), "{error}");
        let error = read::<u32>("", "sound").unwrap_err();
        assert!(
            error.contains("a mistake in the sketch's CONFIG"),
            "{error}"
        );
        let table = toml::Table::new();
        let mut setup = Setup::new(KEYS, "node", &table, 0, &[]);
        assert!(setup.seconds("sound").is_err());
        assert!(setup.seconds("nothing").is_err());
        assert_eq!(setup.seconds("sequence"), Ok(Duration::from_secs(3)));
    }

    #[test]
    fn keys_are_described_in_aligned_columns() {
        assert_eq!(
            describe(KEYS),
            "  chance    0.5       probability that a drawn bit is 0\n\
            \x20 sequence  3         bits drawn per message\n\
            \x20 sound     \"buzz\"    what it says\n\
            \x20 loud      false     whether it shouts\n\
            \x20 env       {}        extra environment variables\n\
            \x20 command   required  the program to run\n\
            \x20 cwd       none      where to run it\n"
        );
        assert_eq!(describe(&[]), "");
    }
}
