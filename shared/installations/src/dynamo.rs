//! The DynamoDB repository: one installations table (single-table design, see
//! [`crate::schema`]) and one audit table.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, DeleteRequest,
    GlobalSecondaryIndex, KeySchemaElement, KeyType, KeysAndAttributes, Projection, ProjectionType,
    Put, ScalarAttributeType, TimeToLiveSpecification, TransactWriteItem, WriteRequest,
};
use futures::StreamExt;

use crate::schema::{
    self, GSI_EXPIRY_PK, GSI_EXPIRY_SK, PK, SK, SK_REVOKED_PREFIX, SK_TENANT, TTL_ATTRIBUTE,
};
use crate::{
    AuditRecord, DueCursor, Expect, RecordKey, RepoError, Repository, StoredRecord, TenantState,
};

#[derive(Debug, Clone)]
pub struct DynamoRepository {
    client: Client,
    table: String,
    audit_table: String,
}

impl DynamoRepository {
    /// Claims `event_id` (first claim, or the earlier one expired), with
    /// `audit` in the same `TransactWriteItems` if given: the audit put has
    /// no condition, so a cancelled transaction's condition failure is the
    /// claim's, a retry (`Ok(false)`, nothing written). One round trip either
    /// way; alone, the claim is a one-item transaction (lifecycle events only).
    async fn claim_event(
        &self,
        audit: Option<Put>,
        event_id: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<bool, RepoError> {
        let mut event = key_of(format!("EVT#{event_id}"), "EVT".to_owned());
        event.insert(TTL_ATTRIBUTE.into(), n(expires_at));
        let claim = Put::builder()
            .table_name(&self.table)
            .set_item(Some(event))
            .condition_expression("attribute_not_exists(#pk) OR #ttl <= :now")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_values(":now", n(now))
            .build()
            .map_err(|e| RepoError::Backend(Box::new(e)))?;
        let items = audit
            .into_iter()
            .chain([claim])
            .map(|put| TransactWriteItem::builder().put(put).build());
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items.collect()))
            .send()
            .await
            .map_err(classify);
        applied(result)
    }

    pub fn new(client: Client, table: impl Into<String>, audit_table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            audit_table: audit_table.into(),
        }
    }
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}
fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn key_of(pk: String, sk: String) -> HashMap<String, AttributeValue> {
    HashMap::from([(PK.to_owned(), s(pk)), (SK.to_owned(), s(sk))])
}

/// The key of a record's revocation tombstone (see [`schema::SK_REVOKED_PREFIX`]).
fn revoked_key(key: &RecordKey) -> HashMap<String, AttributeValue> {
    key_of(key.pk(), format!("{SK_REVOKED_PREFIX}{}", key.sk()))
}

/// Attribute of a revocation tombstone: when it was revoked, unix seconds.
const REVOKED_AT: &str = "revoked_at";

/// The condition under which a tombstone may be (re)written at `:t`: it only
/// moves later.
const TOMBSTONE_MOVES_LATER: &str = "attribute_not_exists(#r) OR #r < :t";

fn revoked_at_of(item: &HashMap<String, AttributeValue>) -> Result<i64, RepoError> {
    item.get(REVOKED_AT)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| RepoError::Corrupt("revocation tombstone without revoked_at".into()))
}

/// An audit record as an item of the audit table.
fn audit_item(
    record: &AuditRecord,
    expires_at: i64,
) -> Result<HashMap<String, AttributeValue>, RepoError> {
    let mut item: HashMap<String, AttributeValue> =
        serde_dynamo::to_item(record).map_err(|e| RepoError::Corrupt(e.to_string()))?;
    item.insert(PK.into(), s(record.tenant.clone()));
    item.insert(SK.into(), s(record.sort_key(rand::random())));
    item.insert(TTL_ATTRIBUTE.into(), n(expires_at));
    Ok(item)
}

/// The cursor of a `by_expiry` query's LastEvaluatedKey.
fn due_cursor(item: &HashMap<String, AttributeValue>) -> Result<DueCursor, RepoError> {
    let corrupt = || RepoError::Corrupt("malformed expiry index cursor".into());
    let text = |name: &str| {
        item.get(name)
            .and_then(|v| v.as_s().ok())
            .ok_or_else(corrupt)
    };
    let expires_at = item
        .get(GSI_EXPIRY_SK)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(corrupt)?;
    let key = RecordKey::from_keys(text(PK)?, text(SK)?)
        .map_err(|e| RepoError::Corrupt(e.to_string()))?;
    Ok(DueCursor { expires_at, key })
}

/// A conditional write's outcome: `Ok(true)` written, `Ok(false)` when its
/// condition (or one of its transaction's) said no; other errors pass.
fn applied<T>(result: Result<T, RepoError>) -> Result<bool, RepoError> {
    match result {
        Ok(_) => Ok(true),
        Err(RepoError::ConditionFailed) => Ok(false),
        Err(e) => Err(e),
    }
}

fn classify<E>(err: SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>) -> RepoError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match err.code() {
        Some("ConditionalCheckFailedException") => RepoError::ConditionFailed,
        Some("TransactionCanceledException") => {
            // Cancelled by one of our conditions (the message lists the reasons);
            // a conflict with another transaction is retryable contention.
            if err
                .message()
                .unwrap_or("")
                .contains("ConditionalCheckFailed")
            {
                RepoError::ConditionFailed
            } else {
                RepoError::Unavailable(Box::new(err))
            }
        }
        Some(
            "ProvisionedThroughputExceededException"
            | "ThrottlingException"
            | "RequestLimitExceeded"
            | "InternalServerError"
            | "TransactionConflictException",
        ) => RepoError::Unavailable(Box::new(err)),
        None if matches!(
            err,
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_)
        ) =>
        {
            RepoError::Unavailable(Box::new(err))
        }
        // A 5xx without an error code (after the SDK's own retries) is still a
        // server-side failure: retryable, not a permanent error.
        _ if err
            .raw_response()
            .is_some_and(|r| r.status().as_u16() >= 500) =>
        {
            RepoError::Unavailable(Box::new(err))
        }
        _ => RepoError::Backend(Box::new(err)),
    }
}

fn to_item(record: &StoredRecord) -> Result<HashMap<String, AttributeValue>, RepoError> {
    let mut record = record.clone();
    record.lease_owner = None;
    record.lease_until = None;
    serde_dynamo::to_item(&record).map_err(|e| RepoError::Corrupt(e.to_string()))
}

fn from_item(item: HashMap<String, AttributeValue>) -> Result<StoredRecord, RepoError> {
    serde_dynamo::from_item(item).map_err(|e| RepoError::Corrupt(e.to_string()))
}

fn tenant_from_item(item: &HashMap<String, AttributeValue>) -> Result<TenantState, RepoError> {
    let num = |name: &str| -> Option<i64> {
        item.get(name)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok())
    };
    Ok(TenantState {
        generation: num("generation")
            .ok_or_else(|| RepoError::Corrupt("tenant item without generation".into()))?
            as u64,
        purged: item
            .get("purged")
            .and_then(|v| v.as_bool().ok())
            .copied()
            .unwrap_or(false),
        purged_at: num("purged_at"),
    })
}

fn is_installation_sk(sk: &str) -> bool {
    sk == schema::SK_BOT || sk.starts_with(schema::SK_USER_PREFIX)
}

impl DynamoRepository {
    async fn query_pk(&self, pk: &str) -> Result<Vec<HashMap<String, AttributeValue>>, RepoError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#pk = :pk")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_values(":pk", s(pk))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(classify)?;
            items.extend(out.items.unwrap_or_default());
            start = out.last_evaluated_key;
            if start.is_none() {
                return Ok(items);
            }
        }
    }
}

impl DynamoRepository {
    /// Whether a record item is there, without decoding it: a record that no
    /// longer parses (tampered) must still be revocable.
    async fn record_exists(&self, key: &RecordKey) -> Result<bool, RepoError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key_of(key.pk(), key.sk())))
            .projection_expression("#pk")
            .expression_attribute_names("#pk", PK)
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?;
        Ok(out.item.is_some_and(|i| !i.is_empty()))
    }
}

/// BatchWriteItem calls a purge keeps in flight.
const PURGE_BATCHES_IN_FLIGHT: usize = 4;

impl DynamoRepository {
    /// Deletes up to 25 records of one tenant in one BatchWriteItem, retrying
    /// what DynamoDB leaves unprocessed (throttling) with backoff and jitter.
    async fn delete_batch(&self, pk: &str, sks: &[String]) -> Result<usize, RepoError> {
        use backon::BackoffBuilder;
        let mut pending: Vec<WriteRequest> = sks
            .iter()
            .map(|sk| {
                let delete = DeleteRequest::builder()
                    .set_key(Some(key_of(pk.to_owned(), sk.clone())))
                    .build()
                    .map_err(|e| RepoError::Backend(Box::new(e)))?;
                Ok(WriteRequest::builder().delete_request(delete).build())
            })
            .collect::<Result<_, RepoError>>()?;
        let mut delays = backon::ExponentialBuilder::default()
            .with_min_delay(std::time::Duration::from_millis(20))
            .with_max_delay(std::time::Duration::from_millis(500))
            .with_jitter()
            .with_max_times(8)
            .build();
        loop {
            let sent = self
                .client
                .batch_write_item()
                .request_items(&self.table, pending.clone())
                .send()
                .await
                .map_err(classify);
            let last_error = match sent {
                Ok(out) => {
                    pending = out
                        .unprocessed_items
                        .and_then(|mut u| u.remove(&self.table))
                        .unwrap_or_default();
                    if pending.is_empty() {
                        return Ok(sks.len());
                    }
                    RepoError::Unavailable("batch delete left items unprocessed".into())
                }
                Err(e @ RepoError::Unavailable(_)) => e,
                Err(e) => return Err(e),
            };
            match delays.next() {
                Some(delay) => tokio::time::sleep(delay).await,
                None => return Err(last_error),
            }
        }
    }
}

#[async_trait]
impl Repository for DynamoRepository {
    async fn get(&self, key: &RecordKey) -> Result<Option<StoredRecord>, RepoError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key_of(key.pk(), key.sk())))
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?;
        out.item.map(from_item).transpose()
    }

    async fn get_with_tenant(
        &self,
        key: &RecordKey,
    ) -> Result<(Option<StoredRecord>, Option<TenantState>), RepoError> {
        let pk = key.pk();
        let keys = KeysAndAttributes::builder()
            .keys(key_of(pk.clone(), key.sk()))
            .keys(key_of(pk.clone(), SK_TENANT.to_owned()))
            .consistent_read(true)
            .build()
            .map_err(|e| RepoError::Backend(Box::new(e)))?;
        let out = self
            .client
            .batch_get_item()
            .request_items(&self.table, keys)
            .send()
            .await
            .map_err(classify)?;
        if out.unprocessed_keys.as_ref().is_some_and(|u| !u.is_empty()) {
            // Throttled part-way: read the two items one by one instead.
            let (record, tenant) = tokio::join!(self.get(key), self.tenant_state(&pk));
            return Ok((record?, tenant?));
        }
        let (mut record, mut tenant) = (None, None);
        for item in out
            .responses
            .and_then(|mut r| r.remove(&self.table))
            .unwrap_or_default()
        {
            match item.get(SK).and_then(|v| v.as_s().ok()).map(String::as_str) {
                Some(SK_TENANT) => tenant = Some(tenant_from_item(&item)?),
                Some(_) => record = Some(from_item(item)?),
                None => return Err(RepoError::Corrupt("item without a sort key".into())),
            }
        }
        Ok((record, tenant))
    }

    async fn list_tenant(&self, pk: &str) -> Result<Vec<StoredRecord>, RepoError> {
        self.query_pk(pk)
            .await?
            .into_iter()
            .filter(|item| {
                item.get(SK)
                    .and_then(|v| v.as_s().ok())
                    .is_some_and(|sk| is_installation_sk(sk))
            })
            .map(from_item)
            .collect()
    }

    async fn put(&self, record: &StoredRecord, expect: Expect) -> Result<(), RepoError> {
        let item = to_item(record)?;
        match expect {
            Expect::Absent | Expect::AbsentNotRevoked => {
                // Create only while the tenant's live generation is this one: the
                // condition check on the tenant item is what stops a late writer
                // from re-creating a purged tenant.
                let check = ConditionCheck::builder()
                    .table_name(&self.table)
                    .set_key(Some(key_of(record.pk.clone(), SK_TENANT.to_owned())))
                    .condition_expression("generation = :g AND purged = :f")
                    .expression_attribute_values(":g", n(record.generation))
                    .expression_attribute_values(":f", AttributeValue::Bool(false))
                    .build()
                    .map_err(|e| RepoError::Backend(Box::new(e)))?;
                let put = Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .condition_expression("attribute_not_exists(#pk)")
                    .expression_attribute_names("#pk", PK)
                    .build()
                    .map_err(|e| RepoError::Backend(Box::new(e)))?;
                let mut write = self
                    .client
                    .transact_write_items()
                    .transact_items(TransactWriteItem::builder().condition_check(check).build())
                    .transact_items(TransactWriteItem::builder().put(put).build());
                if expect == Expect::AbsentNotRevoked {
                    // In the same transaction as the create: a revoke that
                    // lands after the importer read the tombstone cancels it.
                    let key = record
                        .key()
                        .map_err(|e| RepoError::Corrupt(e.to_string()))?;
                    let unrevoked = ConditionCheck::builder()
                        .table_name(&self.table)
                        .set_key(Some(revoked_key(&key)))
                        .condition_expression("attribute_not_exists(#r) OR #r < :i")
                        .expression_attribute_names("#r", REVOKED_AT)
                        .expression_attribute_values(":i", n(record.meta.installed_at))
                        .build()
                        .map_err(|e| RepoError::Backend(Box::new(e)))?;
                    write = write.transact_items(
                        TransactWriteItem::builder()
                            .condition_check(unrevoked)
                            .build(),
                    );
                }
                write.send().await.map_err(classify)?;
            }
            Expect::Version {
                version,
                generation,
            } => {
                self.client
                    .put_item()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .condition_expression("version = :v AND generation = :g")
                    .expression_attribute_values(":v", n(version))
                    .expression_attribute_values(":g", n(generation))
                    .send()
                    .await
                    .map_err(classify)?;
            }
            Expect::Leased {
                version,
                generation,
                owner,
            } => {
                self.client
                    .put_item()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .condition_expression("version = :v AND generation = :g AND lease_owner = :o")
                    .expression_attribute_values(":v", n(version))
                    .expression_attribute_values(":g", n(generation))
                    .expression_attribute_values(":o", s(owner))
                    .send()
                    .await
                    .map_err(classify)?;
            }
        }
        Ok(())
    }

    async fn delete(&self, key: &RecordKey) -> Result<bool, RepoError> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key_of(key.pk(), key.sk())))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(classify)?;
        Ok(out.attributes.is_some_and(|a| !a.is_empty()))
    }

    async fn revoke(&self, key: &RecordKey, revoked_at: i64) -> Result<bool, RepoError> {
        // A transaction can't say which of its deletes found an item, so each
        // attempt writes under the conditions of what it just read (record
        // there or not, tombstone older or not); a concurrent change cancels
        // it and the next attempt reads again.
        for _ in 0..4 {
            let (existed, prior) = tokio::join!(self.record_exists(key), self.revoked_at(key));
            let (existed, prior) = (existed?, prior?);
            let record = if existed {
                TransactWriteItem::builder()
                    .delete(
                        aws_sdk_dynamodb::types::Delete::builder()
                            .table_name(&self.table)
                            .set_key(Some(key_of(key.pk(), key.sk())))
                            .condition_expression("attribute_exists(#pk)")
                            .expression_attribute_names("#pk", PK)
                            .build()
                            .map_err(|e| RepoError::Backend(Box::new(e)))?,
                    )
                    .build()
            } else {
                TransactWriteItem::builder()
                    .condition_check(
                        ConditionCheck::builder()
                            .table_name(&self.table)
                            .set_key(Some(key_of(key.pk(), key.sk())))
                            .condition_expression("attribute_not_exists(#pk)")
                            .expression_attribute_names("#pk", PK)
                            .build()
                            .map_err(|e| RepoError::Backend(Box::new(e)))?,
                    )
                    .build()
            };
            let tombstone = if prior.is_none_or(|t| t < revoked_at) {
                let mut item = revoked_key(key);
                item.insert(REVOKED_AT.into(), n(revoked_at));
                TransactWriteItem::builder()
                    .put(
                        Put::builder()
                            .table_name(&self.table)
                            .set_item(Some(item))
                            .condition_expression(TOMBSTONE_MOVES_LATER)
                            .expression_attribute_names("#r", REVOKED_AT)
                            .expression_attribute_values(":t", n(revoked_at))
                            .build()
                            .map_err(|e| RepoError::Backend(Box::new(e)))?,
                    )
                    .build()
            } else {
                // A later tombstone is there: keep it, but only while it is.
                TransactWriteItem::builder()
                    .condition_check(
                        ConditionCheck::builder()
                            .table_name(&self.table)
                            .set_key(Some(revoked_key(key)))
                            .condition_expression("#r >= :t")
                            .expression_attribute_names("#r", REVOKED_AT)
                            .expression_attribute_values(":t", n(revoked_at))
                            .build()
                            .map_err(|e| RepoError::Backend(Box::new(e)))?,
                    )
                    .build()
            };
            let sent = self
                .client
                .transact_write_items()
                .transact_items(record)
                .transact_items(tombstone)
                .send()
                .await
                .map_err(classify);
            match sent {
                Ok(_) => return Ok(existed),
                Err(RepoError::ConditionFailed) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(RepoError::Unavailable(
            "revoke kept racing other writers of the record".into(),
        ))
    }

    async fn revoked_at(&self, key: &RecordKey) -> Result<Option<i64>, RepoError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(revoked_key(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?;
        out.item.as_ref().map(revoked_at_of).transpose()
    }

    async fn restore_revocation(
        &self,
        key: &RecordKey,
        revoked_at: i64,
    ) -> Result<bool, RepoError> {
        let mut item = revoked_key(key);
        item.insert(REVOKED_AT.into(), n(revoked_at));
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(TOMBSTONE_MOVES_LATER)
            .expression_attribute_names("#r", REVOKED_AT)
            .expression_attribute_values(":t", n(revoked_at))
            .send()
            .await
            .map_err(classify);
        applied(result)
    }

    async fn scan_revocations(&self) -> Result<Vec<(RecordKey, i64)>, RepoError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("begins_with(#sk, :r)")
                .expression_attribute_names("#sk", SK)
                .expression_attribute_values(":r", s(SK_REVOKED_PREFIX))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(classify)?;
            for item in page.items.unwrap_or_default() {
                let corrupt = || RepoError::Corrupt("malformed revocation tombstone key".into());
                let pk = item
                    .get(PK)
                    .and_then(|v| v.as_s().ok())
                    .ok_or_else(corrupt)?;
                let sk = item
                    .get(SK)
                    .and_then(|v| v.as_s().ok())
                    .and_then(|sk| sk.strip_prefix(SK_REVOKED_PREFIX))
                    .ok_or_else(corrupt)?;
                let key =
                    RecordKey::from_keys(pk, sk).map_err(|e| RepoError::Corrupt(e.to_string()))?;
                out.push((key, revoked_at_of(&item)?));
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                out.sort();
                return Ok(out);
            }
        }
    }

    async fn tenant_state(&self, pk: &str) -> Result<Option<TenantState>, RepoError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key_of(pk.to_owned(), SK_TENANT.to_owned())))
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?;
        out.item.as_ref().map(tenant_from_item).transpose()
    }

    async fn open_generation(&self, pk: &str) -> Result<u64, RepoError> {
        // Two tries: a concurrent opener may win the first round; its generation is ours too.
        for _ in 0..2 {
            let prior = self.tenant_state(pk).await?;
            if let Some(t) = prior.filter(|t| !t.purged) {
                return Ok(t.generation);
            }
            let next = prior.map_or(1, |t| t.generation + 1);
            let mut update = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key_of(pk.to_owned(), SK_TENANT.to_owned())))
                .update_expression("SET generation = :next, purged = :f REMOVE purged_at")
                .expression_attribute_values(":next", n(next))
                .expression_attribute_values(":f", AttributeValue::Bool(false));
            update = match prior {
                None => update
                    .condition_expression("attribute_not_exists(#pk)")
                    .expression_attribute_names("#pk", PK),
                Some(t) => update
                    .condition_expression("generation = :g AND purged = :t")
                    .expression_attribute_values(":g", n(t.generation))
                    .expression_attribute_values(":t", AttributeValue::Bool(true)),
            };
            match update.send().await.map_err(classify) {
                Ok(_) => return Ok(next),
                Err(RepoError::ConditionFailed) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(RepoError::ConditionFailed)
    }

    async fn purge_tenant(&self, pk: &str, now: i64) -> Result<usize, RepoError> {
        // Tombstone first, then delete: once the tombstone is in place no new
        // record of this generation can be created, so the query below sees
        // every record that could exist.
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key_of(pk.to_owned(), SK_TENANT.to_owned())))
            .update_expression("SET purged = :t, generation = if_not_exists(generation, :zero), purged_at = if_not_exists(purged_at, :now)")
            .expression_attribute_values(":t", AttributeValue::Bool(true))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":now", n(now))
            .send()
            .await
            .map_err(classify)?;
        let sks: Vec<String> = self
            .query_pk(pk)
            .await?
            .into_iter()
            // Records only: the tenant item is the tombstone, and revocation
            // tombstones outlive the purge (see `Repository::purge_tenant`).
            .filter_map(|item| {
                item.get(SK)
                    .and_then(|v| v.as_s().ok())
                    .filter(|sk| is_installation_sk(sk))
                    .cloned()
            })
            .collect();
        // Batches of 25 (BatchWriteItem's limit), a few at a time: a tenant
        // with thousands of user records is gone well inside Slack's 3 s. If
        // the process stops part-way the tombstone is already there, so what
        // is left never opens (reads check the generation) and Slack's retry,
        // or an operator's purge, deletes the rest.
        let batches: Vec<Vec<String>> = sks.chunks(25).map(<[String]>::to_vec).collect();
        let deleted = futures::stream::iter(batches)
            .map(|chunk| async move { self.delete_batch(pk, &chunk).await })
            .buffer_unordered(PURGE_BATCHES_IN_FLIGHT)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .sum::<Result<usize, RepoError>>()?;
        Ok(deleted)
    }

    async fn try_lease(
        &self,
        key: &RecordKey,
        version: u64,
        generation: u64,
        owner: &str,
        now: i64,
        until: i64,
    ) -> Result<bool, RepoError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key_of(key.pk(), key.sk())))
            .update_expression("SET lease_owner = :o, lease_until = :u")
            .condition_expression(
                "attribute_exists(#pk) AND version = :v AND generation = :g AND (attribute_not_exists(lease_until) OR lease_until < :now OR lease_owner = :o)",
            )
            .expression_attribute_names("#pk", PK)
            .expression_attribute_values(":o", s(owner))
            .expression_attribute_values(":u", n(until))
            .expression_attribute_values(":v", n(version))
            .expression_attribute_values(":g", n(generation))
            .expression_attribute_values(":now", n(now))
            .send()
            .await
            .map_err(classify);
        applied(result)
    }

    async fn release_lease(&self, key: &RecordKey, owner: &str) -> Result<(), RepoError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key_of(key.pk(), key.sk())))
            .update_expression("REMOVE lease_owner, lease_until")
            .condition_expression("lease_owner = :o")
            .expression_attribute_values(":o", s(owner))
            .send()
            .await
            .map_err(classify);
        match result {
            Ok(_) | Err(RepoError::ConditionFailed) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn query_due(
        &self,
        shard: &str,
        before: i64,
        after: Option<&DueCursor>,
        limit: usize,
    ) -> Result<(Vec<RecordKey>, Option<DueCursor>), RepoError> {
        let mut keys = Vec::new();
        // A GSI's LastEvaluatedKey is its own keys plus the table's; the cursor
        // holds exactly those, so a page resumes where the last one stopped.
        let mut start = after.map(|c| {
            HashMap::from([
                (GSI_EXPIRY_PK.to_owned(), s(shard)),
                (GSI_EXPIRY_SK.to_owned(), n(c.expires_at)),
                (PK.to_owned(), s(c.key.pk())),
                (SK.to_owned(), s(c.key.sk())),
            ])
        });
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(schema::GSI_BY_EXPIRY)
                .key_condition_expression("#s = :s AND #e <= :b")
                .expression_attribute_names("#s", GSI_EXPIRY_PK)
                .expression_attribute_names("#e", GSI_EXPIRY_SK)
                .expression_attribute_values(":s", s(shard))
                .expression_attribute_values(":b", n(before))
                .limit((limit - keys.len()).min(1000) as i32)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(classify)?;
            for item in out.items.unwrap_or_default() {
                let (Some(pk), Some(sk)) = (
                    item.get(PK).and_then(|v| v.as_s().ok()),
                    item.get(SK).and_then(|v| v.as_s().ok()),
                ) else {
                    continue;
                };
                keys.push(
                    RecordKey::from_keys(pk, sk).map_err(|e| RepoError::Corrupt(e.to_string()))?,
                );
            }
            start = out.last_evaluated_key;
            if start.is_none() || keys.len() >= limit {
                let next = start.as_ref().map(due_cursor).transpose()?;
                return Ok((keys, next));
            }
        }
    }

    async fn scan_records(
        &self,
        after: Option<(String, String)>,
        limit: usize,
    ) -> Result<(Vec<StoredRecord>, Option<(String, String)>), RepoError> {
        let out = self
            .client
            .scan()
            .table_name(&self.table)
            .filter_expression("#sk = :bot OR begins_with(#sk, :user)")
            .expression_attribute_names("#sk", SK)
            .expression_attribute_values(":bot", s(schema::SK_BOT))
            .expression_attribute_values(":user", s(schema::SK_USER_PREFIX))
            .limit(limit.min(1000) as i32)
            .consistent_read(true)
            .set_exclusive_start_key(after.map(|(pk, sk)| key_of(pk, sk)))
            .send()
            .await
            .map_err(classify)?;
        let records = out
            .items
            .unwrap_or_default()
            .into_iter()
            .map(from_item)
            .collect::<Result<Vec<_>, _>>()?;
        let next = out.last_evaluated_key.and_then(|k| {
            Some((
                k.get(PK)?.as_s().ok()?.clone(),
                k.get(SK)?.as_s().ok()?.clone(),
            ))
        });
        Ok((records, next))
    }

    async fn scan_tenants(&self) -> Result<Vec<(String, TenantState)>, RepoError> {
        let mut tenants = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("#sk = :t")
                .expression_attribute_names("#sk", SK)
                .expression_attribute_values(":t", s(SK_TENANT))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(classify)?;
            for item in out.items.unwrap_or_default() {
                let pk = item
                    .get(PK)
                    .and_then(|v| v.as_s().ok())
                    .cloned()
                    .unwrap_or_default();
                tenants.push((pk, tenant_from_item(&item)?));
            }
            start = out.last_evaluated_key;
            if start.is_none() {
                tenants.sort_by(|a, b| a.0.cmp(&b.0));
                return Ok(tenants);
            }
        }
    }

    async fn restore_tenant(&self, pk: &str, state: TenantState) -> Result<bool, RepoError> {
        let mut item = key_of(pk.to_owned(), SK_TENANT.to_owned());
        item.insert("generation".into(), n(state.generation));
        item.insert("purged".into(), AttributeValue::Bool(state.purged));
        if let Some(at) = state.purged_at {
            item.insert("purged_at".into(), n(at));
        }
        // Only over nothing, an older generation, or the same generation when we
        // bring a tombstone (a restore never un-purges).
        let condition = if state.purged {
            "attribute_not_exists(#pk) OR generation < :g OR (generation = :g AND purged = :f)"
        } else {
            "attribute_not_exists(#pk) OR generation < :g"
        };
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .expression_attribute_names("#pk", PK)
            .expression_attribute_values(":g", n(state.generation));
        if state.purged {
            put = put.expression_attribute_values(":f", AttributeValue::Bool(false));
        }
        applied(put.send().await.map_err(classify))
    }

    async fn put_state(&self, nonce: &str, expires_at: i64) -> Result<(), RepoError> {
        let mut item = key_of(format!("STATE#{nonce}"), "STATE".to_owned());
        item.insert(TTL_ATTRIBUTE.into(), n(expires_at));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn consume_state(&self, nonce: &str, now: i64) -> Result<bool, RepoError> {
        // TTL deletion is lazy (up to days), so expiry is checked in the condition.
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key_of(format!("STATE#{nonce}"), "STATE".to_owned())))
            .condition_expression("attribute_exists(#pk) AND #ttl > :now")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_values(":now", n(now))
            .send()
            .await
            .map_err(classify);
        applied(result)
    }

    async fn record_event(
        &self,
        event_id: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<bool, RepoError> {
        self.claim_event(None, event_id, now, expires_at).await
    }

    async fn event_seen(&self, event_id: &str, now: i64) -> Result<bool, RepoError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key_of(format!("EVT#{event_id}"), "EVT".to_owned())))
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?;
        // TTL deletion is lazy, so expiry is checked here too.
        let ttl = out
            .item
            .as_ref()
            .and_then(|i| i.get(TTL_ATTRIBUTE))
            .and_then(|v| v.as_n().ok()?.parse::<i64>().ok());
        Ok(ttl.is_some_and(|t| t > now))
    }

    async fn append_audit(&self, record: &AuditRecord, expires_at: i64) -> Result<(), RepoError> {
        self.client
            .put_item()
            .table_name(&self.audit_table)
            .set_item(Some(audit_item(record, expires_at)?))
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn append_audit_claiming(
        &self,
        record: &AuditRecord,
        expires_at: i64,
        event_id: &str,
        now: i64,
        event_expires_at: i64,
    ) -> Result<bool, RepoError> {
        let audit = Put::builder()
            .table_name(&self.audit_table)
            .set_item(Some(audit_item(record, expires_at)?))
            .build()
            .map_err(|e| RepoError::Backend(Box::new(e)))?;
        self.claim_event(Some(audit), event_id, now, event_expires_at)
            .await
    }

    async fn query_audit(
        &self,
        tenant: Option<&str>,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, RepoError> {
        let mut records: Vec<AuditRecord> = Vec::new();
        let mut start = None;
        loop {
            let (items, next) = match tenant {
                Some(t) => {
                    let out = self
                        .client
                        .query()
                        .table_name(&self.audit_table)
                        .key_condition_expression("#pk = :pk AND #sk >= :since")
                        .expression_attribute_names("#pk", PK)
                        .expression_attribute_names("#sk", SK)
                        .expression_attribute_values(":pk", s(t))
                        .expression_attribute_values(":since", s(format!("{since_ms:013}")))
                        .set_exclusive_start_key(start)
                        .send()
                        .await
                        .map_err(classify)?;
                    (out.items.unwrap_or_default(), out.last_evaluated_key)
                }
                None => {
                    // Operator-only path (`tokenkeep audit` without --team).
                    let out = self
                        .client
                        .scan()
                        .table_name(&self.audit_table)
                        .filter_expression("at_ms >= :since")
                        .expression_attribute_values(":since", n(since_ms))
                        .set_exclusive_start_key(start)
                        .send()
                        .await
                        .map_err(classify)?;
                    (out.items.unwrap_or_default(), out.last_evaluated_key)
                }
            };
            for item in items {
                records.push(
                    serde_dynamo::from_item(item).map_err(|e| RepoError::Corrupt(e.to_string()))?,
                );
            }
            start = next;
            if start.is_none() {
                break;
            }
        }
        records.sort_by_key(|r| r.at_ms);
        records.truncate(limit);
        Ok(records)
    }
}

/// Creates the installations table (keys, sparse `by_expiry` GSI, TTL) and the
/// audit table (keys, TTL) if they don't exist. For the emulator and
/// `tokenkeep dev --create-tables`; in AWS the SAM template owns the tables.
pub async fn create_tables(
    client: &Client,
    table: &str,
    audit_table: &str,
) -> Result<(), RepoError> {
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
    };
    let attr = |name: &str, kind: ScalarAttributeType| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(kind)
            .build()
    };
    let built = |e: aws_sdk_dynamodb::error::BuildError| RepoError::Backend(Box::new(e));

    let gsi = GlobalSecondaryIndex::builder()
        .index_name(schema::GSI_BY_EXPIRY)
        .key_schema(key(GSI_EXPIRY_PK, KeyType::Hash).map_err(built)?)
        .key_schema(key(GSI_EXPIRY_SK, KeyType::Range).map_err(built)?)
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::KeysOnly)
                .build(),
        )
        .build()
        .map_err(built)?;
    let installations = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr(PK, ScalarAttributeType::S).map_err(built)?)
        .attribute_definitions(attr(SK, ScalarAttributeType::S).map_err(built)?)
        .attribute_definitions(attr(GSI_EXPIRY_PK, ScalarAttributeType::S).map_err(built)?)
        .attribute_definitions(attr(GSI_EXPIRY_SK, ScalarAttributeType::N).map_err(built)?)
        .key_schema(key(PK, KeyType::Hash).map_err(built)?)
        .key_schema(key(SK, KeyType::Range).map_err(built)?)
        .global_secondary_indexes(gsi);
    let audit = client
        .create_table()
        .table_name(audit_table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr(PK, ScalarAttributeType::S).map_err(built)?)
        .attribute_definitions(attr(SK, ScalarAttributeType::S).map_err(built)?)
        .key_schema(key(PK, KeyType::Hash).map_err(built)?)
        .key_schema(key(SK, KeyType::Range).map_err(built)?);

    for (name, request) in [(table, installations), (audit_table, audit)] {
        match request.send().await {
            Ok(_) => {}
            Err(e) if e.code() == Some("ResourceInUseException") => continue,
            Err(e) => return Err(classify(e)),
        }
        client
            .update_time_to_live()
            .table_name(name)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(TTL_ATTRIBUTE)
                    .enabled(true)
                    .build()
                    .map_err(built)?,
            )
            .send()
            .await
            .map_err(classify)?;
    }
    Ok(())
}
