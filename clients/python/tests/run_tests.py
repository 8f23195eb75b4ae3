"""run_tests.py: runs the taca_client unittest suite (test_*.py beside this file); exits 77 (CTest's
skip) when grpcio, protobuf or numpy are missing, 1 on any failure."""
import os
import sys
import unittest

try:
    import grpc  # noqa: F401
    import google.protobuf  # noqa: F401
    import numpy  # noqa: F401
except ImportError as e:
    print("skip: %s (deploy/install-deps.sh installs python3-grpcio, python3-protobuf, python3-numpy)" % e)
    sys.exit(77)

suite = unittest.defaultTestLoader.discover(os.path.dirname(os.path.abspath(__file__)), pattern="test_*.py")
result = unittest.TextTestRunner(verbosity=2).run(suite)
sys.exit(0 if result.wasSuccessful() else 1)
