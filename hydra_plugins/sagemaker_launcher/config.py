"""The `hydra/launcher` node of `launcher=sagemaker`, and the launcher settings' schemas, stored in Hydra's
ConfigStore when Hydra discovers this plugin."""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore

from launchers.settings import register_configs


@dataclass
class SageMakerLauncherNode:
    """Names the plugin class; its settings are the `launcher` node (launchers.settings.SageMakerSettings)."""

    _target_: str = "hydra_plugins.sagemaker_launcher.launcher.SageMakerLauncher"


register_configs()
ConfigStore.instance().store(
    group="hydra/launcher", name="sagemaker", node=SageMakerLauncherNode, provider="sagemaker_launcher"
)
