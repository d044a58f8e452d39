//! Testing and benchmark plugin: relays every message, unchanged, to every other
//! connection on the sender's request path (a room). The plugin config key `mode` picks
//! how:
//!
//! - `broadcast` (the default): one `broadcast` host call;
//! - `send-each`: `list` the room, then one `send` per recipient (the baseline the
//!   broadcast benchmark compares against).
//!
//! It never replies to the sender.

use wsgate_sdk::{HostError, Message, MessageEvent, Plugin, config, connections, log};

/// The fan-out handler.
pub struct Fanout;

fn send_each(path: &str, except: &str, message: &Message) -> Result<(), HostError> {
    for peer in connections::list_path(path)? {
        if peer != except {
            match connections::send(&peer, message) {
                Ok(()) | Err(HostError::Gone | HostError::LimitExceeded) => {}
                Err(err) => return Err(err),
            }
        }
    }
    Ok(())
}

impl Plugin for Fanout {
    fn on_message(event: MessageEvent) -> Option<Message> {
        let sender = &event.connection_id;
        let result =
            connections::get_info(sender).and_then(|info| match config::get("mode").as_deref() {
                Some("send-each") => send_each(&info.path, sender, &event.message),
                _ => {
                    connections::broadcast_path(&info.path, &event.message, Some(sender)).map(drop)
                }
            });
        if let Err(err) = result {
            log::warn(&format!("fanout: {err:?}"));
        }
        None
    }
}

wsgate_sdk::export!(Fanout);
