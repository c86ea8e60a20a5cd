//! Same input, same output: wasm-smith turns the input into a module that may call any of
//! zvm's WASI functions (and exports `_start` and `memory`, as a WASI command does), which
//! runs twice with the same manifest. The two reports must be identical apart from the wall
//! time (state, exit code, fuel used, peak memory, every channel's counters and etag, the
//! final memory's etag), and so must every captured output.
//!
//! The modules use every feature zvm's engine accepts except threads (which zvm refuses):
//! floats, SIMD and relaxed SIMD included. NaN bits are left to zvm's engine profile
//! (`cranelift_nan_canonicalization`, deterministic relaxed SIMD) rather than canonicalised
//! by wasm-smith, because that profile is what is under test.
//!
//! `ZVM_FUZZ_VERBOSE=1` prints each module's outcome and where the time went.

#![no_main]

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use zvm_vm::Error;

/// Fuel per run: enough for loops to do something, small enough for many runs a second.
const FUEL: u64 = 1_000_000;
/// Far beyond what the fuel takes, so that fuel, not the clock, ends every run.
const TIMEOUT: Duration = Duration::from_secs(20);

fn smith_config() -> &'static wasm_smith::Config {
    static CONFIG: OnceLock<wasm_smith::Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let imports = zvm_fuzz::all_imports_wat();
        wasm_smith::Config {
            available_imports: Some(wat_to_wasm(&imports)),
            exports: Some(wat_to_wasm(
                r#"(module (func (export "_start")) (memory (export "memory") 1))"#,
            )),
            threads_enabled: false,
            shared_everything_threads_enabled: false,
            // wasmtime is built without its GC feature, so GC types and exceptions (which
            // need it) are refused at load; generating them would only waste inputs.
            gc_enabled: false,
            exceptions_enabled: false,
            custom_descriptors_enabled: false,
            custom_page_sizes_enabled: false,
            wide_arithmetic_enabled: false,
            memory64_enabled: false,
            max_memories: 1,
            max_tables: 1,
            max_table_elements: 1_000,
            max_memory32_bytes: zvm_fuzz::MEMORY,
            max_funcs: 20,
            max_instructions: 200,
            canonicalize_nans: false,
            ..wasm_smith::Config::default()
        }
    })
}

fn wat_to_wasm(wat: &str) -> Vec<u8> {
    wat::parse_str(wat).expect("valid wat")
}

fuzz_target!(|data: &[u8]| {
    let t0 = std::time::Instant::now();
    let mut u = Unstructured::new(data);
    let Ok(module) = wasm_smith::Module::new(smith_config().clone(), &mut u) else {
        return;
    };
    let wasm = module.to_bytes();
    let t1 = std::time::Instant::now();
    let program = match zvm_fuzz::runtime().load(Path::new("smith.wasm"), &wasm, None) {
        Ok(program) => program,
        // A feature the engine refuses; nothing ran, so nothing can differ.
        Err(Error::Refused { reason, .. }) => {
            if std::env::var_os("ZVM_FUZZ_VERBOSE").is_some() {
                eprintln!("refused: {reason}");
            }
            return;
        }
        Err(e) => panic!("load failed: {e}"),
    };
    let t2 = std::time::Instant::now();
    let manifest = zvm_fuzz::manifest(Vec::new(), FUEL, TIMEOUT);
    let (first, first_out) = zvm_fuzz::run(&program, &manifest);
    let (second, second_out) = zvm_fuzz::run(&program, &manifest);
    match (first, second) {
        (Ok(mut a), Ok(mut b)) => {
            a.wall_time_us = 0;
            b.wall_time_us = 0;
            assert_eq!(a, b, "two runs of one module differ");
            assert_eq!(first_out, second_out, "two runs wrote different bytes");
            if std::env::var_os("ZVM_FUZZ_VERBOSE").is_some() {
                eprintln!(
                    "ran: {} ({} bytes; generate {:?}, load {:?}, two runs {:?})",
                    a.state_text,
                    wasm.len(),
                    t1 - t0,
                    t2 - t1,
                    t2.elapsed()
                );
            }
        }
        // The setup of a run cannot fail for reasons of the guest; a host panic is a bug.
        (a, b) => panic!("a run failed: {:?} / {:?}", a.err(), b.err()),
    }
});
