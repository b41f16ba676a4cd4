//! `FLEET=asg`: reading the service's groups and launch templates, and the group steps.

use std::collections::HashMap;

use aws_sdk_autoscaling::types as ast;
use aws_sdk_ec2::types as ec2t;

use super::*;

impl Aws {
    /// The groups cutover created for `service` (by their `cutover:service` tag), with their
    /// target-tracking policies when `with_policies` (the switch copies them).
    pub async fn groups(&self, service: &str, with_policies: bool) -> Result<Vec<Group>, Error> {
        let mut groups = Vec::new();
        let mut next_token = None;
        loop {
            let page = self
                .autoscaling
                .describe_auto_scaling_groups()
                .filters(
                    ast::Filter::builder()
                        .name(format!("tag:{TAG_SERVICE}"))
                        .values(service)
                        .build(),
                )
                .set_next_token(next_token)
                .send()
                .await
                .map_err(aws_error("DescribeAutoScalingGroups"))?;
            groups.extend(page.auto_scaling_groups().iter().filter_map(group_from_sdk));
            next_token = page.next_token().map(str::to_owned);
            if next_token.is_none() {
                break;
            }
        }
        if with_policies {
            let policies = futures_util::future::try_join_all(
                groups
                    .iter()
                    .map(|group| self.tracking_policies(&group.name)),
            )
            .await?;
            for (group, policies) in groups.iter_mut().zip(policies) {
                group.policies = policies;
            }
        }
        groups.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(groups)
    }

    async fn tracking_policies(&self, group: &str) -> Result<Vec<TrackingPolicy>, Error> {
        let out = self
            .autoscaling
            .describe_policies()
            .auto_scaling_group_name(group)
            .policy_types("TargetTrackingScaling")
            .send()
            .await
            .map_err(aws_error("DescribePolicies"))?;
        Ok(out
            .scaling_policies()
            .iter()
            .filter_map(|policy| {
                let config = policy.target_tracking_configuration()?;
                let metric = config.predefined_metric_specification()?;
                Some(TrackingPolicy {
                    name: policy.policy_name()?.to_owned(),
                    metric: metric.predefined_metric_type()?.as_str().to_owned(),
                    resource_label: metric.resource_label().map(str::to_owned),
                    target_value: config.target_value()?,
                    disable_scale_in: config.disable_scale_in().unwrap_or(false),
                })
            })
            .collect())
    }

    /// The launch templates cutover created for `service`.
    pub async fn launch_templates(&self, service: &str) -> Result<Vec<LaunchTemplate>, Error> {
        let out = self
            .ec2
            .describe_launch_templates()
            .filters(
                ec2t::Filter::builder()
                    .name(format!("tag:{TAG_SERVICE}"))
                    .values(service)
                    .build(),
            )
            .send()
            .await
            .map_err(aws_error("DescribeLaunchTemplates"))?;
        Ok(out
            .launch_templates()
            .iter()
            .filter_map(|template| {
                let release = template
                    .tags()
                    .iter()
                    .find(|t| t.key() == Some(TAG_RELEASE))
                    .and_then(|t| t.value())
                    .and_then(|r| crate::names::ReleaseId::parse(r).ok());
                Some(LaunchTemplate {
                    id: template.launch_template_id()?.to_owned(),
                    name: template.launch_template_name()?.to_owned(),
                    release,
                    created_at: template.create_time().map(|t| t.secs().max(0) as u64),
                })
            })
            .collect())
    }

    pub(super) async fn group_step(&self, step: &Step) -> Result<(), Error> {
        let autoscaling = &self.autoscaling;
        match step {
            Step::CreateLaunchTemplate {
                name,
                source,
                ami,
                tags,
            } => self.copy_launch_template(name, source, ami, tags).await,
            Step::CreateGroup { .. } => self.create_group(step).await,
            Step::AttachGroup {
                group,
                target_group,
            } => autoscaling
                .attach_load_balancer_target_groups()
                .auto_scaling_group_name(group)
                .target_group_arns(target_group)
                .send()
                .await
                .map(drop)
                .map_err(aws_error("AttachLoadBalancerTargetGroups")),
            Step::DetachGroup {
                group,
                target_group,
            } => autoscaling
                .detach_load_balancer_target_groups()
                .auto_scaling_group_name(group)
                .target_group_arns(target_group)
                .send()
                .await
                .map(drop)
                .map_err(aws_error("DetachLoadBalancerTargetGroups")),
            Step::TagGroup { group, tags } => autoscaling
                .create_or_update_tags()
                .set_tags(Some(group_tags(group, tags)))
                .send()
                .await
                .map(drop)
                .map_err(aws_error("CreateOrUpdateTags")),
            Step::UntagGroup { group, keys } => autoscaling
                .delete_tags()
                .set_tags(Some(
                    keys.iter().map(|key| group_tag(group, key, None)).collect(),
                ))
                .send()
                .await
                .map(drop)
                .map_err(aws_error("DeleteTags")),
            Step::HoldGroup { group } => autoscaling
                .suspend_processes()
                .auto_scaling_group_name(group)
                .set_scaling_processes(Some(held()))
                .send()
                .await
                .map(drop)
                .map_err(aws_error("SuspendProcesses")),
            Step::ResumeGroup { group } => autoscaling
                .resume_processes()
                .auto_scaling_group_name(group)
                .set_scaling_processes(Some(held()))
                .send()
                .await
                .map(drop)
                .map_err(aws_error("ResumeProcesses")),
            Step::PutTrackingPolicy { group, policy } => self.put_policy(group, policy).await,
            Step::DeleteGroup { group } => self.delete_group(group).await,
            Step::DeleteLaunchTemplate { name } => self.delete_template(name).await,
            other => Err(Error::Internal(format!(
                "not a group step: {}",
                other.describe()
            ))),
        }
    }

    async fn create_group(&self, step: &Step) -> Result<(), Error> {
        let Step::CreateGroup {
            name,
            tags,
            launch_template,
            subnets,
            min,
            max,
            desired,
        } = step
        else {
            return Err(Error::Internal("not a group's creation".into()));
        };
        let autoscaling = &self.autoscaling;
        let sent = autoscaling
            .create_auto_scaling_group()
            .auto_scaling_group_name(name)
            .launch_template(
                ast::LaunchTemplateSpecification::builder()
                    .launch_template_name(launch_template)
                    .version("$Default")
                    .build(),
            )
            .min_size(*min as i32)
            .max_size(*max as i32)
            .desired_capacity(*desired as i32)
            .vpc_zone_identifier(subnets.join(","))
            .set_tags(Some(group_tags(name, tags)))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(()),
            // A duplicate's create landed first, or a group of that name is not ours.
            Err(err) if err.code() == Some("AlreadyExists") => {
                self.check_group_is(name, tags).await
            }
            Err(err) => Err(aws_error("CreateAutoScalingGroup")(err)),
        }
    }

    async fn put_policy(&self, group: &str, policy: &TrackingPolicy) -> Result<(), Error> {
        let autoscaling = &self.autoscaling;
        let metric = ast::PredefinedMetricSpecification::builder()
            .predefined_metric_type(ast::MetricType::from(policy.metric.as_str()))
            .set_resource_label(policy.resource_label.clone())
            .build();
        autoscaling
            .put_scaling_policy()
            .auto_scaling_group_name(group)
            .policy_name(&policy.name)
            .policy_type("TargetTrackingScaling")
            .target_tracking_configuration(
                ast::TargetTrackingConfiguration::builder()
                    .predefined_metric_specification(metric)
                    .target_value(policy.target_value)
                    .disable_scale_in(policy.disable_scale_in)
                    .build(),
            )
            .send()
            .await
            .map(drop)
            .map_err(aws_error("PutScalingPolicy"))
    }

    async fn delete_group(&self, group: &str) -> Result<(), Error> {
        let autoscaling = &self.autoscaling;
        let sent = autoscaling
            .delete_auto_scaling_group()
            .auto_scaling_group_name(group)
            .force_delete(true)
            .send()
            .await;
        match sent {
            Ok(_) => Ok(()),
            // Gone already, or a deletion or scaling activity under way (with ForceDelete the API
            // reference says a group with activities in progress is deleted; this covers a second
            // delete while the first runs). A group still listed later is planned again.
            Err(err)
                if err.code() == Some("ScalingActivityInProgress")
                    || err.message().is_some_and(|m| m.contains("not found")) =>
            {
                Ok(())
            }
            Err(err) => Err(aws_error("DeleteAutoScalingGroup")(err)),
        }
    }

    async fn delete_template(&self, name: &str) -> Result<(), Error> {
        let sent = self
            .ec2
            .delete_launch_template()
            .launch_template_name(name)
            .send()
            .await;
        match sent {
            Ok(_) => Ok(()),
            Err(err)
                if err
                    .code()
                    .is_some_and(|c| c.starts_with("InvalidLaunchTemplateName.NotFound")) =>
            {
                Ok(())
            }
            Err(err) => Err(aws_error("DeleteLaunchTemplate")(err)),
        }
    }

    /// A group named as this release's exists: it must carry this release's tags, else it is
    /// someone else's and the release is refused.
    async fn check_group_is(
        &self,
        name: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), Error> {
        let out = self
            .autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(name)
            .send()
            .await
            .map_err(aws_error("DescribeAutoScalingGroups"))?;
        let found: HashMap<&str, &str> = out
            .auto_scaling_groups()
            .iter()
            .flat_map(|g| g.tags())
            .filter_map(|t| Some((t.key()?, t.value().unwrap_or_default())))
            .collect();
        let ours = [TAG_SERVICE, TAG_RELEASE]
            .iter()
            .all(|key| found.get(key).copied() == tags.get(*key).map(String::as_str));
        if ours {
            return Ok(());
        }
        Err(Error::World(format!(
            "an Auto Scaling group named {name} exists and is not this release's ({TAG_SERVICE}={}, \
             {TAG_RELEASE}={}); cutover never changes a group it did not create: rename or delete \
             that group",
            found.get(TAG_SERVICE).unwrap_or(&"none"),
            found.get(TAG_RELEASE).unwrap_or(&"none"),
        )))
    }

    /// The team's template's default version, read now, written as a new template of cutover's
    /// own with the release's image (EC2 cannot copy a version into another template).
    async fn copy_launch_template(
        &self,
        name: &str,
        source: &str,
        ami: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), Error> {
        let read = self
            .ec2
            .describe_launch_template_versions()
            .versions("$Default");
        let read = if source.starts_with("lt-") {
            read.launch_template_id(source)
        } else {
            read.launch_template_name(source)
        };
        let out = read
            .send()
            .await
            .map_err(aws_error("DescribeLaunchTemplateVersions"))?;
        let data = out
            .launch_template_versions()
            .first()
            .and_then(|v| v.launch_template_data())
            .ok_or_else(|| {
                Error::World(format!(
                    "launch template {source} (LAUNCH_TEMPLATE) has no default version to copy"
                ))
            })?;
        let tagged = ec2t::TagSpecification::builder()
            .resource_type(ec2t::ResourceType::LaunchTemplate)
            .set_tags(Some(
                tags.iter()
                    .map(|(k, v)| ec2t::Tag::builder().key(k).value(v).build())
                    .collect(),
            ))
            .build();
        let sent = self
            .ec2
            .create_launch_template()
            .launch_template_name(name)
            .version_description(format!("cutover: {source} with {ami}"))
            .launch_template_data(super::template::request_data(data, source, ami)?)
            .tag_specifications(tagged)
            .send()
            .await;
        match sent {
            Ok(_) => Ok(()),
            // A duplicate's copy landed first: the same copy.
            Err(err) if err.code() == Some("InvalidLaunchTemplateName.AlreadyExistsException") => {
                Ok(())
            }
            Err(err) => Err(aws_error("CreateLaunchTemplate")(err)),
        }
    }
}

fn held() -> Vec<String> {
    HELD_PROCESSES.iter().map(|p| p.to_string()).collect()
}

fn group_tag(group: &str, key: &str, value: Option<&str>) -> ast::Tag {
    ast::Tag::builder()
        .resource_id(group)
        .resource_type("auto-scaling-group")
        .key(key)
        .set_value(value.map(str::to_owned))
        .propagate_at_launch(true)
        .build()
}

fn group_tags(group: &str, tags: &BTreeMap<String, String>) -> Vec<ast::Tag> {
    tags.iter()
        .map(|(k, v)| group_tag(group, k, Some(v)))
        .collect()
}

fn group_from_sdk(group: &ast::AutoScalingGroup) -> Option<Group> {
    let tags: HashMap<&str, &str> = group
        .tags()
        .iter()
        .filter_map(|t| Some((t.key()?, t.value().unwrap_or_default())))
        .collect();
    Some(Group {
        name: group.auto_scaling_group_name()?.to_owned(),
        service: tags.get(TAG_SERVICE)?.to_string(),
        release: tags
            .get(TAG_RELEASE)
            .and_then(|s| crate::names::ReleaseId::parse(s).ok()),
        stage: tags.get(TAG_STAGE).and_then(|s| Stage::parse(s)),
        retired_at: tags.get(TAG_RETIRED_AT).and_then(|s| s.parse().ok()),
        failed_at: tags.get(TAG_FAILED_AT).and_then(|s| s.parse().ok()),
        min: group.min_size().unwrap_or(0).max(0) as u32,
        max: group.max_size().unwrap_or(0).max(0) as u32,
        desired: group.desired_capacity().unwrap_or(0).max(0) as u32,
        members: group
            .instances()
            .iter()
            .filter_map(|i| {
                Some(Member {
                    id: i.instance_id()?.to_owned(),
                    in_service: i.lifecycle_state() == Some(&ast::LifecycleState::InService),
                })
            })
            .collect(),
        target_groups: group.target_group_arns().to_vec(),
        suspended: group
            .suspended_processes()
            .iter()
            .filter_map(|p| p.process_name().map(str::to_owned))
            .collect(),
        launch_template: group
            .launch_template()
            .and_then(|t| t.launch_template_name())
            .map(str::to_owned),
        policies: Vec::new(),
        deleting: group.status().is_some_and(|s| s.starts_with("Delete")),
    })
}
