use clap::Parser;
use lio_replica::cli::{self, Cli};
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

fn main() {
    let cli = Cli::parse();
    // RUST_LOG wins; otherwise the daemon logs at info and the client only warns, one level
    // more per -v.
    let base = u8::from(cli.is_serve());
    let level =
        ["warn", "info", "debug", "trace"][usize::from(cli.verbose.saturating_add(base)).min(3)];
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    std::process::exit(cli::run(cli));
}
