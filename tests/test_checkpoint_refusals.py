"""Every global the safe checkpoint loader refuses gets one message naming it and the way out
(trust_checkpoint / --trust-checkpoint), whatever the pickle protocol and file format; nothing in
the file runs."""

from __future__ import annotations

import argparse
import os
import re

import pytest
import torch

from rtmo.checkpoint import CheckpointError, read_state_dict


class Payload:
    """Unpickling runs `command` through os.system."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class Plain:
    """A class of the test module: importing it is what the loader refuses."""


def payloads(marker):
    return {
        "os.system": (Payload(f"touch {marker}"), "posix.system"),
        "a class": (Plain(), f"{__name__}.Plain"),
        # Not print: ray.init (the distributed benchmark) rebinds builtins.print in its process.
        "a function": (len, "builtins.len"),
        "argparse.Namespace": (argparse.Namespace(a=1), "argparse.Namespace"),
    }


# (pickle protocol, legacy format): torch's legacy files start with a protocol header (2 and up).
FORMATS = [(0, False), (2, False), (4, False), (5, False), (2, True), (4, True), (5, True)]


@pytest.mark.parametrize(("protocol", "legacy"), FORMATS, ids=lambda v: str(v))
@pytest.mark.parametrize("kind", ["os.system", "a class", "a function", "argparse.Namespace"])
def test_refused_globals_are_named(tmp_path, kind, protocol, legacy):
    marker = tmp_path / "ran"
    obj, name = payloads(marker)[kind]
    path = tmp_path / "model.pth"
    torch.save(
        {"state_dict": {"w": torch.zeros(2)}, "extra": obj},
        path,
        pickle_protocol=protocol,
        _use_new_zipfile_serialization=not legacy,
    )
    with pytest.raises(CheckpointError) as refused:
        read_state_dict(path)
    message = str(refused.value)
    assert message.startswith(f"{path} contains pickled objects other than tensors and numpy")
    refused_names = re.search(r"\(refused: ([^)]*)\)", message).group(1).split(", ")
    assert name in refused_names
    assert "trust_checkpoint=True (--trust-checkpoint on the command line)" in message
    assert not marker.exists()


def test_trusted_file_loads(tmp_path):
    path = tmp_path / "model.pth"
    torch.save({"state_dict": {"w": torch.ones(2)}, "extra": argparse.Namespace(a=1)}, path)
    state = read_state_dict(path, trust_checkpoint=True)
    assert torch.equal(state["w"], torch.ones(2))
