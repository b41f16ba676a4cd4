//! The model's AWS: each call landing as AWS applies it, and the invariants a call can break.

use super::pipeline::JobAction;
use super::*;

impl Model {
    /// One call landing, as AWS applies it, with the invariants a call can break.
    pub(super) fn apply(&mut self, by: &Kind, step: &Step) -> Result<(), String> {
        self.log.push(format!("  {}", step.describe()));
        match step {
            Step::SetForward { route, to, .. } if *route == self.alb.product.arn => {
                self.move_product(by, to)
            }
            Step::Launch {
                client_token,
                tags,
                dead,
                ..
            } => self.launch(client_token, tags, dead),
            Step::RegisterTargets {
                target_group,
                instance_ids,
            } => {
                let slot = self.not_product(target_group, "registered", instance_ids, "in")?;
                let live: Vec<String> = self
                    .instances
                    .iter()
                    .filter(|i| instance_ids.contains(&i.id) && !i.state.is_dead())
                    .map(|i| i.id.clone())
                    .collect();
                let group = self.group_mut(slot);
                group.targets.retain(|t| !live.contains(&t.id));
                group
                    .targets
                    .extend(live.iter().map(|id| target(id, Health::Initial)));
                Ok(())
            }
            Step::DeregisterTargets {
                target_group,
                instance_ids,
            } => {
                let slot = self.not_product(target_group, "deregistered", instance_ids, "from")?;
                for t in self.group_mut(slot).targets.iter_mut() {
                    if instance_ids.contains(&t.id) {
                        t.health = Health::Draining;
                    }
                }
                Ok(())
            }
            Step::Terminate { instance_ids } => {
                for slot in self.product_slots() {
                    if let Some(id) = instance_ids.iter().find(|id| self.alb.slot(slot).has(id)) {
                        return Err(format!(
                            "terminated {id}, registered in a slot product forwards to"
                        ));
                    }
                }
                for i in self
                    .instances
                    .iter_mut()
                    .filter(|i| instance_ids.contains(&i.id))
                {
                    i.state = InstanceState::Terminated;
                }
                Ok(())
            }
            step if step.is_group_step() => self.apply_group(step),
            other => {
                apply_tags(&mut self.alb, &mut self.instances, other);
                Ok(())
            }
        }
    }

    /// Product moves only to non-empty, healthy slots, and a rollback never to the fleet it
    /// rolls back from; a release's first move records what served before it.
    fn move_product(&mut self, by: &Kind, to: &Forward) -> Result<(), String> {
        let slots: Vec<Slot> = to
            .targets
            .iter()
            .filter(|t| t.weight != Some(0))
            .map(|t| self.slot_of(&t.arn))
            .collect();
        // A slot that starts taking product must be whole and healthy; one that already takes
        // part may hold a target its group is still registering (a scale-out under load), never
        // a failing one, and must have a healthy one.
        let before = self.alb.product.forward.clone();
        for slot in &slots {
            let group = self.alb.slot(*slot);
            let (was, will) = (share(&before, &group.arn), share(to, &group.arn));
            let starts = was == 0 && will > 0;
            let grows_onto_failing = will > was
                && (!group.targets.iter().any(|t| t.health == Health::Healthy)
                    || group
                        .targets
                        .iter()
                        .any(|t| !matches!(t.health, Health::Healthy | Health::Initial)));
            if (starts && (group.targets.is_empty() || !group.unhealthy().is_empty()))
                || grows_onto_failing
            {
                return Err(format!(
                    "product moved to the {slot} slot, empty or unhealthy"
                ));
            }
        }
        if let (Kind::Rollback { .. }, Some(mark)) = (by, &self.alb.product.rolled_back) {
            let from = slot_of_release(&self.alb, &self.instances, &mark.release);
            if from.is_some_and(|from| slots.contains(&from)) {
                return Err(format!(
                    "a rollback sent product to release {}, the one rolled back from",
                    mark.release
                ));
            }
        }
        if let Kind::Job {
            action: JobAction::Switch(_),
            release,
            ..
        } = by
        {
            let before = self
                .product_slots()
                .first()
                .and_then(|s| release_in(&self.alb, &self.instances, *s));
            if let Some(before) = before.filter(|b| b != release) {
                self.served_before
                    .entry(release.to_string())
                    .or_insert(before.to_string());
            }
        }
        self.alb.product.forward = to.clone();
        Ok(())
    }

    /// The slot of `target_group`, which a registration or deregistration must not touch while
    /// product forwards to it.
    pub(super) fn not_product(
        &self,
        target_group: &str,
        what: &str,
        instance_ids: &[String],
        preposition: &str,
    ) -> Result<Slot, String> {
        let slot = self.slot_of(target_group);
        if self.product_slots().contains(&slot) {
            return Err(format!(
                "{what} {instance_ids:?} {preposition} a slot product forwards to"
            ));
        }
        Ok(slot)
    }

    /// RunInstances under a ClientToken, as the adapter sends it: a token bound to a live
    /// instance answers with that instance; one whose instance is dead (or read dead) is spent,
    /// and the token's next generation launches.
    fn launch(
        &mut self,
        client_token: &str,
        tags: &BTreeMap<String, String>,
        dead: &[String],
    ) -> Result<(), String> {
        let release = &tags[TAG_RELEASE];
        let index: u32 = tags[TAG_INDEX].parse().expect("an index tag");
        for generation in 0.. {
            let token = format!("{client_token}-g{generation}");
            match self.tokens.get(&token) {
                Some(id) if dead.contains(id) || self.is_dead(id) => continue,
                Some(_) => return Ok(()),
                None => {
                    let id = format!("i-{release}-{index}-g{generation}");
                    self.tokens.insert(token, id.clone());
                    let mut instance = instance(
                        &id,
                        release,
                        index,
                        Stage::PreProduct,
                        InstanceState::Pending,
                    );
                    // Releases launch in order; the offset keeps two launched in one model second
                    // in that order, as EC2's launch times would.
                    let number: u64 = release[1..].parse().expect("r<n>");
                    instance.launched_at = Some(self.now + number);
                    self.instances.push(instance);
                    break;
                }
            }
        }
        let running = self
            .instances
            .iter()
            .filter(|i| {
                !i.state.is_dead() && i.release.as_ref().is_some_and(|r| r.as_str() == release)
            })
            .count();
        if running > COUNT as usize {
            return Err(format!(
                "release {release} runs {running} instances, more than its fleet of {COUNT}"
            ));
        }
        Ok(())
    }

    pub(super) fn is_dead(&self, id: &str) -> bool {
        self.instances
            .iter()
            .any(|i| i.id == id && i.state.is_dead())
    }

    /// Time passes: launched instances run, registered targets pass their health checks,
    /// deregistered ones finish draining.
    pub(super) fn time_passes(&mut self) {
        for instance in &mut self.instances {
            if instance.state == InstanceState::Pending {
                instance.state = InstanceState::Running;
            }
        }
        for group in [&mut self.alb.blue, &mut self.alb.green] {
            group.targets.retain(|t| t.health != Health::Draining);
            for target in &mut group.targets {
                if target.health == Health::Initial {
                    target.health = Health::Healthy;
                }
            }
        }
    }
}

/// The share of traffic a forward sends to `arn`, in per mille.
fn share(forward: &Forward, arn: &str) -> u64 {
    let weight = |t: &WeightedTarget| match (forward.targets.len(), t.weight) {
        (1, None) => 1,
        (_, w) => w.unwrap_or(0).max(0) as u64,
    };
    let total: u64 = forward.targets.iter().map(weight).sum();
    let mine: u64 = forward
        .targets
        .iter()
        .filter(|t| t.arn == arn)
        .map(weight)
        .sum();
    (mine * 1000).checked_div(total).unwrap_or(0)
}

/// What a step changes of the routes' tags, the pre-product route and the instances' tags, as
/// AWS applies it (the rest of a step, the model applies itself).
pub(in crate::plan::tests) fn apply_tags(alb: &mut Alb, instances: &mut [Instance], step: &Step) {
    let mut each = |ids: &[String], change: &dyn Fn(&mut Instance)| {
        for instance in instances.iter_mut().filter(|i| ids.contains(&i.id)) {
            change(instance);
        }
    };
    match step {
        Step::SetForward { route, to, .. } if *route == alb.product.arn => {
            alb.product.forward = to.clone()
        }
        Step::SetForward { to, .. } => alb.pre_product.forward = to.clone(),
        Step::TagRoute { tags, .. } => {
            if let Some(previous) = tags.get(TAG_PREVIOUS) {
                alb.product.previous = Some(previous.clone());
            }
            if let Some(release) = tags.get(TAG_ROLLED_BACK) {
                let by = tags.get(TAG_ROLLED_BACK_BY).map(String::as_str);
                alb.product.rolled_back = Some(RollbackMark::parse(release, by));
            }
            if let Some(lock) = tags.get(TAG_LOCK) {
                alb.product.lock = Lock::parse(lock);
            }
        }
        Step::UntagRoute { keys, .. } => {
            for key in keys {
                match key.as_str() {
                    TAG_ROLLED_BACK => alb.product.rolled_back = None,
                    TAG_LOCK => alb.product.lock = None,
                    TAG_PREVIOUS => alb.product.previous = None,
                    _ => {}
                }
            }
        }
        Step::ReleaseLock { release, .. }
            if alb
                .product
                .lock
                .as_ref()
                .is_some_and(|l| l.release == *release) =>
        {
            alb.product.lock = None
        }
        Step::TagInstances { instance_ids, tags } => each(instance_ids, &|i| {
            if let Some(stage) = tags.get(TAG_STAGE) {
                i.stage = Stage::parse(stage);
            }
            if let Some(at) = tags.get(TAG_RETIRED_AT) {
                i.retired_at = at.parse().ok();
            }
            if let Some(at) = tags.get(TAG_FAILED_AT) {
                i.failed_at = at.parse().ok();
            }
        }),
        Step::UntagInstances { instance_ids, keys } => each(instance_ids, &|i| {
            if keys.iter().any(|k| k == TAG_RETIRED_AT) {
                i.retired_at = None;
            }
            if keys.iter().any(|k| k == TAG_FAILED_AT) {
                i.failed_at = None;
            }
        }),
        _ => {}
    }
}
