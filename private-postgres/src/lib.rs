//! A private PostgreSQL cluster that pettracker creates, starts and stops itself: the server's when no database is configured, and the tests' shared and dedicated clusters.
//!
//! `initdb` and `postgres` refuse to run as root, and CI (like many containers) runs as root, so when we
//! are root every server binary is started as an unprivileged system user (`postgres`, else `nobody`)
//! that owns the cluster directory. The cluster is started with `pg_ctl` so that it survives a crash of
//! the process that started it: the next start finds it running and reuses it instead of failing on a
//! stale lock. A file lock serialises concurrent starters (parallel test processes).

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rand::Rng;
use secrecy::{ExposeSecret, SecretString};

/// Errors from finding, creating, starting or stopping the private cluster.
#[derive(Debug, thiserror::Error)]
pub enum PrivateDbError {
    #[error(
        "no PostgreSQL server binaries found (looked for initdb in {searched}); install PostgreSQL 14 or newer \
         (Debian/Ubuntu: `apt-get install postgresql`) or set DATABASE_URL to an existing server"
    )]
    NotInstalled { searched: String },
    #[error(
        "running as root, but neither the `postgres` nor the `nobody` system user exists to run PostgreSQL as"
    )]
    NoUnprivilegedUser,
    #[error("cannot prepare the private database directory {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },
}

/// Settings for a private cluster.
#[derive(Debug, Clone)]
pub struct PrivateDbOptions {
    /// Directory holding the cluster (`pgdata/`), its password, port and log. Created when missing.
    pub root: PathBuf,
    /// Extra `postgres -c` settings, e.g. `fsync=off` for throwaway test clusters.
    pub settings: Vec<(String, String)>,
    /// Name of the database pettracker uses inside the cluster.
    pub database: String,
}

impl PrivateDbOptions {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            settings: Vec::new(),
            database: "pettracker".to_owned(),
        }
    }
}

/// A running private cluster. Dropping it does not stop the server: call [`PrivatePostgres::stop`].
pub struct PrivatePostgres {
    bindir: PathBuf,
    opts: PrivateDbOptions,
    run_as: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
    password: SecretString,
    port: u16,
    /// False when the cluster was already running (another pettracker process, or a test run):
    /// then it is not ours to stop on shutdown.
    started_here: bool,
}

impl std::fmt::Debug for PrivatePostgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivatePostgres")
            .field("root", &self.opts.root)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

const SUPERUSER: &str = "pettracker";

impl PrivatePostgres {
    /// Creates the cluster if needed and starts it (or adopts it if it already runs).
    pub fn start(opts: PrivateDbOptions) -> Result<Self, PrivateDbError> {
        let bindir = find_bindir()?;
        let run_as = unprivileged_user()?;
        let root = absolute(&opts.root)?;
        let opts = PrivateDbOptions { root, ..opts };
        create_dir(&opts.root, run_as)?;

        let lock_path = opts.root.join(".lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| io_err(&lock_path, source))?;
        lock.lock().map_err(|source| io_err(&lock_path, source))?;

        let pgdata = opts.root.join("pgdata");
        let password_file = opts.root.join("password");
        if !pgdata.join("PG_VERSION").exists() {
            // A half-made cluster from an interrupted initdb would make initdb refuse: start over.
            if pgdata.exists() {
                fs::remove_dir_all(&pgdata).map_err(|source| io_err(&pgdata, source))?;
            }
            let password = random_password();
            write_private(&password_file, password.as_bytes(), run_as)?;
            let out = pg_command(&bindir, "initdb", run_as)
                .arg("-D")
                .arg(&pgdata)
                .args([
                    "-U",
                    SUPERUSER,
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--auth-host=scram-sha-256",
                ])
                .args(["--auth-local=scram-sha-256", "--pwfile"])
                .arg(&password_file)
                .output();
            check("initdb", out)?;
        }
        let password = fs::read_to_string(&password_file)
            .map_err(|source| io_err(&password_file, source))?
            .trim()
            .to_owned();

        let mut this = Self {
            bindir,
            opts,
            run_as,
            password: SecretString::from(password),
            port: 0,
            started_here: false,
        };
        match this.running_port() {
            Some(port) => this.port = port,
            None => {
                this.pg_ctl_start()?;
                this.started_here = true;
            }
        }
        this.ensure_database()?;
        drop(lock);
        Ok(this)
    }

    /// The port the cluster listens on (127.0.0.1 only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether this handle started the server, rather than finding it running.
    pub fn started_here(&self) -> bool {
        self.started_here
    }

    /// A connection URL for pettracker's database, with the generated password.
    pub fn url(&self) -> SecretString {
        self.url_for(&self.opts.database)
    }

    /// A connection URL for another database in the same cluster.
    pub fn url_for(&self, database: &str) -> SecretString {
        SecretString::from(format!(
            "postgres://{SUPERUSER}:{}@127.0.0.1:{}/{database}",
            self.password.expose_secret(),
            self.port
        ))
    }

    /// Stops the server (fast shutdown: open sessions are ended, committed data is safe).
    pub fn stop(&self) -> Result<(), PrivateDbError> {
        let out = pg_command(&self.bindir, "pg_ctl", self.run_as)
            .arg("-D")
            .arg(self.pgdata())
            .args(["-m", "fast", "-w", "stop"])
            .output();
        check("pg_ctl stop", out).map(|_| ())
    }

    /// Starts the server again after [`stop`](Self::stop), on the same port.
    pub fn restart(&mut self) -> Result<(), PrivateDbError> {
        if self.running_port().is_none() {
            let port = self.port;
            self.pg_ctl_start_on(port)?;
        }
        Ok(())
    }

    fn pgdata(&self) -> PathBuf {
        self.opts.root.join("pgdata")
    }

    /// The port of a server already running on this cluster, read from `postmaster.pid`.
    fn running_port(&self) -> Option<u16> {
        let status = pg_command(&self.bindir, "pg_ctl", self.run_as)
            .arg("-D")
            .arg(self.pgdata())
            .arg("status")
            .output()
            .ok()?;
        if !status.status.success() {
            return None;
        }
        let pid_file = fs::read_to_string(self.pgdata().join("postmaster.pid")).ok()?;
        pid_file.lines().nth(3)?.trim().parse().ok()
    }

    fn pg_ctl_start(&mut self) -> Result<(), PrivateDbError> {
        let port = free_port().map_err(|source| io_err(&self.opts.root, source))?;
        self.pg_ctl_start_on(port)
    }

    fn pg_ctl_start_on(&mut self, port: u16) -> Result<(), PrivateDbError> {
        let mut options = format!(
            // No unix socket: its path length is limited and we only ever connect over TCP.
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c max_connections=300"
        );
        for (key, value) in &self.opts.settings {
            options.push_str(&format!(" -c {key}={value}"));
        }
        let log = self.opts.root.join("postgres.log");
        let out = pg_command(&self.bindir, "pg_ctl", self.run_as)
            .arg("-D")
            .arg(self.pgdata())
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o", &options, "start"])
            .output();
        check("pg_ctl start", out).map_err(|err| match err {
            PrivateDbError::Command { command, detail } => PrivateDbError::Command {
                command,
                detail: format!("{detail}; server log: {}", tail(&log)),
            },
            other => other,
        })?;
        self.port = port;
        Ok(())
    }

    fn ensure_database(&self) -> Result<(), PrivateDbError> {
        let db = &self.opts.database;
        let psql = |sql: &str| {
            pg_command(&self.bindir, "psql", self.run_as)
                .env("PGPASSWORD", self.password.expose_secret())
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    SUPERUSER,
                ])
                .args(["-d", "postgres", "-tAc", sql])
                .output()
        };
        let exists = check(
            "psql",
            psql(&format!("SELECT 1 FROM pg_database WHERE datname = '{db}'")),
        )?;
        if String::from_utf8_lossy(&exists.stdout).trim() != "1" {
            check(
                "psql create database",
                psql(&format!("CREATE DATABASE \"{db}\"")),
            )?;
        }
        Ok(())
    }
}

/// Finds the directory holding `initdb`, `pg_ctl` and `postgres`.
pub fn find_bindir() -> Result<PathBuf, PrivateDbError> {
    let candidates = match std::env::var_os("PETTRACKER_PG_BINDIR") {
        // An explicit choice is the only candidate: silently using another version would surprise.
        Some(dir) => vec![PathBuf::from(dir)],
        None => default_bindirs(),
    };
    for dir in &candidates {
        if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
            return Ok(dir.clone());
        }
    }
    Err(PrivateDbError::NotInstalled {
        searched: candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

fn default_bindirs() -> Vec<PathBuf> {
    let mut candidates = Vec::new();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        candidates.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    }
    // Debian keeps each major version apart; prefer the newest.
    if let Ok(entries) = fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<(u32, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
                Some((v, e.path().join("bin")))
            })
            .collect();
        versions.sort_by_key(|v| std::cmp::Reverse(v.0));
        candidates.extend(versions.into_iter().map(|(_, p)| p));
    }
    candidates.extend(
        [
            "/usr/local/pgsql/bin",
            "/usr/pgsql/bin",
            "/usr/local/bin",
            "/usr/bin",
        ]
        .iter()
        .map(PathBuf::from),
    );
    candidates
}

/// The user to run server binaries as: none when we are not root.
fn unprivileged_user() -> Result<Option<(nix::unistd::Uid, nix::unistd::Gid)>, PrivateDbError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    for name in ["postgres", "nobody"] {
        if let Ok(Some(user)) = nix::unistd::User::from_name(name) {
            return Ok(Some((user.uid, user.gid)));
        }
    }
    Err(PrivateDbError::NoUnprivilegedUser)
}

fn pg_command(
    bindir: &Path,
    program: &str,
    run_as: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
) -> Command {
    let mut cmd = Command::new(bindir.join(program));
    // The locale of the caller may not exist on the machine; the cluster uses C anyway.
    cmd.env("LC_ALL", "C").env_remove("PGDATA");
    if let Some((uid, gid)) = run_as {
        cmd.uid(uid.as_raw()).gid(gid.as_raw());
        // std drops root's supplementary groups (setgroups(0)) when a uid is set.
        // The unprivileged user may not be able to enter root's working directory.
        cmd.current_dir("/");
    }
    cmd
}

fn check(what: &str, out: std::io::Result<Output>) -> Result<Output, PrivateDbError> {
    match out {
        Ok(out) if out.status.success() => Ok(out),
        Ok(out) => Err(PrivateDbError::Command {
            command: what.to_owned(),
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        }),
        Err(err) => Err(PrivateDbError::Command {
            command: what.to_owned(),
            detail: err.to_string(),
        }),
    }
}

fn create_dir(
    path: &Path,
    run_as: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
) -> Result<(), PrivateDbError> {
    fs::create_dir_all(path).map_err(|source| io_err(path, source))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
        .map_err(|source| io_err(path, source))?;
    if let Some((uid, gid)) = run_as {
        std::os::unix::fs::chown(path, Some(uid.as_raw()), Some(gid.as_raw()))
            .map_err(|source| io_err(path, source))?;
        // The server user must be able to reach the directory through its parents.
        let mut parent = path.parent();
        while let Some(dir) = parent {
            if let Ok(meta) = fs::metadata(dir)
                && meta.permissions().mode() & 0o001 == 0
            {
                return Err(io_err(
                    dir,
                    std::io::Error::new(
                        std::io::ErrorKind::PermissionDenied,
                        "the unprivileged PostgreSQL user cannot enter this directory; choose a data directory elsewhere",
                    ),
                ));
            }
            parent = dir.parent();
        }
    }
    Ok(())
}

fn write_private(
    path: &Path,
    contents: &[u8],
    run_as: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
) -> Result<(), PrivateDbError> {
    let mut file = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| io_err(path, source))?;
    file.write_all(contents)
        .map_err(|source| io_err(path, source))?;
    if let Some((uid, gid)) = run_as {
        std::os::unix::fs::chown(path, Some(uid.as_raw()), Some(gid.as_raw()))
            .map_err(|source| io_err(path, source))?;
    }
    Ok(())
}

fn random_password() -> String {
    let mut rng = rand::rng();
    (0..32)
        .map(|_| {
            let idx = rng.random_range(0..62);
            b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"[idx] as char
        })
        .collect()
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn absolute(path: &Path) -> Result<PathBuf, PrivateDbError> {
    std::path::absolute(path).map_err(|source| io_err(path, source))
}

fn io_err(path: &Path, source: std::io::Error) -> PrivateDbError {
    PrivateDbError::Io {
        path: path.to_owned(),
        source,
    }
}

fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}
