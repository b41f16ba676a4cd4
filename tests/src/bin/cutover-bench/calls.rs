//! What the endpoint recorded, counted: calls by kind, round trips, and those before product moved.

use super::*;

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
