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
        }
    }
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

fn describe_tags(tags: &BTreeMap<String, String>) -> String {
    tags.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}
