//! The I/O pin: on each message, draws random bits and streams them to its peers.

use std::fmt;

use rand::{RngExt, rngs::SmallRng};
use tracing::{debug, info};

use crate::{Ack, ConfigError, Context, Input, Key, Setup, Sketch, Text, logging::shown};

/// For each message, draws `sequence` random bits (each `0` with probability `chance`, else
/// `1`), streams them one message at a time to every peer in order on the message's channel,
/// waits for each acknowledgement, then acknowledges `acknowledged`. When a peer fails, the
/// message is acknowledged with an `error: ` naming it.
///
/// A tick of its own timer (`every` in the node's `[node.input]`) is drawn and streamed the
/// same way, on channel `/datafeed`.
pub struct IoPin {
    chance: f64,
    sequence: u32,
    rng: SmallRng,
}

/// What the pin acknowledges once every bit has been acknowledged.
pub const ACKNOWLEDGED: Ack = Ack::from_static("acknowledged");

/// A draw of bits, first bit in the lowest position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bits {
    bits: u64,
    len: u32,
}

impl Bits {
    /// The bits in order, as the messages that carry them.
    pub fn messages(self) -> impl Iterator<Item = Text> {
        (0..self.len).map(move |i| {
            if self.bits >> i & 1 == 1 {
                Text::from_static("1")
            } else {
                Text::from_static("0")
            }
        })
    }
}

impl fmt::Display for Bits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for i in 0..self.len {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(if self.bits >> i & 1 == 1 { "1" } else { "0" })?;
        }
        Ok(())
    }
}

impl IoPin {
    fn draw(&mut self) -> Bits {
        let mut bits = 0;
        for i in 0..self.sequence {
            if !self.rng.random_bool(self.chance) {
                bits |= 1 << i;
            }
        }
        Bits {
            bits,
            len: self.sequence,
        }
    }
}

impl Sketch for IoPin {
    const CONFIG: &'static [Key] = &[
        Key::number("chance", 0.5, "probability that a drawn bit is 0 (0 to 1)"),
        Key::whole("sequence", 3, "bits drawn per message (1 to 64)"),
    ];

    fn setup(setup: &mut Setup<'_>) -> Result<Self, ConfigError> {
        let chance: f64 = setup.get("chance")?;
        if !(0.0..=1.0).contains(&chance) {
            return Err(ConfigError::invalid(
                "chance",
                format_args!(
                    "must be between 0 and 1, not {}",
                    crate::sketch::number(chance)
                ),
            ));
        }
        let sequence: u32 = setup.get("sequence")?;
        if !(1..=64).contains(&sequence) {
            return Err(ConfigError::invalid(
                "sequence",
                format_args!("must be between 1 and 64, not {sequence}"),
            ));
        }
        Ok(Self {
            chance,
            sequence,
            rng: setup.rng(),
        })
    }

    async fn loop_once(&mut self, ctx: &mut Context, input: Input<'_>) -> Ack {
        // A tick of its own timer (`every` in `[node.input]`) is drawn like a message, so an
        // iopin on a timer drives its peers with no clock at all.
        let bits = self.draw();
        match input {
            // The runtime logs the message and its ack; what the sketch adds is the bits it drew.
            Input::Message { channel, text } => {
                info!("drew {bits} for tick {}", shown(text));
                self.stream(ctx, channel, bits).await
            }
            Input::Tick(n) => {
                info!("drew {bits} for timer tick {n} on {TICK_CHANNEL}");
                self.stream(ctx, TICK_CHANNEL, bits).await
            }
        }
    }
}

/// The channel an iopin streams its timer's ticks on: the clock's.
pub const TICK_CHANNEL: &str = "/datafeed";

impl IoPin {
    async fn stream(&self, ctx: &mut Context, channel: &str, bits: Bits) -> Ack {
        for peer in 0..ctx.peer_count() {
            for bit in bits.messages() {
                match ctx.send(peer, channel, bit).await {
                    Ok(ack) => debug!("{} < {}", ctx.peer_name(peer), shown(ack.as_str())),
                    Err(error) => return Ack::error(error),
                }
            }
        }
        ACKNOWLEDGED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin(config: &str, seed: u64) -> Result<IoPin, ConfigError> {
        let table: toml::Table = toml::from_str(config).unwrap();
        IoPin::setup(&mut Setup::new(IoPin::CONFIG, "iopin", &table, seed, &[]))
    }

    #[test]
    fn draws_sequence_bits() {
        let mut pin = pin("sequence = 5", 1).unwrap();
        let bits = pin.draw();
        assert_eq!(bits.messages().count(), 5);
        assert_eq!(bits.to_string().split(' ').count(), 5);
    }

    #[test]
    fn chance_is_the_probability_of_a_zero() {
        let mut zeros = pin("chance = 1.0\nsequence = 64", 7).unwrap();
        assert_eq!(zeros.draw().bits, 0);
        let mut ones = pin("chance = 0.0\nsequence = 64", 7).unwrap();
        assert_eq!(ones.draw().bits, u64::MAX);
        let mut mixed = pin("chance = 0.6\nsequence = 64", 7).unwrap();
        let zero_count = (0..100)
            .map(|_| 64 - mixed.draw().bits.count_ones())
            .sum::<u32>();
        // 6400 draws at 0.6: far outside 3500..4200 only if `chance` were ignored.
        assert!((3500..4200).contains(&zero_count), "{zero_count}");
    }

    #[test]
    fn the_same_seed_draws_the_same_bits() {
        let mut a = pin("sequence = 32", 42).unwrap();
        let mut b = pin("sequence = 32", 42).unwrap();
        let mut c = pin("sequence = 32", 43).unwrap();
        let (x, y, z) = (a.draw(), b.draw(), c.draw());
        assert_eq!(x, y);
        assert_ne!(x, z);
    }

    #[test]
    fn bad_config_is_refused() {
        assert!(pin("chance = 1.5", 0).is_err());
        assert!(pin("sequence = 65", 0).is_err());
        assert!(pin("sequence = -1", 0).is_err());
        let error = pin("sequence = 0", 0).err().unwrap();
        assert_eq!(
            error.to_string(),
            "config key `sequence` must be between 1 and 64, not 0"
        );
        for chance in ["nan", "inf", "-inf", "1e300", "-5e-324"] {
            let error = pin(&format!("chance = {chance}"), 0).err().unwrap();
            assert!(
                error.to_string().starts_with("config key `chance` must be"),
                "{error}"
            );
        }
        assert!(pin("chance = -0.0", 0).is_ok());
        assert!(pin("chance = \"high\"", 0).is_err());
    }

    #[test]
    fn bits_print_in_order() {
        let bits = Bits {
            bits: 0b101,
            len: 3,
        };
        assert_eq!(bits.to_string(), "1 0 1");
        let texts: Vec<String> = Bits {
            bits: 0b110,
            len: 3,
        }
        .messages()
        .map(|t| t.to_string())
        .collect();
        assert_eq!(texts, ["0", "1", "1"]);
    }
}
