"""Datasets: pybullet scenes, AV-digits (MNIST + FSDD), IR collections; and where data lives."""
