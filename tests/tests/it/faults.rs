//! Faults injected at the local endpoint, through the real SDK clients: throttling, 5xx, a call
//! failing after earlier ones of the same job succeeded (a crash between steps), failed
//! acknowledgements. Each release is then carried on the way an operator would (retry the stage)
//! and must end with no orphaned instance, no half-switched route, product on a healthy,
//! non-empty slot.

use cutover::aws::{Aws, InstanceQuery};
use cutover::world::Stage;
use cutover::Function;
use cutover_tests::{Local, ServiceFixture, R1, R2, SERVICE};
use serde_json::json;

const STAGES: [Function; 4] = [
    Function::Provision,
    Function::RegisterTarget,
    Function::SwitchListener,
    Function::Cleanup,
];

struct Fault {
    action: &'static str,
    skip: usize,
    times: usize,
    status: u16,
    code: &'static str,
    during: Function,
    /// Applied by AWS, its answer lost (`status` and `code` unused): the SDK retries it.
    lost: bool,
    /// EC2 deduplicates RunInstances by ClientToken, as AWS does (moto does not).
    tokens: bool,
}

/// One call of `action` (after `skip`) applied, its answer lost; the SDK retries a call AWS
/// already carried out.
const fn lost(action: &'static str, skip: usize, during: Function, tokens: bool) -> Fault {
    Fault {
        action,
        skip,
        times: 1,
        status: 0,
        code: "",
        during,
        lost: true,
        tokens,
    }
}

const fn fault(
    action: &'static str,
    skip: usize,
    times: usize,
    status: u16,
    code: &'static str,
    during: Function,
) -> Fault {
    Fault {
        action,
        skip,
        times,
        status,
        code,
        during,
        lost: false,
        tokens: false,
    }
}

/// The functions with their production retry and timeout configuration (4 attempts, 10 s per
/// attempt, 30 s per call), so a fault shorter than the attempts is the SDK's to ride out and a
/// longer one fails the job.
async fn setup() -> (Local, ServiceFixture, cutover::App) {
    Local::with_service(2, 2, json!({})).await
}

impl Fault {
    /// A fault on every attempt of a call fails its job, which the operator re-runs; a shorter
    /// one is retried by the SDK inside the job. A notification never fails a job.
    fn runs_needed(&self) -> usize {
        let exhausts = self.times >= cutover::aws::MAX_ATTEMPTS as usize;
        if exhausts && self.action != "Publish" {
            2
        } else {
            1
        }
    }
}

/// Runs a stage; if it fails, retries it as an operator would. The injected fault is spent by then.
async fn stage_with_retry(
    local: &Local,
    app: &cutover::App,
    function: Function,
    release: &str,
) -> usize {
    let params = json!({"service": SERVICE, "release": release});
    for attempt in 1..=3 {
        let run = local.run_job(app, function, &params).await;
        if run.succeeded() {
            return attempt;
        }
        eprintln!(
            "{} attempt {attempt} failed: {:?}",
            function.as_str(),
            run.failure_message()
        );
    }
    panic!(
        "{} of {release} did not succeed after 3 attempts",
        function.as_str()
    );
}

/// No orphan, no half-switched route, product healthy and non-empty, serving `release`.
async fn assert_converged(local: &Local, service: &ServiceFixture, release: &str) {
    let aws = Aws::new(&local.config);
    let alb = aws.alb(SERVICE).await.unwrap();
    let product = alb
        .product
        .forward
        .sole_target()
        .expect("product forwards to exactly one group");
    assert_eq!(
        alb.product.forward.targets.len(),
        1,
        "no weighted leftovers"
    );
    let slot = alb.slot_of_arn(product).expect("product on blue or green");
    let serving = alb.slot(slot);
    assert!(
        !serving.targets.is_empty() && serving.unhealthy().is_empty(),
        "{serving:?}"
    );
    assert!(
        alb.product.lock.is_none(),
        "lock released: {:?}",
        alb.product.lock
    );
    let all = aws.instances(InstanceQuery::AllServices).await.unwrap();
    assert_eq!(all.len(), 2, "exactly the serving fleet is alive: {all:?}");
    for instance in &all {
        assert_eq!(instance.release.as_deref(), Some(release), "{instance:?}");
        assert_eq!(instance.stage, Some(Stage::Product), "{instance:?}");
        assert!(serving.has(&instance.id));
    }
    let records = aws.dns(&local.base.zone_id, SERVICE).await.unwrap().records;
    let ips: Vec<String> = all.iter().filter_map(|i| i.private_ip.clone()).collect();
    for (name, record) in &records {
        let values = &record.values;
        assert!(
            values.iter().all(|v| ips.contains(v)),
            "stale record {name} {values:?}"
        );
    }
    let _ = service;
}

async fn run_scenario(fault: Fault) {
    let (local, service, app) = setup().await;
    if fault.lost {
        // A retry lands on AWS's world, not moto's: re-deregistering a target succeeds there
        // (the ELBv2 API reference), and the endpoint's target model says so. Targets turn
        // healthy and drain at once, so the scenario needs no clock.
        local.endpoint.model_targets(0, 0);
    }
    if fault.tokens {
        local.endpoint.honour_client_tokens();
    }

    for function in STAGES {
        stage_with_retry(&local, &app, function, R1).await;
    }
    let mark = local.endpoint.mark();
    for function in STAGES {
        if function == fault.during && fault.lost {
            local
                .endpoint
                .inject_lost_answer(fault.action, fault.skip, fault.times);
        } else if function == fault.during {
            local.endpoint.inject_fault_after(
                fault.action,
                fault.skip,
                fault.times,
                fault.status,
                fault.code,
            );
        }
        let runs = stage_with_retry(&local, &app, function, R2).await;
        if function == fault.during {
            // One run means the SDK's retries absorbed the fault inside the job; two mean the
            // job failed and the operator's re-run converged.
            assert_eq!(runs, fault.runs_needed(), "{} runs", function.as_str());
        }
        // Traffic is never half-switched, whatever failed.
        let alb = local.alb().await;
        assert!(alb.product.forward.sole_target().is_some());
    }
    let hits = local.endpoint.calls()[mark..]
        .iter()
        .filter(|c| {
            (c.action == fault.action || c.action.contains(fault.action))
                && if fault.lost {
                    c.lost
                } else {
                    c.status == fault.status
                }
        })
        .count();
    assert_eq!(hits, fault.times, "every injected fault was met");
    assert_converged(&local, &service, R2).await;
}

macro_rules! fault_tests {
    ($($name:ident: $fault:expr;)*) => {$(
        #[tokio::test]
        async fn $name() {
            run_scenario($fault).await;
        }
    )*};
}

use Function::{Cleanup as C, Provision as P, RegisterTarget as R, SwitchListener as S};

fault_tests! {
    run_instances_5xx_once_is_retried_by_the_sdk: fault("RunInstances", 0, 1, 500, "InternalError", P);
    // Two launches run side by side and share the faults: eight exhaust both.
    run_instances_5xx_fails_the_job: fault("RunInstances", 0, 8, 500, "InternalError", P);
    run_instances_throttled: fault("RunInstances", 0, 2, 400, "RequestLimitExceeded", P);
    second_launch_fails_after_the_first_succeeded: fault("RunInstances", 1, 4, 500, "InternalError", P);
    describe_instances_unavailable: fault("DescribeInstances", 0, 2, 503, "Unavailable", P);
    dns_change_fails_in_provision: fault("rrset", 0, 4, 500, "InternalError", P);
    describe_target_groups_throttled: fault("DescribeTargetGroups", 0, 2, 400, "Throttling", R);
    lock_claim_fails: fault("AddTags", 0, 4, 500, "InternalFailure", R);
    register_targets_fails_after_the_claim: fault("RegisterTargets", 0, 4, 500, "InternalFailure", R);
    target_health_unavailable: fault("DescribeTargetHealth", 0, 2, 503, "ServiceUnavailable", R);
    switch_modify_rule_5xx_once: fault("ModifyRule", 0, 1, 500, "InternalFailure", S);
    switch_modify_rule_fails: fault("ModifyRule", 0, 4, 500, "InternalFailure", S);
    pre_product_repoint_fails_after_the_switch: fault("ModifyRule", 1, 4, 500, "InternalFailure", S);
    previous_tag_fails_after_the_switch: fault("AddTags", 0, 4, 500, "InternalFailure", S);
    // The four instances (two promoted, two retired) are retagged side by side: sixteen faults
    // fail every attempt of each.
    retag_fails_after_the_switch: fault("CreateTags", 0, 16, 500, "InternalError", S);
    lock_release_fails_after_the_switch: fault("RemoveTags", 0, 4, 500, "InternalFailure", S);
    // The two addresses move side by side: eight faults exhaust both.
    eip_move_fails_after_the_switch: fault("AssociateAddress", 0, 8, 500, "InternalError", S);
    dns_change_fails_after_the_switch: fault("rrset", 0, 4, 500, "InternalError", S);
    describe_rules_throttled_in_switch: fault("DescribeRules", 0, 2, 400, "Throttling", S);
    notification_fails_but_the_switch_stands: fault("Publish", 0, 4, 500, "InternalError", S);
    deregistration_fails_in_cleanup: fault("DeregisterTargets", 0, 4, 500, "InternalFailure", C);
    termination_fails_after_deregistration: fault("TerminateInstances", 0, 4, 500, "InternalError", C);
    dns_delete_fails_in_cleanup: fault("rrset", 0, 4, 500, "InternalError", C);
}

// Calls AWS applied whose answers were lost: the SDK retries each, and the retry lands on a
// world that already changed. Every one converges with nothing duplicated, lost or moved twice.
fault_tests! {
    launch_applied_answer_lost: lost("RunInstances", 0, P, true);
    // Without EC2's ClientToken deduplication (moto's), the retry launches a second instance of
    // the index: provision finds both by their tags and terminates the younger.
    launch_applied_answer_lost_token_ignored: lost("RunInstances", 0, P, false);
    records_applied_answer_lost: lost("rrset", 0, P, true);
    acknowledgement_applied_answer_lost: lost("PutJobSuccessResult", 0, P, true);
    lock_claim_applied_answer_lost: lost("AddTags", 0, R, true);
    registration_applied_answer_lost: lost("RegisterTargets", 0, R, true);
    product_move_applied_answer_lost: lost("ModifyRule", 0, S, true);
    pre_product_move_applied_answer_lost: lost("ModifyRule", 1, S, true);
    retag_applied_answer_lost: lost("CreateTags", 0, S, true);
    address_move_applied_answer_lost: lost("AssociateAddress", 0, S, true);
    deregistration_applied_answer_lost: lost("DeregisterTargets", 0, C, true);
    termination_applied_answer_lost: lost("TerminateInstances", 0, C, true);
}

#[tokio::test]
async fn an_acknowledgement_that_cannot_be_sent_fails_the_invocation_and_a_retry_converges() {
    let (local, service, app) = setup().await;
    for function in STAGES {
        stage_with_retry(&local, &app, function, R1).await;
    }
    local
        .endpoint
        .inject_fault("PutJobSuccessResult", 4, 500, "InternalError");
    let run = local
        .run_job(
            &app,
            Function::Provision,
            &json!({"service": SERVICE, "release": R2}),
        )
        .await;
    let error = run
        .error
        .expect("the invocation fails, so Lambda reports it");
    assert!(error.contains("PutJobSuccessResult"), "{error}");
    for function in STAGES {
        stage_with_retry(&local, &app, function, R2).await;
    }
    assert_converged(&local, &service, R2).await;
}

#[tokio::test]
async fn an_already_acknowledged_job_is_not_an_error() {
    let (local, _service, app) = setup().await;
    local
        .endpoint
        .inject_fault("PutJobSuccessResult", 1, 400, "InvalidJobStateException");
    let event = cutover_tests::job_event(
        Function::Provision,
        "job-dup",
        &json!({"service": SERVICE, "release": R1}),
        None,
    );
    let response = app
        .handle(Function::Provision, event)
        .await
        .expect("handled");
    assert_eq!(response["acknowledged"], json!(false));
}

#[tokio::test]
async fn a_failed_execution_is_cleaned_up_by_its_event_and_leaves_product_alone() {
    let (local, service, app) = setup().await;
    for function in STAGES {
        stage_with_retry(&local, &app, function, R1).await;
    }
    // R2 gets as far as QA, then health never comes: the stage fails and so does the execution.
    stage_with_retry(&local, &app, Function::Provision, R2).await;
    local
        .endpoint
        .inject_fault("RegisterTargets", 4, 500, "InternalFailure");
    let run = local
        .run_job(
            &app,
            Function::RegisterTarget,
            &json!({"service": SERVICE, "release": R2}),
        )
        .await;
    assert!(!run.succeeded());
    let alb = local.alb().await;
    assert_eq!(
        alb.product.lock.as_ref().map(|l| l.release.as_str()),
        Some(R2),
        "R2 had claimed the service"
    );

    // The team gives the release up (Stop, not Retry): its event cleans up at once. (A FAILED
    // event alone keeps the fleet for a retry: `retry::*`.)
    let mut event = cutover_tests::sample_event("cleanup-pipeline-failed.json");
    event["detail"]["execution-id"] = json!(R2);
    event["detail"]["state"] = json!("STOPPED");
    for _ in 0..3 {
        // Delivered at least once: duplicates change nothing more.
        app.handle(Function::Cleanup, event.clone())
            .await
            .expect("handled");
    }
    assert_converged(&local, &service, R1).await;

    // A late SUPERSEDED event for the release that serves product touches nothing.
    let mark = local.endpoint.mark();
    event["detail"]["execution-id"] = json!(R1);
    event["detail"]["state"] = json!("SUPERSEDED");
    app.handle(Function::Cleanup, event).await.expect("handled");
    assert!(
        local.endpoint.mutations(mark).is_empty(),
        "{:?}",
        local.endpoint.mutations(mark)
    );
}

#[tokio::test]
async fn a_call_that_hangs_past_the_attempt_timeout_is_retried_within_the_job() {
    let (local, _service, app) = setup().await;
    // Longer than the 10 s attempt timeout, shorter than the 30 s one for the whole call.
    local.endpoint.inject_hang(
        "DescribeTargetGroups",
        1,
        std::time::Duration::from_secs(11),
    );
    let run = local
        .run_job(
            &app,
            Function::Provision,
            &json!({"service": SERVICE, "release": R1}),
        )
        .await;
    assert!(run.succeeded(), "{:?}", run.last());
    assert_eq!(
        run.acks.len(),
        2,
        "one launch and wait, one finish: no failed job"
    );
    let attempts: Vec<u16> = local
        .endpoint
        .calls_of(0, "DescribeTargetGroups")
        .iter()
        .map(|c| c.status)
        .collect();
    assert_eq!(&attempts[..2], [0, 200], "the hung attempt, then its retry");
}

/// A second release's provision associates nothing (the addresses stay on the serving fleet
/// until the switch), so this fault is met by the first release's provision.
#[tokio::test]
async fn an_address_that_cannot_be_associated_fails_provision_and_a_rerun_converges() {
    let (local, service, app) = setup().await;
    // The two addresses are associated side by side: eight faults exhaust both.
    local
        .endpoint
        .inject_fault("AssociateAddress", 8, 500, "InternalError");
    let runs = stage_with_retry(&local, &app, Function::Provision, R1).await;
    assert_eq!(runs, 2, "the job failed once, the re-run associated");
    for function in [
        Function::RegisterTarget,
        Function::SwitchListener,
        Function::Cleanup,
    ] {
        assert_eq!(stage_with_retry(&local, &app, function, R1).await, 1);
    }
    assert_converged(&local, &service, R1).await;
    let serving = Aws::new(&local.config)
        .instances(InstanceQuery::Service(SERVICE))
        .await
        .unwrap();
    let addresses = Aws::new(&local.config)
        .addresses(&local.base.elastic_ips)
        .await
        .unwrap();
    assert!(addresses.iter().all(|a| serving
        .iter()
        .any(|i| a.instance_id.as_ref() == Some(&i.id))));
}
