//! Mutations of `.dtl` text for fuzzing the front end: insert a token,
//! delete, duplicate or cut a piece, replace a few characters. Seeded, so a
//! failure names the mutant that caused it. Used by the fuzz test and by
//! the long fuzz driver (`compiler/examples/fuzz.rs`).

use super::rng::Rng;

/// `0..n` from the generator, as an index.
pub fn below(rng: &mut Rng, n: usize) -> usize {
    rng.below(n as u64) as usize
}

/// The tokens mutations insert: brackets, keywords, numbers at the edges,
/// a multi-byte character, an unclosed comment.
pub const TOKENS: [&str; 36] = [
    "(",
    ")",
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "=",
    ";",
    "|>",
    "+",
    "-",
    "\"",
    "\n",
    "let",
    "repeat",
    "forward",
    "module",
    "model",
    "train",
    "data",
    "0",
    "-1",
    "1e9",
    "99999999999",
    "3000000000",
    "1.5",
    "linear",
    "conv2d",
    "attention",
    "x",
    "B",
    "relu",
    "é",
    "/*",
];

/// The nearest char boundary at or before `i`.
pub fn floor_boundary(text: &str, mut i: usize) -> usize {
    i = i.min(text.len());
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

pub fn mutate(text: &str, rng: &mut Rng) -> String {
    let mut out = text.to_string();
    for _ in 0..1 + below(rng, 3) {
        let at = floor_boundary(&out, below(rng, out.len() + 1));
        match below(rng, 5) {
            0 => out.insert_str(at, TOKENS[below(rng, TOKENS.len())]),
            1 => {
                let end = floor_boundary(&out, at + below(rng, 12));
                out.replace_range(at..end, "");
            }
            2 => {
                let end = floor_boundary(&out, at + below(rng, 40));
                let piece = out[at..end].to_string();
                let to = floor_boundary(&out, below(rng, out.len() + 1));
                out.insert_str(to, &piece);
            }
            3 => out.truncate(at),
            _ => {
                let end = floor_boundary(&out, at + 1 + below(rng, 3));
                out.replace_range(at..end, TOKENS[below(rng, TOKENS.len())]);
            }
        }
    }
    out
}
