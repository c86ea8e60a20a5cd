//! The entry file format: what one cached run left behind.
//!
//! An entry file is one line of JSON (the header), a newline, then the caller's record bytes
//! verbatim (opaque to this crate; zvm stores a JSON report there). The header names the key
//! it belongs to, the record's size and BLAKE3, and each output's name, size and BLAKE3,
//! sorted by name so the same run always produces the same bytes:
//!
//! ```text
//! {"key":"<hex>","record":{"size":N,"blake3":"<hex>"},
//!  "outputs":[{"name":"out","size":N,"blake3":"<hex>"}]}     (all on one line)
//! <record bytes>
//! ```
//!
//! Decoding is strict: unknown fields, non-canonical hex, unsorted or repeated names, a key
//! that is not the file's own (a file copied to the wrong name) or a record whose size or
//! hash differs all make the entry damaged, which the cache treats as a miss.

use serde::{Deserialize, Serialize};

use crate::layout::parse_hex;

/// The size and BLAKE3 of some content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Content {
    pub size: u64,
    pub hash: blake3::Hash,
}

impl Content {
    pub fn of(bytes: &[u8]) -> Content {
        Content {
            size: bytes.len() as u64,
            hash: blake3::hash(bytes),
        }
    }
}

/// A decoded, checked entry.
#[derive(Debug)]
pub(crate) struct Entry {
    pub record: Vec<u8>,
    /// Sorted by name, names unique.
    pub outputs: Vec<(String, Content)>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    key: String,
    record: ContentJson,
    outputs: Vec<OutputJson>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContentJson {
    size: u64,
    blake3: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputJson {
    name: String,
    size: u64,
    blake3: String,
}

impl From<Content> for ContentJson {
    fn from(c: Content) -> ContentJson {
        ContentJson {
            size: c.size,
            blake3: c.hash.to_hex().to_string(),
        }
    }
}

fn content(size: u64, blake3: &str) -> Option<Content> {
    Some(Content {
        size,
        hash: parse_hex(blake3)?,
    })
}

/// The bytes of the entry file for `key`. `outputs` must be sorted by name, names unique.
pub(crate) fn encode(key: &blake3::Hash, record: &[u8], outputs: &[(String, Content)]) -> Vec<u8> {
    debug_assert!(outputs.windows(2).all(|w| w[0].0 < w[1].0));
    let header = Header {
        key: key.to_hex().to_string(),
        record: Content::of(record).into(),
        outputs: outputs
            .iter()
            .map(|(name, c)| OutputJson {
                name: name.clone(),
                size: c.size,
                blake3: c.hash.to_hex().to_string(),
            })
            .collect(),
    };
    let mut bytes = serde_json::to_vec(&header).expect("a header always serialises");
    bytes.push(b'\n');
    bytes.extend_from_slice(record);
    bytes
}

/// Decodes the entry file of `key`; `None` if it is damaged in any way.
pub(crate) fn decode(key: &blake3::Hash, mut bytes: Vec<u8>) -> Option<Entry> {
    let newline = bytes.iter().position(|&b| b == b'\n')?;
    let header: Header = serde_json::from_slice(&bytes[..newline]).ok()?;
    if parse_hex(&header.key)? != *key {
        return None;
    }
    let record = bytes.split_off(newline + 1);
    if Content::of(&record) != content(header.record.size, &header.record.blake3)? {
        return None;
    }
    let outputs = header
        .outputs
        .into_iter()
        .map(|o| Some((o.name, content(o.size, &o.blake3)?)))
        .collect::<Option<Vec<_>>>()?;
    if !outputs.windows(2).all(|w| w[0].0 < w[1].0) {
        return None;
    }
    Some(Entry { record, outputs })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (blake3::Hash, Vec<u8>) {
        let key = blake3::hash(b"key");
        let outputs = vec![
            ("a".to_string(), Content::of(b"alpha")),
            ("b\n\"".to_string(), Content::of(b"")),
        ];
        (key, encode(&key, b"{\"x\":\n1}", &outputs))
    }

    #[test]
    fn encoding_round_trips() {
        let (key, bytes) = sample();
        let entry = decode(&key, bytes).expect("valid");
        assert_eq!(entry.record, b"{\"x\":\n1}");
        assert_eq!(entry.outputs.len(), 2);
        assert_eq!(entry.outputs[1].0, "b\n\"");
        assert_eq!(entry.outputs[0].1, Content::of(b"alpha"));
    }

    #[test]
    fn any_damage_is_detected() {
        let (key, bytes) = sample();
        assert!(decode(&blake3::hash(b"other key"), bytes.clone()).is_none());
        let mut truncated = bytes.clone();
        truncated.pop();
        assert!(decode(&key, truncated).is_none());
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(decode(&key, flipped).is_none());
        let text = String::from_utf8(bytes).unwrap();
        let unsorted = text.replacen("\"name\":\"a\"", "\"name\":\"c\"", 1);
        assert!(decode(&key, unsorted.into_bytes()).is_none());
        let long_hash = text.replacen("\"blake3\":\"", "\"blake3\":\"A", 1);
        assert!(decode(&key, long_hash.into_bytes()).is_none());
        let extra = text.replacen("{\"key\"", "{\"more\":1,\"key\"", 1);
        assert!(decode(&key, extra.into_bytes()).is_none());
        assert!(decode(&key, b"not json\n".to_vec()).is_none());
        assert!(decode(&key, Vec::new()).is_none());
    }
}
