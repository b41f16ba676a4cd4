//! provision: launch the missing members of a release's fleet, wait for `running`, then its
//! addresses, records and output variables.

use super::*;

pub struct ProvisionInput<'a> {
    pub service: &'a ServiceName,
    pub release: &'a ReleaseId,
    pub settings: &'a ServiceSettings,
    /// Every live instance of the service (any release).
    pub instances: &'a [Instance],
    pub addresses: &'a [Address],
    pub dns: Option<&'a Dns>,
    /// `FLEET=asg`: the service's cutover groups and launch templates.
    pub groups: &'a [Group],
    pub templates: &'a [LaunchTemplate],
    /// The image the job names (`UserParameters.ami`), in place of the settings' `AMI`.
    pub ami: Option<&'a str>,
    /// The service's release lock (from its product route).
    pub lock: Option<&'a Lock>,
    /// What CodePipeline says of the execution holding the lock, when another release holds it.
    pub lock_holder: Option<&'a Execution>,
    pub progress: Option<&'a Progress>,
    pub now: u64,
}

pub fn provision(input: &ProvisionInput) -> Planned {
    if let Some(wait) = lock_verdict(
        input.lock,
        input.lock_holder,
        input.release,
        input.service,
        input.now,
        input.progress,
    )? {
        return Ok(wait);
    }
    let (service, release, settings) = (input.service, input.release, input.settings);
    let spec = match &settings.fleet {
        Fleet::Instances(spec) => spec,
        Fleet::Group { launch_template } => return provision_group(input, launch_template),
    };
    // A settings EIP that is not the service's is refused before anything is launched.
    if let Some(foreign) = input
        .addresses
        .iter()
        .find(|a| settings.elastic_ips.contains(&a.allocation_id) && !is_the_services(a, service))
    {
        return refuse(untagged(foreign, service));
    }
    // Dead instances are read too: one that died while this job waited for it must fail the job.
    let (dead, mine): (Vec<&Instance>, Vec<&Instance>) = of_release(input.instances, release)
        .into_iter()
        .partition(|i| i.state.is_dead());

    if let Some(decided) = taken_past_or_broken(input, &mine) {
        return decided;
    }

    let by_index = by_index(&mine);
    let mut steps: Vec<Step> = extras(&mine, &by_index, settings.count)
        .map(|instance_ids| Step::Terminate { instance_ids })
        .into_iter()
        .collect();
    let missing: Vec<u32> = (1..=settings.count)
        .filter(|n| !by_index.contains_key(n))
        .collect();
    // Waiting for `running` means every index was launched by this job: a missing one died.
    if input.progress.is_some_and(|p| p.phase == Phase::Running) {
        if let Some(died) = died_while_waiting(&missing, &dead) {
            return refuse(format!(
                "release {release} of {service}: instances died before they were running: {died}; \
                 retry the stage to launch replacements"
            ));
        }
    }
    if !missing.is_empty() {
        steps.extend(
            missing
                .iter()
                .map(|&index| launch(input, spec, index, &dead)),
        );
        return Ok(Plan::wait(Phase::Running).with_steps(steps));
    }

    let pending: Vec<&str> = mine
        .iter()
        .filter(|i| i.state == InstanceState::Pending)
        .map(|i| i.id.as_str())
        .collect();
    if !pending.is_empty() {
        let waited = Progress::waited_for(input.progress, Phase::Running, input.now);
        if waited > RUNNING_TIMEOUT_S {
            return refuse(format!(
                "instances {} of release {release} were not running after {waited}s",
                pending.join(", ")
            ));
        }
        return Ok(Plan::wait(Phase::Running).with_steps(steps));
    }
    let fleet: Vec<&Instance> = by_index.values().map(|same| same[0]).collect();
    Ok(finish(input, &fleet, steps))
}

/// A fleet provision must not touch: abandoned (refused), past provisioning (a late duplicate:
/// done, nothing to undo), or with a stopped instance (refused).
fn taken_past_or_broken(input: &ProvisionInput, mine: &[&Instance]) -> Option<Planned> {
    let (service, release) = (input.service, input.release);
    if mine.iter().any(|i| i.stage == Some(Stage::Abandoned)) {
        return Some(refuse(fleet_taken(
            release,
            service,
            input.settings.retry_window_s,
        )));
    }
    if let Some(serving) = mine.iter().find(|i| i.stage != Some(Stage::PreProduct)) {
        // A late duplicate of a finished job: nothing to do, and nothing to undo.
        return Some(Ok(Plan::done(format!(
            "release {release} of {service} is already past provisioning ({} is {}); nothing to do",
            serving.id,
            serving.stage.map(Stage::as_str).unwrap_or("untagged")
        ))));
    }
    if let Some(broken) = mine
        .iter()
        .find(|i| matches!(i.state, InstanceState::Stopping | InstanceState::Stopped))
    {
        return Some(refuse(format!(
            "instance {} of release {release} is {}; terminate it and retry the stage",
            broken.id,
            broken.state.as_str()
        )));
    }
    None
}

/// The release's live instances by their index, oldest first.
fn by_index<'a>(mine: &[&'a Instance]) -> BTreeMap<u32, Vec<&'a Instance>> {
    let mut by_index: BTreeMap<u32, Vec<&Instance>> = BTreeMap::new();
    for instance in mine {
        if let Some(index) = instance.index {
            by_index.entry(index).or_default().push(instance);
        }
    }
    for same in by_index.values_mut() {
        same.sort_by(|a, b| (a.launched_at, &a.id).cmp(&(b.launched_at, &b.id)));
    }
    by_index
}

/// Instances beyond the fleet: duplicates of an index (two concurrent first invocations can both
/// launch where RunInstances ignores ClientToken; the oldest is kept) and indexes past `COUNT`.
fn extras(
    mine: &[&Instance],
    by_index: &BTreeMap<u32, Vec<&Instance>>,
    count: u32,
) -> Option<Vec<String>> {
    let extras: Vec<String> = by_index
        .values()
        .flat_map(|same| same.iter().skip(1).map(|i| i.id.clone()))
        .chain(
            mine.iter()
                .filter(|i| i.index.is_none_or(|n| n > count))
                .map(|i| i.id.clone()),
        )
        .collect();
    (!extras.is_empty()).then_some(extras)
}

/// The newest dead instance of each missing index, with EC2's reason, when there is one.
fn died_while_waiting(missing: &[u32], dead: &[&Instance]) -> Option<String> {
    let died: Vec<String> = missing
        .iter()
        .filter_map(|n| {
            dead.iter()
                .filter(|d| d.index == Some(*n))
                .max_by_key(|d| d.launched_at)
        })
        .map(|d| {
            let reason = d
                .state_reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default();
            let index = d.index.unwrap_or_default();
            format!("{} (index {index}) is {}{reason}", d.id, d.state.as_str())
        })
        .collect();
    (!died.is_empty()).then(|| died.join("; "))
}

/// One member of the fleet, in the subnet its index picks.
fn launch(input: &ProvisionInput, spec: &InstanceSpec, index: u32, dead: &[&Instance]) -> Step {
    let settings = input.settings;
    let subnet = &settings.subnets[(index as usize - 1) % settings.subnets.len()];
    Step::Launch {
        spec: LaunchSpec {
            ami: input.ami.unwrap_or(&settings.ami).to_owned(),
            instance_type: spec.instance_type.clone(),
            subnet: subnet.clone(),
            security_groups: spec.security_groups.clone(),
            instance_profile: spec.instance_profile.clone(),
            key_name: spec.key_name.clone(),
            user_data: spec.user_data.clone(),
        },
        client_token: client_token(input.service, input.release, index),
        tags: launch_tags(input.service, input.release, settings, index),
        dead: dead
            .iter()
            .filter(|i| i.index == Some(index))
            .map(|i| i.id.clone())
            .collect(),
        read_at: input.now,
    }
}

/// The running fleet gets its addresses and records; the job ends with its output variables.
pub(super) fn finish(input: &ProvisionInput, fleet: &[&Instance], mut steps: Vec<Step>) -> Plan {
    let (service, release) = (input.service, input.release);
    let mut notes = Vec::new();
    steps.extend(address_steps(
        input.service,
        &input.settings.elastic_ips,
        input.addresses,
        fleet,
        false,
        &mut notes,
    ));
    if let Some(dns) = input.dns {
        steps.extend(record_steps(
            dns,
            service,
            input.instances,
            &BTreeMap::new(),
            &BTreeSet::new(),
            &mut notes,
        ));
    }
    let names: Vec<String> = fleet
        .iter()
        .map(|i| instance_label(i, input.dns, service))
        .collect();
    Plan::done(format!(
        "release {release} of {service}: {} pre-product instance(s) running: {}",
        fleet.len(),
        names.join(", ")
    ))
    .with_steps(steps)
    .with_notes(notes)
    .with_outputs(outputs(fleet, input.dns, service))
}

/// CodePipeline output variables: ids, names and, with a zone, the DNS names.
fn outputs(
    fleet: &[&Instance],
    dns: Option<&Dns>,
    service: &ServiceName,
) -> BTreeMap<String, String> {
    let joined = |values: Vec<&str>| values.join(",");
    let mut outputs = BTreeMap::from([
        (
            "instance_ids".to_owned(),
            joined(fleet.iter().map(|i| i.id.as_str()).collect()),
        ),
        (
            "names".to_owned(),
            joined(fleet.iter().filter_map(|i| i.name.as_deref()).collect()),
        ),
    ]);
    if let Some(dns) = dns {
        let records: Vec<String> = fleet
            .iter()
            .filter_map(|i| instance_record_name(i, Some(dns), service))
            .map(|r| r.trim_end_matches('.').to_owned())
            .collect();
        outputs.insert("dns_names".to_owned(), records.join(","));
        let qa = service_suffix(dns, service);
        outputs.insert(
            "qa_dns_name".to_owned(),
            format!("pre-product.{}", qa.trim_end_matches('.')),
        );
    }
    outputs
}

pub(super) fn launch_tags(
    service: &ServiceName,
    release: &ReleaseId,
    settings: &ServiceSettings,
    index: u32,
) -> BTreeMap<String, String> {
    let mut tags = settings.tags.clone();
    tags.insert(TAG_SERVICE.into(), service.to_string());
    tags.insert(TAG_STAGE.into(), Stage::PreProduct.as_str().into());
    tags.insert(TAG_RELEASE.into(), release.to_string());
    tags.insert(TAG_INDEX.into(), index.to_string());
    tags.insert(
        TAG_NAME.into(),
        instance_name(service, Stage::PreProduct, release, index),
    );
    tags
}

/// `i-0abc (1.a1b2c3d4.mobile-zum-api.internal.example)` or just the Name tag.
pub(super) fn instance_label(
    instance: &Instance,
    dns: Option<&Dns>,
    service: &ServiceName,
) -> String {
    let name = instance.name.clone().unwrap_or_else(|| instance.id.clone());
    match (dns, instance_record_name(instance, dns, service)) {
        (Some(_), Some(record)) => {
            format!("{name} ({} {})", instance.id, record.trim_end_matches('.'))
        }
        _ => format!("{name} ({})", instance.id),
    }
}
