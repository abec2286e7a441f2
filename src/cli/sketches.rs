//! `arduino sketches`: the sketches that can be run, one line each; with `-v`, how each runs.

use clap::Args;

use super::{Verbosity, print};
use crate::Registry;

#[derive(Debug, Args)]
pub(super) struct SketchesArgs {
    /// With -v, each sketch also says how it runs.
    #[command(flatten)]
    pub(super) verbosity: Verbosity,
}

/// `arduino sketches`: each sketch's name and what it does.
pub(super) fn run(registry: &Registry, args: &SketchesArgs) -> anyhow::Result<()> {
    let width = registry
        .names()
        .iter()
        .map(|name| name.len())
        .max()
        .unwrap_or(0);
    let mut out = std::io::stdout().lock();
    for entry in registry.entries() {
        print(
            &mut out,
            format_args!("{:<width$}  {}", entry.name, entry.about),
        )?;
        if args.verbosity.verbose > 0 {
            let runs = if entry.listens {
                format!("listens: `arduino {} --port PORT`", entry.name)
            } else {
                format!(
                    "drives other nodes: `arduino {} --port PORT` (the node to drive)",
                    entry.name
                )
            };
            print(&mut out, format_args!("{:<width$}  {runs}", ""))?;
        }
    }
    Ok(())
}
