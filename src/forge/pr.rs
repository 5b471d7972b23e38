//! The pull-request flow for one plan: the plan file committed on its branch through the
//! contents API (no local Git push, no Git server credentials), the pull request opened or
//! updated, the one plan comment created or edited, and the commit status of the head set.
//! Every step first looks at what is there, so running it again changes only what differs.

use base64::Engine as _;
use serde_json::{json, Value};

use super::client::{Answer, Client, Method};
use super::comment::{self, MARKER};
use super::error::ForgeError;
use super::Slug;

/// The context of homelab's commit status: Forgejo keeps the latest per context.
pub const STATUS_CONTEXT: &str = "homelab/plan";

/// A commit status, as Forgejo's API spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Pending,
    Success,
    Failure,
    Error,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Success => "success",
            State::Failure => "failure",
            State::Error => "error",
        }
    }
}

/// What the flow is handed: the plan file and what to say about it.
pub struct PlanUpload<'a> {
    pub id: &'a str,
    /// The file's path in the repository: `plans/<id>.plan`.
    pub path: &'a str,
    pub bytes: &'a [u8],
    /// `show --format markdown` of the plan.
    pub markdown: &'a str,
    /// The pull request's title.
    pub title: &'a str,
}

/// Where the pull request goes and what surrounds it.
pub struct Target<'a> {
    pub repo: &'a Slug,
    /// The branch the pull request goes into.
    pub base: &'a str,
    /// The branch that carries the plan file (`plan/<id>`, or an existing pull request's).
    pub branch: &'a str,
    /// The most bytes a comment may hold.
    pub comment_limit: usize,
    /// Where a commit status links to (the operator page, else the plan file).
    pub target_url: Option<&'a str>,
}

/// What happened to each part, for the command to tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub number: u64,
    pub url: String,
    pub pr: Done,
    pub file: Done,
    pub comment: Done,
    /// The comment was cut to fit and links to the plan file.
    pub cut: bool,
    /// The head commit the status was set on.
    pub sha: String,
    pub state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    Created,
    Updated,
    Unchanged,
}

impl Done {
    pub fn word(self) -> &'static str {
        match self {
            Done::Created => "created",
            Done::Updated => "updated",
            Done::Unchanged => "unchanged",
        }
    }
}

/// The plan file's address on the forge's web pages.
pub fn file_url(client: &Client, t: &Target, path: &str) -> String {
    format!("{}/{}/src/branch/{}/{}", client.base(), t.repo, t.branch, path)
}

/// Opens or updates the pull request of `plan` and sets its status to `state` (`pending` for
/// a plan that awaits approval).
pub fn open_or_update(
    client: &Client,
    t: &Target,
    plan: &PlanUpload,
    state: State,
    description: &str,
) -> Result<Opened, ForgeError> {
    let (file, sha) = put_file(client, t, plan)?;
    let plan_url = file_url(client, t, plan.path);
    let pr_body = format!(
        "{MARKER}\nhomelab plan `{}`: [`{}`]({plan_url}). The plan is in the comment below; approve it with `homelab approve {}` (a signature, not a review here).\n",
        plan.id, plan.path, plan.path
    );
    let (number, url, pr) = put_pull(client, t, plan.title, &pr_body)?;
    let (text, cut) = comment::body(plan.markdown, t.comment_limit, plan.path, &plan_url);
    let comment = put_comment(client, t.repo, number, &text)?;
    let target = t.target_url.map(str::to_owned).unwrap_or(plan_url);
    post_status(client, t.repo, &sha, state, &target, description)?;
    Ok(Opened { number, url, pr, file, comment, cut, sha, state })
}

/// Sets the commit status of `branch`'s head: what the executor calls after apply
/// (`success`, `failure`, `error`), and `homelab pr --status` for scripts. Returns the commit.
pub fn set_status(
    client: &Client,
    repo: &Slug,
    branch: &str,
    state: State,
    target_url: &str,
    description: &str,
) -> Result<String, ForgeError> {
    let head = branch_head(client, repo, branch)?.ok_or_else(|| ForgeError::NotFound {
        call: format!("GET /api/v1{}/branches/{branch}", repo.api()),
        message: String::new(),
        hint: format!(
            "the branch `{branch}` is not on `{repo}`: open the pull request first (`homelab pr PLAN`), or name its branch with --branch"
        ),
    })?;
    post_status(client, repo, &head, state, target_url, description)?;
    Ok(head)
}

fn post_status(
    client: &Client,
    repo: &Slug,
    sha: &str,
    state: State,
    target_url: &str,
    description: &str,
) -> Result<(), ForgeError> {
    // Forgejo keeps 255 characters of a description; say less.
    let description: String = description.chars().take(140).collect();
    client.call(
        Method::Post,
        &format!("{}/statuses/{sha}", repo.api()),
        Some(&json!({
            "state": state.as_str(),
            "target_url": target_url,
            "description": description,
            "context": STATUS_CONTEXT,
        })),
        &[],
    )?;
    Ok(())
}

/// The commit id at the head of `branch`, or `None` when there is no such branch.
fn branch_head(client: &Client, repo: &Slug, branch: &str) -> Result<Option<String>, ForgeError> {
    let call = format!("{}/branches/{branch}", repo.api());
    let a = client.call(Method::Get, &call, None, &[404])?;
    if a.status == 404 {
        return Ok(None);
    }
    str_at(&a, &["commit", "id"], &call).map(Some)
}

/// The plan file on its branch: the branch made from `base` with the file when it is new, the
/// file added when the branch lacks it, nothing when it is there. Returns the head commit.
fn put_file(client: &Client, t: &Target, plan: &PlanUpload) -> Result<(Done, String), ForgeError> {
    let head = branch_head(client, t.repo, t.branch)?;
    let contents = format!("{}/contents/{}", t.repo.api(), plan.path);
    if let Some(head) = &head {
        let there =
            client.call(Method::Get, &format!("{contents}?ref={}", t.branch), None, &[404])?;
        if there.status != 404 {
            // Plan files are named by the hash of their signed bytes: same name, same plan.
            return Ok((Done::Unchanged, head.clone()));
        }
    }
    let mut body = json!({
        "content": base64::engine::general_purpose::STANDARD.encode(plan.bytes),
        "message": format!("plan {}: {}", plan.id, plan.title),
    });
    if head.is_some() {
        body["branch"] = json!(t.branch);
    } else {
        body["branch"] = json!(t.base);
        body["new_branch"] = json!(t.branch);
    }
    let a = client.call(Method::Post, &contents, Some(&body), &[])?;
    let sha = str_at(&a, &["commit", "sha"], &format!("POST {contents}"))?;
    Ok((if head.is_some() { Done::Updated } else { Done::Created }, sha))
}

/// The open pull request from `branch` into `base`, created or with its title and body set.
fn put_pull(
    client: &Client,
    t: &Target,
    title: &str,
    body: &str,
) -> Result<(u64, String, Done), ForgeError> {
    if let Some(pr) = find_pull(client, t)? {
        return edit_pull(client, t, pr, title, body);
    }
    let call = format!("{}/pulls", t.repo.api());
    let a = client.call(
        Method::Post,
        &call,
        Some(&json!({ "head": t.branch, "base": t.base, "title": title, "body": body })),
        &[409],
    )?;
    if a.status == 409 {
        // Opened by someone else between our look and our create: update that one.
        return match find_pull(client, t)? {
            Some(pr) => edit_pull(client, t, pr, title, body),
            None => Err(ForgeError::Conflict {
                call: format!("POST /api/v1{call}"),
                message: message(&a.json),
            }),
        };
    }
    let (n, url) = number_url(&a, &call)?;
    Ok((n, url, Done::Created))
}

fn edit_pull(
    client: &Client,
    t: &Target,
    pr: Value,
    title: &str,
    body: &str,
) -> Result<(u64, String, Done), ForgeError> {
    let call = format!("{}/pulls", t.repo.api());
    let a = Answer { status: 200, json: pr };
    let (n, url) = number_url(&a, &call)?;
    let same = a.json["title"].as_str() == Some(title) && a.json["body"].as_str() == Some(body);
    if same {
        return Ok((n, url, Done::Unchanged));
    }
    client.call(
        Method::Patch,
        &format!("{call}/{n}"),
        Some(&json!({ "title": title, "body": body })),
        &[],
    )?;
    Ok((n, url, Done::Updated))
}

/// Open pull requests, a page at a time (Forgejo pages at 50 at most), until the one from
/// `branch` into `base`.
fn find_pull(client: &Client, t: &Target) -> Result<Option<Value>, ForgeError> {
    const LIMIT: usize = 50;
    for page in 1..=100 {
        let call = format!("{}/pulls?state=open&page={page}&limit={LIMIT}", t.repo.api());
        let a = client.call(Method::Get, &call, None, &[])?;
        let list = a.json.as_array().ok_or_else(|| ForgeError::Decode {
            call: format!("GET /api/v1{}/pulls", t.repo.api()),
            what: "not a list of pull requests".to_owned(),
        })?;
        if let Some(pr) = list.iter().find(|p| {
            p["head"]["ref"].as_str() == Some(t.branch) && p["base"]["ref"].as_str() == Some(t.base)
        }) {
            return Ok(Some(pr.clone()));
        }
        if list.len() < LIMIT {
            break;
        }
    }
    Ok(None)
}

/// homelab's comment on pull request `n`: edited when one carries the marker, else created.
fn put_comment(client: &Client, repo: &Slug, n: u64, text: &str) -> Result<Done, ForgeError> {
    let call = format!("{}/issues/{n}/comments", repo.api());
    let a = client.call(Method::Get, &call, None, &[])?;
    let list = a.json.as_array().ok_or_else(|| ForgeError::Decode {
        call: format!("GET /api/v1{call}"),
        what: "not a list of comments".to_owned(),
    })?;
    let ours = list.iter().find(|c| c["body"].as_str().is_some_and(|b| b.starts_with(MARKER)));
    match ours {
        Some(c) if c["body"].as_str() == Some(text) => Ok(Done::Unchanged),
        Some(c) => {
            let id = c["id"].as_u64().ok_or_else(|| ForgeError::Decode {
                call: format!("GET /api/v1{call}"),
                what: "a comment without a numeric `id`".to_owned(),
            })?;
            client.call(
                Method::Patch,
                &format!("{}/issues/comments/{id}", repo.api()),
                Some(&json!({ "body": text })),
                &[],
            )?;
            Ok(Done::Updated)
        }
        None => {
            client.call(Method::Post, &call, Some(&json!({ "body": text })), &[])?;
            Ok(Done::Created)
        }
    }
}

fn number_url(a: &Answer, call: &str) -> Result<(u64, String), ForgeError> {
    let n = a.json["number"].as_u64().ok_or_else(|| ForgeError::Decode {
        call: call.to_owned(),
        what: "a pull request without a numeric `number`".to_owned(),
    })?;
    Ok((n, a.json["html_url"].as_str().unwrap_or_default().to_owned()))
}

fn str_at(a: &Answer, path: &[&str], call: &str) -> Result<String, ForgeError> {
    let mut v = &a.json;
    for k in path {
        v = &v[*k];
    }
    v.as_str().map(str::to_owned).ok_or_else(|| ForgeError::Decode {
        call: call.to_owned(),
        what: format!("no `{}` in the answer", path.join(".")),
    })
}

fn message(v: &Value) -> String {
    v["message"].as_str().unwrap_or_default().to_owned()
}
