//! Training-loop properties: monotone objective, recovery of a low-rank
//! matrix, independence from the thread count.

use super::*;
use crate::data::{DuplicatePolicy, RawRatings};
use crate::objective::{objective, Grams};
use crate::rng::SplitMix64;
use crate::solve::{Confidence, ImplicitLoss, RegScaling, SolverKind, TermsWanted};

/// The iALS loss of Rendle et al. with the given α₀ and ν.
fn ials(alpha: f32, unobserved_weight: f32, reg_exponent: f32, confidence_weights: bool) -> ImplicitConfig {
    ImplicitConfig {
        alpha,
        confidence: Confidence::Linear,
        loss: ImplicitLoss::Ials {
            unobserved_weight,
            reg_exponent,
            confidence_weights,
        },
    }
}

/// Rank-`rank` ratings (plus biases and Gaussian noise), a random `density` of pairs observed.
pub(crate) fn low_rank_raw(users: usize, items: usize, rank: usize, density: f64, noise: f64, seed: u64) -> RawRatings {
    let mut rng = SplitMix64::new(seed);
    let s = (1.0 / rank as f64).sqrt();
    let u: Vec<f64> = (0..users * rank).map(|_| rng.next_normal() * s).collect();
    let v: Vec<f64> = (0..items * rank).map(|_| rng.next_normal() * s).collect();
    let bu: Vec<f64> = (0..users).map(|_| rng.next_normal() * 0.3).collect();
    let bi: Vec<f64> = (0..items).map(|_| rng.next_normal() * 0.3).collect();
    let mut raw = RawRatings {
        source: "low-rank".into(),
        user_tokens: (0..users).map(|x| x.to_string()).collect(),
        item_tokens: (0..items).map(|x| x.to_string()).collect(),
        ..Default::default()
    };
    for a in 0..users {
        for b in 0..items {
            if rng.next_f64() < density {
                let dot: f64 = (0..rank).map(|f| u[a * rank + f] * v[b * rank + f]).sum();
                raw.users.push(a as u32);
                raw.items.push(b as u32);
                raw.ratings.push((3.0 + bu[a] + bi[b] + dot + noise * rng.next_normal()) as f32);
            }
        }
    }
    raw
}

/// Implicit counts: the absolute values of a low-rank matrix.
fn counts(mut raw: RawRatings) -> RawRatings {
    raw.ratings.iter_mut().for_each(|r| *r = r.abs().round());
    raw
}

/// Every 5th row is a test row.
fn dataset(raw: &RawRatings) -> Dataset {
    let (test, train): (Vec<usize>, Vec<usize>) = (0..raw.len()).partition(|r| r % 5 == 0);
    Dataset::build((raw, &train), Some((raw, &test)), DuplicatePolicy::Last).unwrap()
}

/// Records the objective after every half-iteration.
struct Watching<'a> {
    inner: LocalExecutor<'a>,
    ds: &'a Dataset,
    other: Option<Factors>,
    seen: Vec<f64>,
}

impl HalfStepExecutor for Watching<'_> {
    fn half_step(
        &mut self,
        side: Side,
        p: &SolveParams,
        fixed: &Factors,
        g: Option<&[f64]>,
        target: &mut Factors,
        terms: Option<TermsWanted>,
    ) -> Result<HalfStepOutput, TrainError> {
        let out = self.inner.half_step(side, p, fixed, g, target, terms)?;
        let (users, items) = match side {
            Side::Users => (&*target, fixed),
            Side::Items => (fixed, &*target),
        };
        let item_gram = crate::solve::block_gram(items.flat(), items.k());
        self.seen.push(
            objective(
                p,
                &self.ds.by_user,
                &self.ds.by_item,
                users,
                items,
                Some(Grams {
                    items: &item_gram,
                    users: None,
                }),
            )
            .objective,
        );
        self.other = None;
        Ok(out)
    }
}

fn assert_monotone(cfg: &TrainConfig, ds: &Dataset) {
    let layouts = Layouts::for_dataset(ds, cfg.blocks);
    let mut w = Watching {
        inner: LocalExecutor::new(ds, layouts.clone()),
        ds,
        other: None,
        seen: vec![],
    };
    train(ds, cfg, &mut w, &layouts, None, &mut |_, _| Ok(())).unwrap();
    assert_eq!(w.seen.len(), 2 * cfg.iterations);
    for pair in w.seen.windows(2) {
        assert!(pair[1] <= pair[0] * (1.0 + 1e-6), "objective rose: {:?}", w.seen);
    }
    assert!(w.seen.last().unwrap() < &w.seen[0]);
}

#[test]
fn explicit_objective_never_increases() {
    let ds = dataset(&low_rank_raw(60, 40, 3, 0.3, 0.3, 1));
    for scaling in [RegScaling::Count, RegScaling::None] {
        for biased in [true, false] {
            let cfg = TrainConfig {
                factors: 5,
                iterations: 8,
                lambda: 0.1,
                reg_scaling: scaling,
                biased,
                ..Default::default()
            };
            assert_monotone(&cfg, &ds);
        }
    }
}

#[test]
fn implicit_objective_never_increases_with_exact_solves() {
    let ds = dataset(&counts(low_rank_raw(50, 30, 3, 0.2, 0.0, 2)));
    for conf in [Confidence::Linear, Confidence::Log { epsilon: 1.0 }] {
        let cfg = TrainConfig {
            factors: 4,
            iterations: 6,
            lambda: 0.1,
            implicit: Some(ImplicitConfig::hu(2.0, conf)),
            ..Default::default()
        };
        assert_monotone(&cfg, &ds);
    }
}

#[test]
fn ials_objective_never_increases_with_exact_solves() {
    let ds = dataset(&counts(low_rank_raw(50, 30, 3, 0.2, 0.0, 2)));
    for (a0, nu, weighted) in [(0.1, 1.0, false), (0.5, 0.5, true), (1.0, 0.0, false)] {
        let cfg = TrainConfig {
            factors: 4,
            iterations: 6,
            lambda: 0.01,
            implicit: Some(ials(2.0, a0, nu, weighted)),
            init_std: Some(0.1),
            ..Default::default()
        };
        assert_monotone(&cfg, &ds);
    }
}

/// iALS++'s block steps are exact minimizations: one sweep per half never
/// raises the objective either, for block sizes that divide k and that do not.
#[test]
fn ialspp_objective_never_increases() {
    let ds = dataset(&counts(low_rank_raw(50, 30, 3, 0.2, 0.0, 2)));
    for (implicit, block) in [(ials(2.0, 0.3, 1.0, false), 2), (ImplicitConfig::hu(2.0, Confidence::Linear), 3)] {
        let cfg = TrainConfig {
            factors: 8,
            iterations: 6,
            lambda: 0.01,
            implicit: Some(implicit),
            solver: SolverKind::Ialspp { block, sweeps: 1 },
            init_std: Some(0.1),
            ..Default::default()
        };
        assert_monotone(&cfg, &ds);
    }
}

/// The iALS objective training reports, against its definition summed pair
/// by pair: Σ_observed w(1 − s)² + α₀·Σ_all s² + Σ λ(n + α₀N)^ν‖x‖².
#[test]
fn ials_objective_equals_its_sum_over_all_pairs() {
    let ds = dataset(&counts(low_rank_raw(30, 20, 3, 0.3, 0.0, 6)));
    let (a0, nu, lambda) = (0.3, 0.7, 0.05);
    let cfg = TrainConfig {
        factors: 5,
        iterations: 2,
        lambda,
        implicit: Some(ials(1.5, a0, nu, true)),
        ..Default::default()
    };
    let layouts = Layouts::for_dataset(&ds, cfg.blocks);
    let mut exec = LocalExecutor::new(&ds, layouts.clone());
    let res = train(&ds, &cfg, &mut exec, &layouts, None, &mut |_, _| Ok(())).unwrap();
    let (users, items) = (&res.state.users, &res.state.items);
    let (nu_rows, ni_rows) = (users.n_rows(), items.n_rows());
    let mut want = 0.0;
    for u in 0..nu_rows {
        let (cols, vals) = ds.by_user.row(u);
        for i in 0..ni_rows {
            let s: f64 = users.row(u).iter().zip(items.row(i)).map(|(&a, &b)| a as f64 * b as f64).sum();
            want += a0 as f64 * s * s;
            if let Some(pos) = cols.iter().position(|&c| c as usize == i) {
                let r = vals[pos] as f64;
                let w = 1.0 + 1.5 * r;
                let p = if r > 0.0 { 1.0 } else { 0.0 };
                want += w * (p - s).powi(2);
            }
        }
    }
    let sq = |row: &[f32]| row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>();
    let reg = |n: usize, other: usize| lambda as f64 * (n as f64 + a0 as f64 * other as f64).powf(nu as f64);
    want += (0..nu_rows)
        .map(|u| reg(ds.by_user.row_len(u), ni_rows) * sq(users.row(u)))
        .sum::<f64>();
    want += (0..ni_rows)
        .map(|i| reg(ds.by_item.row_len(i), nu_rows) * sq(items.row(i)))
        .sum::<f64>();
    let got = res.reports.last().unwrap().objective.unwrap();
    // The all-pairs term comes from YᵀY and XᵀX, whose entries are f32 sums
    // of 256 rows at a time (about 1e-7 relative each): a formula error
    // would be off by far more.
    assert!((got - want).abs() <= 1e-7 * want.abs(), "{got} vs {want}");
}

#[test]
fn recovers_low_rank_matrix_to_noise_level() {
    let noise = 0.1;
    let ds = dataset(&low_rank_raw(400, 300, 4, 0.5, noise, 3));
    let cfg = TrainConfig {
        factors: 4,
        iterations: 15,
        lambda: 0.002,
        clip_predictions: false,
        ..Default::default()
    };
    let layouts = Layouts::for_dataset(&ds, cfg.blocks);
    let mut exec = LocalExecutor::new(&ds, layouts.clone());
    let res = train(&ds, &cfg, &mut exec, &layouts, None, &mut |_, _| Ok(())).unwrap();
    let rmse = res.final_metrics.rmse.unwrap();
    assert!(rmse < noise * 1.1, "test RMSE {rmse} vs noise {noise}");
}

#[test]
fn factors_do_not_depend_on_thread_count() {
    let ds = dataset(&counts(low_rank_raw(80, 50, 3, 0.25, 0.2, 4)));
    for cfg in [
        TrainConfig {
            factors: 6,
            iterations: 3,
            ..Default::default()
        },
        TrainConfig {
            factors: 6,
            iterations: 3,
            implicit: Some(ImplicitConfig::hu(3.0, Confidence::Linear)),
            solver: SolverKind::Cg { steps: 3 },
            reg_scaling: RegScaling::None,
            ..Default::default()
        },
        TrainConfig {
            factors: 6,
            iterations: 3,
            lambda: 0.01,
            implicit: Some(ials(1.0, 0.2, 1.0, false)),
            solver: SolverKind::Cg { steps: 3 },
            init_std: Some(0.1),
            ..Default::default()
        },
    ] {
        let run = |threads| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let layouts = Layouts::for_dataset(&ds, cfg.blocks);
                let mut exec = LocalExecutor::new(&ds, layouts.clone());
                train(&ds, &cfg, &mut exec, &layouts, None, &mut |_, _| Ok(())).unwrap().state
            })
        };
        let (a, b) = (run(1), run(3));
        assert_eq!(a, b);
    }
}

#[test]
fn resuming_gives_the_uninterrupted_result() {
    let ds = dataset(&counts(low_rank_raw(40, 30, 2, 0.3, 0.2, 5)));
    let cfg = TrainConfig {
        factors: 3,
        iterations: 4,
        implicit: Some(ImplicitConfig::hu(1.0, Confidence::Linear)),
        ..Default::default()
    };
    let layouts = Layouts::for_dataset(&ds, cfg.blocks);
    let mut exec = LocalExecutor::new(&ds, layouts.clone());
    let mut mid = None;
    let full = train(&ds, &cfg, &mut exec, &layouts, None, &mut |r, s| {
        if r.iteration == 2 {
            mid = Some(s.get()?.clone());
        }
        Ok(())
    })
    .unwrap();
    let resumed = train(&ds, &cfg, &mut exec, &layouts, mid, &mut |_, _| Ok(())).unwrap();
    assert_eq!(full.state, resumed.state);
}

#[cfg(feature = "lapack")]
#[test]
fn lapack_and_faer_backends_train_the_same_factors() {
    let ds = dataset(&low_rank_raw(60, 40, 3, 0.3, 0.2, 6));
    let run = |backend| {
        let cfg = TrainConfig {
            factors: 5,
            iterations: 5,
            backend,
            ..Default::default()
        };
        let layouts = Layouts::for_dataset(&ds, cfg.blocks);
        let mut exec = LocalExecutor::new(&ds, layouts.clone());
        train(&ds, &cfg, &mut exec, &layouts, None, &mut |_, _| Ok(())).unwrap().state
    };
    use crate::linalg::Backend;
    let (a, b) = (run(Backend::Faer), run(Backend::Lapack));
    let diff = a
        .users
        .flat()
        .iter()
        .zip(b.users.flat())
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(diff < 1e-4, "max difference {diff}");
}

/// `--blocks 100000` on a few hundred rows: as many blocks as the smaller side has rows.
#[test]
fn no_more_blocks_than_rows() {
    let raw = crate::data::RawRatings {
        source: "t".into(),
        user_tokens: (0..7).map(|u| u.to_string()).collect(),
        item_tokens: (0..5).map(|i| i.to_string()).collect(),
        users: (0..35).map(|r| r % 7).collect(),
        items: (0..35).map(|r| r % 5).collect(),
        ratings: vec![3.0; 35],
        ..Default::default()
    };
    let all: Vec<usize> = (0..35).collect();
    let ds = Dataset::build((&raw, &all), None, crate::data::DuplicatePolicy::Last).unwrap();
    let l = Layouts::for_dataset(&ds, 100_000);
    assert_eq!((l.users.n_blocks(), l.items.n_blocks()), (5, 5));
    assert_eq!(Layouts::for_dataset(&ds, 3).users.n_blocks(), 3);
}

/// The implicit objective through ⟨YᵀY, XᵀX⟩ (what training reports) equals
/// the per-user sum of xᵤᵀ(YᵀY)xᵤ it replaces.
#[test]
fn implicit_objective_with_the_user_gramian_equals_the_per_user_sum() {
    let ds = dataset(&counts(low_rank_raw(50, 30, 3, 0.2, 0.0, 4)));
    let cfg = TrainConfig {
        factors: 6,
        iterations: 2,
        implicit: Some(ImplicitConfig::hu(2.0, Confidence::Linear)),
        ..Default::default()
    };
    let layouts = Layouts::for_dataset(&ds, cfg.blocks);
    let mut exec = LocalExecutor::new(&ds, layouts.clone());
    let res = train(&ds, &cfg, &mut exec, &layouts, None, &mut |_, _| Ok(())).unwrap();
    let (users, items) = (&res.state.users, &res.state.items);
    let item_gram = gram_by_blocks(items, &layouts.items);
    let user_gram = gram_by_blocks(users, &layouts.users);
    let of = |g: Grams| objective(&res.params, &ds.by_user, &ds.by_item, users, items, Some(g)).objective;
    let per_user = of(Grams {
        items: &item_gram,
        users: None,
    });
    let inner = of(Grams {
        items: &item_gram,
        users: Some(&user_gram),
    });
    // The user Gramian's f32 chunk sums (see ials_objective_equals_its_sum_over_all_pairs).
    assert!((per_user - inner).abs() <= 1e-7 * per_user.abs(), "{per_user} vs {inner}");
    // Training sums the solved rows' terms block by block: another order.
    let reported = res.reports.last().unwrap().objective.unwrap();
    assert!((reported - inner).abs() <= 1e-9 * inner.abs(), "{reported} vs {inner}");
}

#[test]
fn the_objective_cadence_changes_what_is_reported_never_the_factors() {
    let ds = dataset(&counts(low_rank_raw(60, 40, 3, 0.3, 0.2, 9)));
    let base = TrainConfig {
        factors: 5,
        iterations: 4,
        implicit: Some(ImplicitConfig::hu(2.0, Confidence::Linear)),
        solver: SolverKind::Cg { steps: 3 },
        ..Default::default()
    };
    let run = |every| {
        let cfg = TrainConfig {
            objective_every: every,
            ..base.clone()
        };
        let layouts = Layouts::for_dataset(&ds, cfg.blocks);
        let mut exec = LocalExecutor::new(&ds, layouts.clone());
        train(&ds, &cfg, &mut exec, &layouts, None, &mut |_, _| Ok(())).unwrap()
    };
    let (every, never, second) = (run(1), run(0), run(2));
    assert_eq!(every.state, never.state);
    assert_eq!(every.state, second.state);
    let reported = |r: &TrainResult| r.reports.iter().map(|x| x.objective).collect::<Vec<_>>();
    assert!(reported(&every).iter().all(Option::is_some));
    assert!(reported(&never).iter().all(Option::is_none));
    assert!(never.reports.iter().all(|x| x.train_rmse.is_none()));
    let (e, s) = (reported(&every), reported(&second));
    assert_eq!((s[0], s[1], s[2], s[3]), (None, e[1], None, e[3]));
    // Saved settings of a default run read as before the field existed.
    let json = serde_json::to_value(&base).unwrap();
    assert!(json.get("objective_every").is_none());
    let back: TrainConfig = serde_json::from_value(json).unwrap();
    assert_eq!(back.objective_every, DEFAULT_OBJECTIVE_EVERY);
    let never_json = serde_json::to_value(TrainConfig {
        objective_every: 0,
        ..base.clone()
    })
    .unwrap();
    assert_eq!(never_json["objective_every"], 0);
}

#[test]
fn a_failed_checkpoint_stops_training_with_its_cause() {
    use crate::checkpoint::{write_checkpoint, RunSignature};
    let ds = dataset(&low_rank_raw(30, 20, 2, 0.4, 0.1, 5));
    let cfg = TrainConfig {
        factors: 3,
        iterations: 3,
        ..Default::default()
    };
    let tmp = tempfile::tempdir().unwrap();
    // A file where the checkpoint directory should be: every write fails.
    let blocker = tmp.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").unwrap();
    let sig = RunSignature::new(&ds.fingerprint, &cfg);
    let layouts = Layouts::for_dataset(&ds, cfg.blocks);
    let mut exec = LocalExecutor::new(&ds, layouts.clone());
    let mut iterations = 0;
    let err = match train(&ds, &cfg, &mut exec, &layouts, None, &mut |_, state| {
        iterations += 1;
        write_checkpoint(&blocker.join("ckpt"), &sig, state.get()?)?;
        Ok(())
    }) {
        Err(e) => e,
        Ok(_) => panic!("training went on past a failed checkpoint"),
    };
    assert_eq!(iterations, 1, "training stops at the first failed checkpoint");
    assert!(matches!(err, TrainError::Checkpoint(_)), "{err:?}");
    // The cause is kept as a source, not flattened into a string.
    let cause = std::error::Error::source(&err).expect("the checkpoint error is the source");
    let mut chain = format!("{err}: {cause}");
    let mut next = cause.source();
    while let Some(c) = next {
        chain.push_str(&format!(": {c}"));
        next = c.source();
    }
    assert!(chain.starts_with("writing a checkpoint failed: "), "{chain}");
    assert!(chain.contains("not-a-dir"), "{chain}");
}

/// `--split users`: each held-out user is folded in by an exact row solve
/// against the trained items and ranked over the items they were not folded
/// in from; the metrics equal that procedure written out user by user.
#[test]
fn held_out_users_are_folded_in_and_ranked_as_written_out() {
    use crate::data::split::{split_users, UserHoldout};
    use crate::metrics::ranking_metrics_from_lists;
    use crate::solve::{solve_one_row, FixedSide};

    let implicit_raw = counts(low_rank_raw(120, 60, 3, 0.3, 0.0, 7));
    let explicit_raw = low_rank_raw(120, 60, 3, 0.3, 0.1, 8);
    let hu = ImplicitConfig {
        alpha: 2.0,
        confidence: Confidence::Linear,
        loss: ImplicitLoss::Hu,
    };
    let cases = [
        (&implicit_raw, Some(hu), SolverKind::Cholesky),
        (&implicit_raw, Some(hu), SolverKind::Cg { steps: 3 }),
        (
            &implicit_raw,
            Some(ials(1.0, 0.3, 1.0, false)),
            SolverKind::Ialspp { block: 2, sweeps: 1 },
        ),
        (&explicit_raw, None, SolverKind::Cholesky),
    ];
    for (raw, implicit, solver) in cases {
        let split = split_users(raw, UserHoldout::Ratio { frac: 0.25, seed: 5 }).unwrap();
        let ds = Dataset::build_user_split(raw, &split, DuplicatePolicy::Last).unwrap();
        let h = ds.held_out.as_ref().unwrap();
        assert_eq!(h.n_users(), 30);
        assert!(ds.test.is_empty() && !h.test.is_empty());
        let cfg = TrainConfig {
            factors: 4,
            iterations: 3,
            lambda: 0.1,
            implicit,
            solver,
            ..Default::default()
        };
        let layouts = Layouts::for_dataset(&ds, cfg.blocks);
        let mut exec = LocalExecutor::new(&ds, layouts.clone());
        let res = train(&ds, &cfg, &mut exec, &layouts, None, &mut |_, _| Ok(())).unwrap();
        let items = &res.state.items;
        let p = res.params;
        let exact = SolveParams {
            solver: SolverKind::Cholesky,
            ..p
        };
        let gram = implicit.is_some().then(|| gram_by_blocks(items, &layouts.items));
        let fixed = || FixedSide {
            factors: items.flat(),
            bias: &items.bias,
            total_rows: items.n_rows(),
        };
        let folded: Vec<(Vec<f32>, f32)> = (0..h.n_users())
            .map(|u| {
                let (cols, vals) = h.fold_in.row(u);
                solve_one_row(&exact, cols, vals, fixed(), gram.as_deref(), None).unwrap()
            })
            .collect();
        let dot = |x: &[f32], i: usize| -> f64 { x.iter().zip(items.row(i)).map(|(&a, &b)| a as f64 * b as f64).sum() };
        if implicit.is_some() {
            let (eval_users, relevant) = eval::relevant_by_user(&h.test, h.n_users(), cfg.min_pos);
            let lists: Vec<Vec<u32>> = eval_users
                .iter()
                .map(|&u| {
                    let x = &folded[u as usize].0;
                    let seen = h.fold_in.row(u as usize).0;
                    let mut scored: Vec<(f64, u32)> = (0..items.n_rows() as u32)
                        .filter(|i| !seen.contains(i))
                        .map(|i| (dot(x, i as usize), i))
                        .collect();
                    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                    scored
                        .into_iter()
                        .take(crate::metrics::ranking_list_len(cfg.ranking_k))
                        .map(|(_, i)| i)
                        .collect()
                })
                .collect();
            let want = ranking_metrics_from_lists(&lists, &relevant, cfg.ranking_k);
            let got = res.final_metrics.ranking.clone().unwrap();
            assert_eq!(got.n_eval_users, want.n_eval_users, "{solver:?}");
            for (name, g, w) in [
                ("ndcg", got.ndcg, want.ndcg),
                ("ndcg@100", got.ndcg_wide, want.ndcg_wide),
                ("recall_capped", got.recall_capped, want.recall_capped),
                ("precision", got.precision, want.precision),
            ] {
                assert!((g - w).abs() < 1e-12, "{solver:?} {name}: {g} vs {w}");
            }
            assert!(got.ndcg > 0.0);
        } else {
            let crate::solve::Feedback::Explicit { global_mean, .. } = p.feedback else {
                unreachable!()
            };
            let se: f64 = (0..h.test.len())
                .map(|j| {
                    let (u, i) = (h.test.users[j] as usize, h.test.items[j] as usize);
                    let (x, b) = &folded[u];
                    let pred = global_mean as f64 + *b as f64 + items.bias[i] as f64 + dot(x, i);
                    (pred - h.test.ratings[j] as f64).powi(2)
                })
                .sum();
            let want = (se / h.test.len() as f64).sqrt();
            let got = res.final_metrics.rmse_raw.unwrap();
            assert!((got - want).abs() < 1e-5, "{got} vs {want}");
            assert!(got < 0.5, "held-out users are predicted from their fold-in rows: RMSE {got}");
        }
    }
}

/// The objective and train RMSE training sums from the solved rows' terms
/// (users' regularization, items' data term) equal the separate pass over
/// every rating that they replace, biased explicit and implicit alike.
#[test]
fn the_objective_from_the_halves_equals_the_full_pass() {
    let explicit = dataset(&low_rank_raw(70, 50, 3, 0.4, 0.2, 11));
    let implicit = dataset(&counts(low_rank_raw(70, 50, 3, 0.4, 0.0, 12)));
    let configs = [
        (
            &explicit,
            TrainConfig {
                factors: 4,
                iterations: 3,
                lambda: 0.1,
                ..Default::default()
            },
        ),
        (
            &implicit,
            TrainConfig {
                factors: 4,
                iterations: 3,
                implicit: Some(ImplicitConfig::hu(3.0, Confidence::Linear)),
                solver: SolverKind::Cg { steps: 3 },
                ..Default::default()
            },
        ),
        (
            &implicit,
            TrainConfig {
                factors: 4,
                iterations: 3,
                implicit: Some(ials(1.0, 0.2, 0.5, false)),
                ..Default::default()
            },
        ),
    ];
    for (ds, cfg) in configs {
        let layouts = Layouts::for_dataset(ds, 3);
        let mut exec = LocalExecutor::new(ds, layouts.clone());
        let res = train(ds, &cfg, &mut exec, &layouts, None, &mut |_, _| Ok(())).unwrap();
        let (users, items) = (&res.state.users, &res.state.items);
        let grams = cfg
            .is_implicit()
            .then(|| (gram_by_blocks(items, &layouts.items), gram_by_blocks(users, &layouts.users)));
        let want = objective(
            &res.params,
            &ds.by_user,
            &ds.by_item,
            users,
            items,
            grams.as_ref().map(|(i, u)| Grams { items: i, users: Some(u) }),
        );
        let last = res.reports.last().unwrap();
        let (got, rmse) = (last.objective.unwrap(), last.train_rmse.unwrap());
        assert!(
            (got - want.objective).abs() <= 1e-9 * want.objective.abs(),
            "{got} vs {}",
            want.objective
        );
        assert!(
            (rmse - want.train_rmse).abs() <= 1e-9 * want.train_rmse,
            "{rmse} vs {}",
            want.train_rmse
        );
        // Any number of threads: the same bits.
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let again = one.install(|| {
            let mut exec = LocalExecutor::new(ds, layouts.clone());
            train(ds, &cfg, &mut exec, &layouts, None, &mut |_, _| Ok(())).unwrap()
        });
        let objectives = |r: &TrainResult| r.reports.iter().map(|x| (x.objective, x.train_rmse)).collect::<Vec<_>>();
        assert_eq!(objectives(&again), objectives(&res));
    }
}

/// An executor that holds the test rows and evaluates them itself, as a
/// cluster's workers do.
struct Evaluating<'a> {
    inner: LocalExecutor<'a>,
    ds: &'a Dataset,
    users: &'a BlockLayout,
}

impl HalfStepExecutor for Evaluating<'_> {
    fn half_step(
        &mut self,
        side: Side,
        params: &SolveParams,
        fixed: &Factors,
        fixed_gram: Option<&[f64]>,
        target: &mut Factors,
        terms: Option<TermsWanted>,
    ) -> Result<HalfStepOutput, TrainError> {
        self.inner.half_step(side, params, fixed, fixed_gram, target, terms)
    }

    fn evaluate(
        &mut self,
        cfg: &TrainConfig,
        params: &SolveParams,
        users: &Factors,
        items: &Factors,
    ) -> Option<Result<TestMetrics, TrainError>> {
        Some(eval::evaluate(self.ds, cfg, params, users, items, None, self.users))
    }
}

/// The loop trains on the data's shape alone where the executor holds the
/// ratings: the same factors, objectives and metrics as on the dataset.
#[test]
fn training_on_the_shape_alone_gives_the_datasets_run() {
    let ds = dataset(&low_rank_raw(50, 35, 2, 0.3, 0.2, 8));
    let cfg = TrainConfig {
        factors: 3,
        iterations: 3,
        eval_every: 1,
        ..Default::default()
    };
    let layouts = Layouts::for_dataset(&ds, 3);
    let want = train(
        &ds,
        &cfg,
        &mut LocalExecutor::new(&ds, layouts.clone()),
        &layouts,
        None,
        &mut |_, _| Ok(()),
    )
    .unwrap();
    let elsewhere = TrainData {
        shape: DataShape::of(&ds, &layouts.users),
        ratings: None,
    };
    let mut exec = Evaluating {
        inner: LocalExecutor::new(&ds, layouts.clone()),
        ds: &ds,
        users: &layouts.users,
    };
    let start = initial_state(&ds, &cfg);
    let got = train_on(&elsewhere, &cfg, &mut exec, &layouts, Some(start.clone()), &mut |_, _| Ok(())).unwrap();
    assert_eq!(got.state, want.state);
    assert_eq!(
        got.reports
            .iter()
            .map(|r| (r.objective, r.train_rmse, r.test.rmse))
            .collect::<Vec<_>>(),
        want.reports
            .iter()
            .map(|r| (r.objective, r.train_rmse, r.test.rmse))
            .collect::<Vec<_>>()
    );
    assert!(want.final_metrics.rmse.is_some());
    assert_eq!(got.final_metrics, want.final_metrics);

    // Without the ratings, a fresh run needs its start, and the test rows an executor that scores them.
    let no_start = train_on(&elsewhere, &cfg, &mut exec, &layouts, None, &mut |_, _| Ok(()));
    assert!(matches!(no_start, Err(TrainError::Internal(m)) if m.contains("starting state")));
    let mut plain = LocalExecutor::new(&ds, layouts.clone());
    let unscored = train_on(&elsewhere, &cfg, &mut plain, &layouts, Some(start), &mut |_, _| Ok(()));
    assert!(matches!(unscored, Err(TrainError::Internal(m)) if m.contains("did not evaluate")));
}
