//! Ratings file formats, load options and format detection.
//!
//! The named MovieLens formats and the detection rules follow the evaluation
//! protocol of `shared/anchors/common.py` (step 1); the generic formats
//! (`csv`, `tsv`, `whitespace`) add selectable columns, header detection and
//! implicit feedback without a rating column.

use std::path::Path;

use super::DataError;

/// The layout of a ratings file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Guessed from the file name and the first line ([`detect_format`]).
    #[default]
    Auto,
    /// MovieLens 100k `u.data`: TAB separated `user item rating timestamp`, no header.
    Ml100k,
    /// MovieLens 1M/10M `ratings.dat`: `user::item::rating::timestamp`, no header.
    Ml1m,
    /// MovieLens latest/20M/25M/32M `ratings.csv`: header `userId,movieId,rating,timestamp`.
    MlLatest,
    /// Comma separated; fields may be double-quoted (`""` is a quote inside one).
    Csv,
    /// TAB separated.
    Tsv,
    /// Fields separated by runs of spaces and/or tabs.
    Whitespace,
}

impl Format {
    /// Every format, in the order the error message of [`str::parse`] lists them.
    pub const ALL: [Format; 7] = [
        Format::Auto,
        Format::Ml100k,
        Format::Ml1m,
        Format::MlLatest,
        Format::Csv,
        Format::Tsv,
        Format::Whitespace,
    ];

    /// The name used on the command line (`ml-100k`, `csv`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Format::Auto => "auto",
            Format::Ml100k => "ml-100k",
            Format::Ml1m => "ml-1m",
            Format::MlLatest => "ml-latest",
            Format::Csv => "csv",
            Format::Tsv => "tsv",
            Format::Whitespace => "whitespace",
        }
    }

    /// Whether the first line is a header when [`LoadOptions::header`] is `None`:
    /// `Some(true/false)` for the MovieLens formats, `None` (look at the line) otherwise.
    pub fn fixed_header(&self) -> Option<bool> {
        match self {
            Format::Ml100k | Format::Ml1m => Some(false),
            Format::MlLatest => Some(true),
            Format::Auto | Format::Csv | Format::Tsv | Format::Whitespace => None,
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim().to_ascii_lowercase();
        Format::ALL.iter().copied().find(|f| f.name() == t).ok_or_else(|| {
            let names: Vec<&str> = Format::ALL.iter().map(Format::name).collect();
            format!("unknown format '{s}' ({})", names.join(", "))
        })
    }
}

/// How to read a ratings file.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub format: Format,
    /// `None` = auto: for csv/tsv/whitespace, a first line whose rating field
    /// (or, without a rating column, first field) is not a number is a header;
    /// ml-latest always has one, ml-100k and ml-1m never.
    pub header: Option<bool>,
    /// 0-based column of the user id.
    pub user_col: usize,
    /// 0-based column of the item id.
    pub item_col: usize,
    /// Column of the rating; `None` = implicit events, every line counts 1.0.
    pub rating_col: Option<usize>,
    /// Column of an integer timestamp, used on the lines that have it.
    pub timestamp_col: Option<usize>,
    /// Skip malformed lines (counted in `RawRatings::skipped_lines`) instead of failing.
    pub skip_invalid: bool,
    /// Longest accepted user or item id, in bytes.
    pub max_id_len: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            format: Format::Auto,
            header: None,
            user_col: 0,
            item_col: 1,
            rating_col: Some(2),
            timestamp_col: Some(3),
            skip_invalid: false,
            max_id_len: 256,
        }
    }
}

/// Guess the format as `common.py` does, from the file name and the first
/// (non-blank) line.
///
/// `u.data` / `*.data` is ml-100k and `*.dat` is ml-1m whatever the content;
/// otherwise a `userId,movieId,rating` header is ml-latest, a TAB makes it
/// tsv (read exactly like ml-100k when there is no header), `::` ml-1m, a
/// comma csv, and spaces whitespace-separated columns.
pub fn detect_format(path: &Path, first_line: &str) -> Result<Format, DataError> {
    let base = path.file_name().map(|b| b.to_string_lossy().into_owned()).unwrap_or_default();
    if base == "u.data" || base.ends_with(".data") {
        return Ok(Format::Ml100k);
    }
    if base.ends_with(".dat") {
        return Ok(Format::Ml1m);
    }
    let line = first_line.strip_prefix('\u{feff}').unwrap_or(first_line);
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim_start().to_ascii_lowercase().starts_with("userid,movieid,rating") {
        return Ok(Format::MlLatest);
    }
    if line.contains('\t') {
        return Ok(Format::Tsv);
    }
    if line.contains("::") {
        return Ok(Format::Ml1m);
    }
    if line.contains(',') {
        return Ok(Format::Csv);
    }
    if line.split_whitespace().count() >= 2 {
        return Ok(Format::Whitespace);
    }
    let reason = if line.trim().is_empty() {
        "the first line is empty".to_string()
    } else {
        let shown: String = line.trim().chars().take(60).collect();
        format!("the first line '{shown}' has a single field (no tab, comma, '::' or space separator)")
    };
    Err(DataError::UnknownFormat {
        path: path.to_path_buf(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(name: &str, line: &str) -> Format {
        detect_format(Path::new(name), line).unwrap()
    }

    #[test]
    fn names_round_trip_and_unknown_lists_all() {
        for f in Format::ALL {
            assert_eq!(f.name().parse::<Format>().unwrap(), f);
            assert_eq!(f.to_string(), f.name());
        }
        assert_eq!("ML-100K".parse::<Format>().unwrap(), Format::Ml100k);
        let e = "parquet".parse::<Format>().unwrap_err();
        assert!(e.contains("'parquet'"), "{e}");
        for f in Format::ALL {
            assert!(e.contains(f.name()), "{e}");
        }
    }

    #[test]
    fn defaults() {
        let o = LoadOptions::default();
        assert_eq!(o.format, Format::Auto);
        assert_eq!((o.user_col, o.item_col, o.rating_col, o.timestamp_col), (0, 1, Some(2), Some(3)));
        assert_eq!(o.header, None);
        assert!(!o.skip_invalid);
        assert_eq!(o.max_id_len, 256);
        assert_eq!(Format::default(), Format::Auto);
    }

    #[test]
    fn detection_by_name_then_content() {
        assert_eq!(det("/x/u.data", "1,2,3"), Format::Ml100k);
        assert_eq!(det("ua.data", ""), Format::Ml100k);
        assert_eq!(det("/x/ratings.dat", "1\t2"), Format::Ml1m);
        assert_eq!(det("ratings.csv", "userId,movieId,rating,timestamp"), Format::MlLatest);
        assert_eq!(det("r.txt", "\u{feff}UserID,MovieID,Rating\r\n"), Format::MlLatest);
        assert_eq!(det("u1.base", "1\t2\t3\t4"), Format::Tsv);
        assert_eq!(det("r.txt", "1::2::3::4"), Format::Ml1m);
        assert_eq!(det("r.txt", "user,item,rating"), Format::Csv);
        assert_eq!(det("r.txt", "  a  b 3 "), Format::Whitespace);
    }

    #[test]
    fn undetectable_gives_a_reason() {
        match detect_format(Path::new("r.txt"), "justonefield") {
            Err(DataError::UnknownFormat { path, reason }) => {
                assert_eq!(path, Path::new("r.txt"));
                assert!(reason.contains("single field"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(detect_format(Path::new("r"), "  "), Err(DataError::UnknownFormat { .. })));
    }
}
