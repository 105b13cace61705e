//! Flag parsing and validation, executor choice, and a library-level run:
//! train in-process on a tiny synthetic file, save, load, recommend.

use std::path::{Path, PathBuf};

use als_core::data::synth::{write_csv, SynthSpec};
use als_core::data::DuplicatePolicy;
use als_core::model::{load_model, ModelKind};
use als_core::solve::{Confidence, SolverKind};
use clap::Parser;
use serde_json::Value;

use crate::args::TrainArgs;
use crate::cli::{Cli, Command};
use crate::commands::{recommend as recommend_cmd, similar as similar_cmd};
use crate::input::{SplitChoice, TestSource};
use crate::training::{self, ExecutorChoice, TrainOutcome};

/// A training command as the binary runs it, minus the thread pool.
fn run_train(a: &TrainArgs, out: &mut dyn std::io::Write) -> anyhow::Result<TrainOutcome> {
    training::run(a.job(2)?, out)
}

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("coordinator").chain(args.iter().copied()))
}

fn train_args(args: &[&str]) -> TrainArgs {
    let cli = parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(cli.command.is_none());
    cli.train
}

fn parse_err(args: &[&str]) -> String {
    match parse(args) {
        Ok(c) => panic!("{args:?} parsed: {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn no_subcommand_trains_with_the_documented_defaults() {
    let a = train_args(&[]);
    assert!(a.data.is_none());
    let cfg = a.train_config().unwrap();
    assert_eq!((cfg.factors, cfg.iterations, cfg.lambda, cfg.seed), (64, 15, 0.1, 42));
    assert_eq!(cfg.solver, SolverKind::Cholesky);
    assert!(cfg.biased && cfg.clip_predictions && cfg.implicit.is_none());
    assert_eq!((cfg.blocks, cfg.eval_every, cfg.ranking_k), (12, 1, 10));
    assert_eq!(a.split.test_source().unwrap(), TestSource::Split(SplitChoice::Ratio(0.2)));
    assert_eq!(a.layout.duplicate_policy(a.model.implicit), DuplicatePolicy::Last);
    let o = a.load_options();
    assert_eq!(
        (o.user_col, o.item_col, o.rating_col, o.timestamp_col, o.header),
        (0, 1, Some(2), None, None)
    );

    let a = train_args(&[
        "--data",
        "r.csv",
        "--implicit",
        "--confidence",
        "log",
        "--epsilon",
        "2",
        "--no-header",
        "--no-rating-col",
    ]);
    let cfg = a.train_config().unwrap();
    assert_eq!(cfg.solver, SolverKind::Cg { steps: 3 });
    let imp = cfg.implicit.unwrap();
    assert_eq!(imp.alpha, 40.0);
    assert_eq!(imp.confidence, Confidence::Log { epsilon: 2.0 });
    assert_eq!(a.layout.duplicate_policy(a.model.implicit), DuplicatePolicy::Sum);
    let o = a.load_options();
    assert_eq!((o.rating_col, o.header), (None, Some(false)));

    let a = train_args(&["--split", "kfold", "--folds", "4", "--fold", "3", "--duplicates", "first"]);
    assert_eq!(
        a.split.test_source().unwrap(),
        TestSource::Split(SplitChoice::KFold { folds: 4, fold: 3 })
    );
    assert_eq!(a.layout.duplicate_policy(a.model.implicit), DuplicatePolicy::First);
    let a = train_args(&["--split", "temporal", "--test-ratio", "0.1"]);
    assert_eq!(a.split.test_source().unwrap(), TestSource::Split(SplitChoice::Temporal(0.1)));
    assert_eq!(
        a.load_options().timestamp_col,
        Some(3),
        "temporal reads the MovieLens timestamp column"
    );
    assert_eq!(
        train_args(&["--test", "t.csv"]).split.test_source().unwrap(),
        TestSource::File("t.csv".into())
    );
    assert_eq!(train_args(&["--no-test"]).split.test_source().unwrap(), TestSource::None);
}

#[test]
fn subcommands_parse() {
    let c = parse(&["recommend", "--model", "m", "--user", "7", "-n", "3", "--json"]).unwrap();
    match c.command {
        Some(Command::Recommend(r)) => {
            assert_eq!((r.user.as_deref(), r.list.n, r.list.json, r.all), (Some("7"), 3, true, false));
        }
        other => panic!("{other:?}"),
    }
    let c = parse(&["recommend", "--model", "m", "--all", "--out", "all.csv"]).unwrap();
    assert!(matches!(c.command, Some(Command::Recommend(r)) if r.all && r.out.as_deref() == Some(Path::new("all.csv"))));
    let c = parse(&["similar", "--model", "m", "--item", "x"]).unwrap();
    assert!(matches!(c.command, Some(Command::Similar(s)) if s.item.as_deref() == Some("x") && s.list.n == 10));
    let c = parse(&[
        "generate",
        "--out",
        "g.csv",
        "--users",
        "10",
        "--items",
        "20",
        "--ratings",
        "50",
        "--continuous",
    ])
    .unwrap();
    assert!(matches!(c.command, Some(Command::Generate(g)) if g.users == 10 && g.continuous && g.rank == 16));
}

#[test]
fn conflicting_flags_are_refused_by_the_parser() {
    for (args, needle) in [
        (&["--header", "--no-header"][..], "--no-header"),
        (&["--test", "t.csv", "--test-ratio", "0.1"], "--test-ratio"),
        (&["--test", "t.csv", "--no-test"], "--no-test"),
        (&["--no-test", "--split", "per-user"], "--split"),
        (&["--rating-col", "3", "--no-rating-col"], "--no-rating-col"),
        (&["--workers", "a:1", "--local", "2"], "--local"),
        (&["--local", "2", "--in-process"], "--in-process"),
        (&["--alpha", "10"], "--implicit"),
        (&["--implicit", "--no-biases"], "--no-biases"),
        (&["--overwrite"], "--out"),
        (&["--factors", "8", "recommend", "--model", "m", "--user", "1"], "recommend"),
        (&["recommend", "--model", "m"], "--user"),
        (&["recommend", "--model", "m", "--all"], "--out"),
        (&["recommend", "--model", "m", "--user", "1", "--all", "--out", "x"], "--all"),
        (&["similar", "--model", "m"], "--item"),
        (&["similar", "--model", "m", "--item", "a", "--user", "b"], "--user"),
    ] {
        let e = parse_err(args);
        assert!(e.contains(needle), "{args:?}: {e}");
    }
}

#[test]
fn bad_values_give_clear_errors() {
    for (args, needle) in [
        (&["--test-ratio", "1.5"][..], "between 0 and 1"),
        (&["--test-ratio", "x"], "not a number"),
        (&["--factors", "0"], "at least 1"),
        (&["--iterations", "0"], "at least 1"),
        (&["--lambda", "-1"], ">= 0"),
        (&["--lambda", "nan"], ">= 0"),
        (&["--format", "parquet"], "ml-100k"),
        (&["--solver", "lu"], "cholesky"),
        (&["--duplicates", "max"], "sum"),
        (&["--implicit", "--epsilon", "0"], "> 0"),
    ] {
        let e = parse_err(args);
        assert!(e.contains(needle), "{args:?}: {e}");
    }
    // Checks across flags, after parsing.
    let cfg_err = |args: &[&str]| train_args(args).train_config().unwrap_err().to_string();
    assert!(cfg_err(&["--solver", "cg"]).contains("--implicit"));
    assert!(cfg_err(&["--cg-steps", "5"]).contains("--solver cg"));
    assert!(cfg_err(&["--implicit", "--epsilon", "2"]).contains("--confidence log"));
    // The iALS loss's own flags, and the Hu et al. flags it does not read.
    for (args, needle) in [
        (
            &["--implicit", "--unobserved-weight", "0.1"][..],
            "--unobserved-weight applies to --implicit --loss ials only",
        ),
        (&["--reg-exponent", "1"], "--reg-exponent applies to --implicit --loss ials only"),
        (&["--observed-weight", "one"], "--observed-weight applies"),
        (
            &["--implicit", "--loss", "ials", "--reg-scaling", "count"],
            "--reg-scaling does not apply to --loss ials",
        ),
        (&["--implicit", "--loss", "ials", "--alpha", "3"], "--alpha weighs observed pairs"),
        (
            &["--implicit", "--loss", "ials", "--confidence", "log"],
            "--confidence weighs observed pairs",
        ),
        (
            &["--implicit", "--loss", "ials", "--reg-exponent", "3"],
            "--reg-exponent must be in 0..=2",
        ),
        (
            &["--implicit", "--loss", "ials", "--unobserved-weight", "2e6"],
            "--unobserved-weight must be in 0..=",
        ),
        (&["--init-std", "11"], "--init-std must be in"),
        (&["--solver", "ialspp"], "--solver ialspp applies to implicit feedback"),
        (&["--implicit", "--block-size", "8"], "--block-size applies to --solver ialspp only"),
        (&["--implicit", "--sweeps", "2"], "--sweeps applies to --solver ialspp only"),
        (
            &["--implicit", "--solver", "ialspp", "--block-size", "5000"],
            "--block-size must be in 1..=4096",
        ),
    ] {
        let e = cfg_err(args);
        assert!(e.contains(needle), "{args:?}: {e}");
    }
    assert!(parse_err(&["--loss", "ials"]).contains("--implicit"));
    assert!(parse_err(&["--implicit", "--init-std", "0"]).contains("> 0"));
    let ials = train_args(&[
        "--implicit",
        "--loss",
        "ials",
        "--observed-weight",
        "confidence",
        "--alpha",
        "2",
        "--unobserved-weight",
        "0.5",
        "--reg-exponent",
        "0.5",
        "--init-std",
        "0.1",
    ])
    .train_config()
    .unwrap();
    assert_eq!(
        ials.implicit.unwrap().loss,
        als_core::solve::ImplicitLoss::Ials {
            unobserved_weight: 0.5,
            reg_exponent: 0.5,
            confidence_weights: true
        }
    );
    assert_eq!((ials.implicit.unwrap().alpha, ials.init_std), (2.0, Some(0.1)));
    let ialspp = train_args(&["--implicit", "--solver", "ialspp", "--block-size", "32", "--sweeps", "2"])
        .train_config()
        .unwrap();
    assert_eq!(ialspp.solver, als_core::solve::SolverKind::Ialspp { block: 32, sweeps: 2 });
    // Core names fields; the command line names its flags.
    assert_eq!(
        cfg_err(&["--factors", "5000"]),
        "invalid training settings: --factors must be in 1..=4096, got 5000"
    );
    assert!(cfg_err(&["--lambda", "2e6"]).starts_with("invalid training settings: --lambda must be in 0..="));
    assert!(cfg_err(&["--implicit", "--alpha", "1e7"]).starts_with("invalid training settings: --alpha must be in"));
    assert!(cfg_err(&["--k", "5000"]).starts_with("invalid training settings: --k must be in 1..=1000"));
    let split_err = |args: &[&str]| train_args(args).split.test_source().unwrap_err().to_string();
    assert!(split_err(&["--folds", "3"]).contains("kfold"));
    assert!(split_err(&["--split", "kfold", "--fold", "5"]).contains("0..5"));
    assert!(parse_err(&["--split", "kfold", "--folds", "1"]).contains(">= 2"));
    assert!(split_err(&["--split", "kfold", "--test-ratio", "0.3"]).contains("--test-ratio"));
    let col_err = crate::args::check_columns(&train_args(&["--item-col", "0"]).load_options())
        .unwrap_err()
        .to_string();
    assert!(col_err.contains("--user-col") && col_err.contains("--item-col"), "{col_err}");
    assert!(crate::args::check_columns(&train_args(&["--rating-col", "3"]).load_options()).is_ok());
    #[cfg(not(feature = "lapack"))]
    assert!(train_args(&["--backend", "lapack"])
        .train_config()
        .unwrap_err()
        .to_string()
        .contains("lapack"));
}

#[test]
fn executor_choice_resolution() {
    let r = |args: &[&str]| train_args(args).cluster.executor_choice(ExecutorChoice::Local(6));
    assert_eq!(r(&[]).unwrap(), ExecutorChoice::Local(6));
    assert_eq!(r(&["--local", "3"]).unwrap(), ExecutorChoice::Local(3));
    assert_eq!(r(&["--in-process"]).unwrap(), ExecutorChoice::InProcess);
    assert_eq!(
        r(&["--workers", "a:50051,b:50051"]).unwrap(),
        ExecutorChoice::Workers(vec!["a:50051".into(), "b:50051".into()])
    );
    assert_eq!(r(&["--workers", "a:1", "--workers", "b:2"]).unwrap().label(), "workers:a:1,b:2");
    assert!(r(&["--local", "0"]).unwrap_err().to_string().contains("at least 1"));
    assert!(r(&["--workers", "a:1,,b:2"]).unwrap_err().to_string().contains("empty"));
    assert!(r(&["--workers", "hostonly"]).unwrap_err().to_string().contains("HOST:PORT"));
    assert!(r(&["--workers", "a:1,a:1"]).unwrap_err().to_string().contains("twice"));
    // The whole job sizes the default cluster by the cores, at least one worker.
    assert_eq!(train_args(&[]).job(0).unwrap().executor, ExecutorChoice::Local(1));
    assert_eq!(ExecutorChoice::Local(4).label(), "local:4");
    assert_eq!(ExecutorChoice::InProcess.label(), "in-process");
}

#[test]
fn token_from_file_or_environment() {
    use als_proto::token::resolve_token;
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("tok");
    std::fs::write(&f, "  s3cret\n").unwrap();
    assert_eq!(resolve_token(Some(&f), Some("env".into())).unwrap().as_deref(), Some("s3cret"));
    assert_eq!(resolve_token(None, Some("env".into())).unwrap().as_deref(), Some("env"));
    assert_eq!(resolve_token(None, Some(" ".into())).unwrap(), None);
    std::fs::write(&f, "\n").unwrap();
    assert!(resolve_token(Some(&f), None).unwrap_err().to_string().contains("empty"));
    let missing = dir.path().join("nope");
    assert!(resolve_token(Some(&missing), None).unwrap_err().to_string().contains("nope"));
}

/// A small synthetic ratings file (300 users, 200 items, 4000 ratings).
fn tiny_csv(dir: &Path) -> PathBuf {
    let p = dir.join("tiny.csv");
    let spec = SynthSpec {
        users: 300,
        items: 200,
        ratings: 4000,
        rank: 4,
        noise_std: 0.3,
        ..SynthSpec::default()
    };
    write_csv(&spec, &p, |_| {}).unwrap();
    p
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn out_dir_is_checked_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    // The data file does not exist: the --out check must fail first.
    let a = train_args(&["--data", "/nonexistent.csv", "--out", s(&out), "--quiet"]);
    let e = run_train(&a, &mut Vec::new()).err().unwrap().to_string();
    assert!(e.contains("already exists") && e.contains("--overwrite"), "{e}");
    let a = train_args(&["--data", "/nonexistent.csv", "--out", s(&out), "--overwrite", "--quiet"]);
    let e = run_train(&a, &mut Vec::new()).err().unwrap().to_string();
    assert!(e.contains("not a model directory"), "{e}");
    // A missing data file is named.
    let a = train_args(&["--data", "/nonexistent.csv", "--quiet"]);
    let e = format!("{:#}", run_train(&a, &mut Vec::new()).err().unwrap());
    assert!(e.contains("/nonexistent.csv"), "{e}");
}

#[test]
fn explicit_train_save_load_recommend() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_csv(dir.path());
    let out = dir.path().join("model");
    let mj = dir.path().join("metrics.json");
    let a = train_args(&[
        "--data",
        s(&data),
        "--factors",
        "6",
        "--iterations",
        "4",
        "--eval-every",
        "2",
        "--lambda",
        "0.1",
        "--in-process",
        "--out",
        s(&out),
        "--metrics-json",
        s(&mj),
        "--quiet",
    ]);
    let mut summary = Vec::new();
    let o = run_train(&a, &mut summary).unwrap();
    let summary = String::from_utf8(summary).unwrap();
    assert!(summary.contains("rmse=") && summary.contains("model saved to"), "{summary}");
    assert_eq!(o.executor, "in-process");

    // Metrics JSON on disk: the documented layout.
    let m: Value = serde_json::from_str(&std::fs::read_to_string(&mj).unwrap()).unwrap();
    assert_eq!(m, o.metrics);
    let rmse = m["final"]["rmse"].as_f64().unwrap();
    assert!(rmse > 0.0 && rmse < 1.5, "{rmse}");
    assert!(m["final"]["mae"].is_f64() && m["final"]["rmse_raw"].is_f64() && m["final"]["mae_raw"].is_f64());
    assert!(m["seconds_per_iteration"].as_f64().unwrap() > 0.0);
    let its = m["iterations"].as_array().unwrap();
    assert_eq!(its.len(), 4);
    for (n, it) in its.iter().enumerate() {
        assert_eq!(it["iteration"], n + 1);
        for key in ["seconds", "objective", "train_rmse", "compute_seconds", "transfer_seconds"] {
            assert!(it[key].is_f64(), "{key}: {it}");
        }
        assert!(it["bytes_sent"].is_u64() && it["bytes_min"].is_u64());
        assert_eq!(it.get("rmse").is_some(), (n + 1) % 2 == 0, "eval every 2: {it}");
    }
    assert_eq!(m["config"]["factors"], 6);
    assert_eq!(
        m["data"]["n_train"].as_u64().unwrap() + m["data"]["n_test"].as_u64().unwrap() + m["data"]["test_dropped_cold"].as_u64().unwrap(),
        4000
    );
    assert_eq!(m["data"]["source"], s(&data));
    assert_eq!(m["executor"], "in-process");

    // The saved model equals the in-memory one.
    let model = load_model(&out).unwrap();
    assert_eq!(model.kind(), ModelKind::Explicit);
    assert_eq!(model.user_factors(), o.model().user_factors());
    assert_eq!(model.item_bias(), o.model().item_bias());
    assert_eq!(model.version(), 1);
    assert_eq!(model.hyperparameters()["data_source"], s(&data));
    assert_eq!(model.hyperparameters()["factors"], 6);
    assert_eq!(model.metrics()["rmse"].as_f64().unwrap(), rmse);

    // recommend: table, then JSON lines; seen items excluded.
    let user = model.user_ids()[0].clone();
    let cli = parse(&["recommend", "--model", s(&out), "--user", &user, "-n", "5", "--json"]).unwrap();
    let Some(Command::Recommend(r)) = cli.command else { panic!() };
    let mut buf = Vec::new();
    recommend_cmd::run(&r, &mut buf).unwrap();
    let lines: Vec<Value> = String::from_utf8(buf)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    let seen: Vec<&str> = model
        .seen()
        .row(0)
        .0
        .iter()
        .map(|&i| model.item_ids()[i as usize].as_str())
        .collect();
    let mut last = f64::INFINITY;
    for l in &lines {
        let item = l["item"].as_str().unwrap();
        assert!(!seen.contains(&item), "seen item {item} recommended");
        let score = l["score"].as_f64().unwrap();
        assert!(score <= last);
        last = score;
    }
    let cli = parse(&["recommend", "--model", s(&out), "--user", &user, "-n", "3"]).unwrap();
    let Some(Command::Recommend(r)) = cli.command else { panic!() };
    let mut buf = Vec::new();
    recommend_cmd::run(&r, &mut buf).unwrap();
    let table = String::from_utf8(buf).unwrap();
    assert_eq!(table.lines().count(), 4, "{table}");
    assert!(table.lines().next().unwrap().contains("rank") && table.contains(lines[0]["item"].as_str().unwrap()));

    // Unknown user: a clear error naming it.
    let cli = parse(&["recommend", "--model", s(&out), "--user", "no-such-user"]).unwrap();
    let Some(Command::Recommend(r)) = cli.command else { panic!() };
    let e = recommend_cmd::run(&r, &mut Vec::new()).unwrap_err().to_string();
    assert!(e.contains("'no-such-user'") && e.contains("not in the model"), "{e}");

    // Candidates file restricts the items.
    let cands = dir.path().join("cands.txt");
    let allowed: Vec<String> = model.item_ids().iter().step_by(7).cloned().collect();
    std::fs::write(&cands, format!("{}\nunknown-item\n", allowed.join("\n"))).unwrap();
    let cli = parse(&["recommend", "--model", s(&out), "--user", &user, "--items", s(&cands), "--json"]).unwrap();
    let Some(Command::Recommend(r)) = cli.command else { panic!() };
    let mut buf = Vec::new();
    recommend_cmd::run(&r, &mut buf).unwrap();
    for l in String::from_utf8(buf).unwrap().lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        assert!(allowed.iter().any(|a| a == v["item"].as_str().unwrap()));
    }

    // --all: CSV and JSON lines agree with the per-user recommendation.
    let all_csv = dir.path().join("all.csv");
    recommend_cmd::recommend_all(&model, 4, false, None, &all_csv, als_core::atomic::OutputPolicy::REPLACE).unwrap();
    // Without --overwrite an existing file is kept; a missing directory is not created.
    let keep = als_core::atomic::OutputPolicy {
        overwrite: false,
        create_parent: false,
    };
    let before = std::fs::read(&all_csv).unwrap();
    let e = format!(
        "{:#}",
        recommend_cmd::recommend_all(&model, 2, false, None, &all_csv, keep).unwrap_err()
    );
    assert!(e.contains("already exists; pass --overwrite"), "{e}");
    assert_eq!(std::fs::read(&all_csv).unwrap(), before);
    let e = format!(
        "{:#}",
        recommend_cmd::recommend_all(&model, 2, false, None, &dir.path().join("no/dir/x.csv"), keep).unwrap_err()
    );
    assert!(e.contains("does not exist"), "{e}");
    let text = std::fs::read_to_string(&all_csv).unwrap();
    let mut rows = text.lines();
    assert_eq!(rows.next(), Some("user,rank,item,score"));
    let rows: Vec<Vec<&str>> = rows.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), model.n_users() * 4);
    for u in [0, 17, model.n_users() - 1] {
        let want = model.recommend(u, 4, false, None);
        for (r, w) in want.iter().enumerate() {
            let row = &rows[u * 4 + r];
            assert_eq!(row[0], model.user_ids()[u]);
            assert_eq!(row[1], (r + 1).to_string());
            assert_eq!(row[2], model.item_ids()[w.index as usize], "user {u} rank {}", r + 1);
            let score: f32 = row[3].parse().unwrap();
            assert!((score - w.score).abs() < 1e-4, "{score} vs {}", w.score);
        }
    }
    let all_json = dir.path().join("all.jsonl");
    recommend_cmd::recommend_all(&model, 2, true, None, &all_json, als_core::atomic::OutputPolicy::REPLACE).unwrap();
    let first: Value = serde_json::from_str(std::fs::read_to_string(&all_json).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(first["user"], model.user_ids()[0].as_str());
    let want = model.recommend(0, 2, true, None);
    let items = first["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["item"], model.item_ids()[want[0].index as usize].as_str());
    // --all restricted to candidates.
    let cand_rows: Vec<u32> = (0..model.n_items() as u32).step_by(5).collect();
    let all_c = dir.path().join("all_c.csv");
    recommend_cmd::recommend_all(&model, 3, false, Some(&cand_rows), &all_c, als_core::atomic::OutputPolicy::REPLACE).unwrap();
    let text = std::fs::read_to_string(&all_c).unwrap();
    let line2: Vec<&str> = text.lines().nth(1).unwrap().split(',').collect();
    let want = model.recommend(0, 3, false, Some(&cand_rows));
    assert_eq!(line2[2], model.item_ids()[want[0].index as usize]);

    // similar: by item and by user.
    let item = model.item_ids()[3].clone();
    let cli = parse(&["similar", "--model", s(&out), "--item", &item, "-n", "4", "--json"]).unwrap();
    let Some(Command::Similar(sa)) = cli.command else { panic!() };
    let mut buf = Vec::new();
    similar_cmd::run(&sa, &mut buf).unwrap();
    let sims: Vec<Value> = String::from_utf8(buf)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(sims.len(), 4);
    assert!(sims
        .iter()
        .all(|v| v["item"] != item.as_str() && v["score"].as_f64().unwrap() <= 1.0 + 1e-6));
    let cli = parse(&["similar", "--model", s(&out), "--user", &user]).unwrap();
    let Some(Command::Similar(sa)) = cli.command else { panic!() };
    let mut buf = Vec::new();
    similar_cmd::run(&sa, &mut buf).unwrap();
    assert_eq!(String::from_utf8(buf).unwrap().lines().count(), 11);

    // A second run into the same directory is refused; --overwrite replaces it.
    let e = run_train(&a, &mut Vec::new()).err().unwrap().to_string();
    assert!(e.contains("already exists"), "{e}");
}

#[test]
fn implicit_run_reports_ranking_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_csv(dir.path());
    let out = dir.path().join("imodel");
    let a = train_args(&[
        "--data",
        s(&data),
        "--implicit",
        "--alpha",
        "5",
        "--factors",
        "6",
        "--iterations",
        "3",
        "--eval-every",
        "0",
        "--out",
        s(&out),
        "--quiet",
        "--local",
        "2",
    ]);
    let o = run_train(&a, &mut Vec::new()).unwrap();
    let m = &o.metrics;
    for key in ["precision@10", "recall@10", "map@10", "ndcg@10"] {
        let v = m["final"][key].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{key} {v}");
    }
    assert!(m["final"].get("rmse").is_none());
    let its = m["iterations"].as_array().unwrap();
    assert!(
        its[0].get("ndcg@10").is_none() && its[2].get("ndcg@10").is_some(),
        "evaluated after the last only"
    );
    assert_eq!(m["config"]["solver"]["kind"], "cg");
    let model = load_model(&out).unwrap();
    assert_eq!(model.kind(), ModelKind::Implicit);
    assert!(model.user_bias().is_none());
    assert_eq!(model.rating_range(), None);
}

#[test]
fn explicit_test_file_and_embedded_default() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_csv(dir.path());
    // Use the same file as its own test set: nothing is cold.
    let args = [
        "--data",
        s(&data),
        "--test",
        s(&data),
        "--factors",
        "4",
        "--iterations",
        "2",
        "--quiet",
        "--no-biases",
    ];
    let a = train_args(&args);
    // Read here, the model is held here.
    let here = run_train(&train_args(&[&args[..], &["--input-here"]].concat()), &mut Vec::new()).unwrap();
    assert_eq!(here.data.n_test, 4000);
    assert_eq!(here.data.test_dropped_cold, 0);
    assert!(here.model().user_bias().is_none() && here.model().global_mean() == 0.0);
    assert!(here.read_input_here);
    // By default the local workers read the file (and the test file)
    // themselves: the same data and test metrics, none of it read here.
    let o = run_train(&a, &mut Vec::new()).unwrap();
    assert_eq!((o.data.n_test, o.data.test_dropped_cold), (4000, 0));
    assert!(!o.read_input_here && o.model.is_none());
    assert_eq!(o.result.final_metrics, here.result.final_metrics);

    // No --data: the embedded dataset, with a few recommendations printed.
    let a = train_args(&["--factors", "4", "--iterations", "1", "--quiet"]);
    let mut buf = Vec::new();
    let o = run_train(&a, &mut buf).unwrap();
    let text = String::from_utf8(buf).unwrap();
    assert!(o.data.source.contains("embedded"), "{}", o.data.source);
    assert!(text.contains("top-5 recommendations"), "{text}");
    assert_eq!(text.lines().filter(|l| l.trim_start().starts_with("user ")).count(), 3, "{text}");
}

#[test]
fn sgd_flags_pick_the_learner_and_train_in_process() {
    use als_core::train::{Learner, DEFAULT_LEARNING_RATE};
    let cfg = train_args(&["--solver", "sgd", "--learning-rate", "0.01"]).train_config().unwrap();
    assert_eq!(cfg.learner, Learner::Sgd { learning_rate: 0.01 });
    let cfg = train_args(&["--solver", "sgd"]).train_config().unwrap();
    assert_eq!(
        cfg.learner,
        Learner::Sgd {
            learning_rate: DEFAULT_LEARNING_RATE
        }
    );
    assert_eq!(train_args(&[]).train_config().unwrap().learner, Learner::Als);
    let e = train_args(&["--learning-rate", "0.01"]).train_config().unwrap_err().to_string();
    assert!(e.contains("--solver sgd only"), "{e}");
    let e = train_args(&["--solver", "sgd", "--implicit"])
        .train_config()
        .unwrap_err()
        .to_string();
    assert!(e.contains("explicit ratings only"), "{e}");
    assert!(parse_err(&["--solver", "sgd", "--learning-rate", "0"]).contains("> 0"));

    // The default executor (local workers) becomes in-process; an explicit cluster is refused.
    let sgd = train_args(&["--solver", "sgd"]).train_config().unwrap();
    let choice = training::executor_for_learner(&sgd, false, ExecutorChoice::Local(2)).unwrap();
    assert_eq!(choice, ExecutorChoice::InProcess);
    let e = training::executor_for_learner(&sgd, true, ExecutorChoice::Local(2))
        .unwrap_err()
        .to_string();
    assert!(e.contains("--solver sgd trains in this process"), "{e}");
    let als = train_args(&[]).train_config().unwrap();
    assert_eq!(
        training::executor_for_learner(&als, false, ExecutorChoice::Local(2)).unwrap(),
        ExecutorChoice::Local(2)
    );

    let dir = tempfile::tempdir().unwrap();
    let data = tiny_csv(dir.path());
    let a = train_args(&[
        "--data",
        s(&data),
        "--solver",
        "sgd",
        "--factors",
        "4",
        "--iterations",
        "3",
        "--quiet",
    ]);
    let mut summary = Vec::new();
    let o = run_train(&a, &mut summary).unwrap();
    let summary = String::from_utf8(summary).unwrap();
    assert!(summary.contains("3 SGD epochs") && summary.contains("rmse="), "{summary}");
    assert_eq!(o.executor, "in-process");
    assert_eq!(o.metrics["config"]["learner"]["kind"], "sgd");
    assert_eq!(o.metrics["iterations"].as_array().unwrap().len(), 3);
    assert!(o.metrics["final"]["rmse"].as_f64().unwrap() < 1.5);
}

#[test]
fn gibbs_flags_pick_the_sampler_which_trains_in_process_and_saves_its_mean() {
    use als_core::train::{Learner, DEFAULT_BURN_IN, DEFAULT_NOISE_PRECISION};
    let cfg = train_args(&[
        "--solver",
        "gibbs",
        "--iterations",
        "30",
        "--burn-in",
        "5",
        "--noise-precision",
        "1.5",
    ])
    .train_config()
    .unwrap();
    assert_eq!(
        cfg.learner,
        Learner::Gibbs {
            burn_in: 5,
            noise_precision: 1.5
        }
    );
    let cfg = train_args(&["--solver", "gibbs"]).train_config().unwrap();
    assert_eq!(
        cfg.learner,
        Learner::Gibbs {
            burn_in: DEFAULT_BURN_IN,
            noise_precision: DEFAULT_NOISE_PRECISION
        }
    );
    for (args, want) in [
        (&["--burn-in", "3"][..], "--burn-in applies to --solver gibbs only"),
        (&["--noise-precision", "3"][..], "--noise-precision applies to --solver gibbs only"),
        (
            &["--solver", "gibbs", "--implicit"][..],
            "--solver gibbs samples explicit ratings only",
        ),
        (
            &["--solver", "gibbs", "--iterations", "10", "--burn-in", "10"][..],
            "--burn-in must be below the iterations (10)",
        ),
    ] {
        let e = train_args(args).train_config().unwrap_err().to_string();
        assert!(e.contains(want), "{args:?}: {e}");
    }
    assert!(parse_err(&["--solver", "gibbs", "--noise-precision", "0"]).contains("> 0"));
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt");
    let e = train_args(&["--solver", "gibbs", "--checkpoint-dir", s(&ckpt)])
        .job(2)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("--checkpoint-dir does not apply to --solver gibbs"), "{e}");
    let gibbs = train_args(&["--solver", "gibbs"]).train_config().unwrap();
    assert_eq!(
        training::executor_for_learner(&gibbs, false, ExecutorChoice::Local(2)).unwrap(),
        ExecutorChoice::InProcess
    );
    let e = training::executor_for_learner(&gibbs, true, ExecutorChoice::Local(2))
        .unwrap_err()
        .to_string();
    assert!(e.contains("--solver gibbs trains in this process"), "{e}");

    let data = tiny_csv(dir.path());
    let out = dir.path().join("model");
    let a = train_args(&[
        "--data",
        s(&data),
        "--solver",
        "gibbs",
        "--factors",
        "4",
        "--iterations",
        "12",
        "--burn-in",
        "4",
        "--final-fit",
        "train",
        "--out",
        s(&out),
        "--quiet",
    ]);
    let mut summary = Vec::new();
    let o = run_train(&a, &mut summary).unwrap();
    let summary = String::from_utf8(summary).unwrap();
    assert!(summary.contains("12 Gibbs iterations") && summary.contains("rmse="), "{summary}");
    assert_eq!(o.executor, "in-process");
    assert_eq!(o.metrics["config"]["learner"]["kind"], "gibbs");
    assert_eq!(o.metrics["config"]["learner"]["burn_in"], 4);
    let its = o.metrics["iterations"].as_array().unwrap();
    assert_eq!(its.len(), 12);
    assert!(its.iter().all(|r| r["objective"].is_null()), "the sampler minimizes no objective");
    let rmse = o.metrics["final"]["rmse"].as_f64().unwrap();
    // 13 ratings per user: ALS's defaults score 0.82 here, an over-regularized
    // fit that keeps little more than the biases 0.98.
    assert!(rmse < 0.85, "sparse rank-4 data: {rmse}");
    // The saved model is the posterior mean the final metrics scored.
    let saved = load_model(&out).unwrap();
    assert_eq!(saved.user_factors(), o.model().user_factors());
}

/// The saved model has seen every rating of the input (its metrics come
/// from the held-out run), unless `--final-fit train` asks for the evaluated model.
#[test]
fn the_saved_model_is_refit_on_every_rating_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("r.csv");
    // 60 users × 40 items; item 39 is rated once, by user 0, so a 20% split often holds it out.
    let mut text = String::new();
    for u in 0..60 {
        for j in 0..8 {
            text.push_str(&format!("u{u},i{},{}\n", (u * 3 + j * 5) % 39, 1 + (u + j) % 5));
        }
    }
    text.push_str("u0,i39,5\n");
    std::fs::write(&data, &text).unwrap();
    let n_ratings = text.lines().count();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let run = |extra: &[&str], out: &Path, seed: &str| {
        let (d, o, sd) = (s(&data), s(out), seed.to_string());
        let mut args = vec!["--data", d.as_str()];
        args.extend(["--factors", "4", "--iterations", "3", "--in-process", "--quiet", "--split-seed"]);
        args.push(&sd);
        args.extend(["--out", &o]);
        args.extend(extra);
        let a = train_args(&args);
        run_train(&a, &mut Vec::new()).unwrap()
    };
    // A seed whose split holds out u0's only rating of i39.
    let mut seed = None;
    for s in 0..200 {
        let out = dir.path().join(format!("probe{s}"));
        let o = run(&["--final-fit", "train"], &out, &s.to_string());
        if !o.model().item_ids().iter().any(|i| i == "i39") {
            seed = Some(s.to_string());
            assert_eq!(o.model().hyperparameters()["trained_on"]["ratings"], "train");
            break;
        }
    }
    let seed = seed.expect("some split holds out i39");
    let out = dir.path().join("all");
    let o = run(&[], &out, &seed);
    let m = load_model(&out).unwrap();
    assert_eq!((m.n_users(), m.n_items()), (60, 40), "every user and item of the input");
    assert_eq!(m.seen().indices.len(), n_ratings, "seen covers every interaction");
    let u0 = m.user_index("u0").unwrap();
    let recs = m.recommend(u0, 40, false, None);
    assert!(
        recs.iter().all(|r| m.item_ids()[r.index as usize] != "i39"),
        "a rated item is recommended"
    );
    assert_eq!(m.hyperparameters()["trained_on"]["ratings"], "all");
    assert_eq!(m.hyperparameters()["trained_on"]["n_ratings"], n_ratings);
    assert!(m.metrics()["metrics_from"].as_str().unwrap().contains("held-out"));
    assert_eq!(o.metrics["model_trained_on"]["ratings"], "all");
    assert!(o.metrics["final"]["rmse"].is_f64(), "the held-out metrics are reported");
    // --test FILE: the training set is --data as given; asking for a refit is refused.
    let a = train_args(&[
        "--data",
        &s(&data),
        "--test",
        &s(&data),
        "--out",
        &s(&dir.path().join("x")),
        "--final-fit",
        "all",
    ]);
    let e = run_train(&a, &mut Vec::new()).err().unwrap().to_string();
    assert!(e.contains("--final-fit all: with --test FILE"), "{e}");
}

#[test]
fn held_out_users_are_scored_alike_in_process_and_on_workers() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_csv(dir.path());
    let a = train_args(&["--split", "users", "--test-ratio", "0.25"]);
    assert_eq!(a.split.test_source().unwrap(), TestSource::Split(SplitChoice::Users(0.25)));
    let run = |executor: &[&str], implicit: bool| {
        let mut args = vec![
            "--data",
            s(&data),
            "--split",
            "users",
            "--factors",
            "5",
            "--iterations",
            "2",
            "--quiet",
        ];
        if implicit {
            args.extend(["--implicit", "--alpha", "5"]);
        }
        args.extend(executor);
        let mut text = Vec::new();
        let o = run_train(&train_args(&args), &mut text).unwrap();
        (o, String::from_utf8(text).unwrap())
    };
    for implicit in [true, false] {
        let (local, text) = run(&["--in-process"], implicit);
        let (cluster, _) = run(&["--local", "2"], implicit);
        let d = &local.data;
        // floor(300 · 0.2) users held out whole; none is a training user.
        assert_eq!(d.held_out_users, Some(60));
        assert!(d.n_test > 0 && d.n_fold_in.unwrap() > d.n_test, "{d:?}");
        assert!(d.n_users <= 240);
        assert!(text.contains("60 users held out"), "{text}");
        assert_eq!(local.metrics["final"], cluster.metrics["final"], "implicit {implicit}");
        let key = if implicit { "ndcg@10" } else { "rmse" };
        assert!(local.metrics["final"][key].as_f64().unwrap() > 0.0);
        assert_eq!(local.metrics["data"]["held_out_users"], 60);
    }
}

#[test]
fn workers_that_read_the_input_train_the_single_process_model() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_csv(dir.path());
    // The same ratings with timestamps (ties among them), for the temporal split.
    let stamped = dir.path().join("stamped.csv");
    let mut text = String::from("user,item,rating,timestamp\n");
    for (r, line) in std::fs::read_to_string(&data).unwrap().lines().skip(1).enumerate() {
        text.push_str(&format!("{line},{}\n", r * 7919 % 50));
    }
    std::fs::write(&stamped, text).unwrap();
    // A test file of other ratings of mostly the same users and items.
    let test_file = dir.path().join("test.csv");
    let spec = SynthSpec {
        users: 320,
        items: 210,
        ratings: 900,
        rank: 4,
        seed: 9,
        ..SynthSpec::default()
    };
    write_csv(&spec, &test_file, |_| {}).unwrap();
    let out = dir.path().join("model");
    let run_on = |data: &Path, extra: &[&str]| {
        let mut args = vec![
            "--data",
            s(data),
            "--factors",
            "6",
            "--iterations",
            "3",
            "--quiet",
            "--out",
            s(&out),
            "--overwrite",
        ];
        args.extend(extra);
        run_train(&train_args(&args), &mut Vec::new())
    };
    let run = |extra: &[&str]| run_on(&data, extra);
    // The data as the metrics report it, but for the time it took to read.
    let data_of = |o: &TrainOutcome| {
        let mut d = o.metrics["data"].clone();
        d.as_object_mut().unwrap().remove("load_seconds");
        d
    };
    // The saved model's factors (a coordinator that read no ratings holds no model of its own).
    let bits = |_: &TrainOutcome| {
        let m = load_model(&out).unwrap();
        (
            m.user_factors().iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            m.item_factors().iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        )
    };
    // The evaluated run on a split the workers decide, then the refit on every row.
    for (input, extra) in [
        (&data, &["--split", "ratio"][..]),
        (&data, &["--split", "per-user", "--implicit", "--alpha", "5", "--solver", "cg"]),
        (&stamped, &["--split", "temporal", "--test-ratio", "0.25"]),
        (&data, &["--test", s(&test_file)]),
        (&data, &["--split", "users", "--implicit", "--alpha", "5"]),
        (&data, &["--split", "users", "--lambda", "0.1"]),
    ] {
        let single = run_on(input, &[extra, &["--in-process"]].concat()).unwrap();
        let want = bits(&single);
        assert!(single.data.n_test > 100, "{extra:?}: rows are held out");
        assert_eq!(single.data.held_out_users.is_some(), extra.contains(&"users"), "{extra:?}");
        for n in ["1", "3"] {
            let cluster =
                run_on(input, &[extra, &["--local", n, "--input-on-workers"]].concat()).unwrap_or_else(|e| panic!("{extra:?} {n}: {e:#}"));
            assert_eq!(single.metrics["final"], cluster.metrics["final"], "{extra:?}, {n} workers");
            assert_eq!(data_of(&single), data_of(&cluster), "{extra:?}, {n} workers");
            assert!(want == bits(&cluster), "{extra:?}, {n} workers: the factors differ");
            // No split reads ratings here (the workers fold held-out users in);
            // the refit on every rating reads none either, and leaves the model in its files.
            assert!(!cluster.read_input_here, "{extra:?}, {n} workers");
            assert!(cluster.model.is_none(), "{extra:?}, {n} workers");
        }
    }
    // Where the workers cannot build what the run needs, it is refused before anything is read.
    // Fewer users than blocks: the workers build as many blocks as the layout has.
    let few = dir.path().join("few.csv");
    std::fs::write(&few, "user,item,rating\n1,1,5\n1,2,3\n2,1,4\n3,3,2\n4,2,1\n4,3,5\n").unwrap();
    let single = run_on(&few, &["--no-test", "--in-process"]).unwrap();
    let cluster = run_on(&few, &["--no-test", "--local", "2", "--input-on-workers"]).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(bits(&single) == bits(&cluster), "4 users, 3 items: the factors differ");
    // Resumed with the flag kept: the workers build the blocks and take them with the
    // checkpoint's rows, the refit's too, and the model is the uninterrupted run's.
    let whole = run(&["--local", "2", "--input-on-workers"]).unwrap();
    let want = bits(&whole);
    let checkpoints = dir.path().join("checkpoints");
    let interrupted = |iterations: &str, extra: &[&str]| {
        let mut args = vec![
            "--data",
            s(&data),
            "--factors",
            "6",
            "--iterations",
            iterations,
            "--quiet",
            "--out",
            s(&out),
            "--overwrite",
            "--local",
            "2",
            "--input-on-workers",
            "--checkpoint-dir",
            s(&checkpoints),
        ];
        args.extend(extra);
        run_train(&train_args(&args), &mut Vec::new()).unwrap_or_else(|e| panic!("{extra:?}: {e:#}"))
    };
    interrupted("2", &[]);
    let resumed = interrupted("3", &["--resume"]);
    assert_eq!(resumed.result.reports.len(), 1, "one iteration after the checkpoint's two");
    assert!(want == bits(&resumed), "resumed: the factors differ from the uninterrupted run's");
    assert!(!resumed.read_input_here, "resumed: this coordinator read the input");
    assert_eq!(whole.metrics["final"], resumed.metrics["final"]);
    let e = format!(
        "{:#}",
        run(&["--in-process", "--input-on-workers"]).err().expect("refused in-process")
    );
    assert!(e.contains("needs workers"), "{e}");
    let e = format!(
        "{:#}",
        run_train(&train_args(&["--local", "2", "--input-on-workers", "--quiet"]), &mut Vec::new())
            .err()
            .unwrap()
    );
    assert!(e.contains("needs --data"), "{e}");
}

/// The model the workers write (each its blocks' rows, into the model's
/// files, and, where this coordinator holds no ids, their ids) is the
/// single-process model, file for file: the evaluated run's and the
/// refit's, biased explicit and implicit, blocks shipped or built by the
/// workers.
#[test]
fn the_model_the_workers_write_is_the_single_process_models_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_csv(dir.path());
    let run = |extra: &[&str], out: &Path| {
        let mut args = vec![
            "--data",
            s(&data),
            "--factors",
            "5",
            "--iterations",
            "3",
            "--quiet",
            "--out",
            s(out),
        ];
        args.extend(extra);
        run_train(&train_args(&args), &mut Vec::new()).unwrap_or_else(|e| panic!("{extra:?}: {e:#}"))
    };
    let implicit = ["--implicit", "--alpha", "5", "--solver", "cg", "--final-fit", "train"];
    // Who reads the input: the coordinator, which ships the blocks; the
    // workers, as asked; the workers by default, since they all can.
    for (case, extra, who_reads) in [
        ("explicit-refit", &[][..], &["--input-here"][..]),
        ("implicit-train", &implicit[..], &["--input-here"][..]),
        ("explicit-read-by-workers", &[][..], &["--input-on-workers"][..]),
        ("implicit-read-by-default", &implicit[..], &[][..]),
    ] {
        let on_workers = who_reads != ["--input-here"];
        let want = dir.path().join(format!("{case}-single"));
        let single = run(&[extra, &["--in-process"]].concat(), &want);
        assert!(!single.model_rows_by_workers, "{case}");
        let got = dir.path().join(format!("{case}-cluster"));
        let cluster = run(&[extra, who_reads, &["--local", "3"]].concat(), &got);
        assert!(cluster.model_rows_by_workers, "{case}: the workers wrote the rows");
        // And the ids, where this coordinator read none of the input.
        assert_eq!(cluster.model_ids_by_workers, on_workers, "{case}: the workers wrote the ids");
        let mut names: Vec<String> = std::fs::read_dir(&want)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "model.json")
            .collect();
        names.sort();
        assert!(
            names.len() >= 6 && names.contains(&"item_factors.npy".to_string()),
            "{case}: {names:?}"
        );
        for name in &names {
            let (a, b) = (std::fs::read(want.join(name)).unwrap(), std::fs::read(got.join(name)).ok());
            assert!(Some(a) == b, "{case}: {name} differs");
        }
        let json = |d: &Path| serde_json::from_slice::<serde_json::Value>(&std::fs::read(d.join("model.json")).unwrap()).unwrap();
        assert_eq!(json(&want)["files"], json(&got)["files"], "{case}");
        // A coordinator that read no ratings holds no model: only its files.
        assert_eq!(cluster.model.is_none(), on_workers, "{case}");
        assert_eq!(cluster.read_input_here, !on_workers, "{case}");
        let Some(m) = &cluster.model else { continue };
        // The saved rows are the ones the run reported (its `seen` keeps the ratings, the saved one not).
        let saved = load_model(&got).unwrap();
        assert!(
            saved.user_factors() == m.user_factors() && saved.item_factors() == m.item_factors(),
            "{case}"
        );
        assert!(saved.user_bias() == m.user_bias() && saved.item_bias() == m.item_bias(), "{case}");
        assert_eq!(saved.user_bias().is_some(), case.starts_with("explicit"), "{case}");
    }
}
