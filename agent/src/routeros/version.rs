//! RouterOS versions: parsing `/system/resource` `version`, the support policy (6.43+), and
//! [`Capabilities`], the one place where v6 and v7 differences are decided.
//!
//! Code that needs to know "does this router do X" asks `client.caps().x` instead of
//! comparing version numbers itself, so a difference found on a real router is fixed here once.

use std::fmt;

use tikfleet_shared::ErrorCode;

use super::DriverError;

/// A RouterOS version as `/system/resource` reports it: `7.16.2 (stable)`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RosVersion {
    /// Major (6 or 7).
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch (0 when absent: `7.18`).
    pub patch: u32,
    /// Release channel in parentheses (`stable`, `long-term`, `testing`), or a pre-release
    /// suffix (`rc1`, `beta2`) when there is no channel; empty when neither.
    pub channel: String,
}

/// The oldest version tikfleet supports.
pub const MIN_SUPPORTED: (u32, u32) = (6, 43);

impl RosVersion {
    /// Parses `7.16.2 (stable)`, `6.49.10 (long-term)`, `7.18`, `7.10rc1 (testing)`.
    ///
    /// # Errors
    ///
    /// `router_error` when the text is not a version.
    pub fn parse(s: &str) -> Result<Self, DriverError> {
        let bad = || {
            DriverError::new(
                ErrorCode::RouterError,
                format!("cannot read the RouterOS version from {s:?}"),
            )
        };
        let s = s.trim();
        let (number, rest) = s.split_once(' ').unwrap_or((s, ""));
        let channel = rest
            .trim()
            .strip_prefix('(')
            .and_then(|r| r.strip_suffix(')'))
            .unwrap_or(rest.trim());
        let mut parts = number.split('.');
        let mut suffix = String::new();
        let mut num = |p: Option<&str>| -> Option<u32> {
            let p = p?;
            let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
            let tail = &p[digits.len()..];
            if !tail.is_empty() {
                suffix = tail.to_owned();
            }
            digits.parse().ok()
        };
        let major = num(parts.next()).ok_or_else(bad)?;
        let minor = num(parts.next()).ok_or_else(bad)?;
        let patch = match parts.next() {
            Some(p) => num(Some(p)).ok_or_else(bad)?,
            None => 0,
        };
        if parts.next().is_some() {
            return Err(bad());
        }
        let channel = if channel.is_empty() {
            suffix
        } else {
            channel.to_owned()
        };
        Ok(Self {
            major,
            minor,
            patch,
            channel,
        })
    }

    /// Whether this is `major.minor` or later.
    #[must_use]
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }

    /// The number alone, `7.16.2` (`7.18` when the patch is 0).
    #[must_use]
    pub fn number(&self) -> String {
        if self.patch == 0 {
            format!("{}.{}", self.major, self.minor)
        } else {
            format!("{}.{}.{}", self.major, self.minor, self.patch)
        }
    }

    /// Refuses versions tikfleet does not support.
    ///
    /// # Errors
    ///
    /// `unsupported_version` for anything older than 6.43, saying why.
    pub fn check_supported(&self) -> Result<(), DriverError> {
        if self.at_least(MIN_SUPPORTED.0, MIN_SUPPORTED.1) {
            return Ok(());
        }
        Err(DriverError::new(
            ErrorCode::UnsupportedVersion,
            format!(
                "RouterOS {self} is not supported: tikfleet supports RouterOS 6.43 and later, \
                 because older versions only offer the challenge-response API login (removed \
                 in 6.45.1); upgrade the router"
            ),
        ))
    }

    /// Whether `other` (a version number like `7.16.3`) is newer than this one.
    #[must_use]
    pub fn is_older_than(&self, other: &RosVersion) -> bool {
        (self.major, self.minor, self.patch) < (other.major, other.minor, other.patch)
    }
}

impl fmt::Display for RosVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.number())?;
        if !self.channel.is_empty() {
            write!(f, " ({})", self.channel)?;
        }
        Ok(())
    }
}

/// What a router of a given version can do, decided once per connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// RouterOS 7 or later.
    pub v7: bool,
    /// `comment=` accepted by `/ppp/secret/add|set` and `/ppp/profile/add|set`. Ansible gates
    /// it at 7.15 (routeros-replies.md §1); below that the agent sets the comment with the
    /// `comment` verb after `add`.
    pub ppp_comment_on_add: bool,
    /// Prints without rows answer `!empty` then `!done` (7.18+). The driver handles both
    /// forms; this is informational.
    pub empty_sentence: bool,
    /// `/export` flag that makes it include secrets: v7 hides them unless `show-sensitive`;
    /// v6 shows them by default (`None`).
    pub export_show_sensitive: Option<&'static str>,
    /// `/export` flag that hides secrets: v6 `hide-sensitive`; v7 hides by default (`None`).
    pub export_hide_sensitive: Option<&'static str>,
    /// `/ip/hotspot/user/profile` has a `comment` field (it has none on the routers and the
    /// simulator we know), so the managed marker cannot be stored there.
    pub hotspot_profile_comment: bool,
    /// Dates print as `2023-06-01 12:16:16` (7.10+) instead of `jun/01/2023 12:16:16`.
    pub iso_dates: bool,
}

impl Capabilities {
    /// The capabilities of a version.
    #[must_use]
    pub fn for_version(v: &RosVersion) -> Self {
        let v7 = v.major >= 7;
        Self {
            v7,
            ppp_comment_on_add: v.at_least(7, 15),
            empty_sentence: v.at_least(7, 18),
            export_show_sensitive: v7.then_some("show-sensitive"),
            export_hide_sensitive: (!v7).then_some("hide-sensitive"),
            hotspot_profile_comment: false,
            iso_dates: v.at_least(7, 10),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> RosVersion {
        RosVersion::parse(s).unwrap()
    }

    #[test]
    fn parses_versions() {
        let check = |s: &str, major, minor, patch, channel: &str| {
            assert_eq!(
                v(s),
                RosVersion {
                    major,
                    minor,
                    patch,
                    channel: channel.into()
                },
                "{s}"
            );
        };
        check("7.16.2 (stable)", 7, 16, 2, "stable");
        check("6.49.10 (long-term)", 6, 49, 10, "long-term");
        check("7.18", 7, 18, 0, "");
        check("7.10rc1 (testing)", 7, 10, 0, "testing");
        check("7.10rc1", 7, 10, 0, "rc1");
        check(" 6.43.16 (long-term) ", 6, 43, 16, "long-term");
        assert_eq!(v("7.16.2 (stable)").to_string(), "7.16.2 (stable)");
        for bad in ["", "seven", "7", "7.x", "1.2.3.4"] {
            assert_eq!(
                RosVersion::parse(bad).unwrap_err().code(),
                ErrorCode::RouterError,
                "{bad}"
            );
        }
    }

    #[test]
    fn refuses_versions_before_6_43() {
        for old in ["6.42.12 (bugfix)", "6.40", "5.26", "6.42"] {
            let e = v(old).check_supported().unwrap_err();
            assert_eq!(e.code(), ErrorCode::UnsupportedVersion, "{old}");
            assert!(e.message().contains("6.43"), "{e}");
            assert!(e.message().contains("login"), "{e}");
            assert!(!e.retryable());
        }
        for ok in [
            "6.43",
            "6.43.16 (long-term)",
            "6.49.10",
            "7.1",
            "7.16.2 (stable)",
        ] {
            v(ok).check_supported().unwrap();
        }
    }

    #[test]
    fn capabilities_differ_by_version() {
        let v6 = Capabilities::for_version(&v("6.49.10 (long-term)"));
        let v7 = Capabilities::for_version(&v("7.16.2 (stable)"));
        let v718 = Capabilities::for_version(&v("7.18"));
        assert!(!v6.v7 && v7.v7);
        assert!(!v6.ppp_comment_on_add && v7.ppp_comment_on_add);
        assert!(!Capabilities::for_version(&v("7.14.3")).ppp_comment_on_add);
        assert!(!v7.empty_sentence && v718.empty_sentence);
        assert_eq!(v6.export_show_sensitive, None);
        assert_eq!(v6.export_hide_sensitive, Some("hide-sensitive"));
        assert_eq!(v7.export_show_sensitive, Some("show-sensitive"));
        assert_eq!(v7.export_hide_sensitive, None);
    }

    #[test]
    fn ordering() {
        assert!(v("7.16.2").is_older_than(&v("7.16.3")));
        assert!(v("6.49.10").is_older_than(&v("7.1")));
        assert!(!v("7.16.2").is_older_than(&v("7.16.2")));
    }
}
