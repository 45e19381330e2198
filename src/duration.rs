//! Human durations as operators write them: `90s`, `30m`, `12h`, `1h30m`, `2d`.
//!
//! One syntax for every flag and config field, so `--lifetime 30m` on the command line
//! and `lifetime = "30m"` in the config mean the same thing. A bare number is refused
//! on purpose: `lifetime = "3600"` is ambiguous to a reader (seconds? minutes?), and so
//! is a repeated unit: `1h1h` is more likely a slip than a way of writing `2h`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseDurationError {
    #[error("empty duration; write e.g. 90s, 30m, 12h or 1h30m")]
    Empty,
    #[error("{text:?} has no unit; {advice} (units: ms, s, m, h, d)", text = .0, advice = unit_advice(.0))]
    MissingUnit(String),
    #[error("{input:?}: unknown unit {unit:?} (units: ms, s, m, h, d)")]
    UnknownUnit { input: String, unit: String },
    #[error("{0:?} is not a duration; write e.g. 90s, 30m, 12h or 1h30m")]
    Invalid(String),
    #[error("{0:?} is too large")]
    Overflow(String),
    #[error("{input:?} gives the unit {unit:?} twice; write each unit once, e.g. 1h30m")]
    RepeatedUnit { input: String, unit: String },
}

/// What to write instead of a number without a unit. A bare number is most often
/// seconds (`3600`): offer that, and the same span in larger units (`1h`), rather than
/// reading the digits as minutes (3600m is 60 hours).
fn unit_advice(text: &str) -> String {
    match text.parse::<u64>() {
        Ok(n) => {
            let readable = format(Duration::from_secs(n));
            if readable == format!("{n}s") {
                format!("for seconds write {n}s")
            } else {
                format!("for seconds write {n}s or {readable}")
            }
        }
        // A trailing number after other parts (`1h30`).
        Err(_) => format!("write e.g. {text}s or {text}m"),
    }
}

/// Parses `90s`, `30m`, `12h`, `1h30m`, `500ms`, `2d` (whitespace between parts allowed).
pub fn parse(input: &str) -> Result<Duration, ParseDurationError> {
    let text = input.trim();
    if text.is_empty() {
        return Err(ParseDurationError::Empty);
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseDurationError::MissingUnit(text.to_owned()));
    }
    let mut total = Duration::ZERO;
    // Units met so far, by their size (`h` and `hr` are one unit).
    let mut seen: Vec<u64> = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(ParseDurationError::Invalid(input.to_owned()));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| ParseDurationError::Overflow(input.to_owned()))?;
        rest = rest[digits..].trim_start();
        let unit_len = rest.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
        let unit = &rest[..unit_len];
        if unit.is_empty() && !rest.is_empty() {
            return Err(ParseDurationError::Invalid(input.to_owned()));
        }
        rest = rest[unit_len..].trim_start();
        let millis_per_unit: u64 = match unit {
            "ms" => 1,
            "s" | "sec" | "secs" => 1_000,
            "m" | "min" | "mins" => 60_000,
            "h" | "hr" | "hrs" => 3_600_000,
            "d" | "day" | "days" => 86_400_000,
            "" => return Err(ParseDurationError::MissingUnit(input.trim().to_owned())),
            other => {
                return Err(ParseDurationError::UnknownUnit {
                    input: input.to_owned(),
                    unit: other.to_owned(),
                });
            }
        };
        if seen.contains(&millis_per_unit) {
            return Err(ParseDurationError::RepeatedUnit {
                input: input.trim().to_owned(),
                unit: unit.to_owned(),
            });
        }
        seen.push(millis_per_unit);
        let millis = number
            .checked_mul(millis_per_unit)
            .ok_or_else(|| ParseDurationError::Overflow(input.to_owned()))?;
        total = total
            .checked_add(Duration::from_millis(millis))
            .ok_or_else(|| ParseDurationError::Overflow(input.to_owned()))?;
    }
    Ok(total)
}

/// Formats a duration the way [`parse`] reads it, largest units first: `1h30m`, `45s`.
pub fn format(duration: Duration) -> String {
    let mut secs = duration.as_secs();
    let millis = duration.subsec_millis();
    if secs == 0 {
        // "0s", not "0ms": a zero given as `0s` reads back as written.
        return if millis == 0 {
            "0s".to_owned()
        } else {
            format!("{millis}ms")
        };
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

/// A duration parsed from human syntax, for clap and serde.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = ParseDurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s).map(HumanDuration)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms() {
        assert_eq!(parse("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse("12h"), Ok(Duration::from_secs(43200)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("1h 30m 5s"), Ok(Duration::from_secs(5405)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse(" 5m "), Ok(Duration::from_secs(300)));
    }

    #[test]
    fn refuses_what_a_reader_could_misread() {
        assert_eq!(parse(""), Err(ParseDurationError::Empty));
        assert!(matches!(
            parse("3600"),
            Err(ParseDurationError::MissingUnit(_))
        ));
        assert!(matches!(
            parse("5 minutes"),
            Err(ParseDurationError::UnknownUnit { .. })
        ));
        assert!(matches!(parse("-5m"), Err(ParseDurationError::Invalid(_))));
        assert!(matches!(parse("1.5h"), Err(ParseDurationError::Invalid(_))));
        assert!(matches!(
            parse("1h30"),
            Err(ParseDurationError::MissingUnit(_))
        ));
        assert!(matches!(
            parse("99999999999999999999h"),
            Err(ParseDurationError::Overflow(_))
        ));
        for repeated in ["1h1h", "1h 30m 1hr", "5s10sec", "1ms1ms"] {
            assert!(
                matches!(
                    parse(repeated),
                    Err(ParseDurationError::RepeatedUnit { .. })
                ),
                "{repeated}"
            );
        }
        assert_eq!(
            parse("1h1h").unwrap_err().to_string(),
            "\"1h1h\" gives the unit \"h\" twice; write each unit once, e.g. 1h30m"
        );
    }

    #[test]
    fn a_bare_number_is_offered_as_seconds() {
        let message = |s: &str| parse(s).unwrap_err().to_string();
        assert_eq!(
            message("3600"),
            "\"3600\" has no unit; for seconds write 3600s or 1h (units: ms, s, m, h, d)"
        );
        assert!(message("90").contains("for seconds write 90s or 1m30s"));
        assert!(message("45").contains("for seconds write 45s ("));
        assert!(message("1h30").contains("write e.g. 1h30s or 1h30m"));
        assert_eq!(format(Duration::ZERO), "0s");
    }

    #[test]
    fn format_round_trips() {
        for secs in [1, 59, 60, 61, 3599, 3600, 5400, 43200, 90061] {
            let d = Duration::from_secs(secs);
            assert_eq!(parse(&format(d)), Ok(d), "{}", format(d));
        }
        assert_eq!(format(Duration::from_secs(5400)), "1h30m");
    }
}
