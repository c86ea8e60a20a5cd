//! Batches in one process: nothing is visible before the commit, everything after it, and
//! an abandoned or refused batch leaves no trace. Crashes are in `crash`.

use zvm_store::{Error, ObjectStore, PutMeta};

use crate::support::{files_under, meta, put, read, store};

#[test]
fn a_batch_lands_whole_at_commit() {
    let (dir, store) = store();
    store.create_bucket("other").unwrap();
    put(&store, "old", b"old");
    put(&store, "replaced", b"before");
    let mut batch = store.batch();
    let a = batch
        .put(
            "bkt",
            "new/a",
            &b"A"[..],
            meta(Some("text/plain"), &[("run", "7")]),
        )
        .unwrap();
    batch
        .put("other", "new/b", &b"B"[..], PutMeta::default())
        .unwrap();
    batch
        .put("bkt", "replaced", &b"after"[..], PutMeta::default())
        .unwrap();
    batch.delete("bkt", "old").unwrap();
    batch.delete("bkt", "never-existed").unwrap();
    assert_eq!(batch.len(), 5);
    // Nothing shows before the commit.
    assert!(matches!(
        store.head("bkt", "new/a"),
        Err(Error::NoSuchKey { .. })
    ));
    assert_eq!(read(&store, "old", None).1, b"old");
    assert_eq!(read(&store, "replaced", None).1, b"before");
    assert_eq!(store.list("other", "", None, 10).unwrap().0, vec![]);
    batch.commit().unwrap();

    assert_eq!(read(&store, "new/a", None), (a.clone(), b"A".to_vec()));
    assert_eq!(read(&store, "replaced", None).1, b"after");
    assert!(matches!(
        store.head("bkt", "old"),
        Err(Error::NoSuchKey { .. })
    ));
    assert_eq!(store.list("other", "", None, 10).unwrap().0.len(), 1);
    assert!(files_under(&dir.path().join("batches")).is_empty());
    assert_eq!(
        std::fs::read_dir(dir.path().join("batches"))
            .unwrap()
            .count(),
        0
    );
    drop(store);
    let store = ObjectStore::open(dir.path()).unwrap();
    assert_eq!(store.head("bkt", "new/a").unwrap(), a);
}

#[test]
fn a_dropped_batch_leaves_nothing() {
    let (dir, store) = store();
    put(&store, "keep", b"1");
    let mut batch = store.batch();
    batch
        .put("bkt", "x", &[7u8; 100_000][..], PutMeta::default())
        .unwrap();
    batch.delete("bkt", "keep").unwrap();
    assert!(!files_under(&dir.path().join("batches")).is_empty());
    drop(batch);
    assert_eq!(
        std::fs::read_dir(dir.path().join("batches"))
            .unwrap()
            .count(),
        0
    );
    assert!(matches!(
        store.head("bkt", "x"),
        Err(Error::NoSuchKey { .. })
    ));
    assert_eq!(read(&store, "keep", None).1, b"1");
}

#[test]
fn the_last_change_of_a_key_in_a_batch_wins() {
    let (dir, store) = store();
    put(&store, "del-then-put", b"0");
    put(&store, "put-then-del", b"0");
    let mut batch = store.batch();
    batch
        .put("bkt", "twice", &b"1"[..], PutMeta::default())
        .unwrap();
    batch
        .put("bkt", "twice", &b"2"[..], PutMeta::default())
        .unwrap();
    batch.delete("bkt", "del-then-put").unwrap();
    batch
        .put("bkt", "del-then-put", &b"3"[..], PutMeta::default())
        .unwrap();
    batch
        .put("bkt", "put-then-del", &b"4"[..], PutMeta::default())
        .unwrap();
    batch.delete("bkt", "put-then-del").unwrap();
    assert_eq!(batch.len(), 3);
    // The replaced staged files are gone already.
    assert_eq!(files_under(&dir.path().join("batches")).len(), 2);
    batch.commit().unwrap();
    assert_eq!(read(&store, "twice", None).1, b"2");
    assert_eq!(read(&store, "del-then-put", None).1, b"3");
    assert!(matches!(
        store.head("bkt", "put-then-del"),
        Err(Error::NoSuchKey { .. })
    ));
}

#[test]
fn a_batch_into_a_deleted_bucket_changes_nothing() {
    let (dir, store) = store();
    store.create_bucket("doomed").unwrap();
    put(&store, "k", b"old");
    let mut batch = store.batch();
    batch
        .put("bkt", "k", &b"new"[..], PutMeta::default())
        .unwrap();
    batch
        .put("doomed", "x", &b"x"[..], PutMeta::default())
        .unwrap();
    store.delete_bucket("doomed").unwrap();
    let err = batch.commit().unwrap_err();
    assert!(
        matches!(&err, Error::NoSuchBucket { bucket } if bucket == "doomed"),
        "{err}"
    );
    assert_eq!(read(&store, "k", None).1, b"old");
    assert_eq!(
        std::fs::read_dir(dir.path().join("batches"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn batch_changes_are_checked_when_staged() {
    let (_dir, store) = store();
    let mut batch = store.batch();
    assert!(matches!(
        batch.put("nope", "k", &b""[..], PutMeta::default()),
        Err(Error::NoSuchBucket { .. })
    ));
    assert!(matches!(
        batch.delete("bkt", ""),
        Err(Error::InvalidKey { .. })
    ));
    assert!(matches!(
        batch.delete("B", "k"),
        Err(Error::InvalidBucketName { .. })
    ));
    assert!(matches!(
        batch.put("bkt", "k", &b""[..], meta(None, &[("bad name", "v")])),
        Err(Error::InvalidMetadata { .. })
    ));
    assert!(batch.is_empty());
    batch.commit().unwrap();
    assert!(store.list("bkt", "", None, 1).unwrap().0.is_empty());
}

#[test]
fn batches_commit_from_several_threads() {
    let (_dir, store) = store();
    std::thread::scope(|s| {
        for t in 0..4 {
            let store = &store;
            s.spawn(move || {
                for round in 0..5 {
                    let mut batch = store.batch();
                    for k in 0..3 {
                        let data = format!("{t}-{round}");
                        batch
                            .put(
                                "bkt",
                                &format!("g/{k}"),
                                data.as_bytes(),
                                PutMeta::default(),
                            )
                            .unwrap();
                    }
                    batch.commit().unwrap();
                }
            });
        }
    });
    // Batches are serialised: all three keys carry the same batch's content.
    let values: Vec<Vec<u8>> = (0..3)
        .map(|k| read(&store, &format!("g/{k}"), None).1)
        .collect();
    assert!(values.iter().all(|v| *v == values[0]), "{values:?}");
}
