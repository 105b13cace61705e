//! A real worker process against hand-written protocol calls: version
//! handshake, token, job ids, message validation and evaluation.

use als_proto::codec::{f32_bytes, u32_bytes};
use als_proto::pb::worker_client::WorkerClient;
use als_proto::pb::{
    BlockChunk, EndJobRequest, EvalChunk, HandshakeRequest, PeerChunk, RouteChunk, SendRowsRequest, Side, SolverSpec, StartJobRequest,
};
use als_proto::PROTOCOL_VERSION;
use als_tests::{binary, run_with_timeout, WorkerProc};
use tonic::Code;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn authed<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

/// One evaluation call that succeeds: its one block's sums, then the end.
async fn block_sums(c: &mut WorkerClient<tonic::transport::Channel>, chunk: EvalChunk) -> als_proto::pb::EvalSums {
    let mut out = c
        .evaluate(authed(tokio_stream::iter(vec![chunk]), "s3cret"))
        .await
        .unwrap()
        .into_inner();
    let sums = out.message().await.unwrap().unwrap().sums.unwrap();
    assert!(out.message().await.unwrap().unwrap().last);
    sums
}

fn spec() -> SolverSpec {
    SolverSpec {
        feedback: als_proto::pb::Feedback::Explicit as i32,
        biased: true,
        global_mean: 3.5,
        solver: als_proto::pb::Solver::Cholesky as i32,
        factors: 4,
        lambda: 0.1,
        reg_scaling: als_proto::pb::RegScaling::Count as i32,
        backend: als_proto::pb::Backend::Faer as i32,
        ..Default::default()
    }
}

#[test]
fn handshake_token_job_and_validation() {
    let w = WorkerProc::start(Some("s3cret"), &[]);
    rt().block_on(async {
        let mut c = WorkerClient::connect(format!("http://{}", w.addr)).await.unwrap();
        let hs = |v| HandshakeRequest {
            protocol_version: v,
            coordinator: "test".into(),
            required_capabilities: vec![],
        };

        // No token, wrong token: refused.
        let e = c.handshake(hs(PROTOCOL_VERSION)).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        let e = c.handshake(authed(hs(PROTOCOL_VERSION), "wrong")).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);

        // Mismatched protocol version: a clear refusal naming both versions.
        let e = c.handshake(authed(hs(PROTOCOL_VERSION + 1), "s3cret")).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert!(e.message().contains("protocol version mismatch"), "{}", e.message());
        let ok = c.handshake(authed(hs(PROTOCOL_VERSION), "s3cret")).await.unwrap().into_inner();
        assert_eq!(ok.protocol_version, PROTOCOL_VERSION);
        assert!(ok.capabilities.iter().any(|c| c == "implicit"));

        let start = |id: &str| StartJobRequest {
            protocol_version: PROTOCOL_VERSION,
            job_id: id.into(),
            spec: Some(spec()),
            n_users: 10,
            n_items: 5,
        };
        c.start_job(authed(start("job-a"), "s3cret")).await.unwrap();
        // A second job while the first is active: refused.
        let e = c.start_job(authed(start("job-b"), "s3cret")).await.unwrap_err();
        assert_eq!(als_proto::fault::fault_of(&e), als_proto::fault::Fault::Busy);
        assert!(e.message().contains("busy with job 'job-a'"), "{}", e.message());

        let block = |job: &str, n_rows: u32, columns: Vec<u32>| BlockChunk {
            job_id: job.into(),
            side: Side::Users as i32,
            block: 0,
            row_start: 0,
            n_rows,
            nnz: columns.len() as u64,
            n_needed: 2,
            indptr: als_proto::codec::u32_bytes(&[0, columns.len() as u32]).into(),
            columns: als_proto::codec::u32_bytes(&columns).into(),
            values: als_proto::codec::f32_bytes(&vec![4.0; columns.len()]).into(),
            needed: als_proto::codec::u32_bytes(&[1, 3]).into(),
            factors: als_proto::codec::f32_bytes(&[0.1; 4]).into(),
            bias: als_proto::codec::f32_bytes(&[0.0]).into(),
            ..Default::default()
        };
        // Another job's id: refused.
        let e = c
            .assign_block(authed(tokio_stream::iter(vec![block("job-b", 1, vec![0, 1])]), "s3cret"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition);
        // Column outside the needed rows, unsorted columns, more rows than the job: invalid.
        for bad in [
            block("job-a", 1, vec![0, 2]),
            block("job-a", 1, vec![1, 0]),
            block("job-a", 11, vec![0]),
        ] {
            let e = c.assign_block(authed(tokio_stream::iter(vec![bad]), "s3cret")).await.unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
        }
        // Non-finite rating.
        let mut nan = block("job-a", 1, vec![0, 1]);
        nan.values = als_proto::codec::f32_bytes(&[4.0, f32::NAN]).into();
        let e = c.assign_block(authed(tokio_stream::iter(vec![nan]), "s3cret")).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        // A block whose ratings this worker built carries rows alone, and only for a block it built.
        let rows_only = BlockChunk {
            job_id: "job-a".into(),
            side: Side::Users as i32,
            n_rows: 1,
            factors: f32_bytes(&[0.1; 4]).into(),
            bias: f32_bytes(&[0.0]).into(),
            ratings_built: true,
            ..Default::default()
        };
        for (bad, why) in [
            (block("job-a", 1, vec![0, 1]), "carries only its rows' factors"),
            (
                BlockChunk {
                    columns: u32_bytes(&[0]).into(),
                    ..rows_only.clone()
                },
                "exceeds its declared size",
            ),
            (
                BlockChunk {
                    indptr: u32_bytes(&[0, 0]).into(),
                    ..rows_only.clone()
                },
                "came with ratings",
            ),
            // Rows the worker is to draw or read itself come alone, and one way.
            (
                BlockChunk {
                    draw: Some(Default::default()),
                    ..rows_only.clone()
                },
                "came with rows",
            ),
            (
                BlockChunk {
                    draw: Some(Default::default()),
                    rows_in: vec![Default::default()],
                    factors: Default::default(),
                    bias: Default::default(),
                    ..rows_only.clone()
                },
                "in one way",
            ),
        ] {
            let bad = BlockChunk {
                ratings_built: true,
                ..bad
            };
            let e = c.assign_block(authed(tokio_stream::iter(vec![bad]), "s3cret")).await.unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
            assert!(e.message().contains(why), "{}", e.message());
        }
        let e = c
            .assign_block(authed(tokio_stream::iter(vec![rows_only.clone()]), "s3cret"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{}", e.message());
        assert!(e.message().contains("no blocks are being built"), "{}", e.message());
        // Only a block built here draws its rows; a file is read only under --output-root.
        let drawn = BlockChunk {
            draw: Some(Default::default()),
            factors: Default::default(),
            bias: Default::default(),
            ..rows_only.clone()
        };
        let e = c
            .assign_block(authed(
                tokio_stream::iter(vec![BlockChunk {
                    ratings_built: false,
                    ..drawn
                }]),
                "s3cret",
            ))
            .await
            .unwrap_err();
        assert!(e.message().contains("only for a block built here"), "{}", e.message());
        let read = BlockChunk {
            rows_in: vec![als_proto::pb::RowsPlace {
                side: Side::Users as i32,
                part: als_proto::pb::RowsPart::Factors as i32,
                path: "/etc/passwd".into(),
                at: 0,
                end: 16,
            }],
            factors: Default::default(),
            bias: Default::default(),
            ..rows_only.clone()
        };
        let e = c.assign_block(authed(tokio_stream::iter(vec![read]), "s3cret")).await.unwrap_err();
        assert!(e.message().contains("--output-root"), "{}", e.message());
        // Data beyond the declared sizes is cut off, not buffered.
        let mut big = block("job-a", 1, vec![0, 1]);
        big.values = vec![0u8; 1 << 20].into();
        let e = c.assign_block(authed(tokio_stream::iter(vec![big]), "s3cret")).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        // Test rows outside the items: invalid.
        let with_test = |item: u32| BlockChunk {
            n_test: 1,
            test_indptr: u32_bytes(&[0, 1]).into(),
            test_columns: u32_bytes(&[item]).into(),
            test_values: f32_bytes(&[3.0]).into(),
            ..block("job-a", 1, vec![0, 1])
        };
        let e = c
            .assign_block(authed(tokio_stream::iter(vec![with_test(5)]), "s3cret"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
        // A valid block with one test row (item 4) is accepted.
        c.assign_block(authed(tokio_stream::iter(vec![with_test(4)]), "s3cret"))
            .await
            .unwrap();
        // Evaluate it: μ + bᵤ + bᵢ + pᵤᵀqᵢ = 3.5 + 0.2 - 0.5 + 0.1·(1+2+3+4) = 4.2.
        let eval = |item_rows: &[u32]| EvalChunk {
            job_id: "job-a".into(),
            step: 1,
            blocks: vec![0],
            n_item_rows: item_rows.len() as u32,
            item_rows: u32_bytes(item_rows).into(),
            user_factors: f32_bytes(&[0.1; 4]).into(),
            user_bias: f32_bytes(&[0.2]).into(),
            item_factors: f32_bytes(&[1.0, 2.0, 3.0, 4.0]).into(),
            item_bias: f32_bytes(&[-0.5]).into(),
            ..Default::default()
        };
        // One test row valued 3: its error sums (no clipping asked for).
        let sums = block_sums(&mut c, eval(&[4])).await;
        assert!(
            sums.n == 1 && (sums.squared - 1.44).abs() < 1e-5 && (sums.absolute - 1.2).abs() < 1e-6,
            "{sums:?}"
        );
        assert_eq!((sums.squared_clipped, sums.absolute_clipped), (sums.squared, sums.absolute));
        // Factors for another item than the test row's: refused, nothing computed.
        let e = c
            .evaluate(authed(tokio_stream::iter(vec![eval(&[3])]), "s3cret"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());

        // Sending rows to peers: only for the active job, a real side and complete routes.
        let send = |job: &str, side: Side, peers: u32| SendRowsRequest {
            job_id: job.into(),
            side: side as i32,
            step: 2,
            routes_epoch: 1,
            routes_peers: peers,
            peer_timeout_ms: 1000,
            evaluation: false,
        };
        let e = c.send_rows(send("job-a", Side::Users, 1)).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        let e = c.send_rows(authed(send("job-b", Side::Users, 1), "s3cret")).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{}", e.message());
        let e = c
            .send_rows(authed(send("job-a", Side::Unspecified, 1), "s3cret"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
        let e = c.send_rows(authed(send("job-a", Side::Users, 1), "s3cret")).await.unwrap_err();
        assert!(e.message().contains("no complete routes"), "{}", e.message());
        // A worker alone has nobody to send to.
        let alone = c.send_rows(authed(send("job-a", Side::Users, 0), "s3cret")).await.unwrap();
        assert_eq!(alone.into_inner().peer_bytes, 0);
        // An evaluation's rows are item rows.
        let e = c
            .send_rows(authed(
                SendRowsRequest {
                    evaluation: true,
                    ..send("job-a", Side::Users, 0)
                },
                "s3cret",
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());

        // Evaluation from peers' rows: this worker holds user 0 (test item 4)
        // and no item block, so a peer must send item 4 first.
        let from_peers = |step: u64| EvalChunk {
            job_id: "job-a".into(),
            step,
            blocks: vec![0],
            from_peers: true,
            clip: true,
            clip_min: 1.0,
            clip_max: 3.5,
            ..Default::default()
        };
        let e = c
            .evaluate(authed(tokio_stream::iter(vec![from_peers(3)]), "s3cret"))
            .await
            .unwrap_err();
        assert!(e.message().contains("0 of the 1 item rows"), "{}", e.message());
        // Routes (here, of its user rows) give the epoch peers' rows must carry.
        let route = RouteChunk {
            job_id: "job-a".into(),
            side: Side::Users as i32,
            epoch: 1,
            peer: "127.0.0.1:1".into(),
            n_rows: 1,
            rows: u32_bytes(&[0]).into(),
            ..Default::default()
        };
        c.set_routes(authed(tokio_stream::iter(vec![route]), "s3cret")).await.unwrap();
        let peer = |side: Side, rows: &[u32], factors: &[f32]| PeerChunk {
            job_id: "job-a".into(),
            side: side as i32,
            step: 3,
            epoch: 1,
            n_rows: rows.len() as u32,
            rows: u32_bytes(rows).into(),
            factors: f32_bytes(factors).into(),
            bias: f32_bytes(&vec![-0.5; rows.len()]).into(),
            evaluation: true,
        };
        // User rows for an evaluation, and an item no test row of this worker names: refused.
        for bad in [peer(Side::Users, &[0], &[1.0; 4]), peer(Side::Items, &[3], &[1.0; 4])] {
            let e = c.peer_rows(authed(tokio_stream::iter(vec![bad]), "s3cret")).await.unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
        }
        c.peer_rows(authed(
            tokio_stream::iter(vec![peer(Side::Items, &[4], &[1.0, 2.0, 3.0, 4.0])]),
            "s3cret",
        ))
        .await
        .unwrap();
        // Rows for another step than asked: not ready. Factors sent along: refused.
        let e = c
            .evaluate(authed(tokio_stream::iter(vec![from_peers(5)]), "s3cret"))
            .await
            .unwrap_err();
        assert!(e.message().contains("0 of the 1 item rows"), "{}", e.message());
        let with_factors = EvalChunk {
            user_factors: f32_bytes(&[0.1; 4]).into(),
            ..from_peers(3)
        };
        let e = c
            .evaluate(authed(tokio_stream::iter(vec![with_factors]), "s3cret"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
        // A clipping range upside down, lists too short for the cutoff: refused, the rows kept.
        let upside_down = EvalChunk {
            clip_min: 4.0,
            clip_max: 1.0,
            ..from_peers(3)
        };
        let short_lists = EvalChunk {
            top_k: 10,
            ranking_k: 10,
            ..from_peers(3)
        };
        // Held-out users where the block (shipped whole) holds none, held-out
        // users with factors streamed, a Gramian that is no lower triangle:
        // refused too, the rows kept.
        let no_held_out = EvalChunk {
            held_out: true,
            ..from_peers(3)
        };
        let streamed_held_out = EvalChunk {
            held_out: true,
            ..eval(&[4])
        };
        let bad_gram = EvalChunk {
            item_gram: als_proto::codec::f64_bytes(&[1.0; 3]).into(),
            ..no_held_out.clone()
        };
        let refused = [
            (upside_down, "clipping range"),
            (short_lists, "top-K lists"),
            (no_held_out, "holds no held-out users"),
            (streamed_held_out, "from peers' rows only"),
            (bad_gram, "not the 10 of a lower triangle"),
        ];
        for (bad, why) in refused {
            let e = c.evaluate(authed(tokio_stream::iter(vec![bad]), "s3cret")).await.unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
            assert!(e.message().contains(why), "{why}: {}", e.message());
        }
        // The worker's own user row (factors 0.1, bias 0) against the peer's
        // item 4: 3.5 + 0 - 0.5 + 0.1·(1+2+3+4) = 4.0.
        // Against the test value 3, clipped to [1, 3.5]: errors 1 and 0.5.
        let sums = block_sums(&mut c, from_peers(3)).await;
        assert!(
            sums.n == 1 && (sums.squared - 1.0).abs() < 1e-5 && (sums.squared_clipped - 0.25).abs() < 1e-5,
            "{sums:?}"
        );
        // The rows are used once: the same evaluation again waits for new ones.
        let e = c
            .evaluate(authed(tokio_stream::iter(vec![from_peers(3)]), "s3cret"))
            .await
            .unwrap_err();
        assert!(e.message().contains("0 of the 1 item rows"), "{}", e.message());
    });
}

#[test]
fn worker_refuses_open_address_without_token() {
    let mut cmd = std::process::Command::new(binary("worker"));
    cmd.args(["--listen", "0.0.0.0:0"]).env_remove("ALS_TOKEN");
    let (ok, _, err) = run_with_timeout(&mut cmd, std::time::Duration::from_secs(20));
    assert!(!ok);
    assert!(err.contains("refusing to listen"), "{err}");
}

/// A worker running another job ends a run with a message that says so,
/// naming the job, not "every worker is gone" alone.
#[test]
fn a_busy_worker_is_named_as_busy() {
    let w = WorkerProc::start(Some("s3cret"), &[]);
    rt().block_on(async {
        let mut c = WorkerClient::connect(format!("http://{}", w.addr)).await.unwrap();
        let start = StartJobRequest {
            protocol_version: PROTOCOL_VERSION,
            job_id: "someone-elses-job".into(),
            spec: Some(spec()),
            n_users: 10,
            n_items: 5,
        };
        c.start_job(authed(start, "s3cret")).await.unwrap();
    });
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("r.csv");
    let text: String = (0..40).map(|r| format!("{},{},{}\n", r % 10, r % 7, 1 + r % 5)).collect();
    std::fs::write(&data, text).unwrap();
    let mut cmd = std::process::Command::new(binary("coordinator"));
    cmd.arg("--data")
        .arg(&data)
        .args(["--quiet", "--factors", "2", "--iterations", "1", "--workers", &w.addr])
        .env("ALS_TOKEN", "s3cret");
    let (ok, _, err) = run_with_timeout(&mut cmd, std::time::Duration::from_secs(60));
    assert!(!ok);
    assert!(err.contains("busy with job 'someone-elses-job'"), "{err}");
}

/// A job larger than a worker's memory budget ends the run at once with a
/// message naming the worker and the budget, not a retry loop.
#[test]
fn a_job_over_the_memory_budget_is_refused_by_name() {
    let w = WorkerProc::start(Some("s3cret"), &["--max-memory", "64K"]);
    let mut cmd = std::process::Command::new(binary("coordinator"));
    cmd.args(["--quiet", "--factors", "8", "--iterations", "1", "--workers", &w.addr])
        .env("ALS_TOKEN", "s3cret");
    let t0 = std::time::Instant::now();
    let (ok, _, err) = run_with_timeout(&mut cmd, std::time::Duration::from_secs(60));
    assert!(!ok);
    assert!(
        err.contains(&format!("worker {}", w.addr)) && err.contains("memory budget"),
        "{err}"
    );
    assert!(t0.elapsed() < std::time::Duration::from_secs(30), "took {:?}", t0.elapsed());
}

/// A worker builds or runs one job at a time: while it builds the blocks of
/// one job, another job can neither start nor build, and the job it builds
/// starts (to adopt them); while that job runs, no other job builds.
#[test]
fn a_worker_builds_or_runs_one_job_at_a_time() {
    use als_proto::pb::ingest_request::Step;
    use als_proto::pb::{BlockOwners, IngestRequest, InputSpec, ReadShareStep};
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("r.csv");
    let text: String = (0..40).map(|r| format!("{},{},{}\n", r % 10, r % 7, 1 + r % 5)).collect();
    std::fs::write(&data, text).unwrap();
    let root_arg = root.path().to_str().unwrap().to_owned();
    let w = WorkerProc::start(Some("s3cret"), &["--input-root", &root_arg]);
    rt().block_on(async {
        let mut c = WorkerClient::connect(format!("http://{}", w.addr)).await.unwrap();
        let read = |job: &str| IngestRequest {
            job_id: job.into(),
            peer_timeout_ms: 10_000,
            step: Some(Step::ReadShare(ReadShareStep {
                input: Some(InputSpec {
                    path: data.to_str().unwrap().into(),
                    format: "csv".into(),
                    header: Some(false),
                    user_col: 0,
                    item_col: 1,
                    rating_col: Some(2),
                    max_id_len: 256,
                    ..Default::default()
                }),
                share: 0,
                shares: 1,
                blocks: 1,
                user_owners: Some(BlockOwners {
                    workers: vec![w.addr.clone()],
                    owners: vec![0],
                }),
                item_owners: Some(BlockOwners {
                    workers: vec![w.addr.clone()],
                    owners: vec![0],
                }),
                you: 0,
                test_input: None,
            })),
        };
        let start = |id: &str| StartJobRequest {
            protocol_version: PROTOCOL_VERSION,
            job_id: id.into(),
            spec: Some(spec()),
            n_users: 10,
            n_items: 7,
        };
        let busy = |e: tonic::Status, doing: &str| {
            assert_eq!(als_proto::fault::fault_of(&e), als_proto::fault::Fault::Busy, "{}", e.message());
            assert!(e.message().contains(doing), "{}", e.message());
        };
        let read_a = c.ingest(authed(read("build-a"), "s3cret")).await.unwrap().into_inner();
        assert_eq!(read_a.rows, 40);
        busy(
            c.start_job(authed(start("job-b"), "s3cret")).await.unwrap_err(),
            "building the blocks of job 'build-a'",
        );
        busy(
            c.ingest(authed(read("build-c"), "s3cret")).await.unwrap_err(),
            "building the blocks of job 'build-a'",
        );
        c.start_job(authed(start("build-a"), "s3cret")).await.unwrap();
        busy(
            c.ingest(authed(read("build-d"), "s3cret")).await.unwrap_err(),
            "busy with job 'build-a'",
        );
        // An ended job's share is not read again (a read still running when
        // it ended is dropped); the worker is free for the next build.
        c.end_job(authed(EndJobRequest { job_id: "build-a".into() }, "s3cret"))
            .await
            .unwrap();
        let e = c.ingest(authed(read("build-a"), "s3cret")).await.unwrap_err();
        assert!(e.message().contains("job 'build-a' has ended"), "{}", e.message());
        assert_eq!(c.ingest(authed(read("build-e"), "s3cret")).await.unwrap().into_inner().rows, 40);
    });
}

/// A worker writes rows only into a file under its --output-root: without
/// one it writes none, and a path outside it (by `..` too) is refused by name.
#[test]
fn a_worker_writes_rows_only_under_its_output_root() {
    use als_proto::pb::{RowsPart, RowsPlace, Side, WriteRowsRequest};
    let root = tempfile::tempdir().unwrap();
    let inside = root.path().join("out");
    std::fs::create_dir(&inside).unwrap();
    let file = inside.join("checkpoint.tmp");
    std::fs::write(&file, [0u8; 64]).unwrap();
    let outside = root.path().join("elsewhere.tmp");
    std::fs::write(&outside, [0u8; 64]).unwrap();
    let place = |path: &std::path::Path, side: Side| RowsPlace {
        side: side as i32,
        part: RowsPart::Factors as i32,
        path: path.to_str().unwrap().into(),
        end: 64,
        ..Default::default()
    };
    // Rows of one file, and of a file outside too when `path` is.
    let write = |path: &std::path::Path| WriteRowsRequest {
        job_id: "job-a".into(),
        places: vec![place(&file, Side::Users), place(path, Side::Items)],
        ..Default::default()
    };
    let none = WorkerProc::start(Some("s3cret"), &[]);
    let inside_arg = inside.to_str().unwrap().to_owned();
    let rooted = WorkerProc::start(Some("s3cret"), &["--output-root", &inside_arg]);
    rt().block_on(async {
        let mut c = WorkerClient::connect(format!("http://{}", none.addr)).await.unwrap();
        let e = c.write_rows(authed(write(&file), "s3cret")).await.unwrap_err();
        assert!(
            e.message().contains("writes no file (start it with --output-root DIR)"),
            "{}",
            e.message()
        );
        let mut c = WorkerClient::connect(format!("http://{}", rooted.addr)).await.unwrap();
        for bad in [outside.clone(), inside.join("..").join("elsewhere.tmp")] {
            let e = c.write_rows(authed(write(&bad), "s3cret")).await.unwrap_err();
            assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());
            assert!(e.message().contains("is not under this worker's --output-root"), "{}", e.message());
        }
        // One part placed twice: refused before anything else.
        let twice = WriteRowsRequest {
            job_id: "job-a".into(),
            places: vec![place(&file, Side::Users), place(&file, Side::Users)],
            ..Default::default()
        };
        let e = c.write_rows(authed(twice, "s3cret")).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
        assert!(e.message().contains("placed twice"), "{}", e.message());
        // The seen matrix is the users', and needs their blocks' starts.
        for (side, starts) in [(Side::Items, vec![0, 5]), (Side::Users, vec![])] {
            let seen = WriteRowsRequest {
                job_id: "job-a".into(),
                places: vec![RowsPlace {
                    part: RowsPart::SeenIndices as i32,
                    ..place(&file, side)
                }],
                user_nnz_starts: starts,
                ..Default::default()
            };
            let e = c.write_rows(authed(seen, "s3cret")).await.unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
            assert!(e.message().contains("the seen matrix is the users'"), "{}", e.message());
        }
        // Ids need their side's blocks' starts (the users' given here, not the items').
        let ids = WriteRowsRequest {
            job_id: "job-a".into(),
            places: vec![RowsPlace {
                part: RowsPart::Ids as i32,
                ..place(&file, Side::Items)
            }],
            user_id_starts: vec![0, 5],
            ..Default::default()
        };
        let e = c.write_rows(authed(ids, "s3cret")).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
        assert!(
            e.message().contains("ids are placed without their blocks' starts"),
            "{}",
            e.message()
        );
        // Under the root, but no job: refused as such.
        let e = c.write_rows(authed(write(&file), "s3cret")).await.unwrap_err();
        assert!(e.message().contains("job-a"), "{}", e.message());
    });
    assert_eq!(std::fs::read(&outside).unwrap(), vec![0u8; 64], "nothing written outside the root");
}
