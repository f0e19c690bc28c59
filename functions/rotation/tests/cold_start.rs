//! Cold start of the real binary: the rotation function reads only the client
//! secret. Without it, it exits naming the setting; a signing secret it can't
//! read is never asked for (it starts past configuration, to the point where
//! only the Lambda runtime's own settings are missing).

use std::process::Command;

const MISSING_ARN: &str =
    "arn:aws:secretsmanager:us-east-1:123456789012:secret:tk-cold-start-missing-AbCdEf";

fn cold_start(env: &[(&str, &str)]) -> (bool, String) {
    let data_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cold-start-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_tokenkeep-rotation"))
        .env_clear()
        .env("TOKENKEEP_DATA_DIR", &data_dir)
        .envs(env.iter().copied())
        .output()
        .expect("run the rotation binary");
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
fn without_the_client_secret_it_exits_naming_it() {
    let (ok, out) = cold_start(&[("SLACK_CLIENT_ID", "1.2"), ("SLACK_SIGNING_SECRET", "ss")]);
    assert!(!ok, "{out}");
    assert!(out.contains("SLACK_CLIENT_SECRET"), "{out}");
}

#[test]
fn it_never_asks_for_the_signing_secret() {
    // The signing secret's variable names a secret nobody can read (and no
    // AWS endpoint is configured): reading it would fail the cold start.
    let env = [
        ("SLACK_CLIENT_ID", "1.2"),
        ("SLACK_CLIENT_SECRET", "cs"),
        ("TOKENKEEP_SIGNING_SECRET_ARN", MISSING_ARN),
    ];
    let (ok, out) = cold_start(&env);
    assert!(!ok, "outside Lambda the runtime can't start: {out}");
    assert!(
        out.contains("Missing AWS_LAMBDA_"),
        "got past configuration to the Lambda runtime: {out}"
    );
    assert!(!out.contains("SIGNING_SECRET"), "{out}");
}
