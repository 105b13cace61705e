//! The Gibbs loop: the model is the mean of the kept draws, the same for
//! any thread count, and it fits a low-rank matrix to its noise level.

use super::*;
use crate::data::DuplicatePolicy;
use crate::train::tests::low_rank_raw;

fn dataset(users: usize, items: usize, noise: f64, seed: u64) -> Dataset {
    let raw = low_rank_raw(users, items, 3, 0.3, noise, seed);
    let (test, train): (Vec<usize>, Vec<usize>) = (0..raw.len()).partition(|r| r % 5 == 0);
    Dataset::build((&raw, &train), Some((&raw, &test)), DuplicatePolicy::Last).unwrap()
}

fn gibbs(factors: usize, iterations: usize, burn_in: usize, noise_precision: f32) -> TrainConfig {
    TrainConfig {
        factors,
        iterations,
        learner: Learner::Gibbs { burn_in, noise_precision },
        clip_predictions: false,
        ..Default::default()
    }
}

#[test]
fn the_model_is_the_mean_of_the_draws_after_burn_in() {
    let ds = dataset(60, 40, 0.3, 1);
    let cfg = gibbs(4, 7, 3, 2.0);
    let mut draws: Vec<TrainState> = Vec::new();
    let res = train_gibbs(&ds, &cfg, None, &mut |_, s| {
        draws.push(s.get()?.clone());
        Ok(())
    })
    .unwrap();
    assert_eq!(draws.len(), 7);
    // Draws differ from one another: they are samples, not a fixed point.
    assert_ne!(draws[5].users, draws[6].users);
    let mean = |pick: fn(&TrainState) -> &Factors| {
        let kept = &draws[3..];
        let mut f = pick(&kept[0]).clone();
        for (j, v) in f.flat_mut().iter_mut().enumerate() {
            *v = (kept.iter().map(|s| pick(s).flat()[j] as f64).sum::<f64>() / kept.len() as f64) as f32;
        }
        for (j, v) in f.bias.iter_mut().enumerate() {
            *v = (kept.iter().map(|s| pick(s).bias[j] as f64).sum::<f64>() / kept.len() as f64) as f32;
        }
        f
    };
    assert_eq!(res.state.users, mean(|s| &s.users));
    assert_eq!(res.state.items, mean(|s| &s.items));
    assert_eq!(res.state.iterations_done, 7);
    assert!(res.reports.iter().all(|r| r.objective.is_none() && r.train_rmse.is_some()));
}

#[test]
fn draws_do_not_depend_on_the_thread_count() {
    let ds = dataset(90, 70, 0.3, 2);
    // 90 users make three row tasks of 32, so threads split the rows.
    let cfg = gibbs(5, 4, 1, 2.0);
    let run = |threads| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| train_gibbs(&ds, &cfg, None, &mut |_, _| Ok(())).unwrap().state)
    };
    let one = run(1);
    assert_eq!(one, run(2));
    assert_eq!(one, run(3));
    let other_seed = TrainConfig { seed: 7, ..cfg.clone() };
    let drawn_again = train_gibbs(&ds, &other_seed, None, &mut |_, _| Ok(())).unwrap().state;
    assert_ne!(one.users, drawn_again.users, "the seed chooses the draws");
}

#[test]
fn the_posterior_mean_fits_a_low_rank_matrix_to_its_noise_level() {
    let noise = 0.1;
    let raw = low_rank_raw(300, 200, 3, 0.5, noise, 3);
    let (test, train): (Vec<usize>, Vec<usize>) = (0..raw.len()).partition(|r| r % 5 == 0);
    let ds = Dataset::build((&raw, &train), Some((&raw, &test)), DuplicatePolicy::Last).unwrap();
    // The noise precision the data has: 1/σ².
    let cfg = gibbs(3, 40, 10, (1.0 / (noise * noise)) as f32);
    let res = train_gibbs(&ds, &cfg, None, &mut |_, _| Ok(())).unwrap();
    let rmse = res.final_metrics.rmse.unwrap();
    assert!(rmse < noise * 1.15, "test RMSE {rmse} against noise {noise}");
}

#[test]
fn bad_settings_and_a_resumed_chain_are_refused() {
    let ds = dataset(30, 20, 0.3, 4);
    let no_draws = gibbs(3, 5, 5, 2.0);
    let e = train_gibbs(&ds, &no_draws, None, &mut |_, _| Ok(())).err().unwrap();
    assert!(e.to_string().contains("learner.burn_in must be below the iterations (5)"), "{e}");
    let bad_noise = gibbs(3, 5, 1, 0.0);
    let e = train_gibbs(&ds, &bad_noise, None, &mut |_, _| Ok(())).err().unwrap();
    assert!(e.to_string().contains("learner.noise_precision must be > 0"), "{e}");
    let implicit = TrainConfig {
        implicit: Some(crate::train::ImplicitConfig::hu(1.0, crate::solve::Confidence::Linear)),
        ..gibbs(3, 5, 1, 2.0)
    };
    let e = train_gibbs(&ds, &implicit, None, &mut |_, _| Ok(())).err().unwrap();
    assert!(e.to_string().contains("gibbs samples explicit ratings only"), "{e}");
    let cfg = gibbs(3, 5, 1, 2.0);
    let mut started = initial_state(&ds, &cfg);
    started.iterations_done = 2;
    let e = train_gibbs(&ds, &cfg, Some(started), &mut |_, _| Ok(())).err().unwrap();
    assert!(e.to_string().contains("cannot resume"), "{e}");
}
