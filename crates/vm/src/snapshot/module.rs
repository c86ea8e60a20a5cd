//! The two module rewrites a snapshot needs, around binaryen's asyncify pass:
//!
//! - [`prepare`], before asyncify: names every function `f<index>` (so that asyncify's
//!   function list can name the frames wasmtime reported by index, whatever names the module
//!   had) and exports every global (so that the host can read their values at the snapshot
//!   point, as wasmtime-wizer does). Custom sections other than `target_features` are dropped.
//! - [`finish`], after the capture: the same module with its memory's initial contents and
//!   size, and its globals' initial values, set to what they were at the snapshot point; the
//!   global exports and any start function removed (it has run).
//!
//! Everything else — types, imports, code, tables, elements — is copied byte for byte.

use std::collections::HashMap;

use wasm_encoder as enc;
use wasm_encoder::reencode::{Reencode, RoundtripReencoder};
use wasmparser as wp;

/// Prefix of the exports [`prepare`] adds for the module's globals.
pub const GLOBAL_EXPORT: &str = "zvm-snapshot-global-";

/// The custom section binaryen reads the module's features from.
const TARGET_FEATURES: &str = "target_features";

/// Granularity of the data segments [`finish`] writes: runs of this many zero bytes are left
/// out (memory starts zeroed).
const CHUNK: usize = 4096;

/// A global's value at the snapshot point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GlobalValue {
    I32(i32),
    I64(i64),
    F32(u32),
    F64(u64),
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn raw(module: &mut enc::Module, bytes: &[u8], id: u8, range: std::ops::Range<u64>) {
    module.section(&enc::RawSection {
        id,
        data: &bytes[range.start as usize..range.end as usize],
    });
}

/// Names functions `f<index>` and exports every global; refuses what a snapshot cannot
/// capture faithfully (imported globals or memories, several memories, passive data).
pub fn prepare(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = enc::Module::new();
    let mut funcs = 0u32;
    let mut globals = 0u32;
    let mut memories = 0u32;
    let mut exported = false;
    let mut features = None;
    for payload in wp::Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(err)?;
        match &payload {
            wp::Payload::ImportSection(r) => {
                for import in r.clone().into_imports() {
                    let import = import.map_err(err)?;
                    match import.ty {
                        wp::TypeRef::Func(_) | wp::TypeRef::FuncExact(_) => funcs += 1,
                        wp::TypeRef::Global(_) => {
                            return Err(format!(
                                "it imports global `{}::{}`, whose value a snapshot cannot hold",
                                import.module, import.name
                            ));
                        }
                        wp::TypeRef::Memory(_) => {
                            return Err("it imports its memory".into());
                        }
                        _ => {}
                    }
                }
            }
            wp::Payload::FunctionSection(r) => funcs += r.count(),
            wp::Payload::GlobalSection(r) => globals = r.count(),
            wp::Payload::MemorySection(r) => memories += r.count(),
            wp::Payload::DataSection(r) => {
                for data in r.clone() {
                    if !matches!(data.map_err(err)?.kind, wp::DataKind::Active { .. }) {
                        return Err("it has passive data segments".into());
                    }
                }
            }
            wp::Payload::CustomSection(c) if c.name() == TARGET_FEATURES => {
                features = Some(c.data().to_vec());
            }
            _ => {}
        }
        match payload {
            wp::Payload::ExportSection(r) => {
                exported = true;
                let mut section = enc::ExportSection::new();
                for e in r {
                    let e = e.map_err(err)?;
                    let kind = RoundtripReencoder.export_kind(e.kind).map_err(err)?;
                    section.export(e.name, kind, e.index);
                }
                for g in 0..globals {
                    section.export(&format!("{GLOBAL_EXPORT}{g}"), enc::ExportKind::Global, g);
                }
                out.section(&section);
            }
            wp::Payload::CustomSection(_) => {}
            other => {
                if let Some((id, range)) = other.as_section() {
                    raw(&mut out, bytes, id, range);
                }
            }
        }
    }
    if memories != 1 {
        return Err(format!("it has {memories} memories, not one"));
    }
    if !exported {
        return Err("it has no exports".into());
    }
    let mut names = enc::NameMap::new();
    for f in 0..funcs {
        names.append(f, &format!("f{f}"));
    }
    let mut name_section = enc::NameSection::new();
    name_section.functions(&names);
    out.section(&name_section);
    if let Some(data) = features {
        out.section(&enc::CustomSection {
            name: TARGET_FEATURES.into(),
            data: data.into(),
        });
    }
    Ok(out.finish())
}

/// `bytes` (an asyncified [`prepare`]d module) with its memory starting as `memory` and the
/// globals exported by [`prepare`] starting at `values` (by export name).
pub fn finish(
    bytes: &[u8],
    memory: &[u8],
    values: &HashMap<String, GlobalValue>,
) -> Result<Vec<u8>, String> {
    // The export section (which maps our names to global indices) comes after the global
    // section: read it first.
    let mut by_index = HashMap::new();
    for payload in wp::Parser::new(0).parse_all(bytes) {
        if let wp::Payload::ExportSection(r) = payload.map_err(err)? {
            for e in r {
                let e = e.map_err(err)?;
                if e.kind == wp::ExternalKind::Global
                    && let Some(v) = values.get(e.name)
                {
                    by_index.insert(e.index, *v);
                }
            }
        }
    }
    if by_index.len() != values.len() {
        return Err("the rewritten module lost some of its global exports".into());
    }
    let segments = segments(memory);
    let pages = (memory.len() as u64).div_ceil(65536);
    let mut out = enc::Module::new();
    for payload in wp::Parser::new(0).parse_all(bytes) {
        match payload.map_err(err)? {
            wp::Payload::MemorySection(r) => {
                let mut section = enc::MemorySection::new();
                for m in r {
                    let mut ty = RoundtripReencoder
                        .memory_type(m.map_err(err)?)
                        .map_err(err)?;
                    ty.minimum = pages;
                    section.memory(ty);
                }
                out.section(&section);
            }
            wp::Payload::GlobalSection(r) => {
                let mut section = enc::GlobalSection::new();
                for (i, g) in r.into_iter().enumerate() {
                    let g = g.map_err(err)?;
                    let ty = RoundtripReencoder.global_type(g.ty).map_err(err)?;
                    let init = match by_index.get(&(i as u32)) {
                        Some(GlobalValue::I32(v)) => enc::ConstExpr::i32_const(*v),
                        Some(GlobalValue::I64(v)) => enc::ConstExpr::i64_const(*v),
                        Some(GlobalValue::F32(v)) => {
                            enc::ConstExpr::f32_const(enc::Ieee32::new(*v))
                        }
                        Some(GlobalValue::F64(v)) => {
                            enc::ConstExpr::f64_const(enc::Ieee64::new(*v))
                        }
                        None => RoundtripReencoder.const_expr(g.init_expr).map_err(err)?,
                    };
                    section.global(ty, &init);
                }
                out.section(&section);
            }
            wp::Payload::ExportSection(r) => {
                let mut section = enc::ExportSection::new();
                for e in r {
                    let e = e.map_err(err)?;
                    if e.name.starts_with(GLOBAL_EXPORT) {
                        continue;
                    }
                    let kind = RoundtripReencoder.export_kind(e.kind).map_err(err)?;
                    section.export(e.name, kind, e.index);
                }
                out.section(&section);
            }
            // The start function ran before the snapshot point.
            wp::Payload::StartSection { .. } => {}
            wp::Payload::DataCountSection { .. } => {
                out.section(&enc::DataCountSection {
                    count: segments.len() as u32,
                });
            }
            wp::Payload::CodeSectionStart {
                unchecked_range, ..
            } => {
                raw(&mut out, bytes, enc::SectionId::Code as u8, unchecked_range);
                let mut data = enc::DataSection::new();
                for (at, chunk) in &segments {
                    data.active(
                        0,
                        &enc::ConstExpr::i32_const(*at as i32),
                        chunk.iter().copied(),
                    );
                }
                out.section(&data);
            }
            wp::Payload::DataSection(_) | wp::Payload::CustomSection(_) => {}
            other => {
                if let Some((id, range)) = other.as_section() {
                    raw(&mut out, bytes, id, range);
                }
            }
        }
    }
    Ok(out.finish())
}

/// The non-zero parts of `memory`, as (offset, bytes) runs of whole [`CHUNK`]s.
fn segments(memory: &[u8]) -> Vec<(usize, &[u8])> {
    let mut out: Vec<(usize, &[u8])> = Vec::new();
    let mut run: Option<usize> = None;
    for (i, chunk) in memory.chunks(CHUNK).enumerate() {
        let at = i * CHUNK;
        let zero = chunk.iter().all(|b| *b == 0);
        match (zero, run) {
            (false, None) => run = Some(at),
            (true, Some(start)) => {
                out.push((start, &memory[start..at]));
                run = None;
            }
            _ => {}
        }
    }
    if let Some(start) = run {
        out.push((start, &memory[start..]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_skip_zero_chunks_and_keep_the_rest_exactly() {
        let mut memory = vec![0u8; CHUNK * 6];
        memory[5] = 1;
        memory[CHUNK * 3 + 7] = 2;
        memory[CHUNK * 4] = 3;
        let segs = segments(&memory);
        assert_eq!(segs.len(), 2);
        assert_eq!(segs[0].0, 0);
        assert_eq!(segs[0].1.len(), CHUNK);
        assert_eq!(segs[1].0, CHUNK * 3);
        assert_eq!(segs[1].1.len(), CHUNK * 2);
        let mut rebuilt = vec![0u8; memory.len()];
        for (at, bytes) in segs {
            rebuilt[at..at + bytes.len()].copy_from_slice(bytes);
        }
        assert_eq!(rebuilt, memory);
    }

    #[test]
    fn prepare_exports_globals_and_finish_sets_them() {
        let wasm = wat::parse_str(
            r#"(module
                (memory (export "memory") 1)
                (global $g (mut i32) (i32.const 5))
                (global $h (mut i64) (i64.const 6))
                (data (i32.const 16) "hello")
                (func (export "_start")))"#,
        )
        .unwrap();
        let prepared = prepare(&wasm).unwrap();
        wp::Validator::new().validate_all(&prepared).unwrap();
        let mut values = HashMap::new();
        values.insert(format!("{GLOBAL_EXPORT}0"), GlobalValue::I32(42));
        values.insert(format!("{GLOBAL_EXPORT}1"), GlobalValue::I64(-7));
        let mut memory = vec![0u8; 2 * 65536];
        memory[70000..70003].copy_from_slice(b"abc");
        let done = finish(&prepared, &memory, &values).unwrap();
        wp::Validator::new().validate_all(&done).unwrap();
        let text = wasmprinter_lite(&done);
        assert!(text.contains("i32.const 42"), "{text}");
        assert!(text.contains("i64.const -7"), "{text}");
        assert!(!text.contains(GLOBAL_EXPORT), "{text}");
    }

    /// The module's globals and exports, enough to check [`finish`].
    fn wasmprinter_lite(bytes: &[u8]) -> String {
        let mut s = String::new();
        for p in wp::Parser::new(0).parse_all(bytes) {
            match p.unwrap() {
                wp::Payload::GlobalSection(r) => {
                    for g in r {
                        for op in g.unwrap().init_expr.get_operators_reader() {
                            match op.unwrap() {
                                wp::Operator::I32Const { value } => {
                                    s += &format!("i32.const {value}\n")
                                }
                                wp::Operator::I64Const { value } => {
                                    s += &format!("i64.const {value}\n")
                                }
                                _ => {}
                            }
                        }
                    }
                }
                wp::Payload::ExportSection(r) => {
                    for e in r {
                        s += &format!("export {}\n", e.unwrap().name);
                    }
                }
                wp::Payload::MemorySection(r) => {
                    for m in r {
                        s += &format!("memory {}\n", m.unwrap().initial);
                    }
                }
                _ => {}
            }
        }
        s
    }
}
