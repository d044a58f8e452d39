//! The low-priority lane for CPU-heavy plugins.
//!
//! A plugin whose guest computes for `HEAVY_TICKS` epoch ticks (1 ms each) in a row,
//! with no host call between, is marked heavy for a while, and its events then run
//! here: on a separate tokio runtime whose threads have the lowest scheduling priority
//! (`SCHED_IDLE` on Linux). The kernel gives them whatever CPU the gateway's own
//! workers leave, so one tenant's spinning plugin cannot take a core from other
//! tenants' sockets and quick plugins. Its own events get slower under contention (they still
//! end at their wall-clock time limit), which is the point.
//!
//! Quick events never come here and pay nothing; a heavy plugin's events pay a hand-off
//! between runtimes (a few microseconds), small beside a millisecond of guest CPU.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio::task::JoinError;

/// How long a plugin stays heavy after an event on the normal lane showed it heavy.
pub const HEAVY_FOR: Duration = Duration::from_secs(10);

/// Epoch ticks in a row of guest compute, with no host call between, that make a plugin
/// heavy. Ticks are wall-clock time, so a quick event the OS preempts can see one or two;
/// three make a mistake rare, and a spinning guest still gets here in 2–3 ms.
pub const HEAVY_TICKS: u32 = 3;

thread_local! {
    /// Set on the lane's own threads.
    static ON_LANE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the calling thread is one of the lane's. Events running there do not renew
/// their plugin's heavy mark: a quick plugin put there by mistake, whose events get
/// preempted there, returns to the normal lane when the mark expires.
pub fn on_lane() -> bool {
    ON_LANE.get()
}

/// The fallback where `SCHED_IDLE` is refused: a nice-19 thread gets about 1.5% of a
/// core against a busy nice-0 thread, and all of an idle one.
const NICE: libc::c_int = 19;

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cores)
            .thread_name("wsgate-heavy")
            .on_thread_start(lower_priority)
            .enable_time()
            .build()
            .expect("the low-priority runtime needs only threads; the OS refused them")
    })
}

/// Lowers the calling thread's priority. Linux: the `SCHED_IDLE` policy, under which a
/// thread runs only on a CPU nothing else wants and is preempted at once when a normal
/// thread wakes; failing that, nice 19. (Both calls, given a thread id, apply to that
/// thread alone.) Elsewhere the lane still separates the work, at equal priority.
fn lower_priority() {
    ON_LANE.set(true);
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls; `param` outlives the call that reads it. A failure
    // leaves the thread at a higher priority, which is only less isolated.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::pid_t;
        let param = libc::sched_param { sched_priority: 0 };
        if libc::sched_setscheduler(tid, libc::SCHED_IDLE, &param) != 0
            && libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, NICE) != 0
        {
            tracing::warn!(
                "could not lower the priority of a heavy-plugin thread; CPU-heavy plugins will compete with sockets at equal priority"
            );
        }
    }
}

/// Runs `event` on the low-priority lane and waits for it.
pub async fn run<F>(event: F) -> Result<F::Output, JoinError>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    runtime().spawn(event).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_run_on_low_priority_threads() {
        let (name, policy, nice) = run(async {
            let name = std::thread::current().name().map(str::to_owned);
            // SAFETY: read the calling thread's scheduling policy and nice value.
            let (policy, nice) = unsafe {
                let tid = libc::syscall(libc::SYS_gettid);
                (
                    libc::sched_getscheduler(tid as libc::pid_t),
                    libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t),
                )
            };
            (name, policy, nice)
        })
        .await
        .unwrap();
        assert_eq!(name.as_deref(), Some("wsgate-heavy"));
        assert!(run(async { on_lane() }).await.unwrap());
        assert!(!on_lane());
        assert!(
            policy == libc::SCHED_IDLE || nice == NICE,
            "the lane's thread kept its priority: policy {policy}, nice {nice}"
        );
    }
}
