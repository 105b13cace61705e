//! The HTTP/JSON routes of `coordinator serve`, over a model loaded once.
//!
//! Answers are JSON lists of `{"item", "score"}`, best first; errors are
//! `{"error": message}` with 400 (bad request) or 404 (unknown id or route).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderName, HeaderValue, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use als_core::model::{FoldIn, FoldInError, Model, ModelKind};
use als_core::topk::Scored;

use super::error::ApiError;
use super::live::LiveModel;

/// Results when the request gives no `n`.
pub const DEFAULT_N: usize = als_core::topk::DEFAULT_TOP_N;

/// Header of a fold-in answer: history items that are not in the model (skipped).
pub const UNKNOWN_ITEMS_HEADER: &str = "x-unknown-items";

/// What every request reads: the model and its fold-in solver, built once.
pub struct ServeState {
    pub model: Model,
    pub fold: FoldIn,
    /// Larger `n` are capped to this.
    pub max_n: usize,
}

impl ServeState {
    pub fn new(model: Model, max_n: usize) -> Result<Self, FoldInError> {
        let fold = FoldIn::new(&model)?;
        Ok(ServeState { model, fold, max_n })
    }
}

/// One entry of an answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoredItem {
    pub item: String,
    pub score: f32,
}

/// The API's routes, answering from the live model (each request takes
/// the current version once and answers from it).
pub fn router(live: Arc<LiveModel>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/users/{id}/recommendations", get(user_recommendations))
        .route("/v1/items/{id}/similar", get(similar_items))
        .route("/v1/recommendations", post(history_recommendations))
        .fallback(not_found)
        .with_state(live)
}

/// `app` with every answer timed and counted in `live`'s metrics, by route
/// template and status. Layered last, so the token check's 401s count too.
pub fn with_metrics(app: Router, live: Arc<LiveModel>) -> Router {
    app.layer(axum::middleware::from_fn_with_state(live, record))
}

async fn record(State(live): State<Arc<LiveModel>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let t0 = std::time::Instant::now();
    let resp = next.run(req).await;
    live.metrics.observe(&route, resp.status().as_u16(), t0.elapsed().as_secs_f64());
    resp
}

async fn metrics(State(live): State<Arc<LiveModel>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        live.metrics.render(),
    )
        .into_response()
}

#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    n: Option<String>,
    include_seen: Option<String>,
}

/// `n` from a request: default [`DEFAULT_N`], at least 1, capped to `max`.
fn parse_n(raw: Option<&str>, max: usize) -> Result<usize, ApiError> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_N.min(max));
    };
    match raw.trim().parse::<u64>() {
        Ok(0) => Err(ApiError::bad_request("n must be at least 1")),
        Ok(n) => Ok((n.min(max as u64)) as usize),
        Err(_) => Err(ApiError::bad_request(format!("n must be a positive integer, got '{raw}'"))),
    }
}

fn parse_bool(name: &str, raw: Option<&str>) -> Result<bool, ApiError> {
    match raw.map(str::trim) {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!("{name} must be true or false, got '{other}'"))),
    }
}

fn query(q: Result<Query<ListQuery>, QueryRejection>) -> Result<ListQuery, ApiError> {
    q.map(|Query(q)| q).map_err(|e| ApiError::bad_request(e.body_text()))
}

fn path_id(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    p.map(|Path(id)| id).map_err(|e| ApiError::bad_request(e.body_text()))
}

fn answer(model: &Model, recs: &[Scored]) -> Vec<ScoredItem> {
    recs.iter()
        .map(|s| ScoredItem {
            item: model.item_ids()[s.index as usize].clone(),
            score: s.score,
        })
        .collect()
}

async fn health(State(live): State<Arc<LiveModel>>) -> Json<serde_json::Value> {
    let s = live.current();
    let m = &s.model;
    Json(serde_json::json!({
        "status": "ok",
        "kind": m.kind(),
        "version": m.version(),
        "users": m.n_users(),
        "items": m.n_items(),
        "factors": m.factors(),
    }))
}

async fn user_recommendations(
    State(live): State<Arc<LiveModel>>,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Vec<ScoredItem>>, ApiError> {
    let s = live.current();
    let (id, q) = (path_id(id)?, query(q)?);
    let n = parse_n(q.n.as_deref(), s.max_n)?;
    let include_seen = parse_bool("include_seen", q.include_seen.as_deref())?;
    let u = s
        .model
        .user_index(&id)
        .ok_or_else(|| ApiError::not_found(format!("user '{id}' is not in the model")))?;
    Ok(Json(answer(&s.model, &s.model.recommend(u, n, include_seen, None))))
}

async fn similar_items(
    State(live): State<Arc<LiveModel>>,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Vec<ScoredItem>>, ApiError> {
    let s = live.current();
    let (id, q) = (path_id(id)?, query(q)?);
    if q.include_seen.is_some() {
        return Err(ApiError::bad_request("include_seen applies to recommendations only"));
    }
    let n = parse_n(q.n.as_deref(), s.max_n)?;
    let i = s
        .model
        .item_index(&id)
        .ok_or_else(|| ApiError::not_found(format!("item '{id}' is not in the model")))?;
    Ok(Json(answer(&s.model, &s.model.similar_items(i, n))))
}

/// Body of `POST /v1/recommendations`: exactly one of `items` (implicit
/// models: each counts once) and `ratings` (item -> rating or weight).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryBody {
    pub items: Option<Vec<String>>,
    pub ratings: Option<BTreeMap<String, f64>>,
    pub n: Option<u64>,
    #[serde(default)]
    pub include_seen: bool,
}

/// The (item, value) history of a body, checked against the model kind.
fn body_history(body: &HistoryBody, kind: ModelKind) -> Result<Vec<(&str, f32)>, ApiError> {
    let history: Vec<(&str, f32)> = match (&body.items, &body.ratings) {
        (Some(_), Some(_)) => return Err(ApiError::bad_request("give either \"items\" or \"ratings\", not both")),
        (None, None) => {
            return Err(ApiError::bad_request(
                "give the user's history as \"items\": [...] or \"ratings\": {item: value}",
            ))
        }
        (Some(_), None) if kind == ModelKind::Explicit => {
            return Err(ApiError::bad_request(
                "this model predicts ratings: give \"ratings\": {item: rating}",
            ))
        }
        (Some(items), None) => items.iter().map(|i| (i.as_str(), 1.0)).collect(),
        (None, Some(r)) => r.iter().map(|(i, &v)| (i.as_str(), v as f32)).collect(),
    };
    if history.is_empty() {
        return Err(ApiError::bad_request("the history is empty"));
    }
    Ok(history)
}

async fn history_recommendations(
    State(live): State<Arc<LiveModel>>,
    body: Result<Json<HistoryBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let s = live.current();
    let Json(body) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let n = parse_n(body.n.map(|n| n.to_string()).as_deref(), s.max_n)?;
    let history = body_history(&body, s.model.kind())?;
    let user = s.fold.fold_in(&s.model, &history, None).map_err(|e| match e {
        FoldInError::NoKnownItems { .. } => ApiError::not_found(e.to_string()),
        FoldInError::EmptyHistory | FoldInError::BadValue { .. } => ApiError::bad_request(e.to_string()),
        other => ApiError::internal(other.to_string()),
    })?;
    let exclude: &[u32] = if body.include_seen { &[] } else { &user.items };
    let recs = s.model.recommend_for_vector(&user.factors, user.bias, n, exclude, None);
    let mut resp = Json(answer(&s.model, &recs)).into_response();
    resp.headers_mut()
        .insert(HeaderName::from_static(UNKNOWN_ITEMS_HEADER), HeaderValue::from(user.unknown));
    Ok(resp)
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}", uri.path()))
}

#[cfg(test)]
mod tests;
