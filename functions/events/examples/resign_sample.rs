//! Re-signs a sample event from `events/` at the current time, for
//! `cargo lambda invoke` (the committed samples are signed at a fixed
//! timestamp so tests are deterministic, and would be refused as stale).
//!
//! Uses the TEST signing secret `tokenkeep-test-signing-secret`; run the
//! function locally with `SLACK_SIGNING_SECRET=tokenkeep-test-signing-secret`:
//!
//! ```sh
//! cargo run -p tokenkeep-events --example resign_sample -- events/events-app-mention.json > /tmp/event.json
//! cargo lambda invoke tokenkeep-events --data-file /tmp/event.json
//! ```

use tokenkeep_slack_api::SigningSecret;
use tokenkeep_slack_api::fake::sign_request;

const TEST_SIGNING_SECRET: &str = "tokenkeep-test-signing-secret";

fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: resign_sample <events/events-*.json>"))?;
    let mut event: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    let body = event["body"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("{path}: no string body"))?
        .to_owned();
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs(),
    )?;
    let headers = &mut event["headers"];
    headers["x-slack-request-timestamp"] = now.to_string().into();
    headers["x-slack-signature"] = sign_request(
        &SigningSecret::new(TEST_SIGNING_SECRET),
        now,
        body.as_bytes(),
    )
    .into();
    event["requestContext"]["timeEpoch"] = (now * 1000).into();
    println!("{}", serde_json::to_string_pretty(&event)?);
    Ok(())
}
