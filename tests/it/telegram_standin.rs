//! A stand-in Telegram Bot API for the bot's tests: a small HTTP/1.1 server on 127.0.0.1 in the
//! test process (std `TcpListener`, a thread per connection, `Connection: close`) that
//! implements the four methods homelab calls, `POST /bot<token>/<method>` with a JSON body,
//! with the Bot API's validation and error answers: `{"ok":false,"error_code":…,
//! "description":"…"}`; 401 `Unauthorized` for another token in the path; 404 `Not Found` for
//! an unknown method; 400 `Bad Request: …` for a missing chat, an empty or too long text, bad
//! button data (over 64 bytes), a message to edit that does not exist or would not change, a
//! press answered twice or never made; 409 for a second `getUpdates` at the same time; and,
//! when told to (`fail`), 429 with `parameters.retry_after` or a 5xx.
//!
//! `getUpdates` keeps updates until an `offset` past them confirms them, and long-polls up to
//! `timeout` seconds. `press` injects a `callback_query` from a given user on a given message,
//! as Telegram sends one when a button is pressed; `replay` sends one again. Every request is
//! recorded with its time.

use std::collections::{BTreeMap, BTreeSet};

use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{http_reason, read_http_request, write_http_answer};

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The token the path carried (`/bot<token>/<method>`).
    pub token: String,
    pub body: Value,
    pub at: Instant,
    /// The status answered.
    pub status: u16,
}

#[derive(Debug, Clone)]
pub struct Fault {
    pub method: String,
    pub status: u16,
    pub times: usize,
    pub retry_after: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Msg {
    pub chat: i64,
    pub message_id: i64,
    pub text: String,
    pub markup: Option<Value>,
    pub edits: usize,
}

impl Msg {
    /// The callback data of the buttons, in order.
    pub fn buttons(&self) -> Vec<(String, String)> {
        let Some(m) = &self.markup else { return Vec::new() };
        m["inline_keyboard"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|row| row.as_array().cloned().unwrap_or_default())
            .map(|b| {
                (
                    b["text"].as_str().unwrap_or_default().to_owned(),
                    b["callback_data"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// The data of the button whose label contains `label`.
    pub fn button(&self, label: &str) -> String {
        self.buttons()
            .into_iter()
            .find(|(t, _)| t.contains(label))
            .unwrap_or_else(|| panic!("no `{label}` button on {self:?}"))
            .1
    }
}

#[derive(Debug, Default)]
pub struct State {
    pub token: String,
    pub chats: BTreeSet<i64>,
    pub messages: BTreeMap<i64, Msg>,
    /// Updates not confirmed yet by an offset past them.
    pub updates: Vec<Value>,
    /// Every callback_query made, by id.
    pub queries: BTreeMap<String, Value>,
    /// Presses not answered yet.
    pub open_queries: BTreeSet<String>,
    /// (callback query id, text) of each answer accepted.
    pub answers: Vec<(String, String)>,
    pub requests: Vec<Request>,
    pub faults: Vec<Fault>,
    polling: bool,
    next_update: i64,
    next_message: i64,
    next_query: u64,
}

pub struct Standin {
    pub url: String,
    state: Arc<(Mutex<State>, Condvar)>,
}

impl Standin {
    /// A Bot API for `token`, with one chat, `chat`.
    pub fn start(token: &str, chat: i64) -> Standin {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let st = State {
            token: token.to_owned(),
            chats: [chat].into(),
            next_update: 700_000_000,
            next_message: 40,
            ..State::default()
        };
        let state = Arc::new((Mutex::new(st), Condvar::new()));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let shared = shared.clone();
                std::thread::spawn(move || serve(stream, &shared));
            }
        });
        Standin { url, state }
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.0.lock().unwrap())
    }

    /// Answer `status` to the next `times` calls of `method` (429 with `retry_after`).
    pub fn fail(&self, method: &str, status: u16, times: usize, retry_after: Option<u64>) {
        self.with(|s| {
            s.faults.push(Fault { method: method.to_owned(), status, times, retry_after })
        });
    }

    pub fn requests(&self, method: &str) -> Vec<Request> {
        self.with(|s| s.requests.iter().filter(|r| r.method == method).cloned().collect())
    }

    pub fn messages(&self) -> Vec<Msg> {
        self.with(|s| s.messages.values().cloned().collect())
    }

    pub fn message(&self, id: i64) -> Msg {
        self.with(|s| s.messages.get(&id).cloned()).unwrap_or_else(|| panic!("no message {id}"))
    }

    /// The text of each answerCallbackQuery accepted for the press `id`.
    pub fn answers_to(&self, id: &str) -> Vec<String> {
        self.with(|s| s.answers.iter().filter(|(q, _)| q == id).map(|(_, t)| t.clone()).collect())
    }

    /// The texts of every answerCallbackQuery asked for the press `id`, accepted or not.
    pub fn answers_asked(&self, id: &str) -> Vec<String> {
        self.requests("answerCallbackQuery")
            .into_iter()
            .filter(|r| r.body["callback_query_id"] == id)
            .map(|r| r.body["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// A press of a button with `data` on message `message_id` by user `user`, as Telegram
    /// sends it; the callback query's id.
    pub fn press(&self, user: u64, message_id: i64, data: &str) -> String {
        let (lock, cv) = &*self.state;
        let mut s = lock.lock().unwrap();
        let m = s.messages.get(&message_id).cloned();
        s.next_query += 1;
        let id = format!("{}", 4_400_000_000_000_000_000u64 + s.next_query);
        let mut q = json!({
            "id": id,
            "from": { "id": user, "is_bot": false, "first_name": format!("User{user}"),
                      "username": format!("user{user}"), "language_code": "en" },
            "chat_instance": "-5550001",
            "data": data,
        });
        if let Some(m) = m {
            q["message"] = json!({
                "message_id": m.message_id,
                "from": { "id": 1, "is_bot": true, "first_name": "homelab" },
                "chat": { "id": m.chat, "type": "private" },
                "date": 1_764_460_800,
                "text": m.text,
                "reply_markup": m.markup.clone().unwrap_or(Value::Null),
            });
        }
        s.queries.insert(id.clone(), q.clone());
        s.open_queries.insert(id.clone());
        push(&mut s, json!({ "callback_query": q }));
        cv.notify_all();
        id
    }

    /// The press `id` sent again in a new update (a replay).
    pub fn replay(&self, id: &str) {
        let (lock, cv) = &*self.state;
        let mut s = lock.lock().unwrap();
        let q = s.queries[id].clone();
        push(&mut s, json!({ "callback_query": q }));
        cv.notify_all();
    }
}

fn push(s: &mut State, mut update: Value) {
    s.next_update += 1;
    update["update_id"] = json!(s.next_update);
    s.updates.push(update);
}

fn serve(mut stream: TcpStream, state: &Arc<(Mutex<State>, Condvar)>) {
    let Some(request) = read_http_request(&stream) else { return };
    let (token, method) = request
        .path
        .strip_prefix("/bot")
        .and_then(|r| r.split_once('/'))
        .map(|(t, m)| (t.to_owned(), m.to_owned()))
        .unwrap_or_default();
    let body: Result<Value, _> =
        if request.body.is_empty() { Ok(json!({})) } else { serde_json::from_slice(&request.body) };
    let (status, answer) = handle(state, &request.method, &token, &method, body);
    write_http_answer(&mut stream, status, "application/json", &[], &answer.to_string());
}

type Answer = (u16, Value);

fn error(code: u16, description: &str) -> Answer {
    (code, json!({ "ok": false, "error_code": code, "description": description }))
}

fn bad(description: &str) -> Answer {
    error(400, &format!("Bad Request: {description}"))
}

fn ok(result: Value) -> Answer {
    (200, json!({ "ok": true, "result": result }))
}

fn handle(
    state: &Arc<(Mutex<State>, Condvar)>,
    verb: &str,
    token: &str,
    method: &str,
    body: Result<Value, serde_json::Error>,
) -> Answer {
    let (lock, cv) = &**state;
    let mut s = lock.lock().unwrap();
    let record = |s: &mut State, status: u16, body: &Value| {
        s.requests.push(Request {
            method: method.to_owned(),
            token: token.to_owned(),
            body: body.clone(),
            at: Instant::now(),
            status,
        })
    };
    let body = match body {
        Ok(b) => b,
        Err(_) => {
            record(&mut s, 400, &Value::Null);
            return bad("can't parse JSON object");
        }
    };
    let answer = (|| {
        if token != s.token {
            return error(401, "Unauthorized");
        }
        if verb != "POST" && verb != "GET" {
            return error(405, "Method Not Allowed");
        }
        if let Some(f) = s.faults.iter_mut().find(|f| f.times > 0 && f.method == method) {
            f.times -= 1;
            return match f.status {
                429 => {
                    let after = f.retry_after.unwrap_or(1);
                    (
                        429,
                        json!({ "ok": false, "error_code": 429,
                            "description": format!("Too Many Requests: retry after {after}"),
                            "parameters": { "retry_after": after } }),
                    )
                }
                status => error(status, http_reason(status)),
            };
        }
        match method {
            "sendMessage" => send_message(&mut s, &body),
            "editMessageText" => edit_message_text(&mut s, &body),
            "answerCallbackQuery" => answer_callback_query(&mut s, &body),
            "getUpdates" => (0, Value::Null), // below, outside the lock
            _ => error(404, "Not Found"),
        }
    })();
    if answer.0 != 0 {
        record(&mut s, answer.0, &body);
        return answer;
    }
    // getUpdates.
    let int = |k: &str, default: i64| match body.get(k) {
        None | Some(Value::Null) => Some(default),
        Some(v) => v.as_i64(),
    };
    let (Some(offset), Some(timeout), Some(limit)) =
        (int("offset", 0), int("timeout", 0), int("limit", 100))
    else {
        record(&mut s, 400, &body);
        return bad("wrong parameter type in getUpdates");
    };
    if !(1..=100).contains(&limit) || timeout < 0 {
        record(&mut s, 400, &body);
        return bad("wrong limit or timeout");
    }
    if s.polling {
        record(&mut s, 409, &body);
        return error(
            409,
            "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running",
        );
    }
    if offset != 0 {
        // An offset confirms every update before it: they are never sent again.
        s.updates.retain(|u| u["update_id"].as_i64().unwrap() >= offset);
    }
    let until = Instant::now() + Duration::from_secs(timeout as u64);
    s.polling = true;
    while s.updates.is_empty() && Instant::now() < until {
        let left = until.saturating_duration_since(Instant::now());
        s = cv.wait_timeout(s, left).unwrap().0;
    }
    s.polling = false;
    let out: Vec<Value> = s.updates.iter().take(limit as usize).cloned().collect();
    record(&mut s, 200, &body);
    ok(Value::Array(out))
}

fn chat_of(s: &State, body: &Value) -> Result<i64, Answer> {
    let chat = match &body["chat_id"] {
        Value::Null => return Err(bad("chat_id is empty")),
        Value::Number(n) => n.as_i64(),
        Value::String(t) => t.parse().ok(),
        _ => None,
    };
    match chat {
        Some(c) if s.chats.contains(&c) => Ok(c),
        _ => Err(bad("chat not found")),
    }
}

fn text_of(body: &Value) -> Result<String, Answer> {
    let text = body["text"].as_str().unwrap_or_default();
    if text.trim().is_empty() {
        return Err(bad("message text is empty"));
    }
    if text.chars().count() > 4096 {
        return Err(bad("message is too long"));
    }
    Ok(text.to_owned())
}

/// An inline keyboard as the Bot API checks it.
fn markup_of(body: &Value) -> Result<Option<Value>, Answer> {
    let m = &body["reply_markup"];
    if m.is_null() {
        return Ok(None);
    }
    let Some(rows) = m["inline_keyboard"].as_array() else {
        return Err(bad("can't parse reply keyboard markup JSON object"));
    };
    for row in rows {
        let Some(buttons) = row.as_array() else {
            return Err(bad(
                "can't parse inline keyboard button: InlineKeyboardButton must be an Object",
            ));
        };
        for b in buttons {
            if b["text"].as_str().is_none_or(str::is_empty) {
                return Err(bad("can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard"));
            }
            match b["callback_data"].as_str() {
                Some(d) if !d.is_empty() && d.len() <= 64 => {}
                _ => return Err(bad("BUTTON_DATA_INVALID")),
            }
        }
    }
    Ok(Some(m.clone()))
}

fn message_json(m: &Msg) -> Value {
    json!({
        "message_id": m.message_id,
        "from": { "id": 1, "is_bot": true, "first_name": "homelab" },
        "chat": { "id": m.chat, "type": "private" },
        "date": 1_764_460_800,
        "text": m.text,
        "reply_markup": m.markup.clone().unwrap_or(Value::Null),
    })
}

fn send_message(s: &mut State, body: &Value) -> Answer {
    let chat = match chat_of(s, body) {
        Ok(c) => c,
        Err(a) => return a,
    };
    let text = match text_of(body) {
        Ok(t) => t,
        Err(a) => return a,
    };
    let markup = match markup_of(body) {
        Ok(m) => m,
        Err(a) => return a,
    };
    s.next_message += 1;
    let m = Msg { chat, message_id: s.next_message, text, markup, edits: 0 };
    let j = message_json(&m);
    s.messages.insert(m.message_id, m);
    ok(j)
}

fn edit_message_text(s: &mut State, body: &Value) -> Answer {
    let chat = match chat_of(s, body) {
        Ok(c) => c,
        Err(a) => return a,
    };
    let Some(id) = body["message_id"].as_i64() else {
        return bad("message identifier is not specified");
    };
    let text = match text_of(body) {
        Ok(t) => t,
        Err(a) => return a,
    };
    let markup = match markup_of(body) {
        Ok(m) => m,
        Err(a) => return a,
    };
    let Some(m) = s.messages.get_mut(&id).filter(|m| m.chat == chat) else {
        return bad("message to edit not found");
    };
    if m.text == text && m.markup == markup {
        return bad("message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message");
    }
    m.text = text;
    m.markup = markup;
    m.edits += 1;
    ok(message_json(m))
}

fn answer_callback_query(s: &mut State, body: &Value) -> Answer {
    let Some(id) = body["callback_query_id"].as_str() else {
        return bad("query_id is empty");
    };
    let text = body["text"].as_str().unwrap_or_default();
    if text.chars().count() > 200 {
        return bad("MESSAGE_TOO_LONG");
    }
    if !s.open_queries.remove(id) {
        return bad("query is too old and response timeout expired or query ID is invalid");
    }
    s.answers.push((id.to_owned(), text.to_owned()));
    ok(json!(true))
}
