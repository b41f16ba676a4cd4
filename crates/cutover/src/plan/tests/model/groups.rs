//! The model with `FLEET=asg`: each release's fleet is an Auto Scaling group, and the model's
//! AWS applies the group calls as Auto Scaling does (a group launches its instances itself,
//! registers them in its attached target groups, now and as it scales out, and deregisters them
//! when detached). The same invariants hold, with "its fleet's size" the group's maximum, and
//! after the sweeps nothing of a group but the one product forwards to is left, nor a template
//! without its group.

use super::*;

#[derive(Debug, Default)]
pub(super) struct Asg {
    pub(super) on: bool,
    pub(super) groups: Vec<Group>,
    pub(super) templates: Vec<LaunchTemplate>,
}

impl Model {
    /// The settings of the model's service in its mode.
    pub(super) fn fleet_settings(&self) -> ServiceSettings {
        if !self.asg.on {
            return settings(COUNT);
        }
        ServiceSettings::parse(
            "API",
            &format!(
                r#"{{"FLEET":"asg","LAUNCH_TEMPLATE":"api-web","AMI":"ami-1","SUBNET":["subnet-a"],
                    "COUNT":{COUNT},"DNS_ZONE":"Z1","BAKE_S":600,"HEALTH_TIMEOUT_S":300}}"#
            ),
        )
        .expect("the model's asg settings")
    }

    /// The group of the fleet that serves when the model starts.
    pub(super) fn first_group(&mut self, release: &str, slot: Slot) {
        if !self.asg.on {
            return;
        }
        let arn = self.alb.slot(slot).arn.clone();
        let members: Vec<String> = self
            .instances
            .iter_mut()
            .filter(|i| i.release.as_ref().is_some_and(|r| r.as_str() == release))
            .map(|i| {
                i.index = None;
                i.id.clone()
            })
            .collect();
        let mut group = new_group(
            group_name(&service(), &super::release(release)),
            release,
            Stage::Product,
            COUNT,
        );
        group.members = members.iter().map(|id| member(id)).collect();
        group.target_groups = vec![arn];
        self.asg.templates.push(LaunchTemplate {
            id: "lt-first".into(),
            name: group.name.clone(),
            release: group.release.clone(),
            created_at: Some(self.now),
        });
        self.asg.groups.push(group);
    }

    /// What a function reads of the groups: members Auto Scaling still counts, `InService` once
    /// running.
    pub(super) fn seen_groups(&self) -> (Vec<Group>, Vec<LaunchTemplate>) {
        let groups = self
            .asg
            .groups
            .iter()
            .map(|g| {
                let mut seen = g.clone();
                seen.members = g
                    .members
                    .iter()
                    .filter_map(|m| {
                        let i = self.instances.iter().find(|i| i.id == m.id)?;
                        (!i.state.is_dead()).then(|| Member {
                            id: m.id.clone(),
                            in_service: i.state == InstanceState::Running,
                        })
                    })
                    .collect();
                seen
            })
            .collect();
        (groups, self.asg.templates.clone())
    }

    /// A cleanup's plan with its leftovers, as `run::converge`'s cleanup adds them.
    pub(super) fn with_leftovers(
        &self,
        planned: Planned,
        input: &CleanupInput,
        groups: &[Group],
        templates: &[LaunchTemplate],
    ) -> Planned {
        if !self.asg.on {
            return planned;
        }
        let mut plan = planned?;
        plan.steps.extend(leftovers(input, groups, templates));
        Ok(plan)
    }

    /// A plan decided on instances, carried out on groups.
    pub(super) fn carried_on_groups(&self, planned: Planned, groups: &[Group]) -> Planned {
        if !self.asg.on {
            return planned;
        }
        through_groups(planned, groups, &self.instances)
    }

    /// A group call landing as Auto Scaling applies it, with the invariants it can break.
    pub(super) fn apply_group(&mut self, step: &Step) -> Result<(), String> {
        match step {
            Step::CreateLaunchTemplate { name, tags, .. } => {
                if !self.asg.templates.iter().any(|t| t.name == *name) {
                    self.asg.templates.push(LaunchTemplate {
                        id: format!("lt-{}", self.asg.templates.len()),
                        name: name.clone(),
                        release: tags.get(TAG_RELEASE).map(|r| super::release(r)),
                        created_at: Some(self.now),
                    });
                }
                Ok(())
            }
            Step::CreateGroup { .. } => self.create_group(step),
            Step::AttachGroup {
                group,
                target_group,
            } => self.attach(group, target_group),
            Step::DetachGroup {
                group,
                target_group,
            } => self.detach(group, target_group),
            Step::DeleteGroup { group } => self.delete_group(group),
            // EC2 deletes a template a group still names: the group can launch no more.
            Step::DeleteLaunchTemplate { name } => {
                self.asg.templates.retain(|t| t.name != *name);
                Ok(())
            }
            other => {
                let group = self
                    .asg
                    .groups
                    .iter_mut()
                    .find(|g| Some(g.name.as_str()) == group_of(other));
                if let Some(group) = group {
                    retag_or_hold(group, other);
                }
                Ok(())
            }
        }
    }

    /// CreateAutoScalingGroup: the group, and the instances it launches at once; it fails when
    /// its template does not exist.
    fn create_group(&mut self, step: &Step) -> Result<(), String> {
        let Step::CreateGroup {
            name,
            launch_template,
            max,
            desired,
            tags,
            ..
        } = step
        else {
            return Ok(());
        };
        if self.asg.groups.iter().any(|g| g.name == *name) {
            return Ok(());
        }
        if !self
            .asg
            .templates
            .iter()
            .any(|t| t.name == *launch_template)
        {
            self.log
                .push(format!("  (fails: template {launch_template} is gone)"));
            return Ok(());
        }
        let stage = Stage::parse(&tags[TAG_STAGE]).expect("a stage");
        let mut group = new_group(name.clone(), &tags[TAG_RELEASE], stage, *desired);
        group.max = *max;
        self.asg.groups.push(group);
        for _ in 0..*desired {
            self.launch_member(name)?;
        }
        Ok(())
    }

    /// Attaching registers the group's running instances, never into a slot product forwards to.
    fn attach(&mut self, group: &str, target_group: &str) -> Result<(), String> {
        let members = self.live_members(group);
        let slot = self.not_product(target_group, "attached", &members, "to")?;
        let Some(g) = self.asg.groups.iter_mut().find(|g| g.name == group) else {
            return Ok(());
        };
        if !g.target_groups.iter().any(|t| t == target_group) {
            g.target_groups.push(target_group.to_owned());
        }
        let running: Vec<String> = members.into_iter().filter(|id| !self.is_dead(id)).collect();
        let slot = self.group_mut(slot);
        slot.targets.retain(|t| !running.contains(&t.id));
        slot.targets
            .extend(running.iter().map(|id| target(id, Health::Initial)));
        Ok(())
    }

    /// Detaching drains the group's targets, never from a slot product forwards to.
    fn detach(&mut self, group: &str, target_group: &str) -> Result<(), String> {
        let members = self.live_members(group);
        let slot = self.not_product(target_group, "detached", &members, "from")?;
        if let Some(g) = self.asg.groups.iter_mut().find(|g| g.name == group) {
            g.target_groups.retain(|t| t != target_group);
        }
        for t in self.group_mut(slot).targets.iter_mut() {
            if members.contains(&t.id) {
                t.health = Health::Draining;
            }
        }
        Ok(())
    }

    /// Deleting (`ForceDelete`) terminates the group's instances, never one product forwards to.
    fn delete_group(&mut self, group: &str) -> Result<(), String> {
        let members = self.live_members(group);
        for slot in self.product_slots() {
            if let Some(id) = members.iter().find(|id| self.alb.slot(slot).has(id)) {
                return Err(format!(
                    "deleted group {group} with {id}, registered in a slot product forwards to"
                ));
            }
        }
        for i in self
            .instances
            .iter_mut()
            .filter(|i| members.contains(&i.id))
        {
            i.state = InstanceState::Terminated;
        }
        self.asg.groups.retain(|g| g.name != group);
        Ok(())
    }

    /// Load grows: the group that serves product scales out by one (unless held, or at its
    /// maximum), and registers the new instance itself once it runs.
    pub(super) fn scale_out(&mut self) -> Result<(), String> {
        let product: Vec<String> = self
            .product_slots()
            .into_iter()
            .map(|s| self.alb.slot(s).arn.clone())
            .collect();
        let Some(group) = self.asg.groups.iter().find(|g| {
            !g.is_held() && g.desired < g.max && g.target_groups.iter().any(|t| product.contains(t))
        }) else {
            return Ok(());
        };
        let name = group.name.clone();
        self.log.push(format!("  {name} scales out"));
        if let Some(g) = self.asg.groups.iter_mut().find(|g| g.name == name) {
            g.desired += 1;
        }
        self.launch_member(&name)
    }

    /// A group's instance, tagged as the group is now; registered in its target groups as it
    /// starts (Auto Scaling registers an instance once it is `InService`).
    fn launch_member(&mut self, group: &str) -> Result<(), String> {
        let g = self
            .asg
            .groups
            .iter()
            .find(|g| g.name == group)
            .expect("the group");
        let has_template = self
            .asg
            .templates
            .iter()
            .any(|t| Some(&t.name) == g.launch_template.as_ref());
        if !has_template {
            let product = self
                .product_slots()
                .iter()
                .any(|s| g.target_groups.contains(&self.alb.slot(*s).arn));
            if product {
                return Err(format!(
                    "group {group} serves product and cannot launch: its template was deleted"
                ));
            }
            self.log
                .push(format!("  ({group} cannot launch: its template is gone)"));
            return Ok(());
        }
        let release = g.release.as_ref().expect("a release").to_string();
        let id = format!("i-{release}-m{}", g.members.len());
        let mut launched = instance(
            &id,
            &release,
            0,
            g.stage.unwrap_or(Stage::PreProduct),
            InstanceState::Pending,
        );
        launched.index = None;
        launched.retired_at = g.retired_at;
        launched.failed_at = g.failed_at;
        let number: u64 = release[1..].parse().expect("r<n>");
        launched.launched_at = Some(self.now + number);
        let (max, attached) = (g.max, g.target_groups.clone());
        self.instances.push(launched);
        let g = self
            .asg
            .groups
            .iter_mut()
            .find(|g| g.name == group)
            .expect("the group");
        g.members.push(member(&id));
        for arn in attached {
            let slot = self.slot_of(&arn);
            self.group_mut(slot)
                .targets
                .push(target(&id, Health::Initial));
        }
        let live = self.live_members(group).len();
        if live > max as usize {
            return Err(format!(
                "group {group} runs {live} instances, more than its maximum of {max}"
            ));
        }
        Ok(())
    }

    fn live_members(&self, group: &str) -> Vec<String> {
        self.asg
            .groups
            .iter()
            .filter(|g| g.name == group)
            .flat_map(|g| g.members.iter())
            .filter(|m| !self.is_dead(&m.id))
            .map(|m| m.id.clone())
            .collect()
    }

    /// After the sweeps: no group but the one product forwards to, no template without its group.
    pub(super) fn check_no_group_left(&self) -> Result<(), String> {
        let product: Vec<&str> = self
            .product_slots()
            .into_iter()
            .map(|s| self.alb.slot(s).arn.as_str())
            .collect();
        if let Some(left) = self.asg.groups.iter().find(|g| {
            !g.target_groups
                .iter()
                .any(|t| product.contains(&t.as_str()))
        }) {
            return Err(format!(
                "group {} ({:?}) is left after the sweep",
                left.name, left.stage
            ));
        }
        if let Some(g) = self.asg.groups.iter().find(|g| {
            !self
                .asg
                .templates
                .iter()
                .any(|t| Some(&t.name) == g.launch_template.as_ref())
        }) {
            return Err(format!("group {} serves without its template", g.name));
        }
        match self
            .asg
            .templates
            .iter()
            .find(|t| !self.asg.groups.iter().any(|g| g.name == t.name))
        {
            Some(t) => Err(format!("template {} is left without its group", t.name)),
            None => Ok(()),
        }
    }
}

fn new_group(name: String, release: &str, stage: Stage, desired: u32) -> Group {
    Group {
        launch_template: Some(name.clone()),
        name,
        service: "api".into(),
        release: Some(super::release(release)),
        stage: Some(stage),
        retired_at: None,
        failed_at: None,
        min: COUNT,
        max: desired + 2,
        desired,
        members: Vec::new(),
        target_groups: Vec::new(),
        suspended: Vec::new(),
        policies: Vec::new(),
        deleting: false,
    }
}

fn member(id: &str) -> Member {
    Member {
        id: id.to_owned(),
        in_service: true,
    }
}

/// A group's tags, processes and policies as a step changes them.
fn retag_or_hold(g: &mut Group, step: &Step) {
    match step {
        Step::TagGroup { tags, .. } => {
            if let Some(stage) = tags.get(TAG_STAGE) {
                g.stage = Stage::parse(stage);
            }
            if let Some(at) = tags.get(TAG_RETIRED_AT) {
                g.retired_at = at.parse().ok();
            }
            if let Some(at) = tags.get(TAG_FAILED_AT) {
                g.failed_at = at.parse().ok();
            }
        }
        Step::UntagGroup { keys, .. } => {
            if keys.iter().any(|k| k == TAG_RETIRED_AT) {
                g.retired_at = None;
            }
            if keys.iter().any(|k| k == TAG_FAILED_AT) {
                g.failed_at = None;
            }
        }
        Step::HoldGroup { .. } => {
            g.suspended = HELD_PROCESSES.iter().map(|p| p.to_string()).collect()
        }
        Step::ResumeGroup { .. } => g.suspended.clear(),
        Step::PutTrackingPolicy { policy, .. }
            if !g.policies.iter().any(|p| p.name == policy.name) =>
        {
            g.policies.push(policy.clone());
        }
        _ => {}
    }
}

fn group_of(step: &Step) -> Option<&str> {
    match step {
        Step::TagGroup { group, .. }
        | Step::UntagGroup { group, .. }
        | Step::HoldGroup { group }
        | Step::ResumeGroup { group }
        | Step::PutTrackingPolicy { group, .. } => Some(group),
        _ => None,
    }
}
