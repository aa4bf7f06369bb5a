//! Integration tests: one binary (wasmtime links once), a module per behaviour.

mod messaging;
