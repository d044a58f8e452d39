//! What a measuring run reports, as text or JSON.

use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::Common;
use crate::server_stats::{ServerStats, Window};

/// What each client task returns: operations counted, errors, latencies.
pub type TaskResult = (u64, u64, Histogram<u64>);

/// The figures of one run.
pub struct Report {
    /// "msgs" for load, "connects" for churn.
    pub unit: &'static str,
    /// Completed operations in the measured window.
    pub count: u64,
    /// Payload bytes echoed (load only).
    pub bytes: u64,
    /// The measured window.
    pub elapsed: Duration,
    /// Failed operations.
    pub errors: u64,
    /// Latency of each operation, in microseconds.
    pub latency: Histogram<u64>,
    /// The server's resource use, when a pid was given.
    pub server: Option<ServerStats>,
}

/// A histogram for microsecond latencies up to a minute.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

impl Report {
    /// Prints the report.
    pub fn print(&self, common: &Common) {
        let label = common.label.clone().unwrap_or_else(|| common.url.clone());
        let rate = self.count as f64 / self.elapsed.as_secs_f64();
        let mb = self.bytes as f64 / self.elapsed.as_secs_f64() / 1e6;
        let q = |q: f64| self.latency.value_at_quantile(q);
        if common.json {
            let mut value = serde_json::json!({
                "label": label, "unit": self.unit, "count": self.count, "errors": self.errors,
                "per_sec": rate, "mb_per_sec": mb,
                "latency_us": { "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "p999": q(0.999) },
            });
            if let Some(server) = &self.server {
                value["server"] = serde_json::json!({ "rss_kib": server.rss_kib, "cpu_percent": server.cpu_percent });
            }
            println!("{value}");
        } else {
            let server = self
                .server
                .as_ref()
                .map(|s| format!(", server RSS {} KiB, CPU {:.0}%", s.rss_kib, s.cpu_percent))
                .unwrap_or_default();
            println!(
                "{label}: {rate:.0} {}/s, {mb:.1} MB/s, latency p50 {} µs, p90 {} µs, p99 {} µs, p99.9 {} µs, errors {}{server}",
                self.unit,
                q(0.5),
                q(0.9),
                q(0.99),
                q(0.999),
                self.errors
            );
        }
    }
}

/// Waits out the warm-up, measures the server over the window, and merges what the
/// client tasks counted into one report.
pub async fn collect(
    tasks: Vec<JoinHandle<TaskResult>>,
    unit: &'static str,
    common: &Common,
    warm_until: Instant,
) -> anyhow::Result<Report> {
    tokio::time::sleep_until(warm_until).await;
    let window = Window::start(common.pid);
    let mut report = Report {
        unit,
        count: 0,
        bytes: 0,
        elapsed: Duration::from_secs_f64(common.seconds),
        errors: 0,
        latency: histogram(),
        server: None,
    };
    for task in tasks {
        let (count, errors, latency) = task.await?;
        report.count += count;
        report.errors += errors;
        report.latency.add(latency)?;
    }
    report.server = window.and_then(Window::finish);
    if report.count == 0 {
        anyhow::bail!("nothing completed against {}", common.url);
    }
    Ok(report)
}
