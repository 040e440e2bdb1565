"""Format constants of the store's files: magics, versions, struct layouts, offsets, record types, name patterns.

Constants only, like LevelDB's ``log_format.h``. The grammar, the offset tables and a worked example are in
``docs/concepts/storage-format.md``; the code that reads and writes these bytes is in ``storage/log.py``,
``storage/records.py``, ``storage/snapshot.py``, ``storage/manifest.py`` and ``storage/layout.py``. Every offset
the code uses is named here, so that no magic number hides inside a slice.

All integers are little-endian.
"""

import struct

# The format version of log segments and manifests. A file with a higher version raises UnsupportedFormatError
# and is never modified; version 0 is invalid.
FORMAT_VERSION = 1
# Snapshots have their own version. Version 2 (block checksums instead of one SHA-256, packed ids and metadata,
# saved metadata columns, graphs that may hold part of the table) is written; version 1 is still read.
SNAPSHOT_FORMAT_VERSION = 2

# --- log segments: log-00000001.vsl -------------------------------------------------------------------------------
LOG_MAGIC = b"VSREFLOG"
# header := magic (8) | u32 format version | u32 CRC32 of the first 12 bytes
LOG_HEADER = struct.Struct("<8sII")
LOG_HEADER_SIZE = LOG_HEADER.size  # 16 bytes
LOG_HEADER_MAGIC_OFFSET = 0
LOG_HEADER_VERSION_OFFSET = 8
LOG_HEADER_CRC_OFFSET = 12
LOG_HEADER_CRC_COVERS = 12  # the CRC covers bytes [0, 12): magic and version

# record := u32 payload length | u32 CRC32 | u8 type | u64 seq | payload
RECORD_HEADER = struct.Struct("<IIBQ")
RECORD_HEADER_SIZE = RECORD_HEADER.size  # 17 bytes (packed, no padding)
RECORD_LEN_OFFSET = 0
RECORD_CRC_OFFSET = 4
RECORD_TYPE_OFFSET = 8
RECORD_SEQ_OFFSET = 9
RECORD_PAYLOAD_OFFSET = 17
# The CRC (zlib.crc32) covers type byte + seq + payload: bytes [RECORD_CRC_START, 17 + length) of the record.
RECORD_CRC_START = RECORD_TYPE_OFFSET
MAX_RECORD_BYTES = 1 << 30  # 1 GiB: a longer length field is corruption, never an allocation

RECORD_BATCH = 1  # the effects of one API call or one batch (storage/records.py)
RECORD_TYPES = frozenset({RECORD_BATCH})

# --- batch payload (storage/records.py) ---------------------------------------------------------------------------
# u32 JSON length | u32 number of vectors | u32 dim (0 = none) | JSON (UTF-8) | n * dim float32 little-endian
BATCH_PAYLOAD_HEADER = struct.Struct("<III")
BATCH_JSON_LEN_OFFSET = 0
BATCH_N_VECTORS_OFFSET = 4
BATCH_DIM_OFFSET = 8
BATCH_JSON_OFFSET = 12
BATCH_MAX_DIM = 65_536  # SPEC s.1: dim is 1 .. 65,536

# --- snapshots: snap-0000000000000042.vss --------------------------------------------------------------------------
SNAPSHOT_MAGIC = b"VSREFSNP"
# fixed header := magic (8) | u32 format version | u32 JSON header length; then the JSON header, zero padding to
# SNAPSHOT_ALIGN, the arrays (each starting at a multiple of SNAPSHOT_ALIGN), and the SHA-256 trailer.
SNAPSHOT_HEADER = struct.Struct("<8sII")
SNAPSHOT_HEADER_SIZE = SNAPSHOT_HEADER.size  # 16 bytes
SNAPSHOT_MAGIC_OFFSET = 0
SNAPSHOT_VERSION_OFFSET = 8
SNAPSHOT_JSON_LEN_OFFSET = 12
SNAPSHOT_JSON_OFFSET = 16
SNAPSHOT_ALIGN = 64  # bytes: array data starts on a cache-line boundary (relative to the data block)
# Version 2: the body (fixed header, JSON, padding, arrays) is followed by a table of u32 CRC32s, one per block of
# SNAPSHOT_BLOCK_BYTES of the body (the last one shorter), then the trailer.
SNAPSHOT_BLOCK_BYTES = 4 * 2**20  # 4 MiB: blocks are verified in parallel, as they are read
# trailer := u64 body length | u32 block size | u32 CRC32 of the checksum table
SNAPSHOT_TRAILER = struct.Struct("<QII")
SNAPSHOT_TRAILER_SIZE = SNAPSHOT_TRAILER.size  # 16 bytes
SNAPSHOT_MIN_SIZE = SNAPSHOT_HEADER_SIZE + SNAPSHOT_TRAILER_SIZE
SNAPSHOT_V1_TRAILER_SIZE = 32  # version 1: a SHA-256 of every byte before it
SNAPSHOT_MAX_HEADER_BYTES = 64 * 2**20  # 64 MiB of JSON header at most
# Plain numeric dtypes only: no object arrays, no structured dtypes, nothing that could need pickle.
SNAPSHOT_DTYPES = ("uint8", "int8", "int32", "int64", "float32", "float64", "bool")

# --- manifest ------------------------------------------------------------------------------------------------------
# line 1: "VSREF-MANIFEST <version>"; line 2: compact JSON; line 3: CRC32 of line 2 (UTF-8) as 8 lower-case hex digits
MANIFEST_MAGIC = "VSREF-MANIFEST"
MANIFEST_MAX_BYTES = 16 * 2**20  # 16 MiB: a manifest is a few hundred bytes; anything huge is not ours

# --- names in a store directory (storage/layout.py) -------------------------------------------------------------
MANIFEST_NAME = "MANIFEST"
SHARDS_FILE = "SHARDS.json"  # the file that makes a directory a ShardedStore (vecstore_ref.scale.routing)
NAMESPACE_FILE = "NAMESPACE.json"  # the file that makes a directory a namespace (vecstore_ref.namespaces)
BACKUP_FILE = "BACKUP.json"  # the manifest that makes a directory a namespace backup (written last)
LOCK_NAME = "LOCK"
SEGMENT_PREFIX, SEGMENT_SUFFIX = "log-", ".vsl"
SEGMENT_DIGITS = 8  # log-00000001.vsl
SNAPSHOT_PREFIX, SNAPSHOT_SUFFIX = "snap-", ".vss"
SNAPSHOT_DIGITS = 16  # snap-0000000000000042.vss
TMP_SUFFIX = ".tmp"  # write_atomic's temp file: <final name>.tmp, in the same directory
SEGMENT_NAME_PATTERN = r"log-([0-9]{8})\.vsl"  # ASCII digits only: \d would also match "０"
SNAPSHOT_NAME_PATTERN = r"snap-([0-9]{16})\.vss"
