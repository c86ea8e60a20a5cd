//! TOML manifests, phase one: syntax and shape. Text becomes [`RawManifest`], a mirror of the
//! file with a span on every value the meaning phase (`resolve`) may need to point at.
//!
//! The `version` key is read from the bare TOML tree before anything else, so a manifest
//! written for another format version is refused for that reason, not for whatever key this
//! version happens not to know. serde (with `deny_unknown_fields`) then checks the shape;
//! its messages are good but do not say which table they are about, so [`shape_error`] finds
//! the offending key in the tree by its span and names it the way a user wrote it.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use serde::Deserialize;
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::error::{Error, TomlText};

/// The one TOML format version this zvm reads.
pub(crate) const FORMAT_VERSION: i64 = 1;

/// A manifest's top level, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawManifest {
    /// Already checked by [`check_version`].
    #[serde(rename = "version")]
    _version: IgnoredAny,
    pub program: Option<Spanned<RawProgram>>,
    pub argv0: Option<Spanned<String>>,
    pub args: Option<Vec<Spanned<String>>>,
    pub env: Option<BTreeMap<Spanned<String>, Spanned<String>>>,
    pub seed: Option<u64>,
    pub memory_etag: Option<bool>,
    pub commit: Option<Spanned<String>>,
    pub limits: Option<RawLimits>,
    pub clock: Option<RawClock>,
    #[serde(default)]
    pub channel: Vec<Spanned<RawChannel>>,
    #[serde(default)]
    pub mount: Vec<Spanned<RawMount>>,
    #[serde(default)]
    pub export: Vec<Spanned<RawExport>>,
}

/// `program = "path"` or `program = { path = "...", hash = "..." }`.
pub(crate) enum RawProgram {
    Path(String),
    Table(RawProgramTable),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table with `path` and `hash`")]
pub(crate) struct RawProgramTable {
    pub path: Spanned<String>,
    pub hash: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "the `[limits]` table")]
pub(crate) struct RawLimits {
    pub memory: Option<Spanned<IntOrStr>>,
    pub fuel: Option<Spanned<u64>>,
    pub timeout: Option<Spanned<IntOrStr>>,
    pub scratch: Option<Spanned<IntOrStr>>,
    pub open_files: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "the `[clock]` table")]
pub(crate) struct RawClock {
    /// Integer seconds, a TOML datetime or an RFC 3339 string; `toml::Value` keeps all three.
    pub start: Option<Spanned<toml::Value>>,
    pub step: Option<Spanned<IntOrStr>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a `[[channel]]` table")]
pub(crate) struct RawChannel {
    pub name: Spanned<String>,
    pub path: Option<Spanned<String>>,
    pub stdio: Option<Spanned<String>>,
    pub null: Option<Spanned<bool>>,
    pub mode: Option<Spanned<String>>,
    pub reads: Option<Spanned<IntOrStr>>,
    pub read_bytes: Option<Spanned<IntOrStr>>,
    pub writes: Option<Spanned<IntOrStr>>,
    pub write_bytes: Option<Spanned<IntOrStr>>,
    pub etag: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a `[[mount]]` table")]
pub(crate) struct RawMount {
    pub path: Spanned<String>,
    pub image: Option<Spanned<String>>,
    pub dir: Option<Spanned<String>>,
    pub writable: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "an `[[export]]` table")]
pub(crate) struct RawExport {
    pub path: Spanned<String>,
    /// Required; missing is a meaning error, so that the message can name the export.
    pub tar: Option<Spanned<String>>,
}

/// A number that may also be written as a string with a unit (`"64 MiB"`, `"10s"`); the
/// meaning phase knows which unit language applies.
pub(crate) enum IntOrStr {
    Int(u64),
    Negative(i64),
    Str(String),
}

impl<'de> Deserialize<'de> for IntOrStr {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = IntOrStr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer or a string with a unit")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<IntOrStr, E> {
                Ok(IntOrStr::Int(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<IntOrStr, E> {
                Ok(u64::try_from(v).map_or(IntOrStr::Negative(v), IntOrStr::Int))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IntOrStr, E> {
                Ok(IntOrStr::Str(v.to_string()))
            }
            // The TOML reader hands over integers beyond 64 bits as 128-bit ones.
            fn visit_u128<E: de::Error>(self, v: u128) -> Result<IntOrStr, E> {
                u64::try_from(v).map(IntOrStr::Int).map_err(|_| {
                    E::custom(format!("{v} is too large, the largest is {}", u64::MAX))
                })
            }
            fn visit_i128<E: de::Error>(self, v: i128) -> Result<IntOrStr, E> {
                match u64::try_from(v) {
                    Ok(n) => Ok(IntOrStr::Int(n)),
                    Err(_) if v < 0 => Ok(IntOrStr::Negative(i64::try_from(v).unwrap_or(i64::MIN))),
                    Err(_) => self.visit_u128(v as u128),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for RawProgram {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawProgram;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a path string or a table `{ path = \"...\", hash = \"blake3:...\" }`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawProgram, E> {
                Ok(RawProgram::Path(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawProgram, A::Error> {
                RawProgramTable::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawProgram::Table)
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses the text into a [`RawManifest`]: TOML syntax, the version, then the shape.
pub(crate) fn parse(t: TomlText<'_>) -> Result<RawManifest, Error> {
    let table = DeTable::parse(t.text).map_err(|e| syntax_error(t, &e))?;
    check_version(t, &table)?;
    RawManifest::deserialize(toml::de::Deserializer::from(table)).map_err(|e| shape_error(t, &e))
}

fn syntax_error(t: TomlText<'_>, e: &toml::de::Error) -> Error {
    let span = e.span().unwrap_or(0..0);
    let mut message = e.message().to_string();
    // The parser's own "duplicate key" does not say which; its span covers the key.
    if message == "duplicate key"
        && let Some(key) = t.text.get(span.clone())
    {
        message = format!("duplicate key `{key}`");
    }
    t.error(span, message)
}

/// `version` must exist, come first, and be [`FORMAT_VERSION`].
fn check_version(t: TomlText<'_>, table: &Spanned<DeTable<'_>>) -> Result<(), Error> {
    let first = table.get_ref().iter().min_by_key(|(k, _)| k.span().start);
    let Some((key, value)) = table
        .get_ref()
        .iter()
        .find(|(k, _)| k.get_ref().as_ref() == "version")
    else {
        let at = first.map_or(0..0, |(k, _)| k.span());
        return Err(t.error(
            at,
            format!("missing `version`, expected `version = {FORMAT_VERSION}` as the first key"),
        ));
    };
    if let Some((first, _)) = first
        && first.span().start < key.span().start
    {
        return Err(t.error(
            first.span(),
            format!(
                "`version` must be the first key, found `{}` before it",
                first.get_ref()
            ),
        ));
    }
    match value.get_ref() {
        DeValue::Integer(i) if i64::from_str_radix(i.as_str(), i.radix()) == Ok(FORMAT_VERSION) => {
            Ok(())
        }
        DeValue::Integer(_) => Err(t.error(
            value.span(),
            format!(
                "unsupported manifest version {}, this zvm reads version {FORMAT_VERSION}",
                &t.text[value.span()]
            ),
        )),
        other => Err(t.error(
            value.span(),
            format!(
                "`version` must be an integer, found {}; this zvm reads version {FORMAT_VERSION}",
                a_type(other.type_str())
            ),
        )),
    }
}

/// "a string", "an integer": a TOML type name with its article, for messages.
pub(crate) fn a_type(name: &str) -> String {
    let article = if name.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {name}")
}

/// One step of a path from the document root to a value.
enum Step {
    Key(String),
    Index,
}

/// Whether a span matched a key itself or the value under it.
#[derive(PartialEq)]
enum Hit {
    Key,
    Value,
}

/// Finds the key or value at exactly `span`, depth first.
fn locate(table: &DeTable<'_>, span: &Range<usize>, path: &mut Vec<Step>) -> Option<Hit> {
    for (k, v) in table.iter() {
        path.push(Step::Key(k.get_ref().to_string()));
        if k.span() == *span {
            return Some(Hit::Key);
        }
        if let Some(hit) = locate_value(v, span, path) {
            return Some(hit);
        }
        path.pop();
    }
    None
}

fn locate_value(
    v: &Spanned<DeValue<'_>>,
    span: &Range<usize>,
    path: &mut Vec<Step>,
) -> Option<Hit> {
    // Deepest match first: an array of tables shares its span with its first table.
    let inner = match v.get_ref() {
        DeValue::Table(t) => locate(t, span, path),
        DeValue::Array(a) => a.iter().find_map(|item| {
            path.push(Step::Index);
            let hit = locate_value(item, span, path);
            if hit.is_none() {
                path.pop();
            }
            hit
        }),
        _ => None,
    };
    inner.or_else(|| (v.span() == *span).then_some(Hit::Value))
}

/// How a user would name the table at `path`: `` `[limits]` `` or `` `[[channel]]` ``.
fn table_name(path: &[Step]) -> String {
    let keys: Vec<&str> = path
        .iter()
        .filter_map(|s| match s {
            Step::Key(k) => Some(k.as_str()),
            Step::Index => None,
        })
        .collect();
    if matches!(path.last(), Some(Step::Index)) {
        format!("`[[{}]]`", keys.join("."))
    } else {
        format!("`[{}]`", keys.join("."))
    }
}

/// How a user would name the key at the end of `path` (array indices skipped):
/// `` `memory` in `[limits]` `` or just `` `seed` `` at the top level.
fn key_name(path: &[Step]) -> String {
    let mut end = path.len();
    while let Some(Step::Index) = path[..end].last() {
        end -= 1;
    }
    let Some(Step::Key(key)) = path[..end].last() else {
        return "the manifest".into();
    };
    let table = &path[..end - 1];
    if table.is_empty() {
        format!("`{key}`")
    } else {
        format!("`{key}` in {}", table_name(table))
    }
}

/// serde describes types in Rust's words; a manifest's author knows TOML's.
fn toml_terms(message: &str) -> String {
    const TERMS: [(&str, &str); 8] = [
        (
            "expected u64",
            "expected an integer from 0 to 18446744073709551615",
        ),
        ("expected a sequence", "expected an array"),
        ("expected a map", "expected a table"),
        ("invalid type: sequence", "invalid type: array"),
        ("invalid type: map", "invalid type: table"),
        ("floating point", "float"),
        // Integers beyond 64 bits reach serde as 128-bit ones, which it calls a wrong type.
        ("` as i128", "` is too large"),
        ("` as u128", "` is too large"),
    ];
    let message = TERMS
        .iter()
        .fold(message.to_string(), |m, (rust, toml)| m.replace(rust, toml));
    if message.contains("` is too large") {
        message.replacen("invalid type: integer", "integer", 1)
    } else {
        message
    }
}

/// Turns a serde shape error into a positioned message that names the table.
fn shape_error(t: TomlText<'_>, e: &toml::de::Error) -> Error {
    let span = e.span().unwrap_or(0..0);
    let message = e.message();
    let mut path = Vec::new();
    // The text parsed once already, so it parses again; the tree is only needed on this path.
    let hit = DeTable::parse(t.text)
        .ok()
        .and_then(|table| locate(table.get_ref(), &span, &mut path));
    let message = match hit {
        Some(Hit::Key) if message.starts_with("unknown field `") => {
            let key = match path.pop() {
                Some(Step::Key(k)) => k,
                _ => String::new(),
            };
            let rest = message
                .strip_prefix(&format!("unknown field `{key}`"))
                .unwrap_or("");
            if path.is_empty() {
                format!("unknown top-level key `{key}`{rest}")
            } else {
                format!("unknown key `{key}` in {}{rest}", table_name(&path))
            }
        }
        Some(Hit::Value) if message.starts_with("missing field `") => {
            let rest = &message["missing field ".len()..];
            format!("missing key {rest} in {}", table_name(&path))
        }
        Some(_) => format!("{}: {}", key_name(&path), toml_terms(message)),
        None => message.replacen("missing field", "missing key", 1),
    };
    t.error(span, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn err(text: &str) -> String {
        let t = TomlText {
            file: Path::new("m.toml"),
            text,
        };
        match parse(t) {
            Ok(_) => panic!("parsed: {text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn names_the_table_of_an_unknown_key() {
        assert_eq!(
            err("version = 1\n[limits]\nmemry = 1\n"),
            "m.toml:3:1: unknown key `memry` in `[limits]`, expected one of `memory`, `fuel`, \
             `timeout`, `scratch`, `open_files`"
        );
        assert_eq!(
            err(
                "version = 1\n[[channel]]\nname = \"a\"\n[[channel]]\nname = \"b\"\npaht = \"x\"\n"
            ),
            "m.toml:6:1: unknown key `paht` in `[[channel]]`, expected one of `name`, `path`, \
             `stdio`, `null`, `mode`, `reads`, `read_bytes`, `writes`, `write_bytes`, `etag`"
        );
        assert!(
            err("version = 1\nprogram = { path = \"a\", hsh = 1 }\n")
                .starts_with("m.toml:2:25: unknown key `hsh` in `[program]`, expected")
        );
    }

    #[test]
    fn names_the_key_of_a_bad_value() {
        assert_eq!(
            err("version = 1\n[limits]\nfuel = \"x\"\n"),
            "m.toml:3:8: `fuel` in `[limits]`: invalid type: string \"x\", expected an integer from 0 to \
             18446744073709551615"
        );
        assert_eq!(
            err("version = 1\nargs = [\"a\", 2]\n"),
            "m.toml:2:14: `args`: invalid type: integer `2`, expected a string"
        );
        assert_eq!(
            err("version = 1\n[[channel]]\nmode = \"read\"\n"),
            "m.toml:2:1: missing key `name` in `[[channel]]`"
        );
    }

    #[test]
    fn version_first() {
        assert_eq!(
            err("program = \"a\"\nversion = 1\n"),
            "m.toml:1:1: `version` must be the first key, found `program` before it"
        );
        assert_eq!(
            err("version = 0x2\n"),
            "m.toml:1:11: unsupported manifest version 0x2, this zvm reads version 1"
        );
        assert_eq!(
            err("version = [1]\n"),
            "m.toml:1:11: `version` must be an integer, found an array; this zvm reads version 1"
        );
        assert_eq!(
            err(""),
            "m.toml:1:1: missing `version`, expected `version = 1` as the first key"
        );
    }
}
