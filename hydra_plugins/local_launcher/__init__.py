"""Hydra launcher of `launcher=local`: sweep points one after another in this process, or several at once per GPU
as processes of their own (`launcher.runs_per_gpu`)."""
