//! A flat binary file of token ids (nanoGPT's `train.bin`): little-endian
//! uint16 or uint32, read memory-mapped, never loaded whole. Windows of
//! `context + 1` tokens make a sample: the first `context` are the input,
//! the last `context` the targets (each position's next token).
//!
//! The file is split by windows: of its `(tokens - 1) / context`
//! non-overlapping windows, the last `valid` fraction are held out; training
//! reads the tokens before them, either at random offsets (any position, not
//! only window boundaries) or window after window.

use std::path::Path;

use memmap2::Mmap;

use crate::plan::TokenDtype;

/// An open token file.
pub struct TokenFile {
    map: Mmap,
    dtype: TokenDtype,
}

impl TokenFile {
    /// Maps `path`; its length must be a whole number of tokens.
    pub fn open(path: &Path, dtype: TokenDtype) -> Result<TokenFile, String> {
        let file = super::read::open(path)?;
        // SAFETY: the mapping is read-only; a file changed underneath a run
        // shows as different tokens, never as memory unsafety for the
        // reads below (which copy values out).
        let map = unsafe { Mmap::map(&file) }.map_err(|e| format!("cannot map: {e}"))?;
        let size = dtype.bytes();
        if map.len() % size != 0 {
            return Err(format!(
                "{} bytes is not a whole number of {} tokens ({size} bytes each): truncated, or another dtype",
                map.len(),
                dtype.name()
            ));
        }
        Ok(TokenFile { map, dtype })
    }

    /// Tokens in the file.
    pub fn len(&self) -> u64 {
        (self.map.len() / self.dtype.bytes()) as u64
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Token `i`.
    pub fn get(&self, i: u64) -> u32 {
        let i = i as usize;
        match self.dtype {
            TokenDtype::Uint16 => u16::from_le_bytes([self.map[2 * i], self.map[2 * i + 1]]) as u32,
            TokenDtype::Uint32 => {
                u32::from_le_bytes(self.map[4 * i..4 * i + 4].try_into().expect("four bytes"))
            }
        }
    }

    /// Tokens `start .. start + out.len()`, as float32 (exact below 2^24).
    pub fn read(&self, start: u64, out: &mut [f32]) {
        for (k, slot) in out.iter_mut().enumerate() {
            *slot = self.get(start + k as u64) as f32;
        }
    }

    /// The largest id in the file and its position (a pass over the whole
    /// file: what the checker does once, before launch), in chunks spent
    /// from `meter`.
    pub fn max(&self, meter: &mut super::read::Meter) -> Result<(u32, u64), String> {
        const CHUNK: usize = 1 << 20;
        let size = self.dtype.bytes();
        let (mut max, mut at) = (0u32, 0u64);
        for (c, chunk) in self.map.chunks(CHUNK * size).enumerate() {
            meter.spend(chunk.len() as u64)?;
            for (i, token) in chunk.chunks_exact(size).enumerate() {
                let v = match self.dtype {
                    TokenDtype::Uint16 => u16::from_le_bytes([token[0], token[1]]) as u32,
                    TokenDtype::Uint32 => u32::from_le_bytes(token.try_into().expect("four bytes")),
                };
                if v > max {
                    (max, at) = (v, (c * CHUNK + i) as u64);
                }
            }
        }
        Ok((max, at))
    }
}

/// How a token file of `tokens` tokens splits into windows of `context`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenSplit {
    pub context: u64,
    /// Non-overlapping windows in the whole file.
    pub windows: u64,
    /// The first windows, for training; the rest are held out.
    pub train_windows: u64,
}

impl TokenSplit {
    /// `held_out` of the file's windows are held out (the last ones).
    pub fn new(tokens: u64, context: u64, held_out: impl Fn(u64) -> u64) -> TokenSplit {
        let windows = tokens.saturating_sub(1) / context.max(1);
        TokenSplit {
            context,
            windows,
            train_windows: windows - held_out(windows).min(windows),
        }
    }

    /// The largest offset a random training window may start at: its
    /// inputs and targets stay inside the training windows' tokens.
    pub fn last_train_start(&self) -> u64 {
        (self.train_windows * self.context).saturating_sub(self.context)
    }

    /// Where held-out window `i` starts.
    pub fn valid_start(&self, i: u64) -> u64 {
        (self.train_windows + i) * self.context
    }

    pub fn valid_windows(&self) -> u64 {
        self.windows - self.train_windows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file in the system's temporary folder, removed when dropped.
    struct Temp(std::path::PathBuf);

    impl Drop for Temp {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn file(bytes: &[u8]) -> Temp {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "dtl-tokens-{}-{}.bin",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::write(&path, bytes).unwrap();
        Temp(path)
    }

    #[test]
    fn reads_little_endian_ids() {
        let f = file(&[1, 0, 0x34, 0x12, 0xff, 0xff]);
        let t = TokenFile::open(&f.0, TokenDtype::Uint16).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!((t.get(0), t.get(1), t.get(2)), (1, 0x1234, 0xffff));
        assert_eq!(
            t.max(&mut super::super::read::Limits::unbounded().meter())
                .unwrap(),
            (0xffff, 2)
        );
        let f = file(&[1, 0, 0, 0, 0, 0, 1, 0]);
        let t = TokenFile::open(&f.0, TokenDtype::Uint32).unwrap();
        assert_eq!((t.get(0), t.get(1)), (1, 0x10000));
        let mut out = [0.0; 2];
        t.read(0, &mut out);
        assert_eq!(out, [1.0, 65536.0]);
    }

    #[test]
    fn a_partial_token_is_an_error() {
        let f = file(&[1, 0, 2]);
        let err = TokenFile::open(&f.0, TokenDtype::Uint16).err().unwrap();
        assert!(
            err.contains("3 bytes is not a whole number of uint16 tokens"),
            "{err}"
        );
    }

    #[test]
    fn the_split_holds_out_the_last_windows() {
        // 101 tokens, context 10: 10 windows; 2 held out start at 80 and 90.
        let s = TokenSplit::new(101, 10, |w| w / 5);
        assert_eq!((s.windows, s.train_windows, s.valid_windows()), (10, 8, 2));
        assert_eq!((s.valid_start(0), s.valid_start(1)), (80, 90));
        // A random window starting at 70 reads inputs 70..80 and targets
        // 71..81: token 80 is the held-out part's first input, never a
        // training input.
        assert_eq!(s.last_train_start(), 70);
    }
}
