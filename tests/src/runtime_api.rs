//! A minimal Lambda Runtime API (2018-06-01) for the benchmark: it records when a function
//! first asks for work (what AWS reports as Init Duration) and hands it events one at a time.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

/// Where a function's answer goes: (succeeded, body).
type Reply = oneshot::Sender<(bool, Bytes)>;
type Pending = (Bytes, Reply);

struct State {
    first_next: Mutex<Option<Instant>>,
    queue: tokio::sync::Mutex<mpsc::Receiver<Pending>>,
    waiting: Mutex<Vec<(String, Reply)>>,
    counter: Mutex<u64>,
}

#[derive(Clone)]
pub struct RuntimeApi {
    pub addr: SocketAddr,
    state: Arc<State>,
    sender: mpsc::Sender<Pending>,
}

impl RuntimeApi {
    pub async fn start() -> RuntimeApi {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let (sender, receiver) = mpsc::channel(1);
        let state = Arc::new(State {
            first_next: Mutex::new(None),
            queue: tokio::sync::Mutex::new(receiver),
            waiting: Mutex::new(Vec::new()),
            counter: Mutex::new(0),
        });
        let shared = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = shared.clone();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |request| handle(state.clone(), request));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        RuntimeApi {
            addr,
            state,
            sender,
        }
    }

    /// When a function first called `/next`, if it did.
    pub fn first_next(&self) -> Option<Instant> {
        *self.state.first_next.lock().unwrap()
    }

    pub fn reset(&self) {
        *self.state.first_next.lock().unwrap() = None;
    }

    /// Hands one event to the function and waits for its answer: (succeeded, body).
    pub async fn invoke(&self, event: &serde_json::Value) -> (bool, Bytes) {
        let (tx, rx) = oneshot::channel();
        self.sender
            .send((Bytes::from(event.to_string()), tx))
            .await
            .expect("runtime API alive");
        rx.await.expect("the function answered")
    }
}

async fn handle(
    state: Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let path = request.uri().path().to_owned();
    let body = request.into_body().collect().await?.to_bytes();
    if path.ends_with("/runtime/invocation/next") {
        state
            .first_next
            .lock()
            .unwrap()
            .get_or_insert_with(Instant::now);
        let Some((event, reply)) = state.queue.lock().await.recv().await else {
            return Ok(Response::new(Full::new(Bytes::new())));
        };
        let id = {
            let mut counter = state.counter.lock().unwrap();
            *counter += 1;
            format!("bench-{counter}")
        };
        state.waiting.lock().unwrap().push((id.clone(), reply));
        let mut response = Response::new(Full::new(event));
        let headers = response.headers_mut();
        headers.insert("lambda-runtime-aws-request-id", id.parse().unwrap());
        headers.insert(
            "lambda-runtime-deadline-ms",
            "9999999999999".parse().unwrap(),
        );
        headers.insert(
            "lambda-runtime-invoked-function-arn",
            "arn:aws:lambda:us-east-1:111111111111:function:bench"
                .parse()
                .unwrap(),
        );
        headers.insert(
            "lambda-runtime-trace-id",
            "Root=1-00000000-000000000000000000000000".parse().unwrap(),
        );
        return Ok(response);
    }
    let succeeded = path.ends_with("/response");
    if let Some(id) = path.split('/').nth(4) {
        let mut waiting = state.waiting.lock().unwrap();
        if let Some(position) = waiting.iter().position(|(w, _)| w == id) {
            let (_, reply) = waiting.remove(position);
            let _ = reply.send((succeeded, body));
        }
    }
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::ACCEPTED;
    Ok(response)
}
