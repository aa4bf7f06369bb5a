//! A valid wasm module that is not an actor: it exports none of the ABI's functions.

#[unsafe(no_mangle)]
pub extern "C" fn add(a: i32, b: i32) -> i32 {
    a + b
}
