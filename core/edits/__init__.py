"""Editing methods, one module (or small package) each, all on the shared harness in `core.optimize`."""
