//! Many threads on one store: puts of the same key never tear, the last rename wins, and
//! readers always see a whole object whose metadata matches its content.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use zvm_store::{Error, ObjectStore};

use crate::support::{etag, meta, store};

const WRITERS: usize = 6;
const ROUNDS: usize = 15;

/// The content writer `w` puts in round `r`: its length and bytes identify both.
fn content(w: usize, r: usize) -> Vec<u8> {
    let len = 1000 + w * 37_001 + r * 1013;
    (0..len).map(|i| (w * 31 + r * 7 + i % 13) as u8).collect()
}

fn check_whole(store: &ObjectStore, key: &str) -> Option<(usize, usize)> {
    let mut got = match store.get("bkt", key, None) {
        Ok(got) => got,
        Err(Error::NoSuchKey { .. }) => return None,
        Err(e) => panic!("{e}"),
    };
    let mut data = Vec::new();
    got.body.read_to_end(&mut data).unwrap();
    let w: usize = got.info.user["writer"].parse().unwrap();
    let r: usize = got.info.user["round"].parse().unwrap();
    assert_eq!(got.info.size, data.len() as u64);
    assert_eq!(got.info.etag, etag(&data), "torn object");
    assert!(
        data == content(w, r),
        "metadata of one put with data of another"
    );
    Some((w, r))
}

#[test]
fn concurrent_puts_of_one_key_never_tear() {
    let (_dir, store) = store();
    let done = AtomicBool::new(false);
    let last = thread::scope(|s| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let store = &store;
                s.spawn(move || {
                    let mut infos = Vec::new();
                    for r in 0..ROUNDS {
                        let m = meta(
                            None,
                            &[("writer", &w.to_string()), ("round", &r.to_string())],
                        );
                        infos.push(store.put("bkt", "hot", &content(w, r)[..], m).unwrap());
                    }
                    infos
                })
            })
            .collect();
        let readers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let mut seen = 0;
                    while !done.load(Ordering::Relaxed) {
                        seen += usize::from(check_whole(&store, "hot").is_some());
                        // head and list come from the index: they too name a whole put.
                        if let Ok(info) = store.head("bkt", "hot") {
                            let w: usize = info.user["writer"].parse().unwrap();
                            let r: usize = info.user["round"].parse().unwrap();
                            assert_eq!(info.etag, etag(&content(w, r)));
                        }
                    }
                    seen
                })
            })
            .collect();
        let infos: Vec<_> = writers
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        done.store(true, Ordering::Relaxed);
        for reader in readers {
            reader.join().unwrap();
        }
        infos
    });
    // The winner is one of the puts, and the index agrees with the file.
    let (w, r) = check_whole(&store, "hot").unwrap();
    let head = store.head("bkt", "hot").unwrap();
    assert_eq!(head.etag, etag(&content(w, r)));
    assert!(last.contains(&head));
    let (page, _) = store.list("bkt", "", None, 10).unwrap();
    assert_eq!(page, vec![head.clone()]);
    // And so does what a reopen reads from disk.
    let root = store.root().to_path_buf();
    drop(store);
    let store = ObjectStore::open(root).unwrap();
    assert_eq!(store.head("bkt", "hot").unwrap(), head);
}

#[test]
fn concurrent_puts_and_deletes_of_many_keys() {
    let (_dir, store) = store();
    thread::scope(|s| {
        for w in 0..WRITERS {
            let store = &store;
            s.spawn(move || {
                for r in 0..ROUNDS {
                    let key = format!("k{}", (w + r) % 5);
                    if r % 4 == 3 {
                        store.delete("bkt", &key).unwrap();
                    } else {
                        let m = meta(
                            None,
                            &[("writer", &w.to_string()), ("round", &r.to_string())],
                        );
                        store.put("bkt", &key, &content(w, r)[..], m).unwrap();
                    }
                }
            });
        }
        s.spawn(|| {
            for _ in 0..50 {
                let (page, _) = store.list("bkt", "", None, 100).unwrap();
                assert!(page.windows(2).all(|p| p[0].key < p[1].key));
            }
        });
    });
    let (page, _) = store.list("bkt", "", None, 100).unwrap();
    for info in &page {
        check_whole(&store, &info.key).expect("listed, so present");
    }
    for k in 0..5 {
        let key = format!("k{k}");
        assert_eq!(
            page.iter().any(|i| i.key == key),
            store.head("bkt", &key).is_ok()
        );
    }
}

#[test]
fn a_bucket_deleted_under_a_put_is_either_kept_or_refused() {
    for _ in 0..10 {
        let (_dir, store) = store();
        store.create_bucket("gone").unwrap();
        thread::scope(|s| {
            let put = s.spawn(|| store.put("gone", "k", &content(1, 1)[..], Default::default()));
            let del = s.spawn(|| store.delete_bucket("gone"));
            match (put.join().unwrap(), del.join().unwrap()) {
                (Ok(_), Err(Error::BucketNotEmpty { .. })) => {
                    assert!(store.head("gone", "k").is_ok());
                }
                (Err(Error::NoSuchBucket { .. }), Ok(())) => {
                    assert!(store.list_buckets().iter().all(|b| b.name != "gone"));
                }
                (p, d) => panic!("put {p:?}, delete_bucket {d:?}"),
            }
        });
    }
}
