//! The first two rounds of a cold discovery need no service: every target group, then their
//! tags beside every listener of the load balancers they name. An alarm's rollback reads them
//! ahead, beside the settings that say which service the alarm is for.

use std::sync::{Arc, Mutex};

use tracing::info;

use super::alb::{bounded, listener_candidate, Tags};
use super::convert::*;
use super::*;

/// What the survey read, and when. `listeners` is `None` when they were not read (the settings
/// name the listener) or that read failed: the routes are then looked for on the listeners read
/// later.
pub(super) struct Survey {
    at: std::time::Instant,
    pub(super) groups: Vec<aws_sdk_elasticloadbalancingv2::types::TargetGroup>,
    pub(super) tags: Tags,
    pub(super) listeners: Option<Vec<(String, Candidate)>>,
}

/// A survey read ahead is used once, by a discovery that starts within this long of it (the same
/// invocation), never later.
const SURVEY_FRESH_FOR: std::time::Duration = std::time::Duration::from_secs(10);

impl std::fmt::Debug for Survey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Survey")
            .field("target_groups", &self.groups.len())
            .finish_non_exhaustive()
    }
}

/// The survey read ahead by this container, if any; shared by the clones of one `Aws`.
pub(super) type Surveyed = Arc<Mutex<Option<Survey>>>;

impl Aws {
    /// Every target group; then their tags beside the listeners of every load balancer they name
    /// (one call each), unless `every_listener` says the settings name the listener to look on.
    pub(super) async fn survey(
        &self,
        every_listener: impl std::future::Future<Output = bool>,
    ) -> Result<Survey, Error> {
        let groups = self.target_groups(None).await?;
        let arns: Vec<String> = groups
            .iter()
            .filter_map(|g| g.target_group_arn().map(str::to_owned))
            .collect();
        let mut every_load_balancer: Vec<String> = groups
            .iter()
            .flat_map(|g| g.load_balancer_arns().iter().cloned())
            .collect();
        every_load_balancer.sort();
        every_load_balancer.dedup();
        // Boxed: inline, these futures make every frame above them too large for a test
        // thread's stack.
        let listeners = async {
            match every_listener.await {
                true => self
                    .listeners_by_load_balancer(&every_load_balancer)
                    .await
                    .ok(),
                false => None,
            }
        };
        let (tags, listeners) = tokio::join!(Box::pin(self.elb_tags(&arns)), Box::pin(listeners));
        Ok(Survey {
            at: std::time::Instant::now(),
            groups,
            tags: tags?,
            listeners,
        })
    }

    /// A cold container reads the survey ahead (an alarm's rollback, beside the settings that
    /// name its service); a warm one looks where it found the slots before, and reads nothing.
    pub(super) async fn survey_ahead(&self) {
        let cold = self.known_albs.lock().is_ok_and(|known| known.is_empty());
        if !cold {
            return;
        }
        match Box::pin(self.survey(async { true })).await {
            Ok(survey) => {
                if let Ok(mut surveyed) = self.surveyed.lock() {
                    *surveyed = Some(survey);
                }
            }
            Err(why) => info!(%why, "the survey read ahead failed; discovery reads it again"),
        }
    }

    /// The survey read ahead, once, while it is fresh.
    pub(super) fn survey_read_ahead(&self) -> Option<Survey> {
        self.surveyed
            .lock()
            .ok()
            .and_then(|mut surveyed| surveyed.take())
            .filter(|survey| survey.at.elapsed() < SURVEY_FRESH_FOR)
    }

    /// Every listener of these load balancers as route candidates, with its load balancer.
    pub(super) async fn listeners_by_load_balancer(
        &self,
        load_balancers: &[String],
    ) -> Result<Vec<(String, Candidate)>, Error> {
        let reads: Vec<_> = load_balancers
            .iter()
            .map(|load_balancer| {
                self.elb
                    .describe_listeners()
                    .load_balancer_arn(load_balancer)
                    .send()
            })
            .collect();
        let pages = bounded(reads)
            .await
            .map_err(aws_error("DescribeListeners"))?;
        Ok(pages
            .iter()
            .flat_map(|page| page.listeners())
            .filter_map(|listener| {
                Some((
                    listener.load_balancer_arn()?.to_owned(),
                    listener_candidate(listener)?,
                ))
            })
            .collect())
    }
}
