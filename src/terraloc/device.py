"""Torch devices by name: ``auto`` (a GPU when this process sees one), ``cpu``, ``cuda``, ``cuda:N``."""

from __future__ import annotations

from terraloc.errors import InputError


def resolve_device(spec: str = "auto", *, field: str = "device", here: bool = True) -> str:
    """The device ``spec`` names, checked: ``auto`` → ``cuda`` when a GPU is visible, else ``cpu``.

    ``here=False`` checks the name only (the device is another machine's: a Ray actor's); ``auto``
    then stays ``auto``.

    Raises:
        InputError: an unknown name, or a GPU asked for where none is visible (one line).
    """
    import torch

    name = spec.strip().lower()
    if name == "auto" and not here:
        return name
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return "cpu"
    if name == "cuda" or name.startswith("cuda:"):
        idx = name.partition(":")[2]
        if name != "cuda" and not idx.isdigit():
            raise InputError(f"unknown device '{spec}'; choose auto, cpu, cuda or cuda:N", field=field)
        if not here:
            return name
        if not torch.cuda.is_available():
            raise InputError(f"device '{spec}' is not available here: no GPU is visible (use cpu or auto)", field=field)
        if idx and int(idx) >= torch.cuda.device_count():
            raise InputError(f"device '{spec}': this machine has {torch.cuda.device_count()} GPU(s)", field=field)
        return name
    raise InputError(f"unknown device '{spec}'; choose auto, cpu, cuda or cuda:N", field=field)
