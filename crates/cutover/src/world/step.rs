//! Steps: the closed list of changes cutover can make, each one AWS call, and how a person
//! reads them.

use std::collections::BTreeMap;

use serde::Serialize;

use super::*;

/// One change to the world. Each is one AWS call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum Step {
    Launch {
        spec: LaunchSpec,
        client_token: String,
        tags: BTreeMap<String, String>,
        /// Instances of this index that provision read as dead: a token answered with one of
        /// them is spent, whatever state the answer reports (EC2's replayed answer "might
        /// contain updated information", or the first call's).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        dead: Vec<String>,
        /// When provision read the instances: an answered instance it did not see there and that
        /// was launched well before is gone from DescribeInstances (see `LaunchAnswer::spends`).
        read_at: u64,
    },
    AssociateAddress {
        allocation_id: String,
        instance_id: String,
    },
    DisassociateAddress {
        allocation_id: String,
        association_id: String,
        instance_id: String,
    },
    RegisterTargets {
        target_group: String,
        instance_ids: Vec<String>,
    },
    DeregisterTargets {
        target_group: String,
        instance_ids: Vec<String>,
    },
    SetForward {
        route: String,
        role: RouteRole,
        is_listener_default: bool,
        from: Forward,
        to: Forward,
        #[serde(skip_serializing_if = "Option::is_none")]
        forward_order: Option<i32>,
        /// The route's other actions, sent back unchanged in the same call.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        keep: Vec<KeptAction>,
    },
    TagRoute {
        route: String,
        tags: BTreeMap<String, String>,
    },
    UntagRoute {
        route: String,
        keys: Vec<String>,
    },
    /// Removes the route's `cutover:lock` if `release` still holds it: the tag is read again in
    /// the same step (ELBv2 has no compare-and-delete), so a claim another release wrote since
    /// the plan was made is left alone.
    ReleaseLock {
        route: String,
        release: String,
    },
    TagInstances {
        instance_ids: Vec<String>,
        tags: BTreeMap<String, String>,
    },
    UntagInstances {
        instance_ids: Vec<String>,
        keys: Vec<String>,
    },
    ChangeRecords {
        zone_id: String,
        /// Whose ownership records go with the changes.
        service: String,
        changes: Vec<RecordChange>,
    },
    Terminate {
        instance_ids: Vec<String>,
    },
    /// A cutover-owned copy of the team's launch template: its default version's data (read in
    /// the same step) with the release's image. The team's template is only read.
    CreateLaunchTemplate {
        name: String,
        /// The team's template, by id or name.
        source: String,
        ami: String,
        tags: BTreeMap<String, String>,
    },
    CreateGroup {
        name: String,
        launch_template: String,
        subnets: Vec<String>,
        min: u32,
        max: u32,
        desired: u32,
        /// Propagated to every instance it launches.
        tags: BTreeMap<String, String>,
    },
    /// Auto Scaling registers the group's instances, now and later, in the target group.
    AttachGroup {
        group: String,
        target_group: String,
    },
    /// Auto Scaling deregisters the group's instances (they drain as any deregistered target).
    DetachGroup {
        group: String,
        target_group: String,
    },
    /// Tags propagated to the instances it launches from now on.
    TagGroup {
        group: String,
        tags: BTreeMap<String, String>,
    },
    UntagGroup {
        group: String,
        keys: Vec<String>,
    },
    /// Suspends `HELD_PROCESSES`: the group stays whole while it bakes.
    HoldGroup {
        group: String,
    },
    ResumeGroup {
        group: String,
    },
    PutTrackingPolicy {
        group: String,
        policy: TrackingPolicy,
    },
    /// With its instances (`ForceDelete`).
    DeleteGroup {
        group: String,
    },
    DeleteLaunchTemplate {
        name: String,
    },
}

impl Step {
    /// One line a person can read in a log, a plan, or an SNS message.
    pub fn describe(&self) -> String {
        match self {
            Step::Launch { spec, tags, .. } => format!(
                "launch {} ({}, {}) in {}",
                tags.get(TAG_NAME).map(String::as_str).unwrap_or("?"),
                spec.instance_type,
                spec.ami,
                spec.subnet
            ),
            Step::AssociateAddress {
                allocation_id,
                instance_id,
            } => {
                format!("associate {allocation_id} with {instance_id}")
            }
            Step::DisassociateAddress {
                allocation_id,
                instance_id,
                ..
            } => {
                format!("disassociate {allocation_id} from {instance_id}")
            }
            Step::RegisterTargets {
                target_group,
                instance_ids,
            } => {
                format!(
                    "register {} in {}",
                    instance_ids.join(", "),
                    short_arn(target_group)
                )
            }
            Step::DeregisterTargets {
                target_group,
                instance_ids,
            } => {
                format!(
                    "deregister {} from {}",
                    instance_ids.join(", "),
                    short_arn(target_group)
                )
            }
            Step::SetForward { role, from, to, .. } => {
                format!(
                    "point {} route: {} -> {}",
                    role.as_str(),
                    describe_forward(from),
                    describe_forward(to)
                )
            }
            Step::TagRoute { route, tags } => {
                format!("tag {} {}", short_arn(route), describe_tags(tags))
            }
            Step::UntagRoute { route, keys } => {
                format!("untag {} {}", short_arn(route), keys.join(", "))
            }
            Step::ReleaseLock { route, release } => {
                format!(
                    "release the lock of {release} on {} (if it still holds it)",
                    short_arn(route)
                )
            }
            Step::TagInstances { instance_ids, tags } => {
                format!("tag {} {}", instance_ids.join(", "), describe_tags(tags))
            }
            Step::UntagInstances { instance_ids, keys } => {
                format!("untag {} {}", instance_ids.join(", "), keys.join(", "))
            }
            Step::ChangeRecords { changes, .. } => changes
                .iter()
                .map(|c| {
                    let verb = match c.action {
                        RecordAction::Upsert => "upsert",
                        RecordAction::Delete => "delete",
                    };
                    format!("{verb} {} {}", c.name, c.values.join(","))
                })
                .collect::<Vec<_>>()
                .join("; "),
            Step::Terminate { instance_ids } => format!("terminate {}", instance_ids.join(", ")),
            // Every other step is a group step (`FLEET=asg`).
            group_step => group_step.describe_group_step(),
        }
    }
}

impl Step {
    /// A step that moves no traffic and holds nothing (tags, addresses, records, the pre-product
    /// route): it may share a round with other such steps that touch other resources. Every
    /// other step (product's route, registrations, terminations, the lock) has a round of its
    /// own, in plan order; launches share rounds with launches.
    fn is_follow_up(&self) -> bool {
        match self {
            Step::SetForward { role, .. } => *role == RouteRole::PreProduct,
            Step::TagRoute { tags, .. } => !tags.contains_key(TAG_LOCK),
            Step::UntagRoute { keys, .. } => !keys.iter().any(|k| k == TAG_LOCK),
            Step::TagInstances { .. }
            | Step::UntagInstances { .. }
            | Step::AssociateAddress { .. }
            | Step::DisassociateAddress { .. }
            | Step::ChangeRecords { .. }
            | Step::TagGroup { .. }
            | Step::UntagGroup { .. }
            | Step::HoldGroup { .. }
            | Step::ResumeGroup { .. }
            | Step::PutTrackingPolicy { .. } => true,
            Step::CreateLaunchTemplate { .. }
            | Step::CreateGroup { .. }
            | Step::AttachGroup { .. }
            | Step::DetachGroup { .. }
            | Step::DeleteGroup { .. }
            | Step::DeleteLaunchTemplate { .. }
            | Step::Launch { .. }
            | Step::RegisterTargets { .. }
            | Step::DeregisterTargets { .. }
            | Step::ReleaseLock { .. }
            | Step::Terminate { .. } => false,
        }
    }

    /// What a follow-up changes, as (what, which, key): two changes of one thing keep their plan
    /// order. An instance's tags and its address are different things, and so are a route's
    /// actions and each of its tags; an address and the instance it moves to are one each, so a
    /// move of an address is never raced by another.
    fn resources(&self) -> Vec<(&'static str, &str, &str)> {
        match self {
            Step::AssociateAddress {
                allocation_id,
                instance_id,
            }
            | Step::DisassociateAddress {
                allocation_id,
                instance_id,
                ..
            } => vec![
                ("address", allocation_id, ""),
                ("address-of", instance_id, ""),
            ],
            Step::SetForward { route, .. } => vec![("route-actions", route, "")],
            Step::TagRoute { route, tags } => tags
                .keys()
                .map(|key| ("route-tag", route.as_str(), key.as_str()))
                .collect(),
            Step::UntagRoute { route, keys } => keys
                .iter()
                .map(|key| ("route-tag", route.as_str(), key.as_str()))
                .collect(),
            Step::TagInstances { instance_ids, .. } | Step::UntagInstances { instance_ids, .. } => {
                instance_ids
                    .iter()
                    .map(|id| ("tags-of", id.as_str(), ""))
                    .collect()
            }
            Step::ChangeRecords { zone_id, .. } => vec![("zone", zone_id, "")],
            Step::TagGroup { group, .. } | Step::UntagGroup { group, .. } => {
                vec![("group-tags", group, "")]
            }
            Step::HoldGroup { group } | Step::ResumeGroup { group } => {
                vec![("group-processes", group, "")]
            }
            Step::PutTrackingPolicy { group, policy } => {
                vec![("group-policy", group, policy.name.as_str())]
            }
            Step::CreateLaunchTemplate { .. }
            | Step::CreateGroup { .. }
            | Step::AttachGroup { .. }
            | Step::DetachGroup { .. }
            | Step::DeleteGroup { .. }
            | Step::DeleteLaunchTemplate { .. }
            | Step::Launch { .. }
            | Step::RegisterTargets { .. }
            | Step::DeregisterTargets { .. }
            | Step::ReleaseLock { .. }
            | Step::Terminate { .. } => Vec::new(),
        }
    }
}

/// How long after a launch its instance may still be missing from DescribeInstances (EC2 is
/// eventually consistent: a new instance can take a moment to be listed). An instance launched
/// earlier than this before provision read, and not in what it read, may be gone: EC2 lists a
/// terminated instance for about an hour, while its ClientToken stays bound for at least 24 h.
pub const LISTED_WITHIN_S: u64 = 600;

/// One instance as a RunInstances answer under a ClientToken shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchAnswer {
    pub instance_id: String,
    /// `shutting-down` or `terminated`.
    pub says_dead: bool,
    /// Unix seconds, by EC2's clock.
    pub launched_at: Option<u64>,
}

/// What a RunInstances answer under a ClientToken means for the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenVerdict {
    /// The answer's instance is the index's member.
    Kept,
    /// The instance is dead: the token's next generation must launch a fresh one.
    Spent,
    /// Launched long before provision read, yet not in what it read: gone from the listing,
    /// unless the clocks disagree. Ask EC2 for that instance: spent if it is not there (or dead).
    SpentUnlessListed,
}

impl LaunchAnswer {
    /// EC2's answer to a repeated token "might contain updated information" or the first
    /// call's: an instance is dead when the answer says so, or when provision read it dead
    /// (`dead`); an index is launched only when provision saw no live instance of it, so an
    /// answered instance launched well before the read (`read_at`) may be one no longer listed.
    pub fn verdict(&self, dead: &[String], read_at: u64) -> TokenVerdict {
        if self.says_dead || dead.contains(&self.instance_id) {
            TokenVerdict::Spent
        } else if self
            .launched_at
            .is_some_and(|at| at.saturating_add(LISTED_WITHIN_S) < read_at)
        {
            TokenVerdict::SpentUnlessListed
        } else {
            TokenVerdict::Kept
        }
    }
}

/// A plan's steps in rounds, each round's calls made side by side and each round after the one
/// before it: consecutive launches (at most `launches` at once), or consecutive follow-ups that
/// touch different resources; every other step is a round of its own. So a switch moves product
/// in one call and then makes all its bookkeeping calls at once.
pub fn rounds(steps: &[Step], launches: usize) -> Vec<&[Step]> {
    let mut rounds = Vec::new();
    let mut rest = steps;
    while let Some(first) = rest.first() {
        let len = match first {
            Step::Launch { .. } => rest
                .iter()
                .take(launches.max(1))
                .take_while(|s| matches!(s, Step::Launch { .. }))
                .count(),
            step if step.is_follow_up() => {
                let mut touched = std::collections::BTreeSet::new();
                rest.iter()
                    .take_while(|s| {
                        s.is_follow_up() && s.resources().iter().all(|r| touched.insert(*r))
                    })
                    .count()
            }
            _ => 1,
        };
        let (round, later) = rest.split_at(len);
        rounds.push(round);
        rest = later;
    }
    rounds
}

/// `arn:...:targetgroup/mobile-blue/abc` → `targetgroup/mobile-blue`.
pub fn short_arn(arn: &str) -> String {
    let resource = arn.rsplit(':').next().unwrap_or(arn);
    let mut parts = resource.split('/');
    match (parts.next(), parts.next()) {
        (Some(kind), Some(name)) => format!("{kind}/{name}"),
        _ => resource.to_owned(),
    }
}

pub fn describe_forward(forward: &Forward) -> String {
    forward
        .targets
        .iter()
        .map(|t| match t.weight {
            Some(w) if forward.targets.len() > 1 => format!("{}={w}", short_arn(&t.arn)),
            _ => short_arn(&t.arn),
        })
        .collect::<Vec<_>>()
        .join(" + ")
}

pub(super) fn describe_tags(tags: &BTreeMap<String, String>) -> String {
    tags.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(role: RouteRole, route: &str) -> Step {
        Step::SetForward {
            route: route.into(),
            role,
            is_listener_default: false,
            from: Forward::to("old"),
            to: Forward::to("new"),
            forward_order: None,
            keep: Vec::new(),
        }
    }

    fn tag_route(route: &str, key: &str) -> Step {
        Step::TagRoute {
            route: route.into(),
            tags: BTreeMap::from([(key.to_owned(), "v".to_owned())]),
        }
    }

    fn tag_instance(id: &str) -> Step {
        Step::TagInstances {
            instance_ids: vec![id.into()],
            tags: BTreeMap::from([(TAG_STAGE.to_owned(), "product".to_owned())]),
        }
    }

    fn associate(allocation: &str, instance: &str) -> Step {
        Step::AssociateAddress {
            allocation_id: allocation.into(),
            instance_id: instance.into(),
        }
    }

    fn launch(n: u32) -> Step {
        Step::Launch {
            spec: LaunchSpec {
                ami: "ami".into(),
                instance_type: "t3.micro".into(),
                subnet: "subnet".into(),
                security_groups: Vec::new(),
                instance_profile: None,
                key_name: None,
                user_data: None,
            },
            client_token: format!("token-{n}"),
            tags: BTreeMap::new(),
            dead: Vec::new(),
            read_at: 0,
        }
    }

    fn sizes(steps: &[Step], launches: usize) -> Vec<usize> {
        rounds(steps, launches).iter().map(|r| r.len()).collect()
    }

    #[test]
    fn a_switch_moves_product_alone_then_makes_its_bookkeeping_calls_at_once_and_unlocks_last() {
        let steps = vec![
            point(RouteRole::Product, "product"),
            point(RouteRole::PreProduct, "pre-product"),
            tag_route("product", TAG_PREVIOUS),
            tag_instance("i-new"),
            tag_instance("i-old"),
            associate("eipalloc-1", "i-new"),
            Step::ChangeRecords {
                zone_id: "Z1".into(),
                service: "svc".into(),
                changes: Vec::new(),
            },
            Step::ReleaseLock {
                route: "product".into(),
                release: "r2".into(),
            },
        ];
        let rounds = rounds(&steps, 8);
        assert_eq!(
            rounds.iter().map(|r| r.len()).collect::<Vec<_>>(),
            vec![1, 6, 1]
        );
        assert_eq!(rounds[0][0], steps[0], "product moves first, alone");
        assert_eq!(rounds[2][0], steps[7], "the lock goes last, alone");
    }

    #[test]
    fn two_changes_of_one_thing_keep_their_order() {
        let steps = vec![
            Step::DisassociateAddress {
                allocation_id: "eipalloc-1".into(),
                association_id: "eipassoc-1".into(),
                instance_id: "i-old".into(),
            },
            associate("eipalloc-1", "i-new"),
            tag_route("product", TAG_PREVIOUS),
            Step::UntagRoute {
                route: "product".into(),
                keys: vec![TAG_ROLLED_BACK.into()],
            },
            tag_route("product", TAG_PREVIOUS),
        ];
        // The address moves in two rounds; the route's two tags change beside the second; the
        // same tag written again waits for the first write.
        assert_eq!(sizes(&steps, 8), vec![1, 3, 1]);
    }

    #[test]
    fn traffic_registrations_terminations_and_the_lock_each_have_a_round_of_their_own() {
        let steps = vec![
            tag_route("product", TAG_LOCK),
            Step::RegisterTargets {
                target_group: "green".into(),
                instance_ids: vec!["i-1".into()],
            },
            point(RouteRole::PreProduct, "pre-product"),
            Step::DeregisterTargets {
                target_group: "blue".into(),
                instance_ids: vec!["i-2".into()],
            },
            Step::Terminate {
                instance_ids: vec!["i-3".into()],
            },
            tag_instance("i-4"),
        ];
        assert_eq!(sizes(&steps, 8), vec![1, 1, 1, 1, 1, 1]);
    }

    #[test]
    fn launches_share_rounds_up_to_the_bound_and_only_with_launches() {
        let mut steps: Vec<Step> = (0..10).map(launch).collect();
        steps.push(tag_instance("i-1"));
        assert_eq!(sizes(&steps, 4), vec![4, 4, 2, 1]);
        assert!(rounds(&[], 4).is_empty());
    }

    #[test]
    fn a_token_is_spent_by_a_dead_answer_or_a_dead_read_and_suspect_for_an_instance_long_gone() {
        let read_at = 1_800_000_000;
        let answer = |says_dead, launched_at| LaunchAnswer {
            instance_id: "i-1".into(),
            says_dead,
            launched_at: Some(launched_at),
        };
        let verdict = |answer: LaunchAnswer, dead: &[String]| answer.verdict(dead, read_at);
        // A fresh launch, or one a moment before the read that DescribeInstances did not list yet.
        assert_eq!(verdict(answer(false, read_at + 5), &[]), TokenVerdict::Kept);
        assert_eq!(
            verdict(answer(false, read_at - 60), &[]),
            TokenVerdict::Kept
        );
        assert_eq!(verdict(answer(true, read_at + 5), &[]), TokenVerdict::Spent);
        assert_eq!(
            verdict(answer(false, read_at - 60), &["i-1".into()]),
            TokenVerdict::Spent
        );
        // The first call's answer for an instance terminated and no longer listed (or a clock
        // that disagrees with EC2's: the adapter asks EC2).
        assert_eq!(
            verdict(answer(false, read_at - 2 * 3_600), &[]),
            TokenVerdict::SpentUnlessListed
        );
    }
}
