//! The one `bindgen!` of the host side, generated from the root `wit/` package.
//!
//! Host imports are async, because the registry's verbs are (a registry may live on
//! another machine), and trappable, so a runaway guest can be stopped from inside a
//! host call. Exports are async so a busy guest yields to the reactor at every epoch
//! tick.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "route-handler",
    imports: { default: async | trappable },
    exports: { default: async },
});

pub use self::wsgate::plugin::types;
