//! The agent's HTTP port: `/readyz` for the immudb container's readiness probe, `/livez` for the
//! agent's liveness, `/metrics` for Prometheus, `/prestop` for the immudb container's preStop
//! hook (answered once the pod may stop: `stop`), `/poll` for a primary handing this pod the
//! Lease (the agent polls now and still decides from the Lease itself). GET only (the kubelet's
//! httpGet hooks send GET), one request per connection: the kubelet and Prometheus need no more.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use super::metrics::{self, Status};
use super::poll::Agent;
use super::stop::Request;

const MAX_REQUEST: usize = 8 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What the handlers read: the last poll's status and when the loop last finished a poll.
#[derive(Clone)]
pub struct Shared {
    pub status: Arc<Mutex<Status>>,
    pub last_poll: Arc<Mutex<Instant>>,
    /// `/livez` fails when no poll finished for this long: the loop is stuck.
    pub stuck_after: Duration,
    /// To the agent's loop: `/prestop` and `/poll`.
    pub requests: mpsc::UnboundedSender<Request>,
}

fn response(status: &str, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn answer(shared: &Shared, method: &str, path: &str) -> String {
    if method != "GET" && method != "HEAD" {
        return response("405 Method Not Allowed", "text/plain", "GET only\n");
    }
    let status = shared.status.lock().expect("status lock").clone();
    match path {
        "/readyz" if status.ready() => response("200 OK", "text/plain", "ready\n"),
        "/readyz" => {
            let reasons = status.not_ready_reasons().join("\n");
            response(
                "503 Service Unavailable",
                "text/plain",
                &format!("{reasons}\n"),
            )
        }
        "/livez" => {
            let idle = shared.last_poll.lock().expect("poll lock").elapsed();
            if idle > shared.stuck_after {
                let body = format!("no poll finished for {} s\n", idle.as_secs());
                response("503 Service Unavailable", "text/plain", &body)
            } else {
                response("200 OK", "text/plain", "alive\n")
            }
        }
        "/metrics" => response(
            "200 OK",
            "text/plain; version=0.0.4",
            &metrics::render(&status),
        ),
        _ => response("404 Not Found", "text/plain", "not found\n"),
    }
}

/// Reads the request head (up to the blank line) and returns its method and path.
async fn request_line(stream: &mut TcpStream) -> Option<(String, String)> {
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
        let n = tokio::time::timeout(READ_TIMEOUT, stream.read(&mut buffer))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buffer[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let mut words = text.split_whitespace();
    let method = words.next()?.to_string();
    let path = words.next()?.split('?').next()?.to_string();
    Some((method, path))
}

/// Passes `/prestop` and `/poll` to the agent's loop; the preStop's answer waits for the loop's
/// (the kubelet bounds the hook by the pod's termination grace period).
async fn ask_the_loop(shared: &Shared, path: &str) -> String {
    if path == "/poll" {
        let _ = shared.requests.send(Request::PollNow);
        return response("200 OK", "text/plain", "polling\n");
    }
    let (reply, answer) = oneshot::channel();
    let body = match shared.requests.send(Request::Stop(reply)) {
        Ok(()) => answer
            .await
            .unwrap_or_else(|_| "the agent is stopping".into()),
        Err(_) => "the agent is stopping".into(),
    };
    tracing::info!(answer = %body, "answered the preStop hook");
    response("200 OK", "text/plain", &format!("{body}\n"))
}

pub async fn serve(listener: TcpListener, shared: Shared) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Some((method, path)) = request_line(&mut stream).await {
                let reply = match (method.as_str(), path.as_str()) {
                    ("GET", "/prestop" | "/poll") => ask_the_loop(&shared, &path).await,
                    _ => answer(&shared, &method, &path),
                };
                let _ = stream.write_all(reply.as_bytes()).await;
            }
            let _ = stream.shutdown().await;
        });
    }
}

/// What the port shows of the agent.
impl Agent {
    /// The status the HTTP port shows.
    pub fn shown(&self) -> Arc<Mutex<Status>> {
        self.shown.clone()
    }

    /// Shows `status` on the HTTP port.
    pub fn show(&self, status: &Status) {
        *self.shown.lock().expect("status lock") = status.clone();
    }

    /// Shows the last status as not Ready because of `why` (a hand-over under way).
    pub(super) fn show_stopping(&self, why: String) {
        self.shown.lock().expect("status lock").stopping = Some(why);
    }

    /// Shows the counters now, before the poll ends (a hand-over's outcome, before the hook
    /// answers), and whether the pod stops serving.
    pub(super) fn show_outcome(&self) {
        let mut shown = self.shown.lock().expect("status lock");
        shown.counters = self.counters.clone();
        shown.stopping.clone_from(&self.stop.reason);
    }
}
