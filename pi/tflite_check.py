"""Check a .tflite file's structure before a TFLite runtime sees it: pure Python, no dependency.

A TFLite runtime (tflite-runtime, ai-edge-litert) maps the file and follows the flatbuffer's offsets
without checking them, so a truncated or damaged file (an export cut short, an interrupted copy) ends
the process with SIGSEGV or SIGBUS and no message. `check_tflite(data)` follows every offset of the
schema (TFLite schema v3, tensorflow/compiler/mlir/lite/schema/schema.fbs) the way flatbuffers' own
Verifier does, and raises `TFLiteFileError` (a ValueError, one line saying where) instead:

- the root table offset, every table's vtable (inside the file, even size, 2-aligned) and inline
  fields (inside the table, aligned), every string (inside the file, NUL-terminated) and vector
  (its length prefix and elements inside the file), to any depth of the schema;
- every buffer: its `data` vector, and the `offset`/`size` fields of files that keep large buffers
  after the flatbuffer (models over 2 GB): offset + size must lie inside the file; likewise an
  operator's `large_custom_options_offset/size`;
- indices: a tensor's buffer, an operator's opcode and tensors (-1: an omitted optional input), a
  subgraph's inputs and outputs, metadata buffers, a signature's subgraph and tensors;
- tensor names are UTF-8 (the runtime's Python wrapper decodes them).

Union tables (builtin options) whose schema holds vectors or strings are checked field by field;
the others (scalars only) as tables: vtable and fields inside the file. Not checked: the values of
scalars (a stride, a type code), tensor data against its shape (the runtime refuses a mismatch
itself). So a file that passes can still be refused by the runtime, with an error, not a crash.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

MAX_TABLES = 1_000_000  # as flatbuffers' Verifier: a bound on the work a hostile file can cause

# One entry per vtable slot, in schema order: "name:kind". Kinds: a scalar (u8 i8 bool u16 i32 u32 f32 u64 i64),
# "str", a table name, "[kind]" a vector of it, "Union?" a union whose type is the previous slot, "-" a slot
# not checked beyond lying inside the table (a deprecated field, or a scalar of an option table).
TABLES = {
    "Model": (
        "version:u32",
        "operator_codes:[OperatorCode]",
        "subgraphs:[SubGraph]",
        "description:str",
        "buffers:[Buffer]",
        "metadata_buffer:[i32]",
        "metadata:[Metadata]",
        "signature_defs:[SignatureDef]",
        "external_buffer_groups:[ExternalBufferGroup]",
        "external_buffers:[ExternalBuffer]",
    ),
    "OperatorCode": ("deprecated_builtin_code:i8", "custom_code:str", "version:i32", "builtin_code:i32"),
    "SubGraph": ("tensors:[Tensor]", "inputs:[i32]", "outputs:[i32]", "operators:[Operator]", "name:str", "debug_metadata_index:i32"),
    "Tensor": (
        "shape:[i32]",
        "type:i8",
        "buffer:u32",
        "name:str",
        "quantization:QuantizationParameters",
        "is_variable:bool",
        "sparsity:SparsityParameters",
        "shape_signature:[i32]",
        "has_rank:bool",
        "variant_tensors:[VariantSubType]",
        "external_buffer:u32",
    ),
    "QuantizationParameters": (
        "min:[f32]",
        "max:[f32]",
        "scale:[f32]",
        "zero_point:[i64]",
        "details_type:u8",
        "details:QuantizationDetails?",
        "quantized_dimension:i32",
    ),
    "CustomQuantization": ("custom:[u8]",),
    "SparsityParameters": ("traversal_order:[i32]", "block_map:[i32]", "dim_metadata:[DimensionMetadata]"),
    "DimensionMetadata": (
        "format:i8",
        "dense_size:i32",
        "array_segments_type:u8",
        "array_segments:SparseIndexVector?",
        "array_indices_type:u8",
        "array_indices:SparseIndexVector?",
    ),
    "Int32Vector": ("values:[i32]",),
    "Uint16Vector": ("values:[u16]",),
    "Uint8Vector": ("values:[u8]",),
    "VariantSubType": ("shape:[i32]", "type:i8", "has_rank:bool"),
    "Operator": (
        "opcode_index:u32",
        "inputs:[i32]",
        "outputs:[i32]",
        "builtin_options_type:u8",
        "builtin_options:BuiltinOptions?",
        "custom_options:[u8]",
        "custom_options_format:i8",
        "mutating_variable_inputs:[bool]",
        "intermediates:[i32]",
        "large_custom_options_offset:u64",
        "large_custom_options_size:u64",
        "builtin_options_2_type:u8",
        "builtin_options_2:BuiltinOptions2?",
        "debug_metadata_index:i32",
    ),
    "Buffer": ("data:[u8]", "offset:u64", "size:u64"),
    "Metadata": ("name:str", "buffer:u32"),
    "TensorMap": ("name:str", "tensor_index:u32"),
    "SignatureDef": ("inputs:[TensorMap]", "outputs:[TensorMap]", "signature_key:str", "deprecated_tag:-", "subgraph_index:u32"),
    "ExternalBufferGroup": ("name:str",),
    "ExternalBuffer": ("id:u32", "group:u32", "offset:u64", "length:u64", "packing:str"),
    # the option tables (union members) that hold vectors or strings
    "ConcatEmbeddingsOptions": ("num_channels:i32", "num_columns_per_channel:[i32]", "embedding_dim_per_channel:[i32]"),
    "ReshapeOptions": ("new_shape:[i32]",),
    "SqueezeOptions": ("squeeze_dims:[i32]",),
    "VarHandleOptions": ("container:str", "shared_name:str"),
    "BucketizeOptions": ("boundaries:[f32]",),
    "StablehloBroadcastInDimOptions": ("broadcast_dimensions:[i64]",),
    "StablehloSliceOptions": ("start_indices:[i64]", "limit_indices:[i64]", "strides:[i64]"),
    "StablehloConvolutionOptions": (
        "window_strides:[i64]",
        "padding:[i64]",
        "lhs_dilation:[i64]",
        "rhs_dilation:[i64]",
        "window_reversal:[bool]",
        "input_batch_dimension:-",
        "input_feature_dimension:-",
        "input_spatial_dimensions:[i64]",
        "kernel_input_feature_dimension:-",
        "kernel_output_feature_dimension:-",
        "kernel_spatial_dimensions:[i64]",
        "output_batch_dimension:-",
        "output_feature_dimension:-",
        "output_spatial_dimensions:[i64]",
        "feature_group_count:-",
        "batch_group_count:-",
        "precision_config:[u32]",
    ),
    "StablehloCustomCallOptions": (
        "call_target_name:str",
        "has_side_effect:-",
        "backend_config:str",
        "api_version:-",
        "called_computations:[i32]",
        "custom_attributes:[u8]",
    ),
    "StablehloReduceOptions": ("dimensions:[i64]", "body_subgraph_index:-"),
    "StablehloScatterOptions": (
        "indices_are_sorted:-",
        "update_window_dims:[i64]",
        "inserted_window_dims:[i64]",
        "scatter_dims_to_operand_dims:[i64]",
        "index_vector_dim:-",
        "unique_indices:-",
        "update_computation_subgraph_index:-",
    ),
    "StablehloDynamicSliceOptions": ("slice_sizes:[i64]",),
    "StablehloPadOptions": ("edge_padding_low:[i64]", "edge_padding_high:[i64]", "interior_padding:[i64]"),
    "StablehloDotGeneralOptions": (
        "lhs_batching_dimensions:[i64]",
        "rhs_batching_dimensions:[i64]",
        "lhs_contracting_dimensions:[i64]",
        "rhs_contracting_dimensions:[i64]",
        "precision_config:[u32]",
    ),
    "StablehloReduceWindowOptions": (
        "window_dimensions:[i64]",
        "window_strides:[i64]",
        "base_dilations:[i64]",
        "window_dilations:[i64]",
        "padding:[i64]",
        "body_subgraph_index:-",
    ),
    "StablehloGatherOptions": (
        "offset_dims:[i64]",
        "collapsed_slice_dims:[i64]",
        "start_index_map:[i64]",
        "index_vector_dim:-",
        "slice_sizes:[i64]",
        "indices_are_sorted:-",
    ),
    "StablehloTransposeOptions": ("permutation:[i64]",),
    "StableHLOCompositeOptions": ("name:str", "decomposition_subgraph_index:-", "composite_attributes:[u8]", "-:-", "version:-"),
    "StablehloCaseOptions": ("branch_subgraph_indices:[i32]",),
}

# union type code -> member table; a code not listed is checked as a table of unknown fields (vtable and bounds only)
UNIONS = {
    "BuiltinOptions": {
        3: "ConcatEmbeddingsOptions",
        17: "ReshapeOptions",
        30: "SqueezeOptions",
        111: "VarHandleOptions",
        115: "BucketizeOptions",
    },
    "BuiltinOptions2": {
        2: "StablehloBroadcastInDimOptions",
        3: "StablehloSliceOptions",
        4: "StablehloConvolutionOptions",
        5: "StablehloCustomCallOptions",
        6: "StablehloReduceOptions",
        7: "StablehloScatterOptions",
        9: "StablehloDynamicSliceOptions",
        10: "StablehloPadOptions",
        12: "StablehloDotGeneralOptions",
        13: "StablehloReduceWindowOptions",
        16: "StablehloGatherOptions",
        17: "StablehloTransposeOptions",
        21: "StableHLOCompositeOptions",
        23: "StablehloCaseOptions",
    },
    "QuantizationDetails": {1: "CustomQuantization"},
    "SparseIndexVector": {1: "Int32Vector", 2: "Uint16Vector", 3: "Uint8Vector"},
}

SCALARS = {"u8": "B", "i8": "b", "bool": "B", "u16": "H", "i16": "h", "u32": "I", "i32": "i", "f32": "f", "u64": "Q", "i64": "q"}
SIZES = {k: struct.calcsize("<" + v) for k, v in SCALARS.items()}
READ_VALUES = ("i32",)  # vectors of these are read into lists (shapes, tensor indices); others stay Vector(pos, length)
FIELDS = {name: tuple(tuple(f.split(":")) for f in fields) for name, fields in TABLES.items()}


class TFLiteFileError(ValueError):
    """The file is not a well-formed TFLite flatbuffer; the message says where (not the file's name)."""


class Vector(NamedTuple):
    """A vector of scalars left in the file (e.g. a buffer's data): its first element's position, length, item size."""

    pos: int
    length: int
    itemsize: int


class _Checker:
    def __init__(self, data):
        self.data = data if isinstance(data, (bytes, bytearray)) else memoryview(data).cast("B")
        self.n = len(self.data)
        self.tables = 0

    def fail(self, where: str, what: str):
        raise TFLiteFileError(f"{where}: {what}")

    def span(self, pos: int, size: int, where: str, align: int = 1) -> None:
        """Bytes pos..pos+size must lie inside the file, pos aligned to `align`."""
        if pos < 0 or pos + size > self.n:
            self.fail(where, f"bytes {pos}..{pos + size} lie outside the file ({self.n} bytes)")
        if pos % align:
            self.fail(where, f"byte {pos} is not {align}-byte aligned")

    def scalar(self, kind: str, pos: int, where: str):
        self.span(pos, SIZES[kind], where, SIZES[kind])
        return struct.unpack_from("<" + SCALARS[kind], self.data, pos)[0]

    def uoffset(self, pos: int, where: str) -> int:
        """The position an unsigned 32-bit offset at pos points to."""
        return pos + self.scalar("u32", pos, where)

    def table(self, pos: int, kind: str | None, where: str) -> dict:
        """The table of schema `kind` (None: of unknown fields) at pos -> {field name: value}."""
        self.tables += 1
        if self.tables > MAX_TABLES:
            self.fail(where, f"more than {MAX_TABLES} tables")
        vt = pos - self.scalar("i32", pos, f"{where} (table)")
        vsize = self.scalar("u16", vt, f"{where} (vtable)")
        tsize = self.scalar("u16", vt + 2, f"{where} (vtable)")
        if vsize < 4 or vsize % 2:
            self.fail(where, f"vtable size {vsize} at byte {vt} is not an even number >= 4")
        self.span(vt, vsize, f"{where} (vtable)")
        if tsize < 4:
            self.fail(where, f"table size {tsize} at byte {pos} is < 4")
        self.span(pos, tsize, f"{where} (table)")
        fields = FIELDS[kind] if kind is not None else ()
        out = {}
        for slot in range((vsize - 4) // 2):
            off = struct.unpack_from("<H", self.data, vt + 4 + 2 * slot)[0]
            if off == 0:  # absent: the default
                continue
            name, ftype = fields[slot] if slot < len(fields) else (f"field{slot}", "-")
            here = f"{where}.{name}"
            size = SIZES.get(ftype, 1 if ftype == "-" else 4)  # "-": at least its first byte; offsets: 4
            if off < 4 or off + size > tsize:
                self.fail(here, f"field at offset {off} ({size} bytes) lies outside its table ({tsize} bytes)")
            fpos = pos + off
            if ftype in SCALARS:
                out[name] = self.scalar(ftype, fpos, here)
            elif ftype.endswith("?"):  # a union: its type code is the previous slot
                code = out.get(fields[slot - 1][0], 0)
                member = UNIONS[ftype[:-1]].get(code)
                out[name] = self.table(self.uoffset(fpos, here), member, f"{here}<{member or code}>")
            elif ftype != "-":
                out[name] = self.value(self.uoffset(fpos, here), ftype, here)
        return out

    def value(self, pos: int, ftype: str, where: str):
        """The string, vector or table of type `ftype` at pos."""
        if ftype == "str":
            length = self.scalar("u32", pos, f"{where} (string length)")
            self.span(pos + 4, length + 1, f"{where} (string of {length})")
            if self.data[pos + 4 + length] != 0:
                self.fail(where, f"the string at byte {pos} is not NUL-terminated")
            return bytes(self.data[pos + 4 : pos + 4 + length])
        if ftype.startswith("["):
            inner = ftype[1:-1]
            length = self.scalar("u32", pos, f"{where} (vector length)")
            size = SIZES.get(inner, 4)
            self.span(pos + 4, length * size, f"{where} (vector of {length})")
            if inner in READ_VALUES:
                return list(struct.unpack_from(f"<{length}{SCALARS[inner]}", self.data, pos + 4))
            if inner in SCALARS:
                return Vector(pos + 4, length, size)
            return [self.value(self.uoffset(pos + 4 + 4 * k, f"{where}[{k}]"), inner, f"{where}[{k}]") for k in range(length)]
        return self.table(pos, ftype, where)


def parse_tflite(data) -> dict:
    """The Model table of a .tflite file's bytes, every offset checked: {field: value}, nested (strings as bytes,
    int32 vectors as lists, other vectors as Vector(position, length)); TFLiteFileError if malformed."""
    c = _Checker(data)
    if c.n < 8:
        raise TFLiteFileError(f"the file is {c.n} bytes, shorter than a flatbuffer header (8)")
    if bytes(c.data[4:8]) != b"TFL3":
        raise TFLiteFileError("no TFL3 identifier at bytes 4..8")
    return c.table(c.uoffset(0, "root offset"), "Model", "model")


def _index(values, n: int, where: str, allow_omitted: bool = False) -> None:
    for k, v in enumerate(values):
        if not (0 <= v < n or (allow_omitted and v == -1)):
            raise TFLiteFileError(f"{where}[{k}] = {v} is not an index below {n}")


def _extent(offset: int, size: int, n: int, where: str) -> None:
    """Data kept after the flatbuffer (offset > 1; 0 and 1 mean none) must lie inside the file."""
    if offset > 1 and offset + size > n:
        raise TFLiteFileError(f"{where}: its data (offset {offset}, size {size}) lies outside the file ({n} bytes)")


def check_tflite(data) -> dict:
    """Check a .tflite file's bytes (see the module docstring); TFLiteFileError (one line) if the runtime could
    read outside the file or follow a bad index. Returns a summary: {"subgraphs", "tensors", "operators",
    "buffers", "inputs": [[shape of each input of subgraph 0]], "outputs": [...]}."""
    model = parse_tflite(data)
    n = len(data)
    buffers = model.get("buffers", [])
    subgraphs = model.get("subgraphs", [])
    n_codes = len(model.get("operator_codes", []))
    if not subgraphs:
        raise TFLiteFileError("model: no subgraphs")
    for i, b in enumerate(buffers):
        _extent(b.get("offset", 0), b.get("size", 0), n, f"model.buffers[{i}]")
    _index(model.get("metadata_buffer", []), len(buffers), "model.metadata_buffer")
    _index([m.get("buffer", 0) for m in model.get("metadata", [])], len(buffers), "model.metadata[].buffer")
    n_tensors, n_ops = 0, 0
    for g, sg in enumerate(subgraphs):
        where = f"model.subgraphs[{g}]"
        tensors = sg.get("tensors", [])
        _index([t.get("buffer", 0) for t in tensors], len(buffers), f"{where}.tensors[].buffer")
        for k, t in enumerate(tensors):  # the runtime's Python wrapper decodes them: a damaged one would raise there
            try:
                t.get("name", b"").decode("utf-8")
            except UnicodeDecodeError:
                raise TFLiteFileError(f"{where}.tensors[{k}].name is not UTF-8") from None
        _index(sg.get("inputs", []), len(tensors), f"{where}.inputs")
        _index(sg.get("outputs", []), len(tensors), f"{where}.outputs")
        for k, op in enumerate(sg.get("operators", [])):
            here = f"{where}.operators[{k}]"
            _index([op.get("opcode_index", 0)], n_codes, f"{here}.opcode_index")
            for key in ("inputs", "outputs", "intermediates"):
                _index(op.get(key, []), len(tensors), f"{here}.{key}", allow_omitted=True)
            _extent(op.get("large_custom_options_offset", 0), op.get("large_custom_options_size", 0), n, here)
        n_tensors += len(tensors)
        n_ops += len(sg.get("operators", []))
    for s, sig in enumerate(model.get("signature_defs", [])):
        g = sig.get("subgraph_index", 0)
        _index([g], len(subgraphs), f"model.signature_defs[{s}].subgraph_index")
        count = len(subgraphs[g].get("tensors", []))
        for key in ("inputs", "outputs"):
            _index([m.get("tensor_index", 0) for m in sig.get(key, [])], count, f"model.signature_defs[{s}].{key}[].tensor_index")
    main = subgraphs[0]
    tensors = main.get("tensors", [])
    return {
        "subgraphs": len(subgraphs),
        "tensors": n_tensors,
        "operators": n_ops,
        "buffers": len(buffers),
        "inputs": [tensors[i].get("shape", []) for i in main.get("inputs", [])],
        "outputs": [tensors[i].get("shape", []) for i in main.get("outputs", [])],
    }
