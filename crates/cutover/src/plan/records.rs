//! Private DNS: the records a service should have, and the changes that get it there (only
//! records cutover owns).

use super::*;

pub(super) fn service_suffix(dns: &Dns, service: &ServiceName) -> String {
    format!("{service}.{}", dns.zone_name)
}

pub(super) fn instance_record_name(
    instance: &Instance,
    dns: Option<&Dns>,
    service: &ServiceName,
) -> Option<String> {
    let dns = dns?;
    let release = instance.release.as_ref()?;
    Some(format!(
        "{}.{}.{}",
        instance.index?,
        release.short(),
        service_suffix(dns, service)
    ))
}

/// The A-records a service should have, given its instances (with `stage_changes` applied and
/// `leaving` left out).
pub fn desired_records(
    dns: &Dns,
    service: &ServiceName,
    instances: &[Instance],
    stage_changes: &BTreeMap<String, Stage>,
    leaving: &BTreeSet<String>,
) -> BTreeMap<String, Vec<String>> {
    let mut records: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for instance in instances {
        if leaving.contains(&instance.id) || instance.state != InstanceState::Running {
            continue;
        }
        let Some(ip) = instance.private_ip.clone() else {
            continue;
        };
        if let Some(name) = instance_record_name(instance, Some(dns), service) {
            records.entry(name).or_default().push(ip.clone());
        }
        let stage = stage_changes.get(&instance.id).copied().or(instance.stage);
        if let Some(stage @ (Stage::Product | Stage::PreProduct)) = stage {
            records
                .entry(format!("{stage}.{}", service_suffix(dns, service)))
                .or_default()
                .push(ip);
        }
    }
    for values in records.values_mut() {
        values.sort();
        values.dedup();
    }
    records
}

/// The record changes that take the service's owned records to the desired ones. A desired name
/// held by a record cutover did not write is left alone and noted.
pub(super) fn record_steps(
    dns: &Dns,
    service: &ServiceName,
    instances: &[Instance],
    stage_changes: &BTreeMap<String, Stage>,
    leaving: &BTreeSet<String>,
    notes: &mut Vec<String>,
) -> Vec<Step> {
    let desired = desired_records(dns, service, instances, stage_changes, leaving);
    let mut changes = Vec::new();
    for (name, values) in &desired {
        if dns.foreign.contains(name) {
            notes.push(format!(
                "DNS record {name} was not written by cutover (no ownership record); left as it is"
            ));
            continue;
        }
        let current = dns.records.get(name);
        if current.map(|r| (&r.values, r.ttl)) != Some((values, RECORD_TTL_S)) {
            changes.push(RecordChange {
                action: RecordAction::Upsert,
                name: name.clone(),
                ttl: RECORD_TTL_S,
                values: values.clone(),
                marker_ttl: current.map_or(RECORD_TTL_S, |r| r.marker_ttl),
            });
        }
    }
    for (name, record) in &dns.records {
        if !desired.contains_key(name) {
            // Exactly what was read: Route53 rejects a DELETE whose TTL or values differ.
            changes.push(RecordChange {
                action: RecordAction::Delete,
                name: name.clone(),
                ttl: record.ttl,
                values: record.values.clone(),
                marker_ttl: record.marker_ttl,
            });
        }
    }
    if changes.is_empty() {
        Vec::new()
    } else {
        vec![Step::ChangeRecords {
            zone_id: dns.zone_id.clone(),
            service: service.to_string(),
            changes,
        }]
    }
}
