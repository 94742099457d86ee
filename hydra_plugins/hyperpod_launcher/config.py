"""The `hydra/launcher` node of `launcher=hyperpod`, and the launcher settings' schemas, stored in Hydra's ConfigStore
when Hydra discovers this plugin."""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore

from launchers.settings import register_configs


@dataclass
class HyperPodLauncherNode:
    """Names the plugin class; its settings are the `launcher` node (launchers.settings.HyperPodSettings)."""

    _target_: str = "hydra_plugins.hyperpod_launcher.launcher.HyperPodLauncher"


register_configs()
ConfigStore.instance().store(
    group="hydra/launcher", name="hyperpod", node=HyperPodLauncherNode, provider="hyperpod_launcher"
)
