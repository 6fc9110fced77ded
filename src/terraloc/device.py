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
    name = spec.strip().lower()
    if name == "cpu" or (name == "auto" and not here):
        return name
    if name not in ("auto", "cuda") and not (name.startswith("cuda:") and name[5:].isdigit()):
        raise InputError(f"unknown device '{spec}'; choose auto, cpu, cuda or cuda:N", field=field)
    if not here:
        return name
    import torch  # only now: a Ray driver never needs it (~190 MiB)

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise InputError(f"device '{spec}' is not available here: no GPU is visible (use cpu or auto)", field=field)
    idx = name.partition(":")[2]
    if idx and int(idx) >= torch.cuda.device_count():
        raise InputError(f"device '{spec}': this machine has {torch.cuda.device_count()} GPU(s)", field=field)
    return name
