"""Pose accuracy: PCK / PCKh metrics (`pck`) and dataset evaluation on any backend (`evaluate`)."""
