//! Version personality: every version-specific behaviour of the simulated RouterOS in one place.
//!
//! The rest of the crate asks the [`Personality`] ("does this version send `!empty`?") instead
//! of comparing version numbers itself. Also holds the wall-clock date formatting, which
//! switched format in 7.10.

use std::time::{SystemTime, UNIX_EPOCH};

/// Why a `--version` value cannot be simulated.
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    /// Not of the form `X.Y` or `X.Y.Z`.
    #[error("version {0:?} is not of the form X.Y.Z")]
    Malformed(String),
    /// Older than 6.43: the simulator speaks only the post-6.43 login.
    #[error("version {0} is older than 6.43; only the post-6.43 login is simulated")]
    TooOld(String),
}

/// A RouterOS version number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    /// Major (6 or 7).
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch (0 when absent).
    pub patch: u32,
}

impl Version {
    /// Parses `7.16.2`, `7.18` or `7.10rc1` (trailing letters ignored).
    pub fn parse(s: &str) -> Result<Self, VersionError> {
        let bad = || VersionError::Malformed(s.to_string());
        let mut parts = s.trim().split('.');
        let num = |p: Option<&str>| -> Option<u32> {
            let p = p?;
            let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        };
        let major = num(parts.next()).ok_or_else(bad)?;
        let minor = num(parts.next()).ok_or_else(bad)?;
        let patch = match parts.next() {
            Some(p) => num(Some(p)).ok_or_else(bad)?,
            None => 0,
        };
        Ok(Self {
            major,
            minor,
            patch,
        })
    }

    fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.patch == 0 {
            write!(f, "{}.{}", self.major, self.minor)
        } else {
            write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
        }
    }
}

/// Everything that differs between the simulated versions.
#[derive(Debug, Clone)]
pub struct Personality {
    /// The version number.
    pub version: Version,
    /// Release channel shown in `version` and `/system/package/update`.
    pub channel: &'static str,
    /// RouterOS 7 or later.
    pub v7: bool,
    /// `!empty` before `!done` for prints without rows (7.18+).
    pub empty_sentence: bool,
    /// Dates as `2023-06-01 12:16:16` (7.10+) instead of `jun/01/2023 12:16:16`.
    pub iso_dates: bool,
    /// `comment=` accepted on `/ppp/secret` and `/ppp/profile` add/set. Ansible gates it at 7.15
    /// (routeros-replies.md §1), but v6-era exports with clear-text passwords (so v6) carry
    /// `/ppp secret add comment=…` lines (public-code hits), so add/set take it on every
    /// version [I]. `/ppp/secret/comment` works too.
    pub ppp_comment_settable: bool,
    /// `ipv6-routes` on `/ppp/secret` (v7 only).
    pub ipv6_routes: bool,
    /// `vrf` on `/ip/service` (v7 only).
    pub service_vrf: bool,
    /// `bucket-size` on `/queue/simple` (v7 only, [I]).
    pub queue_bucket_size: bool,
    /// `/export` shows passwords unless `hide-sensitive` (v6); v7 hides unless `show-sensitive`.
    pub export_sensitive_by_default: bool,
    /// `build-time` of `/system/resource`.
    pub build_time: &'static str,
    /// The simulated hardware: v7 an RB5009 (arm64), v6 a hEX (mmips; the RB5009 needs v7).
    pub board: Board,
}

/// The simulated hardware.
#[derive(Debug, Clone, Copy)]
pub struct Board {
    /// `board-name` / `model`.
    pub model: &'static str,
    /// `architecture-name`.
    pub arch: &'static str,
    /// `cpu`.
    pub cpu: &'static str,
    /// `cpu-count`.
    pub cpu_count: u32,
    /// `cpu-frequency` (MHz).
    pub cpu_mhz: u32,
    /// `total-memory` (bytes).
    pub memory: u64,
    /// `firmware-type`.
    pub firmware_type: &'static str,
}

impl Personality {
    /// The personality of a version, refusing versions older than 6.43.
    pub fn for_version(s: &str) -> Result<Self, VersionError> {
        let version = Version::parse(s)?;
        if !version.at_least(6, 43) {
            return Err(VersionError::TooOld(s.to_string()));
        }
        let v7 = version.major >= 7;
        Ok(Self {
            version,
            // 6.48 and later v6 releases are on the long-term channel [I].
            channel: if !v7 && version.minor >= 48 {
                "long-term"
            } else {
                "stable"
            },
            v7,
            empty_sentence: version.at_least(7, 18),
            iso_dates: version.at_least(7, 10),
            ppp_comment_settable: true,
            ipv6_routes: v7,
            service_vrf: v7,
            queue_bucket_size: v7,
            export_sensitive_by_default: !v7,
            build_time: if version.at_least(7, 10) {
                "2024-11-26 12:09:40"
            } else if v7 {
                "Jul/12/2023 09:45:11"
            } else {
                "Feb/08/2021 12:48:33"
            },
            board: if v7 {
                Board {
                    model: "RB5009UG+S+",
                    arch: "arm64",
                    cpu: "ARM64",
                    cpu_count: 4,
                    cpu_mhz: 1400,
                    memory: 1_073_741_824,
                    firmware_type: "7040",
                }
            } else {
                Board {
                    model: "RB750Gr3",
                    arch: "mmips",
                    cpu: "MIPS 1004Kc V2.15",
                    cpu_count: 4,
                    cpu_mhz: 880,
                    memory: 268_435_456,
                    firmware_type: "mt7621L",
                }
            },
        })
    }

    /// `version` as `/system/resource` prints it: `7.16.2 (stable)`.
    pub fn version_string(&self, installed: &str) -> String {
        format!("{installed} ({})", self.channel)
    }

    /// A wall-clock time in this version's format.
    pub fn date(&self, t: SystemTime) -> String {
        format_date(t, self.iso_dates)
    }

    /// "Never" as a date (`last-logged-out` of a secret that never logged out). For 7.10+ the
    /// value is [U]; `1970-01-01 00:00:00` is the likeliest.
    pub fn never(&self) -> String {
        format_date(UNIX_EPOCH, self.iso_dates)
    }
}

/// Formats a time as RouterOS does: `jan/02/1970 00:04:26` or `1970-01-02 00:04:26` (UTC).
pub fn format_date(t: SystemTime, iso: bool) -> String {
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (rem / 3600, rem % 3600 / 60, rem % 60);
    if iso {
        format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02}")
    } else {
        let mon = MONTHS[(m as usize).saturating_sub(1).min(11)];
        format!("{mon}/{d:02}/{y:04} {hh:02}:{mm:02}:{ss:02}")
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Formats a duration as RouterOS does: `4d15h20m38s`, `41w6d18h4m22s`, `0s`.
pub fn format_duration(secs: u64) -> String {
    if secs == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    let parts = [
        (604_800, 'w'),
        (86_400, 'd'),
        (3600, 'h'),
        (60, 'm'),
        (1, 's'),
    ];
    let mut rest = secs;
    for (unit, c) in parts {
        if rest >= unit {
            out.push_str(&(rest / unit).to_string());
            out.push(c);
            rest %= unit;
        }
    }
    out
}

/// Parses a RouterOS duration: `1d2h3m4s`, `30m`, `1w`, `00:30:00`, `90` (seconds), `none`.
pub fn parse_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if s.contains(':') {
        let mut total = 0u64;
        for p in s.split(':') {
            total = total.checked_mul(60)?.checked_add(p.parse::<u64>().ok()?)?;
        }
        return Some(total);
    }
    let mut total = 0u64;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            'w' => 604_800,
            'd' => 86_400,
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        let n: u64 = num.parse().ok()?;
        total = total.checked_add(n.checked_mul(unit)?)?;
        num.clear();
    }
    if !num.is_empty() {
        total = total.checked_add(num.parse::<u64>().ok()?)?;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates_and_durations() {
        let t = UNIX_EPOCH + Duration::from_secs(1_685_621_776);
        assert_eq!(format_date(t, true), "2023-06-01 12:16:16");
        assert_eq!(format_date(t, false), "jun/01/2023 12:16:16");
        assert_eq!(
            format_duration(4 * 86_400 + 15 * 3600 + 20 * 60 + 38),
            "4d15h20m38s"
        );
        assert_eq!(
            parse_duration("4d15h20m38s"),
            Some(4 * 86_400 + 15 * 3600 + 20 * 60 + 38)
        );
        assert_eq!(parse_duration("00:30:00"), Some(1800));
        assert_eq!(parse_duration("bogus"), None);
    }

    #[test]
    fn versions() {
        assert!(Personality::for_version("6.42.9").is_err());
        let p = Personality::for_version("7.18").unwrap();
        assert!(p.empty_sentence && p.iso_dates);
        let p = Personality::for_version("6.49.10").unwrap();
        assert!(!p.v7 && !p.iso_dates && p.export_sensitive_by_default);
    }
}
