//! A tenant's notification settings: its SMTP server, its SMS gateway, its message templates
//! and where its admin alerts go. Stored as JSON in `tenants.notifications` (`NULL`: nothing
//! configured, the built-in templates); storage is in [`crate::db::notify`], the API's view
//! and validation in `api/notifications.rs`.
//!
//! Secrets (the SMTP password, the gateway's header values, the alert webhook's signing
//! secret) are sealed with the at-rest key the moment they arrive, each bound to its tenant
//! and place ([`password_context`], [`header_context`], [`webhook_secret_context`]), and
//! opened only by the sender just before it connects. What is stored is the persisted form
//! of these types, so they derive serde; the API has its own DTOs, which never carry a
//! sealed or opened secret out.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tikfleet_shared::{Secret, TenantId};

use super::template::{self, MessageTemplate};

/// How the SMTP connection is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain text (a relay on the same host or network only).
    None,
    /// Plain connection upgraded with STARTTLS, which is required (port 587).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
}

impl SmtpTls {
    /// `none`, `starttls` or `tls`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Starttls => "starttls",
            Self::Tls => "tls",
        }
    }

    /// Parses `none`, `starttls` or `tls`.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "none" => Some(Self::None),
            "starttls" => Some(Self::Starttls),
            "tls" => Some(Self::Tls),
            _ => None,
        }
    }
}

/// A tenant's SMTP server, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSettings {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Connection security.
    pub tls: SmtpTls,
    /// User name for AUTH, if the server wants one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The password, sealed under the at-rest key ([`password_context`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_sealed: Option<String>,
    /// The sender, `address` or `Display Name <address>`.
    pub from: String,
}

/// An HTTP method the SMS gateway takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HttpMethod {
    /// `POST`: the rendered body is the request body.
    #[serde(rename = "POST")]
    Post,
    /// `PUT`: the rendered body is the request body.
    #[serde(rename = "PUT")]
    Put,
    /// `GET`: the rendered body is the query string.
    #[serde(rename = "GET")]
    Get,
}

impl HttpMethod {
    /// `POST`, `PUT` or `GET`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Get => "GET",
        }
    }

    /// Parses `POST`, `PUT` or `GET` (any case).
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_uppercase().as_str() {
            "POST" => Some(Self::Post),
            "PUT" => Some(Self::Put),
            "GET" => Some(Self::Get),
            _ => None,
        }
    }
}

/// A tenant's SMS gateway (any HTTP API that sends a text message), as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsGateway {
    /// The gateway's URL (`http` or `https`).
    pub url: String,
    /// The method.
    pub method: HttpMethod,
    /// Request headers (an API key, usually): name → value sealed under the at-rest key
    /// ([`header_context`]).
    #[serde(default)]
    pub headers_sealed: BTreeMap<String, String>,
    /// The request body (query string for `GET`), a template over `phone`, `message`,
    /// `tenant`, `username` and `kind`.
    pub body_template: String,
    /// The body's content type.
    pub content_type: String,
}

/// The default gateway body: JSON with the number and the text.
pub const DEFAULT_SMS_BODY: &str = r#"{"to": {{ phone|tojson }}, "text": {{ message|tojson }}}"#;
/// The default content type of the gateway body.
pub const DEFAULT_CONTENT_TYPE: &str = "application/json";

/// Where a tenant's admin alerts go.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertSettings {
    /// Addresses that get each alert by email (through the tenant's SMTP server).
    #[serde(default)]
    pub emails: Vec<String>,
    /// A URL that gets each alert as a JSON `POST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// The secret that signs each webhook request ([`super::sign`]), sealed under the
    /// at-rest key ([`webhook_secret_context`]); only with a `webhook_url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret_sealed: Option<String>,
}

/// A tenant's own templates; a kind left `None` uses the built-in one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Templates {
    /// Before expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_notice: Option<MessageTemplate>,
    /// At expiry, when grace begins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace: Option<MessageTemplate>,
    /// At suspension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended: Option<MessageTemplate>,
    /// After a renewal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewed: Option<MessageTemplate>,
}

/// The kinds of notice that have templates, with their API names.
pub const TEMPLATE_KINDS: [&str; 4] = ["expiry_notice", "grace", "suspended", "renewed"];

impl Templates {
    /// The tenant's template for `kind` (one of [`TEMPLATE_KINDS`]), or the built-in one.
    #[must_use]
    pub fn effective(&self, kind: &str) -> MessageTemplate {
        self.custom(kind)
            .cloned()
            .unwrap_or_else(|| template::default_template(kind))
    }

    /// The tenant's own template for `kind`, if it set one.
    #[must_use]
    pub fn custom(&self, kind: &str) -> Option<&MessageTemplate> {
        match kind {
            "expiry_notice" => self.expiry_notice.as_ref(),
            "grace" => self.grace.as_ref(),
            "suspended" => self.suspended.as_ref(),
            "renewed" => self.renewed.as_ref(),
            _ => None,
        }
    }

    /// Sets `kind`'s template; one equal to the built-in is stored as "the built-in", so it
    /// follows improvements to the defaults.
    pub fn set(&mut self, kind: &str, t: MessageTemplate) {
        let t = (t != template::default_template(kind)).then_some(t);
        match kind {
            "expiry_notice" => self.expiry_notice = t,
            "grace" => self.grace = t,
            "suspended" => self.suspended = t,
            "renewed" => self.renewed = t,
            _ => {}
        }
    }
}

/// A tenant's notification settings, as stored (secrets sealed).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationSettings {
    /// The SMTP server for email; `None`: no email.
    #[serde(default)]
    pub smtp: Option<SmtpSettings>,
    /// The SMS gateway; `None`: no SMS.
    #[serde(default)]
    pub sms: Option<SmsGateway>,
    /// Templates.
    #[serde(default)]
    pub templates: Templates,
    /// Admin alerts.
    #[serde(default)]
    pub alerts: AlertSettings,
}

impl NotificationSettings {
    /// Settings from the stored JSON (`None`: the defaults).
    ///
    /// # Errors
    /// The JSON does not decode (the message names no secret).
    pub fn from_stored(json: Option<&str>) -> Result<Self, String> {
        match json {
            None => Ok(Self::default()),
            Some(j) => serde_json::from_str(j).map_err(|e| format!("notification settings: {e}")),
        }
    }

    /// The JSON to store.
    #[must_use]
    pub fn to_stored(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }
}

/// What the at-rest key binds the SMTP password of `tenant` to.
#[must_use]
pub fn password_context(tenant: TenantId) -> String {
    format!("tenant.notifications.smtp_password:{tenant}")
}

/// What the at-rest key binds gateway header `name` of `tenant` to.
#[must_use]
pub fn header_context(tenant: TenantId, name: &str) -> String {
    format!(
        "tenant.notifications.sms_header:{tenant}:{}",
        name.to_ascii_lowercase()
    )
}

/// What the at-rest key binds the alert webhook's signing secret of `tenant` to.
#[must_use]
pub fn webhook_secret_context(tenant: TenantId) -> String {
    format!("tenant.notifications.webhook_secret:{tenant}")
}

/// A secret in a settings change.
#[derive(Clone, Debug)]
pub enum SecretChange {
    /// Keep what is stored (the API's "left out", or `null` for a header).
    Keep,
    /// Remove it.
    Remove,
    /// Store this value.
    Set(Secret),
}

/// New SMTP settings; the password may be kept from the stored settings.
#[derive(Clone, Debug)]
pub struct SmtpUpdate {
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Security.
    pub tls: SmtpTls,
    /// AUTH user name.
    pub username: Option<String>,
    /// The password.
    pub password: SecretChange,
    /// The sender.
    pub from: String,
}

/// A new SMS gateway; header values may be kept from the stored settings.
#[derive(Clone, Debug)]
pub struct SmsUpdate {
    /// URL.
    pub url: String,
    /// Method.
    pub method: HttpMethod,
    /// Headers: a `Keep` value keeps the stored value of that header (it must exist); a
    /// stored header not named here is removed. (`Remove` is not used.)
    pub headers: BTreeMap<String, SecretChange>,
    /// Body template.
    pub body_template: String,
    /// Content type.
    pub content_type: String,
}

/// New alert destinations; the webhook's signing secret may be kept from the stored
/// settings.
#[derive(Clone, Debug)]
pub struct AlertsUpdate {
    /// Addresses.
    pub emails: Vec<String>,
    /// The webhook, or none.
    pub webhook_url: Option<String>,
    /// The webhook's signing secret. Without a `webhook_url` none is stored, whatever this
    /// says (the API refuses `Set` without one).
    pub webhook_secret: SecretChange,
}

impl Default for AlertsUpdate {
    fn default() -> Self {
        Self {
            emails: Vec::new(),
            webhook_url: None,
            webhook_secret: SecretChange::Remove,
        }
    }
}

/// A whole settings change (PUT semantics), validated at the edge.
#[derive(Clone, Debug, Default)]
pub struct SettingsUpdate {
    /// SMTP, or none.
    pub smtp: Option<SmtpUpdate>,
    /// SMS gateway, or none.
    pub sms: Option<SmsUpdate>,
    /// Templates.
    pub templates: Templates,
    /// Alerts.
    pub alerts: AlertsUpdate,
}
