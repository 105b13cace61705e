//! Tuning: fold splits, the grid's order and scores, the best setting, the JSON.

use std::path::{Path, PathBuf};

use als_core::data::synth::{write_csv, SynthSpec};
use als_core::data::RawRatings;
use als_core::train::{DEFAULT_FACTORS, DEFAULT_LAMBDA};
use clap::Parser;
use serde_json::Value;

use super::EarlyStop;
use super::*;
use crate::cli::{Cli, Command};

fn synth_file(dir: &Path) -> PathBuf {
    let p = dir.join("r.csv");
    let spec = SynthSpec {
        users: 150,
        items: 100,
        ratings: 3000,
        rank: 3,
        noise_std: 0.3,
        ..SynthSpec::default()
    };
    write_csv(&spec, &p, |_| {}).unwrap();
    p
}

fn tune_args(args: &[&str]) -> TuneArgs {
    let cli = Cli::try_parse_from(["coordinator", "tune"].into_iter().chain(args.iter().copied())).unwrap_or_else(|e| panic!("{e}"));
    match cli.command {
        Some(Command::Tune(a)) => *a,
        other => panic!("{other:?}"),
    }
}

#[test]
fn tune_folds_partition_the_ratings() {
    let n = 1003;
    let raw = RawRatings {
        source: "t".into(),
        user_tokens: vec!["u".into()],
        item_tokens: vec!["i".into()],
        users: vec![0; n],
        items: vec![0; n],
        ratings: vec![1.0; n],
        ..Default::default()
    };
    let folds = 5;
    let mut times_tested = vec![0; n];
    for fold in 0..folds {
        let (train, test) = fold_rows(&raw, folds, fold, 42).unwrap();
        assert_eq!(train.len() + test.len(), n);
        assert!(test.len().abs_diff(n / folds) <= 1, "{}", test.len());
        let mut all: Vec<usize> = train.iter().chain(&test).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..n).collect::<Vec<_>>(), "train and test split the rows");
        for r in test {
            times_tested[r] += 1;
        }
    }
    assert!(times_tested.iter().all(|&t| t == 1), "every rating is tested exactly once");
}

#[test]
fn tune_scores_the_grid_in_order_and_marks_the_best() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth_file(dir.path());
    let json = dir.path().join("out/tune.json");
    // λ = 50 (count-scaled) flattens the factors: it must lose.
    let args = tune_args(&[
        "--data",
        data.to_str().unwrap(),
        "--lambda",
        "50,0.05",
        "--factors",
        "2,4",
        "--folds",
        "3",
        "--iterations",
        "3",
        "--quiet",
        "--out-json",
        json.to_str().unwrap(),
        "--out",
        dir.path().join("best").to_str().unwrap(),
    ]);
    let mut out = Vec::new();
    let r = run(&args, &mut out).unwrap();
    let got: Vec<(f32, usize)> = r.scores.iter().map(|s| (s.setting.lambda, s.setting.factors)).collect();
    // The grid in order, then train's default setting, which it lacks.
    let default = (DEFAULT_LAMBDA, DEFAULT_FACTORS);
    assert_eq!(got, [(50.0, 2), (50.0, 4), (0.05, 2), (0.05, 4), default]);
    assert_eq!(r.default, 4);
    assert!(r
        .scores
        .iter()
        .all(|s| s.per_fold.len() == 3 && s.per_fold.iter().all(|x| x.is_finite())));
    let means: Vec<f64> = r.scores.iter().map(SettingScores::mean).collect();
    let want = (0..5).min_by(|&a, &b| means[a].total_cmp(&means[b])).unwrap();
    assert_eq!(r.best, Some(want));
    assert_ne!(r.scores[want].setting.lambda, 50.0, "{means:?}");
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.matches("<- best").count(), 1, "{text}");
    assert_eq!(text.matches("(the default)").count(), 1, "{text}");
    assert!(text.contains("rmse (lower is better)"), "{text}");
    if want != 4 {
        let line = text.lines().find(|l| l.starts_with("won by ")).expect("a won-by line");
        let gain = means[4] - means[want];
        assert!(line.contains(&format!("won by {gain:.4}")), "{line} vs {gain}");
        assert!(line.contains(&format!("against {:.4}", means[4])), "{line}");
    }

    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["metric"], "rmse");
    assert_eq!(v["higher_is_better"], false);
    assert_eq!(v["folds"], 3);
    let settings = v["settings"].as_array().unwrap();
    assert_eq!(settings.len(), 5);
    assert_eq!(v["default"]["index"], 4);
    let over = v["best_over_default"].as_f64().unwrap();
    assert!((over - (means[want] - means[4])).abs() < 1e-12, "{over}");
    assert_eq!(settings[1]["factors"], 4);
    assert!(settings[1]["alpha"].is_null());
    assert_eq!(settings[2]["per_fold"].as_array().unwrap().len(), 3);
    assert_eq!(v["best"]["index"], want);
    assert_eq!(v["best"]["mean"], settings[want]["mean"]);
    assert_eq!(v["executor"], "in-process");
    assert_eq!(v["config"]["iterations"], 3);

    // --out: the best setting, trained on every rating.
    let m = als_core::model::load_model(&dir.path().join("best")).unwrap();
    assert_eq!(
        m.hyperparameters()["lambda"].as_f64().unwrap() as f32,
        r.scores[want].setting.lambda
    );
    assert_eq!(m.hyperparameters()["factors"], r.scores[want].setting.factors);
    assert_eq!(m.hyperparameters()["trained_on"]["ratings"], "all");
    assert_eq!(m.seen().indices.len(), r.n_ratings);
}

#[test]
fn tune_ranks_implicit_settings_by_ndcg_over_the_alpha_grid() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth_file(dir.path());
    let args = tune_args(&[
        "--data",
        data.to_str().unwrap(),
        "--implicit",
        "--alpha",
        "1,10",
        "--lambda",
        "0.1",
        "--factors",
        "3",
        "--folds",
        "2",
        "--iterations",
        "2",
        "--quiet",
    ]);
    let r = run(&args, &mut Vec::new()).unwrap();
    assert_eq!(r.metric.name, "ndcg@10");
    assert!(r.metric.higher_is_better);
    let alphas: Vec<Option<f32>> = r.scores.iter().map(|s| s.setting.alpha).collect();
    assert_eq!(alphas, [Some(1.0), Some(10.0), Some(als_core::train::DEFAULT_ALPHA)]);
    assert_eq!(r.scores[2].setting.factors, DEFAULT_FACTORS);
    assert!(r.scores.iter().all(|s| s.per_fold.iter().all(|x| (0.0..=1.0).contains(x))));
    assert!(r.best.is_some());
}

#[test]
fn tune_refuses_bad_settings_before_loading() {
    let err = run(
        &tune_args(&["--data", "/nonexistent.csv", "--solver", "sgd", "--local", "2"]),
        &mut Vec::new(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("--solver sgd trains in this process"), "{err}");
    let err = run(
        &tune_args(&["--data", "/nonexistent.csv", "--implicit", "--solver", "sgd"]),
        &mut Vec::new(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("explicit ratings only"), "{err}");
    assert!(Cli::try_parse_from(["coordinator", "tune", "--data", "x", "--folds", "1"]).is_err());
    assert!(
        Cli::try_parse_from(["coordinator", "tune", "--data", "x", "--alpha", "1"]).is_err(),
        "--alpha needs --implicit"
    );
}

/// Grid axes take ranges next to values, and the grid holds each value once.
#[test]
fn grid_axes_take_log_and_linear_ranges() {
    let a = tune_args(&[
        "--data",
        "x",
        "--implicit",
        "--lambda",
        "1e-3:1e-1:log:3,0.5,0.5",
        "--factors",
        "8:32:log:3",
        "--alpha",
        "0:2:lin:3",
    ]);
    let l = a.lambdas();
    assert_eq!(l.len(), 4, "0.5 is tried once: {l:?}");
    for (got, want) in l.iter().zip([1e-3f32, 1e-2, 1e-1, 0.5]) {
        assert!((got / want - 1.0).abs() < 1e-5, "{l:?}");
    }
    assert_eq!(a.factors(), vec![8, 16, 32]);
    assert_eq!(a.alphas(), vec![Some(0.0), Some(1.0), Some(2.0)]);
    let defaults = tune_args(&["--data", "x"]);
    assert_eq!(
        (defaults.lambdas(), defaults.factors(), defaults.alphas()),
        (vec![DEFAULT_LAMBDA], vec![DEFAULT_FACTORS], vec![None])
    );
    let err = Cli::try_parse_from(["coordinator", "tune", "--data", "x", "--lambda", "0:1:log:4"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("low end > 0"), "{err}");
}

/// ν, the start's σ and iALS++'s block size are grid axes like the others:
/// each point trains with its own values, the table shows their columns, and
/// a value where its solver or loss does not read it is refused before loading.
#[test]
fn tune_grids_the_reg_exponent_init_std_and_block_size() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth_file(dir.path());
    let json = dir.path().join("tune.json");
    let data = data.to_str().unwrap();
    let flags = [
        "--data",
        data,
        "--implicit",
        "--loss",
        "ials",
        "--solver",
        "ialspp",
        "--lambda",
        "0.01",
        "--factors",
        "4",
        "--reg-exponent",
        "0,1",
        "--init-std",
        "0.1",
        "--block-size",
        "2,4",
        "--folds",
        "2",
        "--iterations",
        "2",
        "--quiet",
        "--out-json",
    ];
    let args = tune_args(&[&flags[..], &[json.to_str().unwrap()]].concat());
    let settings = expand(&args.axes());
    let points: Vec<_> = settings.iter().map(|s| (s.reg_exponent, s.init_std, s.block_size)).collect();
    assert_eq!(
        points,
        [
            (Some(0.0), Some(0.1), Some(2)),
            (Some(0.0), Some(0.1), Some(4)),
            (Some(1.0), Some(0.1), Some(2)),
            (Some(1.0), Some(0.1), Some(4)),
        ]
    );
    let cfg = args.train_config(settings[1]).unwrap();
    assert_eq!(cfg.solver, als_core::solve::SolverKind::Ialspp { block: 4, sweeps: 1 });
    assert_eq!(cfg.init_std, Some(0.1));
    match cfg.implicit.unwrap().loss {
        als_core::solve::ImplicitLoss::Ials { reg_exponent, .. } => assert_eq!(reg_exponent, 0.0),
        other => panic!("{other:?}"),
    }
    let mut out = Vec::new();
    let r = run(&args, &mut out).unwrap();
    // The default: train's λ, factors, α₀, ν and block, from the unit-length start.
    assert_eq!(r.scores.len(), 5);
    let d = r.scores[4].setting;
    assert_eq!(
        (d.reg_exponent, d.init_std, d.block_size),
        (Some(1.0), None, Some(als_core::train::DEFAULT_BLOCK_SIZE))
    );
    let text = String::from_utf8(out).unwrap();
    let head = text.lines().nth(1).unwrap();
    for col in ["alpha0", "nu", "init_std", "block"] {
        assert!(head.contains(col), "{head}");
    }
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["settings"][1]["block_size"], 4);
    assert_eq!(v["settings"][2]["reg_exponent"], 1.0);
    assert!(v["settings"][4]["init_std"].is_null());

    let explicit = tune_args(&["--data", "missing.csv", "--block-size", "8"]);
    let err = run(&explicit, &mut Vec::new()).unwrap_err().to_string();
    assert!(err.contains("--block-size applies to --solver ialspp only"), "{err}");
}

/// --patience: a run stops once its score has not improved for N
/// evaluations and scores its best one; NaN never counts as better.
#[test]
fn early_stop_keeps_the_best_iteration_and_stops_after_patience() {
    let mut up = EarlyStop::new(2, true);
    assert!(up.observe(1, 0.1).is_ok() && up.observe(2, 0.3).is_ok() && up.observe(3, 0.2).is_ok());
    assert!(up.observe(4, f64::NAN).is_err());
    assert!(up.stopped);
    assert_eq!(up.best, Some((0.3, 2)));
    let mut down = EarlyStop::new(1, false);
    assert!(down.observe(1, 0.9).is_ok() && down.observe(2, 0.8).is_ok());
    assert!(down.observe(3, 0.85).is_err());
    assert_eq!(down.best, Some((0.8, 2)));
}

#[test]
fn tune_with_patience_scores_each_fold_at_its_best_iteration() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth_file(dir.path());
    let best_dir = dir.path().join("best");
    let args = tune_args(&[
        "--data",
        data.to_str().unwrap(),
        "--lambda",
        "0.05,5",
        "--factors",
        "3",
        "--folds",
        "2",
        "--iterations",
        "12",
        "--patience",
        "2",
        "--quiet",
        "--out",
        best_dir.to_str().unwrap(),
    ]);
    let mut out = Vec::new();
    let r = run(&args, &mut out).unwrap();
    for s in &r.scores {
        assert_eq!(s.best_iterations.len(), 2, "{s:?}");
        assert!(s.best_iterations.iter().all(|&i| (1..=12).contains(&i)), "{s:?}");
    }
    let text = String::from_utf8(out).unwrap();
    assert!(text.lines().nth(1).unwrap().contains("iters"), "{text}");
    // The saved model trains the winner's mean best iteration count.
    let winner = &r.scores[r.best.unwrap()];
    let m = als_core::model::load_model(&best_dir).unwrap();
    assert_eq!(m.hyperparameters()["iterations"], winner.mean_best_iteration().unwrap());
}

#[test]
fn tune_folds_of_users_hold_each_user_out_once_and_score_every_fold() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth_file(dir.path());
    let args = tune_args(&[
        "--data",
        data.to_str().unwrap(),
        "--implicit",
        "--alpha",
        "5",
        "--factors",
        "3",
        "--folds",
        "3",
        "--folds-of",
        "users",
        "--iterations",
        "2",
        "--quiet",
    ]);
    // The test users of `train --split users` (same seed and ratio) are left
    // out; the three folds' held-out users partition the others, and none of them trains.
    let raw = als_core::data::load_ratings(&args.data, &args.load_options().unwrap()).unwrap();
    let test_users: Vec<String> = {
        let split = split_users(&raw, UserHoldout::Ratio { frac: 0.2, seed: 42 }).unwrap();
        let ds = Dataset::build_user_split(&raw, &split, args.duplicate_policy()).unwrap();
        ds.held_out.unwrap().user_ids
    };
    let tuned = without_test_users(raw.clone(), &args).unwrap();
    let mut held: Vec<String> = Vec::new();
    for fold in 0..3 {
        let ds = fold_dataset(&tuned, &args, fold).unwrap();
        let h = ds.held_out.as_ref().unwrap();
        assert!(h.user_ids.iter().all(|u| !ds.user_ids.contains(u) && !test_users.contains(u)));
        assert!(ds.user_ids.iter().all(|u| !test_users.contains(u)));
        held.extend(h.user_ids.iter().cloned());
    }
    held.sort();
    held.dedup();
    assert_eq!(held.len() + test_users.len(), raw.user_tokens.len());
    assert_eq!(test_users.len(), 30);
    // --test-ratio 0 tunes on every user; a ratio of 1 is refused.
    let every = tune_args(&["--data", data.to_str().unwrap(), "--folds-of", "users", "--test-ratio", "0"]);
    assert_eq!(without_test_users(raw.clone(), &every).unwrap().len(), raw.len());
    let cli = Cli::try_parse_from(["coordinator", "tune", "--data", "x", "--test-ratio", "1"]);
    assert!(cli.unwrap_err().to_string().contains("must be 0 or strictly between 0 and 1"));

    let mut table = Vec::new();
    let r = run(&args, &mut table).unwrap();
    assert_eq!(r.folds_of, FoldsOf::Users);
    assert!(
        r.scores
            .iter()
            .all(|s| s.per_fold.len() == 3 && s.per_fold.iter().all(|x| *x > 0.0 && *x <= 1.0)),
        "{:?}",
        r.scores
    );
    assert_eq!(to_json(&r)["folds_of"], "users");
    let table = String::from_utf8(table).unwrap();
    assert!(table.starts_with("3-fold cross-validation over the users of"), "{table}");
}

/// The solver is a grid axis: block sizes multiply only the iALS++
/// settings, and a solver's own flags are accepted when some setting uses it.
#[test]
fn tune_grids_the_solver_and_sizes_blocks_for_ialspp_only() {
    use crate::args::SolverArg;
    use als_core::solve::SolverKind;
    let dir = tempfile::tempdir().unwrap();
    let data = synth_file(dir.path());
    let data = data.to_str().unwrap();
    let args = tune_args(&[
        "--data",
        data,
        "--implicit",
        "--alpha",
        "5",
        "--factors",
        "4",
        "--solver",
        "cg,ialspp,cholesky,cg",
        "--block-size",
        "2,4",
        "--cg-steps",
        "2",
        "--folds",
        "2",
        "--iterations",
        "2",
        "--quiet",
    ]);
    let settings = expand(&args.axes());
    let points: Vec<_> = settings.iter().map(|s| (s.solver, s.block_size)).collect();
    assert_eq!(
        points,
        [
            (Some(SolverArg::Cg), None),
            (Some(SolverArg::Ialspp), Some(2)),
            (Some(SolverArg::Ialspp), Some(4)),
            (Some(SolverArg::Cholesky), None),
        ]
    );
    let kinds: Vec<SolverKind> = settings.iter().map(|&s| args.train_config(s).unwrap().solver).collect();
    assert_eq!(
        kinds,
        [
            SolverKind::Cg { steps: 2 },
            SolverKind::Ialspp { block: 2, sweeps: 1 },
            SolverKind::Ialspp { block: 4, sweeps: 1 },
            SolverKind::Cholesky,
        ]
    );
    let mut out = Vec::new();
    let r = run(&args, &mut out).unwrap();
    // The default is train's solver for --implicit (cg, no block), appended
    // with train's λ and factors.
    assert_eq!(r.scores.len(), 5);
    assert_eq!(
        (r.scores[4].setting.solver, r.scores[4].setting.block_size),
        (Some(SolverArg::Cg), None)
    );
    assert!(r.scores.iter().all(|s| s.per_fold.iter().all(|x| x.is_finite())));
    let text = String::from_utf8(out).unwrap();
    assert!(text.lines().nth(1).unwrap().contains("solver"), "{text}");
    assert!(text.lines().any(|l| l.contains("ialspp") && l.contains(" 4 ")), "{text}");
    assert_eq!(to_json(&r)["settings"][1]["solver"], "ialspp");

    // A solver's flags with no setting that uses them are refused.
    for (flags, want) in [
        (
            vec!["--implicit", "--solver", "cg,cholesky", "--block-size", "8"],
            "--block-size applies to --solver ialspp only",
        ),
        (
            vec!["--solver", "cholesky", "--learning-rate", "0.01"],
            "--learning-rate applies to --solver sgd only",
        ),
        (vec!["--solver", "cholesky,cg"], "--solver cg applies to implicit feedback"),
    ] {
        let a = tune_args(&[&["--data", "missing.csv"][..], &flags].concat());
        let err = run(&a, &mut Vec::new()).unwrap_err().to_string();
        assert!(err.contains(want), "{flags:?}: {err}");
    }
    // Explicit ratings: ALS against SGD with its step size in one grid.
    let a = tune_args(&[
        "--data",
        data,
        "--factors",
        "4",
        "--solver",
        "cholesky,sgd",
        "--learning-rate",
        "0.01",
        "--folds",
        "2",
        "--iterations",
        "2",
        "--quiet",
    ]);
    let r = run(&a, &mut Vec::new()).unwrap();
    assert_eq!(
        r.scores.len(),
        3,
        "cholesky, sgd and train's default (cholesky with train's λ and factors)"
    );
    assert!(r.scores.iter().all(|s| s.per_fold.iter().all(|x| x.is_finite())));
}
