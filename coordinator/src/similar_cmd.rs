//! `coordinator similar`: items (or users) closest to one by cosine over the factors.

use std::io::Write;

use crate::cli::SimilarArgs;
use crate::recommend_cmd::{item_row, open_model, user_row, write_list};

/// Run the command; results go to `out` (stdout in the binary).
pub fn run(args: &SimilarArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let model = open_model(&args.model)?;
    match (&args.item, &args.user) {
        (Some(id), None) => {
            let i = item_row(&model, id)?;
            let sims = model.similar_items(i, args.n);
            write_list(out, &sims, args.json, "item", &model.item_ids)?;
        }
        (None, Some(id)) => {
            let u = user_row(&model, id)?;
            let sims = model.similar_users(u, args.n);
            write_list(out, &sims, args.json, "user", &model.user_ids)?;
        }
        _ => anyhow::bail!("give exactly one of --item ID and --user ID"),
    }
    Ok(())
}
