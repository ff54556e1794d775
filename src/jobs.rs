//! Jobs in memory, modelled on CIM_ConcreteJob. A job runs its work on a thread of its own;
//! the work reports progress read from the kernel and checks for stop requests.

use crate::error::Error;
use crate::service::{JobState, JobView};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::{info, warn};

/// Default TimeBeforeRemoval: 5 minutes.
pub const DEFAULT_TIME_BEFORE_REMOVAL: Duration = Duration::from_secs(300);

/// How a job's work ended other than by success.
#[derive(Debug)]
pub enum JobStop {
    /// Stopped on request: 4 Terminate or 5 Kill; the work has rolled back.
    Requested(u16),
    /// Failed; the error becomes ErrorCode/ErrorDescription and the state Exception.
    Failed(Error),
}

impl From<Error> for JobStop {
    fn from(e: Error) -> Self {
        JobStop::Failed(e)
    }
}

/// What a job is about.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub name: String,
    pub source: String,
    pub target: String,
    pub copy_type: u16,
    pub relationship: Option<String>,
    /// Why RequestStateChange cannot stop this job, if it cannot (the answer is 1).
    pub unstoppable: Option<String>,
}

struct Record {
    view: JobView,
    unstoppable: Option<String>,
    started: Option<Instant>,
    ended: Option<Instant>,
    stop: Arc<AtomicU16>,
}

#[derive(Default)]
struct Table {
    next: u64,
    jobs: BTreeMap<u64, Record>,
}

/// All jobs of this daemon.
#[derive(Clone, Default)]
pub struct JobManager {
    table: Arc<(Mutex<Table>, Condvar)>,
    time_before_removal: Option<Duration>,
}

/// Handed to a job's work.
pub struct JobCtx {
    id: u64,
    mgr: JobManager,
    stop: Arc<AtomicU16>,
}

impl JobCtx {
    pub fn id(&self) -> String {
        job_id(self.id)
    }

    /// PercentComplete, clamped to 0..=100.
    pub fn set_percent(&self, pct: u16) {
        self.mgr
            .update(self.id, |r| r.view.percent_complete = pct.min(100));
    }

    /// A stop requested through RequestStateChange (4 Terminate, 5 Kill), if any.
    pub fn stop_requested(&self) -> Option<u16> {
        match self.stop.load(Ordering::SeqCst) {
            0 => None,
            s => Some(s),
        }
    }

    /// Record the relationship the job created (shown in the job view).
    pub fn set_relationship(&self, rel: Option<String>) {
        self.mgr.update(self.id, |r| r.view.relationship = rel);
    }
}

fn job_id(n: u64) -> String {
    format!("job-{n}")
}

fn parse_id(id: &str) -> Option<u64> {
    id.strip_prefix("job-")?.parse().ok()
}

fn epoch_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn state_name(s: JobState) -> String {
    format!("{s:?}")
}

impl JobManager {
    pub fn new() -> JobManager {
        JobManager::default()
    }

    /// Override TimeBeforeRemoval (tests).
    pub fn with_time_before_removal(d: Duration) -> JobManager {
        JobManager {
            time_before_removal: Some(d),
            ..Default::default()
        }
    }

    fn tbr(&self) -> Duration {
        self.time_before_removal
            .unwrap_or(DEFAULT_TIME_BEFORE_REMOVAL)
    }

    fn update(&self, id: u64, f: impl FnOnce(&mut Record)) {
        let (lock, cv) = &*self.table;
        let mut t = lock.lock().unwrap();
        if let Some(r) = t.jobs.get_mut(&id) {
            f(r);
        }
        cv.notify_all();
    }

    /// Start `work` on a thread of its own; returns the job's InstanceID at once.
    pub fn submit<F>(&self, spec: JobSpec, work: F) -> String
    where
        F: FnOnce(&JobCtx) -> Result<(), JobStop> + Send + 'static,
    {
        let stop = Arc::new(AtomicU16::new(0));
        let id = {
            let mut t = self.table.0.lock().unwrap();
            t.next += 1;
            let n = t.next;
            let tbr = self.tbr();
            t.jobs.insert(
                n,
                Record {
                    view: JobView {
                        instance_id: job_id(n),
                        name: spec.name.clone(),
                        job_state: JobState::New.value(),
                        job_state_name: state_name(JobState::New),
                        percent_complete: 0,
                        time_submitted: epoch_secs(),
                        start_time: None,
                        elapsed_time: 0.0,
                        error_code: 0,
                        error_description: None,
                        delete_on_completion: true,
                        time_before_removal: tbr.as_secs(),
                        source: spec.source.clone(),
                        target: spec.target.clone(),
                        copy_type: spec.copy_type,
                        relationship: spec.relationship.clone(),
                    },
                    unstoppable: spec.unstoppable.clone(),
                    started: None,
                    ended: None,
                    stop: stop.clone(),
                },
            );
            n
        };
        info!(job = %job_id(id), name = %spec.name, "job submitted");
        let ctx = JobCtx {
            id,
            mgr: self.clone(),
            stop,
        };
        std::thread::Builder::new()
            .name(job_id(id))
            .spawn(move || {
                ctx.mgr.set_state(id, JobState::Starting, None);
                ctx.mgr.update(id, |r| {
                    r.started = Some(Instant::now());
                    r.view.start_time = Some(epoch_secs());
                });
                ctx.mgr.set_state(id, JobState::Running, None);
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&ctx)));
                let (state, err) = match result {
                    Ok(Ok(())) => (JobState::Completed, None),
                    Ok(Err(JobStop::Requested(5))) => (JobState::Killed, None),
                    Ok(Err(JobStop::Requested(_))) => (JobState::Terminated, None),
                    Ok(Err(JobStop::Failed(e))) => (JobState::Exception, Some(e)),
                    Err(_) => (
                        JobState::Exception,
                        Some(Error::Other("the job's work panicked".into())),
                    ),
                };
                if state == JobState::Completed {
                    ctx.set_percent(100);
                }
                ctx.mgr.set_state(id, state, err);
            })
            .expect("spawn job thread");
        job_id(id)
    }

    fn set_state(&self, id: u64, state: JobState, err: Option<Error>) {
        match &err {
            Some(e) => warn!(job = %job_id(id), state = ?state, error = %e, "job ended"),
            None => info!(job = %job_id(id), state = ?state, "job state"),
        }
        self.update(id, |r| {
            r.view.job_state = state.value();
            r.view.job_state_name = state_name(state);
            if state.is_final() {
                r.ended = Some(Instant::now());
            }
            if let Some(e) = err {
                r.view.error_code = e.return_code().value();
                r.view.error_description = Some(e.to_string());
            }
        });
    }

    fn purge(&self, t: &mut Table) {
        let tbr = self.tbr();
        t.jobs.retain(|_, r| {
            !(r.view.delete_on_completion && r.ended.is_some_and(|e| e.elapsed() >= tbr))
        });
    }

    fn view_of(r: &Record) -> JobView {
        let mut v = r.view.clone();
        if let Some(s) = r.started {
            let end = r.ended.unwrap_or_else(Instant::now);
            v.elapsed_time = end.duration_since(s).as_secs_f64();
        }
        v
    }

    pub fn list(&self) -> Vec<JobView> {
        let mut t = self.table.0.lock().unwrap();
        self.purge(&mut t);
        t.jobs.values().map(Self::view_of).collect()
    }

    pub fn get(&self, id: &str) -> Option<JobView> {
        let n = parse_id(id)?;
        let mut t = self.table.0.lock().unwrap();
        self.purge(&mut t);
        t.jobs.get(&n).map(Self::view_of)
    }

    /// Ask a running job to stop (4 Terminate, 5 Kill) and wait up to `wait` for it to end.
    /// Returns the job's final view, or an error naming why it could not be asked.
    pub fn request_stop(&self, id: &str, state: u16, wait: Duration) -> Result<JobView, Error> {
        if state != 4 && state != 5 {
            return Err(Error::Invalid(format!(
                "RequestedState {state} is not supported for jobs (4 Terminate, 5 Kill)"
            )));
        }
        let n = parse_id(id).ok_or_else(|| Error::NotFound(format!("no job {id:?}")))?;
        let (lock, cv) = &*self.table;
        let mut t = lock.lock().unwrap();
        let r = t
            .jobs
            .get(&n)
            .ok_or_else(|| Error::NotFound(format!("no job {id:?}")))?;
        if r.ended.is_some() {
            return Err(Error::Invalid(format!(
                "job {id} has already ended ({})",
                r.view.job_state_name
            )));
        }
        if let Some(why) = &r.unstoppable {
            return Err(Error::NotSupported(format!("job {id}: {why}")));
        }
        r.stop.store(state, Ordering::SeqCst);
        info!(job = %id, requested_state = state, "stop requested");
        let deadline = Instant::now() + wait;
        loop {
            let r = t.jobs.get(&n).expect("jobs are not purged while running");
            if r.ended.is_some() {
                return Ok(Self::view_of(r));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout(format!(
                    "job {id} did not stop within {} s; it is still stopping",
                    wait.as_secs()
                )));
            }
            t = cv.wait_timeout(t, deadline - now).unwrap().0;
        }
    }

    /// Wait until the job ends or `timeout` passes; returns its view (tests, CLI helpers).
    pub fn wait(&self, id: &str, timeout: Duration) -> Option<JobView> {
        let n = parse_id(id)?;
        let (lock, cv) = &*self.table;
        let mut t = lock.lock().unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            let r = t.jobs.get(&n)?;
            let now = Instant::now();
            if r.ended.is_some() || now >= deadline {
                return Some(Self::view_of(r));
            }
            t = cv.wait_timeout(t, deadline - now).unwrap().0;
        }
    }

    /// True while any job is not final.
    pub fn any_running(&self) -> bool {
        self.table
            .0
            .lock()
            .unwrap()
            .jobs
            .values()
            .any(|r| r.ended.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> JobSpec {
        JobSpec {
            name: "t".into(),
            source: "/backstores/block/a".into(),
            target: "/backstores/block/b".into(),
            copy_type: 3,
            relationship: None,
            unstoppable: None,
        }
    }

    #[test]
    fn completes_with_100_percent() {
        let m = JobManager::new();
        let id = m.submit(spec(), |ctx| {
            ctx.set_percent(40);
            Ok(())
        });
        let v = m.wait(&id, Duration::from_secs(5)).unwrap();
        assert_eq!(v.job_state, 7);
        assert_eq!(v.percent_complete, 100);
        assert_eq!(v.error_code, 0);
        assert!(v.start_time.is_some());
    }

    #[test]
    fn failure_is_exception_with_reason() {
        let m = JobManager::new();
        let id = m.submit(
            spec(),
            |_| Err(Error::kernel("resume", "dev", "EIO").into()),
        );
        let v = m.wait(&id, Duration::from_secs(5)).unwrap();
        assert_eq!(v.job_state, 10);
        assert_eq!(v.error_code, 4);
        assert!(v.error_description.unwrap().contains("EIO"));
    }

    #[test]
    fn terminate_and_kill_reach_their_states() {
        for (req, want) in [(4u16, 8u16), (5, 9)] {
            let m = JobManager::new();
            let id = m.submit(spec(), |ctx| loop {
                if let Some(s) = ctx.stop_requested() {
                    return Err(JobStop::Requested(s));
                }
                std::thread::sleep(Duration::from_millis(5));
            });
            let v = m.request_stop(&id, req, Duration::from_secs(5)).unwrap();
            assert_eq!(v.job_state, want);
            let again = m
                .request_stop(&id, req, Duration::from_secs(1))
                .unwrap_err();
            assert!(again.to_string().contains("already ended"), "{again}");
        }
    }

    #[test]
    fn removed_after_time_before_removal() {
        // (long enough that a loaded test machine still sees the job between its end and
        // its removal)
        let m = JobManager::with_time_before_removal(Duration::from_millis(1000));
        let id = m.submit(spec(), |_| Ok(()));
        m.wait(&id, Duration::from_secs(5)).unwrap();
        assert!(m.get(&id).is_some());
        std::thread::sleep(Duration::from_millis(1500));
        assert!(m.get(&id).is_none());
        assert!(m.list().is_empty());
    }

    #[test]
    fn unknown_job_and_bad_state() {
        let m = JobManager::new();
        assert!(matches!(
            m.request_stop("job-99", 4, Duration::from_secs(1)),
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            m.request_stop("job-1", 3, Duration::from_secs(1)),
            Err(Error::Invalid(_))
        ));
    }
}
