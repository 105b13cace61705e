//! Implicit feedback (Hu, Koren & Volinsky 2008): confidence-weighted least
//! squares where every unobserved pair counts with confidence 1 and
//! preference 0. YᵀY covers the unobserved pairs for all rows at once; each
//! row adds (cᵤᵢ − 1)·yᵢyᵢᵀ for its observed items only.

use multiversion::multiversion;

use super::{FixedSide, ImplicitWeights, RowScratch, RowsView, SolveParams, GATHER_CHUNK};
use crate::linalg::normal_ld;
use crate::linalg::rows_ops::{self, prefetch_row, DotWeight, GATHER_AHEAD};
use crate::linalg::sym_rows::{padded_len, sym_mul_rows};
use crate::linalg::syrk::{panel_width, syrk_lower_add};
use crate::linalg::vec::{axpy_f32, dot_f32};

/// The exact system (s·YᵀY + Σ e·yyᵀ + λI) x = Σ t·y in `s.a` and `s.b`,
/// with the Gramian's scale s and each observed item's (e, t) from the loss
/// ([`ImplicitWeights`]); Hu et al.: (YᵀY + Σ(c−1)yyᵀ + λI) x = Σ c·p·y.
/// `gram` is s·YᵀY. Returns d = k.
pub(super) fn ridge_system(
    p: &SolveParams,
    weights: ImplicitWeights,
    cols: &[u32],
    vals: &[f32],
    fixed: &FixedSide,
    gram: &[f64],
    s: &mut RowScratch,
) -> usize {
    let k = p.factors;
    let w = panel_width(k);
    let ld = normal_ld(k);
    for (dst, src) in s.a.chunks_exact_mut(ld).zip(gram.chunks_exact(k)) {
        dst[..k].copy_from_slice(src);
    }
    s.b[..k].fill(0.0);
    for (cc, cv) in cols.chunks(GATHER_CHUNK).zip(vals.chunks(GATHER_CHUNK)) {
        let n = cc.len();
        gather_weighted(cc, cv, fixed, k, weights, w, &mut s.panel[..n * w], &mut s.b[..k]);
        syrk_lower_add(&s.panel[..n * w], n, w, k, &mut s.g32, &mut s.a[..k * ld], ld);
    }
    s.add_ridge(k, p.row_lambda(cols.len(), fixed.total_rows));
    k
}

/// Rows √e·yᵢ into the row-major panel (`w` floats apart) and Σ t·yᵢ into `b`.
#[multiversion(targets("x86_64+avx+avx2+fma+avx512f", "x86_64+avx+avx2+fma"))]
#[allow(clippy::too_many_arguments)]
fn gather_weighted(
    cols: &[u32],
    vals: &[f32],
    fixed: &FixedSide,
    k: usize,
    weights: ImplicitWeights,
    w: usize,
    x: &mut [f32],
    b: &mut [f64],
) {
    for (j, ((&c, &r), dst)) in cols.iter().zip(vals).zip(x.chunks_exact_mut(w)).enumerate() {
        if let Some(&ahead) = cols.get(j + GATHER_AHEAD) {
            prefetch_row(fixed.factors, ahead as usize * k, k);
        }
        let row = &fixed.factors[c as usize * k..(c as usize + 1) * k];
        let (extra, cp) = weights.observed_f64(r);
        let wt = extra.sqrt();
        for ((xf, bf), &v) in dst[..k].iter_mut().zip(b.iter_mut()).zip(row) {
            *xf = (wt * v as f64) as f32;
            *bf += cp * v as f64;
        }
    }
}

/// This CPU's L2 in bytes (1 MiB where Linux does not say), read once per
/// process. The block CG's grouping and gathering follow it; neither
/// changes a row's bits, so neither does the CPU it runs on.
fn l2_cache_bytes() -> usize {
    static BYTES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *BYTES.get_or_init(|| l2_bytes().unwrap_or(1 << 20).clamp(128 << 10, 8 << 20))
}

/// Floats of gathered item rows one CG group keeps: half of L2, so the rows
/// stay there from one pass to the next beside the group's vectors and the
/// Gramian (a panel the size of L2 was read back from L3 on every pass).
fn cg_panel_floats() -> usize {
    l2_cache_bytes() / 2 / std::mem::size_of::<f32>()
}

/// Whether the block CG copies each row's item rows into its panel: only
/// when the fixed side is larger than L2. A side that fits stays in L2 from
/// one pass to the next anyway, so the copy would cost about a pass and
/// save nothing (MovieLens-1M-shaped, k=64, a 2 MiB L2: a quarter of the
/// CPU time went to the copy).
fn cg_gathers(fixed: &FixedSide) -> bool {
    std::mem::size_of_val(fixed.factors) > l2_cache_bytes()
}

/// The size of the level-2 data cache of CPU 0, where Linux tells it.
fn l2_bytes() -> Option<usize> {
    let dir = std::path::Path::new("/sys/devices/system/cpu/cpu0/cache");
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let read = |name: &str| std::fs::read_to_string(entry.path().join(name)).ok();
        let (Some(level), Some(kind), Some(size)) = (read("level"), read("type"), read("size")) else {
            continue;
        };
        if level.trim() != "2" || kind.trim() == "Instruction" {
            continue;
        }
        let size = size.trim();
        let (digits, unit) = size.split_at(size.find(|c: char| !c.is_ascii_digit()).unwrap_or(size.len()));
        let scale = match unit {
            "" => 1,
            "K" => 1 << 10,
            "M" => 1 << 20,
            _ => return None,
        };
        return digits.parse::<usize>().ok().map(|n| n * scale);
    }
    None
}

/// Buffers of the block CG: each row's x, r, p and A·p, `padded_len(k)`
/// apart, and the gathered item rows.
pub(crate) struct CgBlock {
    x: Vec<f32>,
    r: Vec<f32>,
    pv: Vec<f32>,
    ap: Vec<f32>,
    /// Item rows of the task's first rows, contiguous, so every CG pass
    /// reads them from cache instead of from all over Y.
    panel: Vec<f32>,
    /// 0, 1, 2, …: the column indices of a row's gathered items in `panel`.
    iota: Vec<u32>,
    /// Per observed item of the task's rows, in order: c − 1 and c·p.
    excess: Vec<f32>,
    cp: Vec<f32>,
    /// One row's dot products yᵢ·v.
    dots: Vec<f32>,
}

impl CgBlock {
    pub(super) fn new(k: usize, rows: usize) -> Self {
        let n = rows * padded_len(k);
        CgBlock {
            x: vec![0.0; n],
            r: vec![0.0; n],
            pv: vec![0.0; n],
            ap: vec![0.0; n],
            panel: Vec::new(),
            iota: Vec::new(),
            excess: Vec::new(),
            cp: Vec::new(),
            dots: Vec::new(),
        }
    }
}

/// The block CG's copy of the (scaled) Gramian `gram` (k×k, f64): f32, with
/// rows `padded_len(k)` apart, as [`sym_mul_rows`] reads it.
pub(super) fn padded_gram_f32(gram: &[f64], k: usize) -> Vec<f32> {
    let kp = padded_len(k);
    gram.chunks_exact(k)
        .flat_map(|row| row.iter().map(|&v| v as f32).chain(std::iter::repeat_n(0.0, kp - k)))
        .collect()
}

/// What every row of one block CG call shares: the settings, the rows'
/// ratings, the fixed side, and `gram`, YᵀY in f32 (scaled) with rows
/// `padded_len(k)` apart.
#[derive(Clone, Copy)]
pub(super) struct CgProblem<'a> {
    pub p: &'a SolveParams,
    pub weights: ImplicitWeights,
    pub steps: usize,
    pub rows: &'a RowsView<'a>,
    pub fixed: &'a FixedSide<'a>,
    pub gram: &'a [f32],
}

/// A few conjugate-gradient steps from the current factors, as `implicit`
/// does (O(nᵤ·k + k²) per step instead of O(nᵤ·k² + k³)), for the rows
/// `first..first+count` of `rows` together: the dense term YᵀY·p of all of
/// them is one small GEMM per step ([`sym_mul_rows`]). Each row follows the
/// same arithmetic as it would alone, and stops where it would alone.
/// `out` holds the rows' factors (the warm start) and receives the result.
///
/// The rows go in groups whose item rows fit [`cg_panel_floats`], so each
/// group's every pass reads them from L2: gathered into a panel where the
/// fixed side is larger than L2 ([`cg_gathers`]), in place where it fits.
pub(super) fn solve_rows_cg(problem: &CgProblem, first: usize, cg: &mut CgBlock, out: &mut [f32]) {
    let gather = cg_gathers(problem.fixed);
    solve_rows_cg_in_groups(problem, first, cg, cg_panel_floats(), gather, out);
}

/// [`solve_rows_cg`] with groups of at most `panel_floats` floats of item
/// rows, gathered into the panel when `gather` (a row with more than that
/// alone reads Y in place).
pub(super) fn solve_rows_cg_in_groups(
    problem: &CgProblem,
    first: usize,
    cg: &mut CgBlock,
    panel_floats: usize,
    gather: bool,
    out: &mut [f32],
) {
    let k = problem.p.factors;
    let count = out.len() / k;
    let mut lo = 0;
    while lo < count {
        let (mut hi, mut used) = (lo, 0);
        while hi < count {
            let need = problem.rows.row(first + hi).0.len() * k;
            if hi > lo && used + need > panel_floats {
                break;
            }
            used += need;
            hi += 1;
        }
        cg_group(problem, first + lo, cg, panel_floats, gather, &mut out[lo * k..hi * k]);
        lo = hi;
    }
}

/// The block CG of the rows `first..first + out.len() / k`.
fn cg_group(problem: &CgProblem, first: usize, cg: &mut CgBlock, panel_floats: usize, gather: bool, out: &mut [f32]) {
    let CgProblem {
        p,
        weights,
        steps,
        rows,
        fixed,
        gram,
    } = *problem;
    let k = p.factors;
    let kp = padded_len(k);
    let count = out.len() / k;
    let lam: Vec<f32> = (0..count)
        .map(|b| p.row_lambda(rows.row(first + b).0.len(), fixed.total_rows) as f32)
        .collect();
    for (xb, ob) in cg.x.chunks_exact_mut(kp).zip(out.chunks_exact(k)) {
        xb[..k].copy_from_slice(ob);
        xb[k..].fill(0.0);
    }
    // Gather item rows (if at all) while they fit; a row that does not fit
    // reads Y directly. Either way the arithmetic is the same, so the bits
    // are too.
    let mut gathered = vec![None; count];
    let mut used = 0;
    for (b, g) in gathered.iter_mut().enumerate().filter(|_| gather) {
        let need = rows.row(first + b).0.len() * k;
        if used + need <= panel_floats {
            *g = Some(used);
            used += need;
        }
    }
    // Confidence terms once per item, not once per pass.
    let mut offsets = Vec::with_capacity(count + 1);
    cg.excess.clear();
    cg.cp.clear();
    let mut longest = 0;
    for b in 0..count {
        offsets.push(cg.excess.len());
        let (_, vals) = rows.row(first + b);
        longest = longest.max(vals.len());
        for &v in vals {
            let (e, t) = weights.observed(v);
            cg.excess.push(e);
            cg.cp.push(t);
        }
    }
    offsets.push(cg.excess.len());
    if cg.dots.len() < longest {
        cg.dots.resize(longest, 0.0);
    }
    if cg.iota.len() < longest {
        cg.iota = (0..longest as u32).collect();
    }
    let terms = |b: usize| (&cg.excess[offsets[b]..offsets[b + 1]], &cg.cp[offsets[b]..offsets[b + 1]]);
    // r = b − A x, with A = s·YᵀY + λI + Σ e·yyᵀ and b = Σ t·y (Hu et al.:
    // e = c − 1, t = c·p); `gram` is already scaled.
    sym_mul_rows(gram, k, &cg.x, &mut cg.ap, count);
    let mut rs_old = vec![0f32; count];
    let mut active = vec![true; count];
    cg.panel.clear();
    cg.panel.reserve(used);
    for b in 0..count {
        let (cols, _) = rows.row(first + b);
        // Each row's items are gathered just before its residual, which
        // then reads them from L1 rather than back from L2.
        let (cols, y) = match gathered[b] {
            Some(at) => {
                // Rows are gathered in the order their offsets were given.
                debug_assert_eq!(cg.panel.len(), at);
                rows_ops::gather_rows(fixed.factors, k, cols, &mut cg.panel);
                (&cg.iota[..cols.len()], &cg.panel[at..at + cols.len() * k])
            }
            None => (cols, fixed.factors),
        };
        let (ex, cp) = terms(b);
        let range = b * kp..b * kp + k;
        rs_old[b] = initial_residual(
            k,
            lam[b],
            cols,
            ex,
            cp,
            y,
            &cg.x[range.clone()],
            &cg.ap[range.clone()],
            &mut cg.r[range.clone()],
            &mut cg.dots,
        );
        cg.pv[range.clone()].copy_from_slice(&cg.r[range]);
        active[b] = rs_old[b] >= 1e-20;
    }
    let (panel, iota) = (&cg.panel, &cg.iota);
    let source = |b: usize| -> (&[u32], &[f32]) {
        let (cols, _) = rows.row(first + b);
        match gathered[b] {
            Some(at) => (&iota[..cols.len()], &panel[at..at + cols.len() * k]),
            None => (cols, fixed.factors),
        }
    };
    for _ in 0..steps {
        if !active.iter().any(|&a| a) {
            break;
        }
        sym_mul_rows(gram, k, &cg.pv, &mut cg.ap, count);
        for b in 0..count {
            if !active[b] {
                continue;
            }
            let (cols, y) = source(b);
            let (ex, _) = terms(b);
            let range = b * kp..b * kp + k;
            let step = cg_step(
                k,
                lam[b],
                cols,
                ex,
                y,
                rs_old[b],
                &mut cg.x[range.clone()],
                &mut cg.r[range.clone()],
                &mut cg.pv[range.clone()],
                &mut cg.ap[range],
                &mut cg.dots,
            );
            match step {
                Some(rs_new) => rs_old[b] = rs_new,
                None => active[b] = false,
            }
        }
    }
    for (ob, xb) in out.chunks_exact_mut(k).zip(cg.x.chunks_exact(kp)) {
        ob.copy_from_slice(&xb[..k]);
    }
}

/// r = −(YᵀY x) − λx + Σ (c·p − (c−1)·yᵢ·x) yᵢ, given `gx` = YᵀY x and
/// each item's c − 1 (`ex`) and c·p (`cp`); returns r·r.
#[multiversion(targets("x86_64+avx+avx2+fma+avx512f", "x86_64+avx+avx2+fma"))]
#[allow(clippy::too_many_arguments)]
fn initial_residual(
    k: usize,
    lam: f32,
    cols: &[u32],
    ex: &[f32],
    cp: &[f32],
    y: &[f32],
    x: &[f32],
    gx: &[f32],
    r: &mut [f32],
    dots: &mut [f32],
) -> f32 {
    for ((ri, xi), gi) in r.iter_mut().zip(x).zip(gx) {
        *ri = -*gi - lam * xi;
    }
    rows_ops::dots_then_add(y, cols, k, x, DotWeight::Residual { ex, cp }, dots, r);
    dot_f32(r, r)
}

/// One CG step of one row, given `ap` = YᵀY p: completes A·p, moves x and r,
/// and returns the new r·r, or None where the row has converged (or its
/// curvature is not positive) and stops.
#[multiversion(targets("x86_64+avx+avx2+fma+avx512f", "x86_64+avx+avx2+fma"))]
#[allow(clippy::too_many_arguments)]
fn cg_step(
    k: usize,
    lam: f32,
    cols: &[u32],
    ex: &[f32],
    y: &[f32],
    rs_old: f32,
    x: &mut [f32],
    r: &mut [f32],
    pv: &mut [f32],
    ap: &mut [f32],
    dots: &mut [f32],
) -> Option<f32> {
    for (a, pi) in ap.iter_mut().zip(pv.iter()) {
        *a += lam * pi;
    }
    rows_ops::dots_then_add(y, cols, k, pv, DotWeight::Scaled { ex }, dots, ap);
    let pap = dot_f32(pv, ap);
    if pap <= 0.0 || !pap.is_finite() {
        return None;
    }
    let step = rs_old / pap;
    axpy_f32(step, pv, x);
    axpy_f32(-step, ap, r);
    let rs_new = dot_f32(r, r);
    if rs_new < 1e-20 {
        return None;
    }
    let beta = rs_new / rs_old;
    for (pi, ri) in pv.iter_mut().zip(r.iter()) {
        *pi = ri + beta * *pi;
    }
    Some(rs_new)
}

/// The row-at-a-time CG that [`solve_rows_cg`] replaced, kept as its reference.
#[cfg(test)]
#[allow(clippy::too_many_arguments)]
pub(super) fn reference_cg_row(
    k: usize,
    weights: ImplicitWeights,
    steps: usize,
    lam: f32,
    cols: &[u32],
    vals: &[f32],
    y: &[f32],
    gram: &[f32],
    x: &mut [f32],
) {
    use crate::linalg::vec::symv_f32;
    let (mut r, mut pv, mut ap) = (vec![0f32; k], vec![0f32; k], vec![0f32; k]);
    symv_f32(gram, x, &mut r);
    for (ri, xi) in r.iter_mut().zip(x.iter()) {
        *ri = -*ri - lam * xi;
    }
    for (&c, &v) in cols.iter().zip(vals) {
        let yi = &y[c as usize * k..(c as usize + 1) * k];
        let (excess, cp) = weights.observed(v);
        let coef = cp - excess * dot_f32(yi, x);
        axpy_f32(coef, yi, &mut r);
    }
    pv.copy_from_slice(&r);
    let mut rs_old = dot_f32(&r, &r);
    if rs_old < 1e-20 {
        return;
    }
    for _ in 0..steps {
        symv_f32(gram, &pv, &mut ap);
        for (a, pi) in ap.iter_mut().zip(pv.iter()) {
            *a += lam * pi;
        }
        for (&c, &v) in cols.iter().zip(vals) {
            let yi = &y[c as usize * k..(c as usize + 1) * k];
            let (excess, _) = weights.observed(v);
            axpy_f32(excess * dot_f32(yi, &pv), yi, &mut ap);
        }
        let pap = dot_f32(&pv, &ap);
        if pap <= 0.0 || !pap.is_finite() {
            return;
        }
        let step = rs_old / pap;
        axpy_f32(step, &pv, x);
        axpy_f32(-step, &ap, &mut r);
        let rs_new = dot_f32(&r, &r);
        if rs_new < 1e-20 {
            return;
        }
        let beta = rs_new / rs_old;
        for (pi, ri) in pv.iter_mut().zip(r.iter()) {
            *pi = ri + beta * *pi;
        }
        rs_old = rs_new;
    }
}
