//! ZeroCloud system maps (a JSON array of nodes) translated into the native job form, so
//! that they are resolved by the same rules and give the same [`crate::Job`].
//!
//! A node becomes a group: `name`, `count` and `connect` carry over as they are, `exec`
//! gives the program, its arguments (a command-line string, split on whitespace) and its
//! environment, and each device becomes a channel or a mount (the table is in
//! `docs/jobs.md`). Paths may be plain host paths or `file://` URLs; object-store paths
//! (`swift://`, `zvm://`) are refused until `zvm serve` exists. What zvm cannot honour is
//! refused with the reason; what only steered ZeroCloud's placement on a cluster, or
//! described objects in its store, is accepted and has no effect on one host.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Deserialize;
use serde::de::IgnoredAny;
use toml::Spanned;
use toml::de::DeValue;

use crate::document::{IntOrStr, RawChannel, RawMount, RawProgram};
use crate::error::{Error, TomlText};
use crate::job::document::{self, RawGroup, RawJob};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a node object")]
struct RawNode {
    name: Option<Spanned<String>>,
    exec: Option<Spanned<RawExec>>,
    devices: Option<Spanned<Vec<Spanned<RawDevice>>>>,
    /// ZeroCloud's older name for `devices`.
    file_list: Option<Spanned<Vec<Spanned<RawDevice>>>>,
    count: Option<Spanned<IntOrStr>>,
    connect: Option<Vec<Spanned<String>>>,
    replicate: Option<Spanned<u64>>,
    /// Which device's object a session is placed next to: placement only.
    attach: Option<IgnoredAny>,
    /// A co-location hint: placement only.
    location: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "an `exec` object")]
struct RawExec {
    path: Spanned<String>,
    name: Option<Spanned<String>>,
    args: Option<Spanned<String>>,
    env: Option<BTreeMap<Spanned<String>, Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a device object")]
struct RawDevice {
    name: Option<Spanned<String>>,
    /// ZeroCloud's older name for `name`.
    device: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    content_type: Option<Spanned<String>>,
    /// Metadata of the object a device writes: the object store's business.
    meta: Option<IgnoredAny>,
    mode: Option<Spanned<String>>,
    min_size: Option<Spanned<u64>>,
}

/// The devices a node may declare.
const DEVICES: [&str; 8] = [
    "stdin", "stdout", "stderr", "input", "output", "script", "image", "debug",
];

/// ZeroCloud's `mode` of a device: the file type `stat()` reports for it.
const STAT_MODES: [&str; 4] = ["file", "block", "char", "pipe"];

/// Translates the system map `tree` into a [`RawJob`] of groups.
pub(crate) fn translate(t: TomlText<'_>, tree: Spanned<DeValue<'_>>) -> Result<RawJob, Error> {
    let nodes =
        Vec::<Spanned<RawNode>>::deserialize(toml::de::ValueDeserializer::from(tree.clone()))
            .map_err(|e| document::node_shape_error(t, &tree, &e))?;
    let mut groups = Vec::new();
    for (i, node) in nodes.into_iter().enumerate() {
        groups.push(Translator { t }.node(i, node)?);
    }
    Ok(RawJob::translated(groups))
}

struct Translator<'a> {
    t: TomlText<'a>,
}

impl Translator<'_> {
    fn node(&self, index: usize, node: Spanned<RawNode>) -> Result<Spanned<RawGroup>, Error> {
        let span = node.span();
        let node = node.into_inner();
        let at = match &node.name {
            Some(n) => format!("node `{}`: ", n.get_ref()),
            None => format!("node {}: ", index + 1),
        };
        let err = |span: Range<usize>, m: String| self.t.error(span, format!("{at}{m}"));

        let Some(exec) = node.exec else {
            return Err(err(
                span,
                "missing `exec`, expected the program, such as `\"exec\": {\"path\": \"map.wasm\"}`"
                    .into(),
            ));
        };
        let exec = exec.into_inner();
        let program = Spanned::new(
            exec.path.span(),
            RawProgram::Path(self.host_path(&at, &exec.path, "`exec.path`")?),
        );
        let args = exec.args.map(|a| {
            a.get_ref()
                .split_whitespace()
                .map(|w| Spanned::new(a.span(), w.to_string()))
                .collect()
        });

        let mut group = RawGroup {
            name: node.name,
            program: Some(program),
            argv0_is_member: exec.name.is_none(),
            argv0: exec.name,
            args,
            env: exec.env,
            count: node.count,
            connect: node.connect,
            ..RawGroup::default()
        };

        if let Some(r) = &node.replicate
            && *r.get_ref() > 1
        {
            return Err(err(
                r.span(),
                format!(
                    "`replicate` is {}, but the nodes of a system map run once; to run each \
                     member on several cluster nodes and compare the results, write the job \
                     in zvm's own syntax and give the group `replicas` (at most {})",
                    r.get_ref(),
                    super::resolve::MAX_REPLICAS
                ),
            ));
        }
        let _ = (node.attach, node.location);

        let devices = match (node.devices, node.file_list) {
            (Some(d), None) | (None, Some(d)) => d.into_inner(),
            (None, None) => Vec::new(),
            (Some(_), Some(f)) => {
                return Err(err(
                    f.span(),
                    "both `devices` and `file_list` given; `file_list` is the older name of \
                     `devices`, give one"
                        .into(),
                ));
            }
        };
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for d in devices {
            self.device(&at, d, &mut seen, &mut group)?;
        }
        Ok(Spanned::new(span, group))
    }

    fn device(
        &self,
        at: &str,
        d: Spanned<RawDevice>,
        seen: &mut BTreeMap<String, usize>,
        group: &mut RawGroup,
    ) -> Result<(), Error> {
        let span = d.span();
        let d = d.into_inner();
        let err = |span: Range<usize>, m: String| self.t.error(span, format!("{at}{m}"));
        let name = match (d.name, d.device) {
            (Some(n), None) | (None, Some(n)) => n,
            (None, None) => {
                return Err(err(
                    span,
                    "a device without `name`, expected one such as `\"name\": \"stdin\"`".into(),
                ));
            }
            (Some(_), Some(old)) => {
                return Err(err(
                    old.span(),
                    "both `name` and `device` given; `device` is the older name of `name`, \
                     give one"
                        .into(),
                ));
            }
        };
        let device = name
            .get_ref()
            .strip_prefix("/dev/")
            .unwrap_or(name.get_ref())
            .to_string();
        let dev = |m: &str| format!("device `{device}`: {m}");
        if !DEVICES.contains(&device.as_str()) {
            let list: Vec<String> = DEVICES[..7].iter().map(|d| format!("`{d}`")).collect();
            return Err(err(
                name.span(),
                format!(
                    "unknown device `{device}`, expected one of {}; ZeroCloud's system images \
                     do not exist in zvm, give an `image` device with the tar file's `path` \
                     instead",
                    list.join(", ")
                ),
            ));
        }
        if device == "debug" {
            return Err(err(
                name.span(),
                dev(
                    "zvm has no network debugging device; run the program under `zvm run` to debug it",
                ),
            ));
        }
        if let Some(first) = seen.insert(device.clone(), self.t.line(name.span().start)) {
            return Err(err(
                name.span(),
                format!("device `{device}` declared twice (first at line {first})"),
            ));
        }
        if let Some(m) = &d.mode
            && !STAT_MODES.contains(&m.get_ref().as_str())
        {
            return Err(err(
                m.span(),
                dev(&format!(
                    "unknown `mode` `{}`, expected `file`, `block`, `char` or `pipe`",
                    m.get_ref()
                )),
            ));
        }
        if let Some(c) = &d.content_type
            && matches!(c.get_ref().as_str(), "message/http" | "message/cgi")
        {
            return Err(err(
                c.span(),
                dev(&format!(
                    "`content_type` `{}` makes the output an HTTP response, which needs \
                     `zvm serve` (not yet available)",
                    c.get_ref()
                )),
            ));
        }
        if let Some(m) = &d.min_size
            && *m.get_ref() > 0
        {
            return Err(err(
                m.span(),
                dev("`min_size` above 0 (dropping outputs smaller than it) is not supported"),
            ));
        }
        let _ = d.meta;

        let path = match &d.path {
            Some(p) => Some(Spanned::new(
                p.span(),
                self.host_path(at, p, &format!("device `{device}`: `path`"))?,
            )),
            None => None,
        };
        let channel = |name: &str, path: Option<Spanned<String>>, mode: &str| {
            let stdio = path
                .is_none()
                .then(|| Spanned::new(span.clone(), "stdout".to_string()));
            Spanned::new(
                span.clone(),
                RawChannel {
                    name: Spanned::new(span.clone(), name.to_string()),
                    path,
                    stdio,
                    null: None,
                    mode: Some(Spanned::new(span.clone(), mode.to_string())),
                    reads: None,
                    read_bytes: None,
                    writes: None,
                    write_bytes: None,
                    etag: None,
                },
            )
        };
        let needs_path = || {
            err(
                span.clone(),
                dev(
                    "`path` is required, expected the host file, such as `\"path\": \"data/in.txt\"`",
                ),
            )
        };
        match (device.as_str(), path) {
            // Without a path, the standard streams stay the host's.
            ("stdin" | "stdout" | "stderr", None) => {}
            ("stdin", Some(p)) => group.channel.push(channel("stdin", Some(p), "read")),
            (s @ ("stdout" | "stderr"), Some(p)) => {
                group.channel.push(channel(s, Some(p), "write"))
            }
            (s @ ("input" | "script"), Some(p)) => {
                group.channel.push(channel(s, Some(p), "random-read"));
            }
            ("output", Some(p)) => group
                .channel
                .push(channel("output", Some(p), "random-write")),
            // ZeroCloud returned an output without a path in its response; here it is the
            // host's standard output, which cannot seek.
            ("output", None) => group.channel.push(channel("output", None, "write")),
            ("image", Some(p)) => group.mount.push(Spanned::new(
                span.clone(),
                RawMount {
                    path: Spanned::new(span.clone(), "/".to_string()),
                    image: Some(p),
                    dir: None,
                    writable: None,
                },
            )),
            _ => return Err(needs_path()),
        }
        Ok(())
    }

    /// A ZeroCloud path as a host path: plain, or a `file://` URL; `what` names it.
    fn host_path(&self, at: &str, url: &Spanned<String>, what: &str) -> Result<String, Error> {
        let err = |m: String| self.t.error(url.span(), format!("{at}{m}"));
        let u = url.get_ref();
        if let Some(rest) = u.strip_prefix("file://") {
            if rest.contains(':') {
                return Err(err(format!(
                    "{what} is `{u}`, a file inside an image (`file://image:path`), which zvm \
                     cannot run or open; give the file's host path"
                )));
            }
            return Ok(rest.to_string());
        }
        if u.starts_with("zvm://") {
            return Err(err(format!(
                "{what} is `{u}`, a device of another node on a ZeroCloud cluster, which needs \
                 the object store of `zvm serve` (not yet available); give a host path, or \
                 `connect` the nodes to pipe between them"
            )));
        }
        if u.starts_with("swift://") {
            return Err(err(format!(
                "{what} is `{u}`, an object in ZeroCloud's object store, which needs \
                 `zvm serve` (not yet available); give a host path"
            )));
        }
        if let Some((scheme, _)) = u.split_once("://") {
            return Err(err(format!(
                "{what} is `{u}`, whose scheme `{scheme}://` zvm does not read; give a host \
                 path or a `file://` URL"
            )));
        }
        Ok(u.clone())
    }
}
