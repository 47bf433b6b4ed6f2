//! Notifications in storage: the queue of outgoing notices (email, SMS) and admin alerts
//! (email, webhook), each tenant's notification settings, and each subscriber's log.
//!
//! **Queuing** happens inside the caller's transaction ([`queue_notice`], [`queue_alert`]),
//! so a notice exists exactly when the change that caused it committed; the caller then
//! wakes the sender with [`Db::wake_notifier`]. The text is rendered at that moment. Each
//! row has a `dedupe_key` naming what it is about (`notice:{subscriber}:{kind}:{expiry}:
//! {days}:{channel}`, `alert:{key}:{channel}...`), unique per tenant, and is inserted with
//! `ON CONFLICT DO NOTHING`: queuing the same notice again (a restart, a resent report, a
//! second scan) adds nothing, so nothing is sent twice.
//!
//! **Sending** ([`crate::notify`]) claims due rows with a lease (a conditional `UPDATE` per
//! row, so two controllers never hold the same row), then records the outcome: `sent`, a
//! retry with exponential backoff, or `failed` (a permanent refusal, or the last attempt),
//! which raises an admin alert unless the row was itself an alert.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tikfleet_shared::record::AuditParams;
use tikfleet_shared::{RouterId, SubscriberId, TenantId, UnixMillis};

use super::sql::{Sql, push_in};
use super::subscribers::{SUBSCRIBER_COLUMNS, Subscriber, subscriber};
use super::{Db, DbError, Page, RowExt as _, Scope, Staff, audit_staff};
use crate::lifecycle::{LifecycleOverride, LifecycleSettings};
use crate::notify::settings::{
    AlertSettings, NotificationSettings, SecretChange, SettingsUpdate, SmsGateway, SmtpSettings,
    header_context, password_context, webhook_secret_context,
};
use crate::notify::template::{
    self, DAY_MS, NoticeVars, TemplateError, gateway_vars, render, render_message,
};

/// Attempts before a notification is given up (`failed`).
pub const MAX_ATTEMPTS: u32 = 10;
/// How long a claimed notification is reserved for the sender that claimed it.
pub const LEASE_MS: i64 = 60_000;
/// The first retry's delay; each further one doubles, up to [`MAX_BACKOFF_MS`].
pub const FIRST_BACKOFF_MS: i64 = 30_000;
/// The longest delay between attempts.
pub const MAX_BACKOFF_MS: i64 = 3_600_000;

/// What a subscriber is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoticeKind {
    /// Service expires in `days_before` days (one of the notice days).
    ExpiryNotice {
        /// The notice day this is for.
        days_before: u32,
    },
    /// Expired; in grace.
    Grace,
    /// Suspended.
    Suspended,
    /// Renewed.
    Renewed,
}

impl NoticeKind {
    /// `expiry_notice`, `grace`, `suspended` or `renewed`: the log's `kind` and the
    /// template's name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ExpiryNotice { .. } => "expiry_notice",
            Self::Grace => "grace",
            Self::Suspended => "suspended",
            Self::Renewed => "renewed",
        }
    }

    const fn days(self) -> u32 {
        match self {
            Self::ExpiryNotice { days_before } => days_before,
            _ => 0,
        }
    }
}

/// How a notification travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    /// Through the tenant's SMTP server.
    Email,
    /// Through the tenant's SMS gateway.
    Sms,
    /// A JSON `POST` to the tenant's alert webhook.
    Webhook,
}

impl Channel {
    /// `email`, `sms` or `webhook`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Sms => "sms",
            Self::Webhook => "webhook",
        }
    }
}

impl std::str::FromStr for Channel {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "email" => Ok(Self::Email),
            "sms" => Ok(Self::Sms),
            "webhook" => Ok(Self::Webhook),
            _ => Err(()),
        }
    }
}

/// Where a notification stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotificationStatus {
    /// Waiting for its (next) attempt.
    Pending,
    /// Claimed by a sender until `next_attempt_at`.
    Sending,
    /// Delivered (accepted by the SMTP server or the gateway).
    Sent,
    /// Given up.
    Failed,
}

impl NotificationStatus {
    /// The API and database name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sending => "sending",
            Self::Sent => "sent",
            Self::Failed => "failed",
        }
    }
}

impl std::str::FromStr for NotificationStatus {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "pending" => Ok(Self::Pending),
            "sending" => Ok(Self::Sending),
            "sent" => Ok(Self::Sent),
            "failed" => Ok(Self::Failed),
            _ => Err(()),
        }
    }
}

/// One queued notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// Its id (UUIDv7).
    pub id: String,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// The subscriber it is for (notices).
    pub subscriber_id: Option<SubscriberId>,
    /// The router it is about (some alerts).
    pub router_id: Option<RouterId>,
    /// `expiry_notice`, `grace`, `suspended`, `renewed`, `test` or `alert`.
    pub kind: String,
    /// How it travels.
    pub channel: Channel,
    /// Email address, phone number, or (webhook) the URL's host.
    pub recipient: String,
    /// The email's subject.
    pub subject: Option<String>,
    /// What is sent: the email body, the gateway request body, the webhook's JSON.
    pub body: String,
    /// Where it stands.
    pub status: NotificationStatus,
    /// Attempts made (or under way).
    pub attempts: u32,
    /// When the next attempt is due (while `pending`), or the lease ends (`sending`).
    pub next_attempt_at: UnixMillis,
    /// Why the last attempt failed (short, without secrets).
    pub last_error: Option<String>,
    /// When it was queued.
    pub created_at: UnixMillis,
    /// When it was delivered.
    pub sent_at: Option<UnixMillis>,
}

const COLUMNS: &str = "id, tenant_id, subscriber_id, router_id, kind, channel, recipient, subject, body, status, attempts, next_attempt_at, last_error, created_at, sent_at";

fn notification(row: &sqlx::any::AnyRow) -> Result<Notification, DbError> {
    Ok(Notification {
        id: row.text("id")?,
        tenant_id: row.parse("tenant_id")?,
        subscriber_id: row.opt_parse("subscriber_id")?,
        router_id: row.opt_parse("router_id")?,
        kind: row.text("kind")?,
        channel: row.parse("channel")?,
        recipient: row.text("recipient")?,
        subject: row.opt_text("subject")?,
        body: row.text("body")?,
        status: row.parse("status")?,
        attempts: u32::try_from(row.uint("attempts")?).unwrap_or(u32::MAX),
        next_attempt_at: row.millis("next_attempt_at")?,
        last_error: row.opt_text("last_error")?,
        created_at: row.millis("created_at")?,
        sent_at: row.opt_millis("sent_at")?,
    })
}

/// The delay before the attempt after `attempts` failed ones: 30 s, 1 min, 2 min, … 1 h.
#[must_use]
pub fn backoff_ms(attempts: u32) -> i64 {
    let doublings = attempts.saturating_sub(1).min(20);
    FIRST_BACKOFF_MS
        .saturating_mul(1_i64 << doublings)
        .min(MAX_BACKOFF_MS)
}

/// A tenant's name and notification settings, read inside `tx`.
pub(crate) async fn tenant_config(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    tenant: TenantId,
) -> Result<(String, NotificationSettings), DbError> {
    let mut q = Sql::new("SELECT name, notifications FROM tenants WHERE id = ");
    q.bind(tenant.to_string());
    let row = q
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(DbError::NotFound("tenant"))?;
    let settings = NotificationSettings::from_stored(row.opt_text("notifications")?.as_deref())
        .map_err(DbError::Corrupt)?;
    Ok((row.text("name")?, settings))
}

/// A row to insert.
struct NewRow<'a> {
    tenant: TenantId,
    subscriber: Option<SubscriberId>,
    router: Option<RouterId>,
    kind: &'a str,
    channel: Channel,
    dedupe_key: String,
    recipient: String,
    subject: Option<String>,
    /// The body, or why it could not be rendered (the row is then `failed` at once).
    body: Result<String, String>,
}

/// Inserts a row unless its dedupe key exists; returns its id when inserted.
async fn insert(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    row: NewRow<'_>,
    now: UnixMillis,
) -> Result<Option<String>, DbError> {
    let id = uuid::Uuid::now_v7().to_string();
    let (status, body, error) = match row.body {
        Ok(body) => (NotificationStatus::Pending, body, None),
        Err(e) => (NotificationStatus::Failed, String::new(), Some(e)),
    };
    let mut q = Sql::new(
        "INSERT INTO notifications (id, tenant_id, subscriber_id, router_id, kind, channel, \
         dedupe_key, recipient, subject, body, status, attempts, next_attempt_at, last_error, \
         created_at) VALUES (",
    );
    q.bind(id.clone())
        .push(", ")
        .bind(row.tenant.to_string())
        .push(", ")
        .bind(row.subscriber.map(|s| s.to_string()))
        .push(", ")
        .bind(row.router.map(|r| r.to_string()))
        .push(", ")
        .bind(row.kind.to_owned())
        .push(", ")
        .bind(row.channel.as_str().to_owned())
        .push(", ")
        .bind(row.dedupe_key)
        .push(", ")
        .bind(row.recipient)
        .push(", ")
        .bind(row.subject)
        .push(", ")
        .bind(body)
        .push(", ")
        .bind(status.as_str().to_owned())
        .push(", 0, ")
        .bind(now.as_millis())
        .push(", ")
        .bind(error)
        .push(", ")
        .bind(now.as_millis())
        .push(") ON CONFLICT (tenant_id, dedupe_key) DO NOTHING");
    let done = q.execute(&mut **tx).await?;
    Ok((done.rows_affected() > 0).then_some(id))
}

/// Which of `keys` already have a row in `tenant`.
async fn existing_keys(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    tenant: TenantId,
    keys: &[String],
) -> Result<Vec<String>, DbError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut q = Sql::new("SELECT dedupe_key FROM notifications WHERE tenant_id = ");
    q.bind(tenant.to_string()).push(" AND dedupe_key IN ");
    push_in(&mut q, keys.iter().cloned());
    q.fetch_all(&mut **tx)
        .await?
        .iter()
        .map(|r| r.text("dedupe_key"))
        .collect()
}

/// The SMS gateway's request body for `message` to `phone`.
fn gateway_body(
    gw: &SmsGateway,
    phone: &str,
    message: &str,
    tenant: &str,
    username: &str,
    kind: &str,
) -> Result<String, TemplateError> {
    render(
        &gw.body_template,
        &gateway_vars(phone, message, tenant, username, kind),
    )
}

/// The dedupe key of `kind`'s notice to `sub` through `channel`: one per subscriber, kind,
/// expiry (a renewal starts a new series), notice day and channel.
fn notice_key(sub: &Subscriber, kind: NoticeKind, channel: Channel) -> String {
    format!(
        "notice:{}:{}:{}:{}:{}",
        sub.id,
        kind.as_str(),
        sub.expires_at
            .map_or_else(|| "none".to_owned(), |e| e.as_millis().to_string()),
        kind.days(),
        channel.as_str()
    )
}

/// Queues `kind`'s notice to `sub` on each channel it can be reached on (email when it has
/// an address and the tenant an SMTP server; SMS when it has a phone number and the tenant
/// an SMS gateway), rendered now with the tenant's template; returns the rows queued. A
/// notice already queued (same subscriber, kind, expiry, day and channel) is not queued
/// again. A template that cannot be rendered queues the row as `failed`, with the reason
/// in its log, and never fails the caller's change. Wake the sender after committing.
///
/// # Errors
/// The database failed or the tenant's stored settings do not decode.
pub(crate) async fn queue_notice(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    db: &Db,
    sub: &Subscriber,
    plan_name: &str,
    kind: NoticeKind,
    grace_until: Option<UnixMillis>,
    now: UnixMillis,
) -> Result<usize, DbError> {
    let _ = db;
    let (tenant_name, settings) = tenant_config(tx, sub.tenant_id).await?;
    let mut channels = Vec::new();
    if let (Some(email), Some(_)) = (&sub.contact.email, &settings.smtp) {
        channels.push((Channel::Email, email.clone()));
    }
    if let (Some(phone), Some(_)) = (&sub.contact.phone, &settings.sms) {
        channels.push((Channel::Sms, phone.clone()));
    }
    if channels.is_empty() {
        return Ok(0);
    }
    let key = |channel: Channel| notice_key(sub, kind, channel);
    // Rendering costs more than a lookup: skip it when every row exists (a rescan).
    let keys: Vec<String> = channels.iter().map(|(c, _)| key(*c)).collect();
    let existing = existing_keys(tx, sub.tenant_id, &keys).await?;
    channels.retain(|(c, _)| !existing.contains(&key(*c)));
    if channels.is_empty() {
        return Ok(0);
    }
    let vars = NoticeVars {
        kind: kind.as_str().to_owned(),
        username: sub.username.clone(),
        name: sub.contact.name.clone(),
        email: sub.contact.email.clone(),
        phone: sub.contact.phone.clone(),
        plan: plan_name.to_owned(),
        expires_at: sub.expires_at,
        days_left: NoticeVars::days_until(sub.expires_at, now),
        days_before: kind.days(),
        grace_until,
        tenant: tenant_name.clone(),
    };
    let rendered = render_message(
        &settings.templates.effective(kind.as_str()),
        &vars.to_value(),
    )
    .map_err(|(field, e)| format!("template {}.{field}: {e}", kind.as_str()));
    if let Err(e) = &rendered {
        tracing::warn!(tenant = %sub.tenant_id, kind = kind.as_str(), error = %e, "a notice template does not render");
    }
    let mut queued = 0;
    for (channel, recipient) in channels {
        let (subject, body) = match (&rendered, channel) {
            (Err(e), _) => (None, Err(e.clone())),
            (Ok((subject, email, _)), Channel::Email) => (Some(subject.clone()), Ok(email.clone())),
            (Ok((_, _, sms)), _) => {
                let gw = settings
                    .sms
                    .as_ref()
                    .ok_or(DbError::Invalid("no gateway".into()))?;
                let body = gateway_body(
                    gw,
                    &recipient,
                    sms,
                    &tenant_name,
                    &sub.username,
                    kind.as_str(),
                )
                .map_err(|e| format!("SMS gateway body_template: {e}"));
                (None, body)
            }
        };
        let row = NewRow {
            tenant: sub.tenant_id,
            subscriber: Some(sub.id),
            router: Some(sub.router_id),
            kind: kind.as_str(),
            channel,
            dedupe_key: key(channel),
            recipient,
            subject,
            body,
        };
        if insert(tx, row, now).await?.is_some() {
            queued += 1;
        }
    }
    Ok(queued)
}

/// The host of a URL, for logs and the webhook row's recipient (the path may hold a secret).
pub(crate) fn url_host(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| "webhook".into())
}

/// Queues an admin alert of `tenant`: an email to each alert address (when the tenant has
/// an SMTP server) and a JSON `POST` to its alert webhook (`{"subject","body","tenant",
/// "tenant_name","router","key","at"}`); returns the rows queued. An alert with the same
/// `dedupe_key` is queued once. `subject` is one short line without a product prefix (the
/// email's subject is `[tikfleet] {subject}`). Wake the sender after committing.
///
/// # Errors
/// The database failed or the tenant's stored settings do not decode.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn queue_alert(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    db: &Db,
    tenant: TenantId,
    router: Option<RouterId>,
    dedupe_key: &str,
    subject: &str,
    body: &str,
    now: UnixMillis,
) -> Result<usize, DbError> {
    let _ = db;
    let (tenant_name, settings) = tenant_config(tx, tenant).await?;
    let mut queued = 0;
    if settings.smtp.is_some() {
        for address in &settings.alerts.emails {
            let row = NewRow {
                tenant,
                subscriber: None,
                router,
                kind: "alert",
                channel: Channel::Email,
                dedupe_key: format!("alert:{dedupe_key}:email:{}", address.to_ascii_lowercase()),
                recipient: address.clone(),
                subject: Some(format!("[tikfleet] {subject}")),
                body: Ok(format!(
                    "{body}\n\n-- \ntikfleet controller, {tenant_name}; alert {dedupe_key}\n"
                )),
            };
            if insert(tx, row, now).await?.is_some() {
                queued += 1;
            }
        }
    }
    if let Some(url) = &settings.alerts.webhook_url {
        let json = serde_json::json!({
            "subject": subject,
            "body": body,
            "tenant": tenant.to_string(),
            "tenant_name": tenant_name,
            "router": router.map(|r| r.to_string()),
            "key": dedupe_key,
            "at": template::rfc3339(now),
        });
        let row = NewRow {
            tenant,
            subscriber: None,
            router,
            kind: "alert",
            channel: Channel::Webhook,
            dedupe_key: format!("alert:{dedupe_key}:webhook"),
            recipient: url_host(url),
            subject: None,
            body: Ok(json.to_string()),
        };
        if insert(tx, row, now).await?.is_some() {
            queued += 1;
        }
    }
    Ok(queued)
}

/// A subscriber the expiry scan found, with what decides its notice.
#[derive(Clone, Debug)]
pub(crate) struct NoticeCandidate {
    pub(crate) subscriber: Subscriber,
    pub(crate) plan_name: String,
    pub(crate) settings: LifecycleSettings,
}

impl NoticeCandidate {
    /// The notice due now: the smallest notice day whose moment (`expires_at - d days`) has
    /// passed, so a controller that was down across two moments sends only the later one,
    /// and a larger day never follows a smaller one.
    pub(crate) fn due(&self, now: UnixMillis) -> Option<u32> {
        let expires = self.subscriber.expires_at?;
        if expires <= now {
            return None;
        }
        self.settings
            .notice_days
            .iter()
            .copied()
            .filter(|&d| d > 0)
            .filter(|&d| {
                expires
                    .as_millis()
                    .saturating_sub(i64::from(d).saturating_mul(DAY_MS))
                    <= now.as_millis()
            })
            .min()
    }
}

fn parse_override(json: Option<&str>) -> Result<LifecycleOverride, DbError> {
    json.map_or_else(
        || Ok(LifecycleOverride::default()),
        |j| {
            serde_json::from_str(j)
                .map_err(|e| DbError::Corrupt(format!("plan lifecycle settings: {e}")))
        },
    )
}

/// The page of a newest-first list: ids below the cursor's.
fn decode_cursor(cursor: Option<&str>) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor?).ok()?;
    String::from_utf8(bytes).ok()
}

impl Db {
    /// A tenant's name and notification settings (secrets still sealed), if visible in
    /// `scope`.
    ///
    /// # Errors
    /// Not found (or not visible), the stored settings do not decode, or the database failed.
    pub async fn notification_settings(
        &self,
        scope: &Scope,
        tenant: TenantId,
    ) -> Result<(String, NotificationSettings), DbError> {
        let mut q = Sql::new("SELECT name, notifications FROM tenants WHERE id = ");
        q.bind(tenant.to_string());
        scope.filter(&mut q, "id");
        let row = q
            .fetch_optional(self.pool())
            .await?
            .ok_or(DbError::NotFound("tenant"))?;
        let settings = NotificationSettings::from_stored(row.opt_text("notifications")?.as_deref())
            .map_err(DbError::Corrupt)?;
        Ok((row.text("name")?, settings))
    }

    /// Replaces a tenant's notification settings (audit action
    /// `tenant.notification_settings`, without secrets). New secrets are sealed here; a
    /// password, header or webhook signing secret left as [`SecretChange::Keep`] keeps its
    /// stored value (the signing secret only while there is a webhook).
    ///
    /// # Errors
    /// Not found (or not visible), a kept header has no stored value, or the database failed.
    pub async fn set_notification_settings(
        &self,
        staff: &Staff,
        tenant: TenantId,
        update: SettingsUpdate,
    ) -> Result<NotificationSettings, DbError> {
        let now = self.now();
        let mut tx = self.begin().await?;
        let mut q = Sql::new("SELECT notifications FROM tenants WHERE id = ");
        q.bind(tenant.to_string());
        staff.scope.filter(&mut q, "id");
        let row = q
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(DbError::NotFound("tenant"))?;
        let old = NotificationSettings::from_stored(row.opt_text("notifications")?.as_deref())
            .map_err(DbError::Corrupt)?;
        let key = self.key();
        let smtp = match update.smtp {
            None => None,
            Some(u) => Some(SmtpSettings {
                password_sealed: match u.password {
                    SecretChange::Keep => old.smtp.as_ref().and_then(|s| s.password_sealed.clone()),
                    SecretChange::Remove => None,
                    SecretChange::Set(p) => {
                        Some(key.encrypt(&password_context(tenant), p.expose().as_bytes())?)
                    }
                },
                host: u.host,
                port: u.port,
                tls: u.tls,
                username: u.username,
                from: u.from,
            }),
        };
        let sms = match update.sms {
            None => None,
            Some(u) => {
                let mut headers = BTreeMap::new();
                for (name, change) in u.headers {
                    let sealed = match change {
                        SecretChange::Set(v) => {
                            key.encrypt(&header_context(tenant, &name), v.expose().as_bytes())?
                        }
                        SecretChange::Keep | SecretChange::Remove => old
                            .sms
                            .as_ref()
                            .and_then(|g| g.headers_sealed.get(&name).cloned())
                            .ok_or_else(|| {
                                DbError::Invalid(format!(
                                    "sms.headers.{name} has no stored value to keep; send its value"
                                ))
                            })?,
                    };
                    headers.insert(name, sealed);
                }
                Some(SmsGateway {
                    url: u.url,
                    method: u.method,
                    headers_sealed: headers,
                    body_template: u.body_template,
                    content_type: u.content_type,
                })
            }
        };
        let a = update.alerts;
        let webhook_secret_sealed = match (&a.webhook_url, a.webhook_secret) {
            // A secret belongs to its webhook: none without one.
            (None, _) | (Some(_), SecretChange::Remove) => None,
            (Some(_), SecretChange::Keep) => old.alerts.webhook_secret_sealed.clone(),
            (Some(_), SecretChange::Set(v)) => {
                Some(key.encrypt(&webhook_secret_context(tenant), v.expose().as_bytes())?)
            }
        };
        let new = NotificationSettings {
            smtp,
            sms,
            templates: update.templates,
            alerts: AlertSettings {
                emails: a.emails,
                webhook_url: a.webhook_url,
                webhook_secret_sealed,
            },
        };
        let mut q = Sql::new("UPDATE tenants SET notifications = ");
        q.bind(new.to_stored())
            .push(" WHERE id = ")
            .bind(tenant.to_string());
        q.execute(&mut *tx).await?;
        let mut params = AuditParams::new();
        params
            .insert(
                "smtp",
                new.smtp.as_ref().map_or_else(
                    || "none".to_owned(),
                    |s| format!("{}:{} ({})", s.host, s.port, s.tls.as_str()),
                ),
            )
            .insert(
                "smtp_auth",
                if new
                    .smtp
                    .as_ref()
                    .is_some_and(|s| s.password_sealed.is_some())
                {
                    "set"
                } else {
                    "none"
                },
            )
            .insert(
                "sms_gateway",
                new.sms
                    .as_ref()
                    .map_or_else(|| "none".to_owned(), |g| url_host(&g.url)),
            )
            .insert(
                "sms_headers",
                new.sms.as_ref().map_or_else(String::new, |g| {
                    g.headers_sealed
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(",")
                }),
            )
            .insert("alert_emails", new.alerts.emails.len().to_string())
            .insert(
                "alert_webhook",
                new.alerts
                    .webhook_url
                    .as_deref()
                    .map_or_else(|| "none".to_owned(), url_host),
            )
            .insert(
                "alert_webhook_signing",
                if new.alerts.webhook_secret_sealed.is_some() {
                    "set"
                } else {
                    "none"
                },
            )
            .insert(
                "custom_templates",
                crate::notify::settings::TEMPLATE_KINDS
                    .iter()
                    .filter(|k| new.templates.custom(k).is_some())
                    .copied()
                    .collect::<Vec<_>>()
                    .join(","),
            );
        audit_staff(
            &mut tx,
            now,
            Some(tenant),
            None,
            &staff.actor,
            "tenant.notification_settings",
            &params,
        )
        .await?;
        tx.commit().await?;
        Ok(new)
    }

    /// A subscriber's notifications, newest first, `limit` at a time after `cursor` (a
    /// `next_cursor` this returned; the caller checked it with [`super::PageRequest::parse`]).
    ///
    /// # Errors
    /// The subscriber is not found (or not visible), or the database failed.
    pub async fn subscriber_notifications(
        &self,
        scope: &Scope,
        sub: SubscriberId,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<Notification>, DbError> {
        let mut q = Sql::new("SELECT id FROM subscribers WHERE id = ");
        q.bind(sub.to_string());
        scope.filter(&mut q, "tenant_id");
        if q.fetch_optional(self.pool()).await?.is_none() {
            return Err(DbError::NotFound("subscriber"));
        }
        let mut q = Sql::new("SELECT ");
        q.push(COLUMNS)
            .push(" FROM notifications WHERE subscriber_id = ")
            .bind(sub.to_string());
        scope.filter(&mut q, "tenant_id");
        if let Some(after) = decode_cursor(cursor) {
            q.push(" AND id < ").bind(after);
        }
        q.push(" ORDER BY id DESC LIMIT ")
            .bind(i64::from(limit) + 1);
        let rows = q.fetch_all(self.pool()).await?;
        let mut items = rows
            .iter()
            .map(notification)
            .collect::<Result<Vec<_>, _>>()?;
        let limit = limit as usize;
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items
                .last()
                .map(|n| URL_SAFE_NO_PAD.encode(n.id.as_bytes()))
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    /// Queues a test message to `recipient` through `channel` (`email` or `sms`) of a tenant,
    /// like any other notification; returns its id.
    ///
    /// # Errors
    /// Not found (or not visible), the tenant has no such channel, or the database failed.
    pub async fn queue_test_notification(
        &self,
        staff: &Staff,
        tenant: TenantId,
        channel: Channel,
        recipient: &str,
    ) -> Result<String, DbError> {
        let now = self.now();
        let mut tx = self.begin().await?;
        let mut q = Sql::new("SELECT id FROM tenants WHERE id = ");
        q.bind(tenant.to_string());
        staff.scope.filter(&mut q, "id");
        if q.fetch_optional(&mut *tx).await?.is_none() {
            return Err(DbError::NotFound("tenant"));
        }
        let (tenant_name, settings) = tenant_config(&mut tx, tenant).await?;
        let vars = NoticeVars {
            kind: "test".into(),
            username: staff.actor.clone(),
            tenant: tenant_name.clone(),
            ..NoticeVars::default()
        };
        let (subject, email, sms) =
            render_message(&template::default_template("test"), &vars.to_value())
                .map_err(|(f, e)| DbError::Corrupt(format!("test template {f}: {e}")))?;
        let (subject, body) = match channel {
            Channel::Email if settings.smtp.is_some() => (Some(subject), Ok(email)),
            Channel::Sms => {
                let gw = settings.sms.as_ref().ok_or_else(|| {
                    DbError::Unprocessable("the tenant has no SMS gateway; set sms first".into())
                })?;
                let body = gateway_body(gw, recipient, &sms, &tenant_name, &staff.actor, "test")
                    .map_err(|e| format!("SMS gateway body_template: {e}"));
                (None, body)
            }
            Channel::Email => {
                return Err(DbError::Unprocessable(
                    "the tenant has no SMTP server; set smtp first".into(),
                ));
            }
            Channel::Webhook => {
                return Err(DbError::Invalid("channel must be email or sms".into()));
            }
        };
        let row = NewRow {
            tenant,
            subscriber: None,
            router: None,
            kind: "test",
            channel,
            dedupe_key: format!("test:{}", uuid::Uuid::now_v7()),
            recipient: recipient.to_owned(),
            subject,
            body,
        };
        let id = insert(&mut tx, row, now)
            .await?
            .ok_or_else(|| DbError::Conflict("the test message was already queued".into()))?;
        let mut params = AuditParams::new();
        params.insert("channel", channel.as_str());
        audit_staff(
            &mut tx,
            now,
            Some(tenant),
            None,
            &staff.actor,
            "tenant.notification_test",
            &params,
        )
        .await?;
        tx.commit().await?;
        self.wake_notifier();
        Ok(id)
    }

    /// Queues an admin alert of `tenant` in a transaction of its own and wakes the sender
    /// (for code that has no transaction open; inside one, use [`queue_alert`]).
    ///
    /// # Errors
    /// The tenant does not exist, or the database failed.
    pub async fn send_alert(
        &self,
        tenant: TenantId,
        router: Option<RouterId>,
        dedupe_key: &str,
        subject: &str,
        body: &str,
    ) -> Result<usize, DbError> {
        let now = self.now();
        let mut tx = self.begin().await?;
        let n = queue_alert(
            &mut tx, self, tenant, router, dedupe_key, subject, body, now,
        )
        .await?;
        tx.commit().await?;
        self.wake_notifier();
        Ok(n)
    }

    /// One notification by id, if visible in `scope`.
    ///
    /// # Errors
    /// Not found (or not visible), or the database failed.
    pub async fn get_notification(&self, scope: &Scope, id: &str) -> Result<Notification, DbError> {
        let mut q = Sql::new("SELECT ");
        q.push(COLUMNS)
            .push(" FROM notifications WHERE id = ")
            .bind(id.to_owned());
        scope.filter(&mut q, "tenant_id");
        let row = q
            .fetch_optional(self.pool())
            .await?
            .ok_or(DbError::NotFound("notification"))?;
        notification(&row)
    }

    /// Claims up to `limit` due notifications for this sender: each becomes `sending`, its
    /// attempt counted, reserved until `now + LEASE_MS`. A row another sender claimed first
    /// is skipped (the conditional update finds it no longer due).
    pub(crate) async fn claim_notifications(
        &self,
        now: UnixMillis,
        limit: u32,
    ) -> Result<Vec<Notification>, DbError> {
        let mut tx = self.begin().await?;
        let mut q = Sql::new(
            "SELECT id FROM notifications WHERE status IN ('pending', 'sending') AND next_attempt_at <= ",
        );
        q.bind(now.as_millis())
            .push(" ORDER BY next_attempt_at, id LIMIT ")
            .bind(i64::from(limit));
        let ids = q
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.text("id"))
            .collect::<Result<Vec<_>, _>>()?;
        let mut claimed = Vec::new();
        for id in ids {
            let mut q = Sql::new(
                "UPDATE notifications SET status = 'sending', attempts = attempts + 1, next_attempt_at = ",
            );
            q.bind(now.as_millis().saturating_add(LEASE_MS))
                .push(" WHERE id = ")
                .bind(id.clone())
                .push(" AND status IN ('pending', 'sending') AND next_attempt_at <= ")
                .bind(now.as_millis());
            if q.execute(&mut *tx).await?.rows_affected() == 1 {
                claimed.push(id);
            }
        }
        if claimed.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        let mut q = Sql::new("SELECT ");
        q.push(COLUMNS).push(" FROM notifications WHERE id IN ");
        push_in(&mut q, claimed);
        let rows = q.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        rows.iter().map(notification).collect()
    }

    /// When the next pending notification (or lease) is due, if any.
    pub(crate) async fn next_notification_due(&self) -> Result<Option<UnixMillis>, DbError> {
        let q = Sql::new(
            "SELECT MIN(next_attempt_at) AS due FROM notifications WHERE status IN ('pending', 'sending')",
        );
        let row = q.fetch_one(self.pool()).await?;
        row.opt_millis("due")
    }

    /// Records that a claimed notification was delivered. `false` if the claim had lapsed
    /// and another sender holds the row now.
    pub(crate) async fn record_sent(&self, n: &Notification) -> Result<bool, DbError> {
        let now = self.now();
        let mut q =
            Sql::new("UPDATE notifications SET status = 'sent', last_error = NULL, sent_at = ");
        q.bind(now.as_millis())
            .push(", next_attempt_at = ")
            .bind(now.as_millis())
            .push(" WHERE id = ")
            .bind(n.id.clone())
            .push(" AND status = 'sending' AND attempts = ")
            .bind(i64::from(n.attempts));
        Ok(q.execute(self.pool()).await?.rows_affected() == 1)
    }

    /// Records a failed attempt: a retry after [`backoff_ms`], or — when `permanent` or after
    /// [`MAX_ATTEMPTS`] — `failed`, with an admin alert about it (unless it was an alert).
    /// Returns the status it is left in.
    pub(crate) async fn record_failure(
        &self,
        n: &Notification,
        error: &str,
        permanent: bool,
    ) -> Result<NotificationStatus, DbError> {
        let now = self.now();
        let error: String = error.chars().take(300).collect();
        let give_up = permanent || n.attempts >= MAX_ATTEMPTS;
        let (status, next) = if give_up {
            (NotificationStatus::Failed, now)
        } else {
            (
                NotificationStatus::Pending,
                UnixMillis(now.as_millis().saturating_add(backoff_ms(n.attempts))),
            )
        };
        let mut tx = self.begin().await?;
        let mut q = Sql::new("UPDATE notifications SET status = ");
        q.bind(status.as_str().to_owned())
            .push(", next_attempt_at = ")
            .bind(next.as_millis())
            .push(", last_error = ")
            .bind(error.clone())
            .push(" WHERE id = ")
            .bind(n.id.clone())
            .push(" AND status = 'sending' AND attempts = ")
            .bind(i64::from(n.attempts));
        if q.execute(&mut *tx).await?.rows_affected() == 0 {
            // Our claim lapsed; the sender that holds the row now records its own outcome.
            tx.commit().await?;
            return Ok(NotificationStatus::Sending);
        }
        let mut alerted = 0;
        if give_up && n.kind != "alert" {
            let why = if permanent {
                "was refused"
            } else {
                "failed on every attempt"
            };
            let subject = format!("{} {} to {} {why}", n.kind, n.channel.as_str(), n.recipient);
            let body = format!(
                "The {} {} notification {} to {} {why} after {} attempt{}: {error}",
                n.kind,
                n.channel.as_str(),
                n.id,
                n.recipient,
                n.attempts,
                if n.attempts == 1 { "" } else { "s" },
            );
            alerted = queue_alert(
                &mut tx,
                self,
                n.tenant_id,
                n.router_id,
                &format!("notification_failed:{}", n.id),
                &subject,
                &body,
                now,
            )
            .await?;
        }
        tx.commit().await?;
        if alerted > 0 {
            self.wake_notifier();
        }
        Ok(status)
    }

    /// The longest notice period (days) of any tenant with notification settings, over its
    /// own settings and its plans' overrides: how far ahead the expiry scan looks.
    async fn notice_horizon_days(&self) -> Result<Vec<(TenantId, LifecycleSettings)>, DbError> {
        let q = Sql::new("SELECT id, lifecycle FROM tenants WHERE notifications IS NOT NULL");
        let rows = q.fetch_all(self.pool()).await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.parse("id")?,
                    super::lifecycle::parse_settings(r.opt_text("lifecycle")?.as_deref())?,
                ))
            })
            .collect()
    }

    /// Subscribers whose expiry notice may be due: not on hold, expiring after `now` and
    /// within the longest notice period of their tenant or plan, in a tenant with
    /// notification settings.
    pub(crate) async fn notice_candidates(
        &self,
        now: UnixMillis,
    ) -> Result<Vec<NoticeCandidate>, DbError> {
        let tenants: BTreeMap<TenantId, LifecycleSettings> =
            self.notice_horizon_days().await?.into_iter().collect();
        if tenants.is_empty() {
            return Ok(Vec::new());
        }
        let q = Sql::new(
            "SELECT p.lifecycle FROM plans p JOIN tenants t ON t.id = p.tenant_id \
             WHERE t.notifications IS NOT NULL AND p.lifecycle IS NOT NULL",
        );
        let mut horizon = tenants
            .values()
            .flat_map(|s| s.notice_days.iter().copied())
            .max()
            .unwrap_or(0);
        for row in q.fetch_all(self.pool()).await? {
            let o = parse_override(row.opt_text("lifecycle")?.as_deref())?;
            horizon = horizon.max(
                o.notice_days
                    .unwrap_or_default()
                    .into_iter()
                    .max()
                    .unwrap_or(0),
            );
        }
        if horizon == 0 {
            return Ok(Vec::new());
        }
        let columns = SUBSCRIBER_COLUMNS
            .split(", ")
            .map(|c| format!("s.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut q = Sql::new("SELECT ");
        q.push(&columns)
            .push(
                ", p.name AS plan_name, p.lifecycle AS plan_lifecycle FROM subscribers s \
                 JOIN plans p ON p.id = s.plan_id JOIN tenants t ON t.id = s.tenant_id \
                 WHERE t.notifications IS NOT NULL AND s.hold = 0 AND s.expires_at > ",
            )
            .bind(now.as_millis())
            .push(" AND s.expires_at <= ")
            .bind(
                now.as_millis()
                    .saturating_add(i64::from(horizon).saturating_mul(DAY_MS)),
            )
            .push(" AND (s.email IS NOT NULL OR s.phone IS NOT NULL) ORDER BY s.expires_at");
        let rows = q.fetch_all(self.pool()).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let sub = subscriber(row)?;
            let Some(tenant) = tenants.get(&sub.tenant_id) else {
                continue;
            };
            let o = parse_override(row.opt_text("plan_lifecycle")?.as_deref())?;
            out.push(NoticeCandidate {
                plan_name: row.text("plan_name")?,
                settings: tenant.with(&o),
                subscriber: sub,
            });
        }
        Ok(out)
    }

    /// Queues the expiry notices due now for `candidates` (one transaction); returns the
    /// rows queued.
    pub(crate) async fn queue_expiry_notices(
        &self,
        candidates: &[NoticeCandidate],
        now: UnixMillis,
    ) -> Result<usize, DbError> {
        let mut due: Vec<(&NoticeCandidate, u32)> = candidates
            .iter()
            .filter_map(|c| c.due(now).map(|d| (c, d)))
            .collect();
        // Most scans find only notices already queued: tell them apart with one read,
        // before taking the write lock.
        let keys = |c: &NoticeCandidate, days_before: u32| {
            let kind = NoticeKind::ExpiryNotice { days_before };
            let mut keys = Vec::new();
            if c.subscriber.contact.email.is_some() {
                keys.push(notice_key(&c.subscriber, kind, Channel::Email));
            }
            if c.subscriber.contact.phone.is_some() {
                keys.push(notice_key(&c.subscriber, kind, Channel::Sms));
            }
            keys
        };
        let mut wanted: BTreeMap<TenantId, Vec<String>> = BTreeMap::new();
        for (c, d) in &due {
            wanted
                .entry(c.subscriber.tenant_id)
                .or_default()
                .extend(keys(c, *d));
        }
        let mut existing = std::collections::BTreeSet::new();
        for (tenant, keys) in wanted {
            if keys.is_empty() {
                continue;
            }
            let mut q = Sql::new("SELECT dedupe_key FROM notifications WHERE tenant_id = ");
            q.bind(tenant.to_string()).push(" AND dedupe_key IN ");
            push_in(&mut q, keys);
            for row in q.fetch_all(self.pool()).await? {
                existing.insert(row.text("dedupe_key")?);
            }
        }
        due.retain(|(c, d)| keys(c, *d).iter().any(|k| !existing.contains(k)));
        if due.is_empty() {
            return Ok(0);
        }
        let mut tx = self.begin().await?;
        let mut queued = 0;
        for (c, days_before) in due {
            queued += queue_notice(
                &mut tx,
                self,
                &c.subscriber,
                &c.plan_name,
                NoticeKind::ExpiryNotice { days_before },
                None,
                now,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(queued)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_30_seconds_to_an_hour() {
        assert_eq!(backoff_ms(1), 30_000);
        assert_eq!(backoff_ms(2), 60_000);
        assert_eq!(backoff_ms(3), 120_000);
        assert_eq!(backoff_ms(8), 3_600_000);
        assert_eq!(backoff_ms(9), 3_600_000);
        assert_eq!(backoff_ms(u32::MAX), 3_600_000);
    }

    #[test]
    fn the_smallest_passed_notice_day_is_due() {
        let expires = UnixMillis(100 * DAY_MS);
        let c = |days: Vec<u32>| NoticeCandidate {
            subscriber: Subscriber {
                id: SubscriberId::new(),
                tenant_id: TenantId::new(),
                router_id: RouterId::new(),
                plan_id: uuid::Uuid::now_v7(),
                username: "a".into(),
                service: super::super::subscribers::Service::Pppoe,
                expires_at: Some(expires),
                status: super::super::subscribers::SubscriberStatus::Active,
                hold: false,
                status_reason: None,
                status_at: None,
                contact: super::super::subscribers::Contact::default(),
                created_at: UnixMillis(0),
                updated_at: UnixMillis(0),
            },
            plan_name: "p".into(),
            settings: LifecycleSettings {
                notice_days: days,
                ..LifecycleSettings::default()
            },
        };
        let at = |days_before: f64| {
            #[allow(clippy::cast_possible_truncation)]
            UnixMillis(expires.as_millis() - (days_before * DAY_MS as f64) as i64)
        };
        let two_one = c(vec![2, 1]);
        assert_eq!(two_one.due(at(3.0)), None);
        assert_eq!(two_one.due(at(2.0)), Some(2));
        assert_eq!(two_one.due(at(1.5)), Some(2));
        assert_eq!(two_one.due(at(1.0)), Some(1));
        assert_eq!(two_one.due(at(0.1)), Some(1));
        assert_eq!(two_one.due(at(0.0)), None, "expired: no notice");
        assert_eq!(c(vec![1, 7, 3]).due(at(2.0)), Some(3));
        assert_eq!(c(vec![]).due(at(0.5)), None);
        assert_eq!(c(vec![0]).due(at(0.5)), None);
    }
}
