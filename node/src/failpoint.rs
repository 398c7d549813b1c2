//! Crash points for tests: when the environment variable `PDX_FAILPOINT`
//! names a point the process reaches, it aborts there at once (no
//! destructors, no flushing: what a power cut or SIGKILL leaves). Tests use it
//! to prove that every durable step is atomic; production never sets it.

/// Aborts the process if `PDX_FAILPOINT` is `name`.
pub fn hit(name: &str) {
    if std::env::var_os("PDX_FAILPOINT").is_some_and(|v| v == name) {
        eprintln!("pdx: failpoint {name} reached; aborting");
        std::process::abort();
    }
}
