//! Parses byte sizes such as `max_message_size`: a TOML integer (bytes) or a
//! string with a binary suffix, `"8KiB"`, `"256MiB"`, `"1GiB"`.
//!
//! Decimal suffixes (`KB`, `MB`) are refused rather than guessed: some tools
//! read them as powers of 1000, others as 1024.

/// Binary suffixes and their multipliers. `B` and no suffix mean bytes.
const UNITS: [(&str, u64); 5] = [
    ("", 1),
    ("B", 1),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
];

/// The hint appended to every size error.
const EXAMPLE: &str =
    "write bytes as an integer or a whole number with KiB, MiB or GiB, e.g. \"256MiB\"";

/// Parses `<digits>[B|KiB|MiB|GiB]`, ignoring surrounding spaces and one
/// optional space before the suffix.
///
/// # Errors
/// A message (without the field path) for missing digits, an unknown or
/// decimal suffix, or a value that does not fit in `usize`.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    let unit = unit.strip_prefix(' ').unwrap_or(unit);
    if digits.is_empty() {
        return Err(format!("`{text}` is not a size; {EXAMPLE}"));
    }
    let Some(&(_, multiplier)) = UNITS.iter().find(|(name, _)| *name == unit) else {
        return Err(format!("`{unit}` is not a size unit; {EXAMPLE}"));
    };
    let too_large = || format!("`{text}` is too large");
    let count: u64 = digits.parse().map_err(|_| too_large())?;
    let bytes = count.checked_mul(multiplier).ok_or_else(too_large)?;
    usize::try_from(bytes).map_err(|_| too_large())
}

/// Converts a TOML integer byte count, refusing negative values.
///
/// # Errors
/// A message when the value is negative or does not fit in `usize`.
pub fn size_from_integer(value: i64) -> Result<usize, String> {
    usize::try_from(value).map_err(|_| format!("{value} is not a byte count; {EXAMPLE}"))
}

/// Formats a byte count with the largest binary suffix that is exact.
pub fn format_size(bytes: usize) -> String {
    let bytes = bytes as u64;
    UNITS
        .iter()
        .rev()
        .find(|(_, multiplier)| bytes > 0 && bytes % multiplier == 0)
        .map(|(name, multiplier)| format!("{}{name}", bytes / multiplier))
        .unwrap_or_else(|| bytes.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn binary_suffixes() {
        assert_eq!(parse_size("8KiB"), Ok(8 * 1024));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4096B"), Ok(4096));
    }

    #[test]
    fn rejects_decimal_and_unknown_suffixes() {
        for bad in [
            "",
            "MiB",
            "10MB",
            "10kb",
            "1.5MiB",
            "-1",
            "10 MiB extra",
            "1TiB",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(parse_size("10MB").unwrap_err().contains("`MB`"));
    }

    #[test]
    fn rejects_overflow() {
        assert!(parse_size("99999999999999999999GiB").is_err());
        assert!(parse_size("17179869184GiB").is_err());
    }

    #[test]
    fn integers_must_not_be_negative() {
        assert_eq!(size_from_integer(8192), Ok(8192));
        assert!(size_from_integer(-1).is_err());
    }

    #[test]
    fn formats_with_the_largest_exact_suffix() {
        assert_eq!(format_size(256 << 20), "256MiB");
        assert_eq!(format_size(1000), "1000B");
        assert_eq!(format_size(0), "0");
    }

    proptest! {
        #[test]
        fn never_panics(text in ".{0,24}") {
            let _ = parse_size(&text);
        }
    }
}
