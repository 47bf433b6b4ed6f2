//! Signing the alert webhook's requests, so the receiver can tell they come from tikfleet
//! and are fresh.
//!
//! When the tenant set `alerts.webhook_secret` ([`super::settings::AlertSettings`]), the
//! sender ([`super::Notifier`]) adds two headers to each webhook request ([`super::http`]
//! sends it): [`TIMESTAMP_HEADER`], the Unix seconds of the send on the controller's clock,
//! and [`SIGNATURE_HEADER`], `sha256=` and the lowercase hex HMAC-SHA256 under the secret of
//! `"{timestamp}.{body}"`. Each attempt is signed anew, with its own timestamp.

use std::fmt::Write as _;

use ring::hmac;
use tikfleet_shared::UnixMillis;

/// The header with the Unix seconds of the send.
pub const TIMESTAMP_HEADER: &str = "X-Tikfleet-Timestamp";
/// The header with `sha256=` and the hex HMAC-SHA256 of `"{timestamp}.{body}"`.
pub const SIGNATURE_HEADER: &str = "X-Tikfleet-Signature";

/// The Unix seconds of `now` (rounded down).
#[must_use]
pub const fn unix_seconds(now: UnixMillis) -> i64 {
    now.as_millis().div_euclid(1000)
}

/// `sha256=` and the lowercase hex HMAC-SHA256 under `secret` of `"{timestamp}.{body}"`.
#[must_use]
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let tag = ctx.sign();
    let mut out = String::with_capacity(7 + 2 * tag.as_ref().len());
    out.push_str("sha256=");
    for b in tag.as_ref() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The two headers (name, value) that sign `body` sent at `now` under `secret`.
#[must_use]
pub fn headers(secret: &[u8], now: UnixMillis, body: &[u8]) -> [(&'static str, String); 2] {
    let timestamp = unix_seconds(now);
    [
        (TIMESTAMP_HEADER, timestamp.to_string()),
        (SIGNATURE_HEADER, signature(secret, timestamp, body)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_known_vectors() {
        // python3 -c 'import hmac,hashlib; print(hmac.new(b"whsec-0123456789abcdef",
        //   b"1767225600." + b"{\"subject\":\"disk full\"}", hashlib.sha256).hexdigest())'
        assert_eq!(
            signature(
                b"whsec-0123456789abcdef",
                1_767_225_600,
                br#"{"subject":"disk full"}"#
            ),
            "sha256=a693f7691f9fa2814dcf0b6f515639daa0833476b4d8e8e1e1a7724b170db126"
        );
    }

    #[test]
    fn headers_carry_the_seconds_of_the_send() {
        let [(t_name, t), (s_name, s)] = headers(b"k", UnixMillis(1_767_225_600_999), b"{}");
        assert_eq!((t_name, t.as_str()), ("X-Tikfleet-Timestamp", "1767225600"));
        assert_eq!(s_name, "X-Tikfleet-Signature");
        assert_eq!(s, signature(b"k", 1_767_225_600, b"{}"));
        assert_eq!(unix_seconds(UnixMillis(-1)), -1);
    }
}
