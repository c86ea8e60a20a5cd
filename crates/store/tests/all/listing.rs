//! Listing: key order, prefixes, `start_after`, limits and truncation.

use zvm_store::PutMeta;

use crate::support::{put, store};

fn keys(page: &[zvm_store::ObjectInfo]) -> Vec<&str> {
    page.iter().map(|i| i.key.as_str()).collect()
}

#[test]
fn lists_in_byte_order() {
    let (_dir, store) = store();
    // Byte order, not character or locale order: 'B' < 'a', "a" < "a/" < "a0" < "ab", and
    // multi-byte UTF-8 after ASCII.
    let all = ["B", "a", "a/", "a/b", "a0", "ab", "z", "é", "日本"];
    for key in all.iter().rev() {
        put(&store, key, key.as_bytes());
    }
    let (page, truncated) = store.list("bkt", "", None, 100).unwrap();
    assert_eq!(keys(&page), all);
    assert!(!truncated);
    for (info, key) in page.iter().zip(all) {
        assert_eq!(info.size, key.len() as u64);
    }
}

#[test]
fn prefix_start_after_and_limit() {
    let (_dir, store) = store();
    for key in [
        "logs/1", "logs/2", "logs/3", "logs/30", "logsx", "out/a", "out/b",
    ] {
        put(&store, key, b"x");
    }
    let list = |prefix, after, limit| {
        let (page, truncated) = store.list("bkt", prefix, after, limit).unwrap();
        (
            page.iter().map(|i| i.key.clone()).collect::<Vec<_>>(),
            truncated,
        )
    };
    assert_eq!(
        list("logs/", None, 10),
        (
            vec![
                "logs/1".into(),
                "logs/2".into(),
                "logs/3".into(),
                "logs/30".into()
            ],
            false
        )
    );
    assert_eq!(
        list("logs/", None, 2),
        (vec!["logs/1".into(), "logs/2".into()], true)
    );
    assert_eq!(
        list("logs/", Some("logs/2"), 2),
        (vec!["logs/3".into(), "logs/30".into()], false)
    );
    // Exactly `limit` left is not truncated.
    assert_eq!(
        list("logs/", Some("logs/2"), 1),
        (vec!["logs/3".into()], true)
    );
    // start_after need not be a key, and may sort before the prefix.
    assert_eq!(
        list("logs/", Some("logs/25"), 10),
        (vec!["logs/3".into(), "logs/30".into()], false)
    );
    assert_eq!(
        list("out/", Some("a"), 10),
        (vec!["out/a".into(), "out/b".into()], false)
    );
    // ... or after everything with the prefix.
    assert_eq!(list("logs/", Some("out/"), 10), (vec![], false));
    assert_eq!(list("nothing", None, 10), (vec![], false));
    assert_eq!(list("", Some("out/a"), 10), (vec!["out/b".into()], false));
    assert_eq!(list("logs", None, 10).0.len(), 5);
    // A limit of 0 returns nothing, and says whether anything matched.
    assert_eq!(list("out/", None, 0), (vec![], true));
    assert_eq!(list("zzz", None, 0), (vec![], false));
}

#[test]
fn paging_visits_every_key_once() {
    let (_dir, store) = store();
    let mut want: Vec<String> = (0..57).map(|i| format!("p/{i:03}")).collect();
    for key in &want {
        store.put("bkt", key, &b""[..], PutMeta::default()).unwrap();
    }
    put(&store, "q", b"");
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let (page, truncated) = store.list("bkt", "p/", after.as_deref(), 10).unwrap();
        assert!(page.len() <= 10);
        seen.extend(page.iter().map(|i| i.key.clone()));
        after = page.last().map(|i| i.key.clone());
        if !truncated {
            break;
        }
    }
    want.sort();
    assert_eq!(seen, want);
}

#[test]
fn deleted_and_replaced_objects_list_as_they_are() {
    let (_dir, store) = store();
    put(&store, "a", b"1");
    put(&store, "b", b"2");
    put(&store, "a", b"333");
    store.delete("bkt", "b").unwrap();
    let (page, _) = store.list("bkt", "", None, 10).unwrap();
    assert_eq!(keys(&page), ["a"]);
    assert_eq!(page[0].size, 3);
}
