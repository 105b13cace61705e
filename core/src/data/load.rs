//! (being written)
pub fn load_ratings() {}
