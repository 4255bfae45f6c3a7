#!/usr/bin/env python3
"""bignpy.py OUT: writes an f64 vector of ones whose length n makes n * n * 8 bytes just more
than this machine's physical memory (for the test that a buffer of n x n fails up front)."""
import math
import os
import struct
import sys

n = math.isqrt(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 8) + 2
header = "{'descr': '<f8', 'fortran_order': False, 'shape': (%d,), }" % n
header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
with open(sys.argv[1], "wb") as f:
    f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
    f.write(struct.pack("<%dd" % n, *([1.0] * n)))
