//! Router backups: the chunks agents upload (assembled, checked, stored), the staff's list,
//! download and diff of them, the `backup_now` job staff request, each tenant's backup
//! settings ([`BackupSettings`]: the schedule and the retention), the schedule
//! ([`Db::queue_due_backups`], run every minute by [`ScheduleTask`]) and retention
//! ([`Db::apply_backup_retention`], run hourly by [`RetentionTask`]).
//!
//! The agent's outbox delivers each [`BackupChunk`] exactly once and in order, and resumes
//! after a dropped link, so assembly only has to stage parts until the last one: the
//! assembled file's size and SHA-256 must match what every part announced, or the parts are
//! discarded (the job's own update still tells staff how it went). A part of a file already
//! stored (the agent ran the job again after a crash) changes nothing. Bytes live in
//! `backup_blobs`, one per router and SHA-256; a text export whose configuration equals the
//! router's previous export (ignoring the dated first line `/export` prints) is recorded
//! `unchanged` and points at that export's blob instead of storing another copy.
//!
//! Secrets: a binary backup is encrypted by the router with the agent's password, which the
//! controller never has; a text export is stored as the router printed it (RouterOS hides
//! passwords in `/export` unless `show-sensitive`, which the agent never asks for) and every
//! export the API serves, downloaded or diffed, passes through [`redact_export`].

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use tikfleet_shared::job::{JobOp, Priority};
use tikfleet_shared::record::{AuditParams, BackupChunk, BackupKind};
use tikfleet_shared::secret::REDACTED;
use tikfleet_shared::{RouterId, TenantId, UnixMillis};
use uuid::Uuid;

use super::jobs::{Due, JobRecord, NewJob, queue_audited};
use super::sql::Sql;
use super::{Db, DbError, RowExt as _, Scope, Staff, audit_staff, to_i64};

/// The largest binary backup the controller restores. The file never travels whole: the
/// agent fetches it in parts (see `db::restore`), so this only bounds what the agent stages
/// on disk and what a router takes, far beyond any real `.backup`.
pub const MAX_RESTORE_BYTES: u64 = 1 << 30;

/// Daily backups kept per router and kind when the tenant sets nothing.
pub const DEFAULT_KEEP_DAILY: u32 = 30;
/// Monthly backups kept per router and kind when the tenant sets nothing.
pub const DEFAULT_KEEP_MONTHLY: u32 = 12;
/// The most daily backups a tenant may keep (about ten years).
pub const MAX_KEEP_DAILY: u32 = 3660;
/// The most monthly backups a tenant may keep (a hundred years).
pub const MAX_KEEP_MONTHLY: u32 = 1200;
/// Seconds between scheduled backups when the tenant sets nothing: daily.
pub const DEFAULT_INTERVAL_SECS: u64 = 86_400;
/// The shortest schedule interval: hourly.
pub const MIN_INTERVAL_SECS: u64 = 3_600;
/// The longest schedule interval: 30 days.
pub const MAX_INTERVAL_SECS: u64 = 30 * 86_400;

const DAY_MS: i64 = 86_400_000;

/// When routers are backed up by the schedule: a `backup_now` job per router once its last
/// backup job is `interval_secs` old, or — with `at` — once per `interval_secs / 86400` days
/// at that time of day (UTC). Fields left out take their defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BackupSchedule {
    /// Whether the schedule runs (default true).
    pub enabled: bool,
    /// Seconds between a router's scheduled backups, 3600 (hourly) to 2592000 (30 days);
    /// with `at`, a whole number of days. Default 86400 (daily).
    pub interval_secs: u64,
    /// Time of day (UTC, `HH:MM`) scheduled backups start at; left out: any time of day.
    pub at: Option<String>,
    /// With `at`: how long after it a due backup may still be started, 60 to 86400
    /// seconds (a backup missed in the window, say while the controller was down, waits
    /// for the next day's); left out: until the next day's `at`.
    pub window_secs: Option<u64>,
}

impl Default for BackupSchedule {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_secs: DEFAULT_INTERVAL_SECS,
            at: None,
            window_secs: None,
        }
    }
}

/// A tenant's backup settings: the schedule and the retention of every router's backups.
/// Fields left out take their defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BackupSettings {
    /// When scheduled backups are taken.
    pub schedule: BackupSchedule,
    /// The newest backup of each of this many last days is kept, per router and kind
    /// (1 to 3660, default 30).
    pub keep_daily: u32,
    /// The newest backup of each of this many last months is kept, per router and kind
    /// (0 to 1200, default 12).
    pub keep_monthly: u32,
}

impl Default for BackupSettings {
    fn default() -> Self {
        Self {
            schedule: BackupSchedule::default(),
            keep_daily: DEFAULT_KEEP_DAILY,
            keep_monthly: DEFAULT_KEEP_MONTHLY,
        }
    }
}

/// `HH:MM` (UTC) as milliseconds after midnight.
fn time_of_day_ms(at: &str) -> Option<i64> {
    let (h, m) = at.split_once(':')?;
    if h.len() != 2 || m.len() != 2 || !(h.bytes().chain(m.bytes())).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some((h * 60 + m) * 60_000)
}

impl BackupSettings {
    /// Checks every range; the message names the field.
    ///
    /// # Errors
    /// The first value out of range.
    pub fn validate(&self) -> Result<(), String> {
        let s = &self.schedule;
        if !(MIN_INTERVAL_SECS..=MAX_INTERVAL_SECS).contains(&s.interval_secs) {
            return Err(format!(
                "schedule.interval_secs must be {MIN_INTERVAL_SECS} to {MAX_INTERVAL_SECS} \
                 (1 hour to 30 days)"
            ));
        }
        match &s.at {
            Some(at) => {
                if time_of_day_ms(at).is_none() {
                    return Err(format!(
                        "schedule.at must be a UTC time of day HH:MM (00:00 to 23:59), not {at:?}"
                    ));
                }
                if !s.interval_secs.is_multiple_of(DEFAULT_INTERVAL_SECS) {
                    return Err(
                        "schedule.interval_secs must be a whole number of days (a multiple of \
                         86400) when schedule.at is set"
                            .into(),
                    );
                }
            }
            None if s.window_secs.is_some() => {
                return Err("schedule.window_secs needs schedule.at".into());
            }
            None => {}
        }
        if s.window_secs.is_some_and(|w| !(60..=86_400).contains(&w)) {
            return Err("schedule.window_secs must be 60 to 86400".into());
        }
        if !(1..=MAX_KEEP_DAILY).contains(&self.keep_daily) {
            return Err(format!("keep_daily must be 1 to {MAX_KEEP_DAILY}"));
        }
        if self.keep_monthly > MAX_KEEP_MONTHLY {
            return Err(format!("keep_monthly must be 0 to {MAX_KEEP_MONTHLY}"));
        }
        Ok(())
    }
}

fn parse_settings(json: Option<&str>) -> Result<BackupSettings, DbError> {
    let Some(json) = json else {
        return Ok(BackupSettings::default());
    };
    let settings: BackupSettings = serde_json::from_str(json)
        .map_err(|e| DbError::Corrupt(format!("tenant backup settings: {e}")))?;
    settings
        .validate()
        .map_err(|e| DbError::Corrupt(format!("tenant backup settings: {e}")))?;
    Ok(settings)
}

/// Whether a router whose last backup job reached its agent (or was queued, if it never
/// did) at `since` is due for a scheduled backup at `now`. (A router never backed up is due
/// at once; [`Db::queue_due_backups`] sees to that.)
///
/// Without `at`: once `interval_secs` have passed since then. With `at`: once `now` is in a
/// later "schedule day" (from one day's `at` to the next's) than `since`, by at least
/// `interval_secs / 86400` days, and within `window_secs` of that day's `at` — so a backup
/// taken by hand after the day's `at` counts for the day, and one a minute late does not
/// push the next a day later.
#[must_use]
pub fn schedule_due(schedule: &BackupSchedule, since: UnixMillis, now: UnixMillis) -> bool {
    if !schedule.enabled {
        return false;
    }
    let interval_ms =
        i64::try_from(schedule.interval_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let Some(offset) = schedule.at.as_deref().and_then(time_of_day_ms) else {
        return now.as_millis() >= since.as_millis().saturating_add(interval_ms);
    };
    let day = |t: UnixMillis| t.as_millis().saturating_sub(offset).div_euclid(DAY_MS);
    let days = (interval_ms / DAY_MS).max(1);
    let into_day = now.as_millis().saturating_sub(offset).rem_euclid(DAY_MS);
    let in_window = schedule
        .window_secs
        .is_none_or(|w| into_day < i64::try_from(w.saturating_mul(1000)).unwrap_or(i64::MAX));
    day(now).saturating_sub(day(since)) >= days && in_window
}

/// One stored backup file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backup {
    /// Its id.
    pub id: Uuid,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// The router.
    pub router_id: RouterId,
    /// The job that took it.
    pub job_id: tikfleet_shared::JobId,
    /// Export or binary.
    pub kind: BackupKind,
    /// When the agent took it.
    pub taken_at: UnixMillis,
    /// The router's RouterOS version then.
    pub ros_version: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
    /// A text export equal to the router's previous one (not stored again).
    pub unchanged: bool,
}

const COLUMNS: &str = "id, tenant_id, router_id, job_id, kind, taken_at, ros_version, size, \
                       sha256, unchanged, blob_sha256";

fn parse_kind(s: &str) -> Result<BackupKind, DbError> {
    match s {
        "export" => Ok(BackupKind::Export),
        "binary" => Ok(BackupKind::Binary),
        _ => Err(DbError::Corrupt(format!("unknown backup kind {s:?}"))),
    }
}

fn from_row(row: &sqlx::any::AnyRow) -> Result<(Backup, String), DbError> {
    Ok((
        Backup {
            id: row.parse("id")?,
            tenant_id: row.parse("tenant_id")?,
            router_id: row.parse("router_id")?,
            job_id: row.parse("job_id")?,
            kind: parse_kind(&row.text("kind")?)?,
            taken_at: UnixMillis::new(row.int("taken_at")?),
            ros_version: row.text("ros_version")?,
            size: row.uint("size")?,
            sha256: row.text("sha256")?,
            unchanged: row.int("unchanged")? != 0,
        },
        row.text("blob_sha256")?,
    ))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn sha256(data: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

/// The SHA-256 of an export's configuration: the text without a first line of the form
/// `# <date> by RouterOS <version>`, which changes with every export.
#[must_use]
pub fn config_sha256(export: &[u8]) -> String {
    let body = match export.iter().position(|b| *b == b'\n') {
        Some(end) if export.starts_with(b"# ") && contains(&export[..end], b" by RouterOS") => {
            &export[end + 1..]
        }
        _ => export,
    };
    sha256(body)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Words whose values an export never shows: any `key=value` whose key contains one of these
/// (`password=`, `secret=`, `passphrase=`, `wpa2-pre-shared-key=`, `private-key=`, …).
const SENSITIVE: [&str; 7] = [
    "password",
    "secret",
    "passphrase",
    "key",
    "psk",
    "token",
    "community",
];

/// An export with every sensitive value replaced by `<redacted>`: for each `name=value`
/// token (value bare or double-quoted, escapes respected) whose name contains a sensitive
/// word. Everything else is left as it was, so diffs still show what changed.
///
/// `/export` wraps long commands with a `\` at the end of a line and four spaces at the
/// start of the next, also inside a quoted value; such lines are joined into the one command
/// they make (the wrapping is layout, not configuration) before redaction, so a value split
/// across lines is hidden whole.
#[must_use]
pub fn redact_export(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut logical = String::new();
    let mut first = true;
    for line in text.split('\n') {
        let continued = !line.trim_start().starts_with('#') && line.ends_with('\\');
        if logical.is_empty() {
            logical.push_str(line);
        } else {
            logical.push_str(line.trim_start_matches([' ', '\t']));
        }
        if continued {
            logical.pop();
            continue;
        }
        if !first {
            out.push('\n');
        }
        first = false;
        redact_line(&logical, &mut out);
        logical.clear();
    }
    if !logical.is_empty() {
        if !first {
            out.push('\n');
        }
        redact_line(&logical, &mut out);
    }
    out
}

fn redact_line(line: &str, out: &mut String) {
    if line.trim_start().starts_with('#') {
        out.push_str(line);
        return;
    }
    let bytes = line.as_bytes();
    let mut i = 0;
    let mut token_start = 0;
    let mut quoted = false;
    while i < bytes.len() {
        let c = bytes[i];
        if quoted {
            if c == b'\\' {
                i += 2;
                continue;
            }
            if c == b'"' {
                quoted = false;
            }
            i += 1;
            continue;
        }
        match c {
            b'"' => quoted = true,
            b' ' | b'\t' => token_start = i + 1,
            b'=' => {
                let name = line[token_start..i].to_ascii_lowercase();
                if SENSITIVE.iter().any(|w| name.contains(w)) {
                    // Skip the value (bare or quoted).
                    let mut j = i + 1;
                    if bytes.get(j) == Some(&b'"') {
                        j += 1;
                        while j < bytes.len() && bytes[j] != b'"' {
                            j += if bytes[j] == b'\\' { 2 } else { 1 };
                        }
                        j = (j + 1).min(bytes.len());
                    } else {
                        while j < bytes.len() && !matches!(bytes[j], b' ' | b'\t') {
                            j += 1;
                        }
                    }
                    let value = &line[i + 1..j.min(line.len())];
                    out.push_str(&line[..=i]);
                    if value.is_empty() || value == "\"\"" || value == "\\" {
                        out.push_str(value);
                    } else {
                        out.push_str(REDACTED);
                    }
                    // Continue after the value; what follows is copied from `j`.
                    redact_line(&line[j.min(line.len())..], out);
                    return;
                }
            }
            _ => {}
        }
        i += 1;
    }
    out.push_str(line);
}

/// A unified diff of two exports, redacted first; `from` and `to` name them in the header.
#[must_use]
pub fn export_diff(old: &str, new: &str, from: &str, to: &str) -> String {
    let old = redact_export(old);
    let new = redact_export(new);
    similar::TextDiff::from_lines(&old, &new)
        .unified_diff()
        .context_radius(3)
        .header(from, to)
        .to_string()
}

/// Stores one uploaded part inside the hub's transaction; on the last part, assembles and
/// stores the file. Parts for a file already stored are ignored.
pub(crate) async fn ingest_chunk(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    tenant: TenantId,
    now: UnixMillis,
    chunk: &BackupChunk,
) -> Result<(), DbError> {
    let job = chunk.job_id.to_string();
    let kind = chunk.kind.as_str();
    let mut q = Sql::new("SELECT id FROM backups WHERE job_id = ");
    q.bind(job.clone())
        .push(" AND kind = ")
        .bind(kind.to_owned());
    if q.fetch_optional(&mut **tx).await?.is_some() {
        return Ok(());
    }
    if chunk.offset == 0 {
        // A new attempt of the job starts the file over.
        let mut q = Sql::new("DELETE FROM backup_chunks WHERE job_id = ");
        q.bind(job.clone())
            .push(" AND kind = ")
            .bind(kind.to_owned());
        q.execute(&mut **tx).await?;
    }
    let mut q = Sql::new("INSERT INTO backup_chunks (job_id, kind, chunk_offset, data) VALUES (");
    q.bind(job.clone())
        .push(", ")
        .bind(kind.to_owned())
        .push(", ")
        .bind(to_i64(chunk.offset))
        .push(", ")
        .bind(B64.encode(&chunk.data))
        .push(") ON CONFLICT (job_id, kind, chunk_offset) DO NOTHING");
    q.execute(&mut **tx).await?;
    if !chunk.last {
        return Ok(());
    }
    let mut q = Sql::new("SELECT chunk_offset, data FROM backup_chunks WHERE job_id = ");
    q.bind(job.clone())
        .push(" AND kind = ")
        .bind(kind.to_owned())
        .push(" ORDER BY chunk_offset");
    let mut data = Vec::with_capacity(usize::try_from(chunk.total_size).unwrap_or(0));
    let mut intact = true;
    for row in q.fetch_all(&mut **tx).await? {
        if row.uint("chunk_offset")? != data.len() as u64 {
            intact = false;
            break;
        }
        let part = B64
            .decode(row.text("data")?)
            .map_err(|e| DbError::Corrupt(format!("backup chunk: {e}")))?;
        data.extend_from_slice(&part);
    }
    let mut q = Sql::new("DELETE FROM backup_chunks WHERE job_id = ");
    q.bind(job.clone())
        .push(" AND kind = ")
        .bind(kind.to_owned());
    q.execute(&mut **tx).await?;
    let digest = sha256(&data);
    if !intact || data.len() as u64 != chunk.total_size || digest != hex(&chunk.sha256) {
        tracing::warn!(
            job = %chunk.job_id,
            router = %chunk.router_id,
            kind,
            "a backup arrived incomplete or damaged; discarded"
        );
        return Ok(());
    }
    let config = match chunk.kind {
        BackupKind::Export => config_sha256(&data),
        BackupKind::Binary => digest.clone(),
    };
    // The router's previous backup of this kind: the same configuration means unchanged.
    let mut q = Sql::new("SELECT config_sha256, blob_sha256 FROM backups WHERE router_id = ");
    q.bind(chunk.router_id.to_string())
        .push(" AND kind = ")
        .bind(kind.to_owned())
        .push(" ORDER BY taken_at DESC, id DESC LIMIT 1");
    let previous = q.fetch_optional(&mut **tx).await?;
    let unchanged_blob = match (&previous, chunk.kind) {
        (Some(row), BackupKind::Export) if row.text("config_sha256")? == config => {
            Some(row.text("blob_sha256")?)
        }
        _ => None,
    };
    let blob = match unchanged_blob.clone() {
        Some(b) => b,
        None => {
            let mut q = Sql::new("INSERT INTO backup_blobs (router_id, sha256, data) VALUES (");
            q.bind(chunk.router_id.to_string())
                .push(", ")
                .bind(digest.clone())
                .push(", ")
                .bind(B64.encode(&data))
                .push(") ON CONFLICT (router_id, sha256) DO NOTHING");
            q.execute(&mut **tx).await?;
            digest.clone()
        }
    };
    let mut q = Sql::new(
        "INSERT INTO backups (id, tenant_id, router_id, job_id, kind, taken_at, received_at, \
         ros_version, size, sha256, config_sha256, blob_sha256, unchanged) VALUES (",
    );
    q.bind(Uuid::now_v7().to_string())
        .push(", ")
        .bind(tenant.to_string())
        .push(", ")
        .bind(chunk.router_id.to_string())
        .push(", ")
        .bind(job)
        .push(", ")
        .bind(kind.to_owned())
        .push(", ")
        .bind(chunk.taken_at.as_millis())
        .push(", ")
        .bind(now.as_millis())
        .push(", ")
        .bind(chunk.ros_version.clone())
        .push(", ")
        .bind(to_i64(chunk.total_size))
        .push(", ")
        .bind(digest)
        .push(", ")
        .bind(config)
        .push(", ")
        .bind(blob)
        .push(", ")
        .bind(i64::from(unchanged_blob.is_some()))
        .push(")");
    q.execute(&mut **tx).await?;
    Ok(())
}

/// Which backups of a router and kind retention keeps: newest first in `taken`, the newest
/// of each of the last `daily` distinct UTC days and of each of the last `monthly` distinct
/// months (the newest backup is always kept). Returns the indexes to delete.
#[must_use]
pub fn retention_victims(taken: &[UnixMillis], daily: u32, monthly: u32) -> Vec<usize> {
    let mut keep = vec![false; taken.len()];
    if let Some(k) = keep.first_mut() {
        *k = true;
    }
    let mut days: Vec<i64> = Vec::new();
    let mut months: Vec<(i32, u8)> = Vec::new();
    for (i, t) in taken.iter().enumerate() {
        let ms = t.as_millis();
        let day = ms.div_euclid(86_400_000);
        if !days.contains(&day) && days.len() < daily as usize {
            days.push(day);
            keep[i] = true;
        }
        let month = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
            .map(|d| (d.year(), u8::from(d.month())))
            .unwrap_or((0, 0));
        if !months.contains(&month) && months.len() < monthly as usize {
            months.push(month);
            keep[i] = true;
        }
    }
    keep.iter()
        .enumerate()
        .filter(|(_, k)| !**k)
        .map(|(i, _)| i)
        .collect()
}

/// A router and kind's backups for retention: key, daily and monthly limits, (id, taken at)
/// newest first.
type Group = (String, u32, u32, Vec<(String, UnixMillis)>);

impl Db {
    /// A router's backups, newest first (at most `limit`).
    ///
    /// # Errors
    /// The router is not visible, or the database failed.
    pub async fn list_backups(
        &self,
        scope: &Scope,
        router: RouterId,
        limit: u32,
    ) -> Result<Vec<Backup>, DbError> {
        let mut tx = self.begin().await?;
        super::routers::load(&mut tx, scope, router).await?;
        let mut q = Sql::new("SELECT ");
        q.push(COLUMNS)
            .push(" FROM backups WHERE router_id = ")
            .bind(router.to_string());
        scope.filter(&mut q, "tenant_id");
        q.push(" ORDER BY taken_at DESC, id DESC LIMIT ")
            .bind(i64::from(limit));
        let rows = q.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        rows.iter().map(|r| from_row(r).map(|(b, _)| b)).collect()
    }

    /// One backup and its bytes.
    ///
    /// # Errors
    /// Not found (or not visible), or the database failed.
    pub async fn get_backup(&self, scope: &Scope, id: Uuid) -> Result<(Backup, Vec<u8>), DbError> {
        let mut q = Sql::new("SELECT ");
        q.push(COLUMNS)
            .push(" FROM backups WHERE id = ")
            .bind(id.to_string());
        scope.filter(&mut q, "tenant_id");
        let row = q
            .fetch_optional(self.pool())
            .await?
            .ok_or(DbError::NotFound("backup"))?;
        let (backup, blob) = from_row(&row)?;
        let mut q = Sql::new("SELECT data FROM backup_blobs WHERE router_id = ");
        q.bind(backup.router_id.to_string())
            .push(" AND sha256 = ")
            .bind(blob);
        let row = q
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| DbError::Corrupt(format!("backup {id} has no stored bytes")))?;
        let data = B64
            .decode(row.text("data")?)
            .map_err(|e| DbError::Corrupt(format!("backup {id}: {e}")))?;
        Ok((backup, data))
    }

    /// Records that staff downloaded or compared a backup (no content in the audit row).
    ///
    /// # Errors
    /// The database failed.
    pub async fn audit_backup_read(
        &self,
        staff: &Staff,
        backup: &Backup,
        action: &str,
        against: Option<Uuid>,
    ) -> Result<(), DbError> {
        let mut tx = self.begin().await?;
        let mut params = AuditParams::new();
        params.insert("backup_id", backup.id.to_string());
        params.insert("kind", backup.kind.as_str().to_owned());
        if let Some(a) = against {
            params.insert("against", a.to_string());
        }
        audit_staff(
            &mut tx,
            self.now(),
            Some(backup.tenant_id),
            Some(backup.router_id),
            &staff.actor,
            action,
            &params,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Queues a `backup_now` job for a router; follow it with `GET /jobs/{id}`.
    ///
    /// # Errors
    /// The router is not visible, or the database failed.
    pub async fn request_backup(
        &self,
        staff: &Staff,
        router_id: RouterId,
    ) -> Result<JobRecord, DbError> {
        let now = self.now();
        let mut tx = self.begin().await?;
        let router = super::routers::load(&mut tx, &staff.scope, router_id).await?;
        let op = JobOp::BackupNow { name: None };
        let job = queue_audited(
            &mut tx,
            self.key(),
            NewJob {
                tenant: router.tenant_id,
                router: router_id,
                idempotency_key: format!("backup:{router_id}:{}", Uuid::now_v7()),
                priority: Priority::Normal,
                op: &op,
                now,
                generation: None,
            },
            &staff.actor,
            "router.backup",
            AuditParams::new(),
        )
        .await?;
        self.commit_queued(tx, job, router.agent_id).await
    }

    /// Queues a `restore` job for binary backup `id` on its router's agent; follow it with
    /// `GET /jobs/{id}`. The job names the backup by id, size and SHA-256; the agent fetches
    /// the file in parts over its link (`backup_fetch`), checks it, and uploads it.
    ///
    /// # Errors
    /// Not found (or not visible); not a binary backup, or larger than
    /// [`MAX_RESTORE_BYTES`] (`Unprocessable`); or the database failed.
    pub async fn request_restore(&self, staff: &Staff, id: Uuid) -> Result<JobRecord, DbError> {
        let now = self.now();
        let mut tx = self.begin().await?;
        let mut q = Sql::new("SELECT ");
        q.push(COLUMNS)
            .push(" FROM backups WHERE id = ")
            .bind(id.to_string());
        staff.scope.filter(&mut q, "tenant_id");
        let row = q
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(DbError::NotFound("backup"))?;
        let (backup, _) = from_row(&row)?;
        if backup.kind != BackupKind::Binary {
            return Err(DbError::Unprocessable(
                "only a binary backup can be restored; a text export is for reading and diffs"
                    .into(),
            ));
        }
        if backup.size > MAX_RESTORE_BYTES {
            return Err(DbError::Unprocessable(format!(
                "the backup is {} bytes; restores take at most {MAX_RESTORE_BYTES} bytes",
                backup.size
            )));
        }
        let sha = (0..backup.sha256.len() / 2)
            .map(|i| u8::from_str_radix(backup.sha256.get(2 * i..2 * i + 2).unwrap_or("zz"), 16))
            .collect::<Result<Vec<u8>, _>>()
            .ok()
            .filter(|d| d.len() == 32)
            .ok_or_else(|| DbError::Corrupt(format!("backup {id} has a malformed sha256")))?;
        let router = super::routers::load(&mut tx, &staff.scope, backup.router_id).await?;
        let job_key = format!("restore:{id}:{}", Uuid::now_v7());
        let op = JobOp::Restore {
            name: format!("tikfleet-restore-{}", Uuid::now_v7().simple()),
            backup_id: Some(id.to_string()),
            data: Vec::new(),
            sha256: sha,
            size: Some(backup.size),
        };
        let mut params = AuditParams::new();
        params.insert("backup_id", id.to_string());
        let job = queue_audited(
            &mut tx,
            self.key(),
            NewJob {
                tenant: router.tenant_id,
                router: router.id,
                idempotency_key: job_key,
                priority: Priority::Critical,
                op: &op,
                now,
                generation: None,
            },
            &staff.actor,
            "backup.restore",
            params,
        )
        .await?;
        self.commit_queued(tx, job, router.agent_id).await
    }

    /// Applies each tenant's retention (the newest backup of each of its last `keep_daily`
    /// days and `keep_monthly` months per router and kind, and always the newest) at the
    /// database's moment, deleting other backups and the blobs nothing uses any more. A tenant
    /// whose stored settings do not decode keeps everything (logged). Returns how many
    /// backups were deleted.
    ///
    /// # Errors
    /// The database failed.
    pub async fn apply_backup_retention(&self) -> Result<u64, DbError> {
        let mut tx = self.begin().await?;
        let mut limits: HashMap<String, Option<(u32, u32)>> = HashMap::new();
        for row in Sql::new("SELECT id, backup_settings FROM tenants")
            .fetch_all(&mut *tx)
            .await?
        {
            let tenant = row.text("id")?;
            let limit = match parse_settings(row.opt_text("backup_settings")?.as_deref()) {
                Ok(s) => Some((s.keep_daily.max(1), s.keep_monthly)),
                Err(e) => {
                    tracing::warn!(%tenant, error = %e, "backup retention skips a tenant");
                    None
                }
            };
            limits.insert(tenant, limit);
        }
        let rows = Sql::new(
            "SELECT id, tenant_id, router_id, kind, taken_at FROM backups \
             ORDER BY router_id, kind, taken_at DESC, id DESC",
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut groups: Vec<Group> = Vec::new();
        for row in &rows {
            let Some(Some((daily, monthly))) = limits.get(&row.text("tenant_id")?).copied() else {
                continue;
            };
            let key = format!("{}/{}", row.text("router_id")?, row.text("kind")?);
            let item = (row.text("id")?, UnixMillis::new(row.int("taken_at")?));
            match groups.last_mut() {
                Some(g) if g.0 == key => g.3.push(item),
                _ => groups.push((key, daily, monthly, vec![item])),
            }
        }
        let mut deleted = 0u64;
        for (_, daily, monthly, items) in &groups {
            let taken: Vec<UnixMillis> = items.iter().map(|(_, t)| *t).collect();
            for i in retention_victims(&taken, *daily, *monthly) {
                let mut q = Sql::new("DELETE FROM backups WHERE id = ");
                q.bind(items[i].0.clone());
                q.execute(&mut *tx).await?;
                deleted += 1;
            }
        }
        if deleted > 0 {
            Sql::new(
                "DELETE FROM backup_blobs WHERE NOT EXISTS (SELECT 1 FROM backups b WHERE \
                 b.router_id = backup_blobs.router_id AND b.blob_sha256 = backup_blobs.sha256)",
            )
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }

    /// A tenant's backup settings (the defaults until staff set them).
    ///
    /// # Errors
    /// Not found (or not visible), the stored settings do not decode, or the database
    /// failed.
    pub async fn backup_settings(
        &self,
        scope: &Scope,
        tenant: TenantId,
    ) -> Result<BackupSettings, DbError> {
        let mut tx = self.begin().await?;
        self.tenant_visible(&mut tx, scope, tenant).await?;
        let mut q = Sql::new("SELECT backup_settings FROM tenants WHERE id = ");
        q.bind(tenant.to_string());
        let row = q
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(DbError::NotFound("tenant"))?;
        tx.commit().await?;
        parse_settings(row.opt_text("backup_settings")?.as_deref())
    }

    /// Replaces a tenant's backup settings (audited); the next schedule and retention runs
    /// apply them.
    ///
    /// # Errors
    /// Not found (or not visible), a value out of range (`Invalid`, naming the field), or
    /// the database failed.
    pub async fn set_backup_settings(
        &self,
        staff: &Staff,
        tenant: TenantId,
        settings: &BackupSettings,
    ) -> Result<BackupSettings, DbError> {
        settings.validate().map_err(DbError::Invalid)?;
        self.set_tenant_json(
            staff,
            tenant,
            "backup_settings",
            "tenant.backup_settings",
            "settings",
            settings,
        )
        .await?;
        Ok(settings.clone())
    }

    /// The schedule: queues a `backup_now` job (bulk priority, audited as the `scheduler`)
    /// for every live router of a live agent whose tenant's schedule says it is due
    /// ([`schedule_due`], from its last backup job, scheduled or by hand, finished or not;
    /// at once if it never had one) and that has no backup job queued or running. The idempotency key names the router
    /// and the moment its period started, so a repeat, a restart or a second controller over
    /// the same database queues nothing twice. Returns how many were queued.
    ///
    /// # Errors
    /// The database failed.
    pub async fn queue_due_backups(&self) -> Result<usize, DbError> {
        let now = self.now();
        let rows = Sql::new(
            "SELECT r.id, r.tenant_id, r.agent_id, r.created_at, t.backup_settings, \
             (SELECT MAX(COALESCE(j.delivered_at, j.created_at)) FROM jobs j \
              WHERE j.router_id = r.id AND j.kind = 'backup_now') AS last_backup, \
             (SELECT COUNT(*) FROM jobs j WHERE j.router_id = r.id AND j.kind = 'backup_now' \
              AND j.status IN ('queued', 'running', 'retrying')) AS unfinished \
             FROM routers r JOIN tenants t ON t.id = r.tenant_id \
             JOIN agents a ON a.id = r.agent_id \
             WHERE r.deleted_at IS NULL AND a.revoked_at IS NULL",
        )
        .fetch_all(self.pool())
        .await?;
        let mut schedules: HashMap<String, Option<BackupSchedule>> = HashMap::new();
        let mut due = Vec::new();
        for row in rows {
            let tenant = row.text("tenant_id")?;
            let schedule = match schedules.get(&tenant) {
                Some(s) => s.clone(),
                None => {
                    let s = match parse_settings(row.opt_text("backup_settings")?.as_deref()) {
                        Ok(s) => Some(s.schedule),
                        Err(e) => {
                            tracing::warn!(%tenant, error = %e, "backup schedule skips a tenant");
                            None
                        }
                    };
                    schedules.insert(tenant, s.clone());
                    s
                }
            };
            let Some(schedule) = schedule else { continue };
            if row.int("unfinished")? > 0 {
                continue;
            }
            // A router never backed up is due at once, whatever the schedule: the changes
            // tikfleet makes right after a router is added should have a backup before them.
            let (since, first) = match row.opt_int("last_backup")? {
                Some(t) => (UnixMillis::new(t), false),
                None => (UnixMillis::new(row.int("created_at")?), true),
            };
            if first && schedule.enabled {
                // Its period is "never backed up": key `…:0`.
                due.push(Due::of(&row, 0)?);
            } else if schedule_due(&schedule, since, now) {
                due.push(Due::of(&row, since.as_millis())?);
            }
        }
        let mut queued = 0;
        let op = JobOp::BackupNow { name: None };
        for due in &due {
            if self
                .queue_scheduled(due, &op, "router.backup", true)
                .await?
            {
                queued += 1;
            }
        }
        Ok(queued)
    }
}

/// How often the schedule is evaluated.
pub const SCHEDULE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// The backup schedule: [`Db::queue_due_backups`] at once and then every `interval` (see
/// [`SCHEDULE_INTERVAL`]) on the controller's clock, until shut down.
#[derive(Debug)]
pub struct ScheduleTask(crate::periodic::Periodic);

impl ScheduleTask {
    /// Starts the task.
    #[must_use]
    pub fn start(db: Db, clock: crate::clock::SharedClock, interval: std::time::Duration) -> Self {
        Self(crate::periodic::Periodic::start(
            clock,
            interval,
            move || {
                let db = db.clone();
                async move {
                    match db.queue_due_backups().await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(queued = n, "scheduled backups queued"),
                        Err(e) => {
                            tracing::warn!(error = %e, "scheduling backups failed; retrying at the next interval")
                        }
                    }
                }
            },
        ))
    }

    /// Stops the task and waits for it.
    pub async fn shutdown(self) {
        self.0.shutdown().await;
    }
}

/// How often the retention task runs.
pub const RETENTION_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);

/// The task that applies backup retention on the controller's clock: a run at once, then
/// one per [`RETENTION_INTERVAL`].
#[derive(Debug)]
pub struct RetentionTask(crate::periodic::Periodic);

impl RetentionTask {
    /// Starts the task.
    #[must_use]
    pub fn start(db: Db, clock: crate::clock::SharedClock) -> Self {
        Self(crate::periodic::Periodic::start(
            clock,
            RETENTION_INTERVAL,
            move || {
                let db = db.clone();
                async move {
                    match db.apply_backup_retention().await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(deleted = n, "backup retention ran"),
                        Err(e) => {
                            tracing::warn!(error = %e, "backup retention failed; retrying at the next interval")
                        }
                    }
                }
            },
        ))
    }

    /// Stops the task and waits for it.
    pub async fn shutdown(self) {
        self.0.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: &str) {
        assert_eq!(redact_export(input), expected, "input: {input}");
    }

    #[test]
    fn redaction() {
        check(
            "add name=alice password=s3cret profile=p",
            "add name=alice password=<redacted> profile=p",
        );
        check(
            "add name=bob password=\"a b\\\" c\" service=pppoe",
            "add name=bob password=<redacted> service=pppoe",
        );
        check(
            "set wpa2-pre-shared-key=abc secret=x authentication-types=wpa2-psk",
            "set wpa2-pre-shared-key=<redacted> secret=<redacted> authentication-types=wpa2-psk",
        );
        check("add name=x password=\"\"", "add name=x password=\"\"");
        check("# password=kept comment", "# password=kept comment");
        check(
            "/ip address add address=10.0.0.1/24",
            "/ip address add address=10.0.0.1/24",
        );
        check(
            "add comment=\"key=val in quotes\" name=a",
            "add comment=\"key=val in quotes\" name=a",
        );
    }

    #[test]
    fn wrapped_lines_are_joined_so_a_split_value_is_hidden_whole() {
        // Wrapped between tokens, as /export does at ~79 columns.
        check(
            "/ppp secret\nadd local-address=10.0.0.1 name=alice \\\n    password=s3cret profile=p\nadd name=b",
            "/ppp secret\nadd local-address=10.0.0.1 name=alice password=<redacted> profile=p\nadd name=b",
        );
        // Wrapped inside a quoted value: no part of it survives.
        let out = redact_export(
            "/interface wireguard\nadd name=wg0 private-key=\"aGVsbG8gd29ybGQgdGhp\\\n    c2lzYXNlY3JldA=\" listen-port=13231\n",
        );
        assert_eq!(
            out,
            "/interface wireguard\nadd name=wg0 private-key=<redacted> listen-port=13231\n"
        );
        assert!(!out.contains("c2lz"), "{out}");
        // A comment ending in a backslash joins nothing.
        check("# a \\\nset x=1", "# a \\\nset x=1");
    }

    #[test]
    fn config_hash_ignores_the_dated_line() {
        let a = b"# 2024-01-01 10:00:00 by RouterOS 7.15\n/system identity\nset name=r1\n";
        let b = b"# 2024-01-02 11:00:00 by RouterOS 7.15\n/system identity\nset name=r1\n";
        let c = b"# 2024-01-02 11:00:00 by RouterOS 7.15\n/system identity\nset name=r2\n";
        assert_eq!(config_sha256(a), config_sha256(b));
        assert_ne!(config_sha256(a), config_sha256(c));
    }

    #[test]
    fn diff_is_redacted() {
        let d = export_diff(
            "add name=a password=one\n",
            "add name=a password=two\nadd name=b\n",
            "old",
            "new",
        );
        assert!(d.contains("+add name=b"), "{d}");
        assert!(!d.contains("one") && !d.contains("two"), "{d}");
    }

    #[test]
    fn schedule_due_by_interval_and_time_of_day() {
        const H: i64 = 3_600_000;
        // 2026-01-01T00:00:00Z.
        let t = |ms: i64| UnixMillis::new(1_767_225_600_000 + ms);
        let mut s = BackupSchedule::default();
        assert!(!schedule_due(&s, t(0), t(24 * H - 1)));
        assert!(schedule_due(&s, t(0), t(24 * H)));
        s.interval_secs = 3600;
        assert!(schedule_due(&s, t(0), t(H)));
        s.enabled = false;
        assert!(!schedule_due(&s, t(0), t(100 * H)));

        // Every second day at 03:00, started within 30 minutes.
        let s = BackupSchedule {
            enabled: true,
            interval_secs: 2 * 86_400,
            at: Some("03:00".into()),
            window_secs: Some(1800),
        };
        // Last at 03:05 on day 0 (schedule day 0): due from 03:00 on day 2.
        let last = t(3 * H + 5 * 60_000);
        assert!(!schedule_due(&s, last, t(24 * H + 3 * H)));
        assert!(!schedule_due(&s, last, t(48 * H + 3 * H - 1)));
        assert!(schedule_due(&s, last, t(48 * H + 3 * H)));
        assert!(schedule_due(&s, last, t(48 * H + 3 * H + 1_799_999)));
        assert!(!schedule_due(&s, last, t(48 * H + 3 * H + 1_800_000)));
        assert!(schedule_due(&s, last, t(72 * H + 3 * H)));
        // Last at 02:59 on day 0 belongs to the day before: day 1's 03:00 is due.
        assert!(schedule_due(&s, t(3 * H - 60_000), t(24 * H + 3 * H)));
        // Without a window: any time until the next day's 03:00.
        let s = BackupSchedule {
            window_secs: None,
            ..s
        };
        assert!(schedule_due(&s, last, t(72 * H + 2 * H)));
    }

    #[test]
    fn settings_validation_names_the_field() {
        let ok = BackupSettings::default();
        assert_eq!(ok.validate(), Ok(()));
        let with = |f: &dyn Fn(&mut BackupSettings)| {
            let mut s = BackupSettings::default();
            f(&mut s);
            s.validate().unwrap_err()
        };
        assert!(with(&|s| s.keep_daily = 0).starts_with("keep_daily"));
        assert!(with(&|s| s.keep_monthly = 1201).starts_with("keep_monthly"));
        assert!(
            with(&|s| s.schedule.interval_secs = 59 * 60).starts_with("schedule.interval_secs")
        );
        for at in ["3:00", "03:60", "24:00", "03-00", "03:00:00", "+3:00", ""] {
            assert!(
                with(&|s| s.schedule.at = Some(at.into())).starts_with("schedule.at"),
                "{at}"
            );
        }
        assert!(
            with(&|s| {
                s.schedule.at = Some("23:59".into());
                s.schedule.interval_secs = 36 * 3600;
            })
            .starts_with("schedule.interval_secs")
        );
        assert!(with(&|s| s.schedule.window_secs = Some(600)).contains("needs schedule.at"));
        let mut s = BackupSettings::default();
        s.schedule.at = Some("00:00".into());
        s.schedule.window_secs = Some(86_400);
        s.keep_monthly = 0;
        assert_eq!(s.validate(), Ok(()));
        // A stored object with fields left out reads with their defaults.
        assert_eq!(
            parse_settings(Some(r#"{"keep_daily":7}"#)).unwrap(),
            BackupSettings {
                keep_daily: 7,
                ..BackupSettings::default()
            }
        );
        assert!(parse_settings(Some(r#"{"keep_daily":0}"#)).is_err());
    }

    #[test]
    fn retention_keeps_days_and_months() {
        const DAY: i64 = 86_400_000;
        // Newest first: two backups a day for 40 days, 2023-11-14 to 2023-12-23.
        let base = 1_700_000_000_000 - 1_700_000_000_000 % DAY;
        let taken: Vec<UnixMillis> = (0..80)
            .map(|i| UnixMillis::new(base + 40 * DAY - 1 - i * DAY / 2))
            .collect();
        let victims = retention_victims(&taken, 3, 2);
        let kept: Vec<usize> = (0..80).filter(|i| !victims.contains(i)).collect();
        // The newest of the 3 newest days, and of November (the 30th); December's newest
        // is the newest day's.
        assert_eq!(kept, [0, 2, 4, 46]);
        assert_eq!(retention_victims(&taken, 100, 100).len(), 40);
        assert!(retention_victims(&taken[..1], 0, 0).is_empty());
    }
}
