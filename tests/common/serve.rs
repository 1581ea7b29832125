//! The real `pettracker serve` binary as a child process: what tests that kill, restart or scale out the server need, where an in-process app cannot stand in.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The real `pettracker` binary, with none of the test runner's own `PETTRACKER_*`,
/// `DATABASE_URL` or `RUST_LOG`: what it reads is what the test gives it.
pub fn pettracker_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pettracker"));
    for (key, _) in std::env::vars() {
        if key.starts_with("PETTRACKER_") || key == "DATABASE_URL" || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// A running `pettracker serve`, killed when dropped (a failing test leaves no server behind).
pub struct ServeProcess {
    child: Child,
    /// Its "pettracker is serving" log line, which names the addresses it bound.
    pub serving: String,
    /// Keeps the thread draining its log alive (a full pipe would stall the server).
    _log: std::sync::mpsc::Receiver<String>,
}

impl ServeProcess {
    /// Starts `pettracker serve` with `args` and `env`, none of the test runner's own
    /// `PETTRACKER_*`, `DATABASE_URL` or `RUST_LOG`, and waits until it says it is serving.
    pub fn start(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> ServeProcess {
        let mut child = pettracker_command()
            .arg("serve")
            .args(args)
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let serving = loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("serve never said it was serving");
            if line.contains("pettracker is serving") {
                break line;
            }
        };
        ServeProcess {
            child,
            serving,
            _log: rx,
        }
    }

    /// The value of `key=` in the serving line (up to the next space).
    pub fn field(&self, key: &str) -> &str {
        self.serving
            .split(&format!("{key}="))
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no {key} in {:?}", self.serving))
    }

    /// `http://` and the HTTP address it bound.
    pub fn http(&self) -> String {
        format!("http://{}", self.field("http_addr"))
    }

    /// The port of its embedded broker's MQTT listener.
    pub fn mqtt_port(&self) -> u16 {
        let addr = self.field("mqtt_addr");
        addr.trim_start_matches("Some(")
            .trim_end_matches(')')
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no MQTT port in {addr}"))
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// Waits for it to exit.
    pub async fn wait(mut self) -> ExitStatus {
        let mut child = std::mem::replace(&mut self.child, Command::new("true").spawn().unwrap());
        tokio::task::spawn_blocking(move || child.wait())
            .await
            .unwrap()
            .unwrap()
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
