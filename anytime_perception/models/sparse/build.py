"""Build the CPU extension of the sparse backend in place (`_sparse_cpu*.so` next to this file).

    python -m anytime_perception.models.sparse.build [--force] [--quiet]

Run by `tools/setup-venv.sh`; uses PyTorch's extension tooling (torch.utils.cpp_extension) and the machine's C++
compiler, with `-march=native` since the library is built where it runs. Needs no network. Without the library the
backend runs on plain PyTorch ops (same results, slower on CPU).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
ROOT = PACKAGE_DIR.parents[2]  # the directory holding the `anytime_perception` package
SOURCE = PACKAGE_DIR.parent / "csrc" / "sparse_conv.cpp"
MODULE = "anytime_perception.models.sparse._sparse_cpu"
COMPILE_ARGS = ["-O3", "-march=native", "-fopenmp", "-fno-math-errno"]


def built_library() -> Path | None:
    found = sorted(PACKAGE_DIR.glob("_sparse_cpu*.so"))
    return found[0] if found else None


def up_to_date() -> bool:
    lib = built_library()
    return lib is not None and lib.stat().st_mtime >= SOURCE.stat().st_mtime


def build(force: bool = False, quiet: bool = False) -> Path:
    """Build the library next to this file (the dev install)."""
    if not force and up_to_date():
        return built_library()
    _compile(["--inplace", "--build-temp", str(ROOT / "build" / "sparse_ext")], force, quiet)
    lib = built_library()
    if lib is None:
        raise RuntimeError(f"building {MODULE} produced no library")
    return lib


def build_into(directory: Path, quiet: bool = True) -> Path:
    """Build the library into `directory` (the first-use cache of an install that came without it)."""
    directory.mkdir(parents=True, exist_ok=True)
    _compile(["--build-lib", str(directory), "--build-temp", str(directory / "tmp")], force=False, quiet=quiet)
    found = sorted(directory.rglob("_sparse_cpu*.so"))
    if not found:
        raise RuntimeError(f"building {MODULE} into {directory} produced no library")
    return found[0]


def _compile(location_args: list[str], force: bool, quiet: bool) -> None:
    from setuptools import setup
    from torch.utils.cpp_extension import BuildExtension, CppExtension

    ext = CppExtension(MODULE, [str(SOURCE.relative_to(ROOT))], extra_compile_args=COMPILE_ARGS)
    args = ["-q", "build_ext", *location_args] + (["--force"] if force else [])
    sink = io.StringIO()
    cwd = os.getcwd()
    try:
        os.chdir(ROOT)
        with contextlib.redirect_stdout(sink) if quiet else contextlib.nullcontext(), \
                contextlib.redirect_stderr(sink) if quiet else contextlib.nullcontext():
            setup(name="anytime_perception_sparse_ext", ext_modules=[ext], cmdclass={"build_ext": BuildExtension},
                  script_args=args)
    except (Exception, SystemExit) as error:  # setuptools reports compiler failures as SystemExit
        raise RuntimeError(f"compiling {SOURCE.name} failed: {error}\n{sink.getvalue()[-2000:]}") from None
    finally:
        os.chdir(cwd)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    parser.add_argument("--quiet", action="store_true")
    opts = parser.parse_args(argv)
    lib = build(force=opts.force, quiet=opts.quiet)
    print(f"sparse extension: {lib}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
