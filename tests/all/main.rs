//! Integration tests: one binary (wasmtime links once), a module per behaviour.

mod failures;
mod loading;
mod messaging;
mod pubsub;
