//! A new user's history file for `recommend --history`: one `item[,value]`
//! per line (blank lines and lines starting with `#` are ignored).

use std::path::Path;

use als_core::data::DataError;
use als_core::model::ModelKind;

/// One line of a history file: the item and its value, if given.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryLine {
    pub line: u64,
    pub item: String,
    pub value: Option<f32>,
}

/// Parse history text; `path` names the file in errors (`file:line: problem`).
pub fn parse_history(text: &str, path: &Path) -> Result<Vec<HistoryLine>, DataError> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = n as u64 + 1;
        let malformed = |problem: String| DataError::Malformed {
            path: path.to_path_buf(),
            line,
            problem,
        };
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = t.split(',').map(str::trim).collect();
        if fields.len() > 2 {
            return Err(malformed(format!("expected `item` or `item,value`, found {} fields", fields.len())));
        }
        let item = fields[0];
        if item.is_empty() {
            return Err(malformed("empty item id".into()));
        }
        let value = match fields.get(1) {
            None => None,
            Some(v) => {
                let x: f32 = v.parse().map_err(|_| malformed(format!("value '{v}' is not a number")))?;
                Some(als_core::limits::check_value(x).map_err(malformed)?)
            }
        };
        out.push(HistoryLine {
            line,
            item: item.to_string(),
            value,
        });
    }
    if out.is_empty() {
        return Err(DataError::Empty { path: path.to_path_buf() });
    }
    Ok(out)
}

/// Read and parse a history file.
pub fn read_history(path: &Path) -> Result<Vec<HistoryLine>, DataError> {
    parse_history(&als_core::data::read_text_file(path)?, path)
}

/// (item, value) pairs for fold-in: an implicit item without a value counts
/// once (1); an explicit model needs a rating on every line; implicit values
/// must be >= 0.
pub fn history_values(lines: &[HistoryLine], kind: ModelKind, path: &Path) -> Result<Vec<(String, f32)>, DataError> {
    lines
        .iter()
        .map(|h| {
            let malformed = |problem: &str| DataError::Malformed {
                path: path.to_path_buf(),
                line: h.line,
                problem: problem.to_string(),
            };
            let v = match (kind, h.value) {
                (ModelKind::Implicit, None) => 1.0,
                (ModelKind::Implicit, Some(v)) if v < 0.0 => {
                    return Err(malformed("negative value (implicit feedback values are counts or weights >= 0)"))
                }
                (_, Some(v)) => v,
                (ModelKind::Explicit, None) => return Err(malformed("the model is explicit: give a rating as `item,rating`")),
            };
            Ok((h.item.clone(), v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_items_and_values_and_names_bad_lines() {
        let p = Path::new("h.txt");
        let got = parse_history("# liked\n50\n\n 172 , 2.5\n", p).unwrap();
        assert_eq!(
            got,
            vec![
                HistoryLine {
                    line: 2,
                    item: "50".into(),
                    value: None
                },
                HistoryLine {
                    line: 4,
                    item: "172".into(),
                    value: Some(2.5)
                },
            ]
        );
        let err = |t: &str| parse_history(t, p).unwrap_err().to_string();
        assert_eq!(err("1\n2,abc\n"), "h.txt:2: value 'abc' is not a number");
        assert_eq!(err("1,2,3\n"), "h.txt:1: expected `item` or `item,value`, found 3 fields");
        assert_eq!(err(",4\n"), "h.txt:1: empty item id");
        assert_eq!(err("1,inf\n"), "h.txt:1: value inf is not finite");
        assert_eq!(err("1,3e38\n"), "h.txt:1: value 3e38 is outside the supported range ±1e9");
        assert!(err("\n# nothing\n").contains("no ratings"));
    }

    /// A byte-order mark is not part of the first item id.
    #[test]
    fn a_bom_keeps_the_first_entry() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("h.txt");
        std::fs::write(&f, "\u{feff}50,4\n172,2\n").unwrap();
        let lines = read_history(&f).unwrap();
        assert_eq!(lines[0].item, "50");
        assert_eq!(lines.len(), 2);
    }

    #[test]
    fn values_follow_the_model_kind() {
        let p = Path::new("h.txt");
        let lines = parse_history("a\nb,3\n", p).unwrap();
        assert_eq!(
            history_values(&lines, ModelKind::Implicit, p).unwrap(),
            vec![("a".to_string(), 1.0), ("b".to_string(), 3.0)]
        );
        let e = history_values(&lines, ModelKind::Explicit, p).unwrap_err().to_string();
        assert_eq!(e, "h.txt:1: the model is explicit: give a rating as `item,rating`");
        let neg = parse_history("a,-1\n", p).unwrap();
        assert!(history_values(&neg, ModelKind::Implicit, p)
            .unwrap_err()
            .to_string()
            .starts_with("h.txt:1: negative"));
    }
}
