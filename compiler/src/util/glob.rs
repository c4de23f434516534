//! Name patterns for parameters (`skip: ["head.*"]`, `freeze = ["0.*"]`):
//! `*` stands for any run of characters (dots included), `?` for one;
//! everything else stands for itself.

/// Whether `name` matches `pattern` as a whole.
pub fn matches(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // The classic two-pointer match, backtracking to the last `*`.
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some((i, j));
            i += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

/// Whether any of `patterns` matches `name`.
pub fn any(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| matches(p, name))
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn stars_questions_and_literals() {
        assert!(matches("head.*", "head.weight"));
        assert!(matches("head.*", "head.0.bias"));
        assert!(!matches("head.*", "heads.weight"));
        assert!(!matches("head.*", "body.head.weight"));
        assert!(matches("*.bias", "0.1.bias"));
        assert!(matches("blocks.?.attn.*", "blocks.3.attn.in_proj_weight"));
        assert!(!matches("blocks.?.attn.*", "blocks.12.attn.in_proj_weight"));
        assert!(matches("*", ""));
        assert!(matches("a*b*c", "axxbyyc"));
        assert!(!matches("a*b*c", "axxbyy"));
        assert!(matches("0.weight", "0.weight"));
        assert!(!matches("0.weight", "10.weight"));
    }
}
