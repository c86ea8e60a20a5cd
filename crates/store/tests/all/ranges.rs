//! Ranged gets: every form of HTTP byte range, and the unsatisfiable ones.

use zvm_store::{ByteRange, Error};

use crate::support::{etag, put, read, store};

#[test]
fn every_range_form_returns_its_bytes() {
    let (_dir, store) = store();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let whole = put(&store, "k", &data);
    let cases: &[(&str, std::ops::Range<usize>)] = &[
        ("0-0", 0..1),
        ("0-99", 0..100),
        ("99990-99999", 99_990..100_000),
        ("99990-200000", 99_990..100_000),
        ("70000-", 70_000..100_000),
        ("0-", 0..100_000),
        ("-1", 99_999..100_000),
        ("-500", 99_500..100_000),
        ("-100000", 0..100_000),
        ("-999999", 0..100_000),
    ];
    for (spec, want) in cases {
        let range: ByteRange = spec.parse().unwrap();
        let mut got = store.get("bkt", "k", Some(range)).unwrap();
        assert_eq!(
            got.range,
            Some(want.start as u64..want.end as u64),
            "{spec}"
        );
        assert_eq!(got.body.remaining(), want.len() as u64, "{spec}");
        // The metadata is the whole object's, as HTTP sends it with a 206.
        assert_eq!(got.info, whole, "{spec}");
        let mut content = Vec::new();
        std::io::Read::read_to_end(&mut got.body, &mut content).unwrap();
        assert!(content == data[want.clone()], "{spec}: wrong bytes");
    }
    let (info, content) = read(&store, "k", None);
    assert_eq!(info.etag, etag(&content));
    assert_eq!(store.get("bkt", "k", None).unwrap().range, None);
}

#[test]
fn unsatisfiable_ranges_are_their_own_error() {
    let (_dir, store) = store();
    put(&store, "ten", b"0123456789");
    put(&store, "empty", b"");
    for (key, spec) in [
        ("ten", "10-20"),
        ("ten", "10-"),
        ("ten", "-0"),
        ("empty", "0-0"),
        ("empty", "0-"),
        ("empty", "-5"),
    ] {
        let range: ByteRange = spec.parse().unwrap();
        let err = store.get("bkt", key, Some(range)).unwrap_err();
        match &err {
            Error::InvalidRange {
                bucket,
                key: k,
                range: r,
                size,
            } => {
                assert_eq!((bucket.as_str(), k.as_str(), *r), ("bkt", key, range));
                assert_eq!(*size, if key == "ten" { 10 } else { 0 });
            }
            other => panic!("{key} {spec}: {other}"),
        }
        assert!(
            err.to_string().contains(&format!("range `{spec}`")),
            "{err}"
        );
    }
    // A missing key is still a missing key, whatever the range.
    let range = "0-1".parse().ok();
    assert!(matches!(
        store.get("bkt", "nope", range),
        Err(Error::NoSuchKey { .. })
    ));
}

#[test]
fn the_http_header_form_parses() {
    let (_dir, store) = store();
    put(&store, "k", b"abcdef");
    let range = ByteRange::parse_header("bytes=2-3").unwrap();
    assert_eq!(read(&store, "k", Some(range)).1, b"cd");
    let range = ByteRange::parse_header("bytes=-2").unwrap();
    assert_eq!(read(&store, "k", Some(range)).1, b"ef");
    assert!(matches!(
        ByteRange::parse_header("bytes=3-2"),
        Err(Error::MalformedRange { .. })
    ));
}
