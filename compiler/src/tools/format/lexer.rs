//! The formatter's lexer: the dtl surface as a flat list of tokens that keeps
//! what the syntax tree drops, comments and line breaks. It never fails: text
//! it does not know becomes an [`Kind::Other`] token (only files that do not
//! parse have any, and the formatter refuses those before it gets here).

/// What a token is, as far as layout cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An identifier or a keyword: `linear`, `module`, `d_in`.
    Word,
    /// `64`, `-1`, `0.5`, `3e-3`.
    Number,
    /// `"data/digits.csv.gz"`, quotes and escapes included.
    Str,
    /// `// ...` or `# ...`, up to the end of the line (trailing blanks cut).
    LineComment,
    /// `/* ... */`, possibly over several lines.
    BlockComment,
    /// `{ } ( ) [ ] , : ; = + - * / -> |>`
    Punct,
    /// A character no rule of the grammar reads.
    Other,
}

#[derive(Debug, Clone)]
pub(crate) struct Token<'a> {
    pub kind: Kind,
    pub text: &'a str,
    /// Byte offset in the source: where the syntax tree's spans point.
    pub start: usize,
    /// Line breaks between the previous token and this one.
    pub breaks: usize,
}

impl Token<'_> {
    pub fn is_comment(&self) -> bool {
        matches!(self.kind, Kind::LineComment | Kind::BlockComment)
    }

    /// `true` for the punctuation `p`.
    pub fn is(&self, p: &str) -> bool {
        self.kind == Kind::Punct && self.text == p
    }
}

/// Whether the last code token ends a value (a name, a number, a string or
/// a closing bracket), after which `-` is an operator.
fn after_value(tokens: &[Token<'_>]) -> bool {
    tokens
        .iter()
        .rev()
        .find(|t| !t.is_comment())
        .is_some_and(|t| {
            // `repeat -2 { … }`: the keyword takes a number, so a minus
            // after it is the number's sign (an error the checker reports,
            // laid out as written).
            (t.kind == Kind::Word && t.text != "repeat")
                || matches!(t.kind, Kind::Number | Kind::Str)
                || t.is(")")
                || t.is("]")
        })
}

pub(crate) fn lex(src: &str) -> Vec<Token<'_>> {
    let bytes = src.as_bytes();
    let mut tokens = Vec::new();
    let mut breaks = 0;
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        let next = bytes.get(i + 1).copied().unwrap_or(0);
        let kind = match bytes[i] {
            b'\n' => {
                breaks += 1;
                i += 1;
                continue;
            }
            b' ' | b'\t' | b'\r' => {
                i += 1;
                continue;
            }
            b'#' => {
                i = line_end(bytes, i);
                Kind::LineComment
            }
            b'/' if next == b'/' => {
                i = line_end(bytes, i);
                Kind::LineComment
            }
            b'/' if next == b'*' => {
                i = src[i + 2..]
                    .find("*/")
                    .map_or(bytes.len(), |at| i + 2 + at + 2);
                Kind::BlockComment
            }
            b'"' => {
                i = string_end(bytes, i);
                Kind::Str
            }
            b'0'..=b'9' => {
                i = number_end(bytes, i);
                Kind::Number
            }
            // A sign, unless a value comes before it: `d -1` subtracts.
            b'-' if next.is_ascii_digit() && !after_value(&tokens) => {
                i = number_end(bytes, i + 1);
                Kind::Number
            }
            b'-' | b'|' if next == b'>' => {
                i += 2;
                Kind::Punct
            }
            b'{' | b'}' | b'(' | b')' | b'[' | b']' | b',' | b':' | b';' | b'=' | b'+' | b'-'
            | b'*' | b'/' => {
                i += 1;
                Kind::Punct
            }
            // A dotted name (`nn.Linear`) is one word, as the parser reads
            // a callee.
            c if c.is_ascii_alphabetic() || c == b'_' => {
                loop {
                    while i < bytes.len() && is_word_byte(bytes[i]) {
                        i += 1;
                    }
                    let dotted = bytes.get(i) == Some(&b'.')
                        && bytes
                            .get(i + 1)
                            .is_some_and(|&b| b.is_ascii_alphabetic() || b == b'_');
                    if !dotted {
                        break;
                    }
                    i += 1;
                }
                Kind::Word
            }
            _ => {
                i += src[i..].chars().next().map_or(1, char::len_utf8);
                Kind::Other
            }
        };
        let mut text = &src[start..i];
        if kind == Kind::LineComment {
            text = text.trim_end();
        }
        tokens.push(Token {
            kind,
            text,
            start,
            breaks,
        });
        breaks = 0;
    }
    tokens
}

/// The text of every comment in `src`, in order, without trailing blanks:
/// what formatting must keep.
pub fn comments(src: &str) -> Vec<String> {
    lex(src)
        .into_iter()
        .filter(Token::is_comment)
        .map(|t| t.text.to_string())
        .collect()
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn line_end(bytes: &[u8], from: usize) -> usize {
    bytes[from..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |at| from + at)
}

/// Past the closing quote; an unclosed string ends at the line's end.
fn string_end(bytes: &[u8], open: usize) -> usize {
    let mut i = open + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => return i + 1,
            b'\n' => return i,
            b'\\' if bytes.get(i + 1).is_some_and(|&b| b != b'\n') => i += 2,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// Digits, a fraction, an exponent with its sign; letters glued on stay in
/// the token so that layout never splits what the parser reads as one word.
fn number_end(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() {
        let b = bytes[i];
        let exponent_sign = (b == b'+' || b == b'-')
            && matches!(bytes[i - 1], b'e' | b'E')
            && bytes.get(i + 1).is_some_and(u8::is_ascii_digit);
        if is_word_byte(b) || b == b'.' || exponent_sign {
            i += 1;
        } else {
            break;
        }
    }
    i
}
