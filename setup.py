"""Build hook for the two C accelerators; everything else is in pyproject.toml.

* ``chain._canonical`` (chain/_canonical.c): the canonical msgpack encoder;
* ``contracts._treecore`` (contracts/_treecore.c): the state tree's commit.

Both are optional: where they cannot be built (no C compiler, no OpenSSL headers) the
install still succeeds and chain/encoding.py and contracts/tree.py use their pure-Python
reference code, which gives the same bytes (tests/test_encoding_native.py,
tests/test_tree_native.py; those tests fail when an extension is missing unless
MUTUAL_ALLOW_PURE=1 says it is intended).
"""

from setuptools import Extension, setup

_C_FLAGS = ["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"]

setup(
    ext_modules=[
        Extension(
            "chain._canonical",
            sources=["chain/_canonical.c"],
            extra_compile_args=_C_FLAGS,
            optional=True,
        ),
        Extension(
            "contracts._treecore",
            sources=["contracts/_treecore.c"],
            # OpenSSL's SHA-256 (SHA-NI where the CPU has it); CPython links the same
            # library for hashlib, so it is on every machine that runs the project
            libraries=["crypto"],
            extra_compile_args=_C_FLAGS,
            optional=True,
        )
    ]
)
