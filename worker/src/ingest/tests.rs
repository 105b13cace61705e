//! A worker takes rows only for the blocks it builds, in the step that
//! expects them, within its budget, each place once; steps run in order.

use super::*;
use als_core::data::select::temporal_key;

fn owners(blocks: usize) -> Owners {
    Owners {
        workers: vec!["inproc:a".into(), "inproc:b".into()],
        owners: (0..blocks as u32).map(|b| b % 2).collect(),
    }
}

/// Worker 0 of two, holding share 0 of 2 of a small file.
fn started(budget: u64) -> (tempfile::TempDir, Result<Ingest, JobError>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.csv");
    let text: String = (0..400).map(|r| format!("{},{},{}\n", r % 37, r % 11, 1 + r % 5)).collect();
    std::fs::write(&path, text).unwrap();
    let share = Share { index: 0, count: 2 };
    let input = ShareToRead {
        path,
        opts: LoadOptions::default(),
        test: None,
        share,
    };
    let i = Ingest::read_share("j".into(), budget, &input, 4, (owners(4), owners(4)), 0);
    (dir, i)
}

fn chunk(to_items: bool, block: u32, places: &[u64]) -> IngestRowsChunk {
    let ids = vec!["u".to_string(), "i".to_string()];
    let mut c = match to_items {
        false => {
            let rows = places
                .iter()
                .map(|&place| als_core::data::ingest::RoutedRow {
                    place,
                    user: 0,
                    item: 1,
                    value: 1.0,
                    test: false,
                })
                .collect();
            rows::routed_chunks("j", block, &RoutedPart { ids, rows })
        }
        true => {
            let rows = places
                .iter()
                .map(|&place| als_core::data::ingest::ItemBoundRow {
                    user: place as u32,
                    item: 1,
                    value: 1.0,
                })
                .collect();
            rows::item_bound_chunks("j", block, &ItemBoundPart { ids, rows })
        }
    };
    c.remove(0)
}

#[test]
fn rows_are_taken_only_for_blocks_built_here_in_the_step_that_expects_them() {
    let (_d, i) = started(1 << 30);
    let mut i = i.unwrap();
    let e = i.receive(&[chunk(false, 1, &[0])]).unwrap_err();
    assert!(
        matches!(&e, JobError::Invalid(m) if m.contains("user block 1 is not built on this worker")),
        "{e:?}"
    );
    let e = i.receive(&[chunk(true, 0, &[0])]).unwrap_err();
    assert!(matches!(&e, JobError::NotReady(m) if m.contains("rows for item blocks")), "{e:?}");
    let e = i.number_users(true, false).unwrap_err();
    assert!(matches!(e, JobError::NotReady(_)), "{e:?}");
    let e = i.look_up(0, &["i".into()]).unwrap_err();
    assert!(matches!(e, JobError::NotReady(_)), "{e:?}");
    // A share that does not fit the input is refused.
    let e = i.route_share((390, 0), 400, None).unwrap_err();
    assert!(matches!(&e, JobError::Invalid(m) if m.contains("does not fit")), "{e:?}");
}

#[test]
fn a_place_sent_twice_or_past_the_input_is_refused_when_the_block_is_gathered() {
    for places in [&[5u64, 5][..], &[10_000]] {
        let (_d, i) = started(1 << 30);
        let mut i = i.unwrap();
        let out = i.route_share((0, 0), 400, None).unwrap();
        assert!(out.iter().all(|(to, _)| to == "inproc:b"), "rows of worker 0's own blocks stay");
        i.receive(&[chunk(false, 0, places)]).unwrap();
        let e = i.gather_users(None).unwrap_err();
        assert!(
            matches!(&e, JobError::Invalid(m) if m.contains("repeated or outside")),
            "{places:?}: {e:?}"
        );
    }
}

#[test]
fn rows_past_the_budget_are_refused() {
    let (_d, i) = started(100);
    assert!(matches!(i.err(), Some(JobError::OverBudget(_))), "a share over the budget");
    let (_d, i) = started(1 << 30);
    let mut i = i.unwrap();
    i.route_share((0, 0), 400, None).unwrap();
    i.budget = i.held + 10;
    let e = i.receive(&[chunk(false, 0, &[300, 301])]).unwrap_err();
    assert!(matches!(e, JobError::OverBudget(_)), "{e:?}");
}

#[test]
fn settings_from_the_wire_are_checked() {
    let spec = |f: &dyn Fn(&mut InputSpec)| {
        let mut s = InputSpec {
            path: "x".into(),
            format: "csv".into(),
            max_id_len: 64,
            ..Default::default()
        };
        f(&mut s);
        load_options(&s)
    };
    assert!(spec(&|_| {}).is_ok());
    assert!(spec(&|s| s.format = "parquet".into()).is_err());
    assert!(spec(&|s| s.max_id_len = 0).is_err());
    assert!(spec(&|s| s.max_id_len = 1 << 20).is_err());
    let rule = |kind: Kind, frac: f64, folds: u32, fold: u32| {
        rule_of(Some(&SplitRule {
            kind: kind as i32,
            test_frac: frac,
            seed: 1,
            folds,
            fold,
            ..Default::default()
        }))
    };
    assert!(rule(Kind::Ratio, 0.2, 0, 0).is_ok());
    assert!(rule(Kind::Ratio, 1.5, 0, 0).is_err());
    assert!(rule(Kind::PerUser, f64::NAN, 0, 0).is_err());
    assert!(rule(Kind::KFold, 0.0, 4, 4).is_err());
    assert!(rule(Kind::KFold, 0.0, 1, 0).is_err());
    // A temporal rule's first test key is 16 bytes, or none.
    let temporal = |key: &[u8]| {
        rule_of(Some(&SplitRule {
            kind: Kind::Temporal as i32,
            first_test_key: key.to_vec().into(),
            ..Default::default()
        }))
    };
    assert!(temporal(&[]).is_ok() && temporal(&[7; 16]).is_ok());
    assert!(temporal(&[7; 15]).is_err());
    assert!(rule_of(Some(&SplitRule {
        kind: 99,
        ..Default::default()
    }))
    .is_err());
    let bad = BlockOwners {
        workers: vec!["a".into()],
        owners: vec![0, 1],
    };
    assert!(Owners::from_pb(Some(&bad), 2).is_err());
    assert!(Owners::from_pb(Some(&bad), 3).is_err());
}

#[test]
fn questions_about_the_temporal_keys_are_bounded_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.csv");
    let text: String = (0..200).map(|r| format!("{},{},1,{}\n", r % 37, r % 11, r % 7)).collect();
    std::fs::write(&path, text).unwrap();
    let read = |timestamp_col: Option<usize>| {
        let input = ShareToRead {
            path: path.clone(),
            opts: LoadOptions {
                timestamp_col,
                ..Default::default()
            },
            test: None,
            share: Share { index: 0, count: 1 },
        };
        Ingest::read_share("j".into(), 1 << 30, &input, 4, (owners(4), owners(4)), 0).unwrap()
    };
    let of = KeysOf::Temporal {
        first_place: 0,
        input_rows: 200,
    };
    let mut i = read(None);
    let e = i.select_key(of, KeyQuestion::Range).unwrap_err();
    assert!(matches!(&e, JobError::Invalid(m) if m.contains("needs timestamps")), "{e:?}");
    let mut i = read(Some(3));
    let e = i
        .select_key(
            KeysOf::Temporal {
                first_place: 10,
                input_rows: 200,
            },
            KeyQuestion::Range,
        )
        .unwrap_err();
    assert!(matches!(&e, JobError::Invalid(m) if m.contains("does not fit")), "{e:?}");
    // Row 195 is the last with timestamp 6.
    let (lo, hi) = (temporal_key(0, 0), temporal_key(6, 195));
    assert_eq!(i.select_key(of, KeyQuestion::Range).unwrap(), KeyAnswer::Range(200, Some((lo, hi))));
    let e = i.select_key(of, KeyQuestion::Histogram { prefix: 0, shift: 8 }).unwrap_err();
    assert!(matches!(e, JobError::Invalid(_)), "{e:?}");
    let e = i.select_key(of, KeyQuestion::Gather { prefix: 0, shift: 129 }).unwrap_err();
    assert!(matches!(e, JobError::Invalid(_)), "{e:?}");
    // Every key under the whole range: 200 of them.
    let KeyAnswer::Keys(keys) = i.select_key(of, KeyQuestion::Gather { prefix: 0, shift: 128 }).unwrap() else {
        panic!("keys")
    };
    assert_eq!(keys.len(), 200);
    let KeyAnswer::Histogram(h) = i.select_key(of, KeyQuestion::Histogram { prefix: 0, shift: 128 }).unwrap() else {
        panic!("a histogram")
    };
    assert_eq!((h.len(), h.iter().sum::<u64>()), (1 << 16, 200));
    // Asked once the share is routed, it is refused.
    i.route_share((0, 0), 200, None).unwrap();
    let e = i.select_key(of, KeyQuestion::Range).unwrap_err();
    assert!(matches!(e, JobError::NotReady(_)), "{e:?}");
}

/// A block is described only once it is laid out, and only by the worker
/// that built it.
#[test]
fn only_a_finished_block_built_here_is_described() {
    let (_dir, i) = started(1 << 30);
    let mut i = i.unwrap();
    let e = i.describe(true, 0, 1.0, (false, true)).unwrap_err();
    assert!(matches!(e, JobError::NotReady(_)), "{e}");
    // Laid out, a block this worker does not build is refused by name.
    i.stage = Stage::Finished;
    let e = i.describe(false, 1, 1.0, (true, false)).unwrap_err().to_string();
    assert!(e.contains("holds no item block 1"), "{e}");
}

/// A share read for a job that ended meanwhile is dropped, as is one read
/// while another job's active build took the slot; an idle one gives way.
#[test]
fn a_share_read_for_an_ended_job_or_over_an_active_build_is_not_kept() {
    use super::service::{keep_read, EndedJobs};
    use std::time::Duration;
    let read = |id: &str| {
        let (_dir, i) = started(1 << 30);
        let mut i = i.unwrap();
        i.id = id.into();
        i
    };
    let hour = Duration::from_secs(3600);
    let ended = EndedJobs::default();
    ended.end("j-old");
    let mut slot = None;
    let e = keep_read(&mut slot, read("j-old"), &ended, hour).unwrap_err();
    assert!(e.message().contains("has ended"), "{}", e.message());
    assert!(slot.is_none());
    // Not ended: kept; another job's read then finds it active and is dropped.
    keep_read(&mut slot, read("j-new"), &ended, hour).unwrap();
    let e = keep_read(&mut slot, read("j-other"), &ended, hour).unwrap_err();
    assert!(e.message().contains("building the blocks of job 'j-new'"), "{}", e.message());
    assert_eq!(slot.as_ref().map(|i| i.id.as_str()), Some("j-new"));
    // An idle build gives way.
    keep_read(&mut slot, read("j-other"), &ended, Duration::ZERO).unwrap();
    assert_eq!(slot.as_ref().map(|i| i.id.as_str()), Some("j-other"));
    // The memory of ended jobs is bounded: the oldest is forgotten.
    for n in 0..64 {
        ended.end(&format!("j-{n}"));
    }
    keep_read(&mut slot, read("j-old"), &ended, Duration::ZERO).unwrap();
}
