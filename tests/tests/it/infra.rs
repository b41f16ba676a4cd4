//! `infra/` is wired right: templates parse (through cfn-lint's own loader), every function the
//! pipeline and rules use exists, every Invoke action's UserParameters parse with the function's
//! own parser, IAM grants every call the code makes and no mutating statement is unbounded. And
//! the calls the functions really make (recorded at the endpoint) stay within their lists.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use cutover::event::Invocation;
use cutover::world::TAG_INSTALLED;
use cutover::Function;
use cutover_tests::lambda::FUNCTIONS;
use cutover_tests::moto::repo_root;
use cutover_tests::{fixture, job_event, local, Call, R1, R2, R3};
use serde_json::{json, Value};

/// The template as JSON, intrinsic functions as `{"Ref": ..}` / `{"Fn::Sub": ..}`.
pub(crate) fn load(template: &str) -> Value {
    let python = repo_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing, so cfn-lint cannot read the templates: run `make setup`",
        python.display()
    );
    let output = Command::new(python)
        .args([
            "-c",
            "import json, sys\nfrom cfnlint.decode import cfn_yaml\nprint(json.dumps(cfn_yaml.load(sys.argv[1])))",
        ])
        .arg(repo_root().join("infra").join(template))
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON")
}

fn logical_id(function: Function) -> &'static str {
    match function {
        Function::Provision => "ProvisionFunction",
        Function::RegisterTarget => "RegisterTargetFunction",
        Function::SwitchListener => "SwitchListenerFunction",
        Function::Cleanup => "CleanupFunction",
    }
}

/// Every IAM statement of a function's inline policies, looking inside `Fn::If` branches.
fn statements(function: &Value) -> Vec<Value> {
    fn collect(value: &Value, out: &mut Vec<Value>) {
        match value {
            Value::Object(map) if map.contains_key("Statement") => {
                out.extend(map["Statement"].as_array().cloned().unwrap_or_default());
            }
            Value::Object(map) => map.values().for_each(|v| collect(v, out)),
            Value::Array(items) => items.iter().for_each(|v| collect(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    collect(&function["Properties"]["Policies"], &mut out);
    out
}

fn as_list(value: &Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items.clone(),
        other => vec![other.clone()],
    }
}

/// Actions that have no resource-level permissions in IAM: `*` is the only possible resource.
const NO_RESOURCE_LEVEL: &[&str] = &[
    "codepipeline:PutJobSuccessResult",
    "codepipeline:PutJobFailureResult",
];

fn is_mutating(action: &str) -> bool {
    let name = action.split(':').nth(1).unwrap_or(action);
    let read = ["Describe", "List", "Get"]
        .iter()
        .any(|prefix| name.starts_with(prefix));
    !read && !NO_RESOURCE_LEVEL.contains(&action)
}

/// What `function` may do for every service: its statements in the shared stack. A service
/// stack grants it nothing (`a_service_stack_grants_the_shared_functions_nothing`).
fn granted(shared: &Value, function: Function) -> Vec<Value> {
    statements(&shared["Resources"][logical_id(function)])
}

#[test]
fn every_function_is_granted_what_its_code_calls_and_no_mutation_is_unbounded() {
    let shared = load("template.yaml");
    for function in FUNCTIONS {
        let resource = &shared["Resources"][logical_id(function)];
        assert_eq!(resource["Type"], "AWS::Serverless::Function");
        assert_eq!(resource["Metadata"]["BuildMethod"], "rust-cargolambda");
        assert_eq!(
            resource["Metadata"]["BuildProperties"]["Binary"],
            function.as_str()
        );
        let statements = granted(&shared, function);
        let actions: BTreeSet<String> = statements
            .iter()
            .flat_map(|s| as_list(&s["Action"]))
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect();
        for action in function.aws_actions() {
            assert!(
                actions.contains(action),
                "{} is not granted {action}",
                function.as_str()
            );
        }
        for statement in &statements {
            let unbounded = as_list(&statement["Resource"]).iter().any(|r| r == "*");
            let mutating: Vec<String> = as_list(&statement["Action"])
                .iter()
                .filter_map(|a| a.as_str())
                .filter(|a| is_mutating(a))
                .map(str::to_owned)
                .collect();
            assert!(
                !(unbounded && !mutating.is_empty() && statement.get("Condition").is_none()),
                "{}: {mutating:?} on Resource * without a condition",
                function.as_str()
            );
        }
    }
}

#[test]
fn every_resource_type_a_launch_must_tag_is_tagged_by_the_launch() {
    let shared = load("template.yaml");
    let mut conditioned = BTreeSet::new();
    for statement in statements(&shared["Resources"]["ProvisionFunction"]) {
        let runs = as_list(&statement["Action"]).contains(&json!("ec2:RunInstances"));
        if !runs
            || !statement["Condition"]
                .to_string()
                .contains("aws:RequestTag/")
        {
            continue;
        }
        for resource in as_list(&statement["Resource"]) {
            let pattern = resource["Fn::Sub"].as_str().unwrap_or_default();
            let kind = pattern.rsplit(':').next().unwrap().trim_end_matches("/*");
            conditioned.insert(kind.to_owned());
        }
    }
    let tagged: BTreeSet<String> = cutover::aws::TAGGED_AT_LAUNCH
        .iter()
        .map(|k| k.to_string())
        .collect();
    assert!(!conditioned.is_empty());
    assert!(
        conditioned.is_subset(&tagged),
        "RunInstances must tag {conditioned:?}; provision tags {tagged:?}"
    );
}

/// The Lambda function an Invoke action of a service pipeline names (an import of the shared
/// stack's `<Logical>Name` export).
fn invoked_function(config: &Value) -> Function {
    let import = config["FunctionName"]["Fn::ImportValue"]["Fn::Sub"]
        .as_str()
        .expect("FunctionName imports the shared stack's export");
    FUNCTIONS
        .into_iter()
        .find(|f| import.ends_with(&format!("-{}Name", logical_id(*f))))
        .unwrap_or_else(|| panic!("{import} names no function"))
}

#[test]
fn one_stage_holds_the_whole_release_and_invokes_functions_with_parameters_they_accept() {
    let (shared, service) = (load("template.yaml"), load("service.yaml"));
    let pipeline = &service["Resources"]["Pipeline"]["Properties"];
    assert_eq!(pipeline["PipelineType"], "V2");
    assert_eq!(pipeline["ExecutionMode"], "QUEUED");
    let stages = pipeline["Stages"].as_array().unwrap();
    let names: Vec<&str> = stages.iter().filter_map(|s| s["Name"].as_str()).collect();
    assert_eq!(names, ["Source", "Release"]);
    assert_eq!(
        stages[0]["Actions"][0]["Configuration"]["PollForSourceChanges"],
        json!(false)
    );
    // Each fleet's pipeline, with the stack's conditions decided: a group's build comes with
    // its image (the ReleaseAmi variable), so it has no CodeDeploy install.
    for (fleet, expected) in [
        (
            "instances",
            &[
                "provision",
                "Deploy",
                "register-target",
                "Approval",
                "switch-listener",
                "cleanup",
            ][..],
        ),
        (
            "asg",
            &[
                "provision",
                "register-target",
                "Approval",
                "switch-listener",
                "cleanup",
            ][..],
        ),
    ] {
        let stage = decide_conditions(&stages[1], fleet == "asg");
        assert_eq!(release_sequence(&stage, fleet), expected, "Fleet={fleet}");
    }
    assert_eq!(
        pipeline["Variables"][0]["Name"], "ReleaseAmi",
        "the image of an asg release"
    );

    // One rule in the shared stack serves every service's pipeline (all named cutover-<service>).
    let resources = &service["Resources"];
    assert_eq!(
        resources["Pipeline"]["Properties"]["Name"],
        json!({"Fn::Sub": "cutover-${ServiceName}"})
    );
    let failed = &shared["Resources"]["FailedExecutionRule"]["Properties"];
    let pattern = &failed["EventPattern"]["detail"];
    assert_eq!(pattern["pipeline"], json!([{"prefix": "cutover-"}]));
    for state in ["FAILED", "CANCELED", "SUPERSEDED", "RESUMED"] {
        assert!(pattern["state"].as_array().unwrap().contains(&json!(state)));
    }
    assert_eq!(
        failed["Targets"][0]["Arn"],
        json!({"Fn::GetAtt": ["CleanupFunction", "Arn"]})
    );
    let source = &resources["SourceRule"]["Properties"];
    assert_eq!(source["EventPattern"]["source"], json!(["aws.s3"]));
    assert!(resources["SourceRuleRole"]
        .to_string()
        .contains("codepipeline:StartPipelineExecution"));
    assert_eq!(
        resources["SourceBucket"]["Properties"]["NotificationConfiguration"]
            ["EventBridgeConfiguration"]["EventBridgeEnabled"],
        json!(true)
    );
    let group = resources["PreProductDeploymentGroup"]["Properties"]["Ec2TagSet"].to_string();
    assert!(group.contains("cutover:service") && group.contains("pre-product"));
    // The instances read builds from this pipeline's artifact bucket, whatever its generated name.
    assert!(resources["InstanceRole"]
        .to_string()
        .contains("ArtifactBucket.Arn"));

    // Cleanup's takeover margin is computed from switch-listener's timeout: they must agree.
    let globals = &shared["Globals"]["Function"];
    let timeout = cutover::plan::SWITCH_LISTENER_TIMEOUT_S;
    assert_eq!(globals["Timeout"], json!(timeout));
    assert_eq!(
        globals["Environment"]["Variables"]["CUTOVER_SWITCH_LISTENER_TIMEOUT_S"],
        json!(timeout.to_string())
    );
    assert!(shared["Resources"]["SwitchListenerFunction"]["Properties"]
        .get("Timeout")
        .is_none());

    let cleanup = &shared["Resources"]["CleanupFunction"]["Properties"];
    assert_eq!(cleanup["Events"]["Sweep"]["Type"], "Schedule");
    assert_eq!(
        cleanup["EventInvokeConfig"]["DestinationConfig"]["OnFailure"]["Type"],
        "SQS"
    );
    assert!(
        shared["Resources"]["CleanupErrorsAlarm"]["Properties"]["AlarmActions"]
            .to_string()
            .contains("ReleaseTopic")
    );
    // The topic's key lets EventBridge publish; the AWS-managed SNS key does not.
    let topic = &shared["Resources"]["ReleaseTopic"]["Properties"];
    assert_eq!(topic["KmsMasterKeyId"], json!({"Ref": "ReleaseTopicKey"}));
    assert!(
        shared["Resources"]["ReleaseTopicKey"]["Properties"]["KeyPolicy"]
            .to_string()
            .contains("events.amazonaws.com")
    );
}

/// A template value with `Fn::If` on the fleet conditions decided and `AWS::NoValue` dropped.
fn decide_conditions(value: &Value, group_fleet: bool) -> Value {
    match value {
        Value::Object(map) => {
            if let Some(Value::Array(branches)) = map.get("Fn::If") {
                let holds = match branches[0].as_str() {
                    Some("IsGroupFleet") => group_fleet,
                    Some("IsInstanceFleet") => !group_fleet,
                    other => panic!("condition {other:?} is not modelled"),
                };
                return decide_conditions(&branches[if holds { 1 } else { 2 }], group_fleet);
            }
            Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), decide_conditions(v, group_fleet)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| decide_conditions(v, group_fleet))
                .filter(|v| *v != json!({"Ref": "AWS::NoValue"}))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The Release stage's actions in order: a category, or the function it invokes, each invoke's
/// UserParameters parsed as the function parses them.
fn release_sequence(stage: &Value, fleet: &str) -> Vec<String> {
    let mut sequence = Vec::new();
    let mut actions = stage["Actions"].as_array().unwrap().clone();
    actions.sort_by_key(|a| a["RunOrder"].as_i64());
    for action in &actions {
        let category = action["ActionTypeId"]["Category"]
            .as_str()
            .unwrap()
            .to_owned();
        if category != "Invoke" {
            sequence.push(category);
            continue;
        }
        let config = &action["Configuration"];
        let function = invoked_function(config);
        let raw = config["UserParameters"]["Fn::Sub"]
            .as_str()
            .expect("UserParameters via Fn::Sub");
        let params: Value = serde_json::from_str(
            &raw.replace("${ServiceName}", "mobile-zum-api")
                .replace(
                    "#{codepipeline.PipelineExecutionId}",
                    "0f6c1a2b-0001-4a5b-9c8d-111111111111",
                )
                .replace("#{variables.ReleaseAmi}", "ami-0123456789abcdef0"),
        )
        .expect("UserParameters is JSON");
        match Invocation::parse(job_event(function, "job-1", &params, None)).unwrap() {
            Invocation::Job { request, .. } => {
                let request = request.unwrap_or_else(|e| panic!("{}: {e}", function.as_str()));
                if function == Function::Provision {
                    assert_eq!(request.ami.is_some(), fleet == "asg", "{params}");
                }
            }
            other => panic!("{other:?}"),
        }
        sequence.push(function.as_str().to_owned());
    }
    sequence
}

/// Every physical name the service stack sets, for a service name: two services' stacks must
/// share none (a name that does not follow the service collides at the second deploy).
fn physical_names(service: &Value, name: &str) -> BTreeSet<String> {
    const NAMED: &[&str] = &[
        "Name",
        "PolicyName",
        "ApplicationName",
        "RoleName",
        "BucketName",
        "TopicName",
        "QueueName",
        "AlarmName",
        "FunctionName",
    ];
    let mut names = BTreeSet::new();
    for resource in service["Resources"].as_object().unwrap().values() {
        if resource.get("Condition").is_some() {
            continue;
        }
        let Some(properties) = resource["Properties"].as_object() else {
            continue;
        };
        for key in NAMED {
            let Some(value) = properties.get(*key) else {
                continue;
            };
            let text = match value {
                Value::String(s) => s.clone(),
                other => other["Fn::Sub"].as_str().unwrap_or_default().to_owned(),
            };
            if !text.is_empty() {
                names.insert(format!("{key}={}", text.replace("${ServiceName}", name)));
            }
        }
    }
    names
}

#[test]
fn two_services_stacks_side_by_side_share_no_name() {
    let service = load("service.yaml");
    let a = physical_names(&service, "mobile-zum-api");
    let b = physical_names(&service, "news-api");
    assert!(a.len() >= 3, "{a:?}");
    let shared: Vec<&String> = a.intersection(&b).collect();
    assert!(
        shared.is_empty(),
        "names that collide between two services: {shared:?}"
    );
    // Nothing service-specific is hard-coded in the shared stack any more.
    let text = std::fs::read_to_string(repo_root().join("infra/template.yaml")).unwrap();
    assert!(
        !text.contains("ServiceName"),
        "the shared stack names a service"
    );
    // cfn-lint accepts both stacks side by side.
    let lint = Command::new(repo_root().join(".venv/bin/cfn-lint"))
        .arg(repo_root().join("infra/template.yaml"))
        .arg(repo_root().join("infra/service.yaml"))
        .output()
        .expect("cfn-lint runs");
    assert!(
        lint.status.success(),
        "{}",
        String::from_utf8_lossy(&lint.stdout)
    );
}

#[test]
fn the_example_service_is_tagged_the_way_cutover_finds_it() {
    let template = load("service.yaml");
    let mut found = BTreeMap::new();
    for (id, resource) in template["Resources"].as_object().unwrap() {
        let tags: BTreeMap<String, Value> = resource["Properties"]["Tags"]
            .as_array()
            .map(|tags| {
                tags.iter()
                    .map(|t| (t["Key"].as_str().unwrap().to_owned(), t["Value"].clone()))
                    .collect()
            })
            .unwrap_or_default();
        if tags.contains_key("cutover:service") {
            let role = tags
                .get("cutover:slot")
                .or(tags.get("cutover:route"))
                .cloned()
                .unwrap_or_default();
            found.insert(role.as_str().unwrap_or_default().to_owned(), id.clone());
        }
    }
    let roles: Vec<&str> = found.keys().map(String::as_str).collect();
    assert_eq!(roles, ["blue", "green", "pre-product", "product"]);
}

/// A route behind OIDC or Cognito sign-on works only if the load balancer reaches the identity
/// provider's endpoints over HTTPS itself (ELB's authentication guide: the load balancer's
/// security group must allow outbound 443 to the IdP).
#[test]
fn a_load_balancer_behind_sign_on_reaches_its_identity_provider() {
    let service = load("service.yaml");
    let egress = service["Resources"]["AlbSecurityGroup"]["Properties"]["SecurityGroupEgress"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        egress.iter().any(|rule| rule["FromPort"] == 443
            && rule["ToPort"] == 443
            && rule["CidrIp"] == "0.0.0.0/0"),
        "{egress:?}"
    );
}

/// Pre-product builds are never public: the QA rule also matches the source address, closed by
/// default; the in-VPC path is let in only from the range the team names.
#[test]
fn the_qa_route_is_closed_to_the_internet_unless_the_team_opens_it() {
    let service = load("service.yaml");
    let resources = &service["Resources"];
    let conditions = resources["PreProductRule"]["Properties"]["Conditions"].to_string();
    assert!(conditions.contains("source-ip") && conditions.contains("QaAllowedCidrs"));
    let default = service["Parameters"]["QaAllowedCidrs"]["Default"]
        .as_str()
        .unwrap();
    assert!(
        !default.contains("0.0.0.0/0") && !default.is_empty(),
        "{default}"
    );
    assert!(!resources["ProductRule"].to_string().contains("source-ip"));
    let vpc_path = &resources["AppIngressForInVpcQa"];
    assert_eq!(vpc_path["Condition"], "HasQaVpcPath");
    assert_eq!(
        vpc_path["Properties"]["CidrIp"],
        json!({"Ref": "QaVpcCidr"})
    );
}

/// An account whose EBS encryption by default uses a customer-managed key: a launch needs grants
/// on that key, and only through EC2.
#[test]
fn a_launch_may_use_the_accounts_ebs_key_only_through_ec2() {
    let shared = load("template.yaml");
    let key = "arn:aws:kms:us-east-1:123456789012:key/ebs";
    let statements: Vec<Value> = statements(&shared["Resources"]["ProvisionFunction"])
        .iter()
        .flat_map(|s| match s.get("Fn::If") {
            Some(branches) => vec![branches[1].clone()],
            None => vec![s.clone()],
        })
        .map(|s| {
            let text = s
                .to_string()
                .replace(r#"{"Ref":"EbsKmsKeyArn"}"#, &format!("\"{key}\""))
                .replace(
                    r#"{"Fn::Sub":"ec2.${AWS::Region}.amazonaws.com"}"#,
                    "\"ec2.us-east-1.amazonaws.com\"",
                );
            serde_json::from_str(&text).unwrap()
        })
        .collect();
    let request = |via: &str| iam::Request {
        action: "kms:CreateGrant".into(),
        resource: key.into(),
        context: BTreeMap::from([("kms:ViaService".to_owned(), vec![via.to_owned()])]),
    };
    assert!(statements
        .iter()
        .any(|s| iam::allows(s, &request("ec2.us-east-1.amazonaws.com"))));
    assert!(!statements
        .iter()
        .any(|s| iam::allows(s, &request("s3.us-east-1.amazonaws.com"))));
}

/// The install hook may mark the service's own instances installed, and nothing else: no other
/// tag key, no other service's instance.
#[test]
fn the_install_hook_may_mark_only_its_services_instances_installed() {
    let service = load("service.yaml");
    let statements: Vec<Value> = statements(&service["Resources"]["InstanceRole"])
        .iter()
        .map(|s| {
            let text = s
                .to_string()
                .replace(r#"{"Ref":"ServiceName"}"#, "\"mobile-zum-api\"")
                .replace("${AWS::Partition}", "aws")
                .replace("${AWS::Region}", iam::REGION)
                .replace("${AWS::AccountId}", iam::ACCOUNT);
            let mut statement: Value = serde_json::from_str(&text).unwrap();
            if let Some(sub) = statement["Resource"].get("Fn::Sub").cloned() {
                statement["Resource"] = sub;
            }
            statement
        })
        .collect();
    let mark = |owner: &str, key: &str| iam::Request {
        action: "ec2:CreateTags".into(),
        resource: format!("arn:aws:ec2:{}:{}:instance/i-1", iam::REGION, iam::ACCOUNT),
        context: BTreeMap::from([
            (
                "aws:ResourceTag/cutover:service".to_owned(),
                vec![owner.to_owned()],
            ),
            ("aws:TagKeys".to_owned(), vec![key.to_owned()]),
        ]),
    };
    let allowed = |request: &iam::Request| statements.iter().any(|s| iam::allows(s, request));
    assert!(allowed(&mark("mobile-zum-api", TAG_INSTALLED)));
    assert!(
        !allowed(&mark("news-api", TAG_INSTALLED)),
        "another service's instance"
    );
    assert!(
        !allowed(&mark("mobile-zum-api", "cutover:stage")),
        "another key"
    );
    let hook = std::fs::read_to_string(repo_root().join("infra/codedeploy/mark-installed.sh"))
        .expect("the hook script");
    assert!(hook.contains(TAG_INSTALLED) && hook.contains("cutover:release"));
}

/// IAM action for a call recorded at the endpoint.
fn iam_action(call: &Call) -> String {
    // CloudWatch signs as `monitoring`; its IAM prefix is `cloudwatch`.
    if call.service == "monitoring" {
        return format!("cloudwatch:{}", call.action);
    }
    if call.service == "route53" {
        let action = if call.action.starts_with("POST") {
            "ChangeResourceRecordSets"
        } else if call.action.contains("/rrset") {
            "ListResourceRecordSets"
        } else {
            "GetHostedZone"
        };
        return format!("route53:{action}");
    }
    format!("{}:{}", call.service, call.action)
}

#[tokio::test]
async fn every_recorded_call_is_allowed_by_a_statement_of_its_function() {
    let shared = load("template.yaml");
    let local = local(2).await;
    fixture::seed_service(&local.clients, &local.base, "mobile-zum-api", 10).await;
    // Settings from the service's parameter, as its stack creates it, with an alarm to read.
    fixture::put_alarm(&local.clients, "cutover-mobile-zum-api-5xx", "OK").await;
    let settings = fixture::settings_json(
        &local.base,
        1,
        1,
        json!({"ALARMS": ["cutover-mobile-zum-api-5xx"], "BAKE_S": 3600}),
    );
    fixture::put_settings_parameter(&local.clients, "mobile-zum-api", &settings).await;
    // A second service on the same listener: the same grants serve it, none added for it.
    let news_api = fixture::seed_service(&local.clients, &local.base, "news-api", 30).await;
    // Its QA route behind Cognito sign-on: register-target's repoint must keep it, and may.
    fixture::require_cognito_sign_on(&local.clients, &news_api.pre_product_rule, &news_api.green)
        .await;
    let news = fixture::settings_json(&local.base, 1, 0, json!({}));
    fixture::put_settings_parameter(&local.clients, "news-api", &news).await;
    let app = local.app(&[]);
    let mut seen: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut made: Vec<(Function, Call)> = Vec::new();
    let steps = [
        ("n1", Function::Provision, "release"),
        ("n1", Function::RegisterTarget, "release"),
        ("n1", Function::SwitchListener, "release"),
        ("r1", Function::Provision, "release"),
        ("r1", Function::RegisterTarget, "release"),
        ("r1", Function::SwitchListener, "release"),
        ("r2", Function::Provision, "release"),
        ("r2", Function::RegisterTarget, "release"),
        ("r2", Function::SwitchListener, "release"),
        ("r2", Function::SwitchListener, "rollback"),
        ("r2", Function::SwitchListener, "release"),
        ("r2", Function::Cleanup, "release"),
        ("r3", Function::Provision, "release"),
        // r3 holds the lock when its execution fails; r4 asks CodePipeline and takes over.
        ("r4", Function::Provision, "release"),
    ];
    for (release, function, action) in steps {
        if release == "r4" {
            let product = cutover_tests::Local::alb(&local).await.product.arn;
            let claim = cutover::world::Step::TagRoute {
                route: product,
                tags: [(
                    cutover::world::TAG_LOCK.to_owned(),
                    format!("r3@{}", local.now()),
                )]
                .into(),
            };
            cutover::aws::Aws::new(&local.config)
                .execute(&claim)
                .await
                .unwrap();
            local
                .endpoint
                .set_execution("cutover-mobile-zum-api", "r3", "Failed");
        }
        let mark = local.endpoint.mark();
        let service = if release.starts_with('n') {
            "news-api"
        } else {
            "mobile-zum-api"
        };
        let params = json!({"service": service, "release": release, "action": action});
        let run = local.run_job(&app, function, &params).await;
        assert!(
            run.succeeded(),
            "{} {release}: {:?}",
            function.as_str(),
            run.last()
        );
        for call in &local.endpoint.calls()[mark..] {
            seen.entry(function.as_str())
                .or_default()
                .insert(iam_action(call));
            made.push((function, call.clone()));
        }
    }
    assert_eq!(
        fixture::rule_action_types(&local.clients, &news_api.pre_product_rule).await,
        ["authenticate-cognito", "forward"]
    );
    // A failed release holding an address someone gave it: its fleet is marked, drained,
    // released and terminated by cleanup's events.
    let doomed = cutover::aws::Aws::new(&local.config)
        .instances(cutover::aws::InstanceQuery::Release("r3"))
        .await
        .unwrap();
    local
        .clients
        .ec2
        .associate_address()
        .allocation_id(&local.base.elastic_ips[1])
        .instance_id(&doomed[0].id)
        .send()
        .await
        .unwrap();
    // The events outside a pipeline: a failed execution's and the sweep's (cleanup), an alarm's
    // (switch-listener, which reads every service's parameter to find who names it).
    let mut failed = cutover_tests::sample_event("cleanup-pipeline-failed.json");
    failed["detail"]["execution-id"] = Value::from("r3");
    let events = [
        (Function::Cleanup, failed),
        (
            Function::Cleanup,
            cutover_tests::sample_event("cleanup-schedule.json"),
        ),
        (
            Function::SwitchListener,
            cutover_tests::alarm_event(local.now()),
        ),
    ];
    for (function, event) in events {
        let mark = local.endpoint.mark();
        app.handle(function, event).await.unwrap();
        made.extend(
            local.endpoint.calls()[mark..]
                .iter()
                .map(|c| (function, c.clone())),
        );
    }

    for function in FUNCTIONS {
        let allowed = function.aws_actions();
        let calls = &seen[function.as_str()];
        for call in calls {
            assert!(
                allowed.contains(&call.as_str()),
                "{} called {call}, not in its list",
                function.as_str()
            );
        }
        assert!(calls.len() >= 8, "{}: {calls:?}", function.as_str());
    }

    let world = iam::World::read(&local).await;
    let checked = every_request_is_allowed(&shared, &world, &made);
    for needed in [
        "ec2:RunInstances volume",
        "ec2:RunInstances network-interface",
        "ec2:CreateTags volume",
        "ec2:AssociateAddress network-interface",
        "ec2:AssociateAddress elastic-ip",
        "ec2:DisassociateAddress network-interface",
        "ec2:TerminateInstances instance",
        "elasticloadbalancing:ModifyRule listener-rule",
        "elasticloadbalancing:AddTags listener-rule",
        "route53:ChangeResourceRecordSets hostedzone",
        "sns:Publish cutover-releases",
        "ssm:GetParametersByPath parameter",
        "ssm:GetParameter parameter",
        "cloudwatch:DescribeAlarms *",
        "codepipeline:GetPipelineExecution cutover-mobile-zum-api",
        "cognito-idp:DescribeUserPoolClient userpool",
    ] {
        assert!(
            checked.contains(needed),
            "{needed} was never checked: {checked:?}"
        );
    }
}

/// Asserts that each request AWS makes for each successful call is allowed by a statement of the
/// function that made it; returns the `action resource-type` pairs checked.
fn every_request_is_allowed(
    shared: &Value,
    world: &iam::World,
    made: &[(Function, Call)],
) -> BTreeSet<String> {
    let mut checked = BTreeSet::new();
    for (function, call) in made.iter().filter(|(_, c)| c.status < 300) {
        let statements: Vec<Value> = granted(shared, *function)
            .iter()
            .map(|s| world.resolve_statement(s))
            .collect();
        for request in world.requests(call) {
            assert!(
                statements.iter().any(|s| iam::allows(s, &request)),
                "{} may not {} on {} with {:?} (call {} {:?})",
                function.as_str(),
                request.action,
                request.resource,
                request.context,
                call.action,
                call.params
            );
            checked.insert(format!("{} {}", request.action, request.resource_type()));
        }
    }
    checked
}

/// FLEET=asg: a release, a second one taking product with the first's scaling policy, a
/// rollback, the sweep after the bake, and a failed release's group taken by its event and the
/// sweep: every call is allowed, and only on cutover's groups and templates.
#[tokio::test]
async fn every_call_of_releases_in_groups_is_allowed_by_a_statement_of_its_function() {
    use super::groups::{describe, group_of, team_template};
    let shared = load("template.yaml");
    let local = local(0).await;
    let autoscaling = aws_sdk_autoscaling::Client::new(&local.config);
    fixture::seed_service(&local.clients, &local.base, "mobile-zum-api", 10).await;
    team_template(
        &local,
        Some(&format!(
            "arn:aws:iam::{}:instance-profile/cutover/mobile-zum-api-instances",
            iam::ACCOUNT
        )),
    )
    .await;
    let settings = fixture::settings_json(
        &local.base,
        2,
        0,
        json!({"FLEET": "asg", "LAUNCH_TEMPLATE": super::groups::TEAM_TEMPLATE,
               "INSTANCE_TYPE": null, "SG": null, "BAKE_S": 600, "RETRY_WINDOW_S": 0}),
    );
    fixture::put_settings_parameter(&local.clients, "mobile-zum-api", &settings).await;
    let app = local.app(&[]);
    let mut made: Vec<(Function, Call)> = Vec::new();
    for release in [R1, R2] {
        for function in [
            Function::Provision,
            Function::RegisterTarget,
            Function::SwitchListener,
        ] {
            made.extend(run(&local, &app, function, release, "release").await);
        }
        if release == R1 {
            autoscaling
                .put_scaling_policy()
                .auto_scaling_group_name(group_of(R1))
                .policy_name("cpu")
                .policy_type("TargetTrackingScaling")
                .target_tracking_configuration(
                    aws_sdk_autoscaling::types::TargetTrackingConfiguration::builder()
                        .predefined_metric_specification(
                            aws_sdk_autoscaling::types::PredefinedMetricSpecification::builder()
                                .predefined_metric_type(
                                    aws_sdk_autoscaling::types::MetricType::AsgAverageCpuUtilization,
                                )
                                .build(),
                        )
                        .target_value(60.0)
                        .build(),
                )
                .send()
                .await
                .unwrap();
        }
    }
    made.extend(run(&local, &app, Function::SwitchListener, R2, "rollback").await);
    made.extend(run(&local, &app, Function::Provision, R3, "release").await);
    let before = iam::World::read(&local).await;
    let mut failed = cutover_tests::sample_event("cleanup-pipeline-failed.json");
    failed["detail"]["execution-id"] = Value::from(R3);
    local.advance(601);
    for event in [failed, cutover_tests::sample_event("cleanup-schedule.json")] {
        let mark = local.endpoint.mark();
        app.handle(Function::Cleanup, event).await.unwrap();
        made.extend(
            local.endpoint.calls()[mark..]
                .iter()
                .map(|c| (Function::Cleanup, c.clone())),
        );
    }
    made.extend(run(&local, &app, Function::Cleanup, R2, "release").await);
    assert!(
        describe(&autoscaling, &group_of(R2)).await.is_none(),
        "R2's group is gone"
    );
    assert!(
        describe(&autoscaling, &group_of(R3)).await.is_none(),
        "R3's group is gone"
    );

    for (function, call) in &made {
        let action = iam_action(call);
        assert!(
            function.aws_actions().contains(&action.as_str()),
            "{} called {action}, not in its list",
            function.as_str()
        );
    }
    let world = iam::World::read(&local).await.remembering(before);
    let checked = every_request_is_allowed(&shared, &world, &made);
    for needed in [
        "autoscaling:CreateAutoScalingGroup autoScalingGroupName",
        "ec2:RunInstances launch-template",
        "ec2:RunInstances instance",
        "iam:PassRole role",
        "ec2:CreateLaunchTemplate launch-template",
        "ec2:CreateTags launch-template",
        "autoscaling:AttachLoadBalancerTargetGroups autoScalingGroupName",
        "autoscaling:CreateOrUpdateTags autoScalingGroupName",
        "autoscaling:SuspendProcesses autoScalingGroupName",
        "autoscaling:ResumeProcesses autoScalingGroupName",
        "autoscaling:PutScalingPolicy autoScalingGroupName",
        "autoscaling:DetachLoadBalancerTargetGroups autoScalingGroupName",
        "autoscaling:DeleteAutoScalingGroup autoScalingGroupName",
        "ec2:DeleteLaunchTemplate launch-template",
    ] {
        assert!(
            checked.contains(needed),
            "{needed} was never checked: {checked:?}"
        );
    }
}

/// One job of `mobile-zum-api` to its end, asserted to succeed; the calls it made.
async fn run(
    local: &cutover_tests::Local,
    app: &cutover::App,
    function: Function,
    release: &str,
    action: &str,
) -> Vec<(Function, Call)> {
    let params = json!({"service": "mobile-zum-api", "release": release, "action": action});
    let mark = local.endpoint.mark();
    let run = local.run_job(app, function, &params).await;
    assert!(
        run.succeeded(),
        "{} {release}: {:?}",
        function.as_str(),
        run.last()
    );
    local.endpoint.calls()[mark..]
        .iter()
        .map(|c| (function, c.clone()))
        .collect()
}

/// A small IAM evaluator for the statements cutover's templates use: Allow statements, glob
/// resource patterns, `StringLike`/`StringEquals`/`ArnLike`/`ArnEquals` conditions (and their
/// `ForAllValues:` forms) on request tags, resource tags, `ec2:CreateAction` and Route 53's
/// record names and types. Each recorded call becomes the authorisation
/// requests AWS makes for it: one per resource the action touches, with that resource's
/// condition keys (EC2 checks the tags a launch requests per created resource type).
pub(crate) mod iam {
    use std::collections::{BTreeMap, HashMap};

    use cutover_tests::{Call, Local};
    use serde_json::Value;

    pub const ACCOUNT: &str = "123456789012";
    pub const REGION: &str = "us-east-1";

    #[derive(Debug)]
    pub struct Request {
        pub action: String,
        pub resource: String,
        pub context: BTreeMap<String, Vec<String>>,
    }

    impl Request {
        pub fn resource_type(&self) -> &str {
            let tail = self.resource.rsplit(':').next().unwrap_or_default();
            tail.split('/').next().unwrap_or_default()
        }
    }

    pub struct World {
        refs: HashMap<String, String>,
        instance_tags: HashMap<String, Vec<(String, String)>>,
        address_tags: HashMap<String, Vec<(String, String)>>,
        elb_tags: HashMap<String, Vec<(String, String)>>,
        /// `FLEET=asg`: groups' tags, and launch templates (id, tags, data) by name, as they were
        /// when read (a group deleted since keeps what an earlier read saw).
        group_tags: HashMap<String, Vec<(String, String)>>,
        templates: HashMap<String, Template>,
    }

    #[derive(Debug, Clone, Default)]
    pub struct Template {
        id: String,
        tags: Vec<(String, String)>,
        image: String,
        security_groups: Vec<String>,
        profile: Option<String>,
    }

    pub(crate) fn ec2_tags(tags: &[aws_sdk_ec2::types::Tag]) -> Vec<(String, String)> {
        tags.iter()
            .map(|t| {
                (
                    t.key().unwrap_or_default().to_owned(),
                    t.value().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    impl World {
        pub async fn read(local: &Local) -> World {
            let mut instance_tags = HashMap::new();
            let reservations = local.clients.ec2.describe_instances().send().await.unwrap();
            for reservation in reservations.reservations() {
                for instance in reservation.instances() {
                    let tags = ec2_tags(instance.tags());
                    instance_tags.insert(instance.instance_id().unwrap().to_owned(), tags);
                }
            }
            let addresses = local.clients.ec2.describe_addresses().send().await.unwrap();
            let address_tags = addresses
                .addresses()
                .iter()
                .map(|a| {
                    let id = a.allocation_id().unwrap_or_default().to_owned();
                    (id, ec2_tags(a.tags()))
                })
                .collect();
            let mut arns: Vec<String> = Vec::new();
            let groups = local
                .clients
                .elb
                .describe_target_groups()
                .send()
                .await
                .unwrap();
            arns.extend(
                groups
                    .target_groups()
                    .iter()
                    .filter_map(|g| g.target_group_arn().map(str::to_owned)),
            );
            let listeners = local
                .clients
                .elb
                .describe_listeners()
                .load_balancer_arn(&local.base.load_balancer)
                .send()
                .await
                .unwrap();
            for listener in listeners.listeners() {
                let arn = listener.listener_arn().unwrap().to_owned();
                let rules = local
                    .clients
                    .elb
                    .describe_rules()
                    .listener_arn(&arn)
                    .send()
                    .await
                    .unwrap();
                arns.extend(
                    rules
                        .rules()
                        .iter()
                        .filter_map(|r| r.rule_arn().map(str::to_owned)),
                );
                arns.push(arn);
            }
            let mut elb_tags = HashMap::new();
            for batch in arns.chunks(20) {
                let tags = local
                    .clients
                    .elb
                    .describe_tags()
                    .set_resource_arns(Some(batch.to_vec()))
                    .send()
                    .await
                    .unwrap();
                for description in tags.tag_descriptions() {
                    elb_tags.insert(
                        description.resource_arn().unwrap().to_owned(),
                        description
                            .tags()
                            .iter()
                            .map(|t| {
                                (
                                    t.key().unwrap().to_owned(),
                                    t.value().unwrap_or_default().to_owned(),
                                )
                            })
                            .collect(),
                    );
                }
            }
            let refs = HashMap::from([
                ("AWS::Partition".to_owned(), "aws".to_owned()),
                ("AWS::Region".to_owned(), REGION.to_owned()),
                ("AWS::AccountId".to_owned(), ACCOUNT.to_owned()),
                ("ReleaseTopic".to_owned(), local.base.topic_arn.clone()),
                (
                    "ReleaseTopicKey.Arn".to_owned(),
                    format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/cutover"),
                ),
                (
                    "DeadLetters.Arn".to_owned(),
                    format!("arn:aws:sqs:{REGION}:{ACCOUNT}:cutover-dead-letters"),
                ),
                (
                    "InstanceRole.Arn".to_owned(),
                    format!("arn:aws:iam::{ACCOUNT}:role/mobile-zum-api-instances"),
                ),
                (
                    "PrivateZoneName".to_owned(),
                    cutover_tests::fixture::ZONE_NAME.to_owned(),
                ),
            ]);
            let (group_tags, templates) = groups_and_templates(local).await;
            World {
                refs,
                instance_tags,
                address_tags,
                elb_tags,
                group_tags,
                templates,
            }
        }

        /// What `earlier` saw of groups and templates that are gone now.
        pub fn remembering(mut self, earlier: World) -> World {
            for (name, tags) in earlier.group_tags {
                self.group_tags.entry(name).or_insert(tags);
            }
            for (name, template) in earlier.templates {
                self.templates.entry(name).or_insert(template);
            }
            self
        }

        /// `Fn::Sub`, `Ref`, `Fn::GetAtt` resolved against the local world.
        fn resolve(&self, value: &Value) -> Vec<String> {
            match value {
                Value::String(s) => vec![s.clone()],
                Value::Array(items) => items.iter().flat_map(|v| self.resolve(v)).collect(),
                Value::Object(map) => {
                    if let Some(Value::String(text)) = map.get("Fn::Sub") {
                        return vec![self.substitute(text)];
                    }
                    if let Some(Value::Array(form)) = map.get("Fn::Sub") {
                        return vec![self.substitute(form[0].as_str().unwrap_or_default())];
                    }
                    if let Some(Value::String(name)) = map.get("Ref") {
                        return vec![self.refs.get(name).cloned().unwrap_or_default()];
                    }
                    if let Some(Value::Array(parts)) = map.get("Fn::GetAtt") {
                        let key = format!(
                            "{}.{}",
                            parts[0].as_str().unwrap_or_default(),
                            parts[1].as_str().unwrap_or_default()
                        );
                        return vec![self.refs.get(&key).cloned().unwrap_or_default()];
                    }
                    vec![String::new()]
                }
                _ => vec![String::new()],
            }
        }

        fn substitute(&self, text: &str) -> String {
            let mut out = text.to_owned();
            for (name, value) in &self.refs {
                out = out.replace(&format!("${{{name}}}"), value);
            }
            out
        }

        pub fn resolve_statement(&self, statement: &Value) -> Value {
            let mut resolved = statement.clone();
            resolved["Resource"] = Value::from(self.resolve(&statement["Resource"]));
            if let Some(conditions) = resolved["Condition"].as_object_mut() {
                for keys in conditions.values_mut() {
                    for wanted in keys
                        .as_object_mut()
                        .into_iter()
                        .flat_map(|k| k.values_mut())
                    {
                        *wanted = Value::from(self.resolve(wanted));
                    }
                }
            }
            resolved
        }

        fn arn(&self, service: &str, resource: &str) -> String {
            format!("arn:aws:{service}:{REGION}:{ACCOUNT}:{resource}")
        }

        fn instance(&self, id: &str, action: &str) -> Request {
            self.tagged_ec2(
                &format!("instance/{id}"),
                self.instance_tags.get(id),
                action,
            )
        }

        fn address(&self, allocation_id: &str, action: &str) -> Request {
            let tags = self.address_tags.get(allocation_id);
            self.tagged_ec2(&format!("elastic-ip/{allocation_id}"), tags, action)
        }

        fn tagged_ec2(
            &self,
            resource: &str,
            tags: Option<&Vec<(String, String)>>,
            action: &str,
        ) -> Request {
            let mut context = BTreeMap::new();
            for (key, value) in tags.into_iter().flatten() {
                context.insert(format!("ec2:ResourceTag/{key}"), vec![value.clone()]);
                context.insert(format!("aws:ResourceTag/{key}"), vec![value.clone()]);
            }
            Request {
                action: action.to_owned(),
                resource: self.arn("ec2", resource),
                context,
            }
        }

        fn elb(&self, arn: &str, action: &str, call: &Call) -> Request {
            let mut context = BTreeMap::new();
            for (key, value) in self.elb_tags.get(arn).into_iter().flatten() {
                context.insert(format!("aws:ResourceTag/{key}"), vec![value.clone()]);
            }
            let requested = numbered(call, "Tags.member.", ".Key");
            if !requested.is_empty() {
                context.insert("aws:TagKeys".into(), requested.clone());
                for (n, key) in requested.iter().enumerate() {
                    let value = call
                        .param(&format!("Tags.member.{}.Value", n + 1))
                        .unwrap_or_default();
                    context.insert(format!("aws:RequestTag/{key}"), vec![value.to_owned()]);
                }
            }
            Request {
                action: action.to_owned(),
                resource: arn.to_owned(),
                context,
            }
        }

        pub fn requests(&self, call: &Call) -> Vec<Request> {
            let action = super::iam_action(call);
            let plain = |resource: &str| Request {
                action: action.clone(),
                resource: resource.to_owned(),
                context: BTreeMap::new(),
            };
            match call.service.as_str() {
                "autoscaling" => self.autoscaling_requests(call),
                "ec2" => match call.action.as_str() {
                    "RunInstances" => self.launch(call),
                    "CreateLaunchTemplate" | "DeleteLaunchTemplate" => {
                        self.launch_template_requests(call, &action)
                    }
                    "CreateTags" | "DeleteTags" => numbered(call, "ResourceId.", "")
                        .iter()
                        .map(|id| self.instance(id, &action))
                        .collect(),
                    "TerminateInstances" => numbered(call, "InstanceId.", "")
                        .iter()
                        .map(|id| self.instance(id, &action))
                        .collect(),
                    "AssociateAddress" => vec![
                        self.address(call.param("AllocationId").unwrap(), &action),
                        self.instance(call.param("InstanceId").unwrap(), &action),
                        plain(&self.arn("ec2", "network-interface/*")),
                    ],
                    "DisassociateAddress" => vec![
                        plain(&self.arn("ec2", "elastic-ip/*")),
                        plain(&self.arn("ec2", "network-interface/*")),
                    ],
                    _ => vec![plain("*")],
                },
                "elasticloadbalancing" => match call.action.as_str() {
                    "RegisterTargets" | "DeregisterTargets" => {
                        vec![self.elb(call.param("TargetGroupArn").unwrap(), &action, call)]
                    }
                    "ModifyRule" => {
                        let mut requests =
                            vec![self.elb(call.param("RuleArn").unwrap(), &action, call)];
                        // ELB checks a Cognito sign-on action with the caller's permission to
                        // read the user pool's client.
                        requests.extend(
                            numbered(
                                call,
                                "Actions.member.",
                                ".AuthenticateCognitoConfig.UserPoolArn",
                            )
                            .iter()
                            .map(|pool| Request {
                                action: "cognito-idp:DescribeUserPoolClient".into(),
                                resource: pool.clone(),
                                context: BTreeMap::new(),
                            }),
                        );
                        requests
                    }
                    "ModifyListener" => {
                        vec![self.elb(call.param("ListenerArn").unwrap(), &action, call)]
                    }
                    "AddTags" | "RemoveTags" => {
                        let mut requests: Vec<Request> = numbered(call, "ResourceArns.member.", "")
                            .iter()
                            .map(|arn| self.elb(arn, &action, call))
                            .collect();
                        if call.action == "RemoveTags" {
                            for request in &mut requests {
                                request.context.insert(
                                    "aws:TagKeys".into(),
                                    numbered(call, "TagKeys.member.", ""),
                                );
                            }
                        }
                        requests
                    }
                    _ => vec![plain("*")],
                },
                "route53" => {
                    let zone = call.action.split('/').nth(3).unwrap_or_default();
                    let mut request = plain(&format!("arn:aws:route53:::hostedzone/{zone}"));
                    if action == "route53:ChangeResourceRecordSets" {
                        // Route 53's normalised names: lower case, no trailing dot.
                        let names = numbered(call, "Name.", "")
                            .iter()
                            .map(|n| n.trim_end_matches('.').to_lowercase())
                            .collect();
                        request.context.insert(
                            "route53:ChangeResourceRecordSetsNormalizedRecordNames".into(),
                            names,
                        );
                        request.context.insert(
                            "route53:ChangeResourceRecordSetsRecordTypes".into(),
                            numbered(call, "Type.", ""),
                        );
                    }
                    vec![request]
                }
                "sns" => vec![plain(call.param("TopicArn").unwrap_or_default())],
                "codepipeline" if call.action == "GetPipelineExecution" => vec![plain(&self.arn(
                    "codepipeline",
                    call.param("pipelineName").unwrap_or_default(),
                ))],
                "ssm" => {
                    // A path is authorised as `parameter/cutover`, a name as its own ARN.
                    let name = call
                        .param("Path")
                        .or(call.param("Name"))
                        .unwrap_or_default();
                    vec![plain(&self.arn("ssm", &format!("parameter{name}")))]
                }
                _ => vec![plain("*")],
            }
        }

        /// RunInstances: the image, subnet and security groups it uses, and each resource type
        /// it creates with the tags requested for that type; tagging at launch is a CreateTags
        /// with `ec2:CreateAction=RunInstances` on each of them.
        fn launch(&self, call: &Call) -> Vec<Request> {
            let run = "ec2:RunInstances";
            let mut requests = vec![
                Request {
                    action: run.into(),
                    resource: format!(
                        "arn:aws:ec2:{REGION}::image/{}",
                        call.param("ImageId").unwrap()
                    ),
                    context: BTreeMap::new(),
                },
                Request {
                    action: run.into(),
                    resource: self.arn(
                        "ec2",
                        &format!("subnet/{}", call.param("SubnetId").unwrap()),
                    ),
                    context: BTreeMap::new(),
                },
            ];
            for group in numbered(call, "SecurityGroupId.", "") {
                requests.push(Request {
                    action: run.into(),
                    resource: self.arn("ec2", &format!("security-group/{group}")),
                    context: BTreeMap::new(),
                });
            }
            for kind in ["instance", "volume", "network-interface"] {
                let mut context = BTreeMap::new();
                let spec = (1..=10).find(|n| {
                    call.param(&format!("TagSpecification.{n}.ResourceType")) == Some(kind)
                });
                if let Some(n) = spec {
                    for (key, value) in (1..=50).map_while(|m| {
                        Some((
                            call.param(&format!("TagSpecification.{n}.Tag.{m}.Key"))?,
                            call.param(&format!("TagSpecification.{n}.Tag.{m}.Value"))?,
                        ))
                    }) {
                        context.insert(format!("aws:RequestTag/{key}"), vec![value.to_owned()]);
                    }
                    requests.push(Request {
                        action: "ec2:CreateTags".into(),
                        resource: self.arn("ec2", &format!("{kind}/*")),
                        context: BTreeMap::from([(
                            "ec2:CreateAction".to_owned(),
                            vec!["RunInstances".to_owned()],
                        )]),
                    });
                }
                requests.push(Request {
                    action: run.into(),
                    resource: self.arn("ec2", &format!("{kind}/*")),
                    context,
                });
            }
            requests
        }
    }

    async fn groups_and_templates(
        local: &Local,
    ) -> (
        HashMap<String, Vec<(String, String)>>,
        HashMap<String, Template>,
    ) {
        let autoscaling = aws_sdk_autoscaling::Client::new(&local.config);
        let groups = autoscaling
            .describe_auto_scaling_groups()
            .send()
            .await
            .unwrap();
        let group_tags = groups
            .auto_scaling_groups()
            .iter()
            .map(|g| {
                let tags = g
                    .tags()
                    .iter()
                    .map(|t| {
                        (
                            t.key().unwrap_or_default().to_owned(),
                            t.value().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect();
                (
                    g.auto_scaling_group_name().unwrap_or_default().to_owned(),
                    tags,
                )
            })
            .collect();
        let mut templates = HashMap::new();
        let listed = local
            .clients
            .ec2
            .describe_launch_templates()
            .send()
            .await
            .unwrap();
        for template in listed.launch_templates() {
            let name = template
                .launch_template_name()
                .unwrap_or_default()
                .to_owned();
            let versions = local
                .clients
                .ec2
                .describe_launch_template_versions()
                .launch_template_name(&name)
                .versions("$Default")
                .send()
                .await
                .unwrap();
            let data = versions.launch_template_versions()[0]
                .launch_template_data()
                .cloned()
                .unwrap_or_else(|| {
                    aws_sdk_ec2::types::ResponseLaunchTemplateData::builder().build()
                });
            templates.insert(
                name,
                Template {
                    id: template.launch_template_id().unwrap_or_default().to_owned(),
                    tags: ec2_tags(template.tags()),
                    image: data.image_id().unwrap_or_default().to_owned(),
                    security_groups: data.security_group_ids().to_vec(),
                    profile: data
                        .iam_instance_profile()
                        .and_then(|p| p.arn())
                        .map(str::to_owned),
                },
            );
        }
        (group_tags, templates)
    }

    impl World {
        fn group(&self, name: &str, action: &str) -> Request {
            let mut context = BTreeMap::new();
            for (key, value) in self.group_tags.get(name).into_iter().flatten() {
                context.insert(
                    format!("autoscaling:ResourceTag/{key}"),
                    vec![value.clone()],
                );
                context.insert(format!("aws:ResourceTag/{key}"), vec![value.clone()]);
            }
            Request {
                action: action.to_owned(),
                resource: self.arn(
                    "autoscaling",
                    &format!("autoScalingGroup:0a1b2c3d-uuid:autoScalingGroupName/{name}"),
                ),
                context,
            }
        }

        fn template(&self, name: &str, action: &str) -> (Request, Template) {
            let template = self.templates.get(name).cloned().unwrap_or_default();
            let mut request = self.tagged_ec2(
                &format!("launch-template/{}", template.id),
                Some(&template.tags),
                action,
            );
            request
                .context
                .retain(|key, _| key.starts_with("aws:ResourceTag/"));
            (request, template)
        }

        pub fn autoscaling_requests(&self, call: &Call) -> Vec<Request> {
            let action = super::iam_action(call);
            let tagged = || {
                let keys = numbered(call, "Tags.member.", ".Key");
                let mut context = BTreeMap::from([("aws:TagKeys".to_owned(), keys.clone())]);
                for (n, key) in keys.iter().enumerate() {
                    if let Some(value) = call.param(&format!("Tags.member.{}.Value", n + 1)) {
                        context.insert(format!("aws:RequestTag/{key}"), vec![value.to_owned()]);
                    }
                }
                context
            };
            match call.action.as_str() {
                "CreateAutoScalingGroup" => {
                    let name = call.param("AutoScalingGroupName").unwrap_or_default();
                    let mut create = self.group(name, &action);
                    create.context = tagged();
                    let mut requests = vec![create];
                    requests.extend(self.launch_through_template(call));
                    requests
                }
                "CreateOrUpdateTags" | "DeleteTags" => {
                    let name = call.param("Tags.member.1.ResourceId").unwrap_or_default();
                    let mut request = self.group(name, &action);
                    request.context.extend(tagged());
                    vec![request]
                }
                action_name if action_name.starts_with("Describe") => vec![Request {
                    action,
                    resource: "*".into(),
                    context: BTreeMap::new(),
                }],
                _ => vec![self.group(
                    call.param("AutoScalingGroupName").unwrap_or_default(),
                    &action,
                )],
            }
        }

        /// What CreateAutoScalingGroup checks of its caller (the Auto Scaling API permissions
        /// page): that it may launch from the template, in the subnets, the template's image and
        /// security groups, and pass the role of the template's instance profile.
        fn launch_through_template(&self, call: &Call) -> Vec<Request> {
            let run = "ec2:RunInstances";
            let name = call
                .param("LaunchTemplate.LaunchTemplateName")
                .unwrap_or_default();
            let (from_template, template) = self.template(name, run);
            let template_arn = from_template.resource.clone();
            let mut requests = vec![from_template];
            let plain = |resource: String| Request {
                action: run.into(),
                resource,
                context: BTreeMap::new(),
            };
            requests.push(plain(format!(
                "arn:aws:ec2:{REGION}::image/{}",
                template.image
            )));
            for subnet in call
                .param("VPCZoneIdentifier")
                .unwrap_or_default()
                .split(',')
            {
                requests.push(plain(self.arn("ec2", &format!("subnet/{subnet}"))));
            }
            for group in &template.security_groups {
                requests.push(plain(self.arn("ec2", &format!("security-group/{group}"))));
            }
            for kind in ["instance", "volume", "network-interface"] {
                requests.push(Request {
                    action: run.into(),
                    resource: self.arn("ec2", &format!("{kind}/*")),
                    context: BTreeMap::from([(
                        "ec2:LaunchTemplate".to_owned(),
                        vec![template_arn.clone()],
                    )]),
                });
            }
            if let Some(profile) = &template.profile {
                // The role a service's profile holds is under /cutover/ (service.yaml); this test's
                // profile is named and pathed as its role.
                let role = profile.replacen(":instance-profile/", ":role/", 1);
                requests.push(Request {
                    action: "iam:PassRole".into(),
                    resource: role,
                    context: BTreeMap::from([(
                        "iam:PassedToService".to_owned(),
                        vec!["ec2.amazonaws.com".to_owned()],
                    )]),
                });
            }
            requests
        }

        fn launch_template_requests(&self, call: &Call, action: &str) -> Vec<Request> {
            let name = call.param("LaunchTemplateName").unwrap_or_default();
            if call.action == "DeleteLaunchTemplate" {
                return vec![self.template(name, action).0];
            }
            let mut context = BTreeMap::new();
            for (key, value) in (1..=50).map_while(|m| {
                Some((
                    call.param(&format!("TagSpecification.1.Tag.{m}.Key"))?,
                    call.param(&format!("TagSpecification.1.Tag.{m}.Value"))?,
                ))
            }) {
                context.insert(format!("aws:RequestTag/{key}"), vec![value.to_owned()]);
            }
            vec![
                Request {
                    action: action.to_owned(),
                    resource: self.arn("ec2", "launch-template/*"),
                    context,
                },
                Request {
                    action: "ec2:CreateTags".into(),
                    resource: self.arn("ec2", "launch-template/*"),
                    context: BTreeMap::from([(
                        "ec2:CreateAction".to_owned(),
                        vec!["CreateLaunchTemplate".to_owned()],
                    )]),
                },
            ]
        }
    }

    fn numbered(call: &Call, prefix: &str, suffix: &str) -> Vec<String> {
        (1..)
            .map_while(|n| {
                call.param(&format!("{prefix}{n}{suffix}"))
                    .map(str::to_owned)
            })
            .collect()
    }

    /// `*` and `?` globbing, as IAM matches resources and `*Like` conditions.
    pub fn glob(pattern: &str, text: &str) -> bool {
        fn go(p: &[u8], t: &[u8]) -> bool {
            match (p.first(), t.first()) {
                (None, None) => true,
                (Some(b'*'), _) => go(&p[1..], t) || (!t.is_empty() && go(p, &t[1..])),
                (Some(b'?'), Some(_)) => go(&p[1..], &t[1..]),
                (Some(a), Some(b)) if a == b => go(&p[1..], &t[1..]),
                _ => false,
            }
        }
        go(pattern.as_bytes(), text.as_bytes())
    }

    pub fn allows(statement: &Value, request: &Request) -> bool {
        if statement["Effect"] != "Allow" {
            return false;
        }
        let strings = |v: &Value| -> Vec<String> {
            match v {
                Value::Array(items) => items
                    .iter()
                    .filter_map(|i| i.as_str().map(str::to_owned))
                    .collect(),
                Value::String(s) => vec![s.clone()],
                _ => Vec::new(),
            }
        };
        if !strings(&statement["Action"])
            .iter()
            .any(|a| glob(a, &request.action))
        {
            return false;
        }
        if !strings(&statement["Resource"])
            .iter()
            .any(|r| glob(r, &request.resource))
        {
            return false;
        }
        let Some(conditions) = statement["Condition"].as_object() else {
            return true;
        };
        conditions.iter().all(|(operator, keys)| {
            keys.as_object().unwrap().iter().all(|(key, wanted)| {
                let wanted = strings(wanted);
                let (every, operator) = match operator.strip_prefix("ForAllValues:") {
                    Some(operator) => (true, operator),
                    None => (false, operator.as_str()),
                };
                let matches = |value: &String| {
                    wanted.iter().any(|w| match operator {
                        "StringLike" | "ArnLike" => glob(w, value),
                        "StringEquals" | "ArnEquals" => w == value,
                        other => panic!("condition operator {other} is not modelled"),
                    })
                };
                match request.context.get(key) {
                    // ForAllValues: every value the request has matches (none is vacuous).
                    Some(have) if every => have.iter().all(matches),
                    None if every => true,
                    Some(have) => have.iter().any(matches),
                    None => false,
                }
            })
        })
    }
}
