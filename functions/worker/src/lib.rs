//! Lazy work past Slack's 3 s (Bolt for Python's lazy listeners).
//!
//! The events router acks, then enqueues a [`LazyJob`] (tenant key, listener,
//! request id, the verified payload; never a token) on a [`LazyQueue`]:
//!
//! - [`SqsQueue`] in AWS: SSE-KMS queue with a dead-letter queue after a
//!   bounded number of receives (template.yaml). The worker Lambda gets
//!   batches; [`handle_sqs_event`] runs each job and reports the failed ones
//!   (`batchItemFailures`), so only those are redelivered.
//! - [`EmbeddedQueue`] in `tokenkeep dev`: a SQLite file in the data dir, so
//!   a restart loses nothing; a job claimed by a process that died becomes
//!   visible again after its claim expires. After [`MAX_ATTEMPTS`] failed
//!   runs a job moves to the dead-letter table and is counted, never retried
//!   forever.
//!
//! Either way the job runs through [`tokenkeep_events::run_job`], which
//! reads the tenant's token through the store (audited, reason = the listener).

mod embedded;
mod sqs;

pub use embedded::EmbeddedQueue;
pub use sqs::{SqsBatchResponse, SqsEvent, SqsQueue, handle_sqs_event};
pub use tokenkeep_events::{LazyJob, LazyQueue, QueueError};

/// Runs a job may get before it is dead-lettered (the template's
/// `maxReceiveCount` says the same for SQS).
pub const MAX_ATTEMPTS: u32 = 5;

/// The name of the counter for jobs that ran out of attempts.
pub const DEAD_LETTERED_METRIC: &str = "LazyDeadLettered";
