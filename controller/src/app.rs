//! The controller's HTTP application: its shared state and the function that builds the
//! router. `main` (and every test) builds the app through [`api_router`], so tests run
//! exactly what production serves.

use tikfleet_clock::SharedClock;

use crate::db::Db;
use crate::hub::AgentSignals;

/// What an enrolling agent is told about the hub.
#[derive(Clone, Debug, Default)]
pub struct HubInfo {
    /// Where agents open their WebSocket, e.g. `wss://controller.example:7443/agent`.
    pub url: String,
    /// The hub's certificate (PEM) when it is self-signed, so agents can pin it.
    pub ca_pem: Option<String>,
}

/// State shared by every request. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The database.
    pub db: Db,
    /// How committed changes reach connected agents (the database's own signals).
    pub signals: AgentSignals,
    /// The time.
    pub clock: SharedClock,
    /// What enrolling agents are told about the hub.
    pub hub: HubInfo,
    /// How long raw health samples are kept: `GET /routers/{id}/health` answers from them
    /// within this window (rollups otherwise).
    pub health_raw: std::time::Duration,
}

impl AppState {
    /// State over `db`; the signals are the database's, so changes it commits reach the hub.
    #[must_use]
    pub fn new(db: Db, clock: SharedClock, hub: HubInfo) -> Self {
        Self {
            signals: db.signals().clone(),
            db,
            clock,
            hub,
            health_raw: crate::db::health::HealthRetention::default().raw,
        }
    }

    /// The same state with the controller's configured raw health retention.
    #[must_use]
    pub const fn with_health_raw(mut self, raw: std::time::Duration) -> Self {
        self.health_raw = raw;
        self
    }
}

/// The HTTP API: `/api/v1/...` with JSON errors, a 1 MiB body limit and the OpenAPI
/// document at `/api/v1/openapi.json`.
pub fn api_router(state: AppState) -> axum::Router {
    crate::api::routes(state)
}

/// Creates the first admin token when none exists; returns its secret to print once
/// (`token: ...`), or `None` when an admin token already exists.
///
/// # Errors
/// The database failed.
pub async fn bootstrap_admin(db: &Db) -> Result<Option<String>, crate::db::DbError> {
    db.bootstrap_admin().await
}
