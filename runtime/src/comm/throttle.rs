//! A slow link between sites, for testing on one machine: `dtl run --link
//! 'groups: 100 Mbit/s, 10 ms'` puts each sync group on a site of its own
//! (`sites=S: …`: S sites of consecutive replicas), and every collective
//! over ranks of more than one site then takes at least what it would
//! over a link of that bandwidth and latency: an all-reduce of b bytes
//! over n ranks by the ring's formula, 2(n − 1) latencies and
//! 2(n − 1)/n · b bytes at the bandwidth; a few host values (the step's
//! loss) by recursive doubling, log2(n) exchanges. The data still moves
//! at the machine's own speed: each operation is held back until its
//! emulated time has passed, and an all-reduce started in the background
//! is ready no earlier, so that what overlaps it is seen to. The whole
//! world's communicator (stop requests, fp16's overflow flag) is left
//! alone.

use std::time::{Duration, Instant};

use dtl_compiler::plan::Parallelism;
use tch::Tensor;

use super::{Backend, CommError, Communicator, HealthProbe, Pending, PendingOp, ReduceOp};

/// Where the slow link runs, and how slow it is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    pub sites: Sites,
    pub bytes_per_second: f64,
    pub latency: Duration,
}

/// The sites the link joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sites {
    /// One per sync group (`groups = G`).
    Groups,
    /// So many, of consecutive replicas.
    Count(u64),
}

impl Link {
    /// `groups: 100 Mbit/s, 10 ms` or `sites=2: 1 Gbit/s, 0.5 ms`;
    /// bandwidths in bit/s, kbit/s, Mbit/s, Gbit/s or B/s, kB/s, MB/s, GB/s
    /// (powers of 1000), latencies in us, ms or s.
    pub fn parse(text: &str) -> Result<Link, String> {
        let form = "write it as `groups: 100 Mbit/s, 10 ms` or `sites=2: 1 Gbit/s, 0.5 ms`";
        let (sites, rest) = text
            .split_once(':')
            .ok_or_else(|| format!("`{text}` names no sites: {form}"))?;
        let sites = match sites.trim() {
            "groups" => Sites::Groups,
            other => match other
                .strip_prefix("sites=")
                .map(|n| n.trim().parse::<u64>())
            {
                Some(Ok(n)) if n >= 2 => Sites::Count(n),
                _ => {
                    return Err(format!(
                        "`{other}` is not `groups` or `sites=N` (N ≥ 2): {form}"
                    ))
                }
            },
        };
        let (bandwidth, latency) = rest
            .split_once(',')
            .ok_or_else(|| format!("`{rest}` needs a bandwidth and a latency: {form}"))?;
        Ok(Link {
            sites,
            bytes_per_second: bandwidth_of(bandwidth.trim())?,
            latency: latency_of(latency.trim())?,
        })
    }

    /// How many sites the link joins in `layout`: a number of sites that
    /// splits its replicas evenly.
    pub fn sites_of(&self, layout: &Parallelism) -> Result<u64, String> {
        let sites = match self.sites {
            Sites::Groups if layout.groups > 0 => layout.sync_groups(),
            Sites::Groups => {
                return Err("--link 'groups: …' puts each sync group on a site, but the plan has no `groups`: name the sites instead, as --link 'sites=2: …'".into())
            }
            Sites::Count(n) => n,
        };
        if sites > layout.data || !layout.data.is_multiple_of(sites) {
            return Err(format!(
                "--link: {sites} sites do not split the {} replicas evenly",
                layout.data
            ));
        }
        Ok(sites)
    }

    /// How long `steps` messages of `bytes` in all take over the link.
    fn time(&self, steps: usize, bytes: f64) -> Duration {
        self.latency * steps as u32 + Duration::from_secs_f64(bytes / self.bytes_per_second)
    }
}

/// A number and its unit, split.
fn number_and_unit(text: &str) -> Option<(f64, &str)> {
    let at = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let number = text[..at].trim().parse::<f64>().ok()?;
    (number > 0.0 && number.is_finite()).then_some((number, text[at..].trim()))
}

fn bandwidth_of(text: &str) -> Result<f64, String> {
    let (number, unit) = number_and_unit(text).ok_or_else(|| {
        format!("`{text}` is not a bandwidth (a positive number and a unit: `100 Mbit/s`)")
    })?;
    let bytes = match unit {
        "bit/s" => 1.0 / 8.0,
        "kbit/s" => 1e3 / 8.0,
        "Mbit/s" => 1e6 / 8.0,
        "Gbit/s" => 1e9 / 8.0,
        "B/s" => 1.0,
        "kB/s" => 1e3,
        "MB/s" => 1e6,
        "GB/s" => 1e9,
        _ => {
            return Err(format!(
                "`{unit}` is not a unit of bandwidth: bit/s, kbit/s, Mbit/s, Gbit/s, B/s, kB/s, MB/s or GB/s"
            ))
        }
    };
    Ok(number * bytes)
}

fn latency_of(text: &str) -> Result<Duration, String> {
    let (number, unit) = number_and_unit(text).ok_or_else(|| {
        format!("`{text}` is not a latency (a positive number and a unit: `10 ms`)")
    })?;
    let seconds = match unit {
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        _ => return Err(format!("`{unit}` is not a unit of time: us, ms or s")),
    };
    Ok(Duration::from_secs_f64(number * seconds))
}

/// A communicator whose collectives cross the slow link.
pub struct Throttled {
    inner: Box<dyn Communicator>,
    link: Link,
}

impl Throttled {
    pub fn new(inner: Box<dyn Communicator>, link: Link) -> Throttled {
        Throttled { inner, link }
    }

    /// `op`, held back until `time` after it started.
    fn held<T>(&self, time: Duration, op: impl FnOnce() -> T) -> T {
        let until = Instant::now() + time;
        let out = op();
        sleep_until(until);
        out
    }

    /// An all-reduce of `tensor` over the group, by the ring's formula.
    fn ring(&self, tensor: &Tensor) -> Duration {
        let n = self.inner.size();
        let bytes = bytes_of(tensor) * 2.0 * (n - 1) as f64 / n as f64;
        self.link.time(2 * (n - 1), bytes)
    }
}

fn bytes_of(tensor: &Tensor) -> f64 {
    (tensor.numel() * tensor.kind().elt_size_in_bytes()) as f64
}

fn sleep_until(until: Instant) {
    let now = Instant::now();
    if until > now {
        std::thread::sleep(until - now);
    }
}

/// A background all-reduce that is ready no earlier than the link allows.
struct Slowed {
    inner: Pending,
    ready: Instant,
}

impl PendingOp for Slowed {
    fn test(&mut self) -> Result<bool, CommError> {
        Ok(self.inner.test()? && Instant::now() >= self.ready)
    }

    fn wait(self: Box<Self>) -> Result<Tensor, CommError> {
        let sum = self.inner.wait()?;
        sleep_until(self.ready);
        Ok(sum)
    }
}

impl Communicator for Throttled {
    fn rank(&self) -> usize {
        self.inner.rank()
    }

    fn size(&self) -> usize {
        self.inner.size()
    }

    fn backend(&self) -> Backend {
        self.inner.backend()
    }

    fn all_reduce(&self, tensor: &mut Tensor, op: ReduceOp) -> Result<(), CommError> {
        let time = self.ring(tensor);
        self.held(time, || self.inner.all_reduce(tensor, op))
    }

    fn all_reduce_start(&self, tensor: Tensor) -> Result<Pending, CommError> {
        let ready = Instant::now() + self.ring(&tensor);
        let inner = self.inner.all_reduce_start(tensor)?;
        Ok(Pending::new(Slowed { inner, ready }))
    }

    fn all_gather(&self, send: &Tensor, recv: &mut Tensor) -> Result<(), CommError> {
        let n = self.inner.size();
        let time = self.link.time(n - 1, bytes_of(send) * (n - 1) as f64);
        self.held(time, || self.inner.all_gather(send, recv))
    }

    fn reduce_scatter(&self, send: &Tensor, recv: &mut Tensor) -> Result<(), CommError> {
        let n = self.inner.size();
        let time = self
            .link
            .time(n - 1, bytes_of(send) * (n - 1) as f64 / n as f64);
        self.held(time, || self.inner.reduce_scatter(send, recv))
    }

    fn broadcast(&self, tensor: &mut Tensor, root: usize) -> Result<(), CommError> {
        let time = self.link.time(1, bytes_of(tensor));
        self.held(time, || self.inner.broadcast(tensor, root))
    }

    fn send(&self, tensor: &Tensor, to: usize) -> Result<(), CommError> {
        let time = self.link.time(1, bytes_of(tensor));
        self.held(time, || self.inner.send(tensor, to))
    }

    fn recv(&self, tensor: &mut Tensor, from: usize) -> Result<(), CommError> {
        let time = self.link.time(1, bytes_of(tensor));
        self.held(time, || self.inner.recv(tensor, from))
    }

    fn exchange(
        &self,
        sends: &[(&Tensor, usize)],
        recvs: &mut [(&mut Tensor, usize)],
    ) -> Result<(), CommError> {
        let bytes: f64 = sends.iter().map(|(t, _)| bytes_of(t)).sum();
        let time = self.link.time(1, bytes);
        self.held(time, || self.inner.exchange(sends, recvs))
    }

    fn split(&self, color: usize, key: usize) -> Result<Box<dyn Communicator>, CommError> {
        let part = self.inner.split(color, key)?;
        Ok(Box::new(Throttled::new(part, self.link)))
    }

    fn all_reduce_host(&self, values: &mut [f64], op: ReduceOp) -> Result<(), CommError> {
        // A few values: MPI's recursive doubling, log2(n) exchanges.
        let rounds = self.inner.size().next_power_of_two().trailing_zeros() as usize;
        let time = self.link.time(rounds, (values.len() * 8 * rounds) as f64);
        self.held(time, || self.inner.all_reduce_host(values, op))
    }

    fn failed_ranks(&self) -> Option<Vec<usize>> {
        self.inner.failed_ranks()
    }

    fn health_probe(&self) -> Option<HealthProbe> {
        self.inner.health_probe()
    }

    fn abort(&self, code: i32) -> ! {
        self.inner.abort(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_parse_with_their_units_and_bad_ones_say_why() {
        let link = Link::parse("groups: 100 Mbit/s, 10 ms").unwrap();
        assert_eq!(link.sites, Sites::Groups);
        assert_eq!(link.bytes_per_second, 12.5e6);
        assert_eq!(link.latency, Duration::from_millis(10));
        let link = Link::parse("sites=4: 2 GB/s, 500 us").unwrap();
        assert_eq!(link.sites, Sites::Count(4));
        assert_eq!(link.bytes_per_second, 2e9);
        assert_eq!(link.latency, Duration::from_micros(500));
        for (bad, says) in [
            ("100 Mbit/s, 10 ms", "names no sites"),
            ("sites=1: 1 Gbit/s, 1 ms", "sites=N"),
            ("groups: 100 Mbit/s", "a bandwidth and a latency"),
            ("groups: 100 Mbps, 10 ms", "not a unit of bandwidth"),
            ("groups: fast, 10 ms", "not a bandwidth"),
            ("groups: 1 Gbit/s, 10 min", "not a unit of time"),
        ] {
            let err = Link::parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn a_ring_all_reduce_takes_its_latencies_and_its_bytes() {
        let link = Link::parse("groups: 8 Mbit/s, 10 ms").unwrap();
        // 2 ranks: 2 messages, 1 MB each way: 2 × 10 ms + 1 s.
        let time = link.time(2, 1e6);
        assert_eq!(time, Duration::from_millis(1020));
    }
}
