//! `flexdisk <call> <args…>`: prints exactly one JSON reply, exits 0 on Success.

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("doctor") {
        // For operators, not kubelet: plain lines, non-zero exit when something is broken.
        let (lines, broken) = flexdisk::doctor::run(&flexdisk::settings::Settings::from_env());
        for l in lines {
            println!("{l}");
        }
        std::process::exit(i32::from(broken));
    }
    let reply = flexdisk::main_reply(&argv);
    println!("{}", reply.to_json());
    if reply.exit_code() == 0 {
        flexdisk::install::stay_if_asked(&argv);
    }
    std::process::exit(reply.exit_code());
}
