//! Store locations as users write them: `file:DIR` or `s3://bucket/prefix`.

use super::AnyStore;
use super::fs::FsStore;
use super::s3::{S3Config, S3Credentials, S3Store};
use crate::{Error, Result};

/// S3 connection settings that do not fit in the URL.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// Endpoint URL (for non-AWS servers).
    pub endpoint: Option<String>,
    /// Region.
    pub region: Option<String>,
    /// Path-style addressing.
    pub path_style: bool,
    /// Per-step time-out of S3 calls (default [`super::s3::DEFAULT_TIMEOUT`]).
    pub timeout: Option<std::time::Duration>,
}

/// Parses a store location. S3 credentials come from `AWS_ACCESS_KEY_ID` and
/// `AWS_SECRET_ACCESS_KEY` (never from a flag: flags show in `ps`); the region from the
/// options or `AWS_REGION`.
pub fn open_store(location: &str, s3: &S3Options) -> Result<AnyStore> {
    if let Some(dir) = location.strip_prefix("file:") {
        if dir.is_empty() {
            return Err(Error::Usage(
                "file: needs a directory, e.g. file:./archive".into(),
            ));
        }
        return Ok(AnyStore::Fs(FsStore::new(dir)));
    }
    if let Some(rest) = location.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::Usage(
                "s3:// needs a bucket, e.g. s3://records/police".into(),
            ));
        }
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let (Some(access_key_id), Some(secret_access_key)) =
            (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"))
        else {
            return Err(Error::Usage(
                "S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".into(),
            ));
        };
        let region = s3
            .region
            .clone()
            .or_else(|| env("AWS_REGION"))
            .ok_or_else(|| Error::Usage("S3 region: pass --s3-region or set AWS_REGION".into()))?;
        return Ok(AnyStore::S3(S3Store::new(&S3Config {
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
            region,
            endpoint: s3.endpoint.clone(),
            path_style: s3.path_style,
            credentials: S3Credentials::Static {
                access_key_id,
                secret_access_key,
            },
            insecure_http: false,
            timeout: s3.timeout.unwrap_or(super::s3::DEFAULT_TIMEOUT),
        })?));
    }
    Err(Error::Usage(format!(
        "{location:?} is not a store: use file:DIR or s3://bucket/prefix"
    )))
}
