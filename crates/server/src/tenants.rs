//! Tenants: API tokens, who owns which bucket, and per-tenant quotas.
//!
//! # The model
//!
//! * A server **without** `[[tenant]]` entries is open, as a development server on loopback
//!   is: every request is the anonymous caller, who may do everything the server's own
//!   limits allow.
//! * A server **with** `[[tenant]]` entries wants `Authorization: Bearer <token>` on every
//!   API request (only `/healthz`, `/metrics` and the status page's files are open); a
//!   missing or unknown token is 401 with `WWW-Authenticate: Bearer`.
//! * Bucket names are one namespace, as in S3: the tenant that creates a bucket owns it, sees
//!   it in `GET /v1/buckets`, and is the only one that can read, write, list, run programs
//!   from or bind channels to it; anybody else gets 403. A tenant marked `admin = true` sees
//!   and may use everything. Buckets whose names start with [`RESERVED_PREFIX`] are the
//!   server's own (they hold ownership records, endpoints, handlers); no tenant may create or
//!   use them directly.
//! * Ownership is kept in the object store itself (`zvm-system/owners/<bucket>` holds the
//!   owner's name), so it lives as long as the buckets do, on either backend. A bucket made
//!   before tenants were configured, or whose record was lost to a crash between creating the
//!   bucket and recording its owner, has no owner: only an admin may use it.
//! * Quotas per tenant: VMs running at once (`max_vms`, beyond which a run is 429 with
//!   `Retry-After`: the tenant, not the server, is busy), fuel and memory per request
//!   (`max_fuel`, `max_memory`: asking for more is 403, the default is the quota), and bytes
//!   stored in its buckets (`max_stored`: a put or a run's outputs that would go past it are
//!   403 and nothing is stored). Stored bytes are counted when the server starts (by listing
//!   the tenant's buckets) and kept up to date by every put, delete and commit; two writes of
//!   one tenant racing each other may overshoot the quota by the smaller of them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::ConfigError;
use crate::error::ApiError;

/// Bucket names reserved for the server's own records.
pub const RESERVED_PREFIX: &str = "zvm-";

/// The bucket that holds the server's records (bucket owners, and the registries of other
/// modules).
pub const SYSTEM_BUCKET: &str = "zvm-system";

/// Key prefix of the ownership records in [`SYSTEM_BUCKET`].
const OWNERS_PREFIX: &str = "owners/";

/// Shortest token accepted: a token is a password; eight characters is a floor, not advice.
pub const MIN_TOKEN_LEN: usize = 8;

/// A `[[tenant]]` entry as written.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TenantFile {
    pub name: String,
    /// The token in clear text.
    pub token: Option<String>,
    /// Or the BLAKE3 hash of the token in hex, so that the file holds no secret
    /// (`printf %s "$TOKEN" | b3sum`).
    pub token_blake3: Option<String>,
    #[serde(default)]
    pub admin: bool,
    pub max_vms: Option<usize>,
    pub max_fuel: Option<u64>,
    pub max_memory: Option<String>,
    pub max_stored: Option<String>,
}

/// A checked tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantConfig {
    pub name: String,
    /// BLAKE3 of the token.
    pub token_hash: [u8; 32],
    pub admin: bool,
    pub max_vms: Option<usize>,
    pub max_fuel: Option<u64>,
    pub max_memory: Option<u64>,
    pub max_stored: Option<u64>,
}

/// Checks the `[[tenant]]` entries: names well-formed and unique, one token each, tokens
/// unique, quotas positive.
pub fn resolve(entries: &[TenantFile]) -> Result<Vec<TenantConfig>, ConfigError> {
    let err = |message: String| ConfigError::Value {
        key: "tenant",
        message,
    };
    let mut names = std::collections::BTreeSet::new();
    let mut hashes = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for t in entries {
        let name_ok = !t.name.is_empty()
            && t.name.len() <= 32
            && t.name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !name_ok {
            return Err(err(format!(
                "name `{}` must be 1 to 32 of `a-z`, `0-9`, `-`, `_`",
                t.name
            )));
        }
        if !names.insert(t.name.clone()) {
            return Err(err(format!("`{}` is configured twice", t.name)));
        }
        let who = &t.name;
        let token_hash = match (&t.token, &t.token_blake3) {
            (Some(token), None) => {
                if token.len() < MIN_TOKEN_LEN {
                    return Err(err(format!(
                        "`{who}`: the token is shorter than {MIN_TOKEN_LEN} characters"
                    )));
                }
                *blake3::hash(token.as_bytes()).as_bytes()
            }
            (None, Some(hex)) => blake3::Hash::from_hex(hex.trim())
                .map_err(|_| {
                    err(format!(
                        "`{who}`: `token_blake3` is not 64 hex digits of a BLAKE3 hash"
                    ))
                })?
                .into(),
            _ => {
                return Err(err(format!(
                    "`{who}` needs exactly one of `token` and `token_blake3`"
                )));
            }
        };
        if !hashes.insert(token_hash) {
            return Err(err(format!("`{who}` has the token of another tenant")));
        }
        let size = |key: &str, text: &Option<String>| -> Result<Option<u64>, ConfigError> {
            text.as_deref()
                .map(|t| {
                    zvm_manifest::parse_size(t).map_err(|m| err(format!("`{who}`.{key}: {m}")))
                })
                .transpose()
        };
        let max_memory = size("max_memory", &t.max_memory)?;
        let max_stored = size("max_stored", &t.max_stored)?;
        if t.max_vms == Some(0) || t.max_fuel == Some(0) || max_memory == Some(0) {
            return Err(err(format!(
                "`{who}`: `max_vms`, `max_fuel` and `max_memory` must be greater than 0"
            )));
        }
        out.push(TenantConfig {
            name: t.name.clone(),
            token_hash,
            admin: t.admin,
            max_vms: t.max_vms,
            max_fuel: t.max_fuel,
            max_memory,
            max_stored,
        });
    }
    Ok(out)
}

/// A configured tenant at run time.
#[derive(Debug)]
pub struct Tenant {
    pub config: TenantConfig,
    /// One permit per VM the tenant may run at once.
    vms: Option<Arc<Semaphore>>,
}

impl Tenant {
    pub fn name(&self) -> &str {
        &self.config.name
    }
}

/// Who is calling: the anonymous caller of an open server, or a tenant.
#[derive(Debug, Clone)]
pub struct Caller(Option<Arc<Tenant>>);

impl Caller {
    /// The caller of a server without tenants.
    pub fn open() -> Caller {
        Caller(None)
    }

    /// The tenant's name; `""` for the anonymous caller.
    pub fn name(&self) -> &str {
        self.0.as_ref().map_or("", |t| t.name())
    }

    /// The caller acting for tenant `name` (`""` for an open server's anonymous caller):
    /// how a cluster node runs its part of a job another node accepted. `None` when this
    /// node does not know the tenant.
    pub fn named(tenants: &Tenants, name: &str) -> Option<Caller> {
        if name.is_empty() {
            return (!tenants.enabled()).then(Caller::open);
        }
        tenants
            .by_token
            .values()
            .find(|t| t.name() == name)
            .map(|t| Caller(Some(t.clone())))
    }

    /// Whether the caller may see and use everything: an open server's caller, or an admin.
    pub fn is_admin(&self) -> bool {
        self.0.as_ref().is_none_or(|t| t.config.admin)
    }

    /// The filter for listings of activity: `None` for everything.
    pub fn scope(&self) -> Option<&str> {
        if self.is_admin() {
            None
        } else {
            Some(self.name())
        }
    }

    /// The fuel a run of this caller gets: what it asked for, within the tenant's quota and
    /// the server's limit (`server_max`, already checked by the request's parser).
    pub fn fuel(&self, asked: Option<u64>, server_max: u64) -> Result<u64, ApiError> {
        limit(
            "fuel",
            asked,
            server_max,
            self.0.as_ref().and_then(|t| t.config.max_fuel),
        )
    }

    /// The linear memory a run of this caller gets, as [`Caller::fuel`].
    pub fn memory(&self, asked: Option<u64>, server_max: u64) -> Result<u64, ApiError> {
        limit(
            "memory",
            asked,
            server_max,
            self.0.as_ref().and_then(|t| t.config.max_memory),
        )
    }

    /// A permit for one more VM of this tenant, or 429 if it runs all its quota already.
    pub fn vm_permit(&self) -> Result<Option<OwnedSemaphorePermit>, ApiError> {
        let Some(tenant) = &self.0 else {
            return Ok(None);
        };
        let Some(vms) = &tenant.vms else {
            return Ok(None);
        };
        match vms.clone().try_acquire_owned() {
            Ok(p) => Ok(Some(p)),
            Err(_) => Err(ApiError::TenantBusy {
                tenant: tenant.name().to_owned(),
                max_vms: tenant.config.max_vms.unwrap_or(0),
            }),
        }
    }
}

fn limit(
    what: &str,
    asked: Option<u64>,
    server_max: u64,
    quota: Option<u64>,
) -> Result<u64, ApiError> {
    let cap = quota.map_or(server_max, |q| q.min(server_max));
    match asked {
        None => Ok(cap),
        Some(n) if n <= cap => Ok(n),
        Some(n) => Err(ApiError::Forbidden(format!(
            "`{what}`: {n} is over this tenant's quota of {cap}"
        ))),
    }
}

/// The tenants, bucket owners and stored-bytes accounts of a server.
#[derive(Debug, Default)]
pub struct Tenants {
    by_token: HashMap<[u8; 32], Arc<Tenant>>,
    /// Bucket → owning tenant.
    owners: RwLock<BTreeMap<String, String>>,
    /// Tenant → bytes stored in the buckets it owns.
    stored: Mutex<HashMap<String, u64>>,
}

impl Tenants {
    /// The tenants of `configs`; [`Tenants::read_owners`] then reads who owns what.
    pub fn new(configs: &[TenantConfig]) -> Tenants {
        let by_token = configs
            .iter()
            .map(|c| {
                let tenant = Tenant {
                    vms: c.max_vms.map(|n| Arc::new(Semaphore::new(n))),
                    config: c.clone(),
                };
                (c.token_hash, Arc::new(tenant))
            })
            .collect();
        Tenants {
            by_token,
            ..Tenants::default()
        }
    }

    /// Whether tenants are configured (else the server is open).
    pub fn enabled(&self) -> bool {
        !self.by_token.is_empty()
    }

    /// The caller presenting `authorization` (the header's value, if any).
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, ApiError> {
        if !self.enabled() {
            return Ok(Caller::open());
        }
        let token = authorization
            .ok_or_else(|| {
                ApiError::Unauthorized(
                    "an `Authorization: Bearer <token>` header is required".into(),
                )
            })?
            .strip_prefix("Bearer ")
            .ok_or_else(|| {
                ApiError::Unauthorized("the `Authorization` header is not `Bearer <token>`".into())
            })?
            .trim();
        // Looked up by hash: comparing hashes leaks nothing useful about a token.
        self.by_token
            .get(blake3::hash(token.as_bytes()).as_bytes())
            .map(|t| Caller(Some(t.clone())))
            .ok_or_else(|| ApiError::Unauthorized("unknown token".into()))
    }

    /// Reads the bucket owners from the store and counts each tenant's stored bytes: once,
    /// when the server starts.
    pub fn read_owners(&self, s: &crate::Shared) -> Result<(), ApiError> {
        use std::io::Read;
        if !self.enabled() {
            return Ok(());
        }
        let store = &s.store;
        match store.create_bucket(SYSTEM_BUCKET) {
            Ok(_) | Err(zvm_store::Error::BucketAlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let mut owners = BTreeMap::new();
        let mut after: Option<String> = None;
        loop {
            let (page, truncated) =
                store.list(SYSTEM_BUCKET, OWNERS_PREFIX, after.as_deref(), 1000)?;
            for info in &page {
                let mut got = store.get(SYSTEM_BUCKET, &info.key, None)?;
                let mut owner = String::new();
                got.body.read_to_string(&mut owner).map_err(|e| {
                    ApiError::Internal(format!("reading `{SYSTEM_BUCKET}/{}`: {e}", info.key))
                })?;
                let bucket = &info.key[OWNERS_PREFIX.len()..];
                owners.insert(bucket.to_owned(), owner);
            }
            after = page.last().map(|i| i.key.clone());
            if !truncated || after.is_none() {
                break;
            }
        }
        let mut stored: HashMap<String, u64> = HashMap::new();
        for (bucket, owner) in &owners {
            let mut after: Option<String> = None;
            loop {
                let (page, truncated) = match store.list(bucket, "", after.as_deref(), 1000) {
                    Ok(listed) => listed,
                    // Deleted after its record was written: nothing to count.
                    Err(zvm_store::Error::NoSuchBucket { .. }) => break,
                    Err(e) => return Err(e.into()),
                };
                *stored.entry(owner.clone()).or_default() +=
                    page.iter().map(|i| i.size).sum::<u64>();
                after = page.last().map(|i| i.key.clone());
                if !truncated || after.is_none() {
                    break;
                }
            }
        }
        *self.owners.write().unwrap_or_else(|p| p.into_inner()) = owners;
        *self.stored.lock().unwrap_or_else(|p| p.into_inner()) = stored;
        Ok(())
    }

    fn owner(&self, bucket: &str) -> Option<String> {
        self.owners
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(bucket)
            .cloned()
    }

    /// Refuses a caller that may not use `bucket` (403); reserved buckets are nobody's.
    pub fn check_bucket(&self, caller: &Caller, bucket: &str) -> Result<(), ApiError> {
        self.check_new_bucket(bucket)?;
        if caller.is_admin() {
            return Ok(());
        }
        match self.owner(bucket) {
            Some(owner) if owner == caller.name() => Ok(()),
            // Unknown buckets are 403 too (not 404), so that a tenant cannot probe which
            // bucket names other tenants use... except that creating one tells it; S3 does
            // the same.
            _ => Err(ApiError::Forbidden(format!(
                "bucket `{bucket}` belongs to another tenant (or to none)"
            ))),
        }
    }

    /// Refuses a bucket name no tenant may create.
    pub fn check_new_bucket(&self, bucket: &str) -> Result<(), ApiError> {
        if bucket.starts_with(RESERVED_PREFIX) {
            return Err(ApiError::Forbidden(format!(
                "bucket `{bucket}`: names starting with `{RESERVED_PREFIX}` are reserved for the server"
            )));
        }
        Ok(())
    }

    /// Records `caller` as the owner of the new `bucket` (in the store first).
    pub fn record_owner(
        &self,
        s: &crate::Shared,
        caller: &Caller,
        bucket: &str,
    ) -> Result<(), ApiError> {
        if !self.enabled() {
            return Ok(());
        }
        let key = format!("{OWNERS_PREFIX}{bucket}");
        s.store.put(
            SYSTEM_BUCKET,
            &key,
            std::io::Cursor::new(caller.name().as_bytes().to_vec()),
            zvm_store::PutMeta::default(),
        )?;
        self.owners
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(bucket.to_owned(), caller.name().to_owned());
        Ok(())
    }

    /// Forgets the owner of a deleted bucket.
    pub fn forget_owner(&self, s: &crate::Shared, bucket: &str) -> Result<(), ApiError> {
        if !self.enabled() {
            return Ok(());
        }
        s.store
            .delete(SYSTEM_BUCKET, &format!("{OWNERS_PREFIX}{bucket}"))?;
        self.owners
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(bucket);
        Ok(())
    }

    /// The buckets `caller` may see, of `all`.
    pub fn visible(&self, caller: &Caller, bucket: &str) -> bool {
        if bucket.starts_with(RESERVED_PREFIX) {
            return false;
        }
        caller.is_admin() || self.owner(bucket).as_deref() == Some(caller.name())
    }

    /// The bytes the owner of `bucket` may still store, if it has a quota.
    pub fn room(&self, bucket: &str) -> Option<(String, u64)> {
        let owner = self.owner(bucket)?;
        let quota = self
            .by_token
            .values()
            .find(|t| t.name() == owner)
            .and_then(|t| t.config.max_stored)?;
        let used = self.stored(&owner);
        Some((owner, quota.saturating_sub(used)))
    }

    /// Refuses writing `new_bytes` more into buckets of one owner (403 when over quota).
    pub fn check_room(&self, bucket: &str, new_bytes: u64) -> Result<(), ApiError> {
        match self.room(bucket) {
            Some((owner, room)) if new_bytes > room => Err(ApiError::Forbidden(format!(
                "tenant `{owner}` would go over its `max_stored` quota: {new_bytes} more bytes, {room} left"
            ))),
            _ => Ok(()),
        }
    }

    /// Checks that outputs about to land (`bucket`, `key`, size) fit their buckets' owners'
    /// `max_stored` quotas, counting the objects they replace as freed (403 if not). Returns
    /// the change of each bucket's stored bytes, for [`Tenants::account`] once they landed.
    pub fn check_outputs(
        &self,
        s: &crate::Shared,
        outputs: &[(&str, &str, u64)],
    ) -> Result<Vec<(String, i64)>, ApiError> {
        if !self.enabled() {
            return Ok(Vec::new());
        }
        let mut deltas: BTreeMap<String, i64> = BTreeMap::new();
        for &(bucket, key, size) in outputs {
            let replaced = crate::objects::stored_size(s, bucket, key)?;
            *deltas.entry(bucket.to_owned()).or_default() += size as i64 - replaced as i64;
        }
        for (bucket, delta) in &deltas {
            if let Ok(grows) = u64::try_from(*delta) {
                self.check_room(bucket, grows)?;
            }
        }
        Ok(deltas.into_iter().collect())
    }

    /// Bytes stored in the buckets of `tenant`.
    pub fn stored(&self, tenant: &str) -> u64 {
        self.stored
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(tenant)
            .copied()
            .unwrap_or(0)
    }

    /// Accounts a change of `delta` bytes in `bucket`.
    pub fn account(&self, bucket: &str, delta: i64) {
        let Some(owner) = self.owner(bucket) else {
            return;
        };
        let mut stored = self.stored.lock().unwrap_or_else(|p| p.into_inner());
        let used = stored.entry(owner).or_default();
        *used = used.saturating_add_signed(delta);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, token: &str) -> TenantFile {
        TenantFile {
            name: name.into(),
            token: Some(token.into()),
            ..TenantFile::default()
        }
    }

    #[test]
    fn entries_are_checked() {
        let err = |e: &[TenantFile]| resolve(e).unwrap_err().to_string();
        assert!(err(&[entry("Alice", "12345678")]).contains("name `Alice`"));
        assert!(err(&[entry("a", "short")]).contains("shorter than 8"));
        assert!(err(&[entry("a", "12345678"), entry("a", "87654321")]).contains("twice"));
        assert!(
            err(&[entry("a", "12345678"), entry("b", "12345678")]).contains("token of another")
        );
        let mut both = entry("a", "12345678");
        both.token_blake3 = Some("00".into());
        assert!(err(&[both]).contains("exactly one"));
        let hashed = TenantFile {
            name: "h".into(),
            token_blake3: Some(blake3::hash(b"secret-token").to_hex().to_string()),
            ..TenantFile::default()
        };
        let t = resolve(&[hashed]).unwrap();
        assert_eq!(t[0].token_hash, *blake3::hash(b"secret-token").as_bytes());
    }

    #[test]
    fn limits_are_the_smaller_of_quota_and_server() {
        assert_eq!(limit("fuel", None, 100, Some(10)).unwrap(), 10);
        assert_eq!(limit("fuel", Some(5), 100, Some(10)).unwrap(), 5);
        assert!(matches!(
            limit("fuel", Some(11), 100, Some(10)),
            Err(ApiError::Forbidden(_))
        ));
        assert_eq!(limit("fuel", None, 100, None).unwrap(), 100);
        assert_eq!(limit("fuel", None, 100, Some(1000)).unwrap(), 100);
    }
}
