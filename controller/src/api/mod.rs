//! The staff HTTP API under `/api/v1` (axum), with its OpenAPI document at
//! `/api/v1/openapi.json`.
//!
//! Handlers are thin: they authenticate ([`extract::Auth`]), check values at the edge
//! ([`validate`]), call one storage method with the caller's scope, and map the result to a
//! DTO. Tenant isolation is the storage layer's ([`crate::db::Scope`]); errors become the
//! one JSON shape in [`error`].
//!
//! One file per resource: `tenants` (and their staff and enrollment tokens and drift
//! settings), `agents` (including enrollment and key rotation), `routers`, `plans`,
//! `subscribers`, `jobs`, `drift`, `audit`.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use serde::Deserialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi};

use crate::app::AppState;
use crate::db::PageRequest;

pub mod agents;
pub mod alerts;
pub mod audit;
pub mod backups;
pub mod credentials;
pub mod drift;
pub mod error;
pub mod extract;
pub mod health;
pub mod jobs;
pub mod lifecycle;
pub mod notifications;
pub mod plans;
pub mod routers;
pub mod subscribers;
pub mod tenants;
pub mod validate;

pub use error::ApiError;

/// The largest request body the API reads.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// Pagination of a list without other filters.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size (1 to 500, default 50).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl ListQuery {
    fn page(&self) -> Result<PageRequest, ApiError> {
        Ok(PageRequest::parse(self.limit, self.cursor.as_deref())?)
    }
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document of the API.
#[derive(OpenApi)]
#[openapi(
    info(title = "tikfleet controller API", description = "Staff API of the tikfleet controller. See docs/api.md."),
    paths(
        tenants::create, tenants::list, tenants::show, tenants::create_token, tenants::list_tokens,
        tenants::revoke_token, tenants::create_enrollment_token, tenants::show_drift,
        tenants::set_drift,
        agents::list, agents::show, agents::revoke, agents::enroll, agents::rotate_key,
        routers::create, routers::list, routers::show, routers::update, routers::delete, routers::sync,
        plans::create, plans::list, plans::show, plans::update, plans::delete,
        subscribers::create, subscribers::list, subscribers::show, subscribers::update,
        subscribers::delete, subscribers::suspend, subscribers::resume,
        jobs::list, jobs::show, jobs::requeue, jobs::cancel,
        drift::check, drift::list, drift::show, drift::accept, drift::enforce,
        audit::list,
        backups::list, backups::create, backups::download, backups::diff, backups::restore,
        backups::show_settings, backups::set_settings,
        notifications::show_settings, notifications::set_settings, notifications::send_test,
        notifications::subscriber_log,
        lifecycle::show_tenant, lifecycle::set_tenant, lifecycle::show_plan, lifecycle::set_plan,
        lifecycle::renew, lifecycle::show_subscriber,
        health::show, health::outdated,
        credentials::rotate, credentials::lockdown, credentials::show_settings,
        credentials::set_settings,
        alerts::list, alerts::show, alerts::acknowledge, alerts::show_rules, alerts::set_rules,
    ),
    components(schemas(error::ErrorBody, error::ErrorDetail)),
    modifiers(&BearerAuth),
    tags(
        (name = "tenants"), (name = "agents"), (name = "routers"), (name = "plans"),
        (name = "subscribers"), (name = "jobs"), (name = "drift"), (name = "audit"),
        (name = "notifications"),
        (name = "lifecycle"),
        (name = "health"),
        (name = "backups"),
        (name = "alerts"),
    )
)]
pub struct ApiDoc;

async fn openapi() -> axum::response::Response {
    use axum::response::IntoResponse as _;
    match ApiDoc::openapi().to_json() {
        Ok(json) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            json,
        )
            .into_response(),
        Err(_) => {
            ApiError::for_status(axum::http::StatusCode::INTERNAL_SERVER_ERROR).into_response()
        }
    }
}

/// `GET /metrics`: the fleet's Prometheus metrics (crate::metrics), for admin tokens only
/// (they span every tenant). Prometheus sends the token with `authorization: credentials`.
async fn metrics(
    axum::extract::State(st): axum::extract::State<AppState>,
    extract::Auth(p): extract::Auth,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse as _;
    if p.scope() != crate::db::Scope::Admin {
        return Err(ApiError::forbidden(
            "metrics span every tenant: use an admin token",
        ));
    }
    let text = crate::metrics::render(st.db.metrics_snapshot().await?);
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

async fn not_found() -> ApiError {
    ApiError::for_status(axum::http::StatusCode::NOT_FOUND)
}

/// The `/api/v1` routes, with the body limit and JSON errors for every response.
pub fn routes(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/tenants", post(tenants::create).get(tenants::list))
        .route("/tenants/{id}", get(tenants::show))
        .route(
            "/tenants/{id}/tokens",
            post(tenants::create_token).get(tenants::list_tokens),
        )
        .route(
            "/tenants/{id}/tokens/{token_id}",
            axum::routing::delete(tenants::revoke_token),
        )
        .route(
            "/tenants/{id}/enrollment-tokens",
            post(tenants::create_enrollment_token),
        )
        .route(
            "/tenants/{id}/drift",
            get(tenants::show_drift).put(tenants::set_drift),
        )
        .route(
            "/tenants/{id}/security",
            get(credentials::show_settings).put(credentials::set_settings),
        )
        .route(
            "/tenants/{id}/lifecycle",
            get(lifecycle::show_tenant).put(lifecycle::set_tenant),
        )
        .route(
            "/plans/{id}/lifecycle",
            get(lifecycle::show_plan).put(lifecycle::set_plan),
        )
        .route("/subscribers/{id}/renew", post(lifecycle::renew))
        .route(
            "/subscribers/{id}/lifecycle",
            get(lifecycle::show_subscriber),
        )
        .route(
            "/tenants/{id}/notifications",
            get(notifications::show_settings).put(notifications::set_settings),
        )
        .route(
            "/tenants/{id}/notifications/test",
            post(notifications::send_test),
        )
        .route(
            "/subscribers/{id}/notifications",
            get(notifications::subscriber_log),
        )
        .route("/agents", get(agents::list))
        .route("/agents/enroll", post(agents::enroll))
        .route("/agents/{id}", get(agents::show))
        .route("/agents/{id}/revoke", post(agents::revoke))
        .route("/agents/{id}/keys", post(agents::rotate_key))
        .route("/routers", post(routers::create).get(routers::list))
        .route(
            "/routers/{id}",
            get(routers::show)
                .patch(routers::update)
                .delete(routers::delete),
        )
        .route("/routers/{id}/sync", get(routers::sync))
        .route("/routers/{id}/health", get(health::show))
        .route("/routers/outdated", get(health::outdated))
        .route("/routers/{id}/drift-check", post(drift::check))
        .route(
            "/routers/{id}/rotate-credentials",
            post(credentials::rotate),
        )
        .route("/routers/{id}/lockdown", post(credentials::lockdown))
        .route(
            "/routers/{id}/backups",
            get(backups::list).post(backups::create),
        )
        .route("/backups/{id}", get(backups::download))
        .route("/backups/{id}/diff", get(backups::diff))
        .route("/backups/{id}/restore", post(backups::restore))
        .route(
            "/tenants/{id}/backups",
            get(backups::show_settings).put(backups::set_settings),
        )
        .route("/plans", post(plans::create).get(plans::list))
        .route(
            "/plans/{id}",
            get(plans::show).patch(plans::update).delete(plans::delete),
        )
        .route(
            "/subscribers",
            post(subscribers::create).get(subscribers::list),
        )
        .route(
            "/subscribers/{id}",
            get(subscribers::show)
                .patch(subscribers::update)
                .delete(subscribers::delete),
        )
        .route("/subscribers/{id}/suspend", post(subscribers::suspend))
        .route("/subscribers/{id}/resume", post(subscribers::resume))
        .route("/jobs", get(jobs::list))
        .route("/jobs/{id}", get(jobs::show))
        .route("/jobs/{id}/requeue", post(jobs::requeue))
        .route("/jobs/{id}/cancel", post(jobs::cancel))
        .route("/drift", get(drift::list))
        .route("/drift/{id}", get(drift::show))
        .route("/drift/{id}/accept", post(drift::accept))
        .route("/drift/{id}/enforce", post(drift::enforce))
        .route("/audit", get(audit::list))
        .route("/alerts", get(alerts::list))
        .route("/alerts/{id}", get(alerts::show))
        .route("/alerts/{id}/acknowledge", post(alerts::acknowledge))
        .route(
            "/tenants/{id}/alert-rules",
            get(alerts::show_rules).put(alerts::set_rules),
        )
        .route("/openapi.json", get(openapi));
    Router::new()
        .nest("/api/v1", v1)
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(state)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        // A handler that panicked answers 500 (in the JSON shape, from the layer below).
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
        .layer(axum::middleware::map_response(extract::json_errors))
}
