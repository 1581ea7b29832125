//! firmware-sim: runs simulated collars against a pettracker broker.

fn main() {
    eprintln!("firmware-sim: not built yet (see issue 7)");
    std::process::exit(2);
}
