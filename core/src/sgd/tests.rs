//! SGD: the update rule, the grid, convergence and thread-count independence.

use super::update::update;
use super::*;
use crate::data::{DuplicatePolicy, RawRatings};
use crate::rng::SplitMix64;
use crate::train::{train_sgd, ImplicitConfig, Layouts, Learner, TrainError, TrainResult};

/// Rank-3 ratings around 3 with user/item biases and a little noise.
fn low_rank(users: usize, items: usize, density: f64, seed: u64) -> RawRatings {
    let rank = 3;
    let mut rng = SplitMix64::new(seed);
    let u: Vec<f64> = (0..users * rank).map(|_| rng.next_normal() * 0.6).collect();
    let v: Vec<f64> = (0..items * rank).map(|_| rng.next_normal() * 0.6).collect();
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
                raw.ratings
                    .push((3.0 + 0.3 * ((a % 5) as f64 - 2.0) + dot + 0.1 * rng.next_normal()) as f32);
            }
        }
    }
    raw
}

fn dataset(raw: &RawRatings) -> Dataset {
    let (test, train): (Vec<usize>, Vec<usize>) = (0..raw.len()).partition(|r| r % 5 == 0);
    Dataset::build((raw, &train), Some((raw, &test)), DuplicatePolicy::Last).unwrap()
}

fn sgd_config(epochs: usize, blocks: usize) -> TrainConfig {
    TrainConfig {
        factors: 6,
        iterations: epochs,
        lambda: 0.02,
        learner: Learner::Sgd { learning_rate: 0.02 },
        blocks,
        clip_predictions: false,
        ..Default::default()
    }
}

fn run(ds: &Dataset, cfg: &TrainConfig) -> Result<TrainResult, TrainError> {
    train_sgd(ds, cfg, &Layouts::for_dataset(ds, cfg.blocks), None, &mut |_, _| Ok(()))
}

#[test]
fn sgd_one_step_is_the_surprise_update() {
    let step = SgdStep {
        learning_rate: 0.1,
        lambda: 0.5,
        global_mean: 3.0,
        biased: true,
    };
    let (mut pu, mut qi) = ([1.0f32, 2.0], [0.5f32, -1.0]);
    let (mut bu, mut bi) = (0.2f32, -0.1f32);
    let e = update(&step, 4.0, &mut pu, &mut bu, &mut qi, &mut bi);
    // e = 4 − (3 + 0.2 − 0.1 + (0.5 − 2)) = 2.4
    assert!((e - 2.4).abs() < 1e-6, "{e}");
    let close = |a: f32, b: f32| (a - b).abs() < 1e-6;
    assert!(close(bu, 0.2 + 0.1 * (2.4 - 0.5 * 0.2)), "{bu}");
    assert!(close(bi, -0.1 + 0.1 * (2.4 + 0.5 * 0.1)), "{bi}");
    // Factors move from their values before the step.
    assert!(close(pu[0], 1.0 + 0.1 * (2.4 * 0.5 - 0.5 * 1.0)), "{pu:?}");
    assert!(close(pu[1], 2.0 + 0.1 * (-2.4 - 0.5 * 2.0)), "{pu:?}");
    assert!(close(qi[0], 0.5 + 0.1 * (2.4 * 1.0 - 0.5 * 0.5)), "{qi:?}");
    assert!(close(qi[1], -1.0 + 0.1 * (2.4 * 2.0 + 0.5 * 1.0)), "{qi:?}");

    let unbiased = SgdStep { biased: false, ..step };
    let (mut bu, mut bi) = (0.2f32, -0.1f32);
    let e = update(&unbiased, 1.0, &mut [1.0], &mut bu, &mut [1.0], &mut bi);
    assert!((e - 0.0).abs() < 1e-6 && bu == 0.2 && bi == -0.1);
}

#[test]
fn sgd_grid_holds_every_rating_once_in_its_cell() {
    let ds = dataset(&low_rank(50, 40, 0.3, 1));
    let layouts = Layouts::for_dataset(&ds, 4);
    let grid = RatingGrid::new(&ds.by_user, &layouts.users, &layouts.items);
    let mut seen = std::collections::HashSet::new();
    for ub in 0..4 {
        for ib in 0..4 {
            for c in grid.cell(ub, ib) {
                let (u, i) = (
                    layouts.users.starts[ub] + c.user as usize,
                    layouts.items.starts[ib] + c.item as usize,
                );
                assert!(layouts.users.range(ub).contains(&u) && layouts.items.range(ib).contains(&i));
                let (cols, vals) = ds.by_user.row(u);
                let at = cols.iter().position(|&x| x as usize == i).expect("a training rating");
                assert_eq!(vals[at], c.rating);
                assert!(seen.insert((u, i)), "({u}, {i}) twice");
            }
        }
    }
    assert_eq!(seen.len(), ds.n_train());
}

#[test]
fn sgd_training_error_falls_and_fits_a_low_rank_matrix() {
    let ds = dataset(&low_rank(120, 90, 0.4, 2));
    let mut train_rmse = Vec::new();
    let res = train_sgd(
        &ds,
        &TrainConfig {
            factors: 3,
            lambda: 0.01,
            learner: Learner::Sgd { learning_rate: 0.03 },
            ..sgd_config(40, 6)
        },
        &Layouts::for_dataset(&ds, 6),
        None,
        &mut |r, _| {
            train_rmse.push(r.train_rmse.unwrap());
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(res.reports.len(), 40);
    assert!(train_rmse.windows(5).all(|w| w[4] < w[0]), "{train_rmse:?}");
    let test = res.final_metrics.rmse_raw.unwrap();
    // The ratings' spread is about 1.1, their noise 0.1.
    assert!(*train_rmse.last().unwrap() < 0.2 && test < 0.3, "train {train_rmse:?} test {test}");
}

#[test]
fn sgd_model_is_independent_of_the_thread_count_and_seeded() {
    let ds = dataset(&low_rank(80, 60, 0.3, 3));
    let cfg = sgd_config(5, 5);
    let with_threads = |n: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap();
        pool.install(|| run(&ds, &cfg).unwrap())
    };
    let one = with_threads(1);
    let three = with_threads(3);
    assert_eq!(one.state, three.state);
    assert_eq!(one.final_metrics, three.final_metrics);
    let reseeded = run(&ds, &TrainConfig { seed: 7, ..cfg.clone() }).unwrap();
    assert_ne!(reseeded.state.users, one.state.users);
}

#[test]
fn sgd_start_is_small_and_resuming_gives_the_uninterrupted_model() {
    let ds = dataset(&low_rank(40, 30, 0.4, 4));
    let cfg = sgd_config(6, 3);
    let start = initial_state_sgd(&ds, &cfg);
    let n = start.users.flat().len() as f32;
    let std = (start.users.flat().iter().map(|x| x * x).sum::<f32>() / n).sqrt();
    assert!((std - INIT_STD).abs() < 0.02, "component std {std}");
    let whole = run(&ds, &cfg).unwrap();
    let half = run(
        &ds,
        &TrainConfig {
            iterations: 3,
            ..cfg.clone()
        },
    )
    .unwrap();
    let layouts = Layouts::for_dataset(&ds, cfg.blocks);
    let resumed = train_sgd(&ds, &cfg, &layouts, Some(half.state), &mut |_, _| Ok(())).unwrap();
    assert_eq!(resumed.state, whole.state);
    assert_eq!(resumed.reports.len(), 3);
}

#[test]
fn sgd_refuses_implicit_feedback_and_reports_divergence() {
    let ds = dataset(&low_rank(30, 20, 0.5, 5));
    let implicit = TrainConfig {
        implicit: Some(ImplicitConfig::hu(1.0, crate::solve::Confidence::Linear)),
        ..sgd_config(2, 2)
    };
    let err = run(&ds, &implicit).err().unwrap().to_string();
    assert!(err.contains("explicit ratings only"), "{err}");
    let wild = TrainConfig {
        learner: Learner::Sgd { learning_rate: 5.0 },
        ..sgd_config(20, 2)
    };
    let err = run(&ds, &wild).err().unwrap().to_string();
    assert!(err.contains("diverged") && err.contains("--learning-rate"), "{err}");
}
