//! The S3 backend against a real S3 server (SeaweedFS's `weed mini`, started by the tests):
//! the same operations, errors, listings and etags as the embedded store, batches that land
//! all or nothing, and the roll-forward of a batch stopped after its commit point.
//!
//! One server serves the tests that run at the same time; each test keeps its keys under a
//! prefix of its own.

use std::io::{self, Read};
use std::sync::{Arc, Mutex, Weak};

use futures_util::StreamExt;
use object_store::ObjectStore as _;
use zvm_store::s3::testing::SeaweedFs;
use zvm_store::{ByteRange, Error, ObjectStore, PutMeta, S3Config, S3Store, StagedPut, Store};

use crate::support::{etag, meta};

/// The running server, shared by the tests running at once and stopped after the last.
fn server() -> Option<Arc<SeaweedFs>> {
    static SERVER: Mutex<Weak<SeaweedFs>> = Mutex::new(Weak::new());
    let mut shared = SERVER.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(server) = shared.upgrade() {
        return Some(server);
    }
    let server = Arc::new(SeaweedFs::start()?);
    *shared = Arc::downgrade(&server);
    Some(server)
}

/// A store under a fresh prefix, with bucket `bkt`.
fn store(server: &SeaweedFs, test: &str) -> (S3Config, S3Store) {
    let config = server.config(&format!("{test}-{}", std::process::id()));
    let store = S3Store::open(&config).unwrap();
    store.create_bucket("bkt").unwrap();
    (config, store)
}

fn read_all(
    store: &S3Store,
    key: &str,
    range: Option<ByteRange>,
) -> (zvm_store::ObjectInfo, Vec<u8>) {
    let mut got = store.get("bkt", key, range).unwrap();
    let mut data = Vec::new();
    got.body.read_to_end(&mut data).unwrap();
    assert_eq!(got.body.remaining(), 0);
    (got.info, data)
}

/// Every raw S3 key under the store's prefix, to see what a protocol left behind.
fn raw_keys(config: &S3Config, under: &str) -> Vec<String> {
    let s3 = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(config.endpoint.clone().unwrap())
        .with_bucket_name(&config.bucket)
        .with_region(&config.region)
        .with_access_key_id(config.access_key_id.clone().unwrap())
        .with_secret_access_key(config.secret_access_key.clone().unwrap())
        .with_allow_http(true)
        .build()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = object_store::path::Path::from(format!("{}/{under}", config.prefix));
    runtime.block_on(async {
        s3.list(Some(&dir))
            .map(|m| m.unwrap().location.to_string())
            .collect()
            .await
    })
}

#[test]
fn objects_round_trip_with_metadata_and_blake3_etags() {
    let Some(server) = server() else { return };
    let (_, store) = store(&server, "objects");
    let data = b"hello, s3".repeat(100);
    let m = meta(
        Some("text/plain; charset=utf-8"),
        &[("Owner", "Zoë\tand co"), ("n", "1")],
    );
    let put = store.put("bkt", "dir/a.txt", &data[..], m.clone()).unwrap();
    assert_eq!(put.etag, etag(&data));
    assert_eq!(put.size, data.len() as u64);
    let (info, read) = read_all(&store, "dir/a.txt", None);
    assert_eq!(read, data);
    assert_eq!(info, put);
    assert_eq!(info.content_type, m.content_type);
    assert_eq!(
        info.user, m.user,
        "names keep their case, values their UTF-8"
    );
    assert_eq!(store.head("bkt", "dir/a.txt").unwrap(), put);

    // Replacing, then deleting.
    let put2 = store
        .put("bkt", "dir/a.txt", &b"v2"[..], PutMeta::default())
        .unwrap();
    let (info, read) = read_all(&store, "dir/a.txt", None);
    assert_eq!(
        (info.etag.as_str(), read.as_slice()),
        (etag(b"v2").as_str(), &b"v2"[..])
    );
    assert_eq!(info, put2);
    assert_eq!(info.content_type, None);
    assert!(store.delete("bkt", "dir/a.txt").unwrap());
    assert!(!store.delete("bkt", "dir/a.txt").unwrap());

    // The same errors as the embedded store.
    let err = store.get("bkt", "dir/a.txt", None).unwrap_err();
    assert!(matches!(err, Error::NoSuchKey { .. }), "{err}");
    let err = store.head("nobucket", "k").unwrap_err();
    assert!(matches!(err, Error::NoSuchBucket { .. }), "{err}");
    let err = store
        .put("nobucket", "k", &b""[..], PutMeta::default())
        .unwrap_err();
    assert!(matches!(err, Error::NoSuchBucket { .. }), "{err}");
    let err = store
        .put("bkt", "", &b""[..], PutMeta::default())
        .unwrap_err();
    assert!(matches!(err, Error::InvalidKey { .. }), "{err}");
    let err = store
        .put("bkt", &"k".repeat(1000), &b""[..], PutMeta::default())
        .unwrap_err();
    assert!(err.to_string().contains("S3's 1024-byte limit"), "{err}");
    let bad = meta(Some("a\nb"), &[]);
    let err = store.put("bkt", "k", &b""[..], bad).unwrap_err();
    assert!(matches!(err, Error::InvalidMetadata { .. }), "{err}");
    let err = store.create_bucket("Bad_Name").unwrap_err();
    assert!(matches!(err, Error::InvalidBucketName { .. }), "{err}");

    // A body that fails stores nothing.
    struct Failing;
    impl Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("client went away"))
        }
    }
    let err = store
        .put("bkt", "f", Failing, PutMeta::default())
        .unwrap_err();
    assert!(matches!(err, Error::Body { .. }), "{err}");
    assert!(matches!(
        store.head("bkt", "f"),
        Err(Error::NoSuchKey { .. })
    ));
}

#[test]
fn ranges_resolve_as_in_the_embedded_store() {
    let Some(server) = server() else { return };
    let (_, store) = store(&server, "ranges");
    let data: Vec<u8> = (0..100u8).collect();
    store
        .put("bkt", "r", &data[..], PutMeta::default())
        .unwrap();
    store
        .put("bkt", "empty", &b""[..], PutMeta::default())
        .unwrap();
    for (range, want) in [
        ("0-9", 0..10),
        ("95-200", 95..100),
        ("90-", 90..100),
        ("-5", 95..100),
        ("-500", 0..100),
    ] {
        let range: ByteRange = range.parse().unwrap();
        let mut got = store.get("bkt", "r", Some(range)).unwrap();
        assert_eq!(got.range, Some(want.clone()), "{range}");
        assert_eq!(got.info.size, 100);
        assert_eq!(got.info.etag, etag(&data), "the whole object's etag");
        let mut part = Vec::new();
        got.body.read_to_end(&mut part).unwrap();
        assert_eq!(
            part,
            &data[want.start as usize..want.end as usize],
            "{range}"
        );
    }
    for (key, range) in [
        ("r", "100-"),
        ("r", "100-200"),
        ("empty", "0-"),
        ("empty", "-1"),
    ] {
        let err = store
            .get("bkt", key, Some(range.parse().unwrap()))
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidRange { .. }),
            "{key} {range}: {err}"
        );
    }
    let (info, read) = read_all(&store, "empty", None);
    assert_eq!((info.size, read.len()), (0, 0));
}

#[test]
fn buckets_are_created_listed_and_deleted_only_when_empty() {
    let Some(server) = server() else { return };
    let (_, store) = store(&server, "buckets");
    store.create_bucket("other").unwrap();
    let err = store.create_bucket("other").unwrap_err();
    assert!(matches!(err, Error::BucketAlreadyExists { .. }), "{err}");
    let names: Vec<String> = store
        .list_buckets()
        .unwrap()
        .into_iter()
        .map(|b| b.name)
        .collect();
    assert_eq!(names, ["bkt", "other"]);
    store
        .put("other", "k", &b"x"[..], PutMeta::default())
        .unwrap();
    let err = store.delete_bucket("other").unwrap_err();
    assert!(matches!(err, Error::BucketNotEmpty { .. }), "{err}");
    store.delete("other", "k").unwrap();
    store.delete_bucket("other").unwrap();
    let err = store.delete_bucket("other").unwrap_err();
    assert!(matches!(err, Error::NoSuchBucket { .. }), "{err}");
    let (objects, _) = store.list("bkt", "", None, 10).unwrap();
    assert!(objects.is_empty(), "an empty bucket lists nothing");
}

#[test]
fn listings_page_in_byte_order_exactly_as_the_embedded_store() {
    let Some(server) = server() else { return };
    let (_, s3) = store(&server, "listing");
    let dir = tempfile::tempdir().unwrap();
    let local = ObjectStore::open(dir.path()).unwrap();
    local.create_bucket("bkt").unwrap();
    let stores = [Store::Local(local), Store::S3(s3)];
    // Keys that S3 paths cannot hold as they are, and keys whose order an escape could break.
    let keys = [
        "a", "a/b", "a//c", "a/", "/a", ".", "..", "a.b", "a-b", "a b", "a~", "a\u{7f}", "a\u{1}",
        "a\tb", "b", "Zoë", "zz", "~", "a%20", "a+b", "a&b<c>", "a\\b", "a[b]", "C:\\x\\", "\\",
        "[",
    ];
    for store in &stores {
        for key in keys {
            store
                .put("bkt", key, key.as_bytes(), PutMeta::default())
                .unwrap();
        }
    }
    let page = |store: &Store, prefix: &str, after: Option<&str>, limit: usize| {
        let (objects, truncated) = store.list("bkt", prefix, after, limit).unwrap();
        let keys: Vec<String> = objects.iter().map(|o| o.key.clone()).collect();
        for o in &objects {
            assert_eq!(o.etag, etag(o.key.as_bytes()));
        }
        (keys, truncated)
    };
    let mut sorted: Vec<&str> = keys.to_vec();
    sorted.sort();
    assert_eq!(page(&stores[1], "", None, 100).0, sorted);
    for (prefix, after, limit) in [
        ("", None, 100),
        ("", None, 3),
        ("a", None, 100),
        ("a", None, 4),
        ("a/", None, 100),
        ("a", Some("a/"), 5),
        ("a", Some("0"), 5),
        ("", Some("a~"), 100),
        ("", Some("zz"), 100),
        ("zz", None, 1),
        ("q", None, 10),
        ("", None, 0),
    ] {
        let want = page(&stores[0], prefix, after, limit);
        assert_eq!(
            page(&stores[1], prefix, after, limit),
            want,
            "{prefix:?} {after:?} {limit}"
        );
    }
    // Paging by two from each page's last key visits every key once, in order.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let (keys, truncated) = page(&stores[1], "", after.as_deref(), 2);
        seen.extend(keys.iter().cloned());
        after = keys.last().cloned();
        if !truncated {
            break;
        }
    }
    assert_eq!(seen, sorted);
}

/// A body of `len` bytes made up as it is read, so that the test holds none of it.
struct Generated {
    left: u64,
    state: u64,
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.left as usize);
        for b in &mut buf[..n] {
            self.state = self
                .state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *b = (self.state >> 56) as u8;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[test]
fn a_large_object_streams_through_a_multipart_upload() {
    let Some(server) = server() else { return };
    let (_, store) = store(&server, "large");
    let len = 2 * zvm_store::s3::SINGLE_PUT_BYTES as u64 + 12345;
    let mut hasher = blake3::Hasher::new();
    io::copy(
        &mut Generated {
            left: len,
            state: 7,
        },
        &mut hasher,
    )
    .unwrap();
    let want = hasher.finalize().to_hex().to_string();
    let put = store
        .put(
            "bkt",
            "big",
            Generated {
                left: len,
                state: 7,
            },
            PutMeta::default(),
        )
        .unwrap();
    assert_eq!((put.size, put.etag.as_str()), (len, want.as_str()));
    let mut got = store.get("bkt", "big", None).unwrap();
    assert_eq!(got.info, put);
    let mut hasher = blake3::Hasher::new();
    let copied = io::copy(&mut got.body, &mut hasher).unwrap();
    assert_eq!(copied, len);
    assert_eq!(hasher.finalize().to_hex().to_string(), want);
    // A range in the second part.
    let start = zvm_store::s3::PART_BYTES as u64 + 10;
    let mut got = store
        .get(
            "bkt",
            "big",
            Some(ByteRange::FromTo {
                start,
                end: start + 99,
            }),
        )
        .unwrap();
    let mut part = Vec::new();
    got.body.read_to_end(&mut part).unwrap();
    let mut whole = Vec::new();
    Generated {
        left: start + 100,
        state: 7,
    }
    .read_to_end(&mut whole)
    .unwrap();
    assert_eq!(part, &whole[start as usize..]);
}

#[test]
fn a_batch_lands_all_or_nothing_and_leaves_no_staging_behind() {
    let Some(server) = server() else { return };
    let (config, store) = store(&server, "batch");
    store.create_bucket("two").unwrap();
    store
        .put("bkt", "gone", &b"old"[..], PutMeta::default())
        .unwrap();

    // Dropped before commit: nothing lands, the staged objects are deleted.
    let mut batch = store.batch();
    batch
        .put("bkt", "x", &b"X"[..], PutMeta::default())
        .unwrap();
    batch.delete("bkt", "gone").unwrap();
    drop(batch);
    assert!(matches!(
        store.head("bkt", "x"),
        Err(Error::NoSuchKey { .. })
    ));
    assert_eq!(store.head("bkt", "gone").unwrap().etag, etag(b"old"));
    assert_eq!(raw_keys(&config, "staging"), Vec::<String>::new());

    // Committed: every change, across buckets, with its metadata.
    let mut batch = store.batch();
    let m = meta(Some("application/json"), &[("run", "42")]);
    let x = batch.put("bkt", "x", &b"X"[..], m.clone()).unwrap();
    batch
        .put("two", "y/z", &b"first"[..], PutMeta::default())
        .unwrap();
    let y = batch
        .put("two", "y/z", &b"YZ"[..], PutMeta::default())
        .unwrap();
    batch.delete("bkt", "gone").unwrap();
    assert_eq!(batch.len(), 3);
    batch.commit().unwrap();
    assert_eq!(store.head("bkt", "x").unwrap(), x);
    assert_eq!(x.user, m.user);
    let (info, data) = {
        let mut got = store.get("two", "y/z", None).unwrap();
        let mut data = Vec::new();
        got.body.read_to_end(&mut data).unwrap();
        (got.info, data)
    };
    assert_eq!((info, data.as_slice()), (y, &b"YZ"[..]));
    assert!(matches!(
        store.head("bkt", "gone"),
        Err(Error::NoSuchKey { .. })
    ));
    assert_eq!(raw_keys(&config, "staging"), Vec::<String>::new());
    assert_eq!(raw_keys(&config, "commits"), Vec::<String>::new());

    // A batch naming a missing bucket is refused before it stages anything.
    let mut batch = store.batch();
    let err = batch
        .put("nobucket", "k", &b""[..], PutMeta::default())
        .unwrap_err();
    assert!(matches!(err, Error::NoSuchBucket { .. }), "{err}");
}

#[test]
fn open_rolls_a_committed_batch_forward_and_discards_an_uncommitted_one() {
    let Some(server) = server() else { return };
    let (config, store) = store(&server, "recovery");
    store
        .put("bkt", "doomed", &b"old"[..], PutMeta::default())
        .unwrap();

    // Stopped right after its commit record: nothing visible yet.
    let mut batch = store.batch();
    let a = batch
        .put("bkt", "out/a", &b"AAA"[..], meta(Some("text/plain"), &[]))
        .unwrap();
    let b = batch
        .put("bkt", "out/b", &b"BB"[..], PutMeta::default())
        .unwrap();
    batch.delete("bkt", "doomed").unwrap();
    batch.commit_stopping_after_record().unwrap();
    assert!(matches!(
        store.head("bkt", "out/a"),
        Err(Error::NoSuchKey { .. })
    ));
    assert_eq!(raw_keys(&config, "commits").len(), 1);

    // Staged but never committed, as if the process died before its commit point.
    let mut lost = store.batch();
    lost.put("bkt", "never", &b"N"[..], PutMeta::default())
        .unwrap();
    std::mem::forget(lost);
    assert_eq!(raw_keys(&config, "staging").len(), 3);
    drop(store);

    let store = S3Store::open(&config).unwrap();
    assert_eq!(store.head("bkt", "out/a").unwrap(), a);
    assert_eq!(store.head("bkt", "out/b").unwrap(), b);
    assert_eq!(read_all(&store, "out/a", None).1, b"AAA");
    assert!(matches!(
        store.head("bkt", "doomed"),
        Err(Error::NoSuchKey { .. })
    ));
    assert!(matches!(
        store.head("bkt", "never"),
        Err(Error::NoSuchKey { .. })
    ));
    assert_eq!(raw_keys(&config, "staging"), Vec::<String>::new());
    assert_eq!(raw_keys(&config, "commits"), Vec::<String>::new());
    // Rolling forward again finds nothing to do.
    drop(store);
    let store = S3Store::open(&config).unwrap();
    assert_eq!(store.head("bkt", "out/b").unwrap(), b);
}

#[test]
fn an_unreachable_service_is_a_backend_error_that_names_it() {
    // A port nothing listens on: taken, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = S3Config {
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        region: "us-east-1".into(),
        bucket: "zvm".into(),
        access_key_id: Some("k".into()),
        secret_access_key: Some("s".into()),
        allow_http: true,
        ..S3Config::default()
    };
    let err = S3Store::open(&config).unwrap_err();
    assert!(matches!(err, Error::Backend { .. }), "{err}");
    assert!(err.to_string().contains("s3://zvm/"), "{err}");
    let err = S3Store::open(&S3Config {
        bucket: String::new(),
        ..config
    })
    .unwrap_err();
    assert!(err.to_string().contains("no S3 bucket"), "{err}");
}

#[test]
fn a_writer_recovers_only_its_own_batches_and_leaves_another_writers_alone() {
    let Some(server) = server() else { return };
    let prefix = format!("writers-{}", std::process::id());
    let writer = |w: &str| S3Config {
        writer: Some(w.into()),
        ..server.config(&prefix)
    };
    let (config_a, config_b) = (writer("node-a"), writer("node-b"));
    let a = S3Store::open(&config_a).unwrap();
    assert_eq!(a.writer(), Some("node-a"));
    a.create_bucket("bkt").unwrap();

    // Writer A: one batch past its commit point, one staged and never committed.
    let mut batch = a.batch();
    let out = batch
        .put("bkt", "out/a", &b"AAA"[..], meta(Some("text/plain"), &[]))
        .unwrap();
    batch.commit_stopping_after_record().unwrap();
    let mut lost = a.batch();
    lost.put("bkt", "never", &b"N"[..], PutMeta::default())
        .unwrap();
    std::mem::forget(lost);
    let config = server.config(&prefix);
    assert_eq!(raw_keys(&config, "writers/node-a/commits").len(), 1);
    assert_eq!(raw_keys(&config, "writers/node-a/staging").len(), 2);
    assert_eq!(raw_keys(&config, "commits"), Vec::<String>::new());

    // Writer B (and a process without a writer id) opening the same prefix touch neither.
    let b = S3Store::open(&config_b).unwrap();
    drop(S3Store::open(&config).unwrap());
    assert_eq!(raw_keys(&config, "writers/node-a/commits").len(), 1);
    assert_eq!(raw_keys(&config, "writers/node-a/staging").len(), 2);
    assert!(matches!(
        b.head("bkt", "out/a"),
        Err(Error::NoSuchKey { .. })
    ));

    // B's own batches stage and commit in its namespace; the objects are shared.
    let mut batch = b.batch();
    let from_b = batch
        .put("bkt", "out/b", &b"BB"[..], PutMeta::default())
        .unwrap();
    batch.commit().unwrap();
    assert_eq!(a.head("bkt", "out/b").unwrap(), from_b);
    assert_eq!(raw_keys(&config, "writers/node-b"), Vec::<String>::new());

    // A's reopen finishes A's committed batch and deletes its uncommitted staging.
    drop(a);
    let a = S3Store::open(&config_a).unwrap();
    assert_eq!(a.head("bkt", "out/a").unwrap(), out);
    assert_eq!(b.head("bkt", "out/a").unwrap(), out);
    assert!(matches!(
        a.head("bkt", "never"),
        Err(Error::NoSuchKey { .. })
    ));
    assert_eq!(raw_keys(&config, "writers/node-a"), Vec::<String>::new());
}

#[test]
fn a_writer_id_is_lowercase_letters_digits_and_dashes() {
    // Checked before anything is asked of the service, so no server is needed.
    let config = |w: &str| S3Config {
        endpoint: Some("http://127.0.0.1:9".into()),
        region: "us-east-1".into(),
        bucket: "zvm".into(),
        allow_http: true,
        writer: Some(w.into()),
        ..S3Config::default()
    };
    for (bad, says) in [
        ("", "1 to 64 bytes"),
        (&"a".repeat(65), "1 to 64 bytes"),
        ("Node-A", "not 'N'"),
        ("node_a", "not '_'"),
        ("node/a", "not '/'"),
    ] {
        let err = S3Store::open(&config(bad)).unwrap_err().to_string();
        assert!(
            err.contains("writer id") && err.contains(says),
            "{bad:?}: {err}"
        );
    }
}

/// The S3 `Content-Type` of the object under the store's prefix at `rel`.
fn raw_content_type(config: &S3Config, rel: &str) -> Option<String> {
    let s3 = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(config.endpoint.clone().unwrap())
        .with_bucket_name(&config.bucket)
        .with_region(&config.region)
        .with_access_key_id(config.access_key_id.clone().unwrap())
        .with_secret_access_key(config.secret_access_key.clone().unwrap())
        .with_allow_http(true)
        .build()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let path = object_store::path::Path::parse(format!("{}/{rel}", config.prefix)).unwrap();
    runtime.block_on(async {
        let got = s3
            .get_opts(
                &path,
                object_store::GetOptions {
                    head: true,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        got.attributes
            .get(&object_store::Attribute::ContentType)
            .map(|v| v.to_string())
    })
}

#[test]
fn a_job_commit_lands_only_when_applied_and_applies_again_harmlessly() {
    let Some(server) = server() else { return };
    let (config, store) = store(&server, "jobcommit");
    store.create_bucket("two").unwrap();
    let big_len = zvm_store::s3::SINGLE_PUT_BYTES as u64 + 4321;
    let big_etag = {
        let mut hasher = blake3::Hasher::new();
        io::copy(
            &mut Generated {
                left: big_len,
                state: 3,
            },
            &mut hasher,
        )
        .unwrap();
        hasher.finalize().to_hex().to_string()
    };

    // Staged by two processes, as a job's members on two nodes would.
    let other = S3Store::open(&S3Config {
        writer: Some("other".into()),
        ..config.clone()
    })
    .unwrap();
    let m = meta(Some("text/csv"), &[("job", "j1")]);
    let a = store
        .stage_object("jobs/j1/0", "bkt", "out/a", &b"a,b\n1,2\n"[..], m.clone())
        .unwrap();
    let big = other
        .stage_object(
            "jobs/j1/1",
            "two",
            "out/big",
            Generated {
                left: big_len,
                state: 3,
            },
            PutMeta::default(),
        )
        .unwrap();
    assert_eq!((big.size, big.etag.as_str()), (big_len, big_etag.as_str()));
    let puts = [
        StagedPut {
            bucket: "bkt".into(),
            key: "out/a".into(),
            staged: "jobs/j1/0".into(),
        },
        StagedPut {
            bucket: "two".into(),
            key: "out/big".into(),
            staged: "jobs/j1/1".into(),
        },
    ];
    let invisible = |store: &S3Store| {
        assert!(matches!(
            store.head("bkt", "out/a"),
            Err(Error::NoSuchKey { .. })
        ));
        assert!(matches!(
            store.head("two", "out/big"),
            Err(Error::NoSuchKey { .. })
        ));
    };
    invisible(&store);
    store.write_commit_record("jobs/j1/commit", &puts).unwrap();
    invisible(&store);
    let record = store
        .get_raw("jobs/j1/commit")
        .unwrap()
        .expect("the record");
    assert!(String::from_utf8(record).unwrap().contains("jobs/j1/1"));

    // Applied by another process, then again, then by two at once.
    assert!(other.apply_commit_record("jobs/j1/commit").unwrap());
    let check = |store: &S3Store| {
        let (info, data) = read_all(store, "out/a", None);
        assert_eq!((&info, data.as_slice()), (&a, &b"a,b\n1,2\n"[..]));
        assert_eq!(
            (info.content_type, info.user),
            (m.content_type.clone(), m.user.clone())
        );
        let mut got = store.get("two", "out/big", None).unwrap();
        assert_eq!(got.info, big);
        let mut hasher = blake3::Hasher::new();
        io::copy(&mut got.body, &mut hasher).unwrap();
        assert_eq!(hasher.finalize().to_hex().to_string(), big_etag);
    };
    check(&store);
    assert_eq!(
        raw_content_type(&config, "objects/bkt/out.1a").as_deref(),
        Some("text/csv")
    );
    assert!(store.apply_commit_record("jobs/j1/commit").unwrap());
    std::thread::scope(|s| {
        let one = s.spawn(|| store.apply_commit_record("jobs/j1/commit"));
        let two = s.spawn(|| other.apply_commit_record("jobs/j1/commit"));
        assert!(one.join().unwrap().unwrap());
        assert!(two.join().unwrap().unwrap());
    });
    check(&store);
    // Apply deletes nothing.
    assert_eq!(raw_keys(&config, "jobs/j1").len(), 3);

    // Cleanup: the staged objects and the record go, the objects stay.
    assert_eq!(store.delete_raw_prefix("jobs/j1").unwrap(), 3);
    assert_eq!(raw_keys(&config, "jobs/j1"), Vec::<String>::new());
    assert!(!store.apply_commit_record("jobs/j1/commit").unwrap());
    assert_eq!(store.get_raw("jobs/j1/commit").unwrap(), None);
    check(&other);
    assert_eq!(store.delete_raw_prefix("jobs/j1").unwrap(), 0);
}

#[test]
fn a_job_commit_skips_staged_objects_already_gone_and_refuses_bad_records() {
    let Some(server) = server() else { return };
    let (config, store) = store(&server, "jobcommit-edges");

    // No record: nothing to apply.
    assert!(!store.apply_commit_record("jobs/none/commit").unwrap());

    // A record whose staged object is gone (cleanup began after an apply): skipped.
    store
        .stage_object("jobs/j2/s/0", "bkt", "gone", &b"G"[..], PutMeta::default())
        .unwrap();
    let kept = store
        .stage_object("jobs/j2/t/0", "bkt", "kept", &b"K"[..], PutMeta::default())
        .unwrap();
    let put = |key: &str, staged: &str| StagedPut {
        bucket: "bkt".into(),
        key: key.into(),
        staged: staged.into(),
    };
    store
        .write_commit_record(
            "jobs/j2/commit",
            &[put("gone", "jobs/j2/s/0"), put("kept", "jobs/j2/t/0")],
        )
        .unwrap();
    assert_eq!(store.delete_raw_prefix("jobs/j2/s").unwrap(), 1);
    assert!(store.apply_commit_record("jobs/j2/commit").unwrap());
    assert!(matches!(
        store.head("bkt", "gone"),
        Err(Error::NoSuchKey { .. })
    ));
    assert_eq!(store.head("bkt", "kept").unwrap(), kept);

    // Records that cannot be applied are refused before their commit point.
    let err = store
        .write_commit_record(
            "jobs/j3/commit",
            &[put("k", "jobs/j2/t/0"), put("k", "jobs/j2/t/0")],
        )
        .unwrap_err();
    assert!(err.to_string().contains("named twice"), "{err}");
    let err = store
        .write_commit_record(
            "jobs/j3/commit",
            &[StagedPut {
                bucket: "nobucket".into(),
                ..put("k", "jobs/j2/t/0")
            }],
        )
        .unwrap_err();
    assert!(matches!(err, Error::NoSuchBucket { .. }), "{err}");
    assert_eq!(store.get_raw("jobs/j3/commit").unwrap(), None);
    let err = store
        .stage_object("jobs/j3/0", "nobucket", "k", &b""[..], PutMeta::default())
        .unwrap_err();
    assert!(matches!(err, Error::NoSuchBucket { .. }), "{err}");

    // A record damaged in the store is corrupt, not applied.
    store
        .put_raw("jobs/j4/commit", b"{\"format\":1}".to_vec())
        .unwrap();
    let err = store.apply_commit_record("jobs/j4/commit").unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    store
        .put_raw(
            "jobs/j4/commit",
            br#"{"format":1,"puts":[{"bucket":"bkt","key":"k","staged":"objects/bkt/x"}]}"#
                .to_vec(),
        )
        .unwrap();
    let err = store.apply_commit_record("jobs/j4/commit").unwrap_err();
    assert!(err.to_string().contains("reserved"), "{err}");

    // Raw objects round trip; paths outside the caller's part of the prefix are refused.
    store.put_raw("state/x", b"one".to_vec()).unwrap();
    store.put_raw("state/x", b"two".to_vec()).unwrap();
    assert_eq!(
        store.get_raw("state/x").unwrap().as_deref(),
        Some(&b"two"[..])
    );
    assert_eq!(store.get_raw("state/y").unwrap(), None);
    for (bad, says) in [
        ("../x", "`..`"),
        ("/state/x", "start with `/`"),
        ("state//x", "empty segment"),
        ("state/", "empty segment"),
        ("", "empty"),
        ("objects/bkt/x", "reserved"),
        ("commits/1", "reserved"),
    ] {
        for err in [
            store.put_raw(bad, Vec::new()).unwrap_err(),
            store.get_raw(bad).unwrap_err(),
            store.delete_raw_prefix(bad).unwrap_err(),
            store.apply_commit_record(bad).unwrap_err(),
            store
                .stage_object(bad, "bkt", "k", &b""[..], PutMeta::default())
                .unwrap_err(),
            store.write_commit_record(bad, &[]).unwrap_err(),
            store
                .write_commit_record("jobs/j5/commit", &[put("k", bad)])
                .unwrap_err(),
        ] {
            let text = err.to_string();
            assert!(
                text.contains(says) && text.contains("store path"),
                "{bad:?}: {text}"
            );
        }
    }
    let too_long = format!("state/{}", "x".repeat(1100));
    let err = store.put_raw(&too_long, Vec::new()).unwrap_err();
    assert!(err.to_string().contains("S3 allows 1024"), "{err}");
    assert_eq!(raw_keys(&config, "objects/bkt").len(), 1, "only `kept`");
}

#[test]
fn an_object_location_is_the_s3_bucket_and_key_and_only_s3_has_job_commits() {
    let Some(server) = server() else { return };
    let (config, s3) = store(&server, "location");
    assert_eq!(
        s3.object_location("bkt", "logs/2024-01.txt").unwrap(),
        (
            config.bucket.clone(),
            format!("{}/objects/bkt/logs.12024-01.0txt", config.prefix)
        )
    );
    let err = s3.object_location("bkt", "").unwrap_err();
    assert!(matches!(err, Error::InvalidKey { .. }), "{err}");

    // Through `Store`: forwarded to S3, an error naming the store on the embedded one.
    let dir = tempfile::tempdir().unwrap();
    let local = Store::Local(ObjectStore::open(dir.path()).unwrap());
    local.create_bucket("bkt").unwrap();
    let s3 = Store::S3(s3);
    assert!(s3.s3().is_some() && local.s3().is_none());
    s3.put_raw("state/x", b"v".to_vec()).unwrap();
    assert_eq!(s3.get_raw("state/x").unwrap().as_deref(), Some(&b"v"[..]));
    assert_eq!(s3.delete_raw_prefix("state").unwrap(), 1);
    assert!(s3.object_location("bkt", "k").is_ok());
    let errors = [
        local.put_raw("state/x", Vec::new()).unwrap_err(),
        local.get_raw("state/x").unwrap_err(),
        local.delete_raw_prefix("state").unwrap_err(),
        local
            .stage_object("jobs/j/0", "bkt", "k", &b""[..], PutMeta::default())
            .unwrap_err(),
        local.write_commit_record("jobs/j/commit", &[]).unwrap_err(),
        local.apply_commit_record("jobs/j/commit").unwrap_err(),
        local.object_location("bkt", "k").unwrap_err(),
    ];
    for err in errors {
        let text = err.to_string();
        assert!(
            text.contains("needs the S3 backend")
                && text.contains(&dir.path().display().to_string()),
            "{text}"
        );
    }
}
