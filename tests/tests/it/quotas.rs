//! What one account holds: the stacks rendered for 1, 10 and 100 services, every figure that
//! grows with them checked against its AWS quota (the defaults, per account and region):
//! - IAM: 10,240 characters of inline policy per role, whitespace excluded; 10 managed policies
//!   per role (IAM and STS quotas, IAM User Guide).
//! - Lambda: a function's resource-based policy is at most 20 KB (Lambda quotas).
//! - EventBridge: 300 rules per event bus (100 in af-south-1 and eu-south-1) (EventBridge quotas).
//! - Elastic Load Balancing: 50 Application Load Balancers per region, 100 rules (excluding the
//!   defaults) and 100 target groups per load balancer, 3,000 target groups per region
//!   (Quotas for your Application Load Balancers).
//! - SSM Parameter Store: a standard parameter's value is at most 4 KB.
//!
//! The shared stack's grants do not grow with services at all: a service stack adds no policy,
//! permission or rule to the shared functions.

use std::collections::BTreeMap;

use cutover::settings::{Fleet, ServiceSettings};
use serde_json::{json, Value};

use super::infra::load;

const INLINE_POLICY_CHARS_PER_ROLE: usize = 10_240;
const FUNCTION_POLICY_BYTES: usize = 20 * 1024;
const RULES_PER_BUS: usize = 300;
const LOAD_BALANCERS_PER_REGION: usize = 50;
const RULES_PER_LOAD_BALANCER: usize = 100;
const TARGET_GROUPS_PER_LOAD_BALANCER: usize = 100;
const TARGET_GROUPS_PER_REGION: usize = 3_000;
const STANDARD_PARAMETER_BYTES: usize = 4_096;

fn resources_of<'a>(template: &'a Value, kind: &str) -> Vec<(&'a String, &'a Value)> {
    template["Resources"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["Type"] == kind)
        .collect()
}

#[test]
fn a_service_stack_grants_the_shared_functions_nothing() {
    let service = load("service.yaml");
    for kind in [
        "AWS::IAM::Policy",
        "AWS::IAM::ManagedPolicy",
        "AWS::Lambda::Permission",
    ] {
        let found: Vec<&String> = resources_of(&service, kind)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert!(found.is_empty(), "service.yaml adds {kind}: {found:?}");
    }
    // It names the shared functions only to invoke them (its pipeline role's own grant).
    assert!(
        !service.to_string().contains("RoleName"),
        "service.yaml names a shared role"
    );
    // Its instance role is under the path the shared provision role may pass.
    assert_eq!(
        service["Resources"]["InstanceRole"]["Properties"]["Path"],
        "/cutover/"
    );
}

/// A statement as IAM stores it, with CloudFormation's placeholders given realistic lengths.
fn stored(statement: &Value) -> String {
    let text = serde_json::to_string(statement).unwrap();
    text.replace("${AWS::Partition}", "aws")
        .replace("${AWS::Region}", "ap-northeast-2")
        .replace("${AWS::AccountId}", "123456789012")
        .replace("${PrivateZoneName}", "internal.example.com")
}

/// Inline policy characters per shared role (whitespace excluded, as IAM counts them).
fn role_policy_chars(shared: &Value) -> BTreeMap<String, usize> {
    let mut sizes = BTreeMap::new();
    for (id, function) in resources_of(shared, "AWS::Serverless::Function") {
        let statements = &function["Properties"]["Policies"];
        let document = json!({"Version": "2012-10-17", "Statement": statements});
        let chars = stored(&document)
            .chars()
            .filter(|c| !c.is_whitespace())
            .count();
        sizes.insert(id.clone(), chars);
    }
    sizes
}

#[test]
fn one_to_a_hundred_services_stay_within_every_quota() {
    let (shared, service) = (load("template.yaml"), load("service.yaml"));
    let policy_chars = role_policy_chars(&shared);
    assert_eq!(policy_chars.len(), 4);
    for (role, chars) in &policy_chars {
        assert!(
            *chars <= INLINE_POLICY_CHARS_PER_ROLE,
            "{role}: {chars} characters of inline policy"
        );
    }
    // Each function's resource policy: the shared permissions and SAM's schedule, none per
    // service. A statement is about 350 bytes stored.
    let permissions = resources_of(&shared, "AWS::Lambda::Permission").len() + 1;
    let shared_rules = resources_of(&shared, "AWS::Events::Rule").len() + 1;
    let per_service_rules = resources_of(&service, "AWS::Events::Rule").len();
    let per_service_groups =
        resources_of(&service, "AWS::ElasticLoadBalancingV2::TargetGroup").len();
    let per_service_alb_rules =
        resources_of(&service, "AWS::ElasticLoadBalancingV2::ListenerRule").len();
    assert_eq!(
        (per_service_rules, per_service_groups, per_service_alb_rules),
        (1, 2, 2)
    );
    let services_per_load_balancer = (RULES_PER_LOAD_BALANCER / per_service_alb_rules)
        .min(TARGET_GROUPS_PER_LOAD_BALANCER / per_service_groups);
    assert_eq!(services_per_load_balancer, 50);

    for services in [1, 10, 100] {
        // IAM and Lambda: the same for any number of services.
        assert_eq!(role_policy_chars(&shared), policy_chars);
        assert!(permissions * 350 <= FUNCTION_POLICY_BYTES);
        let rules = shared_rules + services * per_service_rules;
        assert!(rules <= RULES_PER_BUS, "{services} services: {rules} rules");
        let groups = services * per_service_groups;
        assert!(groups <= TARGET_GROUPS_PER_REGION);
        // A load balancer each fits 50 services; past that, services share listeners.
        let own = services;
        let shared_albs = services.div_ceil(services_per_load_balancer);
        assert!(
            own <= LOAD_BALANCERS_PER_REGION || shared_albs <= LOAD_BALANCERS_PER_REGION,
            "{services} services"
        );
        if services == 100 {
            assert!(own > LOAD_BALANCERS_PER_REGION);
            assert_eq!(shared_albs, 2);
        }
    }
    // The settings each stack writes fit a standard parameter, with the longest values.
    let longest = settings_of(&service, &worst_case_parameters());
    assert!(
        longest.len() <= STANDARD_PARAMETER_BYTES,
        "{} bytes",
        longest.len()
    );
}

#[test]
fn the_settings_parameter_a_service_stack_writes_parses_as_settings() {
    let service = load("service.yaml");
    let mut parameters = BTreeMap::from([
        ("ServiceName", json!("news-api")),
        ("Ami", json!("ami-0123456789abcdef0")),
        ("InstanceType", json!("t3.small")),
        (
            "PrivateSubnetIds",
            json!(["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]),
        ),
        ("InstanceCount", json!("2")),
        ("BakeSeconds", json!("3600")),
        ("Alarms", json!([""])),
        ("ElasticIpAllocationIds", json!([""])),
        ("HostedZoneId", json!("")),
        ("CutoverStack", json!("cutover")),
    ]);
    let plain = ServiceSettings::parse("/cutover/news-api", &settings_of(&service, &parameters))
        .expect("the stack's settings parse");
    assert_eq!(plain.count, 2);
    assert_eq!(plain.subnets.len(), 2);
    assert!(
        matches!(&plain.fleet, Fleet::Instances(spec) if spec.security_groups == ["sg-0a1b2c3d4e5f60718"]),
        "{:?}",
        plain.fleet
    );
    assert_eq!(plain.dns_zone.as_deref(), Some("Z0SHAREDZONE"));
    assert!(
        plain.require_install_mark,
        "the stack ships the install hook's grant"
    );
    assert!(plain.alarms.is_empty() && plain.elastic_ips.is_empty());
    assert_eq!(
        plain.listener.as_deref(),
        Some(OWN_LISTENER),
        "a cold start looks on the stack's listener first"
    );

    parameters.insert(
        "Alarms",
        json!(["cutover-news-api-5xx", "cutover-news-api-p99"]),
    );
    parameters.insert(
        "ElasticIpAllocationIds",
        json!(["eipalloc-0123456789abcdef0"]),
    );
    parameters.insert("HostedZoneId", json!("Z0OWNZONE"));
    let full = ServiceSettings::parse("/cutover/news-api", &settings_of(&service, &parameters))
        .expect("the stack's settings parse");
    assert_eq!(
        full.alarms,
        ["cutover-news-api-5xx", "cutover-news-api-p99"]
    );
    assert_eq!(full.elastic_ips, ["eipalloc-0123456789abcdef0"]);
    assert_eq!(full.dns_zone.as_deref(), Some("Z0OWNZONE"));

    let shared = "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/shared/1/2";
    parameters.insert("SharedListenerArn", json!(shared));
    let on_shared =
        ServiceSettings::parse("/cutover/news-api", &settings_of(&service, &parameters))
            .expect("the stack's settings parse");
    assert_eq!(on_shared.listener.as_deref(), Some(shared));

    // Fleet=asg: the template sets type, security groups and profile; no addresses.
    parameters.insert("ElasticIpAllocationIds", json!([""]));
    parameters.insert("Fleet", json!("asg"));
    parameters.insert("LaunchTemplate", json!("news-api-web"));
    let group = ServiceSettings::parse("/cutover/news-api", &settings_of(&service, &parameters))
        .expect("the stack's asg settings parse");
    assert_eq!(
        group.fleet,
        Fleet::Group {
            launch_template: "news-api-web".into()
        }
    );
    assert!(!group.require_install_mark, "no CodeDeploy with groups");
}

fn worst_case_parameters() -> BTreeMap<&'static str, Value> {
    let subnets: Vec<String> = (0..6)
        .map(|n| format!("subnet-0123456789abcdef{n}"))
        .collect();
    let alarms: Vec<String> = (0..10)
        .map(|n| format!("cutover-{}-{n}", "s".repeat(26)).repeat(4))
        .collect();
    let addresses: Vec<String> = (0..50)
        .map(|n| format!("eipalloc-0123456789abc{n:04}"))
        .collect();
    BTreeMap::from([
        ("ServiceName", json!("s".repeat(26))),
        ("Ami", json!("ami-0123456789abcdef0")),
        ("InstanceType", json!("m7i-flex.48xlarge")),
        ("PrivateSubnetIds", json!(subnets)),
        ("InstanceCount", json!("50")),
        ("BakeSeconds", json!("2592000")),
        ("Alarms", json!(alarms)),
        ("ElasticIpAllocationIds", json!(addresses)),
        ("HostedZoneId", json!("Z0123456789ABCDEFGHIJ")),
        ("CutoverStack", json!("cutover")),
        (
            "SharedListenerArn",
            json!(format!(
                "arn:aws:elasticloadbalancing:ap-southeast-2:123456789012:listener/app/{}/50dc6c495c0c9188/f2f7dc8efc522ab2",
                "l".repeat(32)
            )),
        ),
    ])
}

/// What `Ref` of the stack's own listener gives (its ARN).
const OWN_LISTENER: &str =
    "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/news-api/50dc6c495c0c9188/f2f7dc8efc522ab2";

/// The value of the service stack's settings parameter for these parameters.
fn settings_of(service: &Value, parameters: &BTreeMap<&str, Value>) -> String {
    let value = &service["Resources"]["SettingsParameter"]["Properties"]["Value"];
    let conditions = |name: &str| -> bool {
        let joined = |key: &str| {
            parameters[key]
                .as_array()
                .map(|items| items.iter().filter_map(Value::as_str).collect::<String>())
                .unwrap_or_default()
        };
        match name {
            "UsesSharedZone" => parameters["HostedZoneId"] == "",
            "HasAlarms" => !joined("Alarms").is_empty(),
            "HasElasticIps" => !joined("ElasticIpAllocationIds").is_empty(),
            "IsGroupFleet" => parameters.get("Fleet") == Some(&json!("asg")),
            "IsInstanceFleet" => parameters.get("Fleet") != Some(&json!("asg")),
            "CreatesLoadBalancer" => parameters
                .get("SharedListenerArn")
                .is_none_or(|arn| arn == ""),
            other => panic!("condition {other} is not modelled"),
        }
    };
    match render(value, parameters, &conditions) {
        Value::String(text) => text,
        other => panic!("the settings render as {other}"),
    }
}

/// The intrinsic functions the settings parameter uses, evaluated as CloudFormation does.
fn render(
    value: &Value,
    parameters: &BTreeMap<&str, Value>,
    condition: &dyn Fn(&str) -> bool,
) -> Value {
    let text = |v: &Value| match render(v, parameters, condition) {
        Value::String(s) => s,
        other => panic!("{other} is not a string"),
    };
    let Value::Object(map) = value else {
        return value.clone();
    };
    if let Some(Value::String(name)) = map.get("Ref") {
        if name == "HttpsListener" {
            return Value::from(OWN_LISTENER);
        }
        return parameters
            .get(name.as_str())
            .cloned()
            .unwrap_or_else(|| panic!("parameter {name}"));
    }
    if let Some(Value::Array(args)) = map.get("Fn::Join") {
        let items = match render(&args[1], parameters, condition) {
            Value::Array(items) => items,
            other => panic!("{other} is not a list"),
        };
        let parts: Vec<String> = items.iter().map(text).collect();
        return Value::from(parts.join(args[0].as_str().unwrap()));
    }
    if let Some(Value::Array(args)) = map.get("Fn::If") {
        let branch = if condition(args[0].as_str().unwrap()) {
            &args[1]
        } else {
            &args[2]
        };
        return render(branch, parameters, condition);
    }
    if map.contains_key("Fn::ImportValue") {
        return Value::from("Z0SHAREDZONE");
    }
    if let Some(sub) = map.get("Fn::Sub") {
        let (template, variables) = match sub {
            Value::String(template) => (template.clone(), serde_json::Map::new()),
            Value::Array(form) => (
                form[0].as_str().unwrap().to_owned(),
                form[1].as_object().cloned().unwrap_or_default(),
            ),
            other => panic!("Fn::Sub {other}"),
        };
        let mut out = template;
        for (name, value) in &variables {
            out = out.replace(&format!("${{{name}}}"), &text(value));
        }
        for (name, value) in parameters {
            if let Value::String(s) = value {
                out = out.replace(&format!("${{{name}}}"), s);
            }
        }
        out = out
            .replace("${AppSecurityGroup.GroupId}", "sg-0a1b2c3d4e5f60718")
            .replace(
                "${InstanceProfile}",
                "news-api-InstanceProfile-AbCdEfGh1234",
            );
        assert!(!out.contains("${"), "unresolved in {out}");
        return Value::from(out);
    }
    Value::Object(map.clone())
}
