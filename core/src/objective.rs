//! The training objective and training error, to watch convergence.

use rayon::prelude::*;

use crate::data::Csr;
use multiversion::multiversion;

use crate::linalg::rows_ops::{prefetch_row, GATHER_AHEAD};
use crate::linalg::vec::{dot_f32_f64_wide, dot_f64};
use crate::side::Factors;
use crate::solve::{Feedback, ImplicitWeights, SolveParams};

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ObjectiveValue {
    /// The loss the half-iterations minimize, regularization included.
    pub objective: f64,
    /// RMSE on the training ratings (implicit: of the preference on observed pairs).
    pub train_rmse: f64,
}

/// Per-row values summed in row order, so the result does not depend on threads.
fn ordered_sum(v: Vec<(f64, f64)>) -> (f64, f64) {
    v.into_iter().fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1))
}

/// `other_rows`: rows of the other side (the iALS loss scales λ by them).
fn reg_term(p: &SolveParams, f: &Factors, counts: &Csr, other_rows: usize) -> f64 {
    let per_row: Vec<f64> = (0..f.n_rows())
        .into_par_iter()
        .map(|r| {
            let row = f.row(r);
            let sq = dot_f32_f64_wide(row, row) + (f.bias_of(r) as f64).powi(2);
            p.row_lambda(counts.row_len(r), other_rows) * sq
        })
        .collect();
    per_row.into_iter().sum()
}

/// The Gramians the implicit objective uses: YᵀY of the items and, where the
/// caller has it, XᵀX of the users, so that Σᵤ xᵤᵀ(YᵀY)xᵤ = ⟨YᵀY, XᵀX⟩
/// costs k² instead of n·k² (training has both after every iteration).
#[derive(Debug, Clone, Copy)]
pub struct Grams<'a> {
    pub items: &'a [f64],
    pub users: Option<&'a [f64]>,
}

/// Explicit: Σ(r − r̂)² + Σᵤ λᵤ(‖pᵤ‖² + bᵤ²) + Σᵢ λᵢ(‖qᵢ‖² + bᵢ²).
/// Implicit (Hu et al.): Σ over ALL pairs cᵤᵢ(pᵤᵢ − xᵤᵀyᵢ)² + the same regularization;
/// iALS (Rendle et al.): Σ_observed w(1 − xᵤᵀyᵢ)² plus α₀·Σ over ALL pairs
/// (xᵤᵀyᵢ)² plus the same. Both computed with YᵀY, so they cost
/// O(nnz·k + n·k²), or O(nnz·k + k²) with XᵀX.
pub fn objective(p: &SolveParams, by_user: &Csr, by_item: &Csr, users: &Factors, items: &Factors, grams: Option<Grams>) -> ObjectiveValue {
    // With XᵀX the unobserved-pairs term is one inner product, not a term per user.
    let per_user_gram = match grams {
        Some(Grams { items, users: None }) => Some(items),
        _ => None,
    };
    let rows: Vec<(f64, f64)> = (0..by_user.n_rows())
        .into_par_iter()
        .map_init(Vec::new, |x64, u| user_terms(p, by_user, users, items, per_user_gram, u, x64))
        .collect();
    let (mut loss, sq) = ordered_sum(rows);
    if let (
        Some(w),
        Some(Grams {
            items: g,
            users: Some(xtx),
        }),
    ) = (p.implicit_weights(), grams)
    {
        loss += w.gram_scale() as f64 * dot_f64(g, xtx);
    }
    let reg = reg_term(p, users, by_user, items.n_rows()) + reg_term(p, items, by_item, users.n_rows());
    ObjectiveValue {
        objective: loss + reg,
        train_rmse: (sq / by_user.nnz().max(1) as f64).sqrt(),
    }
}

/// One user's loss and squared training error (vectorized where the CPU allows).
#[multiversion(targets("x86_64+avx+avx2+fma+avx512f", "x86_64+avx+avx2+fma"))]
fn user_terms(
    p: &SolveParams,
    by_user: &Csr,
    users: &Factors,
    items: &Factors,
    item_gram: Option<&[f64]>,
    u: usize,
    x64: &mut Vec<f64>,
) -> (f64, f64) {
    let k = p.factors;
    let (cols, vals) = by_user.row(u);
    let x = users.row(u);
    let mut loss = 0.0;
    let mut sq = 0.0;
    match p.feedback {
        Feedback::Explicit { biased, global_mean } => {
            for (j, (&i, &r)) in cols.iter().zip(vals).enumerate() {
                if let Some(&ahead) = cols.get(j + GATHER_AHEAD) {
                    prefetch_row(items.flat(), ahead as usize * k, k);
                }
                let mut pred = dot_f32_f64_wide(x, items.row(i as usize));
                if biased {
                    pred += global_mean as f64 + users.bias_of(u) as f64 + items.bias_of(i as usize) as f64;
                }
                let e = r as f64 - pred;
                loss += e * e;
            }
            sq = loss;
        }
        Feedback::Implicit {
            alpha,
            confidence,
            loss: l,
        } => {
            let w = ImplicitWeights {
                alpha,
                confidence,
                loss: l,
            };
            // s·xᵀ(YᵀY)x covers every pair as if unobserved (weight s, p = 0).
            if let Some(g) = item_gram {
                x64.clear();
                x64.extend(x.iter().map(|&v| v as f64));
                let mut quad = 0.0;
                for (a, ga) in g.chunks_exact(k).enumerate() {
                    quad += x64[a] * dot_f64(ga, x64);
                }
                loss += w.gram_scale() as f64 * quad;
            }
            for (j, (&i, &r)) in cols.iter().zip(vals).enumerate() {
                if let Some(&ahead) = cols.get(j + GATHER_AHEAD) {
                    prefetch_row(items.flat(), ahead as usize * k, k);
                }
                let s = dot_f32_f64_wide(x, items.row(i as usize));
                let pref = if r > 0.0 { 1.0 } else { 0.0 };
                loss += w.observed_loss(r, s);
                sq += (pref - s).powi(2);
            }
        }
    }
    (loss, sq)
}
