use super::*;
use crate::settings::ServiceSettings;

const NOW: u64 = 1_800_000_000;
const BLUE: &str = "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/api-blue/1";
const GREEN: &str = "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/api-green/2";
const PRODUCT_RULE: &str =
    "arn:aws:elasticloadbalancing:us-east-1:1:listener-rule/app/alb/1/2/product";
const QA_RULE: &str = "arn:aws:elasticloadbalancing:us-east-1:1:listener-rule/app/alb/1/2/qa";

fn service() -> ServiceName {
    ServiceName::parse("api").unwrap()
}

fn release(id: &str) -> ReleaseId {
    ReleaseId::parse(id).unwrap()
}

fn settings(count: u32) -> ServiceSettings {
    ServiceSettings::parse(
        "API",
        &format!(
            r#"{{"AMI":"ami-1","INSTANCE_TYPE":"t3.small","SUBNET":["subnet-a","subnet-b"],"SG":"sg-1",
                "EIP":["eipalloc-1"],"COUNT":{count},"DNS_ZONE":"Z1","BAKE_S":600,"HEALTH_TIMEOUT_S":300}}"#
        ),
    )
    .unwrap()
}

fn instance(id: &str, release: &str, index: u32, stage: Stage, state: InstanceState) -> Instance {
    Instance {
        id: id.into(),
        state,
        service: "api".into(),
        stage: Some(stage),
        release: Some(release.into()),
        index: Some(index),
        name: Some(format!("api-{stage}-{release}-{index}")),
        private_ip: Some(format!("10.0.0.{index}{}", id.len())),
        retired_at: None,
        launched_at: Some(NOW - 100),
        state_reason: None,
    }
}

fn running(id: &str, release: &str, index: u32, stage: Stage) -> Instance {
    instance(id, release, index, stage, InstanceState::Running)
}

fn target(id: &str, health: Health) -> Target {
    Target {
        id: id.into(),
        health,
        reason: None,
    }
}

fn group(slot: Slot, targets: Vec<Target>) -> TargetGroup {
    let arn = if slot == Slot::Blue { BLUE } else { GREEN };
    TargetGroup {
        arn: arn.into(),
        name: format!("api-{slot}"),
        slot,
        targets,
    }
}

fn route(arn: &str, role: RouteRole, to: &str) -> Route {
    Route {
        arn: arn.into(),
        role,
        is_listener_default: false,
        forward: Forward::to(to),
        forward_order: None,
        kept_actions: Vec::new(),
        previous: None,
        lock: None,
        conditions: vec!["host-header=qa.api.example.com".into()],
    }
}

/// Product on blue, pre-product on green.
fn alb(blue: Vec<Target>, green: Vec<Target>) -> Alb {
    Alb {
        blue: group(Slot::Blue, blue),
        green: group(Slot::Green, green),
        product: route(PRODUCT_RULE, RouteRole::Product, BLUE),
        pre_product: route(QA_RULE, RouteRole::PreProduct, GREEN),
    }
}

fn empty_dns() -> Dns {
    Dns {
        zone_id: "Z1".into(),
        zone_name: "internal.example.".into(),
        records: BTreeMap::new(),
        foreign: BTreeSet::new(),
    }
}

/// The service's records as cutover would have written them for these instances.
fn owned_dns(instances: &[Instance]) -> Dns {
    let records = desired_records(
        &empty_dns(),
        &service(),
        instances,
        &BTreeMap::new(),
        &BTreeSet::new(),
    )
    .into_iter()
    .map(|(name, values)| {
        let set = RecordSet {
            ttl: RECORD_TTL_S,
            values,
            marker_ttl: RECORD_TTL_S,
        };
        (name, set)
    })
    .collect();
    Dns {
        records,
        ..empty_dns()
    }
}

fn free_address() -> Address {
    Address {
        allocation_id: "eipalloc-1".into(),
        association_id: None,
        instance_id: None,
        public_ip: None,
    }
}

fn provision_plan(
    settings: &ServiceSettings,
    instances: &[Instance],
    addresses: &[Address],
    progress: Option<&Progress>,
) -> Planned {
    let dns = empty_dns();
    provision(&ProvisionInput {
        service: &service(),
        release: &release("r2"),
        settings,
        instances,
        addresses,
        dns: Some(&dns),
        lock: None,
        progress,
        now: NOW,
    })
}

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
    assert_eq!(tags[TAG_NAME], "api-pre-product-r2-2");
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
    assert_eq!(
        names,
        [
            "1.r2.api.internal.example.",
            "2.r2.api.internal.example.",
            "pre-product.api.internal.example."
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
        service: &service(),
        release: &release("r2"),
        settings: &settings(1),
        instances: &fleet,
        addresses: &[associated],
        dns: Some(&dns),
        lock: None,
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

/// Register as the release holding the lock (the usual case after the first invocation).
fn register_plan(alb: &Alb, instances: &[Instance], progress: Option<&Progress>) -> Planned {
    let mut alb = alb.clone();
    alb.product.lock = Some(Lock {
        release: "r2".into(),
        since: NOW - 5,
    });
    register_unlocked(&alb, instances, progress)
}

fn register_unlocked(alb: &Alb, instances: &[Instance], progress: Option<&Progress>) -> Planned {
    register(&RegisterInput {
        service: &service(),
        release: &release("r2"),
        settings: &settings(1),
        alb,
        instances,
        progress,
        now: NOW,
    })
}

#[test]
fn register_needs_running_instances() {
    let plan = register_plan(&alb(vec![], vec![]), &[], None);
    assert!(matches!(&plan, Err(Refusal(m)) if m.contains("run provision first")));
}

#[test]
fn register_drains_stale_targets_and_adds_the_release_to_the_idle_slot() {
    let fleet = [running("i-new", "r2", 1, Stage::PreProduct)];
    let plan = register_plan(
        &alb(vec![], vec![target("i-stale", Health::Healthy)]),
        &fleet,
        None,
    )
    .expect("a plan");
    assert_eq!(
        plan.steps,
        [
            Step::DeregisterTargets {
                target_group: GREEN.into(),
                instance_ids: vec!["i-stale".into()]
            },
            Step::RegisterTargets {
                target_group: GREEN.into(),
                instance_ids: vec!["i-new".into()]
            },
        ]
    );
    assert_eq!(plan.next, Next::wait(Phase::Healthy));
}

#[test]
fn register_waits_for_health_then_fails_without_touching_product() {
    let fleet = [running("i-new", "r2", 1, Stage::PreProduct)];
    let world = alb(vec![], vec![target("i-new", Health::Initial)]);
    let plan = register_plan(
        &world,
        &fleet,
        Some(&Progress::new(Phase::Healthy, NOW - 100)),
    )
    .expect("a plan");
    assert_eq!(
        (plan.steps.len(), plan.next),
        (0, Next::wait(Phase::Healthy))
    );
    let plan = register_plan(
        &world,
        &fleet,
        Some(&Progress::new(Phase::Healthy, NOW - 300)),
    );
    assert!(
        matches!(&plan, Err(Refusal(m)) if m.contains("not healthy after 300s") && m.contains("i-new"))
    );
}

#[test]
fn register_points_pre_product_at_the_healthy_slot() {
    let fleet = [running("i-new", "r2", 1, Stage::PreProduct)];
    let mut world = alb(vec![], vec![target("i-new", Health::Healthy)]);
    world.pre_product.forward = Forward::to(BLUE);
    let plan = register_plan(&world, &fleet, None).expect("a plan");
    assert!(
        matches!(&plan.steps[..], [Step::SetForward { role: RouteRole::PreProduct, to, .. }] if to == &Forward::to(GREEN))
    );
    assert!(matches!(&plan.next, Next::Done(m) if m.contains("qa.api.example.com")));
}

#[test]
fn register_refuses_while_product_is_split() {
    let mut world = alb(vec![], vec![]);
    world.product.forward = Forward {
        targets: vec![
            WeightedTarget {
                arn: BLUE.into(),
                weight: Some(50),
            },
            WeightedTarget {
                arn: GREEN.into(),
                weight: Some(50),
            },
        ],
        sticky_s: None,
    };
    let plan = register_plan(&world, &[running("i-1", "r2", 1, Stage::PreProduct)], None);
    assert!(matches!(&plan, Err(Refusal(m)) if m.contains("gradual shift")));
}

fn switch_plan(action: Action, alb: &Alb, instances: &[Instance]) -> Planned {
    switch(&SwitchInput {
        service: &service(),
        release: &release("r2"),
        action,
        settings: &settings(1),
        alb,
        instances,
        addresses: &[],
        dns: None,
        strategy: Strategy::AllAtOnce,
        progress: None,
        now: NOW,
    })
}

fn released_world() -> (Alb, Vec<Instance>) {
    let world = alb(
        vec![target("i-old", Health::Healthy)],
        vec![target("i-new", Health::Healthy)],
    );
    let instances = vec![
        running("i-old", "r1", 1, Stage::Product),
        running("i-new", "r2", 1, Stage::PreProduct),
    ];
    (world, instances)
}

#[test]
fn switch_moves_product_in_one_step_and_converges_the_rest() {
    let (world, instances) = released_world();
    let plan = switch_plan(Action::Release, &world, &instances).expect("a plan");
    let forwards: Vec<&Step> = plan
        .steps
        .iter()
        .filter(|s| {
            matches!(
                s,
                Step::SetForward {
                    role: RouteRole::Product,
                    ..
                }
            )
        })
        .collect();
    assert_eq!(forwards.len(), 1);
    assert!(
        matches!(plan.steps[0], Step::SetForward { role: RouteRole::Product, ref to, .. } if to == &Forward::to(GREEN))
    );
    assert!(plan.steps.contains(&Step::SetForward {
        route: QA_RULE.into(),
        role: RouteRole::PreProduct,
        is_listener_default: false,
        from: Forward::to(GREEN),
        to: Forward::to(BLUE),
        forward_order: None,
        keep: Vec::new(),
    }));
    assert!(plan
        .steps
        .iter()
        .any(|s| matches!(s, Step::TagRoute { tags, .. } if tags[TAG_PREVIOUS] == BLUE)));
    assert!(plan.steps.iter().any(
        |s| matches!(s, Step::TagInstances { instance_ids, tags } if instance_ids == &["i-old"] && tags[TAG_STAGE] == "retired" && tags[TAG_RETIRED_AT] == NOW.to_string() && tags[TAG_NAME] == "api-retired-r1-1")
    ));
    assert!(plan.steps.iter().any(
        |s| matches!(s, Step::TagInstances { instance_ids, tags } if instance_ids == &["i-new"] && tags[TAG_STAGE] == "product")
    ));
}

#[test]
fn switch_refuses_an_unhealthy_or_empty_slot() {
    let (mut world, instances) = released_world();
    world
        .green
        .targets
        .push(target("i-sick", Health::Unhealthy));
    let plan = switch_plan(Action::Release, &world, &instances);
    assert!(
        matches!(&plan, Err(Refusal(m)) if m.contains("not every target is healthy") && m.contains("i-sick"))
    );

    let (mut world, instances) = released_world();
    world.blue.targets.clear();
    world.product.forward = Forward::to(GREEN);
    let plan = switch_plan(Action::Rollback, &world, &instances);
    assert!(matches!(&plan, Err(Refusal(m)) if m.contains("no registered targets")));
}

#[test]
fn switch_replayed_after_a_crash_finishes_without_moving_traffic_again() {
    let (mut world, instances) = released_world();
    // The product move happened; nothing after it did.
    world.product.forward = Forward::to(GREEN);
    let plan = switch_plan(Action::Release, &world, &instances).expect("a plan");
    assert!(!plan.steps.iter().any(|s| matches!(
        s,
        Step::SetForward {
            role: RouteRole::Product,
            ..
        }
    )));
    assert!(plan.steps.iter().any(|s| matches!(
        s,
        Step::SetForward {
            role: RouteRole::PreProduct,
            ..
        }
    )));
    assert!(matches!(&plan.next, Next::Done(m) if m.contains("already")));
}

#[test]
fn rollback_is_the_mirror_image_and_idempotent() {
    let (mut world, mut instances) = released_world();
    world.product.forward = Forward::to(GREEN);
    world.pre_product.forward = Forward::to(BLUE);
    instances[0].stage = Some(Stage::Retired);
    instances[0].retired_at = Some(NOW - 10);
    instances[1].stage = Some(Stage::Product);
    let plan = switch_plan(Action::Rollback, &world, &instances).expect("a plan");
    assert!(
        matches!(&plan.steps[0], Step::SetForward { role: RouteRole::Product, to, .. } if to == &Forward::to(BLUE))
    );
    assert!(plan.steps.iter().any(
        |s| matches!(s, Step::UntagInstances { instance_ids, .. } if instance_ids == &["i-old"])
    ));

    // After the rollback: product on blue, the bad release retired, pre-product on it.
    world.product.forward = Forward::to(BLUE);
    world.pre_product.forward = Forward::to(GREEN);
    world.product.previous = Some(GREEN.into());
    instances[0].stage = Some(Stage::Product);
    instances[0].retired_at = None;
    instances[1].stage = Some(Stage::Retired);
    let again = switch_plan(Action::Rollback, &world, &instances).expect("a plan");
    assert!(again.steps.is_empty(), "{:?}", again.steps);
}

fn cleanup_plan(
    world: &Alb,
    instances: &[Instance],
    scope: CleanupScope,
    addresses: &[Address],
) -> Planned {
    let dns = owned_dns(instances);
    cleanup(&CleanupInput {
        service: &service(),
        scope,
        settings: &settings(1),
        alb: world,
        instances,
        addresses,
        dns: Some(&dns),
        now: NOW,
    })
}

#[test]
fn cleanup_keeps_retired_instances_until_their_bake_time_is_over() {
    let mut old = running("i-old", "r1", 1, Stage::Retired);
    old.retired_at = Some(NOW - 599);
    let world = alb(vec![], vec![target("i-old", Health::Healthy)]);
    let plan = cleanup_plan(&world, &[old], CleanupScope::Expired, &[]).expect("a plan");
    assert!(plan.steps.is_empty());
    assert!(plan.notes.iter().any(|n| n.contains("i-old until")));
}

#[test]
fn cleanup_drains_first_then_releases_and_terminates() {
    let mut old = running("i-old", "r1", 1, Stage::Retired);
    old.retired_at = Some(NOW - 600);
    let world = alb(
        vec![target("i-live", Health::Healthy)],
        vec![target("i-old", Health::Healthy)],
    );
    let instances = [old.clone(), running("i-live", "r2", 1, Stage::Product)];
    let plan = cleanup_plan(&world, &instances, CleanupScope::Expired, &[]).expect("a plan");
    assert_eq!(
        plan.steps,
        [Step::DeregisterTargets {
            target_group: GREEN.into(),
            instance_ids: vec!["i-old".into()]
        }]
    );
    assert_eq!(plan.next, Next::Again);

    let draining = alb(
        vec![target("i-live", Health::Healthy)],
        vec![target("i-old", Health::Draining)],
    );
    let plan = cleanup_plan(&draining, &instances, CleanupScope::Expired, &[]).expect("a plan");
    assert_eq!(
        (plan.steps.len(), plan.next),
        (0, Next::wait(Phase::Drained))
    );

    let drained = alb(vec![target("i-live", Health::Healthy)], vec![]);
    let held = Address {
        instance_id: Some("i-old".into()),
        association_id: Some("eipassoc-9".into()),
        ..free_address()
    };
    let plan = cleanup_plan(&drained, &instances, CleanupScope::Expired, &[held]).expect("a plan");
    assert!(
        matches!(&plan.steps[0], Step::DisassociateAddress { association_id, .. } if association_id == "eipassoc-9")
    );
    assert!(
        matches!(&plan.steps[1], Step::ChangeRecords { changes, .. } if changes.iter().all(|c| c.action == RecordAction::Delete && c.name.starts_with("1.r1.")))
    );
    assert_eq!(
        plan.steps[2],
        Step::Terminate {
            instance_ids: vec!["i-old".into()]
        }
    );
}

#[test]
fn cleanup_never_touches_the_product_slot() {
    let mut wrongly_tagged = running("i-live", "r2", 1, Stage::Retired);
    wrongly_tagged.retired_at = Some(0);
    let world = alb(vec![target("i-live", Health::Healthy)], vec![]);
    let plan = cleanup_plan(&world, &[wrongly_tagged], CleanupScope::Expired, &[]).expect("a plan");
    assert!(plan.steps.is_empty());
    assert!(plan.notes.iter().any(|n| n.contains("kept i-live")));
}

#[test]
fn cleanup_of_a_failed_release_takes_only_its_pre_product_instances() {
    let instances = [
        running("i-failed", "r3", 1, Stage::PreProduct),
        running("i-other", "r4", 1, Stage::PreProduct),
        running("i-live", "r2", 1, Stage::Product),
    ];
    let world = alb(vec![target("i-live", Health::Healthy)], vec![]);
    let plan = cleanup_plan(
        &world,
        &instances,
        CleanupScope::FailedRelease(release("r3")),
        &[],
    )
    .expect("a plan");
    assert_eq!(
        plan.steps.last(),
        Some(&Step::Terminate {
            instance_ids: vec!["i-failed".into()]
        })
    );
}

#[test]
fn desired_records_follow_stages() {
    let instances = [
        running("i-1", "r1", 1, Stage::Product),
        running("i-2", "r2", 1, Stage::PreProduct),
        running("i-3", "r0", 1, Stage::Retired),
        instance("i-4", "r2", 2, Stage::PreProduct, InstanceState::Pending),
    ];
    let records = desired_records(
        &empty_dns(),
        &service(),
        &instances,
        &BTreeMap::new(),
        &BTreeSet::new(),
    );
    let names: Vec<&str> = records.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "1.r0.api.internal.example.",
            "1.r1.api.internal.example.",
            "1.r2.api.internal.example.",
            "pre-product.api.internal.example.",
            "product.api.internal.example.",
        ]
    );
}

#[test]
fn register_claims_a_free_lock_then_verifies_it_next_time() {
    let fleet = [running("i-new", "r2", 1, Stage::PreProduct)];
    let plan = register_unlocked(&alb(vec![], vec![]), &fleet, None).expect("a plan");
    assert_eq!(
        plan.steps,
        [Step::TagRoute {
            route: PRODUCT_RULE.into(),
            tags: BTreeMap::from([(TAG_LOCK.to_owned(), format!("r2@{NOW}"))]),
        }]
    );
    assert_eq!(plan.next, Next::wait(Phase::Lock));
}

#[test]
fn a_lock_held_by_another_release_refuses_until_it_is_stale() {
    let fleet = [running("i-new", "r2", 1, Stage::PreProduct)];
    let mut world = alb(vec![], vec![]);
    world.product.lock = Some(Lock {
        release: "r9".into(),
        since: NOW - 60,
    });
    let plan = register_unlocked(&world, &fleet, None);
    assert!(
        matches!(&plan, Err(Refusal(m)) if m.contains("locked by release r9") && m.contains("60s"))
    );
    // The same lock stops provision of r2 too, before anything is launched.
    let refused = provision(&ProvisionInput {
        service: &service(),
        release: &release("r2"),
        settings: &settings(1),
        instances: &[],
        addresses: &[],
        dns: None,
        lock: world.product.lock.as_ref(),
        progress: None,
        now: NOW,
    });
    assert!(
        matches!(&refused, Err(Refusal(m)) if m.contains("locked by release r9")),
        "{refused:?}"
    );

    world.product.lock = Some(Lock {
        release: "r9".into(),
        since: NOW - LOCK_STALE_S,
    });
    let plan = register_unlocked(&world, &fleet, None).expect("a plan");
    assert!(
        matches!(&plan.steps[..], [Step::TagRoute { tags, .. }] if tags[TAG_LOCK].starts_with("r2@"))
    );
}

#[test]
fn provision_refuses_while_another_release_holds_the_service() {
    let lock = Lock {
        release: "r9".into(),
        since: NOW - 1,
    };
    let dns = empty_dns();
    let plan = provision(&ProvisionInput {
        service: &service(),
        release: &release("r2"),
        settings: &settings(1),
        instances: &[],
        addresses: &[],
        dns: Some(&dns),
        lock: Some(&lock),
        progress: None,
        now: NOW,
    });
    assert!(matches!(&plan, Err(Refusal(m)) if m.contains("r9")));
}

#[test]
fn the_switch_releases_the_lock_and_a_failed_release_cleanup_too() {
    let (mut world, instances) = released_world();
    world.product.lock = Some(Lock {
        release: "r2".into(),
        since: NOW - 5,
    });
    let plan = switch_plan(Action::Release, &world, &instances).expect("a plan");
    assert_eq!(
        plan.steps.last(),
        Some(&Step::UntagRoute {
            route: PRODUCT_RULE.into(),
            keys: vec![TAG_LOCK.to_owned()]
        })
    );
    let plan = cleanup_plan(
        &world,
        &instances,
        CleanupScope::FailedRelease(release("r2")),
        &[],
    )
    .expect("a plan");
    assert!(plan.steps.contains(&Step::UntagRoute {
        route: PRODUCT_RULE.into(),
        keys: vec![TAG_LOCK.to_owned()]
    }));
}

#[test]
fn rollback_refuses_a_slot_that_now_holds_a_release_in_qa() {
    let (mut world, mut instances) = released_world();
    world.product.forward = Forward::to(GREEN);
    world.pre_product.forward = Forward::to(BLUE);
    instances[1].stage = Some(Stage::Product);
    instances[0].stage = Some(Stage::PreProduct);
    let plan = switch_plan(Action::Rollback, &world, &instances);
    assert!(matches!(&plan, Err(Refusal(m)) if m.contains("pre-product instances in QA")));
}

#[test]
fn the_sweep_takes_abandoned_pre_product_instances_but_not_the_locked_release() {
    let mut abandoned = running("i-old", "r3", 1, Stage::PreProduct);
    abandoned.launched_at = Some(NOW - PRE_PRODUCT_MAX_AGE_S);
    let mut in_qa = running("i-qa", "r4", 1, Stage::PreProduct);
    in_qa.launched_at = Some(NOW - PRE_PRODUCT_MAX_AGE_S);
    let mut world = alb(vec![], vec![]);
    world.product.lock = Some(Lock {
        release: "r4".into(),
        since: NOW - 10,
    });
    let plan =
        cleanup_plan(&world, &[abandoned, in_qa], CleanupScope::Expired, &[]).expect("a plan");
    assert_eq!(
        plan.steps.last(),
        Some(&Step::Terminate {
            instance_ids: vec!["i-old".into()]
        })
    );
}

#[test]
fn strategies_parse_into_weight_schedules() {
    assert_eq!(Strategy::parse("all-at-once").unwrap().weights(), [100]);
    let canary = Strategy::parse("canary:10:5").unwrap();
    assert_eq!(
        (canary.weights(), canary.interval_s()),
        (vec![10, 100], 300)
    );
    assert_eq!(
        Strategy::parse("linear:25:2").unwrap().weights(),
        [25, 50, 75, 100]
    );
    assert_eq!(
        Strategy::parse("linear:30:1").unwrap().weights(),
        [30, 60, 90, 100]
    );
    for bad in [
        "canary",
        "canary:0:5",
        "canary:100:5",
        "linear:10:x",
        "blue-green:10:1",
        "linear:10:1:1",
    ] {
        assert!(Strategy::parse(bad).unwrap_err().contains(bad), "{bad}");
    }
}

fn shift_plan(
    world: &Alb,
    instances: &[Instance],
    strategy: &str,
    progress: Option<&Progress>,
) -> Planned {
    switch(&SwitchInput {
        service: &service(),
        release: &release("r2"),
        action: Action::Release,
        settings: &settings(1),
        alb: world,
        instances,
        addresses: &[],
        dns: None,
        strategy: Strategy::parse(strategy).unwrap(),
        progress,
        now: NOW,
    })
}

#[test]
fn a_gradual_shift_steps_only_when_its_interval_is_over() {
    let (world, instances) = released_world();
    let plan = shift_plan(&world, &instances, "linear:25:2", None).expect("a plan");
    assert_eq!(
        plan.next,
        Next::Wait {
            phase: Phase::Shift,
            hold_from: Some(NOW)
        }
    );
    let Step::SetForward { to, .. } = &plan.steps[0] else {
        panic!("{:?}", plan.steps)
    };
    assert_eq!(
        to.targets.iter().map(|t| t.weight).collect::<Vec<_>>(),
        [Some(75), Some(25)]
    );

    let mut shifting = world.clone();
    shifting.product.forward = to.clone();
    let mut progress = Progress::new(Phase::Shift, NOW - 200);
    progress.stepped_at = Some(NOW - 119);
    let held = shift_plan(&shifting, &instances, "linear:25:2", Some(&progress)).expect("a plan");
    assert_eq!((held.steps.len(), held.next), (0, Next::wait(Phase::Shift)));
    progress.stepped_at = Some(NOW - 120);
    let next = shift_plan(&shifting, &instances, "linear:25:2", Some(&progress)).expect("a plan");
    assert!(
        matches!(&next.steps[..], [Step::SetForward { to, .. }] if to.targets[1].weight == Some(50))
    );
}

#[test]
fn a_gradual_shift_to_unhealthy_targets_goes_back_in_one_call() {
    let (mut world, instances) = released_world();
    world.product.forward = weighted(&world, Slot::Green, 10, None);
    world.green.targets[0].health = Health::Unhealthy;
    let plan = shift_plan(&world, &instances, "canary:10:5", None).expect("a plan");
    assert!(matches!(&plan.next, Next::Abort(m) if m.contains("aborted at 10%")));
    assert!(matches!(&plan.steps[..], [Step::SetForward { to, .. }] if to == &Forward::to(BLUE)));
}

// ------------------------------------------------------------ real-AWS semantics

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
    // instance of the first attempt and launches the index again (the executor moves its
    // ClientToken to a new generation when AWS answers with the dead instance).
    let died = instance("i-1", "r2", 1, Stage::PreProduct, InstanceState::Terminated);
    let plan = provision_plan(&settings(1), &[died], &[], None).expect("a plan");
    assert!(
        matches!(&plan.steps[..], [Step::Launch { tags, .. }] if tags[TAG_INDEX] == "1"),
        "{:?}",
        plan.steps
    );
    assert_eq!(plan.next, Next::wait(Phase::Running));
}

#[test]
fn records_cutover_did_not_write_are_never_changed_and_deletes_repeat_the_ttl_read() {
    let fleet = [running("i-1", "r2", 1, Stage::PreProduct)];
    let mut dns = owned_dns(&fleet);
    let qa = format!("pre-product.api.{}", dns.zone_name);
    // The QA name is someone else's; an old owned record has a TTL changed by hand.
    let owned_qa = dns.records.remove(&qa).unwrap();
    dns.foreign.insert(qa.clone());
    dns.records.insert(
        "1.gone.api.internal.example.".into(),
        RecordSet {
            ttl: 300,
            values: vec!["10.0.9.9".into()],
            marker_ttl: 60,
        },
    );
    let mut notes = Vec::new();
    let steps = record_steps(
        &dns,
        &service(),
        &fleet,
        &BTreeMap::new(),
        &BTreeSet::new(),
        &mut notes,
    );
    let [Step::ChangeRecords { changes, .. }] = &steps[..] else {
        panic!("{steps:?}")
    };
    assert!(changes.iter().all(|c| c.name != qa), "{changes:?}");
    assert_eq!(
        changes
            .iter()
            .map(|c| (c.action, c.name.as_str(), c.ttl))
            .collect::<Vec<_>>(),
        [(RecordAction::Delete, "1.gone.api.internal.example.", 300)]
    );
    assert!(notes.iter().any(|n| n.contains(&qa)), "{notes:?}");
    assert!(!owned_qa.values.is_empty());
}

#[test]
fn register_waits_while_the_idle_slot_holds_a_baking_fleet_and_names_the_bake_end() {
    let mut baking = running("i-old", "r1", 1, Stage::Retired);
    baking.retired_at = Some(NOW - 100);
    let instances = [baking.clone(), running("i-new", "r2", 1, Stage::PreProduct)];
    let world = alb(
        vec![target("i-live", Health::Healthy)],
        vec![target("i-old", Health::Healthy)],
    );
    let plan = register_plan(&world, &instances, None).expect("a plan");
    assert_eq!(plan.next, Next::wait(Phase::Bake));
    let bake_end = (NOW - 100 + 600).to_string();
    assert!(
        plan.notes.iter().any(|n| n.contains(&bake_end)),
        "{:?}",
        plan.notes
    );

    // A bake that ends later than this action may wait: fail now, naming it.
    let mut long = settings(1);
    long.bake_s = MAX_ACTION_WAIT_S + 7_200;
    let refused = register(&RegisterInput {
        service: &service(),
        release: &release("r2"),
        settings: &long,
        alb: &{
            let mut locked = world.clone();
            locked.product.lock = Some(Lock {
                release: "r2".into(),
                since: NOW,
            });
            locked
        },
        instances: &instances,
        progress: None,
        now: NOW,
    });
    assert!(
        matches!(&refused, Err(Refusal(m)) if m.contains(&(NOW - 100 + long.bake_s).to_string())),
        "{refused:?}"
    );

    // Past the bake the old fleet is stale: deregistered, the release registered.
    baking.retired_at = Some(NOW - 601);
    let after = register_plan(&world, &[baking, instances[1].clone()], None).expect("a plan");
    assert!(after.steps.iter().any(
        |s| matches!(s, Step::DeregisterTargets { instance_ids, .. } if instance_ids == &["i-old"])
    ));
}

#[test]
fn every_repoint_keeps_the_routes_authentication_and_order() {
    let (mut world, instances) = released_world();
    let sso = KeptAction {
        order: Some(1),
        authenticate: Authenticate::Oidc {
            issuer: "https://sso.example.com".into(),
            authorization_endpoint: "https://sso.example.com/auth".into(),
            token_endpoint: "https://sso.example.com/token".into(),
            user_info_endpoint: "https://sso.example.com/userinfo".into(),
            client_id: "cutover-qa".into(),
            session: AuthSession::default(),
        },
    };
    for route in [&mut world.product, &mut world.pre_product] {
        route.kept_actions = vec![sso.clone()];
        route.forward_order = Some(2);
    }
    let plan = switch_plan(Action::Release, &world, &instances).expect("a plan");
    let repoints: Vec<&Step> = plan
        .steps
        .iter()
        .filter(|s| matches!(s, Step::SetForward { .. }))
        .collect();
    assert_eq!(repoints.len(), 2, "{:?}", plan.steps);
    for step in repoints {
        assert!(
            matches!(step, Step::SetForward { keep, forward_order: Some(2), .. } if keep == std::slice::from_ref(&sso)),
            "{step:?}"
        );
    }
}

#[test]
fn a_failed_release_is_marked_abandoned_and_the_sweep_takes_abandoned_fleets_at_any_age() {
    let instances = [
        running("i-failed", "r3", 1, Stage::PreProduct),
        running("i-live", "r2", 1, Stage::Product),
    ];
    let world = alb(
        vec![target("i-live", Health::Healthy)],
        vec![target("i-failed", Health::Healthy)],
    );
    let plan = cleanup_plan(
        &world,
        &instances,
        CleanupScope::FailedRelease(release("r3")),
        &[],
    )
    .expect("a plan");
    assert!(
        matches!(&plan.steps[0], Step::TagInstances { instance_ids, tags } if instance_ids == &["i-failed"] && tags[TAG_STAGE] == "abandoned"),
        "{:?}",
        plan.steps
    );

    // Launched a minute ago, drained: the sweep terminates it without waiting for any age.
    let mut abandoned = running("i-failed", "r3", 1, Stage::Abandoned);
    abandoned.launched_at = Some(NOW - 60);
    let drained = alb(vec![target("i-live", Health::Healthy)], vec![]);
    let swept = cleanup_plan(
        &drained,
        &[abandoned, instances[1].clone()],
        CleanupScope::Expired,
        &[],
    )
    .expect("a plan");
    assert_eq!(
        swept.steps.last(),
        Some(&Step::Terminate {
            instance_ids: vec!["i-failed".into()]
        })
    );
}

#[test]
fn strategies_longer_than_a_codepipeline_action_are_refused() {
    assert!(Strategy::parse("canary:10:1380").is_ok());
    let refused = Strategy::parse("linear:10:180").unwrap_err();
    assert!(refused.contains("24 hours"), "{refused}");
}

#[test]
fn a_shift_that_would_outlive_the_action_rolls_back_first() {
    let (world, instances) = released_world();
    let mut shifting = world.clone();
    shifting.product.forward = weighted(&world, Slot::Green, 10, None);
    // linear:10:120 holds 8 more steps of two hours after this one; the job began 10 h ago and
    // was delayed: finishing would pass the 24-hour limit.
    let mut progress = Progress::new(Phase::Shift, NOW - 10 * 3600);
    progress.stepped_at = Some(NOW - 7_200);
    let plan = shift_plan(&shifting, &instances, "linear:10:120", Some(&progress)).expect("a plan");
    assert!(
        matches!(&plan.steps[..], [Step::SetForward { to, .. }] if to == &Forward::to(BLUE)),
        "{:?}",
        plan.steps
    );
    assert!(
        matches!(&plan.next, Next::Abort(m) if m.contains("24-hour")),
        "{plan:?}"
    );
}
