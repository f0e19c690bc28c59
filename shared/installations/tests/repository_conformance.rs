//! One suite, two repositories: the embedded SQLite store and DynamoDB on the
//! local emulator must behave the same under every condition.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokenkeep_installations::testing::emulator_repository;
use tokenkeep_installations::{
    AuditRecord, EmbeddedRepository, Expect, InstallationMeta, Outcome, RecordKey, RepoError,
    Repository, StoredRecord, TenantKey, TokenKind, schema,
};

fn record(key: &RecordKey, version: u64, generation: u64, expires_at: Option<i64>) -> StoredRecord {
    StoredRecord {
        pk: key.pk(),
        sk: key.sk(),
        version,
        generation,
        meta: InstallationMeta {
            team_id: key.tenant.team_id().map(str::to_owned),
            enterprise_id: key.tenant.enterprise_id().map(str::to_owned),
            bot_scopes: vec!["chat:write".into()],
            installed_at: 1_700_000_000,
            token_expires_at: expires_at,
            ..Default::default()
        },
        data_key: "ZGs=".into(),
        data_key_id: "local:test".into(),
        sealed: BTreeMap::from([("token".to_owned(), "c2VhbGVk".to_owned())]),
        format: 2,
        exp_shard: expires_at.map(|_| schema::expiry_shard(&key.pk())),
        expires_at,
        lease_owner: None,
        lease_until: None,
    }
}

fn team(id: &str) -> TenantKey {
    TenantKey::new(None, Some(id)).unwrap()
}

async fn conditional_writes(repo: &dyn Repository) {
    let key = RecordKey::bot(team("T1"));
    // Given no tenant generation yet, a create fails: records need an open generation.
    assert!(matches!(
        repo.put(&record(&key, 1, 1, None), Expect::Absent).await,
        Err(RepoError::ConditionFailed)
    ));
    let generation = repo.open_generation(&key.pk()).await.unwrap();
    assert_eq!(generation, 1);
    assert_eq!(
        repo.open_generation(&key.pk()).await.unwrap(),
        1,
        "a live generation is reused"
    );

    repo.put(&record(&key, 1, 1, None), Expect::Absent)
        .await
        .unwrap();
    // A second create loses.
    assert!(matches!(
        repo.put(&record(&key, 1, 1, None), Expect::Absent).await,
        Err(RepoError::ConditionFailed)
    ));
    // Replace at the right version wins once; the stale writer loses.
    repo.put(
        &record(&key, 2, 1, None),
        Expect::Version {
            version: 1,
            generation: 1,
        },
    )
    .await
    .unwrap();
    assert!(matches!(
        repo.put(
            &record(&key, 2, 1, None),
            Expect::Version {
                version: 1,
                generation: 1
            }
        )
        .await,
        Err(RepoError::ConditionFailed)
    ));
    // Right version, wrong generation loses.
    assert!(matches!(
        repo.put(
            &record(&key, 3, 1, None),
            Expect::Version {
                version: 2,
                generation: 7
            }
        )
        .await,
        Err(RepoError::ConditionFailed)
    ));
    let stored = repo.get(&key).await.unwrap().unwrap();
    assert_eq!(stored.version, 2);
    assert_eq!(
        stored,
        record(&key, 2, 1, None),
        "a record round-trips unchanged"
    );
    assert!(
        repo.get(&RecordKey::bot(team("T2")))
            .await
            .unwrap()
            .is_none()
    );
}

async fn org_wide_and_team_are_distinct(repo: &dyn Repository) {
    let org = TenantKey::for_lookup(Some("E1"), Some("T5"), true).unwrap();
    let in_org = TenantKey::new(Some("E1"), Some("T5")).unwrap();
    let t1 = team("T1X");
    let t10 = team("T1X0");
    for tenant in [&org, &in_org, &t1, &t10] {
        let g = repo.open_generation(&tenant.pk()).await.unwrap();
        repo.put(
            &record(&RecordKey::bot(tenant.clone()), 1, g, None),
            Expect::Absent,
        )
        .await
        .unwrap();
    }
    repo.put(
        &record(&RecordKey::user(org.clone(), "U1").unwrap(), 1, 1, None),
        Expect::Absent,
    )
    .await
    .unwrap();
    assert_eq!(
        repo.list_tenant(&org.pk()).await.unwrap().len(),
        2,
        "org-wide: bot + user"
    );
    assert_eq!(repo.list_tenant(&in_org.pk()).await.unwrap().len(), 1);
    assert_eq!(
        repo.list_tenant(&t1.pk()).await.unwrap().len(),
        1,
        "T1X is not a prefix match of T1X0"
    );
    let got = repo
        .get(&RecordKey::bot(org.clone()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.meta.team_id, None);
    assert_eq!(got.meta.enterprise_id.as_deref(), Some("E1"));
}

async fn purge_leaves_a_tombstone(repo: &dyn Repository) {
    let tenant = team("T7");
    let bot = RecordKey::bot(tenant.clone());
    let user = RecordKey::user(tenant.clone(), "U7").unwrap();
    let g = repo.open_generation(&tenant.pk()).await.unwrap();
    repo.put(&record(&bot, 1, g, None), Expect::Absent)
        .await
        .unwrap();
    repo.put(&record(&user, 1, g, None), Expect::Absent)
        .await
        .unwrap();

    assert_eq!(repo.purge_tenant(&tenant.pk(), 100).await.unwrap(), 2);
    assert_eq!(
        repo.purge_tenant(&tenant.pk(), 200).await.unwrap(),
        0,
        "purge is idempotent"
    );
    let state = repo.tenant_state(&tenant.pk()).await.unwrap().unwrap();
    assert!(state.purged);
    assert_eq!(state.purged_at, Some(100));
    assert!(repo.list_tenant(&tenant.pk()).await.unwrap().is_empty());

    // A late writer of the purged generation can't bring it back.
    assert!(matches!(
        repo.put(&record(&bot, 1, g, None), Expect::Absent).await,
        Err(RepoError::ConditionFailed)
    ));
    assert!(matches!(
        repo.put(
            &record(&bot, 2, g, None),
            Expect::Version {
                version: 1,
                generation: g
            }
        )
        .await,
        Err(RepoError::ConditionFailed)
    ));
    // A restore of an older state can't un-purge it.
    assert!(
        !repo
            .restore_tenant(
                &tenant.pk(),
                tokenkeep_installations::TenantState {
                    generation: g,
                    purged: false,
                    purged_at: None
                }
            )
            .await
            .unwrap()
    );
    // A new install opens a new generation; the old one stays dead.
    let g2 = repo.open_generation(&tenant.pk()).await.unwrap();
    assert_eq!(g2, g + 1);
    assert!(matches!(
        repo.put(&record(&bot, 1, g, None), Expect::Absent).await,
        Err(RepoError::ConditionFailed)
    ));
    repo.put(&record(&bot, 1, g2, None), Expect::Absent)
        .await
        .unwrap();
    // Deleting one record is idempotent.
    assert!(repo.delete(&bot).await.unwrap());
    assert!(!repo.delete(&bot).await.unwrap());
}

/// A revoke deletes the record and leaves a tombstone for its key in one
/// write: readable, idempotent, moved only by a later revoke, never returned
/// as a record, and what an import's create is conditional on.
async fn revoke_leaves_a_record_tombstone(repo: &dyn Repository) {
    // Given a tenant with a rotating bot record and a rotating user record
    // (`record` installs at 1_700_000_000)
    let tenant = team("TREV");
    let bot = RecordKey::bot(tenant.clone());
    let user = RecordKey::user(tenant.clone(), "UREV").unwrap();
    let g = repo.open_generation(&tenant.pk()).await.unwrap();
    for key in [&bot, &user] {
        repo.put(&record(key, 1, g, Some(600)), Expect::Absent)
            .await
            .unwrap();
    }
    let (t100, t200) = (1_700_000_100, 1_700_000_200);

    // When the user record is revoked
    assert!(
        repo.revoke(&user, t100).await.unwrap(),
        "a record was there"
    );
    // Then it is gone, its tombstone is readable, the bot has none
    assert!(repo.get(&user).await.unwrap().is_none());
    assert_eq!(repo.revoked_at(&user).await.unwrap(), Some(t100));
    assert_eq!(repo.revoked_at(&bot).await.unwrap(), None);
    let (read, state) = repo.get_with_tenant(&user).await.unwrap();
    assert!(read.is_none(), "the tombstone is not read as the record");
    assert!(state.is_some_and(|s| !s.purged && s.generation == g));
    // And no listing, scan or index returns the tombstone as a record
    let listed: Vec<String> = repo
        .list_tenant(&tenant.pk())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.sk)
        .collect();
    assert_eq!(listed, [schema::SK_BOT]);
    let mut scanned = Vec::new();
    let mut after = None;
    loop {
        let (page, next) = repo.scan_records(after, 100).await.unwrap();
        scanned.extend(page.into_iter().filter(|r| r.pk == tenant.pk()));
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(
        scanned.iter().map(|r| r.sk.as_str()).collect::<Vec<_>>(),
        [schema::SK_BOT]
    );
    let shard = schema::expiry_shard(&tenant.pk());
    let (due, _) = repo.query_due(&shard, 1000, None, 1000).await.unwrap();
    let due: Vec<_> = due.into_iter().filter(|k| k.tenant == tenant).collect();
    assert_eq!(due, std::slice::from_ref(&bot), "only the bot is due");

    // When it is revoked again, earlier: nothing to delete, the later time stays
    assert!(!repo.revoke(&user, t100 - 50).await.unwrap());
    assert_eq!(repo.revoked_at(&user).await.unwrap(), Some(t100));
    // When it is revoked again, later: the tombstone moves
    assert!(!repo.revoke(&user, t200).await.unwrap());
    assert_eq!(repo.revoked_at(&user).await.unwrap(), Some(t200));
    // A restored tombstone only moves later too, and leaves the record alone
    assert!(!repo.restore_revocation(&user, t100).await.unwrap());
    assert!(!repo.restore_revocation(&user, t200).await.unwrap());
    assert_eq!(repo.revoked_at(&user).await.unwrap(), Some(t200));
    assert!(repo.restore_revocation(&bot, t100).await.unwrap());
    assert!(
        repo.get(&bot).await.unwrap().is_some(),
        "restore_revocation keeps the record"
    );
    // Concurrent revokes of one record: exactly one deleted it, the latest time stays
    let racy = RecordKey::user(tenant.clone(), "URACE").unwrap();
    repo.put(&record(&racy, 1, g, None), Expect::Absent)
        .await
        .unwrap();
    let revokes = (0..4).map(|i| repo.revoke(&racy, t100 + i));
    let deleted = futures::future::join_all(revokes)
        .await
        .into_iter()
        .map(Result::unwrap)
        .filter(|existed| *existed)
        .count();
    assert_eq!(deleted, 1, "one revoke found the record");
    assert_eq!(repo.revoked_at(&racy).await.unwrap(), Some(t100 + 3));
    // A key never stored can be revoked: the tombstone waits for its copies
    let ghost = RecordKey::user(tenant.clone(), "UGHOST").unwrap();
    assert!(!repo.revoke(&ghost, t100).await.unwrap());
    assert_eq!(repo.revoked_at(&ghost).await.unwrap(), Some(t100));

    // An import's create is refused over a tombstone at or after its install
    // (a tie included), and allowed over an older one
    assert!(matches!(
        repo.put(&record(&user, 1, g, None), Expect::AbsentNotRevoked)
            .await,
        Err(RepoError::ConditionFailed)
    ));
    let tie = RecordKey::user(tenant.clone(), "UTIE").unwrap();
    repo.revoke(&tie, 1_700_000_000).await.unwrap();
    assert!(matches!(
        repo.put(&record(&tie, 1, g, None), Expect::AbsentNotRevoked)
            .await,
        Err(RepoError::ConditionFailed)
    ));
    let old = RecordKey::user(tenant.clone(), "UOLD").unwrap();
    repo.revoke(&old, 1_699_999_999).await.unwrap();
    repo.put(&record(&old, 1, g, None), Expect::AbsentNotRevoked)
        .await
        .unwrap();
    let fresh = RecordKey::user(tenant.clone(), "UFRESH").unwrap();
    repo.put(&record(&fresh, 1, g, None), Expect::AbsentNotRevoked)
        .await
        .unwrap();
    // A plain create (a fresh OAuth grant) is not held back by a tombstone
    repo.put(&record(&user, 1, g, None), Expect::Absent)
        .await
        .unwrap();
    assert_eq!(repo.revoked_at(&user).await.unwrap(), Some(t200));

    // Every tombstone is listed for export, and none of the records
    let listed: Vec<(RecordKey, i64)> = repo
        .scan_revocations()
        .await
        .unwrap()
        .into_iter()
        .filter(|(k, _)| k.tenant == tenant)
        .collect();
    let mut want = vec![
        (bot.clone(), t100),
        (user.clone(), t200),
        (racy.clone(), t100 + 3),
        (ghost.clone(), t100),
        (tie.clone(), 1_700_000_000),
        (old.clone(), 1_699_999_999),
    ];
    want.sort();
    assert_eq!(listed, want);

    // A tenant purge deletes the records (bot, user, UOLD, UFRESH) and keeps the tombstones
    assert_eq!(repo.purge_tenant(&tenant.pk(), 900).await.unwrap(), 4);
    assert_eq!(repo.revoked_at(&user).await.unwrap(), Some(t200));
    assert_eq!(repo.revoked_at(&ghost).await.unwrap(), Some(t100));
}

async fn leases(repo: &dyn Repository) {
    let key = RecordKey::bot(team("T8"));
    let g = repo.open_generation(&key.pk()).await.unwrap();
    repo.put(&record(&key, 1, g, Some(1000)), Expect::Absent)
        .await
        .unwrap();

    assert!(repo.try_lease(&key, 1, g, "a", 100, 130).await.unwrap());
    assert!(
        !repo.try_lease(&key, 1, g, "b", 110, 140).await.unwrap(),
        "held lease"
    );
    assert!(
        !repo.try_lease(&key, 2, g, "b", 200, 230).await.unwrap(),
        "wrong version"
    );
    let leased = repo.get(&key).await.unwrap().unwrap();
    assert_eq!(
        (
            leased.lease_owner.as_deref(),
            leased.lease_until,
            leased.version
        ),
        (Some("a"), Some(130), 1)
    );
    // Only the holder may complete.
    assert!(matches!(
        repo.put(
            &record(&key, 2, g, Some(2000)),
            Expect::Leased {
                version: 1,
                generation: g,
                owner: "b".into()
            }
        )
        .await,
        Err(RepoError::ConditionFailed)
    ));
    // The holder renews its own live lease (the check right before Slack).
    assert!(
        repo.try_lease(&key, 1, g, "a", 120, 131).await.unwrap(),
        "renewed by its holder"
    );
    // After expiry another caller takes over; the first holder can neither renew nor write.
    assert!(repo.try_lease(&key, 1, g, "b", 132, 160).await.unwrap());
    assert!(
        !repo.try_lease(&key, 1, g, "a", 133, 163).await.unwrap(),
        "taken over: no renewal"
    );
    assert!(matches!(
        repo.put(
            &record(&key, 2, g, Some(2000)),
            Expect::Leased {
                version: 1,
                generation: g,
                owner: "a".into()
            }
        )
        .await,
        Err(RepoError::ConditionFailed)
    ));
    repo.put(
        &record(&key, 2, g, Some(2000)),
        Expect::Leased {
            version: 1,
            generation: g,
            owner: "b".into(),
        },
    )
    .await
    .unwrap();
    let done = repo.get(&key).await.unwrap().unwrap();
    assert_eq!(
        (done.version, done.lease_owner),
        (2, None),
        "a completed write clears the lease"
    );
    // Release by a non-holder is a no-op; by the holder it frees the record.
    assert!(repo.try_lease(&key, 2, g, "c", 300, 330).await.unwrap());
    repo.release_lease(&key, "x").await.unwrap();
    assert!(!repo.try_lease(&key, 2, g, "d", 301, 331).await.unwrap());
    repo.release_lease(&key, "c").await.unwrap();
    assert!(repo.try_lease(&key, 2, g, "d", 302, 332).await.unwrap());
    // A lease on a purged record fails.
    repo.purge_tenant(&key.pk(), 400).await.unwrap();
    assert!(!repo.try_lease(&key, 2, g, "e", 999, 1030).await.unwrap());
}

async fn expiry_index(repo: &dyn Repository) {
    let mut due = Vec::new();
    for (i, exp) in [(1, Some(500)), (2, Some(1500)), (3, None), (4, Some(900))] {
        let key = RecordKey::bot(team(&format!("TEXP{i}")));
        let g = repo.open_generation(&key.pk()).await.unwrap();
        repo.put(&record(&key, 1, g, exp), Expect::Absent)
            .await
            .unwrap();
        if exp.is_some_and(|e| e <= 1000) {
            due.push(key);
        }
    }
    let mut found = Vec::new();
    for shard in 0..schema::EXPIRY_SHARDS {
        let (keys, next) = repo
            .query_due(&format!("EXP#{shard}"), 1000, None, 100)
            .await
            .unwrap();
        assert!(next.is_none(), "a short page ends the shard");
        found.extend(keys);
    }
    found.sort();
    due.sort();
    assert_eq!(found, due, "only rotating records due by t=1000");
}

/// Pages of one key walk a shard in expiry order, each due key exactly once,
/// although every record stays due (the sweep's records that fail or are held
/// elsewhere): the cursor, not a re-query from the start.
async fn expiry_index_pages(repo: &dyn Repository) {
    // Tenants that share one shard, with expiries out of insertion order and a tie.
    let shard = schema::expiry_shard(&team("TPG0").pk());
    let mut want = Vec::new();
    let mut i = 0;
    for exp in [700, 300, 500, 300, 900] {
        let key = loop {
            i += 1;
            let key = RecordKey::bot(team(&format!("TPG{i}")));
            if schema::expiry_shard(&key.pk()) == shard {
                break key;
            }
        };
        let g = repo.open_generation(&key.pk()).await.unwrap();
        repo.put(&record(&key, 1, g, Some(exp)), Expect::Absent)
            .await
            .unwrap();
        want.push((exp, key));
    }
    want.sort_by_key(|(exp, _)| *exp);
    let mut pages = 0;
    let mut found = Vec::new();
    let mut cursor = None;
    loop {
        let (keys, next) = repo
            .query_due(&shard, 1000, cursor.as_ref(), 1)
            .await
            .unwrap();
        pages += 1;
        assert!(pages <= 50, "the listing must end");
        // Other tests' records may share the shard; only this test's are checked.
        found.extend(
            keys.into_iter()
                .filter(|k| want.iter().any(|(_, w)| w == k)),
        );
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let found_exp: Vec<i64> = found
        .iter()
        .map(|k| want.iter().find(|(_, w)| w == k).expect("a due key").0)
        .collect();
    assert_eq!(found.len(), want.len(), "each due key once: {found:?}");
    assert!(
        found_exp.is_sorted(),
        "earliest expiry first: {found_exp:?}"
    );
}

async fn states_are_single_use(repo: Arc<dyn Repository>) {
    repo.put_state("n1", 1000).await.unwrap();
    repo.put_state("old", 50).await.unwrap();
    assert!(matches!(
        repo.put_state("n1", 1000).await,
        Err(RepoError::ConditionFailed)
    ));
    assert!(!repo.consume_state("old", 100).await.unwrap(), "expired");
    assert!(
        !repo.consume_state("missing", 100).await.unwrap(),
        "unknown"
    );

    // 16 concurrent consumers of one state: exactly one wins.
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let repo = repo.clone();
            tokio::spawn(async move { repo.consume_state("n1", 100).await.unwrap() })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        wins += u32::from(t.await.unwrap());
    }
    assert_eq!(wins, 1);
}

/// A tenant with many user records (past one 25-item batch) is purged
/// whole, inside Slack's 3 s acknowledgement window.
async fn large_tenant_purge(repo: &dyn Repository) {
    let tenant = team("T9LARGE");
    let g = repo.open_generation(&tenant.pk()).await.unwrap();
    repo.put(
        &record(&RecordKey::bot(tenant.clone()), 1, g, None),
        Expect::Absent,
    )
    .await
    .unwrap();
    for u in 0..60 {
        let key = RecordKey::user(tenant.clone(), &format!("U{u:04}")).unwrap();
        repo.put(&record(&key, 1, g, None), Expect::Absent)
            .await
            .unwrap();
    }
    let started = std::time::Instant::now();
    assert_eq!(repo.purge_tenant(&tenant.pk(), 500).await.unwrap(), 61);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "purge took {:?}",
        started.elapsed()
    );
    assert!(repo.list_tenant(&tenant.pk()).await.unwrap().is_empty());
    assert!(
        repo.tenant_state(&tenant.pk())
            .await
            .unwrap()
            .unwrap()
            .purged
    );
}

async fn events_dedupe(repo: &dyn Repository) {
    assert!(!repo.event_seen("Ev1", 100).await.unwrap(), "unknown id");
    assert!(repo.record_event("Ev1", 100, 200).await.unwrap());
    assert!(
        repo.event_seen("Ev1", 150).await.unwrap(),
        "seen within ttl"
    );
    assert!(!repo.event_seen("Ev1", 250).await.unwrap(), "not after ttl");
    assert!(
        !repo.record_event("Ev1", 150, 250).await.unwrap(),
        "retry within ttl"
    );
    assert!(
        repo.record_event("Ev1", 300, 400).await.unwrap(),
        "after ttl it is new again"
    );
}

/// An audit row as the events path writes it (bot token, outcome ok).
fn audit_row(tenant: &str, at_ms: i64, request_id: &str, reason: &str) -> AuditRecord {
    AuditRecord {
        tenant: tenant.to_owned(),
        at_ms,
        token_kind: TokenKind::Bot,
        user_id: None,
        actor: "events".into(),
        request_id: request_id.into(),
        reason: reason.into(),
        outcome: Outcome::Ok,
        version: 1,
    }
}

/// An audit append with an event claim: both or neither, and a duplicate
/// writes nothing (no audit row), within the claim's TTL only.
async fn audit_with_an_event_claim(repo: &dyn Repository) {
    let rec = |at_ms| audit_row("T#-#TCLAIM", at_ms, "req", "message");
    let audit_rows = || async {
        repo.query_audit(Some("T#-#TCLAIM"), 0, 100)
            .await
            .unwrap()
            .len()
    };
    assert!(
        repo.append_audit_claiming(&rec(1), 99_999, "EvC1", 100, 200)
            .await
            .unwrap()
    );
    assert_eq!(audit_rows().await, 1);
    assert!(
        !repo
            .append_audit_claiming(&rec(2), 99_999, "EvC1", 150, 250)
            .await
            .unwrap(),
        "a retry within the TTL"
    );
    assert_eq!(audit_rows().await, 1, "a duplicate writes no audit row");
    assert!(
        !repo.record_event("EvC1", 150, 250).await.unwrap(),
        "the claim is an ordinary event record"
    );
    assert!(
        repo.append_audit_claiming(&rec(3), 99_999, "EvC1", 300, 400)
            .await
            .unwrap(),
        "after the TTL it is new again"
    );
    assert_eq!(audit_rows().await, 2);
    // A claim made by record_event is honoured too.
    assert!(repo.record_event("EvC2", 100, 200).await.unwrap());
    assert!(
        !repo
            .append_audit_claiming(&rec(4), 99_999, "EvC2", 150, 250)
            .await
            .unwrap()
    );
    assert_eq!(audit_rows().await, 2);
}

async fn audit_trail(repo: &dyn Repository) {
    for (i, tenant) in ["T#-#TA", "T#-#TB", "T#-#TA"].iter().enumerate() {
        let rec = audit_row(tenant, 1_000 + i as i64, "req", "app_mention");
        repo.append_audit(&rec, 99_999).await.unwrap();
        // Same millisecond, same request: still two records.
        if i == 0 {
            repo.append_audit(&rec, 99_999).await.unwrap();
        }
    }
    assert_eq!(
        repo.query_audit(Some("T#-#TA"), 0, 100)
            .await
            .unwrap()
            .len(),
        3
    );
    assert_eq!(repo.query_audit(None, 0, 100).await.unwrap().len(), 4);
    assert_eq!(
        repo.query_audit(Some("T#-#TA"), 1_001, 100)
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn scans(repo: &dyn Repository) {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let (page, next) = repo.scan_records(after, 3).await.unwrap();
        all.extend(page);
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let mut keys: Vec<_> = all.iter().map(|r| (r.pk.clone(), r.sk.clone())).collect();
    let before = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), before, "pages don't repeat records");
    assert!(before >= 5);
    assert!(repo.scan_tenants().await.unwrap().len() >= 5);
}

async fn suite(repo: Arc<dyn Repository>) {
    conditional_writes(repo.as_ref()).await;
    org_wide_and_team_are_distinct(repo.as_ref()).await;
    purge_leaves_a_tombstone(repo.as_ref()).await;
    revoke_leaves_a_record_tombstone(repo.as_ref()).await;
    leases(repo.as_ref()).await;
    expiry_index(repo.as_ref()).await;
    expiry_index_pages(repo.as_ref()).await;
    states_are_single_use(repo.clone()).await;
    events_dedupe(repo.as_ref()).await;
    large_tenant_purge(repo.as_ref()).await;
    audit_trail(repo.as_ref()).await;
    audit_with_an_event_claim(repo.as_ref()).await;
    scans(repo.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_repository_conforms() {
    let dir = tempfile::tempdir().unwrap();
    suite(Arc::new(
        EmbeddedRepository::open(dir.path().join("store.db")).unwrap(),
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamodb_repository_conforms_on_the_emulator() {
    let (repo, _, _, _) = emulator_repository().await;
    suite(Arc::new(repo)).await;
}

#[tokio::test]
async fn dynamodb_tables_have_ttl_and_the_expiry_index() {
    let (_, client, table, audit) = emulator_repository().await;
    let desc = client
        .describe_table()
        .table_name(&table)
        .send()
        .await
        .unwrap();
    let t = desc.table().unwrap();
    let gsi = &t.global_secondary_indexes()[0];
    assert_eq!(gsi.index_name(), Some(schema::GSI_BY_EXPIRY));
    for name in [&table, &audit] {
        let ttl = client
            .describe_time_to_live()
            .table_name(name)
            .send()
            .await
            .unwrap();
        assert_eq!(
            ttl.time_to_live_description().unwrap().attribute_name(),
            Some(schema::TTL_ATTRIBUTE)
        );
    }
}

/// The embedded store serves token reads from an in-process cache: a write
/// by this process or by another one on the same files (an operator command
/// while `tokenkeep dev` runs) must show on the very next read, while the
/// per-request writes (audit, event claims, states) leave the cache alone.
#[tokio::test]
async fn embedded_reads_see_every_write_of_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let server = EmbeddedRepository::open(&path).unwrap();
    let operator = EmbeddedRepository::open(&path).unwrap();
    let key = RecordKey::bot(team("TCACHE"));
    async fn versions(
        repo: &EmbeddedRepository,
        key: &RecordKey,
    ) -> (Option<u64>, Option<(u64, bool)>) {
        let (rec, tenant) = repo.get_with_tenant(key).await.unwrap();
        (
            rec.map(|r| r.version),
            tenant.map(|t| (t.generation, t.purged)),
        )
    }
    let version_read = |repo| versions(repo, &key);
    assert_eq!(
        version_read(&server).await,
        (None, None),
        "nothing yet (cached as absent)"
    );

    let generation = operator.open_generation(&key.pk()).await.unwrap();
    operator
        .put(&record(&key, 1, generation, None), Expect::Absent)
        .await
        .unwrap();
    assert_eq!(
        version_read(&server).await,
        (Some(1), Some((1, false))),
        "another process's install"
    );

    // Per-request writes in between keep the entry, and change nothing read.
    for i in 0..3 {
        let rec = audit_row(&key.pk(), 5_000 + i, &format!("req-{i}"), "app_mention");
        assert!(
            server
                .append_audit_claiming(&rec, 99_999, &format!("EvCache{i}"), 100, 200)
                .await
                .unwrap()
        );
        assert_eq!(version_read(&server).await, (Some(1), Some((1, false))));
    }

    server
        .put(
            &record(&key, 2, generation, None),
            Expect::Version {
                version: 1,
                generation,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        version_read(&server).await,
        (Some(2), Some((1, false))),
        "this process's own write"
    );
    assert!(
        operator
            .try_lease(&key, 2, generation, "other", 10, 40)
            .await
            .unwrap()
    );
    let (leased, _) = server.get_with_tenant(&key).await.unwrap();
    assert_eq!(
        leased.unwrap().lease_owner.as_deref(),
        Some("other"),
        "another process's lease"
    );

    operator.purge_tenant(&key.pk(), 1_000).await.unwrap();
    assert_eq!(
        version_read(&server).await,
        (None, Some((1, true))),
        "another process's purge"
    );
}

/// A data dir written before the log tables moved to their own file keeps its
/// audit log, event claims and OAuth states.
#[tokio::test]
async fn embedded_store_from_before_the_log_file_keeps_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    {
        let old = rusqlite::Connection::open(&path).unwrap();
        old.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE states (nonce TEXT PRIMARY KEY, ttl INTEGER NOT NULL) WITHOUT ROWID;
             CREATE TABLE events (event_id TEXT PRIMARY KEY, ttl INTEGER NOT NULL) WITHOUT ROWID;
             CREATE TABLE audit (
                 tenant TEXT NOT NULL, sk TEXT NOT NULL, at_ms INTEGER NOT NULL, ttl INTEGER NOT NULL, body TEXT NOT NULL,
                 PRIMARY KEY (tenant, sk)
             ) WITHOUT ROWID;
             CREATE INDEX audit_by_time ON audit (at_ms);
             INSERT INTO states VALUES ('nonce-old', 9999999999);
             INSERT INTO events VALUES ('EvOld', 9999999999);",
        )
        .unwrap();
        for (tenant, at_ms) in [("T#-#TB", 2_000), ("T#-#TA", 1_000)] {
            let rec = audit_row(tenant, at_ms, "req-old", "app_mention");
            old.execute(
                "INSERT INTO audit VALUES (?1, ?2, ?3, 99999, ?4)",
                rusqlite::params![
                    tenant,
                    rec.sort_key(1),
                    at_ms,
                    serde_json::to_string(&rec).unwrap()
                ],
            )
            .unwrap();
        }
    }
    let repo = EmbeddedRepository::open(&path).unwrap();
    let all = repo.query_audit(None, 0, 10).await.unwrap();
    assert_eq!(
        all.iter().map(|r| r.tenant.as_str()).collect::<Vec<_>>(),
        ["T#-#TA", "T#-#TB"],
        "oldest first"
    );
    assert_eq!(
        repo.query_audit(Some("T#-#TB"), 0, 10).await.unwrap().len(),
        1
    );
    assert!(repo.event_seen("EvOld", 100).await.unwrap());
    assert!(repo.consume_state("nonce-old", 100).await.unwrap());
    drop(repo);
    // Moved once: a second open finds nothing left to move and loses nothing.
    let repo = EmbeddedRepository::open(&path).unwrap();
    assert_eq!(repo.query_audit(None, 0, 10).await.unwrap().len(), 2);
    assert!(
        !repo.consume_state("nonce-old", 100).await.unwrap(),
        "single use still"
    );
}
