//! Integration tests: one binary (wasmtime links once), a module per behaviour.

mod backpressure;
mod bench_guests;
mod cache;
mod capabilities;
mod cli;
mod density;
mod events;
mod examples;
mod failures;
mod gateway;
mod guests;
mod limits;
mod loading;
mod messaging;
mod pubsub;
mod refs;
mod state;
mod streams;
mod supervision;
mod timers;
mod trim;
mod virtual_actors;
mod wasi;
