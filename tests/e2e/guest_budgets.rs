//! What one event of a hostile plugin may spend beyond memory and time: its writes to
//! stdout count as host calls, its log lines share a byte cap and cannot forge lines,
//! and computing between host calls still puts it on the heavy lane.

use std::collections::HashSet;
use std::sync::Mutex;

use crate::harness::{Gateway, Logs, ask, config, plugin, recv_json, send_text};
use crate::plugins;

/// The default `max_log_bytes`: 64 KiB of log per event.
const LOG_CAP: usize = 64 * 1024;

/// The field that marks a plugin's stdout line in the log.
const STDOUT: &str = "stream=\"stdout\"";

/// Tenant `evil` runs the hostile plugin three times: `tight` with 1,000 host calls
/// per event, `wide` with the default budgets, `busy` with room to compute. Time
/// limits are generous so a loaded test machine cannot turn these into timeouts.
fn budgets_config() -> String {
    let mut tenants = String::new();
    for (name, limits) in [
        (
            "tight",
            "limits = { max_host_calls = 1000, timeout = \"2s\" }",
        ),
        ("wide", "limits = { timeout = \"2s\" }"),
        ("busy", "limits = { timeout = \"2s\" }"),
    ] {
        tenants.push_str(&plugin("evil", name, plugins::HOSTILE, limits));
    }
    tenants.push_str(
        r#"
[tenants.evil.routes."/tight"]
plugin = "tight"
[tenants.evil.routes."/wide"]
plugin = "wide"
[tenants.evil.routes."/busy"]
plugin = "busy"
"#,
    );
    config(&tenants)
}

/// Waits for the first log line satisfying `last`; returns it with every line before
/// it that satisfies `pred`. (`wait_for` scans the whole log on each new line, so a
/// line may be seen more than once: lines are collected in a set. Each carries a
/// timestamp, and the hostile plugin numbers its lines, so none is lost by that.)
async fn lines_before(
    logs: &Logs,
    what: &str,
    last: impl Fn(&str) -> bool,
    pred: impl Fn(&str) -> bool,
) -> (HashSet<String>, String) {
    let seen = Mutex::new(HashSet::new());
    let found = logs
        .wait_for(what, |line| {
            if last(line) {
                return true;
            }
            if pred(line) {
                seen.lock().unwrap().insert(line.to_owned());
            }
            false
        })
        .await;
    (seen.into_inner().unwrap(), found)
}

/// The message of a plugin's stdout line, as the gateway's log formats it: between
/// the target and the fields.
fn message(line: &str) -> &str {
    let start = line.find("wsgate::plugin: ").expect("a plugin line") + 16;
    let end = line.find(" tenant=").expect("fields after the message");
    &line[start..end]
}

/// 20,000 lines printed in one event by a plugin allowed 1,000 host calls: each write
/// is a host call, so the event fails at the budget (`kind=host_calls`) and at most
/// 1,000 lines reach the log. (Before, writes were free and all 20,000 were logged.)
#[tokio::test]
async fn a_print_flood_is_stopped_by_the_host_call_budget() {
    let gateway = Gateway::start_binary(&budgets_config()).await;
    let mut client = gateway.connect("/evil/tight").await;
    send_text(&mut client, "print 20000").await;
    assert_eq!(
        recv_json(&mut client).await["message"],
        "Internal server error",
        "the flood should fail its event"
    );
    let (printed, failure) = lines_before(
        &gateway.logs,
        "about the failed flood",
        |l| l.contains("message handler failed") && l.contains("plugin=tight"),
        |l| l.contains("plugin=tight") && l.contains(STDOUT),
    )
    .await;
    assert!(
        failure.contains("kind=host_calls") && failure.contains("limit of 1000 host calls"),
        "{failure}"
    );
    eprintln!(
        "lines logged before the budget stopped the flood: {}",
        printed.len()
    );
    assert!(
        (1..=1000).contains(&printed.len()),
        "{} stdout lines logged",
        printed.len()
    );
    // The connection and the plugin go on.
    assert_eq!(ask(&mut client, "still here").await, "still here");
}

/// 20,000 lines printed in one event within its host-call budget: the log keeps the
/// first 64 KiB of them, one warning says how many lines and bytes were dropped, and
/// the `log_bytes` limit metric counts the dropped lines.
#[tokio::test]
async fn a_print_flood_within_the_budget_is_capped_in_the_log() {
    let gateway = Gateway::start_binary(&budgets_config()).await;
    let mut client = gateway.connect("/evil/wide").await;
    assert_eq!(ask(&mut client, "print 20000").await, "printed");
    let (printed, summary) = lines_before(
        &gateway.logs,
        "summing up the dropped lines",
        |l| l.contains("limits.max_log_bytes") && l.contains("plugin=wide"),
        |l| l.contains("plugin=wide") && l.contains(STDOUT),
    )
    .await;
    let bytes: usize = printed.iter().map(|l| message(l).len()).sum();
    // Every line is 10 bytes ("line 00042"): 6,553 of them fit in 65,536 bytes.
    let kept = LOG_CAP / 10;
    assert_eq!(
        (printed.len(), bytes),
        (kept, kept * 10),
        "lines and bytes logged"
    );
    assert!(printed.iter().any(|l| message(l) == "line 00000"));
    assert!(
        printed
            .iter()
            .any(|l| message(l) == format!("line {:05}", kept - 1))
    );
    let dropped = 20_000 - kept;
    assert!(
        summary.contains(&format!(
            "dropped_lines={dropped} dropped_bytes={}",
            dropped * 10
        )),
        "{summary}"
    );
    let metrics = gateway.metrics().await;
    let series = format!(r#"wsgate_limits_hit_total{{tenant="evil",limit="log_bytes"}} {dropped}"#);
    assert!(
        metrics.contains(&series),
        "{series} missing from:\n{metrics}"
    );
}

/// A line break in a logged message and a carriage return in a printed line reach the
/// log escaped, inside the plugin's own line: nothing the guest writes starts a line.
#[tokio::test]
async fn control_characters_cannot_forge_log_lines() {
    let gateway = Gateway::start_binary(&budgets_config()).await;
    let mut client = gateway.connect("/evil/wide").await;
    assert_eq!(ask(&mut client, "forge").await, "forged");
    let (lines, printed) = lines_before(
        &gateway.logs,
        "with the printed line",
        |l| l.contains("forged by stdout"),
        |_| true,
    )
    .await;
    assert!(
        printed.contains("printed\\r2030-01-01T00:00:00.000000Z ERROR wsgate: forged by stdout")
            && printed.contains(STDOUT)
            && !printed.contains('\r'),
        "{printed:?}"
    );
    let logged = lines
        .iter()
        .find(|l| l.contains("forged by log"))
        .expect("the logged line");
    assert!(
        logged.contains("logged\\n2030-01-01T00:00:00.000000Z ERROR wsgate: forged by log")
            && logged.contains("plugin=wide"),
        "{logged}"
    );
    let forged: Vec<_> = lines.iter().filter(|l| l.starts_with("2030")).collect();
    assert!(forged.is_empty(), "forged log lines: {forged:?}");
}

/// A plugin that computes for 100 ms but calls the host every 200 µs, so that no epoch
/// tick passes without a host call, is still marked heavy within its event, and its
/// next event runs on the low-priority lane. (Before, a host call between ticks reset
/// the count, and such a plugin never left the normal lane.)
#[tokio::test]
async fn computing_between_host_calls_is_heavy() {
    let gateway = Gateway::start_binary(&budgets_config()).await;
    let mut client = gateway.connect("/evil/busy").await;
    assert_eq!(ask(&mut client, "busy 100").await, "busy");
    // The mark is set during the event; this event is the first to see it.
    assert_eq!(ask(&mut client, "next").await, "next");
    let metrics = gateway.metrics().await;
    let series = r#"wsgate_plugin_heavy_events_total{tenant="evil",plugin="busy"} 1"#;
    assert!(
        metrics.contains(series),
        "{series} missing from:\n{metrics}"
    );
    let marked = gateway
        .logs
        .wait_for("about the heavy mark", |l| {
            l.contains("plugin marked CPU-heavy") && l.contains("plugin=busy")
        })
        .await;
    let field = |name: &str| {
        let start = marked.find(name).expect("the field") + name.len();
        marked[start..].split(' ').next().unwrap().to_owned()
    };
    eprintln!(
        "marked heavy after {} of guest compute, {} into the event",
        field("compute="),
        field("after=")
    );
}
