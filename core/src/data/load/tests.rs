//! The loader against hand-written files: formats, quoting, ids, numbers, errors with their line.

use super::number::{fast_decimal, parse_rating, parse_ts};
use super::*;
use std::path::PathBuf;

fn opts(format: Format) -> LoadOptions {
    LoadOptions {
        format,
        ..Default::default()
    }
}

fn parse(text: &str, name: &str, o: &LoadOptions) -> Result<RawRatings, DataError> {
    parse_ratings(text.as_bytes(), Path::new(name), o)
}

fn rows(r: &RawRatings) -> Vec<(String, String, f32)> {
    (0..r.len())
        .map(|k| r.row(k))
        .map(|(u, i, v)| (u.to_string(), i.to_string(), v))
        .collect()
}

fn t(u: &str, i: &str, v: f32) -> (String, String, f32) {
    (u.into(), i.into(), v)
}

/// (line, problem) of a Malformed error.
fn malformed(res: Result<RawRatings, DataError>) -> (u64, String) {
    match res {
        Err(DataError::Malformed { line, problem, .. }) => (line, problem),
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[test]
fn ml100k_tab_separated_with_timestamps_and_interning() {
    let r = parse(
        "196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t377\t1\t878887116\n",
        "u.data",
        &opts(Format::Auto),
    )
    .unwrap();
    assert_eq!(rows(&r), vec![t("196", "242", 3.0), t("186", "302", 3.0), t("196", "377", 1.0)]);
    assert_eq!(r.user_tokens, vec!["196", "186"]);
    assert_eq!(r.item_tokens, vec!["242", "302", "377"]);
    assert_eq!(r.users, vec![0, 1, 0]);
    assert_eq!(r.timestamps, Some(vec![881250949, 891717742, 878887116]));
    assert_eq!(r.source, "u.data");
    assert_eq!(r.skipped_lines, 0);
}

#[test]
fn ml1m_double_colon_and_crlf() {
    let r = parse("1::1193::5::978300760\r\n1::661::3::978302109\r\n", "x.txt", &opts(Format::Auto)).unwrap();
    assert_eq!(rows(&r), vec![t("1", "1193", 5.0), t("1", "661", 3.0)]);
    assert_eq!(r.timestamps, Some(vec![978300760, 978302109]));
    // Single colons belong to the id.
    let r = parse("a:b::c::4\n", "ratings.dat", &opts(Format::Auto)).unwrap();
    assert_eq!(rows(&r), vec![t("a:b", "c", 4.0)]);
    assert_eq!(r.timestamps, None);
}

#[test]
fn ml_latest_header_always_skipped_and_bom() {
    let text = "\u{feff}userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n";
    let r = parse(text, "ratings.csv", &opts(Format::Auto)).unwrap();
    assert_eq!(rows(&r), vec![t("1", "1", 4.0), t("1", "3", 4.5)]);
    assert_eq!(r.timestamps, Some(vec![964982703, 964981247]));
    // Explicit ml-latest skips the first line even when it looks like data.
    let r = parse("1,1,4.0\n2,2,3.0\n", "r.csv", &opts(Format::MlLatest)).unwrap();
    assert_eq!(rows(&r), vec![t("2", "2", 3.0)]);
    // The header option wins over the format rule.
    let o = LoadOptions {
        header: Some(false),
        ..opts(Format::MlLatest)
    };
    assert_eq!(parse("1,1,4.0\n2,2,3.0\n", "r.csv", &o).unwrap().len(), 2);
}

#[test]
fn csv_header_detection_trimming_and_opaque_ids() {
    let r = parse("user,item,rating\n 007 , a ,5\n7,a, 2.5 \n", "r.csv", &opts(Format::Auto)).unwrap();
    assert_eq!(rows(&r), vec![t("007", "a", 5.0), t("7", "a", 2.5)]);
    assert_eq!(r.user_tokens, vec!["007", "7"]);
    assert_eq!(r.timestamps, None);
    // Non-numeric ids with a numeric rating: no header.
    let r = parse("alice,book,5\nbob,book,4\n", "r.csv", &opts(Format::Csv)).unwrap();
    assert_eq!(r.len(), 2);
    // A header that follows blank lines.
    let r = parse("\n\nu,i,r\n\n1,2,3\n", "r.csv", &opts(Format::Csv)).unwrap();
    assert_eq!(rows(&r), vec![t("1", "2", 3.0)]);
    // header: Some(true) on a file whose first line looks like data.
    let o = LoadOptions {
        header: Some(true),
        ..opts(Format::Csv)
    };
    assert_eq!(rows(&parse("1,2,3\n4,5,1\n", "r.csv", &o).unwrap()), vec![t("4", "5", 1.0)]);
}

#[test]
fn csv_quoted_fields() {
    let r = parse("\"a,b\",\"say \"\"hi\"\"\",\"4\"\n  \"x\" ,y,1\n", "r.csv", &opts(Format::Csv)).unwrap();
    assert_eq!(rows(&r), vec![t("a,b", "say \"hi\"", 4.0), t("x", "y", 1.0)]);
    let (line, p) = malformed(parse("1,2,3\n\"a,2,3\n", "r.csv", &opts(Format::Csv)));
    assert_eq!((line, p.as_str()), (2, "field 1 has no closing quote"));
    let (line, p) = malformed(parse("1,\"2\"x,3\n", "r.csv", &opts(Format::Csv)));
    assert_eq!((line, p.as_str()), (1, "unexpected text after the closing quote of field 2"));
}

#[test]
fn tsv_and_whitespace() {
    let r = parse("user\titem\trating\nu1\ti1\t4\n", "r.tsv", &opts(Format::Auto)).unwrap();
    assert_eq!(rows(&r), vec![t("u1", "i1", 4.0)]);
    let r = parse("  1   2 \t 3.5  100\n\n3 4 1\n", "r.ws", &opts(Format::Whitespace)).unwrap();
    assert_eq!(rows(&r), vec![t("1", "2", 3.5), t("3", "4", 1.0)]);
    // Timestamps on only some rows are dropped.
    assert_eq!(r.timestamps, None);
    let r = parse("1 2 3 10\n3 4 1 20", "r.txt", &opts(Format::Auto)).unwrap();
    assert_eq!(r.timestamps, Some(vec![10, 20]));
}

#[test]
fn selectable_columns_and_implicit_mode() {
    // rating, timestamp, item, user
    let o = LoadOptions {
        user_col: 3,
        item_col: 2,
        rating_col: Some(0),
        timestamp_col: Some(1),
        ..opts(Format::Csv)
    };
    let r = parse("r,ts,item,user\n4.5,100,i9,u1\n2,200,i8,u1\n", "r.csv", &o).unwrap();
    assert_eq!(rows(&r), vec![t("u1", "i9", 4.5), t("u1", "i8", 2.0)]);
    assert_eq!(r.timestamps, Some(vec![100, 200]));
    // Implicit: no rating column, every line is one event.
    let o = LoadOptions {
        rating_col: None,
        timestamp_col: Some(2),
        ..opts(Format::Csv)
    };
    let r = parse("user,item,time\nu1,i1,5\nu2,i1,6\nu1,i1,7\n", "r.csv", &o).unwrap();
    assert_eq!(rows(&r), vec![t("u1", "i1", 1.0), t("u2", "i1", 1.0), t("u1", "i1", 1.0)]);
    assert_eq!(r.timestamps, Some(vec![5, 6, 7]));
    // Implicit, two columns, numeric first field: no header.
    let o = LoadOptions {
        rating_col: None,
        ..opts(Format::Csv)
    };
    let r = parse("1,10\n2,10\n", "r.csv", &o).unwrap();
    assert_eq!(rows(&r), vec![t("1", "10", 1.0), t("2", "10", 1.0)]);
    assert_eq!(r.timestamps, None);
    // Without a timestamp column nothing is parsed there.
    let o = LoadOptions {
        timestamp_col: None,
        ..opts(Format::Csv)
    };
    let r = parse("1,10,3,notanumber\n", "r.csv", &o).unwrap();
    assert_eq!((r.len(), r.timestamps.clone()), (1, None));
}

#[test]
fn malformed_lines_name_line_and_problem() {
    let o = opts(Format::Csv);
    let cases: &[(&str, u64, &str)] = &[
        ("1,2,3\n\n1,2\n", 3, "expected at least 3 fields, found 2"),
        ("1,2,3\n1,2,abc\n", 2, "rating 'abc' is not a number"),
        ("1,2,inf\n", 1, "rating 'inf' is not finite"),
        ("1,2,3\n1,2,NaN\n", 2, "rating 'NaN' is not finite"),
        ("1,2,1e40\n", 1, "rating '1e40' is not finite"),
        ("1,2,3\n1,2,3e38\n", 2, "rating '3e38' is outside the supported range ±1e9"),
        ("1,2,-2e9\n", 1, "rating '-2e9' is outside the supported range ±1e9"),
        ("1,2,3\n1,2,\n", 2, "rating '' is not a number"),
        ("1,2,3\r\n ,2,3\r\n", 2, "empty user id"),
        ("1,,3\n", 1, "empty item id"),
        ("1,2,3,12.5\n", 1, "timestamp '12.5' is not an integer"),
    ];
    for (text, line, problem) in cases {
        let (l, p) = malformed(parse(text, "bad.csv", &o));
        assert_eq!((l, p.as_str()), (*line, *problem), "{text:?}");
    }
    let long = "x".repeat(300);
    let (l, p) = malformed(parse(&format!("1,2,3\n{long},2,3\n"), "bad.csv", &o));
    assert_eq!((l, p.as_str()), (2, "user id is 300 bytes long (limit 256)"));
    let o2 = LoadOptions {
        max_id_len: 4,
        ..o.clone()
    };
    let (l, p) = malformed(parse("1,12345,3\n", "bad.csv", &o2));
    assert_eq!((l, p.as_str()), (1, "item id is 5 bytes long (limit 4)"));
    let (l, p) = malformed(parse_ratings(b"1,2,3\n\xff\xfe,2,3\n", Path::new("bad.csv"), &o));
    assert_eq!((l, p.as_str()), (2, "user id is not valid UTF-8"));
    let (l, p) = malformed(parse_ratings(b"1,a\xff,3\n", Path::new("bad.csv"), &o));
    assert_eq!((l, p.as_str()), (1, "item id is not valid UTF-8"));
    // The error names the file, and the header counts as a line.
    match parse("user,item,rating\n1,2,x\n", "dir/bad.csv", &o) {
        Err(e @ DataError::Malformed { .. }) => {
            assert_eq!(e.to_string(), "dir/bad.csv:2: rating 'x' is not a number")
        }
        other => panic!("{other:?}"),
    }
    // ml-100k with commas: one field.
    let (l, p) = malformed(parse("1,2,3\n", "u.data", &opts(Format::Auto)));
    assert_eq!((l, p.as_str()), (1, "expected at least 3 fields, found 1"));
}

#[test]
fn mixed_ids_keep_first_seen_order() {
    // Canonical decimals, leading zeros, signs and names interleaved.
    let text = "5,x,1\n007,10,1\n7,x,1\nbob,010,1\n5,10,1\n-3,0,1\n0,x,1\n7,0,1\n";
    let r = parse(text, "r.csv", &opts(Format::Csv)).unwrap();
    assert_eq!(r.user_tokens, vec!["5", "007", "7", "bob", "-3", "0"]);
    assert_eq!(r.item_tokens, vec!["x", "10", "010", "0"]);
    assert_eq!(r.users, vec![0, 1, 2, 3, 0, 4, 5, 2]);
    assert_eq!(r.items, vec![0, 1, 0, 2, 1, 3, 0, 3]);
    // Sparse large ids (the hash map path) and 9-digit / 10-digit ids.
    let text = "999999999,1,1\n1000000000,1,1\n3,2,1\n999999999,2,1\n";
    let r = parse(text, "r.csv", &opts(Format::Csv)).unwrap();
    assert_eq!(r.user_tokens, vec!["999999999", "1000000000", "3"]);
    assert_eq!(r.users, vec![0, 1, 2, 0]);
}

#[test]
fn skip_invalid_counts_and_keeps_first_seen_order() {
    let o = LoadOptions {
        skip_invalid: true,
        ..opts(Format::Csv)
    };
    let r = parse("a,x,1\nb,y,oops\nc,z\nd,w,2\n,q,3\n", "r.csv", &o).unwrap();
    assert_eq!(rows(&r), vec![t("a", "x", 1.0), t("d", "w", 2.0)]);
    assert_eq!(r.skipped_lines, 3);
    // Users of skipped lines are not interned.
    assert_eq!(r.user_tokens, vec!["a", "d"]);
    assert_eq!(r.item_tokens, vec!["x", "w"]);
    assert!(matches!(parse("a,x,z\n", "r.csv", &o), Err(DataError::Empty { .. })));
}

#[test]
fn empty_inputs() {
    let o = opts(Format::Auto);
    for text in ["", "\n\n  \r\n", "\u{feff}", "userId,movieId,rating,timestamp\n"] {
        assert!(matches!(parse(text, "ratings.csv", &o), Err(DataError::Empty { .. })), "{text:?}");
    }
    assert!(matches!(parse("user,item,rating\n\n", "r.csv", &o), Err(DataError::Empty { .. })));
    assert!(matches!(parse("u\n", "r.txt", &o), Err(DataError::UnknownFormat { .. })));
}

#[test]
fn unreadable_file_is_io_with_path() {
    let p = PathBuf::from("/nonexistent/dir/ratings.csv");
    match load_ratings(&p, &LoadOptions::default()) {
        Err(DataError::Io { path, .. }) => assert_eq!(path, p),
        other => panic!("{other:?}"),
    }
}

#[test]
fn fast_decimal_matches_std_parse() {
    let mut s = crate::rng::SplitMix64::new(3);
    let mut cases: Vec<String> = ["0", "-0", "5", "4.5", "0.1", ".5", "5.", "9999999", "0.0000001", "+3.25"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for _ in 0..20000 {
        let digits = 1 + (s.next_u64() % 7) as usize;
        let m = s.next_u64() % 10u64.pow(digits as u32);
        let mut t = format!("{m:0digits$}");
        let frac = (s.next_u64() % (digits as u64 + 1)) as usize;
        t.insert(digits - frac, '.');
        cases.push(t);
    }
    for c in &cases {
        let want: f32 = c.parse().unwrap();
        assert_eq!(fast_decimal(c.as_bytes()).map(f32::to_bits), Some(want.to_bits()), "{c}");
    }
    assert_eq!(fast_decimal(b"12345678"), None);
    assert_eq!(fast_decimal(b"1e3"), None);
    assert_eq!(fast_decimal(b"."), None);
    assert_eq!(parse_rating(b"12345678.5").unwrap(), 12345678.5f32);
    assert_eq!(parse_ts(b"-42").unwrap(), -42);
    assert_eq!(parse_ts(b"9223372036854775807").unwrap(), i64::MAX);
    assert!(parse_ts(b"9223372036854775808").is_err());
}

/// A u.data-like file big enough for the parallel path.
fn synthetic_tsv(lines: usize, seed: u64) -> Vec<u8> {
    let mut s = crate::rng::SplitMix64::new(seed);
    let mut out = Vec::with_capacity(lines * 24);
    for _ in 0..lines {
        let u = s.next_u64() % 100_000;
        let i = s.next_u64() % 20_000;
        let r = 1 + s.next_u64() % 5;
        let ts = 870_000_000 + s.next_u64() % 30_000_000;
        if u.is_multiple_of(7) {
            // Some ids that are not canonical decimals.
            out.extend_from_slice(format!("u{u}\t0{i}\t{r}\t{ts}\n").as_bytes());
        } else {
            out.extend_from_slice(format!("{u}\t{i}\t{r}\t{ts}\n").as_bytes());
        }
    }
    out
}

#[test]
fn parallel_chunks_equal_sequential() {
    let bytes = synthetic_tsv(600_000, 1); // > PARALLEL_MIN_BYTES
    assert!(bytes.len() >= PARALLEL_MIN_BYTES);
    let o = opts(Format::Tsv);
    let pool = |n| rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap();
    let seq = pool(1).install(|| parse_ratings(&bytes, Path::new("big.tsv"), &o)).unwrap();
    let par = pool(4).install(|| parse_ratings(&bytes, Path::new("big.tsv"), &o)).unwrap();
    assert_eq!(seq.len(), 600_000);
    assert_eq!(seq, par);
    // An error far into the file has the same line number both ways.
    let mut bad = bytes.clone();
    let at = bad.len() - 30;
    let line_start = bad[..at].iter().rposition(|&b| b == b'\n').unwrap() + 1;
    let line_no = bad[..line_start].iter().filter(|&&b| b == b'\n').count() as u64 + 1;
    bad[line_start] = b'\t';
    let e1 = malformed(pool(1).install(|| parse_ratings(&bad, Path::new("big.tsv"), &o)));
    let e4 = malformed(pool(4).install(|| parse_ratings(&bad, Path::new("big.tsv"), &o)));
    assert_eq!(e1, (line_no, "empty user id".to_string()));
    assert_eq!(e4, e1);
}

/// MovieLens may not be redistributed: run by scripts/test.sh when shared/data is beside the checkout.
#[test]
#[ignore = "needs shared/data"]
fn real_movielens_files_on_shared_data() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data");
    let r = load_ratings(&data.join("ml-100k/u.data"), &LoadOptions::default()).unwrap();
    assert_eq!((r.len(), r.user_tokens.len(), r.item_tokens.len()), (100_000, 943, 1682));
    assert_eq!(r.row(0), ("196", "242", 3.0));
    assert!(r.timestamps.is_some());
    let r = load_ratings(&data.join("ml-latest-small/ratings.csv"), &LoadOptions::default()).unwrap();
    assert_eq!((r.len(), r.user_tokens.len(), r.item_tokens.len()), (100_836, 610, 9724));
}

/// Ad-hoc throughput check: `cargo test --release -p als-core --lib
/// data::load::tests::throughput -- --ignored --nocapture`.
#[test]
#[ignore]
fn throughput() {
    let bytes = synthetic_tsv(10_000_000, 7);
    let o = opts(Format::Ml100k);
    for threads in [1, rayon::current_num_threads()] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        for _ in 0..2 {
            let t0 = std::time::Instant::now();
            let r = pool.install(|| parse_ratings(&bytes, Path::new("u.data"), &o)).unwrap();
            let s = t0.elapsed().as_secs_f64();
            println!(
                "{threads} thread(s): {} rows, {:.0} MB in {s:.3} s: {:.0} MB/s",
                r.len(),
                bytes.len() as f64 / 1e6,
                bytes.len() as f64 / 1e6 / s
            );
        }
    }
}
