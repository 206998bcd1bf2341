"""The Ray cluster this process runs on when OPENMAAS_CLUSTER is set: connecting to it and describing it.
Training (training/executors/ray_train.py) and serving build on the connection made here."""

from openmaas.cluster.connection import RayCluster

__all__ = ["RayCluster"]
