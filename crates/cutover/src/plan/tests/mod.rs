//! The planners' tests: a small world (two slots, two routes, a zone) built in memory, and one
//! module of tests per planner.

use super::*;

use crate::settings::ServiceSettings;

pub(crate) const NOW: u64 = 1_800_000_000;

pub(crate) const BLUE: &str = "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/api-blue/1";

pub(crate) const GREEN: &str = "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/api-green/2";

pub(crate) const PRODUCT_RULE: &str =
    "arn:aws:elasticloadbalancing:us-east-1:1:listener-rule/app/alb/1/2/product";

pub(crate) const QA_RULE: &str =
    "arn:aws:elasticloadbalancing:us-east-1:1:listener-rule/app/alb/1/2/qa";

pub(crate) fn service() -> ServiceName {
    ServiceName::parse("api").unwrap()
}

pub(crate) fn release(id: &str) -> ReleaseId {
    ReleaseId::parse(id).unwrap()
}

pub(crate) fn settings(count: u32) -> ServiceSettings {
    ServiceSettings::parse(
        "API",
        &format!(
            r#"{{"AMI":"ami-1","INSTANCE_TYPE":"t3.small","SUBNET":["subnet-a","subnet-b"],"SG":"sg-1",
                "EIP":["eipalloc-1"],"COUNT":{count},"DNS_ZONE":"Z1","BAKE_S":600,"HEALTH_TIMEOUT_S":300}}"#
        ),
    )
    .unwrap()
}

pub(crate) fn instance(
    id: &str,
    release: &str,
    index: u32,
    stage: Stage,
    state: InstanceState,
) -> Instance {
    Instance {
        id: id.into(),
        state,
        service: "api".into(),
        stage: Some(stage),
        release: Some(ReleaseId::parse(release).unwrap()),
        index: Some(index),
        name: Some(format!("api-{stage}-{release}-{index}")),
        private_ip: Some(format!("10.0.0.{index}{}", id.len())),
        retired_at: None,
        failed_at: None,
        installed: None,
        launched_at: Some(NOW - 100),
        state_reason: None,
    }
}

pub(crate) fn running(id: &str, release: &str, index: u32, stage: Stage) -> Instance {
    instance(id, release, index, stage, InstanceState::Running)
}

pub(crate) fn target(id: &str, health: Health) -> Target {
    Target {
        id: id.into(),
        health,
        reason: None,
    }
}

pub(crate) fn group(slot: Slot, targets: Vec<Target>) -> TargetGroup {
    let arn = if slot == Slot::Blue { BLUE } else { GREEN };
    TargetGroup {
        arn: arn.into(),
        name: format!("api-{slot}"),
        slot,
        targets,
    }
}

pub(crate) fn route(arn: &str, role: RouteRole, to: &str) -> Route {
    Route {
        arn: arn.into(),
        role,
        is_listener_default: false,
        forward: Forward::to(to),
        forward_order: None,
        kept_actions: Vec::new(),
        previous: None,
        rolled_back: None,
        lock: None,
        conditions: vec!["host-header=qa.api.example.com".into()],
    }
}

/// Product on blue, pre-product on green.
pub(crate) fn alb(blue: Vec<Target>, green: Vec<Target>) -> Alb {
    Alb {
        blue: group(Slot::Blue, blue),
        green: group(Slot::Green, green),
        product: route(PRODUCT_RULE, RouteRole::Product, BLUE),
        pre_product: route(QA_RULE, RouteRole::PreProduct, GREEN),
    }
}

pub(crate) fn empty_dns() -> Dns {
    Dns {
        zone_id: "Z1".into(),
        zone_name: "internal.example.".into(),
        records: BTreeMap::new(),
        foreign: BTreeSet::new(),
    }
}

/// The service's records as cutover would have written them for these instances.
fn owned_dns(instances: &[Instance]) -> Dns {
    let records = desired_records(
        &empty_dns(),
        &service(),
        instances,
        &BTreeMap::new(),
        &BTreeSet::new(),
    )
    .into_iter()
    .map(|(name, values)| {
        let set = RecordSet {
            ttl: RECORD_TTL_S,
            values,
            marker_ttl: RECORD_TTL_S,
        };
        (name, set)
    })
    .collect();
    Dns {
        records,
        ..empty_dns()
    }
}

/// An address of the service's (tagged `cutover:service=api`), associated with nothing.
pub(crate) fn free_address() -> Address {
    Address {
        allocation_id: "eipalloc-1".into(),
        association_id: None,
        instance_id: None,
        public_ip: None,
        service: Some("api".into()),
    }
}

fn provision_plan(
    settings: &ServiceSettings,
    instances: &[Instance],
    addresses: &[Address],
    progress: Option<&Progress>,
) -> Planned {
    let dns = empty_dns();
    provision(&ProvisionInput {
        groups: &[],
        templates: &[],
        ami: None,
        service: &service(),
        release: &release("r2"),
        settings,
        instances,
        addresses,
        dns: Some(&dns),
        lock: None,
        lock_holder: None,
        progress,
        now: NOW,
    })
}

/// Register as the release holding the lock (the usual case after the first invocation).
fn register_plan(alb: &Alb, instances: &[Instance], progress: Option<&Progress>) -> Planned {
    let mut alb = alb.clone();
    alb.product.lock = Some(Lock {
        release: "r2".into(),
        since: NOW - 5,
    });
    register_unlocked(&alb, instances, progress)
}

fn register_unlocked(alb: &Alb, instances: &[Instance], progress: Option<&Progress>) -> Planned {
    register(&RegisterInput {
        service: &service(),
        release: &release("r2"),
        settings: &settings(1),
        alb,
        instances,
        lock_holder: None,
        progress,
        now: NOW,
    })
}

fn switch_plan(action: Action, alb: &Alb, instances: &[Instance]) -> Planned {
    switch_plan_of("r2", action, alb, instances)
}

fn switch_plan_of(of: &str, action: Action, alb: &Alb, instances: &[Instance]) -> Planned {
    switch(&SwitchInput {
        service: &service(),
        release: &release(of),
        action,
        settings: &settings(1),
        alb,
        instances,
        addresses: &[],
        dns: None,
        strategy: Strategy::AllAtOnce,
        alarms: &[],
        ignore_alarms: false,
        progress: None,
        now: NOW,
    })
}

fn rollback_plan(
    trigger: Trigger,
    release: Option<&ReleaseId>,
    alb: &Alb,
    instances: &[Instance],
) -> Planned {
    let alarms = [Alarm {
        name: "api-5xx".into(),
        state: AlarmState::Alarm,
    }];
    roll_back(&RollbackInput {
        service: &service(),
        release,
        trigger,
        settings: &settings(1),
        alb,
        instances,
        addresses: &[],
        dns: None,
        alarms: &alarms,
        now: NOW,
    })
}

pub(crate) fn mark(release: &str, at: u64) -> RollbackMark {
    RollbackMark {
        release: release.into(),
        by: "hand".into(),
        at,
    }
}

fn released_world() -> (Alb, Vec<Instance>) {
    let world = alb(
        vec![target("i-old", Health::Healthy)],
        vec![target("i-new", Health::Healthy)],
    );
    let mut instances = vec![
        running("i-old", "r1", 1, Stage::Product),
        running("i-new", "r2", 1, Stage::PreProduct),
    ];
    // r2 is launched after r1, as every next release is.
    instances[1].launched_at = Some(NOW - 50);
    (world, instances)
}

fn cleanup_plan(
    world: &Alb,
    instances: &[Instance],
    scope: CleanupScope,
    addresses: &[Address],
) -> Planned {
    let dns = owned_dns(instances);
    cleanup(&CleanupInput {
        groups: &[],
        takeover_s: 0,
        service: &service(),
        scope,
        settings: &settings(1),
        alb: world,
        instances,
        addresses,
        dns: Some(&dns),
        alarms: &[],
        executions: &BTreeMap::new(),
        progress: None,
        now: NOW,
    })
}

fn shift_plan(
    world: &Alb,
    instances: &[Instance],
    strategy: &str,
    progress: Option<&Progress>,
) -> Planned {
    switch(&SwitchInput {
        service: &service(),
        release: &release("r2"),
        action: Action::Release,
        settings: &settings(1),
        alb: world,
        instances,
        addresses: &[],
        dns: None,
        strategy: Strategy::parse(strategy).unwrap(),
        alarms: &[],
        ignore_alarms: false,
        progress,
        now: NOW,
    })
}

mod cleanup;
mod groups;
mod model;
mod provision;
mod records;
mod register;
mod rollback;
mod switch;
