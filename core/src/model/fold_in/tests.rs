//! Fold-in equals the trainer's own solve for a user, handles unknown and
//! repeated items, and adds users as a new model version.

use super::*;
use crate::data::{Dataset, DuplicatePolicy};
use crate::model::ModelParts;
use crate::rng::SplitMix64;
use crate::side::{Factors, Side};
use crate::solve::Confidence;
use crate::train::{gram_by_blocks, train, HalfStepExecutor, ImplicitConfig, Layouts, LocalExecutor};

/// Low-rank ratings (1..5) or counts on a random third of the pairs.
fn raw(users: usize, items: usize, implicit: bool, seed: u64) -> RawRatings {
    let mut rng = SplitMix64::new(seed);
    let rank = 3;
    let u: Vec<f64> = (0..users * rank).map(|_| rng.next_normal()).collect();
    let v: Vec<f64> = (0..items * rank).map(|_| rng.next_normal()).collect();
    let mut r = RawRatings {
        source: "fold-in test".into(),
        user_tokens: (0..users).map(|x| format!("u{x}")).collect(),
        item_tokens: (0..items).map(|x| format!("i{x}")).collect(),
        ..Default::default()
    };
    for a in 0..users {
        for b in 0..items {
            if rng.next_f64() < 0.33 {
                let dot: f64 = (0..rank).map(|f| u[a * rank + f] * v[b * rank + f]).sum();
                r.users.push(a as u32);
                r.items.push(b as u32);
                r.ratings.push(if implicit {
                    dot.abs().round() as f32
                } else {
                    (3.0 + dot).clamp(1.0, 5.0) as f32
                });
            }
        }
    }
    r
}

struct Trained {
    ds: Dataset,
    model: Model,
    layouts: Layouts,
    params: SolveParams,
    users: Factors,
    items: Factors,
}

/// Train with the core API and build the model as the coordinator saves it.
fn trained(cfg: &TrainConfig, raw: &RawRatings) -> Trained {
    let all: Vec<usize> = (0..raw.len()).collect();
    let ds = Dataset::build((raw, &all), None, DuplicatePolicy::Last).unwrap();
    let layouts = Layouts::for_dataset(&ds, cfg.blocks);
    let mut exec = LocalExecutor::new(&ds, layouts.clone());
    let res = train(&ds, cfg, &mut exec, &layouts, None, &mut |_, _| Ok(())).unwrap();
    let (kind, global_mean) = match res.params.feedback {
        Feedback::Explicit { global_mean, .. } => (ModelKind::Explicit, global_mean),
        Feedback::Implicit { .. } => (ModelKind::Implicit, 0.0),
    };
    let biased = cfg.has_biases();
    let mut hyper = serde_json::to_value(cfg).unwrap();
    hyper["data_source"] = "test".into();
    let model = Model::new(ModelParts {
        kind,
        user_ids: ds.user_ids.clone(),
        item_ids: ds.item_ids.clone(),
        user_factors: res.state.users.matrix.clone(),
        item_factors: res.state.items.matrix.clone(),
        user_bias: biased.then(|| res.state.users.bias.clone()),
        item_bias: biased.then(|| res.state.items.bias.clone()),
        global_mean,
        rating_range: (kind == ModelKind::Explicit).then_some((1.0, 5.0)),
        seen: ds.by_user.clone(),
        hyperparameters: hyper,
        version: 1,
        ..Default::default()
    })
    .unwrap();
    Trained {
        model,
        layouts,
        params: res.params,
        users: res.state.users,
        items: res.state.items,
        ds,
    }
}

/// One more user half-step of the trainer (with `params`), against the final item factors.
fn next_user_half_step(t: &Trained, params: &SolveParams) -> Factors {
    let gram = matches!(params.feedback, Feedback::Implicit { .. }).then(|| gram_by_blocks(&t.items, &t.layouts.items));
    let mut users = t.users.clone();
    let mut exec = LocalExecutor::new(&t.ds, t.layouts.clone());
    exec.half_step(Side::Users, params, &t.items, gram.as_deref(), &mut users, None)
        .unwrap();
    users
}

/// A user's training history as (item id, value) pairs.
fn history_of(t: &Trained, u: usize) -> Vec<(String, f32)> {
    let (cols, vals) = t.ds.by_user.row(u);
    cols.iter()
        .zip(vals)
        .map(|(&i, &v)| (t.ds.item_ids[i as usize].clone(), v))
        .collect()
}

/// Fold in every user from their training history and compare with `want` (max abs diff ≤ 1e-5).
fn assert_fold_in_matches(t: &Trained, want: &Factors, warm: bool) {
    let fold = FoldIn::new(&t.model).unwrap();
    let mut max_diff = 0f32;
    for u in 0..t.ds.n_users() {
        let h = history_of(t, u);
        let start = t.users.row(u);
        let got = fold.fold_in(&t.model, &h, warm.then_some(start)).unwrap();
        assert_eq!(got.unknown, 0);
        assert_eq!(got.items, t.ds.by_user.row(u).0);
        for (a, b) in got.factors.iter().zip(want.row(u)) {
            max_diff = max_diff.max((a - b).abs());
        }
        max_diff = max_diff.max((got.bias - want.bias_of(u)).abs());
    }
    assert!(max_diff <= 1e-5, "fold-in differs from the trainer's solve by {max_diff}");
}

fn small_cfg() -> TrainConfig {
    TrainConfig {
        factors: 6,
        iterations: 4,
        blocks: 3,
        eval_every: 0,
        ..Default::default()
    }
}

#[test]
fn fold_in_equals_trainer_solve_explicit_biased_and_unbiased() {
    for biased in [true, false] {
        let cfg = TrainConfig { biased, ..small_cfg() };
        let t = trained(&cfg, &raw(40, 30, false, 7));
        let fold = FoldIn::new(&t.model).unwrap();
        assert_eq!(fold.params(), &t.params, "parameters rebuilt from the stored hyperparameters");
        let want = next_user_half_step(&t, &t.params);
        assert_fold_in_matches(&t, &want, false);
    }
}

#[test]
fn fold_in_equals_trainer_solve_implicit() {
    for confidence in [Confidence::Linear, Confidence::Log { epsilon: 0.5 }] {
        let implicit = Some(ImplicitConfig::hu(10.0, confidence));
        // Exact solves: the model's own solver.
        let cfg = TrainConfig { implicit, ..small_cfg() };
        let t = trained(&cfg, &raw(40, 30, true, 8));
        assert_eq!(FoldIn::new(&t.model).unwrap().params(), &t.params);
        assert_fold_in_matches(&t, &next_user_half_step(&t, &t.params), false);
        // CG: warm-started from the user's row it is the trainer's next CG half-step;
        // without a warm start it is the exact solve of the same equations.
        let cfg = TrainConfig {
            implicit,
            solver: SolverKind::Cg { steps: 3 },
            ..small_cfg()
        };
        let t = trained(&cfg, &raw(40, 30, true, 9));
        assert_fold_in_matches(&t, &next_user_half_step(&t, &t.params), true);
        let exact = SolveParams {
            solver: SolverKind::Cholesky,
            ..t.params
        };
        assert_fold_in_matches(&t, &next_user_half_step(&t, &exact), false);
    }
}

#[test]
fn unknown_items_are_skipped_and_counted_and_repeats_merge() {
    let cfg = TrainConfig {
        implicit: Some(ImplicitConfig::hu(5.0, Confidence::Linear)),
        ..small_cfg()
    };
    let t = trained(&cfg, &raw(30, 20, true, 3));
    let fold = FoldIn::new(&t.model).unwrap();
    let plain = fold.fold_in(&t.model, &[("i1", 2.0), ("i4", 1.0)], None).unwrap();
    // Unknown items change nothing but the count; repeats of an implicit item add up.
    let noisy = fold
        .fold_in(
            &t.model,
            &[("nope", 1.0), ("i4", 1.0), ("i1", 1.5), ("zzz", 3.0), ("i1", 0.5)],
            None,
        )
        .unwrap();
    assert_eq!(noisy.unknown, 2);
    assert_eq!(noisy.items, plain.items);
    // Values in the model's item order: i1 summed to 2.0, i4 1.0.
    let value_of = |id: &str| {
        noisy.values[noisy
            .items
            .iter()
            .position(|&i| i as usize == t.model.item_index(id).unwrap())
            .unwrap()]
    };
    assert_eq!((noisy.values.len(), value_of("i1"), value_of("i4")), (2, 2.0, 1.0));
    assert_eq!(noisy.factors, plain.factors);
    assert!(matches!(
        fold.fold_in(&t.model, &[("x", 1.0), ("y", 1.0)], None),
        Err(FoldInError::NoKnownItems { unknown: 2 })
    ));
    assert!(matches!(fold.fold_in::<&str>(&t.model, &[], None), Err(FoldInError::EmptyHistory)));
    let e = fold.fold_in(&t.model, &[("i1", -1.0)], None).unwrap_err();
    assert!(e.to_string().contains("item 'i1'") && e.to_string().contains("negative"), "{e}");
    let e = fold.fold_in(&t.model, &[("i1", f32::NAN)], None).unwrap_err();
    assert!(e.to_string().contains("not finite"), "{e}");

    // Explicit: the last rating of a repeated item wins, as the loader's default.
    let t = trained(&small_cfg(), &raw(30, 20, false, 4));
    let fold = FoldIn::new(&t.model).unwrap();
    let a = fold.fold_in(&t.model, &[("i2", 1.0), ("i3", 4.0), ("i2", 5.0)], None).unwrap();
    let b = fold.fold_in(&t.model, &[("i3", 4.0), ("i2", 5.0)], None).unwrap();
    assert_eq!((a.factors, a.bias, a.values), (b.factors, b.bias, b.values));
}

#[test]
fn hyperparameters_must_describe_the_model() {
    let t = trained(&small_cfg(), &raw(20, 15, false, 5));
    let changed = |change: &dyn Fn(&mut ModelParts)| {
        let mut p = t.model.clone().into_parts();
        change(&mut p);
        Model::new(p).unwrap()
    };
    let m = changed(&|p| p.hyperparameters = serde_json::json!({"factors": 6}));
    assert!(matches!(FoldIn::new(&m), Err(FoldInError::Hyperparameters(_))));
    let m = changed(&|p| p.hyperparameters["factors"] = 7.into());
    assert!(matches!(FoldIn::new(&m), Err(FoldInError::Inconsistent(_))));
    let m = changed(&|p| {
        p.kind = ModelKind::Implicit;
        (p.user_bias, p.item_bias, p.global_mean) = (None, None, 0.0);
    });
    assert!(matches!(FoldIn::new(&m), Err(FoldInError::Inconsistent(_))));
}

#[test]
fn fold_in_users_appends_new_users_and_refits_existing_ones() {
    let t = trained(&small_cfg(), &raw(30, 20, false, 6));
    let m = &t.model;
    let fold = FoldIn::new(m).unwrap();
    let mut add = RawRatings {
        source: "new.csv".into(),
        user_tokens: vec!["new1".into(), "u3".into(), "new2".into()],
        item_tokens: vec!["i0".into(), "i5".into(), "ghost".into()],
        ..Default::default()
    };
    for (u, i, r) in [(0, 0, 4.0), (1, 1, 2.0), (0, 1, 3.0), (2, 2, 5.0), (2, 0, 1.0), (1, 0, 5.0)] {
        add.users.push(u);
        add.items.push(i);
        add.ratings.push(r);
    }
    let (next, report) = fold_in_users(m, &add, None).unwrap();
    assert_eq!(
        report,
        FoldInReport {
            added: 2,
            refit: 1,
            unknown_items: 1
        }
    );
    assert_eq!(next.version(), m.version() + 1);
    assert_eq!(next.n_users(), m.n_users() + 2);
    assert_eq!(&next.user_ids()[m.n_users()..], ["new1", "new2"]);
    assert_eq!(next.user_factors().nrows(), next.n_users());
    assert_eq!(next.user_bias().unwrap().len(), next.n_users());
    assert_eq!(next.seen().n_rows(), next.n_users());
    // Rows equal the single-user fold-in; the refit user is warm-started from their row.
    let new1 = fold.fold_in(m, &[("i0", 4.0), ("i5", 3.0)], None).unwrap();
    let row = next.user_index("new1").unwrap();
    assert_eq!(next.user_factors().row(row).to_vec(), new1.factors);
    assert_eq!(next.user_bias().unwrap()[row], new1.bias);
    assert_eq!(next.seen().row(row).0, new1.items);
    let u3 = m.user_index("u3").unwrap();
    let refit = fold
        .fold_in(m, &[("i5", 2.0), ("i0", 5.0)], Some(&m.user_factors().row(u3).to_vec()))
        .unwrap();
    assert_eq!(next.user_factors().row(u3).to_vec(), refit.factors);
    let mut want_seen = vec![m.item_index("i0").unwrap() as u32, m.item_index("i5").unwrap() as u32];
    want_seen.sort_unstable();
    assert_eq!(next.seen().row(u3).0, want_seen);
    // Other users and all items are untouched.
    assert_eq!(next.user_factors().row(0), m.user_factors().row(0));
    assert_eq!(next.item_factors(), m.item_factors());
    // Saved and loaded back as a valid model directory.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m2");
    crate::model::save_model(&next, &path, false).unwrap();
    let back = crate::model::load_model(&path).unwrap();
    assert_eq!(back.version(), next.version());
    assert_eq!(back.user_ids(), next.user_ids());

    // A user whose items are all unknown stops the whole fold-in, naming them.
    let mut bad = add.clone();
    bad.users = vec![0, 2];
    bad.items = vec![2, 2];
    bad.ratings = vec![1.0, 1.0];
    let e = fold_in_users(m, &bad, None).unwrap_err();
    assert!(e.to_string().contains("user 'new1'"), "{e}");
}

#[test]
fn fold_in_users_merges_repeated_items_by_the_given_rule() {
    let t = trained(&small_cfg(), &raw(30, 20, false, 6));
    let m = &t.model;
    let fold = FoldIn::new(m).unwrap();
    let add = RawRatings {
        source: "new.csv".into(),
        user_tokens: vec!["new1".into()],
        item_tokens: vec!["i0".into(), "i5".into()],
        users: vec![0, 0, 0],
        items: vec![0, 1, 0],
        ratings: vec![4.0, 3.0, 1.0],
        ..Default::default()
    };
    let row_of = |policy| {
        let (next, _) = fold_in_users(m, &add, policy).unwrap();
        let u = next.user_index("new1").unwrap();
        next.user_factors().row(u).to_vec()
    };
    let want = |i0: f32| fold.fold_in(m, &[("i0", i0), ("i5", 3.0)], None).unwrap().factors;
    assert_eq!(row_of(Some(DuplicatePolicy::First)), want(4.0));
    assert_eq!(row_of(Some(DuplicatePolicy::Last)), want(1.0));
    assert_eq!(row_of(Some(DuplicatePolicy::Sum)), want(5.0));
    // No rule: explicit ratings keep the last, as training does by default.
    assert_eq!(row_of(None), want(1.0));
    assert_ne!(want(4.0), want(1.0));
}
