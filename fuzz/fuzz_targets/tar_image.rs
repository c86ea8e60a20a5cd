//! Tar images: any bytes, written to a file, through `Image::open_with` with small limits
//! never panic; whatever opens can be walked entirely, and no read returns more than the
//! entry holds (`zvm_fuzz::walk_image`).

#![no_main]

use std::io::{Seek, Write};
use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use zvm_fs::image::{Image, ImageLimits};

/// Small enough that inputs of a few kilobytes run into every limit.
const LIMITS: ImageLimits = ImageLimits {
    max_entries: 256,
    max_index_bytes: 16 << 10,
    max_meta_bytes: 8 << 10,
};

/// One file per process, rewritten for each input: creating a file per input would cost more
/// than indexing it.
fn image_file() -> &'static Mutex<tempfile::NamedTempFile> {
    static FILE: OnceLock<Mutex<tempfile::NamedTempFile>> = OnceLock::new();
    FILE.get_or_init(|| Mutex::new(tempfile::NamedTempFile::new().expect("a temporary file")))
}

fuzz_target!(|data: &[u8]| {
    let mut file = image_file().lock().unwrap();
    let f = file.as_file_mut();
    f.set_len(0).unwrap();
    f.rewind().unwrap();
    f.write_all(data).unwrap();
    f.flush().unwrap();
    match Image::open_with(file.path(), LIMITS) {
        Ok(image) => {
            assert!(image.len() <= LIMITS.max_entries);
            // Offsets from the input's own bytes, so that the fuzzer can steer reads too.
            let offsets: Vec<u64> = data
                .chunks_exact(8)
                .take(4)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap()) % (data.len() as u64 + 2))
                .collect();
            zvm_fuzz::walk_image(&image, &offsets);
        }
        Err(e) => {
            let shown = e.to_string();
            assert!(
                shown.starts_with(&format!("image `{}`", file.path().display())),
                "an image error that does not name the image: {shown}"
            );
        }
    }
});
