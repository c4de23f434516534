//! Inlay hints: what the checker inferred, shown where it applies. After
//! every stage of a `|>` chain the shape it gives (`‹[B, 16, 6, 6]›`), and
//! after every module instance the parameters it creates. A stage inside a
//! module used at several sizes shows each size it takes.

use crate::check::{NoteKind, ShapeNote};

use super::graph::group_digits;

/// At most this many different shapes are listed at one place.
const MAX_SHAPES: usize = 3;

/// One hint: where it goes (a byte offset, after the text it is about)
/// and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint {
    pub offset: usize,
    pub label: String,
}

/// The hints for the notes whose spans end in `start..=end`, in order.
pub fn inlay_hints(notes: &[ShapeNote], start: usize, end: usize) -> Vec<Hint> {
    // Where the model uses a module, its shapes (with the batch symbol)
    // are shown, not those of the module's tests.
    let in_model: std::collections::BTreeSet<usize> = notes
        .iter()
        .filter(|n| n.in_model)
        .map(|n| n.span.end)
        .collect();
    let notes = notes
        .iter()
        .filter(|n| n.in_model || !in_model.contains(&n.span.end));
    // Per place: the shapes its stage gives and the parameters of its
    // instance, each different value once, in the order seen.
    let mut places: Vec<(usize, Vec<&str>, Vec<u64>)> = Vec::new();
    for note in notes {
        let at = note.span.end;
        if !(start..=end).contains(&at) || matches!(note.kind, NoteKind::Name | NoteKind::Value) {
            continue;
        }
        let i = match places.iter().position(|p| p.0 == at) {
            Some(i) => i,
            None => {
                places.push((at, Vec::new(), Vec::new()));
                places.len() - 1
            }
        };
        let place = &mut places[i];
        match note.kind {
            NoteKind::Stage if !place.1.contains(&note.shape.as_str()) => {
                place.1.push(&note.shape);
            }
            NoteKind::Instance { parameters } if !place.2.contains(&parameters) => {
                place.2.push(parameters);
            }
            _ => {}
        }
    }
    places.sort_by_key(|p| p.0);
    places
        .into_iter()
        .filter_map(|(offset, shapes, parameters)| {
            let mut parts = Vec::new();
            if !shapes.is_empty() {
                let mut text = shapes[..shapes.len().min(MAX_SHAPES)].join(" | ");
                if shapes.len() > MAX_SHAPES {
                    text.push_str(" | …");
                }
                parts.push(text);
            }
            if !parameters.is_empty() {
                let counts: Vec<String> = parameters.iter().map(|&n| group_digits(n)).collect();
                let noun = if parameters == [1] {
                    "parameter"
                } else {
                    "parameters"
                };
                parts.push(format!("{} {noun}", counts.join(" | ")));
            }
            (!parts.is_empty()).then(|| Hint {
                offset,
                label: format!("‹{}›", parts.join(", ")),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::Span;

    fn note(end: usize, shape: &str, kind: NoteKind) -> ShapeNote {
        ShapeNote {
            span: Span::new(0, end),
            name: String::new(),
            shape: shape.into(),
            scope: String::new(),
            kind,
            in_model: true,
        }
    }

    #[test]
    fn each_place_shows_its_shapes_and_parameters_once() {
        let notes = [
            note(10, "[B, 64]", NoteKind::Stage),
            note(10, "[B, 64]", NoteKind::Instance { parameters: 4160 }),
            note(20, "[B, 32]", NoteKind::Stage),
            note(20, "[B, 16]", NoteKind::Stage),
            note(20, "[B, 32]", NoteKind::Stage),
            note(5, "[B, 8]", NoteKind::Name),
            note(30, "[B, 1]", NoteKind::Stage),
            // A module test's shape where the model has one is left out.
            ShapeNote {
                in_model: false,
                ..note(20, "[4, 32]", NoteKind::Stage)
            },
        ];
        let hints = inlay_hints(&notes, 0, 25);
        assert_eq!(
            hints,
            [
                Hint {
                    offset: 10,
                    label: "‹[B, 64], 4,160 parameters›".into()
                },
                Hint {
                    offset: 20,
                    label: "‹[B, 32] | [B, 16]›".into()
                },
            ]
        );
    }
}
