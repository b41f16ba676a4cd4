//! How an invocation ended, and how that is told: to CodePipeline and to the team.

use super::*;

/// How one job invocation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    Succeeded {
        summary: String,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        output_variables: BTreeMap<String, String>,
        steps: Vec<String>,
        notes: Vec<String>,
    },
    Continuing {
        waiting_for: Phase,
        progress: Progress,
        steps: Vec<String>,
    },
    Failed {
        message: String,
        steps: Vec<String>,
    },
    /// A dry run: what the function would do, changed nothing and told no one.
    DryRun {
        summary: String,
        /// Why the function would refuse, when it would.
        #[serde(skip_serializing_if = "Option::is_none")]
        would_fail: Option<String>,
        steps: Vec<String>,
        notes: Vec<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        plan: Option<Plan>,
    },
}

/// What CodePipeline is told about an outcome.
pub(super) fn acknowledgement(outcome: &Outcome) -> Acknowledgement {
    let success =
        |summary: String, continuation_token, output_variables| Acknowledgement::Success {
            summary,
            continuation_token,
            output_variables,
        };
    match outcome {
        Outcome::Succeeded {
            summary,
            output_variables,
            ..
        } => success(summary.clone(), None, output_variables.clone()),
        Outcome::DryRun { summary, .. } => success(summary.clone(), None, BTreeMap::new()),
        Outcome::Continuing {
            waiting_for,
            progress,
            ..
        } => success(
            format!("waiting for {waiting_for}"),
            Some(progress.encode()),
            BTreeMap::new(),
        ),
        Outcome::Failed { message, .. } => Acknowledgement::Failure {
            message: message.clone(),
        },
    }
}

/// How work that no pipeline job waits on ended (a cleanup sweep, a rollback): like a job, but
/// with no output variables and no stage to re-run; a wait is said by `waiting`.
pub(super) fn settled_outside_a_job(
    stop: Stop,
    steps: Vec<String>,
    waiting: impl FnOnce(Phase, Vec<String>) -> Outcome,
) -> Outcome {
    match stop {
        Stop::Done {
            summary,
            notes,
            outputs,
        } => Outcome::Succeeded {
            summary,
            output_variables: outputs,
            steps,
            notes,
        },
        Stop::Waiting { phase, .. } => waiting(phase, steps),
        Stop::Refused(message) | Stop::Aborted(message) => Outcome::Failed { message, steps },
        Stop::Broke(error) => Outcome::Failed {
            message: error.to_string(),
            steps,
        },
        Stop::Planned(planned) => dry_run(planned),
    }
}

/// The plan as a dry run reports it: the steps it would take, or why it would refuse.
pub(super) fn dry_run(planned: Planned) -> Outcome {
    match planned {
        Ok(plan) => Outcome::DryRun {
            summary: format!(
                "dry run: would take {} step(s); nothing changed",
                plan.steps.len()
            ),
            would_fail: None,
            steps: plan.steps.iter().map(Step::describe).collect(),
            notes: plan.notes.clone(),
            plan: Some(plan),
        },
        Err(refusal) => Outcome::DryRun {
            summary: format!("dry run: would fail: {refusal}"),
            would_fail: Some(refusal.0),
            steps: Vec::new(),
            notes: Vec::new(),
            plan: None,
        },
    }
}
