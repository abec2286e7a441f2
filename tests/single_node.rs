//! One node on its own: it listens where asked and acknowledges what its sketch says.

mod common;

use common::{Process, ws};

/// A buzzer acknowledges `1` with its sound and anything else with `...`, in order.
#[tokio::test]
async fn buzzer_acknowledges_each_message_in_order() {
    let (mut buzzer, addr) = Process::node(&["buzzer", "--port", "0"], &[]);
    let mut client = ws::connect(&format!("ws://{addr}/datafeed")).await;
    assert_eq!(ws::ask(&mut client, "1").await, "buzz buzz buzz");
    assert_eq!(ws::ask(&mut client, "0").await, "...");
    assert_eq!(ws::ask(&mut client, "hello").await, "...");
    buzzer.signal("TERM");
    assert!(buzzer.wait().success());
}
