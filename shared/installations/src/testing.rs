//! Test helpers shared with other crates' tests (feature `test-util`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use crate::clock::ManualClock;
use crate::{create_tables, DynamoRepository};

/// The AWS config for the local emulator (moto). Tests that need it fail
/// loudly when it isn't there rather than silently skipping.
pub async fn emulator_config() -> aws_config::SdkConfig {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| {
        panic!("AWS_ENDPOINT_URL is not set: run the suite through infra/test.sh, which starts the local AWS emulator (moto)")
    });
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .test_credentials()
        .load()
        .await
}

static TABLE_SEQ: AtomicU64 = AtomicU64::new(0);

/// Fresh, uniquely named tables on the emulator, so tests don't see each other.
pub async fn emulator_repository() -> (DynamoRepository, aws_sdk_dynamodb::Client, String, String) {
    let config = emulator_config().await;
    let client = aws_sdk_dynamodb::Client::new(&config);
    let id = format!("{}-{}-{}", std::process::id(), TABLE_SEQ.fetch_add(1, Ordering::SeqCst), rand::random::<u32>());
    let table = format!("tk-test-{id}");
    let audit = format!("tk-test-audit-{id}");
    create_tables(&client, &table, &audit).await.expect("create tables on the emulator");
    (DynamoRepository::new(client.clone(), &table, &audit), client, table, audit)
}

/// A new KMS key on the emulator.
pub async fn emulator_kms_key() -> (aws_sdk_kms::Client, String) {
    let config = emulator_config().await;
    let client = aws_sdk_kms::Client::new(&config);
    let out = client.create_key().description("tokenkeep test key").send().await.expect("create kms key on the emulator");
    let arn = out.key_metadata().and_then(|m| m.arn()).expect("key arn").to_owned();
    (client, arn)
}

/// A `KeyProvider` over a temporary local key file (kept alive by the returned dir).
pub fn local_keys() -> (Arc<dyn tokenkeep_envelope::KeyProvider>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = tokenkeep_envelope::LocalKeyProvider::open(dir.path(), "test").expect("local key");
    (Arc::new(keys), dir)
}
