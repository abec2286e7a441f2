//! What travels on the wire: [`Text`] for a message a sketch sends, [`Ack`] for the one reply
//! each message gets. Pure data: both wrap shared, immutable UTF-8 bytes, so handing one to a
//! socket, or cloning a sketch's configured reply, copies nothing.

use std::fmt;

use tokio_tungstenite::tungstenite::Utf8Bytes;

/// A text message on its way to a peer.
///
/// `Text::from("1")` on a `&'static str` and `Text::from(String)` allocate nothing more; cloning
/// one is a reference-count bump.
#[derive(Clone, PartialEq, Eq)]
pub struct Text(pub(crate) Utf8Bytes);

impl Text {
    /// Text that lives for the whole program, without allocating.
    pub const fn from_static(text: &'static str) -> Self {
        Self(Utf8Bytes::from_static(text))
    }

    /// The message as a string slice.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl From<Ack> for Text {
    fn from(ack: Ack) -> Self {
        Self(ack.0)
    }
}

/// The reply to one message. Exactly one is sent for every text message a node receives, in the
/// order the messages came.
///
/// An acknowledgement that starts with [`Ack::ERROR_PREFIX`] means the message was not handled.
#[derive(Clone, PartialEq, Eq)]
pub struct Ack(pub(crate) Utf8Bytes);

impl Ack {
    /// What a sketch acknowledges when it has nothing to say.
    pub const NA: Ack = Ack::from_static("n/a");

    /// The prefix of an acknowledgement that reports a message as not handled.
    pub const ERROR_PREFIX: &'static str = "error: ";

    /// An acknowledgement that lives for the whole program, without allocating.
    pub const fn from_static(text: &'static str) -> Self {
        Self(Utf8Bytes::from_static(text))
    }

    /// An acknowledgement saying the message was not handled, and why.
    pub fn error(reason: impl fmt::Display) -> Self {
        Self(Utf8Bytes::from(format!("{}{reason}", Self::ERROR_PREFIX)))
    }

    /// The acknowledgement as a string slice.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The reason, when this acknowledgement reports a message as not handled.
    pub fn error_reason(&self) -> Option<&str> {
        self.as_str().strip_prefix(Self::ERROR_PREFIX)
    }

    /// Whether this acknowledgement reports a message as not handled.
    pub fn is_error(&self) -> bool {
        self.error_reason().is_some()
    }
}

impl From<Text> for Ack {
    fn from(text: Text) -> Self {
        Self(text.0)
    }
}

/// What [`Text`] and [`Ack`] share: both are shared UTF-8 text, built from a `&'static str`
/// or a `String` without copying, shown as their text.
macro_rules! text_type {
    ($name:ident) => {
        impl From<&'static str> for $name {
            fn from(text: &'static str) -> Self {
                Self::from_static(text)
            }
        }

        impl From<String> for $name {
            fn from(text: String) -> Self {
                Self(Utf8Bytes::from(text))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self.as_str(), f)
            }
        }
    };
}

text_type!(Text);
text_type!(Ack);

/// What a sketch's loop hook is called with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input<'a> {
    /// A text message that arrived on `channel` (the websocket path it was sent to).
    Message {
        /// The path the sender connected to, such as `/datafeed`.
        channel: &'a str,
        /// The message itself.
        text: &'a str,
    },
    /// The sketch's own timer fired, for the `n`-th time (counting from 0); see
    /// [`Setup::tick_every`](crate::Setup::tick_every).
    Tick(u64),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_acks_carry_their_reason() {
        let ack = Ack::error("buzzer: connection refused");
        assert_eq!(ack.as_str(), "error: buzzer: connection refused");
        assert!(ack.is_error());
        assert_eq!(ack.error_reason(), Some("buzzer: connection refused"));
        assert!(!Ack::NA.is_error());
        assert_eq!(Ack::NA.as_str(), "n/a");
    }

    #[test]
    fn text_and_ack_convert_without_changing_content() {
        let text = Text::from(String::from("buzz"));
        let ack = Ack::from(text.clone());
        assert_eq!(ack.as_str(), "buzz");
        assert_eq!(Text::from(ack), text);
        assert_eq!(Text::from("1").to_string(), "1");
    }
}
