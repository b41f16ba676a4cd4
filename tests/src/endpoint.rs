//! The local AWS endpoint that functions are pointed at: a recording proxy in front of moto that
//! also serves the CodePipeline job API (moto answers `PutJob*Result` with HTTP 500).
//!
//! It records every call (service and action, so tests can count mutating calls at the endpoint),
//! every job acknowledgement, and can inject faults into chosen actions.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::realism::{Intercept, Realism};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub service: String,
    pub action: String,
    /// Form parameters of query-protocol calls (EC2, ELBv2, SNS), decoded.
    pub params: Vec<(String, String)>,
    pub status: u16,
    /// When the request arrived (before any latency the endpoint adds).
    pub received: std::time::Instant,
    /// When the answer went back to the caller.
    pub answered: std::time::Instant,
    /// Applied, and its answer lost on the way back (`inject_lost_answer`).
    pub lost: bool,
}
impl Call {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether any parameter's name starts with `prefix` (`TargetGroupArns` matches
    /// `TargetGroupArns.member.1`).
    pub fn has_param(&self, prefix: &str) -> bool {
        self.params.iter().any(|(k, _)| k.starts_with(prefix))
    }

    /// A `ModifyRule` of this rule: a move of that route's traffic.
    pub fn moves_rule(&self, rule: &str) -> bool {
        self.action == "ModifyRule" && self.param("RuleArn") == Some(rule)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckKind {
    Success,
    Failure,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub job_id: String,
    pub kind: AckKind,
    pub continuation_token: Option<String>,
    pub summary: Option<String>,
    pub message: Option<String>,
    pub output_variables: HashMap<String, String>,
}

#[derive(Debug, Clone)]
struct Fault {
    action: String,
    /// Matching calls to let through before failing.
    skip: usize,
    remaining: usize,
    status: u16,
    code: String,
    /// Hold the call this long before answering (a hung call).
    hang: Option<Duration>,
    /// Let the call through (moto applies it), then lose the answer: the connection closes
    /// before it, as when AWS applied a call and the reply never reached the caller.
    lose_answer: bool,
}

struct State {
    calls: Vec<Call>,
    acks: Vec<Ack>,
    faults: Vec<Fault>,
    realism: Realism,
    /// The tests' clock, in unix seconds: what the realistic behaviours measure time by.
    clock: Arc<AtomicU64>,
    /// Pipeline executions by (pipeline, id) as `GetPipelineExecution` reports them; any other
    /// is `InProgress` (every release a test runs is a live execution), `NotFound` is an error.
    executions: HashMap<(String, String), String>,
}

#[derive(Clone)]
pub struct Endpoint {
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl Endpoint {
    /// Starts the endpoint on a free loopback port, forwarding to `upstream` (moto); `clock` is
    /// the tests' clock (unix seconds) that drains and health checks follow.
    pub async fn start(upstream: &str, clock: Arc<AtomicU64>) -> Endpoint {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the local endpoint");
        let addr: SocketAddr = listener.local_addr().expect("local address");
        let state = Arc::new(Mutex::new(State {
            calls: Vec::new(),
            acks: Vec::new(),
            faults: Vec::new(),
            realism: Realism::default(),
            clock,
            executions: HashMap::new(),
        }));
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let upstream = upstream.trim_end_matches('/').to_owned();
        let shared = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (state, client, upstream) = (shared.clone(), client.clone(), upstream.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        handle(state.clone(), client.clone(), upstream.clone(), request)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Endpoint {
            url: format!("http://{addr}"),
            state,
        }
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    pub fn acks(&self) -> Vec<Ack> {
        self.state.lock().unwrap().acks.clone()
    }

    pub fn ack_for(&self, job_id: &str) -> Option<Ack> {
        self.acks().into_iter().find(|a| a.job_id == job_id)
    }

    /// Calls of these actions made since `since` (an index into `calls()`).
    pub fn count(&self, since: usize, actions: &[&str]) -> usize {
        self.calls()[since..]
            .iter()
            .filter(|c| actions.contains(&c.action.as_str()))
            .count()
    }

    /// Calls of `action` made since `since`.
    pub fn calls_of(&self, since: usize, action: &str) -> Vec<Call> {
        self.calls()[since..]
            .iter()
            .filter(|c| c.action == action)
            .cloned()
            .collect()
    }

    /// Calls since `since` that tried to change something in AWS, whether or not they got
    /// through.
    pub fn mutations(&self, since: usize) -> Vec<Call> {
        self.calls()[since..]
            .iter()
            .filter(|c| is_mutation(c))
            .cloned()
            .collect()
    }

    /// `ModifyRule` calls on this rule since `since`: how often a route's traffic was moved.
    pub fn rule_moves(&self, since: usize, rule: &str) -> Vec<Call> {
        self.calls()[since..]
            .iter()
            .filter(|c| c.moves_rule(rule))
            .cloned()
            .collect()
    }

    pub fn mark(&self) -> usize {
        self.state.lock().unwrap().calls.len()
    }

    /// The next `times` calls of `action` fail with `status` and the AWS error `code`.
    /// `action` matches an operation name, or any part of a REST path (e.g. `rrset`).
    pub fn inject_fault(&self, action: &str, times: usize, status: u16, code: &str) {
        self.inject_fault_after(action, 0, times, status, code);
    }

    /// Like `inject_fault`, after letting `skip` matching calls succeed.
    pub fn inject_fault_after(
        &self,
        action: &str,
        skip: usize,
        times: usize,
        status: u16,
        code: &str,
    ) {
        self.state.lock().unwrap().faults.push(Fault {
            action: action.to_owned(),
            skip,
            remaining: times,
            status,
            code: code.to_owned(),
            hang: None,
            lose_answer: false,
        });
    }

    /// The next `times` calls of `action`, after `skip` pass untouched, are applied and then
    /// their answers lost: the SDK sees a dropped connection and retries a call AWS already
    /// carried out.
    pub fn inject_lost_answer(&self, action: &str, skip: usize, times: usize) {
        self.state.lock().unwrap().faults.push(Fault {
            action: action.to_owned(),
            skip,
            remaining: times,
            status: 0,
            code: String::new(),
            hang: None,
            lose_answer: true,
        });
    }

    /// The next `times` calls of `action` hang for `hang` (recorded with status 0), then fail.
    pub fn inject_hang(&self, action: &str, times: usize, hang: Duration) {
        self.state.lock().unwrap().faults.push(Fault {
            action: action.to_owned(),
            skip: 0,
            remaining: times,
            status: 0,
            code: String::new(),
            hang: Some(hang),
            lose_answer: false,
        });
    }

    /// A replayed ClientToken answers with the first call's answer unchanged (the EC2 guide says
    /// it "might" carry updated information, so cutover must not count on either).
    pub fn replay_first_answers(&self) {
        self.state.lock().unwrap().realism.replay_first_answers();
    }

    /// `DescribeInstances` stops listing this instance, as EC2 does about an hour after it ends.
    pub fn vanish(&self, instance_id: &str) {
        self.state.lock().unwrap().realism.vanish(instance_id);
    }

    /// What `GetPipelineExecution` says of this execution from now on (`Failed`, `Stopped`,
    /// `NotFound`, …): CodePipeline's job API is served here, moto has none of it.
    pub fn set_execution(&self, pipeline: &str, execution_id: &str, status: &str) {
        self.state.lock().unwrap().executions.insert(
            (pipeline.to_owned(), execution_id.to_owned()),
            status.to_owned(),
        );
    }

    /// Every call answers after `latency`, as AWS's round trips do.
    pub fn set_latency(&self, latency: Duration) {
        self.state.lock().unwrap().realism.latency = latency;
    }

    /// Targets go `initial` → `healthy` after `initial_s`, and drain for `drain_s` (test clock).
    pub fn model_targets(&self, initial_s: u64, drain_s: u64) {
        self.state
            .lock()
            .unwrap()
            .realism
            .model_targets(initial_s, drain_s);
    }

    /// RunInstances honours ClientToken as EC2 does.
    pub fn honour_client_tokens(&self) {
        self.state.lock().unwrap().realism.honour_client_tokens();
    }

    /// Makes a target `unhealthy`/`unavailable` with a reason code, or lets it be (`None`).
    pub fn force_health(&self, group: &str, instance: &str, state: Option<(&str, &str)>) {
        self.state
            .lock()
            .unwrap()
            .realism
            .force_health(group, instance, state);
    }

    /// A target's state now, as the modelled `DescribeTargetHealth` says it.
    pub fn target_health(&self, group: &str, instance: &str) -> Option<String> {
        let state = self.state.lock().unwrap();
        let now = state.clock.load(Ordering::SeqCst);
        state.realism.health(group, instance, now)
    }

    /// Instances terminated while a target group still held them (registered or draining).
    pub fn terminated_while_in_a_group(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .realism
            .terminated_while_in_a_group
            .clone()
    }

    /// SNS messages published so far, parsed (`MessageStructure: json`): (subject, message).
    pub fn published_messages(&self) -> Vec<(String, Value)> {
        self.published()
            .into_iter()
            .map(|(subject, message)| {
                let message = serde_json::from_str(&message)
                    .unwrap_or_else(|e| panic!("{subject}: not a JSON message structure: {e}"));
                (subject, message)
            })
            .collect()
    }

    /// SNS messages published so far: (subject, message).
    pub fn published(&self) -> Vec<(String, String)> {
        self.calls()
            .iter()
            .filter(|c| c.action == "Publish" && c.status == 200)
            .map(|c| {
                (
                    c.param("Subject").unwrap_or_default().to_owned(),
                    c.param("Message").unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }
}

const MUTATING_ELB: &[&str] = &[
    "ModifyRule",
    "ModifyListener",
    "RegisterTargets",
    "DeregisterTargets",
    "AddTags",
    "RemoveTags",
    "CreateRule",
    "DeleteRule",
];

/// Everything but reads, job acknowledgements and notifications.
/// The longest chain of `calls` in which each call was sent after the one before it was
/// answered: the sequential round trips they cost. Calls made side by side count once.
pub fn round_trips(calls: &[Call]) -> usize {
    let mut order: Vec<usize> = (0..calls.len()).collect();
    order.sort_by_key(|&i| calls[i].received);
    let mut depth = vec![0usize; calls.len()];
    for (k, &i) in order.iter().enumerate() {
        depth[i] = 1 + order[..k]
            .iter()
            .filter(|&&j| calls[j].answered <= calls[i].received)
            .map(|&j| depth[j])
            .max()
            .unwrap_or(0);
    }
    depth.into_iter().max().unwrap_or(0)
}

/// Round trips made before the first call that moved product (`None` when none did).
pub fn round_trips_before_product_moved(calls: &[Call], product_rule: &str) -> Option<usize> {
    let moved = calls.iter().find(|c| c.moves_rule(product_rule))?;
    let before: Vec<Call> = calls
        .iter()
        .filter(|c| c.answered <= moved.received)
        .cloned()
        .collect();
    Some(round_trips(&before))
}

pub fn is_mutation(call: &Call) -> bool {
    let read = ["Describe", "List", "Get", "GET "]
        .iter()
        .any(|p| call.action.starts_with(p));
    let bookkeeping =
        ["PutJobSuccessResult", "PutJobFailureResult", "Publish"].contains(&call.action.as_str());
    !read && !bookkeeping
}

pub fn is_mutating_elb(call: &Call) -> bool {
    call.service == "elasticloadbalancing" && MUTATING_ELB.contains(&call.action.as_str())
}

/// One request as the endpoint sees it: which service and action, and its parameters.
struct Received {
    service: String,
    /// `X-Amz-Target` of JSON-protocol calls (CodePipeline), empty for the query protocol.
    target: String,
    action: String,
    params: Vec<(String, String)>,
    received: std::time::Instant,
}

impl Received {
    fn read(parts: &hyper::http::request::Parts, body: &[u8]) -> Received {
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let target = header("x-amz-target");
        let service = credential_scope_service(&header("authorization")).unwrap_or_default();
        let params = if service == "route53" {
            route53_params(body)
        } else if target.is_empty() {
            form_params(body)
        } else {
            json_params(body)
        };
        let action = if let Some((_, operation)) = target.split_once('.') {
            operation.to_owned()
        } else if let Some((_, action)) = params.iter().find(|(k, _)| k == "Action") {
            action.clone()
        } else {
            format!("{} {}", parts.method, parts.uri.path())
        };
        Received {
            service,
            target,
            action,
            params,
            received: std::time::Instant::now(),
        }
    }
}

async fn handle(
    state: Arc<Mutex<State>>,
    client: Client<HttpConnector, Full<Bytes>>,
    upstream: String,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Box<dyn std::error::Error + Send + Sync>> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await?.to_bytes();
    let call = Received::read(&parts, &body);
    let latency = state.lock().unwrap().realism.latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let lose_answer = match injected_fault(&state, &call).await {
        Injected::Answer(response) => return Ok(response),
        Injected::LoseAnswer => true,
        Injected::Nothing => false,
    };
    let response = if let Some(response) = modelled(&state, &call) {
        response
    } else if call.target.starts_with("CodePipeline_20150709.") {
        codepipeline_response(&state, &call, &body)
    } else {
        proxy(&state, &client, &upstream, parts, body, &call).await?
    };
    if lose_answer {
        if let Some(recorded) = state
            .lock()
            .unwrap()
            .calls
            .iter_mut()
            .rev()
            .find(|c| c.received == call.received && c.action == call.action)
        {
            recorded.lost = true;
        }
        // An error from the service makes hyper close the connection without an answer.
        return Err("the answer was lost on the way back (injected by the test endpoint)".into());
    }
    Ok(response)
}

enum Injected {
    Answer(Response<Full<Bytes>>),
    LoseAnswer,
    Nothing,
}

/// An injected fault for this call: an error answer, a hang after which it goes on, or an answer
/// to lose once the call is applied.
async fn injected_fault(state: &Arc<Mutex<State>>, call: &Received) -> Injected {
    let fault = {
        let mut state = state.lock().unwrap();
        let action = &call.action;
        let Some(matching) = state.faults.iter_mut().find(|f| {
            (&f.action == action || (action.contains('/') && action.contains(&f.action)))
                && f.remaining > 0
        }) else {
            return Injected::Nothing;
        };
        if matching.skip > 0 {
            matching.skip -= 1;
            return Injected::Nothing;
        }
        matching.remaining -= 1;
        matching.clone()
    };
    if fault.lose_answer {
        return Injected::LoseAnswer;
    }
    record(state, call, fault.status);
    if let Some(hang) = fault.hang {
        // Recorded with status 0 when it starts; by the time it ends the caller has given up.
        tokio::time::sleep(hang).await;
    }
    Injected::Answer(error_response(
        &call.service,
        &call.target,
        fault.status,
        &fault.code,
        "fault injected by the test endpoint",
    ))
}

/// An answer from the AWS behaviours moto lacks, when one applies (`realism`).
fn modelled(state: &Arc<Mutex<State>>, call: &Received) -> Option<Response<Full<Bytes>>> {
    let intercepted = {
        let mut state = state.lock().unwrap();
        state.realism.before(&call.action, &call.params)
    };
    match intercepted {
        Intercept::Forward => None,
        Intercept::Answer(body) => {
            record(state, call, 200);
            let mut response = Response::new(Full::new(Bytes::from(body)));
            response
                .headers_mut()
                .insert("content-type", "text/xml".parse().unwrap());
            Some(response)
        }
        Intercept::Error {
            status,
            code,
            message,
        } => {
            record(state, call, status);
            Some(error_response(
                &call.service,
                &call.target,
                status,
                &code,
                &message,
            ))
        }
    }
}

/// CodePipeline's job API, served here since moto answers it with HTTP 500.
fn codepipeline_response(
    state: &Arc<Mutex<State>>,
    call: &Received,
    body: &[u8],
) -> Response<Full<Bytes>> {
    let (status, reply) = codepipeline(state, &call.action, body);
    record(state, call, status.as_u16());
    let mut response = Response::new(Full::new(Bytes::from(reply.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        "content-type",
        "application/x-amz-json-1.1".parse().unwrap(),
    );
    response
}

/// Everything else goes to moto, and what it answers back to the caller.
async fn proxy(
    state: &Arc<Mutex<State>>,
    client: &Client<HttpConnector, Full<Bytes>>,
    upstream: &str,
    parts: hyper::http::request::Parts,
    body: Bytes,
    call: &Received,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let uri = format!(
        "{upstream}{}",
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let mut forward = Request::builder().method(parts.method.clone()).uri(uri);
    for (name, value) in &parts.headers {
        if name != "host" && name != "connection" {
            forward = forward.header(name, value);
        }
    }
    let forward = forward
        .body(Full::new(body))
        .expect("a forwardable request");
    let (status, headers, reply) = match client.request(forward).await {
        Ok(response) => {
            let (parts, body) = response.into_parts();
            (
                parts.status,
                parts.headers,
                body.collect().await?.to_bytes(),
            )
        }
        Err(error) => {
            let reply = Bytes::from(format!("moto unreachable: {error}"));
            (StatusCode::BAD_GATEWAY, Default::default(), reply)
        }
    };
    let reply = {
        let mut state = state.lock().unwrap();
        let now = state.clock.load(Ordering::SeqCst);
        state
            .realism
            .after(&call.action, &call.params, status.as_u16(), &reply, now);
        state
            .realism
            .rewrite(&call.action, &call.params, reply, now)
    };
    record(state, call, status.as_u16());
    let mut response = Response::new(Full::new(reply));
    *response.status_mut() = status;
    for (name, value) in &headers {
        if name != "transfer-encoding" && name != "connection" && name != "content-length" {
            response.headers_mut().insert(name, value.clone());
        }
    }
    Ok(response)
}

fn record(state: &Arc<Mutex<State>>, call: &Received, status: u16) {
    state.lock().unwrap().calls.push(Call {
        service: call.service.clone(),
        action: call.action.clone(),
        params: call.params.clone(),
        status,
        received: call.received,
        answered: std::time::Instant::now(),
        lost: false,
    });
}

/// The CodePipeline job API, as AWS answers it: a second acknowledgement of one job is refused
/// with `InvalidJobStateException`.
fn codepipeline(state: &Arc<Mutex<State>>, action: &str, body: &[u8]) -> (StatusCode, Value) {
    let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let job_id = request["jobId"].as_str().unwrap_or_default().to_owned();
    let kind = match action {
        "PutJobSuccessResult" => AckKind::Success,
        "PutJobFailureResult" => AckKind::Failure,
        "GetPipelineExecution" => {
            let pipeline = request["pipelineName"].as_str().unwrap_or_default();
            let id = request["pipelineExecutionId"].as_str().unwrap_or_default();
            let state = state.lock().unwrap();
            let status = state
                .executions
                .get(&(pipeline.to_owned(), id.to_owned()))
                .map_or("InProgress", String::as_str);
            if status == "NotFound" {
                return (
                    StatusCode::BAD_REQUEST,
                    json!({"__type": "PipelineExecutionNotFoundException", "message": format!("execution {id} of {pipeline} not found")}),
                );
            }
            return (
                StatusCode::OK,
                json!({"pipelineExecution": {"pipelineName": pipeline, "pipelineExecutionId": id, "status": status}}),
            );
        }
        other => {
            return (
                StatusCode::BAD_REQUEST,
                json!({"__type": "UnknownOperationException", "message": format!("{other} is not served locally")}),
            )
        }
    };
    let mut state = state.lock().unwrap();
    if state.acks.iter().any(|a| a.job_id == job_id) {
        return (
            StatusCode::BAD_REQUEST,
            json!({"__type": "InvalidJobStateException", "message": format!("job {job_id} is already complete")}),
        );
    }
    let output_variables = request["outputVariables"]
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    state.acks.push(Ack {
        job_id,
        kind,
        continuation_token: request["continuationToken"].as_str().map(str::to_owned),
        summary: request["executionDetails"]["summary"]
            .as_str()
            .map(str::to_owned),
        message: request["failureDetails"]["message"]
            .as_str()
            .map(str::to_owned),
        output_variables,
    });
    (StatusCode::OK, json!({}))
}

fn error_response(
    service: &str,
    target: &str,
    status: u16,
    code: &str,
    message: &str,
) -> Response<Full<Bytes>> {
    let (body, content_type) = if !target.is_empty() {
        (
            json!({"__type": code, "message": message}).to_string(),
            "application/x-amz-json-1.1",
        )
    } else if service == "ec2" {
        (
            format!("<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>injected</RequestID></Response>"),
            "text/xml",
        )
    } else {
        (
            format!("<ErrorResponse><Error><Type>Receiver</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>injected</RequestId></ErrorResponse>"),
            "text/xml",
        )
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response
        .headers_mut()
        .insert("content-type", content_type.parse().unwrap());
    response
}

/// `AWS4-HMAC-SHA256 Credential=KEY/20240101/us-east-1/ec2/aws4_request, ...` → `ec2`.
fn credential_scope_service(authorization: &str) -> Option<String> {
    let credential = authorization.split("Credential=").nth(1)?;
    credential
        .split(',')
        .next()?
        .split('/')
        .nth(3)
        .map(str::to_owned)
}

/// The top-level scalar fields of a JSON-protocol request (SSM's `Name`, `Path`, …).
fn json_params(body: &[u8]) -> Vec<(String, String)> {
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    fields
        .into_iter()
        .filter_map(|(key, value)| match value {
            Value::String(text) => Some((key, text)),
            Value::Bool(_) | Value::Number(_) => Some((key, value.to_string())),
            _ => None,
        })
        .collect()
}

/// A Route 53 change batch (XML) as `Name.N` and `Type.N`, one of each per record set.
fn route53_params(body: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(body);
    let mut params = Vec::new();
    for tag in ["Name", "Type"] {
        let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
        let mut rest = text.as_ref();
        let mut n = 0;
        while let Some(start) = rest.find(&open) {
            let value_start = start + open.len();
            let Some(end) = rest[value_start..].find(&close) else {
                break;
            };
            n += 1;
            params.push((
                format!("{tag}.{n}"),
                rest[value_start..value_start + end].to_owned(),
            ));
            rest = &rest[value_start + end..];
        }
    }
    params
}

fn form_params(body: &[u8]) -> Vec<(String, String)> {
    let looks_like_form = body.contains(&b'=')
        && !body.trim_ascii_start().starts_with(b"{")
        && !body.trim_ascii_start().starts_with(b"<");
    if !looks_like_form {
        return Vec::new();
    }
    form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}
