"""Minimal GGUF v3 reader for the oracle scripts (numpy only).

Reads metadata and F32 / F16 / I32 tensors. Quantized fixtures are first
converted to f32 with `ds4-synth --dequantize`, so the oracle sees exactly the
dequantized weights the engine uses.
"""
import struct

import numpy as np

_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_TYPES = {0: (np.float32, 1, 4), 1: (np.float16, 1, 2), 26: (np.int32, 1, 4)}


class GGUF:
    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            self.buf = f.read()
        self.pos = 0
        magic, version = struct.unpack_from("<II", self.buf, 0)
        if magic != 0x46554747 or version != 3:
            raise ValueError(f"{path}: not a GGUF v3 file")
        n_tensors, n_kv = struct.unpack_from("<QQ", self.buf, 8)
        self.pos = 24
        self.meta = {}
        for _ in range(n_kv):
            key = self._str()
            vtype = self._u32()
            self.meta[key] = self._value(vtype)
        self.tensors = {}
        infos = []
        for _ in range(n_tensors):
            name = self._str()
            nd = self._u32()
            dims = [self._u64() for _ in range(nd)]
            ttype = self._u32()
            off = self._u64()
            infos.append((name, dims, ttype, off))
        align = int(self.meta.get("general.alignment", 32))
        data_start = (self.pos + align - 1) // align * align
        for name, dims, ttype, off in infos:
            if ttype not in _TYPES:
                raise ValueError(f"{path}: tensor {name} has type {ttype}; dequantize the file first")
            dt, _, size = _TYPES[ttype]
            n = int(np.prod(dims))
            a = np.frombuffer(self.buf, dtype=dt, count=n, offset=data_start + off)
            # GGUF dims are fastest-first; the row-major shape is reversed
            self.tensors[name] = a.reshape(list(reversed(dims)))

    def _u32(self):
        v = struct.unpack_from("<I", self.buf, self.pos)[0]
        self.pos += 4
        return v

    def _u64(self):
        v = struct.unpack_from("<Q", self.buf, self.pos)[0]
        self.pos += 8
        return v

    def _str(self):
        n = self._u64()
        s = self.buf[self.pos:self.pos + n]
        self.pos += n
        return s.decode("utf-8", errors="surrogateescape")

    def _value(self, vtype):
        if vtype == 8:
            return self._str()
        if vtype == 9:
            et = self._u32()
            n = self._u64()
            return [self._value(et) for _ in range(n)]
        fmt = _SCALAR[vtype]
        v = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return v
