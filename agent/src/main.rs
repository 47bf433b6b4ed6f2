//! tikfleet-agent binary: parse the command line, install logging, run the command.
//! Everything it does lives in the library (`cli`), so tests call exactly what runs here.

use std::process::ExitCode;

use clap::Parser;
use tikfleet_agent::cli::{Cli, run_local};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut stdout = std::io::stdout().lock();
    match run_local(&cli, &mut stdout).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
