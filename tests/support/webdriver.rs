//! A minimal W3C WebDriver client over `ureq`, enough to drive headless Chromium through
//! `chromedriver` from a test: open a page, find elements, click, type, run a script, take a
//! screenshot. (No crate: WebDriver is plain HTTP and JSON, and the few calls a test needs are
//! shorter than a dependency.)

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The key W3C WebDriver names an element reference with.
const ELEMENT: &str = "element-6066-11e4-a5e6-4a4b4b4b4b4b";

/// Where the browser and its driver are, if installed: `CHROMIUM`/`CHROMEDRIVER` or the Debian
/// paths.
pub fn find_browser() -> Option<(PathBuf, PathBuf)> {
    let pick = |var: &str, candidates: &[&str]| -> Option<PathBuf> {
        if let Ok(p) = std::env::var(var) {
            return Some(PathBuf::from(p));
        }
        candidates.iter().map(PathBuf::from).find(|p| p.exists())
    };
    let browser = pick("CHROMIUM", &["/usr/bin/chromium", "/usr/bin/chromium-browser"])?;
    let driver =
        pick("CHROMEDRIVER", &["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"])?;
    Some((browser, driver))
}

/// A chromedriver process and one headless browser session; both end on drop.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and a headless session of `browser`, with a
    /// `width`×`height` window.
    pub fn start(
        browser: &Path,
        driver: &Path,
        width: u32,
        height: u32,
    ) -> Result<Browser, String> {
        let port = raftlabkv::testkit::cluster::free_port().map_err(|e| e.to_string())?;
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", driver.display()))?;
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build();
        let mut b = Browser {
            driver: child,
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            agent,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while b.agent.get(&format!("{}/status", b.base)).call().is_err() {
            if Instant::now() > deadline {
                return Err("chromedriver did not answer within 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": browser.display().to_string(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", format!("--window-size={width},{height}")]
            }
        }}});
        let v = b.call("POST", "/session", Some(caps))?;
        b.session =
            v["sessionId"].as_str().ok_or_else(|| format!("no session id in {v}"))?.to_string();
        Ok(b)
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = if path == "/session" {
            format!("{}{path}", self.base)
        } else {
            format!("{}/session/{}{path}", self.base, self.session)
        };
        let req = self.agent.request(method, &url);
        let req = req.set("Content-Type", "application/json");
        let res = match body {
            Some(b) => req.send_string(&b.to_string()),
            None if method == "POST" => req.send_string("{}"),
            None => req.call(),
        };
        let text = match res {
            Ok(r) => r.into_string().map_err(|e| e.to_string())?,
            Err(ureq::Error::Status(code, r)) => {
                let mut s = String::new();
                let _ = r.into_reader().take(4096).read_to_string(&mut s);
                return Err(format!("{method} {path}: HTTP {code}: {s}"));
            }
            Err(e) => return Err(format!("{method} {path}: {e}")),
        };
        let v: Value = serde_json::from_str(&text).map_err(|e| format!("{path}: {e}: {text}"))?;
        Ok(v["value"].clone())
    }

    /// Opens `url`.
    pub fn goto(&self, url: &str) -> Result<(), String> {
        self.call("POST", "/url", Some(json!({ "url": url }))).map(|_| ())
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its value.
    pub fn eval(&self, script: &str, args: Value) -> Result<Value, String> {
        self.call("POST", "/execute/sync", Some(json!({ "script": script, "args": args })))
    }

    /// The first element matching the CSS `selector`.
    pub fn find(&self, selector: &str) -> Result<String, String> {
        let v = self.call(
            "POST",
            "/element",
            Some(json!({ "using": "css selector", "value": selector })),
        )?;
        // The W3C key, or whatever single key an older driver uses.
        let id = v[ELEMENT]
            .as_str()
            .or_else(|| v.as_object().and_then(|o| o.values().next()).and_then(Value::as_str));
        id.map(str::to_string).ok_or_else(|| format!("no element {selector}: {v}"))
    }

    /// Clicks the element matching `selector`.
    pub fn click(&self, selector: &str) -> Result<(), String> {
        let id = self.find(selector)?;
        self.call("POST", &format!("/element/{id}/click"), None).map(|_| ())
    }

    /// Types `text` into the element matching `selector` (after clearing it).
    pub fn type_into(&self, selector: &str, text: &str) -> Result<(), String> {
        let id = self.find(selector)?;
        self.call("POST", &format!("/element/{id}/clear"), None)?;
        self.call("POST", &format!("/element/{id}/value"), Some(json!({ "text": text })))
            .map(|_| ())
    }

    /// Saves a PNG screenshot of the viewport to `path`.
    pub fn screenshot(&self, path: &Path) -> Result<(), String> {
        use base64::Engine as _;
        let v = self.call("GET", "/screenshot", None)?;
        let b64 = v.as_str().ok_or("no screenshot data")?;
        let png =
            base64::engine::general_purpose::STANDARD.decode(b64).map_err(|e| e.to_string())?;
        std::fs::write(path, png).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Polls `script` every 100 ms until it returns a truthy value, or `within` passes; returns
    /// the last value.
    pub fn wait_for(&self, within: Duration, script: &str, args: Value) -> Result<Value, String> {
        let deadline = Instant::now() + within;
        loop {
            let v = self.eval(script, args.clone())?;
            let truthy =
                !matches!(&v, Value::Null | Value::Bool(false)) && v != json!(0) && v != json!("");
            if truthy || Instant::now() > deadline {
                return Ok(v);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.agent.delete(&format!("{}/session/{}", self.base, self.session)).call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
