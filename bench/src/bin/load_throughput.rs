//! Throughput of the ratings loader on a u.data-like file of 10 million lines.
//!
//!     cargo run --release -p als-bench --bin load_throughput -- --dir bench/results/data
//!
//! Writes `DIR/udata_<LINES>.data` (TAB separated `user item rating
//! timestamp`, like MovieLens `u.data`; deterministic) unless it is already
//! there, then times `als_core::data::load_ratings` on it (file read, parse
//! and id interning; `--format auto`, which picks ml-100k from the name),
//! best of `--runs`, for each thread count, and the in-memory parse alone
//! (`parse_ratings`), and prints MB/s (10⁶ bytes) and lines/s.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use als_core::data::{load_ratings, parse_ratings, LoadOptions, RawRatings};
use als_core::rng::SplitMix64;
use anyhow::{bail, Context, Result};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Time load_ratings on a >= 10M-line u.data-like file and print MB/s and lines/s")]
struct Args {
    /// Directory of the generated file (created; the file is reused when present).
    #[arg(long, default_value_os_t = std::env::temp_dir().join("als-bench"))]
    dir: PathBuf,
    /// Lines of the generated file.
    #[arg(long, default_value_t = 10_000_000)]
    lines: u64,
    /// Timed loads per setting; the best is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Thread counts of the rayon pool the loader runs in (comma separated; 0 = all cores).
    #[arg(long, value_delimiter = ',', default_value = "1,0")]
    threads: Vec<usize>,
    /// Distinct users / items of the generated file.
    #[arg(long, default_value_t = 200_000)]
    users: u64,
    #[arg(long, default_value_t = 50_000)]
    items: u64,
}

fn push_u64(buf: &mut Vec<u8>, mut v: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    buf.extend_from_slice(&tmp[i..]);
}

/// `user\titem\trating\ttimestamp\n` lines: 1-based ids with a skewed
/// (popular-first) distribution, ratings 1..=5, 9-digit timestamps.
fn generate(path: &Path, lines: u64, users: u64, items: u64) -> Result<()> {
    let tmp = path.with_extension("data.partial");
    let f = std::fs::File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
    let mut rng = SplitMix64::new(42);
    let mut buf = Vec::with_capacity(1 << 20);
    for _ in 0..lines {
        let (a, b) = (rng.next_f64(), rng.next_f64());
        push_u64(&mut buf, 1 + ((a * a * users as f64) as u64).min(users - 1));
        buf.push(b'\t');
        push_u64(&mut buf, 1 + ((b * b * items as f64) as u64).min(items - 1));
        buf.push(b'\t');
        let r = rng.next_u64();
        push_u64(&mut buf, 1 + r % 5);
        buf.push(b'\t');
        push_u64(&mut buf, 874_724_710 + (r >> 8) % 20_000_000);
        buf.push(b'\n');
        if buf.len() >= (1 << 20) - 64 {
            w.write_all(&buf)?;
            buf.clear();
        }
    }
    w.write_all(&buf)?;
    w.flush()?;
    drop(w);
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn best_of<T>(runs: usize, mut f: impl FnMut() -> Result<T>) -> Result<(f64, Vec<f64>, T)> {
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        let v = f()?;
        times.push(t.elapsed().as_secs_f64());
        last = Some(v);
    }
    let best = times.iter().copied().fold(f64::INFINITY, f64::min);
    Ok((best, times, last.expect("at least one run")))
}

fn report(what: &str, threads: usize, bytes: u64, lines: u64, best: f64, times: &[f64]) {
    let runs: Vec<String> = times.iter().map(|t| format!("{t:.3}")).collect();
    println!(
        "{what:<26} threads={threads:<2} best {best:>7.3} s  {:>8.1} MB/s  {:>6.2} M lines/s   (runs: {} s)",
        bytes as f64 / 1e6 / best,
        lines as f64 / 1e6 / best,
        runs.join(", ")
    );
}

fn main() -> Result<()> {
    let a = Args::parse();
    if a.users == 0 || a.items == 0 || a.lines == 0 {
        bail!("--lines, --users and --items must be positive");
    }
    std::fs::create_dir_all(&a.dir).with_context(|| format!("create {}", a.dir.display()))?;
    let path = a.dir.join(format!("udata_{}.data", a.lines));
    if path.exists() {
        eprintln!("reusing {}", path.display());
    } else {
        eprintln!("writing {} ({} lines) ...", path.display(), a.lines);
        let t = Instant::now();
        generate(&path, a.lines, a.users, a.items)?;
        eprintln!("  written in {:.1} s", t.elapsed().as_secs_f64());
    }
    let bytes = std::fs::metadata(&path)?.len();
    let opts = LoadOptions::default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!(
        "# load_ratings on {} ({:.1} MB, {} lines), best of {}, {} logical CPUs",
        path.display(),
        bytes as f64 / 1e6,
        a.lines,
        a.runs,
        cores
    );
    let mut seen = Vec::new();
    for &t in &a.threads {
        let t = if t == 0 { cores } else { t };
        if seen.contains(&t) {
            continue;
        }
        seen.push(t);
        let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build()?;
        let (best, times, raw): (f64, Vec<f64>, RawRatings) = pool.install(|| best_of(a.runs, || Ok(load_ratings(&path, &opts)?)))?;
        if raw.len() as u64 != a.lines {
            bail!(
                "{} holds {} rows, expected {} (delete it to regenerate)",
                path.display(),
                raw.len(),
                a.lines
            );
        }
        report("load_ratings (file)", t, bytes, a.lines, best, &times);
        if t == *seen.first().unwrap_or(&t) {
            eprintln!("  {} users, {} items", raw.user_tokens.len(), raw.item_tokens.len());
        }
        drop(raw);
        let data = std::fs::read(&path)?;
        let (best, times, _) = pool.install(|| best_of(a.runs, || Ok(parse_ratings(&data, &path, &opts)?)))?;
        report("parse_ratings (in memory)", t, bytes, a.lines, best, &times);
    }
    Ok(())
}
