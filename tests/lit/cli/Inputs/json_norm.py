#!/usr/bin/env python3
"""Reads stdin, which must be exactly one JSON object, and prints it canonically on one line
(keys sorted, ", " and ": " separators, integral floats as integers), so FileCheck lines do
not depend on the spacing, key order or number spelling slopec happens to use.
Exits 1 if stdin is not a single JSON object."""
import json
import sys


def canon(v):
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
        return int(v)
    if isinstance(v, list):
        return [canon(x) for x in v]
    if isinstance(v, dict):
        return {k: canon(x) for k, x in v.items()}
    return v


text = sys.stdin.read()
try:
    obj = json.loads(text)
except ValueError as e:
    sys.exit(f"json_norm: stdout is not one JSON value: {e}\n{text}")
if not isinstance(obj, dict):
    sys.exit(f"json_norm: stdout is not a JSON object:\n{text}")
print(json.dumps(canon(obj), sort_keys=True))
