//! The whole `arduino` program with a sketch of your own beside the built-in ones: every
//! subcommand and flag, from a `main` of one line.
//!
//! ```sh
//! cargo run --example own_program -- sketches
//! cargo run --example own_program -- thermometer --port 8767
//! cargo run --example own_program -- send ws://127.0.0.1:8767 read read
//! ```

#[path = "thermometer.rs"]
mod thermometer;

fn main() -> std::process::ExitCode {
    arduino::cli::main(
        arduino::builtin()
            .with::<thermometer::Thermometer>("thermometer", "reports a drifting temperature"),
    )
}
