//! The last reloads, for the console's Gateway panel (`GET /-/status`): bounded, so a
//! script that reloads in a loop cannot grow it.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

/// How many reloads are remembered.
pub const KEPT: usize = 20;

/// One reload, as the console shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReloadRecord {
    /// When it ended (RFC 3339, milliseconds, UTC).
    pub at: String,
    /// `ok` or `refused`.
    pub result: &'static str,
    /// How long it took, in milliseconds.
    pub took_ms: u64,
    /// What changed, in one line (`tenants +1 -0 ~0; …`), for a reload that took effect.
    pub summary: String,
    /// Why it was refused (file, key and reason), for one that did not.
    pub error: Option<String>,
}

/// The last [`KEPT`] reloads, newest last.
#[derive(Debug, Default)]
pub struct ReloadHistory(Mutex<VecDeque<ReloadRecord>>);

impl ReloadHistory {
    /// Remembers a reload, forgetting the oldest past [`KEPT`].
    pub fn record(&self, record: ReloadRecord) {
        let mut records = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if records.len() == KEPT {
            records.pop_front();
        }
        records.push_back(record);
    }

    /// The reloads remembered, newest first.
    pub fn newest_first(&self) -> Vec<ReloadRecord> {
        let records = self.0.lock().unwrap_or_else(|e| e.into_inner());
        records.iter().rev().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u64) -> ReloadRecord {
        ReloadRecord {
            at: String::new(),
            result: "ok",
            took_ms: n,
            summary: String::new(),
            error: None,
        }
    }

    #[test]
    fn it_keeps_the_newest_and_forgets_past_its_bound() {
        let history = ReloadHistory::default();
        for n in 0..(KEPT as u64 * 3) {
            history.record(record(n));
        }
        let kept = history.newest_first();
        assert_eq!(kept.len(), KEPT);
        assert_eq!(kept[0].took_ms, KEPT as u64 * 3 - 1);
        assert_eq!(kept[KEPT - 1].took_ms, KEPT as u64 * 2);
    }
}
