"""Export a checkpoint's policy as ONNX and TorchScript, and prove both give the torch policy's actions.

python scripts/export.py outputs/h1_rough/<run>            # newest checkpoint of a run
python scripts/export.py path/to/model_40.pt --out exported/
"""

from __future__ import annotations

import argparse
from pathlib import Path

from runner.checkpoint_target import resolve_checkpoint, run_dir_of


def export(checkpoint: Path, out_dir: Path, samples: int = 256, atol: float = 1e-5) -> dict[str, float]:
    """Write ``policy.onnx`` and ``policy.pt`` into ``out_dir``; return the largest action difference of each."""
    import numpy as np
    import onnxruntime
    import torch
    from tensordict import TensorDict

    from algos.policy import load_actor

    actor, io = load_actor(checkpoint)
    out_dir.mkdir(parents=True, exist_ok=True)
    jit_path, onnx_path = out_dir / "policy.pt", out_dir / "policy.onnx"
    torch.jit.script(actor.as_jit().to("cpu")).save(str(jit_path))
    onnx_model = actor.as_onnx(verbose=False).to("cpu").eval()
    torch.onnx.export(
        onnx_model,
        onnx_model.get_dummy_inputs(),
        str(onnx_path),
        export_params=True,
        opset_version=18,
        input_names=onnx_model.input_names,
        output_names=onnx_model.output_names,
        dynamic_axes={"obs": {0: "batch"}, "actions": {0: "batch"}},
        dynamo=False,
    )

    # The same observations through all three: the torch actor (deterministic), TorchScript and ONNX Runtime.
    generator = torch.Generator().manual_seed(0)
    groups = io["obs_groups"]["actor"]
    parts = {g: torch.randn(samples, io["obs_dims"][g], generator=generator) for g in groups}
    flat = torch.cat([parts[g] for g in groups], dim=-1)
    with torch.no_grad():
        reference = actor(TensorDict(parts, batch_size=[samples])).numpy()
        scripted = torch.jit.load(str(jit_path))(flat).numpy()
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_actions = session.run(None, {"obs": flat.numpy()})[0]
    errors = {
        "torchscript": float(np.abs(scripted - reference).max()),
        "onnx": float(np.abs(onnx_actions - reference).max()),
    }
    for name, error in errors.items():
        if error > atol:
            raise SystemExit(f"error: the {name} export differs from the torch policy by {error:.2e} (> {atol})")
    return errors


def main(argv: list[str] | None = None) -> int:
    """The command line: export the target's checkpoint and print how closely the exports match."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", type=Path, help="a checkpoint file or a run directory")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: <run dir>/exported)")
    args = parser.parse_args(argv)
    checkpoint = resolve_checkpoint(args.target)
    out_dir = args.out or run_dir_of(checkpoint) / "exported"
    errors = export(checkpoint, out_dir)
    print(f"exported {checkpoint.name} to {out_dir}/policy.onnx and {out_dir}/policy.pt")
    print(
        f"max |action difference| vs torch over 256 observations: "
        f"TorchScript {errors['torchscript']:.2e}, ONNX {errors['onnx']:.2e}"
    )
    return 0
