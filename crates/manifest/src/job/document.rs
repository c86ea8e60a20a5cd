//! Jobs, phase one: syntax and shape. TOML text, or JSON text through `json`, becomes a
//! spanned tree, and the tree becomes [`RawJob`], a mirror of the file with a span on every
//! value the meaning phase (`resolve`) may need to point at.
//!
//! A group's keys are a VM manifest's keys (less `argv0` and `commit`) plus `name`, `count`,
//! `replicas` and `connect`, so [`RawGroup`] reuses the manifest's raw tables for `[limits]`,
//! `[clock]`, channels, mounts and exports, and the meaning phase reuses the manifest's
//! resolver for them. Shape errors name the group they are in, found through the tree by the
//! error's span.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::IgnoredAny;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::document::{
    self, Hit, IntOrStr, RawChannel, RawClock, RawExport, RawLimits, RawMount, RawProgram, Step,
    Syntax,
};
use crate::error::{Error, TomlText};

/// A job's top level, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawJob {
    /// Already checked by [`document::check_version`].
    #[serde(rename = "version")]
    _version: IgnoredAny,
    pub name: Option<Spanned<String>>,
    pub retries: Option<Spanned<u64>>,
    #[serde(default)]
    pub group: Vec<Spanned<RawGroup>>,
}

/// One `[[group]]`: a VM manifest's keys, plus what makes a group of VMs out of it.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a `[[group]]` table")]
pub(crate) struct RawGroup {
    /// Required; missing is a meaning error, so that the message can say which group.
    pub name: Option<Spanned<String>>,
    pub program: Option<Spanned<RawProgram>>,
    /// `argv[0]`. Not a key of the native format (members get the program's file name); only
    /// a ZeroCloud `exec.name` sets it.
    #[serde(skip)]
    pub argv0: Option<Spanned<String>>,
    /// ZeroCloud's rule when `exec.name` is not given: `argv[0]` is the member's name, which
    /// is how a ZeroCloud program learns who it is. Never set by the native format.
    #[serde(skip)]
    pub argv0_is_member: bool,
    pub args: Option<Vec<Spanned<String>>>,
    pub env: Option<BTreeMap<Spanned<String>, Spanned<String>>>,
    pub count: Option<Spanned<IntOrStr>>,
    /// How many cluster nodes run each member, their results compared. Read like `count`, so
    /// that every integer (and a string) gets the meaning phase's message about the range.
    pub replicas: Option<Spanned<IntOrStr>>,
    pub connect: Option<Vec<Spanned<String>>>,
    pub seed: Option<u64>,
    pub memory_etag: Option<bool>,
    pub limits: Option<RawLimits>,
    pub clock: Option<RawClock>,
    #[serde(default)]
    pub channel: Vec<Spanned<RawChannel>>,
    #[serde(default)]
    pub mount: Vec<Spanned<RawMount>>,
    #[serde(default)]
    pub export: Vec<Spanned<RawExport>>,
}

impl RawJob {
    /// A job made by translation (a ZeroCloud system map) rather than read.
    pub(crate) fn translated(group: Vec<Spanned<RawGroup>>) -> RawJob {
        RawJob {
            _version: IgnoredAny,
            name: None,
            retries: None,
            group,
        }
    }
}

/// Parses TOML text into a [`RawJob`].
pub(crate) fn parse_toml(t: TomlText<'_>) -> Result<RawJob, Error> {
    let table = DeTable::parse(t.text).map_err(|e| document::syntax_error(t, &e))?;
    parse_tree(t, table, Syntax::Toml)
}

/// Checks the version and the keys jobs refuse for a reason, then the shape.
pub(crate) fn parse_tree(
    t: TomlText<'_>,
    table: Spanned<DeTable<'_>>,
    syntax: Syntax,
) -> Result<RawJob, Error> {
    document::check_version(t, &table, "job")?;
    refuse_keys(t, table.get_ref(), syntax)?;
    // Kept to name the table of a shape error; documents are small.
    let tree = table.get_ref().clone();
    RawJob::deserialize(toml::de::Deserializer::from(table)).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let mut path = Vec::new();
        let hit = document::locate(&tree, &span, &mut path);
        let prefix = group_prefix(&tree, &path);
        t.error(
            span,
            format!(
                "{prefix}{}",
                document::shape_message(e.message(), hit, path, syntax)
            ),
        )
    })
}

/// `` group `map`: `` when `path` leads into a group that has a name, else nothing.
fn group_prefix(tree: &DeTable<'_>, path: &[Step]) -> String {
    let [Step::Key(key), Step::Index(i), ..] = path else {
        return String::new();
    };
    if key != "group" {
        return String::new();
    }
    let name = tree
        .get("group")
        .and_then(|g| g.get_ref().as_array())
        .and_then(|a| a.get(*i))
        .and_then(|g| g.get_ref().as_table())
        .and_then(|g| g.get("name"))
        .and_then(|n| n.get_ref().as_str());
    name.map_or_else(String::new, |n| format!("group `{n}`: "))
}

/// Keys refused with their reason rather than as unknown keys: `commit` in a group (a job
/// commits as a whole) and `pipe` in a group's channel (pipes come from `connect`).
fn refuse_keys(t: TomlText<'_>, table: &DeTable<'_>, syntax: Syntax) -> Result<(), Error> {
    let Some(DeValue::Array(groups)) = table.get("group").map(Spanned::get_ref) else {
        return Ok(());
    };
    for (i, group) in groups.iter().enumerate() {
        let DeValue::Table(group) = group.get_ref() else {
            continue;
        };
        let path = [Step::Key("group".into()), Step::Index(i)];
        let prefix = group_prefix(table, &path);
        if let Some((key, _)) = group.iter().find(|(k, _)| k.get_ref() == "commit") {
            return Err(t.error(
                key.span(),
                format!(
                    "{prefix}`commit` in {}: a job commits all-or-nothing (the outputs of all \
                     its members land together, once every member has succeeded), so a group \
                     has no `commit` of its own",
                    document::table_name(&path, syntax)
                ),
            ));
        }
        let label = match syntax {
            Syntax::Toml => "`[[group.channel]]`".to_string(),
            Syntax::Json => format!("`group[{i}].channel`"),
        };
        document::refuse_pipe_keys(t, group, "channel", "channels")
            .map_err(|e| e.prefixed(&prefix))
            .map_err(|e| relabel(e, &label))?;
    }
    Ok(())
}

/// Replaces the manifest's `` `[[channel]]` `` in a message with the job's name for the table.
fn relabel(e: Error, label: &str) -> Error {
    match e {
        Error::Toml {
            file,
            line,
            column,
            message,
        } => Error::Toml {
            file,
            line,
            column,
            message: message.replacen("`[[channel]]`", label, 1),
        },
        other => other,
    }
}

/// Where a shape error in a ZeroCloud system map is, named as a JSON path, with the node's
/// name first when it has one: `` node `map`: `[0].exec` ``.
pub(crate) fn node_shape_error(
    t: TomlText<'_>,
    tree: &Spanned<DeValue<'_>>,
    e: &toml::de::Error,
) -> Error {
    let span = e.span().unwrap_or(0..0);
    let mut path = Vec::new();
    let hit = document::locate_value(tree, &span, &mut path);
    let prefix = match path.first() {
        Some(Step::Index(i)) => tree
            .get_ref()
            .as_array()
            .and_then(|a| a.get(*i))
            .and_then(|n| n.get_ref().as_table())
            .and_then(|n| n.get("name"))
            .and_then(|n| n.get_ref().as_str())
            .map_or_else(String::new, |n| format!("node `{n}`: ")),
        _ => String::new(),
    };
    let message = match (&hit, path.as_slice()) {
        // A node that is not an object, or a map that is not an array of them.
        (Some(Hit::Value), [Step::Index(i)]) => format!(
            "node {}: {}",
            i + 1,
            document::shape_message(e.message(), None, Vec::new(), Syntax::Json)
        ),
        (Some(Hit::Value), []) => format!(
            "a ZeroCloud system map is an array of node objects: {}",
            document::shape_message(e.message(), None, Vec::new(), Syntax::Json)
        ),
        _ => document::shape_message(e.message(), hit, path, Syntax::Json),
    };
    t.error(span, format!("{prefix}{message}"))
}
