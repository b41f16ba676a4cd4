//! The model's AWS: each call landing as AWS applies it, and the invariants a call can break.

use super::*;

impl Model {
    /// One call landing, as AWS applies it, with the invariants a call can break.
    pub(super) fn apply(&mut self, by: &Kind, step: &Step) -> Result<(), String> {
        self.log.push(format!("  {}", step.describe()));
        match step {
            Step::SetForward { route, to, .. } if *route == self.alb.product.arn => {
                self.move_product(by, to)
            }
            Step::DeregisterTargets {
                target_group,
                instance_ids,
            } => {
                let slot = self.slot_of(target_group);
                if self.product_slots().contains(&slot) {
                    return Err(format!(
                        "deregistered {instance_ids:?} from a slot product forwards to"
                    ));
                }
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
        for slot in &slots {
            let group = self.alb.slot(*slot);
            if group.targets.is_empty() || !group.unhealthy().is_empty() {
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
        if let Kind::Switch { release, .. } = by {
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
        }),
        Step::UntagInstances { instance_ids, keys } => each(instance_ids, &|i| {
            if keys.iter().any(|k| k == TAG_RETIRED_AT) {
                i.retired_at = None;
            }
        }),
        _ => {}
    }
}
