//! TOML manifests: any text through `parse_toml` never panics, every error starts with the
//! origin, and every manifest survives its canonical form (`zvm_fuzz::check_manifest`).

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Invalid UTF-8 cannot reach the parser (files are read as strings); decode lossily so
    // that the fuzzer's byte mutations still reach it.
    let text = String::from_utf8_lossy(data);
    let origin = Path::new(zvm_fuzz::MANIFEST_ORIGIN);
    zvm_fuzz::check_manifest(zvm_manifest::parse_toml(&text, origin));
});
