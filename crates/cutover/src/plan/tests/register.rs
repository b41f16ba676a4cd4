//! The planner of register-target.

use super::*;

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

/// Found by the model: a duplicate delivery registered the targets while the job waited for the
/// lock; the continuation measured health from the lock wait's start and failed at once.
#[test]
fn the_health_timeout_counts_from_the_wait_for_health_not_from_an_earlier_wait() {
    let fleet = [running("i-new", "r2", 1, Stage::PreProduct)];
    let world = alb(vec![], vec![target("i-new", Health::Initial)]);
    let plan = register_plan(&world, &fleet, Some(&Progress::new(Phase::Lock, NOW - 599)))
        .expect("a plan");
    assert_eq!(plan.next, Next::wait(Phase::Healthy));
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
        groups: &[],
        templates: &[],
        ami: None,
        service: &service(),
        release: &release("r2"),
        settings: &settings(1),
        instances: &[],
        addresses: &[],
        dns: None,
        lock: world.product.lock.as_ref(),
        lock_holder: None,
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
        lock_holder: None,
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
fn a_lock_whose_execution_ended_is_taken_over_and_a_running_one_is_waited_for() {
    let (mut world, fleet) = (
        alb(vec![target("i-old", Health::Healthy)], vec![]),
        vec![
            running("i-old", "r1", 1, Stage::Product),
            running("i-new", "r2", 1, Stage::PreProduct),
        ],
    );
    world.product.lock = Some(Lock {
        release: "r1".into(),
        since: NOW - 60,
    });
    let provision_with = |holder: Option<Execution>| {
        provision(&ProvisionInput {
            groups: &[],
            templates: &[],
            ami: None,
            service: &service(),
            release: &release("r2"),
            settings: &settings(1),
            instances: &[],
            addresses: &[],
            dns: None,
            lock: world.product.lock.as_ref(),
            lock_holder: holder.as_ref(),
            progress: None,
            now: NOW,
        })
    };
    // r1's execution failed (QUEUED mode started r2 at once): its lock is free.
    let taken = provision_with(Some(Execution::Ended("Failed".into()))).expect("a plan");
    assert!(taken.steps.iter().any(|s| matches!(s, Step::Launch { .. })));
    // Still running: r2 waits (a continuation), it does not fail.
    let waits = provision_with(Some(Execution::Running("InProgress".into()))).expect("a plan");
    assert_eq!(
        (waits.steps.len(), waits.next),
        (0, Next::wait(Phase::LockHolder))
    );
    // And register-target claims over the ended execution's lock.
    let claim = register(&RegisterInput {
        service: &service(),
        release: &release("r2"),
        settings: &settings(1),
        alb: &world,
        instances: &fleet,
        lock_holder: Some(&Execution::Ended("Failed".into())),
        progress: None,
        now: NOW,
    })
    .expect("a plan");
    assert!(
        matches!(&claim.steps[..], [Step::TagRoute { tags, .. }] if tags[TAG_LOCK].starts_with("r2@")),
        "{claim:?}"
    );
}

/// `INSTALL_MARK`: CodeDeploy's deployment succeeded with one instance of two installed; the
/// other is refused at once by name, before the lock or any registration.
#[test]
fn an_instance_the_install_hook_did_not_mark_is_refused_by_name_before_anything_changes() {
    let mut settings = settings(2);
    settings.require_install_mark = true;
    let mut fleet = [
        running("i-a", "r2", 1, Stage::PreProduct),
        running("i-b", "r2", 2, Stage::PreProduct),
    ];
    fleet[0].installed = Some("r2".into());
    fleet[1].installed = Some("r1".into());
    let world = alb(vec![], vec![]);
    let plan = |fleet: &[Instance]| {
        register(&RegisterInput {
            service: &service(),
            release: &release("r2"),
            settings: &settings,
            alb: &world,
            instances: fleet,
            lock_holder: None,
            progress: None,
            now: NOW,
        })
    };
    let refused = plan(&fleet).unwrap_err();
    assert!(
        refused.0.contains("i-b")
            && !refused.0.contains("i-a")
            && refused.0.contains(TAG_INSTALLED),
        "{refused}"
    );
    fleet[1].installed = Some("r2".into());
    let claims = plan(&fleet).expect("a plan");
    assert_eq!(claims.next, Next::wait(Phase::Lock));
}
