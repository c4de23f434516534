//! A cluster description (`clusters/*.yaml`): what `dtl explain --cluster`
//! predicts a step on. The device's dense peak FLOP/s per precision, its
//! memory and memory bandwidth; the devices of a node and the link
//! between them; the network between nodes (per device); the efficiency
//! factors that turn peaks into what a training step reaches. Units are
//! SI: FLOP/s, bytes, bytes/s in one direction, seconds.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::plan::Precision;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    pub name: String,
    pub device: Device,
    pub node: Node,
    /// Between nodes, per device.
    pub network: Link,
    pub efficiency: Efficiency,
    /// Where each figure comes from.
    #[serde(default)]
    pub sources: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    pub name: String,
    pub peak_flops: PeakFlops,
    pub memory_bytes: u64,
    pub memory_bandwidth: f64,
}

/// Dense peaks (not the sparse figures datasheets lead with).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeakFlops {
    pub fp32: f64,
    /// TensorFloat-32 matmuls (`precision = tf32`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tf32: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bf16: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fp16: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub devices: u64,
    /// Between the devices of a node.
    pub link: Link,
    /// When the node's ranks share one device (a CPU's cores): the
    /// fraction of the device's FLOP/s and memory bandwidth one rank gets
    /// while k of them run, k = 1, 2, … (the last holds beyond); they
    /// share its memory too. Empty: a device for each rank.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub share: Vec<f64>,
}

/// A link's bandwidth (bytes/s each way, per device) and the latency of one
/// message of a collective's step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    pub bandwidth: f64,
    pub latency: f64,
}

/// What a step reaches of the peaks, each in (0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Efficiency {
    /// Of the dense peak FLOP/s, in the forward and backward passes.
    pub compute: f64,
    /// Of a link's bandwidth, in a collective or a transfer.
    pub network: f64,
    /// Of the memory bandwidth, in the optimizer's element-wise update
    /// and the memory-bound layers (norms, element-wise).
    pub memory: f64,
}

impl Cluster {
    /// Reads and checks the description in `path`; the error names the
    /// file and what is wrong.
    pub fn load(path: &Path) -> Result<Cluster, String> {
        let name = path.display();
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {name}: {e}"))?;
        let cluster: Cluster =
            serde_yaml_ng::from_str(&text).map_err(|e| format!("{name}: {e}"))?;
        cluster.check().map_err(|e| format!("{name}: {e}"))?;
        Ok(cluster)
    }

    /// The description as YAML, as [`Cluster::load`] reads it.
    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).expect("a cluster serializes")
    }

    /// Every figure positive and finite, every efficiency in (0, 1].
    pub fn check(&self) -> Result<(), String> {
        let positive = [
            ("device.peak_flops.fp32", Some(self.device.peak_flops.fp32)),
            ("device.peak_flops.tf32", self.device.peak_flops.tf32),
            ("device.peak_flops.bf16", self.device.peak_flops.bf16),
            ("device.peak_flops.fp16", self.device.peak_flops.fp16),
            (
                "device.memory_bandwidth",
                Some(self.device.memory_bandwidth),
            ),
            ("node.link.bandwidth", Some(self.node.link.bandwidth)),
            ("network.bandwidth", Some(self.network.bandwidth)),
        ];
        for (field, value) in positive {
            if let Some(v) = value.filter(|v| !(*v > 0.0 && v.is_finite())) {
                return Err(format!("{field} must be a positive number, not {v}"));
            }
        }
        for (field, v) in [
            ("node.link.latency", self.node.link.latency),
            ("network.latency", self.network.latency),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(format!("{field} must be 0 or more seconds, not {v}"));
            }
        }
        let e = &self.efficiency;
        for (field, v) in [
            ("efficiency.compute", e.compute),
            ("efficiency.network", e.network),
            ("efficiency.memory", e.memory),
        ] {
            if !(v > 0.0 && v <= 1.0) {
                return Err(format!(
                    "{field} is a fraction of a peak, in (0, 1], not {v}"
                ));
            }
        }
        if let Some(s) = self.node.share.iter().find(|s| !(**s > 0.0 && **s <= 1.0)) {
            return Err(format!(
                "node.share holds fractions of the device, in (0, 1], not {s}"
            ));
        }
        if self.node.devices == 0 || self.device.memory_bytes == 0 {
            return Err("node.devices and device.memory_bytes must be at least 1".into());
        }
        Ok(())
    }

    /// The dense peak FLOP/s at `precision`; float32's where the device
    /// gives none for it.
    pub fn peak(&self, precision: Precision) -> f64 {
        let peaks = &self.device.peak_flops;
        let given = match precision {
            Precision::Fp32 => None,
            Precision::Tf32 => peaks.tf32,
            Precision::Bf16 => peaks.bf16,
            Precision::Fp16 => peaks.fp16,
        };
        given.unwrap_or(peaks.fp32)
    }

    /// The ranks on the first node of a run of `world` ranks, and the
    /// fraction of the device each gets ([`Node::share`]; 1 without).
    pub fn share(&self, world: u64) -> (u64, f64) {
        let here = world.min(self.node.devices).max(1);
        match self.node.share.as_slice() {
            [] => (1, 1.0),
            share => (here, share[(here as usize).min(share.len()) - 1]),
        }
    }

    /// The link between the devices of `ranks` (one per device, in rank
    /// order across the nodes): the node's when they share a node, else
    /// the network's, and its name. Across nodes, a collective over m
    /// ranks of every node runs m rings at once, each through its own
    /// device's link to the network (as NCCL's channels do on a fabric
    /// with a link per device): m times one device's bandwidth, up to the
    /// node's own link, which the rings' hops inside the node share.
    pub fn link_of(&self, ranks: &[u64]) -> (Link, &'static str) {
        let node = |r: &u64| r / self.node.devices;
        let first = ranks.first().map(node);
        if ranks.iter().all(|r| Some(node(r)) == first) {
            return (self.node.link, "node");
        }
        let mut per_node = std::collections::BTreeMap::new();
        for r in ranks {
            *per_node.entry(node(r)).or_insert(0u64) += 1;
        }
        let m = per_node.values().copied().min().unwrap_or(1);
        let bandwidth = (self.network.bandwidth * m as f64).min(self.node.link.bandwidth);
        let link = Link {
            bandwidth: bandwidth.max(self.network.bandwidth),
            latency: self.network.latency,
        };
        (link, "network")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preset(name: &str) -> Cluster {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../clusters");
        Cluster::load(&root.join(name)).unwrap()
    }

    /// A group inside a node takes its link; across nodes, one device's
    /// network bandwidth per rank of it in each node (the fewest), up to
    /// the node's link.
    #[test]
    fn a_group_across_nodes_runs_a_ring_per_rank_in_a_node() {
        let h100 = preset("h100_sxm.yaml");
        let (link, via) = h100.link_of(&[0, 2, 4, 6]);
        assert_eq!((link.bandwidth, via), (450e9, "node"));
        // Replicas two ranks apart (tensor = 2): 4 in each node.
        let strided: Vec<u64> = (0..64).map(|r| 2 * r).collect();
        let (link, via) = h100.link_of(&strided);
        assert_eq!(
            (link.bandwidth, link.latency, via),
            (200e9, 10e-6, "network")
        );
        // One rank a node: one device's link.
        let (link, _) = h100.link_of(&[0, 8, 16, 24]);
        assert_eq!(link.bandwidth, 50e9);
        // Every device of 2 nodes: 8 × 50 GB/s, bounded by NVLink's 450.
        let (link, _) = h100.link_of(&(0..16).collect::<Vec<_>>());
        assert_eq!(link.bandwidth, 400e9);
    }

    #[test]
    fn the_presets_read_with_their_dense_peaks() {
        let h100 = preset("h100_sxm.yaml");
        assert_eq!(h100.peak(Precision::Bf16), 989.4e12);
        assert_eq!(h100.peak(Precision::Fp32), 67.0e12);
        let h200 = preset("h200_sxm.yaml");
        assert_eq!(h200.peak(Precision::Bf16), 989.4e12);
        assert!(h200.device.memory_bytes > h100.device.memory_bytes);
        let a100 = preset("a100_80gb.yaml");
        assert_eq!(a100.peak(Precision::Fp16), 312.0e12);
        for cluster in [h100, h200, a100] {
            assert_eq!(cluster.node.devices, 8);
            assert!(!cluster.sources.is_empty(), "{}", cluster.name);
        }
        // This machine, as `dtl calibrate` wrote it: ranks share its cores.
        let local = preset("local.yaml");
        assert_eq!(local.node.share.len() as u64, local.node.devices);
        assert_eq!(local.share(1), (1, 1.0));
        let (ranks, share) = local.share(64);
        assert_eq!(ranks, local.node.devices);
        assert!(share < 1.0, "{share}");
    }

    #[test]
    fn ranks_on_one_node_share_its_link_and_others_cross_the_network() {
        let h100 = preset("h100_sxm.yaml");
        assert_eq!(h100.link_of(&[0, 7]).1, "node");
        assert_eq!(h100.link_of(&[7, 8]).1, "network");
        assert_eq!(h100.link_of(&[8, 9, 15]).1, "node");
    }

    #[test]
    fn a_bad_figure_is_named() {
        let mut cluster = preset("a100_80gb.yaml");
        cluster.efficiency.network = 1.5;
        assert!(cluster.check().unwrap_err().contains("efficiency.network"));
        cluster.efficiency.network = 0.8;
        cluster.network.bandwidth = 0.0;
        assert!(cluster.check().unwrap_err().contains("network.bandwidth"));
        let text = "name: x\ndevice: {}\n";
        let err = serde_yaml_ng::from_str::<Cluster>(text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing field"), "{err}");
    }
}
