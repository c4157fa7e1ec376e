"""Pieces shared by the test datasets written in Python in the layout `pixelmill download`
writes (DESIGN §1): tar members, the sidecar Parquet column types and the dataset.json
index. Used by pack_fixture, dedupe_fixture and tuning_fixture."""
import io
import tarfile

import pyarrow as pa

# Types of the sidecar columns the download stage writes; other columns are inferred.
SIDECAR_TYPES = {
    "key": pa.string(), "url": pa.string(), "caption": pa.string(), "status": pa.string(),
    "error_message": pa.string(), "width": pa.int32(), "height": pa.int32(),
    "original_width": pa.int32(), "original_height": pa.int32(),
    "content_hash": pa.string(), "phash": pa.int64(),
}


def add_member(tar, name, data):
    """Add a regular file `name` holding bytes `data` to an open tarfile (mtime 0, 0644)."""
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    ti.mode = 0o644
    ti.mtime = 0
    tar.addfile(ti, io.BytesIO(data))


def sidecar_table(cols):
    """A pyarrow table of the lists in `cols` (in its order), typed as SIDECAR_TYPES says."""
    return pa.table({k: pa.array(v, SIDECAR_TYPES.get(k)) for k, v in cols.items()})


def dataset_index(name, shardlist, counts):
    """The dataset.json object of a downloaded dataset (wids index with xxh3-128)."""
    return {"wids_version": 1, "name": name, "stage": "download",
            "tool_version": "fixture", "checksum_algorithm": "xxh3_128",
            "shardlist": shardlist, "counts": counts, "config": {}}
