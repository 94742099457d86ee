"""Typed schemas for every config group, stored in Hydra's ConfigStore so mistakes fail at composition."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


# ---------------------------------------------------------------------------------------- choices
class LearningRateSchedule(StrEnum):
    """rsl-rl's learning-rate schedules."""

    adaptive = "adaptive"
    fixed = "fixed"


class Optimizer(StrEnum):
    """Optimizers rsl-rl can build (``rsl_rl.utils.resolve_optimizer``)."""

    adam = "adam"
    adamw = "adamw"
    sgd = "sgd"
    rmsprop = "rmsprop"


class Physics(StrEnum):
    """Physics backends a task can run on."""

    newton_mjwarp = "newton_mjwarp"
    physx = "physx"


class Frontend(StrEnum):
    """How an Isaac Lab environment runs its managers."""

    torch = "torch"
    warp = "warp"


class TerrainType(StrEnum):
    """Kinds of ground."""

    generator = "generator"
    plane = "plane"


class TerrainCollision(StrEnum):
    """What the physics collides the robots against on a generated terrain."""

    mesh = "mesh"
    heightfield = "heightfield"


class TerrainMidphase(StrEnum):
    """Which kernel finds the terrain triangles under each robot shape."""

    tiled = "tiled"
    thread = "thread"


class RobotSource(StrEnum):
    """Where a robot model comes from."""

    project = "project"
    isaaclab = "isaaclab"
    file = "file"


class ConsoleMode(StrEnum):
    """How a run prints its progress."""

    compact = "compact"
    full = "full"


class LoggerKind(StrEnum):
    """Curve loggers."""

    tensorboard = "tensorboard"
    wandb = "wandb"


class WandbMode(StrEnum):
    """wandb connection modes."""

    auto = "auto"
    online = "online"
    offline = "offline"
    disabled = "disabled"


# --------------------------------------------------------------------------------------------- task
@dataclass
class RewardTermConfig:
    """One reward term: its weight and the parameters its function receives."""

    weight: float = MISSING
    """Multiplier of the term's value in the summed reward (dimensionless; the reward is per second of sim time)."""
    func: str | None = None
    """``module:function`` of a new term's function; leave null to keep the task's own function for this term."""
    params: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for the term's function, merged over the task's own (e.g. ``std``, ``threshold``)."""


@dataclass
class EventTermConfig:
    """One domain-randomization or reset event of the environment."""

    enabled: bool = True
    """False removes the event from the environment."""
    params: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments merged over the event's own (e.g. ``mass_distribution_params``)."""


@dataclass
class CommandRangesConfig:
    """Ranges from which the velocity command is sampled."""

    lin_vel_x: list[float] = field(default_factory=lambda: [0.0, 1.0])
    """Forward velocity command range [min, max] in m/s."""
    lin_vel_y: list[float] = field(default_factory=lambda: [0.0, 0.0])
    """Lateral velocity command range [min, max] in m/s."""
    ang_vel_z: list[float] = field(default_factory=lambda: [-1.0, 1.0])
    """Yaw-rate command range [min, max] in rad/s."""
    heading: list[float] = field(default_factory=lambda: [-math.pi, math.pi])
    """Heading command range [min, max] in rad (used when heading commands are on)."""


@dataclass
class CommandsConfig:
    """The velocity command the policy tracks."""

    ranges: CommandRangesConfig = field(default_factory=CommandRangesConfig)
    """Sampling ranges of the command."""
    resampling_time_s: float = 10.0
    """Seconds between two command resamplings."""
    heading_command: bool = True
    """Sample a heading and derive the yaw rate from it, instead of sampling the yaw rate."""
    standing_fraction: float = 0.02
    """Fraction of environments commanded to stand still."""


@dataclass
class TerrainConfig:
    """Ground the robots walk on."""

    type: TerrainType = TerrainType.generator
    """``generator`` (procedural rough terrain) or ``plane`` (flat ground)."""
    num_rows: int = 10
    """Terrain difficulty levels (rows of the terrain grid)."""
    num_cols: int = 20
    """Terrain types per level (columns of the terrain grid)."""
    curriculum: bool = True
    """Move robots to harder rows as they walk farther (terrain-level curriculum)."""
    max_init_level: int = 5
    """Highest difficulty row a robot may start on."""
    cache: bool = True
    """Keep the generated terrain on disk (``$RLFORGE_CACHE/terrains``) and load it when the generator settings and
    seed are the same again, instead of generating it at every start; also keep Newton's analysis of its mesh
    (edges, closedness: ``$RLFORGE_CACHE/mesh_topology``)."""
    collision: TerrainCollision = TerrainCollision.mesh
    """What Newton collides the robots against on a ``generator`` terrain. ``mesh``: the generated triangle mesh
    (a BVH query per robot shape). ``heightfield``: a heightfield sampled from that mesh at the generator's
    ``horizontal_scale`` (0.1 m on the rough terrain; Isaac Lab's ``convert_to_heightfield``), looked up by grid
    cell; a vertical step (stair riser, box side) becomes a slope one cell wide. The height scanner casts against
    the same collider; the terrain's visuals, origins and curriculum are the mesh's either way. Refused with
    ``plane`` and with ``physx``."""
    simplify: bool = False
    """Merge the generated terrain's coplanar triangles before the physics sees it (``tasks/terrain_simplify.py``):
    the same surface with fewer triangles (26% fewer on H1's rough terrain), so a cheaper contact search. Kept with
    the terrain under ``task.terrain.cache``. Off by default: the triangulation decides how Newton splits contacts
    into candidates, and training on it has been compared with training on the generator's mesh over one seed
    only (``docs/benchmarks.md``: +3% env-steps/s on an H200). Refused with ``plane`` and with ``collision:
    heightfield`` (nothing to merge there)."""
    midphase: TerrainMidphase = TerrainMidphase.thread
    """How Newton finds the triangles of a ``generator`` terrain under each robot shape every physics step
    (``tasks/contact_search.py``).
    ``thread`` (default): one thread searches one shape's box in the terrain's BVH. ``tiled``: Newton's own kernel,
    in which a block of 256 threads shares each shape's search and a fixed number of blocks take the shapes in
    turn. The same triangles either way (a run on the CPU is the same to the bit); on an H200 at 4096 envs
    ``thread`` stepped 1.46-1.62x the environments a second (``docs/benchmarks.md``). Newton's only: ``physx`` and a
    ``plane`` have no such search, and refuse ``tiled`` (which can only have been asked for)."""
    solver_stand_in: bool = True
    """Give the MuJoCo model that Newton's MuJoCo solver builds the bounding box of a large static mesh (the generated
    terrain) in place of its million triangles, when Newton computes the contacts (``tasks/solver_stand_in.py``):
    MuJoCo then spends no seconds of the start compiling a mesh it never collides with, and holds none of it on
    the device. The simulated states are the same either way; ``false`` gives MuJoCo the mesh."""


class MotorLimits(StrEnum):
    """Whose torque and velocity limits the robot's joints get."""

    isaaclab = "isaaclab"
    urdf = "urdf"


@dataclass
class RobotConfig:
    """The robot: where its model comes from, and the joint properties set on top of the model."""

    source: RobotSource = RobotSource.project
    """``project``: the H1 model this project carries (offline); ``isaaclab``: Isaac Lab's official H1 USD from its
    asset server (needs network, or ``ISAACSIM_ASSET_ROOT`` pointing at a local mirror); ``file``: ``file`` below."""
    file: str | None = None
    """An MJCF (.xml) or URDF (.urdf) file, converted to USD once and cached; used when ``source`` is ``file``."""
    armature: float | None = 0.1
    """Inertia added to every joint's own (kg m^2): the motor rotor's inertia seen through its gearbox. 0.1 is
    Unitree's MJCF of the H1 (every joint); its URDF has no way to state one; null keeps the model's own value
    (0 for converted MJCF and URDF files). Default 0.1 because MuJoCo is the simulator here and Unitree's MuJoCo
    model carries it: at the ankle it is 16 times the foot's own inertia about the joint (0.006 kg m^2), so
    leaving it out makes the ankle far lighter than the robot Unitree describes."""
    joint_damping: float | None = 1.0
    """Passive viscous damping of every joint (N m s/rad), on top of the PD drive's damping gain. 1.0 is Unitree's
    MJCF (the URDF states none); null keeps the model's own value (0 for converted files). Small beside the drives'
    4 to 10 N m s/rad; kept with the armature so the joints are Unitree's MuJoCo model's."""
    motor_limits: MotorLimits = MotorLimits.isaaclab
    """``isaaclab``: Isaac Lab's H1 effort limits (300 N m, ankles 100 N m) and no velocity limit, so results
    compare with Isaac Lab's published H1 training; ``urdf``: the motors' own limits from Unitree's URDF (hips and
    torso 200 N m, knees 300, ankles 40, shoulders 40, shoulder yaw and elbows 18; 9 to 23 rad/s). Torque limits
    clamp the drive in the simulator; MuJoCo-Warp has no joint velocity clamp, so velocity limits reach Isaac Lab's
    joint data (and terms that read them) only."""


@dataclass
class KernelsConfig:
    """Warp kernels compiled ahead, in worker processes, while the environment is built (see tasks/kernels.py)."""

    precompile: bool = True
    """Build ``modules`` in worker processes while the training process starts. With an empty kernel cache this
    shortens the start; with a full one the workers find them built. Off: each compiles when the simulator first
    uses it, one after another."""
    workers: int = 0
    """Worker processes; 0 is one per module, leaving the training process a core, at most
    ``tasks.kernels.MAX_WORKERS`` (each holds Isaac Lab and its simulator in memory while it builds). The modules with
    the most kernels are started first."""
    wait_for_workers: bool = False
    """On: the first step waits for every worker, and a module the environment loads before its worker is done is
    built by the training process as well (``scripts/warp_modules.py --check`` runs so, to see every listed module
    built by a worker). Off: the first step starts as soon as the environment is built and compiles what cannot be
    named ahead while the workers finish; a module it loads waits for the worker that has begun it, and one that no
    worker has begun is taken from their queue and built at once. Needs ``precompile`` (refused without it)."""
    backward: bool = False
    """Also generate and compile each kernel's adjoint (gradient) code. Training never differentiates through the
    simulator (PPO's gradients are PyTorch's), so it is off, which shortens every kernel build; Warp fixes the
    setting when a kernel module is imported, so it applies from the process's first simulator import."""
    cubin: bool = True
    """Compile GPU kernels to machine code for the GPU at hand (cubin). Off, Warp keeps PTX where the driver allows,
    which the CUDA driver compiles again in every process whose own driver cache (``~/.nv``) lacks it: a new
    container or Training Job then recompiles for tens of seconds although Warp's kernel cache is full."""
    modules: list[str] = field(default_factory=list)
    """Python modules holding the task's Warp kernels, and ``python.module:kernel`` for a kernel with a Warp module
    of its own (``module="unique"``). ``python scripts/warp_modules.py task=NAME`` lists those a run loads; names
    that do not import are skipped."""
    warp_frontend_modules: list[str] = field(default_factory=list)
    """Built ahead as well when ``task.frontend=warp``: the modules of Isaac Lab's Warp managers and terms. ``python
    scripts/warp_modules.py task=NAME task.frontend=warp`` lists those a run loads beyond ``modules``."""


@dataclass
class TaskConfig:
    """An environment to train in. Fields that a task kind does not use are ignored by it, except where the kind
    refuses a value it cannot act on (the toy: ``frontend`` and ``terrain.collision``, tasks.toy.ISAACLAB_ONLY)."""

    name: str = MISSING
    """Short task name, used for the run directory (``outputs/<name>/...``)."""
    kind: str = "isaaclab"
    """The environment builder, one of the kinds registered in ``tasks/registry.py`` (the registry owns the list,
    and a kind a project registers itself is valid too): ``isaaclab``, an Isaac Lab manager-based environment;
    ``toy``, a small pure-torch environment for quick checks. An unknown kind is refused, with the registered
    ones listed, before anything is built."""
    isaaclab_id: str | None = None
    """Isaac Lab's registered environment id that this task starts from."""
    num_envs: int = 4096
    """Environments simulated in parallel (per process)."""
    episode_length_s: float = 20.0
    """Episode length in seconds of simulated time."""
    sim_dt: float = 0.005
    """Physics time step in seconds."""
    decimation: int = 4
    """Physics steps per policy step (the policy runs at 1 / (sim_dt * decimation) Hz)."""
    physics: Physics = Physics.newton_mjwarp
    """Physics preset: ``newton_mjwarp`` (MuJoCo-Warp on Newton, no Isaac Sim needed) or ``physx`` (needs Isaac Sim)."""
    frontend: Frontend = Frontend.torch
    """How the environment's managers (observations, rewards, terminations, events, actions) run: ``torch``, Isaac
    Lab's ``ManagerBasedRLEnv`` (PyTorch); ``warp``, Isaac Lab's Warp frontend (``ManagerBasedRLEnvWarp``): the same
    terms as Warp kernels, each manager's step recorded once as a CUDA graph and replayed on a GPU (launched without
    graphs on the CPU, where they cannot be recorded). ``warp`` needs ``physics: newton_mjwarp``; terms it has no Warp
    version of are refused with their names before the simulator starts (the rough-terrain height scan is this
    project's, ``tasks/warp_terms.py``). Isaac Lab tasks only."""
    device_resets: bool = False
    """Reset the environments that ended from the termination mask on the device (``tasks/device_resets.py``)
    instead of reading which ended on the host at every step, which makes the host wait for the step's physics and
    leaves the device idle while it queues the next work. ``task.frontend=warp`` only; the same environments reset,
    with the same deterministic figures, but new commands and levels are drawn for every environment and kept for
    those that reset, so the random stream is not the host-read one. Parts that reset only by ids are refused."""
    torchscript: bool = False
    """Compile the TorchScript functions Isaac Lab scripts when imported (its math utilities: seconds of every
    start). Off, they run as the plain PyTorch functions they are written as; applies from the process's first
    Isaac Lab import."""
    robot: RobotConfig = field(default_factory=RobotConfig)
    """The robot model."""
    terrain: TerrainConfig = field(default_factory=TerrainConfig)
    """The ground."""
    commands: CommandsConfig = field(default_factory=CommandsConfig)
    """The velocity command."""
    observation_noise: bool = True
    """Add the task's noise to the policy's observations."""
    events: dict[str, EventTermConfig] = field(default_factory=dict)
    """Randomization and reset events by name; set ``enabled: false`` to turn one off."""
    rewards: dict[str, RewardTermConfig] = field(default_factory=dict)
    """Reward terms by name. ``~task.rewards.NAME`` removes one; ``+reward@task.rewards.NAME=term`` then
    ``task.rewards.NAME.func=module:function task.rewards.NAME.weight=W`` adds one."""
    objective: str = "Episode_Reward/track_lin_vel_xy_exp"
    """Logged metric that measures success on this task; ``train.py`` returns it (sweepers maximise it)."""
    kernels: KernelsConfig = field(default_factory=KernelsConfig)
    """The task's Warp kernels, compiled ahead of the first step."""
    env_overrides: dict[str, Any] = field(default_factory=dict)
    """Escape hatch: dotted paths into Isaac Lab's env config and their values (``scene.env_spacing: 3.0``). The toy
    task takes ``startup_delay_s`` here: a build that takes that long, as a slow simulator start does."""


# ---------------------------------------------------------------------------------------- algorithm
@dataclass
class DistributionConfig:
    """Action distribution of a stochastic model (rsl-rl's ``distribution_cfg``)."""

    class_name: str = "GaussianDistribution"
    """rsl-rl distribution class."""
    init_std: float = 1.0
    """Initial standard deviation of the actions."""
    std_type: str = "scalar"
    """``scalar`` or ``log`` parameterisation of the standard deviation."""


@dataclass
class ModelConfig:
    """An MLP actor or critic (rsl-rl's model config, same keys)."""

    class_name: str = "MLPModel"
    """rsl-rl model class."""
    hidden_dims: list[int] = field(default_factory=lambda: [512, 256, 128])
    """Widths of the hidden layers."""
    activation: str = "elu"
    """Activation function name."""
    obs_normalization: bool = False
    """Normalize observations with running statistics."""
    distribution_cfg: DistributionConfig | None = None
    """Action distribution; the actor needs one, the critic none."""


@dataclass
class PPOAlgorithmConfig:
    """PPO settings (rsl-rl's ``algorithm`` keys)."""

    class_name: str = "PPO"
    """rsl-rl algorithm class."""
    value_loss_coef: float = 1.0
    """Weight of the value loss."""
    use_clipped_value_loss: bool = True
    """Clip the value loss like the policy loss."""
    clip_param: float = 0.2
    """PPO ratio clip."""
    entropy_coef: float = 0.01
    """Weight of the entropy bonus."""
    num_learning_epochs: int = 5
    """Passes over each batch of experience."""
    num_mini_batches: int = 4
    """Minibatches per pass."""
    learning_rate: float = 1.0e-3
    """Initial learning rate."""
    schedule: LearningRateSchedule = LearningRateSchedule.adaptive
    """``adaptive`` (adjusted to hit ``desired_kl``) or ``fixed``."""
    gamma: float = 0.99
    """Discount factor."""
    lam: float = 0.95
    """GAE lambda."""
    desired_kl: float = 0.01
    """Target KL divergence of the adaptive schedule."""
    max_grad_norm: float = 1.0
    """Gradient norm clip."""
    optimizer: Optimizer = Optimizer.adam
    """``adam``, ``adamw``, ``sgd`` or ``rmsprop``."""
    normalize_advantage_per_mini_batch: bool = False
    """Normalize advantages per minibatch instead of per batch."""


@dataclass
class SpeedConfig:
    """How the training loop uses the device. None of these changes the PPO arithmetic rsl-rl defines; see
    ``docs/benchmarks.md`` for what each measured."""

    sync_free_update: bool = True
    """Run PPO's update without waiting for the device between mini-batches (adaptive learning rate and loss means
    kept on the device, fused Adam). Feed-forward models without RND or symmetry; others use rsl-rl's update."""
    graph_policy: bool = True
    """Record the policy's per-step inference as a CUDA graph and replay it (CUDA, feed-forward models only)."""
    graph_update: bool = True
    """Record PPO's mini-batch step (forward, losses, backward, clipping, Adam) as a CUDA graph and replay it for
    every mini-batch (CUDA, plain MLP models, no mixed precision; needs ``sync_free_update``). In a distributed run
    the gradient and KL all-reduces are recorded in the graph too."""
    deferred_episode_stats: bool = True
    """Keep rsl-rl's per-step bookkeeping of finished episodes (the returns and lengths behind the mean reward and
    episode length) on the device and hand it to the logger once per rollout, instead of waiting for the device
    three times a step as rsl-rl's logger does. The logger's figures are the same, in the same order."""
    tf32: bool = True
    """Allow TF32 matrix products on CUDA, as Isaac Lab's own rsl-rl trainer does; false keeps full float32."""
    freeze_gc: bool = True
    """Hold Python's cyclic garbage collector while the run starts up, then move the objects that exist when
    training starts out of its scans (``gc.freeze()``): its full scans of the simulator's millions of long-lived
    objects cost seconds of start-up and find next to nothing."""


@dataclass
class AlgoConfig:
    """The learner: rsl-rl's OnPolicyRunner settings with rsl-rl's own key names."""

    class_name: str = "OnPolicyRunner"
    """rsl-rl runner class."""
    num_steps_per_env: int = 24
    """Environment steps per environment in each iteration's rollout."""
    max_iterations: int = 1500
    """Training iterations of the whole run (a resumed run continues up to this count)."""
    save_interval: int = 50
    """Iterations between checkpoints (a checkpoint is also written at the end)."""
    keep_checkpoints: int = 5
    """Newest checkpoints kept in the run directory; older ones are deleted (0 keeps all)."""
    obs_groups: dict[str, list[str]] = field(default_factory=lambda: {"actor": ["policy"], "critic": ["policy"]})
    """Which observation groups feed the actor and the critic."""
    actor: ModelConfig = field(default_factory=lambda: ModelConfig(distribution_cfg=DistributionConfig()))
    """Policy network."""
    critic: ModelConfig = field(default_factory=ModelConfig)
    """Value network."""
    algorithm: PPOAlgorithmConfig = field(default_factory=PPOAlgorithmConfig)
    """PPO settings."""
    clip_actions: float | None = None
    """Clip actions to [-clip, clip] before the environment applies them (Isaac Lab's ``RslRlVecEnvWrapper``
    clamps them; so does the toy task); null leaves them as they are. Play and export use the same setting."""
    init_at_random_ep_len: bool = True
    """Start episodes at random lengths so resets spread over time."""
    check_for_nan: bool = True
    """Fail on NaN observations or rewards (checked on the device each step, read once per iteration)."""
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    """How the loop runs on the device (same learning either way)."""


# ------------------------------------------------------------------------------------------- logger
@dataclass
class LoggerConfig:
    """Where training curves go. TensorBoard files are always written; wandb mirrors them."""

    kind: LoggerKind = LoggerKind.tensorboard
    """``tensorboard`` or ``wandb``."""
    project: str = "rlforge"
    """wandb project."""
    entity: str | None = None
    """wandb entity (team or user); null uses the account's default."""
    group: str | None = None
    """wandb group, e.g. a sweep's name."""
    tags: list[str] = field(default_factory=list)
    """wandb tags."""
    mode: WandbMode = WandbMode.auto
    """wandb mode: ``online``, ``offline``, or ``auto`` (offline when no API key is configured)."""
    video_interval: int = 0
    """Record a clip of env 0 every this many iterations (0: never): an MP4, GIF and contact sheet under the run's
    ``videos/``, the GIF in TensorBoard's images, the MP4 in wandb. Needs EGL for Isaac Lab tasks; on a CPU a
    frame costs tens of milliseconds (docs/video.md)."""
    video_seconds: float = 5.0
    """Length of each training clip [simulated seconds]."""


# ----------------------------------------------------------------------------------------- launcher
@dataclass
class LauncherConfig:
    """Where the run executes. Each launcher extends this with its own settings."""

    name: str = "local"
    """Launcher name, recorded in the run's manifest."""


# ------------------------------------------------------------------------------------------- train
@dataclass
class TrainConfig:
    """Top-level config of ``train.py``."""

    task: TaskConfig = MISSING
    """Environment (config group ``task``)."""
    algo: AlgoConfig = MISSING
    """Learner (config group ``algo``)."""
    launcher: LauncherConfig = MISSING
    """Where the run executes (config group ``launcher``)."""
    logger: LoggerConfig = MISSING
    """Training curves (config group ``logger``)."""
    seed: int = 42
    """Random seed of the environment and the learner (each distributed rank adds its rank)."""
    device: str = "auto"
    """``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``: env and learner alike."""
    resume: str = "false"
    """``false``: a new run; ``true``: continue the latest run of this experiment; a run directory: continue it."""
    accept_config_change: bool = False
    """On resume, continue even though the composed config changes what the run learns (network, rewards, task,
    PPO settings: anything but length, saving, logging, launcher and speed settings); the differences are recorded
    in the run's ledger. Without it such a resume is refused, listing the keys, before the simulator starts."""
    experiment: str = "${task.name}"
    """Experiment name: runs of one experiment share ``outputs/<experiment>/`` and ``resume=true`` looks there."""
    output_root: str = "outputs"
    """Folder under which run directories are made (relative to where train.py is started)."""
    objective: str = "${task.objective}"
    """Metric that ``run`` returns for sweepers: a logged key, averaged over the last 5 iterations."""
    console: ConsoleMode = ConsoleMode.compact
    """``compact``: one progress line per run (redrawn on a terminal; a plain line every ``console_interval_s``
    in a log file) and Isaac Lab's manager tables in the run's ``env_build.log``; ``full``: rsl-rl's block of
    every iteration and the tables on the console. Curves go to TensorBoard, ``metrics.jsonl`` and wandb either
    way."""
    console_block_every: int = 100
    """With ``console=compact``, print rsl-rl's full block every this many iterations as well (0: never)."""
    console_interval_s: float = 10.0
    """With ``console=compact`` and no terminal, seconds between two progress lines."""
    summary: bool = True
    """Print the one-screen summary at the end of the run."""
    warp_cache_dir: str | None = None
    """Folder of Warp's compiled-kernel cache, exported as ``WARP_CACHE_PATH`` before the environment is built;
    null keeps Warp's default (``~/.cache/warp``). Point it at storage the next run sees (a shared file system, a
    synced checkpoint folder) so that run skips kernel compilation; see docs/accounting.md."""
    cache_dir: str | None = None
    """Folder of this project's own caches (converted robots, generated terrains and Newton's analysis of their
    meshes), exported as ``RLFORGE_CACHE`` before the environment is built; null keeps ``$RLFORGE_CACHE``, else
    ``~/.cache/rlforge``. Like ``warp_cache_dir``: storage the next run sees."""


def register_configs() -> None:
    """Store the schemas in Hydra's ConfigStore: YAML files extend them through their defaults lists."""
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    store.store(group="task", name="task_schema", node=TaskConfig)
    store.store(group="reward", name="reward_term_schema", node=RewardTermConfig)
    store.store(group="algo", name="algo_schema", node=AlgoConfig)
    store.store(group="logger", name="logger_schema", node=LoggerConfig)
    store.store(group="launcher", name="launcher_schema", node=LauncherConfig)
