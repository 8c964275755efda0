"""lbdeploy: build, export and serve Local-Binarized Residual Networks (LBRN) on edge devices."""

__version__ = "0.1.0"
