//! Unit tests of configuration rendering.

use super::*;
use crate::crd::{CertificatePolicy, RiskLimitsSpec};

fn spec() -> ExecbridgeConfigSpec {
    ExecbridgeConfigSpec {
        certificates: CertificatePolicy {
            lifetime_hours: 24,
            renew_before_hours: 8,
            ca_lifetime_hours: 240,
            ca_renew_before_hours: 48,
            services: vec![],
        },
        config_map_name: None,
        rate_limits: BTreeMap::from([(
            "submit".to_string(),
            RateLimit {
                per_second: 100,
                burst: 200,
            },
        )]),
        risk_limits: RiskLimitsSpec {
            paper: None,
            live: Some(RiskLimits {
                max_order_notional: Some("100000".into()),
                max_open_orders: Some(10),
                ..RiskLimits::default()
            }),
        },
        instruments: vec![Instrument {
            symbol: "BTC-USDT".into(),
            venue: "paper".into(),
            tick_size: "0.01".into(),
            lot_size: "0.0001".into(),
            min_notional: None,
        }],
        venues: vec![Venue {
            name: "paper".into(),
            kind: VenueKind::Paper,
            endpoint: None,
        }],
    }
}

#[test]
fn limits_render_as_the_gateway_policy_limits_section() {
    let files = files(&spec()).expect("render");
    assert_eq!(
        files["limits.toml"],
        "[limits.submit]\nper_second = 100\nburst = 200\n"
    );
}

#[test]
fn decimals_stay_strings_and_absent_limits_are_left_out() {
    let files = files(&spec()).expect("render");
    assert_eq!(
        files["risk.toml"],
        "[risk.live]\nmax_order_notional = \"100000\"\nmax_open_orders = 10\n"
    );
    assert!(files["instruments.toml"].contains("tick_size = \"0.01\""));
    assert!(files["venues.toml"].contains("kind = \"paper\""));
}

#[test]
fn the_hash_changes_with_the_content_and_only_with_it() {
    let a = files(&spec()).expect("render");
    let mut changed = spec();
    changed.rate_limits.get_mut("submit").expect("submit").burst = 300;
    let b = files(&changed).expect("render");
    assert_eq!(hash(&a), hash(&files(&spec()).expect("render")));
    assert_ne!(hash(&a), hash(&b));
}
