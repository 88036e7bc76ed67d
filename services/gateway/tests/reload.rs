//! Policy hot reload under load: principals and limits change while calls flow, and no
//! call fails; a broken file is refused and the policy in force stays.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use execbridge_api::v1::execution_service_client::ExecutionServiceClient;
use execbridge_api::v1::*;
use sha2::{Digest, Sha256};
use tonic::metadata::MetadataValue;

fn order(id: String) -> SubmitOrderRequest {
    SubmitOrderRequest {
        order: Some(OrderRequest {
            client_order_id: id,
            account: "acct-1".into(),
            venue: "paper".into(),
            mode: TradingMode::Paper as i32,
            symbol: "BTC-USDT".into(),
            side: Side::Buy as i32,
            r#type: OrderType::Limit as i32,
            quantity: "0.5".into(),
            price: "100.00".into(),
            ..Default::default()
        }),
    }
}

fn keyed<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut()
        .insert("x-api-key", MetadataValue::try_from(key).unwrap());
    r
}

/// Replaces the file the way Kubernetes does: a new file renamed over the old path.
fn swap_in(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

const NEWBIE_KEY: &str = "newbie-key-0123456789abcdef0123456789abcdef";

fn with_newbie(base: &str) -> String {
    format!(
        "{base}\n[[principals]]\nname = \"newbie\"\npermissions = [\"trade:paper\"]\naccounts = [\"acct-1\"]\n\n[[api_keys]]\nprincipal = \"newbie\"\nsha256 = \"{}\"\n",
        hex::encode(Sha256::digest(NEWBIE_KEY.as_bytes()))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_changes_under_load_fail_no_call_and_a_bad_file_keeps_the_old_policy() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, policy_toml(5)).unwrap();
    let (executor, recorder) = recording_executor().await;
    let gateway = gateway(&executor.endpoint(), &policy).await;
    let client = ExecutionServiceClient::new(gateway.channel().await);

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for worker in 0..4 {
        let (mut client, stop, ok) = (client.clone(), stop.clone(), ok.clone());
        load.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) && i < 100_000 {
                i += 1;
                match client
                    .submit_order(keyed(order(format!("w{worker}-{i}")), TRADER_KEY))
                    .await
                {
                    Ok(_) => ok.fetch_add(1, Ordering::SeqCst),
                    Err(e) => {
                        failures.push(format!("{:?}: {}", e.code(), e.message()));
                        0
                    }
                };
            }
            failures
        }));
    }

    // 1. A new principal appears.
    swap_in(&policy, &with_newbie(&policy_toml(5)));
    let mut newbie = client.clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if newbie
            .submit_order(keyed(order("newbie-1".into()), NEWBIE_KEY))
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new principal was never accepted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // 2. Limits change, several times.
    for burst in [1, 3, 7, 2] {
        swap_in(&policy, &with_newbie(&policy_toml(burst)));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // 3. A broken file is refused; the newbie (only in the policy in force) still works.
    swap_in(&policy, "this is = not [valid toml");
    tokio::time::sleep(Duration::from_millis(400)).await;
    newbie
        .submit_order(keyed(order("newbie-2".into()), NEWBIE_KEY))
        .await
        .expect("the old policy stays in force after a bad file");

    stop.store(true, Ordering::SeqCst);
    let mut failures = Vec::new();
    for task in load {
        failures.extend(task.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} failed calls, first: {:?}",
        failures.len(),
        failures.first()
    );
    assert!(
        ok.load(Ordering::SeqCst) > 100,
        "the load ran: {} calls",
        ok.load(Ordering::SeqCst)
    );
    assert!(recorder.count() >= ok.load(Ordering::SeqCst));
    gateway.stop().await;
    executor.stop().await;
}
