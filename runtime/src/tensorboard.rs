//! TensorBoard event files: rank 0 writes `events.out.tfevents.*` beside
//! `metrics.jsonl`, which `tensorboard --logdir runs/` reads as it grows.
//!
//! The file is TFRecord framing (a little-endian u64 length, its masked
//! CRC-32C, the bytes, their masked CRC-32C) around `tensorflow.Event`
//! protobuf messages, declared here with prost's derive: the fields of
//! tensorflow/core/util/event.proto and framework/summary.proto that a
//! scalar and a text summary use, with their tag numbers. Scalars are
//! `simple_value`s; texts are string tensors for the `text` plugin.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use prost::Message;

use crate::error::RunError;
use crate::output::io_err;

#[derive(Clone, PartialEq, Message)]
struct Event {
    #[prost(double, tag = "1")]
    wall_time: f64,
    #[prost(int64, tag = "2")]
    step: i64,
    #[prost(oneof = "What", tags = "3, 5")]
    what: Option<What>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum What {
    #[prost(string, tag = "3")]
    FileVersion(String),
    #[prost(message, tag = "5")]
    Summary(Summary),
}

#[derive(Clone, PartialEq, Message)]
struct Summary {
    #[prost(message, repeated, tag = "1")]
    value: Vec<Value>,
}

#[derive(Clone, PartialEq, Message)]
struct Value {
    #[prost(string, tag = "1")]
    tag: String,
    #[prost(message, optional, tag = "9")]
    metadata: Option<SummaryMetadata>,
    #[prost(oneof = "Kind", tags = "2, 8")]
    kind: Option<Kind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum Kind {
    #[prost(float, tag = "2")]
    SimpleValue(f32),
    #[prost(message, tag = "8")]
    Tensor(TensorProto),
}

#[derive(Clone, PartialEq, Message)]
struct SummaryMetadata {
    #[prost(message, optional, tag = "1")]
    plugin_data: Option<PluginData>,
}

#[derive(Clone, PartialEq, Message)]
struct PluginData {
    #[prost(string, tag = "1")]
    plugin_name: String,
    #[prost(bytes = "vec", tag = "2")]
    content: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
struct TensorProto {
    /// `DataType`: 7 is `DT_STRING`.
    #[prost(int32, tag = "1")]
    dtype: i32,
    #[prost(message, optional, tag = "2")]
    tensor_shape: Option<TensorShapeProto>,
    #[prost(bytes = "vec", repeated, tag = "8")]
    string_val: Vec<Vec<u8>>,
}

/// A shape without dimensions: a scalar.
#[derive(Clone, PartialEq, Message)]
struct TensorShapeProto {}

const DT_STRING: i32 = 7;
/// Written out at least this often, so that TensorBoard sees a run live.
const FLUSH_EVERY: f64 = 2.0;

static CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// TFRecord's masked CRC-32C.
fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = CRC.checksum(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// An open event file.
pub struct EventWriter {
    path: PathBuf,
    file: BufWriter<File>,
    flushed: Instant,
}

impl EventWriter {
    /// A new event file in `dir`, named as TensorFlow names them
    /// (`events.out.tfevents.<seconds>.<host>.<pid>.0`): a resumed run adds
    /// a file, and TensorBoard drops the old file's points from the step it
    /// resumed at.
    pub fn create(dir: &Path) -> Result<EventWriter, RunError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let host = crate::run_folder::hostname();
        let name = format!("events.out.tfevents.{now}.{host}.{}.0", std::process::id());
        let path = dir.join(name);
        let file = File::create(&path).map_err(|e| io_err(&path, e))?;
        let mut writer = EventWriter {
            path,
            file: BufWriter::new(file),
            flushed: Instant::now(),
        };
        writer.event(0, What::FileVersion("brain.Event:2".into()))?;
        writer.flush()?;
        Ok(writer)
    }

    /// Scalars of one step, by tag.
    pub fn scalars(&mut self, step: u64, values: &[(&str, f64)]) -> Result<(), RunError> {
        let value = values
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(tag, v)| Value {
                tag: (*tag).to_string(),
                metadata: None,
                kind: Some(Kind::SimpleValue(*v as f32)),
            })
            .collect();
        self.event(step, What::Summary(Summary { value }))
    }

    /// A text (markdown) summary, shown by TensorBoard's text tab.
    pub fn text(&mut self, step: u64, tag: &str, markdown: &str) -> Result<(), RunError> {
        let value = Value {
            tag: tag.to_string(),
            metadata: Some(SummaryMetadata {
                plugin_data: Some(PluginData {
                    plugin_name: "text".into(),
                    content: Vec::new(),
                }),
            }),
            kind: Some(Kind::Tensor(TensorProto {
                dtype: DT_STRING,
                tensor_shape: Some(TensorShapeProto {}),
                string_val: vec![markdown.as_bytes().to_vec()],
            })),
        };
        self.event(step, What::Summary(Summary { value: vec![value] }))
    }

    fn event(&mut self, step: u64, what: What) -> Result<(), RunError> {
        let wall_time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let data = Event {
            wall_time,
            step: step as i64,
            what: Some(what),
        }
        .encode_to_vec();
        let length = (data.len() as u64).to_le_bytes();
        let mut record = Vec::with_capacity(data.len() + 16);
        record.extend_from_slice(&length);
        record.extend_from_slice(&masked_crc(&length).to_le_bytes());
        record.extend_from_slice(&data);
        record.extend_from_slice(&masked_crc(&data).to_le_bytes());
        self.file
            .write_all(&record)
            .map_err(|e| io_err(&self.path, e))?;
        if self.flushed.elapsed().as_secs_f64() >= FLUSH_EVERY {
            self.flush()?;
        }
        Ok(())
    }

    /// Everything written so far, to the file.
    pub fn flush(&mut self) -> Result<(), RunError> {
        self.flushed = Instant::now();
        self.file.flush().map_err(|e| io_err(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_crc_is_tensorflows() {
        // CRC-32C of "123456789" is 0xE3069283 (the standard check value);
        // masked: rotate right by 15, plus 0xa282ead8.
        assert_eq!(CRC.checksum(b"123456789"), 0xE306_9283);
        let masked = 0xE306_9283u32.rotate_right(15).wrapping_add(0xa282_ead8);
        assert_eq!(masked_crc(b"123456789"), masked);
    }
}
