//! Unified diffs of two texts by lines, for `dtl fmt --check`: Myers'
//! shortest edit script, hunks with three lines of context.

use std::fmt::Write;

const CONTEXT: usize = 3;

/// Past this many stored trace entries (the search is O(D²) in memory), the
/// diff gives up on finding the shortest script and replaces the differing
/// middle whole. Formatting a realistic file never gets near it.
const TRACE_LIMIT: usize = 1 << 24;

/// `--- a/path`, `+++ b/path`, then `@@ -l,n +l,n @@` hunks. Empty when the
/// texts are equal. A last line without a newline is marked as `diff` does.
pub fn unified_diff(path: &str, old: &str, new: &str) -> String {
    if old == new {
        return String::new();
    }
    let a: Vec<&str> = old.split_inclusive('\n').collect();
    let b: Vec<&str> = new.split_inclusive('\n').collect();
    let edits = edit_script(&a, &b);
    let mut out = format!("--- a/{path}\n+++ b/{path}\n");
    for hunk in hunks(&edits) {
        write_hunk(&mut out, &edits[hunk.0..hunk.1], &a, &b);
    }
    out
}

/// One replacement of a run of `old`'s lines: bytes `start..end` of `old`
/// become `text`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineEdit {
    pub start: usize,
    pub end: usize,
    pub text: String,
}

/// The fewest runs of whole lines to replace to turn `old` into `new`
/// (none when they are equal): what an editor applies without touching
/// the lines that stay.
pub fn line_edits(old: &str, new: &str) -> Vec<LineEdit> {
    if old == new {
        return Vec::new();
    }
    let a: Vec<&str> = old.split_inclusive('\n').collect();
    let b: Vec<&str> = new.split_inclusive('\n').collect();
    // Byte offset of each line of `old`, and of its end.
    let mut starts = vec![0usize];
    for line in &a {
        starts.push(starts.last().unwrap() + line.len());
    }
    let mut out: Vec<LineEdit> = Vec::new();
    let mut run: Option<(usize, String)> = None;
    let close = |run: &mut Option<(usize, String)>, at: usize, out: &mut Vec<LineEdit>| {
        if let Some((start, text)) = run.take() {
            out.push(LineEdit {
                start: starts[start],
                end: starts[at],
                text,
            });
        }
    };
    for edit in edit_script(&a, &b) {
        match edit {
            Edit::Keep(i, _) => close(&mut run, i, &mut out),
            Edit::Delete(i, _) => {
                run.get_or_insert_with(|| (i, String::new()));
            }
            Edit::Insert(i, j) => run
                .get_or_insert_with(|| (i, String::new()))
                .1
                .push_str(b[j]),
        }
    }
    close(&mut run, a.len(), &mut out);
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Edit {
    /// Line `a[.0]` is kept as `b[.1]`.
    Keep(usize, usize),
    /// Line `a[.0]` goes; `.1` is where `b` stands.
    Delete(usize, usize),
    /// Line `b[.1]` comes in; `.0` is where `a` stands.
    Insert(usize, usize),
}

/// The shortest edit script turning `a` into `b`, deletions before
/// insertions where both are possible.
fn edit_script(a: &[&str], b: &[&str]) -> Vec<Edit> {
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..]
        .iter()
        .rev()
        .zip(b[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (mid_a, mid_b) = (&a[prefix..a.len() - suffix], &b[prefix..b.len() - suffix]);
    let middle = myers(mid_a, mid_b).unwrap_or_else(|| {
        let mut all: Vec<Edit> = (0..mid_a.len()).map(|i| Edit::Delete(i, 0)).collect();
        all.extend((0..mid_b.len()).map(|j| Edit::Insert(mid_a.len(), j)));
        all
    });
    let mut edits: Vec<Edit> = (0..prefix).map(|i| Edit::Keep(i, i)).collect();
    edits.extend(middle.into_iter().map(|edit| match edit {
        Edit::Keep(i, j) => Edit::Keep(i + prefix, j + prefix),
        Edit::Delete(i, j) => Edit::Delete(i + prefix, j + prefix),
        Edit::Insert(i, j) => Edit::Insert(i + prefix, j + prefix),
    }));
    let (tail_a, tail_b) = (a.len() - suffix, b.len() - suffix);
    edits.extend((0..suffix).map(|k| Edit::Keep(tail_a + k, tail_b + k)));
    edits
}

/// Myers' greedy O(ND) search, keeping each round's furthest reaches to
/// walk back along. `None` past [`TRACE_LIMIT`].
fn myers(a: &[&str], b: &[&str]) -> Option<Vec<Edit>> {
    let (n, m) = (a.len() as isize, b.len() as isize);
    let max = n + m;
    let offset = max + 1;
    let mut v = vec![0isize; 2 * offset as usize + 1];
    // trace[d]: v over diagonals -d..=d as round d found it.
    let mut trace: Vec<Vec<isize>> = Vec::new();
    let mut stored = 0usize;
    let at = |k: isize| (k + offset) as usize;
    'search: for d in 0..=max {
        for k in (-d..=d).step_by(2) {
            let down = k == -d || (k != d && v[at(k - 1)] < v[at(k + 1)]);
            let mut x = if down { v[at(k + 1)] } else { v[at(k - 1)] + 1 };
            let mut y = x - k;
            while x < n && y < m && a[x as usize] == b[y as usize] {
                x += 1;
                y += 1;
            }
            v[at(k)] = x;
            if x >= n && y >= m {
                trace.push(v[at(-d)..=at(d)].to_vec());
                break 'search;
            }
        }
        trace.push(v[at(-d)..=at(d)].to_vec());
        stored += 2 * d as usize + 1;
        if stored > TRACE_LIMIT {
            return None;
        }
    }
    let mut edits = Vec::new();
    let (mut x, mut y) = (n, m);
    for d in (0..trace.len() as isize).rev() {
        let k = x - y;
        let (prev_x, prev_y) = if d == 0 {
            (0, 0)
        } else {
            let before = &trace[d as usize - 1];
            let reach = |k: isize| before[(k + d - 1) as usize];
            let down = k == -d || (k != d && reach(k - 1) < reach(k + 1));
            let prev_k = if down { k + 1 } else { k - 1 };
            let prev_x = reach(prev_k);
            (prev_x, prev_x - prev_k)
        };
        while x > prev_x && y > prev_y {
            x -= 1;
            y -= 1;
            edits.push(Edit::Keep(x as usize, y as usize));
        }
        if d > 0 {
            if x == prev_x {
                y -= 1;
                edits.push(Edit::Insert(x as usize, y as usize));
            } else {
                x -= 1;
                edits.push(Edit::Delete(x as usize, y as usize));
            }
        }
    }
    edits.reverse();
    Some(edits)
}

/// Ranges of `edits` to print: each change with up to three kept lines on
/// either side; changes closer than that share a hunk.
fn hunks(edits: &[Edit]) -> Vec<(usize, usize)> {
    let changes: Vec<usize> = (0..edits.len())
        .filter(|&i| !matches!(edits[i], Edit::Keep(..)))
        .collect();
    let mut hunks: Vec<(usize, usize)> = Vec::new();
    for &i in &changes {
        let start = i.saturating_sub(CONTEXT);
        let end = (i + 1 + CONTEXT).min(edits.len());
        match hunks.last_mut() {
            Some(last) if start <= last.1 => last.1 = end,
            _ => hunks.push((start, end)),
        }
    }
    hunks
}

fn write_hunk(out: &mut String, edits: &[Edit], a: &[&str], b: &[&str]) {
    let (mut old_count, mut new_count) = (0, 0);
    for edit in edits {
        match edit {
            Edit::Keep(..) => {
                old_count += 1;
                new_count += 1;
            }
            Edit::Delete(..) => old_count += 1,
            Edit::Insert(..) => new_count += 1,
        }
    }
    let (old_at, new_at) = match edits[0] {
        Edit::Keep(i, j) | Edit::Delete(i, j) | Edit::Insert(i, j) => (i, j),
    };
    // An empty side names the line before the change, as `diff -u` does.
    let old_start = if old_count == 0 { old_at } else { old_at + 1 };
    let new_start = if new_count == 0 { new_at } else { new_at + 1 };
    let _ = writeln!(
        out,
        "@@ -{old_start},{old_count} +{new_start},{new_count} @@"
    );
    for edit in edits {
        let (mark, line) = match *edit {
            Edit::Keep(i, _) => (' ', a[i]),
            Edit::Delete(i, _) => ('-', a[i]),
            Edit::Insert(_, j) => ('+', b[j]),
        };
        out.push(mark);
        out.push_str(line);
        if !line.ends_with('\n') {
            out.push_str("\n\\ No newline at end of file\n");
        }
    }
}

#[cfg(test)]
mod line_edit_tests {
    use super::*;

    /// Applying the edits, last first, gives the new text.
    fn apply(old: &str, edits: &[LineEdit]) -> String {
        let mut text = old.to_string();
        for e in edits.iter().rev() {
            text.replace_range(e.start..e.end, &e.text);
        }
        text
    }

    #[test]
    fn only_the_changed_lines_are_replaced() {
        let old = "a\nb  \nc\nd\ne x\n";
        let new = "a\nb\nc\nd\ne  x\nf\n";
        let edits = line_edits(old, new);
        assert_eq!(edits.len(), 2, "{edits:?}");
        assert_eq!(&old[edits[0].start..edits[0].end], "b  \n");
        assert_eq!(edits[0].text, "b\n");
        assert_eq!(apply(old, &edits), new);
        assert!(line_edits(new, new).is_empty());
        for (old, new) in [("", "x\n"), ("x", "x\n"), ("a\nb\n", ""), ("a", "b")] {
            assert_eq!(apply(old, &line_edits(old, new)), new, "{old:?} → {new:?}");
        }
    }
}
