//! The planner of provision.

use super::*;

#[test]
fn provision_launches_count_instances_across_subnets_then_waits() {
    let plan = provision_plan(&settings(3), &[], &[free_address()], None).expect("a plan");
    assert_eq!(plan.next, Next::wait(Phase::Running));
    let launches: Vec<(&str, &BTreeMap<String, String>, &str)> = plan
        .steps
        .iter()
        .map(|s| match s {
            Step::Launch {
                spec,
                tags,
                client_token,
                ..
            } => (spec.subnet.as_str(), tags, client_token.as_str()),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        launches.iter().map(|l| l.0).collect::<Vec<_>>(),
        ["subnet-a", "subnet-b", "subnet-a"]
    );
    let tags = launches[1].1;
    assert_eq!(tags[TAG_SERVICE], "api");
    assert_eq!(tags[TAG_STAGE], "pre-product");
    assert_eq!(tags[TAG_RELEASE], "r2");
    assert_eq!(tags[TAG_INDEX], "2");
    assert_eq!(
        tags[TAG_NAME],
        format!("api-pre-product-{}-2", release("r2").short())
    );
    assert_eq!(launches[1].2, client_token(&service(), &release("r2"), 2));
}

#[test]
fn client_tokens_are_stable_short_and_distinct() {
    let long = release(&"a".repeat(128));
    let token = client_token(&service(), &long, 50);
    assert!(token.len() <= 64, "{token}");
    assert_eq!(token, client_token(&service(), &long, 50));
    assert_ne!(token, client_token(&service(), &long, 49));
    assert_ne!(
        client_token(&service(), &release("r1"), 1),
        client_token(&service(), &release("r2"), 1)
    );
}

#[test]
fn provision_launches_only_what_is_missing() {
    let existing = [instance(
        "i-1",
        "r2",
        1,
        Stage::PreProduct,
        InstanceState::Pending,
    )];
    let plan = provision_plan(&settings(2), &existing, &[], None).expect("a plan");
    assert_eq!(plan.steps.len(), 1);
    assert!(matches!(&plan.steps[0], Step::Launch { tags, .. } if tags[TAG_INDEX] == "2"));
}

#[test]
fn provision_waits_for_pending_then_times_out() {
    let pending = [instance(
        "i-1",
        "r2",
        1,
        Stage::PreProduct,
        InstanceState::Pending,
    )];
    let fresh = Progress::new(Phase::Running, NOW - 10);
    let plan = provision_plan(&settings(1), &pending, &[], Some(&fresh)).expect("a plan");
    assert_eq!(
        (plan.steps.len(), plan.next),
        (0, Next::wait(Phase::Running))
    );
    let stale = Progress::new(Phase::Running, NOW - RUNNING_TIMEOUT_S - 1);
    let plan = provision_plan(&settings(1), &pending, &[], Some(&stale));
    assert!(matches!(&plan, Err(Refusal(m)) if m.contains("not running after")));
}

#[test]
fn provision_finishes_with_addresses_records_and_outputs() {
    let fleet = [
        running("i-1", "r2", 1, Stage::PreProduct),
        running("i-2", "r2", 2, Stage::PreProduct),
    ];
    let plan = provision_plan(&settings(2), &fleet, &[free_address()], None).expect("a plan");
    assert!(matches!(plan.next, Next::Done(_)));
    assert_eq!(
        plan.steps[0],
        Step::AssociateAddress {
            allocation_id: "eipalloc-1".into(),
            instance_id: "i-1".into()
        }
    );
    let Step::ChangeRecords { changes, .. } = &plan.steps[1] else {
        panic!("{:?}", plan.steps)
    };
    let names: Vec<&str> = changes.iter().map(|c| c.name.as_str()).collect();
    let r2 = release("r2").short();
    assert_eq!(
        names,
        [
            format!("1.{r2}.api.internal.example."),
            format!("2.{r2}.api.internal.example."),
            "pre-product.api.internal.example.".to_owned()
        ]
    );
    assert_eq!(changes[2].values.len(), 2);
    assert_eq!(plan.outputs["instance_ids"], "i-1,i-2");
    assert_eq!(
        plan.outputs["qa_dns_name"],
        "pre-product.api.internal.example"
    );
}

#[test]
fn provision_never_takes_an_address_from_a_serving_instance() {
    let fleet = [
        running("i-1", "r2", 1, Stage::PreProduct),
        running("i-0", "r1", 1, Stage::Product),
    ];
    let held = Address {
        instance_id: Some("i-0".into()),
        association_id: Some("eipassoc-1".into()),
        ..free_address()
    };
    let plan = provision_plan(&settings(1), &fleet, &[held], None).expect("a plan");
    assert!(!plan
        .steps
        .iter()
        .any(|s| matches!(s, Step::AssociateAddress { .. })));
    assert!(plan.notes.iter().any(|n| n.contains("stays on i-0")));
}

#[test]
fn provision_replayed_after_it_finished_plans_nothing() {
    let fleet = [running("i-1", "r2", 1, Stage::PreProduct)];
    let dns = owned_dns(&fleet);
    let associated = Address {
        instance_id: Some("i-1".into()),
        association_id: Some("a".into()),
        ..free_address()
    };
    let plan = provision(&ProvisionInput {
        groups: &[],
        templates: &[],
        ami: None,
        service: &service(),
        release: &release("r2"),
        settings: &settings(1),
        instances: &fleet,
        addresses: &[associated],
        dns: Some(&dns),
        lock: None,
        lock_holder: None,
        progress: None,
        now: NOW,
    })
    .expect("a plan");
    assert!(matches!(plan.next, Next::Done(_)));
}

#[test]
fn provision_terminates_duplicates_of_an_index_keeping_the_oldest() {
    let mut newer = running("i-new", "r2", 1, Stage::PreProduct);
    newer.launched_at = Some(NOW);
    let fleet = [running("i-old", "r2", 1, Stage::PreProduct), newer];
    let plan = provision_plan(&settings(1), &fleet, &[], None).expect("a plan");
    // Only the newer duplicate goes: no launch, no second terminate, the oldest untouched.
    let terminated: Vec<&Vec<String>> = plan
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Terminate { instance_ids } => Some(instance_ids),
            _ => None,
        })
        .collect();
    assert_eq!(terminated, [&vec!["i-new".to_owned()]], "{:?}", plan.steps);
    assert!(
        !plan.steps.iter().any(|s| matches!(s, Step::Launch { .. })),
        "{:?}",
        plan.steps
    );
}

#[test]
fn provision_replayed_after_the_switch_does_nothing() {
    let fleet = [running("i-1", "r2", 1, Stage::Product)];
    let plan = provision_plan(&settings(1), &fleet, &[], None).expect("a plan");
    assert!(matches!(plan.next, Next::Done(m) if m.contains("already past provisioning")));
    assert!(plan.steps.is_empty());
}

#[test]
fn provision_refuses_while_another_release_holds_the_service() {
    let lock = Lock {
        release: "r9".into(),
        since: NOW - 1,
    };
    let dns = empty_dns();
    let plan = provision(&ProvisionInput {
        groups: &[],
        templates: &[],
        ami: None,
        service: &service(),
        release: &release("r2"),
        settings: &settings(1),
        instances: &[],
        addresses: &[],
        dns: Some(&dns),
        lock: Some(&lock),
        lock_holder: None,
        progress: None,
        now: NOW,
    });
    assert!(matches!(&plan, Err(Refusal(m)) if m.contains("r9")));
}

#[test]
fn an_instance_that_dies_while_provision_waits_fails_the_job_with_its_reason() {
    let mut died = instance("i-1", "r2", 1, Stage::PreProduct, InstanceState::Terminated);
    died.state_reason = Some("Server.InsufficientInstanceCapacity: no capacity".into());
    let waiting = Progress::new(Phase::Running, NOW - 30);
    let plan = provision_plan(&settings(1), &[died.clone()], &[], Some(&waiting));
    assert!(
        matches!(&plan, Err(Refusal(m)) if m.contains("i-1") && m.contains("terminated") && m.contains("InsufficientInstanceCapacity")),
        "{plan:?}"
    );
}

#[test]
fn a_retried_stage_launches_a_replacement_for_a_dead_instance() {
    // CodePipeline's Retry keeps the execution id: a fresh invocation (no token) sees the dead
    // instance of the first attempt and launches the index again, naming the dead instance: the
    // executor moves its ClientToken to a new generation when AWS answers with it, whatever
    // state the answer reports.
    let died = instance("i-1", "r2", 1, Stage::PreProduct, InstanceState::Terminated);
    let plan = provision_plan(&settings(1), &[died], &[], None).expect("a plan");
    assert!(
        matches!(&plan.steps[..], [Step::Launch { tags, dead, .. }] if tags[TAG_INDEX] == "1" && dead == &["i-1"]),
        "{:?}",
        plan.steps
    );
    assert_eq!(plan.next, Next::wait(Phase::Running));
}

#[test]
fn a_settings_address_of_another_system_is_refused_before_anything_is_launched() {
    // A mistyped EIP in settings names an address another system holds, untagged or another
    // service's: provision refuses, naming it, and the switch never moves it.
    for service in [None, Some("billing".to_owned())] {
        let foreign = Address {
            instance_id: Some("i-billing".into()),
            association_id: Some("eipassoc-b".into()),
            service,
            ..free_address()
        };
        let refusal = provision_plan(&settings(1), &[], std::slice::from_ref(&foreign), None)
            .expect_err("refused");
        assert!(
            refusal.0.contains("eipalloc-1") && refusal.0.contains("cutover:service=api"),
            "{refusal:?}"
        );
        let mut notes = Vec::new();
        let fleet = [running("i-1", "r2", 1, Stage::Product)];
        let fleet: Vec<&Instance> = fleet.iter().collect();
        let steps = address_steps(
            &super::service(),
            &["eipalloc-1".to_owned()],
            &[foreign],
            &fleet,
            true,
            &mut notes,
        );
        assert!(
            steps.is_empty() && notes[0].contains("not tagged"),
            "{notes:?}"
        );
    }
}
