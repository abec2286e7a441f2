//! The clock: ticks on an interval and sends each tick to its peers, waiting for each ack.

use std::time::Duration;

use tracing::info;

use crate::{Ack, ConfigError, Context, Input, Setup, Sketch, Text};

/// Sends `0`, `1`, `2`, ... on `channel` to each of its peers, `delay` seconds apart, `tacks`
/// times, waiting for each acknowledgement. A tick a peer did not acknowledge is sent again,
/// up to `retries` times (so a tick may arrive twice, but never silently not at all); after
/// that the tick counts as failed and the clock's run as not delivered.
///
/// Config: `tacks` (default 5), `delay` in seconds (default 1, fractions allowed), `channel`
/// (default `/datafeed`), `retries` (default 2).
pub struct Clock {
    channel: String,
    retries: u32,
}

/// What the clock acknowledges for a tick every peer acknowledged.
pub const DELIVERED: Ack = Ack::from_static("delivered");

impl Sketch for Clock {
    const LISTENS: bool = false;

    fn setup(setup: &mut Setup<'_>) -> Result<Self, ConfigError> {
        let tacks = setup.get("tacks", 5u64)?;
        let delay = setup.get("delay", 1.0)?;
        if !(delay.is_finite() && delay >= 0.0) {
            return Err(ConfigError::invalid(
                "delay",
                "must be a number of seconds, 0 or more",
            ));
        }
        let channel = setup.get("channel", "/datafeed".to_owned())?;
        let retries = setup.get("retries", 2u32)?;
        if setup.peers().is_empty() {
            return Err(ConfigError::invalid(
                "to",
                "is empty: the clock has nothing to drive (give --port, or a `to` list in the mesh file)",
            ));
        }
        setup.tick_every(Duration::from_secs_f64(delay), Some(tacks));
        Ok(Self { channel, retries })
    }

    async fn loop_once(&mut self, ctx: &mut Context, input: Input<'_>) -> Ack {
        let Input::Tick(n) = input else {
            return Ack::NA;
        };
        let tick = Text::from(n.to_string());
        for peer in 0..ctx.peer_count() {
            info!("> {n}");
            let mut attempt = 0;
            loop {
                match ctx.send(peer, &self.channel, tick.clone()).await {
                    Ok(ack) => {
                        info!("< {ack}");
                        break;
                    }
                    Err(_) if attempt < self.retries => {
                        // The failure itself is already logged, with its reason.
                        attempt += 1;
                        info!("sending tick {n} again ({attempt} of {})", self.retries);
                    }
                    Err(error) => return Ack::error(error),
                }
            }
        }
        DELIVERED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock(
        config: &str,
        peers: &[String],
    ) -> Result<(Clock, Option<crate::sketch::Ticks>), ConfigError> {
        let table: toml::Table = toml::from_str(config).unwrap();
        let mut setup = Setup::new("clock", &table, 0, peers);
        let clock = Clock::setup(&mut setup)?;
        Ok((clock, setup.ticks()))
    }

    #[test]
    fn ticks_as_configured() {
        let peers = ["iopin".to_owned()];
        let (set_up, ticks) = clock("tacks = 3\ndelay = 0.25", &peers).unwrap();
        let ticks = ticks.unwrap();
        assert_eq!(ticks.count, Some(3));
        assert_eq!(ticks.period, Duration::from_millis(250));
        assert_eq!(set_up.channel, "/datafeed");
        let (_, ticks) = clock("", &peers).unwrap();
        assert_eq!(ticks.unwrap().count, Some(5));
        assert_eq!(ticks.unwrap().period, Duration::from_secs(1));
    }

    #[test]
    fn refuses_to_run_without_peers_or_with_bad_values() {
        let error = clock("", &[]).err().unwrap();
        assert!(error.to_string().contains("nothing to drive"), "{error}");
        let peers = ["iopin".to_owned()];
        assert!(clock("delay = -1", &peers).is_err());
        assert!(clock("tacks = -1", &peers).is_err());
    }
}
