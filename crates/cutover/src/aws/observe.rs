//! Reading the world: instances, addresses, the service's slots and routes (found by tags),
//! its records.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use aws_sdk_ec2::types as ec2t;
use aws_sdk_elasticloadbalancingv2::types as elbt;
use aws_sdk_route53::types as r53t;

use super::convert::*;
use super::*;
use crate::run::Function;

impl Aws {
    /// What each function reads, and nothing more: the service's slots and routes always; its
    /// instances (with the dead ones for provision, which must see one die); its records when it
    /// writes them; the addresses it may move (provision, switch) or release (cleanup).
    pub async fn observe(&self, look: Look<'_>) -> Result<Seen, Error> {
        let service = look.service.as_str();
        let query = InstanceQuery::Service(service);
        let instances = if look.function == Function::Provision {
            self.instances_with_dead(query).await?
        } else {
            self.instances(query).await?
        };
        let dns = match &look.settings.dns_zone {
            Some(zone) if look.function.writes_dns() => Some(self.dns(zone, service).await?),
            _ => None,
        };
        let alb = self.alb(service).await?;
        let addresses = match look.function {
            Function::Provision | Function::SwitchListener => {
                self.addresses(&look.settings.elastic_ips).await?
            }
            Function::Cleanup => {
                let ids: Vec<String> = instances.iter().map(|i| i.id.clone()).collect();
                self.addresses_of(&ids).await?
            }
            Function::RegisterTarget => Vec::new(),
        };
        let answers_to_alarms =
            matches!(look.function, Function::SwitchListener | Function::Cleanup);
        let alarms = if answers_to_alarms {
            self.alarms(&look.settings.alarms).await?
        } else {
            Vec::new()
        };
        Ok(Seen {
            alb,
            instances,
            dns,
            addresses,
            alarms,
        })
    }

    /// Without the `alarms` feature (provision, register-target): they never read alarms.
    #[cfg(not(feature = "alarms"))]
    pub async fn alarms(&self, names: &[String]) -> Result<Vec<Alarm>, Error> {
        match names {
            [] => Ok(Vec::new()),
            _ => Err(Error::Internal(
                "this function was built without the `alarms` feature".into(),
            )),
        }
    }

    /// The named alarms that exist (metric and composite), with their states.
    #[cfg(feature = "alarms")]
    pub async fn alarms(&self, names: &[String]) -> Result<Vec<Alarm>, Error> {
        use aws_sdk_cloudwatch::types::AlarmType;
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut alarms = Vec::new();
        // DescribeAlarms takes at most 100 names.
        for batch in names.chunks(100) {
            let out = self
                .cloudwatch
                .describe_alarms()
                .set_alarm_names(Some(batch.to_vec()))
                .alarm_types(AlarmType::MetricAlarm)
                .alarm_types(AlarmType::CompositeAlarm)
                .send()
                .await
                .map_err(aws_error("DescribeAlarms"))?;
            let metric = out
                .metric_alarms()
                .iter()
                .map(|a| (a.alarm_name(), a.state_value().map(|s| s.as_str())));
            let composite = out
                .composite_alarms()
                .iter()
                .map(|a| (a.alarm_name(), a.state_value().map(|s| s.as_str())));
            alarms.extend(metric.chain(composite).filter_map(|(name, state)| {
                Some(Alarm {
                    name: name?.to_owned(),
                    state: AlarmState::parse(state?)?,
                })
            }));
        }
        Ok(alarms)
    }

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
        let request = self
            .ec2
            .describe_addresses()
            .set_allocation_ids(Some(allocation_ids.to_vec()));
        read_addresses(request).await
    }

    /// Addresses associated with any of these instances (cleanup releases them all).
    pub async fn addresses_of(&self, instance_ids: &[String]) -> Result<Vec<Address>, Error> {
        if instance_ids.is_empty() {
            return Ok(Vec::new());
        }
        let request = self.ec2.describe_addresses().filters(
            ec2t::Filter::builder()
                .name("instance-id")
                .set_values(Some(instance_ids.to_vec()))
                .build(),
        );
        read_addresses(request).await
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
        let candidates = self.route_candidates(load_balancers).await?;
        let arns: Vec<String> = candidates.iter().map(|c| c.arn.clone()).collect();
        let tags = self.elb_tags(&arns).await?;
        let mut found: HashMap<&'static str, Vec<Route>> = HashMap::new();
        for candidate in candidates {
            let Some(tags) = tags.get(&candidate.arn) else {
                continue;
            };
            if let Some(route) = route_of_service(candidate, tags, service)? {
                found.entry(route.role.as_str()).or_default().push(route);
            }
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

    /// Every listener (its default action) and every non-default rule of these load balancers.
    async fn route_candidates(&self, load_balancers: &[String]) -> Result<Vec<Candidate>, Error> {
        let mut candidates = Vec::new();
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
                candidates.push(Candidate {
                    arn: listener_arn.to_owned(),
                    is_listener_default: true,
                    actions: listener.default_actions().to_vec(),
                    conditions: Vec::new(),
                });
                candidates.extend(self.rules(listener_arn).await?);
            }
        }
        Ok(candidates)
    }

    async fn rules(&self, listener_arn: &str) -> Result<Vec<Candidate>, Error> {
        let mut candidates = Vec::new();
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
                let Some(rule_arn) = rule.rule_arn().filter(|_| rule.is_default() != Some(true))
                else {
                    continue;
                };
                candidates.push(Candidate {
                    arn: rule_arn.to_owned(),
                    is_listener_default: false,
                    actions: rule.actions().to_vec(),
                    conditions: rule
                        .conditions()
                        .iter()
                        .flat_map(describe_condition)
                        .collect(),
                });
            }
            marker = rules.next_marker().map(str::to_owned);
            if marker.is_none() {
                return Ok(candidates);
            }
        }
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
    /// The service's records in the zone: those cutover owns (an ownership TXT record beside
    /// them) and the names of the others.
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
        let sets = self.record_sets(zone_id, &suffix).await?;
        let marker = ownership_marker(service);
        let owned: BTreeMap<&str, i64> = sets
            .iter()
            .filter(|s| s.r#type() == &r53t::RrType::Txt)
            .filter(|s| s.resource_records().iter().any(|r| r.value() == marker))
            .map(|s| (s.name(), s.ttl().unwrap_or(0)))
            .collect();
        let mut records = BTreeMap::new();
        let mut foreign = BTreeSet::new();
        for set in sets.iter().filter(|s| s.r#type() == &r53t::RrType::A) {
            let Some(&marker_ttl) = owned.get(set.name()) else {
                foreign.insert(set.name().to_owned());
                continue;
            };
            let values = set
                .resource_records()
                .iter()
                .map(|r| r.value().to_owned())
                .collect();
            let ttl = set.ttl().unwrap_or(0);
            records.insert(
                set.name().to_owned(),
                RecordSet {
                    ttl,
                    values,
                    marker_ttl,
                },
            );
        }
        Ok(Dns {
            zone_id: zone_id.to_owned(),
            zone_name,
            records,
            foreign,
        })
    }

    /// Every record set of the zone whose name ends with `suffix`, all pages.
    async fn record_sets(
        &self,
        zone_id: &str,
        suffix: &str,
    ) -> Result<Vec<r53t::ResourceRecordSet>, Error> {
        let mut sets = Vec::new();
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
            sets.extend(
                page.resource_record_sets()
                    .iter()
                    .filter(|s| s.name().ends_with(suffix))
                    .cloned(),
            );
            match (
                page.is_truncated(),
                page.next_record_name(),
                page.next_record_type(),
            ) {
                (true, Some(name), Some(kind)) => start = Some((name.to_owned(), kind.clone())),
                _ => return Ok(sets),
            }
        }
    }
}

async fn read_addresses(
    request: aws_sdk_ec2::operation::describe_addresses::builders::DescribeAddressesFluentBuilder,
) -> Result<Vec<Address>, Error> {
    let out = request
        .send()
        .await
        .map_err(aws_error("DescribeAddresses"))?;
    Ok(out
        .addresses()
        .iter()
        .filter_map(address_from_sdk)
        .collect())
}
