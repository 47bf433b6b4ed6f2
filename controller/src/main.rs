//! `tikfleet-controller`: parses the command line and runs the controller. Everything it does
//! lives in the library ([`tikfleet_controller::server`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use tikfleet_controller::clock::{SharedClock, SystemClock};
use tikfleet_controller::crypto::AtRestKey;
use tikfleet_controller::db::{Db, sqlite_url};
use tikfleet_controller::hub::HubConfig;
use tikfleet_controller::server::{HubCertificate, Server, ServerConfig, shutdown_signal};

/// The tikfleet controller: HTTP API for staff, hub for site agents.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controller: the API and the agent hub, until Ctrl-C or SIGTERM.
    Serve(ServeArgs),
    /// Create another admin token (e.g. when the first one was lost) and print it once.
    AdminToken {
        #[command(flatten)]
        store: StoreArgs,
        /// A name for the token, shown in the audit log as the actor.
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, Args)]
struct StoreArgs {
    /// Data folder: SQLite database, at-rest key, the hub's self-signed certificate.
    #[arg(long, env = "TIKFLEET_DATA", default_value = "tikfleet-data")]
    data: PathBuf,
    /// A PostgreSQL URL (`postgres://user:password@host/db`) instead of SQLite in the data
    /// folder.
    #[arg(long, env = "TIKFLEET_DATABASE_URL")]
    database_url: Option<String>,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Where the HTTP API listens.
    #[arg(long, env = "TIKFLEET_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Where the agent hub (WebSocket over TLS) listens.
    #[arg(long, env = "TIKFLEET_HUB_LISTEN", default_value = "127.0.0.1:7443")]
    hub_listen: SocketAddr,
    /// The URL agents dial, as they reach it (default `wss://<hub-listen>/agent`).
    #[arg(long, env = "TIKFLEET_HUB_URL")]
    hub_url: Option<String>,
    /// The hub's certificate chain (PEM); without it a self-signed certificate is made once
    /// and kept in the data folder.
    #[arg(long, requires = "hub_key")]
    hub_cert: Option<PathBuf>,
    /// The hub certificate's private key (PEM).
    #[arg(long, requires = "hub_cert")]
    hub_key: Option<PathBuf>,
    /// Names for the self-signed certificate (repeatable; default: the host of --hub-url,
    /// localhost and 127.0.0.1).
    #[arg(long = "hub-name")]
    hub_names: Vec<String>,
    /// How long raw router health samples are kept, in hours (then only 5-minute rollups).
    #[arg(long, env = "TIKFLEET_HEALTH_RAW_HOURS", default_value_t = 48)]
    health_raw_hours: u64,
    /// How long 5-minute health rollups are kept, in days.
    #[arg(long, env = "TIKFLEET_HEALTH_ROLLUP_DAYS", default_value_t = 90)]
    health_rollup_days: u64,
}

impl ServeArgs {
    fn config(self) -> ServerConfig {
        let hub_certificate = match (self.hub_cert, self.hub_key) {
            (Some(cert), Some(key)) => HubCertificate::Files { cert, key },
            _ => {
                let mut names = self.hub_names;
                if names.is_empty() {
                    if let Some(host) = self.hub_url.as_deref().and_then(url_host) {
                        names.push(host);
                    }
                    names.extend(["localhost".to_owned(), "127.0.0.1".to_owned()]);
                    names.dedup();
                }
                HubCertificate::SelfSigned { names }
            }
        };
        ServerConfig {
            data_dir: self.store.data,
            database_url: self.store.database_url,
            listen: self.listen,
            hub_listen: self.hub_listen,
            hub_url: self.hub_url,
            hub_certificate,
            hub: HubConfig::default(),
            health: tikfleet_controller::db::health::HealthRetention {
                raw: std::time::Duration::from_secs(self.health_raw_hours.max(1) * 3600),
                rollups: std::time::Duration::from_secs(self.health_rollup_days.max(1) * 86_400),
                ..Default::default()
            },
            rotation_check: std::time::Duration::from_secs(3600),
        }
    }
}

/// The host of `wss://host:port/path`.
fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    (!host.is_empty()).then(|| host.to_owned())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let clock: SharedClock = Arc::new(SystemClock);
    match cli.command {
        Command::Serve(args) => {
            let server = Server::start(args.config(), clock).await?;
            println!("api: {}", server.api_url());
            println!("hub: {}", server.hub_info.url);
            if let Some(token) = &server.new_admin_token {
                println!("token: {token}");
                println!("(the first admin token: it is shown only this once)");
            }
            shutdown_signal().await;
            eprintln!("stopping…");
            server.shutdown().await;
            Ok(())
        }
        Command::AdminToken { store, name } => {
            std::fs::create_dir_all(&store.data)?;
            let key = AtRestKey::load(&store.data)?;
            let url = store
                .database_url
                .unwrap_or_else(|| sqlite_url(&store.data));
            let db = Db::open(&url, key, clock).await?;
            let (_, secret) = db.create_admin_token(&name).await?;
            println!("token: {secret}");
            db.close().await;
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::url_host;

    #[test]
    fn hosts_of_hub_urls() {
        assert_eq!(
            url_host("wss://fleet.example:7443/agent").as_deref(),
            Some("fleet.example")
        );
        assert_eq!(url_host("wss://[::1]:7443/agent").as_deref(), Some("::1"));
        assert_eq!(
            url_host("wss://10.0.0.1/agent").as_deref(),
            Some("10.0.0.1")
        );
        assert_eq!(url_host("nonsense"), None);
    }
}
