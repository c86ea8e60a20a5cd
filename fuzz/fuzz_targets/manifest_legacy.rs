//! Legacy ZeroVM manifests: any text through `parse_legacy` never panics, every error starts
//! with the origin, and every manifest survives its canonical form.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let origin = Path::new(zvm_fuzz::MANIFEST_ORIGIN);
    zvm_fuzz::check_manifest(zvm_manifest::parse_legacy(&text, origin));
});
