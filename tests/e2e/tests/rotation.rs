//! Router credential rotation and API lockdown end to end, through the hub: the real
//! controller queues the jobs (`POST /routers/{id}/rotate-credentials`, `…/lockdown`), the
//! real agent (`tikfleet-agent run`) runs them against a simulated router, and the test reads
//! the router's `/user`, `/user/active` and `/ip/service` straight from the simulator.
//!
//! Rotation: one dedicated `tikfleet-…` user in the `tikfleet` group, the administrator's
//! original account kept (by design, see docs/security.md), the agent logged in as the new
//! user and still converging subscribers; a second rotation removes the first one's user.
//! No password the router knows (rotated logins, subscribers') appears in any audit record.
//!
//! Lockdown: `api`, `api-ssl` and `ssh` restricted to the agent's address as the router sees
//! it (127.0.0.1/32) and the tenant's admin networks; the agent still creates and suspends
//! subscribers.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tikfleet_e2e::fleet::{
    Agent, Api, Controller, HubPath, RunningAgent, SETTLE, Sim, add_router, plan, subscriber,
    synced, within,
};

/// A controller, an agent serving one simulated router, and a plan.
struct Site {
    sim: Sim,
    ctl: Controller,
    tenant: String,
    ops: Api,
    running: RunningAgent,
    router: String,
    plan: String,
}

impl Site {
    async fn start() -> Self {
        let sim = Sim::start(1).await;
        let ctl = Controller::start(HubPath::Direct).await;
        let (tenant, ops) = ctl.tenant("acme").await;
        let (agent, running) = Agent::running(&ops, &tenant).await;
        let router = add_router(&ops, &sim, 0, &agent.id, "core-1").await;
        let plan = plan(&ops, "basic", "10M/10M").await;
        Self {
            sim,
            ctl,
            tenant,
            ops,
            running,
            router,
            plan,
        }
    }

    /// A PPPoE subscriber, converged onto the router.
    async fn subscriber(&self, name: &str, password: &str) -> String {
        let id = subscriber(&self.ops, &self.router, &self.plan, name, password, "pppoe").await;
        synced(&self.ops, &self.router).await;
        self.ops.all_jobs_succeed(SETTLE).await;
        let secrets = self.sim.menu(0, "/ppp/secret");
        assert!(
            secrets.contains_key(name),
            "{name} on the router: {secrets:?}"
        );
        id
    }

    /// Queues a job with `POST /routers/{id}/{what}` and waits for it to succeed.
    async fn job(&self, what: &str, body: Value) -> Value {
        let job = self
            .ops
            .ok(
                StatusCode::ACCEPTED,
                &format!("/api/v1/routers/{}/{what}", self.router),
                body,
            )
            .await;
        let id = job["id"].as_str().expect("a job id");
        let job = self.ops.job_finished(id, SETTLE).await;
        assert_eq!(job["status"], "succeeded", "{what}: {job}");
        job
    }

    /// The router's `tikfleet-…` users: name → group.
    fn tikfleet_users(&self) -> Vec<(String, String)> {
        self.sim
            .menu(0, "/user")
            .into_iter()
            .filter(|(name, _)| name.starts_with("tikfleet-"))
            .map(|(name, row)| (name, row.get("group").cloned().unwrap_or_default()))
            .collect()
    }

    /// Every password the router holds: its users' and its PPP secrets'.
    fn passwords(&self) -> BTreeSet<String> {
        ["/user", "/ppp/secret"]
            .into_iter()
            .flat_map(|menu| self.sim.menu(0, menu).into_values())
            .filter_map(|row| row.get("password").cloned())
            .filter(|p| !p.is_empty())
            .collect()
    }

    /// The names of the router's live API sessions (`/user/active`).
    fn active_users(&self) -> BTreeSet<String> {
        self.sim
            .menu(0, "/user/active")
            .into_values()
            .filter_map(|row| row.get("name").cloned())
            .collect()
    }

    async fn stop(mut self) {
        let out = self.running.stop().await.expect("the agent stops cleanly");
        assert!(out.contains("tikfleet-agent stopped:"), "{out}");
        self.ctl.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_through_the_hub_replaces_the_login_and_the_agent_keeps_working() {
    within(Duration::from_secs(180), async {
        let site = Site::start().await;
        site.subscriber("alice", "alice-secret-1").await;
        assert!(site.tikfleet_users().is_empty());
        let mut known = site.passwords();

        // First rotation, from the administrator's account.
        let job = site.job("rotate-credentials", json!({})).await;
        assert_eq!(job["kind"], "rotate_credentials", "{job}");
        let detail = job["detail"].as_str().expect("the job's detail");
        assert!(detail.contains("kept admin"), "{detail}");
        let users = site.tikfleet_users();
        assert_eq!(users.len(), 1, "one dedicated user: {users:?}");
        let (first, group) = users[0].clone();
        assert_eq!(group, "tikfleet", "{users:?}");
        assert!(
            site.sim.menu(0, "/user").contains_key("admin"),
            "the administrator's account is kept"
        );
        let groups = site.sim.menu(0, "/user/group");
        let policy = groups["tikfleet"]["policy"].clone();
        for p in ["api", "read", "write", "sensitive", "policy"] {
            assert!(policy.split(',').any(|x| x == p), "{p} in {policy}");
        }
        for p in ["winbox", "web", "telnet"] {
            assert!(!policy.split(',').any(|x| x == p), "no {p} in {policy}");
        }
        known.extend(site.passwords());

        // The agent keeps working, logged in as the new user.
        site.subscriber("bob", "bob-secret-1").await;
        assert!(
            site.active_users().contains(&first),
            "the agent's session as {first}: {:?}",
            site.sim.menu(0, "/user/active")
        );

        // Second rotation: the previous tikfleet user is removed.
        let job = site.job("rotate-credentials", json!({})).await;
        let detail = job["detail"].as_str().expect("the job's detail");
        assert!(detail.contains(&format!("removed {first}")), "{detail}");
        let users = site.tikfleet_users();
        assert_eq!(users.len(), 1, "one dedicated user: {users:?}");
        let (second, group) = users[0].clone();
        assert_ne!(second, first);
        assert_eq!(group, "tikfleet");
        assert!(site.sim.menu(0, "/user").contains_key("admin"));
        site.subscriber("carol", "carol-secret-1").await;
        assert!(site.active_users().contains(&second));
        known.extend(site.passwords());

        // No password the router knows is in any audit record; the user's creation is
        // audited with its password redacted.
        known.remove("admin"); // the administrator's password is also its user name
        assert!(
            known.len() >= 5,
            "two rotated logins and three subscribers: {}",
            known.len()
        );
        let audit = site.ops.audit().await;
        for row in &audit {
            let text = row.to_string();
            for password in &known {
                assert!(!text.contains(password.as_str()), "a password in {text}");
            }
        }
        let adds: Vec<&Value> = audit
            .iter()
            .filter(|r| r["action"] == "/user/add")
            .collect();
        assert_eq!(adds.len(), 2, "{adds:?}");
        for add in adds {
            assert_eq!(add["params"]["password"], "<redacted>", "{add}");
        }
        // Staff's requests are audited too.
        assert!(
            audit
                .iter()
                .filter(|r| r["action"].as_str().is_some_and(|a| a.contains("rotat")))
                .count()
                >= 2,
            "{audit:?}"
        );
        site.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockdown_through_the_hub_restricts_the_services_and_the_agent_keeps_working() {
    within(Duration::from_secs(180), async {
        let site = Site::start().await;
        let (st, v) = site
            .ops
            .put(
                &format!("/api/v1/tenants/{}/security", site.tenant),
                json!({"rotation_days": 90, "admin_networks": ["10.9.0.0/16"]}),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        site.subscriber("alice", "alice-secret-1").await;
        let services = |sim: &Sim| {
            sim.menu(0, "/ip/service")
                .into_iter()
                .map(|(name, row)| (name, row.get("address").cloned().unwrap_or_default()))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        for name in ["api", "api-ssl", "ssh"] {
            assert_eq!(services(&site.sim)[name], "", "{name} open to all before");
        }

        let job = site.job("lockdown", json!({})).await;
        assert_eq!(job["kind"], "lockdown", "{job}");
        let detail = job["detail"].as_str().expect("the job's detail");
        assert!(detail.starts_with("locked down"), "{detail}");
        assert!(detail.contains("plain API is still enabled"), "{detail}");
        let svc = services(&site.sim);
        for name in ["api", "api-ssl", "ssh"] {
            assert_eq!(svc[name], "127.0.0.1/32,10.9.0.0/16", "{name}: {svc:?}");
        }
        assert_eq!(svc["winbox"], "", "other services untouched: {svc:?}");

        // The agent still works: a new subscriber, then a suspension.
        let dave = site.subscriber("dave", "dave-secret-1").await;
        let (st, v) = site
            .ops
            .post_empty(&format!("/api/v1/subscribers/{dave}/suspend"))
            .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        synced(&site.ops, &site.router).await;
        site.ops.all_jobs_succeed(SETTLE).await;
        assert_eq!(site.sim.menu(0, "/ppp/secret")["dave"]["disabled"], "true");

        // A job's own list replaces the tenant's networks.
        let job = site
            .job("lockdown", json!({"admin_networks": ["192.0.2.7"]}))
            .await;
        let svc = services(&site.sim);
        assert!(
            svc["api"].starts_with("127.0.0.1/32,192.0.2.7"),
            "{svc:?} {job}"
        );
        assert!(!svc["api"].contains("10.9.0.0/16"), "{svc:?}");
        site.subscriber("erin", "erin-secret-1").await;
        site.stop().await;
    })
    .await;
}
