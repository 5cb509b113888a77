"""Fail the image build unless the container's TensorRT is the one the engines are built for.

``check_tensorrt.py 10.13.3`` reads the version from ``libnvinfer`` itself (``getInferLibVersion``,
major·10000 + minor·100 + patch since TensorRT 10), the library Triton's TensorRT backend loads;
``--python`` also checks the ``tensorrt`` Python bindings that ``aisle export --engine tensorrt``
builds with. Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import ctypes
import sys


def library_version() -> str:
    for name in ("libnvinfer.so.10", "libnvinfer.so"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        value = int(lib.getInferLibVersion())
        return f"{value // 10000}.{value // 100 % 100}.{value % 100}"
    raise SystemExit("check_tensorrt: libnvinfer not found in this image")


def main(argv: list[str]) -> int:
    expected = argv[0]
    found = {"libnvinfer": library_version()}
    if "--python" in argv:
        import tensorrt

        found["tensorrt (Python)"] = ".".join(tensorrt.__version__.split(".")[:3])
    wrong = {k: v for k, v in found.items() if v != expected}
    if wrong:
        print(f"check_tensorrt: expected TensorRT {expected}, found {wrong}", file=sys.stderr)
        return 1
    print(f"check_tensorrt: TensorRT {expected} ({', '.join(found)})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
