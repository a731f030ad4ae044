//! The SSE endpoint from a page in a real browser (headless Chromium, Debian's
//! `chromium`): the page is served from another origin than the endpoint, opens an
//! `EventSource` with `?token=` (it cannot send headers), and writes each event it gets
//! into its DOM; the test reads the DOM through the DevTools protocol and finds the rows
//! triggers wrote. Without a browser the test is skipped with a reason, unless
//! `ASTHA_REQUIRE_BROWSER=1` (set by `.ci/run`), where a missing browser fails it.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use astha_actors::http::{self, EventHub, HttpConfig, SseComponent};
use astha_actors::Astha;
use serde_json::{json, Value};
use support::*;
use tokio_tungstenite::tungstenite;

const TOKEN: &str = "browser-s3cret";

fn chromium() -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|p| p.is_file())
}

/// Serves `page` at `/` to anyone, on its own port (so its origin is not the API's).
fn serve_page(page: String) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 2 {
                line.clear();
            }
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            );
        }
    });
    port
}

struct Browser(Child, tempfile::TempDir);

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The DevTools port Chromium chose, from its `DevToolsActivePort` file.
fn devtools_port(profile: &std::path::Path) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(profile.join("DevToolsActivePort")) {
            if let Some(port) = text.lines().next().and_then(|l| l.parse().ok()) {
                return port;
            }
        }
        assert!(Instant::now() < deadline, "Chromium did not open DevTools");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn http_get(port: u16, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut length = 0;
    let mut line = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    String::from_utf8(body).unwrap()
}

/// Evaluates `expression` in the page through the DevTools protocol.
fn evaluate(devtools: u16, expression: &str) -> Value {
    let pages: Value = serde_json::from_str(&http_get(devtools, "/json/list")).unwrap();
    let url = pages
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["type"] == "page")
        .expect("a page")["webSocketDebuggerUrl"]
        .as_str()
        .unwrap()
        .to_string();
    let (mut socket, _) = tungstenite::connect(url).unwrap();
    if let tungstenite::stream::MaybeTlsStream::Plain(tcp) = socket.get_ref() {
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    let request = json!({"id": 1, "method": "Runtime.evaluate",
        "params": {"expression": expression, "returnByValue": true}});
    socket
        .send(tungstenite::Message::Text(request.to_string().into()))
        .unwrap();
    loop {
        if let tungstenite::Message::Text(text) = socket.read().unwrap() {
            let answer: Value = serde_json::from_str(text.as_str()).unwrap();
            if answer["id"] == 1 {
                return answer["result"]["result"]["value"].clone();
            }
        }
    }
}

#[actix_rt::test]
async fn a_browser_page_of_another_origin_gets_changes_with_the_token() {
    let Some(chromium) = chromium() else {
        if std::env::var("ASTHA_REQUIRE_BROWSER").as_deref() == Ok("1") {
            panic!("ASTHA_REQUIRE_BROWSER=1 but no chromium on PATH (apt-get install chromium)");
        }
        eprintln!("SKIPPED: no chromium on PATH (apt-get install chromium)");
        return;
    };
    let db = TestDb::new();
    let astha = Astha::new(db.config()).unwrap();
    astha.start().unwrap();
    let hub = Arc::new(EventHub::new(64));
    astha
        .register_component(Box::new(SseComponent::new(hub.clone(), vec!["a".into()])))
        .await
        .unwrap();
    // The page's origin is only known once it is served; reserve the API port first.
    let api_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let page = format!(
        r#"<!doctype html><html><body><ol id="events"></ol><script>
const source = new EventSource("http://127.0.0.1:{api_port}/events?tables=a&token={TOKEN}");
source.addEventListener("change", (e) => {{
  const change = JSON.parse(e.data);
  const item = document.createElement("li");
  item.textContent = change.lsn + ":" + change.op + ":" + change.after.v;
  document.getElementById("events").appendChild(item);
}});
source.onerror = () => {{ document.title = "error " + source.readyState; }};
</script></body></html>"#
    );
    let page_port = serve_page(page);
    let config = HttpConfig {
        bind: format!("127.0.0.1:{api_port}").parse().unwrap(),
        bearer_token: Some(TOKEN.into()),
        cors_origins: vec![format!("http://127.0.0.1:{page_port}")],
        ..HttpConfig::default()
    };
    let (server, _) =
        http::start(&config, astha.stats(), astha.store().clone(), hub.clone()).unwrap();

    let profile = tempfile::tempdir().unwrap();
    let child = Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--remote-debugging-port=0",
            "--remote-allow-origins=*",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("http://127.0.0.1:{page_port}/"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let browser = Browser(child, profile);
    let devtools = {
        let dir = browser.1.path().to_path_buf();
        actix_rt::task::spawn_blocking(move || devtools_port(&dir))
            .await
            .unwrap()
    };

    // The page's EventSource is connected once the hub has its client.
    let deadline = Instant::now() + Duration::from_secs(60);
    while hub.clients() == 0 {
        assert!(Instant::now() < deadline, "the page never connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let writer = db.writer();
    writer.execute("INSERT INTO b (v) VALUES (1)", []).unwrap(); // lsn 1: filtered out
    writer.execute("INSERT INTO a (v) VALUES (2)", []).unwrap(); // lsn 2
    writer.execute("UPDATE a SET v = 3", []).unwrap(); // lsn 3
    writer.execute("INSERT INTO a (v) VALUES (4)", []).unwrap(); // lsn 4

    let expected = "2:INSERT:2|3:UPDATE:3|4:INSERT:4";
    let got = actix_rt::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = evaluate(
                devtools,
                "[...document.querySelectorAll('#events li')].map(li => li.textContent).join('|') \
                 + (document.title ? ' title=' + document.title : '')",
            );
            if got == expected || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .unwrap();
    assert_eq!(got, expected);
    drop(browser);
    server.stop(true).await;
    astha.stop().await.unwrap();
}
