//! Integration tests: one binary (wasmtime links once), a module per behaviour.

mod backpressure;
mod bench_guests;
mod cache;
mod cli;
mod density;
mod examples;
mod failures;
mod guests;
mod loading;
mod messaging;
mod pubsub;
mod wasi;
