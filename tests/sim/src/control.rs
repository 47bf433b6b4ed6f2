//! The HTTP control endpoint (JSON, loopback): faults, reboots, sessions, state and stats.
//!
//! | route | what |
//! | --- | --- |
//! | `GET /routers` | every router: index, identity, version, addresses, up |
//! | `GET /cert` | the API-SSL certificate: `{pem, sha256}` |
//! | `GET /routers/{i}/faults` | the fault settings ([`Faults`]) |
//! | `PUT /routers/{i}/faults` | merge the given fault fields (`api_hung`: no API answers until a reboot); `DELETE` resets them |
//! | `POST /routers/{i}/reboot` | `{down_ms?}`: reboot (down for down_ms, config kept) |
//! | `GET /routers/{i}/sessions` | clients and their sessions (profile, address, bytes, state) |
//! | `POST /routers/{i}/sessions` | `{service: pppoe\|hotspot, name, password, mac?}`: dial; 409 if refused |
//! | `DELETE /routers/{i}/sessions/{service}/{name}` | unplug a client (no redial) |
//! | `GET /routers/{i}/menu?path=/ppp/secret` | a menu's rows as JSON objects |
//! | `GET /routers/{i}/stats?window_ms=N` | command counts (total, per path, in window); `DELETE` resets |
//! | `PUT /routers/{i}/update` | `{latest_version?, installed_version?, current_firmware?}` |
//! | `POST /routers/{i}/seed` | `{secrets: N}`: add N secrets `seed-K` / `pw-K` |
//! | `GET /routers/{i}/files` | `[{name, size}]` |
//! | `GET /routers/{i}/export?show_sensitive=bool` | the export text |
//!
//! Errors are `{"error": "message"}` with a 4xx status (400, 404, 405, 409, 415, 422), all made
//! by [`ApiError`]: handlers return it, and every extractor is wrapped in [`Checked`], which
//! turns axum's rejections (bad JSON, unknown field, wrong content type, bad path or query)
//! into it. Request bodies and queries refuse unknown fields, so a typo fails loudly.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{
    FromRequest, FromRequestParts, OptionalFromRequest, Path, Query, Request, State,
};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router as Axum};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::device::MAX_DOWN;
use crate::faults::{Faults, FaultsPatch, StatsView};
use crate::router::{Router, lock};
use crate::sessions::{ClientState, Service};
use crate::tls::CertInfo;

/// Shared state of the endpoint.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The routers.
    pub routers: Vec<Arc<Router>>,
    /// The certificate.
    pub cert: CertInfo,
}

/// A control request that failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No router with that index.
    #[error("no router {0}")]
    NoRouter(usize),
    /// No such menu.
    #[error("no menu {0}")]
    NoMenu(String),
    /// No such client.
    #[error("no such client")]
    NoClient,
    /// A dial was refused.
    #[error("session refused: {0}")]
    Refused(String),
    /// Bad input.
    #[error("{0}")]
    Bad(String),
    /// A request axum could not extract (its status: 400, 413, 415 or 422).
    #[error("{message}")]
    Rejected {
        /// The rejection's status.
        status: StatusCode,
        /// What was wrong.
        message: String,
    },
    /// No such route.
    #[error("no route {0}")]
    NoRoute(String),
    /// The route exists, the method does not.
    #[error("method not allowed")]
    Method,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::NoRouter(_) | Self::NoMenu(_) | Self::NoClient | Self::NoRoute(_) => {
                StatusCode::NOT_FOUND
            }
            Self::Refused(_) => StatusCode::CONFLICT,
            Self::Bad(_) => StatusCode::BAD_REQUEST,
            Self::Rejected { status, .. } => *status,
            Self::Method => StatusCode::METHOD_NOT_ALLOWED,
        };
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}

macro_rules! rejections {
    ($($t:ty),*) => {$(
        impl From<$t> for ApiError {
            fn from(r: $t) -> Self {
                Self::Rejected { status: r.status(), message: r.body_text() }
            }
        }
    )*};
}
rejections!(JsonRejection, PathRejection, QueryRejection);

/// An axum extractor whose rejection is an [`ApiError`], so a bad request gets the endpoint's
/// JSON error shape: `Checked(Path(i)): Index`.
#[derive(Debug)]
pub struct Checked<E>(pub E);

impl<S: Send + Sync, E> FromRequestParts<S> for Checked<E>
where
    E: FromRequestParts<S>,
    ApiError: From<E::Rejection>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Ok(Self(E::from_request_parts(parts, state).await?))
    }
}

impl<S: Send + Sync, E> FromRequest<S> for Checked<E>
where
    E: FromRequest<S>,
    ApiError: From<E::Rejection>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Ok(Self(E::from_request(req, state).await?))
    }
}

/// An optional body: absent without a `Content-Type`, otherwise it must parse.
impl<S: Send + Sync, E> OptionalFromRequest<S> for Checked<E>
where
    E: OptionalFromRequest<S>,
    ApiError: From<E::Rejection>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, ApiError> {
        Ok(E::from_request(req, state).await?.map(Self))
    }
}

/// The router index of a `/routers/{i}/…` route.
type Index = Checked<Path<usize>>;

/// Most secrets one `POST /routers/{i}/seed` adds.
const MAX_SEED: usize = 1_000_000;

type ApiResult<T> = Result<T, ApiError>;

fn too_long(field: &str) -> ApiError {
    ApiError::Bad(format!("{field}: at most {} ms", MAX_DOWN.as_millis()))
}

/// The axum router.
pub fn app(state: AppState) -> Axum {
    Axum::new()
        .route("/routers", get(routers))
        .route("/cert", get(cert))
        .route(
            "/routers/{i}/faults",
            get(get_faults).put(put_faults).delete(reset_faults),
        )
        .route("/routers/{i}/reboot", post(reboot))
        .route("/routers/{i}/sessions", get(sessions).post(start_session))
        .route(
            "/routers/{i}/sessions/{service}/{name}",
            delete(stop_session),
        )
        .route("/routers/{i}/menu", get(menu))
        .route("/routers/{i}/stats", get(stats).delete(reset_stats))
        .route("/routers/{i}/update", put(update))
        .route("/routers/{i}/seed", post(seed))
        .route("/routers/{i}/files", get(files))
        .route("/routers/{i}/export", get(export))
        .fallback(|uri: axum::http::Uri| async move { ApiError::NoRoute(uri.path().to_owned()) })
        .method_not_allowed_fallback(|| async { ApiError::Method })
        .with_state(Arc::new(state))
}

type St = State<Arc<AppState>>;

fn router(s: &AppState, i: usize) -> ApiResult<&Arc<Router>> {
    s.routers.get(i).ok_or(ApiError::NoRouter(i))
}

/// One router in `GET /routers`.
#[derive(Debug, Serialize)]
struct RouterView {
    index: usize,
    identity: String,
    version: String,
    up: bool,
    api: Option<String>,
    api_ssl: Option<String>,
    ssh: Option<String>,
}

async fn routers(State(s): St) -> Json<Vec<RouterView>> {
    let now = Instant::now();
    Json(
        s.routers
            .iter()
            .map(|r| {
                let dev = lock(&r.device);
                let a = r.addrs.get().copied().unwrap_or_default();
                RouterView {
                    index: r.index,
                    identity: dev.identity.clone(),
                    version: dev.update.installed.clone(),
                    up: dev.is_up(now),
                    api: a.api.map(|x| x.to_string()),
                    api_ssl: a.api_ssl.map(|x| x.to_string()),
                    ssh: a.ssh.map(|x| x.to_string()),
                }
            })
            .collect(),
    )
}

async fn cert(State(s): St) -> Json<Value> {
    Json(json!({ "pem": s.cert.pem, "sha256": s.cert.sha256 }))
}

async fn get_faults(State(s): St, Checked(Path(i)): Index) -> ApiResult<Json<Faults>> {
    Ok(Json(lock(&router(&s, i)?.faults).clone()))
}

async fn put_faults(
    State(s): St,
    Checked(Path(i)): Index,
    Checked(Json(p)): Checked<Json<FaultsPatch>>,
) -> ApiResult<Json<Faults>> {
    let r = router(&s, i)?;
    if p.reboot_down_ms
        .is_some_and(|ms| Duration::from_millis(ms) > MAX_DOWN)
    {
        return Err(too_long("reboot_down_ms"));
    }
    let mut f = lock(&r.faults);
    f.apply(p);
    Ok(Json(f.clone()))
}

async fn reset_faults(State(s): St, Checked(Path(i)): Index) -> ApiResult<Json<Faults>> {
    let r = router(&s, i)?;
    *lock(&r.faults) = Faults::default();
    Ok(Json(Faults::default()))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RebootBody {
    down_ms: Option<u64>,
}

async fn reboot(
    State(s): St,
    Checked(Path(i)): Index,
    body: Option<Checked<Json<RebootBody>>>,
) -> ApiResult<Json<Value>> {
    let r = router(&s, i)?;
    let down = body
        .and_then(|Checked(Json(b))| b.down_ms)
        .map(Duration::from_millis);
    if down.is_some_and(|d| d > MAX_DOWN) {
        return Err(too_long("down_ms"));
    }
    r.reboot(down);
    Ok(Json(json!({ "rebooting": true })))
}

/// One client in `GET /routers/{i}/sessions`.
#[derive(Debug, Serialize)]
struct SessionView {
    service: Service,
    name: String,
    mac: String,
    /// `online` or `waiting`.
    state: &'static str,
    dials: u32,
    last_error: Option<String>,
    id: Option<String>,
    profile: Option<String>,
    address: Option<String>,
    bytes_in: Option<u64>,
    bytes_out: Option<u64>,
    uptime_ms: Option<u64>,
}

async fn sessions(State(s): St, Checked(Path(i)): Index) -> ApiResult<Json<Vec<SessionView>>> {
    let r = router(&s, i)?;
    let now = Instant::now();
    let mut dev = lock(&r.device);
    dev.tick(now);
    let views = dev
        .clients
        .values()
        .map(|c| {
            let mut v = SessionView {
                service: c.service,
                name: c.name.clone(),
                mac: c.mac.clone(),
                state: "waiting",
                dials: c.dials,
                last_error: None,
                id: None,
                profile: None,
                address: None,
                bytes_in: None,
                bytes_out: None,
                uptime_ms: None,
            };
            match &c.state {
                ClientState::Online(id) => {
                    if let Some(sess) = dev.sessions.get(id) {
                        let (up, down) = sess.bytes(now);
                        v.state = "online";
                        v.id = Some(crate::model::format_id(sess.id));
                        v.profile = Some(sess.profile.clone());
                        v.address = Some(sess.address.clone());
                        v.bytes_in = Some(up);
                        v.bytes_out = Some(down);
                        v.uptime_ms =
                            Some(now.saturating_duration_since(sess.started).as_millis() as u64);
                    }
                }
                ClientState::Waiting { last_error, .. } => v.last_error = last_error.clone(),
            }
            v
        })
        .collect();
    Ok(Json(views))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBody {
    service: Service,
    name: String,
    password: String,
    mac: Option<String>,
}

async fn start_session(
    State(s): St,
    Checked(Path(i)): Index,
    Checked(Json(b)): Checked<Json<StartBody>>,
) -> ApiResult<Json<Value>> {
    let r = router(&s, i)?;
    let id = lock(&r.device)
        .start_client(
            b.service,
            &b.name,
            &b.password,
            b.mac.as_deref(),
            Instant::now(),
        )
        .map_err(ApiError::Refused)?;
    Ok(Json(json!({ "id": crate::model::format_id(id) })))
}

async fn stop_session(
    State(s): St,
    Checked(Path((i, service, name))): Checked<Path<(usize, String, String)>>,
) -> ApiResult<Json<Value>> {
    let r = router(&s, i)?;
    let service = match service.as_str() {
        "pppoe" => Service::Pppoe,
        "hotspot" => Service::Hotspot,
        other => return Err(ApiError::Bad(format!("unknown service {other}"))),
    };
    if !lock(&r.device).stop_client(service, &name, Instant::now()) {
        return Err(ApiError::NoClient);
    }
    Ok(Json(json!({ "stopped": true })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MenuQuery {
    path: String,
}

async fn menu(
    State(s): St,
    Checked(Path(i)): Index,
    Checked(Query(q)): Checked<Query<MenuQuery>>,
) -> ApiResult<Json<Vec<BTreeMap<String, String>>>> {
    let r = router(&s, i)?;
    let now = Instant::now();
    let mut dev = lock(&r.device);
    dev.tick(now);
    let rows = dev
        .menu_rows(&q.path, now)
        .ok_or_else(|| ApiError::NoMenu(q.path.clone()))?;
    Ok(Json(
        rows.into_iter().map(|r| r.into_iter().collect()).collect(),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatsQuery {
    window_ms: Option<u64>,
}

async fn stats(
    State(s): St,
    Checked(Path(i)): Index,
    Checked(Query(q)): Checked<Query<StatsQuery>>,
) -> ApiResult<Json<StatsView>> {
    let r = router(&s, i)?;
    Ok(Json(lock(&r.stats).view(
        q.window_ms.map(Duration::from_millis),
        Instant::now(),
    )))
}

async fn reset_stats(State(s): St, Checked(Path(i)): Index) -> ApiResult<Json<Value>> {
    lock(&router(&s, i)?.stats).reset();
    Ok(Json(json!({ "reset": true })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    latest_version: Option<String>,
    installed_version: Option<String>,
    current_firmware: Option<String>,
}

async fn update(
    State(s): St,
    Checked(Path(i)): Index,
    Checked(Json(b)): Checked<Json<UpdateBody>>,
) -> ApiResult<Json<Value>> {
    let r = router(&s, i)?;
    let mut dev = lock(&r.device);
    for v in [&b.latest_version, &b.installed_version, &b.current_firmware]
        .into_iter()
        .flatten()
    {
        crate::personality::Version::parse(v).map_err(|e| ApiError::Bad(e.to_string()))?;
    }
    if let Some(v) = b.latest_version {
        dev.update.latest = v;
    }
    if let Some(v) = b.installed_version {
        dev.update.installed = v;
    }
    if let Some(v) = b.current_firmware {
        dev.update.firmware = Some(v);
    }
    Ok(Json(json!({
        "installed_version": dev.update.installed,
        "latest_version": dev.update.latest,
        "current_firmware": dev.update.firmware.clone().unwrap_or_else(|| dev.update.installed.clone()),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedBody {
    secrets: usize,
}

async fn seed(
    State(s): St,
    Checked(Path(i)): Index,
    Checked(Json(b)): Checked<Json<SeedBody>>,
) -> ApiResult<Json<Value>> {
    let r = router(&s, i)?;
    if b.secrets > MAX_SEED {
        return Err(ApiError::Bad(format!("secrets: at most {MAX_SEED}")));
    }
    lock(&r.device).seed_secrets(b.secrets, Instant::now());
    Ok(Json(json!({ "seeded": b.secrets })))
}

async fn files(State(s): St, Checked(Path(i)): Index) -> ApiResult<Json<Vec<Value>>> {
    let r = router(&s, i)?;
    let files = lock(&r.device).files();
    Ok(Json(
        files
            .into_iter()
            .map(|(name, size)| json!({ "name": name, "size": size }))
            .collect(),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportQuery {
    #[serde(default)]
    show_sensitive: bool,
    #[serde(default)]
    hide_sensitive: bool,
}

async fn export(
    State(s): St,
    Checked(Path(i)): Index,
    Checked(Query(q)): Checked<Query<ExportQuery>>,
) -> ApiResult<String> {
    let r = router(&s, i)?;
    let dev = lock(&r.device);
    Ok(crate::export::export(
        &dev,
        Instant::now(),
        q.show_sensitive,
        q.hide_sensitive,
    ))
}
