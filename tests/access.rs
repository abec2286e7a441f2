//! The mesh's shared secret: a handshake without it, or with a wrong one, gets HTTP 401; peer
//! links and `arduino send` present it; it never appears in a log.

mod common;

use common::{MeshFile, Process, arduino, free_port, ws};
use tokio_tungstenite::{
    connect_async,
    tungstenite::{Error, client::IntoClientRequest, http::HeaderValue},
};

const SECRET: &str = "correct-horse-battery-staple";

async fn status_with(url: &str, authorization: Option<&str>) -> Result<(), u16> {
    let mut request = url.into_client_request().unwrap();
    if let Some(value) = authorization {
        request
            .headers_mut()
            .insert("authorization", HeaderValue::from_str(value).unwrap());
    }
    match connect_async(request).await {
        Ok(_) => Ok(()),
        Err(Error::Http(response)) => Err(response.status().as_u16()),
        Err(other) => panic!("unexpected failure: {other}"),
    }
}

/// Without the secret, or with a wrong one: HTTP 401. With it: served.
#[tokio::test]
async fn a_node_with_a_secret_refuses_other_handshakes() {
    let (node, addr) = Process::node(
        &["buzzer", "--port", "0", "-v"],
        &[("ARDUINO_SECRET", SECRET)],
    );
    let url = format!("ws://{addr}/datafeed");
    assert_eq!(status_with(&url, None).await, Err(401));
    assert_eq!(status_with(&url, Some("Bearer wrong")).await, Err(401));
    assert_eq!(
        status_with(&url, Some(&format!("Bearer {SECRET}x"))).await,
        Err(401)
    );
    assert_eq!(
        status_with(&url, Some(SECRET)).await,
        Err(401),
        "the Bearer scheme is required"
    );
    assert_eq!(
        status_with(&url, Some(&format!("Bearer {SECRET}"))).await,
        Ok(())
    );
    node.wait_for("HTTP 401 (no secret)");
    node.wait_for("HTTP 401 (wrong secret)");

    // `arduino send` presents the secret from the environment to a node of the mesh.
    let mesh = MeshFile::new(&format!(
        "[[node]]\nname = \"buzzer\"\nport = {}\n",
        addr.port()
    ));
    let env = [("ARDUINO_SECRET", SECRET), ("ARDUINO_MESH", mesh.arg())];
    let ran = arduino(&["send", &url, "1"], &env);
    assert!(ran.ok, "{}", ran.stderr);
    assert_eq!(ran.stdout, "buzz buzz buzz\n");
    let ran = arduino(&["send", &url, "1", "--mesh", mesh.arg()], &[]);
    assert!(!ran.ok);
    assert!(ran.stderr.contains("HTTP 401"), "{}", ran.stderr);
    assert!(node.log().iter().all(|line| !line.contains(SECRET)));
}

/// A mesh whose file holds the secret runs end to end (every link presents it), and no
/// process logs it, even at -v.
#[test]
fn a_mesh_with_a_secret_runs_and_never_logs_it() {
    let (iopin, buzzer) = (free_port(), free_port());
    let mesh = MeshFile::new(&format!(
        "secret = \"{SECRET}\"\n\
         [[node]]\nname = \"clock\"\nto = [\"iopin\"]\n[node.config]\ntacks = 3\ndelay = 0.01\n\n\
         [[node]]\nname = \"iopin\"\nport = {iopin}\nto = [\"buzzer\"]\n\n\
         [[node]]\nname = \"buzzer\"\nport = {buzzer}\n"
    ));
    let mut up = Process::start(&["up", "--mesh", mesh.arg(), "-vv"], &[]);
    assert!(up.wait().success(), "{:#?}", up.log());
    assert_eq!(up.count("[ clock ] < acknowledged"), 3);
    let log = up.log();
    assert!(log.len() > 20);
    assert!(
        log.iter().all(|line| !line.contains(SECRET)),
        "the secret was logged"
    );
}

/// A client without the secret cannot reach a mesh node even to send one message.
#[tokio::test]
async fn no_message_gets_through_without_the_secret() {
    let (node, addr) = Process::node(&["buzzer", "--port", "0"], &[("ARDUINO_SECRET", SECRET)]);
    assert_eq!(status_with(&format!("ws://{addr}/x"), None).await, Err(401));
    // The node is still there for those who have it.
    let mut request = format!("ws://{addr}/x").into_client_request().unwrap();
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {SECRET}")).unwrap(),
    );
    let (mut client, _) = connect_async(request).await.unwrap();
    assert_eq!(ws::ask(&mut client, "1").await, "buzz buzz buzz");
    assert_eq!(node.count("handled"), 0);
}

/// A secret in the environment that cannot travel in a header is refused before anything
/// starts, as one in the mesh file is, by every command that would send or demand it.
#[test]
fn a_bad_secret_in_the_environment_is_refused() {
    for (secret, reason) in [
        (" padded", "starts or ends with a space"),
        ("two\nlines", "control character"),
        ("caf\u{e9}", "not ASCII"),
    ] {
        for args in [
            &["buzzer", "--port", "0"][..],
            &["send", "ws://127.0.0.1:1", "x"],
        ] {
            let ran = arduino(args, &[("ARDUINO_SECRET", secret)]);
            assert!(!ran.ok, "{args:?} ran with secret {secret:?}");
            let lines: Vec<&str> = ran.stderr.lines().collect();
            assert_eq!(lines.len(), 1, "{args:?}: {}", ran.stderr);
            assert!(
                lines[0].starts_with("arduino: the secret in ARDUINO_SECRET ")
                    && lines[0].contains(reason),
                "{args:?}: {}",
                lines[0]
            );
        }
    }
}
