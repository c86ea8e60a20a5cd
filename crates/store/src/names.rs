//! Bucket names and object keys: what the store accepts, and how each becomes a file name.
//!
//! A bucket name that passes [`validate_bucket`] is used as a directory name as it is: the S3
//! rules already rule out `/`, NUL, `.` and `..` (a name starts and ends with a letter or
//! digit). An object key is any UTF-8 string, so it never becomes a path itself: its file
//! name is the BLAKE3 hash of the key in hex ([`object_file_name`]), and the key is kept
//! inside the object file. Hex or percent-encoding the key would keep it readable, but a
//! 1024-byte key encodes to more than the 255 bytes a file name may have on Linux file
//! systems; the hash has a fixed length of 64 characters whatever the key.

use crate::error::{Error, Result};

/// Shortest bucket name S3 allows.
pub const MIN_BUCKET_NAME: usize = 3;
/// Longest bucket name S3 allows (a bucket name is a DNS label in virtual-host addressing).
pub const MAX_BUCKET_NAME: usize = 63;
/// Longest key in bytes of UTF-8, as in S3; clients and tools assume this bound.
pub const MAX_KEY_BYTES: usize = 1024;

/// Checks a bucket name against the S3 naming rules.
pub fn validate_bucket(name: &str) -> Result<()> {
    let fail = |reason| {
        Err(Error::InvalidBucketName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.len() < MIN_BUCKET_NAME {
        return fail("shorter than 3 characters");
    }
    if name.len() > MAX_BUCKET_NAME {
        return fail("longer than 63 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        return fail("only lowercase letters, digits, `-` and `.` are allowed");
    }
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = name.as_bytes();
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return fail("must start and end with a letter or digit");
    }
    if name.contains("..") {
        return fail("two adjacent periods");
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return fail("formatted as an IP address");
    }
    Ok(())
}

/// Checks an object key: 1 to 1024 bytes of UTF-8 (the type sees to that), without NUL.
pub fn validate_key(bucket: &str, key: &str) -> Result<()> {
    let reason = if key.is_empty() {
        "empty"
    } else if key.len() > MAX_KEY_BYTES {
        "longer than 1024 bytes"
    } else if key.contains('\0') {
        "contains NUL"
    } else {
        return Ok(());
    };
    Err(Error::InvalidKey {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        reason,
    })
}

/// Length of an object's file name: a BLAKE3 hash in hex.
pub const OBJECT_FILE_NAME_LEN: usize = 64;

/// The name of the file holding object `key` in its bucket's directory: 64 lowercase hex
/// digits, whatever the key, so no key can name a path outside the bucket.
pub fn object_file_name(key: &str) -> String {
    blake3::hash(key.as_bytes()).to_hex().to_string()
}

/// Whether `name` has the shape of an object file name.
pub fn is_object_file_name(name: &str) -> bool {
    name.len() == OBJECT_FILE_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bucket_names_follow_s3_rules() {
        for good in ["abc", "my-bucket", "my.bucket.1", "0ab", &"a".repeat(63)] {
            validate_bucket(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        let cases = [
            ("ab", "shorter"),
            (&*"a".repeat(64), "longer"),
            ("My-Bucket", "lowercase"),
            ("my_bucket", "lowercase"),
            ("a/b", "lowercase"),
            ("-abc", "start and end"),
            ("abc.", "start and end"),
            ("..", "shorter"),
            ("...", "start and end"),
            ("a..b", "adjacent"),
            ("192.168.1.1", "IP address"),
        ];
        for (bad, why) in cases {
            let err = validate_bucket(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
            assert!(err.contains(&format!("`{bad}`")), "{err}");
        }
    }

    #[test]
    fn keys_are_any_utf8_without_nul() {
        for good in [
            "a",
            "/",
            ".",
            "..",
            "../../etc/passwd",
            "a b/ c",
            "ü/日本",
            "\n",
        ] {
            validate_key("b", good).unwrap();
        }
        validate_key("b", &"k".repeat(MAX_KEY_BYTES)).unwrap();
        let long = validate_key("b", &"k".repeat(MAX_KEY_BYTES + 1)).unwrap_err();
        assert!(long.to_string().contains("longer than 1024"), "{long}");
        // A multi-byte character that crosses the limit counts by bytes, not characters.
        let long = "é".repeat(MAX_KEY_BYTES / 2 + 1);
        assert!(validate_key("b", &long).is_err());
        assert!(
            validate_key("b", "")
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        assert!(
            validate_key("b", "a\0b")
                .unwrap_err()
                .to_string()
                .contains("NUL")
        );
    }

    #[test]
    fn file_names_do_not_depend_on_key_shape() {
        for key in ["../../etc/passwd", "/", ".", "..", &"x".repeat(1024)] {
            let name = object_file_name(key);
            assert!(is_object_file_name(&name), "{name}");
        }
        assert!(!is_object_file_name("bucket.json"));
        assert!(!is_object_file_name(&"A".repeat(64)));
    }

    proptest! {
        #[test]
        fn key_validation_is_exactly_the_documented_rule(key in "\\PC{0,40}|[\\x00-\\x7f]{0,8}") {
            let ok = !key.is_empty() && key.len() <= MAX_KEY_BYTES && !key.contains('\0');
            prop_assert_eq!(validate_key("b", &key).is_ok(), ok);
        }

        #[test]
        fn file_names_are_safe_and_distinct(a in "\\PC{1,64}", b in "\\PC{1,64}") {
            let (na, nb) = (object_file_name(&a), object_file_name(&b));
            prop_assert!(is_object_file_name(&na));
            prop_assert!(!na.contains('/') && na != "." && na != "..");
            prop_assert_eq!(a == b, na == nb);
        }
    }
}
