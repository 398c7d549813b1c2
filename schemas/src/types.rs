//! Field types and value validation.

use regex::Regex;
use std::collections::{BTreeMap, HashSet};

/// A field's declared type.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum FieldType {
    /// Text, optionally bounded in characters and constrained by a regex.
    String {
        /// Maximum length in characters.
        max_length: Option<usize>,
        /// Regex the whole value must match.
        regex: Option<Regex>,
    },
    /// 64-bit signed integer, optionally bounded.
    Integer {
        /// Minimum.
        min: Option<i64>,
        /// Maximum.
        max: Option<i64>,
    },
    /// Decimal with at most `precision` digits, `scale` of them after the point.
    Decimal {
        /// Total digits.
        precision: u8,
        /// Digits after the point.
        scale: u8,
    },
    /// `YYYY-MM-DD`.
    Date,
    /// `YYYY-MM-DD HH:MM:SS` (a `T` separator is also accepted).
    DateTime,
    /// One of a declared code list.
    Code {
        /// Allowed codes.
        codes: HashSet<String>,
        /// Labels for display.
        labels: BTreeMap<String, String>,
    },
    /// Chinese resident identity number (GB 11643, 18 characters).
    ResidentId,
}

impl FieldType {
    /// Short name for messages and reports.
    pub fn name(&self) -> String {
        match self {
            FieldType::String { max_length, .. } => match max_length {
                Some(n) => format!("string({n})"),
                None => "string".into(),
            },
            FieldType::Integer { .. } => "integer".into(),
            FieldType::Decimal { precision, scale } => format!("decimal({precision},{scale})"),
            FieldType::Date => "date".into(),
            FieldType::DateTime => "datetime".into(),
            FieldType::Code { codes, .. } => format!("code({} values)", codes.len()),
            FieldType::ResidentId => "resident-id".into(),
        }
    }

    /// Checks one non-null value; the error says why it is invalid.
    pub fn validate(&self, v: &str) -> Result<(), String> {
        match self {
            FieldType::String { max_length, regex } => {
                if let Some(max) = max_length {
                    // Byte length bounds the char count from above: skip counting when short.
                    if v.len() > *max && v.chars().count() > *max {
                        return Err(format!("longer than {max} characters"));
                    }
                }
                if let Some(re) = regex
                    && !re.is_match(v)
                {
                    return Err(format!("does not match the pattern {}", re.as_str()));
                }
                Ok(())
            }
            FieldType::Integer { min, max } => {
                let n: i64 = v.parse().map_err(|_| "not an integer".to_string())?;
                if min.is_some_and(|m| n < m) || max.is_some_and(|m| n > m) {
                    return Err(format!(
                        "outside the allowed range {}..={}",
                        min.map(|m| m.to_string()).unwrap_or_default(),
                        max.map(|m| m.to_string()).unwrap_or_default()
                    ));
                }
                Ok(())
            }
            FieldType::Decimal { precision, scale } => check_decimal(v, *precision, *scale),
            FieldType::Date => parse_date(v)
                .map(|_| ())
                .ok_or_else(|| "not a date YYYY-MM-DD".to_string()),
            FieldType::DateTime => parse_datetime(v)
                .map(|_| ())
                .ok_or_else(|| "not a datetime YYYY-MM-DD HH:MM:SS".to_string()),
            FieldType::Code { codes, .. } => {
                if codes.contains(v) {
                    Ok(())
                } else {
                    Err("not in the field's code list".to_string())
                }
            }
            FieldType::ResidentId => crate::resident_id::validate(v).map_err(|e| e.to_string()),
        }
    }
}

fn check_decimal(v: &str, precision: u8, scale: u8) -> Result<(), String> {
    let digits = v.strip_prefix('-').unwrap_or(v);
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) => (i, f),
        None => (digits, ""),
    };
    let ok_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty()
        || !ok_digits(int)
        || !ok_digits(frac)
        || (digits.contains('.') && frac.is_empty())
    {
        return Err(format!(
            "not a decimal number (decimal({precision},{scale}))"
        ));
    }
    if frac.len() > usize::from(scale) {
        return Err(format!("more than {scale} digits after the point"));
    }
    let int_digits = int.trim_start_matches('0').len();
    if int_digits > usize::from(precision.saturating_sub(scale)) {
        return Err(format!(
            "more than {} digits before the point",
            precision.saturating_sub(scale)
        ));
    }
    Ok(())
}

/// A decimal as an integer count of 10^-scale units (e.g. yuan with scale 2 -> fen).
pub fn decimal_to_units(v: &str, scale: u8) -> Option<i128> {
    let (neg, digits) = match v.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, v),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if frac.len() > usize::from(scale) || int.is_empty() {
        return None;
    }
    let mut n: i128 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
    }
    for _ in frac.len()..usize::from(scale) {
        n = n.checked_mul(10)?;
    }
    Some(if neg { -n } else { n })
}

/// Formats `units` of 10^-scale as a decimal string.
pub fn units_to_decimal(units: i128, scale: u8) -> String {
    if scale == 0 {
        return units.to_string();
    }
    let neg = units < 0;
    let abs = units.unsigned_abs();
    let div = 10u128.pow(u32::from(scale));
    format!(
        "{}{}.{:0width$}",
        if neg { "-" } else { "" },
        abs / div,
        abs % div,
        width = usize::from(scale)
    )
}

fn num(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn real_date(y: i32, m: u32, d: u32) -> bool {
    let Ok(month) = time::Month::try_from(u8::try_from(m).unwrap_or(0)) else {
        return false;
    };
    u8::try_from(d).is_ok_and(|d| time::Date::from_calendar_date(y, month, d).is_ok())
}

/// Parses `YYYY-MM-DD` into (year, month, day) if it is a real date.
pub fn parse_date(s: &str) -> Option<(i32, u32, u32)> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y = i32::try_from(num(&s[..4])?).ok()?;
    let (m, d) = (num(&s[5..7])?, num(&s[8..10])?);
    real_date(y, m, d).then_some((y, m, d))
}

/// Whether `YYYYMMDD` is a real date (used inside resident ID numbers).
pub fn is_valid_compact_date(s: &str) -> bool {
    if s.len() != 8 {
        return false;
    }
    match (num(&s[..4]), num(&s[4..6]), num(&s[6..8])) {
        (Some(y), Some(m), Some(d)) => i32::try_from(y).is_ok_and(|y| real_date(y, m, d)),
        _ => false,
    }
}

/// Parses `YYYY-MM-DD HH:MM:SS` (or with `T`); returns the date part.
pub fn parse_datetime(s: &str) -> Option<(i32, u32, u32)> {
    let b = s.as_bytes();
    if b.len() != 19 || !(b[10] == b' ' || b[10] == b'T') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let date = parse_date(&s[..10])?;
    let (h, mi, sec) = (num(&s[11..13])?, num(&s[14..16])?, num(&s[17..19])?);
    (h < 24 && mi < 60 && sec < 60).then_some(date)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_respect_precision_and_scale() {
        let t = FieldType::Decimal {
            precision: 16,
            scale: 2,
        };
        for ok in ["0", "12.5", "12.50", "-3.01", "99999999999999.99", "007.1"] {
            assert_eq!(t.validate(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            ".5",
            "1.",
            "1.234",
            "1e5",
            "abc",
            "999999999999999.00",
            "+1",
        ] {
            assert!(t.validate(bad).is_err(), "{bad}");
        }
        assert_eq!(decimal_to_units("12.5", 2), Some(1250));
        assert_eq!(decimal_to_units("-0.07", 2), Some(-7));
        assert_eq!(units_to_decimal(1250, 2), "12.50");
        assert_eq!(units_to_decimal(-7, 2), "-0.07");
    }

    #[test]
    fn dates_and_datetimes_must_be_real() {
        assert_eq!(parse_date("2024-02-29"), Some((2024, 2, 29)));
        assert_eq!(parse_date("2023-02-29"), None);
        assert_eq!(parse_date("2023-13-01"), None);
        assert_eq!(parse_date("2023-1-01"), None);
        assert_eq!(parse_datetime("2026-10-31 23:59:59"), Some((2026, 10, 31)));
        assert_eq!(parse_datetime("2026-10-31T08:00:00"), Some((2026, 10, 31)));
        assert_eq!(parse_datetime("2026-10-31 24:00:00"), None);
    }

    #[test]
    fn strings_count_characters_not_bytes() -> Result<(), String> {
        let t = FieldType::String {
            max_length: Some(3),
            regex: None,
        };
        t.validate("张三丰")?;
        assert!(t.validate("张三丰丰").is_err());
        let re = FieldType::String {
            max_length: None,
            regex: Regex::new("^[A-Z]{2}[0-9]+$").ok(),
        };
        re.validate("AB12")?;
        assert!(re.validate("ab12").is_err());
        Ok(())
    }

    #[test]
    fn integers_and_codes() {
        let t = FieldType::Integer {
            min: Some(0),
            max: Some(150),
        };
        assert!(t.validate("42").is_ok());
        assert!(t.validate("151").is_err());
        assert!(t.validate("4.2").is_err());
        let c = FieldType::Code {
            codes: ["1".to_string(), "2".to_string()].into_iter().collect(),
            labels: BTreeMap::new(),
        };
        assert!(c.validate("1").is_ok());
        assert!(c.validate("3").is_err());
    }
}
