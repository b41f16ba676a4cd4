//! A corpus of bad input: malformed events and UserParameters, unknown services, bad settings,
//! missing or duplicated tagged resources. Every case gets a message naming the problem, no
//! panic, and no change to the world (no mutating call reaches the endpoint).

use cutover::Function;
use cutover_tests::{fixture, job_event, local, sample_event, AckKind, Local, SERVICE};
use serde_json::{json, Value};

const RELEASE: &str = "a1b2c3d4-5678-90ab-cdef-111122223333";

enum Input {
    /// A raw event, as EventBridge or a misconfigured caller would send it.
    Event(Value),
    /// A job whose `UserParameters` is this string.
    Params(String),
    /// A job event rewritten by this function.
    Job(fn(&mut Value)),
}

struct Case {
    name: &'static str,
    function: Function,
    input: Input,
    expect: &'static str,
}

fn params(value: Value) -> Input {
    Input::Params(value.to_string())
}

fn good() -> Value {
    json!({"service": SERVICE, "release": RELEASE})
}

fn cases() -> Vec<Case> {
    use Function::*;
    let with = |key: &str, value: Value| {
        let mut p = good();
        p[key] = value;
        params(p)
    };
    let mut failed_event = sample_event("cleanup-pipeline-failed.json");
    failed_event["detail"]
        .as_object_mut()
        .unwrap()
        .remove("execution-id");
    let mut bad_release_event = sample_event("cleanup-pipeline-failed.json");
    bad_release_event["detail"]["execution-id"] = json!("../etc");
    let mut wrong_type_event = sample_event("cleanup-pipeline-failed.json");
    wrong_type_event["detail"] = json!("FAILED");
    vec![
        Case {
            name: "empty object",
            function: Provision,
            input: Input::Event(json!({})),
            expect: "neither a CodePipeline job",
        },
        Case {
            name: "a list",
            function: Provision,
            input: Input::Event(json!([1, 2])),
            expect: "neither a CodePipeline job",
        },
        Case {
            name: "a string",
            function: Cleanup,
            input: Input::Event(json!("go")),
            expect: "neither a CodePipeline job",
        },
        Case {
            name: "job without id",
            function: Provision,
            input: Input::Event(json!({"CodePipeline.job": {"data": {}}})),
            expect: "CodePipeline.job.id",
        },
        Case {
            name: "unknown detail-type",
            function: Cleanup,
            input: Input::Event(
                json!({"detail-type": "EC2 Instance State-change Notification", "detail": {}}),
            ),
            expect: "unsupported EventBridge detail-type",
        },
        Case {
            name: "schedule sent to provision",
            function: Provision,
            input: Input::Event(sample_event("cleanup-schedule.json")),
            expect: "does not accept this event",
        },
        Case {
            name: "execution event sent to switch",
            function: SwitchListener,
            input: Input::Event(sample_event("cleanup-pipeline-failed.json")),
            expect: "does not accept this event",
        },
        Case {
            name: "execution event without execution-id",
            function: Cleanup,
            input: Input::Event(failed_event),
            expect: "execution-id",
        },
        Case {
            name: "execution event with a path as execution-id",
            function: Cleanup,
            input: Input::Event(bad_release_event),
            expect: "not a valid release id",
        },
        Case {
            name: "execution event with a string detail",
            function: Cleanup,
            input: Input::Event(wrong_type_event),
            expect: "pipeline execution state change event",
        },
        Case {
            name: "no UserParameters",
            function: Provision,
            input: Input::Job(|e| {
                e["CodePipeline.job"]["data"]["actionConfiguration"]["configuration"]
                    .as_object_mut()
                    .unwrap()
                    .remove("UserParameters");
            }),
            expect: "UserParameters is missing",
        },
        Case {
            name: "job data without actionConfiguration",
            function: RegisterTarget,
            input: Input::Job(|e| {
                e["CodePipeline.job"]["data"]
                    .as_object_mut()
                    .unwrap()
                    .remove("actionConfiguration");
            }),
            expect: "does not have the job event's shape",
        },
        Case {
            name: "UserParameters not JSON",
            function: Provision,
            input: Input::Params("service=mobile-zum-api".into()),
            expect: "UserParameters is not valid",
        },
        Case {
            name: "UserParameters a JSON list",
            function: Provision,
            input: Input::Params("[\"mobile-zum-api\"]".into()),
            expect: "UserParameters is not valid",
        },
        Case {
            name: "misspelt key",
            function: Provision,
            input: params(json!({"servce": SERVICE, "release": RELEASE})),
            expect: "unknown field `servce`",
        },
        Case {
            name: "no release",
            function: RegisterTarget,
            input: params(json!({"service": SERVICE})),
            expect: "missing field `release`",
        },
        Case {
            name: "no service",
            function: RegisterTarget,
            input: params(json!({"release": RELEASE})),
            expect: "missing field `service`",
        },
        Case {
            name: "service in capitals",
            function: Provision,
            input: with("service", json!("Mobile-Zum-Api")),
            expect: "not a valid service name",
        },
        Case {
            name: "service named after a reserved variable",
            function: Provision,
            input: with("service", json!("aws-region")),
            expect: "reserved variable",
        },
        Case {
            name: "release not resolved",
            function: Provision,
            input: with("release", json!("#{codepipeline.PipelineExecutionId}")),
            expect: "not resolved",
        },
        Case {
            name: "release empty",
            function: SwitchListener,
            input: with("release", json!("")),
            expect: "not a valid release id",
        },
        Case {
            name: "unknown action",
            function: SwitchListener,
            input: with("action", json!("explode")),
            expect: "unknown variant `explode`",
        },
        Case {
            name: "dry_run not a boolean",
            function: SwitchListener,
            input: with("dry_run", json!("yes")),
            expect: "invalid type",
        },
        Case {
            name: "garbage continuation token",
            function: Provision,
            input: Input::Job(|e| {
                e["CodePipeline.job"]["data"]["continuationToken"] = json!("resume-please")
            }),
            expect: "continuationToken",
        },
        Case {
            name: "continuation token from the future",
            function: RegisterTarget,
            input: Input::Job(|e| {
                e["CodePipeline.job"]["data"]["continuationToken"] =
                    json!(r#"{"v":9,"phase":"healthy","since":1}"#)
            }),
            expect: "version",
        },
        Case {
            name: "unknown service",
            function: Provision,
            input: with("service", json!("search-api")),
            expect: "no settings variable SEARCH_API",
        },
        Case {
            name: "settings not an object",
            function: Provision,
            input: with("service", json!("broken-json")),
            expect: "BROKEN_JSON: is neither a JSON object",
        },
        Case {
            name: "settings without AMI",
            function: Provision,
            input: with("service", json!("no-ami")),
            expect: "NO_AMI, key AMI: is required",
        },
        Case {
            name: "settings with empty SUBNET",
            function: RegisterTarget,
            input: with("service", json!("no-subnets")),
            expect: "NO_SUBNETS, key SUBNET: must not be an empty list",
        },
        Case {
            name: "settings with COUNT 0",
            function: Provision,
            input: with("service", json!("zero-count")),
            expect: "ZERO_COUNT, key COUNT",
        },
        Case {
            name: "settings with a public IP as EIP",
            function: Provision,
            input: with("service", json!("bad-eip")),
            expect: "BAD_EIP, key EIP",
        },
        Case {
            name: "settings with a domain as DNS_ZONE",
            function: SwitchListener,
            input: with("service", json!("bad-zone")),
            expect: "BAD_ZONE, key DNS_ZONE",
        },
        Case {
            name: "settings with a typo key",
            function: Cleanup,
            input: with("service", json!("typo-key")),
            expect: "TYPO_KEY, key INSTANCETYPE: unknown key",
        },
        Case {
            name: "asg settings that also name security groups",
            function: Provision,
            input: with("service", json!("group-with-sg")),
            expect: "GROUP_WITH_SG, key SG: is not used with FLEET=asg",
        },
        Case {
            name: "ami not an image id",
            function: Provision,
            input: with("ami", json!("ubuntu-24.04")),
            expect: "UserParameters.ami: `ubuntu-24.04` is not an image id",
        },
        Case {
            name: "service with no target groups",
            function: Provision,
            input: with("service", json!("no-alb")),
            expect: "no target group tagged cutover:service=no-alb, cutover:slot=blue",
        },
        Case {
            name: "service with two product rules",
            function: RegisterTarget,
            input: with("service", json!("two-products")),
            expect: "2 routes tagged cutover:route=product",
        },
        Case {
            name: "service with no pre-product rule",
            function: SwitchListener,
            input: with("service", json!("no-qa")),
            expect: "cutover:route=pre-product",
        },
    ]
}

/// Services whose settings or ALB are broken in one way each.
async fn seed_broken_services(local: &Local) -> Vec<(&'static str, String)> {
    let good = |extra: Value| fixture::settings_json(&local.base, 1, 0, extra);
    let clients = &local.clients;
    fixture::seed_service(clients, &local.base, SERVICE, 10).await;
    let two = fixture::seed_service(clients, &local.base, "two-products", 20).await;
    // A second rule tagged as the product route.
    clients
        .elb
        .add_tags()
        .resource_arns(&two.pre_product_rule)
        .tags(
            aws_sdk_elasticloadbalancingv2::types::Tag::builder()
                .key("cutover:route")
                .value("product")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let no_qa = fixture::seed_service(clients, &local.base, "no-qa", 30).await;
    clients
        .elb
        .delete_rule()
        .rule_arn(&no_qa.pre_product_rule)
        .send()
        .await
        .unwrap();
    let mut without_ami: Value = serde_json::from_str(&good(json!({}))).unwrap();
    without_ami.as_object_mut().unwrap().remove("AMI");
    vec![
        ("MOBILE_ZUM_API", good(json!({}))),
        ("BROKEN_JSON", "{'AMI': 'ami-1',".into()),
        ("NO_AMI", without_ami.to_string()),
        ("NO_SUBNETS", good(json!({"SUBNET": []}))),
        ("ZERO_COUNT", good(json!({"COUNT": 0}))),
        ("BAD_EIP", good(json!({"EIP": "3.3.3.3"}))),
        ("BAD_ZONE", good(json!({"DNS_ZONE": "internal.example"}))),
        ("TYPO_KEY", good(json!({"INSTANCETYPE": "t3.small"}))),
        (
            "GROUP_WITH_SG",
            good(json!({"FLEET": "asg", "LAUNCH_TEMPLATE": "web", "INSTANCE_TYPE": null})),
        ),
        ("NO_ALB", good(json!({}))),
        ("TWO_PRODUCTS", good(json!({}))),
        ("NO_QA", good(json!({}))),
    ]
}

#[tokio::test]
async fn every_bad_input_is_refused_by_name_and_changes_nothing() {
    let local = local(0).await;
    let settings = seed_broken_services(&local).await;
    let settings: Vec<(&str, String)> = settings.iter().map(|(k, v)| (*k, v.clone())).collect();
    let app = local.app(&settings);
    let cases = cases();
    assert!(cases.len() >= 30, "{} cases", cases.len());
    for case in cases {
        let mark = local.endpoint.mark();
        let job_id = format!("bad-{}", case.name.replace(' ', "-"));
        let event = match &case.input {
            Input::Event(event) => event.clone(),
            Input::Params(raw) => {
                let mut event = job_event(case.function, &job_id, &good(), None);
                event["CodePipeline.job"]["data"]["actionConfiguration"]["configuration"]
                    ["UserParameters"] = json!(raw);
                event
            }
            Input::Job(rewrite) => {
                let mut event = job_event(case.function, &job_id, &good(), None);
                rewrite(&mut event);
                event
            }
        };
        let message = match app.handle(case.function, event).await {
            Err(error) => error.to_string(),
            Ok(_) => {
                let ack = local
                    .endpoint
                    .ack_for(&job_id)
                    .unwrap_or_else(|| panic!("{}: not acknowledged", case.name));
                assert_eq!(ack.kind, AckKind::Failure, "{}: {ack:?}", case.name);
                ack.message.unwrap_or_default()
            }
        };
        assert!(
            message.contains(case.expect),
            "{}: `{message}` lacks `{}`",
            case.name,
            case.expect
        );
        let mutations = local.endpoint.mutations(mark);
        assert!(
            mutations.is_empty(),
            "{}: changed the world: {mutations:?}",
            case.name
        );
    }
}
