//! The planner of DNS records.

use super::*;

#[test]
fn desired_records_follow_stages() {
    let instances = [
        running("i-1", "r1", 1, Stage::Product),
        running("i-2", "r2", 1, Stage::PreProduct),
        running("i-3", "r0", 1, Stage::Retired),
        instance("i-4", "r2", 2, Stage::PreProduct, InstanceState::Pending),
    ];
    let records = desired_records(
        &empty_dns(),
        &service(),
        &instances,
        &BTreeMap::new(),
        &BTreeSet::new(),
    );
    let names: BTreeSet<String> = records.keys().cloned().collect();
    let expected: BTreeSet<String> = ["r0", "r1", "r2"]
        .map(|r| format!("1.{}.api.internal.example.", release(r).short()))
        .into_iter()
        .chain([
            "pre-product.api.internal.example.".to_owned(),
            "product.api.internal.example.".to_owned(),
        ])
        .collect();
    assert_eq!(names, expected);
}

#[test]
fn records_cutover_did_not_write_are_never_changed_and_deletes_repeat_the_ttl_read() {
    let fleet = [running("i-1", "r2", 1, Stage::PreProduct)];
    let mut dns = owned_dns(&fleet);
    let qa = format!("pre-product.api.{}", dns.zone_name);
    // The QA name is someone else's; an old owned record has a TTL changed by hand.
    let owned_qa = dns.records.remove(&qa).unwrap();
    dns.foreign.insert(qa.clone());
    dns.records.insert(
        "1.gone.api.internal.example.".into(),
        RecordSet {
            ttl: 300,
            values: vec!["10.0.9.9".into()],
            marker_ttl: 60,
        },
    );
    let mut notes = Vec::new();
    let steps = record_steps(
        &dns,
        &service(),
        &fleet,
        &BTreeMap::new(),
        &BTreeSet::new(),
        &mut notes,
    );
    let [Step::ChangeRecords { changes, .. }] = &steps[..] else {
        panic!("{steps:?}")
    };
    assert!(changes.iter().all(|c| c.name != qa), "{changes:?}");
    assert_eq!(
        changes
            .iter()
            .map(|c| (c.action, c.name.as_str(), c.ttl))
            .collect::<Vec<_>>(),
        [(RecordAction::Delete, "1.gone.api.internal.example.", 300)]
    );
    assert!(notes.iter().any(|n| n.contains(&qa)), "{notes:?}");
    assert!(!owned_qa.values.is_empty());
}
