//! What a newcomer sees on a terminal (the README's first command, through a
//! pseudo-terminal made by util-linux's `script`): the progress bar, one log
//! line per iteration and the summary; handshakes, job starts and block
//! holdings only with `-v`.

use std::process::Command;
use std::time::Duration;

use als_tests::{binary, run_with_timeout, strip_ansi};

fn on_a_terminal(args: &str) -> String {
    let cmd = format!("{} {args}", binary("coordinator").display());
    let mut script = Command::new("script");
    script.args(["-qec", &cmd, "/dev/null"]).env_remove("RUST_LOG");
    let (ok, out, err) = run_with_timeout(&mut script, Duration::from_secs(120));
    assert!(ok, "{out}{err}");
    strip_ansi(&out)
}

#[test]
fn a_terminal_shows_progress_iterations_and_the_summary_only() {
    // The bar redraws with carriage returns: count log records, not lines.
    let quiet = on_a_terminal("--iterations 3 --factors 4");
    assert_eq!(quiet.matches(" INFO ").count(), 3, "one info line per iteration:\n{quiet}");
    assert_eq!(quiet.matches(" INFO als_coordinator::iterations: iteration ").count(), 3, "{quiet}");
    assert!(
        quiet.contains("trained an explicit rating model") && quiet.contains("top-5 recommendations"),
        "{quiet}"
    );
    let verbose = on_a_terminal("-v --iterations 3 --factors 4");
    let n = verbose.matches(" INFO ").count();
    assert!(
        n > 10 && verbose.contains("worker connected"),
        "-v shows every info line ({n}):\n{verbose}"
    );
}
