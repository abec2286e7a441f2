//! The buzzer: buzzes on a `1`, stays quiet on anything else.

use crate::{Ack, ConfigError, Context, Input, Key, Setup, Sketch};

/// Acknowledges `1` with its sound and anything else with `...`.
pub struct Buzzer {
    sound: Ack,
}

/// What the buzzer says to anything but a `1`.
pub const QUIET: Ack = Ack::from_static("...");

impl Buzzer {
    fn react(&self, signal: &str) -> Ack {
        if signal == "1" {
            self.sound.clone()
        } else {
            QUIET
        }
    }
}

impl Sketch for Buzzer {
    const CONFIG: &'static [Key] = &[Key::text(
        "sound",
        "buzz buzz buzz",
        "what it acknowledges a `1` with",
    )];

    fn setup(setup: &mut Setup<'_>) -> Result<Self, ConfigError> {
        let sound: String = setup.get("sound")?;
        Ok(Self {
            sound: Ack::from(sound),
        })
    }

    async fn loop_once(&mut self, _ctx: &mut Context, input: Input<'_>) -> Ack {
        match input {
            // The runtime logs the message and this ack.
            Input::Message { text, .. } => self.react(text),
            Input::Tick(_) => Ack::NA,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buzzer(config: &str) -> Result<Buzzer, ConfigError> {
        let table: toml::Table = toml::from_str(config).unwrap();
        Buzzer::setup(&mut Setup::new(Buzzer::CONFIG, "buzzer", &table, 0, &[]))
    }

    #[test]
    fn buzzes_on_one_only() {
        let buzzer = buzzer("").unwrap();
        assert_eq!(buzzer.react("1").as_str(), "buzz buzz buzz");
        assert_eq!(buzzer.react("0").as_str(), "...");
        assert_eq!(buzzer.react("11").as_str(), "...");
        assert_eq!(buzzer.react("").as_str(), "...");
    }

    #[test]
    fn the_sound_is_configurable() {
        let beeper = buzzer("sound = \"beep\"").unwrap();
        assert_eq!(beeper.react("1").as_str(), "beep");
        assert!(buzzer("sound = 3").is_err());
    }
}
