//! Telemetry ingest: can the controller store the probe samples of 10,000 routers at one
//! sample each per 30 s (333 samples/s), and keep up at ten times that (3,333 samples/s)?
//!
//! The routers belong to 50 agents of 200 routers each; a round is one sample of every router
//! (each agent commits its 200 samples as one batch through the hub's storage,
//! `HubStore::commit_records`, which is what a hub session does with a window of records),
//! agents committing concurrently. It prints samples per second achieved against the 10x
//! requirement, the time of the retention run that rolls the samples up, and the database
//! size per router per day (raw samples for a day, and the steady state: 48 h raw + 90 days
//! of 5-minute rollups).
//!
//! ```text
//! cargo bench -p tikfleet-controller --bench telemetry_ingest                 # SQLite
//! TIKFLEET_BENCH_DATABASE_URL=$(scripts/pg start) \
//!     cargo bench -p tikfleet-controller --bench telemetry_ingest             # PostgreSQL
//! ```
//!
//! `TIKFLEET_BENCH_ROUNDS` (default 12: six simulated minutes) sets how many rounds run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::Connection as _;
use tikfleet_controller::clock::ManualClock;
use tikfleet_controller::crypto::AtRestKey;
use tikfleet_controller::db::health::HealthRetention;
use tikfleet_controller::db::{Backend, Db, Scope, Staff};
use tikfleet_controller::hub::HubStore as _;
use tikfleet_shared::record::{
    InterfaceCounters, OutboxRecord, RouterSample, Telemetry, TelemetrySample,
};
use tikfleet_shared::{AgentId, RouterId, TenantId, UnixMillis};

const AGENTS: usize = 50;
const ROUTERS_PER_AGENT: usize = 200;
const INTERVAL_MS: i64 = 30_000;
/// 2026-01-01T00:00:00Z.
const START: i64 = 1_767_225_600_000;

fn sample(router: RouterId, at: i64, i: u64) -> OutboxRecord {
    let iface = |name: &str, k: u64| InterfaceCounters {
        name: name.into(),
        running: true,
        rx_bytes: 1_000_000_000 + i * 12_345 * k,
        tx_bytes: 3_000_000_000 + i * 54_321 * k,
        rx_packets: 1_000_000 + i * 10,
        tx_packets: 2_000_000 + i * 20,
        rx_errors: 0,
        tx_errors: 0,
    };
    OutboxRecord::Telemetry(Telemetry {
        at: UnixMillis(at),
        sample: TelemetrySample::Router(RouterSample {
            router_id: router,
            cpu_load_percent: u8::try_from(i % 100).unwrap_or(0),
            free_memory_bytes: 600_000_000 + i % 1000,
            total_memory_bytes: 1_073_741_824,
            uptime_secs: 86_400 + i * 30,
            free_disk_bytes: 90_000_000,
            total_disk_bytes: 134_217_728,
            interfaces: vec![iface("ether1", 1), iface("ether2", 2), iface("sfp1", 3)],
            active_ppp_sessions: 300 + u32::try_from(i % 50).unwrap_or(0),
            active_hotspot_sessions: 20,
            routeros_version: Some("7.16.2".into()),
        }),
    })
}

async fn setup(db: &Db, url: &str) -> anyhow::Result<Vec<(AgentId, Vec<RouterId>)>> {
    let admin = Staff {
        scope: Scope::Admin,
        actor: "bench".into(),
    };
    let tenant: TenantId = db.create_tenant(&admin, "bench").await?.id;
    // Agents and routers straight into their tables (the API's per-router checks and
    // sealing are not what this measures).
    let mut conn = sqlx::AnyConnection::connect(url).await?;
    let mut fleet = Vec::new();
    for a in 0..AGENTS {
        let agent = AgentId::new();
        sqlx::query(&format!(
            "INSERT INTO agents (id, tenant_id, name, seal_key, agent_version, created_at) \
             VALUES ('{agent}', '{tenant}', 'agent-{a}', 'x', '0.1.0', {START})"
        ))
        .execute(&mut conn)
        .await?;
        let routers: Vec<RouterId> = (0..ROUTERS_PER_AGENT).map(|_| RouterId::new()).collect();
        let values: Vec<String> = routers
            .iter()
            .enumerate()
            .map(|(r, id)| {
                format!(
                    "('{id}', '{tenant}', '{agent}', 'r-{a}-{r}', '10.0.0.1', 8728, 22, \
                     '{{\"mode\":\"plain\"}}', 'admin', 'x', 'unknown', 1, 0, {START}, {START})"
                )
            })
            .collect();
        sqlx::query(&format!(
            "INSERT INTO routers (id, tenant_id, agent_id, name, address, api_port, ssh_port, \
             tls, username, sealed_password, status, revision, generation, created_at, \
             updated_at) VALUES {}",
            values.join(", ")
        ))
        .execute(&mut conn)
        .await?;
        fleet.push((agent, routers));
    }
    conn.close().await?;
    Ok(fleet)
}

/// Bytes of the health tables: on SQLite the database file (with its WAL), on PostgreSQL
/// the tables named (indexes included).
async fn size_bytes(
    db_url: &str,
    backend: Backend,
    sqlite_file: Option<&std::path::Path>,
    tables: &[&str],
) -> u64 {
    match backend {
        Backend::Sqlite => {
            let Some(path) = sqlite_file else { return 0 };
            // Pages move from the WAL into the file first, so the file holds them once.
            if let Ok(mut conn) = sqlx::AnyConnection::connect(db_url).await {
                let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                    .execute(&mut conn)
                    .await;
                let _ = conn.close().await;
            }
            let _ = tables;
            let mut total = 0;
            for suffix in ["", "-wal"] {
                let mut p = path.as_os_str().to_owned();
                p.push(suffix);
                total += std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            }
            total
        }
        Backend::Postgres => {
            let Ok(mut conn) = sqlx::AnyConnection::connect(db_url).await else {
                return 0;
            };
            let mut total = 0;
            for table in tables {
                let row: Result<(i64,), _> = sqlx::query_as(&format!(
                    "SELECT CAST(pg_total_relation_size('{table}') AS BIGINT)"
                ))
                .fetch_one(&mut conn)
                .await;
                total += row.map(|r| u64::try_from(r.0).unwrap_or(0)).unwrap_or(0);
            }
            total
        }
    }
}

#[allow(clippy::cast_precision_loss)]
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sqlx::any::install_default_drivers();
    let rounds: i64 = std::env::var("TIKFLEET_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let dir = tempfile::tempdir()?;
    let (url, sqlite_file) = match std::env::var("TIKFLEET_BENCH_DATABASE_URL") {
        Ok(server) if !server.is_empty() => {
            // A fresh database on the server.
            let name = format!("tf_bench_{}", uuid::Uuid::now_v7().simple());
            let mut conn = sqlx::AnyConnection::connect(&server).await?;
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await?;
            let base = server.split('?').next().unwrap_or(&server);
            let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
            (format!("{base}/{name}"), None)
        }
        _ => (
            tikfleet_controller::db::sqlite_url(dir.path()),
            Some(dir.path().join("controller.db")),
        ),
    };
    let clock = ManualClock::new(UnixMillis(START));
    let db = Db::open(&url, AtRestKey::generate()?, Arc::new(clock.clone())).await?;
    let backend = db.backend();
    let fleet = setup(&db, &url).await?;
    let routers = AGENTS * ROUTERS_PER_AGENT;
    let sqlite_file = sqlite_file.filter(|p| p.exists()).or_else(|| {
        std::fs::read_dir(dir.path())
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "db" || e == "sqlite"))
    });
    let tables = ["health_samples", "health_rollups"];
    let size_before = size_bytes(&url, backend, sqlite_file.as_deref(), &tables).await;

    println!(
        "telemetry ingest on {backend:?}: {routers} routers ({AGENTS} agents x {ROUTERS_PER_AGENT}), \
         {rounds} rounds of one sample per router"
    );
    let fleet = Arc::new(fleet);
    let started = Instant::now();
    let mut slowest_round = Duration::ZERO;
    for round in 0..rounds {
        let at = START + round * INTERVAL_MS;
        let round_start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for a in 0..AGENTS {
            let db = db.clone();
            let fleet = Arc::clone(&fleet);
            tasks.spawn(async move {
                let (agent, routers) = &fleet[a];
                let first = u64::try_from(round).unwrap_or(0) * ROUTERS_PER_AGENT as u64;
                let batch: Vec<(u64, OutboxRecord)> = routers
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        let seq = first + i as u64 + 1;
                        (seq, sample(*r, at, seq))
                    })
                    .collect();
                db.commit_records(*agent, &batch).await
            });
        }
        while let Some(res) = tasks.join_next().await {
            res??;
        }
        slowest_round = slowest_round.max(round_start.elapsed());
    }
    let elapsed = started.elapsed();
    let samples = routers as f64 * rounds as f64;
    let rate = samples / elapsed.as_secs_f64();
    let required_1x = routers as f64 / 30.0;
    let required_10x = required_1x * 10.0;
    println!(
        "  stored {samples:.0} samples in {:.2} s: {rate:.0} samples/s (required: {required_1x:.0}/s at 1x, \
         {required_10x:.0}/s at 10x) -> {:.1}x the 10x rate; slowest round {:.0} ms of the 3,000 ms a 10x round may take",
        elapsed.as_secs_f64(),
        rate / required_10x,
        slowest_round.as_secs_f64() * 1000.0,
    );
    if rate >= required_10x {
        println!("  keeps up at 10x: yes");
    } else {
        println!("  keeps up at 10x: NO");
    }

    let size_after = size_bytes(&url, backend, sqlite_file.as_deref(), &tables).await;
    let per_sample = size_after.saturating_sub(size_before) as f64 / samples;
    let raw_day = per_sample * 2_880.0;
    println!(
        "  database growth: {:.1} MB, {per_sample:.0} bytes per raw sample (indexes included) \
         -> {:.0} KB per router per day of raw samples",
        size_after.saturating_sub(size_before) as f64 / 1e6,
        raw_day / 1e3
    );

    // Retention: roll everything up (the clock an hour on) and measure a rollup row.
    clock.set(UnixMillis(START + rounds * INTERVAL_MS + 3_600_000));
    let t = Instant::now();
    let report = db
        .health_maintenance(&HealthRetention {
            raw: Duration::from_secs(60),
            ..HealthRetention::default()
        })
        .await?;
    let maintenance = t.elapsed();
    // The rollups' own size: on SQLite the file after a VACUUM (raw samples are gone now)
    // against the size before any sample; on PostgreSQL the rollup table.
    let rollup_bytes = match backend {
        Backend::Sqlite => {
            let mut conn = sqlx::AnyConnection::connect(&url).await?;
            sqlx::query("VACUUM").execute(&mut conn).await?;
            conn.close().await?;
            size_bytes(&url, backend, sqlite_file.as_deref(), &tables)
                .await
                .saturating_sub(size_before)
        }
        Backend::Postgres => {
            size_bytes(&url, backend, sqlite_file.as_deref(), &["health_rollups"]).await
        }
    };
    println!(
        "  retention run: {} rollups written, {} raw samples deleted in {:.0} ms",
        report.rolled_up,
        report.raw_deleted,
        maintenance.as_secs_f64() * 1000.0
    );
    let per_rollup = rollup_bytes as f64 / report.rolled_up.max(1) as f64;
    let steady = per_sample * 2_880.0 * 2.0 + per_rollup * 288.0 * 90.0;
    println!(
        "  {per_rollup:.0} bytes per 5-minute rollup -> {:.0} KB per router per day of rollups",
        per_rollup * 288.0 / 1e3
    );
    println!(
        "  per router: {:.0} KB per day raw; steady state (48 h raw + 90 days of rollups) ~ {:.1} MB \
         per router, {:.1} GB for {routers} routers",
        raw_day / 1e3,
        steady / 1e6,
        steady * routers as f64 / 1e9
    );
    db.close().await;
    Ok(())
}
