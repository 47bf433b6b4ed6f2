//! Benchmark: one simulated router holding 100,000 PPP secrets, printed in full with
//! `.proplist=name,profile` by an independent client (mikrotik-rs), as the agent's drift check
//! will. Prints the figures; the target (well under a second) is read, not asserted.
//!
//! Run: `cargo bench -p tikfleet-e2e --bench sim_print`

use std::time::{Duration, Instant};

use mikrotik_rs::MikrotikDevice;
use tikfleet_e2e::mikrotik_scenario::call;

const SECRETS: usize = 100_000;
const RUNS: usize = 5;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut config = tikfleet_sim::Config::local();
    config.api_ssl = None;
    config.ssh = None;
    config.control = None;
    let seeded = Instant::now();
    config.seed_secrets = SECRETS;
    let sim = tikfleet_sim::start(config).await?;
    println!(
        "start a router seeded with {SECRETS} secrets: {:.0} ms",
        ms(seeded.elapsed())
    );

    let api = sim.routers[0].api.expect("api listener");
    let device = MikrotikDevice::connect(api, "admin", Some("admin")).await?;
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let started = Instant::now();
        let out = call(&device, "/ppp/secret/print", &["=.proplist=name,profile"]).await?;
        times.push(started.elapsed());
        anyhow::ensure!(out.rows.len() == SECRETS, "printed {} rows", out.rows.len());
        anyhow::ensure!(out.traps.is_empty(), "trap: {:?}", out.traps);
    }
    times.sort();
    println!(
        "print {SECRETS} secrets with .proplist=name,profile via mikrotik-rs: best {:.0} ms, median {:.0} ms, worst {:.0} ms ({RUNS} runs; target: well under 1000 ms)",
        ms(times[0]),
        ms(times[RUNS / 2]),
        ms(times[RUNS - 1]),
    );
    drop(device);
    sim.shutdown().await;
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
