//! A text file as a language-modelling dataset: tokens (characters or
//! bytes) cut into windows of `context` tokens, each position's target the
//! token that follows it.

use super::{Table, Targets};
use crate::plan::TextEncoding;

/// The token ids of a text and the size of its vocabulary.
pub fn tokens(bytes: &[u8], encoding: TextEncoding) -> Result<(Vec<i64>, i64), String> {
    match encoding {
        TextEncoding::Bytes => Ok((bytes.iter().map(|b| *b as i64).collect(), 256)),
        TextEncoding::Chars => {
            let text = std::str::from_utf8(bytes).map_err(|e| {
                format!(
                    "not UTF-8 text (byte {}); use `encoding: \"bytes\"` for binary files",
                    e.valid_up_to()
                )
            })?;
            let mut vocab: Vec<char> = text.chars().collect();
            vocab.sort_unstable();
            vocab.dedup();
            let ids = text
                .chars()
                .map(|c| vocab.binary_search(&c).expect("in the vocabulary") as i64)
                .collect();
            Ok((ids, vocab.len() as i64))
        }
    }
}

/// Non-overlapping windows: row i reads tokens `[iT, iT + T)` and predicts
/// `[iT + 1, iT + T + 1)`, so every token but the first is a target once.
pub fn windows(bytes: &[u8], encoding: TextEncoding, context: usize) -> Result<Table, String> {
    let (ids, vocab) = tokens(bytes, encoding)?;
    let rows = ids.len().saturating_sub(1) / context.max(1);
    if rows == 0 {
        return Err(format!(
            "{} tokens make no window of {context} tokens and its next token",
            ids.len()
        ));
    }
    let mut features = Vec::with_capacity(rows * context);
    let mut labels = Vec::with_capacity(rows * context);
    for row in 0..rows {
        let start = row * context;
        features.extend(ids[start..start + context].iter().map(|t| *t as f32));
        labels.extend_from_slice(&ids[start + 1..start + context + 1]);
    }
    Table::new(
        features,
        Targets::Classes {
            labels,
            shape: vec![context as i64],
            classes: vocab,
        },
        vec![context as i64],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chars_are_numbered_in_code_point_order() {
        let (ids, vocab) = tokens("bab—a".as_bytes(), TextEncoding::Chars).unwrap();
        assert_eq!((ids, vocab), (vec![1, 0, 1, 2, 0], 3));
        let (ids, vocab) = tokens(b"AB", TextEncoding::Bytes).unwrap();
        assert_eq!((ids, vocab), (vec![65, 66], 256));
        assert!(tokens(&[0xff, 0x41], TextEncoding::Chars)
            .unwrap_err()
            .contains("not UTF-8"));
    }

    #[test]
    fn windows_predict_the_next_token() {
        // "abcdefg": ids 0..7; windows of 3: [0 1 2]→[1 2 3], [3 4 5]→[4 5 6].
        let t = windows(b"abcdefg", TextEncoding::Chars, 3).unwrap();
        assert_eq!(t.rows, 2);
        assert_eq!(t.features, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(
            t.targets,
            Targets::Classes {
                labels: vec![1, 2, 3, 4, 5, 6],
                shape: vec![3],
                classes: 7
            }
        );
        assert!(windows(b"abc", TextEncoding::Bytes, 3).is_err());
    }
}
