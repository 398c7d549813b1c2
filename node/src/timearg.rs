//! The one parser of times given on the command line (`--expires`,
//! `--deadline`, `--since`, `--until`): `YYYY-MM-DD`, an RFC 3339 time, or
//! `+N` with `s`, `m`, `h` or `d` from now. Parsed with the `time` crate's
//! format descriptions; arithmetic is checked, so a huge `+N` is refused
//! rather than saturated into "forever".

use crate::error::{NodeError, Result};
use pdx_audit::store::now_ms;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime, Time};

/// Which instant of a calendar day a bare `YYYY-MM-DD` means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DayBound {
    /// 00:00:00 UTC (a `--since`).
    Start,
    /// 23:59:59 UTC (an expiry or deadline: the whole day counts).
    End,
}

/// Parses `s` (given as `flag`) into milliseconds since the Unix epoch,
/// relative to `now_ms` for the `+N` form.
pub fn parse_time_at(s: &str, flag: &str, day: DayBound, now_ms: u64) -> Result<u64> {
    let bad = |why: &str| {
        NodeError::Invalid(format!(
            "{flag} {s:?}: {why}; use YYYY-MM-DD, an RFC 3339 time, or +N with s, m, h or d (e.g. +30d)"
        ))
    };
    if let Some(rel) = s.strip_prefix('+') {
        let (num, unit) = rel.split_at(rel.len().saturating_sub(1));
        let n: u64 = num.parse().map_err(|_| bad("not a number of units"))?;
        let unit_ms: u64 = match unit {
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad("unknown unit")),
        };
        return n
            .checked_mul(unit_ms)
            .and_then(|d| now_ms.checked_add(d))
            .filter(|&t| t <= MAX_TIME_MS)
            .ok_or_else(|| bad("too far in the future"));
    }
    let at = if let Ok(date) = Date::parse(s, format_description!("[year]-[month]-[day]")) {
        let time = match day {
            DayBound::Start => Time::MIDNIGHT,
            DayBound::End => Time::from_hms(23, 59, 59).map_err(|_| bad("bad time"))?,
        };
        date.with_time(time).assume_utc()
    } else {
        OffsetDateTime::parse(s, &Rfc3339).map_err(|_| bad("not a date or time"))?
    };
    let ms = at.unix_timestamp_nanos() / 1_000_000;
    u64::try_from(ms)
        .ok()
        .filter(|&t| t <= MAX_TIME_MS)
        .ok_or_else(|| bad("before 1970 or after 9999"))
}

/// [`parse_time_at`] relative to the current time.
pub fn parse_time(s: &str, flag: &str, day: DayBound) -> Result<u64> {
    parse_time_at(s, flag, day, now_ms())
}

/// The latest time accepted: 9999-12-31T23:59:59.999Z.
pub const MAX_TIME_MS: u64 = 253_402_300_799_999;

/// RFC 3339 text of a time in milliseconds (UTC), for output.
pub fn format_ms(ms: u64) -> Option<String> {
    let nanos = i128::from(ms).checked_mul(1_000_000)?;
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()?
        .format(&Rfc3339)
        .ok()
}

/// RFC 3339 text of a signed time in milliseconds (a certificate's
/// validity), or the number itself when it has none.
pub fn format_signed_ms(ms: i64) -> String {
    u64::try_from(ms)
        .ok()
        .and_then(format_ms)
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn dates_times_and_relative_forms_parse() {
        let day = parse_time_at("2026-10-31", "--x", DayBound::Start, 0).unwrap();
        assert_eq!(day, 1_793_404_800_000);
        let end = parse_time_at("2026-10-31", "--x", DayBound::End, 0).unwrap();
        assert_eq!(end, day + 86_399_000);
        let t = parse_time_at("2026-10-31T08:00:00+08:00", "--x", DayBound::End, 0).unwrap();
        assert_eq!(t, day);
        assert_eq!(
            parse_time_at("+2d", "--x", DayBound::End, 1000).unwrap(),
            1000 + 2 * 86_400_000
        );
        for bad in [
            "2026-02-30",
            "2026-1-01",
            "+5y",
            "+d",
            "tomorrow",
            "",
            "+-1d",
        ] {
            assert!(
                parse_time_at(bad, "--x", DayBound::End, 0).is_err(),
                "{bad}"
            );
        }
    }

    proptest! {
        // Extreme relative times are refused with an error, never saturated
        // into a time that silently means "forever".
        #[test]
        fn relative_times_never_overflow_or_saturate(n in any::<u64>(), unit in 0usize..4, now in any::<u64>()) {
            let unit_ms = [1_000u64, 60_000, 3_600_000, 86_400_000][unit];
            let s = format!("+{n}{}", ["s", "m", "h", "d"][unit]);
            match parse_time_at(&s, "--expires", DayBound::End, now) {
                Ok(t) => {
                    prop_assert_eq!(Some(t), n.checked_mul(unit_ms).and_then(|d| now.checked_add(d)));
                    prop_assert!(t <= MAX_TIME_MS);
                }
                Err(e) => prop_assert!(e.to_string().contains("too far in the future")),
            }
        }
    }
}
