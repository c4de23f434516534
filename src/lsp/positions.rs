//! Positions as the protocol counts them: lines from 0, and within a line
//! UTF-16 code units; our offsets are bytes.

use lsp_types::{Position, Range};

/// LSP positions count UTF-16 code units within a line.
pub(crate) fn position(text: &str, offset: usize) -> Position {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = text[..line_start].matches('\n').count() as u32;
    let character = text[line_start..offset].encode_utf16().count() as u32;
    Position { line, character }
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

pub(crate) fn range(text: &str, start: usize, end: usize) -> Range {
    Range {
        start: position(text, start),
        end: position(text, end),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_utf16_units() {
        let text = "a—b\nx𝄞y\n";
        let at = |line, character| Position { line, character };
        // `—` is one UTF-16 unit and three bytes; `𝄞` is two units, four bytes.
        assert_eq!(position(text, 4), at(0, 2));
        assert_eq!(position(text, 11), at(1, 3));
        assert_eq!(offset(text, at(1, 3)), 11);
        // Inside a character: its start; past the end of a line: its end.
        assert_eq!(position(text, 9), at(1, 1));
        assert_eq!(offset(text, at(0, 99)), 5);
    }
}
