//! Fetches the web app's npm libraries (web/package.json, pinned with integrity hashes in
//! web/package-lock.json) before the crate embeds them, so `cargo build` and `cargo test` need no
//! separate step. `npm ci --ignore-scripts` runs only when web/node_modules is missing or older
//! than the lockfile; packages' install scripts never run.

use std::path::Path;
use std::process::Command;

fn main() {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    let lock = web.join("package-lock.json");
    // npm writes this after every install: when it is older than the lockfile, the lockfile changed.
    let installed = web.join("node_modules/.package-lock.json");
    println!("cargo:rerun-if-changed=web/package.json");
    println!("cargo:rerun-if-changed=web/package-lock.json");
    println!("cargo:rerun-if-changed=web/node_modules/.package-lock.json");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let fresh = match (modified(&installed), modified(&lock)) {
        (Some(installed), Some(lock)) => installed >= lock,
        _ => false,
    };
    if fresh {
        return;
    }
    let npm = if cfg!(windows) { "npm.cmd" } else { "npm" };
    let status = Command::new(npm)
        .args([
            "ci",
            "--ignore-scripts",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
        ])
        .current_dir(&web)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "`npm ci --ignore-scripts` in {} failed ({s}): the web app's libraries (web/package.json) \
             could not be fetched from the npm registry",
            web.display()
        ),
        Err(e) => panic!(
            "building pettracker needs Node.js and npm to fetch the web app's libraries \
             (web/package.json): running `npm` failed: {e}. Install Node.js 18 or newer with npm \
             (Debian/Ubuntu: apt-get install nodejs npm) and build again."
        ),
    }
}
