//! The `arduino` program: the library's command line, with the built-in sketches.

fn main() -> std::process::ExitCode {
    arduino::cli::main(arduino::builtin())
}
