//! The four functions, and the IAM actions each one's code calls.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Function {
    Provision,
    RegisterTarget,
    SwitchListener,
    Cleanup,
}

/// IAM actions every function may call (its reads, the job acknowledgement, notifications).
const COMMON_ACTIONS: &[&str] = &[
    "ec2:DescribeInstances",
    "elasticloadbalancing:DescribeTargetGroups",
    "elasticloadbalancing:DescribeTags",
    "elasticloadbalancing:DescribeListeners",
    "elasticloadbalancing:DescribeRules",
    "elasticloadbalancing:DescribeTargetHealth",
    "codepipeline:PutJobSuccessResult",
    "codepipeline:PutJobFailureResult",
    "sns:Publish",
    "ssm:GetParametersByPath",
    "ssm:GetParameter",
];
/// `FLEET=asg`: every function reads the service's groups, and carries a stage change out on a
/// group's tags and processes (`plan::through_groups`).
const GROUP_ACTIONS: &[&str] = &[
    "autoscaling:DescribeAutoScalingGroups",
    "autoscaling:DescribePolicies",
    "autoscaling:CreateOrUpdateTags",
    "autoscaling:DeleteTags",
    "autoscaling:SuspendProcesses",
    "autoscaling:ResumeProcesses",
    "autoscaling:PutScalingPolicy",
    "ec2:DescribeLaunchTemplates",
    "ec2:DescribeLaunchTemplateVersions",
];
const DNS_ACTIONS: &[&str] = &[
    "route53:GetHostedZone",
    "route53:ListResourceRecordSets",
    "route53:ChangeResourceRecordSets",
];

impl Function {
    /// The IAM actions this function's code calls: `infra/template.yaml` must grant each one, and
    /// the end-to-end tests check that the calls made stay within this list.
    pub fn aws_actions(self) -> Vec<&'static str> {
        let own: &[&str] = match self {
            Function::Provision => &[
                "codepipeline:GetPipelineExecution",
                "ec2:DescribeAddresses",
                "ec2:RunInstances",
                "ec2:CreateTags",
                "ec2:AssociateAddress",
                "ec2:TerminateInstances",
                "ec2:CreateLaunchTemplate",
                "autoscaling:CreateAutoScalingGroup",
            ],
            Function::RegisterTarget => &[
                "codepipeline:GetPipelineExecution",
                "elasticloadbalancing:RegisterTargets",
                "elasticloadbalancing:DeregisterTargets",
                "elasticloadbalancing:ModifyRule",
                "elasticloadbalancing:ModifyListener",
                "elasticloadbalancing:AddTags",
                "autoscaling:AttachLoadBalancerTargetGroups",
                "autoscaling:DetachLoadBalancerTargetGroups",
            ],
            Function::SwitchListener => &[
                "ec2:DescribeAddresses",
                "cloudwatch:DescribeAlarms",
                "ec2:CreateTags",
                "ec2:DeleteTags",
                "ec2:AssociateAddress",
                "elasticloadbalancing:ModifyRule",
                "elasticloadbalancing:ModifyListener",
                "elasticloadbalancing:AddTags",
                "elasticloadbalancing:RemoveTags",
            ],
            Function::Cleanup => &[
                "ec2:DescribeAddresses",
                "cloudwatch:DescribeAlarms",
                "ec2:CreateTags",
                "ec2:TerminateInstances",
                "ec2:DisassociateAddress",
                "elasticloadbalancing:DeregisterTargets",
                "elasticloadbalancing:RemoveTags",
                "autoscaling:DetachLoadBalancerTargetGroups",
                "autoscaling:DeleteAutoScalingGroup",
                "ec2:DeleteLaunchTemplate",
            ],
        };
        let dns = if self.writes_dns() { DNS_ACTIONS } else { &[] };
        COMMON_ACTIONS
            .iter()
            .chain(GROUP_ACTIONS)
            .chain(own)
            .chain(dns)
            .copied()
            .collect()
    }

    pub fn writes_dns(self) -> bool {
        self != Function::RegisterTarget
    }

    /// Whether it reads its slots' targets and their health (provision needs only the lock).
    pub fn reads_target_health(self) -> bool {
        self != Function::Provision
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Function::Provision => "provision",
            Function::RegisterTarget => "register-target",
            Function::SwitchListener => "switch-listener",
            Function::Cleanup => "cleanup",
        }
    }
}
