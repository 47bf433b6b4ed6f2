//! `/api/v1/subscribers`: subscribers, their suspension and resumption. Passwords go in and
//! never come out.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Deserializer, Serialize};
use tikfleet_shared::{RouterId, Secret, SubscriberId, TenantId};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiPath, ApiQuery, Auth};
use super::validate;
use crate::app::AppState;
use crate::db::PageRequest;
use crate::db::subscribers::{Contact, NewSubscriber, Service, Subscriber, SubscriberPatch};

/// A subscriber (never its password).
#[derive(Serialize, ToSchema)]
pub struct SubscriberDto {
    /// Its id.
    #[schema(value_type = String, format = Uuid)]
    pub id: SubscriberId,
    /// Its tenant.
    #[schema(value_type = String, format = Uuid)]
    pub tenant_id: TenantId,
    /// Login name.
    pub username: String,
    /// Its plan.
    #[schema(value_type = String, format = Uuid)]
    pub plan_id: uuid::Uuid,
    /// The router that serves it.
    #[schema(value_type = String, format = Uuid)]
    pub router_id: RouterId,
    /// `pppoe` or `hotspot`.
    pub service: String,
    /// When service expires (RFC 3339), or null.
    pub expires_at: Option<String>,
    /// `active`, `grace` or `suspended`: the phase last confirmed on the router (expiry
    /// transitions are reported by the agent, even those it made offline) or set by staff.
    pub status: String,
    /// Suspended by staff until resumed, whatever the expiry says.
    pub hold: bool,
    /// Why the status last changed: `created`, `expiry`, `manual`, `renewal` or `resume`.
    pub status_reason: Option<String>,
    /// When the status last changed (RFC 3339).
    pub status_at: Option<String>,
    /// Full name, for notices.
    pub name: Option<String>,
    /// Email address for notices.
    pub email: Option<String>,
    /// Phone number for SMS notices.
    pub phone: Option<String>,
}

impl From<Subscriber> for SubscriberDto {
    fn from(s: Subscriber) -> Self {
        Self {
            id: s.id,
            tenant_id: s.tenant_id,
            username: s.username,
            plan_id: s.plan_id,
            router_id: s.router_id,
            service: s.service.as_str().to_owned(),
            expires_at: s.expires_at.map(validate::format_time),
            status: s.status.as_str().to_owned(),
            hold: s.hold,
            status_reason: s.status_reason,
            status_at: s.status_at.map(validate::format_time),
            name: s.contact.name,
            email: s.contact.email,
            phone: s.contact.phone,
        }
    }
}

/// A page of subscribers.
#[derive(Serialize, ToSchema)]
pub struct SubscriberList {
    /// The subscribers.
    pub items: Vec<SubscriberDto>,
    /// The next page's cursor, or null.
    pub next_cursor: Option<String>,
}

/// Filters of the subscriber list.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SubscriberQuery {
    /// Page size (1 to 500, default 50).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only this router's subscribers.
    #[param(value_type = Option<String>, format = Uuid)]
    pub router_id: Option<RouterId>,
}

/// A subscriber to add.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSubscriber {
    /// Login name (letters, digits and `. _ - @ +`, up to 64).
    pub username: String,
    /// Login password (stored encrypted, never returned).
    pub password: String,
    /// Its plan.
    #[schema(value_type = String, format = Uuid)]
    pub plan_id: uuid::Uuid,
    /// The router that serves it.
    #[schema(value_type = String, format = Uuid)]
    pub router_id: RouterId,
    /// `pppoe` or `hotspot`.
    pub service: String,
    /// When service expires (RFC 3339), or null for never.
    pub expires_at: Option<String>,
    /// Full name, for notices.
    pub name: Option<String>,
    /// Email address for notices.
    pub email: Option<String>,
    /// Phone number (E.164, e.g. `+254700000001`) for SMS notices.
    pub phone: Option<String>,
}

/// Changes to a subscriber; absent fields stay as they are, `"expires_at": null` removes
/// the expiry.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSubscriber {
    /// New login name.
    pub username: Option<String>,
    /// New password.
    pub password: Option<String>,
    /// New plan.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub plan_id: Option<uuid::Uuid>,
    /// Move to another router.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub router_id: Option<RouterId>,
    /// New service.
    pub service: Option<String>,
    /// New expiry (RFC 3339), or null to remove it. A later expiry for a subscriber in
    /// grace or suspended by expiry is a renewal (see `POST /subscribers/{id}/renew`).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub expires_at: Option<Option<String>>,
    /// New full name, or null to remove it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub name: Option<Option<String>>,
    /// New email, or null to remove it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub email: Option<Option<String>>,
    /// New phone, or null to remove it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub phone: Option<Option<String>>,
}

/// Tells an absent field (`None`) from an explicit null (`Some(None)`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

fn contact(
    name: Option<String>,
    email: Option<String>,
    phone: Option<String>,
) -> Result<Contact, ApiError> {
    Ok(Contact {
        name: name.map(|n| validate::name("name", &n, 200)).transpose()?,
        email: email.map(|e| validate::email("email", &e)).transpose()?,
        phone: phone.map(|p| validate::phone("phone", &p)).transpose()?,
    })
}

fn service(value: &str) -> Result<Service, ApiError> {
    value
        .parse()
        .map_err(|()| ApiError::invalid("service must be pppoe or hotspot"))
}

/// Adds a subscriber and queues its account for the router.
#[utoipa::path(post, path = "/api/v1/subscribers", tag = "subscribers", request_body = CreateSubscriber,
    responses((status = 201, body = SubscriberDto), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn create(
    State(st): State<AppState>,
    auth: Auth,
    ApiJson(body): ApiJson<CreateSubscriber>,
) -> Result<(StatusCode, Json<SubscriberDto>), ApiError> {
    let p = auth.writer()?;
    validate::password("password", &body.password)?;
    let new = NewSubscriber {
        username: validate::routeros_name("username", &body.username)?,
        password: Secret::new(body.password),
        plan_id: body.plan_id,
        router_id: body.router_id,
        service: service(&body.service)?,
        expires_at: body
            .expires_at
            .map(|t| validate::parse_time("expires_at", &t))
            .transpose()?,
        contact: contact(body.name, body.email, body.phone)?,
    };
    let s = st.db.create_subscriber(&p.staff(), new).await?;
    Ok((StatusCode::CREATED, Json(s.into())))
}

/// Lists subscribers.
#[utoipa::path(get, path = "/api/v1/subscribers", tag = "subscribers", params(SubscriberQuery),
    responses((status = 200, body = SubscriberList), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn list(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiQuery(q): ApiQuery<SubscriberQuery>,
) -> Result<Json<SubscriberList>, ApiError> {
    let page = PageRequest::parse(q.limit, q.cursor.as_deref())?;
    let page = st
        .db
        .list_subscribers(&p.scope(), q.router_id, &page)
        .await?;
    Ok(Json(SubscriberList {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Shows a subscriber.
#[utoipa::path(get, path = "/api/v1/subscribers/{id}", tag = "subscribers", params(("id" = String, Path)),
    responses((status = 200, body = SubscriberDto), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn show(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<SubscriberId>,
) -> Result<Json<SubscriberDto>, ApiError> {
    Ok(Json(st.db.get_subscriber(&p.scope(), id).await?.into()))
}

/// Changes a subscriber.
#[utoipa::path(patch, path = "/api/v1/subscribers/{id}", tag = "subscribers", params(("id" = String, Path)),
    request_body = UpdateSubscriber,
    responses((status = 200, body = SubscriberDto), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn update(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<SubscriberId>,
    ApiJson(body): ApiJson<UpdateSubscriber>,
) -> Result<Json<SubscriberDto>, ApiError> {
    let p = auth.writer()?;
    if let Some(pw) = &body.password {
        validate::password("password", pw)?;
    }
    let patch = SubscriberPatch {
        username: body
            .username
            .map(|u| validate::routeros_name("username", &u))
            .transpose()?,
        password: body.password.map(Secret::new),
        plan_id: body.plan_id,
        router_id: body.router_id,
        service: body.service.map(|s| service(&s)).transpose()?,
        expires_at: body
            .expires_at
            .map(|t| {
                t.map(|t| validate::parse_time("expires_at", &t))
                    .transpose()
            })
            .transpose()?,
        name: body
            .name
            .map(|n| n.map(|n| validate::name("name", &n, 200)).transpose())
            .transpose()?,
        email: body
            .email
            .map(|e| e.map(|e| validate::email("email", &e)).transpose())
            .transpose()?,
        phone: body
            .phone
            .map(|p| p.map(|p| validate::phone("phone", &p)).transpose())
            .transpose()?,
    };
    Ok(Json(
        st.db.update_subscriber(&p.staff(), id, patch).await?.into(),
    ))
}

/// Deletes a subscriber and removes its account from the router.
#[utoipa::path(delete, path = "/api/v1/subscribers/{id}", tag = "subscribers", params(("id" = String, Path)),
    responses((status = 204), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn delete(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<SubscriberId>,
) -> Result<StatusCode, ApiError> {
    let p = auth.writer()?;
    st.db.delete_subscriber(&p.staff(), id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Suspends a subscriber (disable and disconnect).
#[utoipa::path(post, path = "/api/v1/subscribers/{id}/suspend", tag = "subscribers", params(("id" = String, Path)),
    responses((status = 200, body = SubscriberDto), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn suspend(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<SubscriberId>,
) -> Result<Json<SubscriberDto>, ApiError> {
    let p = auth.writer()?;
    Ok(Json(st.db.suspend_subscriber(&p.staff(), id).await?.into()))
}

/// Resumes a suspended subscriber.
#[utoipa::path(post, path = "/api/v1/subscribers/{id}/resume", tag = "subscribers", params(("id" = String, Path)),
    responses((status = 200, body = SubscriberDto), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn resume(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<SubscriberId>,
) -> Result<Json<SubscriberDto>, ApiError> {
    let p = auth.writer()?;
    Ok(Json(st.db.resume_subscriber(&p.staff(), id).await?.into()))
}
