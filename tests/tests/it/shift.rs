//! Health-gated canary/linear shifts through continuation round trips (the clock is the
//! continuation token's recorded time, moved by the test: no sleeps), and dry runs that change
//! nothing and match what the function then does.

use cutover::world::Forward;
use cutover::Function;
use cutover_tests::{
    fixture, job_event, local, world_snapshot, AckKind, Local, ServiceFixture, R1, R2, SERVICE,
};
use serde_json::{json, Value};

async fn setup() -> (Local, ServiceFixture, cutover::App) {
    let (local, service, app) = Local::with_service(2, 0, json!({"STICKY_S": 300})).await;
    for release in [R1] {
        for function in [
            Function::Provision,
            Function::RegisterTarget,
            Function::SwitchListener,
        ] {
            let run = local
                .run_job(
                    &app,
                    function,
                    &json!({"service": SERVICE, "release": release}),
                )
                .await;
            assert!(run.succeeded(), "{:?}", run.last());
        }
    }
    // R2 is in QA on the blue slot; product is on green (R1).
    for function in [Function::Provision, Function::RegisterTarget] {
        let run = local
            .run_job(&app, function, &json!({"service": SERVICE, "release": R2}))
            .await;
        assert!(run.succeeded(), "{:?}", run.last());
    }
    (local, service, app)
}

/// (blue weight, green weight) of the product route; a plain forward counts as 100/0.
async fn weights(local: &Local, service: &ServiceFixture) -> (i32, i32) {
    let alb = local.alb().await;
    let forward: Forward = alb.product.forward;
    if let Some(sole) = forward.sole_target() {
        return if sole == service.blue {
            (100, 0)
        } else {
            (0, 100)
        };
    }
    let weight = |arn: &str| {
        forward
            .targets
            .iter()
            .find(|t| t.arn == arn)
            .and_then(|t| t.weight)
            .unwrap_or(0)
    };
    assert_eq!(forward.sticky_s, Some(300), "stickiness from STICKY_S");
    (weight(&service.blue), weight(&service.green))
}

/// One invocation of switch-listener as CodePipeline makes it; returns the continuation token.
async fn invoke(
    local: &Local,
    app: &cutover::App,
    params: &Value,
    token: Option<&str>,
) -> cutover_tests::Ack {
    let job_id = local.next_job_id();
    let event = job_event(Function::SwitchListener, &job_id, params, token);
    app.handle(Function::SwitchListener, event)
        .await
        .expect("handled");
    local.endpoint.ack_for(&job_id).expect("acknowledged")
}

fn product_calls(local: &Local, mark: usize, service: &ServiceFixture) -> usize {
    local.endpoint.rule_moves(mark, &service.product_rule).len()
}

#[tokio::test]
async fn a_linear_shift_walks_the_weights_one_call_per_step() {
    let (local, service, app) = setup().await;
    let params = json!({"service": SERVICE, "release": R2, "strategy": "linear:25:2"});
    let mut token: Option<String> = None;
    let mut seen = Vec::new();
    for _ in 0..12 {
        let mark = local.endpoint.mark();
        let ack = invoke(&local, &app, &params, token.as_deref()).await;
        assert_eq!(ack.kind, AckKind::Success, "{ack:?}");
        assert!(
            product_calls(&local, mark, &service) <= 1,
            "each step is one call"
        );
        let now = weights(&local, &service).await;
        if seen.last() != Some(&now) {
            seen.push(now);
        }
        token = ack.continuation_token;
        if token.is_none() {
            break;
        }
        // Half the interval: nothing moves yet; then the rest of it.
        local.advance(60);
        let held = invoke(&local, &app, &params, token.as_deref()).await;
        assert_eq!(
            weights(&local, &service).await,
            now,
            "held for the whole interval"
        );
        token = held.continuation_token;
        local.advance(60);
    }
    assert!(token.is_none(), "the shift finished");
    assert_eq!(seen, [(25, 75), (50, 50), (75, 25), (100, 0)]);
}

#[tokio::test]
async fn a_canary_whose_targets_turn_unhealthy_rolls_itself_back() {
    let (local, service, app) = setup().await;
    let params = json!({"service": SERVICE, "release": R2, "strategy": "canary:10:5"});
    let ack = invoke(&local, &app, &params, None).await;
    assert_eq!(weights(&local, &service).await, (10, 90));
    let alb = local.alb().await;
    local
        .clients
        .ec2
        .stop_instances()
        .instance_ids(&alb.blue.targets[0].id)
        .send()
        .await
        .unwrap();
    local.advance(300);
    let mark = local.endpoint.mark();
    let ack = invoke(&local, &app, &params, ack.continuation_token.as_deref()).await;
    assert_eq!(ack.kind, AckKind::Failure);
    let message = ack.message.unwrap();
    assert!(
        message.contains("aborted at 10%") && message.contains("returned to 100% green"),
        "{message}"
    );
    assert_eq!(weights(&local, &service).await, (0, 100));
    assert_eq!(
        product_calls(&local, mark, &service),
        1,
        "the rollback is one call"
    );
    let published = local.endpoint.published();
    assert!(published
        .iter()
        .any(|(subject, body)| subject.contains("FAILED") && body.contains("aborted")));
}

#[tokio::test]
async fn a_rollback_mid_shift_restores_all_traffic_in_one_call() {
    let (local, service, app) = setup().await;
    let params = json!({"service": SERVICE, "release": R2, "strategy": "linear:25:2"});
    invoke(&local, &app, &params, None).await;
    assert_eq!(weights(&local, &service).await, (25, 75));
    let mark = local.endpoint.mark();
    let run = local
        .run_job(
            &app,
            Function::SwitchListener,
            &json!({"service": SERVICE, "release": R2, "action": "rollback"}),
        )
        .await;
    assert!(run.succeeded(), "{:?}", run.last());
    assert_eq!(weights(&local, &service).await, (0, 100));
    assert_eq!(product_calls(&local, mark, &service), 1);
}

#[tokio::test]
async fn a_dry_run_changes_nothing_and_matches_what_happens_next() {
    let local = local(1).await;
    fixture::seed_service(&local.clients, &local.base, SERVICE, 10).await;
    let app = local.app(&[(
        "MOBILE_ZUM_API",
        fixture::settings_json(&local.base, 2, 1, json!({"BAKE_S": 3600})),
    )]);
    // A plan that would be refused says so, instead of "0 steps".
    let refused = app
        .handle(
            Function::SwitchListener,
            job_event(
                Function::SwitchListener,
                "job-refused",
                &json!({"service": SERVICE, "release": R1, "dry_run": true}),
                None,
            ),
        )
        .await
        .unwrap();
    let result = &refused["result"];
    assert_eq!(result["outcome"], "dry-run", "{refused}");
    assert!(
        result["would_fail"]
            .as_str()
            .is_some_and(|m| m.contains("run register-target first")),
        "{refused}"
    );
    let summary = local
        .endpoint
        .ack_for("job-refused")
        .unwrap()
        .summary
        .unwrap();
    assert!(summary.starts_with("dry run: would fail: "), "{summary}");
    assert!(local.endpoint.published().is_empty());
    let stages = [
        (R1, Function::Provision, "release"),
        (R1, Function::RegisterTarget, "release"),
        (R1, Function::SwitchListener, "release"),
        (R2, Function::Provision, "release"),
        (R2, Function::RegisterTarget, "release"),
        (R2, Function::SwitchListener, "release"),
        (R2, Function::SwitchListener, "rollback"),
        (R2, Function::Cleanup, "release"),
    ];
    for (release, function, action) in stages {
        let params = json!({"service": SERVICE, "release": release, "action": action});
        let mut token = None;
        loop {
            let before = world_snapshot(&local, SERVICE).await;
            let mark = local.endpoint.mark();
            let told = local.endpoint.published().len();
            let mut dry = params.clone();
            dry["dry_run"] = json!(true);
            let job_id = local.next_job_id();
            let response = app
                .handle(
                    function,
                    job_event(function, &job_id, &dry, token.as_deref()),
                )
                .await
                .unwrap();
            assert!(
                local.endpoint.mutations(mark).is_empty(),
                "{}: dry run changed the world",
                function.as_str()
            );
            assert_eq!(
                world_snapshot(&local, SERVICE).await,
                before,
                "{}",
                function.as_str()
            );
            assert_eq!(
                local.endpoint.published().len(),
                told,
                "{}: a dry run told the team's channel",
                function.as_str()
            );
            assert_eq!(response["result"]["outcome"], "dry-run", "{response}");
            let planned: Vec<String> =
                serde_json::from_value(response["result"]["steps"].clone()).unwrap();

            let job_id = local.next_job_id();
            let response = app
                .handle(
                    function,
                    job_event(function, &job_id, &params, token.as_deref()),
                )
                .await
                .unwrap();
            let done: Vec<String> =
                serde_json::from_value(response["result"]["steps"].clone()).unwrap_or_default();
            // What was planned is what was done first; a real run that changed something had
            // a plan that said so.
            assert!(
                done.starts_with(&planned) && (done.is_empty() || !planned.is_empty()),
                "{}: planned {planned:?}, did {done:?}",
                function.as_str()
            );
            let ack = local.endpoint.ack_for(&job_id).unwrap();
            assert_eq!(ack.kind, AckKind::Success, "{ack:?}");
            token = ack.continuation_token;
            if token.is_none() {
                break;
            }
        }
    }
}
