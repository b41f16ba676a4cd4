//! The planner of switch-listener, gradual shifts and strategies.

use super::*;

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
        |s| matches!(s, Step::TagInstances { instance_ids, tags } if instance_ids == &["i-old"] && tags[TAG_STAGE] == "retired" && tags[TAG_RETIRED_AT] == NOW.to_string() && tags[TAG_NAME] == format!("api-retired-{}-1", release("r1").short()))
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
fn rollback_is_the_mirror_image_marked_before_it_moves_and_idempotent() {
    let (mut world, mut instances) = released_world();
    world.product.forward = Forward::to(GREEN);
    world.pre_product.forward = Forward::to(BLUE);
    instances[0].stage = Some(Stage::Retired);
    instances[0].retired_at = Some(NOW - 10);
    instances[1].stage = Some(Stage::Product);
    let plan = rollback_plan(Trigger::Pipeline, None, &world, &instances).expect("a plan");
    assert!(
        matches!(&plan.steps[0], Step::TagRoute { tags, .. } if tags.get(TAG_ROLLED_BACK).map(String::as_str) == Some("r2")),
        "the mark goes first, alone: {:?}",
        plan.steps
    );
    assert!(
        matches!(&plan.steps[1], Step::SetForward { role: RouteRole::Product, to, .. } if to == &Forward::to(BLUE))
    );
    assert!(plan.steps.iter().any(
        |s| matches!(s, Step::UntagInstances { instance_ids, .. } if instance_ids == &["i-old"])
    ));

    // After the rollback: product on blue, the bad release retired, pre-product on it.
    world.product.forward = Forward::to(BLUE);
    world.pre_product.forward = Forward::to(GREEN);
    world.product.previous = Some(GREEN.into());
    world.product.rolled_back = Some(mark("r2", NOW));
    instances[0].stage = Some(Stage::Product);
    instances[0].retired_at = None;
    instances[1].stage = Some(Stage::Retired);
    let again = rollback_plan(Trigger::Pipeline, None, &world, &instances).expect("a plan");
    assert!(again.steps.is_empty(), "{:?}", again.steps);
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
        Some(&Step::ReleaseLock {
            route: PRODUCT_RULE.into(),
            release: "r2".into()
        })
    );
    let plan = cleanup_plan(
        &world,
        &instances,
        CleanupScope::FailedRelease(release("r2")),
        &[],
    )
    .expect("a plan");
    assert!(plan.steps.contains(&Step::ReleaseLock {
        route: PRODUCT_RULE.into(),
        release: "r2".into()
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

#[test]
fn the_next_release_clears_the_rollback_mark_before_it_moves() {
    let (mut world, instances) = released_world();
    world.product.rolled_back = Some(mark("r1", NOW - 50));
    let plan = switch_plan(Action::Release, &world, &instances).expect("a plan");
    assert!(
        matches!(&plan.steps[0], Step::UntagRoute { keys, .. } if keys == &[TAG_ROLLED_BACK.to_owned(), TAG_ROLLED_BACK_BY.to_owned()]),
        "{:?}",
        plan.steps
    );
    assert!(matches!(
        &plan.steps[1],
        Step::SetForward {
            role: RouteRole::Product,
            ..
        }
    ));
}

#[test]
fn a_replayed_release_that_moves_nothing_leaves_a_newer_rollback_marked() {
    let (mut world, mut instances) = released_world();
    // r2 released, then r3 released and rolled back: product is on r2's slot with r3's mark.
    world.product.forward = Forward::to(GREEN);
    world.product.rolled_back = Some(mark("r3", NOW - 50));
    instances[1].stage = Some(Stage::Product);
    let plan = switch_plan(Action::Release, &world, &instances).expect("a plan");
    assert!(
        !plan
            .steps
            .iter()
            .any(|s| matches!(s, Step::UntagRoute { .. })),
        "{:?}",
        plan.steps
    );
}
