//! Points in time on the wire.
//!
//! [`UnixMillis`] is milliseconds since the Unix epoch (UTC) as a signed 64-bit integer: a
//! plain MessagePack / JSON integer, with no time zone and no calendar library in the wire
//! format. This crate never reads the clock; callers pass `now` in (house style: injected
//! time), e.g. with [`UnixMillis::from_system_time`].

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Milliseconds since 1970-01-01T00:00:00Z. Serialized as a bare integer.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct UnixMillis(pub i64);

impl UnixMillis {
    /// The epoch itself.
    pub const EPOCH: Self = Self(0);

    /// Wraps a millisecond count.
    #[must_use]
    pub const fn new(millis: i64) -> Self {
        Self(millis)
    }

    /// The millisecond count.
    #[must_use]
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// Converts a [`SystemTime`], saturating at the ends of the `i64` range.
    #[must_use]
    pub fn from_system_time(time: SystemTime) -> Self {
        match time.duration_since(UNIX_EPOCH) {
            Ok(after) => Self(i64::try_from(after.as_millis()).unwrap_or(i64::MAX)),
            Err(before) => Self(
                i64::try_from(before.duration().as_millis())
                    .map(|ms| -ms)
                    .unwrap_or(i64::MIN),
            ),
        }
    }

    /// This instant plus `duration`, saturating.
    #[must_use]
    pub fn saturating_add(self, duration: Duration) -> Self {
        let ms = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        Self(self.0.saturating_add(ms))
    }

    /// How long after `earlier` this instant is; zero if it is not later.
    #[must_use]
    pub fn duration_since(self, earlier: Self) -> Duration {
        let ms = self.0.saturating_sub(earlier.0);
        Duration::from_millis(u64::try_from(ms).unwrap_or(0))
    }
}

impl fmt::Display for UnixMillis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_time_conversion_both_sides_of_the_epoch() {
        let after = UNIX_EPOCH + Duration::from_millis(1_500);
        assert_eq!(UnixMillis::from_system_time(after), UnixMillis(1_500));
        let before = UNIX_EPOCH - Duration::from_millis(2_000);
        assert_eq!(UnixMillis::from_system_time(before), UnixMillis(-2_000));
    }

    #[test]
    fn arithmetic_saturates() {
        let t = UnixMillis(i64::MAX - 1);
        assert_eq!(
            t.saturating_add(Duration::from_secs(1)),
            UnixMillis(i64::MAX)
        );
        assert_eq!(
            UnixMillis(10).duration_since(UnixMillis(4)),
            Duration::from_millis(6)
        );
        assert_eq!(UnixMillis(4).duration_since(UnixMillis(10)), Duration::ZERO);
    }

    #[test]
    fn wire_form_is_a_bare_integer() {
        assert_eq!(rmp_serde::to_vec(&UnixMillis(5)).unwrap(), vec![5]);
    }
}
