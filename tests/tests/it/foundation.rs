//! The foundation against a real local endpoint: the fixture world is found by tags through the
//! library's AWS module, and a failing handler still acknowledges its job.

use cutover::aws::{Aws, InstanceQuery};
use cutover::event::Invocation;
use cutover::world::{RouteRole, Slot};
use cutover::Function;
use cutover_tests::{events_dir, fixture, local, sample_event, AckKind, SERVICE, VARIABLE};
use serde_json::json;

#[test]
fn every_sample_event_parses() {
    let mut seen = 0;
    for entry in std::fs::read_dir(events_dir()).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_str().unwrap().to_owned();
        let invocation =
            Invocation::parse(sample_event(&file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        match invocation {
            Invocation::Job { request, .. } => {
                let request = request.unwrap_or_else(|e| panic!("{file}: {e}"));
                assert_eq!(request.service.as_str(), SERVICE, "{file}");
                assert_eq!(
                    request.progress.is_some(),
                    file.contains("continuation"),
                    "{file}"
                );
                assert_eq!(request.dry_run, file.contains("dry-run"), "{file}");
            }
            Invocation::PipelineExecution { state, .. } => {
                assert!(file.contains(&state.to_lowercase()), "{file}: {state}")
            }
            Invocation::Schedule => assert!(file.contains("schedule"), "{file}"),
            Invocation::AlarmChange { alarm, state, at } => {
                assert_eq!(
                    (alarm.as_str(), state.as_str(), at),
                    ("cutover-mobile-zum-api-5xx", "ALARM", Some(1_796_014_800))
                );
                assert!(file.contains("alarm"), "{file}");
            }
            Invocation::Rollback { service, release } => {
                assert_eq!((service.as_str(), release), (SERVICE, None), "{file}");
                assert!(file.contains("rollback-by-hand"), "{file}");
            }
        }
        seen += 1;
    }
    assert!(seen >= 8, "only {seen} sample events");
}

#[tokio::test]
async fn the_seeded_world_is_found_by_its_tags() {
    let local = local(1).await;
    let service = fixture::seed_service(&local.clients, &local.base, SERVICE, 10).await;
    let other = fixture::seed_service(&local.clients, &local.base, "mobile-zum-web", 20).await;
    let aws = Aws::new(&local.config);

    let alb = aws.alb(SERVICE).await.expect("the service's ALB pieces");
    assert_eq!(alb.blue.arn, service.blue);
    assert_eq!(alb.green.arn, service.green);
    assert_eq!(alb.product.arn, service.product_rule);
    assert_eq!(alb.pre_product.arn, service.pre_product_rule);
    assert_eq!(alb.product.role, RouteRole::Product);
    assert_eq!(alb.product_slot().unwrap(), Slot::Blue);
    assert_eq!(
        alb.pre_product.forward.sole_target(),
        Some(service.green.as_str())
    );
    assert!(
        alb.pre_product
            .conditions
            .iter()
            .any(|c| c.contains(&service.qa_host)),
        "{:?}",
        alb.pre_product.conditions
    );
    assert_ne!(
        alb.blue.arn, other.blue,
        "services do not see each other's groups"
    );

    let dns = aws.dns(&local.base.zone_id, SERVICE).await.unwrap();
    assert_eq!(dns.zone_name, format!("{}.", fixture::ZONE_NAME));
    assert!(dns.records.is_empty());

    let addresses = aws.addresses(&local.base.elastic_ips).await.unwrap();
    assert_eq!(addresses.len(), 1);
    assert!(addresses[0].instance_id.is_none());

    // An instance tagged for the service is found by tag; an untagged one is not.
    for tagged in [true, false] {
        let mut run = local
            .clients
            .ec2
            .run_instances()
            .image_id(&local.base.ami)
            .min_count(1)
            .max_count(1)
            .subnet_id(&local.base.subnets[0]);
        if tagged {
            run = run.tag_specifications(
                aws_sdk_ec2::types::TagSpecification::builder()
                    .resource_type(aws_sdk_ec2::types::ResourceType::Instance)
                    .tags(
                        aws_sdk_ec2::types::Tag::builder()
                            .key("cutover:service")
                            .value(SERVICE)
                            .build(),
                    )
                    .tags(
                        aws_sdk_ec2::types::Tag::builder()
                            .key("cutover:stage")
                            .value("product")
                            .build(),
                    )
                    .build(),
            );
        }
        run.send().await.unwrap();
    }
    let instances = aws
        .instances(InstanceQuery::Service(SERVICE))
        .await
        .unwrap();
    assert_eq!(instances.len(), 1);
    assert_eq!(instances[0].stage, Some(cutover::world::Stage::Product));
    assert_eq!(
        aws.instances(InstanceQuery::AllServices)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(aws
        .instances(InstanceQuery::Service("mobile-zum-web"))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_failing_handler_still_fails_its_job_at_the_endpoint() {
    let local = local(0).await;
    fixture::seed_service(&local.clients, &local.base, SERVICE, 10).await;
    let bad_settings =
        r#"{"AMI": "ami-1", "INSTANCE_TYPE": "t3.small", "SUBNET": [], "SG": "sg-1"}"#.to_owned();
    let app = local.app(&[(VARIABLE, bad_settings)]);
    let params = json!({"service": SERVICE, "release": "r-1"});

    let run = local.run_job(&app, Function::Provision, &params).await;
    let message = run.failure_message().expect("the job is failed");
    assert!(
        message.contains(VARIABLE) && message.contains("SUBNET"),
        "{message}"
    );

    let unknown = local
        .run_job(
            &app,
            Function::RegisterTarget,
            &json!({"service": "search", "release": "r-1"}),
        )
        .await;
    let message = unknown.failure_message().expect("the job is failed");
    assert!(
        message.contains("unknown service `search`") && message.contains("SEARCH"),
        "{message}"
    );

    let malformed = local
        .run_job(&app, Function::SwitchListener, &json!({"service": SERVICE}))
        .await;
    let message = malformed.failure_message().expect("the job is failed");
    assert!(
        message.contains("UserParameters") && message.contains("release"),
        "{message}"
    );

    // Nothing was launched by any of them.
    let instances = Aws::new(&local.config)
        .instances(InstanceQuery::AllServices)
        .await
        .unwrap();
    assert!(instances.is_empty(), "{instances:?}");
    assert_eq!(local.endpoint.count(0, &["RunInstances", "ModifyRule"]), 0);

    // A duplicate delivery of an acknowledged job is not an error.
    let job_id = run.last().job_id.clone();
    let event = cutover_tests::job_event(Function::Provision, &job_id, &params, None);
    let response = app.handle(Function::Provision, event).await.unwrap();
    assert_eq!(response["acknowledged"], json!(false));
    assert_eq!(
        local
            .endpoint
            .acks()
            .iter()
            .filter(|a| a.job_id == job_id)
            .count(),
        1
    );
    assert!(local
        .endpoint
        .acks()
        .iter()
        .all(|a| a.kind == AckKind::Failure));
}
