//! Paths of the plugins built for wasm32-wasip2, for the end-to-end tests. The build
//! script builds them, so a bare `cargo test` needs nothing built beforehand.

include!(concat!(env!("OUT_DIR"), "/plugins.rs"));
