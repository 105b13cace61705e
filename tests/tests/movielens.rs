//! Accuracy on MovieLens 100K (u1.base / u1.test), the reference figure
//! being Surprise's SVD at 0.934 RMSE over the five folds. Skipped when the
//! shared data folder is absent.

use als_core::data::{load_ratings, Dataset, DuplicatePolicy, LoadOptions};
use als_core::train::{train, train_sgd, Layouts, Learner, LocalExecutor, TrainConfig};
use als_tests::shared_data;

fn u1() -> Option<Dataset> {
    let (base, test) = (shared_data("ml-100k/u1.base")?, shared_data("ml-100k/u1.test")?);
    let opts = LoadOptions::default();
    let train_raw = load_ratings(&base, &opts).unwrap();
    let test_raw = load_ratings(&test, &opts).unwrap();
    let all_train: Vec<usize> = (0..train_raw.len()).collect();
    let all_test: Vec<usize> = (0..test_raw.len()).collect();
    Some(Dataset::build((&train_raw, &all_train), Some((&test_raw, &all_test)), DuplicatePolicy::Last).unwrap())
}

#[test]
fn explicit_als_beats_surprise_svd_on_ml100k_u1() {
    let Some(ds) = u1() else {
        eprintln!("shared/data/ml-100k not found; skipping");
        return;
    };
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
fn sgd_matches_surprise_svd_on_ml100k_u1() {
    let Some(ds) = u1() else {
        eprintln!("shared/data/ml-100k not found; skipping");
        return;
    };
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
