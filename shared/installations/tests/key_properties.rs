//! Record keys print and parse without collisions. `src/tenant.rs` proves the
//! partition key injective over tenants; this extends it to whole record keys
//! (tenant + bot or user), where user ids and tenant ids share one alphabet,
//! and to arbitrary stored strings (a key read back from the table must print
//! to exactly the strings it was read from, so no two items share a key).

use proptest::prelude::*;
use tokenkeep_installations::{RecordKey, RecordKind, TenantKey};

/// Ids from a small alphabet so that collisions would be likely if possible.
fn id() -> impl Strategy<Value = String> {
    prop_oneof![
        "[TEU][0-9]{0,2}",
        "[A-Z0-9]{1,3}",
        Just("BOT".to_owned()),
        Just("USER".to_owned())
    ]
}

fn tenant() -> impl Strategy<Value = TenantKey> {
    (proptest::option::of(id()), proptest::option::of(id()))
        .prop_filter_map("a tenant needs an id", |(e, t)| {
            TenantKey::new(e.as_deref(), t.as_deref()).ok()
        })
}

fn record_key() -> impl Strategy<Value = RecordKey> {
    (tenant(), proptest::option::of(id())).prop_map(|(t, user)| match user {
        Some(u) => RecordKey::user(t, &u).unwrap(),
        None => RecordKey::bot(t),
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn distinct_record_keys_never_share_pk_and_sk(a in record_key(), b in record_key()) {
        let same_strings = a.pk() == b.pk() && a.sk() == b.sk();
        prop_assert_eq!(same_strings, a == b, "{:?} vs {:?}", a, b);
    }

    #[test]
    fn record_keys_round_trip(k in record_key()) {
        prop_assert_eq!(RecordKey::from_keys(&k.pk(), &k.sk()).unwrap(), k);
    }

    /// A user whose id equals the tenant's id, or "BOT", is still a user record.
    #[test]
    fn a_user_id_never_reads_as_the_bot_or_a_tenant(t in tenant(), u in id()) {
        let user = RecordKey::user(t.clone(), &u).unwrap();
        let bot = RecordKey::bot(t.clone());
        prop_assert_ne!(user.sk(), bot.sk());
        let parsed = RecordKey::from_keys(&user.pk(), &user.sk()).unwrap();
        prop_assert_eq!(parsed.kind, RecordKind::User(u));
        prop_assert_eq!(parsed.tenant, t);
    }

    /// Parsing is the inverse of printing on everything it accepts, so two
    /// different stored (pk, sk) pairs can never both parse to one key.
    #[test]
    fn whatever_parses_prints_back_to_the_same_strings(
        pk in prop_oneof!["T#[A-Z0-9#-]{0,8}#[A-Z0-9#-]{0,8}", "[ -~]{0,16}"],
        sk in prop_oneof![Just("BOT".to_owned()), "USER#[A-Z0-9#]{0,6}", "[ -~]{0,12}"],
    ) {
        if let Ok(k) = RecordKey::from_keys(&pk, &sk) {
            prop_assert_eq!((k.pk(), k.sk()), (pk.clone(), sk.clone()));
        }
        if let Ok(t) = TenantKey::from_pk(&pk) {
            prop_assert_eq!(t.pk(), pk);
        }
    }

    /// Malformed user ids (lower case, separators, empty, too long) are refused, never normalised.
    #[test]
    fn malformed_user_ids_are_refused(t in tenant(), u in prop_oneof!["[a-z]{1,4}", "[A-Z0-9]{0,3}[#\\- ][A-Z0-9]{0,3}", Just(String::new()), "[A-Z]{33,40}"]) {
        prop_assert!(RecordKey::user(t, &u).is_err(), "{:?}", u);
    }
}
