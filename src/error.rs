//! The library's error type: one variant per thing a caller may act on.

use std::{io, net::SocketAddr};

/// Everything that can stop a node or a mesh from starting or finishing its work.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The mesh file (or the flags that override it) describe a mesh that cannot run.
    #[error("{path}: {message}")]
    Mesh {
        /// The mesh file, or `command line` for flags.
        path: String,
        /// What is wrong, naming the node when there is one.
        message: String,
    },

    /// No sketch is registered under this name.
    #[error("unknown sketch {name:?}; the sketches are: {known}")]
    UnknownSketch {
        /// The name asked for.
        name: String,
        /// The names that exist, comma-separated.
        known: String,
    },

    /// The node's address could not be listened on (in use, not local, no permission).
    // The OS error is part of the message rather than a `source`, so that printing the
    // error with its chain does not say it twice.
    #[error("cannot listen on {addr}: {reason}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// Why the operating system refused.
        reason: io::Error,
    },

    /// Some messages this node originated were not acknowledged by their peer.
    #[error("{node}: {failed} of {total} ticks were not delivered")]
    Undelivered {
        /// The node that originated them.
        node: String,
        /// How many failed.
        failed: u64,
        /// How many were attempted.
        total: u64,
    },

    /// A node could not be reached, or its connection broke.
    #[error("{url}: {reason}")]
    Node {
        /// The node's URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

impl Error {
    /// The address `addr` could not be listened on.
    pub fn bind(addr: SocketAddr, source: io::Error) -> Self {
        Self::Bind {
            addr: addr.to_string(),
            reason: source,
        }
    }
}

/// The library's `Result`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
