//! `coordinator recommend`: top-N items for one user, or for every user (`--all`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use als_core::model::{FoldIn, Model, ModelKind};
use als_core::topk::{top_n_batch_in, ScoreBuffers, Scored};
use anyhow::{bail, Context};
use clap::Args;
use ndarray::{s, Array2};

use crate::history::{history_values, read_history};
use crate::model_dir::{open_model, user_row, write_list};

/// `coordinator recommend`.
#[derive(Args, Debug, Clone)]
pub struct RecommendArgs {
    #[command(flatten)]
    pub model: crate::args::ModelDirArg,
    /// User id as in the training data.
    #[arg(long, value_name = "ID", required_unless_present_any = ["all", "history"], conflicts_with_all = ["all", "history"])]
    pub user: Option<String>,
    /// A user not in the model: their history, one `item[,value]` per line (fold-in).
    #[arg(long, value_name = "FILE", conflicts_with = "all")]
    pub history: Option<PathBuf>,
    /// `-n/--num`, and `--json` (single user; --all picks its format by --out's name).
    #[command(flatten)]
    pub list: crate::args::ListArgs,
    /// Keep items the user already rated.
    #[arg(long)]
    pub include_seen: bool,
    /// Only recommend among these items (one id per line).
    #[arg(long, value_name = "FILE")]
    pub items: Option<PathBuf>,
    /// Recommend for every user of the model into --out.
    #[arg(long, requires = "out", conflicts_with = "json")]
    pub all: bool,
    /// Output of --all: CSV `user,rank,item,score`, or JSON lines when it ends in .json/.jsonl
    /// (its directory must exist).
    #[arg(long, value_name = "FILE", requires = "all")]
    pub out: Option<PathBuf>,
    /// Replace an existing --out file.
    #[arg(long, requires = "out")]
    pub overwrite: bool,
}

/// Users per batch of `--all` (each batch is one parallel `top_n_batch`, then written).
pub const ALL_BATCH_USERS: usize = 16_384;

/// Candidate items from a file (one id per line; blank lines ignored), as
/// sorted, deduplicated item rows. Unknown ids are skipped with a warning;
/// none known is an error.
pub fn read_candidates(model: &Model, path: &Path) -> anyhow::Result<Vec<u32>> {
    let text = als_core::data::read_text_file(path).context("cannot read the candidate items file")?;
    let mut rows = Vec::new();
    let mut unknown = Vec::new();
    for line in text.lines() {
        let id = line.trim();
        if id.is_empty() {
            continue;
        }
        match model.item_index(id) {
            Some(i) => rows.push(i as u32),
            None => unknown.push(id.to_string()),
        }
    }
    if !unknown.is_empty() {
        let shown: Vec<&str> = unknown.iter().take(5).map(String::as_str).collect();
        tracing::warn!(
            "{}: {} item ids are not in the model and are ignored (first: {})",
            path.display(),
            unknown.len(),
            shown.join(", ")
        );
    }
    rows.sort_unstable();
    rows.dedup();
    if rows.is_empty() {
        bail!("{}: none of the candidate items is in the model", path.display());
    }
    Ok(rows)
}

/// Run the command; results go to `out` (stdout in the binary).
pub fn run(args: &RecommendArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let model = open_model(&args.model.dir)?;
    let candidates = match &args.items {
        Some(p) => Some(read_candidates(&model, p)?),
        None => None,
    };
    if args.all {
        let path = args.out.as_deref().context("--all needs --out FILE")?;
        let t0 = Instant::now();
        let policy = als_core::atomic::OutputPolicy {
            overwrite: args.overwrite,
            create_parent: false,
        };
        let users = recommend_all(&model, args.list.n, args.include_seen, candidates.as_deref(), path, policy)?;
        let secs = t0.elapsed().as_secs_f64();
        tracing::info!(
            users,
            seconds = format_args!("{secs:.3}"),
            users_per_second = format_args!("{:.0}", users as f64 / secs.max(1e-9)),
            file = %path.display(),
            "recommendations written"
        );
        writeln!(
            out,
            "wrote top-{} recommendations for {users} users to {}",
            args.list.n,
            path.display()
        )?;
        return Ok(());
    }
    if let Some(path) = &args.history {
        let recs = recommend_for_history(&model, path, args.list.n, args.include_seen, candidates.as_deref())?;
        write_list(out, &recs, args.list.json, "item", model.item_ids())?;
        return Ok(());
    }
    let id = args.user.as_deref().context("give --user ID, --history FILE or --all")?;
    let u = user_row(&model, id)?;
    let recs = model.recommend(u, args.list.n, args.include_seen, candidates.as_deref());
    write_list(out, &recs, args.list.json, "item", model.item_ids())?;
    Ok(())
}

/// Top-`n` for a user not in the model, folded in from a history file; the
/// history's items are excluded like seen items unless `include_seen`.
pub fn recommend_for_history(
    model: &Model,
    path: &Path,
    n: usize,
    include_seen: bool,
    candidates: Option<&[u32]>,
) -> anyhow::Result<Vec<Scored>> {
    let lines = read_history(path)?;
    let history = history_values(&lines, model.kind(), path)?;
    let fold = FoldIn::new(model).context("cannot fold in")?;
    let user = fold
        .fold_in(model, &history, None)
        .with_context(|| format!("{}: cannot fold in", path.display()))?;
    if user.unknown > 0 {
        tracing::warn!(
            "{}: {} history items are not in the model and are ignored",
            path.display(),
            user.unknown
        );
    }
    let exclude: &[u32] = if include_seen { &[] } else { &user.items };
    Ok(model.recommend_for_vector(&user.factors, user.bias, n, exclude, candidates))
}

/// Output layout of `--all`, from the file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllFormat {
    /// `user,rank,item,score` with a header.
    Csv,
    /// `{"user": .., "items": [{"item": .., "score": ..}, ..]}` per line.
    JsonLines,
}

impl AllFormat {
    pub fn of(path: &Path) -> AllFormat {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("json") | Some("jsonl") => AllFormat::JsonLines,
            _ => AllFormat::Csv,
        }
    }
}

/// A CSV field, quoted when it holds a comma, quote or line break.
pub fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\"")).into()
    } else {
        s.into()
    }
}

/// Scoring matrices of `top_n_batch` whose dot products rank like the
/// model's predictions: implicit p·q; explicit p·q + b_i (μ + b_u is
/// constant per user and added back afterwards). Targets are restricted to
/// `candidates` when given.
fn scoring_targets(model: &Model, candidates: Option<&[u32]>) -> Array2<f32> {
    let k = model.factors();
    let item_bias = match model.kind() {
        ModelKind::Explicit => model.item_bias(),
        ModelKind::Implicit => None,
    };
    let rows: Vec<usize> = match candidates {
        Some(c) => c.iter().map(|&i| i as usize).collect(),
        None => (0..model.n_items()).collect(),
    };
    let extra = item_bias.is_some() as usize;
    let mut t = Array2::<f32>::zeros((rows.len(), k + extra));
    for (r, &i) in rows.iter().enumerate() {
        t.slice_mut(s![r, ..k]).assign(&model.item_factors().row(i));
        if let Some(b) = item_bias {
            t[[r, k]] = b[i];
        }
    }
    t
}

/// Top-`n` for every user into `path` (written atomically); returns the user count.
pub fn recommend_all(
    model: &Model,
    n: usize,
    include_seen: bool,
    candidates: Option<&[u32]>,
    path: &Path,
    policy: als_core::atomic::OutputPolicy,
) -> anyhow::Result<usize> {
    let k = model.factors();
    let targets = scoring_targets(model, candidates);
    let extra = targets.ncols() - k;
    // Item row -> candidate position (for the seen exclusion in candidate space).
    let position: Option<Vec<u32>> = candidates.map(|c| {
        let mut p = vec![u32::MAX; model.n_items()];
        for (pos, &i) in c.iter().enumerate() {
            p[i as usize] = pos as u32;
        }
        p
    });
    let target_item = |t: u32| -> usize {
        match candidates {
            Some(c) => c[t as usize] as usize,
            None => t as usize,
        }
    };
    let format = AllFormat::of(path);
    let n_users = model.n_users();
    als_core::atomic::write_file_atomic(path, policy, |w| {
        if format == AllFormat::Csv {
            w.write_all(b"user,rank,item,score\n")?;
        }
        let buffers = ScoreBuffers::new();
        let mut start = 0;
        while start < n_users {
            let end = (start + ALL_BATCH_USERS).min(n_users);
            let mut q = Array2::<f32>::ones((end - start, k + extra));
            q.slice_mut(s![.., ..k]).assign(&model.user_factors().slice(s![start..end, ..]));
            // Seen items of each user of the batch, in target space, sorted.
            let excluded: Vec<Vec<u32>> = (start..end)
                .map(|u| {
                    if include_seen {
                        return Vec::new();
                    }
                    let seen = model.seen().row(u).0;
                    match &position {
                        None => seen.to_vec(),
                        Some(p) => {
                            let mut v: Vec<u32> = seen.iter().map(|&i| p[i as usize]).filter(|&x| x != u32::MAX).collect();
                            v.sort_unstable();
                            v
                        }
                    }
                })
                .collect();
            let exclude = |r: usize| excluded[r].as_slice();
            let tops = top_n_batch_in(&buffers, q.view(), targets.view(), n, &exclude);
            for (j, top) in tops.iter().enumerate() {
                let u = start + j;
                let offset = match model.kind() {
                    ModelKind::Explicit => model.global_mean() + model.user_bias().map_or(0.0, |b| b[u]),
                    ModelKind::Implicit => 0.0,
                };
                let uid = &model.user_ids()[u];
                match format {
                    AllFormat::Csv => {
                        for (r, s) in top.iter().enumerate() {
                            writeln!(
                                w,
                                "{},{},{},{}",
                                csv_field(uid),
                                r + 1,
                                csv_field(&model.item_ids()[target_item(s.index)]),
                                s.score + offset
                            )?;
                        }
                    }
                    AllFormat::JsonLines => {
                        let items: Vec<serde_json::Value> = top
                            .iter()
                            .map(|s| serde_json::json!({"item": model.item_ids()[target_item(s.index)], "score": s.score + offset}))
                            .collect();
                        writeln!(w, "{}", serde_json::json!({"user": uid, "items": items}))?;
                    }
                }
            }
            start = end;
        }
        Ok(())
    })
    .with_context(|| format!("cannot write recommendations to {}", path.display()))?;
    Ok(n_users)
}
