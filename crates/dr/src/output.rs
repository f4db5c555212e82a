//! stdout is for data. A closed pipe (`dr list | head`) ends the program quietly, like any
//! Unix tool, instead of panicking.

use std::io::Write;

pub fn line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(1);
    }
}

/// `println!` for data on stdout.
#[macro_export]
macro_rules! out {
    ($($t:tt)*) => { $crate::output::line(format_args!($($t)*)) };
}
