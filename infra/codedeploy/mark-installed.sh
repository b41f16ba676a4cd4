#!/bin/sh
# CodeDeploy ValidateService hook for cutover services (FLEET=instances, INSTALL_MARK=true):
# tags this instance cutover:installed=<its release> once the build is installed and validated,
# so register-target takes the release only when every instance of it has the build (a
# deployment counts a success once its minimum of healthy hosts succeeded, never all of them).
# In the team's appspec.yml:
#   hooks:
#     ValidateService:
#       - location: mark-installed.sh
#         timeout: 60
# The service stack's instance role may tag only the service's instances, and only this key.
set -eu
token=$(curl -sf -X PUT http://169.254.169.254/latest/api/token \
  -H "X-aws-ec2-metadata-token-ttl-seconds: 60")
meta() { curl -sf -H "X-aws-ec2-metadata-token: $token" "http://169.254.169.254/latest/$1"; }
instance=$(meta meta-data/instance-id)
region=$(meta meta-data/placement/region)
release=$(aws ec2 describe-tags --region "$region" \
  --filters "Name=resource-id,Values=$instance" "Name=key,Values=cutover:release" \
  --query 'Tags[0].Value' --output text)
if [ -z "$release" ] || [ "$release" = "None" ]; then
  echo "instance $instance has no cutover:release tag: not a cutover fleet" >&2
  exit 1
fi
aws ec2 create-tags --region "$region" --resources "$instance" \
  --tags "Key=cutover:installed,Value=$release"
