//! Where an error inside a module came from. A module's body is written
//! once and checked at every instance, so an error found inside it (five
//! heads that do not divide a width) is caused by the call that gave the
//! values: `EncoderBlock(48, 5, 96)`. [`InInstance`] reports it there: the
//! primary label on the outermost call, with the values its parameters
//! took, a secondary label on each call further in, and the error's own
//! labels inside the module. A copy of a `repeat` after the first is a
//! frame too, with the sizes its input went through copy by copy.

use std::fmt;

use miette::{Diagnostic, LabeledSpan, Severity};

use super::CheckError;
use crate::span::Span;

/// One step from the call a user wrote to the error: a module instance or
/// a copy of a `repeat`.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// The call (`EncoderBlock(32, 5, 64)`) or the `repeat`'s count.
    pub span: Span,
    /// As the message names it: "`EncoderBlock(32, 5, 64)`", "the 3rd copy
    /// of `repeat 4`".
    pub name: String,
    /// What the label at `span` says.
    pub label: String,
}

/// An error and the frames that led to it, outermost first.
#[derive(Debug, Clone, PartialEq)]
pub struct InInstance(Box<(CheckError, Vec<Frame>)>);

impl InInstance {
    /// The outermost call's span: where the error is reported.
    pub fn span(&self) -> Span {
        self.0 .1[0].span
    }

    /// `error` as seen from `frame`, the call that contains it.
    pub fn wrap(error: CheckError, frame: Frame) -> CheckError {
        match error {
            CheckError::InInstance(mut wrapped) => {
                wrapped.0 .1.insert(0, frame);
                CheckError::InInstance(wrapped)
            }
            error => CheckError::InInstance(InInstance(Box::new((error, vec![frame])))),
        }
    }

    fn inner(&self) -> &CheckError {
        &self.0 .0
    }
}

/// Wraps each error from `first` on whose span lies inside `body` (the
/// module's definition, or the `repeat`'s chain) and that the values
/// caused, in `frame`. Errors at the call itself (a wrong argument, an
/// input of the wrong shape) stay as they are, and so do those in how the
/// module is written (an unknown name), which would be the same at every
/// call.
pub fn wrap_inside(errors: &mut [CheckError], first: usize, body: Span, frame: &Frame) {
    for error in errors.iter_mut().skip(first) {
        let at = error.span();
        let inside = body.start <= at.start && at.end <= body.end && at != frame.span;
        if inside && error.depends_on_values() {
            let taken = std::mem::replace(error, CheckError::invalid("", at, ""));
            *error = InInstance::wrap(taken, frame.clone());
        }
    }
}

/// "1st", "2nd", "3rd", "4th", … "11th", "21st".
pub fn ordinal(n: i64) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

impl fmt::Display for InInstance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path: Vec<&str> = self.0 .1.iter().map(|frame| frame.name.as_str()).collect();
        write!(f, "{}, in {}", self.inner(), path.join(" › "))
    }
}

impl std::error::Error for InInstance {}

impl Diagnostic for InInstance {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.inner().code()
    }

    fn severity(&self) -> Option<Severity> {
        self.inner().severity()
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.inner().help()
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let frames = self.0 .1.iter().enumerate().map(|(i, frame)| {
            let label = Some(frame.label.clone());
            if i == 0 {
                LabeledSpan::new_primary_with_span(label, frame.span)
            } else {
                LabeledSpan::new_with_span(label, frame.span)
            }
        });
        let inside = self
            .inner()
            .labels()
            .into_iter()
            .flatten()
            .map(|l| LabeledSpan::new(l.label().map(str::to_string), l.offset(), l.len()));
        Some(Box::new(frames.chain(inside)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals_as_english_writes_them() {
        let words: Vec<String> = [1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111]
            .into_iter()
            .map(ordinal)
            .collect();
        assert_eq!(
            words,
            [
                "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st",
                "111th"
            ]
        );
    }

    #[test]
    fn frames_nest_outermost_first_and_the_outermost_is_primary() {
        let inner = CheckError::invalid("5 heads", Span::new(50, 60), "inside");
        let frame = |at: usize, name: &str| Frame {
            span: Span::new(at, at + 5),
            name: name.into(),
            label: format!("at {name}"),
        };
        let once = InInstance::wrap(inner, frame(30, "`Block(5)`"));
        let twice = InInstance::wrap(once, frame(10, "`Stage(5)`"));
        assert_eq!(twice.span(), Span::new(10, 15));
        assert_eq!(twice.to_string(), "5 heads, in `Stage(5)` › `Block(5)`");
        let labels: Vec<(usize, bool, String)> = twice
            .labels()
            .unwrap()
            .map(|l| (l.offset(), l.primary(), l.label().unwrap().to_string()))
            .collect();
        assert_eq!(
            labels,
            [
                (10, true, "at `Stage(5)`".into()),
                (30, false, "at `Block(5)`".into()),
                (50, false, "inside".into())
            ]
        );
        assert_eq!(
            twice.code().unwrap().to_string(),
            "dtl::check::invalid_value"
        );
    }
}
