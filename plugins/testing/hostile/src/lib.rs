//! Testing plugin, not an example: misbehaves on command, so tests can prove every
//! sandbox limit holds. Any other message is echoed.
//!
//! | message | what the guest does | what should stop it |
//! |---|---|---|
//! | `loop` | spins forever | the event's time limit (epoch deadline) |
//! | `hog` | allocates 1 MiB blocks until refused | the memory limit |
//! | `recurse` | recurses without end | the wasm stack limit |
//! | `huge` | replies with 1 MiB | the tenant's max message size |
//! | `flood` | calls `send` to itself forever | the host-call limit per event |
//! | `log-flood` | logs forever | the host-call limit per event |
//! | `grow N MS` | holds N MiB (touched) for MS ms of compute, then answers `grown` | the tenant's instance caps and memory budget |
//!
//! On connect, `?loop=connect` spins forever in `$connect`.

use wsgate_sdk::{
    ConnectResponse, ConnectionInfo, Message, MessageEvent, Plugin, connections, log,
};

/// The hostile handler.
pub struct Hostile;

#[inline(never)]
fn recurse(depth: u64, pad: &mut [u8; 64]) -> u64 {
    // Never true: the stack runs out long before. It keeps the recursion conditional.
    if depth == u64::MAX {
        return 0;
    }
    pad[(depth % 64) as usize] = depth as u8;
    let mut local = *pad;
    recurse(depth + 1, &mut local) + u64::from(local[0])
}

impl Plugin for Hostile {
    fn on_connect(info: ConnectionInfo) -> ConnectResponse {
        if info.query_param("loop") == Some("connect") {
            #[allow(clippy::empty_loop)]
            loop {}
        }
        ConnectResponse::accept()
    }

    fn on_message(event: MessageEvent) -> Option<Message> {
        match event.message.as_text() {
            Some("loop") => loop {
                std::hint::black_box(0u64);
            },
            Some("hog") => {
                let mut blocks = Vec::new();
                loop {
                    blocks.push(std::hint::black_box(vec![1u8; 1 << 20]));
                }
            }
            Some("recurse") => Some(Message::text(recurse(0, &mut [0; 64]).to_string())),
            Some("huge") => Some(Message::text("h".repeat(1 << 20))),
            Some("flood") => {
                let message = Message::text("flood");
                loop {
                    let _ = connections::send(&event.connection_id, &message);
                }
            }
            Some("log-flood") => loop {
                log::debug("flood");
            },
            Some(text) if text.starts_with("grow ") => {
                let mut args = text
                    .split(' ')
                    .skip(1)
                    .map(|n| n.parse::<u64>().unwrap_or(0));
                let (mib, ms) = (args.next().unwrap_or(0), args.next().unwrap_or(0));
                let held = std::hint::black_box(vec![1u8; (mib << 20) as usize]);
                let started = std::time::Instant::now();
                while started.elapsed() < std::time::Duration::from_millis(ms) {
                    std::hint::black_box(&held);
                }
                Some(Message::text("grown"))
            }
            _ => Some(event.message),
        }
    }
}

wsgate_sdk::export!(Hostile);
