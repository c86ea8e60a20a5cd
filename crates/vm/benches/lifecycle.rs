//! Criterion benches of the VM hot path: a whole zvm VM lifecycle against bare wasmtime with
//! the same engine profile and pool, and the pieces in between. `zvm bench` prints the
//! side-by-side table with ratios; these are for finding where time goes.
//!
//! `cargo bench -p zvm-vm` runs them; `cargo bench -p zvm-vm -- --test` only checks they work.

use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use zvm_channel::Endpoint;
use zvm_manifest::Manifest;
use zvm_vm::{Allocator, PoolConfig, RunIo, Runtime, RuntimeConfig, State};

const TRIVIAL: &str = r#"(module (memory (export "memory") 1) (func (export "_start")))"#;

const HELLO: &str = r#"(module
    (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
    (memory (export "memory") 1)
    (data (i32.const 16) "hello\n")
    (func (export "_start")
        (i32.store (i32.const 0) (i32.const 16))
        (i32.store (i32.const 4) (i32.const 6))
        (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

fn quiet() -> RunIo {
    RunIo::default()
        .bind("stdin", Endpoint::Reader(Box::new(std::io::empty())))
        .bind("stdout", Endpoint::Writer(Box::new(std::io::sink())))
}

fn lifecycle(c: &mut Criterion) {
    let allocator = Allocator::Pooling(PoolConfig::default());
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: None,
        journal: None,
        allocator,
    })
    .unwrap();
    let mut group = c.benchmark_group("lifecycle");
    for (name, wat) in [("trivial", TRIVIAL), ("hello", HELLO)] {
        let program = runtime.load(Path::new(name), wat.as_bytes(), None).unwrap();
        let manifest = Manifest::for_program(name);
        group.bench_function(format!("zvm/{name}"), |b| {
            b.iter(|| {
                let report = program.run(&manifest, quiet()).unwrap();
                assert_eq!(report.state, State::Ok);
            })
        });
    }

    let engine = wasmtime::Engine::new(&zvm_vm::engine_config_for(allocator)).unwrap();
    let module = wasmtime::Module::new(&engine, wat::parse_str(TRIVIAL).unwrap()).unwrap();
    let pre = wasmtime::Linker::<()>::new(&engine)
        .instantiate_pre(&module)
        .unwrap();
    group.bench_function("bare-wasmtime/trivial", |b| {
        b.iter(|| {
            let mut store = wasmtime::Store::new(&engine, ());
            store.set_fuel(u64::MAX).unwrap();
            store.set_epoch_deadline(u64::MAX / 2);
            let instance = pre.instantiate(&mut store).unwrap();
            let start = instance
                .get_typed_func::<(), ()>(&mut store, "_start")
                .unwrap();
            start.call(&mut store, ()).unwrap();
        })
    });
    group.finish();
}

criterion_group!(benches, lifecycle);
criterion_main!(benches);
