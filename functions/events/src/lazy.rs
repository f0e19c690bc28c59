//! Lazy work: what a listener runs after its ack, outside the request.
//!
//! The router enqueues a [`LazyJob`] (tenant key, listener, request id, the
//! verified payload — never a token) on a [`LazyQueue`](crate::LazyQueue);
//! a worker takes it and calls [`run_job`], which resolves the tenant through
//! the store (a system job: the tenant must still have records), reads its
//! bot token (audited, reason = the listener's name) and runs the listener's
//! lazy part. A message whose tenant is gone is dropped (the app was
//! uninstalled meanwhile); any other failure is returned so the queue
//! redelivers it, a bounded number of times, then dead-letters it.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokenkeep_installations::{InstallationStore, ReadContext, StoreError, TenantKey};
use tokenkeep_slack_api::SlackClient;

use crate::listeners::{Context, Listeners};

/// Who token reads made by the lazy worker are attributed to in the audit log.
pub const WORKER_AUDIT_ACTOR: &str = "worker";

/// One unit of lazy work, as it travels through the queue. Holds no secret:
/// the payload is what Slack signed (user content, but no token), and the
/// worker reads the token itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LazyJob {
    /// The tenant's partition key (`T#E#T`), as the router verified it.
    pub tenant: String,
    /// The listener's name (`command:/report`): the audit reason in the worker.
    pub listener: String,
    /// The listener's index in the app's [`Listeners`]; checked against `listener`.
    pub index: usize,
    pub request_id: String,
    /// The listener's input as Slack sent it.
    pub payload: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue send failed")]
    Send(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("queue receive failed")]
    Receive(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("lazy job is malformed")]
    Malformed(#[source] serde_json::Error),
}

/// How a job ended.
#[derive(Debug, PartialEq, Eq)]
pub enum JobOutcome {
    Done,
    /// The tenant has no installation any more; nothing to do, not retried.
    TenantGone,
}

/// Why a job failed; the queue redelivers it.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("lazy job names a listener this app does not have")]
    UnknownListener,
    #[error("lazy job names a malformed tenant")]
    Tenant,
    #[error("store call failed")]
    Store(#[source] StoreError),
    #[error("lazy listener failed")]
    Listener(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Runs one lazy job (the worker's step for each message).
pub async fn run_job(
    listeners: &Listeners,
    store: &Arc<InstallationStore>,
    slack: &SlackClient,
    job: LazyJob,
) -> Result<JobOutcome, JobError> {
    if listeners.name_of(job.index) != Some(job.listener.as_str()) {
        return Err(JobError::UnknownListener);
    }
    let key = TenantKey::from_pk(&job.tenant).map_err(|_| JobError::Tenant)?;
    let Some(tenant) = store.tenant_for_job(&key).await.map_err(JobError::Store)? else {
        tracing::info!(request_id = %job.request_id, tenant = %key, listener = %job.listener, "lazy job for a tenant no longer installed; dropped");
        return Ok(JobOutcome::TenantGone);
    };
    let ctx = ReadContext::new(WORKER_AUDIT_ACTOR, &job.request_id, &job.listener);
    let token = match store.bot_token(&tenant, &ctx).await {
        Ok(token) => token,
        Err(StoreError::NotInstalled) => return Ok(JobOutcome::TenantGone),
        Err(e) => return Err(JobError::Store(e)),
    };
    let cx = Context::new(
        tenant,
        slack.bind(token),
        slack.clone(),
        Arc::clone(store),
        WORKER_AUDIT_ACTOR,
        job.listener.clone(),
        job.request_id.clone(),
        job.payload.clone(),
    );
    listeners
        .run_lazy(job.index, cx, job.payload)
        .await
        .map_err(JobError::Listener)?;
    Ok(JobOutcome::Done)
}
