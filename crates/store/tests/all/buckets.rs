//! Buckets: creating, listing and deleting them, and their names.

use zvm_store::{Error, ObjectStore};

use crate::support::put;

#[test]
fn bucket_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStore::open(dir.path()).unwrap();
    assert!(store.list_buckets().is_empty());
    let b = store.create_bucket("beta").unwrap();
    store.create_bucket("alpha.1").unwrap();
    assert_eq!(b.name, "beta");
    let names: Vec<_> = store.list_buckets().into_iter().map(|b| b.name).collect();
    assert_eq!(names, ["alpha.1", "beta"]);
    let err = store.create_bucket("beta").unwrap_err();
    assert!(
        matches!(&err, Error::BucketAlreadyExists { bucket } if bucket == "beta"),
        "{err}"
    );
    drop(store);

    let store = ObjectStore::open(dir.path()).unwrap();
    let listed = store.list_buckets();
    assert_eq!(listed[1], b, "the creation time survives a reopen");
    store.delete_bucket("alpha.1").unwrap();
    let err = store.delete_bucket("alpha.1").unwrap_err();
    assert!(matches!(err, Error::NoSuchBucket { .. }), "{err}");
    assert_eq!(store.list_buckets().len(), 1);
    // The name is free again.
    store.create_bucket("alpha.1").unwrap();
}

#[test]
fn only_an_empty_bucket_can_be_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStore::open(dir.path()).unwrap();
    store.create_bucket("bkt").unwrap();
    put(&store, "k", b"v");
    let err = store.delete_bucket("bkt").unwrap_err();
    assert!(
        matches!(&err, Error::BucketNotEmpty { bucket } if bucket == "bkt"),
        "{err}"
    );
    assert_eq!(err.to_string(), "bucket `bkt` is not empty");
    store.delete("bkt", "k").unwrap();
    store.delete_bucket("bkt").unwrap();
    drop(store);
    let store = ObjectStore::open(dir.path()).unwrap();
    assert!(store.list_buckets().is_empty());
    assert_eq!(
        std::fs::read_dir(dir.path().join("buckets"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
}

#[test]
fn invalid_bucket_names_are_refused_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStore::open(dir.path()).unwrap();
    for name in ["..", "../x", "a/b", "UPPER", "x", "ab\0c", "10.0.0.1"] {
        let err = store.create_bucket(name).unwrap_err();
        assert!(
            matches!(err, Error::InvalidBucketName { .. }),
            "{name}: {err}"
        );
        let err = store.get(name, "k", None).unwrap_err();
        assert!(
            matches!(err, Error::InvalidBucketName { .. }),
            "{name}: {err}"
        );
    }
    assert_eq!(
        std::fs::read_dir(dir.path().join("buckets"))
            .unwrap()
            .count(),
        0
    );
}
