//! The SQS side: sending jobs, and the worker Lambda's batch handler.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokenkeep_events::{JobOutcome, LazyJob, LazyQueue, Listeners, QueueError, run_job};
use tokenkeep_installations::InstallationStore;
use tokenkeep_slack_api::SlackClient;

/// Sends lazy jobs to an SQS queue (`TOKENKEEP_LAZY_QUEUE_URL`).
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsQueue {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }
}

#[async_trait]
impl LazyQueue for SqsQueue {
    async fn enqueue(&self, job: LazyJob) -> Result<(), QueueError> {
        let body = serde_json::to_string(&job).map_err(QueueError::Malformed)?;
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .send()
            .await
            .map_err(|e| QueueError::Send(Box::new(e)))?;
        Ok(())
    }
}

/// The part of Lambda's SQS event the worker reads.
#[derive(Debug, Deserialize)]
pub struct SqsEvent {
    #[serde(rename = "Records", default)]
    pub records: Vec<SqsRecord>,
}

#[derive(Debug, Deserialize)]
pub struct SqsRecord {
    #[serde(rename = "messageId")]
    pub message_id: String,
    pub body: String,
}

/// Lambda's partial batch answer: the messages to redeliver.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct SqsBatchResponse {
    #[serde(rename = "batchItemFailures")]
    pub batch_item_failures: Vec<BatchItemFailure>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct BatchItemFailure {
    #[serde(rename = "itemIdentifier")]
    pub item_identifier: String,
}

/// Runs every job of a batch; failed ones are reported for redelivery (SQS
/// dead-letters them after the queue's `maxReceiveCount`). A body that is
/// not a job can never succeed: it is logged and dropped, not retried.
pub async fn handle_sqs_event(
    listeners: &Listeners,
    store: &Arc<InstallationStore>,
    slack: &SlackClient,
    event: SqsEvent,
) -> SqsBatchResponse {
    let mut failures = Vec::new();
    for record in event.records {
        let job: LazyJob = match serde_json::from_str(&record.body) {
            Ok(job) => job,
            Err(e) => {
                tracing::error!(message_id = %record.message_id, error = %e, "queue message is not a lazy job; dropped");
                continue;
            }
        };
        let (request_id, listener) = (job.request_id.clone(), job.listener.clone());
        match run_job(listeners, store, slack, job).await {
            Ok(JobOutcome::Done) => tracing::info!(%request_id, %listener, "lazy job done"),
            Ok(JobOutcome::TenantGone) => {}
            Err(e) => {
                tracing::error!(%request_id, %listener, error = %e, source = ?std::error::Error::source(&e).map(ToString::to_string), "lazy job failed; SQS will redeliver it");
                failures.push(BatchItemFailure {
                    item_identifier: record.message_id,
                });
            }
        }
    }
    SqsBatchResponse {
        batch_item_failures: failures,
    }
}
