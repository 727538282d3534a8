"""Arrow text helpers shared by the parsers, the record store and its column snapshots."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc


def empty_as_null(values: pa.Array | pa.ChunkedArray) -> pa.ChunkedArray:
    """'' -> NULL: text past the parsers and the loaders carries no empty strings.

    A chunk with no '' is kept as it is; one without NULLs gets its "is not empty" booleans,
    bit-packed as Arrow keeps them, as its validity bitmap, the strings untouched (a million
    rows: 4x `if_else`, which copies them); any other goes through `if_else`."""
    chunked = values if isinstance(values, pa.ChunkedArray) else pa.chunked_array([values])
    return pa.chunked_array([_chunk_empty_as_null(c) for c in chunked.chunks], chunked.type)


def _chunk_empty_as_null(chunk: pa.Array) -> pa.Array:
    filled = pc.not_equal(chunk, "")
    if pc.all(filled).as_py() is not False:  # no '' (NULLs are skipped; an empty chunk: None)
        return chunk
    if chunk.null_count or chunk.offset or chunk.type != pa.string() or filled.offset or filled.null_count:
        return pc.if_else(filled, chunk, pa.scalar(None, chunk.type))
    return pa.Array.from_buffers(pa.string(), len(chunk), [filled.buffers()[1], *chunk.buffers()[1:]])
