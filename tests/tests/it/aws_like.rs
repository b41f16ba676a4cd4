//! The four functions against an endpoint that behaves the way AWS does where moto does not
//! (`cutover_tests::realism`): targets that take time to turn healthy and to drain, ClientToken
//! honoured, throttling through the production retry configuration, API latency, a QA route
//! behind single sign-on, DNS records cutover did not write. Each scenario here failed before
//! the fix it names.

use std::time::Duration;

use cutover::aws::{Aws, InstanceQuery};
use cutover::world::{InstanceState, Stage};
use cutover::Function;
use cutover_tests::{
    fixture, job_event, params, sample_event, AckKind, Local, ServiceFixture, R1, R2, R3, SERVICE,
};
use serde_json::{json, Value};

/// How long a new target stays `initial`, and a deregistered one `draining` (test clock).
const INITIAL_S: u64 = 20;
const DRAIN_S: u64 = 30;

async fn setup(extra: Value) -> (Local, ServiceFixture, cutover::App) {
    let (local, service, app) = Local::with_service(2, 1, extra).await;
    local.behave_like_aws(INITIAL_S, DRAIN_S);
    (local, service, app)
}

/// Runs a stage the way CodePipeline does, moving the test clock `step_s` between invocations
/// (CodePipeline re-invokes a continuing action about once a minute).
async fn stage(
    local: &Local,
    app: &cutover::App,
    function: Function,
    release: &str,
    step_s: u64,
) -> cutover_tests::JobRun {
    local
        .run_job_advancing(app, function, &params(release), 20, step_s)
        .await
}

async fn release_through_switch(local: &Local, app: &cutover::App, release: &str) {
    for function in [
        Function::Provision,
        Function::RegisterTarget,
        Function::SwitchListener,
    ] {
        let run = stage(local, app, function, release, 10).await;
        assert!(
            run.succeeded(),
            "{} of {release}: {:?}",
            function.as_str(),
            run.acks.last()
        );
    }
    assert_product_is_healthy(local).await;
}

/// Product forwards to exactly one slot, which is non-empty and entirely `healthy` by the
/// endpoint's lifecycle model (not moto's always-healthy answer).
async fn assert_product_is_healthy(local: &Local) {
    let alb = local.alb().await;
    let product = alb.product_slot().expect("product on one slot");
    let group = alb.slot(product);
    assert!(
        !group.targets.is_empty(),
        "product on an empty slot: {alb:?}"
    );
    for target in &group.targets {
        assert_eq!(
            local
                .endpoint
                .target_health(&group.arn, &target.id)
                .as_deref(),
            Some("healthy"),
            "product on a target that is not healthy: {target:?}"
        );
    }
}

async fn live(local: &Local) -> Vec<cutover::world::Instance> {
    Aws::new(&local.config)
        .instances(InstanceQuery::Service(SERVICE))
        .await
        .unwrap()
}

#[tokio::test]
async fn register_target_waits_out_initial_health_before_routing_qa() {
    let (local, service, app) = setup(json!({})).await;
    assert!(stage(&local, &app, Function::Provision, R1, 10)
        .await
        .succeeded());
    let run = stage(&local, &app, Function::RegisterTarget, R1, 10).await;
    assert!(run.succeeded(), "{:?}", run.acks.last());
    // Claim, verify, then `initial` for 20 s: at least two waits before pre-product moved.
    assert!(run.continuations() >= 3, "{:?}", run.acks);
    let alb = local.alb().await;
    assert_eq!(
        alb.pre_product.forward.sole_target(),
        Some(service.green.as_str())
    );
    assert_eq!(alb.green.targets.len(), 2);
    for target in &alb.green.targets {
        assert_eq!(
            local
                .endpoint
                .target_health(&service.green, &target.id)
                .as_deref(),
            Some("healthy")
        );
    }
}

#[tokio::test]
async fn a_dead_instance_fails_provision_and_a_retried_stage_replaces_it_with_a_new_token() {
    a_dead_instance_is_replaced_with_a_new_token(Replay::Current).await;
}

/// The same, with EC2 replaying the token's first answer unchanged: the dead instance shows as
/// pending. Provision read it dead, so the token is spent all the same (before, the retried stage
/// waited for it and failed again with the same token).
#[tokio::test]
async fn a_replayed_answer_that_shows_a_dead_instance_alive_still_moves_to_a_new_token() {
    a_dead_instance_is_replaced_with_a_new_token(Replay::FirstAnswer).await;
}

/// The same after the dead instance has left DescribeInstances (about an hour after it ended),
/// its token still bound and answered with the first call's answer: provision did not read it
/// at all, and it was launched long before the read, so it is gone and the token is spent
/// (before, the retried stage waited for an instance it could never see, launching again with
/// the same token at every continuation).
#[tokio::test]
async fn a_replayed_answer_for_an_instance_no_longer_listed_moves_to_a_new_token() {
    a_dead_instance_is_replaced_with_a_new_token(Replay::FirstAnswerOfAVanishedInstance).await;
}

#[derive(PartialEq)]
enum Replay {
    /// A repeated token is answered with its instance's current state.
    Current,
    /// With the first call's answer, unchanged.
    FirstAnswer,
    /// With the first call's answer, after the instance has left DescribeInstances.
    FirstAnswerOfAVanishedInstance,
}

async fn a_dead_instance_is_replaced_with_a_new_token(replay: Replay) {
    let (local, _service, app) = setup(json!({"COUNT": 1})).await;
    if replay != Replay::Current {
        local.endpoint.replay_first_answers();
    }
    // First invocation: launched, waiting for `running`.
    let first = local.next_job_id();
    app.handle(
        Function::Provision,
        job_event(Function::Provision, &first, &params(R1), None),
    )
    .await
    .unwrap();
    let token = local
        .endpoint
        .ack_for(&first)
        .unwrap()
        .continuation_token
        .expect("waits");
    let launched = live(&local).await;
    assert_eq!(launched.len(), 1);
    // The instance dies (capacity, a bad AMI, someone's script) before the next invocation.
    local
        .clients
        .ec2
        .terminate_instances()
        .instance_ids(&launched[0].id)
        .send()
        .await
        .unwrap();
    let second = local.next_job_id();
    app.handle(
        Function::Provision,
        job_event(Function::Provision, &second, &params(R1), Some(&token)),
    )
    .await
    .unwrap();
    let ack = local.endpoint.ack_for(&second).unwrap();
    assert_eq!(ack.kind, AckKind::Failure, "{ack:?}");
    let message = ack.message.unwrap();
    assert!(
        message.contains(&launched[0].id) && message.contains("terminated"),
        "{message}"
    );

    if replay == Replay::FirstAnswerOfAVanishedInstance {
        local.endpoint.vanish(&launched[0].id);
    }
    // CodePipeline's Retry: the same execution id, so the same ClientToken, which AWS answers
    // with the terminated instance. The launch moves to the token's next generation.
    let mark = local.endpoint.mark();
    let retry = stage(&local, &app, Function::Provision, R1, 10).await;
    assert!(retry.succeeded(), "{:?}", retry.acks.last());
    let now = live(&local).await;
    assert_eq!(now.len(), 1);
    assert_ne!(now[0].id, launched[0].id);
    assert_eq!(now[0].state, InstanceState::Running);
    let tokens: Vec<String> = local.endpoint.calls()[mark..]
        .iter()
        .filter(|c| c.action == "RunInstances")
        .filter_map(|c| c.param("ClientToken").map(str::to_owned))
        .collect();
    assert_eq!(tokens.len(), 2, "{tokens:?}");
    assert!(
        tokens[1].starts_with(&tokens[0]) && tokens[1].ends_with("-g1"),
        "{tokens:?}"
    );
}

#[tokio::test]
async fn a_changed_launch_under_the_same_token_is_refused_by_the_endpoint_as_by_ec2() {
    let (local, _service, app) = setup(json!({"COUNT": 1})).await;
    assert!(stage(&local, &app, Function::Provision, R1, 10)
        .await
        .succeeded());
    let call = local
        .endpoint
        .calls()
        .into_iter()
        .find(|c| c.action == "RunInstances")
        .unwrap();
    let token = call.param("ClientToken").unwrap();
    let replay = local
        .clients
        .ec2
        .run_instances()
        .image_id(&local.base.ami)
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
        .min_count(1)
        .max_count(1)
        .client_token(token)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        aws_sdk_ec2::error::ProvideErrorMetadata::code(&replay),
        Some("IdempotentParameterMismatch")
    );
}

#[tokio::test]
async fn every_resource_a_launch_creates_carries_the_service_tag() {
    let (local, _service, app) = setup(json!({"COUNT": 1})).await;
    assert!(stage(&local, &app, Function::Provision, R1, 10)
        .await
        .succeeded());
    let call = local
        .endpoint
        .calls()
        .into_iter()
        .find(|c| c.action == "RunInstances")
        .unwrap();
    for kind in cutover::aws::TAGGED_AT_LAUNCH {
        let n = (1..=10)
            .find(|n| call.param(&format!("TagSpecification.{n}.ResourceType")) == Some(kind))
            .unwrap_or_else(|| panic!("{kind} is not tagged at launch: {:?}", call.params));
        let tags: Vec<(&str, &str)> = (1..=50)
            .map_while(|m| {
                Some((
                    call.param(&format!("TagSpecification.{n}.Tag.{m}.Key"))?,
                    call.param(&format!("TagSpecification.{n}.Tag.{m}.Value"))?,
                ))
            })
            .collect();
        assert!(
            tags.contains(&("cutover:service", SERVICE)),
            "{kind}: {tags:?}"
        );
        assert!(
            tags.contains(&("team", "portal")),
            "cost tags on {kind}: {tags:?}"
        );
    }
}

#[tokio::test]
async fn throttling_is_ridden_out_by_the_production_retry_configuration() {
    let (local, _service, app) = setup(json!({"COUNT": 1})).await;
    local
        .endpoint
        .inject_fault("RunInstances", 2, 400, "RequestLimitExceeded");
    local
        .endpoint
        .inject_fault("DescribeTargetGroups", 3, 400, "Throttling");
    assert!(stage(&local, &app, Function::Provision, R1, 10)
        .await
        .succeeded());
    // Three attempts of each throttled call, one per fault and one that went through: the
    // SDK's retries, not a failed job and a retry by hand (there is one job run here).
    assert_eq!(local.endpoint.count(0, &["RunInstances"]), 3);
    let attempts: Vec<u16> = local
        .endpoint
        .calls_of(0, "DescribeTargetGroups")
        .iter()
        .map(|c| c.status)
        .collect();
    assert_eq!(&attempts[..4], [400, 400, 400, 200]);
    assert_eq!(live(&local).await.len(), 1);
}

#[tokio::test]
async fn launches_run_side_by_side_and_a_spent_deadline_hands_over_after_one_batch() {
    let (local, _service, app) = setup(json!({"COUNT": 12})).await;
    let mark = local.endpoint.mark();
    // 20 ms to its deadline (it hands over a quarter before): one batch of launches, then hand
    // over with a continuation token; the next invocation plans the rest from what it sees.
    let job = local.next_job_id();
    let deadline = std::time::SystemTime::now() + Duration::from_millis(20);
    app.handle_until(
        Function::Provision,
        job_event(Function::Provision, &job, &params(R1), None),
        Some(deadline),
    )
    .await
    .unwrap();
    let ack = local.endpoint.ack_for(&job).unwrap();
    assert!(ack.continuation_token.is_some(), "{ack:?}");
    assert_eq!(
        local.endpoint.count(mark, &["RunInstances"]),
        cutover::run::LAUNCH_PARALLELISM
    );

    // With time left, the remaining four launches at 400 ms each answer together.
    local.endpoint.set_latency(Duration::from_millis(400));
    let mark = local.endpoint.mark();
    assert!(stage(&local, &app, Function::Provision, R1, 10)
        .await
        .succeeded());
    local.endpoint.set_latency(Duration::ZERO);
    let answered: Vec<std::time::Instant> = local.endpoint.calls()[mark..]
        .iter()
        .filter(|c| c.action == "RunInstances")
        .map(|c| c.answered)
        .collect();
    assert_eq!(answered.len(), 12 - cutover::run::LAUNCH_PARALLELISM);
    let spread = *answered.iter().max().unwrap() - *answered.iter().min().unwrap();
    assert!(
        spread < Duration::from_millis(400),
        "serial launches: spread {spread:?}"
    );
    assert_eq!(live(&local).await.len(), 12);
}

#[tokio::test]
async fn a_later_release_waits_for_the_bake_instead_of_taking_the_slot_rollback_needs() {
    let (local, service, app) = setup(json!({"COUNT": 1, "BAKE_S": 600})).await;
    release_through_switch(&local, &app, R1).await;
    release_through_switch(&local, &app, R2).await;
    // R1's fleet is retired in the idle slot, baking until 600 s after R2's switch.
    assert!(stage(&local, &app, Function::Provision, R3, 10)
        .await
        .succeeded());
    let job = local.next_job_id();
    app.handle(
        Function::RegisterTarget,
        job_event(Function::RegisterTarget, &job, &params(R3), None),
    )
    .await
    .unwrap();
    // The lock claim first, then the bake.
    let mut token = local
        .endpoint
        .ack_for(&job)
        .unwrap()
        .continuation_token
        .unwrap();
    let mut summaries = Vec::new();
    for _ in 0..3 {
        local.advance(60);
        let job = local.next_job_id();
        app.handle(
            Function::RegisterTarget,
            job_event(Function::RegisterTarget, &job, &params(R3), Some(&token)),
        )
        .await
        .unwrap();
        let ack = local.endpoint.ack_for(&job).unwrap();
        token = ack
            .continuation_token
            .clone()
            .expect("still waiting for the bake");
        summaries.push(ack.summary.unwrap_or_default());
    }
    assert!(
        summaries.iter().any(|s| s.contains("bake")),
        "{summaries:?}"
    );
    let r1: Vec<_> = live(&local)
        .await
        .into_iter()
        .filter(|i| i.release.as_deref() == Some(R1))
        .collect();
    let green_or_blue = local.alb().await;
    assert!(
        r1.iter()
            .all(|i| green_or_blue.blue.has(&i.id) || green_or_blue.green.has(&i.id)),
        "the baking fleet stays registered for rollback"
    );
    assert_eq!(local.endpoint.rule_moves(0, &service.product_rule).len(), 2);

    // After the bake, the release takes the slot.
    local.advance(600);
    let rest = stage(&local, &app, Function::RegisterTarget, R3, 10).await;
    assert!(rest.succeeded(), "{:?}", rest.acks.last());
}

#[tokio::test]
async fn the_whole_release_with_every_aws_behaviour_on() {
    // A bake long enough to roll back in (a rollback refuses a fleet cleanup may take).
    let (local, service, app) = setup(json!({"BAKE_S": 600})).await;
    local.endpoint.set_latency(Duration::from_millis(20));
    fixture::require_sign_on(&local.clients, &service.pre_product_rule, &service.green).await;
    fixture::require_sign_on(&local.clients, &service.product_rule, &service.blue).await;
    let zone = format!("{SERVICE}.{}.", fixture::ZONE_NAME);
    let admin = format!("admin.{zone}");
    let qa_by_hand = format!("pre-product.{zone}");
    fixture::add_foreign_record(&local.clients, &local.base, &admin, 300, "10.0.9.9").await;
    let foreign_before: Vec<_> = fixture::zone_records(&local.clients, &local.base)
        .await
        .into_iter()
        .filter(|r| r.0 == admin)
        .collect();

    let mark = local.endpoint.mark();
    release_through_switch(&local, &app, R1).await;
    // Rollback onto the empty first slot is refused; a second release, rollback, re-release.
    release_through_switch(&local, &app, R2).await;
    let rollback = json!({"service": SERVICE, "release": R2, "action": "rollback"});
    let job = local.next_job_id();
    app.handle(
        Function::SwitchListener,
        job_event(Function::SwitchListener, &job, &rollback, None),
    )
    .await
    .unwrap();
    assert_eq!(local.endpoint.ack_for(&job).unwrap().kind, AckKind::Success);
    assert_product_is_healthy(&local).await;
    let again = stage(&local, &app, Function::SwitchListener, R2, 10).await;
    assert!(again.succeeded(), "{:?}", again.acks.last());
    assert_product_is_healthy(&local).await;

    // Past the bake, cleanup drains R1's retired fleet, then terminates it once drained.
    local.advance(601);
    let mut cleaned = false;
    for _ in 0..5 {
        let run = stage(&local, &app, Function::Cleanup, R2, DRAIN_S + 1).await;
        assert!(run.succeeded(), "{:?}", run.acks.last());
        if live(&local)
            .await
            .iter()
            .all(|i| i.release.as_deref() == Some(R2))
        {
            cleaned = true;
            break;
        }
        local.advance(DRAIN_S + 1);
    }
    assert!(cleaned, "{:?}", live(&local).await);
    assert!(
        local.endpoint.terminated_while_in_a_group().is_empty(),
        "{:?}",
        local.endpoint.terminated_while_in_a_group()
    );

    for rule in [&service.product_rule, &service.pre_product_rule] {
        assert_eq!(
            fixture::rule_action_types(&local.clients, rule).await,
            ["authenticate-oidc", "forward"],
            "the sign-on in front of {rule} was stripped"
        );
    }
    let repoints: Vec<_> = local.endpoint.calls()[mark..]
        .iter()
        .filter(|c| c.action == "ModifyRule")
        .cloned()
        .collect();
    assert!(repoints.len() >= 4, "{}", repoints.len());
    for call in &repoints {
        assert_eq!(
            call.param("Actions.member.1.AuthenticateOidcConfig.UseExistingClientSecret"),
            Some("true"),
            "every repoint re-sends the authentication with the existing secret: {:?}",
            call.params
        );
    }

    let records = fixture::zone_records(&local.clients, &local.base).await;
    let foreign_after: Vec<_> = records.iter().filter(|r| r.0 == admin).cloned().collect();
    assert_eq!(
        foreign_before, foreign_after,
        "a record cutover did not write was changed"
    );
    let product_name = format!("product.{zone}");
    assert!(
        records.iter().any(|r| r.0 == product_name && r.1 == "A"),
        "{records:?}"
    );
    assert!(records
        .iter()
        .all(|r| r.0 != qa_by_hand || r.1 != "A" || r.3.len() <= 2));
}

#[tokio::test]
async fn a_failed_release_with_every_aws_behaviour_on_leaves_nothing_running() {
    let (local, service, app) = setup(json!({})).await;
    fixture::require_sign_on(&local.clients, &service.pre_product_rule, &service.green).await;
    assert!(stage(&local, &app, Function::Provision, R1, 10)
        .await
        .succeeded());
    assert!(stage(&local, &app, Function::RegisterTarget, R1, 10)
        .await
        .succeeded());
    let fleet = live(&local).await;
    assert_eq!(fleet.len(), 2);

    let mut failed = sample_event("cleanup-pipeline-failed.json");
    failed["detail"]["execution-id"] = Value::from(R1);
    app.handle(Function::Cleanup, failed.clone()).await.unwrap();
    // Kept for a retry of the failed action: still registered, the failure's time on it.
    let kept = live(&local).await;
    assert!(
        kept.iter()
            .all(|i| i.stage == Some(Stage::PreProduct) && i.failed_at.is_some()),
        "{kept:?}"
    );
    assert_eq!(
        local
            .endpoint
            .target_health(&service.green, &kept[0].id)
            .as_deref(),
        Some("healthy")
    );
    // No retry within the window: a late delivery of the same event gives the fleet up.
    local.advance(cutover::settings::DEFAULT_RETRY_WINDOW_S + 1);
    app.handle(Function::Cleanup, failed.clone()).await.unwrap();
    // Deregistered and draining; nothing terminated yet, the fleet marked for the sweep.
    let draining = live(&local).await;
    assert_eq!(draining.len(), 2);
    assert!(
        draining.iter().all(|i| i.stage == Some(Stage::Abandoned)),
        "{draining:?}"
    );
    for instance in &draining {
        assert_eq!(
            local
                .endpoint
                .target_health(&service.green, &instance.id)
                .as_deref(),
            Some("draining")
        );
    }
    // A duplicate event changes nothing more.
    let mark = local.endpoint.mark();
    app.handle(Function::Cleanup, failed).await.unwrap();
    assert!(local
        .endpoint
        .mutations(mark)
        .iter()
        .all(|c| c.action == "DeregisterTargets"));

    // The next sweep after the drain terminates the fleet (not a week later).
    local.advance(DRAIN_S + 1);
    app.handle(Function::Cleanup, sample_event("cleanup-schedule.json"))
        .await
        .unwrap();
    assert!(live(&local).await.is_empty(), "{:?}", live(&local).await);
    assert!(local.endpoint.terminated_while_in_a_group().is_empty());
    assert_eq!(
        fixture::rule_action_types(&local.clients, &service.pre_product_rule).await,
        ["authenticate-oidc", "forward"]
    );
}

/// The FAILED event may never come (Lambda gave up on it, the rule was off), or a late retry of
/// provision may launch after it: the sweep asks CodePipeline about each pre-product fleet's
/// execution and takes the fleet of one that has ended (before, such a fleet ran for a week).
#[tokio::test]
async fn the_sweep_takes_a_pre_product_fleet_whose_execution_ended_without_its_event() {
    let (local, service, app) = setup(json!({})).await;
    for function in [Function::Provision, Function::RegisterTarget] {
        assert!(stage(&local, &app, function, R1, 10).await.succeeded());
    }
    let sweep = || app.handle(Function::Cleanup, sample_event("cleanup-schedule.json"));
    // While its execution runs (the endpoint answers InProgress), the fleet stays.
    let mark = local.endpoint.mark();
    sweep().await.unwrap();
    let asked = local.endpoint.calls_of(mark, "GetPipelineExecution");
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].param("pipelineExecutionId"), Some(R1));
    let fleet = live(&local).await;
    assert_eq!(fleet.len(), 2);
    assert!(fleet.iter().all(|i| i.stage == Some(Stage::PreProduct)));

    local
        .endpoint
        .set_execution(&format!("cutover-{SERVICE}"), R1, "Failed");
    // Failed (not stopped or superseded): kept for a retry of the failed action, its window
    // starting when the sweep first saw it failed.
    sweep().await.unwrap();
    assert!(live(&local)
        .await
        .iter()
        .all(|i| i.stage == Some(Stage::PreProduct) && i.failed_at.is_some()));
    local.advance(cutover::settings::DEFAULT_RETRY_WINDOW_S + 1);
    sweep().await.unwrap();
    for instance in live(&local).await {
        assert_eq!(instance.stage, Some(Stage::Abandoned));
        assert_eq!(
            local
                .endpoint
                .target_health(&service.green, &instance.id)
                .as_deref(),
            Some("draining")
        );
    }
    local.advance(DRAIN_S + 1);
    sweep().await.unwrap();
    assert!(live(&local).await.is_empty(), "{:?}", live(&local).await);
    assert!(local.endpoint.terminated_while_in_a_group().is_empty());
}
