//! `FLEET=asg` end to end through the real SDK against moto: each release an Auto Scaling group
//! of its own, launched from a cutover-owned copy of the team's launch template.

use std::collections::BTreeMap;

use aws_sdk_autoscaling::types as ast;
use aws_sdk_ec2::types as ec2t;
use cutover::world::group_name;
use cutover::Function;
use cutover_tests::{params, Local, ServiceFixture, R1, R2, R3, SERVICE};
use serde_json::{json, Value};

pub(crate) const TEAM_TEMPLATE: &str = "mobile-zum-api-web";
const TEAM_GROUP: &str = "mobile-zum-api-team";
const BAKE_S: u64 = 600;

/// The service in `asg` mode, with the team's launch template (and, when `team_group`, the
/// team's own first group serving product from the blue slot, as before cutover).
async fn setup(
    team_group: bool,
) -> (
    Local,
    ServiceFixture,
    cutover::App,
    aws_sdk_autoscaling::Client,
) {
    let extra = json!({
        "FLEET": "asg",
        "LAUNCH_TEMPLATE": TEAM_TEMPLATE,
        "INSTANCE_TYPE": null,
        "SG": null,
        "BAKE_S": BAKE_S,
    });
    let (local, service, app) = Local::with_service(2, 0, extra).await;
    let autoscaling = aws_sdk_autoscaling::Client::new(&local.config);
    local
        .clients
        .ec2
        .create_launch_template()
        .launch_template_name(TEAM_TEMPLATE)
        .launch_template_data(
            ec2t::RequestLaunchTemplateData::builder()
                .image_id(&local.base.ami)
                .instance_type(ec2t::InstanceType::T3Small)
                .security_group_ids(&local.base.security_group)
                .user_data(aws_smithy_types::base64::encode(
                    "#!/bin/sh\nsystemctl start web",
                ))
                .build(),
        )
        .send()
        .await
        .expect("the team's launch template");
    if team_group {
        autoscaling
            .create_auto_scaling_group()
            .auto_scaling_group_name(TEAM_GROUP)
            .launch_template(
                ast::LaunchTemplateSpecification::builder()
                    .launch_template_name(TEAM_TEMPLATE)
                    .build(),
            )
            .min_size(1)
            .max_size(4)
            .desired_capacity(1)
            .vpc_zone_identifier(local.base.subnets.join(","))
            .target_group_arns(&service.blue)
            .send()
            .await
            .expect("the team's group");
    }
    (local, service, app, autoscaling)
}

/// The team's launch template, as its stack would make it (with its instance profile, by ARN).
pub(crate) async fn team_template(local: &Local, profile: Option<&str>) {
    let mut data = ec2t::RequestLaunchTemplateData::builder()
        .image_id(&local.base.ami)
        .instance_type(ec2t::InstanceType::T3Small)
        .security_group_ids(&local.base.security_group)
        .user_data(aws_smithy_types::base64::encode(
            "#!/bin/sh\nsystemctl start web",
        ));
    if let Some(profile) = profile {
        data = data.iam_instance_profile(
            ec2t::LaunchTemplateIamInstanceProfileSpecificationRequest::builder()
                .arn(profile)
                .build(),
        );
    }
    local
        .clients
        .ec2
        .create_launch_template()
        .launch_template_name(TEAM_TEMPLATE)
        .launch_template_data(data.build())
        .send()
        .await
        .expect("the team's launch template");
}

/// Another image moto knows: the one a later release is baked into.
async fn another_ami(local: &Local) -> String {
    let images = local
        .clients
        .ec2
        .describe_images()
        .owners("amazon")
        .send()
        .await
        .expect("DescribeImages");
    images
        .images()
        .iter()
        .filter_map(|i| i.image_id())
        .find(|id| {
            *id != local.base.ami
                && id
                    .strip_prefix("ami-")
                    .is_some_and(|h| h.chars().all(|c| c.is_ascii_hexdigit()))
        })
        .expect("moto ships more than one amazon AMI")
        .to_owned()
}

pub(crate) fn group_of(release: &str) -> String {
    group_name(
        &cutover::names::ServiceName::parse(SERVICE).unwrap(),
        &cutover::names::ReleaseId::parse(release).unwrap(),
    )
}

pub(crate) async fn describe(
    autoscaling: &aws_sdk_autoscaling::Client,
    name: &str,
) -> Option<ast::AutoScalingGroup> {
    autoscaling
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(name)
        .send()
        .await
        .expect("DescribeAutoScalingGroups")
        .auto_scaling_groups()
        .first()
        .cloned()
}

fn tags(group: &ast::AutoScalingGroup) -> BTreeMap<String, (String, bool)> {
    group
        .tags()
        .iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().to_owned(),
                (
                    t.value().unwrap_or_default().to_owned(),
                    t.propagate_at_launch().unwrap_or(false),
                ),
            )
        })
        .collect()
}

fn stage(group: &ast::AutoScalingGroup) -> String {
    tags(group)
        .get("cutover:stage")
        .map(|(v, _)| v.clone())
        .unwrap_or_default()
}

fn suspended(group: &ast::AutoScalingGroup) -> Vec<String> {
    sorted(
        group
            .suspended_processes()
            .iter()
            .filter_map(|p| p.process_name()),
    )
}

/// These names, owned and sorted.
fn sorted<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut names: Vec<String> = names.map(str::to_owned).collect();
    names.sort();
    names
}

/// The instance's image and its tags.
async fn instance(local: &Local, id: &str) -> (String, BTreeMap<String, String>) {
    let out = local
        .clients
        .ec2
        .describe_instances()
        .instance_ids(id)
        .send()
        .await
        .expect("DescribeInstances");
    let instance = &out.reservations()[0].instances()[0];
    (
        instance.image_id().unwrap_or_default().to_owned(),
        super::infra::iam::ec2_tags(instance.tags())
            .into_iter()
            .collect(),
    )
}

async fn targets(local: &Local, target_group: &str) -> Vec<String> {
    let health = local
        .clients
        .elb
        .describe_target_health()
        .target_group_arn(target_group)
        .send()
        .await
        .expect("DescribeTargetHealth");
    sorted(
        health
            .target_health_descriptions()
            .iter()
            .filter_map(|d| d.target().and_then(|t| t.id())),
    )
}

fn member_ids(group: &ast::AutoScalingGroup) -> Vec<String> {
    sorted(group.instances().iter().filter_map(|i| i.instance_id()))
}

async fn run(local: &Local, app: &cutover::App, function: Function, parameters: &Value) {
    let job = local.run_job(app, function, parameters).await;
    assert!(
        job.succeeded(),
        "{} of {parameters}: {:?}",
        function.as_str(),
        job.last()
    );
}

#[tokio::test]
async fn a_whole_release_in_asg_mode_scales_switches_rolls_back_and_leaves_nothing() {
    let (local, service, app, autoscaling) = setup(true).await;
    let team_before = describe(&autoscaling, TEAM_GROUP)
        .await
        .expect("the team's group");

    // R1: a group of COUNT (no cutover group serves yet), from a copy of the team's template.
    local.release(&app, &params(R1)).await;
    let r1 = describe(&autoscaling, &group_of(R1))
        .await
        .expect("R1's group");
    assert_eq!(r1.desired_capacity(), Some(2));
    assert_eq!(stage(&r1), "product");
    assert!(
        tags(&r1).values().all(|(_, propagated)| *propagated),
        "{:?}",
        tags(&r1)
    );
    assert_eq!(r1.target_group_arns(), std::slice::from_ref(&service.green));
    assert_eq!(local.product_forward().await, service.green);
    let copy = r1.launch_template().and_then(|t| t.launch_template_name());
    assert_eq!(
        copy,
        Some(group_of(R1).as_str()),
        "launched from cutover's own template"
    );

    // The team's group and template are only read: nothing of them changed.
    let team_after = describe(&autoscaling, TEAM_GROUP)
        .await
        .expect("the team's group");
    assert_eq!(
        team_after.desired_capacity(),
        team_before.desired_capacity()
    );
    assert_eq!(tags(&team_after), tags(&team_before));
    assert_eq!(suspended(&team_after), suspended(&team_before));
    assert_eq!(
        team_after.target_group_arns(),
        team_before.target_group_arns()
    );
    let versions = local
        .clients
        .ec2
        .describe_launch_templates()
        .launch_template_names(TEAM_TEMPLATE)
        .send()
        .await
        .unwrap();
    assert_eq!(
        versions.launch_templates()[0].latest_version_number(),
        Some(1)
    );

    // R1 scales with a target-tracking policy on its target group; a scale-out after the switch
    // launches from R1's template, tagged product (propagated) and registered in product.
    let label = |tg: &str| {
        format!(
            "app/web/0123456789abcdef/{}",
            &tg[tg.find("targetgroup/").expect("a target group ARN")..]
        )
    };
    autoscaling
        .put_scaling_policy()
        .auto_scaling_group_name(group_of(R1))
        .policy_name("requests-per-target")
        .policy_type("TargetTrackingScaling")
        .target_tracking_configuration(
            ast::TargetTrackingConfiguration::builder()
                .predefined_metric_specification(
                    ast::PredefinedMetricSpecification::builder()
                        .predefined_metric_type(ast::MetricType::AlbRequestCountPerTarget)
                        .resource_label(label(&service.green))
                        .build(),
                )
                .target_value(250.0)
                .build(),
        )
        .send()
        .await
        .expect("PutScalingPolicy");
    autoscaling
        .set_desired_capacity()
        .auto_scaling_group_name(group_of(R1))
        .desired_capacity(3)
        .send()
        .await
        .expect("SetDesiredCapacity");
    let r1 = describe(&autoscaling, &group_of(R1)).await.unwrap();
    let r1_members = member_ids(&r1);
    assert_eq!(r1_members.len(), 3);
    assert_eq!(targets(&local, &service.green).await, r1_members);
    for id in &r1_members {
        let (image, tags) = instance(&local, id).await;
        assert_eq!(image, local.base.ami, "{id} boots R1's image");
        assert_eq!(
            tags.get("cutover:stage").map(String::as_str),
            Some("product"),
            "{id}"
        );
        assert_eq!(
            tags.get("cutover:release").map(String::as_str),
            Some(R1),
            "{id}"
        );
    }

    // R2 wants the blue slot, where the team's group still registers its instances: refused by
    // name until the team detaches it (the README's step); nothing of theirs is touched.
    let r2_image = another_ami(&local).await;
    let r2 = json!({"service": SERVICE, "release": R2, "ami": r2_image});
    run(&local, &app, Function::Provision, &r2).await;
    let refused = local.run_job(&app, Function::RegisterTarget, &r2).await;
    let message = refused.failure_message().expect("refused").to_owned();
    let team_ids = member_ids(&team_after);
    assert!(
        message.contains(&team_ids[0]) && message.contains("detach"),
        "{message}"
    );
    assert_eq!(
        targets(&local, &service.blue).await,
        team_ids,
        "the team's targets stay"
    );
    autoscaling
        .detach_load_balancer_target_groups()
        .auto_scaling_group_name(TEAM_GROUP)
        .target_group_arns(&service.blue)
        .send()
        .await
        .expect("the team detaches its group");

    // R2's group is sized to what serves product now (3), boots R2's image, and takes product
    // with R1's policy moved to its own target group; R1's group is held whole for the bake.
    run(&local, &app, Function::RegisterTarget, &r2).await;
    run(&local, &app, Function::SwitchListener, &r2).await;
    let r2_group = describe(&autoscaling, &group_of(R2))
        .await
        .expect("R2's group");
    assert_eq!(r2_group.desired_capacity(), Some(3));
    assert_eq!(stage(&r2_group), "product");
    assert_eq!(local.product_forward().await, service.blue);
    assert_eq!(targets(&local, &service.blue).await, member_ids(&r2_group));
    for id in member_ids(&r2_group) {
        assert_eq!(
            instance(&local, &id).await.0,
            r2_image,
            "{id} boots R2's image"
        );
    }
    let policies = autoscaling
        .describe_policies()
        .auto_scaling_group_name(group_of(R2))
        .send()
        .await
        .unwrap();
    let copied = policies
        .scaling_policies()
        .iter()
        .find(|p| p.policy_name() == Some("requests-per-target"))
        .expect("R1's policy on R2's group");
    let spec = copied
        .target_tracking_configuration()
        .and_then(|c| c.predefined_metric_specification())
        .unwrap();
    assert_eq!(spec.resource_label(), Some(label(&service.blue).as_str()));
    let r1 = describe(&autoscaling, &group_of(R1)).await.unwrap();
    assert_eq!(stage(&r1), "retired");
    assert_eq!(
        suspended(&r1),
        [
            "AZRebalance",
            "AlarmNotification",
            "ReplaceUnhealthy",
            "ScheduledActions"
        ]
    );

    // A rollback inside the bake: product back to R1's whole group in one move, R1 resumed,
    // R2 held; a scale-out of R2's group now would be tagged retired.
    local.advance(60);
    let rollback = json!({"service": SERVICE, "release": R2, "action": "rollback"});
    run(&local, &app, Function::SwitchListener, &rollback).await;
    assert_eq!(local.product_forward().await, service.green);
    let r1 = describe(&autoscaling, &group_of(R1)).await.unwrap();
    assert_eq!(stage(&r1), "product");
    assert!(suspended(&r1).is_empty(), "{:?}", suspended(&r1));
    let r2_group = describe(&autoscaling, &group_of(R2)).await.unwrap();
    assert_eq!(stage(&r2_group), "retired");
    assert_eq!(suspended(&r2_group).len(), 4);

    // After the bake the sweep detaches R2's group, and deletes it and its template.
    local.advance(BAKE_S + 1);
    let sweep = local.run_job(&app, Function::Cleanup, &params(R3)).await;
    assert!(sweep.succeeded(), "{:?}", sweep.last());
    let sweep = local.run_job(&app, Function::Cleanup, &params(R3)).await;
    assert!(sweep.succeeded(), "{:?}", sweep.last());
    assert!(
        describe(&autoscaling, &group_of(R2)).await.is_none(),
        "R2's group deleted"
    );
    assert!(targets(&local, &service.blue).await.is_empty());
    let templates = local
        .clients
        .ec2
        .describe_launch_templates()
        .send()
        .await
        .unwrap();
    let names: Vec<&str> = templates
        .launch_templates()
        .iter()
        .filter_map(|t| t.launch_template_name())
        .collect();
    assert!(!names.contains(&group_of(R2).as_str()), "{names:?}");
    assert!(
        names.contains(&group_of(R1).as_str()) && names.contains(&TEAM_TEMPLATE),
        "{names:?}"
    );
    let r1 = describe(&autoscaling, &group_of(R1))
        .await
        .expect("R1 serves on");
    assert_eq!(member_ids(&r1).len(), 3);
    assert!(
        describe(&autoscaling, TEAM_GROUP).await.is_some(),
        "the team's group is theirs"
    );
}

/// As on AWS, not as moto: what Auto Scaling registers is `initial` before it is healthy, and a
/// detached group's targets drain. register-target waits for health, and the sweep deletes a
/// group only once its targets have drained.
#[tokio::test]
async fn a_group_is_healthy_only_after_its_registration_and_deleted_only_after_its_drain() {
    let (local, service, app, autoscaling) = setup(false).await;
    local.behave_like_aws(5, 30);
    for release in [R1, R2] {
        run(&local, &app, Function::Provision, &params(release)).await;
        let register = local
            .run_job_advancing(&app, Function::RegisterTarget, &params(release), 10, 3)
            .await;
        assert!(register.succeeded(), "{:?}", register.last());
        assert!(
            register.continuations() >= 1,
            "waited while Auto Scaling's registrations were initial"
        );
        run(&local, &app, Function::SwitchListener, &params(release)).await;
    }
    assert_eq!(local.product_forward().await, service.blue);

    local.advance(BAKE_S + 1);
    let first = local
        .run_job_bounded(&app, Function::Cleanup, &params(R3), 1)
        .await;
    assert!(first.continuations() == 1, "{:?}", first.last());
    let r1 = describe(&autoscaling, &group_of(R1))
        .await
        .expect("kept while it drains");
    assert!(r1.target_group_arns().is_empty(), "detached");
    for id in member_ids(&r1) {
        assert_eq!(
            local.endpoint.target_health(&service.green, &id).as_deref(),
            Some("draining")
        );
    }
    local.advance(31);
    run(&local, &app, Function::Cleanup, &params(R3)).await;
    assert!(
        describe(&autoscaling, &group_of(R1)).await.is_none(),
        "deleted once drained"
    );
    let r2 = describe(&autoscaling, &group_of(R2))
        .await
        .expect("R2 serves");
    assert_eq!(targets(&local, &service.blue).await, member_ids(&r2));
}

/// A service in groups beside one in instances on the same listener: each releases as its mode
/// says, neither touches the other's, and a failed release's group is gone after its failure
/// event and the sweep, while a failure within the retry window keeps it for the retry.
#[tokio::test]
async fn two_services_side_by_side_and_a_failed_release_whose_group_the_sweep_takes() {
    let (local, _service, app, autoscaling) = setup(false).await;
    let news =
        cutover_tests::fixture::seed_service(&local.clients, &local.base, "news-api", 30).await;
    let plain =
        cutover_tests::fixture::settings_json(&local.base, 2, 0, json!({"RETRY_WINDOW_S": 0}));
    cutover_tests::fixture::put_settings_parameter(&local.clients, "news-api", &plain).await;
    let news_release = |release: &str| json!({"service": "news-api", "release": release});

    local.release(&app, &params(R1)).await;
    local.release(&app, &news_release(R1)).await;
    let news_fleet = cutover::aws::Aws::new(&local.config)
        .instances(cutover::aws::InstanceQuery::Service("news-api"))
        .await
        .unwrap();
    assert_eq!(news_fleet.len(), 2);
    assert!(
        news_fleet.iter().all(|i| i.index.is_some()),
        "instances mode, by index"
    );
    let in_news_groups = autoscaling
        .describe_auto_scaling_groups()
        .send()
        .await
        .unwrap();
    assert_eq!(
        in_news_groups.auto_scaling_groups().len(),
        1,
        "one group: mobile-zum-api's R1; news-api has none"
    );
    assert_eq!(targets(&local, &news.green).await, {
        let mut ids: Vec<String> = news_fleet.iter().map(|i| i.id.clone()).collect();
        ids.sort();
        ids
    });

    // R2 of the asg service fails after provision: its FAILED event keeps the group for a retry
    // (RETRY_WINDOW_S, two hours by default); after the window the sweep takes it.
    run(&local, &app, Function::Provision, &params(R2)).await;
    let mut failed = cutover_tests::sample_event("cleanup-pipeline-failed.json");
    failed["detail"]["execution-id"] = json!(R2);
    app.handle(Function::Cleanup, failed.clone()).await.unwrap();
    let kept = describe(&autoscaling, &group_of(R2))
        .await
        .expect("kept for a retry");
    assert_eq!(stage(&kept), "pre-product");
    local.advance(7_201);
    app.handle(Function::Cleanup, failed).await.unwrap();
    let sweep = cutover_tests::sample_event("cleanup-schedule.json");
    app.handle(Function::Cleanup, sweep.clone()).await.unwrap();
    app.handle(Function::Cleanup, sweep).await.unwrap();
    assert!(
        describe(&autoscaling, &group_of(R2)).await.is_none(),
        "R2's group is gone"
    );
    let templates = local
        .clients
        .ec2
        .describe_launch_templates()
        .send()
        .await
        .unwrap();
    assert!(
        !templates
            .launch_templates()
            .iter()
            .any(|t| t.launch_template_name() == Some(group_of(R2).as_str())),
        "and its template"
    );
    // Nothing of what serves was touched.
    let r1 = describe(&autoscaling, &group_of(R1))
        .await
        .expect("R1 serves");
    assert_eq!(
        (stage(&r1), member_ids(&r1).len()),
        ("product".to_owned(), 2)
    );
    let news_now = cutover::aws::Aws::new(&local.config)
        .instances(cutover::aws::InstanceQuery::Service("news-api"))
        .await
        .unwrap();
    assert_eq!(news_now, news_fleet);
}

/// A group already named as the release's but not cutover's (other tags) is refused by name, and
/// cutover changes nothing of it; nothing is launched for the release.
#[tokio::test]
async fn a_group_named_as_the_release_but_not_cutovers_is_refused_and_left_alone() {
    let (local, service, app, autoscaling) = setup(false).await;
    autoscaling
        .create_auto_scaling_group()
        .auto_scaling_group_name(group_of(R1))
        .launch_template(
            ast::LaunchTemplateSpecification::builder()
                .launch_template_name(TEAM_TEMPLATE)
                .build(),
        )
        .min_size(0)
        .max_size(1)
        .desired_capacity(0)
        .vpc_zone_identifier(local.base.subnets.join(","))
        .tags(
            ast::Tag::builder()
                .resource_id(group_of(R1))
                .resource_type("auto-scaling-group")
                .key("owner")
                .value("someone-else")
                .build(),
        )
        .send()
        .await
        .expect("someone else's group");
    let before = describe(&autoscaling, &group_of(R1)).await.unwrap();
    let run = local.run_job(&app, Function::Provision, &params(R1)).await;
    let message = run
        .failure_message()
        .unwrap_or_else(|| panic!("refused: {:?}", run.last()))
        .to_owned();
    assert!(
        message.contains(&group_of(R1)) && message.contains("not this release's"),
        "{message}"
    );
    let after = describe(&autoscaling, &group_of(R1)).await.unwrap();
    assert_eq!(tags(&after), tags(&before));
    assert_eq!(after.desired_capacity(), Some(0));
    assert!(targets(&local, &service.green).await.is_empty());
}
