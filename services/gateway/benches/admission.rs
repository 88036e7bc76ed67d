//! The admission path's cost per order: authentication + rate limit + permission + field
//! validation + instrument checks, as the gateway runs them for each SubmitOrder, without
//! the network. Measured per call with `Instant` (its own overhead, ~25 ns, is included).
//!
//! `cargo bench -p execbridge-gateway --bench admission`

// A benchmark reports on stdout.
#![allow(clippy::print_stdout)]

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use execbridge_api::convert::order_request_from_proto;
use execbridge_api::v1;
use execbridge_gateway::admission::{Admission, Compiled, Metrics};
use execbridge_gateway::policy::{Permission, PolicyFile, RpcClass};
use execbridge_gateway::validate;
use hdrhistogram::Histogram;
use sha2::{Digest, Sha256};
use tonic::metadata::MetadataValue;

const KEY: &str = "bench-key-0123456789abcdef0123456789abcdef";
const ITERATIONS: u64 = 200_000;

fn policy(jwt_dir: &Path) -> String {
    format!(
        r#"
allow_anonymous = false
[[principals]]
name = "bench"
permissions = ["trade:paper", "orders:read"]
accounts = ["acct-1"]
[principals.limits]
submit = {{ per_second = 1000000000, burst = 1000000000 }}
cancel = {{ per_second = 1000, burst = 1000 }}
read = {{ per_second = 1000, burst = 1000 }}
stream = {{ per_second = 10, burst = 10 }}
[[api_keys]]
principal = "bench"
sha256 = "{}"
[jwt]
issuer = "https://issuer.test"
audience = "execbridge"
keys = [
  {{ kid = "hs", algorithm = "HS256", key_file = "{}" }},
  {{ kid = "ed", algorithm = "EdDSA", key_file = "{}" }},
  {{ kid = "rs", algorithm = "RS256", key_file = "{}" }},
]
[[instruments]]
venue = "paper"
symbol = "BTC-USDT"
tick_size = "0.01"
lot_size = "0.0001"
min_notional = "10"
"#,
        hex::encode(Sha256::digest(KEY.as_bytes())),
        jwt_dir.join("hs256.secret").display(),
        jwt_dir.join("ed25519_public.pem").display(),
        jwt_dir.join("rsa_public.pem").display(),
    )
}

fn token(dir: &Path, kid: &str, alg: jsonwebtoken::Algorithm) -> String {
    let key = match alg {
        jsonwebtoken::Algorithm::HS256 => jsonwebtoken::EncodingKey::from_secret(
            &std::fs::read(dir.join("hs256.secret")).expect("fixture"),
        ),
        jsonwebtoken::Algorithm::EdDSA => jsonwebtoken::EncodingKey::from_ed_pem(
            &std::fs::read(dir.join("ed25519_private.pem")).expect("fixture"),
        )
        .expect("key"),
        _ => jsonwebtoken::EncodingKey::from_rsa_pem(
            &std::fs::read(dir.join("rsa_private.pem")).expect("fixture"),
        )
        .expect("key"),
    };
    let mut header = jsonwebtoken::Header::new(alg);
    header.kid = Some(kid.into());
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 3600;
    let claims = serde_json::json!({"sub": "bench", "iss": "https://issuer.test", "aud": "execbridge", "exp": exp});
    jsonwebtoken::encode(&header, &claims, &key).expect("sign")
}

fn order() -> v1::OrderRequest {
    v1::OrderRequest {
        client_order_id: "bench-1".into(),
        account: "acct-1".into(),
        venue: "paper".into(),
        mode: v1::TradingMode::Paper as i32,
        symbol: "BTC-USDT".into(),
        side: v1::Side::Buy as i32,
        r#type: v1::OrderType::Limit as i32,
        quantity: "0.5".into(),
        price: "100.00".into(),
        ..Default::default()
    }
}

fn run(name: &str, admission: &Admission, header: (&'static str, String)) {
    let mut request = tonic::Request::new(v1::SubmitOrderRequest {
        order: Some(order()),
    });
    request.metadata_mut().insert(
        header.0,
        MetadataValue::try_from(header.1.as_str()).expect("ascii"),
    );
    let mut hist = Histogram::<u64>::new(3).expect("precision");
    let iterations = if name.starts_with("api") {
        ITERATIONS
    } else {
        ITERATIONS / 10
    };
    for i in 0..iterations + 1000 {
        let start = Instant::now();
        let admitted = admission
            .admit("SubmitOrder", &request, RpcClass::Submit)
            .expect("admitted");
        let pb = request.get_ref().order.as_ref().expect("order");
        let parsed = order_request_from_proto(pb, "order.").expect("valid");
        admission
            .require(
                "SubmitOrder",
                &admitted,
                Permission::TradePaper,
                Some(parsed.account.as_str()),
            )
            .expect("allowed");
        let violations = validate::order(&admitted.compiled.policy, &parsed, "order.");
        black_box(violations);
        let elapsed = start.elapsed().as_nanos() as u64;
        if i >= 1000 {
            hist.record(elapsed.max(1)).expect("in range");
        }
    }
    println!(
        "{name:<22} n={:<7} p50={:>7.2} us  p90={:>7.2} us  p99={:>7.2} us  p99.9={:>7.2} us  max={:>8.2} us",
        hist.len(),
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.9) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.value_at_quantile(0.999) as f64 / 1000.0,
        hist.max() as f64 / 1000.0,
    );
}

fn verify_only(name: &str, fixtures: &Path, token: &str, kid: &str) {
    let (alg, key) = match kid {
        "hs" => (
            jsonwebtoken::Algorithm::HS256,
            jsonwebtoken::DecodingKey::from_secret(
                &std::fs::read(fixtures.join("hs256.secret")).expect("fixture"),
            ),
        ),
        "ed" => (
            jsonwebtoken::Algorithm::EdDSA,
            jsonwebtoken::DecodingKey::from_ed_pem(
                &std::fs::read(fixtures.join("ed25519_public.pem")).expect("fixture"),
            )
            .expect("key"),
        ),
        _ => (
            jsonwebtoken::Algorithm::RS256,
            jsonwebtoken::DecodingKey::from_rsa_pem(
                &std::fs::read(fixtures.join("rsa_public.pem")).expect("fixture"),
            )
            .expect("key"),
        ),
    };
    let mut validation = jsonwebtoken::Validation::new(alg);
    validation.set_audience(&["execbridge"]);
    let mut hist = Histogram::<u64>::new(3).expect("precision");
    for _ in 0..2_000 {
        let start = Instant::now();
        black_box(
            jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation).expect("valid"),
        );
        hist.record((start.elapsed().as_nanos() as u64).max(1))
            .expect("auto-resizing");
    }
    println!(
        "{name:<22} n={:<7} p50={:>7.2} us  p99={:>7.2} us",
        hist.len(),
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
    );
}

fn main() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let file: PolicyFile = toml::from_str(&policy(&fixtures)).expect("policy parses");
    let compiled = Compiled::new(file.compile(&fixtures).expect("policy compiles"));
    let admission = Admission::new(compiled, Metrics::register(&prometheus::Registry::new()));
    println!(
        "admission path per SubmitOrder (authenticate + rate limit + permission + validation), {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    run("api key", &admission, ("x-api-key", KEY.to_owned()));
    // The same token on every call, as a client sends it: verified once, then cached.
    let tokens = [
        ("hs", jsonwebtoken::Algorithm::HS256, "HS256"),
        ("ed", jsonwebtoken::Algorithm::EdDSA, "EdDSA"),
        ("rs", jsonwebtoken::Algorithm::RS256, "RS256"),
    ]
    .map(|(kid, alg, name)| (kid, name, token(&fixtures, kid, alg)));
    for (_, name, token) in &tokens {
        run(
            &format!("jwt {name} (cached)"),
            &admission,
            ("authorization", format!("Bearer {token}")),
        );
    }
    // A token's first call: the signature verification alone.
    for (kid, name, token) in &tokens {
        verify_only(&format!("first use, {name}"), &fixtures, token, kid);
    }
}
