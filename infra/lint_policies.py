"""Every IAM policy in infra/*.yaml, checked against AWS's catalogue of actions, resource types and
condition keys by parliament (offline): an action that does not exist, a resource it cannot act
on, or a condition key the action does not support fails `make lint`.

CloudFormation's intrinsics are resolved to realistic placeholders (an ARN keeps its shape), so
parliament sees the policies as IAM would store them.
"""

import json
import re
import sys
from pathlib import Path

import yaml
from parliament import analyze_policy_string

# Findings that mean the policy and AWS's catalogue disagree; the rest (wide resources that a
# Describe action needs, for example) are style, and checkov has its say on those. Parliament's
# RESOURCE_MISMATCH wants every resource type an action marks required in one statement (all of
# RunInstances' in one, both listener-rule/app and listener-rule/net for ModifyRule), which the
# per-resource evaluation of IAM does not; `resources_no_action_can_touch` checks instead that
# each resource is one some action of its statement acts on.
FAILING = {
    "UNKNOWN_ACTION",
    "UNKNOWN_PREFIX",
    "UNKNOWN_CONDITION_FOR_ACTION",
    "UNKNOWN_OPERATOR",
    "MISMATCHED_TYPE",
    "INVALID_ARN",
    "MALFORMED",
    "MALFORMED_JSON",
    "BAD_PATTERN_FOR_MFA",
}

PLACEHOLDERS = {
    "AWS::Partition": "aws",
    "AWS::Region": "us-east-1",
    "AWS::AccountId": "123456789012",
    "AWS::StackName": "cutover",
}


class Loader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags (`!Sub x` → `{"Fn::Sub": x}`)."""


def _intrinsic(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {"Fn::" + suffix: value}


Loader.add_multi_constructor("!", _intrinsic)


def resolve(value, resources):
    """A policy's intrinsics as the strings they become (an ARN for a resource's Arn)."""
    if isinstance(value, list):
        return [resolve(v, resources) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) != 1:
        return {k: resolve(v, resources) for k, v in value.items()}
    (key, arg), = value.items()
    if key == "Ref":
        return PLACEHOLDERS.get(arg) or placeholder_of(arg, resources)
    if key == "Fn::GetAtt":
        return placeholder_of(arg[0], resources)
    if key == "Fn::Sub":
        text, names = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
        def sub(match):
            name = match.group(1)
            if name in names:
                return resolve(names[name], resources)
            return PLACEHOLDERS.get(name) or placeholder_of(name.split(".")[0], resources)
        return re.sub(r"\$\{([^}]+)\}", sub, text)
    if key == "Fn::ImportValue":
        name = json.dumps(arg)
        for export, arn in IMPORTS.items():
            if export in name:
                return arn
        return "imported"
    if key == "Fn::If":
        return resolve(arg[1], resources)
    return {key: resolve(arg, resources)}


# What a reference to a resource of each type stands for in a policy.
ARNS = {
    "AWS::SNS::Topic": "arn:aws:sns:us-east-1:123456789012:cutover-releases",
    "AWS::KMS::Key": "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    "AWS::SQS::Queue": "arn:aws:sqs:us-east-1:123456789012:cutover-dead-letters",
    "AWS::S3::Bucket": "arn:aws:s3:::cutover-artifacts",
    "AWS::CodePipeline::Pipeline": "cutover-mobile-zum-api",
    "AWS::IAM::Role": "arn:aws:iam::123456789012:role/cutover/instances",
    "AWS::CodeDeploy::Application": "cutover-mobile-zum-api",
    "AWS::CodeDeploy::DeploymentGroup": "pre-product",
}


IMPORTS = {
    "TopicArn": ARNS["AWS::SNS::Topic"],
    "KeyArn": ARNS["AWS::KMS::Key"],
    "FunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:cutover-cleanup",
}


def placeholder_of(name, resources):
    kind = resources.get(name, {}).get("Type", "")
    if kind in ARNS:
        return ARNS[kind]
    if name.endswith("KmsKeyArn"):
        return ARNS["AWS::KMS::Key"]
    return name  # a parameter: its value is a name or an id


def policies(template):
    """(where, policy document) for every inline policy of a template."""
    resources = template.get("Resources", {})
    for logical_id, resource in resources.items():
        properties = resource.get("Properties", {})
        documents = []
        if "PolicyDocument" in properties:
            documents.append(("", properties["PolicyDocument"]))
        for policy in properties.get("Policies", []) or []:
            if isinstance(policy, dict) and "PolicyDocument" in policy:
                documents.append((policy.get("PolicyName", ""), policy["PolicyDocument"]))
            elif isinstance(policy, dict) and "Statement" in policy:
                documents.append(("", {"Version": "2012-10-17", "Statement": policy["Statement"]}))
        for name, document in documents:
            if resource.get("Type") in ("AWS::SNS::TopicPolicy", "AWS::KMS::Key"):
                continue  # resource policies: principals, not an identity's grants
            yield f"{logical_id} {name}".strip(), resolve(document, resources)


def resources_no_action_can_touch(document):
    """Resources of a statement that match none of its actions' resource types."""
    from parliament import expand_action, is_arn_strictly_valid
    from parliament.statement import get_arn_format, get_privilege_info

    problems = []
    for statement in document.get("Statement", []):
        actions = statement.get("Action", [])
        resources = statement.get("Resource", [])
        actions = [actions] if isinstance(actions, str) else actions
        resources = [resources] if isinstance(resources, str) else resources
        formats = []
        for action in actions:
            for expanded in expand_action(action):
                info = get_privilege_info(expanded["service"], expanded["action"])
                for kind in info["resource_types"]:
                    name = kind["resource_type"].rstrip("*")
                    formats.append(
                        (name, "*" if not name else get_arn_format(name, info["service_resources"]))
                    )
        for resource in resources:
            if resource == "*" or any(
                fmt == "*" or is_arn_strictly_valid(name, fmt, resource) for name, fmt in formats
            ):
                continue
            problems.append(f"{statement.get('Sid', '?')}: no action of {actions} acts on {resource}")
    return problems


def main(paths):
    failed = 0
    checked = 0
    for path in paths:
        template = yaml.load(Path(path).read_text(), Loader=Loader)
        for where, document in policies(template):
            checked += 1
            for finding in analyze_policy_string(json.dumps(document)).findings:
                if finding.issue in FAILING:
                    failed += 1
                    print(f"{path}: {where}: {finding.issue}: {finding.detail} at {finding.location}")
            for problem in resources_no_action_can_touch(document):
                failed += 1
                print(f"{path}: {where}: RESOURCE_NO_ACTION_ACTS_ON: {problem}")
    print(f"parliament: {checked} policies, {failed} disagree with AWS's catalogue")
    return 1 if failed or not checked else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
