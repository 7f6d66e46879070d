//! Parses the human durations used by timeouts in the config file:
//! `"250ms"`, `"10s"`, `"5m"`, `"1h"`, `"1d"`.
//!
//! A unit is always required: a bare `10` could mean seconds or milliseconds
//! and a wrong guess turns a 10-second timeout into a 10-millisecond one.
//! [`crate::validate`] attaches the field path to the message returned here.

use std::time::Duration;

/// The longest duration accepted anywhere in the config. Keeps
/// `Instant::now() + d` from overflowing in the proxy and pool.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// The suffixes understood by [`parse_duration`], with their length in
/// milliseconds. `ms` must come before `m` and `s` so it is matched first.
const UNITS: [(&str, u64); 5] = [
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
];

/// The hint appended to every duration error.
const EXAMPLE: &str = "write a whole number followed by ms, s, m, h or d, e.g. \"10s\"";

/// Parses `<digits><unit>` (no sign, no fraction, no spaces inside) into a
/// [`Duration`] no longer than [`MAX_DURATION`].
///
/// Leading and trailing spaces are ignored. Zero (`"0s"`) is accepted here;
/// callers that need a positive value check that themselves.
///
/// # Errors
/// A message (without the field path) when the text has no unit, an unknown
/// unit, no digits, or a value above [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(format!("`{text}` is not a duration; {EXAMPLE}"));
    }
    if unit.is_empty() {
        return Err(format!("`{text}` needs a unit; {EXAMPLE}"));
    }
    let Some(&(_, unit_ms)) = UNITS.iter().find(|(name, _)| *name == unit) else {
        return Err(format!("`{unit}` is not a duration unit; {EXAMPLE}"));
    };
    let too_large = || format!("`{text}` is too long; the maximum is 365d");
    let count: u64 = digits.parse().map_err(|_| too_large())?;
    let millis = count.checked_mul(unit_ms).ok_or_else(too_large)?;
    let duration = Duration::from_millis(millis);
    if duration > MAX_DURATION {
        return Err(too_large());
    }
    Ok(duration)
}

/// Formats a duration the way the config file writes it, choosing the
/// largest unit that represents it exactly (`600s` → `"10m"`).
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    UNITS
        .iter()
        .rev()
        .find(|(_, unit_ms)| millis % u128::from(*unit_ms) == 0 && millis > 0)
        .map(|(name, unit_ms)| format!("{}{name}", millis / u128::from(*unit_ms)))
        .unwrap_or_else(|| format!("{millis}ms"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration(" 0s "), Ok(Duration::ZERO));
        assert_eq!(parse_duration("365d"), Ok(MAX_DURATION));
    }

    #[test]
    fn unit_is_required() {
        let message = parse_duration("10").unwrap_err();
        assert!(message.contains("needs a unit"), "{message}");
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in [
            "", "s", "-1s", "1.5s", "10 s", "10sec", "1w", "10S", "ms10", "1h30m",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn rejects_overflow_and_huge_values() {
        assert!(parse_duration("366d").is_err());
        assert!(parse_duration("18446744073709551615d").is_err());
        assert!(parse_duration("99999999999999999999999999ms").is_err());
    }

    #[test]
    fn formats_with_the_largest_exact_unit() {
        assert_eq!(format_duration(Duration::from_secs(600)), "10m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(86_400)), "1d");
        assert_eq!(format_duration(Duration::ZERO), "0ms");
    }

    proptest! {
        #[test]
        fn never_panics(text in ".{0,24}") {
            let _ = parse_duration(&text);
        }

        #[test]
        fn format_then_parse_round_trips(millis in 0u64..=MAX_DURATION.as_millis() as u64) {
            let duration = Duration::from_millis(millis);
            prop_assert_eq!(parse_duration(&format_duration(duration)), Ok(duration));
        }
    }
}
