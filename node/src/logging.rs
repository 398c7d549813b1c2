//! What log lines carry: an operation id per request or command (a span
//! field, so every line of one operation has it), and names, never values.
//! No secret and no field value of a dataset or a call is ever logged
//! (docs/operations.md "Logs"; a test greps a scenario's logs for its
//! generated identities).

use std::fmt::Write;

/// A fresh operation id: 8 random bytes, hex. Redrawn in the 1-in-1,800 case
/// that all 16 hex digits are decimal: such an id reads as a 16-digit
/// personal number to a log scanner (and to the scenario's leak check).
pub fn operation_id() -> String {
    for _ in 0..8 {
        match pdx_crypto::rng::bytes::<8>() {
            Ok(b) => {
                let id = hex::encode(b);
                if !id.bytes().all(|c| c.is_ascii_digit()) {
                    return id;
                }
            }
            Err(_) => break,
        }
    }
    "unknown".into()
}

/// The variant name of an enum value (`Import` of `Import(spec)`), read off
/// its `Debug` output, which stops at the first character after the name, so
/// nothing the variant holds is ever formatted.
pub fn variant_name(v: &impl std::fmt::Debug) -> String {
    struct Head(String);
    impl Write for Head {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            for c in s.chars() {
                if (c.is_ascii_alphanumeric() || c == '_') && self.0.len() < 64 {
                    self.0.push(c);
                } else {
                    return Err(std::fmt::Error);
                }
            }
            Ok(())
        }
    }
    let mut h = Head(String::new());
    let _ = write!(h, "{v:?}");
    h.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    #[allow(dead_code)]
    enum E {
        Unit,
        Holds(String),
        Named { secret: String },
    }

    #[test]
    fn variant_name_never_formats_what_the_variant_holds() {
        assert_eq!(variant_name(&E::Unit), "Unit");
        assert_eq!(
            variant_name(&E::Holds("110101199001011234".into())),
            "Holds"
        );
        assert_eq!(
            variant_name(&E::Named {
                secret: "张三".into()
            }),
            "Named"
        );
    }

    #[test]
    fn no_operation_id_reads_as_a_decimal_number() {
        // Undrawn, about 11 of 20,000 ids would be all-decimal.
        for _ in 0..20_000 {
            let id = operation_id();
            assert!(!id.bytes().all(|c| c.is_ascii_digit()), "{id}");
        }
    }

    #[test]
    fn operation_ids_are_16_hex_digits_and_differ() {
        let a = operation_id();
        let b = operation_id();
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
