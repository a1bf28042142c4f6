"""The sparse extension's first-use build: an install without the library compiles it once into a cache, under a
lock, and later loads take it from there. The compiler is stood in for by a copy of the built library (compiling is
test_install.py's job), so this checks the loading logic in a second."""
import importlib
import shutil
import sys
import warnings

import pytest

from anytime_perception.models.sparse import _ext, build


@pytest.fixture
def fresh_state(monkeypatch, tmp_path):
    library = build.built_library()
    if library is None:
        pytest.fail("the sparse extension is not built (tools/setup-venv.sh builds it)")
    # the built module stays the one every other test sees: the cached copy this test loads is put back after it
    monkeypatch.setitem(sys.modules, _ext.MODULE, importlib.import_module(_ext.MODULE))
    monkeypatch.setattr(_ext, "_STATE", {})
    monkeypatch.setenv("ANYTIME_SPARSE_EXT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ANYTIME_SPARSE_EXT", raising=False)
    real_import = importlib.import_module

    def installed_without_library(name, *args):
        if name == _ext.MODULE:
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args)

    monkeypatch.setattr(_ext.importlib, "import_module", installed_without_library)
    compiled = []

    def stand_in_compiler(directory, quiet=True):
        compiled.append(directory)
        target = directory / "anytime_perception" / "models" / "sparse" / library.name
        target.parent.mkdir(parents=True)
        shutil.copy(library, target)
        return target

    monkeypatch.setattr(build, "build_into", stand_in_compiler)
    return compiled


def test_first_use_compiles_once_into_the_cache_and_later_loads_reuse_it(fresh_state, tmp_path):
    with pytest.warns(UserWarning, match="compiling it once"):
        module = _ext.extension()
    assert module is not None and _ext.load_error() is None
    assert _ext.cache_directory() in fresh_state and (tmp_path / "cache") in _ext.cache_directory().parents
    assert module.ABI == _ext.ABI
    _ext._STATE.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second compile, no warning
        assert _ext.extension() is not None
    assert len(fresh_state) == 1


def test_a_failed_compile_leaves_the_pytorch_path_with_the_reason(fresh_state, monkeypatch):
    def no_compiler(directory, quiet=True):
        raise RuntimeError("compiling sparse_conv.cpp failed: command 'c++' failed: No such file or directory")

    monkeypatch.setattr(build, "build_into", no_compiler)
    with pytest.warns(UserWarning, match="compiling it once"):
        assert _ext.extension() is None
    assert "compiling it failed" in _ext.load_error() and "c++" in _ext.load_error()


def test_nojit_never_compiles(fresh_state, monkeypatch):
    monkeypatch.setenv("ANYTIME_SPARSE_EXT", "nojit")
    assert _ext.extension() is None
    assert fresh_state == [] and "No module named" in _ext.load_error()
