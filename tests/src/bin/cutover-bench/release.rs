//! A whole release through the binaries, cold and warm, and at scale.

use super::*;

/// One CodePipeline action played through a running binary, continuations included.
pub(crate) struct Played {
    pub(crate) took: Duration,
    /// Each invocation's calls, as a range of `calls()`.
    pub(crate) invocations: Vec<std::ops::Range<usize>>,
}

pub(crate) async fn action(
    local: &Local,
    running: &Running,
    function: Function,
    params: &Value,
) -> Played {
    let started = Instant::now();
    let mut token: Option<String> = None;
    let mut invocations = Vec::new();
    loop {
        let job_id = local.next_job_id();
        let mark = local.endpoint.mark();
        let (ok, body) = running
            .api
            .invoke(&job_event(function, &job_id, params, token.as_deref()))
            .await;
        invocations.push(mark..local.endpoint.mark());
        assert!(
            ok,
            "{}: {}",
            function.as_str(),
            String::from_utf8_lossy(&body)
        );
        let ack = local.endpoint.ack_for(&job_id).expect("acknowledged");
        assert!(
            ack.message.is_none(),
            "{}: {:?}",
            function.as_str(),
            ack.message
        );
        token = ack.continuation_token;
        if token.is_none() || invocations.len() > 10 {
            return Played {
                took: started.elapsed(),
                invocations,
            };
        }
    }
}

/// The service among a hundred services' target groups, rules and settings parameters, its own
/// groups naming no listener, its settings an SSM parameter (as the stacks deploy them) with an
/// alarm: the cold
/// start the issue measures. No settings variable, so every cold start reads the parameter.
pub(crate) async fn world(
    count: u32,
    eips: usize,
) -> (
    Local,
    cutover_tests::ServiceFixture,
    Vec<(&'static str, String)>,
) {
    let local = cutover_tests::local(eips).await;
    let service = fixture::seed_service(&local.clients, &local.base, SERVICE, 10).await;
    fixture::seed_other_services(&local.clients, &local.base, SERVICES - 1).await;
    fixture::put_other_settings_parameters(&local.clients, &local.base, SERVICES - 1).await;
    fixture::forget_the_listener(&local.clients, &service).await;
    fixture::put_alarm(&local.clients, ALARM, "OK").await;
    let settings = fixture::settings_json(
        &local.base,
        count,
        eips,
        json!({"BAKE_S": 3600, "ALARMS": [ALARM]}),
    );
    fixture::put_settings_parameter(&local.clients, SERVICE, &settings).await;
    (local, service, Vec::new())
}

/// The release path's fleet and addresses.
const COUNT: u32 = 3;
const EIPS: usize = 2;

/// Services whose target groups the account holds.
const SERVICES: i32 = 100;
const ALARM: &str = "cutover-mobile-zum-api-5xx";

/// One event (not a job) played through a running binary.
async fn event(local: &Local, running: &Running, event: &Value) -> Played {
    let mark = local.endpoint.mark();
    let started = Instant::now();
    let (ok, body) = running.api.invoke(event).await;
    assert!(ok, "{}", String::from_utf8_lossy(&body));
    Played {
        took: started.elapsed(),
        invocations: std::iter::once(mark..local.endpoint.mark()).collect(),
    }
}

/// Whether a step runs in a process of its own, started for it (nothing learned yet).
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Container {
    Cold,
    Warm,
}

/// A whole release, its rollback and the cleanup, through the binaries, at `latency` per call.
pub(crate) async fn release_path(latency: Duration) -> Value {
    let (local, service, settings) = world(COUNT, EIPS).await;
    local.endpoint.set_latency(latency);
    let env = base_env(Some(&local), &settings);
    let params = |release: &str, action: &str| json!({"service": SERVICE, "release": release, "action": action});
    use Container::*;
    use Function::*;
    let steps = [
        ("first release: provision", Provision, "r0", "release", Cold),
        (
            "first release: register-target",
            RegisterTarget,
            "r0",
            "release",
            Cold,
        ),
        (
            "first release: switch-listener",
            SwitchListener,
            "r0",
            "release",
            Cold,
        ),
        ("provision", Provision, "r1", "release", Warm),
        ("register-target", RegisterTarget, "r1", "release", Warm),
        (
            "switch-listener release, cold",
            SwitchListener,
            "r1",
            "release",
            Cold,
        ),
        (
            "switch-listener rollback, cold",
            SwitchListener,
            "r1",
            "rollback",
            Cold,
        ),
        (
            "switch-listener release, warm",
            SwitchListener,
            "r1",
            "release",
            Warm,
        ),
        (
            "switch-listener rollback, warm",
            SwitchListener,
            "r1",
            "rollback",
            Warm,
        ),
        (
            "switch-listener release again, warm",
            SwitchListener,
            "r1",
            "release",
            Warm,
        ),
    ];
    let mut runners: BTreeMap<&str, Running> = BTreeMap::new();
    let mut rows = Vec::new();
    for (label, function, id, verb, container) in steps {
        if container == Cold || !runners.contains_key(function.as_str()) {
            let (running, started) = Running::spawn(function, &env).await;
            running.wait_ready(started).await;
            runners.insert(function.as_str(), running);
        }
        let played = action(
            &local,
            &runners[function.as_str()],
            function,
            &params(id, verb),
        )
        .await;
        let mut row = counts(&local, &played, &service.product_rule, latency);
        row["step"] = json!(label);
        rows.push(row);
    }

    // From the start of a warm switch to the product ModifyRule's answer.
    let mut to_modify = Stats::default();
    let runner = &runners["switch-listener"];
    for n in 0..10 {
        let verb = if n % 2 == 0 { "rollback" } else { "release" };
        let mark = local.endpoint.mark();
        let started = Instant::now();
        action(&local, runner, SwitchListener, &params("r1", verb)).await;
        let answered = local
            .endpoint
            .rule_moves(mark, &service.product_rule)
            .first()
            .map(|c| c.answered)
            .expect("the switch moved product");
        to_modify.0.push(ms(answered - started));
    }
    // The same cold switches with the settings naming the service's listener (`LISTENER`, as the
    // service stack writes it): its routes are looked for there as soon as the parameter is read.
    // The release follows the rollback, so it removes the rollback's mark before its move (a
    // release with no mark to remove moves product a round sooner:
    // `discovery::a_cold_switch_on_the_listener_its_settings_name_moves_product_after_three_rounds`).
    let with_listener = |listener: Option<&str>| {
        let mut extra = json!({"BAKE_S": 3600, "ALARMS": [ALARM]});
        if let Some(listener) = listener {
            extra["LISTENER"] = json!(listener);
        }
        fixture::settings_json(&local.base, COUNT, EIPS, extra)
    };
    let named = with_listener(Some(&local.base.listener));
    fixture::put_settings_parameter(&local.clients, SERVICE, &named).await;
    for (label, verb) in [
        (
            "switch-listener rollback, cold, LISTENER in the settings",
            "rollback",
        ),
        (
            "switch-listener release after that rollback, cold, LISTENER in the settings",
            "release",
        ),
    ] {
        let (cold, started) = Running::spawn(SwitchListener, &env).await;
        cold.wait_ready(started).await;
        let played = action(&local, &cold, SwitchListener, &params("r1", verb)).await;
        let mut row = counts(&local, &played, &service.product_rule, latency);
        row["step"] = json!(label);
        rows.push(row);
    }
    fixture::put_settings_parameter(&local.clients, SERVICE, &with_listener(None)).await;

    // An alarm of the service goes to ALARM inside the bake: a cold switch-listener rolls back.
    fixture::put_alarm(&local.clients, ALARM, "ALARM").await;
    let (alarmed, started) = Running::spawn(SwitchListener, &env).await;
    alarmed.wait_ready(started).await;
    // The binaries read the machine's clock, not the tests' (which the bench never moves).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let played = event(&local, &alarmed, &cutover_tests::alarm_event(now)).await;
    assert_eq!(
        local
            .endpoint
            .rule_moves(played.invocations[0].start, &service.product_rule)
            .len(),
        1,
        "the alarm's event moved product back"
    );
    let mut row = counts(&local, &played, &service.product_rule, latency);
    row["step"] = json!("switch-listener rollback by an alarm's event, cold");
    rows.push(row);
    fixture::put_alarm(&local.clients, ALARM, "OK").await;

    // The old fleet goes only now, its bake and the takeover margin made over: the steps above
    // need it for their rollbacks.
    let retired = cutover::aws::Aws::new(&local.config)
        .instances(cutover::aws::InstanceQuery::Release("r1"))
        .await
        .expect("r1's fleet");
    for instance in retired {
        local
            .clients
            .ec2
            .create_tags()
            .resources(&instance.id)
            .tags(
                aws_sdk_ec2::types::Tag::builder()
                    .key("cutover:retired-at")
                    .value((now - 3_600 - 600).to_string())
                    .build(),
            )
            .send()
            .await
            .expect("CreateTags");
    }
    let (cleanup, started) = Running::spawn(Cleanup, &env).await;
    cleanup.wait_ready(started).await;
    let played = action(&local, &cleanup, Cleanup, &params("r1", "release")).await;
    let mut row = counts(&local, &played, &service.product_rule, latency);
    row["step"] = json!("cleanup");
    rows.push(row);
    runners.insert("cleanup", cleanup);

    let mut out = json!({"latency_ms": ms(latency), "steps": rows, "switch_to_modify_rule": to_modify.json()});
    if latency.is_zero() {
        // Repeated invocations of each function on the finished world (replays: read, plan, ack).
        let mut replays = BTreeMap::new();
        let mut rss = BTreeMap::new();
        for function in FUNCTIONS {
            let running = &runners[function.as_str()];
            let mut stats = Stats::default();
            for _ in 0..INVOCATIONS {
                let played = action(&local, running, function, &params("r1", "release")).await;
                stats.0.push(ms(played.took));
            }
            replays.insert(function.as_str(), stats.json());
            rss.insert(function.as_str(), running.peak_rss_mib());
        }
        out["replay_latency"] = json!(replays);
        out["peak_rss_mib"] = json!(rss);
        out["init_and_first_invocation"] = init_and_first_invocation(&local, &settings).await;
    }
    out
}

/// Provision of 3 and of 50 instances, and the cleanup of the 50 after a failed execution, at
/// `latency` per call.
pub(crate) async fn scale(latency: Duration) -> Value {
    let mut out = BTreeMap::new();
    for count in [3u32, 50] {
        let (local, service, settings) = world(count, 0).await;
        local.endpoint.set_latency(latency);
        let env = base_env(Some(&local), &settings);
        let (provision, started) = Running::spawn(Function::Provision, &env).await;
        provision.wait_ready(started).await;
        let played = action(
            &local,
            &provision,
            Function::Provision,
            &json!({"service": SERVICE, "release": "s1"}),
        )
        .await;
        let mut row = counts(&local, &played, &service.product_rule, latency);
        let calls = local.endpoint.calls();
        let launches: Vec<Call> = played
            .invocations
            .iter()
            .flat_map(|r| calls[r.clone()].iter())
            .filter(|c| c.action == "RunInstances")
            .cloned()
            .collect();
        row["round_trips_of_launches"] = json!(round_trips(&launches));
        out.insert(format!("provision {count}"), row);
        if count == 50 {
            let (cleanup, started) = Running::spawn(Function::Cleanup, &env).await;
            cleanup.wait_ready(started).await;
            // Given up (stopped): cleaned at once, not kept for a retry.
            let mut stopped = sample_event("cleanup-pipeline-failed.json");
            stopped["detail"]["execution-id"] = json!("s1");
            stopped["detail"]["state"] = json!("STOPPED");
            let played = event(&local, &cleanup, &stopped).await;
            out.insert(
                "cleanup 50".into(),
                counts(&local, &played, &service.product_rule, latency),
            );
        }
    }
    json!(out)
}
