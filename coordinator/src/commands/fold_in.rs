//! `coordinator fold-in`: add users to a saved model from a ratings file,
//! without retraining, as the next model version.

use std::io::Write;
use std::path::PathBuf;

use als_core::data::load_ratings;
use als_core::model::{fold_in_users, save_model};
use anyhow::Context;
use clap::Args;

use crate::args::{check_columns, LayoutArgs};
use crate::model_dir::open_model;

/// `coordinator fold-in`.
#[derive(Args, Debug, Clone)]
pub struct FoldInArgs {
    #[command(flatten)]
    pub model: crate::args::ModelDirArg,
    /// Ratings of the users to add, in any layout training reads. Users already
    /// in the model are refit: their rows here replace their history.
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// Directory of the new model version (refused if it exists, unless --overwrite; may be --model).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Replace an existing --out directory.
    #[arg(long)]
    pub overwrite: bool,
    #[command(flatten)]
    pub layout: LayoutArgs,
}

/// Run the command; a one-line summary goes to `out`.
pub fn run(args: &FoldInArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let model = open_model(&args.model.dir)?;
    if args.out.exists() && !args.overwrite {
        anyhow::bail!(
            "model directory {} already exists; pass --overwrite to replace it",
            args.out.display()
        );
    }
    let load = args.layout.load_options(None);
    check_columns(&load)?;
    // DataError messages name the file and line already.
    let raw = load_ratings(&args.data, &load).map_err(anyhow::Error::new)?;
    if raw.skipped_lines > 0 {
        tracing::warn!(
            "{}: {} invalid lines were skipped (--skip-invalid)",
            args.data.display(),
            raw.skipped_lines
        );
    }
    let (next, report) = fold_in_users(&model, &raw, args.layout.duplicates.map(Into::into))
        .with_context(|| format!("{}: cannot fold in", args.data.display()))?;
    if report.unknown_items > 0 {
        tracing::warn!(
            "{}: {} rows name items that are not in the model and were skipped",
            args.data.display(),
            report.unknown_items
        );
    }
    save_model(&next, &args.out, args.overwrite).with_context(|| format!("cannot save the model to {}", args.out.display()))?;
    tracing::info!(
        added = report.added,
        refit = report.refit,
        version = next.version(),
        "users folded in"
    );
    writeln!(
        out,
        "added {} users, refit {}; model version {} ({} users) written to {}",
        report.added,
        report.refit,
        next.version(),
        next.n_users(),
        args.out.display()
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use als_core::data::synth::{write_csv, SynthSpec};
    use als_core::model::{load_model, FoldIn};
    use clap::Parser;

    use super::run;
    use crate::cli::{Cli, Command};

    /// Another command, run as the binary runs it (commands never call each other).
    fn exec(args: &[&str], out: &mut Vec<u8>) -> anyhow::Result<()> {
        let cli = Cli::try_parse_from(std::iter::once("coordinator").chain(args.iter().copied())).unwrap();
        crate::cli::run(cli, out)
    }

    fn s(p: &Path) -> &str {
        p.to_str().unwrap()
    }

    fn cli(args: &[&str]) -> Command {
        let mut all = vec!["coordinator"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).unwrap().command.unwrap()
    }

    /// Train a small explicit model into `dir/model`.
    fn model_dir(dir: &Path) -> std::path::PathBuf {
        let data = dir.join("r.csv");
        let spec = SynthSpec {
            users: 200,
            items: 100,
            ratings: 3000,
            rank: 4,
            ..SynthSpec::default()
        };
        write_csv(&spec, &data, |_| {}).unwrap();
        let out = dir.join("model");
        exec(
            &[
                "--data",
                s(&data),
                "--factors",
                "5",
                "--iterations",
                "3",
                "--no-test",
                "--in-process",
                "--quiet",
                "--out",
                s(&out),
            ],
            &mut Vec::new(),
        )
        .unwrap();
        out
    }

    #[test]
    fn recommend_history_and_fold_in_commands() {
        let dir = tempfile::tempdir().unwrap();
        let mdir = model_dir(dir.path());
        let m = load_model(&mdir).unwrap();
        let (a, b) = (m.item_ids()[3].clone(), m.item_ids()[8].clone());

        // recommend --history: the core fold-in's list, history items excluded.
        let hist = dir.path().join("h.txt");
        std::fs::write(&hist, format!("# a new user\n{a},5\n{b}, 2\nnot-an-item,4\n")).unwrap();
        let r = ["recommend", "--model", s(&mdir), "--history", s(&hist), "-n", "4", "--json"];
        let mut out = Vec::new();
        exec(&r, &mut out).unwrap();
        let got: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let user = FoldIn::new(&m)
            .unwrap()
            .fold_in(&m, &[(a.as_str(), 5.0), (b.as_str(), 2.0)], None)
            .unwrap();
        let want = m.recommend_for_vector(&user.factors, user.bias, 4, &user.items, None);
        let got_items: Vec<&str> = got.iter().map(|g| g["item"].as_str().unwrap()).collect();
        let want_items: Vec<&str> = want.iter().map(|w| m.item_ids()[w.index as usize].as_str()).collect();
        assert_eq!(got_items, want_items);
        assert!(!got_items.contains(&a.as_str()) && !got_items.contains(&b.as_str()));

        // Bad lines name the file and line; an explicit model needs ratings.
        std::fs::write(&hist, format!("{a},5\n{b},lots\n")).unwrap();
        let e = format!("{:#}", exec(&r, &mut Vec::new()).unwrap_err());
        assert!(e.contains("h.txt:2: value 'lots' is not a number"), "{e}");
        std::fs::write(&hist, format!("{a},5\n{b}\n")).unwrap();
        let e = format!("{:#}", exec(&r, &mut Vec::new()).unwrap_err());
        assert!(e.contains("h.txt:2: the model is explicit"), "{e}");

        // fold-in: new users appended as the next version; the old directory is untouched.
        let data = dir.path().join("new.csv");
        std::fs::write(&data, format!("newbie,{a},4\nnewbie,{b},1\n{},{a},3\n", m.user_ids()[0])).unwrap();
        let out = dir.path().join("model2");
        let Command::FoldIn(f) = cli(&["fold-in", "--model", s(&mdir), "--data", s(&data), "--out", s(&out)]) else {
            panic!("not fold-in")
        };
        let mut msg = Vec::new();
        run(&f, &mut msg).unwrap();
        let msg = String::from_utf8(msg).unwrap();
        assert!(msg.contains("added 1 users, refit 1; model version 2"), "{msg}");
        let m2 = load_model(&out).unwrap();
        assert_eq!((m2.version(), m2.n_users()), (m.version() + 1, m.n_users() + 1));
        let u = m2.user_index("newbie").unwrap();
        assert_eq!(
            m2.user_factors().row(u).to_vec(),
            FoldIn::new(&m)
                .unwrap()
                .fold_in(&m, &[(a.as_str(), 4.0), (b.as_str(), 1.0)], None)
                .unwrap()
                .factors
        );
        assert_eq!(load_model(&mdir).unwrap(), m);
        // The output exists now: refused without --overwrite.
        let e = run(&f, &mut Vec::new()).unwrap_err().to_string();
        assert!(e.contains("already exists"), "{e}");
        // A bad data line is named.
        std::fs::write(&data, format!("newbie,{a},4\nnewbie,{b}\n")).unwrap();
        let Command::FoldIn(f) = cli(&[
            "fold-in",
            "--model",
            s(&mdir),
            "--data",
            s(&data),
            "--out",
            s(&dir.path().join("m3")),
        ]) else {
            panic!("not fold-in")
        };
        let e = format!("{:#}", run(&f, &mut Vec::new()).unwrap_err());
        assert!(e.contains("new.csv:2"), "{e}");
    }
}
