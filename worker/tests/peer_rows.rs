//! Rows that peers send (peer exchange) give the worker the same fixed side,
//! and so the same solve, as a push of every row from the coordinator; and
//! every row a peer sends is checked: needed here, not this worker's own,
//! sent once, finite, for a step still to come.

mod common;

use als_core::side::Side;
use als_proto::codec::{f32_bytes, Bytes};
use als_worker::job::{FixedFactors, Job, JobError, PeerRows};
use common::{gram, job_with_solved_items, params, rated, ITEMS};

/// The item rows user block 0 needs.
fn needed_items() -> Vec<u32> {
    (0..ITEMS).filter(|&i| (0..6).any(|u| rated(u, i).is_some())).collect()
}

/// A stand-in for the master copy of item row i outside block 1.
fn other_row(i: u32, k: usize) -> Vec<f32> {
    (0..k).map(|j| 0.3 - 0.07 * (i as usize * k + j) as f32).collect()
}

fn peer(rows: &[u32], k: usize, biased: bool, step: u64) -> PeerRows {
    let factors: Vec<f32> = rows.iter().flat_map(|&i| other_row(i, k)).collect();
    let bias: Vec<f32> = rows.iter().map(|&i| -0.1 * i as f32).collect();
    PeerRows {
        side: Side::Items,
        step,
        epoch: 1,
        rows: rows.to_vec(),
        factors: vec![Bytes::from(f32_bytes(&factors))],
        bias: if biased { vec![Bytes::from(f32_bytes(&bias))] } else { Vec::new() },
    }
}

fn solve_users(job: &mut Job) -> Vec<f32> {
    let out = std::sync::Mutex::new(Vec::new());
    job.solve(Side::Users, 2, None, &|b| out.lock().unwrap().extend_from_slice(b.factors))
        .unwrap();
    out.into_inner().unwrap()
}

#[test]
fn rows_from_peers_solve_as_a_full_push() {
    for implicit in [false, true] {
        let p = params(implicit);
        let (k, biased) = (p.factors, !implicit);
        // Item block 1 (items 3..5) is this worker's own; the other needed items come from two peers.
        let (mut pushed_job, solved, solved_bias) = job_with_solved_items(p, false);
        let (mut peer_job, _, _) = job_with_solved_items(p, false);
        peer_job.set_route(Side::Items, 1, "peer-a".into(), vec![3, 4]).unwrap();
        let needed = needed_items();
        let own = |i: u32| (3..5).contains(&i);
        let full: Vec<f32> = needed
            .iter()
            .flat_map(|&i| match own(i) {
                true => solved[(i as usize - 3) * k..(i as usize - 2) * k].to_vec(),
                false => other_row(i, k),
            })
            .collect();
        let full_bias: Vec<f32> = match biased {
            true => needed
                .iter()
                .map(|&i| if own(i) { solved_bias[i as usize - 3] } else { -0.1 * i as f32 })
                .collect(),
            false => Vec::new(),
        };
        pushed_job
            .set_fixed(FixedFactors {
                side: Side::Items,
                step: 2,
                factors: full,
                bias: full_bias,
                gram: gram(&p),
            })
            .unwrap();
        let want = solve_users(&mut pushed_job);

        let low: Vec<u32> = needed.iter().copied().filter(|&i| i < 3).collect();
        let high: Vec<u32> = needed.iter().copied().filter(|&i| i >= 5).collect();
        assert!(!low.is_empty() && !high.is_empty());
        // The second peer's rows arrive first; a fast peer's rows for a later step wait.
        peer_job.add_peer_rows(peer(&high, k, biased, 2)).unwrap();
        peer_job.add_peer_rows(peer(&[0], k, biased, 3)).unwrap();
        let e = peer_job.set_fixed_from_peers(Side::Items, 2, gram(&p)).unwrap_err();
        assert!(matches!(e, JobError::NotReady(_)), "rows missing: {e}");
        peer_job.add_peer_rows(peer(&low, k, biased, 2)).unwrap();
        peer_job.set_fixed_from_peers(Side::Items, 2, gram(&p)).unwrap();
        assert_eq!(solve_users(&mut peer_job), want, "implicit={implicit}");
    }
}

#[test]
fn what_a_peer_sends_is_checked() {
    let p = params(false);
    let k = p.factors;
    let (mut job, _, _) = job_with_solved_items(p, false);
    job.set_route(Side::Items, 1, "peer-a".into(), vec![4]).unwrap();
    let needed = needed_items();
    let not_needed: Vec<u32> = (0..ITEMS).filter(|i| !needed.contains(i)).collect();
    let invalid = |job: &mut Job, rows: PeerRows, why: &str| {
        let e = job.add_peer_rows(rows).unwrap_err();
        assert!(matches!(e, JobError::Invalid(_)), "{why}: {e}");
    };
    if let Some(&i) = not_needed.first() {
        invalid(&mut job, peer(&[i], k, true, 2), "a row nobody here needs");
    }
    invalid(&mut job, peer(&[3], k, true, 2), "a row of this worker's own block");
    invalid(&mut job, peer(&[2, 0], k, true, 2), "rows out of order");
    job.add_peer_rows(peer(&[0], k, true, 2)).unwrap();
    invalid(&mut job, peer(&[0], k, true, 2), "a row sent twice");
    // A row with a non-finite value, and values that do not match the rows.
    let mut bad = peer(&[2], k, true, 2);
    let mut f = other_row(2, k);
    f[1] = f32::NAN;
    bad.factors = vec![Bytes::from(f32_bytes(&f))];
    invalid(&mut job, bad, "a NaN factor");
    let mut short = peer(&[2], k, true, 2);
    short.factors = vec![Bytes::from(f32_bytes(&other_row(2, k)[..k - 1]))];
    invalid(&mut job, short, "too few values");
    // Rows for step 4 make step 2's stale.
    job.add_peer_rows(peer(&[0], k, true, 4)).unwrap();
    invalid(&mut job, peer(&[2], k, true, 2), "a step already past");
    // Rows sent on other routes than the latest: refused, and a new epoch voids what came before.
    let mut stale = peer(&[2], k, true, 4);
    stale.epoch = 0;
    assert!(matches!(job.add_peer_rows(stale), Err(JobError::NotReady(_))));
    job.set_route(Side::Items, 2, "peer-a".into(), vec![4]).unwrap();
    let e = job.add_peer_rows(peer(&[2], k, true, 4)).unwrap_err();
    assert!(matches!(e, JobError::NotReady(_)), "{e}");
    let mut fresh = peer(&[0], k, true, 4);
    fresh.epoch = 2;
    job.add_peer_rows(fresh).expect("row 0 again, on the new routes");
    // A route must stay inside this worker's blocks and ascend.
    for rows in [vec![0u32], vec![4, 3], vec![ITEMS]] {
        let e = job.set_route(Side::Items, 2, "peer-b".into(), rows.clone()).unwrap_err();
        assert!(matches!(e, JobError::Invalid(_)), "{rows:?}: {e}");
    }
    assert!(job.set_route(Side::Items, 1, "peer-b".into(), vec![3]).is_err(), "an older epoch");
    // Limits come from the header: at most the rows needed here.
    let e = job.peer_limits(Side::Items, 5, needed.len() as u32 + 1).unwrap_err();
    assert!(matches!(e, JobError::Invalid(_)), "{e}");
    assert_eq!(job.peer_limits(Side::Items, 5, 2).unwrap().factors, (2 * k * 4) as u64);
}
