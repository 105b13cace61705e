//! Accuracy on MovieLens 100K (u1.base / u1.test), the reference figure
//! being Surprise's SVD at 0.934 RMSE over the five folds. MovieLens may not
//! be redistributed, so these tests are `#[ignore]`d: `scripts/test.sh` runs
//! them when `shared/data` is beside the checkout and says so when it is
//! not (they show as skipped, never as passed). The same learners are
//! checked on generated data with a known truth in every run.

use als_core::data::{load_ratings, Dataset, DuplicatePolicy, LoadOptions};
use als_core::train::{train, train_gibbs, train_sgd, Layouts, Learner, LocalExecutor, TrainConfig};
use als_tests::shared_data;

fn u1() -> Dataset {
    u1_if_present().expect("shared/data/ml-100k/u1.base and u1.test (run through scripts/test.sh, which skips this without them)")
}

fn u1_if_present() -> Option<Dataset> {
    let (base, test) = (shared_data("ml-100k/u1.base")?, shared_data("ml-100k/u1.test")?);
    let opts = LoadOptions::default();
    let train_raw = load_ratings(&base, &opts).unwrap();
    let test_raw = load_ratings(&test, &opts).unwrap();
    let all_train: Vec<usize> = (0..train_raw.len()).collect();
    let all_test: Vec<usize> = (0..test_raw.len()).collect();
    Some(Dataset::build((&train_raw, &all_train), Some((&test_raw, &all_test)), DuplicatePolicy::Last).unwrap())
}

#[test]
#[ignore = "needs shared/data/ml-100k"]
fn explicit_als_beats_surprise_svd_on_ml100k_u1() {
    let ds = u1();
    let cfg = TrainConfig {
        factors: 64,
        iterations: 15,
        lambda: 0.1,
        eval_every: 0,
        ..Default::default()
    };
    let layouts = Layouts::for_dataset(&ds, cfg.blocks);
    let mut exec = LocalExecutor::new(&ds, layouts.clone());
    let res = train(&ds, &cfg, &mut exec, &layouts, None, &mut |_, _| Ok(())).unwrap();
    let rmse = res.final_metrics.rmse.unwrap();
    eprintln!("u1 test RMSE {rmse:.4} (raw {:.4})", res.final_metrics.rmse_raw.unwrap());
    assert!(rmse < 0.93, "test RMSE {rmse}");
}

/// Surprise's SVD with these settings (k=64, 30 epochs, lr 0.007, reg 0.05) reaches 0.936.
#[test]
#[ignore = "needs shared/data/ml-100k"]
fn sgd_matches_surprise_svd_on_ml100k_u1() {
    let ds = u1();
    let cfg = TrainConfig {
        factors: 64,
        iterations: 30,
        lambda: 0.05,
        learner: Learner::Sgd { learning_rate: 0.007 },
        eval_every: 0,
        ..Default::default()
    };
    let layouts = Layouts::for_dataset(&ds, cfg.blocks);
    let res = train_sgd(&ds, &cfg, &layouts, None, &mut |_, _| Ok(())).unwrap();
    let rmse = res.final_metrics.rmse.unwrap();
    eprintln!("u1 SGD test RMSE {rmse:.4} (raw {:.4})", res.final_metrics.rmse_raw.unwrap());
    assert!(rmse < 0.94, "test RMSE {rmse}");
}

/// Bayesian PMF by Gibbs sampling, at the defaults (k 64, noise precision 2,
/// burn-in 10) with 100 iterations: 0.907 on u1.test, where the best ALS
/// fit tune finds scores 0.92 and Surprise's SVD++ 0.919 over five folds.
#[test]
#[ignore = "needs shared/data/ml-100k"]
fn gibbs_beats_svdpp_on_ml100k_u1() {
    let ds = u1();
    let cfg = TrainConfig {
        factors: 64,
        iterations: 100,
        learner: Learner::Gibbs {
            burn_in: 10,
            noise_precision: 2.0,
        },
        eval_every: 0,
        objective_every: 0,
        ..Default::default()
    };
    let res = train_gibbs(&ds, &cfg, None, &mut |_, _| Ok(())).unwrap();
    let rmse = res.final_metrics.rmse.unwrap();
    eprintln!("u1 Gibbs test RMSE {rmse:.4} (raw {:.4})", res.final_metrics.rmse_raw.unwrap());
    assert!(rmse <= 0.915, "test RMSE {rmse}");
}

/// The same learners on generated ratings whose truth is known (rank 8,
/// noise σ 0.3): held-out RMSE close to the noise floor, for ALS and SGD.
#[test]
fn explicit_als_and_sgd_reach_the_noise_floor_on_generated_data() {
    use als_core::data::split::split_rows;
    use als_core::data::synth::{generate_raw, SynthSpec};
    use als_core::data::SplitSpec;
    let noise = 0.3;
    let raw = generate_raw(&SynthSpec {
        users: 1500,
        items: 800,
        ratings: 120_000,
        rank: 8,
        noise_std: noise,
        stars: false,
        // Near-uniform activity: every row has enough ratings for its factors.
        user_exp: 0.0,
        item_exp: 0.0,
        ..SynthSpec::default()
    })
    .unwrap();
    let (train_rows, test_rows) = split_rows(&raw, &SplitSpec::Ratio { test_frac: 0.2, seed: 42 }).unwrap();
    let ds = Dataset::build((&raw, &train_rows), Some((&raw, &test_rows)), DuplicatePolicy::Last).unwrap();
    let als = TrainConfig {
        factors: 8,
        iterations: 15,
        lambda: 0.05,
        eval_every: 0,
        clip_predictions: false,
        ..Default::default()
    };
    let layouts = Layouts::for_dataset(&ds, als.blocks);
    let mut exec = LocalExecutor::new(&ds, layouts.clone());
    let res = train(&ds, &als, &mut exec, &layouts, None, &mut |_, _| Ok(())).unwrap();
    let rmse = res.final_metrics.rmse.unwrap();
    eprintln!("generated data: ALS test RMSE {rmse:.4} (noise {noise})");
    // What predicting the training mean scores: the signal the factors must explain.
    let mean = ds.global_mean(&layouts.users);
    let baseline = (ds.test.ratings.iter().map(|&r| (r as f64 - mean).powi(2)).sum::<f64>() / ds.test.len() as f64).sqrt();
    eprintln!("generated data: mean-only RMSE {baseline:.4}");
    assert!(
        rmse < noise * 1.5 && rmse < baseline / 2.0,
        "ALS test RMSE {rmse} vs noise {noise}, baseline {baseline}"
    );
    let sgd = TrainConfig {
        learner: Learner::Sgd { learning_rate: 0.02 },
        iterations: 60,
        lambda: 0.02,
        ..als
    };
    let res = train_sgd(&ds, &sgd, &layouts, None, &mut |_, _| Ok(())).unwrap();
    let rmse = res.final_metrics.rmse.unwrap();
    eprintln!("generated data: SGD test RMSE {rmse:.4} (noise {noise})");
    assert!(
        rmse < noise * 1.5 && rmse < baseline / 2.0,
        "SGD test RMSE {rmse} vs noise {noise}, baseline {baseline}"
    );
}
