//! The small value languages manifests share: sizes (`"64 MiB"`), durations (`"1500ms"`) and
//! UTC instants (`2024-01-01T00:00:00Z`), parsed and rendered.
//!
//! They live apart from both manifest formats because the TOML format, the legacy format and
//! the canonical rendering must agree on them exactly: what `canonical_toml` writes has to parse
//! back to the same number. Errors here are bare reasons ("unknown unit ..."); the caller knows
//! which key was at fault and prefixes it.

use std::time::Duration;

use toml::value::{Datetime, Offset};

/// Size units accepted after a number, with their factor in bytes. Decimal units are powers
/// of 1000 and binary ones powers of 1024, as their names say, so nobody has to guess.
const SIZE_UNITS: [(&str, u64); 9] = [
    ("B", 1),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
];

/// Duration units accepted after a number, with their length in nanoseconds.
const DURATION_UNITS: [(&str, u64); 6] = [
    ("ns", 1),
    ("us", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60 * 1_000_000_000),
    ("h", 3_600 * 1_000_000_000),
];

pub(crate) const NANOS_PER_SEC: u64 = 1_000_000_000;
const SECS_PER_DAY: i64 = 86_400;

fn unit_list(units: &[(&str, u64)]) -> String {
    units
        .iter()
        .map(|(u, _)| format!("`{u}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Splits `"64 MiB"` into `64` and `"MiB"`; the space is optional. `example` shows the
/// expected form in messages.
fn split_number<'t>(text: &'t str, example: &str) -> Result<(u64, &'t str), String> {
    let trimmed = text.trim();
    let digits = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    if digits == 0 {
        return Err(format!(
            "`{text}` does not start with a whole number, expected something like `{example}`"
        ));
    }
    if trimmed[digits..].starts_with(['.', ',']) {
        return Err(format!(
            "`{text}` is not a whole number, use a smaller unit instead of a fraction"
        ));
    }
    let number = trimmed[..digits]
        .parse::<u64>()
        .map_err(|_| format!("`{text}` is too large"))?;
    Ok((number, trimmed[digits..].trim_start()))
}

/// Parses a size: a whole number, optionally followed (with or without a space) by one of
/// the units `B`, `KB`, `MB`, `GB`, `TB` (powers of 1000) or `KiB`, `MiB`, `GiB`, `TiB` (powers
/// of 1024): `"64 MiB"`, `"1500KB"`, `"4096"`. A bare number is bytes. The manifest formats
/// and the CLI's flags share it; the error is a bare reason for the caller to prefix.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let (number, unit) = split_number(text, "64 MiB")?;
    let factor = if unit.is_empty() {
        1
    } else {
        SIZE_UNITS
            .iter()
            .find(|(u, _)| *u == unit)
            .map(|(_, f)| *f)
            .ok_or_else(|| {
                format!(
                    "unknown size unit `{unit}` in `{text}`, expected one of {}",
                    unit_list(&SIZE_UNITS)
                )
            })?
    };
    number.checked_mul(factor).ok_or_else(|| {
        format!(
            "`{text}` is too large, the largest size is {} bytes",
            u64::MAX
        )
    })
}

/// Parses a duration: a whole number followed (with or without a space) by one of the units
/// `ns`, `us`, `ms`, `s`, `m`, `h`: `"1500ms"`, `"2m"`. The unit is required because a bare
/// integer means different units for different keys. The error is a bare reason.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = split_number(text, "10s")?;
    if unit.is_empty() {
        return Err(format!(
            "`{text}` has no unit, expected one of {}",
            unit_list(&DURATION_UNITS)
        ));
    }
    let nanos_per_unit = DURATION_UNITS
        .iter()
        .find(|(u, _)| *u == unit)
        .map(|(_, n)| *n)
        .ok_or_else(|| {
            format!(
                "unknown duration unit `{unit}` in `{text}`, expected one of {}",
                unit_list(&DURATION_UNITS)
            )
        })?;
    // Whole-second units multiply seconds rather than nanoseconds so that long timeouts
    // ("5000000000h") do not overflow a u64 of nanoseconds.
    if nanos_per_unit >= NANOS_PER_SEC {
        let secs = number
            .checked_mul(nanos_per_unit / NANOS_PER_SEC)
            .ok_or_else(|| format!("`{text}` is too large"))?;
        Ok(Duration::from_secs(secs))
    } else {
        // number * nanos_per_unit < 2^64 * 10^6 fits in u128 and Duration::from_nanos only
        // takes u64, so split into seconds and nanoseconds by hand.
        let total = u128::from(number) * u128::from(nanos_per_unit);
        let secs = u64::try_from(total / u128::from(NANOS_PER_SEC))
            .map_err(|_| format!("`{text}` is too large"))?;
        let nanos = (total % u128::from(NANOS_PER_SEC)) as u32;
        Ok(Duration::new(secs, nanos))
    }
}

/// Renders a duration as `"<n><unit>"` in the coarsest of `s`, `ms`, `us`, `ns` that
/// represents it exactly, so that [`parse_duration`] gives back the same value.
pub(crate) fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    for (unit, per) in DURATION_UNITS.iter().rev() {
        // Minutes and hours would be exact too, but seconds are the plainest whole unit.
        if *unit == "m" || *unit == "h" {
            continue;
        }
        let per = u128::from(*per);
        if nanos.is_multiple_of(per) {
            return format!("{}{unit}", nanos / per);
        }
    }
    format!("{nanos}ns")
}

/// Converts a TOML datetime to nanoseconds since the Unix epoch. Only full instants are
/// meaningful for a clock, so a date, time and offset are all required.
pub(crate) fn datetime_to_unix_nanos(dt: &Datetime) -> Result<u64, String> {
    let (Some(date), Some(time), Some(offset)) = (dt.date, dt.time, dt.offset) else {
        return Err(format!(
            "`{dt}` is not a full UTC instant, expected a date, time and offset such as `2024-01-01T00:00:00Z`"
        ));
    };
    let offset_minutes = match offset {
        Offset::Z => 0,
        Offset::Custom { minutes } => i64::from(minutes),
    };
    let days = days_from_civil(
        i64::from(date.year),
        i64::from(date.month),
        i64::from(date.day),
    );
    let secs = days * SECS_PER_DAY
        + i64::from(time.hour) * 3_600
        + i64::from(time.minute) * 60
        + i64::from(time.second.unwrap_or(0))
        - offset_minutes * 60;
    let out_of_range = || {
        format!(
            "`{dt}` is out of range, expected an instant from {} to {}",
            format_unix_nanos(0),
            format_unix_nanos(u64::MAX)
        )
    };
    let secs = u64::try_from(secs).map_err(|_| out_of_range())?;
    secs.checked_mul(NANOS_PER_SEC)
        .and_then(|n| n.checked_add(u64::from(time.nanosecond.unwrap_or(0))))
        .ok_or_else(out_of_range)
}

/// Parses an RFC 3339 instant written as a string (`"2024-01-01T00:00:00Z"`).
pub(crate) fn parse_instant(text: &str) -> Result<u64, String> {
    let dt: Datetime = text.parse().map_err(|_| {
        format!("`{text}` is not an RFC 3339 time, expected something like `2024-01-01T00:00:00Z`")
    })?;
    datetime_to_unix_nanos(&dt)
}

/// Renders nanoseconds since the Unix epoch as an RFC 3339 UTC instant, with only as many
/// fraction digits as needed. The result is also a valid TOML offset datetime literal.
pub(crate) fn format_unix_nanos(ns: u64) -> String {
    let secs = ns / NANOS_PER_SEC;
    let frac = ns % NANOS_PER_SEC;
    // u64 seconds / 86400 fits in i64 comfortably.
    let days = (secs / SECS_PER_DAY as u64) as i64;
    let rem = secs % SECS_PER_DAY as u64;
    let (y, m, d) = civil_from_days(days);
    let mut out = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    );
    if frac != 0 {
        let digits = format!("{frac:09}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64 MiB"), Ok(64 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("2 KB"), Ok(2_000));
        assert_eq!(parse_size("3 GB"), Ok(3_000_000_000));
        assert_eq!(parse_size("1 TiB"), Ok(1 << 40));
        assert_eq!(parse_size("7 B"), Ok(7));
        assert_eq!(parse_size(" 1 GiB "), Ok(1 << 30));
    }

    #[test]
    fn bad_sizes() {
        assert_eq!(
            parse_size("64 mb").unwrap_err(),
            "unknown size unit `mb` in `64 mb`, expected one of `B`, `KB`, `MB`, `GB`, `TB`, \
             `KiB`, `MiB`, `GiB`, `TiB`"
        );
        assert!(
            parse_size("MiB")
                .unwrap_err()
                .contains("does not start with a whole number")
        );
        assert!(
            parse_size("1.5 GiB")
                .unwrap_err()
                .contains("not a whole number")
        );
        assert!(parse_size("-1").is_err());
        assert!(parse_size("").is_err());
        assert!(
            parse_size("16777216 TiB")
                .unwrap_err()
                .contains("too large")
        );
        assert!(
            parse_size("99999999999999999999")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1 h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1us"), Ok(Duration::from_micros(1)));
        assert_eq!(parse_duration("7ns"), Ok(Duration::from_nanos(7)));
        assert_eq!(
            parse_duration(&format!("{}us", u64::MAX)),
            Ok(Duration::from_micros(u64::MAX))
        );
        assert!(parse_duration("10").unwrap_err().contains("has no unit"));
        assert!(
            parse_duration("10 sec")
                .unwrap_err()
                .contains("unknown duration unit `sec`")
        );
        assert!(
            parse_duration(&format!("{}h", u64::MAX))
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn durations_render_exactly() {
        for d in [
            Duration::from_secs(60),
            Duration::from_millis(1500),
            Duration::from_micros(3),
            Duration::from_nanos(1_000_000_001),
            Duration::from_micros(u64::MAX),
        ] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{d:?}");
        }
        assert_eq!(format_duration(Duration::from_secs(120)), "120s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn instants() {
        assert_eq!(parse_instant("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_instant("2024-01-01T00:00:00Z"),
            Ok(1_704_067_200 * NANOS_PER_SEC)
        );
        assert_eq!(
            parse_instant("2024-01-01T01:00:00.25+01:00"),
            Ok(1_704_067_200 * NANOS_PER_SEC + 250_000_000)
        );
        assert_eq!(
            parse_instant("2000-02-29T12:00:00Z"),
            Ok(951_825_600 * NANOS_PER_SEC)
        );
        assert!(
            parse_instant("1969-12-31T23:59:59Z")
                .unwrap_err()
                .contains("out of range")
        );
        assert!(
            parse_instant("2024-01-01")
                .unwrap_err()
                .contains("not a full UTC instant")
        );
        assert!(
            parse_instant("yesterday")
                .unwrap_err()
                .contains("not an RFC 3339 time")
        );
    }

    #[test]
    fn instants_render_and_parse_back() {
        assert_eq!(format_unix_nanos(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            format_unix_nanos(1_704_067_200 * NANOS_PER_SEC + 5_000),
            "2024-01-01T00:00:00.000005Z"
        );
        assert_eq!(
            format_unix_nanos(u64::MAX),
            "2554-07-21T23:34:33.709551615Z"
        );
        for ns in [
            0,
            1,
            951_825_600 * NANOS_PER_SEC,
            u64::MAX,
            u64::MAX - 999_999_999,
        ] {
            assert_eq!(parse_instant(&format_unix_nanos(ns)), Ok(ns), "{ns}");
        }
    }
}
