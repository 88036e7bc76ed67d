//! A small in-memory Kubernetes API server behind kube's mocked client (a `tower_test`
//! service pair): GET, create, replace (with resourceVersion conflicts), server-side
//! apply, status merge patch, event create; it records every call.
#![allow(dead_code)] // each test file uses a different part

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use execbridge_operator::crd::{ExecbridgeConfig, ExecbridgeConfigStatus};
use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};

pub const NS: &str = "trading";

/// The in-memory API server.
#[derive(Default)]
pub struct FakeApi {
    /// Objects by path (no query string).
    objects: Mutex<BTreeMap<String, Value>>,
    /// "METHOD path" of every call, in order.
    calls: Mutex<Vec<String>>,
    /// Answer this many of the next calls with 500.
    pub fail_next: AtomicUsize,
    /// Answer this many of the next creates and replaces with 409, as if another client
    /// had written between our read and our write.
    pub conflict_writes: AtomicUsize,
    /// The last resourceVersion handed out.
    version: AtomicUsize,
}

impl FakeApi {
    pub fn status(code: StatusCode, reason: &str) -> Response<Body> {
        let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "reason": reason, "message": reason, "code": code.as_u16()});
        Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&body).expect("json")))
            .expect("response")
    }

    pub fn ok(value: &Value) -> Response<Body> {
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(value).expect("json")))
            .expect("response")
    }

    pub async fn handle(&self, request: Request<Body>) -> Response<Body> {
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        self.calls
            .lock()
            .expect("lock")
            .push(format!("{method} {path}"));
        let body = request.into_body().collect_bytes().await.expect("body");
        if self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Self::status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError");
        }
        if matches!(method, Method::POST | Method::PUT)
            && self
                .conflict_writes
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            return Self::status(StatusCode::CONFLICT, "Conflict");
        }
        let mut objects = self.objects.lock().expect("lock");
        match method {
            Method::GET => match objects.get(&path) {
                Some(v) => Self::ok(v),
                None => Self::status(StatusCode::NOT_FOUND, "NotFound"),
            },
            Method::PATCH if path.ends_with("/status") => {
                let patch: Value = serde_json::from_slice(&body).expect("patch");
                match objects.get_mut(path.trim_end_matches("/status")) {
                    Some(object) => {
                        object["status"] = patch["status"].clone();
                        Self::ok(object)
                    }
                    None => Self::status(StatusCode::NOT_FOUND, "NotFound"),
                }
            }
            // Create: 409 if it exists. The collection path plus the object's name is the
            // object's path.
            Method::POST => {
                let mut value: Value = serde_json::from_slice(&body).expect("object");
                let path = match value["metadata"]["name"].as_str() {
                    Some(name) if !path.ends_with("/events") => format!("{path}/{name}"),
                    _ => format!("{path}/{}", self.version.load(Ordering::SeqCst)),
                };
                if objects.contains_key(&path) {
                    return Self::status(StatusCode::CONFLICT, "AlreadyExists");
                }
                value["metadata"]["resourceVersion"] = self.next_version();
                objects.insert(path, value.clone());
                Self::ok(&value)
            }
            // Replace: 409 unless the caller read the current resourceVersion.
            Method::PUT => {
                let mut value: Value = serde_json::from_slice(&body).expect("object");
                let current = objects
                    .get(&path)
                    .map(|v| v["metadata"]["resourceVersion"].clone());
                if current != Some(value["metadata"]["resourceVersion"].clone()) {
                    return Self::status(StatusCode::CONFLICT, "Conflict");
                }
                value["metadata"]["resourceVersion"] = self.next_version();
                objects.insert(path, value.clone());
                Self::ok(&value)
            }
            // Server-side apply: the applied object becomes the stored one.
            Method::PATCH => {
                let mut value: Value = serde_json::from_slice(&body).expect("object");
                value["metadata"]["resourceVersion"] = self.next_version();
                objects.insert(path, value.clone());
                Self::ok(&value)
            }
            _ => Self::status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"),
        }
    }

    fn next_version(&self) -> Value {
        Value::String((self.version.fetch_add(1, Ordering::SeqCst) + 1).to_string())
    }

    /// Stores `value` at `path` as if another client had written it.
    pub fn put(&self, path: &str, mut value: Value) {
        value["metadata"]["resourceVersion"] = self.next_version();
        self.objects
            .lock()
            .expect("lock")
            .insert(path.to_string(), value);
    }

    pub fn secret(&self, name: &str) -> Option<BTreeMap<String, String>> {
        let objects = self.objects.lock().expect("lock");
        let value = objects.get(&format!("/api/v1/namespaces/{NS}/secrets/{name}"))?;
        let data: BTreeMap<String, k8s_openapi::ByteString> =
            serde_json::from_value(value["data"].clone()).expect("data");
        Some(
            data.into_iter()
                .map(|(k, v)| (k, String::from_utf8(v.0).expect("utf8")))
                .collect(),
        )
    }

    pub fn put_secret(&self, name: &str, data: &[(&str, &str)]) {
        let data: BTreeMap<&str, k8s_openapi::ByteString> = data
            .iter()
            .map(|(k, v)| (*k, k8s_openapi::ByteString(v.as_bytes().to_vec())))
            .collect();
        self.objects.lock().expect("lock").insert(
            format!("/api/v1/namespaces/{NS}/secrets/{name}"),
            json!({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": name, "namespace": NS}, "data": data}),
        );
    }

    pub fn object(&self, path: &str) -> Option<Value> {
        self.objects.lock().expect("lock").get(path).cloned()
    }

    /// Stores the resource itself, as the API server would hold it.
    pub fn put_resource(&self, object: &ExecbridgeConfig) {
        self.objects.lock().expect("lock").insert(
            format!("/apis/execbridge.io/v1alpha1/namespaces/{NS}/execbridgeconfigs/demo"),
            serde_json::to_value(object).expect("json"),
        );
    }

    pub fn stored_status(&self) -> ExecbridgeConfigStatus {
        let path = format!("/apis/execbridge.io/v1alpha1/namespaces/{NS}/execbridgeconfigs/demo");
        serde_json::from_value(self.object(&path).expect("status")["status"].clone())
            .expect("status")
    }

    pub fn take_calls(&self) -> Vec<String> {
        std::mem::take(&mut *self.calls.lock().expect("lock"))
    }
}

pub fn serve(fake: Arc<FakeApi>) -> Client {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            send.send_response(fake.handle(request).await);
        }
    });
    Client::new(service, NS)
}
