//! The service's side of the load balancer, found by tags: its blue and green target groups and
//! its product and pre-product routes (each a listener's default action or a rule).
//!
//! Cold, that takes four rounds of reads, the reads of each round side by side: the target
//! groups; their tags; the listener they name (`cutover:listener`) and its rules, beside the two
//! groups' health; the tags of that listener and its rules. A warm container remembers the two
//! target groups, the listeners it searched and the rules it found on them, and reads them all
//! again in one round: the groups, their tags and health, those listeners and every rule on them,
//! and the tags of the listeners and rules it remembers. Only a rule it has not seen before costs
//! a second round, for its tags. It so sees what a cold start sees there (a second rule newly
//! tagged as a route is refused as a cold start refuses it); anything that no longer matches
//! costs a full discovery, never a wrong move.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use aws_sdk_elasticloadbalancingv2::types as elbt;
use futures_util::future::try_join_all;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use tracing::info;

use super::convert::*;
use super::survey::Survey;
use super::*;

/// Where a warm container last found a service's slots, the listeners it searched for its routes
/// and what it found on them: only where to look, never what is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct KnownAlb {
    blue: String,
    green: String,
    searched: Searched,
}

/// The listeners searched for a service's routes, and every listener and rule found on them (the
/// candidates whose tags were read).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Searched {
    listeners: Vec<String>,
    candidates: Vec<String>,
}

/// Per service, where its slots and routes were last found; shared by the clones of one `Aws`.
pub(super) type KnownAlbs = Arc<Mutex<HashMap<String, KnownAlb>>>;

/// Tags by ARN.
pub(super) type Tags = HashMap<String, HashMap<String, String>>;

/// Reads of one kind in flight at once (tag batches, listeners, rules).
const READS_IN_FLIGHT: usize = 8;
/// DescribeTags pages read at once: 32 pages of 20 are 640 resources in one round.
const TAG_READS_IN_FLIGHT: usize = 32;
/// The largest page DescribeTargetGroups and DescribeRules give (ELBv2 API reference, PageSize).
const MAX_PAGE: i32 = 400;

/// Which listeners to look for routes on.
enum Listeners<'a> {
    /// These (named by the target groups, or remembered).
    Named(&'a [String]),
    /// Every listener of these load balancers.
    OfLoadBalancers(&'a [String]),
    /// These, read already.
    Read(Vec<Candidate>),
}

impl Aws {
    /// The service's slots (with their targets and their health) and routes.
    pub async fn alb(&self, service: &str) -> Result<Alb, Error> {
        self.slots_and_routes(service, true, async { None }).await
    }

    /// The service's slots and routes; with each slot's targets and their health when `health`
    /// (provision reads none). A cold container looks first on the `listener` its settings name,
    /// as soon as they are read (a warm one knows where to look).
    pub(super) async fn slots_and_routes(
        &self,
        service: &str,
        health: bool,
        listener: impl std::future::Future<Output = Option<String>> + Send,
    ) -> Result<Alb, Error> {
        let known = self
            .known_albs
            .lock()
            .ok()
            .and_then(|known| known.get(service).cloned());
        let found = match known {
            Some(known) => match self.alb_at(service, &known, health).await {
                Ok(found) => Some(found),
                Err(why) => {
                    info!(service, %why, "looking for the slots and routes again");
                    None
                }
            },
            None => None,
        };
        let (alb, searched) = match found {
            Some(found) => found,
            None => self.discover_alb(service, health, listener).await?,
        };
        if let Ok(mut known) = self.known_albs.lock() {
            let (blue, green) = (alb.blue.arn.clone(), alb.green.arn.clone());
            let known_alb = KnownAlb {
                blue,
                green,
                searched,
            };
            known.insert(service.to_owned(), known_alb);
        }
        Ok(alb)
    }

    /// The slots where they were last found, and the routes on the listeners searched then, in
    /// one round of reads (two when a rule is new there), every tag checked again; an error when
    /// a slot is gone or tagged otherwise, or the routes are not (or not only once) there.
    async fn alb_at(
        &self,
        service: &str,
        known: &KnownAlb,
        health: bool,
    ) -> Result<(Alb, Searched), Error> {
        let groups = [known.blue.clone(), known.green.clone()];
        let remembered = &known.searched.candidates;
        let ((groups, tags), candidates, remembered_tags, blue, green) = tokio::try_join!(
            async { tokio::try_join!(self.target_groups(Some(&groups)), self.elb_tags(&groups)) },
            self.candidates_on(Listeners::Named(&known.searched.listeners)),
            // A remembered rule deleted since fails its page (`RuleNotFound`): every candidate's
            // tags are then read after the rules, as a cold start reads them.
            async { Ok(self.elb_tags(remembered).await.ok()) },
            self.targets(&known.blue, health),
            self.targets(&known.green, health),
        )?;
        let (blue_group, green_group) = pick_slots(service, &groups, &tags)?;
        let read_beside: &[String] = match remembered_tags {
            Some(_) => remembered,
            None => &[],
        };
        let unread: Vec<String> = candidates
            .iter()
            .filter(|c| !read_beside.contains(&c.arn))
            .map(|c| c.arn.clone())
            .collect();
        let mut route_tags = remembered_tags.unwrap_or_default();
        if !unread.is_empty() {
            route_tags.extend(self.elb_tags(&unread).await?);
        }
        let (product, pre_product, searched) = routes_among(service, candidates, &route_tags)?;
        let mut targets =
            HashMap::from([(known.blue.as_str(), blue), (known.green.as_str(), green)]);
        let mut slot = |group: &elbt::TargetGroup, slot: Slot| {
            let arn = group.target_group_arn().unwrap_or_default();
            target_group(group, slot, targets.remove(arn).unwrap_or_default())
        };
        let (blue, green) = (slot(blue_group, Slot::Blue), slot(green_group, Slot::Green));
        let alb = Alb {
            blue,
            green,
            product,
            pre_product,
        };
        Ok((alb, searched))
    }

    /// Every target group; their tags beside the listeners of every load balancer they name
    /// (which of those are the service's is known only from the tags, and reading them after
    /// would cost a round); beside that, the routes on the listener the settings name, if they do;
    /// then the service's routes (when not found there) beside the slots' health; and what was
    /// searched for the routes.
    async fn discover_alb(
        &self,
        service: &str,
        health: bool,
        listener: impl std::future::Future<Output = Option<String>> + Send,
    ) -> Result<(Alb, Searched), Error> {
        // Both the survey and the search on the settings' listener wait on the settings: no
        // listener named, the survey reads every load balancer's listeners (one call each).
        let listener = futures_util::FutureExt::shared(listener);
        let named = listener.clone();
        let every_listener = async move { named.await.is_none() };
        let survey = async {
            match self.survey_read_ahead() {
                Some(survey) => Ok(survey),
                None => self.survey(every_listener).await,
            }
        };
        let on_the_settings_listener = async {
            let listener = listener.await?;
            let named = Listeners::Named(std::slice::from_ref(&listener));
            match self.routes_on(service, named).await {
                Ok(routes) => Some(routes),
                Err(why) => {
                    info!(service, %why, listener, "not on the listener the settings name");
                    None
                }
            }
        };
        // What the settings' listener held goes to the rest as soon as it is read; the slots'
        // health is read as soon as the survey says which groups they are.
        let (found, hinted) = tokio::sync::oneshot::channel();
        let on_the_settings_listener = async {
            let _ = found.send(on_the_settings_listener.await);
        };
        // Boxed: inline, these futures make every frame above them too large for a test
        // thread's stack.
        let ((), found) = tokio::join!(
            Box::pin(on_the_settings_listener),
            Box::pin(self.slots_then_routes(service, health, survey, hinted))
        );
        found
    }

    /// The slots from the survey, their health beside the routes found on the settings' listener
    /// (`hinted`), else searched for now.
    async fn slots_then_routes(
        &self,
        service: &str,
        health: bool,
        survey: impl std::future::Future<Output = Result<Survey, Error>>,
        hinted: tokio::sync::oneshot::Receiver<Option<(Route, Route, Searched)>>,
    ) -> Result<(Alb, Searched), Error> {
        let Survey {
            groups,
            tags,
            listeners,
            ..
        } = survey.await?;
        let (blue, green) = pick_slots(service, &groups, &tags)?;
        let arn = |g: &'_ elbt::TargetGroup| g.target_group_arn().unwrap_or_default().to_owned();
        let mut named: Vec<String> = [blue, green]
            .iter()
            .filter_map(|g| tags.get(&arn(g))?.get(TAG_LISTENER).cloned())
            .collect();
        named.sort();
        named.dedup();
        let mut load_balancers: Vec<String> = blue
            .load_balancer_arns()
            .iter()
            .chain(green.load_balancer_arns())
            .cloned()
            .collect();
        load_balancers.sort();
        load_balancers.dedup();
        let (blue_arn, green_arn) = (arn(blue), arn(green));
        // A listener the groups name spares reading the rules of every listener; else the
        // listeners read beside the tags (when that read worked) are the ones searched.
        let read = listeners.map(|listeners| {
            listeners
                .into_iter()
                .filter(|(load_balancer, _)| load_balancers.contains(load_balancer))
                .map(|(_, listener)| listener)
                .collect()
        });
        let routes = async {
            match hinted.await.ok().flatten() {
                Some(routes) => Ok(routes),
                None => {
                    self.find_routes(service, &named, &load_balancers, read)
                        .await
                }
            }
        };
        let ((product, pre_product, searched), blue_targets, green_targets) = tokio::try_join!(
            Box::pin(routes),
            self.targets(&blue_arn, health),
            self.targets(&green_arn, health),
        )?;
        let alb = Alb {
            blue: target_group(blue, Slot::Blue, blue_targets),
            green: target_group(green, Slot::Green, green_targets),
            product,
            pre_product,
        };
        Ok((alb, searched))
    }

    /// On the listener the target groups name, if they name one and the routes are there; else
    /// on every listener of their load balancers.
    async fn find_routes(
        &self,
        service: &str,
        named: &[String],
        load_balancers: &[String],
        read: Option<Vec<Candidate>>,
    ) -> Result<(Route, Route, Searched), Error> {
        if !named.is_empty() {
            match self.routes_on(service, Listeners::Named(named)).await {
                Ok(routes) => return Ok(routes),
                Err(why) => info!(
                    service,
                    %why,
                    "not on the listener its target groups name; looking on every listener of the load balancer"
                ),
            }
        }
        let listeners = match read {
            Some(read) => Listeners::Read(read),
            None => Listeners::OfLoadBalancers(load_balancers),
        };
        self.routes_on(service, listeners).await
    }

    /// The service's product and pre-product routes among these listeners and their rules, and
    /// what was searched.
    async fn routes_on(
        &self,
        service: &str,
        listeners: Listeners<'_>,
    ) -> Result<(Route, Route, Searched), Error> {
        let candidates = self.candidates_on(listeners).await?;
        let arns: Vec<String> = candidates.iter().map(|c| c.arn.clone()).collect();
        let tags = self.elb_tags(&arns).await?;
        routes_among(service, candidates, &tags)
    }

    /// These listeners and every rule on them.
    async fn candidates_on(&self, listeners: Listeners<'_>) -> Result<Vec<Candidate>, Error> {
        match listeners {
            Listeners::Named(arns) => {
                let (listeners, rules) = tokio::try_join!(
                    self.listeners(Listeners::Named(arns)),
                    try_join_all(arns.iter().map(|arn| self.rules(arn)))
                )?;
                Ok(listeners
                    .into_iter()
                    .chain(rules.into_iter().flatten())
                    .collect())
            }
            Listeners::OfLoadBalancers(load_balancers) => {
                let listeners = self
                    .listeners(Listeners::OfLoadBalancers(load_balancers))
                    .await?;
                self.with_rules(listeners).await
            }
            Listeners::Read(listeners) => self.with_rules(listeners).await,
        }
    }

    /// These listeners and the rules of each.
    async fn with_rules(&self, listeners: Vec<Candidate>) -> Result<Vec<Candidate>, Error> {
        let reads: Vec<_> = listeners.iter().map(|l| self.rules(&l.arn)).collect();
        let rules: Vec<_> = bounded(reads).await?;
        Ok(listeners
            .into_iter()
            .chain(rules.into_iter().flatten())
            .collect())
    }

    /// These target groups (all of them when `None`), every page.
    pub(super) async fn target_groups(
        &self,
        arns: Option<&[String]>,
    ) -> Result<Vec<elbt::TargetGroup>, Error> {
        let mut groups = Vec::new();
        let mut marker = None;
        loop {
            let page = self
                .elb
                .describe_target_groups()
                .set_target_group_arns(arns.map(<[String]>::to_vec))
                .set_page_size(arns.is_none().then_some(MAX_PAGE))
                .set_marker(marker)
                .send()
                .await
                .map_err(aws_error("DescribeTargetGroups"))?;
            groups.extend(page.target_groups().iter().cloned());
            marker = page.next_marker().map(str::to_owned);
            if marker.is_none() {
                return Ok(groups);
            }
        }
    }

    /// A slot's targets with their health; none read when `health` is false.
    async fn targets(&self, group_arn: &str, health: bool) -> Result<Vec<Target>, Error> {
        if !health {
            return Ok(Vec::new());
        }
        let out = self
            .elb
            .describe_target_health()
            .target_group_arn(group_arn)
            .send()
            .await
            .map_err(aws_error("DescribeTargetHealth"))?;
        Ok(out
            .target_health_descriptions()
            .iter()
            .filter_map(target_from_sdk)
            .collect())
    }

    /// Listeners as route candidates (their default actions).
    async fn listeners(&self, which: Listeners<'_>) -> Result<Vec<Candidate>, Error> {
        let pages = match which {
            Listeners::Named([]) | Listeners::Read(_) => Vec::new(),
            Listeners::Named(arns) => vec![self
                .elb
                .describe_listeners()
                .set_listener_arns(Some(arns.to_vec()))
                .send()
                .await
                .map_err(aws_error("DescribeListeners"))?],
            Listeners::OfLoadBalancers(load_balancers) => {
                let listeners = self.listeners_by_load_balancer(load_balancers).await?;
                return Ok(listeners
                    .into_iter()
                    .map(|(_, listener)| listener)
                    .collect());
            }
        };
        Ok(pages
            .iter()
            .flat_map(|page| page.listeners())
            .filter_map(listener_candidate)
            .collect())
    }

    /// The non-default rules of a listener, every page.
    async fn rules(&self, listener_arn: &str) -> Result<Vec<Candidate>, Error> {
        let mut candidates = Vec::new();
        let mut marker = None;
        loop {
            let page = self
                .elb
                .describe_rules()
                .listener_arn(listener_arn)
                .page_size(MAX_PAGE)
                .set_marker(marker)
                .send()
                .await
                .map_err(aws_error("DescribeRules"))?;
            candidates.extend(page.rules().iter().filter_map(rule_candidate));
            marker = page.next_marker().map(str::to_owned);
            if marker.is_none() {
                return Ok(candidates);
            }
        }
    }

    /// Tags of these ELB resources, batches side by side.
    pub(super) async fn elb_tags(&self, arns: &[String]) -> Result<Tags, Error> {
        let reads: Vec<_> = arns
            .chunks(DESCRIBE_TAGS_BATCH)
            .map(|batch| {
                self.elb
                    .describe_tags()
                    .set_resource_arns(Some(batch.to_vec()))
                    .send()
            })
            .collect();
        // All at once up to a point: a cold start's tags are one round, as many pages as there
        // are (a hundred services' groups are ten); the SDK rides out any throttling.
        let pages: Vec<_> = stream::iter(reads)
            .buffered(TAG_READS_IN_FLIGHT)
            .try_collect::<Vec<_>>()
            .await
            .map_err(aws_error("DescribeTags"))?;
        let mut tags = HashMap::new();
        for description in pages.iter().flat_map(|page| page.tag_descriptions()) {
            let Some(arn) = description.resource_arn() else {
                continue;
            };
            let pairs = description
                .tags()
                .iter()
                .filter_map(|t| {
                    Some((
                        t.key()?.to_owned(),
                        t.value().unwrap_or_default().to_owned(),
                    ))
                })
                .collect();
            tags.insert(arn.to_owned(), pairs);
        }
        Ok(tags)
    }
}

/// These reads, at most `READS_IN_FLIGHT` at once, their answers in order. (The futures are
/// made before they are streamed: a stream that makes them with a borrowing closure is not
/// `Send` for every lifetime, which the port's futures must be.)
pub(super) async fn bounded<F, T, E>(reads: Vec<F>) -> Result<Vec<T>, E>
where
    F: std::future::Future<Output = Result<T, E>>,
{
    stream::iter(reads)
        .buffered(READS_IN_FLIGHT)
        .try_collect()
        .await
}

/// The service's blue and green target groups among `groups`, by their tags: exactly one each.
fn pick_slots<'g>(
    service: &str,
    groups: &'g [elbt::TargetGroup],
    tags: &Tags,
) -> Result<(&'g elbt::TargetGroup, &'g elbt::TargetGroup), Error> {
    let mut slots: BTreeMap<Slot, Vec<&elbt::TargetGroup>> = BTreeMap::new();
    for group in groups {
        let Some(tags) = group.target_group_arn().and_then(|arn| tags.get(arn)) else {
            continue;
        };
        if tags.get(TAG_SERVICE).map(String::as_str) != Some(service) {
            continue;
        }
        match tags.get(TAG_SLOT).and_then(|s| Slot::parse(s)) {
            Some(slot) => slots.entry(slot).or_default().push(group),
            None => {
                return Err(Error::World(format!(
                    "target group {} is tagged {TAG_SERVICE}={service} but its {TAG_SLOT} tag is not blue or green",
                    group.target_group_name().unwrap_or_default()
                )))
            }
        }
    }
    let mut pick = |slot: Slot| -> Result<&'g elbt::TargetGroup, Error> {
        match slots.remove(&slot).unwrap_or_default().as_slice() {
            [one] => Ok(*one),
            [] => Err(Error::World(format!(
                "service {service} has no target group tagged {TAG_SERVICE}={service}, {TAG_SLOT}={slot}"
            ))),
            many => Err(Error::World(format!(
                "service {service} has {} target groups tagged {TAG_SLOT}={slot}: {}",
                many.len(),
                many.iter().filter_map(|g| g.target_group_name()).collect::<Vec<_>>().join(", ")
            ))),
        }
    };
    Ok((pick(Slot::Blue)?, pick(Slot::Green)?))
}

/// The service's routes among these candidates (listeners and rules), by their tags, and what was
/// searched.
fn routes_among(
    service: &str,
    candidates: Vec<Candidate>,
    tags: &Tags,
) -> Result<(Route, Route, Searched), Error> {
    let searched = Searched {
        listeners: candidates
            .iter()
            .filter(|c| c.is_listener_default)
            .map(|c| c.arn.clone())
            .collect(),
        candidates: candidates.iter().map(|c| c.arn.clone()).collect(),
    };
    let (product, pre_product) = pick_routes(service, candidates, tags)?;
    Ok((product, pre_product, searched))
}

/// The service's product and pre-product routes among `candidates`, by their tags: exactly one
/// each.
fn pick_routes(
    service: &str,
    candidates: Vec<Candidate>,
    tags: &Tags,
) -> Result<(Route, Route), Error> {
    let mut found: HashMap<&'static str, Vec<Route>> = HashMap::new();
    for candidate in candidates {
        let Some(tags) = tags.get(&candidate.arn) else {
            continue;
        };
        if let Some(route) = route_of_service(candidate, tags, service)? {
            found.entry(route.role.as_str()).or_default().push(route);
        }
    }
    let mut pick = |role: RouteRole| -> Result<Route, Error> {
        let mut routes = found.remove(role.as_str()).unwrap_or_default();
        match routes.len() {
            1 => Ok(routes.remove(0)),
            0 => Err(Error::World(format!(
                "service {service} has no listener rule (or listener) tagged {TAG_SERVICE}={service}, {TAG_ROUTE}={} on the load balancer of its target groups",
                role.as_str()
            ))),
            n => Err(Error::World(format!(
                "service {service} has {n} routes tagged {TAG_ROUTE}={}: {}",
                role.as_str(),
                routes.iter().map(|r| r.arn.as_str()).collect::<Vec<_>>().join(", ")
            ))),
        }
    };
    Ok((pick(RouteRole::Product)?, pick(RouteRole::PreProduct)?))
}

fn target_group(group: &elbt::TargetGroup, slot: Slot, targets: Vec<Target>) -> TargetGroup {
    TargetGroup {
        arn: group.target_group_arn().unwrap_or_default().to_owned(),
        name: group.target_group_name().unwrap_or_default().to_owned(),
        slot,
        targets,
    }
}

/// A non-default rule as a route candidate (a listener's default rule is the listener's).
pub(super) fn listener_candidate(listener: &elbt::Listener) -> Option<Candidate> {
    Some(Candidate {
        arn: listener.listener_arn()?.to_owned(),
        is_listener_default: true,
        actions: listener.default_actions().to_vec(),
        conditions: Vec::new(),
    })
}

fn rule_candidate(rule: &elbt::Rule) -> Option<Candidate> {
    let arn = rule
        .rule_arn()
        .filter(|_| rule.is_default() != Some(true))?;
    Some(Candidate {
        arn: arn.to_owned(),
        is_listener_default: false,
        actions: rule.actions().to_vec(),
        conditions: rule
            .conditions()
            .iter()
            .flat_map(describe_condition)
            .collect(),
    })
}

fn target_from_sdk(description: &elbt::TargetHealthDescription) -> Option<Target> {
    let id = description.target()?.id()?.to_owned();
    let health = description.target_health();
    let reason = health
        .and_then(|h| h.description().or(h.reason().map(|r| r.as_str())))
        .map(str::to_owned);
    let health = match health.and_then(|h| h.state()) {
        Some(elbt::TargetHealthStateEnum::Healthy) => Health::Healthy,
        Some(elbt::TargetHealthStateEnum::Initial) => Health::Initial,
        Some(elbt::TargetHealthStateEnum::Unhealthy) => Health::Unhealthy,
        Some(elbt::TargetHealthStateEnum::Unused) => Health::Unused,
        Some(
            elbt::TargetHealthStateEnum::Draining | elbt::TargetHealthStateEnum::UnhealthyDraining,
        ) => Health::Draining,
        _ => Health::Unavailable,
    };
    Some(Target { id, health, reason })
}
