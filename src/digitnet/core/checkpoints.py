"""Checkpoint files: written atomically, read back as weights and plain values only (never code), checked before use;
and what a model argument names: a checkpoint, a task=final run dir, or a CV run dir (the ensemble of its folds)."""

from __future__ import annotations

import json
import math
import pickle
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from digitnet import layout
from digitnet.core.nets import NETS, Ensemble, ScaledNet, with_tta
from digitnet.errors import UserError, first_line, shown
from digitnet.names import TTA, Scaling, names

# Checkpoints written before a key existed meant these.
OLDER_HPARAMS = {"scaling": "normalize", "tta": "none", "pixel_mean": 0.0, "pixel_std": 1.0}


def checkpoint_dict(net: nn.Module, hparams: dict) -> dict:
    """A trained net in final.ckpt's format: {"state_dict": {"net.<name>": tensor}, "hyper_parameters": plain
    values}, so that it loads with torch.load(weights_only=True)."""
    state = {f"net.{k}": v.detach().cpu().clone() for k, v in net.state_dict().items()}
    return {"state_dict": state, "hyper_parameters": dict(hparams)}


def save_checkpoint(path: Path, checkpoint: dict) -> None:
    """Written to a temp file and renamed: a reader never sees half a checkpoint."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        torch.save(checkpoint, tmp)
        tmp.replace(path)
    except BaseException:  # Ctrl-C in the middle of the write included: no half file left behind
        tmp.unlink(missing_ok=True)
        raise


def _damaged(path: Path, what: str) -> UserError:
    return UserError(
        f"{shown(path)}: {what}; the file is damaged or not digitnet's (copy it again, or retrain)", path=path
    )


def _read(path: Path) -> dict:
    if not path.is_file():
        what = "not a regular file" if path.exists() else "no such file"
        raise UserError(
            f"{shown(path)}: {what}; pass a checkpoint (.ckpt), a task=final run dir or a CV run dir", path=path
        )
    with open(path, "rb") as f:
        magic = f.read(4)
    try:
        with warnings.catch_warnings():  # torch warns of old pickle protocols; the refusal below says it
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's own text would advise loading it unsafely
        raise _damaged(path, "refused: it holds objects other than weights and plain values") from None
    except Exception as exc:  # noqa: BLE001 - zip and format errors of every kind
        kind = (
            "a damaged or truncated checkpoint"
            if magic[:2] == b"PK" and not zipfile.is_zipfile(path)
            else "not a PyTorch checkpoint"
        )
        raise _damaged(path, f"{kind} ({type(exc).__name__})") from None
    if (
        not isinstance(ckpt, dict)
        or not isinstance(ckpt.get("hyper_parameters"), dict)
        or not all(isinstance(k, str) for k in ckpt["hyper_parameters"])
        or "state_dict" not in ckpt
    ):
        raise _damaged(path, "no state_dict and hyper_parameters with names as keys")
    return ckpt


def _finite(value) -> bool:
    try:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))
    except OverflowError:
        return False


def _check_contents(path: Path, hp: dict, state) -> None:
    """What a net is rebuilt from: a known arch, finite pixel statistics, known names, real finite weights."""
    if not isinstance(hp.get("arch"), str) or hp["arch"] not in NETS:
        raise _damaged(path, f"hyper_parameters arch={repr(hp.get('arch'))[:40]} is not one of {', '.join(NETS)}")
    for key in ("pixel_mean", "pixel_std"):
        if not _finite(hp.get(key, 0.0)) or (key == "pixel_std" and not float(hp.get(key, 1.0)) > 0):
            raise _damaged(
                path,
                f"hyper_parameters {key}={repr(hp[key])[:40]} is not a finite number"
                + (" > 0" if key == "pixel_std" else ""),
            )
    for key, known in (("scaling", names(Scaling)), ("tta", names(TTA))):
        if hp.get(key, OLDER_HPARAMS[key]) not in known:
            raise _damaged(path, f"hyper_parameters {key}={repr(hp[key])[:40]} is not one of {', '.join(known)}")
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise _damaged(path, "state_dict must map names to tensors")
    for key, value in state.items():
        counter = key.endswith("num_batches_tracked")  # BatchNorm's step count, the one integer tensor
        if (
            value.layout != torch.strided
            or value.is_meta
            or value.is_complex()
            or not (counter or value.is_floating_point())
        ):
            raise _damaged(
                path,
                f"weight {key} is a {value.dtype} {value.layout} tensor"
                f"{' on the meta device' if value.is_meta else ''}, not real numbers",
            )
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise _damaged(path, f"weights hold NaN or infinite values ({key}): the model diverged")


def load_checkpoint(path: str | Path) -> ScaledNet:
    """The net and its pixel scaling, rebuilt from the checkpoint's own hparams, in eval mode."""
    path = Path(path)
    ckpt = _read(path)
    hp, state = ckpt["hyper_parameters"], ckpt["state_dict"]
    _check_contents(path, hp, state)
    # Only the keys a net needs, as plain values: a stray key (say, "self") never reaches the constructor.
    plain = {k: hp[k] for k in ("scaling", "optimizer", "fold", "tta") if k in hp}
    model = ScaledNet(hp["arch"], float(hp.get("pixel_mean", 0.0)), float(hp.get("pixel_std", 1.0)), **plain)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise _damaged(path, f"its weights do not fit a {hp['arch']} net ({first_line(exc, 160)})") from None
    return model.eval()


def cv_members(run_dir: Path) -> tuple[dict[Path, dict], list[str]]:
    """A CV run dir's ensemble: {folds/fold_K.ckpt: its fold_K.json} for every fold that finished with a net, in fold
    order, and notes on the folds left out (diverged, or not finished). A finished fold without its net, or files of
    folds this run does not have, are refused rather than left out or let in."""
    folds = run_dir / layout.FOLDS
    results = layout.finished_folds(run_dir)  # each read and checked as a fold's result
    members, diverged, n_folds = {}, [], None
    for k, result in results.items():
        n_folds = result["run_key"].get("n_folds")
        if not (isinstance(n_folds, int) and k < n_folds):
            raise layout.damaged(layout.fold_file(run_dir, k), f"fold {k} of {n_folds!r} folds", layout.RETRAIN_FOLD)
        if result["status"] == "diverged":
            diverged.append(k)
        elif not layout.fold_checkpoint(run_dir, k).is_file():
            raise UserError(
                f"{shown(run_dir)}: fold {k} finished (fold_{k}.json) but folds/fold_{k}.ckpt is missing; restore "
                f"it, or delete fold_{k}.json and rerun to retrain it",
                path=layout.fold_checkpoint(run_dir, k),
            )
        else:
            members[layout.fold_checkpoint(run_dir, k)] = result
    if len({json.dumps(r["run_key"], sort_keys=True) for r in members.values()}) > 1:
        raise UserError(
            f"{shown(folds)} holds folds of different configs (their run_key differs); keep one run's "
            "folds in a run dir",
            path=folds,
        )
    notes = [f"fold {k} diverged and has no net: left out" for k in diverged]
    missing = [k for k in range(n_folds or 0) if k not in results]
    if missing:
        notes.append(
            f"{shown(run_dir)} has {len(results)} of its {n_folds} folds finished (not fold "
            f"{', '.join(map(str, missing))}); rerun the run's command to finish the others"
        )
    if results and not members:
        raise UserError(
            f"{shown(run_dir)}: every finished fold diverged, so there is no model to use; rerun with a "
            "lower optimizer.lr",
            path=run_dir,
        )
    return members, notes


def check_member(path: Path, model: ScaledNet, result: dict) -> None:
    """A fold's net must be the one its result describes: architecture, scaling, pixel statistics, fold and tta."""
    key, hp = result["run_key"], model.hparams
    expected = {
        "arch": key.get("model"),
        "scaling": key.get("scaling"),
        "pixel_mean": result.get("pixel_mean"),
        "pixel_std": result.get("pixel_std"),
        "fold": result["fold"] if "fold" in hp else None,
        "tta": key.get("tta", "none"),
    }
    for name, value in expected.items():
        have = hp.get(name, OLDER_HPARAMS.get(name))
        same = (
            math.isclose(float(have), float(value), rel_tol=1e-6, abs_tol=1e-9)
            if isinstance(value, float)
            else have == value
        )
        if value is not None and not same:
            raise UserError(
                f"{shown(path)}: its {name} is {have!r}, but {path.with_suffix('.json').name} says "
                f"{value!r}; it is not the net that fold trained (copied from another run?)",
                path=path,
            )


def model_files(source: str | Path) -> tuple[list[Path], dict[Path, dict], list[str]]:
    """The checkpoints a model argument names, the fold results of those that are CV folds, and notes."""
    path = Path(source)
    if not str(source).strip():  # Path("") is the working dir
        raise UserError("the model path is empty; pass a checkpoint, a task=final run dir or a CV run dir")
    if path.suffix.lower() == ".onnx" and not path.is_dir():  # digitnet.export's: weights no longer to be had
        raise UserError(
            f"{shown(path)} is an ONNX model: this command takes a checkpoint (.ckpt), a task=final run dir or a CV "
            "run dir; ONNX models are for predict and serve",
            path=path,
        )
    if not path.is_dir():
        return [path], {}, []
    if (path / layout.FINAL_CKPT).is_file():
        return [path / layout.FINAL_CKPT], {}, []
    members, notes = cv_members(path)
    if members:
        return list(members), members, notes
    if (path / layout.MULTIRUN).is_file():
        raise UserError(f"{shown(path)} is a sweep dir; pass one of its jobs, {shown(path)}/N", path=path)
    raise UserError(
        f"{shown(path)} holds no final.ckpt and no folds/fold_K.ckpt; pass a checkpoint, a task=final "
        "run dir or a CV run dir",
        path=path,
    )


def load_model(sources: list[str | Path], tta: str | None = None) -> nn.Module:
    """One checkpoint as itself; several (a CV run dir, or several files) as their Ensemble. Each predicts with the
    test-time augmentation its run used (its hparams' tta), or with `tta` where given. A file named twice is refused:
    it would count twice. `model.notes` holds what to tell the user; `model.own_tta` what the checkpoints say."""
    members, names_, seen, notes, own = [], [], {}, [], []
    for source in sources:
        files, results, found_notes = model_files(source)
        notes += found_notes
        for ckpt in files:
            real = ckpt.resolve()
            if real in seen:
                raise UserError(
                    f"{shown(ckpt)} is named twice (also as {shown(seen[real])}); each model counts once", path=ckpt
                )
            seen[real] = ckpt
            model = load_checkpoint(ckpt)
            if ckpt in results:
                check_member(ckpt, model, results[ckpt])
            own.append(model.hparams.get("tta", "none"))
            model.hparams["tta"] = "none"  # the bare net; the wrapper's hparams say what is applied
            members.append(with_tta(model, tta or own[-1]).eval())
            names_.append(str(ckpt))
    if not tta and len(set(own)) > 1:
        notes.append(
            f"these models were trained for different test-time augmentation ({', '.join(sorted(set(own)))});"
            " each predicts with its own; give --tta to use one for all"
        )
    model = members[0] if len(members) == 1 else Ensemble(members, names_).eval()
    model.notes, model.own_tta = notes, "/".join(sorted(set(own)))
    return model
