//! The admission path, end to end over gRPC: every bad request below is refused with the
//! exact status code and `ErrorInfo` reason, and the executor behind the gateway sees none
//! of them.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use execbridge_api::v1::execution_service_client::ExecutionServiceClient;
use execbridge_api::v1::*;
use jsonwebtoken::Algorithm;
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic_types::StatusExt;

#[derive(Clone)]
enum Cred {
    Key(&'static str),
    Bearer(String),
    Header(&'static str, String),
    Nothing,
}

fn base() -> OrderRequest {
    OrderRequest {
        client_order_id: "ok-1".into(),
        account: "acct-1".into(),
        venue: "paper".into(),
        mode: TradingMode::Paper as i32,
        symbol: "BTC-USDT".into(),
        side: Side::Buy as i32,
        r#type: OrderType::Limit as i32,
        time_in_force: TimeInForce::Gtc as i32,
        quantity: "0.5".into(),
        price: "100.00".into(),
        ..Default::default()
    }
}

fn swap() -> OrderRequest {
    OrderRequest {
        venue: "jupiter".into(),
        symbol: format!("{WSOL}/{USDC}"),
        r#type: OrderType::Market as i32,
        price: String::new(),
        quantity: "1.5".into(),
        ..base()
    }
}

type Mutate = Box<dyn Fn(&mut OrderRequest)>;

struct Case {
    name: &'static str,
    cred: Cred,
    order: Option<Mutate>,
    code: Code,
    reason: &'static str,
}

fn bad(name: &'static str, m: impl Fn(&mut OrderRequest) + 'static, reason: &'static str) -> Case {
    Case {
        name,
        cred: Cred::Key(TRADER_KEY),
        order: Some(Box::new(m)),
        code: Code::InvalidArgument,
        reason,
    }
}

fn auth(name: &'static str, cred: Cred, code: Code, reason: &'static str) -> Case {
    Case {
        name,
        cred,
        order: Some(Box::new(|_| {})),
        code,
        reason,
    }
}

fn on_swap(m: impl Fn(&mut OrderRequest) + 'static) -> impl Fn(&mut OrderRequest) + 'static {
    move |o| {
        *o = swap();
        m(o);
    }
}

fn cases() -> Vec<Case> {
    vec![
        bad(
            "letters as quantity",
            |o| o.quantity = "abc".into(),
            "INVALID_FIELD",
        ),
        bad(
            "negative quantity",
            |o| o.quantity = "-1".into(),
            "INVALID_FIELD",
        ),
        bad(
            "zero quantity",
            |o| o.quantity = "0".into(),
            "INVALID_FIELD",
        ),
        bad(
            "exponent quantity",
            |o| o.quantity = "1e3".into(),
            "INVALID_FIELD",
        ),
        bad("missing quantity", |o| o.quantity.clear(), "INVALID_FIELD"),
        bad(
            "two decimal points",
            |o| o.quantity = "1.2.3".into(),
            "INVALID_FIELD",
        ),
        bad(
            "leading space in quantity",
            |o| o.quantity = " 1".into(),
            "INVALID_FIELD",
        ),
        bad(
            "hex quantity",
            |o| o.quantity = "0x10".into(),
            "INVALID_FIELD",
        ),
        bad(
            "thousands separator",
            |o| o.quantity = "1,000".into(),
            "INVALID_FIELD",
        ),
        bad(
            "letters as price",
            |o| o.price = "abc".into(),
            "INVALID_FIELD",
        ),
        bad("negative price", |o| o.price = "-5".into(), "INVALID_FIELD"),
        bad("zero price", |o| o.price = "0".into(), "INVALID_FIELD"),
        bad("NaN price", |o| o.price = "NaN".into(), "INVALID_FIELD"),
        bad(
            "infinite price",
            |o| o.price = "Infinity".into(),
            "INVALID_FIELD",
        ),
        bad(
            "overflowing price",
            |o| o.price = "1".repeat(40),
            "INVALID_FIELD",
        ),
        bad("limit without price", |o| o.price.clear(), "INVALID_FIELD"),
        bad(
            "market with price",
            |o| o.r#type = OrderType::Market as i32,
            "INVALID_FIELD",
        ),
        bad(
            "stop loss without stop price",
            |o| o.r#type = OrderType::StopLossLimit as i32,
            "INVALID_FIELD",
        ),
        bad(
            "stop price on a limit",
            |o| o.stop_price = "99.00".into(),
            "INVALID_FIELD",
        ),
        bad(
            "price off tick",
            |o| o.price = "100.001".into(),
            "PRICE_OFF_TICK",
        ),
        bad(
            "stop price off tick",
            |o| {
                o.r#type = OrderType::StopLossLimit as i32;
                o.stop_price = "99.995".into();
            },
            "PRICE_OFF_TICK",
        ),
        bad(
            "quantity off lot",
            |o| o.quantity = "0.50001".into(),
            "QUANTITY_OFF_LOT",
        ),
        bad(
            "notional below minimum",
            |o| o.quantity = "0.01".into(),
            "NOTIONAL_BELOW_MINIMUM",
        ),
        bad(
            "quantity above maximum",
            |o| o.quantity = "101".into(),
            "QUANTITY_ABOVE_MAXIMUM",
        ),
        bad(
            "unknown symbol",
            |o| o.symbol = "DOGE-USDT".into(),
            "UNKNOWN_SYMBOL",
        ),
        bad(
            "disabled symbol",
            |o| o.symbol = "DIS-USDT".into(),
            "SYMBOL_DISABLED",
        ),
        bad(
            "unknown venue",
            |o| o.venue = "nasdaq".into(),
            "UNKNOWN_VENUE",
        ),
        bad(
            "upper-case venue",
            |o| o.venue = "Paper".into(),
            "INVALID_FIELD",
        ),
        bad(
            "empty client order id",
            |o| o.client_order_id.clear(),
            "INVALID_FIELD",
        ),
        bad(
            "37-character client order id",
            |o| o.client_order_id = "x".repeat(37),
            "INVALID_FIELD",
        ),
        bad(
            "space in client order id",
            |o| o.client_order_id = "a b".into(),
            "INVALID_FIELD",
        ),
        bad(
            "SQL in client order id",
            |o| o.client_order_id = "'; DROP TABLE orders;--".into(),
            "INVALID_FIELD",
        ),
        bad(
            "NUL in client order id",
            |o| o.client_order_id = "a\u{0}b".into(),
            "INVALID_FIELD",
        ),
        bad(
            "markup in client order id",
            |o| o.client_order_id = "<script>".into(),
            "INVALID_FIELD",
        ),
        bad(
            "non-ASCII client order id",
            |o| o.client_order_id = "ordér".into(),
            "INVALID_FIELD",
        ),
        bad("empty account", |o| o.account.clear(), "INVALID_FIELD"),
        bad(
            "newline in account",
            |o| o.account = "acct\n1".into(),
            "INVALID_FIELD",
        ),
        bad(
            "path traversal in account",
            |o| o.account = "../../etc/passwd".into(),
            "INVALID_FIELD",
        ),
        bad(
            "space in symbol",
            |o| o.symbol = "BTC USDT".into(),
            "INVALID_FIELD",
        ),
        bad(
            "bell in symbol",
            |o| o.symbol = "BTC-USDT\u{7}".into(),
            "INVALID_FIELD",
        ),
        bad(
            "template injection in symbol",
            |o| o.symbol = "${jndi:ldap://x}".into(),
            "INVALID_FIELD",
        ),
        bad(
            "CRLF in venue",
            |o| o.venue = "paper\r\n".into(),
            "INVALID_FIELD",
        ),
        bad(
            "too many metadata entries",
            |o| {
                for i in 0..17 {
                    o.metadata.insert(format!("k{i}"), "v".into());
                }
            },
            "INVALID_FIELD",
        ),
        bad(
            "oversize metadata value",
            |o| {
                o.metadata.insert("k".into(), "v".repeat(300));
            },
            "INVALID_FIELD",
        ),
        bad(
            "oversize metadata key",
            |o| {
                o.metadata.insert("k".repeat(65), "v".into());
            },
            "INVALID_FIELD",
        ),
        bad(
            "space in metadata key",
            |o| {
                o.metadata.insert("a key".into(), "v".into());
            },
            "INVALID_CHARACTERS",
        ),
        bad(
            "escape sequence in metadata value",
            |o| {
                o.metadata.insert("k".into(), "\u{1b}[31mred".into());
            },
            "INVALID_CHARACTERS",
        ),
        bad(
            "empty metadata key",
            |o| {
                o.metadata.insert(String::new(), "v".into());
            },
            "INVALID_FIELD",
        ),
        bad("no side", |o| o.side = 0, "INVALID_FIELD"),
        bad("unknown side", |o| o.side = 99, "INVALID_FIELD"),
        bad("no order type", |o| o.r#type = 0, "INVALID_FIELD"),
        bad("no trading mode", |o| o.mode = 0, "INVALID_FIELD"),
        bad(
            "unknown time in force",
            |o| o.time_in_force = 42,
            "INVALID_FIELD",
        ),
        bad(
            "slippage above 100 %",
            |o| o.slippage_bps = 10_001,
            "INVALID_FIELD",
        ),
        bad(
            "post-only market order",
            |o| {
                o.r#type = OrderType::Market as i32;
                o.price.clear();
                o.post_only = true;
            },
            "INVALID_FIELD",
        ),
        bad(
            "post-only immediate-or-cancel",
            |o| {
                o.post_only = true;
                o.time_in_force = TimeInForce::Ioc as i32;
            },
            "INVALID_FIELD",
        ),
        bad(
            "attached stop loss with a bad trigger",
            |o| {
                o.stop_loss = Some(AttachedOrder {
                    trigger_price: "x".into(),
                    limit_price: String::new(),
                })
            },
            "INVALID_FIELD",
        ),
        bad(
            "attached take profit off tick",
            |o| {
                o.take_profit = Some(AttachedOrder {
                    trigger_price: "120.005".into(),
                    limit_price: String::new(),
                })
            },
            "PRICE_OFF_TICK",
        ),
        bad(
            "MEV protection on a spot venue",
            |o| {
                o.mev_protection = Some(MevProtection {
                    private_relay: false,
                    tip_lamports: 1,
                    max_priority_fee_micro_lamports: 0,
                })
            },
            "INVALID_FIELD",
        ),
        bad(
            "mint that is not base58",
            on_swap(|o| o.symbol = format!("0OIl{}/{USDC}", &WSOL[4..])),
            "INVALID_MINT",
        ),
        bad(
            "mint of 31 bytes",
            on_swap(|o| o.symbol = format!("{}/{USDC}", &WSOL[..42])),
            "INVALID_MINT",
        ),
        bad(
            "swap symbol without a pair",
            on_swap(|o| o.symbol = WSOL.into()),
            "INVALID_MINT",
        ),
        bad(
            "swap of a mint for itself",
            on_swap(|o| o.symbol = format!("{USDC}/{USDC}")),
            "INVALID_MINT",
        ),
        bad(
            "unsupported swap pair",
            on_swap(|o| o.symbol = format!("{USDC}/{WSOL}")),
            "UNSUPPORTED_PAIR",
        ),
        bad(
            "builder tip above 1 SOL",
            on_swap(|o| {
                o.mev_protection = Some(MevProtection {
                    private_relay: true,
                    tip_lamports: 2_000_000_000,
                    max_priority_fee_micro_lamports: 0,
                })
            }),
            "INVALID_FIELD",
        ),
        bad(
            "private relay without a tip",
            on_swap(|o| {
                o.mev_protection = Some(MevProtection {
                    private_relay: true,
                    tip_lamports: 0,
                    max_priority_fee_micro_lamports: 0,
                })
            }),
            "INVALID_FIELD",
        ),
        bad(
            "priority fee out of range",
            on_swap(|o| {
                o.mev_protection = Some(MevProtection {
                    private_relay: false,
                    tip_lamports: 0,
                    max_priority_fee_micro_lamports: u64::MAX,
                })
            }),
            "INVALID_FIELD",
        ),
        Case {
            name: "LIVE order without trade:live",
            cred: Cred::Key(TRADER_KEY),
            order: Some(Box::new(|o| o.mode = TradingMode::Live as i32)),
            code: Code::PermissionDenied,
            reason: "MISSING_PERMISSION",
        },
        Case {
            name: "order on an account not allowed",
            cred: Cred::Key(TRADER_KEY),
            order: Some(Box::new(|o| o.account = "acct-2".into())),
            code: Code::PermissionDenied,
            reason: "ACCOUNT_NOT_ALLOWED",
        },
        Case {
            name: "a reader submitting",
            cred: Cred::Key(READER_KEY),
            order: Some(Box::new(|_| {})),
            code: Code::PermissionDenied,
            reason: "MISSING_PERMISSION",
        },
        Case {
            name: "no order at all",
            cred: Cred::Key(TRADER_KEY),
            order: None,
            code: Code::InvalidArgument,
            reason: "INVALID_FIELD",
        },
        auth(
            "no credentials",
            Cred::Nothing,
            Code::Unauthenticated,
            "MISSING_CREDENTIALS",
        ),
        auth(
            "unknown API key",
            Cred::Key("not-a-key-0123456789abcdef0123456789"),
            Code::Unauthenticated,
            "UNKNOWN_API_KEY",
        ),
        auth(
            "basic authentication",
            Cred::Header("authorization", "Basic dXNlcjpwYXNz".into()),
            Code::Unauthenticated,
            "MALFORMED_CREDENTIALS",
        ),
        auth(
            "garbage bearer token",
            Cred::Bearer("abc.def.ghi".into()),
            Code::Unauthenticated,
            "INVALID_TOKEN",
        ),
        auth(
            "expired token",
            Cred::Bearer(token(
                "hs",
                Algorithm::HS256,
                serde_json::json!({"sub": "trader", "iss": ISSUER, "aud": AUDIENCE, "exp": now() - 60}),
            )),
            Code::Unauthenticated,
            "TOKEN_EXPIRED",
        ),
        auth(
            "token not yet valid",
            Cred::Bearer(token(
                "hs",
                Algorithm::HS256,
                serde_json::json!({"sub": "trader", "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600, "nbf": now() + 300}),
            )),
            Code::Unauthenticated,
            "TOKEN_NOT_YET_VALID",
        ),
        auth(
            "token for another audience",
            Cred::Bearer(token(
                "rs",
                Algorithm::RS256,
                serde_json::json!({"sub": "trader", "iss": ISSUER, "aud": "someone-else", "exp": now() + 60}),
            )),
            Code::Unauthenticated,
            "TOKEN_WRONG_AUDIENCE",
        ),
        auth(
            "token from another issuer",
            Cred::Bearer(token(
                "ed",
                Algorithm::EdDSA,
                serde_json::json!({"sub": "trader", "iss": "https://evil.test", "aud": AUDIENCE, "exp": now() + 60}),
            )),
            Code::Unauthenticated,
            "TOKEN_WRONG_ISSUER",
        ),
        auth(
            "forged token",
            Cred::Bearer(forged()),
            Code::Unauthenticated,
            "INVALID_TOKEN",
        ),
        auth(
            "alg none",
            Cred::Bearer(unsigned()),
            Code::Unauthenticated,
            "TOKEN_ALGORITHM_NOT_ALLOWED",
        ),
        auth(
            "algorithm confusion",
            Cred::Bearer(confused()),
            Code::Unauthenticated,
            "TOKEN_ALGORITHM_NOT_ALLOWED",
        ),
        auth(
            "token without kid",
            Cred::Bearer({
                let key = jsonwebtoken::EncodingKey::from_secret(
                    &std::fs::read(fixtures().join("hs256.secret")).unwrap(),
                );
                jsonwebtoken::encode(
                    &jsonwebtoken::Header::new(Algorithm::HS256),
                    &claims("trader"),
                    &key,
                )
                .unwrap()
            }),
            Code::Unauthenticated,
            "INVALID_TOKEN",
        ),
        auth(
            "token for an unknown principal",
            Cred::Bearer(token("hs", Algorithm::HS256, claims("mallory"))),
            Code::Unauthenticated,
            "UNKNOWN_PRINCIPAL",
        ),
        auth(
            "token without an expiry",
            Cred::Bearer(token(
                "hs",
                Algorithm::HS256,
                serde_json::json!({"sub": "trader", "iss": ISSUER, "aud": AUDIENCE}),
            )),
            Code::Unauthenticated,
            "INVALID_TOKEN",
        ),
    ]
}

/// Signed with a secret that is not the gateway's.
fn forged() -> String {
    let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
    header.kid = Some("hs".into());
    let key = jsonwebtoken::EncodingKey::from_secret(b"an attacker's secret of thirty-two bytes!!");
    jsonwebtoken::encode(&header, &claims("trader"), &key).unwrap()
}

/// `alg: none` with no signature.
fn unsigned() -> String {
    use base64::Engine as _;
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    format!(
        "{}.{}.",
        b64(serde_json::json!({"alg": "none", "typ": "JWT", "kid": "hs"})),
        b64(claims("trader"))
    )
}

/// HS256 keyed with the RSA public key, naming the RS256 key: the classic confusion.
fn confused() -> String {
    let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
    header.kid = Some("rs".into());
    let key = jsonwebtoken::EncodingKey::from_secret(
        &std::fs::read(fixtures().join("rsa_public.pem")).unwrap(),
    );
    jsonwebtoken::encode(&header, &claims("trader"), &key).unwrap()
}

fn with_cred<T>(message: T, cred: &Cred) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let m = request.metadata_mut();
    match cred {
        Cred::Key(k) => {
            m.insert("x-api-key", MetadataValue::try_from(*k).unwrap());
        }
        Cred::Bearer(t) => {
            m.insert(
                "authorization",
                MetadataValue::try_from(format!("Bearer {t}")).unwrap(),
            );
        }
        Cred::Header(name, value) => {
            m.insert(*name, MetadataValue::try_from(value.as_str()).unwrap());
        }
        Cred::Nothing => {}
    }
    request
}

struct Env {
    _dir: tempfile::TempDir,
    client: ExecutionServiceClient<Channel>,
    recorder: RecordingExecutor,
}

async fn env(slow_burst: u32) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, policy_toml(slow_burst)).unwrap();
    let (executor, recorder) = recording_executor().await;
    // The table sends dozens of bad credentials over one connection to see each reason;
    // closing the connection after a few (tests/connections.rs) is off here.
    let (gateway, _) = gateway_with(&executor.endpoint(), &policy, |c| {
        c.auth.max_failures_per_connection = 0;
    })
    .await;
    let client = ExecutionServiceClient::new(gateway.channel().await);
    // The servers run until the test process ends.
    std::mem::forget((executor, gateway));
    Env {
        _dir: dir,
        client,
        recorder,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_request_is_refused_with_its_code_and_reason_and_never_reaches_the_executor() {
    let mut env = env(10).await;
    let cases = cases();
    assert!(cases.len() >= 60, "{} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let order = case.order.as_ref().map(|m| {
            let mut o = base();
            m(&mut o);
            o
        });
        let before = env.recorder.count();
        let result = env
            .client
            .submit_order(with_cred(SubmitOrderRequest { order }, &case.cred))
            .await;
        let after = env.recorder.count();
        match result {
            Ok(_) => failures.push(format!("{}: accepted", case.name)),
            Err(status) => {
                let reason = status
                    .get_details_error_info()
                    .map(|i| i.reason)
                    .unwrap_or_default();
                if status.code() != case.code || reason != case.reason {
                    failures.push(format!(
                        "{}: got {:?}/{reason} ({}), want {:?}/{}",
                        case.name,
                        status.code(),
                        status.message(),
                        case.code,
                        case.reason
                    ));
                }
            }
        }
        if after != before {
            failures.push(format!("{}: reached the executor", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_credentials_of_every_kind_reach_the_executor() {
    let mut env = env(10).await;
    let creds = [
        Cred::Key(TRADER_KEY),
        Cred::Bearer(token("hs", Algorithm::HS256, claims("trader"))),
        Cred::Bearer(token("rs", Algorithm::RS256, claims("trader"))),
        Cred::Bearer(token("ed", Algorithm::EdDSA, claims("trader"))),
    ];
    for (i, cred) in creds.iter().enumerate() {
        let mut order = base();
        order.client_order_id = format!("ok-{i}");
        let r = env
            .client
            .submit_order(with_cred(SubmitOrderRequest { order: Some(order) }, cred))
            .await;
        assert!(r.is_ok(), "credential {i}: {r:?}");
    }
    assert_eq!(env.recorder.count(), creds.len());
    let swap = env
        .client
        .submit_order(with_cred(
            SubmitOrderRequest {
                order: Some(swap()),
            },
            &Cred::Key(TRADER_KEY),
        ))
        .await;
    assert!(swap.is_ok(), "{swap:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_another_accounts_orders_is_permission_denied() {
    let mut env = env(10).await;
    let err = env
        .client
        .list_orders(with_cred(
            ListOrdersRequest {
                account: "acct-2".into(),
                ..Default::default()
            },
            &Cred::Key(READER_KEY),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(
        err.get_details_error_info().unwrap().reason,
        "ACCOUNT_NOT_ALLOWED"
    );
    let ok = env
        .client
        .list_orders(with_cred(
            ListOrdersRequest {
                account: "acct-1".into(),
                ..Default::default()
            },
            &Cred::Key(READER_KEY),
        ))
        .await;
    assert!(ok.is_ok());
    assert_eq!(env.recorder.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_rate_a_submit_is_resource_exhausted_with_a_retry_delay_and_cancels_still_pass() {
    let mut env = env(2).await;
    let cred = Cred::Key(SLOW_KEY);
    for i in 0..2 {
        let mut order = base();
        order.client_order_id = format!("r-{i}");
        env.client
            .submit_order(with_cred(SubmitOrderRequest { order: Some(order) }, &cred))
            .await
            .unwrap();
    }
    let err = env
        .client
        .submit_order(with_cred(
            SubmitOrderRequest {
                order: Some(base()),
            },
            &cred,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(err.get_details_error_info().unwrap().reason, "RATE_LIMITED");
    let delay = err.get_details_retry_info().unwrap().retry_delay.unwrap();
    assert!(
        delay > std::time::Duration::ZERO && delay <= std::time::Duration::from_secs(1),
        "{delay:?}"
    );
    assert_eq!(
        env.recorder.count(),
        2,
        "the refused submit did not reach the executor"
    );
    // Cancels have their own budget.
    let cancel = CancelOrderRequest {
        account: "acct-1".into(),
        id: Some(cancel_order_request::Id::ClientOrderId("r-0".into())),
    };
    env.client
        .cancel_order(with_cred(cancel, &cred))
        .await
        .unwrap();
    assert_eq!(env.recorder.count(), 3);
}
