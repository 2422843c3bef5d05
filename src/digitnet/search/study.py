"""An Optuna search run as a Hydra sweep (hydra/sweeper=digitnet_optuna; presets in conf/hparams_search/).

The sweeper asks Optuna for `n_jobs` trials at a time and launches them as Hydra jobs through the configured
launcher, each told that it is trial N (hydra.job.env_set.DIGITNET_TRIAL=N, a value the sweeper sets); Optuna is told
each trial's outcome as its job returns it. A trial's job reports its running CV mean to the same study after each
fold and stops when the pruner says so (FoldReporter). The study is a journal file in the sweep dir, which every
launcher's jobs can reach. Job dir N is trial N, and its .hydra/overrides.yaml says what it ran: before any trial the
sweeper checks the study and the job dirs against each other, and refuses a sweep dir where they disagree. A rerun of
the command resumes the study: trials an interruption left running run again in their dirs (finished folds kept).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf

from digitnet import layout
from digitnet.engine import interrupts
from digitnet.engine.cv import Pruned
from digitnet.errors import UserError, describe, first_line, say_error, shown
from digitnet.logs import say

STUDY = "digitnet"
TRIAL = "DIGITNET_TRIAL"  # the hydra.job.env_set key that tells a job which trial it is


def _storage(sweep_dir: Path):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(Path(sweep_dir) / layout.JOURNAL)))


def _instantiate(node):
    from hydra.utils import instantiate

    return None if node is None else instantiate(node)


def check_journal(path: Path) -> None:
    """Every line of the study's journal a whole JSON record. Optuna passes over a last line cut short (as a crash or
    a full disk leaves it) and appends the next record to it, after which the study no longer reads."""
    if not path.is_file():
        return
    whole = 0  # bytes of whole records before the bad line
    for number, line in enumerate(path.read_bytes().splitlines(keepends=True), start=1):
        try:
            if not line.endswith(b"\n"):
                raise ValueError("cut short")
            json.loads(line)
        except ValueError as exc:
            cut = f"`truncate -s {whole} {shown(path)}` removes it" if not line.endswith(b"\n") else "restore it"
            fix = f"{cut} (the trial it recorded runs again), or choose a new hydra.sweep.dir"
            raise layout.damaged(path, f"line {number} is no whole record: {first_line(exc, 60)}", fix) from None
        whole += len(line)


def trial_number(hydra_cfg: DictConfig) -> int | None:
    """The trial this job is, as the search's sweeper set it; None for any other job."""
    number = OmegaConf.select(hydra_cfg, f"job.env_set.{TRIAL}")
    return None if number is None else int(number)


class FoldReporter:
    """A search trial's side of pruning, in its job: the mean of the folds finished so far, reported to the study
    after each, and the pruner asked, until the last fold (a trial that trained every fold has its result). The
    trial is reached through the study's storage (Optuna's public API), not its discouraged Trial(study, id)."""

    def __init__(self, study, storage, trial_id: int, n_folds: int):
        self.study, self.storage, self.trial_id, self.n_folds = study, storage, trial_id, n_folds
        self.scores, self.ended = [], 0

    def after_fold(self, result: dict) -> None:
        self.ended += 1
        if result["status"] != "ok":
            return  # a diverged fold fails the trial; its folds go on as in any CV run
        self.scores.append(result["score"])
        value, step = sum(self.scores) / len(self.scores), len(self.scores) - 1
        if step not in self.storage.get_trial(self.trial_id).intermediate_values:  # a resumed trial's: once
            self.storage.set_trial_intermediate_value(self.trial_id, step, value)
        if self.ended < self.n_folds and self.study.pruner.prune(self.study, self.storage.get_trial(self.trial_id)):
            raise Pruned(result["fold"], value)


def job_reporter(hydra_cfg: DictConfig, n_folds: int) -> FoldReporter | None:
    """The reporter of this job's trial when the search's sweeper launched it as one; None otherwise."""
    number = trial_number(hydra_cfg)
    if number is None:
        return None
    import optuna

    storage = _storage(Path(hydra_cfg.sweep.dir))
    # pruner: null means none; Optuna's own default would be its median pruner.
    pruner = _instantiate(hydra_cfg.sweeper.pruner) or optuna.pruners.NopPruner()
    study = optuna.load_study(study_name=STUDY, storage=storage, pruner=pruner)
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(STUDY), number)
    return FoldReporter(study, storage, trial_id, n_folds)


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
        from digitnet.search.space import search_space

        self._check_settings()
        space = search_space(self.conf.get("params") or {}, arguments)
        self._check_space(space)
        sampler, pruner = self._sampler_and_pruner()
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        lock = RunDirLock(self.sweep_dir, "hydra.sweep.dir")  # one process at a time drives a study
        try:
            check_journal(self.sweep_dir / layout.JOURNAL)  # damaged: refused before the study changes
            layout.read_jobs(self.sweep_dir)
            study = self._study(space, sampler, pruner)
            self._check_job_dirs(study, space)
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

        journal = self.sweep_dir / layout.JOURNAL
        settings = {
            "space": space.describe(),
            "direction": self.conf["direction"],
            "sampler": self.conf["sampler"],
            "pruner": self.conf["pruner"],
        }
        pruner = pruner or optuna.pruners.NopPruner()
        if not journal.exists():  # a new study numbers its trials from 0: no job dir may be read as one of them
            self._check_no_jobs()
        try:
            self.storage = storage = _storage(self.sweep_dir)  # makes the journal file, or replays it
            exists = STUDY in optuna.get_all_study_names(storage)
            study = (
                optuna.load_study(study_name=STUDY, storage=storage, sampler=sampler, pruner=pruner) if exists else None
            )
        except (ValueError, KeyError, AssertionError) as exc:  # a record Optuna cannot replay
            raise layout.damaged(journal, type(exc).__name__, "restore it, or choose a new hydra.sweep.dir") from None
        if study is None:
            self._check_no_jobs()  # an empty journal: a new study too
            study = optuna.create_study(
                study_name=STUDY, storage=storage, sampler=sampler, pruner=pruner, direction=self.conf["direction"]
            )
            study.set_user_attr("settings", settings)
        before = study.user_attrs.get("settings")
        if before != settings:
            changed = ", ".join(k for k in settings if settings[k] != (before or {}).get(k)) or "all"
            raise UserError(
                f"{shown(journal)} holds a study made with other search settings ({changed}); rerun it with its own, "
                "or choose a new hydra.sweep.dir",
                key="hydra.sweeper",
                path=journal,
            )
        seed = (self.conf["sampler"] or {}).get("seed")
        if study.trials and isinstance(seed, int):  # resumed: seeded as at the start, it would repeat the first trials
            study.sampler = _instantiate({**self.conf["sampler"], "seed": seed + len(study.trials)})
        return study

    def _check_no_jobs(self) -> None:
        jobs = [d for d, _ in layout.job_dirs(self.sweep_dir) if d.exists()]
        if jobs:
            raise UserError(
                f"{shown(self.sweep_dir)} holds job dirs ({', '.join(d.name for d in jobs[:5])}) but no search study "
                f"in {layout.JOURNAL}; restore the study, or choose a new hydra.sweep.dir",
                path=self.sweep_dir,
            )

    def _check_job_dirs(self, study, space) -> None:
        """The study and the job dirs are two records of one search: trial N's parameters and job dir N's
        overrides must agree, every finished trial must have its job dir, and no job dir may be of a trial the study
        does not hold (a new trial would take its results)."""
        from optuna.trial import TrialState

        trials = study.get_trials(deepcopy=False)
        journal = shown(self.sweep_dir / layout.JOURNAL)
        for trial in trials:
            job_dir = self.sweep_dir / str(trial.number)
            ran = layout.read_overrides(job_dir)
            if ran is None and trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
                raise UserError(
                    f"{journal} holds trial {trial.number} ({trial.state.name.lower()}), but its job dir "
                    f"{shown(job_dir)} is missing or lost its .hydra/overrides.yaml; restore the job dirs with the "
                    "study, or choose a new hydra.sweep.dir",
                    path=job_dir,
                )
            if ran is not None and ran != space.overrides(trial.params):
                raise UserError(
                    f"{journal} says trial {trial.number} ran `{' '.join(space.overrides(trial.params))}`, but "
                    f"{shown(layout.overrides_file(job_dir))} says `{' '.join(ran)}`; the two are of different "
                    "searches: restore the study that ran these jobs, or choose a new hydra.sweep.dir",
                    path=job_dir,
                )
        stray = [d for d, _ in layout.job_dirs(self.sweep_dir) if d.exists() and not d.name.isdigit()]
        stray += [d for d, _ in layout.job_dirs(self.sweep_dir) if d.name.isdigit() and int(d.name) >= len(trials)]
        if stray:
            raise UserError(
                f"{shown(stray[0])} is no trial of the study in {journal}; move it away, or choose a new "
                "hydra.sweep.dir",
                path=stray[0],
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
        OmegaConf.save(self.config, self.sweep_dir / layout.MULTIRUN)  # as Hydra's basic sweeper does
        resumed = f", {len(stale)} resumed" if stale else ""
        say(f"search: {n_trials} trials, {done} done earlier{resumed}; study {shown(self.sweep_dir / layout.JOURNAL)}")
        self.exhausted = False
        while (stale or done < n_trials) and not self.exhausted:
            batch = {n: study.get_trials(deepcopy=False)[n].params for n in stale[:n_jobs]}
            stale = stale[n_jobs:]
            while len(batch) < n_jobs and done + len(batch) + len(stale) < n_trials:
                trial = study.ask(space.distributions)
                batch[trial.number] = trial.params
            jobs = {n: space.overrides(params) for n, params in batch.items()}
            layout.write_jobs(self.sweep_dir, {str(n): o for n, o in jobs.items()}, merge=True)
            outcomes = {n: ("failed", None) for n in jobs}
            outcomes.update(self._launch({n: o for n, o in jobs.items() if self._checked(n, o)}))
            for number, (status, mean) in sorted(outcomes.items()):
                self._tell(study, number, status, mean)
            done += len(jobs)
        return True

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
        say_error("digitnet.train", UserError(f"trial {number} ({' '.join(overrides)}) failed: {describe(exc)}"))
        job_dir = self.sweep_dir / str(number)
        if not any((job_dir / name).exists() for name in (layout.CV_SUMMARY, layout.PRUNED, layout.FAILURE)):
            layout.write_failure(job_dir, describe(exc), type(exc).__name__)

    def _launch(self, jobs: dict[int, list[str]]) -> dict[int, tuple[str, float | None]]:
        """{trial: (status, mean)} as each job returned it. Jobs with consecutive numbers go to the launcher together
        (it numbers them from the first); Hydra's basic launcher gets them one at a time (it runs them in turn anyway,
        and stops at a job that exits). A launcher that fails fails its jobs, not the search."""
        from hydra.core.utils import JobStatus

        numbers = sorted(jobs)
        groups = [[n] for n in numbers[:1]]
        together = not str(OmegaConf.select(self.config, "hydra.launcher._target_")).endswith(".BasicLauncher")
        for n in numbers[1:]:
            (groups[-1].append(n) if together and n == groups[-1][-1] + 1 else groups.append([n]))
        outcomes = {}
        for group in groups:
            told = [[*jobs[n], f"++hydra.job.env_set.{TRIAL}={n}"] for n in group]
            try:
                returns = self.launcher.launch(told, initial_job_idx=group[0])
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - a job's exit or a launcher's error
                if interrupts.interrupt.signals:  # Ctrl-C or SIGTERM: the search stops; a rerun resumes the trial
                    raise
                for n in group:
                    failure = exc if isinstance(exc, Exception) else UserError(f"its job exited with code {exc.code}")
                    self._fail(n, jobs[n], failure)
                continue
            for n, ret in zip(group, returns):
                done = ret.status == JobStatus.COMPLETED and isinstance(ret.return_value, dict)
                outcomes[n] = (ret.return_value["status"], ret.return_value["mean"]) if done else ("failed", None)
        return outcomes

    def _tell(self, study, number: int, status: str, mean: float | None) -> None:
        """Optuna is told what the trial's job returned. A diverged trial is told as pruned, not failed: Optuna's
        samplers ignore failed trials, and would keep sampling the region where training blows up."""
        from optuna.trial import TrialState

        trial_id = self.storage.get_trial_id_from_study_id_trial_number(
            self.storage.get_study_id_from_name(STUDY), number
        )
        if not self.storage.get_trial(trial_id).state.is_finished():
            self.storage.set_trial_user_attr(trial_id, "status", status)  # what the job said: "diverged", say
        try:
            if status.startswith("ok") and mean is not None and math.isfinite(mean):
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
        """search_results.yaml, from the study: its counts are those of the summary table, whose rows the job dirs
        give and _check_job_dirs holds equal to the study's trials."""
        from optuna.trial import TrialState

        trials = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
        best = study.best_trial if any(t.state == TrialState.COMPLETE for t in trials) else None
        diverged = sum(t.user_attrs.get("status") == "diverged" for t in trials)  # told to Optuna as pruned
        n_complete = sum(t.state == TrialState.COMPLETE for t in trials)
        n_pruned = sum(t.state == TrialState.PRUNED for t in trials) - diverged
        results = {
            "best_params": dict(best.params) if best else None,
            "best_value": best.value if best else None,
            "best_trial": best.number if best else None,
            "direction": self.conf["direction"],
            "n_trials": len(trials),
            "n_complete": n_complete,
            "n_pruned": n_pruned,
            "n_diverged": diverged,  # a result (its settings blow training up), not a failure: told as pruned
            "n_failed": len(trials) - n_complete - n_pruned - diverged,  # refused, or no result: exit 3 at the end
            "study": str(self.sweep_dir / layout.JOURNAL),
        }
        (self.sweep_dir / layout.SEARCH_RESULTS).write_text(yaml.safe_dump(results, sort_keys=False))
        found = f"best trial {best.number}: {best.params} -> {100 * best.value:.3f}" if best else "none completed"
        say(
            f"search: {len(trials)} trials ({n_pruned} pruned, {diverged} diverged, {results['n_failed']} failed); "
            f"{found}; {shown(self.sweep_dir / layout.SEARCH_RESULTS)}"
        )
