//! Finds personal data of the kinds the generator makes (resident ID
//! numbers, insured person numbers, names) in command output, by shape, not
//! by a list: so every failing command of the test suite can be checked
//! against every identity any test generated, at no memory cost.

use crate::generate::{GIVEN, PROVINCES, SURNAMES};

/// Personal values found in `text`, masked (so the report does not leak
/// them again): resident IDs with a valid check digit, 16-digit insured
/// person numbers of a generated province, and generated-style names.
pub fn personal_data_in(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for token in text.split(|c: char| !c.is_ascii_alphanumeric()) {
        let is_id = token.len() == 18
            && token[..17].bytes().all(|b| b.is_ascii_digit())
            && pdx_schemas::resident_id::validate(token).is_ok();
        let is_psn = token.len() == 16
            && token.bytes().all(|b| b.is_ascii_digit())
            && PROVINCES.iter().any(|(code, _)| token[..2] == code[..2]);
        if is_id || is_psn {
            found.push(pdx_schemas::import::mask(token));
        }
    }
    let chars: Vec<char> = text.chars().collect();
    for w in chars.windows(2) {
        let (s, g) = (w[0].to_string(), w[1].to_string());
        if SURNAMES.contains(&s.as_str()) && GIVEN.contains(&g.as_str()) {
            found.push(pdx_schemas::import::mask(&format!("{s}{g}")));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_identities_are_found_and_masked_values_are_not() {
        let p = crate::generate::person(11, 0, 7);
        let raw = format!("{},{},{}", p.psn_no, p.certno, p.name);
        assert_eq!(personal_data_in(&raw).len(), 3, "{raw}");
        let masked = format!(
            "{} {} {}",
            pdx_schemas::import::mask(&p.psn_no),
            pdx_schemas::import::mask(&p.certno),
            pdx_schemas::import::mask(&p.name)
        );
        assert!(personal_data_in(&masked).is_empty(), "{masked}");
        assert!(personal_data_in("广东 (440000) 国家医保局 北京 digest 0a1b2c").is_empty());
    }
}
