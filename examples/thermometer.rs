// README: begin
//! A thermometer: each message asks for a reading, which drifts a little every time.

use arduino::{Ack, ConfigError, Context, Input, Key, Setup, Sketch};
use rand::{RngExt, rngs::SmallRng};

/// Reports a temperature that drifts a little with every reading.
pub struct Thermometer {
    celsius: f64,
    drift: f64,
    rng: SmallRng,
}

impl Sketch for Thermometer {
    const CONFIG: &'static [Key] = &[
        Key::number("start", 20.0, "the first reading, in degrees Celsius"),
        Key::number(
            "drift",
            0.5,
            "the most a reading moves from the last one (0 or more)",
        ),
    ];

    fn setup(setup: &mut Setup<'_>) -> Result<Self, ConfigError> {
        let drift: f64 = setup.get("drift")?;
        if drift < 0.0 {
            return Err(ConfigError::invalid("drift", "must be 0 or more"));
        }
        Ok(Thermometer {
            celsius: setup.get("start")?,
            drift,
            rng: setup.rng(), // seeded: `--seed` makes readings repeat
        })
    }

    // The runtime logs each message and its ack: `< read on /datafeed`, `> 20.3 C`.
    async fn loop_once(&mut self, _ctx: &mut Context, input: Input<'_>) -> Ack {
        match input {
            Input::Message { text: "read", .. } => {
                self.celsius += self.rng.random_range(-self.drift..=self.drift);
                Ack::from(format!("{:.1} C", self.celsius))
            }
            Input::Message { .. } => Ack::error("say `read`"),
            Input::Tick(_) => Ack::NA,
        }
    }
}
// README: end

// Run as an example (a crate of one's own, using `arduino` as a library):
//
//     cargo run --example thermometer -- 8767        # serve it on port 8767
//     cargo run -- send ws://127.0.0.1:8767 read read

/// The sketches this program knows: the built-in ones, and the thermometer.
pub fn registry() -> arduino::Registry {
    arduino::builtin().with::<Thermometer>("thermometer", "reports a drifting temperature")
}

#[allow(dead_code)] // the tests include this file for its sketch, not for `main`
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    arduino::logging::init("info", false);
    let port: u16 = match std::env::args().nth(1) {
        Some(port) => port.parse()?,
        None => 8767,
    };
    let mesh = arduino::Mesh::parse(
        &format!("[[node]]\nname = \"thermometer\"\nport = {port}\n"),
        "built-in mesh",
    )?;
    let node = registry().build(
        &mesh,
        &mesh.nodes[0],
        None,
        arduino::Events::new("thermometer"),
    )?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    arduino::run(node, Some(listener), async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
