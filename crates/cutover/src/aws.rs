//! The only module that knows about the AWS SDK. It reads the world into `world` types and
//! carries out `Step`s, one AWS call each. Endpoints come from the SDK's own configuration
//! (`AWS_ENDPOINT_URL`), never from here.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types as ec2t;
use aws_sdk_elasticloadbalancingv2::types as elbt;
use aws_sdk_route53::types as r53t;

use crate::error::Error;
use crate::world::*;

#[derive(Debug, Clone)]
pub struct Aws {
    ec2: aws_sdk_ec2::Client,
    elb: aws_sdk_elasticloadbalancingv2::Client,
    route53: aws_sdk_route53::Client,
    codepipeline: aws_sdk_codepipeline::Client,
    sns: aws_sdk_sns::Client,
}

/// Which instances to read.
#[derive(Debug, Clone)]
pub enum InstanceQuery<'a> {
    Service(&'a str),
    Release(&'a str),
    AllServices,
}

/// Attempts per AWS call (the first and three retries), with exponential back-off and jitter:
/// enough to ride out throttling and a brief 5xx, short enough to stay inside a Lambda timeout.
pub const MAX_ATTEMPTS: u32 = 4;

const LIVE_STATES: &[&str] = &["pending", "running", "stopping", "stopped"];
const ALL_STATES: &[&str] = &[
    "pending",
    "running",
    "stopping",
    "stopped",
    "shutting-down",
    "terminated",
];

/// A ClientToken stays bound to its instance for at least 24 hours after that instance
/// terminates: a launch whose token returns a dead instance moves to the next generation.
const MAX_TOKEN_GENERATIONS: u32 = 8;

/// The resource types RunInstances creates and tags: every one of them must carry the tags the
/// launch policy's `aws:RequestTag` conditions ask for, since EC2 checks them per resource.
pub const TAGGED_AT_LAUNCH: &[&str] = &["instance", "volume", "network-interface"];

/// ELBv2 DescribeTags takes at most 20 ARNs.
const DESCRIBE_TAGS_BATCH: usize = 20;

fn aws_error<E, R>(operation: &'static str) -> impl FnOnce(SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    move |err| Error::Aws {
        operation,
        code: err.code().unwrap_or("Unknown").to_owned(),
        message: err
            .message()
            .map(str::to_owned)
            .unwrap_or_else(|| DisplayErrorContext(&err).to_string()),
    }
}

fn build_error(what: &'static str) -> impl FnOnce(aws_sdk_ec2::error::BuildError) -> Error {
    move |err| Error::Internal(format!("building {what}: {err}"))
}

/// Standard retry mode (exponential back-off with jitter), `MAX_ATTEMPTS` attempts, bounded
/// timeouts. `AWS_MAX_ATTEMPTS` / `AWS_RETRY_MODE` in the environment still win.
pub async fn load_config() -> SdkConfig {
    config_loader().load().await
}

/// The production configuration before it is loaded: tests add only where the endpoint is.
pub fn config_loader() -> aws_config::ConfigLoader {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(
        aws_config::timeout::TimeoutConfig::builder()
            .operation_attempt_timeout(Duration::from_secs(10))
            .operation_timeout(Duration::from_secs(30))
            .build(),
    );
    if std::env::var_os("AWS_MAX_ATTEMPTS").is_none()
        && std::env::var_os("AWS_RETRY_MODE").is_none()
    {
        loader = loader.retry_config(
            aws_config::retry::RetryConfig::standard()
                .with_max_attempts(MAX_ATTEMPTS)
                .with_initial_backoff(Duration::from_millis(200)),
        );
    }
    loader
}

impl Aws {
    pub fn new(config: &SdkConfig) -> Self {
        Aws {
            ec2: aws_sdk_ec2::Client::new(config),
            elb: aws_sdk_elasticloadbalancingv2::Client::new(config),
            route53: aws_sdk_route53::Client::new(config),
            codepipeline: aws_sdk_codepipeline::Client::new(config),
            sns: aws_sdk_sns::Client::new(config),
        }
    }

    // ------------------------------------------------------------ reads

    /// Live (not terminated) instances carrying a `cutover:service` tag.
    pub async fn instances(&self, query: InstanceQuery<'_>) -> Result<Vec<Instance>, Error> {
        self.instances_in(query, LIVE_STATES).await
    }

    /// Live instances and those shutting down or terminated (EC2 shows a terminated instance
    /// for about an hour): provision must see one that died while it waited.
    pub async fn instances_with_dead(
        &self,
        query: InstanceQuery<'_>,
    ) -> Result<Vec<Instance>, Error> {
        self.instances_in(query, ALL_STATES).await
    }

    async fn instances_in(
        &self,
        query: InstanceQuery<'_>,
        states: &[&str],
    ) -> Result<Vec<Instance>, Error> {
        let filter =
            |name: &str, value: &str| ec2t::Filter::builder().name(name).values(value).build();
        let selector = match query {
            InstanceQuery::Service(service) => filter(&format!("tag:{TAG_SERVICE}"), service),
            InstanceQuery::Release(release) => filter(&format!("tag:{TAG_RELEASE}"), release),
            InstanceQuery::AllServices => filter("tag-key", TAG_SERVICE),
        };
        let live = ec2t::Filter::builder()
            .name("instance-state-name")
            .set_values(Some(states.iter().map(|s| s.to_string()).collect()))
            .build();
        let mut instances = Vec::new();
        let mut next_token = None;
        loop {
            let page = self
                .ec2
                .describe_instances()
                .filters(selector.clone())
                .filters(live.clone())
                .set_next_token(next_token)
                .send()
                .await
                .map_err(aws_error("DescribeInstances"))?;
            for reservation in page.reservations() {
                instances.extend(reservation.instances().iter().filter_map(instance_from_sdk));
            }
            next_token = page.next_token().map(str::to_owned);
            if next_token.is_none() {
                break;
            }
        }
        instances.sort_by(|a, b| (&a.release, a.index, &a.id).cmp(&(&b.release, b.index, &b.id)));
        Ok(instances)
    }

    pub async fn addresses(&self, allocation_ids: &[String]) -> Result<Vec<Address>, Error> {
        if allocation_ids.is_empty() {
            return Ok(Vec::new());
        }
        let out = self
            .ec2
            .describe_addresses()
            .set_allocation_ids(Some(allocation_ids.to_vec()))
            .send()
            .await
            .map_err(aws_error("DescribeAddresses"))?;
        Ok(out
            .addresses()
            .iter()
            .filter_map(address_from_sdk)
            .collect())
    }

    /// Addresses associated with any of these instances (cleanup releases them all).
    pub async fn addresses_of(&self, instance_ids: &[String]) -> Result<Vec<Address>, Error> {
        if instance_ids.is_empty() {
            return Ok(Vec::new());
        }
        let out = self
            .ec2
            .describe_addresses()
            .filters(
                ec2t::Filter::builder()
                    .name("instance-id")
                    .set_values(Some(instance_ids.to_vec()))
                    .build(),
            )
            .send()
            .await
            .map_err(aws_error("DescribeAddresses"))?;
        Ok(out
            .addresses()
            .iter()
            .filter_map(address_from_sdk)
            .collect())
    }

    /// The service's blue/green target groups and product/pre-product routes, found by tags.
    pub async fn alb(&self, service: &str) -> Result<Alb, Error> {
        let mut groups = Vec::new();
        let mut marker = None;
        loop {
            let page = self
                .elb
                .describe_target_groups()
                .set_marker(marker)
                .send()
                .await
                .map_err(aws_error("DescribeTargetGroups"))?;
            groups.extend(page.target_groups().iter().cloned());
            marker = page.next_marker().map(str::to_owned);
            if marker.is_none() {
                break;
            }
        }
        let group_arns: Vec<String> = groups
            .iter()
            .filter_map(|g| g.target_group_arn().map(str::to_owned))
            .collect();
        let tags = self.elb_tags(&group_arns).await?;
        let mut slots: BTreeMap<Slot, Vec<&elbt::TargetGroup>> = BTreeMap::new();
        for group in &groups {
            let Some(tags) = group.target_group_arn().and_then(|arn| tags.get(arn)) else {
                continue;
            };
            if tags.get(TAG_SERVICE).map(String::as_str) != Some(service) {
                continue;
            }
            match tags.get(TAG_SLOT).and_then(|s| Slot::parse(s)) {
                Some(slot) => slots.entry(slot).or_default().push(group),
                None => {
                    return Err(Error::World(format!(
                        "target group {} is tagged {TAG_SERVICE}={service} but its {TAG_SLOT} tag is not blue or green",
                        group.target_group_name().unwrap_or_default()
                    )))
                }
            }
        }
        let mut pick = |slot: Slot| -> Result<&elbt::TargetGroup, Error> {
            match slots.remove(&slot).unwrap_or_default().as_slice() {
                [one] => Ok(*one),
                [] => Err(Error::World(format!(
                    "service {service} has no target group tagged {TAG_SERVICE}={service}, {TAG_SLOT}={slot}"
                ))),
                many => Err(Error::World(format!(
                    "service {service} has {} target groups tagged {TAG_SLOT}={slot}: {}",
                    many.len(),
                    many.iter().filter_map(|g| g.target_group_name()).collect::<Vec<_>>().join(", ")
                ))),
            }
        };
        let blue = pick(Slot::Blue)?;
        let green = pick(Slot::Green)?;

        let mut load_balancers: Vec<String> = blue
            .load_balancer_arns()
            .iter()
            .chain(green.load_balancer_arns())
            .cloned()
            .collect();
        load_balancers.sort();
        load_balancers.dedup();
        let (product, pre_product) = self.routes(service, &load_balancers).await?;

        Ok(Alb {
            blue: self.target_group(blue, Slot::Blue).await?,
            green: self.target_group(green, Slot::Green).await?,
            product,
            pre_product,
        })
    }

    async fn target_group(
        &self,
        group: &elbt::TargetGroup,
        slot: Slot,
    ) -> Result<TargetGroup, Error> {
        let arn = group.target_group_arn().unwrap_or_default().to_owned();
        let out = self
            .elb
            .describe_target_health()
            .target_group_arn(&arn)
            .send()
            .await
            .map_err(aws_error("DescribeTargetHealth"))?;
        let targets = out
            .target_health_descriptions()
            .iter()
            .filter_map(|d| {
                let id = d.target()?.id()?.to_owned();
                let health = d.target_health();
                let reason = health
                    .and_then(|h| h.description().or(h.reason().map(|r| r.as_str())))
                    .map(str::to_owned);
                let health = match health.and_then(|h| h.state()) {
                    Some(elbt::TargetHealthStateEnum::Healthy) => Health::Healthy,
                    Some(elbt::TargetHealthStateEnum::Initial) => Health::Initial,
                    Some(elbt::TargetHealthStateEnum::Unhealthy) => Health::Unhealthy,
                    Some(elbt::TargetHealthStateEnum::Unused) => Health::Unused,
                    Some(
                        elbt::TargetHealthStateEnum::Draining
                        | elbt::TargetHealthStateEnum::UnhealthyDraining,
                    ) => Health::Draining,
                    _ => Health::Unavailable,
                };
                Some(Target { id, health, reason })
            })
            .collect();
        Ok(TargetGroup {
            arn,
            name: group.target_group_name().unwrap_or_default().to_owned(),
            slot,
            targets,
        })
    }

    async fn routes(
        &self,
        service: &str,
        load_balancers: &[String],
    ) -> Result<(Route, Route), Error> {
        let mut candidates: Vec<(String, bool, Vec<elbt::Action>, Vec<String>)> = Vec::new();
        for load_balancer in load_balancers {
            let listeners = self
                .elb
                .describe_listeners()
                .load_balancer_arn(load_balancer)
                .send()
                .await
                .map_err(aws_error("DescribeListeners"))?;
            for listener in listeners.listeners() {
                let Some(listener_arn) = listener.listener_arn() else {
                    continue;
                };
                candidates.push((
                    listener_arn.to_owned(),
                    true,
                    listener.default_actions().to_vec(),
                    Vec::new(),
                ));
                let mut marker = None;
                loop {
                    let rules = self
                        .elb
                        .describe_rules()
                        .listener_arn(listener_arn)
                        .set_marker(marker)
                        .send()
                        .await
                        .map_err(aws_error("DescribeRules"))?;
                    for rule in rules.rules() {
                        if rule.is_default() == Some(true) {
                            continue;
                        }
                        let Some(rule_arn) = rule.rule_arn() else {
                            continue;
                        };
                        let conditions = rule
                            .conditions()
                            .iter()
                            .flat_map(describe_condition)
                            .collect();
                        candidates.push((
                            rule_arn.to_owned(),
                            false,
                            rule.actions().to_vec(),
                            conditions,
                        ));
                    }
                    marker = rules.next_marker().map(str::to_owned);
                    if marker.is_none() {
                        break;
                    }
                }
            }
        }
        let arns: Vec<String> = candidates.iter().map(|c| c.0.clone()).collect();
        let tags = self.elb_tags(&arns).await?;
        let mut found: HashMap<&'static str, Vec<Route>> = HashMap::new();
        for (arn, is_listener_default, actions, conditions) in candidates {
            let Some(tags) = tags.get(&arn) else { continue };
            if tags.get(TAG_SERVICE).map(String::as_str) != Some(service) {
                continue;
            }
            let role = match tags.get(TAG_ROUTE).map(String::as_str) {
                Some("product") => RouteRole::Product,
                Some("pre-product") => RouteRole::PreProduct,
                _ => continue,
            };
            let forward = forward_from_actions(&actions).ok_or_else(|| {
                Error::World(format!(
                    "the {} route {arn} has no forward action",
                    role.as_str()
                ))
            })?;
            let kept_actions = kept_actions(&arn, &actions)?;
            let forward_order = actions
                .iter()
                .find(|a| a.r#type() == Some(&elbt::ActionTypeEnum::Forward))
                .and_then(|a| a.order());
            let previous = tags.get(TAG_PREVIOUS).cloned();
            let lock = tags.get(TAG_LOCK).and_then(|v| Lock::parse(v));
            found.entry(role.as_str()).or_default().push(Route {
                arn,
                role,
                is_listener_default,
                forward,
                forward_order,
                kept_actions,
                previous,
                lock,
                conditions,
            });
        }
        let mut pick = |role: RouteRole| -> Result<Route, Error> {
            let mut routes = found.remove(role.as_str()).unwrap_or_default();
            match routes.len() {
                1 => Ok(routes.remove(0)),
                0 => Err(Error::World(format!(
                    "service {service} has no listener rule (or listener) tagged {TAG_SERVICE}={service}, {TAG_ROUTE}={} on the load balancer of its target groups",
                    role.as_str()
                ))),
                n => Err(Error::World(format!(
                    "service {service} has {n} routes tagged {TAG_ROUTE}={}: {}",
                    role.as_str(),
                    routes.iter().map(|r| r.arn.as_str()).collect::<Vec<_>>().join(", ")
                ))),
            }
        };
        Ok((pick(RouteRole::Product)?, pick(RouteRole::PreProduct)?))
    }

    async fn elb_tags(
        &self,
        arns: &[String],
    ) -> Result<HashMap<String, HashMap<String, String>>, Error> {
        let mut tags = HashMap::new();
        for batch in arns.chunks(DESCRIBE_TAGS_BATCH) {
            let out = self
                .elb
                .describe_tags()
                .set_resource_arns(Some(batch.to_vec()))
                .send()
                .await
                .map_err(aws_error("DescribeTags"))?;
            for description in out.tag_descriptions() {
                let Some(arn) = description.resource_arn() else {
                    continue;
                };
                let pairs = description
                    .tags()
                    .iter()
                    .filter_map(|t| {
                        Some((
                            t.key()?.to_owned(),
                            t.value().unwrap_or_default().to_owned(),
                        ))
                    })
                    .collect();
                tags.insert(arn.to_owned(), pairs);
            }
        }
        Ok(tags)
    }

    /// A-records under `<service>.<zone>`.
    pub async fn dns(&self, zone_id: &str, service: &str) -> Result<Dns, Error> {
        let zone = self
            .route53
            .get_hosted_zone()
            .id(zone_id)
            .send()
            .await
            .map_err(aws_error("GetHostedZone"))?;
        let mut zone_name = zone
            .hosted_zone()
            .map(|z| z.name().to_owned())
            .unwrap_or_default();
        if !zone_name.ends_with('.') {
            zone_name.push('.');
        }
        let suffix = format!(".{service}.{zone_name}");
        let marker = ownership_marker(service);
        let mut a_records: BTreeMap<String, (i64, Vec<String>)> = BTreeMap::new();
        let mut markers: BTreeMap<String, i64> = BTreeMap::new();
        let mut start: Option<(String, r53t::RrType)> = None;
        loop {
            let mut request = self
                .route53
                .list_resource_record_sets()
                .hosted_zone_id(zone_id);
            if let Some((name, kind)) = start.take() {
                request = request.start_record_name(name).start_record_type(kind);
            }
            let page = request
                .send()
                .await
                .map_err(aws_error("ListResourceRecordSets"))?;
            for set in page.resource_record_sets() {
                if !set.name().ends_with(&suffix) {
                    continue;
                }
                let values: Vec<String> = set
                    .resource_records()
                    .iter()
                    .map(|r| r.value().to_owned())
                    .collect();
                match set.r#type() {
                    r53t::RrType::A => {
                        a_records.insert(set.name().to_owned(), (set.ttl().unwrap_or(0), values));
                    }
                    r53t::RrType::Txt if values.contains(&marker) => {
                        markers.insert(set.name().to_owned(), set.ttl().unwrap_or(0));
                    }
                    _ => {}
                }
            }
            match (
                page.is_truncated(),
                page.next_record_name(),
                page.next_record_type(),
            ) {
                (true, Some(name), Some(kind)) => start = Some((name.to_owned(), kind.clone())),
                _ => break,
            }
        }
        let mut records = BTreeMap::new();
        let mut foreign = BTreeSet::new();
        for (name, (ttl, values)) in a_records {
            match markers.get(&name) {
                Some(&marker_ttl) => {
                    records.insert(
                        name,
                        RecordSet {
                            ttl,
                            values,
                            marker_ttl,
                        },
                    );
                }
                None => {
                    foreign.insert(name);
                }
            }
        }
        Ok(Dns {
            zone_id: zone_id.to_owned(),
            zone_name,
            records,
            foreign,
        })
    }

    // ------------------------------------------------------------ writes

    pub async fn execute(&self, step: &Step) -> Result<(), Error> {
        match step {
            Step::Launch {
                spec,
                client_token,
                tags,
            } => self.launch(spec, client_token, tags).await,
            Step::AssociateAddress {
                allocation_id,
                instance_id,
            } => {
                self.ec2
                    .associate_address()
                    .allocation_id(allocation_id)
                    .instance_id(instance_id)
                    .allow_reassociation(true)
                    .send()
                    .await
                    .map_err(aws_error("AssociateAddress"))?;
                Ok(())
            }
            Step::DisassociateAddress { association_id, .. } => {
                match self
                    .ec2
                    .disassociate_address()
                    .association_id(association_id)
                    .send()
                    .await
                {
                    Ok(_) => Ok(()),
                    // Already gone: what we wanted.
                    Err(err) if err.code() == Some("InvalidAssociationID.NotFound") => Ok(()),
                    Err(err) => Err(aws_error("DisassociateAddress")(err)),
                }
            }
            Step::RegisterTargets {
                target_group,
                instance_ids,
            } => {
                self.elb
                    .register_targets()
                    .target_group_arn(target_group)
                    .set_targets(Some(targets(instance_ids)))
                    .send()
                    .await
                    .map_err(aws_error("RegisterTargets"))?;
                Ok(())
            }
            Step::DeregisterTargets {
                target_group,
                instance_ids,
            } => {
                self.elb
                    .deregister_targets()
                    .target_group_arn(target_group)
                    .set_targets(Some(targets(instance_ids)))
                    .send()
                    .await
                    .map_err(aws_error("DeregisterTargets"))?;
                Ok(())
            }
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
                if *is_listener_default {
                    self.elb
                        .modify_listener()
                        .listener_arn(route)
                        .set_default_actions(Some(actions))
                        .send()
                        .await
                        .map_err(aws_error("ModifyListener"))?;
                } else {
                    self.elb
                        .modify_rule()
                        .rule_arn(route)
                        .set_actions(Some(actions))
                        .send()
                        .await
                        .map_err(aws_error("ModifyRule"))?;
                }
                Ok(())
            }
            Step::TagRoute { route, tags } => {
                let tags = tags
                    .iter()
                    .map(|(k, v)| elbt::Tag::builder().key(k).value(v).build())
                    .collect();
                self.elb
                    .add_tags()
                    .resource_arns(route)
                    .set_tags(Some(tags))
                    .send()
                    .await
                    .map_err(aws_error("AddTags"))?;
                Ok(())
            }
            Step::UntagRoute { route, keys } => {
                self.elb
                    .remove_tags()
                    .resource_arns(route)
                    .set_tag_keys(Some(keys.clone()))
                    .send()
                    .await
                    .map_err(aws_error("RemoveTags"))?;
                Ok(())
            }
            Step::TagInstances { instance_ids, tags } => {
                let tags = tags
                    .iter()
                    .map(|(k, v)| ec2t::Tag::builder().key(k).value(v).build())
                    .collect();
                self.ec2
                    .create_tags()
                    .set_resources(Some(instance_ids.clone()))
                    .set_tags(Some(tags))
                    .send()
                    .await
                    .map_err(aws_error("CreateTags"))?;
                Ok(())
            }
            Step::UntagInstances { instance_ids, keys } => {
                let tags = keys
                    .iter()
                    .map(|k| ec2t::Tag::builder().key(k).build())
                    .collect();
                self.ec2
                    .delete_tags()
                    .set_resources(Some(instance_ids.clone()))
                    .set_tags(Some(tags))
                    .send()
                    .await
                    .map_err(aws_error("DeleteTags"))?;
                Ok(())
            }
            Step::ChangeRecords {
                zone_id,
                service,
                changes,
            } => self.change_records(zone_id, service, changes).await,
            Step::Terminate { instance_ids } => {
                self.ec2
                    .terminate_instances()
                    .set_instance_ids(Some(instance_ids.clone()))
                    .send()
                    .await
                    .map_err(aws_error("TerminateInstances"))?;
                Ok(())
            }
        }
    }

    /// One instance per call, so each has its own index, Name and ClientToken. A token whose
    /// instance has died (a retried stage keeps its execution id, so its tokens) is spent: the
    /// next generation of it launches a fresh instance.
    async fn launch(
        &self,
        spec: &LaunchSpec,
        client_token: &str,
        tags: &BTreeMap<String, String>,
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
            let dead = out.instances().iter().any(|i| {
                matches!(
                    i.state().and_then(|s| s.name()),
                    Some(
                        ec2t::InstanceStateName::ShuttingDown | ec2t::InstanceStateName::Terminated
                    )
                )
            });
            if !dead {
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

    /// Every A record goes with its ownership TXT record, in the same atomic batch.
    async fn change_records(
        &self,
        zone_id: &str,
        service: &str,
        changes: &[RecordChange],
    ) -> Result<(), Error> {
        let marker = [ownership_marker(service)];
        let mut batch = r53t::ChangeBatch::builder().comment("cutover");
        for change in changes {
            let action = match change.action {
                RecordAction::Upsert => r53t::ChangeAction::Upsert,
                RecordAction::Delete => r53t::ChangeAction::Delete,
            };
            for (kind, ttl, values) in [
                (r53t::RrType::A, change.ttl, change.values.as_slice()),
                (r53t::RrType::Txt, change.marker_ttl, marker.as_slice()),
            ] {
                let records = values
                    .iter()
                    .map(|value| r53t::ResourceRecord::builder().value(value).build())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(build_error("ResourceRecord"))?;
                let set = r53t::ResourceRecordSet::builder()
                    .name(&change.name)
                    .r#type(kind)
                    .ttl(ttl)
                    .set_resource_records(Some(records))
                    .build()
                    .map_err(build_error("ResourceRecordSet"))?;
                batch = batch.changes(
                    r53t::Change::builder()
                        .action(action.clone())
                        .resource_record_set(set)
                        .build()
                        .map_err(build_error("Change"))?,
                );
            }
        }
        self.route53
            .change_resource_record_sets()
            .hosted_zone_id(zone_id)
            .change_batch(batch.build().map_err(build_error("ChangeBatch"))?)
            .send()
            .await
            .map_err(aws_error("ChangeResourceRecordSets"))?;
        Ok(())
    }

    // ------------------------------------------------------------ CodePipeline and SNS

    /// `Ok(false)` when CodePipeline says the job was already acknowledged (or is gone).
    pub async fn put_job_success(
        &self,
        job_id: &str,
        summary: &str,
        continuation_token: Option<String>,
        output_variables: &BTreeMap<String, String>,
    ) -> Result<bool, Error> {
        let details = aws_sdk_codepipeline::types::ExecutionDetails::builder()
            .summary(truncate(summary, 2048))
            .build();
        let mut request = self
            .codepipeline
            .put_job_success_result()
            .job_id(job_id)
            .execution_details(details)
            .set_continuation_token(continuation_token);
        for (key, value) in output_variables {
            request = request.output_variables(key, value);
        }
        acknowledged(request.send().await.map(|_| ()), "PutJobSuccessResult")
    }

    pub async fn put_job_failure(&self, job_id: &str, message: &str) -> Result<bool, Error> {
        let details = aws_sdk_codepipeline::types::FailureDetails::builder()
            .r#type(aws_sdk_codepipeline::types::FailureType::JobFailed)
            .message(truncate(message, 5000))
            .build()
            .map_err(build_error("FailureDetails"))?;
        let sent = self
            .codepipeline
            .put_job_failure_result()
            .job_id(job_id)
            .failure_details(details)
            .send()
            .await;
        acknowledged(sent.map(|_| ()), "PutJobFailureResult")
    }

    pub async fn publish(
        &self,
        topic_arn: &str,
        subject: &str,
        message: &str,
    ) -> Result<(), Error> {
        self.sns
            .publish()
            .topic_arn(topic_arn)
            .subject(truncate(subject, 100))
            .message(message)
            .send()
            .await
            .map_err(aws_error("Publish"))?;
        Ok(())
    }
}

fn acknowledged<E, R>(
    sent: Result<(), SdkError<E, R>>,
    operation: &'static str,
) -> Result<bool, Error>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match sent {
        Ok(()) => Ok(true),
        Err(err)
            if matches!(
                err.code(),
                Some("InvalidJobStateException" | "JobNotFoundException")
            ) =>
        {
            Ok(false)
        }
        Err(err) => Err(aws_error(operation)(err)),
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
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

/// The route's actions other than the forward, as cutover must send them back. Only
/// authentication can stand in front of a forward; anything else is refused by name rather than
/// dropped.
fn kept_actions(route: &str, actions: &[elbt::Action]) -> Result<Vec<KeptAction>, Error> {
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
                    session: AuthSession {
                        session_cookie_name: c.session_cookie_name().map(str::to_owned),
                        scope: c.scope().map(str::to_owned),
                        session_timeout: c.session_timeout(),
                        extra_params: sorted(c.authentication_request_extra_params()),
                        on_unauthenticated_request: c
                            .on_unauthenticated_request()
                            .map(|b| b.as_str().to_owned()),
                    },
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
                    session: AuthSession {
                        session_cookie_name: c.session_cookie_name().map(str::to_owned),
                        scope: c.scope().map(str::to_owned),
                        session_timeout: c.session_timeout(),
                        extra_params: sorted(c.authentication_request_extra_params()),
                        on_unauthenticated_request: c
                            .on_unauthenticated_request()
                            .map(|b| b.as_str().to_owned()),
                    },
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

fn sorted(params: Option<&HashMap<String, String>>) -> BTreeMap<String, String> {
    params
        .map(|p| p.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

fn kept_action(kept: &KeptAction) -> elbt::Action {
    let extra = |session: &AuthSession| {
        (!session.extra_params.is_empty()).then(|| {
            session
                .extra_params
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<HashMap<_, _>>()
        })
    };
    let action = elbt::Action::builder().set_order(kept.order);
    match &kept.authenticate {
        Authenticate::Oidc {
            issuer,
            authorization_endpoint,
            token_endpoint,
            user_info_endpoint,
            client_id,
            session,
        } => action
            .r#type(elbt::ActionTypeEnum::AuthenticateOidc)
            .authenticate_oidc_config(
                elbt::AuthenticateOidcActionConfig::builder()
                    .issuer(issuer)
                    .authorization_endpoint(authorization_endpoint)
                    .token_endpoint(token_endpoint)
                    .user_info_endpoint(user_info_endpoint)
                    .client_id(client_id)
                    // Describe calls never return the secret; ELB keeps the one it has.
                    .use_existing_client_secret(true)
                    .set_session_cookie_name(session.session_cookie_name.clone())
                    .set_scope(session.scope.clone())
                    .set_session_timeout(session.session_timeout)
                    .set_authentication_request_extra_params(extra(session))
                    .set_on_unauthenticated_request(
                        session
                            .on_unauthenticated_request
                            .as_deref()
                            .map(elbt::AuthenticateOidcActionConditionalBehaviorEnum::from),
                    )
                    .build(),
            ),
        Authenticate::Cognito {
            user_pool_arn,
            user_pool_client_id,
            user_pool_domain,
            session,
        } => action
            .r#type(elbt::ActionTypeEnum::AuthenticateCognito)
            .authenticate_cognito_config(
                elbt::AuthenticateCognitoActionConfig::builder()
                    .user_pool_arn(user_pool_arn)
                    .user_pool_client_id(user_pool_client_id)
                    .user_pool_domain(user_pool_domain)
                    .set_session_cookie_name(session.session_cookie_name.clone())
                    .set_scope(session.scope.clone())
                    .set_session_timeout(session.session_timeout)
                    .set_authentication_request_extra_params(extra(session))
                    .set_on_unauthenticated_request(
                        session
                            .on_unauthenticated_request
                            .as_deref()
                            .map(elbt::AuthenticateCognitoActionConditionalBehaviorEnum::from),
                    )
                    .build(),
            ),
    }
    .build()
}

fn forward_from_actions(actions: &[elbt::Action]) -> Option<Forward> {
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

fn describe_condition(condition: &elbt::RuleCondition) -> Vec<String> {
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

fn instance_from_sdk(instance: &ec2t::Instance) -> Option<Instance> {
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
        release: tags.get(TAG_RELEASE).map(|s| s.to_string()),
        index: tags.get(TAG_INDEX).and_then(|s| s.parse().ok()),
        name: tags.get(TAG_NAME).map(|s| s.to_string()),
        private_ip: instance.private_ip_address().map(str::to_owned),
        retired_at: tags.get(TAG_RETIRED_AT).and_then(|s| s.parse().ok()),
        launched_at: instance.launch_time().map(|t| t.secs().max(0) as u64),
        state_reason: instance
            .state_reason()
            .and_then(|r| r.message().or(r.code()))
            .map(str::to_owned),
    })
}

fn address_from_sdk(address: &ec2t::Address) -> Option<Address> {
    Some(Address {
        allocation_id: address.allocation_id()?.to_owned(),
        association_id: address.association_id().map(str::to_owned),
        instance_id: address
            .instance_id()
            .filter(|id| !id.is_empty())
            .map(str::to_owned),
        public_ip: address.public_ip().map(str::to_owned),
    })
}
