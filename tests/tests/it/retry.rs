//! A failed release can be retried: CodePipeline V2 retries a failed stage while its execution is
//! the latest there, and emits `RESUMED` (sent here as EventBridge would deliver it). The fleet and
//! the lock wait `RETRY_WINDOW_S`; after it, or once a newer release takes the service, cleanup
//! takes them, and a retry says how to go on.

use cutover::settings::DEFAULT_RETRY_WINDOW_S;
use cutover::world::{Stage, TAG_LOCK};
use cutover::Function;
use cutover_tests::{fixture, params, sample_event, Local, R1, R2, R3, SERVICE};
use serde_json::{json, Value};

const ALARM: &str = "cutover-mobile-zum-api-5xx";

/// R1 serves; R2 is provisioned and in QA; its switch fails on an alarm; its FAILED event came.
async fn a_failed_switch() -> (Local, cutover::App) {
    let (local, _service, app) =
        Local::with_service(1, 0, json!({"ALARMS": [ALARM], "BAKE_S": 0})).await;
    fixture::put_alarm(&local.clients, ALARM, "OK").await;
    local.release(&app, &params(R1)).await;
    for function in [Function::Provision, Function::RegisterTarget] {
        let run = local.run_job(&app, function, &params(R2)).await;
        assert!(run.succeeded(), "{:?}", run.last());
    }
    fixture::put_alarm(&local.clients, ALARM, "ALARM").await;
    let run = local
        .run_job(&app, Function::SwitchListener, &params(R2))
        .await;
    assert!(
        run.failure_message().unwrap().contains(ALARM),
        "{:?}",
        run.last()
    );
    app.handle(Function::Cleanup, execution_event(R2, "FAILED"))
        .await
        .unwrap();
    (local, app)
}

fn execution_event(release: &str, state: &str) -> Value {
    let mut event = sample_event("cleanup-pipeline-failed.json");
    event["detail"]["execution-id"] = json!(release);
    event["detail"]["state"] = json!(state);
    event
}

async fn fleet_of(local: &Local, release: &str) -> Vec<cutover::world::Instance> {
    cutover::aws::Aws::new(&local.config)
        .instances(cutover::aws::InstanceQuery::Release(release))
        .await
        .unwrap()
        .into_iter()
        .filter(|i| !i.state.is_dead())
        .collect()
}

#[tokio::test]
async fn a_failed_switch_retried_within_the_window_releases() {
    let (local, app) = a_failed_switch().await;
    // Kept: in the idle slot, pre-product, the failure's time on it; the lock still R2's.
    let kept = fleet_of(&local, R2).await;
    assert!(
        !kept.is_empty()
            && kept
                .iter()
                .all(|i| i.stage == Some(Stage::PreProduct) && i.failed_at.is_some()),
        "{kept:?}"
    );
    assert_eq!(
        local.alb().await.product.lock.map(|l| l.release),
        Some(R2.to_owned())
    );
    // An hour later a sweep keeps it too.
    local.advance(3_600);
    local
        .endpoint
        .set_execution(&format!("cutover-{SERVICE}"), R2, "Failed");
    app.handle(Function::Cleanup, sample_event("cleanup-schedule.json"))
        .await
        .unwrap();
    assert_eq!(fleet_of(&local, R2).await.len(), kept.len());

    // Retry: CodePipeline resumes the execution and runs the failed action again.
    local
        .endpoint
        .set_execution(&format!("cutover-{SERVICE}"), R2, "InProgress");
    app.handle(Function::Cleanup, execution_event(R2, "RESUMED"))
        .await
        .unwrap();
    assert!(fleet_of(&local, R2)
        .await
        .iter()
        .all(|i| i.failed_at.is_none()));
    fixture::put_alarm(&local.clients, ALARM, "OK").await;
    let run = local
        .run_job(&app, Function::SwitchListener, &params(R2))
        .await;
    assert!(run.succeeded(), "{:?}", run.last());
    let product = local.product_forward().await;
    let serving = local.alb().await;
    let slot = serving.slot_of_arn(&product).unwrap();
    assert!(kept.iter().all(|i| serving.slot(slot).has(&i.id)));
    assert!(serving.product.lock.is_none(), "{TAG_LOCK} released");
}

#[tokio::test]
async fn after_the_window_the_fleet_is_gone_and_a_retry_says_how_to_go_on() {
    let (local, app) = a_failed_switch().await;
    local.advance(DEFAULT_RETRY_WINDOW_S + 1);
    local
        .endpoint
        .set_execution(&format!("cutover-{SERVICE}"), R2, "Failed");
    for _ in 0..3 {
        app.handle(Function::Cleanup, sample_event("cleanup-schedule.json"))
            .await
            .unwrap();
    }
    assert!(fleet_of(&local, R2).await.is_empty());

    // A retry now: the RESUMED event changes nothing, and the retried switch says how to go on.
    app.handle(Function::Cleanup, execution_event(R2, "RESUMED"))
        .await
        .unwrap();
    assert!(fleet_of(&local, R2).await.is_empty());
    fixture::put_alarm(&local.clients, ALARM, "OK").await;
    let run = local
        .run_job(&app, Function::SwitchListener, &params(R2))
        .await;
    let message = run.failure_message().unwrap_or_default().to_owned();
    assert!(
        message.contains("retry the whole Release stage"),
        "{message}"
    );
}

#[tokio::test]
async fn a_newer_release_takes_the_service_from_a_failed_one_at_once() {
    let (local, app) = a_failed_switch().await;
    fixture::put_alarm(&local.clients, ALARM, "OK").await;
    // The next queued execution enters the stage: its provision takes the lock over (R2's
    // execution has ended) and launches.
    local
        .endpoint
        .set_execution(&format!("cutover-{SERVICE}"), R2, "Failed");
    let run = local.run_job(&app, Function::Provision, &params(R3)).await;
    assert!(run.succeeded(), "{:?}", run.last());
    app.handle(Function::Cleanup, sample_event("cleanup-schedule.json"))
        .await
        .unwrap();
    let r2 = fleet_of(&local, R2).await;
    assert!(
        r2.iter().all(|i| i.stage == Some(Stage::Abandoned)),
        "R2's fleet is cleanup's once R3 is in the stage: {r2:?}"
    );
    let run = local
        .run_job(&app, Function::RegisterTarget, &params(R2))
        .await;
    assert!(
        run.failure_message()
            .unwrap_or_default()
            .contains("retry the whole Release stage"),
        "{:?}",
        run.last()
    );
}
