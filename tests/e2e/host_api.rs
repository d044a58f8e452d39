//! The host API from inside a real guest (the probe plugin): list, get-info, send and
//! disconnect, each confined to the caller's tenant.

use crate::harness::{Gateway, ask, expect_close, recv_text};
use crate::standard_config;

async fn id_of(gateway: &Gateway, probe: &mut crate::harness::Client, path: &str) -> String {
    let listed = ask(probe, &format!("list path={path}")).await;
    assert!(
        !listed.is_empty() && !listed.contains(','),
        "one connection expected on {path}: {listed}"
    );
    let _ = gateway;
    listed
}

/// list, get-info, send and disconnect work on the tenant's own connections.
#[tokio::test]
async fn host_calls_from_a_plugin() {
    let gateway = Gateway::start(&standard_config()).await;
    let mut probe = gateway.connect("/demo/probe").await;
    let mut target = gateway.connect("/demo/probe/lobby?q=42").await;
    let target_id = id_of(&gateway, &mut probe, "/probe/lobby").await;

    let all = ask(&mut probe, "list").await;
    assert_eq!(all.split(',').count(), 2, "{all}");
    assert_eq!(ask(&mut probe, "list route=/probe/{room}").await, target_id);
    assert_eq!(ask(&mut probe, "list route=/echo").await, "");

    let info = ask(&mut probe, &format!("info {target_id}")).await;
    for part in [
        format!("id={target_id}"),
        "tenant=demo".into(),
        "route=/probe/{room}".into(),
        "path=/probe/lobby".into(),
        "room=lobby".into(),
        "ip=127.0.0.1".into(),
        "q=42".into(),
    ] {
        assert!(info.contains(&part), "{part} missing in {info}");
    }

    assert_eq!(
        ask(&mut probe, &format!("send {target_id} hello there")).await,
        "ok"
    );
    assert_eq!(recv_text(&mut target).await, "hello there");

    assert_eq!(ask(&mut probe, "key").await, "$default");
    assert_eq!(ask(&mut probe, "config greeting").await, "hello");
    assert_eq!(ask(&mut probe, "config missing").await, "none");

    assert_eq!(
        ask(&mut probe, &format!("kick {target_id} 1006 no")).await,
        "error: invalid-argument"
    );
    assert_eq!(
        ask(&mut probe, &format!("kick {target_id} 4001 see you")).await,
        "ok"
    );
    let frame = expect_close(&mut target).await;
    assert_eq!(
        (u16::from(frame.code), frame.reason.as_str()),
        (4001, "see you")
    );
    assert_eq!(
        ask(&mut probe, &format!("send {target_id} late")).await,
        "error: gone"
    );
    assert_eq!(
        ask(&mut probe, "nonsense").await,
        "unknown command: nonsense"
    );
}

/// Another tenant's ids behave exactly like unknown ones, and `list` shows only the
/// caller's tenant.
#[tokio::test]
async fn host_calls_never_cross_tenants() {
    let gateway = Gateway::start(&standard_config()).await;
    let mut demo_probe = gateway.connect("/demo/probe").await;
    let mut demo_target = gateway.connect("/demo/probe/room").await;
    let demo_id = id_of(&gateway, &mut demo_probe, "/probe/room").await;
    let mut acme = gateway.connect("/acme/probe").await;

    for command in [
        format!("send {demo_id} sneaky"),
        format!("info {demo_id}"),
        format!("kick {demo_id} 4000 x"),
        "send nonexistent-id x".to_owned(),
    ] {
        assert_eq!(ask(&mut acme, &command).await, "error: gone", "{command}");
    }
    let acme_list = ask(&mut acme, "list").await;
    assert_eq!(
        acme_list.split(',').count(),
        1,
        "acme sees only itself: {acme_list}"
    );
    assert!(!acme_list.contains(&demo_id));

    // The demo connection was untouched: it still answers, and got nothing from acme.
    assert_eq!(ask(&mut demo_target, "key").await, "$default");
}

/// A plugin granted `access = "self"` reaches only the connection it is serving.
#[tokio::test]
async fn self_access_forbids_other_connections() {
    let gateway = Gateway::start(&standard_config()).await;
    let mut probe = gateway.connect("/demo/probe").await;
    let mut confined = gateway.connect("/demo/probe-self").await;
    let confined_id = id_of(&gateway, &mut probe, "/probe-self").await;
    let probe_id = ask(&mut probe, "list route=/probe").await;

    assert_eq!(ask(&mut confined, "list").await, "error: forbidden");
    assert_eq!(
        ask(&mut confined, &format!("send {probe_id} x")).await,
        "error: forbidden"
    );
    // The host send is queued during the event, before the event's own reply.
    assert_eq!(
        ask(&mut confined, &format!("send {confined_id} to myself")).await,
        "to myself"
    );
    assert_eq!(recv_text(&mut confined).await, "ok");
}
