//! Rollbacks read through the route's state: each test is a defect the old planner had.

use super::*;

const ALARM: Trigger = Trigger::Alarm {
    name: "api-5xx",
    at: Some(NOW - 5),
};

/// r2 serves from green since `NOW - 60`; r1 bakes, retired, in blue.
fn switched_world() -> (Alb, Vec<Instance>) {
    let (mut world, mut instances) = released_world();
    world.product.forward = Forward::to(GREEN);
    world.pre_product.forward = Forward::to(BLUE);
    world.product.previous = Some(BLUE.into());
    instances[0].stage = Some(Stage::Retired);
    instances[0].retired_at = Some(NOW - 60);
    instances[1].stage = Some(Stage::Product);
    (world, instances)
}

/// The world after a completed rollback from r2.
fn rolled_back_world() -> (Alb, Vec<Instance>) {
    let (mut world, mut instances) = switched_world();
    world.product.forward = Forward::to(BLUE);
    world.pre_product.forward = Forward::to(GREEN);
    world.product.previous = Some(GREEN.into());
    world.product.rolled_back = Some(mark("r2", NOW - 30));
    instances[0].stage = Some(Stage::Product);
    instances[0].retired_at = None;
    instances[1].stage = Some(Stage::Retired);
    instances[1].retired_at = Some(NOW - 30);
    (world, instances)
}

fn moves_product(plan: &Plan) -> bool {
    plan.steps.iter().any(|s| {
        matches!(
            s,
            Step::SetForward {
                role: RouteRole::Product,
                ..
            }
        )
    })
}

fn summary(plan: &Plan) -> &str {
    match &plan.next {
        Next::Done(summary) => summary,
        other => panic!("not done: {other:?}"),
    }
}

#[test]
fn a_second_hand_rollback_moves_nothing_and_keeps_the_mark() {
    let (world, instances) = rolled_back_world();
    for asked in [None, Some(release("r2"))] {
        let plan =
            rollback_plan(Trigger::Hand, asked.as_ref(), &world, &instances).expect("a plan");
        assert!(plan.steps.is_empty(), "{:?}", plan.steps);
        assert!(
            summary(&plan).contains("already rolled back from release r2"),
            "{plan:?}"
        );
    }
}

#[test]
fn a_hand_rollback_naming_a_release_that_does_not_serve_is_refused_naming_what_serves() {
    let (world, instances) = switched_world();
    let refusal = rollback_plan(Trigger::Hand, Some(&release("r1")), &world, &instances)
        .expect_err("refused");
    assert!(refusal.0.contains("release r2 serves"), "{refusal:?}");
    let (world, instances) = rolled_back_world();
    let refusal = rollback_plan(Trigger::Hand, Some(&release("r1")), &world, &instances)
        .expect_err("refused");
    assert!(refusal.0.contains("release r1 serves"), "{refusal:?}");
}

#[test]
fn a_rollback_mid_shift_puts_product_on_the_old_slot_in_one_call_marked_first() {
    let (mut world, instances) = released_world();
    world.product.forward = weighted(&world, Slot::Green, 25, None);
    for trigger in [Trigger::Hand, ALARM] {
        let plan = rollback_plan(trigger, None, &world, &instances).expect("a plan");
        assert!(
            matches!(&plan.steps[..], [Step::TagRoute { tags, .. }, Step::SetForward { role: RouteRole::Product, to, .. }]
                if tags[TAG_ROLLED_BACK] == "r2" && *to == Forward::to(BLUE)),
            "{:?}",
            plan.steps
        );
    }
}

#[test]
fn a_rollback_mid_shift_goes_to_an_old_slot_whose_group_is_scaling_out_but_never_a_failing_one() {
    let (mut world, instances) = released_world();
    world.product.forward = weighted(&world, Slot::Green, 25, None);
    // The serving group launched one more instance under load: still in its registration.
    world.blue.targets.push(target("i-scaled", Health::Initial));
    let plan = rollback_plan(Trigger::Hand, None, &world, &instances).expect("a plan");
    assert!(
        plan.steps
            .iter()
            .any(|s| matches!(s, Step::SetForward { to, .. } if *to == Forward::to(BLUE))),
        "{plan:?}"
    );
    world.blue.targets.last_mut().unwrap().health = Health::Unhealthy;
    let refused = rollback_plan(Trigger::Hand, None, &world, &instances).unwrap_err();
    assert!(refused.0.contains("failing"), "{refused}");
}

#[test]
fn an_alarm_event_acts_on_the_alarm_now_and_inside_the_bake_of_the_release_that_serves() {
    let (world, instances) = switched_world();
    let plan = rollback_plan(ALARM, None, &world, &instances).expect("a plan");
    assert!(moves_product(&plan), "inside the bake: {plan:?}");

    let before_the_switch = Trigger::Alarm {
        name: "api-5xx",
        at: Some(NOW - 61),
    };
    let plan = rollback_plan(before_the_switch, None, &world, &instances).expect("a plan");
    assert!(!moves_product(&plan) && summary(&plan).contains("older than the release"));

    let after_the_bake = Trigger::Alarm {
        name: "api-5xx",
        at: Some(NOW - 60 + 600),
    };
    let plan = rollback_plan(after_the_bake, None, &world, &instances).expect("a plan");
    assert!(!moves_product(&plan) && summary(&plan).contains("outside the bake"));

    let ok_now = roll_back(&RollbackInput {
        service: &service(),
        release: None,
        trigger: ALARM,
        settings: &settings(1),
        alb: &world,
        instances: &instances,
        addresses: &[],
        dns: None,
        alarms: &[Alarm {
            name: "api-5xx".into(),
            state: AlarmState::Ok,
        }],
        now: NOW,
    })
    .expect("a plan");
    assert!(!moves_product(&ok_now) && summary(&ok_now).contains("is Ok now"));
}

#[test]
fn a_second_alarm_reading_between_the_first_ones_calls_never_moves_product_back() {
    let (world, instances) = switched_world();
    let first = rollback_plan(ALARM, None, &world, &instances).expect("a plan");
    // Apply the first alarm's calls one by one; a second alarm reads after each.
    let mut seen = (world.clone(), instances.clone());
    for step in &first.steps {
        model::apply_tags(&mut seen.0, &mut seen.1, step);
        let second = rollback_plan(ALARM, None, &seen.0, &seen.1).expect("a plan");
        for step in &second.steps {
            if let Step::SetForward {
                role: RouteRole::Product,
                to,
                ..
            } = step
            {
                assert_eq!(*to, Forward::to(BLUE), "after {step:?}: {second:?}");
            }
        }
    }
}

#[test]
fn a_shift_continuation_after_a_rollback_stops_and_never_resumes() {
    let (mut world, instances) = released_world();
    let mut progress = Progress::new(Phase::Shift, NOW - 300);
    progress.stepped_at = Some(NOW - 200);
    // Rolled back to 100% old at NOW - 100.
    world.product.rolled_back = Some(mark("r2", NOW - 100));
    let refusal =
        shift_plan(&world, &instances, "linear:25:2", Some(&progress)).expect_err("stops");
    assert!(refusal.0.contains("by hand at"), "{refusal:?}");

    // A step that landed after the rollback's move: product goes back to the old slot, and
    // the job fails.
    world.product.forward = weighted(&world, Slot::Green, 50, None);
    let plan = shift_plan(&world, &instances, "linear:25:2", Some(&progress)).expect("a plan");
    assert!(matches!(plan.next, Next::Abort(_)), "{plan:?}");
    assert!(
        matches!(&plan.steps[..], [Step::SetForward { to, .. }] if *to == Forward::to(BLUE)),
        "{plan:?}"
    );

    // A new run of the stage after the rollback goes forward again, clearing the mark first.
    world.product.forward = Forward::to(BLUE);
    let again = shift_plan(&world, &instances, "linear:25:2", None).expect("a plan");
    assert!(
        matches!(&again.steps[0], Step::UntagRoute { .. }),
        "{again:?}"
    );
}

#[test]
fn a_rolled_back_release_goes_forward_again_inside_its_bake_only() {
    let (world, mut instances) = rolled_back_world();
    let plan = switch_plan(Action::Release, &world, &instances).expect("inside the bake");
    assert!(
        matches!(&plan.steps[0], Step::UntagRoute { .. }),
        "{plan:?}"
    );
    // Past it, the fleet is cleanup's: moving product onto it would race its deregistration.
    instances[1].retired_at = Some(NOW - 600);
    let refusal = switch_plan(Action::Release, &world, &instances).expect_err("past the bake");
    assert!(refusal.0.contains("cleanup's now"), "{refusal:?}");
}

#[test]
fn neither_a_release_moves_product_to_an_older_fleet_nor_a_rollback_to_a_newer_one() {
    // r1 (older) serves after a completed rollback; r2 stands in the other slot.
    let (mut world, mut instances) = switched_world();
    world.product.forward = Forward::to(BLUE);
    instances[0].stage = Some(Stage::Product);
    instances[1].stage = Some(Stage::Retired);
    instances[1].retired_at = Some(NOW - 10);
    // No mark (a release removed it and has not moved yet): a rollback of r1 would go forward.
    let refusal = rollback_plan(Trigger::Hand, None, &world, &instances).expect_err("refused");
    assert!(refusal.0.contains("launched after it"), "{refusal:?}");
    // And a replayed job of r1 while r2 serves never moves product back.
    let (world, instances) = switched_world();
    let old_job = switch_plan_of("r1", Action::Release, &world, &instances);
    assert!(old_job.is_err_and(|r| r.0.contains("never moves product back")));
}

#[test]
fn cleanup_waits_quietly_while_product_is_split() {
    let (mut world, instances) = released_world();
    world.product.forward = weighted(&world, Slot::Green, 25, None);
    let plan = cleanup_plan(&world, &instances, CleanupScope::Expired, &[]).expect("a plan");
    assert!(plan.steps.is_empty());
    assert_eq!(plan.next, Next::wait(Phase::Shift));
}
