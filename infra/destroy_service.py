"""A service's last day: `make destroy-service SERVICE=<service>`.

cutover's instances, the addresses they hold and the records it wrote are not resources of the
service's stack, so deleting the stack alone leaves them running and billed. In order:

1. read what the stack and the service's settings name (zone, load balancer, buckets);
2. turn off the deletion protection the stack set on its own load balancer;
3. empty the stack's versioned buckets (every version and delete marker);
4. delete the stack and wait: its rules go first, so nothing routes to the fleet any more;
5. terminate every instance tagged cutover:service=<service>;
6. disassociate and release the Elastic IPs tagged cutover:service=<service>;
7. delete the A and TXT records cutover wrote for the service (those with its ownership record).

Each step says what it did; a step with nothing to do says so. Run it again after a failure: every
step is safe to repeat. AWS_ENDPOINT_URL points it at a local endpoint (the tests' moto).
"""

import argparse
import json
import sys

import boto3
from botocore.exceptions import ClientError

TAG = "cutover:service"


def say(step, text):
    print(f"[{step}] {text}", flush=True)


def settings_of(ssm, service):
    try:
        raw = ssm.get_parameter(Name=f"/cutover/{service}")["Parameter"]["Value"]
    except ClientError as error:
        if error.response["Error"]["Code"] == "ParameterNotFound":
            return {}
        raise
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return {}


def stack_resources(cloudformation, stack):
    try:
        listed = cloudformation.describe_stack_resources(StackName=stack)["StackResources"]
    except ClientError as error:
        if "does not exist" in error.response["Error"]["Message"]:
            return None
        raise
    return {r["LogicalResourceId"]: r.get("PhysicalResourceId") for r in listed}


def unprotect(elb, resources):
    arn = (resources or {}).get("LoadBalancer")
    if not arn:
        say(2, "no load balancer of the stack's own (a shared listener, or none)")
        return
    elb.modify_load_balancer_attributes(
        LoadBalancerArn=arn,
        Attributes=[{"Key": "deletion_protection.enabled", "Value": "false"}],
    )
    say(2, f"deletion protection off on {arn}")


def empty(s3, resources):
    for logical in ("SourceBucket", "ArtifactBucket"):
        bucket = (resources or {}).get(logical)
        if not bucket:
            continue
        removed = 0
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
            objects = [
                {"Key": v["Key"], "VersionId": v["VersionId"]}
                for v in page.get("Versions", []) + page.get("DeleteMarkers", [])
            ]
            if objects:
                s3.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": True})
                removed += len(objects)
        say(3, f"emptied {bucket}: {removed} object version(s) and delete marker(s)")


def delete_stack(cloudformation, stack, resources):
    if resources is None:
        say(4, f"stack {stack} does not exist")
        return
    cloudformation.delete_stack(StackName=stack)
    cloudformation.get_waiter("stack_delete_complete").wait(StackName=stack)
    say(4, f"stack {stack} deleted")


def terminate(ec2, service):
    filters = [
        {"Name": f"tag:{TAG}", "Values": [service]},
        {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
    ]
    ids = [
        i["InstanceId"]
        for page in ec2.get_paginator("describe_instances").paginate(Filters=filters)
        for r in page["Reservations"]
        for i in r["Instances"]
    ]
    if ids:
        ec2.terminate_instances(InstanceIds=ids)
    say(5, f"terminated {len(ids)} instance(s) {' '.join(ids)}".rstrip())


def release(ec2, service):
    addresses = ec2.describe_addresses(Filters=[{"Name": f"tag:{TAG}", "Values": [service]}])
    released = []
    for address in addresses["Addresses"]:
        if address.get("AssociationId"):
            ec2.disassociate_address(AssociationId=address["AssociationId"])
        ec2.release_address(AllocationId=address["AllocationId"])
        released.append(address["AllocationId"])
    say(6, f"released {len(released)} address(es) {' '.join(released)}".rstrip())


def delete_records(route53, service, zone_id):
    if not zone_id:
        say(7, "no DNS_ZONE in the service's settings: no records to delete")
        return
    marker = f'"heritage=cutover,cutover/service={service}"'
    sets = [
        s
        for page in route53.get_paginator("list_resource_record_sets").paginate(HostedZoneId=zone_id)
        for s in page["ResourceRecordSets"]
    ]
    owned = {
        s["Name"]
        for s in sets
        if s["Type"] == "TXT" and any(r["Value"] == marker for r in s.get("ResourceRecords", []))
    }
    changes = [
        {"Action": "DELETE", "ResourceRecordSet": s}
        for s in sets
        if s["Name"] in owned and s["Type"] in ("A", "TXT")
    ]
    if changes:
        route53.change_resource_record_sets(
            HostedZoneId=zone_id, ChangeBatch={"Changes": changes}
        )
    say(7, f"deleted {len(changes)} record set(s) cutover wrote for {service} in {zone_id}")


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("service")
    parser.add_argument("--stack", help="the service's stack (default: the service's name)")
    args = parser.parse_args(argv)
    stack = args.stack or args.service
    session = boto3.session.Session()
    client = session.client

    settings = settings_of(client("ssm"), args.service)
    resources = stack_resources(client("cloudformation"), stack)
    say(1, f"stack {stack}: {'absent' if resources is None else f'{len(resources)} resources'}; "
           f"zone {settings.get('DNS_ZONE', 'none')}")
    unprotect(client("elbv2"), resources)
    empty(client("s3"), resources)
    delete_stack(client("cloudformation"), stack, resources)
    ec2 = client("ec2")
    terminate(ec2, args.service)
    release(ec2, args.service)
    delete_records(client("route53"), args.service, settings.get("DNS_ZONE"))
    say("done", f"{args.service} is gone; nothing of it is left running or billed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
