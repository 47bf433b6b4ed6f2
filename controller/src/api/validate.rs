//! Values checked once at the edge, before storage sees them: names, RouterOS user names and
//! rate limits, addresses, passwords and RFC 3339 times.

use tikfleet_shared::UnixMillis;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::error::ApiError;

/// A display name: 1 to `max` characters, no control characters, trimmed.
pub fn name(field: &str, value: &str, max: usize) -> Result<String, ApiError> {
    let v = value.trim();
    if v.is_empty() || v.chars().count() > max || v.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "{field} must be 1 to {max} characters without control characters"
        )));
    }
    Ok(v.to_owned())
}

/// An email address: `local@domain` with a dot in the domain, up to 254 characters, no
/// spaces or control characters (full RFC 5322 syntax is the mail server's business).
pub fn email(field: &str, value: &str) -> Result<String, ApiError> {
    let v = value.trim();
    let ok = v.len() <= 254
        && !v.chars().any(|c| c.is_whitespace() || c.is_control())
        && v.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        });
    if ok {
        Ok(v.to_owned())
    } else {
        Err(ApiError::invalid(format!(
            "{field} must be an email address like name@example.com"
        )))
    }
}

/// A phone number in E.164 form: `+` and 7 to 15 digits (spaces and dashes are dropped).
pub fn phone(field: &str, value: &str) -> Result<String, ApiError> {
    let v: String = value.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    let digits = v.strip_prefix('+').unwrap_or("");
    if (7..=15).contains(&digits.len()) && digits.chars().all(|c| c.is_ascii_digit()) {
        Ok(v)
    } else {
        Err(ApiError::invalid(format!(
            "{field} must be an E.164 phone number like +254700000001"
        )))
    }
}

/// A name RouterOS takes as a user or profile name and that survives its API and console:
/// 1 to 64 of letters, digits and `. _ - @ +`.
pub fn routeros_name(field: &str, value: &str) -> Result<String, ApiError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | '+'));
    if ok {
        Ok(value.to_owned())
    } else {
        Err(ApiError::invalid(format!(
            "{field} must be 1 to 64 characters of letters, digits and . _ - @ +"
        )))
    }
}

/// A password: 1 to 128 printable characters. The message never repeats the value.
pub fn password(field: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() || value.chars().count() > 128 || value.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "{field} must be 1 to 128 characters without control characters"
        )));
    }
    Ok(())
}

/// A host name or an IPv4 / IPv6 address.
pub fn address(value: &str) -> Result<String, ApiError> {
    let ok = !value.is_empty()
        && value.len() <= 253
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'));
    if ok {
        Ok(value.to_owned())
    } else {
        Err(ApiError::invalid(
            "address must be a host name or an IP address",
        ))
    }
}

/// A port: 1 to 65535.
pub fn port(field: &str, value: u16) -> Result<u16, ApiError> {
    if value == 0 {
        Err(ApiError::invalid(format!("{field} must be 1 to 65535")))
    } else {
        Ok(value)
    }
}

/// A RouterOS rate limit: `rx[/tx] [burst-rx[/tx] [threshold-rx[/tx] [burst-time-rx[/tx]
/// [priority [min-rx[/tx]]]]]]`, rates as a number with an optional `k`, `M` or `G`, burst
/// times in seconds (optionally with `s`), priority 1 to 8.
pub fn rate_limit(value: &str) -> Result<String, ApiError> {
    let bad = || {
        ApiError::invalid(
            "rate_limit must be RouterOS syntax like \"10M/10M\" or \"10M/10M 12M/12M 8M/8M 10/10 8 1M/1M\"",
        )
    };
    let groups: Vec<&str> = value.split_whitespace().collect();
    if groups.is_empty() || groups.len() > 6 || value.len() > 128 {
        return Err(bad());
    }
    for (i, g) in groups.iter().enumerate() {
        let ok = match i {
            3 => pair(g, is_seconds),
            4 => g.parse::<u8>().is_ok_and(|p| (1..=8).contains(&p)),
            _ => pair(g, is_rate),
        };
        if !ok {
            return Err(bad());
        }
    }
    Ok(groups.join(" "))
}

fn pair(group: &str, part: fn(&str) -> bool) -> bool {
    let mut it = group.split('/');
    let (Some(a), b, None) = (it.next(), it.next(), it.next()) else {
        return false;
    };
    part(a) && b.is_none_or(part)
}

fn is_rate(s: &str) -> bool {
    let digits = s.strip_suffix(['k', 'K', 'M', 'G']).unwrap_or(s);
    is_number(digits)
}

fn is_seconds(s: &str) -> bool {
    is_number(s.strip_suffix('s').unwrap_or(s))
}

fn is_number(s: &str) -> bool {
    let (int, frac) = s.split_once('.').map_or((s, None), |(a, b)| (a, Some(b)));
    !int.is_empty()
        && int.len() <= 12
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac
            .is_none_or(|f| !f.is_empty() && f.len() <= 6 && f.bytes().all(|b| b.is_ascii_digit()))
}

/// Parses an RFC 3339 time (`2026-05-01T00:00:00Z`, any offset).
pub fn parse_time(field: &str, value: &str) -> Result<UnixMillis, ApiError> {
    let t = OffsetDateTime::parse(value, &Rfc3339).map_err(|_| {
        ApiError::invalid(format!(
            "{field} must be an RFC 3339 time like 2026-05-01T00:00:00Z"
        ))
    })?;
    let ms = t.unix_timestamp_nanos() / 1_000_000;
    Ok(UnixMillis(i64::try_from(ms).map_err(|_| {
        ApiError::invalid(format!("{field} is out of range"))
    })?))
}

/// Formats a time as RFC 3339 in UTC with milliseconds.
#[must_use]
pub fn format_time(t: UnixMillis) -> String {
    let nanos = i128::from(t.as_millis()) * 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            // Whole milliseconds only: trim the nanosecond digits RFC 3339 formatting adds.
            let t = t
                .replace_nanosecond(t.millisecond() as u32 * 1_000_000)
                .ok()?;
            t.format(&Rfc3339).ok()
        })
        .unwrap_or_else(|| t.as_millis().to_string())
}

/// A SHA-256 certificate fingerprint: 64 hex digits, colons allowed; normalised to
/// lowercase hex.
pub fn sha256_pin(value: &str) -> Result<String, ApiError> {
    let hex: String = value
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hex)
    } else {
        Err(ApiError::invalid(
            "tls.sha256 must be the certificate's SHA-256 as 64 hex digits",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits() {
        for ok in [
            "10M/10M",
            "10M",
            "512k/1M",
            "1.5M/2M",
            "10M/10M 12M/12M 8M/8M 10/10 8 1M/1M",
            "1G/1G 2G/2G 1G/1G 10s/10s",
        ] {
            assert!(rate_limit(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "fast",
            "10X/10M",
            "10M/10M/10M",
            "10M 1M 1M 1/1 9",
            "-1M",
            "10M/",
            "1 2 3 4 5 6 7",
        ] {
            assert!(rate_limit(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn routeros_names() {
        assert!(routeros_name("username", "alice.b-1@isp").is_ok());
        for bad in ["", "a b", "semi;colon", "quote\"", &"x".repeat(65), "tab\t"] {
            assert!(routeros_name("username", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn times_round_trip() {
        let t = parse_time("t", "2026-05-01T10:20:30.123Z").unwrap();
        assert_eq!(format_time(t), "2026-05-01T10:20:30.123Z");
        assert_eq!(parse_time("t", "2026-05-01T12:20:30.123+02:00").unwrap(), t);
        assert_eq!(format_time(UnixMillis(0)), "1970-01-01T00:00:00Z");
        assert!(parse_time("t", "yesterday").is_err());
        assert!(parse_time("t", "2026-13-01T00:00:00Z").is_err());
    }

    #[test]
    fn pins_and_addresses() {
        assert_eq!(sha256_pin(&"AB".repeat(32)).unwrap(), "ab".repeat(32));
        assert!(sha256_pin("abc").is_err());
        assert!(
            address("192.0.2.1").is_ok()
                && address("fe80::1").is_ok()
                && address("r1.example").is_ok()
        );
        assert!(address("a b").is_err() && address("").is_err());
        assert!(port("api_port", 0).is_err());
    }
}
