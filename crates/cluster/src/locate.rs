//! Which SeaweedFS volume server holds an object: asked of the filer and the master over
//! HTTP, so that a job's member can be placed on the node co-located with its first input.
//! A hint for placement only: a wrong or missing answer costs locality, never correctness,
//! and the caller falls back to the least-loaded node. Hence the short timeouts.
//!
//! # A guided tour
//!
//! ## Two questions, two services
//!
//! SeaweedFS's S3 gateway keeps each S3 object as an entry of its filer, at
//! `<buckets dir>/<S3 bucket>/<S3 key>` (the buckets directory is `/buckets` unless the
//! filer was configured otherwise: [`SeaweedLocator::with_buckets_dir`]). The entry holds the
//! object's content as chunks, each a needle in a volume. So:
//!
//! 1. `GET <filer>/buckets/<bucket>/<key>?metadata=true` answers the entry as JSON instead of
//!    the content. What weed 4.48 returns (abridged):
//!
//!    ```text
//!    {"FullPath": "/buckets/zvm/p/objects/bkt/a", "Mode": 432, "FileSize": 65536, ...,
//!     "chunks": [{"file_id": "1,0108f05479", "size": 65536, "e_tag": "...",
//!                 "fid": {"volume_id": 1, "file_key": 1, "cookie": 149967993}},
//!                {"file_id": "1,0654914e38", "offset": 4194304, ...}]}
//!    ```
//!
//!    `offset` is left out when it is 0; a large object has one chunk per 4 MiB (a multipart
//!    upload, per part and 4 MiB). An empty object has no `chunks` field at all; content
//!    small enough to live in the entry itself would be in `Content`, with no chunks (the S3
//!    gateway of 4.48 stores even a 4-byte object as a chunk). A missing entry is a 404 with
//!    an empty body. A directory has bit 31 (Go's `os.ModeDir`) set in `Mode`.
//! 2. The volume of the first chunk (the one at offset 0) is looked up on the master,
//!    `GET <master>/dir/lookup?volumeId=<id>`:
//!
//!    ```text
//!    {"volumeOrFileId": "1", "locations": [{"url": "127.0.0.1:8080",
//!      "publicUrl": "127.0.0.1:8080", "dataCenter": "DefaultDataCenter", "grpcPort": 18080}]}
//!    {"volumeOrFileId": "99", "error": "volume id 99 not found"}
//!    ```
//!
//!    The `url`s are the answer: the volume servers as the master names them (several when
//!    the volume is replicated), which is how each node names its own (`--volume`).
//!
//! ## Keys in URLs
//!
//! The S3 key becomes filer path segments, each percent-encoded as a URL path segment
//! (`%`, `?`, `#`, spaces and the like escaped), so that the filer, which decodes the path,
//! sees the key's bytes. A key with an empty, `.` or `..` segment cannot be a filer path and
//! is refused rather than silently normalised to another one.
//!
//! ## Not here
//!
//! For an object so large that its chunk list was itself stored as a chunk (a "chunk
//! manifest", thousands of chunks), the answer is the volume of that manifest, not of the
//! data: still a hint. Answers are not cached: placement asks once per member.

use std::time::Duration;

use reqwest::{StatusCode, Url};
use serde::Deserialize;

/// The filer directory under which the S3 gateway keeps its buckets, unless configured
/// otherwise.
pub const DEFAULT_BUCKETS_DIR: &str = "/buckets";
/// How long connecting to the filer or the master may take: both are on the cluster's
/// network, and a placement waiting longer would do better without the hint.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one request may take, answer included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// How much of an unexpected answer's body an error quotes.
const QUOTED_BODY_BYTES: usize = 200;
/// Go's `os.ModeDir` in a filer entry's `Mode`.
const MODE_DIR: u64 = 1 << 31;

/// What went wrong while locating an object, and where.
#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    /// A filer or master URL that cannot be used.
    #[error("seaweedfs {service} url `{url}`: {reason}")]
    InvalidUrl {
        /// `filer` or `master`.
        service: &'static str,
        url: String,
        reason: String,
    },
    /// An S3 key that cannot be a filer path.
    #[error("s3 object `{key}` in bucket `{bucket}`: {reason}")]
    UnsupportedKey {
        bucket: String,
        key: String,
        reason: &'static str,
    },
    /// The filer has no entry for the object.
    #[error("no object `{key}` in s3 bucket `{bucket}`: the filer `{filer}` has no entry `{path}`")]
    NotFound {
        bucket: String,
        key: String,
        filer: String,
        /// The filer path asked for.
        path: String,
    },
    /// The filer's entry is a directory (the key is a prefix of other keys, not an object).
    #[error("s3 key `{key}` in bucket `{bucket}` is a directory in the filer, not an object")]
    IsDirectory { bucket: String, key: String },
    /// A request that got no answer: the service is down, unreachable or too slow.
    #[error("ask seaweedfs {service} `{url}`: {cause}")]
    Request {
        /// `filer` or `master`.
        service: &'static str,
        url: String,
        /// The HTTP client's error with its causes, in one line.
        cause: String,
    },
    /// An answer that is not what weed sends.
    #[error("seaweedfs {service} `{url}` answered {status}: {what}")]
    Answer {
        service: &'static str,
        url: String,
        status: u16,
        what: String,
    },
    /// The master does not know the volume that holds the object's first chunk.
    #[error("seaweedfs master `{master}` cannot locate volume {volume}: {reason}")]
    Volume {
        master: String,
        volume: u32,
        reason: String,
    },
}

/// Finds the volume servers that hold S3 objects of a SeaweedFS cluster; see the module
/// documentation. Cheap to clone (the client is shared).
#[derive(Debug, Clone)]
pub struct SeaweedLocator {
    filer: Url,
    master: Url,
    /// The buckets directory as path segments.
    buckets_dir: Vec<String>,
    client: reqwest::Client,
}

/// A filer entry, as much of it as locating needs.
#[derive(Debug, Deserialize)]
struct Entry {
    #[serde(rename = "Mode", default)]
    mode: u64,
    #[serde(default)]
    chunks: Option<Vec<Chunk>>,
}

#[derive(Debug, Deserialize)]
struct Chunk {
    #[serde(default)]
    file_id: Option<String>,
    #[serde(default)]
    offset: i64,
    #[serde(default)]
    fid: Option<Fid>,
}

#[derive(Debug, Deserialize)]
struct Fid {
    volume_id: u32,
}

/// The master's answer to `/dir/lookup`.
#[derive(Debug, Deserialize)]
struct Lookup {
    #[serde(default)]
    locations: Option<Vec<Location>>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Location {
    url: String,
}

impl Chunk {
    /// The volume this chunk is in: from `fid`, or from `file_id` (`<volume>,<needle>`).
    fn volume(&self) -> Option<u32> {
        if let Some(fid) = &self.fid {
            return Some(fid.volume_id);
        }
        let (volume, _) = self.file_id.as_deref()?.split_once(',')?;
        volume.parse().ok()
    }
}

/// An HTTP service's base URL: `http(s)://host[:port][/path]`.
fn base_url(service: &'static str, url: &str) -> Result<Url, LocateError> {
    let invalid = |reason: String| LocateError::InvalidUrl {
        service,
        url: url.to_owned(),
        reason,
    };
    let parsed =
        Url::parse(url).map_err(|e| invalid(format!("{e} (expected http://host:port)")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "scheme `{}`: http or https expected",
            parsed.scheme()
        )));
    }
    if parsed.cannot_be_a_base() || parsed.host().is_none() {
        return Err(invalid("no host".into()));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(invalid("a base URL has no query or fragment".into()));
    }
    Ok(parsed)
}

/// The error and its causes in one line (the HTTP client's top-level message alone says
/// little: "error sending request").
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// The start of a body, for an error message.
fn quote(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(QUOTED_BODY_BYTES)]);
    if text.trim().is_empty() {
        "an empty body".into()
    } else {
        format!("`{}`", text.trim())
    }
}

impl SeaweedLocator {
    /// A locator asking the filer at `filer_url` (its HTTP port, `http://host:8888`) and the
    /// master at `master_url` (`http://host:9333`).
    pub fn new(filer_url: &str, master_url: &str) -> Result<SeaweedLocator, LocateError> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            // Idle connections are closed by the filer and master on their own schedule; a
            // request sent on one that just closed fails. Lookups are small and a placement
            // asks a few per job, so a connection per lookup is cheap and never stale.
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| LocateError::InvalidUrl {
                service: "filer",
                url: filer_url.to_owned(),
                reason: format!("building the HTTP client: {}", chain(&e)),
            })?;
        Ok(SeaweedLocator {
            filer: base_url("filer", filer_url)?,
            master: base_url("master", master_url)?,
            buckets_dir: vec![DEFAULT_BUCKETS_DIR.trim_start_matches('/').to_owned()],
            client,
        })
    }

    /// The same locator for a filer whose S3 buckets live under `dir` (an absolute filer
    /// path, its `buckets_folder`) rather than [`DEFAULT_BUCKETS_DIR`].
    pub fn with_buckets_dir(mut self, dir: &str) -> SeaweedLocator {
        self.buckets_dir = dir
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        self
    }

    /// The volume servers (as the master names them, `host:port`) that hold the first chunk
    /// of S3 object `s3_key` in S3 bucket `s3_bucket`; empty for an object with no chunks
    /// (empty, or its content inlined in the filer entry).
    pub async fn volume_servers(
        &self,
        s3_bucket: &str,
        s3_key: &str,
    ) -> Result<Vec<String>, LocateError> {
        let unsupported = |reason| LocateError::UnsupportedKey {
            bucket: s3_bucket.to_owned(),
            key: s3_key.to_owned(),
            reason,
        };
        if s3_bucket.is_empty() || s3_bucket.contains('/') || matches!(s3_bucket, "." | "..") {
            return Err(unsupported(
                "the bucket name cannot be one filer path segment",
            ));
        }
        if s3_key
            .split('/')
            .any(|segment| matches!(segment, "" | "." | ".."))
        {
            return Err(unsupported(
                "an empty, `.` or `..` segment (or a leading or trailing `/`) cannot be a \
                 filer path",
            ));
        }
        let mut url = self.filer.clone();
        url.path_segments_mut()
            .expect("checked to be a base URL")
            .pop_if_empty()
            .extend(&self.buckets_dir)
            .push(s3_bucket)
            .extend(s3_key.split('/'));
        let path = url.path().to_owned();
        url.set_query(Some("metadata=true"));
        let (status, body) = self.get("filer", &url).await?;
        let answer = |what: String| LocateError::Answer {
            service: "filer",
            url: url.to_string(),
            status: status.as_u16(),
            what,
        };
        if status == StatusCode::NOT_FOUND {
            return Err(LocateError::NotFound {
                bucket: s3_bucket.to_owned(),
                key: s3_key.to_owned(),
                filer: self.filer.as_str().trim_end_matches('/').to_owned(),
                path,
            });
        }
        if !status.is_success() {
            return Err(answer(quote(&body)));
        }
        let entry: Entry = serde_json::from_slice(&body)
            .map_err(|e| answer(format!("not a filer entry ({e}): {}", quote(&body))))?;
        if entry.mode & MODE_DIR != 0 {
            return Err(LocateError::IsDirectory {
                bucket: s3_bucket.to_owned(),
                key: s3_key.to_owned(),
            });
        }
        let chunks = entry.chunks.unwrap_or_default();
        let Some(first) = chunks.iter().min_by_key(|c| c.offset) else {
            return Ok(Vec::new());
        };
        let volume = first
            .volume()
            .ok_or_else(|| answer(format!("a chunk without a volume id: {first:?}")))?;
        self.lookup(volume).await
    }

    /// The volume servers of `volume`, from the master.
    async fn lookup(&self, volume: u32) -> Result<Vec<String>, LocateError> {
        let mut url = self.master.clone();
        url.path_segments_mut()
            .expect("checked to be a base URL")
            .pop_if_empty()
            .extend(["dir", "lookup"]);
        url.set_query(Some(&format!("volumeId={volume}")));
        let (status, body) = self.get("master", &url).await?;
        let master = self.master.as_str().trim_end_matches('/').to_owned();
        // An unknown volume is a 404 with a JSON `error`; anything else unparsable is odd.
        let lookup: Lookup = serde_json::from_slice(&body).map_err(|e| LocateError::Answer {
            service: "master",
            url: url.to_string(),
            status: status.as_u16(),
            what: format!("not a volume lookup ({e}): {}", quote(&body)),
        })?;
        if let Some(reason) = lookup.error.filter(|e| !e.is_empty()) {
            return Err(LocateError::Volume {
                master,
                volume,
                reason,
            });
        }
        let urls: Vec<String> = lookup
            .locations
            .unwrap_or_default()
            .into_iter()
            .map(|l| l.url)
            .collect();
        if urls.is_empty() {
            return Err(LocateError::Volume {
                master,
                volume,
                reason: format!("no locations (answered {status})"),
            });
        }
        Ok(urls)
    }

    /// GETs `url` of `service`: the status and the whole body.
    async fn get(
        &self,
        service: &'static str,
        url: &Url,
    ) -> Result<(StatusCode, bytes::Bytes), LocateError> {
        let failed = |e: reqwest::Error| LocateError::Request {
            service,
            url: url.to_string(),
            cause: chain(&e.without_url()),
        };
        let response = self.client.get(url.clone()).send().await.map_err(failed)?;
        let status = response.status();
        let body = response.bytes().await.map_err(failed)?;
        Ok((status, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_http_with_a_host_and_nothing_after_the_path() {
        for good in [
            "http://127.0.0.1:8888",
            "https://filer.example/",
            "http://h/sub",
        ] {
            assert!(base_url("filer", good).is_ok(), "{good}");
        }
        for (bad, says) in [
            ("127.0.0.1:8888", "expected http://host:port"),
            ("localhost:8888", "scheme `localhost`"),
            ("ftp://h", "scheme `ftp`"),
            ("http://h/?x=1", "no query"),
            ("not a url", "relative URL"),
        ] {
            let err = base_url("master", bad).unwrap_err().to_string();
            assert!(err.contains(says) && err.contains("master"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_chunk_names_its_volume_by_fid_or_by_file_id() {
        let chunk: Chunk =
            serde_json::from_str(r#"{"file_id":"7,0108f05479","size":3,"fid":{"volume_id":7}}"#)
                .unwrap();
        assert_eq!((chunk.volume(), chunk.offset), (Some(7), 0));
        let chunk: Chunk = serde_json::from_str(r#"{"file_id":"12,0a","offset":4}"#).unwrap();
        assert_eq!((chunk.volume(), chunk.offset), (Some(12), 4));
        let chunk: Chunk = serde_json::from_str(r#"{"file_id":"nonsense"}"#).unwrap();
        assert_eq!(chunk.volume(), None);
    }

    #[tokio::test]
    async fn keys_that_cannot_be_filer_paths_are_refused_before_asking() {
        // Nothing listens on port 9: a request would fail differently.
        let locator = SeaweedLocator::new("http://127.0.0.1:9", "http://127.0.0.1:9").unwrap();
        for (bucket, key) in [
            ("b", "a//c"),
            ("b", "/a"),
            ("b", "a/"),
            ("b", "a/../c"),
            ("b", "."),
            ("", "k"),
            ("a/b", "k"),
        ] {
            let err = locator.volume_servers(bucket, key).await.unwrap_err();
            assert!(
                matches!(err, LocateError::UnsupportedKey { .. }),
                "{bucket} {key}: {err}"
            );
        }
    }
}
