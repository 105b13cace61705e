//! Kill the coordinator mid-run, resume from its checkpoint: the same model
//! as an uninterrupted run. A checkpoint of another run is refused.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use als_tests::{binary, generate, run_with_timeout};

fn coordinator(data: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(binary("coordinator"));
    cmd.arg("--data")
        .arg(data)
        .args(["--factors", "8", "--iterations", "10", "--eval-every", "0", "--quiet"])
        .args(args);
    cmd
}

#[test]
fn resume_after_a_killed_coordinator_gives_the_uninterrupted_model() {
    let tmp = tempfile::tempdir().unwrap();
    let data = generate(tmp.path(), 2000, 800, 80000);
    let p = |n: &str| tmp.path().join(n).to_string_lossy().into_owned();

    let (ok, _, err) = run_with_timeout(
        &mut coordinator(&data, &["--in-process", "--out", &p("whole")]),
        Duration::from_secs(120),
    );
    assert!(ok, "{err}");

    // Interrupted run on two in-process workers: SIGKILL after the 4th checkpoint.
    let mut child = coordinator(&data, &["--local", "2", "--checkpoint-dir", &p("ckpt"), "--out", &p("resumed")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut written = 0;
    for line in BufReader::new(child.stderr.take().unwrap()).lines().map_while(Result::ok) {
        if line.contains("checkpoint written") {
            written += 1;
            if written == 4 {
                child.kill().unwrap();
                break;
            }
        }
    }
    let _ = child.wait();
    assert_eq!(written, 4);
    assert!(!Path::new(&p("resumed")).exists(), "a killed run must leave no model behind");

    let (ok, _, err) = run_with_timeout(
        &mut coordinator(
            &data,
            &["--in-process", "--checkpoint-dir", &p("ckpt"), "--resume", "--out", &p("resumed")],
        ),
        Duration::from_secs(120),
    );
    assert!(ok, "{err}");
    assert!(err.contains("resuming"), "{err}");
    for f in ["user_factors.npy", "item_factors.npy", "user_bias.npy", "item_bias.npy"] {
        assert!(
            std::fs::read(tmp.path().join("whole").join(f)).unwrap() == std::fs::read(tmp.path().join("resumed").join(f)).unwrap(),
            "{f} differs"
        );
    }

    // Other hyperparameters: the checkpoint is refused, never silently used.
    let (ok, _, err) = run_with_timeout(
        &mut coordinator(
            &data,
            &["--in-process", "--lambda", "0.3", "--checkpoint-dir", &p("ckpt"), "--resume"],
        ),
        Duration::from_secs(60),
    );
    assert!(!ok);
    assert!(err.contains("another run"), "{err}");

    // Fewer iterations than the checkpoint has done: refused, naming both numbers.
    let mut short = Command::new(binary("coordinator"));
    short
        .arg("--data")
        .arg(&data)
        .args([
            "--factors",
            "8",
            "--iterations",
            "2",
            "--eval-every",
            "0",
            "--quiet",
            "--in-process",
        ])
        .args(["--checkpoint-dir", &p("ckpt"), "--resume", "--out", &p("short")]);
    let (ok, _, err) = run_with_timeout(&mut short, Duration::from_secs(60));
    assert!(!ok, "a 10-iteration checkpoint was resumed as a 2-iteration model");
    assert!(err.contains("10 iterations done, more than --iterations 2"), "{err}");
    assert!(!Path::new(&p("short")).exists());
}
