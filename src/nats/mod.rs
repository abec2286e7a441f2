//! NATS, for meshes that travel through a NATS server: the mesh file's `[nats]` table, the
//! subjects a node answers and publishes on, and a node's client. `client` speaks the
//! protocol, `link` is a link to a peer through it, `serve` a node answering through it.
//!
//! A node answers requests on `arduino.<node>.<channel>` (the channel's path with `/` as `.`;
//! the channel `/` is `arduino.<node>`), in a queue group named after the node, and publishes
//! its events on `arduino.events.<node>`. A name or channel that cannot be a subject token is
//! refused: at load when the mesh file holds it, with an error when a client sends on it.

mod client;
pub(crate) mod events;
pub(crate) mod link;
pub(crate) mod serve;

use serde::Deserialize;

pub use client::{Client, Msg, Options, Reply, RequestError, ServerUrl, Sid};

use crate::{error::Error, mesh::shown, tls::Tls};

/// The environment variable that gives the NATS server's URL; it wins over the mesh file.
pub const URL_VAR: &str = "ARDUINO_NATS";

/// The name of the header that marks a probe: a request a node answers itself, without its
/// sketch, so that a link can learn that a copy of its peer is up before it sends a message.
pub(crate) const PROBE_NAME: &str = "Arduino-Probe";

/// A probe's headers.
pub(crate) const PROBE: &[u8] = b"NATS/1.0\r\nArduino-Probe: 1\r\n\r\n";

/// How a process's nodes reach the NATS server, and which of them answer through it.
#[derive(Debug, Clone)]
pub(crate) struct NatsMesh {
    pub(crate) url: String,
    pub(crate) tls: Option<Tls>,
    /// The nodes of the process that take messages: each answers on its subjects.
    pub(crate) serving: std::collections::HashSet<String>,
    /// Whether nodes publish their events on `arduino.events.<node>`.
    pub(crate) events: bool,
}

/// The first token of every subject of the mesh.
pub const ROOT: &str = "arduino";

/// The node name that cannot be used with NATS: `arduino.events.*` carries nodes' events.
pub const EVENTS: &str = "events";

/// The mesh file's `[nats]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsDef {
    /// The server, `nats://host:port` (or `tls://host:port`). Empty when the table does not
    /// give one, which [`check_url`] refuses in words rather than serde in its own.
    #[serde(default)]
    pub url: String,
    /// Whether nodes publish their events on `arduino.events.<node>` (the default): each event
    /// is formatted and sent, which costs a node CPU per message even when nobody listens.
    #[serde(default = "publish_events")]
    pub events: bool,
}

fn publish_events() -> bool {
    true
}

/// Whether `url` can be a NATS server's URL: `nats://` or `tls://`, a host, and a port when
/// it has one. What is wrong, worded to follow the URL's name (`is empty`, ...).
///
/// # Errors
///
/// A sentence that names no credentials the URL may hold.
pub fn check_url(url: &str) -> Result<(), String> {
    let Some((scheme, _)) = url.split_once("://") else {
        return Err(if url.trim().is_empty() {
            "is missing: give the NATS server, such as nats://127.0.0.1:4222".to_owned()
        } else {
            format!(
                "must be a URL such as nats://127.0.0.1:4222, not {:?}",
                shown(&without_credentials(url))
            )
        });
    };
    if scheme != "nats" && scheme != "tls" {
        return Err(format!(
            "must start with nats:// or tls://, not {:?}",
            format!("{}://", shown(scheme))
        ));
    }
    match client::ServerUrl::parse(url) {
        Ok(server) if !server.host.is_empty() => Ok(()),
        Ok(_) => Err(format!(
            "has no host: {:?}",
            shown(&without_credentials(url))
        )),
        Err(error) => Err(format!(
            "is not a URL ({error}): {:?}",
            shown(&without_credentials(url))
        )),
    }
}

/// `url` with any `user:password@` or `token@` left out, for messages and logs.
pub fn without_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// Whether `name` can be a node's name on NATS: one subject token, and not [`EVENTS`].
///
/// # Errors
///
/// What is wrong, worded to follow `the name`.
pub fn check_node(name: &str) -> Result<(), String> {
    if name == EVENTS {
        return Err(format!(
            "is {EVENTS:?}, which NATS cannot carry: {ROOT}.{EVENTS}.NODE is where nodes \
             publish their events"
        ));
    }
    check_token(name)
}

/// Whether `token` can be one token of a subject: not empty, and no space, control
/// character, `.`, `*` or `>`.
fn check_token(token: &str) -> Result<(), String> {
    if token.is_empty() {
        return Err("is empty".to_owned());
    }
    let refused = |c: char| c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>');
    match token.chars().find(|&c| refused(c)) {
        None => Ok(()),
        Some(c) if c.is_control() || c.is_whitespace() && c != ' ' => Err(format!(
            "has a control or space character ({:?}), which a NATS subject cannot hold",
            c
        )),
        Some(c) => Err(format!("has {c:?}, which a NATS subject cannot hold")),
    }
}

/// Whether `channel` maps to subject tokens: each part of its path between `/` is one.
///
/// # Errors
///
/// What is wrong, worded to follow `the channel "..."`.
pub fn check_channel(channel: &str) -> Result<(), String> {
    let path = channel.strip_prefix('/').unwrap_or(channel);
    if path.is_empty() {
        return Ok(());
    }
    for part in path.split('/') {
        if part.is_empty() {
            return Err(format!(
                "{:?} has an empty part (`//`, or `/` at its end): it would be an empty NATS \
                 subject token",
                shown(channel)
            ));
        }
        check_token(part).map_err(|why| format!("{:?} {why}", shown(channel)))?;
    }
    Ok(())
}

/// The subject node `node` answers messages of `channel` on: `arduino.<node>.<channel>`,
/// the channel's `/` as `.`; the channel `/` (or empty) is `arduino.<node>`.
///
/// # Errors
///
/// A line saying which of the two cannot be a subject, and why.
pub fn subject(node: &str, channel: &str) -> Result<String, String> {
    check_node(node).map_err(|why| format!("the node name {:?} {why}", shown(node)))?;
    check_channel(channel).map_err(|why| format!("the channel {why}"))?;
    let path = channel.strip_prefix('/').unwrap_or(channel);
    let mut subject = String::with_capacity(ROOT.len() + node.len() + path.len() + 2);
    subject.push_str(ROOT);
    subject.push('.');
    subject.push_str(node);
    if !path.is_empty() {
        subject.push('.');
        subject.extend(path.chars().map(|c| if c == '/' { '.' } else { c }));
    }
    Ok(subject)
}

/// The subject node `node` publishes its events on: `arduino.events.<node>`.
///
/// # Errors
///
/// As [`subject`], when `node` cannot be a subject token.
pub fn events_subject(node: &str) -> Result<String, String> {
    check_node(node).map_err(|why| format!("the node name {:?} {why}", shown(node)))?;
    Ok(format!("{ROOT}.{EVENTS}.{node}"))
}

/// The server's URL: `ARDUINO_NATS` when given (`env_url`), else the mesh file's `[nats]`;
/// none when the mesh does not travel through NATS.
pub fn url(env_url: Option<String>, def: Option<&NatsDef>) -> Option<String> {
    env_url
        .filter(|url| !url.is_empty())
        .or_else(|| def.map(|def| def.url.clone()))
}

/// Start node `node`'s client of the server at `url`: named after the node, so that the
/// server's monitoring shows who is who, and reconnecting with backoff for as long as the
/// node runs, so that a server restarted, or started after the nodes, is picked up again.
/// `tls` is the mesh's `[tls]`, whose CA a `tls://` server's certificate must be signed by.
///
/// # Errors
///
/// [`Error::Node`] when `url` is no NATS URL.
pub fn connect(url: &str, node: &str, tls: Option<Tls>) -> Result<Client, Error> {
    let failed = |reason: String| Error::Node {
        url: without_credentials(url),
        reason,
    };
    check_url(url).map_err(|why| failed(format!("the NATS URL {why}")))?;
    Client::start(
        url,
        Options {
            name: node.to_owned(),
            tls,
        },
    )
    .map_err(|why| failed(format!("the NATS URL {why}")))
}

/// Make `mesh` go through the NATS server that `ARDUINO_NATS` (`env_url`) names, when it is
/// set, and check the mesh for it (names and channels must be subject tokens). The server's
/// URL, when the mesh goes through NATS.
///
/// # Errors
///
/// [`Error::Mesh`] when the URL is no NATS URL, or the mesh cannot go through NATS.
pub fn apply_url(mesh: &mut crate::Mesh, env_url: Option<String>) -> Result<Option<String>, Error> {
    let Some(url) = url(env_url, mesh.nats.as_ref()) else {
        return Ok(None);
    };
    if mesh.nats.as_ref().map(|def| &def.url) != Some(&url) {
        check_url(&url).map_err(|why| Error::Mesh {
            path: URL_VAR.to_owned(),
            message: format!("the NATS URL {why}"),
        })?;
        mesh.nats = Some(NatsDef {
            url: url.clone(),
            events: mesh.nats.as_ref().is_none_or(|nats| nats.events),
        });
        mesh.validate()?;
    }
    Ok(Some(url))
}

/// Node `node`'s NATS client, when its process goes through NATS (see
/// [`crate::Directory::over_nats`]) and the node needs one: it answers through NATS, or one
/// of its `peers` is reached through it. And whether it answers through it.
pub(crate) fn node_client(
    directory: &crate::Directory,
    node: &str,
    peers: &[crate::link::Peer],
) -> (Option<Client>, bool) {
    let Some(mesh) = directory.nats() else {
        return (None, false);
    };
    let serves = mesh.serving.contains(node);
    // The same choice as the links make: a peer of the process is reached without NATS, and
    // a URL from outside the mesh by websocket.
    let reaches = peers
        .iter()
        .any(|peer| !directory.has(&peer.name) && !peer.name.contains("://"));
    if !serves && !reaches {
        return (None, false);
    }
    match connect(&mesh.url, node, mesh.tls.clone()) {
        Ok(client) => (Some(client), serves),
        Err(error) => {
            tracing::error!("{error}");
            (None, false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_maps_to_tokens() {
        for (node, channel, expected) in [
            ("iopin", "/datafeed", "arduino.iopin.datafeed"),
            ("iopin", "datafeed", "arduino.iopin.datafeed"),
            ("iopin", "/a/b/c", "arduino.iopin.a.b.c"),
            ("iopin", "/", "arduino.iopin"),
            ("iopin", "", "arduino.iopin"),
            ("buzzer-2", "/x_y", "arduino.buzzer-2.x_y"),
            ("pin", "/ü", "arduino.pin.ü"),
        ] {
            assert_eq!(
                subject(node, channel).as_deref(),
                Ok(expected),
                "{channel:?}"
            );
        }
        assert_eq!(
            events_subject("iopin").as_deref(),
            Ok("arduino.events.iopin")
        );
    }

    #[test]
    fn what_cannot_be_a_token_is_refused_in_words() {
        for (node, channel, expected) in [
            (
                "a",
                "a//b",
                "the channel \"a//b\" has an empty part (`//`, or `/` at its end): it would be an empty NATS subject token",
            ),
            (
                "a",
                "//",
                "the channel \"//\" has an empty part (`//`, or `/` at its end): it would be an empty NATS subject token",
            ),
            (
                "a",
                "/x/",
                "the channel \"/x/\" has an empty part (`//`, or `/` at its end): it would be an empty NATS subject token",
            ),
            (
                "a",
                "/a b",
                "the channel \"/a b\" has ' ', which a NATS subject cannot hold",
            ),
            (
                "a",
                "/*",
                "the channel \"/*\" has '*', which a NATS subject cannot hold",
            ),
            (
                "a",
                "/x/>",
                "the channel \"/x/>\" has '>', which a NATS subject cannot hold",
            ),
            (
                "a",
                "/v1.2",
                "the channel \"/v1.2\" has '.', which a NATS subject cannot hold",
            ),
            (
                "a",
                "/x\ty",
                "the channel \"/x\\ty\" has a control or space character ('\\t'), which a NATS subject cannot hold",
            ),
            (
                "a",
                "/x\u{7f}",
                "the channel \"/x\\u{7f}\" has a control or space character ('\\u{7f}'), which a NATS subject cannot hold",
            ),
            ("", "/x", "the node name \"\" is empty"),
            (
                "my node",
                "/x",
                "the node name \"my node\" has ' ', which a NATS subject cannot hold",
            ),
            (
                "a.b",
                "/x",
                "the node name \"a.b\" has '.', which a NATS subject cannot hold",
            ),
            (
                "a>",
                "/",
                "the node name \"a>\" has '>', which a NATS subject cannot hold",
            ),
            (
                "events",
                "/x",
                "the node name \"events\" is \"events\", which NATS cannot carry: arduino.events.NODE is where nodes publish their events",
            ),
        ] {
            assert_eq!(
                subject(node, channel),
                Err(expected.to_owned()),
                "{node:?} {channel:?}"
            );
        }
        assert!(events_subject("a*").is_err());
    }

    #[test]
    fn urls_are_checked_without_showing_credentials() {
        for url in [
            "nats://127.0.0.1:4222",
            "nats://localhost",
            "tls://nats.example.com:4443",
            "nats://user:pass@127.0.0.1:4222",
        ] {
            assert_eq!(check_url(url), Ok(()), "{url}");
        }
        for (url, expected) in [
            (
                "",
                "is missing: give the NATS server, such as nats://127.0.0.1:4222",
            ),
            (
                "127.0.0.1:4222",
                "must be a URL such as nats://127.0.0.1:4222, not \"127.0.0.1:4222\"",
            ),
            (
                "http://127.0.0.1:4222",
                "must start with nats:// or tls://, not \"http://\"",
            ),
            (
                "nats://s3cret@127.0.0.1:99999",
                "is not a URL (invalid port number): \"nats://127.0.0.1:99999\"",
            ),
        ] {
            assert_eq!(check_url(url), Err(expected.to_owned()), "{url}");
        }
        assert_eq!(
            without_credentials("nats://u:p@host:1/x@y"),
            "nats://host:1/x@y"
        );
    }

    #[test]
    fn the_variable_wins_over_the_file() {
        let def = NatsDef {
            url: "nats://file:4222".to_owned(),
            events: true,
        };
        assert_eq!(
            url(Some("nats://env:4222".to_owned()), Some(&def)).as_deref(),
            Some("nats://env:4222")
        );
        assert_eq!(
            url(Some(String::new()), Some(&def)).as_deref(),
            Some("nats://file:4222")
        );
        assert_eq!(url(None, None), None);
    }
}
