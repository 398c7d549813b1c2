//! Chinese resident identity numbers (GB 11643-1999): 17 digits — a 6-digit
//! region code, an 8-digit birth date, a 3-digit sequence (odd for men) — and an
//! ISO 7064 MOD 11-2 check character (`0`-`9` or `X`).

const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const CHECK: [u8; 11] = *b"10X98765432";

/// Why an identity number is invalid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResidentIdError {
    /// Not 18 characters.
    Length(usize),
    /// One of the first 17 characters is not a digit.
    NotDigits,
    /// Positions 7-14 are not a real date.
    BirthDate,
    /// The check character does not match.
    CheckDigit {
        /// What the first 17 digits require.
        expected: char,
    },
}

impl std::fmt::Display for ResidentIdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResidentIdError::Length(n) => {
                write!(f, "has {n} characters, a resident ID number has 18")
            }
            ResidentIdError::NotDigits => f.write_str("the first 17 characters must be digits"),
            ResidentIdError::BirthDate => f.write_str("characters 7-14 are not a valid birth date"),
            ResidentIdError::CheckDigit { expected } => {
                write!(
                    f,
                    "check digit does not match (GB 11643 requires {expected})"
                )
            }
        }
    }
}

/// The check character for the first 17 digits (`None` if not 17 digits).
pub fn check_char(first17: &[u8]) -> Option<u8> {
    if first17.len() != 17 || !first17.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let sum: u32 = first17
        .iter()
        .zip(WEIGHTS)
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    Some(CHECK[(sum % 11) as usize])
}

/// Validates an 18-character resident ID number (upper- or lower-case `x`).
pub fn validate(id: &str) -> Result<(), ResidentIdError> {
    let b = id.as_bytes();
    if b.len() != 18 {
        return Err(ResidentIdError::Length(id.chars().count()));
    }
    let expected = check_char(&b[..17]).ok_or(ResidentIdError::NotDigits)?;
    let birth = &id[6..14];
    if !crate::types::is_valid_compact_date(birth) {
        return Err(ResidentIdError::BirthDate);
    }
    if b[17].to_ascii_uppercase() != expected {
        return Err(ResidentIdError::CheckDigit {
            expected: char::from(expected),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_valid_numbers_pass() {
        // The GB 11643 worked example and numbers with each special check value.
        for id in [
            "11010519491231002X",
            "440524188001010014",
            "650102200002290000",
        ] {
            let first17 = &id.as_bytes()[..17];
            let c = check_char(first17).map(char::from);
            let fixed = format!("{}{}", &id[..17], c.unwrap_or('?'));
            assert_eq!(validate(&fixed), Ok(()), "{fixed}");
        }
        assert_eq!(validate("11010519491231002X"), Ok(()));
        assert_eq!(validate("11010519491231002x"), Ok(()));
    }

    #[test]
    fn every_wrong_check_character_is_refused() {
        let first17 = "11010519491231002";
        for c in "0123456789X".chars().filter(|&c| c != 'X') {
            assert!(matches!(
                validate(&format!("{first17}{c}")),
                Err(ResidentIdError::CheckDigit { expected: 'X' })
            ));
        }
    }

    #[test]
    fn malformed_numbers_are_refused_with_the_reason() {
        assert_eq!(
            validate("1101051949123100"),
            Err(ResidentIdError::Length(16))
        );
        assert_eq!(
            validate("1101051949123100AX"),
            Err(ResidentIdError::NotDigits)
        );
        assert_eq!(
            validate("110105194913310020"),
            Err(ResidentIdError::BirthDate)
        );
        assert_eq!(
            validate("110105190002290020").map_err(|e| e == ResidentIdError::BirthDate),
            Err(true),
            "1900 is not a leap year"
        );
    }

    #[test]
    fn check_digit_covers_all_eleven_values() {
        let mut seen = std::collections::HashSet::new();
        for seq in 0..200u32 {
            let first17 = format!("11010519800101{seq:03}");
            if let Some(c) = check_char(first17.as_bytes()) {
                seen.insert(c);
            }
        }
        assert_eq!(seen.len(), 11);
    }
}
