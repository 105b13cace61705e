//! The HTTP API through the router without a socket: answers equal the
//! model's own queries and the core fold-in; bad requests get 400, unknown ids 404.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::*;
use als_core::data::{Dataset, DuplicatePolicy, RawRatings};
use als_core::rng::SplitMix64;
use als_core::train::{train, ImplicitConfig, Layouts, LocalExecutor, TestMetrics, TrainConfig};

/// A small trained model (explicit ratings 1..5, or implicit counts).
fn model(implicit: bool) -> Model {
    let mut rng = SplitMix64::new(11);
    let (users, items) = (30, 25);
    let mut raw = RawRatings {
        source: "serve test".into(),
        user_tokens: (0..users).map(|u| format!("u{u}")).collect(),
        item_tokens: (0..items).map(|i| format!("i{i}")).collect(),
        ..Default::default()
    };
    for u in 0..users {
        for i in 0..items {
            if rng.next_f64() < 0.3 {
                raw.users.push(u);
                raw.items.push(i);
                raw.ratings.push((1 + rng.next_u64() % 5) as f32);
            }
        }
    }
    let all: Vec<usize> = (0..raw.len()).collect();
    let ds = Dataset::build((&raw, &all), None, DuplicatePolicy::Last).unwrap();
    let cfg = TrainConfig {
        factors: 5,
        iterations: 3,
        blocks: 2,
        eval_every: 0,
        implicit: implicit.then_some(ImplicitConfig::hu(5.0, als_core::solve::Confidence::Linear)),
        ..Default::default()
    };
    let layouts = Layouts::for_dataset(&ds, cfg.blocks);
    let mut exec = LocalExecutor::new(&ds, layouts.clone());
    let res = train(&ds, &cfg, &mut exec, &layouts, None, &mut |_, _| Ok(())).unwrap();
    als_core::model::Model::new(crate::model_build::model_parts(&res, &ds, &cfg, "test", &TestMetrics::default())).unwrap()
}

fn serve_app(m: &Model, max_n: usize) -> (Router, Arc<ServeState>) {
    let live = Arc::new(LiveModel::with_state(
        std::path::Path::new("/nonexistent"),
        ServeState::new(m.clone(), max_n).unwrap(),
    ));
    let state = live.current();
    (router(live), state)
}

async fn call(app: &Router, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)));
    (status, headers, json)
}

async fn get(app: &Router, uri: &str) -> (StatusCode, serde_json::Value) {
    let (s, _, j) = call(app, Request::get(uri).body(Body::empty()).unwrap()).await;
    (s, j)
}

async fn post(app: &Router, body: &str) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
    let req = Request::post("/v1/recommendations")
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    call(app, req).await
}

fn expected(m: &Model, recs: &[Scored]) -> Vec<ScoredItem> {
    answer(m, recs)
}

/// An answer read back: f32 scores survive JSON exactly (shortest round-trip form).
fn items(j: &serde_json::Value) -> Vec<ScoredItem> {
    serde_json::from_value(j.clone()).unwrap_or_else(|e| panic!("not a list of {{item, score}}: {e}: {j}"))
}

fn error_of(j: &serde_json::Value) -> &str {
    j["error"].as_str().unwrap_or_else(|| panic!("no error message in {j}"))
}

#[tokio::test]
async fn get_answers_equal_the_model_queries() {
    let m = model(false);
    let (app, _) = serve_app(&m, 20);
    let (s, h) = get(&app, "/health").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (h["status"].as_str(), h["users"].as_u64(), h["version"].as_u64()),
        (Some("ok"), Some(30), Some(1))
    );

    let u = m.user_index("u7").unwrap();
    let (s, j) = get(&app, "/v1/users/u7/recommendations?n=5").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(items(&j), expected(&m, &m.recommend(u, 5, false, None)));
    assert_eq!(j.as_array().unwrap().len(), 5);
    let (_, j) = get(&app, "/v1/users/u7/recommendations").await;
    assert_eq!(items(&j), expected(&m, &m.recommend(u, DEFAULT_N, false, None)), "default n");
    let (_, j) = get(&app, "/v1/users/u7/recommendations?n=3&include_seen=true").await;
    assert_eq!(items(&j), expected(&m, &m.recommend(u, 3, true, None)));
    // n above the cap is capped (max_n 20, include_seen: all 25 items are candidates).
    let (s, j) = get(&app, "/v1/users/u7/recommendations?n=1000000&include_seen=true").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(j.as_array().unwrap().len(), 20);

    let i = m.item_index("i3").unwrap();
    let (s, j) = get(&app, "/v1/items/i3/similar?n=4").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(items(&j), expected(&m, &m.similar_items(i, 4)));
}

#[tokio::test]
async fn bad_get_requests_are_400_and_unknown_ids_404() {
    let m = model(false);
    let (app, _) = serve_app(&m, 100);
    for uri in [
        "/v1/users/u1/recommendations?n=0",
        "/v1/users/u1/recommendations?n=abc",
        "/v1/users/u1/recommendations?n=-3",
        "/v1/users/u1/recommendations?include_seen=maybe",
        "/v1/items/i1/similar?n=",
        "/v1/items/i1/similar?include_seen=true",
    ] {
        let (s, j) = get(&app, uri).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{uri}: {j}");
        assert!(!error_of(&j).is_empty());
    }
    let (s, j) = get(&app, "/v1/users/nobody/recommendations").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(error_of(&j), "user 'nobody' is not in the model");
    let (s, j) = get(&app, "/v1/items/nothing/similar").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(error_of(&j), "item 'nothing' is not in the model");
    let (s, j) = get(&app, "/v2/whatever").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(error_of(&j).contains("/v2/whatever"));
}

#[tokio::test]
async fn fold_in_post_equals_the_core_fold_in() {
    // Explicit: ratings; history items excluded unless include_seen.
    let m = model(false);
    let (app, state) = serve_app(&m, 100);
    let (s, h, j) = post(&app, r#"{"ratings": {"i2": 5, "i9": 1.5, "ghost": 4}, "n": 6}"#).await;
    assert_eq!(s, StatusCode::OK, "{j}");
    assert_eq!(h[UNKNOWN_ITEMS_HEADER], "1");
    let user = state.fold.fold_in(&m, &[("ghost", 4.0), ("i2", 5.0), ("i9", 1.5)], None).unwrap();
    assert_eq!(user.unknown, 1);
    assert_eq!(
        items(&j),
        expected(&m, &m.recommend_for_vector(&user.factors, user.bias, 6, &user.items, None))
    );
    let (_, _, j) = post(&app, r#"{"ratings": {"i2": 5, "i9": 1.5}, "include_seen": true}"#).await;
    assert_eq!(
        items(&j),
        expected(&m, &m.recommend_for_vector(&user.factors, user.bias, DEFAULT_N, &[], None))
    );

    // Implicit: a list of items, each counting once.
    let mi = model(true);
    let (app, state) = serve_app(&mi, 100);
    let (s, h, j) = post(&app, r#"{"items": ["i4", "i1", "i17"], "n": 5}"#).await;
    assert_eq!(s, StatusCode::OK, "{j}");
    assert_eq!(h[UNKNOWN_ITEMS_HEADER], "0");
    let user = state.fold.fold_in(&mi, &[("i4", 1.0), ("i1", 1.0), ("i17", 1.0)], None).unwrap();
    let want = mi.recommend_for_vector(&user.factors, 0.0, 5, &user.items, None);
    assert_eq!(items(&j), expected(&mi, &want));
    let returned: Vec<&str> = j.as_array().unwrap().iter().map(|e| e["item"].as_str().unwrap()).collect();
    assert!(
        !returned.iter().any(|i| ["i4", "i1", "i17"].contains(i)),
        "history items are excluded"
    );
}

#[tokio::test]
async fn bad_fold_in_requests_are_400_and_unknown_items_404() {
    let m = model(false);
    let (app, _) = serve_app(&m, 100);
    for (body, needle) in [
        (r#"{"ratings": {"i1": 4}, "items": ["i1"]}"#, "not both"),
        (r#"{"n": 3}"#, "give the user's history"),
        (r#"{"ratings": {}}"#, "empty"),
        (r#"{"items": ["i1"]}"#, "give \"ratings\""),
        (r#"{"ratings": {"i1": 4}, "n": 0}"#, "at least 1"),
        (r#"{"ratings": {"i1": 4}, "n": -2}"#, ""),
        (r#"{"ratings": {"i1": "four"}}"#, ""),
        (r#"{"ratings": {"i1": 4}, "colour": "red"}"#, "colour"),
        (r#"{"ratings": {"i1": 4"#, ""),
        ("not json", ""),
    ] {
        let (s, _, j) = post(&app, body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {j}");
        assert!(error_of(&j).contains(needle), "{body}: {j}");
    }
    // Without a JSON content type.
    let req = Request::post("/v1/recommendations")
        .body(Body::from(r#"{"ratings": {"i1": 4}}"#))
        .unwrap();
    let (s, _, j) = call(&app, req).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{j}");
    let (s, _, j) = post(&app, r#"{"ratings": {"x": 4, "y": 2}}"#).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{j}");
    assert_eq!(error_of(&j), "none of the 2 items of the history is in the model");

    let mi = model(true);
    let (app, _) = serve_app(&mi, 100);
    let (s, _, j) = post(&app, r#"{"items": []}"#).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{j}");
    let (s, _, j) = post(&app, r#"{"ratings": {"i1": -1}}"#).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{j}");
    assert!(error_of(&j).contains("negative"));
    // Finite but extreme values: refused at the edge, never a null or inf score.
    let (s, _, j) = post(&app, r#"{"ratings": {"i1": 1e30}}"#).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{j}");
    assert!(error_of(&j).contains("outside the supported range"), "{j}");
    let (app, _) = serve_app(&m, 100);
    let (s, _, j) = post(&app, r#"{"ratings": {"i1": 3e38}}"#).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{j}");
    assert!(error_of(&j).contains("outside the supported range"), "{j}");
}

/// A model trained by a build with another dense backend serves here (the
/// backend is a training-time speed choice): no panic, the same answers.
#[tokio::test]
async fn a_model_naming_a_backend_this_build_lacks_serves() {
    for implicit in [false, true] {
        let m = model(implicit);
        let mut parts = m.clone().into_parts();
        parts.hyperparameters["backend"] = serde_json::json!("lapack");
        let other = als_core::model::Model::new(parts).unwrap();
        let (app, _) = serve_app(&other, 100);
        let (want_app, _) = serve_app(&m, 100);
        let body = if implicit {
            r#"{"items": ["i1", "i2"]}"#
        } else {
            r#"{"ratings": {"i1": 4, "i2": 2}}"#
        };
        let (s, _, j) = post(&app, body).await;
        assert_eq!(s, StatusCode::OK, "{j}");
        let (_, _, want) = post(&want_app, body).await;
        assert_eq!(j, want);
    }
}

async fn text(app: &Router, uri: &str) -> (StatusCode, String, String) {
    let resp = app.clone().oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
    let status = resp.status();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, ctype, String::from_utf8(bytes.to_vec()).unwrap())
}

#[tokio::test]
async fn metrics_count_requests_by_route_template_and_status() {
    let m = model(true);
    let live = Arc::new(LiveModel::with_state(
        std::path::Path::new("/nonexistent"),
        ServeState::new(m.clone(), 50).unwrap(),
    ));
    let app = super::with_metrics(router(live.clone()), live);
    let user = &m.user_ids()[0];
    for _ in 0..3 {
        assert_eq!(get(&app, &format!("/v1/users/{user}/recommendations?n=2")).await.0, StatusCode::OK);
    }
    assert_eq!(get(&app, "/v1/users/nobody/recommendations").await.0, StatusCode::NOT_FOUND);
    assert_eq!(get(&app, "/no/such/route/x123").await.0, StatusCode::NOT_FOUND);
    let (status, ctype, body) = text(&app, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    let route = "route=\"/v1/users/{id}/recommendations\"";
    assert!(
        body.contains(&format!("als_serve_requests_total{{{route},status=\"200\"}} 3\n")),
        "{body}"
    );
    assert!(
        body.contains(&format!("als_serve_requests_total{{{route},status=\"404\"}} 1\n")),
        "{body}"
    );
    assert!(
        body.contains(&format!("als_serve_request_duration_seconds_count{{{route}}} 4\n")),
        "{body}"
    );
    // Unknown paths share one label: clients cannot grow the series.
    assert!(
        body.contains("als_serve_requests_total{route=\"unmatched\",status=\"404\"} 1\n"),
        "{body}"
    );
    assert!(!body.contains("x123") && !body.contains("nobody"));
    assert!(body.contains(&format!("als_serve_model_users {}\n", m.n_users())));
    assert!(body.contains(&format!("als_serve_model_version {}\n", m.version())));
}

#[test]
fn a_new_version_replaces_the_model_and_a_broken_one_keeps_the_old() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    let m = model(false);
    als_core::model::save_model(&m, &dir, false).unwrap();
    let live = LiveModel::open(&dir, 10).unwrap();
    let first = live.current();
    assert_eq!(live.reload(false).unwrap(), crate::commands::serve::Reload::Unchanged);
    // A new version, written as the trainer writes (one atomic replacement).
    let mut parts = m.into_parts();
    parts.version += 1;
    let m = als_core::model::Model::new(parts).unwrap();
    als_core::model::save_model(&m, &dir, true).unwrap();
    assert_eq!(
        live.reload(false).unwrap(),
        crate::commands::serve::Reload::Loaded { version: m.version() }
    );
    assert_eq!(live.current().model.version(), m.version());
    // A request that began before the reload still holds the old model whole.
    assert_eq!(first.model.version(), m.version() - 1);
    assert_eq!(live.reload(false).unwrap(), crate::commands::serve::Reload::Unchanged);
    // A broken version: the error says why, the last good model keeps serving,
    // and the same broken files are not retried on every check.
    std::fs::write(dir.join("model.json"), "{ not json").unwrap();
    let err = live.reload(false).unwrap_err();
    assert!(format!("{err:#}").contains("model.json"), "{err:#}");
    assert_eq!(live.current().model.version(), m.version());
    assert_eq!(live.reload(false).unwrap(), crate::commands::serve::Reload::Unchanged);
    let text = live.metrics.render();
    assert!(text.contains("als_serve_model_reloads_total{result=\"ok\"} 1\n"), "{text}");
    assert!(text.contains("als_serve_model_reloads_total{result=\"failed\"} 1\n"), "{text}");
    assert!(text.contains(&format!("als_serve_model_version {}\n", m.version())));
    // SIGHUP forces a retry of the same files (still broken: still the old model).
    assert!(live.reload(true).is_err());
    assert_eq!(live.current().model.version(), m.version());
}
