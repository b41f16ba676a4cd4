//! Alarms gate a release and watch the bake: a switch does not start while one of the service's
//! `ALARMS` fires, a gradual shift whose alarm fires goes back to 100% old in one call, an alarm
//! inside the bake window rolls product back by itself (once), outside it only notifies, and the
//! retired fleet is kept while an alarm fires.

use cutover::Function;
use cutover_tests::{fixture, job_event, params, AckKind, Local, ServiceFixture, R1, R2, SERVICE};
use serde_json::{json, Value};

/// The name the sample event in `events/` carries.
const ALARM: &str = "cutover-mobile-zum-api-5xx";

async fn setup(extra: Value) -> (Local, ServiceFixture, cutover::App) {
    let mut settings = json!({"ALARMS": [ALARM]});
    for (key, value) in extra.as_object().unwrap() {
        settings[key] = value.clone();
    }
    let (local, service, app) = Local::with_service(1, 0, settings).await;
    fixture::put_alarm(&local.clients, ALARM, "OK").await;
    (local, service, app)
}

async fn through_register(local: &Local, app: &cutover::App, release: &str) {
    for function in [Function::Provision, Function::RegisterTarget] {
        let run = local.run_job(app, function, &params(release)).await;
        assert!(run.succeeded(), "{}: {:?}", function.as_str(), run.last());
    }
}

async fn release(local: &Local, app: &cutover::App, release: &str) {
    through_register(local, app, release).await;
    let run = local
        .run_job(app, Function::SwitchListener, &params(release))
        .await;
    assert!(run.succeeded(), "switch: {:?}", run.last());
}

#[tokio::test]
async fn a_canary_whose_alarm_fires_after_the_first_step_ends_at_100_percent_old() {
    let (local, service, app) = setup(json!({})).await;
    release(&local, &app, R1).await;
    through_register(&local, &app, R2).await;
    let old = local.product_forward().await;
    let canary = json!({"service": SERVICE, "release": R2, "strategy": "canary:10:5"});
    let first = local.next_job_id();
    app.handle(
        Function::SwitchListener,
        job_event(Function::SwitchListener, &first, &canary, None),
    )
    .await
    .unwrap();
    let token = local.endpoint.ack_for(&first).unwrap().continuation_token;
    assert_eq!(
        local.product_forward().await,
        "split",
        "10% on the new slot"
    );

    fixture::set_alarm(&local.clients, ALARM, "ALARM").await;
    local.advance(5 * 60);
    let mark = local.endpoint.mark();
    let told = local.endpoint.published().len();
    let second = local.next_job_id();
    app.handle(
        Function::SwitchListener,
        job_event(Function::SwitchListener, &second, &canary, token.as_deref()),
    )
    .await
    .unwrap();
    let ack = local.endpoint.ack_for(&second).unwrap();
    assert_eq!(ack.kind, AckKind::Failure);
    assert!(ack.message.unwrap().contains(ALARM));
    assert_eq!(local.product_forward().await, old, "100% old");
    assert_eq!(
        local.endpoint.rule_moves(mark, &service.product_rule).len(),
        1
    );
    let published = local.endpoint.published();
    assert_eq!(published.len(), told + 1);
    let (subject, message) = published.last().unwrap();
    assert!(
        subject.contains("FAILED") && message.contains(ALARM),
        "{subject}"
    );
}

#[tokio::test]
async fn an_alarm_already_firing_stops_a_switch_unless_the_release_ignores_alarms() {
    let (local, service, app) = setup(json!({})).await;
    release(&local, &app, R1).await;
    through_register(&local, &app, R2).await;
    fixture::set_alarm(&local.clients, ALARM, "ALARM").await;
    let mark = local.endpoint.mark();
    let run = local
        .run_job(&app, Function::SwitchListener, &params(R2))
        .await;
    let why = run.failure_message().expect("refused").to_owned();
    assert!(
        why.contains(ALARM) && why.contains("ignore_alarms"),
        "{why}"
    );
    assert!(local
        .endpoint
        .rule_moves(mark, &service.product_rule)
        .is_empty());

    let fix = json!({"service": SERVICE, "release": R2, "ignore_alarms": true});
    let run = local.run_job(&app, Function::SwitchListener, &fix).await;
    assert!(run.succeeded(), "{:?}", run.last());
    assert_eq!(
        local.endpoint.rule_moves(mark, &service.product_rule).len(),
        1
    );
}

#[tokio::test]
async fn an_alarm_that_does_not_exist_fails_the_switch_naming_it() {
    let (local, _service, app) =
        setup(json!({"ALARMS": [ALARM, "cutover-nobody-made-this"]})).await;
    through_register(&local, &app, R1).await;
    let run = local
        .run_job(&app, Function::SwitchListener, &params(R1))
        .await;
    let why = run.failure_message().expect("refused").to_owned();
    assert!(
        why.contains("cutover-nobody-made-this") && why.contains("does not exist"),
        "{why}"
    );
}

#[tokio::test]
async fn an_alarm_inside_the_bake_rolls_back_once_and_outside_it_only_notifies() {
    let (local, service, app) = setup(json!({"BAKE_S": 600})).await;
    release(&local, &app, R1).await;
    let r1_slot = local.product_forward().await;
    release(&local, &app, R2).await;
    let r2_slot = local.product_forward().await;
    assert_ne!(r1_slot, r2_slot);

    // The alarm fires inside R1's bake: product back to R1's fleet in one call, R2's kept.
    fixture::set_alarm(&local.clients, ALARM, "ALARM").await;
    // An event from before R2's switch, delivered late (Lambda's asynchronous queue keeps
    // events for hours): it speaks of another release, nothing moves.
    let mark = local.endpoint.mark();
    let late = app
        .handle(
            Function::SwitchListener,
            cutover_tests::alarm_event(local.now() - 3_600),
        )
        .await
        .unwrap();
    assert!(
        late.to_string()
            .contains("is older than the release serving"),
        "{late}"
    );
    assert!(local.endpoint.mutations(mark).is_empty());
    let event = cutover_tests::alarm_event(local.now());
    let mark = local.endpoint.mark();
    let response = app
        .handle(Function::SwitchListener, event.clone())
        .await
        .unwrap();
    assert_eq!(
        response["services"][SERVICE]["outcome"], "succeeded",
        "{response}"
    );
    assert_eq!(local.product_forward().await, r1_slot);
    assert_eq!(
        local.endpoint.rule_moves(mark, &service.product_rule).len(),
        1
    );
    let live = cutover::aws::Aws::new(&local.config)
        .instances(cutover::aws::InstanceQuery::Service(SERVICE))
        .await
        .unwrap();
    assert_eq!(live.len(), 2, "the rolled-back fleet is kept: {live:?}");
    let (subject, message) = local.endpoint.published().last().cloned().unwrap();
    assert!(
        subject.contains("switch-listener succeeded") && message.contains(ALARM),
        "{subject}"
    );

    // The same event again (EventBridge delivers at least once): nothing moves.
    let mark = local.endpoint.mark();
    app.handle(Function::SwitchListener, event.clone())
        .await
        .unwrap();
    assert!(local.endpoint.mutations(mark).is_empty());
    assert_eq!(local.product_forward().await, r1_slot);

    // The alarm clears and the fix ships (R2 again, inside its bake); R1's fleet now bakes.
    fixture::set_alarm(&local.clients, ALARM, "OK").await;
    let run = local
        .run_job(&app, Function::SwitchListener, &params(R2))
        .await;
    assert!(run.succeeded(), "{:?}", run.last());
    assert_eq!(local.product_forward().await, r2_slot);

    // Past that bake the alarm fires again: outside the bake window it only notifies.
    local.advance(601);
    fixture::set_alarm(&local.clients, ALARM, "ALARM").await;
    let mark = local.endpoint.mark();
    let told = local.endpoint.published().len();
    let response = app
        .handle(
            Function::SwitchListener,
            cutover_tests::alarm_event(local.now()),
        )
        .await
        .unwrap();
    let summary = response["services"][SERVICE]["summary"]
        .as_str()
        .unwrap_or_default();
    assert!(summary.contains("outside the bake window"), "{response}");
    assert!(local.endpoint.mutations(mark).is_empty());
    assert_eq!(local.endpoint.published().len(), told + 1);
    assert_eq!(local.product_forward().await, r2_slot);

    // While the alarm fires, cleanup keeps the retired fleet (and its job waits).
    let job = local.next_job_id();
    app.handle(
        Function::Cleanup,
        job_event(Function::Cleanup, &job, &params(R2), None),
    )
    .await
    .unwrap();
    let ack = local.endpoint.ack_for(&job).unwrap();
    assert!(
        ack.continuation_token.is_some(),
        "waits while the alarm fires: {ack:?}"
    );
    assert_eq!(
        cutover::aws::Aws::new(&local.config)
            .instances(cutover::aws::InstanceQuery::Service(SERVICE))
            .await
            .unwrap()
            .len(),
        2
    );

    // The alarm clears: the retired fleet goes.
    fixture::set_alarm(&local.clients, ALARM, "OK").await;
    let run = local.run_job(&app, Function::Cleanup, &params(R2)).await;
    assert!(run.succeeded(), "{:?}", run.last());
    let live = cutover::aws::Aws::new(&local.config)
        .instances(cutover::aws::InstanceQuery::Service(SERVICE))
        .await
        .unwrap();
    assert_eq!(live.len(), 1, "{live:?}");
    assert!(live.iter().all(|i| i.release.as_deref() == Some(R2)));
}
