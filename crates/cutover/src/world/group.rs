//! `FLEET=asg`: the Auto Scaling groups and launch templates cutover creates, one of each per
//! release, found by their `cutover:service` tag. The team's own template and groups are never
//! read into these (they carry no cutover tag) and never changed.

use serde::Serialize;

use super::step::describe_tags;
use super::{short_arn, Stage, Step};
use crate::names::{ReleaseId, ServiceName};

/// The tag Auto Scaling puts on every instance a group launches.
pub const TAG_GROUP_NAME: &str = "aws:autoscaling:groupName";

/// What a held group does not do while it bakes (kept whole for a rollback): no scaling by
/// alarms or schedules, no rebalancing, no replacing of instances it finds unhealthy. `Launch`
/// and `Terminate` stay on, so a rollback's resume finds a group that works.
pub const HELD_PROCESSES: [&str; 4] = [
    "AlarmNotification",
    "ScheduledActions",
    "AZRebalance",
    "ReplaceUnhealthy",
];

/// An Auto Scaling group cutover created for a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Group {
    pub name: String,
    pub service: String,
    pub release: Option<ReleaseId>,
    pub stage: Option<Stage>,
    pub retired_at: Option<u64>,
    pub failed_at: Option<u64>,
    pub min: u32,
    pub max: u32,
    pub desired: u32,
    pub members: Vec<Member>,
    /// The target groups attached to it (Auto Scaling registers its instances there).
    pub target_groups: Vec<String>,
    pub suspended: Vec<String>,
    /// The launch template it launches from, by name.
    pub launch_template: Option<String>,
    /// Its target-tracking policies (read only where the switch copies them).
    pub policies: Vec<TrackingPolicy>,
    /// `Delete in progress`: nothing more is planned for it.
    pub deleting: bool,
}

impl Group {
    pub fn in_service(&self) -> usize {
        self.members.iter().filter(|m| m.in_service).count()
    }

    pub fn has(&self, instance_id: &str) -> bool {
        self.members.iter().any(|m| m.id == instance_id)
    }

    pub fn is_held(&self) -> bool {
        HELD_PROCESSES
            .iter()
            .all(|p| self.suspended.iter().any(|s| s == p))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    pub id: String,
    /// Lifecycle state `InService`.
    pub in_service: bool,
}

/// A target-tracking scaling policy, as `PutScalingPolicy` takes it back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrackingPolicy {
    pub name: String,
    /// `PredefinedMetricType`, e.g. `ALBRequestCountPerTarget`.
    pub metric: String,
    /// For `ALBRequestCountPerTarget`: `app/<lb>/<id>/targetgroup/<tg>/<id>`.
    pub resource_label: Option<String>,
    pub target_value: f64,
    pub disable_scale_in: bool,
}

// Target values are finite numbers read from AWS.
impl Eq for TrackingPolicy {}

impl TrackingPolicy {
    /// The same policy, measured on `target_group` (an ARN) where it is measured on a target group.
    pub fn on_target_group(&self, target_group: &str) -> TrackingPolicy {
        let resource_label = self.resource_label.as_ref().map(|label| {
            let suffix = target_group
                .split_once(":targetgroup/")
                .map(|(_, rest)| format!("targetgroup/{rest}"));
            match (label.split_once("/targetgroup/"), suffix) {
                (Some((load_balancer, _)), Some(suffix)) => format!("{load_balancer}/{suffix}"),
                _ => label.clone(),
            }
        });
        TrackingPolicy {
            resource_label,
            ..self.clone()
        }
    }
}

impl Step {
    /// A call to Auto Scaling, or to EC2 for a launch template (`FLEET=asg`).
    pub fn is_group_step(&self) -> bool {
        matches!(
            self,
            Step::CreateLaunchTemplate { .. }
                | Step::CreateGroup { .. }
                | Step::AttachGroup { .. }
                | Step::DetachGroup { .. }
                | Step::TagGroup { .. }
                | Step::UntagGroup { .. }
                | Step::HoldGroup { .. }
                | Step::ResumeGroup { .. }
                | Step::PutTrackingPolicy { .. }
                | Step::DeleteGroup { .. }
                | Step::DeleteLaunchTemplate { .. }
        )
    }

    /// A group step, as a person reads it.
    pub(super) fn describe_group_step(&self) -> String {
        match self {
            Step::CreateLaunchTemplate {
                name, source, ami, ..
            } => format!("create launch template {name} from {source} with {ami}"),
            Step::CreateGroup {
                name,
                launch_template,
                desired,
                ..
            } => format!("create group {name} of {desired} from {launch_template}"),
            Step::AttachGroup {
                group,
                target_group,
            } => format!("attach {group} to {}", short_arn(target_group)),
            Step::DetachGroup {
                group,
                target_group,
            } => format!("detach {group} from {}", short_arn(target_group)),
            Step::TagGroup { group, tags } => format!("tag {group}: {}", describe_tags(tags)),
            Step::UntagGroup { group, keys } => format!("untag {group}: {}", keys.join(", ")),
            Step::HoldGroup { group } => {
                format!("hold {group} at its size ({})", HELD_PROCESSES.join(", "))
            }
            Step::ResumeGroup { group } => format!("resume {group}'s scaling"),
            Step::PutTrackingPolicy { group, policy } => format!(
                "give {group} the {} policy ({} at {})",
                policy.name, policy.metric, policy.target_value
            ),
            Step::DeleteGroup { group } => format!("delete {group} and its instances"),
            Step::DeleteLaunchTemplate { name } => format!("delete launch template {name}"),
            other => format!("{other:?}"),
        }
    }
}

/// A launch template cutover created for a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LaunchTemplate {
    pub id: String,
    pub name: String,
    pub release: Option<ReleaseId>,
    pub created_at: Option<u64>,
}

/// The name of a release's group and of its launch template: from the service and a hash of the
/// release id (Auto Scaling group names are unique per account and region, so a second create
/// of the same release's group fails instead of making another).
pub fn group_name(service: &ServiceName, release: &ReleaseId) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in release.to_string().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("cutover-{service}-{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_moves_to_another_target_group_of_the_same_load_balancer() {
        let policy = TrackingPolicy {
            name: "requests".into(),
            metric: "ALBRequestCountPerTarget".into(),
            resource_label: Some(
                "app/web/50dc6c495c0c9188/targetgroup/api-blue/943f017f100becff".into(),
            ),
            target_value: 100.0,
            disable_scale_in: false,
        };
        let moved = policy.on_target_group(
            "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/api-green/73e2d6bc24d8a067",
        );
        assert_eq!(
            moved.resource_label.as_deref(),
            Some("app/web/50dc6c495c0c9188/targetgroup/api-green/73e2d6bc24d8a067")
        );
        let cpu = TrackingPolicy {
            metric: "ASGAverageCPUUtilization".into(),
            resource_label: None,
            ..policy
        };
        assert_eq!(cpu.on_target_group("arn:x:targetgroup/a/b"), cpu);
    }

    #[test]
    fn a_release_names_one_group_per_service() {
        let service = ServiceName::parse("api").unwrap();
        let r1 = ReleaseId::parse("r1").unwrap();
        let r2 = ReleaseId::parse("r2").unwrap();
        assert_eq!(group_name(&service, &r1), group_name(&service, &r1));
        assert_ne!(group_name(&service, &r1), group_name(&service, &r2));
        assert!(group_name(&service, &r1).starts_with("cutover-api-"));
    }
}
