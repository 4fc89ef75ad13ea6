"""What every `damp` command shares: the device check, the output rule and the results line."""

from __future__ import annotations

from pathlib import Path


def split_csv(text: str) -> list[str]:
    """``'a, b,,c'`` -> ``['a', 'b', 'c']``."""
    return [t.strip() for t in text.split(",") if t.strip()]


def check_device(name: str, what: str) -> None:
    """A one-line error for a device this machine does not have (torch would raise with a traceback)."""
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"{what}: {name!r} is not a device (cpu or cuda)") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"{what}: {name!r} is not supported (cpu or cuda)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{what}: {name} requested but no CUDA device is available")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"{what}: {name} requested but only {torch.cuda.device_count()} CUDA devices exist")


def results_line(results: dict) -> str:
    """One line of headline numbers; parts missing from ``results`` are left out."""
    clean, summary = results.get("clean") or {}, results.get("summary") or {}
    parts = [f"clean error {clean['error']:.2f}%" if "error" in clean else "clean error missing"]
    parts += [f"nll {clean['nll']:.3f}"] if "nll" in clean else []
    parts += [f"ece {clean['ece']:.2f}%"] if "ece" in clean else []
    if "mean_corruption_error" in summary:
        parts.append(f"mean corruption error {summary['mean_corruption_error']:.2f}%")
    parts += [f"{key} {summary[key]:.2f}%" for key in ("mean_error_15x5", "mCE_alexnet", "mCE_alexnet_robustbench_5k")
              if key in summary]
    parts += [f"FGSM({row['eps']:.4g}) {row['error']:.2f}%" for row in results.get("fgsm") or []
              if "eps" in row and "error" in row]
    return "  ".join(parts)


def refuse_existing(out: Path, overwrite: bool) -> None:
    """The one rule for every output a command writes: never replace a file or a non-empty folder
    unless --overwrite says so."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty; pass --overwrite or choose another --out")


def write_output(out: Path, text: str) -> None:
    """Write a command's JSON output atomically; an OSError names the file."""
    from damp.checkpoint import write_text

    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, text)
