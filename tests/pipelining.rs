//! Acks of pipelined messages: batched when the sketch answers at once, never held back
//! while the sketch waits on something for a later message.

mod common;

use arduino::{Ack, ConfigError, Context, Input, Setup, Sketch};
use common::ws;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

/// Answers `fast` at once; never answers anything else (until the node stops).
struct Sluggish;

impl Sketch for Sluggish {
    fn setup(_setup: &mut Setup<'_>) -> Result<Self, ConfigError> {
        Ok(Sluggish)
    }

    async fn loop_once(&mut self, _ctx: &mut Context, input: Input<'_>) -> Ack {
        match input {
            Input::Message { text: "fast", .. } => Ack::from("quick"),
            _ => {
                std::future::pending::<()>().await;
                Ack::from("never")
            }
        }
    }
}

/// The ack of a message that was answered at once arrives while the sketch is still busy
/// with the next message of the same batch.
#[tokio::test]
async fn an_ack_is_not_held_back_by_a_slow_message_behind_it() {
    let registry = arduino::Registry::default().with::<Sluggish>("sluggish", "slow on purpose");
    let node =
        common::InProcess::start(&registry, "[[node]]\nname = \"sluggish\"\nport = 1\n").await;
    let mut client = ws::connect(&format!("ws://{}/", node.addr)).await;
    client.feed(Message::text("fast")).await.unwrap();
    client.feed(Message::text("slow")).await.unwrap();
    client.flush().await.unwrap();
    // The slow message never finishes: only an ack that was not held back can arrive.
    assert_eq!(ws::next(&mut client).await, Some(Message::text("quick")));
    let report = node.stop().await;
    assert_eq!(report.handled, 2);
}
