use std::time::{Duration, UNIX_EPOCH};

use execbridge_api::v1::execution_service_server::ExecutionService;
use execbridge_api::v1::{self, GetOrderRequest, SubmitOrderRequest};
use tonic::{Code, Request};

use super::{Echo, filled};
use crate::load::order_request;

#[test]
fn a_filled_order_carries_the_request_and_its_whole_quantity() {
    let request = order_request("c-1".into());
    let order = filled(request.clone(), 7, UNIX_EPOCH + Duration::from_secs(5));
    assert_eq!(order.status, v1::OrderStatus::Filled as i32);
    assert_eq!(order.filled_quantity, request.quantity);
    assert_eq!(order.remaining_quantity, "0");
    assert_eq!(order.sequence, 7);
    assert_eq!(order.created_at.map(|t| t.seconds), Some(5));
    assert_eq!(order.request, Some(request));
}

#[tokio::test]
async fn submit_order_answers_filled_with_increasing_sequences() {
    let echo = Echo::default();
    let mut sequences = Vec::new();
    for id in ["a", "b"] {
        let response = echo
            .submit_order(Request::new(SubmitOrderRequest {
                order: Some(order_request(id.into())),
            }))
            .await
            .expect("echo answers a submit")
            .into_inner();
        let order = response.order.expect("the response has an order");
        assert_eq!(order.status, v1::OrderStatus::Filled as i32);
        sequences.push(order.sequence);
    }
    assert_eq!(sequences, [1, 2]);
}

#[tokio::test]
async fn a_submit_without_an_order_is_invalid() {
    let status = Echo::default()
        .submit_order(Request::new(SubmitOrderRequest { order: None }))
        .await
        .expect_err("an empty submit is refused");
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn every_other_method_is_unimplemented() {
    let status = Echo::default()
        .get_order(Request::new(GetOrderRequest::default()))
        .await
        .expect_err("only SubmitOrder is served");
    assert_eq!(status.code(), Code::Unimplemented);
}
