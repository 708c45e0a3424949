//! `flexdisk <call> <args…>`: prints exactly one JSON reply, exits 0 on Success.

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let reply = flexdisk::main_reply(&argv);
    println!("{}", reply.to_json());
    std::process::exit(reply.exit_code());
}
