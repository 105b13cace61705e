//! `coordinator similar`: items (or users) closest to one by cosine over the factors.

use std::io::Write;

use clap::Args;

use crate::model_dir::{item_row, open_model, user_row, write_list};

/// `coordinator similar`.
#[derive(Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("query").required(true).args(["item", "user"])))]
pub struct SimilarArgs {
    #[command(flatten)]
    pub model: crate::args::ModelDirArg,
    /// Items similar to this item.
    #[arg(long, value_name = "ID")]
    pub item: Option<String>,
    /// Users similar to this user.
    #[arg(long, value_name = "ID")]
    pub user: Option<String>,
    #[command(flatten)]
    pub list: crate::args::ListArgs,
}

/// Run the command; results go to `out` (stdout in the binary).
pub fn run(args: &SimilarArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let model = open_model(&args.model.dir)?;
    match (&args.item, &args.user) {
        (Some(id), None) => {
            let i = item_row(&model, id)?;
            let sims = model.similar_items(i, args.list.n);
            write_list(out, &sims, args.list.json, "item", model.item_ids())?;
        }
        (None, Some(id)) => {
            let u = user_row(&model, id)?;
            let sims = model.similar_users(u, args.list.n);
            write_list(out, &sims, args.list.json, "user", model.user_ids())?;
        }
        _ => anyhow::bail!("give exactly one of --item ID and --user ID"),
    }
    Ok(())
}
