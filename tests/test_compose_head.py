"""The head contract: Candidates, the registry (built-ins + entry points) and the one place for checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from terraloc.errors import InputError
from terraloc.models import head as head_mod
from terraloc.models.head import BaseHead, Candidates, available_heads, build_head, head_class, register_head


def test_candidates_shapes_padding_and_rows() -> None:
    c = Candidates.from_rows([[(48.8, 2.3, 0.7, {"gallery_row": 3})], [(1.0, 2.0, 0.5, {}), (3.0, 4.0, 0.25, {})]])
    assert c.coords.shape == (2, 2, 2) and c.probs.shape == (2, 2) and c.coords.dtype == np.float64
    assert c.count(0) == 1 and c.count(1) == 2
    assert np.isnan(c.coords[0, 1]).all() and c.probs[0, 1] == 0 and c.evidence[0][1] == {}
    assert c.rows(0) == [(48.8, 2.3, 0.7, {"gallery_row": 3})]
    both = Candidates.concat([c, Candidates.from_rows([[(5.0, 6.0, 1.0, {})]])])
    assert both.n == 3 and both.rows(2)[0][:2] == (5.0, 6.0)
    with pytest.raises(ValueError, match=r"\(N, k, 2\)"):
        Candidates(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="probs"):
        Candidates(np.zeros((2, 3, 2)), np.zeros((2, 2)))


def test_registry_knows_builtins_and_refuses_unknown() -> None:
    assert {"geoclip", "refdb", "geosurge", "geosurge+fusion"} <= set(available_heads())
    with pytest.raises(InputError, match=r"unknown head 'nope'; known: .*geoclip"):
        head_class("nope")


class _Cfg:
    def __init__(self, head: str, ten_crop: bool = False) -> None:
        self.head = head
        self.ten_crop = ten_crop
        self.head_options: dict[str, Any] = {"scale": 2.0}


class _Backbone:
    dim = 8
    model_id = "bb-a"
    weights_hash = "aaaa"


@register_head("test-constant")
class _ConstantHead(BaseHead):
    """A third-party-style head: always the same place (tests the contract, not a model)."""

    required_hash: ClassVar[str | None] = None

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self.input_dim = 8
        if self.required_hash:
            self.required_backbone = {"id": "bb-b", "hash": self.required_hash, "dim": 8}

    @classmethod
    def from_config(cls, config: Any, backbone: Any) -> _ConstantHead:
        return cls(float(config.head_options["scale"]))

    def predict(self, x: Any, top_k: int) -> Candidates:
        n = int(x.shape[0])
        return Candidates(np.tile([[[10.0, 20.0]]], (n, 1, 1)), np.ones((n, 1)), [[{"why": "constant"}]] * n)


def test_build_head_checks_in_one_place(monkeypatch: pytest.MonkeyPatch) -> None:
    head = build_head(_Cfg("test-constant"), _Backbone())
    assert head.scale == 2.0 and head.predict(np.zeros((3, 8)), 1).rows(2) == [(10.0, 20.0, 1.0, {"why": "constant"})]
    with pytest.raises(InputError, match="ten-crop is not supported by the test-constant head"):
        build_head(_Cfg("test-constant", ten_crop=True), _Backbone())

    class Narrow(_Backbone):
        dim = 4

    with pytest.raises(InputError, match="gives 4-d features but the test-constant head expects 8-d"):
        build_head(_Cfg("test-constant"), Narrow())
    monkeypatch.setattr(_ConstantHead, "required_hash", "bbbb")
    with pytest.raises(InputError, match="built with backbone 'bb-b' \\(weights bbbb\\)"):
        build_head(_Cfg("test-constant"), _Backbone())


def test_entry_point_heads_are_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real installed-distribution entry point (a dist-info folder on sys.path), loaded by name."""
    (tmp_path / "terraloc_plugin_demo.py").write_text(
        "import numpy as np\n"
        "from terraloc.models.head import BaseHead, Candidates\n"
        "class NorthPole(BaseHead):\n"
        "    @classmethod\n"
        "    def from_config(cls, config, backbone):\n"
        "        return cls()\n"
        "    def predict(self, x, top_k):\n"
        "        n = int(x.shape[0])\n"
        "        return Candidates(np.tile([[[90.0, 0.0]]], (n, 1, 1)), np.ones((n, 1)))\n"
    )
    dist = tmp_path / "terraloc_plugin_demo-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: terraloc-plugin-demo\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[terraloc.heads]\nnorth-pole = terraloc_plugin_demo:NorthPole\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "north-pole" in available_heads()
    cls = head_class("north-pole")
    assert cls.__name__ == "NorthPole" and cls.name == "north-pole"
    head = build_head(_Cfg("north-pole"), _Backbone())
    assert head.predict(np.zeros((2, 8)), 1).rows(1) == [(90.0, 0.0, 1.0, {})]
    monkeypatch.delitem(head_mod._REGISTRY, "north-pole")
