//! Nothing lost without a trace: every publisher may use the topic and its key, every failed
//! invocation and undelivered event has somewhere to go and an alarm that says so, and the alarm
//! rule takes only services' alarms.

use serde_json::{json, Value};

use super::infra::iam::{allows, Request};
use super::infra::load;

const ACCOUNT: &str = "123456789012";
const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:cutover-releases";
const KEY: &str = "arn:aws:kms:us-east-1:123456789012:key/cutover";

/// A template value as the string it becomes in this account (the topic and its key by name).
fn resolve(value: &Value) -> Value {
    match value {
        Value::Array(items) => Value::from(items.iter().map(resolve).collect::<Vec<_>>()),
        Value::Object(map) if map.len() == 1 => {
            let (key, arg) = map.iter().next().unwrap();
            let text = arg.to_string();
            match key.as_str() {
                "Ref" if text.contains("ReleaseTopic") => json!(TOPIC),
                "Ref" if text.contains("AccountId") => json!(ACCOUNT),
                "Fn::GetAtt" if text.contains("ReleaseTopicKey") => json!(KEY),
                "Fn::ImportValue" if text.contains("ReleaseTopicArn") => json!(TOPIC),
                "Fn::ImportValue" if text.contains("ReleaseTopicKeyArn") => json!(KEY),
                "Fn::Sub" => json!(arg
                    .as_str()
                    .unwrap_or_default()
                    .replace("${AWS::Partition}", "aws")
                    .replace("${AWS::AccountId}", ACCOUNT)
                    .replace("${AWS::Region}", "us-east-1")),
                _ => Value::Object(map.iter().map(|(k, v)| (k.clone(), resolve(v))).collect()),
            }
        }
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), resolve(v))).collect())
        }
        other => other.clone(),
    }
}

fn statements_of(document: &Value) -> Vec<Value> {
    document["Statement"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(resolve)
        .collect()
}

/// Whether a resource policy lets a service principal make `request`.
fn resource_policy_allows(policy: &[Value], service: &str, request: &Request) -> bool {
    policy.iter().any(|statement| {
        let principals = statement["Principal"]["Service"].to_string();
        principals.contains(service) && allows(statement, request)
    })
}

fn request(action: &str, resource: &str, context: &[(&str, &str)]) -> Request {
    Request {
        action: action.to_owned(),
        resource: resource.to_owned(),
        context: context
            .iter()
            .map(|(k, v)| ((*k).to_owned(), vec![(*v).to_owned()]))
            .collect(),
    }
}

#[test]
fn every_publisher_may_use_the_topic_and_its_key() {
    let (shared, service) = (load("template.yaml"), load("service.yaml"));
    let resources = &shared["Resources"];
    let topic_policy =
        statements_of(&resources["ReleaseTopicPolicy"]["Properties"]["PolicyDocument"]);
    let key_policy = statements_of(&resources["ReleaseTopicKey"]["Properties"]["KeyPolicy"]);
    let encrypt = ["kms:GenerateDataKey", "kms:Decrypt"];

    // EventBridge (stage messages) and CloudWatch (alarms) publish as services. The topic policy
    // may ask where they publish from; KMS is asked with no source keys, as reports say.
    for service_principal in ["events.amazonaws.com", "cloudwatch.amazonaws.com"] {
        let publish = request(
            "sns:Publish",
            TOPIC,
            &[
                ("aws:SourceAccount", ACCOUNT),
                (
                    "aws:SourceArn",
                    "arn:aws:events:us-east-1:123456789012:rule/x",
                ),
            ],
        );
        assert!(
            resource_policy_allows(&topic_policy, service_principal, &publish),
            "{service_principal} may not publish to the topic"
        );
        for action in encrypt {
            assert!(
                resource_policy_allows(&key_policy, service_principal, &request(action, KEY, &[])),
                "{service_principal} may not {action} with the topic's key without source keys"
            );
        }
    }

    // The functions and the pipelines publish as roles: their own grants, and a key policy that
    // lets IAM decide for the account's roles.
    let iam_decides = key_policy.iter().any(|s| {
        s["Principal"]["AWS"].as_str() == Some(&format!("arn:aws:iam::{ACCOUNT}:root"))
            && s["Action"] == "kms:*"
    });
    assert!(
        iam_decides,
        "the key policy does not let IAM decide for the account's roles"
    );
    let mut publishers: Vec<(String, Vec<Value>)> = Vec::new();
    for (id, function) in resources.as_object().unwrap() {
        if function["Type"] == "AWS::Serverless::Function" {
            let statements = function["Properties"]["Policies"][0]["Statement"]
                .as_array()
                .unwrap()
                .iter()
                .map(resolve)
                .collect();
            publishers.push((id.clone(), statements));
        }
    }
    let pipeline_role = &service["Resources"]["PipelineRole"]["Properties"]["Policies"][0];
    publishers.push((
        "PipelineRole".into(),
        statements_of(&pipeline_role["PolicyDocument"]),
    ));
    assert_eq!(publishers.len(), 5);
    for (who, statements) in &publishers {
        let may = |r: &Request| statements.iter().any(|s| allows(s, r));
        assert!(
            may(&request("sns:Publish", TOPIC, &[])),
            "{who} may not publish"
        );
        for action in encrypt {
            assert!(may(&request(action, KEY, &[])), "{who} may not {action}");
        }
    }
}

#[test]
fn every_failed_invocation_and_undelivered_event_has_a_queue_and_an_alarm() {
    let (shared, service) = (load("template.yaml"), load("service.yaml"));
    let resources = shared["Resources"].as_object().unwrap();
    let alarms: Vec<&Value> = resources
        .values()
        .filter(|r| r["Type"] == "AWS::CloudWatch::Alarm")
        .collect();
    for (id, function) in resources
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::Serverless::Function")
    {
        let on_failure =
            &function["Properties"]["EventInvokeConfig"]["DestinationConfig"]["OnFailure"];
        assert_eq!(
            on_failure["Destination"],
            json!({"Fn::GetAtt": ["DeadLetters", "Arn"]}),
            "{id} has no on-failure destination"
        );
        assert!(
            alarms
                .iter()
                .any(|a| a["Properties"]["MetricName"] == "Errors"
                    && a["Properties"]["Dimensions"][0]["Value"] == json!({"Ref": id})),
            "{id} has no Errors alarm"
        );
    }
    assert!(
        alarms
            .iter()
            .any(|a| a["Properties"]["Dimensions"][0]["Value"]
                == json!({"Fn::GetAtt": ["DeadLetters", "QueueName"]})),
        "nothing alarms on the dead letters"
    );
    let mut targets = Vec::new();
    for template in [&shared, &service] {
        for (id, rule) in template["Resources"].as_object().unwrap() {
            if rule["Type"] == "AWS::Events::Rule" {
                for target in rule["Properties"]["Targets"].as_array().unwrap() {
                    targets.push((id.clone(), target.clone()));
                }
            }
        }
    }
    let sweep = &resources["CleanupFunction"]["Properties"]["Events"]["Sweep"]["Properties"];
    targets.push(("Sweep".into(), sweep.clone()));
    assert!(targets.len() >= 5, "{targets:?}");
    for (rule, target) in &targets {
        assert!(
            target["DeadLetterConfig"]["Arn"]
                .to_string()
                .contains("DeadLetters"),
            "{rule}: no dead-letter queue"
        );
        assert!(
            target["RetryPolicy"]["MaximumRetryAttempts"].as_u64() > Some(0),
            "{rule}: no retry policy"
        );
    }
    // The checkov skip reasons say what is true.
    assert!(!shared.to_string().contains("invokes synchronously"));
}

#[test]
fn the_alarm_rule_takes_no_alarm_of_the_shared_stack() {
    let shared = load("template.yaml");
    let resources = shared["Resources"].as_object().unwrap();
    let pattern = &resources["AlarmRule"]["Properties"]["EventPattern"]["detail"]["alarmName"];
    let prefixes: Vec<&str> = pattern
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["prefix"].as_str())
        .collect();
    assert!(!prefixes.is_empty());
    for (id, alarm) in resources
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::CloudWatch::Alarm")
    {
        // CloudFormation names an alarm without a name <stack>-<logical id>-…: `cutover-…`.
        let name = alarm["Properties"]["AlarmName"]["Fn::Sub"]
            .as_str()
            .map(|n| n.replace("${AWS::StackName}", "cutover"))
            .unwrap_or_else(|| format!("cutover-{id}-ABC123"));
        assert!(
            !prefixes.iter().any(|p| name.starts_with(p)),
            "the alarm rule would roll a service back on {id} ({name})"
        );
    }
}
