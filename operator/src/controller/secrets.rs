//! Reading the Secrets a `MailboxArchive` names, and the signing key it may need generated.
//!
//! Error messages name the Secret and the key, never a value.

use crate::{Error, Result};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use mailvault_core::note::NoteSigner;
use std::collections::BTreeMap;

/// The key of the generated signing-key Secret that holds the key.
pub const SIGNING_KEY_KEY: &str = "signing.key";

/// The Secrets of one namespace.
pub struct Secrets {
    api: Api<Secret>,
    namespace: String,
}

impl Secrets {
    /// Secrets in `namespace`.
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
        }
    }

    /// The bytes under `key` of Secret `name`.
    pub async fn bytes(&self, name: &str, key: &str) -> Result<Vec<u8>> {
        let ns = &self.namespace;
        let secret = self.api.get_opt(name).await?.ok_or_else(|| {
            Error::Secret(format!(
                "Secret {ns}/{name} does not exist: create it with the key {key:?}"
            ))
        })?;
        secret
            .data
            .and_then(|mut d| d.remove(key))
            .map(|ByteString(b)| b)
            .ok_or_else(|| Error::Secret(format!("Secret {ns}/{name} has no key {key:?}")))
    }

    /// The text under `key` of Secret `name`, without a trailing newline (a Secret made with
    /// `kubectl create secret --from-file` keeps the file's newline).
    pub async fn text(&self, name: &str, key: &str) -> Result<String> {
        let bytes = self.bytes(name, key).await?;
        let text = String::from_utf8(bytes).map_err(|_| {
            Error::Secret(format!(
                "Secret {}/{name} key {key:?} is not UTF-8 text",
                self.namespace
            ))
        })?;
        Ok(text.trim_end_matches(['\r', '\n']).to_owned())
    }

    /// The signing key in `name`/`key`. When `generate_as` is given and the Secret does not
    /// exist, a new key with that name (the log's origin) is generated and stored first. The
    /// Secret has no owner: deleting the archive must not delete the only key that can
    /// continue its log.
    pub async fn signing_key(
        &self,
        name: &str,
        key: &str,
        generate_as: Option<&str>,
    ) -> Result<NoteSigner> {
        if let Some(origin) = generate_as
            && self.api.get_opt(name).await?.is_none()
        {
            let signer = crate::signing_key::generate(origin)?;
            let secret = Secret {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.to_owned()),
                    labels: Some(BTreeMap::from([(
                        "app.kubernetes.io/managed-by".to_owned(),
                        "mailvault".to_owned(),
                    )])),
                    annotations: Some(BTreeMap::from([(
                        "mailvault.io/public-key".to_owned(),
                        signer.verifier_key(),
                    )])),
                    ..Default::default()
                },
                data: Some(BTreeMap::from([(
                    key.to_owned(),
                    ByteString(format!("{}\n", signer.to_key_string()).into_bytes()),
                )])),
                ..Default::default()
            };
            match self.api.create(&PostParams::default(), &secret).await {
                Ok(_) => return Ok(signer),
                // Someone else created it first: use theirs.
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        let text = self.text(name, key).await?;
        NoteSigner::from_key_string(&text).map_err(|e| {
            Error::Secret(format!(
                "Secret {}/{name} key {key:?} is not a mailvault signing key (PRIVATE+KEY+...): {e}",
                self.namespace
            ))
        })
    }
}
