//! `FLEET=asg`: a release's fleet is an Auto Scaling group of its own.
//!
//! provision creates the group (`provision_group`); the other planners are the same in both modes
//! and decide on instances, and `through_groups` carries their decisions out the way a group
//! needs: registering a group's instances attaches the group to the target group (it keeps the
//! instances it launches later registered), deregistering them detaches it, terminating all of
//! them deletes it, and a group's tags and processes follow its instances' stage (its tags
//! propagate to every instance it launches later; a retired fleet is held whole while it bakes;
//! a fleet that takes product gets the target-tracking policies of the one that served).

use std::collections::HashMap;

use super::*;

/// provision, `FLEET=asg`: the release's template and group, then a wait for every instance of
/// it to be `InService`, then records and output variables as for a fleet of instances.
pub(super) fn provision_group(input: &ProvisionInput, source: &str) -> Planned {
    let (service, release, settings) = (input.service, input.release, input.settings);
    let name = group_name(service, release);
    let group = input.groups.iter().find(|g| g.name == name);
    let live: Vec<&Instance> = of_release(input.instances, release)
        .into_iter()
        .filter(|i| !i.state.is_dead())
        .collect();
    let taken = group.is_some_and(|g| g.stage == Some(Stage::Abandoned) || g.deleting)
        || live.iter().any(|i| i.stage == Some(Stage::Abandoned));
    if taken {
        return refuse(fleet_taken(release, service, settings.retry_window_s));
    }
    if let Some(stage) = group
        .and_then(|g| g.stage)
        .filter(|s| *s != Stage::PreProduct)
    {
        return Ok(Plan::done(format!(
            "release {release} of {service} is already past provisioning (its group {name} is {stage}); nothing to do"
        )));
    }
    let Some(group) = group else {
        let mut steps = Vec::new();
        if !input.templates.iter().any(|t| t.name == name) {
            steps.push(Step::CreateLaunchTemplate {
                name: name.clone(),
                source: source.to_owned(),
                ami: input.ami.unwrap_or(&settings.ami).to_owned(),
                tags: fleet_tags(service, release, settings),
            });
        }
        steps.push(create_group(input, &name));
        return Ok(Plan::wait(Phase::Running).with_steps(steps));
    };
    let in_service = group.in_service();
    if in_service < group.desired as usize {
        let waited = Progress::waited_for(input.progress, Phase::Running, input.now);
        if waited > RUNNING_TIMEOUT_S {
            return refuse(format!(
                "group {name} of release {release} has {in_service} of {} instances InService after {waited}s; see its scaling activities",
                group.desired
            ));
        }
        return Ok(Plan::wait(Phase::Running));
    }
    let fleet: Vec<&Instance> = live
        .into_iter()
        .filter(|i| group.members.iter().any(|m| m.id == i.id && m.in_service))
        .collect();
    if fleet.len() < in_service {
        // Auto Scaling lists an instance before EC2's reads do.
        return Ok(Plan::wait(Phase::Running));
    }
    let plan = finish(input, &fleet, Vec::new());
    let mut outputs = plan.outputs.clone();
    outputs.insert("group".to_owned(), name);
    Ok(plan.with_outputs(outputs))
}

/// The release's group: as large as the cutover group that serves product now (it may have
/// scaled out), and at least `COUNT`; its tags propagate to every instance it launches.
fn create_group(input: &ProvisionInput, name: &str) -> Step {
    let serving = input
        .groups
        .iter()
        .find(|g| g.stage == Some(Stage::Product) && !g.deleting);
    let count = input.settings.count;
    let desired = serving.map_or(count, |g| (g.in_service() as u32).max(count));
    let max = serving.map_or(desired, |g| g.max.max(desired));
    Step::CreateGroup {
        name: name.to_owned(),
        launch_template: name.to_owned(),
        subnets: input.settings.subnets.clone(),
        min: count,
        max,
        desired,
        tags: fleet_tags(input.service, input.release, input.settings),
    }
}

fn fleet_tags(
    service: &ServiceName,
    release: &ReleaseId,
    settings: &ServiceSettings,
) -> BTreeMap<String, String> {
    let mut tags = settings.tags.clone();
    tags.insert(TAG_SERVICE.into(), service.to_string());
    tags.insert(TAG_STAGE.into(), Stage::PreProduct.as_str().into());
    tags.insert(TAG_RELEASE.into(), release.to_string());
    tags.insert(TAG_NAME.into(), format!("{service}-{}", release.short()));
    tags
}

/// A plan decided on instances, carried out on the groups that own them.
pub fn through_groups(planned: Planned, groups: &[Group], instances: &[Instance]) -> Planned {
    let mut plan = planned?;
    let mut carried = Carried {
        groups,
        steps: Vec::new(),
    };
    for step in std::mem::take(&mut plan.steps) {
        match step {
            Step::RegisterTargets {
                target_group,
                instance_ids,
            } => carried.register(target_group, &instance_ids),
            Step::DeregisterTargets {
                target_group,
                instance_ids,
            } => {
                refuse_foreign_targets(&target_group, &instance_ids, groups, instances)?;
                carried.deregister(target_group, &instance_ids);
            }
            Step::Terminate { instance_ids } => carried.terminate(&instance_ids),
            other => carried.steps.push(other),
        }
    }
    let mut steps = carried.steps;
    steps.extend(follow_stages(&steps, groups, instances));
    Ok(plan.with_steps(steps))
}

/// The steps of a plan as they are carried out on groups.
struct Carried<'a> {
    groups: &'a [Group],
    steps: Vec<Step>,
}

impl<'a> Carried<'a> {
    fn push_once(&mut self, step: Step) {
        if !self.steps.contains(&step) {
            self.steps.push(step);
        }
    }

    /// The instances that belong to a cutover group, by group, and those that do not.
    fn split(&self, instance_ids: &[String]) -> (Vec<&'a Group>, Vec<String>) {
        let mut by_group: Vec<&Group> = Vec::new();
        let mut loose = Vec::new();
        for id in instance_ids {
            match self.groups.iter().find(|g| !g.deleting && g.has(id)) {
                Some(group) if !by_group.iter().any(|g| g.name == group.name) => {
                    by_group.push(group)
                }
                Some(_) => {}
                None => loose.push(id.clone()),
            }
        }
        (by_group, loose)
    }

    /// A group's instances are registered by attaching it (Auto Scaling then registers what it
    /// launches later too); one attached already is still registering them.
    fn register(&mut self, target_group: String, instance_ids: &[String]) {
        let (by_group, loose) = self.split(instance_ids);
        for group in by_group {
            if !group.target_groups.contains(&target_group) {
                self.push_once(Step::AttachGroup {
                    group: group.name.clone(),
                    target_group: target_group.clone(),
                });
            }
        }
        if !loose.is_empty() {
            self.steps.push(Step::RegisterTargets {
                target_group,
                instance_ids: loose,
            });
        }
    }

    /// A group's instances leave a target group by detaching the group.
    fn deregister(&mut self, target_group: String, instance_ids: &[String]) {
        let (by_group, mut loose) = self.split(instance_ids);
        for group in by_group {
            if group.target_groups.contains(&target_group) {
                self.push_once(Step::DetachGroup {
                    group: group.name.clone(),
                    target_group: target_group.clone(),
                });
            } else {
                loose.extend(ids_in(instance_ids, group));
            }
        }
        if !loose.is_empty() {
            self.steps.push(Step::DeregisterTargets {
                target_group,
                instance_ids: loose,
            });
        }
    }

    /// All of a group's instances go with the group, and its template with it, never before (a
    /// template is deleted only where no group can still launch from it); part of a group is
    /// terminated as instances.
    fn terminate(&mut self, instance_ids: &[String]) {
        let (by_group, mut loose) = self.split(instance_ids);
        for group in by_group {
            if !group.members.iter().all(|m| instance_ids.contains(&m.id)) {
                loose.extend(ids_in(instance_ids, group));
                continue;
            }
            self.push_once(Step::DeleteGroup {
                group: group.name.clone(),
            });
            if group.launch_template.as_ref() == Some(&group.name) {
                self.push_once(Step::DeleteLaunchTemplate {
                    name: group.name.clone(),
                });
            }
        }
        if !loose.is_empty() {
            self.steps.push(Step::Terminate {
                instance_ids: loose,
            });
        }
    }
}

/// Targets cutover did not launch in a slot it must empty: refused by name, never deregistered.
fn refuse_foreign_targets(
    target_group: &str,
    instance_ids: &[String],
    groups: &[Group],
    instances: &[Instance],
) -> Result<(), Refusal> {
    let foreign: Vec<&str> = instance_ids
        .iter()
        .filter(|id| !groups.iter().any(|g| g.has(id)) && !instances.iter().any(|i| &i.id == *id))
        .map(String::as_str)
        .collect();
    if foreign.is_empty() {
        return Ok(());
    }
    refuse(format!(
        "{} in {} {} not cutover's (a group of the team's still attached to it?): cutover leaves \
         them alone; detach that group from the target group (see the README, FLEET=asg) and retry",
        foreign.join(", "),
        short_arn(target_group),
        if foreign.len() == 1 { "is" } else { "are" },
    ))
}

/// Each group's tags and processes after its instances' stage, as the plan leaves them.
fn follow_stages(steps: &[Step], groups: &[Group], instances: &[Instance]) -> Vec<Step> {
    let mut tags: HashMap<&str, BTreeMap<String, String>> = instances
        .iter()
        .map(|i| {
            (
                i.id.as_str(),
                stage_tags_of(i.stage, i.retired_at, i.failed_at),
            )
        })
        .collect();
    for step in steps {
        match step {
            Step::TagInstances {
                instance_ids,
                tags: new,
            } => {
                for id in instance_ids {
                    let kept = tags.entry(id.as_str()).or_default();
                    kept.extend(
                        new.iter()
                            .filter(|(k, _)| FOLLOWED.contains(&k.as_str()))
                            .map(|(k, v)| (k.clone(), v.clone())),
                    );
                }
            }
            Step::UntagInstances { instance_ids, keys } => {
                for id in instance_ids {
                    if let Some(kept) = tags.get_mut(id.as_str()) {
                        kept.retain(|k, _| !keys.contains(k));
                    }
                }
            }
            _ => {}
        }
    }
    let mut follow = Vec::new();
    for group in groups.iter().filter(|g| !g.deleting) {
        let members: Vec<&BTreeMap<String, String>> = group
            .members
            .iter()
            .filter_map(|m| tags.get(m.id.as_str()))
            .collect();
        let Some(first) = members.first() else {
            continue;
        };
        if members.iter().any(|m| m != first) {
            continue;
        }
        let current = stage_tags_of(group.stage, group.retired_at, group.failed_at);
        let set: BTreeMap<String, String> = first
            .iter()
            .filter(|(k, v)| current.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !set.is_empty() {
            follow.push(Step::TagGroup {
                group: group.name.clone(),
                tags: set,
            });
        }
        let unset: Vec<String> = current
            .keys()
            .filter(|k| !first.contains_key(*k))
            .cloned()
            .collect();
        if !unset.is_empty() {
            follow.push(Step::UntagGroup {
                group: group.name.clone(),
                keys: unset,
            });
        }
        let stage = first.get(TAG_STAGE).and_then(|s| Stage::parse(s));
        follow.extend(processes(group, stage, groups));
    }
    follow
}

/// The tags a group's stage is written in.
const FOLLOWED: [&str; 3] = [TAG_STAGE, TAG_RETIRED_AT, TAG_FAILED_AT];

/// The tags a stage is written in: `cutover:stage`, and the times that go with it.
fn stage_tags_of(
    stage: Option<Stage>,
    retired_at: Option<u64>,
    failed_at: Option<u64>,
) -> BTreeMap<String, String> {
    [
        (TAG_STAGE, stage.map(|s| s.as_str().to_owned())),
        (TAG_RETIRED_AT, retired_at.map(|at| at.to_string())),
        (TAG_FAILED_AT, failed_at.map(|at| at.to_string())),
    ]
    .into_iter()
    .filter_map(|(key, value)| Some((key.to_owned(), value?)))
    .collect()
}

/// A group that serves scales (with the policies of the group that served before it); one that
/// is kept for a rollback, or on its way out, is held at its size.
fn processes(group: &Group, stage: Option<Stage>, groups: &[Group]) -> Vec<Step> {
    let name = group.name.clone();
    match stage {
        Some(Stage::Product) => {
            let mut steps = Vec::new();
            if group
                .suspended
                .iter()
                .any(|p| HELD_PROCESSES.contains(&p.as_str()))
            {
                steps.push(Step::ResumeGroup {
                    group: name.clone(),
                });
            }
            let before = groups
                .iter()
                .filter(|g| g.name != group.name && !g.policies.is_empty())
                .max_by_key(|g| (g.stage == Some(Stage::Product), g.retired_at));
            if let (Some(before), Some(target_group)) = (before, group.target_groups.first()) {
                steps.extend(
                    before
                        .policies
                        .iter()
                        .filter(|p| !group.policies.iter().any(|mine| mine.name == p.name))
                        .map(|p| Step::PutTrackingPolicy {
                            group: name.clone(),
                            policy: p.on_target_group(target_group),
                        }),
                );
            }
            steps
        }
        Some(Stage::Retired | Stage::Abandoned) if !group.is_held() => {
            vec![Step::HoldGroup { group: name }]
        }
        _ => Vec::new(),
    }
}

fn ids_in(instance_ids: &[String], group: &Group) -> Vec<String> {
    instance_ids
        .iter()
        .filter(|id| group.has(id))
        .cloned()
        .collect()
}

/// What a cleanup takes besides instances: a group left with none (its release failed before
/// it launched any, or they were terminated), and a template whose release made no group (it
/// failed between the two). A group is deleted `takeover_s` after it was abandoned, so no switch
/// still landing is raced; a template only once its release's execution is known to have ended
/// (or a week on, for a release CodePipeline does not know): a provision that Lambda retried
/// after its timeout may still be creating the group from it.
pub fn leftovers(
    input: &CleanupInput,
    groups: &[Group],
    templates: &[LaunchTemplate],
) -> Vec<Step> {
    let settled = |at: Option<u64>| at.unwrap_or(0).saturating_add(input.takeover_s) <= input.now;
    let over = |release: Option<&ReleaseId>| {
        let failed = matches!(&input.scope, CleanupScope::FailedRelease(r) if release == Some(r));
        failed
            || release
                .and_then(|r| input.executions.get(r.as_str()))
                .is_some_and(Execution::is_known_to_have_ended)
    };
    let mut steps = Vec::new();
    for group in groups
        .iter()
        .filter(|g| !g.deleting && g.members.is_empty())
    {
        match group.stage {
            Some(Stage::PreProduct) if over(group.release.as_ref()) => steps.push(Step::TagGroup {
                group: group.name.clone(),
                tags: BTreeMap::from([
                    (TAG_STAGE.to_owned(), Stage::Abandoned.as_str().to_owned()),
                    (TAG_RETIRED_AT.to_owned(), input.now.to_string()),
                ]),
            }),
            Some(Stage::Abandoned) if settled(group.retired_at) => {
                steps.push(Step::DeleteGroup {
                    group: group.name.clone(),
                });
            }
            Some(Stage::Retired)
                if settled(
                    group
                        .retired_at
                        .map(|at| at.saturating_add(input.settings.bake_s)),
                ) =>
            {
                steps.push(Step::DeleteGroup {
                    group: group.name.clone(),
                });
            }
            _ => {}
        }
    }
    let week_old =
        |at: Option<u64>| at.unwrap_or(0).saturating_add(PRE_PRODUCT_MAX_AGE_S) <= input.now;
    steps.extend(
        templates
            .iter()
            .filter(|t| !groups.iter().any(|g| g.name == t.name))
            .filter(|t| over(t.release.as_ref()) || week_old(t.created_at))
            .map(|t| Step::DeleteLaunchTemplate {
                name: t.name.clone(),
            }),
    );
    steps
}
