//! A real browser for the web app's tests: Debian's headless chromium driven by its
//! chromedriver over WebDriver (fantoccini), with a fresh profile, nothing reaching other
//! origins, and the console collected so a test can require it to stay free of errors.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long a test waits for something to show on the page.
pub const WAIT: Duration = Duration::from_secs(20);

/// The screen a browser emulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    /// 1280×800.
    Desktop,
    /// 390×844, touch, like a current phone.
    Phone,
}

impl Screen {
    pub fn size(self) -> (u32, u32) {
        match self {
            Screen::Desktop => (1280, 800),
            Screen::Phone => (390, 844),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Screen::Desktop => "desktop",
            Screen::Phone => "phone",
        }
    }
}

pub struct Browser {
    pub client: Client,
    driver: Child,
    /// chromedriver's port, and the session, for ending it from `Drop` when a test panicked.
    port: u16,
    session: Option<String>,
    profile: PathBuf,
    pub screen: Screen,
    /// Console entries already read, kept for the final check.
    console: Vec<Value>,
}

/// A chromedriver command this crate does not wrap: `POST /session/{id}/<path>` with a body.
#[derive(Debug)]
struct SessionPost {
    path: &'static str,
    body: Value,
}

impl WebDriverCompatibleCommand for SessionPost {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/{}",
            session_id.unwrap_or(""),
            self.path
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(self.body.to_string()))
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Browser {
    /// Starts chromedriver and a fresh headless chromium emulating `screen`.
    pub async fn start(screen: Screen) -> Browser {
        Browser::start_with(screen, &[]).await
    }

    pub async fn start_with(screen: Screen, extra_args: &[&str]) -> Browser {
        let profile = std::env::temp_dir().join(format!(
            "pettracker-chromium-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&profile).unwrap();
        // chromedriver takes no port 0: a free port may be taken in between, so try a few.
        for attempt in 0.. {
            let port = free_port();
            let mut driver = Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                // Its own process group, with the browser it starts: `Drop` ends them all.
                .process_group(0)
                // chromium's scratch directories go into the profile, removed with it.
                .env("TMPDIR", &profile)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot run {CHROMEDRIVER} ({e}): apt-get install chromium chromium-driver"
                    )
                });
            let (width, height) = screen.size();
            let mut args: Vec<String> = [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-dev-shm-usage",
                "--enable-precise-memory-info",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            args.push(format!("--user-data-dir={}", profile.display()));
            args.push(format!("--window-size={width},{height}"));
            args.extend(extra_args.iter().map(|s| s.to_string()));
            let caps = json!({
                "browserName": "chrome",
                "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
                "goog:loggingPrefs": {"browser": "ALL"},
            });
            let mut builder =
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
            builder.capabilities(caps.as_object().unwrap().clone());
            let url = format!("http://127.0.0.1:{port}");
            let mut client = None;
            let mut last_error = None;
            // chromedriver needs a moment before it listens, and on a loaded machine chromium
            // needs several seconds to start: wait for either by the clock, not by a count.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(45);
            while tokio::time::Instant::now() < deadline {
                match builder.connect(&url).await {
                    Ok(c) => {
                        client = Some(c);
                        break;
                    }
                    Err(e) => {
                        last_error = Some(e.to_string());
                        tokio::time::sleep(Duration::from_millis(200)).await
                    }
                }
            }
            let Some(client) = client else {
                let _ = driver.kill();
                let _ = driver.wait();
                assert!(
                    attempt < 3,
                    "chromedriver did not start a session: {}",
                    last_error.unwrap_or_default()
                );
                continue;
            };
            let session = client.session_id().await.ok().flatten();
            let browser = Browser {
                client,
                driver,
                port,
                session,
                profile: profile.clone(),
                screen,
                console: Vec::new(),
            };
            // A window cannot be narrower than chromium's minimum: the phone is emulated.
            browser
                .cdp(
                    "Emulation.setDeviceMetricsOverride",
                    json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": screen == Screen::Phone}),
                )
                .await;
            if screen == Screen::Phone {
                browser
                    .cdp(
                        "Emulation.setTouchEmulationEnabled",
                        json!({"enabled": true, "maxTouchPoints": 5}),
                    )
                    .await;
            }
            return browser;
        }
        unreachable!()
    }

    /// A Chrome DevTools Protocol command, through chromedriver.
    pub async fn cdp(&self, command: &str, params: Value) -> Value {
        self.client
            .issue_cmd(SessionPost {
                path: "goog/cdp/execute",
                body: json!({"cmd": command, "params": params}),
            })
            .await
            .unwrap_or_else(|e| panic!("CDP {command}: {e}"))
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// Runs `script` (a function body; `arguments` are `args`) and returns its value.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Waits until `expression` is truthy in the page; returns its value. Fails the test with
    /// `what` after [`WAIT`].
    pub async fn wait_until(&self, what: &str, expression: &str) -> Value {
        self.wait_until_for(what, expression, WAIT).await
    }

    pub async fn wait_until_for(&self, what: &str, expression: &str, wait: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + wait;
        let script = format!("return ({expression}) || null;");
        loop {
            let value = self.js(&script, vec![]).await;
            if !value.is_null() && value != json!(false) {
                return value;
            }
            if tokio::time::Instant::now() > deadline {
                let text = self
                    .js("return document.body.innerText.slice(0, 3000);", vec![])
                    .await;
                panic!(
                    "not within {wait:?}: {what}\n(`{expression}`)\npage text:\n{}",
                    text.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The element for a CSS selector, once it is there.
    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(el) = self.client.find(Locator::Css(css)).await {
                return el;
            }
            assert!(tokio::time::Instant::now() < deadline, "no element {css}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn click(&self, css: &str) {
        // Elements below the fold on a phone are scrolled to by the click itself; a notice may
        // briefly cover one, or a screen be drawn again under it: find it again and retry.
        for attempt in 0.. {
            let el = self.find(css).await;
            match el.click().await {
                Ok(()) => return,
                Err(e) if attempt < 40 => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot click {css}: {e}"),
            }
        }
    }

    pub async fn fill(&self, css: &str, text: &str) {
        for attempt in 0.. {
            let el = self.find(css).await;
            let typed = match el.clear().await {
                Ok(()) => el.send_keys(text).await,
                Err(e) => Err(e),
            };
            match typed {
                Ok(()) => return,
                Err(e) if attempt < 20 => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot type into {css}: {e}"),
            }
        }
    }

    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap()
    }

    /// Signs in through the form (`data-testid` email, password, sign-in) and waits for the app.
    pub async fn sign_in(&self, app_url: &str, email: &str, password: &str) {
        self.goto(app_url).await;
        self.fill("[data-testid=email]", email).await;
        self.fill("[data-testid=password]", password).await;
        self.click("[data-testid=sign-in]").await;
        self.wait_until(
            "the live feed connected after sign-in",
            "document.querySelector('[data-testid=connection-state][data-state=live]')",
        )
        .await;
    }

    /// Goes to a screen of the app (`#/zones`) and waits for its heading.
    pub async fn open(&self, hash: &str) {
        self.js("window.location.hash = arguments[0];", vec![json!(hash)])
            .await;
        self.wait_until(
            &format!("screen {hash}"),
            "document.querySelector('#panel h1')",
        )
        .await;
    }

    /// Saves a PNG of what is on screen under `target/ui-screenshots/<name>-<screen>.png` and,
    /// when `PETTRACKER_SCREENSHOTS` names a directory (docs/ui), there too.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        // Let the map settle (tiles, animations) before the picture.
        self.js_async(
            "const done = arguments[arguments.length - 1]; requestAnimationFrame(() => requestAnimationFrame(() => setTimeout(done, 400)));",
        )
        .await;
        // Nothing wider than the screen: on a phone a sideways scroll hides half of every row.
        // The body clips, so look at each element; the map, and the strips meant to scroll
        // sideways (tabs, wide tables, payloads), are allowed to.
        let wider = self
            .js(
                "const w = document.documentElement.clientWidth; \
                 return [...document.querySelectorAll('body *')].filter(n => { \
                   const r = n.getBoundingClientRect(); \
                   return r.width > 0 && (r.right > w + 1 || r.left < -1) \
                     && !n.closest('.leaflet-container, .tabs, .table-wrap, pre, [hidden]'); \
                 }).slice(0, 5).map(n => n.outerHTML.slice(0, 160));",
                vec![],
            )
            .await;
        assert_eq!(
            wider,
            json!([]),
            "{name} on {}: wider than the screen",
            self.screen.name()
        );
        let png = self.client.screenshot().await.unwrap();
        let file = format!("{name}-{}.png", self.screen.name());
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(&file), &png).unwrap();
        if let Ok(docs) = std::env::var("PETTRACKER_SCREENSHOTS") {
            let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join(docs);
            std::fs::create_dir_all(&docs).unwrap();
            std::fs::write(docs.join(&file), &png).unwrap();
        }
        dir.join(file)
    }

    pub async fn js_async(&self, script: &str) -> Value {
        self.client
            .execute_async(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("async script failed: {e}"))
    }

    /// New console entries since the last call (chromedriver hands each out once).
    pub async fn console(&mut self) -> Vec<Value> {
        let entries = self
            .client
            .issue_cmd(SessionPost {
                path: "se/log",
                body: json!({"type": "browser"}),
            })
            .await
            .unwrap_or_else(|e| panic!("reading the console: {e}"));
        let entries = entries.as_array().cloned().unwrap_or_default();
        self.console.extend(entries.iter().cloned());
        entries
    }

    /// Fails the test if the page logged an error (an exception, a failed load, a CSP
    /// violation) at any time, except entries containing one of `allowed`.
    pub async fn assert_console_clean(&mut self, allowed: &[&str]) {
        self.console().await;
        let errors: Vec<&Value> = self
            .console
            .iter()
            .filter(|e| e["level"] == "SEVERE")
            .filter(|e| {
                let message = e["message"].as_str().unwrap_or_default();
                !allowed.iter().any(|a| message.contains(a))
            })
            .collect();
        assert!(
            errors.is_empty(),
            "errors in the browser console: {errors:#?}"
        );
    }

    /// Closes the browser; call [`Browser::assert_console_clean`] first.
    pub async fn close(mut self) {
        if self.client.clone().close().await.is_ok() {
            self.session = None;
        }
    }
}

impl Drop for Browser {
    /// Ends the session (chromedriver then quits chromium, which cleans up its profile), kills
    /// whatever of the process group is left, and removes the profile, also when a test failed.
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            delete_session(self.port, &session);
        }
        let group = nix::unistd::Pid::from_raw(self.driver.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// `DELETE /session/{id}` to chromedriver, blocking (for `Drop`), bounded by a timeout.
fn delete_session(port: u16, session: &str) {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let request = format!(
        "DELETE /session/{session} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_ok() {
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
    }
}

fn rand_suffix() -> String {
    use rand::Rng;
    format!("{:x}", rand::rng().random::<u64>())
}
