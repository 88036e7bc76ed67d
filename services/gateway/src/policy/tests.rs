use std::path::Path;

use super::*;

fn compile(text: &str) -> Result<Policy, PolicyError> {
    let file: PolicyFile = toml::from_str(text).map_err(|e| bad("toml", e.message()))?;
    file.compile(Path::new("."))
}

const KEY_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[test]
fn the_embedded_policy_compiles_with_anonymous_paper_trading() {
    let p = PolicyFile::default().compile(Path::new(".")).unwrap();
    let anonymous = p.anonymous.unwrap();
    assert!(anonymous.may(Permission::TradePaper));
    assert!(!anonymous.may(Permission::TradeLive));
    assert!(anonymous.may_use("any-account"));
    assert!(
        p.instruments
            .contains_key(&("paper".into(), "BTC-USDT".into()))
    );
}

#[test]
fn an_api_key_for_an_unknown_principal_is_refused() {
    let err = compile(&format!(
        "[[api_keys]]\nprincipal = \"ghost\"\nsha256 = \"{KEY_HASH}\"\n"
    ))
    .err()
    .unwrap();
    assert_eq!(err.key, "api_keys[0].principal");
}

#[test]
fn a_malformed_key_hash_is_refused() {
    let err = compile(
        "[[principals]]\nname = \"a\"\npermissions = []\naccounts = []\n[[api_keys]]\nprincipal = \"a\"\nsha256 = \"xyz\"\n",
    )
    .err()
    .unwrap();
    assert_eq!(err.key, "api_keys[0].sha256");
}

#[test]
fn a_principal_listed_twice_is_refused() {
    let one = "[[principals]]\nname = \"a\"\npermissions = []\naccounts = []\n";
    let err = compile(&format!("{one}{one}")).err().unwrap();
    assert_eq!(err.key, "principals[1].name");
}

#[test]
fn an_unknown_permission_is_refused() {
    let err = compile(
        "[[principals]]\nname = \"a\"\npermissions = [\"trade:everything\"]\naccounts = []\n",
    );
    assert!(err.is_err());
}

#[test]
fn a_zero_tick_size_is_refused() {
    let err = compile("[[instruments]]\nvenue = \"paper\"\nsymbol = \"X-Y\"\ntick_size = \"0\"\nlot_size = \"1\"\n")
        .err()
        .unwrap();
    assert_eq!(err.key, "instruments[0].tick_size");
}

#[test]
fn a_swap_instrument_needs_a_pair_of_mints() {
    let err = compile(
        "[[instruments]]\nvenue = \"jupiter\"\nsymbol = \"SOL-USDC\"\nkind = \"swap\"\ntick_size = \"1\"\nlot_size = \"1\"\n",
    )
    .err()
    .unwrap();
    assert_eq!(err.key, "instruments[0].symbol");
}

#[test]
fn a_missing_jwt_key_file_names_the_key() {
    let err = compile(
        "[jwt]\nissuer = \"i\"\naudience = \"a\"\nkeys = [{ kid = \"k\", algorithm = \"HS256\", key_file = \"/nonexistent\" }]\n",
    )
    .err()
    .unwrap();
    assert_eq!(err.key, "jwt.keys[0].key_file");
}

#[test]
fn a_wildcard_account_allows_every_account() {
    let p = compile("allow_anonymous = false\n[[principals]]\nname = \"a\"\npermissions = []\naccounts = [\"*\"]\n").unwrap();
    assert!(p.principals["a"].may_use("whatever"));
    assert!(p.anonymous.is_none());
}
