"""Hydra launcher that sends training runs to Slurm (SageMaker HyperPod or any Slurm cluster) through submitit."""
