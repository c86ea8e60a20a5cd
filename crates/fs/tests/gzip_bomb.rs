//! A gzip bomb costs the host no more memory than the decompressed-size limit.
//!
//! A compressed image is decompressed into memory, so the limit is what stands between a
//! kilobyte-sized file and gigabytes of host memory. This test binary counts every heap
//! allocation (its own global allocator) and checks that refusing a bomb that claims 1 GiB,
//! under a limit of 8 MiB, never holds much more than those 8 MiB. It is a binary of its own
//! because the count is process-wide: another test running beside it would blur the figure.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};

use flate2::Compression;
use flate2::write::GzEncoder;
use zvm_fs::image::{Image, ImageError, ImageLimits};

/// Bytes allocated now, and the most at any moment since the last reset.
static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

struct Counting;

impl Counting {
    fn grew(by: usize) {
        let now = CURRENT.fetch_add(by, Ordering::SeqCst) + by;
        PEAK.fetch_max(now, Ordering::SeqCst);
    }
}

// SAFETY: every call is forwarded to the system allocator with the caller's arguments; the
// counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            Counting::grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for `alloc`.
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            if new_size >= layout.size() {
                Counting::grew(new_size - layout.size());
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::SeqCst);
            }
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The decompressed-size limit under test.
const LIMIT: u64 = 8 << 20;

/// What the decoder and the test's own bookkeeping may hold besides the buffer: flate2's
/// inflate state and input buffer take some tens of kilobytes.
const SLACK: usize = 1 << 20;

#[test]
fn a_gzip_bomb_is_refused_having_held_at_most_the_limit() {
    // One gzip member of 1 MiB of zeros is about a kilobyte; 1024 of them, one after the
    // other, are a valid gzip file of about a megabyte that decompresses to 1 GiB.
    let mut member = GzEncoder::new(Vec::new(), Compression::best());
    member.write_all(&vec![0; 1 << 20]).unwrap();
    let member = member.finish().unwrap();
    let mut file = tempfile::NamedTempFile::new().unwrap();
    for _ in 0..1024 {
        file.write_all(&member).unwrap();
    }
    file.flush().unwrap();
    let size = std::fs::metadata(file.path()).unwrap().len();
    assert!(size < 2 << 20, "the bomb is {size} bytes");

    let base = CURRENT.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    let result = Image::open_layers_with(&[file.path()], ImageLimits::default(), LIMIT);
    let peak = PEAK.load(Ordering::SeqCst) - base;

    let Err(err) = result else {
        panic!("a bomb over the limit was accepted");
    };
    assert!(
        matches!(&err, ImageError::DecompressedTooLarge { image, limit: LIMIT } if image == file.path()),
        "{err:?}"
    );
    assert!(
        peak <= LIMIT as usize + SLACK,
        "refusing the bomb held {peak} bytes at its peak, over the {LIMIT}-byte limit"
    );
    // And it did fill the buffer up to the limit: the count is not blind.
    assert!(peak >= LIMIT as usize, "only {peak} bytes at the peak");
}
