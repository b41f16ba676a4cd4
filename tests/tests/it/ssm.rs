//! Settings past Lambda's 4 KB environment limit: the SSM parameter `/cutover/<service>`, read
//! on first use (all at once, paginated), re-read by each job of its service, the variable
//! winning when both exist, a bad parameter failing only its own service.

use cutover::Function;
use cutover_tests::{fixture, job_event, local, Local, SERVICE, VARIABLE};
use serde_json::{json, Value};

const RELEASE: &str = "55555555-aaaa-4bbb-8ccc-000000000005";

/// A dry-run provision of `service`: the plan, or why it would refuse, changing nothing.
async fn plan_provision(local: &Local, app: &cutover::App, service: &str) -> Value {
    let job = local.next_job_id();
    let params = json!({"service": service, "release": RELEASE, "dry_run": true});
    let response = app
        .handle(
            Function::Provision,
            job_event(Function::Provision, &job, &params, None),
        )
        .await
        .expect("handled");
    response["result"].clone()
}

fn launches(result: &Value) -> usize {
    result["steps"]
        .as_array()
        .map(|steps| {
            steps
                .iter()
                .filter(|s| s.as_str().unwrap().starts_with("launch "))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn forty_services_from_parameters_one_overridden_by_its_variable_one_malformed() {
    let local = local(0).await;
    fixture::seed_service(&local.clients, &local.base, SERVICE, 10).await;
    fixture::seed_service(&local.clients, &local.base, "svc-07", 20).await;
    for n in 1..=40 {
        let service = format!("svc-{n:02}");
        let value = if n == 13 {
            // The seed's Python-literal form, with a COUNT that is not a number.
            r#"{'AMI': 'ami-1', 'INSTANCE_TYPE': 't3.small', 'SUBNET': "['subnet-a']", 'SG': 'sg-1', 'COUNT': 'many'}"#
                .to_owned()
        } else {
            fixture::settings_json(&local.base, 3, 0, json!({"DNS_ZONE": null}))
        };
        fixture::put_settings_parameter(&local.clients, &service, &value).await;
    }
    // mobile-zum-api has both: its variable (COUNT 2) wins over its parameter (COUNT 5).
    let parameter = fixture::settings_json(&local.base, 5, 0, json!({}));
    fixture::put_settings_parameter(&local.clients, SERVICE, &parameter).await;
    let variable = fixture::settings_json(&local.base, 2, 0, json!({}));
    let app = local.app(&[(VARIABLE, variable)]);
    let mark = local.endpoint.mark();

    assert_eq!(launches(&plan_provision(&local, &app, "svc-07").await), 3);
    // A job reads its own parameter (one call, beside its slots and routes), never the 41 of
    // every service in pages: a cold start pays one round for its settings, not five.
    assert_eq!(local.endpoint.count(mark, &["GetParametersByPath"]), 0);
    assert_eq!(
        local.endpoint.count(mark, &["GetParameter"]),
        1,
        "read once: what needs it is read as soon as it is in, not beside a second read"
    );

    assert_eq!(launches(&plan_provision(&local, &app, SERVICE).await), 2);

    let malformed = plan_provision(&local, &app, "svc-13").await;
    let why = malformed["would_fail"].as_str().unwrap_or_default();
    assert!(
        why.contains("settings parameter /cutover/svc-13") && why.contains("COUNT"),
        "{malformed}"
    );
    // Another service is untouched by it: its settings are found (its ALB is what is missing).
    let no_alb = plan_provision(&local, &app, "svc-29").await;
    let why = no_alb.to_string();
    assert!(
        why.contains("target group") && !why.contains("settings"),
        "{no_alb}"
    );

    let unknown = plan_provision(&local, &app, "svc-99").await;
    let why = unknown["would_fail"].as_str().unwrap_or_default();
    assert!(
        why.contains("SVC_99") && why.contains("/cutover/svc-99"),
        "{unknown}"
    );

    // Only the jobs' own parameters, one at a time.
    assert_eq!(local.endpoint.count(mark, &["GetParametersByPath"]), 0);
    assert!(local.endpoint.count(mark, &["GetParameter"]) >= 2);

    // An edited parameter takes effect at the next job of a warm function.
    let edited = fixture::settings_json(&local.base, 1, 0, json!({"DNS_ZONE": null}));
    fixture::put_settings_parameter(&local.clients, "svc-07", &edited).await;
    assert_eq!(launches(&plan_provision(&local, &app, "svc-07").await), 1);
    // A parameter created after the first read is found by the one read for an unknown service.
    let late = fixture::settings_json(&local.base, 4, 0, json!({}));
    fixture::put_settings_parameter(&local.clients, "svc-41", &late).await;
    let found = plan_provision(&local, &app, "svc-41").await;
    assert!(!found.to_string().contains("unknown service"), "{found}");
}
