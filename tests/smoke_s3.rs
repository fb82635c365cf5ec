//! The local S3 servers enforce Object Lock: a COMPLIANCE-locked version cannot be deleted
//! before its retain-until, can be after, and a delete without a version id only adds a delete
//! marker. Run against versitygw and moto; the differences are in docs/s3-servers.md.

use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{
    BucketVersioningStatus, ChecksumAlgorithm, ObjectLockEnabled, ObjectLockMode,
    ObjectLockRetention, ObjectLockRetentionMode,
};
use mailvault_tests::{S3Flavour, TestEnv, unique_name};
use std::time::{Duration, SystemTime};

/// Base64 of SHA-256, the form of S3's `x-amz-checksum-sha256`.
fn b64_sha256(data: &[u8]) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(data))
}

fn code<E: aws_sdk_s3::error::ProvideErrorMetadata>(e: &E) -> String {
    e.code().unwrap_or("<no code>").to_owned()
}

async fn object_lock_is_enforced(flavour: S3Flavour) {
    let env = TestEnv::load();
    let s3 = env.s3_client(flavour);
    let bucket = unique_name("smoke-lock");

    s3.create_bucket()
        .bucket(&bucket)
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .expect("create bucket with Object Lock");
    let lock = s3
        .get_object_lock_configuration()
        .bucket(&bucket)
        .send()
        .await
        .expect("get object lock configuration");
    assert_eq!(
        lock.object_lock_configuration()
            .and_then(|c| c.object_lock_enabled()),
        Some(&ObjectLockEnabled::Enabled)
    );
    match s3.get_bucket_versioning().bucket(&bucket).send().await {
        Ok(v) => assert_eq!(
            v.status(),
            Some(&BucketVersioningStatus::Enabled),
            "Object Lock implies versioning"
        ),
        // moto answers GetBucketVersioning with a <GetBucketVersioningResponse> root element,
        // which aws-sdk-s3 cannot decode (docs/s3-servers.md). Only that failure is tolerated.
        Err(e) if flavour == S3Flavour::Moto => {
            let text = format!("{e:?}");
            assert!(
                text.contains("GetBucketVersioningResponse"),
                "unexpected moto error: {text}"
            );
        }
        Err(e) => panic!("get bucket versioning: {e:?}"),
    }

    // COMPLIANCE lock a few seconds ahead, with an explicit SHA-256 checksum.
    let body = b"From: a@example.org\r\nSubject: lock\r\n\r\nbody\r\n".to_vec();
    let retain_until = SystemTime::now() + Duration::from_secs(4);
    let put = s3
        .put_object()
        .bucket(&bucket)
        .key("records/r1")
        .body(ByteStream::from(body.clone()))
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .checksum_sha256(b64_sha256(&body))
        .object_lock_mode(ObjectLockMode::Compliance)
        .object_lock_retain_until_date(DateTime::from(retain_until))
        .send()
        .await
        .expect("locked PUT");
    let version = put.version_id().expect("a version id").to_owned();

    // A wrong checksum is refused: the server checks what it stores. moto stores the object
    // anyway (docs/s3-servers.md), so the refusal is asserted on versitygw only.
    let bad = s3
        .put_object()
        .bucket(&bucket)
        .key("records/r2")
        .body(ByteStream::from(body.clone()))
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .checksum_sha256(b64_sha256(b"something else"))
        .send()
        .await;
    if flavour == S3Flavour::Versitygw {
        assert!(bad.is_err(), "PUT with a wrong checksum was accepted");
    }

    let head = s3
        .head_object()
        .bucket(&bucket)
        .key("records/r1")
        .version_id(&version)
        .send()
        .await
        .expect("head");
    assert_eq!(head.object_lock_mode(), Some(&ObjectLockMode::Compliance));

    // Deleting the locked version is refused.
    let refused = s3
        .delete_object()
        .bucket(&bucket)
        .key("records/r1")
        .version_id(&version)
        .send()
        .await
        .expect_err("a COMPLIANCE-locked version was deleted before its retain-until");
    assert_eq!(code(&refused.into_service_error()), "AccessDenied");

    // A delete without a version id only adds a delete marker; the locked version stays.
    let marker = s3
        .delete_object()
        .bucket(&bucket)
        .key("records/r1")
        .send()
        .await
        .expect("delete without version id");
    assert_eq!(marker.delete_marker(), Some(true));
    let versions = s3
        .list_object_versions()
        .bucket(&bucket)
        .prefix("records/r1")
        .send()
        .await
        .expect("list versions");
    assert!(
        versions
            .versions()
            .iter()
            .any(|v| v.version_id() == Some(version.as_str()))
    );
    assert_eq!(versions.delete_markers().len(), 1);
    let got = s3
        .get_object()
        .bucket(&bucket)
        .key("records/r1")
        .version_id(&version)
        .send()
        .await
        .expect("get the locked version by id");
    assert_eq!(
        got.body.collect().await.unwrap().into_bytes().as_ref(),
        body.as_slice()
    );

    // Shortening a COMPLIANCE lock must be refused. moto allows it (see docs/s3-servers.md), so
    // this refusal is asserted on versitygw only.
    if flavour == S3Flavour::Versitygw {
        let shorten = s3
            .put_object_retention()
            .bucket(&bucket)
            .key("records/r1")
            .version_id(&version)
            .retention(
                ObjectLockRetention::builder()
                    .mode(ObjectLockRetentionMode::Compliance)
                    .retain_until_date(DateTime::from(SystemTime::now()))
                    .build(),
            )
            .send()
            .await;
        assert!(
            shorten.is_err(),
            "versitygw let a COMPLIANCE retention be shortened"
        );
    }

    // After retain-until the version can be deleted.
    let wait = retain_until
        .duration_since(SystemTime::now())
        .unwrap_or_default()
        + Duration::from_millis(1500);
    tokio::time::sleep(wait).await;
    s3.delete_object()
        .bucket(&bucket)
        .key("records/r1")
        .version_id(&version)
        .send()
        .await
        .expect("delete after retain-until");
    let after = s3
        .list_object_versions()
        .bucket(&bucket)
        .prefix("records/r1")
        .send()
        .await
        .expect("list versions");
    assert!(
        after
            .versions()
            .iter()
            .all(|v| v.version_id() != Some(version.as_str()))
    );
}

#[tokio::test]
async fn versitygw_enforces_object_lock() {
    object_lock_is_enforced(S3Flavour::Versitygw).await;
}

#[tokio::test]
async fn moto_enforces_object_lock() {
    object_lock_is_enforced(S3Flavour::Moto).await;
}

#[tokio::test]
async fn a_bucket_without_object_lock_says_so() {
    let env = TestEnv::load();
    for flavour in [S3Flavour::Versitygw, S3Flavour::Moto] {
        let s3 = env.s3_client(flavour);
        let bucket = unique_name("smoke-nolock");
        s3.create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .expect("create bucket");
        let err = s3
            .get_object_lock_configuration()
            .bucket(&bucket)
            .send()
            .await
            .expect_err("a bucket created without Object Lock reported a lock configuration");
        assert_eq!(
            code(&err.into_service_error()),
            "ObjectLockConfigurationNotFoundError",
            "{flavour:?}"
        );
    }
}

/// mailvault's S3 store lists a key's versions in the order they were written, on a server
/// whose version ids sort by time (versitygw) and on one whose ids are random (moto, like AWS):
/// readers of the log take the first written, the one mailvault wrote.
/// A listing of versions longer than one page (S3 pages hold 1,000) names every version once:
/// versitygw starts each next page with the version it was asked to start after, which the
/// store drops, so 1,001 log objects are 1,001 versions, not 1,002 (a log object listed twice
/// reads as "2 versions", a sign of tampering).
#[tokio::test(flavor = "multi_thread")]
async fn a_listing_longer_than_a_page_names_each_version_once() {
    use futures::StreamExt as _;
    use mailvault::store::Store as _;
    mailvault_tests::install_crypto_provider();
    let env = TestEnv::load();
    for flavour in [S3Flavour::Versitygw, S3Flavour::Moto] {
        let bucket = unique_name("smoke-pages");
        env.create_bucket(flavour, &bucket, true).await;
        let s3 = env.s3_client(flavour);
        let keys: Vec<String> = (0..1001).map(|i| format!("archive/log/{i:04}")).collect();
        let (s3, bucket_ref) = (&s3, &bucket);
        futures::stream::iter(&keys)
            .for_each_concurrent(16, |key| async move {
                s3.put_object()
                    .bucket(bucket_ref)
                    .key(key)
                    .body(ByteStream::from_static(b"x"))
                    .send()
                    .await
                    .unwrap();
            })
            .await;
        let store = env.s3_store(flavour, &bucket, "archive");
        let listed = store.list_version_ids("log/").await.unwrap();
        let names: Vec<&str> = listed.iter().map(|(k, _, _)| k.as_str()).collect();
        let twice: Vec<&&str> = names
            .windows(2)
            .filter(|w| w[0] == w[1])
            .map(|w| &w[0])
            .collect();
        assert!(twice.is_empty(), "{flavour:?} listed twice: {twice:?}");
        let expected: Vec<String> = keys
            .iter()
            .map(|k| k.trim_start_matches("archive/").to_owned())
            .collect();
        assert!(
            names == expected,
            "{flavour:?}: {} listed of 1,001",
            names.len()
        );
    }
}

#[tokio::test]
async fn the_store_lists_a_keys_versions_oldest_first() {
    use mailvault::store::Store as _;
    mailvault_tests::install_crypto_provider();
    let env = TestEnv::load();
    for flavour in [S3Flavour::Versitygw, S3Flavour::Moto] {
        let bucket = unique_name("smoke-order");
        env.create_bucket(flavour, &bucket, true).await;
        let s3 = env.s3_client(flavour);
        let mut written = Vec::new();
        for i in 0..6 {
            let put = s3
                .put_object()
                .bucket(&bucket)
                .key("archive/log/k")
                .body(ByteStream::from(format!("version {i}").into_bytes()))
                .send()
                .await
                .unwrap();
            written.push(put.version_id().unwrap().to_owned());
        }
        let marker = s3
            .delete_object()
            .bucket(&bucket)
            .key("archive/log/k")
            .send()
            .await
            .unwrap();
        let store = env.s3_store(flavour, &bucket, "archive");
        let listed = store.list_version_ids("log/").await.unwrap();
        let mut expected: Vec<(String, String, bool)> = written
            .into_iter()
            .map(|v| ("log/k".to_owned(), v, false))
            .collect();
        expected.push((
            "log/k".to_owned(),
            marker.version_id().unwrap().to_owned(),
            true,
        ));
        assert_eq!(listed, expected, "{flavour:?}");
    }
}
