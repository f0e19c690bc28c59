//! `tokenkeep migrate` on stores the real libraries wrote: slack_sdk from PyPI
//! (SQLite3, SQLAlchemy on SQLite, file, S3 on the emulator) and @slack/oauth
//! from npm (file), installed pinned by `infra/fixtures/install.sh`.
//!
//! The tokens come from the fake Slack (real code exchanges), so after the
//! import `tokenkeep dev` can answer events with them. Each store holds an
//! org-wide install, a workspace inside that org (long-lived tokens), and a
//! workspace with three installs by two users (history; rotating tokens).
//! What "latest" means is the library's business: the generators print what
//! each store's own `find_bot` / `find_installation` answers, and the import
//! must hold exactly those tokens.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::{Value, json};
use tokenkeep_installations::{
    EmbeddedRepository, InstallationStore, LifecycleEvent, LifecycleOutcome, ReadContext,
    StoreConfig, TenantKey,
};
use tokenkeep_slack_api::fake::{FakeSlack, FakeSlackConfig, InstallSpec};
use tokenkeep_slack_api::{SigningSecret, SlackOAuth, sign_request};

const BIN: &str = env!("CARGO_BIN_EXE_tokenkeep");
const SIGNING_SECRET: &str = "tokenkeep-migrate-test-signing-secret";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Installs the generators' libraries once per test binary (the script is
/// idempotent and locks against other binaries).
fn fixture_tools() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let out = Command::new("bash")
            .arg(root().join("infra/fixtures/install.sh"))
            .output()
            .expect("run install.sh");
        assert!(
            out.status.success(),
            "infra/fixtures/install.sh failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// One install as the generators take it: slack_sdk `Installation` kwargs.
struct Install {
    code: &'static str,
    spec: InstallSpec,
    installed_at: f64,
    custom_values: Value,
    /// Override the expiry the source recorded (cut-over warnings).
    bot_expires_in: Option<i64>,
}

/// The stores, written from one spec, and the secrets they hold.
struct Fixture {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    slack: FakeSlack,
    client_id: String,
    /// Every token / refresh token / webhook URL the stores hold.
    secrets: Vec<String>,
    /// Per store: "E|T" → {"bot": fingerprint, "users": {U: fingerprint}}.
    answers: Value,
    s3_bucket: Option<String>,
}

impl Fixture {
    fn location(&self, source: &str) -> String {
        let d = &self.dir;
        match source {
            "slack-sdk-sqlite3" => d.join("sqlite3.db").display().to_string(),
            "slack-sdk-sqlalchemy" => format!("sqlite:///{}", d.join("sqlalchemy.db").display()),
            "slack-sdk-file" => d.join("file").display().to_string(),
            "bolt-js-file" => d.join("bolt").display().to_string(),
            "slack-sdk-s3" => format!(
                "s3://{}",
                self.s3_bucket.as_deref().expect("fixture built with s3")
            ),
            other => panic!("unknown source {other}"),
        }
    }

    fn answers_for(&self, source: &str) -> &Value {
        let key = match source {
            "slack-sdk-sqlite3" => "sqlite3",
            "slack-sdk-sqlalchemy" => "sqlalchemy",
            "slack-sdk-file" => "file",
            "slack-sdk-s3" => "s3",
            "bolt-js-file" => "bolt_js",
            other => panic!("unknown source {other}"),
        };
        &self.answers[key]
    }

    fn env(&self, data_dir: &Path) -> Vec<(String, String)> {
        let mut env = vec![
            ("SLACK_CLIENT_ID".to_owned(), self.client_id.clone()),
            (
                "TOKENKEEP_DATA_DIR".to_owned(),
                data_dir.display().to_string(),
            ),
        ];
        for var in [
            "AWS_ENDPOINT_URL",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_REGION",
        ] {
            if let Ok(v) = std::env::var(var) {
                env.push((var.to_owned(), v));
            }
        }
        env
    }
}

fn standard_installs(org_expires_in: Option<i64>) -> Vec<Install> {
    let t = now() as f64;
    let workspace = |user: &str, webhook: bool| InstallSpec {
        user_id: user.into(),
        user_scopes: "search:read".into(),
        with_user_token: true,
        with_webhook: webhook,
        app_id: "AMIGRATE".into(),
        ..InstallSpec::workspace("T1")
    };
    vec![
        // Three installs of T1: U1, U1 again (reinstall), then U2.
        Install {
            code: "t1-u1-a",
            spec: workspace("U1", true),
            installed_at: t - 7200.25,
            custom_values: json!({}),
            bot_expires_in: None,
        },
        Install {
            code: "t1-u1-b",
            spec: workspace("U1", true),
            installed_at: t - 3600.5,
            custom_values: json!({}),
            bot_expires_in: None,
        },
        Install {
            code: "t1-u2",
            spec: workspace("U2", false),
            installed_at: t - 1800.75,
            custom_values: json!({"plan": "gold", "crm_id": 42}),
            bot_expires_in: None,
        },
        // An org-wide install (rotating).
        Install {
            code: "e1-org",
            spec: InstallSpec {
                user_id: "U9".into(),
                user_scopes: "search:read".into(),
                with_user_token: true,
                app_id: "AMIGRATE".into(),
                ..InstallSpec::org_wide("E1")
            },
            installed_at: t - 900.0,
            custom_values: json!({}),
            bot_expires_in: org_expires_in,
        },
        // A workspace inside that org, installed before rotation was on.
        Install {
            code: "e1-t3",
            spec: InstallSpec {
                team_id: Some("T3".into()),
                team_name: Some("Three".into()),
                enterprise_id: Some("E1".into()),
                enterprise_name: Some("Org E1".into()),
                user_id: "U3".into(),
                long_lived: true,
                app_id: "AMIGRATE".into(),
                ..InstallSpec::default()
            },
            installed_at: t - 300.0,
            custom_values: json!({}),
            bot_expires_in: None,
        },
    ]
}

async fn build_fixture(installs: Vec<Install>, with_s3: bool) -> Fixture {
    fixture_tools();
    let slack = FakeSlack::start(FakeSlackConfig::default()).await;
    let client = slack.client();
    let client_id = slack.client_config().client_id;
    let mut secrets = Vec::new();
    let mut kwargs = Vec::new();
    let at = now();
    for (n, install) in installs.into_iter().enumerate() {
        slack.add_install(install.code, install.spec.clone());
        let r = client
            .exchange_code(install.code, None)
            .await
            .expect("exchange with the fake");
        let bot_token = r
            .access_token
            .as_ref()
            .map(|t| t.expose_secret().to_owned());
        let bot_refresh = r
            .refresh_token
            .as_ref()
            .map(|t| t.expose_secret().to_owned());
        let user = r.authed_user.as_ref();
        let user_token = user
            .and_then(|u| u.access_token.as_ref())
            .map(|t| t.expose_secret().to_owned());
        let user_refresh = user
            .and_then(|u| u.refresh_token.as_ref())
            .map(|t| t.expose_secret().to_owned());
        let hook = r.incoming_webhook.as_ref();
        secrets.extend(
            bot_token
                .iter()
                .chain(&bot_refresh)
                .chain(&user_token)
                .chain(&user_refresh)
                .cloned(),
        );
        secrets.extend(hook.map(|h| h.url.expose_secret().to_owned()));
        kwargs.push(json!({
            "app_id": r.app_id,
            "enterprise_id": r.enterprise.as_ref().map(|e| e.id.clone()),
            "enterprise_name": r.enterprise.as_ref().and_then(|e| e.name.clone()),
            "team_id": r.team.as_ref().map(|t| t.id.clone()),
            "team_name": r.team.as_ref().and_then(|t| t.name.clone()),
            "bot_token": bot_token,
            "bot_id": format!("B{n}MIGRATE"),
            "bot_user_id": r.bot_user_id,
            "bot_scopes": r.scope,
            "bot_refresh_token": bot_refresh,
            "bot_token_expires_at": install.bot_expires_in.or(r.expires_in).filter(|_| bot_refresh.is_some()).map(|s| at + s),
            "user_id": user.map(|u| u.id.clone()),
            "user_token": user_token,
            "user_scopes": user.and_then(|u| u.scope.clone()),
            "user_refresh_token": user_refresh,
            "user_token_expires_at": user.and_then(|u| u.expires_in).filter(|_| user_refresh.is_some()).map(|s| at + s),
            "incoming_webhook_url": hook.map(|h| h.url.expose_secret().to_owned()),
            "incoming_webhook_channel": hook.and_then(|h| h.channel.clone()),
            "incoming_webhook_channel_id": hook.and_then(|h| h.channel_id.clone()),
            "incoming_webhook_configuration_url": hook.and_then(|h| h.configuration_url.clone()),
            "is_enterprise_install": r.is_enterprise_install,
            "token_type": r.token_type,
            "installed_at": install.installed_at,
            "custom_values": install.custom_values,
        }));
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let s3_bucket =
        with_s3.then(|| format!("tk-migrate-{}-{:08x}", std::process::id(), rand_u32()));
    let spec = json!({
        "client_id": client_id,
        "installations": kwargs,
        "out": {
            "sqlite3": dir.join("sqlite3.db"),
            "sqlalchemy": dir.join("sqlalchemy.db"),
            "file": dir.join("file"),
            "bolt_js": dir.join("bolt"),
            "s3_bucket": s3_bucket,
        },
    });
    let spec_path = dir.join("spec.json");
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let py = Command::new(root().join(".tools/fixtures-venv/bin/python"))
        .arg(root().join("infra/fixtures/slack_sdk_stores.py"))
        .arg(&spec_path)
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "slack_sdk generator failed:\n{}",
        String::from_utf8_lossy(&py.stderr)
    );
    let js = Command::new("node")
        .arg(root().join("infra/fixtures/bolt_js_store.js"))
        .arg(&spec_path)
        .env(
            "NODE_PATH",
            root().join(".tools/fixtures-node/node_modules"),
        )
        .output()
        .unwrap();
    assert!(
        js.status.success(),
        "@slack/oauth generator failed:\n{}",
        String::from_utf8_lossy(&js.stderr)
    );
    let mut answers: Value = serde_json::from_slice(&py.stdout).unwrap();
    let bolt: Value = serde_json::from_slice(&js.stdout).unwrap();
    answers["bolt_js"] = bolt["bolt_js"].clone();
    std::fs::remove_file(&spec_path).unwrap();
    Fixture {
        _dir: tmp,
        dir,
        slack,
        client_id,
        secrets,
        answers,
        s3_bucket,
    }
}

fn rand_u32() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
}

fn tokenkeep(env: &[(String, String)], args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .output()
        .expect("run tokenkeep")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn json_out(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", text(out)))
}

fn assert_code(out: &Output, code: i32) {
    assert_eq!(out.status.code(), Some(code), "{}", text(out));
}

/// No secret of the fixture, anywhere in the command's output.
fn assert_no_secret(fx: &Fixture, out: &Output) {
    let all = text(out);
    for s in &fx.secrets {
        assert!(!all.contains(s.as_str()), "output shows a secret:\n{all}");
    }
    assert!(
        !TOKEN_SHAPED.iter().any(|t| all.contains(t)),
        "output shows something token-like:\n{all}"
    );
}

fn migrate(fx: &Fixture, data: &Path, source: &str, extra: &[&str]) -> Output {
    let location = fx.location(source);
    let mut args = vec!["--json", "migrate", "--from", source, location.as_str()];
    args.extend_from_slice(extra);
    let out = tokenkeep(&fx.env(data), &args);
    assert_no_secret(fx, &out);
    out
}

fn count(report: &Value, outcome: &str) -> u64 {
    report["counts"][outcome].as_u64().unwrap_or(0)
}

/// The embedded store tokenkeep wrote, opened in-process to read tokens the
/// way the functions do (audited reads through a system-job tenant).
fn open_store(fx: &Fixture, data: &Path) -> InstallationStore {
    let repo = EmbeddedRepository::open(data.join("store.db")).unwrap();
    let keys = tokenkeep_envelope::LocalKeyProvider::open(data.join("keys"), "default").unwrap();
    InstallationStore::new(
        Arc::new(repo),
        Arc::new(keys),
        StoreConfig::new(fx.client_id.clone()),
    )
}

/// Every tenant and user of the library's answers holds exactly the token the
/// library answers with.
async fn assert_tokens_match(fx: &Fixture, data: &Path, source: &str) {
    let store = open_store(fx, data);
    let ctx = ReadContext::new("migrate-test", "check", "compare with the source library");
    let answers = fx.answers_for(source).as_object().unwrap().clone();
    assert_eq!(
        answers.len(),
        3,
        "{source}: three tenants in the fixture: {answers:?}"
    );
    for (key, want) in answers {
        let (e, t) = key.split_once('|').unwrap();
        let opt = |s: &str| (s != "-").then(|| s.to_owned());
        let tenant = TenantKey::new(opt(e).as_deref(), opt(t).as_deref()).unwrap();
        let verified = store
            .tenant_for_job(&tenant)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{source}: {tenant} not imported"));
        let bot = store.bot_token(&verified, &ctx).await.unwrap();
        assert_eq!(
            Some(bot.fingerprint().as_str()),
            want["bot"].as_str(),
            "{source}: bot token of {tenant}"
        );
        for (user, fp) in want["users"].as_object().unwrap() {
            match fp.as_str() {
                Some(fp) => {
                    let token = store.user_token(&verified, user, &ctx).await.unwrap();
                    assert_eq!(
                        token.fingerprint(),
                        fp,
                        "{source}: user token of {user} in {tenant}"
                    );
                }
                None => assert!(
                    store.user_token(&verified, user, &ctx).await.is_err(),
                    "{source}: {user} has no user token"
                ),
            }
        }
    }
}

/// The store's bytes on disk hold no secret of the fixture.
fn assert_store_has_no_plaintext(fx: &Fixture, data: &Path) {
    let mut raw = Vec::new();
    for entry in std::fs::read_dir(data).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file()
            && path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("store")
        {
            raw.extend(std::fs::read(&path).unwrap());
        }
    }
    assert!(!raw.is_empty());
    for s in &fx.secrets {
        assert!(
            !contains(&raw, s.as_bytes()),
            "the store holds a plaintext secret"
        );
    }
    for t in TOKEN_SHAPED {
        assert!(
            !contains(&raw, t.as_bytes()),
            "the store holds something token-like in plaintext"
        );
    }
}

/// Token-shaped, not bare "xox": base64 ciphertext holds "xox" by chance, never "xoxb-".
const TOKEN_SHAPED: [&str; 5] = ["xoxb-", "xoxp-", "xoxe-", "xoxe.", "hooks.slack.com"];

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

const FILE_SOURCES: [&str; 4] = [
    "slack-sdk-sqlite3",
    "slack-sdk-sqlalchemy",
    "slack-sdk-file",
    "bolt-js-file",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_source_imports_what_its_library_answers_once_and_sealed() {
    let fx = build_fixture(standard_installs(None), true).await;
    for source in FILE_SOURCES.iter().copied().chain(["slack-sdk-s3"]) {
        let data = fx.dir.join(format!("tk-{source}"));

        // Given a dry run: it names every record and writes nothing.
        let out = migrate(&fx, &data, source, &[]);
        assert_code(&out, 0);
        let plan = json_out(&out);
        // T1 bot + U1 + U2, E1 bot + U9, E1/T3 bot.
        assert_eq!(count(&plan, "created"), 6, "{source}: {plan}");
        assert!(
            plan["skipped"].as_array().unwrap().is_empty(),
            "{source}: {plan}"
        );
        assert!(
            !data.join("store.db").exists(),
            "{source}: a dry run creates no store"
        );

        // When applied.
        let out = migrate(&fx, &data, source, &["--apply"]);
        assert_code(&out, 0);
        let report = json_out(&out);
        assert_eq!(count(&report, "created"), 6, "{source}: {report}");

        // Then every tenant and user holds what the library itself answers...
        assert_tokens_match(&fx, &data, source).await;
        // ...sealed: no secret in the store's bytes...
        assert_store_has_no_plaintext(&fx, &data);
        // ...each write audited...
        let env = fx.env(&data);
        let audit = json_out(&tokenkeep(&env, &["--json", "audit", "--limit", "100"]));
        let imports = audit
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["actor"] == "tokenkeep migrate")
            .count();
        assert_eq!(
            imports, 6,
            "{source}: one audit record per imported record: {audit}"
        );
        // ...with rotation, the webhook and the custom values kept.
        let list = json_out(&tokenkeep(&env, &["--json", "list"]));
        let records = list["records"].as_array().unwrap();
        let t1_bot = records
            .iter()
            .find(|r| r["tenant"] == "T#-#T1" && r["record"] == "bot")
            .unwrap();
        assert_eq!(t1_bot["rotating"], true, "{source}: {t1_bot}");
        let sealed: Vec<&str> = t1_bot["sealed_fields"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        if source != "slack-sdk-sqlite3" && source != "slack-sdk-sqlalchemy" {
            // The SQL stores keep no custom values; the others do.
            assert!(sealed.contains(&"source_metadata"), "{source}: {sealed:?}");
        }
        let org = records
            .iter()
            .find(|r| r["tenant"] == "T#E1#-" && r["record"] == "bot")
            .unwrap();
        assert_eq!(org["is_enterprise_install"], true);
        let long_lived = records
            .iter()
            .find(|r| r["tenant"] == "T#E1#T3" && r["record"] == "bot")
            .unwrap();
        assert_eq!(long_lived["rotating"], false);

        // And a second run writes nothing.
        let out = migrate(&fx, &data, source, &["--apply"]);
        assert_code(&out, 0);
        let again = json_out(&out);
        assert_eq!(count(&again, "unchanged"), 6, "{source}: {again}");
        assert_eq!(
            count(&again, "created") + count(&again, "replaced"),
            0,
            "{source}: {again}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_run_resumes_and_revoked_users_and_purged_tenants_stay_out() {
    let fx = build_fixture(standard_installs(None), false).await;
    let data = fx.dir.join("tk");
    let env = fx.env(&data);

    // Given a run stopped after two records (--limit stands in for a kill).
    let out = migrate(
        &fx,
        &data,
        "slack-sdk-sqlite3",
        &["--apply", "--limit", "2"],
    );
    assert_code(&out, 3);
    assert_eq!(count(&json_out(&out), "created"), 2);

    // When it is run again, it writes the rest and only the rest.
    let out = migrate(&fx, &data, "slack-sdk-sqlite3", &["--apply"]);
    assert_code(&out, 0);
    let report = json_out(&out);
    assert_eq!(
        (count(&report, "unchanged"), count(&report, "created")),
        (2, 4),
        "{report}"
    );
    assert_tokens_match(&fx, &data, "slack-sdk-sqlite3").await;

    // Then a user whose token Slack revoked since (tokens_revoked) is never
    // brought back by a rerun, from this store or another.
    let store = open_store(&fx, &data);
    let t1 = store
        .tenant_for_job(&TenantKey::new(None, Some("T1")).unwrap())
        .await
        .unwrap()
        .unwrap();
    let event = LifecycleEvent {
        event_id: "EvMIGRATEREVOKE",
        event_time: now(),
    };
    assert_eq!(
        store
            .apply_tokens_revoked(&t1, &event, &["U2".to_owned()], false)
            .await
            .unwrap(),
        LifecycleOutcome::Applied { records: 1 }
    );
    drop(store);
    for source in ["slack-sdk-sqlite3", "bolt-js-file"] {
        let report = json_out(&migrate(&fx, &data, source, &["--apply"]));
        let revoked: Vec<(&str, &str)> = report["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["outcome"] == "revoked")
            .filter_map(|r| Some((r["tenant"].as_str()?, r["record"].as_str()?)))
            .collect();
        assert_eq!(revoked, [("T#-#T1", "USER#U2")], "{source}: {report}");
        assert_eq!(count(&report, "revoked"), 1, "{source}: {report}");
    }

    // And an org uninstalled since (purged) is never brought back by a rerun,
    // from this store or another.
    assert_code(
        &tokenkeep(&env, &["purge", "--enterprise", "E1", "--yes"]),
        0,
    );
    for source in ["slack-sdk-sqlite3", "bolt-js-file"] {
        let report = json_out(&migrate(&fx, &data, source, &["--apply"]));
        let refused: Vec<&str> = report["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["outcome"] == "refused")
            .filter_map(|r| r["tenant"].as_str())
            .collect();
        assert_eq!(refused, ["T#E1#-", "T#E1#-"], "{source}: {report}");
    }
    let list = json_out(&tokenkeep(&env, &["--json", "list"]));
    assert!(
        list["records"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["tenant"] != "T#E1#-"),
        "{list}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_records_are_named_and_skipped_and_the_rest_imports() {
    let fx = build_fixture(standard_installs(None), false).await;

    // Given a bot row without its token and a table of an unknown schema...
    let db = fx.dir.join("sqlite3.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "INSERT INTO slack_bots (client_id, app_id, enterprise_id, team_id, bot_token, bot_id, bot_user_id, bot_scopes)
         VALUES (?1, 'AMIGRATE', '', 'T7', '', 'B7', 'U7BOT', 'chat:write')",
        [&fx.client_id],
    )
    .unwrap();
    drop(conn);
    let data = fx.dir.join("tk-sql");
    let out = migrate(&fx, &data, "slack-sdk-sqlite3", &["--apply"]);
    assert_code(&out, 0);
    let report = json_out(&out);
    // ...then that row is reported by name, with what it holds, and nothing of it is written.
    let skipped = report["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{report}");
    assert_eq!(skipped[0]["from"], "slack_bots id 6");
    assert_eq!(
        skipped[0]["reason"],
        "bot installation without its bot token"
    );
    assert!(
        skipped[0]["holds"].as_str().unwrap().contains("team T7"),
        "{report}"
    );
    assert_eq!(
        count(&report, "created"),
        6,
        "the good records still import: {report}"
    );
    let store = open_store(&fx, &data);
    assert!(
        store
            .tenant_for_job(&TenantKey::new(None, Some("T7")).unwrap())
            .await
            .unwrap()
            .is_none()
    );

    // Given a table whose schema this version doesn't know: skipped whole, by name.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "ALTER TABLE slack_installations ADD COLUMN installation_v9_field TEXT",
        [],
    )
    .unwrap();
    drop(conn);
    let report = json_out(&migrate(
        &fx,
        &fx.dir.join("tk-sql2"),
        "slack-sdk-sqlite3",
        &[],
    ));
    let skipped = report["skipped"].as_array().unwrap();
    assert!(
        skipped
            .iter()
            .any(|s| s["from"] == "table slack_installations"
                && s["reason"]
                    .as_str()
                    .unwrap()
                    .contains("unknown schema version (unknown columns installation_v9_field)")),
        "{report}"
    );

    // Given file-store objects of an unknown schema and one that isn't JSON.
    let folder = fx.dir.join("file").join(&fx.client_id).join("none-T1");
    let latest = folder.join("installer-U2-latest");
    let mut object: Value = serde_json::from_slice(&std::fs::read(&latest).unwrap()).unwrap();
    object["schema_version"] = json!(9);
    std::fs::write(&latest, object.to_string()).unwrap();
    let bolt_latest = fx
        .dir
        .join("bolt")
        .join(format!("{}T1", fx.client_id))
        .join("user-U2-latest");
    std::fs::write(&bolt_latest, b"{truncated").unwrap();
    for (source, from, reason) in [
        (
            "slack-sdk-file",
            "none-T1/installer-U2-latest",
            "unknown schema version (unknown keys schema_version)",
        ),
        (
            "bolt-js-file",
            "user-U2-latest",
            "not JSON: unreadable installation file",
        ),
    ] {
        let data = fx.dir.join(format!("tk-{source}"));
        let out = migrate(&fx, &data, source, &["--apply"]);
        assert_code(&out, 0);
        let report = json_out(&out);
        let skipped = report["skipped"].as_array().unwrap();
        assert!(
            skipped
                .iter()
                .any(|s| s["from"].as_str().unwrap().ends_with(from) && s["reason"] == reason),
            "{source}: {report}"
        );
        // U2's grant is not imported from anywhere else; the rest is.
        assert_eq!(count(&report, "created"), 5, "{source}: {report}");
    }

    // Given an unreadable source: the command says which and writes nothing.
    let garbage = fx.dir.join("not-a-db.db");
    std::fs::write(
        &garbage,
        b"this is not an sqlite database, not even close....",
    )
    .unwrap();
    let data = fx.dir.join("tk-garbage");
    let out = tokenkeep(
        &fx.env(&data),
        &[
            "migrate",
            "--from",
            "slack-sdk-sqlite3",
            garbage.to_str().unwrap(),
            "--apply",
        ],
    );
    assert_code(&out, 1);
    assert!(text(&out).contains("not-a-db.db"), "{}", text(&out));
    assert!(!data.join("store.db").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_tokens_about_to_expire_are_flagged_for_the_cut_over() {
    // Given an org whose rotating token the source recorded as expiring in 30 minutes.
    let fx = build_fixture(standard_installs(Some(1800)), false).await;
    let data = fx.dir.join("tk");
    let report = json_out(&migrate(&fx, &data, "slack-sdk-sqlite3", &[]));
    let warnings: Vec<&str> = report["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    // Then the dry run warns about that record, and only that one.
    assert_eq!(warnings.len(), 1, "{report}");
    assert!(
        warnings[0].starts_with("T#E1#- bot: its access token expires within the refresh window"),
        "{report}"
    );
    // A narrower window (the operator froze the refresher long ago) doesn't flag it.
    let mut env = fx.env(&data);
    env.push(("TOKENKEEP_REFRESH_WINDOW_MINUTES".into(), "10".into()));
    let location = fx.location("slack-sdk-sqlite3");
    let out = tokenkeep(
        &env,
        &[
            "--json",
            "migrate",
            "--from",
            "slack-sdk-sqlite3",
            &location,
        ],
    );
    assert!(json_out(&out)["warnings"].as_array().unwrap().is_empty());
}

/// Reads every file under `dir` (the file stores), or every object in the bucket.
fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.extend(std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

async fn bucket_bytes(bucket: &str) -> Vec<u8> {
    let aws = tokenkeep_installations::testing::emulator_config().await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&aws)
            .force_path_style(true)
            .build(),
    );
    let mut out = Vec::new();
    let list = s3.list_objects_v2().bucket(bucket).send().await.unwrap();
    for o in list.contents() {
        let obj = s3
            .get_object()
            .bucket(bucket)
            .key(o.key().unwrap())
            .send()
            .await
            .unwrap();
        out.extend(obj.body.collect().await.unwrap().into_bytes());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wipe_source_leaves_no_token_in_the_source() {
    let fx = build_fixture(standard_installs(None), true).await;
    let raw = |source: &str| -> Vec<u8> {
        match source {
            "slack-sdk-sqlite3" => std::fs::read(fx.dir.join("sqlite3.db")).unwrap(),
            "slack-sdk-sqlalchemy" => std::fs::read(fx.dir.join("sqlalchemy.db")).unwrap(),
            "slack-sdk-file" => all_bytes(&fx.dir.join("file")),
            // Base `bolt/{client id}`: workspace folders `bolt/{client id}T1` sit beside it, inside `bolt`.
            _ => all_bytes(&fx.dir.join("bolt")),
        }
    };
    let secret_in = |bytes: &[u8]| fx.secrets.iter().any(|s| contains(bytes, s.as_bytes()));
    for source in FILE_SOURCES.iter().copied().chain(["slack-sdk-s3"]) {
        let before = if source == "slack-sdk-s3" {
            bucket_bytes(fx.s3_bucket.as_deref().unwrap()).await
        } else {
            raw(source)
        };
        assert!(
            secret_in(&before),
            "{source}: the fixture holds tokens before"
        );
        let data = fx.dir.join(format!("tk-{source}"));

        // When imported with --wipe-source...
        let out = migrate(&fx, &data, source, &["--apply", "--wipe-source"]);
        assert_code(&out, 0);
        let report = json_out(&out);
        assert_eq!(report["wipe"]["tenants"], 3, "{source}: {report}");

        // ...then no token is left in the source's bytes, history included...
        if source == "slack-sdk-s3" {
            assert!(
                !secret_in(&bucket_bytes(fx.s3_bucket.as_deref().unwrap()).await),
                "{source}: a token is left"
            );
        } else {
            assert!(!secret_in(&raw(source)), "{source}: a token is left");
        }
        // ...tokenkeep still serves them...
        assert_tokens_match(&fx, &data, source).await;
        // ...and a rerun says why there is nothing left to import.
        let again = json_out(&migrate(&fx, &data, source, &["--apply"]));
        assert_eq!(
            count(&again, "created") + count(&again, "replaced"),
            0,
            "{source}: {again}"
        );
        assert!(
            again["skipped"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["reason"]
                    .as_str()
                    .unwrap()
                    .contains("wiped by an earlier")),
            "{source}: {again}"
        );
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_serves_events_for_migrated_tenants_with_the_imported_tokens() {
    let fx = build_fixture(standard_installs(None), false).await;
    let data = fx.dir.join("tk");
    assert_code(
        &migrate(&fx, &data, "slack-sdk-sqlalchemy", &["--apply"]),
        0,
    );
    let answers = fx.answers_for("slack-sdk-sqlalchemy").clone();
    let cfg = fx.slack.client_config();
    let port = free_port();

    // Given `tokenkeep dev` on the migrated store...
    let mut child = std::process::Command::new(BIN)
        .args(["dev", "--listen", &format!("127.0.0.1:{port}")])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SLACK_CLIENT_ID", &cfg.client_id)
        .env("SLACK_CLIENT_SECRET", cfg.client_secret.expose_secret())
        .env("SLACK_SIGNING_SECRET", SIGNING_SECRET)
        .env("SLACK_API_URL", fx.slack.api_url())
        .env("TOKENKEEP_DATA_DIR", &data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if http
            .get(format!("{base}/slack/install"))
            .send()
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // ...when each migrated tenant sends a signed app_mention...
    let tenants: BTreeMap<&str, (Value, &str)> = BTreeMap::from([
        (
            "T1",
            (
                json!({"team_id": "T1", "is_enterprise_install": false}),
                "-|T1",
            ),
        ),
        (
            "E1",
            (
                json!({"enterprise_id": "E1", "team_id": null, "is_enterprise_install": true}),
                "E1|-",
            ),
        ),
        (
            "T3",
            (
                json!({"enterprise_id": "E1", "team_id": "T3", "is_enterprise_install": false}),
                "E1|T3",
            ),
        ),
    ]);
    for (n, (install, (auth, _))) in tenants.iter().enumerate() {
        let ts = now();
        let body = json!({
            "type": "event_callback", "api_app_id": "AMIGRATE", "event_id": format!("EvMIG{n}"), "event_time": ts,
            "team_id": auth["team_id"].as_str().unwrap_or("T1"),
            "authorizations": [auth],
            "event": {"type": "app_mention", "user": "U1", "text": "<@UBOT> hi", "channel": format!("C{install}"), "ts": "1.000100"}
        })
        .to_string();
        let signature = sign_request(&SigningSecret::new(SIGNING_SECRET), ts, body.as_bytes());
        let res = http
            .post(format!("{base}/slack/events"))
            .header("content-type", "application/json")
            .header("x-slack-request-timestamp", ts.to_string())
            .header("x-slack-signature", signature)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{install}");
    }

    // ...then each is answered through Slack with the bot token its source held.
    let mut seen = BTreeMap::new();
    for _ in 0..50 {
        for p in fx.slack.posts() {
            seen.insert(p.channel.clone(), p.token_fingerprint.clone());
        }
        if seen.len() == tenants.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    for (install, (_, key)) in &tenants {
        let want = answers[*key]["bot"].as_str().unwrap();
        assert_eq!(
            seen.get(&format!("C{install}")).map(String::as_str),
            Some(want),
            "{install}: {seen:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lived_tokens_move_onto_rotation_when_asked() {
    let fx = build_fixture(standard_installs(None), false).await;
    let data = fx.dir.join("tk");
    let cfg = fx.slack.client_config();
    let mut env = fx.env(&data);
    env.push((
        "SLACK_CLIENT_SECRET".into(),
        cfg.client_secret.expose_secret().to_owned(),
    ));
    env.push(("SLACK_API_URL".into(), fx.slack.api_url()));
    let location = fx.location("bolt-js-file");
    let args = [
        "--json",
        "migrate",
        "--from",
        "bolt-js-file",
        location.as_str(),
        "--apply",
        "--exchange-long-lived",
    ];

    // Given the import of a store holding one long-lived token (E1/T3's bot)...
    let store = open_store_after(&fx, &data, &env, &args);
    let tenant = store
        .tenant_for_job(&TenantKey::new(Some("E1"), Some("T3")).unwrap())
        .await
        .unwrap()
        .unwrap();
    let ctx = ReadContext::new("migrate-test", "check", "after the exchange");
    let token = store.bot_token(&tenant, &ctx).await.unwrap();

    // ...then that token was exchanged: the stored one is a rotating token
    // Slack accepts, the long-lived one it replaced no longer works...
    let want = fx.answers_for("bolt-js-file")["E1|T3"]["bot"]
        .as_str()
        .unwrap();
    assert_ne!(
        token.fingerprint(),
        want,
        "the long-lived token was replaced"
    );
    assert!(fx.slack.is_token_active(&token));
    assert!(token.expose_secret().starts_with("xoxe."));
    assert_eq!(
        fx.slack.calls("oauth.v2.exchange"),
        1,
        "only the long-lived token is exchanged"
    );
    let list = json_out(&tokenkeep(&env, &["--json", "list"]));
    let rec = list["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["tenant"] == "T#E1#T3")
        .unwrap()
        .clone();
    assert_eq!(rec["rotating"], true, "{rec}");
    // ...audited as such.
    let audit = json_out(&tokenkeep(
        &env,
        &["--json", "audit", "--team", "T3", "--enterprise", "E1"],
    ));
    assert!(
        audit.as_array().unwrap().iter().any(|a| a["reason"]
            .as_str()
            .unwrap()
            .ends_with("exchanged for a rotating token")),
        "{audit}"
    );

    // And a rerun exchanges nothing more.
    let out = tokenkeep(&env, &args);
    assert_code(&out, 0);
    assert_no_secret(&fx, &out);
    assert_eq!(
        json_out(&out)["exchange"]["exchanged"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(fx.slack.calls("oauth.v2.exchange"), 1);
}

fn open_store_after(
    fx: &Fixture,
    data: &Path,
    env: &[(String, String)],
    args: &[&str],
) -> InstallationStore {
    let out = tokenkeep(env, args);
    assert_code(&out, 0);
    assert_no_secret(fx, &out);
    let report = json_out(&out);
    assert_eq!(
        report["exchange"]["exchanged"],
        json!(["T#E1#T3 bot"]),
        "{report}"
    );
    open_store(fx, data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrating_into_dynamodb_leaves_no_plaintext_in_the_table() {
    let fx = build_fixture(standard_installs(None), false).await;
    let (repo, dynamo, table, audit) =
        tokenkeep_installations::testing::emulator_repository().await;
    let (kms, key) = tokenkeep_installations::testing::emulator_kms_key().await;
    let mut env = fx.env(&fx.dir.join("unused"));
    env.extend([
        ("TOKENKEEP_STORE".to_owned(), "dynamodb".to_owned()),
        ("TOKENKEEP_TABLE".to_owned(), table.clone()),
        ("TOKENKEEP_AUDIT_TABLE".to_owned(), audit),
        ("TOKENKEEP_KMS_KEY_ID".to_owned(), key.clone()),
    ]);
    let location = fx.location("slack-sdk-file");

    // Given the file store migrated into DynamoDB + KMS...
    let out = tokenkeep(
        &env,
        &[
            "--json",
            "migrate",
            "--from",
            "slack-sdk-file",
            &location,
            "--apply",
        ],
    );
    assert_code(&out, 0);
    assert_no_secret(&fx, &out);
    assert_eq!(count(&json_out(&out), "created"), 6);

    // ...then a raw scan of the table finds no secret, only ciphertext...
    let items = dynamo.scan().table_name(&table).send().await.unwrap();
    let dump = format!("{:?}", items.items());
    assert!(items.count() >= 6, "{dump}");
    for s in &fx.secrets {
        assert!(
            !dump.contains(s.as_str()),
            "the table holds a plaintext secret"
        );
    }
    assert!(
        !TOKEN_SHAPED.iter().any(|t| dump.contains(t)),
        "the table holds something token-like"
    );
    assert!(
        !dump.contains("gold"),
        "custom values are sealed, not plaintext attributes"
    );

    // ...and the records open under KMS with the library's tokens.
    let store = InstallationStore::new(
        Arc::new(repo),
        Arc::new(tokenkeep_envelope::KmsKeyProvider::new(kms, key)),
        StoreConfig::new(fx.client_id.clone()),
    );
    let ctx = ReadContext::new("migrate-test", "check", "dynamodb import");
    let tenant = store
        .tenant_for_job(&TenantKey::new(None, Some("T1")).unwrap())
        .await
        .unwrap()
        .unwrap();
    let bot = store.bot_token(&tenant, &ctx).await.unwrap();
    assert_eq!(
        Some(bot.fingerprint().as_str()),
        fx.answers_for("slack-sdk-file")["-|T1"]["bot"].as_str()
    );
}
