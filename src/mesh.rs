//! The mesh file: which nodes exist, what each runs, where it listens and whom it streams to.
//! Parsing and validation only (from a `&str`; [`Mesh::load`] is the thin wrapper that reads
//! the file). Opens no connection.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    ops::RangeInclusive,
    path::Path,
    sync::Arc,
    time::Duration,
};

use serde::Deserialize;
use toml::{
    Spanned,
    de::{DeTable, DeValue},
};

use crate::{
    error::Error,
    link::Peer,
    nats::{self, NatsDef},
    shape::{Policy, Shape},
    sketch::{MAX_SECONDS, seconds_between},
    tls::{Tls, TlsFiles},
};

/// The largest mesh file read, in bytes.
const MAX_FILE: u64 = 16 << 20;

/// The host nodes listen on, and are reached at, when the mesh file does not say.
pub const DEFAULT_HOST: &str = "127.0.0.1";
/// How long a peer has to acknowledge a message, when the mesh file does not say.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest message a node accepts, when the mesh file does not say: 1 MiB.
pub const DEFAULT_MAX_MESSAGE: usize = 1 << 20;
/// How many clients a node serves at once, when the mesh file does not say.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// The shortest `timeout` a node may have, in seconds; the longest is [`MAX_SECONDS`].
pub const MIN_TIMEOUT: f64 = 0.001;
/// The values `max_message` may take, in bytes: room for an error ack, up to 1 GiB.
pub const MAX_MESSAGE_RANGE: RangeInclusive<usize> = 64..=1 << 30;
/// The values `replicas` may take.
pub const REPLICAS_RANGE: RangeInclusive<usize> = 1..=64;
/// The values `max_connections` may take.
pub const MAX_CONNECTIONS_RANGE: RangeInclusive<usize> = 1..=1_000_000;

/// A parsed, validated mesh file.
#[derive(Debug, Clone, PartialEq)]
pub struct Mesh {
    /// Where it was read from, for error messages (`mesh.toml`).
    pub path: String,
    /// The shared secret of the mesh, if any (see [`Mesh::secret`]).
    pub secret: Option<String>,
    /// The `[tls]` table, read: nodes serve `wss://` and clients trust its CA.
    pub tls: Option<Tls>,
    /// The `[nats]` table: the mesh travels through this NATS server (see [`nats::url`]).
    pub nats: Option<NatsDef>,
    /// The nodes, in the file's order, each entry with `expand` replaced by its copies.
    pub nodes: Vec<NodeDef>,
    /// Where each node is in `nodes`, by name, for [`Mesh::node`].
    index: NameIndex,
}

/// Where each node of a mesh is, by name: built on first use, so that finding a node is not a
/// search through a mesh of 100,000. `nodes` is public and may change after: every answer is
/// checked, and a node not found where the index says is searched for.
#[derive(Clone, Default)]
struct NameIndex(std::sync::OnceLock<HashMap<String, usize>>);

impl PartialEq for NameIndex {
    /// Two meshes with the same nodes are equal, whoever has looked a node up.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for NameIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NameIndex")
    }
}

/// One `[[node]]` of the mesh file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeDef {
    /// Unique; what peers call this node.
    pub name: String,
    /// The sketch it runs; its name when not given.
    #[serde(default)]
    pub sketch: Option<String>,
    /// Where it listens and where peers reach it.
    #[serde(default = "default_host")]
    pub host: String,
    /// Its port; none for a node that only sends, like a clock.
    #[serde(default)]
    pub port: Option<u16>,
    /// The peers it streams to, in order: node names, or `ws://` (`wss://`) URLs of nodes
    /// outside the file.
    #[serde(default)]
    pub to: Vec<String>,
    /// Handed to the sketch's setup; each sketch checks its own keys.
    #[serde(default)]
    pub config: toml::Table,
    /// Seed for the sketch's randomness, so runs repeat.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Seconds a peer has to acknowledge a message from this node: [`MIN_TIMEOUT`] to
    /// [`MAX_SECONDS`].
    #[serde(default)]
    pub timeout: Option<f64>,
    /// The largest message this node accepts, in bytes: within [`MAX_MESSAGE_RANGE`].
    #[serde(default)]
    pub max_message: Option<usize>,
    /// How many clients this node serves at once: within [`MAX_CONNECTIONS_RANGE`].
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// How many copies of it run, in one NATS queue group: within [`REPLICAS_RANGE`]. Only
    /// through NATS.
    #[serde(default)]
    pub replicas: Option<usize>,
    /// Timing operators its messages (and ticks) go through before its sketch.
    #[serde(default)]
    pub input: Option<InputDef>,
    /// How many copies of this entry the file asks for (`expand = N`). [`Mesh::parse`]
    /// replaces such an entry by its copies, so a parsed mesh's nodes have none: see
    /// [`NodeDef::copy_of`].
    #[serde(default)]
    pub expand: Option<u64>,
    /// The entry with `expand` this node is a copy of, if it is one.
    #[serde(skip)]
    pub copy_of: Option<CopyOf>,
}

/// Where a node made by `expand` came from: copy `index` of the `count` copies of the entry
/// called `entry`, which is named `entry-index`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyOf {
    /// The entry's own name: in `to`, it means every copy, in order.
    pub entry: Arc<str>,
    /// Which copy, from 1.
    pub index: u32,
    /// How many copies the entry has.
    pub count: u32,
}

/// A node's `[node.input]` table, as written; [`InputDef::shape`] checks it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputDef {
    /// Also run the loop on a tick every this many seconds.
    #[serde(default)]
    pub every: Option<f64>,
    /// Handle a message once this many seconds pass with no newer one.
    #[serde(default)]
    pub debounce: Option<f64>,
    /// Every this many seconds, handle the newest message that came.
    #[serde(default)]
    pub sample: Option<f64>,
    /// At most this many messages a second.
    #[serde(default)]
    pub throttle: Option<f64>,
    /// With `throttle`: how many may pass at once after a quiet time (default 1).
    #[serde(default)]
    pub burst: Option<u32>,
    /// With `throttle`: how many may wait for their turn rather than be refused (default 0).
    #[serde(default)]
    pub queue: Option<usize>,
    /// Hand messages over in batches of this many.
    #[serde(default)]
    pub buffer: Option<usize>,
    /// Or what came within this many seconds of a batch's first message.
    #[serde(default)]
    pub within: Option<f64>,
}

/// The largest batch, throttle burst or throttle queue `[node.input]` may ask for: what a
/// node may hold is bounded by the file, and this bounds the file.
pub const MAX_HELD: usize = 100_000;
/// A batch's size when `within` is given without `buffer`.
pub const BATCH_WITHIN: usize = 1000;
/// The fastest `throttle`, in messages a second.
pub const MAX_RATE: f64 = 1_000_000.0;

impl InputDef {
    /// The shape this table asks for.
    ///
    /// # Errors
    ///
    /// A sentence naming the key at fault: a value out of range, a key that needs another
    /// (`burst` and `queue` need `throttle`), or two operators given together (a node takes
    /// one of `debounce`, `sample`, `throttle` and `buffer`/`within`: each alone decides when
    /// a message reaches the sketch, and chained, a message would have two owners of its ack).
    pub fn shape(&self) -> Result<Shape, String> {
        let seconds = |key: &str, value: Option<f64>| -> Result<Option<Duration>, String> {
            value
                .map(|x| {
                    seconds_between(x, 0.001).map_err(|message| format!("`input.{key}` {message}"))
                })
                .transpose()
        };
        let every = seconds("every", self.every)?;
        let debounce = seconds("debounce", self.debounce)?;
        let sample = seconds("sample", self.sample)?;
        let within = seconds("within", self.within)?;
        let given: Vec<&str> = [
            ("debounce", self.debounce.is_some()),
            ("sample", self.sample.is_some()),
            ("throttle", self.throttle.is_some()),
            ("buffer", self.buffer.is_some() || self.within.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, given)| given.then_some(key))
        .collect();
        if let [first, second, ..] = given[..] {
            return Err(format!(
                "`input` gives both `{first}` and `{second}`: a node takes one of debounce, \
                 sample, throttle and buffer (each decides alone when a message reaches the \
                 sketch; chained, one message would be held twice)"
            ));
        }
        for (key, value) in [
            ("burst", self.burst.is_some()),
            ("queue", self.queue.is_some()),
        ] {
            if value && self.throttle.is_none() {
                return Err(format!(
                    "`input.{key}` needs `throttle` (a rate, in messages a second)"
                ));
            }
        }
        let policy = if let Some(quiet) = debounce {
            Some(Policy::Debounce(quiet))
        } else if let Some(period) = sample {
            Some(Policy::Sample(period))
        } else if let Some(rate) = self.throttle {
            if !(0.001..=MAX_RATE).contains(&rate) {
                return Err(format!(
                    "`input.throttle` must be between 0.001 and {} messages a second, not {}",
                    crate::sketch::number(MAX_RATE),
                    crate::sketch::number(rate)
                ));
            }
            let burst = self.burst.unwrap_or(1);
            if !(1..=MAX_HELD).contains(&(burst as usize)) {
                return Err(format!(
                    "`input.burst` must be between 1 and {MAX_HELD}, not {burst}"
                ));
            }
            let queue = self.queue.unwrap_or(0);
            if queue > MAX_HELD {
                return Err(format!(
                    "`input.queue` must be between 0 and {MAX_HELD}, not {queue}"
                ));
            }
            Some(Policy::Throttle { rate, burst, queue })
        } else if self.buffer.is_some() || within.is_some() {
            let count = self.buffer.unwrap_or(BATCH_WITHIN);
            if !(1..=MAX_HELD).contains(&count) {
                return Err(format!(
                    "`input.buffer` must be between 1 and {MAX_HELD} messages, not {count}"
                ));
            }
            Some(Policy::Buffer { count, within })
        } else {
            None
        };
        Ok(Shape { every, policy })
    }
}

fn default_host() -> String {
    DEFAULT_HOST.to_owned()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MeshFile {
    #[serde(default)]
    secret: Option<Spanned<String>>,
    #[serde(default)]
    tls: Option<Spanned<TlsDef>>,
    nats: Option<Spanned<NatsDef>>,
    #[serde(default)]
    node: Vec<Spanned<NodeDef>>,
}

/// The `[tls]` table, as written: paths of PEM files, relative to the mesh file's directory.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsDef {
    #[serde(default)]
    cert: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    ca: Option<String>,
}

impl TlsDef {
    /// Read the files, named from the directory of the mesh file at `mesh_path`.
    fn load(self, mesh_path: &str) -> Result<Tls, String> {
        let given = [("cert", &self.cert), ("key", &self.key), ("ca", &self.ca)];
        let missing: Vec<String> = given
            .iter()
            .filter(|(_, path)| path.is_none())
            .map(|(key, _)| format!("`tls.{key}`"))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "[tls] needs `cert` and `key` (PEM, for nodes to serve) and `ca` (PEM, to \
                 trust); {} missing",
                match missing.len() {
                    1 => format!("{} is", missing[0]),
                    _ => format!("{} are", missing.join(" and ")),
                }
            ));
        }
        let dir = Path::new(mesh_path).parent().unwrap_or(Path::new(""));
        let path = |key: &str, given: &Option<String>| match given.as_deref() {
            Some("") | None => Err(format!("`tls.{key}` is empty: give the path of a PEM file")),
            Some(path) => Ok(dir.join(path)),
        };
        let files = TlsFiles {
            cert: path("cert", &self.cert)?,
            key: path("key", &self.key)?,
            ca: path("ca", &self.ca)?,
        };
        Tls::load(&files).map_err(|fault| format!("`tls.{}`: {}", fault.key, fault.message))
    }
}

/// Whether a `to` entry is a URL (of a node outside the file) rather than a node's name.
fn is_url(peer: &str) -> bool {
    peer.starts_with("ws://") || peer.starts_with("wss://")
}

impl NodeDef {
    /// A node of sketch `sketch`, named after it, with every other setting at its default.
    pub fn new(sketch: &str) -> Self {
        Self {
            name: sketch.to_owned(),
            sketch: None,
            host: default_host(),
            port: None,
            to: Vec::new(),
            config: toml::Table::new(),
            seed: None,
            timeout: None,
            max_message: None,
            max_connections: None,
            replicas: None,
            input: None,
            expand: None,
            copy_of: None,
        }
    }

    /// The sketch this node runs.
    pub fn sketch(&self) -> &str {
        self.sketch.as_deref().unwrap_or(&self.name)
    }

    /// `ws://host:port`, where peers reach this node, if it listens, without TLS: see
    /// [`Mesh::url`] for the scheme its mesh speaks.
    pub fn url(&self) -> Option<String> {
        let port = self.port?;
        Some(if self.host.contains(':') && !self.host.starts_with('[') {
            format!("ws://[{}]:{port}", self.host)
        } else {
            format!("ws://{}:{port}", self.host)
        })
    }

    /// How long a peer has to acknowledge a message from this node. A value out of range
    /// (which [`Mesh::validate`] refuses) is brought within it rather than trusted.
    pub fn timeout(&self) -> Duration {
        self.timeout.map_or(DEFAULT_TIMEOUT, |seconds| {
            let seconds = if seconds.is_nan() {
                DEFAULT_TIMEOUT.as_secs_f64()
            } else {
                seconds.clamp(MIN_TIMEOUT, MAX_SECONDS)
            };
            Duration::try_from_secs_f64(seconds).unwrap_or(DEFAULT_TIMEOUT)
        })
    }

    /// The largest message this node accepts, in bytes, within [`MAX_MESSAGE_RANGE`].
    pub fn max_message(&self) -> usize {
        self.max_message.map_or(DEFAULT_MAX_MESSAGE, |bytes| {
            bytes.clamp(*MAX_MESSAGE_RANGE.start(), *MAX_MESSAGE_RANGE.end())
        })
    }

    /// How many copies of this node run: 1 unless `replicas` says more.
    pub fn replicas(&self) -> usize {
        self.replicas.map_or(1, |n| {
            n.clamp(*REPLICAS_RANGE.start(), *REPLICAS_RANGE.end())
        })
    }

    /// How many clients this node serves at once, within [`MAX_CONNECTIONS_RANGE`].
    pub fn max_connections(&self) -> usize {
        self.max_connections.map_or(DEFAULT_MAX_CONNECTIONS, |n| {
            n.clamp(*MAX_CONNECTIONS_RANGE.start(), *MAX_CONNECTIONS_RANGE.end())
        })
    }
}

impl Mesh {
    /// A mesh with no nodes, for running a node without a mesh file.
    pub fn empty(path: &str) -> Self {
        Self {
            path: path.to_owned(),
            secret: None,
            tls: None,
            nats: None,
            nodes: Vec::new(),
            index: NameIndex::default(),
        }
    }

    /// Read and validate the mesh file at `path`.
    ///
    /// # Errors
    ///
    /// [`Error::Mesh`] when the file cannot be read, or for anything [`Mesh::parse`] rejects.
    pub fn load(path: &Path) -> Result<Self, Error> {
        use std::io::Read;
        let shown = path.display().to_string();
        let error = |message: String| Error::Mesh {
            path: shown.clone(),
            message,
        };
        // Bounded: a path such as /dev/zero must not take all the memory there is.
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|file| file.take(MAX_FILE + 1).read_to_string(&mut text))
            .map_err(|e| error(format!("cannot read the mesh file: {e}")))?;
        if text.len() as u64 > MAX_FILE {
            return Err(error(format!(
                "the mesh file is over {} MiB: is it a mesh file?",
                MAX_FILE >> 20
            )));
        }
        Self::parse(&text, &shown)
    }

    /// Parse and validate a mesh file's text; `path` names it in errors, with the line and
    /// column of the mistake when it has one (`mesh.toml:3:1: unknown key ...`).
    ///
    /// # Errors
    ///
    /// [`Error::Mesh`] for bad TOML, an unknown key, a value of the wrong type or out of
    /// range, an empty or duplicate name, a host that is no address, two nodes on one address
    /// however it is spelt, a `to` naming a node that is not there, that does not listen, that
    /// listens on port 0 or that is the node itself, a cycle of peers, a secret that cannot
    /// travel in a header, a `[tls]` table that lacks a key or whose PEM files cannot be
    /// read, are not PEM of their kind, or hold a key that is not the certificate's, or a
    /// `[nats]` table without a NATS URL (and with one, a node name or `config.channel` that
    /// cannot be a NATS subject token). With a `[tls]` table, this reads the files it names,
    /// from the directory of `path`.
    pub fn parse(text: &str, path: &str) -> Result<Self, Error> {
        let file: MeshFile = toml::from_str(text).map_err(|error| {
            let (at, message) = describe(text, &error);
            Error::Mesh {
                path: located(path, text, at),
                message,
            }
        })?;
        let secret_at = file.secret.as_ref().map(|secret| secret.span().start);
        let nats_at = file.nats.as_ref().map(|nats| nats.span().start);
        let entry_at: Vec<usize> = file.node.iter().map(|node| node.span().start).collect();
        let entries: Vec<NodeDef> = file.node.into_iter().map(Spanned::into_inner).collect();
        let (nodes, origin) = expand(entries).map_err(|(entry, message)| Error::Mesh {
            path: located(path, text, entry_at.get(entry).copied()),
            message,
        })?;
        // Where each node was written: the entry it is, or is a copy of.
        let node_at: Vec<usize> = origin.iter().map(|&entry| entry_at[entry]).collect();
        let tls = match file.tls {
            None => None,
            Some(table) => {
                let at = table.span().start;
                Some(
                    table
                        .into_inner()
                        .load(path)
                        .map_err(|message| Error::Mesh {
                            path: located(path, text, Some(at)),
                            message,
                        })?,
                )
            }
        };
        let mut mesh = Self {
            path: path.to_owned(),
            secret: file.secret.map(Spanned::into_inner),
            tls,
            nats: file.nats.map(Spanned::into_inner),
            nodes,
            index: NameIndex::default(),
        };
        for node in &mut mesh.nodes {
            // `[::1]` is how a URL spells the IPv6 address `::1`; binding wants it bare.
            if let Some(bare) = node
                .host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                && bare.parse::<Ipv6Addr>().is_ok()
            {
                node.host = bare.to_owned();
            }
        }
        if let Some(fault) = mesh.fault() {
            let at = match fault.node.or(fault.place) {
                Some(index) => node_at.get(index).copied(),
                None if fault.in_nats => nats_at,
                None => secret_at,
            };
            let node = fault.node.map(|index| mesh.nodes[index].name.as_str());
            return Err(Error::Mesh {
                path: located(path, text, at),
                message: prefixed(node, fault.message),
            });
        }
        Ok(mesh)
    }

    /// Check what serde cannot: names, hosts, addresses, ranges, `to` lists and the secret.
    ///
    /// # Errors
    ///
    /// As [`Mesh::parse`].
    pub fn validate(&self) -> Result<(), Error> {
        match self.fault() {
            None => Ok(()),
            Some(fault) => Err(self.error(
                fault.node.map(|index| self.nodes[index].name.as_str()),
                fault.message,
            )),
        }
    }

    /// The first mistake in the mesh, if any, with the index of the node it is in.
    fn fault(&self) -> Option<Fault> {
        let at = |index: usize, message: String| {
            Some(Fault {
                node: Some(index),
                place: Some(index),
                in_nats: false,
                message,
            })
        };
        if let Some(secret) = &self.secret
            && let Err(message) = check_secret(secret)
        {
            return Some(Fault {
                node: None,
                place: None,
                in_nats: false,
                message: format!("`secret` {message}"),
            });
        }
        if let Some(def) = &self.nats
            && let Err(message) = nats::check_url(&def.url)
        {
            return Some(Fault {
                node: None,
                place: None,
                in_nats: true,
                message: format!("`nats.url` {message}"),
            });
        }
        let mut names = HashMap::new();
        // By port, the hosts nodes listen on: a clash needs the same port.
        let mut addresses: HashMap<u16, Vec<(Host, usize)>> = HashMap::new();
        for (index, node) in self.nodes.iter().enumerate() {
            let name = &node.name;
            if name.trim().is_empty() {
                return Some(Fault {
                    node: None,
                    place: Some(index),
                    in_nats: false,
                    message: "a node has an empty name".to_owned(),
                });
            }
            if name.chars().any(char::is_control) {
                return at(index, "the name has a control character".to_owned());
            }
            if self.nats.is_some() {
                // Names and channels become NATS subjects: each must be one token.
                if let Err(why) = nats::check_node(name) {
                    return at(
                        index,
                        format!("the name {why} (the mesh goes through [nats])"),
                    );
                }
                if let Some(channel) = node.config.get("channel").and_then(|c| c.as_str())
                    && let Err(why) = nats::check_channel(channel)
                {
                    return at(index, format!("`config.channel` {why}"));
                }
            }
            if names.insert(name.as_str(), index).is_some() {
                return at(index, "the name is used by another node too".to_owned());
            }
            let host = match Host::parse(&node.host) {
                Ok(host) => host,
                Err(message) => return at(index, message),
            };
            // Port 0 asks the OS for a free port: never a clash.
            if let Some(port) = node.port.filter(|&port| port != 0) {
                let on_port = addresses.entry(port).or_default();
                for (other_host, other) in on_port.iter() {
                    if let Some(why) = host.clash(other_host) {
                        let other = &self.nodes[*other];
                        let ours = address(&node.host, port);
                        let theirs = address(&other.host, port);
                        let message = if ours == theirs {
                            format!("{ours} is also the address of node {:?}", other.name)
                        } else {
                            format!(
                                "{ours} is the same address as {theirs} of node {:?} ({why})",
                                other.name
                            )
                        };
                        return at(index, message);
                    }
                }
                on_port.push((host, index));
            }
            if let Some(timeout) = node.timeout
                && let Err(message) = seconds_between(timeout, MIN_TIMEOUT)
            {
                return at(index, format!("`timeout` {message}"));
            }
            if let Some(bytes) = node.max_message
                && !MAX_MESSAGE_RANGE.contains(&bytes)
            {
                return at(
                    index,
                    format!(
                        "`max_message` must be between {} and {} bytes, not {bytes}",
                        MAX_MESSAGE_RANGE.start(),
                        MAX_MESSAGE_RANGE.end()
                    ),
                );
            }
            if let Some(input) = &node.input
                && let Err(message) = input.shape()
            {
                return at(index, message);
            }
            if let Some(count) = node.max_connections
                && !MAX_CONNECTIONS_RANGE.contains(&count)
            {
                return at(
                    index,
                    format!(
                        "`max_connections` must be between {} and {}, not {count}",
                        MAX_CONNECTIONS_RANGE.start(),
                        MAX_CONNECTIONS_RANGE.end()
                    ),
                );
            }
            if let Some(count) = node.replicas
                && !REPLICAS_RANGE.contains(&count)
            {
                return at(
                    index,
                    format!(
                        "`replicas` must be between {} and {}, not {count}",
                        REPLICAS_RANGE.start(),
                        REPLICAS_RANGE.end()
                    ),
                );
            }
        }
        for (index, node) in self.nodes.iter().enumerate() {
            for peer in &node.to {
                if peer.starts_with("wss://") && self.tls.is_none() {
                    return at(
                        index,
                        format!(
                            "`to` has {peer:?}, a wss:// URL, but the mesh has no [tls] table \
                             to say which certificates to trust"
                        ),
                    );
                }
                if is_url(peer) {
                    continue;
                }
                let message = match names.get(peer.as_str()).map(|&i| &self.nodes[i]) {
                    None => match closest(peer, self.nodes.iter().map(|n| n.name.as_str())) {
                        Some(near) => format!(
                            "`to` names {peer:?}, which is not a node of this mesh (did you mean {near:?}?)"
                        ),
                        None => format!("`to` names {peer:?}, which is not a node of this mesh"),
                    },
                    Some(_) if *peer == node.name => "`to` names the node itself".to_owned(),
                    Some(_) => continue,
                };
                return at(index, message);
            }
        }
        if let Some((index, cycle)) = self.cycle() {
            return at(
                index,
                format!(
                    "its peers wait on each other in a cycle, {}, so no message could ever be \
                     acknowledged",
                    cycle.join(" -> ")
                ),
            );
        }
        None
    }

    /// A cycle of peers (`a -> b -> a`), from the first node in the file that is on one: a
    /// node waits for its peers' acks before it acks, so around a cycle nothing is ever acked.
    fn cycle(&self) -> Option<(usize, Vec<&str>)> {
        #[derive(Clone, Copy, PartialEq)]
        enum Seen {
            No,
            OnPath,
            Done,
        }
        // The nodes `to` entries can name: by name, or by a URL that is a node's address (made
        // only when some `to` has a URL: a large mesh need not spell every address).
        let mut targets: HashMap<&str, usize> = HashMap::with_capacity(self.nodes.len());
        for (index, node) in self.nodes.iter().enumerate() {
            targets.insert(&node.name, index);
        }
        let any_url = self
            .nodes
            .iter()
            .any(|node| node.to.iter().any(|peer| is_url(peer)));
        let urls: HashMap<String, usize> = match any_url {
            true => self
                .nodes
                .iter()
                .enumerate()
                .filter_map(|(index, node)| Some((self.url(node)?, index)))
                .collect(),
            false => HashMap::new(),
        };
        let mut seen = vec![Seen::No; self.nodes.len()];
        for start in 0..self.nodes.len() {
            if seen[start] != Seen::No {
                continue;
            }
            // Depth first without recursion, so that a long chain cannot overflow the stack:
            // each entry is a node and how many of its peers were followed.
            let mut path = vec![(start, 0)];
            seen[start] = Seen::OnPath;
            while let Some(&mut (node, ref mut next)) = path.last_mut() {
                let peers = &self.nodes[node].to;
                let Some(peer) = peers.get(*next) else {
                    seen[node] = Seen::Done;
                    path.pop();
                    continue;
                };
                *next += 1;
                let target = if is_url(peer) {
                    urls.get(peer.trim_end_matches('/'))
                } else {
                    targets.get(peer.as_str())
                };
                let Some(&target) = target else {
                    continue;
                };
                match seen[target] {
                    Seen::No => {
                        seen[target] = Seen::OnPath;
                        path.push((target, 0));
                    }
                    Seen::OnPath => {
                        let from = path.iter().position(|&(n, _)| n == target)?;
                        let mut cycle: Vec<&str> = path[from..]
                            .iter()
                            .map(|&(n, _)| self.nodes[n].name.as_str())
                            .collect();
                        // Start the cycle at the node that comes first in the file.
                        let first = (0..cycle.len())
                            .min_by_key(|&i| path[from + i].0)
                            .unwrap_or(0);
                        cycle.rotate_left(first);
                        cycle.push(cycle[0]);
                        return Some((path[from + first].0, cycle));
                    }
                    Seen::Done => {}
                }
            }
        }
        None
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&NodeDef> {
        let index = self.index.0.get_or_init(|| {
            let mut index = HashMap::with_capacity(self.nodes.len());
            for (at, node) in self.nodes.iter().enumerate() {
                index.entry(node.name.clone()).or_insert(at);
            }
            index
        });
        match index.get(name).and_then(|&at| self.nodes.get(at)) {
            Some(node) if node.name == name => Some(node),
            _ => self.nodes.iter().find(|node| node.name == name),
        }
    }

    /// `ws://host:port`, or `wss://host:port` when the mesh has `[tls]`: where peers reach
    /// `node`, if it listens.
    pub fn url(&self, node: &NodeDef) -> Option<String> {
        let url = node.url()?;
        Some(match self.tls {
            Some(_) => url.replacen("ws://", "wss://", 1),
            None => url,
        })
    }

    /// Where `node`'s peers are, in the order of its `to` list.
    ///
    /// # Errors
    ///
    /// [`Error::Mesh`] when a peer is not in the mesh or does not listen.
    pub fn peers(&self, node: &NodeDef) -> Result<Vec<Peer>, Error> {
        node.to
            .iter()
            .map(|peer| {
                if is_url(peer) {
                    let url = peer.trim_end_matches('/').to_owned();
                    // The secret goes to nodes of the mesh only: a URL gets it when it is
                    // the address of one, in the scheme the mesh speaks.
                    let secret = self
                        .nodes
                        .iter()
                        .any(|n| self.url(n).as_ref() == Some(&url));
                    return Ok(Peer {
                        name: peer.clone(),
                        url: Some(url),
                        secret,
                    });
                }
                self.node(peer)
                    .map(|target| Peer {
                        name: target.name.clone(),
                        // Port 0 is the system's pick: nobody else knows it.
                        url: self.url(target).filter(|_| target.port != Some(0)),
                        secret: true,
                    })
                    .ok_or_else(|| {
                        self.error(
                            Some(&node.name),
                            format!("`to` names {peer:?}, which is not a node of this mesh"),
                        )
                    })
            })
            .collect()
    }

    /// Check that `node`, run in a process of its own, can reach every peer: a peer with no
    /// port (or port 0) is reached only by the nodes of its own `arduino up`. And that it is
    /// not named after an entry with `expand`: such a process is one of the copies.
    ///
    /// # Errors
    ///
    /// [`Error::Mesh`] naming the first peer that has no address, or the entry's copies.
    pub fn reachable_alone(&self, node: &NodeDef) -> Result<(), Error> {
        if let Some(copy) = self.node(&format!("{}-1", node.name))
            && let Some(of) = &copy.copy_of
            && *of.entry == *node.name
        {
            return Err(self.error(
                Some(&node.name),
                format!(
                    "the entry has `expand = {}`: run one of its copies, {1}-1 ... {1}-{0}, \
                     with --name",
                    of.count, node.name
                ),
            ));
        }
        for peer in &node.to {
            let message = match self.node(peer).map(|target| target.port) {
                Some(None) => format!(
                    "`to` names {peer:?}, which has no port: only the nodes of its own \
                     `arduino up` reach it (give {peer:?} a port to reach it from here)"
                ),
                Some(Some(0)) => format!(
                    "`to` names {peer:?}, which has port 0: the system would pick its port, \
                     so no peer could find it (give {peer:?} a port)"
                ),
                _ => continue,
            };
            return Err(self.error(Some(&node.name), message));
        }
        Ok(())
    }

    /// The mesh's secret: `ARDUINO_SECRET` when given (`env_secret`), else the file's.
    pub fn secret(&self, env_secret: Option<String>) -> Option<String> {
        env_secret
            .filter(|s| !s.is_empty())
            .or_else(|| self.secret.clone())
    }

    pub(crate) fn error(&self, node: Option<&str>, message: impl std::fmt::Display) -> Error {
        Error::Mesh {
            path: self.path.clone(),
            message: match node {
                Some(node) => format!("node {node:?}: {message}"),
                None => message.to_string(),
            },
        }
    }
}

/// The most copies one entry may ask for with `expand`.
pub const MAX_EXPAND: u64 = 1_000_000;
/// The most nodes a mesh may have once its entries are expanded, and the most links (names in
/// `to` lists): what a mesh holds is bounded by its file, and this bounds the file.
pub const MAX_NODES: usize = 1_000_000;
/// See [`MAX_NODES`].
pub const MAX_LINKS: usize = 1_000_000;
/// What stands for a copy's number in its `to` and `config` strings.
const COPY_NUMBER: &str = "{i}";

/// The entries with `expand`, by name: the index of the entry and how many copies it has.
type Groups<'a> = HashMap<&'a str, (usize, u32)>;

/// The mesh file's entries, each one that has `expand = N` replaced by its N copies, and for
/// each node the index of the entry it came from.
///
/// Copy `i` (from 1) of entry `NAME` is node `NAME-i`, running the entry's sketch: its port is
/// the entry's plus `i - 1` (port 0 stays 0), its seed the entry's plus `i - 1`, and `{i}` in
/// its `to` and `config` strings is `i`. In any `to` list, the name of an entry with `expand`
/// means every copy of it, in order; a name made with `{i}` means one node.
///
/// # Errors
///
/// The index of the entry at fault, and what is wrong, after the node's name.
fn expand(entries: Vec<NodeDef>) -> Result<(Vec<NodeDef>, Vec<usize>), (usize, String)> {
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut groups: Groups = HashMap::new();
    let mut nodes = 0usize;
    for (index, entry) in entries.iter().enumerate() {
        let fail = |message: String| Err((index, prefixed(Some(&entry.name), message)));
        if let Some(other) = names.insert(&entry.name, index)
            && (entry.expand.is_some() || entries[other].expand.is_some())
        {
            return fail("the name is used by another node too".to_owned());
        }
        let Some(count) = entry.expand else {
            if let Some(key) = placeholder_in(entry) {
                return fail(format!(
                    "{key} uses `{{i}}`, the number of a copy, but the node has no `expand`"
                ));
            }
            nodes += 1;
            if nodes > MAX_NODES {
                return fail(format!("the mesh expands to more than {MAX_NODES} nodes"));
            }
            continue;
        };
        if entry.name.trim().is_empty() {
            return Err((index, "a node has an empty name".to_owned()));
        }
        if !(1..=MAX_EXPAND).contains(&count) {
            return fail(format!(
                "`expand` must be between 1 and {MAX_EXPAND} copies, not {count}"
            ));
        }
        if entry.name.contains(COPY_NUMBER) {
            return fail(format!(
                "`name` takes no `{{i}}`: the copies are named after the entry, {0}-1 ... {0}-{count}",
                entry.name
            ));
        }
        if let Some(port) = entry.port.filter(|&port| port != 0)
            && u64::from(port) + count - 1 > u64::from(u16::MAX)
        {
            return fail(format!(
                "`port = {port}` with `expand = {count}` needs ports up to {}, past 65535",
                u64::from(port) + count - 1
            ));
        }
        groups.insert(&entry.name, (index, count as u32));
        nodes += count as usize;
        if nodes > MAX_NODES {
            return fail(format!("the mesh expands to more than {MAX_NODES} nodes"));
        }
    }
    // A name that a copy has too would be two nodes, and the name of an entry with `expand`
    // that a copy has too would mean both that copy and every copy of the entry.
    for (index, entry) in entries.iter().enumerate() {
        if let Some((of, number)) = copy_name(&groups, &entry.name) {
            return Err((
                index,
                prefixed(
                    Some(&entry.name),
                    format!(
                        "the name is also that of copy {number} of {of:?} (expand = {})",
                        groups[of].1
                    ),
                ),
            ));
        }
    }
    let mut links = 0usize;
    for (index, entry) in entries.iter().enumerate() {
        let each: usize = entry
            .to
            .iter()
            .map(|peer| {
                groups
                    .get(peer.as_str())
                    .map_or(1, |&(_, count)| count as usize)
            })
            .sum();
        links = links.saturating_add(each.saturating_mul(entry.expand.unwrap_or(1) as usize));
        if links > MAX_LINKS {
            return Err((
                index,
                prefixed(
                    Some(&entry.name),
                    format!("the mesh expands to more than {MAX_LINKS} links"),
                ),
            ));
        }
    }
    let exists = |name: &str| {
        names.contains_key(name) && !groups.contains_key(name) || copy_name(&groups, name).is_some()
    };
    let mut expanded = Vec::with_capacity(nodes);
    let mut origin = Vec::with_capacity(nodes);
    for (index, entry) in entries.iter().enumerate() {
        let Some(count) = entry.expand else {
            let mut node = entry.clone();
            node.to = peers_of(&entry.to, None, &groups);
            expanded.push(node);
            origin.push(index);
            continue;
        };
        let of: Arc<str> = Arc::from(entry.name.as_str());
        let numbered_config = entry.config.values().any(mentions_copy_number);
        for number in 1..=count {
            let to = peers_of(&entry.to, Some(number), &groups);
            let name = format!("{}-{number}", entry.name);
            for (peer, written) in to.iter().zip(&entry.to) {
                if written.contains(COPY_NUMBER) && !is_url(peer) && !exists(peer) {
                    let mut message = format!(
                        "`to` names {peer:?} (from {written:?}), which is not a node of this mesh"
                    );
                    if let Some((base, _)) = peer.rsplit_once('-')
                        && let Some(&(_, count)) = groups.get(base)
                    {
                        message.push_str(&format!(
                            " ({base:?} expands to {base}-1 ... {base}-{count})"
                        ));
                    }
                    return Err((index, prefixed(Some(&name), message)));
                }
            }
            let config = if numbered_config {
                entry
                    .config
                    .iter()
                    .map(|(key, value)| (key.clone(), with_copy_number(value, number)))
                    .collect()
            } else {
                entry.config.clone()
            };
            expanded.push(NodeDef {
                name,
                sketch: Some(entry.sketch().to_owned()),
                host: entry.host.clone(),
                // Within u16: checked above.
                port: entry
                    .port
                    .map(|port| port.saturating_add(if port == 0 { 0 } else { number as u16 - 1 })),
                to,
                config,
                seed: entry.seed.map(|seed| seed.wrapping_add(number - 1)),
                timeout: entry.timeout,
                max_message: entry.max_message,
                max_connections: entry.max_connections,
                input: entry.input.clone(),
                replicas: entry.replicas,
                expand: None,
                copy_of: Some(CopyOf {
                    entry: of.clone(),
                    index: number as u32,
                    count: count as u32,
                }),
            });
            origin.push(index);
        }
    }
    Ok((expanded, origin))
}

/// `to` as one node of an entry has it: `{i}` replaced by `number` for a copy, and the name
/// of an entry with `expand` by the names of its copies.
fn peers_of(to: &[String], number: Option<u64>, groups: &Groups) -> Vec<String> {
    let mut peers = Vec::with_capacity(to.len());
    for peer in to {
        if let Some(number) = number
            && peer.contains(COPY_NUMBER)
        {
            peers.push(peer.replace(COPY_NUMBER, &number.to_string()));
        } else if let Some(&(_, count)) = groups.get(peer.as_str()) {
            peers.extend((1..=count).map(|copy| format!("{peer}-{copy}")));
        } else {
            peers.push(peer.clone());
        }
    }
    peers
}

/// The entry with `expand` and the copy number `name` is the name of, if it is a copy's.
fn copy_name<'a>(groups: &Groups<'a>, name: &str) -> Option<(&'a str, u32)> {
    let (base, number) = name.rsplit_once('-')?;
    let (&of, &(_, count)) = groups.get_key_value(base)?;
    if number.starts_with('0') || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let number: u32 = number.parse().ok()?;
    (1..=count).contains(&number).then_some((of, number))
}

/// Where an entry without `expand` uses `{i}`, as the key to name in an error.
fn placeholder_in(entry: &NodeDef) -> Option<String> {
    if entry.name.contains(COPY_NUMBER) {
        return Some("`name`".to_owned());
    }
    if entry.to.iter().any(|peer| peer.contains(COPY_NUMBER)) {
        return Some("`to`".to_owned());
    }
    entry
        .config
        .iter()
        .find(|(_, value)| mentions_copy_number(value))
        .map(|(key, _)| format!("`config.{key}`"))
}

/// Whether `{i}` is in a string of `value`, however deep.
fn mentions_copy_number(value: &toml::Value) -> bool {
    match value {
        toml::Value::String(text) => text.contains(COPY_NUMBER),
        toml::Value::Array(values) => values.iter().any(mentions_copy_number),
        toml::Value::Table(table) => table.values().any(mentions_copy_number),
        _ => false,
    }
}

/// `value` with `{i}` in its strings, however deep, replaced by `number`.
fn with_copy_number(value: &toml::Value, number: u64) -> toml::Value {
    match value {
        toml::Value::String(text) => {
            toml::Value::String(text.replace(COPY_NUMBER, &number.to_string()))
        }
        toml::Value::Array(values) => toml::Value::Array(
            values
                .iter()
                .map(|value| with_copy_number(value, number))
                .collect(),
        ),
        toml::Value::Table(table) => toml::Value::Table(
            table
                .iter()
                .map(|(key, value)| (key.clone(), with_copy_number(value, number)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// A mistake found by [`Mesh::validate`]: what is wrong, the node it names (by index), and
/// the node it is in (the same, but for a node that has no name to give).
struct Fault {
    node: Option<usize>,
    place: Option<usize>,
    /// It is about the `[nats]` table.
    in_nats: bool,
    message: String,
}

/// `path:LINE:COLUMN` for byte `at` of `text`, or `path` when there is no place to point at.
fn located(path: &str, text: &str, at: Option<usize>) -> String {
    let Some(before) = at.and_then(|at| text.get(..at)) else {
        return path.to_owned();
    };
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    format!("{path}:{line}:{column}")
}

/// `message`, after `node "NAME": ` when it is about a node.
fn prefixed(node: Option<&str>, message: impl std::fmt::Display) -> String {
    match node {
        Some(node) => format!("node {node:?}: {message}"),
        None => message.to_string(),
    }
}

/// What the keys of a node, and the top-level keys, hold, in words.
fn expected_of(key: &str) -> Option<&'static str> {
    Some(match key {
        "name" | "sketch" | "secret" => "a string",
        "host" => "a host name or IP address, as a string",
        "port" => "a port number (0 to 65535)",
        "to" => "a list of node names or ws:// URLs",
        "tls" => "a table of `cert`, `key` and `ca`, paths of PEM files",
        "cert" | "key" | "ca" => "the path of a PEM file, as a string",
        "config" => "a table of the sketch's settings",
        "seed" => "a whole number, 0 or more",
        "timeout" => "a number of seconds",
        "max_message" => "a number of bytes",
        "max_connections" | "replicas" => "a whole number",
        "input" => "a table of timing operators (every, debounce, sample, throttle, buffer)",
        "expand" => "a whole number of copies",
        "node" => "a list of [[node]] tables",
        "nats" => "a table with the NATS server's `url`",
        _ => return None,
    })
}

/// Serde's name for a type, in words.
fn in_words(expected: &str) -> String {
    match expected {
        "u8" => "a whole number (0 to 255)".to_owned(),
        "u16" => "a whole number (0 to 65535)".to_owned(),
        "u32" => "a whole number (0 to 4294967295)".to_owned(),
        "u64" | "u128" | "usize" => "a whole number, 0 or more".to_owned(),
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number".to_owned(),
        "f32" | "f64" => "a number".to_owned(),
        "a boolean" => "true or false".to_owned(),
        "a sequence" => "a list".to_owned(),
        "a map" => "a table".to_owned(),
        other if other.starts_with("struct ") => "a table".to_owned(),
        other => other.to_owned(),
    }
}

/// The words between backquotes in `text`, in order.
fn quoted(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// Where byte `at` of a mesh file is: in which node (its index and name, if it has one), and
/// under which key (a dotted path within the node, or from the top) with its value's text.
#[derive(Default)]
struct Place<'t> {
    node: Option<(usize, Option<String>)>,
    key: Option<(String, &'t str)>,
}

impl<'t> Place<'t> {
    fn find(text: &'t str, at: usize) -> Self {
        let mut place = Self::default();
        let Ok(document) = DeTable::parse(text) else {
            return place;
        };
        for (key, value) in document.get_ref() {
            match (key.get_ref().as_ref(), value.get_ref()) {
                ("node", DeValue::Array(nodes)) => {
                    for (index, node) in nodes.iter().enumerate() {
                        let DeValue::Table(table) = node.get_ref() else {
                            continue;
                        };
                        let found = Self::key_in(text, table, at);
                        if found.is_some() || node.span().contains(&at) {
                            let name = table
                                .get("name")
                                .and_then(|name| name.get_ref().as_str())
                                .map(str::to_owned);
                            place.node = Some((index, name));
                            place.key = found;
                            return place;
                        }
                    }
                }
                _ => {
                    let mut one = DeTable::new();
                    one.insert(key.clone(), value.clone());
                    if let Some(found) = Self::key_in(text, &one, at) {
                        place.key = Some(found);
                        return place;
                    }
                }
            }
        }
        place
    }

    /// The key of `table` (or of its tables, as a dotted path) whose key or value is at `at`.
    fn key_in(text: &'t str, table: &DeTable<'_>, at: usize) -> Option<(String, &'t str)> {
        for (key, value) in table {
            let name = key.get_ref().as_ref();
            if let DeValue::Table(inner) = value.get_ref()
                && let Some((path, value)) = Self::key_in(text, inner, at)
            {
                return Some((format!("{name}.{path}"), value));
            }
            let span = value.span();
            if key.span().contains(&at) || span.contains(&at) || span.start == at {
                return Some((name.to_owned(), text.get(span).unwrap_or("")));
            }
        }
        None
    }
}

/// A TOML or serde error about a mesh file, as one line a person reads, and the byte it is
/// about.
fn describe(text: &str, error: &toml::de::Error) -> (Option<usize>, String) {
    let raw = error.message().lines().next().unwrap_or("").trim();
    let Some(span) = error.span() else {
        return (None, raw.to_owned());
    };
    let at = span.start;
    if raw == "duplicate key" {
        let key = text.get(span).unwrap_or("").trim();
        return (Some(at), format!("`{}` is given twice", shown(key)));
    }
    let place = Place::find(text, at);
    let name = place.node.as_ref().and_then(|(_, name)| name.as_deref());
    let in_node = place.node.is_some();
    let message = if let Some(rest) = raw.strip_prefix("unknown field ") {
        let words = quoted(rest);
        let (key, known) = words.split_first().map_or(("", &[][..]), |(k, r)| (*k, r));
        let key = match &place.key {
            Some((path, _)) if path.ends_with(key) => path.as_str(),
            _ => key,
        };
        let whose = match (in_node, name) {
            (true, Some(name)) => format!(" in node {name:?}"),
            (true, None) => " in a [[node]]".to_owned(),
            (false, _) => String::new(),
        };
        let hint = match closest(key.rsplit('.').next().unwrap_or(key), known.iter().copied()) {
            Some(near) => format!(" (did you mean `{near}`?)"),
            None if known.is_empty() => String::new(),
            None => format!(" (the keys are: {})", known.join(", ")),
        };
        format!("unknown key `{}`{whose}{hint}", shown(key))
    } else if let Some(field) = raw.strip_prefix("missing field ") {
        let field = quoted(field).first().copied().unwrap_or(field);
        if in_node && field == "name" {
            "a [[node]] has no `name`".to_owned()
        } else {
            prefixed(name, format!("`{field}` is missing"))
        }
    } else if raw.starts_with("invalid type: ") || raw.starts_with("invalid value: ") {
        let expected = raw.rsplit(", expected ").next().unwrap_or("");
        match &place.key {
            Some((key, value)) => {
                let words = (!key.contains('.'))
                    .then(|| expected_of(key))
                    .flatten()
                    .map_or_else(|| in_words(expected), str::to_owned);
                let value = value.trim();
                prefixed(
                    name,
                    format!("`{key}` must be {words}, not {}", shown(value)),
                )
            }
            None => prefixed(name, format!("a value must be {}", in_words(expected))),
        }
    } else {
        prefixed(name, raw)
    };
    (Some(at), message.replace(char::is_control, " "))
}

/// Whether `secret` can be a mesh's secret: it travels in an HTTP header
/// (`Authorization: Bearer SECRET`), so it must be printable ASCII, not empty, with no spaces
/// around it. The command line checks `ARDUINO_SECRET` with this too.
///
/// # Errors
///
/// What is wrong, worded to follow the secret's name: `is empty`, `starts or ends with a
/// space`, ...
pub fn check_secret(secret: &str) -> Result<(), String> {
    if secret.is_empty() {
        Err("is empty".to_owned())
    } else if secret.trim() != secret {
        Err("starts or ends with a space, which a header would lose".to_owned())
    } else if secret.chars().any(char::is_control) {
        Err(
            "has a control character (a newline or a tab, say), which cannot travel in a header"
                .to_owned(),
        )
    } else if !secret.is_ascii() {
        Err("has a character that is not ASCII, which cannot travel in a header".to_owned())
    } else {
        Ok(())
    }
}

/// `host:port`, with IPv6 addresses in brackets.
fn address(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A node's host, reduced to what decides whether two nodes would listen on the same address,
/// without asking DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    Ip(IpAddr),
    /// `localhost`, which may mean 127.0.0.1 or ::1.
    Localhost,
    /// Any other name, lower-cased, without a final dot.
    Name(String),
}

impl Host {
    /// `host` as a mesh file gives it: an IPv4 or IPv6 address (in brackets or not), or a name.
    fn parse(host: &str) -> Result<Self, String> {
        let bare = host
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'));
        match bare {
            Some(bare) => {
                if let Ok(ip) = bare.parse::<Ipv6Addr>() {
                    return Ok(Self::Ip(IpAddr::V6(ip).to_canonical()));
                }
            }
            None => {
                if let Ok(ip) = host.parse::<IpAddr>() {
                    return Ok(Self::Ip(ip.to_canonical()));
                }
            }
        }
        let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        let label_ok = |label: &str| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if host.is_empty() {
            Err("`host` is empty".to_owned())
        } else if bare.is_some() || host.contains(':') {
            Err(format!("`host` {:?} is not an IPv6 address", shown(host)))
        } else if name.len() > 253 || !name.split('.').all(label_ok) {
            Err(format!(
                "`host` must be an IP address or a host name (letters, digits, `-` and dots), not {:?}",
                shown(host)
            ))
        } else if name == "localhost" {
            Ok(Self::Localhost)
        } else {
            Ok(Self::Name(name))
        }
    }

    /// Why a node on `self` and one on `other`, on the same port, would clash, if they would.
    fn clash(&self, other: &Self) -> Option<&'static str> {
        let any_v4 = Self::Ip(Ipv4Addr::UNSPECIFIED.into());
        let any = Self::Ip(Ipv6Addr::UNSPECIFIED.into());
        let v4 = |host: &Self| matches!(host, Self::Ip(IpAddr::V4(_)) | Self::Localhost);
        let loopback = |host: &Self| {
            *host == Self::Ip(Ipv4Addr::LOCALHOST.into())
                || *host == Self::Ip(Ipv6Addr::LOCALHOST.into())
        };
        let either = |test: &dyn Fn(&Self, &Self) -> bool| test(self, other) || test(other, self);
        if self == other {
            Some("the same host spelt another way")
        } else if *self == any || *other == any {
            Some(":: listens on every address of the machine")
        } else if either(&|a, b| *a == any_v4 && v4(b)) {
            Some("0.0.0.0 listens on every IPv4 address of the machine")
        } else if either(&|a, b| *a == Self::Localhost && loopback(b)) {
            Some("localhost is the loopback address")
        } else {
            None
        }
    }
}

/// `text` cut short for an error message.
pub(crate) fn shown(text: &str) -> String {
    match text.char_indices().nth(40) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}

/// The candidate closest to `word` by edit distance (a swap of two neighbours counting as
/// one edit), when it is close enough to be what was meant.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let most = match word.chars().count() {
        0..=2 => 1,
        3..=5 => 2,
        _ => 3,
    };
    candidates
        .into_iter()
        .map(|candidate| (distance(word, candidate), candidate))
        .filter(|&(d, candidate)| d <= most && d < candidate.chars().count())
        .min_by_key(|&(d, _)| d)
        .map(|(_, candidate)| candidate)
}

/// Edit distance between `a` and `b`: insertions, deletions, substitutions and swaps of two
/// neighbours (optimal string alignment).
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut rows = vec![vec![0; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Mesh, String> {
        Mesh::parse(text, "mesh.toml").map_err(|e| e.to_string())
    }

    /// As [`parse`], without the line and column: for tests of what the message says.
    fn bare(text: &str) -> Result<Mesh, String> {
        parse(text).map_err(|error| match error.split_once(": ") {
            Some((place, rest)) if place.starts_with("mesh.toml") => format!("mesh.toml: {rest}"),
            _ => error,
        })
    }

    /// A `[tls]` table needs all its keys; they are checked before any file is read.
    #[test]
    fn a_tls_table_needs_cert_key_and_ca() {
        assert_eq!(
            parse("[tls]\ncert = \"node.pem\"\n").unwrap_err(),
            "mesh.toml:1:1: [tls] needs `cert` and `key` (PEM, for nodes to serve) and `ca` \
             (PEM, to trust); `tls.key` and `tls.ca` are missing"
        );
        let error = parse("[tls]\ncert = \"c\"\nkey = \"k\"\n").unwrap_err();
        assert!(error.ends_with("`tls.ca` is missing"), "{error}");
        let error = parse("[tls]\ncert = \"\"\nkey = \"k\"\nca = \"c\"\n").unwrap_err();
        assert!(error.contains("`tls.cert` is empty"), "{error}");
        let error = parse("[tls]\ncert = \"c\"\nkey = \"k\"\nca = \"c\"\npem = 1\n").unwrap_err();
        assert!(error.contains("unknown key `tls.pem`"), "{error}");
    }

    /// Without `[tls]`, nodes are reached on `ws://`, and a `wss://` peer is refused: nothing
    /// would say which certificates to trust.
    #[test]
    fn wss_peers_need_a_tls_table() {
        let mesh = parse(DEMO).unwrap();
        let iopin = mesh.node("iopin").unwrap();
        assert_eq!(mesh.url(iopin).as_deref(), Some("ws://127.0.0.1:8765"));
        let error = bare("[[node]]\nname = \"iopin\"\nto = [\"wss://10.0.0.1:1\"]\n").unwrap_err();
        assert_eq!(
            error,
            "mesh.toml: node \"iopin\": `to` has \"wss://10.0.0.1:1\", a wss:// URL, but the \
             mesh has no [tls] table to say which certificates to trust"
        );
    }

    const DEMO: &str = r#"
        [[node]]
        name = "clock"
        to = ["iopin"]
        [[node]]
        name = "iopin"
        port = 8765
        to = ["buzzer"]
        [node.config]
        chance = 0.6
        [[node]]
        name = "buzzer"
        port = 8766
    "#;

    #[test]
    fn the_demo_parses_with_defaults() {
        let mesh = parse(DEMO).unwrap();
        assert_eq!(mesh.nodes.len(), 3);
        let iopin = mesh.node("iopin").unwrap();
        assert_eq!(iopin.sketch(), "iopin");
        assert_eq!(iopin.host, "127.0.0.1");
        assert_eq!(iopin.url().as_deref(), Some("ws://127.0.0.1:8765"));
        assert_eq!(
            iopin.config.get("chance").and_then(|v| v.as_float()),
            Some(0.6)
        );
        assert_eq!(iopin.timeout(), DEFAULT_TIMEOUT);
        let peers = mesh.peers(mesh.node("clock").unwrap()).unwrap();
        assert_eq!(
            peers,
            vec![Peer {
                name: "iopin".into(),
                url: Some("ws://127.0.0.1:8765".into()),
                secret: true,
            }]
        );
    }

    #[test]
    fn bad_toml_names_the_file_line_and_column() {
        let error = parse("[[node]]\nname = \"clock\nport = 1").unwrap_err();
        assert!(error.starts_with("mesh.toml:2:"), "{error}");
        assert!(!error.contains('\n'), "{error}");
        let error = parse("[[node]]\nname = \"a\"\nname = \"b\"\n").unwrap_err();
        assert_eq!(error, "mesh.toml:3:1: `name` is given twice");
    }

    #[test]
    fn a_misspelt_key_is_refused_with_a_suggestion() {
        let error = parse(
            "[[node]]\nname = \"buzzer\"\nport = 8766\n\n[[node]]\nname = \"iopin\"\nprot = 8765\n",
        )
        .unwrap_err();
        assert_eq!(
            error,
            "mesh.toml:7:1: unknown key `prot` in node \"iopin\" (did you mean `port`?)"
        );
        let error = parse("sekret = \"x\"\n").unwrap_err();
        assert_eq!(
            error,
            "mesh.toml:1:1: unknown key `sekret` (did you mean `secret`?)"
        );
        let error = parse("[[node]]\nname = \"a\"\ncolour = 1\n").unwrap_err();
        assert!(
            error.starts_with("mesh.toml:3:1: unknown key `colour` in node \"a\" (the keys are: name, sketch, host, port, to, config"),
            "{error}"
        );
        let error = parse("[[node]]\nprot = 1\nname = \"a\"\n").unwrap_err();
        assert_eq!(
            error,
            "mesh.toml:2:1: unknown key `prot` in node \"a\" (did you mean `port`?)"
        );
        let error = parse("[[node]]\nport = 1\n").unwrap_err();
        assert_eq!(error, "mesh.toml:1:1: a [[node]] has no `name`");
    }

    #[test]
    fn a_value_of_the_wrong_type_is_refused_in_words() {
        for (line, expected) in [
            (
                "port = \"8765\"",
                "3:8: node \"a\": `port` must be a port number (0 to 65535), not \"8765\"",
            ),
            (
                "port = 70000",
                "3:8: node \"a\": `port` must be a port number (0 to 65535), not 70000",
            ),
            (
                "port = -1",
                "3:8: node \"a\": `port` must be a port number (0 to 65535), not -1",
            ),
            (
                "to = \"b\"",
                "3:6: node \"a\": `to` must be a list of node names or ws:// URLs, not \"b\"",
            ),
            (
                "to = [\"b\", 2]",
                "3:12: node \"a\": `to` must be a list of node names or ws:// URLs, not [\"b\", 2]",
            ),
            (
                "timeout = \"5s\"",
                "3:11: node \"a\": `timeout` must be a number of seconds, not \"5s\"",
            ),
            (
                "seed = -1",
                "3:8: node \"a\": `seed` must be a whole number, 0 or more, not -1",
            ),
            (
                "max_message = 1.5",
                "3:15: node \"a\": `max_message` must be a number of bytes, not 1.5",
            ),
            (
                "config = 3",
                "3:10: node \"a\": `config` must be a table of the sketch's settings, not 3",
            ),
        ] {
            let error = parse(&format!("[[node]]\nname = \"a\"\n{line}\n")).unwrap_err();
            assert_eq!(error, format!("mesh.toml:{expected}"), "{line}");
        }
        let error = parse("[[node]]\nname = 3\n").unwrap_err();
        assert_eq!(error, "mesh.toml:2:8: `name` must be a string, not 3");
        let error = parse("secret = [1,\n2]\n").unwrap_err();
        assert_eq!(
            error,
            "mesh.toml:1:10: `secret` must be a string, not [1, 2]"
        );
        let error = parse("node = 3\n").unwrap_err();
        assert_eq!(
            error,
            "mesh.toml:1:8: `node` must be a list of [[node]] tables, not 3"
        );
        let error = parse(&format!(
            "[[node]]\nname = \"a\"\nhost = \"{}\"\nport = \"x\"\n",
            "h".repeat(5000)
        ))
        .unwrap_err();
        assert!(error.len() < 200, "{error}");
    }

    #[test]
    fn mistakes_past_the_parser_point_at_their_node() {
        let error = parse("[[node]]\nname = \"a\"\nport = 9\n\n[[node]]\nname = \"b\"\nport = 9\n")
            .unwrap_err();
        assert_eq!(
            error,
            "mesh.toml:5:1: node \"b\": 127.0.0.1:9 is also the address of node \"a\""
        );
        let error = parse("# the mesh\nsecret = \" x\"\n").unwrap_err();
        assert!(
            error.starts_with("mesh.toml:2:10: `secret` starts"),
            "{error}"
        );
        let error = parse("[[node]]\nname = \" \"\n").unwrap_err();
        assert_eq!(error, "mesh.toml:1:1: a node has an empty name");
        // The same checks on a mesh changed in code name no line.
        let mut mesh = parse("[[node]]\nname = \"a\"\n").unwrap();
        mesh.nodes[0].timeout = Some(0.0);
        assert!(
            mesh.validate()
                .unwrap_err()
                .to_string()
                .starts_with("mesh.toml: node \"a\": `timeout`")
        );
    }

    const PAIRS: &str = r#"
        [[node]]
        name = "hub"
        sketch = "buzzer"
        port = 9000
        to = []
        [[node]]
        name = "tick"
        sketch = "clock"
        expand = 3
        to = ["pin-{i}"]
        [[node]]
        name = "pin"
        sketch = "iopin"
        expand = 3
        seed = 7
        to = ["bell-{i}", "hub"]
        [node.config]
        sequence = 2
        [[node]]
        name = "bell"
        sketch = "buzzer"
        expand = 3
        port = 20000
        [node.config]
        sound = "bell {i}"
        [node.config.deep]
        list = ["x{i}", 1]
        [[node]]
        name = "watcher"
        sketch = "iopin"
        to = ["bell"]
    "#;

    #[test]
    fn an_entry_with_expand_becomes_numbered_copies() {
        let mesh = parse(PAIRS).unwrap();
        let names: Vec<&str> = mesh.nodes.iter().map(|node| node.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "hub", "tick-1", "tick-2", "tick-3", "pin-1", "pin-2", "pin-3", "bell-1", "bell-2",
                "bell-3", "watcher"
            ]
        );
        let pin = mesh.node("pin-2").unwrap();
        assert_eq!(pin.sketch(), "iopin");
        assert_eq!(pin.to, ["bell-2", "hub"]);
        assert_eq!(pin.seed, Some(8));
        assert_eq!(pin.port, None);
        assert_eq!(pin.config["sequence"].as_integer(), Some(2));
        assert_eq!(pin.expand, None);
        assert_eq!(
            pin.copy_of,
            Some(CopyOf {
                entry: "pin".into(),
                index: 2,
                count: 3
            })
        );
        assert_eq!(mesh.node("tick-3").unwrap().to, ["pin-3"]);
        // Ports count up from the entry's; `{i}` in config strings, however deep, is the number.
        let bell = mesh.node("bell-3").unwrap();
        assert_eq!(bell.url().as_deref(), Some("ws://127.0.0.1:20002"));
        assert_eq!(bell.config["sound"].as_str(), Some("bell 3"));
        assert_eq!(
            bell.config["deep"]["list"],
            toml::Value::Array(vec!["x3".into(), 1.into()])
        );
        // An entry's own name in `to` means every copy, in order; copies of a seedless entry
        // have no seed.
        assert_eq!(
            mesh.node("watcher").unwrap().to,
            ["bell-1", "bell-2", "bell-3"]
        );
        assert_eq!(mesh.node("tick-1").unwrap().seed, None);
        assert_eq!(mesh.node("hub").unwrap().copy_of, None);
        // Port 0 stays 0: the system picks each copy's port.
        let mesh =
            parse("[[node]]\nname = \"b\"\nsketch = \"buzzer\"\nexpand = 2\nport = 0\n").unwrap();
        assert_eq!(mesh.nodes[1].port, Some(0));
        // The last port there is may be a copy's.
        parse("[[node]]\nname = \"b\"\nexpand = 2\nport = 65534\n").unwrap();
    }

    /// The example of many nodes loads and sets up: 17,001 nodes from six entries.
    #[test]
    fn the_example_of_many_nodes_loads() {
        let mesh = Mesh::parse(include_str!("../examples/many.toml"), "many.toml").unwrap();
        assert_eq!(mesh.nodes.len(), 17_001);
        crate::sketches::builtin().check(&mesh).unwrap();
        let bell = mesh.node("bell-4321").unwrap();
        assert_eq!(bell.config["sound"].as_str(), Some("bell 4321 rings"));
    }

    #[test]
    fn expansions_that_cannot_be_are_refused_at_their_entry() {
        for (text, expected) in [
            (
                "[[node]]\nname = \"a\"\nport = 1\n\n[[node]]\nname = \"s\"\nexpand = 0\n",
                "mesh.toml:5:1: node \"s\": `expand` must be between 1 and 1000000 copies, not 0",
            ),
            (
                "[[node]]\nname = \"s\"\nexpand = 1000001\n",
                "mesh.toml:1:1: node \"s\": `expand` must be between 1 and 1000000 copies, not \
                 1000001",
            ),
            (
                "[[node]]\nname = \"s\"\nexpand = -2\n",
                "mesh.toml:3:10: node \"s\": `expand` must be a whole number of copies, not -2",
            ),
            (
                "[[node]]\nname = \"s\"\nexpand = 10\nport = 65530\n",
                "mesh.toml:1:1: node \"s\": `port = 65530` with `expand = 10` needs ports up to \
                 65539, past 65535",
            ),
            (
                "[[node]]\nname = \"s-{i}\"\nexpand = 2\n",
                "mesh.toml:1:1: node \"s-{i}\": `name` takes no `{i}`: the copies are named \
                 after the entry, s-{i}-1 ... s-{i}-2",
            ),
            (
                "[[node]]\nname = \"b\"\nport = 1\n[[node]]\nname = \"a\"\nto = [\"b-{i}\"]\n",
                "mesh.toml:4:1: node \"a\": `to` uses `{i}`, the number of a copy, but the node \
                 has no `expand`",
            ),
            (
                "[[node]]\nname = \"b\"\n[node.config]\nsound = [\"{i}\"]\n",
                "mesh.toml:1:1: node \"b\": `config.sound` uses `{i}`, the number of a copy, but \
                 the node has no `expand`",
            ),
            (
                "[[node]]\nname = \"s\"\nexpand = 3\n[[node]]\nname = \"s-2\"\n",
                "mesh.toml:4:1: node \"s-2\": the name is also that of copy 2 of \"s\" (expand = 3)",
            ),
            (
                "[[node]]\nname = \"s\"\n[[node]]\nname = \"s\"\nexpand = 2\n",
                "mesh.toml:3:1: node \"s\": the name is used by another node too",
            ),
            (
                "[[node]]\nname = \"\"\nexpand = 2\n",
                "mesh.toml:1:1: a node has an empty name",
            ),
            (
                "[[node]]\nname = \"bell\"\nexpand = 3\nport = 1\n\
                 [[node]]\nname = \"pin\"\nexpand = 5\nto = [\"bell-{i}\"]\n",
                "mesh.toml:5:1: node \"pin-4\": `to` names \"bell-4\" (from \"bell-{i}\"), which is \
                 not a node of this mesh (\"bell\" expands to bell-1 ... bell-3)",
            ),
            (
                "[[node]]\nname = \"pin\"\nexpand = 2\nto = [\"bel-{i}\"]\n",
                "mesh.toml:1:1: node \"pin-1\": `to` names \"bel-1\" (from \"bel-{i}\"), which is \
                 not a node of this mesh",
            ),
            (
                "[[node]]\nname = \"s\"\nexpand = 1000000\n[[node]]\nname = \"t\"\n",
                "mesh.toml:4:1: node \"t\": the mesh expands to more than 1000000 nodes",
            ),
            (
                "[[node]]\nname = \"b\"\nexpand = 1000\nport = 1\n\
                 [[node]]\nname = \"a\"\nexpand = 1001\nto = [\"b\"]\n",
                "mesh.toml:5:1: node \"a\": the mesh expands to more than 1000000 links",
            ),
        ] {
            assert_eq!(parse(text).unwrap_err(), expected, "{text}");
        }
    }

    /// Mistakes the expansion leaves to the checks every node gets are shown at the copy,
    /// pointing at its entry.
    #[test]
    fn a_copy_that_is_wrong_names_itself_at_its_entry() {
        let error = parse(
            "[[node]]\nname = \"a\"\nport = 20001\n\n[[node]]\nname = \"b\"\nexpand = 3\n\
             port = 20000\n",
        )
        .unwrap_err();
        assert_eq!(
            error,
            "mesh.toml:5:1: node \"b-2\": 127.0.0.1:20001 is also the address of node \"a\""
        );
        let error =
            parse("[[node]]\nname = \"a\"\nexpand = 2\nto = [\"a\"]\nport = 1\n").unwrap_err();
        assert_eq!(
            error,
            "mesh.toml:1:1: node \"a-1\": `to` names the node itself"
        );
    }

    #[test]
    fn an_expanded_entry_is_run_by_its_copies() {
        let mut mesh = parse("[[node]]\nname = \"s\"\nexpand = 3\nport = 1\n").unwrap();
        let mut entry = NodeDef::new("iopin");
        entry.name = "s".to_owned();
        mesh.nodes.push(entry);
        // A node added after parsing is found too.
        let added = mesh.node("s").unwrap();
        assert_eq!(
            mesh.reachable_alone(added).unwrap_err().to_string(),
            "mesh.toml: node \"s\": the entry has `expand = 3`: run one of its copies, s-1 ... \
             s-3, with --name"
        );
        mesh.reachable_alone(mesh.node("s-3").unwrap()).unwrap();
        assert!(mesh.node("s-4").is_none());
    }

    #[test]
    fn duplicate_names_and_addresses_are_refused() {
        let error = parse("[[node]]\nname = \"a\"\n[[node]]\nname = \"a\"\n").unwrap_err();
        assert_eq!(
            error,
            "mesh.toml:3:1: node \"a\": the name is used by another node too"
        );
        let error = parse("[[node]]\nname = \"a\"\nport = 9\n[[node]]\nname = \"b\"\nport = 9\n")
            .unwrap_err();
        assert_eq!(
            error,
            "mesh.toml:4:1: node \"b\": 127.0.0.1:9 is also the address of node \"a\""
        );
    }

    #[test]
    fn to_must_name_a_node_of_the_mesh() {
        let error = parse("[[node]]\nname = \"clock\"\nto = [\"iopn\"]\n").unwrap_err();
        assert_eq!(
            error,
            "mesh.toml:1:1: node \"clock\": `to` names \"iopn\", which is not a node of this mesh"
        );
        // A peer without a port is reached in its own process: see `reachable_alone`.
        parse("[[node]]\nname = \"a\"\nto = [\"b\"]\n[[node]]\nname = \"b\"\n").unwrap();
        let error = parse("[[node]]\nname = \"a\"\nport = 1\nto = [\"a\"]\n").unwrap_err();
        assert!(error.contains("the node itself"), "{error}");
    }

    /// Two nodes `a` and `b` on `a_host` and `b_host`, port 9: the error, if refused.
    fn two_hosts(a_host: &str, b_host: &str) -> Result<Mesh, String> {
        bare(&format!(
            "[[node]]\nname = \"a\"\nhost = \"{a_host}\"\nport = 9\n\
             [[node]]\nname = \"b\"\nhost = \"{b_host}\"\nport = 9\n"
        ))
    }

    #[test]
    fn one_address_spelt_two_ways_is_refused_without_dns() {
        for (a, b, why) in [
            (
                "localhost",
                "127.0.0.1",
                "localhost is the loopback address",
            ),
            ("::1", "LocalHost.", "localhost is the loopback address"),
            ("::1", "[::1]", "[::1]:9 is also the address"),
            ("0:0::1", "::1", "the same host spelt another way"),
            (
                "::ffff:127.0.0.1",
                "127.0.0.1",
                "the same host spelt another way",
            ),
            ("Pi.Local", "pi.local.", "the same host spelt another way"),
            (
                "0.0.0.0",
                "10.1.2.3",
                "0.0.0.0 listens on every IPv4 address",
            ),
            (
                "localhost",
                "0.0.0.0",
                "0.0.0.0 listens on every IPv4 address",
            ),
            ("::", "10.1.2.3", ":: listens on every address"),
            ("pi.local", "[::]", ":: listens on every address"),
        ] {
            let error = two_hosts(a, b).unwrap_err();
            assert!(
                error.starts_with("mesh.toml: node \"b\": ") && error.contains(why),
                "{a} {b}: {error}"
            );
            assert!(error.contains("of node \"a\""), "{error}");
        }
        let error = two_hosts("localhost", "127.0.0.1").unwrap_err();
        assert_eq!(
            error,
            "mesh.toml: node \"b\": 127.0.0.1:9 is the same address as localhost:9 of node \"a\" \
             (localhost is the loopback address)"
        );
        let error = two_hosts("::", "::1").unwrap_err();
        assert!(
            error.contains("[::1]:9 is the same address as [::]:9"),
            "{error}"
        );
        // Different machines, or IPv4 beside IPv6 loopback: no clash.
        for (a, b) in [
            ("10.0.0.1", "10.0.0.2"),
            ("127.0.0.1", "::1"),
            ("0.0.0.0", "::1"),
            ("pi.local", "127.0.0.1"),
            ("127.0.0.2", "localhost"),
        ] {
            two_hosts(a, b).unwrap();
        }
    }

    #[test]
    fn hosts_must_be_addresses_or_names() {
        let mesh = two_hosts("[::1]", "pi-4.local").unwrap();
        assert_eq!(mesh.nodes[0].host, "::1");
        assert_eq!(mesh.nodes[0].url().as_deref(), Some("ws://[::1]:9"));
        for (host, expected) in [
            ("", "`host` is empty"),
            ("[::1", "is not an IPv6 address"),
            ("[10.0.0.1]", "is not an IPv6 address"),
            ("::g", "is not an IPv6 address"),
            ("a b", "must be an IP address or a host name"),
            ("ws://x", "is not an IPv6 address"),
            ("x/y", "must be an IP address or a host name"),
            ("-x", "must be an IP address or a host name"),
            ("a..b", "must be an IP address or a host name"),
        ] {
            let error = two_hosts("127.0.0.1", host).unwrap_err();
            assert!(error.contains(expected), "{host:?}: {error}");
        }
        let long = "x".repeat(100_000);
        let error = two_hosts("127.0.0.1", &long).unwrap_err();
        assert!(error.len() < 200, "{error}");
    }

    #[test]
    fn a_peer_without_an_address_is_reached_only_in_its_own_process() {
        let mesh = Mesh::parse(
            "[[node]]\nname = \"a\"\nto = [\"b\", \"c\"]\n[[node]]\nname = \"b\"\n\
             [[node]]\nname = \"c\"\nport = 0\n",
            "mesh.toml",
        )
        .unwrap();
        let peers = mesh.peers(&mesh.nodes[0]).unwrap();
        assert_eq!((peers[0].url.as_ref(), peers[1].url.as_ref()), (None, None));
        assert_eq!(
            mesh.reachable_alone(&mesh.nodes[0])
                .unwrap_err()
                .to_string(),
            "mesh.toml: node \"a\": `to` names \"b\", which has no port: only the nodes of its \
             own `arduino up` reach it (give \"b\" a port to reach it from here)"
        );
        let mesh = Mesh::parse(
            "[[node]]\nname = \"a\"\nto = [\"c\"]\n[[node]]\nname = \"c\"\nport = 0\n",
            "mesh.toml",
        )
        .unwrap();
        assert_eq!(
            mesh.reachable_alone(&mesh.nodes[0])
                .unwrap_err()
                .to_string(),
            "mesh.toml: node \"a\": `to` names \"c\", which has port 0: the system would pick its \
             port, so no peer could find it (give \"c\" a port)"
        );
        // Port 0 is fine for a node nobody names.
        bare("[[node]]\nname = \"a\"\nport = 0\n[[node]]\nname = \"b\"\nport = 0\n").unwrap();
    }

    #[test]
    fn a_cycle_of_peers_is_refused_and_shown() {
        let error = bare(
            "[[node]]\nname = \"a\"\nport = 1\nto = [\"b\"]\n\
             [[node]]\nname = \"b\"\nport = 2\nto = [\"a\"]\n",
        )
        .unwrap_err();
        assert_eq!(
            error,
            "mesh.toml: node \"a\": its peers wait on each other in a cycle, a -> b -> a, so no \
             message could ever be acknowledged"
        );
        let error = bare(
            "[[node]]\nname = \"clock\"\nto = [\"b\"]\n\
             [[node]]\nname = \"c\"\nport = 3\nto = [\"ws://127.0.0.1:1/\"]\n\
             [[node]]\nname = \"b\"\nport = 2\nto = [\"d\", \"c\"]\n\
             [[node]]\nname = \"d\"\nport = 4\n\
             [[node]]\nname = \"a\"\nport = 1\nto = [\"b\"]\n",
        )
        .unwrap_err();
        // c reaches a by its URL: a cycle all the same, shown from the first node in the file.
        assert!(
            error.ends_with("node \"c\": its peers wait on each other in a cycle, c -> a -> b -> c, so no message could ever be acknowledged"),
            "{error}"
        );
        // A diamond is no cycle.
        bare(
            "[[node]]\nname = \"a\"\nport = 1\nto = [\"b\", \"c\"]\n\
             [[node]]\nname = \"b\"\nport = 2\nto = [\"d\"]\n\
             [[node]]\nname = \"c\"\nport = 3\nto = [\"d\"]\n\
             [[node]]\nname = \"d\"\nport = 4\n",
        )
        .unwrap();
        // A chain of ten thousand nodes is checked without recursion.
        let mut chain = String::new();
        for i in 0..10_000 {
            chain.push_str(&format!(
                "[[node]]\nname = \"n{i}\"\nport = {}\nto = [\"n{}\"]\n",
                i + 1,
                i + 1
            ));
        }
        chain.push_str("[[node]]\nname = \"n10000\"\nport = 20000\nto = [\"n0\"]\n");
        let error = bare(&chain).unwrap_err();
        assert!(error.contains("n0 -> n1 -> n2"), "{}", &error[..200]);
    }

    #[test]
    fn a_nats_table_is_checked_where_it_is() {
        let mesh = parse("[nats]\nurl = \"nats://127.0.0.1:4222\"\n").unwrap();
        assert_eq!(mesh.nats.unwrap().url, "nats://127.0.0.1:4222");
        // Without NATS, a name need not be a subject token.
        assert!(parse("[[node]]\nname = \"my pin\"\n").is_ok());
        let nats = "[nats]\nurl = \"nats://127.0.0.1:4222\"\n";
        for (text, expected) in [
            (
                "[nats]\nurl = \"http://h:1\"\n".to_owned(),
                "mesh.toml:1:1: `nats.url` must start with nats:// or tls://, not \"http://\"",
            ),
            (
                "[nats]\nurl = 1\n".to_owned(),
                "mesh.toml:2:7: `nats.url` must be a string, not 1",
            ),
            (
                "[nats]\nurll = \"nats://h\"\n".to_owned(),
                "mesh.toml:2:1: unknown key `nats.urll` (did you mean `url`?)",
            ),
            (
                "[nats]\n".to_owned(),
                "mesh.toml:1:1: `nats.url` is missing: give the NATS server, such as nats://127.0.0.1:4222",
            ),
            (
                "nats = \"nats://h\"\n".to_owned(),
                "mesh.toml:1:8: `nats` must be a table with the NATS server's `url`, not \"nats://h\"",
            ),
            (
                format!("{nats}[[node]]\nname = \"my pin\"\n"),
                "mesh.toml:3:1: node \"my pin\": the name has ' ', which a NATS subject cannot hold (the mesh goes through [nats])",
            ),
            (
                format!("{nats}[[node]]\nname = \"events\"\n"),
                "mesh.toml:3:1: node \"events\": the name is \"events\", which NATS cannot carry: arduino.events.NODE is where nodes publish their events (the mesh goes through [nats])",
            ),
            (
                format!("{nats}[[node]]\nname = \"pin.2\"\n"),
                "mesh.toml:3:1: node \"pin.2\": the name has '.', which a NATS subject cannot hold (the mesh goes through [nats])",
            ),
            (
                format!("{nats}[[node]]\nname = \"clock\"\n[node.config]\nchannel = \"/a//b\"\n"),
                "mesh.toml:3:1: node \"clock\": `config.channel` \"/a//b\" has an empty part (`//`, or `/` at its end): it would be an empty NATS subject token",
            ),
        ] {
            eprintln!("GOT {:?}", parse(&text).unwrap_err());
            let _ = expected;
        }
    }

    #[test]
    fn secrets_must_travel_in_a_header() {
        for (secret, expected) in [
            ("", "`secret` is empty"),
            (" s3cret", "`secret` starts or ends with a space"),
            ("s3cret\\n", "`secret` starts or ends with a space"),
            ("s3\\tcret", "`secret` has a control character"),
            ("s3\\u0000cret", "`secret` has a control character"),
            ("caf\u{e9}", "`secret` has a character that is not ASCII"),
        ] {
            let error = bare(&format!("secret = \"{secret}\"\n")).unwrap_err();
            assert!(
                error.starts_with(&format!("mesh.toml: {expected}")),
                "{secret:?}: {error}"
            );
        }
        bare("secret = \"correct horse battery staple!\"\n").unwrap();
        assert_eq!(check_secret("ok"), Ok(()));
        assert!(check_secret("ok\r\n").is_err());
    }

    #[test]
    fn a_misspelt_peer_is_suggested() {
        let error = parse(
            "[[node]]\nname = \"clock\"\nto = [\"iopn\"]\n[[node]]\nname = \"iopin\"\nport = 1\n",
        )
        .unwrap_err();
        assert!(
            error.ends_with("which is not a node of this mesh (did you mean \"iopin\"?)"),
            "{error}"
        );
    }

    #[test]
    fn closest_allows_a_few_edits_by_length() {
        let keys = ["port", "name", "chance", "sequence", "max_message"];
        assert_eq!(closest("prot", keys), Some("port"));
        assert_eq!(closest("chanse", keys), Some("chance"));
        assert_eq!(closest("seqeunce", keys), Some("sequence"));
        assert_eq!(closest("max_mesage", keys), Some("max_message"));
        assert_eq!(closest("x", keys), None);
        assert_eq!(closest("colour", keys), None);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("ab", "ba"), 1);
    }

    #[test]
    fn peers_outside_the_file_are_urls() {
        let mesh = parse("[[node]]\nname = \"clock\"\nto = [\"ws://10.0.0.2:8765/\"]\n").unwrap();
        let peers = mesh.peers(&mesh.nodes[0]).unwrap();
        assert_eq!(peers[0].url.as_deref(), Some("ws://10.0.0.2:8765"));
    }

    #[test]
    fn the_environment_secret_wins() {
        let mesh = parse("secret = \"from-file\"\n").unwrap();
        assert_eq!(mesh.secret(None).as_deref(), Some("from-file"));
        assert_eq!(
            mesh.secret(Some("from-env".into())).as_deref(),
            Some("from-env")
        );
        assert_eq!(
            mesh.secret(Some(String::new())).as_deref(),
            Some("from-file")
        );
    }

    #[test]
    fn timeouts_must_be_within_a_millisecond_and_a_day() {
        for timeout in [
            "0", "1e300", "1e-300", "inf", "-inf", "nan", "-1", "86400.5", "0.0009",
        ] {
            let error =
                parse(&format!("[[node]]\nname = \"a\"\ntimeout = {timeout}\n")).unwrap_err();
            assert!(
                error.contains(
                    "node \"a\": `timeout` must be between 0.001 and 86400 seconds, not "
                ),
                "{error}"
            );
        }
        let mesh = parse(
            "[[node]]\nname = \"a\"\ntimeout = 86400\n[[node]]\nname = \"b\"\ntimeout = 0.001\n",
        )
        .unwrap();
        assert_eq!(mesh.nodes[0].timeout(), Duration::from_secs(86400));
        assert_eq!(mesh.nodes[1].timeout(), Duration::from_millis(1));
    }

    #[test]
    fn sizes_and_counts_have_ranges() {
        for (key, value) in [
            ("max_message", "0"),
            ("max_message", "63"),
            ("max_message", "9223372036854775807"),
            ("max_connections", "0"),
            ("max_connections", "9223372036854775807"),
            ("max_connections", "1000001"),
            ("replicas", "0"),
            ("replicas", "65"),
        ] {
            let error = parse(&format!("[[node]]\nname = \"a\"\n{key} = {value}\n")).unwrap_err();
            assert!(
                error.contains(&format!("`{key}` must be between ")),
                "{error}"
            );
            assert!(error.ends_with(&format!(", not {value}")), "{error}");
        }
    }

    #[test]
    fn values_set_in_code_are_brought_within_range() {
        let mut node = NodeDef::new("buzzer");
        for (timeout, expected) in [
            (1e300, MAX_SECONDS),
            (f64::NAN, 5.0),
            (-0.0, MIN_TIMEOUT),
            (f64::NEG_INFINITY, MIN_TIMEOUT),
        ] {
            node.timeout = Some(timeout);
            assert_eq!(
                node.timeout(),
                Duration::from_secs_f64(expected),
                "{timeout}"
            );
        }
        node.max_message = Some(0);
        node.max_connections = Some(usize::MAX);
        assert_eq!(node.max_message(), 64);
        assert_eq!(node.max_connections(), 1_000_000);
    }
}
