//! How a zvm key becomes the last segment of an S3 key, keeping the order and prefixes of
//! keys, so that an S3 listing (in byte order, from a `start-after`) is a zvm listing.
//!
//! A zvm key is any UTF-8 without NUL; the `object_store` crate's paths refuse ASCII control
//! characters, empty segments (`a//b`, a leading or trailing `/`) and the segments `.` and
//! `..`; and SeaweedFS's S3 gateway turns `\` into `/` (a key `a\b` lands as the file `b` in
//! a directory `a`, and a listing then returns `a/b`). So the key is encoded into one
//! segment: every byte stands for itself except
//!
//! | bytes                 | become                          |
//! |-----------------------|---------------------------------|
//! | 0x01..=0x20 (` `)     | ` ` then `A`..=`` ` `` (0x41 + byte - 1) |
//! | `.` and `/`           | `.0` and `.1`                   |
//! | `[` and `\`           | `[0` and `[1`                   |
//! | `~` and DEL (0x7f)    | `~0` and `~1`                   |
//!
//! The code of each byte is prefix-free, and codes sort as their bytes do: the bytes of a
//! group are adjacent, and the group's escape character (the group's first code byte) sits
//! where the group does among the bytes left alone. So the encoding keeps byte order and
//! prefixes exactly: `a < b` iff `enc(a) < enc(b)`, and `k` starts with `p` iff `enc(k)`
//! starts with `enc(p)`. Bytes of multi-byte UTF-8 characters stand for themselves, so the
//! result is UTF-8. Keys of plain names (`logs/2024-01.txt` is `logs.12024-01.0txt`) stay
//! readable in the bucket.
//!
//! Not handled: SeaweedFS's listings return U+0085 and U+2028 in a key as a line feed (so
//! a listing meeting such a key fails as corrupt) and leave out keys holding U+FFFE; such
//! objects are stored and read back whole, but break or escape listings.

/// The escape of control characters and the space.
const SPACE: u8 = b' ';
/// The escape of `.` and `/`.
const DOT: u8 = b'.';
/// The escape of `[` and `\`.
const BRACKET: u8 = b'[';
/// The escape of `~` and DEL.
const TILDE: u8 = b'~';

/// Encodes a key (which has no NUL) as one path segment.
pub(crate) fn encode(key: &str) -> String {
    let mut out = Vec::with_capacity(key.len() + key.len() / 8);
    for &b in key.as_bytes() {
        match b {
            0x01..=0x20 => out.extend([SPACE, 0x40 + b]),
            b'.' => out.extend([DOT, b'0']),
            b'/' => out.extend([DOT, b'1']),
            b'[' => out.extend([BRACKET, b'0']),
            b'\\' => out.extend([BRACKET, b'1']),
            b'~' => out.extend([TILDE, b'0']),
            0x7f => out.extend([TILDE, b'1']),
            _ => out.push(b),
        }
    }
    String::from_utf8(out).expect("only ASCII bytes are inserted, whole UTF-8 sequences kept")
}

/// Decodes a segment [`encode`] made; `None` if it cannot have come from it.
pub(crate) fn decode(segment: &str) -> Option<String> {
    let mut out = Vec::with_capacity(segment.len());
    let mut bytes = segment.bytes();
    while let Some(b) = bytes.next() {
        let decoded = match b {
            SPACE => match bytes.next()? {
                c @ 0x41..=0x60 => c - 0x40,
                _ => return None,
            },
            DOT => match bytes.next()? {
                b'0' => b'.',
                b'1' => b'/',
                _ => return None,
            },
            BRACKET => match bytes.next()? {
                b'0' => b'[',
                b'1' => b'\\',
                _ => return None,
            },
            TILDE => match bytes.next()? {
                b'0' => b'~',
                b'1' => 0x7f,
                _ => return None,
            },
            0x00..=0x1f | b'/' | b'\\' | 0x7f => return None,
            _ => b,
        };
        out.push(decoded);
    }
    String::from_utf8(out).ok().filter(|k| !k.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_keys_stay_readable_and_awkward_ones_become_one_segment() {
        assert_eq!(encode("logs/2024-01.txt"), "logs.12024-01.0txt");
        assert_eq!(encode("a b"), "a `b");
        assert_eq!(encode("."), ".0");
        assert_eq!(encode("//"), ".1.1");
        assert_eq!(encode("\u{1}~\u{7f}"), " A~0~1");
        assert_eq!(encode("C:\\a[1]"), "C:[1a[01]");
        assert_eq!(encode("Zoë"), "Zoë");
        for key in [
            ".", "..", "/", "a//b", "/x/", "\t\n", "~", "\u{7f}", "Zoë/ü", "\\", "[\\]",
        ] {
            let e = encode(key);
            object_store::path::Path::parse(format!("p/{e}")).unwrap();
            assert!(!e.contains('/') && !e.contains('\\'), "{e}");
            assert_eq!(decode(&e).as_deref(), Some(key));
        }
        for bad in ["", " ", " z", ".2", "~", "a/b", "\u{1}", "[", "[2", "a\\b"] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn the_encoding_keeps_order_and_prefixes(
            a in "[\u{1}-\u{7f}\u{e9}\u{10000}]{1,12}",
            b in "[\u{1}-\u{7f}\u{e9}\u{10000}]{1,12}",
        ) {
            let (ea, eb) = (encode(&a), encode(&b));
            prop_assert_eq!(a.cmp(&b), ea.cmp(&eb));
            prop_assert_eq!(a.starts_with(&b), ea.starts_with(&eb));
            prop_assert_eq!(decode(&ea), Some(a.clone()));
            let path = format!("p/{ea}");
            prop_assert!(object_store::path::Path::parse(&path).is_ok());
        }
    }
}
