//! SDK shapes read into world types: instances, addresses, routes and their actions.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_ec2::types as ec2t;
use aws_sdk_elasticloadbalancingv2::types as elbt;

use super::*;

/// A listener or rule that may be one of the service's routes.
pub(super) struct Candidate {
    pub(super) arn: String,
    pub(super) is_listener_default: bool,
    pub(super) actions: Vec<elbt::Action>,
    pub(super) conditions: Vec<String>,
}

/// The route a candidate is, if its tags make it one of the service's.
pub(super) fn route_of_service(
    candidate: Candidate,
    tags: &HashMap<String, String>,
    service: &str,
) -> Result<Option<Route>, Error> {
    if tags.get(TAG_SERVICE).map(String::as_str) != Some(service) {
        return Ok(None);
    }
    let role = match tags.get(TAG_ROUTE).map(String::as_str) {
        Some("product") => RouteRole::Product,
        Some("pre-product") => RouteRole::PreProduct,
        _ => return Ok(None),
    };
    let Candidate {
        arn,
        is_listener_default,
        actions,
        conditions,
    } = candidate;
    let forward = forward_from_actions(&actions).ok_or_else(|| {
        Error::World(format!(
            "the {} route {arn} has no forward action",
            role.as_str()
        ))
    })?;
    let forward_order = actions
        .iter()
        .find(|a| a.r#type() == Some(&elbt::ActionTypeEnum::Forward))
        .and_then(|a| a.order());
    Ok(Some(Route {
        kept_actions: kept_actions(&arn, &actions)?,
        previous: tags.get(TAG_PREVIOUS).cloned(),
        rolled_back: tags.get(TAG_ROLLED_BACK).map(|release| {
            RollbackMark::parse(release, tags.get(TAG_ROLLED_BACK_BY).map(String::as_str))
        }),
        lock: tags.get(TAG_LOCK).and_then(|v| Lock::parse(v)),
        arn,
        role,
        is_listener_default,
        forward,
        forward_order,
        conditions,
    }))
}

/// The session settings of an OIDC or a Cognito config (two SDK types, the same accessors).
macro_rules! session_of {
    ($config:expr) => {
        AuthSession {
            session_cookie_name: $config.session_cookie_name().map(str::to_owned),
            scope: $config.scope().map(str::to_owned),
            session_timeout: $config.session_timeout(),
            extra_params: sorted($config.authentication_request_extra_params()),
            on_unauthenticated_request: $config
                .on_unauthenticated_request()
                .map(|b| b.as_str().to_owned()),
        }
    };
}

/// The route's actions other than the forward, as cutover must send them back. Only
/// authentication can stand in front of a forward; anything else is refused by name rather than
/// dropped.
pub(super) fn kept_actions(
    route: &str,
    actions: &[elbt::Action],
) -> Result<Vec<KeptAction>, Error> {
    let mut kept = Vec::new();
    for action in actions {
        let authenticate = match action.r#type() {
            Some(elbt::ActionTypeEnum::Forward) => continue,
            Some(elbt::ActionTypeEnum::AuthenticateOidc) => {
                let c = action.authenticate_oidc_config().ok_or_else(|| {
                    Error::World(format!(
                        "route {route}: authenticate-oidc action without its config"
                    ))
                })?;
                Authenticate::Oidc {
                    issuer: c.issuer().unwrap_or_default().to_owned(),
                    authorization_endpoint: c
                        .authorization_endpoint()
                        .unwrap_or_default()
                        .to_owned(),
                    token_endpoint: c.token_endpoint().unwrap_or_default().to_owned(),
                    user_info_endpoint: c.user_info_endpoint().unwrap_or_default().to_owned(),
                    client_id: c.client_id().unwrap_or_default().to_owned(),
                    session: session_of!(c),
                }
            }
            Some(elbt::ActionTypeEnum::AuthenticateCognito) => {
                let c = action.authenticate_cognito_config().ok_or_else(|| {
                    Error::World(format!(
                        "route {route}: authenticate-cognito action without its config"
                    ))
                })?;
                Authenticate::Cognito {
                    user_pool_arn: c.user_pool_arn().unwrap_or_default().to_owned(),
                    user_pool_client_id: c.user_pool_client_id().unwrap_or_default().to_owned(),
                    user_pool_domain: c.user_pool_domain().unwrap_or_default().to_owned(),
                    session: session_of!(c),
                }
            }
            other => {
                return Err(Error::World(format!(
                "route {route} has a {} action beside its forward, which cutover cannot carry over",
                other.map(|t| t.as_str()).unwrap_or("untyped")
            )))
            }
        };
        kept.push(KeptAction {
            order: action.order(),
            authenticate,
        });
    }
    Ok(kept)
}

pub(super) fn sorted(params: Option<&HashMap<String, String>>) -> BTreeMap<String, String> {
    params
        .map(|p| p.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

pub(super) fn forward_from_actions(actions: &[elbt::Action]) -> Option<Forward> {
    let action = actions
        .iter()
        .find(|a| a.r#type() == Some(&elbt::ActionTypeEnum::Forward))?;
    if let Some(config) = action
        .forward_config()
        .filter(|c| !c.target_groups().is_empty())
    {
        let targets = config
            .target_groups()
            .iter()
            .filter_map(|t| {
                Some(WeightedTarget {
                    arn: t.target_group_arn()?.to_owned(),
                    weight: t.weight(),
                })
            })
            .collect::<Vec<_>>();
        let sticky_s = config
            .target_group_stickiness_config()
            .filter(|s| s.enabled() == Some(true))
            .and_then(|s| s.duration_seconds())
            .map(|s| s as u32);
        // A one-group forward config is the same route as a plain forward.
        if let ([only], None) = (targets.as_slice(), sticky_s) {
            return Some(Forward::to(&only.arn));
        }
        return Some(Forward { targets, sticky_s });
    }
    action.target_group_arn().map(Forward::to)
}

pub(super) fn describe_condition(condition: &elbt::RuleCondition) -> Vec<String> {
    let field = condition.field().unwrap_or_default();
    let values: Vec<String> = match field {
        "host-header" => condition
            .host_header_config()
            .map(|c| c.values().to_vec())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| condition.values().to_vec()),
        "path-pattern" => condition
            .path_pattern_config()
            .map(|c| c.values().to_vec())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| condition.values().to_vec()),
        _ => condition.values().to_vec(),
    };
    values.into_iter().map(|v| format!("{field}={v}")).collect()
}

pub(super) fn instance_from_sdk(instance: &ec2t::Instance) -> Option<Instance> {
    let tags: HashMap<&str, &str> = instance
        .tags()
        .iter()
        .filter_map(|t| Some((t.key()?, t.value().unwrap_or_default())))
        .collect();
    let state = match instance.state()?.name()? {
        ec2t::InstanceStateName::Pending => InstanceState::Pending,
        ec2t::InstanceStateName::Running => InstanceState::Running,
        ec2t::InstanceStateName::Stopping => InstanceState::Stopping,
        ec2t::InstanceStateName::Stopped => InstanceState::Stopped,
        ec2t::InstanceStateName::ShuttingDown => InstanceState::ShuttingDown,
        _ => InstanceState::Terminated,
    };
    Some(Instance {
        id: instance.instance_id()?.to_owned(),
        state,
        service: tags.get(TAG_SERVICE)?.to_string(),
        stage: tags.get(TAG_STAGE).and_then(|s| Stage::parse(s)),
        release: tags
            .get(TAG_RELEASE)
            .and_then(|s| crate::names::ReleaseId::parse(s).ok()),
        index: tags.get(TAG_INDEX).and_then(|s| s.parse().ok()),
        name: tags.get(TAG_NAME).map(|s| s.to_string()),
        private_ip: instance.private_ip_address().map(str::to_owned),
        retired_at: tags.get(TAG_RETIRED_AT).and_then(|s| s.parse().ok()),
        failed_at: tags.get(TAG_FAILED_AT).and_then(|s| s.parse().ok()),
        installed: tags.get(TAG_INSTALLED).map(|s| s.to_string()),
        launched_at: instance.launch_time().map(|t| t.secs().max(0) as u64),
        state_reason: instance
            .state_reason()
            .and_then(|r| r.message().or(r.code()))
            .map(str::to_owned),
    })
}

pub(super) fn address_from_sdk(address: &ec2t::Address) -> Option<Address> {
    Some(Address {
        allocation_id: address.allocation_id()?.to_owned(),
        association_id: address.association_id().map(str::to_owned),
        instance_id: address
            .instance_id()
            .filter(|id| !id.is_empty())
            .map(str::to_owned),
        public_ip: address.public_ip().map(str::to_owned),
        service: address
            .tags()
            .iter()
            .find(|t| t.key() == Some(TAG_SERVICE))
            .and_then(|t| t.value())
            .map(str::to_owned),
    })
}
