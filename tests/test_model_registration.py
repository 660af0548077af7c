"""Plug-in packages import all their modules: a new piece is one file that registers itself."""
from __future__ import annotations

import sys
import textwrap

import pytest

from omnireid.modeling import BACKBONE_REGISTRY, HEAD_REGISTRY, LOSS_REGISTRY, META_ARCH_REGISTRY
from omnireid.modeling.registration import import_package_modules


@pytest.fixture
def plugin_package(tmp_path, monkeypatch):
    package = tmp_path / "fake_plugins"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "good.py").write_text(textwrap.dedent("""
        from omnireid.utils.registry import Registry
        REG = Registry("thing")
        @REG.register()
        def my_thing():
            return 1
    """))
    (package / "needs_extra.py").write_text("import not_an_installed_package_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield package
    for name in [m for m in sys.modules if m.startswith("fake_plugins")]:
        del sys.modules[name]


def test_every_module_is_imported_and_missing_optional_dependencies_are_reported(plugin_package):
    import fake_plugins

    unavailable = import_package_modules("fake_plugins", fake_plugins.__path__)
    assert "fake_plugins.good" in sys.modules
    assert sys.modules["fake_plugins.good"].REG.get("my_thing")() == 1
    assert dict(unavailable) == {"needs_extra": "not_an_installed_package_xyz"}
    with pytest.raises(TypeError):
        unavailable["x"] = "y"  # read-only


def test_a_broken_omnireid_import_is_not_hidden(plugin_package):
    (plugin_package / "broken.py").write_text("import omnireid.does_not_exist\n")
    import fake_plugins

    with pytest.raises(ModuleNotFoundError, match="omnireid.does_not_exist"):
        import_package_modules("fake_plugins", fake_plugins.__path__)


def test_builtin_pieces_are_registered_under_fastreid_names():
    assert "build_resnet_backbone" in BACKBONE_REGISTRY
    assert "EmbeddingHead" in HEAD_REGISTRY
    assert "Baseline" in META_ARCH_REGISTRY
    assert {"CrossEntropyLoss", "TripletLoss", "CircleLoss", "Cosface", "FocalLoss"} <= set(LOSS_REGISTRY)
    assert "CosFace" in LOSS_REGISTRY
