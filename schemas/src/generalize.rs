//! Generalisation functions: each coarsens one value into `out` or says why it cannot.

use crate::schema::{Generalization, Hierarchy};
use crate::types::{decimal_to_units, parse_date, parse_datetime, units_to_decimal};
use std::fmt::Write;

fn date_part(v: &str) -> Option<(i32, u32, u32)> {
    if v.len() == 10 {
        parse_date(v)
    } else {
        parse_datetime(v)
    }
}

/// Applies `g` to `v`, writing the result into `out` (cleared first).
pub fn apply(
    g: &Generalization,
    v: &str,
    hierarchy: &Hierarchy,
    out: &mut String,
) -> Result<(), String> {
    out.clear();
    match g {
        Generalization::Month | Generalization::Quarter | Generalization::Year => {
            let (y, m, _) = date_part(v).ok_or("is not a date")?;
            let _ = match g {
                Generalization::Month => write!(out, "{y:04}-{m:02}"),
                Generalization::Quarter => write!(out, "{y:04}-Q{}", (m - 1) / 3 + 1),
                _ => write!(out, "{y:04}"),
            };
        }
        Generalization::AgeBand { width, top } => {
            let age: i64 = v.parse().map_err(|_| "is not an integer age")?;
            if age < 0 {
                return Err("is a negative age".into());
            }
            let (age, width, top) = (age as u64, u64::from(*width), u64::from(*top));
            if age >= top {
                let _ = write!(out, "{top}+");
            } else {
                let lo = age / width * width;
                let hi = (lo + width - 1).min(top - 1);
                let _ = write!(out, "{lo}-{hi}");
            }
        }
        Generalization::Prefecture | Generalization::Province => {
            let b = v.as_bytes();
            if b.len() != 6 || !b.iter().all(u8::is_ascii_digit) {
                return Err("is not a 6-digit administrative division code".into());
            }
            let keep = if matches!(g, Generalization::Prefecture) {
                4
            } else {
                2
            };
            out.push_str(&v[..keep]);
            out.push_str(&"000000"[keep..]);
        }
        Generalization::Icd10Category => {
            let b = v.as_bytes();
            if b.len() < 3
                || !b[0].is_ascii_uppercase()
                || !b[1].is_ascii_digit()
                || !(b[2].is_ascii_digit() || b[2].is_ascii_uppercase())
            {
                return Err("is not an ICD-10 code (letter, two digits)".into());
            }
            out.push_str(&v[..3]);
        }
        Generalization::Round { step, scale } => {
            let n = decimal_to_units(v, *scale).ok_or("is not a number")?;
            let half = step / 2;
            let r = if n >= 0 {
                (n + half) / step * step
            } else {
                -((-n + half) / step * step)
            };
            out.push_str(&units_to_decimal(r, *scale));
        }
        Generalization::TopBottom { min, max, scale } => {
            let n = decimal_to_units(v, *scale).ok_or("is not a number")?;
            match (min, max) {
                (Some(lo), _) if n <= *lo => {
                    out.push_str("<=");
                    out.push_str(&units_to_decimal(*lo, *scale));
                }
                (_, Some(hi)) if n >= *hi => {
                    out.push_str(">=");
                    out.push_str(&units_to_decimal(*hi, *scale));
                }
                _ => out.push_str(&units_to_decimal(n, *scale)),
            }
        }
        Generalization::Hierarchy { level } => {
            let parent = hierarchy
                .get(level)
                .and_then(|m| m.get(v))
                .ok_or_else(|| format!("has no parent at hierarchy level {level}"))?;
            out.push_str(parent);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(rule: &Generalization, v: &str) -> Result<String, String> {
        let mut h = Hierarchy::new();
        h.insert(
            "setting".into(),
            [
                ("11".to_string(), "outpatient".to_string()),
                ("21".into(), "inpatient".into()),
            ]
            .into_iter()
            .collect(),
        );
        let mut out = String::new();
        apply(rule, v, &h, &mut out).map(|_| out)
    }

    #[test]
    fn dates_generalise_to_month_quarter_year() {
        assert_eq!(
            g(&Generalization::Month, "2026-10-31"),
            Ok("2026-10".into())
        );
        assert_eq!(
            g(&Generalization::Quarter, "2026-10-31 12:00:00"),
            Ok("2026-Q4".into())
        );
        assert_eq!(
            g(&Generalization::Quarter, "2026-03-01"),
            Ok("2026-Q1".into())
        );
        assert_eq!(g(&Generalization::Year, "1958-02-28"), Ok("1958".into()));
        assert!(g(&Generalization::Year, "yesterday").is_err());
    }

    #[test]
    fn ages_band_with_top_coding() {
        let band = Generalization::AgeBand { width: 10, top: 80 };
        assert_eq!(g(&band, "0"), Ok("0-9".into()));
        assert_eq!(g(&band, "37"), Ok("30-39".into()));
        assert_eq!(g(&band, "79"), Ok("70-79".into()));
        assert_eq!(g(&band, "80"), Ok("80+".into()));
        assert_eq!(g(&band, "104"), Ok("80+".into()));
        let odd = Generalization::AgeBand { width: 15, top: 70 };
        assert_eq!(g(&odd, "62"), Ok("60-69".into()), "last band is cut at top");
        assert!(g(&band, "-1").is_err());
    }

    #[test]
    fn regions_and_diagnoses_generalise() {
        assert_eq!(
            g(&Generalization::Prefecture, "440305"),
            Ok("440300".into())
        );
        assert_eq!(g(&Generalization::Province, "440305"), Ok("440000".into()));
        assert!(g(&Generalization::Province, "4403").is_err());
        assert_eq!(
            g(&Generalization::Icd10Category, "J18.900"),
            Ok("J18".into())
        );
        assert_eq!(g(&Generalization::Icd10Category, "C34"), Ok("C34".into()));
        assert!(g(&Generalization::Icd10Category, "18.9").is_err());
    }

    #[test]
    fn numbers_round_and_top_bottom_code() {
        let r = Generalization::Round {
            step: 1000,
            scale: 2,
        };
        assert_eq!(g(&r, "1234.56"), Ok("1230.00".into()));
        assert_eq!(g(&r, "1235.00"), Ok("1240.00".into()));
        assert_eq!(g(&r, "-4.99"), Ok("0.00".into()));
        let tb = Generalization::TopBottom {
            min: Some(1000),
            max: Some(10_000_000),
            scale: 2,
        };
        assert_eq!(g(&tb, "5.00"), Ok("<=10.00".into()));
        assert_eq!(g(&tb, "250.10"), Ok("250.10".into()));
        assert_eq!(g(&tb, "200000"), Ok(">=100000.00".into()));
    }

    #[test]
    fn code_hierarchies_map_to_parents() {
        let h = Generalization::Hierarchy {
            level: "setting".into(),
        };
        assert_eq!(g(&h, "21"), Ok("inpatient".into()));
        assert!(g(&h, "99").is_err());
    }
}
