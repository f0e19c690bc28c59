//! `InstallationStore`: the API functions and apps use.

use std::sync::Arc;

use tokenkeep_envelope::KeyProvider;
use tokenkeep_slack_api::{AccessToken, WebhookUrl};

use crate::record::field;
use crate::schema;
use crate::sealer::RecordSealer;
use crate::{
    AuditRecord, Clock, Expect, Installation, InstallationInfo, InstallationMeta,
    InstallationQuery, LifecycleEvent, LifecycleOutcome, Outcome, ReadContext, RecordKey,
    RecordKind, RepoError, Repository, Status, StoreError, StoredRecord, SystemClock, TenantKey,
    TokenKind, VerifiedTenant, VerifyError,
};
use crate::{
    ImportOutcome, ImportedRecord, NoStoreMetrics, RevocationRestore, StoreMetric, StoreMetrics,
};

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Goes into every data key's encryption context. tokenkeep uses the Slack
    /// client id: stable for the app, known to every function from config.
    pub app_id: String,
    /// A rotating token is due for refresh this long before it expires.
    pub refresh_window_secs: i64,
    /// How long a refresh lease holds. It must cover the Slack call's timeout
    /// plus the new pair's write retries; every AWS call's own timeout fits
    /// inside it (`tokenkeep_runtime::aws`).
    pub lease_secs: i64,
    /// The time a request-path refresh needs: Slack's call timeout plus room
    /// for the new pair's write. A read whose [`ReadContext::deadline`] leaves
    /// less does not start a refresh (see [`ReadContext::with_deadline`]).
    pub refresh_reserve: std::time::Duration,
    /// Refresh due-but-valid tokens on a background task after answering.
    /// Off in Lambda: the sandbox freezes once the response is sent, so the
    /// task would stall holding its lease; the rotation sweep covers it there.
    pub background_refresh: bool,
}

impl StoreConfig {
    pub fn new(app_id: impl Into<String>) -> Self {
        Self {
            app_id: app_id.into(),
            refresh_window_secs: 120 * 60,
            lease_secs: 30,
            // Slack's default call timeout (10 s) plus two seconds for the write.
            refresh_reserve: std::time::Duration::from_secs(12),
            background_refresh: true,
        }
    }
}

/// What [`InstallationStore::rekey_record`] did with one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RekeyOutcome {
    Rekeyed,
    AlreadyUnderKey,
    /// No sealed fields, so no data key to re-wrap.
    NothingSealed,
    /// Someone (a refresh) holds the record's lease: rerun later.
    Leased,
    /// Deleted (uninstalled) since it was read.
    Gone,
    /// Kept losing the race to other writers: rerun later.
    Contended,
    /// `admit` said no (the operator's limit was reached).
    NotAdmitted,
}

/// Lease-and-write rounds `rekey_record` tries before calling a record contended.
const REKEY_ATTEMPTS: usize = 5;

/// The store. Cheap to clone: every field is shared, so a clone can run a
/// background refresh while the caller returns.
#[derive(Debug, Clone)]
pub struct InstallationStore {
    repo: Arc<dyn Repository>,
    pub(crate) sealer: RecordSealer,
    clock: Arc<dyn Clock>,
    config: StoreConfig,
    pub(crate) refresh: crate::refresh::RefreshState,
    lifecycle_stale: Arc<std::sync::atomic::AtomicU64>,
    metrics: Arc<dyn StoreMetrics>,
}

/// The audit outcome of a token read's result.
fn outcome_of<T>(result: &Result<T, StoreError>) -> Outcome {
    match result {
        Ok(_) => Outcome::Ok,
        Err(StoreError::NotInstalled) => Outcome::NotInstalled,
        Err(StoreError::NeedsReinstall) => Outcome::NeedsReinstall,
        Err(StoreError::Integrity) => Outcome::DecryptFailed,
        Err(StoreError::Expired) => Outcome::Expired,
        Err(StoreError::Refresh(_)) => Outcome::RefreshFailed,
        Err(_) => Outcome::Failed,
    }
}

/// Whether a revocation at `revoked_at` covers a grant installed at
/// `installed_at` (see [`InstallationStore::revoked_since`]).
fn revokes(revoked_at: Option<i64>, installed_at: i64) -> bool {
    revoked_at.is_some_and(|t| installed_at <= t)
}

fn info_of(record: &StoredRecord) -> Result<InstallationInfo, StoreError> {
    let key = record
        .key()
        .map_err(|_| StoreError::Repository(RepoError::Corrupt("bad record key".into())))?;
    Ok(InstallationInfo {
        tenant: key.tenant,
        kind: key.kind,
        meta: record.meta.clone(),
        version: record.version,
        generation: record.generation,
        has_token: record.sealed.contains_key(field::TOKEN),
        has_refresh_token: record.sealed.contains_key(field::REFRESH_TOKEN),
    })
}

impl InstallationStore {
    pub fn new(repo: Arc<dyn Repository>, keys: Arc<dyn KeyProvider>, config: StoreConfig) -> Self {
        Self {
            repo,
            sealer: RecordSealer::new(keys, config.app_id.clone()),
            clock: Arc::new(SystemClock),
            config,
            refresh: Default::default(),
            lifecycle_stale: Default::default(),
            metrics: Arc::new(NoStoreMetrics),
        }
    }

    /// Where the store counts failed decrypts, request-path refresh failures,
    /// `needs_reinstall` markings and refused stale records (see [`StoreMetric`]).
    pub fn with_metrics(mut self, metrics: Arc<dyn StoreMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Counts `metric` on the store's sink.
    pub(crate) fn count(&self, metric: StoreMetric) {
        self.metrics.count(metric);
    }

    /// The audit outcome of a token read, counted where it is a metric.
    fn read_outcome<T>(&self, result: &Result<T, StoreError>) -> Outcome {
        let outcome = outcome_of(result);
        match outcome {
            Outcome::DecryptFailed => self.count(StoreMetric::DecryptFailed),
            Outcome::RefreshFailed => self.count(StoreMetric::RefreshFailed),
            _ => {}
        }
        outcome
    }

    /// Enables token refresh through Slack (rotation). Without it an expired
    /// rotating token fails its read with `StoreError::Expired`.
    pub fn with_refresher(mut self, slack: Arc<dyn tokenkeep_slack_api::SlackOAuth>) -> Self {
        self.refresh.slack = Some(slack);
        self
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn repository(&self) -> &Arc<dyn Repository> {
        &self.repo
    }
    pub fn key_provider(&self) -> &Arc<dyn KeyProvider> {
        self.sealer.keys()
    }
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Moves one record's data key under `to_key` (`tokenkeep rekey`). Only
    /// the wrapped data key changes, so the sealed fields, the version and the
    /// AAD stay as they are, and a record already under a key `is_target`
    /// names is left alone (a rerun continues where one stopped).
    ///
    /// Written under the record's own refresh lease (taken as `owner`, then
    /// `Expect::Leased`), not just a version check: a refresh takes its lease
    /// without bumping the version, so a version-only write could land while
    /// that refresh is at Slack and clear its lease, and the refresh's write
    /// of the new pair would fail after Slack had spent the old refresh token.
    /// With the lease, a refresh waits instead; a record whose lease someone
    /// else holds is [`RekeyOutcome::Leased`].
    ///
    /// `admit` is asked once, before the first write of a record that needs
    /// one (an operator's `--limit`); `false` leaves it untouched.
    pub async fn rekey_record(
        &self,
        mut record: StoredRecord,
        to_key: &str,
        is_target: impl Fn(&str) -> bool,
        owner: &str,
        admit: impl FnOnce() -> bool,
    ) -> Result<RekeyOutcome, StoreError> {
        let key = record
            .key()
            .map_err(|_| StoreError::Repository(RepoError::Corrupt("bad record key".into())))?;
        let mut admit = Some(admit);
        for _ in 0..REKEY_ATTEMPTS {
            if record.sealed.is_empty() || record.data_key.is_empty() {
                return Ok(RekeyOutcome::NothingSealed);
            }
            if is_target(&record.data_key_id) {
                return Ok(RekeyOutcome::AlreadyUnderKey);
            }
            let now = self.clock.now_secs();
            if record.lease_until.is_some_and(|u| u >= now)
                && record.lease_owner.as_deref() != Some(owner)
            {
                return Ok(RekeyOutcome::Leased);
            }
            if let Some(admit) = admit.take()
                && !admit()
            {
                return Ok(RekeyOutcome::NotAdmitted);
            }
            let leased = self
                .repo
                .try_lease(
                    &key,
                    record.version,
                    record.generation,
                    owner,
                    now,
                    now + self.config.lease_secs,
                )
                .await?;
            if !leased {
                // The version moved, the lease was taken, or the record is gone: look again.
                match self.repo.get(&key).await? {
                    Some(r) => {
                        record = r;
                        continue;
                    }
                    None => return Ok(RekeyOutcome::Gone),
                }
            }
            let (data_key, data_key_id) = match self.sealer.rewrap(&record, to_key).await {
                Ok(wrapped) => wrapped,
                Err(e) => {
                    self.release_own_lease(&key, owner).await;
                    return Err(e);
                }
            };
            let next = StoredRecord {
                data_key,
                data_key_id,
                lease_owner: None,
                lease_until: None,
                ..record.clone()
            };
            let expect = Expect::Leased {
                version: record.version,
                generation: record.generation,
                owner: owner.to_owned(),
            };
            match self.repo.put(&next, expect).await {
                Ok(()) => return Ok(RekeyOutcome::Rekeyed),
                // Our lease ran out and someone wrote; their write decides, look again.
                Err(RepoError::ConditionFailed) => match self.repo.get(&key).await? {
                    Some(r) => record = r,
                    None => return Ok(RekeyOutcome::Gone),
                },
                Err(e) => {
                    self.release_own_lease(&key, owner).await;
                    return Err(e.into());
                }
            }
        }
        Ok(RekeyOutcome::Contended)
    }

    /// Drops `owner`'s lease on the record; a failure only means the lease
    /// runs out on its own.
    pub(crate) async fn release_own_lease(&self, key: &RecordKey, owner: &str) {
        if let Err(e) = self.repo.release_lease(key, owner).await {
            tracing::warn!(tenant = %key.pk(), sk = %key.sk(), error = %e, "could not release a lease; it runs out on its own");
        }
    }

    /// Opens every sealed field of a record without returning any of them:
    /// `tokenkeep verify` uses it to find tampered or undecryptable records,
    /// and says which ([`VerifyError`]). The plaintext exists in memory for a
    /// moment, so it is audited like any token read (one audit record per
    /// record, `ctx.reason` e.g. `verify`), and fails if the audit record
    /// can't be written.
    pub async fn verify_record(
        &self,
        record: &StoredRecord,
        ctx: &ReadContext,
    ) -> Result<(), VerifyError> {
        let key = record
            .key()
            .map_err(|_| StoreError::Repository(RepoError::Corrupt("bad record key".into())))?;
        if record.sealed.is_empty() {
            return Ok(());
        }
        let result = match self.sealer.unwrap_data_key_for_report(record).await {
            Err(e) => Err(VerifyError::DataKey(e)),
            Ok(data_key) => match self.sealer.open_all_with(&data_key, record) {
                Ok(_) => Ok(()),
                Err(StoreError::Integrity) => Err(VerifyError::Field),
                Err(e) => Err(VerifyError::Store(e)),
            },
        };
        let outcome = match &result {
            Ok(()) => Outcome::Ok,
            Err(
                VerifyError::Field
                | VerifyError::DataKey(tokenkeep_envelope::EnvelopeError::Decrypt),
            ) => Outcome::DecryptFailed,
            Err(_) => Outcome::Failed,
        };
        self.audit(self.audit_record(
            &key,
            TokenKind::of_record(&key),
            ctx,
            outcome,
            record.version,
        ))
        .await?;
        result
    }

    // ---- install -----------------------------------------------------------

    /// Stores a new installation (bot + installing user) under fresh data keys.
    /// A reinstall replaces the tokens and bumps the version; an install after
    /// a purge opens a new generation.
    ///
    /// A tenant purged after `inst.exchange_started_ms` (an `app_uninstalled`
    /// that overtook this install) fails it with
    /// [`StoreError::PurgedDuringInstall`] and is never reopened: the tokens
    /// in hand are the ones Slack revoked with the uninstall. A
    /// write that loses a race to a refresh is redone from a fresh read.
    ///
    /// A user or bot revoked before (`tokens_revoked`, a delete) is a new
    /// grant here and is stored: its revocation tombstone is left as it is.
    /// The tombstone refuses only copies installed at or before the
    /// revocation, so it never stands in the new grant's way, and keeping it
    /// means the old copy stays refused even after this grant is gone again.
    ///
    /// A failed install leaves nothing half-done: records this call wrote are
    /// removed (never a bot record without its user record), and when the
    /// store has a Slack client ([`Self::with_refresher`]) the new tokens are
    /// revoked (`auth.revoke`), so no live grant is left that nothing holds.
    /// The user sees an error and installs again.
    pub async fn store_installation(
        &self,
        tenant: &VerifiedTenant,
        inst: &Installation,
    ) -> Result<(), StoreError> {
        const ATTEMPTS: usize = 4;
        let mut written = Vec::new();
        let mut result = Err(StoreError::Conflict);
        for attempt in 1..=ATTEMPTS {
            result = self
                .try_store_installation(tenant, inst, &mut written)
                .await;
            match &result {
                Err(StoreError::Conflict) if attempt < ATTEMPTS => {
                    tracing::info!(tenant = %tenant.key(), attempt, "install raced another writer; retrying");
                }
                _ => break,
            }
        }
        if let Err(e) = &result {
            tracing::warn!(tenant = %tenant.key(), error = %e, records_written = written.len(), "install failed; undoing it");
            self.undo_install(tenant, inst, &written).await;
        }
        result
    }

    /// Removes what a failed install wrote and revokes its tokens at Slack.
    /// Best effort, each step logged: the install has already failed.
    async fn undo_install(
        &self,
        tenant: &VerifiedTenant,
        inst: &Installation,
        written: &[RecordKey],
    ) {
        for key in written {
            if let Err(e) = self.repo.delete(key).await {
                tracing::error!(tenant = %tenant.key(), sk = %key.sk(), error = %e, "could not remove a half-written install");
            }
        }
        let Some(slack) = self.refresh.slack.as_ref() else {
            tracing::warn!(tenant = %tenant.key(), "no slack client configured: the failed install's tokens are not revoked");
            return;
        };
        let user_token = inst.user.as_ref().and_then(|u| u.token.as_ref());
        for (which, token) in [("bot", inst.bot_token.as_ref()), ("user", user_token)] {
            let Some(token) = token else { continue };
            match slack.revoke(token).await {
                Ok(()) => {
                    tracing::info!(tenant = %tenant.key(), which, "failed install's token revoked at slack")
                }
                Err(e) => {
                    tracing::error!(tenant = %tenant.key(), which, slack_error = %e, metric = "InstallRevokeFailed",
                    "could not revoke a failed install's token")
                }
            }
        }
    }

    async fn try_store_installation(
        &self,
        tenant: &VerifiedTenant,
        inst: &Installation,
        written: &mut Vec<RecordKey>,
    ) -> Result<(), StoreError> {
        let pk = tenant.key().pk();
        let overtaken = |t: &crate::TenantState| {
            t.purged && t.purged_at.is_some_and(|ms| ms > inst.exchange_started_ms)
        };
        if let Some(state) = self.repo.tenant_state(&pk).await?.filter(overtaken) {
            tracing::warn!(tenant = %tenant.key(), purged_at_ms = state.purged_at, exchange_started_ms = inst.exchange_started_ms,
                metric = "InstallRacedUninstall", "tenant purged after this install's code exchange; not reopening it");
            return Err(StoreError::PurgedDuringInstall);
        }
        let generation = self.repo.open_generation(&pk).await?;

        if let Some(bot_token) = &inst.bot_token {
            let key = RecordKey::bot(tenant.key().clone());
            let mut meta = inst.meta.clone();
            meta.user_scopes.clear();
            let mut secrets = vec![(field::TOKEN, bot_token.expose_secret())];
            if let Some(r) = &inst.bot_refresh_token {
                secrets.push((field::REFRESH_TOKEN, r.expose_secret()));
            }
            if let Some(w) = &inst.incoming_webhook_url {
                secrets.push((field::INCOMING_WEBHOOK_URL, w.expose_secret()));
            }
            self.write_replacing(&key, meta, generation, &secrets)
                .await?;
            if !written.contains(&key) {
                written.push(key);
            }
        }
        if let Some(user) = inst.user.as_ref().filter(|u| u.token.is_some()) {
            let key = RecordKey::user(tenant.key().clone(), &user.user_id)
                .map_err(|_| StoreError::Invalid("malformed user id"))?;
            let mut meta = inst.meta.clone();
            meta.user_id = Some(user.user_id.clone());
            meta.user_scopes = user.scopes.clone();
            meta.token_expires_at = user.expires_at;
            meta.token_type = Some("user".into());
            meta.incoming_webhook_channel = None;
            meta.incoming_webhook_channel_id = None;
            meta.incoming_webhook_configuration_url = None;
            let mut secrets = Vec::new();
            if let Some(t) = &user.token {
                secrets.push((field::TOKEN, t.expose_secret()));
            }
            if let Some(r) = &user.refresh_token {
                secrets.push((field::REFRESH_TOKEN, r.expose_secret()));
            }
            self.write_replacing(&key, meta, generation, &secrets)
                .await?;
            if !written.contains(&key) {
                written.push(key);
            }
        }
        Ok(())
    }

    /// Creates or replaces a record, conditional on what was read.
    async fn write_replacing(
        &self,
        key: &RecordKey,
        meta: InstallationMeta,
        generation: u64,
        secrets: &[(&str, &str)],
    ) -> Result<(), StoreError> {
        let existing = self.repo.get(key).await?;
        let (version, expect) = match &existing {
            Some(r) => (
                r.version + 1,
                Expect::Version {
                    version: r.version,
                    generation: r.generation,
                },
            ),
            None => (1, Expect::Absent),
        };
        let record = self
            .sealer
            .seal(key, meta, version, generation, secrets)
            .await?;
        self.repo.put(&record, expect).await.map_err(|e| match e {
            RepoError::ConditionFailed => StoreError::Conflict,
            other => other.into(),
        })
    }

    // ---- lookups (metadata only) -------------------------------------------

    /// Bolt's `fetch_installation`: the user's installation if `user_id` is
    /// given and present, else the bot installation.
    pub async fn fetch_installation(
        &self,
        query: &InstallationQuery<'_>,
    ) -> Result<Option<InstallationInfo>, StoreError> {
        if let Some(user) = query.user_id {
            let key = RecordKey::user(query.tenant.key().clone(), user)
                .map_err(|_| StoreError::Invalid("malformed user id"))?;
            if let Some(record) = self.repo.get(&key).await? {
                return info_of(&record).map(Some);
            }
        }
        self.fetch_bot(query.tenant).await
    }

    /// Bolt's `fetch_bot`.
    pub async fn fetch_bot(
        &self,
        tenant: &VerifiedTenant,
    ) -> Result<Option<InstallationInfo>, StoreError> {
        match self.repo.get(&RecordKey::bot(tenant.key().clone())).await? {
            Some(record) => info_of(&record).map(Some),
            None => Ok(None),
        }
    }

    /// Every record of a tenant (operator `show`).
    pub async fn list_tenant(
        &self,
        tenant: &TenantKey,
    ) -> Result<Vec<InstallationInfo>, StoreError> {
        self.repo
            .list_tenant(&tenant.pk())
            .await?
            .iter()
            .map(info_of)
            .collect()
    }

    /// A system-job tenant for a stored tenant key (operator commands, rotation).
    pub async fn tenant_for_job(
        &self,
        tenant: &TenantKey,
    ) -> Result<Option<VerifiedTenant>, StoreError> {
        let records = self.repo.list_tenant(&tenant.pk()).await?;
        Ok((!records.is_empty()).then(|| VerifiedTenant::for_stored_key(tenant.clone())))
    }

    // ---- token reads (audited) ---------------------------------------------

    /// The bot token of a verified tenant. Audited: the read fails if its
    /// audit record can't be written.
    pub async fn bot_token(
        &self,
        tenant: &VerifiedTenant,
        ctx: &ReadContext,
    ) -> Result<AccessToken, StoreError> {
        let key = RecordKey::bot(tenant.key().clone());
        self.read_secret(&key, TokenKind::Bot, field::TOKEN, ctx)
            .await
            .map(AccessToken::new)
    }

    /// A user token of a verified tenant. Audited.
    pub async fn user_token(
        &self,
        tenant: &VerifiedTenant,
        user_id: &str,
        ctx: &ReadContext,
    ) -> Result<AccessToken, StoreError> {
        let key = RecordKey::user(tenant.key().clone(), user_id)
            .map_err(|_| StoreError::Invalid("malformed user id"))?;
        self.read_secret(&key, TokenKind::User, field::TOKEN, ctx)
            .await
            .map(AccessToken::new)
    }

    /// The incoming-webhook URL of a verified tenant. Audited.
    pub async fn incoming_webhook_url(
        &self,
        tenant: &VerifiedTenant,
        ctx: &ReadContext,
    ) -> Result<WebhookUrl, StoreError> {
        let key = RecordKey::bot(tenant.key().clone());
        self.read_secret(
            &key,
            TokenKind::IncomingWebhook,
            field::INCOMING_WEBHOOK_URL,
            ctx,
        )
        .await
        .map(WebhookUrl::new)
    }

    async fn read_secret(
        &self,
        key: &RecordKey,
        kind: TokenKind,
        name: &str,
        ctx: &ReadContext,
    ) -> Result<String, StoreError> {
        let (result, version) = self.read_secret_unaudited(key, name, ctx.deadline).await;
        self.audit(self.audit_record(key, kind, ctx, self.read_outcome(&result), version))
            .await?;
        result
    }

    /// The bot token for one Events API delivery, claimed once: the read's
    /// audit record and the event's dedupe claim are one atomic write (one
    /// round trip after the read on DynamoDB, one transaction in the embedded
    /// store). `Ok(None)`: Slack is retrying an event already claimed; the
    /// token is not handed out and nothing is written. A failed read is
    /// audited and claims nothing, so Slack's retry is a real second attempt.
    pub async fn bot_token_for_event(
        &self,
        tenant: &VerifiedTenant,
        ctx: &ReadContext,
        event_id: &str,
    ) -> Result<Option<AccessToken>, StoreError> {
        let key = RecordKey::bot(tenant.key().clone());
        let (result, version) = self
            .read_secret_unaudited(&key, field::TOKEN, ctx.deadline)
            .await;
        let record = self.audit_record(
            &key,
            TokenKind::Bot,
            ctx,
            self.read_outcome(&result),
            version,
        );
        let token = match result {
            Ok(token) => token,
            Err(e) => {
                self.audit(record).await?;
                return Err(e);
            }
        };
        let now = self.clock.now_secs();
        let expires = record.at_ms / 1000 + schema::AUDIT_TTL_SECS;
        let first = self
            .repo
            .append_audit_claiming(&record, expires, event_id, now, now + schema::EVENT_TTL_SECS)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, tenant = %record.tenant, "audit append failed; token read refused");
                StoreError::from(e)
            })?;
        if !first {
            return Ok(None);
        }
        record.log();
        Ok(Some(AccessToken::new(token)))
    }

    /// An audit record of a read of `key` now.
    pub(crate) fn audit_record(
        &self,
        key: &RecordKey,
        kind: TokenKind,
        ctx: &ReadContext,
        outcome: Outcome,
        version: u64,
    ) -> AuditRecord {
        AuditRecord::new(key, kind, ctx, self.clock.now_millis(), outcome, version)
    }

    /// Appends an audit record and logs it. An unaudited token read must not
    /// happen, so callers fail when this fails.
    pub(crate) async fn audit(&self, record: AuditRecord) -> Result<(), StoreError> {
        record.log();
        let expires = record.at_ms / 1000 + schema::AUDIT_TTL_SECS;
        self.repo.append_audit(&record, expires).await.map_err(|e| {
            tracing::error!(error = %e, tenant = %record.tenant, "audit append failed; token read refused");
            StoreError::from(e)
        })
    }

    /// The record at `key` if it belongs to its tenant's live generation.
    ///
    /// The tenant item is read alongside (one round trip on DynamoDB): a
    /// record of a purged generation (a purge stopped half-way, an old item
    /// written back) or of another generation than the live one never opens.
    async fn live_record(&self, key: &RecordKey) -> Result<Option<StoredRecord>, StoreError> {
        let pk = key.pk();
        let (record, tenant) = self.repo.get_with_tenant(key).await?;
        let Some(record) = record else {
            return Ok(None);
        };
        match tenant {
            Some(t) if !t.purged && t.generation == record.generation => Ok(Some(record)),
            tenant => {
                tracing::error!(tenant = %pk, sk = %record.sk, record_generation = record.generation,
                    live_generation = tenant.map(|t| t.generation), purged = tenant.is_some_and(|t| t.purged),
                    metric = StoreMetric::StaleRecordRefused.name(), "record of a purged or superseded generation refused");
                self.count(StoreMetric::StaleRecordRefused);
                Ok(None)
            }
        }
    }

    async fn read_secret_unaudited(
        &self,
        key: &RecordKey,
        name: &str,
        deadline: Option<std::time::Instant>,
    ) -> (Result<String, StoreError>, u64) {
        let record = match self.live_record(key).await {
            Ok(Some(r)) => r,
            Ok(None) => return (Err(StoreError::NotInstalled), 0),
            Err(e) => return (Err(e), 0),
        };
        let version = record.version;
        if record.meta.status == Status::NeedsReinstall {
            return (Err(StoreError::NeedsReinstall), version);
        }
        if name == field::TOKEN && record.sealed.contains_key(field::REFRESH_TOKEN) {
            let now = self.clock.now_secs();
            match record.meta.token_expires_at {
                // Expired: only a refresh can produce a usable token; never hand out the old one.
                Some(t) if t <= now => {
                    return match self.refresh_blocking(key, record, deadline).await {
                        Ok((token, v)) => (Ok(token), v),
                        Err(e) => (Err(e), version),
                    };
                }
                // Due but valid: answer now, refresh in the background (single-flight).
                Some(t)
                    if self.config.background_refresh
                        && t - self.config.refresh_window_secs <= now =>
                {
                    self.refresh_in_background(key.clone())
                }
                _ => {}
            }
        }
        match self.sealer.open_field(&record, name).await {
            Ok(Some(bytes)) => match String::from_utf8(bytes.to_vec()) {
                Ok(s) => (Ok(s), version),
                Err(_) => (Err(StoreError::Integrity), version),
            },
            Ok(None) => (Err(StoreError::NotInstalled), version),
            Err(e) => {
                tracing::error!(tenant = %key.pk(), sk = %key.sk(), error = %e, "sealed field failed to open");
                (Err(e), version)
            }
        }
    }

    // ---- uninstall ---------------------------------------------------------

    /// Deletes the bot installation (Bolt's `delete_bot`, an operator) and
    /// leaves its revocation tombstone at now, so importing an older copy
    /// can't bring it back. Idempotent; `Ok(true)` when a record was there.
    pub async fn delete_bot(&self, tenant: &VerifiedTenant) -> Result<bool, StoreError> {
        let key = RecordKey::bot(tenant.key().clone());
        Ok(self.repo.revoke(&key, self.clock.now_secs()).await?)
    }

    /// Deletes one user's installation (Bolt's `delete_installation`) and
    /// leaves its revocation tombstone, as [`Self::delete_bot`]. Idempotent.
    pub async fn delete_installation(
        &self,
        tenant: &VerifiedTenant,
        user_id: &str,
    ) -> Result<bool, StoreError> {
        let key = RecordKey::user(tenant.key().clone(), user_id)
            .map_err(|_| StoreError::Invalid("malformed user id"))?;
        Ok(self.repo.revoke(&key, self.clock.now_secs()).await?)
    }

    /// Removes every record of the tenant and leaves a tombstone, so no late
    /// write, stale refresh or restore brings it back (`app_uninstalled`).
    pub async fn purge_tenant(&self, tenant: &VerifiedTenant) -> Result<usize, StoreError> {
        let n = self
            .repo
            .purge_tenant(&tenant.key().pk(), self.clock.now_millis())
            .await?;
        tracing::info!(tenant = %tenant.key(), records = n, "tenant purged");
        Ok(n)
    }

    // ---- import from another store (`tokenkeep migrate`) --------------------

    /// Writes one installation record brought in from another store (Bolt's
    /// installation stores), sealed under a fresh data key, and audits it.
    ///
    /// Unlike [`store_installation`](Self::store_installation) (a user who just
    /// authorized the app: their grant wins), an import never overrides what
    /// tokenkeep already knows:
    /// - a purged tenant is [`Refused`](ImportOutcome::Refused): a tombstone
    ///   means Slack told us the app was uninstalled, and an old store's copy
    ///   must not bring it back;
    /// - a record revoked here at or after the copy's `installed_at` is
    ///   [`Revoked`](ImportOutcome::Revoked): its revocation tombstone means
    ///   Slack (or the app) revoked that grant, and the create is conditional
    ///   on the tombstone, so a revoke racing the import still wins;
    /// - an existing record is replaced only when the import is newer (see
    ///   [`ImportedRecord::is_newer_than`]), so a rerun writes nothing and a
    ///   token tokenkeep refreshed since is never replaced by a spent one.
    pub async fn import_record(
        &self,
        record: &ImportedRecord,
        ctx: &ReadContext,
    ) -> Result<ImportOutcome, StoreError> {
        let key = &record.key;
        let pk = key.pk();
        for _ in 0..4 {
            if self.repo.tenant_state(&pk).await?.is_none() {
                // Opens generation 1 only over nothing: a purge that lands
                // meanwhile leaves its tombstone, and the write below fails.
                let first = crate::TenantState {
                    generation: 1,
                    purged: false,
                    purged_at: None,
                };
                self.repo.restore_tenant(&pk, first).await?;
            }
            let (outcome, existing, state) = self.decide_import(record).await?;
            if !outcome.wrote() {
                return Ok(outcome);
            }
            let (version, generation, expect) = match (&existing, state) {
                (Some(e), _) => (
                    e.version + 1,
                    e.generation,
                    Expect::Version {
                        version: e.version,
                        generation: e.generation,
                    },
                ),
                (None, Some(s)) => (1, s.generation, Expect::AbsentNotRevoked),
                (None, None) => continue,
            };
            let mut secrets = vec![(field::TOKEN, record.token.expose_secret())];
            if let Some(r) = &record.refresh_token {
                secrets.push((field::REFRESH_TOKEN, r.expose_secret()));
            }
            if let Some(w) = &record.incoming_webhook_url {
                secrets.push((field::INCOMING_WEBHOOK_URL, w.expose_secret()));
            }
            if let Some(m) = &record.source_metadata {
                secrets.push((field::SOURCE_METADATA, m.expose()));
            }
            let sealed = self
                .sealer
                .seal(key, record.meta.clone(), version, generation, &secrets)
                .await?;
            match self.repo.put(&sealed, expect).await {
                Ok(()) => {}
                // Someone wrote first, the tenant was purged or the record
                // revoked: decide again from a fresh read.
                Err(RepoError::ConditionFailed) => continue,
                Err(e) => return Err(e.into()),
            }
            let (token_kind, user_id) = match &key.kind {
                RecordKind::Bot => (TokenKind::Bot, None),
                RecordKind::User(u) => (TokenKind::User, Some(u.clone())),
            };
            self.audit(AuditRecord {
                tenant: pk.clone(),
                at_ms: self.clock.now_millis(),
                token_kind,
                user_id,
                actor: ctx.actor.clone(),
                request_id: ctx.request_id.clone(),
                reason: ctx.reason.clone(),
                outcome: Outcome::Ok,
                version,
            })
            .await?;
            return Ok(outcome);
        }
        Err(StoreError::Conflict)
    }

    /// Moves a long-lived token onto rotation (`oauth.v2.exchange`): the
    /// record's token is read (audited), exchanged for a rotating pair, and
    /// the pair sealed under a new data key and written before anything else
    /// can fail, as a refresh is. `Ok(false)` when the record already rotates.
    ///
    /// Not retried: Slack may have issued the pair (and retired the old token)
    /// without us seeing the answer; the error says so and the record keeps
    /// the old token for an operator to check.
    pub async fn exchange_for_rotating(
        &self,
        key: &RecordKey,
        slack: &dyn tokenkeep_slack_api::SlackOAuth,
        ctx: &ReadContext,
    ) -> Result<bool, StoreError> {
        let record = self.repo.get(key).await?.ok_or(StoreError::NotInstalled)?;
        if record.sealed.contains_key(field::REFRESH_TOKEN) {
            return Ok(false);
        }
        let kind = match key.kind {
            RecordKind::Bot => TokenKind::Bot,
            RecordKind::User(_) => TokenKind::User,
        };
        let token = AccessToken::new(
            self.read_secret(key, kind.clone(), field::TOKEN, ctx)
                .await?,
        );
        let record = self.repo.get(key).await?.ok_or(StoreError::NotInstalled)?;
        let mut fields = self.sealer.open_fields(&record).await?;
        fields.retain(|(name, _)| name != field::TOKEN);
        let data_key = self.sealer.new_data_key(key).await?;
        let response = slack.exchange_long_lived(&token).await.map_err(|e| {
            tracing::warn!(tenant = %key.pk(), sk = %key.sk(), slack_error = %e, ambiguous = e.is_ambiguous(),
                "token exchange failed; the record keeps its long-lived token");
            StoreError::Refresh(e)
        })?;
        let (Some(access), Some(refresh), Some(expires_in)) = (
            response.access_token.as_ref(),
            response.refresh_token.as_ref(),
            response.expires_in,
        ) else {
            return Err(StoreError::Invalid(
                "exchange answer without a rotating pair",
            ));
        };
        let mut meta = record.meta.clone();
        meta.token_expires_at = Some(self.clock.now_secs() + expires_in);
        let mut secrets = vec![
            (field::TOKEN, access.expose_secret()),
            (field::REFRESH_TOKEN, refresh.expose_secret()),
        ];
        for (name, value) in &fields {
            secrets.push((
                name.as_str(),
                std::str::from_utf8(value).map_err(|_| StoreError::Integrity)?,
            ));
        }
        let version = record.version + 1;
        let next = self.sealer.seal_with(
            Some(data_key),
            key,
            meta,
            version,
            record.generation,
            &secrets,
        )?;
        let expect = Expect::Version {
            version: record.version,
            generation: record.generation,
        };
        match self.repo.put(&next, expect).await {
            Ok(()) => {}
            // Reinstalled or purged meanwhile: that write wins; the new pair is dropped.
            Err(RepoError::ConditionFailed) => return Err(StoreError::Conflict),
            Err(e) => return Err(e.into()),
        }
        self.audit(AuditRecord {
            tenant: key.pk(),
            at_ms: self.clock.now_millis(),
            token_kind: kind,
            user_id: match &key.kind {
                RecordKind::User(u) => Some(u.clone()),
                RecordKind::Bot => None,
            },
            actor: ctx.actor.clone(),
            request_id: ctx.request_id.clone(),
            reason: format!("{}: exchanged for a rotating token", ctx.reason),
            outcome: Outcome::Ok,
            version,
        })
        .await?;
        Ok(true)
    }

    /// What [`import_record`](Self::import_record) would do now, without
    /// writing anything (`tokenkeep migrate` without `--apply`).
    pub async fn plan_import(&self, record: &ImportedRecord) -> Result<ImportOutcome, StoreError> {
        Ok(self.decide_import(record).await?.0)
    }

    async fn decide_import(
        &self,
        record: &ImportedRecord,
    ) -> Result<
        (
            ImportOutcome,
            Option<StoredRecord>,
            Option<crate::TenantState>,
        ),
        StoreError,
    > {
        let state = self.repo.tenant_state(&record.key.pk()).await?;
        if state.is_some_and(|s| s.purged) {
            return Ok((ImportOutcome::Refused, None, state));
        }
        // Before the existing record: a grant stored since the revocation
        // doesn't make the revoked copy any less revoked.
        if self
            .revoked_since(&record.key, record.meta.installed_at)
            .await?
        {
            return Ok((ImportOutcome::Revoked, None, state));
        }
        let existing = self.repo.get(&record.key).await?;
        let outcome = match &existing {
            None => ImportOutcome::Created,
            Some(e) if record.is_same_as(&e.meta) => ImportOutcome::Unchanged,
            Some(e) if record.is_newer_than(e) => ImportOutcome::Replaced,
            Some(_) => ImportOutcome::KeptNewer,
        };
        Ok((outcome, existing, state))
    }

    /// Whether a copy of the record at `key` installed at `installed_at` is of
    /// a grant revoked here: the key's revocation tombstone is as late or
    /// later. A same-second tie counts as revoked (the revocation may be of
    /// this very grant; refusing it costs at worst a reinstall).
    pub async fn revoked_since(
        &self,
        key: &RecordKey,
        installed_at: i64,
    ) -> Result<bool, StoreError> {
        Ok(revokes(self.repo.revoked_at(key).await?, installed_at))
    }

    /// Brings back a revocation tombstone from a backup (`tokenkeep import`),
    /// before any record of the backup is offered. A record this store still
    /// holds from before the revocation (the table was restored from an older
    /// point) is revoked with it, as a restored tenant tombstone makes a
    /// purged generation unreadable; a later grant is left alone.
    ///
    /// Residual: the record read and the revoke are two calls, so a reinstall
    /// landing between them is revoked (an operator's restore, rarely live).
    pub async fn restore_revocation(
        &self,
        key: &RecordKey,
        revoked_at: i64,
    ) -> Result<RevocationRestore, StoreError> {
        let installed_at = self.repo.get(key).await?.map(|r| r.meta.installed_at);
        if installed_at.is_some_and(|t| revokes(Some(revoked_at), t)) {
            self.repo.revoke(key, revoked_at).await?;
            tracing::info!(tenant = %key.pk(), sk = %key.sk(), revoked_at, "restored revocation revoked a record held from before it");
            return Ok(RevocationRestore::RevokedRecord);
        }
        Ok(match self.repo.restore_revocation(key, revoked_at).await? {
            true => RevocationRestore::Written,
            false => RevocationRestore::Kept,
        })
    }

    /// The operator's purge (`tokenkeep purge`): tombstones the tenant by its
    /// key even when no record is left (a `tokens_revoked` took them, or a
    /// half-done uninstall), so importing an older export can't bring it
    /// back. Same repository path as [`Self::purge_tenant`].
    pub async fn purge_tenant_key(&self, tenant: &TenantKey) -> Result<usize, StoreError> {
        let n = self
            .repo
            .purge_tenant(&tenant.pk(), self.clock.now_millis())
            .await?;
        tracing::info!(tenant = %tenant, records = n, "tenant purged by an operator");
        Ok(n)
    }

    /// `app_uninstalled`: purges the tenant (tombstone) unless the event is a
    /// retry already applied, or older than the installation now stored (the
    /// user reinstalled after Slack sent it). The event id is recorded once
    /// the purge took effect, so a failed purge is retried by Slack for real.
    ///
    /// Residual: the check and the purge are two calls, so a reinstall landing
    /// between them (milliseconds) is purged; that user installs again.
    pub async fn apply_app_uninstalled(
        &self,
        tenant: &VerifiedTenant,
        event: &LifecycleEvent<'_>,
    ) -> Result<LifecycleOutcome, StoreError> {
        if self
            .repo
            .event_seen(event.event_id, self.clock.now_secs())
            .await?
        {
            return Ok(LifecycleOutcome::Duplicate);
        }
        let records = self.repo.list_tenant(&tenant.key().pk()).await?;
        if let Some(newest) = records
            .iter()
            .map(|r| r.meta.installed_at)
            .max()
            .filter(|t| *t > event.event_time)
        {
            self.stale_event(tenant, event, newest, "app_uninstalled");
            return Ok(LifecycleOutcome::Stale);
        }
        let n = self.purge_tenant(tenant).await?;
        self.remember_lifecycle_event(event).await;
        Ok(LifecycleOutcome::Applied { records: n })
    }

    /// `tokens_revoked`: revokes the named users' installations and, when
    /// `bot` is set, the bot installation: each record is deleted and leaves
    /// a revocation tombstone at the event's time, so no import or migration
    /// of an older copy brings it back. A name with no record here is
    /// tombstoned too (the copy may still sit in a store not yet migrated).
    /// A record installed after the event was sent is kept (a new grant) and
    /// only its older copies are tombstoned. Malformed user ids can't match a
    /// record and are skipped (logged). Recorded as `app_uninstalled` is.
    ///
    /// Residual, as for `app_uninstalled`: the staleness check and the revoke
    /// are two calls, so a reinstall landing between them is revoked; that
    /// user installs again.
    pub async fn apply_tokens_revoked(
        &self,
        tenant: &VerifiedTenant,
        event: &LifecycleEvent<'_>,
        user_ids: &[String],
        bot: bool,
    ) -> Result<LifecycleOutcome, StoreError> {
        if self
            .repo
            .event_seen(event.event_id, self.clock.now_secs())
            .await?
        {
            return Ok(LifecycleOutcome::Duplicate);
        }
        let mut keys = Vec::new();
        for user in user_ids {
            match RecordKey::user(tenant.key().clone(), user) {
                Ok(key) => keys.push(key),
                Err(_) => {
                    tracing::warn!(tenant = %tenant.key(), "tokens_revoked: skipped a malformed user id")
                }
            }
        }
        if bot {
            keys.push(RecordKey::bot(tenant.key().clone()));
        }
        let (mut removed, mut stale) = (0, 0);
        for key in &keys {
            let installed_at = self.repo.get(key).await?.map(|r| r.meta.installed_at);
            if let Some(installed_at) = installed_at.filter(|t| *t > event.event_time) {
                self.stale_event(tenant, event, installed_at, "tokens_revoked");
                self.repo.restore_revocation(key, event.event_time).await?;
                stale += 1;
                continue;
            }
            if self.repo.revoke(key, event.event_time).await? {
                removed += 1;
                tracing::info!(tenant = %tenant.key(), sk = %key.sk(), "tokens_revoked: installation revoked");
            }
        }
        self.remember_lifecycle_event(event).await;
        Ok(match (removed, stale) {
            (0, s) if s > 0 => LifecycleOutcome::Stale,
            (n, _) => LifecycleOutcome::Applied { records: n },
        })
    }

    fn stale_event(
        &self,
        tenant: &VerifiedTenant,
        event: &LifecycleEvent<'_>,
        installed_at: i64,
        what: &'static str,
    ) {
        self.lifecycle_stale
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(tenant = %tenant.key(), event_id = %event.event_id, event_time = event.event_time, installed_at,
            event_type = what, metric = "StaleLifecycleEvent", "lifecycle event older than the installation; not applied");
    }

    /// Lifecycle events that were older than the installation they named.
    pub fn stale_lifecycle_events(&self) -> u64 {
        self.lifecycle_stale
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records an applied lifecycle event. A failure is only logged: the event
    /// took effect, and a retry of it is harmless or caught as stale.
    async fn remember_lifecycle_event(&self, event: &LifecycleEvent<'_>) {
        if let Err(e) = self.record_event(event.event_id).await {
            tracing::warn!(event_id = %event.event_id, error = %e, "could not record an applied lifecycle event");
        }
    }

    // ---- OAuth state and event dedupe --------------------------------------

    /// Issues a single-use OAuth state (256 random bits, hex), valid 10 minutes.
    pub async fn issue_state(&self) -> Result<String, StoreError> {
        let nonce: [u8; 32] = rand::random();
        let nonce = hex::encode(nonce);
        self.repo
            .put_state(&nonce, self.clock.now_secs() + schema::STATE_TTL_SECS)
            .await?;
        Ok(nonce)
    }

    /// Consumes a state once. Malformed values are refused without a store call.
    pub async fn consume_state(&self, nonce: &str) -> Result<bool, StoreError> {
        if nonce.len() != 64 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(false);
        }
        Ok(self
            .repo
            .consume_state(nonce, self.clock.now_secs())
            .await?)
    }

    /// Records an event id; `false` means Slack is retrying one already handled.
    pub async fn record_event(&self, event_id: &str) -> Result<bool, StoreError> {
        let now = self.clock.now_secs();
        Ok(self
            .repo
            .record_event(event_id, now, now + schema::EVENT_TTL_SECS)
            .await?)
    }
}
