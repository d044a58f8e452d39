//! The server's memory and CPU, read from /proc.

use std::time::{Duration, Instant};

/// Resource use of the server over a window.
pub struct ServerStats {
    /// Resident set size at the end, in KiB.
    pub rss_kib: u64,
    /// CPU time over wall time, as a percentage (200% = two cores busy).
    pub cpu_percent: f64,
}

/// CPU ticks (user + system) and RSS of `pid` now.
fn sample(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are 14th and 15th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches(" kB")
        .parse()
        .ok()?;
    Some((ticks, rss))
}

/// The resident set size of `pid` now, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    sample(pid).map(|(_, rss)| rss)
}

/// A window over which the server is measured.
pub struct Window {
    pid: u32,
    start: Instant,
    ticks: u64,
}

impl Window {
    /// Starts measuring `pid`, if it can be read.
    pub fn start(pid: Option<u32>) -> Option<Window> {
        let pid = pid?;
        let (ticks, _) = sample(pid)?;
        Some(Window {
            pid,
            start: Instant::now(),
            ticks,
        })
    }

    /// Ends the window.
    pub fn finish(self) -> Option<ServerStats> {
        let (ticks, rss_kib) = sample(self.pid)?;
        // Linux reports CPU time in USER_HZ, 100 per second on every mainstream build.
        let cpu = Duration::from_millis((ticks - self.ticks) * 10);
        Some(ServerStats {
            rss_kib,
            cpu_percent: 100.0 * cpu.as_secs_f64() / self.start.elapsed().as_secs_f64(),
        })
    }
}
