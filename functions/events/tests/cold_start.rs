//! Cold start of the real binary: a secret the events function needs but
//! does not have stops it before it serves anything, naming the setting,
//! never falling back to a default.

use std::process::Command;

const MISSING_ARN: &str =
    "arn:aws:secretsmanager:us-east-1:123456789012:secret:tk-cold-start-missing-AbCdEf";

/// Runs the binary with only `env` (plus the emulator's AWS settings when
/// asked); returns whether it succeeded and what it printed.
fn cold_start(env: &[(&str, &str)], with_emulator: bool) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tokenkeep-events"));
    cmd.env_clear().envs(env.iter().copied());
    if with_emulator {
        let endpoint = std::env::var("AWS_ENDPOINT_URL").expect(
            "AWS_ENDPOINT_URL is not set: run the suite through infra/test.sh (local AWS emulator)",
        );
        cmd.envs([
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]);
    }
    let out = cmd.output().expect("run the events binary");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn without_the_signing_secret_it_exits_naming_it() {
    let (ok, out) = cold_start(
        &[("SLACK_CLIENT_ID", "1.2"), ("SLACK_CLIENT_SECRET", "cs")],
        false,
    );
    assert!(!ok, "{out}");
    assert!(out.contains("SLACK_SIGNING_SECRET"), "{out}");
}

#[test]
fn with_an_unreadable_signing_secret_it_exits_naming_its_variable() {
    let env = [
        ("SLACK_CLIENT_ID", "1.2"),
        ("SLACK_CLIENT_SECRET", "cs"),
        // A value in the environment is no fallback once the secret is configured.
        ("SLACK_SIGNING_SECRET", "would-be-default"),
        ("TOKENKEEP_SIGNING_SECRET_ARN", MISSING_ARN),
    ];
    let (ok, out) = cold_start(&env, true);
    assert!(!ok, "{out}");
    assert!(out.contains("TOKENKEEP_SIGNING_SECRET_ARN"), "{out}");
    assert!(
        !out.contains("would-be-default"),
        "no secret value in the output"
    );
}
