//! At-least-once delivery and concurrent releases: duplicates and late events change nothing,
//! two releases of one service never both proceed, abandoned fleets are swept.

use cutover::aws::{Aws, InstanceQuery};
use cutover::world::Stage;
use cutover::Function;
use cutover_tests::{
    fixture, local, params, sample_event, Local, ServiceFixture, R1, R2, R3, SERVICE,
};
use serde_json::{json, Value};

async fn setup() -> (Local, ServiceFixture, cutover::App) {
    Local::with_service(2, 0, json!({})).await
}

/// A fixed permutation (no randomness in tests): a small linear congruential shuffle.
fn shuffled<T>(mut items: Vec<T>, mut seed: u64) -> Vec<T> {
    for i in (1..items.len()).rev() {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        items.swap(i, (seed >> 33) as usize % (i + 1));
    }
    items
}

#[tokio::test]
async fn every_event_of_a_release_replayed_three_times_in_shuffled_order() {
    let (local, service, app) = setup().await;
    enum Delivery {
        Job(Function),
        Event(Value),
    }
    let mut deliveries = Vec::new();
    for _ in 0..3 {
        for function in [
            Function::Provision,
            Function::RegisterTarget,
            Function::SwitchListener,
            Function::Cleanup,
        ] {
            deliveries.push(Delivery::Job(function));
        }
        deliveries.push(Delivery::Event(sample_event("cleanup-schedule.json")));
    }
    let mark = local.endpoint.mark();
    for delivery in shuffled(deliveries, 7) {
        match delivery {
            Delivery::Job(function) => {
                // Out of order, a stage may refuse; it must never do harm.
                local.run_job(&app, function, &params(R1)).await;
            }
            Delivery::Event(event) => {
                app.handle(Function::Cleanup, event).await.expect("handled");
            }
        }
    }
    // Then the pipeline as CodePipeline runs it.
    for function in [
        Function::Provision,
        Function::RegisterTarget,
        Function::SwitchListener,
        Function::Cleanup,
    ] {
        let run = local.run_job(&app, function, &params(R1)).await;
        assert!(run.succeeded(), "{}: {:?}", function.as_str(), run.last());
    }
    let instances = Aws::new(&local.config)
        .instances(InstanceQuery::Service(SERVICE))
        .await
        .unwrap();
    assert_eq!(instances.len(), 2, "no extra instance");
    assert_eq!(local.endpoint.count(mark, &["RunInstances"]), 2);
    let switches = local.endpoint.rule_moves(mark, &service.product_rule).len();
    assert_eq!(switches, 1, "one switch");
    assert!(instances.iter().all(|i| i.stage == Some(Stage::Product)));
}

#[tokio::test]
async fn two_releases_of_one_service_started_together_one_proceeds() {
    let (local, service, app) = setup().await;
    let (p2, p3) = (params(R2), params(R3));
    let (a, b) = tokio::join!(
        local.run_job(&app, Function::Provision, &p2),
        local.run_job(&app, Function::Provision, &p3)
    );
    assert!(
        a.succeeded() && b.succeeded(),
        "provision takes no lock: {:?} {:?}",
        a.last(),
        b.last()
    );
    let (a, b) = tokio::join!(
        local.run_job(&app, Function::RegisterTarget, &p2),
        local.run_job(&app, Function::RegisterTarget, &p3)
    );
    assert!(
        a.succeeded() != b.succeeded(),
        "exactly one proceeds: {:?} / {:?}",
        a.last(),
        b.last()
    );
    let (winner, loser, lost) = if a.succeeded() {
        (R2, R3, b)
    } else {
        (R3, R2, a)
    };
    // The loser waits (continuations) while CodePipeline says the winner's execution runs: it
    // neither proceeds nor fails a release that may yet go on.
    let waiting_for = |run: &cutover_tests::JobRun| {
        run.last()
            .continuation_token
            .as_deref()
            .map(|t| cutover::progress::Progress::decode(t).unwrap().phase)
    };
    assert_eq!(
        waiting_for(&lost),
        Some(cutover::progress::Phase::LockHolder),
        "{:?}",
        lost.last()
    );

    // A third try by the loser, even a provision, waits the same way, launching nothing.
    let mark = local.endpoint.mark();
    let again = local
        .run_job_bounded(&app, Function::Provision, &params(loser), 1)
        .await;
    assert_eq!(
        waiting_for(&again),
        Some(cutover::progress::Phase::LockHolder)
    );
    assert!(local.endpoint.mutations(mark).is_empty());

    // The loser's execution fails; its cleanup does not disturb the winner.
    let mut event = sample_event("cleanup-pipeline-failed.json");
    event["detail"]["execution-id"] = json!(loser);
    app.handle(Function::Cleanup, event).await.expect("handled");
    let aws = Aws::new(&local.config);
    let alive = aws
        .instances(InstanceQuery::Service(SERVICE))
        .await
        .unwrap();
    assert_eq!(alive.len(), 2);
    assert!(alive.iter().all(|i| i.release.as_deref() == Some(winner)));
    let alb = aws.alb(SERVICE).await.unwrap();
    assert_eq!(
        alb.product.lock.as_ref().map(|l| l.release.as_str()),
        Some(winner)
    );
    assert_eq!(alb.green.targets.len(), 2);
    let run = local
        .run_job(&app, Function::SwitchListener, &params(winner))
        .await;
    assert!(run.succeeded(), "{:?}", run.last());
    assert_eq!(
        aws.alb(SERVICE)
            .await
            .unwrap()
            .product
            .forward
            .sole_target(),
        Some(service.green.as_str())
    );
}

#[tokio::test]
async fn a_stale_lock_is_taken_over() {
    let (local, _service, app) = setup().await;
    let run = local.run_job(&app, Function::Provision, &params(R2)).await;
    assert!(run.succeeded());
    let run = local
        .run_job_bounded(&app, Function::RegisterTarget, &params(R2), 1)
        .await;
    assert!(
        run.last().continuation_token.is_some(),
        "R2 claimed the lock and waits to verify it"
    );
    // R2's execution vanished without an event; an hour past the limit (launch times are
    // moto's wall clock), R3 takes the service over.
    local.advance(cutover::plan::LOCK_STALE_S + 3_600);
    for function in [Function::Provision, Function::RegisterTarget] {
        let run = local.run_job(&app, function, &params(R3)).await;
        assert!(run.succeeded(), "{}: {:?}", function.as_str(), run.last());
    }
    // And the sweep removes R2's abandoned pre-product fleet, not R3's.
    let swept = app
        .handle(Function::Cleanup, sample_event("cleanup-schedule.json"))
        .await
        .expect("handled");
    assert!(!swept.to_string().contains("\"failed\""), "{swept}");
    let alive = Aws::new(&local.config)
        .instances(InstanceQuery::Service(SERVICE))
        .await
        .unwrap();
    assert!(
        alive.iter().all(|i| i.release.as_deref() == Some(R3)),
        "{alive:?}"
    );
    assert_eq!(alive.len(), 2);
}

#[tokio::test]
async fn the_sweep_keeps_baking_fleets_and_removes_expired_ones() {
    let local = local(0).await;
    fixture::seed_service(&local.clients, &local.base, SERVICE, 10).await;
    let app = local.app(&[(
        "MOBILE_ZUM_API",
        fixture::settings_json(&local.base, 1, 0, json!({"BAKE_S": 3600})),
    )]);
    for release in [R1, R2] {
        for function in [
            Function::Provision,
            Function::RegisterTarget,
            Function::SwitchListener,
        ] {
            assert!(local
                .run_job(&app, function, &params(release))
                .await
                .succeeded());
        }
    }
    let sweep = sample_event("cleanup-schedule.json");
    app.handle(Function::Cleanup, sweep.clone())
        .await
        .expect("handled");
    let aws = Aws::new(&local.config);
    assert_eq!(
        aws.instances(InstanceQuery::Service(SERVICE))
            .await
            .unwrap()
            .len(),
        2,
        "R1 still baking"
    );
    local.advance(3600);
    app.handle(Function::Cleanup, sweep).await.expect("handled");
    let alive = aws
        .instances(InstanceQuery::Service(SERVICE))
        .await
        .unwrap();
    assert_eq!(alive.len(), 1);
    assert_eq!(alive[0].release.as_deref(), Some(R2));
    assert!(local
        .endpoint
        .published()
        .iter()
        .any(|(subject, _)| subject.contains("cleanup succeeded")));
}

/// A rollback may start until the bake ends and lands its calls within switch-listener's timeout;
/// cleanup leaves the retired fleet alone for two timeouts past the bake, so it never deregisters
/// a fleet a rollback is moving product to (the release model found that interleaving).
#[tokio::test]
async fn cleanup_leaves_a_retired_fleet_until_no_rollback_can_land() {
    let local = local(0).await;
    fixture::seed_service(&local.clients, &local.base, SERVICE, 10).await;
    let mut app = local.app(&[(
        "MOBILE_ZUM_API",
        fixture::settings_json(&local.base, 1, 0, json!({"BAKE_S": 600})),
    )]);
    app.switch_listener_timeout_s = cutover::plan::SWITCH_LISTENER_TIMEOUT_S;
    local.release(&app, &params(R1)).await;
    local.release(&app, &params(R2)).await;
    let live = |local: &Local| {
        let aws = Aws::new(&local.config);
        async move {
            aws.instances(InstanceQuery::Service(SERVICE))
                .await
                .unwrap()
                .len()
        }
    };
    let sweep = sample_event("cleanup-schedule.json");

    // The bake is over: a rollback is refused, and the fleet is not yet cleanup's.
    local.advance(600);
    let mark = local.endpoint.mark();
    let refused = app
        .handle(
            Function::SwitchListener,
            json!({"service": SERVICE, "action": "rollback"}),
        )
        .await
        .unwrap();
    assert!(
        refused.to_string().contains("kept for rollback until"),
        "{refused}"
    );
    app.handle(Function::Cleanup, sweep.clone()).await.unwrap();
    assert!(local.endpoint.mutations(mark).is_empty());
    assert_eq!(live(&local).await, 2);

    // Two timeouts later no rollback begun inside the bake can still land: the fleet goes.
    local.advance(2 * cutover::plan::SWITCH_LISTENER_TIMEOUT_S);
    app.handle(Function::Cleanup, sweep).await.unwrap();
    assert_eq!(live(&local).await, 1);
}

/// The lock is removed only by the release holding it, read again in the step that removes it: a
/// claim another release wrote after the plan was made survives the first release's switch.
#[tokio::test]
async fn a_lock_claimed_by_another_release_after_the_plan_survives_its_release() {
    let (local, service, _app) = setup().await;
    let lock = |release: &str| cutover::world::Lock {
        release: release.to_owned(),
        since: local.now(),
    };
    let aws = Aws::new(&local.config);
    let tag = cutover::world::Step::TagRoute {
        route: service.product_rule.clone(),
        tags: [(cutover::world::TAG_LOCK.to_owned(), lock(R2).tag_value())].into(),
    };
    aws.execute(&tag).await.unwrap();
    // R1's switch planned the removal of its own lock; R2's claim landed first.
    let release = |release: &str| cutover::world::Step::ReleaseLock {
        route: service.product_rule.clone(),
        release: release.to_owned(),
    };
    aws.execute(&release(R1)).await.unwrap();
    assert_eq!(local.alb().await.product.lock, Some(lock(R2)));
    aws.execute(&release(R2)).await.unwrap();
    assert_eq!(local.alb().await.product.lock, None);
}

/// A failed execution's lock does not fail the next release: in QUEUED mode CodePipeline starts
/// the next execution at once, and its provision and register-target ask CodePipeline about the
/// holder's execution and take the lock over (before, they refused "locked by" until the failed
/// execution's cleanup event released it, or for a week if that event was lost).
#[tokio::test]
async fn a_failed_executions_lock_is_taken_over_by_the_next_release_at_once() {
    let (local, service, app) = setup().await;
    for function in [Function::Provision, Function::RegisterTarget] {
        let run = local.run_job(&app, function, &params(R1)).await;
        assert!(run.succeeded(), "{:?}", run.last());
    }
    assert_eq!(
        local.alb().await.product.lock.map(|l| l.release),
        Some(R1.to_owned())
    );
    // R1's execution fails (say at the manual approval); its FAILED event has not arrived.
    local
        .endpoint
        .set_execution(&format!("cutover-{SERVICE}"), R1, "Failed");
    for function in [
        Function::Provision,
        Function::RegisterTarget,
        Function::SwitchListener,
    ] {
        let run = local.run_job(&app, function, &params(R2)).await;
        assert!(run.succeeded(), "{}: {:?}", function.as_str(), run.last());
    }
    let alb = local.alb().await;
    assert_eq!(
        alb.product.lock, None,
        "R2 took the lock over and released it"
    );
    // R2 replaced R1's fleet in the idle slot, and serves from it.
    assert_eq!(
        alb.product.forward.sole_target(),
        Some(service.green.as_str())
    );
}
