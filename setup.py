"""Builds tlcore._core through CMake (pybind11's cmake_example pattern).

CMake leaves the module in build/python/tlcore; this copies it where setuptools wants it.

Debian has no scikit-build-core; this keeps `pip install --no-build-isolation .`
(and `-e .`) working offline. The CMake build folder is `build/` in the source
tree, shared with `ctest`, so an install after a test build only relinks.

The packages (pyproject.toml) are tlcore and tlcore.api, the HTTP service. The
service's source is the checkout's api/ (`uvicorn api.app:app` from the checkout);
python/tlcore/api is a relative link to it, so `tlcore.api` is the same code from
the source tree (PYTHONPATH=python), an editable install and an installed wheel,
where setuptools copies it, static/ included, as a plain folder. A package_dir
mapping ("tlcore.api" -> "api") would exist only in installs: `tlcore serve` from
the source tree would need sys.path edits again.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name: str) -> None:
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_dir = Path(os.environ.get("TLCORE_BUILD_DIR", ROOT / "build"))
        build_dir.mkdir(parents=True, exist_ok=True)
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
        subprocess.run(
            [
                "cmake", "-S", str(ROOT), "-B", str(build_dir),
                f"-DPython3_EXECUTABLE={sys.executable}",
                "-DCMAKE_BUILD_TYPE=Release",
            ],
            check=True,
        )
        subprocess.run(
            ["cmake", "--build", str(build_dir), "--target", "_core", "-j", jobs], check=True
        )
        built = sorted((build_dir / "python" / "tlcore").glob("_core.*"))
        if not built:
            raise RuntimeError(f"CMake built no _core module under {build_dir}/python/tlcore")
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(built[-1], out_dir / Path(self.get_ext_fullpath(ext.name)).name)


setup(ext_modules=[CMakeExtension("tlcore._core")], cmdclass={"build_ext": CMakeBuild})
