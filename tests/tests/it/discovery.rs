//! How the functions find a service's slots and routes: by tags, on the listener its target
//! groups name (else on every listener of their load balancer), and, in a warm container, where
//! they were found last, every tag checked again: a route that moved costs a look, never a wrong
//! move.

use aws_sdk_elasticloadbalancingv2::types as elbt;
use cutover::Function;
use cutover_tests::{fixture, params, Local, ServiceFixture, R1, R2, SERVICE};
use serde_json::json;

async fn forward_of(local: &Local, rule: &str) -> String {
    let rule = fixture::describe_rule(&local.clients, rule).await;
    let action = &rule.actions()[0];
    action
        .target_group_arn()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{:?}", action.forward_config()))
}

/// Another rule on the service's listener, tagged as its product route, forwarding where the
/// product route does now; the old rule loses its `cutover:route` tag.
async fn move_the_product_route(local: &Local, service: &ServiceFixture) -> String {
    let elb = &local.clients.elb;
    let forward = forward_of(local, &service.product_rule).await;
    let host = format!("www.{}", service.product_host);
    let rule = fixture::route_rule(
        &local.clients,
        &local.base.listener,
        30,
        &host,
        &forward,
        SERVICE,
        "product",
    )
    .await;
    elb.remove_tags()
        .resource_arns(&service.product_rule)
        .tag_keys("cutover:route")
        .send()
        .await
        .expect("RemoveTags");
    rule
}

/// The listeners of the load balancer are read beside the target groups' tags (which of them
/// are the service's is known only from those tags); the listener the groups name spares reading
/// the rules of every other listener.
#[tokio::test]
async fn the_listener_the_target_groups_name_spares_reading_the_rules_of_every_listener() {
    let (local, _service, app) = Local::with_service(1, 0, json!({})).await;
    let other = fixture::another_listener(&local.clients, &local.base.load_balancer).await;
    let mark = local.endpoint.mark();
    let run = local.run_job(&app, Function::Provision, &params(R1)).await;
    assert!(run.succeeded(), "{:?}", run.last());
    let rules = local.endpoint.calls_of(mark, "DescribeRules");
    assert!(!rules.is_empty(), "the routes were looked for");
    assert!(
        rules
            .iter()
            .all(|c| c.param("ListenerArn") == Some(local.base.listener.as_str())),
        "read only the rules of the listener the target groups name, not of {other}"
    );
    let by_load_balancer = local
        .endpoint
        .calls_of(mark, "DescribeListeners")
        .iter()
        .filter(|c| c.has_param("LoadBalancerArn"))
        .count();
    assert_eq!(
        by_load_balancer, 1,
        "the load balancer's listeners once, beside the tags"
    );
    assert!(
        local
            .endpoint
            .calls_of(mark, "DescribeTargetHealth")
            .is_empty(),
        "provision needs only the lock: no target health is read"
    );
}

#[tokio::test]
async fn routes_are_found_on_every_listener_when_the_listener_the_target_groups_name_is_gone() {
    let (local, service, app) = Local::with_service(1, 0, json!({})).await;
    let stale = format!(
        "{}0",
        local.base.listener.trim_end_matches(char::is_alphanumeric)
    );
    for group in [&service.blue, &service.green] {
        local
            .clients
            .elb
            .add_tags()
            .resource_arns(group)
            .tags(
                elbt::Tag::builder()
                    .key("cutover:listener")
                    .value(&stale)
                    .build(),
            )
            .send()
            .await
            .expect("AddTags");
    }
    let mark = local.endpoint.mark();
    local.release(&app, &params(R1)).await;
    assert!(
        local
            .endpoint
            .calls_of(mark, "DescribeListeners")
            .iter()
            .any(|c| c.has_param("LoadBalancerArn")),
        "fell back to every listener of the load balancer"
    );
    assert_ne!(
        forward_of(&local, &service.product_rule).await,
        forward_of(&local, &service.pre_product_rule).await,
        "product and pre-product were found and point at different slots"
    );
}

#[tokio::test]
async fn a_warm_container_reads_its_slots_by_arn_and_only_the_listeners_it_searched() {
    let (local, _service, app) = Local::with_service(1, 0, json!({})).await;
    local.release(&app, &params(R1)).await;
    let mark = local.endpoint.mark();
    let run = local.run_job(&app, Function::Provision, &params(R2)).await;
    assert!(run.succeeded(), "{:?}", run.last());
    let groups = local.endpoint.calls_of(mark, "DescribeTargetGroups");
    assert!(
        !groups.is_empty() && groups.iter().all(|c| c.has_param("TargetGroupArns")),
        "only the two known target groups are read again: {groups:?}"
    );
    let rules = local.endpoint.calls_of(mark, "DescribeRules");
    assert!(
        !rules.is_empty()
            && rules
                .iter()
                .all(|c| c.param("ListenerArn") == Some(local.base.listener.as_str())),
        "every rule of the listener it searched, and no other listener's: {rules:?}"
    );
    assert!(
        local
            .endpoint
            .calls_of(mark, "DescribeListeners")
            .iter()
            .all(|c| c.has_param("ListenerArns")),
        "no listing of the load balancer's listeners"
    );
}

/// A rule newly tagged as the service's product route beside the one that is: a cold start refuses
/// the ambiguity, and so does a warm container, which reads every rule of the listener again
/// (before, it re-read only the rules it remembered and moved product without seeing the second).
#[tokio::test]
async fn a_warm_container_sees_a_second_product_rule_as_a_cold_start_does() {
    let (local, service, app) = Local::with_service(1, 0, json!({})).await;
    local.release(&app, &params(R1)).await;
    for function in [Function::Provision, Function::RegisterTarget] {
        let run = local.run_job(&app, function, &params(R2)).await;
        assert!(run.succeeded(), "{}: {:?}", function.as_str(), run.last());
    }
    let forward = forward_of(&local, &service.product_rule).await;
    let host = format!("www.{}", service.product_host);
    fixture::route_rule(
        &local.clients,
        &local.base.listener,
        40,
        &host,
        &forward,
        SERVICE,
        "product",
    )
    .await;
    let mark = local.endpoint.mark();
    let warm = local
        .run_job(&app, Function::SwitchListener, &params(R2))
        .await;
    let why = warm.failure_message().expect("refused").to_owned();
    assert!(why.contains("product"), "{why}");
    assert!(local.endpoint.mutations(mark).is_empty());
    let cold = local.app(&[(
        cutover_tests::VARIABLE,
        fixture::settings_json(&local.base, 1, 0, json!({})),
    )]);
    let refused = local
        .run_job(&cold, Function::SwitchListener, &params(R2))
        .await;
    assert_eq!(
        refused.failure_message(),
        Some(why.as_str()),
        "the same refusal cold"
    );
}

#[tokio::test]
async fn a_warm_container_whose_product_route_moved_moves_the_new_one_and_never_the_old() {
    let (local, service, app) = Local::with_service(1, 0, json!({})).await;
    local.release(&app, &params(R1)).await;
    let old_forward = forward_of(&local, &service.product_rule).await;
    let new_rule = move_the_product_route(&local, &service).await;
    let mark = local.endpoint.mark();

    local.release(&app, &params(R2)).await;

    assert!(
        local
            .endpoint
            .rule_moves(mark, &service.product_rule)
            .is_empty(),
        "the rule that is no longer tagged product was not moved"
    );
    assert_eq!(forward_of(&local, &service.product_rule).await, old_forward);
    assert_eq!(
        local.endpoint.rule_moves(mark, &new_rule).len(),
        1,
        "the route now tagged product moved, in one call"
    );
    assert_ne!(forward_of(&local, &new_rule).await, old_forward);
}

/// The calls since `mark` moved product's rule after `rounds` round trips.
fn assert_rounds_before_product_moved(
    local: &Local,
    mark: usize,
    product_rule: &str,
    rounds: usize,
) {
    let calls = &local.endpoint.calls()[mark..];
    assert_eq!(
        cutover_tests::endpoint::round_trips_before_product_moved(calls, product_rule),
        Some(rounds),
        "{:?}",
        calls.iter().map(|c| &c.action).collect::<Vec<_>>()
    );
}

/// A rollback of R2 by hand in `app` moves product back to R1 after `rounds` round trips.
async fn assert_rollback_moves_product_after(
    local: &Local,
    app: &cutover::App,
    service: &ServiceFixture,
    rounds: usize,
) {
    let mark = local.endpoint.mark();
    let rollback = json!({"service": SERVICE, "release": R2, "action": "rollback"});
    let run = local
        .run_job(app, Function::SwitchListener, &rollback)
        .await;
    assert!(run.succeeded(), "{:?}", run.last());
    assert_eq!(local.product_forward().await, service.green, "back on R1");
    assert_rounds_before_product_moved(local, mark, &service.product_rule, rounds);
}

/// R1 released and R2 in QA with the service's settings an SSM parameter (`extra` merged in),
/// then R2's switch in a new container (no settings, slots or routes known), every call taking
/// 100 ms: long enough that building a dozen requests side by side (a debug build on one thread)
/// never outlasts an answer, so a round trip stays one link of the longest chain. The new
/// container, and where its calls begin.
async fn switch_in_a_new_container(
    local: &Local,
    extra: serde_json::Value,
) -> (cutover::App, usize) {
    let settings = fixture::settings_json(&local.base, 1, 0, extra);
    fixture::put_settings_parameter(&local.clients, SERVICE, &settings).await;
    let warm = local.app(&[]);
    local.release(&warm, &params(R1)).await;
    for function in [Function::Provision, Function::RegisterTarget] {
        let run = local.run_job(&warm, function, &params(R2)).await;
        assert!(run.succeeded(), "{}: {:?}", function.as_str(), run.last());
    }
    let cold = local.app(&[]);
    local
        .endpoint
        .set_latency(std::time::Duration::from_millis(100));
    let mark = local.endpoint.mark();
    let run = local
        .run_job(&cold, Function::SwitchListener, &params(R2))
        .await;
    assert!(run.succeeded(), "{:?}", run.last());
    (cold, mark)
}

/// A cold start whose settings are an SSM parameter reads only that parameter, beside the slots
/// and routes (which need no settings); the reads that need the settings (instances, records)
/// follow the discovery: product moves after five rounds. Before, every service's parameter was
/// read first, in pages of ten: five rounds more with the 41 parameters of `ssm.rs`, ten with a
/// hundred services.
#[tokio::test]
async fn a_cold_switch_reads_its_parameter_beside_its_slots_and_routes() {
    let (local, service, _variables) = Local::with_service(1, 0, json!({})).await;
    let (_cold, mark) = switch_in_a_new_container(&local, json!({})).await;
    assert_rounds_before_product_moved(&local, mark, &service.product_rule, 4);
}

/// The same among a hundred services' target groups, the service's own groups naming no
/// listener: the listeners of every load balancer the groups name are read beside the groups'
/// tags, and what needs the settings beside the routes, so product still moves after four
/// rounds of reads (was six: the listeners and the settings' reads each waited their turn).
#[tokio::test]
async fn a_cold_switch_among_a_hundred_services_without_the_listener_tag_reads_in_four_rounds() {
    let (local, service, _variables) = Local::with_service(1, 0, json!({})).await;
    fixture::seed_other_services(&local.clients, &local.base, 99).await;
    fixture::forget_the_listener(&local.clients, &service).await;
    let (cold, mark) = switch_in_a_new_container(&local, json!({"BAKE_S": 3600})).await;
    assert_rounds_before_product_moved(&local, mark, &service.product_rule, 4);
    // What it costs: one DescribeListeners per load balancer the groups name (one here); the
    // tags of the 200 groups and of the listener and its 200 rules in pages of 20, side by side;
    // and the lock's tag read again when the switch releases it.
    assert_eq!(local.endpoint.calls_of(mark, "DescribeListeners").len(), 1);
    assert_eq!(
        local.endpoint.calls_of(mark, "DescribeTags").len(),
        200 / 20 + 201_usize.div_ceil(20) + 1
    );

    // Warm, a rollback reads in one round (the slots and routes where they were found, beside
    // the tags of every rule it found there, which may have changed), then marks the route
    // before it moves it: two (three before the warm container read the tags beside the rules).
    assert_rollback_moves_product_after(&local, &cold, &service, 2).await;
}

/// An alarm's rollback in a cold container, among a hundred services (their target groups and
/// their settings parameters), its own naming no listener: the alarm names no service until the
/// settings are read. The parameters of the services its name suggests (`cutover-<service>-…`)
/// are read alone, one call each, and the survey of the target groups, their tags and the load
/// balancers' listeners (which needs no service) beside them, so product moves after five
/// rounds: those parameters and the survey; the rules beside the slots' health; the rules' tags;
/// the rollback's mark; the move. Reading every parameter first took a page per ten services:
/// sixteen rounds here.
#[tokio::test]
async fn a_cold_alarm_rollback_among_a_hundred_services_moves_product_after_five_rounds() {
    const ALARM: &str = "cutover-mobile-zum-api-5xx";
    let (local, service, _variables) = Local::with_service(1, 0, json!({})).await;
    fixture::seed_other_services(&local.clients, &local.base, 99).await;
    fixture::forget_the_listener(&local.clients, &service).await;
    fixture::put_other_settings_parameters(&local.clients, &local.base, 99).await;
    fixture::put_alarm(&local.clients, ALARM, "OK").await;
    let _ = switch_in_a_new_container(&local, json!({"BAKE_S": 3600, "ALARMS": [ALARM]})).await;
    assert_eq!(local.product_forward().await, service.blue, "R2 serves");
    fixture::set_alarm(&local.clients, ALARM, "ALARM").await;
    let cold = local.app(&[]);
    let mark = local.endpoint.mark();
    cold.handle(
        Function::SwitchListener,
        cutover_tests::alarm_event(local.now()),
    )
    .await
    .expect("the alarm's rollback");
    let end = local.endpoint.mark();
    assert_eq!(
        local.product_forward().await,
        service.green,
        "rolled back to R1"
    );
    assert_rounds_before_product_moved(&local, mark, &service.product_rule, 5);
    // Every other parameter (ten pages) is read for any other service naming the alarm beside
    // the rollback, not after it (twenty round trips in all).
    let whole = cutover_tests::endpoint::round_trips(&local.endpoint.calls()[mark..end]);
    assert!(whole <= 13, "{whole} round trips in all");
}

/// A rule the warm container remembers, deleted since (another service's, here): its tags, read
/// beside the rules, fail their page as on AWS (`RuleNotFound`); the tags of every rule then
/// found are read after the rules, and the switch goes on.
#[tokio::test]
async fn a_warm_container_whose_remembered_rule_was_deleted_reads_the_tags_after_the_rules() {
    let (local, service, app) = Local::with_service(1, 0, json!({})).await;
    let forward = forward_of(&local, &service.product_rule).await;
    let other = fixture::route_rule(
        &local.clients,
        &local.base.listener,
        50,
        "other.example.com",
        &forward,
        "other-service",
        "product",
    )
    .await;
    local.release(&app, &params(R1)).await;
    for function in [Function::Provision, Function::RegisterTarget] {
        let run = local.run_job(&app, function, &params(R2)).await;
        assert!(run.succeeded(), "{}: {:?}", function.as_str(), run.last());
    }
    local
        .clients
        .elb
        .delete_rule()
        .rule_arn(&other)
        .send()
        .await
        .expect("DeleteRule");
    let mark = local.endpoint.mark();
    let run = local
        .run_job(&app, Function::SwitchListener, &params(R2))
        .await;
    assert!(run.succeeded(), "{:?}", run.last());
    let tags = local.endpoint.calls_of(mark, "DescribeTags");
    assert!(
        tags.iter()
            .any(|c| c.status == 400 && c.params.iter().any(|(_, v)| v == &other)),
        "the remembered rule's tags were read beside the rules, and refused: {tags:?}"
    );
    assert_eq!(
        local.endpoint.rule_moves(mark, &service.product_rule).len(),
        1
    );
}

/// The same hundred services, the service's settings naming its listener (`LISTENER`): that
/// listener's rules are read as soon as the parameter is (beside the target groups' tags), so a
/// cold release moves product after three rounds and a cold rollback, which marks the route
/// first, after four; no other listener is read.
#[tokio::test]
async fn a_cold_switch_on_the_listener_its_settings_name_moves_product_after_three_rounds() {
    let (local, service, _variables) = Local::with_service(1, 0, json!({})).await;
    fixture::seed_other_services(&local.clients, &local.base, 99).await;
    fixture::forget_the_listener(&local.clients, &service).await;
    let settings = json!({"BAKE_S": 3600, "LISTENER": local.base.listener});
    let (_warm, mark) = switch_in_a_new_container(&local, settings).await;
    assert_rounds_before_product_moved(&local, mark, &service.product_rule, 3);
    // Nor does it read every load balancer's listeners (a call each: fifty in an account of
    // fifty load balancers, past ELB's burst of forty reads).
    let listeners = local.endpoint.calls_of(mark, "DescribeListeners");
    assert!(
        listeners.iter().all(|c| !c.has_param("LoadBalancerArn")),
        "{listeners:?}"
    );

    assert_rollback_moves_product_after(&local, &local.app(&[]), &service, 4).await;
}

/// Settings naming a listener the routes are not on (another listener of the load balancer, or
/// one deleted since): the routes are found by their tags where they are, as without it.
#[tokio::test]
async fn routes_not_on_the_listener_the_settings_name_are_found_where_they_are() {
    let (local, service, _variables) = Local::with_service(1, 0, json!({})).await;
    fixture::forget_the_listener(&local.clients, &service).await;
    let other = fixture::another_listener(&local.clients, &local.base.load_balancer).await;
    let (_warm, mark) = switch_in_a_new_container(&local, json!({"LISTENER": other})).await;
    assert_eq!(local.product_forward().await, service.blue, "R2 serves");
    let rules = local.endpoint.calls_of(mark, "DescribeRules");
    assert!(
        rules
            .iter()
            .any(|c| c.param("ListenerArn") == Some(other.as_str()))
            && rules
                .iter()
                .any(|c| c.param("ListenerArn") == Some(local.base.listener.as_str())),
        "looked on the listener the settings name, then found the routes on the other: {rules:?}"
    );
}
