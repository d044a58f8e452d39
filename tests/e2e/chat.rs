//! Chat: rooms from the path, broadcast to the others in the room, join and leave notices
//! (the leave notice is sent by `$disconnect`).

use crate::harness::{Client, Gateway, recv_json, send_text};
use crate::standard_config;

async fn join_at(gateway: &Gateway, prefix: &str, room: &str) -> Client {
    gateway.connect(&format!("{prefix}/{room}")).await
}

/// Three clients in two rooms: messages and notices reach the right room only.
#[tokio::test]
async fn chat_across_two_rooms() {
    let gateway = Gateway::start(&standard_config()).await;
    two_rooms(&gateway, "/demo/chat").await;
}

/// The chat's behaviour, whatever the language of the plugin on `{prefix}/{room}`.
pub async fn two_rooms(gateway: &Gateway, prefix: &str) {
    let join = |room| join_at(gateway, prefix, room);
    let mut a = join("red").await;
    let mut b = join("red").await;
    let joined = recv_json(&mut a).await;
    assert_eq!(joined["event"], "join");
    assert_eq!(joined["room"], "red");
    let b_id = joined["connection"].as_str().unwrap().to_owned();

    let mut c = join("blue").await;

    send_text(&mut b, "hi \"red\"").await;
    let message = recv_json(&mut a).await;
    assert_eq!(message["event"], "message");
    assert_eq!(message["room"], "red");
    assert_eq!(message["from"], b_id.as_str());
    assert_eq!(message["text"], "hi \"red\"");

    send_text(&mut a, "back").await;
    let message = recv_json(&mut b).await;
    assert_eq!(message["text"], "back");

    send_text(&mut c, "anyone in blue?").await;

    // B leaves: A hears it from B's $disconnect.
    b.close(None).await.unwrap();
    let left = recv_json(&mut a).await;
    assert_eq!(left["event"], "leave");
    assert_eq!(left["connection"], b_id.as_str());

    // C's first frame is D's join: nothing from red reached it before.
    let _d = join("blue").await;
    let first = recv_json(&mut c).await;
    assert_eq!(first["event"], "join");
    assert_eq!(first["room"], "blue");
    // Likewise A received nothing from blue: its next frame is E's join.
    let mut e = join("red").await;
    let next = recv_json(&mut a).await;
    assert_eq!(
        next["event"], "join",
        "A's next frame must be E's join, not blue traffic: {next}"
    );
    send_text(&mut e, "last").await;
    assert_eq!(recv_json(&mut a).await["text"], "last");
}

/// Room names are percent-decoded path parameters and JSON-escaped in notices.
#[tokio::test]
async fn room_names_are_decoded() {
    let gateway = Gateway::start(&standard_config()).await;
    decoded_room_names(&gateway, "/demo/chat").await;
}

/// Room names are decoded, whatever the language of the plugin on `{prefix}/{room}`.
pub async fn decoded_room_names(gateway: &Gateway, prefix: &str) {
    let mut a = join_at(gateway, prefix, "caf%C3%A9").await;
    let _b = join_at(gateway, prefix, "caf%C3%A9").await;
    assert_eq!(recv_json(&mut a).await["room"], "café");
}
