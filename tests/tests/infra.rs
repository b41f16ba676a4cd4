//! `infra/` is wired right: templates parse (through cfn-lint's own loader), every function the
//! pipeline and rules use exists, every Invoke action's UserParameters parse with the function's
//! own parser, IAM grants every call the code makes and no mutating statement is unbounded. And
//! the calls the functions really make (recorded at the endpoint) stay within their lists.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use cutover::event::Invocation;
use cutover::Function;
use cutover_tests::lambda::FUNCTIONS;
use cutover_tests::moto::repo_root;
use cutover_tests::{fixture, job_event, local, Call};
use serde_json::{json, Value};

/// The template as JSON, intrinsic functions as `{"Ref": ..}` / `{"Fn::Sub": ..}`.
fn load(template: &str) -> Option<Value> {
    let python = repo_root().join(".venv/bin/python");
    if !python.exists() {
        if std::env::var_os("CI").is_some() {
            panic!("{} is missing: run `make setup`", python.display());
        }
        eprintln!("\n!!! SKIPPED: no .venv (run `make setup`): the infra checks did not run !!!\n");
        return None;
    }
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
    Some(serde_json::from_slice(&output.stdout).expect("JSON"))
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

#[test]
fn every_function_is_granted_exactly_what_its_code_calls_and_no_more_than_it_must() {
    let Some(template) = load("template.yaml") else {
        return;
    };
    let resources = &template["Resources"];
    for function in FUNCTIONS {
        let resource = &resources[logical_id(function)];
        assert_eq!(
            resource["Type"],
            "AWS::Serverless::Function",
            "{}",
            function.as_str()
        );
        assert_eq!(resource["Metadata"]["BuildMethod"], "rust-cargolambda");
        assert_eq!(
            resource["Metadata"]["BuildProperties"]["Binary"],
            function.as_str()
        );
        let statements = statements(resource);
        let granted: BTreeSet<String> = statements
            .iter()
            .flat_map(|s| as_list(&s["Action"]))
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect();
        for action in function.aws_actions() {
            assert!(
                granted.contains(action),
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
                "{}: {mutating:?} on Resource * without a tag condition",
                function.as_str()
            );
        }
    }
}

#[test]
fn the_pipeline_invokes_existing_functions_with_parameters_they_accept() {
    let Some(template) = load("template.yaml") else {
        return;
    };
    let pipeline = &template["Resources"]["Pipeline"]["Properties"];
    assert_eq!(pipeline["PipelineType"], "V2");
    assert_eq!(pipeline["ExecutionMode"], "QUEUED");
    let stages: Vec<&str> = pipeline["Stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["Name"].as_str())
        .collect();
    assert_eq!(stages, ["Source", "Deploy", "Approval", "Release"]);
    let mut invoked = Vec::new();
    for stage in pipeline["Stages"].as_array().unwrap() {
        for action in stage["Actions"].as_array().unwrap() {
            if action["ActionTypeId"]["Category"] != "Invoke" {
                continue;
            }
            let config = &action["Configuration"];
            let target = config["FunctionName"]["Ref"]
                .as_str()
                .expect("FunctionName is a Ref");
            let function = FUNCTIONS
                .into_iter()
                .find(|f| logical_id(*f) == target)
                .expect("an existing function");
            let raw = config["UserParameters"]["Fn::Sub"]
                .as_str()
                .expect("UserParameters via Fn::Sub");
            let params: Value =
                serde_json::from_str(&raw.replace("${ServiceName}", "mobile-zum-api").replace(
                    "#{codepipeline.PipelineExecutionId}",
                    "0f6c1a2b-0001-4a5b-9c8d-111111111111",
                ))
                .expect("UserParameters is JSON");
            match Invocation::parse(job_event(function, "job-1", &params, None)).unwrap() {
                Invocation::Job { request, .. } => {
                    request.unwrap_or_else(|e| panic!("{target}: {e}"));
                }
                other => panic!("{other:?}"),
            }
            invoked.push((stage["Name"].as_str().unwrap().to_owned(), function));
        }
    }
    let expected = [
        ("Deploy", Function::Provision),
        ("Deploy", Function::RegisterTarget),
        ("Release", Function::SwitchListener),
        ("Release", Function::Cleanup),
    ];
    assert_eq!(invoked, expected.map(|(s, f)| (s.to_owned(), f)));

    let events = &template["Resources"]["CleanupFunction"]["Properties"]["Events"];
    let states = &events["FailedExecution"]["Properties"]["Pattern"]["detail"]["state"];
    for state in ["FAILED", "CANCELED", "SUPERSEDED"] {
        assert!(
            states.as_array().unwrap().contains(&json!(state)),
            "{state}"
        );
    }
    assert_eq!(events["Sweep"]["Type"], "Schedule");
    let group =
        &template["Resources"]["PreProductDeploymentGroup"]["Properties"]["Ec2TagSet"].to_string();
    assert!(
        group.contains("cutover:service") && group.contains("pre-product"),
        "{group}"
    );
}

#[test]
fn the_example_service_is_tagged_the_way_cutover_finds_it() {
    let Some(template) = load("service.yaml") else {
        return;
    };
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

/// IAM action for a call recorded at the endpoint.
fn iam_action(call: &Call) -> String {
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
async fn the_calls_each_function_makes_are_in_its_list() {
    let Some(local) = local(1).await else { return };
    fixture::seed_service(&local.clients, &local.base, "mobile-zum-api", 10).await;
    let app = local.app(&[(
        "MOBILE_ZUM_API",
        fixture::settings_json(&local.base, 1, 1, json!({})),
    )]);
    let mut seen: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let steps = [
        ("r1", Function::Provision, "release"),
        ("r1", Function::RegisterTarget, "release"),
        ("r1", Function::SwitchListener, "release"),
        ("r2", Function::Provision, "release"),
        ("r2", Function::RegisterTarget, "release"),
        ("r2", Function::SwitchListener, "release"),
        ("r2", Function::SwitchListener, "rollback"),
        ("r2", Function::SwitchListener, "release"),
        ("r2", Function::Cleanup, "release"),
    ];
    for (release, function, action) in steps {
        let mark = local.endpoint.mark();
        let params = json!({"service": "mobile-zum-api", "release": release, "action": action});
        let run = local.run_job(&app, function, &params).await;
        assert!(
            run.succeeded(),
            "{} {release}: {:?}",
            function.as_str(),
            run.last()
        );
        let calls = local.endpoint.calls()[mark..]
            .iter()
            .map(iam_action)
            .collect::<Vec<_>>();
        seen.entry(function.as_str()).or_default().extend(calls);
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
}
