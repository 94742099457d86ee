"""Hydra launcher plugin that runs each job as an Amazon SageMaker Training Job."""
