//! A mesh of simulated Arduino sketches talking over websockets.
//!
//! A *node* hosts one [`Sketch`] as a websocket server: the runtime calls the sketch's setup
//! hook once, then its loop hook for every text message that arrives (one at a time), and
//! sends back exactly one acknowledgement per message, in order. A sketch streams to the
//! peers its node is wired to through its [`Context`]. The *mesh* is a static file,
//! `mesh.toml`, naming each node, its sketch, its address and its peers.
//!
//! Modules:
//! - [`sketch`]: the [`Sketch`] trait, [`Setup`] and [`Context`];
//! - [`sketches`]: the built-in sketches (clock, iopin, buzzer) and the [`Registry`];
//! - [`mesh`]: parsing and validating the mesh file;
//! - [`runtime`]: hosting a sketch as a node ([`run`]);
//! - [`message`]: [`Text`], [`Ack`] and [`Input`], what travels on the wire;
//! - [`events`]: the runtime's events, logged and observable;
//! - [`client`]: opening a websocket to a node, as peers, `arduino send` and `bench` do;
//! - [`bench`](mod@bench): measuring a node, for `arduino bench`;
//! - [`cli`]: the whole `arduino` program, for a `main` of your own ([`cli::main`]);
//! - [`logging`]: the log format of the `arduino` program, for programs of your own.
//! - [`shape`]: timing operators for a node's input (`[node.input]`): debounce, sample, ...
//! - [`observe`]: watching a node: `GET /events`, `GET /metrics` and `arduino listen`.
//! - [`view`]: `arduino view`, a live picture of the mesh in a browser.
//! - [`tls`](mod@tls): the mesh's `[tls]`: nodes on `wss://`, clients trusting its CA.

#![warn(missing_docs)]

// Lets a sketch written as `use arduino::...` live in `src/sketches/` unchanged, exactly as it
// would in a crate of its own.
extern crate self as arduino;

pub mod bench;
pub mod cli;
pub mod client;
pub mod error;
pub mod events;
mod inbound;
pub mod link;
pub mod logging;
pub mod mesh;
pub mod message;
pub mod nats;
pub mod observe;
pub mod runtime;
pub mod shape;
pub mod sketch;
pub mod sketches;
pub mod tls;
pub mod view;
mod wire;

pub use error::{Error, Result};
pub use events::{Event, Events, Observer};
pub use link::{Peer, SendError};
pub use mesh::{Mesh, NodeDef};
pub use message::{Ack, Input, Text};
/// The random number generators a sketch draws from (`arduino::rand::rngs::SmallRng`), so that
/// a sketch's crate needs no dependency but `arduino`.
pub use rand;
pub use runtime::{Node, NodeSpec, Report, run, run_until};
pub use sketch::{ConfigError, ConfigValue, Context, Key, Setup, Sketch};
pub use sketches::{Registry, builtin};
pub use tracing;
pub use wire::{Directory, Limits};
