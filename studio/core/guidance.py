"""How a text-to-image step combines the prompt's prediction with the unconditional one.

Three rules, all at the same scale w:

- ``cfg``: classifier-free guidance, ``u + w·(c − u)`` on the model's outputs, which
  is what the diffusers pipelines (and A1111, ComfyUI) do.
- ``fdg``: frequency-decoupled guidance (Sadat, Vontobel, Salehi and Weber, "Guidance
  in the Frequency Domain Enables High-Fidelity Sampling at Low CFG Scales", 2025) in
  its simplest, two-band form: the part of ``c − u`` that is each latent channel's
  mean over the image, the image's overall colour, is guided at ``1 + FDG_LOW_SHARE·(w −
  1)``, the rest, shapes and edges, at w. Full-scale guidance of the mean is what
  turns a short prompt such as "a black circle" into an empty black field; at a
  third of the scale backgrounds still follow their prompts and stay as varied as
  CFG leaves them.
- ``apg``: adaptive projected guidance (Sadat, Hilliges and Weber, "Eliminating
  Oversaturation and Artifacts of High Guidance Scales in Diffusion Models", ICLR
  2025). The same difference ``c − u``, taken between the two *clean-image*
  estimates, loses its component along the conditional estimate before it is
  scaled. That component mostly pushes every pixel the same way: on the bundled
  model at w = 7.5 it turns "a black circle" into an empty black field half of the
  time. Removing it keeps what the prompt adds and drops the over-saturation.
  Projecting the raw noise predictions instead (what diffusers' APG guider does for
  an epsilon model) leaves that failure as it is, so the projection is done on
  clean-image estimates here, as in the paper.

The pipelines compute CFG themselves; :func:`guidance_rule` makes them compute
FDG or APG by rewriting the unconditional half of the UNet's batched output, so that the
pipeline's own ``u' + w·(c − u')`` is the rule's prediction. Everything else (schedulers,
callbacks, cancel) stays the pipeline's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from studio.core.errors import UserError

# Keys (what requests carry) → the names the Image pane and the PNG parameters show.
GUIDANCE_METHODS: dict[str, str] = {"cfg": "CFG", "fdg": "FDG", "apg": "APG"}

# What each rule does, in a sentence (the panes' tooltips).
GUIDANCE_HELP: dict[str, str] = {
    "cfg": "Classifier-free guidance, as in A1111 and ComfyUI",
    "fdg": "Frequency-decoupled guidance: the full CFG scale for shapes and edges, a third "
           "of it for the image's overall colour, so a short prompt's colour goes to its "
           "object instead of flooding the image",
    "apg": "Adaptive projected guidance: the CFG scale without the part of it that "
           "oversaturates the image",
}

# Share of the parallel component APG keeps; the paper's recommended 0.
APG_ETA = 0.0
# Share of the guidance FDG gives each channel's image-wide mean.
FDG_LOW_SHARE = 0.3


def guidance_key(name: str) -> str:
    """Our key for a guidance rule given by key or display name; UserError if unknown."""
    text = str(name).strip().lower()
    for key, label in GUIDANCE_METHODS.items():
        if text in (key, label.lower()):
            return key
    choices = ", ".join(f"{k} ({v})" for k, v in GUIDANCE_METHODS.items())
    raise UserError(f"Unknown guidance {name!r}: choose one of {choices}.")


def project_update(x0_cond: Any, x0_uncond: Any, eta: float = APG_ETA) -> Any:
    """APG's update: ``c − u`` less ``1 − eta`` of its component along ``c``, per image.

    CFG's guided estimate is ``c + (w − 1)·(c − u)``; APG's is ``c + (w − 1)·update``.
    """
    import torch

    diff = (x0_cond - x0_uncond).double()
    cond = x0_cond.double()
    dims = tuple(range(1, diff.dim()))
    unit = torch.nn.functional.normalize(cond.flatten(1), dim=1).view_as(cond)
    parallel = (diff * unit).sum(dim=dims, keepdim=True) * unit
    return (diff - parallel + eta * parallel).to(x0_cond.dtype)


def split_update(x0_cond: Any, x0_uncond: Any, low: float = FDG_LOW_SHARE) -> Any:
    """FDG's update: ``c − u`` with each channel's image-wide mean scaled by ``low``.

    The split is linear, so it is the same on clean estimates as on noise predictions.
    """
    diff = x0_cond - x0_uncond
    return diff - (1.0 - low) * diff.mean(dim=(-2, -1), keepdim=True)


def _alpha_sigma(scheduler: Any, timestep: Any, like: Any) -> tuple[Any, Any]:
    """sqrt(ᾱ_t) and sqrt(1 − ᾱ_t) at the UNet's timestep (fractional ones interpolated)."""
    import torch

    table = scheduler.alphas_cumprod.to(device=like.device, dtype=torch.float64)
    t = torch.as_tensor(timestep, device=like.device, dtype=torch.float64).reshape(-1)[:1]
    t = t.clamp(0, len(table) - 1)
    lo = t.floor().long()
    hi = t.ceil().long()
    alpha_bar = table[lo] + (table[hi] - table[lo]) * (t - lo)
    return alpha_bar.sqrt().item(), (1 - alpha_bar).sqrt().item()


def _to_clean(prediction: Any, sample: Any, kind: str, a: float, s: float) -> tuple[Any, float]:
    """The clean-latent estimate and d(prediction)/d(estimate) for a prediction type.

    The UNet's input is the variance-preserving ``a·x0 + s·noise`` for every diffusers
    scheduler (Euler-type ones scale their sample before the call), so one formula holds.
    """
    if kind == "epsilon":
        return (sample - s * prediction) / a, -a / s
    if kind == "v_prediction":
        return a * sample - s * prediction, -1.0 / s
    if kind == "sample":
        return prediction, 1.0
    raise UserError(f"Guidance other than CFG does not know the prediction type {kind!r}; "
                    "use CFG for this model.")


@contextmanager
def guidance_rule(pipe: Any, method: str, *, eta: float = APG_ETA,
                  low: float = FDG_LOW_SHARE) -> Iterator[None]:
    """While inside, ``pipe``'s classifier-free guidance steps follow ``method`` (a key or
    name of GUIDANCE_METHODS; "cfg" leaves the pipeline as it is).

    Applies to the steps where the pipeline batches the unconditional (or negative)
    prompt first and the prompt second, as the Stable Diffusion pipelines do whenever
    their guidance scale is above 1; other calls pass through untouched.
    """
    key = guidance_key(method)
    if key == "cfg":
        yield
        return
    kind = str(pipe.scheduler.config.get("prediction_type", "epsilon"))

    import torch

    def rule(cond: Any, uncond: Any) -> Any:
        return project_update(cond, uncond, eta) if key == "apg" else split_update(cond, uncond, low)

    def hook(module: Any, args: tuple, kwargs: dict, output: Any) -> Any:
        if not getattr(pipe, "do_classifier_free_guidance", False):
            return output
        pred = output[0] if isinstance(output, tuple) else output.sample
        sample = args[0] if args else kwargs["sample"]
        timestep = args[1] if len(args) > 1 else kwargs["timestep"]
        if pred.shape[0] % 2 or pred.shape != sample.shape:
            return output
        a, s = _alpha_sigma(pipe.scheduler, timestep, pred)
        pred_uncond, pred_cond = pred.chunk(2)
        x_uncond, x_cond = sample.chunk(2)
        clean_uncond, _ = _to_clean(pred_uncond, x_uncond, kind, a, s)
        clean_cond, slope = _to_clean(pred_cond, x_cond, kind, a, s)
        update = rule(clean_cond, clean_uncond)
        # The pipeline computes u' + w·(c − u') = c + (w − 1)·(c − u'); this u' makes
        # that the prediction whose clean estimate is c + (w − 1)·update.
        rewritten = pred_cond - slope * update
        new = torch.cat([rewritten.to(pred.dtype), pred_cond])
        if isinstance(output, tuple):
            return (new, *output[1:])
        output.sample = new
        return output

    handle = pipe.unet.register_forward_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()
