"""pip / ament_python-compatible install of the Python package, with the sparse backend's C++ extension (the
messages in msg/ are built by CMake, see tools/build-messages.sh and CMakeLists.txt).

The extension (``anytime_perception.models.sparse._sparse_cpu``) is built with torch's ``BuildExtension`` by
``pip install .``, ``pip install -e .`` and colcon (CMakeLists.txt runs ``build_ext`` of this file). It compiles
against the torch it will run with, so install without build isolation where torch is already installed:

    pip install --no-build-isolation .          (an isolated build would compile against another torch)

Where torch or a C++ compiler is missing the package installs without it, after a one-line warning; the node's
``execution: auto`` then runs the dense emulation (and says so), and
``python -m anytime_perception.models.sparse.build`` builds the extension later.
"""
import importlib.util
import sys
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext

PACKAGE = "anytime_perception"
ROOT = Path(__file__).resolve().parent


def _warn(text: str) -> None:
    print(f"WARNING: {PACKAGE}: {text}", file=sys.stderr)


def _sparse_build_module():
    """models/sparse/build.py, loaded on its own (importing the package would import torch and the models): the
    one place that names the extension, its source and its compiler flags."""
    spec = importlib.util.spec_from_file_location("_sparse_build", ROOT / PACKAGE / "models" / "sparse" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class OptionalBuildExt(build_ext):
    """Builds the extension if it can; a failure (no compiler, headers) is one warning, not a failed install."""

    def run(self):
        try:
            super().run()
        except Exception as error:  # noqa: BLE001 - distutils raises several unrelated error types here
            _warn(f"the sparse C++ extension was not built ({type(error).__name__}: {error}); the sparse backend "
                  "runs on plain PyTorch ops (execution: auto picks the dense emulation instead). Build it later "
                  "with `python -m anytime_perception.models.sparse.build`.")


def _extension_build():
    """(ext_modules, cmdclass) for the sparse extension, or nothing (with a warning) when torch is missing."""
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError as error:
        _warn(f"torch is not importable at build time ({error}), so the sparse C++ extension is not built; "
              "install torch first and reinstall with `pip install --no-build-isolation .`, or run "
              "`python -m anytime_perception.models.sparse.build` after installing.")
        return [], {}
    build = _sparse_build_module()
    extension = CppExtension(build.MODULE, [str(build.SOURCE.relative_to(ROOT))],
                             extra_compile_args=build.COMPILE_ARGS)

    class Build(OptionalBuildExt, BuildExtension):
        pass

    return [extension], {"build_ext": Build.with_options(use_ninja=False)}


EXT_MODULES, CMDCLASS = _extension_build()

setup(
    name=PACKAGE,
    version="0.1.0",
    description="Confidence-adaptive anytime HRNet (segmentation, pose) for ROS 2, with deadlines and preemption",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # msg/ and action/ in the source tree are git-ignored links to the generated interfaces (tools/build-messages.sh);
    # they are not part of a wheel. A real ROS 2 install builds them with colcon (CMakeLists.txt).
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"], exclude=[f"{PACKAGE}.msg", f"{PACKAGE}.action"]),
    package_data={PACKAGE: ["assets/*/*.jpg", "assets/*/*.md", "assets/*/*.csv", "assets/*/*.pth", "assets/*/*.json",
                           "models/csrc/*.cpp"]},
    # torch is deliberately unpinned here: GPU users keep their own build. The dev/CI install path
    # (tools/setup-venv.sh) pins the CPU build torch==2.13.0 before installing this package.
    install_requires=["torch>=2.1", "numpy>=1.24"],
    # "ros": what the ROS adapter needs besides ROS 2 itself (rclpy etc. come from the ROS install, or from the PyPI
    # wheels of tools/requirements-ros.txt in the dev venv): OpenCV for compressed images and video, rosbags for bags,
    # tqdm for the demo's progress.
    # "train": the train/evaluate commands (OpenCV augmentations in DataLoader workers, YAML run configs, progress
    # bars, plots, scipy for MPII's .mat files, and cityscapesscripts' own label table and evaluation).
    extras_require={
        "test": ["pytest>=7"],
        "ros": ["opencv-python-headless>=4.8", "rosbags>=0.10", "tqdm>=4.60"],
        "train": ["opencv-python-headless>=4.8", "pyyaml>=6", "tqdm>=4.60", "matplotlib>=3.7", "scipy>=1.10",
                  "cityscapesscripts>=2.2"],
        "gpu": ["triton>=3.2"],  # the sparse backend's Triton kernels on CUDA (models/gpu/); never needed on CPU
    },
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        (f"share/{PACKAGE}/rviz", glob("rviz/*.rviz")),
    ],
    ext_modules=EXT_MODULES,
    cmdclass=CMDCLASS,
    entry_points={
        "console_scripts": [
            "anytime-perception = anytime_perception.cli:main",
            "anytime_node = anytime_perception.ros.process:main",
            "anytime_player = anytime_perception.ros.player:main",
            "anytime-demo = anytime_perception.ros.demo:main",
        ],
    },
)
