//! A saved model as the commands see it: opened with its directory named
//! in errors, ids resolved to rows, scored lists written out.

use std::io::Write;
use std::path::Path;

use als_core::model::{load_model, Model};
use als_core::topk::Scored;
use anyhow::Context;

/// Load a model directory, naming it in errors.
pub fn open_model(dir: &Path) -> anyhow::Result<Model> {
    load_model(dir).with_context(|| format!("cannot load the model from {}", dir.display()))
}

/// The row of a user id, or an error naming it.
pub fn user_row(model: &Model, id: &str) -> anyhow::Result<usize> {
    model
        .user_index(id)
        .with_context(|| format!("user '{id}' is not in the model ({} users)", model.n_users()))
}

/// The row of an item id, or an error naming it.
pub fn item_row(model: &Model, id: &str) -> anyhow::Result<usize> {
    model
        .item_index(id)
        .with_context(|| format!("item '{id}' is not in the model ({} items)", model.n_items()))
}

/// Write one user's list as a table (`rank item score`) or JSON lines.
pub fn write_list(out: &mut dyn Write, recs: &[Scored], json: bool, what: &str, ids: &[String]) -> std::io::Result<()> {
    if json {
        for s in recs {
            let mut m = serde_json::Map::new();
            m.insert(what.into(), serde_json::Value::String(ids[s.index as usize].clone()));
            m.insert("score".into(), serde_json::json!(s.score));
            writeln!(out, "{}", serde_json::Value::Object(m))?;
        }
        return Ok(());
    }
    let width = recs
        .iter()
        .map(|s| ids[s.index as usize].chars().count())
        .max()
        .unwrap_or(0)
        .max(what.len());
    writeln!(out, "{:>4}  {:<width$}  score", "rank", what)?;
    for (r, s) in recs.iter().enumerate() {
        writeln!(out, "{:>4}  {:<width$}  {:.4}", r + 1, ids[s.index as usize], s.score)?;
    }
    Ok(())
}
