"""An Optuna search run as a Hydra sweep (hydra/sweeper=digitnet_optuna; presets in conf/hparams_search/).

The sweeper asks Optuna for `n_jobs` trials at a time, launches them as Hydra jobs through the configured launcher,
and tells Optuna each outcome, read from the job's dir as the sweep summary reads it. A trial's job reports its
running CV score to the same study after each fold and stops when the pruner says so (FoldReporter). The study is a
journal file in the sweep dir, which every launcher's jobs can reach; job N is trial N, so a rerun of the command
resumes the study: trials an interruption left running are run again in their dirs (their finished folds kept).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf

from digitnet.engine import interrupts
from digitnet.engine.folds import Pruned
from digitnet.errors import UserError, describe, shown
from digitnet.files import write_json_atomic
from digitnet.logs import say
from digitnet.report.sweep import PRUNED_FILE

JOURNAL = "optuna_journal.log"
RESULTS = "search_results.yaml"
STUDY = "digitnet"
SWEEPER = "hydra_plugins.digitnet_optuna.optuna_sweeper.OptunaSweeper"


def _storage(sweep_dir: Path):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(sweep_dir / JOURNAL)))


def _instantiate(node):
    from hydra.utils import instantiate

    return None if node is None else instantiate(node)


class FoldReporter:
    """A search trial's side of pruning, in its job: the mean of the folds finished so far, reported after each, and
    the pruner asked, until the last fold (a trial that trained every fold has its result)."""

    def __init__(self, trial, n_folds: int):
        self.trial, self.n_folds, self.scores, self.ended = trial, n_folds, [], 0

    def after_fold(self, result: dict) -> None:
        self.ended += 1
        if result["status"] != "ok":
            return  # a diverged fold fails the trial; its folds go on as in any CV run
        self.scores.append(result["score"])
        value = sum(self.scores) / len(self.scores)
        with warnings.catch_warnings():  # a resumed trial reports its finished folds again: Optuna keeps the first
            warnings.simplefilter("ignore")
            self.trial.report(value, step=len(self.scores) - 1)
        if self.ended < self.n_folds and self.trial.should_prune():
            raise Pruned(result["fold"], value)


def job_reporter(hydra_cfg: DictConfig, n_folds: int) -> FoldReporter | None:
    """The reporter of this job's trial, when this job is one of a search's trials; None otherwise."""
    sweeper = hydra_cfg.sweeper
    if OmegaConf.select(sweeper, "_target_") != SWEEPER:
        return None
    import optuna

    storage = _storage(Path(hydra_cfg.sweep.dir))
    # pruner: null means none; Optuna's own default would be its median pruner.
    pruner = _instantiate(sweeper.pruner) or optuna.pruners.NopPruner()
    study = optuna.load_study(study_name=STUDY, storage=storage, pruner=pruner)
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(STUDY), hydra_cfg.job.num)
    return FoldReporter(optuna.trial.Trial(study, trial_id), n_folds)


class Search:
    """The sweeper's loop. `conf`: hydra.sweeper (sampler, pruner, direction, n_trials, n_jobs, params)."""

    def __init__(self, conf: dict):
        self.conf = conf

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )
        self.sweep_dir = Path(config.hydra.sweep.dir)

    def sweep(self, arguments: list[str]) -> None:
        from digitnet.engine.rundir import RunDirLock
        from digitnet.report.sweep import planned_jobs
        from digitnet.search.space import search_space

        self._check_settings()
        space = search_space(self.conf.get("params") or {}, arguments)
        self._check_space(space)
        sampler, pruner = self._sampler_and_pruner()
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        lock = RunDirLock(self.sweep_dir, "hydra.sweep.dir")  # one process at a time drives a study
        try:
            planned_jobs(self.sweep_dir)  # damaged: refused before the study changes
            study = self._study(space, sampler, pruner)
            if self._run(study, space):
                self._write_results(study)
        finally:
            lock.release()

    def _check_settings(self) -> None:
        if OmegaConf.to_container(self.config.hydra.sweep)["subdir"] != "${hydra.job.num}":
            raise UserError(
                "a search keeps trial N in job dir N: leave hydra.sweep.subdir as ${hydra.job.num}",
                key="hydra.sweep.subdir",
            )
        for key in ("n_trials", "n_jobs"):
            if not isinstance(self.conf[key], int) or self.conf[key] < 1:
                raise UserError(
                    f"hydra.sweeper.{key}={self.conf[key]!r}: give a whole number, 1 or more",
                    key=f"hydra.sweeper.{key}",
                    value=self.conf[key],
                )

    def _check_space(self, space) -> None:
        """Trials of a key the config lacks, or of a type its schema refuses, would all fail one by one: composed
        once here, at a value of each distribution. The holdout is never a search's score."""
        from optuna.distributions import CategoricalDistribution

        probe = {
            key: d.choices[0] if isinstance(d, CategoricalDistribution) else d.low
            for key, d in space.distributions.items()
        }
        try:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, space.overrides(probe))
        except Exception as exc:  # noqa: BLE001 - Hydra's or OmegaConf's own message names the key
            raise UserError(
                f"the search's trials would not compose: {describe(exc)}", key="hydra.sweeper.params"
            ) from None
        if OmegaConf.select(cfg, "task") == "final" or getattr(OmegaConf.select(cfg, "task"), "value", None) == "final":
            raise UserError(
                "task=final scores the holdout, which must not choose settings: a search runs task=cv; fit "
                "the best settings with task=final afterwards",
                key="task",
                value="final",
            )

    def _sampler_and_pruner(self):
        from optuna.pruners import BasePruner
        from optuna.samplers import BaseSampler

        made = {}
        for key, kind in (("sampler", BaseSampler), ("pruner", BasePruner)):
            try:
                made[key] = _instantiate(self.conf[key])
            except Exception as exc:  # noqa: BLE001 - Hydra's instantiate names the target and the bad argument
                raise UserError(f"hydra.sweeper.{key}: {describe(exc)}", key=f"hydra.sweeper.{key}") from None
            if not isinstance(made[key], kind) and not (key == "pruner" and made[key] is None):
                raise UserError(
                    f"hydra.sweeper.{key} makes no {kind.__module__.split('.')[1]} {key} (its _target_: "
                    f"{(self.conf[key] or {}).get('_target_')!r}); name an optuna.{key}s class",
                    key=f"hydra.sweeper.{key}",
                )
        return made["sampler"], made["pruner"]

    def _study(self, space, sampler, pruner):
        """The sweep dir's study, loaded, or made where the dir holds no jobs yet; nothing is written into a study
        made with other search settings."""
        import optuna

        journal = self.sweep_dir / JOURNAL
        if not journal.exists():
            self._check_no_jobs()
        settings = {
            "space": space.describe(),
            "direction": self.conf["direction"],
            "sampler": self.conf["sampler"],
            "pruner": self.conf["pruner"],
        }
        try:
            storage = _storage(self.sweep_dir)  # makes the journal file, or replays it
            exists = STUDY in optuna.get_all_study_names(storage)
            study = (
                optuna.load_study(
                    study_name=STUDY, storage=storage, sampler=sampler, pruner=pruner or optuna.pruners.NopPruner()
                )
                if exists
                else None
            )
        except (ValueError, KeyError, AssertionError) as exc:  # a line Optuna cannot replay
            raise UserError(
                f"{shown(journal)} is damaged ({type(exc).__name__}); restore it, or choose a new hydra.sweep.dir",
                path=journal,
            ) from None
        if study is None:
            study = optuna.create_study(
                study_name=STUDY,
                storage=storage,
                sampler=sampler,
                pruner=pruner or optuna.pruners.NopPruner(),
                direction=self.conf["direction"],
            )
            study.set_user_attr("settings", settings)
        before = study.user_attrs.get("settings")
        if before != settings:
            changed = ", ".join(k for k in settings if settings[k] != (before or {}).get(k)) or "all"
            raise UserError(
                f"{shown(journal)} holds a study made with other search settings ({changed}); rerun it "
                "with its own, or choose a new hydra.sweep.dir",
                key="hydra.sweeper",
                path=journal,
            )
        seed = (self.conf["sampler"] or {}).get("seed")
        if study.trials and isinstance(seed, int):  # resumed: seeded as at the start, it would repeat the first trials
            study.sampler = _instantiate({**self.conf["sampler"], "seed": seed + len(study.trials)})
        return study

    def _check_no_jobs(self) -> None:
        """A new study numbers its trials from 0: job dirs of another sweep (or of a study whose journal was lost)
        would be read as its trials' results."""
        from digitnet.report.sweep import job_dirs

        jobs = [d for d, _ in job_dirs(self.sweep_dir) if d.exists()]
        if jobs:
            raise UserError(
                f"{shown(self.sweep_dir)} holds job dirs ({', '.join(d.name for d in jobs[:5])}) but no "
                f"search study ({JOURNAL}); choose a new hydra.sweep.dir",
                path=self.sweep_dir,
            )

    def _run(self, study, space) -> bool:
        """Trials until the study has n_trials (or its sampler has tried everything); False if nothing ran."""
        from optuna.trial import TrialState

        n_trials, n_jobs = self.conf["n_trials"], self.conf["n_jobs"]
        trials = study.get_trials(deepcopy=False)
        stale = [t.number for t in trials if t.state == TrialState.RUNNING]  # an interrupted run's: resumed
        done = sum(t.state.is_finished() for t in trials)
        if done >= n_trials and not stale:
            say(
                f"search: the study in {shown(self.sweep_dir)} has its {done} trials (hydra.sweeper.n_trials="
                f"{n_trials}); nothing to run"
            )
            return False
        OmegaConf.save(self.config, self.sweep_dir / "multirun.yaml")  # as Hydra's basic sweeper does
        say(
            f"search: {n_trials} trials, {done} done earlier{f', {len(stale)} resumed' if stale else ''}; "
            f"study {shown(self.sweep_dir / JOURNAL)}"
        )
        self.exhausted = False
        while (stale or done < n_trials) and not self.exhausted:
            batch = {n: self._params(study, n) for n in stale[:n_jobs]}
            stale = stale[n_jobs:]
            while len(batch) < n_jobs and done + len(batch) + len(stale) < n_trials:
                trial = study.ask(space.distributions)
                batch[trial.number] = trial.params
            jobs = {n: space.overrides(params) for n, params in batch.items()}
            self._record_jobs(jobs)
            self._launch({n: o for n, o in jobs.items() if self._checked(n, o)})
            for number in jobs:
                self._tell(study, number)
            done += len(jobs)
        return True

    @staticmethod
    def _params(study, number: int) -> dict:
        return study.get_trials(deepcopy=False)[number].params

    def _record_jobs(self, jobs: dict[int, list[str]]) -> None:
        """The summary's list of planned jobs (a trial that never started still gets its row)."""
        from digitnet.report.sweep import JOBS_FILE, planned_jobs

        known = {j["dir"]: j for j in planned_jobs(self.sweep_dir)}
        known.update({str(n): {"dir": str(n), "overrides": o} for n, o in jobs.items()})
        write_json_atomic(self.sweep_dir / JOBS_FILE, sorted(known.values(), key=lambda j: (len(j["dir"]), j["dir"])))

    def _planned(self, number: int) -> list[str] | None:
        from digitnet.report.sweep import planned_jobs

        return next((j.get("overrides") for j in planned_jobs(self.sweep_dir) if j["dir"] == str(number)), None)

    def _checked(self, number: int, overrides: list[str]) -> bool:
        """A trial whose values make no plan (out of a key's range, say) fails here, not inside the launcher,
        where an in-process job's refusal would end the whole search."""
        from omegaconf import open_dict

        from digitnet.config.plan import make_plan

        try:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(cfg):
                del cfg["hydra"]  # the job's own settings only, as the grid sweep's check composes them
            make_plan(cfg)
            return True
        except Exception as exc:  # noqa: BLE001 - the trial is recorded as failed, and the search goes on
            self._fail(number, overrides, exc)
            return False

    def _fail(self, number: int, overrides: list[str], exc: BaseException) -> None:
        """Record a trial that did not run; a job dir that holds a result (or its own failure) keeps it."""
        from digitnet.errors import say_error

        say_error("digitnet.train", UserError(f"trial {number} ({' '.join(overrides)}) failed: {describe(exc)}"))
        job_dir = self.sweep_dir / str(number)
        if not any((job_dir / name).exists() for name in ("cv_summary.json", PRUNED_FILE, "failure.json")):
            write_json_atomic(job_dir / "failure.json", {"error": describe(exc), "type": type(exc).__name__})

    def _launch(self, jobs: dict[int, list[str]]) -> None:
        """Jobs with consecutive numbers go to the launcher together (it numbers them from the first); Hydra's basic
        launcher gets them one at a time (it runs them in turn anyway, and stops at a job that exits). A launcher
        that fails fails its jobs, not the search."""
        numbers = sorted(jobs)
        groups = [[n] for n in numbers[:1]]
        together = not str(OmegaConf.select(self.config, "hydra.launcher._target_")).endswith(".BasicLauncher")
        for n in numbers[1:]:
            (groups[-1].append(n) if together and n == groups[-1][-1] + 1 else groups.append([n]))
        for group in groups:
            try:
                self.launcher.launch([jobs[n] for n in group], initial_job_idx=group[0])
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - a job's exit or a launcher's error
                if interrupts.interrupt.signals:  # Ctrl-C or SIGTERM: the search stops; a rerun resumes the trial
                    raise
                for n in group:
                    self._fail(
                        n,
                        jobs[n],
                        exc if isinstance(exc, Exception) else UserError(f"its job exited with code {exc.code}"),
                    )

    def _outcome(self, number: int) -> tuple[str, float | None]:
        """A trial's status and mean, read from its job dir as the sweep summary reads it."""
        from digitnet.report.sweep import read_job

        try:
            job = read_job(self.sweep_dir / str(number), self._planned(number))
        except UserError as exc:
            return f"failed: {exc}", None
        if job["status"].startswith("ok") and not (job["mean"] is not None and math.isfinite(job["mean"])):
            return "failed: no finite mean", None
        return job["status"], job["mean"]

    def _tell(self, study, number: int) -> None:
        """Optuna is told what the job's dir says. A diverged trial is told as pruned, not failed: Optuna's samplers
        ignore failed trials, and would keep sampling the region where training blows up."""
        from optuna.trial import TrialState

        status, mean = self._outcome(number)
        try:
            if status.startswith("ok"):
                study.tell(number, mean, skip_if_finished=True)
            elif status.startswith("pruned") or status == "diverged":
                study.tell(number, state=TrialState.PRUNED, skip_if_finished=True)
            else:
                say(f"search: trial {number} recorded as failed ({status})")
                study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
        except RuntimeError:  # a grid or brute-force sampler that has tried everything stops the study
            if not study.trials[number].state.is_finished():
                raise
            self.exhausted = True

    def _write_results(self, study) -> None:
        from optuna.trial import TrialState

        trials = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
        statuses = [self._outcome(t.number)[0] for t in trials]
        best = study.best_trial if any(t.state == TrialState.COMPLETE for t in trials) else None
        n_complete, n_pruned = sum(s.startswith("ok") for s in statuses), sum(s.startswith("pruned") for s in statuses)
        results = {
            "best_params": dict(best.params) if best else None,
            "best_value": best.value if best else None,
            "best_trial": best.number if best else None,
            "direction": self.conf["direction"],
            "n_trials": len(trials),
            "n_complete": n_complete,
            "n_pruned": n_pruned,
            # diverged, refused, or no result in its dir (lost, unfinished): every other finished trial
            "n_failed": len(trials) - n_complete - n_pruned,
            "n_diverged": statuses.count("diverged"),
            "study": str(self.sweep_dir / JOURNAL),
        }
        (self.sweep_dir / RESULTS).write_text(yaml.safe_dump(results, sort_keys=False))
        say(
            f"search: {results['n_trials']} trials ({n_pruned} pruned, {results['n_failed']} failed or diverged); "
            + (f"best trial {best.number}: {best.params} -> {100 * best.value:.3f}" if best else "none completed")
            + f"; {shown(self.sweep_dir / RESULTS)}"
        )
