//! zvm's module policy: what a program may import and use, checked before it ever runs.
//!
//! Wasm validation (done by wasmtime with zvm's engine profile) already refuses features the
//! engine has switched off — threads and atomics, shared memories. On top of that a zvm
//! program must be a WASI command: every import must be one of zvm's preview1 functions (the
//! linker then checks each signature), and it must export `_start` and, if it imports
//! anything, its linear memory as `memory`. Refusals name the import or export at fault.

use wasmtime::wasmparser::{Parser, Payload};
use wasmtime::{ExternType, Module};

use crate::wasi;

/// Checks of the raw binary that give clearer messages than the validator would.
pub fn check_binary(bytes: &[u8]) -> Result<(), String> {
    for payload in Parser::new(0).parse_all(bytes) {
        // Malformed input is reported by the validator with its offset; stop looking here.
        let Ok(payload) = payload else { return Ok(()) };
        match payload {
            Payload::MemorySection(reader) => {
                for mem in reader.into_iter().flatten() {
                    if mem.shared {
                        return Err("the module declares a shared memory (wasm threads), which zvm refuses: threads make runs non-deterministic".into());
                    }
                }
            }
            Payload::ImportSection(reader) => {
                for import in reader.into_imports().flatten() {
                    if let wasmtime::wasmparser::TypeRef::Memory(mem) = import.ty
                        && mem.shared
                    {
                        return Err(format!(
                            "import `{}::{}` is a shared memory (wasm threads), which zvm refuses: threads make runs non-deterministic",
                            import.module, import.name
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks a compiled module's imports and exports against zvm's policy.
pub fn check_module(module: &Module) -> Result<(), String> {
    let mut imports_any = false;
    for import in module.imports() {
        imports_any = true;
        if import.module() != wasi::MODULE {
            return Err(format!(
                "import `{}::{}` is not provided: zvm provides only `{}` functions",
                import.module(),
                import.name(),
                wasi::MODULE
            ));
        }
        if !matches!(import.ty(), ExternType::Func(_)) {
            return Err(format!(
                "import `{}::{}` is not a function: zvm provides only functions",
                import.module(),
                import.name()
            ));
        }
    }
    match module.get_export("_start") {
        Some(ExternType::Func(f)) if f.params().len() == 0 && f.results().len() == 0 => {}
        Some(_) => {
            return Err(
                "export `_start` must be a function with no parameters and no results".into(),
            );
        }
        None => {
            return Err(
                "the module exports no `_start`: zvm runs WASI commands, not libraries or reactors"
                    .into(),
            );
        }
    }
    if imports_any && !matches!(module.get_export("memory"), Some(ExternType::Memory(_))) {
        return Err(
            "the module does not export its memory as `memory`, which WASI functions need".into(),
        );
    }
    Ok(())
}
