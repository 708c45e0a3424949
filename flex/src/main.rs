//! The FlexVolume driver. Not built yet (issue #4): until then every call answers a Failure reply
//! that says so, on stdout only, as kubelet expects.

fn main() {
    let call = std::env::args().nth(1).unwrap_or_default();
    let reply = serde_json::json!({
        "status": "Failure",
        "message": format!("flexdisk: '{call}' is not implemented yet in this build"),
    });
    println!("{reply}");
    std::process::exit(1);
}
