//! (being written)
pub enum SplitSpec { None }
