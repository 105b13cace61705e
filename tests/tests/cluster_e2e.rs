//! The real binaries as separate processes: three workers and a coordinator
//! train the same model as the single-process path, survive a killed worker,
//! and name an unreachable worker quickly.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use als_tests::{binary, generate, run_with_timeout, strip_ansi, BlackholeProxy, WorkerProc};

const TOKEN: &str = "e2e-token";

fn train(data: &Path, out: &Path, extra: &[&str], executor: &[String]) -> (bool, String) {
    let mut cmd = Command::new(binary("coordinator"));
    cmd.arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out)
        .args(["--factors", "8", "--quiet"])
        .args(extra)
        .args(executor)
        .env("ALS_TOKEN", TOKEN);
    let (ok, _, err) = run_with_timeout(&mut cmd, Duration::from_secs(120));
    (ok, err)
}

fn factors(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    (
        std::fs::read(dir.join("user_factors.npy")).unwrap(),
        std::fs::read(dir.join("item_factors.npy")).unwrap(),
    )
}

#[test]
fn three_worker_processes_train_the_single_process_model() {
    let tmp = tempfile::tempdir().unwrap();
    let data = generate(tmp.path(), 600, 300, 20_000);
    let root = tmp.path().to_str().unwrap();
    let workers: Vec<WorkerProc> = (0..3).map(|_| WorkerProc::start(Some(TOKEN), &["--input-root", root])).collect();
    let addrs = workers.iter().map(|w| w.addr.clone()).collect::<Vec<_>>().join(",");
    for (name, extra) in [
        ("explicit", vec!["--iterations", "10"]),
        (
            "implicit",
            vec![
                "--iterations",
                "10",
                "--implicit",
                "--alpha",
                "5",
                "--solver",
                "cg",
                "--reg-scaling",
                "none",
            ],
        ),
    ] {
        let single = tmp.path().join(format!("{name}-single"));
        let cluster = tmp.path().join(format!("{name}-cluster"));
        let (ok, err) = train(&data, &single, &extra, &["--in-process".into()]);
        assert!(ok, "{name} in-process: {err}");
        let (ok, err) = train(&data, &cluster, &extra, &["--workers".into(), addrs.clone(), "--input-here".into()]);
        assert!(ok, "{name} on workers: {err}");
        assert!(
            factors(&single) == factors(&cluster),
            "{name}: cluster factors differ from the single-process ones"
        );
        // Workers without --output-root refuse to write the model's rows; the coordinator writes them.
        assert!(
            strip_ansi(&err).contains("writes no file (start it with --output-root DIR); the coordinator writes"),
            "{name}: {err}"
        );
        // The workers read the input and build their blocks themselves: by
        // default, since each one's --input-root holds it.
        let read = tmp.path().join(format!("{name}-read"));
        let (ok, err) = train(&data, &read, &extra, &["--workers".into(), addrs.clone()]);
        assert!(ok, "{name} on workers reading the input: {err}");
        assert!(!strip_ansi(&err).contains("shipping the blocks instead"), "{name}: {err}");
        assert!(
            factors(&single) == factors(&read),
            "{name}: factors from blocks the workers built differ from the single-process ones"
        );
    }
    // Workers that reach the output directory write the model's rows themselves: the same files.
    let writers: Vec<WorkerProc> = (0..3)
        .map(|_| WorkerProc::start(Some(TOKEN), &["--output-root", root, "--input-root", root]))
        .collect();
    let writer_addrs = writers.iter().map(|w| w.addr.clone()).collect::<Vec<_>>().join(",");
    let written = tmp.path().join("explicit-written");
    let (ok, err) = train(
        &data,
        &written,
        &["--iterations", "10"],
        &["--workers".into(), writer_addrs.clone()],
    );
    assert!(ok, "workers writing the model: {err}");
    assert!(
        strip_ansi(&err).contains("rows_by_workers=true"),
        "the workers wrote the model's rows: {err}"
    );
    let single = tmp.path().join("explicit-single");
    for name in [
        "user_factors.npy",
        "item_factors.npy",
        "user_bias.npy",
        "seen_indptr.npy",
        "seen_indices.npy",
    ] {
        assert!(
            std::fs::read(single.join(name)).unwrap() == std::fs::read(written.join(name)).unwrap(),
            "{name} written by the workers differs"
        );
    }
    // Resumed on workers that read the input: workers that reach the
    // checkpoint read its rows where it lies; workers without --output-root
    // refuse, and the coordinator reads each of their blocks' rows and sends
    // them. Either way, the uninterrupted run's model.
    let whole = tmp.path().join("resume-whole");
    let (ok, err) = train(&data, &whole, &["--iterations", "4"], &["--in-process".into()]);
    assert!(ok, "uninterrupted: {err}");
    for (name, workers, in_place) in [("readers", &addrs, false), ("writers", &writer_addrs, true)] {
        let ck = tmp.path().join(format!("resume-{name}-checkpoints"));
        let ck = ck.to_str().unwrap();
        let executor = ["--workers".into(), workers.clone(), "--input-on-workers".into()];
        let first = tmp.path().join(format!("resume-{name}-first"));
        let (ok, err) = train(&data, &first, &["--iterations", "2", "--checkpoint-dir", ck], &executor);
        assert!(ok, "{name}, two iterations: {err}");
        let resumed = tmp.path().join(format!("resume-{name}"));
        let (ok, err) = train(
            &data,
            &resumed,
            &["--iterations", "4", "--checkpoint-dir", ck, "--resume"],
            &executor,
        );
        assert!(ok, "{name}, resumed: {err}");
        assert!(factors(&whole) == factors(&resumed), "{name}: the resumed model differs");
        let err = strip_ansi(&err);
        assert!(
            err.contains("the workers read the checkpoint's rows where it lies"),
            "{name}: {err}"
        );
        assert_eq!(err.contains("cannot read the checkpoint's rows itself"), !in_place, "{name}: {err}");
    }
    // A test file beside the input, which the workers read in shares too: the same metrics.
    let test_file = tmp.path().join("test.csv");
    let text = std::fs::read_to_string(&data).unwrap();
    let mut lines = text.lines();
    let head = lines.next().unwrap();
    let picked: Vec<&str> = lines.step_by(7).collect();
    std::fs::write(&test_file, format!("{head}\n{}\n", picked.join("\n"))).unwrap();
    let extra = ["--iterations", "4", "--test", test_file.to_str().unwrap()];
    let metrics = |dir: &Path| -> serde_json::Value {
        let model: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("model.json")).unwrap()).unwrap();
        model["metrics"].clone()
    };
    let (single, read) = (tmp.path().join("test-file-single"), tmp.path().join("test-file-read"));
    let (ok, err) = train(&data, &single, &extra, &["--in-process".into()]);
    assert!(ok, "--test in-process: {err}");
    let (ok, err) = train(&data, &read, &extra, &["--workers".into(), addrs, "--input-on-workers".into()]);
    assert!(ok, "--test on workers reading the input and the test file: {err}");
    assert!(factors(&single) == factors(&read), "--test: the factors differ");
    assert!(metrics(&single)["rmse"].is_f64(), "{}", metrics(&single));
    assert_eq!(metrics(&single), metrics(&read), "--test: the test metrics differ");
}

/// Workers that may not read --data (started without --input-root): by
/// default the coordinator reads it and ships the blocks, saying why; with
/// --input-on-workers the run fails naming the flag the workers lack; with
/// --input-here it ships without a word. The model is the same.
#[test]
fn workers_that_may_not_read_the_input_leave_it_to_the_coordinator_unless_told() {
    let tmp = tempfile::tempdir().unwrap();
    let data = generate(tmp.path(), 300, 120, 6000);
    let workers: Vec<WorkerProc> = (0..2).map(|_| WorkerProc::start(Some(TOKEN), &[])).collect();
    let addrs = workers.iter().map(|w| w.addr.clone()).collect::<Vec<_>>().join(",");
    let run = |name: &str, who: &[&str]| {
        let mut executor = vec!["--workers".to_string(), addrs.clone()];
        executor.extend(who.iter().map(|s| s.to_string()));
        let out = tmp.path().join(name);
        let (ok, err) = train(&data, &out, &["--iterations", "3"], &executor);
        (ok, strip_ansi(&err), out)
    };
    let fallback = "loading the input here and shipping the blocks instead";
    let (ok, err, default) = run("default", &[]);
    assert!(ok, "{err}");
    assert!(
        err.contains("reads no input (start it with --input-root DIR)") && err.contains(fallback),
        "{err}"
    );
    let (ok, err, here) = run("here", &["--input-here"]);
    assert!(ok && !err.contains(fallback) && !err.contains("reads no input"), "{err}");
    assert!(factors(&default) == factors(&here), "the fallback changed the model");
    let (ok, err, _) = run("insisted", &["--input-on-workers"]);
    assert!(!ok, "trained though the workers may not read the input");
    assert!(
        err.contains("could not build their blocks")
            && err.contains("reads no input (start it with --input-root DIR)")
            && !err.contains(fallback),
        "{err}"
    );
}

#[test]
fn a_killed_worker_process_does_not_change_the_model() {
    use std::io::{BufRead, BufReader};
    let tmp = tempfile::tempdir().unwrap();
    let data = generate(tmp.path(), 3000, 1500, 150_000);
    let extra = ["--iterations", "12", "--eval-every", "0"];
    let single = tmp.path().join("single");
    let (ok, err) = train(&data, &single, &extra, &["--in-process".into()]);
    assert!(ok, "{err}");
    // Kill worker 1 at different moments: while blocks ship, early in training, late;
    // and, with the workers reading the input, while they build their blocks and after.
    let root = tmp.path().to_str().unwrap();
    for (marker, nth, read) in [
        ("worker connected", 3usize, false),
        ("iteration=2 ", 1, false),
        ("iteration=9 ", 1, false),
        ("training on the cluster", 1, true),
        ("iteration=2 ", 1, true),
    ] {
        // The workers write the model's rows: a coordinator that read no ratings reads none to save it.
        let mut workers: Vec<WorkerProc> = (0..3)
            .map(|_| WorkerProc::start(Some(TOKEN), &["--input-root", root, "--output-root", root]))
            .collect();
        let addrs = workers.iter().map(|w| w.addr.clone()).collect::<Vec<_>>().join(",");
        let out = tmp.path().join(format!("cluster-{}-{read}", marker.replace([' ', '='], "_")));
        let mut cmd = Command::new(binary("coordinator"));
        cmd.arg("--data")
            .arg(&data)
            .arg("--out")
            .arg(&out)
            .args(["--factors", "8", "--quiet", "--workers", &addrs])
            .args(extra)
            .args(if read { &["--input-on-workers"][..] } else { &["--input-here"] })
            .env("ALS_TOKEN", TOKEN);
        let mut child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut log = String::new();
        let mut seen = 0;
        for line in BufReader::new(child.stderr.take().unwrap()).lines().map_while(Result::ok) {
            let line = strip_ansi(&line);
            log.push_str(&line);
            log.push('\n');
            if line.contains(marker) {
                seen += 1;
                if seen == nth {
                    workers[1].kill();
                }
            }
        }
        let status = child.wait().unwrap();
        assert!(seen >= nth, "marker '{marker}' never seen:\n{log}");
        assert!(status.success(), "killed at '{marker}' (workers read the input: {read}):\n{log}");
        assert!(log.contains("worker lost"), "the loss was not noticed:\n{log}");
        if read {
            // The survivors built the lost blocks (and the refit's) again: this coordinator read none of the input.
            assert!(log.contains("this coordinator reads none of it"), "{log}");
            assert!(!log.contains("shipping the blocks instead"), "fell back to shipping:\n{log}");
            assert!(!log.contains("needs the ratings the workers hold"), "{log}");
        }
        if read && marker.starts_with("iteration") {
            assert!(log.contains("the survivors built the blocks again"), "{log}");
        }
        assert!(
            factors(&single) == factors(&out),
            "killed at '{marker}' (workers read the input: {read}): model differs from the fault-free one"
        );
    }
}

#[test]
fn unreachable_worker_is_named_within_seconds() {
    let tmp = tempfile::tempdir().unwrap();
    // A port that refuses connections: bind, note it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let data = generate(tmp.path(), 100, 50, 1000);
    let t0b = Instant::now();
    let (ok, err) = train(&data, &tmp.path().join("m2"), &[], &["--workers".into(), addr.clone()]);
    assert!(!ok);
    assert!(err.contains(&addr), "error does not name the worker: {err}");
    assert!(t0b.elapsed() < Duration::from_secs(15), "took {:?}", t0b.elapsed());
}

#[test]
fn a_worker_cut_off_the_network_is_detected_and_the_job_finishes() {
    use std::io::{BufRead, BufReader};
    let tmp = tempfile::tempdir().unwrap();
    let data = generate(tmp.path(), 2000, 1000, 80_000);
    let extra = ["--iterations", "8", "--eval-every", "0"];
    let single = tmp.path().join("single");
    let (ok, err) = train(&data, &single, &extra, &["--in-process".into()]);
    assert!(ok, "{err}");
    // With the blocks shipped, and built by the workers from the input.
    for read in [false, true] {
        let root = tmp.path().to_str().unwrap();
        let workers: Vec<WorkerProc> = (0..3).map(|_| WorkerProc::start(Some(TOKEN), &["--input-root", root])).collect();
        let proxy = BlackholeProxy::start(&workers[1].addr);
        let addrs = [workers[0].addr.clone(), proxy.addr.clone(), workers[2].addr.clone()].join(",");
        let out = tmp.path().join(format!("cut-{read}"));
        let mut cmd = Command::new(binary("coordinator"));
        cmd.arg("--data")
            .arg(&data)
            .arg("--out")
            .arg(&out)
            .args(["--factors", "8", "--quiet", "--worker-timeout", "1", "--workers", &addrs])
            .args(extra)
            .args(if read { &["--input-on-workers"][..] } else { &["--input-here"] })
            .env("ALS_TOKEN", TOKEN);
        let mut child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut log = String::new();
        let t_cut = std::cell::Cell::new(None);
        for line in BufReader::new(child.stderr.take().unwrap()).lines().map_while(Result::ok) {
            let line = strip_ansi(&line);
            log.push_str(&line);
            log.push('\n');
            if line.contains("iteration=2 ") {
                proxy.drop_everything();
                t_cut.set(Some(Instant::now()));
            }
            if line.contains("worker lost") {
                let since = t_cut.get().map(|t| t.elapsed()).unwrap_or_default();
                assert!(since < Duration::from_secs(6), "noticed only after {since:?}");
            }
        }
        assert!(child.wait().unwrap().success(), "{log}");
        assert!(log.contains("worker lost"), "{log}");
        assert!(!read || log.contains("the workers built their blocks"), "{log}");
        assert!(
            factors(&single) == factors(&out),
            "read {read}: model differs from the fault-free one"
        );
    }
}
