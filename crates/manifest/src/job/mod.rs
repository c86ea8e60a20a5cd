//! Job descriptions: networks of VMs connected by one-way pipes, read from TOML, JSON, or a
//! ZeroCloud system map, and resolved into a [`crate::Job`].
//!
//! A guided tour, in the order text flows through it:
//! - `json`: JSON text to the same spanned tree the TOML reader makes, so both syntaxes share
//!   everything after it;
//! - `document`: the tree to [`document::RawJob`] (version, refused keys, shape);
//! - `zerocloud`: a system map's nodes translated into the same raw groups;
//! - `resolve`: raw groups to members, pipes and checked VM manifests.
//!
//! The format is documented for users in `docs/jobs.md`.

mod document;
mod json;
mod resolve;
mod zerocloud;

use std::path::Path;

use crate::document::Syntax;
use crate::error::{Error, TomlText};
use crate::model::Job;

pub use resolve::{
    DEFAULT_RETRIES, MAX_JOB_NAME_LEN, MAX_MEMBERS, MAX_PIPES, MAX_REPLICAS, MAX_RETRIES,
};

/// The syntax of a job file, told from its name and content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Toml,
    Json,
}

/// `.toml` and `.json` say; otherwise a file whose first non-blank character is `{` is JSON,
/// and one that starts with `[` followed by `{` or `]` is a JSON array (a system map); the
/// rest is TOML (whose tables also start with `[`, but never `[{`).
fn detect(path: &Path, text: &str) -> Format {
    match path.extension().and_then(|e| e.to_str()) {
        Some("toml") => return Format::Toml,
        Some("json") => return Format::Json,
        _ => {}
    }
    let mut rest = text.trim_start();
    if rest.starts_with('{') {
        return Format::Json;
    }
    if let Some(after) = rest.strip_prefix('[') {
        rest = after.trim_start();
        if rest.starts_with('{') || rest.starts_with(']') {
            return Format::Json;
        }
    }
    Format::Toml
}

/// The job's name when it gives none: the file's stem, else `job`.
fn default_name(origin: &Path) -> String {
    origin
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "job".to_string())
}

pub(crate) fn parse_file(path: &Path) -> Result<Job, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::ReadJob {
        path: path.to_path_buf(),
        source,
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let base = std::path::absolute(path)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| path.parent().unwrap_or(Path::new("")).to_path_buf());
    match detect(path, text) {
        Format::Toml => parse_toml(text, path, &base),
        Format::Json => parse_json(text, path, &base),
    }
}

pub(crate) fn parse_toml(text: &str, origin: &Path, base: &Path) -> Result<Job, Error> {
    let t = TomlText { file: origin, text };
    let raw = document::parse_toml(t)?;
    resolve::resolve(
        context(t, base, Syntax::Toml, "group"),
        raw,
        &default_name(origin),
    )
}

pub(crate) fn parse_json(text: &str, origin: &Path, base: &Path) -> Result<Job, Error> {
    let t = TomlText { file: origin, text };
    json_job(t, base, &default_name(origin)).map_err(Error::into_json)
}

fn json_job(t: TomlText<'_>, base: &Path, name: &str) -> Result<Job, Error> {
    let tree = json::parse(t)?;
    let span = tree.span();
    let (raw, noun) = match tree.into_inner() {
        toml::de::DeValue::Table(table) => (
            document::parse_tree(t, toml::Spanned::new(span, table), Syntax::Json)?,
            "group",
        ),
        toml::de::DeValue::Array(nodes) => (
            zerocloud::translate(t, toml::Spanned::new(span, toml::de::DeValue::Array(nodes)))?,
            "node",
        ),
        other => {
            return Err(t.error(
                span,
                format!(
                    "expected a job (a JSON object with `version` and `group`) or a ZeroCloud \
                     system map (an array of nodes), found {}",
                    crate::document::a_type(other.type_str())
                ),
            ));
        }
    };
    resolve::resolve(context(t, base, Syntax::Json, noun), raw, name)
}

fn context<'a>(
    t: TomlText<'a>,
    base: &'a Path,
    syntax: Syntax,
    noun: &'static str,
) -> resolve::Context<'a> {
    resolve::Context {
        t,
        base,
        syntax,
        noun,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_told_apart() {
        let p = Path::new;
        assert_eq!(detect(p("j.toml"), "[{"), Format::Toml);
        assert_eq!(detect(p("j.json"), "version = 1"), Format::Json);
        assert_eq!(detect(p("system.map"), " \n[ {\"name\": 1}]"), Format::Json);
        assert_eq!(detect(p("system.map"), "[]"), Format::Json);
        assert_eq!(detect(p("job"), "{\"version\": 1}"), Format::Json);
        assert_eq!(detect(p("job"), "version = 1\n[[group]]\n"), Format::Toml);
        assert_eq!(detect(p("job"), "[[group]]\n"), Format::Toml);
        assert_eq!(detect(p("job"), "[group]\n"), Format::Toml);
    }

    #[test]
    fn default_names() {
        assert_eq!(default_name(Path::new("/a/wordcount.toml")), "wordcount");
        assert_eq!(default_name(Path::new("system.map")), "system");
        assert_eq!(default_name(Path::new("")), "job");
    }
}
