//! template.yaml and the code must define the same tables: the test creates
//! the tables with `create_tables` (the code's definition) on the emulator,
//! describes them, and compares keys, attribute types, the expiry index and TTL
//! with what the SAM template declares.

use std::collections::BTreeSet;

use serde_yaml::Value;
use tokenkeep_installations::schema;
use tokenkeep_installations::testing::emulator_repository;

fn template() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../template.yaml");
    serde_yaml::from_str(&std::fs::read_to_string(path).expect("read template.yaml"))
        .expect("parse template.yaml")
}

fn str_of(v: &Value) -> String {
    v.as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("expected a string, got {v:?}"))
}

type Keys = Vec<(String, String)>;

fn key_schema(v: &Value) -> Keys {
    v.as_sequence()
        .unwrap()
        .iter()
        .map(|k| (str_of(&k["AttributeName"]), str_of(&k["KeyType"])))
        .collect()
}

struct Declared {
    keys: Keys,
    attrs: BTreeSet<(String, String)>,
    gsis: Vec<(String, Keys, String)>,
    ttl: String,
}

fn declared(resource: &str) -> Declared {
    let t = template();
    let props = &t["Resources"][resource]["Properties"];
    assert!(!props.is_null(), "template.yaml has no {resource}");
    let attrs = props["AttributeDefinitions"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| (str_of(&a["AttributeName"]), str_of(&a["AttributeType"])))
        .collect();
    let gsis = props["GlobalSecondaryIndexes"]
        .as_sequence()
        .map(|s| {
            s.iter()
                .map(|g| {
                    (
                        str_of(&g["IndexName"]),
                        key_schema(&g["KeySchema"]),
                        str_of(&g["Projection"]["ProjectionType"]),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        props["TimeToLiveSpecification"]["Enabled"].as_bool(),
        Some(true),
        "{resource}: TTL enabled"
    );
    Declared {
        keys: key_schema(&props["KeySchema"]),
        attrs,
        gsis,
        ttl: str_of(&props["TimeToLiveSpecification"]["AttributeName"]),
    }
}

async fn created(client: &aws_sdk_dynamodb::Client, table: &str) -> Declared {
    let desc = client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .unwrap();
    let t = desc.table().unwrap();
    let keys = |ks: &[aws_sdk_dynamodb::types::KeySchemaElement]| -> Keys {
        ks.iter()
            .map(|k| {
                (
                    k.attribute_name().to_owned(),
                    k.key_type().as_str().to_owned(),
                )
            })
            .collect()
    };
    let attrs = t
        .attribute_definitions()
        .iter()
        .map(|a| {
            (
                a.attribute_name().to_owned(),
                a.attribute_type().as_str().to_owned(),
            )
        })
        .collect();
    let gsis = t
        .global_secondary_indexes()
        .iter()
        .map(|g| {
            (
                g.index_name().unwrap().to_owned(),
                keys(g.key_schema()),
                g.projection()
                    .and_then(|p| p.projection_type())
                    .unwrap()
                    .as_str()
                    .to_owned(),
            )
        })
        .collect();
    let ttl = client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .unwrap();
    let ttl = ttl
        .time_to_live_description()
        .and_then(|d| d.attribute_name())
        .unwrap_or_default()
        .to_owned();
    Declared {
        keys: keys(t.key_schema()),
        attrs,
        gsis,
        ttl,
    }
}

fn assert_same(what: &str, template: Declared, code: Declared) {
    assert_eq!(template.keys, code.keys, "{what}: key schema");
    assert_eq!(template.attrs, code.attrs, "{what}: attribute definitions");
    assert_eq!(template.gsis, code.gsis, "{what}: global secondary indexes");
    assert_eq!(template.ttl, code.ttl, "{what}: TTL attribute");
}

#[tokio::test]
async fn template_tables_match_the_code() {
    let (_, client, table, audit) = emulator_repository().await;
    let installations = declared("InstallationsTable");
    assert_eq!(installations.gsis[0].0, schema::GSI_BY_EXPIRY);
    assert_eq!(installations.ttl, schema::TTL_ATTRIBUTE);
    assert_same(
        "installations table",
        installations,
        created(&client, &table).await,
    );
    assert_same(
        "audit table",
        declared("AuditTable"),
        created(&client, &audit).await,
    );
}
