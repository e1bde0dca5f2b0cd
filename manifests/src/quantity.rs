//! Kubernetes resource quantities: `500m`, `128Mi`, `1.5G`, `1e3`, `2`.
//!
//! The grammar is Kubernetes' (`resource.Quantity`): a signed decimal number
//! followed by a binary suffix (`Ki` … `Ei`), a decimal suffix (`n`, `u`, `m`,
//! `k`, `M`, `G`, `T`, `P`, `E`) or a decimal exponent (`e3`, `E-2`). Values
//! are kept exact in thousandths ("milli-units"), rounded up like Kubernetes'
//! `MilliValue()`: CPU in millicores, memory in milli-bytes.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A quantity exactly as the user wrote it. Validation guarantees that the
/// quantities of an accepted object parse; [`Quantity::value`] parses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Quantity(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("empty quantity")]
    Empty,
    #[error("`{0}` is not a quantity: expected a number such as `500m`, `128Mi`, `1.5G` or `2`")]
    Syntax(String),
    #[error(
        "`{text}` has an unknown suffix `{suffix}`: use one of Ki Mi Gi Ti Pi Ei, n u m k M G T P E, or an exponent like e3"
    )]
    Suffix { text: String, suffix: String },
    #[error("`{0}` is too large")]
    OutOfRange(String),
    #[error("quantity `{0}` must not be negative")]
    Negative(String),
}

/// The exact value of a quantity, in thousandths, rounded up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ParsedQuantity {
    millis: i128,
}

impl ParsedQuantity {
    /// The value × 1000, rounded up: millicores for CPU.
    pub fn millis(self) -> i128 {
        self.millis
    }

    /// The value rounded up to a whole unit: bytes for memory and storage.
    pub fn value(self) -> i128 {
        // Ceiling division that is also right for negative values.
        let q = self.millis / 1000;
        if self.millis % 1000 > 0 { q + 1 } else { q }
    }

    pub fn is_negative(self) -> bool {
        self.millis < 0
    }
}

impl Quantity {
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses the quantity.
    pub fn value(&self) -> Result<ParsedQuantity, QuantityError> {
        parse(&self.0)
    }

    /// Parses an amount of a resource (a limit, a request, a size limit),
    /// which cannot be negative. Validation and the agent both read
    /// resources with this.
    pub fn amount(&self) -> Result<ParsedQuantity, QuantityError> {
        let value = self.value()?;
        if value.is_negative() {
            return Err(QuantityError::Negative(self.0.clone()));
        }
        Ok(value)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses a quantity string.
pub fn parse(text: &str) -> Result<ParsedQuantity, QuantityError> {
    let text_owned = || text.to_owned();
    if text.is_empty() {
        return Err(QuantityError::Empty);
    }
    let (negative, rest) = match text.as_bytes()[0] {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let number_len = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_len);
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && frac.is_empty() || frac.contains('.') {
        return Err(QuantityError::Syntax(text_owned()));
    }
    // Leading zeros carry no value; trailing fractional zeros neither. Cap
    // the digits so the arithmetic below fits in i128.
    let whole = whole.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    if whole.len() + frac.len() > 30 {
        return Err(QuantityError::OutOfRange(text_owned()));
    }
    let mut mantissa: i128 = 0;
    for digit in whole.bytes().chain(frac.bytes()) {
        mantissa = mantissa * 10 + i128::from(digit - b'0');
    }
    let frac_digits =
        u32::try_from(frac.len()).map_err(|_| QuantityError::OutOfRange(text_owned()))?;

    let (pow2, pow10): (u32, i32) = match suffix {
        "" => (0, 0),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        _ => match suffix.strip_prefix(['e', 'E']) {
            Some(exp) if !exp.is_empty() => {
                let exp: i32 = exp.parse().map_err(|_| QuantityError::Suffix {
                    text: text_owned(),
                    suffix: suffix.to_owned(),
                })?;
                (0, exp)
            }
            _ => {
                return Err(
                    if suffix
                        .chars()
                        .next()
                        .is_some_and(|c| c.is_ascii_alphabetic())
                    {
                        QuantityError::Suffix {
                            text: text_owned(),
                            suffix: suffix.to_owned(),
                        }
                    } else {
                        QuantityError::Syntax(text_owned())
                    },
                );
            }
        },
    };
    if number.is_empty() {
        return Err(QuantityError::Syntax(text_owned()));
    }

    // millis = mantissa × 2^pow2 × 10^(pow10 + 3) / 10^frac_digits, rounded up.
    let overflow = || QuantityError::OutOfRange(text.to_owned());
    let scale = pow10 + 3 - i32::try_from(frac_digits).map_err(|_| overflow())?;
    let mut numerator = mantissa.checked_mul(1i128 << pow2).ok_or_else(overflow)?;
    let millis = if mantissa == 0 {
        0
    } else if scale >= 0 {
        let factor = 10i128
            .checked_pow(scale.unsigned_abs())
            .ok_or_else(overflow)?;
        numerator = numerator.checked_mul(factor).ok_or_else(overflow)?;
        numerator
    } else {
        match 10i128.checked_pow(scale.unsigned_abs()) {
            // Smaller than a thousandth: rounds up to one.
            None => 1,
            Some(divisor) => numerator.div_ceil_positive(divisor),
        }
    };
    Ok(ParsedQuantity {
        millis: if negative { -millis } else { millis },
    })
}

trait DivCeil {
    fn div_ceil_positive(self, divisor: Self) -> Self;
}

impl DivCeil for i128 {
    fn div_ceil_positive(self, divisor: i128) -> i128 {
        let q = self / divisor;
        if self % divisor == 0 { q } else { q + 1 }
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// Accepts a string or a bare number (`cpu: 2`, `cpu: 0.5`), as Kubernetes does.
impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct QuantityVisitor;
        impl Visitor<'_> for QuantityVisitor {
            type Value = Quantity;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quantity such as `500m`, `128Mi` or `2`")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Quantity, E> {
                Ok(Quantity(v.to_owned()))
            }
        }
        deserializer.deserialize_any(QuantityVisitor)
    }
}

impl JsonSchema for Quantity {
    fn schema_name() -> Cow<'static, str> {
        "Quantity".into()
    }

    fn json_schema(_generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A quantity such as `500m` (CPU), `128Mi` (memory), `1.5G` or `2`.",
            "anyOf": [
                { "type": "string", "pattern": "^[+-]?(\\d+\\.?\\d*|\\.\\d+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?\\d+)?$" },
                { "type": "number" }
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(text: &str) -> i128 {
        parse(text).map(ParsedQuantity::millis).expect(text)
    }

    #[test]
    fn cpu_quantities_in_millicores() {
        assert_eq!(millis("500m"), 500);
        assert_eq!(millis("2"), 2000);
        assert_eq!(millis("0.5"), 500);
        assert_eq!(millis(".25"), 250);
        assert_eq!(millis("1."), 1000);
        assert_eq!(millis("+1"), 1000);
        assert_eq!(millis("100n"), 1, "below a millicore rounds up");
        assert_eq!(millis("0"), 0);
        assert_eq!(millis("-1"), -1000);
    }

    #[test]
    fn memory_quantities_in_bytes() {
        let bytes = |t: &str| parse(t).map(ParsedQuantity::value).expect(t);
        assert_eq!(bytes("128Mi"), 128 * 1024 * 1024);
        assert_eq!(bytes("1.5G"), 1_500_000_000);
        assert_eq!(bytes("1.5Gi"), 1_610_612_736);
        assert_eq!(bytes("1e3"), 1000);
        assert_eq!(bytes("1E3"), 1000);
        assert_eq!(bytes("5e-1"), 1, "half a byte rounds up");
        assert_eq!(bytes("1k"), 1000);
        assert_eq!(bytes("1Ki"), 1024);
        assert_eq!(bytes("8Ei"), 8 * (1i128 << 60));
        assert_eq!(bytes("0.1Ki"), 103, "102.4 rounds up");
        assert_eq!(bytes("007"), 7);
    }

    #[test]
    fn garbage_is_rejected_with_the_reason() {
        for bad in [
            "", "abc", "1.2.3", ".", "-", "1Gb", "1KB", "1 Gi", "Mi", "1e", "1ee3", "--1", "1.5.Gi",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} must not parse");
        }
        assert!(matches!(parse("12Gb"), Err(QuantityError::Suffix { .. })));
        assert!(matches!(
            parse("9999999999999999999999999999999999"),
            Err(QuantityError::OutOfRange(_))
        ));
        assert!(matches!(parse("1e100"), Err(QuantityError::OutOfRange(_))));
        assert!(parse("1e-100").is_ok_and(|q| q.millis() == 1));
    }

    #[test]
    fn numbers_deserialize_as_quantities() {
        let q: Quantity = serde_json::from_str("0.5").expect("number");
        assert_eq!(q.value().map(ParsedQuantity::millis), Ok(500));
        let q: Quantity = serde_json::from_str("\"1Gi\"").expect("string");
        assert_eq!(serde_json::to_string(&q).expect("serialise"), "\"1Gi\"");
    }
}
