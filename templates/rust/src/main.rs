//! {{name}}: a zvm guest in Rust, built for wasm32-wasi by build.sh.
//!
//! Prints its arguments, if any, on one line; then copies the channel /dev/input to standard
//! output with every letter upper-cased. manifest.toml binds /dev/input to input.txt; from the
//! command line, `zvm run {{name}}.wasm --input input=FILE` binds it to another file.

use std::io::{Read, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut out = std::io::stdout().lock();
    if !args.is_empty() {
        let _ = writeln!(out, "{}", args.join(" "));
    }
    let mut input = Vec::new();
    if let Err(e) = std::fs::File::open("/dev/input").and_then(|mut f| f.read_to_end(&mut input)) {
        eprintln!("{{name}}: /dev/input: {}", e);
        return ExitCode::FAILURE;
    }
    input.make_ascii_uppercase();
    if out.write_all(&input).and_then(|()| out.flush()).is_err() {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
