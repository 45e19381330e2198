//! Wall-clock helpers: RFC 3339 in UTC, the one timestamp format users see.
//!
//! Keys, the JSON sink and `inspect --json` all show instants as
//! `2026-11-26T19:00:00Z` (whole seconds, UTC), because SigV4 signs whole seconds and
//! a `Z` timestamp compares correctly as a string.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Formats `t` as `YYYY-MM-DDTHH:MM:SSZ` (sub-seconds dropped).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs_f64().ceil() as i64),
    };
    match OffsetDateTime::from_unix_timestamp(secs) {
        Ok(dt) => {
            let (y, mo, d) = (dt.year(), dt.month() as u8, dt.day());
            let (h, mi, s) = (dt.hour(), dt.minute(), dt.second());
            format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
        }
        Err(_) => format!("@{secs}"),
    }
}

/// Parses an RFC 3339 timestamp (any offset) into a `SystemTime`.
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let dt = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    from_unix_nanos(dt.unix_timestamp_nanos())
}

/// Parses a SigV4 `X-Amz-Date` (`20261126T080000Z`).
pub fn parse_amz_date(text: &str) -> Option<SystemTime> {
    let b = text.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        let s = text.get(r)?;
        if s.bytes().all(|c| c.is_ascii_digit()) {
            s.parse().ok()
        } else {
            None
        }
    };
    let year = digits(0..4)? as i32;
    let month = time::Month::try_from(digits(4..6)? as u8).ok()?;
    let date = time::Date::from_calendar_date(year, month, digits(6..8)? as u8).ok()?;
    let clock = time::Time::from_hms(
        digits(9..11)? as u8,
        digits(11..13)? as u8,
        digits(13..15)? as u8,
    )
    .ok()?;
    let dt = time::PrimitiveDateTime::new(date, clock).assume_utc();
    from_unix_nanos(dt.unix_timestamp_nanos())
}

fn from_unix_nanos(nanos: i128) -> Option<SystemTime> {
    if nanos >= 0 {
        let d = Duration::new(
            u64::try_from(nanos / 1_000_000_000).ok()?,
            (nanos % 1_000_000_000) as u32,
        );
        UNIX_EPOCH.checked_add(d)
    } else {
        let n = -nanos;
        let d = Duration::new(
            u64::try_from(n / 1_000_000_000).ok()?,
            (n % 1_000_000_000) as u32,
        );
        UNIX_EPOCH.checked_sub(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_680_000);
        assert_eq!(rfc3339(t), "2026-11-26T08:00:00Z");
        assert_eq!(parse_rfc3339("2026-11-26T08:00:00Z"), Some(t));
        assert_eq!(parse_rfc3339("2026-11-26T09:00:00+01:00"), Some(t));
        assert_eq!(parse_amz_date("20261126T080000Z"), Some(t));
    }

    #[test]
    fn rejects_malformed_amz_dates() {
        for bad in [
            "",
            "20261126T080000",
            "20261326T080000Z",
            "2026112xT080000Z",
            "20261126T250000Z",
            "+0261126T080000Z",
        ] {
            assert_eq!(parse_amz_date(bad), None, "{bad}");
        }
    }
}
