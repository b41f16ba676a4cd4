//! The local AWS endpoint for tests and the demo: moto on loopback, a recording proxy that also
//! serves CodePipeline's job API, a fixture world seeded through the real SDK, and a driver that
//! invokes functions the way CodePipeline does (re-invoking with the continuation token).

pub mod endpoint;
pub mod fixture;
pub mod lambda;
pub mod moto;
pub mod realism;
pub mod runtime_api;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use aws_config::SdkConfig;
use cutover::aws::Aws;
use cutover::settings::Registry;
use cutover::{App, Function};
use serde_json::Value;

pub use endpoint::{Ack, AckKind, Call, Endpoint};
pub use fixture::{Base, Clients, ServiceFixture};
pub use moto::Moto;

/// The service most tests release, and its settings variable.
pub const SERVICE: &str = "mobile-zum-api";
pub const VARIABLE: &str = "MOBILE_ZUM_API";
/// Release ids as CodePipeline makes them (execution ids), in the order tests release them.
pub const R1: &str = "11111111-aaaa-4bbb-8ccc-000000000001";
pub const R2: &str = "22222222-aaaa-4bbb-8ccc-000000000002";
pub const R3: &str = "33333333-aaaa-4bbb-8ccc-000000000003";

/// The `UserParameters` of a release of `SERVICE`.
pub fn params(release: &str) -> Value {
    serde_json::json!({"service": SERVICE, "release": release})
}

/// A running local AWS: moto, the endpoint in front of it, and the seeded base world.
pub struct Local {
    pub moto: Moto,
    pub endpoint: Endpoint,
    /// For seeding and inspecting the world (two attempts per call).
    pub config: SdkConfig,
    /// The functions' own configuration (retries, timeouts), pointed at the endpoint.
    pub production: SdkConfig,
    pub clients: Clients,
    pub base: Base,
    /// The clock the functions see, in unix seconds; tests move it instead of sleeping.
    pub now: Arc<AtomicU64>,
    job_counter: Arc<AtomicU32>,
}

/// Starts a local AWS; fails the test, saying why, when moto cannot run here.
pub async fn local(elastic_ips: usize) -> Local {
    let moto = Moto::start();
    let now = Arc::new(AtomicU64::new(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    ));
    let endpoint = Endpoint::start(&moto.url, now.clone()).await;
    let config = fixture::sdk_config(&endpoint.url).await;
    let production = fixture::production_sdk_config(&endpoint.url).await;
    let clients = Clients::new(&config);
    let base = fixture::seed_base(&clients, elastic_ips).await;
    Local {
        moto,
        endpoint,
        config,
        production,
        clients,
        base,
        now,
        job_counter: Arc::new(AtomicU32::new(0)),
    }
}

pub fn events_dir() -> PathBuf {
    moto::repo_root().join("events")
}

/// A sample event from `events/`, parsed.
pub fn sample_event(file: &str) -> Value {
    let path = events_dir().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The sample alarm state-change event, sent at `at` (unix seconds): cutover acts on an alarm
/// event only inside the bake window of the release that serves, by the event's own time.
pub fn alarm_event(at: u64) -> Value {
    let mut event = sample_event("switch-listener-alarm.json");
    let time = aws_smithy_types::DateTime::from_secs(at as i64)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .expect("a time RFC 3339 can write");
    event["time"] = Value::from(time);
    event
}

/// A CodePipeline job event built from the sample file of `function`, with this job id,
/// these `UserParameters` and (when CodePipeline continues a job) a continuation token.
pub fn job_event(
    function: Function,
    job_id: &str,
    user_parameters: &Value,
    continuation: Option<&str>,
) -> Value {
    let mut event = sample_event(&format!("{}.json", function.as_str()));
    let job = &mut event["CodePipeline.job"];
    job["id"] = Value::from(job_id);
    job["data"]["actionConfiguration"]["configuration"]["UserParameters"] =
        Value::from(user_parameters.to_string());
    match continuation {
        Some(token) => job["data"]["continuationToken"] = Value::from(token),
        None => {
            if let Some(data) = job["data"].as_object_mut() {
                data.remove("continuationToken");
            }
        }
    }
    event
}

/// What one CodePipeline action saw: every invocation's acknowledgement, in order.
#[derive(Debug, Clone)]
pub struct JobRun {
    pub acks: Vec<Ack>,
    pub responses: Vec<Value>,
    /// The Lambda invocation itself failed (e.g. the acknowledgement could not be sent).
    pub error: Option<String>,
}
impl JobRun {
    pub fn last(&self) -> &Ack {
        self.acks.last().expect("a job run has at least one ack")
    }

    pub fn succeeded(&self) -> bool {
        self.error.is_none()
            && self
                .acks
                .last()
                .is_some_and(|a| a.kind == AckKind::Success && a.continuation_token.is_none())
    }
    pub fn failure_message(&self) -> Option<&str> {
        if let Some(error) = &self.error {
            return Some(error);
        }
        let last = self.last();
        (last.kind == AckKind::Failure).then(|| last.message.as_deref().unwrap_or_default())
    }

    pub fn continuations(&self) -> usize {
        self.acks
            .iter()
            .filter(|a| a.continuation_token.is_some())
            .count()
    }
}

impl Local {
    /// The functions' App as Lambda builds it (the production retry and timeout configuration),
    /// with these settings variables, on the tests' clock.
    pub fn app(&self, settings: &[(&str, String)]) -> App {
        let now = self.now.clone();
        App {
            registry: Registry::from_vars(settings.iter().map(|(k, v)| (k.to_string(), v.clone()))),
            cloud: Aws::new(&self.production),
            topic_arn: Some(self.base.topic_arn.clone()),
            clock: Arc::new(move || now.load(Ordering::SeqCst)),
            rollback_function: "cutover-switch-listener".to_owned(),
            parameters: Default::default(),
            // Invocations here run one at a time, in process: no rollback is ever in flight when
            // cleanup reads, so cleanup need not wait past the bake for one to land. The margin
            // itself is proven by `races::cleanup_leaves_a_retired_fleet_until_no_rollback_can_land`
            // and by the release model (`plan/tests/model.rs`).
            switch_listener_timeout_s: 0,
        }
    }

    /// A local AWS with `SERVICE` seeded (its slots and routes), the first `elastic_ips`
    /// addresses, and the App with its settings: `count` instances plus the `extra` keys.
    pub async fn with_service(
        count: u32,
        elastic_ips: usize,
        extra: Value,
    ) -> (Local, ServiceFixture, App) {
        let local = local(elastic_ips).await;
        let service = fixture::seed_service(&local.clients, &local.base, SERVICE, 10).await;
        let settings = fixture::settings_json(&local.base, count, elastic_ips, extra);
        let app = local.app(&[(VARIABLE, settings)]);
        (local, service, app)
    }

    /// Every AWS behaviour the endpoint models, on at once (latency is its own switch): targets
    /// take `initial_s` to turn healthy and `drain_s` to drain, ClientToken is honoured.
    pub fn behave_like_aws(&self, initial_s: u64, drain_s: u64) {
        self.endpoint.model_targets(initial_s, drain_s);
        self.endpoint.honour_client_tokens();
    }

    /// `SERVICE`'s slots and routes as the functions find them.
    pub async fn alb(&self) -> cutover::world::Alb {
        Aws::new(&self.config)
            .alb(SERVICE)
            .await
            .expect("the service's slots and routes")
    }

    /// The target group product forwards all its traffic to, or "split" mid-shift.
    pub async fn product_forward(&self) -> String {
        let alb = self.alb().await;
        alb.product
            .forward
            .sole_target()
            .unwrap_or("split")
            .to_owned()
    }

    /// The tests' clock, in unix seconds.
    pub fn now(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }

    pub fn advance(&self, seconds: u64) {
        self.now.fetch_add(seconds, Ordering::SeqCst);
    }

    pub fn next_job_id(&self) -> String {
        format!(
            "job-{:04}",
            self.job_counter.fetch_add(1, Ordering::SeqCst) + 1
        )
    }

    /// Runs one pipeline action to its end, re-invoking with each continuation token the way
    /// CodePipeline does (each time as a new job), at most `max_invocations` times.
    /// provision → register-target → switch-listener of one release, each asserted to succeed.
    pub async fn release(&self, app: &App, user_parameters: &Value) {
        for function in [
            Function::Provision,
            Function::RegisterTarget,
            Function::SwitchListener,
        ] {
            let run = self.run_job(app, function, user_parameters).await;
            assert!(
                run.succeeded(),
                "{} of {user_parameters}: {:?}",
                function.as_str(),
                run.last()
            );
        }
    }

    pub async fn run_job(&self, app: &App, function: Function, user_parameters: &Value) -> JobRun {
        self.run_job_bounded(app, function, user_parameters, 10)
            .await
    }

    pub async fn run_job_bounded(
        &self,
        app: &App,
        function: Function,
        user_parameters: &Value,
        max_invocations: usize,
    ) -> JobRun {
        self.run_job_advancing(app, function, user_parameters, max_invocations, 0)
            .await
    }

    /// Like `run_job_bounded`, moving the test clock `advance_s` after every continuation, the
    /// way time passes between CodePipeline's re-invocations.
    pub async fn run_job_advancing(
        &self,
        app: &App,
        function: Function,
        user_parameters: &Value,
        max_invocations: usize,
        advance_s: u64,
    ) -> JobRun {
        let next_id = || self.next_job_id();
        play_action(&self.endpoint, next_id, max_invocations, |job_id, token| {
            if token.is_some() {
                self.advance(advance_s);
            }
            let event = job_event(function, &job_id, user_parameters, token.as_deref());
            async move { app.handle(function, event).await.map_err(|e| e.to_string()) }
        })
        .await
    }
}

/// Plays CodePipeline for one action: a new job per invocation, each given the last
/// continuation token, until a job ends without one or `max_invocations` run out. `invoke` runs
/// the function (in process, or through `cargo lambda invoke`) for a job id and token.
pub async fn play_action<F, Fut>(
    endpoint: &Endpoint,
    mut next_job_id: impl FnMut() -> String,
    max_invocations: usize,
    mut invoke: F,
) -> JobRun
where
    F: FnMut(String, Option<String>) -> Fut,
    Fut: std::future::Future<Output = Result<Value, String>>,
{
    let mut run = JobRun {
        acks: Vec::new(),
        responses: Vec::new(),
        error: None,
    };
    let mut token: Option<String> = None;
    for _ in 0..max_invocations {
        let job_id = next_job_id();
        match invoke(job_id.clone(), token.clone()).await {
            Ok(response) => run.responses.push(response),
            Err(error) => {
                run.error = Some(error);
                return run;
            }
        }
        let Some(ack) = endpoint.ack_for(&job_id) else {
            run.error = Some(format!("job {job_id} was not acknowledged"));
            return run;
        };
        token = ack.continuation_token.clone();
        run.acks.push(ack);
        if token.is_none() {
            return run;
        }
    }
    run
}

/// Everything a release can change for `service`, as comparable data: instances with their
/// tags, both slots' targets, both routes, the DNS records and the EIP associations.
pub async fn world_snapshot(local: &Local, service: &str) -> Value {
    let aws = Aws::new(&local.config);
    let instances = aws
        .instances(cutover::aws::InstanceQuery::Service(service))
        .await
        .expect("instances");
    let alb = aws.alb(service).await.expect("alb");
    let dns = aws.dns(&local.base.zone_id, service).await.expect("dns");
    let addresses = aws
        .addresses(&local.base.elastic_ips)
        .await
        .expect("addresses");
    serde_json::json!({
        "instances": instances,
        "alb": alb,
        "dns": dns.records,
        "addresses": addresses.iter().map(|a| (a.allocation_id.clone(), a.instance_id.clone())).collect::<Vec<_>>(),
    })
}
