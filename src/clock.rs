//! Time as homelab writes it: RFC 3339 UTC with seconds. This module formats a time it is
//! given; the commands decide what "now" is and pass it down (a `Clock` where work runs long
//! enough for the time to move), so nothing below them reads the system clock on its own.

use std::time::SystemTime;

/// Where long-running work (an apply) reads the time from. Tests and the CLI pass
/// `SystemTime::now`.
pub type Clock = fn() -> SystemTime;

/// `2026-11-30T01:10:47Z`.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The UTC day of `t`, `YYYY-MM-DD`: the folder of that day's events.
pub fn day(t: SystemTime) -> String {
    rfc3339(t)[..10].to_owned()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn formats_utc_seconds_and_day() {
        let t = UNIX_EPOCH + Duration::from_secs(1_796_000_000);
        assert_eq!(super::rfc3339(t), "2026-11-30T00:53:20Z");
        assert_eq!(super::day(t), "2026-11-30");
    }
}
