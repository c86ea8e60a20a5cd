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
    pub _version: IgnoredAny,
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

/// Parses the text into a [`RawManifest`]: TOML syntax, the version, keys that belong to
/// jobs, then the shape.
pub(crate) fn parse(t: TomlText<'_>) -> Result<RawManifest, Error> {
    let table = DeTable::parse(t.text).map_err(|e| syntax_error(t, &e))?;
    check_version(t, &table, "manifest")?;
    refuse_pipe_keys(t, table.get_ref(), "channel", "VM manifests")?;
    RawManifest::deserialize(toml::de::Deserializer::from(table)).map_err(|e| shape_error(t, &e))
}

/// A `pipe` key in a channel table is refused with its reason rather than as an unknown key:
/// the canonical form of a job member's manifest writes `pipe = <index>` for its pipe ends,
/// and that text must not read back as a VM manifest, since a pipe's other end is another VM
/// that only a job declares. `array` is the key of the channel array in `table`; `what` says
/// who was wrong to use it.
pub(crate) fn refuse_pipe_keys(
    t: TomlText<'_>,
    table: &DeTable<'_>,
    array: &str,
    what: &str,
) -> Result<(), Error> {
    let Some(DeValue::Array(channels)) = table.get(array).map(Spanned::get_ref) else {
        return Ok(());
    };
    for channel in channels.iter() {
        let DeValue::Table(channel) = channel.get_ref() else {
            continue;
        };
        if let Some((key, _)) = channel.iter().find(|(k, _)| k.get_ref() == "pipe") {
            return Err(t.error(
                key.span(),
                format!(
                    "`pipe` in `[[channel]]`: pipes are declared by jobs (`connect`), not by {what}"
                ),
            ));
        }
    }
    Ok(())
}

pub(crate) fn syntax_error(t: TomlText<'_>, e: &toml::de::Error) -> Error {
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

/// `version` must exist, come first, and be [`FORMAT_VERSION`]. `what` names the kind of
/// document in messages (`manifest`, `job`).
pub(crate) fn check_version(
    t: TomlText<'_>,
    table: &Spanned<DeTable<'_>>,
    what: &str,
) -> Result<(), Error> {
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
                "unsupported {what} version {}, this zvm reads version {FORMAT_VERSION}",
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
pub(crate) enum Step {
    Key(String),
    Index(usize),
}

/// Whether a span matched a key itself or the value under it.
#[derive(PartialEq)]
pub(crate) enum Hit {
    Key,
    Value,
}

/// The syntax a document was written in, for naming its tables the way its author would.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Syntax {
    /// `` `[[channel]]` ``, `` `[limits]` ``.
    Toml,
    /// `` `channel[0]` ``, `` `limits` ``.
    Json,
}

/// Finds the key or value at exactly `span`, depth first, and the path to it.
pub(crate) fn locate(
    table: &DeTable<'_>,
    span: &Range<usize>,
    path: &mut Vec<Step>,
) -> Option<Hit> {
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

pub(crate) fn locate_value(
    v: &Spanned<DeValue<'_>>,
    span: &Range<usize>,
    path: &mut Vec<Step>,
) -> Option<Hit> {
    // Deepest match first: an array of tables shares its span with its first table.
    let inner = match v.get_ref() {
        DeValue::Table(t) => locate(t, span, path),
        DeValue::Array(a) => a.iter().enumerate().find_map(|(i, item)| {
            path.push(Step::Index(i));
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

/// How a user would name the table at `path`: `` `[limits]` `` or `` `[[channel]]` `` in
/// TOML, `` `limits` `` or `` `channel[1]` `` in JSON (whose users count from 0).
pub(crate) fn table_name(path: &[Step], syntax: Syntax) -> String {
    match syntax {
        Syntax::Toml => {
            let keys: Vec<&str> = path
                .iter()
                .filter_map(|s| match s {
                    Step::Key(k) => Some(k.as_str()),
                    Step::Index(_) => None,
                })
                .collect();
            if matches!(path.last(), Some(Step::Index(_))) {
                format!("`[[{}]]`", keys.join("."))
            } else {
                format!("`[{}]`", keys.join("."))
            }
        }
        Syntax::Json => {
            let mut name = String::new();
            for step in path {
                match step {
                    Step::Key(k) if name.is_empty() => name.push_str(k),
                    Step::Key(k) => {
                        name.push('.');
                        name.push_str(k);
                    }
                    Step::Index(i) => name.push_str(&format!("[{i}]")),
                }
            }
            format!("`{name}`")
        }
    }
}

/// How a user would name the key at the end of `path` (array indices skipped):
/// `` `memory` in `[limits]` `` or just `` `seed` `` at the top level.
fn key_name(path: &[Step], syntax: Syntax) -> String {
    let mut end = path.len();
    while let Some(Step::Index(_)) = path[..end].last() {
        end -= 1;
    }
    let Some(Step::Key(key)) = path[..end].last() else {
        return "the document".into();
    };
    let table = &path[..end - 1];
    if table.is_empty() {
        format!("`{key}`")
    } else {
        format!("`{key}` in {}", table_name(table, syntax))
    }
}

/// serde describes types in Rust's words; a manifest's author knows TOML's (or JSON's).
fn toml_terms(message: &str, syntax: Syntax) -> String {
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
    let mut message = TERMS
        .iter()
        .fold(message.to_string(), |m, (rust, toml)| m.replace(rust, toml));
    if message.contains("` is too large") {
        message = message.replacen("invalid type: integer", "integer", 1);
    }
    if syntax == Syntax::Json {
        message = json_terms(&message);
    }
    message
}

/// TOML's words for tables, as the `expecting` texts of the raw types use them, in JSON's:
/// `` a `[[channel]]` table `` becomes `` a `channel` object ``.
fn json_terms(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(open) = rest.find("`[") {
        let body = &rest[open + 1..];
        let Some(close) = body.find("]` table") else {
            break;
        };
        let name = body[..close].trim_start_matches('[').trim_end_matches(']');
        out.push_str(&rest[..open]);
        out.push_str(&format!("`{name}` object"));
        rest = &body[close + "]` table".len()..];
    }
    out.push_str(rest);
    out.replace("a table", "an object")
        .replace("table", "object")
}

/// The message for a serde shape error at `path` (found by [`locate`]), naming the key or
/// table the way a user wrote it.
pub(crate) fn shape_message(
    message: &str,
    hit: Option<Hit>,
    mut path: Vec<Step>,
    syntax: Syntax,
) -> String {
    match hit {
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
                format!("unknown key `{key}` in {}{rest}", table_name(&path, syntax))
            }
        }
        Some(Hit::Value) if message.starts_with("missing field `") => {
            let rest = &message["missing field ".len()..];
            format!("missing key {rest} in {}", table_name(&path, syntax))
        }
        Some(_) => format!(
            "{}: {}",
            key_name(&path, syntax),
            toml_terms(message, syntax)
        ),
        None => {
            let message = message.replacen("missing field", "missing key", 1);
            match syntax {
                Syntax::Toml => message,
                Syntax::Json => json_terms(&message),
            }
        }
    }
}

/// Turns a serde shape error into a positioned message that names the table.
fn shape_error(t: TomlText<'_>, e: &toml::de::Error) -> Error {
    let span = e.span().unwrap_or(0..0);
    let mut path = Vec::new();
    // The text parsed once already, so it parses again; the tree is only needed on this path.
    let hit = DeTable::parse(t.text)
        .ok()
        .and_then(|table| locate(table.get_ref(), &span, &mut path));
    t.error(span, shape_message(e.message(), hit, path, Syntax::Toml))
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
