//! Every bad-input case of the README's table, through the real binary:
//! a clear message naming the file (and line), exit status 1, no panic, and
//! no model left behind.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use als_tests::{binary, run_with_timeout};

fn train(dir: &Path, data: &Path, extra: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(binary("coordinator"));
    cmd.arg("--data")
        .arg(data)
        .arg("--out")
        .arg(dir.join("model"))
        .args(["--in-process", "--quiet", "--iterations", "2", "--factors", "4"])
        .args(extra);
    let (ok, _, err) = run_with_timeout(&mut cmd, Duration::from_secs(60));
    assert!(!err.contains("panicked"), "{err}");
    (ok, err)
}

#[test]
fn each_bad_input_gets_its_message() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let file = |name: &str, bytes: &[u8]| {
        let p = d.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let cases: Vec<(std::path::PathBuf, Vec<&str>, &str)> = vec![
        (
            file("fields.csv", b"1,2,3\n4,5\n"),
            vec![],
            "fields.csv:2: expected at least 3 fields, found 2",
        ),
        (
            file("inf.csv", b"1,2,3\n4,5,inf\n"),
            vec![],
            "inf.csv:2: rating 'inf' is not finite",
        ),
        (file("nan.csv", b"1,2,NaN\n"), vec![], "nan.csv:1: rating 'NaN' is not finite"),
        (
            file("text.csv", b"1,2,3\n4,5,abc\n"),
            vec![],
            "text.csv:2: rating 'abc' is not a number",
        ),
        (file("noid.csv", b"1,2,3\n,5,4\n"), vec![], "noid.csv:2: empty user id"),
        (file("empty.csv", b""), vec![], "empty.csv: no ratings"),
        (file("header.csv", b"user,item,rating\n"), vec![], "header.csv: no ratings"),
        (file("weird.bin", b"\x00\x01garbage"), vec![], "weird.bin: cannot detect the format"),
        (
            file("long.csv", format!("{},i,3\n", "u".repeat(300)).as_bytes()),
            vec![],
            "long.csv:1: user id is 300 bytes long (limit 256)",
        ),
        (d.join("missing.csv"), vec![], "missing.csv: cannot read: No such file or directory"),
    ];
    for (path, extra, want) in cases {
        let (ok, err) = train(d, &path, &extra);
        assert!(!ok, "{} was accepted", path.display());
        assert!(err.contains(want), "{}: expected '{want}' in:\n{err}", path.display());
        assert!(!d.join("model").exists(), "{}: a model was left behind", path.display());
    }
    // --skip-invalid: the bad lines are skipped and counted.
    let mixed = file("mixed.csv", b"1,2,3\n4,5\n1,3,4\n2,2,5\n2,3,x\n3,1,2\n3,2,4\n");
    let (ok, err) = train(d, &mixed, &["--skip-invalid", "--no-test"]);
    assert!(ok, "{err}");
    assert!(err.contains("skipped_lines=2") || err.contains("skipped 2"), "{err}");
    // An existing model directory is refused before any work, unless --overwrite.
    let (ok, err) = train(d, &mixed, &["--skip-invalid", "--no-test"]);
    assert!(!ok);
    assert!(err.contains("already exists; pass --overwrite"), "{err}");
    let (ok, err) = train(d, &mixed, &["--skip-invalid", "--no-test", "--overwrite"]);
    assert!(ok, "{err}");
}

/// Input that makes the solve itself fail ends the run the same way in every
/// mode, and soon: the cluster must not retry it on other workers forever.
#[test]
fn a_failing_solve_ends_every_mode_with_one_message() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // 40 users rating 6 of 30 items each, 16 factors: singular without λ.
    let mut text = String::new();
    for u in 0..40 {
        for j in 0..6 {
            text.push_str(&format!("{u},{},{}\n", (u * 7 + j * 5) % 30, 1 + (u + j) % 5));
        }
    }
    let data = d.join("sparse.csv");
    std::fs::write(&data, text).unwrap();
    let mut messages = Vec::new();
    for mode in [&["--in-process"][..], &["--local", "2"], &[]] {
        let mut cmd = Command::new(binary("coordinator"));
        cmd.arg("--data")
            .arg(&data)
            .args(["--quiet", "--iterations", "2", "--factors", "16", "--lambda", "0", "--no-test"])
            .args(mode);
        let (ok, _, err) = run_with_timeout(&mut cmd, Duration::from_secs(60));
        assert!(!ok, "{mode:?}: λ = 0 was accepted");
        assert!(!err.contains("panicked") && !err.contains("worker lost"), "{mode:?}: {err}");
        let last = err.lines().rev().find(|l| l.starts_with("error:")).unwrap_or_default().to_string();
        assert!(
            last.contains("solving the users: row") && last.contains("not positive definite"),
            "{mode:?}: {err}"
        );
        messages.push(last);
    }
    assert!(messages.windows(2).all(|w| w[0] == w[1]), "{messages:?}");
}

/// A finite value far outside any rating scale is refused at load time, with
/// its file and line, in the default (cluster) mode too.
#[test]
fn extreme_values_are_refused_at_the_edge() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let data = d.join("huge.csv");
    std::fs::write(&data, "1,1,4\n1,2,3\n2,1,3e38\n2,2,5\n").unwrap();
    let mut cmd = Command::new(binary("coordinator"));
    cmd.arg("--data")
        .arg(&data)
        .args(["--quiet", "--iterations", "2", "--factors", "2"]);
    let (ok, _, err) = run_with_timeout(&mut cmd, Duration::from_secs(60));
    assert!(!ok);
    assert!(
        err.contains("huge.csv:3: rating '3e38' is outside the supported range ±1e9"),
        "{err}"
    );
    // Flags too.
    for (flag, value) in [("--alpha", "3e38"), ("--lambda", "1e30")] {
        let mut cmd = Command::new(binary("coordinator"));
        cmd.arg("--data").arg(&data).args(["--quiet", "--implicit", flag, value]);
        let (ok, _, err) = run_with_timeout(&mut cmd, Duration::from_secs(60));
        assert!(!ok, "{flag} {value} accepted");
        assert!(err.contains(flag) && err.contains("must be in"), "{err}");
    }
}
