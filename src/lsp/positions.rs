//! Positions as the protocol counts them: lines from 0, and within a line
//! UTF-16 code units; our offsets are bytes.

use lsp_types::{Position, Range};

/// A text's line starts, found once, so that each position after is a
/// binary search and not a count from the start of the file.
pub(crate) struct Lines<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> Lines<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Lines { text, starts }
    }

    /// LSP positions count UTF-16 code units within a line.
    pub(crate) fn position(&self, offset: usize) -> Position {
        let text = self.text;
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.starts.partition_point(|&start| start <= offset) - 1;
        let line_start = self.starts[line];
        let character = text[line_start..offset].encode_utf16().count() as u32;
        Position {
            line: line as u32,
            character,
        }
    }

    pub(crate) fn range(&self, start: usize, end: usize) -> Range {
        Range {
            start: self.position(start),
            end: self.position(end),
        }
    }
}

pub(crate) fn offset(text: &str, position: Position) -> usize {
    let line_start = if position.line == 0 {
        0
    } else {
        text.match_indices('\n')
            .nth(position.line as usize - 1)
            .map_or(text.len(), |(i, _)| i + 1)
    };
    let mut units = 0;
    for (i, c) in text[line_start..].char_indices() {
        if units >= position.character as usize || c == '\n' {
            return line_start + i;
        }
        units += c.len_utf16();
    }
    text.len()
}

/// One range in `text` (many: [`Lines`]).
pub(crate) fn range(text: &str, start: usize, end: usize) -> Range {
    Lines::new(text).range(start, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_utf16_units() {
        let text = "a—b\nx𝄞y\n";
        let at = |line, character| Position { line, character };
        let position = |text, offset| Lines::new(text).position(offset);
        // `—` is one UTF-16 unit and three bytes; `𝄞` is two units, four bytes.
        assert_eq!(position(text, 4), at(0, 2));
        assert_eq!(position(text, 11), at(1, 3));
        assert_eq!(offset(text, at(1, 3)), 11);
        // Inside a character: its start; past the end of a line: its end.
        assert_eq!(position(text, 9), at(1, 1));
        assert_eq!(offset(text, at(0, 99)), 5);
        // The table agrees with a count from the start at every offset.
        let lines = Lines::new(text);
        for i in 0..=text.len() + 2 {
            let mut b = i.min(text.len());
            while !text.is_char_boundary(b) {
                b -= 1;
            }
            let before = &text[..b];
            let line = before.matches('\n').count() as u32;
            let start = before.rfind('\n').map_or(0, |n| n + 1);
            let character = text[start..b].encode_utf16().count() as u32;
            assert_eq!(lines.position(i), at(line, character), "offset {i}");
        }
    }
}
