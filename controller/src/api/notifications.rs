//! `/api/v1/tenants/{id}/notifications` (a tenant's SMTP server, SMS gateway, templates and
//! alert destinations; a test message) and `/api/v1/subscribers/{id}/notifications` (a
//! subscriber's notification log).
//!
//! Secrets go in and never come out: the SMTP password shows as `password_set`, gateway
//! headers by name with `null` values, the alert webhook's signing secret as
//! `webhook_secret_set`. A PUT that leaves the password or the signing secret out, or sends
//! a header's value as `null`, keeps what is stored, so what GET answers can be sent back as
//! it is. Templates are tried on a made-up subscriber before they are stored; one that does
//! not render is `422 invalid_template` with the field it is in.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Deserializer, Serialize};
use tikfleet_shared::{Secret, SubscriberId, TenantId};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiPath, ApiQuery, Auth};
use super::{ListQuery, validate};
use crate::app::AppState;
use crate::db::DbError;
use crate::db::notify::{Channel, Notification};
use crate::notify::settings::{
    AlertsUpdate, DEFAULT_CONTENT_TYPE, DEFAULT_SMS_BODY, HttpMethod, NotificationSettings,
    SecretChange, SettingsUpdate, SmsUpdate, SmtpTls, SmtpUpdate, TEMPLATE_KINDS, Templates,
};
use crate::notify::template::{self, MessageTemplate, NoticeVars};

/// The error code of a template that does not render.
pub const INVALID_TEMPLATE: &str = "invalid_template";

/// Most alert addresses and gateway headers.
const MAX_LIST: usize = 20;

/// A tenant's notification settings as the API shows them (never a secret).
#[derive(Serialize, ToSchema)]
pub struct NotificationSettingsDto {
    /// The SMTP server for email, or null (no email).
    pub smtp: Option<SmtpDto>,
    /// The SMS gateway, or null (no SMS).
    pub sms: Option<SmsDto>,
    /// The template of each notice kind (the built-in one where the tenant set none).
    pub templates: TemplatesDto,
    /// Where admin alerts go.
    pub alerts: AlertsDto,
}

/// SMTP settings as shown.
#[derive(Serialize, ToSchema)]
pub struct SmtpDto {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// `none`, `starttls` or `tls`.
    pub tls: String,
    /// AUTH user name.
    pub username: Option<String>,
    /// Whether a password is stored (it is never shown).
    pub password_set: bool,
    /// The sender, `address` or `Name <address>`.
    pub from: String,
}

/// SMS gateway as shown.
#[derive(Serialize, ToSchema)]
pub struct SmsDto {
    /// URL.
    pub url: String,
    /// `POST`, `PUT` or `GET`.
    pub method: String,
    /// Header names; values are never shown (null). Send `null` back to keep a value.
    #[schema(value_type = BTreeMap<String, Option<String>>)]
    pub headers: BTreeMap<String, Option<String>>,
    /// The request body template (the query string for `GET`).
    pub body_template: String,
    /// The body's content type.
    pub content_type: String,
}

/// One notice kind's texts.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateDto {
    /// The email's subject.
    pub subject: String,
    /// The email's body (plain text).
    pub email_body: String,
    /// The SMS text.
    pub sms_body: String,
}

impl From<MessageTemplate> for TemplateDto {
    fn from(t: MessageTemplate) -> Self {
        Self {
            subject: t.subject,
            email_body: t.email_body,
            sms_body: t.sms_body,
        }
    }
}

/// The templates in force.
#[derive(Serialize, ToSchema)]
pub struct TemplatesDto {
    /// Before expiry.
    pub expiry_notice: TemplateDto,
    /// At expiry, when grace begins.
    pub grace: TemplateDto,
    /// At suspension.
    pub suspended: TemplateDto,
    /// After a renewal.
    pub renewed: TemplateDto,
    /// The kinds the tenant set its own template for.
    pub custom: Vec<String>,
}

/// Where admin alerts go, as shown.
#[derive(Serialize, ToSchema)]
pub struct AlertsDto {
    /// Addresses that get each alert by email (needs `smtp`).
    pub emails: Vec<String>,
    /// A URL that gets each alert as a JSON POST.
    pub webhook_url: Option<String>,
    /// Whether a webhook signing secret is stored (it is never shown): each webhook request
    /// then carries `X-Tikfleet-Timestamp` and `X-Tikfleet-Signature`.
    pub webhook_secret_set: bool,
}

/// Where admin alerts go, to store.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct AlertsInput {
    /// Addresses that get each alert by email (needs `smtp`).
    #[serde(default)]
    pub emails: Vec<String>,
    /// A URL that gets each alert as a JSON POST.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// The secret that signs each webhook request (16 to 256 characters; needs
    /// `webhook_url`): left out or null keeps the stored one, `""` removes it. Removing the
    /// webhook removes it too.
    #[serde(default)]
    pub webhook_secret: Option<String>,
    /// Ignored (what GET answers, so it can be sent back).
    #[serde(default)]
    pub webhook_secret_set: Option<bool>,
}

impl NotificationSettingsDto {
    fn of(s: NotificationSettings) -> Self {
        let t = &s.templates;
        Self {
            smtp: s.smtp.map(|m| SmtpDto {
                host: m.host,
                port: m.port,
                tls: m.tls.as_str().to_owned(),
                username: m.username,
                password_set: m.password_sealed.is_some(),
                from: m.from,
            }),
            sms: s.sms.map(|g| SmsDto {
                url: g.url,
                method: g.method.as_str().to_owned(),
                headers: g.headers_sealed.into_keys().map(|k| (k, None)).collect(),
                body_template: g.body_template,
                content_type: g.content_type,
            }),
            templates: TemplatesDto {
                expiry_notice: t.effective("expiry_notice").into(),
                grace: t.effective("grace").into(),
                suspended: t.effective("suspended").into(),
                renewed: t.effective("renewed").into(),
                custom: TEMPLATE_KINDS
                    .iter()
                    .filter(|k| t.custom(k).is_some())
                    .map(|k| (*k).to_owned())
                    .collect(),
            },
            alerts: AlertsDto {
                emails: s.alerts.emails,
                webhook_url: s.alerts.webhook_url,
                webhook_secret_set: s.alerts.webhook_secret_sealed.is_some(),
            },
        }
    }
}

/// New notification settings: the whole of them (a section left out or null is removed;
/// `templates` left out are the built-in ones).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetNotificationSettings {
    /// The SMTP server, or null.
    #[serde(default)]
    pub smtp: Option<SmtpInput>,
    /// The SMS gateway, or null.
    #[serde(default)]
    pub sms: Option<SmsInput>,
    /// Templates by kind (`expiry_notice`, `grace`, `suspended`, `renewed`); a kind left
    /// out uses the built-in template.
    #[serde(default)]
    pub templates: Option<TemplatesInput>,
    /// Admin alerts.
    #[serde(default)]
    pub alerts: Option<AlertsInput>,
}

/// SMTP settings to store.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SmtpInput {
    /// Host name or address.
    pub host: String,
    /// Port (587 for STARTTLS, 465 for TLS, 25 for a local relay).
    pub port: u16,
    /// `none`, `starttls` (default) or `tls`.
    pub tls: Option<String>,
    /// AUTH user name.
    pub username: Option<String>,
    /// The password: left out keeps the stored one, null removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub password: Option<Option<String>>,
    /// Ignored (what GET answers, so it can be sent back).
    pub password_set: Option<bool>,
    /// The sender, `address` or `Name <address>`.
    pub from: String,
}

/// SMS gateway to store.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SmsInput {
    /// The gateway's `http` or `https` URL.
    pub url: String,
    /// `POST` (default), `PUT` or `GET`.
    pub method: Option<String>,
    /// Headers (an API key, say); a null value keeps the stored value of that header.
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, Option<String>>)]
    pub headers: BTreeMap<String, Option<String>>,
    /// The body template over `phone`, `message`, `tenant`, `username`, `kind` (default:
    /// `{"to": {{ phone|tojson }}, "text": {{ message|tojson }}}`). For `GET` it renders the
    /// query string (use `|urlencode`).
    pub body_template: Option<String>,
    /// The body's content type (default `application/json`).
    pub content_type: Option<String>,
}

/// Templates to store.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct TemplatesInput {
    /// Before expiry.
    pub expiry_notice: Option<TemplateDto>,
    /// At grace.
    pub grace: Option<TemplateDto>,
    /// At suspension.
    pub suspended: Option<TemplateDto>,
    /// After a renewal.
    pub renewed: Option<TemplateDto>,
    /// Ignored (what GET answers, so it can be sent back).
    pub custom: Option<Vec<String>>,
}

/// Tells an absent field (`None`) from an explicit null (`Some(None)`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// A settings change refused: an API error, or a template that does not render (422 with
/// the field, `{"error":{"code":"invalid_template","message","retryable":false,"field"}}`).
#[derive(Debug)]
pub enum SettingsError {
    /// Any other error.
    Api(ApiError),
    /// A template that does not compile or render.
    Template {
        /// Where, e.g. `templates.grace.sms_body`.
        field: String,
        /// minijinja's explanation.
        message: String,
    },
}

impl From<ApiError> for SettingsError {
    fn from(e: ApiError) -> Self {
        Self::Api(e)
    }
}

impl From<DbError> for SettingsError {
    fn from(e: DbError) -> Self {
        Self::Api(e.into())
    }
}

/// The body of a template error.
#[derive(Serialize, ToSchema)]
pub struct TemplateErrorBody {
    /// The error.
    pub error: TemplateErrorDetail,
}

/// A template error: the usual fields and the field it is in.
#[derive(Serialize, ToSchema)]
pub struct TemplateErrorDetail {
    /// `invalid_template`.
    pub code: String,
    /// What is wrong, prefixed with the field.
    pub message: String,
    /// Always false.
    pub retryable: bool,
    /// The field, e.g. `templates.grace.sms_body` or `sms.body_template`.
    pub field: String,
}

impl IntoResponse for SettingsError {
    fn into_response(self) -> Response {
        match self {
            Self::Api(e) => e.into_response(),
            Self::Template { field, message } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(TemplateErrorBody {
                    error: TemplateErrorDetail {
                        code: INVALID_TEMPLATE.to_owned(),
                        message: format!("{field}: {message}"),
                        retryable: false,
                        field,
                    },
                }),
            )
                .into_response(),
        }
    }
}

fn text_field(field: &str, value: &str, max: usize) -> Result<String, ApiError> {
    let v = value.trim();
    if v.is_empty() || v.len() > max || v.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "{field} must be 1 to {max} characters without control characters"
        )));
    }
    Ok(v.to_owned())
}

/// An `http` or `https` URL with a host.
fn url(field: &str, value: &str) -> Result<String, ApiError> {
    let v = value.trim();
    let ok = v.len() <= 2048
        && reqwest::Url::parse(v).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty())
        });
    if ok {
        Ok(v.to_owned())
    } else {
        Err(ApiError::invalid(format!(
            "{field} must be an http or https URL like https://sms.example.com/send"
        )))
    }
}

fn check_template(
    field: String,
    source: &str,
    vars: &minijinja::Value,
) -> Result<(), SettingsError> {
    template::render(source, vars)
        .map(|_| ())
        .map_err(|e| SettingsError::Template {
            field,
            message: e.0,
        })
}

fn parse_smtp(s: SmtpInput) -> Result<SmtpUpdate, SettingsError> {
    let host = text_field("smtp.host", &s.host, 253)?;
    if host.contains(char::is_whitespace) || host.contains('/') {
        return Err(ApiError::invalid("smtp.host must be a host name or address").into());
    }
    if s.port == 0 {
        return Err(ApiError::invalid("smtp.port must be 1 to 65535").into());
    }
    let tls = match s.tls.as_deref() {
        None => SmtpTls::Starttls,
        Some(t) => SmtpTls::parse(t).ok_or_else(|| {
            ApiError::invalid("smtp.tls must be \"none\", \"starttls\" or \"tls\"")
        })?,
    };
    let username = s
        .username
        .map(|u| text_field("smtp.username", &u, 256))
        .transpose()?;
    let password = match s.password {
        None => SecretChange::Keep,
        Some(None) => SecretChange::Remove,
        Some(Some(p)) => {
            if p.is_empty() || p.len() > 512 || p.chars().any(char::is_control) {
                return Err(ApiError::invalid(
                    "smtp.password must be 1 to 512 characters without control characters",
                )
                .into());
            }
            SecretChange::Set(Secret::new(p))
        }
    };
    let from = text_field("smtp.from", &s.from, 320)?;
    let mailbox: lettre::message::Mailbox = from.parse().map_err(|_| {
        ApiError::invalid("smtp.from must be an address, or a name and an address like \"Acme ISP <billing@acme.example>\"")
    })?;
    validate::email("smtp.from", mailbox.email.as_ref())?;
    Ok(SmtpUpdate {
        host,
        port: s.port,
        tls,
        username,
        password,
        from,
    })
}

fn parse_sms(s: SmsInput) -> Result<SmsUpdate, SettingsError> {
    let url = url("sms.url", &s.url)?;
    let method = match s.method.as_deref() {
        None => HttpMethod::Post,
        Some(m) => HttpMethod::parse(m)
            .ok_or_else(|| ApiError::invalid("sms.method must be POST, PUT or GET"))?,
    };
    if s.headers.len() > MAX_LIST {
        return Err(
            ApiError::invalid(format!("sms.headers may hold at most {MAX_LIST} headers")).into(),
        );
    }
    let mut headers = BTreeMap::new();
    for (name, value) in s.headers {
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() || name.len() > 128 {
            return Err(ApiError::invalid(format!(
                "sms.headers: {name:?} is not a valid header name"
            ))
            .into());
        }
        let change = match value {
            None => SecretChange::Keep,
            Some(v) => {
                if v.len() > 4096 || reqwest::header::HeaderValue::from_str(&v).is_err() {
                    return Err(ApiError::invalid(format!(
                        "sms.headers.{name} must be visible ASCII text of at most 4096 characters"
                    ))
                    .into());
                }
                SecretChange::Set(Secret::new(v))
            }
        };
        headers.insert(name, change);
    }
    let body_template = s
        .body_template
        .unwrap_or_else(|| DEFAULT_SMS_BODY.to_owned());
    let sample = template::gateway_vars(
        "+254700000001",
        "Sample message",
        "Sample ISP",
        "alice",
        "expiry_notice",
    );
    check_template("sms.body_template".into(), &body_template, &sample)?;
    let content_type = s
        .content_type
        .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_owned());
    if content_type.is_empty()
        || content_type.len() > 256
        || reqwest::header::HeaderValue::from_str(&content_type).is_err()
    {
        return Err(ApiError::invalid(
            "sms.content_type must be a media type like application/json",
        )
        .into());
    }
    Ok(SmsUpdate {
        url,
        method,
        headers,
        body_template,
        content_type,
    })
}

fn parse_templates(t: TemplatesInput, tenant: &str) -> Result<Templates, SettingsError> {
    let mut out = Templates::default();
    for (kind, given) in [
        ("expiry_notice", t.expiry_notice),
        ("grace", t.grace),
        ("suspended", t.suspended),
        ("renewed", t.renewed),
    ] {
        let Some(given) = given else { continue };
        let vars = NoticeVars::sample(kind, tenant).to_value();
        for (field, source) in [
            ("subject", &given.subject),
            ("email_body", &given.email_body),
            ("sms_body", &given.sms_body),
        ] {
            if source.trim().is_empty() {
                return Err(ApiError::invalid(format!(
                    "templates.{kind}.{field} must not be empty"
                ))
                .into());
            }
            check_template(format!("templates.{kind}.{field}"), source, &vars)?;
        }
        out.set(
            kind,
            MessageTemplate {
                subject: given.subject,
                email_body: given.email_body,
                sms_body: given.sms_body,
            },
        );
    }
    Ok(out)
}

/// The fewest and most characters of a webhook signing secret.
const WEBHOOK_SECRET_CHARS: std::ops::RangeInclusive<usize> = 16..=256;

fn parse_alerts(a: AlertsInput) -> Result<AlertsUpdate, ApiError> {
    if a.emails.len() > MAX_LIST {
        return Err(ApiError::invalid(format!(
            "alerts.emails may hold at most {MAX_LIST} addresses"
        )));
    }
    let mut emails: Vec<String> = Vec::new();
    for e in &a.emails {
        let e = validate::email("alerts.emails", e)?;
        if !emails.iter().any(|x| x.eq_ignore_ascii_case(&e)) {
            emails.push(e);
        }
    }
    let webhook_url = a
        .webhook_url
        .map(|u| url("alerts.webhook_url", &u))
        .transpose()?;
    let webhook_secret = match a.webhook_secret {
        None => SecretChange::Keep,
        Some(s) if s.is_empty() => SecretChange::Remove,
        Some(s) => {
            if !WEBHOOK_SECRET_CHARS.contains(&s.chars().count()) {
                return Err(ApiError::invalid(format!(
                    "alerts.webhook_secret must be {} to {} characters (\"\" removes it)",
                    WEBHOOK_SECRET_CHARS.start(),
                    WEBHOOK_SECRET_CHARS.end()
                )));
            }
            if webhook_url.is_none() {
                return Err(ApiError::invalid(
                    "alerts.webhook_secret needs alerts.webhook_url",
                ));
            }
            SecretChange::Set(Secret::new(s))
        }
    };
    Ok(AlertsUpdate {
        emails,
        webhook_url,
        webhook_secret,
    })
}

/// Shows a tenant's notification settings (never a secret).
#[utoipa::path(get, path = "/api/v1/tenants/{id}/notifications", tag = "notifications", params(("id" = String, Path)),
    responses((status = 200, body = NotificationSettingsDto), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn show_settings(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<TenantId>,
) -> Result<Json<NotificationSettingsDto>, ApiError> {
    let (_, settings) = st.db.notification_settings(&p.scope(), id).await?;
    Ok(Json(NotificationSettingsDto::of(settings)))
}

/// Replaces a tenant's notification settings (admin, or the tenant's operator). Templates
/// are tried on a sample subscriber first; audit action `tenant.notification_settings`.
#[utoipa::path(put, path = "/api/v1/tenants/{id}/notifications", tag = "notifications", params(("id" = String, Path)),
    request_body = SetNotificationSettings,
    responses((status = 200, body = NotificationSettingsDto), (status = 422, body = TemplateErrorBody),
        (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn set_settings(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<TenantId>,
    ApiJson(body): ApiJson<SetNotificationSettings>,
) -> Result<Json<NotificationSettingsDto>, SettingsError> {
    let p = auth.writer()?;
    // The tenant's name goes into the sample; this also answers 404 before validation
    // tells anything to a caller who may not see the tenant.
    let (tenant_name, _) = st.db.notification_settings(&p.scope(), id).await?;
    let update = SettingsUpdate {
        smtp: body.smtp.map(parse_smtp).transpose()?,
        sms: body.sms.map(parse_sms).transpose()?,
        templates: parse_templates(body.templates.unwrap_or_default(), &tenant_name)?,
        alerts: parse_alerts(body.alerts.unwrap_or_default())?,
    };
    let stored = st
        .db
        .set_notification_settings(&p.staff(), id, update)
        .await?;
    // The scan may now find notices to send.
    st.db.wake_notifier();
    Ok(Json(NotificationSettingsDto::of(stored)))
}

/// A test message to send.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestNotification {
    /// `email` or `sms`.
    pub channel: String,
    /// An email address or an E.164 phone number.
    pub recipient: String,
}

/// The queued test message.
#[derive(Serialize, ToSchema)]
pub struct QueuedNotifications {
    /// The ids of the notifications queued.
    pub ids: Vec<String>,
}

/// Queues a test message through the tenant's SMTP server or SMS gateway, like any other
/// notification (retries included).
#[utoipa::path(post, path = "/api/v1/tenants/{id}/notifications/test", tag = "notifications", params(("id" = String, Path)),
    request_body = TestNotification,
    responses((status = 202, body = QueuedNotifications), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn send_test(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<TenantId>,
    ApiJson(body): ApiJson<TestNotification>,
) -> Result<(StatusCode, Json<QueuedNotifications>), ApiError> {
    let p = auth.writer()?;
    let (channel, recipient) = match body.channel.as_str() {
        "email" => (
            Channel::Email,
            validate::email("recipient", &body.recipient)?,
        ),
        "sms" => (Channel::Sms, validate::phone("recipient", &body.recipient)?),
        _ => return Err(ApiError::invalid("channel must be \"email\" or \"sms\"")),
    };
    let nid = st
        .db
        .queue_test_notification(&p.staff(), id, channel, &recipient)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(QueuedNotifications { ids: vec![nid] }),
    ))
}

/// One notification in a subscriber's log.
#[derive(Serialize, ToSchema)]
pub struct NotificationDto {
    /// Its id.
    pub id: String,
    /// `expiry_notice`, `grace`, `suspended` or `renewed`.
    pub kind: String,
    /// `email` or `sms`.
    pub channel: String,
    /// The address or phone number.
    pub recipient: String,
    /// `pending`, `sending`, `sent` or `failed`.
    pub status: String,
    /// Attempts made.
    pub attempts: u32,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When the next attempt is due (while pending).
    pub next_attempt_at: Option<String>,
    /// When it was queued (RFC 3339).
    pub created_at: String,
    /// When it was delivered.
    pub sent_at: Option<String>,
}

impl From<Notification> for NotificationDto {
    fn from(n: Notification) -> Self {
        let pending = n.status == crate::db::notify::NotificationStatus::Pending;
        Self {
            id: n.id,
            kind: n.kind,
            channel: n.channel.as_str().to_owned(),
            recipient: n.recipient,
            status: n.status.as_str().to_owned(),
            attempts: n.attempts,
            last_error: n.last_error,
            next_attempt_at: pending.then(|| validate::format_time(n.next_attempt_at)),
            created_at: validate::format_time(n.created_at),
            sent_at: n.sent_at.map(validate::format_time),
        }
    }
}

/// A page of a subscriber's notifications, newest first.
#[derive(Serialize, ToSchema)]
pub struct NotificationList {
    /// The notifications.
    pub items: Vec<NotificationDto>,
    /// The next page's cursor, or null.
    pub next_cursor: Option<String>,
}

/// A subscriber's notifications, newest first.
#[utoipa::path(get, path = "/api/v1/subscribers/{id}/notifications", tag = "notifications", params(("id" = String, Path), ListQuery),
    responses((status = 200, body = NotificationList), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn subscriber_log(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<SubscriberId>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<NotificationList>, ApiError> {
    let page = q.page()?;
    let list = st
        .db
        .subscriber_notifications(&p.scope(), id, page.limit(), q.cursor.as_deref())
        .await?;
    Ok(Json(NotificationList {
        items: list.items.into_iter().map(Into::into).collect(),
        next_cursor: list.next_cursor,
    }))
}
