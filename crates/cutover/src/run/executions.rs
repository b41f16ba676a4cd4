//! What CodePipeline says of the executions a plan depends on.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::event::default_pipeline;
use crate::names::ReleaseId;
use crate::world::{Execution, Stage};

impl<C: Cloud> App<C> {
    /// What CodePipeline says of the executions the plan depends on (one more read, only when
    /// there is one to ask about): for a job that would take the service (provision,
    /// register-target), the execution holding its lock when another release holds it; for a
    /// cleanup of expired fleets, each pre-product fleet's execution.
    pub(super) async fn with_executions(
        &self,
        work: &Work<'_>,
        mut seen: Seen,
    ) -> Result<Seen, Error> {
        match work {
            Work::Job {
                function: Function::Provision | Function::RegisterTarget,
                request,
            } => {
                if let Some(lock) = seen
                    .alb
                    .product
                    .lock
                    .as_ref()
                    .filter(|lock| lock.release != request.release.as_str())
                {
                    let holder = self
                        .cloud
                        .execution(&request.pipeline, &lock.release)
                        .await?;
                    seen.lock_holder = Some(holder);
                }
            }
            Work::Job {
                function: Function::Cleanup,
                request,
            } => {
                seen.executions = self
                    .pre_product_executions(&request.pipeline, &seen)
                    .await?;
            }
            Work::Cleanup {
                service,
                scope: CleanupScope::Expired,
            } => {
                let pipeline = default_pipeline(service);
                seen.executions = self.pre_product_executions(&pipeline, &seen).await?;
            }
            _ => {}
        }
        Ok(seen)
    }

    async fn pre_product_executions(
        &self,
        pipeline: &str,
        seen: &Seen,
    ) -> Result<BTreeMap<String, Execution>, Error> {
        // FLEET=asg: also a pre-product group that launched nothing, and a template whose
        // release made no group.
        let empty_groups = seen
            .groups
            .iter()
            .filter(|g| g.stage == Some(Stage::PreProduct) && g.members.is_empty())
            .filter_map(|g| g.release.as_ref());
        let lone_templates = seen
            .templates
            .iter()
            .filter(|t| !seen.groups.iter().any(|g| g.name == t.name))
            .filter_map(|t| t.release.as_ref());
        let releases: BTreeSet<&str> = seen
            .instances
            .iter()
            .filter(|i| i.stage == Some(Stage::PreProduct) && !i.state.is_dead())
            .filter_map(|i| i.release.as_ref())
            .chain(empty_groups)
            .chain(lone_templates)
            .map(ReleaseId::as_str)
            .collect();
        let reads = releases.into_iter().map(|release| async move {
            let execution = self.cloud.execution(pipeline, release).await?;
            Ok::<_, Error>((release.to_owned(), execution))
        });
        futures_util::future::try_join_all(reads)
            .await
            .map(|answers| answers.into_iter().collect())
    }
}
