//! Rows that peers send (peer exchange) give the worker the same fixed side,
//! and so the same solve, as a push of every row from the coordinator; and
//! every row a peer sends is checked: needed here, not this worker's own,
//! sent once, finite, for a step still to come.

mod common;

use als_core::side::Side;
use als_core::solve::SolveParams;
use als_proto::codec::{f32_bytes, Bytes};
use als_worker::job::{Assignment, DirectRows, FixedFactors, Job, JobError, PeerRows, RowsFor};
use common::{gram, job_with_solved_items, params, rated, ITEMS, USERS};

/// The item rows user block 0 needs.
fn needed_items() -> Vec<u32> {
    (0..ITEMS).filter(|&i| (0..6).any(|u| rated(u, i).is_some())).collect()
}

/// A stand-in for the master copy of item row i outside block 1.
fn other_row(i: u32, k: usize) -> Vec<f32> {
    (0..k).map(|j| 0.3 - 0.07 * (i as usize * k + j) as f32).collect()
}

fn peer(rows: &[u32], k: usize, biased: bool, step: u64) -> PeerRows {
    peer_scaled(rows, k, biased, step, 1.0)
}

/// [`peer`] with every value times `scale`.
fn peer_scaled(rows: &[u32], k: usize, biased: bool, step: u64, scale: f32) -> PeerRows {
    let factors: Vec<f32> = rows.iter().flat_map(|&i| other_row(i, k)).map(|v| v * scale).collect();
    let bias: Vec<f32> = rows.iter().map(|&i| -0.1 * i as f32 * scale).collect();
    PeerRows {
        to: RowsFor::Half(Side::Items),
        step,
        epoch: 1,
        rows: rows.to_vec(),
        factors: vec![Bytes::from(f32_bytes(&factors))],
        bias: if biased { vec![Bytes::from(f32_bytes(&bias))] } else { Vec::new() },
    }
}

fn solve_users(job: &mut Job) -> Vec<f32> {
    solve_at(job, Side::Users, 2).0
}

/// Solve `side` at `step`; the rows of every block, and of item block 1 with its bias.
fn solve_at(job: &mut Job, side: Side, step: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let out = std::sync::Mutex::new((Vec::new(), Vec::new(), Vec::new()));
    job.solve(side, step, None, &|b| {
        let mut o = out.lock().unwrap();
        o.0.extend_from_slice(b.factors);
        if side == Side::Items && b.block == 1 {
            o.1.extend_from_slice(b.factors);
            o.2.extend_from_slice(b.bias);
        }
    })
    .unwrap();
    out.into_inner().unwrap()
}

/// The needed item rows as a full push would lay them: item block 1's
/// (items 3..5) from `own`, the others from a peer, times `scale`.
fn full_items(k: usize, biased: bool, own: (&[f32], &[f32]), scale: f32) -> (Vec<f32>, Vec<f32>) {
    let is_own = |i: u32| (3..5).contains(&i);
    let needed = needed_items();
    let factors = needed
        .iter()
        .flat_map(|&i| match is_own(i) {
            true => own.0[(i as usize - 3) * k..(i as usize - 2) * k].to_vec(),
            false => other_row(i, k).into_iter().map(|v| v * scale).collect(),
        })
        .collect();
    let bias = match biased {
        true => needed
            .iter()
            .map(|&i| {
                if is_own(i) {
                    own.1[i as usize - 3]
                } else {
                    -0.1 * i as f32 * scale
                }
            })
            .collect(),
        false => Vec::new(),
    };
    (factors, bias)
}

/// Push items `(factors, bias)` to `job` for `step`.
fn push_items(job: &mut Job, step: u64, (factors, bias): (Vec<f32>, Vec<f32>), p: &SolveParams) {
    job.set_fixed(FixedFactors {
        side: Side::Items,
        step,
        factors,
        bias,
        gram: gram(p),
    })
    .unwrap();
}

/// Two jobs with item block 1 solved at step 1: one pushed every needed
/// item for step 2, one with a route for its own items, to take the rest from peers.
fn two_jobs_at_step_2(implicit: bool) -> (SolveParams, Job, Job) {
    let p = params(implicit);
    let (mut pushed_job, solved, solved_bias) = job_with_solved_items(p, false);
    let (mut peer_job, _, _) = job_with_solved_items(p, false);
    peer_job
        .set_route(RowsFor::Half(Side::Items), 1, "peer-a".into(), vec![3, 4])
        .unwrap();
    push_items(
        &mut pushed_job,
        2,
        full_items(p.factors, !implicit, (&solved, &solved_bias), 1.0),
        &p,
    );
    (p, pushed_job, peer_job)
}

/// A fixed side's buffers, done with, take that side's next rows from peers:
/// what a step before left in them never reaches a solve.
#[test]
fn rows_from_peers_into_a_used_buffer_solve_as_a_full_push() {
    for implicit in [false, true] {
        let (p, mut pushed_job, mut peer_job) = two_jobs_at_step_2(implicit);
        let (k, biased) = (p.factors, !implicit);
        let others: Vec<u32> = needed_items().into_iter().filter(|i| !(3..5).contains(i)).collect();
        // Step 2: items from peers (the first use of an inbox) and from a full push.
        peer_job.add_peer_rows(peer_scaled(&others, k, biased, 2, 1.0)).unwrap();
        peer_job.set_fixed_from_peers(Side::Items, 2, gram(&p)).unwrap();
        assert_eq!(solve_at(&mut peer_job, Side::Users, 2), solve_at(&mut pushed_job, Side::Users, 2));
        // Step 3: the same users pushed to both; the items solved again.
        let n = pushed_job.needed_fixed_rows(Side::Users);
        let users = |job: &mut Job| {
            job.set_fixed(FixedFactors {
                side: Side::Users,
                step: 3,
                factors: (0..n * k).map(|x| 0.03 * (x % 13) as f32 - 0.1).collect(),
                bias: if biased { vec![-0.05; n] } else { Vec::new() },
                gram: gram(&p),
            })
            .unwrap();
            solve_at(job, Side::Items, 3)
        };
        let (_, own, own_bias) = users(&mut pushed_job);
        assert_eq!(users(&mut peer_job).1, own);
        // Step 4: other values from the peer, into the buffer step 2's items left.
        push_items(&mut pushed_job, 4, full_items(k, biased, (&own, &own_bias), -2.5), &p);
        peer_job.add_peer_rows(peer_scaled(&others, k, biased, 4, -2.5)).unwrap();
        peer_job.set_fixed_from_peers(Side::Items, 4, gram(&p)).unwrap();
        let want = solve_at(&mut pushed_job, Side::Users, 4);
        assert_eq!(solve_at(&mut peer_job, Side::Users, 4), want, "implicit={implicit}");
        // The items' buffers are held for the next rows from peers, and
        // counted; without exchange they are let go.
        let held = peer_job.held_bytes();
        peer_job.forget_spares();
        let items = (needed_items().len() * k * 4) as u64;
        assert!(
            peer_job.held_bytes() + items <= held,
            "{} + {items} > {held}",
            peer_job.held_bytes()
        );
    }
}

#[test]
fn rows_from_peers_solve_as_a_full_push() {
    for implicit in [false, true] {
        // Item block 1 (items 3..5) is this worker's own; the other needed items come from two peers.
        let (p, mut pushed_job, mut peer_job) = two_jobs_at_step_2(implicit);
        let (k, biased) = (p.factors, !implicit);
        let needed = needed_items();
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

/// A stand-in for a peer's solved block holding every item: rows from
/// [`other_row`], biases as [`peer_scaled`] gives them.
fn peer_block(k: usize, biased: bool) -> (Vec<f32>, Vec<f32>) {
    let factors = (0..ITEMS).flat_map(|i| other_row(i, k)).collect();
    let bias = if biased {
        (0..ITEMS).map(|i| -0.1 * i as f32).collect()
    } else {
        Vec::new()
    };
    (factors, bias)
}

fn direct<'a>(rows: &'a [u32], (factors, bias): &'a (Vec<f32>, Vec<f32>), step: u64) -> DirectRows<'a> {
    DirectRows {
        to: RowsFor::Half(Side::Items),
        step,
        epoch: 1,
        rows,
        row_start: 0,
        factors,
        bias,
    }
}

/// Rows a worker of this process hands over in place give the fixed side,
/// and the solve, that the same rows sent as messages give.
#[test]
fn rows_handed_over_in_place_solve_as_rows_sent() {
    for implicit in [false, true] {
        let (p, mut pushed_job, mut peer_job) = two_jobs_at_step_2(implicit);
        let (k, biased) = (p.factors, !implicit);
        let want = solve_users(&mut pushed_job);
        let block = peer_block(k, biased);
        let needed = needed_items();
        let low: Vec<u32> = needed.iter().copied().filter(|&i| i < 3).collect();
        let high: Vec<u32> = needed.iter().copied().filter(|&i| i >= 5).collect();
        peer_job.add_direct_rows(&direct(&high, &block, 2)).unwrap();
        peer_job.add_peer_rows(peer(&low, k, biased, 2)).unwrap();
        peer_job.set_fixed_from_peers(Side::Items, 2, gram(&p)).unwrap();
        assert_eq!(solve_users(&mut peer_job), want, "implicit={implicit}");
    }
}

#[test]
fn what_a_worker_of_this_process_hands_over_is_checked() {
    let p = params(false);
    let k = p.factors;
    let (mut job, _, _) = job_with_solved_items(p, false);
    job.set_route(RowsFor::Half(Side::Items), 1, "peer-a".into(), vec![4]).unwrap();
    let block = peer_block(k, true);
    let needed = needed_items();
    let invalid = |job: &mut Job, d: DirectRows, why: &str| {
        let e = job.add_direct_rows(&d).unwrap_err();
        assert!(matches!(e, JobError::Invalid(_)), "{why}: {e}");
    };
    if let Some(i) = (0..ITEMS).find(|i| !needed.contains(i)) {
        invalid(&mut job, direct(&[i], &block, 2), "a row nobody here needs");
    }
    invalid(&mut job, direct(&[3], &block, 2), "a row of this worker's own block");
    invalid(&mut job, direct(&[2, 0], &block, 2), "rows out of order");
    let mut outside = direct(&[2], &block, 2);
    outside.row_start = 3;
    invalid(&mut job, outside, "a row outside the block");
    let mut nan = block.clone();
    nan.0[2 * k + 1] = f32::NAN;
    invalid(&mut job, direct(&[2], &nan, 2), "a NaN factor");
    let mut inf_bias = block.clone();
    inf_bias.1[2] = f32::INFINITY;
    invalid(&mut job, direct(&[2], &inf_bias, 2), "an infinite bias");
    let unbiased = peer_block(k, false);
    invalid(&mut job, direct(&[2], &unbiased, 2), "no biases for a biased model");
    job.add_direct_rows(&direct(&[0], &block, 2)).unwrap();
    invalid(&mut job, direct(&[0], &block, 2), "a row handed over twice");
    let mut stale = direct(&[2], &block, 2);
    stale.epoch = 0;
    assert!(matches!(job.add_direct_rows(&stale), Err(JobError::NotReady(_))));
    // The checks refused without taking: row 2 is still to come.
    job.add_direct_rows(&direct(&[2], &block, 2)).unwrap();
}

#[test]
fn what_a_peer_sends_is_checked() {
    let p = params(false);
    let k = p.factors;
    let (mut job, _, _) = job_with_solved_items(p, false);
    job.set_route(RowsFor::Half(Side::Items), 1, "peer-a".into(), vec![4]).unwrap();
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
    job.set_route(RowsFor::Half(Side::Items), 2, "peer-a".into(), vec![4]).unwrap();
    let e = job.add_peer_rows(peer(&[2], k, true, 4)).unwrap_err();
    assert!(matches!(e, JobError::NotReady(_)), "{e}");
    let mut fresh = peer(&[0], k, true, 4);
    fresh.epoch = 2;
    job.add_peer_rows(fresh).expect("row 0 again, on the new routes");
    // A route must stay inside this worker's blocks and ascend.
    for rows in [vec![0u32], vec![4, 3], vec![ITEMS]] {
        let e = job
            .set_route(RowsFor::Half(Side::Items), 2, "peer-b".into(), rows.clone())
            .unwrap_err();
        assert!(matches!(e, JobError::Invalid(_)), "{rows:?}: {e}");
    }
    assert!(
        job.set_route(RowsFor::Half(Side::Items), 1, "peer-b".into(), vec![3]).is_err(),
        "an older epoch"
    );
    // Limits come from the header: at most the rows needed here.
    let e = job.peer_limits(RowsFor::Half(Side::Items), 5, needed.len() as u32 + 1).unwrap_err();
    assert!(matches!(e, JobError::Invalid(_)), "{e}");
    assert_eq!(
        job.peer_limits(RowsFor::Half(Side::Items), 5, 2).unwrap().factors,
        (2 * k * 4) as u64
    );
}

/// Under an assignment, a worker asks each peer for exactly the rows of the
/// peer's blocks that its own blocks need (none of its own), per side, and
/// for its evaluation (nothing without test rows); and it refuses an
/// assignment that does not match what it holds.
#[test]
fn a_worker_asks_each_peer_for_exactly_the_rows_its_blocks_need() {
    let p = params(false);
    // This worker (0) holds users 0..6 and items 3..5.
    let (job, _, _) = job_with_solved_items(p, false);
    let assignment = Assignment {
        epoch: 3,
        // Users: 0..6 here, 6..10 at peer 1. Items: 0..3 at peer 1, 3..5 here, 5..8 at peer 2.
        owners: [vec![0, 1], vec![1, 0, 2]],
        starts: [vec![0, 6, 10], vec![0, 3, 5, 8]],
        workers: vec!["w0:1".into(), "w1:1".into(), "w2:1".into()],
        me: 0,
    };
    let subs = job.subscriptions(&assignment).unwrap();
    let users_needed: Vec<u32> = (0..USERS).filter(|&u| (3..5).any(|i| rated(u, i).is_some())).collect();
    let items_needed = needed_items();
    let want = |peer: &str, users: std::ops::Range<u32>, items: std::ops::Range<u32>| {
        (
            peer.to_string(),
            vec![
                (
                    RowsFor::Half(Side::Users),
                    users_needed.iter().copied().filter(|u| users.contains(u)).collect(),
                ),
                (
                    RowsFor::Half(Side::Items),
                    items_needed.iter().copied().filter(|i| items.contains(i)).collect(),
                ),
                (RowsFor::Evaluation, Vec::new()),
            ],
        )
    };
    assert_eq!(subs, vec![want("w1:1", 6..10, 0..3), want("w2:1", 0..0, 5..8)]);
    assert!(!subs[0].1[0].1.is_empty() && !subs[1].1[1].1.is_empty(), "the case asks for rows");

    // A lost worker (no address) is asked for nothing, and owns nothing.
    let mut lost = assignment.clone();
    lost.workers[2] = String::new();
    lost.owners[1][2] = 1;
    let subs = job.subscriptions(&lost).unwrap();
    assert_eq!(subs.len(), 1);
    assert_eq!(
        subs[0].1[1].1,
        items_needed.iter().copied().filter(|&i| !(3..5).contains(&i)).collect::<Vec<_>>()
    );

    let refused = |a: Assignment, why: &str| {
        let e = job.subscriptions(&a).unwrap_err();
        assert!(matches!(e, JobError::Invalid(_)), "{why}: {e}");
    };
    let mut a = assignment.clone();
    a.owners[0][0] = 1;
    refused(a, "a block held here given to a peer");
    let mut a = assignment.clone();
    a.starts[1] = vec![0, 3, 5, 7];
    refused(a, "blocks that stop short of the items");
    let mut a = assignment.clone();
    a.starts[0] = vec![0, 5, 10];
    refused(a, "a held block's rows moved");
    let mut a = assignment.clone();
    a.owners[1][2] = 7;
    refused(a, "an owner that is no worker");
    let mut a = assignment.clone();
    a.workers[2] = String::new();
    refused(a, "a block owned by a lost worker");
    let mut a = assignment.clone();
    a.me = 3;
    refused(a, "this worker is not in the list");
    let mut a = assignment;
    a.owners[1].pop();
    refused(a, "fewer owners than blocks");
}
