"""Train a policy: `python train.py [group=option ...] [key=value ...]`; see `--help` and `--cfg job`."""

import hydra
from omegaconf import DictConfig

from runner.setup import register

register()


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    """Compose the config, then hand it to the one training entry point."""
    from runner.train import run

    return run(cfg)


if __name__ == "__main__":
    from runner.errors import explain_failed_composition

    with explain_failed_composition():
        main()
