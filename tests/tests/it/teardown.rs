//! A service's last day (`make destroy-service`, infra/destroy_service.py) against the local
//! endpoint: after a release with addresses and records, nothing of the service is left running
//! or billed, and a second service is untouched.

use std::process::Command;

use cutover::aws::{Aws, InstanceQuery};
use cutover_tests::moto::repo_root;
use cutover_tests::{fixture, local, params, R1, SERVICE};
use serde_json::json;

const OTHER: &str = "news-api";

#[tokio::test]
async fn destroying_a_service_leaves_nothing_of_it_and_touches_no_other() {
    let local = local(2).await;
    fixture::seed_service(&local.clients, &local.base, SERVICE, 10).await;
    fixture::seed_service(&local.clients, &local.base, OTHER, 30).await;
    let settings = fixture::settings_json(&local.base, 2, 2, json!({}));
    fixture::put_settings_parameter(&local.clients, SERVICE, &settings).await;
    let other = fixture::settings_json(&local.base, 1, 0, json!({}));
    fixture::put_settings_parameter(&local.clients, OTHER, &other).await;
    let app = local.app(&[]);
    local.release(&app, &params(R1)).await;
    let mut theirs = params(R1);
    theirs["service"] = json!(OTHER);
    local.release(&app, &theirs).await;
    let aws = Aws::new(&local.config);
    let zone = &local.base.zone_id;
    assert_eq!(
        aws.instances(InstanceQuery::Service(SERVICE))
            .await
            .unwrap()
            .len(),
        2
    );
    assert!(!aws.dns(zone, SERVICE).await.unwrap().records.is_empty());

    let run = destroy(&local.endpoint.url).await;
    let said = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        said.contains(&format!("stack {SERVICE} does not exist")),
        "{said}"
    );

    let live = |instances: Vec<cutover::world::Instance>| {
        instances.into_iter().filter(|i| !i.state.is_dead()).count()
    };
    assert_eq!(
        live(
            aws.instances(InstanceQuery::Service(SERVICE))
                .await
                .unwrap()
        ),
        0
    );
    assert_eq!(
        live(aws.instances(InstanceQuery::Service(OTHER)).await.unwrap()),
        1
    );
    let addresses = local.clients.ec2.describe_addresses().send().await.unwrap();
    assert!(
        addresses.addresses().is_empty(),
        "{:?}",
        addresses.addresses()
    );
    assert!(aws.dns(zone, SERVICE).await.unwrap().records.is_empty());
    assert!(!aws.dns(zone, OTHER).await.unwrap().records.is_empty());

    // Run again (after a failure half-way, say): nothing left to do, and it says so.
    let again = destroy(&local.endpoint.url).await;
    let said = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{said}");
    assert!(said.contains("terminated 0 instance(s)"), "{said}");
}

/// `make destroy-service SERVICE=…` through the local endpoint, off the runtime's thread (the
/// endpoint answers on it).
async fn destroy(endpoint: &str) -> std::process::Output {
    let python = repo_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `make setup`",
        python.display()
    );
    let endpoint = endpoint.to_owned();
    tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(repo_root().join("infra/destroy_service.py"))
            .arg(SERVICE)
            .env("AWS_ENDPOINT_URL", endpoint)
            .env("AWS_ACCESS_KEY_ID", "local")
            .env("AWS_SECRET_ACCESS_KEY", "local")
            .env("AWS_DEFAULT_REGION", fixture::REGION)
            .output()
            .expect("python runs")
    })
    .await
    .expect("the destroy script ran")
}
