"""Writes data files as the Python tools people use write them, for the Rust
tests to read: pandas and pyarrow write Parquet, Hugging Face `datasets`
writes `save_to_disk` folders, Pillow writes image folders.

    data_files.py digits CSV_GZ OUT   the digits CSV as every columnar source
    data_files.py hostile OUT         files each broken in one way
    data_files.py images OUT          image folders, good and broken

Run by tests/training.rs and tests/bad_data.rs with the project's .venv.
"""

import gzip
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def digits(csv_gz, out):
    with gzip.open(csv_gz, "rt") as f:
        rows = np.loadtxt(f, delimiter=",")
    x, y = rows[:, :-1].astype(np.float32), rows[:, -1].astype(np.int64)
    # One list column per sample (pandas, default snappy).
    pd.DataFrame({"x": list(x), "y": y}).to_parquet(out / "digits.parquet")
    # 64 named columns of small integers in three shards, three codecs.
    shards = out / "shards"
    shards.mkdir()
    names = [f"p{i}" for i in range(64)]
    for k, (part, codec) in enumerate(zip(np.array_split(np.arange(len(y)), 3),
                                          ["zstd", "gzip", "lz4"])):
        table = pa.table({"digit": pa.array(y[part], pa.int32()),
                          **{n: pa.array(x[part, i].astype(np.uint8))
                             for i, n in enumerate(names)}})
        pq.write_table(table, shards / f"part-{k:05d}.parquet", compression=codec,
                       row_group_size=500)
    import datasets
    features = datasets.Features({
        "pixels": datasets.Sequence(datasets.Value("float32")),
        "label": datasets.ClassLabel(num_classes=10),
    })
    ds = datasets.Dataset.from_dict({"pixels": x, "label": y}, features=features)
    ds.save_to_disk(str(out / "hf_one"), num_shards=2)
    datasets.DatasetDict({"train": ds, "test": ds.select(range(10))}).save_to_disk(
        str(out / "hf_dict"))


def hostile(out):
    good = {"x": [[1.0, 2.0, 3.0, 4.0]] * 3, "y": [0, 1, 2]}

    def parquet(name, table):
        pq.write_table(pa.table(table), out / name)

    parquet("text_feature.parquet", {"x": ["ghp_secret"] * 3, "y": [0, 1, 2]})
    parquet("null_label.parquet", {"x": good["x"], "y": pa.array([0, None, 2], pa.int64())})
    parquet("ragged.parquet", {"x": [[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0], [1.0] * 4],
                               "y": [0, 1, 2]})
    parquet("float_label.parquet", {"x": good["x"], "y": [0.0, 1.5, 2.0]})
    parquet("no_label.parquet", {"x": good["x"], "z": [0, 1, 2]})
    parquet("good.parquet", good)
    data = (out / "good.parquet").read_bytes()
    (out / "cut.parquet").write_bytes(data[: len(data) // 2])
    (out / "not.parquet").write_bytes(b"x,y\n1,2\n")
    (out / "empty_folder").mkdir()
    (out / "mixed").mkdir()
    pq.write_table(pa.table(good), out / "mixed" / "a.parquet")
    pq.write_table(pa.table({"x": ["t"] * 3, "y": [0, 1, 2]}), out / "mixed" / "b.parquet")
    import datasets
    ds = datasets.Dataset.from_dict(good)
    datasets.DatasetDict({"train": ds}).save_to_disk(str(out / "hf_dict"))
    ds.save_to_disk(str(out / "hf_escape"))
    state = (out / "hf_escape" / "state.json").read_text()
    (out / "hf_escape" / "state.json").write_text(
        state.replace("data-00000-of-00001.arrow", "../../etc/passwd"))
    ds.save_to_disk(str(out / "hf_cut"))
    arrow = out / "hf_cut" / "data-00000-of-00001.arrow"
    arrow.write_bytes(arrow.read_bytes()[:200])


def images(out):
    """Folders of 4×4 greyscale PNGs in classes `a` and `b`: `good`, and
    each of the others broken in one way."""
    from PIL import Image

    def folder(name, sizes=((4, 4),) * 3, classes=("a", "b")):
        for c in classes:
            (out / name / c).mkdir(parents=True)
            for i, (h, w) in enumerate(sizes):
                pixels = np.full((h, w), (40 * i + (100 if c == "b" else 0)) % 256, np.uint8)
                Image.fromarray(pixels, "L").save(out / name / c / f"{i}.png")
        return out / name

    folder("good")
    folder("other_classes", classes=("a", "c"))
    folder("wrong_size", sizes=((3, 5), (4, 4)))
    later = folder("later_wrong_size", sizes=((4, 4),) * 40)
    Image.fromarray(np.zeros((4, 6), np.uint8), "L").save(later / "b" / "33.png")
    cut = folder("cut")
    data = (cut / "a" / "0.png").read_bytes()
    (cut / "a" / "0.png").write_bytes(data[: len(data) // 2])
    text = folder("text")
    (text / "a" / "0.png").write_text("ghp_secret, not an image\n")
    (out / "no_classes").mkdir()
    (out / "no_classes" / "0.png").write_bytes((out / "good" / "a" / "0.png").read_bytes())
    empty = folder("empty_class")
    (empty / "c").mkdir()
    (empty / "c" / "notes.txt").write_text("no image here\n")


if __name__ == "__main__":
    if sys.argv[1] == "digits":
        digits(Path(sys.argv[2]), Path(sys.argv[3]))
    elif sys.argv[1] == "images":
        images(Path(sys.argv[2]))
    else:
        hostile(Path(sys.argv[2]))
