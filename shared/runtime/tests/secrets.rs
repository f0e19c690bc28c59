//! Cold-start secrets against Secrets Manager on the local emulator
//! (`AWS_ENDPOINT_URL`, started by infra/test.sh): each binary reads only the
//! secrets it declares, and a secret it needs but can't get stops the cold
//! start with the variable's name, never with a default.
//!
//! The emulator does not evaluate IAM, so "reads only" is shown by pointing
//! the undeclared secret's variable at a secret that does not exist: a binary
//! that fetched it would fail.

use tokenkeep_installations::testing::emulator_config;
use tokenkeep_runtime::{Config, ConfigError, SecretsUsed};

async fn put_secret(value: &str) -> String {
    let sm = aws_sdk_secretsmanager::Client::new(&emulator_config().await);
    let name = format!("tk-config-test-{}-{}", std::process::id(), rand_suffix());
    sm.create_secret()
        .name(name)
        .secret_string(value)
        .send()
        .await
        .expect("create secret on the emulator")
        .arn()
        .unwrap()
        .to_owned()
}

fn rand_suffix() -> u128 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    nanos * 1000 + u128::from(SEQ.fetch_add(1, Ordering::SeqCst))
}

const MISSING_ARN: &str =
    "arn:aws:secretsmanager:us-east-1:123456789012:secret:tk-config-test-does-not-exist-AbCdEf";

#[tokio::test]
async fn each_binary_loads_only_the_secrets_it_declares() {
    // Given a client secret in Secrets Manager and a signing-secret variable
    // that names a secret nobody can read,
    let client = put_secret(r#"{"client_secret":"cs-from-sm"}"#).await;
    let env = [
        ("SLACK_CLIENT_ID", "1.2"),
        ("TOKENKEEP_CLIENT_SECRET_ARN", client.as_str()),
        ("TOKENKEEP_SIGNING_SECRET_ARN", MISSING_ARN),
    ];
    // when a client-only binary (OAuth, rotation) starts, it never asks for it;
    let config = Config::load(&env, SecretsUsed::Client)
        .await
        .expect("client-only binary starts");
    assert_eq!(config.slack_client_secret.expose_secret(), "cs-from-sm");
    assert!(matches!(
        config.signing_secret(),
        Err(ConfigError::NotLoaded(_))
    ));
    // and a binary that verifies requests fails, naming the variable.
    let e = Config::load(&env, SecretsUsed::ClientAndSigning)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            ConfigError::Secrets {
                arn_var: "TOKENKEEP_SIGNING_SECRET_ARN",
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "could not read the Secrets Manager secret named by TOKENKEEP_SIGNING_SECRET_ARN"
    );
}

#[tokio::test]
async fn the_events_binary_gets_both_secrets_from_their_own_secrets() {
    let client = put_secret(r#"{"client_secret":"cs-from-sm"}"#).await;
    let signing = put_secret(r#"{"signing_secret":"ss-from-sm"}"#).await;
    let env = [
        ("SLACK_CLIENT_ID", "1.2"),
        // Secrets Manager wins over the variables `tokenkeep dev` uses.
        ("SLACK_CLIENT_SECRET", "from-env"),
        ("SLACK_SIGNING_SECRET", "from-env"),
        ("TOKENKEEP_CLIENT_SECRET_ARN", client.as_str()),
        ("TOKENKEEP_SIGNING_SECRET_ARN", signing.as_str()),
    ];
    let config = Config::load(&env, SecretsUsed::ClientAndSigning)
        .await
        .unwrap();
    assert_eq!(config.slack_client_secret.expose_secret(), "cs-from-sm");
    assert_eq!(
        config.signing_secret().unwrap().expose_secret(),
        "ss-from-sm"
    );
    let shown = format!("{config:?}");
    assert!(
        !shown.contains("cs-from-sm") && !shown.contains("ss-from-sm"),
        "Debug shows no secret"
    );
}

#[tokio::test]
async fn an_empty_or_misplaced_secret_fails_by_name_without_falling_back() {
    // The template creates the client secret as {"client_secret":""}: until the
    // operator sets it, cold start fails naming it, even with a value in the
    // environment (no fallback when the secret is configured).
    let empty = put_secret(r#"{"client_secret":""}"#).await;
    let env = [
        ("SLACK_CLIENT_ID", "1.2"),
        ("SLACK_CLIENT_SECRET", "from-env"),
        ("TOKENKEEP_CLIENT_SECRET_ARN", empty.as_str()),
    ];
    let e = Config::load(&env, SecretsUsed::Client).await.unwrap_err();
    assert!(
        matches!(
            e,
            ConfigError::EmptySecret {
                arn_var: "TOKENKEEP_CLIENT_SECRET_ARN",
                key: "client_secret"
            }
        ),
        "{e}"
    );
    // The signing secret put into the client secret's place is not taken for it.
    let swapped = put_secret(r#"{"signing_secret":"ss"}"#).await;
    let env = [
        ("SLACK_CLIENT_ID", "1.2"),
        ("TOKENKEEP_CLIENT_SECRET_ARN", swapped.as_str()),
    ];
    let e = Config::load(&env, SecretsUsed::Client).await.unwrap_err();
    assert!(
        matches!(
            e,
            ConfigError::EmptySecret {
                key: "client_secret",
                ..
            }
        ),
        "{e}"
    );
    // Not JSON at all: invalid, named, and the value is not in the message.
    let raw = put_secret("plain-secret-value").await;
    let env = [
        ("SLACK_CLIENT_ID", "1.2"),
        ("TOKENKEEP_CLIENT_SECRET_ARN", raw.as_str()),
    ];
    let e = Config::load(&env, SecretsUsed::Client).await.unwrap_err();
    assert!(
        matches!(e, ConfigError::Invalid("TOKENKEEP_CLIENT_SECRET_ARN", _)),
        "{e}"
    );
    assert!(!e.to_string().contains("plain-secret-value"));
}
