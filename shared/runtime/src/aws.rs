//! Timeouts for every AWS SDK call (DynamoDB, KMS, Secrets Manager), sized to
//! the refresh lease.
//!
//! Without them an SDK call has only a connect timeout: a stalled KMS or
//! DynamoDB call could outlive the 30 s refresh lease, and a second process
//! would take the lease over while the first still holds the refresh token.
//! The store renews its lease right before calling Slack, so what has to fit
//! inside one lease is: Slack's call timeout, then the new pair's write. Each
//! write attempt is bounded by [`OPERATION_TIMEOUT`] (the SDK's own retries
//! included), and the store stops retrying a margin before the lease ends.
//! The test below keeps these numbers honest against the store's defaults.

use std::time::Duration;

use aws_config::SdkConfig;
use aws_config::timeout::TimeoutConfig;

/// TCP + TLS to a regional endpoint: well under a second when healthy.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// One attempt (a single HTTP request). DynamoDB and KMS answer in tens of
/// milliseconds; an attempt that takes seconds is stalled and is retried.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
/// One SDK operation, its retries (three attempts with backoff) included.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(9);

/// The timeouts every client gets.
pub fn timeout_config() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build()
}

/// `config` with [`timeout_config`] applied (a config the caller made, such
/// as the emulator's in tests, gets the same bounds as production).
pub fn with_timeouts(config: &SdkConfig) -> SdkConfig {
    config.to_builder().timeout_config(timeout_config()).build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_refresh_fits_inside_the_default_lease() {
        // Given the store's defaults
        let store = tokenkeep_installations::StoreConfig::new("A1");
        let lease = Duration::from_secs(store.lease_secs as u64);
        // Then Slack's call (inside refresh_reserve) plus one full write
        // operation end before the lease does.
        assert!(
            store.refresh_reserve + OPERATION_TIMEOUT < lease,
            "{:?} + {OPERATION_TIMEOUT:?} >= {lease:?}",
            store.refresh_reserve
        );
        assert!(tokenkeep_slack_api::client::DEFAULT_TIMEOUT < store.refresh_reserve);
        assert!(ATTEMPT_TIMEOUT < OPERATION_TIMEOUT && CONNECT_TIMEOUT < ATTEMPT_TIMEOUT);
    }

    #[test]
    fn applied_to_a_config_made_elsewhere() {
        let made = SdkConfig::builder().build();
        let cfg = with_timeouts(&made);
        let t = cfg.timeout_config().unwrap();
        assert_eq!(t.operation_timeout(), Some(OPERATION_TIMEOUT));
        assert_eq!(t.operation_attempt_timeout(), Some(ATTEMPT_TIMEOUT));
        assert_eq!(t.connect_timeout(), Some(CONNECT_TIMEOUT));
    }
}
