//! The model's CodePipeline: executions queued in the Release stage (QUEUED mode), each running
//! provision, register-target, a manual approval and switch-listener as jobs; a continuation is a
//! job of its own. CodePipeline takes the first result a job is given (a later one is refused with
//! `InvalidJobStateException`); a failed job fails its execution, whose FAILED event cleans up
//! and lets the next queued execution in. Lambda delivers an asynchronous event at least once and
//! retries an invocation that ended at its timeout twice; after that, the job times out.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum JobAction {
    Provision,
    Register,
    Switch(Strategy),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
    Queued,
    InProgress,
    AwaitingApproval,
    Succeeded,
    Failed,
}

impl Status {
    fn is_active(self) -> bool {
        matches!(self, Status::InProgress | Status::AwaitingApproval)
    }
}

impl PipelineRun {
    pub(super) fn waits_for_approval(&self) -> bool {
        self.status == Status::AwaitingApproval
    }
}

#[derive(Debug)]
pub(super) struct PipelineRun {
    pub(super) release: String,
    pub(super) strategy: Strategy,
    pub(super) status: Status,
}

#[derive(Debug, Default)]
pub(super) struct JobRecord {
    pub(super) release: String,
    /// Results the functions sent; CodePipeline kept the first.
    pub(super) results: u32,
    /// Lambda gave up on a delivery of it: every attempt ended at the function's timeout.
    pub(super) given_up: bool,
    /// CodePipeline failed it when its own timeout passed without a result.
    pub(super) timed_out: bool,
}

/// Lambda's attempts at one asynchronous event: the first and two retries.
const LAMBDA_ATTEMPTS: u32 = 3;

impl Model {
    /// An upload: a new execution, queued behind the one in the stage.
    pub(super) fn enqueue(&mut self, gradual: bool) {
        self.releases += 1;
        let strategy = if gradual {
            "linear:50:1"
        } else {
            "all-at-once"
        };
        self.runs.push(PipelineRun {
            release: format!("r{}", self.releases),
            strategy: Strategy::parse(strategy).unwrap(),
            status: Status::Queued,
        });
        self.start_next();
    }

    fn start_next(&mut self) {
        if self.runs.iter().any(|r| r.status.is_active()) {
            return;
        }
        if let Some(run) = self.runs.iter_mut().find(|r| r.status == Status::Queued) {
            run.status = Status::InProgress;
            let release = release(&run.release);
            self.start_job(JobAction::Provision, release, None);
        }
    }

    pub(super) fn start_job(
        &mut self,
        action: JobAction,
        release: ReleaseId,
        progress: Option<Progress>,
    ) {
        let id = self.new_job(&release);
        self.start(Kind::Job {
            id,
            action,
            release,
            progress,
        });
    }

    /// A job CodePipeline creates for `release` (a continuation is a job of its own).
    fn new_job(&mut self, release: &ReleaseId) -> u32 {
        let id = self.jobs.len() as u32 + 1;
        self.jobs.insert(
            id,
            JobRecord {
                release: release.to_string(),
                ..JobRecord::default()
            },
        );
        id
    }

    /// The manual approval of the execution waiting for it.
    pub(super) fn approval(&mut self, approve: bool) {
        let Some(run) = self
            .runs
            .iter_mut()
            .find(|r| r.status == Status::AwaitingApproval)
        else {
            return;
        };
        let release = release(&run.release);
        if approve {
            run.status = Status::InProgress;
            let strategy = run.strategy;
            self.start_job(JobAction::Switch(strategy), release, None);
        } else {
            self.log.push(format!("approval of {release} rejected"));
            self.execution_failed(&release);
        }
    }

    /// A job invocation's result, as CodePipeline takes it.
    pub(super) fn acknowledge(
        &mut self,
        id: u32,
        action: JobAction,
        release: ReleaseId,
        progress: Option<Progress>,
        next: Next,
    ) {
        let record = self.jobs.get_mut(&id).expect("a job the model started");
        record.results += 1;
        if record.results > 1 || record.timed_out {
            self.log.push(format!("  job {id}: already acknowledged"));
            return;
        }
        self.log.push(format!("  job {id}: {next:?}"));
        match next {
            Next::Done(_) => self.job_succeeded(action, &release),
            Next::Wait { phase, hold_from } => {
                let mut progress = progress
                    .filter(|p| p.phase == phase)
                    .unwrap_or_else(|| Progress::new(phase, self.now));
                if hold_from.is_some() {
                    progress.stepped_at = hold_from;
                }
                self.continuation(action, release, Some(progress));
            }
            // The converge loop's own bound: what it had not finished, the next job does.
            Next::Again => self.continuation(action, release, progress),
            Next::Abort(_) => self.execution_failed(&release),
        }
    }

    fn continuation(&mut self, action: JobAction, release: ReleaseId, progress: Option<Progress>) {
        let id = self.new_job(&release);
        self.continuations.push((
            self.now + 60,
            Kind::Job {
                id,
                action,
                release,
                progress,
            },
        ));
    }

    fn job_succeeded(&mut self, action: JobAction, release: &ReleaseId) {
        let Some(run) = self.run_mut(release) else {
            return;
        };
        if run.status != Status::InProgress {
            return;
        }
        match action {
            JobAction::Provision => self.start_job(JobAction::Register, release.clone(), None),
            JobAction::Register => run.status = Status::AwaitingApproval,
            JobAction::Switch(_) => {
                run.status = Status::Succeeded;
                self.start_next();
            }
        }
    }

    /// The execution fails: its FAILED event, and the next queued execution starts at once.
    fn execution_failed(&mut self, release: &ReleaseId) {
        let Some(run) = self.run_mut(release) else {
            return;
        };
        if !run.status.is_active() {
            return;
        }
        run.status = Status::Failed;
        self.start(Kind::Failed(release.clone()));
        self.start_next();
    }

    fn run_mut(&mut self, release: &ReleaseId) -> Option<&mut PipelineRun> {
        self.runs.iter_mut().find(|r| r.release == release.as_str())
    }

    /// An invocation Lambda ended at its timeout: Lambda retries an asynchronous event (a job,
    /// an EventBridge event) twice, then gives up; a rollback by hand was a synchronous call,
    /// which the person sends again or not.
    pub(super) fn timed_out(&mut self, invocation: Invocation) {
        if matches!(invocation.kind, Kind::Rollback { alarm_at: None, .. }) {
            return;
        }
        if invocation.attempt < LAMBDA_ATTEMPTS {
            self.start_attempt(invocation.kind, invocation.attempt + 1);
        } else if let Kind::Job { id, .. } = invocation.kind {
            if let Some(record) = self.jobs.get_mut(&id) {
                record.given_up = true;
            }
        }
    }

    /// Lambda delivers the same job event again.
    pub(super) fn duplicate(&mut self, kind: Kind) {
        if matches!(kind, Kind::Job { .. }) {
            self.start(kind);
        }
    }

    /// Nothing in flight: CodePipeline fails the jobs no invocation will answer any more.
    /// Whether anything was failed.
    pub(super) fn time_out_jobs(&mut self) -> bool {
        let silent: Vec<(u32, ReleaseId)> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.results == 0 && !j.timed_out)
            .map(|(id, j)| (*id, release(&j.release)))
            .collect();
        for (id, release) in &silent {
            self.jobs.get_mut(id).expect("a job").timed_out = true;
            self.log.push(format!("job {id} timed out"));
            self.execution_failed(release);
        }
        !silent.is_empty()
    }

    /// What CodePipeline says of the execution holding the lock, when it is another release's.
    pub(super) fn lock_holder(&self, release: &ReleaseId) -> Option<Execution> {
        let lock = self.alb.product.lock.as_ref()?;
        (lock.release != release.as_str()).then(|| self.execution_of(&lock.release))
    }

    /// What CodePipeline says of every execution (the sweep asks about those it needs).
    pub(super) fn executions(&self) -> BTreeMap<String, Execution> {
        self.runs
            .iter()
            .map(|r| (r.release.clone(), self.execution_of(&r.release)))
            .collect()
    }

    fn execution_of(&self, release: &str) -> Execution {
        match self
            .runs
            .iter()
            .find(|r| r.release == release)
            .map(|r| r.status)
        {
            // A queued execution is in progress, waiting for the stage.
            Some(status @ (Status::Succeeded | Status::Failed)) => {
                Execution::Ended(format!("{status:?}"))
            }
            Some(_) => Execution::Running("InProgress".into()),
            None => Execution::Ended("PipelineExecutionNotFoundException".into()),
        }
    }

    /// A release is in the stage or about to be: no second release may start beside it.
    pub(super) fn releasing(&self) -> bool {
        self.runs.iter().any(|r| r.status.is_active())
            || self
                .inflight
                .iter()
                .map(|i| &i.kind)
                .chain(self.continuations.iter().map(|(_, k)| k))
                .any(|k| matches!(k, Kind::Job { .. }))
    }

    /// Once everything has settled: every execution ended, and every job was given a result
    /// unless Lambda gave up on it.
    pub(super) fn check_pipeline(&self) -> Result<(), String> {
        if let Some(run) = self
            .runs
            .iter()
            .find(|r| !matches!(r.status, Status::Succeeded | Status::Failed))
        {
            return Err(format!(
                "execution of {} never ended: {:?}",
                run.release, run.status
            ));
        }
        if let Some((id, job)) = self
            .jobs
            .iter()
            .find(|(_, j)| j.results == 0 && !j.given_up)
        {
            return Err(format!(
                "job {id} of {} was never acknowledged",
                job.release
            ));
        }
        Ok(())
    }
}
