//! tikfleet-sim binary: parse flags, install tracing, start, print one line per listener, run
//! until Ctrl-C or SIGTERM. See README.md for the flags and the printed lines.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// A RouterOS device you can run: API, API-SSL, SSH and an HTTP control endpoint.
#[derive(Debug, Parser)]
#[command(name = "tikfleet-sim", disable_version_flag = true)]
struct Args {
    /// API listen address (router i listens on port + i).
    #[arg(long)]
    api: SocketAddr,
    /// API-SSL listen address.
    #[arg(long = "api-ssl")]
    api_ssl: Option<SocketAddr>,
    /// SSH listen address.
    #[arg(long)]
    ssh: Option<SocketAddr>,
    /// HTTP control endpoint address (keep it on loopback).
    #[arg(long)]
    control: Option<SocketAddr>,
    /// Number of routers.
    #[arg(long, default_value_t = 1)]
    routers: usize,
    /// Login user.
    #[arg(long)]
    user: String,
    /// Login password.
    #[arg(long)]
    password: String,
    /// RouterOS version to simulate (6.43 or later; 6.x switches v6 behaviour).
    #[arg(long, default_value = "7.16.2")]
    version: String,
    /// Delay before a disconnected client dials again, in ms.
    #[arg(long = "redial-ms", default_value_t = 2000)]
    redial_ms: u64,
    /// How long a reboot keeps the router down, in ms.
    #[arg(long = "reboot-down-ms", default_value_t = 3000)]
    reboot_down_ms: u64,
    /// Pre-populate each router with N secrets (`seed-K` / `pw-K`).
    #[arg(long = "seed-secrets", default_value_t = 0)]
    seed_secrets: usize,
    /// Write the API-SSL certificate (PEM) to this file.
    #[arg(long = "cert-out")]
    cert_out: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line a person can act on: the error and its causes, no backtrace.
            eprintln!("tikfleet-sim: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = tikfleet_sim::Config {
        api: args.api,
        api_ssl: args.api_ssl,
        ssh: args.ssh,
        control: args.control,
        routers: args.routers,
        user: args.user,
        password: args.password,
        version: args.version,
        redial: Duration::from_millis(args.redial_ms),
        reboot_down: Duration::from_millis(args.reboot_down_ms),
        seed_secrets: args.seed_secrets,
        cert_out: args.cert_out,
    };
    let running = tikfleet_sim::start(config).await?;
    {
        let mut out = std::io::stdout().lock();
        for line in running.lines() {
            writeln!(out, "{line}")?;
        }
        out.flush()?;
    }
    shutdown_signal().await;
    running.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_parses() {
        use clap::CommandFactory;
        Args::command().debug_assert();
        let a = Args::try_parse_from([
            "tikfleet-sim",
            "--api",
            "127.0.0.1:0",
            "--api-ssl",
            "127.0.0.1:0",
            "--ssh",
            "127.0.0.1:0",
            "--control",
            "127.0.0.1:0",
            "--routers",
            "2",
            "--user",
            "admin",
            "--password",
            "pw",
            "--version",
            "6.49.10",
        ])
        .expect("parses");
        assert_eq!(a.version, "6.49.10");
        assert_eq!(a.routers, 2);
    }
}
