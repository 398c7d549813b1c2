//! What log lines carry: an operation id per request or command (a span
//! field, so every line of one operation has it), and names, never values.
//! No secret and no field value of a dataset or a call is ever logged
//! (docs/operations.md "Logs"; a test greps a scenario's logs for its
//! generated identities).

use std::fmt::Write;

/// A fresh operation id: 8 random bytes, hex.
pub fn operation_id() -> String {
    match pdx_crypto::rng::bytes::<8>() {
        Ok(b) => hex::encode(b),
        Err(_) => "unknown".into(),
    }
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
    fn operation_ids_are_16_hex_digits_and_differ() {
        let a = operation_id();
        let b = operation_id();
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
