//! The grid of settings, per-fold scores and the choice of the best.

use serde::Serialize;

/// One point of the grid.
pub type Setting = crate::args::ModelPoint;

/// The values of each axis of the grid; `[None]` for an axis the run lacks.
#[derive(Debug, Clone, PartialEq)]
pub struct Axes {
    pub lambdas: Vec<f32>,
    pub factors: Vec<usize>,
    pub alphas: Vec<Option<f32>>,
    pub unobserved_weights: Vec<Option<f32>>,
    pub reg_exponents: Vec<Option<f32>>,
    pub init_stds: Vec<Option<f32>>,
    pub solvers: Vec<Option<crate::args::SolverArg>>,
    /// Applied to the `--solver ialspp` settings only.
    pub block_sizes: Vec<Option<usize>>,
}

/// Every combination, λ outermost, then factors, α, α₀, ν, σ, the solver
/// and iALS++'s block size innermost (the order of the table). Block sizes
/// multiply only the iALS++ settings, and λ does not multiply the Gibbs
/// settings (the sampler learns its prior): they take the first λ.
pub fn expand(axes: &Axes) -> Vec<Setting> {
    use crate::args::SolverArg;
    let grid = axes
        .lambdas
        .iter()
        .flat_map(|&lambda| axes.factors.iter().map(move |&factors| Setting::new(lambda, factors)))
        .collect();
    let grid = within(grid, &axes.alphas, |s, v| s.alpha = v);
    let grid = within(grid, &axes.unobserved_weights, |s, v| s.unobserved_weight = v);
    let grid = within(grid, &axes.reg_exponents, |s, v| s.reg_exponent = v);
    let grid = within(grid, &axes.init_stds, |s, v| s.init_std = v);
    let grid = within(grid, &axes.solvers, |s, v| s.solver = v);
    let first_lambda = axes.lambdas.first().copied();
    grid.into_iter()
        .filter(|s| s.solver != Some(SolverArg::Gibbs) || Some(s.lambda) == first_lambda)
        .flat_map(|s| {
            let sizes = if s.solver == Some(SolverArg::Ialspp) {
                axes.block_sizes.as_slice()
            } else {
                &[None]
            };
            within(vec![s], sizes, |s, v| s.block_size = v)
        })
        .collect()
}

/// Each setting of `grid` once per value of an inner axis, in order.
fn within<T: Copy>(grid: Vec<Setting>, values: &[T], set: impl Fn(&mut Setting, T)) -> Vec<Setting> {
    let set = &set;
    grid.into_iter()
        .flat_map(|s| {
            values.iter().map(move |&v| {
                let mut s = s;
                set(&mut s, v);
                s
            })
        })
        .collect()
}

/// The grid with the train command's default setting in it: its index, and
/// the grid with the default appended where the grid lacks it (so the table
/// can say by how much the best setting beats what a user gets untuned).
pub fn with_default(mut grid: Vec<Setting>, default: Setting) -> (Vec<Setting>, usize) {
    match grid.iter().position(|s| *s == default) {
        Some(i) => (grid, i),
        None => {
            grid.push(default);
            let i = grid.len() - 1;
            (grid, i)
        }
    }
}

/// The scores of one setting over the folds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SettingScores {
    pub setting: Setting,
    /// The metric of each fold, in fold order.
    pub per_fold: Vec<f64>,
    /// Training seconds of each fold.
    pub seconds: Vec<f64>,
    /// With --patience, the iteration each fold scored (its best).
    pub best_iterations: Vec<usize>,
}

impl SettingScores {
    pub fn mean(&self) -> f64 {
        self.per_fold.iter().sum::<f64>() / self.per_fold.len().max(1) as f64
    }

    /// The mean best iteration over the folds (--patience).
    pub fn mean_iteration(&self) -> Option<f64> {
        (!self.best_iterations.is_empty()).then(|| self.best_iterations.iter().sum::<usize>() as f64 / self.best_iterations.len() as f64)
    }

    /// [`mean_iteration`](Self::mean_iteration) rounded, at least 1: the final fit's iterations.
    pub fn mean_best_iteration(&self) -> Option<usize> {
        self.mean_iteration().map(|m| (m.round() as usize).max(1))
    }

    /// Population standard deviation over the folds (as Surprise's cross_validate prints).
    pub fn std(&self) -> f64 {
        let m = self.mean();
        (self.per_fold.iter().map(|x| (x - m).powi(2)).sum::<f64>() / self.per_fold.len().max(1) as f64).sqrt()
    }
}

/// The metric a tuning run compares.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metric {
    /// `rmse` or `ndcg@K`.
    pub name: String,
    pub higher_is_better: bool,
}

/// Index of the best mean (the first among equals; settings with a
/// non-finite mean never win). `None` when no mean is finite.
pub fn best(scores: &[SettingScores], metric: &Metric) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, s) in scores.iter().enumerate() {
        let m = s.mean();
        if !m.is_finite() {
            continue;
        }
        let better = match best {
            None => true,
            Some((_, b)) if metric.higher_is_better => m > b,
            Some((_, b)) => m < b,
        };
        if better {
            best = Some((i, m));
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scores(lambda: f32, per_fold: &[f64]) -> SettingScores {
        SettingScores {
            setting: Setting::new(lambda, 8),
            per_fold: per_fold.to_vec(),
            seconds: vec![0.0; per_fold.len()],
            best_iterations: Vec::new(),
        }
    }

    #[test]
    fn lambda_does_not_multiply_the_gibbs_settings() {
        use crate::args::SolverArg::{Cholesky, Gibbs};
        let g = expand(&Axes {
            lambdas: vec![0.05, 0.1],
            factors: vec![8, 16],
            alphas: vec![None],
            unobserved_weights: vec![None],
            reg_exponents: vec![None],
            init_stds: vec![None],
            solvers: vec![Some(Cholesky), Some(Gibbs)],
            block_sizes: vec![None],
        });
        let points: Vec<_> = g.iter().map(|s| (s.lambda, s.factors, s.solver.unwrap())).collect();
        assert_eq!(
            points,
            [
                (0.05, 8, Cholesky),
                (0.05, 8, Gibbs),
                (0.05, 16, Cholesky),
                (0.05, 16, Gibbs),
                (0.1, 8, Cholesky),
                (0.1, 16, Cholesky)
            ]
        );
    }

    #[test]
    fn grid_is_lambda_major_then_factors_then_alpha() {
        let g = expand(&Axes {
            lambdas: vec![0.1, 0.2],
            factors: vec![8, 16],
            alphas: vec![Some(1.0), Some(5.0)],
            unobserved_weights: vec![None],
            reg_exponents: vec![None],
            init_stds: vec![None],
            solvers: vec![None],
            block_sizes: vec![None],
        });
        assert_eq!(g.len(), 8);
        assert_eq!((g[0].lambda, g[0].factors, g[0].alpha), (0.1, 8, Some(1.0)));
        assert_eq!((g[1].lambda, g[1].factors, g[1].alpha), (0.1, 8, Some(5.0)));
        assert_eq!((g[2].lambda, g[2].factors), (0.1, 16));
        assert_eq!((g[7].lambda, g[7].factors, g[7].alpha), (0.2, 16, Some(5.0)));
        let g = expand(&Axes {
            lambdas: vec![0.1],
            factors: vec![8],
            alphas: vec![None],
            unobserved_weights: vec![Some(0.01), Some(0.1), Some(1.0)],
            reg_exponents: vec![None],
            init_stds: vec![None],
            solvers: vec![None],
            block_sizes: vec![None],
        });
        let a0: Vec<_> = g.iter().map(|s| s.unobserved_weight).collect();
        assert_eq!(a0, [Some(0.01), Some(0.1), Some(1.0)]);
        // ν, then σ, then the block size, innermost last.
        let g = expand(&Axes {
            lambdas: vec![0.1],
            factors: vec![8],
            alphas: vec![None],
            unobserved_weights: vec![Some(0.1)],
            reg_exponents: vec![Some(0.0), Some(1.0)],
            init_stds: vec![Some(0.1), Some(0.5)],
            solvers: vec![Some(crate::args::SolverArg::Ialspp)],
            block_sizes: vec![Some(2), Some(4)],
        });
        let inner: Vec<_> = g.iter().map(|s| (s.reg_exponent, s.init_std, s.block_size)).collect();
        assert_eq!(inner.len(), 8);
        assert_eq!(inner[0], (Some(0.0), Some(0.1), Some(2)));
        assert_eq!(inner[1], (Some(0.0), Some(0.1), Some(4)));
        assert_eq!(inner[2], (Some(0.0), Some(0.5), Some(2)));
        assert_eq!(inner[7], (Some(1.0), Some(0.5), Some(4)));
    }

    #[test]
    fn the_default_is_found_in_the_grid_or_appended_once() {
        let point = |lambda| Setting::new(lambda, 8);
        let (g, i) = with_default(vec![point(0.1), point(0.2)], point(0.2));
        assert_eq!((g.len(), i), (2, 1));
        let (g, i) = with_default(vec![point(0.1), point(0.2)], point(0.3));
        assert_eq!((g.len(), i, g[2]), (3, 2, point(0.3)));
    }

    #[test]
    fn mean_std_and_best_follow_the_metric_direction() {
        let s = [scores(0.1, &[1.0, 3.0]), scores(0.2, &[0.5, 0.5]), scores(0.3, &[f64::NAN, 0.1])];
        assert_eq!(s[0].mean(), 2.0);
        assert_eq!(s[0].std(), 1.0);
        assert_eq!(s[1].std(), 0.0);
        let rmse = Metric {
            name: "rmse".into(),
            higher_is_better: false,
        };
        let ndcg = Metric {
            name: "ndcg@10".into(),
            higher_is_better: true,
        };
        assert_eq!(best(&s, &rmse), Some(1));
        assert_eq!(best(&s, &ndcg), Some(0));
        assert_eq!(best(&s[2..], &rmse), None);
    }
}
