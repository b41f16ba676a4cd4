//! Reading the world: instances, addresses, the service's slots and routes (found by tags),
//! its records.

use aws_sdk_ec2::types as ec2t;

use super::convert::*;
use super::*;
use crate::port::Function;

impl Aws {
    /// What each function reads, and nothing more, every read that does not wait on another
    /// side by side: the service's slots and routes always (with their targets' health for the
    /// functions that wait on it); its instances (with the dead ones for provision, which must see
    /// one die); its records when it writes them; the addresses it may move (provision, switch) or
    /// release (cleanup: those its instances hold); its alarms when it answers to them.
    pub async fn observe(&self, look: Look<'_>) -> Result<Seen, Error> {
        let service = look.service.as_str();
        let function = look.function;
        let instances = async {
            let query = InstanceQuery::Service(service);
            match function {
                Function::Provision => self.instances_with_dead(query).await,
                _ => self.instances(query).await,
            }
        };
        let instances_and_addresses = async {
            match function {
                Function::Provision | Function::SwitchListener => {
                    tokio::try_join!(instances, self.addresses(&look.settings.elastic_ips))
                }
                Function::Cleanup => {
                    // Every associated address, beside the instances rather than after them: one
                    // round, not two (DescribeAddresses is not paged).
                    let (instances, associated) =
                        tokio::try_join!(instances, self.associated_addresses())?;
                    let held = associated
                        .into_iter()
                        .filter(|a| {
                            a.instance_id
                                .as_ref()
                                .is_some_and(|id| instances.iter().any(|i| &i.id == id))
                        })
                        .collect();
                    Ok((instances, held))
                }
                Function::RegisterTarget => Ok((instances.await?, Vec::new())),
            }
        };
        let dns = async {
            match &look.settings.dns_zone {
                Some(zone) if function.writes_dns() => self.dns(zone, service).await.map(Some),
                _ => Ok(None),
            }
        };
        let alarms = async {
            match function {
                Function::SwitchListener | Function::Cleanup => {
                    self.alarms(&look.settings.alarms).await
                }
                Function::Provision | Function::RegisterTarget => Ok(Vec::new()),
            }
        };
        let alb = async {
            match look.alb {
                Some(alb) => Ok(alb.clone()),
                None => {
                    let listener = look.settings.listener.clone();
                    let health = function.reads_target_health();
                    self.slots_and_routes(service, health, async { listener })
                        .await
                }
            }
        };
        let groups = async {
            if !look.settings.fleet.is_group() {
                return Ok((Vec::new(), Vec::new()));
            }
            let groups = self.groups(service, function == Function::SwitchListener);
            match function {
                Function::Provision | Function::Cleanup => {
                    tokio::try_join!(groups, self.launch_templates(service))
                }
                _ => Ok((groups.await?, Vec::new())),
            }
        };
        let ((instances, addresses), dns, alb, alarms, (groups, templates)) =
            tokio::try_join!(instances_and_addresses, dns, alb, alarms, groups)?;
        Ok(Seen {
            alb,
            instances,
            groups,
            templates,
            dns,
            addresses,
            alarms,
            lock_holder: None,
            executions: BTreeMap::new(),
        })
    }

    /// Without the `alarms` feature (provision, register-target): they never read alarms.
    #[cfg(not(feature = "alarms"))]
    pub async fn alarms(&self, names: &[String]) -> Result<Vec<Alarm>, Error> {
        match names {
            [] => Ok(Vec::new()),
            _ => Err(not_built("alarms")),
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

    /// Every address associated with an instance.
    pub async fn associated_addresses(&self) -> Result<Vec<Address>, Error> {
        let addresses = read_addresses(self.ec2.describe_addresses()).await?;
        Ok(addresses
            .into_iter()
            .filter(|a| a.instance_id.is_some())
            .collect())
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
