//! The locator against a real SeaweedFS (`weed mini`, started by the test): objects put
//! through zvm's S3 store are found on the volume server that holds them, whatever their
//! key, and what cannot be located says why.
//!
//! Skips when `weed` is missing and `ZVM_SKIP_S3=1`, as the store's S3 tests do.

use std::io::Read;
use std::sync::{Arc, Mutex, Weak};

use zvm_cluster::locate::{LocateError, SeaweedLocator};
use zvm_store::s3::testing::SeaweedFs;
use zvm_store::{PutMeta, S3Store};

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

/// A store under a prefix of the test's own, with bucket `bkt`.
fn store(server: &SeaweedFs, test: &str) -> S3Store {
    let store = S3Store::open(&server.config(&format!("{test}-{}", std::process::id()))).unwrap();
    store.create_bucket("bkt").unwrap();
    store
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `len` bytes that do not compress, so that no layer can shrink them away.
fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect()
}

#[test]
fn an_object_is_found_on_the_volume_server_that_holds_it() {
    let Some(server) = server() else {
        return;
    };
    let store = store(&server, "locate");
    let locator = SeaweedLocator::new(&server.filer_url, &server.master_url).unwrap();
    let rt = runtime();
    // Keys whose S3 keys need escaping in a URL path: `%`, `?`, `#`, spaces, `+`, non-ASCII.
    for key in ["input/part-0", "odd key?#%20+&;=[]|\\ë", "dir/../x"] {
        store
            .put("bkt", key, &noise(64 << 10)[..], PutMeta::default())
            .unwrap();
        let (s3_bucket, s3_key) = store.object_location("bkt", key).unwrap();
        let servers = rt
            .block_on(locator.volume_servers(&s3_bucket, &s3_key))
            .unwrap_or_else(|e| panic!("{key:?}: {e}"));
        assert_eq!(servers, [server.volume_url.as_str()], "{key:?}");
    }
    // A multipart upload: many chunks, the first found by its offset.
    let big = noise(zvm_store::s3::SINGLE_PUT_BYTES + (1 << 20));
    store
        .put("bkt", "big", &big[..], PutMeta::default())
        .unwrap();
    let (s3_bucket, s3_key) = store.object_location("bkt", "big").unwrap();
    let servers = rt
        .block_on(locator.volume_servers(&s3_bucket, &s3_key))
        .unwrap();
    assert_eq!(servers, [server.volume_url.as_str()]);
    // And it reads back: the locator asked, it changed nothing.
    let mut got = store.get("bkt", "big", None).unwrap();
    let mut read = Vec::new();
    got.body.read_to_end(&mut read).unwrap();
    assert!(read == big);
}

#[test]
fn what_cannot_be_located_says_why() {
    let Some(server) = server() else {
        return;
    };
    let store = store(&server, "locate-errors");
    let locator = SeaweedLocator::new(&server.filer_url, &server.master_url).unwrap();
    let rt = runtime();

    // An empty object has no chunks, so no volume.
    store
        .put("bkt", "empty", &b""[..], PutMeta::default())
        .unwrap();
    let (s3_bucket, s3_key) = store.object_location("bkt", "empty").unwrap();
    assert_eq!(
        rt.block_on(locator.volume_servers(&s3_bucket, &s3_key))
            .unwrap(),
        Vec::<String>::new()
    );

    // A missing object names itself and the filer asked.
    let (s3_bucket, s3_key) = store.object_location("bkt", "missing").unwrap();
    let err = rt
        .block_on(locator.volume_servers(&s3_bucket, &s3_key))
        .unwrap_err();
    assert!(matches!(err, LocateError::NotFound { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&s3_key) && text.contains(&server.filer_url) && text.contains("no entry"),
        "{text}"
    );

    // A key that is a directory in the filer (a prefix of stored keys), not an object.
    let dir = s3_key.rsplit_once('/').unwrap().0;
    let err = rt
        .block_on(locator.volume_servers(&s3_bucket, dir))
        .unwrap_err();
    assert!(matches!(err, LocateError::IsDirectory { .. }), "{err}");

    // A filer that does not answer: the error names it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nobody = format!("http://127.0.0.1:{port}");
    let down = SeaweedLocator::new(&nobody, &server.master_url).unwrap();
    let err = rt
        .block_on(down.volume_servers(&s3_bucket, &s3_key))
        .unwrap_err();
    assert!(matches!(err, LocateError::Request { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&nobody) && text.contains("filer") && text.to_lowercase().contains("connect"),
        "{text}"
    );

    // A master that is not SeaweedFS's (here, the filer): an answer it cannot use.
    let (s3_bucket, s3_key) = {
        store
            .put("bkt", "x", &noise(1 << 10)[..], PutMeta::default())
            .unwrap();
        store.object_location("bkt", "x").unwrap()
    };
    let wrong = SeaweedLocator::new(&server.filer_url, &server.filer_url).unwrap();
    let err = rt
        .block_on(wrong.volume_servers(&s3_bucket, &s3_key))
        .unwrap_err();
    assert!(
        matches!(
            err,
            LocateError::Answer {
                service: "master",
                ..
            } | LocateError::Volume { .. }
        ),
        "{err}"
    );
}
