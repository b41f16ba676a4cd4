//! What each invocation of the model plans: the real planner of its function, on what it reads.

use super::pipeline::JobAction;
use super::*;

impl Model {
    pub(super) fn plan(&self, kind: &Kind) -> Planned {
        let settings = self.settings();
        let (groups, templates) = self.seen_groups();
        let alarms = [Alarm {
            name: "api-5xx".into(),
            state: self.alarm,
        }];
        let (alb, instances, now) = (&self.alb, self.instances.as_slice(), self.now);
        let planned = match kind {
            Kind::Job {
                action,
                release,
                progress,
                ..
            } => self.plan_job(
                *action,
                release,
                progress.as_ref(),
                &settings,
                &alarms,
                (&groups, &templates),
            ),
            Kind::Rollback { named, alarm_at } => {
                let trigger = match alarm_at {
                    Some(at) => Trigger::Alarm {
                        name: "api-5xx",
                        at: Some(*at),
                    },
                    None => Trigger::Hand,
                };
                roll_back(&RollbackInput {
                    service: &service(),
                    release: named.as_ref(),
                    trigger,
                    settings: &settings,
                    alb,
                    instances,
                    addresses: &[],
                    dns: None,
                    alarms: &alarms,
                    now,
                })
            }
            Kind::Sweep | Kind::Failed(_) => {
                let executions = match BROKEN.get() {
                    Some(Broken::SweepTrustsTheFailedEvent) => BTreeMap::new(),
                    _ => self.executions(),
                };
                let input = CleanupInput {
                    groups: &groups,
                    takeover_s: match BROKEN.get() {
                        Some(Broken::NoTakeoverMargin) => 0,
                        _ => 2 * SWITCH_LISTENER_TIMEOUT_S,
                    },
                    service: &service(),
                    scope: match kind {
                        Kind::Failed(release) => CleanupScope::FailedExecution(release.clone()),
                        _ => CleanupScope::Expired,
                    },
                    settings: &settings,
                    alb,
                    instances,
                    addresses: &[],
                    dns: None,
                    alarms: &alarms,
                    executions: &executions,
                    progress: None,
                    now,
                };
                self.with_leftovers(cleanup(&input), &input, &groups, &templates)
            }
        };
        // As `run::converge::plan_for` does: every plan carried out on the groups.
        self.carried_on_groups(planned, &groups)
    }

    fn plan_job(
        &self,
        action: JobAction,
        release: &ReleaseId,
        progress: Option<&Progress>,
        settings: &ServiceSettings,
        alarms: &[Alarm],
        (groups, templates): (&[Group], &[LaunchTemplate]),
    ) -> Planned {
        let (alb, instances, now) = (&self.alb, self.instances.as_slice(), self.now);
        let lock_holder = self.lock_holder(release);
        match action {
            JobAction::Provision => provision(&ProvisionInput {
                groups,
                templates,
                ami: None,
                service: &service(),
                release,
                settings,
                instances,
                addresses: &[],
                dns: None,
                lock: alb.product.lock.as_ref(),
                lock_holder: lock_holder.as_ref(),
                progress,
                now,
            }),
            JobAction::Register => register(&RegisterInput {
                service: &service(),
                release,
                settings,
                alb,
                instances,
                lock_holder: lock_holder.as_ref(),
                progress,
                now,
            }),
            JobAction::Switch(strategy) => switch(&SwitchInput {
                service: &service(),
                release,
                action: Action::Release,
                settings,
                alb,
                instances,
                addresses: &[],
                dns: None,
                strategy,
                alarms,
                ignore_alarms: false,
                progress,
                now,
            }),
        }
    }
}
