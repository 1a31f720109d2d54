#!/usr/bin/env python3
"""The tests' independent JSON Schema witness (Python's jsonschema, not trustform's
code): validate the JSON document on stdin against the schema file named in argv[1].
Prints one line per error (`message at /json/pointer`); exits 2 if the schema itself
is not a valid JSON Schema, 0 otherwise."""
import json
import sys

import jsonschema

with open(sys.argv[1]) as f:
    schema = json.load(f)
cls = jsonschema.validators.validator_for(schema)
try:
    cls.check_schema(schema)
except jsonschema.exceptions.SchemaError as e:
    print(f"not a valid JSON Schema: {e.message}")
    sys.exit(2)
doc = json.load(sys.stdin)
for e in sorted(cls(schema).iter_errors(doc), key=lambda e: list(e.absolute_path)):
    pointer = "".join(f"/{p}" for p in e.absolute_path)
    print(f"{e.message} at {pointer or '/'}")
