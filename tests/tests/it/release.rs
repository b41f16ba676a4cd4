//! The release path end to end against moto: provision → register-target → switch-listener →
//! cleanup, asserting the ALB, targets, tags, DNS, EIPs and the CodePipeline acks after each.

use cutover::aws::{Aws, InstanceQuery};
use cutover::world::{InstanceState, Stage};
use cutover::Function;
use cutover_tests::{
    fixture, local, params, world_snapshot, Local, ServiceFixture, R1, R2, SERVICE,
};
use serde_json::{json, Value};

fn rollback(release: &str) -> Value {
    json!({"service": SERVICE, "release": release, "action": "rollback"})
}

async fn setup(count: u32, eips: usize) -> (Local, ServiceFixture, cutover::App) {
    Local::with_service(count, eips, json!({})).await
}

async fn release(local: &Local, app: &cutover::App, release: &str) {
    local.release(app, &params(release)).await;
}

/// ModifyRule calls on one rule since `mark`.
fn modify_rule_calls(local: &Local, mark: usize, rule: &str) -> usize {
    local.endpoint.rule_moves(mark, rule).len()
}

#[tokio::test]
async fn a_full_release_with_two_instances_eips_and_dns() {
    let (local, service, app) = setup(2, 2).await;
    // Targets drain for 30 s (test clock) after deregistration, as on AWS; moto drops them at once.
    local.endpoint.model_targets(0, 30);
    let aws = Aws::new(&local.config);
    let zone = format!("{SERVICE}.{}.", fixture::ZONE_NAME);

    // provision: two instances across two subnets, tagged, with EIPs and DNS; one continuation.
    let run = local.run_job(&app, Function::Provision, &params(R1)).await;
    assert!(run.succeeded(), "{:?}", run.last());
    assert!(
        run.continuations() >= 1,
        "waited for running through a continuation token"
    );
    let instances = aws
        .instances(InstanceQuery::Service(SERVICE))
        .await
        .unwrap();
    assert_eq!(instances.len(), 2);
    let described = local.clients.ec2.describe_instances().send().await.unwrap();
    let subnets: std::collections::BTreeSet<_> = described
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(|i| i.subnet_id())
        .collect();
    assert_eq!(subnets.len(), 2, "spread across both subnets");
    for (n, instance) in instances.iter().enumerate() {
        let index = n as u32 + 1;
        assert_eq!(instance.state, InstanceState::Running);
        assert_eq!(instance.stage, Some(Stage::PreProduct));
        assert_eq!(instance.release.as_deref(), Some(R1));
        assert_eq!(instance.index, Some(index));
        assert_eq!(
            instance.name.as_deref(),
            Some(format!("{SERVICE}-pre-product-11111111-{index}").as_str())
        );
    }
    let team = described.reservations()[0].instances()[0]
        .tags()
        .iter()
        .any(|t| t.key() == Some("team"));
    assert!(team, "TAGS from settings are applied at launch");
    let addresses = aws.addresses(&local.base.elastic_ips).await.unwrap();
    for (n, address) in addresses.iter().enumerate() {
        let owner = instances
            .iter()
            .find(|i| i.index == Some(n as u32 + 1))
            .unwrap();
        assert_eq!(
            address.instance_id.as_deref(),
            Some(owner.id.as_str()),
            "EIPs in order"
        );
    }
    let dns = aws.dns(&local.base.zone_id, SERVICE).await.unwrap();
    let ip = |n: usize| vec![instances[n].private_ip.clone().unwrap()];
    assert_eq!(
        dns.records
            .get(&format!("1.11111111.{zone}"))
            .map(|r| &r.values),
        Some(&ip(0))
    );
    assert_eq!(
        dns.records
            .get(&format!("2.11111111.{zone}"))
            .map(|r| &r.values),
        Some(&ip(1))
    );
    let mut both: Vec<String> = instances
        .iter()
        .map(|i| i.private_ip.clone().unwrap())
        .collect();
    both.sort();
    assert_eq!(
        dns.records
            .get(&format!("pre-product.{zone}"))
            .map(|r| &r.values),
        Some(&both)
    );
    let outputs = &run.last().output_variables;
    assert_eq!(
        outputs["instance_ids"],
        format!("{},{}", instances[0].id, instances[1].id)
    );
    assert!(outputs["dns_names"].contains("1.11111111.mobile-zum-api.internal.example"));

    // register-target: the idle slot (green: product is on blue) gets both, healthy.
    let run = local
        .run_job(&app, Function::RegisterTarget, &params(R1))
        .await;
    assert!(run.succeeded(), "{:?}", run.last());
    let alb = aws.alb(SERVICE).await.unwrap();
    assert_eq!(alb.green.targets.len(), 2);
    assert!(alb.green.unhealthy().is_empty());
    assert!(alb.blue.targets.is_empty());
    assert_eq!(
        alb.pre_product.forward.sole_target(),
        Some(service.green.as_str())
    );
    assert_eq!(
        alb.product.forward.sole_target(),
        Some(service.blue.as_str()),
        "product untouched"
    );
    assert!(run
        .last()
        .summary
        .as_deref()
        .unwrap()
        .contains(&service.qa_host));

    // switch-listener: product moves to green in one ModifyRule; old slot becomes pre-product.
    let mark = local.endpoint.mark();
    let run = local
        .run_job(&app, Function::SwitchListener, &params(R1))
        .await;
    assert!(run.succeeded(), "{:?}", run.last());
    assert_eq!(modify_rule_calls(&local, mark, &service.product_rule), 1);
    let alb = aws.alb(SERVICE).await.unwrap();
    assert_eq!(
        alb.product.forward.sole_target(),
        Some(service.green.as_str())
    );
    assert_eq!(
        alb.pre_product.forward.sole_target(),
        Some(service.blue.as_str())
    );
    assert_eq!(alb.product.previous.as_deref(), Some(service.blue.as_str()));
    let instances = aws
        .instances(InstanceQuery::Service(SERVICE))
        .await
        .unwrap();
    assert!(instances.iter().all(|i| i.stage == Some(Stage::Product)));
    assert!(instances[0]
        .name
        .as_deref()
        .unwrap()
        .starts_with("mobile-zum-api-product-"));
    let dns = aws.dns(&local.base.zone_id, SERVICE).await.unwrap();
    assert_eq!(
        dns.records
            .get(&format!("product.{zone}"))
            .map(|r| &r.values),
        Some(&both)
    );
    assert!(!dns.records.contains_key(&format!("pre-product.{zone}")));

    // A second release retires the first; cleanup (BAKE_S=0) drains and terminates it.
    release(&local, &app, R2).await;
    let old: Vec<String> = instances.iter().map(|i| i.id.clone()).collect();
    let all = aws
        .instances(InstanceQuery::Service(SERVICE))
        .await
        .unwrap();
    assert!(all
        .iter()
        .filter(|i| old.contains(&i.id))
        .all(|i| i.stage == Some(Stage::Retired) && i.retired_at.is_some()));
    let mark = local.endpoint.mark();
    let run = local
        .run_job_advancing(&app, Function::Cleanup, &params(R2), 10, 31)
        .await;
    assert!(run.succeeded(), "{:?}", run.last());
    assert!(
        run.continuations() >= 1,
        "waited for the drain: {:?}",
        run.acks
    );
    let calls = local.endpoint.calls()[mark..].to_vec();
    for id in &old {
        let position = |action: &str, key: &str| {
            calls.iter().position(|c| {
                c.action == action && c.params.iter().any(|(k, v)| k.starts_with(key) && v == id)
            })
        };
        let deregistered = position("DeregisterTargets", "Targets.member.").expect("deregistered");
        let terminated = position("TerminateInstances", "InstanceId.").expect("terminated");
        assert!(deregistered < terminated, "{id}: deregistered first");
    }
    assert!(
        local.endpoint.terminated_while_in_a_group().is_empty(),
        "terminated while draining: {:?}",
        local.endpoint.terminated_while_in_a_group()
    );
    let live = aws
        .instances(InstanceQuery::Service(SERVICE))
        .await
        .unwrap();
    assert_eq!(live.len(), 2);
    assert!(live
        .iter()
        .all(|i| i.release.as_deref() == Some(R2) && i.stage == Some(Stage::Product)));
    let alb = aws.alb(SERVICE).await.unwrap();
    assert!(
        alb.green.targets.is_empty(),
        "the old fleet was drained first"
    );
    assert_eq!(
        alb.product.forward.sole_target(),
        Some(service.blue.as_str())
    );
    let dns = aws.dns(&local.base.zone_id, SERVICE).await.unwrap();
    assert!(
        dns.records.keys().all(|name| !name.contains("11111111")),
        "{:?}",
        dns.records
    );
    let addresses = aws.addresses(&local.base.elastic_ips).await.unwrap();
    assert!(
        addresses
            .iter()
            .all(|a| live.iter().any(|i| Some(&i.id) == a.instance_id.as_ref())),
        "EIPs moved to the new product fleet"
    );

    // One SNS message per finished job, none for continuations.
    let published = local.endpoint.published();
    let finished = local
        .endpoint
        .acks()
        .iter()
        .filter(|a| a.continuation_token.is_none())
        .count();
    assert_eq!(published.len(), finished);
    assert!(published.iter().any(
        |(subject, body)| subject.contains("switch-listener succeeded")
            && body.contains("release: 11111111")
    ));
}

#[tokio::test]
async fn rollback_restores_the_exact_previous_forward_in_one_call() {
    let (local, service, app) = Local::with_service(1, 0, json!({"BAKE_S": 3600})).await;
    release(&local, &app, R1).await;
    let before = local.product_forward().await;
    assert_eq!(before, service.green);
    release(&local, &app, R2).await;
    assert_eq!(local.product_forward().await, service.blue);

    let mark = local.endpoint.mark();
    let run = local
        .run_job(&app, Function::SwitchListener, &rollback(R2))
        .await;
    assert!(run.succeeded(), "{:?}", run.last());
    assert_eq!(
        modify_rule_calls(&local, mark, &service.product_rule),
        1,
        "product moves in one call"
    );
    let alb = local.alb().await;
    assert_eq!(alb.product.forward.sole_target(), Some(before.as_str()));
    assert_eq!(alb.product.forward.targets.len(), 1);
    let instances = Aws::new(&local.config)
        .instances(InstanceQuery::Service(SERVICE))
        .await
        .unwrap();
    for instance in &instances {
        let expected = if instance.release.as_deref() == Some(R1) {
            Stage::Product
        } else {
            Stage::Retired
        };
        assert_eq!(instance.stage, Some(expected), "{instance:?}");
    }

    // Rolling back twice does not flip traffic back.
    let mark = local.endpoint.mark();
    let again = local
        .run_job(&app, Function::SwitchListener, &rollback(R2))
        .await;
    assert!(again.succeeded(), "{:?}", again.last());
    assert_eq!(modify_rule_calls(&local, mark, &service.product_rule), 0);
    assert_eq!(local.product_forward().await, before);
}

#[tokio::test]
async fn every_job_replayed_three_times_leaves_the_same_world() {
    let (local, service, app) = setup(2, 1).await;
    let mut snapshots = Vec::new();
    let mark = local.endpoint.mark();
    for function in [
        Function::Provision,
        Function::RegisterTarget,
        Function::SwitchListener,
        Function::Cleanup,
    ] {
        for attempt in 0..3 {
            let run = local.run_job(&app, function, &params(R1)).await;
            assert!(
                run.succeeded(),
                "{} attempt {attempt}: {:?}",
                function.as_str(),
                run.last()
            );
        }
        snapshots.push(world_snapshot(&local, SERVICE).await);
        // The same event delivered again must not change anything either.
        let run = local.run_job(&app, function, &params(R1)).await;
        assert!(run.succeeded());
        assert_eq!(
            world_snapshot(&local, SERVICE).await,
            *snapshots.last().unwrap(),
            "{}",
            function.as_str()
        );
    }
    let instances = Aws::new(&local.config)
        .instances(InstanceQuery::Service(SERVICE))
        .await
        .unwrap();
    assert_eq!(instances.len(), 2);
    assert_eq!(local.endpoint.count(mark, &["RunInstances"]), 2);
    assert_eq!(
        modify_rule_calls(&local, mark, &service.product_rule),
        1,
        "one switch"
    );
}

#[tokio::test]
async fn two_services_released_together_do_not_touch_each_other() {
    let local = local(0).await;
    let api = fixture::seed_service(&local.clients, &local.base, "mobile-zum-api", 10).await;
    let web = fixture::seed_service(&local.clients, &local.base, "mobile-zum-web", 20).await;
    let app = local.app(&[
        (
            "MOBILE_ZUM_API",
            fixture::settings_json(&local.base, 2, 0, json!({})),
        ),
        (
            "MOBILE_ZUM_WEB",
            fixture::settings_json(&local.base, 1, 0, json!({})),
        ),
    ]);
    let pipeline = |service: &'static str| {
        let (local, app) = (&local, &app);
        async move {
            for function in [
                Function::Provision,
                Function::RegisterTarget,
                Function::SwitchListener,
            ] {
                let run = local
                    .run_job(app, function, &json!({"service": service, "release": R1}))
                    .await;
                assert!(
                    run.succeeded(),
                    "{service} {}: {:?}",
                    function.as_str(),
                    run.last()
                );
            }
        }
    };
    tokio::join!(pipeline("mobile-zum-api"), pipeline("mobile-zum-web"));

    let aws = Aws::new(&local.config);
    for (service, fixture, count) in [("mobile-zum-api", &api, 2), ("mobile-zum-web", &web, 1)] {
        let instances = aws
            .instances(InstanceQuery::Service(service))
            .await
            .unwrap();
        assert_eq!(instances.len(), count, "{service}");
        let alb = aws.alb(service).await.unwrap();
        assert_eq!(
            alb.product.forward.sole_target(),
            Some(fixture.green.as_str())
        );
        let mut registered: Vec<&str> = alb.green.targets.iter().map(|t| t.id.as_str()).collect();
        let mut own: Vec<&str> = instances.iter().map(|i| i.id.as_str()).collect();
        registered.sort();
        own.sort();
        assert_eq!(
            registered, own,
            "{service}: only its own instances in its slot"
        );
    }
}

#[tokio::test]
async fn refusals_leave_the_world_unchanged() {
    let (local, service, app) = setup(1, 0).await;

    // register with no instances
    let before = world_snapshot(&local, SERVICE).await;
    let run = local
        .run_job(&app, Function::RegisterTarget, &params(R1))
        .await;
    assert!(
        run.failure_message()
            .unwrap()
            .contains("run provision first"),
        "{:?}",
        run.last()
    );
    assert_eq!(world_snapshot(&local, SERVICE).await, before);

    // switch to a slot the release is not registered in
    let run = local.run_job(&app, Function::Provision, &params(R1)).await;
    assert!(run.succeeded());
    let before = world_snapshot(&local, SERVICE).await;
    let run = local
        .run_job(&app, Function::SwitchListener, &params(R1))
        .await;
    assert!(
        run.failure_message()
            .unwrap()
            .contains("run register-target first"),
        "{:?}",
        run.last()
    );
    assert_eq!(world_snapshot(&local, SERVICE).await, before);

    // switch to an unhealthy slot: moto reports a stopped instance `unused`
    let run = local
        .run_job(&app, Function::RegisterTarget, &params(R1))
        .await;
    assert!(run.succeeded());
    let id = Aws::new(&local.config)
        .instances(InstanceQuery::Service(SERVICE))
        .await
        .unwrap()[0]
        .id
        .clone();
    local
        .clients
        .ec2
        .stop_instances()
        .instance_ids(&id)
        .send()
        .await
        .unwrap();
    let before = world_snapshot(&local, SERVICE).await;
    let mark = local.endpoint.mark();
    let run = local
        .run_job(&app, Function::SwitchListener, &params(R1))
        .await;
    let message = run.failure_message().expect("refused");
    assert!(
        message.contains("not every target is healthy") && message.contains(&id),
        "{message}"
    );
    assert_eq!(world_snapshot(&local, SERVICE).await, before);
    assert_eq!(
        local
            .endpoint
            .count(mark, &["ModifyRule", "ModifyListener"]),
        0
    );
    assert_eq!(local.product_forward().await, service.blue);

    // rollback with nothing to roll back to: product on green, blue empty
    local
        .clients
        .ec2
        .start_instances()
        .instance_ids(&id)
        .send()
        .await
        .unwrap();
    let run = local
        .run_job(&app, Function::SwitchListener, &params(R1))
        .await;
    assert!(run.succeeded(), "{:?}", run.last());
    let before = world_snapshot(&local, SERVICE).await;
    let run = local
        .run_job(&app, Function::SwitchListener, &rollback(R1))
        .await;
    assert!(
        run.failure_message()
            .unwrap()
            .contains("no registered targets"),
        "{:?}",
        run.last()
    );
    assert_eq!(world_snapshot(&local, SERVICE).await, before);

    // cleanup never takes an instance registered in the product slot, even tagged retired; it
    // tags it back as what it is
    local
        .clients
        .ec2
        .create_tags()
        .resources(&id)
        .tags(
            aws_sdk_ec2::types::Tag::builder()
                .key("cutover:stage")
                .value("retired")
                .build(),
        )
        .tags(
            aws_sdk_ec2::types::Tag::builder()
                .key("cutover:retired-at")
                .value("1")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let before = world_snapshot(&local, SERVICE).await;
    let mark = local.endpoint.mark();
    let run = local.run_job(&app, Function::Cleanup, &params(R1)).await;
    assert!(run.succeeded(), "{:?}", run.last());
    let after = world_snapshot(&local, SERVICE).await;
    for part in ["alb", "dns", "addresses"] {
        assert_eq!(after[part], before[part], "{part}");
    }
    let instance = &after["instances"][0];
    assert_eq!(
        (&instance["id"], &instance["stage"], &instance["retired_at"]),
        (&json!(id), &json!("product"), &Value::Null),
        "{instance}"
    );
    assert_eq!(
        local
            .endpoint
            .count(mark, &["TerminateInstances", "DeregisterTargets"]),
        0
    );
}

#[tokio::test]
async fn a_person_rolls_back_with_one_invocation_and_every_message_fits_the_chat_schema() {
    let (local, service, app) = Local::with_service(1, 0, json!({"BAKE_S": 3600})).await;
    release(&local, &app, R1).await;
    release(&local, &app, R2).await;
    let product = local.product_forward().await;

    // What `make rollback` and the `aws lambda invoke` line in every message send.
    let mark = local.endpoint.mark();
    let response = app
        .handle(
            Function::SwitchListener,
            cutover_tests::sample_event("switch-listener-rollback-by-hand.json"),
        )
        .await
        .expect("handled");
    assert_eq!(response["result"]["outcome"], "succeeded", "{response}");
    assert_eq!(modify_rule_calls(&local, mark, &service.product_rule), 1);
    assert_ne!(local.product_forward().await, product, "product moved back");
    // Nothing for a pipeline to hear: no job, no acknowledgement.
    assert_eq!(
        local
            .endpoint
            .count(mark, &["PutJobSuccessResult", "PutJobFailureResult"]),
        0
    );

    let rolled_back_to = local.product_forward().await;

    // The same command sent again (a retried or doubled `aws lambda invoke`), with and without
    // the release it names: a success that moves nothing and says so. Product stays on the good
    // release, and the mark still names the bad one, so a later alarm cannot undo it either.
    for again in [
        json!({"service": SERVICE, "action": "rollback"}),
        json!({"service": SERVICE, "action": "rollback", "release": R2}),
    ] {
        let mark = local.endpoint.mark();
        let response = app
            .handle(Function::SwitchListener, again)
            .await
            .expect("handled");
        assert_eq!(response["result"]["outcome"], "succeeded", "{response}");
        assert!(
            response
                .to_string()
                .contains("already rolled back from release"),
            "{response}"
        );
        assert_eq!(modify_rule_calls(&local, mark, &service.product_rule), 0);
        assert_eq!(local.product_forward().await, rolled_back_to);
        assert_eq!(
            local.alb().await.product.rolled_back.map(|m| m.release),
            Some(R2.to_owned())
        );
    }
    // Naming a release that does not serve is refused, naming the one that does.
    let mark = local.endpoint.mark();
    let response = app
        .handle(
            Function::SwitchListener,
            json!({"service": SERVICE, "action": "rollback", "release": R1}),
        )
        .await
        .expect("handled");
    assert_eq!(response["result"]["outcome"], "failed", "{response}");
    assert!(
        response
            .to_string()
            .contains(&format!("release {R1} serves")),
        "{response}"
    );
    assert!(local.endpoint.mutations(mark).is_empty());

    let messages = local.endpoint.published_messages();
    assert!(messages.len() >= 8, "{}", messages.len());
    let mut threads: std::collections::BTreeMap<String, usize> = Default::default();
    for (subject, message) in &messages {
        // MessageStructure json: text for email, the chat event by default.
        let email = message["email"].as_str().expect("email text");
        assert!(email.contains("service: mobile-zum-api"), "{email}");
        let chat: Value = serde_json::from_str(message["default"].as_str().unwrap()).unwrap();
        assert_eq!(chat["version"], "1.0", "{chat}");
        assert_eq!(chat["source"], "custom");
        let content = &chat["content"];
        assert_eq!(content["textType"], "client-markdown");
        assert!(
            content["title"]
                .as_str()
                .is_some_and(|t| t.contains(SERVICE)),
            "{chat}"
        );
        assert!(content["description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()));
        let next = content["nextSteps"].as_array().unwrap();
        assert!(
            next.iter()
                .any(|s| s.as_str().unwrap().contains(r#""action": "rollback""#)),
            "every message carries the rollback command: {chat}"
        );
        let metadata = &chat["metadata"];
        assert_eq!(metadata["summary"], json!(subject));
        let thread = metadata["threadId"].as_str().unwrap().to_owned();
        *threads.entry(thread).or_default() += 1;
    }
    // Each release's messages share a thread; the rollbacks by hand of R2 (the first and the two
    // repeats) thread under R2, the release they undo, not under a sweep; the refused one that
    // named R1 under R1.
    assert_eq!(
        threads[&format!("cutover-{SERVICE}-{}", &R1[..8])],
        3 + 1,
        "{threads:?}"
    );
    assert_eq!(
        threads[&format!("cutover-{SERVICE}-{}", &R2[..8])],
        3 + 3,
        "{threads:?}"
    );
    assert!(!threads.keys().any(|t| t.ends_with("sweep")), "{threads:?}");
}

/// A mistyped EIP in settings that names another system's address (not tagged for the service)
/// fails provision by name before anything is launched, and IAM would refuse the move anyway.
#[tokio::test]
async fn an_address_of_another_system_in_settings_is_refused_and_nothing_launches() {
    let local = local(0).await;
    fixture::seed_service(&local.clients, &local.base, SERVICE, 10).await;
    let theirs = local
        .clients
        .ec2
        .allocate_address()
        .domain(aws_sdk_ec2::types::DomainType::Vpc)
        .send()
        .await
        .unwrap()
        .allocation_id()
        .unwrap()
        .to_owned();
    let app = local.app(&[(
        "MOBILE_ZUM_API",
        fixture::settings_json(&local.base, 1, 0, json!({"EIP": [theirs]})),
    )]);
    let mark = local.endpoint.mark();
    let run = local.run_job(&app, Function::Provision, &params(R1)).await;
    let message = run.failure_message().expect("refused").to_owned();
    assert!(
        message.contains(&theirs) && message.contains("cutover:service=mobile-zum-api"),
        "{message}"
    );
    assert!(
        local.endpoint.mutations(mark).is_empty(),
        "{:?}",
        local.endpoint.mutations(mark)
    );
}
