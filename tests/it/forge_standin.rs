//! A stand-in Forgejo for the `pr` tests: a tiny HTTP/1.1 server on 127.0.0.1 in the test
//! process (std `TcpListener`, one thread, `Connection: close`), implementing the `/api/v1`
//! endpoints homelab uses with Forgejo's request validation and error answers (`{"message",
//! "url"}` bodies; 401 without the token, 404 for an unknown repository, branch or number,
//! 409 for a second pull request between the same branches, 422 for a missing or invalid
//! field, an existing file or branch, or a body over the comment limit). Every request is
//! recorded, and `fail` makes it answer a given status to matching requests, to exercise each
//! error path. No dependency: the whole protocol homelab needs fits here.

use std::collections::BTreeMap;

use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::support::{read_http_request, write_http_answer};

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path and query, as sent (`/api/v1/repos/...`).
    pub path: String,
    pub authorization: Option<String>,
    pub body: String,
}

/// Answer `status` (with `headers`) to the next `times` requests whose method is `method` and
/// whose path contains `path`.
#[derive(Debug, Clone)]
pub struct Fault {
    pub method: &'static str,
    pub path: String,
    pub status: u16,
    pub times: usize,
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, Default)]
pub struct State {
    pub token: String,
    pub owner: String,
    pub repo: String,
    /// Branch → head commit.
    pub branches: BTreeMap<String, String>,
    /// (branch, path) → bytes.
    pub files: BTreeMap<(String, String), Vec<u8>>,
    pub pulls: Vec<Value>,
    /// Issue comments: (issue number, comment).
    pub comments: Vec<(u64, Value)>,
    /// (sha, status).
    pub statuses: Vec<(String, Value)>,
    pub requests: Vec<Request>,
    /// Connections accepted, whether or not they carried an HTTP request.
    pub connections: usize,
    pub faults: Vec<Fault>,
    pub comment_limit: usize,
    /// Put the Authorization header into a 401's message (a careless server or proxy).
    pub echo_auth: bool,
    next: u64,
}

pub struct Standin {
    pub url: String,
    pub state: Arc<Mutex<State>>,
}

impl Standin {
    /// A server for the repository `owner/repo` with a `main` branch, accepting `token`.
    pub fn start(owner: &str, repo: &str, token: &str) -> Standin {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let mut st = State {
            token: token.to_owned(),
            owner: owner.to_owned(),
            repo: repo.to_owned(),
            comment_limit: 65_535,
            ..State::default()
        };
        st.branches.insert("main".to_owned(), sha(0));
        let state = Arc::new(Mutex::new(st));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                serve(stream, &shared);
            }
        });
        Standin { url, state }
    }

    pub fn fail(&self, method: &'static str, path: &str, status: u16, times: usize) {
        self.fail_with(method, path, status, times, &[]);
    }

    pub fn fail_with(
        &self,
        method: &'static str,
        path: &str,
        status: u16,
        times: usize,
        headers: &[(&str, &str)],
    ) {
        self.state.lock().unwrap().faults.push(Fault {
            method,
            path: path.to_owned(),
            status,
            times,
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        });
    }

    pub fn with<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.state.lock().unwrap())
    }

    pub fn requests(&self) -> Vec<Request> {
        self.with(|s| s.requests.clone())
    }
}

fn sha(n: u64) -> String {
    format!("{n:040x}")
}

fn serve(mut stream: TcpStream, state: &Arc<Mutex<State>>) {
    state.lock().unwrap().connections += 1;
    let Some(request) = read_http_request(&stream) else { return };
    let req = Request {
        authorization: request.header("authorization").map(str::to_owned),
        method: request.method,
        path: request.path,
        body: String::from_utf8_lossy(&request.body).into(),
    };
    let (status, headers, answer) = {
        let mut st = state.lock().unwrap();
        st.requests.push(req.clone());
        handle(&mut st, &req)
    };
    write_http_answer(
        &mut stream,
        status,
        "application/json;charset=utf-8",
        &headers,
        &answer.to_string(),
    );
}

type Answer = (u16, Vec<(String, String)>, Value);

/// Forgejo's APIError body.
fn error(status: u16, message: &str) -> Answer {
    (status, vec![], json!({ "message": message, "url": "https://forgejo.org/api/swagger" }))
}

fn ok(status: u16, v: Value) -> Answer {
    (status, vec![], v)
}

fn handle(st: &mut State, req: &Request) -> Answer {
    let expected = format!("token {}", st.token);
    if req.authorization.as_deref() != Some(expected.as_str()) {
        let message = if st.echo_auth {
            format!("invalid credentials: {}", req.authorization.clone().unwrap_or_default())
        } else {
            "token is required".to_owned()
        };
        return error(401, &message);
    }
    if let Some(f) = st
        .faults
        .iter_mut()
        .find(|f| f.times > 0 && f.method == req.method && req.path.contains(&f.path))
    {
        f.times -= 1;
        let mut a = error(f.status, &format!("stand-in answers {}", f.status));
        a.1 = f.headers.clone();
        return a;
    }
    let (path, query) = req.path.split_once('?').unwrap_or((&req.path, ""));
    let query: BTreeMap<&str, &str> =
        query.split('&').filter_map(|kv| kv.split_once('=')).collect();
    let Some(rest) = path.strip_prefix("/api/v1/repos/") else {
        return error(404, "The target couldn't be found.");
    };
    let prefix = format!("{}/{}/", st.owner, st.repo);
    let Some(rest) = rest.strip_prefix(&prefix) else {
        return error(404, "The target couldn't be found.");
    };
    let body: Value = if req.body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_str(&req.body) {
            Ok(v) => v,
            Err(_) => return error(422, "invalid JSON body"),
        }
    };
    let m = req.method.as_str();
    if let Some(name) = rest.strip_prefix("branches/") {
        return match (m, st.branches.get(name)) {
            ("GET", Some(head)) => ok(200, json!({ "name": name, "commit": { "id": head } })),
            ("GET", None) => error(404, &format!("branch does not exist [name: {name}]")),
            _ => error(405, "method not allowed"),
        };
    }
    if let Some(file) = rest.strip_prefix("contents/") {
        return contents(st, m, file, &query, &body);
    }
    if rest == "pulls" {
        return pulls(st, m, &query, &body);
    }
    if let Some(n) = rest.strip_prefix("pulls/") {
        let Ok(n) = n.parse::<u64>() else { return error(404, "not found") };
        let Some(pr) = st.pulls.iter_mut().find(|p| p["number"] == n) else {
            return error(404, "pull request does not exist");
        };
        if m != "PATCH" {
            return error(405, "method not allowed");
        }
        for k in ["title", "body"] {
            if let Some(v) = body.get(k) {
                pr[k] = v.clone();
            }
        }
        // Forgejo answers an edited pull request with 201.
        return ok(201, pr.clone());
    }
    if let Some(id) = rest.strip_prefix("issues/comments/") {
        let Ok(id) = id.parse::<u64>() else { return error(404, "not found") };
        let limit = st.comment_limit;
        let Some((_, c)) = st.comments.iter_mut().find(|(_, c)| c["id"] == id) else {
            return error(404, "comment does not exist");
        };
        let Some(text) = body["body"].as_str().filter(|b| !b.is_empty()) else {
            return error(422, "[Body]: Required");
        };
        if text.len() > limit {
            return error(422, "content is too long");
        }
        c["body"] = json!(text);
        return ok(200, c.clone());
    }
    if let Some(issue) = rest.strip_prefix("issues/").and_then(|r| r.strip_suffix("/comments")) {
        let Ok(n) = issue.parse::<u64>() else { return error(404, "not found") };
        if !st.pulls.iter().any(|p| p["number"] == n) {
            return error(404, "issue does not exist");
        }
        return match m {
            "GET" => ok(
                200,
                Value::Array(
                    st.comments.iter().filter(|(i, _)| *i == n).map(|(_, c)| c.clone()).collect(),
                ),
            ),
            "POST" => {
                let Some(text) = body["body"].as_str().filter(|b| !b.is_empty()) else {
                    return error(422, "[Body]: Required");
                };
                if text.len() > st.comment_limit {
                    return error(422, "content is too long");
                }
                st.next += 1;
                let c = json!({ "id": 1000 + st.next, "body": text, "html_url": "" });
                st.comments.push((n, c.clone()));
                ok(201, c)
            }
            _ => error(405, "method not allowed"),
        };
    }
    if let Some(sha) = rest.strip_prefix("statuses/") {
        if m != "POST" {
            return error(405, "method not allowed");
        }
        let state = body["state"].as_str().unwrap_or_default();
        if !["pending", "success", "error", "failure", "warning"].contains(&state) {
            return error(422, "[State]: invalid commit status state");
        }
        st.statuses.push((sha.to_owned(), body.clone()));
        return ok(201, json!({ "id": st.statuses.len(), "state": state, "sha": sha }));
    }
    error(404, "The target couldn't be found.")
}

fn contents(
    st: &mut State,
    m: &str,
    file: &str,
    query: &BTreeMap<&str, &str>,
    body: &Value,
) -> Answer {
    match m {
        "GET" => {
            let branch = query.get("ref").copied().unwrap_or("main").to_owned();
            match st.files.get(&(branch, file.to_owned())) {
                Some(bytes) => ok(
                    200,
                    json!({ "type": "file", "path": file, "encoding": "base64",
                        "content": base64::engine::general_purpose::STANDARD.encode(bytes) }),
                ),
                None => error(404, "GetContentsOrList"),
            }
        }
        "POST" => {
            let Some(content) = body["content"].as_str() else {
                return error(422, "[Content]: Required");
            };
            let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(content) else {
                return error(422, "invalid base64 content");
            };
            let from = body["branch"].as_str().unwrap_or("main").to_owned();
            if !st.branches.contains_key(&from) {
                return error(404, &format!("branch does not exist [name: {from}]"));
            }
            let to = match body["new_branch"].as_str() {
                Some(nb) if st.branches.contains_key(nb) => {
                    return error(422, &format!("branch already exists [name: {nb}]"))
                }
                Some(nb) => {
                    // The new branch starts with every file of the one it branches from.
                    let copied: Vec<_> = st
                        .files
                        .iter()
                        .filter(|((b, _), _)| *b == from)
                        .map(|((_, p), v)| ((nb.to_owned(), p.clone()), v.clone()))
                        .collect();
                    st.files.extend(copied);
                    nb.to_owned()
                }
                None => from,
            };
            let key = (to.clone(), file.to_owned());
            if st.files.contains_key(&key) {
                return error(422, &format!("repository file already exists [path: {file}]"));
            }
            st.files.insert(key, bytes);
            st.next += 1;
            let head = sha(st.next);
            st.branches.insert(to, head.clone());
            ok(201, json!({ "content": { "path": file }, "commit": { "sha": head } }))
        }
        _ => error(405, "method not allowed"),
    }
}

fn pulls(st: &mut State, m: &str, query: &BTreeMap<&str, &str>, body: &Value) -> Answer {
    match m {
        "GET" => {
            let limit: usize = query.get("limit").and_then(|l| l.parse().ok()).unwrap_or(30);
            let page: usize = query.get("page").and_then(|l| l.parse().ok()).unwrap_or(1);
            let open: Vec<Value> = st
                .pulls
                .iter()
                .filter(|p| query.get("state").is_none_or(|s| p["state"] == *s))
                .cloned()
                .collect();
            let at = (page - 1) * limit;
            ok(200, Value::Array(open.into_iter().skip(at).take(limit).collect()))
        }
        "POST" => {
            let field = |k: &str| body[k].as_str().filter(|v| !v.is_empty()).map(str::to_owned);
            let (Some(head), Some(base), Some(title)) =
                (field("head"), field("base"), field("title"))
            else {
                return error(422, "[Head Base Title]: Required");
            };
            if head == base {
                return error(
                    422,
                    "Invalid PullRequest: There are no changes between the head and the base",
                );
            }
            for b in [&head, &base] {
                if !st.branches.contains_key(b) {
                    return error(404, &format!("branch does not exist [name: {b}]"));
                }
            }
            if let Some(p) = st.pulls.iter().find(|p| {
                p["state"] == "open" && p["head"]["ref"] == head && p["base"]["ref"] == base
            }) {
                return error(
                    409,
                    &format!("pull request already exists for these targets [id: {}]", p["id"]),
                );
            }
            let n = st.pulls.len() as u64 + 1;
            let pr = json!({
                "id": n, "number": n, "state": "open", "title": title,
                "body": body["body"].as_str().unwrap_or_default(),
                "head": { "ref": head, "sha": st.branches[&head] },
                "base": { "ref": base },
                "html_url": format!("http://forge.test/{}/{}/pulls/{n}", st.owner, st.repo),
            });
            st.pulls.push(pr.clone());
            ok(201, pr)
        }
        _ => error(405, "method not allowed"),
    }
}
