"""dtl's seeded orders, re-implemented from the language reference: which rows
are held out, in which order the training rows come, and how dropout is
seeded at each step.

These are the only pieces the PyTorch references share with each other
(torch_reference.py, twins.py, layers.py, bf16.py): a reference cannot
reproduce dtl's run without drawing the same rows in the same order, and
the generator is dtl's own (SplitMix64, runtime and compiler
`util/rng.rs`), not anything PyTorch offers. Everything else — the
networks, losses, optimizers, clipping, schedules — each reference writes
for itself.

- Split: the rows 0..n are shuffled (Fisher–Yates, SplitMix64 seeded by
  `seed`) unless the data block says `shuffle = false`; the last
  round(n · valid) of them are held out.
- Batches: a second SplitMix64, seeded by `seed + 1`, reshuffles the
  training rows (positions 0..rows of the training split) at the start of
  every epoch; an epoch ends when the next micro-batch would run past the
  end, and the rows left over are skipped. With `shuffle = false` every
  epoch reads the training rows in order.
- Augmentation (`random_crop`, `horizontal_flip`): each training sample's
  draws from `for_name(seed, "augment {epoch} {place}")`, its place in the
  epoch's order (augment_draw).
- Dropout: before step k (from 1) the global generator is seeded with
  `dropout_seed(seed, k)`.
- Token files (`tokens(...)`): no row order. The file's (n − 1) // T
  windows of T tokens are split in file order, the last round(windows ·
  valid) held out; training windows start anywhere in the training tokens
  (offsets drawn from the `seed + 1` generator) or, with `shuffle = false`,
  one after another (TokenOrder).
"""

MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


class SplitMix64:
    """dtl's generator: state = seed ^ golden ratio, SplitMix64 steps."""

    def __init__(self, seed):
        self.state = (seed ^ GOLDEN) & MASK64

    def next_u64(self):
        self.state = (self.state + GOLDEN) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def below(self, n):
        """A number in 0..n: the next value modulo n (Rng::below)."""
        return self.next_u64() % max(n, 1)

    def shuffle(self, items):
        """Fisher–Yates from the end, j = next % (i + 1), in place."""
        for i in range(len(items) - 1, 0, -1):
            j = self.next_u64() % (i + 1)
            items[i], items[j] = items[j], items[i]


def fnv1a(data):
    """FNV-1a, 64 bits (util/rng.rs `fnv1a`)."""
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & MASK64
    return h


def for_name(seed, name):
    """The generator of one named stream (Rng::for_name): the seed mixed
    with the name's FNV-1a hash rotated left by 17."""
    h = fnv1a(name.encode())
    return SplitMix64(seed ^ (((h << 17) | (h >> 47)) & MASK64))


def augment_draw(seed, epoch, place, padding, flip):
    """(top, left, flipped) of the training sample at `place` of epoch
    `epoch` (runtime/src/augment.rs): top and left `below(2P + 1)` each when
    `random_crop = P` is on, then a flip when next_f64() < p."""
    rng = for_name(seed, f"augment {epoch} {place}")
    top = left = 0
    if padding > 0:
        top, left = rng.below(2 * padding + 1), rng.below(2 * padding + 1)
    flipped = flip > 0 and (rng.next_u64() >> 11) / float(1 << 53) < flip
    return top, left, flipped


def dropout_seed(seed, step):
    """The seed of the global generator before optimizer step `step`."""
    mixed = (seed ^ ((step * 0xD1B54A32D192ED03) & MASK64)) & MASK64
    return SplitMix64(mixed).next_u64() >> 1


def held_out(rows, valid):
    """round(rows · valid), halves away from zero (Rust's f64::round)."""
    x = rows * valid
    return int(x + 0.5) if x >= 0 else -int(-x + 0.5)


def split(rows, valid, seed, shuffle=True):
    """(training row indices, held-out row indices) into the file's rows."""
    order = list(range(rows))
    if shuffle:
        SplitMix64(seed).shuffle(order)
    keep = rows - held_out(rows, valid)
    return order[:keep], order[keep:]


class BatchOrder:
    """The micro-batches of an epoch-by-epoch stream, as positions into the
    training split (0..rows). `next()` gives the next `micro_batch` of them."""

    def __init__(self, rows, micro_batch, seed, shuffle=True):
        assert micro_batch <= rows, "micro_batch larger than the training rows"
        self.order = list(range(rows))
        self.micro_batch = micro_batch
        self.shuffle = shuffle
        self.rng = SplitMix64((seed + 1) & MASK64)
        self.position = rows  # the first call starts epoch 1
        self.epoch = 0

    def next(self):
        if self.position + self.micro_batch > len(self.order):
            if self.shuffle:
                self.rng.shuffle(self.order)
            self.position = 0
            self.epoch += 1
        batch = self.order[self.position: self.position + self.micro_batch]
        self.position += self.micro_batch
        return batch


class TokenOrder:
    """Where the windows of each micro-batch of a token file start (token
    offsets), as runtime/src/data.rs `Batches` reads them for one process.

    With `shuffle`, every micro-batch draws its `micro_batch` starts from
    the `seed + 1` generator, one `below(last + 1)` each, last =
    (train_windows − 1) · context: any token of the training part, not only
    window starts. Without, training window i starts at i · context, read
    in order, a new epoch from window 0 when fewer than a micro-batch are
    left."""

    def __init__(self, train_windows, context, micro_batch, seed, shuffle=True):
        assert micro_batch <= train_windows, "micro_batch larger than the training windows"
        self.windows, self.context = train_windows, context
        self.micro_batch, self.shuffle = micro_batch, shuffle
        self.rng = SplitMix64((seed + 1) & MASK64)
        self.position = 0

    def next(self):
        if self.position + self.micro_batch > self.windows:
            self.position = 0
        if self.shuffle:
            last = (self.windows - 1) * self.context
            starts = [self.rng.below(last + 1) for _ in range(self.micro_batch)]
        else:
            starts = [(self.position + i) * self.context for i in range(self.micro_batch)]
        self.position += self.micro_batch
        return starts
