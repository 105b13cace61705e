//! (being written)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format { #[default] Auto }
#[derive(Debug, Clone, Default)]
pub struct LoadOptions { pub format: Format }
