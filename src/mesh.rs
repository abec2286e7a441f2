//! The mesh file: which nodes exist, what each runs, where it listens and whom it streams to.
//! Parsing and validation only (from a `&str`; [`Mesh::load`] is the thin wrapper that reads
//! the file). Opens no connection.

use std::{collections::HashMap, ops::RangeInclusive, path::Path, time::Duration};

use serde::Deserialize;

use crate::{
    error::Error,
    link::Peer,
    sketch::{MAX_SECONDS, seconds_between},
};

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
/// The values `max_connections` may take.
pub const MAX_CONNECTIONS_RANGE: RangeInclusive<usize> = 1..=1_000_000;

/// A parsed, validated mesh file.
#[derive(Debug, Clone, PartialEq)]
pub struct Mesh {
    /// Where it was read from, for error messages (`mesh.toml`).
    pub path: String,
    /// The shared secret of the mesh, if any (see [`Mesh::secret`]).
    pub secret: Option<String>,
    /// The nodes, in the file's order.
    pub nodes: Vec<NodeDef>,
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
    /// The peers it streams to, in order: node names, or `ws://` URLs of nodes outside the file.
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
}

fn default_host() -> String {
    DEFAULT_HOST.to_owned()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MeshFile {
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    node: Vec<NodeDef>,
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
        }
    }

    /// The sketch this node runs.
    pub fn sketch(&self) -> &str {
        self.sketch.as_deref().unwrap_or(&self.name)
    }

    /// `ws://host:port`, where peers reach this node, if it listens.
    pub fn url(&self) -> Option<String> {
        let port = self.port?;
        Some(if self.host.contains(':') {
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
            nodes: Vec::new(),
        }
    }

    /// Read and validate the mesh file at `path`.
    ///
    /// # Errors
    ///
    /// [`Error::Mesh`] when the file cannot be read, or for anything [`Mesh::parse`] rejects.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| Error::Mesh {
            path: shown.clone(),
            message: format!("cannot read the mesh file: {error}"),
        })?;
        Self::parse(&text, &shown)
    }

    /// Parse and validate a mesh file's text; `path` names it in errors.
    ///
    /// # Errors
    ///
    /// [`Error::Mesh`] for bad TOML, an unknown key, a value of the wrong type, an empty or
    /// duplicate name, two nodes on one address, or a `to` naming a node that is not there,
    /// that does not listen, or that is the node itself.
    pub fn parse(text: &str, path: &str) -> Result<Self, Error> {
        let file: MeshFile = toml::from_str(text).map_err(|error| Error::Mesh {
            path: path.to_owned(),
            message: error.to_string().trim_end().replace('\n', " "),
        })?;
        let mesh = Self {
            path: path.to_owned(),
            secret: file.secret,
            nodes: file.node,
        };
        mesh.validate()?;
        Ok(mesh)
    }

    /// Check what serde cannot: names, addresses and `to` lists.
    ///
    /// # Errors
    ///
    /// As [`Mesh::parse`].
    pub fn validate(&self) -> Result<(), Error> {
        let mut names = HashMap::new();
        let mut addresses = HashMap::new();
        for node in &self.nodes {
            let name = &node.name;
            if name.trim().is_empty() {
                return Err(self.error(None, "a node has an empty name"));
            }
            if names.insert(name.as_str(), node).is_some() {
                return Err(self.error(Some(name), "the name is used by another node too"));
            }
            // Port 0 asks the OS for a free port: never a clash.
            if let Some(port) = node.port.filter(|&port| port != 0)
                && let Some(other) = addresses.insert((node.host.as_str(), port), name)
            {
                return Err(self.error(
                    Some(name),
                    format!("{}:{port} is also the address of node {other:?}", node.host),
                ));
            }
            if let Some(timeout) = node.timeout
                && let Err(message) = seconds_between(timeout, MIN_TIMEOUT)
            {
                return Err(self.error(Some(name), format!("`timeout` {message}")));
            }
            if let Some(bytes) = node.max_message
                && !MAX_MESSAGE_RANGE.contains(&bytes)
            {
                return Err(self.error(
                    Some(name),
                    format!(
                        "`max_message` must be between {} and {} bytes, not {bytes}",
                        MAX_MESSAGE_RANGE.start(),
                        MAX_MESSAGE_RANGE.end()
                    ),
                ));
            }
            if let Some(count) = node.max_connections
                && !MAX_CONNECTIONS_RANGE.contains(&count)
            {
                return Err(self.error(
                    Some(name),
                    format!(
                        "`max_connections` must be between {} and {}, not {count}",
                        MAX_CONNECTIONS_RANGE.start(),
                        MAX_CONNECTIONS_RANGE.end()
                    ),
                ));
            }
        }
        for node in &self.nodes {
            for peer in &node.to {
                if peer.starts_with("ws://") {
                    continue;
                }
                match names.get(peer.as_str()) {
                    None => {
                        return Err(self.error(
                            Some(&node.name),
                            format!("`to` names {peer:?}, which is not a node of this mesh"),
                        ));
                    }
                    Some(_) if *peer == node.name => {
                        return Err(self.error(Some(&node.name), "`to` names the node itself"));
                    }
                    Some(target) if target.port.is_none() => {
                        return Err(self.error(
                            Some(&node.name),
                            format!("`to` names {peer:?}, which has no port to listen on"),
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(())
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&NodeDef> {
        self.nodes.iter().find(|node| node.name == name)
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
                if peer.starts_with("ws://") {
                    let url = peer.trim_end_matches('/').to_owned();
                    // The secret goes to nodes of the mesh only: a URL gets it when it is
                    // the address of one.
                    let secret = self.nodes.iter().any(|n| n.url().as_ref() == Some(&url));
                    return Ok(Peer {
                        name: peer.clone(),
                        url,
                        secret,
                    });
                }
                self.node(peer)
                    .and_then(|target| {
                        target.url().map(|url| Peer {
                            name: target.name.clone(),
                            url,
                            secret: true,
                        })
                    })
                    .ok_or_else(|| {
                        self.error(
                            Some(&node.name),
                            format!(
                                "`to` names {peer:?}, which is not a listening node of this mesh"
                            ),
                        )
                    })
            })
            .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Mesh, String> {
        Mesh::parse(text, "mesh.toml").map_err(|e| e.to_string())
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
                url: "ws://127.0.0.1:8765".into(),
                secret: true,
            }]
        );
    }

    #[test]
    fn bad_toml_names_the_file_and_line() {
        let error = parse("[[node]]\nname = \"clock\nport = 1").unwrap_err();
        assert!(error.starts_with("mesh.toml: "), "{error}");
        assert!(error.contains("line 2"), "{error}");
    }

    #[test]
    fn a_misspelt_key_is_refused() {
        let error = parse("[[node]]\nname = \"iopin\"\nprot = 8765\n").unwrap_err();
        assert!(error.contains("unknown field `prot`"), "{error}");
    }

    #[test]
    fn a_value_of_the_wrong_type_is_refused() {
        let error = parse("[[node]]\nname = \"iopin\"\nport = \"8765\"\n").unwrap_err();
        assert!(error.contains("invalid type"), "{error}");
        let error = parse("[[node]]\nname = \"iopin\"\nport = 70000\n").unwrap_err();
        assert!(error.contains("70000"), "{error}");
    }

    #[test]
    fn duplicate_names_and_addresses_are_refused() {
        let error = parse("[[node]]\nname = \"a\"\n[[node]]\nname = \"a\"\n").unwrap_err();
        assert_eq!(
            error,
            "mesh.toml: node \"a\": the name is used by another node too"
        );
        let error = parse("[[node]]\nname = \"a\"\nport = 9\n[[node]]\nname = \"b\"\nport = 9\n")
            .unwrap_err();
        assert_eq!(
            error,
            "mesh.toml: node \"b\": 127.0.0.1:9 is also the address of node \"a\""
        );
    }

    #[test]
    fn to_must_name_a_listening_node_of_the_mesh() {
        let error = parse("[[node]]\nname = \"clock\"\nto = [\"iopn\"]\n").unwrap_err();
        assert_eq!(
            error,
            "mesh.toml: node \"clock\": `to` names \"iopn\", which is not a node of this mesh"
        );
        let error =
            parse("[[node]]\nname = \"a\"\nto = [\"b\"]\n[[node]]\nname = \"b\"\n").unwrap_err();
        assert!(error.contains("has no port"), "{error}");
        let error = parse("[[node]]\nname = \"a\"\nport = 1\nto = [\"a\"]\n").unwrap_err();
        assert!(error.contains("the node itself"), "{error}");
    }

    #[test]
    fn peers_outside_the_file_are_urls() {
        let mesh = parse("[[node]]\nname = \"clock\"\nto = [\"ws://10.0.0.2:8765/\"]\n").unwrap();
        let peers = mesh.peers(&mesh.nodes[0]).unwrap();
        assert_eq!(peers[0].url, "ws://10.0.0.2:8765");
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
