//! Notifications: subscriber notices (before expiry, at grace, at suspension, after a
//! renewal) by email and SMS, and admin alerts by email and webhook.
//!
//! Layout: [`settings`] (a tenant's SMTP server, SMS gateway, templates and alert
//! destinations), [`template`] (minijinja, the built-in texts), [`smtp`] and [`http`] (the
//! two ways out), [`sign`] (the alert webhook's request signature), and here the sender,
//! one background task per controller ([`Notifier`]), which [`crate::server::Server`]
//! starts and stops. The queue itself, with its exactly-once rules, is [`crate::db::notify`].
//!
//! The sender loops: (1) every minute on the injectable clock, and whenever woken, it scans
//! for subscribers whose expiry notice is due and queues it; (2) it claims due rows (a
//! lease, so two controllers sharing a database never send one row at once), sends them,
//! and records each outcome — `sent`, a retry with backoff, or `failed` with an admin
//! alert; (3) it sleeps until the next scan or the next due row, or until
//! [`Db::wake_notifier`] wakes it after a commit that queued something.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt as _;
use tikfleet_shared::{TenantId, UnixMillis};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

use crate::clock::SharedClock;
use crate::db::notify::{Channel, Notification, NotificationStatus};
use crate::db::{Db, DbError};

pub mod http;
pub mod settings;
pub mod sign;
pub mod smtp;
pub mod template;

use settings::{NotificationSettings, header_context, password_context, webhook_secret_context};

/// How often the expiry scan runs (on the controller's clock).
pub const SCAN_INTERVAL: Duration = Duration::from_secs(60);
/// Rows claimed at a time.
const BATCH: u32 = 32;
/// Deliveries in flight at once.
const CONCURRENCY: usize = 8;
/// How long to wait after the database failed before trying again.
const ERROR_PAUSE_MS: i64 = 5_000;

/// Why a delivery failed: a short text without secrets, and whether trying again can help.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{text}")]
pub struct SendError {
    /// What happened.
    pub text: String,
    /// The receiving side will never take it (no retry).
    pub permanent: bool,
}

impl SendError {
    pub(crate) fn permanent(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            permanent: true,
        }
    }

    pub(crate) fn transient(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            permanent: false,
        }
    }
}

/// An error and its sources, `: `-joined, cut to 300 characters.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text.chars().take(300).collect()
}

/// The notification sender, running.
#[derive(Debug)]
pub struct Notifier {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    passes: watch::Receiver<u64>,
}

impl Notifier {
    /// Starts the sender over `db`, on `clock`.
    ///
    /// # Errors
    /// The HTTP client cannot be set up (its TLS back end).
    pub fn start(db: Db, clock: SharedClock) -> Result<Self, reqwest::Error> {
        let client = http::client()?;
        let (stop, stopped) = oneshot::channel();
        let (passes_tx, passes) = watch::channel(0);
        let task = tokio::spawn(run(db, clock, client, stopped, passes_tx));
        Ok(Self {
            stop: Some(stop),
            task: Some(task),
            passes,
        })
    }

    /// The number of passes (scan, deliveries) finished so far: a test that changed
    /// something waits for two more to know the sender has seen it.
    #[must_use]
    pub fn passes(&self) -> watch::Receiver<u64> {
        self.passes.clone()
    }

    /// Stops the sender: deliveries in flight finish (or time out), nothing new starts.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

async fn run(
    db: Db,
    clock: SharedClock,
    client: reqwest::Client,
    mut stopped: oneshot::Receiver<()>,
    passes: watch::Sender<u64>,
) {
    let scan_ms = i64::try_from(SCAN_INTERVAL.as_millis()).unwrap_or(60_000);
    let mut next_scan = UnixMillis(i64::MIN);
    loop {
        let now = clock.now();
        let mut failed = false;
        if now >= next_scan {
            next_scan = UnixMillis(now.as_millis().saturating_add(scan_ms));
            if let Err(e) = scan(&db, now).await {
                tracing::warn!(error = %e, "the expiry-notice scan failed");
                failed = true;
            }
        }
        if let Err(e) = deliver_due(&db, &clock, &client).await {
            tracing::warn!(error = %e, "sending notifications failed");
            failed = true;
        }
        passes.send_modify(|n| *n += 1);
        let now = clock.now();
        let mut wake_at = match db.next_notification_due().await {
            Ok(Some(due)) => due.min(next_scan),
            Ok(None) => next_scan,
            Err(e) => {
                tracing::warn!(error = %e, "reading the notification queue failed");
                failed = true;
                next_scan
            }
        };
        if failed {
            wake_at = wake_at.max(UnixMillis(now.as_millis().saturating_add(ERROR_PAUSE_MS)));
        }
        tokio::select! {
            _ = &mut stopped => break,
            () = clock.sleep_until(wake_at) => {}
            () = db.notifications_queued().notified() => {
                // Something was queued or changed: look again now, the scan included.
                next_scan = UnixMillis(i64::MIN);
            }
        }
    }
    tracing::debug!("the notification sender stopped");
}

/// Queues the expiry notices due at `now`.
async fn scan(db: &Db, now: UnixMillis) -> Result<(), DbError> {
    let candidates = db.notice_candidates(now).await?;
    for chunk in candidates.chunks(100) {
        let queued = db.queue_expiry_notices(chunk, now).await?;
        if queued > 0 {
            tracing::info!(queued, "expiry notices queued");
        }
    }
    Ok(())
}

/// Claims and sends every due row, batch after batch.
async fn deliver_due(
    db: &Db,
    clock: &SharedClock,
    client: &reqwest::Client,
) -> Result<(), DbError> {
    loop {
        let batch = db.claim_notifications(clock.now(), BATCH).await?;
        if batch.is_empty() {
            return Ok(());
        }
        let mut tenants: BTreeMap<TenantId, Result<(String, NotificationSettings), String>> =
            BTreeMap::new();
        for n in &batch {
            if let std::collections::btree_map::Entry::Vacant(slot) = tenants.entry(n.tenant_id) {
                let config = db
                    .notification_settings(&crate::db::Scope::Admin, n.tenant_id)
                    .await
                    .map_err(|e| e.to_string());
                slot.insert(config);
            }
        }
        let results: Vec<(Notification, Result<(), SendError>)> = futures_util::stream::iter(batch)
            .map(|n| {
                let config = tenants.get(&n.tenant_id);
                async move {
                    let result = match config {
                        Some(Ok((_, settings))) => {
                            deliver(db, client, clock.now(), settings, &n).await
                        }
                        Some(Err(e)) => Err(SendError::transient(format!(
                            "the tenant's settings cannot be read: {e}"
                        ))),
                        None => Err(SendError::transient("the tenant's settings are missing")),
                    };
                    (n, result)
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for (n, result) in results {
            match result {
                Ok(()) => {
                    if db.record_sent(&n).await? {
                        tracing::info!(
                            notification = %n.id,
                            tenant = %n.tenant_id,
                            kind = %n.kind,
                            channel = n.channel.as_str(),
                            "notification sent"
                        );
                    }
                }
                Err(e) => {
                    let status = db.record_failure(&n, &e.text, e.permanent).await?;
                    if status == NotificationStatus::Failed {
                        tracing::warn!(
                            notification = %n.id,
                            tenant = %n.tenant_id,
                            kind = %n.kind,
                            channel = n.channel.as_str(),
                            attempts = n.attempts,
                            error = %e,
                            "notification failed"
                        );
                    } else {
                        tracing::info!(
                            notification = %n.id,
                            tenant = %n.tenant_id,
                            channel = n.channel.as_str(),
                            attempts = n.attempts,
                            error = %e,
                            "notification attempt failed; will retry"
                        );
                    }
                }
            }
        }
    }
}

/// Opens a sealed secret of the settings.
fn open(db: &Db, context: &str, sealed: &str) -> Result<Zeroizing<String>, SendError> {
    let plain = db.key().decrypt(context, sealed).map_err(|_| {
        SendError::transient("a stored secret cannot be decrypted (wrong controller key?)")
    })?;
    String::from_utf8(plain.to_vec())
        .map(Zeroizing::new)
        .map_err(|_| SendError::permanent("a stored secret is not text"))
}

/// Sends one claimed row with the tenant's current settings.
async fn deliver(
    db: &Db,
    client: &reqwest::Client,
    now: UnixMillis,
    settings: &NotificationSettings,
    n: &Notification,
) -> Result<(), SendError> {
    match n.channel {
        Channel::Email => {
            let smtp = settings
                .smtp
                .as_ref()
                .ok_or_else(|| SendError::permanent("the tenant has no SMTP server any more"))?;
            let password = smtp
                .password_sealed
                .as_deref()
                .map(|sealed| open(db, &password_context(n.tenant_id), sealed))
                .transpose()?;
            let email = smtp::Email {
                id: &n.id,
                to: &n.recipient,
                subject: n.subject.as_deref().unwrap_or(""),
                body: &n.body,
                date: now,
            };
            smtp::send(smtp, password, &email).await
        }
        Channel::Sms => {
            let gw = settings
                .sms
                .as_ref()
                .ok_or_else(|| SendError::permanent("the tenant has no SMS gateway any more"))?;
            let mut headers = BTreeMap::new();
            for (name, sealed) in &gw.headers_sealed {
                headers.insert(
                    name.clone(),
                    open(db, &header_context(n.tenant_id, name), sealed)?,
                );
            }
            let req = http::Request {
                method: gw.method,
                url: &gw.url,
                headers,
                body: &n.body,
                content_type: &gw.content_type,
            };
            http::send(client, req).await
        }
        Channel::Webhook => {
            let url =
                settings.alerts.webhook_url.as_deref().ok_or_else(|| {
                    SendError::permanent("the tenant has no alert webhook any more")
                })?;
            let mut headers = BTreeMap::new();
            if let Some(sealed) = &settings.alerts.webhook_secret_sealed {
                let secret = open(db, &webhook_secret_context(n.tenant_id), sealed)?;
                for (name, value) in sign::headers(secret.as_bytes(), now, n.body.as_bytes()) {
                    headers.insert(name.to_owned(), Zeroizing::new(value));
                }
            }
            let req = http::Request {
                method: settings::HttpMethod::Post,
                url,
                headers,
                body: &n.body,
                content_type: "application/json",
            };
            http::send(client, req).await
        }
    }
}
