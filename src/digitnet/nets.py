"""The tutorial's three nets, digitnet's deepbn and vgg, their initialisation, and loading a checkpoint for inference.

Kept free of Lightning so that `digitnet.predict` starts fast; the LightningModule lives in models.py.
"""

from __future__ import annotations

import json
import math
import pickle
import re
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from digitnet.errors import UserError


def _conv(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3), nn.ReLU()]


def _head(n_in: int, batchnorm: bool = False, width: int = 100) -> list[nn.Module]:
    return [nn.Flatten(), nn.Linear(n_in, width), nn.ReLU(), *([nn.BatchNorm1d(width)] if batchnorm else []),
            nn.Linear(width, 10)]


def baseline() -> nn.Sequential:
    return nn.Sequential(*_conv(1, 32), nn.MaxPool2d(2), *_head(32 * 13 * 13))


def batchnorm() -> nn.Sequential:
    # BatchNorm after each activation, as in the tutorial.
    return nn.Sequential(*_conv(1, 32), nn.BatchNorm2d(32), nn.MaxPool2d(2), *_head(32 * 13 * 13, batchnorm=True))


def deep() -> nn.Sequential:
    return nn.Sequential(
        *_conv(1, 32), nn.MaxPool2d(2), *_conv(32, 64), *_conv(64, 64), nn.MaxPool2d(2), *_head(64 * 4 * 4)
    )


def deepbn(dropout: float = 0.0) -> nn.Sequential:
    # deep plus BatchNorm after every hidden activation, dropout before both dense layers and a Dense128 head
    # (188,810 parameters; 5.5M multiply-adds an image, as deep: BatchNorm and dropout are what cost extra).
    # The Dropout modules are there at p=0 too, so that a checkpoint's weight names do not depend on the rate.
    return nn.Sequential(
        *_conv(1, 32), nn.BatchNorm2d(32), nn.MaxPool2d(2),
        *_conv(32, 64), nn.BatchNorm2d(64), *_conv(64, 64), nn.BatchNorm2d(64), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(dropout), nn.Linear(64 * 4 * 4, 128), nn.ReLU(), nn.BatchNorm1d(128),
        nn.Dropout(dropout), nn.Linear(128, 10),
    )


def vgg() -> nn.Sequential:
    # VGG-style: two blocks of two 3x3 convs (32, 32 | 64, 64), BatchNorm after every hidden activation, a Dense128
    # head (198,122 parameters). The extra full-resolution conv makes it 9.8M multiply-adds an image against deep's
    # 5.5M: 33 s an epoch of 60k on this project's 2 CPU cores against 22 s (bare train steps, batch 32 or 128).
    return nn.Sequential(
        *_conv(1, 32), nn.BatchNorm2d(32), *_conv(32, 32), nn.BatchNorm2d(32), nn.MaxPool2d(2),
        *_conv(32, 64), nn.BatchNorm2d(64), *_conv(64, 64), nn.BatchNorm2d(64), nn.MaxPool2d(2),
        *_head(64 * 4 * 4, batchnorm=True, width=128),
    )


NETS = {"baseline": baseline, "batchnorm": batchnorm, "deep": deep, "deepbn": deepbn, "vgg": vgg}
DROPOUT_NETS = ("deepbn",)  # the nets that take model.dropout
BATCHNORM_NETS = ("batchnorm", "deepbn", "vgg")  # these need 2 or more images a training batch
SCALINGS = ("normalize", "center", "standardize")  # plan.SCALINGS (kept out of this light module), checked equal
TTAS = ("none", "shift")  # plan.TTAS, checked equal
# tta=shift: the image as it is and moved one pixel up, down, left and right. Chosen on experiment=best's 5-fold CV
# on all 60k (bench/tta_cv.py): 99.613 vs 99.570% without, every fold up; the 8 neighbours of a 3x3 grid gave 99.610
# for 9 forward passes instead of 5.
SHIFTS = ((0, 0), (0, -1), (0, 1), (-1, 0), (1, 0))  # (dy, dx) in pixels


def build_net(name: str, dropout: float = 0.0) -> nn.Sequential:
    if name not in NETS:
        raise UserError(f"unknown model {name!r}; use one of {', '.join(NETS)} (model=deep)")
    if dropout and name not in DROPOUT_NETS:
        raise UserError(f"model.dropout={dropout}: model={name} has no dropout layers; use model=deepbn")
    net = NETS[name](dropout) if name in DROPOUT_NETS else NETS[name]()
    layers = [m for m in net if isinstance(m, (nn.Conv2d, nn.Linear))]
    # Keras defaults of the tutorial: He-uniform hidden layers, Glorot-uniform output layer, zero biases.
    for layer in layers[:-1]:
        nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
    nn.init.xavier_uniform_(layers[-1].weight)
    for layer in layers:
        nn.init.zeros_(layer.bias)
    return net


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


class ScaledNet(nn.Module):
    """A net plus the pixel scaling it was trained with: takes x/255 images (N, 1, 28, 28), returns logits."""

    def __init__(self, arch: str, pixel_mean: float = 0.0, pixel_std: float = 1.0, **plain_hparams):
        super().__init__()
        self.net = build_net(arch)
        self.pixel_mean, self.pixel_std = float(pixel_mean), float(pixel_std)
        self.hparams = {"arch": arch, "pixel_mean": pixel_mean, "pixel_std": pixel_std, **plain_hparams}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.pixel_mean) / self.pixel_std)


def checkpoint_dict(net: nn.Module, hparams: dict) -> dict:
    """A trained net in final.ckpt's format: {"state_dict": {"net.<name>": tensor}, "hyper_parameters": plain
    values}, so that it loads with torch.load(weights_only=True) and load_checkpoint."""
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


def shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """x (N, C, H, W) moved dy pixels down and dx right; what moves in is background (0), nothing wraps around."""
    h, w = x.shape[-2:]
    padded = nn.functional.pad(x, (1, 1, 1, 1))
    return padded[..., 1 - dy : 1 - dy + h, 1 - dx : 1 - dx + w]


class ShiftTTA(nn.Module):
    """Test-time augmentation (tta=shift): a model's softmax probabilities averaged over the image and its four
    one-pixel shifts (SHIFTS), returned as their log, as Ensemble does. Training never sees it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.hparams = {**model.hparams, "tta": "shift"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        views = torch.cat([shifted(x, dy, dx) for dy, dx in SHIFTS])  # one forward pass of 5N images
        probabilities = torch.softmax(self.model(views), dim=1).view(len(SHIFTS), len(x), -1).mean(0)
        return probabilities.clamp_min(1e-30).log()


def with_tta(model: nn.Module, tta: str) -> nn.Module:
    """The model as it predicts under `tta` (TTAS): itself for none."""
    if tta not in TTAS:
        raise UserError(f"unknown tta {tta!r}; use one of {', '.join(TTAS)}")
    return model if tta == "none" else ShiftTTA(model)


class Ensemble(nn.Module):
    """Several checkpoints as one model: the mean of their softmax probabilities, returned as its log, so that a
    softmax of the output gives that mean back (what predict and evaluate apply)."""

    def __init__(self, members: list[nn.Module], names: list[str]):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.names = names
        first = members[0].hparams
        self.hparams = {"arch": f"ensemble of {len(members)} {first['arch']}" if len({m.hparams["arch"] for m in members}) == 1
                        else f"ensemble of {len(members)}", "scaling": first.get("scaling", "normalize"),
                        "tta": "/".join(sorted({m.hparams.get("tta", "none") for m in members}))}

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.softmax(m(x), dim=1) for m in self.members]).mean(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.probabilities(x).clamp_min(1e-30).log()


def model_checkpoints(source: str | Path) -> list[Path]:
    """What a model argument names: a checkpoint file, a task=final run dir (final.ckpt), or a CV run dir (its
    folds/fold_K.ckpt, the ensemble of its folds)."""
    path = Path(source)
    if not path.is_dir():
        return [path]
    if (path / "final.ckpt").is_file():
        return [path / "final.ckpt"]
    folds = cv_members(path)
    if folds:
        return list(folds)
    if (path / "multirun.yaml").is_file():
        raise UserError(f"{path} is a sweep dir; pass one of its jobs, {path}/N")
    raise UserError(f"{path} holds no final.ckpt and no folds/fold_K.ckpt; pass a checkpoint, a task=final run dir "
                    "or a CV run dir")


def _numbered(folder: Path, suffix: str) -> dict[int, Path]:
    return {int(m.group(1)): p for p in folder.glob(f"fold_*{suffix}") if (m := re.fullmatch(rf"fold_(\d+){re.escape(suffix)}", p.name))}


def cv_members(run_dir: Path) -> dict[Path, dict]:
    """A CV run dir's ensemble: {folds/fold_K.ckpt: its fold_K.json} for every fold whose result says it finished,
    in fold order. A finished fold without its net, or files of folds this run does not have, are refused rather
    than silently left out or let in."""
    folds = run_dir / "folds"
    ckpts, results = _numbered(folds, ".ckpt"), _numbered(folds, ".json")
    members = {}
    for k in sorted(results):
        try:
            result = json.loads(results[k].read_text())
            assert isinstance(result, dict)
        except (OSError, ValueError, AssertionError):
            raise UserError(f"{results[k]} is damaged; delete it and rerun the run's command to retrain fold {k}") from None
        n_folds = (result.get("run_key") or {}).get("n_folds") if isinstance(result.get("run_key"), dict) else None
        if result.get("fold", k) != k or (isinstance(n_folds, int) and k >= n_folds):
            raise UserError(f"{results[k]} is not fold {k} of this run (it says fold {result.get('fold')} of "
                            f"{n_folds}); remove the copied file")
        if k not in ckpts:
            raise UserError(f"{run_dir}: fold {k} finished ({results[k].name}) but folds/fold_{k}.ckpt is missing; "
                            f"restore it, or delete {results[k].name} and rerun the run's command to retrain the fold")
        members[ckpts[k]] = result
    keys = {json.dumps(r.get("run_key"), sort_keys=True) for r in members.values()}
    if len(keys) > 1:
        raise UserError(f"{run_dir}/folds holds folds of different configs (their run_key differs); keep one run's "
                        "folds in a run dir")
    return members


def unfinished_note(run_dir: Path, members: dict[Path, dict]) -> str | None:
    """What to tell the user when a CV run dir's ensemble is of some of its folds (an interrupted run)."""
    n_folds = next(((r.get("run_key") or {}).get("n_folds") for r in members.values()), None)
    done = {r.get("fold") for r in members.values()}
    missing = [k for k in range(n_folds) if k not in done] if isinstance(n_folds, int) else []
    if members and missing:
        return (f"{run_dir} has {len(members)} of its {n_folds} folds finished (not fold "
                f"{', '.join(map(str, missing))}): the ensemble is of those {len(members)}; rerun the run's command "
                "to finish the others")
    return None


def _check_member(path: Path, model: nn.Module, result: dict) -> None:
    """A fold's net must be the one its result describes: same architecture, scaling, pixel statistics and tta."""
    hp, key = model.hparams, result.get("run_key") if isinstance(result.get("run_key"), dict) else {}
    expected = {"arch": key.get("model"), "scaling": key.get("scaling"), "pixel_mean": result.get("pixel_mean"),
                "pixel_std": result.get("pixel_std"), "fold": result.get("fold") if "fold" in hp else None,
                "tta": key.get("tta", "none") if key else None}
    for name, value in expected.items():
        if value is None:
            continue
        have = hp.get(name, "none" if name == "tta" else None)  # checkpoints from before tta: none
        same = math.isclose(float(have), float(value), rel_tol=1e-6, abs_tol=1e-9) if isinstance(value, float) \
            else have == value
        if not same:
            raise UserError(f"{path}: its {name} is {have!r}, but {path.with_suffix('.json').name} says {value!r}; "
                            "this is not the net that fold trained (copied from another run?)")


def load_model(sources: list[str | Path], tta: str | None = None) -> nn.Module:
    """One checkpoint as itself; several (a CV run dir, or several files) as their Ensemble. A file named twice
    (say, a run dir and one of its folds) is refused: it would count twice. Each predicts with the test-time
    augmentation it was trained for (its hparams' tta), or with `tta` where given. The model's `notes` hold what the
    caller should tell the user (an ensemble of an unfinished run's folds)."""
    members, names, seen, notes, own = [], [], {}, [], []
    for source in sources:
        if not str(source).strip():  # Path("") is the working dir
            raise UserError("the model path is empty; pass a checkpoint, a task=final run dir or a CV run dir")
        path = Path(source)
        results = cv_members(path) if path.is_dir() and not (path / "final.ckpt").is_file() else {}
        if note := unfinished_note(path, results):
            notes.append(note)
        for ckpt in model_checkpoints(source):
            real = ckpt.resolve()
            if real in seen:
                raise UserError(f"{ckpt} is named twice (also as {seen[real]}); each model counts once in an ensemble")
            seen[real] = ckpt
            model = load_checkpoint(ckpt)
            if ckpt in results:
                _check_member(ckpt, model, results[ckpt])
            own.append(model.hparams.get("tta", "none"))
            model.hparams["tta"] = "none"  # the bare net; the wrapper's hparams say what is applied
            members.append(with_tta(model, tta or own[-1]).eval())
            names.append(str(ckpt))
    if not tta and len(set(own)) > 1:
        notes.append(f"these models were trained for different test-time augmentation ({', '.join(sorted(set(own)))});"
                     " each predicts with its own; give --tta to use one for all")
    model = members[0] if len(members) == 1 else Ensemble(members, names).eval()
    model.notes, model.own_tta = notes, "/".join(sorted(set(own)))  # own_tta: what the checkpoints say
    return model


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> ScaledNet:
    """Rebuild the net and its pixel scaling from a checkpoint's own hparams. Never unpickles code (weights_only)."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise UserError(f"{path}: not a regular file; pass a checkpoint (.ckpt) or a run dir")
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint file; pass the final.ckpt of a task=final run")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic[:2] != b"PK" and magic[:1] != b"\x80":  # torch's zip format, or an old-style pickle
        raise UserError(f"{path}: not a PyTorch checkpoint; pass a digitnet .ckpt")
    try:
        with warnings.catch_warnings():  # torch warns of old pickle protocols in 2 lines; the refusal below says it
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's text says how to load it anyway (unsafe here) in terminal bold; keep only what it found.
        found = re.search(r"Unsupported (?:global: GLOBAL [\w.]+|operand \S+)", str(exc))
        what = f" ({found.group(0).strip()})" if found else ""
        raise UserError(f"{path}: refused, it holds objects other than plain weights and values{what}; digitnet "
                        "checkpoints hold only those") from None
    except Exception as exc:  # noqa: BLE001 - zip/format errors of every kind mean "not a checkpoint"
        if magic[:2] == b"PK" and not zipfile.is_zipfile(path):  # a zip cut short or corrupted: a damaged checkpoint
            raise UserError(f"{path}: a damaged or truncated checkpoint ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:80] if str(exc) else 'unreadable'}); copy it again, or "
                            "retrain it") from None
        raise UserError(f"{path}: not a PyTorch checkpoint ({type(exc).__name__}); pass a digitnet .ckpt") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise UserError(f"{path}: not a digitnet checkpoint (no state_dict and hyper_parameters)")
    hp, state = ckpt["hyper_parameters"], ckpt["state_dict"]
    if not isinstance(hp, dict) or not all(isinstance(k, str) for k in hp):
        raise UserError(f"{path}: hyper_parameters must be a dict with names as keys, found {type(hp).__name__}; "
                        "this file was not written by digitnet")
    arch = hp.get("arch")
    if not isinstance(arch, str) or arch not in NETS:
        raise UserError(f"{path}: checkpoint names unknown architecture {arch!r}; this digitnet knows {', '.join(NETS)}")
    scaling = {}
    for key, default in (("pixel_mean", 0.0), ("pixel_std", 1.0)):
        value = hp.get(key, default)
        try:
            ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(float(value))
        except OverflowError:
            ok = False
        if not ok:
            shown = repr(value) if len(repr(value)) < 40 else repr(value)[:37] + "..."
            raise UserError(f"{path}: hyper_parameters {key}={shown} is not a finite number; the file is damaged")
        scaling[key] = float(value)
    if scaling["pixel_std"] <= 0:
        raise UserError(f"{path}: hyper_parameters pixel_std={hp['pixel_std']} must be > 0; the file is damaged")
    if not isinstance(hp.get("scaling", "normalize"), str):
        raise UserError(f"{path}: hyper_parameters scaling={hp['scaling']!r} is not a name; the file is damaged")
    if hp.get("scaling", "normalize") not in SCALINGS:
        raise UserError(f"{path}: hyper_parameters scaling={hp['scaling'][:40]!r} is unknown (digitnet writes one of "
                        f"{', '.join(SCALINGS)}); the file is damaged")
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise UserError(f"{path}: state_dict must map names to tensors; the file is damaged")
    for key, value in state.items():
        counter = key.endswith("num_batches_tracked")  # BatchNorm's step count, the one integer tensor
        if value.layout != torch.strided or value.is_meta or value.is_complex() or (
                not counter and not value.is_floating_point()):
            raise UserError(f"{path}: weight {key} is a {value.dtype} {value.layout} tensor"
                            f"{' on the meta device' if value.is_meta else ''}, not real numbers; the file is damaged")
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise UserError(f"{path}: weights hold NaN or infinite values ({key}); the model diverged or the file is "
                            "damaged")
    # Only the keys a net needs, as plain values: a stray key (say, "self") cannot reach the constructor.
    if hp.get("tta", "none") not in TTAS:
        raise UserError(f"{path}: hyper_parameters tta={repr(hp['tta'])[:40]} is unknown (digitnet writes one of "
                        f"{', '.join(TTAS)}); the file is damaged")
    plain = {k: hp[k] for k in ("scaling", "optimizer", "fold", "tta") if k in hp}
    model = ScaledNet(arch, scaling["pixel_mean"], scaling["pixel_std"], **plain)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise UserError(f"{path}: weights do not fit a {arch} net ({str(exc).splitlines()[0][:160]})") from None
    return model.eval()
