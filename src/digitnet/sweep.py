"""Sweep summaries: one row per job, a box plot, and a paired test of every job against the best one.

Written when a Hydra multirun ends (SweepSummaryCallback), or on demand by `python -m digitnet.summarize DIR`,
which also reads sweeps that are unfinished or were interrupted.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import yaml
from hydra.experimental.callback import Callback

from digitnet.errors import (UserError, composition_error_line, config_folders, misconfigured_group_file, shown,
                             undecodable_yaml)
from digitnet.files import enclosing_run, run_file_in
from digitnet.folds import _finite_fraction, fold_problem
from digitnet.rundir import saved_overrides
from digitnet.stats import TEST_NAME, corrected_resampled_ttest


def _job_dirs(sweep_dir: Path) -> list[Path]:
    jobs = [p.parent.parent for p in sweep_dir.glob("*/.hydra/overrides.yaml")]
    for folder in sorted(sweep_dir.iterdir()):
        if folder.is_dir() and folder not in jobs and run_file_in(folder, sweeps=False):
            # a job that ran, whose overrides are gone: left out, the table would name another job the best
            raise UserError(f"{folder / '.hydra' / 'overrides.yaml'} is missing, so which job {folder} ran is unknown; "
                            "rerun the sweep's own command (it writes it again), or move that folder out of the sweep "
                            "dir")
    return sorted(jobs, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is damaged or unreadable ({str(exc).splitlines()[0][:80]}); delete it (a fold file "
                        "retrains on the next run of that job) or rerun the job") from None


def _damaged(path: Path, what: str):
    return UserError(f"{path} is damaged ({what}); delete it (a fold file retrains on the next run of that job) or "
                     "rerun the job")


def _damaged_overrides(path: Path, what: str):
    return UserError(f"{path} is damaged ({what}); rerun the sweep's own command (it writes it again)")


def _check_summary(path: Path, s, plan) -> None:
    """cv_summary.json as the table needs it: accuracies in [0, 1] (or none), one per fold, folds that read right."""

    if not isinstance(s, dict) or not isinstance(s.get("folds"), list) or not isinstance(s.get("fold_scores"), list):
        raise _damaged(path, "not a CV summary")
    n_folds = plan["n_folds"] if plan else len(s["folds"])
    if len(s["fold_scores"]) != n_folds or len(s["folds"]) != n_folds:
        raise _damaged(path, f"{len(s['fold_scores'])} fold scores for {n_folds} folds")
    for key in ("mean", "std"):
        if s.get(key) is not None and not _finite_fraction(s[key]):
            raise _damaged(path, f"{key} {s[key]!r} is not an accuracy in [0, 1]")
    for k, (score, fold) in enumerate(zip(s["fold_scores"], s["folds"])):
        problem = fold_problem(fold, k) or (None if score is None or _finite_fraction(score) else f"score {score!r}")
        if problem:
            raise _damaged(path, f"fold {k}: {problem}")
    if not isinstance(s.get("status"), str):
        raise _damaged(path, "no status")


def read_job(job_dir: Path) -> dict:
    path = job_dir / ".hydra" / "overrides.yaml"
    try:
        overrides = yaml.safe_load(path.read_text()) or []
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise _damaged_overrides(path, str(exc).splitlines()[0][:80]) from None
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise _damaged_overrides(path, "not a list of overrides")
    overrides = [o for o in overrides if not o.startswith("hydra.")]
    job = {"job": job_dir.name, "dir": str(job_dir), "override_list": overrides}
    plan_path = job_dir / "plan.json"  # what ran; a job that failed its checks has none
    plan = _read_json(plan_path) if plan_path.is_file() else None
    if plan is not None and not (isinstance(plan, dict) and all(
            isinstance(plan.get(k), int) and not isinstance(plan.get(k), bool) for k in ("n_folds", "limit", "cv_seed"))):
        raise _damaged(plan_path, "not a run plan")
    summary_path = job_dir / "cv_summary.json"
    if summary_path.is_file():
        s = _read_json(summary_path)
        _check_summary(summary_path, s, plan)
        folds = s["folds"]
        status = s["status"]
        if status == "ok" and s.get("n_at_chance"):
            status = f"ok, {s['n_at_chance']} at chance"
        job.update(status=status, mean=s["mean"], std=s["std"], n=s["n"], fold_scores=s["fold_scores"],
                   train_seconds=s["train_seconds"], wall_seconds=s["wall_seconds"], n_folds=len(folds),
                   resumed_folds=s.get("resumed_folds", 0))
    else:
        paths = sorted((job_dir / "folds").glob("fold_*.json"))
        folds = [_read_json(p) for p in paths]
        n_folds = plan["n_folds"] if plan else len(folds)
        for p, f in zip(paths, folds):
            problem = fold_problem(f, f.get("fold") if isinstance(f, dict) else -1)
            if problem:
                raise _damaged(p, problem)
            if not isinstance(f["fold"], int) or p.name != f"fold_{f['fold']}.json" or not 0 <= f["fold"] < n_folds:
                # a copied or misnamed file: fold 1's row would show fold 0's score
                raise _damaged(p, f"it holds the result of fold {f['fold']!r}, and this job has folds 0-{n_folds - 1}")
        by_fold = {f["fold"]: f for f in folds}
        job.update(
            status=f"incomplete ({len(folds)}/{n_folds} folds)" if folds else "not started or failed",
            mean=None, std=None, n=sum(f["status"] == "ok" for f in folds), n_folds=n_folds,
            fold_scores=[by_fold[i]["score"] if i in by_fold else None for i in range(n_folds)],
            train_seconds=round(sum(f["seconds"] for f in folds), 2) if folds else None, wall_seconds=None,
            resumed_folds=None,
        )
        if any(f["status"] == "diverged" for f in folds):
            job["status"] = "diverged"
    # What the paired test needs: the fold plan must be the same for both jobs.
    job["ratio"] = (folds[0]["n_val"] / folds[0]["n_train"]) if folds else None
    job["fold_plan"] = (plan["limit"], plan["n_folds"], plan["cv_seed"]) if plan else None
    return job


def compare_to_best(jobs: list[dict]) -> dict | None:
    for j in jobs:
        j.update(delta_vs_best=None, t=None, p_value=None)
    ok = [j for j in jobs if j["status"].startswith("ok") and j["mean"] is not None]
    if not ok:
        return None
    best = max(ok, key=lambda j: j["mean"])
    for j in jobs:
        if j is best or j not in ok:
            continue
        j["delta_vs_best"] = j["mean"] - best["mean"]
        if j["fold_plan"] != best["fold_plan"]:
            j["p_value"] = "n/a: other folds"
            continue
        t, p = corrected_resampled_ttest(best["fold_scores"], j["fold_scores"], best["ratio"])
        j["t"], j["p_value"] = t, p
    return best


def _pct(x, digits=3):
    return "" if x is None else f"{100 * x:.{digits}f}"


def _seconds(x):
    return "" if x is None else str(round(x))


def _wall(job):
    """The last run's wall time; folds it resumed from earlier runs are not in it, so say how many."""
    wall = _seconds(job["wall_seconds"])
    return f"{wall} ({job['resumed_folds']} resumed)" if wall and job.get("resumed_folds") else wall


def _signed_pct(x):
    return "" if x is None else f"{100 * x:+.3f}"


def _fmt_p(p):
    if p is None:
        return ""
    if isinstance(p, str):
        return p
    return "nan" if math.isnan(p) else f"{p:.3g}"


def _cell(text) -> str:
    """Text as one markdown table cell: a newline or a | in a job dir's name or an override would break the row."""
    return shown(text).replace("|", "\\|")


SUMMARY_FILES = ("sweep_summary.csv", "sweep_summary.md", "sweep_boxplot.png")


def check_summary_writable(sweep_dir: Path) -> None:
    """All of a sweep's summary files are written, or none: a folder, a link or an unwritable file in the place of
    one is refused first."""

    for name in SUMMARY_FILES:
        path = sweep_dir / name
        if path.is_symlink():  # writing through it would change a file outside the sweep dir
            raise UserError(f"{shown(path)} is a symbolic link, so the sweep's summary cannot be written; move it "
                            "away")
        if path.exists() and not path.is_file():
            raise UserError(f"{shown(path)} is not a file, so the sweep's summary cannot be written; move it away")
        if path.exists():
            try:
                open(path, "ab").close()  # may it be written? (appends nothing; also root meets chattr +i here)
            except OSError as exc:
                raise UserError(f"{shown(path)} cannot be written ({exc.strerror}), so the sweep's summary cannot "
                                "be; make it writable or move it away") from None


def summarize(sweep_dir: str | Path, quiet: bool = False) -> dict:
    """Write sweep_summary.csv/.md and sweep_boxplot.png into sweep_dir; return {'jobs': [...], 'best': ...}.

    "train s" sums the training seconds of a job's folds, also those finished by an earlier run that this one
    resumed; "wall s" is the last run's start-to-report time (small for a resumed job, empty for an unfinished one).
    """
    from digitnet import report  # matplotlib and torch: not at import, since Hydra loads this module for every run

    sweep_dir = Path(sweep_dir)
    check_summary_writable(sweep_dir)
    jobs = [read_job(d) for d in _job_dirs(sweep_dir)]
    # Show what varies per job; what every job shares is said once, above the table.
    common = set.intersection(*(set(j["override_list"]) for j in jobs)) if len(jobs) > 1 else set()
    for j in jobs:
        j["overrides"] = " ".join(o for o in j["override_list"] if o not in common) or "(defaults)"
    best = compare_to_best(jobs)
    k = max((j["n_folds"] for j in jobs), default=0)
    header = ["job", "overrides", "status", "mean", "std", "n", *[f"fold_{i}" for i in range(k)],
              "train_seconds", "wall_seconds", "resumed_folds", "delta_vs_best", "t", "p_value", "test"]
    with open(sweep_dir / "sweep_summary.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for j in jobs:
            scores = (j["fold_scores"] + [None] * k)[:k]
            writer.writerow([j["job"], j["overrides"], j["status"], j["mean"], j["std"], j["n"], *scores,
                             j["train_seconds"], j["wall_seconds"], j["resumed_folds"], j["delta_vs_best"], j["t"], j["p_value"],
                             TEST_NAME if isinstance(j["t"], float) else ""])
    lines = [
        f"# Sweep summary: {sweep_dir}",
        "",
        f"Accuracy in % on the validation folds. p: {TEST_NAME}, each job against the best (**bold**).",
        "",
        f"Overrides shared by every job: {' '.join(sorted(common)) or '(none)'}",
        "",
        "| job | overrides | status | mean | std | folds | train s | wall s (last run) | Δ vs best | p |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for j in jobs:
        mark = "**" if j is best else ""
        folds = " ".join(_pct(s, 2) if s is not None else "–" for s in j["fold_scores"])
        lines.append(
            f"| {_cell(j['job'])} | {mark}{_cell(j['overrides'])}{mark} | {j['status']} | {_pct(j['mean'])} | {_pct(j['std'])} "
            f"| {folds} | {_seconds(j['train_seconds'])} | {_wall(j)} "
            f"| {_signed_pct(j['delta_vs_best'])} | {_fmt_p(j['p_value'])} |"
        )
    if best:
        lines += ["", f"Best: job {best['job']} ({best['overrides']}), mean {_pct(best['mean'])} std {_pct(best['std'])}."]
    (sweep_dir / "sweep_summary.md").write_text("\n".join(lines) + "\n")
    groups = {f"{j['job']}: {j['overrides']}"[:40]: [s for s in j["fold_scores"] if s is not None] for j in jobs}
    report.save(report.boxplot_figure(groups or {"(none)": []}, "sweep: fold accuracies per job"), sweep_dir / "sweep_boxplot.png")
    if not quiet:
        print("\n".join(lines[4:-2] if best else lines[4:]))
        if best:
            print(f"Best job: {best['job']} ({best['overrides']}) mean={_pct(best['mean'])} std={_pct(best['std'])}")
        else:
            print("No job finished all its folds.")
        print(f"Sweep summary: {sweep_dir / 'sweep_summary.md'}")
    return {"jobs": jobs, "best": best}


def sweep_jobs(overrides: list[str], config_loader) -> list[list[str]]:
    """The jobs Hydra's basic sweeper makes of `overrides` (a list of override lists, in its order). A sweep that
    the basic sweeper cannot run, or that makes no job, is a UserError naming the override."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create(config_loader=config_loader).parse_overrides(overrides)
    for override in parsed:
        if override.is_sweep_override() and not override.is_discrete_sweep():
            raise UserError(f"{override.input_line}: the basic sweeper runs lists, range() and glob(), not "
                            f"{override.value_type.name.split('_')[0].lower()}(); list the values "
                            "(e.g. optimizer.lr=0.1,0.01,0.001) or install a sweeper plugin such as Optuna")
        if not override.is_sweep_override():
            continue
        try:
            values = list(override.sweep_string_iterator())
        except ValueError as exc:  # e.g. range(1,3,0)
            raise UserError(f"{override.input_line}: {exc}") from None
        choices = config_loader.get_group_options(override.key_or_group) if override.package is None else []
        listed = f"; {override.key_or_group}'s choices: {', '.join(choices)}" if choices else ""
        if not values:
            raise UserError(f"{override.input_line} gives no value to sweep{listed}")
        strange = [v for v in values if choices and v not in choices]
        if strange:
            raise UserError(f"{override.input_line} gives {strange[0]}, which is not one of {override.key_or_group}'s "
                            f"choices ({', '.join(choices)})")
    (jobs,) = BasicSweeper.split_arguments(parsed, None)
    return jobs


def _refuse(message: str) -> None:
    print(f"digitnet.train: error: {message}", file=sys.stderr)
    raise SystemExit(1)


def _job_dir(sweep_dir: Path, overrides: list[str], number: int, subdir: str) -> Path | None:
    """Where job `number` will run: hydra.sweep.subdir resolved as the launcher resolves it (job.num set, and
    job.override_dirname, which composing sets). None where it cannot be worked out before the job starts."""
    from hydra import compose
    from omegaconf import OmegaConf, open_dict

    try:
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.job.num = number
        return (sweep_dir / str(OmegaConf.select(cfg, "hydra.sweep.subdir"))).resolve()
    except Exception as exc:  # noqa: BLE001 - a resolver that needs the running job (${hydra:...}): Hydra's then
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "HydraConfig was not set" in first:
            return None
        raise UserError(f"hydra.sweep.subdir={subdir} cannot be resolved ({first})") from None


class SweepSummaryCallback(Callback):
    """Hydra callback: a sweep dir holds one sweep (checked before Hydra writes into it); summarised at its end."""

    # Hydra turns a callback's exceptions into warnings and goes on; SystemExit is what stops the sweep.
    def on_multirun_start(self, config, **kwargs) -> None:
        try:
            self._refuse_another_sweep(config)
            self._check_launcher(config)
            self._check_every_job(config)
            from omegaconf import OmegaConf

            typed = OmegaConf.to_container(config.hydra.overrides.hydra, resolve=False)
            if any(o.lstrip("+").startswith("hydra.run.dir=") for o in typed):
                print(f"note: hydra.run.dir is for single runs; this sweep's jobs go under hydra.sweep.dir="
                      f"{config.hydra.sweep.dir}", flush=True)
        except Exception as exc:  # noqa: BLE001 - a check that breaks must not let the sweep run unchecked
            _refuse(f"the sweep's jobs could not be checked ({type(exc).__name__}: {exc}); nothing was run")

    @staticmethod
    def _check_launcher(config) -> None:
        """What the launcher plugins would only find after Hydra has written multirun.yaml, with a traceback."""
        import shutil

        launcher = config.hydra.launcher
        target = str(launcher.get("_target_", ""))
        if target.endswith("JoblibLauncher"):
            SweepSummaryCallback._check_joblib(launcher)
        if target.endswith(".SlurmLauncher") and shutil.which("srun") is None:
            _refuse("hydra/launcher=submitit_slurm needs SLURM, and this machine has no srun; run the sweep on the "
                    "cluster's login node, or leave the launcher out to run the jobs here")

    @staticmethod
    def _check_joblib(launcher) -> None:
        """The joblib launcher's options, checked by joblib's own Parallel before any job: its ValueError would come
        after multirun.yaml, with a traceback."""
        from omegaconf import OmegaConf

        import dataclasses

        from hydra_plugins.hydra_joblib_launcher.config import JobLibLauncherConf

        options = {k: v for k, v in OmegaConf.to_container(launcher, resolve=True).items() if k != "_target_"}
        known = [f.name for f in dataclasses.fields(JobLibLauncherConf) if f.name != "_target_"]
        for key in options:
            if key not in known:  # Hydra and joblib pass it on silently, and nothing reads it
                _refuse(f"hydra.launcher.{key} is not an option of the joblib launcher (those are {', '.join(known)}); "
                        "remove it")
        backend = options.pop("backend", None)
        if backend not in (None, "loky"):
            _refuse(f"hydra.launcher.backend={backend}: Hydra's joblib launcher always runs loky (its own processes) "
                    "and would ignore it; leave hydra.launcher.backend out")
        if options.get("n_jobs") == 0:
            _refuse("hydra.launcher.n_jobs=0 runs no job; give a number of parallel jobs (1, 2, ...) or -1 for one per "
                    "core")
        for key in ("n_jobs", "verbose"):
            value = options.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                _refuse(f"hydra.launcher.{key}={value} is not a whole number; e.g. hydra.launcher.{key}="
                        f"{2 if key == 'n_jobs' else 0}")
        timeout = options.get("timeout")
        if timeout is not None:  # joblib raises TimeoutError in the launcher: a traceback, and the sweep ends there
            _refuse(f"hydra.launcher.timeout={timeout}: a job that ran past it would stop the whole sweep with a "
                    "traceback; leave it null (each job runs to its end), and make jobs shorter with "
                    "trainer.max_epochs or data.limit")
        import joblib
        from joblib._utils import eval_expr  # how Parallel reads pre_dispatch, once the jobs are already starting

        try:
            if isinstance(options.get("pre_dispatch"), str):
                eval_expr(options["pre_dispatch"].replace("n_jobs", "2"))
            joblib.Parallel(backend="loky", **options)
        except (TypeError, ValueError) as exc:
            _refuse(f"hydra.launcher: {str(exc).splitlines()[0]} (joblib.Parallel's options); fix that value")

    @staticmethod
    def _check_every_job(config) -> None:
        """Every job's config checked before the first one trains: a bad value in job 5 is not found after 4 jobs.
        (The plan's cheap checks and the optimizer's: fractions of a second a job.) The jobs are expanded as the
        basic sweeper expands them, glob() over a group's choices included; a job dir left by an earlier run must
        hold the same job."""
        from hydra import compose
        from hydra.core.global_hydra import GlobalHydra
        from omegaconf import OmegaConf

        from digitnet.plan import make_plan

        if config.hydra.sweeper.get("_target_") != "hydra._internal.core_plugins.basic_sweeper.BasicSweeper":
            return  # another sweeper plugin (Optuna, Ax...) makes its own jobs: each is checked as it starts
        try:
            jobs = sweep_jobs(list(config.hydra.overrides.task), GlobalHydra.instance().config_loader())
        except UserError as exc:
            _refuse(f"{exc}; nothing was run")
        except Exception as exc:  # noqa: BLE001 - Hydra's parse errors and the sweep functions' own (range step 0)
            _refuse(f"{composition_error_line(exc)}; nothing was run")
        subdir = OmegaConf.to_container(config.hydra.sweep, resolve=False).get("subdir")
        if len(jobs) > 1 and "${" not in str(subdir or "") and str(subdir or "").strip("./"):
            _refuse(f"hydra.sweep.subdir={subdir or ''} puts every job in the same folder; leave it out (each job "
                    "gets ${hydra.job.num}) or include ${hydra.job.num}")
        sweep_dir = Path(config.hydra.sweep.dir)
        trains: dict[str, int] = {}  # a job's whole plan (also runner and workers: a speed sweep) -> its first job
        places: dict[Path, int] = {}  # a job's folder -> its job
        hydra_overrides = OmegaConf.to_container(config.hydra.overrides.hydra, resolve=False)  # as typed: ${...} too
        for number, overrides in enumerate(jobs):
            try:
                place = (_job_dir(sweep_dir, [*hydra_overrides, *overrides], number, subdir)
                         if subdir != "${hydra.job.num}" else None)
            except UserError as exc:
                _refuse(f"{exc}; nothing was run")
            if place is not None and (place == sweep_dir.resolve() or sweep_dir.resolve() not in place.parents):
                _refuse(f"hydra.sweep.subdir={subdir} puts job {number} at {place}, not in a folder of its own inside "
                        f"the sweep dir; use a subdir such as ${{hydra.job.num}}; nothing was run")
            if place is not None:
                other = next((k for p, k in places.items() if p == place or p in place.parents or place in p.parents),
                             None)
                if other is not None:
                    _refuse(f"hydra.sweep.subdir={subdir} puts jobs {other} and {number} in the same folder or one "
                            f"inside the other ({place}); include ${{hydra.job.num}} in it; nothing was run")
                places[place] = number
            saved = sweep_dir / str(number) / ".hydra" / "overrides.yaml"
            if subdir == "${hydra.job.num}" and saved.is_file():
                before = saved_overrides(saved)
                if before is not None and before != overrides:
                    _refuse(f"{saved.parent.parent} holds the job `{' '.join(before)}`, not `{' '.join(overrides)}`; "
                            "rerun the sweep's own command to resume it, or choose a new hydra.sweep.dir")
            try:
                plan = make_plan(compose(config_name="config", overrides=overrides))
            except Exception as exc:  # noqa: BLE001 - the plan's refusal, or Hydra's: this job's config cannot be built
                choices = {**config.hydra.runtime.choices, **dict(o.partition("=")[::2] for o in overrides)}
                line = (misconfigured_group_file(choices, config_folders(config.hydra))
                        or isinstance(exc, UnicodeDecodeError) and undecodable_yaml(config_folders(config.hydra))
                        or (str(exc) if isinstance(exc, UserError) else composition_error_line(exc)))
                _refuse(f"sweep job {number} ({' '.join(overrides)}): {line}; nothing was run")
            same = trains.setdefault(json.dumps(plan.as_dict(), sort_keys=True, default=str), number)
            if same != number:  # -m seed=1,1 or optimizer.lr=0.01,1e-2: the same training twice
                _refuse(f"sweep jobs {same} ({' '.join(jobs[same])}) and {number} ({' '.join(overrides)}) are the same "
                        "run; give each value once; nothing was run")

    @staticmethod
    def _refuse_another_sweep(config) -> None:
        from omegaconf import OmegaConf

        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            check_summary_writable(sweep_dir)
        except UserError as exc:
            _refuse(f"{exc}; nothing was run")
        ran_here = run_file_in(sweep_dir, sweeps=False)
        if ran_here:
            _refuse(f"{sweep_dir} is the run dir of a single run (it holds {ran_here}); choose a new hydra.sweep.dir")
        outer = enclosing_run(sweep_dir)
        if outer is not None:  # found here, before Hydra writes multirun.yaml into it
            _refuse(f"{sweep_dir} is inside the run dir {outer}; choose a hydra.sweep.dir outside it")
        saved = sweep_dir / "multirun.yaml"
        if not saved.is_file():
            return
        try:
            before_cfg = OmegaConf.load(saved)
            before = [str(o) for o in before_cfg.hydra.overrides.task]
            before_subdir = OmegaConf.to_container(before_cfg.hydra.sweep, resolve=False).get("subdir")
        except Exception as exc:  # noqa: BLE001 - any damage: Hydra would overwrite it with this command's sweep
            _refuse(f"{saved} is damaged ({str(exc).splitlines()[0][:80]}); delete it (the job dirs still say which "
                    "sweep this is) or choose a new hydra.sweep.dir")
        now = list(config.hydra.overrides.task)
        if before != now:
            _refuse(f"{sweep_dir} holds the sweep `{' '.join(before)}`, not `{' '.join(now)}`; rerun it with the same "
                    "overrides to resume it, or choose a new hydra.sweep.dir")
        subdir = OmegaConf.to_container(config.hydra.sweep, resolve=False).get("subdir")
        if before_subdir != subdir:
            _refuse(f"{sweep_dir} holds a sweep with hydra.sweep.subdir={before_subdir}, not {subdir}; rerun it with "
                    "the same hydra.sweep.subdir, or choose a new hydra.sweep.dir")

    def on_multirun_end(self, config, **kwargs) -> None:
        try:
            summarize(config.hydra.sweep.dir)
        except UserError as exc:
            _refuse(f"{exc} (the jobs' results are kept in their dirs)")
        except Exception as exc:  # noqa: BLE001 - Hydra would make it a warning and exit 0
            _refuse(f"the sweep's summary could not be written ({type(exc).__name__}: {exc}); the jobs' results are "
                    "kept in their dirs: python -m digitnet.summarize SWEEP_DIR writes it")
