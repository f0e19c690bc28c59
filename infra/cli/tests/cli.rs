//! Runs the real `tokenkeep` binary against stores seeded in-process through
//! `InstallationStore`, as an operator would against a live deployment.
//! Embedded-store tests use a temporary TOKENKEEP_DATA_DIR; the rekey test
//! needs the DynamoDB/KMS emulator (AWS_ENDPOINT_URL, see infra/test.sh).

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use tokenkeep_envelope::{KeyProvider, KmsKeyProvider, LocalKeyProvider};
use tokenkeep_installations::{
    EmbeddedRepository, Expect, Installation, InstallationStore, LifecycleEvent, LifecycleOutcome,
    ReadContext, RecordKey, Repository, StoreConfig, StoreError, StoredRecord, TenantKey,
    VerifiedTenant,
};
use tokenkeep_slack_api::OAuthV2Response;

const APP_ID: &str = "A0TEST.1234";
const BIN: &str = env!("CARGO_BIN_EXE_tokenkeep");

fn team(n: usize) -> String {
    format!("T{n:04}")
}

fn pk(n: usize) -> String {
    format!("T#-#{}", team(n))
}

/// Slack's oauth.v2.access answer for tenant `n`: bot token, and for even `n`
/// a rotating bot token plus the installing user's token.
fn oauth_response(n: usize) -> OAuthV2Response {
    let rotating = n.is_multiple_of(2);
    let mut v = serde_json::json!({
        "ok": true,
        "app_id": "A0TEST",
        "scope": "app_mentions:read,chat:write",
        "token_type": "bot",
        "access_token": format!("xoxb-test-{n}"),
        "bot_user_id": format!("U{n:04}BOT"),
        "team": {"id": team(n), "name": format!("Workspace {n}")},
        "enterprise": null,
        "is_enterprise_install": false,
        "authed_user": {"id": format!("U{n:04}"), "scope": "search:read",
                        "access_token": format!("xoxp-test-{n}"), "token_type": "user"},
    });
    if rotating {
        v["refresh_token"] = format!("xoxe-1-test-{n}").into();
        v["expires_in"] = 43_200.into();
    }
    serde_json::from_value(v).unwrap()
}

async fn install(store: &InstallationStore, n: usize) {
    let resp = oauth_response(n);
    let tenant = VerifiedTenant::from_oauth_response(&resp).unwrap();
    let mut inst = Installation::from_oauth_response(resp, now()).unwrap();
    // As the OAuth callback does: the exchange started now, to the millisecond
    // (a purge after it would refuse the install).
    inst.exchange_started_ms = store.clock().now_millis();
    store.store_installation(&tenant, &inst).await.unwrap();
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn tenant_key(n: usize) -> TenantKey {
    TenantKey::new(None, Some(&team(n))).unwrap()
}

async fn job_tenant(store: &InstallationStore, n: usize) -> Option<VerifiedTenant> {
    store.tenant_for_job(&tenant_key(n)).await.unwrap()
}

fn ctx() -> ReadContext {
    ReadContext::new("cli-test", "req-1", "test")
}

/// The same files `tokenkeep` opens for TOKENKEEP_STORE=embedded.
fn open_embedded(dir: &Path) -> InstallationStore {
    let repo = EmbeddedRepository::open(dir.join("store.db")).unwrap();
    let keys = LocalKeyProvider::open(dir.join("keys"), "default").unwrap();
    InstallationStore::new(Arc::new(repo), Arc::new(keys), StoreConfig::new(APP_ID))
}

fn wipe_db(dir: &Path) {
    for name in [
        "store.db",
        "store.db-wal",
        "store.db-shm",
        "store-log.db",
        "store-log.db-wal",
        "store-log.db-shm",
    ] {
        let _ = std::fs::remove_file(dir.join(name));
    }
}

fn tokenkeep(env: &[(&str, &str)], args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("TOKENKEEP_STORE")
        .env_remove("TOKENKEEP_KMS_KEY_ID")
        .env_remove("TOKENKEEP_TABLE")
        .env_remove("TOKENKEEP_AUDIT_TABLE")
        .env_remove("SLACK_CLIENT_SECRET")
        .env_remove("SLACK_SIGNING_SECRET")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match stdin {
        Some(_) => cmd.stdin(Stdio::piped()),
        None => cmd.stdin(Stdio::null()),
    };
    let mut child = cmd.spawn().expect("spawn tokenkeep");
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn embedded_env(dir: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("TOKENKEEP_STORE", "embedded".to_owned()),
        ("TOKENKEEP_DATA_DIR", dir.display().to_string()),
        ("SLACK_CLIENT_ID", APP_ID.to_owned()),
    ]
}

fn run(dir: &Path, args: &[&str]) -> Output {
    run_with_stdin(dir, args, None)
}

fn run_with_stdin(dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let env = embedded_env(dir);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    tokenkeep(&env, args, stdin)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json_out(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", stdout(o), stderr(o)))
}

#[track_caller]
fn assert_code(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
}

async fn seeded(n: usize) -> (tempfile::TempDir, InstallationStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_embedded(dir.path());
    for i in 1..=n {
        install(&store, i).await;
    }
    (dir, store)
}

// ---- restore drill -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn restore_drill_brings_back_every_token_and_no_purged_tenant() {
    // Given 50 installed tenants, an early backup, then tenant 7 uninstalled (purged)
    // and a second backup.
    let (dir, store) = seeded(50).await;
    let data = dir.path();
    let early = data.join("early.jsonl");
    let backup = data.join("backup.jsonl");
    assert_code(&run(data, &["export", "--out", early.to_str().unwrap()]), 0);
    let purged = job_tenant(&store, 7).await.unwrap();
    assert_eq!(store.purge_tenant(&purged).await.unwrap(), 2);
    let out = run(
        data,
        &["--json", "export", "--out", backup.to_str().unwrap()],
    );
    assert_code(&out, 0);
    let exported = json_out(&out);
    // 50 bots + 50 installing users, minus tenant 7's two records.
    assert_eq!(exported["records"], 98);
    assert_eq!(exported["tenants"], 50);
    assert_eq!(exported["purged_tenants"], 1);

    // The backup holds sealed data only, and only its owner may read it.
    let text = std::fs::read_to_string(&backup).unwrap();
    assert!(!token_shaped(&text), "export contains a plaintext token");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    // Export never replaces a file by accident.
    assert_code(
        &run(data, &["export", "--out", backup.to_str().unwrap()]),
        1,
    );

    // When the table is lost (the key survives, as a KMS key would) and restored.
    drop(store);
    wipe_db(data);
    let out = run(
        data,
        &["--json", "import", "--in", backup.to_str().unwrap()],
    );
    assert_code(&out, 0);
    let counts = json_out(&out);
    assert_eq!(counts["tenants_restored"], 50);
    assert_eq!(counts["records_created"], 98);
    assert_eq!(counts["records_failed"], 0);

    // And then the older backup, which still holds tenant 7, is imported on top.
    let out = run(data, &["--json", "import", "--in", early.to_str().unwrap()]);
    assert_code(&out, 0);
    let counts = json_out(&out);
    assert_eq!(
        counts["records_refused"], 2,
        "tenant 7's records must be refused: {counts}"
    );
    assert_eq!(counts["records_kept_newer"], 98);
    assert_eq!(counts["records_created"], 0);

    // Then verify passes and every token opens, and tenant 7 stays uninstalled.
    let out = run(data, &["verify"]);
    assert_code(&out, 0);
    assert!(stdout(&out).contains("98 ok, 0 failed"), "{}", stdout(&out));
    let store = open_embedded(data);
    for n in 1..=50 {
        let tenant = job_tenant(&store, n).await;
        if n == 7 {
            assert!(tenant.is_none(), "purged tenant revived");
            assert!(
                store
                    .repository()
                    .tenant_state(&pk(7))
                    .await
                    .unwrap()
                    .unwrap()
                    .purged
            );
            continue;
        }
        let tenant = tenant.unwrap();
        assert_eq!(
            store
                .bot_token(&tenant, &ctx())
                .await
                .unwrap()
                .expose_secret(),
            format!("xoxb-test-{n}")
        );
        let user = format!("U{n:04}");
        assert_eq!(
            store
                .user_token(&tenant, &user, &ctx())
                .await
                .unwrap()
                .expose_secret(),
            format!("xoxp-test-{n}")
        );
    }
    // A reinstall of tenant 7 after the restore starts a new generation and works.
    install(&store, 7).await;
    let t7 = job_tenant(&store, 7).await.unwrap();
    assert_eq!(
        store.bot_token(&t7, &ctx()).await.unwrap().expose_secret(),
        "xoxb-test-7"
    );
}

/// An export rewritten as an older tokenkeep wrote it (format version 1: no
/// revocation lines, no revocation count in the end line).
fn as_version_1(export: &Path, out: &Path) {
    let text = std::fs::read_to_string(export).unwrap();
    let mut lines = Vec::new();
    for line in text.lines() {
        let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
        match v["type"].as_str().unwrap() {
            "revocation" => continue,
            "header" => v["version"] = 1.into(),
            "end" => {
                v.as_object_mut().unwrap().remove("revocations");
            }
            _ => {}
        }
        lines.push(v.to_string());
    }
    std::fs::write(out, lines.join("\n") + "\n").unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_older_export_never_brings_back_a_revoked_token() {
    // Given 3 installed tenants and an export taken while every token was live
    let (dir, store) = seeded(3).await;
    let data = dir.path();
    let early = data.join("early.jsonl");
    assert_code(&run(data, &["export", "--out", early.to_str().unwrap()]), 0);
    // When Slack revokes tenant 2's installing user (tokens_revoked) and the
    // app deletes tenant 3's bot
    let t2 = job_tenant(&store, 2).await.unwrap();
    let event = LifecycleEvent {
        event_id: "EvCLIREVOKE",
        event_time: now(),
    };
    assert_eq!(
        store
            .apply_tokens_revoked(&t2, &event, &["U0002".to_owned()], false)
            .await
            .unwrap(),
        LifecycleOutcome::Applied { records: 1 }
    );
    let t3 = job_tenant(&store, 3).await.unwrap();
    assert!(store.delete_bot(&t3).await.unwrap());
    let revoked = |store: InstallationStore| async move {
        let t2 = job_tenant(&store, 2).await.unwrap();
        let t3 = job_tenant(&store, 3).await.unwrap();
        let user = store.user_token(&t2, "U0002", &ctx()).await;
        let bot = store.bot_token(&t3, &ctx()).await;
        matches!(user, Err(StoreError::NotInstalled))
            && matches!(bot, Err(StoreError::NotInstalled))
    };

    // And the early export is imported on top
    let out = run(data, &["--json", "import", "--in", early.to_str().unwrap()]);
    assert_code(&out, 0);
    let counts = json_out(&out);
    // Then the two revoked records are refused as revoked, the rest kept
    assert_eq!(counts["records_revoked"], 2, "{counts}");
    assert_eq!(counts["records_kept_newer"], 4, "{counts}");
    assert_eq!(counts["records_created"], 0, "{counts}");
    assert!(
        revoked(open_embedded(data)).await,
        "a revoked token came back"
    );

    // When the store is exported, the table lost and restored from that export
    let backup = data.join("backup.jsonl");
    let out = run(
        data,
        &["--json", "export", "--out", backup.to_str().unwrap()],
    );
    assert_code(&out, 0);
    assert_eq!(json_out(&out)["revocations"], 2);
    drop(store);
    wipe_db(data);
    let out = run(
        data,
        &["--json", "import", "--in", backup.to_str().unwrap()],
    );
    assert_code(&out, 0);
    let counts = json_out(&out);
    assert_eq!(counts["revocations_restored"], 2, "{counts}");
    assert_eq!(counts["records_created"], 4, "{counts}");
    // And the early export is imported on top again
    let out = run(data, &["--json", "import", "--in", early.to_str().unwrap()]);
    assert_code(&out, 0);
    let counts = json_out(&out);
    // Then the restored tombstones still refuse the revoked records
    assert_eq!(counts["records_revoked"], 2, "{counts}");
    assert_eq!(counts["records_created"], 0, "{counts}");
    assert!(
        revoked(open_embedded(data)).await,
        "a revoked token came back"
    );
    let out = run(data, &["import", "--in", early.to_str().unwrap()]);
    assert_code(&out, 0);
    assert!(stdout(&out).contains("2 revoked"), "{}", stdout(&out));

    // And an export in the older format (no revocation lines) still imports,
    // the store's tombstones refusing its revoked records just the same
    let v1 = data.join("v1.jsonl");
    as_version_1(&early, &v1);
    let out = run(data, &["--json", "import", "--in", v1.to_str().unwrap()]);
    assert_code(&out, 0);
    let counts = json_out(&out);
    assert_eq!(counts["records_revoked"], 2, "{counts}");
    assert_eq!(counts["records_failed"], 0, "{counts}");
    assert!(
        revoked(open_embedded(data)).await,
        "a revoked token came back"
    );

    // When the table is instead rolled back to the early state (restored from
    // before the revocations) and the later export is imported on top
    wipe_db(data);
    let out = run(data, &["--json", "import", "--in", early.to_str().unwrap()]);
    assert_code(&out, 0);
    assert_eq!(json_out(&out)["records_created"], 6);
    let out = run(
        data,
        &["--json", "import", "--in", backup.to_str().unwrap()],
    );
    assert_code(&out, 0);
    // Then its tombstones revoke the records the rollback brought back
    let counts = json_out(&out);
    assert_eq!(counts["records_revoked_by_restore"], 2, "{counts}");
    assert!(
        revoked(open_embedded(data)).await,
        "a revoked token came back"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn import_refuses_a_truncated_file_and_another_apps_export() {
    // Given an export with its end line cut off.
    let (dir, _store) = seeded(3).await;
    let data = dir.path();
    let file = data.join("b.jsonl");
    assert_code(&run(data, &["export", "--out", file.to_str().unwrap()]), 0);
    let text = std::fs::read_to_string(&file).unwrap();
    let cut: Vec<&str> = text.lines().collect();
    let truncated = data.join("cut.jsonl");
    std::fs::write(&truncated, cut[..cut.len() - 1].join("\n")).unwrap();
    // When / then: nothing is imported from it.
    let out = run(data, &["import", "--in", truncated.to_str().unwrap()]);
    assert_code(&out, 1);
    assert!(stderr(&out).contains("truncated"), "{}", stderr(&out));
    // And an export of another Slack app is refused before any write.
    let env = [
        ("TOKENKEEP_DATA_DIR", data.to_str().unwrap()),
        ("SLACK_CLIENT_ID", "A0OTHER.1"),
    ];
    let out = tokenkeep(&env, &["import", "--in", file.to_str().unwrap()], None);
    assert_code(&out, 2);
    assert!(stderr(&out).contains("SLACK_CLIENT_ID"), "{}", stderr(&out));
}

// ---- verify ----------------------------------------------------------------------

async fn tamper(store: &InstallationStore, n: usize, edit: impl FnOnce(&mut StoredRecord)) {
    let key = RecordKey::bot(tenant_key(n));
    let mut record = store.repository().get(&key).await.unwrap().unwrap();
    let expect = Expect::Version {
        version: record.version,
        generation: record.generation,
    };
    edit(&mut record);
    store.repository().put(&record, expect).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_names_tampered_records_and_fails() {
    // Given five tenants; tenant 3's sealed token has one flipped byte and
    // tenant 4's team name was edited in the table (a bound attribute).
    let (dir, store) = seeded(5).await;
    let out = run(dir.path(), &["verify"]);
    assert_code(&out, 0);
    tamper(&store, 3, |r| {
        let mut bytes = B64.decode(&r.sealed["token"]).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        r.sealed.insert("token".into(), B64.encode(bytes));
    })
    .await;
    tamper(&store, 4, |r| {
        r.meta.team_name = Some("Someone Else".into())
    })
    .await;

    // When verify runs, then it fails and names exactly those two tenants.
    let out = run(dir.path(), &["verify"]);
    assert_code(&out, 1);
    let text = stdout(&out);
    assert!(text.contains(&pk(3)) && text.contains(&pk(4)), "{text}");
    for n in [1, 2, 5] {
        assert!(!text.contains(&pk(n)), "{text}");
    }
    assert!(text.contains("8 ok, 2 failed"), "{text}");
    assert!(!text.contains("xox") && !stderr(&out).contains("xox"));

    let out = run(dir.path(), &["--json", "verify"]);
    assert_code(&out, 1);
    let report = json_out(&out);
    let failed: Vec<&str> = report["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["tenant"].as_str().unwrap())
        .collect();
    assert_eq!(failed, [pk(3), pk(4)]);
    assert!(
        report["failed"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("authentication")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_reports_a_data_key_that_does_not_unwrap() {
    // Given tenant 2's wrapped data key copied from tenant 1 (wrong encryption context).
    let (dir, store) = seeded(2).await;
    let one = store
        .repository()
        .get(&RecordKey::bot(tenant_key(1)))
        .await
        .unwrap()
        .unwrap();
    tamper(&store, 2, |r| r.data_key = one.data_key.clone()).await;
    // When / then.
    let out = run(dir.path(), &["--json", "verify"]);
    assert_code(&out, 1);
    let report = json_out(&out);
    assert_eq!(report["failed"][0]["tenant"], pk(2));
    assert!(
        report["failed"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("data key"),
        "{report}"
    );
}

// ---- list / show / audit ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn list_show_and_audit_never_print_a_token() {
    // Given tenants with bot, user and rotating tokens, and audited reads (one failing).
    let (dir, store) = seeded(4).await;
    let t2 = job_tenant(&store, 2).await.unwrap();
    store.bot_token(&t2, &ctx()).await.unwrap();
    assert!(matches!(
        store.user_token(&t2, "U9999", &ctx()).await,
        Err(StoreError::NotInstalled)
    ));
    let t3 = job_tenant(&store, 3).await.unwrap();
    store.bot_token(&t3, &ctx()).await.unwrap();
    store
        .purge_tenant(&job_tenant(&store, 4).await.unwrap())
        .await
        .unwrap();

    let commands: [&[&str]; 10] = [
        &["list"],
        &["list", "--purged"],
        &["--json", "list", "--purged"],
        &["show", "--team", "T0002"],
        &["--json", "show", "--team", "T0002"],
        &["audit"],
        &["--json", "audit", "--team", "T0002"],
        &["audit", "--outcome", "failed"],
        &["show", "--team", "T0004"],
        &["--json", "audit", "--since", "1h"],
    ];
    for args in commands {
        let out = run(dir.path(), args);
        assert_code(&out, 0);
        let (o, e) = (stdout(&out), stderr(&out));
        assert!(
            !o.contains("xox") && !e.contains("xox"),
            "{args:?} printed a token:\n{o}\n{e}"
        );
    }

    // Then the listings say what an operator needs.
    let list = stdout(&run(dir.path(), &["list", "--purged"]));
    assert!(
        list.contains(&pk(1)) && list.contains("Workspace 2") && list.contains("chat:write"),
        "{list}"
    );
    assert!(
        list.contains("3 tenants, 6 records, 1 purged tenants"),
        "{list}"
    );
    let listed = json_out(&run(dir.path(), &["--json", "list"]));
    let r2 = listed["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["tenant"] == pk(2) && r["record"] == "bot")
        .unwrap();
    assert_eq!(r2["rotating"], true);
    assert!(r2["token_expires_at"].as_i64().unwrap() > now());
    assert!(r2.get("sealed").is_none() && r2.get("data_key").is_none());

    let show = stdout(&run(dir.path(), &["show", "--team", "T0004"]));
    assert!(show.contains("PURGED"), "{show}");

    let audit = json_out(&run(dir.path(), &["--json", "audit", "--team", "T0002"]));
    assert_eq!(audit.as_array().unwrap().len(), 2);
    let failed = json_out(&run(
        dir.path(),
        &["--json", "audit", "--outcome", "failed"],
    ));
    let failed = failed.as_array().unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["outcome"], "not_installed");
    assert_eq!(failed[0]["tenant"], pk(2));

    // An unknown tenant is a failure, not an empty success.
    assert_code(&run(dir.path(), &["show", "--team", "T9999"]), 1);
}

// ---- purge ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn purge_asks_first_and_tombstones_like_an_uninstall() {
    let (dir, store) = seeded(3).await;
    // Given no stdin: refused, nothing deleted.
    let out = run(dir.path(), &["purge", "--team", "T0001"]);
    assert_code(&out, 1);
    assert!(job_tenant(&store, 1).await.is_some());
    // A wrong confirmation: refused.
    let out = run_with_stdin(dir.path(), &["purge", "--team", "T0001"], Some("yes\n"));
    assert_code(&out, 1);
    assert!(job_tenant(&store, 1).await.is_some());
    // The typed tenant id: purged.
    let out = run_with_stdin(dir.path(), &["purge", "--team", "T0001"], Some("T0001\n"));
    assert_code(&out, 0);
    assert!(job_tenant(&store, 1).await.is_none());
    assert!(
        store
            .repository()
            .tenant_state(&pk(1))
            .await
            .unwrap()
            .unwrap()
            .purged
    );
    // --yes skips the prompt; purging again is a no-op.
    assert_code(&run(dir.path(), &["purge", "--team", "T0002", "--yes"]), 0);
    assert!(job_tenant(&store, 2).await.is_none());
    let out = run(dir.path(), &["--json", "purge", "--team", "T0002", "--yes"]);
    assert_code(&out, 0);
    assert_eq!(json_out(&out)["already_purged"], true);
    assert!(job_tenant(&store, 3).await.is_some());
    // A tenant with no records left (tokens_revoked took them) is tombstoned too.
    let t3 = job_tenant(&store, 3).await.unwrap();
    store.delete_bot(&t3).await.unwrap();
    store.delete_installation(&t3, "U0003").await.unwrap();
    assert!(
        !store
            .repository()
            .tenant_state(&pk(3))
            .await
            .unwrap()
            .unwrap()
            .purged
    );
    let out = run(dir.path(), &["--json", "purge", "--team", "T0003", "--yes"]);
    assert_code(&out, 0);
    assert_eq!(json_out(&out)["purged_records"], 0, "{}", stdout(&out));
    assert!(
        store
            .repository()
            .tenant_state(&pk(3))
            .await
            .unwrap()
            .unwrap()
            .purged,
        "no tombstone"
    );
}

#[test]
fn missing_client_id_is_named_and_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = tokenkeep(
        &[("TOKENKEEP_DATA_DIR", dir.path().to_str().unwrap())],
        &["list"],
        None,
    );
    let out = if std::env::var_os("SLACK_CLIENT_ID").is_some() {
        // The environment of the test run sets it; clear it for the child.
        let mut cmd = Command::new(BIN);
        cmd.args(["list"])
            .env_remove("SLACK_CLIENT_ID")
            .env("TOKENKEEP_DATA_DIR", dir.path());
        cmd.output().unwrap()
    } else {
        out
    };
    assert_code(&out, 2);
    assert!(stderr(&out).contains("SLACK_CLIENT_ID"), "{}", stderr(&out));
    // A data dir without a store is an error, not an empty listing.
    let out = tokenkeep(
        &[
            ("TOKENKEEP_DATA_DIR", dir.path().to_str().unwrap()),
            ("SLACK_CLIENT_ID", APP_ID),
        ],
        &["list"],
        None,
    );
    assert_code(&out, 2);
    assert!(stderr(&out).contains("TOKENKEEP_DATA_DIR"));
}

// ---- rekey on the emulator ---------------------------------------------------------------

/// 300 records: moto takes ~150 ms per install, so 1,000 records (measured:
/// 150 s to seed) is too slow for the suite; the logic doesn't change with size.
const REKEY_TENANTS: usize = 150;

#[tokio::test(flavor = "multi_thread")]
async fn rekey_on_the_emulator_is_resumable_and_never_clobbers_a_lease() {
    use tokenkeep_installations::testing::{
        emulator_config, emulator_kms_key, emulator_repository,
    };
    // Given REKEY_TENANTS tenants (a bot and a user record each) under KMS key 1.
    let (repo, _client, table, audit) = emulator_repository().await;
    let (kms, old_key) = emulator_kms_key().await;
    let (_, new_key) = emulator_kms_key().await;
    let repo: Arc<dyn Repository> = Arc::new(repo);
    let keys: Arc<dyn KeyProvider> = Arc::new(KmsKeyProvider::new(kms.clone(), old_key.clone()));
    let store = InstallationStore::new(repo.clone(), keys, StoreConfig::new(APP_ID));
    let started = std::time::Instant::now();
    // Sequential: moto deep-copies tables inside transactions and races under concurrent writers.
    for n in 1..=REKEY_TENANTS {
        install(&store, n).await;
    }
    let total = REKEY_TENANTS * 2;
    eprintln!("seeded {total} records in {:?}", started.elapsed());

    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap();
    let env = [
        ("TOKENKEEP_STORE", "dynamodb"),
        ("TOKENKEEP_TABLE", table.as_str()),
        ("TOKENKEEP_AUDIT_TABLE", audit.as_str()),
        ("TOKENKEEP_KMS_KEY_ID", old_key.as_str()),
        ("SLACK_CLIENT_ID", APP_ID),
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ];

    // When rekey is interrupted half-way (--limit stands in for a kill)...
    let half = total / 2;
    let out = tokenkeep(
        &env,
        &[
            "--json",
            "rekey",
            "--to-key",
            &new_key,
            "--limit",
            &half.to_string(),
        ],
        None,
    );
    assert_code(&out, 3);
    let first = json_out(&out);
    assert_eq!(first["rekeyed"], half);
    // It says what is left: every record not re-wrapped is still under the old key.
    assert_eq!(first["left_total"], total - half, "{first}");
    assert_eq!(
        first["left_under_old_keys"][0]["key_id"],
        old_key.as_str(),
        "{first}"
    );

    // ...and a refresh takes the lease of a record the first run didn't reach.
    let lease_target = scan_all(&*repo)
        .await
        .into_iter()
        .find(|r| r.data_key_id == old_key)
        .unwrap()
        .key()
        .unwrap();
    let rec = repo.get(&lease_target).await.unwrap().unwrap();
    assert!(
        repo.try_lease(
            &lease_target,
            rec.version,
            rec.generation,
            "refresh-in-flight",
            now(),
            now() + 300
        )
        .await
        .unwrap()
    );

    // Then the rerun re-wraps the rest, skips the leased record and says so.
    let out = tokenkeep(&env, &["--json", "rekey", "--to-key", &new_key], None);
    assert_code(&out, 3);
    let report = json_out(&out);
    assert_eq!(report["rekeyed"], total - half - 1, "{report}");
    assert_eq!(report["already_under_key"], half);
    assert_eq!(report["pending"][0]["tenant"], lease_target.pk());
    assert_eq!(
        report["left_total"], 1,
        "only the leased record is left: {report}"
    );
    // The in-flight refresh's lease is intact, so its write will still land.
    let rec = repo.get(&lease_target).await.unwrap().unwrap();
    assert_eq!(rec.lease_owner.as_deref(), Some("refresh-in-flight"));
    assert_eq!(rec.data_key_id, old_key);

    // When the refresh finishes (lease released) the last rerun completes.
    repo.release_lease(&lease_target, "refresh-in-flight")
        .await
        .unwrap();
    let out = tokenkeep(&env, &["--json", "rekey", "--to-key", &new_key], None);
    assert_code(&out, 0);
    assert_eq!(json_out(&out)["rekeyed"], 1);

    // Then verify passes, no record names the old key, versions are unchanged
    // and tokens open through a store configured with the new key.
    let mut verify_env = env;
    verify_env[3] = ("TOKENKEEP_KMS_KEY_ID", new_key.as_str());
    let out = tokenkeep(&verify_env, &["verify"], None);
    assert_code(&out, 0);
    let all = scan_all(&*repo).await;
    assert_eq!(all.len(), total);
    assert!(
        all.iter().all(|r| r.data_key_id == new_key),
        "a record still names the old key"
    );
    assert!(all.iter().all(|r| r.version == 1));
    let config = emulator_config().await;
    let new_store = InstallationStore::new(
        repo.clone(),
        Arc::new(KmsKeyProvider::new(
            aws_sdk_kms::Client::new(&config),
            new_key.clone(),
        )),
        StoreConfig::new(APP_ID),
    );
    for n in [1, 2, REKEY_TENANTS / 2, REKEY_TENANTS] {
        let t = job_tenant(&new_store, n).await.unwrap();
        assert_eq!(
            new_store
                .bot_token(&t, &ctx())
                .await
                .unwrap()
                .expose_secret(),
            format!("xoxb-test-{n}")
        );
    }
    eprintln!("rekey test done in {:?}", started.elapsed());
}

async fn scan_all(repo: &dyn Repository) -> Vec<StoredRecord> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let (page, next) = repo.scan_records(after, 500).await.unwrap();
        out.extend(page);
        match next {
            Some(n) => after = Some(n),
            None => return out,
        }
    }
}

/// A Slack token in the clear. Not bare "xox": random base64 ciphertext
/// contains "xox" by chance, but never "xoxb-" (no '-' or '.' in its alphabet).
fn token_shaped(text: &str) -> bool {
    ["xoxb-", "xoxp-", "xoxe-", "xoxe.", "xoxa-", "xoxr-"]
        .iter()
        .any(|t| text.contains(t))
}
