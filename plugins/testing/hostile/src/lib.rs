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
//! | `print N` | prints N numbered lines of 10 bytes to stdout, then answers `printed` | the host-call limit per event, else the log cap per event |
//! | `busy MS` | computes for MS ms, calling `config.get` every 200 µs, then answers `busy` | the heavy lane (guest compute per event, whatever the host calls) |
//! | `forge` | logs and prints lines with a line break and a carriage return inside, then answers `forged` | control characters escaped in the log |
//!
//! On connect, `?loop=connect` spins forever in `$connect`.

use std::time::{Duration, Instant};

use wsgate_sdk::{
    ConnectResponse, ConnectionInfo, Message, MessageEvent, Plugin, config, connections, log,
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
        // A slow `$connect`, so that upgrades overlap (the tenant-cap race test).
        if let Some(ms) = info.query_param("spin_ms").and_then(|ms| ms.parse().ok()) {
            let started = std::time::Instant::now();
            while started.elapsed() < std::time::Duration::from_millis(ms) {
                std::hint::black_box(0u64);
            }
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
            Some(text) if text.starts_with("print ") => {
                let lines = text[6..].parse::<u32>().unwrap_or(0);
                for line in 0..lines {
                    // "line 00042" and a newline: 10 bytes in the log.
                    println!("line {line:05}");
                }
                Some(Message::text("printed"))
            }
            Some(text) if text.starts_with("busy ") => {
                let ms = text[5..].parse::<u64>().unwrap_or(0);
                let started = Instant::now();
                let mut called = started;
                // Never a whole epoch tick without a host call: the evasion that counting
                // ticks without host calls let through.
                while started.elapsed() < Duration::from_millis(ms) {
                    if called.elapsed() >= Duration::from_micros(200) {
                        std::hint::black_box(config::get("busy"));
                        called = Instant::now();
                    }
                    std::hint::black_box(0u64);
                }
                Some(Message::text("busy"))
            }
            // Blocks in a host wait (a clock's pollable): no wasm runs, so no epoch tick.
            Some(text) if text.starts_with("sleep ") => {
                let ms = text[6..].parse::<u64>().unwrap_or(0);
                std::thread::sleep(Duration::from_millis(ms));
                Some(Message::text("slept"))
            }
            Some("forge") => {
                log::info("logged\n2030-01-01T00:00:00.000000Z ERROR wsgate: forged by log");
                println!("printed\r2030-01-01T00:00:00.000000Z ERROR wsgate: forged by stdout");
                Some(Message::text("forged"))
            }
            Some(text) if text.starts_with("grow ") => {
                let mut args = text
                    .split(' ')
                    .skip(1)
                    .map(|n| n.parse::<u64>().unwrap_or(0));
                let (mib, ms) = (args.next().unwrap_or(0), args.next().unwrap_or(0));
                let held = std::hint::black_box(vec![1u8; (mib << 20) as usize]);
                let started = Instant::now();
                while started.elapsed() < Duration::from_millis(ms) {
                    std::hint::black_box(&held);
                }
                Some(Message::text("grown"))
            }
            _ => Some(event.message),
        }
    }
}

wsgate_sdk::export!(Hostile);
