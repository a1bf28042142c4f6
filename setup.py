"""pip / ament_python-compatible install of the Python package (the messages in msg/ are built by CMake, see
tools/build-messages.sh and CMakeLists.txt)."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "anytime_perception"

setup(
    name=PACKAGE,
    version="0.1.0",
    description="Confidence-adaptive anytime HRNet (segmentation, pose) for ROS 2, with deadlines and preemption",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    # torch is deliberately unpinned here: GPU users keep their own build. The dev/CI install path
    # (tools/setup-venv.sh) pins the CPU build torch==2.13.0 before installing this package.
    install_requires=["torch>=2.1", "numpy>=1.24"],
    extras_require={"test": ["pytest>=7"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
    ],
    entry_points={
        "console_scripts": [
            "anytime-perception = anytime_perception.cli:main",
        ],
    },
)
