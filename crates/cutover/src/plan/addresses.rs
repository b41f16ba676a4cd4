//! Elastic IPs: which fleet member holds which address.

use super::*;

/// Associates `allocation_ids[n-1]` with the fleet's instance of index n. With `take_over`, an
/// address held by another instance is moved (at switch time, from the retiring fleet); without,
/// it is left where it is and noted. Only addresses tagged `cutover:service=<service>` move: a
/// mistyped id in settings must not take another system's address.
pub(super) fn address_steps(
    service: &ServiceName,
    allocation_ids: &[String],
    addresses: &[Address],
    fleet: &[&Instance],
    take_over: bool,
    notes: &mut Vec<String>,
) -> Vec<Step> {
    let mut steps = Vec::new();
    for (position, allocation_id) in allocation_ids.iter().enumerate() {
        let index = position as u32 + 1;
        let Some(instance) = fleet.iter().find(|i| i.index == Some(index)) else {
            continue;
        };
        let Some(address) = addresses.iter().find(|a| &a.allocation_id == allocation_id) else {
            notes.push(format!(
                "address {allocation_id} was not found; not associated"
            ));
            continue;
        };
        if !is_the_services(address, service) {
            notes.push(untagged(address, service));
            continue;
        }
        match address.instance_id.as_deref() {
            Some(holder) if holder == instance.id => {}
            Some(holder) if !take_over => {
                notes.push(format!(
                    "address {allocation_id} stays on {holder} until the switch"
                ));
            }
            _ => steps.push(Step::AssociateAddress {
                allocation_id: allocation_id.clone(),
                instance_id: instance.id.clone(),
            }),
        }
    }
    steps
}

pub(super) fn is_the_services(address: &Address, service: &ServiceName) -> bool {
    address.service.as_deref() == Some(service.as_str())
}

pub(super) fn untagged(address: &Address, service: &ServiceName) -> String {
    format!(
        "address {} (settings EIP) is not tagged {TAG_SERVICE}={service}: cutover moves only the \
         service's own addresses; tag it to let cutover move it",
        address.allocation_id
    )
}
