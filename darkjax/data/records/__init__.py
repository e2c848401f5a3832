"""Pre-decoded video datasets as TFRecord shards: write, read, verify. TensorFlow is never imported.

One module per job:
  framing       the TFRecord file format: CRCs, `TFRecordWriter`, `RecordReader` (resumable at a
                byte offset), `iter_tfrecord`, `scan_records`, `CorruptRecordError`
  example       one clip record as a tf.train.Example: `encode_example`, `decode_example`
  directory     a dataset directory: `DatasetWriter`, `write_dataset`, `load_manifest`,
                `split_files`, `DatasetDirError` (the manifest format is in its docstring)
  verification  `verify` and the `python -m darkjax.data.records verify DIR` command

Everything callers use is importable from here: `from darkjax.data import records;
records.write_dataset(...)`.
"""

from darkjax.data.records.directory import (EPOCH_EXAMPLES, MANIFEST, MANIFEST_VERSION,
                                            DatasetDirError, DatasetWriter, ForeignDirectoryError,
                                            MissingShardError, list_shard_copies, load_manifest,
                                            split_files, write_dataset)
from darkjax.data.records.example import (FEATURE_KEYS, RESERVED_STREAM_NAMES, decode_example,
                                          encode_example)
from darkjax.data.records.framing import (CorruptRecordError, RecordReader, TFRecordWriter,
                                          frame_record, iter_tfrecord, iter_tfrecord_with_offsets,
                                          masked_crc32c, scan_records)
from darkjax.data.records.verification import Problem, VerifyReport, main, verify

__all__ = [
    "EPOCH_EXAMPLES", "MANIFEST", "MANIFEST_VERSION", "FEATURE_KEYS", "RESERVED_STREAM_NAMES",
    "CorruptRecordError", "DatasetDirError", "DatasetWriter", "ForeignDirectoryError",
    "MissingShardError", "Problem", "RecordReader", "TFRecordWriter", "VerifyReport",
    "decode_example", "encode_example", "frame_record", "iter_tfrecord",
    "iter_tfrecord_with_offsets", "list_shard_copies", "load_manifest", "main", "masked_crc32c",
    "scan_records", "split_files", "verify", "write_dataset",
]
