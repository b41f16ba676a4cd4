//! Changing the world: one AWS call per `Step`.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types as ec2t;
use aws_sdk_elasticloadbalancingv2::types as elbt;

use super::*;

impl Aws {
    /// One step, one AWS call, by the service that makes it.
    pub async fn execute(&self, step: &Step) -> Result<(), Error> {
        match step {
            Step::Launch {
                spec,
                client_token,
                tags,
                dead,
                read_at,
            } => self.launch(spec, client_token, tags, dead, *read_at).await,
            Step::ChangeRecords {
                zone_id,
                service,
                changes,
            } => self.change_records(zone_id, service, changes).await,
            Step::AssociateAddress { .. }
            | Step::DisassociateAddress { .. }
            | Step::TagInstances { .. }
            | Step::UntagInstances { .. }
            | Step::Terminate { .. } => self.ec2_step(step).await,
            Step::RegisterTargets { .. }
            | Step::DeregisterTargets { .. }
            | Step::SetForward { .. }
            | Step::TagRoute { .. }
            | Step::UntagRoute { .. } => self.elb_step(step).await,
            Step::ReleaseLock { route, release } => self.release_lock(route, release).await,
            // Listed, not guarded: a new step fails to compile until it is given an AWS call.
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
            | Step::DeleteLaunchTemplate { .. } => self.group_step(step).await,
        }
    }

    /// Removes the lock only if `release` holds it when read now, in this step: the smallest
    /// window ELBv2 allows between the check and the removal (it has no conditional write).
    async fn release_lock(&self, route: &str, release: &str) -> Result<(), Error> {
        let tags = self.elb_tags(&[route.to_owned()]).await?;
        let holder = tags
            .get(route)
            .and_then(|tags| tags.get(TAG_LOCK))
            .and_then(|value| Lock::parse(value));
        match holder {
            Some(lock) if lock.release == release => self
                .elb
                .remove_tags()
                .resource_arns(route)
                .tag_keys(TAG_LOCK)
                .send()
                .await
                .map(drop)
                .map_err(aws_error("RemoveTags")),
            other => {
                tracing::info!(?other, "the lock is not {release}'s any more: left alone");
                Ok(())
            }
        }
    }

    async fn ec2_step(&self, step: &Step) -> Result<(), Error> {
        let ec2 = &self.ec2;
        let tags = |pairs: Vec<(&String, Option<&String>)>| -> Vec<ec2t::Tag> {
            pairs
                .into_iter()
                .map(|(k, v)| ec2t::Tag::builder().key(k).set_value(v.cloned()).build())
                .collect()
        };
        match step {
            Step::AssociateAddress {
                allocation_id,
                instance_id,
            } => ec2
                .associate_address()
                .allocation_id(allocation_id)
                .instance_id(instance_id)
                .allow_reassociation(true)
                .send()
                .await
                .map(drop)
                .map_err(aws_error("AssociateAddress")),
            Step::DisassociateAddress { association_id, .. } => {
                let sent = ec2
                    .disassociate_address()
                    .association_id(association_id)
                    .send()
                    .await;
                match sent {
                    Ok(_) => Ok(()),
                    // Already gone: what we wanted.
                    Err(err) if err.code() == Some("InvalidAssociationID.NotFound") => Ok(()),
                    Err(err) => Err(aws_error("DisassociateAddress")(err)),
                }
            }
            Step::TagInstances {
                instance_ids,
                tags: pairs,
            } => ec2
                .create_tags()
                .set_resources(Some(instance_ids.clone()))
                .set_tags(Some(tags(
                    pairs.iter().map(|(k, v)| (k, Some(v))).collect(),
                )))
                .send()
                .await
                .map(drop)
                .map_err(aws_error("CreateTags")),
            Step::UntagInstances { instance_ids, keys } => ec2
                .delete_tags()
                .set_resources(Some(instance_ids.clone()))
                .set_tags(Some(tags(keys.iter().map(|k| (k, None)).collect())))
                .send()
                .await
                .map(drop)
                .map_err(aws_error("DeleteTags")),
            Step::Terminate { instance_ids } => ec2
                .terminate_instances()
                .set_instance_ids(Some(instance_ids.clone()))
                .send()
                .await
                .map(drop)
                .map_err(aws_error("TerminateInstances")),
            other => Err(Error::Internal(format!(
                "not an EC2 step: {}",
                other.describe()
            ))),
        }
    }

    async fn elb_step(&self, step: &Step) -> Result<(), Error> {
        let elb = &self.elb;
        match step {
            Step::RegisterTargets {
                target_group,
                instance_ids,
            } => elb
                .register_targets()
                .target_group_arn(target_group)
                .set_targets(Some(targets(instance_ids)))
                .send()
                .await
                .map(drop)
                .map_err(aws_error("RegisterTargets")),
            Step::DeregisterTargets {
                target_group,
                instance_ids,
            } => elb
                .deregister_targets()
                .target_group_arn(target_group)
                .set_targets(Some(targets(instance_ids)))
                .send()
                .await
                .map(drop)
                .map_err(aws_error("DeregisterTargets")),
            Step::SetForward {
                route,
                is_listener_default,
                to,
                forward_order,
                keep,
                ..
            } => {
                // Both calls replace the whole action list: the kept actions go back with it.
                let actions: Vec<elbt::Action> = keep
                    .iter()
                    .map(kept_action)
                    .chain([forward_action(to, *forward_order)])
                    .collect();
                self.set_actions(route, *is_listener_default, actions).await
            }
            Step::TagRoute { route, tags } => elb
                .add_tags()
                .resource_arns(route)
                .set_tags(Some(
                    tags.iter()
                        .map(|(k, v)| elbt::Tag::builder().key(k).value(v).build())
                        .collect(),
                ))
                .send()
                .await
                .map(drop)
                .map_err(aws_error("AddTags")),
            Step::UntagRoute { route, keys } => elb
                .remove_tags()
                .resource_arns(route)
                .set_tag_keys(Some(keys.clone()))
                .send()
                .await
                .map(drop)
                .map_err(aws_error("RemoveTags")),
            other => Err(Error::Internal(format!(
                "not an ELB step: {}",
                other.describe()
            ))),
        }
    }

    /// A rule's actions, or a listener's default actions.
    async fn set_actions(
        &self,
        route: &str,
        is_listener_default: bool,
        actions: Vec<elbt::Action>,
    ) -> Result<(), Error> {
        if is_listener_default {
            self.elb
                .modify_listener()
                .listener_arn(route)
                .set_default_actions(Some(actions))
                .send()
                .await
                .map(drop)
                .map_err(aws_error("ModifyListener"))
        } else {
            self.elb
                .modify_rule()
                .rule_arn(route)
                .set_actions(Some(actions))
                .send()
                .await
                .map(drop)
                .map_err(aws_error("ModifyRule"))
        }
    }

    /// One instance per call, so each has its own index, Name and ClientToken. A token whose
    /// instance has died (a retried stage keeps its execution id, so its tokens) is spent: the
    /// next generation of it launches a fresh instance. Which answers spend a token:
    /// `LaunchAnswer::spends` (EC2 may replay the first call's answer, state and all, even for
    /// an instance no longer listed).
    async fn launch(
        &self,
        spec: &LaunchSpec,
        client_token: &str,
        tags: &BTreeMap<String, String>,
        dead: &[String],
        read_at: u64,
    ) -> Result<(), Error> {
        let tags: Vec<ec2t::Tag> = tags
            .iter()
            .map(|(k, v)| ec2t::Tag::builder().key(k).value(v).build())
            .collect();
        let tag_specifications = TAGGED_AT_LAUNCH
            .iter()
            .map(|kind| {
                ec2t::TagSpecification::builder()
                    .resource_type(ec2t::ResourceType::from(*kind))
                    .set_tags(Some(tags.clone()))
                    .build()
            })
            .collect();
        let profile = spec.instance_profile.as_deref().map(|profile| {
            let builder = ec2t::IamInstanceProfileSpecification::builder();
            if profile.starts_with("arn:") {
                builder.arn(profile)
            } else {
                builder.name(profile)
            }
            .build()
        });
        let request = self
            .ec2
            .run_instances()
            .image_id(&spec.ami)
            .instance_type(ec2t::InstanceType::from(spec.instance_type.as_str()))
            .subnet_id(&spec.subnet)
            .set_security_group_ids(Some(spec.security_groups.clone()))
            .set_iam_instance_profile(profile)
            .set_key_name(spec.key_name.clone())
            .set_user_data(
                spec.user_data
                    .as_deref()
                    .map(|data| aws_smithy_types::base64::encode(data.as_bytes())),
            )
            .min_count(1)
            .max_count(1)
            .set_tag_specifications(Some(tag_specifications));
        for generation in 0..MAX_TOKEN_GENERATIONS {
            let token = match generation {
                0 => client_token.to_owned(),
                n => format!("{client_token}-g{n}"),
            };
            let out = request
                .clone()
                .client_token(token)
                .send()
                .await
                .map_err(aws_error("RunInstances"))?;
            let mut spent = false;
            for instance in out.instances() {
                let answer = LaunchAnswer {
                    instance_id: instance.instance_id().unwrap_or_default().to_owned(),
                    says_dead: is_dead(instance),
                    launched_at: instance
                        .launch_time()
                        .and_then(|t| u64::try_from(t.secs()).ok()),
                };
                spent |= match answer.verdict(dead, read_at) {
                    TokenVerdict::Kept => false,
                    TokenVerdict::Spent => true,
                    TokenVerdict::SpentUnlessListed => {
                        !self.is_listed_alive(&answer.instance_id).await?
                    }
                };
            }
            if !spent {
                return Ok(());
            }
        }
        Err(Error::Aws {
            operation: "RunInstances",
            code: "ClientTokenSpent".into(),
            message: format!(
                "the first {MAX_TOKEN_GENERATIONS} generations of ClientToken {client_token} all returned terminated instances"
            ),
        })
    }

    /// Whether EC2 lists the instance, alive (not `shutting-down` or `terminated`).
    async fn is_listed_alive(&self, instance_id: &str) -> Result<bool, Error> {
        let read = self
            .ec2
            .describe_instances()
            .instance_ids(instance_id)
            .send()
            .await;
        match read {
            Ok(out) => Ok(out
                .reservations()
                .iter()
                .flat_map(|r| r.instances())
                .any(|i| !is_dead(i))),
            Err(e) if e.code() == Some("InvalidInstanceID.NotFound") => Ok(false),
            Err(e) => Err(aws_error("DescribeInstances")(e)),
        }
    }
}

/// `shutting-down` or `terminated`.
fn is_dead(instance: &ec2t::Instance) -> bool {
    matches!(
        instance.state().and_then(|s| s.name()),
        Some(ec2t::InstanceStateName::ShuttingDown | ec2t::InstanceStateName::Terminated)
    )
}

fn targets(instance_ids: &[String]) -> Vec<elbt::TargetDescription> {
    instance_ids
        .iter()
        .map(|id| elbt::TargetDescription::builder().id(id).build())
        .collect()
}

fn forward_action(forward: &Forward, order: Option<i32>) -> elbt::Action {
    let action = elbt::Action::builder()
        .r#type(elbt::ActionTypeEnum::Forward)
        .set_order(order);
    let action = match (forward.targets.as_slice(), forward.sticky_s) {
        ([only], None) if only.weight.is_none() => action.target_group_arn(&only.arn),
        (targets, sticky_s) => {
            let tuples = targets
                .iter()
                .map(|t| {
                    elbt::TargetGroupTuple::builder()
                        .target_group_arn(&t.arn)
                        .set_weight(t.weight)
                        .build()
                })
                .collect();
            let stickiness = sticky_s.map(|seconds| {
                elbt::TargetGroupStickinessConfig::builder()
                    .enabled(true)
                    .duration_seconds(seconds as i32)
                    .build()
            });
            action.forward_config(
                elbt::ForwardActionConfig::builder()
                    .set_target_groups(Some(tuples))
                    .set_target_group_stickiness_config(stickiness)
                    .build(),
            )
        }
    };
    action.build()
}

/// Sets the session settings on an OIDC or a Cognito config builder (two SDK types, the same
/// setters).
macro_rules! with_session {
    ($builder:expr, $session:expr, $behaviour:ty) => {{
        let session: &AuthSession = $session;
        let extra_params = (!session.extra_params.is_empty()).then(|| {
            session
                .extra_params
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<HashMap<_, _>>()
        });
        $builder
            .set_session_cookie_name(session.session_cookie_name.clone())
            .set_scope(session.scope.clone())
            .set_session_timeout(session.session_timeout)
            .set_authentication_request_extra_params(extra_params)
            .set_on_unauthenticated_request(
                session
                    .on_unauthenticated_request
                    .as_deref()
                    .map(<$behaviour>::from),
            )
    }};
}

fn kept_action(kept: &KeptAction) -> elbt::Action {
    let action = elbt::Action::builder().set_order(kept.order);
    match &kept.authenticate {
        Authenticate::Oidc {
            issuer,
            authorization_endpoint,
            token_endpoint,
            user_info_endpoint,
            client_id,
            session,
        } => {
            let config = elbt::AuthenticateOidcActionConfig::builder()
                .issuer(issuer)
                .authorization_endpoint(authorization_endpoint)
                .token_endpoint(token_endpoint)
                .user_info_endpoint(user_info_endpoint)
                .client_id(client_id)
                // Describe calls never return the secret; ELB keeps the one it has.
                .use_existing_client_secret(true);
            let config = with_session!(
                config,
                session,
                elbt::AuthenticateOidcActionConditionalBehaviorEnum
            );
            action
                .r#type(elbt::ActionTypeEnum::AuthenticateOidc)
                .authenticate_oidc_config(config.build())
        }
        Authenticate::Cognito {
            user_pool_arn,
            user_pool_client_id,
            user_pool_domain,
            session,
        } => {
            let config = elbt::AuthenticateCognitoActionConfig::builder()
                .user_pool_arn(user_pool_arn)
                .user_pool_client_id(user_pool_client_id)
                .user_pool_domain(user_pool_domain);
            let config = with_session!(
                config,
                session,
                elbt::AuthenticateCognitoActionConditionalBehaviorEnum
            );
            action
                .r#type(elbt::ActionTypeEnum::AuthenticateCognito)
                .authenticate_cognito_config(config.build())
        }
    }
    .build()
}
