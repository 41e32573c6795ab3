//! `qwire bench` (being written).
use crate::Failure;

/// `qwire bench` arguments.
#[derive(clap::Args)]
pub(crate) struct BenchArgs {}

/// Runs the benchmark.
pub(crate) fn run(_args: BenchArgs) -> Result<(), Failure> {
    println!("qwire bench: not yet implemented");
    Ok(())
}
