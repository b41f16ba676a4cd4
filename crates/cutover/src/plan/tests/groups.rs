//! `FLEET=asg`: provision's group, and plans decided on instances carried out on groups.

use super::*;

fn asg_settings(count: u32) -> ServiceSettings {
    ServiceSettings::parse(
        "API",
        &format!(
            r#"{{"FLEET":"asg","LAUNCH_TEMPLATE":"api-web","AMI":"ami-1","SUBNET":["subnet-a","subnet-b"],
                "COUNT":{count},"BAKE_S":600}}"#
        ),
    )
    .unwrap()
}

fn cutover_group(release: &str, stage: Stage, members: &[&str], target_groups: &[&str]) -> Group {
    Group {
        name: group_name(&service(), &super::release(release)),
        service: "api".into(),
        release: Some(super::release(release)),
        stage: Some(stage),
        retired_at: None,
        failed_at: None,
        min: 2,
        max: 6,
        desired: members.len() as u32,
        members: members
            .iter()
            .map(|id| Member {
                id: (*id).into(),
                in_service: true,
            })
            .collect(),
        target_groups: target_groups.iter().map(|t| (*t).to_owned()).collect(),
        suspended: Vec::new(),
        launch_template: Some(group_name(&service(), &super::release(release))),
        policies: Vec::new(),
        deleting: false,
    }
}

fn provision_group_plan(
    settings: &ServiceSettings,
    instances: &[Instance],
    groups: &[Group],
    templates: &[LaunchTemplate],
    ami: Option<&str>,
) -> Planned {
    provision(&ProvisionInput {
        groups,
        templates,
        ami,
        service: &service(),
        release: &release("r2"),
        settings,
        instances,
        addresses: &[],
        dns: None,
        lock: None,
        lock_holder: None,
        progress: None,
        now: NOW,
    })
}

#[test]
fn provision_copies_the_team_template_and_sizes_the_group_to_what_serves_product() {
    let serving = cutover_group("r1", Stage::Product, &["i-1", "i-2", "i-3"], &[BLUE]);
    let plan = provision_group_plan(&asg_settings(2), &[], &[serving], &[], Some("ami-2")).unwrap();
    assert_eq!(plan.next, Next::wait(Phase::Running));
    let name = group_name(&service(), &release("r2"));
    match plan.steps.as_slice() {
        [Step::CreateLaunchTemplate {
            name: template,
            source,
            ami,
            tags,
        }, Step::CreateGroup {
            name: group,
            launch_template,
            subnets,
            min,
            max,
            desired,
            tags: group_tags,
        }] => {
            assert_eq!((template, group, launch_template), (&name, &name, &name));
            assert_eq!((source.as_str(), ami.as_str()), ("api-web", "ami-2"));
            assert_eq!(subnets, &["subnet-a", "subnet-b"]);
            assert_eq!((*min, *max, *desired), (2, 6, 3), "three serve now");
            assert_eq!(tags.get(TAG_STAGE).map(String::as_str), Some("pre-product"));
            assert_eq!(group_tags.get(TAG_RELEASE).map(String::as_str), Some("r2"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn provision_waits_for_every_instance_in_service_then_ends_with_the_group() {
    let mut mine = cutover_group("r2", Stage::PreProduct, &["i-a", "i-b"], &[]);
    mine.desired = 3;
    let instances = [
        running("i-a", "r2", 0, Stage::PreProduct),
        running("i-b", "r2", 0, Stage::PreProduct),
    ]
    .map(|mut i| {
        i.index = None;
        i
    });
    let template = LaunchTemplate {
        id: "lt-1".into(),
        name: mine.name.clone(),
        release: Some(release("r2")),
        created_at: Some(NOW),
    };
    let settings = asg_settings(2);
    let waiting = provision_group_plan(
        &settings,
        &instances,
        &[mine.clone()],
        std::slice::from_ref(&template),
        None,
    )
    .unwrap();
    assert_eq!(waiting.next, Next::wait(Phase::Running));
    assert!(waiting.steps.is_empty(), "{:?}", waiting.steps);
    mine.desired = 2;
    let done =
        provision_group_plan(&settings, &instances, &[mine.clone()], &[template], None).unwrap();
    assert!(matches!(done.next, Next::Done(_)), "{:?}", done.next);
    assert_eq!(done.outputs.get("group"), Some(&mine.name));
    assert_eq!(
        done.outputs.get("instance_ids").map(String::as_str),
        Some("i-a,i-b")
    );
}

#[test]
fn an_abandoned_group_is_never_provisioned_again() {
    let mine = cutover_group("r2", Stage::Abandoned, &[], &[]);
    let refused = provision_group_plan(&asg_settings(2), &[], &[mine], &[], None).unwrap_err();
    assert!(refused.0.contains("r2"), "{refused}");
}

#[test]
fn registering_attaches_the_group_and_deregistering_detaches_it() {
    let mine = cutover_group("r2", Stage::PreProduct, &["i-a", "i-b"], &[]);
    let mut old = cutover_group("r0", Stage::Retired, &["i-o"], &[GREEN]);
    old.suspended = HELD_PROCESSES.iter().map(|p| p.to_string()).collect();
    let instances = [
        running("i-a", "r2", 0, Stage::PreProduct),
        running("i-b", "r2", 0, Stage::PreProduct),
        running("i-o", "r0", 0, Stage::Retired),
    ];
    let plan = Plan::wait(Phase::Healthy).with_steps(vec![
        Step::DeregisterTargets {
            target_group: GREEN.into(),
            instance_ids: vec!["i-o".into()],
        },
        Step::RegisterTargets {
            target_group: GREEN.into(),
            instance_ids: vec!["i-a".into(), "i-b".into()],
        },
    ]);
    let carried = through_groups(Ok(plan), &[mine.clone(), old.clone()], &instances).unwrap();
    assert_eq!(
        carried.steps,
        [
            Step::DetachGroup {
                group: old.name.clone(),
                target_group: GREEN.into()
            },
            Step::AttachGroup {
                group: mine.name.clone(),
                target_group: GREEN.into()
            },
        ]
    );
}

#[test]
fn targets_of_a_group_not_cutovers_are_refused_by_name_and_never_deregistered() {
    let plan = Plan::wait(Phase::Healthy).with_steps(vec![Step::DeregisterTargets {
        target_group: GREEN.into(),
        instance_ids: vec!["i-team".into()],
    }]);
    let refused = through_groups(Ok(plan), &[], &[]).unwrap_err();
    assert!(
        refused.0.contains("i-team") && refused.0.contains("detach"),
        "{refused}"
    );
}

#[test]
fn terminating_a_whole_group_deletes_it_and_part_of_one_terminates_instances() {
    let old = cutover_group("r0", Stage::Retired, &["i-o", "i-p"], &[]);
    let instances = [
        running("i-o", "r0", 0, Stage::Retired),
        running("i-p", "r0", 0, Stage::Retired),
    ];
    let whole = Plan::done("x").with_steps(vec![Step::Terminate {
        instance_ids: vec!["i-o".into(), "i-p".into()],
    }]);
    let carried = through_groups(Ok(whole), std::slice::from_ref(&old), &instances).unwrap();
    assert_eq!(
        carried.steps[0],
        Step::DeleteGroup {
            group: old.name.clone()
        }
    );
    let part = Plan::done("x").with_steps(vec![Step::Terminate {
        instance_ids: vec!["i-p".into()],
    }]);
    let carried = through_groups(Ok(part), &[old], &instances).unwrap();
    assert_eq!(
        carried.steps[0],
        Step::Terminate {
            instance_ids: vec!["i-p".into()]
        }
    );
}

#[test]
fn a_switch_moves_the_groups_stages_holds_the_old_and_gives_the_new_its_policies() {
    let policy = TrackingPolicy {
        name: "requests".into(),
        metric: "ALBRequestCountPerTarget".into(),
        resource_label: Some("app/web/1/targetgroup/api-blue/1".into()),
        target_value: 100.0,
        disable_scale_in: false,
    };
    let mut old = cutover_group("r1", Stage::Product, &["i-o"], &[BLUE]);
    old.policies = vec![policy.clone()];
    let mut new = cutover_group("r2", Stage::PreProduct, &["i-n"], &[GREEN]);
    let instances = [
        running("i-o", "r1", 0, Stage::Product),
        running("i-n", "r2", 0, Stage::PreProduct),
    ];
    let retire = BTreeMap::from([
        (TAG_STAGE.to_owned(), "retired".to_owned()),
        (TAG_RETIRED_AT.to_owned(), NOW.to_string()),
    ]);
    let switch = Plan::done("x").with_steps(vec![
        Step::TagInstances {
            instance_ids: vec!["i-n".into()],
            tags: BTreeMap::from([(TAG_STAGE.to_owned(), "product".to_owned())]),
        },
        Step::TagInstances {
            instance_ids: vec!["i-o".into()],
            tags: retire.clone(),
        },
    ]);
    let carried = through_groups(Ok(switch), &[old.clone(), new.clone()], &instances).unwrap();
    let after: Vec<&Step> = carried.steps[2..].iter().collect();
    assert!(after.contains(&&Step::TagGroup {
        group: old.name.clone(),
        tags: retire
    }));
    assert!(after.contains(&&Step::HoldGroup {
        group: old.name.clone()
    }));
    assert!(after.contains(&&Step::TagGroup {
        group: new.name.clone(),
        tags: BTreeMap::from([(TAG_STAGE.to_owned(), "product".to_owned())]),
    }));
    assert!(after.contains(&&Step::PutTrackingPolicy {
        group: new.name.clone(),
        policy: policy.on_target_group(GREEN),
    }));
    // Once the tags landed, nothing more is due.
    old.stage = Some(Stage::Retired);
    old.retired_at = Some(NOW);
    old.suspended = HELD_PROCESSES.iter().map(|p| p.to_string()).collect();
    new.stage = Some(Stage::Product);
    new.policies = vec![policy.on_target_group(GREEN)];
    let mut landed = instances.clone();
    landed[0].stage = Some(Stage::Retired);
    landed[0].retired_at = Some(NOW);
    landed[1].stage = Some(Stage::Product);
    let settled = through_groups(Ok(Plan::done("x")), &[old, new], &landed).unwrap();
    assert!(settled.steps.is_empty(), "{:?}", settled.steps);
}

#[test]
fn a_rollback_resumes_the_held_group_it_moves_product_back_to() {
    let mut old = cutover_group("r1", Stage::Retired, &["i-o"], &[BLUE]);
    old.suspended = HELD_PROCESSES.iter().map(|p| p.to_string()).collect();
    let instances = [running("i-o", "r1", 0, Stage::Retired)];
    let back = Plan::done("x").with_steps(vec![Step::TagInstances {
        instance_ids: vec!["i-o".into()],
        tags: BTreeMap::from([(TAG_STAGE.to_owned(), "product".to_owned())]),
    }]);
    let carried = through_groups(Ok(back), std::slice::from_ref(&old), &instances).unwrap();
    assert!(carried
        .steps
        .contains(&Step::ResumeGroup { group: old.name }));
}

#[test]
fn leftovers_go_only_once_nothing_can_still_be_landing_on_them() {
    let takeover_s = 240;
    let settings = asg_settings(2);
    let alb = alb(vec![], vec![]);
    let executions = BTreeMap::new();
    let name = service();
    let input = |scope, now| CleanupInput {
        service: &name,
        scope,
        settings: &settings,
        alb: &alb,
        instances: &[],
        groups: &[],
        addresses: &[],
        dns: None,
        alarms: &[],
        takeover_s,
        executions: &executions,
        progress: None,
        now,
    };
    // A failed release's group that never launched anything is marked, then deleted once settled.
    let empty = cutover_group("r3", Stage::PreProduct, &[], &[]);
    let failed = leftovers(
        &input(CleanupScope::FailedRelease(release("r3")), NOW),
        std::slice::from_ref(&empty),
        &[],
    );
    assert!(
        matches!(failed.as_slice(), [Step::TagGroup { tags, .. }] if tags[TAG_STAGE] == "abandoned"),
        "{failed:?}"
    );
    let mut abandoned = empty;
    abandoned.stage = Some(Stage::Abandoned);
    abandoned.retired_at = Some(NOW);
    let sweep = |now| {
        leftovers(
            &input(CleanupScope::Expired, now),
            std::slice::from_ref(&abandoned),
            &[],
        )
    };
    assert!(sweep(NOW + takeover_s - 1).is_empty());
    assert_eq!(
        sweep(NOW + takeover_s),
        [Step::DeleteGroup {
            group: abandoned.name.clone()
        }]
    );
    // A template whose release made no group goes once its execution has ended (a provision
    // Lambda retried after its timeout may still be creating the group), or with a failed
    // release's cleanup; never while the execution runs, however old.
    let template = LaunchTemplate {
        id: "lt-1".into(),
        name: group_name(&service(), &release("r4")),
        release: Some(release("r4")),
        created_at: Some(NOW),
    };
    let delete = [Step::DeleteLaunchTemplate {
        name: template.name.clone(),
    }];
    let with = |scope, execution: Execution| {
        let executions = BTreeMap::from([("r4".to_owned(), execution)]);
        leftovers(
            &CleanupInput {
                executions: &executions,
                ..input(scope, NOW + 86_400)
            },
            &[],
            std::slice::from_ref(&template),
        )
    };
    assert!(with(
        CleanupScope::Expired,
        Execution::Running("InProgress".into())
    )
    .is_empty());
    assert_eq!(
        with(CleanupScope::Expired, Execution::Ended("Failed".into())),
        delete
    );
    assert_eq!(
        with(
            CleanupScope::FailedRelease(release("r4")),
            Execution::Running("InProgress".into())
        ),
        delete
    );
}
