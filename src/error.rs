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
    #[error("cannot listen on {addr}: {}", bind_reason(addr, reason))]
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

/// Why `addr` could not be listened on, in words: the common reasons without the OS's jargon.
fn bind_reason(addr: &str, reason: &io::Error) -> String {
    match reason.kind() {
        io::ErrorKind::AddrInUse => "in use".to_owned(),
        io::ErrorKind::AddrNotAvailable => "not an address of this machine".to_owned(),
        io::ErrorKind::PermissionDenied => {
            let port = addr.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
            if port.is_some_and(|port| port < 1024) {
                "permission denied (ports below 1024 need root)".to_owned()
            } else {
                "permission denied".to_owned()
            }
        }
        _ => reason.to_string(),
    }
}

/// The library's `Result`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_errors_read_as_words() {
        let addr: SocketAddr = "127.0.0.1:8766".parse().unwrap();
        let said = |kind: io::ErrorKind| Error::bind(addr, kind.into()).to_string();
        assert_eq!(
            said(io::ErrorKind::AddrInUse),
            "cannot listen on 127.0.0.1:8766: in use"
        );
        assert_eq!(
            said(io::ErrorKind::AddrNotAvailable),
            "cannot listen on 127.0.0.1:8766: not an address of this machine"
        );
        assert_eq!(
            said(io::ErrorKind::PermissionDenied),
            "cannot listen on 127.0.0.1:8766: permission denied"
        );
        let low = Error::bind(
            "[::1]:80".parse().unwrap(),
            io::ErrorKind::PermissionDenied.into(),
        );
        assert_eq!(
            low.to_string(),
            "cannot listen on [::1]:80: permission denied (ports below 1024 need root)"
        );
    }
}
