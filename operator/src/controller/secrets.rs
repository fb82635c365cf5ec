//! Reading the Secrets a `MailboxArchive` names, and the signing key it may need generated.
//!
//! `[ MailboxArchive ] -names-> [ Secret ] -opts in (mailvault.io/allowed-archives)-> archive`
//!
//! A Secret is used only by the archives it names in its `mailvault.io/allowed-archives`
//! annotation. Without that rule anyone who may create a `MailboxArchive` in a namespace could
//! point `imap.host` at a server of their own, name any Secret of the namespace as the
//! password, and have the operator deliver it: a confused deputy. Error messages name the
//! Secret and the key, never a value.

use crate::crd::StorageSpec;
use crate::store::s3::S3Credentials;
use crate::{Error, Result};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use mailvault_core::note::NoteSigner;
use std::collections::BTreeMap;

/// The key of the generated signing-key Secret that holds the key.
pub const SIGNING_KEY_KEY: &str = "signing.key";

/// The annotation by which a Secret opts in: the names of the archives (in its namespace)
/// allowed to use it, comma-separated, or `*` for every archive of the namespace.
pub const ALLOWED_ARCHIVES: &str = "mailvault.io/allowed-archives";

/// Whether a Secret with these annotations has opted in for `archive`.
pub fn opted_in(annotations: Option<&BTreeMap<String, String>>, archive: &str) -> bool {
    annotations
        .and_then(|a| a.get(ALLOWED_ARCHIVES))
        .is_some_and(|list| {
            list.split(',')
                .map(str::trim)
                .any(|n| n == "*" || n == archive)
        })
}

/// The Secrets of one namespace, as one archive may use them.
pub struct Secrets {
    api: Api<Secret>,
    namespace: String,
    archive: String,
}

impl Secrets {
    /// Secrets in `namespace` that `MailboxArchive` `archive` may use.
    pub fn new(client: kube::Client, namespace: &str, archive: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            archive: archive.to_owned(),
        }
    }

    /// The bytes under `key` of Secret `name`, if it opted in for this archive.
    pub async fn bytes(&self, name: &str, key: &str) -> Result<Vec<u8>> {
        let ns = &self.namespace;
        let archive = &self.archive;
        let found = match self.api.get_opt(name).await {
            // RBAC keeps Secrets out of reach (a namespace the chart does not watch, or a rule
            // removed): say so with the apiserver's words, which name the permission.
            Err(kube::Error::Api(status)) if status.code == 403 => {
                return Err(Error::Secret(format!(
                    "the operator may not read Secret {ns}/{name}: {}; the chart grants Secret access only in the namespaces of rbac.watchNamespaces (all when empty)",
                    status.message
                )));
            }
            other => other?,
        };
        let secret = found.ok_or_else(|| {
            Error::Secret(format!(
                "Secret {ns}/{name} does not exist: create it with the key {key:?} and the annotation {ALLOWED_ARCHIVES}={archive}"
            ))
        })?;
        if !opted_in(secret.metadata.annotations.as_ref(), archive) {
            let current = secret
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ALLOWED_ARCHIVES))
                .filter(|v| !v.trim().is_empty());
            let fix = match current {
                Some(list) => format!(
                    "kubectl -n {ns} annotate --overwrite secret {name} {ALLOWED_ARCHIVES}={list},{archive}"
                ),
                None => {
                    format!("kubectl -n {ns} annotate secret {name} {ALLOWED_ARCHIVES}={archive}")
                }
            };
            return Err(Error::Secret(format!(
                "Secret {ns}/{name} has not opted in for MailboxArchive {archive}: a Secret is used only by the archives its annotation {ALLOWED_ARCHIVES} names (comma-separated, or \"*\" for every archive of the namespace); if this archive may use it: {fix}"
            )));
        }
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

    /// The S3 credentials `storage` names: static keys from an opted-in Secret, or a role
    /// assumed with the operator's web identity token (`$AWS_WEB_IDENTITY_TOKEN_FILE`) under
    /// the session name `<namespace>.<archive>`.
    pub async fn s3_credentials(&self, storage: &StorageSpec) -> Result<S3Credentials> {
        if let Some(web) = &storage.web_identity {
            let token_file = std::env::var_os("AWS_WEB_IDENTITY_TOKEN_FILE")
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    Error::Secret(format!(
                        "storage.webIdentity names role {} but the operator has no web identity token (AWS_WEB_IDENTITY_TOKEN_FILE is not set): install the chart with s3.webIdentity.enabled=true, or use IRSA",
                        web.role_arn
                    ))
                })?;
            // STS allows 2..=64 characters; the namespace (at most 63) always fits whole.
            let session_name: String = format!("{}.{}", self.namespace, self.archive)
                .chars()
                .take(64)
                .collect();
            return Ok(S3Credentials::WebIdentity {
                role_arn: web.role_arn.clone(),
                session_name,
                token_file: token_file.into(),
            });
        }
        let Some(creds) = &storage.credentials_secret_ref else {
            return Err(Error::Spec(
                "storage: give credentialsSecretRef or webIdentity".to_owned(),
            ));
        };
        Ok(S3Credentials::Static {
            access_key_id: self.text(&creds.name, &creds.access_key_id_key).await?,
            secret_access_key: self.text(&creds.name, &creds.secret_access_key_key).await?,
        })
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
                    annotations: Some(BTreeMap::from([
                        ("mailvault.io/public-key".to_owned(), signer.verifier_key()),
                        // Its own archive may use it; nobody else's.
                        (ALLOWED_ARCHIVES.to_owned(), self.archive.clone()),
                    ])),
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

#[cfg(test)]
mod tests {
    use super::{ALLOWED_ARCHIVES, opted_in};
    use std::collections::BTreeMap;

    fn annotated(value: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(ALLOWED_ARCHIVES.to_owned(), value.to_owned())])
    }

    #[test]
    fn a_secret_is_used_only_by_the_archives_it_names() {
        for (value, archive, expected) in [
            ("chief", "chief", true),
            ("deputy, chief", "chief", true),
            ("deputy,chief", "chief", true),
            ("*", "anyone", true),
            ("chief", "chief2", false),
            ("chiefs", "chief", false),
            ("", "chief", false),
            ("deputy", "chief", false),
        ] {
            assert_eq!(
                opted_in(Some(&annotated(value)), archive),
                expected,
                "{value:?} for {archive}"
            );
        }
        assert!(!opted_in(None, "chief"));
        assert!(!opted_in(Some(&BTreeMap::new()), "chief"));
    }

    #[test]
    fn the_example_secrets_opt_in_for_the_example_archive() {
        let archive: crate::crd::MailboxArchive = serde_norway::from_str(include_str!(
            "../../../examples/resources/mailboxarchive.yaml"
        ))
        .unwrap();
        let text = include_str!("../../../examples/resources/secrets.yaml");
        let secrets: Vec<k8s_openapi::api::core::v1::Secret> =
            serde_norway::Deserializer::from_str(text)
                .map(|d| serde::Deserialize::deserialize(d).unwrap())
                .collect();
        let name = archive.metadata.name.as_deref().unwrap();
        let spec = &archive.spec;
        for wanted in [
            spec.imap.password_secret_ref.name.as_str(),
            spec.storage
                .credentials_secret_ref
                .as_ref()
                .unwrap()
                .name
                .as_str(),
        ] {
            let secret = secrets
                .iter()
                .find(|s| s.metadata.name.as_deref() == Some(wanted))
                .unwrap_or_else(|| panic!("no example Secret {wanted}"));
            assert!(
                opted_in(secret.metadata.annotations.as_ref(), name),
                "{wanted} does not opt in for {name}"
            );
        }
    }
}
