"""`--accelerator`: the GPU each embed worker gets on Dataflow, as a Beam resource hint.

    type:nvidia-l4;count:1;machine_type:g2-standard-4;install-nvidia-driver

is Dataflow's accelerator hint (right fitting): `type:` and `count:` are required, a
`machine_type:` names the VM shape that carries that GPU (an L4 needs a G2 machine), and
bare words are Dataflow's GPU options (`install-nvidia-driver`: the SDK image holds no
driver). The hint goes on the embed stage only, so the other steps keep CPU workers.

One model per GPU: RunInference loads one model per SDK process (handlers.EmbedHandler),
and Dataflow starts one SDK process per vCPU unless told otherwise, so a hinted embed job
also runs with ONE_SDK_PROCESS; a VM holds one GPU (`count:1`), which the model fills.
"""

from __future__ import annotations

# Dataflow experiment: one SDK process per worker VM (threads share its one model).
ONE_SDK_PROCESS = "no_use_multiple_sdk_containers"
EXAMPLE = "type:nvidia-l4;count:1;machine_type:g2-standard-4;install-nvidia-driver"


def parse_accelerator(text: str) -> str:
    """The hint as Dataflow reads it (parts trimmed, empty parts dropped); ValueError
    naming what is wrong: no type, a count other than 1, a key given twice."""
    parts = [part.strip() for part in (text or "").split(";") if part.strip()]
    keys: dict[str, str] = {}
    for part in parts:
        key, colon, value = part.partition(":")
        if not colon:
            continue  # a bare option such as install-nvidia-driver
        key, value = key.strip(), value.strip()
        if not key or not value:
            raise ValueError(f"--accelerator {text!r}: {part!r} is not key:value")
        if key in keys:
            raise ValueError(f"--accelerator {text!r}: {key} given twice")
        keys[key] = value
    if "type" not in keys:
        raise ValueError(f"--accelerator {text!r}: name the GPU type, e.g. {EXAMPLE}")
    if keys.get("count") != "1":
        raise ValueError(
            f"--accelerator {text!r}: count must be 1 (one model per GPU; a VM with more "
            f"GPUs would use only its first), e.g. {EXAMPLE}"
        )
    return ";".join(
        f"{k.strip()}:{v.strip()}" if c else k.strip()
        for k, c, v in (p.partition(":") for p in parts)
    )
