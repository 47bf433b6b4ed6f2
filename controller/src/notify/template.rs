//! Message templates (minijinja): the built-in English texts of each notice kind, the
//! variables a template sees, and rendering with limits.
//!
//! Notices are rendered when they are queued ([`crate::db::notify`]), so what a subscriber
//! receives is fixed at that moment and a retry sends the same text. Templates are plain
//! text (no HTML escaping); a variable that is not set is the empty string, and a name that
//! does not exist is an error, so a misspelt variable is caught when staff save the
//! template, not when a notice goes out.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use minijinja::{Environment, UndefinedBehavior, Value};
use serde::{Deserialize, Serialize};
use tikfleet_shared::UnixMillis;

/// The most a rendered text may hold.
pub const MAX_RENDERED: usize = 64 * 1024;
/// The most a template may hold.
pub const MAX_TEMPLATE: usize = 16 * 1024;

/// What a notice says: the email's subject and body, and the SMS text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageTemplate {
    /// The email's subject.
    pub subject: String,
    /// The email's body (plain text).
    pub email_body: String,
    /// The SMS text.
    pub sms_body: String,
}

/// A template that does not compile or render. The message is minijinja's (kind, line and
/// what went wrong); it never holds a secret, since templates see none.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(pub String);

static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // Bounds a template's loops: staff write templates, the controller runs them.
    env.set_fuel(Some(50_000));
    env.set_recursion_limit(50);
    env
});

/// Renders `source` with `vars`.
///
/// # Errors
/// The template does not compile, uses an unknown variable or filter, runs out of fuel, or
/// renders more than [`MAX_RENDERED`] bytes.
pub fn render(source: &str, vars: &Value) -> Result<String, TemplateError> {
    if source.len() > MAX_TEMPLATE {
        return Err(TemplateError(format!(
            "the template is longer than {MAX_TEMPLATE} bytes"
        )));
    }
    let out = ENV
        .render_str(source, vars.clone())
        .map_err(|e| TemplateError(describe(&e)))?;
    if out.len() > MAX_RENDERED {
        return Err(TemplateError(format!(
            "the rendered text is longer than {MAX_RENDERED} bytes"
        )));
    }
    Ok(out)
}

fn describe(e: &minijinja::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text.chars().take(500).collect()
}

/// The variables of a notice.
#[derive(Clone, Debug, Default)]
pub struct NoticeVars {
    /// `expiry_notice`, `grace`, `suspended`, `renewed` or `test`.
    pub kind: String,
    /// The subscriber's login name.
    pub username: String,
    /// Full name.
    pub name: Option<String>,
    /// Email.
    pub email: Option<String>,
    /// Phone.
    pub phone: Option<String>,
    /// The plan's name.
    pub plan: String,
    /// Expiry.
    pub expires_at: Option<UnixMillis>,
    /// Whole days until expiry, rounded up (0 once expired).
    pub days_left: i64,
    /// For an expiry notice: the notice's day count (the `2` of "2 days before").
    pub days_before: u32,
    /// End of grace.
    pub grace_until: Option<UnixMillis>,
    /// The tenant's (the ISP's) name.
    pub tenant: String,
}

/// One day in milliseconds.
pub const DAY_MS: i64 = 86_400_000;

impl NoticeVars {
    /// Whole days from `now` to `expires_at`, rounded up; 0 when none or past.
    #[must_use]
    pub fn days_until(expires_at: Option<UnixMillis>, now: UnixMillis) -> i64 {
        expires_at.map_or(0, |e| {
            let ms = e.as_millis().saturating_sub(now.as_millis()).max(0);
            ms.saturating_add(DAY_MS - 1) / DAY_MS
        })
    }

    /// A made-up subscriber, to try templates with when staff save them.
    #[must_use]
    pub fn sample(kind: &str, tenant: &str) -> Self {
        let expires = UnixMillis(1_767_225_600_000 + 2 * DAY_MS);
        Self {
            kind: kind.to_owned(),
            username: "alice".into(),
            name: Some("Alice Example".into()),
            email: Some("alice@example.com".into()),
            phone: Some("+254700000001".into()),
            plan: "Home 10M".into(),
            expires_at: Some(expires),
            days_left: 2,
            days_before: 2,
            grace_until: Some(UnixMillis(expires.as_millis() + 3 * DAY_MS)),
            tenant: tenant.to_owned(),
        }
    }

    /// The template variables.
    #[must_use]
    pub fn to_value(&self) -> Value {
        let text = |v: &Option<String>| Value::from(v.clone().unwrap_or_default());
        let mut m: BTreeMap<&str, Value> = BTreeMap::new();
        m.insert("kind", Value::from(self.kind.clone()));
        m.insert("username", Value::from(self.username.clone()));
        m.insert("name", text(&self.name));
        m.insert("email", text(&self.email));
        m.insert("phone", text(&self.phone));
        m.insert("plan", Value::from(self.plan.clone()));
        m.insert(
            "expires_at",
            Value::from(self.expires_at.map(rfc3339).unwrap_or_default()),
        );
        m.insert(
            "expires_date",
            Value::from(self.expires_at.map(date).unwrap_or_default()),
        );
        m.insert("days_left", Value::from(self.days_left));
        m.insert("days_before", Value::from(self.days_before));
        m.insert(
            "grace_until",
            Value::from(self.grace_until.map(rfc3339).unwrap_or_default()),
        );
        m.insert(
            "grace_until_date",
            Value::from(self.grace_until.map(date).unwrap_or_default()),
        );
        m.insert("tenant", Value::from(self.tenant.clone()));
        Value::from(m)
    }
}

/// The variables of the SMS gateway's body template.
#[must_use]
pub fn gateway_vars(phone: &str, message: &str, tenant: &str, username: &str, kind: &str) -> Value {
    let mut m: BTreeMap<&str, Value> = BTreeMap::new();
    m.insert("phone", Value::from(phone));
    m.insert("message", Value::from(message));
    m.insert("tenant", Value::from(tenant));
    m.insert("username", Value::from(username));
    m.insert("kind", Value::from(kind));
    Value::from(m)
}

/// RFC 3339 in UTC, as the API writes times.
#[must_use]
pub fn rfc3339(t: UnixMillis) -> String {
    crate::api::validate::format_time(t)
}

/// `YYYY-MM-DD` (UTC).
#[must_use]
pub fn date(t: UnixMillis) -> String {
    let s = rfc3339(t);
    s.get(..10).unwrap_or(&s).to_owned()
}

/// The built-in template of `kind` (`expiry_notice`, `grace`, `suspended`, `renewed`).
#[must_use]
pub fn default_template(kind: &str) -> MessageTemplate {
    let (subject, email, sms) = match kind {
        "expiry_notice" => (
            "Your {{ plan }} service expires on {{ expires_date }}",
            "Hello {{ name or username }},\n\n\
             your {{ plan }} service (account {{ username }}) expires on {{ expires_date }}, \
             in {{ days_left }} day{{ '' if days_left == 1 else 's' }}. \
             Please renew before then to stay connected.\n\n{{ tenant }}\n",
            "{{ tenant }}: your {{ plan }} service ({{ username }}) expires on \
             {{ expires_date }}. Please renew to stay connected.",
        ),
        "grace" => (
            "Your {{ plan }} service has expired",
            "Hello {{ name or username }},\n\n\
             your {{ plan }} service (account {{ username }}) expired on {{ expires_date }}. \
             {% if grace_until %}You stay connected at a reduced speed until \
             {{ grace_until_date }}; after that the service is suspended. {% endif %}\
             Please renew to restore full service.\n\n{{ tenant }}\n",
            "{{ tenant }}: your {{ plan }} service ({{ username }}) has expired. \
             {% if grace_until %}Reduced speed until {{ grace_until_date }}. {% endif %}\
             Please renew.",
        ),
        "suspended" => (
            "Your {{ plan }} service is suspended",
            "Hello {{ name or username }},\n\n\
             your {{ plan }} service (account {{ username }}) is suspended. \
             Please renew to reconnect.\n\n{{ tenant }}\n",
            "{{ tenant }}: your {{ plan }} service ({{ username }}) is suspended. \
             Please renew to reconnect.",
        ),
        "renewed" => (
            "Your {{ plan }} service is renewed",
            "Hello {{ name or username }},\n\n\
             thank you: your {{ plan }} service (account {{ username }}) is renewed\
             {% if expires_date %} until {{ expires_date }}{% endif %}.\n\n{{ tenant }}\n",
            "{{ tenant }}: your {{ plan }} service ({{ username }}) is renewed\
             {% if expires_date %} until {{ expires_date }}{% endif %}. Thank you.",
        ),
        _ => (
            "Test message from {{ tenant }}",
            "This is a test message from tikfleet for {{ tenant }}.\n",
            "{{ tenant }}: this is a test message from tikfleet.",
        ),
    };
    MessageTemplate {
        subject: subject.to_owned(),
        email_body: email.to_owned(),
        sms_body: sms.to_owned(),
    }
}

/// Renders `t` for `vars`: subject, email body, SMS text.
///
/// # Errors
/// One of the three fails; the error names which (`subject`, `email_body`, `sms_body`).
pub fn render_message(
    t: &MessageTemplate,
    vars: &Value,
) -> Result<(String, String, String), (&'static str, TemplateError)> {
    let subject = render(&t.subject, vars).map_err(|e| ("subject", e))?;
    // A subject is one line.
    let subject = subject.split_whitespace().collect::<Vec<_>>().join(" ");
    let email = render(&t.email_body, vars).map_err(|e| ("email_body", e))?;
    let sms = render(&t.sms_body, vars).map_err(|e| ("sms_body", e))?;
    Ok((subject, email, sms.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_templates_render_the_sample() {
        for kind in ["expiry_notice", "grace", "suspended", "renewed", "test"] {
            let vars = NoticeVars::sample(kind, "Acme ISP").to_value();
            let (subject, email, sms) = render_message(&default_template(kind), &vars).unwrap();
            assert!(!subject.is_empty() && !subject.contains('\n'), "{kind}");
            assert!(email.contains("Acme ISP"), "{kind}: {email}");
            assert!(sms.contains("Acme ISP"), "{kind}: {sms}");
        }
        let vars = NoticeVars::sample("expiry_notice", "Acme").to_value();
        let (subject, email, _) =
            render_message(&default_template("expiry_notice"), &vars).unwrap();
        assert_eq!(subject, "Your Home 10M service expires on 2026-01-03");
        assert!(email.starts_with("Hello Alice Example,"), "{email}");
        assert!(email.contains("in 2 days"), "{email}");
    }

    #[test]
    fn unknown_variables_and_bad_syntax_are_errors() {
        let vars = NoticeVars::sample("grace", "Acme").to_value();
        assert!(render("{{ usernme }}", &vars).is_err());
        assert!(render("{% if %}", &vars).is_err());
        assert!(render("{{ x | nosuchfilter }}", &vars).is_err());
        assert!(render("{% for i in range(100000) %}{{ i }}{% endfor %}", &vars).is_err());
        assert_eq!(render("{{ name }}", &vars).unwrap(), "Alice Example");
    }

    #[test]
    fn absent_values_are_empty_and_json_is_escaped() {
        let vars = NoticeVars {
            username: "bob".into(),
            ..NoticeVars::default()
        }
        .to_value();
        assert_eq!(
            render("[{{ email }}|{{ name or username }}]", &vars).unwrap(),
            "[|bob]"
        );
        let g = gateway_vars("+2547", "a \"quoted\"\nline", "t", "u", "grace");
        let body = render(super::super::settings::DEFAULT_SMS_BODY, &g).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["text"], "a \"quoted\"\nline");
        assert_eq!(parsed["to"], "+2547");
    }

    #[test]
    fn days_until_rounds_up() {
        let now = UnixMillis(0);
        assert_eq!(NoticeVars::days_until(None, now), 0);
        assert_eq!(NoticeVars::days_until(Some(UnixMillis(1)), now), 1);
        assert_eq!(NoticeVars::days_until(Some(UnixMillis(DAY_MS)), now), 1);
        assert_eq!(NoticeVars::days_until(Some(UnixMillis(DAY_MS + 1)), now), 2);
        assert_eq!(NoticeVars::days_until(Some(UnixMillis(-5)), now), 0);
    }
}
