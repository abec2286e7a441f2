//! A sketch that panics inside its loop fails that one message; the node goes on.

mod common;

use arduino::{Ack, ConfigError, Context, Input, Setup, Sketch};
use common::ws;

/// Panics on `boom`, echoes anything else.
struct Fragile;

impl Sketch for Fragile {
    fn setup(_setup: &mut Setup<'_>) -> Result<Self, ConfigError> {
        Ok(Fragile)
    }

    async fn loop_once(&mut self, _ctx: &mut Context, input: Input<'_>) -> Ack {
        match input {
            Input::Message { text: "boom", .. } => panic!("the fragile sketch broke"),
            Input::Message { text, .. } => Ack::from(text.to_owned()),
            Input::Tick(_) => Ack::NA,
        }
    }
}

/// The panicking message gets an `error: ` ack; the same connection and another one go on
/// being served, and the node counts every message.
#[tokio::test]
async fn a_panic_fails_one_message_only() {
    let registry = arduino::Registry::default().with::<Fragile>("fragile", "panics on boom");
    let node =
        common::InProcess::start(&registry, "[[node]]\nname = \"fragile\"\nport = 1\n").await;
    let addr = node.addr;

    let mut first = ws::connect(&format!("ws://{addr}/")).await;
    let mut second = ws::connect(&format!("ws://{addr}/")).await;
    assert_eq!(ws::ask(&mut first, "a").await, "a");
    assert_eq!(
        ws::ask(&mut first, "boom").await,
        "error: the sketch panicked: the fragile sketch broke"
    );
    assert_eq!(ws::ask(&mut first, "b").await, "b");
    assert_eq!(ws::ask(&mut second, "c").await, "c");
    assert_eq!(
        ws::ask(&mut second, "boom").await,
        "error: the sketch panicked: the fragile sketch broke"
    );
    assert_eq!(ws::ask(&mut second, "d").await, "d");

    let report = node.stop().await;
    assert_eq!(report.handled, 6);
}
