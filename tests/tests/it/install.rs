//! `INSTALL_MARK`: a release whose install reached only some of its instances (CodeDeploy counts
//! a deployment a success once its minimum of healthy hosts succeeded, which can never be all of
//! them) is refused by register-target at once, naming the instances, with nothing changed.

use cutover::aws::{Aws, InstanceQuery};
use cutover::world::TAG_INSTALLED;
use cutover::Function;
use cutover_tests::{params, Local, R1};
use serde_json::json;

/// What the install hook (`infra/codedeploy/mark-installed.sh`) does on an instance.
async fn mark_installed(local: &Local, instance_id: &str, release: &str) {
    local
        .clients
        .ec2
        .create_tags()
        .resources(instance_id)
        .tags(
            aws_sdk_ec2::types::Tag::builder()
                .key(TAG_INSTALLED)
                .value(release)
                .build(),
        )
        .send()
        .await
        .expect("the hook's CreateTags");
}

#[tokio::test]
async fn a_half_installed_release_is_refused_by_name_and_registers_once_every_instance_is_marked() {
    let (local, service, app) = Local::with_service(2, 0, json!({"INSTALL_MARK": true})).await;
    let run = local.run_job(&app, Function::Provision, &params(R1)).await;
    assert!(run.succeeded(), "{:?}", run.last());
    let fleet = Aws::new(&local.config)
        .instances(InstanceQuery::Release(R1))
        .await
        .unwrap();
    assert_eq!(fleet.len(), 2);
    // The install succeeded on the first instance only.
    mark_installed(&local, &fleet[0].id, R1).await;
    let mark = local.endpoint.mark();
    let refused = local
        .run_job(&app, Function::RegisterTarget, &params(R1))
        .await;
    let message = refused
        .failure_message()
        .unwrap_or_else(|| panic!("refused: {:?}", refused.last()))
        .to_owned();
    assert!(
        message.contains(&fleet[1].id) && !message.contains(&fleet[0].id),
        "{message}"
    );
    let mutating: Vec<String> = local.endpoint.calls()[mark..]
        .iter()
        .filter(|c| !c.action.starts_with("Describe") && !c.action.starts_with("Get"))
        .filter(|c| c.service != "codepipeline" && c.service != "sns")
        .map(|c| c.action.clone())
        .collect();
    assert!(mutating.is_empty(), "nothing changed: {mutating:?}");
    assert!(
        local.alb().await.product.lock.is_none(),
        "the lock was not taken"
    );

    // The stage is retried once the second instance has the build.
    mark_installed(&local, &fleet[1].id, R1).await;
    let run = local
        .run_job(&app, Function::RegisterTarget, &params(R1))
        .await;
    assert!(run.succeeded(), "{:?}", run.last());
    let registered = local.alb().await.green.targets.len();
    assert_eq!(registered, 2, "both in {}", service.green);
}
