//! Keys are arbitrary strings and must never become paths: hostile keys stay inside the
//! store, and every key comes back exactly as it was given.

use std::path::Path;

use proptest::prelude::*;
use zvm_store::{Error, MAX_KEY_BYTES, ObjectStore, PutMeta};

use crate::support::{files_under, read};

fn hostile_keys() -> Vec<String> {
    let mut keys: Vec<String> = [
        "../../etc/passwd",
        "/etc/passwd",
        "/",
        "//",
        ".",
        "..",
        "../",
        "./.",
        "a/../../b",
        "..\\..\\windows",
        "%2e%2e/%2e%2e/x",
        " ",
        "with space/and tab\t",
        "line\nbreak",
        "bucket.json",
        "lock",
        "日本語/キー",
        "emoji 🦀",
        "\u{202e}rtl",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // As long as a key may be, in path traversals and in multi-byte characters.
    let mut dots = "../".repeat(MAX_KEY_BYTES / 3);
    dots.push('x');
    assert_eq!(dots.len(), MAX_KEY_BYTES);
    keys.push(dots);
    keys.push("é".repeat(MAX_KEY_BYTES / 2));
    keys.push("/".repeat(MAX_KEY_BYTES));
    keys
}

/// Asserts the store wrote nothing outside `root`, and only hashed names in the bucket.
fn assert_contained(parent: &Path, root: &Path) {
    let outside: Vec<_> = std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p != root)
        .collect();
    assert!(outside.is_empty(), "written outside the store: {outside:?}");
    for file in files_under(root) {
        let rel = file.strip_prefix(root).unwrap();
        let parts: Vec<_> = rel.iter().map(|p| p.to_str().unwrap()).collect();
        match parts.as_slice() {
            ["format"] | ["lock"] | ["buckets", "bkt", "bucket.json"] => {}
            ["buckets", "bkt", name] => {
                assert_eq!(name.len(), 64, "{rel:?}");
                assert!(name.bytes().all(|b| b.is_ascii_hexdigit()), "{rel:?}");
            }
            _ => panic!("unexpected file {rel:?}"),
        }
    }
}

#[test]
fn hostile_keys_stay_inside_the_store() {
    let parent = tempfile::tempdir().unwrap();
    let root = parent.path().join("store");
    let store = ObjectStore::open(&root).unwrap();
    store.create_bucket("bkt").unwrap();
    let keys = hostile_keys();
    for key in &keys {
        let info = store
            .put("bkt", key, key.as_bytes(), PutMeta::default())
            .unwrap_or_else(|e| panic!("{key:?}: {e}"));
        assert_eq!(&info.key, key);
    }
    assert_contained(parent.path(), &root);
    for key in &keys {
        let (info, content) = read(&store, key, None);
        assert_eq!(&info.key, key);
        assert_eq!(content, key.as_bytes());
    }
    let (page, truncated) = store.list("bkt", "", None, 1000).unwrap();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(
        page.iter().map(|i| &i.key).collect::<Vec<_>>(),
        sorted.iter().collect::<Vec<_>>()
    );
    assert!(!truncated);
    drop(store);
    // The keys come back from the files themselves.
    let store = ObjectStore::open(&root).unwrap();
    assert_eq!(store.list("bkt", "", None, 1000).unwrap().0, page);
    for key in &keys {
        assert!(store.delete("bkt", key).unwrap());
    }
    assert_contained(parent.path(), &root);
    assert_eq!(files_under(&root.join("buckets/bkt")).len(), 1);
}

#[test]
fn keys_out_of_bounds_are_refused() {
    let (dir, store) = crate::support::store();
    let too_long = "k".repeat(MAX_KEY_BYTES + 1);
    for key in ["", "a\0b", "\0", too_long.as_str()] {
        let err = store
            .put("bkt", key, &b"x"[..], PutMeta::default())
            .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidKey { bucket, key: k, .. } if bucket == "bkt" && k == key),
            "{err}"
        );
        assert!(matches!(
            store.get("bkt", key, None),
            Err(Error::InvalidKey { .. })
        ));
        assert!(matches!(
            store.delete("bkt", key),
            Err(Error::InvalidKey { .. })
        ));
        assert!(matches!(
            store.head("bkt", key),
            Err(Error::InvalidKey { .. })
        ));
    }
    assert_eq!(files_under(&dir.path().join("buckets/bkt")).len(), 1);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Any valid key maps to a file and back to itself: through get, list and a reopen.
    #[test]
    fn key_encoding_round_trips(
        keys in proptest::collection::btree_set(
            "[./a\\\\]{1,12}|\\PC{1,30}|[\\x01-\\x7f]{1,20}", 1..6),
    ) {
        let parent = tempfile::tempdir().unwrap();
        let root = parent.path().join("store");
        let store = ObjectStore::open(&root).unwrap();
        store.create_bucket("bkt").unwrap();
        for key in &keys {
            store.put("bkt", key, key.as_bytes(), PutMeta::default()).unwrap();
        }
        for key in &keys {
            let (info, content) = read(&store, key, None);
            prop_assert_eq!(&info.key, key);
            prop_assert_eq!(content, key.as_bytes());
        }
        drop(store);
        let store = ObjectStore::open(&root).unwrap();
        let (page, _) = store.list("bkt", "", None, 100).unwrap();
        let listed: Vec<&String> = page.iter().map(|i| &i.key).collect();
        prop_assert_eq!(listed, keys.iter().collect::<Vec<_>>());
        assert_contained(parent.path(), &root);
    }
}
