//! Stall detection for `/healthz`: when each task of the watch started the
//! step it is on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::workload::Kind;

/// The tasks of a running watch: one follower per kind, and the loop that
/// builds and writes the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    Follow(Kind),
    Write,
}

impl Task {
    const ALL: [Task; 4] = [
        Task::Follow(Kind::Deployment),
        Task::Follow(Kind::StatefulSet),
        Task::Follow(Kind::DaemonSet),
        Task::Write,
    ];

    pub(super) fn slot(self) -> usize {
        match self {
            Task::Follow(Kind::Deployment) => 0,
            Task::Follow(Kind::StatefulSet) => 1,
            Task::Follow(Kind::DaemonSet) => 2,
            Task::Write => 3,
        }
    }

    fn describe(self) -> String {
        match self {
            Task::Follow(kind) => format!("the {} watch", kind.plural()),
            Task::Write => "the index writer".to_owned(),
        }
    }
}

/// When each task of the watch started the step it is on, for `/healthz`.
///
/// A follower that waits on its stream is following: kube-runtime handles
/// bookmarks itself (they never reach us) and re-opens a watch that has
/// been silent for 295 s. A task that stays on one step is stuck, as a
/// follower once was on a full channel while holding the builder lock:
/// nothing was indexed again while the Lease was renewed and `/readyz`
/// said ready. Only a restart gets such a process going again, so
/// `/healthz` fails and the kubelet restarts it.
pub struct Progress {
    pub(super) epoch: Instant,
    /// Milliseconds since `epoch` plus one when the step began; 0: waiting.
    pub(super) busy_since: [AtomicU64; 4],
}

impl Default for Progress {
    fn default() -> Progress {
        Progress {
            epoch: Instant::now(),
            busy_since: Default::default(),
        }
    }
}

/// Marks a task busy until dropped.
pub struct Busy<'a> {
    progress: &'a Progress,
    task: Task,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.progress.busy_since[self.task.slot()].store(0, Ordering::Release);
    }
}

impl Progress {
    /// `task` starts a step; it is waiting again when the guard is dropped.
    pub fn busy(&self, task: Task) -> Busy<'_> {
        let since = self.epoch.elapsed().as_millis() as u64 + 1;
        self.busy_since[task.slot()].store(since, Ordering::Release);
        Busy {
            progress: self,
            task,
        }
    }

    /// The tasks that have been on one step for longer than `bound`.
    pub(crate) fn stalled(&self, bound: Duration) -> Option<String> {
        self.stalled_at(Instant::now(), bound)
    }

    pub(super) fn stalled_at(&self, now: Instant, bound: Duration) -> Option<String> {
        let now_ms = now.saturating_duration_since(self.epoch).as_millis() as u64 + 1;
        let stuck: Vec<String> = Task::ALL
            .into_iter()
            .filter_map(|task| {
                let since = self.busy_since[task.slot()].load(Ordering::Acquire);
                let busy = Duration::from_millis(now_ms.saturating_sub(since));
                (since != 0 && busy > bound).then(|| {
                    format!(
                        "{} has been on one step for {}s (bound {}s)",
                        task.describe(),
                        busy.as_secs(),
                        bound.as_secs()
                    )
                })
            })
            .collect();
        (!stuck.is_empty()).then(|| stuck.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_on_one_step_past_the_bound_is_stalled() {
        let progress = Progress::default();
        let bound = Duration::from_secs(60);
        let later = |secs| progress.epoch + Duration::from_secs(secs);
        assert_eq!(progress.stalled_at(later(3600), bound), None, "all waiting");
        let busy = progress.busy(Task::Follow(Kind::StatefulSet));
        assert_eq!(
            progress.stalled_at(later(59), bound),
            None,
            "inside the bound"
        );
        let why = progress.stalled_at(later(61), bound).expect("stalled");
        assert!(why.contains("statefulsets watch"), "{why}");
        let writer = progress.busy(Task::Write);
        let why = progress.stalled_at(later(120), bound).expect("stalled");
        assert!(
            why.contains("statefulsets") && why.contains("index writer"),
            "{why}"
        );
        drop(busy);
        drop(writer);
        assert_eq!(
            progress.stalled_at(later(3600), bound),
            None,
            "waiting again"
        );
    }
}
