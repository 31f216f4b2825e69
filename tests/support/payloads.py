"""Hypothesis strategies for command payloads that must all be rejected: invalid JSON, wrong types,
unknown commands, huge payloads, path traversal in model names, missing or malformed ids."""

from __future__ import annotations

import json
from typing import Any, Dict

from hypothesis import strategies as st

from agent.mqtt.schema import COMMANDS

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8)
_IDS = st.builds(lambda first, rest: first + rest, st.sampled_from("abcXYZ019"), st.text("abcXYZ019_.:-", max_size=23))
_TRAVERSALS = st.sampled_from(["../x", "../../etc/passwd", "/etc/passwd", "a/../../b", "..", ".hidden",
                               "a/.ssh/id_rsa", "a\\..\\b", "a\0b", "C:\\x", "a/b/c/d/e", "", " ", "m" * 65])
_NOT_TEXT = [2.5, True, None, [], -1, 10 ** 12]
_WRONG = st.sampled_from(["2", "x" * 300, *_NOT_TEXT])  # not {}: an empty `options` or `shape` is valid


def _dump(document: Any) -> bytes:
    return json.dumps(document).encode("utf-8")


def _with_id(document: Dict[str, Any], command_id: str) -> bytes:
    return _dump(dict(document, id=command_id))


invalid_json = st.binary(max_size=120).filter(lambda raw: not raw.lstrip().startswith(b"{")) | st.sampled_from(
    [b"{", b'{"id": "a", "cmd": "ping",}', b'{"id": NaN}', b'{"id": "a", "id": "b", "cmd": "ping"}',
     b"\xff\xfe{}", b"[" * 2000 + b"]" * 2000])
not_objects = (st.lists(_JSON, max_size=3) | st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
               | st.text(max_size=12)).map(_dump)
missing_ids = st.builds(lambda cmd: _dump({"cmd": cmd}), st.sampled_from(sorted(COMMANDS)))
bad_ids = st.builds(lambda bad, cmd: _dump({"id": bad, "cmd": cmd}),
                    st.sampled_from(["", " ", "-x", "a/b", "a+b", "x" * 200, "é", *_NOT_TEXT]),
                    st.sampled_from(sorted(COMMANDS)))
unknown_commands = st.builds(lambda i, cmd: _with_id({"cmd": cmd}, i), _IDS,
                             st.text(max_size=12).filter(lambda cmd: cmd not in COMMANDS))
traversals = st.builds(lambda i, cmd, name: _with_id({"cmd": cmd, "args": {"model": name}}, i), _IDS,
                       st.sampled_from(["bench", "eval", "profile", "select"]), _TRAVERSALS)
wrong_types = st.builds(lambda i, name, value: _with_id({"cmd": "bench", "args": {"model": "digits", name: value}}, i),
                        _IDS, st.sampled_from(["threads", "iterations", "batch", "options", "shape", "seed",
                                               "precision", "backend"]), _WRONG)
unknown_arguments = st.builds(lambda i, name: _with_id({"cmd": "ping", "args": {name: 1}}, i), _IDS,
                              st.text(min_size=1, max_size=10))
huge = st.builds(lambda i, size: _with_id({"cmd": "ping", "pad": "a" * size}, i), _IDS,
                 st.integers(min_value=64 * 1024, max_value=80 * 1024))
extra_fields = st.builds(lambda i, key: _with_id({"cmd": "ping", key: 1}, i), _IDS,
                         st.text(min_size=1, max_size=8).filter(lambda key: key not in ("id", "cmd", "args", "schema")))

# Every payload here is wrong in at least one way; ids repeat often (an id seen before is answered
# from the store with its first rejection).
invalid_payloads = st.one_of(invalid_json, not_objects, missing_ids, bad_ids, unknown_commands, traversals,
                             wrong_types, unknown_arguments, huge, extra_fields)
