//! Writing to stdout. When the reader goes away (`pdx releases | head -1`),
//! the process exits quietly with status 0 instead of panicking, as ripgrep
//! does; any other write error is reported once on stderr.

use std::io::Write;

/// Writes `text` (and a newline) to stdout.
pub fn line(text: &str) {
    let mut out = std::io::stdout().lock();
    let result = out
        .write_all(text.as_bytes())
        .and_then(|_| out.write_all(b"\n"))
        .and_then(|_| out.flush());
    if let Err(e) = result {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("pdx: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

/// Writes `v` as pretty JSON.
pub fn json(v: &serde_json::Value) {
    match serde_json::to_string_pretty(v) {
        Ok(text) => line(&text),
        Err(e) => {
            eprintln!("pdx: cannot render JSON: {e}");
            std::process::exit(1);
        }
    }
}

/// `println!` that exits quietly when stdout is closed.
macro_rules! outln {
    () => { $crate::output::line("") };
    ($($arg:tt)*) => { $crate::output::line(&format!($($arg)*)) };
}
pub(crate) use outln;
