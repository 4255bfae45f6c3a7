#!/usr/bin/env python3
"""Writes a .npy file without numpy: npy.py OUT DESCR SHAPE [VALUE ...]

DESCR is a numpy type string ('<f8', '<f4', '<i8', '|b1', ...), SHAPE is comma separated
('2,3', '' for a scalar, '0' for an empty vector), the values fill the array in C order.
Options before OUT: --fortran (fortran_order True), --version2 (format 2.0), --truncate N
(drop the last N data bytes), --magic BYTES (replace the magic string)."""
import struct
import sys

args = sys.argv[1:]
fortran = version2 = False
truncate = 0
magic = b"\x93NUMPY"
while args and args[0].startswith("--"):
    opt = args.pop(0)
    if opt == "--fortran":
        fortran = True
    elif opt == "--version2":
        version2 = True
    elif opt == "--truncate":
        truncate = int(args.pop(0))
    elif opt == "--magic":
        magic = args.pop(0).encode()
out, descr, shape_text, values = args[0], args[1], args[2], args[3:]
shape = tuple(int(s) for s in shape_text.split(",") if s)
shape_repr = f"({shape[0]},)" if len(shape) == 1 else "(" + ", ".join(str(s) for s in shape) + ")"
header = f"{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape_repr}, }}"
prefix = 12 if version2 else 10
pad = (64 - (prefix + len(header) + 1) % 64) % 64
header = header + " " * pad + "\n"
codes = {"f8": "d", "f4": "f", "i8": "q", "i4": "i", "b1": "?", "u1": "B"}
code = codes[descr[1:]]
endian = ">" if descr[0] == ">" else "<"
conv = float if code in "df" else (lambda v: v.lower() in ("1", "true")) if code == "?" else int
data = b"".join(struct.pack(endian + code, conv(v)) for v in values)
if truncate:
    data = data[:-truncate]
with open(out, "wb") as f:
    f.write(magic)
    f.write(bytes([2 if version2 else 1, 0]))
    f.write(struct.pack("<I" if version2 else "<H", len(header)))
    f.write(header.encode("latin1"))
    f.write(data)
