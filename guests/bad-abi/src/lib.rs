//! A module that looks like an actor but was built for another ABI version (999). Written
//! without the SDK on purpose: the host must refuse it with a typed error.

#[unsafe(no_mangle)]
pub extern "C" fn bunraku_abi_version() -> i32 {
    999
}

#[unsafe(no_mangle)]
pub extern "C" fn bunraku_describe() -> i64 {
    0
}

#[unsafe(no_mangle)]
pub extern "C" fn bunraku_run() -> i32 {
    0
}
