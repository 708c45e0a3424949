//! The dynamic provisioner. Not built yet (issue #6).

fn main() {
    eprintln!("flexdisk-provisioner is not implemented yet in this build");
    std::process::exit(1);
}
