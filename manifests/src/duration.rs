//! Durations: the one parser for every duration berth reads, so that what
//! `berth validate` accepts is what the agent applies.
//!
//! One grammar, Go's `time.ParseDuration`, with two unit sets:
//!
//! - [`parse_go`]: exactly Go's units (`ns`, `us`/`µs`/`μs`, `ms`, `s`, `m`,
//!   `h`), for values containerd-compatible files share with Go tools:
//!   hosts.toml `dial_timeout` and a Registry's `dialTimeout`.
//! - [`parse_config`]: the same plus `d` (24h), for the agent's config file
//!   and command-line flags (`gc.leftoverAge = "7d"`).
//!
//! The grammar: an optional `+`, then one or more terms, each a decimal
//! number with an optional fraction (`1`, `1.5`, `.5`, `1.`) and a unit:
//! `250ms`, `1.5s`, `1h30m`. A bare `0` is zero. No spaces. Differences from
//! Go, both refusals: a negative duration (`-1s`; a timeout or an age cannot
//! be negative), and nothing longer than Go's maximum (about 292 years),
//! which Go refuses too. Precision is the nanosecond; digits of a fraction
//! past that are ignored, as Go does.

use std::fmt;
use std::time::Duration;

/// Why a duration was refused; prints the text and an example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationError {
    text: String,
    reason: Reason,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Reason {
    Empty,
    Negative,
    ExpectedNumber,
    MissingUnit,
    UnknownUnit(String),
    TooLong,
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid duration {:?}: ", self.text)?;
        match &self.reason {
            Reason::Empty => f.write_str("it is empty")?,
            Reason::Negative => f.write_str("it must not be negative")?,
            Reason::ExpectedNumber => f.write_str("expected a number")?,
            Reason::MissingUnit => f.write_str("a number needs a unit")?,
            Reason::UnknownUnit(unit) => write!(f, "unknown unit {unit:?}")?,
            Reason::TooLong => f.write_str("longer than 292 years")?,
        }
        f.write_str(" (write e.g. 250ms, 1.5s, 5m, 1h30m)")
    }
}

impl std::error::Error for DurationError {}

const NANOS_PER_SEC: u64 = 1_000_000_000;
/// Go's largest duration (`1<<63 - 1` ns).
const MAX_NANOS: u128 = i64::MAX as u128;

const GO_UNITS: [(&str, u64); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000), // U+00B5 micro sign
    ("μs", 1_000), // U+03BC Greek mu
    ("ms", 1_000_000),
    ("s", NANOS_PER_SEC),
    ("m", 60 * NANOS_PER_SEC),
    ("h", 3600 * NANOS_PER_SEC),
];
const DAY: (&str, u64) = ("d", 86_400 * NANOS_PER_SEC);

/// A Go duration (`time.ParseDuration`): `500ms`, `1.5s`, `1m30s`.
pub fn parse_go(text: &str) -> Result<Duration, DurationError> {
    parse_with(text, &|unit| {
        GO_UNITS.iter().find(|(name, _)| *name == unit).map(|u| u.1)
    })
}

/// A duration in the agent's config and flags: Go's grammar and units, and
/// `d` for days (`7d`).
pub fn parse_config(text: &str) -> Result<Duration, DurationError> {
    parse_with(text, &|unit| {
        GO_UNITS
            .iter()
            .chain([&DAY])
            .find(|(name, _)| *name == unit)
            .map(|u| u.1)
    })
}

fn parse_with(
    text: &str,
    unit_nanos: &dyn Fn(&str) -> Option<u64>,
) -> Result<Duration, DurationError> {
    let fail = |reason| DurationError {
        text: text.to_owned(),
        reason,
    };
    let mut rest = match text.as_bytes().first() {
        Some(b'-') => return Err(fail(Reason::Negative)),
        Some(b'+') => &text[1..],
        _ => text,
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(fail(Reason::Empty));
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let (whole, after_whole) = split_digits(rest);
        let (fraction, after_number) = match after_whole.strip_prefix('.') {
            Some(after_dot) => split_digits(after_dot),
            None => ("", after_whole),
        };
        if whole.is_empty() && fraction.is_empty() {
            return Err(fail(Reason::ExpectedNumber));
        }
        let unit_len = after_number
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(after_number.len());
        let unit = &after_number[..unit_len];
        if unit.is_empty() {
            return Err(fail(Reason::MissingUnit));
        }
        let nanos = unit_nanos(unit).ok_or_else(|| fail(Reason::UnknownUnit(unit.to_owned())))?;
        total = term_nanos(whole, fraction, nanos)
            .and_then(|term| total.checked_add(term))
            .filter(|total| *total <= MAX_NANOS)
            .ok_or_else(|| fail(Reason::TooLong))?;
        rest = &after_number[unit_len..];
    }
    let secs =
        u64::try_from(total / u128::from(NANOS_PER_SEC)).map_err(|_| fail(Reason::TooLong))?;
    let subsec = u32::try_from(total % u128::from(NANOS_PER_SEC))
        .expect("a remainder of a division by 10^9 fits u32");
    Ok(Duration::new(secs, subsec))
}

/// The leading ASCII digits of `text`, and the rest.
fn split_digits(text: &str) -> (&str, &str) {
    text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    )
}

/// `whole.fraction` units of `nanos` each, in nanoseconds (the fraction
/// truncated to the nanosecond); `None` past [`MAX_NANOS`].
fn term_nanos(whole: &str, fraction: &str, nanos: u64) -> Option<u128> {
    let nanos = u128::from(nanos);
    let mut value: u128 = 0;
    for digit in whole.bytes() {
        value = value
            .checked_mul(10)?
            .checked_add(u128::from(digit - b'0'))?;
        if value > MAX_NANOS {
            return None;
        }
    }
    let mut total = value.checked_mul(nanos)?;
    // The largest unit is under 10^14 ns, so fraction digits past the 19th
    // cannot add a nanosecond; ignoring them keeps the arithmetic in u128.
    let mut numerator: u128 = 0;
    let mut scale: u128 = 1;
    for digit in fraction.bytes().take(19) {
        numerator = numerator * 10 + u128::from(digit - b'0');
        scale *= 10;
    }
    total = total.checked_add(numerator * nanos / scale)?;
    (total <= MAX_NANOS).then_some(total)
}

/// `duration` in the largest unit that divides it exactly (`90m`, `250ms`,
/// `7d`), a spelling [`parse_config`] reads back to the same value.
pub fn format(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    let units = [
        ("d", DAY.1),
        ("h", 3600 * NANOS_PER_SEC),
        ("m", 60 * NANOS_PER_SEC),
        ("s", NANOS_PER_SEC),
        ("ms", 1_000_000),
        ("us", 1_000),
    ];
    for (unit, size) in units {
        let size = u128::from(size);
        if nanos != 0 && nanos.is_multiple_of(size) {
            return format!("{}{unit}", nanos / size);
        }
    }
    if nanos == 0 {
        "0s".to_owned()
    } else {
        format!("{nanos}ns")
    }
}

/// Config durations in serde: `#[serde(with = "manifests::duration::config")]`
/// on a `Duration` field reads and writes [`parse_config`]'s grammar.
pub mod config {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse_config(&text).map_err(serde::de::Error::custom)
    }

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format(*duration))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_as_go_does() {
        let ms = Duration::from_millis;
        for (text, want) in [
            ("500ms", ms(500)),
            ("1.5s", ms(1500)),
            ("2m", ms(120_000)),
            ("1h30m", ms(5_400_000)),
            ("1h1m1.5s", ms(3_661_500)),
            (".5s", ms(500)),
            ("1.s", ms(1000)),
            ("+5s", ms(5000)),
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("1us", Duration::from_micros(1)),
            ("1µs", Duration::from_micros(1)),
            ("1μs", Duration::from_micros(1)),
            ("3ns", Duration::from_nanos(3)),
            ("0.1234567891s", Duration::from_nanos(123_456_789)),
            (
                "9223372036854775807ns",
                Duration::from_nanos(i64::MAX as u64),
            ),
        ] {
            assert_eq!(parse_go(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn what_go_refuses_is_refused_naming_the_text() {
        for bad in [
            "",
            "5",
            "fast",
            "1.2.3s",
            ".s",
            "s",
            "1s ",
            " 1s",
            "1 s",
            "1d",
            "-1s",
            "+",
            "1e3s",
            "1S",
            "9223372036854775808ns",
            "2562048h",
            "99999999999999999999999h",
            "1..5s",
            "1.5.s",
        ] {
            let err = parse_go(bad).expect_err(bad);
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    /// The agent's old dial_timeout parser summed f64 seconds and panicked
    /// in `Duration::from_secs_f64` on a value validate let through.
    #[test]
    fn a_huge_dial_timeout_is_refused_not_a_panic() {
        for huge in [
            "99999999999999999999999h",
            "1e400h",
            "9999999999999999999.9h",
        ] {
            assert!(parse_go(huge).is_err(), "{huge}");
        }
    }

    #[test]
    fn config_durations_add_days() {
        assert_eq!(parse_config("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_config("1d12h"), Ok(Duration::from_secs(129_600)));
        assert_eq!(parse_config("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_go("2d").is_err());
    }

    #[test]
    fn format_round_trips() {
        for nanos in [
            0,
            7,
            1_000,
            250_000_000,
            1_000_000_000,
            60_000_000_000,
            5_400_000_000_000,
            86_400_000_000_000,
            90_000_000_000,
            1_500_000_000,
        ] {
            let d = Duration::from_nanos(nanos);
            assert_eq!(parse_config(&format(d)), Ok(d), "{}", format(d));
        }
        assert_eq!(format(Duration::from_secs(5400)), "90m");
        assert_eq!(format(Duration::from_millis(250)), "250ms");
    }

    #[derive(Debug, serde::Deserialize, serde::Serialize, PartialEq)]
    struct Section {
        #[serde(with = "super::config")]
        wait: Duration,
    }

    #[test]
    fn config_durations_read_and_write_through_serde() {
        let section: Section = toml::from_str("wait = \"1d1.5s\"").expect("valid duration");
        assert_eq!(section.wait, Duration::from_millis(86_401_500));
        let written = toml::to_string(&section).expect("serializes");
        assert_eq!(
            toml::from_str::<Section>(&written).expect("reads back"),
            section
        );
    }

    #[test]
    fn a_bad_config_duration_is_an_error_naming_the_text() {
        for bad in ["", "60", "1.2.3s", "-1s", "99999999999999999999s"] {
            let err = toml::from_str::<Section>(&format!("wait = {bad:?}")).expect_err(bad);
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }
}
