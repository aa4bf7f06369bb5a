//! Integration tests: one binary (wasmtime links once), a module per behaviour.

mod backpressure;
mod failures;
mod loading;
mod messaging;
mod pubsub;
mod wasi;
