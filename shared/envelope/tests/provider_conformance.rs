//! One contract, every key provider: the local key file and KMS (on the emulator).

use std::sync::Arc;

use tokenkeep_envelope::testing::{CountingKeyProvider, Fault, FaultyKeyProvider};
use tokenkeep_envelope::{
    Aad, CacheLimits, CachingKeyProvider, EncryptedDataKey, EncryptionContext, EnvelopeError,
    KeyProvider, KmsKeyProvider, LocalKeyProvider, open, seal,
};

/// The emulator endpoint; tests that need it fail loudly rather than skip.
fn emulator_endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL").expect(
        "AWS_ENDPOINT_URL is not set: run the suite through infra/test.sh, which starts the local AWS emulator (moto)",
    )
}

async fn kms_client() -> aws_sdk_kms::Client {
    let endpoint = emulator_endpoint();
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .load()
        .await;
    aws_sdk_kms::Client::new(&config)
}

async fn kms_key(client: &aws_sdk_kms::Client) -> String {
    let out = client
        .create_key()
        .description("tokenkeep envelope test")
        .send()
        .await
        .expect("create kms key");
    out.key_metadata().unwrap().arn().unwrap().to_owned()
}

/// The shared contract of `KeyProvider` (see its doc comment).
async fn contract(provider: &dyn KeyProvider, other_key_id: &str) {
    let ctx = EncryptionContext::for_installation("A1", "T#-#T1");

    // Given a generated data key, when it is unwrapped under the same context,
    // then it seals and opens the same field.
    let dk = provider.generate_data_key(&ctx).await.expect("generate");
    let aad = Aad::new().part("field", b"bot_token");
    let sealed = seal(&dk.plaintext, &aad, b"xoxb-secret").unwrap();
    let unwrapped = provider
        .decrypt_data_key(&dk.encrypted, &ctx)
        .await
        .expect("decrypt");
    assert_eq!(&*open(&unwrapped, &aad, &sealed).unwrap(), b"xoxb-secret");

    // A different tenant, app or purpose in the context fails like tampering.
    for wrong in [
        EncryptionContext::for_installation("A1", "T#-#T2"),
        EncryptionContext::for_installation("A2", "T#-#T1"),
        EncryptionContext::from_pairs([
            ("app_id", "A1"),
            ("tenant", "T#-#T1"),
            ("purpose", "other"),
        ]),
    ] {
        let err = provider
            .decrypt_data_key(&dk.encrypted, &wrong)
            .await
            .expect_err("wrong context must fail");
        assert!(
            matches!(err, EnvelopeError::Decrypt | EnvelopeError::AccessDenied),
            "got {err:?}"
        );
    }

    // An altered blob fails.
    let mut altered = dk.encrypted.clone();
    let last = altered.blob.len() - 1;
    altered.blob[last] ^= 1;
    assert!(provider.decrypt_data_key(&altered, &ctx).await.is_err());

    // Re-encrypt moves the wrapped key to another key; the data key is the same.
    let moved = provider
        .re_encrypt(&dk.encrypted, &ctx, other_key_id)
        .await
        .expect("re-encrypt");
    assert_ne!(moved.blob, dk.encrypted.blob);
    assert!(
        moved
            .key_id
            .contains(other_key_id.trim_start_matches("local:"))
            || moved.key_id == other_key_id
    );
    let again = provider
        .decrypt_data_key(&moved, &ctx)
        .await
        .expect("decrypt after re-encrypt");
    assert_eq!(&*open(&again, &aad, &sealed).unwrap(), b"xoxb-secret");
    // And the context is still enforced after the move.
    assert!(
        provider
            .decrypt_data_key(&moved, &EncryptionContext::for_installation("A1", "T#-#T9"))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn local_provider_meets_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let provider = LocalKeyProvider::open(dir.path(), "default").unwrap();
    contract(&provider, "local:second").await;
}

#[cfg(unix)]
#[tokio::test]
async fn local_key_file_is_0600_and_reused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let ctx = EncryptionContext::for_installation("A1", "T#-#T1");
    let first = LocalKeyProvider::open(dir.path(), "default").unwrap();
    let dk = first.generate_data_key(&ctx).await.unwrap();
    let mode = std::fs::metadata(dir.path().join("default.kek"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // A second process (a new provider over the same directory) opens the same keys.
    let second = LocalKeyProvider::open(dir.path(), "default").unwrap();
    assert!(second.decrypt_data_key(&dk.encrypted, &ctx).await.is_ok());
    // An unknown or malformed key id is refused, not created from a path.
    let forged = EncryptedDataKey {
        key_id: "local:../etc".into(),
        blob: dk.encrypted.blob.clone(),
    };
    assert!(matches!(
        second.decrypt_data_key(&forged, &ctx).await,
        Err(EnvelopeError::AccessDenied)
    ));
    // A well-formed but unknown key id is refused too, and no key file appears for it.
    let unknown = EncryptedDataKey {
        key_id: "local:never-made".into(),
        blob: dk.encrypted.blob.clone(),
    };
    assert!(matches!(
        second.decrypt_data_key(&unknown, &ctx).await,
        Err(EnvelopeError::AccessDenied)
    ));
    assert!(
        !dir.path().join("never-made.kek").exists(),
        "a read must not create key material"
    );
}

#[tokio::test]
async fn kms_provider_meets_the_contract_on_the_emulator() {
    let client = kms_client().await;
    let key = kms_key(&client).await;
    let other = kms_key(&client).await;
    let provider = KmsKeyProvider::new(client, key);
    contract(&provider, &other).await;
}

#[tokio::test]
async fn cache_answers_repeat_decrypts_and_respects_limits() {
    let dir = tempfile::tempdir().unwrap();
    let counting = Arc::new(CountingKeyProvider::new(
        LocalKeyProvider::open(dir.path(), "default").unwrap(),
    ));
    let limits = CacheLimits {
        max_uses: 3,
        ..CacheLimits::default()
    };
    let cache = CachingKeyProvider::new(counting.clone(), limits);
    let ctx = EncryptionContext::for_installation("A1", "T#-#T1");
    let dk = cache.generate_data_key(&ctx).await.unwrap();

    // Given a warm cache, when the same key is decrypted three times, then the
    // provider sees one call; the fourth use exceeds max_uses and goes back.
    for _ in 0..3 {
        cache.decrypt_data_key(&dk.encrypted, &ctx).await.unwrap();
    }
    assert_eq!(
        counting.decrypts.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    cache.decrypt_data_key(&dk.encrypted, &ctx).await.unwrap();
    assert_eq!(
        counting.decrypts.load(std::sync::atomic::Ordering::Relaxed),
        2
    );

    // The cache key includes the context: a wrong context is never a cache hit.
    let wrong = EncryptionContext::for_installation("A1", "T#-#T2");
    assert!(cache.decrypt_data_key(&dk.encrypted, &wrong).await.is_err());
    assert_eq!(
        counting.decrypts.load(std::sync::atomic::Ordering::Relaxed),
        3
    );
}

/// An expired key is dropped (and zeroized) by the cache's timer, not only
/// when someone asks for it again.
#[tokio::test]
async fn expired_cache_entries_are_evicted_on_a_timer() {
    let dir = tempfile::tempdir().unwrap();
    let local = LocalKeyProvider::open(dir.path(), "default").unwrap();
    let ctx = EncryptionContext::for_installation("A1", "T#-#T1");
    let dk = local.generate_data_key(&ctx).await.unwrap();
    let max_age = std::time::Duration::from_millis(60);
    let cache = CachingKeyProvider::new(
        local,
        CacheLimits {
            max_age,
            ..CacheLimits::default()
        },
    );
    let key = cache.decrypt_data_key(&dk.encrypted, &ctx).await.unwrap();
    let weak = Arc::downgrade(&key);
    drop(key);
    assert_eq!(cache.len(), 1);

    // When nobody looks the key up again, within a few timer periods...
    let started = std::time::Instant::now();
    while !cache.is_empty() {
        assert!(
            started.elapsed() < max_age * 10,
            "the expired entry is still cached"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // ...it is gone, and its last reference with it (zeroized on drop).
    assert!(weak.upgrade().is_none(), "the plaintext key is still alive");
    assert_eq!(cache.stats().evictions, 1);
    assert_eq!(cache.stats().misses, 1, "evicted without a lookup");
}

#[tokio::test]
async fn cache_expires_by_age_and_can_be_disabled() {
    let dir = tempfile::tempdir().unwrap();
    let counting = Arc::new(CountingKeyProvider::new(
        LocalKeyProvider::open(dir.path(), "default").unwrap(),
    ));
    let ctx = EncryptionContext::for_installation("A1", "T#-#T1");
    let dk = counting.generate_data_key(&ctx).await.unwrap();

    let aged = CachingKeyProvider::new(
        counting.clone(),
        CacheLimits {
            max_age: std::time::Duration::from_millis(20),
            ..CacheLimits::default()
        },
    );
    aged.decrypt_data_key(&dk.encrypted, &ctx).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    aged.decrypt_data_key(&dk.encrypted, &ctx).await.unwrap();
    assert_eq!(aged.stats().misses, 2, "an aged entry is not served");

    let off = CachingKeyProvider::new(counting.clone(), CacheLimits::disabled());
    off.decrypt_data_key(&dk.encrypted, &ctx).await.unwrap();
    off.decrypt_data_key(&dk.encrypted, &ctx).await.unwrap();
    assert_eq!(off.stats().hits, 0);

    let tiny = CachingKeyProvider::new(
        counting.clone(),
        CacheLimits {
            max_entries: 2,
            ..CacheLimits::default()
        },
    );
    for tenant in ["T#-#T1", "T#-#T2", "T#-#T3"] {
        let c = EncryptionContext::for_installation("A1", tenant);
        let k = counting.generate_data_key(&c).await.unwrap();
        tiny.decrypt_data_key(&k.encrypted, &c).await.unwrap();
    }
    assert_eq!(
        tiny.stats().evictions,
        1,
        "the oldest of three entries is evicted at max_entries = 2"
    );
}

#[tokio::test]
async fn a_failing_provider_fails_closed_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = Arc::new(FaultyKeyProvider::new(
        LocalKeyProvider::open(dir.path(), "default").unwrap(),
    ));
    let cache = CachingKeyProvider::new(faulty.clone(), CacheLimits::default());
    let ctx = EncryptionContext::for_installation("A1", "T#-#T1");
    let dk = cache.generate_data_key(&ctx).await.unwrap();

    faulty.set_fault(Fault::Unavailable);
    assert!(matches!(
        cache.decrypt_data_key(&dk.encrypted, &ctx).await,
        Err(EnvelopeError::Unavailable(_))
    ));
    faulty.set_fault(Fault::AccessDenied);
    assert!(matches!(
        cache.decrypt_data_key(&dk.encrypted, &ctx).await,
        Err(EnvelopeError::AccessDenied)
    ));
    faulty.set_fault(Fault::None);
    assert!(cache.decrypt_data_key(&dk.encrypted, &ctx).await.is_ok());
}

#[test]
fn debug_output_never_contains_key_bytes() {
    let key = tokenkeep_envelope::PlainDataKey::random();
    assert_eq!(format!("{key:?}"), "PlainDataKey([REDACTED])");
}
