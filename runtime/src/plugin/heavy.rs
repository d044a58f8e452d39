//! The low-priority lane for CPU-heavy plugins.
//!
//! A plugin one of whose events computes for more than [`HEAVY_COMPUTE`] is marked
//! heavy for a while ([`metered`] measures each event's compute, whatever host calls
//! it makes between), and its events then run here: on a separate tokio runtime whose
//! threads have the lowest scheduling priority
//! (`SCHED_IDLE` on Linux). The kernel gives them whatever CPU the gateway's own
//! workers leave, so one tenant's spinning plugin cannot take a core from other
//! tenants' sockets and quick plugins. Its own events get slower under contention (they still
//! end at their wall-clock time limit), which is the point.
//!
//! Quick events never come here and pay nothing; a heavy plugin's events pay a hand-off
//! between runtimes (a few microseconds), small beside a millisecond of guest CPU.

use std::future::Future;
use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;
use tokio::task::JoinError;

use super::engine::EPOCH_TICK;
use super::state::PluginScope;
use crate::registry::now_ms;

/// How long a plugin stays heavy after an event on the normal lane showed it heavy.
pub const HEAVY_FOR: Duration = Duration::from_secs(10);

/// Guest compute in one event that makes its plugin heavy: three epoch ticks. A quick
/// event (an echo call takes under a microsecond) is three orders of magnitude below
/// it; a guest that computes passes it 3–5 ms after it starts, host calls or not.
pub const HEAVY_COMPUTE: Duration = Duration::from_millis(3);

/// The compute that marks a plugin heavy in an instance's first event, which also
/// pays the instance's one-off costs: page faults on its fresh linear memory, the
/// guest's lazy initialisation. Measured for the integration plugin on a loaded
/// machine: 3.75 ms in a first event, against about 0.1 ms in a warm one. A guest that
/// really computes still passes it 30 ms into its first event, and 3 ms into later ones.
pub const HEAVY_COMPUTE_FIRST_EVENT: Duration = Duration::from_millis(30);

/// What a poll measured on the monotonic clock may add to its event's compute when it
/// is not short: two ticks (see [`metered`]).
const FIRST_POLL_CAP: Duration = EPOCH_TICK.saturating_mul(2);

/// A poll shorter than this on the monotonic clock counts as it is (see [`metered`]).
const SHORT_POLL: Duration = Duration::from_micros(250);

/// Runs `call`, an event's call into the guest, measuring the guest's compute, and
/// marks the plugin heavy as soon as that passes [`HEAVY_COMPUTE`] (unless the event
/// runs on the lane already: see [`on_lane`]).
///
/// The compute of an event is the time its call future spends inside `poll`. While
/// the future is pending — an async host call waiting on I/O, the yield to the reactor
/// at each epoch tick, the wait for a tenant permit — the guest is not running, and
/// that time is not counted; everything that does run inside a poll is the guest, or
/// the host working synchronously for it (a `log`, a `send`, a clock read), counted
/// whatever host calls the guest makes. Counting epoch ticks without a host call
/// between, as before, let a guest compute for ever unmarked by calling the host once
/// per tick.
///
/// Each poll is measured with the calling thread's CPU clock
/// (`CLOCK_THREAD_CPUTIME_ID`), which leaves out time the OS gave other threads, so a
/// quick event preempted mid-poll is not taken for heavy. That is sound with async
/// wasmtime: a poll resumes the guest's fiber on the polling thread and returns when
/// the fiber suspends, so all of a poll's work is on that one thread (a fiber switches
/// stacks, not threads), while between polls, where the task may move to another
/// worker, nothing is measured. The CPU clock is a system call, though (0.3–0.4 µs on
/// the 2-core test machine, as much as a whole echo call, and two per poll), so polls
/// are measured with the monotonic clock (vDSO, ~40 ns) for as long as they are short:
/// a poll under [`SHORT_POLL`] counts as it is (the OS can have run someone else in it
/// for less than that, and a quick event has a handful of polls: an echo one, an HTTP
/// call three), so a quick event, waits on backends included, never reads the CPU
/// clock. The first poll that is not short counts at most [`FIRST_POLL_CAP`] (the epoch
/// deadline is one tick ahead when a poll starts, so a poll holds at most about a tick
/// of compute; anything beyond the cap is the OS running someone else), and every later
/// poll of the event is measured with the CPU clock. A guest cannot hide compute in
/// short polls: they count in full.
pub async fn metered<F: Future>(scope: &PluginScope, first_event: bool, call: F) -> F::Output {
    let heavy = if first_event {
        HEAVY_COMPUTE_FIRST_EVENT
    } else {
        HEAVY_COMPUTE
    };
    let mut call = std::pin::pin!(call);
    let started = Instant::now();
    let mut meter = Meter::default();
    std::future::poll_fn(|cx| {
        let clock = meter.start();
        let poll = call.as_mut().poll(cx);
        meter.stop(clock);
        if !meter.marked && meter.compute > heavy && !on_lane() {
            meter.marked = true;
            mark(scope, meter.compute, started.elapsed());
        }
        poll
    })
    .await
}

/// The compute of one event so far.
#[derive(Default)]
struct Meter {
    /// Compute measured.
    compute: Duration,
    /// Whether a poll was not short, so that polls are measured with the CPU clock.
    cpu_clock: bool,
    /// Whether this event marked its plugin heavy already.
    marked: bool,
}

/// A poll's start, on the clock that measures it.
enum Clock {
    /// While every poll was short: the monotonic clock.
    Wall(Instant),
    /// After one was not: the thread's CPU clock.
    Cpu(Duration),
}

impl Meter {
    fn start(&mut self) -> Clock {
        match self.cpu_clock {
            false => Clock::Wall(Instant::now()),
            true => Clock::Cpu(thread_cpu_time()),
        }
    }

    fn stop(&mut self, clock: Clock) {
        self.compute += match clock {
            Clock::Wall(start) => {
                let wall = start.elapsed();
                if wall >= SHORT_POLL {
                    self.cpu_clock = true;
                }
                wall.min(FIRST_POLL_CAP)
            }
            Clock::Cpu(start) => thread_cpu_time().saturating_sub(start),
        };
    }
}

/// CPU time the calling thread has used.
fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for the call to fill. The clock exists on every
    // Unix the gateway builds for; were it refused, `now` stays zero and the poll counts
    // nothing, which only makes the mark later.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// Marks the plugin heavy for [`HEAVY_FOR`], and logs (at debug) when it was not
/// heavy yet, with the compute and wall time of the event that showed it.
fn mark(scope: &PluginScope, compute: Duration, after: Duration) {
    let now = now_ms();
    let until = now + HEAVY_FOR.as_millis() as u64;
    let before = scope.heavy_until_ms.fetch_max(until, Ordering::Relaxed);
    if before <= now {
        tracing::debug!(
            tenant = %scope.tenant,
            plugin = %scope.plugin,
            ?compute,
            ?after,
            "plugin marked CPU-heavy: its events run on the low-priority lane for {HEAVY_FOR:?}"
        );
    }
}

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
    use std::sync::Arc;

    use super::*;
    use crate::config::Access;
    use crate::plugin::connections_impl::tests::state;
    use crate::registry::LocalRegistry;

    /// A fresh plugin scope, not heavy.
    fn scope() -> Arc<PluginScope> {
        let state = state(Arc::new(LocalRegistry::default()), Access::Tenant, "");
        state.scope.clone()
    }

    fn is_heavy(scope: &PluginScope) -> bool {
        now_ms() < scope.heavy_until_ms.load(Ordering::Relaxed)
    }

    /// Uses `cpu` of this thread's CPU time.
    fn burn(cpu: Duration) {
        let start = thread_cpu_time();
        while thread_cpu_time() - start < cpu {
            std::hint::black_box(0u64);
        }
    }

    /// Compute split by waits, as a guest that calls the host between slices of work
    /// does, adds up: 8 slices of 1 ms, each followed by a yield, make a plugin heavy.
    #[tokio::test]
    async fn compute_adds_up_across_waits() {
        let scope = scope();
        metered(&scope, false, async {
            for _ in 0..8 {
                burn(Duration::from_millis(1));
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert!(is_heavy(&scope));
    }

    /// Time the event waits, and time its thread is off the CPU within a poll (here
    /// asleep, as if the OS ran another thread), is not compute.
    #[tokio::test]
    async fn waiting_and_preemption_are_not_compute() {
        let scope = scope();
        metered(&scope, false, async {
            for _ in 0..4 {
                std::thread::sleep(Duration::from_millis(5));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(!is_heavy(&scope));
        // One poll of real compute is capped too: only the CPU clock counts in full.
        metered(&scope, false, async { burn(Duration::from_millis(5)) }).await;
        assert!(!is_heavy(&scope));
    }

    /// Short polls are measured on the monotonic clock and count in full; the first one
    /// that is not short counts at most two ticks, and the CPU clock measures every later
    /// poll, so time off the CPU is not compute from then on.
    #[test]
    fn short_polls_skip_the_cpu_clock_and_a_long_one_switches_to_it() {
        let mut meter = Meter::default();
        for _ in 0..5 {
            let clock = meter.start();
            assert!(matches!(clock, Clock::Wall(_)));
            meter.stop(clock);
        }
        assert!(!meter.cpu_clock);
        let quick = meter.compute;
        assert!(quick < SHORT_POLL * 5, "{quick:?}");
        let clock = meter.start();
        std::thread::sleep(FIRST_POLL_CAP * 3);
        meter.stop(clock);
        assert!(meter.cpu_clock);
        assert!(
            meter.compute <= quick + FIRST_POLL_CAP,
            "{:?}",
            meter.compute
        );
        let counted = meter.compute;
        let clock = meter.start();
        assert!(matches!(clock, Clock::Cpu(_)));
        std::thread::sleep(FIRST_POLL_CAP * 3);
        meter.stop(clock);
        assert!(
            meter.compute - counted < FIRST_POLL_CAP,
            "a sleep counted as compute: {:?}",
            meter.compute - counted
        );
    }

    /// An instance's first event pays its one-off costs (fresh memory, lazy start-up):
    /// 8 ms of compute there does not mark the plugin, and the same in a warm
    /// instance's event does.
    #[tokio::test]
    async fn a_first_event_may_compute_more_before_it_marks() {
        let eight_ms = || async {
            for _ in 0..8 {
                burn(Duration::from_millis(1));
                tokio::task::yield_now().await;
            }
        };
        let scope = scope();
        metered(&scope, true, eight_ms()).await;
        assert!(!is_heavy(&scope), "a first event's 8 ms marked the plugin");
        metered(&scope, false, eight_ms()).await;
        assert!(
            is_heavy(&scope),
            "a warm event's 8 ms did not mark the plugin"
        );
    }

    /// Events on the lane do not renew the mark, so a plugin put there by mistake
    /// returns to the normal lane when it expires.
    #[tokio::test]
    async fn events_on_the_lane_do_not_mark() {
        let scope = scope();
        let marked = scope.clone();
        run(async move {
            metered(&marked, false, async {
                for _ in 0..8 {
                    burn(Duration::from_millis(1));
                    tokio::task::yield_now().await;
                }
            })
            .await
        })
        .await
        .unwrap();
        assert!(!is_heavy(&scope));
    }

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
