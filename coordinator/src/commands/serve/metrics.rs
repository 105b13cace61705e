//! `/metrics` in the Prometheus text format (version 0.0.4): requests by
//! route and status, answer latencies as a histogram, the served model's
//! version and size, and reloads.
//!
//! Routes are labelled by their template (`/v1/users/{id}/recommendations`,
//! never the id) and unknown paths as `unmatched`, so the number of series
//! is bounded by the routes and status codes, whatever clients send.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use als_core::model::Model;

/// Upper bounds (seconds) of the latency buckets.
const BUCKETS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// The counters behind `/metrics`.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    model_version: AtomicU64,
    model_users: AtomicU64,
    model_items: AtomicU64,
    model_factors: AtomicU64,
    /// Seconds since the epoch at the last successful load.
    model_loaded_at: AtomicU64,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
}

impl Metrics {
    /// Count one answered request.
    pub fn observe(&self, route: &str, status: u16, seconds: f64) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((route.to_owned(), status))
            .or_default() += 1;
        let mut lat = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        let h = lat.entry(route.to_owned()).or_default();
        for (c, &le) in h.counts.iter_mut().zip(&BUCKETS) {
            if seconds <= le {
                *c += 1;
            }
        }
        h.count += 1;
        h.sum += seconds;
    }

    pub fn model_loaded(&self, m: &Model) {
        self.model_version.store(m.version(), Ordering::Relaxed);
        self.model_users.store(m.n_users() as u64, Ordering::Relaxed);
        self.model_items.store(m.n_items() as u64, Ordering::Relaxed);
        self.model_factors.store(m.factors() as u64, Ordering::Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.model_loaded_at.store(now, Ordering::Relaxed);
    }

    pub fn reloaded(&self, ok: bool) {
        let c = if ok { &self.reloads_ok } else { &self.reloads_failed };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let requests = self.requests.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let latency = self.latency.lock().unwrap_or_else(|p| p.into_inner()).clone();
        out.push_str("# HELP als_serve_requests_total Requests answered, by route template and HTTP status.\n");
        out.push_str("# TYPE als_serve_requests_total counter\n");
        for ((route, status), n) in &requests {
            let _ = writeln!(
                out,
                "als_serve_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                escape(route)
            );
        }
        out.push_str("# HELP als_serve_request_duration_seconds Time from request to answer, by route template.\n");
        out.push_str("# TYPE als_serve_request_duration_seconds histogram\n");
        for (route, h) in &latency {
            let r = escape(route);
            for (c, le) in h.counts.iter().zip(BUCKETS) {
                let _ = writeln!(out, "als_serve_request_duration_seconds_bucket{{route=\"{r}\",le=\"{le}\"}} {c}");
            }
            let _ = writeln!(
                out,
                "als_serve_request_duration_seconds_bucket{{route=\"{r}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(out, "als_serve_request_duration_seconds_sum{{route=\"{r}\"}} {}", h.sum);
            let _ = writeln!(out, "als_serve_request_duration_seconds_count{{route=\"{r}\"}} {}", h.count);
        }
        let gauges = [
            ("als_serve_model_version", "Version of the model being served.", &self.model_version),
            ("als_serve_model_users", "Users in the model being served.", &self.model_users),
            ("als_serve_model_items", "Items in the model being served.", &self.model_items),
            ("als_serve_model_factors", "Factors of the model being served.", &self.model_factors),
            (
                "als_serve_model_loaded_timestamp_seconds",
                "When the model being served was loaded (Unix time).",
                &self.model_loaded_at,
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP als_serve_model_reloads_total Model reloads, by result (a failed one keeps the old model).\n");
        out.push_str("# TYPE als_serve_model_reloads_total counter\n");
        let _ = writeln!(
            out,
            "als_serve_model_reloads_total{{result=\"ok\"}} {}",
            self.reloads_ok.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "als_serve_model_reloads_total{{result=\"failed\"}} {}",
            self.reloads_failed.load(Ordering::Relaxed)
        );
        out
    }
}

/// A label value with `\`, `"` and newlines escaped, as the format requires.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_buckets_and_escapes() {
        let m = Metrics::default();
        m.observe("/v1/items/{id}/similar", 200, 0.003);
        m.observe("/v1/items/{id}/similar", 200, 0.2);
        m.observe("/v1/items/{id}/similar", 404, 0.0001);
        m.observe("we\"ird\\", 200, 20.0);
        m.reloaded(true);
        m.reloaded(false);
        m.reloaded(false);
        let t = m.render();
        assert!(
            t.contains("als_serve_requests_total{route=\"/v1/items/{id}/similar\",status=\"200\"} 2\n"),
            "{t}"
        );
        assert!(t.contains("als_serve_requests_total{route=\"/v1/items/{id}/similar\",status=\"404\"} 1\n"));
        assert!(t.contains("als_serve_request_duration_seconds_bucket{route=\"/v1/items/{id}/similar\",le=\"0.0005\"} 1\n"));
        assert!(t.contains("als_serve_request_duration_seconds_bucket{route=\"/v1/items/{id}/similar\",le=\"0.005\"} 2\n"));
        assert!(t.contains("als_serve_request_duration_seconds_bucket{route=\"/v1/items/{id}/similar\",le=\"+Inf\"} 3\n"));
        assert!(t.contains("als_serve_request_duration_seconds_count{route=\"/v1/items/{id}/similar\"} 3\n"));
        // Past the last bucket: only +Inf counts it.
        assert!(
            t.contains("als_serve_request_duration_seconds_bucket{route=\"we\\\"ird\\\\\",le=\"10\"} 0\n"),
            "{t}"
        );
        assert!(t.contains("als_serve_model_reloads_total{result=\"ok\"} 1\n"));
        assert!(t.contains("als_serve_model_reloads_total{result=\"failed\"} 2\n"));
        // Every sample line follows its TYPE line's family.
        for line in t.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("als_serve_"), "{line}");
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
