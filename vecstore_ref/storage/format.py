"""Format constants of the store's files: magics, versions, struct layouts, record types, name patterns.

Constants only, like LevelDB's ``log_format.h``; the grammar, offset tables and a worked example are in
``docs/concepts/storage-format.md``.
"""

import struct

FORMAT_VERSION = 1

# --- log segments: log-00000001.vsl -------------------------------------------------------------------------------
LOG_MAGIC = b"VSREFLOG"
# header: magic (8) | u32 format version | u32 CRC32 of the first 12 bytes
LOG_HEADER = struct.Struct("<8sII")
LOG_HEADER_SIZE = LOG_HEADER.size  # 16 bytes
# record: u32 payload length | u32 CRC32(type byte + seq + payload) | u8 type | u64 seq | payload
RECORD_HEADER = struct.Struct("<IIBQ")
RECORD_HEADER_SIZE = RECORD_HEADER.size  # 17 bytes
RECORD_LEN_OFFSET = 0
RECORD_CRC_OFFSET = 4
RECORD_TYPE_OFFSET = 8
RECORD_SEQ_OFFSET = 9
MAX_RECORD_BYTES = 1 << 30  # 1 GiB: lengths above this are corruption, never an allocation

RECORD_BATCH = 1  # the effects of one API call or one batch (storage/records.py)
RECORD_TYPES = (RECORD_BATCH,)

# --- batch payload (storage/records.py) ---------------------------------------------------------------------------
# u32 JSON length | u32 number of vectors | u32 dim (0 = none) | JSON (UTF-8) | n * dim float32 little-endian
BATCH_PAYLOAD_HEADER = struct.Struct("<III")

# --- snapshots: snap-0000000000000042.vss --------------------------------------------------------------------------
SNAPSHOT_MAGIC = b"VSREFSNP"
# header: magic (8) | u32 format version | u32 JSON header length | JSON | zero padding to 64 | arrays | SHA-256 (32)
SNAPSHOT_HEADER = struct.Struct("<8sII")
SNAPSHOT_ALIGN = 64
SNAPSHOT_TRAILER_SIZE = 32
SNAPSHOT_MAX_HEADER_BYTES = 64 * 2**20  # 64 MiB of JSON header at most
SNAPSHOT_DTYPES = ("uint8", "int8", "int32", "int64", "float32", "float64", "bool", "uint16", "uint32")

# --- manifest ------------------------------------------------------------------------------------------------------
MANIFEST_NAME = "MANIFEST"
MANIFEST_MAGIC = "VSREF-MANIFEST"
LOCK_NAME = "LOCK"
SEGMENT_PREFIX, SEGMENT_SUFFIX = "log-", ".vsl"
SNAPSHOT_PREFIX, SNAPSHOT_SUFFIX = "snap-", ".vss"
TMP_SUFFIX = ".tmp"
