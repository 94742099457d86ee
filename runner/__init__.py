"""The run: composes tasks, algos and core into one training run; the only layer that imports all of them."""
