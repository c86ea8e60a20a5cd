//! A Rust std program, built with Debian's rustc for wasm32-wasi, touching what Rust programs
//! commonly use: args, env, stdin, the scratch filesystem, directory listing, time, and a
//! declared output channel. The test compares its output byte for byte.
use std::io::{Read, Write};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    println!("args={args:?}");
    println!("env LANG={:?}", std::env::var("LANG").ok());
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).unwrap();
    std::fs::create_dir_all("/tmp/a/b").unwrap();
    std::fs::write("/tmp/a/b/f.txt", input.to_uppercase()).unwrap();
    std::fs::rename("/tmp/a/b/f.txt", "/tmp/a/g.txt").unwrap();
    let back = std::fs::read_to_string("/tmp/a/g.txt").unwrap();
    let mut dev: Vec<String> = std::fs::read_dir("/dev")
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    dev.sort();
    println!("dev={dev:?}");
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    println!("realtime>=start: {}", since.as_secs() >= 1_700_000_000);
    let t0 = std::time::Instant::now();
    std::thread::sleep(std::time::Duration::from_secs(2));
    println!("slept>=2s: {}", t0.elapsed().as_secs() >= 2);
    print!("{back}");
    let mut out = std::fs::File::create("/dev/output").unwrap();
    out.write_all(format!("{} bytes\n", back.len()).as_bytes()).unwrap();
    assert!(std::fs::metadata("/etc/passwd").is_err());
}
