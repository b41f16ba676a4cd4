//! The planner of cleanup and the sweep.

use super::*;

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
        matches!(&plan.steps[1], Step::ChangeRecords { changes, .. } if changes.iter().all(|c| c.action == RecordAction::Delete && c.name.starts_with(&format!("1.{}.", release("r1").short()))))
    );
    assert_eq!(
        plan.steps[2],
        Step::Terminate {
            instance_ids: vec!["i-old".into()]
        }
    );
}

#[test]
fn cleanup_never_takes_the_product_slot_and_restages_a_fleet_wrongly_tagged_retired_there() {
    let mut wrongly_tagged = running("i-live", "r2", 1, Stage::Retired);
    wrongly_tagged.retired_at = Some(0);
    let world = alb(vec![target("i-live", Health::Healthy)], vec![]);
    let plan = cleanup_plan(&world, &[wrongly_tagged], CleanupScope::Expired, &[]).expect("a plan");
    assert!(plan.notes.iter().any(|n| n.contains("kept i-live")));
    assert!(
        matches!(&plan.steps[..], [Step::TagInstances { instance_ids, tags }, Step::UntagInstances { keys, .. }]
            if instance_ids == &["i-live"] && tags[TAG_STAGE] == "product" && keys == &[TAG_RETIRED_AT]),
        "{:?}",
        plan.steps
    );
}

/// Found by the model: a rollback read between a release's move and its retagging, and the
/// release's retagging landed after the rollback, leaving the rolled-back fleet `product` and
/// the serving one `retired`. The sweep restages both, and the rolled-back fleet gets a bake.
#[test]
fn the_sweep_retires_a_product_fleet_that_product_does_not_forward_to() {
    let instances = [
        running("i-back", "r1", 1, Stage::Retired),
        running("i-bad", "r2", 1, Stage::Product),
    ];
    let world = alb(
        vec![target("i-back", Health::Healthy)],
        vec![target("i-bad", Health::Healthy)],
    );
    let plan = cleanup_plan(&world, &instances, CleanupScope::Expired, &[]).expect("a plan");
    let tagged: Vec<(&str, &str)> = plan
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::TagInstances { instance_ids, tags } => {
                Some((instance_ids[0].as_str(), tags[TAG_STAGE].as_str()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(tagged, [("i-back", "product"), ("i-bad", "retired")]);
    assert!(!plan
        .steps
        .iter()
        .any(|s| matches!(s, Step::DeregisterTargets { .. } | Step::Terminate { .. })));
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
