//! A sketch of the user's own (the README's worked example, `examples/thermometer.rs`), set
//! up through a registry and run by the library on a real socket.

mod common;

#[path = "../examples/thermometer.rs"]
mod thermometer;

use common::ws;

fn sketch_source() -> String {
    let source = include_str!("../examples/thermometer.rs");
    let begin = source.find("// README: begin\n").unwrap() + "// README: begin\n".len();
    let end = source.find("// README: end").unwrap();
    source[begin..end].to_owned()
}

/// The sketch shown in the README is the one this test builds and runs, word for word.
#[test]
fn the_readme_shows_the_example_sketch() {
    let readme = include_str!("../README.md");
    let source = sketch_source();
    assert!(
        readme.contains(&source),
        "README.md's worked sketch differs from examples/thermometer.rs, which reads:\n{source}"
    );
}

/// A registered sketch of one's own runs as a node: it gets its config, its seed, and every
/// message's acknowledgement is what it returns.
#[tokio::test]
async fn a_users_sketch_runs_as_a_node() {
    let node = common::InProcess::start(
        &thermometer::registry(),
        "[[node]]\nname = \"kitchen\"\nsketch = \"thermometer\"\nport = 1\nseed = 3\n[node.config]\nstart = 18.0\ndrift = 0.0\n",
    )
    .await;
    let addr = node.addr;

    let mut client = ws::connect(&format!("ws://{addr}/kitchen")).await;
    assert_eq!(ws::ask(&mut client, "read").await, "18.0 C");
    assert_eq!(ws::ask(&mut client, "read").await, "18.0 C");
    assert_eq!(ws::ask(&mut client, "what").await, "error: say `read`");

    let report = node.stop().await;
    assert_eq!(report.handled, 3);
}

/// A config key the sketch does not read is reported, with the key it most likely meant.
#[test]
fn a_users_sketch_gets_its_config_checked() {
    let mesh = arduino::Mesh::parse(
        "[[node]]\nname = \"t\"\nsketch = \"thermometer\"\nport = 1\n[node.config]\nstrat = 1.0\n",
        "test mesh",
    )
    .unwrap();
    let error = thermometer::registry()
        .check(&mesh)
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "test mesh: node \"t\": config key `strat` is not known to sketch thermometer (did you mean `start`?)"
    );
}
