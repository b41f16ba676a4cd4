//! What AWS does that moto does not, modelled at the local endpoint. Each behaviour is a switch,
//! off by default, and follows the tests' clock (a drain is advanced, never slept):
//!
//! - **latency**: every call answers after a fixed delay, so round trips add up as on AWS.
//! - **target lifecycle**: a registered target is `initial` (`Elb.RegistrationInProgress`) for a
//!   while, then `healthy`, unless a test makes it `unhealthy` or `unavailable`; a deregistered
//!   (or terminated) one is `draining` (`Target.DeregistrationInProgress`) for the deregistration
//!   delay, then gone; deregistering a target that is not registered succeeds, as the ELBv2 API
//!   reference says it does. `DescribeTargetHealth` is answered from this model. Targets an
//!   Auto Scaling group registers (inside moto, with no RegisterTargets call to see) are learned
//!   from moto's own answer: new there → `initial`, gone there → `draining`, as on AWS.
//! - **ClientToken**: a repeated `RunInstances` with the same token returns the first call's
//!   reservation (with the instances' current state, so a terminated one shows as terminated);
//!   the same token with other parameters is `IdempotentParameterMismatch`. Tokens stay bound
//!   for the whole test (AWS: at least 24 hours after the instances terminate). The EC2 guide
//!   says a replayed answer "might contain updated information": `replay_first_answers` makes
//!   it the first call's answer unchanged, state and all.
//! - **group names** (always on): a second `CreateAutoScalingGroup` with a name in use is
//!   `AlreadyExists`, as the Auto Scaling API reference says; moto replaces the group instead.
//! - **deleted ELB resources** (always on): `DescribeTags` naming a rule, listener or target
//!   group deleted through the endpoint is `RuleNotFound` (`ListenerNotFound`,
//!   `TargetGroupNotFound`) for the whole call, as the ELBv2 API reference lists; moto answers
//!   for the others and leaves it out.
//! - **an instance no longer listed**: EC2 drops a terminated instance from `DescribeInstances`
//!   after about an hour, while its ClientToken stays bound; `vanish` makes it so at once, and
//!   a replayed answer naming it shows it launched long ago (as it was, by then).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;

/// One target as ELB sees it.
#[derive(Debug, Clone)]
struct TargetRecord {
    registered_at: u64,
    deregistered_at: Option<u64>,
    /// A state a test forced (`unhealthy`, `unavailable`), with its reason code.
    forced: Option<(String, String)>,
    /// Registered by Auto Scaling (inside moto, for an attached group): learned from moto's
    /// own target list, and draining from the read that no longer finds it there.
    by_auto_scaling: bool,
}

#[derive(Debug, Clone)]
struct Lifecycle {
    initial_s: u64,
    drain_s: u64,
    /// target group ARN → instance id → record.
    groups: HashMap<String, BTreeMap<String, TargetRecord>>,
}

#[derive(Debug, Clone)]
struct Launch {
    params: Vec<(String, String)>,
    body: Bytes,
    instance_ids: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Realism {
    pub latency: Duration,
    lifecycle: Option<Lifecycle>,
    tokens: Option<HashMap<String, Launch>>,
    /// Replayed RunInstances answers keep the first call's state (a terminated instance still
    /// shows as it was launched).
    replay_first_answers: bool,
    terminated: HashSet<String>,
    /// Instances `DescribeInstances` no longer lists.
    vanished: HashSet<String>,
    /// Instances terminated while a target group still held them (registered or draining).
    pub terminated_while_in_a_group: Vec<String>,
    /// Auto Scaling group names in use (created through the endpoint, not yet deleted).
    group_names: HashSet<String>,
    /// ELB rules, listeners and target groups deleted through the endpoint, with the error
    /// code `DescribeTags` answers for each.
    deleted_elb: HashMap<String, &'static str>,
}

/// What the endpoint does with a call, decided before it reaches moto.
pub enum Intercept {
    /// Answer with this XML body (HTTP 200).
    Answer(String),
    /// Answer with an EC2/ELB error.
    Error {
        status: u16,
        code: String,
        message: String,
    },
    /// Forward to moto (and tell `after` how it went).
    Forward,
}

impl Realism {
    pub fn model_targets(&mut self, initial_s: u64, drain_s: u64) {
        self.lifecycle = Some(Lifecycle {
            initial_s,
            drain_s,
            groups: HashMap::new(),
        });
    }

    pub fn honour_client_tokens(&mut self) {
        self.tokens = Some(HashMap::new());
    }

    pub fn replay_first_answers(&mut self) {
        self.replay_first_answers = true;
    }

    pub fn vanish(&mut self, instance_id: &str) {
        self.vanished.insert(instance_id.to_owned());
    }

    /// moto's answer as AWS would give it: `DescribeInstances` without the vanished instances,
    /// `DescribeTargetHealth` from the target model.
    pub fn rewrite(
        &self,
        action: &str,
        params: &[(String, String)],
        reply: Bytes,
        now: u64,
    ) -> Bytes {
        let answered = || String::from_utf8_lossy(&reply).contains("<DescribeTargetHealthResult");
        if let (Some(lifecycle), "DescribeTargetHealth", true) =
            (&self.lifecycle, action, answered())
        {
            let group = param(params, "TargetGroupArn").unwrap_or_default();
            return Bytes::from(target_health_xml(lifecycle, group, now));
        }
        if action != "DescribeInstances" || self.vanished.is_empty() {
            return reply;
        }
        let mut text = String::from_utf8_lossy(&reply).into_owned();
        for id in &self.vanished {
            text = without_instance(&text, id);
        }
        Bytes::from(text)
    }

    /// Forces a target's health (`unhealthy`, `unavailable`), or clears it (`None`).
    pub fn force_health(&mut self, group: &str, instance: &str, state: Option<(&str, &str)>) {
        let lifecycle = self
            .lifecycle
            .as_mut()
            .expect("force_health needs model_targets first");
        if let Some(target) = lifecycle
            .groups
            .get_mut(group)
            .and_then(|targets| targets.get_mut(instance))
        {
            target.forced = state.map(|(s, r)| (s.to_owned(), r.to_owned()));
        }
    }

    /// The state a target shows now, as `DescribeTargetHealth` would say it (None: gone).
    pub fn health(&self, group: &str, instance: &str, now: u64) -> Option<String> {
        let lifecycle = self.lifecycle.as_ref()?;
        let target = lifecycle.groups.get(group)?.get(instance)?;
        describe(lifecycle, target, now).map(|(state, _)| state)
    }

    pub fn before(&mut self, action: &str, params: &[(String, String)]) -> Intercept {
        match action {
            "RunInstances" => self.replay_launch(params),
            "DescribeTags" => {
                let deleted = params
                    .iter()
                    .filter(|(key, _)| key.starts_with("ResourceArns.member."))
                    .find_map(|(_, arn)| Some((arn, *self.deleted_elb.get(arn)?)));
                match deleted {
                    Some((arn, code)) => Intercept::Error {
                        status: 400,
                        code: code.into(),
                        message: format!("One or more resources not found: '{arn}'"),
                    },
                    None => Intercept::Forward,
                }
            }
            "CreateAutoScalingGroup" => {
                let name = param(params, "AutoScalingGroupName").unwrap_or_default();
                if self.group_names.contains(name) {
                    return Intercept::Error {
                        status: 400,
                        code: "AlreadyExists".into(),
                        message: format!("AutoScalingGroup by this name already exists - A group with the name {name} already exists"),
                    };
                }
                Intercept::Forward
            }
            // Forwarded: moto's answer says what Auto Scaling registered (`after`), and is then
            // replaced by the model's (`rewrite`).
            "DeregisterTargets" => {
                let Some(lifecycle) = &mut self.lifecycle else {
                    return Intercept::Forward;
                };
                let group = param(params, "TargetGroupArn")
                    .unwrap_or_default()
                    .to_owned();
                let ids = member_ids(params, "Targets.member.", ".Id");
                let targets = lifecycle.groups.entry(group).or_default();
                // Only targets moto still holds go on to moto; the rest succeed here.
                let live = ids
                    .iter()
                    .any(|id| targets.get(id).is_some_and(|t| t.deregistered_at.is_none()));
                if live {
                    return Intercept::Forward;
                }
                Intercept::Answer(empty_elb_response("DeregisterTargets"))
            }
            _ => Intercept::Forward,
        }
    }

    /// Learns from a call moto answered with `status`.
    pub fn after(
        &mut self,
        action: &str,
        params: &[(String, String)],
        status: u16,
        body: &Bytes,
        now: u64,
    ) {
        if status >= 300 {
            return;
        }
        match action {
            "DeleteRule" | "DeleteListener" | "DeleteTargetGroup" => {
                let (key, code) = match action {
                    "DeleteRule" => ("RuleArn", "RuleNotFound"),
                    "DeleteListener" => ("ListenerArn", "ListenerNotFound"),
                    _ => ("TargetGroupArn", "TargetGroupNotFound"),
                };
                if let Some(arn) = param(params, key) {
                    self.deleted_elb.insert(arn.to_owned(), code);
                }
            }
            "CreateAutoScalingGroup" | "DeleteAutoScalingGroup" => {
                let name = param(params, "AutoScalingGroupName")
                    .unwrap_or_default()
                    .to_owned();
                if action == "CreateAutoScalingGroup" {
                    self.group_names.insert(name);
                } else {
                    self.group_names.remove(&name);
                }
            }
            "DescribeTargetHealth" => {
                if let Some(lifecycle) = &mut self.lifecycle {
                    let group = param(params, "TargetGroupArn").unwrap_or_default();
                    learn_auto_scaling_targets(lifecycle, group, &target_ids(body), now);
                }
            }
            "RunInstances" => {
                if let (Some(tokens), Some(token)) =
                    (&mut self.tokens, param(params, "ClientToken"))
                {
                    tokens.insert(
                        token.to_owned(),
                        Launch {
                            params: comparable(params),
                            body: body.clone(),
                            instance_ids: instance_ids(body),
                        },
                    );
                }
            }
            "TerminateInstances" => {
                let ids = member_ids(params, "InstanceId.", "");
                if let Some(lifecycle) = &mut self.lifecycle {
                    for id in &ids {
                        let held = lifecycle.groups.values().any(|targets| {
                            targets
                                .get(id)
                                .is_some_and(|t| describe(lifecycle, t, now).is_some())
                        });
                        if held {
                            self.terminated_while_in_a_group.push(id.clone());
                        }
                    }
                    // AWS drains a terminated instance's targets like any deregistration.
                    for targets in lifecycle.groups.values_mut() {
                        for id in &ids {
                            if let Some(target) = targets.get_mut(id) {
                                target.deregistered_at.get_or_insert(now);
                            }
                        }
                    }
                }
                self.terminated.extend(ids);
            }
            "RegisterTargets" | "DeregisterTargets" => {
                let Some(lifecycle) = &mut self.lifecycle else {
                    return;
                };
                let group = param(params, "TargetGroupArn")
                    .unwrap_or_default()
                    .to_owned();
                let targets = lifecycle.groups.entry(group).or_default();
                for id in member_ids(params, "Targets.member.", ".Id") {
                    if action == "RegisterTargets" {
                        targets.insert(
                            id,
                            TargetRecord {
                                registered_at: now,
                                deregistered_at: None,
                                forced: None,
                                by_auto_scaling: false,
                            },
                        );
                    } else if let Some(target) = targets.get_mut(&id) {
                        target.deregistered_at.get_or_insert(now);
                    }
                }
            }
            _ => {}
        }
    }

    fn replay_launch(&self, params: &[(String, String)]) -> Intercept {
        let (Some(tokens), Some(token)) = (&self.tokens, param(params, "ClientToken")) else {
            return Intercept::Forward;
        };
        let Some(first) = tokens.get(token) else {
            return Intercept::Forward;
        };
        if first.params != comparable(params) {
            return Intercept::Error {
                status: 400,
                code: "IdempotentParameterMismatch".into(),
                message: format!(
                    "the client token {token} was used before with different parameters"
                ),
            };
        }
        let mut body = String::from_utf8_lossy(&first.body).into_owned();
        if !self.replay_first_answers
            && first
                .instance_ids
                .iter()
                .any(|id| self.terminated.contains(id))
        {
            body = replace_blocks(
                &body,
                "<instanceState>",
                "</instanceState>",
                "<instanceState><code>48</code><name>terminated</name></instanceState>",
            );
        }
        if first
            .instance_ids
            .iter()
            .any(|id| self.vanished.contains(id))
        {
            body = replace_blocks(
                &body,
                "<launchTime>",
                "</launchTime>",
                "<launchTime>2000-01-01T00:00:00.000Z</launchTime>",
            );
        }
        Intercept::Answer(body)
    }
}

/// `DescribeInstances` XML without the instance whose `instanceId` is `id`: each `<item>`
/// directly inside an `<instancesSet>` is one instance, with nested items of its own.
fn without_instance(text: &str, id: &str) -> String {
    let wanted = format!("<instanceId>{id}</instanceId>");
    let mut out = String::new();
    let mut rest = text;
    while let Some(set) = rest.find("<instancesSet>") {
        let inside = set + "<instancesSet>".len();
        out.push_str(&rest[..inside]);
        rest = &rest[inside..];
        while rest.starts_with("<item>") {
            let end = item_end(rest);
            if !rest[..end].contains(&wanted) {
                out.push_str(&rest[..end]);
            }
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

/// Where the `<item>` that `text` starts with ends (just past its `</item>`).
fn item_end(text: &str) -> usize {
    let mut depth = 0usize;
    let mut cursor = 0;
    while let Some(at) = text[cursor..].find("item>").map(|n| cursor + n) {
        match text.as_bytes()[at - 1] {
            b'<' => depth += 1,
            b'/' => depth -= 1,
            _ => {}
        }
        cursor = at + "item>".len();
        if depth == 0 {
            return cursor;
        }
    }
    text.len()
}

/// Every `open … close` block of `text` replaced by `with`.
fn replace_blocks(text: &str, open: &str, close: &str, with: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find(open) {
        let Some(end) = rest[start..].find(close) else {
            break;
        };
        out.push_str(&rest[..start]);
        out.push_str(with);
        rest = &rest[start + end + close.len()..];
    }
    out.push_str(rest);
    out
}

/// moto lists what Auto Scaling registered for an attached group: a target new there starts its
/// registration now; one Auto Scaling registered that moto no longer lists (its group was
/// detached) drains from now.
fn learn_auto_scaling_targets(lifecycle: &mut Lifecycle, group: &str, listed: &[String], now: u64) {
    let targets = lifecycle.groups.entry(group.to_owned()).or_default();
    for id in listed {
        let known = targets
            .get(id)
            .is_some_and(|t| t.deregistered_at.is_none() || !t.by_auto_scaling);
        if !known {
            targets.insert(
                id.clone(),
                TargetRecord {
                    registered_at: now,
                    deregistered_at: None,
                    forced: None,
                    by_auto_scaling: true,
                },
            );
        }
    }
    for (id, target) in targets.iter_mut() {
        if target.by_auto_scaling && target.deregistered_at.is_none() && !listed.contains(id) {
            target.deregistered_at = Some(now);
        }
    }
}

/// The target ids in a `DescribeTargetHealth` answer.
fn target_ids(body: &Bytes) -> Vec<String> {
    let text = String::from_utf8_lossy(body);
    text.split("<Target>")
        .skip(1)
        .filter_map(|part| {
            let start = part.find("<Id>")? + "<Id>".len();
            let end = part[start..].find("</Id>")? + start;
            Some(part[start..end].to_owned())
        })
        .collect()
}

fn describe(lifecycle: &Lifecycle, target: &TargetRecord, now: u64) -> Option<(String, String)> {
    if let Some(at) = target.deregistered_at {
        return (now < at + lifecycle.drain_s).then(|| {
            (
                "draining".to_owned(),
                "Target.DeregistrationInProgress".to_owned(),
            )
        });
    }
    if let Some(forced) = &target.forced {
        return Some(forced.clone());
    }
    if now < target.registered_at + lifecycle.initial_s {
        return Some((
            "initial".to_owned(),
            "Elb.RegistrationInProgress".to_owned(),
        ));
    }
    Some(("healthy".to_owned(), String::new()))
}

fn target_health_xml(lifecycle: &Lifecycle, group: &str, now: u64) -> String {
    let mut members = String::new();
    for (id, target) in lifecycle.groups.get(group).into_iter().flatten() {
        let Some((state, reason)) = describe(lifecycle, target, now) else {
            continue;
        };
        let reason = if reason.is_empty() {
            String::new()
        } else {
            format!("<Reason>{reason}</Reason><Description>{reason} (local endpoint)</Description>")
        };
        members.push_str(&format!(
            "<member><Target><Id>{id}</Id><Port>80</Port></Target><HealthCheckPort>80</HealthCheckPort>\
             <TargetHealth><State>{state}</State>{reason}</TargetHealth></member>"
        ));
    }
    format!(
        "<DescribeTargetHealthResponse xmlns=\"http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/\">\
         <DescribeTargetHealthResult><TargetHealthDescriptions>{members}</TargetHealthDescriptions>\
         </DescribeTargetHealthResult><ResponseMetadata><RequestId>local</RequestId></ResponseMetadata>\
         </DescribeTargetHealthResponse>"
    )
}

fn empty_elb_response(action: &str) -> String {
    format!(
        "<{action}Response xmlns=\"http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/\">\
         <{action}Result/><ResponseMetadata><RequestId>local</RequestId></ResponseMetadata></{action}Response>"
    )
}

fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// `Targets.member.1.Id=i-1&Targets.member.2.Id=i-2` → `[i-1, i-2]`.
fn member_ids(params: &[(String, String)], prefix: &str, suffix: &str) -> Vec<String> {
    params
        .iter()
        .filter(|(k, _)| {
            k.strip_prefix(prefix)
                .and_then(|rest| rest.strip_suffix(suffix))
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .map(|(_, v)| v.clone())
        .collect()
}

fn comparable(params: &[(String, String)]) -> Vec<(String, String)> {
    let mut params = params.to_vec();
    params.sort();
    params
}

fn instance_ids(body: &Bytes) -> Vec<String> {
    let text = String::from_utf8_lossy(body);
    text.split("<instanceId>")
        .skip(1)
        .filter_map(|rest| {
            rest.split_once("</instanceId>")
                .map(|(id, _)| id.to_owned())
        })
        .collect()
}
