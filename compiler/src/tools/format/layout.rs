//! The printer: tokens in, canonical text out. It decides only where line
//! breaks go and how much blank space each gap gets; it never adds, drops or
//! reorders a token, except that a `{` left alone at the start of a line
//! moves up to the code before it, ahead of any comments in between.

use std::collections::BTreeSet;

use super::lexer::{Kind, Token};

/// Lays out `tokens` (lexed from `src`). `starts` holds the byte offsets at
/// which a statement begins (an item, layer, `forward`, `let`, the final
/// expression, a setting, a test's subject and options, a `repeat` body);
/// any other token that begins a line continues the statement before it.
pub(super) fn layout(src: &str, mut tokens: Vec<Token<'_>>, starts: &BTreeSet<usize>) -> String {
    if tokens.is_empty() {
        return String::new();
    }
    join_open_braces(&mut tokens);
    let blocks = Blocks::find(&tokens);
    place_breaks(&mut tokens, &blocks, starts);
    Printer {
        tokens: &tokens,
        blocks: &blocks,
        starts,
        out: String::with_capacity(src.len() + src.len() / 8),
        frames: vec![Frame::default()],
        line: 0,
        line_indent: 0,
        col: 0,
        out_line: 0,
        trailing: Vec::new(),
    }
    .print()
}

/// A `{` that begins a line moves up to just after the code before it;
/// comments in between follow it (a trailing one keeps trailing, now after
/// the `{`; one on a line of its own becomes the block's first line).
fn join_open_braces(tokens: &mut [Token<'_>]) {
    for i in 1..tokens.len() {
        if !tokens[i].is("{") || tokens[i].breaks == 0 {
            continue;
        }
        let Some(code) = (0..i).rev().find(|&j| !tokens[j].is_comment()) else {
            continue;
        };
        let breaks = tokens[i].breaks;
        tokens[code + 1..=i].rotate_right(1);
        tokens[code + 1].breaks = 0;
        // The line break that came before the `{` now ends the comments.
        if i > code + 1 && i + 1 < tokens.len() && tokens[i + 1].breaks == 0 {
            tokens[i + 1].breaks = breaks;
        }
    }
}

/// Where each `{ ... }` block ends and whether it was written on one line.
struct Blocks {
    /// For a brace, the index of the brace that matches it.
    partner: Vec<Option<usize>>,
    /// For a brace: its block has no line break inside (kept on one line).
    one_line: Vec<bool>,
    /// For any token: the innermost block around it is a one-line block.
    in_one_line: Vec<bool>,
}

impl Blocks {
    fn find(tokens: &[Token<'_>]) -> Blocks {
        let n = tokens.len();
        // Line of each token, counting breaks inside block comments too.
        let mut row = vec![0usize; n];
        for i in 1..n {
            row[i] = row[i - 1] + tokens[i - 1].text.matches('\n').count() + tokens[i].breaks;
        }
        let mut partner = vec![None; n];
        let mut one_line = vec![false; n];
        let mut open = Vec::new();
        for (i, token) in tokens.iter().enumerate() {
            if token.is("{") {
                open.push(i);
            } else if token.is("}") {
                if let Some(o) = open.pop() {
                    partner[o] = Some(i);
                    partner[i] = Some(o);
                    one_line[o] = row[o] == row[i];
                    one_line[i] = one_line[o];
                }
            }
        }
        let mut in_one_line = vec![false; n];
        let mut enclosing: Vec<bool> = Vec::new();
        for (i, token) in tokens.iter().enumerate() {
            in_one_line[i] = enclosing.last().copied().unwrap_or(false);
            if partner[i].is_some() && token.is("{") {
                enclosing.push(one_line[i]);
            } else if partner[i].is_some() && token.is("}") {
                enclosing.pop();
            }
        }
        Blocks {
            partner,
            one_line,
            in_one_line,
        }
    }

    fn is_open(&self, tokens: &[Token<'_>], i: usize) -> bool {
        self.partner[i].is_some() && tokens[i].is("{")
    }

    fn is_close(&self, tokens: &[Token<'_>], i: usize) -> bool {
        self.partner[i].is_some() && tokens[i].is("}")
    }
}

/// Sets `breaks` to what the output will have: at most one blank line; a
/// multi-line block's content starts on the line after `{` (a comment may
/// trail the `{`) and its `}` gets a line of its own, with no blank line
/// next to either brace; a statement that shares a line with the one before
/// it without a `;` between moves to a line of its own, except inside a
/// one-line block.
fn place_breaks(tokens: &mut [Token<'_>], blocks: &Blocks, starts: &BTreeSet<usize>) {
    for token in tokens.iter_mut() {
        token.breaks = token.breaks.min(2);
    }
    tokens[0].breaks = 0;
    for o in 0..tokens.len() {
        if !blocks.is_open(tokens, o) || blocks.one_line[o] {
            continue;
        }
        let Some(c) = blocks.partner[o] else { continue };
        let mut first = o + 1;
        if first < c
            && tokens[first].is_comment()
            && tokens[first].breaks == 0
            && tokens[first + 1].breaks > 0
        {
            first += 1;
        }
        tokens[first].breaks = 1;
        tokens[c].breaks = 1;
    }
    let mut last_code: Option<usize> = None;
    for i in 0..tokens.len() {
        if tokens[i].is_comment() {
            continue;
        }
        let shares_line = tokens[i].breaks == 0 && !blocks.in_one_line[i];
        if shares_line && starts.contains(&tokens[i].start) {
            if let Some(before) = last_code {
                if !tokens[before].is(";") {
                    tokens[i].breaks = 1;
                }
            }
        }
        last_code = Some(i);
    }
}

/// One `{ ... }` block being printed (the file itself is the outermost).
#[derive(Default)]
struct Frame {
    /// Indent of the block's statements.
    content: usize,
    /// Indent of its `}`: that of the line holding its `{`.
    close: usize,
    /// For each `(`/`[` open in this block, the output line it opened on.
    parens: Vec<usize>,
}

struct Printer<'s, 't> {
    tokens: &'t [Token<'s>],
    blocks: &'t Blocks,
    starts: &'t BTreeSet<usize>,
    out: String,
    frames: Vec<Frame>,
    /// Output line number, counted from 1.
    line: usize,
    line_indent: usize,
    /// Column reached on the current output line.
    col: usize,
    /// Line breaks printed so far.
    out_line: usize,
    /// Each trailing comment: its output line, where in `out` it is padded
    /// from, and the column its code ends at.
    trailing: Vec<(usize, usize, usize)>,
}

impl Printer<'_, '_> {
    fn print(mut self) -> String {
        for i in 0..self.tokens.len() {
            let token = &self.tokens[i];
            if i == 0 || token.breaks > 0 {
                for _ in 0..token.breaks {
                    self.out.push('\n');
                }
                self.out_line += token.breaks;
                self.line += 1;
                self.col = 0;
                self.line_indent = self.indent_of_line(i);
                self.pad_to(self.line_indent);
            } else if self.is_trailing_comment(i) {
                self.trailing
                    .push((self.out_line, self.out.len(), self.col));
                self.pad_to(self.col + 2);
            } else if gap(&self.tokens[i - 1], token) {
                self.pad_to(self.col + 1);
            }
            self.out.push_str(token.text);
            self.out_line += token.text.matches('\n').count();
            self.col = match token.text.rfind('\n') {
                Some(at) => advance(0, &token.text[at + 1..]),
                None => advance(self.col, token.text),
            };
            self.track(i);
        }
        self.out.push('\n');
        self.align_trailing_comments();
        self.out
    }

    /// Trailing comments on consecutive lines line up two spaces after the
    /// longest code among them; a lone one sits two spaces after its code.
    /// The rule reads only the printed code, so inputs that differ in
    /// spaces alone format alike.
    fn align_trailing_comments(&mut self) {
        let mut runs: Vec<&[(usize, usize, usize)]> = Vec::new();
        let mut from = 0;
        for k in 1..=self.trailing.len() {
            if k == self.trailing.len() || self.trailing[k].0 != self.trailing[k - 1].0 + 1 {
                runs.push(&self.trailing[from..k]);
                from = k;
            }
        }
        let mut pads: Vec<(usize, usize)> = Vec::new();
        for run in runs {
            let widest = run.iter().map(|t| t.2).max().unwrap_or(0);
            pads.extend(run.iter().map(|&(_, at, col)| (at, widest - col)));
        }
        // One pass over the output, the pads put in at their offsets.
        let mut out =
            String::with_capacity(self.out.len() + pads.iter().map(|p| p.1).sum::<usize>());
        let mut from = 0;
        for (at, pad) in pads {
            out.push_str(&self.out[from..at]);
            out.extend(std::iter::repeat_n(' ', pad));
            from = at;
        }
        out.push_str(&self.out[from..]);
        self.out = out;
    }

    fn pad_to(&mut self, column: usize) {
        while self.col < column {
            self.out.push(' ');
            self.col += 1;
        }
    }

    /// Follows the braces and brackets of the token just printed.
    fn track(&mut self, i: usize) {
        let token = &self.tokens[i];
        if self.blocks.is_open(self.tokens, i) {
            self.frames.push(Frame {
                content: self.line_indent + 2,
                close: self.line_indent,
                parens: Vec::new(),
            });
        } else if self.blocks.is_close(self.tokens, i) && self.frames.len() > 1 {
            self.frames.pop();
        } else if token.is("(") || token.is("[") {
            let line = self.line;
            self.frame().parens.push(line);
        } else if token.is(")") || token.is("]") {
            self.frame().parens.pop();
        }
    }

    fn frame(&mut self) -> &mut Frame {
        self.frames
            .last_mut()
            .expect("the file's frame is never popped")
    }

    /// The indent of the line that token `i` begins. A line of comments
    /// only takes the indent of the code that follows it, except that before
    /// a `}` it keeps the block's indent.
    fn indent_of_line(&self, i: usize) -> usize {
        let tokens = self.tokens;
        let frame = self
            .frames
            .last()
            .expect("the file's frame is never popped");
        let Some(code) = (i..tokens.len()).find(|&j| !tokens[j].is_comment()) else {
            return frame.content;
        };
        let comments_only = tokens[i + 1..=code].iter().any(|t| t.breaks > 0)
            || tokens[i..code].iter().any(|t| t.text.contains('\n'));
        if self.blocks.is_close(tokens, code) && self.frames.len() > 1 {
            return if comments_only {
                frame.content
            } else {
                frame.close
            };
        }
        // `)` and `]` that begin a line stand where their bracket's line did.
        let closers = tokens[code..]
            .iter()
            .enumerate()
            .take_while(|(k, t)| (t.is(")") || t.is("]")) && (*k == 0 || t.breaks == 0))
            .count();
        let open = &frame.parens[..frame.parens.len().saturating_sub(closers)];
        let bracket_lines =
            open.windows(2).filter(|w| w[0] != w[1]).count() + usize::from(!open.is_empty());
        let first = &tokens[code];
        let continues = closers == 0
            && bracket_lines == 0
            && !first.is(";")
            && !self.starts.contains(&first.start);
        frame.content + 2 * bracket_lines + if continues { 2 } else { 0 }
    }

    /// A comment after code that ends its line.
    fn is_trailing_comment(&self, i: usize) -> bool {
        let token = &self.tokens[i];
        token.is_comment()
            && i > 0
            && token.breaks == 0
            && self.tokens.get(i + 1).is_none_or(|next| next.breaks > 0)
    }
}

/// Whether one space separates two tokens on a line: none before `,` `;`
/// `:` `)` `]`, none after `(` `[`, none between a name and its `(`, none
/// inside `{}`; one everywhere else.
fn gap(before: &Token<'_>, token: &Token<'_>) -> bool {
    let tight_before = [",", ";", ":", ")", "]"].iter().any(|p| token.is(p));
    let tight_after = before.is("(") || before.is("[");
    let call = token.is("(") && before.kind == Kind::Word;
    let empty_block = before.is("{") && token.is("}");
    !(tight_before || tight_after || call || empty_block)
}

/// The column after `text` written from column `col`; tabs stop every 8
/// columns, in the source and in the output alike.
fn advance(col: usize, text: &str) -> usize {
    text.chars().fold(
        col,
        |col, c| if c == '\t' { col / 8 * 8 + 8 } else { col + 1 },
    )
}
