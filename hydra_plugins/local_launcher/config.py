"""The `hydra/launcher` node of `launcher=local`, and the launcher settings' schemas, stored in Hydra's ConfigStore
when Hydra discovers this plugin."""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore

from launchers.settings import register_configs


@dataclass
class LocalLauncherNode:
    """Names the plugin class; its settings are the `launcher` node (launchers.settings.LocalSettings)."""

    _target_: str = "hydra_plugins.local_launcher.launcher.LocalLauncher"


register_configs()
ConfigStore.instance().store(group="hydra/launcher", name="local", node=LocalLauncherNode, provider="local_launcher")
