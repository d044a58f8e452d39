//! Fan-out from a plugin (the fanout testing plugin): the `broadcast` host call, and the
//! same relay done with `list` and one `send` per recipient. Each message reaches every
//! other connection on the sender's path exactly once, never the sender, never another
//! path.

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{Gateway, config, plugin, recv, recv_text, send_text};
use wsgate_test_plugins as plugins;

fn fanout_config() -> String {
    let mut tenants = plugin("demo", "fanout", plugins::FANOUT, "");
    tenants.push_str(&plugin(
        "demo",
        "fanout-each",
        plugins::FANOUT,
        "config = { mode = \"send-each\" }",
    ));
    tenants.push_str(
        r#"
[tenants.demo.routes."/room/{name}"]
plugin = "fanout"
[tenants.demo.routes."/each/{name}"]
plugin = "fanout-each"
"#,
    );
    config(&tenants)
}

async fn relays_to_the_room_only(route: &str) {
    let gateway = Gateway::start(&fanout_config()).await;
    let room_a = format!("/demo/{route}/a");
    let room_b = format!("/demo/{route}/b");
    let mut a = gateway.connect(&room_a).await;
    let mut b = gateway.connect(&room_a).await;
    let mut c = gateway.connect(&room_a).await;
    let mut d = gateway.connect(&room_a).await;
    let mut e = gateway.connect(&room_b).await;

    send_text(&mut a, "hello").await;
    for peer in [&mut b, &mut c, &mut d] {
        assert_eq!(recv_text(peer).await, "hello");
    }
    b.send(Message::binary(vec![0u8, 255, 7])).await.unwrap();
    for peer in [&mut a, &mut c, &mut d] {
        // A's first frame is B's: its own "hello" never came back to it. C's and D's
        // next frame is B's too: "hello" came exactly once.
        assert_eq!(recv(peer).await, Message::binary(vec![0u8, 255, 7]));
    }
    send_text(&mut c, "from c").await;
    for peer in [&mut a, &mut b, &mut d] {
        // B's first frame after "hello" is C's: its own binary never came back to it.
        assert_eq!(recv_text(peer).await, "from c");
    }
    // E, alone in room b, hears only its own room: its first frame is F's.
    let mut f = gateway.connect(&room_b).await;
    send_text(&mut f, "b only").await;
    assert_eq!(recv_text(&mut e).await, "b only");
}

#[tokio::test]
async fn broadcast_relays_to_the_room_only() {
    relays_to_the_room_only("room").await;
}

#[tokio::test]
async fn send_each_relays_to_the_room_only() {
    relays_to_the_room_only("each").await;
}
