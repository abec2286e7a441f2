//! The clock: ticks on an interval and sends each tick to its peers, waiting for each ack.

use tracing::info;

use crate::{Ack, ConfigError, Context, Input, Key, Setup, Sketch, Text, logging::shown};

/// Sends `0`, `1`, `2`, ... on `channel` to each of its peers, `delay` seconds apart, `tacks`
/// times, waiting for each acknowledgement. A tick a peer did not acknowledge is sent again,
/// up to `retries` times (so a tick may arrive twice, but never silently not at all); after
/// that the tick counts as failed and the clock's run as not delivered.
pub struct Clock {
    channel: String,
    retries: u32,
}

/// What the clock acknowledges for a tick every peer acknowledged.
pub const DELIVERED: Ack = Ack::from_static("delivered");

impl Sketch for Clock {
    const LISTENS: bool = false;

    const CONFIG: &'static [Key] = &[
        Key::whole("tacks", 5, "ticks to send (0 or more)"),
        Key::number(
            "delay",
            1.0,
            "seconds between ticks (0 to 86400, fractions allowed)",
        ),
        Key::text(
            "channel",
            "/datafeed",
            "the channel (URL path) ticks are sent on",
        ),
        Key::whole(
            "retries",
            2,
            "times a tick a peer did not acknowledge is sent again",
        ),
    ];

    fn setup(setup: &mut Setup<'_>) -> Result<Self, ConfigError> {
        let tacks: u64 = setup.get("tacks")?;
        let delay = setup.seconds("delay")?;
        let channel: String = setup.get("channel")?;
        check_channel(&channel).map_err(|message| ConfigError::invalid("channel", message))?;
        let retries: u32 = setup.get("retries")?;
        if setup.peers().is_empty() {
            return Err(ConfigError::invalid(
                "to",
                "is empty: the clock has nothing to drive (give --port, or a `to` list in the mesh file)",
            ));
        }
        setup.tick_every(delay, Some(tacks));
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
                        info!("< {}", shown(ack.as_str()));
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

/// Whether `channel` can be the path of a websocket URL: `/`, then the characters RFC 3986
/// allows in a path, with `%` only as the start of an escape like `%20`.
fn check_channel(channel: &str) -> Result<(), String> {
    let shown = crate::mesh::shown(channel);
    if !channel.starts_with('/') {
        return Err(format!("must be a path starting with `/`, not {shown:?}"));
    }
    let bytes = channel.as_bytes();
    for (i, &byte) in bytes.iter().enumerate() {
        let allowed = byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&byte);
        let escape = byte == b'%'
            && bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
            && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
        let escaped = i >= 1 && bytes[i - 1] == b'%' || i >= 2 && bytes[i - 2] == b'%';
        if !(allowed || escape || escaped && byte.is_ascii_hexdigit()) {
            return Err(format!(
                "must be a URL path (letters, digits, `/-._~` and %-escapes), not {shown:?}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn clock(
        config: &str,
        peers: &[String],
    ) -> Result<(Clock, Option<crate::sketch::Ticks>), ConfigError> {
        let table: toml::Table = toml::from_str(config).unwrap();
        let mut setup = Setup::new(Clock::CONFIG, "clock", &table, 0, peers);
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

    #[test]
    fn delays_beyond_a_day_or_not_numbers_are_refused_in_words() {
        let peers = ["iopin".to_owned()];
        for delay in ["1e300", "inf", "nan", "-0.5", "86401"] {
            let error = clock(&format!("delay = {delay}"), &peers).err().unwrap();
            assert!(
                error
                    .to_string()
                    .starts_with("config key `delay` must be between 0 and 86400 seconds, not "),
                "{error}"
            );
        }
        let error = clock("delay = \"soon\"", &peers).err().unwrap();
        assert_eq!(
            error.to_string(),
            "config key `delay` must be a number of seconds, not \"soon\""
        );
        // The smallest values are no panic either: a zero period, run as fast as it can.
        let (_, ticks) = clock("delay = 1e-300", &peers).unwrap();
        assert_eq!(ticks.unwrap().period, Duration::ZERO);
        let (_, ticks) = clock("delay = -0.0\ntacks = 9223372036854775807", &peers).unwrap();
        assert_eq!(ticks.unwrap().count, Some(i64::MAX as u64));
    }

    #[test]
    fn the_channel_must_be_a_url_path() {
        let peers = ["iopin".to_owned()];
        for good in ["/", "/datafeed", "/a/b-c_d.e~f", "/x%20y", "/a:b@c"] {
            let config = format!("channel = {good:?}");
            assert!(clock(&config, &peers).is_ok(), "{good}");
        }
        for bad in [
            "datafeed",
            "",
            "/a b",
            "/a?b",
            "/a#b",
            "/%zz",
            "/%2",
            "/caf\u{e9}",
            "/a\nb",
        ] {
            let config = format!("channel = {bad:?}");
            let error = clock(&config, &peers).err().unwrap().to_string();
            assert!(
                error.starts_with("config key `channel` must be a"),
                "{bad}: {error}"
            );
            assert!(!error.contains('\n'), "{error}");
        }
    }
}
