//! The service's records in its private zone: read (owned records are those with an ownership
//! TXT record beside them) and changed in one batch. Only the functions that write DNS have it.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_route53::types as r53t;

use super::*;

impl Aws {
    /// The service's records in the zone: those cutover owns (an ownership TXT record beside
    /// them) and the names of the others.
    /// The zone's name and its record sets are read side by side.
    pub async fn dns(&self, zone_id: &str, service: &str) -> Result<Dns, Error> {
        let zone = async {
            self.route53
                .get_hosted_zone()
                .id(zone_id)
                .send()
                .await
                .map_err(aws_error("GetHostedZone"))
        };
        let label = format!(".{service}.");
        let (zone, sets) = tokio::try_join!(zone, self.record_sets(zone_id, &label))?;
        let mut zone_name = zone
            .hosted_zone()
            .map(|z| z.name().to_owned())
            .unwrap_or_default();
        if !zone_name.ends_with('.') {
            zone_name.push('.');
        }
        let suffix = format!(".{service}.{zone_name}");
        let sets: Vec<_> = sets
            .into_iter()
            .filter(|s| s.name().ends_with(&suffix))
            .collect();
        let marker = ownership_marker(service);
        let owned: BTreeMap<&str, i64> = sets
            .iter()
            .filter(|s| s.r#type() == &r53t::RrType::Txt)
            .filter(|s| s.resource_records().iter().any(|r| r.value() == marker))
            .map(|s| (s.name(), s.ttl().unwrap_or(0)))
            .collect();
        let mut records = BTreeMap::new();
        let mut foreign = BTreeSet::new();
        for set in sets.iter().filter(|s| s.r#type() == &r53t::RrType::A) {
            let Some(&marker_ttl) = owned.get(set.name()) else {
                foreign.insert(set.name().to_owned());
                continue;
            };
            let values = set
                .resource_records()
                .iter()
                .map(|r| r.value().to_owned())
                .collect();
            let ttl = set.ttl().unwrap_or(0);
            records.insert(
                set.name().to_owned(),
                RecordSet {
                    ttl,
                    values,
                    marker_ttl,
                },
            );
        }
        Ok(Dns {
            zone_id: zone_id.to_owned(),
            zone_name,
            records,
            foreign,
        })
    }

    /// Every record set of the zone whose name contains `label` (`.<service>.`), all pages.
    async fn record_sets(
        &self,
        zone_id: &str,
        label: &str,
    ) -> Result<Vec<r53t::ResourceRecordSet>, Error> {
        let mut sets = Vec::new();
        let mut start: Option<(String, r53t::RrType)> = None;
        loop {
            let mut request = self
                .route53
                .list_resource_record_sets()
                .hosted_zone_id(zone_id);
            if let Some((name, kind)) = start.take() {
                request = request.start_record_name(name).start_record_type(kind);
            }
            let page = request
                .send()
                .await
                .map_err(aws_error("ListResourceRecordSets"))?;
            sets.extend(
                page.resource_record_sets()
                    .iter()
                    .filter(|s| s.name().contains(label))
                    .cloned(),
            );
            match (
                page.is_truncated(),
                page.next_record_name(),
                page.next_record_type(),
            ) {
                (true, Some(name), Some(kind)) => start = Some((name.to_owned(), kind.clone())),
                _ => return Ok(sets),
            }
        }
    }

    /// Every A record goes with its ownership TXT record, in the same atomic batch.
    pub(super) async fn change_records(
        &self,
        zone_id: &str,
        service: &str,
        changes: &[RecordChange],
    ) -> Result<(), Error> {
        let marker = [ownership_marker(service)];
        let mut batch = r53t::ChangeBatch::builder().comment("cutover");
        for change in changes {
            let action = match change.action {
                RecordAction::Upsert => r53t::ChangeAction::Upsert,
                RecordAction::Delete => r53t::ChangeAction::Delete,
            };
            for (kind, ttl, values) in [
                (r53t::RrType::A, change.ttl, change.values.as_slice()),
                (r53t::RrType::Txt, change.marker_ttl, marker.as_slice()),
            ] {
                let records = values
                    .iter()
                    .map(|value| r53t::ResourceRecord::builder().value(value).build())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(build_error("ResourceRecord"))?;
                let set = r53t::ResourceRecordSet::builder()
                    .name(&change.name)
                    .r#type(kind)
                    .ttl(ttl)
                    .set_resource_records(Some(records))
                    .build()
                    .map_err(build_error("ResourceRecordSet"))?;
                batch = batch.changes(
                    r53t::Change::builder()
                        .action(action.clone())
                        .resource_record_set(set)
                        .build()
                        .map_err(build_error("Change"))?,
                );
            }
        }
        self.route53
            .change_resource_record_sets()
            .hosted_zone_id(zone_id)
            .change_batch(batch.build().map_err(build_error("ChangeBatch"))?)
            .send()
            .await
            .map_err(aws_error("ChangeResourceRecordSets"))?;
        Ok(())
    }
}
