//! Faults on purpose, for the reliability tests: `DTL_FAULT=KIND@RANK:STEP`
//! makes rank RANK, at step STEP, hang (`hang`), exit at once (`exit`),
//! stop as SIGSTOP stops it, threads and all (`stop`; step 0: at start-up,
//! before it joins the others), or take a non-finite loss (`nan`); or makes
//! the checkpoint of step STEP
//! (written by rank 0) stop for good halfway through writing its files
//! (`pause_write`) or between its two renames (`pause_swap`), so that a
//! test's kill lands exactly there; or makes rank RANK fail to write its
//! slices of a sharded checkpoint of step STEP (`slices`), as a full disk
//! would. Read once; without the variable nothing
//! happens. Documented in docs/reliability.md.

use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Hang,
    Exit,
    /// The whole process stopped (SIGSTOP), as a frozen machine would be.
    Stop,
    Nan,
    /// Inside a checkpoint's write: its model file written, its state not.
    PauseWrite,
    /// Between a checkpoint's renames: the last one moved aside, the new
    /// one not yet in its place.
    PauseSwap,
    /// A replica's slices of a sharded checkpoint cannot be written.
    Slices,
}

#[derive(Debug, Clone, Copy)]
struct Fault {
    kind: Kind,
    rank: usize,
    step: u64,
}

fn parse(text: &str) -> Option<Fault> {
    let (kind, at) = text.split_once('@')?;
    let (rank, step) = at.split_once(':')?;
    let kind = match kind {
        "hang" => Kind::Hang,
        "exit" => Kind::Exit,
        "stop" => Kind::Stop,
        "nan" => Kind::Nan,
        "pause_write" => Kind::PauseWrite,
        "pause_swap" => Kind::PauseSwap,
        "slices" => Kind::Slices,
        _ => return None,
    };
    Some(Fault {
        kind,
        rank: rank.parse().ok()?,
        step: step.parse().ok()?,
    })
}

fn fault() -> Option<Fault> {
    static FAULT: OnceLock<Option<Fault>> = OnceLock::new();
    *FAULT.get_or_init(|| std::env::var("DTL_FAULT").ok().and_then(|t| parse(&t)))
}

/// The fault planned for `rank` at `step`, if any.
pub fn at(rank: usize, step: u64) -> Option<Kind> {
    fault()
        .filter(|f| f.rank == rank && f.step == step)
        .map(|f| f.kind)
}

/// Acts on a hang or exit planned for now.
pub fn strike(rank: usize, step: u64) {
    match at(rank, step) {
        Some(Kind::Hang) => hang(),
        Some(Kind::Exit) => std::process::exit(9),
        // SAFETY: raises a signal at this process; nothing else is touched.
        Some(Kind::Stop) => unsafe {
            libc::raise(libc::SIGSTOP);
        },
        Some(Kind::Nan | Kind::PauseWrite | Kind::PauseSwap | Kind::Slices) | None => {}
    }
}

/// Stops for good at `point` of the checkpoint of `step`, if planned.
pub fn pause_in_checkpoint(point: Kind, step: u64) {
    if at(0, step) == Some(point) {
        hang()
    }
}

fn hang() -> ! {
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn faults_read_as_written() {
        let f = super::parse("nan@1:3").unwrap();
        assert_eq!((f.kind, f.rank, f.step), (super::Kind::Nan, 1, 3));
        assert!(super::parse("nan@x:3").is_none() && super::parse("boom@1:1").is_none());
    }
}
