//! Puts, gets, heads and deletes of single objects, their metadata, and what survives a
//! reopen.

use std::io::Read;

use zvm_store::{Error, ObjectStore, PutMeta};

use crate::support::{etag, files_under, meta, put, read, store};

#[test]
fn content_round_trips_at_every_size() {
    let (_dir, store) = store();
    // Around the 64 KiB copy buffer, and several buffers long.
    for len in [0usize, 1, 100, 65_535, 65_536, 65_537, 1_000_003] {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
        let key = format!("size/{len}");
        let info = put(&store, &key, &data);
        assert_eq!(info.size, len as u64);
        assert_eq!(info.etag, etag(&data));
        assert_eq!(info.key, key);
        let (got, content) = read(&store, &key, None);
        assert_eq!(got, info);
        assert!(content == data, "content of {len} bytes differs");
    }
}

#[test]
fn metadata_is_stored_with_the_object() {
    let (_dir, store) = store();
    let m = meta(
        Some("text/plain; charset=utf-8"),
        &[("owner", "zoë"), ("Run-Id", "42")],
    );
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let info = store.put("bkt", "doc", &b"hello"[..], m.clone()).unwrap();
    assert_eq!(info.content_type, m.content_type);
    assert_eq!(info.user, m.user);
    assert!(info.modified >= before && info.modified < before + 60_000);
    assert_eq!(store.head("bkt", "doc").unwrap(), info);
    assert_eq!(read(&store, "doc", None).0, info);

    // ObjectInfo is what the gateway serialises.
    let json = serde_json::to_value(&info).unwrap();
    assert_eq!(json["etag"], etag(b"hello"));
    assert_eq!(json["user"]["owner"], "zoë");
    let back: zvm_store::ObjectInfo = serde_json::from_value(json).unwrap();
    assert_eq!(back, info);

    // An overwrite replaces metadata too: none of the old survives.
    let info2 = store
        .put("bkt", "doc", &b"bye"[..], PutMeta::default())
        .unwrap();
    assert_eq!(info2.content_type, None);
    assert!(info2.user.is_empty());
    assert_eq!(read(&store, "doc", None), (info2, b"bye".to_vec()));
}

#[test]
fn everything_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStore::open(dir.path()).unwrap();
    store.create_bucket("bkt").unwrap();
    let a = put(&store, "a", b"first");
    let b = store
        .put(
            "bkt",
            "b/c",
            &b"second"[..],
            meta(Some("x/y"), &[("k", "v")]),
        )
        .unwrap();
    put(&store, "gone", b"x");
    assert!(store.delete("bkt", "gone").unwrap());
    drop(store);
    let store = ObjectStore::open(dir.path()).unwrap();
    assert_eq!(store.head("bkt", "a").unwrap(), a);
    assert_eq!(store.head("bkt", "b/c").unwrap(), b);
    assert_eq!(read(&store, "b/c", None).1, b"second");
    assert!(matches!(
        store.head("bkt", "gone"),
        Err(Error::NoSuchKey { .. })
    ));
    assert_eq!(store.list("bkt", "", None, 10).unwrap().0, vec![a, b]);
}

#[test]
fn missing_things_are_named_in_errors() {
    let (_dir, store) = store();
    let err = store.get("bkt", "nope", None).unwrap_err();
    assert!(matches!(&err, Error::NoSuchKey { bucket, key } if bucket == "bkt" && key == "nope"));
    assert_eq!(err.to_string(), "no such key `nope` in bucket `bkt`");
    assert!(matches!(
        store.head("bkt", "nope"),
        Err(Error::NoSuchKey { .. })
    ));
    for err in [
        store.get("other", "k", None).map(|_| ()).unwrap_err(),
        store.head("other", "k").map(|_| ()).unwrap_err(),
        store.delete("other", "k").map(|_| ()).unwrap_err(),
        store.list("other", "", None, 1).map(|_| ()).unwrap_err(),
        store
            .put("other", "k", &b""[..], PutMeta::default())
            .map(|_| ())
            .unwrap_err(),
    ] {
        assert!(
            matches!(&err, Error::NoSuchBucket { bucket } if bucket == "other"),
            "{err}"
        );
        assert_eq!(err.to_string(), "no such bucket `other`");
    }
    let err = store
        .put("bkt", "k", &b""[..], meta(Some("a\nb"), &[]))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidMetadata { .. }), "{err}");
    assert!(err.to_string().contains("`k` in bucket `bkt`"), "{err}");
}

#[test]
fn delete_is_idempotent() {
    let (_dir, store) = store();
    put(&store, "k", b"v");
    assert!(store.delete("bkt", "k").unwrap());
    assert!(!store.delete("bkt", "k").unwrap());
    assert!(matches!(
        store.get("bkt", "k", None),
        Err(Error::NoSuchKey { .. })
    ));
}

#[test]
fn a_reader_keeps_the_version_it_opened() {
    let (_dir, store) = store();
    put(&store, "k", &[1u8; 200_000]);
    let mut old = store.get("bkt", "k", None).unwrap();
    let mut first = [0u8; 10];
    old.body.read_exact(&mut first).unwrap();
    put(&store, "k", &[2u8; 300]);
    let mut rest = Vec::new();
    old.body.read_to_end(&mut rest).unwrap();
    assert_eq!(rest.len(), 200_000 - 10);
    assert!(rest.iter().all(|&b| b == 1), "a reader saw the new version");
    let mut deleted = store.get("bkt", "k", None).unwrap();
    store.delete("bkt", "k").unwrap();
    let mut content = Vec::new();
    deleted.body.read_to_end(&mut content).unwrap();
    assert_eq!(content, [2u8; 300]);
}

#[test]
fn a_failed_put_leaves_the_old_object() {
    struct Failing(usize);
    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Err(std::io::Error::other("connection reset"));
            }
            let n = self.0.min(buf.len());
            buf[..n].fill(9);
            self.0 -= n;
            Ok(n)
        }
    }
    let (dir, store) = store();
    let old = put(&store, "k", b"old");
    let err = store
        .put("bkt", "k", Failing(100_000), PutMeta::default())
        .unwrap_err();
    assert!(matches!(err, Error::Body { .. }), "{err}");
    assert_eq!(read(&store, "k", None), (old, b"old".to_vec()));
    assert!(
        files_under(&dir.path().join("tmp")).is_empty(),
        "the staged file stayed"
    );
}

#[test]
fn one_process_at_a_time() {
    let (dir, store) = store();
    let err = ObjectStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    drop(store);
    ObjectStore::open(dir.path()).unwrap();
}

#[test]
fn open_removes_leftovers_of_a_crash() {
    let (dir, store) = store();
    let kept = put(&store, "k", b"kept");
    drop(store);
    // What a put killed before its rename leaves, and a bucket deletion killed after it.
    std::fs::write(dir.path().join("tmp/123-4"), b"half an obj").unwrap();
    std::fs::create_dir(dir.path().join("tmp/123-5")).unwrap();
    std::fs::write(dir.path().join("tmp/123-5/bucket.json"), b"{}").unwrap();
    // A batch that never reached its commit point.
    std::fs::create_dir(dir.path().join("batches/123-6")).unwrap();
    std::fs::write(dir.path().join("batches/123-6/0"), b"staged").unwrap();
    let store = ObjectStore::open(dir.path()).unwrap();
    assert!(files_under(&dir.path().join("tmp")).is_empty());
    assert!(files_under(&dir.path().join("batches")).is_empty());
    assert_eq!(
        std::fs::read_dir(dir.path().join("batches"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(store.list("bkt", "", None, 10).unwrap().0, vec![kept]);
}
