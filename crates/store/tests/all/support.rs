//! What the tests share: a fresh store, and reading an object whole.

use std::collections::BTreeMap;
use std::io::Read;

use zvm_store::{ByteRange, ObjectInfo, ObjectStore, PutMeta};

/// A new store in a temporary directory with bucket `bkt`.
pub fn store() -> (tempfile::TempDir, ObjectStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStore::open(dir.path()).unwrap();
    store.create_bucket("bkt").unwrap();
    (dir, store)
}

pub fn put(store: &ObjectStore, key: &str, data: &[u8]) -> ObjectInfo {
    store.put("bkt", key, data, PutMeta::default()).unwrap()
}

/// The content of `key` (or its range) in bucket `bkt`, with its metadata.
pub fn read(store: &ObjectStore, key: &str, range: Option<ByteRange>) -> (ObjectInfo, Vec<u8>) {
    let mut got = store.get("bkt", key, range).unwrap();
    let mut data = Vec::new();
    got.body.read_to_end(&mut data).unwrap();
    (got.info, data)
}

pub fn meta(content_type: Option<&str>, user: &[(&str, &str)]) -> PutMeta {
    PutMeta {
        content_type: content_type.map(Into::into),
        user: user
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    }
}

pub fn etag(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}
