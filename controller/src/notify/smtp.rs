//! Email through a tenant's SMTP server (lettre, async on tokio, rustls with the system's CA
//! certificates). One connection per message: notices are few, and a tenant's settings may
//! change between two of them.
//!
//! The Message-ID is derived from the notification's id, so a message that is sent again
//! after a lost answer (the server accepted it, the sender crashed before recording it) can
//! be recognised as the same by the receiving side.

use std::time::{Duration, SystemTime};

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};
use tikfleet_shared::UnixMillis;
use zeroize::Zeroizing;

use super::SendError;
use super::settings::{SmtpSettings, SmtpTls};

/// How long one SMTP command (connect, greeting, each reply) may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a whole delivery may take.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(90);

/// One email.
pub(crate) struct Email<'a> {
    /// The notification's id (the Message-ID's left part).
    pub id: &'a str,
    /// The recipient's address.
    pub to: &'a str,
    /// Subject.
    pub subject: &'a str,
    /// Plain-text body.
    pub body: &'a str,
    /// The Date header (the controller's clock).
    pub date: UnixMillis,
}

/// Sends `email` through `smtp`, logging in with `password` when the settings name a user.
///
/// # Errors
/// The message cannot be built (bad addresses: permanent), the server refused it (a 5xx
/// reply: permanent), or anything else (connection, TLS, a 4xx reply, a timeout: transient).
pub(crate) async fn send(
    smtp: &SmtpSettings,
    password: Option<Zeroizing<String>>,
    email: &Email<'_>,
) -> Result<(), SendError> {
    let from: Mailbox = smtp
        .from
        .parse()
        .map_err(|e| SendError::permanent(format!("the sender address is invalid: {e}")))?;
    let to: Mailbox = email
        .to
        .parse()
        .map_err(|e| SendError::permanent(format!("the recipient address is invalid: {e}")))?;
    let domain = from.email.domain().to_owned();
    let date = SystemTime::UNIX_EPOCH
        + Duration::from_millis(u64::try_from(email.date.as_millis()).unwrap_or(0));
    let message = Message::builder()
        .from(from)
        .to(to)
        .subject(email.subject)
        .date(date)
        .message_id(Some(format!("<{}@{domain}>", email.id)))
        .header(ContentType::TEXT_PLAIN)
        .body(email.body.to_owned())
        .map_err(|e| SendError::permanent(format!("the message cannot be built: {e}")))?;

    let tls = |host: &str| {
        TlsParameters::new(host.to_owned())
            .map_err(|e| SendError::transient(format!("TLS set-up failed: {e}")))
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host.clone())
        .port(smtp.port)
        .timeout(Some(COMMAND_TIMEOUT))
        .hello_name(ClientId::Domain(domain));
    builder = match smtp.tls {
        SmtpTls::None => builder.tls(Tls::None),
        SmtpTls::Starttls => builder.tls(Tls::Required(tls(&smtp.host)?)),
        SmtpTls::Tls => builder.tls(Tls::Wrapper(tls(&smtp.host)?)),
    };
    if let Some(user) = &smtp.username {
        let password = password.map(|p| p.to_string()).unwrap_or_default();
        builder = builder.credentials(Credentials::new(user.clone(), password));
    }
    let transport: AsyncSmtpTransport<Tokio1Executor> = builder.build();
    match tokio::time::timeout(DELIVERY_TIMEOUT, transport.send(message)).await {
        Err(_) => Err(SendError::transient(format!(
            "the SMTP server {}:{} did not finish within {} s",
            smtp.host,
            smtp.port,
            DELIVERY_TIMEOUT.as_secs()
        ))),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => {
            let text = format!("SMTP {}:{}: {}", smtp.host, smtp.port, super::chain(&e));
            if e.is_permanent() {
                Err(SendError::permanent(text))
            } else {
                Err(SendError::transient(text))
            }
        }
    }
}
