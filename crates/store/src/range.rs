//! Byte ranges of an object, with the semantics of an HTTP `Range: bytes=...` header
//! (RFC 9110, section 14.1.2): `start-end` (inclusive), `start-` and the suffix `-n`.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use crate::error::Error;

/// One byte range, as a client asks for it; [`ByteRange::resolve`] turns it into offsets
/// once the object's size is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `start-end`: bytes `start` to `end`, both included; an `end` past the object is cut to
    /// its last byte.
    FromTo { start: u64, end: u64 },
    /// `start-`: from `start` to the end of the object.
    From { start: u64 },
    /// `-len`: the last `len` bytes (all of them if the object is shorter).
    Suffix { len: u64 },
}

impl ByteRange {
    /// Parses the value of an HTTP `Range` header, `bytes=<range>`. Several ranges
    /// (`bytes=0-1,5-6`) are refused as malformed: the store serves one range, and HTTP
    /// allows a server to ignore a `Range` header and send the whole object.
    pub fn parse_header(value: &str) -> Result<ByteRange, Error> {
        let malformed = |reason| Error::MalformedRange {
            input: value.to_owned(),
            reason,
        };
        let spec = value
            .trim()
            .strip_prefix("bytes=")
            .ok_or_else(|| malformed("the unit is not `bytes=`"))?;
        if spec.contains(',') {
            return Err(malformed("more than one range"));
        }
        spec.trim().parse().map_err(|e| match e {
            Error::MalformedRange { reason, .. } => malformed(reason),
            other => other,
        })
    }

    /// The half-open offsets this range selects in an object of `size` bytes, or `None` if
    /// it selects no byte (HTTP 416).
    pub fn resolve(self, size: u64) -> Option<Range<u64>> {
        match self {
            ByteRange::FromTo { start, end } if start < size => {
                Some(start..end.saturating_add(1).min(size))
            }
            ByteRange::From { start } if start < size => Some(start..size),
            ByteRange::Suffix { len } if len > 0 && size > 0 => Some(size - len.min(size)..size),
            _ => None,
        }
    }
}

impl FromStr for ByteRange {
    type Err = Error;

    /// Parses one range without its unit: `0-99`, `100-`, `-50`.
    fn from_str(s: &str) -> Result<ByteRange, Error> {
        let malformed = |reason| Error::MalformedRange {
            input: s.to_owned(),
            reason,
        };
        let number = |t: &str| {
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(malformed("a bound is not a decimal number"));
            }
            t.parse::<u64>()
                .map_err(|_| malformed("a bound does not fit in 64 bits"))
        };
        let (first, last) = s.split_once('-').ok_or_else(|| malformed("no `-`"))?;
        match (first.is_empty(), last.is_empty()) {
            (true, true) => Err(malformed("no bounds")),
            (true, false) => Ok(ByteRange::Suffix { len: number(last)? }),
            (false, true) => Ok(ByteRange::From {
                start: number(first)?,
            }),
            (false, false) => {
                let (start, end) = (number(first)?, number(last)?);
                if end < start {
                    return Err(malformed("the end is before the start"));
                }
                Ok(ByteRange::FromTo { start, end })
            }
        }
    }
}

impl fmt::Display for ByteRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ByteRange::FromTo { start, end } => write!(f, "{start}-{end}"),
            ByteRange::From { start } => write!(f, "{start}-"),
            ByteRange::Suffix { len } => write!(f, "-{len}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(s: &str) -> ByteRange {
        s.parse().unwrap()
    }

    #[test]
    fn parses_all_three_forms() {
        assert_eq!(r("0-99"), ByteRange::FromTo { start: 0, end: 99 });
        assert_eq!(r("5-"), ByteRange::From { start: 5 });
        assert_eq!(r("-7"), ByteRange::Suffix { len: 7 });
        assert_eq!(
            ByteRange::parse_header("bytes=3-4").unwrap(),
            ByteRange::FromTo { start: 3, end: 4 }
        );
    }

    #[test]
    fn refuses_malformed_ranges() {
        for (bad, why) in [
            ("", "no `-`"),
            ("-", "no bounds"),
            ("a-1", "decimal"),
            ("+1-2", "decimal"),
            ("1--2", "decimal"),
            ("5-3", "before the start"),
            ("99999999999999999999-", "64 bits"),
        ] {
            let err = bad.parse::<ByteRange>().unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
        for (bad, why) in [
            ("0-1", "unit"),
            ("items=0-1", "unit"),
            ("bytes=0-1,3-4", "more than one"),
        ] {
            let err = ByteRange::parse_header(bad).unwrap_err().to_string();
            assert!(err.contains(why) && err.contains(bad), "{bad}: {err}");
        }
    }

    #[test]
    fn resolves_like_http() {
        assert_eq!(r("0-3").resolve(10), Some(0..4));
        assert_eq!(r("8-100").resolve(10), Some(8..10));
        assert_eq!(r("9-9").resolve(10), Some(9..10));
        assert_eq!(r("10-12").resolve(10), None);
        assert_eq!(r("3-").resolve(10), Some(3..10));
        assert_eq!(r("10-").resolve(10), None);
        assert_eq!(r("-3").resolve(10), Some(7..10));
        assert_eq!(r("-30").resolve(10), Some(0..10));
        assert_eq!(r("-0").resolve(10), None);
        // Nothing of an empty object can be selected.
        assert_eq!(r("0-").resolve(0), None);
        assert_eq!(r("-1").resolve(0), None);
        assert_eq!(r("0-0").resolve(0), None);
        assert_eq!(
            r(&format!("0-{}", u64::MAX)).resolve(u64::MAX),
            Some(0..u64::MAX)
        );
    }

    proptest! {
        #[test]
        fn display_round_trips_and_resolution_stays_inside(
            a in 0u64..1000, b in 0u64..1000, size in 0u64..1000, form in 0u8..3,
        ) {
            let range = match form {
                0 => ByteRange::FromTo { start: a.min(b), end: a.max(b) },
                1 => ByteRange::From { start: a },
                _ => ByteRange::Suffix { len: a },
            };
            prop_assert_eq!(range.to_string().parse::<ByteRange>().unwrap(), range);
            if let Some(offsets) = range.resolve(size) {
                prop_assert!(offsets.start < offsets.end && offsets.end <= size);
            }
        }
    }
}
