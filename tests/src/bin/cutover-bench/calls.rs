//! What the endpoint recorded, counted: calls by kind, round trips, and those before product moved.

use super::*;

/// The longest chain of `calls` in which each call was sent after the one before it was
/// answered: the sequential round trips they cost. Calls made side by side count once.
pub(crate) fn round_trips(calls: &[Call]) -> usize {
    let mut order: Vec<usize> = (0..calls.len()).collect();
    order.sort_by_key(|&i| calls[i].received);
    let mut depth = vec![0usize; calls.len()];
    for (k, &i) in order.iter().enumerate() {
        depth[i] = 1 + order[..k]
            .iter()
            .filter(|&&j| calls[j].answered <= calls[i].received)
            .map(|&j| depth[j])
            .max()
            .unwrap_or(0);
    }
    depth.into_iter().max().unwrap_or(0)
}

/// Round trips made before the first call that moved product (`None` when none did).
pub(crate) fn round_trips_before_product_moved(
    calls: &[Call],
    product_rule: &str,
) -> Option<usize> {
    let moved = calls.iter().find(|c| c.moves_rule(product_rule))?;
    let before: Vec<Call> = calls
        .iter()
        .filter(|c| c.answered <= moved.received)
        .cloned()
        .collect();
    Some(round_trips(&before))
}

pub(crate) fn counts(
    local: &Local,
    played: &Played,
    product_rule: &str,
    latency: Duration,
) -> Value {
    let calls = local.endpoint.calls();
    let all = played.invocations.first().map_or(0, |r| r.start)
        ..played.invocations.last().map_or(0, |r| r.end);
    let mut counts = call_counts(&calls[all]);
    let per_invocation: Vec<usize> = played
        .invocations
        .iter()
        .map(|r| round_trips(&calls[r.clone()]))
        .collect();
    let before_move = played
        .invocations
        .iter()
        .find_map(|r| round_trips_before_product_moved(&calls[r.clone()], product_rule));
    let product_moves = played
        .invocations
        .iter()
        .flat_map(|r| &calls[r.clone()])
        .filter(|c| c.moves_rule(product_rule))
        .count();
    counts["wall_ms"] = json!(ms(played.took));
    counts["invocations"] = json!(played.invocations.len());
    counts["round_trips_per_invocation"] = json!(per_invocation);
    counts["round_trips_max"] = json!(per_invocation.iter().max().copied().unwrap_or(0));
    counts["round_trips_before_product_moved"] = json!(before_move);
    counts["product_route_mutations"] = json!(product_moves);
    if !latency.is_zero() {
        counts["wall_over_latency"] =
            json!((played.took.as_secs_f64() / latency.as_secs_f64() * 10.0).round() / 10.0);
    }
    counts
}

pub(crate) fn call_counts(calls: &[Call]) -> Value {
    let mutations = calls.iter().filter(|c| is_mutation(c)).count();
    let elb_mutations = calls.iter().filter(|c| is_mutating_elb(c)).count();
    let mut by_action: BTreeMap<String, usize> = BTreeMap::new();
    for call in calls {
        *by_action
            .entry(
                call.action.split(' ').next().unwrap_or_default().to_owned()
                    + &route53_suffix(&call.action),
            )
            .or_default() += 1;
    }
    json!({"total": calls.len(), "reads": calls.len() - mutations, "mutations": mutations, "elb_mutations": elb_mutations, "by_action": by_action})
}

pub(crate) fn route53_suffix(action: &str) -> String {
    if action.contains("/rrset") {
        " rrset".into()
    } else if action.contains("/hostedzone/") {
        " hostedzone".into()
    } else {
        String::new()
    }
}
