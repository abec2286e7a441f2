//! Acks of pipelined messages: batched when the sketch answers at once, never held back
//! while the sketch waits on something for a later message.

mod common;

use std::time::Duration;

use arduino::{Ack, ConfigError, Context, Input, Setup, Sketch};
use common::ws;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

/// Answers `fast` at once; takes a minute over anything else.
struct Sluggish;

impl Sketch for Sluggish {
    fn setup(_setup: &mut Setup<'_>) -> Result<Self, ConfigError> {
        Ok(Sluggish)
    }

    async fn loop_once(&mut self, _ctx: &mut Context, input: Input<'_>) -> Ack {
        match input {
            Input::Message { text: "fast", .. } => Ack::from("quick"),
            _ => {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ack::from("late")
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
    // `ws::next` waits up to the test patience, far less than the slow message's minute.
    assert_eq!(ws::next(&mut client).await, Some(Message::text("quick")));
    let report = node.stop().await;
    assert_eq!(report.handled, 2);
}
