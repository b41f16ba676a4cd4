//! The CodePipeline contract of the job loop, against an in-memory port: exactly one
//! acknowledgement whatever happens, continuation tokens that keep the start of a wait, bounded
//! rounds, the deadline hand-over, and which outcomes tell the team. Milliseconds, no moto.

use std::sync::Mutex;
use std::time::Duration;

use super::*;
use crate::plan::tests::{alb, instance, running, target, NOW};
use crate::world::{
    Alb, Execution, Health, Instance, InstanceState, Stage, Step, TAG_INDEX, TAG_RELEASE,
};

const TOPIC: &str = "arn:aws:sns:us-east-1:1:cutover-releases";
const R2: &str = "r2";

/// The world as the port shows it, and what was done to it.
struct World {
    seen: Seen,
    /// The state a launched instance shows at the next look.
    launched: InstanceState,
    executed: Vec<Step>,
    acks: Vec<(String, Acknowledgement)>,
    published: Vec<String>,
    observations: usize,
    /// Fail the nth `execute` (0-based) with an AWS error.
    fail_execute: Option<usize>,
    fail_observe: bool,
    fail_acknowledge: bool,
    fail_publish: bool,
    /// How long a launch takes.
    launch_latency: Duration,
    /// SSM parameters by name, and how many reads of them were made.
    parameters: BTreeMap<String, String>,
    parameter_reads: usize,
    /// Which parameters were read, in order (`every parameter` for a read of all).
    parameter_log: Vec<String>,
    /// The nth `execute` (0-based) hangs this long, as a call to an endpoint that stopped answering.
    hang_execute: Option<(usize, Duration)>,
}

#[derive(Clone)]
struct FakeCloud(Arc<Mutex<World>>);

fn aws_error(operation: &'static str) -> Error {
    Error::Aws {
        operation,
        code: "InternalError".into(),
        message: "injected by the fake".into(),
    }
}

impl FakeCloud {
    fn new(instances: Vec<Instance>) -> Self {
        FakeCloud(Arc::new(Mutex::new(World {
            seen: Seen {
                alb: alb(vec![], vec![]),
                instances,
                groups: Vec::new(),
                templates: Vec::new(),
                dns: None,
                addresses: Vec::new(),
                alarms: Vec::new(),
                lock_holder: None,
                executions: BTreeMap::new(),
            },
            launched: InstanceState::Running,
            executed: Vec::new(),
            acks: Vec::new(),
            published: Vec::new(),
            observations: 0,
            fail_execute: None,
            fail_observe: false,
            fail_acknowledge: false,
            fail_publish: false,
            launch_latency: Duration::ZERO,
            hang_execute: None,
            parameters: BTreeMap::new(),
            parameter_reads: 0,
            parameter_log: Vec::new(),
        })))
    }

    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.0.lock().unwrap()
    }

    fn acks_of(&self, job: &str) -> Vec<Acknowledgement> {
        self.world()
            .acks
            .iter()
            .filter(|(id, _)| id == job)
            .map(|(_, ack)| ack.clone())
            .collect()
    }
}

impl Cloud for FakeCloud {
    async fn parameters(&self, which: Parameters<'_>) -> Result<Vec<(String, String)>, Error> {
        let mut world = self.world();
        world.parameter_reads += 1;
        let read = match which {
            Parameters::All => "every parameter".to_owned(),
            Parameters::One(name) => name.to_owned(),
        };
        world.parameter_log.push(read);
        Ok(world
            .parameters
            .iter()
            .filter(|(name, _)| match which {
                Parameters::All => true,
                Parameters::One(one) => one == name.as_str(),
            })
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect())
    }

    async fn observe(&self, _look: Look<'_>) -> Result<Seen, Error> {
        let mut world = self.world();
        world.observations += 1;
        if world.fail_observe {
            return Err(aws_error("DescribeInstances"));
        }
        Ok(world.seen.clone())
    }

    async fn alb(
        &self,
        _service: &ServiceName,
        _function: Function,
        _listener: impl std::future::Future<Output = Option<String>> + Send,
    ) -> Result<Alb, Error> {
        Ok(self.world().seen.alb.clone())
    }

    async fn execution(&self, _pipeline: &str, _id: &str) -> Result<Execution, Error> {
        Ok(Execution::Ended("Failed".into()))
    }

    async fn instances(&self, _query: InstanceQuery<'_>) -> Result<Vec<Instance>, Error> {
        Ok(self.world().seen.instances.clone())
    }

    async fn execute(&self, step: &Step) -> Result<(), Error> {
        let hang = {
            let mut world = self.world();
            match world.hang_execute {
                Some((n, hang)) if n == world.executed.len() => {
                    world.executed.push(step.clone());
                    Some(hang)
                }
                _ => None,
            }
        };
        if let Some(hang) = hang {
            tokio::time::sleep(hang).await;
            return Ok(());
        }
        let latency = {
            let mut world = self.world();
            if world.fail_execute == Some(world.executed.len()) {
                world.executed.push(step.clone());
                return Err(aws_error("ModifyRule"));
            }
            world.executed.push(step.clone());
            if let Step::Launch { tags, .. } = step {
                let state = world.launched;
                let index: u32 = tags[TAG_INDEX].parse().unwrap();
                let id = format!("i-{}-{index}", world.executed.len());
                let mut launched =
                    instance(&id, &tags[TAG_RELEASE], index, Stage::PreProduct, state);
                launched.launched_at = Some(NOW);
                world.seen.instances.push(launched);
            }
            world.launch_latency
        };
        if matches!(step, Step::Launch { .. }) && !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        Ok(())
    }

    async fn acknowledge(&self, job_id: &str, ack: &Acknowledgement) -> Result<bool, Error> {
        let mut world = self.world();
        if world.fail_acknowledge {
            return Err(aws_error("PutJobSuccessResult"));
        }
        let first = !world.acks.iter().any(|(id, _)| id == job_id);
        world.acks.push((job_id.to_owned(), ack.clone()));
        Ok(first)
    }

    async fn publish(&self, _topic: &str, notification: &Notification) -> Result<(), Error> {
        let mut world = self.world();
        if world.fail_publish {
            return Err(aws_error("Publish"));
        }
        world.published.push(notification.subject.clone());
        Ok(())
    }
}

fn app(cloud: &FakeCloud, count: u32) -> App<FakeCloud> {
    let settings = format!(
        r#"{{"AMI":"ami-1","INSTANCE_TYPE":"t3.small","SUBNET":["subnet-a"],"SG":"sg-1","COUNT":{count}}}"#
    );
    App {
        registry: Registry::from_vars([("API".to_owned(), settings)]),
        cloud: cloud.clone(),
        topic_arn: Some(TOPIC.to_owned()),
        clock: Arc::new(|| NOW),
        rollback_function: "cutover-switch-listener".to_owned(),
        parameters: Default::default(),
        switch_listener_timeout_s: crate::plan::SWITCH_LISTENER_TIMEOUT_S,
    }
}

/// A CodePipeline job event from `events/`, for service `api`.
fn job(id: &str, parameters: Value, token: Option<&str>) -> Value {
    let mut event: Value =
        serde_json::from_str(include_str!("../../../../events/provision.json")).unwrap();
    let job = &mut event["CodePipeline.job"];
    job["id"] = Value::from(id);
    job["data"]["actionConfiguration"]["configuration"]["UserParameters"] =
        Value::from(parameters.to_string());
    if let Some(token) = token {
        job["data"]["continuationToken"] = Value::from(token);
    }
    event
}

fn params() -> Value {
    json!({"service": "api", "release": R2})
}

fn is_success(ack: &Acknowledgement) -> bool {
    matches!(
        ack,
        Acknowledgement::Success {
            continuation_token: None,
            ..
        }
    )
}

fn token(ack: &Acknowledgement) -> Option<String> {
    match ack {
        Acknowledgement::Success {
            continuation_token, ..
        } => continuation_token.clone(),
        Acknowledgement::Failure { .. } => None,
    }
}

#[tokio::test]
async fn every_outcome_is_acknowledged_exactly_once_and_only_real_outcomes_notify() {
    struct Case {
        name: &'static str,
        function: Function,
        params: Value,
        prepare: fn(&FakeCloud),
        succeeded: bool,
        continues: bool,
        notifies: bool,
    }
    let healthy_release = |cloud: &FakeCloud| {
        let mut world = cloud.world();
        world.seen.instances = vec![running("i-1", R2, 1, Stage::PreProduct)];
    };
    let cases = [
        Case {
            name: "done",
            function: Function::Provision,
            params: params(),
            prepare: healthy_release,
            succeeded: true,
            continues: false,
            notifies: true,
        },
        Case {
            name: "waits",
            function: Function::Provision,
            params: params(),
            prepare: |cloud| cloud.world().launched = InstanceState::Pending,
            succeeded: true,
            continues: true,
            notifies: false,
        },
        Case {
            name: "refused",
            function: Function::RegisterTarget,
            params: params(),
            prepare: |_| {},
            succeeded: false,
            continues: false,
            notifies: true,
        },
        Case {
            name: "a step fails",
            function: Function::Provision,
            params: params(),
            prepare: |cloud| cloud.world().fail_execute = Some(0),
            succeeded: false,
            continues: false,
            notifies: true,
        },
        Case {
            name: "reading fails",
            function: Function::SwitchListener,
            params: params(),
            prepare: |cloud| cloud.world().fail_observe = true,
            succeeded: false,
            continues: false,
            notifies: true,
        },
        Case {
            name: "unknown service",
            function: Function::Provision,
            params: json!({"service": "nobody", "release": R2}),
            prepare: |_| {},
            succeeded: false,
            continues: false,
            notifies: true,
        },
        Case {
            name: "bad parameters",
            function: Function::Provision,
            params: json!({"service": "api"}),
            prepare: |_| {},
            succeeded: false,
            continues: false,
            notifies: false,
        },
        Case {
            name: "dry run",
            function: Function::Provision,
            params: json!({"service": "api", "release": R2, "dry_run": true}),
            prepare: |_| {},
            succeeded: true,
            continues: false,
            notifies: false,
        },
    ];
    for case in cases {
        let cloud = FakeCloud::new(Vec::new());
        (case.prepare)(&cloud);
        let app = app(&cloud, 1);
        let response = app
            .handle(case.function, job("job-1", case.params, None))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let acks = cloud.acks_of("job-1");
        assert_eq!(acks.len(), 1, "{}: {acks:?}", case.name);
        let ack = &acks[0];
        assert_eq!(
            matches!(ack, Acknowledgement::Success { .. }),
            case.succeeded,
            "{}: {ack:?}",
            case.name
        );
        assert_eq!(
            token(ack).is_some(),
            case.continues,
            "{}: {ack:?}",
            case.name
        );
        let published = cloud.world().published.len();
        assert_eq!(
            published,
            usize::from(case.notifies),
            "{}: {response}",
            case.name
        );
    }
}

#[tokio::test]
async fn a_refusal_or_a_dry_run_changes_nothing() {
    let cloud = FakeCloud::new(Vec::new());
    let app = app(&cloud, 2);
    let dry = json!({"service": "api", "release": R2, "dry_run": true});
    app.handle(Function::Provision, job("job-dry", dry, None))
        .await
        .unwrap();
    app.handle(Function::RegisterTarget, job("job-refused", params(), None))
        .await
        .unwrap();
    assert!(cloud.world().executed.is_empty());
    let dry = &cloud.acks_of("job-dry")[0];
    assert!(
        matches!(dry, Acknowledgement::Success { summary, .. } if summary.starts_with("dry run: would take 2 step(s)")),
        "{dry:?}"
    );
}

#[tokio::test]
async fn a_continuation_token_round_trips_and_keeps_the_start_of_the_wait() {
    let cloud = FakeCloud::new(Vec::new());
    cloud.world().launched = InstanceState::Pending;
    let first_clock = app(&cloud, 1);
    first_clock
        .handle(Function::Provision, job("job-1", params(), None))
        .await
        .unwrap();
    let first = token(&cloud.acks_of("job-1")[0]).expect("waits for running");
    let progress = Progress::decode(&first).unwrap();
    assert_eq!((progress.phase, progress.since), (Phase::Running, NOW));

    // CodePipeline invokes again, a minute later, as a new job with the token.
    let later = App {
        clock: Arc::new(|| NOW + 60),
        ..app(&cloud, 1)
    };
    later
        .handle(Function::Provision, job("job-2", params(), Some(&first)))
        .await
        .unwrap();
    let second = token(&cloud.acks_of("job-2")[0]).expect("still waiting");
    let progress = Progress::decode(&second).unwrap();
    assert_eq!((progress.phase, progress.since), (Phase::Running, NOW));
    let launches = cloud
        .world()
        .executed
        .iter()
        .filter(|s| matches!(s, Step::Launch { .. }))
        .count();
    assert_eq!(launches, 1, "the second invocation launched nothing more");

    // Past the running timeout (measured from the first invocation) the job fails.
    let too_late = App {
        clock: Arc::new(|| NOW + plan::RUNNING_TIMEOUT_S + 1),
        ..app(&cloud, 1)
    };
    too_late
        .handle(Function::Provision, job("job-3", params(), Some(&second)))
        .await
        .unwrap();
    assert!(matches!(
        &cloud.acks_of("job-3")[0],
        Acknowledgement::Failure { message } if message.contains("not running after")
    ));
}

#[tokio::test]
async fn rounds_per_invocation_are_bounded_and_the_rest_continues() {
    // A retired fleet in the idle slot that never drains here: every round deregisters again.
    let mut retired = running("i-old", "r1", 1, Stage::Retired);
    retired.retired_at = Some(NOW - 10_000);
    let cloud = FakeCloud::new(vec![retired]);
    cloud.world().seen.alb = alb(
        vec![target("i-live", Health::Healthy)],
        vec![target("i-old", Health::Healthy)],
    );
    let app = app(&cloud, 1);
    app.handle(Function::Cleanup, job("job-1", params(), None))
        .await
        .unwrap();
    assert_eq!(cloud.world().observations, MAX_ROUNDS);
    let ack = &cloud.acks_of("job-1")[0];
    let progress = Progress::decode(&token(ack).expect("continues")).unwrap();
    assert_eq!(progress.phase, Phase::Convergence);
}

#[tokio::test]
async fn an_invocation_near_its_deadline_hands_over_after_one_batch() {
    let cloud = FakeCloud::new(Vec::new());
    cloud.world().launch_latency = Duration::from_millis(30);
    let app = app(&cloud, 12);
    let deadline = SystemTime::now() + Duration::from_millis(40);
    app.handle_until(
        Function::Provision,
        job("job-1", params(), None),
        Some(deadline),
    )
    .await
    .unwrap();
    let launched = cloud.world().executed.len();
    assert_eq!(launched, LAUNCH_PARALLELISM, "one batch, side by side");
    let ack = &cloud.acks_of("job-1")[0];
    let progress = Progress::decode(&token(ack).expect("hands over")).unwrap();
    assert_eq!(progress.phase, Phase::Handover);

    // The next invocation, with time, launches the rest and no more, then waits for them.
    app.handle(
        Function::Provision,
        job("job-2", params(), Some(&token(ack).unwrap())),
    )
    .await
    .unwrap();
    assert_eq!(cloud.world().seen.instances.len(), 12);
    let waiting = token(&cloud.acks_of("job-2")[0]).expect("waits for running");
    assert_eq!(Progress::decode(&waiting).unwrap().phase, Phase::Running);
    app.handle(Function::Provision, job("job-3", params(), Some(&waiting)))
        .await
        .unwrap();
    assert!(is_success(&cloud.acks_of("job-3")[0]));
    assert_eq!(cloud.world().seen.instances.len(), 12);
}

#[tokio::test]
async fn a_later_round_still_running_at_the_cut_is_abandoned_and_the_job_acknowledged_in_time() {
    let cloud = FakeCloud::new(Vec::new());
    // Nine launches: a first batch of eight, then one that hangs far past the deadline.
    cloud.world().hang_execute = Some((LAUNCH_PARALLELISM, Duration::from_secs(30)));
    let app = app(&cloud, 9);
    let started = std::time::Instant::now();
    let deadline = SystemTime::now() + Duration::from_millis(800);
    app.handle_until(
        Function::Provision,
        job("job-1", params(), None),
        Some(deadline),
    )
    .await
    .unwrap();
    assert!(
        SystemTime::now() < deadline,
        "acknowledged {:?} after the start, past the deadline",
        started.elapsed()
    );
    let ack = &cloud.acks_of("job-1")[0];
    let progress = Progress::decode(&token(ack).expect("hands over")).unwrap();
    assert_eq!(progress.phase, Phase::Handover);
    assert_eq!(cloud.world().executed.len(), LAUNCH_PARALLELISM + 1);
}

#[tokio::test]
async fn acknowledgement_faults_are_errors_and_a_second_acknowledgement_is_not() {
    let cloud = FakeCloud::new(vec![running("i-1", R2, 1, Stage::PreProduct)]);
    let app = app(&cloud, 1);
    let response = app
        .handle(Function::Provision, job("job-1", params(), None))
        .await
        .unwrap();
    assert_eq!(response["acknowledged"], true);
    // A duplicate delivery of the same job: CodePipeline refuses the second acknowledgement.
    let again = app
        .handle(Function::Provision, job("job-1", params(), None))
        .await
        .unwrap();
    assert_eq!(again["acknowledged"], false);

    cloud.world().fail_acknowledge = true;
    let error = app
        .handle(Function::Provision, job("job-2", params(), None))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("PutJobSuccessResult"), "{error}");
}

#[tokio::test]
async fn a_failed_notification_leaves_the_outcome_as_it_was() {
    let cloud = FakeCloud::new(vec![running("i-1", R2, 1, Stage::PreProduct)]);
    cloud.world().fail_publish = true;
    let response = app(&cloud, 1)
        .handle(Function::Provision, job("job-1", params(), None))
        .await
        .unwrap();
    assert_eq!(response["result"]["outcome"], "succeeded", "{response}");
    assert!(is_success(&cloud.acks_of("job-1")[0]));
}

const SETTINGS: &str = r#"{"AMI":"ami-1","INSTANCE_TYPE":"t3.small","SUBNET":["subnet-a"],"SG":"sg-1","ALARMS":["api-5xx"]}"#;

/// An app whose only settings are SSM parameters.
fn app_on_parameters(cloud: &FakeCloud) -> App<FakeCloud> {
    App {
        registry: Registry::from_vars(Vec::<(String, String)>::new()),
        ..app(cloud, 1)
    }
}

#[tokio::test]
async fn a_broken_parameter_is_never_kept_and_its_fix_works_without_a_cold_start() {
    let cloud = FakeCloud::new(Vec::new());
    cloud
        .world()
        .parameters
        .insert("/cutover/api".into(), "{\"AMI\": ".into());
    let app = app_on_parameters(&cloud);
    app.handle(Function::Provision, job("job-1", params(), None))
        .await
        .unwrap();
    let Acknowledgement::Failure { message } = &cloud.acks_of("job-1")[0] else {
        panic!("a broken parameter fails the job");
    };
    assert!(message.contains("/cutover/api"), "{message}");

    cloud
        .world()
        .parameters
        .insert("/cutover/api".into(), SETTINGS.into());
    app.handle(Function::Provision, job("job-2", params(), None))
        .await
        .unwrap();
    assert!(
        !matches!(cloud.acks_of("job-2")[0], Acknowledgement::Failure { .. }),
        "{:?}",
        cloud.acks_of("job-2")
    );
}

#[tokio::test]
async fn an_alarm_no_known_service_names_makes_the_parameters_read_again_once() {
    let cloud = FakeCloud::new(Vec::new());
    let app = app_on_parameters(&cloud);
    let alarm = |at: &str| {
        serde_json::json!({
            "detail-type": "CloudWatch Alarm State Change",
            "source": "aws.cloudwatch",
            "time": at,
            "detail": {"alarmName": "api-5xx", "state": {"value": "ALARM"}}
        })
    };
    let first = app
        .handle(Function::SwitchListener, alarm("2027-01-15T08:00:00Z"))
        .await
        .unwrap();
    assert_eq!(first["services"], serde_json::json!({}));
    let reads = cloud.world().parameter_reads;

    // The service's stack adds the alarm to its ALARMS; this container read them before.
    cloud
        .world()
        .parameters
        .insert("/cutover/api".into(), SETTINGS.into());
    let second = app
        .handle(Function::SwitchListener, alarm("2027-01-15T08:05:00Z"))
        .await
        .unwrap();
    assert!(second["services"].get("api").is_some(), "{second}");
    assert!(cloud.world().parameter_reads > reads);
}

#[test]
fn an_alarm_named_by_the_convention_suggests_every_way_of_reading_its_service() {
    let suggested = |alarm| {
        super::services_an_alarm_name_suggests(alarm)
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        suggested("cutover-mobile-zum-api-5xx"),
        [
            "mobile",
            "mobile-zum",
            "mobile-zum-api",
            "mobile-zum-api-5xx"
        ]
    );
    assert!(suggested("api-5xx").is_empty());
    assert!(suggested("cutover-").is_empty());
}

/// The service the alarm's name suggests is read alone and rolled back; every other parameter is
/// read after, and a second service naming the same alarm is rolled back too.
#[tokio::test]
async fn an_alarm_reaches_the_service_its_name_suggests_first_and_every_service_naming_it() {
    let cloud = FakeCloud::new(Vec::new());
    let named = SETTINGS.replace("api-5xx", "cutover-api-5xx");
    for service in ["api", "web"] {
        cloud
            .world()
            .parameters
            .insert(format!("/cutover/{service}"), named.clone());
    }
    cloud
        .world()
        .parameters
        .insert("/cutover/other".into(), SETTINGS.into());
    let app = app_on_parameters(&cloud);
    let response = app
        .handle(
            Function::SwitchListener,
            serde_json::json!({
                "detail-type": "CloudWatch Alarm State Change",
                "source": "aws.cloudwatch",
                "time": "2027-01-15T08:00:00Z",
                "detail": {"alarmName": "cutover-api-5xx", "state": {"value": "ALARM"}}
            }),
        )
        .await
        .unwrap();
    let services: Vec<&String> = response["services"].as_object().unwrap().keys().collect();
    assert_eq!(services, ["api", "web"], "{response}");
    let reads = &cloud.world().parameter_log;
    assert_eq!(
        reads[..2],
        ["/cutover/api", "/cutover/api-5xx"],
        "the suggested services' parameters first: {reads:?}"
    );
    assert!(reads.contains(&"every parameter".to_owned()), "{reads:?}");
}
